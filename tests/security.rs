//! Security hygiene:
//!
//! - no password, `sslpassword` or key passphrase appears in any `Debug` or `Display` output
//!   of a `Config` (parsed or built), a `Connection` or an error from a failed connect, nor in
//!   anything logged through the `log` crate;
//! - `escape_literal`/`escape_identifier` are safe on every input the API accepts, also after
//!   `SET client_encoding` switches the session to SJIS, BIG5, GBK or GB18030 (encodings whose
//!   multibyte characters can contain `'` or `\` bytes; cf. CVE-2025-1094): each input either
//!   is refused or escapes to a literal/identifier that the server reads back as exactly that
//!   input. Never anything else.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::fmt::Write as _;
use std::sync::OnceLock;

use certs::{KEY_PASSPHRASE, TestCerts, path_str};
use pqlib::config::SslMode;
use pqlib::error::{ErrorKind, SqlState};
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection};

/// The password of role `alice`. Contains characters that URIs percent-encode.
const PASSWORD: &str = "pw-secret@A1b2/:";
const PASSWORD_URI: &str = "pw-secret%40A1b2%2F%3A";
/// A wrong password, which must not show either.
const WRONG_PASSWORD: &str = "wrong-secret-E5f6";
/// A wrong `sslpassword`.
const WRONG_SSLPASSWORD: &str = "sslpw-secret-C3d4";

/// Every string that must never be shown.
const SECRETS: [&str; 5] = [
    PASSWORD,
    PASSWORD_URI,
    WRONG_PASSWORD,
    WRONG_SSLPASSWORD,
    KEY_PASSPHRASE,
];

// ---------------------------------------------------------------------------------------
// No secret in the log (common::capture_logs) or in errors.

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows a secret ({secret:?}):\n{text}"
        );
    }
}

fn assert_logs_clean() {
    let logs = common::captured_logs();
    assert_no_secret("the log", &logs);
}

/// `Display`, `Debug` and pretty `Debug` of an error and of every error in its source chain.
fn render_error(error: &pqlib::Error) -> String {
    let mut text = format!("{error}\n{error:?}\n{error:#?}\n");
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let _ = writeln!(text, "{e}\n{e:?}");
        source = e.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// A server with TLS and SCRAM authentication.

struct Server {
    port: u16,
    socket_conninfo: String,
    root_ca: String,
    client_cert: String,
    encrypted_client_key: String,
    no_passfile: String,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        common::capture_logs();
        let certs = TestCerts::generate("security");
        let cluster = TempCluster::builder()
            .config("password_encryption = 'scram-sha-256'")
            .tls(
                &certs.server_cert,
                &certs.server_key,
                Some(&certs.client_ca),
            )
            .hba("local all all trust")
            .hba("host all all 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut setup = Connection::connect(&cluster.conninfo()).unwrap();
        setup.batch_execute("CREATE ROLE alice LOGIN").unwrap();
        let verifier = setup
            .encrypt_password(PASSWORD, "alice", Some("scram-sha-256"))
            .unwrap();
        let sql = format!(
            "ALTER ROLE alice PASSWORD {}",
            setup.escape_literal(&verifier).unwrap()
        );
        setup.batch_execute(&sql).unwrap();
        let server = Server {
            port: cluster.port(),
            socket_conninfo: cluster.conninfo(),
            root_ca: path_str(&certs.root_ca).to_owned(),
            client_cert: path_str(&certs.encrypted_client_cert).to_owned(),
            encrypted_client_key: path_str(&certs.encrypted_client_key).to_owned(),
            no_passfile: path_str(&certs.dir.join("no-passfile")).to_owned(),
        };
        common::drop_at_exit(cluster);
        common::drop_at_exit(certs);
        server
    })
}

#[test]
fn config_renderings_never_show_secrets() {
    common::capture_logs();
    let uri = format!(
        "postgresql://alice:{PASSWORD_URI}@127.0.0.1:5432/postgres?sslmode=verify-full\
         &sslpassword={WRONG_SSLPASSWORD}&application_name=app"
    );
    let key_value =
        format!("host=127.0.0.1 user=alice password='{PASSWORD}' sslpassword={WRONG_SSLPASSWORD}");
    let mut built = Config::new();
    built
        .host("127.0.0.1")
        .user("alice")
        .password(PASSWORD)
        .sslpassword(KEY_PASSPHRASE)
        .ssl_mode(SslMode::VerifyFull);
    let mut also_param = Config::new();
    also_param
        .param("password", WRONG_PASSWORD)
        .param("sslpassword", WRONG_SSLPASSWORD);

    let parsed_uri: Config = uri.parse().unwrap();
    let parsed_kv: Config = key_value.parse().unwrap();
    assert_eq!(
        parsed_uri.get("password"),
        Some(PASSWORD),
        "percent-decoded"
    );
    for (what, config) in [
        ("URI", &parsed_uri),
        ("key=value", &parsed_kv),
        ("builder", &built),
        ("param", &also_param),
    ] {
        let rendered = format!("{config}\n{config:?}\n{config:#?}");
        assert_no_secret(what, &rendered);
        assert!(rendered.contains("********"), "{what}: {rendered}");
        // Display parses back (as a masked configuration).
        let back: Config = config.to_string().parse().unwrap();
        assert_no_secret(what, &format!("{back:?}"));
    }
    assert_logs_clean();
}

#[test]
fn connection_debug_never_shows_the_password() {
    let s = server();
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(s.port)
        .user("alice")
        .dbname("postgres")
        .password(PASSWORD)
        .ssl_mode(SslMode::VerifyFull)
        .sslrootcert(&s.root_ca)
        .passfile(&s.no_passfile);
    let conn = config.connect().unwrap();
    let rendered = format!("{conn:?}\n{conn:#?}");
    assert_no_secret("Connection", &rendered);
    assert!(rendered.contains("alice"), "{rendered}");
    // A connection made from a URI with the password in it.
    let uri = format!(
        "postgresql://alice:{PASSWORD_URI}@127.0.0.1:{}/postgres?sslmode=require&passfile={}",
        s.port, s.no_passfile
    );
    let conn = Connection::connect(&uri).unwrap();
    assert_no_secret("Connection", &format!("{conn:?}\n{conn:#?}"));
    assert_logs_clean();
}

#[test]
fn failed_connects_never_show_secrets() {
    let s = server();
    let mut errors = Vec::new();

    // Wrong password, from a builder, a key=value string and a URI.
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(s.port)
        .user("alice")
        .dbname("postgres")
        .password(WRONG_PASSWORD)
        .passfile(&s.no_passfile);
    errors.push(config.connect().unwrap_err());
    errors.push(
        Connection::connect(&format!(
            "host=127.0.0.1 port={} user=alice dbname=postgres password={WRONG_PASSWORD} \
             passfile={}",
            s.port, s.no_passfile
        ))
        .unwrap_err(),
    );
    errors.push(
        Connection::connect(&format!(
            "postgresql://alice:{WRONG_PASSWORD}@127.0.0.1:{}/postgres?passfile={}",
            s.port, s.no_passfile
        ))
        .unwrap_err(),
    );
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );
    }

    // A wrong sslpassword for an encrypted client key.
    let mut config: Config = format!(
        "host=127.0.0.1 port={} user=alice dbname=postgres sslmode=verify-full \
         sslrootcert={} sslcert={} sslkey={}",
        s.port, s.root_ca, s.client_cert, s.encrypted_client_key
    )
    .parse()
    .unwrap();
    config.sslpassword(WRONG_SSLPASSWORD).password(PASSWORD);
    let e = config.connect().unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
    errors.push(e);

    // Nobody listening (port 1), with the password in the URI.
    errors.push(
        Connection::connect(&format!(
            "postgresql://alice:{PASSWORD_URI}@127.0.0.1:1/postgres?connect_timeout=5"
        ))
        .unwrap_err(),
    );
    // Malformed strings that hold a password.
    for bad in [
        format!("postgresql://alice:{PASSWORD_URI}@[::1/postgres"),
        format!("host=h password={PASSWORD} bogus"),
        format!("password='{WRONG_PASSWORD}"),
        format!("sslpassword={WRONG_SSLPASSWORD} no_such_option=1"),
    ] {
        errors.push(Connection::connect(&bad).unwrap_err());
    }
    for e in &errors {
        assert_no_secret("a connect error", &render_error(e));
    }
    assert_logs_clean();
}

#[test]
fn notices_and_errors_of_a_session_are_logged_without_secrets() {
    let s = server();
    let mut conn = Connection::connect(&s.socket_conninfo).unwrap();
    // Default notice handling logs through `log`.
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'a notice'; RAISE WARNING 'a warning'; END $$")
        .unwrap();
    let logs = common::captured_logs();
    assert!(logs.contains("a warning"), "notices reach the log:\n{logs}");
    // Changing a password through the API: neither the error nor the log shows it.
    conn.change_password("alice", PASSWORD).unwrap();
    let e = conn
        .change_password("nobody_here", WRONG_PASSWORD)
        .unwrap_err();
    assert_no_secret("a change_password error", &render_error(&e));
    assert_logs_clean();
}

// ---------------------------------------------------------------------------------------
// Escaping under client encodings other than UTF-8.

/// Characters to put before a quote, a backslash or a double quote: every 2-byte UTF-8
/// character and a spread of 3- and 4-byte ones. Their last bytes (0x80..=0xBF) are lead
/// bytes or single characters in the legacy encodings, depending on what precedes them.
fn sample_chars() -> Vec<char> {
    let two = 0x80..0x800;
    let three = (0x800..0x10000).step_by(61);
    let four = (0x10000..0x110000).step_by(4001);
    two.chain(three)
        .chain(four)
        .filter_map(char::from_u32)
        .collect()
}

fn test_inputs() -> Vec<String> {
    let mut inputs = Vec::new();
    for c in sample_chars() {
        inputs.push(format!("{c}'"));
        inputs.push(format!("x{c}\\"));
        inputs.push(format!("{c}\"; SELECT 1 --"));
    }
    // Some fixed vectors: quotes and backslashes in every position.
    for fixed in [
        "'",
        "''",
        "\\",
        "\\'",
        "'\\",
        "\"",
        "a'b\"c\\d",
        "'; DROP TABLE x; --",
        "\u{8a5c}'",
        "\u{8868}'",
        "\u{80fd}\\",
        "Á'",
        "€'",
        "€\\'",
    ] {
        inputs.push(fixed.to_owned());
    }
    inputs
}

#[derive(Debug, Default)]
struct Counts {
    /// Escaping refused the input (invalid in the client encoding).
    refused: usize,
    /// The server read the escaped text back as exactly the input.
    round_trips: usize,
    /// The server refused the bytes (no such character in the encoding or in UTF-8).
    server_refused: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Literal,
    Identifier,
}

/// The server-side text of `input`'s bytes read in `encoding`: what the escaped form must
/// mean.
fn expected(input: &str, encoding: &str) -> String {
    format!(
        "convert_from(decode('{}', 'hex'), '{encoding}')",
        hex(input.as_bytes())
    )
}

/// A query that yields one `true` per item if each escaped item means its input.
fn check_query(kind: Kind, encoding: &str, items: &[(&str, String)]) -> String {
    match kind {
        Kind::Literal => {
            let columns: Vec<String> = items
                .iter()
                .map(|(input, escaped)| {
                    format!(
                        "(({escaped}) IS NOT DISTINCT FROM {})",
                        expected(input, encoding)
                    )
                })
                .collect();
            format!("SELECT {}", columns.join(", "))
        }
        Kind::Identifier => {
            let columns: Vec<String> = items
                .iter()
                .map(|(_, escaped)| format!("1 AS {escaped}"))
                .collect();
            let expected: Vec<String> = items
                .iter()
                .map(|(input, _)| expected(input, encoding))
                .collect();
            format!(
                "SELECT ARRAY(SELECT json_object_keys(row_to_json(t))) = ARRAY[{}]::text[] \
                 FROM (SELECT {}) t",
                expected.join(", "),
                columns.join(", ")
            )
        }
    }
}

/// Whether the rows of a check query are all `true`, one column per item for literals and
/// a single column for identifiers.
fn all_true(rows: &pqlib::Rows, kind: Kind, n: usize) -> bool {
    let width = match kind {
        Kind::Literal => n,
        Kind::Identifier => 1,
    };
    rows.len() == 1
        && rows.columns().len() == width
        && (0..width).all(|i| rows.iter().next().unwrap().get::<_, Option<bool>>(i) == Some(true))
}

fn check_escaping(conn: &mut Connection, encoding: &str, kind: Kind) -> Counts {
    let mut counts = Counts::default();
    let inputs = test_inputs();
    let mut escaped = Vec::new();
    for input in &inputs {
        let result = match kind {
            Kind::Literal => conn.escape_literal(input),
            Kind::Identifier => conn.escape_identifier(input),
        };
        match result {
            Ok(text) => escaped.push((input.as_str(), text)),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadInput, "{input:?}: {e}");
                let message = e.to_string();
                assert!(
                    message.contains("multibyte character"),
                    "{input:?}: {message}"
                );
                counts.refused += 1;
            }
        }
    }
    for batch in escaped.chunks(200) {
        let sql = check_query(kind, encoding, batch);
        if let Ok(rows) = conn.query_typed(&sql, &[]) {
            if all_true(&rows, kind, batch.len()) {
                counts.round_trips += batch.len();
                continue;
            }
        }
        // Something in the batch did not round-trip: look at each item alone.
        for item in batch {
            let sql = check_query(kind, encoding, std::slice::from_ref(item));
            match conn.query_typed(&sql, &[]) {
                Ok(rows) if all_true(&rows, kind, 1) => counts.round_trips += 1,
                Ok(_) => panic!(
                    "{encoding} {kind:?}: {:?} escaped to {:?}, which the server reads as \
                     something else",
                    item.0, item.1
                ),
                Err(e)
                    if e.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE)
                        || e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER) =>
                {
                    counts.server_refused += 1;
                }
                Err(e) => panic!(
                    "{encoding} {kind:?}: {:?} escaped to {:?}, which broke the statement: {e}",
                    item.0, item.1
                ),
            }
        }
    }
    assert_eq!(
        counts.refused + counts.round_trips + counts.server_refused,
        inputs.len()
    );
    counts
}

#[test]
fn escaping_is_safe_in_every_client_encoding() {
    let s = server();
    let mut conn = Connection::connect(&s.socket_conninfo).unwrap();
    assert_eq!(conn.client_encoding(), "UTF8");

    // UTF-8, pqlib's own: every &str is valid, so every input round-trips.
    for kind in [Kind::Literal, Kind::Identifier] {
        let counts = check_escaping(&mut conn, "UTF8", kind);
        assert_eq!(counts.refused + counts.server_refused, 0, "{counts:?}");
        eprintln!("UTF8 {kind:?}: {counts:?}");
    }

    // The legacy encodings, after the session switched to them: libpq would escape by their
    // rules, under which some UTF-8 text is an incomplete character that swallows a quote
    // (BIG5 and GBK let it through; cf. CVE-2025-1094). pqlib's text is UTF-8, so it
    // refuses to escape at all in such a session. (Such a session is closed at once, since
    // every text value would be converted from here on; escaping is refused all the same.)
    for encoding in ["SJIS", "BIG5", "GBK", "GB18030"] {
        let mut conn = Connection::connect(&s.socket_conninfo).unwrap();
        let switched = conn.batch_execute(&format!("SET client_encoding = '{encoding}'"));
        assert_eq!(switched.unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(conn.client_encoding(), encoding);
        for input in ["plain", "Á'", "it's"] {
            for e in [
                conn.escape_literal(input).unwrap_err(),
                conn.escape_identifier(input).unwrap_err(),
            ] {
                assert_eq!(e.kind(), ErrorKind::BadInput);
                assert!(e.to_string().contains("client_encoding UTF8"), "{e}");
            }
        }
    }
    conn.batch_execute("SET client_encoding = 'UTF8'").unwrap();
    assert_eq!(conn.client_encoding(), "UTF8");
}

/// What the safe API cannot be given (a `&str` is valid UTF-8), libpq itself refuses: invalid
/// UTF-8 through the raw bindings. This checks that the linked libpq has the
/// CVE-2025-1094 fixes (libpq 13.19, 14.16, 15.11, 16.7, 17.3 and later).
#[test]
fn libpq_refuses_invalid_utf8_when_escaping() {
    let s = server();
    let conn = Connection::connect(&s.socket_conninfo).unwrap();
    for bytes in [
        &b"\xc3'"[..],
        b"\xe2\x82'",
        b"\xf0\x9f\x98'",
        b"\xff'",
        b"\x80'",
        b"ok\xc3",
        b"\xed\xa0\x80'",
    ] {
        for (name, function) in [
            ("PQescapeLiteral", pqlib_sys::PQescapeLiteral as EscapeFn),
            ("PQescapeIdentifier", pqlib_sys::PQescapeIdentifier),
        ] {
            // SAFETY: the connection is alive; `bytes` is readable for its length.
            let ptr = unsafe { function(conn.as_ptr(), bytes.as_ptr().cast(), bytes.len()) };
            if !ptr.is_null() {
                // SAFETY: a NUL-terminated string libpq allocated, read then freed once.
                let out = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_bytes().to_vec();
                // SAFETY: as above.
                unsafe { pqlib_sys::PQfreemem(ptr.cast()) };
                panic!("{name} accepted invalid UTF-8 {bytes:x?} as {out:x?}: unpatched libpq?");
            }
        }
    }
}

type EscapeFn = unsafe extern "C" fn(
    *mut pqlib_sys::PGconn,
    *const std::ffi::c_char,
    usize,
) -> *mut std::ffi::c_char;
