//! `connect_timeout` and the host list, through both clients, checked against libpq's own
//! blocking connect (`PQconnectdb`, through `common::RawConn`): pqlib makes its connections
//! step by step (`PQconnectStartParams` + `PQconnectPoll`) and applies the timeout itself, so
//! it must give up, move on and word its errors exactly as libpq does.
//!
//! The unresponsive hosts are local: a listener nobody accepts from (the kernel completes the
//! TCP handshake, then nothing answers), and a listener whose accept queue is full (the kernel
//! drops the SYN: the TCP connect itself hangs).
#![cfg(unix)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pqlib::Connection;
use pqlib::error::ErrorKind;
use pqlib::tempdb::TempCluster;

/// The timeout the tests use, in libpq's whole seconds.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A loopback port whose listener never accepts: connections complete and then hang.
fn silent() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// A loopback listener with a full accept queue: a new TCP connect to it hangs in SYN_SENT.
struct FullBacklog {
    fd: libc::c_int,
    port: u16,
    _fillers: Vec<TcpStream>,
}

impl FullBacklog {
    /// `None` if the kernel does not behave so here (the queue never filled).
    fn new() -> Option<FullBacklog> {
        // SAFETY: plain socket creation; the fd is owned by the returned value (or closed).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut full = FullBacklog {
            fd,
            port: 0,
            _fillers: Vec::new(),
        };
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes.
        assert_eq!(unsafe { libc::bind(fd, (&raw const addr).cast(), len) }, 0);
        // SAFETY: a bound socket; backlog 0 lets one connection wait to be accepted.
        assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
        let mut bound = len;
        // SAFETY: `addr` has room for `bound` bytes.
        assert_eq!(
            unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut bound) },
            0
        );
        full.port = u16::from_be(addr.sin_port);
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, full.port));
        // Fill the queue until a connect no longer completes.
        for _ in 0..4 {
            match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                Ok(stream) => full._fillers.push(stream),
                Err(_) => return Some(full),
            }
        }
        None
    }
}

impl Drop for FullBacklog {
    fn drop(&mut self) {
        // SAFETY: the fd is ours, closed only here.
        unsafe { libc::close(self.fd) };
    }
}

/// The port of this binary's server on 127.0.0.1 (trust authentication for `postgres`).
fn good_port() -> u16 {
    common::cluster()
        .expect("these tests start their own servers (unset DATABASE_URL and PGHOST)")
        .port
}

/// What libpq's blocking connect says: `Ok(port)` of the server reached, or its message.
fn libpq(conninfo: &str) -> Result<String, String> {
    let conn = common::RawConn::connect(conninfo)?;
    Ok(conn
        .query_value("SELECT current_setting('port')")?
        .unwrap_or_default())
}

/// The same through pqlib's blocking client.
fn blocking(conninfo: &str) -> Result<String, pqlib::Error> {
    let mut conn = Connection::connect(conninfo)?;
    Ok(conn
        .query_one("SELECT current_setting('port')", &[])?
        .get::<_, String>(0))
}

/// The same through the async client.
fn nonblocking(conninfo: &str) -> Result<String, pqlib::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let test = async {
        let (client, connection) = pqlib::tokio::connect(conninfo).await?;
        let driver = tokio::spawn(connection);
        let port: String = client
            .query_one("SELECT current_setting('port')", &[])
            .await?
            .get(0);
        drop(client);
        driver.await.unwrap()?;
        Ok(port)
    };
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), test)
            .await
            .expect("the async client finishes within a minute")
    })
}

/// Connects with libpq and with both pqlib clients: the outcome (server reached, or error
/// message) is the same, and each takes about as long as libpq. Returns libpq's outcome and
/// time.
fn same_as_libpq(conninfo: &str) -> (Result<String, String>, Duration) {
    let started = Instant::now();
    let expected = libpq(conninfo);
    let libpq_took = started.elapsed();
    for (client, connect) in [
        (
            "blocking",
            blocking as fn(&str) -> Result<String, pqlib::Error>,
        ),
        ("async", nonblocking),
    ] {
        let started = Instant::now();
        let got = connect(conninfo);
        let took = started.elapsed();
        match (&expected, &got) {
            (Ok(port), Ok(got_port)) => assert_eq!(port, got_port, "{client}: {conninfo}"),
            (Err(message), Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Connect, "{client}: {e}");
                assert_eq!(e.code(), None);
                assert_eq!(
                    e.to_string(),
                    format!("connection failed: {}", message.trim_end()),
                    "{client}: {conninfo}"
                );
            }
            _ => panic!("{client}: libpq got {expected:?}, pqlib got {got:?}: {conninfo}"),
        }
        // Within a second of libpq (whose clock before version 17 counts whole seconds).
        assert!(
            took + Duration::from_millis(1100) >= libpq_took
                && took <= libpq_took + Duration::from_millis(1500),
            "{client} took {took:?}, libpq {libpq_took:?}: {conninfo}"
        );
    }
    (expected, libpq_took)
}

fn base() -> String {
    "user=postgres dbname=postgres connect_timeout=2".to_owned()
}

#[test]
fn a_silent_host_times_out_with_libpqs_message() {
    let (_listener, port) = silent();
    for sslmode in ["prefer", "disable"] {
        let conninfo = format!("host=127.0.0.1 port={port} sslmode={sslmode} {}", base());
        let (outcome, took) = same_as_libpq(&conninfo);
        let message = outcome.unwrap_err();
        assert_eq!(
            message,
            format!("connection to server at \"127.0.0.1\", port {port} failed: timeout expired\n")
        );
        assert!(took >= TIMEOUT - Duration::from_secs(1), "{took:?}");
        assert!(took < TIMEOUT + Duration::from_secs(2), "{took:?}");
    }
}

#[test]
fn a_one_second_timeout_is_what_the_linked_libpq_makes_of_it() {
    // libpq before 17 waits at least 2 s; libpq 17 and later take 1 s as 1 s.
    let (_listener, port) = silent();
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1 \
         sslmode=disable"
    );
    let (outcome, _) = same_as_libpq(&conninfo);
    assert!(outcome.unwrap_err().ends_with("timeout expired\n"));
    let started = Instant::now();
    blocking(&conninfo).unwrap_err();
    let took = started.elapsed();
    if pqlib::version().number() >= 170000 {
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1800),
            "{took:?}"
        );
    } else {
        assert!(took >= Duration::from_millis(1900), "{took:?}");
    }
}

#[test]
fn a_silent_host_then_a_good_one() {
    let (_listener, silent_port) = silent();
    let good = good_port();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={silent_port},{good} {}",
        base()
    );
    let (outcome, took) = same_as_libpq(&conninfo);
    assert_eq!(outcome, Ok(good.to_string()));
    assert!(took >= TIMEOUT - Duration::from_secs(1), "{took:?}");
    // Two silent hosts, then the good one: a timeout each.
    let (_second, second_port) = silent();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={silent_port},{second_port},{good} {}",
        base()
    );
    let (outcome, took) = same_as_libpq(&conninfo);
    assert_eq!(outcome, Ok(good.to_string()));
    assert!(took >= 2 * TIMEOUT - Duration::from_secs(2), "{took:?}");
}

#[test]
fn every_host_unresponsive_reports_each_attempt_as_libpq_does() {
    let (_listener, silent_port) = silent();
    let (_second, second_port) = silent();
    let refused = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
        // Dropped: nothing listens there any more.
    };
    let conninfo = format!(
        "host=127.0.0.1,/nonexistent-pqlib-dir,127.0.0.1,127.0.0.1 \
         port={silent_port},{refused},{refused},{second_port} {}",
        base()
    );
    let (outcome, _) = same_as_libpq(&conninfo);
    let message = outcome.unwrap_err();
    assert_eq!(message.matches("timeout expired").count(), 2, "{message}");
    assert!(message.contains("/nonexistent-pqlib-dir"), "{message}");
}

#[test]
fn a_hanging_tcp_connect_times_out_and_moves_on() {
    let Some(full) = FullBacklog::new() else {
        eprintln!("skipped: the accept queue did not fill");
        return;
    };
    let conninfo = format!("host=127.0.0.1 port={} {}", full.port, base());
    let (outcome, _) = same_as_libpq(&conninfo);
    assert_eq!(
        outcome.unwrap_err(),
        format!(
            "connection to server at \"127.0.0.1\", port {} failed: timeout expired\n",
            full.port
        )
    );
    let good = good_port();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{good} {}",
        full.port,
        base()
    );
    let (outcome, _) = same_as_libpq(&conninfo);
    assert_eq!(outcome, Ok(good.to_string()));
}

#[test]
fn load_balanced_hosts_each_get_the_timeout() {
    let (_listener, silent_port) = silent();
    let good = good_port();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={silent_port},{good} load_balance_hosts=random {}",
        base()
    );
    if pqlib::version().number() < 160000 {
        return; // load_balance_hosts is libpq 16's
    }
    // Whichever order is drawn, the good host is reached, after at most one timeout.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(blocking(&conninfo).unwrap(), good.to_string());
        assert_eq!(nonblocking(&conninfo).unwrap(), good.to_string());
        assert!(
            started.elapsed() < 2 * (TIMEOUT + Duration::from_secs(2)),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_server_error_on_the_first_host_ends_the_attempt_as_in_libpq() {
    // libpq does not try the next host once a server refused the session (here: no such
    // database on the first one), with or without connect_timeout.
    let only_second = TempCluster::start().unwrap();
    let mut setup = Connection::connect(&only_second.conninfo()).unwrap();
    setup.batch_execute("CREATE DATABASE only_second").unwrap();
    let first = good_port();
    for timeout in ["", "connect_timeout=2"] {
        let conninfo = format!(
            "host=127.0.0.1,127.0.0.1 port={first},{} user=postgres dbname=only_second {timeout}",
            only_second.port()
        );
        let (outcome, _) = same_as_libpq(&conninfo);
        let message = outcome.unwrap_err();
        assert!(
            message.contains("\"only_second\" does not exist"),
            "{message}"
        );
    }
    // While a host that cannot be reached is skipped.
    let conninfo = format!(
        "host=/nonexistent-pqlib-dir,127.0.0.1 port={} user=postgres dbname=only_second \
         connect_timeout=2",
        only_second.port()
    );
    let (outcome, _) = same_as_libpq(&conninfo);
    assert_eq!(outcome, Ok(only_second.port().to_string()));
}

#[test]
fn connect_timeout_values_are_read_as_libpq_reads_them() {
    let good = good_port();
    for value in ["0", "-1", " 5 ", "1"] {
        let conninfo = format!(
            "host=127.0.0.1 port={good} user=postgres dbname=postgres connect_timeout='{value}'"
        );
        let (outcome, _) = same_as_libpq(&conninfo);
        assert_eq!(outcome, Ok(good.to_string()), "{value:?}");
    }
    for value in ["abc", "5s", "99999999999"] {
        let conninfo = format!(
            "host=127.0.0.1 port={good} user=postgres dbname=postgres connect_timeout='{value}'"
        );
        let (outcome, _) = same_as_libpq(&conninfo);
        let message = outcome.unwrap_err();
        assert!(message.contains("connect_timeout"), "{value:?}: {message}");
    }
}
