//! Parameters on their way to libpq: encoded in binary by `postgres-types` into one buffer,
//! laid out as the arrays libpq's `PQexec*`/`PQsend*` calls take, and the calls themselves,
//! so that the pointer and length rules live in one place.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int};

use bytes::BytesMut;
use pqlib_sys::{self as ffi, PGconn, PGresult};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::types::{IsNull, Oid, ToSql, Type};

/// The most parameters one statement can have: the protocol counts them in 16 bits.
pub const MAX_PARAMETERS: usize = 65_535;

/// Parameters encoded in binary, with what libpq's parameter arrays are built from.
///
/// Small parameter lists (the usual case) live inline, without an allocation of their own:
/// a batch of 1,000 statements allocated three buffers per statement here, ~1,800
/// instructions per statement of `malloc` and `free` on a heap holding all of them (W6p,
/// callgrind), more than the rest of the client's work for it. The pointer array libpq reads
/// is built on the stack for each call, from the lengths.
pub(crate) struct EncodedParams {
    /// The parameters' encoded bytes, one after another.
    storage: SmallVec<[u8; INLINE_BYTES]>,
    /// Each parameter's length in `storage`; -1 for NULL.
    lengths: SmallVec<[c_int; INLINE_PARAMS]>,
    /// The parameter types for `PQexecParams`/`PQsendQueryParams` when the caller gave them
    /// (`typed`); empty otherwise (a prepared statement knows its types).
    oids: Vec<Oid>,
}

/// Encoded bytes kept inline: eight `int8`s, or a few short strings.
const INLINE_BYTES: usize = 64;
/// Parameters whose lengths (and, per call, pointers) need no allocation.
const INLINE_PARAMS: usize = 8;
/// The scratch buffer's capacity is kept up to this much; a larger one (a big parameter) is
/// given back rather than held by the thread.
const SCRATCH_KEPT: usize = 64 * 1024;

/// `paramFormats` for statements with up to this many parameters, all binary, shared instead
/// of allocated per statement; only longer parameter lists get an array of their own.
static BINARY_FORMATS: [c_int; 64] = [1; 64];

thread_local! {
    /// Where `ToSql` encodes (it writes to a `BytesMut`) before the bytes are copied into the
    /// parameters' own storage: its capacity is kept from one statement to the next.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// What a libpq call takes: `nParams`, `paramValues`, `paramLengths`, `paramFormats`.
struct Arrays {
    count: c_int,
    values: *const *const c_char,
    lengths: *const c_int,
    formats: *const c_int,
}

impl EncodedParams {
    pub(crate) fn new(params: &[&(dyn ToSql + Sync)], types: &[Type]) -> Result<EncodedParams> {
        EncodedParams::from_iter(params.iter().map(|p| *p as &dyn ToSql), types)
    }

    /// Encodes each parameter as the type the statement expects, in binary.
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
        let mut lengths = SmallVec::with_capacity(count);
        let encode = |buffer: &mut BytesMut| -> Result<SmallVec<[u8; INLINE_BYTES]>> {
            buffer.clear();
            for (i, (param, ty)) in params.zip(types).enumerate() {
                let start = buffer.len();
                let is_null = param.to_sql_checked(ty, buffer).map_err(|e| {
                    Error::conversion(format!("parameter ${} of type {ty}", i + 1), e)
                })?;
                lengths.push(match is_null {
                    IsNull::Yes => {
                        // A NULL writes nothing by contract; drop anything written anyway.
                        buffer.truncate(start);
                        -1
                    }
                    IsNull::No => c_int::try_from(buffer.len() - start).map_err(|_| {
                        Error::bad_input(format!("parameter ${} is larger than 2 GiB", i + 1))
                    })?,
                });
            }
            Ok(SmallVec::from_slice(buffer))
        };
        // A `ToSql` that encodes parameters itself finds the scratch buffer taken: it gets
        // one of its own.
        let storage = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buffer) => {
                let encoded = encode(&mut buffer);
                if buffer.capacity() > SCRATCH_KEPT {
                    *buffer = BytesMut::new();
                }
                encoded
            }
            Err(_) => encode(&mut BytesMut::new()),
        })?;
        Ok(EncodedParams {
            storage,
            lengths,
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
            storage: SmallVec::new(),
            lengths: SmallVec::new(),
            oids: Vec::new(),
        }
    }

    /// Calls `call` with libpq's parameter arrays, built on the stack for up to
    /// `INLINE_PARAMS` parameters. They point into `self`, borrowed for the call.
    fn with_arrays<R>(&self, call: impl FnOnce(Arrays) -> R) -> R {
        let mut values: SmallVec<[*const c_char; INLINE_PARAMS]> =
            SmallVec::with_capacity(self.lengths.len());
        let mut offset = 0;
        for &length in &self.lengths {
            if length < 0 {
                values.push(std::ptr::null());
            } else {
                values.push(self.storage[offset..].as_ptr().cast());
                offset += length as usize;
            }
        }
        let long_formats;
        let formats = if values.len() <= BINARY_FORMATS.len() {
            BINARY_FORMATS.as_ptr()
        } else {
            long_formats = vec![1; values.len()];
            long_formats.as_ptr()
        };
        call(Arrays {
            // Bounded by MAX_PARAMETERS in `from_iter`.
            count: values.len() as c_int,
            values: values.as_ptr(),
            // A NULL's -1 goes to libpq as it is: libpq reads a length only for a non-NULL
            // binary value (documented for `paramLengths`).
            lengths: self.lengths.as_ptr(),
            formats,
        })
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
        self.with_arrays(|a| {
            // SAFETY: the caller vouches for `conn`; every array has `count` entries and
            // lives through the call (libpq copies the values into its output buffer).
            unsafe {
                ffi::PQexecPrepared(
                    conn,
                    name.as_ptr(),
                    a.count,
                    a.values,
                    a.lengths,
                    a.formats,
                    1,
                )
            }
        })
    }

    /// `PQsendQueryPrepared` of the statement `name` with these parameters, binary results.
    /// Returns whether libpq queued it.
    ///
    /// # Safety
    /// `conn` is a live connection that this thread may use, idle or in pipeline mode.
    pub(crate) unsafe fn send_prepared(&self, conn: *mut PGconn, name: &CStr) -> bool {
        self.with_arrays(|a| {
            // SAFETY: as in `exec_prepared`.
            unsafe {
                ffi::PQsendQueryPrepared(
                    conn,
                    name.as_ptr(),
                    a.count,
                    a.values,
                    a.lengths,
                    a.formats,
                    1,
                ) == 1
            }
        })
    }

    /// `PQexecParams` of `sql` with these parameters (and their types, if `typed`), binary
    /// results.
    ///
    /// # Safety
    /// As for `exec_prepared`.
    pub(crate) unsafe fn exec_params(&self, conn: *mut PGconn, sql: &CStr) -> *mut PGresult {
        self.with_arrays(|a| {
            // SAFETY: as in `exec_prepared`; `types()` is NULL or has `count` entries.
            unsafe {
                ffi::PQexecParams(
                    conn,
                    sql.as_ptr(),
                    a.count,
                    self.types(),
                    a.values,
                    a.lengths,
                    a.formats,
                    1,
                )
            }
        })
    }

    /// `PQsendQueryParams` of `sql` with these parameters (and their types, if `typed`),
    /// binary results. Returns whether libpq queued it.
    ///
    /// # Safety
    /// As for `send_prepared`.
    pub(crate) unsafe fn send_params(&self, conn: *mut PGconn, sql: &CStr) -> bool {
        self.with_arrays(|a| {
            // SAFETY: as in `exec_params`.
            unsafe {
                ffi::PQsendQueryParams(
                    conn,
                    sql.as_ptr(),
                    a.count,
                    self.types(),
                    a.values,
                    a.lengths,
                    a.formats,
                    1,
                ) == 1
            }
        })
    }
}
