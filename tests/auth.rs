//! Password authentication through the safe API, against a server this binary starts on
//! 127.0.0.1 with `password_encryption = scram-sha-256`, TLS (for channel binding) and one
//! `pg_hba.conf` line per method: SCRAM-SHA-256, `channel_binding`, `require_auth`, wrong
//! and missing passwords, `encrypt_password` and `change_password`.
//!
//! Roles get their passwords as client-side verifiers (`encrypt_password`), and the server
//! logs every statement: a test checks that no password ever reached the server in clear.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use certs::{TestCerts, path_str};
use pqlib::config::{ChannelBinding, SslMode};
use pqlib::error::{ErrorKind, SqlState};
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection};

const ALICE_PASSWORD: &str = "alice-pw-3f9c'\\ü";
const MD5_PASSWORD: &str = "md5-pw-81aa";
const CLEARTEXT_PASSWORD: &str = "cleartext-pw-52de";

struct Server {
    port: u16,
    socket_conninfo: String,
    log_file: PathBuf,
    /// A password file that does not exist, so that `~/.pgpass` never helps a test.
    no_passfile: String,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = TestCerts::generate("auth");
        let cluster = TempCluster::builder()
            .config("password_encryption = 'scram-sha-256'")
            .config("log_statement = 'all'")
            .tls(&certs.server_cert, &certs.server_key, None)
            .hba("local all all trust")
            .hba("host all trust_user 127.0.0.1/32 trust")
            .hba("host all md5_user 127.0.0.1/32 md5")
            .hba("host all password_user 127.0.0.1/32 password")
            .hba("host all all 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut setup = Connection::connect(&cluster.conninfo()).expect("socket connection");
        setup
            .batch_execute(
                "CREATE ROLE alice LOGIN; CREATE ROLE md5_user LOGIN; \
                 CREATE ROLE password_user LOGIN; CREATE ROLE trust_user LOGIN",
            )
            .unwrap();
        for (role, password, algorithm) in [
            ("alice", ALICE_PASSWORD, "scram-sha-256"),
            ("md5_user", MD5_PASSWORD, "md5"),
            ("password_user", CLEARTEXT_PASSWORD, "scram-sha-256"),
        ] {
            set_verifier(&mut setup, role, password, algorithm);
        }
        let server = Server {
            port: cluster.port(),
            socket_conninfo: cluster.conninfo(),
            log_file: cluster.log_file().to_owned(),
            no_passfile: path_str(&certs.dir.join("no-such-passfile")).to_owned(),
        };
        common::drop_at_exit(cluster);
        common::drop_at_exit(certs);
        server
    })
}

/// `ALTER ROLE role PASSWORD '<verifier>'`: the password itself never reaches the server.
fn set_verifier(conn: &mut Connection, role: &str, password: &str, algorithm: &str) {
    let verifier = conn
        .encrypt_password(password, role, Some(algorithm))
        .unwrap();
    let sql = format!(
        "ALTER ROLE {} PASSWORD {}",
        conn.escape_identifier(role).unwrap(),
        conn.escape_literal(&verifier).unwrap()
    );
    conn.batch_execute(&sql).unwrap();
}

fn superuser() -> Connection {
    Connection::connect(&server().socket_conninfo).unwrap()
}

/// A Config for `user` over TCP, TLS disabled, no password file.
fn config(user: &str) -> Config {
    let s = server();
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(s.port)
        .dbname("postgres")
        .user(user)
        .passfile(&s.no_passfile)
        .connect_timeout(std::time::Duration::from_secs(10))
        .ssl_mode(SslMode::Disable);
    config
}

fn with_password(user: &str, password: &str) -> Config {
    let mut config = config(user);
    config.password(password);
    config
}

fn current_user(conn: &mut Connection) -> String {
    conn.query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0)
}

fn assert_contains(error: &pqlib::Error, needle: &str) {
    let text = error.to_string();
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

fn assert_hides(error: &pqlib::Error, secret: &str) {
    let rendered = format!("{error} {error:?} {error:#?}");
    assert!(!rendered.contains(secret), "{rendered}");
}

#[test]
fn scram_sha_256_with_and_without_tls() {
    for mode in [SslMode::Disable, SslMode::Require] {
        let mut config = with_password("alice", ALICE_PASSWORD);
        config.ssl_mode(mode);
        let mut conn = config.connect().unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(current_user(&mut conn), "alice");
        assert!(conn.used_password());
        assert_eq!(conn.ssl_in_use(), mode == SslMode::Require);
    }
    let stored: String = superuser()
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
}

#[test]
fn md5_and_cleartext_methods() {
    let mut conn = with_password("md5_user", MD5_PASSWORD).connect().unwrap();
    assert_eq!(current_user(&mut conn), "md5_user");
    let mut conn = with_password("password_user", CLEARTEXT_PASSWORD)
        .connect()
        .unwrap();
    assert_eq!(current_user(&mut conn), "password_user");
    let conn = config("trust_user").connect().unwrap();
    assert!(!conn.used_password());
}

#[test]
fn wrong_password_reports_the_servers_message_but_never_the_password() {
    let wrong = "wrong-password-c0ffee";
    for user in ["alice", "md5_user", "password_user"] {
        let e = with_password(user, wrong).connect().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert_contains(
            &e,
            &format!("password authentication failed for user \"{user}\""),
        );
        assert_hides(&e, wrong);
    }
    // The same through a connection string.
    let s = server();
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=postgres user=alice passfile={} sslmode=disable \
         password={wrong}",
        s.port, s.no_passfile
    );
    let e = Connection::connect(&conninfo).unwrap_err();
    assert_contains(&e, "password authentication failed for user \"alice\"");
    assert_hides(&e, wrong);
}

#[test]
fn missing_password() {
    let e = config("alice").connect().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert_contains(&e, "no password supplied");
}

/// A wrong password, a missing one and an unreachable server are all `ErrorKind::Connect`
/// without an SQLSTATE (libpq keeps only the text of errors it gets while connecting);
/// `needs_password` and `used_password` tell them apart, in both clients.
#[test]
fn connection_failures_are_told_apart() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let refused_port = {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut unreachable = config("alice");
    unreachable.param("port", &refused_port.to_string());
    let cases = [
        (
            "wrong password",
            with_password("alice", "wrong-pw-7d1e"),
            false,
            true,
        ),
        // libpq's "used a password" means "the server asked for one".
        ("missing password", config("alice"), true, true),
        ("unreachable", unreachable, false, false),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (what, config, needs_password, used_password) in cases {
        let blocking = config.connect().unwrap_err();
        let nonblocking = runtime
            .block_on(pqlib::tokio::connect_config(&config))
            .unwrap_err();
        for e in [blocking, nonblocking] {
            assert_eq!(e.kind(), ErrorKind::Connect, "{what}: {e}");
            assert_eq!(e.code(), None, "{what}: {e}");
            assert!(e.as_db_error().is_none(), "{what}: {e}");
            assert_eq!(e.needs_password(), needs_password, "{what}: {e}");
            assert_eq!(e.used_password(), used_password, "{what}: {e}");
        }
    }
    // Errors that are not connection failures say no to both.
    let e = superuser().batch_execute("SELEC 1").unwrap_err();
    assert!(!e.needs_password() && !e.used_password());
    // A login that works used the password (and so reports the connection, not an error).
    let conn = with_password("alice", ALICE_PASSWORD).connect().unwrap();
    assert!(conn.used_password());
}

#[test]
fn channel_binding() {
    // Over TLS, SCRAM binds to the channel: required and got.
    let mut config = with_password("alice", ALICE_PASSWORD);
    config
        .ssl_mode(SslMode::Require)
        .channel_binding(ChannelBinding::Require);
    let conn = config.connect().unwrap();
    assert!(conn.ssl_in_use());

    // Without TLS there is no channel to bind to.
    config.ssl_mode(SslMode::Disable);
    let e = config.connect().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert_contains(&e, "channel binding required, but SSL not in use");
    assert_hides(&e, ALICE_PASSWORD);

    // Methods without SCRAM cannot bind, even over TLS.
    for (user, password) in [
        ("trust_user", ""),
        ("password_user", CLEARTEXT_PASSWORD),
        ("md5_user", MD5_PASSWORD),
    ] {
        let mut config = with_password(user, password);
        config
            .ssl_mode(SslMode::Require)
            .channel_binding(ChannelBinding::Require);
        let e = config.connect().unwrap_err();
        assert_contains(&e, "channel binding");
    }

    // `disable` never binds but still authenticates.
    let mut config = with_password("alice", ALICE_PASSWORD);
    config
        .ssl_mode(SslMode::Require)
        .channel_binding(ChannelBinding::Disable);
    config.connect().unwrap();
}

/// `require_auth` is libpq 16's: with an older libpq the keyword is an `Unsupported` error
/// naming the version needed, from the Config API and from a connection string.
#[test]
fn require_auth_accepts_and_rejects_methods() {
    if !common::libpq_at_least(16, "require_auth") {
        let mut config = with_password("alice", ALICE_PASSWORD);
        config.require_auth("scram-sha-256");
        for e in [
            config.validate().unwrap_err(),
            config.connect().unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert_contains(&e, "needs libpq 16");
        }
        // From a connection string too.
        let e = Connection::connect("require_auth=scram-sha-256").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert_contains(&e, "needs libpq 16");
        return;
    }
    let accepted = [
        ("alice", ALICE_PASSWORD, "scram-sha-256"),
        ("alice", ALICE_PASSWORD, "md5,scram-sha-256"),
        ("alice", ALICE_PASSWORD, "!password,!md5"),
        ("md5_user", MD5_PASSWORD, "md5"),
        ("password_user", CLEARTEXT_PASSWORD, "password"),
        ("trust_user", "", "none"),
    ];
    for (user, password, methods) in accepted {
        let mut config = with_password(user, password);
        config.require_auth(methods);
        let mut conn = config
            .connect()
            .unwrap_or_else(|e| panic!("{user} with require_auth={methods}: {e}"));
        assert_eq!(current_user(&mut conn), user);
    }
    // libpq's words: `authentication method requirement "<methods>" failed: <what the
    // server asked for>`.
    let rejected = [
        (
            "alice",
            ALICE_PASSWORD,
            "md5",
            "server requested SASL authentication",
        ),
        (
            "alice",
            ALICE_PASSWORD,
            "!scram-sha-256",
            "server requested SCRAM-SHA-256 authentication",
        ),
        (
            "alice",
            ALICE_PASSWORD,
            "password",
            "server requested SASL authentication",
        ),
        (
            "password_user",
            CLEARTEXT_PASSWORD,
            "!password",
            "server requested a cleartext password",
        ),
        (
            "password_user",
            CLEARTEXT_PASSWORD,
            "scram-sha-256",
            "server requested a cleartext password",
        ),
        (
            "trust_user",
            "",
            "scram-sha-256",
            "server did not complete authentication",
        ),
        (
            "alice",
            ALICE_PASSWORD,
            "none",
            "server requested SASL authentication",
        ),
    ];
    for (user, password, methods, reason) in rejected {
        let mut config = with_password(user, password);
        config.require_auth(methods);
        let e = match config.connect() {
            Ok(_) => panic!("{user} with require_auth={methods} connected"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert_contains(
            &e,
            &format!("authentication method requirement \"{methods}\" failed: {reason}"),
        );
        if !password.is_empty() {
            assert_hides(&e, password);
        }
    }
    // A method libpq does not know is a connection error naming it.
    let mut config = with_password("alice", ALICE_PASSWORD);
    config.require_auth("telepathy");
    assert_contains(&config.connect().unwrap_err(), "telepathy");
}

#[test]
fn encrypt_password_makes_verifiers_the_server_accepts() {
    let mut conn = superuser();
    let scram = conn
        .encrypt_password("pw one", "verifier_user", Some("scram-sha-256"))
        .unwrap();
    assert!(scram.starts_with("SCRAM-SHA-256$4096:"), "{scram}");
    assert!(!scram.contains("pw one"));
    // Salted: two verifiers of one password differ.
    let again = conn
        .encrypt_password("pw one", "verifier_user", Some("scram-sha-256"))
        .unwrap();
    assert_ne!(scram, again);

    // md5 is md5(password || user), as the server computes it.
    let md5 = conn
        .encrypt_password("pw one", "verifier_user", Some("md5"))
        .unwrap();
    let expected: String = conn
        .query_one("SELECT 'md5' || md5('pw one' || 'verifier_user')", &[])
        .unwrap()
        .get(0);
    assert_eq!(md5, expected);

    // None asks the server for its password_encryption setting, on this session.
    assert!(
        conn.encrypt_password("pw", "u", None)
            .unwrap()
            .starts_with("SCRAM-SHA-256$")
    );
    conn.batch_execute("SET password_encryption = 'md5'")
        .unwrap();
    assert!(
        conn.encrypt_password("pw", "u", None)
            .unwrap()
            .starts_with("md5")
    );
    conn.batch_execute("RESET password_encryption").unwrap();

    // An unknown algorithm is bad input; the password is not in the error.
    let e = conn
        .encrypt_password("secret-in-error?", "u", Some("rot13"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_contains(&e, "rot13");
    assert_hides(&e, "secret-in-error?");
    let e = conn
        .encrypt_password("nul\0inside", "u", Some("md5"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_hides(&e, "inside");

    // A role whose password is a verifier logs in with the password.
    conn.batch_execute("CREATE ROLE verifier_user LOGIN")
        .unwrap();
    set_verifier(&mut conn, "verifier_user", "pw one", "scram-sha-256");
    let mut login = with_password("verifier_user", "pw one").connect().unwrap();
    assert_eq!(current_user(&mut login), "verifier_user");
}

#[test]
fn change_password_for_another_role_and_for_oneself() {
    let first = "first-secret-6b1e";
    let second = "second-secret-'\\\"-9d0c";
    let third = "third-secret-e77a";
    let role = "Mixed \"Case\" user";
    let mut admin = superuser();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN",
            admin.escape_identifier(role).unwrap()
        ))
        .unwrap();

    // A superuser sets the password.
    admin.change_password(role, first).unwrap();
    let mut conn = with_password(role, first).connect().unwrap();
    assert_eq!(current_user(&mut conn), role);

    // The role changes its own password, over TLS.
    let mut config = with_password(role, first);
    config.ssl_mode(SslMode::Require);
    let mut own = config.connect().unwrap();
    own.change_password(role, second).unwrap();
    assert_contains(
        &with_password(role, first).connect().unwrap_err(),
        "password authentication failed",
    );
    with_password(role, second).connect().unwrap();

    // Stored as the server's algorithm (scram-sha-256).
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    // A role that does not exist: the server's error, without the password.
    let e = admin.change_password("no_such_role", third).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT));
    assert_hides(&e, third);
    // The session goes on.
    admin.batch_execute("SELECT 1").unwrap();

    // Nothing above sent a password in clear: the server, which logs every statement,
    // only ever saw verifiers.
    let log = std::fs::read_to_string(&server().log_file).unwrap();
    assert!(log.contains("ALTER USER"), "the statements are logged");
    for secret in [first, second, third, ALICE_PASSWORD, MD5_PASSWORD] {
        assert!(!log.contains(secret), "{secret:?} in the server log");
    }
}
