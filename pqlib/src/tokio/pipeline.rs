//! Explicit batches on the async client: many statements, one sync segment, one round trip.

use std::fmt;

use super::client::{Client, Planned};
use super::driver::{Target, Work};
use crate::error::{Error, Result};
use crate::params::EncodedParams;
use crate::row::Rows;
use crate::statement::ToStatement;
use crate::types::ToSql;

impl Client {
    /// Starts a batch of statements that go to the server together and end with one sync
    /// point: the whole batch costs one round trip and one flush, like the blocking
    /// [`Pipeline`](crate::pipeline::Pipeline) with a single `sync`.
    ///
    /// Statements sent concurrently through a `Client` are pipelined too, but each in its own
    /// sync segment so that one task's error cannot touch another's statement; that costs the
    /// server a sync (and, before libpq 17, the client a socket write) per statement. A batch
    /// trades that isolation for speed: it is one implicit transaction, so if any statement
    /// fails the server rolls back the ones before it and skips the ones after, and
    /// [`run`](Pipeline::run) returns that first error. (Inside a transaction started with
    /// [`Client::transaction`], the batch is part of that transaction instead.)
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let insert = client.prepare("INSERT INTO t (id, name) VALUES ($1, $2)").await?;
    /// let mut batch = client.pipeline();
    /// for id in 0..1000i32 {
    ///     batch.query(&insert, &[&id, &format!("row {id}")]).await?;
    /// }
    /// let results = batch.run().await?;
    /// assert_eq!(results.len(), 1000);
    /// assert!(results.iter().all(|r| r.rows_affected() == 1));
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendPipelineSync")]
    #[doc(alias = "PQpipelineSync")]
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            client: self,
            items: Vec::new(),
        }
    }
}

/// A batch of statements built by [`Client::pipeline`]; nothing is sent before
/// [`run`](Pipeline::run).
#[must_use = "nothing is sent until the batch is run"]
pub struct Pipeline<'c> {
    client: &'c Client,
    items: Vec<(Target, EncodedParams)>,
}

impl Pipeline<'_> {
    /// Adds a statement with its parameters. SQL text is prepared first (and cached), which
    /// waits for the server once per new SQL; a [`Statement`](crate::Statement) adds nothing
    /// but the encoding.
    /// Under [`PreparePolicy::Never`](crate::PreparePolicy::Never) new SQL text is
    /// described instead, and runs as the unnamed statement in the batch's segment.
    /// Wrong parameters are an error here, before anything is sent.
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<()>
    where
        T: ?Sized + ToStatement,
    {
        let (target, encoded) = match self.client.plan(statement).await? {
            Planned::Prepared(statement) => {
                self.client.check_use(&statement, params.len())?;
                let encoded = EncodedParams::new(params, statement.params())?;
                (Target::Prepared(statement), encoded)
            }
            Planned::Unnamed { sql, described } => {
                crate::connection::check_param_count(&described.params, params.len())?;
                (
                    Target::Unnamed(sql),
                    EncodedParams::with_types(params, &described.params)?,
                )
            }
        };
        self.items.push((target, encoded));
        Ok(())
    }

    /// How many statements the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds no statement.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends the batch with one sync point and returns each statement's result in order, or
    /// the first error (the server has then rolled the whole batch back).
    #[doc(alias = "PQsendPipelineSync")]
    #[doc(alias = "PQpipelineSync")]
    pub async fn run(self) -> Result<Vec<Rows>> {
        if self.items.is_empty() {
            return Ok(Vec::new());
        }
        let columns: Vec<_> = self
            .items
            .iter()
            .map(|(target, _)| match target {
                Target::Prepared(statement) => Some(statement.columns_arc()),
                Target::Unnamed(_) => None,
            })
            .collect();
        let results = self
            .client
            .request_work(Work::Batch { items: self.items })
            .await?;
        if results.len() != columns.len() {
            return Err(Error::client(format!(
                "a batch of {} statements returned {} results",
                columns.len(),
                results.len()
            )));
        }
        let notices = self.client.notices();
        let mut rows = Vec::with_capacity(results.len());
        for (result, columns) in results.into_iter().zip(columns) {
            let columns = match columns {
                Some(columns) => columns,
                None => self.client.columns(&result).await?,
            };
            rows.push(Rows::new(result, columns, notices.clone()));
        }
        Ok(rows)
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("statements", &self.items.len())
            .finish_non_exhaustive()
    }
}
