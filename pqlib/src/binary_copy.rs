//! Typed rows over `COPY … (FORMAT binary)`: [`BinaryCopyInWriter`] encodes Rust values with
//! [`ToSql`] into the binary COPY format, [`BinaryCopyOutIter`] decodes rows whose values are
//! read with [`FromSql`]. The shapes are those of the `postgres` crate's `binary_copy`
//! module; the iterator is a standard [`Iterator`] of `Result`s (wrap it in
//! `fallible_iterator::convert` where code expects a `FallibleIterator`).
//!
//! ```no_run
//! use pqlib::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
//! use pqlib::types::Type;
//!
//! let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
//! conn.batch_execute("CREATE TEMP TABLE points (id int4, label text, x float8)")?;
//!
//! let types = [Type::INT4, Type::TEXT, Type::FLOAT8];
//! let writer = conn.copy_in("COPY points FROM STDIN (FORMAT binary)")?;
//! let mut writer = BinaryCopyInWriter::new(writer, &types);
//! for i in 0..1000i32 {
//!     let label = (i % 2 == 0).then(|| format!("point {i}"));
//!     writer.write(&[&i, &label, &(f64::from(i) / 2.0)])?;
//! }
//! assert_eq!(writer.finish()?, 1000);
//!
//! let reader = conn.copy_out("COPY points TO STDOUT (FORMAT binary)")?;
//! for row in BinaryCopyOutIter::new(reader, &types) {
//!     let row = row?;
//!     let (id, label, x): (i32, Option<&str>, f64) = (row.get(0), row.get(1), row.get(2));
//!     println!("{id} {label:?} {x}");
//! }
//! # Ok::<(), pqlib::Error>(())
//! ```
//!
//! # The format
//!
//! A header (`PGCOPY\n\xff\r\n\0`, 32-bit flags, a 32-bit header-extension length and the
//! extension), then each row as a 16-bit field count followed by each field as a 32-bit
//! length (-1 for NULL) and that many bytes of the type's binary representation, then a
//! 16-bit -1 trailer. All integers are big-endian.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::copy::{CopyInWriter, CopyOutReader};
use crate::error::{Error, Result};
use crate::types::{BorrowToSql, FromSql, IsNull, ToSql, Type, WrongType};

/// The binary COPY signature that starts the header.
pub(crate) const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Header flag bit 16: each row has an OID field first (tables `WITH OIDS`, gone since
/// PostgreSQL 12).
pub(crate) const HAS_OIDS: i32 = 1 << 16;

/// Writes rows of typed values into a `COPY … FROM STDIN (FORMAT binary)`.
///
/// Each row is encoded straight into the [`CopyInWriter`]'s buffer (a length placeholder,
/// then [`ToSql::to_sql_checked`], then the length), which is handed to libpq in 64 KiB
/// pieces: no allocation per value or per row. A value that cannot be encoded leaves
/// nothing of its row behind, so writing can go on with the next row.
///
/// Dropping the writer without [`finish`](BinaryCopyInWriter::finish) aborts the COPY.
///
/// ```no_run
/// use pqlib::binary_copy::BinaryCopyInWriter;
/// use pqlib::types::Type;
///
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// let writer = conn.copy_in("COPY people (id, name) FROM STDIN (FORMAT binary)")?;
/// let mut writer = BinaryCopyInWriter::new(writer, &[Type::INT4, Type::TEXT]);
/// writer.write(&[&1i32, &"Ada"])?;
/// writer.write(&[&2i32, &None::<&str>])?; // NULL
/// assert_eq!(writer.finish()?, 2);
/// # Ok::<(), pqlib::Error>(())
/// ```
#[doc(alias = "PQputCopyData")]
pub struct BinaryCopyInWriter<'c> {
    writer: CopyInWriter<'c>,
    types: Vec<Type>,
}

impl<'c> BinaryCopyInWriter<'c> {
    /// Wraps a writer from a `COPY … FROM STDIN (FORMAT binary)` whose columns have `types`,
    /// in order, and writes the format's header.
    ///
    /// ```no_run
    /// use pqlib::binary_copy::BinaryCopyInWriter;
    /// use pqlib::types::Type;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let writer = conn.copy_in("COPY t (a, b) FROM STDIN (FORMAT binary)")?;
    /// let writer = BinaryCopyInWriter::new(writer, &[Type::INT8, Type::BYTEA]);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn new(mut writer: CopyInWriter<'c>, types: &[Type]) -> BinaryCopyInWriter<'c> {
        encode_header(&mut writer.buf);
        BinaryCopyInWriter {
            writer,
            types: types.to_vec(),
        }
    }

    /// Writes one row: one value per column type given to [`new`](BinaryCopyInWriter::new).
    ///
    /// A wrong number of values is an error of kind
    /// [`BadInput`](crate::error::ErrorKind::BadInput); a value that does not fit its
    /// column's type (checked by [`ToSql::to_sql_checked`]) or fails to encode is one of kind
    /// [`Conversion`](crate::error::ErrorKind::Conversion). Either way the row is not
    /// written.
    ///
    /// ```no_run
    /// use pqlib::binary_copy::BinaryCopyInWriter;
    /// use pqlib::types::Type;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let writer = conn.copy_in("COPY t (a, b) FROM STDIN (FORMAT binary)")?;
    /// let mut writer = BinaryCopyInWriter::new(writer, &[Type::INT4, Type::TEXT]);
    /// writer.write(&[&7i32, &"seven"])?;
    /// assert!(writer.write(&[&7i32]).is_err()); // one value short
    /// assert!(writer.write(&[&"7", &"seven"]).is_err()); // text for an int4
    /// writer.finish()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQputCopyData")]
    pub fn write(&mut self, values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        self.write_raw(values.iter().copied())
    }

    /// Like [`write`](BinaryCopyInWriter::write), for values from any iterator of things
    /// that lend a [`ToSql`] (`&dyn ToSql`, `Box<dyn ToSql + Sync>`, …).
    ///
    /// ```no_run
    /// use pqlib::binary_copy::BinaryCopyInWriter;
    /// use pqlib::types::{ToSql, Type};
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let writer = conn.copy_in("COPY t (a, b) FROM STDIN (FORMAT binary)")?;
    /// let mut writer = BinaryCopyInWriter::new(writer, &[Type::INT4, Type::INT4]);
    /// let row: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(1i32), Box::new(2i32)];
    /// writer.write_raw(row)?;
    /// writer.finish()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQputCopyData")]
    pub fn write_raw<P, I>(&mut self, values: I) -> Result<()>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        encode_row(&mut self.writer.buf, &self.types, values)?;
        self.writer.flush_if_full()
    }

    /// Writes the trailer, ends the COPY and returns the number of rows copied; see
    /// [`CopyInWriter::finish`].
    ///
    /// ```no_run
    /// use pqlib::binary_copy::BinaryCopyInWriter;
    /// use pqlib::types::Type;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// # let writer = conn.copy_in("COPY t (a) FROM STDIN (FORMAT binary)")?;
    /// let mut writer = BinaryCopyInWriter::new(writer, &[Type::INT4]);
    /// writer.write(&[&1i32])?;
    /// assert_eq!(writer.finish()?, 1);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQputCopyEnd")]
    pub fn finish(mut self) -> Result<u64> {
        self.writer.buf.put_i16(-1);
        self.writer.finish()
    }
}

impl fmt::Debug for BinaryCopyInWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCopyInWriter")
            .field("types", &self.types)
            .field("writer", &self.writer)
            .finish()
    }
}

/// Rows of a `COPY … TO STDOUT (FORMAT binary)`, decoded as they arrive.
///
/// Each item is a [`BinaryCopyOutRow`] that owns its bytes (one allocation per row) or the
/// error that ended the COPY: a server error, data that is not binary COPY format, or rows
/// with another number of columns than the types given. The iterator ends after an error.
/// Dropping it early leaves the connection usable (see [`CopyOutReader`]).
///
/// ```no_run
/// use pqlib::binary_copy::BinaryCopyOutIter;
/// use pqlib::types::Type;
///
/// let mut conn = pqlib::Connection::connect("host=localhost user=postgres")?;
/// let reader = conn.copy_out("COPY (SELECT g, g::text FROM generate_series(1, 3) g) TO STDOUT (FORMAT binary)")?;
/// let mut sum = 0;
/// for row in BinaryCopyOutIter::new(reader, &[Type::INT4, Type::TEXT]) {
///     let row = row?;
///     sum += row.get::<i32>(0);
///     let text: &str = row.get(1);
/// }
/// assert_eq!(sum, 6);
/// # Ok::<(), pqlib::Error>(())
/// ```
#[doc(alias = "PQgetCopyData")]
pub struct BinaryCopyOutIter<'c> {
    decoder: Decoder<CopyOutReader<'c>>,
}

/// Appends one row to `buf`, or nothing if a value fails.
pub(crate) fn encode_row<P, I>(buf: &mut BytesMut, types: &[Type], values: I) -> Result<()>
where
    P: BorrowToSql,
    I: IntoIterator<Item = P>,
    I::IntoIter: ExactSizeIterator,
{
    let values = values.into_iter();
    if values.len() != types.len() {
        return Err(Error::bad_input(format!(
            "the COPY has {} columns but {} values were given",
            types.len(),
            values.len()
        )));
    }
    let Ok(count) = i16::try_from(types.len()) else {
        return Err(Error::bad_input(format!(
            "{} columns; a binary COPY row holds at most {}",
            types.len(),
            i16::MAX
        )));
    };
    let row_start = buf.len();
    // Room for the field count and every length at once, rather than a check per put.
    buf.reserve(2 + 4 * types.len());
    buf.put_i16(count);
    for (i, (value, ty)) in values.zip(types).enumerate() {
        let length_at = buf.len();
        buf.put_i32(-1); // NULL unless the value says otherwise
        match value.borrow_to_sql().to_sql_checked(ty, buf) {
            Ok(IsNull::Yes) => buf.truncate(length_at + 4),
            Ok(IsNull::No) => {
                let length = buf.len().wrapping_sub(length_at + 4);
                match (i32::try_from(length), buf.get_mut(length_at..length_at + 4)) {
                    (Ok(length), Some(slot)) => slot.copy_from_slice(&length.to_be_bytes()),
                    _ => {
                        buf.truncate(row_start);
                        return Err(too_long(i, ty, length));
                    }
                }
            }
            Err(e) => {
                buf.truncate(row_start);
                return Err(not_encoded(i, ty, e));
            }
        }
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn too_long(i: usize, ty: &Type, length: usize) -> Error {
    Error::bad_input(format!(
        "value {i} ({ty}) is {length} bytes; the most is {}",
        i32::MAX
    ))
}

#[cold]
#[inline(never)]
fn not_encoded(i: usize, ty: &Type, e: Box<dyn std::error::Error + Sync + Send>) -> Error {
    Error::conversion(format!("value {i} for a column of type {ty}"), e)
}

/// Appends the header: signature, flags, no extension.
pub(crate) fn encode_header(buf: &mut BytesMut) {
    buf.reserve(SIGNATURE.len() + 8);
    buf.put_slice(SIGNATURE);
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
}

/// The binary COPY parser, over any buffered reader (a [`CopyOutReader`] in use).
struct Decoder<R> {
    reader: R,
    types: Arc<[Type]>,
    state: OutState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutState {
    Header,
    Rows,
    Done,
}

/// What the start of the buffered data holds.
pub(crate) enum Scan {
    /// The trailer (a field count of -1).
    Trailer,
    /// A whole row of this many bytes.
    Row(usize),
    /// Part of a row: it continues in the next buffer.
    Partial,
}

impl<'c> BinaryCopyOutIter<'c> {
    /// Wraps a reader from a `COPY … TO STDOUT (FORMAT binary)` whose columns have `types`,
    /// in order. Nothing is read until the first call to `next`.
    ///
    /// ```no_run
    /// use pqlib::binary_copy::BinaryCopyOutIter;
    /// use pqlib::types::Type;
    ///
    /// # let mut conn = pqlib::Connection::connect("")?;
    /// let reader = conn.copy_out("COPY t (a) TO STDOUT (FORMAT binary)")?;
    /// let rows = BinaryCopyOutIter::new(reader, &[Type::INT8]).collect::<Result<Vec<_>, _>>()?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn new(reader: CopyOutReader<'c>, types: &[Type]) -> BinaryCopyOutIter<'c> {
        BinaryCopyOutIter {
            decoder: Decoder::new(reader, types),
        }
    }
}

/// The binary COPY parser of [`BinaryCopyOutIter`] over any buffered reader, for fuzzing
/// and tests.
#[doc(hidden)]
pub fn __decode<R: BufRead>(
    reader: R,
    types: &[Type],
) -> impl Iterator<Item = Result<BinaryCopyOutRow>> {
    let mut decoder = Decoder::new(reader, types);
    std::iter::from_fn(move || decoder.next())
}

impl<R: BufRead> Decoder<R> {
    fn new(reader: R, types: &[Type]) -> Decoder<R> {
        Decoder {
            reader,
            types: types.into(),
            state: OutState::Header,
        }
    }

    fn next(&mut self) -> Option<Result<BinaryCopyOutRow>> {
        if self.state == OutState::Done {
            return None;
        }
        match self.next_row() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.state = OutState::Done;
                None
            }
            Err(e) => {
                self.state = OutState::Done;
                Some(Err(e))
            }
        }
    }

    fn next_row(&mut self) -> Result<Option<BinaryCopyOutRow>> {
        if self.state == OutState::Header {
            self.read_header()?;
            self.state = OutState::Rows;
        }
        // The server sends one row per buffer: parse it where libpq put it.
        let buf = self.reader.fill_buf().map_err(from_io)?;
        match scan(buf, self.types.len())? {
            Scan::Row(len) => {
                let row = make_row(&self.types, &buf[..len]);
                self.reader.consume(len);
                Ok(Some(row))
            }
            Scan::Trailer => {
                self.reader.consume(2);
                self.read_to_end()?;
                Ok(None)
            }
            Scan::Partial => self.read_split_row(),
        }
    }

    fn read_header(&mut self) -> Result<()> {
        let mut header = [0; 19];
        let mut got = 0;
        while got < header.len() {
            match self.reader.read(&mut header[got..]).map_err(from_io)? {
                0 => break,
                n => got += n,
            }
        }
        if got < SIGNATURE.len() || &header[..SIGNATURE.len()] != SIGNATURE {
            return Err(Error::bad_input(
                "the COPY data is not in binary format (no PGCOPY signature); \
                 use COPY … TO STDOUT (FORMAT binary)",
            ));
        }
        if got < header.len() {
            return Err(invalid("the COPY data ended inside the header"));
        }
        let flags = i32::from_be_bytes([header[11], header[12], header[13], header[14]]);
        if flags & HAS_OIDS != 0 {
            return Err(Error::unsupported("binary COPY data with OIDs"));
        }
        let extension = i32::from_be_bytes([header[15], header[16], header[17], header[18]]);
        let extension =
            u64::try_from(extension).map_err(|_| invalid("a negative header extension length"))?;
        let skipped =
            io::copy(&mut (&mut self.reader).take(extension), &mut io::sink()).map_err(from_io)?;
        if skipped != extension {
            return Err(invalid("the COPY data ended inside the header"));
        }
        Ok(())
    }

    /// Reads a row that is split across libpq's buffers (the server does not split rows,
    /// but the protocol allows it).
    fn read_split_row(&mut self) -> Result<Option<BinaryCopyOutRow>> {
        let mut tuple = Vec::new();
        let mut count = [0; 2];
        self.reader.read_exact(&mut count).map_err(from_io)?;
        if i16::from_be_bytes(count) == -1 {
            self.read_to_end()?;
            return Ok(None);
        }
        tuple.extend_from_slice(&count);
        for _ in 0..check_count(count, self.types.len())? {
            let mut length = [0; 4];
            self.reader.read_exact(&mut length).map_err(from_io)?;
            tuple.extend_from_slice(&length);
            let Some(length) = field_length(length)? else {
                continue;
            };
            let read = (&mut self.reader)
                .take(length as u64)
                .read_to_end(&mut tuple)
                .map_err(from_io)?;
            if read != length {
                return Err(invalid("the COPY data ended inside a row"));
            }
        }
        Ok(Some(make_row(&self.types, &tuple)))
    }

    /// Reads what follows the trailer: the end of the COPY, where an error that ended it
    /// is reported.
    fn read_to_end(&mut self) -> Result<()> {
        loop {
            let n = self.reader.fill_buf().map_err(from_io)?.len();
            if n == 0 {
                return Ok(());
            }
            self.reader.consume(n);
        }
    }
}

/// A row from one whole, checked tuple: its bytes and, after them, where each field
/// starts, in one allocation.
pub(crate) fn make_row(types: &Arc<[Type]>, tuple: &[u8]) -> BinaryCopyOutRow {
    let fields = types.len();
    let mut data = Vec::with_capacity(tuple.len() + 4 * fields);
    data.extend_from_slice(tuple);
    let mut at = 2;
    for _ in 0..fields {
        data.extend_from_slice(&(at as u32).to_ne_bytes());
        let length = i32::from_be_bytes([tuple[at], tuple[at + 1], tuple[at + 2], tuple[at + 3]]);
        at += 4 + usize::try_from(length).unwrap_or(0);
    }
    debug_assert_eq!(at, tuple.len());
    BinaryCopyOutRow {
        data: data.into_boxed_slice(),
        tuple_len: tuple.len(),
        types: types.clone(),
    }
}

/// Finds where the row at the start of `buf` ends, checking its field count and lengths.
pub(crate) fn scan(buf: &[u8], columns: usize) -> Result<Scan> {
    let Some(&[a, b]) = buf.get(..2) else {
        if buf.is_empty() {
            return Err(invalid("the COPY data ended without the binary trailer"));
        }
        return Ok(Scan::Partial);
    };
    if i16::from_be_bytes([a, b]) == -1 {
        return Ok(Scan::Trailer);
    }
    let mut at = 2;
    for _ in 0..check_count([a, b], columns)? {
        let Some(&[a, b, c, d]) = buf.get(at..at + 4) else {
            return Ok(Scan::Partial);
        };
        at += 4;
        if let Some(length) = field_length([a, b, c, d])? {
            at += length;
            if at > buf.len() {
                return Ok(Scan::Partial);
            }
        }
    }
    Ok(Scan::Row(at))
}

fn check_count(count: [u8; 2], columns: usize) -> Result<usize> {
    let count = i16::from_be_bytes(count);
    let count =
        usize::try_from(count).map_err(|_| invalid(&format!("a field count of {count}")))?;
    if count != columns {
        return Err(Error::bad_input(format!(
            "the COPY rows have {count} columns but {columns} types were given"
        )));
    }
    Ok(count)
}

/// A field's length, `None` for NULL.
fn field_length(length: [u8; 4]) -> Result<Option<usize>> {
    match i32::from_be_bytes(length) {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| invalid(&format!("a field length of {n}"))),
    }
}

fn invalid(what: &str) -> Error {
    Error::client(format!("invalid binary COPY data: {what}"))
}

/// The error inside an `io::Error` from a [`CopyOutReader`], or one describing it.
fn from_io(error: io::Error) -> Error {
    let kind = error.kind();
    match error.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => Error::client("reading the COPY data failed").with_source(other),
        None if kind == io::ErrorKind::UnexpectedEof => {
            invalid("the COPY data ended inside a row or the header")
        }
        None => Error::client("reading the COPY data failed").with_source(io::Error::from(kind)),
    }
}

impl Iterator for BinaryCopyOutIter<'_> {
    type Item = Result<BinaryCopyOutRow>;

    /// The next row, or the error that ended the COPY; `None` after the trailer (once the
    /// COPY is known to have succeeded) or after an error.
    #[doc(alias = "PQgetCopyData")]
    fn next(&mut self) -> Option<Result<BinaryCopyOutRow>> {
        self.decoder.next()
    }
}

impl std::iter::FusedIterator for BinaryCopyOutIter<'_> {}

impl fmt::Debug for BinaryCopyOutIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCopyOutIter")
            .field("types", &self.decoder.types)
            .field("reader", &self.decoder.reader)
            .finish()
    }
}

/// One row from a [`BinaryCopyOutIter`]. Values read from it may borrow it (`&str`,
/// `&[u8]`).
///
/// ```no_run
/// use pqlib::binary_copy::BinaryCopyOutIter;
/// use pqlib::types::Type;
///
/// # let mut conn = pqlib::Connection::connect("")?;
/// let reader = conn.copy_out("COPY (SELECT 1::int4, NULL::text) TO STDOUT (FORMAT binary)")?;
/// let row = BinaryCopyOutIter::new(reader, &[Type::INT4, Type::TEXT]).next().unwrap()?;
/// assert_eq!(row.get::<i32>(0), 1);
/// assert_eq!(row.get::<Option<&str>>(1), None);
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct BinaryCopyOutRow {
    /// The tuple as sent (field count, then each field's length and bytes), then for each
    /// field the offset of its length within the tuple as a native-endian `u32`.
    data: Box<[u8]>,
    tuple_len: usize,
    types: Arc<[Type]>,
}

impl BinaryCopyOutRow {
    /// The number of values in the row.
    ///
    /// ```no_run
    /// # fn f(row: pqlib::binary_copy::BinaryCopyOutRow) {
    /// for i in 0..row.len() {
    ///     println!("{:?}", row.try_get::<Option<&str>>(i));
    /// }
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the row has no values.
    ///
    /// ```no_run
    /// # fn f(row: pqlib::binary_copy::BinaryCopyOutRow) {
    /// assert!(!row.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `index`, converted to `T`.
    ///
    /// # Panics
    /// If there is no such value or it cannot be converted to `T` (a wrong type, or NULL
    /// into a non-`Option`). [`try_get`](BinaryCopyOutRow::try_get) returns those as errors.
    ///
    /// ```no_run
    /// # fn f(row: pqlib::binary_copy::BinaryCopyOutRow) {
    /// let id: i32 = row.get(0);
    /// let name: Option<&str> = row.get(1);
    /// # }
    /// ```
    #[track_caller]
    pub fn get<'a, T>(&'a self, index: usize) -> T
    where
        T: FromSql<'a>,
    {
        match self.try_get(index) {
            Ok(value) => value,
            Err(e) => panic!("error retrieving value {index}: {e}"),
        }
    }

    /// Like [`get`](BinaryCopyOutRow::get), returning an error instead of panicking: of kind
    /// [`Column`](crate::error::ErrorKind::Column) for an index out of range,
    /// [`Conversion`](crate::error::ErrorKind::Conversion) for a value that does not
    /// convert.
    ///
    /// ```no_run
    /// # fn f(row: pqlib::binary_copy::BinaryCopyOutRow) -> Result<(), pqlib::Error> {
    /// let id: i64 = row.try_get(0)?;
    /// assert!(row.try_get::<i32>(99).is_err());
    /// # Ok(()) }
    /// ```
    pub fn try_get<'a, T>(&'a self, index: usize) -> Result<T>
    where
        T: FromSql<'a>,
    {
        let Some(ty) = self.types.get(index) else {
            return Err(Error::column(format!(
                "{index} (the row has {} values)",
                self.len()
            )));
        };
        if !T::accepts(ty) {
            return Err(Error::conversion(
                format!("value {index}"),
                Box::new(WrongType::new::<T>(ty.clone())),
            ));
        }
        crate::types::check_array_header(ty, self.raw(index))?;
        T::from_sql_nullable(ty, self.raw(index))
            .map_err(|e| Error::conversion(format!("value {index} of type {ty}"), e))
    }

    /// The bytes of value `index` (`index < len()`), `None` for NULL.
    fn raw(&self, index: usize) -> Option<&[u8]> {
        let entry = self.tuple_len + 4 * index;
        let at =
            u32::from_ne_bytes(self.data[entry..entry + 4].try_into().expect("4 bytes")) as usize;
        let length = i32::from_be_bytes(self.data[at..at + 4].try_into().expect("4 bytes"));
        let length = usize::try_from(length).ok()?;
        Some(&self.data[at + 4..at + 4 + length])
    }
}

impl fmt::Debug for BinaryCopyOutRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCopyOutRow")
            .field("types", &self.types)
            .field("bytes", &self.tuple_len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// Hands out `data` at most `size` bytes at a time, as libpq's buffers would.
    struct Chunks<'a> {
        data: &'a [u8],
        size: usize,
        pos: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(out.len());
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunks<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let chunk_end = (self.pos / self.size + 1) * self.size;
            Ok(&self.data[self.pos..chunk_end.min(self.data.len())])
        }

        fn consume(&mut self, amount: usize) {
            self.pos += amount;
        }
    }

    const TYPES: [Type; 3] = [Type::INT4, Type::TEXT, Type::BYTEA];

    fn sample() -> BytesMut {
        let mut buf = BytesMut::new();
        encode_header(&mut buf);
        for i in 0..50i32 {
            let text = (i % 4 != 0).then(|| format!("row {i}"));
            let bytes = vec![i as u8; i as usize];
            encode_row(&mut buf, &TYPES, [&i as &(dyn ToSql + Sync), &text, &bytes]).unwrap();
        }
        buf.put_i16(-1);
        buf
    }

    fn decode(data: &[u8], size: usize) -> Vec<Result<BinaryCopyOutRow>> {
        let mut decoder = Decoder::new(Chunks { data, size, pos: 0 }, &TYPES);
        std::iter::from_fn(|| decoder.next()).collect()
    }

    #[test]
    fn rows_split_anywhere_decode_the_same() {
        let data = sample();
        for size in (1..=13).chain([64, 1 << 20]) {
            let rows = decode(&data, size);
            assert_eq!(rows.len(), 50, "chunks of {size}");
            for (i, row) in rows.into_iter().enumerate() {
                let row = row.unwrap();
                let i = i as i32;
                assert_eq!(row.get::<i32>(0), i);
                let text = (i % 4 != 0).then(|| format!("row {i}"));
                assert_eq!(row.get::<Option<&str>>(1), text.as_deref());
                assert_eq!(row.get::<&[u8]>(2), vec![i as u8; i as usize]);
            }
        }
    }

    #[test]
    fn a_failed_value_leaves_nothing_behind() {
        let mut buf = BytesMut::new();
        encode_row(
            &mut buf,
            &TYPES,
            [&1i32 as &(dyn ToSql + Sync), &"a", &vec![1u8]],
        )
        .unwrap();
        let len = buf.len();
        let e = encode_row(
            &mut buf,
            &TYPES,
            [&1i32 as &(dyn ToSql + Sync), &"a", &"not bytea"],
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conversion);
        assert_eq!(buf.len(), len);
        let e = encode_row(&mut buf, &TYPES, [&1i32 as &(dyn ToSql + Sync)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(buf.len(), len);
    }

    /// A value whose encoder shrinks the buffer below its own length field.
    #[derive(Debug)]
    struct Shrinking;

    impl ToSql for Shrinking {
        fn to_sql(
            &self,
            _: &Type,
            out: &mut BytesMut,
        ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            out.truncate(out.len().saturating_sub(6));
            Ok(IsNull::No)
        }

        fn accepts(_: &Type) -> bool {
            true
        }

        postgres_types::to_sql_checked!();
    }

    #[test]
    fn an_encoder_that_shrinks_the_buffer_is_an_error() {
        let mut buf = BytesMut::new();
        let e =
            encode_row(&mut buf, &[Type::INT4], [&Shrinking as &(dyn ToSql + Sync)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        assert!(buf.is_empty());
    }

    #[test]
    fn broken_data_is_an_error() {
        let data = sample();
        // Cut inside the last row, and before the trailer.
        for cut in [data.len() - 5, data.len() - 2] {
            let rows = decode(&data[..cut], 7);
            let e = rows.last().unwrap().as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Client, "{e}");
        }
        // Cut inside the header.
        let rows = decode(&data[..15], 4);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_err());
        // A header extension is skipped.
        let mut extended = BytesMut::new();
        extended.put_slice(SIGNATURE);
        extended.put_i32(0);
        extended.put_i32(3);
        extended.put_slice(b"ext");
        extended.put_slice(&data[19..]);
        assert_eq!(decode(&extended, 5).len(), 50);
    }
}
