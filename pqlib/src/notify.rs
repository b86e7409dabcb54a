//! Asynchronous notifications: `LISTEN` / `NOTIFY`.
//!
//! A session that ran `LISTEN channel` receives a [`Notification`] whenever any session
//! (itself included) commits a `NOTIFY channel, 'payload'` (or `SELECT pg_notify(...)`).
//! The server sends them between statements; libpq queues those that arrive while a query
//! runs, and [`Connection::notifications`] reads the queue and the socket:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
//! conn.batch_execute("LISTEN jobs")?;
//! loop {
//!     for notification in conn.notifications().timeout_iter(Duration::from_secs(1)) {
//!         let notification = notification?;
//!         println!("job {} from pid {}", notification.payload(), notification.process_id());
//!     }
//!     // ... periodic work between bursts ...
//! }
//! # Ok::<(), pqlib::Error>(())
//! ```
//!
//! The shape follows `postgres::Notifications` from the `postgres` crate, with the iterators
//! as standard [`Iterator`]s of `Result<Notification, Error>`.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use foreign_types::{ForeignType, ForeignTypeRef, foreign_type};
use pqlib_sys as ffi;

use crate::handle::lossy_string;
use crate::{Connection, Error, Result};

/// One asynchronous notification: a `NOTIFY` on a channel this session listens to.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// conn.batch_execute("LISTEN events; NOTIFY events, 'hello'")?;
/// let n = conn.notifications().iter().next().unwrap()?;
/// assert_eq!((n.channel(), n.payload()), ("events", "hello"));
/// assert_eq!(n.process_id(), conn.backend_pid()); // it notified itself
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[doc(alias = "PGnotify")]
pub struct Notification {
    process_id: u32,
    channel: String,
    payload: String,
}

impl Notification {
    /// The process ID of the server process (session) that sent the notification.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let n = conn.notifications().iter().next().unwrap()?;
    /// if n.process_id() == conn.backend_pid() {
    ///     println!("our own notification");
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn process_id(&self) -> u32 {
        self.process_id
    }

    /// The channel the notification was sent on (the name given to `LISTEN`/`NOTIFY`).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let n = conn.notifications().iter().next().unwrap()?;
    /// println!("on {}", n.channel());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The payload string; empty when the `NOTIFY` gave none.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let n = conn.notifications().iter().next().unwrap()?;
    /// println!("payload {:?}", n.payload());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn payload(&self) -> &str {
        &self.payload
    }
}

foreign_type! {
    /// A `PGnotify` from `PQnotifies`: one allocation holding the struct and its strings,
    /// freed with `PQfreemem`.
    unsafe type PgNotify: Send {
        type CType = ffi::PGnotify;
        fn drop = free_notify;
    }
}

/// # Safety
/// `ptr` must be a `PGnotify` returned by `PQnotifies`, not freed before.
unsafe fn free_notify(ptr: *mut ffi::PGnotify) {
    // SAFETY: per this function's contract; PQnotifies' result is released with PQfreemem.
    unsafe { ffi::PQfreemem(ptr.cast()) }
}

impl PgNotifyRef {
    fn to_notification(&self) -> Notification {
        // SAFETY: the PGnotify is alive for &self; its strings are NUL-terminated and live
        // in the same allocation, copied here before the borrow ends.
        unsafe {
            let raw = &*self.as_ptr();
            Notification {
                process_id: u32::try_from(raw.be_pid).unwrap_or(0),
                channel: lossy_string(raw.relname).unwrap_or_default(),
                payload: lossy_string(raw.extra).unwrap_or_default(),
            }
        }
    }
}

impl Connection {
    /// The notifications this connection has received or will receive (`LISTEN` first).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.batch_execute("LISTEN events")?;
    /// for n in conn.notifications().blocking_iter() {
    ///     let n = n?;
    ///     println!("{}: {}", n.channel(), n.payload());
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQnotifies")]
    pub fn notifications(&mut self) -> Notifications<'_> {
        Notifications { conn: self }
    }
}

/// The notifications of a connection, from [`Connection::notifications`].
///
/// [`iter`](Notifications::iter) returns what has already arrived without waiting;
/// [`blocking_iter`](Notifications::blocking_iter) waits for each next one for as long as it
/// takes; [`timeout_iter`](Notifications::timeout_iter) waits at most a given time for each.
/// Each yields `Err` once if the connection is lost, then ends.
///
/// Notifications that arrive while the connection runs an ordinary query are kept by libpq
/// and come out of these iterators afterwards, in the order they were received.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// conn.batch_execute("LISTEN events")?;
/// let mut notifications = conn.notifications();
/// println!("{} already queued", notifications.len());
/// let received: Vec<_> = notifications.iter().collect::<Result<_, _>>()?;
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct Notifications<'c> {
    conn: &'c mut Connection,
}

impl Notifications<'_> {
    /// The number of notifications already received and not yet returned by an iterator.
    ///
    /// This does not read from the socket: notifications the server sent since the last
    /// query or iteration are counted only once an iterator (or a query) has read them.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.batch_execute("LISTEN a; NOTIFY a, 'x'")?;
    /// assert_eq!(conn.notifications().len(), 1);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQnotifies")]
    pub fn len(&self) -> usize {
        // libpq's queue cannot be counted without taking from it: move its entries to the
        // connection's own queue, which the iterators read first.
        let conn = self.conn.conn.as_ptr();
        let mut queue = self.conn.pending_notifications.borrow_mut();
        while let Some(notification) = take_from_libpq(conn) {
            queue.push_back(notification);
        }
        let len = queue.len();
        drop(queue);
        // Notices parsed while reading the queue may have panicked in the handler.
        self.conn.notices.resume_panic();
        len
    }

    /// Whether no notification is waiting (see [`len`](Notifications::len)).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// if conn.notifications().is_empty() {
    ///     println!("nothing yet");
    /// }
    /// ```
    #[doc(alias = "PQnotifies")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over the notifications that have arrived, without waiting: reads whatever
    /// the socket has (`PQconsumeInput`), then returns the queued notifications.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// for n in conn.notifications().iter() {
    ///     let n = n?;
    ///     println!("{} {}", n.channel(), n.payload());
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQconsumeInput")]
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            conn: self.conn,
            done: false,
        }
    }

    /// Iterates over notifications, waiting as long as it takes for each next one. The
    /// iterator ends only if the connection is lost (after yielding that error).
    ///
    /// Waiting needs a socket to wait on: on Unix, `poll`; elsewhere libpq 17's
    /// `PQsocketPoll`. With an older libpq on other platforms the iterator yields an error of
    /// kind [`Unsupported`](crate::error::ErrorKind::Unsupported).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.batch_execute("LISTEN jobs")?;
    /// for n in conn.notifications().blocking_iter() {
    ///     println!("job {}", n?.payload());
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsocketPoll")]
    pub fn blocking_iter(&mut self) -> BlockingIter<'_> {
        BlockingIter {
            conn: self.conn,
            done: false,
        }
    }

    /// Iterates over notifications, waiting at most `timeout` for each next one; the
    /// iterator ends (returns `None`) when a wait times out. Calling `next` again afterwards
    /// waits once more.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let batch: Vec<_> = conn
    ///     .notifications()
    ///     .timeout_iter(Duration::from_millis(500))
    ///     .collect::<Result<_, _>>()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsocketPoll")]
    pub fn timeout_iter(&mut self, timeout: Duration) -> TimeoutIter<'_> {
        TimeoutIter {
            conn: self.conn,
            timeout,
            done: false,
        }
    }
}

/// The notifications that have already arrived, from [`Notifications::iter`].
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let mut notifications = conn.notifications();
/// let iter: pqlib::notify::Iter<'_> = notifications.iter();
/// let count = iter.count();
/// ```
pub struct Iter<'a> {
    conn: &'a mut Connection,
    done: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Notification>;

    fn next(&mut self) -> Option<Self::Item> {
        next_notification(self.conn, &mut self.done, Wait::No)
    }
}

/// Notifications, waiting for each, from [`Notifications::blocking_iter`].
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let mut notifications = conn.notifications();
/// let mut iter: pqlib::notify::BlockingIter<'_> = notifications.blocking_iter();
/// let first = iter.next();
/// ```
pub struct BlockingIter<'a> {
    conn: &'a mut Connection,
    done: bool,
}

impl Iterator for BlockingIter<'_> {
    type Item = Result<Notification>;

    fn next(&mut self) -> Option<Self::Item> {
        next_notification(self.conn, &mut self.done, Wait::Forever)
    }
}

/// Notifications, waiting a bounded time for each, from [`Notifications::timeout_iter`].
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let mut notifications = conn.notifications();
/// let mut iter: pqlib::notify::TimeoutIter<'_> =
///     notifications.timeout_iter(std::time::Duration::from_secs(1));
/// let first = iter.next();
/// ```
pub struct TimeoutIter<'a> {
    conn: &'a mut Connection,
    timeout: Duration,
    done: bool,
}

impl Iterator for TimeoutIter<'_> {
    type Item = Result<Notification>;

    fn next(&mut self) -> Option<Self::Item> {
        // A timeout too large to add to now waits forever.
        let wait = Instant::now()
            .checked_add(self.timeout)
            .map_or(Wait::Forever, Wait::Until);
        next_notification(self.conn, &mut self.done, wait)
    }
}

/// How long `next_notification` may wait for the socket.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Until(Instant),
    Forever,
}

/// The iterators' common step: a queued notification, else what the socket has, else wait
/// (as allowed) for the socket and try again. After an error, `done` ends the iteration.
fn next_notification(
    conn: &mut Connection,
    done: &mut bool,
    wait: Wait,
) -> Option<Result<Notification>> {
    if *done {
        return None;
    }
    let outcome = next_inner(conn, wait);
    conn.notices.resume_panic();
    if let Some(Err(_)) = outcome {
        *done = true;
    }
    outcome
}

fn next_inner(conn: &mut Connection, wait: Wait) -> Option<Result<Notification>> {
    loop {
        if let Some(notification) = take_queued(conn) {
            return Some(Ok(notification));
        }
        if let Err(e) = consume_input(conn) {
            return Some(Err(e));
        }
        if let Some(notification) = take_queued(conn) {
            return Some(Ok(notification));
        }
        let deadline = match wait {
            Wait::No => return None,
            Wait::Until(deadline) => Some(deadline),
            Wait::Forever => None,
        };
        match wait_readable(conn, deadline) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The next notification already received: one `len()` moved to our queue, else libpq's.
fn take_queued(conn: &mut Connection) -> Option<Notification> {
    let ptr = conn.conn.as_ptr();
    conn.pending_notifications
        .get_mut()
        .pop_front()
        .or_else(|| take_from_libpq(ptr))
}

impl Notification {
    /// Pops libpq's queue, for the async connection task.
    ///
    /// # Safety
    /// `conn` must be a live connection that no other thread uses during the call.
    #[cfg(all(feature = "tokio", unix))]
    pub(crate) unsafe fn take(conn: *mut ffi::PGconn) -> Option<Notification> {
        take_from_libpq(conn)
    }
}

/// Pops libpq's queue (parsing what input libpq has buffered, not reading the socket).
fn take_from_libpq(conn: *mut ffi::PGconn) -> Option<Notification> {
    // SAFETY: `conn` is a live connection used by this thread only (callers hold the
    // `Connection`); PQnotifies returns NULL or a PGnotify the caller must free.
    let ptr = NonNull::new(unsafe { ffi::PQnotifies(conn) })?;
    // SAFETY: a PGnotify now owned by `PgNotify`, which frees it exactly once, also if
    // copying it out unwinds.
    let notify = unsafe { PgNotify::from_ptr(ptr.as_ptr()) };
    Some(notify.to_notification())
}

/// Reads whatever the server has sent, without blocking (`PQconsumeInput`).
fn consume_input(conn: &mut Connection) -> Result<()> {
    // SAFETY: the connection is alive and ours (`&mut`); PQconsumeInput only reads input
    // that is available and parses it into libpq's queues.
    let ok = unsafe { ffi::PQconsumeInput(conn.conn.as_ptr()) } != 0;
    if ok && !conn.is_closed() {
        return Ok(());
    }
    // Closed for a lost connection; a client error for anything else (out of memory).
    Err(conn.connection_error())
}

/// Waits until the connection's socket is readable (or closed) or `deadline` passes:
/// `Ok(true)` when there is something to read, `Ok(false)` on timeout.
fn wait_readable(conn: &Connection, deadline: Option<Instant>) -> Result<bool> {
    // SAFETY: the connection is alive.
    let socket = unsafe { ffi::PQsocket(conn.conn.as_ptr()) };
    if socket < 0 {
        return Err(Error::closed("the connection has no socket (it is closed)"));
    }
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let rc = poll_readable(socket, remaining)?;
        if rc > 0 {
            return Ok(true);
        }
        if rc == 0 {
            // Timed out. Timers may round the wait down slightly: only a deadline that has
            // really passed ends the wait.
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return Ok(false),
                _ => continue,
            }
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::Interrupted {
            continue; // EINTR: wait again for the time that is left.
        }
        return Err(Error::client("waiting for the server's socket failed").with_source(error));
    }
}

/// One wait for `socket` to be readable, for `remaining` (forever if `None`): the C return
/// value (> 0 ready, 0 timed out, < 0 error with `errno` set).
#[cfg(libpq_17)]
fn poll_readable(socket: c_int, remaining: Option<Duration>) -> Result<c_int> {
    let end_time: ffi::pg_usec_time_t = match remaining {
        None => -1,
        Some(remaining) => {
            // SAFETY: no arguments or preconditions.
            let now = unsafe { ffi::PQgetCurrentTimeUSec() };
            // Rounded up, so that libpq's millisecond rounding does not end the wait early.
            let micros = i64::try_from(remaining.as_nanos().div_ceil(1_000)).unwrap_or(i64::MAX);
            // 0 means "do not wait" to libpq, which a deadline that has passed wants anyway.
            now.saturating_add(micros).max(0)
        }
    };
    // SAFETY: a socket from PQsocket on a live connection; waiting for it reads nothing.
    Ok(unsafe { ffi::PQsocketPoll(socket, 1, 0, end_time) })
}

/// One wait for `socket` to be readable, for `remaining` (forever if `None`): the C return
/// value (> 0 ready, 0 timed out, < 0 error with `errno` set).
#[cfg(all(not(libpq_17), unix))]
fn poll_readable(socket: c_int, remaining: Option<Duration>) -> Result<c_int> {
    let timeout_ms: c_int = match remaining {
        None => -1,
        // Rounded up, so that a wait never ends before the deadline.
        Some(remaining) => {
            c_int::try_from(remaining.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX)
        }
    };
    let mut fd = libc::pollfd {
        fd: socket,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call; the socket belongs to a live
    // connection and poll only waits on it.
    Ok(unsafe { libc::poll(&mut fd, 1, timeout_ms) })
}

#[cfg(all(not(libpq_17), not(unix)))]
fn poll_readable(_socket: c_int, _remaining: Option<Duration>) -> Result<c_int> {
    Err(Error::unsupported(
        "waiting for notifications needs libpq 17 (PQsocketPoll) on this platform; \
         use Notifications::iter to poll instead",
    ))
}
