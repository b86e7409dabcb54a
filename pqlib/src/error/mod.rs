//! The one error type, and the server's error report ([`DbError`]) with its [`SqlState`].

mod db;
mod sqlstate;

use std::error::Error as StdError;
use std::fmt;

pub use db::{DbError, ErrorPosition, Severity};
pub use sqlstate::SqlState;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, broadly; [`Error::kind`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Establishing a connection failed (unreachable host, authentication, bad option value).
    Connect,
    /// The connection was lost or closed: the server went away, the backend was terminated,
    /// or the socket failed. Reconnect (or [`reset`](crate::Connection::reset)) to go on.
    Closed,
    /// The server reported an error; [`Error::as_db_error`] has the details.
    Db,
    /// A Rust value could not be converted to or from the PostgreSQL type.
    Conversion,
    /// An argument the caller passed cannot be used: an interior NUL byte in a string that C
    /// needs NUL-terminated, a wrong parameter count, an invalid conninfo keyword, …
    BadInput,
    /// A column index out of range or a column name the result does not have.
    Column,
    /// `query_one`/`query_opt` got a different number of rows than they promise.
    RowCount,
    /// The feature needs a newer libpq (or server) than the one in use.
    Unsupported,
    /// In pipeline mode, an earlier statement failed, so the server skipped this one; the
    /// pipeline works again after its next sync point.
    PipelineAborted,
    /// libpq reported an error that is neither from the server nor a lost connection
    /// (out of memory, protocol violation, a call in the wrong state).
    Client,
}

/// An error from pqlib: what kind it is, a message, the server's report for database errors,
/// and the underlying cause (through [`std::error::Error::source`]).
///
/// Neither `Display` nor `Debug` ever includes a password: connection errors carry libpq's
/// message, which names hosts and users but never the password.
///
/// ```no_run
/// # fn main() -> Result<(), pqlib::Error> {
/// let mut conn = pqlib::Connection::connect("dbname=postgres")?;
/// match conn.execute("INSERT INTO t VALUES (1)", &[]) {
///     Err(e) if e.code() == Some(&pqlib::error::SqlState::UNIQUE_VIOLATION) => {
///         println!("already there: {}", e.as_db_error().unwrap().message());
///     }
///     other => { other?; }
/// }
/// # Ok(()) }
/// ```
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    db: Option<DbError>,
    source: Option<BoxError>,
    /// For a failed connection attempt: libpq's `PQconnectionNeedsPassword`.
    needs_password: bool,
    /// For a failed connection attempt: libpq's `PQconnectionUsedPassword`.
    used_password: bool,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            db: None,
            source: None,
            needs_password: false,
            used_password: false,
        }))
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.0.source = Some(source.into());
        self
    }

    /// The message as made (for errors without a server report), without `Display`'s prefix.
    pub(crate) fn raw_message(&self) -> &str {
        &self.0.message
    }

    /// The same error with every occurrence of `secret` in its message masked.
    pub(crate) fn redact(mut self, secret: &str) -> Error {
        self.0.message = self.0.message.replace(secret, "********");
        self
    }

    pub(crate) fn connect(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Connect, message)
    }

    /// A connection attempt that failed, with libpq's message and what it knows about the
    /// password (`PQconnectionNeedsPassword`, `PQconnectionUsedPassword`).
    pub(crate) fn connect_failed(
        message: impl Into<String>,
        needs_password: bool,
        used_password: bool,
    ) -> Error {
        let mut error = Error::connect(message);
        error.0.needs_password = needs_password;
        error.0.used_password = used_password;
        error
    }

    pub(crate) fn closed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Closed, message)
    }

    pub(crate) fn db(db: DbError) -> Error {
        let mut error = Error::new(ErrorKind::Db, String::new());
        error.0.db = Some(db);
        error
    }

    /// The same error, marked as having lost the connection (a server error that ended
    /// the session, such as a terminated backend).
    pub(crate) fn into_closed(mut self) -> Error {
        self.0.kind = ErrorKind::Closed;
        self
    }

    pub(crate) fn conversion(message: impl Into<String>, source: BoxError) -> Error {
        Error::new(ErrorKind::Conversion, message).with_source(source)
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadInput, message)
    }

    pub(crate) fn column(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Column, message)
    }

    pub(crate) fn row_count(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::RowCount, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    pub(crate) fn pipeline_aborted() -> Error {
        Error::new(
            ErrorKind::PipelineAborted,
            "an earlier statement in the pipeline failed; statements up to the next sync point \
             are not run",
        )
    }

    pub(crate) fn client(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Client, message)
    }

    /// An interior NUL byte in `what` (C would silently cut the string there).
    pub(crate) fn nul_byte(what: &str, err: std::ffi::NulError) -> Error {
        Error::bad_input(format!(
            "{what} contains a NUL byte at offset {}; libpq cannot take it",
            err.nul_position()
        ))
    }

    /// What kind of error this is.
    ///
    /// ```no_run
    /// # let conn = pqlib::Connection::connect("dbname=postgres");
    /// if let Err(e) = conn {
    ///     assert_eq!(e.kind(), pqlib::error::ErrorKind::Connect);
    /// }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The SQLSTATE of a database error.
    ///
    /// Errors from a failed connection attempt have none, even when the server refused the
    /// login with one (`28P01` for a wrong password, `3D000` for a missing database): libpq
    /// keeps only the text of errors it gets while connecting. Their [`kind`](Error::kind) is
    /// [`ErrorKind::Connect`]; [`needs_password`](Error::needs_password) and
    /// [`used_password`](Error::used_password) tell a password problem from an unreachable
    /// server.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("dbname=postgres").unwrap();
    /// let e = conn.batch_execute("SELEC 1").unwrap_err();
    /// assert_eq!(e.code(), Some(&pqlib::error::SqlState::SYNTAX_ERROR));
    ///
    /// let e = pqlib::Connection::connect("host=127.0.0.1 port=1").unwrap_err();
    /// assert_eq!(e.kind(), pqlib::error::ErrorKind::Connect);
    /// assert_eq!(e.code(), None);
    /// ```
    pub fn code(&self) -> Option<&SqlState> {
        self.0.db.as_ref().map(DbError::code)
    }

    /// The server's report, for database errors.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("dbname=postgres").unwrap();
    /// let e = conn.batch_execute("SELECT 1/0").unwrap_err();
    /// assert_eq!(e.as_db_error().unwrap().message(), "division by zero");
    /// ```
    pub fn as_db_error(&self) -> Option<&DbError> {
        self.0.db.as_ref()
    }

    /// For a failed connection attempt: the server asked for a password and none was given
    /// (neither in the parameters nor in the password file). An interactive program would
    /// prompt for one and try again, as `psql` does. `false` for every other error.
    ///
    /// How to tell the usual connection failures apart (none has an SQLSTATE, see
    /// [`code`](Error::code)):
    ///
    /// ```no_run
    /// use pqlib::error::ErrorKind;
    ///
    /// match pqlib::Connection::connect("host=db user=app") {
    ///     Ok(_) => println!("connected"),
    ///     Err(e) if e.needs_password() => println!("a password is needed"),
    ///     // The server got a password and refused the login: almost always a wrong one
    ///     // (the message says; a missing database after a good password looks the same).
    ///     Err(e) if e.used_password() => println!("login refused: {e}"),
    ///     // No password was involved: the server is unreachable, refused the connection
    ///     // (pg_hba.conf), or an option is wrong.
    ///     Err(e) if e.kind() == ErrorKind::Connect => println!("could not connect: {e}"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// ```
    #[doc(alias = "PQconnectionNeedsPassword")]
    pub fn needs_password(&self) -> bool {
        self.0.needs_password
    }

    /// For a failed connection attempt: the server asked for a password (its authentication
    /// method needs one), as libpq's `PQconnectionUsedPassword` reports it. When
    /// [`needs_password`](Error::needs_password) is `false`, a password was given, and the
    /// failed attempt usually means it was wrong. `false` for every other error.
    ///
    /// ```no_run
    /// let e = pqlib::Connection::connect("host=db user=app password=wrong").unwrap_err();
    /// if e.used_password() && !e.needs_password() {
    ///     eprintln!("check the password: {e}");
    /// }
    /// ```
    #[doc(alias = "PQconnectionUsedPassword")]
    pub fn used_password(&self) -> bool {
        self.0.used_password
    }

    /// Whether the connection is gone (see [`ErrorKind::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.0.kind == ErrorKind::Closed
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.db {
            Some(db) => fmt::Display::fmt(db, f),
            None => {
                let what = match self.0.kind {
                    ErrorKind::Connect => "connection failed",
                    ErrorKind::Closed => "connection closed",
                    ErrorKind::Db => "database error",
                    ErrorKind::Conversion => "conversion failed",
                    ErrorKind::BadInput => "bad input",
                    ErrorKind::Column => "no such column",
                    ErrorKind::RowCount => "unexpected number of rows",
                    ErrorKind::Unsupported => "unsupported",
                    ErrorKind::PipelineAborted => "skipped",
                    ErrorKind::Client => "libpq error",
                };
                write!(f, "{what}: {}", self.0.message.trim_end())?;
                if let Some(source) = &self.0.source {
                    write!(f, ": {source}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind);
        if !self.0.message.is_empty() {
            d.field("message", &self.0.message.trim_end());
        }
        if let Some(db) = &self.0.db {
            d.field("db", db);
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match (&self.0.db, &self.0.source) {
            (_, Some(source)) => Some(&**source as &(dyn StdError + 'static)),
            (Some(db), None) => Some(db),
            (None, None) => None,
        }
    }
}

/// An I/O error from a COPY reader or writer carries the pqlib [`Error`] that caused it; that
/// error comes back out. Any other I/O error becomes a client error with it as the source.
///
/// ```no_run
/// use std::io::Write;
/// # fn run(conn: &mut pqlib::Connection) -> Result<(), pqlib::Error> {
/// let mut copy = conn.copy_in("COPY t FROM STDIN")?;
/// copy.write_all(b"1\n")?; // io::Error → pqlib::Error
/// copy.finish()?;
/// # Ok(()) }
/// ```
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = error.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::client(format!("I/O error: {error}")).with_source(error)
    }
}

/// `Result` with pqlib's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
