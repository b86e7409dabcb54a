//! Notices (server messages that are not errors: `RAISE NOTICE`, warnings) reach Rust through
//! libpq's notice receiver. The C callback is a trampoline that catches panics: a panic never
//! unwinds into libpq; it is stored and re-raised once the libpq call has returned.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use foreign_types::ForeignTypeRef;
use pqlib_sys as ffi;

use crate::error::DbError;
use crate::handle::{PgConnRef, PgResultRef};
use crate::{Config, Connection};

pub(crate) type Handler = Box<dyn FnMut(&DbError) + Send>;

/// A handler that can be shared and called through a `&`.
type SharedHandler = Mutex<dyn FnMut(&DbError) + Send>;

/// A notice handler given on a [`Config`], before connecting: shared by every connection made
/// from the config (and its clones), called by one of them at a time.
#[derive(Clone)]
pub(crate) struct NoticeCallback(Arc<SharedHandler>);

impl NoticeCallback {
    /// Calls the handler (a panic unwinds to the caller; the lock is not held poisoned).
    pub(crate) fn call(&self, notice: &DbError) {
        let mut handler = lock(&self.0);
        (*handler)(notice);
    }

    /// A connection's handler that calls this one.
    pub(crate) fn handler(&self) -> Handler {
        let callback = self.clone();
        Box::new(move |notice: &DbError| callback.call(notice))
    }

    pub(crate) fn same(&self, other: &NoticeCallback) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Shared by the connection and every result it produced: libpq copies the notice hook into
/// each `PGresult` and may call it through a result after the connection is gone.
pub(crate) struct NoticeState {
    handler: Mutex<Option<Handler>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked poisoned nothing we rely on: the payload is kept separately.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NoticeState {
    /// State for a result that no connection made (`PQmakeEmptyPGresult` with a NULL
    /// connection): nothing can call the receiver through it.
    pub(crate) fn detached() -> Arc<NoticeState> {
        Arc::new(NoticeState {
            handler: Mutex::new(None),
            panic: Mutex::new(None),
        })
    }

    /// State for a connection about to be made, with its handler (`None`: notices are
    /// logged).
    pub(crate) fn new(handler: Option<Handler>) -> Arc<NoticeState> {
        Arc::new(NoticeState {
            handler: Mutex::new(handler),
            panic: Mutex::new(None),
        })
    }

    /// Installs the trampoline on a connection that has just been started, before
    /// `PQconnectPoll` can read anything from the server.
    ///
    /// The caller keeps `state` alive for as long as the connection and every result it made
    /// may call the receiver: the connection's owner and each result hold a clone of the Arc.
    pub(crate) fn attach(state: &Arc<NoticeState>, conn: &PgConnRef) {
        // SAFETY: the connection is alive. The argument points into `state`, which outlives
        // every call libpq makes through it (see above).
        unsafe {
            ffi::PQsetNoticeReceiver(
                conn.as_ptr(),
                Some(receive_notice),
                Arc::as_ptr(state).cast_mut().cast::<c_void>(),
            );
        }
    }

    /// Replaces the handler (`None`: log notices).
    pub(crate) fn set_handler(&self, handler: Handler) {
        *lock(&self.handler) = Some(handler);
    }

    fn deliver(&self, notice: &DbError) {
        let mut handler = lock(&self.handler);
        match handler.as_mut() {
            Some(handler) => handler(notice),
            None => log_notice(notice),
        }
    }

    /// Re-raises, on the caller's thread, a panic a handler raised during a libpq call.
    /// While the thread is already unwinding (a `Drop` talking to the server), a second
    /// panic would abort the process, so the handler's panic is logged and dropped instead.
    pub(crate) fn resume_panic(&self) {
        let payload = lock(&self.panic).take();
        if let Some(payload) = payload {
            if std::thread::panicking() {
                log::error!(target: "pqlib::notice", "the notice handler panicked during unwinding");
                // Not dropped: a payload whose Drop panics would abort the unwinding thread.
                std::mem::forget(payload);
                return;
            }
            resume_unwind(payload);
        }
    }
}

impl Drop for NoticeState {
    fn drop(&mut self) {
        // A payload nobody re-raised (the last result outlived the connection, or the
        // connection closed first) is user data whose Drop may panic.
        let payload = self
            .panic
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(payload) = payload {
            dispose(payload);
        }
    }
}

/// Drops a panic payload that will not be raised, without letting its `Drop` unwind: a
/// payload is user data, and its `Drop` may panic. If it does, the new payload is leaked
/// rather than dropped (its `Drop` may panic too, and so on), and while the thread is
/// already unwinding nothing is dropped at all.
pub(crate) fn dispose(payload: Box<dyn Any + Send>) {
    if std::thread::panicking() {
        std::mem::forget(payload);
        return;
    }
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

fn log_notice(notice: &DbError) {
    crate::trace::notice(notice);
}

/// The C-ABI notice receiver.
extern "C" fn receive_notice(arg: *mut c_void, result: *const ffi::PGresult) {
    if arg.is_null() || result.is_null() {
        return;
    }
    // SAFETY: `arg` is the NoticeState registered in `install`, kept alive by its Arcs (see
    // there). `result` is a notice result libpq owns and frees after we return; it is only
    // borrowed here.
    let (state, result) = unsafe {
        (
            &*arg.cast::<NoticeState>(),
            PgResultRef::from_ptr(result.cast_mut()),
        )
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let notice = DbError::from_result(result);
        state.deliver(&notice);
    }));
    if let Err(payload) = outcome {
        // The first panic of a libpq call is the one raised; a later one (a second notice in
        // the same call) is dropped here, inside `dispose`'s catch_unwind: nothing a payload's
        // Drop does may unwind out of this extern "C" function.
        let mut stored = lock(&state.panic);
        if stored.is_none() {
            *stored = Some(payload);
        } else {
            drop(stored);
            dispose(payload);
        }
    }
}

impl Connection {
    /// Calls `handler` for each notice or warning the server sends on this connection
    /// (`RAISE NOTICE`, implicit-commit warnings, …), replacing the previous handler.
    /// Without one, notices go to the `log` crate (target `pqlib::notice`; to `tracing` with
    /// the `tracing` feature), never to stderr. To see the notices the server sends while the
    /// connection is being set up, give the handler on the [`Config`] instead
    /// ([`Config::notice_callback`]).
    ///
    /// If the handler panics, the panic is caught before it can unwind into libpq and is
    /// raised again on this thread when the libpq call that delivered the notice returns;
    /// the connection stays usable.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.set_notice_handler(|notice| eprintln!("server says: {}", notice.message()));
    /// conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsetNoticeReceiver")]
    pub fn set_notice_handler<F>(&mut self, handler: F)
    where
        F: FnMut(&DbError) + Send + 'static,
    {
        self.notices.set_handler(Box::new(handler));
    }

    /// Removes the notice handler; notices go to the `log` crate again.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.clear_notice_handler();
    /// ```
    pub fn clear_notice_handler(&mut self) {
        *lock(&self.notices.handler) = None;
    }
}

impl Config {
    /// Calls `callback` for each notice or warning the server sends on connections made from
    /// this config, from the first: the notices sent while the session starts (such as the
    /// warning that a too-long `application_name` was truncated) too. Replaces the previous
    /// callback; without one, notices go to the `log` crate (target `pqlib::notice`; to
    /// `tracing` with the `tracing` feature), never to stderr.
    ///
    /// The callback is shared by every connection made from this config and its clones, and
    /// called by one of them at a time (behind a lock): so it must not itself run statements
    /// on, or connect with, a connection that uses this callback, which would wait on that
    /// lock forever. [`Connection::set_notice_handler`] replaces it on one
    /// connection. If it panics in the blocking client, the panic is caught before it can
    /// unwind into libpq and raised again when the libpq call that delivered the notice
    /// returns: out of [`Connection::connect_config`] for a notice sent during startup.
    /// The async client ([`crate::tokio`]) calls it from its
    /// [`Connection`](crate::tokio::Connection) task, in place of returning the notices from
    /// `poll_message`; a panic there ends that task.
    ///
    /// ```no_run
    /// let mut config: pqlib::Config = "host=localhost user=postgres".parse()?;
    /// config.notice_callback(|notice| eprintln!("{}: {}", notice.severity(), notice.message()));
    /// let conn = config.application_name(&"x".repeat(70)).connect()?; // truncated: a NOTICE
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsetNoticeReceiver")]
    #[doc(alias = "set_notice_handler")]
    pub fn notice_callback<F>(&mut self, callback: F) -> &mut Config
    where
        F: FnMut(&DbError) + Send + 'static,
    {
        self.notice_callback = Some(NoticeCallback(Arc::new(Mutex::new(callback))));
        self
    }

    /// Whether a [`notice_callback`](Config::notice_callback) is set.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// assert!(!config.has_notice_callback());
    /// config.notice_callback(|_| {});
    /// assert!(config.has_notice_callback());
    /// ```
    pub fn has_notice_callback(&self) -> bool {
        self.notice_callback.is_some()
    }
}
