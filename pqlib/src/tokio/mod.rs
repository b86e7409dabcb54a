//! An async client for tokio on libpq's non-blocking API (feature `tokio`, unix only).
//!
//! [`connect`] returns a [`Client`] and a [`Connection`], in `tokio_postgres`' shape: spawn
//! the connection, clone the client into as many tasks as you like. Concurrent statements
//! ride libpq's pipeline mode, so they share round trips instead of queueing behind each
//! other; each still gets its own result and its own errors.
//!
//! Nothing here blocks a runtime thread: connecting uses `PQconnectStartParams` /
//! `PQconnectPoll`, and queries `PQsendQuery*`, `PQflush`, `PQconsumeInput` and `PQisBusy`,
//! waiting on the socket through tokio's reactor.
//!
//! ```no_run
//! # async fn run() -> Result<(), pqlib::Error> {
//! let (client, connection) = pqlib::tokio::connect("host=localhost user=postgres").await?;
//! tokio::spawn(async move {
//!     if let Err(e) = connection.await {
//!         eprintln!("connection error: {e}");
//!     }
//! });
//! let rows = client.query("SELECT $1::text || '!'", &[&"hello"]).await?;
//! let text: &str = rows.get(0).unwrap().get(0);
//! # Ok(()) }
//! ```

mod client;
mod connect;
mod copy;
mod driver;
mod pipeline;
mod portal;
mod replication;
mod row_stream;
mod transaction_builder;

pub use client::{Client, Transaction};
pub use connect::{connect, connect_config};
pub use copy::{BinaryCopyInWriter, BinaryCopyOutStream, CopyInSink, CopyOutStream};
pub use driver::{AsyncMessage, Connection};
pub use pipeline::{Pipeline, PipelineStream};
pub use portal::Portal;
pub use replication::{ReplicationClient, ReplicationStream};
pub use row_stream::RowStream;
pub use transaction_builder::TransactionBuilder;

/// Cancels the statement running on an async connection, from any task or thread.
///
/// ```no_run
/// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// let token = client.cancel_token();
/// tokio::spawn(async move {
///     let _ = token.cancel_query().await;
/// });
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CancelToken(crate::CancelToken);

impl CancelToken {
    /// Sends the cancel request without blocking the runtime (libpq's cancel call blocks, so
    /// it runs on tokio's blocking pool); see [`crate::CancelToken::cancel_query`].
    #[doc(alias = "PQcancel")]
    #[doc(alias = "PQcancelBlocking")]
    pub async fn cancel_query(&self) -> crate::Result<()> {
        let token = self.0.clone();
        tokio::task::spawn_blocking(move || token.cancel_query())
            .await
            .map_err(|e| crate::Error::client(format!("the cancel task failed: {e}")))?
    }

    /// The blocking token, for use outside async code.
    pub fn blocking(&self) -> &crate::CancelToken {
        &self.0
    }
}
