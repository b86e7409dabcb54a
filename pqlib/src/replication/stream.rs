//! The blocking replication stream (`START_REPLICATION`'s COPY BOTH) and the keeper thread
//! that answers the server while the consumer is busy elsewhere.
//!
//! The walsender ends a session it has not heard from for `wal_sender_timeout` (60 s by
//! default), even while the client is merely slow to read. A blocking consumer cannot answer
//! while it is busy with what it read, so a small thread (the keeper) sends status updates
//! at the status interval whenever the stream is not being read. Every libpq call on the
//! connection, the keeper's and the stream's, happens under one mutex: libpq allows one
//! thread at a time on a `PGconn`. The keeper only queues and flushes (non-blocking mode), it
//! never reads, so nothing it does can move the protocol state.

use std::ffi::c_char;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use foreign_types::ForeignType;
use pqlib_sys as ffi;

use super::message::{self, Positions, ReplicationMessage};
use super::{Lsn, ReplicationConnection};
use crate::Connection;
use crate::error::{Error, Result};
use crate::handle::{PgResult, PqBuffer};

/// How often a status update goes to the server unasked (pg_recvlogical's default).
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Silence from the server after which the connection counts as lost (the server's own
/// `wal_receiver_timeout` default); at half of it the client asks for a reply.
pub(crate) const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// A `PGconn` pointer the keeper thread may use under the shared mutex.
#[derive(Clone, Copy)]
struct ConnPtr(NonNull<ffi::PGconn>);

// SAFETY: the pointer is only dereferenced (by libpq) while the `Shared` mutex is held, and
// libpq allows a PGconn to be used from any thread one at a time.
unsafe impl Send for ConnPtr {}

/// What the keeper and the stream share, under one mutex.
struct Shared {
    /// `None` once the keeper must no longer touch the connection.
    conn: Option<ConnPtr>,
    /// The stream is still streaming: status updates may go out. Once it is ending (or
    /// over), a CopyData would be refused by libpq, and the refusal's message would replace
    /// the connection's last error.
    streaming: bool,
    positions: Positions,
    last_status: Instant,
    interval: Duration,
}

pub(crate) struct KeeperState {
    shared: Mutex<Shared>,
    wake: Condvar,
}

impl KeeperState {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keeper thread of a running stream; owned by the [`ReplicationConnection`], so that it
/// is stopped before the connection is freed even if the stream is leaked.
pub(crate) struct Keeper {
    state: Arc<KeeperState>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    fn start(conn: ConnPtr, interval: Duration) -> Keeper {
        let state = Arc::new(KeeperState {
            shared: Mutex::new(Shared {
                conn: Some(conn),
                streaming: true,
                positions: Positions::default(),
                last_status: Instant::now(),
                interval,
            }),
            wake: Condvar::new(),
        });
        let for_thread = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("pqlib-replication-keeper".into())
            .spawn(move || keep(&for_thread))
            .ok();
        Keeper { state, thread }
    }

    pub(crate) fn state(&self) -> Arc<KeeperState> {
        Arc::clone(&self.state)
    }

    /// Stops the thread and waits for it: afterwards nothing but the owner touches the
    /// connection.
    pub(crate) fn stop(mut self) {
        self.state.lock().conn = None;
        self.state.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The keeper thread's loop: a status update whenever one is due, until stopped.
fn keep(state: &KeeperState) {
    let mut shared = state.lock();
    loop {
        let Some(conn) = shared.conn else { return };
        let due = shared.last_status + shared.interval;
        let now = Instant::now();
        if now >= due && shared.streaming {
            let update = shared.positions.status_update(SystemTime::now(), false);
            // SAFETY: the connection is alive while `conn` is set, and used by nobody else
            // while the mutex is held. A failure shows up in the stream's next call.
            unsafe { send(conn.0.as_ptr(), &update) };
            shared.last_status = now;
            continue;
        }
        shared = state
            .wake
            .wait_timeout(shared, due - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Queues `message` as CopyData and flushes what the socket takes now.
///
/// # Safety
/// `conn` is a live connection in COPY BOTH, non-blocking, used by nobody else for the call.
unsafe fn send(conn: *mut ffi::PGconn, message: &[u8]) -> bool {
    let len = i32::try_from(message.len()).unwrap_or(i32::MAX);
    // SAFETY: per the contract; libpq copies the bytes before returning.
    let queued = unsafe { ffi::PQputCopyData(conn, message.as_ptr().cast::<c_char>(), len) };
    // SAFETY: as above.
    queued == 1 && unsafe { ffi::PQflush(conn) } >= 0
}

/// What [`ReplicationStream::recv_timeout`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Received {
    /// A message.
    Message(ReplicationMessage),
    /// Nothing arrived within the wait.
    TimedOut,
    /// The stream is over (the server ended it, or [`ReplicationStream::stop`] did).
    End,
}

/// Where a stream is in its COPY BOTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The client ends it: CopyDone to send, then the server's data read up to its CopyDone.
    Stopping {
        end_sent: bool,
    },
    /// Both CopyDones are through (or an error ended the COPY): the command's results.
    Results,
    Ended,
}

/// What one [`StreamCore::step`] found.
pub(crate) enum Step {
    Message(ReplicationMessage),
    Ended,
    /// Nothing to do until the socket is readable (or writable, with `write`) or `until`.
    Wait {
        write: bool,
        until: Instant,
    },
}

/// A replication stream's state, driven one non-blocking step at a time: by the blocking
/// [`ReplicationStream`] with `poll(2)`, by the async stream with the runtime's reactor.
pub(crate) struct StreamCore {
    keeper: Arc<KeeperState>,
    physical: bool,
    phase: Phase,
    server_timeout: Duration,
    last_received: Instant,
    /// A status update asking for a reply went out since the server last spoke.
    pinged: bool,
    /// The bound on ending: the client's stop, or the results after the server's end.
    end_deadline: Option<Instant>,
    next_timeline: Option<(u32, Lsn)>,
    first_error: Option<Error>,
}

impl ReplicationConnection {
    /// The text of `START_REPLICATION` was sent and `result` is its first result: a COPY
    /// BOTH becomes a stream (non-blocking, with a keeper thread); anything else is the
    /// command's error.
    pub(crate) fn begin_stream(
        &mut self,
        result: PgResult,
        sql: &str,
        physical: bool,
    ) -> Result<StreamCore> {
        if result.status() != ffi::ExecStatusType::PGRES_COPY_BOTH {
            // An error (no such slot, slot in use, bad option) is reported as itself; a
            // timeline that ends at the start point answers with rows and no stream.
            self.conn.check(result.into_ptr())?;
            return Err(Error::client(format!(
                "{sql} did not start a stream (the requested timeline may end at the start \
                 point; see TIMELINE_HISTORY)"
            )));
        }
        drop(result);
        self.conn.take_copy()?;
        let ptr = self.conn.as_ptr();
        // SAFETY: the connection is alive; non-blocking mode makes the keeper's and the
        // stream's sends return instead of waiting on a full socket.
        if unsafe { ffi::PQsetnonblocking(ptr, 1) } != 0 {
            return Err(self
                .conn
                .poison("could not make the replication connection non-blocking"));
        }
        let conn = ConnPtr(NonNull::new(ptr).ok_or_else(|| Error::client("no connection"))?);
        let keeper = Keeper::start(conn, STATUS_INTERVAL);
        let state = keeper.state();
        self.keeper = Some(keeper);
        if !physical {
            self.logical_streamed = true;
        }
        Ok(StreamCore {
            keeper: state,
            physical,
            phase: Phase::Streaming,
            server_timeout: SERVER_TIMEOUT,
            last_received: Instant::now(),
            pinged: false,
            end_deadline: None,
            next_timeline: None,
            first_error: None,
        })
    }

    /// Sends `START_REPLICATION` and wraps the COPY BOTH it opens.
    pub(crate) fn start_stream(
        &mut self,
        sql: &str,
        physical: bool,
    ) -> Result<ReplicationStream<'_>> {
        self.stop_keeper();
        self.conn.before_query()?;
        let text = std::ffi::CString::new(sql).map_err(|e| Error::nul_byte("the command", e))?;
        // SAFETY: the connection is alive and idle; `text` is NUL-terminated for the call.
        let result = unsafe { ffi::PQexec(self.conn.as_ptr(), text.as_ptr()) };
        let Some(result) = PgResult::from_returned(result) else {
            return Err(self.conn.connection_error());
        };
        let core = self.begin_stream(result, sql, physical)?;
        Ok(ReplicationStream { conn: self, core })
    }

    /// Stops a stream's keeper thread, if one runs (also after a leaked stream).
    pub(crate) fn stop_keeper(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
    }
}

impl StreamCore {
    pub(crate) fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    pub(crate) fn confirm(&self, lsn: Lsn) {
        self.keeper.lock().positions.confirm(lsn);
    }

    pub(crate) fn confirmed(&self) -> Lsn {
        self.keeper.lock().positions.flushed
    }

    pub(crate) fn received(&self) -> Lsn {
        self.keeper.lock().positions.received
    }

    pub(crate) fn set_status_interval(&self, interval: Duration) {
        self.keeper.lock().interval = interval.max(Duration::from_millis(1));
        self.keeper.wake.notify_all();
    }

    pub(crate) fn set_server_timeout(&mut self, timeout: Duration) {
        self.server_timeout = timeout.max(Duration::from_millis(2));
    }

    pub(crate) fn next_timeline(&self) -> Option<(u32, Lsn)> {
        self.next_timeline
    }

    pub(crate) fn send_status(
        &mut self,
        conn: &mut Connection,
        reply_requested: bool,
    ) -> Result<()> {
        if self.phase != Phase::Streaming {
            return Err(Error::bad_input("the replication stream has ended"));
        }
        let keeper = Arc::clone(&self.keeper);
        let mut shared = keeper.lock();
        let sent = status(conn, &mut shared, reply_requested);
        drop(shared);
        self.settle(conn, sent)
    }

    /// Before waiting on the socket: flushes what libpq holds, and returns whether output is
    /// left (wait for writability too) and the socket. Under the lock, as the keeper may be
    /// sending.
    pub(crate) fn before_wait(&mut self, conn: &mut Connection) -> Result<(bool, i32)> {
        let keeper = Arc::clone(&self.keeper);
        let shared = keeper.lock();
        // SAFETY: the connection is alive and ours under the lock.
        let (pending, socket) =
            unsafe { (ffi::PQflush(conn.as_ptr()), ffi::PQsocket(conn.as_ptr())) };
        drop(shared);
        let result = if pending < 0 || socket < 0 {
            Err(conn.connection_error())
        } else {
            Ok((pending == 1, socket))
        };
        self.settle(conn, result)
    }

    /// After the socket became readable: reads what arrived into libpq, under the lock.
    pub(crate) fn consume_input(&mut self, conn: &mut Connection) -> Result<()> {
        let keeper = Arc::clone(&self.keeper);
        let shared = keeper.lock();
        // SAFETY: the connection is alive and ours under the lock.
        let ok = unsafe { ffi::PQconsumeInput(conn.as_ptr()) } == 1;
        drop(shared);
        let result = if ok {
            Ok(())
        } else {
            Err(conn.connection_error())
        };
        self.settle(conn, result)
    }

    /// Asks for the end: the next steps send CopyDone and read up to the server's.
    pub(crate) fn begin_stop(&mut self) {
        if self.phase == Phase::Streaming {
            self.phase = Phase::Stopping { end_sent: false };
            self.end_deadline = Some(Instant::now() + self.server_timeout);
        }
    }

    /// Tells the keeper whether status updates may still go out.
    fn publish_phase(&self, shared: &mut Shared) {
        shared.streaming = self.phase == Phase::Streaming;
    }

    /// [`after_error`](Self::after_error) for a call made outside the lock, then the phase
    /// published to the keeper.
    fn settle<T>(&mut self, conn: &mut Connection, result: Result<T>) -> Result<T> {
        let result = self.after_error(conn, result);
        let keeper = Arc::clone(&self.keeper);
        self.publish_phase(&mut keeper.lock());
        result
    }

    /// One step without waiting: a message, the end, or what to wait for.
    pub(crate) fn step(&mut self, conn: &mut Connection) -> Result<Step> {
        let keeper = Arc::clone(&self.keeper);
        let mut shared = keeper.lock();
        let step = self.step_locked(conn, &mut shared);
        let step = self.after_error(conn, step);
        self.publish_phase(&mut shared);
        step
    }

    /// An error ends the stream. Unless the server's own error ended it by the book (the
    /// results were read to the end and the connection is idle again), the COPY's state is
    /// unknown: the connection is closed.
    fn after_error<T>(&mut self, conn: &mut Connection, result: Result<T>) -> Result<T> {
        let Err(error) = result else { return result };
        let clean = self.phase == Phase::Ended;
        self.phase = Phase::Ended;
        if clean || error.is_closed() || conn.is_lost() {
            return Err(error);
        }
        Err(conn.poison(&error.to_string()))
    }

    fn step_locked(&mut self, conn: &mut Connection, shared: &mut Shared) -> Result<Step> {
        loop {
            match self.phase {
                Phase::Ended => return Ok(Step::Ended),
                Phase::Streaming => match read_raw(conn)? {
                    Raw::Data(buffer) => {
                        self.last_received = Instant::now();
                        self.pinged = false;
                        let message = message::parse(Bytes::from_owner(buffer))?;
                        shared.positions.saw(&message, self.physical);
                        if let ReplicationMessage::PrimaryKeepalive(keepalive) = &message {
                            if keepalive.reply_requested {
                                status(conn, shared, false)?;
                            }
                        }
                        return Ok(Step::Message(message));
                    }
                    Raw::Done => {
                        // The server ended the stream (end of timeline, shutdown) or an
                        // error did: a last update, then the results.
                        let _ = status(conn, shared, false);
                        self.phase = Phase::Results;
                        self.end_deadline = Some(Instant::now() + self.server_timeout);
                    }
                    Raw::NeedInput => return self.streaming_wait(conn, shared),
                },
                Phase::Stopping { end_sent: false } => {
                    // A final update, so that what was confirmed last is not lost.
                    status(conn, shared, false)?;
                    // SAFETY: the connection is alive, in COPY BOTH, and ours under the lock.
                    match unsafe { ffi::PQputCopyEnd(conn.as_ptr(), std::ptr::null()) } {
                        1 => self.phase = Phase::Stopping { end_sent: true },
                        0 => return self.wait_to_end(true),
                        _ => return Err(conn.connection_error()),
                    }
                }
                Phase::Stopping { end_sent: true } => match read_raw(conn)? {
                    Raw::Data(_) => {}
                    Raw::NeedInput => return self.wait_to_end(false),
                    Raw::Done => self.phase = Phase::Results,
                },
                Phase::Results => {
                    if let Some(wait) = self.read_results(conn)? {
                        return Ok(wait);
                    }
                }
            }
        }
    }

    /// Streaming and nothing buffered: the timers (status due, a silent server), and when
    /// to look again.
    fn streaming_wait(&mut self, conn: &mut Connection, shared: &mut Shared) -> Result<Step> {
        let now = Instant::now();
        let silent = now.duration_since(self.last_received);
        if silent >= self.server_timeout {
            return Err(conn.poison(&format!(
                "the server sent nothing for {:?} during replication",
                self.server_timeout
            )));
        }
        if silent >= self.server_timeout / 2 && !self.pinged {
            status(conn, shared, true)?;
            self.pinged = true;
        } else if now >= shared.last_status + shared.interval {
            status(conn, shared, false)?;
        }
        let until = if self.pinged {
            self.last_received + self.server_timeout
        } else {
            (shared.last_status + shared.interval).min(self.last_received + self.server_timeout / 2)
        };
        Ok(Step::Wait {
            write: false,
            until,
        })
    }

    /// Ending and waiting on the server: within the bound, or the connection is lost.
    fn wait_to_end(&mut self, write: bool) -> Result<Step> {
        let until = self.end_deadline.unwrap_or_else(Instant::now);
        if Instant::now() >= until {
            return Err(Error::closed(format!(
                "the server did not end the replication stream within {:?}",
                self.server_timeout
            )));
        }
        Ok(Step::Wait { write, until })
    }

    /// Reads the command's results after the copy data, answering a server CopyDone with
    /// ours: `Some(wait)` while they have not all arrived. The first error is the stream's
    /// end; a physical end of timeline's row is kept.
    fn read_results(&mut self, conn: &mut Connection) -> Result<Option<Step>> {
        let ptr = conn.as_ptr();
        loop {
            // SAFETY: the connection is alive and ours under the lock.
            if unsafe { ffi::PQflush(ptr) } < 0 {
                return Err(conn.connection_error());
            }
            // SAFETY: as above.
            if unsafe { ffi::PQisBusy(ptr) } == 1 {
                return self.wait_to_end(false).map(Some);
            }
            // SAFETY: as above; not busy, so this does not wait.
            let Some(result) = PgResult::from_returned(unsafe { ffi::PQgetResult(ptr) }) else {
                break;
            };
            match result.status() {
                ffi::ExecStatusType::PGRES_COPY_IN => {
                    // The server's CopyDone came first: libpq now waits for ours.
                    drop(result);
                    // SAFETY: as above.
                    if unsafe { ffi::PQputCopyEnd(ptr, std::ptr::null()) } < 0 {
                        return Err(conn.connection_error());
                    }
                }
                ffi::ExecStatusType::PGRES_TUPLES_OK => {
                    self.next_timeline = next_timeline(&result);
                }
                ffi::ExecStatusType::PGRES_COMMAND_OK => {}
                _ => {
                    if let Err(error) = conn.check_each(result.into_ptr()) {
                        self.first_error.get_or_insert(error);
                    }
                    if conn.is_lost() {
                        break;
                    }
                }
            }
        }
        self.phase = Phase::Ended;
        // SAFETY: as above; the stream is over, so the connection goes back to blocking.
        unsafe { ffi::PQsetnonblocking(ptr, 0) };
        conn.after_results()?;
        match self.first_error.take() {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }
}

/// What [`read_raw`] found.
enum Raw {
    Data(PqBuffer),
    NeedInput,
    /// The server's CopyDone, or an error that ended the COPY.
    Done,
}

/// The next CopyData from libpq's buffer, without waiting.
fn read_raw(conn: &mut Connection) -> Result<Raw> {
    let mut buffer: *mut c_char = std::ptr::null_mut();
    // SAFETY: the connection is alive and ours under the lock; async = 1 never waits, and a
    // returned buffer (n > 0) is owned by PqBuffer.
    let n = unsafe { ffi::PQgetCopyData(conn.as_ptr(), &mut buffer, 1) };
    match n {
        0 => Ok(Raw::NeedInput),
        -1 => Ok(Raw::Done),
        n if n > 0 => {
            let len = usize::try_from(n).unwrap_or(0);
            // SAFETY: libpq handed over `len` bytes at `buffer`, to be freed with PQfreemem.
            let buffer = unsafe { PqBuffer::from_raw(buffer, len) };
            buffer
                .map(Raw::Data)
                .ok_or_else(|| Error::client("libpq returned no copy buffer"))
        }
        _ => Err(conn.connection_error()),
    }
}

/// Sends a status update under the lock.
fn status(conn: &mut Connection, shared: &mut Shared, reply_requested: bool) -> Result<()> {
    let update = shared
        .positions
        .status_update(SystemTime::now(), reply_requested);
    shared.last_status = Instant::now();
    // SAFETY: the connection is alive, in COPY BOTH, non-blocking, ours under the lock.
    if unsafe { send(conn.as_ptr(), &update) } {
        Ok(())
    } else {
        Err(conn.connection_error())
    }
}

/// The COPY BOTH stream `START_REPLICATION` opens, read message by message.
///
/// Iterating blocks until the next message; [`recv_timeout`](ReplicationStream::recv_timeout)
/// waits at most a given time. Either way pqlib answers the server by itself: a status update
/// right away when a keepalive asks for one, and every [status
/// interval](ReplicationStream::set_status_interval) (10 s) otherwise, also while your code
/// is busy between two reads (a small thread sends it then), so a slow consumer is not
/// disconnected by the server's `wal_sender_timeout`. The update reports as flushed what you
/// [`confirm`](ReplicationStream::confirm): the server may then recycle the WAL before it.
///
/// A server silent for the [server timeout](ReplicationStream::set_server_timeout) (60 s;
/// at half of it pqlib asks for a reply) counts as lost: an error of kind
/// [`Closed`](crate::error::ErrorKind::Closed), as when the backend dies. Dropping the stream
/// ends the COPY cleanly (CopyDone both ways), like [`stop`](ReplicationStream::stop).
///
/// ```no_run
/// use pqlib::replication::{Lsn, ReplicationConnection, ReplicationMessage, ReplicationMode};
///
/// let config: pqlib::Config = "host=localhost user=postgres dbname=app".parse()?;
/// let mut conn = ReplicationConnection::connect(&config, ReplicationMode::Logical)?;
/// let mut stream = conn.start_logical_replication("my_slot", Lsn::INVALID, &[("include-xids", "0")])?;
/// while let Some(message) = stream.next() {
///     if let ReplicationMessage::XLogData(data) = message? {
///         println!("{}", String::from_utf8_lossy(data.data()));
///         // Once it is safely stored: the server may forget it.
///         stream.confirm(data.wal_start());
///     }
/// }
/// stream.stop()?;
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct ReplicationStream<'c> {
    conn: &'c mut ReplicationConnection,
    core: StreamCore,
}

impl ReplicationStream<'_> {
    /// Waits at most `wait` for the next message.
    ///
    /// ```no_run
    /// # fn demo(stream: &mut pqlib::replication::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// use std::time::Duration;
    /// use pqlib::replication::Received;
    ///
    /// match stream.recv_timeout(Duration::from_millis(500))? {
    ///     Received::Message(message) => println!("{message:?}"),
    ///     Received::TimedOut => println!("nothing new"),
    ///     Received::End => println!("the stream is over"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQgetCopyData")]
    pub fn recv_timeout(&mut self, wait: Duration) -> Result<Received> {
        self.drive(Some(Instant::now() + wait))
    }

    /// Records that everything up to `lsn` is processed and durably stored: the next status
    /// update reports it as written, flushed and applied, after which the server may remove
    /// the WAL before it (and a logical slot restarts after it).
    ///
    /// ```no_run
    /// # fn demo(stream: &mut pqlib::replication::ReplicationStream<'_>, data: pqlib::replication::XLogData) {
    /// stream.confirm(data.wal_start());
    /// # }
    /// ```
    pub fn confirm(&mut self, lsn: Lsn) {
        self.core.confirm(lsn);
    }

    /// The position last [confirmed](ReplicationStream::confirm) (or moved on to by a
    /// keepalive once everything handed out was confirmed).
    pub fn confirmed(&self) -> Lsn {
        self.core.confirmed()
    }

    /// The end of what has been received so far.
    pub fn received(&self) -> Lsn {
        self.core.received()
    }

    /// Sends a status update now (with `reply_requested`, the server answers with a
    /// keepalive).
    ///
    /// ```no_run
    /// # fn demo(stream: &mut pqlib::replication::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// stream.send_status(false)?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQputCopyData")]
    pub fn send_status(&mut self, reply_requested: bool) -> Result<()> {
        self.core.send_status(&mut self.conn.conn, reply_requested)
    }

    /// How often a status update is sent unasked (10 s by default; the server's
    /// `wal_sender_timeout` must be longer).
    pub fn set_status_interval(&mut self, interval: Duration) {
        self.core.set_status_interval(interval);
    }

    /// How long the server may stay silent before the connection counts as lost (60 s by
    /// default); at half of it a status update asks the server for a reply. Ending the
    /// stream is bounded by it too.
    pub fn set_server_timeout(&mut self, timeout: Duration) {
        self.core.set_server_timeout(timeout);
    }

    /// For a physical stream that the server ended at the end of a timeline: the next
    /// timeline and where it starts.
    pub fn next_timeline(&self) -> Option<(u32, Lsn)> {
        self.core.next_timeline()
    }

    /// Ends the stream: sends CopyDone, reads what the server still sends up to its own
    /// CopyDone, and the command's result. Returns the next timeline when the server ended a
    /// physical stream at the end of one.
    ///
    /// ```no_run
    /// # fn demo(stream: pqlib::replication::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// stream.stop()?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQputCopyEnd")]
    pub fn stop(mut self) -> Result<Option<(u32, Lsn)>> {
        self.end()?;
        Ok(self.core.next_timeline())
    }

    fn end(&mut self) -> Result<()> {
        self.core.begin_stop();
        while !matches!(self.drive(None)?, Received::End) {}
        Ok(())
    }

    /// Steps until a message, the end, or `deadline`, waiting on the socket in between.
    fn drive(&mut self, deadline: Option<Instant>) -> Result<Received> {
        loop {
            match self.core.step(&mut self.conn.conn)? {
                Step::Message(message) => return Ok(Received::Message(message)),
                Step::Ended => return Ok(Received::End),
                Step::Wait { write, until } => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Received::TimedOut);
                    }
                    let until = deadline.map_or(until, |d| until.min(d));
                    wait(&mut self.core, &mut self.conn.conn, write, until)?;
                }
            }
        }
    }
}

/// Waits until the socket is readable (or writable, if `write` or libpq has output left to
/// flush) or `until`, then reads what arrived into libpq.
fn wait(core: &mut StreamCore, conn: &mut Connection, write: bool, until: Instant) -> Result<()> {
    let (pending, socket) = core.before_wait(conn)?;
    let timeout = until.saturating_duration_since(Instant::now());
    let mut fd = libc::pollfd {
        fd: socket,
        events: libc::POLLIN | if write || pending { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // Rounded up, so that a wait never ends just before its time and spins.
    let millis = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the call.
    let n = unsafe { libc::poll(&mut fd, 1, millis) };
    if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
        let error = Error::client(format!(
            "waiting for the replication socket: {}",
            std::io::Error::last_os_error()
        ));
        return core.settle(conn, Err(error));
    }
    if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
        core.consume_input(conn)?;
    }
    Ok(())
}

impl Iterator for ReplicationStream<'_> {
    type Item = Result<ReplicationMessage>;

    /// Blocks until the next message; `None` once the stream is over.
    fn next(&mut self) -> Option<Self::Item> {
        match self.drive(None) {
            Ok(Received::Message(message)) => Some(Ok(message)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl Drop for ReplicationStream<'_> {
    fn drop(&mut self) {
        if !self.core.is_ended() {
            let _ = self.end();
        }
        self.conn.finish_stream();
    }
}

impl ReplicationConnection {
    /// After a stream: no keeper, and the connection back in blocking mode.
    pub(crate) fn finish_stream(&mut self) {
        self.stop_keeper();
        // SAFETY: the connection is alive; the keeper has stopped.
        unsafe { ffi::PQsetnonblocking(self.conn.as_ptr(), 0) };
    }
}

impl std::fmt::Debug for ReplicationStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("physical", &self.core.physical)
            .field("phase", &self.core.phase)
            .finish_non_exhaustive()
    }
}

/// The next timeline and its start from the row a physical stream ends a timeline with.
fn next_timeline(result: &PgResult) -> Option<(u32, Lsn)> {
    if result.ntuples() < 1 || result.nfields() < 2 {
        return None;
    }
    let text = |column: usize| {
        // SAFETY: row 0 and columns 0 and 1 exist (checked above).
        let value = unsafe { result.value_unchecked(0, column) }?;
        std::str::from_utf8(value).ok()
    };
    Some((text(0)?.parse().ok()?, text(1)?.parse().ok()?))
}
