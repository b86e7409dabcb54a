//! The connection task's COPY states: client chunks to libpq for COPY FROM STDIN, libpq's data
//! to the client's stream for COPY TO STDOUT, and COPYs nobody asked for ended unread (through
//! `copy_discard`, shared with the blocking client).

use std::ffi::c_int;
use std::pin::Pin;
use std::task::{Context, Poll};

use foreign_types::ForeignType;
use pqlib_sys as ffi;
use tokio::sync::oneshot;

use super::{Driver, result_error};
use crate::copy_discard::{CopyDiscard, Discard, is_copy};
use crate::error::{Error, Result};
use crate::handle::PgResult;

/// COPY OUT rows already received are handed to the stream in chunks of about this size.
const COPY_OUT_BATCH: usize = 64 * 1024;

/// The largest piece of a `CopyInSink` chunk handed to libpq at once.
const COPY_IN_PIECE: usize = crate::copy::BUFFER_SIZE;

/// The abort message for a COPY that a later statement of a COPY's SQL text started.
const DISCARDED: &std::ffi::CStr =
    c"COPY aborted by the client: only the first COPY of the SQL text is taken";

/// Where a COPY's data comes from or goes to.
pub(crate) enum CopyTarget {
    /// COPY FROM STDIN: chunks from the client's sink.
    In(futures_channel::mpsc::Receiver<CopyInMessage>),
    /// COPY TO STDOUT: chunks to the client's stream.
    Out(futures_channel::mpsc::Sender<Result<bytes::Bytes>>),
}
/// What a `CopyInSink` sends to the connection task.
pub(crate) enum CopyInMessage {
    Data(bytes::Bytes),
    /// The end of the data: the answer is the number of rows copied.
    Finish(oneshot::Sender<Result<u64>>),
}

/// The connection task's side of a COPY in progress.
pub(super) enum CopyState {
    /// Sending the client's chunks; `pending` could not be queued yet.
    In {
        data: futures_channel::mpsc::Receiver<CopyInMessage>,
        pending: Option<bytes::Bytes>,
        error: Option<Error>,
        copies_left: usize,
    },
    /// `PQputCopyEnd` is to be sent (`Err` message: abort) and then the final result read.
    Ending {
        abort: Option<&'static std::ffi::CStr>,
        sent: bool,
        reply: Option<oneshot::Sender<Result<u64>>>,
        rows: Option<u64>,
        error: Option<Error>,
        copies_left: usize,
    },
    /// Receiving data for the client's stream (`None`: nobody listens; discard).
    Out {
        sink: Option<futures_channel::mpsc::Sender<Result<bytes::Bytes>>>,
        copies_left: usize,
        /// The stream's channel was full at the last look: the socket is left unread until
        /// the consumer takes a chunk (which wakes the task), so a paused consumer holds the
        /// server back instead of libpq's input buffer growing with everything it sends.
        consumer_behind: bool,
    },
    /// The COPY OUT is over: its last stream item (the error, or the empty end marker) waits
    /// for room in the channel.
    OutDelivering {
        sink: Option<futures_channel::mpsc::Sender<Result<bytes::Bytes>>>,
        last: Option<Result<bytes::Bytes>>,
    },
    /// COPY OUT data is over: reading the final result for the stream.
    OutEnding {
        sink: Option<futures_channel::mpsc::Sender<Result<bytes::Bytes>>>,
        error: Option<Error>,
        copies_left: usize,
    },
    /// A later statement of the same SQL text started another COPY: it is ended (see
    /// `copy_discard`), then `then` goes on reading the results.
    Discarding {
        discard: CopyDiscard,
        then: Box<CopyState>,
    },
}

impl CopyState {
    /// Whether the socket is to be left unread: a COPY OUT whose consumer is behind.
    pub(super) fn holds_reading_back(&self) -> bool {
        matches!(
            self,
            CopyState::Out {
                consumer_behind: true,
                ..
            }
        )
    }

    /// The state's name, for `Debug`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            CopyState::In { .. } => "In",
            CopyState::Ending { .. } => "Ending",
            CopyState::Out { .. } => "Out",
            CopyState::OutDelivering { .. } => "OutDelivering",
            CopyState::OutEnding { .. } => "OutEnding",
            CopyState::Discarding { .. } => "Discarding",
        }
    }

    /// Records that a later statement started a COPY of its own, which is being discarded:
    /// the answer becomes an error (if it is not one already). Returns how many more COPYs
    /// the request's text allows, or `None` if it allows no more.
    fn another_copy(&mut self) -> Option<usize> {
        let (error, copies_left) = match self {
            CopyState::Ending {
                error, copies_left, ..
            }
            | CopyState::OutEnding {
                error, copies_left, ..
            } => (error, copies_left),
            _ => return None,
        };
        *copies_left = copies_left.checked_sub(1)?;
        error.get_or_insert_with(|| {
            Error::bad_input(
                "a later statement in the COPY's SQL text started another COPY (it was aborted \
                 or its data discarded)",
            )
        });
        Some(*copies_left)
    }
}

impl Driver {
    /// The front request's statement started a COPY (`status`): hand the data side to the
    /// caller that asked for it, or end it unread. Only requests sent alone with the simple
    /// protocol (batch_execute, copy_in, copy_out) may start one.
    pub(super) fn start_copy(&mut self, status: ffi::ExecStatusType) -> Result<()> {
        let Some(front) = self.in_flight.front_mut() else {
            return Ok(());
        };
        if front.sync {
            // The server ignores Syncs during a COPY IN and libpq adds one when it ends, so
            // nothing after this could be matched to its request any more. Statements are
            // checked for COPY before they are sent; this is a server out of step with us.
            return Err(Error::closed(
                "a statement started a COPY inside the pipeline; the connection was closed \
                 because its protocol state can no longer be trusted",
            ));
        }
        let Some(copies_left) = front.copies_left.checked_sub(1) else {
            return Err(Error::closed(
                "the server started more COPYs than the SQL text has statements",
            ));
        };
        let target = front.copy.take();
        let Some(done) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let copy_in = status == ffi::ExecStatusType::PGRES_COPY_IN;
        let (answer, state) = match target {
            Some(CopyTarget::In(data)) if copy_in => (
                Ok(Vec::new()),
                CopyState::In {
                    data,
                    pending: None,
                    error: None,
                    copies_left,
                },
            ),
            Some(CopyTarget::Out(sink)) if !copy_in => (
                Ok(Vec::new()),
                CopyState::Out {
                    sink: Some(sink),
                    copies_left,
                    consumer_behind: false,
                },
            ),
            // Nobody asked for this COPY: abort it, or read and discard its data.
            _ if copy_in => (
                Err(copy_refused("COPY FROM STDIN", "copy_in")),
                CopyState::Ending {
                    abort: Some(c"COPY FROM STDIN is not supported through this call"),
                    sent: false,
                    reply: None,
                    rows: None,
                    error: None,
                    copies_left,
                },
            ),
            _ => (
                Err(copy_refused("COPY TO STDOUT", "copy_out")),
                CopyState::Out {
                    sink: None,
                    copies_left,
                    consumer_behind: false,
                },
            ),
        };
        let _ = done.reply.send(answer);
        self.copy = Some(state);
        Ok(())
    }

    /// Moves a COPY along: client chunks to libpq, libpq's chunks to the client, and the
    /// final result. Returns whether anything happened.
    pub(super) fn poll_copy(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        use futures_core::Stream;
        use futures_sink::Sink;
        let ptr = self.conn.as_ptr();
        let mut progress = false;
        loop {
            // COPY IN data goes to libpq only once it has sent what it holds: its buffer
            // stays bounded, and a full socket is waited for once instead of being retried
            // by every PQputCopyData.
            if self.needs_flush && matches!(self.copy, Some(CopyState::In { .. })) {
                match self.poll_flush(cx) {
                    Poll::Pending => return Ok(progress),
                    Poll::Ready(flushed) => {
                        flushed?;
                        progress = true;
                    }
                }
            }
            let Some(state) = self.copy.as_mut() else {
                return Ok(progress);
            };
            match state {
                CopyState::In {
                    data,
                    pending,
                    error,
                    copies_left,
                } => {
                    if let Some(mut chunk) = pending.take() {
                        // libpq takes at most c_int::MAX bytes a call, and copies each piece
                        // into its buffer: hand big chunks over in pieces, never truncated.
                        let piece = chunk.len().min(COPY_IN_PIECE);
                        // SAFETY: the connection is alive and in COPY IN; `chunk` has `piece`
                        // (which fits in c_int) readable bytes for the call; libpq copies them.
                        let sent = unsafe {
                            ffi::PQputCopyData(ptr, chunk.as_ptr().cast(), piece as c_int)
                        };
                        match sent {
                            1 => {
                                if piece < chunk.len() {
                                    *pending = Some(chunk.split_off(piece));
                                }
                                self.needs_flush = true;
                                progress = true;
                                continue;
                            }
                            0 => {
                                // libpq's buffer is full: flush first, then try again.
                                *pending = Some(chunk);
                                self.needs_flush = true;
                                return Ok(progress);
                            }
                            _ => {
                                error.get_or_insert_with(|| {
                                    Error::client(self.conn.error_message())
                                });
                            }
                        }
                    }
                    match Pin::new(&mut *data).poll_next(cx) {
                        Poll::Pending => return Ok(progress),
                        Poll::Ready(Some(CopyInMessage::Data(chunk))) => {
                            if error.is_none() {
                                *pending = Some(chunk);
                            }
                            progress = true;
                        }
                        Poll::Ready(Some(CopyInMessage::Finish(reply))) => {
                            let error = error.take();
                            self.copy = Some(CopyState::Ending {
                                abort: error
                                    .as_ref()
                                    .map(|_| c"the client failed to send COPY data"),
                                sent: false,
                                reply: Some(reply),
                                rows: None,
                                error,
                                copies_left: *copies_left,
                            });
                            progress = true;
                        }
                        Poll::Ready(None) => {
                            // The sink was dropped without finish: abort the COPY.
                            self.copy = Some(CopyState::Ending {
                                abort: Some(
                                    c"COPY aborted by the client: the CopyInSink was dropped",
                                ),
                                sent: false,
                                reply: None,
                                rows: None,
                                error: None,
                                copies_left: *copies_left,
                            });
                            progress = true;
                        }
                    }
                }
                CopyState::Ending {
                    abort,
                    sent,
                    reply,
                    rows,
                    error,
                    ..
                } => {
                    if !*sent {
                        let message = abort.map_or(std::ptr::null(), |m| m.as_ptr());
                        // SAFETY: the connection is alive and in COPY IN; the message is NULL
                        // (success) or a static NUL-terminated string.
                        match unsafe { ffi::PQputCopyEnd(ptr, message) } {
                            1 => {
                                *sent = true;
                                self.needs_flush = true;
                                progress = true;
                            }
                            0 => {
                                self.needs_flush = true;
                                return Ok(progress);
                            }
                            // libpq already left the COPY (the server ended it: an error,
                            // a cancel); its result follows.
                            // SAFETY: the connection is alive.
                            _ if unsafe { ffi::PQstatus(ptr) }
                                == ffi::ConnStatusType::CONNECTION_OK =>
                            {
                                *sent = true;
                            }
                            _ => return Err(self.connection_error()),
                        }
                    }
                    // SAFETY: the connection is alive; PQisBusy only parses buffered input.
                    if unsafe { ffi::PQisBusy(ptr) } != 0 {
                        return Ok(progress);
                    }
                    // SAFETY: not busy, so this returns at once; the result is owned below.
                    match PgResult::from_returned(unsafe { ffi::PQgetResult(ptr) }) {
                        Some(result) if is_copy(result.status()) => {
                            self.discard_another_copy(result.status())?;
                            progress = true;
                        }
                        Some(result) => {
                            if result.status() == ffi::ExecStatusType::PGRES_COMMAND_OK {
                                rows.get_or_insert(result.rows_affected());
                            } else if error.is_none() {
                                *error = Some(result_error(&result));
                            }
                            progress = true;
                        }
                        None => {
                            let answer = match (error.take(), *rows) {
                                (Some(e), _) => Err(e),
                                (None, Some(rows)) => Ok(rows),
                                (None, None) => Err(Error::client("COPY ended without a result")),
                            };
                            if let Some(reply) = reply.take() {
                                let _ = reply.send(answer);
                            }
                            self.copy = None;
                            return Ok(true);
                        }
                    }
                }
                CopyState::Out {
                    sink,
                    copies_left,
                    consumer_behind,
                } => {
                    *consumer_behind = false;
                    if let Some(s) = sink.as_mut() {
                        match Pin::new(&mut *s).poll_ready(cx) {
                            Poll::Pending => {
                                *consumer_behind = true;
                                return Ok(progress);
                            }
                            Poll::Ready(Ok(())) => {}
                            // The stream was dropped: keep reading, discard the data.
                            Poll::Ready(Err(_)) => *sink = None,
                        }
                    }
                    // Rows come one per libpq buffer; gather what is already here into one
                    // chunk, so the stream pays per 64 KiB rather than per row.
                    let mut batch = bytes::BytesMut::new();
                    let mut ended = false;
                    loop {
                        let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
                        // SAFETY: the connection is alive and in COPY OUT; async = 1 never
                        // waits. A returned buffer is freed by PqBuffer.
                        let n = unsafe { ffi::PQgetCopyData(ptr, &mut buffer, 1) };
                        // SAFETY: `buffer` is NULL or libpq memory holding `n` bytes.
                        let chunk = unsafe {
                            crate::handle::PqBuffer::from_raw(
                                buffer,
                                usize::try_from(n).unwrap_or(0),
                            )
                        };
                        match n {
                            0 => break,
                            -1 => {
                                ended = true;
                                break;
                            }
                            n if n > 0 => {
                                if let Some(chunk) = chunk {
                                    batch.extend_from_slice(chunk.as_bytes());
                                }
                                if batch.len() >= COPY_OUT_BATCH {
                                    break;
                                }
                            }
                            _ => return Err(self.connection_error()),
                        }
                    }
                    let got_data = !batch.is_empty();
                    if got_data {
                        if let Some(s) = sink.as_mut() {
                            if Pin::new(&mut *s).start_send(Ok(batch.freeze())).is_err() {
                                *sink = None;
                            }
                        }
                        progress = true;
                    }
                    if ended {
                        let sink = sink.take();
                        self.copy = Some(CopyState::OutEnding {
                            sink,
                            error: None,
                            copies_left: *copies_left,
                        });
                        progress = true;
                    } else if !got_data {
                        return Ok(progress);
                    }
                }
                CopyState::OutDelivering { sink, last } => {
                    if let Some(s) = sink.as_mut() {
                        match Pin::new(&mut *s).poll_ready(cx) {
                            Poll::Pending => return Ok(progress),
                            Poll::Ready(Ok(())) => {
                                if let Some(item) = last.take() {
                                    let _ = Pin::new(&mut *s).start_send(item);
                                }
                            }
                            Poll::Ready(Err(_)) => {}
                        }
                    }
                    self.copy = None;
                    return Ok(true);
                }
                CopyState::OutEnding { sink, error, .. } => {
                    // SAFETY: the connection is alive; PQisBusy only parses buffered input.
                    if unsafe { ffi::PQisBusy(ptr) } != 0 {
                        return Ok(progress);
                    }
                    // SAFETY: not busy, so this returns at once; the result is owned below.
                    match PgResult::from_returned(unsafe { ffi::PQgetResult(ptr) }) {
                        Some(result) if is_copy(result.status()) => {
                            self.discard_another_copy(result.status())?;
                            progress = true;
                        }
                        Some(result) => {
                            if result.status() != ffi::ExecStatusType::PGRES_COMMAND_OK
                                && error.is_none()
                            {
                                *error = Some(result_error(&result));
                            }
                            progress = true;
                        }
                        None => {
                            // The stream's last item: the error that ended the COPY, or the
                            // empty chunk that marks a complete one. Delivered with room in
                            // the channel; a stream that never sees either reports the loss.
                            let last = error.take().map_or(Ok(bytes::Bytes::new()), Err);
                            let sink = sink.take();
                            self.copy = Some(CopyState::OutDelivering {
                                sink,
                                last: Some(last),
                            });
                            progress = true;
                        }
                    }
                }
                CopyState::Discarding { discard, .. } => {
                    // SAFETY: the connection is alive, ours, and in the COPY the discard
                    // was made for.
                    match unsafe { discard.step(ptr, DISCARDED) } {
                        Discard::Done => {
                            if let Some(CopyState::Discarding { then, .. }) = self.copy.take() {
                                self.copy = Some(*then);
                            }
                            self.needs_flush = true;
                            progress = true;
                        }
                        Discard::NeedsFlush => {
                            self.needs_flush = true;
                            return Ok(progress);
                        }
                        // Woken by the readable socket, which `drive` reads.
                        Discard::NeedsInput => return Ok(progress),
                        Discard::Failed => return Err(self.connection_error().into_closed()),
                    }
                }
            }
        }
    }

    /// While a COPY's results are read, a later statement of its SQL text started another
    /// COPY: end that one first, then go on reading.
    fn discard_another_copy(&mut self, status: ffi::ExecStatusType) -> Result<()> {
        let Some(mut state) = self.copy.take() else {
            return Ok(());
        };
        if state.another_copy().is_none() {
            return Err(Error::closed(
                "the server started more COPYs than the SQL text has statements",
            ));
        }
        self.copy = Some(CopyState::Discarding {
            discard: CopyDiscard::new(status),
            then: Box::new(state),
        });
        Ok(())
    }
}

fn copy_refused(what: &str, method: &str) -> Error {
    Error::bad_input(format!(
        "the statement started a {what}; use {method} for it"
    ))
}
