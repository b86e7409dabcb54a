//! A connection to the server: connecting, running statements, and the plumbing every query
//! path shares (parameter encoding, result checking, the statement and type caches).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt;
use std::sync::Arc;

use foreign_types::ForeignType;
use pqlib_sys as ffi;

use crate::encoding::EncodingCheck;
use crate::error::{DbError, Error, Result, Severity};
use crate::handle::{PgConn, PgResult, PgResultRef, PqBuffer, lossy_string};
use crate::notice::NoticeState;
use crate::notify::Notification;
use crate::params::EncodedParams;
use crate::prepare::{Described, Plan};
use crate::row::{Column, OwnedRow, Rows};
use crate::statement::{Statement, StatementCache, StatementRef, ToStatement};
use crate::types::{ToSql, Type, TypeCache};

pub use crate::params::MAX_PARAMETERS;

/// A synchronous connection to a PostgreSQL server through libpq.
///
/// `Connection` is `Send` but not `Sync`: libpq forbids two threads from using one `PGconn`
/// at the same time, and `&mut self` on every query method makes the compiler enforce it.
/// Move a connection to another thread freely; to cancel a running query from another
/// thread, use a [`CancelToken`](crate::CancelToken).
///
/// ```no_run
/// # fn main() -> Result<(), pqlib::Error> {
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// let n: i64 = conn.query_one("SELECT $1::int8 + 1", &[&41i64])?.get(0);
/// assert_eq!(n, 42);
/// # Ok(()) }
/// ```
pub struct Connection {
    pub(crate) conn: PgConn,
    /// The notice receiver's state. Every `PGresult` from this connection copies libpq's
    /// notice hook, so each `Rows` holds a clone of this `Arc` too (libpqxx issue 173).
    pub(crate) notices: Arc<NoticeState>,
    pub(crate) statements: StatementCache,
    pub(crate) types: TypeCache,
    /// Notifications `Notifications::len` took out of libpq's queue (which can only be
    /// popped, not counted) and no iterator has returned yet.
    pub(crate) pending_notifications: RefCell<VecDeque<Notification>>,
    /// The server ended the session (a FATAL error) before libpq noticed the socket close.
    lost: bool,
    /// How many more COPYs the statement being run may start (see `copy_discard::max_copies`).
    pub(crate) copies_left: usize,
    /// Set once the session is in UTF8 (`require_utf8`); checked after every result.
    encoding: Option<EncodingCheck>,
    /// The service this connection was made with, which libpq before 18 does not keep
    /// ([`Connection::service`]).
    #[cfg(not(libpq_18))]
    pub(crate) service: Option<String>,
}

impl Connection {
    /// Connects with a libpq connection string: `key=value` pairs
    /// (`host=localhost port=5432 dbname=app`) or a `postgresql://` URI.
    ///
    /// Everything libpq does when it connects applies: `PG*` environment variables fill in
    /// what the string leaves out, passwords come from `~/.pgpass` (or `PGPASSFILE`),
    /// `service=` reads `pg_service.conf`, several hosts are tried in order, and
    /// `connect_timeout` limits each attempt. Notices the server sends while the session
    /// starts go to the `log` crate, as later ones do (see [`Config::notice_callback`] to
    /// handle them yourself).
    ///
    /// [`Config::notice_callback`]: crate::Config::notice_callback
    ///
    /// ```no_run
    /// let conn = pqlib::Connection::connect("postgresql://app@db1,db2/app?target_session_attrs=read-write")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQconnectdb")]
    #[doc(alias = "PQconnectStartParams")]
    #[doc(alias = "PQconnectPoll")]
    pub fn connect(params: &str) -> Result<Connection> {
        // libpq's own parser: exactly PQconnectdb's syntax, but its errors are returned (with
        // anything that may be a password masked) instead of quoting the input back.
        let config: crate::Config = params.parse()?;
        Connection::connect_config(&config)
    }

    /// Connects with the parameters of a [`Config`](crate::Config).
    ///
    /// This is libpq's blocking connect (`PQconnectdbParams`), made of its non-blocking steps
    /// (`PQconnectStartParams`, `PQconnectPoll`) so that pqlib's notice receiver is in place
    /// from the start; `connect_timeout` applies to each host and address as in libpq. If
    /// the config's [`notice_callback`](crate::Config::notice_callback) panics on a notice
    /// sent during startup, the panic comes out of this call.
    ///
    /// ```no_run
    /// let mut config = pqlib::Config::new();
    /// config.host("localhost").user("postgres");
    /// let conn = pqlib::Connection::connect_config(&config)?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQconnectdbParams")]
    #[doc(alias = "PQconnectStartParams")]
    #[doc(alias = "PQconnectPoll")]
    pub fn connect_config(config: &crate::Config) -> Result<Connection> {
        // libpq would say "invalid connection option"; this says which libpq is needed.
        config.validate()?;
        let notices = NoticeState::new(
            config
                .notice_callback
                .as_ref()
                .map(crate::notice::NoticeCallback::handler),
        );
        let conn = connect_blocking(config, &notices).map_err(|e| {
            let e = match config.get("password") {
                Some(password) if !password.is_empty() => e.redact(password),
                _ => e,
            };
            crate::trace::connected("", "", "", Err(&e));
            e
        })?;
        let mut connection = Connection::from_connected(conn, notices)?;
        connection.statements.policy = config.prepare_policy;
        #[cfg(not(libpq_18))]
        {
            connection.service = crate::session::requested_service(config);
        }
        Ok(connection)
    }

    pub(crate) fn from_connected(conn: PgConn, notices: Arc<NoticeState>) -> Result<Connection> {
        let mut connection = Connection {
            conn,
            notices,
            statements: StatementCache::default(),
            types: TypeCache::default(),
            pending_notifications: RefCell::default(),
            lost: false,
            copies_left: 1,
            encoding: None,
            #[cfg(not(libpq_18))]
            service: None,
        };
        connection.require_utf8()?;
        #[cfg(feature = "tracing")]
        {
            let text = |getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut c_char| {
                // SAFETY: the connection is alive; the strings are owned by libpq and copied.
                unsafe { lossy_string(getter(connection.conn.as_ptr())) }.unwrap_or_default()
            };
            let (host, port, dbname) = (text(ffi::PQhost), text(ffi::PQport), text(ffi::PQdb));
            crate::trace::connected(&host, &port, &dbname, Ok(connection.backend_pid()));
        }
        Ok(connection)
    }

    /// Text in binary results is decoded as UTF-8, so the session must use it whatever the
    /// server's or the environment's default encoding.
    fn require_utf8(&mut self) -> Result<()> {
        if self.client_encoding() == "UTF8" {
            self.encoding = Some(EncodingCheck::new(&self.conn));
            return Ok(());
        }
        // SAFETY: the connection is alive; a static NUL-terminated string.
        let rc = unsafe { ffi::PQsetClientEncoding(self.conn.as_ptr(), c"UTF8".as_ptr()) };
        if rc != 0 {
            return Err(Error::connect(format!(
                "could not set client_encoding to UTF8: {}",
                self.conn.error_message()
            )));
        }
        self.encoding = Some(EncodingCheck::new(&self.conn));
        Ok(())
    }

    /// Text goes both ways as UTF-8 (parameters are encoded, results decoded as such), so a
    /// session whose `client_encoding` was changed to a converting encoding (`SET
    /// client_encoding`, `set_config`) would corrupt every text value from here on: it is
    /// closed instead. `SQL_ASCII`, which converts nothing, is allowed (see `encoding`).
    fn check_encoding(&mut self) -> Result<()> {
        let intact = match self.encoding.as_mut() {
            Some(check) => check.is_intact(&self.conn),
            None => true,
        };
        // A lost connection reports no parameters at all: that is not a changed encoding,
        // and the error that matters is the one that lost it.
        if intact || self.lost || self.conn.status() == ffi::ConnStatusType::CONNECTION_BAD {
            return Ok(());
        }
        let name = self.client_encoding();
        Err(self.poison(&format!(
            "the session's client_encoding was changed to {name}; pqlib exchanges text as \
             UTF-8 bytes, which {name} would convert"
        )))
    }

    /// Runs one or more SQL statements separated by semicolons with the simple query
    /// protocol: no parameters, no results returned. Stops at the first error.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.batch_execute("CREATE TEMP TABLE t (id int); INSERT INTO t VALUES (1), (2);")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexec")]
    #[doc(alias = "PQsendQuery")]
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        let _span = crate::trace::statement("batch_execute", sql);
        // Not `PQexec`: it returns the last result, and when the server ends the session
        // with a FATAL error (a pooler refusing a transaction) that is libpq's own "server
        // closed the connection", not the server's reason.
        self.run_simple(sql, |_| {})
    }

    /// Runs a statement and returns the number of rows it affected (0 for statements that
    /// report none). `statement` is SQL text (prepared once and cached) or a [`Statement`].
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let n = conn.execute("UPDATE accounts SET balance = balance + $1 WHERE id = $2", &[&10i64, &7i32])?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexecPrepared")]
    pub fn execute<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64>
    where
        T: ?Sized + ToStatement,
    {
        let rows = self.query(statement, params)?;
        Ok(rows.rows_affected())
    }

    /// Runs a statement and returns all its rows.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let rows = conn.query("SELECT id, name FROM users WHERE id > $1", &[&10i32])?;
    /// for row in &rows {
    ///     let name: &str = row.get("name");
    ///     println!("{}: {name}", row.get::<_, i32>(0));
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexecPrepared")]
    pub fn query<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Rows>
    where
        T: ?Sized + ToStatement,
    {
        self.before_query()?;
        let text = match statement.__statement_ref() {
            StatementRef::Sql(text) => text,
            StatementRef::Prepared(_) => "",
        };
        let statement = match self.plan(statement)? {
            Planned::Prepared(statement) => statement,
            Planned::Unnamed { sql, described } => {
                let _span = crate::trace::statement("query", text);
                let result = self.query_unnamed(text, &sql, described, params);
                crate::trace::statement_done(
                    result.as_ref().map_or(0, Rows::len),
                    result.as_ref().err(),
                );
                return result;
            }
        };
        let _span = crate::trace::statement("query", statement.sql());
        let result = match self.execute_prepared(&statement, params) {
            Err(e) if statement.is_cached() && is_stale_plan(&e) && self.is_idle() => {
                // DDL changed the cached statement's result type, or SQL deallocated it.
                // Outside a transaction nothing was lost, so prepare it again and retry once.
                let fresh = StatementCache::reprepare(self, &statement)?;
                self.execute_prepared(&fresh, params)
            }
            Err(e) => {
                if is_stale_plan(&e) {
                    self.statements.forget(&statement);
                }
                Err(e)
            }
            ok => ok,
        };
        crate::trace::statement_done(result.as_ref().map_or(0, Rows::len), result.as_ref().err());
        result
    }

    /// Runs a statement expected to return exactly one row; any other count is an error of
    /// kind [`RowCount`](crate::error::ErrorKind::RowCount).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let n: i64 = conn.query_one("SELECT count(*) FROM pg_class", &[])?.get(0);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexecPrepared")]
    pub fn query_one<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<OwnedRow>
    where
        T: ?Sized + ToStatement,
    {
        OwnedRow::exactly_one(self.query(statement, params)?)
    }

    /// Runs a statement expected to return at most one row; more is an error of kind
    /// [`RowCount`](crate::error::ErrorKind::RowCount).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let name: Option<String> = conn
    ///     .query_opt("SELECT name FROM users WHERE id = $1", &[&1i32])?
    ///     .map(|row| row.get(0));
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexecPrepared")]
    pub fn query_opt<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<OwnedRow>>
    where
        T: ?Sized + ToStatement,
    {
        OwnedRow::at_most_one(self.query(statement, params)?)
    }

    /// Runs a statement with explicitly typed parameters in one round trip, without
    /// preparing it: the server is told each parameter's type, so nothing is looked up first.
    ///
    /// ```no_run
    /// use pqlib::types::Type;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let rows = conn.query_typed("SELECT $1 || '!'", &[(&"hi", Type::TEXT)])?;
    /// assert_eq!(rows.iter().next().unwrap().get::<_, &str>(0), "hi!");
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQexecParams")]
    pub fn query_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Rows> {
        let _span = crate::trace::statement("query_typed", sql);
        self.before_query()?;
        crate::statement::refuse_copy(sql)?;
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let encoded = EncodedParams::typed(params)?;
        // SAFETY: the connection is alive, idle and ours for the call.
        let ptr = unsafe { encoded.exec_params(self.conn.as_ptr(), &sql) };
        let result = self.check(ptr)?;
        let columns = self.describe_columns(&result)?;
        Ok(Rows::new(result, columns, self.notices.clone()))
    }

    /// How `statement` runs here: as a named statement (given, cached, or prepared now), or
    /// under the [`PreparePolicy`](crate::PreparePolicy) as the unnamed statement, described
    /// now if it has not been.
    pub(crate) fn plan<T: ?Sized + ToStatement>(&mut self, statement: &T) -> Result<Planned> {
        let sql = match statement.__statement_ref() {
            StatementRef::Prepared(statement) => return Ok(Planned::Prepared(statement.clone())),
            StatementRef::Sql(sql) => sql,
        };
        match self.statements.plan(sql) {
            Plan::Cached(statement) => Ok(Planned::Prepared(statement)),
            Plan::Prepare => StatementCache::prepare_and_cache(self, sql).map(Planned::Prepared),
            Plan::Unnamed(known) => {
                crate::statement::refuse_copy(sql)?;
                let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
                let described = self.described(sql, &sql_c, known)?;
                Ok(Planned::Unnamed {
                    sql: sql_c,
                    described,
                })
            }
        }
    }

    /// Runs `sql` as the unnamed statement in one sync segment (Parse with the described
    /// parameter types, Bind, Execute, Sync): the path of
    /// [`PreparePolicy::Never`](crate::PreparePolicy::Never), which a pooler in transaction
    /// mode never splits.
    fn query_unnamed(
        &mut self,
        sql: &str,
        sql_c: &CStr,
        described: Described,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Rows> {
        check_param_count(&described.params, params.len())?;
        let encoded = EncodedParams::with_types(params, &described.params)?;
        // SAFETY: the connection is alive, idle and ours for the call.
        let ptr = unsafe { encoded.exec_params(self.conn.as_ptr(), sql_c) };
        let result = match self.check(ptr) {
            Ok(result) => result,
            Err(e) => {
                if crate::prepare::may_be_stale(&e) {
                    self.statements.unnamed.forget_description(sql);
                }
                return Err(e);
            }
        };
        // The description's columns, unless DDL changed them since: no allocation per run.
        let columns = if result.has_columns(&described.columns) {
            described.columns
        } else {
            self.describe_columns(&result)?
        };
        Ok(Rows::new(result, columns, self.notices.clone()))
    }

    /// `known`, or what the server says `sql` is as the unnamed statement (remembered for
    /// the next run).
    pub(crate) fn described(
        &mut self,
        sql: &str,
        sql_c: &CStr,
        known: Option<Described>,
    ) -> Result<Described> {
        if let Some(known) = known {
            return Ok(known);
        }
        let described = self.describe_unnamed(sql_c)?;
        self.statements.unnamed.described(sql, described.clone());
        Ok(described)
    }

    /// The parameter types and result columns of `sql`, from Parse and Describe of the
    /// unnamed statement and a Sync, sent together in pipeline mode: one round trip, one
    /// sync segment (`PQprepare` then `PQdescribePrepared` would be two, and a pooler may
    /// run them on different server connections).
    fn describe_unnamed(&mut self, sql: &CStr) -> Result<Described> {
        let ptr = self.conn.as_ptr();
        // SAFETY: the connection is alive, idle and out of pipeline mode (`before_query`).
        if unsafe { ffi::PQenterPipelineMode(ptr) } != 1 {
            return Err(self.connection_error());
        }
        // SAFETY: in pipeline mode; the name and SQL are NUL-terminated for the calls, and
        // no parameter types are given (count 0, NULL array).
        let sent = unsafe {
            ffi::PQsendPrepare(ptr, c"".as_ptr(), sql.as_ptr(), 0, std::ptr::null()) == 1
                && ffi::PQsendDescribePrepared(ptr, c"".as_ptr()) == 1
                && ffi::PQpipelineSync(ptr) == 1
        };
        if !sent {
            let e = self.connection_error();
            return Err(self.poison(&format!("describing a statement failed midway: {e}")));
        }
        // Parse's result and NULL, Describe's result (or "aborted") and NULL, the sync.
        let mut error = None;
        let mut description = None;
        let mut nulls = 0;
        loop {
            // SAFETY: the connection is alive and in pipeline mode, with results due.
            let ptr = unsafe { ffi::PQgetResult(ptr) };
            let Some(result) = PgResult::from_returned(ptr) else {
                nulls += 1;
                if nulls > 2 {
                    // No sync where one is due: the protocol state is not what was sent.
                    let e = self.connection_error();
                    return Err(self.poison(&format!("describing a statement: {e}")));
                }
                continue;
            };
            match result.status() {
                ffi::ExecStatusType::PGRES_PIPELINE_SYNC => break,
                ffi::ExecStatusType::PGRES_PIPELINE_ABORTED => {}
                ffi::ExecStatusType::PGRES_COMMAND_OK => description = Some(result),
                _ => {
                    let e = self.check_each(result.into_ptr());
                    error.get_or_insert(e.err().unwrap_or_else(|| {
                        Error::client("describing a statement returned an unexpected result")
                    }));
                }
            }
        }
        // SAFETY: the sync was read, so the pipeline is idle and can be left.
        if unsafe { ffi::PQexitPipelineMode(ptr) } != 1 {
            let e = self.connection_error();
            return Err(self.poison(&format!("leaving pipeline mode after a describe: {e}")));
        }
        self.after_results()?;
        if let Some(error) = error {
            return Err(error);
        }
        let description = description
            .ok_or_else(|| Error::client("describing a statement returned no description"))?;
        let params = (0..description.nparams())
            .map(|i| self.resolve_type(description.param_type(i)))
            .collect::<Result<_>>()?;
        let columns = self.describe_columns(&description)?;
        Ok(Described { params, columns })
    }

    /// Prepares a statement on the server, to run many times with different parameters.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let insert = conn.prepare("INSERT INTO t (a, b) VALUES ($1, $2)")?;
    /// println!("parameter types: {:?}", insert.params());
    /// for i in 0..10i32 {
    ///     conn.execute(&insert, &[&i, &format!("row {i}")])?;
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQdescribePrepared")]
    #[doc(alias = "PQprepare")]
    pub fn prepare(&mut self, sql: &str) -> Result<Statement> {
        self.before_query()?;
        self.prepare_typed_inner(sql, &[], false)
    }

    /// Prepares a statement, fixing the types of (some of) its parameters; the server infers
    /// the rest.
    ///
    /// ```no_run
    /// use pqlib::types::Type;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let stmt = conn.prepare_typed("SELECT $1", &[Type::INT8])?;
    /// assert_eq!(stmt.params(), &[Type::INT8]);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQdescribePrepared")]
    #[doc(alias = "PQprepare")]
    pub fn prepare_typed(&mut self, sql: &str, types: &[Type]) -> Result<Statement> {
        self.before_query()?;
        self.prepare_typed_inner(sql, types, false)
    }

    /// Prepares and describes a statement: `PQprepare` then `PQdescribePrepared`.
    pub(crate) fn prepare_typed_inner(
        &mut self,
        sql: &str,
        types: &[Type],
        cached: bool,
    ) -> Result<Statement> {
        let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        let name = self.statements.next_name();
        let oids: Vec<ffi::Oid> = types.iter().map(Type::oid).collect();
        let count = c_int::try_from(oids.len())
            .ok()
            .filter(|&n| n as usize <= MAX_PARAMETERS)
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "{} parameter types; the most is {MAX_PARAMETERS}",
                    oids.len()
                ))
            })?;
        // SAFETY: the connection is alive; name and SQL are NUL-terminated and `oids` has
        // `count` entries, all alive during the call.
        let ptr = unsafe {
            ffi::PQprepare(
                self.conn.as_ptr(),
                name.as_ptr(),
                sql_c.as_ptr(),
                count,
                oids.as_ptr(),
            )
        };
        self.check(ptr)?;
        // SAFETY: as above; the statement now exists on the server.
        let ptr = unsafe { ffi::PQdescribePrepared(self.conn.as_ptr(), name.as_ptr()) };
        let description = match self.check(ptr) {
            Ok(description) => description,
            Err(e) => {
                self.statements.close_later(name);
                return Err(e);
            }
        };
        let params = (0..description.nparams())
            .map(|i| self.resolve_type(description.param_type(i)))
            .collect::<Result<Vec<_>>>()?;
        let columns = self.describe_columns(&description)?;
        Ok(self.statements.make(name, sql, params, columns, cached))
    }

    fn execute_prepared(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Rows> {
        self.statements.check_use(statement, params.len())?;
        let encoded = EncodedParams::new(params, statement.params())?;
        // SAFETY: the connection is alive, idle and ours for the call.
        let ptr = unsafe { encoded.exec_prepared(self.conn.as_ptr(), statement.c_name()) };
        let result = self.check(ptr)?;
        Ok(Rows::new(
            result,
            statement.columns_arc(),
            self.notices.clone(),
        ))
    }

    /// The columns of a result or statement description, with their types resolved.
    pub(crate) fn describe_columns(&mut self, result: &PgResultRef) -> Result<Arc<[Column]>> {
        (0..result.nfields())
            .map(|i| {
                let type_ = self.resolve_type(result.field_type(i))?;
                Ok(Column::new(result, i, type_))
            })
            .collect()
    }

    /// The `Type` for an OID: built-in types directly, others (enums, composites, domains,
    /// arrays of those) looked up in the catalog once per connection.
    pub(crate) fn resolve_type(&mut self, oid: ffi::Oid) -> Result<Type> {
        if let Some(ty) = Type::from_oid(oid) {
            return Ok(ty);
        }
        if let Some(ty) = self.types.get(oid) {
            return Ok(ty);
        }
        let ty = crate::types::lookup(self, oid)?;
        self.types.insert(oid, ty.clone());
        Ok(ty)
    }

    /// Work owed to the server before the next statement: closing statements whose last
    /// handle was dropped.
    pub(crate) fn before_query(&mut self) -> Result<()> {
        if self.lost {
            return Err(Error::closed(
                "this session has ended (closed by the server, or by pqlib after its protocol \
                 state became untrustworthy); reset() or reconnect",
            ));
        }
        if self.inside_operation() {
            // Only a guard that never ran its Drop (`mem::forget`) leaves this behind: its
            // results would be taken for the next statement's.
            return Err(self.poison(
                "the connection is still inside an earlier operation (a Pipeline, COPY or row \
                 stream whose guard was leaked without being dropped)",
            ));
        }
        self.check_encoding()?;
        self.copies_left = 1;
        self.close_dropped_statements()?;
        crate::portal::close_dropped(self)
    }

    /// Closes the statements whose last handle was dropped (or that the cache evicted) with
    /// the protocol's Close message: unlike `DEALLOCATE`, the server accepts it in a failed
    /// transaction, so nothing waits for the `ROLLBACK`.
    #[cfg(libpq_17)]
    fn close_dropped_statements(&mut self) -> Result<()> {
        for name in self.statements.take_closed() {
            // SAFETY: the connection is alive, idle and out of pipeline mode; `name` is
            // NUL-terminated for the call.
            let ptr = unsafe { ffi::PQclosePrepared(self.conn.as_ptr(), name.as_ptr()) };
            // Closing a statement the server no longer has (after DISCARD ALL) succeeds; a
            // lost connection is the one error that matters here.
            match self.check(ptr) {
                Err(e) if e.is_closed() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Deallocates the statements whose last handle was dropped (or that the cache evicted)
    /// with `DEALLOCATE`: libpq before 17 has no call that sends the protocol's Close.
    #[cfg(not(libpq_17))]
    fn close_dropped_statements(&mut self) -> Result<()> {
        if self.transaction_status() == TransactionStatus::InError {
            // The server refuses everything but ROLLBACK now; deallocate after it.
            return Ok(());
        }
        for name in self.statements.take_closed() {
            let sql = format!("DEALLOCATE {}", name.to_string_lossy());
            let sql = CString::new(sql).map_err(|e| Error::nul_byte("a statement name", e))?;
            // SAFETY: the connection is alive; `sql` is NUL-terminated for the call.
            let ptr = unsafe { ffi::PQexec(self.conn.as_ptr(), sql.as_ptr()) };
            // A statement that is already gone (e.g. after DISCARD ALL) is not an error here.
            match self.check(ptr) {
                Err(e) if e.is_closed() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Turns what a libpq execution function returned into a result or an error, and
    /// re-raises a panic from the notice handler once libpq is no longer on the stack.
    pub(crate) fn check(&mut self, ptr: *mut ffi::PGresult) -> Result<PgResult> {
        let checked = self.check_inner(ptr);
        let encoding = self.check_encoding();
        self.notices.resume_panic();
        encoding?;
        checked
    }

    /// [`check`](Connection::check) for one of the several results of one request
    /// (`simple_query`), leaving the encoding check and a notice handler's panic to
    /// [`after_results`](Connection::after_results) once all have been read: so that a text
    /// may switch the encoding away and back, as with `batch_execute`, and a panic never
    /// leaves results unread.
    pub(crate) fn check_each(&mut self, ptr: *mut ffi::PGresult) -> Result<PgResult> {
        self.check_inner(ptr)
    }

    /// The end of a request whose results went through [`check_each`](Connection::check_each).
    pub(crate) fn after_results(&mut self) -> Result<()> {
        let encoding = self.check_encoding();
        self.notices.resume_panic();
        encoding
    }

    fn check_inner(&mut self, ptr: *mut ffi::PGresult) -> Result<PgResult> {
        let Some(result) = PgResult::from_returned(ptr) else {
            return Err(self.connection_error());
        };
        let status = result.status();
        match status {
            ffi::ExecStatusType::PGRES_COMMAND_OK
            | ffi::ExecStatusType::PGRES_TUPLES_OK
            | ffi::ExecStatusType::PGRES_SINGLE_TUPLE
            | ffi::ExecStatusType::PGRES_EMPTY_QUERY => Ok(result),
            #[cfg(libpq_17)]
            ffi::ExecStatusType::PGRES_TUPLES_CHUNK => Ok(result),
            ffi::ExecStatusType::PGRES_FATAL_ERROR | ffi::ExecStatusType::PGRES_NONFATAL_ERROR => {
                let error = self.classify_error(&result);
                if error.is_closed() {
                    self.lost = true;
                }
                Err(error)
            }
            status if crate::copy_discard::is_copy(status) => {
                drop(result);
                if self.pipeline_status() != ffi::PGpipelineStatus::PQ_PIPELINE_OFF {
                    // The server ignores Syncs during a COPY IN and libpq adds one when it
                    // ends: what follows could no longer be matched to what was sent.
                    return Err(self.poison("a statement started a COPY inside a pipeline"));
                }
                self.take_copy()?;
                crate::copy::ignore_abort(crate::copy::leave_copy(
                    self,
                    status,
                    crate::copy::UNEXPECTED,
                ))?;
                Err(Error::bad_input(
                    "the SQL text started a COPY, which was aborted (FROM STDIN) or read and \
                     discarded (TO STDOUT); use copy_in or copy_out for COPY",
                ))
            }
            other => Err(Error::client(format!(
                "unexpected result status {}",
                other.0
            ))),
        }
    }

    /// The error an error result stands for. A FATAL server error ends the session even
    /// before libpq has seen the socket close; an error libpq made itself (no SQLSTATE) may
    /// be a lost connection it has not noticed yet (e.g. after an immediate shutdown), so
    /// the socket is read once before deciding.
    pub(crate) fn classify_error(&self, result: &PgResultRef) -> Error {
        let db = DbError::from_result(result);
        let fatal = matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        );
        if fatal
            || (self.conn.status() == ffi::ConnStatusType::CONNECTION_BAD
                && !db.code().code().is_empty())
        {
            return Error::db(db).into_closed();
        }
        if db.code().code().is_empty() {
            // libpq's own error (no severity, no SQLSTATE), such as a lost connection.
            // SAFETY: the connection is alive; PQconsumeInput only reads what is there.
            unsafe { ffi::PQconsumeInput(self.conn.as_ptr()) };
            let message = db.message().to_owned();
            if self.conn.status() == ffi::ConnStatusType::CONNECTION_BAD
                || message.contains("server closed the connection unexpectedly")
            {
                return Error::closed(message);
            }
            return Error::client(message);
        }
        Error::db(db)
    }

    /// Counts a COPY the server started against what the statement's text allows; more
    /// than that is a server out of step with us, so the connection is closed.
    pub(crate) fn take_copy(&mut self) -> Result<()> {
        match self.copies_left.checked_sub(1) {
            Some(left) => {
                self.copies_left = left;
                Ok(())
            }
            None => {
                Err(self.poison("the server started more COPYs than the SQL text has statements"))
            }
        }
    }

    /// Ends this session because its protocol state can no longer be trusted: whatever comes
    /// next could be taken for another statement's answer. Later calls fail with
    /// [`Closed`](crate::error::ErrorKind::Closed) until [`reset`](Connection::reset); the
    /// socket is shut down, so the server ends the session (rolling back any transaction).
    pub(crate) fn poison(&mut self, why: &str) -> Error {
        self.lost = true;
        #[cfg(unix)]
        {
            // SAFETY: the connection is alive; PQsocket only reads its descriptor.
            let socket = unsafe { ffi::PQsocket(self.conn.as_ptr()) };
            if socket >= 0 {
                // SAFETY: libpq's open socket; shutdown leaves the descriptor open (libpq
                // closes it), so nothing else can be handed the same number meanwhile.
                unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
            }
        }
        Error::closed(format!(
            "{why}; pqlib closed the connection because its protocol state can no longer be \
             trusted (reset() or reconnect)"
        ))
    }

    /// Whether this session has ended (closed by the server, or poisoned by pqlib).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }

    /// Whether libpq is still in pipeline mode or inside a command, outside any call.
    fn inside_operation(&self) -> bool {
        self.pipeline_status() != ffi::PGpipelineStatus::PQ_PIPELINE_OFF
            || self.transaction_status() == TransactionStatus::Active
    }

    pub(crate) fn pipeline_status(&self) -> ffi::PGpipelineStatus {
        // SAFETY: the connection is alive.
        unsafe { ffi::PQpipelineStatus(self.conn.as_ptr()) }
    }

    /// The error for a NULL result: a lost connection, or a client-side failure.
    pub(crate) fn connection_error(&self) -> Error {
        let message = self.conn.error_message();
        if self.conn.status() == ffi::ConnStatusType::CONNECTION_BAD {
            Error::closed(message)
        } else {
            Error::client(message)
        }
    }

    fn is_idle(&self) -> bool {
        self.transaction_status() == TransactionStatus::Idle
    }

    /// The server's version, e.g. 150004 for 15.4 (`server_version` in libpq's numbering).
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// assert!(conn.server_version() >= 140000);
    /// ```
    #[doc(alias = "PQserverVersion")]
    pub fn server_version(&self) -> u32 {
        // SAFETY: the connection is alive.
        let v = unsafe { ffi::PQserverVersion(self.conn.as_ptr()) };
        u32::try_from(v).unwrap_or(0)
    }

    /// The process ID of the server process serving this connection.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// println!("backend pid {}", conn.backend_pid());
    /// ```
    #[doc(alias = "PQbackendPID")]
    pub fn backend_pid(&self) -> u32 {
        // SAFETY: the connection is alive.
        let pid = unsafe { ffi::PQbackendPID(self.conn.as_ptr()) };
        u32::try_from(pid).unwrap_or(0)
    }

    /// A parameter the server reported (`server_version`, `TimeZone`, `DateStyle`,
    /// `application_name`, …); `None` if it did not report it.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// println!("{:?}", conn.parameter_status("TimeZone"));
    /// ```
    #[doc(alias = "PQparameterStatus")]
    pub fn parameter_status(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: the connection is alive; the returned string is owned by libpq and copied
        // before the next libpq call.
        unsafe { lossy_string(ffi::PQparameterStatus(self.conn.as_ptr(), name.as_ptr())) }
    }

    /// Where the connection stands with respect to transactions.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// use pqlib::TransactionStatus;
    /// assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    /// ```
    #[doc(alias = "PQtransactionStatus")]
    pub fn transaction_status(&self) -> TransactionStatus {
        // SAFETY: the connection is alive.
        let status = unsafe { ffi::PQtransactionStatus(self.conn.as_ptr()) };
        match status {
            ffi::PGTransactionStatusType::PQTRANS_IDLE => TransactionStatus::Idle,
            ffi::PGTransactionStatusType::PQTRANS_ACTIVE => TransactionStatus::Active,
            ffi::PGTransactionStatusType::PQTRANS_INTRANS => TransactionStatus::InTransaction,
            ffi::PGTransactionStatusType::PQTRANS_INERROR => TransactionStatus::InError,
            _ => TransactionStatus::Unknown,
        }
    }

    /// Whether the connection is unusable (lost, or closed by the server).
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// assert!(!conn.is_closed());
    /// ```
    #[doc(alias = "PQstatus")]
    pub fn is_closed(&self) -> bool {
        self.lost || self.conn.status() != ffi::ConnStatusType::CONNECTION_OK
    }

    /// Closes the connection and opens it again with the same parameters. Prepared
    /// statements and session state are gone afterwards.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// if conn.is_closed() {
    ///     conn.reset()?;
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQreset")]
    pub fn reset(&mut self) -> Result<()> {
        crate::tls::install_passphrase_trampoline();
        // SAFETY: the connection is alive; PQreset keeps the same PGconn and notice hooks.
        unsafe { ffi::PQreset(self.conn.as_ptr()) };
        self.notices.resume_panic();
        self.lost = false;
        self.statements.invalidate_all();
        self.types = TypeCache::default();
        if self.conn.status() != ffi::ConnStatusType::CONNECTION_OK {
            return Err(crate::connect::failed(
                &self.conn,
                self.conn.error_message(),
            ));
        }
        self.require_utf8()
    }

    /// Ends the session (libpq's `PQfinish`: a Terminate message, then the socket is closed)
    /// and reports whether it ended cleanly. Dropping the connection does the same without
    /// the report.
    ///
    /// The connection is closed in every case; the result says whether anything was lost or
    /// wrong at that moment:
    /// - [`Closed`](crate::error::ErrorKind::Closed) if the session had already ended: lost,
    ///   closed by pqlib after a protocol error, or ended by the server (a terminated
    ///   backend, a server shutdown), which is seen here even if no statement noticed it;
    /// - [`Client`](crate::error::ErrorKind::Client) if an operation was still in progress
    ///   (a pipeline, COPY or row stream whose guard was leaked with `mem::forget`), if a
    ///   transaction opened with SQL (`BEGIN` through `batch_execute`) was still open (the
    ///   server rolls it back), or if libpq still held unsent output.
    ///
    /// ```no_run
    /// let mut conn = pqlib::Connection::connect("")?;
    /// conn.execute("INSERT INTO log VALUES ('done')", &[])?;
    /// conn.close()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQfinish")]
    pub fn close(mut self) -> Result<()> {
        let outcome = self.close_check();
        // PQfinish (PgConn's drop) sends Terminate and closes the socket.
        drop(self);
        outcome
    }

    /// Whether the session is in a state to end cleanly (see [`close`](Connection::close)).
    fn close_check(&mut self) -> Result<()> {
        if self.lost || self.conn.status() != ffi::ConnStatusType::CONNECTION_OK {
            return Err(Error::closed(format!(
                "the session had already ended before close: {}",
                self.conn.error_message().trim_end()
            )));
        }
        if self.inside_operation() {
            return Err(Error::client(
                "an operation (a pipeline, COPY or row stream whose guard was leaked) was still                  in progress and was abandoned by close",
            ));
        }
        // Whatever the server sent since the last statement: a session it ended shows as a
        // FATAL error and then the end of the socket, which libpq sees only when it reads.
        // Each call reads what is there without waiting; the first may stop after the data,
        // the next then sees the end.
        for _ in 0..4 {
            // SAFETY: the connection is alive; PQconsumeInput only reads what is there.
            if unsafe { ffi::PQconsumeInput(self.conn.as_ptr()) } == 0 {
                break;
            }
        }
        self.notices.resume_panic();
        if self.conn.status() != ffi::ConnStatusType::CONNECTION_OK {
            return Err(Error::closed(format!(
                "the server had already ended the session: {}",
                self.conn.error_message().trim_end()
            )));
        }
        if matches!(
            self.transaction_status(),
            TransactionStatus::InTransaction | TransactionStatus::InError
        ) {
            return Err(Error::client(
                "a transaction opened with SQL was still open; closing rolled it back",
            ));
        }
        // SAFETY: the connection is alive; in blocking mode PQflush sends what is queued.
        if unsafe { ffi::PQflush(self.conn.as_ptr()) } != 0 {
            return Err(self.connection_error());
        }
        Ok(())
    }

    /// The client encoding (always `UTF8` for pqlib connections, which set it on connect).
    #[doc(alias = "PQclientEncoding")]
    pub fn client_encoding(&self) -> String {
        // SAFETY: the connection is alive; PQclientEncoding returns an encoding ID and
        // pg_encoding_to_char a static name for it.
        unsafe {
            let id = ffi::PQclientEncoding(self.conn.as_ptr());
            lossy_string(ffi::pg_encoding_to_char(id)).unwrap_or_default()
        }
    }

    /// Whether the connection is encrypted with TLS.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("sslmode=require").unwrap();
    /// assert!(conn.ssl_in_use());
    /// ```
    #[doc(alias = "PQsslInUse")]
    pub fn ssl_in_use(&self) -> bool {
        // SAFETY: the connection is alive.
        unsafe { ffi::PQsslInUse(self.conn.as_ptr()) != 0 }
    }

    /// Quotes a string as an SQL literal (`'it''s'`), escaping as the connection's encoding
    /// and settings require.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// assert_eq!(conn.escape_literal("it's")?, "'it''s'");
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQescapeLiteral")]
    pub fn escape_literal(&self, text: &str) -> Result<String> {
        self.escape(text, ffi::PQescapeLiteral)
    }

    /// Quotes a string as an SQL identifier (`"My Table"`).
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// assert_eq!(conn.escape_identifier("My Table")?, "\"My Table\"");
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQescapeIdentifier")]
    pub fn escape_identifier(&self, text: &str) -> Result<String> {
        self.escape(text, ffi::PQescapeIdentifier)
    }

    fn escape(
        &self,
        text: &str,
        function: unsafe extern "C" fn(*mut ffi::PGconn, *const c_char, usize) -> *mut c_char,
    ) -> Result<String> {
        if text.as_bytes().contains(&0) {
            return Err(Error::bad_input("the text to escape contains a NUL byte"));
        }
        // libpq escapes in the client encoding; some (BIG5, GBK) let a multibyte lead byte
        // swallow a quote (cf. CVE-2025-1094). Text here is always UTF-8, so escape only then.
        let encoding = self.client_encoding();
        if encoding != "UTF8" {
            return Err(Error::bad_input(format!(
                "escaping needs client_encoding UTF8 (pqlib's setting), but the session was \
                 switched to {encoding}"
            )));
        }
        // SAFETY: the connection is alive; `text` is read for exactly `len` bytes (libpq
        // stops early only at a NUL, which we excluded).
        let ptr = unsafe { function(self.conn.as_ptr(), text.as_ptr().cast(), text.len()) };
        if ptr.is_null() {
            return Err(Error::bad_input(self.conn.error_message()));
        }
        // SAFETY: a NUL-terminated string libpq allocated for us; measured here, then freed
        // exactly once by PqBuffer.
        let buffer = unsafe {
            let len = CStr::from_ptr(ptr).to_bytes().len();
            PqBuffer::from_raw(ptr, len)
        };
        let buffer = buffer.ok_or_else(|| Error::client("escaping returned NULL"))?;
        Ok(String::from_utf8_lossy(buffer.as_bytes()).into_owned())
    }

    /// The underlying `PGconn`, for calling `pqlib-sys` directly.
    ///
    /// The pointer stays valid while `self` lives. Do not `PQfinish` it, change its notice
    /// receiver, or leave it in a state (pipeline mode, COPY, unread results) that the safe
    /// methods do not expect.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// // SAFETY: the pointer is alive while `conn` is; PQprotocolVersion only reads.
    /// let protocol = unsafe { pqlib_sys::PQprotocolVersion(conn.as_ptr()) };
    /// ```
    pub fn as_ptr(&self) -> *mut ffi::PGconn {
        self.conn.as_ptr()
    }
}

impl fmt::Debug for Connection {
    /// Shows where the connection goes, never its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut c_char| {
            // SAFETY: the connection is alive; the strings are owned by libpq and copied.
            unsafe { lossy_string(getter(self.conn.as_ptr())) }
        };
        f.debug_struct("Connection")
            .field("host", &text(ffi::PQhost))
            .field("port", &text(ffi::PQport))
            .field("user", &text(ffi::PQuser))
            .field("dbname", &text(ffi::PQdb))
            .field("backend_pid", &self.backend_pid())
            .field("transaction_status", &self.transaction_status())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Where a connection stands with respect to transactions ([`Connection::transaction_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[doc(alias = "PGTransactionStatusType")]
pub enum TransactionStatus {
    /// Not in a transaction block.
    Idle,
    /// A command is in progress.
    Active,
    /// In a transaction block that is still good.
    InTransaction,
    /// In a failed transaction block: statements fail until it is rolled back.
    InError,
    /// The connection is bad.
    Unknown,
}

/// How a statement runs: see [`Connection::plan`].
pub(crate) enum Planned {
    Prepared(Statement),
    Unnamed { sql: CString, described: Described },
}

/// The error for a run of SQL text with another number of parameters than it has.
pub(crate) fn check_param_count(types: &[Type], given: usize) -> Result<()> {
    if given != types.len() {
        return Err(Error::bad_input(format!(
            "the statement has {} parameters but {given} were given",
            types.len()
        )));
    }
    Ok(())
}

/// A cached statement that cannot run as prepared: "cached plan must not change result type"
/// (DDL changed the tables it reads), or the server no longer has it (`DEALLOCATE ALL`,
/// `DISCARD ALL`).
/// libpq's blocking connect, step by step (see `connect.rs`).
#[cfg(any(unix, libpq_17))]
fn connect_blocking(config: &crate::Config, notices: &Arc<NoticeState>) -> Result<PgConn> {
    use crate::connect::{Connector, Step, wait_blocking};
    let mut connector = Connector::start(config, notices.clone())?;
    let mut expired = false;
    loop {
        match connector.poll(expired)? {
            Step::Ready => return Ok(connector.into_conn()),
            Step::Wait {
                fd,
                interest,
                deadline,
            } => expired = !wait_blocking(fd, interest, deadline)?,
        }
    }
}

/// Without `poll(2)` or libpq 17's `PQsocketPoll` to wait with, libpq's own blocking connect;
/// notices sent during startup then reach libpq's default processor.
#[cfg(not(any(unix, libpq_17)))]
fn connect_blocking(config: &crate::Config, notices: &Arc<NoticeState>) -> Result<PgConn> {
    let (keywords, values) = config.to_c_params()?;
    let mut keyword_ptrs: Vec<*const c_char> = keywords.iter().map(|k| k.as_ptr()).collect();
    let mut value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    keyword_ptrs.push(c"client_encoding".as_ptr());
    value_ptrs.push(c"UTF8".as_ptr());
    keyword_ptrs.push(std::ptr::null());
    value_ptrs.push(std::ptr::null());
    crate::tls::install_passphrase_trampoline();
    // SAFETY: two NULL-terminated arrays of NUL-terminated strings, all alive during the
    // call; libpq copies them. expand_dbname = 0: a dbname is a name, not a conninfo.
    let ptr = unsafe { ffi::PQconnectdbParams(keyword_ptrs.as_ptr(), value_ptrs.as_ptr(), 0) };
    if ptr.is_null() {
        return Err(Error::client("libpq could not allocate a connection"));
    }
    // SAFETY: a non-NULL PGconn, owned from here on (PQfinish on drop).
    let conn = unsafe { PgConn::from_ptr(ptr) };
    NoticeState::attach(notices, &conn);
    if conn.status() != ffi::ConnStatusType::CONNECTION_OK {
        return Err(crate::connect::failed(&conn, conn.error_message()));
    }
    Ok(conn)
}

pub(crate) fn is_stale_plan(error: &Error) -> bool {
    use crate::error::SqlState;
    error.as_db_error().is_some_and(|db| {
        (db.code() == &SqlState::FEATURE_NOT_SUPPORTED
            && db.routine() == Some("RevalidateCachedQuery"))
            || db.code() == &SqlState::INVALID_SQL_STATEMENT_NAME
    })
}
