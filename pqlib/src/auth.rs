//! Passwords: encrypting them on the client and changing them without sending them in clear.
//!
//! Authentication itself is set up with connection parameters: a password (best from a
//! password file, [`Config::passfile`](crate::Config::passfile) or `~/.pgpass`, rather than
//! in the connection string), [`channel_binding`](crate::Config::channel_binding) and
//! [`require_auth`](crate::Config::require_auth) (libpq 16 and later).

use std::ffi::{CStr, CString};

use pqlib_sys as ffi;

use crate::Connection;
use crate::error::{Error, Result};
use crate::handle::PqBuffer;

impl Connection {
    /// Encrypts `password` for role `user` the way the server stores it, so that `CREATE
    /// ROLE … PASSWORD` / `ALTER ROLE … PASSWORD` never sends (or logs) the password itself.
    ///
    /// `algorithm` is `Some("scram-sha-256")` or `Some("md5")`; with `None`, libpq asks the
    /// server for its `password_encryption` setting (a query on this connection, hence
    /// `&mut self`). The password never appears in an error.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let verifier = conn.encrypt_password("s3cret", "app", Some("scram-sha-256"))?;
    /// assert!(verifier.starts_with("SCRAM-SHA-256$"));
    /// let sql = format!(
    ///     "CREATE ROLE app LOGIN PASSWORD {}",
    ///     conn.escape_literal(&verifier)?
    /// );
    /// conn.batch_execute(&sql)?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQencryptPasswordConn")]
    pub fn encrypt_password(
        &mut self,
        password: &str,
        user: &str,
        algorithm: Option<&str>,
    ) -> Result<String> {
        let redact = |e: Error| redact_password(e, password);
        let c_password = CString::new(password)
            .map_err(|e| Error::nul_byte("the password", e))
            .map_err(redact)?;
        let c_user = CString::new(user).map_err(|e| Error::nul_byte("the user name", e))?;
        let c_algorithm = algorithm
            .map(CString::new)
            .transpose()
            .map_err(|e| Error::nul_byte("the algorithm", e))?;
        // SAFETY: the connection is alive and every string is NUL-terminated for the call.
        // The result is NULL or a string libpq allocated for us, freed by PqBuffer.
        let ptr = unsafe {
            ffi::PQencryptPasswordConn(
                self.as_ptr(),
                c_password.as_ptr(),
                c_user.as_ptr(),
                c_algorithm
                    .as_ref()
                    .map_or(std::ptr::null(), |a| a.as_ptr()),
            )
        };
        // Asking the server for `password_encryption` may have delivered notices.
        self.notices.resume_panic();
        if ptr.is_null() {
            let message = self.conn.error_message();
            let error = if self.conn.status() != ffi::ConnStatusType::CONNECTION_OK {
                Error::closed(message)
            } else if message.contains("unrecognized password encryption algorithm") {
                Error::bad_input(message)
            } else {
                Error::client(message)
            };
            return Err(redact(error));
        }
        // SAFETY: non-NULL and NUL-terminated, from libpq, freed exactly once by PqBuffer.
        let buffer = unsafe {
            let len = CStr::from_ptr(ptr).to_bytes().len();
            PqBuffer::from_raw(ptr, len)
        };
        let buffer = buffer.ok_or_else(|| Error::client("PQencryptPasswordConn returned NULL"))?;
        Ok(String::from_utf8_lossy(buffer.as_bytes()).into_owned())
    }

    /// Changes the password of role `user` (the connected user's own, or any role's for a
    /// superuser or a `CREATEROLE` role) without sending the password in clear: it is
    /// encrypted on the client with the server's `password_encryption` algorithm
    /// ([`encrypt_password`](Connection::encrypt_password) with `None`), then `ALTER USER
    /// "user" PASSWORD '<verifier>'` is run.
    ///
    /// With libpq 17 or later this is libpq's `PQchangePassword`; with older libpq pqlib does
    /// the same two steps itself (quoting with
    /// [`escape_identifier`](Connection::escape_identifier) and
    /// [`escape_literal`](Connection::escape_literal)), so it works everywhere.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// conn.change_password("app", "a new passphrase")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQchangePassword")]
    pub fn change_password(&mut self, user: &str, password: &str) -> Result<()> {
        self.change_password_inner(user, password)
            .map_err(|e| redact_password(e, password))
    }

    #[cfg(libpq_17)]
    fn change_password_inner(&mut self, user: &str, password: &str) -> Result<()> {
        self.before_query()?;
        let c_user = CString::new(user).map_err(|e| Error::nul_byte("the user name", e))?;
        let c_password = CString::new(password).map_err(|e| Error::nul_byte("the password", e))?;
        // SAFETY: the connection is alive; both strings are NUL-terminated for the call. The
        // result (or NULL) is owned and checked by `check`.
        let ptr =
            unsafe { ffi::PQchangePassword(self.as_ptr(), c_user.as_ptr(), c_password.as_ptr()) };
        self.check(ptr).map(drop)
    }

    #[cfg(not(libpq_17))]
    fn change_password_inner(&mut self, user: &str, password: &str) -> Result<()> {
        let verifier = self.encrypt_password(password, user, None)?;
        let sql = format!(
            "ALTER USER {} PASSWORD {}",
            self.escape_identifier(user)?,
            self.escape_literal(&verifier)?
        );
        self.batch_execute(&sql)
    }

    /// Whether the server asked for a password when this connection was made (and one was
    /// sent): `false` for `trust`, certificate or peer authentication.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("").unwrap();
    /// if conn.used_password() {
    ///     println!("authenticated with a password");
    /// }
    /// ```
    #[doc(alias = "PQconnectionUsedPassword")]
    pub fn used_password(&self) -> bool {
        // SAFETY: the connection is alive.
        unsafe { ffi::PQconnectionUsedPassword(self.as_ptr()) != 0 }
    }
}

/// Masks the password in an error message, should any layer ever quote it.
fn redact_password(error: Error, password: &str) -> Error {
    if password.is_empty() {
        error
    } else {
        error.redact(password)
    }
}
