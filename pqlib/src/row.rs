//! Query results: [`Rows`] owns a `PGresult`; [`Row`] is a view of one row that borrows it, so
//! values borrowed from a row (`&str`, `&[u8]`) point straight into libpq's memory and cannot
//! outlive the result.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::decode::{Direct, direct};
use crate::error::{Error, Result};
use crate::handle::{PgResult, PgResultRef};
use crate::notice::NoticeState;
use crate::types::{FromSql, Type, WrongType};
use pqlib_sys as ffi;

/// A result column: its name and type, and where it comes from.
#[derive(Clone, PartialEq, Eq)]
pub struct Column {
    name: String,
    type_: Type,
    table_oid: Option<u32>,
    column_id: Option<i16>,
    /// Whether values need the array header check, decided once rather than per value.
    is_array: bool,
    /// How values are decoded when read as one of the common Rust types, decided once.
    direct: Direct,
    /// The Rust type last found to accept this column's type, so that reading every value
    /// of a column as the same `T` asks `T::accepts` once rather than per value.
    accepted: AcceptedType,
}

impl fmt::Debug for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column")
            .field("name", &self.name)
            .field("type_", &self.type_)
            .field("table_oid", &self.table_oid)
            .field("column_id", &self.column_id)
            .finish()
    }
}

/// A one-entry cache of `FromSql::accepts` for a column: the address of the last
/// `T::accepts` that returned true for the column's type (0: none yet).
///
/// A function's address stands for its result because `accepts` looks at nothing but the
/// type, which is the column's for good: one address is one function body, so one answer
/// (two functions share an address only when the compiler merged identical bodies, which
/// answer alike). One function may have several addresses (one per codegen unit); that only
/// costs a miss, which asks `accepts` again. Relaxed atomics: `Rows` is shared between
/// threads, and any value a thread sees is a correct entry.
#[derive(Default)]
struct AcceptedType(AtomicUsize);

impl AcceptedType {
    /// Whether `T` accepts `ty`, asking `T::accepts` only when the cache does not know.
    #[inline]
    fn check<'a, T: FromSql<'a>>(&self, ty: &Type) -> bool {
        let key = T::accepts as fn(&Type) -> bool as usize;
        if self.0.load(Ordering::Relaxed) == key {
            return true;
        }
        let accepted = T::accepts(ty);
        if accepted {
            self.0.store(key, Ordering::Relaxed);
        }
        accepted
    }
}

impl Clone for AcceptedType {
    fn clone(&self) -> AcceptedType {
        AcceptedType(AtomicUsize::new(self.0.load(Ordering::Relaxed)))
    }
}

/// A cache says nothing about the column: every two columns' caches are equal.
impl PartialEq for AcceptedType {
    fn eq(&self, _: &AcceptedType) -> bool {
        true
    }
}

impl Eq for AcceptedType {}

impl Column {
    pub(crate) fn new(result: &PgResultRef, i: usize, type_: Type) -> Column {
        let table = result.field_table(i);
        let column = result.field_table_column(i);
        Column {
            name: result.field_name(i),
            is_array: matches!(type_.kind(), crate::types::Kind::Array(_)),
            direct: Direct::of(&type_),
            type_,
            table_oid: (table != 0).then_some(table),
            column_id: (column != 0).then_some(column),
            accepted: AcceptedType::default(),
        }
    }

    /// Whether field `i` of `result` is this column: the same name, type and origin, so a
    /// description made earlier (the unnamed statement's) can stand for the result's own.
    pub(crate) fn describes(&self, result: &PgResultRef, i: usize) -> bool {
        let table = result.field_table(i);
        let column = result.field_table_column(i);
        self.type_.oid() == result.field_type(i)
            && self.table_oid == (table != 0).then_some(table)
            && self.column_id == (column != 0).then_some(column)
            && result.field_name_bytes(i) == Some(self.name.as_bytes())
    }

    /// The column's name (`?column?` for unnamed expressions).
    #[doc(alias = "PQfname")]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    #[doc(alias = "PQftype")]
    pub fn type_(&self) -> &Type {
        &self.type_
    }

    /// The OID of the table the column comes from, if it is a plain table column.
    #[doc(alias = "PQftable")]
    pub fn table_oid(&self) -> Option<u32> {
        self.table_oid
    }

    /// The column's number within its table, if it is a plain table column.
    #[doc(alias = "PQftablecol")]
    pub fn column_id(&self) -> Option<i16> {
        self.column_id
    }
}

/// The rows a query returned. Owns libpq's `PGresult` and frees it on drop.
///
/// `Rows` is `Send + Sync`: a `PGresult` is never modified after it is made, so it can be
/// read from any number of threads.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let rows = conn.query("SELECT relname, relpages FROM pg_class LIMIT 3", &[])?;
/// println!("{} rows, columns {:?}", rows.len(), rows.columns().iter().map(|c| c.name()).collect::<Vec<_>>());
/// for row in &rows {
///     let name: &str = row.get(0);
///     let pages: i32 = row.get("relpages");
///     println!("{name}: {pages}");
/// }
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct Rows {
    result: PgResult,
    /// `PQntuples` and `PQnfields`, read once: every value index is checked against them.
    len: usize,
    width: usize,
    columns: Arc<[Column]>,
    /// libpq copied the connection's notice hook into this result; keep its state alive.
    _notices: Arc<NoticeState>,
}

impl Rows {
    pub(crate) fn new(result: PgResult, columns: Arc<[Column]>, notices: Arc<NoticeState>) -> Rows {
        debug_assert_eq!(result.nfields(), columns.len());
        Rows {
            len: result.ntuples(),
            width: result.nfields(),
            result,
            columns,
            _notices: notices,
        }
    }

    /// A one-column binary result of type `ty` with `values` as its rows (`None`: NULL),
    /// built without a server (`PQmakeEmptyPGresult(NULL, …)`, `PQsetResultAttrs`,
    /// `PQsetvalue`), for fuzzing and tests.
    #[doc(hidden)]
    pub fn __single_column(ty: &Type, values: &[Option<&[u8]>]) -> Rows {
        use foreign_types::ForeignType;
        use std::ffi::c_int;
        // SAFETY: a NULL connection is allowed (no notice hook, default settings).
        let ptr = unsafe {
            ffi::PQmakeEmptyPGresult(std::ptr::null_mut(), ffi::ExecStatusType::PGRES_TUPLES_OK)
        };
        assert!(!ptr.is_null(), "out of memory");
        // SAFETY: `ptr` is a fresh result owned from here on, freed by PgResult's drop.
        let result = unsafe { PgResult::from_ptr(ptr) };
        let mut attr = ffi::pgresAttDesc {
            name: c"v".as_ptr().cast_mut(),
            tableid: 0,
            columnid: 0,
            format: 1,
            typid: ty.oid(),
            typlen: -1,
            atttypmod: -1,
        };
        // SAFETY: the result is alive; libpq copies the descriptor and its name.
        assert_eq!(unsafe { ffi::PQsetResultAttrs(ptr, 1, &mut attr) }, 1);
        for (row, value) in values.iter().enumerate() {
            let (bytes, len) = match value {
                Some(bytes) => (bytes.as_ptr().cast_mut().cast(), bytes.len() as c_int),
                None => (std::ptr::null_mut(), -1),
            };
            // SAFETY: the result is alive; PQsetvalue copies `len` bytes (or stores NULL for
            // -1) and grows the row array, rows being added in order.
            let ok = unsafe { ffi::PQsetvalue(ptr, row as c_int, 0, bytes, len) };
            assert_eq!(ok, 1, "PQsetvalue failed");
        }
        let columns: Arc<[Column]> = Arc::from([Column::new(&result, 0, ty.clone())]);
        Rows::new(result, columns, NoticeState::detached())
    }

    /// The number of rows.
    #[doc(alias = "PQntuples")]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no rows.
    #[doc(alias = "PQntuples")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The result's columns.
    #[doc(alias = "PQnfields")]
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Row `index`, if there is one.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let rows = conn.query("SELECT 1", &[])?;
    /// assert!(rows.get(0).is_some() && rows.get(1).is_none());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQntuples")]
    pub fn get(&self, index: usize) -> Option<Row<'_>> {
        (index < self.len()).then_some(Row { rows: self, index })
    }

    /// The rows, in order.
    #[doc(alias = "PQntuples")]
    pub fn iter(&self) -> RowIter<'_> {
        RowIter {
            rows: self,
            next: 0,
            end: self.len(),
        }
    }

    /// The number of rows the command affected (`INSERT`, `UPDATE`, `DELETE`, `SELECT`,
    /// `COPY`, …), 0 when it reports none.
    #[doc(alias = "PQcmdTuples")]
    pub fn rows_affected(&self) -> u64 {
        self.result.rows_affected()
    }

    /// The command tag without its counts: `SELECT`, `INSERT`, `COMMIT`, …
    #[doc(alias = "PQcmdStatus")]
    pub fn command_tag(&self) -> String {
        let status = self.result.command_status();
        let tag: Vec<&str> = status
            .split(' ')
            .take_while(|w| !w.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        tag.join(" ")
    }
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rows")
            .field("len", &self.len())
            .field("columns", &self.columns)
            .finish()
    }
}

impl<'r> IntoIterator for &'r Rows {
    type Item = Row<'r>;
    type IntoIter = RowIter<'r>;

    fn into_iter(self) -> RowIter<'r> {
        self.iter()
    }
}

/// An iterator over the rows of a [`Rows`].
#[derive(Clone, Debug)]
pub struct RowIter<'r> {
    rows: &'r Rows,
    next: usize,
    end: usize,
}

impl<'r> Iterator for RowIter<'r> {
    type Item = Row<'r>;

    fn next(&mut self) -> Option<Row<'r>> {
        (self.next < self.end).then(|| {
            self.next += 1;
            Row {
                rows: self.rows,
                index: self.next - 1,
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for RowIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.end -= 1;
            Row {
                rows: self.rows,
                index: self.end,
            }
        })
    }
}

impl ExactSizeIterator for RowIter<'_> {}

/// One row of a [`Rows`]. Values taken from it may borrow the result (`&'r str`,
/// `&'r [u8]`): no copy is made, and the compiler keeps them from outliving the `Rows`.
#[derive(Clone, Copy)]
pub struct Row<'r> {
    rows: &'r Rows,
    index: usize,
}

impl<'r> Row<'r> {
    /// The row's columns.
    #[doc(alias = "PQnfields")]
    pub fn columns(&self) -> &'r [Column] {
        self.rows.columns()
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.rows.columns.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of a column, by index or name, converted to `T`.
    ///
    /// # Panics
    /// If the column does not exist or the value cannot be converted to `T` (a wrong type, or
    /// SQL NULL into a non-`Option`). [`Row::try_get`] returns those as errors instead.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let rows = conn.query("SELECT 'a'::text AS letter, NULL::int4 AS missing", &[])?;
    /// let row = rows.get(0).unwrap();
    /// let letter: &str = row.get("letter");
    /// let missing: Option<i32> = row.get(1);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[track_caller]
    #[doc(alias = "PQgetvalue")]
    #[inline]
    pub fn get<I, T>(&self, index: I) -> T
    where
        I: RowIndex + fmt::Display,
        T: FromSql<'r>,
    {
        match self.try_get(&index) {
            Ok(value) => value,
            Err(e) => get_failed(&index, e),
        }
    }

    /// Like [`Row::get`], returning an error instead of panicking.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let rows = conn.query("SELECT 1::int4", &[])?;
    /// let row = rows.get(0).unwrap();
    /// assert!(row.try_get::<_, String>(0).is_err()); // int4 is not text
    /// assert!(row.try_get::<_, i32>("nope").is_err());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQgetvalue")]
    #[doc(alias = "PQgetisnull")]
    #[inline]
    pub fn try_get<I, T>(&self, index: I) -> Result<T>
    where
        I: RowIndex + fmt::Display,
        T: FromSql<'r>,
    {
        let columns = self.columns();
        let Some(col) = index.__index(columns) else {
            return Err(no_such_column(&index, columns.len()));
        };
        let column = &columns[col];
        let ty = column.type_();
        // Per column, not per value: `T::accepts` runs once for a column read as `T`.
        if !column.accepted.check::<T>(ty) {
            return Err(wrong_type::<T>(&index, ty));
        }
        if col >= self.rows.width {
            return Err(narrow_result(&index, self.rows.width));
        }
        // SAFETY: `index < len` (rows are only made for indexes below it), `col < width`.
        let raw = unsafe { self.rows.result.value_unchecked(self.index, col) };
        if let Some(value) = direct::<T>(column.direct, raw) {
            return Ok(value);
        }
        if column.is_array {
            crate::types::check_array_header(ty, raw)?;
        }
        match T::from_sql_nullable(ty, raw) {
            Ok(value) => Ok(value),
            Err(e) => Err(not_converted(&index, ty, e)),
        }
    }

    /// The raw binary bytes of a column, `None` for SQL NULL.
    #[doc(alias = "PQgetvalue")]
    #[doc(alias = "PQgetlength")]
    #[doc(alias = "PQgetisnull")]
    pub fn raw(&self, col: usize) -> Result<Option<&'r [u8]>> {
        if col >= self.len() || col >= self.rows.width {
            return Err(Error::column(format!(
                "{col} (the row has {} columns)",
                self.len()
            )));
        }
        // SAFETY: as in `try_get`: `col` was checked above, `index` on construction.
        Ok(unsafe { self.rows.result.value_unchecked(self.index, col) })
    }
}

// The error paths of `Row::try_get` and `Row::get`, out of line so that the generic hot
// path, instantiated for every column type read, stays small.

#[cold]
#[inline(never)]
#[track_caller]
fn get_failed(index: &dyn fmt::Display, e: Error) -> ! {
    panic!("error retrieving column {index}: {e}")
}

#[cold]
#[inline(never)]
fn no_such_column(index: &dyn fmt::Display, columns: usize) -> Error {
    Error::column(format!("{index} (the row has {columns} columns)"))
}

#[cold]
#[inline(never)]
fn narrow_result(index: &dyn fmt::Display, width: usize) -> Error {
    Error::column(format!("{index} (the result has {width} columns)"))
}

#[cold]
#[inline(never)]
fn wrong_type<'a, T: FromSql<'a>>(index: &dyn fmt::Display, ty: &Type) -> Error {
    Error::conversion(
        format!("column {index}"),
        Box::new(WrongType::new::<T>(ty.clone())),
    )
}

#[cold]
#[inline(never)]
fn not_converted(
    index: &dyn fmt::Display,
    ty: &Type,
    e: Box<dyn std::error::Error + Sync + Send>,
) -> Error {
    Error::conversion(format!("column {index} of type {ty}"), e)
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("index", &self.index)
            .field("columns", &self.columns())
            .finish()
    }
}

/// A row that owns its result: what [`query_one`](crate::Connection::query_one) and
/// [`query_opt`](crate::Connection::query_opt) return. Values borrowed from it live as long
/// as the `OwnedRow`.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("").unwrap();
/// let row = conn.query_one("SELECT 'x'::text, 2::int8", &[])?;
/// let (s, n): (&str, i64) = (row.get(0), row.get(1));
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct OwnedRow {
    rows: Rows,
}

impl OwnedRow {
    /// The one row of `rows` (`query_one`), or an error of kind `RowCount`.
    pub(crate) fn exactly_one(rows: Rows) -> Result<OwnedRow> {
        match rows.len() {
            1 => Ok(OwnedRow { rows }),
            n => Err(Error::row_count(format!(
                "query_one expected exactly one row, got {n}"
            ))),
        }
    }

    /// The row of `rows` if there is one (`query_opt`); more is an error of kind `RowCount`.
    pub(crate) fn at_most_one(rows: Rows) -> Result<Option<OwnedRow>> {
        match rows.len() {
            0 => Ok(None),
            1 => Ok(Some(OwnedRow { rows })),
            n => Err(Error::row_count(format!(
                "query_opt expected at most one row, got {n}"
            ))),
        }
    }

    /// The row as a borrowed [`Row`].
    pub fn row(&self) -> Row<'_> {
        Row {
            rows: &self.rows,
            index: 0,
        }
    }

    /// The row's columns.
    #[doc(alias = "PQnfields")]
    pub fn columns(&self) -> &[Column] {
        self.rows.columns()
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.rows.columns.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`Row::get`].
    #[doc(alias = "PQgetvalue")]
    #[track_caller]
    pub fn get<'a, I, T>(&'a self, index: I) -> T
    where
        I: RowIndex + fmt::Display,
        T: FromSql<'a>,
    {
        self.row().get(index)
    }

    /// See [`Row::try_get`].
    #[doc(alias = "PQgetvalue")]
    #[doc(alias = "PQgetisnull")]
    pub fn try_get<'a, I, T>(&'a self, index: I) -> Result<T>
    where
        I: RowIndex + fmt::Display,
        T: FromSql<'a>,
    {
        self.row().try_get(index)
    }

    /// The whole result, e.g. to move it elsewhere.
    pub fn into_rows(self) -> Rows {
        self.rows
    }
}

impl fmt::Debug for OwnedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRow")
            .field("columns", &self.columns())
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A column index: a `usize` position or a `&str` name (the first column of that name).
pub trait RowIndex: sealed::Sealed {
    #[doc(hidden)]
    fn __index(&self, columns: &[Column]) -> Option<usize>;
}

impl sealed::Sealed for usize {}
impl RowIndex for usize {
    fn __index(&self, columns: &[Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl sealed::Sealed for str {}
impl RowIndex for str {
    fn __index(&self, columns: &[Column]) -> Option<usize> {
        columns.iter().position(|c| c.name() == self).or_else(|| {
            columns
                .iter()
                .position(|c| c.name().eq_ignore_ascii_case(self))
        })
    }
}

impl<T: ?Sized + sealed::Sealed> sealed::Sealed for &T {}
impl<T: ?Sized + RowIndex> RowIndex for &T {
    fn __index(&self, columns: &[Column]) -> Option<usize> {
        T::__index(*self, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single_value(ty: &Type, value: &[u8]) -> Rows {
        Rows::__single_column(ty, &[Some(value)])
    }

    fn int4_array(claimed: i32, elements: &[i32]) -> Vec<u8> {
        let mut raw = Vec::new();
        for word in [1, 0, Type::INT4.oid() as i32, claimed, 1] {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        for e in elements {
            raw.extend_from_slice(&4i32.to_be_bytes());
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw
    }

    /// The checks made once per column still judge every value: a value that fails them in
    /// a later row is refused with the error the first row would have had.
    #[test]
    fn later_rows_are_checked_like_the_first() {
        use crate::error::ErrorKind;
        let four = 7i32.to_be_bytes();
        let rows = Rows::__single_column(&Type::INT4, &[Some(&four[..]), None, Some(&four[..3])]);
        assert_eq!(rows.get(0).unwrap().get::<_, i32>(0), 7);
        let null = rows.get(1).unwrap().try_get::<_, i32>(0).unwrap_err();
        assert_eq!(null.kind(), ErrorKind::Conversion, "{null}");
        assert!(null.to_string().contains("column 0 of type int4"), "{null}");
        let short = rows.get(2).unwrap().try_get::<_, i32>(0).unwrap_err();
        assert_eq!(short.kind(), ErrorKind::Conversion, "{short}");
        // Other types are still judged on their own after i32 was accepted.
        for row in &rows {
            assert!(row.try_get::<_, i64>(0).is_err());
            assert!(row.try_get::<_, &str>(0).is_err());
        }
        let maybes: Vec<Option<i32>> = rows.iter().take(2).map(|r| r.get(0)).collect();
        assert_eq!(maybes, [Some(7), None]);

        let rows = Rows::__single_column(&Type::TEXT, &[Some(&b"ok"[..]), Some(&[0xff, 0xfe])]);
        assert_eq!(rows.get(0).unwrap().get::<_, &str>(0), "ok");
        let bad = rows.get(1).unwrap().try_get::<_, &str>(0).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::Conversion, "{bad}");
        assert!(rows.get(1).unwrap().try_get::<_, String>(0).is_err());
        assert!(rows.get(1).unwrap().try_get::<_, Option<&str>>(0).is_err());
        assert_eq!(
            rows.get(1).unwrap().raw(0).unwrap(),
            Some(&[0xff, 0xfe][..])
        );
    }

    #[test]
    fn array_values_are_decoded_and_hostile_headers_refused() {
        let rows = single_value(&Type::INT4_ARRAY, &int4_array(3, &[7, 8, 9]));
        let row = rows.get(0).unwrap();
        assert_eq!(row.get::<_, Vec<i32>>(0), vec![7, 8, 9]);
        // A billion elements claimed in 28 bytes: refused before postgres-types reserves room.
        let rows = single_value(&Type::INT4_ARRAY, &int4_array(1_000_000_000, &[1]));
        let error = rows.get(0).unwrap().try_get::<_, Vec<i32>>(0).unwrap_err();
        assert_eq!(error.kind(), crate::error::ErrorKind::Conversion, "{error}");
        assert!(
            error.to_string().contains("claims 1000000000 elements"),
            "{error}"
        );
    }
}
