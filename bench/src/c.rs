//! The raw C baseline (`c/baseline.c`, compiled by `build.rs`): its functions, declared here,
//! and a connection that owns a `PGconn` opened by C.
//!
//! These are the baseline's own functions, not libpq's: libpq's are declared only in
//! pqlib-sys.

use std::ffi::{CString, c_char, c_int};
use std::fmt;

use pqlib_sys::{Oid, PGconn, PGresult};

unsafe extern "C" {
    fn bl_connect(conninfo: *const c_char) -> *mut PGconn;
    fn bl_finish(conn: *mut PGconn);
    fn bl_exec(conn: *mut PGconn, sql: *const c_char) -> c_int;
    fn bl_prepare(
        conn: *mut PGconn,
        name: *const c_char,
        sql: *const c_char,
        nparams: c_int,
        types: *const Oid,
    ) -> c_int;
    fn bl_lib_version() -> c_int;
    fn bl_w1(conn: *mut PGconn, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w2(conn: *mut PGconn, aids: *const i32, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w1_params(conn: *mut PGconn, sql: *const c_char, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w2_params(
        conn: *mut PGconn,
        sql: *const c_char,
        aids: *const i32,
        n: c_int,
        sum: *mut i64,
    ) -> c_int;
    fn bl_w3(conn: *mut PGconn, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w3_stream(conn: *mut PGconn, n: c_int, chunk: c_int, sum: *mut i64) -> c_int;
    fn bl_w4_loop(
        conn: *mut PGconn,
        n: c_int,
        texts: *const c_char,
        base_us: i64,
        affected: *mut i64,
    ) -> c_int;
    fn bl_w4_pipeline(
        conn: *mut PGconn,
        n: c_int,
        batch: c_int,
        texts: *const c_char,
        base_us: i64,
        affected: *mut i64,
    ) -> c_int;
    fn bl_w4_copy_text(
        conn: *mut PGconn,
        sql: *const c_char,
        data: *const c_char,
        ends: *const usize,
        n: c_int,
        affected: *mut i64,
    ) -> c_int;
    fn bl_w4_copy_binary(
        conn: *mut PGconn,
        sql: *const c_char,
        n: c_int,
        texts: *const c_char,
        base_us: i64,
        affected: *mut i64,
    ) -> c_int;
    fn bl_w5(conn: *mut PGconn, sql: *const c_char, bytes: *mut i64) -> c_int;
    fn bl_w6_sequential(conn: *mut PGconn, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w6_pipelined(conn: *mut PGconn, n: c_int, sum: *mut i64) -> c_int;
    fn bl_w7_window(
        conn: *mut PGconn,
        first: c_int,
        n: c_int,
        window: c_int,
        sum: *mut i64,
    ) -> c_int;

    /// Sums int4 column `col` of every row: `PQgetvalue` + `ntohl` per value, in C.
    pub fn bl_sum_int4(res: *const PGresult, col: c_int) -> i64;
    /// Sums `PQgetlength` (+ the first byte) of text column `col` of every row, in C.
    pub fn bl_sum_text(res: *const PGresult, col: c_int) -> i64;
    /// Calls `PQntuples` `n` times from C.
    pub fn bl_ntuples_loop(res: *const PGresult, n: i64) -> i64;
}

/// The libpq version the baseline runs against (`PQlibVersion`).
pub fn lib_version() -> i32 {
    // SAFETY: no arguments, no state.
    unsafe { bl_lib_version() }
}

/// A failure inside the C baseline; the details went to stderr.
#[derive(Debug)]
pub struct CError(&'static str);

impl fmt::Display for CError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the C baseline failed in {} (libpq's message is on stderr)",
            self.0
        )
    }
}

impl std::error::Error for CError {}

/// A connection opened and used by the C baseline.
pub struct CConn(*mut PGconn);

// SAFETY: a PGconn may move between threads; `&mut self` on every use keeps it to one at a time.
unsafe impl Send for CConn {}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in benchmark SQL")
}

fn check(what: &'static str, rc: c_int, value: i64) -> Result<i64, CError> {
    if rc == 0 {
        Ok(value)
    } else {
        Err(CError(what))
    }
}

impl CConn {
    /// Connects with a libpq connection string.
    pub fn connect(conninfo: &str) -> Result<CConn, CError> {
        let conninfo = cstr(conninfo);
        // SAFETY: a NUL-terminated string; the result is NULL or a connection we now own.
        let conn = unsafe { bl_connect(conninfo.as_ptr()) };
        if conn.is_null() {
            Err(CError("connect"))
        } else {
            Ok(CConn(conn))
        }
    }

    /// The raw connection, for the micro-benchmarks.
    pub fn as_ptr(&self) -> *mut PGconn {
        self.0
    }

    /// Runs SQL with `PQexec`.
    pub fn exec(&mut self, sql: &str) -> Result<(), CError> {
        let sql = cstr(sql);
        // SAFETY: the connection is alive; the SQL is NUL-terminated.
        check("exec", unsafe { bl_exec(self.0, sql.as_ptr()) }, 0).map(drop)
    }

    /// Prepares `sql` as statement `name`, with parameter types `types`.
    pub fn prepare(&mut self, name: &str, sql: &str, types: &[Oid]) -> Result<(), CError> {
        let (name, sql) = (cstr(name), cstr(sql));
        // SAFETY: the connection is alive; strings are NUL-terminated; `types` has its length.
        let rc = unsafe {
            bl_prepare(
                self.0,
                name.as_ptr(),
                sql.as_ptr(),
                types.len() as c_int,
                types.as_ptr(),
            )
        };
        check("prepare", rc, 0).map(drop)
    }

    pub fn w1(&mut self, n: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: the connection is alive with statement "w1" prepared; `sum` is valid.
        let rc = unsafe { bl_w1(self.0, n as c_int, &mut sum) };
        check("w1", rc, sum)
    }

    pub fn w2(&mut self, aids: &[i32]) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: as above, statement "w2"; `aids` has `len` entries.
        let rc = unsafe { bl_w2(self.0, aids.as_ptr(), aids.len() as c_int, &mut sum) };
        check("w2", rc, sum)
    }

    /// W1 as the unnamed statement: `PQexecParams` of `sql` (one int4 parameter, its type
    /// given) `n` times.
    pub fn w1_params(&mut self, sql: &str, n: usize) -> Result<i64, CError> {
        let sql = cstr(sql);
        let mut sum = 0;
        // SAFETY: the connection is alive; the SQL is NUL-terminated; `sum` is valid.
        let rc = unsafe { bl_w1_params(self.0, sql.as_ptr(), n as c_int, &mut sum) };
        check("w1 params", rc, sum)
    }

    /// W2 as the unnamed statement: `PQexecParams` of `sql` once per aid.
    pub fn w2_params(&mut self, sql: &str, aids: &[i32]) -> Result<i64, CError> {
        let sql = cstr(sql);
        let mut sum = 0;
        // SAFETY: as in `w1_params`; `aids` has `len` entries.
        let rc = unsafe {
            bl_w2_params(
                self.0,
                sql.as_ptr(),
                aids.as_ptr(),
                aids.len() as c_int,
                &mut sum,
            )
        };
        check("w2 params", rc, sum)
    }

    pub fn w3(&mut self, n: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: as above, statement "w3".
        let rc = unsafe { bl_w3(self.0, n as c_int, &mut sum) };
        check("w3", rc, sum)
    }

    pub fn w3_stream(&mut self, n: usize, chunk: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: as above, statement "w3".
        let rc = unsafe { bl_w3_stream(self.0, n as c_int, chunk as c_int, &mut sum) };
        check("w3 stream", rc, sum)
    }

    pub fn w4_loop(&mut self, n: usize, texts: &[u8], base_us: i64) -> Result<i64, CError> {
        assert!(texts.len() >= 20 * n);
        let mut sum = 0;
        // SAFETY: statement "w4" is prepared; `texts` holds 20 bytes for each of the n rows.
        let rc =
            unsafe { bl_w4_loop(self.0, n as c_int, texts.as_ptr().cast(), base_us, &mut sum) };
        check("w4 loop", rc, sum)
    }

    pub fn w4_pipeline(
        &mut self,
        n: usize,
        batch: usize,
        texts: &[u8],
        base_us: i64,
    ) -> Result<i64, CError> {
        assert!(texts.len() >= 20 * n);
        let mut sum = 0;
        // SAFETY: as in `w4_loop`.
        let rc = unsafe {
            bl_w4_pipeline(
                self.0,
                n as c_int,
                batch as c_int,
                texts.as_ptr().cast(),
                base_us,
                &mut sum,
            )
        };
        check("w4 pipeline", rc, sum)
    }

    pub fn w4_copy_text(&mut self, sql: &str, data: &[u8], ends: &[usize]) -> Result<i64, CError> {
        assert!(ends.last().is_none_or(|&e| e <= data.len()));
        let sql = cstr(sql);
        let mut sum = 0;
        // SAFETY: row r of `data` ends at ends[r], within `data`; the SQL is NUL-terminated.
        let rc = unsafe {
            bl_w4_copy_text(
                self.0,
                sql.as_ptr(),
                data.as_ptr().cast(),
                ends.as_ptr(),
                ends.len() as c_int,
                &mut sum,
            )
        };
        check("w4 copy text", rc, sum)
    }

    pub fn w4_copy_binary(
        &mut self,
        sql: &str,
        n: usize,
        texts: &[u8],
        base_us: i64,
    ) -> Result<i64, CError> {
        assert!(texts.len() >= 20 * n);
        let sql = cstr(sql);
        let mut sum = 0;
        // SAFETY: as in `w4_loop`.
        let rc = unsafe {
            bl_w4_copy_binary(
                self.0,
                sql.as_ptr(),
                n as c_int,
                texts.as_ptr().cast(),
                base_us,
                &mut sum,
            )
        };
        check("w4 copy binary", rc, sum)
    }

    pub fn w5(&mut self, sql: &str) -> Result<i64, CError> {
        let sql = cstr(sql);
        let mut sum = 0;
        // SAFETY: the connection is alive; the SQL is NUL-terminated.
        let rc = unsafe { bl_w5(self.0, sql.as_ptr(), &mut sum) };
        check("w5", rc, sum)
    }

    pub fn w6_sequential(&mut self, n: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: statement "w6" is prepared.
        let rc = unsafe { bl_w6_sequential(self.0, n as c_int, &mut sum) };
        check("w6 sequential", rc, sum)
    }

    pub fn w6_pipelined(&mut self, n: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: statement "w6" is prepared.
        let rc = unsafe { bl_w6_pipelined(self.0, n as c_int, &mut sum) };
        check("w6 pipelined", rc, sum)
    }

    pub fn w7_window(&mut self, first: usize, n: usize, window: usize) -> Result<i64, CError> {
        let mut sum = 0;
        // SAFETY: statement "w6" is prepared.
        let rc = unsafe {
            bl_w7_window(
                self.0,
                first as c_int,
                n as c_int,
                window as c_int,
                &mut sum,
            )
        };
        check("w7", rc, sum)
    }
}

impl Drop for CConn {
    fn drop(&mut self) {
        // SAFETY: we own the connection and drop it once.
        unsafe { bl_finish(self.0) }
    }
}
