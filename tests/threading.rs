//! Which handles may cross or be shared between threads, checked at compile time, and what
//! moving or sharing them does at run time.

mod common;

use std::sync::mpsc;
use std::thread;

use pqlib::{Connection, OwnedRow, Row, Rows, Statement, Transaction};
use static_assertions::{assert_impl_all, assert_not_impl_any};

// libpq allows one thread at a time on a PGconn: it may move, never be shared.
assert_impl_all!(Connection: Send);
assert_not_impl_any!(Connection: Sync, Clone, Copy);
// A PGresult is read-only once made: it may be read from any number of threads.
assert_impl_all!(Rows: Send, Sync);
assert_not_impl_any!(Rows: Clone, Copy);
assert_impl_all!(OwnedRow: Send, Sync);
assert_not_impl_any!(OwnedRow: Clone);
assert_impl_all!(Row<'static>: Send, Sync, Copy);
// A transaction is the connection, borrowed: it moves with it and is not shared either.
assert_impl_all!(Transaction<'static>: Send);
assert_not_impl_any!(Transaction<'static>: Sync, Clone);
// Statements are a shared description plus a name; clones are cheap and thread-safe.
assert_impl_all!(Statement: Send, Sync, Clone);
assert_impl_all!(pqlib::Error: Send, Sync, std::error::Error);
assert_impl_all!(pqlib::Config: Send, Sync, Clone);
// A replication connection is a connection: it moves and is not shared; its stream borrows
// it mutably, and moves with it (its keeper thread shares only a lock-guarded handle).
assert_impl_all!(pqlib::replication::ReplicationConnection: Send);
assert_not_impl_any!(pqlib::replication::ReplicationConnection: Sync, Clone);
assert_impl_all!(pqlib::replication::ReplicationStream<'static>: Send);
assert_not_impl_any!(pqlib::replication::ReplicationStream<'static>: Sync);
assert_impl_all!(pqlib::replication::XLogData: Send, Sync, Clone);
// The async ones may be moved into spawned tasks.
assert_impl_all!(pqlib::tokio::ReplicationClient: Send);
assert_not_impl_any!(pqlib::tokio::ReplicationClient: Sync);
assert_impl_all!(pqlib::tokio::ReplicationStream<'static>: Send);

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

#[test]
fn connection_moves_to_another_thread_and_back() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE moved (x int4)")
        .unwrap();
    let pid = conn.backend_pid();
    let main_thread = thread::current().id();

    let (ran_on, mut conn) = thread::spawn(move || {
        // Same session (the temp table is there), now driven from this thread.
        assert_eq!(conn.backend_pid(), pid);
        let n = conn
            .execute("INSERT INTO moved SELECT generate_series(1, 3)", &[])
            .unwrap();
        assert_eq!(n, 3);
        (thread::current().id(), conn)
    })
    .join()
    .unwrap();
    assert_ne!(ran_on, main_thread);

    let sum: i64 = conn
        .query_one("SELECT sum(x) FROM moved", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum, 6);
    assert_eq!(conn.backend_pid(), pid);
}

#[test]
fn notice_handler_runs_on_the_thread_using_the_connection() {
    let mut conn = connect();
    let (tx, rx) = mpsc::channel();
    conn.set_notice_handler(move |notice| {
        tx.send((thread::current().id(), notice.message().to_owned()))
            .unwrap();
    });
    let worker = thread::spawn(move || {
        conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'from the worker'; END $$")
            .unwrap();
        thread::current().id()
    })
    .join()
    .unwrap();
    let (handler_thread, message) = rx.try_recv().expect("the notice arrived");
    assert_eq!(message, "from the worker");
    assert_eq!(handler_thread, worker);
}

#[test]
fn rows_are_read_from_several_threads_at_once() {
    let mut conn = connect();
    let rows = conn
        .query(
            "SELECT i, 'row ' || i AS label, repeat('x', i) AS xs \
             FROM generate_series(1, 200) AS i",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 200);
    // Borrowed &str values point into the PGresult; each thread reads them through &Rows.
    let expected: Vec<(i32, &str)> = rows.iter().map(|r| (r.get(0), r.get("label"))).collect();

    let rows_ref = &rows;
    let results: Vec<Vec<(i32, &str, usize)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    rows_ref
                        .iter()
                        .map(|r| {
                            let xs: &str = r.get("xs");
                            (r.get::<_, i32>("i"), r.get::<_, &str>(1), xs.len())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in results {
        assert_eq!(result.len(), expected.len());
        for ((i, label, xs), (want_i, want_label)) in result.into_iter().zip(&expected) {
            assert_eq!(i, *want_i);
            assert_eq!(label, *want_label);
            // The very same bytes, not a copy.
            assert_eq!(label.as_ptr(), want_label.as_ptr());
            assert_eq!(xs, i as usize);
        }
    }
}

#[test]
fn rows_move_to_another_thread_and_outlive_the_connection() {
    let mut conn = connect();
    let rows = conn.query("SELECT 'kept'::text, 7::int8", &[]).unwrap();
    let row = conn.query_one("SELECT 'owned'::text", &[]).unwrap();
    drop(conn);
    let (text, n, owned) = thread::spawn(move || {
        let first = rows.get(0).unwrap();
        let text: String = first.get(0);
        let owned: String = row.get(0);
        (text, first.get::<_, i64>(1), owned)
    })
    .join()
    .unwrap();
    assert_eq!((text.as_str(), n, owned.as_str()), ("kept", 7, "owned"));
}

#[test]
fn connections_on_many_threads_work_independently() {
    let conninfo = common::conninfo();
    let pids: Vec<u32> = thread::scope(|s| {
        let handles: Vec<_> = (0..8i32)
            .map(|t| {
                let conninfo = &conninfo;
                s.spawn(move || {
                    let mut conn = Connection::connect(conninfo).unwrap();
                    let stmt = conn.prepare("SELECT $1::int4 * 1000 + $2::int4").unwrap();
                    for i in 0..50i32 {
                        let v: i32 = conn.query_one(&stmt, &[&t, &i]).unwrap().get(0);
                        assert_eq!(v, t * 1000 + i);
                    }
                    conn.backend_pid()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        pids.len(),
        "each thread had its own backend"
    );
}

#[test]
fn a_statement_is_used_from_another_thread_with_its_connection() {
    let mut conn = connect();
    let stmt = conn.prepare("SELECT $1::text || '!'").unwrap();
    let copy = stmt.clone();
    let out = thread::spawn(move || {
        let s: String = conn.query_one(&copy, &[&"hi"]).unwrap().get(0);
        s
    })
    .join()
    .unwrap();
    assert_eq!(out, "hi!");
    assert_eq!(stmt.sql(), "SELECT $1::text || '!'");
}
