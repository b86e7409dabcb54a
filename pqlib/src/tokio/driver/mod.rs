//! The connection task: the one owner of the `PGconn`, in non-blocking pipeline mode.
//!
//! Clients send requests through a channel; the task queues each on libpq followed by its own
//! sync point (so one caller's error never aborts another's statement), flushes when the
//! socket is writable, and hands results back in order when it is readable. Statements from
//! many tasks therefore share round trips without waiting for each other. A request whose
//! caller has gone away (its future dropped) is still read to the end, so the protocol state
//! never depends on what callers do.

use std::collections::VecDeque;
use std::ffi::{CString, c_int};
use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use foreign_types::ForeignType;
use pqlib_sys as ffi;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::copy_discard::max_copies;
use crate::encoding::EncodingCheck;
use crate::error::{DbError, Error, ErrorKind, Result, Severity};
use crate::handle::{PgConn, PgResult};
use crate::notice::{NoticeCallback, NoticeState};
use crate::notify::Notification;
use crate::params::EncodedParams;
use crate::statement::Statement;
use crate::types::Oid;

mod close;
mod copy;
mod rows;

use copy::CopyState;
pub(crate) use copy::{CopyInMessage, CopyTarget};
pub(crate) use rows::RowSender;
use rows::RowSink;

/// How many rounds of sending, flushing and reading one poll may do before it yields, so that
/// a large result streaming in cannot starve the other tasks of a single-threaded runtime
/// (each read takes what the socket has, which can be megabytes).
const POLL_BUDGET: usize = 2;
/// Something the server sent that is not the answer to a request.
#[derive(Debug)]
#[non_exhaustive]
// Messages are rare and short-lived; the unboxed notice keeps tokio_postgres' shape.
#[allow(clippy::large_enum_variant)]
pub enum AsyncMessage {
    /// A notice or warning (`RAISE NOTICE`, …), including those sent while the session
    /// started. Not returned when the config has a
    /// [`notice_callback`](crate::Config::notice_callback): it gets them instead.
    Notice(DbError),
    /// A notification from `NOTIFY` on a channel this connection `LISTEN`s to.
    Notification(Notification),
}

/// What a request asks libpq to send.
pub(crate) enum Work {
    /// `PQsendQueryPrepared`. The statement handle (an `Arc`) rather than a copy of its name.
    Execute {
        statement: Statement,
        params: EncodedParams,
    },
    /// Several statements in one sync segment ([`Client::pipeline`]): one implicit
    /// transaction, answered with one result per statement or the first error. With
    /// `results`, the statements' results go there as they arrive (`Pipeline::stream`) and
    /// the answer carries none.
    ///
    /// [`Client::pipeline`]: super::Client::pipeline
    Batch {
        items: Vec<(Target, EncodedParams)>,
        results: Option<RowSender>,
    },
    /// `PQsendQueryParams`, with the parameter types (if any) in `params`.
    ExecuteTyped { sql: CString, params: EncodedParams },
    /// `PQsendPrepare` then `PQsendDescribePrepared`; with an empty name, a describe of the
    /// unnamed statement (see [`PreparePolicy`](crate::PreparePolicy)).
    Prepare {
        name: CString,
        sql: CString,
        types: Vec<Oid>,
    },
    /// The simple query protocol (`PQsendQuery`), which needs the pipeline paused.
    Simple { sql: CString },
    /// `PQsendQueryPrepared` in libpq's chunked-rows (17+) or single-row mode: the rows go
    /// to `rows` as they arrive, the final result (or error) to the request's reply. Sent
    /// only with nothing else in flight, because libpq sets the mode on the oldest query.
    Stream {
        target: Target,
        params: EncodedParams,
        rows: RowSender,
    },
    /// A `COPY` statement, also outside pipeline mode (libpq allows no COPY in it); once the
    /// server is in COPY mode the data flows through `target`.
    Copy { sql: CString, target: CopyTarget },
    /// `PQsendClosePrepared`: the protocol's Close of a statement whose last handle was
    /// dropped (or that the cache evicted). Answered with one `PGRES_COMMAND_OK` result (also
    /// for a name the server no longer has), which nobody waits for.
    #[cfg(libpq_17)]
    ClosePrepared { name: CString },
    /// `DEALLOCATE name` (libpq before 17 has no Close call) for a statement whose last
    /// handle was dropped. Refused in a failed transaction: then the name goes back to
    /// `retry` (the client's list of statements to close), to go out again with the
    /// client's next request, until the transaction has ended.
    #[cfg(not(libpq_17))]
    Deallocate {
        sql: CString,
        name: CString,
        retry: Arc<Mutex<Vec<CString>>>,
    },
    /// End the session ([`Client::close`]): once everything queued before it is answered,
    /// report whether the session can end cleanly, refuse what comes after, and finish.
    ///
    /// [`Client::close`]: super::Client::close
    Close,
}
/// What a statement of a batch or stream runs as.
pub(crate) enum Target {
    /// A named statement (`PQsendQueryPrepared`).
    Prepared(Statement),
    /// SQL text as the unnamed statement (`PQsendQueryParams`), its parameters encoded with
    /// their types: Parse, Bind and Execute in the request's own sync segment.
    Unnamed(CString),
}

impl Target {
    /// Queues the statement with `params`; whether libpq took it.
    ///
    /// # Safety
    /// `conn` is a live connection owned by the caller, in pipeline mode or idle.
    unsafe fn send(&self, conn: *mut ffi::PGconn, params: &EncodedParams) -> bool {
        // SAFETY: the caller vouches for `conn`; the name or SQL is NUL-terminated.
        unsafe {
            match self {
                Target::Prepared(statement) => params.send_prepared(conn, statement.c_name()),
                Target::Unnamed(sql) => params.send_params(conn, sql),
            }
        }
    }
}

/// The successful results of a request (NULL separators and sync points left out), or the
/// first error.
pub(crate) type Reply = Result<Vec<PgResult>>;

pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) reply: oneshot::Sender<Reply>,
    /// Runs even though nobody waits for the answer (a rollback from a dropped transaction,
    /// a deallocation).
    pub(crate) detached: bool,
    /// Set by this task once the request has succeeded (a `BEGIN` or `SAVEPOINT` whose
    /// caller may give up before the answer).
    pub(crate) succeeded: Option<Arc<AtomicBool>>,
    /// Run only if this flag (another request's `succeeded`) is set when the request's turn
    /// comes; otherwise answered with an error unsent. Only simple-protocol requests may
    /// carry it: they wait until everything queued before them has been answered, so an
    /// earlier request's outcome is known by then.
    pub(crate) only_if: Option<Arc<AtomicBool>>,
}

/// A request on the wire, waiting for its results.
struct InFlight {
    reply: oneshot::Sender<Reply>,
    results: Vec<PgResult>,
    error: Option<Error>,
    /// NULL results still to come: one after each operation's results.
    nulls_left: usize,
    /// Whether a sync point ends it (pipelined requests) or its last NULL does (simple ones).
    sync: bool,
    /// For a COPY request: where its data goes once the server is in COPY mode.
    copy: Option<CopyTarget>,
    /// For a streamed query: where its rows go.
    rows: Option<RowSink>,
    /// How many COPYs its SQL text may start (`copy_discard::max_copies`): none for
    /// pipelined requests, where a COPY closes the connection.
    copies_left: usize,
    /// Set once the request has succeeded ([`Request::succeeded`]).
    succeeded: Option<Arc<AtomicBool>>,
    /// For a [`Work::Deallocate`]: where its name goes back if a failed transaction refused it.
    #[cfg(not(libpq_17))]
    retry: Option<(CString, Arc<Mutex<Vec<CString>>>)>,
}

/// A duplicate of the connection's socket, for tokio's reactor: readiness is the same (one
/// socket, two descriptors), and the registration's descriptor is ours to close.
pub(crate) struct Socket(OwnedFd);

impl Socket {
    pub(crate) fn duplicate(fd: RawFd) -> std::io::Result<Socket> {
        // SAFETY: `fd` is libpq's open socket, borrowed for this call only.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned().map(Socket)
    }

    /// Registers a duplicate of libpq's socket `fd` with the current runtime's reactor.
    /// Several registrations of one socket (through different duplicates) can coexist, each
    /// with its own interest.
    pub(crate) fn register(fd: RawFd, interest: Interest) -> std::io::Result<AsyncFd<Socket>> {
        let socket = Socket::duplicate(fd)
            .map_err(|e| std::io::Error::new(e.kind(), format!("duplicating the socket: {e}")))?;
        // SAFETY: the descriptor is `socket`'s own (a dup), open until the AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| {
            let e = e.into_parts().1;
            std::io::Error::new(e.kind(), format!("registering the socket: {e}"))
        })
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The connection's state, shared (under one lock) by the [`Connection`] task and the clients
/// that drive it themselves while they wait for an answer.
pub(crate) struct Driver {
    /// Registered for reading only. Declared (so dropped) before `conn`: deregistered while
    /// libpq's socket is still open.
    socket: AsyncFd<Socket>,
    /// Registered for writing, only while libpq holds output that a full socket did not take.
    /// A standing write registration would make the server's every read of a request an
    /// edge that wakes the reactor (epoll reports writability again): on a round trip, one
    /// more `epoll_wait` and, with client and server on one CPU, two more context switches.
    writer: Option<AsyncFd<Socket>>,
    conn: PgConn,
    requests: mpsc::UnboundedReceiver<Request>,
    /// A request taken from the channel that has to wait for the pipeline to drain.
    held: Option<Request>,
    in_flight: VecDeque<InFlight>,
    in_pipeline: bool,
    copy: Option<CopyState>,
    needs_flush: bool,
    clients_gone: bool,
    messages: VecDeque<AsyncMessage>,
    notices: Arc<Mutex<VecDeque<DbError>>>,
    _notice_state: Arc<NoticeState>,
    /// The config's notice callback: called with each notice instead of returning it.
    notice_callback: Option<NoticeCallback>,
    failed: bool,
    /// The error that ended the connection, until `poll_message` has returned it.
    final_error: Option<Error>,
    /// The client encodings that keep text intact (UTF8, SQL_ASCII).
    encoding: EncodingCheck,
    wakers: Wakers,
    /// Set while a client drives: notices and notifications are left for the task, which is
    /// woken to hand them out (a notice callback runs only there).
    for_caller: bool,
    /// Something for the task to hand out arrived while a client drove.
    wake_task: bool,
    /// Requests sent from clients' tasks wait for the task's flush (see `send_direct`).
    flush_by_task: bool,
    /// The task's last look at the request channel left its waker there: a request sent
    /// now wakes it. Clients never poll the channel (a client's waker left there would take
    /// the wake-up from the task once that client stops waiting).
    task_listening: bool,
    /// Set while a client drives with its own waker alone (see `poll_for_client`).
    driving_alone: bool,
    /// The last request sent from a client's task found nothing else in flight (see
    /// `send_direct`).
    alone_before: bool,
    /// The task's poll has yielded once to let callers add to a flush left to it.
    flush_yielded: bool,
}

impl Driver {
    pub(crate) fn new(
        conn: PgConn,
        socket: AsyncFd<Socket>,
        requests: mpsc::UnboundedReceiver<Request>,
        notice_state: Arc<NoticeState>,
        notices: Arc<Mutex<VecDeque<DbError>>>,
        notice_callback: Option<NoticeCallback>,
    ) -> Result<Driver> {
        let ptr = conn.as_ptr();
        // SAFETY: the connection is alive, connected and idle; this task is its only user.
        let ok =
            unsafe { ffi::PQsetnonblocking(ptr, 1) == 0 && ffi::PQenterPipelineMode(ptr) == 1 };
        if !ok {
            return Err(Error::connect(conn.error_message()));
        }
        if conn.parameter_status(c"client_encoding").as_deref() != Some("UTF8") {
            return Err(Error::connect("the session's client_encoding is not UTF8"));
        }
        let encoding = EncodingCheck::new(&conn);
        Ok(Driver {
            socket,
            writer: None,
            conn,
            requests,
            held: None,
            in_flight: VecDeque::new(),
            in_pipeline: true,
            copy: None,
            needs_flush: false,
            clients_gone: false,
            messages: VecDeque::new(),
            notices,
            _notice_state: notice_state,
            notice_callback,
            failed: false,
            final_error: None,
            encoding,
            wakers: Wakers::default(),
            for_caller: false,
            wake_task: false,
            flush_by_task: false,
            task_listening: false,
            driving_alone: false,
            alone_before: false,
            flush_yielded: false,
        })
    }

    /// The task's poll: drives the connection and returns the next notice or notification.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage>>> {
        self.wakers.set_task(cx.waker());
        // Requests left for this task's flush: the answers that woke their callers often woke
        // this task too (both registered for the socket), ahead of the callers not yet run.
        // Yielding once lets those send first, and all their requests go out in one write
        // (W7b: one write per wave of answers instead of two).
        if self.flush_by_task && !std::mem::replace(&mut self.flush_yielded, true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.flush_yielded = false;
        self.wake_task = false;
        self.flush_by_task = false;
        // Notices sent while the session started (and any left over) come first, even while
        // nothing else happens on the connection.
        self.take_notices();
        let driven = self.poll_drive(cx);
        if let Some(message) = self.messages.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        if let Some(e) = self.final_error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match driven {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A client's poll while it waits for an answer: drives the connection like the task
    /// does, and wakes the task if it has something to hand out or requests to take.
    ///
    /// Whom the socket wakes: when this client's request is all there is (nothing else in
    /// flight, held, queued for the task or to hand out), the client alone, and the
    /// registration goes back to the task when the client stops waiting
    /// ([`Driving::withdraw`]): a round trip then wakes one task, not two. Otherwise the task
    /// and the client both, so that neither can miss what the other left to read.
    fn poll_for_client(&mut self, cx: &mut Context<'_>) {
        self.wakers.set_client(cx.waker());
        self.for_caller = true;
        self.driving_alone = self.wakers.task.is_some() && self.lone_request();
        let _ = self.poll_drive(cx);
        self.for_caller = false;
        self.driving_alone = false;
        // Requests queued while the task was not listening (it held one back, or a COPY ran)
        // would wait for a wake-up nobody sends.
        let channel_unwatched = !self.task_listening
            && self.held.is_none()
            && self.copy.is_none()
            && !self.clients_gone
            && !self.failed;
        if self.wake_task
            || channel_unwatched
            || !self.messages.is_empty()
            || self.final_error.is_some()
        {
            self.wake_task = false;
            self.wakers.wake_task();
        }
    }

    /// At most one request is in flight and it is not a stream, and nothing is held back,
    /// copied, left for the task to flush or to hand out: its caller can be the only one the
    /// socket wakes.
    fn lone_request(&self) -> bool {
        self.in_flight.len() <= 1
            && self.in_flight.front().is_none_or(|f| f.rows.is_none())
            && self.held.is_none()
            && self.copy.is_none()
            && !self.flush_by_task
            && self.messages.is_empty()
    }

    /// A client stops waiting (answered, or its future dropped). If the socket's read
    /// registration holds its waker alone, the task gets it back: quietly when nothing is
    /// left to read or send (a new registration reports readiness that is already there),
    /// otherwise by waking the task, whose poll registers it.
    fn withdraw_client(&mut self, waker: &Waker) {
        if !self.wakers.clear_client(waker) || !std::mem::take(&mut self.wakers.alone) {
            return;
        }
        let Some(task) = self.wakers.task.clone() else {
            return;
        };
        let idle = self.in_flight.is_empty()
            && !self.needs_flush
            && self.held.is_none()
            && self.copy.is_none()
            && self.messages.is_empty()
            && self.final_error.is_none()
            && !self.failed;
        if idle
            && self
                .socket
                .poll_read_ready(&mut Context::from_waker(&task))
                .is_pending()
        {
            return;
        }
        task.wake_by_ref();
    }

    /// Sends a pipelined request right away, from the client's own task, if nothing queued or
    /// held is ahead of it and nothing needs the pipeline changed; otherwise hands it back
    /// (`Some`), to go through the task's queue.
    pub(crate) fn send_direct(&mut self, request: Request) -> Option<Request> {
        let pipelined = matches!(
            request.work,
            Work::Execute { .. }
                | Work::ExecuteTyped { .. }
                | Work::Prepare { .. }
                | Work::Batch { .. }
        );
        if !pipelined
            || !self.in_pipeline
            || self.failed
            || self.held.is_some()
            || self.copy.is_some()
            || !self.requests.is_empty()
        {
            return Some(request);
        }
        if request.reply.is_closed() && !request.detached {
            return None;
        }
        // With others in flight, the flush is left to the task, which runs once the tasks
        // woken before it have had their turn: requests from several tasks then go out in one
        // write. Only with libpq 17+, whose PQsendPipelineSync queues the sync (before 17,
        // PQpipelineSync flushes every request), and not for a request on its own: there the
        // task's extra turn cost W1 ~1.4 µs a round trip (client CPU time, 560 ms against
        // 505 ms for 40,000).
        //
        // A request that finds nothing in flight is deferred too when the one before it had
        // company: under concurrency the answers come back together, the first woken caller
        // would otherwise send alone (one more write, one more wake-up of the server), and the
        // others a moment later (W7 with libpq 18: two writes per wave of answers instead of
        // one). A caller on its own keeps its direct write from the second request on.
        let company = !self.in_flight.is_empty() || !self.alone_before;
        let defer = cfg!(libpq_17) && company && self.wakers.task.is_some();
        self.alone_before = self.in_flight.is_empty();
        let sent = self.send(request).and_then(|()| {
            if defer {
                self.flush_by_task = true;
                self.wakers.wake_task();
                return Ok(());
            }
            // SAFETY: the connection is alive; in non-blocking mode PQflush never waits.
            match unsafe { ffi::PQflush(self.conn.as_ptr()) } {
                0 => self.needs_flush = false,
                // The rest goes out when the socket is writable: the waiter's next poll.
                1 => {}
                _ => return Err(self.connection_error()),
            }
            Ok(())
        });
        if let Err(e) = sent {
            self.fail_with(e);
            self.wakers.wake_task();
        }
        None
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.failed {
            return Poll::Ready(());
        }
        // The socket's readiness wakes whoever registered last (see `poll_for_client`).
        let drove = if self.driving_alone {
            self.drive(cx)
        } else {
            let waker = self.wakers.io_waker(cx.waker());
            self.drive(&mut Context::from_waker(&waker))
        };
        match drove {
            Poll::Ready(Err(e)) => {
                self.fail_with(e);
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Fails everything with `e`, which the task reports once the messages received before
    /// it are handed out (the connection's end must not be lost behind a last notice).
    fn fail_with(&mut self, e: Error) {
        self.fail(&e);
        self.final_error = Some(e);
    }

    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        for _ in 0..POLL_BUDGET {
            let mut progress = if self.copy.is_some() {
                self.poll_copy(cx)?
            } else {
                self.take_requests(cx)?
            };
            if self.needs_flush && !(self.for_caller && self.flush_by_task) {
                if let Poll::Ready(flushed) = self.poll_flush(cx) {
                    flushed?;
                    progress = true;
                }
            }
            // A consumer that is behind (a streamed query's full batch, a COPY OUT's full
            // channel) holds reading back: the server waits, not our memory.
            let mut consumer_behind = self
                .copy
                .as_ref()
                .is_some_and(CopyState::holds_reading_back);
            if let Some(sink) = self.in_flight.front_mut().and_then(|f| f.rows.as_mut()) {
                let was_full = sink.is_full();
                match sink.poll_deliver(cx) {
                    Poll::Pending => consumer_behind = true,
                    Poll::Ready(()) if was_full => {
                        // Results libpq already holds would wait for a readable socket that
                        // may never come: take them now.
                        self.take_results()?;
                        progress = true;
                    }
                    Poll::Ready(()) => {}
                }
            }
            // A task's poll while a lone request's caller holds the registration (any wake-up
            // of the task: CPU contention made them common) leaves it with that caller, who
            // hands it back when done (`withdraw_client`). Registering both would make the
            // answer wake the task too; on a current-thread runtime its poll then comes after
            // the caller's next request and registers both again: one task poll per round
            // trip from then on.
            let lone_caller = match (self.for_caller, &self.wakers.client) {
                (false, Some(client)) if self.wakers.alone && self.lone_request() => {
                    Some(client.clone())
                }
                _ => None,
            };
            let polled = if consumer_behind {
                // Woken by the consumer taking a batch or chunk (or by a new request).
                None
            } else if let Some(client) = &lone_caller {
                Some(
                    self.socket
                        .poll_read_ready(&mut Context::from_waker(client)),
                )
            } else {
                Some(self.socket.poll_read_ready(cx))
            };
            if let Some(Poll::Ready(ready)) = polled {
                let mut guard = ready.map_err(|e| Error::closed(format!("socket: {e}")))?;
                // SAFETY: the connection is alive; non-blocking, so this takes what is there.
                let consumed = unsafe { ffi::PQconsumeInput(self.conn.as_ptr()) } != 0;
                if !self.readable_now() {
                    // Drained: forget the readiness so the next poll waits for the reactor.
                    // Through the guard taken before the read: readiness from data that
                    // arrives after the check carries a newer tick and survives. (A guard
                    // taken now could carry that tick, and clearing it would lose the
                    // wakeup for data nobody reads: a hang.)
                    guard.clear_ready();
                }
                if !consumed {
                    return Poll::Ready(Err(self.connection_error()));
                }
                self.take_results()?;
                progress = true;
            } else if polled.is_some() {
                // Registered: note whether with a client's waker alone.
                self.wakers.alone = self.driving_alone || lone_caller.is_some();
            }
            if self.clients_gone
                && self.in_flight.is_empty()
                && self.held.is_none()
                && self.copy.is_none()
            {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then come back. A client hands the rest to the
        // task instead of waking itself: under `block_on` a self-wake costs a turn of the I/O
        // driver per budget (W6p, 1,000 answers read by the client: 1.8× C against 1.0–1.2×).
        if self.for_caller && self.wakers.task.is_some() {
            self.wakers.wake_task();
        } else {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Sends what clients asked for, as far as the pipeline allows: a held request, and (in
    /// the task's poll only) what the channel brings.
    fn take_requests(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let mut progress = false;
        loop {
            let request = match self.held.take() {
                Some(request) => request,
                None if self.clients_gone || self.for_caller => return Ok(progress),
                None => {
                    self.task_listening = false;
                    match self.requests.poll_recv(cx) {
                        Poll::Ready(Some(request)) => request,
                        Poll::Ready(None) => {
                            self.clients_gone = true;
                            return Ok(progress);
                        }
                        Poll::Pending => {
                            self.task_listening = true;
                            return Ok(progress);
                        }
                    }
                }
            };
            if request.reply.is_closed() && !request.detached {
                // The caller is gone and nothing was sent: nothing to do.
                continue;
            }
            if matches!(
                request.work,
                Work::Simple { .. } | Work::Copy { .. } | Work::Close
            ) {
                if !self.in_flight.is_empty() {
                    // The simple protocol needs pipeline mode off, which needs it drained.
                    self.held = Some(request);
                    return Ok(progress);
                }
                if let Some(flag) = &request.only_if {
                    // Everything before it has been answered: the flag is final.
                    if !flag.load(Ordering::Acquire) {
                        let _ = request.reply.send(Err(Error::client(
                            "not sent: the request it depended on did not succeed",
                        )));
                        continue;
                    }
                }
                if matches!(request.work, Work::Close) {
                    self.close_session(request.reply)?;
                    return Ok(true);
                }
                self.set_pipeline(false)?;
            } else if !self.in_pipeline || matches!(request.work, Work::Stream { .. }) {
                // Leaving simple mode needs the pipeline drained, and so does streaming (the
                // row mode applies to the oldest query in the pipeline).
                if !self.in_flight.is_empty() {
                    self.held = Some(request);
                    return Ok(progress);
                }
                self.set_pipeline(true)?;
            }
            self.send(request)?;
            progress = true;
        }
    }

    fn set_pipeline(&mut self, on: bool) -> Result<()> {
        if self.in_pipeline == on {
            return Ok(());
        }
        let ptr = self.conn.as_ptr();
        // SAFETY: the connection is alive and idle (nothing in flight).
        let ok = unsafe {
            if on {
                ffi::PQenterPipelineMode(ptr)
            } else {
                ffi::PQexitPipelineMode(ptr)
            }
        };
        if ok != 1 {
            return Err(self.connection_error());
        }
        self.in_pipeline = on;
        Ok(())
    }

    fn send(&mut self, request: Request) -> Result<()> {
        let ptr = self.conn.as_ptr();
        let Request {
            work,
            reply,
            succeeded,
            ..
        } = request;
        let mut copy = None;
        let mut rows = None;
        let mut error = None;
        let copies_left = match &work {
            Work::Simple { sql } | Work::Copy { sql, .. } => max_copies(&sql.to_string_lossy()),
            _ => 0,
        };
        let (sent, nulls, sync) = match &work {
            Work::Execute { statement, params } => {
                // SAFETY: the connection is alive, in pipeline mode and owned by this task.
                let ok = unsafe { params.send_prepared(ptr, statement.c_name()) };
                (ok, 1, true)
            }
            Work::Stream { target, params, .. } => {
                // SAFETY: as for Execute.
                let ok = unsafe { target.send(ptr, params) };
                // Must directly follow the send, with nothing else in flight.
                #[cfg(libpq_17)]
                // SAFETY: the connection is alive with this query just sent.
                let streaming =
                    unsafe { ffi::PQsetChunkedRowsMode(ptr, crate::STREAM_CHUNK_ROWS as c_int) };
                #[cfg(not(libpq_17))]
                // SAFETY: the connection is alive with this query just sent.
                let streaming = unsafe { ffi::PQsetSingleRowMode(ptr) };
                if ok && streaming != 1 {
                    // The query runs anyway; its rows are read and dropped.
                    error = Some(Error::client("libpq refused to stream this query's rows"));
                }
                (ok, 1, true)
            }
            Work::Batch { items, .. } => {
                let mut queued = 0;
                for (target, params) in items {
                    // SAFETY: as for Execute.
                    if !unsafe { target.send(ptr, params) } {
                        break;
                    }
                    queued += 1;
                }
                if queued > 0 && queued < items.len() {
                    // Part of the batch is on the wire without its sync: the stream is lost.
                    return Err(self.connection_error());
                }
                (queued == items.len(), items.len(), true)
            }
            Work::ExecuteTyped { sql, params } => {
                // SAFETY: as for Execute.
                let ok = unsafe { params.send_params(ptr, sql) };
                (ok, 1, true)
            }
            Work::Prepare { name, sql, types } => {
                let count = c_int::try_from(types.len()).unwrap_or(c_int::MAX);
                // SAFETY: the connection is alive; strings are NUL-terminated and `types`
                // has `count` entries, all alive for the calls.
                let ok = unsafe {
                    ffi::PQsendPrepare(ptr, name.as_ptr(), sql.as_ptr(), count, types.as_ptr()) == 1
                        && ffi::PQsendDescribePrepared(ptr, name.as_ptr()) == 1
                };
                (ok, 2, true)
            }
            #[cfg(libpq_17)]
            Work::ClosePrepared { name } => {
                // SAFETY: the connection is alive and in pipeline mode; `name` is
                // NUL-terminated and alive for the call.
                let ok = unsafe { ffi::PQsendClosePrepared(ptr, name.as_ptr()) };
                (ok == 1, 1, true)
            }
            #[cfg(not(libpq_17))]
            Work::Deallocate { sql, .. } => {
                // SAFETY: as for Execute.
                let ok = unsafe { EncodedParams::none().send_params(ptr, sql) };
                (ok, 1, true)
            }
            Work::Simple { sql } => {
                // SAFETY: the connection is alive, out of pipeline mode and idle.
                let ok = unsafe { ffi::PQsendQuery(ptr, sql.as_ptr()) };
                (ok == 1, 1, false)
            }
            Work::Copy { sql, .. } => {
                // SAFETY: as for Simple.
                let ok = unsafe { ffi::PQsendQuery(ptr, sql.as_ptr()) };
                (ok == 1, 1, false)
            }
            // Handled by `take_requests` before it gets here.
            Work::Close => {
                let _ = reply.send(Err(Error::client("close was not handled")));
                return Ok(());
            }
        };
        #[cfg(not(libpq_17))]
        let mut retry = None;
        match work {
            Work::Copy { target, .. } => copy = Some(target),
            #[cfg(not(libpq_17))]
            Work::Deallocate {
                name, retry: list, ..
            } => retry = Some((name, list)),
            Work::Stream { rows: sender, .. } if error.is_none() => {
                rows = Some(RowSink::new(sender));
            }
            Work::Batch {
                results: Some(sender),
                ..
            } => rows = Some(RowSink::for_batch(sender)),
            _ => {}
        }
        // Each pipelined request is its own sync segment: errors stay with their caller.
        let synced = !sync || self.send_sync();
        if !sent || !synced {
            let error = self.connection_error();
            if error.kind() == ErrorKind::Closed || sent {
                // Half a request on the wire (or none possible any more): the stream is lost.
                return Err(error);
            }
            let _ = reply.send(Err(error));
            return Ok(());
        }
        self.in_flight.push_back(InFlight {
            reply,
            results: Vec::new(),
            error,
            nulls_left: nulls,
            sync,
            copy,
            rows,
            copies_left,
            succeeded,
            #[cfg(not(libpq_17))]
            retry,
        });
        self.needs_flush = true;
        Ok(())
    }

    fn send_sync(&mut self) -> bool {
        let ptr = self.conn.as_ptr();
        // SAFETY: the connection is alive and in pipeline mode. PQsendPipelineSync (17+)
        // only queues; PQpipelineSync also tries to flush, which in non-blocking mode
        // never waits.
        #[cfg(libpq_17)]
        let ok = unsafe { ffi::PQsendPipelineSync(ptr) };
        #[cfg(not(libpq_17))]
        // SAFETY: as above.
        let ok = unsafe { ffi::PQpipelineSync(ptr) };
        ok == 1
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            // Without a write registration the socket had room last time: just write. With
            // one, the guard is taken before the write: libpq hides its EAGAIN, and clearing
            // readiness through a guard taken after it could clear an edge that arrived in
            // between (a hang). Readiness is only ever cleared after a full socket was seen,
            // so "not ready" here means a write would not get through.
            let mut guard = match self.writer.as_ref().map(|w| w.poll_write_ready(cx)) {
                None => None,
                Some(Poll::Ready(Ok(guard))) => Some(guard),
                Some(Poll::Ready(Err(e))) => {
                    return Poll::Ready(Err(Error::closed(format!("socket: {e}"))));
                }
                Some(Poll::Pending) => return Poll::Pending,
            };
            // SAFETY: the connection is alive; in non-blocking mode PQflush never waits.
            match unsafe { ffi::PQflush(self.conn.as_ptr()) } {
                0 => {
                    self.needs_flush = false;
                    self.writer = None;
                    return Poll::Ready(Ok(()));
                }
                // The socket was full: wait for the reactor's next writable edge.
                1 => match guard.as_mut() {
                    Some(guard) => guard.clear_ready(),
                    None => {
                        // Registering reports the socket's state at once, so room made
                        // since the write is not missed.
                        // SAFETY: the connection is alive.
                        let fd = unsafe { ffi::PQsocket(self.conn.as_ptr()) };
                        let writer = Socket::register(fd, Interest::WRITABLE)
                            .map_err(|e| Error::closed(format!("socket: {e}")))?;
                        self.writer = Some(writer);
                    }
                },
                _ => return Poll::Ready(Err(self.connection_error())),
            }
        }
    }

    /// Hands out every complete result libpq has parsed or can parse from what it has read,
    /// and the notices and notifications among them.
    fn take_results(&mut self) -> Result<()> {
        let ptr = self.conn.as_ptr();
        while let Some(front) = self.in_flight.front() {
            if front.rows.as_ref().is_some_and(RowSink::is_full) {
                // Handed over (or waited for) by `drive` before reading on.
                break;
            }
            // SAFETY: the connection is alive; PQisBusy only parses buffered input.
            if unsafe { ffi::PQisBusy(ptr) } != 0 {
                break;
            }
            // SAFETY: not busy, so PQgetResult returns without waiting; `on_result` owns
            // (or frees) what it returns.
            let result = unsafe { ffi::PQgetResult(ptr) };
            self.on_result(result)?;
        }
        // SAFETY: the connection is alive; each PGnotify is freed inside Notification's owner.
        while let Some(notification) = unsafe { Notification::take(ptr) } {
            self.messages
                .push_back(AsyncMessage::Notification(notification));
        }
        self.take_notices();
        if self.is_bad() {
            return Err(self.connection_error());
        }
        Ok(())
    }

    /// Hands the notices libpq's receiver queued to the config's callback, or queues them as
    /// messages.
    fn take_notices(&mut self) {
        let mut queue = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        if self.for_caller {
            self.wake_task |= !queue.is_empty();
            return;
        }
        let notices = std::mem::take(&mut *queue);
        drop(queue);
        match &self.notice_callback {
            // Called here, in Rust, not from libpq's receiver: a panic unwinds out of the
            // task's poll like any other.
            Some(callback) => notices.iter().for_each(|notice| callback.call(notice)),
            None => self
                .messages
                .extend(notices.into_iter().map(AsyncMessage::Notice)),
        }
    }

    fn on_result(&mut self, ptr: *mut ffi::PGresult) -> Result<()> {
        // A pipelined request's results are checked one by one (the next may be another
        // caller's); a simple-protocol request runs alone, so its text may switch the
        // encoding and back (`SET client_encoding TO 'LATIN1'; SET … 'UTF8'`) and is
        // checked once it is complete.
        let alone = self.in_flight.front().is_some_and(|f| !f.sync);
        if (!alone || ptr.is_null()) && self.encoding_changed() {
            drop(PgResult::from_returned(ptr));
            // Text goes both ways as UTF-8: everything from here on would be corrupted.
            return Err(Error::closed(
                "the session's client_encoding was changed to one that converts text (SET \
                 client_encoding); pqlib exchanges text as UTF-8 bytes, so the connection was \
                 closed",
            ));
        }
        let Some(front) = self.in_flight.front_mut() else {
            drop(PgResult::from_returned(ptr));
            return Ok(());
        };
        match PgResult::from_returned(ptr) {
            None => {
                front.nulls_left = front.nulls_left.saturating_sub(1);
                if front.nulls_left == 0 && !front.sync {
                    self.complete();
                }
            }
            Some(result) => match result.status() {
                ffi::ExecStatusType::PGRES_PIPELINE_SYNC => self.complete(),
                ffi::ExecStatusType::PGRES_SINGLE_TUPLE => {
                    if let Some(sink) = front.rows.as_mut() {
                        sink.push(result);
                    }
                }
                #[cfg(libpq_17)]
                ffi::ExecStatusType::PGRES_TUPLES_CHUNK => {
                    if let Some(sink) = front.rows.as_mut() {
                        sink.push(result);
                    }
                }
                ffi::ExecStatusType::PGRES_TUPLES_OK
                | ffi::ExecStatusType::PGRES_COMMAND_OK
                | ffi::ExecStatusType::PGRES_EMPTY_QUERY => match front.rows.as_mut() {
                    Some(sink) if sink.takes_whole_results() => sink.push(result),
                    _ => front.results.push(result),
                },
                ffi::ExecStatusType::PGRES_PIPELINE_ABORTED => {
                    front.error.get_or_insert_with(Error::pipeline_aborted);
                }
                ffi::ExecStatusType::PGRES_FATAL_ERROR
                | ffi::ExecStatusType::PGRES_NONFATAL_ERROR => {
                    let db = DbError::from_result(&result);
                    let fatal = matches!(
                        db.parsed_severity(),
                        Some(Severity::Fatal | Severity::Panic)
                    );
                    let error = if db.code().code().is_empty() {
                        Error::client(db.message().to_owned())
                    } else if fatal {
                        Error::db(db).into_closed()
                    } else {
                        Error::db(db)
                    };
                    let closed = error.kind() == ErrorKind::Closed;
                    front.error.get_or_insert(error);
                    if closed {
                        return Err(Error::closed("the server ended the session"));
                    }
                }
                status @ (ffi::ExecStatusType::PGRES_COPY_IN
                | ffi::ExecStatusType::PGRES_COPY_OUT) => {
                    // The task's drive reads no requests while the COPY runs.
                    self.task_listening = false;
                    self.start_copy(status)?;
                }
                other => {
                    front.error.get_or_insert_with(|| {
                        Error::client(format!("result status {} is not supported here", other.0))
                    });
                    if other == ffi::ExecStatusType::PGRES_COPY_BOTH {
                        return Err(Error::client("COPY BOTH (replication) is not supported"));
                    }
                }
            },
        }
        Ok(())
    }

    /// The front request has all its results: answer its caller (if still there).
    fn complete(&mut self) {
        if let Some(mut done) = self.in_flight.pop_front() {
            // The rows first: the stream reads the reply only after its channel has closed.
            if let Some(sink) = done.rows.take() {
                sink.finish();
            }
            #[cfg(not(libpq_17))]
            if let (Some(error), Some((name, list))) = (&done.error, done.retry.take()) {
                if error.code() == Some(&crate::error::SqlState::IN_FAILED_SQL_TRANSACTION) {
                    list.lock().unwrap_or_else(|p| p.into_inner()).push(name);
                }
            }
            let reply = match done.error {
                Some(error) => Err(error),
                None => {
                    if let Some(flag) = &done.succeeded {
                        flag.store(true, Ordering::Release);
                    }
                    Ok(done.results)
                }
            };
            let _ = done.reply.send(reply);
        }
    }

    /// Fails everything in flight or queued with `error`'s kind of message; nothing more
    /// will be sent on this connection.
    fn fail(&mut self, error: &Error) {
        self.failed = true;
        // Closed first, so that nothing new can be queued while the rest are answered.
        self.requests.close();
        let message = error.to_string();
        for request in self.in_flight.drain(..) {
            let _ = request.reply.send(Err(Error::closed(message.clone())));
        }
        if let Some(request) = self.held.take() {
            let _ = request.reply.send(Err(Error::closed(message.clone())));
        }
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(Error::closed(message.clone())));
        }
    }
    fn encoding_changed(&mut self) -> bool {
        // A ParameterStatus before the statement's result has told libpq.
        !self.encoding.is_intact(&self.conn)
    }

    fn is_bad(&self) -> bool {
        self.conn.status() == ffi::ConnStatusType::CONNECTION_BAD
    }

    fn connection_error(&self) -> Error {
        let message = self.conn.error_message();
        if self.is_bad() {
            Error::closed(message)
        } else {
            Error::client(message)
        }
    }

    /// Whether the socket still has bytes to read (so tokio's readiness must not be cleared).
    fn readable_now(&self) -> bool {
        readable_now(self.socket.get_ref())
    }
}

/// Whether `socket` still has bytes to read, so that the reactor's readiness must stay set
/// (libpq reads what it wants, not necessarily all there is).
pub(crate) fn readable_now(socket: &Socket) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never waits.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLIN != 0
}
/// The error of a failed result (a server error, or one libpq made).
fn result_error(result: &PgResult) -> Error {
    let db = DbError::from_result(result);
    if db.code().code().is_empty() {
        Error::client(db.message().to_owned())
    } else {
        Error::db(db)
    }
}

/// Drives a connection: send, flush, read, route results. Spawn it (`tokio::spawn`) and keep
/// it running while the [`Client`](super::Client) is used; it resolves once every client is
/// dropped and all answers are in, or with the error that broke the connection. Dropping it
/// closes the connection.
///
/// A client waiting for an answer drives the connection from its own task too, when nothing
/// is queued ahead of it: a request then costs no hop between tasks. Everything else (the
/// simple protocol, COPY, streamed rows, notices and notifications) goes through this task.
///
/// To see notices and notifications, poll [`Connection::poll_message`] instead of awaiting
/// the future (which logs notices and drops notifications), e.g. through
/// `futures::stream::poll_fn`, or give the config a
/// [`notice_callback`](crate::Config::notice_callback), which this task then calls with each
/// notice (those sent during startup first) instead of returning it.
#[must_use = "the connection does nothing unless it is polled (spawn it)"]
pub struct Connection {
    driver: SharedDriver,
}

/// The driver, shared by the task and its clients; `None` once the [`Connection`] is dropped.
pub(crate) type SharedDriver = Arc<Mutex<Option<Driver>>>;

pub(crate) fn lock_driver(driver: &SharedDriver) -> std::sync::MutexGuard<'_, Option<Driver>> {
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    pub(crate) fn new(driver: Driver) -> (Connection, SharedDriver) {
        let driver = Arc::new(Mutex::new(Some(driver)));
        (
            Connection {
                driver: driver.clone(),
            },
            driver,
        )
    }

    /// Drives the connection and returns the next notice or notification, or `None` once the
    /// connection is done (every client dropped, every answer delivered).
    #[doc(alias = "PQconsumeInput")]
    #[doc(alias = "PQnotifies")]
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage>>> {
        let mut guard = lock_driver(&self.driver);
        let Some(driver) = guard.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = driver.poll_message(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // The connection is over: closed now (PQfinish, outside the lock), not when the
            // last client or this future is dropped. A failed libpq may still hold its socket.
            let finished = guard.take();
            drop(guard);
            drop(finished);
        }
        polled
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Taken out under the lock, dropped (PQfinish) outside it: requests in flight are
        // answered "the connection task ended before answering" as their senders go.
        let driver = lock_driver(&self.driver).take();
        drop(driver);
    }
}

impl Future for Connection {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        loop {
            match this.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                    crate::trace::notice(&notice);
                }
                Poll::Ready(Some(Ok(AsyncMessage::Notification(_)))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match lock_driver(&self.driver).as_ref() {
            Some(driver) => driver.fmt(f),
            None => f.write_str("Connection { dropped }"),
        }
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let front = self.in_flight.front().map(|f| {
            format!(
                "sync: {}, nulls_left: {}, rows: {}, results: {}",
                f.sync,
                f.nulls_left,
                f.rows.is_some(),
                f.results.len()
            )
        });
        f.debug_struct("Connection")
            .field("in_flight", &self.in_flight.len())
            .field("front", &front)
            .field("held", &self.held.is_some())
            .field("copy", &self.copy.as_ref().map(CopyState::name))
            .field("in_pipeline", &self.in_pipeline)
            .field("needs_flush", &self.needs_flush)
            .field("clients_gone", &self.clients_gone)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// A client's share in driving the connection while it waits (for an answer, for rows): each
/// poll drives it once, and when done the client stops being woken by the socket.
pub(crate) struct Driving {
    driver: SharedDriver,
    /// The waker this client last drove with.
    waker: Option<Waker>,
}

impl Driving {
    pub(crate) fn new(driver: SharedDriver) -> Driving {
        Driving {
            driver,
            waker: None,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = lock_driver(&self.driver).as_mut() {
            driver.poll_for_client(cx);
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }

    /// Polls `ready` with a waker that does nothing, and only if it is pending drives the
    /// connection once and polls it again with `cx`: what this poll reads itself must not
    /// wake the running task (on a current-thread runtime that costs another turn of the I/O
    /// driver before the next poll).
    pub(crate) fn poll_until<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut ready: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut quiet = Context::from_waker(Waker::noop());
        if let Poll::Ready(value) = ready(&mut quiet) {
            return Poll::Ready(value);
        }
        self.poll(cx);
        ready(cx)
    }

    /// The end of a streamed request, once its items are all out: stops driving and polls
    /// the request's final answer, `None` once it was taken. A connection task that ended
    /// without answering is a `Closed` error naming `what` ended too late.
    pub(crate) fn poll_final(
        &mut self,
        cx: &mut Context<'_>,
        end: &mut Option<oneshot::Receiver<Reply>>,
        what: &str,
    ) -> Poll<Option<Reply>> {
        self.withdraw();
        let Some(receiver) = end.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = std::task::ready!(Pin::new(receiver).poll(cx));
        *end = None;
        Poll::Ready(Some(outcome.unwrap_or_else(|_| {
            Err(Error::closed(format!(
                "the connection task ended before the {what} did"
            )))
        })))
    }

    pub(crate) fn withdraw(&mut self) {
        if let Some(waker) = self.waker.take() {
            if let Some(driver) = lock_driver(&self.driver).as_mut() {
                driver.withdraw_client(&waker);
            }
        }
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Whom the socket's readiness wakes: the task, or a client driving the connection while it
/// waits for an answer, or both through one waker (see `Driver::poll_for_client`).
#[derive(Default)]
struct Wakers {
    task: Option<Waker>,
    client: Option<Waker>,
    /// The waker that wakes `task` and `client`, kept for the next request of the same
    /// client (a future's waker stays the same between its requests).
    both: Option<Waker>,
    both_client: Option<Waker>,
    /// The socket's read registration holds `client`'s waker alone.
    alone: bool,
}

impl Wakers {
    fn set_task(&mut self, waker: &Waker) {
        if !self.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.task = Some(waker.clone());
            self.both = None;
            self.both_client = None;
        }
    }

    fn set_client(&mut self, waker: &Waker) {
        if !self.client.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.client = Some(waker.clone());
        }
    }

    /// Forgets `waker` as the client's; whether it was.
    fn clear_client(&mut self, waker: &Waker) -> bool {
        let was = self.client.as_ref().is_some_and(|w| w.will_wake(waker));
        if was {
            self.client = None;
        }
        was
    }

    fn wake_task(&self) {
        if let Some(task) = &self.task {
            task.wake_by_ref();
        }
    }

    /// The waker to register for the socket's readiness, from a poll with `polling`.
    fn io_waker(&mut self, polling: &Waker) -> Waker {
        let (Some(task), Some(client)) = (&self.task, &self.client) else {
            return polling.clone();
        };
        match (&self.both, &self.both_client) {
            (Some(both), Some(of)) if of.will_wake(client) => both.clone(),
            _ => {
                let both = Waker::from(Arc::new(WakeBoth {
                    task: task.clone(),
                    client: client.clone(),
                }));
                self.both = Some(both.clone());
                self.both_client = Some(client.clone());
                both
            }
        }
    }
}

struct WakeBoth {
    task: Waker,
    client: Waker,
}

impl std::task::Wake for WakeBoth {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The client first: on a current-thread runtime it then reads its answer itself
        // before the task runs.
        self.client.wake_by_ref();
        self.task.wake_by_ref();
    }
}
