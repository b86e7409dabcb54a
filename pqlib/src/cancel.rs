//! Cancelling a running query from another thread: [`Connection::cancel_token`] and
//! [`CancelToken`].
//!
//! A cancel request is not sent over the connection itself (its thread is blocked waiting for
//! the query's result): libpq opens a second, short-lived connection to the server that
//! carries the session's process ID and secret cancel key. With libpq 17 or newer this is a
//! `PGcancelConn` (`PQcancelCreate`/`PQcancelBlocking`), which honours the connection's
//! `sslmode`/`gssencmode` and so can be encrypted; older libpq uses `PQcancel`, which always
//! sends the request in plain text.

use std::fmt;
use std::sync::Arc;

use foreign_types::{ForeignType, ForeignTypeRef, foreign_type};
use pqlib_sys as ffi;

use crate::handle::PgConnRef;
use crate::{Connection, Error, Result};

/// Cancels the query running on a [`Connection`], from any thread.
///
/// Made by [`Connection::cancel_token`]. A token is `Send + Sync + Clone`: clones share one
/// underlying libpq object (through an `Arc`), so hand a clone to each thread that may need to
/// cancel. It does not borrow the connection and keeps working after the connection is
/// dropped (the server then has no such session and ignores the request).
///
/// # Races
///
/// A cancel request asks the server to interrupt whatever the session is running *when the
/// request arrives*; it names no particular query. So:
///
/// - If the query has already finished, the session is idle and the request does nothing. A
///   cancel sent to an idle connection is harmless.
/// - If the connection has already started its *next* statement by the time the request
///   arrives, that statement is the one cancelled.
/// - `Ok(())` from [`cancel_query`](CancelToken::cancel_query) means the server received the
///   request, not that the query was cancelled: it may have completed first. Only the query's
///   own result tells, an error whose [`code`](crate::Error::code) is
///   [`SqlState::QUERY_CANCELED`](crate::error::SqlState::QUERY_CANCELED) (57014).
///
/// To be sure of cancelling the right statement, keep the connection's thread from starting
/// new work while a cancel may still be in flight (for example, have it wait for a message
/// from the cancelling thread after a cancelled query returns).
///
/// ```no_run
/// use std::thread;
/// use pqlib::error::SqlState;
///
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// let token = conn.cancel_token();
/// let worker = thread::spawn(move || conn.batch_execute("SELECT pg_sleep(60)"));
/// // ... later, from this thread:
/// token.cancel_query()?;
/// let error = worker.join().unwrap().unwrap_err();
/// assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
    process_id: u32,
}

/// Why no cancel object could be made: the request would fail, so `cancel_query` says so.
struct Failure {
    closed: bool,
    message: String,
}

impl Failure {
    fn to_error(&self) -> Error {
        if self.closed {
            Error::closed(self.message.clone())
        } else {
            Error::client(self.message.clone())
        }
    }
}

impl Connection {
    /// A token that cancels the query this connection is running, from another thread.
    ///
    /// The token holds a copy of what a cancel request needs (the server's address, the
    /// session's process ID and cancel key), so it stays valid after `self` is dropped or
    /// moved to another thread. Read [`CancelToken`]'s notes on races before relying on it.
    /// A token made from a closed connection returns an error from every
    /// [`cancel_query`](CancelToken::cancel_query).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let token = conn.cancel_token();
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(std::time::Duration::from_secs(5));
    ///     let _ = token.cancel_query(); // give the statement at most ~5 s
    /// });
    /// let result = conn.batch_execute("SELECT pg_sleep(60)");
    /// assert!(result.is_err());
    /// ```
    #[doc(alias = "PQcancelCreate", alias = "PQgetCancel")]
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken::for_conn(&self.conn)
    }
}

impl CancelToken {
    /// A token for the session on `conn`, which must be used by this thread only for the call.
    pub(crate) fn for_conn(conn: &PgConnRef) -> CancelToken {
        // SAFETY: the connection is alive.
        let pid = unsafe { ffi::PQbackendPID(conn.as_ptr()) };
        CancelToken {
            inner: Arc::new(Inner::new(conn)),
            process_id: u32::try_from(pid).unwrap_or(0),
        }
    }
}

impl CancelToken {
    /// Asks the server to cancel the query the connection is running now, and waits until the
    /// server has received the request (it opens a connection of its own; libpq's
    /// `connect_timeout` bounds how long that may take).
    ///
    /// Safe to call from any thread, concurrently with the connection's own thread and with
    /// other clones of this token. See [`CancelToken`] for what `Ok` does and does not mean.
    ///
    /// # Errors
    ///
    /// The request could not be delivered (the server is unreachable, refused it, or the
    /// token was made from a closed connection); the error carries libpq's message.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// let token = conn.cancel_token();
    /// if let Err(e) = token.cancel_query() {
    ///     eprintln!("could not send the cancel request: {e}");
    /// }
    /// ```
    #[doc(alias = "PQcancelBlocking", alias = "PQcancel")]
    pub fn cancel_query(&self) -> Result<()> {
        self.inner.cancel()
    }
}

impl fmt::Debug for CancelToken {
    /// Shows the session's process ID, never the secret cancel key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// libpq 17 and newer: PQcancelCreate / PQcancelBlocking.

#[cfg(libpq_17)]
foreign_type! {
    /// A `PGcancelConn`, freed with `PQcancelFinish`. It is a connection object of its own,
    /// independent of the `PGconn` it was copied from, so it may move to another thread
    /// (`Send`). It is not `Sync`: sending a request changes its state, so the token keeps it
    /// behind a `Mutex`.
    unsafe type PgCancelConn: Send {
        type CType = ffi::PGcancelConn;
        fn drop = ffi::PQcancelFinish;
    }
}

#[cfg(libpq_17)]
struct CancelConn {
    conn: PgCancelConn,
    /// Whether a request was sent with it, so it must be reset before the next one.
    used: bool,
}

#[cfg(libpq_17)]
enum Inner {
    Ready(std::sync::Mutex<CancelConn>),
    Failed(Failure),
}

#[cfg(libpq_17)]
impl Inner {
    fn new(connection: &PgConnRef) -> Inner {
        // SAFETY: the connection is alive and used by this thread only (`&Connection` on a
        // `!Sync` type); PQcancelCreate copies what it needs and returns NULL (out of memory)
        // or a PGcancelConn we own: `PgCancelConn` frees it with PQcancelFinish.
        let ptr = unsafe { ffi::PQcancelCreate(connection.as_ptr()) };
        if ptr.is_null() {
            return Inner::Failed(Failure {
                closed: false,
                message: "out of memory making a cancel request".into(),
            });
        }
        // SAFETY: a non-NULL PGcancelConn from PQcancelCreate, owned from here on.
        let conn = unsafe { PgCancelConn::from_ptr(ptr) };
        // SAFETY: the PGcancelConn is alive.
        let status = unsafe { ffi::PQcancelStatus(conn.as_ptr()) };
        if status == ffi::ConnStatusType::CONNECTION_BAD {
            // Made from a closed connection (or out of memory): libpq left it half built, and
            // PQcancelReset would turn that into something that looks startable. Keep only the
            // message.
            return Inner::Failed(Failure {
                closed: (connection.status() != ffi::ConnStatusType::CONNECTION_OK),
                message: cancel_error_message(&conn),
            });
        }
        Inner::Ready(std::sync::Mutex::new(CancelConn { conn, used: false }))
    }

    fn cancel(&self) -> Result<()> {
        let mutex = match self {
            Inner::Ready(mutex) => mutex,
            Inner::Failed(failure) => return Err(failure.to_error()),
        };
        // Nothing panics while the lock is held, but a poisoned lock would still hold a
        // usable PGcancelConn: the reset below puts it back into a known state.
        let mut cancel = mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cancel.used {
            // SAFETY: the PGcancelConn is alive and ours alone while the lock is held. It was
            // built completely (checked in `new`), so PQcancelReset returns it to the state
            // PQcancelCreate left it in, keeping the address and the cancel key.
            unsafe { ffi::PQcancelReset(cancel.conn.as_ptr()) };
        }
        cancel.used = true;
        // PQcancelBlocking may open TLS (libpq 17): the passphrase hook global comes first.
        crate::tls::install_passphrase_trampoline();
        // SAFETY: as above; PQcancelBlocking connects, sends the request and waits for the
        // server to close the connection, touching no other libpq object.
        let sent = unsafe { ffi::PQcancelBlocking(cancel.conn.as_ptr()) } != 0;
        if sent {
            Ok(())
        } else {
            Err(Error::connect(cancel_error_message(&cancel.conn)))
        }
    }
}

#[cfg(libpq_17)]
fn cancel_error_message(conn: &PgCancelConn) -> String {
    // SAFETY: the PGcancelConn is alive for the borrow; the message is copied before
    // returning.
    let message = unsafe { crate::handle::lossy_string(ffi::PQcancelErrorMessage(conn.as_ptr())) };
    match message {
        Some(message) if !message.trim().is_empty() => message,
        _ => "the cancel request failed".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Before libpq 17: PQgetCancel / PQcancel.

#[cfg(not(libpq_17))]
foreign_type! {
    /// A `PGcancel`, freed with `PQfreeCancel`. libpq documents that `PQcancel` only reads it
    /// and may be called from a thread other than the connection's, so several threads may
    /// use one at once (`Sync`).
    unsafe type PgCancel: Send + Sync {
        type CType = ffi::PGcancel;
        fn drop = ffi::PQfreeCancel;
    }
}

#[cfg(not(libpq_17))]
enum Inner {
    Ready(PgCancel),
    Failed(Failure),
}

/// The size of `PQcancel`'s error buffer; libpq's documentation recommends 256.
#[cfg(not(libpq_17))]
const ERRBUF_SIZE: usize = 256;

#[cfg(not(libpq_17))]
impl Inner {
    fn new(connection: &PgConnRef) -> Inner {
        // SAFETY: the connection is alive and used by this thread only (`&Connection` on a
        // `!Sync` type); PQgetCancel copies what it needs and returns NULL or a PGcancel we
        // own: `PgCancel` frees it with PQfreeCancel.
        let ptr = unsafe { ffi::PQgetCancel(connection.as_ptr()) };
        if ptr.is_null() {
            // NULL: the connection has no socket, or out of memory.
            let closed = connection.status() != ffi::ConnStatusType::CONNECTION_OK;
            let message = if closed {
                "the connection is closed".to_owned()
            } else {
                "could not make a cancel request (out of memory, or no connection)".to_owned()
            };
            return Inner::Failed(Failure { closed, message });
        }
        // SAFETY: a non-NULL PGcancel from PQgetCancel, owned from here on.
        Inner::Ready(unsafe { PgCancel::from_ptr(ptr) })
    }

    fn cancel(&self) -> Result<()> {
        let cancel = match self {
            Inner::Ready(cancel) => cancel,
            Inner::Failed(failure) => return Err(failure.to_error()),
        };
        let mut errbuf = [0u8; ERRBUF_SIZE];
        // SAFETY: the PGcancel is alive for &self and only read by PQcancel, which libpq
        // documents as safe to call from any thread; on failure it writes a NUL-terminated
        // message of at most ERRBUF_SIZE bytes into our local buffer.
        let sent = unsafe {
            ffi::PQcancel(
                cancel.as_ptr(),
                errbuf.as_mut_ptr().cast(),
                ERRBUF_SIZE as std::ffi::c_int,
            )
        } != 0;
        if sent {
            return Ok(());
        }
        let message = std::ffi::CStr::from_bytes_until_nul(&errbuf)
            .map(|m| m.to_string_lossy().trim_end().to_owned())
            .unwrap_or_default();
        if message.is_empty() {
            return Err(Error::connect("the cancel request failed"));
        }
        Err(Error::connect(message))
    }
}
