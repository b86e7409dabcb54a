//! The simple query protocol with its answers: [`Connection::simple_query`] (and the async
//! client's) runs SQL text that may hold several statements, as one `Query` message, and
//! returns each statement's rows as text and its command completion, in order
//! ([`SimpleQueryMessage`], as in `tokio-postgres`).
//!
//! Rows own their text (copied out of libpq's result), so they live as long as you keep them.

use std::ffi::CString;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use foreign_types::ForeignType;
use pqlib_sys as ffi;

use crate::error::{Error, Result};
use crate::handle::{PgResult, PgResultRef};
use crate::{Connection, Transaction};

/// One part of the answer to a [`simple_query`](Connection::simple_query): the statements'
/// column descriptions, rows and completions, in the order the server sent them.
///
/// A statement that returns rows (`SELECT`, `SHOW`, `VALUES`, `… RETURNING`, `FETCH`) gives a
/// `RowDescription`, then one `Row` per row, then its `CommandComplete`; any other statement
/// gives only its `CommandComplete`. An empty query string gives nothing at all.
///
/// ```no_run
/// use pqlib::SimpleQueryMessage;
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// for message in conn.simple_query("SELECT 1 AS one; SELECT 'a', NULL")? {
///     match message {
///         SimpleQueryMessage::RowDescription(columns) => println!("{} columns", columns.len()),
///         SimpleQueryMessage::Row(row) => println!("{:?}", row.get(0)),
///         SimpleQueryMessage::CommandComplete(n) => println!("done, {n} rows"),
///         _ => {}
///     }
/// }
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SimpleQueryMessage {
    /// A row of the statement described by the last `RowDescription`.
    Row(SimpleQueryRow),
    /// A statement finished, having returned or affected this many rows (0 for commands whose
    /// tag carries no count, such as `CREATE TABLE` or `SHOW`).
    #[doc(alias = "PQcmdTuples")]
    CommandComplete(u64),
    /// The columns of the rows that follow (sent before them, also when there are none).
    RowDescription(Arc<[SimpleColumn]>),
}

/// A column of a [`simple_query`](Connection::simple_query) result: only its name, since
/// every value comes as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleColumn {
    name: String,
}

impl SimpleColumn {
    /// The column's name (`?column?` for unnamed expressions).
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let messages = conn.simple_query("SELECT 1 AS one")?;
    /// if let SimpleQueryMessage::RowDescription(columns) = &messages[0] {
    ///     assert_eq!(columns[0].name(), "one");
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQfname")]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A row of a [`simple_query`](Connection::simple_query) result: every value as text, or
/// `None` for SQL NULL. The row owns its text.
///
/// Values are looked up by column index or name ([`SimpleRowIndex`]). A pqlib session's text
/// is UTF-8, so a value is always a valid `&str`, except in a session whose
/// `client_encoding` is `SQL_ASCII` (a legacy `SQL_ASCII` database, whose stored bytes the
/// server passes through unchecked). For a value that is not UTF-8,
/// [`try_get`](SimpleQueryRow::try_get) returns an error of kind
/// [`Conversion`](crate::error::ErrorKind::Conversion),
/// [`get`](SimpleQueryRow::get) returns the text with each invalid sequence replaced by
/// `U+FFFD` (server data never makes pqlib panic), and [`raw`](SimpleQueryRow::raw) returns
/// the bytes exactly as the server sent them. (What `FETCH` reads from a `BINARY` cursor is
/// binary, not text: read those values with [`raw`](SimpleQueryRow::raw).)
///
/// ```no_run
/// use pqlib::SimpleQueryMessage;
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let messages = conn.simple_query("SELECT 'x' AS letter, NULL AS nothing")?;
/// if let SimpleQueryMessage::Row(row) = &messages[1] {
///     assert_eq!(row.get("letter"), Some("x"));
///     assert_eq!(row.get(1), None);
///     assert!(row.try_get(2).is_err()); // no third column
/// }
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct SimpleQueryRow {
    columns: Arc<[SimpleColumn]>,
    /// Every value's text, one after the other (invalid UTF-8 replaced, see `invalid`).
    text: String,
    /// Where each column's value is in `text`; `None` for NULL.
    values: Box<[Option<Range<usize>>]>,
    /// The values that were not valid UTF-8, as sent: (column, bytes). Usually empty.
    invalid: Box<[(usize, Box<[u8]>)]>,
}

impl SimpleQueryRow {
    /// Row `row` of `result`, copied; `row < ntuples()`.
    fn new(result: &PgResultRef, row: usize, columns: Arc<[SimpleColumn]>) -> SimpleQueryRow {
        let width = columns.len().min(result.nfields());
        let mut text = String::new();
        let mut values = Vec::with_capacity(width);
        let mut invalid = Vec::new();
        for col in 0..width {
            // SAFETY: `row < ntuples()` (the caller's contract) and `col < nfields()`.
            let Some(bytes) = (unsafe { result.value_unchecked(row, col) }) else {
                values.push(None);
                continue;
            };
            let start = text.len();
            match std::str::from_utf8(bytes) {
                Ok(value) => text.push_str(value),
                Err(_) => {
                    text.push_str(&String::from_utf8_lossy(bytes));
                    invalid.push((col, Box::from(bytes)));
                }
            }
            values.push(Some(start..text.len()));
        }
        SimpleQueryRow {
            columns,
            text,
            values: values.into(),
            invalid: invalid.into(),
        }
    }

    /// The row's columns.
    #[doc(alias = "PQfname")]
    pub fn columns(&self) -> &[SimpleColumn] {
        &self.columns
    }

    /// The number of values (columns).
    #[doc(alias = "PQnfields")]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns (`SELECT;`).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A column's value as text (`None` for SQL NULL), by index or name.
    ///
    /// A value that is not valid UTF-8 (only possible in a `SQL_ASCII` session, or from a
    /// `BINARY` cursor) comes with each invalid sequence replaced by `U+FFFD`; use
    /// [`try_get`](SimpleQueryRow::try_get) to be told, or [`raw`](SimpleQueryRow::raw) for the
    /// bytes.
    ///
    /// # Panics
    /// If the column does not exist, as `postgres`' `Row::get` does for a wrong index: a bug
    /// in the caller, not in the data. [`try_get`](SimpleQueryRow::try_get) returns an error
    /// instead.
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// for message in conn.simple_query("SELECT relname, relpages FROM pg_class LIMIT 3")? {
    ///     if let SimpleQueryMessage::Row(row) = message {
    ///         let pages: i64 = row.get("relpages").unwrap_or("0").parse().unwrap();
    ///         println!("{}: {pages}", row.get(0).unwrap_or("?"));
    ///     }
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[track_caller]
    #[doc(alias = "PQgetvalue")]
    pub fn get<I>(&self, index: I) -> Option<&str>
    where
        I: SimpleRowIndex + fmt::Display,
    {
        match self.column(&index) {
            Ok(col) => self.text_of(col),
            Err(e) => panic!("error retrieving column {index}: {e}"),
        }
    }

    /// A column's value as text (`None` for SQL NULL), by index or name; an error of kind
    /// [`Column`](crate::error::ErrorKind::Column) for a column that does not exist, and of
    /// kind [`Conversion`](crate::error::ErrorKind::Conversion) for a value that is not valid
    /// UTF-8.
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// use pqlib::error::ErrorKind;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let messages = conn.simple_query("SELECT 'a' AS letter")?;
    /// if let SimpleQueryMessage::Row(row) = &messages[1] {
    ///     assert_eq!(row.try_get("letter")?, Some("a"));
    ///     assert_eq!(row.try_get("nope").unwrap_err().kind(), ErrorKind::Column);
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQgetvalue")]
    #[doc(alias = "PQgetisnull")]
    pub fn try_get<I>(&self, index: I) -> Result<Option<&str>>
    where
        I: SimpleRowIndex + fmt::Display,
    {
        let col = self.column(&index)?;
        if let Some(Err(error)) = self.invalid_bytes(col).map(std::str::from_utf8) {
            return Err(Error::conversion(
                format!(
                    "column {index} is not valid UTF-8 (a SQL_ASCII session or a binary \
                     cursor); raw() returns its bytes"
                ),
                Box::new(error),
            ));
        }
        Ok(self.text_of(col))
    }

    /// A column's value as the bytes the server sent (`None` for SQL NULL), by index or name;
    /// for reading text that is not UTF-8 (a `SQL_ASCII` database) or a binary cursor's values.
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let messages = conn.simple_query("SELECT 'bytes'")?;
    /// if let SimpleQueryMessage::Row(row) = &messages[1] {
    ///     assert_eq!(row.raw(0)?, Some(&b"bytes"[..]));
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQgetvalue")]
    #[doc(alias = "PQgetlength")]
    pub fn raw<I>(&self, index: I) -> Result<Option<&[u8]>>
    where
        I: SimpleRowIndex + fmt::Display,
    {
        let col = self.column(&index)?;
        Ok(match self.invalid_bytes(col) {
            Some(bytes) => Some(bytes),
            None => self.text_of(col).map(str::as_bytes),
        })
    }

    /// The position of the column `index` names.
    fn column<I>(&self, index: &I) -> Result<usize>
    where
        I: SimpleRowIndex + fmt::Display,
    {
        index
            .__index(&self.columns)
            .filter(|&col| col < self.values.len())
            .ok_or_else(|| Error::column(format!("{index} (the row has {} columns)", self.len())))
    }

    fn text_of(&self, col: usize) -> Option<&str> {
        let range = self.values.get(col)?.clone()?;
        self.text.get(range)
    }

    fn invalid_bytes(&self, col: usize) -> Option<&[u8]> {
        self.invalid
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, bytes)| &bytes[..])
    }
}

impl fmt::Debug for SimpleQueryRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<Option<&str>> = (0..self.len()).map(|col| self.text_of(col)).collect();
        f.debug_struct("SimpleQueryRow")
            .field("columns", &self.columns)
            .field("values", &values)
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A column index for [`SimpleQueryRow`]: a `usize` position or a `&str` name (the first
/// column of that name; an exact match first, then one that differs only in ASCII case).
pub trait SimpleRowIndex: sealed::Sealed {
    #[doc(hidden)]
    fn __index(&self, columns: &[SimpleColumn]) -> Option<usize>;
}

impl sealed::Sealed for usize {}
impl SimpleRowIndex for usize {
    fn __index(&self, columns: &[SimpleColumn]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl sealed::Sealed for str {}
impl SimpleRowIndex for str {
    fn __index(&self, columns: &[SimpleColumn]) -> Option<usize> {
        columns.iter().position(|c| c.name == self).or_else(|| {
            columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(self))
        })
    }
}

impl<T: ?Sized + sealed::Sealed> sealed::Sealed for &T {}
impl<T: ?Sized + SimpleRowIndex> SimpleRowIndex for &T {
    fn __index(&self, columns: &[SimpleColumn]) -> Option<usize> {
        T::__index(*self, columns)
    }
}

/// Appends what one result of a simple-protocol request says: its rows (copied) and its
/// completion. An empty query's result says nothing.
pub(crate) fn push_messages(messages: &mut Vec<SimpleQueryMessage>, result: &PgResultRef) {
    match result.status() {
        ffi::ExecStatusType::PGRES_TUPLES_OK => {
            let columns: Arc<[SimpleColumn]> = (0..result.nfields())
                .map(|i| SimpleColumn {
                    name: result.field_name(i),
                })
                .collect();
            messages.reserve(result.ntuples() + 2);
            messages.push(SimpleQueryMessage::RowDescription(columns.clone()));
            for row in 0..result.ntuples() {
                let row = SimpleQueryRow::new(result, row, columns.clone());
                messages.push(SimpleQueryMessage::Row(row));
            }
            messages.push(SimpleQueryMessage::CommandComplete(result.rows_affected()));
        }
        ffi::ExecStatusType::PGRES_COMMAND_OK => {
            messages.push(SimpleQueryMessage::CommandComplete(result.rows_affected()));
        }
        _ => {}
    }
}

/// The messages of a simple-protocol request's results (the async client's answer).
#[cfg_attr(not(all(feature = "tokio", unix)), allow(dead_code))]
pub(crate) fn messages(results: &[PgResult]) -> Vec<SimpleQueryMessage> {
    let mut messages = Vec::new();
    for result in results {
        push_messages(&mut messages, result);
    }
    messages
}

/// How many rows the messages hold, for tracing.
fn row_count(messages: &[SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count()
}

impl Connection {
    /// Runs SQL text with the simple query protocol and returns every statement's rows, as
    /// text, and completions, in order.
    ///
    /// The text may hold several statements separated by semicolons; they run as one
    /// implicit transaction unless the text has its own transaction commands. It is sent as
    /// one `Query` message, the only protocol a connection pooler in statement mode (such as
    /// PgBouncer's `pool_mode = statement`) accepts for several statements, and the one
    /// `psql` uses. There are no parameters: build the text with
    /// [`escape_literal`](Connection::escape_literal) and
    /// [`escape_identifier`](Connection::escape_identifier), or use
    /// [`query`](Connection::query) with `$1` parameters instead. Every value comes back as
    /// text (see [`SimpleQueryRow`]); [`query`](Connection::query) gives typed values.
    ///
    /// The first statement that fails ends the text: its error is returned (with its
    /// SQLSTATE), and what ran before it in the same implicit transaction is rolled back by
    /// the server. A `COPY` in the text is not run for you: a `COPY … FROM STDIN` is aborted,
    /// the data of a `COPY … TO STDOUT` read and discarded, and the answer is an error of
    /// kind [`BadInput`](crate::error::ErrorKind::BadInput) (use
    /// [`copy_in`](Connection::copy_in) or [`copy_out`](Connection::copy_out)). Either way
    /// the connection is ready for the next statement. SQL text with a NUL byte is an error
    /// of kind `BadInput`, and nothing is sent.
    ///
    /// ```no_run
    /// use pqlib::SimpleQueryMessage;
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let messages = conn.simple_query(
    ///     "CREATE TEMP TABLE t (id int, name text);
    ///      INSERT INTO t VALUES (1, 'a'), (2, NULL);
    ///      SELECT id, name FROM t ORDER BY id",
    /// )?;
    /// let names: Vec<Option<String>> = messages
    ///     .iter()
    ///     .filter_map(|m| match m {
    ///         SimpleQueryMessage::Row(row) => Some(row.get("name").map(str::to_owned)),
    ///         _ => None,
    ///     })
    ///     .collect();
    /// assert_eq!(names, [Some("a".to_owned()), None]);
    /// assert!(matches!(messages[1], SimpleQueryMessage::CommandComplete(2))); // the INSERT
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendQuery")]
    #[doc(alias = "PQexec")]
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        let _span = crate::trace::statement("simple_query", sql);
        let mut messages = Vec::new();
        let outcome = self
            .run_simple(sql, |result| push_messages(&mut messages, result))
            .map(|()| messages);
        crate::trace::statement_done(
            outcome.as_deref().map_or(0, row_count),
            outcome.as_ref().err(),
        );
        outcome
    }
}

impl Connection {
    /// Sends `sql` with the simple query protocol and reads every result, handing the
    /// successful ones before the first error to `each`. The first error is the one
    /// reported: when the server ends the session with a FATAL error, libpq's own "server
    /// closed the connection" comes after it (and is what `PQexec` would return).
    pub(crate) fn run_simple(
        &mut self,
        sql: &str,
        mut each: impl FnMut(&crate::handle::PgResult),
    ) -> Result<()> {
        let sql_c = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        self.before_query()?;
        self.copies_left = crate::copy_discard::max_copies(sql);
        let raw = self.conn.as_ptr();
        // SAFETY: the connection is alive, idle and ours; `sql_c` is NUL-terminated for the
        // call (libpq copies it into its output buffer).
        if unsafe { ffi::PQsendQuery(raw, sql_c.as_ptr()) } != 1 {
            return Err(self.connection_error());
        }
        let mut error: Option<Error> = None;
        loop {
            // SAFETY: the connection is alive and running this request; the result (or NULL
            // at the end) is owned by what `check_each` makes of it.
            let ptr = unsafe { ffi::PQgetResult(raw) };
            if ptr.is_null() {
                break;
            }
            match self.check_each(ptr) {
                Ok(result) if error.is_none() => each(&result),
                Ok(_) => {}
                Err(e) => {
                    // A COPY was ended and everything after it read (`check_each`), or a
                    // statement failed and the server skips the rest, or the session ended
                    // (its FATAL, then libpq's note of the closed socket, then the end):
                    // read on to the end either way, so libpq is left with nothing pending.
                    error.get_or_insert(e);
                }
            }
        }
        match (self.after_results(), error) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }
}

impl Transaction<'_> {
    /// See [`Connection::simple_query`].
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// let messages = tx.simple_query("SELECT txid_current()")?;
    /// tx.commit()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendQuery")]
    #[doc(alias = "PQexec")]
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        self.connection().simple_query(sql)
    }
}
