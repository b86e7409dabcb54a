//! `CancelToken`: cancelling a running query from another thread.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};
use pqlib::{CancelToken, Connection};

static_assertions::assert_impl_all!(CancelToken: Send, Sync, Clone, std::fmt::Debug);

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// Waits (at most 10 s, polling from another connection) until the session with `pid` is
/// running a `pg_sleep`, so that a cancel sent now certainly finds the query running.
fn wait_until_sleeping(pid: u32) {
    let mut observer = connect();
    let pid = i32::try_from(pid).expect("a backend pid fits in int4");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if active == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} did not start its pg_sleep within 10 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `SELECT pg_sleep(60)` on a thread; returns the thread, which hands back the
/// connection, the query's result and how long it took.
fn sleep_on_thread(
    mut conn: Connection,
) -> thread::JoinHandle<(Connection, Result<(), pqlib::Error>, Duration)> {
    thread::spawn(move || {
        let start = Instant::now();
        let result = conn.batch_execute("SELECT pg_sleep(60)");
        (conn, result, start.elapsed())
    })
}

#[test]
fn cancels_a_running_query_from_another_thread() {
    let conn = connect();
    let pid = conn.backend_pid();
    let token = conn.cancel_token();
    let worker = sleep_on_thread(conn);

    wait_until_sleeping(pid);
    let sent = Instant::now();
    token.cancel_query().expect("sending the cancel request");
    let (mut conn, result, elapsed) = worker.join().unwrap();
    let error = result.expect_err("the sleep was cancelled");
    eprintln!(
        "query returned {elapsed:?} after it started, {:?} after the cancel was sent: {error}",
        sent.elapsed()
    );
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Db);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");

    // The same connection carries on.
    assert!(!conn.is_closed());
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn a_token_works_for_several_queries() {
    let mut conn = connect();
    let token = conn.cancel_token();
    for round in 0..3 {
        let pid = conn.backend_pid();
        let worker = sleep_on_thread(conn);
        wait_until_sleeping(pid);
        token.cancel_query().expect("sending the cancel request");
        let (back, result, elapsed) = worker.join().unwrap();
        conn = back;
        let error = result.expect_err("the sleep was cancelled");
        assert_eq!(
            error.code(),
            Some(&SqlState::QUERY_CANCELED),
            "round {round}: {error:?}"
        );
        assert!(
            elapsed < Duration::from_secs(30),
            "round {round} took {elapsed:?}"
        );
        assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
    }
}

#[test]
fn cancel_from_a_clone_on_another_thread() {
    let conn = connect();
    let pid = conn.backend_pid();
    let token = conn.cancel_token();
    let clone = token.clone();
    drop(token); // the clone alone keeps the libpq object alive
    let worker = sleep_on_thread(conn);
    wait_until_sleeping(pid);
    let canceller = thread::spawn(move || clone.cancel_query());
    canceller
        .join()
        .unwrap()
        .expect("sending the cancel request");
    let (mut conn, result, _) = worker.join().unwrap();
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(conn.query_one("SELECT 2", &[]).unwrap().get::<_, i32>(0), 2);
}

#[test]
fn cancel_on_an_idle_connection_is_harmless() {
    let mut conn = connect();
    let token = conn.cancel_token();
    token.cancel_query().expect("sending the cancel request");
    token.cancel_query().expect("sending it again");
    // Each request has reached the server before cancel_query returned, so the idle backend
    // has already dropped them: the next statements run normally.
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
    conn.batch_execute("SELECT pg_sleep(0.05)").unwrap();
}

#[test]
fn clones_used_from_several_threads_at_once() {
    const THREADS: usize = 8;
    let mut conn = connect();
    let token = conn.cancel_token();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let token = token.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (0..3).map(|_| token.cancel_query()).collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for result in thread.join().unwrap() {
            result.expect("sending a cancel request");
        }
    }
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn token_outlives_its_connection() {
    let conn = connect();
    let token = conn.cancel_token();
    drop(conn);
    // The session is gone, but the server is up: the request is delivered and the server
    // ignores it (it names no live session). libpq reports delivery, so this is Ok.
    token
        .cancel_query()
        .expect("a cancel request for an ended session");
    let clone = token.clone();
    drop(token);
    clone
        .cancel_query()
        .expect("the clone outlives the token it came from");
}

#[test]
fn token_from_a_closed_connection_reports_an_error() {
    let mut conn = connect();
    let pid = i32::try_from(conn.backend_pid()).unwrap();
    let mut killer = connect();
    let killed: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed);
    // The next statement finds the connection gone (libpq closes its socket).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !conn.is_closed() {
        let _ = conn.batch_execute("SELECT 1");
        assert!(
            Instant::now() < deadline,
            "the connection never noticed it was terminated"
        );
    }
    let token = conn.cancel_token();
    let error = token
        .cancel_query()
        .expect_err("nothing to send a cancel request for");
    eprintln!("cancel on a closed connection: {error}");
    assert_eq!(error.kind(), ErrorKind::Closed, "{error:?}");
    assert!(format!("{token:?}").starts_with("CancelToken"));
}
