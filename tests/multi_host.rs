//! Multi-host connection strings against a real primary and a real streaming standby.
//!
//! Each test starts its own primary (`TempCluster`) and a hot standby made from it with
//! `pg_basebackup --write-recovery-conf` (`TempClusterBuilder::standby_of`), both on loopback
//! and on their own unix sockets. What libpq decides (which host to take, when to move on) is
//! checked against what the server it reached says about itself: `pg_is_in_recovery()` and
//! the port it listens on.
#![cfg(unix)]

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use pqlib::config::{LoadBalanceHosts, TargetSessionAttrs};
use pqlib::error::ErrorKind;
use pqlib::tempdb::{TempCluster, TempClusterErrorKind};
use pqlib::{Config, Connection};

/// How long a condition that depends on the servers (replication, promotion) may take.
const SERVER_WAIT: Duration = Duration::from_secs(30);

/// A primary and a hot standby streaming from it.
struct Pair {
    primary: TempCluster,
    standby: TempCluster,
}

fn start_pair() -> Pair {
    let primary = TempCluster::start().unwrap_or_else(|e| panic!("primary: {e}"));
    let standby = TempCluster::builder()
        .standby_of(&primary)
        .start()
        .unwrap_or_else(|e| panic!("standby: {e}"));
    Pair { primary, standby }
}

/// The server a connection reached: the port it listens on, and whether it is a standby.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Reached {
    port: u16,
    in_recovery: bool,
}

fn reached(conn: &mut Connection) -> Reached {
    let row = conn
        .query_one(
            "SELECT current_setting('port')::int4, pg_is_in_recovery()",
            &[],
        )
        .expect("ask the server who it is");
    let port: i32 = row.get(0);
    Reached {
        port: u16::try_from(port).unwrap(),
        in_recovery: row.get(1),
    }
}

fn primary_of(pair: &Pair) -> Reached {
    Reached {
        port: pair.primary.port(),
        in_recovery: false,
    }
}

fn standby_of(pair: &Pair) -> Reached {
    Reached {
        port: pair.standby.port(),
        in_recovery: true,
    }
}

/// A `key=value` conninfo over TCP to these servers, in this order.
fn tcp(servers: &[&TempCluster], extra: &str) -> String {
    let hosts: Vec<&str> = servers.iter().map(|c| c.host()).collect();
    let ports: Vec<String> = servers.iter().map(|c| c.port().to_string()).collect();
    format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=5 {extra}",
        hosts.join(","),
        ports.join(",")
    )
}

/// As [`tcp`], over the servers' unix sockets.
fn unix(servers: &[&TempCluster], extra: &str) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|c| c.socket_dir().to_str().unwrap().to_owned())
        .collect();
    let ports: Vec<String> = servers.iter().map(|c| c.port().to_string()).collect();
    format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=5 {extra}",
        hosts.join(","),
        ports.join(",")
    )
}

fn connect(conninfo: &str) -> Connection {
    Connection::connect(conninfo).unwrap_or_else(|e| panic!("{conninfo}: {e}"))
}

fn connect_err(conninfo: &str) -> pqlib::Error {
    match Connection::connect(conninfo) {
        Ok(mut conn) => panic!("{conninfo}: connected to {:?}", reached(&mut conn)),
        Err(e) => e,
    }
}

/// Polls `condition` until it holds, failing the test after [`SERVER_WAIT`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SERVER_WAIT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {SERVER_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback TCP port that refuses connections: a socket bound to it that never listens.
/// Holding the port, unlike a closed listener's, keeps another server from taking it.
struct RefusingPort {
    fd: libc::c_int,
    port: u16,
}

impl RefusingPort {
    fn new() -> RefusingPort {
        // SAFETY: plain socket creation; the fd is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // Closes the fd if an assertion below fails.
        let mut refusing = RefusingPort { fd, port: 0 };
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for the call.
        let rc = unsafe { libc::bind(fd, (&raw const addr).cast(), len) };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut bound_len = len;
        // SAFETY: `addr` has room for `bound_len` bytes, which the kernel updates.
        let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut bound_len) };
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        refusing.port = u16::from_be(addr.sin_port);
        refusing
    }
}

impl Drop for RefusingPort {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed only here.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn read_write_finds_the_primary_in_either_order() {
    let pair = start_pair();
    let (p, s) = (&pair.primary, &pair.standby);
    let rw = "target_session_attrs=read-write";

    for conninfo in [
        tcp(&[p, s], rw),
        tcp(&[s, p], rw),
        unix(&[p, s], rw),
        unix(&[s, p], rw),
        // `primary` asks the same through the server's role, not the session's default.
        tcp(&[s, p], "target_session_attrs=primary"),
        format!(
            "postgresql://postgres@{}:{},{}:{}/postgres?target_session_attrs=read-write",
            s.host(),
            s.port(),
            p.host(),
            p.port()
        ),
    ] {
        let mut conn = connect(&conninfo);
        assert_eq!(reached(&mut conn), primary_of(&pair), "{conninfo}");
        // It really takes writes.
        conn.batch_execute("CREATE TEMP TABLE written (x int4); INSERT INTO written VALUES (1)")
            .unwrap();
    }

    // The same through the builder: each host() and port() call adds one list entry.
    let mut config = Config::new();
    config
        .host(s.host())
        .port(s.port())
        .host(p.host())
        .port(p.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .target_session_attrs(TargetSessionAttrs::ReadWrite);
    let mut conn = config.connect().unwrap();
    assert_eq!(reached(&mut conn), primary_of(&pair));

    // Only the standby: nothing qualifies, and libpq says why.
    let e = connect_err(&tcp(&[s], rw));
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = connect_err(&tcp(&[s], "target_session_attrs=primary"));
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("hot standby"), "{e}");
}

#[test]
fn standby_prefer_standby_and_read_only_pick_the_standby() {
    let pair = start_pair();
    let (p, s) = (&pair.primary, &pair.standby);

    for attrs in ["standby", "prefer-standby", "read-only"] {
        let extra = format!("target_session_attrs={attrs}");
        for conninfo in [
            tcp(&[p, s], &extra),
            tcp(&[s, p], &extra),
            unix(&[p, s], &extra),
        ] {
            let mut conn = connect(&conninfo);
            assert_eq!(reached(&mut conn), standby_of(&pair), "{conninfo}");
            // A standby session cannot write.
            let e = conn
                .batch_execute("CREATE TEMP TABLE t (x int4)")
                .unwrap_err();
            assert_eq!(
                e.code(),
                Some(&pqlib::error::SqlState::READ_ONLY_SQL_TRANSACTION),
                "{e}"
            );
        }
    }

    // `any` (the default) takes the first host that answers, whatever it is.
    let mut conn = connect(&tcp(&[s, p], "target_session_attrs=any"));
    assert_eq!(reached(&mut conn), standby_of(&pair));
    let mut conn = connect(&tcp(&[p, s], ""));
    assert_eq!(reached(&mut conn), primary_of(&pair));

    // prefer-standby falls back to a primary when no standby is reachable, also after a
    // dead host.
    let dead = RefusingPort::new();
    let mut conn = connect(&tcp(&[p], "target_session_attrs=prefer-standby"));
    assert_eq!(reached(&mut conn), primary_of(&pair));
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         target_session_attrs=prefer-standby",
        dead.port,
        p.port()
    );
    let mut conn = connect(&conninfo);
    assert_eq!(reached(&mut conn), primary_of(&pair));

    // standby does not.
    let e = connect_err(&tcp(&[p], "target_session_attrs=standby"));
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("not in hot standby"), "{e}");

    // read-only is about the session, not the server: a primary session that defaults to
    // read-only transactions qualifies, and then fails read-write.
    let ro_primary = "options='-c default_transaction_read_only=on'";
    let mut conn = connect(&tcp(
        &[p],
        &format!("target_session_attrs=read-only {ro_primary}"),
    ));
    assert_eq!(reached(&mut conn), primary_of(&pair));
    let e = connect_err(&tcp(
        &[p],
        &format!("target_session_attrs=read-write {ro_primary}"),
    ));
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[test]
fn dead_first_host_falls_through_within_connect_timeout() {
    let pair = start_pair();
    let p = &pair.primary;
    let port = p.port();
    // libpq counts connect_timeout in whole seconds and waits at least 2 s.
    let timeout = Duration::from_secs(2);
    let base = "user=postgres dbname=postgres connect_timeout=2 target_session_attrs=read-write";

    // The baseline: connecting to the primary directly, the best of three. A host that is
    // refused or missing must cost next to nothing on top of it; one whose timeout was waited
    // out would add at least a second (libpq before 17 counts whole seconds), so the fall-
    // through may take at most `direct + 1 s` (the second is the margin for a loaded machine).
    let direct = (0..3)
        .map(|_| {
            let started = Instant::now();
            drop(connect(&format!("host=127.0.0.1 port={port} {base}")));
            started.elapsed()
        })
        .min()
        .unwrap();
    let fall_through_bound = direct + Duration::from_secs(1);

    // A closed loopback port: refused at once.
    let refusing = RefusingPort::new();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{port} {base}",
        refusing.port
    );
    let started = Instant::now();
    let mut conn = connect(&conninfo);
    let elapsed = started.elapsed();
    assert_eq!(reached(&mut conn), primary_of(&pair));
    assert!(
        elapsed < fall_through_bound,
        "took {elapsed:?} (direct connect {direct:?}): {conninfo}"
    );

    // A socket directory that does not exist: the same.
    let conninfo = format!(
        "host=/nonexistent-pqlib-socket-dir,{} port={port},{port} {base}",
        p.socket_dir().display()
    );
    let started = Instant::now();
    let mut conn = connect(&conninfo);
    let elapsed = started.elapsed();
    assert_eq!(reached(&mut conn), primary_of(&pair));
    assert!(
        elapsed < fall_through_bound,
        "took {elapsed:?} (direct connect {direct:?}): {conninfo}"
    );

    // A host that accepts the TCP connection but never answers (a listener nobody accepts
    // from: the kernel completes the handshake): connect_timeout is what moves libpq on.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let conninfo = format!("host=127.0.0.1,127.0.0.1 port={silent_port},{port} {base}");
    let started = Instant::now();
    let mut conn = connect(&conninfo);
    let elapsed = started.elapsed();
    assert_eq!(reached(&mut conn), primary_of(&pair));
    // libpq before 17 measures the timeout with time(), to the whole second, so it may give
    // up up to a second early; later ones wait the full time.
    assert!(
        elapsed >= timeout - Duration::from_secs(1),
        "gave up on the silent host after only {elapsed:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(3),
        "took {elapsed:?} with connect_timeout=2"
    );

    // Every host dead: one error that reports each attempt, still bounded by the timeout
    // per host.
    let conninfo = format!(
        "host=127.0.0.1,/nonexistent-pqlib-socket-dir,127.0.0.1 port={},{port},{silent_port} \
         {base}",
        refusing.port
    );
    let started = Instant::now();
    let e = connect_err(&conninfo);
    let elapsed = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Connect);
    let message = e.to_string();
    for needle in [
        format!("port {}", refusing.port),
        "/nonexistent-pqlib-socket-dir".to_owned(),
        format!("port {silent_port}"),
    ] {
        assert!(
            message.contains(&needle),
            "{needle:?} missing from: {message}"
        );
    }
    assert!(
        elapsed < timeout + Duration::from_secs(3),
        "took {elapsed:?}: {message}"
    );
    drop(silent);
}

#[test]
fn read_write_reaches_the_promoted_standby_after_failover() {
    let Pair { primary, standby } = start_pair();
    let standby_port = standby.port();
    let standby_socket = standby.socket_dir().to_owned();
    // Unix sockets: the stopped primary's directory is removed, so its address cannot be
    // taken over by a server another test starts meanwhile (a TCP port could).
    let rw = unix(&[&primary, &standby], "target_session_attrs=read-write");
    let any_standby = unix(&[&standby], "");

    let mut conn = connect(&rw);
    assert_eq!(reached(&mut conn).port, primary.port());
    conn.batch_execute("CREATE TABLE failover (x int4); INSERT INTO failover VALUES (1)")
        .unwrap();
    drop(conn);

    // Streaming replication works: the row shows up on the standby.
    let mut on_standby = connect(&any_standby);
    wait_for("the row to replicate to the standby", || {
        on_standby
            .query_opt("SELECT x FROM failover", &[])
            .is_ok_and(|row| row.is_some_and(|row| row.get::<_, i32>(0) == 1))
    });

    primary.stop().expect("stop the primary");
    // No read-write server is left: the dead primary fails, the standby is read-only.
    let e = connect_err(&rw);
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.to_string().contains("read-only"), "{e}");

    // Promote, and wait until the standby has left recovery.
    let promoted: bool = on_standby
        .query_one("SELECT pg_promote(wait => false)", &[])
        .unwrap()
        .get(0);
    assert!(promoted);
    wait_for("the standby to leave recovery", || {
        !on_standby
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get::<_, bool>(0)
    });

    // The same conninfo now reaches the new primary, which takes writes.
    let started = Instant::now();
    let mut conn = connect(&rw);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        reached(&mut conn),
        Reached {
            port: standby_port,
            in_recovery: false
        }
    );
    conn.batch_execute("INSERT INTO failover VALUES (2)")
        .unwrap();
    let n: i64 = conn
        .query_one("SELECT count(*) FROM failover", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert!(standby_socket.exists());
    standby.stop().unwrap();
}

#[test]
fn load_balance_hosts_random_spreads_connections() {
    let pair = start_pair();
    let (p, s) = (&pair.primary, &pair.standby);
    let mut config = Config::new();
    config
        .host(p.host())
        .port(p.port())
        .host(s.host())
        .port(s.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .load_balance_hosts(LoadBalanceHosts::Random);
    let conninfo = tcp(&[p, s], "load_balance_hosts=random");

    if pqlib::version().major < 16 {
        // pqlib names the libpq release that has the option instead of libpq's "invalid
        // connection option".
        let e = config.connect().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        let message = e.to_string();
        assert!(
            message.contains("load_balance_hosts") && message.contains("libpq 16"),
            "{message}"
        );
        // A conninfo string fails earlier, in libpq's own parser, and gets the same error.
        let e = connect_err(&conninfo);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("libpq 16"), "{e}");
        return;
    }

    // 2 hosts, 60 connections: each gets at least 10 unless libpq picks the same host
    // nearly every time (a fair coin does that with probability about 1e-7).
    const CONNECTIONS: usize = 60;
    let mut to_primary = 0;
    for i in 0..CONNECTIONS {
        let mut conn = if i % 2 == 0 {
            config.connect().unwrap()
        } else {
            connect(&conninfo)
        };
        let server = reached(&mut conn);
        if server == primary_of(&pair) {
            to_primary += 1;
        } else {
            assert_eq!(server, standby_of(&pair));
        }
    }
    let to_standby = CONNECTIONS - to_primary;
    assert!(
        to_primary >= 10 && to_standby >= 10,
        "{to_primary} connections to the primary, {to_standby} to the standby"
    );

    // `disable` (the default) keeps the order given.
    config.load_balance_hosts(LoadBalanceHosts::Disable);
    for _ in 0..10 {
        let mut conn = config.connect().unwrap();
        assert_eq!(reached(&mut conn), primary_of(&pair));
    }

    // With random order, target_session_attrs still decides: always the primary.
    config
        .load_balance_hosts(LoadBalanceHosts::Random)
        .target_session_attrs(TargetSessionAttrs::ReadWrite);
    for _ in 0..10 {
        let mut conn = config.connect().unwrap();
        assert_eq!(reached(&mut conn), primary_of(&pair));
    }
}

#[test]
fn standby_of_an_unreachable_primary_reports_pg_basebackup_output() {
    let primary = TempCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let builder = TempCluster::builder()
        .standby_of(&primary)
        .start_timeout(Duration::from_secs(20));
    primary.stop().unwrap();
    let started = Instant::now();
    let e = builder.start().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(e.kind(), TempClusterErrorKind::BaseBackup, "{e}");
    let message = e.to_string();
    assert!(message.contains("pg_basebackup failed"), "{message}");
    // pg_basebackup's own words about the connection it could not make.
    assert!(message.contains("connection to server"), "{message}");
}
