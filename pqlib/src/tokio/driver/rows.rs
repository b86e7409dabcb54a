//! The connection task's side of a streamed query (`Client::query_raw`) or a streamed batch
//! (`Pipeline::stream`): results handed to the stream in batches, with backpressure to the
//! server.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::handle::PgResult;

/// A streamed query's rows are handed over once this many have arrived (or the socket has
/// no more for now); reading stops while a full batch waits for room, so a slow consumer
/// holds the server back instead of filling memory.
///
/// Small, because of how glibc's `malloc` reuses memory. Before libpq 17 every row is a
/// `PGresult` of its own, and a batch's statements are one each too: three blocks (the
/// result, its 2 KiB data block, the tuple array). Freed a few at a time they come straight
/// back from the per-thread cache (7 blocks of a size); freed by the dozen they go through
/// the unsorted and large bins, where the next `malloc` sorts and splits them. Measured
/// (libpq 15, pinned, against C in the same run): W3s 1.20–1.24× with 64 rows, 1.16–1.21×
/// with 8, 1.07–1.10× with 4 (the blocking client: 1.06–1.09×), 1.11× with 2, 1.18–1.21×
/// with 1 (a channel send per row); W6p 1.18–1.19× with 64, 1.14–1.15× with 4. Batches of
/// 1,000 rows once made W3s 350 ms of client CPU against 300 ms. The stream drives the
/// connection itself while it waits, so a small batch costs no wake-up between tasks.
/// libpq 17+'s chunks of [`STREAM_CHUNK_ROWS`](crate::STREAM_CHUNK_ROWS) rows go one per
/// batch.
const STREAM_BATCH_ROWS: usize = 4;

/// Where a streamed query's results go: batches of row-holding results.
pub(crate) type RowSender = futures_channel::mpsc::Sender<Vec<PgResult>>;

/// The connection task's side of a streamed query or batch.
pub(super) struct RowSink {
    /// `None` once the stream is dropped: the rest is read and discarded.
    sender: Option<RowSender>,
    batch: Vec<PgResult>,
    /// Rows in `batch`, a result without rows counting as one.
    batch_rows: usize,
    /// A batch's sink takes each statement's final result; a query's only its row chunks.
    whole_results: bool,
}

impl RowSink {
    /// For a streamed query: its chunks of rows.
    pub(super) fn new(sender: RowSender) -> RowSink {
        RowSink {
            sender: Some(sender),
            batch: Vec::new(),
            batch_rows: 0,
            whole_results: false,
        }
    }

    /// For a streamed batch: each statement's result.
    pub(super) fn for_batch(sender: RowSender) -> RowSink {
        RowSink {
            whole_results: true,
            ..RowSink::new(sender)
        }
    }

    pub(super) fn takes_whole_results(&self) -> bool {
        self.whole_results
    }

    pub(super) fn push(&mut self, result: PgResult) {
        if self.sender.is_some() {
            self.batch_rows += result.ntuples().max(1);
            self.batch.push(result);
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.batch_rows >= STREAM_BATCH_ROWS
    }

    pub(super) fn take_batch(&mut self) -> Vec<PgResult> {
        self.batch_rows = 0;
        std::mem::take(&mut self.batch)
    }

    /// Hands the batch over if the channel has room. Returns `Pending` only when a full batch
    /// has to wait (the channel's waker is registered then).
    pub(super) fn poll_deliver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        use futures_sink::Sink;
        let Some(sender) = self.sender.as_mut() else {
            return Poll::Ready(());
        };
        if self.batch.is_empty() {
            return Poll::Ready(());
        }
        match Pin::new(&mut *sender).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.batch_rows = 0;
                let batch = std::mem::take(&mut self.batch);
                if Pin::new(&mut *sender).start_send(batch).is_err() {
                    self.sender = None;
                }
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                // The stream was dropped.
                self.sender = None;
                self.take_batch();
                Poll::Ready(())
            }
            Poll::Pending if self.is_full() => Poll::Pending,
            Poll::Pending => Poll::Ready(()),
        }
    }

    /// The query's results are complete: the last rows go without waiting (a fresh clone of
    /// the sender has a slot of its own in the channel), then the channel closes.
    pub(super) fn finish(mut self) {
        if let Some(sender) = self.sender.take() {
            if !self.batch.is_empty() {
                let _ = sender.clone().try_send(std::mem::take(&mut self.batch));
            }
        }
    }
}
