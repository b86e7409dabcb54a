//! Connecting: `key=value` and URI connection strings, several hosts, `Config`, libpq's `PG*`
//! environment variables (in a child process, so the environment is the test's own), and
//! that no password ever shows in `Debug`/`Display` of a config, a connection or an error.
//!
//! Tests that need to know where the server is (its socket directory and port) return early
//! when `DATABASE_URL` or `PGHOST` names an external server.

mod common;

use std::process::Command;
use std::time::Duration;

use pqlib::error::ErrorKind;
use pqlib::{Config, Connection};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// The test cluster, or `None` (the test is skipped) with an external server.
fn cluster() -> Option<&'static common::TestCluster> {
    common::own_cluster()
}

fn sock_dir(cluster: &common::TestCluster) -> String {
    cluster
        .socket_dir
        .to_str()
        .expect("the socket directory is UTF-8")
        .to_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(conn: &mut Connection, sql: &str) -> String {
    conn.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Who and where the session is: (current_user, current_database, port).
fn whoami(conn: &mut Connection) -> (String, String, String) {
    let row = conn
        .query_one(
            "SELECT current_user::text, current_database()::text, current_setting('port')",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[test]
fn key_value_conninfo() {
    let mut conn = connect();
    assert!(!conn.is_closed());
    let (_, _, port) = whoami(&mut conn);
    if let Some(cluster) = common::cluster() {
        assert_eq!(port, cluster.port.to_string());
        assert_eq!(
            whoami(&mut conn),
            (
                "postgres".into(),
                "postgres".into(),
                cluster.port.to_string()
            )
        );
    }
    let version: String = text(&mut conn, "SHOW server_version_num");
    assert_eq!(conn.server_version().to_string(), version);
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    assert_eq!(conn.backend_pid(), pid as u32);
}

#[test]
fn uri_with_percent_encoded_socket_directory() {
    let Some(cluster) = cluster() else { return };
    let dir = sock_dir(cluster);
    for scheme in ["postgresql", "postgres"] {
        let uri = format!(
            "{scheme}://postgres@{}:{}/postgres",
            percent_encode(&dir),
            cluster.port
        );
        let mut conn = Connection::connect(&uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(
            whoami(&mut conn),
            (
                "postgres".into(),
                "postgres".into(),
                cluster.port.to_string()
            )
        );
        // Over the unix socket: the server has no inet address for it.
        assert_eq!(
            conn.query_one("SELECT inet_server_addr()", &[])
                .unwrap()
                .get::<_, Option<std::net::IpAddr>>(0),
            None
        );
    }
}

#[test]
fn uri_with_host_in_query_parameters() {
    let Some(cluster) = cluster() else { return };
    let uri = format!(
        "postgresql:///postgres?host={}&port={}&user=postgres&application_name=uri%20app",
        sock_dir(cluster),
        cluster.port
    );
    let mut conn = Connection::connect(&uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(text(&mut conn, "SHOW application_name"), "uri app");
    assert_eq!(
        conn.parameter_status("application_name").as_deref(),
        Some("uri app")
    );
}

#[test]
fn uri_over_tcp() {
    let Some(cluster) = cluster() else { return };
    let uri = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut conn = Connection::connect(&uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    let addr: std::net::IpAddr = conn
        .query_one("SELECT inet_server_addr()", &[])
        .unwrap()
        .get(0);
    assert_eq!(addr, std::net::IpAddr::from([127, 0, 0, 1]));
    assert!(!conn.ssl_in_use());
    let mut tcp = Connection::connect(&cluster.tcp_conninfo).unwrap();
    assert_eq!(whoami(&mut tcp).2, cluster.port.to_string());
}

#[test]
fn several_hosts_first_one_bad() {
    let Some(cluster) = cluster() else { return };
    let dir = sock_dir(cluster);
    let port = cluster.port;
    let conninfo = format!(
        "host=/nonexistent-pqlib-dir,{dir} port={port},{port} user=postgres dbname=postgres"
    );
    let mut conn = Connection::connect(&conninfo).unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    assert_eq!(whoami(&mut conn).2, port.to_string());
    // The connection reports the host it ended up on.
    let debug = format!("{conn:?}");
    assert!(debug.contains(&format!("{dir:?}")), "{debug}");
    assert!(!debug.contains("nonexistent"), "{debug}");

    // The same in URI form.
    let uri = format!(
        "postgresql:///postgres?host=/nonexistent-pqlib-dir,{dir}&port={port},{port}&user=postgres"
    );
    let mut conn = Connection::connect(&uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(whoami(&mut conn).2, port.to_string());

    // And with the builder, one host at a time.
    let mut conn = Config::new()
        .host("/nonexistent-pqlib-dir")
        .host(&dir)
        .port(port)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect()
        .unwrap();
    assert_eq!(whoami(&mut conn).2, port.to_string());
}

#[test]
fn every_host_bad_reports_each_attempt() {
    let Some(cluster) = cluster() else { return };
    let port = cluster.port;
    let conninfo = format!(
        "host=/nonexistent-pqlib-a,/nonexistent-pqlib-b port={port} user=postgres password=hunter2"
    );
    let e = Connection::connect(&conninfo).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    let display = e.to_string();
    assert!(display.contains("nonexistent-pqlib-a"), "{display}");
    assert!(display.contains("nonexistent-pqlib-b"), "{display}");
    assert!(!display.contains("hunter2") && !format!("{e:?}").contains("hunter2"));
}

#[test]
fn config_builder_connects() {
    let Some(cluster) = cluster() else { return };
    let mut conn = Config::new()
        .host(&sock_dir(cluster))
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .application_name("built")
        .connect()
        .unwrap();
    assert_eq!(
        whoami(&mut conn),
        (
            "postgres".into(),
            "postgres".into(),
            cluster.port.to_string()
        )
    );
    assert_eq!(text(&mut conn, "SHOW application_name"), "built");

    // connect_config is the same thing.
    let mut config = Config::new();
    config
        .host(&sock_dir(cluster))
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres");
    assert!(config.validate().is_ok());
    let mut conn = Connection::connect_config(&config).unwrap();
    assert_eq!(whoami(&mut conn).2, cluster.port.to_string());
}

#[test]
fn config_builder_dbname_is_not_expanded() {
    let Some(cluster) = cluster() else { return };
    // With expand_dbname, this would be a conninfo naming database "postgres"; as a plain
    // name it is a database that does not exist.
    let e = Config::new()
        .host(&sock_dir(cluster))
        .port(cluster.port)
        .user("postgres")
        .dbname("dbname=postgres")
        .connect()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("dbname=postgres"), "{e}");
}

#[test]
fn config_from_str_key_value_and_uri() {
    let Some(cluster) = cluster() else { return };
    let dir = sock_dir(cluster);
    let port = cluster.port;

    let config: Config = format!("host={dir} port={port} user=postgres dbname=postgres")
        .parse()
        .unwrap();
    assert_eq!(config.get("host"), Some(dir.as_str()));
    assert_eq!(config.get("port"), Some(port.to_string().as_str()));
    assert_eq!(config.get("password"), None);
    let mut conn = config.connect().unwrap();
    assert_eq!(whoami(&mut conn).2, port.to_string());

    let uri = format!(
        "postgresql://postgres@{}:{port}/postgres",
        percent_encode(&dir)
    );
    let config: Config = uri.parse().unwrap();
    // The URI is decoded into the same keywords.
    assert_eq!(config.get("host"), Some(dir.as_str()));
    assert_eq!(config.get("user"), Some("postgres"));
    assert_eq!(config.get("dbname"), Some("postgres"));
    let mut conn = config.connect().unwrap();
    assert_eq!(whoami(&mut conn).2, port.to_string());

    let bad = "host=x bogus_keyword=1".parse::<Config>().unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::BadInput);
    assert!(bad.to_string().contains("bogus_keyword"), "{bad}");
}

#[test]
fn config_display_round_trips() {
    let Some(cluster) = cluster() else { return };
    let mut config = Config::new();
    let app = r"it's a \ test";
    config
        .host(&sock_dir(cluster))
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .application_name(app);
    let display = config.to_string();
    let parsed: Config = display.parse().unwrap_or_else(|e| panic!("{display}: {e}"));
    // libpq orders the keywords its own way; the parameters are the same.
    let sorted = |c: &Config| {
        let mut params: Vec<(String, String)> = c
            .params()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        params.sort();
        params
    };
    assert_eq!(sorted(&parsed), sorted(&config));
    let mut conn = Connection::connect(&display).unwrap();
    assert_eq!(text(&mut conn, "SHOW application_name"), app);
}

#[test]
fn password_never_shown_by_config() {
    let Some(cluster) = cluster() else { return };
    let dir = sock_dir(cluster);
    let uri = format!(
        "postgresql://postgres:hunter2@{}:{}/postgres",
        percent_encode(&dir),
        cluster.port
    );
    let config: Config = uri.parse().unwrap();
    assert_eq!(config.get("password"), Some("hunter2"));
    for shown in [
        format!("{config:?}"),
        format!("{config}"),
        format!("{config:#?}"),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password"), "{shown}");
        assert!(shown.contains("postgres"), "{shown}");
    }

    let mut built = Config::new();
    built.host(&dir).password("hunter2").sslpassword("hunter3");
    for shown in [format!("{built:?}"), format!("{built}")] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }

    // The server trusts the socket, so the password is not needed, but it is accepted.
    let conn = config.connect().unwrap();
    let debug = format!("{conn:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains(&dir), "{debug}");
    assert!(debug.contains(&cluster.port.to_string()), "{debug}");
    let conn = Connection::connect(&format!("{} password=hunter2", cluster.conninfo)).unwrap();
    let debug = format!("{conn:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn failed_connect_is_connect_error_without_password() {
    let Some(cluster) = cluster() else { return };
    let port = cluster.port;
    // A socket directory that does not exist.
    let conninfo =
        format!("host=/nonexistent-pqlib-dir port={port} user=postgres password=hunter2");
    let e = Connection::connect(&conninfo).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(!e.is_closed());
    assert!(e.as_db_error().is_none() && e.code().is_none());
    let (display, debug) = (e.to_string(), format!("{e:?}"));
    assert!(display.contains("/nonexistent-pqlib-dir"), "{display}");
    assert!(!display.contains("hunter2"), "{display}");
    assert!(!debug.contains("hunter2"), "{debug}");

    // A TCP port nobody listens on (just released by us), bounded by connect_timeout.
    let free_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri =
        format!("postgresql://postgres:hunter2@127.0.0.1:{free_port}/postgres?connect_timeout=10");
    let e = Connection::connect(&uri).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    let (display, debug) = (e.to_string(), format!("{e:?}"));
    assert!(display.contains(&free_port.to_string()), "{display}");
    assert!(!display.contains("hunter2"), "{display}");
    assert!(!debug.contains("hunter2"), "{debug}");

    // A database that does not exist: the server's refusal.
    let e = Connection::connect(&format!(
        "{} dbname=no_such_db_pqlib password=hunter2",
        cluster.conninfo
    ))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("no_such_db_pqlib"), "{e}");
    assert!(!e.to_string().contains("hunter2") && !format!("{e:?}").contains("hunter2"));
}

#[test]
fn malformed_conninfo_errors_without_password() {
    for conninfo in [
        "password=hunter2 bogus=1",
        "user=x password='hunter2",
        "password=hunter2 port=notaport host=/nonexistent-pqlib-dir",
    ] {
        let e = Connection::connect(conninfo).unwrap_err();
        let (display, debug) = (e.to_string(), format!("{e:?}"));
        assert!(!display.contains("hunter2"), "{conninfo}: {display}");
        assert!(!debug.contains("hunter2"), "{conninfo}: {debug}");
    }
}

/// BUG: libpq quotes the whole URI in some parse errors; `Connection::connect` passes that
/// message on unmasked (`Config::from_str` masks it), so the password shows in the error.
#[test]
fn malformed_uri_error_does_not_show_password() {
    let uri = "postgresql://postgres:hunter2@[::1]x/postgres";
    let parsed = uri.parse::<Config>().unwrap_err();
    assert!(!parsed.to_string().contains("hunter2"), "{parsed}");

    let e = Connection::connect(uri).unwrap_err();
    let (display, debug) = (e.to_string(), format!("{e:?}"));
    assert!(!display.contains("hunter2"), "{display}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn interior_nul_is_bad_input() {
    let e = Connection::connect("host=/tmp\0 user=postgres").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = "host=/tmp\0".parse::<Config>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = Config::new()
        .host("/tmp")
        .password("hun\0ter2")
        .connect()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(!e.to_string().contains("ter2"), "{e}");
}

#[test]
fn session_always_uses_utf8() {
    let mut config: Config = common::conninfo().parse().unwrap();
    config.client_encoding("LATIN1");
    let mut conn = config.connect().unwrap();
    assert_eq!(conn.client_encoding(), "UTF8");
    assert_eq!(text(&mut conn, "SHOW client_encoding"), "UTF8");
    let s: String = conn
        .query_one("SELECT $1::text", &[&"naïve ✓ 日本"])
        .unwrap()
        .get(0);
    assert_eq!(s, "naïve ✓ 日本");
    // The same holds after a reset.
    conn.reset().unwrap();
    assert_eq!(conn.client_encoding(), "UTF8");
}

#[test]
fn escaping_helpers() {
    let conn = connect();
    assert_eq!(conn.escape_literal("it's").unwrap(), "'it''s'");
    assert_eq!(
        conn.escape_identifier("My \"Table\"").unwrap(),
        "\"My \"\"Table\"\"\""
    );
    assert_eq!(
        conn.escape_literal("a\0b").unwrap_err().kind(),
        ErrorKind::BadInput
    );
}

// ---- PG* environment variables, in a child process --------------------------------------

/// Set in the child's environment to the scenario it should run.
const CHILD: &str = "PQLIB_CONNECT_TEST_CHILD";
/// The socket directory, for the child scenarios that name it explicitly.
const CHILD_SOCKET_DIR: &str = "PQLIB_CONNECT_TEST_SOCKET_DIR";

/// Runs this test binary again as `env_child` with the `PG*` variables and `DATABASE_URL`
/// removed and `vars` set; returns whether it succeeded, and its output.
fn run_child(scenario: &str, vars: &[(&str, String)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command.args(["--exact", "env_child", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("PG") || name == "DATABASE_URL" {
            command.env_remove(&key);
        }
    }
    command.env(CHILD, scenario);
    for (key, value) in vars {
        command.env(key, value);
    }
    let (status, output) = common::run_bounded(command, Duration::from_secs(60));
    (status.success() && output.contains("CHILD OK"), output)
}

/// Not a test of its own: the body of the child process that `run_child` starts.
#[test]
fn env_child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    match scenario.as_str() {
        "env" => {
            // Everything comes from PGHOST/PGPORT/PGUSER/PGDATABASE/PGAPPNAME/PGOPTIONS.
            let mut conn = Connection::connect("").expect("connect with an empty conninfo");
            let (user, db, port) = whoami(&mut conn);
            assert_eq!(user, "postgres");
            assert_eq!(db, "postgres");
            assert_eq!(port, std::env::var("PGPORT").unwrap());
            assert_eq!(text(&mut conn, "SHOW application_name"), "pqlib env app");
            assert_eq!(text(&mut conn, "SHOW search_path"), "pqlib_env_schema");
            // A Config without parameters reads the environment too.
            let mut conn = Config::new()
                .connect()
                .expect("connect with an empty Config");
            assert_eq!(text(&mut conn, "SHOW application_name"), "pqlib env app");
            // What the string says wins over the environment.
            let mut conn = Connection::connect("application_name=explicit").unwrap();
            assert_eq!(text(&mut conn, "SHOW application_name"), "explicit");
        }
        "bad-env-host" => {
            // PGHOST points nowhere: the empty conninfo fails, an explicit host wins.
            let e = Connection::connect("").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connect);
            assert!(e.to_string().contains("nonexistent-pqlib-dir"), "{e}");
            let dir = std::env::var(CHILD_SOCKET_DIR).unwrap();
            let mut conn = Connection::connect(&format!("host={dir}")).unwrap();
            assert_eq!(whoami(&mut conn).2, std::env::var("PGPORT").unwrap());
            // PGPASSWORD never shows in errors either.
            let e = Connection::connect("dbname=no_such_db_pqlib").unwrap_err();
            assert!(!e.to_string().contains("hunter2") && !format!("{e:?}").contains("hunter2"));
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("CHILD OK");
}

#[test]
fn pg_environment_variables_fill_in_the_conninfo() {
    let Some(cluster) = cluster() else { return };
    let (ok, output) = run_child(
        "env",
        &[
            ("PGHOST", sock_dir(cluster)),
            ("PGPORT", cluster.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGDATABASE", "postgres".into()),
            ("PGAPPNAME", "pqlib env app".into()),
            ("PGOPTIONS", "-c search_path=pqlib_env_schema".into()),
        ],
    );
    assert!(ok, "child failed:\n{output}");
}

#[test]
fn explicit_host_overrides_bad_pghost() {
    let Some(cluster) = cluster() else { return };
    let (ok, output) = run_child(
        "bad-env-host",
        &[
            ("PGHOST", "/nonexistent-pqlib-dir".into()),
            ("PGPORT", cluster.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGPASSWORD", "hunter2".into()),
            (CHILD_SOCKET_DIR, sock_dir(cluster)),
        ],
    );
    assert!(ok, "child failed:\n{output}");
}
