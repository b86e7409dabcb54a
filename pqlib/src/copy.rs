//! `COPY`: streaming rows into a table with [`CopyInWriter`] (`COPY … FROM STDIN`, an
//! [`io::Write`]) and out of the server with [`CopyOutReader`] (`COPY … TO STDOUT`, an
//! [`io::Read`] and [`io::BufRead`]). [`binary_copy`](crate::binary_copy) reads and writes
//! typed rows in the binary format on top of them.
//!
//! ```no_run
//! use std::io::{BufRead, Write};
//!
//! let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
//! conn.batch_execute("CREATE TEMP TABLE words (id int4, word text)")?;
//!
//! let mut writer = conn.copy_in("COPY words FROM STDIN")?;
//! writer.write_all(b"1\thello\n2\tworld\n")?;
//! assert_eq!(writer.finish()?, 2);
//!
//! let reader = conn.copy_out("COPY words TO STDOUT (FORMAT csv)")?;
//! for line in reader.lines() {
//!     println!("{}", line?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Both borrow the connection mutably: it cannot run anything else until the writer is
//! finished or dropped, or the reader is dropped. Errors that `io` traits report as
//! [`io::Error`] carry the [`Error`](crate::Error) inside
//! ([`io::Error::get_ref`] / [`io::Error::into_inner`], then `downcast`).

use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt;
use std::io;

use bytes::BytesMut;
use foreign_types::ForeignType;
use pqlib_sys as ffi;

use crate::Connection;
use crate::copy_discard::{CopyDiscard, Discard, is_copy};
use crate::error::{Error, Result};
use crate::handle::{PgResult, PgResultRef, PqBuffer};

/// How much a [`CopyInWriter`] gathers before handing it to libpq, and the largest piece it
/// hands over at once (libpq's output buffer grows to hold one whole message).
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;

/// A writer buffer that grew past this (one huge binary row) is given back after a flush.
const MAX_RETAINED: usize = 4 * BUFFER_SIZE;

const DROPPED: &CStr = c"COPY aborted by the client: the CopyInWriter was dropped";
const NOT_COPY_OUT: &CStr = c"COPY aborted by the client: copy_out was given a COPY FROM STDIN";
pub(crate) const UNEXPECTED: &CStr = c"COPY aborted by the client: the COPY was not expected";

impl Connection {
    /// Starts a `COPY … FROM STDIN` and returns a writer for its data.
    ///
    /// Write the data in the format the statement names (text by default, `csv`, or
    /// `binary`, for which [`BinaryCopyInWriter`](crate::binary_copy::BinaryCopyInWriter)
    /// writes typed rows), then call [`CopyInWriter::finish`] to commit it and learn how many
    /// rows were copied. Dropping the writer without `finish` aborts the COPY: nothing is
    /// inserted.
    ///
    /// A statement that is not a `COPY … FROM STDIN` is an error of kind
    /// [`BadInput`](crate::error::ErrorKind::BadInput) (a `COPY … TO STDOUT` is read to its
    /// end and discarded first); the connection stays usable.
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
    /// let mut writer = conn.copy_in("COPY people (id, name) FROM STDIN (FORMAT csv)")?;
    /// for (id, name) in [(1, "Ada"), (2, "Grace \"Amazing\" Hopper")] {
    ///     writeln!(writer, "{id},\"{}\"", name.replace('"', "\"\""))?;
    /// }
    /// let rows = writer.finish()?;
    /// assert_eq!(rows, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "COPY")]
    #[doc(alias = "PQputCopyData")]
    pub fn copy_in(&mut self, sql: &str) -> Result<CopyInWriter<'_>> {
        crate::trace::copy("in", sql);
        match self.start_copy(sql, "copy_in")? {
            ffi::ExecStatusType::PGRES_COPY_IN => Ok(CopyInWriter {
                conn: self,
                buf: BytesMut::new(),
                finished: false,
            }),
            status => {
                let leave = leave_copy(self, status, UNEXPECTED);
                self.notices.resume_panic();
                ignore_abort(leave)?;
                Err(Error::bad_input(
                    "copy_in needs a COPY … FROM STDIN statement, but this one is a COPY … TO \
                     STDOUT (its output was discarded); use copy_out for it",
                ))
            }
        }
    }

    /// Starts a `COPY … TO STDOUT` and returns a reader for its data.
    ///
    /// The reader hands out libpq's buffers directly (one per row the server sends), so
    /// [`BufRead`](io::BufRead) methods such as `lines()` copy nothing twice. An error the
    /// server reports during or at the end of the COPY is returned by the read that meets
    /// it, as an [`io::Error`] whose inner error is a [`pqlib::Error`](crate::Error).
    ///
    /// A statement that is not a `COPY … TO STDOUT` is an error of kind
    /// [`BadInput`](crate::error::ErrorKind::BadInput) (a `COPY … FROM STDIN` is aborted
    /// first); the connection stays usable.
    ///
    /// ```no_run
    /// use std::io::Read;
    ///
    /// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
    /// let mut csv = String::new();
    /// conn.copy_out("COPY (SELECT g, g * g FROM generate_series(1, 10) g) TO STDOUT (FORMAT csv)")?
    ///     .read_to_string(&mut csv)?;
    /// assert!(csv.starts_with("1,1\n2,4\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "COPY")]
    #[doc(alias = "PQgetCopyData")]
    pub fn copy_out(&mut self, sql: &str) -> Result<CopyOutReader<'_>> {
        crate::trace::copy("out", sql);
        match self.start_copy(sql, "copy_out")? {
            ffi::ExecStatusType::PGRES_COPY_OUT => Ok(CopyOutReader {
                conn: self,
                chunk: None,
                pos: 0,
                state: OutState::Streaming,
            }),
            status => {
                let leave = leave_copy(self, status, NOT_COPY_OUT);
                self.notices.resume_panic();
                ignore_abort(leave)?;
                Err(Error::bad_input(
                    "copy_out needs a COPY … TO STDOUT statement, but this one is a COPY … \
                     FROM STDIN (it was aborted); use copy_in for it",
                ))
            }
        }
    }

    /// Sends `sql` with `PQexec` and returns the COPY status it started. A statement that
    /// fails is its error; one that succeeds without starting a COPY is a `BadInput` error.
    fn start_copy(&mut self, sql: &str, method: &str) -> Result<ffi::ExecStatusType> {
        self.before_query()?;
        self.copies_left = crate::copy_discard::max_copies(sql);
        let sql = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        // SAFETY: the connection is alive and `sql` is NUL-terminated for the call; the
        // result (possibly NULL) is owned by `from_returned`.
        let ptr = unsafe { ffi::PQexec(self.conn.as_ptr(), sql.as_ptr()) };
        let Some(result) = PgResult::from_returned(ptr) else {
            return Err(self.connection_error());
        };
        let status = result.status();
        if crate::copy_discard::is_copy(status) {
            self.take_copy()?;
        }
        match status {
            ffi::ExecStatusType::PGRES_COPY_IN | ffi::ExecStatusType::PGRES_COPY_OUT => Ok(status),
            ffi::ExecStatusType::PGRES_COPY_BOTH => {
                drop(result);
                let leave = leave_copy(self, ffi::ExecStatusType::PGRES_COPY_BOTH, UNEXPECTED);
                self.notices.resume_panic();
                ignore_abort(leave)?;
                Err(Error::bad_input(format!(
                    "{method} cannot run a replication COPY BOTH; it was aborted"
                )))
            }
            _ => {
                // An error is reported as itself; PQexec has read every result already.
                let result = self.check(result.into_ptr())?;
                Err(Error::bad_input(format!(
                    "{method} needs a COPY statement, but this one ran as `{}` without \
                     starting a COPY",
                    result.command_status()
                )))
            }
        }
    }
}

/// Data for a `COPY … FROM STDIN`, from [`Connection::copy_in`].
///
/// Writes are gathered into a 64 KiB buffer and handed to libpq (`PQputCopyData`) when it
/// fills; larger writes go to libpq straight from the caller's slice, in 64 KiB pieces. So
/// memory stays bounded however much is copied: wrap the writer in a `BufWriter` only if
/// that helps your own formatting code.
///
/// The server checks the data as it arrives, but libpq reports what it found only once the
/// COPY ends: a row that breaks a constraint usually surfaces as an error from
/// [`finish`](CopyInWriter::finish), not from the `write` that sent it. A `write` fails when
/// the data cannot be sent at all (a lost connection); its [`io::Error`] carries a
/// [`pqlib::Error`](crate::Error) inside. Either way the connection is usable afterwards
/// unless it was lost.
///
/// Dropping the writer without calling `finish` aborts the COPY (`PQputCopyEnd` with an
/// error message): nothing is inserted, and the connection is ready for the next statement.
///
/// ```no_run
/// use std::io::Write;
///
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// conn.batch_execute("CREATE TEMP TABLE numbers (n int8)")?;
/// let mut writer = conn.copy_in("COPY numbers FROM STDIN")?;
/// for n in 0..1_000_000 {
///     writeln!(writer, "{n}")?;
/// }
/// assert_eq!(writer.finish()?, 1_000_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The writer borrows the connection mutably, so nothing else can run on it until the
/// writer is finished or dropped; the compiler rejects this:
///
/// ```compile_fail,E0499
/// use std::io::Write;
///
/// let mut conn = pqlib::Connection::connect("")?;
/// let mut writer = conn.copy_in("COPY numbers FROM STDIN")?;
/// conn.execute("SELECT 1", &[])?; // error: `conn` is borrowed by `writer`
/// writer.write_all(b"1\n")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "PQputCopyData")]
pub struct CopyInWriter<'c> {
    conn: &'c mut Connection,
    /// Data not yet handed to libpq. The binary writer encodes rows straight into it.
    pub(crate) buf: BytesMut,
    /// `finish` ran (successfully or not): the drop has nothing left to do.
    finished: bool,
}

impl CopyInWriter<'_> {
    /// Ends the COPY and returns the number of rows copied.
    ///
    /// This sends what is still buffered, tells the server the data is complete
    /// (`PQputCopyEnd`), and reads the COPY's result: a row the server rejected (a
    /// constraint violation, malformed data) is reported here as a database error, and
    /// nothing is inserted.
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
    /// let mut writer = conn.copy_in("COPY users (id) FROM STDIN")?;
    /// writer.write_all(b"1\n1\n")?;
    /// match writer.finish() {
    ///     Ok(rows) => println!("{rows} rows copied"),
    ///     Err(e) if e.code() == Some(&pqlib::error::SqlState::UNIQUE_VIOLATION) => {
    ///         println!("duplicate id, nothing copied");
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQputCopyEnd")]
    #[doc(alias = "PQcmdTuples")]
    pub fn finish(mut self) -> Result<u64> {
        self.finished = true;
        let sent = self.flush_buffer();
        let ended = match &sent {
            Ok(()) => put_end(self.conn, None),
            Err(_) => put_end(
                self.conn,
                Some(c"COPY aborted by the client: sending data failed"),
            ),
        };
        let results = end_results(self.conn);
        self.conn.notices.resume_panic();
        let outcome = match (sent.and(ended), results) {
            // The server's own report says most (e.g. which constraint a row broke).
            (_, Err(e)) if e.as_db_error().is_some() => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), results) => results,
        };
        crate::trace::copy_done(outcome.as_ref().copied());
        outcome
    }

    /// Hands the buffered data to libpq once there is enough of it.
    pub(crate) fn flush_if_full(&mut self) -> Result<()> {
        if self.buf.len() >= BUFFER_SIZE {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Hands everything buffered to libpq and empties the buffer (also when that fails: the
    /// data cannot be sent anyway).
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let sent = put_data(self.conn, &self.buf);
        self.buf.clear();
        if self.buf.capacity() > MAX_RETAINED {
            self.buf = BytesMut::new();
        }
        sent
    }

    fn write_bytes(&mut self, mut data: &[u8]) -> Result<()> {
        if self.buf.len() + data.len() < BUFFER_SIZE {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        if !self.buf.is_empty() {
            let take = BUFFER_SIZE.saturating_sub(self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.flush_buffer()?;
        }
        // Whole pieces go to libpq from the caller's memory; only the tail is buffered.
        let whole = data.len() - data.len() % BUFFER_SIZE;
        put_data(self.conn, &data[..whole])?;
        self.buf.extend_from_slice(&data[whole..]);
        Ok(())
    }
}

impl io::Write for CopyInWriter<'_> {
    /// Buffers `data`, handing full 64 KiB pieces to libpq (`PQputCopyData`). Always takes
    /// all of `data` unless it fails.
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let mut writer = conn.copy_in("COPY t FROM STDIN")?;
    /// writer.write_all(b"1\tone\n")?;
    /// writer.finish()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQputCopyData")]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_bytes(data).map_err(io::Error::other)?;
        Ok(data.len())
    }

    /// Hands the buffered data to libpq and sends everything libpq holds to the server.
    ///
    /// ```no_run
    /// use std::io::Write;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let mut writer = conn.copy_in("COPY t FROM STDIN")?;
    /// writer.write_all(b"1\tone\n")?;
    /// writer.flush()?; // the server has the row now (it is inserted only by finish)
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQflush")]
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer().map_err(io::Error::other)?;
        flush_libpq(self.conn).map_err(io::Error::other)
    }
}

impl Drop for CopyInWriter<'_> {
    /// Aborts an unfinished COPY (`PQputCopyEnd` with an error message) and reads the
    /// server's answer, so the connection is ready for the next statement.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.buf = BytesMut::new();
        // Nothing to report to; a lost connection shows in the connection's status. A panic
        // from the notice handler stays pending for the next statement (not raised in drop).
        let _ = put_end(self.conn, Some(DROPPED));
        let _ = end_results(self.conn);
    }
}

impl fmt::Debug for CopyInWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyInWriter")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Data from a `COPY … TO STDOUT`, from [`Connection::copy_out`].
///
/// Each buffer libpq returns (`PQgetCopyData`, one per row the server sends) is held as is
/// until it is consumed: [`fill_buf`](io::BufRead::fill_buf) returns a slice of it, so
/// `lines()`, `read_until` and [`BinaryCopyOutIter`](crate::binary_copy::BinaryCopyOutIter)
/// read libpq's memory directly.
///
/// An error the server reports (for instance a failing expression in
/// `COPY (SELECT …) TO STDOUT`, which can come after many rows) is returned by the read that
/// reaches it, as an [`io::Error`] whose inner error is a [`pqlib::Error`](crate::Error);
/// the connection is usable afterwards.
///
/// Dropping the reader before the end reads and discards the rest of the data, so the
/// connection is ready for the next statement: that costs the time to transfer what
/// remains. To stop a large COPY early, cancel it first with a
/// [`CancelToken`](crate::CancelToken).
///
/// ```no_run
/// use std::io::BufRead;
///
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// let reader = conn.copy_out("COPY (SELECT relname FROM pg_class) TO STDOUT")?;
/// let names: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "PQgetCopyData")]
pub struct CopyOutReader<'c> {
    conn: &'c mut Connection,
    /// The current buffer from `PQgetCopyData` and how much of it was consumed.
    chunk: Option<PqBuffer>,
    pos: usize,
    state: OutState,
}

enum OutState {
    /// More data may come from the server.
    Streaming,
    /// The COPY ended and its result was good: reads return end of file.
    Ended,
    /// The COPY failed with this error, reported once; later reads repeat its message.
    Failed(String),
}

impl CopyOutReader<'_> {
    /// Fetches the next buffer from libpq, or ends the COPY.
    fn next_chunk(&mut self) -> Result<()> {
        let raw = self.conn.conn.as_ptr();
        loop {
            let mut ptr: *mut c_char = std::ptr::null_mut();
            // SAFETY: the connection is alive and in COPY OUT state (or has just left it, which
            // libpq reports as -1/-2); `ptr` is a valid out-pointer. async = 0: block until a
            // row, the end, or an error.
            let n = unsafe { ffi::PQgetCopyData(raw, &mut ptr, 0) };
            if let Ok(len @ 1..) = usize::try_from(n) {
                // SAFETY: libpq allocated `len` bytes (plus a NUL) at `ptr` for us to free
                // with PQfreemem, which PqBuffer does exactly once.
                self.chunk = unsafe { PqBuffer::from_raw(ptr, len) };
                self.pos = 0;
                return Ok(());
            }
            // SAFETY: libpq leaves `ptr` NULL when it returns no data; freed if it did not.
            drop(unsafe { PqBuffer::from_raw(ptr, 0) });
            match n {
                // "Would block": only in async mode, which this is not. Wait and retry.
                0 => wait_socket(raw),
                -1 => {
                    let results = end_results(self.conn);
                    self.conn.notices.resume_panic();
                    return results.map(drop);
                }
                _ => {
                    let error = self.conn.connection_error();
                    let _ = end_results(self.conn);
                    self.conn.notices.resume_panic();
                    return Err(error);
                }
            }
        }
    }
}

impl io::Read for CopyOutReader<'_> {
    /// Copies data from libpq's current buffer, fetching the next one (`PQgetCopyData`)
    /// when it is used up; 0 at the end of the COPY.
    ///
    /// ```no_run
    /// use std::io::Read;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let mut data = Vec::new();
    /// conn.copy_out("COPY t TO STDOUT")?.read_to_end(&mut data)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQgetCopyData")]
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for CopyOutReader<'_> {
    /// The unread part of libpq's current buffer, fetching the next one when it is used up;
    /// empty at the end of the COPY.
    ///
    /// ```no_run
    /// use std::io::BufRead;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let mut reader = conn.copy_out("COPY t TO STDOUT")?;
    /// let first_row = reader.fill_buf()?.to_vec(); // the server sends one row per buffer
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQgetCopyData")]
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self
                .chunk
                .as_ref()
                .is_some_and(|c| self.pos < c.as_bytes().len())
            {
                break;
            }
            self.chunk = None;
            match &self.state {
                OutState::Streaming => {}
                OutState::Ended => return Ok(&[]),
                OutState::Failed(message) => {
                    return Err(io::Error::other(Error::client(format!(
                        "the COPY failed earlier: {message}"
                    ))));
                }
            }
            if let Err(e) = self.next_chunk() {
                self.state = OutState::Failed(e.to_string());
                return Err(io::Error::other(e));
            }
            if self.chunk.is_none() {
                self.state = OutState::Ended;
            }
        }
        let chunk = self.chunk.as_ref().map_or(&[][..], PqBuffer::as_bytes);
        Ok(&chunk[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        let len = self.chunk.as_ref().map_or(0, |c| c.as_bytes().len());
        self.pos = (self.pos + amount).min(len);
    }
}

impl Drop for CopyOutReader<'_> {
    /// Reads and discards what is left of the COPY, then its result, so that the
    /// connection is ready for the next statement.
    fn drop(&mut self) {
        self.chunk = None;
        if matches!(self.state, OutState::Streaming) {
            // Nothing to report to; a lost connection shows in the connection's status.
            let _ = leave_copy(self.conn, ffi::ExecStatusType::PGRES_COPY_OUT, UNEXPECTED);
        }
    }
}

impl fmt::Debug for CopyOutReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            OutState::Streaming => "streaming",
            OutState::Ended => "ended",
            OutState::Failed(_) => "failed",
        };
        f.debug_struct("CopyOutReader")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Hands `data` to libpq in pieces of at most [`BUFFER_SIZE`] bytes.
fn put_data(conn: &Connection, data: &[u8]) -> Result<()> {
    let raw = conn.conn.as_ptr();
    for piece in data.chunks(BUFFER_SIZE) {
        loop {
            // SAFETY: the connection is alive; `piece` is readable for its length, which fits
            // in c_int (at most BUFFER_SIZE); libpq copies it before returning.
            let rc =
                unsafe { ffi::PQputCopyData(raw, piece.as_ptr().cast(), piece.len() as c_int) };
            match rc {
                1 => break,
                // No room in a non-blocking connection's buffer: send, then try again.
                0 => flush_libpq(conn)?,
                _ => return Err(conn.connection_error()),
            }
        }
        if is_nonblocking(raw) {
            // A non-blocking connection only queues: send now, or libpq's buffer grows
            // with everything written.
            flush_libpq(conn)?;
        }
    }
    Ok(())
}

/// Ends a COPY IN: successfully with `None`, as a failure with the message otherwise.
fn put_end(conn: &Connection, error: Option<&CStr>) -> Result<()> {
    let raw = conn.conn.as_ptr();
    let message = error.map_or(std::ptr::null(), CStr::as_ptr);
    loop {
        // SAFETY: the connection is alive; `message` is NULL or a NUL-terminated string
        // that outlives the call.
        match unsafe { ffi::PQputCopyEnd(raw, message) } {
            1 => break,
            0 => flush_libpq(conn)?,
            _ => return Err(conn.connection_error()),
        }
    }
    if is_nonblocking(raw) {
        flush_libpq(conn)?;
    }
    Ok(())
}

/// Sends everything in libpq's output buffer (`PQflush`), waiting for the socket as needed
/// when the connection is non-blocking. On a blocking connection one call does it all.
fn flush_libpq(conn: &Connection) -> Result<()> {
    let raw = conn.conn.as_ptr();
    loop {
        // SAFETY: the connection is alive.
        match unsafe { ffi::PQflush(raw) } {
            0 => return Ok(()),
            1 => wait_socket(raw),
            _ => return Err(conn.connection_error()),
        }
    }
}

fn is_nonblocking(raw: *mut ffi::PGconn) -> bool {
    // SAFETY: the connection is alive.
    unsafe { ffi::PQisnonblocking(raw) == 1 }
}

/// Waits until the socket can be written or read, and reads what arrived (so the server,
/// which may be waiting to send, can go on reading what we send).
fn wait_socket(raw: *mut ffi::PGconn) {
    // SAFETY: the connection is alive.
    let socket = unsafe { ffi::PQsocket(raw) };
    if socket < 0 {
        return; // Closed: the next libpq call reports it.
    }
    poll_socket(socket);
    // SAFETY: the connection is alive; a failure is reported by the next libpq call.
    unsafe { ffi::PQconsumeInput(raw) };
}

/// Waits until the socket has something to read (the rest of a COPY OUT being discarded).
fn wait_readable(raw: *mut ffi::PGconn) {
    // SAFETY: the connection is alive.
    let socket = unsafe { ffi::PQsocket(raw) };
    if socket >= 0 {
        poll_socket_for(socket, false);
    }
}

fn poll_socket(socket: c_int) {
    poll_socket_for(socket, true);
}

#[cfg(libpq_17)]
fn poll_socket_for(socket: c_int, write: bool) {
    // SAFETY: a socket from PQsocket on a live connection; waiting for it reads nothing.
    // EINTR and errors just end the wait: the caller's loop tries again.
    unsafe { ffi::PQsocketPoll(socket, 1, c_int::from(write), -1) };
}

#[cfg(all(not(libpq_17), unix))]
fn poll_socket_for(socket: c_int, write: bool) {
    let mut fd = libc::pollfd {
        fd: socket,
        events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call; the socket belongs to a live
    // connection. EINTR and errors just end the wait: the caller's loop tries again.
    unsafe { libc::poll(&mut fd, 1, -1) };
}

#[cfg(all(not(libpq_17), not(unix)))]
fn poll_socket_for(_socket: c_int, _write: bool) {
    std::thread::yield_now();
}

/// The error a COPY we aborted on purpose ends with is expected; a lost connection is not.
pub(crate) fn ignore_abort(left: Result<()>) -> Result<()> {
    match left {
        Err(e) if e.is_closed() => Err(e),
        _ => Ok(()),
    }
}

/// Leaves the COPY the connection is in (`status`): ends a COPY IN with `message`, reads
/// and discards a COPY OUT's data, then reads every result. Returns the first error.
pub(crate) fn leave_copy(
    conn: &mut Connection,
    status: ffi::ExecStatusType,
    message: &CStr,
) -> Result<()> {
    discard_copy(conn, status, message)?;
    end_results(conn).map(drop)
}

/// Ends the COPY libpq is in, waiting for the socket as needed (see `copy_discard`).
fn discard_copy(conn: &mut Connection, status: ffi::ExecStatusType, message: &CStr) -> Result<()> {
    let raw = conn.conn.as_ptr();
    let mut discard = CopyDiscard::new(status);
    loop {
        // SAFETY: the connection is alive, ours, and in the COPY state `status` says.
        match unsafe { discard.step(raw, message) } {
            Discard::Done => break,
            Discard::NeedsFlush => flush_libpq(conn)?,
            Discard::NeedsInput => {
                wait_readable(raw);
                // SAFETY: the connection is alive; this reads only what has arrived.
                if unsafe { ffi::PQconsumeInput(raw) } == 0 {
                    return Err(conn.poison("the connection failed while leaving a COPY"));
                }
            }
            Discard::Failed => {
                return Err(conn.poison("libpq could not leave a COPY"));
            }
        }
    }
    if is_nonblocking(raw) {
        // The abort is only queued on a non-blocking connection.
        flush_libpq(conn)?;
    }
    Ok(())
}

/// Reads the results that follow a COPY until libpq has none left, so the connection is
/// ready for the next statement. Returns the row count of the first result (the COPY's
/// `PQcmdTuples`) or the first error among them.
///
/// Does not re-raise a notice handler's panic: callers do, once this has returned (and
/// drops do not).
fn end_results(conn: &mut Connection) -> Result<u64> {
    let raw = conn.conn.as_ptr();
    let mut outcome: Option<Result<u64>> = None;
    loop {
        // SAFETY: the connection is alive; the result is owned (and cleared) by PgResult.
        let Some(result) = PgResult::from_returned(unsafe { ffi::PQgetResult(raw) }) else {
            break;
        };
        let status = result.status();
        let this = match status {
            ffi::ExecStatusType::PGRES_COMMAND_OK
            | ffi::ExecStatusType::PGRES_TUPLES_OK
            | ffi::ExecStatusType::PGRES_EMPTY_QUERY => Ok(result.rows_affected()),
            status if is_copy(status) => {
                // A later statement in the same SQL text started another COPY: end it too.
                drop(result);
                conn.take_copy()?;
                discard_copy(conn, status, UNEXPECTED)?;
                Err(Error::bad_input(
                    "a statement after the COPY started another COPY (it was aborted or its \
                     data discarded)",
                ))
            }
            ffi::ExecStatusType::PGRES_FATAL_ERROR
            | ffi::ExecStatusType::PGRES_NONFATAL_ERROR
            | ffi::ExecStatusType::PGRES_BAD_RESPONSE => Err(result_error(conn, &result)),
            other => Err(Error::client(format!(
                "unexpected result status {}",
                other.0
            ))),
        };
        match (&outcome, &this) {
            (None, _) | (Some(Ok(_)), Err(_)) => outcome = Some(this),
            _ => {}
        }
    }
    outcome.unwrap_or_else(|| Err(conn.connection_error()))
}

/// The error an error result stands for (as `Connection::check` makes it).
fn result_error(conn: &Connection, result: &PgResultRef) -> Error {
    conn.classify_error(result)
}
