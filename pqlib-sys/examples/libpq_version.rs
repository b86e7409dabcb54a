//! Prints the libpq this binary was linked with; the probe tests (`tests/probe.rs`) build it
//! under each probe configuration and inspect both its output and its shared libraries.

use std::ffi::CStr;

fn main() {
    // SAFETY: no preconditions.
    let runtime = unsafe { pqlib_sys::PQlibVersion() };
    // SAFETY: a NULL connection asks about the library's default TLS implementation; the
    // result is NULL or a static NUL-terminated string.
    let tls = unsafe { pqlib_sys::PQsslAttribute(std::ptr::null_mut(), c"library".as_ptr()) };
    let tls = if tls.is_null() {
        "none".into()
    } else {
        // SAFETY: non-NULL, static and NUL-terminated, per libpq's documentation.
        unsafe { CStr::from_ptr(tls) }.to_string_lossy()
    };
    // Connecting pulls libpq's whole connection and TLS code into a static link, so that the
    // shared-library check sees every dependency a real program would have.
    // SAFETY: a valid NUL-terminated conninfo; the PGconn is freed below.
    let conn = unsafe {
        pqlib_sys::PQconnectdb(c"host=/nonexistent-pqlib-probe connect_timeout=1".as_ptr())
    };
    // SAFETY: `conn` came from PQconnectdb (NULL only on out-of-memory, which PQfinish accepts).
    unsafe { pqlib_sys::PQfinish(conn) };
    println!(
        "runtime={runtime} headers={} origin={} tls={tls}",
        pqlib_sys::LIBPQ_HEADER_VERSION_NUMBER,
        pqlib_sys::LIBPQ_ORIGIN
    );
}
