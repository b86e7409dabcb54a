//! libpq's passphrase-hook global (`PQsslKeyPassHook`) is written once, before pqlib's first
//! connection attempt, and never while another thread's TLS connect reads it (issue 13,
//! finding 5).
//!
//! A test binary of its own: what is checked is the state of a process-wide global before and
//! after the *first* connection attempt, so nothing else may have connected in the process.
//! `scripts/memcheck.sh helgrind` runs `setting_the_first_hook_while_tls_connects_run` under
//! helgrind, which reports the unsynchronised write and read if the order is ever lost.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use certs::TestCerts;
use pqlib::Connection;
use pqlib::tempdb::TempCluster;

const CHILD: &str = "PQLIB_TLS_HOOK_INSTALL_CHILD";

/// Whether libpq's passphrase hook is set (pqlib's trampoline is the only thing that sets it
/// in this binary).
fn libpq_hook_is_set() -> bool {
    // SAFETY: reads libpq's global; in the children below no other thread runs libpq code.
    unsafe { pqlib_sys::PQgetSSLKeyPassHook_OpenSSL() }.is_some()
}

/// A connection attempt that fails fast without a server: nothing listens on port 1.
const NOBODY: &str = "host=127.0.0.1 port=1 user=postgres connect_timeout=2 sslmode=prefer";

/// Each public way to start connecting, alone in a fresh process, installs the trampoline
/// before libpq runs (so also when the attempt fails). Before the fix, only
/// `set_ssl_key_passphrase_hook` installed it, so it was unset here.
#[test]
fn the_first_connection_attempt_installs_the_trampoline() {
    for path in ["blocking", "async"] {
        let (ok, output) = common::run_child_test(
            "install_child",
            CHILD,
            &[("PQLIB_INSTALL_PATH", path.into())],
        );
        assert!(ok, "{path}: child failed:\n{output}");
    }
}

/// Not a test by itself: the body of the children of
/// `the_first_connection_attempt_installs_the_trampoline`.
#[test]
fn install_child() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    assert!(!libpq_hook_is_set(), "nothing has connected yet");
    match std::env::var("PQLIB_INSTALL_PATH").unwrap().as_str() {
        "blocking" => {
            Connection::connect(NOBODY).unwrap_err();
        }
        "async" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(pqlib::tokio::connect(NOBODY))
                .map(drop)
                .unwrap_err();
        }
        other => panic!("unknown path {other}"),
    }
    assert!(libpq_hook_is_set(), "the attempt installed the trampoline");
    // Setting a hook afterwards changes only pqlib's own slot, not libpq's global.
    // SAFETY: as above.
    let before = unsafe { pqlib_sys::PQgetSSLKeyPassHook_OpenSSL() }.map(|f| f as usize);
    pqlib::tls::set_ssl_key_passphrase_hook(|_| None);
    // SAFETY: as above.
    let after = unsafe { pqlib_sys::PQgetSSLKeyPassHook_OpenSSL() }.map(|f| f as usize);
    assert_eq!(before, after);
    pqlib::tls::clear_ssl_key_passphrase_hook();
    println!("CHILD OK");
}

/// The scenario of the finding: one thread makes the process's first
/// `set_ssl_key_passphrase_hook` call while others open TLS connections. Every connection
/// must work; under helgrind (`scripts/memcheck.sh helgrind`) there must be no race on
/// libpq's hook global between `PQsetSSLKeyPassHook_OpenSSL` and `PQconnectPoll`, which
/// there was before the fix.
#[test]
fn setting_the_first_hook_while_tls_connects_run() {
    let certs = TestCerts::generate("tls_hook");
    let server = TempCluster::builder()
        .tls(&certs.server_cert, &certs.server_key, None)
        .hba("host all all 127.0.0.1/32 trust")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require gssencmode=disable \
         connect_timeout=30",
        server.port()
    );
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|scope| {
        let connectors: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    for _ in 0..2 {
                        let conn = Connection::connect(&conninfo)
                            .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
                        assert!(conn.ssl_in_use());
                    }
                })
            })
            .collect();
        barrier.wait();
        pqlib::tls::set_ssl_key_passphrase_hook(|_| None);
        pqlib::tls::clear_ssl_key_passphrase_hook();
        for connector in connectors {
            connector.join().unwrap();
        }
    });
    drop(server);
    drop(certs);
}
