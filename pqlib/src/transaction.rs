//! Transactions: `BEGIN` … `COMMIT`, nested ones as savepoints, rolled back unless committed.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::portal::Scope;
use crate::row::{OwnedRow, Rows};
use crate::statement::{Statement, ToStatement};
use crate::types::{ToSql, Type};
use crate::{Connection, TransactionStatus};

/// A transaction in progress. It borrows the connection mutably, so the connection cannot
/// be used around it; it is rolled back when dropped without [`commit`](Transaction::commit).
/// A transaction started from a transaction is a savepoint.
///
/// ```no_run
/// # fn main() -> Result<(), pqlib::Error> {
/// # let mut conn = pqlib::Connection::connect("")?;
/// let mut tx = conn.transaction()?;
/// tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[&1i32])?;
/// {
///     let mut savepoint = tx.transaction()?;
///     savepoint.execute("UPDATE accounts SET balance = balance + 10 WHERE id = $1", &[&2i32])?;
///     // dropped: rolled back to the savepoint
/// }
/// tx.commit()?;
/// # Ok(()) }
/// ```
pub struct Transaction<'c> {
    conn: &'c mut Connection,
    /// 0 for the outermost transaction, n for the n-th nested savepoint.
    depth: u32,
    /// The savepoint's name as SQL (quoted if the caller chose it); `None` for the outermost.
    savepoint: Option<String>,
    finished: bool,
    /// The portals bound in this transaction (or savepoint) can be used while it is open.
    scope: Arc<Scope>,
}

impl Connection {
    /// Starts a transaction (`BEGIN`).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// tx.batch_execute("CREATE TEMP TABLE t (x int)")?;
    /// tx.commit()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "BEGIN")]
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.build_transaction().start()
    }

    /// Starts a transaction with an isolation level, read-only or deferrable mode.
    ///
    /// ```no_run
    /// use pqlib::IsolationLevel;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let tx = conn
    ///     .build_transaction()
    ///     .isolation_level(IsolationLevel::Serializable)
    ///     .read_only(true)
    ///     .deferrable(true)
    ///     .start()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn build_transaction(&mut self) -> TransactionBuilder<'_> {
        TransactionBuilder {
            conn: self,
            isolation_level: None,
            read_only: None,
            deferrable: None,
        }
    }
}

/// The isolation level of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (behaves as `READ COMMITTED` in PostgreSQL).
    ReadUncommitted,
    /// `READ COMMITTED`, the default.
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`.
    Serializable,
}

/// Options for a new transaction; see [`Connection::build_transaction`].
#[must_use = "the transaction starts only with .start()"]
pub struct TransactionBuilder<'c> {
    conn: &'c mut Connection,
    isolation_level: Option<IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
}

impl<'c> TransactionBuilder<'c> {
    /// Sets the isolation level.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = Some(level);
        self
    }

    /// Makes the transaction read-only (or explicitly read-write).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// Makes a serializable read-only transaction deferrable.
    pub fn deferrable(mut self, deferrable: bool) -> Self {
        self.deferrable = Some(deferrable);
        self
    }

    /// Sends `BEGIN` with the chosen options.
    #[doc(alias = "BEGIN")]
    pub fn start(self) -> Result<Transaction<'c>> {
        let sql = begin_sql(self.isolation_level, self.read_only, self.deferrable);
        if self.conn.is_closed() {
            return Err(Error::closed("the connection is closed"));
        }
        if self.conn.transaction_status() != TransactionStatus::Idle {
            return Err(Error::bad_input(
                "a transaction is already open on this connection (started with SQL?); \
                 nest with Transaction::transaction for a savepoint",
            ));
        }
        self.conn.batch_execute(&sql)?;
        let scope = Scope::new(self.conn.statements.connection_id());
        Ok(Transaction {
            conn: self.conn,
            depth: 0,
            savepoint: None,
            finished: false,
            scope,
        })
    }
}

/// The `BEGIN` statement for a transaction with these options (blocking and async builders).
pub(crate) fn begin_sql(
    isolation_level: Option<IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
) -> String {
    let mut modes = Vec::new();
    if let Some(level) = isolation_level {
        modes.push(match level {
            IsolationLevel::ReadUncommitted => "ISOLATION LEVEL READ UNCOMMITTED",
            IsolationLevel::ReadCommitted => "ISOLATION LEVEL READ COMMITTED",
            IsolationLevel::RepeatableRead => "ISOLATION LEVEL REPEATABLE READ",
            IsolationLevel::Serializable => "ISOLATION LEVEL SERIALIZABLE",
        });
    }
    if let Some(read_only) = read_only {
        modes.push(if read_only { "READ ONLY" } else { "READ WRITE" });
    }
    if let Some(deferrable) = deferrable {
        modes.push(if deferrable {
            "DEFERRABLE"
        } else {
            "NOT DEFERRABLE"
        });
    }
    format!("BEGIN {}", modes.join(", "))
}

/// The name of a nested transaction's savepoint as SQL: `pqlib_savepoint_{depth}` when the
/// caller gave none, otherwise the caller's name quoted as an identifier (`"a""b"`), so any
/// text (spaces, quotes, non-ASCII letters) names exactly itself. Text goes to the server as
/// UTF-8 (pqlib keeps `client_encoding` at UTF8), where only `"` needs escaping; a NUL byte
/// cannot be sent and an empty name is not an identifier, so both are refused.
pub(crate) fn savepoint_sql(depth: u32, name: Option<&str>) -> Result<String> {
    let Some(name) = name else {
        return Ok(format!("pqlib_savepoint_{depth}"));
    };
    if name.is_empty() {
        return Err(Error::bad_input("a savepoint name cannot be empty"));
    }
    if name.contains('\0') {
        return Err(Error::bad_input(
            "a savepoint name cannot contain a NUL byte",
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

impl<'c> Transaction<'c> {
    /// The connection this transaction runs on, for the crate's modules that call libpq on it.
    pub(crate) fn connection(&mut self) -> &mut Connection {
        self.conn
    }

    /// The scope portals bound here belong to.
    pub(crate) fn scope(&self) -> &Arc<Scope> {
        &self.scope
    }

    fn savepoint_name(&self) -> String {
        self.savepoint
            .clone()
            .unwrap_or_else(|| format!("pqlib_savepoint_{}", self.depth))
    }

    /// Commits the transaction (or releases the savepoint).
    ///
    /// Committing a transaction in which a statement failed rolls it back on the server;
    /// that is reported as an error here, not as success.
    #[doc(alias = "COMMIT")]
    pub fn commit(mut self) -> Result<()> {
        self.finished = true;
        self.scope.close();
        if self.depth > 0 {
            return self
                .conn
                .batch_execute(&format!("RELEASE SAVEPOINT {}", self.savepoint_name()));
        }
        let rows = self.conn.query_typed("COMMIT", &[])?;
        if rows.command_tag() == "ROLLBACK" {
            return Err(Error::client(
                "COMMIT rolled the transaction back because a statement in it had failed",
            ));
        }
        Ok(())
    }

    /// Rolls the transaction back (or back to the savepoint). Dropping it does the same.
    #[doc(alias = "ROLLBACK")]
    pub fn rollback(mut self) -> Result<()> {
        self.finished = true;
        self.rollback_inner()
    }

    fn rollback_inner(&mut self) -> Result<()> {
        self.scope.close();
        if self.depth > 0 {
            let savepoint = self.savepoint_name();
            self.conn.batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}"
            ))
        } else {
            self.conn.batch_execute("ROLLBACK")
        }
    }

    /// Starts a nested transaction: a savepoint that commits into this transaction or rolls
    /// back to where it began.
    #[doc(alias = "SAVEPOINT")]
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.nested(None)
    }

    /// Starts a nested transaction as a savepoint with the given name (`SAVEPOINT "name"`):
    /// like [`transaction`](Transaction::transaction), released on commit, rolled back to
    /// and released on rollback or drop. The name is quoted as an identifier, so any text
    /// names exactly itself (`a"b`, spaces, non-ASCII); an empty name or one with a NUL byte
    /// is refused with [`BadInput`](crate::error::ErrorKind::BadInput) before anything is
    /// sent.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// tx.execute("INSERT INTO t VALUES (1)", &[])?;
    /// let mut sp = tx.savepoint("before step 2")?;
    /// sp.execute("INSERT INTO t VALUES (2)", &[])?;
    /// sp.rollback()?; // ROLLBACK TO SAVEPOINT "before step 2"
    /// tx.commit()?; // only row 1
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "SAVEPOINT")]
    pub fn savepoint<I>(&mut self, name: I) -> Result<Transaction<'_>>
    where
        I: Into<String>,
    {
        self.nested(Some(name.into()))
    }

    fn nested(&mut self, name: Option<String>) -> Result<Transaction<'_>> {
        let depth = self.depth + 1;
        let savepoint = savepoint_sql(depth, name.as_deref())?;
        self.conn.batch_execute(&format!("SAVEPOINT {savepoint}"))?;
        let scope = Scope::new(self.conn.statements.connection_id());
        Ok(Transaction {
            conn: self.conn,
            depth,
            savepoint: Some(savepoint),
            finished: false,
            scope,
        })
    }

    /// See [`Connection::batch_execute`].
    #[doc(alias = "PQexec")]
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.conn.batch_execute(sql)
    }

    /// See [`Connection::execute`].
    #[doc(alias = "PQexecPrepared")]
    pub fn execute<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64>
    where
        T: ?Sized + ToStatement,
    {
        self.conn.execute(statement, params)
    }

    /// See [`Connection::query`].
    #[doc(alias = "PQexecPrepared")]
    pub fn query<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Rows>
    where
        T: ?Sized + ToStatement,
    {
        self.conn.query(statement, params)
    }

    /// See [`Connection::query_one`].
    #[doc(alias = "PQexecPrepared")]
    pub fn query_one<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<OwnedRow>
    where
        T: ?Sized + ToStatement,
    {
        self.conn.query_one(statement, params)
    }

    /// See [`Connection::query_opt`].
    #[doc(alias = "PQexecPrepared")]
    pub fn query_opt<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<OwnedRow>>
    where
        T: ?Sized + ToStatement,
    {
        self.conn.query_opt(statement, params)
    }

    /// See [`Connection::query_typed`].
    #[doc(alias = "PQexecParams")]
    pub fn query_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Rows> {
        self.conn.query_typed(sql, params)
    }

    /// See [`Connection::query_raw`].
    #[doc(alias = "PQsendQueryPrepared")]
    #[doc(alias = "PQsetChunkedRowsMode")]
    #[doc(alias = "PQsetSingleRowMode")]
    pub fn query_raw<T, P, I>(&mut self, statement: &T, params: I) -> Result<crate::RowStream<'_>>
    where
        T: ?Sized + ToStatement,
        P: crate::types::BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        self.conn.query_raw(statement, params)
    }

    /// See [`Connection::prepare`].
    #[doc(alias = "PQprepare", alias = "PQdescribePrepared")]
    pub fn prepare(&mut self, sql: &str) -> Result<Statement> {
        self.conn.prepare(sql)
    }

    /// See [`Connection::prepare_typed`].
    #[doc(alias = "PQprepare", alias = "PQdescribePrepared")]
    pub fn prepare_typed(&mut self, sql: &str, types: &[Type]) -> Result<Statement> {
        self.conn.prepare_typed(sql, types)
    }

    /// See [`Connection::copy_in`].
    #[doc(alias = "PQputCopyData")]
    pub fn copy_in(&mut self, sql: &str) -> Result<crate::CopyInWriter<'_>> {
        self.conn.copy_in(sql)
    }

    /// See [`Connection::copy_out`].
    #[doc(alias = "PQgetCopyData")]
    pub fn copy_out(&mut self, sql: &str) -> Result<crate::CopyOutReader<'_>> {
        self.conn.copy_out(sql)
    }

    /// The connection's transaction status (see [`Connection::transaction_status`]).
    #[doc(alias = "PQtransactionStatus")]
    pub fn transaction_status(&self) -> TransactionStatus {
        self.conn.transaction_status()
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.scope.close();
        if !self.finished && !self.conn.is_closed() {
            // Nothing to report to: a failed rollback leaves the connection's status to say so.
            let _ = self.rollback_inner();
        }
    }
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("depth", &self.depth)
            .field("status", &self.conn.transaction_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_names_are_quoted_identifiers() {
        assert_eq!(savepoint_sql(3, None).unwrap(), "pqlib_savepoint_3");
        assert_eq!(savepoint_sql(1, Some("sp")).unwrap(), "\"sp\"");
        assert_eq!(savepoint_sql(1, Some("a\"b")).unwrap(), "\"a\"\"b\"");
        assert_eq!(
            savepoint_sql(1, Some("x\"; ROLLBACK; --")).unwrap(),
            "\"x\"\"; ROLLBACK; --\""
        );
        assert_eq!(savepoint_sql(1, Some("ünï")).unwrap(), "\"ünï\"");
        for bad in ["", "a\0b"] {
            let error = savepoint_sql(1, Some(bad)).unwrap_err();
            assert_eq!(error.kind(), crate::error::ErrorKind::BadInput);
        }
    }

    #[test]
    fn begin_sql_lists_the_chosen_modes() {
        assert_eq!(begin_sql(None, None, None), "BEGIN ");
        assert_eq!(
            begin_sql(Some(IsolationLevel::Serializable), Some(true), Some(true)),
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"
        );
        assert_eq!(
            begin_sql(
                Some(IsolationLevel::ReadCommitted),
                Some(false),
                Some(false)
            ),
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE, NOT DEFERRABLE"
        );
    }
}
