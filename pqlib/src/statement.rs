//! Prepared statements, and the per-connection cache that makes repeating the same SQL text
//! cost one round trip.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Connection;
use crate::error::{Error, Result};
use crate::prepare::{Plan, PreparePolicy, UnnamedTexts};
use crate::row::Column;
use crate::types::Type;

/// How many statements a connection keeps prepared for SQL text passed to `query`/`execute`.
pub const STATEMENT_CACHE_CAPACITY: usize = 256;

/// Distinguishes connections, so a statement cannot be run on one it was not prepared on.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A statement prepared on the server. Cloning is cheap (the description is shared); the
/// server-side statement is deallocated once the last clone is dropped (at the connection's
/// next query). With libpq 17 or newer that is the protocol's Close message
/// (`PQclosePrepared`), which the server accepts even inside a failed transaction; before 17
/// it is a `DEALLOCATE` statement, which waits until a failed transaction has ended.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let stmt = conn.prepare("SELECT $1::int4 + $2::int4 AS sum")?;
/// assert_eq!(stmt.params().len(), 2);
/// assert_eq!(stmt.columns()[0].name(), "sum");
/// let sum: i32 = conn.query_one(&stmt, &[&1i32, &2i32])?.get("sum");
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone)]
pub struct Statement(Arc<Inner>);

struct Inner {
    name: CString,
    sql: String,
    params: Vec<Type>,
    columns: Arc<[Column]>,
    connection_id: u64,
    cached: bool,
    /// A `COPY` statement: it can only run through `copy_in`/`copy_out`.
    copy: bool,
    /// Where the name goes when the last handle is dropped.
    closed: Arc<Mutex<Vec<CString>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        if let Ok(mut closed) = self.closed.lock() {
            closed.push(name);
        }
    }
}

impl Statement {
    /// The parameter types.
    #[doc(alias = "PQparamtype")]
    pub fn params(&self) -> &[Type] {
        &self.0.params
    }

    /// The result columns (empty for statements that return no rows).
    pub fn columns(&self) -> &[Column] {
        &self.0.columns
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.0.sql
    }

    pub(crate) fn c_name(&self) -> &CString {
        &self.0.name
    }

    pub(crate) fn columns_arc(&self) -> Arc<[Column]> {
        self.0.columns.clone()
    }

    pub(crate) fn is_cached(&self) -> bool {
        self.0.cached
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statement")
            .field("name", &self.0.name)
            .field("sql", &self.0.sql)
            .field("params", &self.0.params)
            .field("columns", &self.0.columns)
            .finish()
    }
}

/// The per-connection state of prepared statements.
pub(crate) struct StatementCache {
    connection_id: u64,
    /// Random, in every statement name (see [`next_name`](StatementCache::next_name)).
    session: u64,
    next_id: u64,
    /// Each cached statement with the `clock` reading of its last use: a lookup (every query)
    /// is one hash probe; finding the least recently used entry to evict scans, but only when
    /// a statement that was just prepared (a round trip) overflows the cache.
    by_sql: HashMap<String, (Statement, u64)>,
    clock: u64,
    closed: Arc<Mutex<Vec<CString>>>,
    /// Cursors of dropped portals, closed before the next statement (`portal::close_dropped`).
    closed_portals: crate::portal::ClosedPortals,
    /// Which SQL text becomes a named statement (the config's).
    pub(crate) policy: PreparePolicy,
    /// SQL text that runs as the unnamed statement.
    pub(crate) unnamed: UnnamedTexts,
}

impl Default for StatementCache {
    fn default() -> StatementCache {
        let connection_id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        StatementCache {
            connection_id,
            session: random_session(connection_id),
            next_id: 0,
            by_sql: HashMap::new(),
            clock: 0,
            closed: Arc::default(),
            closed_portals: Arc::default(),
            policy: PreparePolicy::default(),
            unnamed: UnnamedTexts::default(),
        }
    }
}

/// 64 random bits for statement names: std's per-instance hasher keys (randomly seeded),
/// mixed with the process id and this process's connection number, so two sessions (in one
/// process or in two) do not share a name prefix.
fn random_session(connection_id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(connection_id);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl StatementCache {
    /// A cache for a connection whose SQL text is prepared as `policy` says (the async
    /// client's; the blocking one sets the policy on its default cache).
    #[cfg(all(feature = "tokio", unix))]
    pub(crate) fn with_policy(policy: PreparePolicy) -> StatementCache {
        StatementCache {
            policy,
            ..StatementCache::default()
        }
    }

    /// How this run of `sql` goes: its cached statement, or as the policy says.
    pub(crate) fn plan(&mut self, sql: &str) -> Plan {
        self.plan_with(sql, true)
    }

    /// [`plan`](StatementCache::plan) for a statement queued in a pipeline, where a text
    /// that [`PreparePolicy::AfterRuns`] would prepare now runs unnamed once more.
    pub(crate) fn plan_in_pipeline(&mut self, sql: &str) -> Plan {
        self.plan_with(sql, false)
    }

    fn plan_with(&mut self, sql: &str, promote: bool) -> Plan {
        if let Some(statement) = self.lookup(sql) {
            return Plan::Cached(statement);
        }
        self.unnamed.plan(self.policy, sql, promote)
    }

    /// A statement name no other session is likely to use: `pqlib_<session>_<n>`, where
    /// `<session>` is random per cache. Behind a transaction pooler a name can reach a
    /// server connection where another client prepared statements; with names that only
    /// counted (`pqlib_3`) it could run that client's statement there and answer with its
    /// rows. A unique name makes that a clear "does not exist" error instead.
    pub(crate) fn next_name(&mut self) -> CString {
        self.next_id += 1;
        CString::new(format!("pqlib_{:x}_{}", self.session, self.next_id))
            .expect("no NUL in a formatted name")
    }

    pub(crate) fn make(
        &mut self,
        name: CString,
        sql: &str,
        params: Vec<Type>,
        columns: Arc<[Column]>,
        cached: bool,
    ) -> Statement {
        Statement(Arc::new(Inner {
            name,
            sql: sql.to_owned(),
            params,
            columns,
            connection_id: self.connection_id,
            cached,
            copy: starts_copy(sql),
            closed: self.closed.clone(),
        }))
    }

    /// Which connection (and session: a reset changes it) this cache belongs to.
    pub(crate) fn connection_id(&self) -> u64 {
        self.connection_id
    }

    pub(crate) fn closed_portals(&self) -> &crate::portal::ClosedPortals {
        &self.closed_portals
    }

    pub(crate) fn owns(&self, statement: &Statement) -> bool {
        statement.0.connection_id == self.connection_id
    }

    /// Whether `statement` can run here with `params` parameters: it must belong to this
    /// connection, take exactly that many, and not be a `COPY`.
    pub(crate) fn check_use(&self, statement: &Statement, params: usize) -> Result<()> {
        if !self.owns(statement) {
            return Err(Error::bad_input(
                "the statement was prepared on another connection",
            ));
        }
        if statement.0.copy {
            return Err(copy_refused());
        }
        if params != statement.params().len() {
            return Err(Error::bad_input(format!(
                "the statement has {} parameters but {params} were given",
                statement.params().len()
            )));
        }
        Ok(())
    }

    /// A name whose statement must be deallocated before the next query.
    pub(crate) fn close_later(&mut self, name: CString) {
        if let Ok(mut closed) = self.closed.lock() {
            closed.push(name);
        }
    }

    /// Where names of statements to close go (for one to come back if closing it failed).
    #[cfg(all(feature = "tokio", not(libpq_17)))]
    pub(crate) fn closed_list(&self) -> Arc<Mutex<Vec<CString>>> {
        self.closed.clone()
    }

    pub(crate) fn take_closed(&mut self) -> Vec<CString> {
        match self.closed.lock() {
            Ok(mut closed) => std::mem::take(&mut *closed),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) fn lookup(&mut self, sql: &str) -> Option<Statement> {
        self.clock += 1;
        let (statement, last_used) = self.by_sql.get_mut(sql)?;
        *last_used = self.clock;
        Some(statement.clone())
    }

    pub(crate) fn insert(&mut self, statement: Statement) {
        self.unnamed.prepared(statement.sql());
        self.clock += 1;
        self.by_sql
            .insert(statement.sql().to_owned(), (statement, self.clock));
        while self.by_sql.len() > STATEMENT_CACHE_CAPACITY {
            let oldest = self
                .by_sql
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(sql, _)| sql.clone());
            if let Some(oldest) = oldest {
                self.by_sql.remove(&oldest);
            }
        }
    }

    /// Drops a cached statement (e.g. one whose plan went stale).
    pub(crate) fn forget(&mut self, statement: &Statement) {
        let sql = statement.sql();
        if self
            .by_sql
            .get(sql)
            .is_some_and(|(s, _)| Arc::ptr_eq(&s.0, &statement.0))
        {
            self.by_sql.remove(sql);
        }
    }

    /// Prepares `statement`'s SQL again and caches the new one.
    pub(crate) fn reprepare(conn: &mut Connection, statement: &Statement) -> Result<Statement> {
        conn.statements.forget(statement);
        let fresh = conn.prepare_typed_inner(statement.sql(), &[], true)?;
        conn.statements.insert(fresh.clone());
        Ok(fresh)
    }

    /// After a reset the server has forgotten every statement.
    pub(crate) fn invalidate_all(&mut self) {
        self.by_sql.clear();
        // Statements still held elsewhere would fail with "does not exist"; make them fail
        // with "another connection" instead, and don't deallocate what is gone anyway.
        self.connection_id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        self.take_closed();
        self.closed = Arc::default();
    }

    /// The cached statement for `sql`, prepared now if needed.
    fn get_or_prepare(conn: &mut Connection, sql: &str) -> Result<Statement> {
        if let Some(statement) = conn.statements.lookup(sql) {
            return Ok(statement);
        }
        StatementCache::prepare_and_cache(conn, sql)
    }

    /// Prepares `sql` as a named statement and caches it.
    pub(crate) fn prepare_and_cache(conn: &mut Connection, sql: &str) -> Result<Statement> {
        let statement = conn.prepare_typed_inner(sql, &[], true)?;
        conn.statements.insert(statement.clone());
        Ok(statement)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What a [`ToStatement`] names: SQL text or a prepared statement.
#[doc(hidden)]
pub enum StatementRef<'a> {
    Sql(&'a str),
    Prepared(&'a Statement),
}

/// What the query methods accept as a statement: SQL text (prepared once per connection and
/// cached) or a [`Statement`].
pub trait ToStatement: sealed::Sealed {
    #[doc(hidden)]
    fn __statement_ref(&self) -> StatementRef<'_>;

    #[doc(hidden)]
    fn to_statement(&self, conn: &mut Connection) -> Result<Statement> {
        match self.__statement_ref() {
            StatementRef::Sql(sql) => StatementCache::get_or_prepare(conn, sql),
            StatementRef::Prepared(statement) => Ok(statement.clone()),
        }
    }
}

impl sealed::Sealed for str {}
impl ToStatement for str {
    fn __statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Sql(self)
    }
}

impl sealed::Sealed for String {}
impl ToStatement for String {
    fn __statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Sql(self)
    }
}

impl sealed::Sealed for Statement {}
impl ToStatement for Statement {
    fn __statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Prepared(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(cache: &mut StatementCache, sql: &str) -> Statement {
        let name = cache.next_name();
        cache.make(name, sql, Vec::new(), Arc::from([]), true)
    }

    #[test]
    fn statement_names_differ_between_sessions() {
        let (mut a, mut b) = (StatementCache::default(), StatementCache::default());
        let (first_a, first_b) = (a.next_name(), b.next_name());
        assert_ne!(first_a, first_b);
        assert_ne!(a.next_name(), first_a);
        let name = first_a.to_str().unwrap();
        assert!(name.starts_with("pqlib_") && name.ends_with("_1"), "{name}");
        assert!(name.len() < 64, "longer than NAMEDATALEN: {name}");
    }

    #[test]
    fn the_least_recently_used_statement_is_evicted() {
        let mut cache = StatementCache::default();
        for i in 0..STATEMENT_CACHE_CAPACITY {
            let statement = cached(&mut cache, &format!("SELECT {i}"));
            cache.insert(statement);
        }
        // The oldest insert was used last, so the second oldest goes first.
        assert!(cache.lookup("SELECT 0").is_some());
        let statement = cached(&mut cache, "SELECT 'new'");
        cache.insert(statement);
        assert_eq!(cache.by_sql.len(), STATEMENT_CACHE_CAPACITY);
        assert!(cache.lookup("SELECT 0").is_some());
        assert!(cache.lookup("SELECT 1").is_none());
        assert!(cache.lookup("SELECT 'new'").is_some());
        // Evicted statements are deallocated once their last handle goes.
        assert_eq!(cache.take_closed().len(), 1);
    }
}

/// Refuses SQL text that is a `COPY` statement, before anything is sent (see [`starts_copy`]).
pub(crate) fn refuse_copy(sql: &str) -> Result<()> {
    if starts_copy(sql) {
        return Err(copy_refused());
    }
    Ok(())
}

fn copy_refused() -> Error {
    Error::bad_input(
        "the statement is a COPY; run COPY FROM STDIN with copy_in and COPY TO STDOUT with \
         copy_out (nothing was sent)",
    )
}

/// Whether one statement's SQL text is a `COPY`, the only statement that can switch the
/// protocol into COPY mode (functions cannot: PL/pgSQL, SQL functions and SPI all refuse COPY
/// to or from the client). Leading whitespace and comments are skipped.
///
/// Why it matters: a COPY started through the extended protocol in pipeline mode cannot be
/// left in step (the server ignores the Sync that follows it while in COPY IN, and libpq adds
/// one of its own when the COPY ends), so every path that sends one statement with
/// Bind/Execute refuses COPY text before sending. A COPY that starts anyway (a server that
/// breaks the protocol) closes the connection.
pub(crate) fn starts_copy(sql: &str) -> bool {
    let keyword = skip_blanks_and_comments(sql.as_bytes());
    keyword.len() >= 4
        && keyword[..4].eq_ignore_ascii_case(b"copy")
        && keyword
            .get(4)
            .is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80))
}

/// The text after leading whitespace, `--` line comments and (nested) `/* */` comments, as
/// the server's scanner sees them (`space [ \t\n\r\f\v]`; a line comment ends at `\n` or
/// `\r`).
fn skip_blanks_and_comments(mut text: &[u8]) -> &[u8] {
    loop {
        match text {
            [b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c, rest @ ..] => text = rest,
            [b'-', b'-', rest @ ..] => {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(rest.len(), |i| i + 1);
                text = &rest[end..];
            }
            [b'/', b'*', rest @ ..] => {
                let mut depth = 1usize;
                let mut i = 0;
                while depth > 0 && i < rest.len() {
                    match &rest[i..] {
                        [b'/', b'*', ..] => {
                            depth += 1;
                            i += 2;
                        }
                        [b'*', b'/', ..] => {
                            depth -= 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                text = &rest[i.min(rest.len())..];
            }
            _ => return text,
        }
    }
}

#[cfg(test)]
mod copy_detection_tests {
    use super::starts_copy;

    #[test]
    fn copy_statements_are_recognised_through_blanks_and_comments() {
        for sql in [
            "COPY t FROM STDIN",
            "copy (select 1) to stdout",
            "  \n\tCoPy t TO STDOUT",
            "-- a comment\nCOPY t FROM STDIN",
            "-- a comment ending in a carriage return\rCOPY t FROM STDIN",
            "\x0b\x0cCOPY t TO STDOUT",
            "/* outer /* nested */ still comment */ COPY t TO STDOUT",
            "/**/copy t from stdin",
            "COPY(SELECT 1) TO STDOUT",
            "COPY",
        ] {
            assert!(starts_copy(sql), "{sql:?} is a COPY");
        }
    }

    #[test]
    fn other_statements_are_not_copy() {
        for sql in [
            "",
            "SELECT 'COPY t FROM STDIN'",
            "copyright",
            "COPY_t",
            "copy$1",
            "-- COPY t FROM STDIN\nSELECT 1",
            "/* COPY */ SELECT 1",
            "/* unterminated COPY",
            "SELECT 1; COPY t FROM STDIN",
            "CREATE TABLE copy (x int)",
            "copyé",
        ] {
            assert!(!starts_copy(sql), "{sql:?} is not a COPY");
        }
    }
}
