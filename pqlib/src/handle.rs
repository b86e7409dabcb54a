//! The libpq objects, each owned by exactly one Rust value (`foreign-types` owned/`Ref` pairs,
//! as in the `openssl` crate). Dropping the owner frees the object; nothing here is `Clone`.
//! Thin, safe accessors live on the `Ref` types; the user-facing API is built on them.

use std::ffi::{CStr, c_char, c_int};
use std::ptr::NonNull;

use foreign_types::{ForeignType, ForeignTypeRef, foreign_type};
use pqlib_sys as ffi;

foreign_type! {
    /// A `PGconn`, closed with `PQfinish`.
    pub(crate) unsafe type PgConn: Send {
        type CType = ffi::PGconn;
        fn drop = ffi::PQfinish;
    }

    /// A `PGresult`, freed with `PQclear`. Results are read-only once made, so one can be read
    /// from several threads (libpq documents `PGresult` as safe to share read-only).
    pub(crate) unsafe type PgResult: Send + Sync {
        type CType = ffi::PGresult;
        fn drop = ffi::PQclear;
    }
}

/// Lossy: server text in another encoding than UTF-8 must not turn a report into an error.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for this call.
pub(crate) unsafe fn lossy_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated, per this function's contract.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A string one of libpq's connection getters (`PQhost`, `PQport`, `PQuser`, `PQdb`, …)
/// returns, copied; `None` for a NULL connection or result.
///
/// # Safety
/// `conn` must be NULL or a live `PGconn` for this call.
pub(crate) unsafe fn conn_string(
    conn: *mut ffi::PGconn,
    getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut c_char,
) -> Option<String> {
    if conn.is_null() {
        return None;
    }
    // SAFETY: the connection is alive (the caller's contract); the getters return NULL or a
    // string owned by the connection, copied before anything can change it.
    unsafe { lossy_string(getter(conn)) }
}

/// One option of a connection as libpq resolved it (`PQconninfo`: the connection string,
/// environment, service file and defaults together); `None` if unset or empty, or for a
/// NULL connection.
///
/// # Safety
/// `conn` must be NULL or a live `PGconn` for this call.
pub(crate) unsafe fn conninfo_option(conn: *mut ffi::PGconn, keyword: &CStr) -> Option<String> {
    if conn.is_null() {
        return None;
    }
    // SAFETY: the connection is alive (the caller's contract). PQconninfo returns a new array
    // (or NULL) ending with an entry whose keyword is NULL; it is read up to that entry, the
    // wanted value copied out, and the array freed once.
    unsafe {
        let options = ffi::PQconninfo(conn);
        if options.is_null() {
            return None;
        }
        let mut found = None;
        let mut option = options;
        while !(*option).keyword.is_null() {
            if CStr::from_ptr((*option).keyword) == keyword {
                found = lossy_string((*option).val).filter(|v| !v.is_empty());
                break;
            }
            option = option.add(1);
        }
        ffi::PQconninfoFree(options);
        found
    }
}

impl PgConnRef {
    /// libpq's message for the last failure on this connection (may span lines).
    pub(crate) fn error_message(&self) -> String {
        // SAFETY: the PGconn is alive for &self; the message is copied before returning.
        unsafe { lossy_string(ffi::PQerrorMessage(self.as_ptr())) }.unwrap_or_default()
    }

    pub(crate) fn status(&self) -> ffi::ConnStatusType {
        // SAFETY: the PGconn is alive for &self.
        unsafe { ffi::PQstatus(self.as_ptr()) }
    }

    /// A parameter the server reported (`PQparameterStatus`), copied.
    pub(crate) fn parameter_status(&self, name: &CStr) -> Option<String> {
        // SAFETY: the PGconn is alive for &self; the value is copied before returning.
        unsafe { lossy_string(ffi::PQparameterStatus(self.as_ptr(), name.as_ptr())) }
    }
}

impl PgResult {
    /// Takes ownership of a result libpq returned; `None` for NULL.
    pub(crate) fn from_returned(ptr: *mut ffi::PGresult) -> Option<PgResult> {
        // SAFETY: a non-NULL PGresult returned by libpq is owned by the caller, who must PQclear
        // it exactly once: PgResult's Drop does.
        NonNull::new(ptr).map(|p| unsafe { PgResult::from_ptr(p.as_ptr()) })
    }
}

impl PgResultRef {
    pub(crate) fn status(&self) -> ffi::ExecStatusType {
        // SAFETY: the result is alive for &self.
        unsafe { ffi::PQresultStatus(self.as_ptr()) }
    }

    /// One field of an error or notice report (`PG_DIAG_*`).
    pub(crate) fn error_field(&self, code: u8) -> Option<String> {
        // SAFETY: the result is alive for &self; any field code is allowed; the string is
        // copied before the borrow ends.
        unsafe { lossy_string(ffi::PQresultErrorField(self.as_ptr(), c_int::from(code))) }
    }

    /// The whole error message of an error result.
    pub(crate) fn error_message(&self) -> Option<String> {
        // SAFETY: the result is alive for &self; the string is copied.
        let message = unsafe { lossy_string(ffi::PQresultErrorMessage(self.as_ptr())) }?;
        (!message.is_empty()).then_some(message)
    }

    pub(crate) fn ntuples(&self) -> usize {
        // SAFETY: the result is alive for &self.
        let n = unsafe { ffi::PQntuples(self.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    pub(crate) fn nfields(&self) -> usize {
        // SAFETY: the result is alive for &self.
        let n = unsafe { ffi::PQnfields(self.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    pub(crate) fn nparams(&self) -> usize {
        // SAFETY: the result is alive for &self.
        let n = unsafe { ffi::PQnparams(self.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Parameter `i`'s type OID in a describe result; `i < nparams()`.
    pub(crate) fn param_type(&self, i: usize) -> ffi::Oid {
        debug_assert!(i < self.nparams());
        // SAFETY: the result is alive; `i` is in range (libpq returns 0 otherwise anyway).
        unsafe { ffi::PQparamtype(self.as_ptr(), i as c_int) }
    }

    /// Column `i`'s name; `i < nfields()`.
    pub(crate) fn field_name(&self, i: usize) -> String {
        debug_assert!(i < self.nfields());
        // SAFETY: the result is alive, `i` in range; the name is copied.
        unsafe { lossy_string(ffi::PQfname(self.as_ptr(), i as c_int)) }.unwrap_or_default()
    }

    pub(crate) fn field_type(&self, i: usize) -> ffi::Oid {
        // SAFETY: the result is alive; libpq range-checks `i` and returns 0 when out of range.
        unsafe { ffi::PQftype(self.as_ptr(), i as c_int) }
    }

    /// Whether the result's columns are `columns` (number, names, types, origins): a
    /// description made before the rows came still stands for them.
    pub(crate) fn has_columns(&self, columns: &[crate::Column]) -> bool {
        self.nfields() == columns.len()
            && columns
                .iter()
                .enumerate()
                .all(|(i, column)| column.describes(self, i))
    }

    /// Field `i`'s name as libpq holds it, without a copy.
    pub(crate) fn field_name_bytes(&self, i: usize) -> Option<&[u8]> {
        // SAFETY: the result is alive; libpq returns NULL for an index out of range, else a
        // NUL-terminated name that lives as long as the result (the borrow of `self`).
        let name = unsafe { ffi::PQfname(self.as_ptr(), i as c_int) };
        // SAFETY: non-NULL, NUL-terminated, alive for the borrow (above).
        (!name.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes())
    }

    pub(crate) fn field_table(&self, i: usize) -> ffi::Oid {
        // SAFETY: as for field_type.
        unsafe { ffi::PQftable(self.as_ptr(), i as c_int) }
    }

    pub(crate) fn field_table_column(&self, i: usize) -> i16 {
        // SAFETY: as for field_type.
        let n = unsafe { ffi::PQftablecol(self.as_ptr(), i as c_int) };
        i16::try_from(n).unwrap_or(0)
    }

    /// The raw bytes of one value, or `None` for SQL NULL. The slice borrows the result's
    /// memory: it lives exactly as long as `&self`.
    ///
    /// # Safety
    /// `row < ntuples()` and `col < nfields()`. (Out of range, libpq would print a notice
    /// and return ""; callers know their bounds from counts read once, so the hot path makes
    /// no extra calls to check them.)
    #[inline]
    pub(crate) unsafe fn value_unchecked(&self, row: usize, col: usize) -> Option<&[u8]> {
        let (r, c) = (row as c_int, col as c_int);
        // SAFETY: the result is alive for &self and the indices are in range (the caller's
        // contract). PQgetlength is 0 for NULL, so PQgetisnull is only asked about empty
        // values. PQgetvalue points into the PGresult, valid until PQclear, which cannot
        // happen while &self is borrowed; the length is exact (binary values contain NULs).
        unsafe {
            let len = ffi::PQgetlength(self.as_ptr(), r, c);
            if len == 0 && ffi::PQgetisnull(self.as_ptr(), r, c) != 0 {
                return None;
            }
            let ptr = ffi::PQgetvalue(self.as_ptr(), r, c);
            Some(std::slice::from_raw_parts(
                ptr.cast::<u8>(),
                usize::try_from(len).unwrap_or(0),
            ))
        }
    }

    /// Whether the result carries a command tag. libpq 17+'s chunked-rows mode puts the
    /// tag (`SELECT 2`) on the last chunk and leaves the closing zero-row result without one.
    pub(crate) fn has_command_status(&self) -> bool {
        // SAFETY: the result is alive; PQcmdStatus returns a NUL-terminated string it owns.
        unsafe {
            let ptr = ffi::PQcmdStatus(self.as_ptr());
            !ptr.is_null() && *ptr != 0
        }
    }

    /// The command tag (`INSERT 0 5`).
    pub(crate) fn command_status(&self) -> String {
        // SAFETY: the result is alive; PQcmdStatus returns a string owned by the result.
        unsafe { lossy_string(ffi::PQcmdStatus(self.as_ptr())) }.unwrap_or_default()
    }

    /// The command tag's row count (`PQcmdTuples`): 0 when the command reports none.
    pub(crate) fn rows_affected(&self) -> u64 {
        // SAFETY: the result is alive; PQcmdTuples returns a NUL-terminated string owned by
        // the result, read here without copying.
        let digits = unsafe {
            let ptr = ffi::PQcmdTuples(self.as_ptr());
            if ptr.is_null() {
                &[][..]
            } else {
                CStr::from_ptr(ptr).to_bytes()
            }
        };
        std::str::from_utf8(digits)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }
}

/// Memory libpq allocated and hands to the caller, freed with `PQfreemem` exactly once.
pub(crate) struct PqBuffer {
    ptr: NonNull<c_char>,
    len: usize,
}

impl PqBuffer {
    /// # Safety
    /// `ptr` must be NULL or memory from libpq that the caller must release with `PQfreemem`,
    /// with at least `len` readable bytes.
    pub(crate) unsafe fn from_raw(ptr: *mut c_char, len: usize) -> Option<PqBuffer> {
        NonNull::new(ptr).map(|ptr| PqBuffer { ptr, len })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes per from_raw's contract, alive until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl AsRef<[u8]> for PqBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Drop for PqBuffer {
    fn drop(&mut self) {
        // SAFETY: the memory came from libpq and is freed only here.
        unsafe { ffi::PQfreemem(self.ptr.as_ptr().cast()) }
    }
}

// SAFETY: the buffer is plain memory owned by this value alone; PQfreemem may run on any thread.
unsafe impl Send for PqBuffer {}
