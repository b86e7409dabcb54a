//! TLS: what a connection negotiated, and the passphrase hook for encrypted client keys.
//!
//! TLS itself is configured with connection parameters ([`Config::ssl_mode`],
//! [`sslrootcert`](crate::Config::sslrootcert), [`sslcert`](crate::Config::sslcert),
//! [`sslkey`](crate::Config::sslkey), [`sslpassword`](crate::Config::sslpassword), …) exactly as for
//! `psql`. libpq's default `sslmode` is `prefer`, which encrypts when the server offers TLS
//! but checks nothing: use `verify-full` with an `sslrootcert` to know whom you talk to.
//!
//! After connecting, [`Connection::ssl_in_use`], [`Connection::ssl_attribute`] and (with the
//! `openssl` feature) `Connection::ssl` tell what was negotiated.
//!
//! ```no_run
//! use pqlib::config::SslMode;
//!
//! let mut config = pqlib::Config::new();
//! config
//!     .host("db.example.com")
//!     .user("app")
//!     .ssl_mode(SslMode::VerifyFull)
//!     .sslrootcert("/etc/ssl/certs/db-root.crt");
//! let conn = config.connect()?;
//! println!(
//!     "{} with {}",
//!     conn.ssl_attribute("protocol").unwrap_or_default(),
//!     conn.ssl_attribute("cipher").unwrap_or_default()
//! );
//! # Ok::<(), pqlib::Error>(())
//! ```
//!
//! # The passphrase hook is process-wide
//!
//! libpq has one hook for decrypting client keys per *process*
//! (`PQsetSSLKeyPassHook_OpenSSL`), not one per connection. [`set_ssl_key_passphrase_hook`]
//! is therefore a free function, not a [`Config`] setting: the callback it installs is asked
//! for the passphrase of every encrypted `sslkey` that any connection in the process loads,
//! on whatever thread is connecting. The callback learns which connection and key file it
//! is asked for through [`SslKeyPassphraseRequest`].
//!
//! [`Config`]: crate::Config
//! [`Config::ssl_mode`]: crate::Config::ssl_mode

use std::ffi::{CString, c_char, c_int};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock};

use pqlib_sys as ffi;

use crate::Connection;
use crate::handle::{conn_string, conninfo_option, lossy_string};

#[cfg(feature = "openssl")]
mod same_openssl;

impl Connection {
    /// One of libpq's TLS attributes of this connection, or `None` when the connection does
    /// not use TLS or libpq does not know the attribute.
    ///
    /// The names libpq knows (see [`ssl_attribute_names`](Connection::ssl_attribute_names))
    /// are, for OpenSSL:
    ///
    /// | name | value |
    /// |---|---|
    /// | `library` | `OpenSSL` |
    /// | `protocol` | `TLSv1.2`, `TLSv1.3`, … |
    /// | `key_bits` | the cipher's key length in bits, e.g. `256` |
    /// | `cipher` | e.g. `TLS_AES_256_GCM_SHA384` |
    /// | `compression` | `on` or `off` |
    /// | `alpn` | the negotiated ALPN protocol, `postgresql` (libpq 17 and later) |
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("sslmode=require").unwrap();
    /// if let Some(protocol) = conn.ssl_attribute("protocol") {
    ///     println!("encrypted with {protocol}");
    /// }
    /// ```
    #[doc(alias = "PQsslAttribute")]
    pub fn ssl_attribute(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: the connection is alive and `name` NUL-terminated; the result is NULL or a
        // string owned by libpq (static or in the TLS session), copied before returning.
        unsafe { lossy_string(ffi::PQsslAttribute(self.as_ptr(), name.as_ptr())) }
    }

    /// The names [`ssl_attribute`](Connection::ssl_attribute) accepts on this connection.
    /// Empty for a connection without TLS (libpq 16 and later; older ones list the names
    /// anyway, and each then reads as `None`).
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("sslmode=require").unwrap();
    /// for name in conn.ssl_attribute_names() {
    ///     println!("{name} = {:?}", conn.ssl_attribute(&name));
    /// }
    /// ```
    #[doc(alias = "PQsslAttributeNames")]
    pub fn ssl_attribute_names(&self) -> Vec<String> {
        // SAFETY: the connection is alive. libpq returns a static, NULL-terminated array of
        // static strings (or NULL), which is only read here.
        let mut next = unsafe { ffi::PQsslAttributeNames(self.as_ptr()) };
        let mut names = Vec::new();
        if next.is_null() {
            return names;
        }
        loop {
            // SAFETY: `next` points into the NULL-terminated array and never past its end:
            // the loop stops at the NULL entry.
            let entry = unsafe { *next };
            if entry.is_null() {
                return names;
            }
            // SAFETY: a non-NULL entry is a static NUL-terminated string.
            names.extend(unsafe { lossy_string(entry) });
            // SAFETY: `entry` was not the terminator, so the array has a next element.
            next = unsafe { next.add(1) };
        }
    }

    /// The OpenSSL session of this connection, or `Ok(None)` without TLS.
    ///
    /// The reference borrows the connection, so it cannot outlive the session, and no method
    /// that talks to the server (all take `&mut self`) can run while it is held.
    ///
    /// The `openssl` crate can only work on libpq's session if both use the same OpenSSL
    /// library. That holds for the `vendored` and `vendored-openssl` features (both build on
    /// `openssl-sys`) and for a system libpq with a system OpenSSL; it does not if libpq was
    /// built against another OpenSSL than the one `openssl-sys` links (e.g. `openssl/vendored`,
    /// which any crate in the dependency graph can switch on, with a system libpq). pqlib
    /// checks this once per process, at run time, and returns an error of kind
    /// [`Unsupported`](crate::error::ErrorKind::Unsupported) instead of a session it cannot
    /// safely hand out. [`ssl_attribute`](Connection::ssl_attribute) works either way. On
    /// platforms other than unix the check is not available, and only the `vendored`
    /// features give the session.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("sslmode=require").unwrap();
    /// if let Some(ssl) = conn.ssl()? {
    ///     println!("{} {:?}", ssl.version_str(), ssl.current_cipher().map(|c| c.name()));
    ///     if let Some(cert) = ssl.peer_certificate() {
    ///         println!("server: {:?}", cert.subject_name());
    ///     }
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[cfg(feature = "openssl")]
    #[doc(alias = "PQsslStruct")]
    pub fn ssl(&self) -> crate::Result<Option<&openssl::ssl::SslRef>> {
        use foreign_types_shared::ForeignTypeRef;

        // SAFETY: the connection is alive; for the name "OpenSSL" libpq returns the
        // connection's `SSL *` or NULL.
        let ptr = unsafe { ffi::PQsslStruct(self.as_ptr(), c"OpenSSL".as_ptr()) };
        if ptr.is_null() {
            return Ok(None);
        }
        self.check_same_openssl()?;
        // SAFETY: a live `SSL *` owned by libpq, freed only by PQfinish or PQreset, which need
        // the connection by value or `&mut`: impossible while the returned borrow of `self`
        // lives. It is handed out as a shared reference, through which `SslRef` allows no
        // mutation, and no I/O happens on the connection meanwhile (see above). It was made by
        // the OpenSSL that the `openssl` crate calls (checked just above).
        Ok(Some(unsafe { openssl::ssl::SslRef::from_ptr(ptr.cast()) }))
    }

    /// Whether libpq's OpenSSL is the `openssl` crate's; decided once per process.
    #[cfg(feature = "openssl")]
    fn check_same_openssl(&self) -> crate::Result<()> {
        static VERDICT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let verdict = VERDICT.get_or_init(|| {
            #[cfg(unix)]
            {
                // SAFETY: the connection is alive and uses TLS; for "library" libpq returns
                // a static string inside libpq (or NULL), only used as an address here.
                let data = unsafe { ffi::PQsslAttribute(self.as_ptr(), c"library".as_ptr()) };
                if data.is_null() {
                    return Err("libpq does not name its TLS library".into());
                }
                same_openssl::compare(&same_openssl::probe(data.cast()))
            }
            #[cfg(not(unix))]
            {
                if cfg!(feature = "vendored") {
                    Ok(())
                } else {
                    Err(
                        "cannot check on this platform that libpq uses the `openssl` crate's \
                         OpenSSL (the `vendored` features guarantee it)"
                            .into(),
                    )
                }
            }
        });
        verdict.clone().map_err(|reason| {
            crate::Error::unsupported(format!(
                "Connection::ssl: {reason}; the session cannot be used through the `openssl` \
                 crate (ssl_attribute still works)"
            ))
        })
    }
}

/// The TLS library libpq was built with: `Some("OpenSSL")`, or `None` without TLS support
/// (and always `None` with libpq 14, which cannot tell without a connection).
///
/// ```
/// if let Some(library) = pqlib::tls::library() {
///     println!("libpq uses {library}");
/// }
/// ```
#[doc(alias = "PQsslAttribute")]
pub fn library() -> Option<String> {
    // SAFETY: a NULL connection is allowed; the result is NULL or a static string.
    unsafe {
        lossy_string(ffi::PQsslAttribute(
            std::ptr::null_mut(),
            c"library".as_ptr(),
        ))
    }
}

/// What a [passphrase hook](set_ssl_key_passphrase_hook) is asked for: the connection being
/// set up and the key file it is loading.
///
/// It only lives during the call of the hook.
pub struct SslKeyPassphraseRequest<'a> {
    /// The connection being set up, or NULL; alive while the hook runs.
    conn: *mut ffi::PGconn,
    capacity: usize,
    _during_the_call: PhantomData<&'a ffi::PGconn>,
}

impl SslKeyPassphraseRequest<'_> {
    fn text(
        &self,
        getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut c_char,
    ) -> Option<String> {
        // SAFETY: the connection is NULL or alive during the hook.
        unsafe { conn_string(self.conn, getter) }
    }

    /// The host being connected to (as given, e.g. a name or an address).
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     eprintln!("key for {:?}", request.host());
    ///     None
    /// });
    /// ```
    #[doc(alias = "PQhost")]
    pub fn host(&self) -> Option<String> {
        self.text(ffi::PQhost)
    }

    /// The port being connected to.
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     eprintln!("key for port {:?}", request.port());
    ///     None
    /// });
    /// ```
    #[doc(alias = "PQport")]
    pub fn port(&self) -> Option<String> {
        self.text(ffi::PQport)
    }

    /// The user name the connection logs in as.
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     eprintln!("key for user {:?}", request.user());
    ///     None
    /// });
    /// ```
    #[doc(alias = "PQuser")]
    pub fn user(&self) -> Option<String> {
        self.text(ffi::PQuser)
    }

    /// The database name.
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     eprintln!("key for database {:?}", request.dbname());
    ///     None
    /// });
    /// ```
    #[doc(alias = "PQdb")]
    pub fn dbname(&self) -> Option<String> {
        self.text(ffi::PQdb)
    }

    /// The `sslkey` file being loaded, as the connection names it (`None` when it uses
    /// libpq's default, `~/.postgresql/postgresql.key`).
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     let key = request.sslkey()?;
    ///     std::fs::read_to_string(format!("{key}.pass")).ok()
    /// });
    /// ```
    #[doc(alias = "PQconninfo")]
    pub fn sslkey(&self) -> Option<String> {
        // SAFETY: the connection is NULL or alive during the hook.
        unsafe { conninfo_option(self.conn, c"sslkey") }
    }

    /// The longest passphrase, in bytes, that OpenSSL's buffer takes. A longer one is not
    /// truncated: the key is not decrypted and the connection fails.
    ///
    /// ```no_run
    /// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
    ///     assert!(request.max_len() >= 1023);
    ///     None
    /// });
    /// ```
    pub fn max_len(&self) -> usize {
        self.capacity.saturating_sub(1)
    }
}

impl fmt::Debug for SslKeyPassphraseRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SslKeyPassphraseRequest")
            .field("host", &self.host())
            .field("port", &self.port())
            .field("user", &self.user())
            .field("sslkey", &self.sslkey())
            .finish_non_exhaustive()
    }
}

type Hook = Arc<dyn Fn(&SslKeyPassphraseRequest<'_>) -> Option<String> + Send + Sync>;

/// The Rust hook the trampoline calls; `None`: libpq's default behaviour (`sslpassword`).
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Registers pqlib's passphrase trampoline with libpq, once per process (and, with libpq 18,
/// its auth-data trampoline for `crate::oauth`, a C global of the same kind). Every pqlib path
/// that can make libpq open a TLS session (blocking and async connect, reset, cancel, ping)
/// calls this first, as does [`set_ssl_key_passphrase_hook`].
///
/// libpq keeps the hook in a plain C global (`PQsslKeyPassHook`) that every TLS connection
/// attempt reads without a lock. Writing it once, before pqlib's first connection attempt and
/// under a lock that every later attempt takes too, means it is never written while another
/// thread reads it: each read happens after the one write. Replacing the user's hook later
/// only changes [`HOOK`], which is behind a Rust lock.
///
/// On unix the lock is a `pthread_mutex_t` rather than a `std::sync::Once`: the mutex is
/// visible to race detectors (helgrind, ThreadSanitizer intercept it), so the ordering of
/// the write before every read is checked, not only true (`scripts/memcheck.sh helgrind`).
/// Taking an uncontended mutex costs nothing next to opening a connection.
pub(crate) fn install_passphrase_trampoline() {
    install_once(|| {
        // SAFETY: registers a function that stays valid for the life of the process and
        // matches `PQsslKeyPassHook_OpenSSL_type`. Called once, before any pqlib path starts
        // a TLS connection attempt (see above).
        unsafe { ffi::PQsetSSLKeyPassHook_OpenSSL(Some(passphrase_trampoline)) };
        // SAFETY: `register_trampoline`'s contract is this place: once, under this lock,
        // before any connection attempt (libpq's other process-wide hook, `PQauthDataHook`).
        #[cfg(libpq_18)]
        unsafe {
            crate::oauth::register_trampoline()
        };
    });
}

#[cfg(unix)]
fn install_once(install: impl FnOnce()) {
    use std::cell::UnsafeCell;

    struct Installer {
        lock: UnsafeCell<libc::pthread_mutex_t>,
        done: UnsafeCell<bool>,
    }
    // SAFETY: `lock` is a pthread mutex, made for sharing between threads; `done` is only
    // read or written by a thread that holds `lock`.
    unsafe impl Sync for Installer {}
    static INSTALLER: Installer = Installer {
        lock: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        done: UnsafeCell::new(false),
    };

    // SAFETY: a statically initialised default mutex, never moved or destroyed; it is always
    // unlocked below by the thread that locked it (`install` cannot unwind: it only calls C).
    let locked = unsafe { libc::pthread_mutex_lock(INSTALLER.lock.get()) };
    // A default mutex only fails to lock on a relock by its owner, which cannot happen here.
    debug_assert_eq!(locked, 0);
    // SAFETY: the lock is held, so no other thread touches `done`.
    let done = unsafe { &mut *INSTALLER.done.get() };
    if !*done {
        install();
        *done = true;
    }
    // SAFETY: locked by this thread above.
    unsafe { libc::pthread_mutex_unlock(INSTALLER.lock.get()) };
}

#[cfg(not(unix))]
fn install_once(install: impl FnOnce()) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(install);
}

/// Installs `hook` as the source of passphrases for encrypted client keys (`sslkey`), for
/// **every connection in the process**, replacing any hook installed before.
///
/// libpq asks when a connection loads an encrypted key, on the thread that is connecting.
/// The hook returns the passphrase, or `None` to give none (the key then cannot be decrypted
/// and the connection fails). The connection's own `sslpassword` is *not* used while a hook
/// is installed: the hook decides, as libpq documents for `PQsetSSLKeyPassHook_OpenSSL`.
///
/// - **Thread-safe**: the hook is kept behind a lock; it may be replaced or
///   [cleared](clear_ssl_key_passphrase_hook) at any time from any thread, and may run on
///   several connecting threads at once (hence `Fn + Send + Sync`).
/// - **Panics** never unwind into libpq: a panicking hook counts as giving no passphrase, so
///   that connection fails ("could not load private key file") and the panic is logged
///   (`log` target `pqlib::tls`); the process and other connections go on.
/// - A passphrase longer than [`SslKeyPassphraseRequest::max_len`] or containing a NUL byte
///   is refused the same way (never truncated). pqlib overwrites its copy with zeros after
///   handing it to OpenSSL.
///
/// This may be called at any time, also while other threads connect: libpq keeps its hook in
/// a plain C global that connecting threads read without a lock, so pqlib registers its own
/// trampoline there once, before its first connection attempt, and never writes that global
/// again; this function only replaces the Rust hook the trampoline asks. A consequence: in a
/// process that uses pqlib, libpq never prompts for a passphrase on the terminal (an
/// encrypted key without a hook or `sslpassword` fails to load instead). Do not call
/// `pqlib_sys::PQsetSSLKeyPassHook_OpenSSL` yourself: it would replace pqlib's trampoline for
/// the whole process, racing with connecting threads.
///
/// ```no_run
/// pqlib::tls::set_ssl_key_passphrase_hook(|request| {
///     // e.g. from a secret store, keyed by the key file
///     let key = request.sslkey()?;
///     std::env::var(format!("PASSPHRASE_FOR_{}", key.replace(['/', '.'], "_"))).ok()
/// });
/// let conn = pqlib::Connection::connect(
///     "host=db sslmode=verify-full sslcert=client.crt sslkey=client.key",
/// )?;
/// # Ok::<(), pqlib::Error>(())
/// ```
#[doc(alias = "PQsetSSLKeyPassHook_OpenSSL")]
pub fn set_ssl_key_passphrase_hook<F>(hook: F)
where
    F: Fn(&SslKeyPassphraseRequest<'_>) -> Option<String> + Send + Sync + 'static,
{
    let hook: Hook = Arc::new(hook);
    let previous = HOOK
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(hook);
    // Dropped outside the lock: a hook's captured state may do anything when dropped.
    drop(previous);
    // Normally done already by the first connection attempt; a no-op then.
    install_passphrase_trampoline();
}

/// Removes the hook [`set_ssl_key_passphrase_hook`] installed, for every connection in the
/// process. Encrypted keys are then decrypted with the connection's `sslpassword`, as with
/// libpq's default hook; without one, the key is not decrypted (no terminal prompt).
///
/// ```no_run
/// pqlib::tls::clear_ssl_key_passphrase_hook();
/// ```
pub fn clear_ssl_key_passphrase_hook() {
    let previous = HOOK.write().unwrap_or_else(PoisonError::into_inner).take();
    drop(previous);
}

/// Whether a hook installed by [`set_ssl_key_passphrase_hook`] is in place.
///
/// ```
/// pqlib::tls::clear_ssl_key_passphrase_hook();
/// assert!(!pqlib::tls::has_ssl_key_passphrase_hook());
/// ```
pub fn has_ssl_key_passphrase_hook() -> bool {
    HOOK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

/// The C hook libpq calls: `int (*)(char *buf, int size, PGconn *conn)`. Writes at most
/// `size` bytes (the passphrase and its NUL) and returns the passphrase's length.
unsafe extern "C" fn passphrase_trampoline(
    buf: *mut c_char,
    size: c_int,
    conn: *mut ffi::PGconn,
) -> c_int {
    let capacity = match usize::try_from(size) {
        Ok(capacity) if capacity > 0 && !buf.is_null() => capacity,
        _ => return 0,
    };
    // SAFETY: OpenSSL's buffer has `capacity` (>= 1) writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), capacity) };
    out[0] = 0;
    let hook = HOOK.read().unwrap_or_else(PoisonError::into_inner).clone();
    let Some(hook) = hook else {
        // SAFETY: libpq's own default, with the arguments libpq gave us: it copies the
        // connection's sslpassword (at most `size` bytes, NUL-terminated) or returns 0.
        return unsafe { ffi::PQdefaultSSLKeyPassHook_OpenSSL(buf, size, conn) };
    };
    // Everything that runs Rust code the user supplied (the hook, the drop of its captured
    // state, a logger) runs inside catch_unwind: nothing unwinds into libpq.
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        // libpq passes the connection being set up (or NULL), alive during this call; the
        // request is only read through libpq's accessors and cannot outlive the call.
        let request = SslKeyPassphraseRequest {
            conn,
            capacity,
            _during_the_call: PhantomData,
        };
        let passphrase = hook(&request);
        drop(hook);
        let Some(passphrase) = passphrase else {
            return 0;
        };
        let mut bytes = passphrase.into_bytes();
        let len = bytes.len();
        let written = if len >= capacity {
            log::error!(
                target: "pqlib::tls",
                "the SSL key passphrase hook returned {len} bytes; OpenSSL takes at most {}",
                capacity - 1
            );
            0
        } else if bytes.contains(&0) {
            log::error!(target: "pqlib::tls", "the SSL key passphrase hook returned a NUL byte");
            0
        } else {
            out[..len].copy_from_slice(&bytes);
            out[len] = 0;
            len
        };
        wipe(&mut bytes);
        written
    }));
    match outcome {
        // `written < capacity <= c_int::MAX`.
        Ok(written) => written as c_int,
        Err(payload) => {
            // SAFETY: as above; the closure's borrow of the buffer has ended.
            unsafe { *buf = 0 };
            let logged = catch_unwind(AssertUnwindSafe(|| {
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a non-string payload");
                log::error!(
                    target: "pqlib::tls",
                    "the SSL key passphrase hook panicked ({message}); no passphrase given"
                );
            }));
            // Payloads are user data whose Drop may panic: never dropped outside a guard.
            if let Err(again) = logged {
                crate::notice::dispose(again);
            }
            crate::notice::dispose(payload);
            0
        }
    }
}

/// Overwrites a secret with zeros in a way the optimiser keeps.
fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference to a byte.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
