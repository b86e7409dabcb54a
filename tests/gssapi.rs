//! GSSAPI/Kerberos end to end: a throwaway Kerberos realm (MIT `krb5kdc` on a free loopback
//! port, its database, configuration and keytab in a temp dir), a server that accepts only
//! GSSAPI-encrypted connections (`hostgssenc … gss`), and a client with a ticket from `kinit`.
//!
//! The client side runs in a child process (this test binary again, with `KRB5_CONFIG` and
//! `KRB5CCNAME` set), so the Kerberos environment is the child's alone. The system libpq
//! (Debian's is built with GSSAPI) must connect and the server must report the principal;
//! the vendored libpq has no GSSAPI, and there the same connection must fail with libpq's
//! "not compiled in" error.
//!
//! Needs the Debian packages `krb5-kdc` (`krb5kdc`, `kdb5_util`), `krb5-admin-server`
//! (`kadmin.local`) and `krb5-user` (`kinit`); without them the tests fail and say so.
#![cfg(unix)]

mod common;

use std::fs::{self, DirBuilder, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection};

const REALM: &str = "PQLIB.TEST";
const USER: &str = "alice";
const USER_PASSWORD: &str = "alice-kerberos-password";
/// The server's principal, as libpq asks for it: `krbsrvname` (default `postgres`) and the
/// host name it connects to.
const SERVICE: &str = "postgres/localhost";
const PACKAGES: &str = "krb5-kdc krb5-admin-server krb5-user";
/// How long one Kerberos command or the KDC's start may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
const KDC_START_ATTEMPTS: u32 = 5;

/// Whether this is the vendored libpq, which is built without GSSAPI.
fn vendored() -> bool {
    pqlib_sys::LIBPQ_ORIGIN == "vendored"
}

// ---- the realm -----------------------------------------------------------------------------

/// The Kerberos programs the realm needs, found where Debian installs them.
struct Tools {
    krb5kdc: PathBuf,
    kdb5_util: PathBuf,
    kadmin_local: PathBuf,
    kinit: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        // root's sbin directories are often missing from PATH.
        for dir in [
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/usr/local/sbin",
            "/usr/local/bin",
        ] {
            dirs.push(PathBuf::from(dir));
        }
        let mut missing = Vec::new();
        let mut find = |name: &str| {
            let found = dirs.iter().map(|dir| dir.join(name)).find(|path| {
                fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            });
            found.unwrap_or_else(|| {
                missing.push(name.to_owned());
                PathBuf::new()
            })
        };
        let tools = Tools {
            krb5kdc: find("krb5kdc"),
            kdb5_util: find("kdb5_util"),
            kadmin_local: find("kadmin.local"),
            kinit: find("kinit"),
        };
        assert!(
            missing.is_empty(),
            "the GSSAPI tests run their own Kerberos KDC, but {} not found (searched PATH and \
             the sbin directories); install the Debian packages {PACKAGES}: \
             `apt-get install {PACKAGES}`",
            missing.join(", ")
        );
        tools
    }
}

/// A running test realm: a KDC on a loopback port, with the user and service principals
/// made and the service's keytab written. Dropping it kills the KDC and removes its files.
struct Realm {
    dir: PathBuf,
    tools: Tools,
    kdc: Option<Child>,
    port: u16,
}

impl Realm {
    fn start() -> Realm {
        let tools = Tools::find();
        let dir = scratch_dir("krb5");
        let mut realm = Realm {
            dir,
            tools,
            kdc: None,
            port: 0,
        };
        fs::write(realm.path("kadm5.acl"), "").unwrap();
        // The database does not depend on the port; the configuration files are rewritten
        // for each port tried.
        realm.write_config(0);
        realm.kdb5_util(&["create", "-s", "-P", "pqlib-test-master-key"]);
        realm.kadmin(&format!("addprinc -pw {USER_PASSWORD} {USER}"), "created");
        realm.kadmin(&format!("addprinc -randkey {SERVICE}"), "created");
        let keytab = realm.keytab();
        realm.kadmin(
            &format!("ktadd -k {} {SERVICE}", keytab.display()),
            "added to keytab",
        );
        assert!(
            keytab.is_file(),
            "kadmin.local wrote no {}",
            keytab.display()
        );
        realm.start_kdc();
        realm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn krb5_conf(&self) -> PathBuf {
        self.path("krb5.conf")
    }

    /// The service's keytab, for the server's `krb_server_keyfile`.
    fn keytab(&self) -> PathBuf {
        self.path("server.keytab")
    }

    /// Makes the keytab readable by the user that owns (and runs) `cluster`, and nobody
    /// else.
    fn give_keytab_to(&self, cluster: &TempCluster) {
        let owner = fs::metadata(cluster.data_dir()).unwrap();
        let keytab = self.keytab();
        std::os::unix::fs::chown(&keytab, Some(owner.uid()), Some(owner.gid())).unwrap();
        fs::set_permissions(&keytab, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// `krb5.conf` for every client (kinit, libpq) and `kdc.conf` for the KDC tools, both
    /// naming only this realm on `127.0.0.1:port`, with no DNS lookups.
    fn write_config(&self, port: u16) {
        let dir = self.dir.display();
        let krb5_conf = format!(
            "[libdefaults]\n\
             \x20default_realm = {REALM}\n\
             \x20dns_lookup_kdc = false\n\
             \x20dns_lookup_realm = false\n\
             \x20dns_canonicalize_hostname = false\n\
             \x20rdns = false\n\
             \x20udp_preference_limit = 1\n\
             \x20ticket_lifetime = 1h\n\
             [realms]\n\
             \x20{REALM} = {{\n\
             \x20 kdc = 127.0.0.1:{port}\n\
             \x20}}\n\
             [domain_realm]\n\
             \x20localhost = {REALM}\n"
        );
        let kdc_conf = format!(
            "[kdcdefaults]\n\
             \x20kdc_listen = 127.0.0.1:{port}\n\
             \x20kdc_tcp_listen = 127.0.0.1:{port}\n\
             [realms]\n\
             \x20{REALM} = {{\n\
             \x20 database_name = {dir}/principal\n\
             \x20 key_stash_file = {dir}/stash\n\
             \x20 acl_file = {dir}/kadm5.acl\n\
             \x20 kdc_listen = 127.0.0.1:{port}\n\
             \x20 kdc_tcp_listen = 127.0.0.1:{port}\n\
             \x20 max_life = 1h\n\
             \x20}}\n\
             [logging]\n\
             \x20kdc = FILE:{dir}/kdc.log\n\
             \x20default = FILE:{dir}/krb5.log\n"
        );
        fs::write(self.krb5_conf(), krb5_conf).unwrap();
        fs::write(self.path("kdc.conf"), kdc_conf).unwrap();
    }

    /// A command with only this realm's Kerberos environment.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        clear_kerberos_env(&mut command);
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("KRB5_CONFIG", self.krb5_conf())
            .env("KRB5_KDC_PROFILE", self.path("kdc.conf"));
        command
    }

    fn kdb5_util(&self, args: &[&str]) {
        let mut command = self.command(&self.tools.kdb5_util);
        command.args(["-r", REALM]).args(args);
        let (status, output) = common::run_bounded(command, TOOL_TIMEOUT);
        assert!(
            status.success(),
            "kdb5_util {args:?} failed ({status}):\n{output}"
        );
    }

    /// Runs one `kadmin.local` query. It exits 0 even when the query fails, so its output
    /// must contain `expect`.
    fn kadmin(&self, query: &str, expect: &str) {
        let mut command = self.command(&self.tools.kadmin_local);
        command.args(["-r", REALM, "-q", query]);
        let (status, output) = common::run_bounded(command, TOOL_TIMEOUT);
        assert!(
            status.success() && output.contains(expect),
            "kadmin.local -q {query:?} failed ({status}):\n{output}"
        );
    }

    /// Starts `krb5kdc` in the foreground on a free loopback port and waits until it accepts
    /// TCP connections. Retries on another port if the chosen one was taken meanwhile.
    fn start_kdc(&mut self) {
        let out_path = self.path("krb5kdc.out");
        for _ in 0..KDC_START_ATTEMPTS {
            let port = free_tcp_and_udp_port();
            self.write_config(port);
            // A fresh log per attempt: it is how a taken port is recognised.
            let _ = fs::remove_file(self.path("kdc.log"));
            let out = File::create(&out_path).unwrap();
            let mut command = self.command(&self.tools.krb5kdc);
            command
                .args(["-n", "-r", REALM, "-P"])
                .arg(self.path("kdc.pid"))
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            // SAFETY: prctl is async-signal-safe, as a pre_exec closure requires. With
            // PR_SET_PDEATHSIG the KDC is killed when the thread that started it ends, even if
            // this process dies without running Drop.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().expect("spawn krb5kdc");
            self.kdc = Some(child);
            self.port = port;
            if self.wait_for_kdc() {
                return;
            }
            // The port was taken: try another.
        }
        panic!(
            "krb5kdc could not bind a free loopback port in {KDC_START_ATTEMPTS} attempts{}",
            self.logs()
        );
    }

    /// `true` once the KDC has bound its sockets (it logs "commencing operation" after that)
    /// and accepts connections; `false` if it exited because its port was in use. Panics on
    /// any other failure.
    fn wait_for_kdc(&mut self) -> bool {
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let kdc = self.kdc.as_mut().unwrap();
            if let Some(status) = kdc.try_wait().unwrap() {
                self.kdc = None;
                let logs = self.logs();
                if logs.contains("Address already in use") {
                    return false;
                }
                panic!("krb5kdc exited ({status}) while starting{logs}");
            }
            let log = fs::read_to_string(self.path("kdc.log")).unwrap_or_default();
            if log.contains("commencing operation")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "krb5kdc did not accept connections on {addr} within {TOOL_TIMEOUT:?}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Gets a ticket for the user into a new credential cache, with the password on stdin
    /// as a person would type it; returns the cache's `KRB5CCNAME`.
    fn kinit(&self) -> String {
        let password_file = self.path("password");
        fs::write(&password_file, format!("{USER_PASSWORD}\n")).unwrap();
        let ccache = format!("FILE:{}", self.path("alice.ccache").display());
        let mut command = self.command(&self.tools.kinit);
        command
            .arg(format!("{USER}@{REALM}"))
            .env("KRB5CCNAME", &ccache)
            .stdin(File::open(&password_file).unwrap());
        let (status, output) = common::run_bounded(command, TOOL_TIMEOUT);
        assert!(
            status.success(),
            "kinit failed ({status}):\n{output}{}",
            self.logs()
        );
        ccache
    }

    /// The KDC's output and log, to end a failure message.
    fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["krb5kdc.out", "kdc.log", "krb5.log"] {
            if let Ok(log) = fs::read_to_string(self.path(name)) {
                text.push_str(&format!("\n--- {name} ---\n{log}"));
            }
        }
        text
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        if let Some(mut kdc) = self.kdc.take() {
            let _ = kdc.kill();
            let _ = kdc.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes every Kerberos variable the parent may have, so that only what the test sets
/// applies.
fn clear_kerberos_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KRB5") {
            command.env_remove(&key);
        }
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP (the KDC listens on both). Another process
/// may take it before the KDC binds it: the caller retries.
fn free_tcp_and_udp_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP in 100 tries");
}

/// A new private directory under the temp dir, removed by its owner. Mode 0711: the server
/// user may reach the keytab in it (which is its own, mode 0600) but not list the rest.
fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pqlib-test-{name}-{}-{n}", std::process::id()));
        match DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
}

/// A server that takes TCP connections only with GSSAPI encryption and authentication,
/// mapping `alice@PQLIB.TEST` to the role `alice`; the unix socket stays `trust` for setup.
fn start_server(realm: &Realm) -> TempCluster {
    let keytab = realm.keytab().to_str().unwrap().replace('\'', "''");
    let cluster = TempCluster::builder()
        .config(format!("krb_server_keyfile = '{keytab}'"))
        .hba("local all all trust")
        .hba("hostgssenc all all 127.0.0.1/32 gss include_realm=0")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    realm.give_keytab_to(&cluster);
    let mut admin = Connection::connect(&cluster.conninfo()).unwrap();
    admin
        .batch_execute(&format!("CREATE ROLE {USER} LOGIN"))
        .unwrap();
    cluster
}

// ---- the client, in a child process ---------------------------------------------------------

/// Set in the child's environment to the scenario it should run.
const CHILD: &str = "PQLIB_GSSAPI_TEST_CHILD";
/// The conninfo the child connects with (without `gssencmode`).
const CHILD_CONNINFO: &str = "PQLIB_GSSAPI_TEST_CONNINFO";

/// Runs this test binary again as `gssapi_child`, with the `PG*` and Kerberos variables
/// removed and `KRB5_CONFIG`/`KRB5CCNAME` set; panics with everything useful if it fails.
fn run_child(scenario: &str, realm: &Realm, ccache: &str, cluster: &TempCluster) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command.args(["--exact", "gssapi_child", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("PG") || name == "DATABASE_URL" {
            command.env_remove(&key);
        }
    }
    clear_kerberos_env(&mut command);
    let trace = realm.path(&format!("trace-{scenario}.log"));
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={USER} dbname=postgres \
         connect_timeout=10",
        cluster.port()
    );
    command
        .env(CHILD, scenario)
        .env(CHILD_CONNINFO, &conninfo)
        .env("KRB5_CONFIG", realm.krb5_conf())
        .env("KRB5CCNAME", ccache)
        .env("KRB5_TRACE", &trace);
    let (status, output) = common::run_bounded(command, Duration::from_secs(60));
    if !(status.success() && output.contains("CHILD OK")) {
        let trace = fs::read_to_string(&trace).unwrap_or_default();
        let server_log = fs::read_to_string(cluster.log_file()).unwrap_or_default();
        panic!(
            "child {scenario:?} failed ({status}):\n{output}\n--- KRB5_TRACE ---\n{trace}\n\
             --- server log ---\n{server_log}{}",
            realm.logs()
        );
    }
    println!("child {scenario:?}:\n{output}");
}

/// libpq's error for `gssencmode=require` when it is built without GSSAPI.
const NOT_COMPILED_IN: &str =
    "gssencmode value \"require\" invalid when GSSAPI support is not compiled in";

/// Not a test of its own: the body of the child process that `run_child` starts.
#[test]
fn gssapi_child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    let conninfo = std::env::var(CHILD_CONNINFO).unwrap();
    let require = format!("{conninfo} gssencmode=require");
    match (scenario.as_str(), vendored()) {
        ("ticket", false) => {
            let mut conn = Connection::connect(&require).unwrap_or_else(|e| panic!("{e}"));
            let row = conn
                .query_one(
                    "SELECT principal, encrypted, gss_authenticated, current_user::text \
                     FROM pg_stat_gssapi WHERE pid = pg_backend_pid()",
                    &[],
                )
                .unwrap();
            assert_eq!(row.get::<_, &str>(0), format!("{USER}@{REALM}"));
            assert!(row.get::<_, bool>(1), "not encrypted");
            assert!(row.get::<_, bool>(2), "not GSSAPI-authenticated");
            assert_eq!(row.get::<_, &str>(3), USER);
            assert!(!conn.ssl_in_use(), "GSSAPI encryption, not TLS");
            println!("server reports principal {}", row.get::<_, &str>(0));

            // The same through the builder.
            let mut config: Config = conninfo.parse().unwrap();
            config.param("gssencmode", "require");
            let mut conn = config.connect().unwrap();
            let principal: String = conn
                .query_one(
                    "SELECT principal FROM pg_stat_gssapi WHERE pid = pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(principal, format!("{USER}@{REALM}"));

            // The server takes nothing but GSSAPI encryption from this host.
            let e = Connection::connect(&format!("{conninfo} gssencmode=disable")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connect);
            let message = e.to_string();
            assert!(
                message.contains("no pg_hba.conf entry") && message.contains("no encryption"),
                "{message}"
            );
        }
        ("no-ticket", false) => {
            // libpq refuses before it tries: nothing to authenticate with.
            let e = Connection::connect(&require).unwrap_err();
            println!("gssencmode=require: {e}");
            assert_eq!(e.kind(), ErrorKind::Connect);
            let message = e.to_string();
            // libpq 18 names the missing piece; earlier versions only say it was impossible.
            let expected = if pqlib::version().major >= 18 {
                "GSSAPI encryption required but no credential cache"
            } else {
                "GSSAPI encryption required but was impossible"
            };
            assert!(message.contains(expected), "{message}");
        }
        (_, true) => {
            // Ticket or not, the vendored libpq cannot do GSSAPI and says so...
            let e = Connection::connect(&require).unwrap_err();
            println!("gssencmode=require: {e}");
            assert_eq!(e.kind(), ErrorKind::Connect);
            assert!(e.to_string().contains(NOT_COMPILED_IN), "{e}");
            // ...and without `require` it connects unencrypted, which this server refuses.
            let e = Connection::connect(&conninfo).unwrap_err();
            println!("gssencmode default: {e}");
            let message = e.to_string();
            assert!(
                message.contains("no pg_hba.conf entry") && message.contains("no encryption"),
                "{message}"
            );
        }
        (other, _) => panic!("unknown scenario {other}"),
    }
    println!("CHILD OK");
}

#[test]
fn kerberos_ticket_gives_a_gssapi_encrypted_session() {
    let realm = Realm::start();
    let cluster = start_server(&realm);
    let ccache = realm.kinit();
    run_child("ticket", &realm, &ccache, &cluster);
}

#[test]
fn gssencmode_require_without_a_ticket_fails_clearly() {
    let realm = Realm::start();
    let cluster = start_server(&realm);
    let empty = format!("FILE:{}", realm.path("no-such.ccache").display());
    run_child("no-ticket", &realm, &empty, &cluster);
}
