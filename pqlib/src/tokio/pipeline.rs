//! Explicit batches on the async client: many statements, one sync segment, one round trip.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use tokio::sync::oneshot;

use super::client::{Client, DescriptionKeeper, Planned};
use super::driver::{Driving, Reply, Target, Work};
use crate::error::{Error, Result};
use crate::handle::PgResult;
use crate::notice::NoticeState;
use crate::params::EncodedParams;
use crate::row::{Column, Rows};
use crate::statement::ToStatement;
use crate::types::ToSql;

/// How many groups of results may wait between the connection task and a [`PipelineStream`]
/// before the task stops reading from the server.
const STREAM_GROUPS: usize = 2;

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
            columns: Vec::new(),
        }
    }
}

/// A batch of statements built by [`Client::pipeline`]; nothing is sent before
/// [`run`](Pipeline::run) or [`stream`](Pipeline::stream).
#[must_use = "nothing is sent until the batch is run"]
pub struct Pipeline<'c> {
    client: &'c Client,
    items: Vec<(Target, EncodedParams)>,
    /// Per item, the columns its result should have.
    columns: Vec<ItemColumns>,
}

/// A batch item's columns: a prepared statement's, or those SQL text run as the unnamed
/// statement was described with (DDL may have changed them since: checked on arrival).
struct ItemColumns {
    columns: Arc<[Column]>,
    /// The SQL text, for an unnamed statement.
    described: Option<String>,
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
        let (target, encoded, columns) = match self.client.plan(statement).await? {
            Planned::Prepared(statement) => {
                self.client.check_use(&statement, params.len())?;
                let encoded = EncodedParams::new(params, statement.params())?;
                let columns = ItemColumns {
                    columns: statement.columns_arc(),
                    described: None,
                };
                (Target::Prepared(statement), encoded, columns)
            }
            Planned::Unnamed { sql, described } => {
                crate::connection::check_param_count(&described.params, params.len())?;
                let encoded = EncodedParams::with_types(params, &described.params)?;
                let columns = ItemColumns {
                    columns: described.columns,
                    described: Some(sql.to_string_lossy().into_owned()),
                };
                (Target::Unnamed(sql), encoded, columns)
            }
        };
        self.items.push((target, encoded));
        self.columns.push(columns);
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
        let columns = self.columns;
        let results = self
            .client
            .request_work(Work::Batch {
                items: self.items,
                results: None,
            })
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
        for (result, item) in results.into_iter().zip(columns) {
            let columns = match item.described {
                None => item.columns,
                // The result's own columns: all of it is here, and looking them up may wait.
                Some(_) => self.client.columns(&result).await?,
            };
            rows.push(Rows::new(result, columns, notices.clone()));
        }
        Ok(rows)
    }

    /// Sends the batch like [`run`](Pipeline::run), and hands each statement's result over
    /// as it arrives instead of all of them at the end: a large batch then holds a few
    /// results in memory at a time rather than all of them, and the connection stops reading
    /// from the server while the consumer is behind.
    ///
    /// The stream yields one [`Rows`] per statement, in order. An error is its last item and
    /// means the server rolled the whole batch back: results handed out before it describe
    /// work that was undone. Dropping the stream early makes the connection read and discard
    /// the rest (the batch still runs to its end, and commits).
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let double = client.prepare("SELECT $1::int8 * 2").await?;
    /// let mut batch = client.pipeline();
    /// for n in 0..10_000i64 {
    ///     batch.query(&double, &[&n]).await?;
    /// }
    /// let mut results = batch.stream()?;
    /// let mut total = 0i64;
    /// while let Some(rows) = results.next_result().await {
    ///     total += rows?.get(0).map_or(0, |row| row.get::<_, i64>(0));
    /// }
    /// assert_eq!(total, 99_990_000);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendPipelineSync")]
    #[doc(alias = "PQpipelineSync")]
    #[doc(alias = "PQgetResult")]
    pub fn stream(self) -> Result<PipelineStream> {
        let mut stream = PipelineStream {
            results: None,
            group: Vec::new().into_iter(),
            columns: self.columns.into_iter(),
            end: None,
            notices: self.client.notices(),
            driving: self.client.driving(),
            keeper: self.client.description_keeper(),
        };
        if !self.items.is_empty() {
            let (sender, results) = futures_channel::mpsc::channel(STREAM_GROUPS);
            let end = self.client.send_only(
                Work::Batch {
                    items: self.items,
                    results: Some(sender),
                },
                false,
            )?;
            stream.results = Some(results);
            stream.end = Some(end);
        }
        Ok(stream)
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("statements", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// The results of a batch sent with [`Pipeline::stream`], as a [`Stream`] of one [`Rows`] per
/// statement, in order, handed over as they arrive.
///
/// It ends after the last statement's result, or with an error as its last item (the server
/// then rolled the batch back).
pub struct PipelineStream {
    /// `None` once every result is out (or for an empty batch).
    results: Option<futures_channel::mpsc::Receiver<Vec<PgResult>>>,
    /// The rest of the group of results being handed out.
    group: std::vec::IntoIter<PgResult>,
    /// The columns of the statements whose results are still to come.
    columns: std::vec::IntoIter<ItemColumns>,
    /// The batch's outcome, read once `results` has closed; `None` once the stream ended.
    end: Option<oneshot::Receiver<Reply>>,
    notices: Arc<NoticeState>,
    /// The stream drives the connection itself while it waits for results.
    driving: Driving,
    keeper: DescriptionKeeper,
}

impl PipelineStream {
    /// The next statement's result, `None` at the end.
    #[doc(alias = "PQgetResult")]
    pub async fn next_result(&mut self) -> Option<Result<Rows>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// How many statements' results are still to come.
    pub fn remaining(&self) -> usize {
        self.columns.len()
    }

    /// Ends the stream with `error`: what is still on the way is read and discarded.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Rows>>> {
        self.results = None;
        self.group = Vec::new().into_iter();
        self.columns = Vec::new().into_iter();
        self.end = None;
        self.driving.withdraw();
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for PipelineStream {
    type Item = Result<Rows>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Rows>>> {
        let this = self.get_mut();
        loop {
            if let Some(result) = this.group.next() {
                let Some(item) = this.columns.next() else {
                    return this.fail(Error::client(
                        "a batch returned more results than it has statements",
                    ));
                };
                if let Some(sql) = &item.described {
                    if !result.has_columns(&item.columns) {
                        this.keeper.forget(sql);
                        return this.fail(Error::client(format!(
                            "the rows of {sql:?} have other columns than when it was \
                             described (DDL since?); it is described again on its next run"
                        )));
                    }
                }
                return Poll::Ready(Some(Ok(Rows::new(
                    result,
                    item.columns,
                    this.notices.clone(),
                ))));
            }
            let Some(results) = this.results.as_mut() else {
                break;
            };
            match ready!(
                this.driving
                    .poll_until(cx, |cx| Pin::new(&mut *results).poll_next(cx))
            ) {
                Some(group) => this.group = group.into_iter(),
                None => {
                    this.results = None;
                    break;
                }
            }
        }
        // Every result is out: the batch's outcome.
        match ready!(this.driving.poll_final(cx, &mut this.end, "batch")) {
            None => Poll::Ready(None),
            Some(Ok(_)) if this.columns.len() > 0 => {
                let missing = this.columns.len();
                this.fail(Error::client(format!(
                    "a batch ended with {missing} statements' results missing"
                )))
            }
            Some(Ok(_)) => Poll::Ready(None),
            Some(Err(e)) => this.fail(e),
        }
    }
}

impl fmt::Debug for PipelineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineStream")
            .field("remaining", &self.columns.len())
            .field("ended", &(self.end.is_none() && self.results.is_none()))
            .finish_non_exhaustive()
    }
}
