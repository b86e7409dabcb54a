//! `pqlib::tempdb::TempCluster`: each test starts its own clusters, independent of the shared
//! test server in `common`. Queries go through the raw bindings (`common::RawConn`).
#![cfg(unix)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawConn, ping_ok, process_exists};
use pqlib::tempdb::{TempCluster, TempClusterError, TempClusterErrorKind};

fn start(builder: pqlib::tempdb::TempClusterBuilder) -> TempCluster {
    builder.start().unwrap_or_else(|e| panic!("{e}"))
}

fn query(conninfo: &str, sql: &str) -> Option<String> {
    let conn = RawConn::connect(conninfo).unwrap_or_else(|e| panic!("{conninfo}: {e}"));
    conn.query_value(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A directory for a test's own files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pqlib-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Asserts that the server is gone and its directory removed.
fn assert_stopped_and_removed(pid: u32, root: &Path, conninfo: &str) {
    assert!(!ping_ok(conninfo), "the server still answers");
    assert!(!process_exists(pid), "postmaster {pid} still exists");
    assert!(!root.exists(), "{} still exists", root.display());
}

#[test]
fn starts_and_accepts_connections_on_socket_and_tcp() {
    let cluster = start(TempCluster::builder());

    assert!(
        cluster
            .conninfo()
            .contains(&format!("port={}", cluster.port()))
    );
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.user(), "postgres");
    let socket = cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()));
    assert!(socket.exists(), "no socket at {}", socket.display());
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(cluster.data_dir().starts_with(cluster.socket_dir()));
    assert!(cluster.bin_dir().join("initdb").is_file());
    assert!(cluster.log_file().is_file());

    // inet_server_addr() is NULL over a unix socket: each conninfo uses its transport.
    let unix = cluster.conninfo();
    assert_eq!(query(&unix, "SELECT inet_server_addr()"), None);
    assert_eq!(
        query(&cluster.tcp_conninfo(), "SELECT host(inet_server_addr())").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        query(&cluster.url(), "SELECT inet_server_port()"),
        Some(cluster.port().to_string())
    );

    assert_eq!(
        query(&unix, "SELECT current_user").as_deref(),
        Some("postgres")
    );
    assert_eq!(
        query(&unix, "SELECT current_database()").as_deref(),
        Some("postgres")
    );
    let data_dir = query(&unix, "SHOW data_directory").unwrap();
    assert_eq!(Path::new(&data_dir), cluster.data_dir());
    for (setting, value) in [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("server_encoding", "UTF8"),
        ("ssl", "off"),
    ] {
        assert_eq!(
            query(&unix, &format!("SHOW {setting}")).as_deref(),
            Some(value),
            "{setting}"
        );
    }
    let collation = "SELECT datcollate FROM pg_database WHERE datname = current_database()";
    assert_eq!(query(&unix, collation).as_deref(), Some("C"));
    cluster.stop().unwrap();
}

#[test]
fn config_lines_are_applied() {
    let cluster = start(
        TempCluster::builder()
            .config("work_mem = '7MB'")
            .config("fsync = on"), // later lines override the module's own settings
    );
    assert_eq!(
        query(&cluster.conninfo(), "SHOW work_mem").as_deref(),
        Some("7MB")
    );
    assert_eq!(
        query(&cluster.conninfo(), "SHOW fsync").as_deref(),
        Some("on")
    );
}

#[test]
fn a_server_that_cannot_start_is_an_error_with_its_log() {
    let err = TempCluster::builder()
        .config("shared_buffers = 'lots'")
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), TempClusterErrorKind::Start);
    let message = err.to_string();
    assert!(message.contains("postgres exited"), "{message}");
    // The end of the server log says why.
    assert!(message.contains("\"shared_buffers\""), "{message}");
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = start(TempCluster::builder());
    let (pid, root, conninfo) = (
        cluster.pid(),
        cluster.socket_dir().to_owned(),
        cluster.conninfo(),
    );
    assert!(ping_ok(&conninfo));
    assert!(process_exists(pid));
    // An open session must not hold up the (fast) shutdown.
    let conn = RawConn::connect(&conninfo).unwrap();
    let started = Instant::now();
    drop(cluster);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "shutdown took {elapsed:?}"
    );
    assert_stopped_and_removed(pid, &root, &conninfo);
    assert!(conn.query_value("SELECT 1").is_err());
    assert!(!conn.is_ok());
}

#[test]
fn stop_stops_the_server_and_reports_success() {
    let cluster = start(TempCluster::builder());
    let (pid, root, conninfo) = (
        cluster.pid(),
        cluster.socket_dir().to_owned(),
        cluster.conninfo(),
    );
    cluster.stop().unwrap();
    assert_stopped_and_removed(pid, &root, &conninfo);
}

#[test]
fn a_panicking_owner_still_stops_the_server_and_removes_the_directory() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        let cluster = start(TempCluster::builder());
        sender
            .send((
                cluster.pid(),
                cluster.socket_dir().to_owned(),
                cluster.conninfo(),
            ))
            .unwrap();
        assert!(ping_ok(&cluster.conninfo()));
        panic!("a test failing while it owns a TempCluster");
    });
    assert!(owner.join().is_err(), "the thread should have panicked");
    let (pid, root, conninfo) = receiver.recv().unwrap();
    assert_stopped_and_removed(pid, &root, &conninfo);
}

#[test]
fn hba_lines_replace_pg_hba_conf() {
    let cluster = start(
        TempCluster::builder()
            .hba("local all all trust")
            .hba("host all all 127.0.0.1/32 reject"),
    );
    assert_eq!(query(&cluster.conninfo(), "SELECT 1").as_deref(), Some("1"));
    let err = RawConn::connect(&cluster.tcp_conninfo())
        .err()
        .expect("TCP is rejected");
    assert!(err.contains("pg_hba.conf rejects connection"), "{err}");
}

#[test]
fn bin_dir_without_binaries_is_an_error_naming_the_package() {
    let scratch = Scratch::new("empty-bin-dir");
    let err = TempCluster::builder()
        .bin_dir(&scratch.0)
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound);
    let message = err.to_string();
    assert!(message.contains("apt install postgresql"), "{message}");
    assert!(message.contains(&*scratch.0.to_string_lossy()), "{message}");
}

/// Set in the environment of the child process `pg_bindir_without_binaries_...` runs.
const CHILD_VAR: &str = "PQLIB_TEST_PG_BINDIR_CHILD";

/// Not a test by itself: the child process of `pg_bindir_without_binaries_...`, which sets
/// `PG_BINDIR` for it (the environment is process-global: tests must not change their own).
#[test]
fn child_starts_with_pg_bindir() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let err = TempCluster::start().unwrap_err();
    println!("KIND {:?}", err.kind());
    println!("ERROR {err}");
}

#[test]
fn pg_bindir_without_binaries_is_an_error_naming_the_package() {
    let scratch = Scratch::new("empty-pg-bindir");
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_starts_with_pg_bindir", "--nocapture"])
        .env(CHILD_VAR, "1")
        .env("PG_BINDIR", &scratch.0)
        .stdin(Stdio::null());
    let (status, output) = common::run_bounded(command, Duration::from_secs(60));
    assert!(status.success(), "child failed ({status}):\n{output}");
    assert!(output.contains("KIND BinariesNotFound"), "{output}");
    for needle in [
        "PG_BINDIR",
        &*scratch.0.to_string_lossy(),
        "apt install postgresql",
        "dnf install postgresql-server",
        "brew install postgresql@18",
    ] {
        assert!(
            output.contains(needle),
            "{needle:?} missing from:\n{output}"
        );
    }
}

#[test]
fn error_is_a_send_sync_std_error() {
    fn check<E: std::error::Error + Send + Sync + 'static>() {}
    check::<TempClusterError>();
}

/// As root, the server runs as an unprivileged user without root's supplementary groups.
#[cfg(target_os = "linux")]
#[test]
fn server_does_not_run_as_root() {
    let cluster = start(TempCluster::builder());
    let status = fs::read_to_string(format!("/proc/{}/status", cluster.pid())).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    use std::os::unix::fs::MetadataExt;
    let data_owner = fs::metadata(cluster.data_dir()).unwrap().uid();
    // SAFETY: geteuid has no preconditions.
    let our_uid = unsafe { libc::geteuid() };
    if our_uid == 0 {
        assert!(field("Uid:").iter().all(|&uid| uid != 0), "{status}");
        assert!(field("Gid:").iter().all(|&gid| gid != 0), "{status}");
        assert_eq!(field("Groups:"), Vec::<u32>::new(), "{status}");
        assert_eq!(field("Uid:")[1], data_owner);
    } else {
        assert_eq!(field("Uid:")[1], our_uid);
        assert_eq!(data_owner, our_uid);
    }
    // Root clients still connect as the database superuser.
    assert_eq!(
        query(&cluster.conninfo(), "SELECT current_user").as_deref(),
        Some("postgres")
    );
}

/// Runs `openssl` with these arguments in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for user `postgres`,
/// generated now: certificates expire, so none are committed.
fn make_certificates(dir: &Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=pqlib test CA",
            days[0],
            days[1],
        ],
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, serial) in [("server", "127.0.0.1", "2"), ("client", "postgres", "3")] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-out",
                &crt,
                "-extfile",
                &ext,
                days[0],
                days[1],
            ],
        );
    }
    // libpq refuses a client key that others can read.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn tls_files_enable_ssl_and_client_certificates() {
    if Command::new("openssl").arg("version").output().is_err() {
        common::skip("no `openssl` command to make test certificates with");
        return;
    }
    let scratch = Scratch::new("tls");
    let dir = &scratch.0;
    make_certificates(dir);
    let cluster = start(
        TempCluster::builder()
            .tls(
                dir.join("server.crt"),
                dir.join("server.key"),
                Some(&dir.join("ca.crt")),
            )
            .hba("local all all trust")
            .hba("hostssl all all 127.0.0.1/32 cert"),
    );

    // The files were copied privately, for the user the server runs as.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data_owner = fs::metadata(cluster.data_dir()).unwrap().uid();
    for name in ["server.crt", "server.key", "ca.crt"] {
        let meta = fs::metadata(cluster.data_dir().join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert_eq!(meta.uid(), data_owner, "{name}");
    }
    assert_eq!(
        query(&cluster.conninfo(), "SHOW ssl").as_deref(),
        Some("on")
    );

    let verified = format!(
        "{} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        cluster.tcp_conninfo(),
        dir.join("ca.crt").display(),
        dir.join("client.crt").display(),
        dir.join("client.key").display(),
    );
    assert_eq!(
        query(
            &verified,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .as_deref(),
        Some("t")
    );
    assert_eq!(
        query(
            &verified,
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .as_deref(),
        Some("/CN=postgres")
    );
    // Without a certificate, or without TLS, the hba rules turn TCP clients away.
    let no_cert = format!("{} sslmode=require", cluster.tcp_conninfo());
    let err = RawConn::connect(&no_cert)
        .err()
        .expect("no certificate is rejected");
    assert!(err.contains("certificate"), "{err}");
    let plain = format!("{} sslmode=disable", cluster.tcp_conninfo());
    let err = RawConn::connect(&plain)
        .err()
        .expect("plain TCP is rejected");
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
}

/// As root, a server installation the unprivileged server user cannot reach (here: under a
/// directory only root may enter, as root's own home is) is refused before `initdb` runs,
/// with the user and the blocking directory named.
#[test]
fn as_root_binaries_the_server_user_cannot_reach_are_a_clear_error() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the server runs as this user, who reaches what it can start");
        return;
    }
    let Some(system) = common::default_bin_dir() else {
        common::skip("no PostgreSQL bin directory to copy the binaries from");
        return;
    };
    let scratch = Scratch::new("private-bindir");
    let private = scratch.0.join("private");
    let bin = private.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for name in ["initdb", "postgres"] {
        fs::copy(system.join(name), bin.join(name)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();

    let err = TempCluster::builder().bin_dir(&bin).start().unwrap_err();
    assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound, "{err}");
    let message = err.to_string();
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.contains(&*private.to_string_lossy()), "{message}");

    // The same installation, opened to others, starts.
    fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
    let err = TempCluster::builder().bin_dir(&bin).start().unwrap_err();
    // A copy of two binaries is no installation (no `share/`): initdb fails, but past the check.
    assert_eq!(err.kind(), TempClusterErrorKind::Initdb, "{err}");
}
