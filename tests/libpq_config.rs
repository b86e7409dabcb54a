//! libpq's own configuration sources, honoured through the safe API: a password file
//! (`PGPASSFILE`, `~/.pgpass`), a service file (`PGSERVICEFILE`, `PGSYSCONFDIR`) with
//! `service=`/`PGSERVICE`, and the `PG*` environment variables, including the TLS and
//! authentication ones.
//!
//! The environment is process-wide, so each scenario runs in a child process of this test
//! binary with its own variables (every inherited `PG*` variable removed, `HOME` pointing at
//! an empty directory), and connects with a conninfo that holds none of the values under
//! test.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use certs::{TestCerts, path_str, write_private};
use pqlib::Connection;
use pqlib::tempdb::TempCluster;

/// A password with the characters a password file must escape (`:` and `\`).
const PASSWORD: &str = r"svc:pass\word-4d2";
const USER: &str = "svc_user";

struct Server {
    port: u16,
    root_ca: String,
    wrong_root_ca: String,
    /// Where the tests write their files; removed at exit.
    dir: PathBuf,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = TestCerts::generate("libpq-config");
        let cluster = TempCluster::builder()
            .config("password_encryption = 'scram-sha-256'")
            .tls(&certs.server_cert, &certs.server_key, None)
            .hba("local all all trust")
            .hba("host all all 127.0.0.1/32 scram-sha-256")
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut setup = Connection::connect(&cluster.conninfo()).unwrap();
        setup
            .batch_execute(&format!("CREATE ROLE {USER} LOGIN"))
            .unwrap();
        let verifier = setup
            .encrypt_password(PASSWORD, USER, Some("scram-sha-256"))
            .unwrap();
        let sql = format!(
            "ALTER ROLE {USER} PASSWORD {}",
            setup.escape_literal(&verifier).unwrap()
        );
        setup.batch_execute(&sql).unwrap();
        let dir = certs.dir.join("scenarios");
        fs::create_dir(&dir).unwrap();
        let server = Server {
            port: cluster.port(),
            root_ca: path_str(&certs.root_ca).to_owned(),
            wrong_root_ca: path_str(&certs.wrong_root_ca).to_owned(),
            dir: dir.clone(),
        };
        common::drop_at_exit(cluster);
        common::drop_at_exit(certs);
        server
    })
}

/// A fresh, empty directory for one scenario (its `HOME`, its files).
fn scenario_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = server().dir.join(format!(
        "{name}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir).unwrap();
    dir
}

fn s(path: &Path) -> String {
    path_str(path).to_owned()
}

/// A password-file line for the test server: `host:port:db:user:password`, escaped.
fn passfile_line() -> String {
    let escaped = PASSWORD.replace('\\', r"\\").replace(':', r"\:");
    format!("127.0.0.1:{}:postgres:{USER}:{escaped}\n", server().port)
}

const CHILD: &str = "PQLIB_LIBPQ_CONFIG_CHILD";
const SCENARIO: &str = "PQLIB_LIBPQ_CONFIG_SCENARIO";
const CONNINFO: &str = "PQLIB_LIBPQ_CONFIG_CONNINFO";
const EXPECT: &str = "PQLIB_LIBPQ_CONFIG_EXPECT";

/// Runs `child_connects` in a child process with `vars` (and `HOME` = `home`): it connects
/// with `conninfo` and checks the session against `expect` (see there).
fn run(home: &Path, conninfo: &str, expect: &str, vars: &[(&str, String)]) -> String {
    let mut all = vec![
        ("HOME", s(home)),
        (SCENARIO, "connect".to_owned()),
        (CONNINFO, conninfo.to_owned()),
        (EXPECT, expect.to_owned()),
    ];
    all.extend(vars.iter().cloned());
    let (ok, output) = common::run_child_test("child_connects", CHILD, &all);
    assert!(
        ok,
        "child failed (conninfo {conninfo:?}, {vars:?}):\n{output}"
    );
    output
}

/// Not a test by itself: the body of the child processes.
///
/// `EXPECT` is `ok:<user>:<tls>:<application_name>` (connects as `user`, TLS on or off) or
/// `err:<text>` (fails with an error containing `text`).
#[test]
fn child_connects() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let conninfo = std::env::var(CONNINFO).unwrap();
    let expect = std::env::var(EXPECT).unwrap();
    let result = Connection::connect(&conninfo);
    if let Some(needle) = expect.strip_prefix("err:") {
        let e = result.expect_err("the connection should fail");
        assert!(e.to_string().contains(needle), "{needle:?} not in: {e}");
        assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e:?}");
        println!("CHILD ERROR {e}");
        println!("CHILD OK");
        return;
    }
    let mut parts = expect.strip_prefix("ok:").unwrap().splitn(3, ':');
    let (user, tls, app) = (
        parts.next().unwrap(),
        parts.next().unwrap() == "tls",
        parts.next().unwrap(),
    );
    let mut conn = result.unwrap_or_else(|e| panic!("{conninfo:?}: {e}"));
    let row = conn
        .query_one(
            "SELECT current_user::text, current_setting('application_name'), \
             (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), app);
    assert_eq!(row.get::<_, bool>(2), tls);
    assert_eq!(conn.ssl_in_use(), tls);
    assert!(conn.used_password(), "the password came from somewhere");
    // Whatever PGCLIENTENCODING says, pqlib sessions are UTF-8.
    assert_eq!(conn.client_encoding(), "UTF8");
    println!("CHILD OK");
}

/// Host, port, user and database are in the conninfo; the password is not.
fn no_password_conninfo() -> String {
    format!(
        "host=127.0.0.1 port={} user={USER} dbname=postgres sslmode=disable",
        server().port
    )
}

#[test]
fn pgpassfile_supplies_the_password() {
    let home = scenario_dir("pgpassfile");
    let passfile = home.join("my-passwords");
    write_private(
        &passfile,
        format!("# comment\nother:1:*:*:nope\n{}", passfile_line()).as_bytes(),
    );
    run(
        &home,
        &no_password_conninfo(),
        &format!("ok:{USER}:plain:"),
        &[("PGPASSFILE", s(&passfile))],
    );
}

#[test]
fn home_pgpass_is_the_default_password_file() {
    let home = scenario_dir("home-pgpass");
    write_private(&home.join(".pgpass"), passfile_line().as_bytes());
    run(
        &home,
        &no_password_conninfo(),
        &format!("ok:{USER}:plain:"),
        &[],
    );
}

#[test]
fn password_file_readable_by_others_is_ignored() {
    use std::os::unix::fs::PermissionsExt;

    let home = scenario_dir("pgpass-0644");
    let passfile = home.join("pgpass");
    write_private(&passfile, passfile_line().as_bytes());
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(
        &home,
        &no_password_conninfo(),
        "err:no password supplied",
        &[("PGPASSFILE", s(&passfile))],
    );
    assert!(
        output.contains("has group or world access"),
        "libpq warns about the file:\n{output}"
    );
}

#[test]
fn without_a_password_source_the_connection_fails() {
    let home = scenario_dir("no-password");
    run(
        &home,
        &no_password_conninfo(),
        "err:no password supplied",
        &[],
    );
}

fn service_file(name: &str) -> String {
    let s = server();
    format!(
        "# a service file\n[{name}]\nhost=127.0.0.1\nport={}\nuser={USER}\ndbname=postgres\n\
         sslmode=verify-full\nsslrootcert={}\napplication_name=from_service\n\n\
         [unrelated]\nhost=127.0.0.1\nport=1\n",
        s.port, s.root_ca
    )
}

#[test]
fn pgservicefile_and_service_name() {
    let home = scenario_dir("service");
    let services = home.join("services.conf");
    fs::write(&services, service_file("pqlib_test")).unwrap();
    let passfile = home.join("pgpass");
    write_private(&passfile, passfile_line().as_bytes());
    let vars = [
        ("PGSERVICEFILE", s(&services)),
        ("PGPASSFILE", s(&passfile)),
    ];
    // `service=` in the conninfo; everything else from the file, the password from the
    // password file.
    run(
        &home,
        "service=pqlib_test",
        &format!("ok:{USER}:tls:from_service"),
        &vars,
    );
    // The conninfo wins over the service.
    run(
        &home,
        "service=pqlib_test application_name=explicit",
        &format!("ok:{USER}:tls:explicit"),
        &vars,
    );
    // PGSERVICE names the service: the conninfo is empty.
    let mut with_env = vars.to_vec();
    with_env.push(("PGSERVICE", "pqlib_test".to_owned()));
    run(&home, "", &format!("ok:{USER}:tls:from_service"), &with_env);
    // An unknown service is an error naming it.
    run(
        &home,
        "service=no_such_service",
        "err:definition of service \"no_such_service\" not found",
        &vars,
    );
}

#[test]
fn pgsysconfdir_holds_the_system_service_file() {
    let home = scenario_dir("sysconfdir");
    let sysconf = home.join("etc");
    fs::create_dir(&sysconf).unwrap();
    fs::write(sysconf.join("pg_service.conf"), service_file("system_svc")).unwrap();
    let passfile = home.join("pgpass");
    write_private(&passfile, passfile_line().as_bytes());
    run(
        &home,
        "service=system_svc",
        &format!("ok:{USER}:tls:from_service"),
        &[("PGSYSCONFDIR", s(&sysconf)), ("PGPASSFILE", s(&passfile))],
    );
}

fn pg_environment() -> Vec<(&'static str, String)> {
    let s = server();
    let mut vars = vec![
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", s.port.to_string()),
        ("PGUSER", USER.to_owned()),
        ("PGPASSWORD", PASSWORD.to_owned()),
        ("PGDATABASE", "postgres".to_owned()),
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", s.root_ca.clone()),
        ("PGCHANNELBINDING", "require".to_owned()),
        ("PGAPPNAME", "from_env".to_owned()),
        ("PGCONNECT_TIMEOUT", "10".to_owned()),
        ("PGTARGETSESSIONATTRS", "read-write".to_owned()),
        ("PGCLIENTENCODING", "LATIN1".to_owned()),
    ];
    if pqlib::version().major >= 16 {
        vars.push(("PGREQUIREAUTH", "scram-sha-256".to_owned()));
    }
    vars
}

#[test]
fn pg_environment_variables_fill_in_everything() {
    let home = scenario_dir("pg-env");
    run(
        &home,
        "",
        &format!("ok:{USER}:tls:from_env"),
        &pg_environment(),
    );
}

#[test]
fn pg_environment_tls_settings_are_enforced() {
    let home = scenario_dir("pg-env-wrong-root");
    let mut vars = pg_environment();
    for (key, value) in &mut vars {
        if *key == "PGSSLROOTCERT" {
            *value = server().wrong_root_ca.clone();
        }
    }
    run(&home, "", "err:certificate verify failed", &vars);

    // PGCHANNELBINDING=require with PGSSLMODE=disable cannot be satisfied.
    let mut vars = pg_environment();
    for (key, value) in &mut vars {
        if *key == "PGSSLMODE" {
            *value = "disable".to_owned();
        }
    }
    run(
        &home,
        "",
        "err:channel binding required, but SSL not in use",
        &vars,
    );
}

#[test]
fn pg_environment_requireauth_is_enforced() {
    if pqlib::version().major < 16 {
        return; // PGREQUIREAUTH is libpq 16's.
    }
    let home = scenario_dir("pg-env-requireauth");
    let mut vars = pg_environment();
    vars.push(("PGREQUIREAUTH", "md5".to_owned()));
    run(
        &home,
        "",
        "err:authentication method requirement \"md5\"",
        &vars,
    );
}
