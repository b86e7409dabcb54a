//! Portals on the async client: [`Transaction::bind`] and [`Transaction::query_portal`], as
//! cursors (see the blocking [`Portal`](crate::Portal) for how they are made).

use std::ffi::CString;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Transaction;
use super::client::Planned;
use super::driver::{Request, Work};
use crate::error::Result;
use crate::params::EncodedParams;
use crate::portal::{Scope, declare_sql, fetch_sql, next_name, refuse_copy_text, typed};
use crate::row::Rows;
use crate::statement::ToStatement;
use crate::types::ToSql;

/// A query bound to its parameters inside an async transaction, whose rows are fetched a few
/// at a time with [`Transaction::query_portal`]: a server-side cursor. Cloning is cheap;
/// dropping the last clone queues the cursor's `CLOSE` on the connection without waiting
/// (it is never lost, and never lands in a later transaction: once the portal's transaction
/// has ended, nothing is sent, the cursor having ended with it).
///
/// A portal belongs to the transaction or savepoint that bound it (and the savepoints inside
/// that); used after it has ended, or on another connection, it is an error of kind
/// [`BadInput`](crate::error::ErrorKind::BadInput) and nothing is sent.
///
/// ```no_run
/// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
/// let tx = client.transaction().await?;
/// let portal = tx.bind("SELECT generate_series(1, $1)", &[&10i32]).await?;
/// loop {
///     let rows = tx.query_portal(&portal, 3).await?;
///     if rows.is_empty() {
///         break;
///     }
///     println!("{} rows", rows.len());
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[doc(alias = "DECLARE")]
pub struct Portal(Arc<Inner>);

struct Inner {
    /// The cursor's name, quoted.
    name: String,
    scope: Arc<Scope>,
    sender: mpsc::WeakUnboundedSender<Request>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Ok(sql) = CString::new(format!("CLOSE {}", self.name)) else {
            return;
        };
        // Under the scope's lock: queued before the transaction's end, or not at all.
        self.scope.while_open(|| {
            if let Some(sender) = self.sender.upgrade() {
                let (reply, _) = oneshot::channel();
                let _ = sender.send(Request {
                    work: Work::ExecuteTyped {
                        sql,
                        params: EncodedParams::none(),
                    },
                    reply,
                    detached: true,
                    succeeded: None,
                    only_if: None,
                });
            }
        });
    }
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("name", &self.0.name)
            .field("open", &self.0.scope.is_open())
            .finish()
    }
}

impl Transaction<'_> {
    /// Binds a statement to its parameters as a portal (a cursor) whose rows are then read a
    /// few at a time with [`query_portal`](Transaction::query_portal); see the blocking
    /// [`Transaction::bind`](crate::Transaction::bind).
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let tx = client.transaction().await?;
    /// let portal = tx.bind("SELECT id FROM users WHERE age > $1", &[&21i32]).await?;
    /// let first_page = tx.query_portal(&portal, 100).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "DECLARE")]
    #[doc(alias = "PQsendQueryParams")]
    pub async fn bind<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Portal>
    where
        T: ?Sized + ToStatement,
    {
        refuse_copy_text(statement)?;
        let (client, scope) = self.portal_parts();
        let (sql, types) = match client.plan(statement).await? {
            Planned::Prepared(statement) => {
                client.check_use(&statement, params.len())?;
                (statement.sql().to_owned(), statement.params().into())
            }
            Planned::Unnamed { sql, described } => {
                crate::connection::check_param_count(&described.params, params.len())?;
                (sql.to_string_lossy().into_owned(), described.params)
            }
        };
        let name = next_name();
        client
            .query_typed(&declare_sql(&name, &sql), &typed(params, &types))
            .await?;
        Ok(Portal(Arc::new(Inner {
            name,
            scope: scope.clone(),
            sender: client.weak_sender(),
        })))
    }

    /// Fetches the next `max_rows` rows of a portal (`FETCH FORWARD`), all remaining ones if
    /// `max_rows <= 0`; past the end, no rows.
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let tx = client.transaction().await?;
    /// let portal = tx.bind("SELECT generate_series(1, 10)", &[]).await?;
    /// assert_eq!(tx.query_portal(&portal, 3).await?.len(), 3);
    /// assert_eq!(tx.query_portal(&portal, 0).await?.len(), 7);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "FETCH")]
    #[doc(alias = "PQsendQueryParams")]
    pub async fn query_portal(&self, portal: &Portal, max_rows: i32) -> Result<Rows> {
        let (client, _) = self.portal_parts();
        portal.0.scope.check(client.connection_id())?;
        client
            .query_typed(&fetch_sql(&portal.0.name, max_rows), &[])
            .await
    }
}
