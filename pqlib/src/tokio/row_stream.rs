//! Streamed query results on the async client: rows arrive in chunks as the server sends
//! them, with the connection task reading no further ahead than the consumer allows.

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
use crate::types::{BorrowToSql, ToSql};

/// How many batches of rows may wait between the connection task and a [`RowStream`] before
/// the task stops reading from the server.
const STREAM_BATCHES: usize = 2;

impl Client {
    /// Runs a statement and streams its rows, like
    /// [`Connection::query_raw`](crate::Connection::query_raw): memory holds a few chunks of
    /// rows rather than the whole result, and the server is held back (by TCP flow control)
    /// when the consumer is slower than it.
    ///
    /// The stream's items are chunks of rows as owned [`Rows`] (libpq's chunked-rows mode on
    /// libpq 17+, up to [`STREAM_CHUNK_ROWS`](crate::STREAM_CHUNK_ROWS) rows each; single rows
    /// before), so reading a row costs no allocation. Other statements of this client queue
    /// behind the stream, and it waits for those sent before it to finish (libpq sets the row
    /// mode on the oldest statement in flight). An error ends the stream as its last item.
    /// Dropping the stream early makes the connection task read and discard the rest.
    ///
    /// ```no_run
    /// # async fn run(client: pqlib::tokio::Client) -> Result<(), pqlib::Error> {
    /// let mut stream = client
    ///     .query_raw("SELECT g FROM generate_series(1, $1) g", [&10_000_000i32])
    ///     .await?;
    /// let mut total = 0i64;
    /// while let Some(chunk) = stream.next_chunk().await {
    ///     for row in &chunk? {
    ///         total += i64::from(row.get::<_, i32>(0));
    ///     }
    /// }
    /// assert_eq!(stream.rows_affected(), Some(10_000_000));
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsetChunkedRowsMode")]
    #[doc(alias = "PQsetSingleRowMode")]
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query_raw<T, P, I>(&self, statement: &T, params: I) -> Result<RowStream>
    where
        T: ?Sized + ToStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let params = params.into_iter();
        let params: Vec<P> = params.collect();
        let values = || params.iter().map(|p| p.borrow_to_sql() as &dyn ToSql);
        let (target, encoded, columns, unnamed) = match self.plan(statement).await? {
            Planned::Prepared(statement) => {
                self.check_use(&statement, params.len())?;
                let encoded = EncodedParams::from_iter(values(), statement.params())?;
                let columns = statement.columns_arc();
                (Target::Prepared(statement), encoded, columns, None)
            }
            Planned::Unnamed { sql, described } => {
                crate::connection::check_param_count(&described.params, params.len())?;
                let mut encoded = EncodedParams::from_iter(values(), &described.params)?;
                encoded.set_types(&described.params);
                let text = sql.to_string_lossy().into_owned();
                (Target::Unnamed(sql), encoded, described.columns, Some(text))
            }
        };
        let (rows, chunks) = futures_channel::mpsc::channel(STREAM_BATCHES);
        let end = self.send_only(
            Work::Stream {
                target,
                params: encoded,
                rows,
            },
            false,
        )?;
        Ok(RowStream {
            chunks,
            batch: Vec::new().into_iter(),
            end: Some(end),
            columns,
            notices: self.notices(),
            rows_affected: None,
            chunk_tag: None,
            driving: self.driving(),
            unchecked: unnamed.map(|sql| (sql, self.description_keeper())),
        })
    }
}

/// The rows of [`Client::query_raw`], as a [`Stream`] of chunks ([`Rows`]) in the order the
/// server sent them.
///
/// The stream ends after the last chunk, or with an error as its last item; then
/// [`rows_affected`](RowStream::rows_affected) tells the statement's row count.
pub struct RowStream {
    chunks: futures_channel::mpsc::Receiver<Vec<PgResult>>,
    /// The rest of the batch being handed out.
    batch: std::vec::IntoIter<PgResult>,
    /// The statement's outcome, read once `chunks` has closed; `None` once the stream ended.
    end: Option<oneshot::Receiver<Reply>>,
    columns: Arc<[Column]>,
    notices: Arc<NoticeState>,
    rows_affected: Option<u64>,
    /// The row count of a chunk that carried the command tag (libpq 17+ chunked mode).
    chunk_tag: Option<u64>,
    /// The stream drives the connection itself while it waits for rows.
    driving: Driving,
    /// SQL text run as the unnamed statement with the columns it was described with: its
    /// first rows are checked against them (DDL may have changed them since).
    unchecked: Option<(String, DescriptionKeeper)>,
}

impl RowStream {
    /// The next chunk of rows, `None` at the end.
    #[doc(alias = "PQgetResult")]
    pub async fn next_chunk(&mut self) -> Option<Result<Rows>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The number of rows the statement returned or affected, once the stream has ended
    /// without an error.
    #[doc(alias = "PQcmdTuples")]
    pub fn rows_affected(&self) -> Option<u64> {
        self.rows_affected
    }

    /// The result's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
}

impl Stream for RowStream {
    type Item = Result<Rows>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Rows>>> {
        let this = self.get_mut();
        loop {
            if let Some(result) = this.batch.next() {
                if let Some((sql, keeper)) = this.unchecked.take() {
                    if !result.has_columns(&this.columns) {
                        keeper.forget(&sql);
                        this.batch = Vec::new().into_iter();
                        return Poll::Ready(Some(Err(Error::client(format!(
                            "the rows of {sql:?} have other columns than when it was \
                             described (DDL since?); it is described again on its next run"
                        )))));
                    }
                }
                if result.has_command_status() {
                    // libpq 17+'s chunked mode: the tag comes with the last chunk of rows.
                    this.chunk_tag = Some(result.rows_affected());
                }
                return Poll::Ready(Some(Ok(Rows::new(
                    result,
                    this.columns.clone(),
                    this.notices.clone(),
                ))));
            }
            let chunks = &mut this.chunks;
            match ready!(
                this.driving
                    .poll_until(cx, |cx| Pin::new(&mut *chunks).poll_next(cx))
            ) {
                Some(batch) => this.batch = batch.into_iter(),
                None => break,
            }
        }
        // Every chunk is out: the statement's final result or error.
        match ready!(this.driving.poll_final(cx, &mut this.end, "stream")) {
            None => Poll::Ready(None),
            Some(Ok(results)) => {
                this.rows_affected = match (results.last(), this.chunk_tag) {
                    (Some(last), Some(rows)) if !last.has_command_status() => Some(rows),
                    (last, chunk_tag) => last.map(|r| r.rows_affected()).or(chunk_tag),
                };
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl fmt::Debug for RowStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .field("ended", &self.end.is_none())
            .finish_non_exhaustive()
    }
}
