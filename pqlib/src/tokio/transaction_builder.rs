//! Options for a new async transaction ([`Client::build_transaction`]).

use super::{Client, Transaction};
use crate::IsolationLevel;
use crate::error::Result;

/// Options for a new transaction; see [`Client::build_transaction`]. The same options as the
/// blocking [`TransactionBuilder`](crate::TransactionBuilder).
///
/// Dropping the [`start`](TransactionBuilder::start) future at any point leaves the session
/// outside a transaction, as for [`Client::transaction`]: if its `BEGIN` went out and
/// succeeded, the rollback queued behind it ends the transaction.
///
/// ```no_run
/// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// use pqlib::IsolationLevel;
/// let tx = client
///     .build_transaction()
///     .isolation_level(IsolationLevel::RepeatableRead)
///     .read_only(true)
///     .start()
///     .await?;
/// let n: i64 = tx.query_one("SELECT count(*) FROM pg_class", &[]).await?.get(0);
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[must_use = "the transaction starts only with .start()"]
pub struct TransactionBuilder<'a> {
    client: &'a mut Client,
    isolation_level: Option<IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
}

impl<'a> TransactionBuilder<'a> {
    pub(super) fn new(client: &'a mut Client) -> TransactionBuilder<'a> {
        TransactionBuilder {
            client,
            isolation_level: None,
            read_only: None,
            deferrable: None,
        }
    }

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

    /// Sends `BEGIN` with the chosen options and waits for it.
    #[doc(alias = "BEGIN")]
    pub async fn start(self) -> Result<Transaction<'a>> {
        let sql =
            crate::transaction::begin_sql(self.isolation_level, self.read_only, self.deferrable);
        Transaction::begin(self.client, 0, sql, None).await
    }
}

impl std::fmt::Debug for TransactionBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionBuilder")
            .field("isolation_level", &self.isolation_level)
            .field("read_only", &self.read_only)
            .field("deferrable", &self.deferrable)
            .finish()
    }
}
