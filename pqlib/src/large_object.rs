//! Large objects: binary values of up to 4 TB stored in `pg_largeobject`, read and written
//! in pieces through a descriptor, like a file.
//!
//! Large objects exist only inside transactions: the server closes every descriptor when the
//! transaction (or the savepoint it was opened in) ends. So in pqlib they are reached through
//! a [`Transaction`], and a [`LargeObject`] borrows that transaction mutably: it cannot be
//! used after the transaction commits or rolls back, and the transaction cannot run other
//! statements while it is open. The compiler checks both.
//!
//! | on [`Transaction`] | libpq | what it does |
//! |---|---|---|
//! | [`large_object_create`](Transaction::large_object_create) | `lo_create` | a new, empty object; the server picks its OID |
//! | [`large_object_create_with_oid`](Transaction::large_object_create_with_oid) | `lo_create` | a new object with the given OID |
//! | [`large_object_open`](Transaction::large_object_open) | `lo_open` | a [`LargeObject`]: `Read`, `Write`, `Seek` |
//! | [`large_object_unlink`](Transaction::large_object_unlink) | `lo_unlink` | deletes an object |
//! | [`large_object_import`](Transaction::large_object_import) | `lo_import` | a client-side file into a new object |
//! | [`large_object_export`](Transaction::large_object_export) | `lo_export` | an object into a client-side file |
//!
//! ```no_run
//! use std::io::{Read, Seek, SeekFrom, Write};
//! use pqlib::LargeObjectMode;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut conn = pqlib::Connection::connect("dbname=app")?;
//! let mut tx = conn.transaction()?;
//! let oid = tx.large_object_create()?;
//! let mut lo = tx.large_object_open(oid, LargeObjectMode::ReadWrite)?;
//! lo.write_all(b"hello, large object")?;
//! lo.seek(SeekFrom::Start(7))?;
//! let mut text = String::new();
//! lo.read_to_string(&mut text)?;
//! assert_eq!(text, "large object");
//! lo.close()?;
//! tx.commit()?;
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! libpq's `lo_create`, `lo_open` and `lo_unlink` discard the server's error report and leave
//! only its text in `PQerrorMessage`. Those three are the operations whose failures callers
//! tell apart (no such object: [`UNDEFINED_OBJECT`](crate::error::SqlState::UNDEFINED_OBJECT),
//! OID taken: [`UNIQUE_VIOLATION`](crate::error::SqlState::UNIQUE_VIOLATION), no
//! permission: [`INSUFFICIENT_PRIVILEGE`](crate::error::SqlState::INSUFFICIENT_PRIVILEGE)), so
//! pqlib calls the same server functions with a one-round-trip SQL `SELECT` instead, and their
//! errors carry the full [`DbError`](crate::error::DbError) and its SQLSTATE.
//!
//! Reads, seeks and tells go through SQL as well (`loread`, `lo_lseek64`, `lo_tell64`, each a
//! statement prepared once per connection): libpq's functions for them copy as many bytes as
//! the server sends into the caller's buffer, so a broken or hostile server could overrun it,
//! while pqlib checks the length of each answer (one longer than asked is an error of kind
//! [`Client`](crate::error::ErrorKind::Client)). Their server errors carry the
//! [`DbError`](crate::error::DbError) too.
//!
//! Writes, truncation, closing and the file transfers use libpq's `lo_*` functions directly.
//! Their errors carry libpq's message with kind [`Client`](crate::error::ErrorKind::Client).
//! Any operation fails with [`Closed`](crate::error::ErrorKind::Closed) when the connection
//! is gone. Through the `io` traits errors arrive as an [`io::Error`] of kind
//! [`Other`](io::ErrorKind::Other) that wraps the [`Error`] (get it back with
//! [`get_ref`](io::Error::get_ref)`().and_then(|e| e.downcast_ref::<pqlib::Error>())`).
//!
//! As with any statement, a failure on the server aborts the transaction: roll it back (or use
//! a savepoint) before going on.

use std::ffi::{CString, c_int};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use pqlib_sys as ffi;

use crate::error::{Error, Result};
use crate::types::Type;
use crate::{Connection, Transaction, TransactionStatus};

/// `INV_WRITE` from `libpq/libpq-fs.h` (not part of `libpq-fe.h`, so not in the bindings).
const INV_WRITE: c_int = 0x0002_0000;
/// `INV_READ` from `libpq/libpq-fs.h`.
const INV_READ: c_int = 0x0004_0000;

/// `whence` values of `lo_lseek64`; the server defines them as the C library's.
const SEEK_SET: c_int = 0;
const SEEK_CUR: c_int = 1;
const SEEK_END: c_int = 2;

/// Reads, seeks and tells go through these SQL functions (prepared once per connection, binary
/// results), not libpq's `lo_read`, `lo_lseek64` and `lo_tell64`: those use `PQfn`, which copies
/// as many bytes as the server's answer holds into the caller's buffer (or an `int64` on
/// libpq's stack), so a broken or hostile server could write past it. Here libpq stores the
/// answer in a result sized by the answer itself, and [`copy_bounded`] refuses one longer than
/// asked. `lo_write`, `lo_truncate64` and `lo_close` stay on libpq: their answer is an `int4`
/// that libpq reads as one (any other length is an error).
const LOREAD: &str = "SELECT pg_catalog.loread($1, $2)";
const LO_LSEEK64: &str = "SELECT pg_catalog.lo_lseek64($1, $2, $3)";
const LO_TELL64: &str = "SELECT pg_catalog.lo_tell64($1)";

/// The most bytes one read (`loread`) or `lo_write` call moves.
///
/// Every call is a round trip, so a large buffer should go in few calls; but the server
/// allocates the requested length for each read whatever the object holds, libpq grows its
/// connection buffers to the largest message and keeps them that size, and larger messages
/// fall out of the CPU caches. Measured over a unix socket (100 MiB, interleaved runs, median):
/// writes are bound by the server at any size from 256 KiB up; reads are fastest at 1–2 MiB
/// (about 260 MiB/s) and slow down above 4 MiB (about 160 MiB/s at 8 MiB). At 2 MiB a 1 ms
/// network round trip still costs only a few percent of a call. libpq itself rejects lengths
/// above `INT_MAX`, and the server caps a value at 1 GB. Those figures are from `lo_read`
/// (`PQfn`); after reads moved to SQL `loread` (issue 13, finding 8), interleaved old/new runs
/// of `throughput_100_mib` (tests/large_object.rs, release, 100 MiB, median of 3, run twice
/// each) on a shared 2-core machine at load average ~10 could not tell them apart: 2 MiB reads
/// 102 and 68 MiB/s before, 98 and 74 after; 256 KiB reads 87/105 before, 92/50 after; writes
/// (unchanged code) 25–43 MiB/s. The absolute figures above were not re-measured on a quiet
/// machine.
const CHUNK: usize = 2 << 20;

/// How a large object is opened: the `mode` of `lo_open`.
///
/// The server lets a descriptor opened for writing read as well, and reads through it see the
/// object as it is now, including this transaction's writes. A descriptor opened with
/// [`Read`](LargeObjectMode::Read) alone cannot write, and reads the object as it was when the
/// transaction's snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[doc(alias = "INV_READ")]
#[doc(alias = "INV_WRITE")]
pub enum LargeObjectMode {
    /// `INV_READ`: read only, from the transaction's snapshot.
    Read,
    /// `INV_WRITE`: write (and, as the server allows, read).
    Write,
    /// `INV_READ | INV_WRITE`: read and write.
    ReadWrite,
}

impl LargeObjectMode {
    fn bits(self) -> c_int {
        match self {
            LargeObjectMode::Read => INV_READ,
            LargeObjectMode::Write => INV_WRITE,
            LargeObjectMode::ReadWrite => INV_READ | INV_WRITE,
        }
    }
}

impl<'c> Transaction<'c> {
    /// Creates a new, empty large object and returns its OID, which the server chooses.
    ///
    /// The object exists once the transaction commits; rolled back, it never did.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// let oid = tx.large_object_create()?;
    /// tx.execute("INSERT INTO documents (body) VALUES ($1)", &[&oid])?;
    /// tx.commit()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_create")]
    #[doc(alias = "lo_creat")]
    pub fn large_object_create(&mut self) -> Result<u32> {
        self.create(0)
    }

    /// Creates a new, empty large object with the given OID. Fails with
    /// [`UNIQUE_VIOLATION`](crate::error::SqlState::UNIQUE_VIOLATION) if another large object
    /// has that OID; `oid` must not be 0.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// assert_eq!(tx.large_object_create_with_oid(424_242)?, 424_242);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_create")]
    pub fn large_object_create_with_oid(&mut self, oid: u32) -> Result<u32> {
        if oid == 0 {
            return Err(Error::bad_input(
                "0 is InvalidOid, not a large object OID; use large_object_create to let the server choose",
            ));
        }
        self.create(oid)
    }

    fn create(&mut self, oid: u32) -> Result<u32> {
        // SQL rather than libpq's lo_create, which drops the server's SQLSTATE (see the
        // module documentation).
        let rows = self.query_typed("SELECT pg_catalog.lo_create($1)", &[(&oid, Type::OID)])?;
        single_value(&rows)
    }

    /// Opens a large object for reading, writing or both. The [`LargeObject`] borrows the
    /// transaction until it is dropped or [closed](LargeObject::close).
    ///
    /// A missing object is an error with
    /// [`UNDEFINED_OBJECT`](crate::error::SqlState::UNDEFINED_OBJECT), which (as every server
    /// error) aborts the transaction.
    ///
    /// ```no_run
    /// use std::io::Read;
    /// use pqlib::LargeObjectMode;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let oid = 16_400;
    /// let mut tx = conn.transaction()?;
    /// let mut lo = tx.large_object_open(oid, LargeObjectMode::Read)?;
    /// let mut bytes = Vec::new();
    /// lo.read_to_end(&mut bytes)?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "lo_open")]
    pub fn large_object_open(
        &mut self,
        oid: u32,
        mode: LargeObjectMode,
    ) -> Result<LargeObject<'_>> {
        // SQL rather than libpq's lo_open, which drops the server's SQLSTATE.
        let rows = self.query_typed(
            "SELECT pg_catalog.lo_open($1, $2)",
            &[(&oid, Type::OID), (&mode.bits(), Type::INT4)],
        )?;
        let fd: i32 = single_value(&rows)?;
        Ok(LargeObject {
            conn: self.connection(),
            fd,
            oid,
            mode,
            open: true,
        })
    }

    /// Deletes a large object. A missing one is an error with
    /// [`UNDEFINED_OBJECT`](crate::error::SqlState::UNDEFINED_OBJECT).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let oid = 16_400;
    /// let mut tx = conn.transaction()?;
    /// tx.large_object_unlink(oid)?;
    /// tx.commit()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_unlink")]
    pub fn large_object_unlink(&mut self, oid: u32) -> Result<()> {
        // SQL rather than libpq's lo_unlink, which drops the server's SQLSTATE.
        let rows = self.query_typed("SELECT pg_catalog.lo_unlink($1)", &[(&oid, Type::OID)])?;
        single_value::<i32>(&rows).map(drop)
    }

    /// Copies a file on the client into a new large object and returns its OID.
    ///
    /// The file is read by libpq, 8 KiB per round trip. On failure libpq has already created
    /// the object in this transaction: roll back to be rid of it. Errors, including a file
    /// that cannot be opened, have kind [`Client`](crate::error::ErrorKind::Client) and
    /// libpq's message; a path with a NUL byte is [`BadInput`](crate::error::ErrorKind::BadInput).
    /// On unix any path works; elsewhere it must be valid Unicode.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// let oid = tx.large_object_import("photo.jpg")?;
    /// tx.commit()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_import")]
    pub fn large_object_import(&mut self, path: impl AsRef<Path>) -> Result<u32> {
        let path = c_path(path.as_ref())?;
        let conn = self.connection();
        // SAFETY: the connection is alive and `path` is a NUL-terminated string that outlives
        // the call; libpq only reads it.
        let oid = unsafe { ffi::lo_import(conn.as_ptr(), path.as_ptr()) };
        conn.notices.resume_panic();
        if oid == 0 {
            return Err(conn.connection_error());
        }
        Ok(oid)
    }

    /// Copies a file on the client into a new large object with the given OID (which must
    /// not be 0). See [`large_object_import`](Transaction::large_object_import).
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut tx = conn.transaction()?;
    /// tx.large_object_import_with_oid("photo.jpg", 424_242)?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_import_with_oid")]
    pub fn large_object_import_with_oid(
        &mut self,
        path: impl AsRef<Path>,
        oid: u32,
    ) -> Result<u32> {
        if oid == 0 {
            return Err(Error::bad_input(
                "0 is InvalidOid, not a large object OID; use large_object_import to let the server choose",
            ));
        }
        let path = c_path(path.as_ref())?;
        let conn = self.connection();
        // SAFETY: as in large_object_import.
        let created = unsafe { ffi::lo_import_with_oid(conn.as_ptr(), path.as_ptr(), oid) };
        conn.notices.resume_panic();
        if created == 0 {
            return Err(conn.connection_error());
        }
        Ok(created)
    }

    /// Copies a large object into a file on the client, created or truncated (with mode
    /// `0666` less the umask on unix).
    ///
    /// The object is read as [`LargeObject`]'s `read` does, 2 MiB per round trip (libpq's
    /// `lo_export` reads with an unchecked length into a buffer of its own, so pqlib does not
    /// use it). A missing object is an error with
    /// [`UNDEFINED_OBJECT`](crate::error::SqlState::UNDEFINED_OBJECT); a file that cannot be
    /// created or written is an error of kind [`Client`](crate::error::ErrorKind::Client)
    /// wrapping the [`io::Error`]; a path with a NUL byte is
    /// [`BadInput`](crate::error::ErrorKind::BadInput). On unix any path works; elsewhere it
    /// must be valid Unicode.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let oid = 16_400;
    /// let mut tx = conn.transaction()?;
    /// tx.large_object_export(oid, "/tmp/photo.jpg")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_export")]
    pub fn large_object_export(&mut self, oid: u32, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        // The same checks as the libpq calls take, before anything is sent.
        c_path(path)?;
        let mut lo = self.large_object_open(oid, LargeObjectMode::Read)?;
        let file_error = |what: &str, e: io::Error| {
            Error::client(format!("could not {what} file \"{}\": {e}", path.display()))
                .with_source(e)
        };
        let mut file = std::fs::File::create(path).map_err(|e| file_error("open", e))?;
        let mut buf = vec![0; CHUNK];
        loop {
            let n = lo.read_chunk(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(|e| file_error("write to", e))?;
        }
        lo.close()
    }
}

/// The only value of a one-row, one-column result.
fn single_value<T>(rows: &crate::Rows) -> Result<T>
where
    T: for<'a> crate::types::FromSql<'a>,
{
    match rows.get(0) {
        Some(row) if rows.len() == 1 => row.try_get(0),
        _ => Err(Error::client(format!(
            "expected one row, got {}",
            rows.len()
        ))),
    }
}

/// A path as the C string libpq's `fopen`/`open` take.
fn c_path(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| {
            Error::bad_input(format!("the path {} is not valid Unicode", path.display()))
        })?
        .as_bytes();
    CString::new(bytes).map_err(|e| Error::nul_byte("the file path", e))
}

/// An open large object: a descriptor on the server that reads, writes and seeks like a file.
///
/// It borrows its [`Transaction`] mutably, so it cannot outlive it, and the transaction cannot
/// be committed while the object is open. Dropping it closes the descriptor (`lo_close`),
/// ignoring errors; [`close`](LargeObject::close) reports them.
///
/// Every [`read`](Read::read), [`write`](Write::write), [`seek`](Seek::seek) is a round trip to
/// the server, so move data in large buffers (up to 2 MiB go in one call; larger ones are
/// split), or wrap the object in a [`BufReader`](io::BufReader) /
/// [`BufWriter`](io::BufWriter) with a large capacity. Offsets are 64-bit (`lo_lseek64`,
/// `lo_tell64`, `lo_truncate64`).
///
/// ```no_run
/// use std::io::{Read, Seek, SeekFrom, Write};
/// use pqlib::LargeObjectMode;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut conn = pqlib::Connection::connect("")?;
/// let mut tx = conn.transaction()?;
/// let oid = tx.large_object_create()?;
/// let mut lo = tx.large_object_open(oid, LargeObjectMode::ReadWrite)?;
/// lo.write_all(&[0xde, 0xad, 0xbe, 0xef])?;
/// assert_eq!(lo.len()?, 4);
/// lo.seek(SeekFrom::End(-2))?;
/// let mut tail = [0; 2];
/// lo.read_exact(&mut tail)?;
/// assert_eq!(tail, [0xbe, 0xef]);
/// drop(lo);
/// tx.commit()?;
/// # Ok(()) }
/// ```
pub struct LargeObject<'t> {
    conn: &'t mut Connection,
    fd: c_int,
    oid: u32,
    mode: LargeObjectMode,
    /// False once `close` has run, so that Drop does not close the descriptor again.
    open: bool,
}

impl LargeObject<'_> {
    /// The object's OID.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let mut tx = conn.transaction()?;
    /// let lo = tx.large_object_open(16_400, pqlib::LargeObjectMode::Read)?;
    /// assert_eq!(lo.oid(), 16_400);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn oid(&self) -> u32 {
        self.oid
    }

    /// The mode the object was opened with.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let mut tx = conn.transaction()?;
    /// let lo = tx.large_object_open(16_400, pqlib::LargeObjectMode::Read)?;
    /// assert_eq!(lo.mode(), pqlib::LargeObjectMode::Read);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn mode(&self) -> LargeObjectMode {
        self.mode
    }

    /// The current position, in bytes from the start.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let mut tx = conn.transaction()?;
    /// # let oid = tx.large_object_create()?;
    /// let mut lo = tx.large_object_open(oid, pqlib::LargeObjectMode::Write)?;
    /// lo.write_all(b"abc")?;
    /// assert_eq!(lo.tell()?, 3);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "lo_tell64")]
    #[doc(alias = "lo_tell")]
    pub fn tell(&mut self) -> Result<u64> {
        // SQL rather than libpq's lo_tell64 (see LOREAD).
        let rows = self.conn.query(LO_TELL64, &[&self.fd])?;
        position(single_value(&rows)?)
    }

    /// The object's size in bytes. Three round trips: it seeks to the end and back.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let mut tx = conn.transaction()?;
    /// let mut lo = tx.large_object_open(16_400, pqlib::LargeObjectMode::Read)?;
    /// println!("{} bytes", lo.len()?);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_lseek64")]
    #[doc(alias = "lo_lseek")]
    #[allow(clippy::len_without_is_empty)] // is_empty would cost the same three round trips
    pub fn len(&mut self) -> Result<u64> {
        let position = self.tell()?;
        let end = self.lseek(0, SEEK_END)?;
        // `position` came from the server as a non-negative i64.
        self.lseek(position as i64, SEEK_SET)?;
        Ok(end)
    }

    /// Cuts the object to `len` bytes, or extends it with zero bytes to that length. The
    /// position does not move. Needs a descriptor opened for writing.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// # let mut tx = conn.transaction()?;
    /// let mut lo = tx.large_object_open(16_400, pqlib::LargeObjectMode::Write)?;
    /// lo.truncate(1024)?;
    /// assert_eq!(lo.len()?, 1024);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "lo_truncate64")]
    #[doc(alias = "lo_truncate")]
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        let len = i64::try_from(len).map_err(|_| {
            Error::bad_input(format!(
                "a large object length of {len} bytes does not fit in 63 bits"
            ))
        })?;
        // SAFETY: the connection is alive and `fd` is this transaction's open descriptor.
        let rc = unsafe { ffi::lo_truncate64(self.conn.as_ptr(), self.fd, len) };
        self.conn.notices.resume_panic();
        if rc < 0 {
            return Err(self.conn.connection_error());
        }
        Ok(())
    }

    /// Closes the descriptor, reporting an error that dropping the object would ignore.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let mut tx = conn.transaction()?;
    /// # let oid = tx.large_object_create()?;
    /// let mut lo = tx.large_object_open(oid, pqlib::LargeObjectMode::Write)?;
    /// lo.write_all(b"done")?;
    /// lo.close()?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "lo_close")]
    pub fn close(mut self) -> Result<()> {
        self.open = false;
        // SAFETY: the connection is alive and `fd` is this transaction's open descriptor,
        // closed only here (Drop skips it now that `open` is false).
        let rc = unsafe { ffi::lo_close(self.conn.as_ptr(), self.fd) };
        self.conn.notices.resume_panic();
        if rc < 0 {
            return Err(self.conn.connection_error());
        }
        Ok(())
    }

    fn lseek(&mut self, offset: i64, whence: c_int) -> Result<u64> {
        // SQL rather than libpq's lo_lseek64 (see LOREAD); any offset and whence are allowed
        // (the server checks them).
        let rows = self.conn.query(LO_LSEEK64, &[&self.fd, &offset, &whence])?;
        position(single_value(&rows)?)
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len().min(CHUNK);
        // `CHUNK` fits in an int4.
        let rows = self.conn.query(LOREAD, &[&self.fd, &(len as i32)])?;
        let value = match rows.get(0) {
            Some(row) if rows.len() == 1 => row.raw(0)?,
            _ => {
                return Err(Error::client(format!(
                    "loread: expected one row, got {}",
                    rows.len()
                )));
            }
        };
        copy_bounded(&mut buf[..len], value)
    }
}

/// Copies the bytes the server answered a read of `dst.len()` bytes with into `dst`, and
/// returns how many. An answer longer than asked (which a broken or hostile server could
/// send) or NULL is an error and copies nothing.
fn copy_bounded(dst: &mut [u8], answer: Option<&[u8]>) -> Result<usize> {
    let Some(answer) = answer else {
        return Err(Error::client("loread returned NULL"));
    };
    let Some(dst) = dst.get_mut(..answer.len()) else {
        return Err(Error::client(format!(
            "the server answered a large object read of at most {} bytes with {} bytes",
            dst.len(),
            answer.len()
        )));
    };
    dst.copy_from_slice(answer);
    Ok(answer.len())
}

/// A position the server reported, which is never negative.
fn position(position: i64) -> Result<u64> {
    u64::try_from(position).map_err(|_| {
        Error::client(format!(
            "the server reported a negative large object position ({position})"
        ))
    })
}

/// A pqlib error as an `io::Error` of kind `Other`.
fn io_error(error: Error) -> io::Error {
    io::Error::other(error)
}

impl Read for LargeObject<'_> {
    /// Reads up to `buf.len()` bytes, at most 2 MiB per call; 0 at the end of the object.
    #[doc(alias = "lo_read")]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_chunk(buf).map_err(io_error)
    }
}

impl Write for LargeObject<'_> {
    /// Writes up to 2 MiB of `buf` in one call and returns how many bytes were written.
    #[doc(alias = "lo_write")]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len().min(CHUNK);
        // SAFETY: the connection is alive and `fd` is this transaction's open descriptor;
        // libpq reads exactly `len <= buf.len()` bytes from `buf`.
        let n = unsafe { ffi::lo_write(self.conn.as_ptr(), self.fd, buf.as_ptr().cast(), len) };
        self.conn.notices.resume_panic();
        match usize::try_from(n) {
            Ok(n) if n <= len => Ok(n),
            Ok(n) => Err(io_error(Error::client(format!(
                "lo_write reported {n} bytes written of {len}"
            )))),
            Err(_) => Err(io_error(self.conn.connection_error())),
        }
    }

    /// Does nothing: every write has reached the server when it returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for LargeObject<'_> {
    /// Moves the position (`lo_lseek64`). Seeking past the end is allowed (a write there
    /// leaves a hole of zero bytes); seeking before the start is an error from the server,
    /// which aborts the transaction.
    #[doc(alias = "lo_lseek64")]
    #[doc(alias = "lo_lseek")]
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (offset, whence) = match pos {
            SeekFrom::Start(offset) => {
                let offset = i64::try_from(offset).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("a large object offset of {offset} does not fit in 63 bits"),
                    )
                })?;
                (offset, SEEK_SET)
            }
            SeekFrom::Current(offset) => (offset, SEEK_CUR),
            SeekFrom::End(offset) => (offset, SEEK_END),
        };
        self.lseek(offset, whence).map_err(io_error)
    }

    /// The current position (`lo_tell64`), in one round trip.
    fn stream_position(&mut self) -> io::Result<u64> {
        self.tell().map_err(io_error)
    }
}

impl Drop for LargeObject<'_> {
    fn drop(&mut self) {
        // In a failed transaction (or on a lost connection) the server has nothing to close
        // that the rollback would not: skip the round trip and its certain error.
        if self.open && self.conn.transaction_status() == TransactionStatus::InTransaction {
            // SAFETY: the connection is alive and `fd` is this transaction's open descriptor,
            // not yet closed.
            let _ = unsafe { ffi::lo_close(self.conn.as_ptr(), self.fd) };
            // A panic from the notice handler stays stored for the connection's next call:
            // raising it here could abort a thread that is already unwinding.
        }
    }
}

impl fmt::Debug for LargeObject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LargeObject")
            .field("oid", &self.oid)
            .field("fd", &self.fd)
            .field("mode", &self.mode)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn copy_bounded_copies_an_answer_that_fits() {
        let mut buf = [0xaa; 8];
        assert_eq!(copy_bounded(&mut buf[..4], Some(b"abc")).unwrap(), 3);
        assert_eq!(&buf, b"abc\xaa\xaa\xaa\xaa\xaa");
        assert_eq!(copy_bounded(&mut buf[..4], Some(b"wxyz")).unwrap(), 4);
        assert_eq!(copy_bounded(&mut buf[..4], Some(b"")).unwrap(), 0);
        assert_eq!(copy_bounded(&mut [], Some(b"")).unwrap(), 0);
    }

    #[test]
    fn copy_bounded_refuses_an_answer_longer_than_asked() {
        let mut buf = [0xaa; 8];
        let e = copy_bounded(&mut buf[..4], Some(b"12345")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Client, "{e:?}");
        assert!(e.to_string().contains("at most 4 bytes with 5"), "{e}");
        assert_eq!(buf, [0xaa; 8], "nothing copied");
        assert!(copy_bounded(&mut [], Some(b"x")).is_err());
        assert!(copy_bounded(&mut buf, None).is_err());
    }

    #[test]
    fn negative_positions_are_errors() {
        assert_eq!(position(0).unwrap(), 0);
        assert_eq!(position(i64::MAX).unwrap(), i64::MAX as u64);
        assert!(position(-1).is_err());
    }
}
