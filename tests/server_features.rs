//! Connection features of newer libpq releases, proven against servers that have them (and
//! against older servers that do not, for the error): `sslnegotiation=direct` (libpq 17,
//! server 17), protocol 3.2 and its longer cancel keys (libpq 18, server 18),
//! `load_balance_hosts=random` in libpq's own shuffle (libpq 16), and the connection service
//! ([`Connection::service`], every libpq). `require_auth` (libpq 16) is proven in
//! `tests/auth.rs`, next to the server with one `pg_hba.conf` line per method it needs.
//!
//! Each test needs the linked libpq (`common::libpq_at_least`) and the servers
//! (`common::server_at_least`, `common::server_of`, installed by `scripts/postgres-versions.sh`)
//! to be new or old enough; where the linked libpq is too old, it checks instead that the
//! option fails with an error naming the libpq release that has it.
#![cfg(unix)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use certs::{TestCerts, path_str};
use pqlib::config::{SslMode, SslNegotiation};
use pqlib::error::{ErrorKind, SqlState};
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection, ProtocolVersion};

// ---------------------------------------------------------------------------------------------
// Servers, started on first use and stopped when the binary exits.

/// A server of one major version on 127.0.0.1.
#[derive(Clone)]
struct Server {
    port: u16,
    /// The root certificate that signed the server's (servers with TLS only).
    root_ca: Option<PathBuf>,
}

impl Server {
    /// A conninfo for `user=postgres` over TCP, plus `extra`.
    fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10 {extra}",
            self.port
        )
    }

    fn root_ca(&self) -> &str {
        path_str(self.root_ca.as_deref().expect("a server with TLS"))
    }
}

/// The server in `bin_dir`, started once per `(bin_dir, tls)`. With `tls`, it has a
/// certificate for 127.0.0.1 and turns away TCP connections without TLS, so a connection
/// that succeeds is known to be encrypted.
fn server_in(bin_dir: &Path, tls: bool) -> Server {
    static SERVERS: OnceLock<Mutex<HashMap<(PathBuf, bool), Server>>> = OnceLock::new();
    let servers = SERVERS.get_or_init(Mutex::default);
    let mut servers = servers.lock().unwrap_or_else(|e| e.into_inner());
    let key = (bin_dir.to_owned(), tls);
    if let Some(server) = servers.get(&key) {
        return server.clone();
    }
    let mut builder = TempCluster::builder().bin_dir(bin_dir);
    let mut root_ca = None;
    if tls {
        let certs = TestCerts::generate("server_features");
        builder = builder
            .tls(&certs.server_cert, &certs.server_key, None)
            .hba("local all all trust")
            .hba("hostssl all all 127.0.0.1/32 trust")
            .hba("hostnossl all all 127.0.0.1/32 reject");
        root_ca = Some(certs.root_ca.clone());
        common::drop_at_exit(certs);
    }
    let cluster = builder
        .start()
        .unwrap_or_else(|e| panic!("starting the server in {}: {e}", bin_dir.display()));
    let server = Server {
        port: cluster.port(),
        root_ca,
    };
    common::drop_at_exit(cluster);
    servers.insert(key, server.clone());
    server
}

fn connect(conninfo: &str) -> Connection {
    Connection::connect(conninfo).unwrap_or_else(|e| panic!("{conninfo}: {e}"))
}

fn connect_err(conninfo: &str) -> pqlib::Error {
    match Connection::connect(conninfo) {
        Ok(conn) => panic!("{conninfo}: connected, expected an error: {conn:?}"),
        Err(e) => e,
    }
}

/// An async client for `conninfo`, its connection task spawned.
async fn connect_async(conninfo: &str) -> pqlib::Result<pqlib::tokio::Client> {
    let (client, connection) = pqlib::tokio::connect(conninfo).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    Ok(client)
}

/// The error of an async connect that must fail.
async fn connect_async_err(conninfo: &str) -> pqlib::Error {
    match connect_async(conninfo).await {
        Ok(_) => panic!("{conninfo}: the async client connected, expected an error"),
        Err(e) => e,
    }
}

fn assert_contains(error: &pqlib::Error, needle: &str) {
    let text = error.to_string();
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

/// The server's answer to whether this session is encrypted (`pg_stat_ssl`).
const SESSION_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

fn server_version_num(conn: &mut Connection) -> i32 {
    conn.query_one("SELECT current_setting('server_version_num')::int4", &[])
        .unwrap()
        .get(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// sslnegotiation=direct (libpq 17, server 17)

/// With `sslnegotiation=direct` libpq starts the TLS handshake at once, with ALPN
/// `postgresql`, instead of asking the server first. A server of 17 or newer takes it, with
/// `sslmode=require` and `verify-full`, from the blocking and the async client.
#[test]
fn sslnegotiation_direct_against_a_server_that_has_it() {
    if !common::libpq_at_least(17, "sslnegotiation=direct") {
        let e = connect_err("sslnegotiation=direct");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_contains(&e, "needs libpq 17");
        return;
    }
    let Some((major, bin_dir)) = common::server_at_least(17) else {
        return;
    };
    let server = server_in(&bin_dir, true);
    let modes = [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full sslrootcert={}", server.root_ca()),
    ];
    for mode in &modes {
        let conninfo = server.conninfo(&format!("sslnegotiation=direct {mode}"));
        let mut conn = connect(&conninfo);
        assert!(conn.ssl_in_use(), "{conninfo}");
        assert_eq!(
            conn.ssl_attribute("alpn").as_deref(),
            Some("postgresql"),
            "{conninfo}"
        );
        let ssl: bool = conn.query_one(SESSION_SSL, &[]).unwrap().get(0);
        assert!(ssl, "{conninfo}");
        assert!(server_version_num(&mut conn) >= i32::try_from(major * 10000).unwrap());
    }
    // The same through the Config builder.
    let mut config: Config = server.conninfo("").parse().unwrap();
    config
        .ssl_mode(SslMode::VerifyFull)
        .sslrootcert(server.root_ca())
        .ssl_negotiation(SslNegotiation::Direct);
    let conn = config.connect().unwrap();
    assert_eq!(conn.ssl_attribute("alpn").as_deref(), Some("postgresql"));

    let _deadline = common::deadline(common::TEST_DEADLINE);
    runtime().block_on(async {
        for mode in &modes {
            let conninfo = server.conninfo(&format!("sslnegotiation=direct {mode}"));
            let client = connect_async(&conninfo)
                .await
                .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
            let ssl: bool = client.query_one(SESSION_SSL, &[]).await.unwrap().get(0);
            assert!(ssl, "{conninfo}");
        }
    });
}

/// A server older than 17 reads the TLS ClientHello of `sslnegotiation=direct` as a broken
/// startup packet and hangs up: the connection fails with libpq's message, although the
/// same server takes TLS negotiated the traditional way.
#[test]
fn sslnegotiation_direct_against_server_15_fails() {
    if !common::libpq_at_least(17, "sslnegotiation=direct") {
        return;
    }
    let Some(bin_dir) = common::server_of(15) else {
        return;
    };
    let server = server_in(&bin_dir, true);
    let traditional = server.conninfo("sslmode=require sslnegotiation=postgres");
    assert!(connect(&traditional).ssl_in_use());

    let direct = server.conninfo("sslmode=require sslnegotiation=direct");
    let e = connect_err(&direct);
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    eprintln!("sslnegotiation=direct against server 15: {e}");
    assert_direct_refused(&e);

    let _deadline = common::deadline(common::TEST_DEADLINE);
    let e = runtime().block_on(connect_async_err(&direct));
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert_direct_refused(&e);
}

/// libpq's report of a server that hung up on a direct TLS handshake: OpenSSL 3 words the
/// end of the stream "unexpected eof while reading", older OpenSSL leaves it to libpq.
fn assert_direct_refused(e: &pqlib::Error) {
    let text = e.to_string();
    assert!(
        text.contains("SSL error: unexpected eof while reading")
            || text.contains("SSL SYSCALL error: EOF detected"),
        "not libpq's report of a server hanging up during the TLS handshake: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Protocol 3.2 (libpq 18, server 18)

/// libpq 18 asks for protocol 3.0 unless `max_protocol_version` says otherwise; a server 18
/// takes 3.2, an older one answers 3.0 (and the connection goes on with it).
#[test]
fn protocol_version_is_negotiated() {
    if !common::libpq_at_least(18, "protocol 3.2") {
        // Protocol 3.0 is all an older libpq speaks, and the options are unknown to it.
        let conn = connect(&common::conninfo());
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_0));
        let mut config: Config = common::conninfo().parse().unwrap();
        config.max_protocol_version(ProtocolVersion::V3_2);
        let e = config.connect().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_contains(&e, "\"max_protocol_version\" needs libpq 18");
        return;
    }
    let Some((_, bin_dir)) = common::server_at_least(18) else {
        return;
    };
    let server = server_in(&bin_dir, false);
    let conn = connect(&server.conninfo("max_protocol_version=3.2"));
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
    let conn = connect(&server.conninfo("max_protocol_version=latest"));
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
    let conn = connect(&server.conninfo("min_protocol_version=3.2"));
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
    let conn = connect(&server.conninfo(""));
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_0));

    // Through the Config builder.
    let mut config: Config = server.conninfo("").parse().unwrap();
    config.max_protocol_version(ProtocolVersion::V3_2);
    let mut conn = config.connect().unwrap();
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
    let one: i32 = conn.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    config.max_protocol_version(ProtocolVersion::V3_0);
    assert_eq!(
        config.connect().unwrap().protocol_version(),
        Some(ProtocolVersion::V3_0)
    );

    // A closed connection has none.
    let pid = conn.backend_pid();
    let mut killer = connect(&server.conninfo(""));
    let gone: bool = killer
        .query_one(
            "SELECT pg_terminate_backend($1, 10000)",
            &[&i32::try_from(pid).unwrap()],
        )
        .unwrap()
        .get(0);
    assert!(gone, "backend {pid} did not exit within 10 s");
    assert!(conn.query_one("SELECT 1", &[]).is_err());
    assert_eq!(conn.protocol_version(), None);

    if let Some(bin_dir) = common::server_of(17) {
        let old = server_in(&bin_dir, false);
        let conn = connect(&old.conninfo("max_protocol_version=3.2"));
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_0));
    }
}

/// `min_protocol_version=3.2` refuses a server that only speaks 3.0, with libpq's message.
#[test]
fn min_protocol_version_3_2_refuses_server_17() {
    if !common::libpq_at_least(18, "min_protocol_version") {
        let e = connect_err("min_protocol_version=3.2");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_contains(&e, "needs libpq 18");
        return;
    }
    let Some(bin_dir) = common::server_of(17) else {
        return;
    };
    let server = server_in(&bin_dir, false);
    let conninfo = server.conninfo("min_protocol_version=3.2");
    let e = connect_err(&conninfo);
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    eprintln!("min_protocol_version=3.2 against server 17: {e}");
    assert_min_refused(&e);

    let mut config: Config = server.conninfo("").parse().unwrap();
    config.min_protocol_version(ProtocolVersion::V3_2);
    assert_min_refused(&config.connect().unwrap_err());

    let _deadline = common::deadline(common::TEST_DEADLINE);
    let e = runtime().block_on(connect_async_err(&conninfo));
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert_min_refused(&e);
}

/// libpq's report of a server whose protocol is below `min_protocol_version`.
fn assert_min_refused(e: &pqlib::Error) {
    assert_contains(
        e,
        "server only supports protocol version 3.0, but \"min_protocol_version\" was set to 3.2",
    );
}

/// Under protocol 3.2 a server 18 hands out a 256-bit cancel key instead of a 32-bit one:
/// a statement cancelled from another thread ends with 57014, and the connection goes on.
#[test]
fn cancel_with_the_longer_protocol_3_2_key() {
    if !common::libpq_at_least(18, "protocol 3.2") {
        return;
    }
    let Some((_, bin_dir)) = common::server_at_least(18) else {
        return;
    };
    let server = server_in(&bin_dir, false);
    let mut conn = connect(&server.conninfo("max_protocol_version=3.2"));
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
    let pid = i32::try_from(conn.backend_pid()).unwrap();
    let token = conn.cancel_token();
    let observer_conninfo = server.conninfo("");
    let canceller = std::thread::spawn(move || {
        let mut observer = connect(&observer_conninfo);
        common::wait_until_active(&mut observer, pid);
        token.cancel_query()
    });
    let e = conn
        .batch_execute("SELECT pg_sleep(60)")
        .expect_err("pg_sleep(60) was not cancelled");
    canceller.join().unwrap().expect("cancel_query");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    assert_contains(&e, "user request");
    let one: i32 = conn.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::V3_2));
}

/// The same from the async client and its cancel token.
#[test]
fn async_cancel_with_the_longer_protocol_3_2_key() {
    if !common::libpq_at_least(18, "protocol 3.2") {
        return;
    }
    let Some((_, bin_dir)) = common::server_at_least(18) else {
        return;
    };
    let server = server_in(&bin_dir, false);
    let conninfo = server.conninfo("max_protocol_version=3.2");
    // The blocking client shows what this conninfo negotiates.
    assert_eq!(
        connect(&conninfo).protocol_version(),
        Some(ProtocolVersion::V3_2)
    );
    let _deadline = common::deadline(common::TEST_DEADLINE);
    runtime().block_on(async {
        let client = connect_async(&conninfo).await.unwrap();
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let sleeper = {
            let client = client.clone();
            tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(60)").await })
        };
        let observer_conninfo = server.conninfo("");
        tokio::task::spawn_blocking(move || {
            let mut observer = connect(&observer_conninfo);
            common::wait_until_active(&mut observer, pid);
        })
        .await
        .unwrap();
        client.cancel_token().cancel_query().await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(30), sleeper)
            .await
            .expect("the cancelled statement did not end within 30 s")
            .unwrap()
            .expect_err("pg_sleep(60) was not cancelled");
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
        assert_contains(&e, "user request");
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// load_balance_hosts=random (libpq 16)

/// Without `connect_timeout`, pqlib leaves the host order to libpq, whose own shuffle spreads
/// connections over two servers (`tests/multi_host.rs` covers pqlib's shuffle, used with a
/// timeout). An older libpq gets an error naming libpq 16, from both clients.
#[test]
fn load_balance_hosts_random_in_libpqs_own_shuffle() {
    let a = TempCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let b = TempCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         load_balance_hosts=random",
        a.port(),
        b.port()
    );
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let rt = runtime();
    if !common::libpq_at_least(16, "load_balance_hosts") {
        let e = connect_err(&conninfo);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_contains(&e, "\"load_balance_hosts\" needs libpq 16");
        let e = rt.block_on(connect_async_err(&conninfo));
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_contains(&e, "needs libpq 16");
        return;
    }
    let port_of = |conn: &mut Connection| -> u16 {
        let port: i32 = conn
            .query_one("SELECT current_setting('port')::int4", &[])
            .unwrap()
            .get(0);
        u16::try_from(port).unwrap()
    };
    // 40 connections: each server gets at least 5 unless the coin is badly unfair (a fair
    // one does worse with probability about 2e-7).
    const CONNECTIONS: usize = 40;
    let mut to_a = 0;
    for _ in 0..CONNECTIONS {
        let port = port_of(&mut connect(&conninfo));
        assert!(port == a.port() || port == b.port(), "{port}");
        to_a += usize::from(port == a.port());
    }
    assert!(
        (5..=CONNECTIONS - 5).contains(&to_a),
        "blocking: {to_a} of {CONNECTIONS} connections went to the first host"
    );
    let (a_port, b_port) = (a.port(), b.port());
    let to_a = rt.block_on(async {
        let mut to_a = 0;
        for _ in 0..CONNECTIONS {
            let client = connect_async(&conninfo).await.unwrap();
            let port: i32 = client
                .query_one("SELECT current_setting('port')::int4", &[])
                .await
                .unwrap()
                .get(0);
            let port = u16::try_from(port).unwrap();
            assert!(port == a_port || port == b_port, "{port}");
            to_a += usize::from(port == a_port);
        }
        to_a
    });
    assert!(
        (5..=CONNECTIONS - 5).contains(&to_a),
        "async: {to_a} of {CONNECTIONS} connections went to the first host"
    );
    // `disable` keeps the order given.
    let in_order = conninfo.replace("=random", "=disable");
    for _ in 0..5 {
        assert_eq!(port_of(&mut connect(&in_order)), a.port());
    }
}

// ---------------------------------------------------------------------------------------------
// The connection service (Connection::service)

const SERVICE_CHILD: &str = "PQLIB_SERVER_FEATURES_SERVICE_CHILD";

/// A service file names the test server twice (`alpha`, `beta`, each with its own
/// `application_name`); a child process (with `PGSERVICEFILE` and `PGSERVICE=beta`) connects
/// through them and checks what `Connection::service` reports.
#[test]
fn service_is_reported() {
    let Some(cluster) = common::own_cluster() else {
        return;
    };
    if std::env::var_os("PGSERVICE").is_none() {
        let conn = connect(&common::conninfo());
        assert_eq!(conn.service(), None);
    }
    let dir = std::env::temp_dir().join(format!("pqlib-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pg_service.conf");
    let entry = |name: &str| {
        format!(
            "[{name}]\nhost={}\nport={}\nuser=postgres\ndbname=postgres\n\
             application_name=from_{name}\n",
            cluster.socket_dir.display(),
            cluster.port
        )
    };
    std::fs::write(&file, entry("alpha") + "\n" + &entry("beta")).unwrap();
    let (ok, output) = common::run_child_test(
        "service_child",
        SERVICE_CHILD,
        &[
            ("PGSERVICEFILE", path_str(&file).to_owned()),
            ("PGSERVICE", "beta".to_owned()),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "child failed:\n{output}");
}

/// Not a test by itself: the body of the child process of `service_is_reported`.
#[test]
fn service_child() {
    if std::env::var_os(SERVICE_CHILD).is_none() {
        return;
    }
    let application_name = |conn: &mut Connection| -> String {
        conn.query_one("SELECT current_setting('application_name')", &[])
            .unwrap()
            .get(0)
    };
    // Named in the connection string.
    let mut conn = connect("service=alpha");
    assert_eq!(conn.service().as_deref(), Some("alpha"));
    assert_eq!(application_name(&mut conn), "from_alpha");
    // Through the Config builder; what the config sets wins over the service file.
    let mut config = Config::new();
    config.service("alpha").application_name("mine");
    let mut conn = config.connect().unwrap();
    assert_eq!(conn.service().as_deref(), Some("alpha"));
    assert_eq!(application_name(&mut conn), "mine");
    // From PGSERVICE.
    let mut conn = connect("");
    assert_eq!(conn.service().as_deref(), Some("beta"));
    assert_eq!(application_name(&mut conn), "from_beta");
    // A service the file does not have.
    let e = connect_err("service=gamma");
    assert_contains(&e, "definition of service \"gamma\" not found");
    println!("CHILD OK");
}
