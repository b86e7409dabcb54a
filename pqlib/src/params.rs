//! Parameters on their way to libpq: encoded in binary by `postgres-types` into one buffer,
//! laid out as the arrays libpq's `PQexec*`/`PQsend*` calls take, and the calls themselves,
//! so that the pointer and length rules live in one place.

use std::ffi::{CStr, c_char, c_int};

use bytes::BytesMut;
use pqlib_sys::{self as ffi, PGconn, PGresult};

use crate::error::{Error, Result};
use crate::types::{IsNull, Oid, ToSql, Type};

/// The most parameters one statement can have: the protocol counts them in 16 bits.
pub const MAX_PARAMETERS: usize = 65_535;

/// Parameters encoded in binary, laid out as the arrays `PQexecParams`/`PQexecPrepared` take.
pub(crate) struct EncodedParams {
    /// The encoded bytes `values` points into: kept here, unread, so they outlive the call.
    _storage: BytesMut,
    values: Vec<*const c_char>,
    lengths: Vec<c_int>,
    /// Empty unless there are more parameters than `BINARY_FORMATS` covers.
    long_formats: Vec<c_int>,
    /// The parameter types for `PQexecParams`/`PQsendQueryParams` when the caller gave them
    /// (`typed`); empty otherwise (a prepared statement knows its types).
    oids: Vec<Oid>,
}

/// `paramFormats` for statements with up to this many parameters, all binary, shared instead
/// of allocated per statement; only longer parameter lists get an array of their own.
static BINARY_FORMATS: [c_int; 64] = [1; 64];

// SAFETY: every pointer in `values` points into `_storage`'s heap buffer, which this value
// owns and which does not move when the value moves; libpq reads them only during a call
// made by whichever thread owns the value.
unsafe impl Send for EncodedParams {}

impl EncodedParams {
    pub(crate) fn new(params: &[&(dyn ToSql + Sync)], types: &[Type]) -> Result<EncodedParams> {
        EncodedParams::from_iter(params.iter().map(|p| *p as &dyn ToSql), types)
    }

    /// Encodes each parameter as the type the statement expects, in binary.
    ///
    /// Runs for every statement on every path, so it allocates little: one buffer sized for
    /// typical parameters, and the two arrays libpq needs (none for zero parameters).
    pub(crate) fn from_iter<'p>(
        params: impl ExactSizeIterator<Item = &'p dyn ToSql>,
        types: &[Type],
    ) -> Result<EncodedParams> {
        let count = params.len();
        if count > MAX_PARAMETERS {
            return Err(Error::bad_input(format!(
                "{count} parameters; the protocol allows at most {MAX_PARAMETERS}"
            )));
        }
        let mut buffer = BytesMut::with_capacity(count * 16);
        // Lengths first (-1 for NULL): pointers into `buffer` are taken once it has stopped
        // growing, from the running sum of the lengths.
        let mut lengths: Vec<c_int> = Vec::with_capacity(count);
        for (i, (param, ty)) in params.zip(types).enumerate() {
            let start = buffer.len();
            let is_null = param
                .to_sql_checked(ty, &mut buffer)
                .map_err(|e| Error::conversion(format!("parameter ${} of type {ty}", i + 1), e))?;
            lengths.push(match is_null {
                IsNull::Yes => -1,
                IsNull::No => c_int::try_from(buffer.len() - start).map_err(|_| {
                    Error::bad_input(format!("parameter ${} is larger than 2 GiB", i + 1))
                })?,
            });
        }
        let mut values = Vec::with_capacity(lengths.len());
        let mut offset = 0;
        for length in &mut lengths {
            if *length < 0 {
                values.push(std::ptr::null());
                *length = 0;
            } else {
                values.push(buffer[offset..].as_ptr().cast());
                offset += *length as usize;
            }
        }
        let long_formats = if values.len() > BINARY_FORMATS.len() {
            vec![1; values.len()]
        } else {
            Vec::new()
        };
        Ok(EncodedParams {
            _storage: buffer,
            values,
            lengths,
            long_formats,
            oids: Vec::new(),
        })
    }

    /// Parameters given with their types, for a statement that is not prepared: the types go
    /// to the server with the values.
    pub(crate) fn typed(params: &[(&(dyn ToSql + Sync), Type)]) -> Result<EncodedParams> {
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let mut encoded =
            EncodedParams::from_iter(params.iter().map(|(value, _)| *value as &dyn ToSql), &types)?;
        encoded.oids = types.iter().map(Type::oid).collect();
        Ok(encoded)
    }

    /// Parameters encoded as `types`, which also go to the server with them (the unnamed
    /// statement of [`PreparePolicy::Never`](crate::PreparePolicy::Never): the types come
    /// from describing the text).
    pub(crate) fn with_types(
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<EncodedParams> {
        let mut encoded = EncodedParams::new(params, types)?;
        encoded.set_types(types);
        Ok(encoded)
    }

    /// Sends `types` with the values (for `PQsendQueryParams`).
    pub(crate) fn set_types(&mut self, types: &[Type]) {
        self.oids = types.iter().map(Type::oid).collect();
    }

    /// No parameters at all.
    pub(crate) fn none() -> EncodedParams {
        EncodedParams {
            _storage: BytesMut::new(),
            values: Vec::new(),
            lengths: Vec::new(),
            long_formats: Vec::new(),
            oids: Vec::new(),
        }
    }

    /// `paramTypes`: the caller's types, or NULL to let the server infer them.
    fn types(&self) -> *const Oid {
        if self.oids.is_empty() {
            std::ptr::null()
        } else {
            self.oids.as_ptr()
        }
    }

    /// `PQexecPrepared` of the statement `name` with these parameters, binary results.
    ///
    /// # Safety
    /// `conn` is a live connection that this thread may use, idle and not in pipeline mode.
    pub(crate) unsafe fn exec_prepared(&self, conn: *mut PGconn, name: &CStr) -> *mut PGresult {
        // SAFETY: the caller vouches for `conn`; every array here has `count()` entries and
        // lives through the call (libpq copies the values into its output buffer).
        unsafe {
            ffi::PQexecPrepared(
                conn,
                name.as_ptr(),
                self.count(),
                self.values(),
                self.lengths(),
                self.formats(),
                1,
            )
        }
    }

    /// `PQsendQueryPrepared` of the statement `name` with these parameters, binary results.
    /// Returns whether libpq queued it.
    ///
    /// # Safety
    /// `conn` is a live connection that this thread may use, idle or in pipeline mode.
    pub(crate) unsafe fn send_prepared(&self, conn: *mut PGconn, name: &CStr) -> bool {
        // SAFETY: as in `exec_prepared`.
        unsafe {
            ffi::PQsendQueryPrepared(
                conn,
                name.as_ptr(),
                self.count(),
                self.values(),
                self.lengths(),
                self.formats(),
                1,
            ) == 1
        }
    }

    /// `PQexecParams` of `sql` with these parameters (and their types, if `typed`), binary
    /// results.
    ///
    /// # Safety
    /// As for `exec_prepared`.
    pub(crate) unsafe fn exec_params(&self, conn: *mut PGconn, sql: &CStr) -> *mut PGresult {
        // SAFETY: as in `exec_prepared`; `types()` is NULL or has `count()` entries.
        unsafe {
            ffi::PQexecParams(
                conn,
                sql.as_ptr(),
                self.count(),
                self.types(),
                self.values(),
                self.lengths(),
                self.formats(),
                1,
            )
        }
    }

    /// `PQsendQueryParams` of `sql` with these parameters (and their types, if `typed`),
    /// binary results. Returns whether libpq queued it.
    ///
    /// # Safety
    /// As for `send_prepared`.
    pub(crate) unsafe fn send_params(&self, conn: *mut PGconn, sql: &CStr) -> bool {
        // SAFETY: as in `exec_params`.
        unsafe {
            ffi::PQsendQueryParams(
                conn,
                sql.as_ptr(),
                self.count(),
                self.types(),
                self.values(),
                self.lengths(),
                self.formats(),
                1,
            ) == 1
        }
    }

    fn count(&self) -> c_int {
        // Bounded by MAX_PARAMETERS in `new`.
        self.values.len() as c_int
    }

    fn values(&self) -> *const *const c_char {
        self.values.as_ptr()
    }

    fn lengths(&self) -> *const c_int {
        self.lengths.as_ptr()
    }

    fn formats(&self) -> *const c_int {
        if self.values.len() <= BINARY_FORMATS.len() {
            BINARY_FORMATS.as_ptr()
        } else {
            self.long_formats.as_ptr()
        }
    }
}
