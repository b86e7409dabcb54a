//! OAuth: handing libpq a bearer token from Rust (libpq 18 and later).
//!
//! A server whose `pg_hba.conf` says `oauth` asks the client for an OAuth 2.0 bearer token
//! (SASL `OAUTHBEARER`). The connection names the authorization server with
//! [`oauth_issuer`](crate::Config::oauth_issuer) and the client with
//! [`oauth_client_id`](crate::Config::oauth_client_id); the server then tells libpq where the
//! issuer's discovery document is and which scope it wants, and libpq asks for a token.
//!
//! libpq's built-in way to get one (the device authorization flow of the separate
//! `libpq-oauth` module, which prompts a human) does not suit most programs. Install a
//! [token hook](set_bearer_token_hook) instead: it is asked for the token, with the discovery
//! URI, scope and connection it is for, and returns it, e.g. from a token cache or a secret
//! store.
//!
//! This module exists only when pqlib is built against libpq 18 or newer (`cfg(libpq_18)`,
//! set by `pqlib-sys`; the `vendored` features bundle libpq 18). With an older libpq,
//! connecting to a server that asks for OAuth fails with libpq's message.
//!
//! ```no_run
//! pqlib::oauth::set_bearer_token_hook(|request| {
//!     // e.g. a token fetched earlier for this issuer and scope
//!     let token = std::env::var("MY_APP_TOKEN").map_err(|e| e.to_string())?;
//!     println!("token for {} (scope {:?})", request.openid_configuration(), request.scope());
//!     Ok::<_, String>(Some(token))
//! });
//!
//! let mut config = pqlib::Config::new();
//! config
//!     .host("db.example.com")
//!     .user("app")
//!     .oauth_issuer("https://login.example.com")
//!     .oauth_client_id("my-app");
//! let conn = config.connect()?;
//! # Ok::<(), pqlib::Error>(())
//! ```
//!
//! # The hook is process-wide
//!
//! libpq has one hook for authentication data per *process* (`PQsetAuthDataHook`), not one per
//! connection. [`set_bearer_token_hook`] is therefore a free function, like
//! [`tls::set_ssl_key_passphrase_hook`](crate::tls::set_ssl_key_passphrase_hook): the callback
//! it installs is asked for the token of every connection in the process that authenticates
//! with OAuth, on whatever thread is connecting (for the async client: the thread that polls
//! the connection, so the hook should answer quickly, from a cache, rather than block).
//! [`BearerTokenRequest`] tells it which connection asks.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock};

use pqlib_sys as ffi;

use crate::handle::{conn_string, conninfo_option, lossy_string};

/// What a [token hook](set_bearer_token_hook) is asked for: the token one connection needs,
/// as the server described it.
///
/// It only lives during the call of the hook.
pub struct BearerTokenRequest<'a> {
    /// The connection being set up, or NULL; alive while the hook runs.
    conn: *mut ffi::PGconn,
    /// libpq's request, alive and unchanged by libpq while the hook runs.
    request: *const ffi::PGoauthBearerRequest,
    _during_the_call: PhantomData<&'a ffi::PGoauthBearerRequest>,
}

impl BearerTokenRequest<'_> {
    fn text(
        &self,
        getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut c_char,
    ) -> Option<String> {
        // SAFETY: the connection is NULL or alive during the hook.
        unsafe { conn_string(self.conn, getter) }
    }

    /// The issuer's OpenID discovery document (`…/.well-known/openid-configuration`), as the
    /// server or the connection's `oauth_issuer` gave it: which authorization server the
    /// token must come from.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("asked for a token of {}", request.openid_configuration());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    pub fn openid_configuration(&self) -> String {
        // SAFETY: `request` is libpq's request, alive during the hook; the field is NULL or
        // a NUL-terminated string libpq owns, copied here.
        unsafe { lossy_string((*self.request).openid_configuration) }.unwrap_or_default()
    }

    /// The scope(s) the token must carry, space-separated (the connection's `oauth_scope`,
    /// else what the server asked for), or `None` when neither names one.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("scope {:?}", request.scope());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    pub fn scope(&self) -> Option<String> {
        // SAFETY: as in `openid_configuration`.
        unsafe { lossy_string((*self.request).scope) }
    }

    /// The host being connected to (as given, e.g. a name or an address).
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("token for {:?}", request.host());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQhost")]
    pub fn host(&self) -> Option<String> {
        self.text(ffi::PQhost)
    }

    /// The port being connected to.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("token for port {:?}", request.port());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQport")]
    pub fn port(&self) -> Option<String> {
        self.text(ffi::PQport)
    }

    /// The user name (role) the connection logs in as.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("token for user {:?}", request.user());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQuser")]
    pub fn user(&self) -> Option<String> {
        self.text(ffi::PQuser)
    }

    /// The database name.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("token for database {:?}", request.dbname());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQdb")]
    pub fn dbname(&self) -> Option<String> {
        self.text(ffi::PQdb)
    }

    /// The connection's `oauth_issuer` parameter.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("issuer {:?}", request.oauth_issuer());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQconninfo")]
    pub fn oauth_issuer(&self) -> Option<String> {
        self.conninfo(c"oauth_issuer")
    }

    /// The connection's `oauth_client_id` parameter.
    ///
    /// ```no_run
    /// pqlib::oauth::set_bearer_token_hook(|request| {
    ///     eprintln!("client {:?}", request.oauth_client_id());
    ///     Ok::<_, String>(None)
    /// });
    /// ```
    #[doc(alias = "PQconninfo")]
    pub fn oauth_client_id(&self) -> Option<String> {
        self.conninfo(c"oauth_client_id")
    }

    /// A non-empty connection parameter of the connection being set up.
    fn conninfo(&self, keyword: &CStr) -> Option<String> {
        // SAFETY: the connection is NULL or alive during the hook.
        unsafe { conninfo_option(self.conn, keyword) }
    }
}

impl fmt::Debug for BearerTokenRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokenRequest")
            .field("openid_configuration", &self.openid_configuration())
            .field("scope", &self.scope())
            .field("host", &self.host())
            .field("port", &self.port())
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

type Hook = Arc<dyn Fn(&BearerTokenRequest<'_>) -> Result<Option<String>, String> + Send + Sync>;

/// The Rust hook the trampoline calls; `None`: libpq's default (its built-in flow, if any).
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Registers pqlib's auth-data trampoline with libpq.
///
/// # Safety
///
/// libpq keeps the hook in a plain C global that every connection attempt reads without a
/// lock, so this must only be called where [`crate::tls::install_passphrase_trampoline`]
/// registers its own hook: once per process, under its lock, before any pqlib path starts a
/// connection attempt (every such path takes that lock first). Replacing the user's hook
/// later only changes [`HOOK`], which is behind a Rust lock.
pub(crate) unsafe fn register_trampoline() {
    // SAFETY: a function valid for the life of the process matching `PQauthDataHook_type`;
    // the caller guarantees that no connection attempt reads the global meanwhile.
    unsafe { ffi::PQsetAuthDataHook(Some(auth_data_trampoline)) }
}

/// Installs `hook` as the source of OAuth bearer tokens for **every connection in the
/// process**, replacing any hook installed before.
///
/// libpq asks when a server requests OAuth authentication and the connection has no token
/// yet (after the server told it the issuer's discovery URI and scope), on the thread that is
/// connecting. The hook answers:
///
/// - `Ok(Some(token))`: the bearer token to send. libpq keeps its own copy; pqlib's copy is
///   overwritten with zeros and freed when libpq says it is done with it.
/// - `Ok(None)`: not handled here; libpq goes on as without a hook (its built-in device flow
///   if the `libpq-oauth` module is installed, else the connection fails with "no OAuth flows
///   are available").
/// - `Err(reason)`: the connection fails with libpq's "user-defined OAuth flow failed", to
///   which pqlib adds the reason ("the OAuth bearer token hook failed: …"); it is also logged
///   (`log` target `pqlib::oauth`, level error).
///
/// The server decides whether the token is good: a rejected one fails the connection with
/// the server's message ("OAuth bearer authentication failed for user …").
///
/// - **Thread-safe**: the hook is kept behind a lock; it may be replaced or
///   [cleared](clear_bearer_token_hook) at any time from any thread, and may run on several
///   connecting threads at once (hence `Fn + Send + Sync`).
/// - **Panics** never unwind into libpq: a panicking hook fails that connection like an
///   `Err` (the error says "panicked (message)") and the panic is logged as above; the
///   process, the hook and other connections go on.
/// - A token containing a NUL byte, or an empty one, is refused the same way (never
///   truncated).
///
/// Only tokens the hook has at hand can be given: libpq's asynchronous variant (a socket to
/// poll while the token is fetched) is not offered, so a hook that must fetch a token over
/// the network blocks the connecting thread meanwhile.
///
/// This may be called at any time, also while other threads connect: pqlib registers its own
/// trampoline with libpq once, before its first connection attempt, and this only replaces
/// the Rust hook the trampoline asks. Other kinds of authentication data libpq asks for (such
/// as the device-flow prompt, `PQAUTHDATA_PROMPT_OAUTH_DEVICE`) go to libpq's default hook. Do
/// not call `pqlib_sys::PQsetAuthDataHook` yourself: it would replace pqlib's trampoline for
/// the whole process, racing with connecting threads.
///
/// Only with libpq 18 or newer (see the [module documentation](self)).
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
///
/// // A token some other part of the program refreshes.
/// let current: Arc<Mutex<Option<String>>> = Arc::default();
/// let tokens = Arc::clone(&current);
/// pqlib::oauth::set_bearer_token_hook(move |request| {
///     if request.openid_configuration() != "https://login.example.com/.well-known/openid-configuration" {
///         return Err(format!("no tokens for {}", request.openid_configuration()));
///     }
///     Ok(tokens.lock().unwrap().clone())
/// });
/// *current.lock().unwrap() = Some("eyJhbGciOi...".to_owned());
/// let conn = pqlib::Connection::connect(
///     "host=db user=app oauth_issuer=https://login.example.com oauth_client_id=my-app",
/// )?;
/// # Ok::<(), pqlib::Error>(())
/// ```
#[doc(alias = "PQsetAuthDataHook")]
#[doc(alias = "PQAUTHDATA_OAUTH_BEARER_TOKEN")]
pub fn set_bearer_token_hook<F, E>(hook: F)
where
    F: Fn(&BearerTokenRequest<'_>) -> Result<Option<String>, E> + Send + Sync + 'static,
    E: fmt::Display,
{
    let hook: Hook = Arc::new(move |request| hook(request).map_err(|e| e.to_string()));
    let previous = HOOK
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(hook);
    // Dropped outside the lock: a hook's captured state may do anything when dropped.
    drop(previous);
    // Normally done already by the first connection attempt; a no-op then.
    crate::tls::install_passphrase_trampoline();
}

/// Removes the hook [`set_bearer_token_hook`] installed, for every connection in the process:
/// libpq then behaves as without a hook.
///
/// ```no_run
/// pqlib::oauth::clear_bearer_token_hook();
/// ```
pub fn clear_bearer_token_hook() {
    let previous = HOOK.write().unwrap_or_else(PoisonError::into_inner).take();
    drop(previous);
}

/// Whether a hook installed by [`set_bearer_token_hook`] is in place.
///
/// ```
/// pqlib::oauth::clear_bearer_token_hook();
/// assert!(!pqlib::oauth::has_bearer_token_hook());
/// ```
pub fn has_bearer_token_hook() -> bool {
    HOOK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

/// What the hook decided, once its Rust values are dealt with.
enum Answer {
    Token(CString),
    NotHandled,
    /// Why the connection must fail, for its error message.
    Failed(String),
}

thread_local! {
    /// Why the hook refused, and for which connection (its `PGconn`'s address), on the thread
    /// that connects: libpq's error says only "user-defined OAuth flow failed", so pqlib's
    /// connect code adds the reason ([`take_refusal`]).
    static REFUSAL: RefCell<Option<(usize, String)>> = const { RefCell::new(None) };
}

fn remember_refusal(conn: *mut ffi::PGconn, reason: String) {
    // `try_with`: nothing to remember into while the thread's locals are being destroyed.
    let _ = REFUSAL.try_with(|slot| *slot.borrow_mut() = Some((conn as usize, reason)));
}

/// The reason the hook refused `conn`'s token on this thread, if it did; clears what was
/// remembered either way (called when a connection attempt ends, failed or not).
pub(crate) fn take_refusal(conn: *mut ffi::PGconn) -> Option<String> {
    REFUSAL
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten()
        .filter(|(for_conn, _)| *for_conn == conn as usize)
        .map(|(_, reason)| reason)
}

/// The C hook libpq calls: `int (*)(PGauthData type, PGconn *conn, void *data)`. Positive:
/// handled; zero: not handled (libpq goes on with its built-in flow); negative: failed.
unsafe extern "C" fn auth_data_trampoline(
    kind: ffi::PGauthData,
    conn: *mut ffi::PGconn,
    data: *mut c_void,
) -> c_int {
    if kind != ffi::PGauthData::PQAUTHDATA_OAUTH_BEARER_TOKEN || data.is_null() {
        // SAFETY: libpq's own default, with the arguments libpq gave us.
        return unsafe { ffi::PQdefaultAuthDataHook(kind, conn, data) };
    }
    let hook = HOOK.read().unwrap_or_else(PoisonError::into_inner).clone();
    let Some(hook) = hook else {
        // SAFETY: as above.
        return unsafe { ffi::PQdefaultAuthDataHook(kind, conn, data) };
    };
    let request = data.cast::<ffi::PGoauthBearerRequest>();
    // Everything that runs Rust code the user supplied (the hook, the error's Display, the
    // drop of captured state, a logger) runs inside catch_unwind: nothing unwinds into libpq.
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        // For this type `data` is libpq's PGoauthBearerRequest, alive during this call; the
        // view is only read and cannot outlive the call.
        let view = BearerTokenRequest {
            conn,
            request,
            _during_the_call: PhantomData,
        };
        let answer = hook(&view);
        drop(hook);
        match answer {
            Ok(Some(token)) => match c_token(token) {
                Ok(token) => Answer::Token(token),
                Err(refused) => {
                    log::error!(
                        target: "pqlib::oauth",
                        "the OAuth bearer token hook returned {refused}; the connection fails"
                    );
                    Answer::Failed(format!("returned {refused}"))
                }
            },
            Ok(None) => Answer::NotHandled,
            Err(reason) => {
                log::error!(
                    target: "pqlib::oauth",
                    "the OAuth bearer token hook failed: {reason}"
                );
                Answer::Failed(format!("failed: {reason}"))
            }
        }
    }));
    match outcome {
        Ok(Answer::Token(token)) => {
            // SAFETY: `request` is libpq's request, writable during this call. The token is
            // handed over with its cleanup: libpq copies it, then calls `free_token` once
            // (also when the copy fails), which takes the allocation back.
            unsafe {
                (*request).token = token.into_raw();
                (*request).cleanup = Some(free_token);
            }
            1
        }
        // SAFETY: libpq's default, with the arguments libpq gave us.
        Ok(Answer::NotHandled) => unsafe { ffi::PQdefaultAuthDataHook(kind, conn, data) },
        Ok(Answer::Failed(reason)) => {
            remember_refusal(conn, reason);
            -1
        }
        Err(payload) => {
            let logged = catch_unwind(AssertUnwindSafe(|| {
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a non-string payload");
                log::error!(
                    target: "pqlib::oauth",
                    "the OAuth bearer token hook panicked ({message}); the connection fails"
                );
                remember_refusal(conn, format!("panicked ({message})"));
            }));
            // Payloads are user data whose Drop may panic: never dropped outside a guard.
            if let Err(again) = logged {
                crate::notice::dispose(again);
            }
            crate::notice::dispose(payload);
            -1
        }
    }
}

/// The token as a C string in an allocation of exactly its size (so that no copy is left
/// behind by a reallocation), or what is wrong with it: a NUL byte (never truncated there), or
/// nothing at all (a bearer token has at least one character, RFC 6750). The `String` is
/// wiped either way.
fn c_token(token: String) -> Result<CString, &'static str> {
    let mut text = token.into_bytes();
    let result = if text.is_empty() {
        Err("an empty token")
    } else if text.contains(&0) {
        Err("a token with a NUL byte")
    } else {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(&text);
        // No NUL inside (checked), and room for the terminator: no reallocation.
        CString::new(bytes).map_err(|_| "a token with a NUL byte")
    };
    wipe(&mut text);
    result
}

/// The `cleanup` callback of a request pqlib answered: frees the token (after overwriting
/// it) and leaves NULL behind, so that a second call would do nothing.
unsafe extern "C" fn free_token(_conn: *mut ffi::PGconn, request: *mut ffi::PGoauthBearerRequest) {
    if request.is_null() {
        return;
    }
    // SAFETY: libpq passes the request our trampoline filled in, alive during this call.
    let token = unsafe { std::mem::replace(&mut (*request).token, std::ptr::null_mut()) };
    if token.is_null() {
        return;
    }
    // SAFETY: a non-NULL token in a request with this cleanup is the pointer
    // `CString::into_raw` gave in `auth_data_trampoline`, taken back exactly once (the field
    // is NULL from now on).
    let token = unsafe { CString::from_raw(token) };
    let mut bytes = token.into_bytes_with_nul();
    wipe(&mut bytes);
}

/// Overwrites a secret with zeros in a way the optimiser keeps.
fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference to a byte.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_with_a_nul_byte_are_refused_not_truncated() {
        assert_eq!(
            c_token("good\0bad".to_owned()),
            Err("a token with a NUL byte")
        );
        assert_eq!(c_token(String::new()), Err("an empty token"));
        let token = c_token("pqlib-good-token".to_owned()).unwrap();
        assert_eq!(token.as_bytes(), b"pqlib-good-token");
    }

    #[test]
    fn free_token_takes_the_token_back_once() {
        let mut request = ffi::PGoauthBearerRequest {
            openid_configuration: std::ptr::null(),
            scope: std::ptr::null(),
            async_: None,
            cleanup: Some(free_token),
            token: c_token("secret".to_owned()).unwrap().into_raw(),
            user: std::ptr::null_mut(),
        };
        // SAFETY: the request holds a token from `into_raw`, as the trampoline leaves it.
        unsafe { free_token(std::ptr::null_mut(), &mut request) };
        assert!(request.token.is_null());
        // SAFETY: as above; the token is NULL now, so this does nothing.
        unsafe { free_token(std::ptr::null_mut(), &mut request) };
    }
}
