//! Faults, against real servers, for the blocking `Connection`: backends terminated in every
//! state a connection can be in, servers stopped (fast and immediate shutdown) and restarted,
//! a loopback proxy that cuts connections, a dead network (every packet dropped, in a network
//! namespace of the test's own) for `connect_timeout`, `keepalives*` and `tcp_user_timeout`,
//! `statement_timeout`, cancel requests racing query completion, and dropping work in flight.
//!
//! Every wait is bounded: an operation that should fail fast runs under
//! [`common::bounded`], so a hang fails the test instead of stalling the suite.
//!
//! Other files already cover: a terminated idle backend and `reset` (tests/errors.rs), inside
//! a transaction (tests/errors.rs), mid-COPY in and out (tests/copy.rs), mid-pipeline
//! (tests/pipeline.rs), while waiting for notifications (tests/notifications.rs).
#![cfg(unix)]

mod common;

use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};
use pqlib::tempdb::TempCluster;
use pqlib::{Connection, TransactionStatus};

use common::{Proxy, Upstream, bounded};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// How long a fault may take to surface as an error.
const PROMPT: Duration = Duration::from_secs(10);

/// What the fault tests claim (docs/reliability.md §1): a busy call fails within this time of
/// the fault (the backend's exit, the signal to the postmaster). Measured: 5–60 ms; the margin
/// is for a shared 2-core machine that deschedules the test for a while, and the bound is
/// still 30 times shorter than the 60 s statements a missed fault would wait for.
const FAULT_TO_ERROR: Duration = Duration::from_secs(2);

/// The `pqlib::Error` inside an `io::Error` from a COPY reader or writer.
fn inner(e: &std::io::Error) -> &pqlib::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<pqlib::Error>())
        .unwrap_or_else(|| panic!("an io::Error without a pqlib::Error inside: {e:?}"))
}

fn io_to_pq(e: std::io::Error) -> pqlib::Error {
    match e.into_inner().map(|inner| inner.downcast::<pqlib::Error>()) {
        Some(Ok(inner)) => *inner,
        other => panic!("an io::Error without a pqlib::Error inside: {other:?}"),
    }
}

fn assert_closed(what: &str, result: &Result<(), pqlib::Error>) {
    match result {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Closed, "{what}: {e:?}");
            assert!(e.is_closed(), "{what}: {e:?}");
        }
        Ok(()) => panic!("{what}: succeeded, expected a closed connection"),
    }
}

fn assert_works(conn: &mut Connection) {
    let n: i32 = conn
        .query_one("SELECT $1::int4 + 1", &[&41i32])
        .expect("the connection works")
        .get(0);
    assert_eq!(n, 42);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

/// What a connection is busy with when the fault strikes.
#[derive(Clone, Copy, Debug)]
enum Busy {
    /// A statement running on the server (`pg_sleep`).
    Query,
    /// Reading a endless `query_raw` stream.
    RowStream,
    /// Writing an endless `COPY … FROM STDIN`.
    CopyIn,
    /// Reading an endless `COPY … TO STDOUT`.
    CopyOut,
    /// Reading an endless binary `COPY … TO STDOUT` through `BinaryCopyOutIter`.
    BinaryCopyOut,
    /// Waiting for a pipeline's results (`pg_sleep` then more statements).
    Pipeline,
    /// Inside a transaction, running a statement.
    Transaction,
}

const ALL_BUSY: [Busy; 7] = [
    Busy::Query,
    Busy::RowStream,
    Busy::CopyIn,
    Busy::CopyOut,
    Busy::BinaryCopyOut,
    Busy::Pipeline,
    Busy::Transaction,
];

/// Runs `busy` on `conn` until it fails (none of them ends by itself within a minute).
fn run_busy(conn: &mut Connection, busy: Busy) -> Result<(), pqlib::Error> {
    match busy {
        Busy::Query => conn.batch_execute("SELECT pg_sleep(60)"),
        Busy::RowStream => {
            let mut stream = conn.query_raw(
                "SELECT g, repeat('x', 100) FROM (SELECT generate_series(1, 2000000000) AS g) s",
                std::iter::empty::<i32>(),
            )?;
            loop {
                match stream.next_row() {
                    Some(Ok(row)) => {
                        let _: i32 = row.get(0);
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        }
        Busy::CopyIn => {
            conn.batch_execute("CREATE TEMP TABLE IF NOT EXISTS fault_sink (x int4)")?;
            let mut writer = conn.copy_in("COPY fault_sink FROM STDIN")?;
            let chunk = "12345\n".repeat(10_000);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                writer.write_all(chunk.as_bytes()).map_err(io_to_pq)?;
                writer.flush().map_err(io_to_pq)?;
            }
            writer.finish().map(drop)
        }
        Busy::CopyOut => {
            let mut reader =
                conn.copy_out("COPY (SELECT generate_series(1, 2000000000)) TO STDOUT")?;
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_to_pq)?;
            Ok(())
        }
        Busy::BinaryCopyOut => {
            use pqlib::binary_copy::BinaryCopyOutIter;
            use pqlib::types::Type;
            let reader = conn.copy_out(
                "COPY (SELECT generate_series(1, 2000000000), 'row'::text) TO STDOUT (FORMAT binary)",
            )?;
            for row in BinaryCopyOutIter::new(reader, &[Type::INT4, Type::TEXT]) {
                let _: i32 = row?.get(0);
            }
            Ok(())
        }
        Busy::Pipeline => {
            let sleep = conn.prepare("SELECT pg_sleep(60)")?;
            let one = conn.prepare("SELECT 1")?;
            let mut pipeline = conn.pipeline()?;
            pipeline.query(&sleep, &[])?;
            pipeline.query(&one, &[])?;
            pipeline.sync()?;
            pipeline.query(&one, &[])?;
            pipeline.sync()?;
            let mut first_error = None;
            while let Some(result) = pipeline.next_result() {
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
            drop(pipeline);
            first_error.map_or(Ok(()), Err)
        }
        Busy::Transaction => {
            let mut tx = conn.transaction()?;
            tx.execute("SELECT 1", &[])?;
            tx.batch_execute("SELECT pg_sleep(60)")?;
            tx.commit()
        }
    }
}

/// A busy call on its own thread; it ends with the connection, the call's result and when
/// the call returned.
type BusyThread = thread::JoinHandle<(Connection, Result<(), pqlib::Error>, Instant)>;

/// Starts `busy` on a thread and waits (at most 10 s, polling `pg_stat_activity` through
/// `observer`) until the server is running it.
fn start_busy(mut conn: Connection, busy: Busy, observer: &mut Connection) -> BusyThread {
    let pid = i32::try_from(conn.backend_pid()).unwrap();
    let worker = thread::spawn(move || {
        let result = run_busy(&mut conn, busy);
        (conn, result, Instant::now())
    });
    common::wait_until_active(observer, pid);
    worker
}

/// Joins a busy thread, failing if it takes longer than [`PROMPT`] or if its call returned
/// `within` or later after `fault` (the moment the fault was injected). Returns the
/// connection, the call's result and how long after the fault it returned.
fn join_busy(
    busy: Busy,
    worker: BusyThread,
    fault: Instant,
    within: Duration,
) -> (Connection, Result<(), pqlib::Error>, Duration) {
    let (conn, result, returned) =
        bounded(&format!("{busy:?} after the fault"), PROMPT, move || {
            worker.join().expect("the busy thread panicked")
        });
    let after = returned.saturating_duration_since(fault);
    eprintln!("{busy:?}: failed {after:?} after the fault: {result:?}");
    assert!(
        after < within,
        "{busy:?}: the call returned {after:?} after the fault (bound: {within:?})"
    );
    (conn, result, after)
}

// ---------------------------------------------------------------------------------------------
// pg_terminate_backend in every state.

/// The backend is terminated while the connection is busy in each way: the busy call fails
/// with an error of kind `Closed` within 10 s (no panic, no hang), the connection says it is
/// closed, and `reset()` gives a working session again.
#[test]
fn terminated_backend_in_every_busy_state_is_closed_and_reset_recovers() {
    let mut observer = connect();
    let mut failures = Vec::new();
    for busy in ALL_BUSY {
        let conn = connect();
        let pid = conn.backend_pid();
        let worker = start_busy(conn, busy, &mut observer);
        let fault = Instant::now();
        common::terminate_backend(pid);
        let (mut conn, result, _) = join_busy(busy, worker, fault, FAULT_TO_ERROR);
        if !matches!(&result, Err(e) if e.kind() == ErrorKind::Closed) {
            failures.push(format!("{busy:?}: {result:?}"));
        }
        assert!(conn.is_closed(), "{busy:?}: is_closed after the fault");
        let e = conn.query_one("SELECT 1", &[]).unwrap_err();
        if e.kind() != ErrorKind::Closed {
            failures.push(format!("{busy:?}: the next call: {e:?}"));
        }
        conn.reset().expect("reset after the fault");
        assert_ne!(conn.backend_pid(), pid);
        assert_works(&mut conn);
    }
    assert!(
        failures.is_empty(),
        "not reported as ErrorKind::Closed:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The server stopped, then started again.

/// A server of its own (stopping it must not disturb the other tests).
fn private_cluster() -> TempCluster {
    TempCluster::builder()
        .start()
        .unwrap_or_else(|e| panic!("starting a private cluster: {e}"))
}

/// Stops a private server with `signal` while one connection is idle and one is busy in each
/// way; every one fails with `Closed` within 10 s. Then starts the server again on the same
/// directory and port: `reset()` recovers every connection.
fn server_stopped_and_restarted(signal: libc::c_int) {
    let cluster = private_cluster();
    let conninfo = cluster.conninfo();
    let mut observer = Connection::connect(&conninfo).unwrap();
    let mut idle = Connection::connect(&conninfo).unwrap();
    assert_works(&mut idle);
    let mut notices = Vec::new();
    let (notice_tx, notice_rx) = mpsc::channel();
    idle.set_notice_handler(move |notice| {
        let _ = notice_tx.send(notice.message().to_owned());
    });
    let workers: Vec<(Busy, BusyThread)> = ALL_BUSY
        .iter()
        .map(|&busy| {
            let conn = Connection::connect(&conninfo).unwrap();
            (busy, start_busy(conn, busy, &mut observer))
        })
        .collect();
    drop(observer);

    let stopped = Instant::now();
    common::stop_cluster_with(&cluster, signal);
    eprintln!("server stopped in {:?}", stopped.elapsed());

    let mut failures = Vec::new();
    let mut busy_conns = Vec::new();
    for (busy, worker) in workers {
        let (conn, result, _) = join_busy(busy, worker, stopped, FAULT_TO_ERROR);
        if !matches!(&result, Err(e) if e.kind() == ErrorKind::Closed) {
            failures.push(format!("{busy:?}: {result:?}"));
        }
        assert!(conn.is_closed(), "{busy:?}: is_closed");
        busy_conns.push(conn);
    }
    let e = bounded("a query on the idle connection", PROMPT, move || {
        let e = idle.query_one("SELECT 1", &[]).unwrap_err();
        (idle, e)
    });
    let (mut idle, e) = e;
    if e.kind() != ErrorKind::Closed {
        let again = idle.query_one("SELECT 1", &[]).unwrap_err();
        failures.push(format!(
            "the idle connection's next call: {e:?} (is_closed: {}; the call after: {:?})",
            idle.is_closed(),
            again.kind()
        ));
    }
    notices.extend(notice_rx.try_iter());
    eprintln!("notices on the idle connection: {notices:?}");
    // Nothing to reconnect to yet: reset reports a connection error, and does not hang.
    let e = idle.reset().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e:?}");

    let restarted = common::restart_cluster(&cluster);
    eprintln!("server restarted (pid {})", restarted.pid());
    idle.reset().expect("reset after the restart");
    assert_works(&mut idle);
    for mut conn in busy_conns {
        conn.reset().expect("reset after the restart");
        assert_works(&mut conn);
    }
    let mut fresh = Connection::connect(&conninfo).unwrap();
    assert_works(&mut fresh);
    assert!(
        failures.is_empty(),
        "not reported as ErrorKind::Closed:\n{}",
        failures.join("\n")
    );
    drop((idle, fresh));
    drop(restarted);
    drop(cluster);
}

#[test]
fn server_fast_shutdown_then_restart() {
    if common::own_cluster().is_none() {
        return;
    }
    server_stopped_and_restarted(libc::SIGINT);
}

#[test]
fn server_immediate_shutdown_then_restart() {
    if common::own_cluster().is_none() {
        return;
    }
    server_stopped_and_restarted(libc::SIGQUIT);
}

// ---------------------------------------------------------------------------------------------
// A proxy that cuts connections, or never answers.

/// A proxy that accepts the TCP connection and never answers: `connect_timeout` ends the
/// attempt after that many seconds with an error of kind `Connect`.
#[test]
fn connect_timeout_ends_a_connect_to_a_silent_server() {
    let proxy = Proxy::start(Upstream::Silent);
    let conninfo = proxy.conninfo("connect_timeout=2");
    let started = Instant::now();
    let e = bounded(
        "connecting to a silent server",
        Duration::from_secs(20),
        move || Connection::connect(&conninfo).unwrap_err(),
    );
    let elapsed = started.elapsed();
    eprintln!("connect_timeout=2 against a silent server: {elapsed:?}: {e}");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e:?}");
    assert!(proxy.accepted() >= 1, "the TCP connection was accepted");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
}

fn proxied(extra: &str) -> Option<(Proxy, Connection)> {
    let port = common::own_cluster()?.port;
    let proxy = Proxy::start(Upstream::Tcp(port));
    let conn = Connection::connect(&proxy.conninfo(extra)).expect("connecting through the proxy");
    Some((proxy, conn))
}

/// The proxy shuts both sockets down while a statement runs: the statement fails with
/// `Closed` at once, and `reset()` connects again (through the same proxy).
#[test]
fn a_cut_connection_fails_the_statement_in_flight() {
    let Some((proxy, conn)) = proxied("") else {
        return;
    };
    let mut observer = connect();
    for busy in [Busy::Query, Busy::CopyOut, Busy::CopyIn] {
        let worker = start_busy(conn_through(&proxy), busy, &mut observer);
        let fault = Instant::now();
        proxy.cut();
        let (mut conn, result, _) = join_busy(busy, worker, fault, FAULT_TO_ERROR);
        assert_closed(&format!("{busy:?} through a cut proxy"), &result);
        conn.reset().expect("reset through the proxy");
        assert_works(&mut conn);
    }
    drop(conn);
}

fn conn_through(proxy: &Proxy) -> Connection {
    Connection::connect(&proxy.conninfo("")).expect("connecting through the proxy")
}

/// Cut while idle: the next statement fails with `Closed`; the one after `reset` works.
#[test]
fn a_cut_idle_connection_fails_the_next_statement() {
    let Some((proxy, mut conn)) = proxied("") else {
        return;
    };
    assert_works(&mut conn);
    proxy.cut();
    let (mut conn, result) = bounded("a query on a cut connection", PROMPT, move || {
        let result = conn.batch_execute("SELECT 1");
        (conn, result)
    });
    assert_closed("the next statement", &result);
    assert!(conn.is_closed());
    conn.reset().unwrap();
    assert_works(&mut conn);
}

/// A stalled proxy (it stops moving bytes but keeps its sockets open) is not a dead network:
/// its kernel still acknowledges data and answers keepalive probes, so neither `keepalives*`
/// nor `tcp_user_timeout` ends the wait; that is as documented (they detect an unreachable
/// peer, not a stuck one). The statement is still waiting after 3 s with keepalives at 1 s;
/// cutting the connection then ends it with `Closed` at once. To bound waits on a stuck
/// peer, use `statement_timeout` server-side or a `CancelToken` and timer client-side.
#[test]
fn a_stalled_proxy_keeps_the_statement_waiting_until_the_connection_is_cut() {
    let Some((proxy, mut conn)) = proxied(
        "keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=1 \
         tcp_user_timeout=1000",
    ) else {
        return;
    };
    assert_works(&mut conn);
    proxy.stall();
    let worker = thread::spawn(move || {
        let result = conn.query_one("SELECT 1::int4", &[]).map(drop);
        (conn, result)
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            !worker.is_finished(),
            "the wait ended: {:?}",
            worker.join().map(|r| r.1)
        );
        thread::sleep(Duration::from_millis(50));
    }
    proxy.cut();
    let (mut conn, result) = bounded("the stalled statement after the cut", PROMPT, move || {
        worker.join().unwrap()
    });
    assert_closed("the stalled statement", &result);
    proxy.resume();
    conn.reset().unwrap();
    assert_works(&mut conn);
}

// ---------------------------------------------------------------------------------------------
// A dead network, in a network namespace of the test's own: every packet dropped by a queue
// of length 0 (`common::drop_all_packets`), or the loopback interface taken down
// (`common::loopback_down`) where keepalive probes must count as sent (a locally dropped probe
// counts as congestion and is retried forever).

/// What a dead-network child checks; `name` is the test function that runs it.
fn run_netns_child(name: &str, flag: &str) {
    // An external server may not be reachable from another namespace.
    if std::env::var_os(flag).is_none() && common::own_cluster().is_none() {
        return;
    }
    match common::run_child_in_netns(name, flag) {
        None => common::skip("network namespaces are not available (needs root and unshare)"),
        Some((ok, output)) => {
            eprintln!("{output}");
            assert!(ok, "the child failed:\n{output}");
        }
    }
}

/// In the child: a proxy on the namespace's loopback to the server's unix socket, and a
/// connection through it with `options`.
fn netns_setup(options: &str) -> (Proxy, Connection) {
    common::netns_loopback_up();
    let socket = unix_socket_from_url();
    let proxy = Proxy::start(Upstream::Unix(socket));
    let mut conn =
        Connection::connect(&proxy.conninfo(options)).expect("connecting through the proxy");
    assert_works(&mut conn);
    (proxy, conn)
}

/// The connection's socket (libpq keeps it open while the connection lives).
fn socket_of(conn: &Connection) -> std::os::fd::RawFd {
    // SAFETY: the PGconn is alive while `conn` is; PQsocket only reads.
    let fd = unsafe { pqlib_sys::PQsocket(conn.as_ptr()) };
    assert!(fd >= 0);
    fd
}

/// The server's unix socket, from the `DATABASE_URL` the parent passed (`host=<dir>
/// port=<port> …`).
fn unix_socket_from_url() -> std::path::PathBuf {
    let config: pqlib::Config = common::conninfo().parse().unwrap();
    let dir = config.get("host").expect("a host in DATABASE_URL");
    let port = config.get("port").expect("a port in DATABASE_URL");
    std::path::Path::new(dir).join(format!(".s.PGSQL.{port}"))
}

/// `tcp_user_timeout=1000`: a statement sent into a dead network is never acknowledged, so
/// the kernel gives up on the connection after about a second and the statement fails with
/// `Closed`.
#[test]
fn tcp_user_timeout_ends_a_statement_sent_into_a_dead_network() {
    run_netns_child(
        "tcp_user_timeout_child",
        "PQLIB_FAULTS_TCP_USER_TIMEOUT_CHILD",
    );
}

#[test]
#[ignore = "run by tcp_user_timeout_ends_a_statement_sent_into_a_dead_network"]
fn tcp_user_timeout_child() {
    if std::env::var_os("PQLIB_FAULTS_TCP_USER_TIMEOUT_CHILD").is_none() {
        return;
    }
    let (_proxy, conn) = netns_setup("tcp_user_timeout=1000");
    common::drop_all_packets();
    let started = Instant::now();
    let (_conn, result) = bounded("a statement into a dead network", PROMPT, move || {
        let mut conn = conn;
        let result = conn.batch_execute("SELECT 1");
        (conn, result)
    });
    let elapsed = started.elapsed();
    println!(
        "tcp_user_timeout=1000, statement sent into a dead network: failed after {elapsed:?}: {result:?}"
    );
    assert_closed("the statement", &result);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    println!("CHILD OK");
}

/// `keepalives`: a statement is running (nothing unacknowledged: the client only waits, which
/// the test makes sure of through `TCP_INFO`) when the network dies; keepalive probes go
/// unanswered and the kernel ends the connection after `keepalives_idle + keepalives_count ×
/// keepalives_interval` seconds.
#[test]
fn keepalives_end_a_wait_on_a_dead_network() {
    run_netns_child("keepalives_child", "PQLIB_FAULTS_KEEPALIVES_CHILD");
}

#[test]
#[ignore = "run by keepalives_end_a_wait_on_a_dead_network"]
fn keepalives_child() {
    if std::env::var_os("PQLIB_FAULTS_KEEPALIVES_CHILD").is_none() {
        return;
    }
    let (_proxy, conn) =
        netns_setup("keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2");
    let mut observer = connect(); // Over the unix socket: not affected by the dead network.
    let fd = socket_of(&conn);
    let worker = start_busy(conn, Busy::Query, &mut observer);
    common::wait_until_acked(fd);
    let started = Instant::now();
    common::loopback_down();
    let (_conn, result, elapsed) = join_busy(Busy::Query, worker, started, Duration::from_secs(8));
    println!("keepalives 1/1/2, waiting on a dead network: failed after {elapsed:?}: {result:?}");
    assert_closed("the waiting statement", &result);
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    println!("CHILD OK");
}

/// `tcp_user_timeout` alone does not end a *wait*: with the statement sent and acknowledged
/// before the network died, nothing is unacknowledged, so the kernel has nothing to time out
/// (libpq documents the setting as bounding how long "transmitted data may remain
/// unacknowledged"). The statement is still waiting after three times the timeout; use
/// keepalives (above) to detect a dead peer while waiting.
#[test]
fn tcp_user_timeout_alone_does_not_end_a_wait() {
    run_netns_child(
        "tcp_user_timeout_wait_child",
        "PQLIB_FAULTS_TCP_USER_TIMEOUT_WAIT_CHILD",
    );
}

#[test]
#[ignore = "run by tcp_user_timeout_alone_does_not_end_a_wait"]
fn tcp_user_timeout_wait_child() {
    if std::env::var_os("PQLIB_FAULTS_TCP_USER_TIMEOUT_WAIT_CHILD").is_none() {
        return;
    }
    let (_proxy, conn) = netns_setup("tcp_user_timeout=1000");
    let mut observer = connect();
    let fd = socket_of(&conn);
    let worker = start_busy(conn, Busy::Query, &mut observer);
    common::wait_until_acked(fd);
    common::drop_all_packets();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(!worker.is_finished(), "the wait ended: {:?}", worker.join());
        thread::sleep(Duration::from_millis(50));
    }
    println!("tcp_user_timeout=1000 alone: still waiting after 3 s on a dead network (expected)");
    // The worker stays blocked; the child process ends with it.
    println!("CHILD OK");
}

/// `connect_timeout` also bounds a TCP handshake that gets no answer at all (SYNs dropped).
#[test]
fn connect_timeout_ends_a_connect_into_a_dead_network() {
    run_netns_child(
        "connect_timeout_dead_child",
        "PQLIB_FAULTS_CONNECT_TIMEOUT_DEAD_CHILD",
    );
}

#[test]
#[ignore = "run by connect_timeout_ends_a_connect_into_a_dead_network"]
fn connect_timeout_dead_child() {
    if std::env::var_os("PQLIB_FAULTS_CONNECT_TIMEOUT_DEAD_CHILD").is_none() {
        return;
    }
    common::netns_loopback_up();
    let proxy = Proxy::start(Upstream::Unix(unix_socket_from_url()));
    common::drop_all_packets();
    let conninfo = proxy.conninfo("connect_timeout=2");
    let started = Instant::now();
    let e = bounded(
        "connecting into a dead network",
        Duration::from_secs(20),
        move || Connection::connect(&conninfo).unwrap_err(),
    );
    let elapsed = started.elapsed();
    println!("connect_timeout=2 into a dead network: {elapsed:?}: {e}");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e:?}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    assert_eq!(proxy.accepted(), 0, "no TCP handshake completed");
    println!("CHILD OK");
}

// ---------------------------------------------------------------------------------------------
// statement_timeout (server side).

/// `statement_timeout` set through `options`: a statement running longer fails with
/// SQLSTATE 57014 (`QUERY_CANCELED`, kind `Db`) after about that long, and the connection
/// stays usable; inside a transaction, the transaction is failed and rolls back.
#[test]
fn statement_timeout_cancels_a_long_statement() {
    let conninfo = format!("{} options='-c statement_timeout=300'", common::conninfo());
    let mut conn = Connection::connect(&conninfo).unwrap();
    let setting: String = conn
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(setting, "300ms");
    let started = Instant::now();
    let e = conn.batch_execute("SELECT pg_sleep(10)").unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("statement_timeout=300ms: {elapsed:?}: {e}");
    assert_eq!(e.kind(), ErrorKind::Db, "{e:?}");
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_works(&mut conn);

    // The same through every query path.
    let e = conn.query("SELECT pg_sleep(10)", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    let e = conn
        .query_typed(
            "SELECT pg_sleep($1)",
            &[(&10f64, pqlib::types::Type::FLOAT8)],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    let mut reader = conn
        .copy_out("COPY (SELECT pg_sleep(10)) TO STDOUT")
        .unwrap();
    let e = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert_eq!(inner(&e).code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    drop(reader);
    assert_works(&mut conn);

    let mut tx = conn.transaction().unwrap();
    let e = tx.batch_execute("SELECT pg_sleep(10)").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    tx.rollback().unwrap();
    assert_works(&mut conn);
}

// ---------------------------------------------------------------------------------------------
// Cancel requests racing query completion.

/// What the statement a cancel raced with ended as.
#[derive(Default, Debug)]
struct RaceCounts {
    cancelled: u32,
    completed: u32,
    next_cancelled: u32,
}

/// Races a cancel request with statements whose duration sweeps across the cancel's own
/// latency (0 to 20 ms), `rounds` times. With `wait_for_cancel`, the connection's thread
/// waits for `cancel_query` to return before it starts the next statement, as
/// `CancelToken`'s documentation asks.
fn race_cancels(rounds: u32, wait_for_cancel: bool) -> RaceCounts {
    let mut conn = connect();
    let token = conn.cancel_token();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<pqlib::Result<()>>();
    let canceller = thread::spawn(move || {
        for () in go_rx {
            if done_tx.send(token.cancel_query()).is_err() {
                break;
            }
        }
    });
    let mut counts = RaceCounts::default();
    for round in 0..rounds {
        let seconds = f64::from(round % 41) * 0.0005; // 0 … 20 ms
        go_tx.send(()).unwrap();
        match conn.execute("SELECT pg_sleep($1)", &[&seconds]) {
            Ok(_) => counts.completed += 1,
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => counts.cancelled += 1,
            Err(e) => panic!("round {round}: {e:?}"),
        }
        if wait_for_cancel {
            done_rx
                .recv_timeout(PROMPT)
                .expect("the cancel request returns")
                .expect("the cancel request was delivered");
        }
        let next = conn.query_one("SELECT $1::int4", &[&i32::try_from(round).unwrap()]);
        if !wait_for_cancel {
            done_rx
                .recv_timeout(PROMPT)
                .expect("the cancel request returns")
                .expect("the cancel request was delivered");
        }
        match next {
            Ok(row) => assert_eq!(row.get::<_, i32>(0), i32::try_from(round).unwrap()),
            Err(e) if !wait_for_cancel && e.code() == Some(&SqlState::QUERY_CANCELED) => {
                counts.next_cancelled += 1;
            }
            Err(e) => panic!("round {round}: the next statement failed: {e:?}"),
        }
    }
    drop(go_tx);
    canceller.join().unwrap();
    assert_works(&mut conn);
    counts
}

/// The documented protocol (wait for `cancel_query` to return before starting the next
/// statement) never lets a cancel meant for one statement hit the next, however the cancel
/// and the statement's completion interleave: the server has received the request when
/// `cancel_query` returns, and a request that finds the session idle is discarded.
#[test]
fn a_cancel_racing_completion_never_cancels_the_next_statement() {
    let counts = race_cancels(400, true);
    eprintln!("cancel races (waiting for the cancel): {counts:?}");
    assert_eq!(counts.next_cancelled, 0);
    assert!(
        counts.cancelled > 0 && counts.completed > 0,
        "the sweep should produce both outcomes: {counts:?}"
    );
}

/// Without that wait, the race is real: a cancel still in flight when the next statement
/// starts can cancel it (as `CancelToken`'s documentation warns). This measures how often;
/// What it asserts (in `race_cancels`): every statement gives its own answer or a
/// cancellation, never another error or another statement's rows; and the sweep really races
/// (some statements are cancelled). How often the next statement is hit is only reported.
#[test]
fn without_waiting_a_late_cancel_may_hit_the_next_statement() {
    let counts = race_cancels(200, false);
    eprintln!("cancel races (not waiting for the cancel): {counts:?}");
    assert_eq!(counts.completed + counts.cancelled, 200, "{counts:?}");
    assert!(counts.cancelled > 0, "no cancel landed: {counts:?}");
}

// ---------------------------------------------------------------------------------------------
// Dropping work in flight.

/// Dropping a `RowStream` mid-way reads the rest of the result (documented); cancelling
/// first makes that prompt even for an endless result, and leaves the connection usable.
#[test]
fn cancel_then_drop_ends_an_endless_row_stream_promptly() {
    let conn = connect();
    let token = conn.cancel_token();
    let mut conn = bounded("cancel and drop a RowStream", PROMPT, move || {
        let mut conn = conn;
        let mut stream = conn
            .query_raw(
                "SELECT generate_series(1, 2000000000)",
                std::iter::empty::<i32>(),
            )
            .unwrap();
        for _ in 0..10 {
            stream.next_row().unwrap().unwrap();
        }
        token.cancel_query().unwrap();
        drop(stream);
        conn
    });
    assert_works(&mut conn);
}

/// The same for a `CopyOutReader` of an endless COPY.
#[test]
fn cancel_then_drop_ends_an_endless_copy_out_promptly() {
    let conn = connect();
    let token = conn.cancel_token();
    let mut conn = bounded("cancel and drop a CopyOutReader", PROMPT, move || {
        let mut conn = conn;
        let mut reader = conn
            .copy_out("COPY (SELECT generate_series(1, 2000000000)) TO STDOUT")
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "1\n");
        token.cancel_query().unwrap();
        drop(reader);
        conn
    });
    assert_works(&mut conn);
}

/// Dropping the `Connection` itself with work in flight (the stream, reader or writer
/// forgotten, so their drops do not read the rest): `PQfinish` closes the socket at once.
/// The forgotten values' buffers leak on purpose (scripts/lsan.supp suppresses exactly this
/// test under LeakSanitizer).
#[test]
fn dropping_a_connection_with_work_in_flight_is_prompt() {
    for busy in ["stream", "copy_out", "copy_in", "pipeline"] {
        let conn = connect();
        let dropped_in = bounded(
            &format!("dropping a connection mid-{busy}"),
            PROMPT,
            move || {
                let mut conn = conn;
                match busy {
                    "stream" => {
                        let mut stream = conn
                            .query_raw(
                                "SELECT generate_series(1, 2000000000)",
                                std::iter::empty::<i32>(),
                            )
                            .unwrap();
                        stream.next_row().unwrap().unwrap();
                        std::mem::forget(stream);
                    }
                    "copy_out" => {
                        let mut reader = conn
                            .copy_out("COPY (SELECT generate_series(1, 2000000000)) TO STDOUT")
                            .unwrap();
                        reader.fill_buf().unwrap();
                        std::mem::forget(reader);
                    }
                    "copy_in" => {
                        conn.batch_execute("CREATE TEMP TABLE drop_sink (x int4)")
                            .unwrap();
                        let mut writer = conn.copy_in("COPY drop_sink FROM STDIN").unwrap();
                        writer.write_all(&b"1\n".repeat(100_000)).unwrap();
                        std::mem::forget(writer);
                    }
                    _ => {
                        let sleep = conn.prepare("SELECT pg_sleep(60)").unwrap();
                        let mut pipeline = conn.pipeline().unwrap();
                        pipeline.query(&sleep, &[]).unwrap();
                        pipeline.sync().unwrap();
                        std::mem::forget(pipeline);
                    }
                }
                let started = Instant::now();
                drop(conn);
                started.elapsed()
            },
        );
        eprintln!("dropped a connection mid-{busy} in {dropped_in:?}");
        // The drop alone, not the setup: PQfinish closes the socket without reading what
        // is in flight (which would take minutes for these endless results, 60 s for the
        // pipelined sleep).
        assert!(
            dropped_in < FAULT_TO_ERROR,
            "dropping the connection mid-{busy} took {dropped_in:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Panicking callbacks and consumers.

/// A panic in the code consuming notifications unwinds through Rust only (the iterator
/// holds no libpq state across `next`); the connection keeps working and the notifications
/// not yet consumed are still there.
#[test]
fn a_panicking_notification_consumer_leaves_the_connection_working() {
    let mut conn = connect();
    conn.batch_execute("LISTEN consumer_panics").unwrap();
    conn.batch_execute("NOTIFY consumer_panics, 'one'; NOTIFY consumer_panics, 'two'")
        .unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut notifications = conn.notifications();
        let mut iter = notifications.iter();
        let n = iter.next().expect("a notification").unwrap();
        panic!("consumer panics on {}", n.payload());
    }));
    assert!(outcome.is_err(), "the consumer panicked");
    let rest: Vec<String> = conn
        .notifications()
        .iter()
        .map(|n| n.unwrap().payload().to_owned())
        .collect();
    assert_eq!(rest, ["two"]);
    assert_works(&mut conn);
    // A panicking notice handler during a fault: the backend is terminated while the handler
    // panics on every notice; the error (not a panic, not an abort) comes out.
    conn.set_notice_handler(|_| panic!("the notice handler panics"));
    let pid = conn.backend_pid();
    common::terminate_backend(pid);
    // Two outcomes are right: the server's FATAL message reaches libpq while no query is
    // active, so libpq may hand it to the notice handler (whose panic then comes out of the
    // call, re-raised where libpq is off the stack); or the call fails with `Closed`.
    let outcome = catch_unwind(AssertUnwindSafe(|| conn.batch_execute("SELECT 1")));
    match outcome {
        Ok(result) => assert_closed("after terminate with a panicking handler", &result),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            assert_eq!(
                message,
                Some("the notice handler panics"),
                "another panic came out"
            );
        }
    }
    conn.clear_notice_handler();
    conn.reset().unwrap();
    assert_works(&mut conn);
}
