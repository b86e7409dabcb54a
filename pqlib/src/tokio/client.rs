//! The async client: cheap to clone, shared by many tasks; every call is a request to the
//! connection task, which pipelines them.

use std::ffi::CString;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use super::driver::{Driving, Reply, Request, SharedDriver, Work, lock_driver};
use crate::connection::is_stale_plan;
use crate::error::{Error, Result, SqlState};
use crate::handle::PgResult;
use crate::notice::NoticeState;
use crate::params::EncodedParams;
use crate::portal::Scope;
use crate::prepare::{Described, Plan};
use crate::row::{Column, OwnedRow, Rows};
use crate::statement::{Statement, StatementCache, StatementRef, ToStatement};
use crate::types::{
    COMPOSITE_FIELDS, ENUM_LABELS, Field, Kind, Needs, Oid, TYPE_INFO, ToSql, Type, TypeCache,
    TypeInfo, composite_fields,
};

/// An async PostgreSQL client over libpq, made by [`connect`](super::connect).
///
/// `Client` is `Clone + Send + Sync`: clones share one connection, and statements from
/// concurrent tasks are pipelined on it (sent without waiting for each other's results),
/// each in its own sync segment so that one task's error never affects another's statement.
/// Method names and behaviour follow `tokio_postgres::Client`.
///
/// Dropping a query's future at any point is safe: the connection task still reads that
/// statement's results (and discards them), so later queries get their own answers.
///
/// ```no_run
/// # async fn run() -> Result<(), pqlib::Error> {
/// let (client, connection) = pqlib::tokio::connect("host=localhost user=postgres").await?;
/// tokio::spawn(connection);
/// let handles: Vec<_> = (0..10i32)
///     .map(|i| {
///         let client = client.clone();
///         tokio::spawn(async move { client.query_one("SELECT $1::int4 * 2", &[&i]).await })
///     })
///     .collect();
/// for (i, handle) in handles.into_iter().enumerate() {
///     let n: i32 = handle.await.unwrap()?.get(0);
///     assert_eq!(n, 2 * i as i32);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    sender: mpsc::UnboundedSender<Request>,
    driver: SharedDriver,
    statements: Mutex<StatementCache>,
    types: Mutex<TypeCache>,
    notices: Arc<NoticeState>,
    cancel: crate::CancelToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets descriptions of SQL text for a row stream, which must not keep its client alive.
pub(super) struct DescriptionKeeper(std::sync::Weak<Inner>);

impl DescriptionKeeper {
    pub(super) fn forget(&self, sql: &str) {
        if let Some(inner) = self.0.upgrade() {
            lock(&inner.statements).unnamed.forget_description(sql);
        }
    }
}

/// How a statement runs: see [`Client::plan`].
pub(super) enum Planned {
    Prepared(Statement),
    Unnamed { sql: CString, described: Described },
}

impl Client {
    pub(crate) fn new(
        sender: mpsc::UnboundedSender<Request>,
        driver: SharedDriver,
        notices: Arc<NoticeState>,
        cancel: crate::CancelToken,
        policy: crate::PreparePolicy,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                sender,
                driver,
                statements: Mutex::new(StatementCache::with_policy(policy)),
                types: Mutex::new(TypeCache::default()),
                notices,
                cancel,
            }),
        }
    }

    /// Sends a request and waits for its results.
    pub(crate) async fn request_work(&self, work: Work) -> Reply {
        self.request(work).await
    }

    /// Sends a request and waits for its results.
    async fn request(&self, work: Work) -> Reply {
        self.send_request(work, false).await
    }

    /// Sends a request that runs even if this future is dropped before the connection task
    /// gets to it (a COMMIT or ROLLBACK must not silently vanish), and waits for its results.
    async fn request_must_run(&self, work: Work) -> Reply {
        self.send_request(work, true).await
    }

    async fn send_request(&self, work: Work, detached: bool) -> Reply {
        let answer = self.send_only(work, detached)?;
        self.answer(answer).await
    }

    /// Waits for a request's answer, driving the connection meanwhile (see [`Answer`]).
    pub(super) fn answer(&self, answer: oneshot::Receiver<Reply>) -> Answer {
        Answer {
            answer,
            driving: self.driving(),
        }
    }

    /// A share in driving the connection, for a future waiting on it.
    pub(super) fn driving(&self) -> Driving {
        Driving::new(self.inner.driver.clone())
    }

    /// Queues a request; the answer comes through the returned receiver.
    pub(super) fn send_only(&self, work: Work, detached: bool) -> Result<oneshot::Receiver<Reply>> {
        self.queue(work, detached, None)
    }

    /// Queues a request, with the flag the connection task sets if it succeeds.
    fn queue(
        &self,
        work: Work,
        detached: bool,
        succeeded: Option<Arc<AtomicBool>>,
    ) -> Result<oneshot::Receiver<Reply>> {
        self.deallocate_dropped();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            work,
            reply,
            detached,
            succeeded,
            only_if: None,
        };
        let refused = match lock_driver(&self.inner.driver).as_mut() {
            Some(driver) => driver.send_direct(request),
            None => Some(request),
        };
        if let Some(request) = refused {
            self.inner
                .sender
                .send(request)
                .map_err(|_| Error::closed("the connection task has ended"))?;
        }
        Ok(answer)
    }

    /// Checks that `statement` can run here with `params` parameters.
    pub(super) fn check_use(&self, statement: &Statement, params: usize) -> Result<()> {
        lock(&self.inner.statements).check_use(statement, params)
    }

    /// The notice state results keep alive (libpq copies the notice hook into each).
    pub(super) fn notices(&self) -> Arc<NoticeState> {
        self.inner.notices.clone()
    }

    /// Sends a request whose answer nobody waits for; it runs even so.
    fn detached(&self, work: Work) {
        self.detached_if(work, None);
    }

    /// Sends a request whose answer nobody waits for; it runs even so, unless `only_if` is
    /// given and the request that sets it (queued earlier) did not succeed. `work` must be
    /// simple-protocol SQL if `only_if` is given.
    fn detached_if(&self, work: Work, only_if: Option<Arc<AtomicBool>>) {
        let (reply, _) = oneshot::channel();
        let _ = self.inner.sender.send(Request {
            work,
            reply,
            detached: true,
            succeeded: None,
            only_if,
        });
    }

    /// Statements whose last handle was dropped are closed ahead of the next request, with
    /// the protocol's Close message (which, unlike `DEALLOCATE`, the server also accepts in a
    /// failed transaction).
    #[cfg(libpq_17)]
    fn deallocate_dropped(&self) {
        let names = lock(&self.inner.statements).take_closed();
        for name in names {
            self.detached(Work::ClosePrepared { name });
        }
    }

    /// Statements whose last handle was dropped are deallocated ahead of the next request
    /// (with `DEALLOCATE`: libpq before 17 cannot send the protocol's Close). One that a
    /// failed transaction refuses comes back to the list, for the request after.
    #[cfg(not(libpq_17))]
    fn deallocate_dropped(&self) {
        let (names, retry) = {
            let mut statements = lock(&self.inner.statements);
            (statements.take_closed(), statements.closed_list())
        };
        for name in names {
            let sql = format!("DEALLOCATE {}", name.to_string_lossy());
            if let Ok(sql) = CString::new(sql) {
                self.detached(Work::Deallocate {
                    sql,
                    name,
                    retry: retry.clone(),
                });
            }
        }
    }

    /// Runs simple-protocol SQL that must reach the server even if the caller stops waiting.
    async fn simple_must_run(&self, sql: &str) -> Result<Vec<PgResult>> {
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        self.request_must_run(Work::Simple { sql }).await
    }

    /// Whether the connection task has ended (the connection is closed).
    pub fn is_closed(&self) -> bool {
        self.inner.sender.is_closed()
    }

    /// A token to cancel the statement running on this connection; see
    /// [`CancelToken`](super::CancelToken).
    #[doc(alias = "PQcancelCreate")]
    #[doc(alias = "PQgetCancel")]
    pub fn cancel_token(&self) -> super::CancelToken {
        super::CancelToken(self.inner.cancel.clone())
    }

    /// Prepares a statement; see [`Connection::prepare`](crate::Connection::prepare).
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let stmt = client.prepare("SELECT $1::text").await?;
    /// let row = client.query_one(&stmt, &[&"hi"]).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendPrepare")]
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        self.prepare_inner(sql, &[], false).await
    }

    /// Prepares a statement with (some) parameter types given.
    #[doc(alias = "PQsendPrepare")]
    pub async fn prepare_typed(&self, sql: &str, types: &[Type]) -> Result<Statement> {
        self.prepare_inner(sql, types, false).await
    }

    async fn prepare_inner(&self, sql: &str, types: &[Type], cached: bool) -> Result<Statement> {
        let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        if types.len() > crate::MAX_PARAMETERS {
            return Err(Error::bad_input(format!(
                "{} parameter types; the most is 65535",
                types.len()
            )));
        }
        let name = lock(&self.inner.statements).next_name();
        let work = Work::Prepare {
            name: name.clone(),
            sql: sql_c,
            types: types.iter().map(Type::oid).collect(),
        };
        let mut results = self.request(work).await?;
        let description = results
            .pop()
            .ok_or_else(|| Error::client("a prepare returned no description"))?;
        let mut params = Vec::with_capacity(description.nparams());
        for i in 0..description.nparams() {
            params.push(self.resolve_type(description.param_type(i)).await?);
        }
        let columns = self.columns(&description).await?;
        Ok(lock(&self.inner.statements).make(name, sql, params, columns, cached))
    }

    pub(super) async fn columns(&self, result: &PgResult) -> Result<Arc<[Column]>> {
        let mut columns = Vec::with_capacity(result.nfields());
        for i in 0..result.nfields() {
            let type_ = self.resolve_type(result.field_type(i)).await?;
            columns.push(Column::new(result, i, type_));
        }
        Ok(columns.into())
    }

    /// The `Type` for an OID, looked up in the catalog (once per connection) if not built in.
    fn resolve_type(&self, oid: Oid) -> Pin<Box<dyn Future<Output = Result<Type>> + Send + '_>> {
        Box::pin(async move {
            if let Some(ty) = Type::from_oid(oid) {
                return Ok(ty);
            }
            if let Some(ty) = lock(&self.inner.types).get(oid) {
                return Ok(ty);
            }
            let info = TypeInfo::from_rows(
                &self.query_typed(TYPE_INFO, &[(&oid, Type::OID)]).await?,
                oid,
            )?;
            let kind = match info.needs() {
                Needs::Nothing(kind) => kind,
                Needs::Labels => {
                    let rows = self.query_typed(ENUM_LABELS, &[(&oid, Type::OID)]).await?;
                    Kind::Enum(rows.iter().map(|r| r.try_get(0)).collect::<Result<_>>()?)
                }
                Needs::Fields => {
                    let rows = self
                        .query_typed(COMPOSITE_FIELDS, &[(&info.relation, Type::OID)])
                        .await?;
                    let mut fields = Vec::new();
                    for (name, field_oid) in composite_fields(&rows)? {
                        fields.push(Field::new(name, self.resolve_type(field_oid).await?));
                    }
                    Kind::Composite(fields)
                }
                Needs::Type(other, wrap) => wrap(self.resolve_type(other).await?),
            };
            let ty = Type::new(info.name, oid, kind, info.schema);
            lock(&self.inner.types).insert(oid, ty.clone());
            Ok(ty)
        })
    }

    /// How `statement` runs here: as a named statement (given, cached, or prepared now), or
    /// under the [`PreparePolicy`](crate::PreparePolicy) as the unnamed statement, described
    /// now if it has not been.
    pub(super) async fn plan<T: ?Sized + ToStatement>(&self, statement: &T) -> Result<Planned> {
        let sql = match statement.__statement_ref() {
            StatementRef::Prepared(statement) => return Ok(Planned::Prepared(statement.clone())),
            StatementRef::Sql(sql) => sql,
        };
        let plan = lock(&self.inner.statements).plan(sql);
        match plan {
            Plan::Cached(statement) => Ok(Planned::Prepared(statement)),
            Plan::Prepare => {
                let statement = self.prepare_inner(sql, &[], true).await?;
                lock(&self.inner.statements).insert(statement.clone());
                Ok(Planned::Prepared(statement))
            }
            Plan::Unnamed(known) => {
                crate::statement::refuse_copy(sql)?;
                let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
                let described = self.described(sql, &sql_c, known).await?;
                Ok(Planned::Unnamed {
                    sql: sql_c,
                    described,
                })
            }
        }
    }

    /// Forgets what SQL text was described as (its run failed, or its rows did not match).
    pub(super) fn forget_description(&self, sql: &str) {
        lock(&self.inner.statements).unnamed.forget_description(sql);
    }

    /// A handle to forget descriptions with that does not keep the client alive.
    pub(super) fn description_keeper(&self) -> DescriptionKeeper {
        DescriptionKeeper(Arc::downgrade(&self.inner))
    }

    /// The prepared statement for `statement`: itself, or the cached (or newly prepared)
    /// statement for SQL text.
    pub(super) async fn statement<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
    ) -> Result<Statement> {
        match statement.__statement_ref() {
            StatementRef::Prepared(statement) => Ok(statement.clone()),
            StatementRef::Sql(sql) => {
                if let Some(statement) = lock(&self.inner.statements).lookup(sql) {
                    return Ok(statement);
                }
                let statement = self.prepare_inner(sql, &[], true).await?;
                lock(&self.inner.statements).insert(statement.clone());
                Ok(statement)
            }
        }
    }

    async fn execute_statement(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Rows> {
        lock(&self.inner.statements).check_use(statement, params.len())?;
        let params = EncodedParams::new(params, statement.params())?;
        let work = Work::Execute {
            statement: statement.clone(),
            params,
        };
        let mut results = self.request(work).await?;
        let result = results
            .pop()
            .ok_or_else(|| Error::client("a statement returned no result"))?;
        Ok(Rows::new(
            result,
            statement.columns_arc(),
            self.inner.notices.clone(),
        ))
    }

    /// Runs a statement and returns its rows; see [`Connection::query`](crate::Connection::query).
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let rows = client.query("SELECT generate_series(1, $1)", &[&3i32]).await?;
    /// assert_eq!(rows.len(), 3);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Rows>
    where
        T: ?Sized + ToStatement,
    {
        let statement = match self.plan(statement).await? {
            Planned::Prepared(statement) => statement,
            Planned::Unnamed { sql, described } => {
                return self.query_unnamed(sql, described, params).await;
            }
        };
        match self.execute_statement(&statement, params).await {
            Err(e) if statement.is_cached() && is_stale_plan(&e) => {
                // DDL changed the cached statement (or SQL deallocated it): prepare it again
                // and retry once. Inside a transaction the failure already aborted it; then the
                // original error is the one to report.
                lock(&self.inner.statements).forget(&statement);
                let fresh = self.statement(statement.sql()).await?;
                self.execute_statement(&fresh, params)
                    .await
                    .map_err(|retry| {
                        if retry.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) {
                            e
                        } else {
                            retry
                        }
                    })
            }
            other => other,
        }
    }

    /// Runs `sql` as the unnamed statement in one sync segment, with the parameter types
    /// described once per text (see [`PreparePolicy`](crate::PreparePolicy)): other
    /// requests may be pipelined between the describe and the run, since the run carries
    /// the types and parses the text again.
    async fn query_unnamed(
        &self,
        sql: CString,
        described: Described,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Rows> {
        crate::connection::check_param_count(&described.params, params.len())?;
        let params = EncodedParams::with_types(params, &described.params)?;
        let work = Work::ExecuteTyped {
            sql: sql.clone(),
            params,
        };
        let mut results = match self.request(work).await {
            Ok(results) => results,
            Err(e) => {
                if crate::prepare::may_be_stale(&e) {
                    self.forget_description(&sql.to_string_lossy());
                }
                return Err(e);
            }
        };
        let result = results
            .pop()
            .ok_or_else(|| Error::client("a statement returned no result"))?;
        // The description's columns, unless DDL changed them since: no allocation per run.
        let columns = if result.has_columns(&described.columns) {
            described.columns
        } else {
            self.columns(&result).await?
        };
        Ok(Rows::new(result, columns, self.inner.notices.clone()))
    }

    /// `known`, or what the server says `sql` is as the unnamed statement (remembered for
    /// the next run).
    pub(super) async fn described(
        &self,
        sql: &str,
        sql_c: &CString,
        known: Option<Described>,
    ) -> Result<Described> {
        if let Some(known) = known {
            return Ok(known);
        }
        let described = self.describe_unnamed(sql_c).await?;
        lock(&self.inner.statements)
            .unnamed
            .described(sql, described.clone());
        Ok(described)
    }

    /// The parameter types and result columns of `sql`: Parse and Describe of the unnamed
    /// statement, in a sync segment of their own.
    async fn describe_unnamed(&self, sql: &CString) -> Result<Described> {
        let work = Work::Prepare {
            name: CString::default(),
            sql: sql.clone(),
            types: Vec::new(),
        };
        let mut results = self.request(work).await?;
        let description = results
            .pop()
            .ok_or_else(|| Error::client("a describe returned no description"))?;
        let mut params = Vec::with_capacity(description.nparams());
        for i in 0..description.nparams() {
            params.push(self.resolve_type(description.param_type(i)).await?);
        }
        let columns = self.columns(&description).await?;
        Ok(Described {
            params: params.into(),
            columns,
        })
    }

    /// Runs a statement and returns the number of rows it affected.
    #[doc(alias = "PQsendQueryPrepared")]
    #[doc(alias = "PQcmdTuples")]
    pub async fn execute<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64>
    where
        T: ?Sized + ToStatement,
    {
        Ok(self.query(statement, params).await?.rows_affected())
    }

    /// Runs a statement expected to return exactly one row.
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<OwnedRow>
    where
        T: ?Sized + ToStatement,
    {
        OwnedRow::exactly_one(self.query(statement, params).await?)
    }

    /// Runs a statement expected to return at most one row.
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<OwnedRow>>
    where
        T: ?Sized + ToStatement,
    {
        OwnedRow::at_most_one(self.query(statement, params).await?)
    }

    /// Runs a statement with explicitly typed parameters in one round trip, without preparing.
    #[doc(alias = "PQsendQueryParams")]
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Rows> {
        crate::statement::refuse_copy(sql)?;
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let work = Work::ExecuteTyped {
            sql,
            params: EncodedParams::typed(params)?,
        };
        let mut results = self.request(work).await?;
        let result = results
            .pop()
            .ok_or_else(|| Error::client("a statement returned no result"))?;
        let columns = self.columns(&result).await?;
        Ok(Rows::new(result, columns, self.inner.notices.clone()))
    }

    /// Runs statements separated by semicolons with the simple query protocol. The connection
    /// task lets the pipeline drain first, since libpq allows this protocol only outside
    /// pipeline mode.
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// client.batch_execute("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1)").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQuery")]
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        self.request(Work::Simple { sql }).await.map(drop)
    }

    /// Runs SQL text with the simple query protocol and returns every statement's rows, as
    /// text, and completions, in order; see
    /// [`Connection::simple_query`](crate::Connection::simple_query) for the rules (several
    /// statements, no parameters, errors, `COPY`).
    ///
    /// Like [`batch_execute`](Client::batch_execute), it waits for the statements pipelined
    /// before it to be answered (libpq runs this protocol only outside pipeline mode), and
    /// those after it wait for it. Dropping the future at any point is safe: the connection
    /// task still reads the whole answer, and later requests get their own.
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let messages = client.simple_query("SHOW server_version; SELECT 1").await?;
    /// if let SimpleQueryMessage::Row(row) = &messages[1] {
    ///     println!("server {}", row.get("server_version").unwrap_or("?"));
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQuery")]
    #[doc(alias = "PQexec")]
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<crate::SimpleQueryMessage>> {
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let results = self.request(Work::Simple { sql }).await?;
        Ok(crate::simple_query::messages(&results))
    }

    /// Starts a transaction; see [`Transaction`].
    ///
    /// Statements other clones of this client send meanwhile run inside it too: they share
    /// the connection, as with `tokio_postgres`.
    #[doc(alias = "BEGIN")]
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        Transaction::begin(self, 0, "BEGIN".to_owned(), None).await
    }

    /// Ends the session cleanly: waits until the requests queued before this one are
    /// answered, then the connection task ends the session (libpq's `PQfinish`, which sends
    /// Terminate, runs when the [`Connection`](super::Connection) future is dropped, which
    /// `tokio::spawn` does as soon as it completes) and the connection future resolves.
    /// Requests queued after it, and every later call on other clones of this client, fail
    /// with [`Closed`](crate::error::ErrorKind::Closed).
    ///
    /// The result says whether the session ended cleanly, as for the blocking
    /// [`Connection::close`](crate::Connection::close): `Closed` if it had already ended
    /// (lost, or ended by the server), `Client` if a transaction opened with SQL was still
    /// open (the server rolls it back) or libpq held unsent output. A COPY or row stream
    /// still in progress on another clone is waited for, like any request queued earlier.
    /// Dropping this future before the connection task has reached the request leaves the
    /// connection open; once it has, the session ends whether or not the answer is awaited.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), pqlib::Error> {
    /// let (client, connection) = pqlib::tokio::connect("").await?;
    /// let task = tokio::spawn(connection);
    /// client.execute("INSERT INTO log VALUES ('done')", &[]).await?;
    /// client.close().await?;
    /// task.await.unwrap()?; // the connection task has ended
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQfinish")]
    pub async fn close(self) -> Result<()> {
        self.request(Work::Close).await.map(drop)
    }

    /// Options for a new transaction: isolation level, read-only, deferrable; see
    /// [`TransactionBuilder`](super::TransactionBuilder).
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// use pqlib::IsolationLevel;
    /// let tx = client
    ///     .build_transaction()
    ///     .isolation_level(IsolationLevel::Serializable)
    ///     .read_only(true)
    ///     .deferrable(true)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn build_transaction(&mut self) -> super::TransactionBuilder<'_> {
        super::TransactionBuilder::new(self)
    }

    /// The identity of this connection's session, for checking where a portal belongs.
    pub(super) fn connection_id(&self) -> u64 {
        lock(&self.inner.statements).connection_id()
    }

    /// The request channel, without keeping the connection alive (for a portal's `CLOSE`).
    pub(super) fn weak_sender(&self) -> mpsc::WeakUnboundedSender<Request> {
        self.inner.sender.downgrade()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// An async transaction: rolled back if dropped without [`commit`](Transaction::commit)
/// (the rollback is queued on the connection without waiting). Nested transactions are
/// savepoints. Query methods come from [`Client`] through `Deref`.
///
/// ```no_run
/// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// let mut tx = client.transaction().await?;
/// tx.execute("INSERT INTO t VALUES ($1)", &[&1i32]).await?;
/// let mut savepoint = tx.transaction().await?;
/// savepoint.execute("INSERT INTO t VALUES ($1)", &[&2i32]).await?;
/// savepoint.rollback().await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct Transaction<'a> {
    client: &'a mut Client,
    depth: u32,
    /// The savepoint's name as SQL (quoted if the caller chose it); `None` for the outermost.
    savepoint: Option<String>,
    finished: bool,
    /// The portals bound in this transaction (or savepoint) can be used while it is open.
    scope: Arc<Scope>,
    /// While its `BEGIN` (or `SAVEPOINT`) is awaited: the flag the connection task sets if
    /// that succeeds. The rollback on drop then runs only if it did.
    begun: Option<Arc<AtomicBool>>,
}

impl<'a> Transaction<'a> {
    /// Sends `sql` (`BEGIN …` at depth 0, `SAVEPOINT name` below) and waits for it.
    ///
    /// The transaction exists (unconfirmed) from the moment the statement is queued: if this
    /// future is dropped before the answer, the drop queues the rollback right behind the
    /// statement, and the connection task runs it only if the statement was sent and
    /// succeeded. So the client's next statement never lands in an abandoned transaction or
    /// savepoint, and a `BEGIN` that failed (or never went out) leaves nothing behind.
    pub(super) async fn begin(
        client: &'a mut Client,
        depth: u32,
        sql: String,
        savepoint: Option<String>,
    ) -> Result<Transaction<'a>> {
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let begun = Arc::new(AtomicBool::new(false));
        let scope = Scope::new(client.connection_id());
        let answer = client.queue(Work::Simple { sql }, false, Some(begun.clone()))?;
        let mut transaction = Transaction {
            client,
            depth,
            savepoint,
            finished: false,
            scope,
            begun: Some(begun),
        };
        let reply = answer
            .await
            .map_err(|_| Error::closed("the connection task ended before answering"))
            .and_then(|reply| reply);
        match reply {
            Ok(_) => {
                transaction.begun = None;
                Ok(transaction)
            }
            Err(error) => {
                // Nothing to roll back: the statement failed.
                transaction.finished = true;
                Err(error)
            }
        }
    }

    /// Commits (or releases the savepoint). A transaction in which a statement failed is
    /// rolled back by the server instead; that is an error here.
    #[doc(alias = "COMMIT")]
    pub async fn commit(mut self) -> Result<()> {
        self.finished = true;
        self.scope.close();
        let sql = match self.depth {
            0 => "COMMIT".to_owned(),
            _ => format!("RELEASE SAVEPOINT {}", self.savepoint_name()),
        };
        let results = self.client.simple_must_run(&sql).await?;
        let tag = results
            .last()
            .map(|r| r.command_status())
            .unwrap_or_default();
        if tag == "ROLLBACK" {
            return Err(Error::client(
                "COMMIT rolled the transaction back because a statement in it had failed",
            ));
        }
        Ok(())
    }

    /// Rolls back (or back to the savepoint).
    #[doc(alias = "ROLLBACK")]
    pub async fn rollback(mut self) -> Result<()> {
        self.finished = true;
        self.scope.close();
        self.client
            .simple_must_run(&self.rollback_sql())
            .await
            .map(drop)
    }

    fn rollback_sql(&self) -> String {
        match self.depth {
            0 => "ROLLBACK".to_owned(),
            _ => {
                let name = self.savepoint_name();
                format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
            }
        }
    }

    fn savepoint_name(&self) -> String {
        self.savepoint
            .clone()
            .unwrap_or_else(|| format!("pqlib_savepoint_{}", self.depth))
    }

    /// Starts a nested transaction: a savepoint.
    #[doc(alias = "SAVEPOINT")]
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.nested(None).await
    }

    /// Starts a nested transaction as a savepoint with the given name (`SAVEPOINT "name"`);
    /// see the blocking [`Transaction::savepoint`](crate::Transaction::savepoint). The name
    /// is quoted as an identifier; an empty name or one with a NUL byte is refused with
    /// [`BadInput`](crate::error::ErrorKind::BadInput) before anything is sent. Dropping the
    /// future before its answer leaves no savepoint behind, as for
    /// [`transaction`](Transaction::transaction).
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let mut tx = client.transaction().await?;
    /// let sp = tx.savepoint("step 2").await?;
    /// sp.execute("INSERT INTO t VALUES (2)", &[]).await?;
    /// sp.rollback().await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "SAVEPOINT")]
    pub async fn savepoint<I>(&mut self, name: I) -> Result<Transaction<'_>>
    where
        I: Into<String>,
    {
        self.nested(Some(name.into())).await
    }

    async fn nested(&mut self, name: Option<String>) -> Result<Transaction<'_>> {
        let depth = self.depth + 1;
        let savepoint = crate::transaction::savepoint_sql(depth, name.as_deref())?;
        let sql = format!("SAVEPOINT {savepoint}");
        Transaction::begin(&mut *self.client, depth, sql, Some(savepoint)).await
    }

    /// The client and the scope of this transaction's portals.
    pub(super) fn portal_parts(&self) -> (&Client, &Arc<Scope>) {
        (self.client, &self.scope)
    }
}

impl Deref for Transaction<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.scope.close();
        if !self.finished {
            if let Ok(sql) = CString::new(self.rollback_sql()) {
                self.client
                    .detached_if(Work::Simple { sql }, self.begun.take());
            }
        }
    }
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("depth", &self.depth)
            .finish()
    }
}

/// A request's answer, awaited. While it waits, the future drives the connection itself (the
/// connection task may too: whoever the socket wakes reads for everyone), so that a request
/// with nothing else in flight is sent, read and answered within its caller's task, without
/// waking the connection task.
/// Dropping it is safe at any point: the request is still read to its end.
pub(super) struct Answer {
    answer: oneshot::Receiver<Reply>,
    driving: Driving,
}

impl Future for Answer {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Reply> {
        let Answer { answer, driving } = &mut *self;
        let reply = driving.poll_until(cx, |cx| {
            Pin::new(&mut *answer).poll(cx).map(|reply| {
                reply.map_err(|_| Error::closed("the connection task ended before answering"))?
            })
        });
        if reply.is_ready() {
            self.driving.withdraw();
        }
        reply
    }
}
