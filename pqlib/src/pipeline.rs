//! libpq's pipeline mode: many statements sent without waiting for each other's results, so
//! that N statements cost about one round trip instead of N.
//!
//! The server runs pipelined statements in order and answers in order; a [`Pipeline`] keeps a
//! queue of what each queued operation will produce and turns libpq's results back into typed
//! values in the same order. Sync points ([`Pipeline::sync`]) delimit error handling: after a
//! statement fails, the server skips every later statement up to the next sync point (each
//! reports [`ErrorKind::PipelineAborted`]), and
//! statements up to a sync point run in one implicit transaction unless the SQL says otherwise.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::Arc;

use foreign_types::ForeignTypeRef;
use pqlib_sys as ffi;

use crate::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{PgResult, PgResultRef};
use crate::params::EncodedParams;
use crate::prepare::{Described, Plan};
use crate::row::{Column, Rows};
use crate::statement::{Statement, StatementRef, ToStatement};
use crate::types::{Kind, Oid, ToSql, Type};

impl Connection {
    /// Enters pipeline mode. The returned [`Pipeline`] borrows the connection until it is
    /// finished or dropped; dropping it reads and discards whatever results are left and
    /// returns the connection to normal mode.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut pipeline = conn.pipeline()?;
    /// for i in 0..100i32 {
    ///     pipeline.execute("INSERT INTO t (x) VALUES ($1)", &[&i])?;
    /// }
    /// pipeline.sync()?;
    /// while let Some(result) = pipeline.next_result() {
    ///     result?; // 100 inserts, then the sync point
    /// }
    /// pipeline.finish()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQenterPipelineMode")]
    pub fn pipeline(&mut self) -> Result<Pipeline<'_>> {
        self.before_query()?;
        // SAFETY: the connection is alive and idle (every method that sends also reads its
        // results before returning).
        if unsafe { ffi::PQenterPipelineMode(self.conn.as_ptr()) } != 1 {
            return Err(self.connection_error());
        }
        Ok(Pipeline {
            conn: self,
            expected: VecDeque::new(),
            ready: VecDeque::new(),
            unflushed: false,
            unsynced: false,
            broken: false,
            finished: false,
        })
    }
}

/// What one queued operation produces, in the order the server answers.
enum Expect {
    /// A statement's rows (or command status). Columns are known for prepared statements;
    /// `None` means read them from the result.
    Rows { columns: Option<Arc<[Column]>> },
    /// A prepare and the describe that follows it. `internal` ones are made by the pipeline
    /// itself, to learn the parameter types of SQL text, and are not shown to the user.
    Prepare {
        name: CString,
        sql: String,
        cached: bool,
        internal: bool,
    },
    /// Parse and Describe of the unnamed statement, for the parameter types of SQL text run
    /// under [`PreparePolicy::Never`](crate::PreparePolicy::Never); read by the pipeline
    /// itself and never shown to the user.
    Describe,
    /// A sync point.
    Sync,
}

/// One result read from a [`Pipeline`], in the order the operations were queued.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineResult {
    /// From [`Pipeline::query`], [`Pipeline::execute`] or [`Pipeline::query_typed`]: the rows,
    /// or for a statement without rows its command status
    /// ([`Rows::rows_affected`]).
    Rows(Rows),
    /// From [`Pipeline::prepare`].
    Prepared(Statement),
    /// From [`Pipeline::sync`].
    Sync,
}

impl PipelineResult {
    /// The rows, if this is a statement's result.
    pub fn into_rows(self) -> Option<Rows> {
        match self {
            PipelineResult::Rows(rows) => Some(rows),
            _ => None,
        }
    }

    /// The statement, if this is a prepare's result.
    pub fn into_statement(self) -> Option<Statement> {
        match self {
            PipelineResult::Prepared(statement) => Some(statement),
            _ => None,
        }
    }

    /// Whether this marks a sync point.
    pub fn is_sync(&self) -> bool {
        matches!(self, PipelineResult::Sync)
    }
}

/// A connection in pipeline mode; see [`Connection::pipeline`] and the [module
/// docs](crate::pipeline).
///
/// Operations are queued with [`query`](Pipeline::query), [`execute`](Pipeline::execute),
/// [`query_typed`](Pipeline::query_typed) and [`prepare`](Pipeline::prepare); their results
/// come out of [`next_result`](Pipeline::next_result) in the same order, with a
/// [`PipelineResult::Sync`] for each [`sync`](Pipeline::sync). Reading a result sends whatever
/// was queued first, so reading never waits for a result the server has not been asked for.
///
/// SQL text is prepared on first use and cached as in [`Connection::query`]; a statement the
/// connection has not seen costs one extra round trip inside the pipeline. Types that are not
/// built in must be known to the connection before they appear in a pipeline (use them once
/// outside it), since the catalog cannot be queried in pipeline mode; otherwise they show up
/// as a simple type named `unknown_OID` and `FromSql` for a custom type refuses them.
pub struct Pipeline<'c> {
    conn: &'c mut Connection,
    expected: VecDeque<Expect>,
    /// Results read ahead of the user, while preparing SQL text inside the pipeline.
    ready: VecDeque<Result<PipelineResult>>,
    /// Something was sent after the last sync or flush request: the server holds its results
    /// back until it sees one.
    unflushed: bool,
    /// Statements were sent after the last sync point.
    unsynced: bool,
    /// The connection was lost: nothing more will come.
    broken: bool,
    finished: bool,
}

impl Pipeline<'_> {
    /// Queues a statement (SQL text or a [`Statement`]) with its parameters; its result is a
    /// [`PipelineResult::Rows`].
    ///
    /// An error here is about this call (bad parameters, or a failed prepare of new SQL text
    /// inside the pipeline); errors from running the statement come from
    /// [`next_result`](Pipeline::next_result).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut pipeline = conn.pipeline()?;
    /// pipeline.query("SELECT $1::int4 * 2", &[&21i32])?;
    /// pipeline.sync()?;
    /// let rows = pipeline.next_result().unwrap()?.into_rows().unwrap();
    /// assert_eq!(rows.get(0).unwrap().get::<_, i32>(0), 42);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub fn query<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<()>
    where
        T: ?Sized + ToStatement,
    {
        let statement = match statement.__statement_ref() {
            StatementRef::Prepared(statement) => statement.clone(),
            StatementRef::Sql(sql) => match self.conn.statements.plan_in_pipeline(sql) {
                Plan::Cached(statement) => statement,
                Plan::Prepare => self.prepare_inside(sql)?,
                Plan::Unnamed(types) => return self.query_unnamed(sql, types, params),
            },
        };
        self.conn.statements.check_use(&statement, params.len())?;
        let encoded = EncodedParams::new(params, statement.params())?;
        self.ensure_usable()?;
        // SAFETY: the connection is alive, in pipeline mode and ours for the call.
        let sent = unsafe { encoded.send_prepared(self.conn.conn.as_ptr(), statement.c_name()) };
        self.sent(
            sent,
            Expect::Rows {
                columns: Some(statement.columns_arc()),
            },
        )
    }

    /// Queues a statement that returns no rows you need; the same as
    /// [`query`](Pipeline::query), whose result carries the affected row count.
    #[doc(alias = "PQsendQueryPrepared")]
    pub fn execute<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<()>
    where
        T: ?Sized + ToStatement,
    {
        self.query(statement, params)
    }

    /// Queues a statement with explicitly typed parameters, without preparing it.
    ///
    /// ```no_run
    /// use pqlib::types::Type;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut pipeline = conn.pipeline()?;
    /// pipeline.query_typed("SELECT $1", &[(&7i64, Type::INT8)])?;
    /// pipeline.sync()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendQueryParams")]
    pub fn query_typed(&mut self, sql: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<()> {
        crate::statement::refuse_copy(sql)?;
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let encoded = EncodedParams::typed(params)?;
        self.ensure_usable()?;
        // SAFETY: as in `query`.
        let sent = unsafe { encoded.send_params(self.conn.conn.as_ptr(), &sql) };
        self.sent(sent, Expect::Rows { columns: None })
    }

    /// Queues the preparation of a statement; its result is a [`PipelineResult::Prepared`].
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut pipeline = conn.pipeline()?;
    /// pipeline.prepare("SELECT $1::text")?;
    /// pipeline.sync()?;
    /// let statement = pipeline.next_result().unwrap()?.into_statement().unwrap();
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendPrepare")]
    #[doc(alias = "PQsendDescribePrepared")]
    pub fn prepare(&mut self, sql: &str) -> Result<()> {
        self.send_prepare(sql, false)
    }

    /// Queues closing (deallocating) a prepared statement on the server; its result is a
    /// [`PipelineResult::Rows`] with no rows. The statement is forgotten by the connection's
    /// cache; running it afterwards is a server error.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let statement = conn.prepare("SELECT 1")?;
    /// let mut pipeline = conn.pipeline()?;
    /// pipeline.query(&statement, &[])?;
    /// pipeline.close(&statement)?;
    /// pipeline.sync()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendClosePrepared")]
    pub fn close(&mut self, statement: &Statement) -> Result<()> {
        if !self.conn.statements.owns(statement) {
            return Err(Error::bad_input(
                "the statement was prepared on another connection",
            ));
        }
        self.ensure_usable()?;
        self.conn.statements.forget(statement);
        // SAFETY: the connection is alive and in pipeline mode; the name is NUL-terminated.
        #[cfg(libpq_17)]
        let sent = unsafe {
            ffi::PQsendClosePrepared(self.conn.conn.as_ptr(), statement.c_name().as_ptr()) == 1
        };
        #[cfg(not(libpq_17))]
        let sent = {
            // Before libpq 17 there is no Close message: DEALLOCATE is a statement of its own.
            let sql = format!("DEALLOCATE {}", statement.c_name().to_string_lossy());
            let sql = CString::new(sql).map_err(|e| Error::nul_byte("a statement name", e))?;
            // SAFETY: the connection is alive, in pipeline mode and ours for the call.
            unsafe { EncodedParams::none().send_params(self.conn.conn.as_ptr(), &sql) }
        };
        self.sent(
            sent,
            Expect::Rows {
                columns: Some(Arc::from(Vec::new())),
            },
        )
    }

    /// Marks a sync point: the server commits the implicit transaction (if any), ends error
    /// skipping, and sends everything queued so far. Its result is a [`PipelineResult::Sync`].
    #[doc(alias = "PQpipelineSync")]
    pub fn sync(&mut self) -> Result<()> {
        self.ensure_usable()?;
        // SAFETY: the connection is alive and in pipeline mode; this also flushes.
        let ok = unsafe { ffi::PQpipelineSync(self.conn.conn.as_ptr()) };
        if ok != 1 {
            return Err(self.lost());
        }
        self.expected.push_back(Expect::Sync);
        self.unflushed = false;
        self.unsynced = false;
        Ok(())
    }

    /// Asks the server to send the results of everything queued so far, without a sync point
    /// (no transaction boundary, no end of error skipping).
    #[doc(alias = "PQsendFlushRequest")]
    pub fn flush_request(&mut self) -> Result<()> {
        self.ensure_usable()?;
        let conn = self.conn.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode. In blocking mode PQflush
        // returns once everything is sent (0) or on failure (-1).
        let ok = unsafe { ffi::PQsendFlushRequest(conn) == 1 && ffi::PQflush(conn) == 0 };
        if !ok {
            return Err(self.lost());
        }
        self.unflushed = false;
        Ok(())
    }

    /// Always an error: `batch_execute` uses the simple query protocol, which libpq does not
    /// allow in pipeline mode. Queue the statements one by one instead.
    pub fn batch_execute(&mut self, _sql: &str) -> Result<()> {
        Err(Error::bad_input(
            "batch_execute (the simple query protocol) is not allowed in pipeline mode; queue \
             each statement with execute(), or finish the pipeline first",
        ))
    }

    /// The next result, in queue order, waiting for it if needed; `None` once every queued
    /// operation's result has been returned.
    ///
    /// A statement that failed gives its server error; later statements up to the next sync
    /// point give errors of kind
    /// [`PipelineAborted`](crate::error::ErrorKind::PipelineAborted). A lost connection gives
    /// one error of kind [`Closed`](crate::error::ErrorKind::Closed), then `None`.
    #[doc(alias = "PQgetResult")]
    pub fn next_result(&mut self) -> Option<Result<PipelineResult>> {
        if let Some(result) = self.ready.pop_front() {
            return Some(result);
        }
        if self.expected.is_empty() {
            return None;
        }
        Some(self.read_one())
    }

    /// How many results are still to be read.
    pub fn pending(&self) -> usize {
        self.ready.len() + self.expected.len()
    }

    /// Leaves pipeline mode. All results must have been read: with results pending this is
    /// an error (not a wait), and dropping the pipeline then discards them. Work queued since
    /// the last sync point is synced first.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut pipeline = conn.pipeline()?;
    /// pipeline.execute("SELECT 1", &[])?;
    /// assert!(pipeline.finish().is_err()); // one result unread: dropped, then discarded
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexitPipelineMode")]
    pub fn finish(mut self) -> Result<()> {
        if self.pending() > 0 {
            return Err(Error::bad_input(format!(
                "{} pipeline results were not read; read them with next_result(), or drop the \
                 pipeline to discard them",
                self.pending()
            )));
        }
        self.finished = true;
        self.shut_down()
    }

    /// Syncs unsynced work, reads and discards what is left, and leaves pipeline mode.
    fn shut_down(&mut self) -> Result<()> {
        if !self.broken && !self.conn.is_closed() {
            if self.unsynced {
                self.sync()?;
            }
            while let Some(result) = self.next_result() {
                if let Err(e) = result {
                    if e.kind() == ErrorKind::Closed {
                        return Err(e);
                    }
                }
            }
        }
        if self.broken || self.conn.is_closed() {
            // Whatever libpq still holds is of no use, but it must be read before libpq lets
            // the connection leave pipeline mode.
            for _ in 0..64 {
                // SAFETY: the connection is alive; results are freed by PgResult. On a dead
                // connection PQgetResult returns NULL (or a final error) without waiting.
                let result = unsafe { ffi::PQgetResult(self.conn.conn.as_ptr()) };
                match PgResult::from_returned(result) {
                    Some(result) => drop(result),
                    None if self.conn.conn.status() == ffi::ConnStatusType::CONNECTION_BAD => break,
                    None => {}
                }
            }
        }
        // SAFETY: the connection is alive; this fails (0) only with results still pending or
        // on a broken connection, both reported below.
        if unsafe { ffi::PQexitPipelineMode(self.conn.conn.as_ptr()) } != 1 {
            return Err(self.conn.connection_error());
        }
        Ok(())
    }

    /// Queues `sql` as the unnamed statement with its parameter types (Parse, Bind, Execute
    /// in the current sync segment), describing it inside the pipeline first if they are
    /// not known yet.
    fn query_unnamed(
        &mut self,
        sql: &str,
        described: Option<Described>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<()> {
        crate::statement::refuse_copy(sql)?;
        let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let types = match described {
            Some(described) => described.params,
            // Not described yet, and nothing to describe for: a describe would wait for the
            // server mid-pipeline (and fail in an aborted segment). A text that does take
            // parameters gets the server's error from `next_result`.
            None if params.is_empty() => Arc::from([]),
            None => {
                let described = self.describe_inside(&sql_c)?;
                self.conn
                    .statements
                    .unnamed
                    .described(sql, described.clone());
                described.params
            }
        };
        crate::connection::check_param_count(&types, params.len())?;
        let encoded = EncodedParams::with_types(params, &types)?;
        self.ensure_usable()?;
        // SAFETY: as in `query`.
        let sent = unsafe { encoded.send_params(self.conn.conn.as_ptr(), &sql_c) };
        self.sent(sent, Expect::Rows { columns: None })
    }

    /// The parameter types of `sql`: Parse and Describe of the unnamed statement inside the
    /// pipeline, waited for, keeping the results of earlier operations for `next_result`.
    fn describe_inside(&mut self, sql: &CStr) -> Result<Described> {
        self.ensure_usable()?;
        let conn = self.conn.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode; the name and SQL are
        // NUL-terminated and alive for the calls; no parameter types are given.
        let sent = unsafe {
            ffi::PQsendPrepare(conn, c"".as_ptr(), sql.as_ptr(), 0, std::ptr::null()) == 1
                && ffi::PQsendDescribePrepared(conn, c"".as_ptr()) == 1
        };
        self.sent(sent, Expect::Describe)?;
        while !matches!(self.expected.front(), Some(Expect::Describe)) {
            let result = self.read_one();
            if self.broken {
                return Err(Error::closed("the connection was lost during the pipeline"));
            }
            self.ready.push_back(result);
        }
        if self.unflushed {
            self.flush_request()?;
        }
        self.expected.pop_front();
        let description = self.read_describe()?;
        let params = (0..description.nparams())
            .map(|i| self.type_of(description.param_type(i)))
            .collect();
        let columns = self.columns_of(&description);
        Ok(Described { params, columns })
    }

    /// The results of an [`Expect::Describe`]: Parse's, then Describe's.
    fn read_describe(&mut self) -> Result<PgResult> {
        let prepared = self.read_operation();
        let described = self.read_operation();
        let result = prepared.and(described);
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Closed {
                self.give_up();
            }
        }
        result
    }

    /// Prepares new SQL text inside the pipeline and waits for its description, keeping the
    /// results of earlier operations for `next_result`.
    fn prepare_inside(&mut self, sql: &str) -> Result<Statement> {
        self.send_prepare(sql, true)?;
        loop {
            let ours = matches!(
                self.expected.front(),
                Some(Expect::Prepare { internal: true, .. })
            );
            let result = self.read_one();
            if ours {
                return match result {
                    Ok(PipelineResult::Prepared(statement)) => Ok(statement),
                    Ok(other) => Err(Error::client(format!(
                        "expected a statement, got {other:?}"
                    ))),
                    Err(e) => Err(e),
                };
            }
            if self.broken {
                return Err(Error::closed("the connection was lost during the pipeline"));
            }
            self.ready.push_back(result);
        }
    }

    fn send_prepare(&mut self, sql: &str, internal: bool) -> Result<()> {
        let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        self.ensure_usable()?;
        let name = self.conn.statements.next_name();
        let conn = self.conn.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode; name and SQL are
        // NUL-terminated and alive for the calls; no parameter types are given.
        let sent = unsafe {
            ffi::PQsendPrepare(conn, name.as_ptr(), sql_c.as_ptr(), 0, std::ptr::null()) == 1
                && ffi::PQsendDescribePrepared(conn, name.as_ptr()) == 1
        };
        self.sent(
            sent,
            Expect::Prepare {
                name,
                sql: sql.to_owned(),
                cached: internal,
                internal,
            },
        )
    }

    fn ensure_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::closed("the connection was lost during the pipeline"));
        }
        Ok(())
    }

    /// Records what a queued operation will answer, or fails if libpq could not queue it.
    fn sent(&mut self, sent: bool, expect: Expect) -> Result<()> {
        if !sent {
            return Err(self.lost());
        }
        self.expected.push_back(expect);
        self.unflushed = true;
        self.unsynced = true;
        Ok(())
    }

    /// The error for a failed send; if the connection is gone, nothing more will come.
    fn lost(&mut self) -> Error {
        let error = self.conn.connection_error();
        if error.kind() == ErrorKind::Closed {
            self.give_up();
        }
        error
    }

    fn give_up(&mut self) {
        self.broken = true;
        self.expected.clear();
    }

    /// Reads the result of the first expected operation.
    fn read_one(&mut self) -> Result<PipelineResult> {
        if self.unflushed {
            // The server sends nothing for statements it has not been asked to flush.
            self.flush_request()?;
        }
        let Some(expect) = self.expected.pop_front() else {
            return Err(Error::client("no pipeline result is pending"));
        };
        let result = match expect {
            Expect::Sync => self.read_sync(),
            // Left behind by a describe that failed before reading it: not the user's.
            Expect::Describe => {
                let _ = self.read_describe();
                return self.read_one();
            }
            Expect::Rows { columns } => self.read_operation().map(|result| {
                let columns = columns.unwrap_or_else(|| self.columns_of(&result));
                PipelineResult::Rows(Rows::new(result, columns, self.conn.notices.clone()))
            }),
            Expect::Prepare {
                name, sql, cached, ..
            } => {
                let prepared = self.read_operation();
                let described = self.read_operation();
                match (prepared, described) {
                    (Ok(_), Ok(description)) => {
                        let statement = self.statement_from(name, &sql, &description, cached);
                        if cached {
                            self.conn.statements.insert(statement.clone());
                        }
                        Ok(PipelineResult::Prepared(statement))
                    }
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => {
                        self.conn.statements.close_later(name);
                        Err(e)
                    }
                }
            }
        };
        if let Err(e) = &result {
            if e.kind() == ErrorKind::Closed {
                self.give_up();
            }
        }
        result
    }

    fn read_sync(&mut self) -> Result<PipelineResult> {
        let conn = self.conn.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode with a sync point expected.
        let ptr = unsafe { ffi::PQgetResult(conn) };
        if ptr.is_null() {
            return Err(self.conn.connection_error());
        }
        // SAFETY: a non-NULL result; only its status is read before `check` takes it.
        if unsafe { ffi::PQresultStatus(ptr) } == ffi::ExecStatusType::PGRES_PIPELINE_SYNC {
            drop(PgResult::from_returned(ptr));
            self.conn.notices.resume_panic();
            return Ok(PipelineResult::Sync);
        }
        // Anything else here is an error libpq made up, such as a lost connection.
        let status = self.conn.check(ptr).map(|r| r.status())?;
        Err(Error::client(format!(
            "expected the pipeline's sync point, got result status {}",
            status.0
        )))
    }

    /// One operation's result, and the NULL that ends it.
    fn read_operation(&mut self) -> Result<PgResult> {
        let conn = self.conn.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode with this result expected.
        let ptr = unsafe { ffi::PQgetResult(conn) };
        if ptr.is_null() {
            return Err(match self.conn.connection_error() {
                e if e.kind() == ErrorKind::Closed => e,
                _ => Error::client("the pipeline ended before a queued operation's result"),
            });
        }
        // SAFETY: a non-NULL result; only its status is read before `check` takes it.
        let aborted =
            unsafe { ffi::PQresultStatus(ptr) } == ffi::ExecStatusType::PGRES_PIPELINE_ABORTED;
        let checked = if aborted {
            drop(PgResult::from_returned(ptr));
            self.conn.notices.resume_panic();
            Err(Error::pipeline_aborted())
        } else {
            self.conn.check(ptr)
        };
        if !self.conn.is_closed() {
            // SAFETY: as above; any further results of this operation (there should be none
            // for one extended-protocol statement) are freed until the NULL that ends it.
            while let Some(extra) = PgResult::from_returned(unsafe { ffi::PQgetResult(conn) }) {
                drop(extra);
            }
        }
        checked
    }

    fn statement_from(
        &mut self,
        name: CString,
        sql: &str,
        description: &PgResultRef,
        cached: bool,
    ) -> Statement {
        let params = (0..description.nparams())
            .map(|i| self.type_of(description.param_type(i)))
            .collect();
        let columns = self.columns_of(description);
        self.conn
            .statements
            .make(name, sql, params, columns, cached)
    }

    fn columns_of(&mut self, result: &PgResultRef) -> Arc<[Column]> {
        (0..result.nfields())
            .map(|i| Column::new(result, i, self.type_of(result.field_type(i))))
            .collect()
    }

    /// A type without a catalog lookup, which pipeline mode does not allow.
    fn type_of(&self, oid: Oid) -> Type {
        Type::from_oid(oid)
            .or_else(|| self.conn.types.get(oid))
            .unwrap_or_else(|| {
                Type::new(format!("unknown_{oid}"), oid, Kind::Simple, String::new())
            })
    }
}

impl Drop for Pipeline<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Nobody to report to; a connection left unusable shows it in its status.
            let _ = self.shut_down();
        }
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("pending", &self.pending())
            .field("broken", &self.broken)
            .finish()
    }
}
