//! Portals: a query's rows fetched a few at a time inside a transaction
//! ([`Transaction::bind`], [`Transaction::query_portal`]).
//!
//! libpq can run a named portal only to its end (`PQexecPrepared` binds the unnamed portal
//! and executes it without a row limit), so a portal here is what libpq users make of one: a
//! cursor. `bind` sends `DECLARE "pqlib_portal_N" NO SCROLL CURSOR FOR <the statement's SQL>`
//! with the parameters through the extended protocol (typed as the statement's parameters,
//! so `$1` works in it), `query_portal` sends `FETCH FORWARD n FROM "pqlib_portal_N"` with
//! binary results, and dropping the portal closes the cursor (`CLOSE`). A cursor lives until
//! the end of the transaction that declared it, so a portal belongs to the transaction (or
//! savepoint) that bound it and can be used only while that is open.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use foreign_types::ForeignType;

use crate::connection::Planned;
use crate::error::{Error, Result};
use crate::row::Rows;
use crate::statement::{StatementRef, ToStatement};
use crate::transaction::Transaction;
use crate::types::{ToSql, Type};
use crate::{Connection, TransactionStatus};

/// Numbers cursor names, unique in the process (so in every session).
static NEXT_PORTAL: AtomicU64 = AtomicU64::new(1);

/// A transaction (or savepoint) as the portals bound in it see it: open until it commits,
/// rolls back or is dropped. The lock also orders an async portal's `CLOSE` against the
/// transaction's end: a portal sends it while holding the lock and only if the scope is still
/// open, so the `CLOSE` is queued before the `COMMIT`/`ROLLBACK` or not at all.
pub(crate) struct Scope {
    open: Mutex<bool>,
    /// The connection (`StatementCache` id) the transaction runs on.
    connection_id: u64,
}

impl Scope {
    pub(crate) fn new(connection_id: u64) -> Arc<Scope> {
        Arc::new(Scope {
            open: Mutex::new(true),
            connection_id,
        })
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transaction has ended (or is about to send its end): its portals are dead.
    pub(crate) fn close(&self) {
        *self.lock() = false;
    }

    pub(crate) fn is_open(&self) -> bool {
        *self.lock()
    }

    /// Runs `f` while the scope is held open, if it is.
    #[cfg(all(feature = "tokio", unix))]
    pub(crate) fn while_open(&self, f: impl FnOnce()) {
        let open = self.lock();
        if *open {
            f();
        }
    }

    /// Whether a portal of this scope may be used on `connection_id` now.
    pub(crate) fn check(&self, connection_id: u64) -> Result<()> {
        if self.connection_id != connection_id {
            return Err(Error::bad_input(
                "the portal was bound on another connection",
            ));
        }
        if !self.is_open() {
            return Err(Error::bad_input(
                "the portal's transaction (or savepoint) has ended; a portal can only be used \
                 inside the transaction that bound it",
            ));
        }
        Ok(())
    }
}

/// A fresh cursor name, quoted: `"pqlib_portal_N"`.
pub(crate) fn next_name() -> String {
    format!(
        "\"pqlib_portal_{}\"",
        NEXT_PORTAL.fetch_add(1, Ordering::Relaxed)
    )
}

/// `DECLARE name NO SCROLL CURSOR FOR sql`. The statement was prepared (or is a `Statement`),
/// so its text is one statement; the extended protocol refuses more than one anyway.
pub(crate) fn declare_sql(name: &str, sql: &str) -> String {
    format!("DECLARE {name} NO SCROLL CURSOR FOR {sql}")
}

/// `FETCH FORWARD max_rows FROM name`; `max_rows <= 0` fetches all remaining rows.
pub(crate) fn fetch_sql(name: &str, max_rows: i32) -> String {
    if max_rows <= 0 {
        format!("FETCH FORWARD ALL FROM {name}")
    } else {
        format!("FETCH FORWARD {max_rows} FROM {name}")
    }
}

/// The parameters with the statement's types, for `DECLARE … $1` (the count was checked).
pub(crate) fn typed<'p>(
    params: &[&'p (dyn ToSql + Sync)],
    types: &[Type],
) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

/// Refuses SQL text that is a `COPY` before anything (even its `Parse`) is sent; a prepared
/// COPY statement is refused by `check_use`.
pub(crate) fn refuse_copy_text<T: ?Sized + ToStatement>(statement: &T) -> Result<()> {
    match statement.__statement_ref() {
        StatementRef::Sql(sql) => crate::statement::refuse_copy(sql),
        StatementRef::Prepared(_) => Ok(()),
    }
}

/// A cursor the connection closes before its next statement (its `Portal` was dropped).
pub(crate) type ClosedPortals = Arc<Mutex<Vec<(Arc<Scope>, String)>>>;

/// Closes the cursors of dropped portals whose transaction is still open; the others died
/// with their transaction and are forgotten. Called before each statement. In a failed
/// transaction (where the server refuses everything but `ROLLBACK`) they wait: a rollback to
/// a savepoint makes the transaction usable again, with the cursors declared before it.
pub(crate) fn close_dropped(conn: &mut Connection) -> Result<()> {
    let status = conn.transaction_status();
    if status == TransactionStatus::InError {
        return Ok(());
    }
    let closed = std::mem::take(
        &mut *conn
            .statements
            .closed_portals()
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for (scope, name) in closed {
        if !scope.is_open() || status != TransactionStatus::InTransaction {
            continue;
        }
        let sql = std::ffi::CString::new(format!("CLOSE {name}"))
            .map_err(|e| Error::nul_byte("a cursor name", e))?;
        // SAFETY: the connection is alive and idle; `sql` is NUL-terminated for the call.
        let ptr = unsafe { pqlib_sys::PQexec(conn.conn.as_ptr(), sql.as_ptr()) };
        conn.check(ptr)?;
    }
    Ok(())
}

/// A query bound to its parameters inside a transaction, whose rows are fetched a few at a
/// time with [`Transaction::query_portal`]: a server-side cursor. Cloning is cheap; the
/// cursor is closed once the last clone is dropped (before the transaction's next statement)
/// or when the transaction ends, whichever comes first.
///
/// A portal belongs to the transaction or savepoint that bound it (and the savepoints inside
/// that). Its lifetime `'t` is that transaction's borrow of the connection, so the compiler
/// keeps it from outliving the transaction's use of the connection: while a portal lives, the
/// connection cannot start another transaction to use it in. What the borrow checker cannot
/// see (a portal of a released savepoint used in its parent, or a portal passed to another
/// connection's transaction) is checked when it is used: an error of kind
/// [`BadInput`](crate::error::ErrorKind::BadInput), and nothing is sent.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let mut tx = conn.transaction()?;
/// let portal = tx.bind("SELECT generate_series(1, $1)", &[&10i32])?;
/// loop {
///     let rows = tx.query_portal(&portal, 3)?;
///     if rows.is_empty() {
///         break;
///     }
///     for row in &rows {
///         println!("{}", row.get::<_, i32>(0));
///     }
/// }
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone)]
#[doc(alias = "DECLARE")]
pub struct Portal<'t>(Arc<Inner>, PhantomData<&'t ()>);

struct Inner {
    /// The cursor's name, quoted.
    name: String,
    scope: Arc<Scope>,
    closed: ClosedPortals,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.scope.is_open() {
            let name = std::mem::take(&mut self.name);
            self.closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.scope.clone(), name));
        }
    }
}

impl std::fmt::Debug for Portal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("name", &self.0.name)
            .field("open", &self.0.scope.is_open())
            .finish()
    }
}

impl<'t> Transaction<'t> {
    /// Binds a statement to its parameters as a portal (a cursor) whose rows are then read
    /// a few at a time with [`query_portal`](Transaction::query_portal).
    ///
    /// `statement` is SQL text (prepared once and cached, as for `query`) or a
    /// [`Statement`](crate::Statement); its parameter types apply. Parameter count or type
    /// mismatches are errors before anything is sent, like `query`'s; a statement that
    /// cannot be a cursor (not a `SELECT` or `VALUES`, or a `COPY`, refused before sending)
    /// is an error. A server error aborts the transaction, as any failed statement does.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// let portal = tx.bind("SELECT id FROM users WHERE age > $1", &[&21i32])?;
    /// let first_page = tx.query_portal(&portal, 100)?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "DECLARE")]
    #[doc(alias = "PQexecParams")]
    pub fn bind<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Portal<'t>>
    where
        T: ?Sized + ToStatement,
    {
        refuse_copy_text(statement)?;
        let scope = self.scope().clone();
        let conn = self.connection();
        conn.before_query()?;
        let (sql, types) = match conn.plan(statement)? {
            Planned::Prepared(statement) => {
                conn.statements.check_use(&statement, params.len())?;
                (statement.sql().to_owned(), statement.params().into())
            }
            Planned::Unnamed { sql, described } => {
                crate::connection::check_param_count(&described.params, params.len())?;
                (sql.to_string_lossy().into_owned(), described.params)
            }
        };
        let name = next_name();
        conn.query_typed(&declare_sql(&name, &sql), &typed(params, &types))?;
        Ok(Portal(
            Arc::new(Inner {
                name,
                scope,
                closed: conn.statements.closed_portals().clone(),
            }),
            PhantomData,
        ))
    }

    /// Fetches the next `max_rows` rows of a portal (`FETCH FORWARD`), all remaining ones if
    /// `max_rows <= 0`. Past the end it returns no rows.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// let portal = tx.bind("SELECT generate_series(1, 10)", &[])?;
    /// assert_eq!(tx.query_portal(&portal, 3)?.len(), 3);
    /// assert_eq!(tx.query_portal(&portal, 0)?.len(), 7); // the rest
    /// assert!(tx.query_portal(&portal, 3)?.is_empty());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "FETCH")]
    #[doc(alias = "PQexecParams")]
    pub fn query_portal(&mut self, portal: &Portal<'_>, max_rows: i32) -> Result<Rows> {
        let conn = self.connection();
        portal.0.scope.check(conn.statements.connection_id())?;
        conn.query_typed(&fetch_sql(&portal.0.name, max_rows), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_counts_below_one_fetch_everything_left() {
        assert_eq!(fetch_sql("\"c\"", 3), "FETCH FORWARD 3 FROM \"c\"");
        assert_eq!(fetch_sql("\"c\"", 0), "FETCH FORWARD ALL FROM \"c\"");
        assert_eq!(fetch_sql("\"c\"", -7), "FETCH FORWARD ALL FROM \"c\"");
    }

    #[test]
    fn cursor_names_are_unique_and_quoted() {
        let (a, b) = (next_name(), next_name());
        assert_ne!(a, b);
        assert!(a.starts_with("\"pqlib_portal_") && a.ends_with('"'));
    }

    #[test]
    fn a_closed_scope_refuses_its_portals() {
        let scope = Scope::new(7);
        assert!(scope.check(7).is_ok());
        assert!(scope.check(8).is_err());
        scope.close();
        assert!(scope.check(7).is_err());
    }
}
