//! The test binary itself shows how libpq was linked: the vendored builds must not load a
//! shared libpq, and `vendored-openssl` must not load a shared OpenSSL either.
#![cfg(target_os = "linux")]

use std::process::Command;

fn shared_libraries() -> String {
    // Connecting references libpq's connection and TLS code, so a static link pulls it all in.
    // SAFETY: a valid NUL-terminated conninfo; the PGconn is freed right away.
    unsafe {
        let conn =
            pqlib_sys::PQconnectdb(c"host=/nonexistent-pqlib-test connect_timeout=1".as_ptr());
        pqlib_sys::PQfinish(conn);
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ldd").arg(&exe).output().expect("ldd runs");
    assert!(out.status.success(), "ldd {}: {out:?}", exe.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shared_libraries_match_the_build_configuration() {
    let libs = shared_libraries();
    let has = |name: &str| libs.lines().any(|line| line.trim_start().starts_with(name));
    if cfg!(feature = "vendored") {
        assert!(
            !has("libpq.so"),
            "vendored build loads a shared libpq:\n{libs}"
        );
    } else if std::env::var_os("PQ_LIB_STATIC").is_none() {
        assert!(
            has("libpq.so"),
            "system build does not load libpq.so:\n{libs}"
        );
    }
    if cfg!(feature = "vendored-openssl") {
        assert!(
            !has("libssl.so"),
            "vendored-openssl build loads a shared libssl:\n{libs}"
        );
        assert!(
            !has("libcrypto.so"),
            "vendored-openssl build loads a shared libcrypto:\n{libs}"
        );
    }
}
