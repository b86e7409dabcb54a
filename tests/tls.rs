//! TLS through the safe API, against servers this binary starts on 127.0.0.1 with
//! certificates generated now (`common/certs.rs`): every `sslmode`, server verification by
//! root and host name, client-certificate authentication, encrypted client keys
//! (`sslpassword` and the process-wide passphrase hook, tested in a child process),
//! `sslnegotiation`, and what a connection reports about its session.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use certs::{CertFiles, KEY_PASSPHRASE, ROOT_CA_NAME, SERVER_NAME, TestCerts, path_str};
use pqlib::config::SslMode;
use pqlib::error::ErrorKind;
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection};

/// The servers and files every test here shares, started on first use and stopped when the
/// binary exits.
struct Servers {
    /// A server with TLS (certificate for `localhost` and `127.0.0.1`, client CA).
    tls_port: u16,
    /// A server without TLS.
    plain_port: u16,
    certs: CertFiles,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let certs = TestCerts::generate("tls");
        let tls = TempCluster::builder()
            .tls(
                &certs.server_cert,
                &certs.server_key,
                Some(&certs.client_ca),
            )
            .hba("local all all trust")
            // The superuser logs in over TCP only with a client certificate (CN=postgres).
            .hba("hostssl all postgres 127.0.0.1/32 cert")
            .hba("hostnossl all postgres 127.0.0.1/32 reject")
            // `ssl_only` is turned away without TLS, for `sslmode=allow`.
            .hba("hostssl all ssl_only 127.0.0.1/32 trust")
            .hba("hostnossl all ssl_only 127.0.0.1/32 reject")
            .hba("host all all 127.0.0.1/32 trust")
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut setup = Connection::connect(&tls.conninfo()).expect("socket connection");
        setup
            .batch_execute("CREATE ROLE anyone LOGIN; CREATE ROLE ssl_only LOGIN")
            .unwrap();
        let plain = TempCluster::start().unwrap_or_else(|e| panic!("{e}"));
        let servers = Servers {
            tls_port: tls.port(),
            plain_port: plain.port(),
            certs: certs.files.clone(),
        };
        common::drop_at_exit(tls);
        common::drop_at_exit(plain);
        common::drop_at_exit(certs);
        servers
    })
}

/// A conninfo for the TLS server over TCP, plus `extra`.
fn tls_conninfo(extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=postgres connect_timeout=10 {extra}",
        servers().tls_port
    )
}

fn plain_conninfo(extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10 {extra}",
        servers().plain_port
    )
}

fn p(path: &std::path::Path) -> &str {
    path_str(path)
}

fn connect(conninfo: &str) -> Connection {
    Connection::connect(conninfo).unwrap_or_else(|e| panic!("{conninfo}: {e}"))
}

fn connect_err(conninfo: &str) -> pqlib::Error {
    match Connection::connect(conninfo) {
        Ok(conn) => panic!("{conninfo}: connected, expected an error: {conn:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
            e
        }
    }
}

/// `(ssl, client_dn)` from the server's `pg_stat_ssl` for this session.
fn server_side_ssl(conn: &mut Connection) -> (bool, Option<String>) {
    let row = conn
        .query_one(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn assert_contains(error: &pqlib::Error, needle: &str) {
    let text = error.to_string();
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

#[test]
fn verify_full_with_the_right_root_succeeds_by_ip_and_by_name() {
    let c = &servers().certs;
    // The certificate's IP SAN matches host=127.0.0.1; its DNS SAN matches host=localhost
    // (hostaddr skips the lookup, which might give ::1 first).
    for target in ["", "host=localhost hostaddr=127.0.0.1"] {
        let conninfo = tls_conninfo(&format!(
            "user=anyone sslmode=verify-full sslrootcert={} {target}",
            p(&c.root_ca)
        ));
        let mut conn = connect(&conninfo);
        assert!(conn.ssl_in_use(), "{conninfo}");
        assert_eq!(server_side_ssl(&mut conn), (true, None), "{conninfo}");
    }
    // The same through the Config builder.
    let mut config = Config::new();
    config
        .host("localhost")
        .hostaddr("127.0.0.1".parse().unwrap())
        .port(servers().tls_port)
        .user("anyone")
        .dbname("postgres")
        .ssl_mode(SslMode::VerifyFull)
        .sslrootcert(p(&c.root_ca));
    let conn = config.connect().unwrap();
    assert!(conn.ssl_in_use());
}

#[test]
fn verify_full_with_a_wrong_root_fails() {
    let c = &servers().certs;
    for mode in ["verify-full", "verify-ca"] {
        let e = connect_err(&tls_conninfo(&format!(
            "user=anyone sslmode={mode} sslrootcert={}",
            p(&c.wrong_root_ca)
        )));
        assert_contains(&e, "certificate verify failed");
    }
}

#[test]
fn verify_full_with_a_wrong_host_name_fails_but_verify_ca_does_not_check_it() {
    let c = &servers().certs;
    let target = "host=db.wrong.invalid hostaddr=127.0.0.1";
    let e = connect_err(&tls_conninfo(&format!(
        "user=anyone sslmode=verify-full sslrootcert={} {target}",
        p(&c.root_ca)
    )));
    assert_contains(&e, "does not match host name \"db.wrong.invalid\"");
    assert_contains(&e, SERVER_NAME);
    // verify-ca checks the chain only.
    let conn = connect(&tls_conninfo(&format!(
        "user=anyone sslmode=verify-ca sslrootcert={} {target}",
        p(&c.root_ca)
    )));
    assert!(conn.ssl_in_use());
}

#[test]
fn verify_modes_need_a_root_certificate() {
    let missing = servers().certs.dir.join("no-such-root.crt");
    for mode in ["verify-full", "verify-ca"] {
        let e = connect_err(&tls_conninfo(&format!(
            "user=anyone sslmode={mode} sslrootcert={}",
            p(&missing)
        )));
        assert_contains(&e, "does not exist");
        assert_contains(&e, p(&missing));
    }
}

#[test]
fn require_encrypts_and_verifies_only_when_a_root_file_exists() {
    let c = &servers().certs;
    // No root file: encrypted, nothing verified (libpq's documented `require`).
    let missing = c.dir.join("no-such-root.crt");
    let mut conn = connect(&tls_conninfo(&format!(
        "user=anyone sslmode=require sslrootcert={}",
        p(&missing)
    )));
    assert!(conn.ssl_in_use());
    assert!(server_side_ssl(&mut conn).0);
    // A root file that exists makes `require` verify the chain like `verify-ca`.
    let e = connect_err(&tls_conninfo(&format!(
        "user=anyone sslmode=require sslrootcert={}",
        p(&c.wrong_root_ca)
    )));
    assert_contains(&e, "certificate verify failed");
    // ... but not the host name.
    let conn = connect(&tls_conninfo(&format!(
        "user=anyone sslmode=require sslrootcert={} host=db.wrong.invalid hostaddr=127.0.0.1",
        p(&c.root_ca)
    )));
    assert!(conn.ssl_in_use());
}

#[test]
fn disable_never_encrypts() {
    let mut conn = connect(&tls_conninfo("user=anyone sslmode=disable"));
    assert!(!conn.ssl_in_use());
    assert_eq!(server_side_ssl(&mut conn), (false, None));
    assert_eq!(conn.ssl_attribute("protocol"), None);
}

#[test]
fn prefer_and_the_default_encrypt_when_the_server_offers_tls() {
    let missing = servers().certs.dir.join("no-such-root.crt");
    for mode in ["sslmode=prefer", ""] {
        let conninfo = tls_conninfo(&format!("user=anyone sslrootcert={} {mode}", p(&missing)));
        let mut conn = connect(&conninfo);
        assert!(conn.ssl_in_use(), "{conninfo}");
        assert!(server_side_ssl(&mut conn).0, "{conninfo}");
    }
}

#[test]
fn prefer_falls_back_to_plain_text_with_a_server_without_tls() {
    for mode in ["sslmode=prefer", "sslmode=allow", "sslmode=disable", ""] {
        let conn = connect(&plain_conninfo(mode));
        assert!(!conn.ssl_in_use(), "{mode}");
    }
}

#[test]
fn require_and_verify_fail_with_a_server_without_tls() {
    let root = p(&servers().certs.root_ca).to_owned();
    for mode in ["require", "verify-ca", "verify-full"] {
        let e = connect_err(&plain_conninfo(&format!(
            "sslmode={mode} sslrootcert={root}"
        )));
        assert_contains(&e, "server does not support SSL, but SSL was required");
    }
}

#[test]
fn allow_tries_plain_text_first_then_tls() {
    // A user the server accepts without TLS gets a plain connection...
    let conn = connect(&tls_conninfo("user=anyone sslmode=allow"));
    assert!(!conn.ssl_in_use());
    // ... one it turns away without TLS gets a second attempt with it.
    let mut conn = connect(&tls_conninfo("user=ssl_only sslmode=allow"));
    assert!(conn.ssl_in_use());
    assert!(server_side_ssl(&mut conn).0);
    // `disable` has no second attempt.
    let e = connect_err(&tls_conninfo("user=ssl_only sslmode=disable"));
    assert_contains(&e, "no encryption");
}

#[test]
fn client_certificate_authentication() {
    let c = &servers().certs;
    let verified = format!(
        "user=postgres sslmode=verify-full sslrootcert={}",
        p(&c.root_ca)
    );
    let mut conn = connect(&tls_conninfo(&format!(
        "{verified} sslcert={} sslkey={}",
        p(&c.client_cert),
        p(&c.client_key)
    )));
    let (ssl, client_dn) = server_side_ssl(&mut conn);
    assert!(ssl);
    assert_eq!(client_dn.as_deref(), Some("/O=pqlib tests/CN=postgres"));
    assert!(!conn.used_password());

    // Without a certificate (none in ~/.postgresql either: point at missing files).
    let missing = c.dir.join("missing");
    let e = connect_err(&tls_conninfo(&format!(
        "{verified} sslcert={0}.crt sslkey={0}.key",
        p(&missing)
    )));
    assert_contains(&e, "connection requires a valid client certificate");

    // A certificate for another user name.
    let e = connect_err(&tls_conninfo(&format!(
        "{verified} sslcert={} sslkey={}",
        p(&c.other_client_cert),
        p(&c.other_client_key)
    )));
    assert_contains(
        &e,
        "certificate authentication failed for user \"postgres\"",
    );

    // A certificate from a CA the server does not trust: the handshake fails.
    let e = connect_err(&tls_conninfo(&format!(
        "{verified} sslcert={} sslkey={}",
        p(&c.rogue_client_cert),
        p(&c.rogue_client_key)
    )));
    let text = e.to_string();
    assert!(
        text.contains("unknown ca") || text.contains("certificate"),
        "{text}"
    );
}

#[test]
fn encrypted_client_key_with_sslpassword() {
    let c = &servers().certs;
    let base = format!(
        "user=postgres sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        p(&c.root_ca),
        p(&c.encrypted_client_cert),
        p(&c.encrypted_client_key)
    );
    let mut config: Config = tls_conninfo(&base).parse().unwrap();
    config.sslpassword(KEY_PASSPHRASE);
    let mut conn = config.connect().unwrap();
    assert_eq!(
        server_side_ssl(&mut conn).1.as_deref(),
        Some("/O=pqlib tests/CN=postgres")
    );

    // A wrong passphrase: the key cannot be loaded, and the error does not repeat it.
    let wrong = "not-the-passphrase-91c2";
    config.sslpassword(wrong);
    let e = config.connect().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert_contains(&e, "could not load private key file");
    let rendered = format!("{e} {e:?}");
    assert!(!rendered.contains(wrong), "{rendered}");
}

#[test]
fn ssl_attributes_describe_the_session() {
    let c = &servers().certs;
    let conn = connect(&tls_conninfo(&format!(
        "user=anyone sslmode=verify-full sslrootcert={}",
        p(&c.root_ca)
    )));
    let names = conn.ssl_attribute_names();
    for name in ["library", "protocol", "key_bits", "cipher", "compression"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert_eq!(conn.ssl_attribute("library").as_deref(), Some("OpenSSL"));
    let protocol = conn.ssl_attribute("protocol").unwrap();
    assert!(protocol.starts_with("TLSv1."), "{protocol}");
    assert!(!conn.ssl_attribute("cipher").unwrap().is_empty());
    let bits: u32 = conn.ssl_attribute("key_bits").unwrap().parse().unwrap();
    assert!(bits >= 128, "{bits}");
    assert_eq!(conn.ssl_attribute("compression").as_deref(), Some("off"));
    assert_eq!(conn.ssl_attribute("no_such_attribute"), None);
    assert_eq!(conn.ssl_attribute("nul\0byte"), None);
    for name in &names {
        // Every listed name has a value on a TLS connection (alpn may be empty).
        if name != "alpn" {
            assert!(conn.ssl_attribute(name).is_some(), "{name}");
        }
    }

    // Without TLS every attribute reads as None.
    let plain = connect(&plain_conninfo("sslmode=disable"));
    for name in ["library", "protocol", "key_bits", "cipher", "compression"] {
        assert_eq!(plain.ssl_attribute(name), None, "{name}");
    }
    if pqlib::version().major >= 16 {
        assert_eq!(plain.ssl_attribute_names(), Vec::<String>::new());
    }
    if pqlib::version().major >= 15 {
        // libpq 15 and later name their TLS library without a connection.
        assert_eq!(pqlib::tls::library().as_deref(), Some("OpenSSL"));
    }
}

#[test]
fn openssl_session_gives_protocol_cipher_and_peer_certificate() {
    use openssl::nid::Nid;

    let c = &servers().certs;
    let conn = connect(&tls_conninfo(&format!(
        "user=anyone sslmode=verify-full sslrootcert={}",
        p(&c.root_ca)
    )));
    let ssl = conn
        .ssl()
        .expect("libpq and the openssl crate use one OpenSSL")
        .expect("a TLS session");
    assert_eq!(
        Some(ssl.version_str()),
        conn.ssl_attribute("protocol").as_deref()
    );
    let cipher = ssl.current_cipher().expect("a negotiated cipher");
    assert_eq!(Some(cipher.name()), conn.ssl_attribute("cipher").as_deref());
    let peer = ssl.peer_certificate().expect("the server's certificate");
    let cn = |name: &openssl::x509::X509NameRef| {
        name.entries_by_nid(Nid::COMMONNAME)
            .next()
            .map(|e| String::from_utf8(e.data().as_slice().to_vec()).unwrap())
    };
    assert_eq!(cn(peer.subject_name()).as_deref(), Some(SERVER_NAME));
    assert_eq!(cn(peer.issuer_name()).as_deref(), Some(ROOT_CA_NAME));
    assert_eq!(
        ssl.verify_result(),
        openssl::x509::X509VerifyResult::OK,
        "libpq verified the chain"
    );

    let plain = connect(&plain_conninfo("sslmode=disable"));
    assert!(plain.ssl().unwrap().is_none());
}

/// libpq 17 added `sslnegotiation=direct`: the TLS handshake starts at once, without asking
/// the server first (PostgreSQL servers before 17 do not understand it). With an older libpq
/// the keyword is an `Unsupported` error naming the version needed. (The root package has no
/// `libpq_N` cfgs, so this branches on the libpq in use.)
#[test]
fn sslnegotiation_direct() {
    use pqlib::config::SslNegotiation;

    let c = &servers().certs;
    let mut config: Config = tls_conninfo(&format!(
        "user=anyone sslmode=verify-full sslrootcert={}",
        p(&c.root_ca)
    ))
    .parse()
    .unwrap();
    config.ssl_negotiation(SslNegotiation::Direct);
    if pqlib::version().major < 17 {
        let e = config.connect().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert_contains(&e, "needs libpq 17");
        return;
    }
    let server_version = connect(&plain_conninfo("")).server_version();
    match config.connect() {
        Ok(conn) => {
            assert!(
                server_version >= 170000,
                "a server {server_version} accepted it"
            );
            assert!(conn.ssl_in_use());
            assert_eq!(conn.ssl_attribute("alpn").as_deref(), Some("postgresql"));
        }
        Err(e) => {
            // The server reads the TLS ClientHello as a startup packet and hangs up.
            assert!(server_version < 170000, "server {server_version}: {e}");
            assert_eq!(e.kind(), ErrorKind::Connect);
            eprintln!("sslnegotiation=direct against server {server_version}: {e}");
        }
    }
    // The traditional negotiation still works with the same settings.
    config.ssl_negotiation(SslNegotiation::Postgres);
    assert!(config.connect().unwrap().ssl_in_use());

    // Direct TLS cannot fall back to plain text, so libpq refuses the weak modes.
    config
        .ssl_mode(SslMode::Prefer)
        .ssl_negotiation(SslNegotiation::Direct);
    let e = config.connect().unwrap_err();
    assert_contains(&e, "sslnegotiation");
}

// ---------------------------------------------------------------------------------------
// The passphrase hook is process-wide, so it is tested in a child process of its own.

const HOOK_CHILD: &str = "PQLIB_TLS_HOOK_CHILD";
const HOOK_PORT: &str = "PQLIB_TLS_HOOK_PORT";
const HOOK_CERTS: &str = "PQLIB_TLS_HOOK_CERTS";

#[test]
fn passphrase_hook_in_a_child_process() {
    let s = servers();
    let (ok, output) = common::run_child_test(
        "passphrase_hook_child",
        HOOK_CHILD,
        &[
            (HOOK_PORT, s.tls_port.to_string()),
            (HOOK_CERTS, p(&s.certs.dir).to_owned()),
        ],
    );
    assert!(ok, "child failed:\n{output}");
    // The panicking hook was reported through the `log` crate, and no passphrase was ever
    // printed.
    assert!(
        output.contains("the SSL key passphrase hook panicked (hook panics on purpose)"),
        "{output}"
    );
    assert!(!output.contains(KEY_PASSPHRASE), "{output}");
}

/// Prints log records to stderr, for the parent to read.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "LOG {} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Not a test by itself: the body of the child process of
/// `passphrase_hook_in_a_child_process`.
#[test]
fn passphrase_hook_child() {
    if std::env::var_os(HOOK_CHILD).is_none() {
        return;
    }
    log::set_logger(&StderrLogger).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let port: u16 = std::env::var(HOOK_PORT).unwrap().parse().unwrap();
    let c = CertFiles::in_dir(PathBuf::from(std::env::var(HOOK_CERTS).unwrap()));
    let key_path = p(&c.encrypted_client_key).to_owned();
    let base = format!(
        "host=127.0.0.1 port={port} dbname=postgres user=postgres connect_timeout=10 \
         sslmode=verify-full sslrootcert={} sslcert={} sslkey={key_path}",
        p(&c.root_ca),
        p(&c.encrypted_client_cert),
    );
    let with_sslpassword = {
        let mut config: Config = base.parse().unwrap();
        config.sslpassword(KEY_PASSPHRASE);
        config
    };

    // 1. The hook gives the passphrase: no sslpassword needed. It is asked on the
    //    connecting thread, with the connection's details.
    assert!(!pqlib::tls::has_ssl_key_passphrase_hook());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    pqlib::tls::set_ssl_key_passphrase_hook(move |request| {
        record.lock().unwrap().push((
            request.host(),
            request.port(),
            request.user(),
            request.dbname(),
            request.sslkey(),
            request.max_len(),
            format!("{request:?}"),
        ));
        Some(KEY_PASSPHRASE.to_owned())
    });
    assert!(pqlib::tls::has_ssl_key_passphrase_hook());
    let mut conn = connect(&base);
    let dn: Option<String> = conn
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dn.as_deref(), Some("/O=pqlib tests/CN=postgres"));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "asked once per key load");
        let (host, port_seen, user, dbname, sslkey, max_len, debug) = &seen[0];
        assert_eq!(host.as_deref(), Some("127.0.0.1"));
        assert_eq!(port_seen.as_deref(), Some(port.to_string().as_str()));
        assert_eq!(user.as_deref(), Some("postgres"));
        assert_eq!(dbname.as_deref(), Some("postgres"));
        assert_eq!(sslkey.as_deref(), Some(key_path.as_str()));
        assert!(*max_len >= 64, "{max_len}");
        assert!(debug.contains("SslKeyPassphraseRequest"), "{debug}");
        assert!(!debug.contains(KEY_PASSPHRASE), "{debug}");
    }

    // 2. The hook wins over sslpassword (libpq's rule for an installed hook).
    pqlib::tls::set_ssl_key_passphrase_hook(|_| Some("wrong passphrase".to_owned()));
    let e = with_sslpassword.connect().unwrap_err();
    assert_contains(&e, "could not load private key file");

    // 3. No passphrase from the hook: the key cannot be loaded.
    pqlib::tls::set_ssl_key_passphrase_hook(|_| None);
    let e = connect_err(&base);
    assert_contains(&e, "could not load private key file");

    // 4. A panicking hook: caught, logged, the connection fails, the process goes on.
    pqlib::tls::set_ssl_key_passphrase_hook(|_| panic!("hook panics on purpose"));
    let e = connect_err(&base);
    assert_contains(&e, "could not load private key file");
    eprintln!("after a panicking hook: {e}");
    // 4b. A payload whose Drop panics in turn: disposed of inside the guard, no abort.
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                std::panic::panic_any(Bomb);
            }
        }
    }
    pqlib::tls::set_ssl_key_passphrase_hook(|_| std::panic::panic_any(Bomb));
    assert_contains(&connect_err(&base), "could not load private key file");

    // 5. Too long for OpenSSL's buffer, or with a NUL byte: refused, never truncated or
    //    written past the buffer.
    pqlib::tls::set_ssl_key_passphrase_hook(|request| {
        Some(format!("{KEY_PASSPHRASE}{}", "x".repeat(request.max_len())))
    });
    assert_contains(&connect_err(&base), "could not load private key file");
    pqlib::tls::set_ssl_key_passphrase_hook(|_| Some(format!("{KEY_PASSPHRASE}\0tail")));
    assert_contains(&connect_err(&base), "could not load private key file");
    // Exactly max_len bytes fit (and are wrong): the connection fails only on decryption.
    pqlib::tls::set_ssl_key_passphrase_hook(|request| Some("y".repeat(request.max_len())));
    assert_contains(&connect_err(&base), "could not load private key file");

    // 6. After a panic, a good hook works again.
    pqlib::tls::set_ssl_key_passphrase_hook(|_| Some(KEY_PASSPHRASE.to_owned()));
    connect(&base);

    // 7. Replacing the hook from one thread while others connect: every connection gets a
    //    passphrase from some installed hook, none from a half-replaced one.
    let calls = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        let base = &base;
        let connectors: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(move || {
                    for _ in 0..4 {
                        connect(base);
                    }
                })
            })
            .collect();
        let swapper = {
            let calls = calls.clone();
            scope.spawn(move || {
                for _ in 0..200 {
                    let calls = calls.clone();
                    pqlib::tls::set_ssl_key_passphrase_hook(move |_| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        Some(KEY_PASSPHRASE.to_owned())
                    });
                    std::thread::yield_now();
                }
            })
        };
        for connector in connectors {
            connector.join().unwrap();
        }
        swapper.join().unwrap();
    });
    assert!(calls.load(Ordering::Relaxed) <= 12);

    // 8. Cleared: libpq's default again, i.e. the connection's sslpassword; without one the
    //    key is not decrypted, and nothing prompts on a terminal.
    pqlib::tls::clear_ssl_key_passphrase_hook();
    assert!(!pqlib::tls::has_ssl_key_passphrase_hook());
    with_sslpassword.connect().unwrap();
    assert_contains(&connect_err(&base), "could not load private key file");

    println!("CHILD OK");
}
