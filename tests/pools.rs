//! Connection pools against a real server: deadpool for the async client, r2d2 for the
//! blocking one. Each test exhausts a pool, kills backends under it, or gives a connection
//! back in the middle of a transaction, and checks what the next checkout gets.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};
use pqlib::pool::deadpool::{self as dp, RecyclingMethod};
use pqlib::pool::r2d2 as rp;
use pqlib::{Config, Connection, TransactionStatus};

/// The test server's parameters, with an application name to find this test's backends by.
fn config(application_name: &str) -> Config {
    let mut config: Config = common::conninfo().parse().expect("a valid conninfo");
    config.application_name(application_name);
    config
}

fn observer() -> Connection {
    Connection::connect(&common::conninfo()).expect("connect")
}

/// Terminates the backends and waits (at most 10 s) until the server has let them go.
fn kill(pids: &[i32]) {
    let mut conn = observer();
    for &pid in pids {
        let _: bool = conn
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap()
            .get(0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backends {pids:?} did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last statement a backend ran, as the server reports it.
fn last_query(pid: i32) -> String {
    observer()
        .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .unwrap()
        .get(0)
}

/// A fresh table (dropped first if a previous run left it).
fn table(name: &str) {
    observer()
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (x int4)"
        ))
        .unwrap();
}

fn count(name: &str) -> i64 {
    observer()
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .unwrap()
        .get(0)
}

// --- deadpool ----------------------------------------------------------------------------

fn deadpool(application_name: &str, max_size: usize, method: RecyclingMethod) -> dp::Pool {
    let manager = dp::Manager::new(config(application_name)).recycling_method(method);
    dp::Pool::builder(manager)
        .max_size(max_size)
        .runtime(dp::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap()
}

async fn pid_of(client: &dp::PooledClient) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether the session is inside a transaction block, asked without the pool's help:
/// `SAVEPOINT` fails with `no_active_sql_transaction` outside one.
async fn async_in_transaction(client: &pqlib::tokio::Client) -> bool {
    match client.batch_execute("SAVEPOINT pools_test_probe").await {
        Ok(()) => true,
        Err(e) if e.code() == Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION) => false,
        Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_exhausted_pool_times_out_then_recovers() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let pool = deadpool("pools_dp_exhaust", 3, RecyclingMethod::Fast);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.unwrap());
    }
    let status = pool.status();
    assert_eq!((status.size, status.available), (3, 0));

    let timeouts = dp::Timeouts {
        wait: Some(Duration::from_millis(200)),
        ..pool.timeouts()
    };
    let started = Instant::now();
    let error = pool.timeout_get(&timeouts).await.unwrap_err();
    assert!(
        matches!(error, dp::PoolError::Timeout(dp::TimeoutType::Wait)),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(190));

    // One comes back: the waiter gets it.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pid_of(&pool.get().await.unwrap()).await })
    };
    // Returned only once the waiter waits (bounded), so that the hand-over is what is tested.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.status().waiting == 0 {
        assert!(Instant::now() < deadline, "the waiter never waited");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let returned_pid = pid_of(&held[0]).await;
    drop(held.remove(0));
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is served")
        .unwrap();
    assert_eq!(got, returned_pid);
}

/// Waits (at most 10 s) until `count` idle clients of `pool` report `is_broken()`: their
/// connection tasks have seen the end of the stream.
async fn wait_until_idle_clients_are_broken(pool: &dp::Pool, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut broken = 0;
        pool.retain(|client, _| {
            broken += usize::from(client.is_broken());
            true
        });
        if broken >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {broken} of {count} idle clients noticed their killed backends within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_recovers_after_backends_are_killed() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    for (name, method) in [
        ("pools_dp_kill_fast", RecyclingMethod::Fast),
        ("pools_dp_kill_verified", RecyclingMethod::Verified),
    ] {
        let pool = deadpool(name, 3, method);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.get().await.unwrap());
        }
        let mut old = Vec::new();
        for client in &held {
            old.push(pid_of(client).await);
        }
        drop(held);
        assert_eq!(pool.status().available, 3);

        tokio::task::spawn_blocking({
            let old = old.clone();
            move || kill(&old)
        })
        .await
        .unwrap();
        if method == RecyclingMethod::Fast {
            // Fast recycling sees a lost connection once its task has read the end of the
            // stream (Verified asks the server at checkout): wait, bounded, until every idle
            // client in the pool says it is broken, rather than sleeping and hoping.
            wait_until_idle_clients_are_broken(&pool, 3).await;
        }

        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.get().await.unwrap());
        }
        let mut new = HashSet::new();
        for client in &held {
            let n: i64 = client
                .query_one("SELECT $1::int8 * 2", &[&21i64])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 42);
            new.insert(pid_of(client).await);
        }
        assert_eq!(new.len(), 3);
        assert!(old.iter().all(|pid| !new.contains(pid)), "{method:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_never_hands_out_a_broken_connection_again() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let pool = deadpool("pools_dp_broken", 1, RecyclingMethod::Fast);
    let client = pool.get().await.unwrap();
    let pid = pid_of(&client).await;
    tokio::task::spawn_blocking(move || kill(&[pid]))
        .await
        .unwrap();
    let error = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    assert!(client.is_broken());
    drop(client);

    // Straight away, with no time for the connection task to finish.
    let client = pool.get().await.unwrap();
    assert!(!client.is_broken());
    assert_ne!(pid_of(&client).await, pid);
    assert_eq!(pool.status().size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_rolls_back_a_transaction_left_open() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    table("pools_dp_tx");
    let pool = deadpool("pools_dp_tx", 1, RecyclingMethod::Fast);
    let insert = "INSERT INTO pools_dp_tx VALUES (1)";

    // A raw BEGIN through the pooled client's own methods.
    let client = pool.get().await.unwrap();
    let pid = pid_of(&client).await;
    client.batch_execute("BEGIN").await.unwrap();
    client.execute(insert, &[]).await.unwrap();
    drop(client);
    let client = pool.get().await.unwrap();
    assert_eq!(pid_of(&client).await, pid, "the same connection, recycled");
    assert!(!async_in_transaction(client.client()).await);
    assert_eq!(count("pools_dp_tx"), 0);
    drop(client);

    // A failed transaction.
    let client = pool.get().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let error = client.query("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));
    drop(client);
    let client = pool.get().await.unwrap();
    let n: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
    drop(client);

    // A transaction from `transaction()` that never finishes.
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute(insert, &[]).await.unwrap();
    std::mem::forget(tx);
    drop(client);
    let client = pool.get().await.unwrap();
    assert!(!async_in_transaction(client.client()).await);
    assert_eq!(count("pools_dp_tx"), 0);
    assert_eq!(pid_of(&client).await, pid);
    drop(client);

    // One dropped unfinished rolls back by itself; one committed stays.
    let mut client = pool.get().await.unwrap();
    {
        let tx = client.transaction().await.unwrap();
        tx.execute(insert, &[]).await.unwrap();
    }
    let tx = client.transaction().await.unwrap();
    tx.execute(insert, &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(client);
    let client = pool.get().await.unwrap();
    assert!(!async_in_transaction(client.client()).await);
    assert_eq!(count("pools_dp_tx"), 1);
    drop(client);

    // Verified recycling also ends a transaction the wrapper did not see start.
    let verified = deadpool("pools_dp_tx_verified", 1, RecyclingMethod::Verified);
    let client = verified.get().await.unwrap();
    client.client().batch_execute("BEGIN").await.unwrap();
    client.client().execute(insert, &[]).await.unwrap();
    drop(client);
    let client = verified.get().await.unwrap();
    assert!(!async_in_transaction(client.client()).await);
    assert_eq!(count("pools_dp_tx"), 1);
    observer().batch_execute("DROP TABLE pools_dp_tx").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_fast_recycling_sends_nothing_for_an_idle_connection() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let pool = deadpool("pools_dp_cheap", 1, RecyclingMethod::Fast);
    let client = pool.get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid() /* idle marker */", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    let client = pool.get().await.unwrap();
    let query = tokio::task::spawn_blocking(move || last_query(pid))
        .await
        .unwrap();
    assert!(query.contains("idle marker"), "{query}");

    // After a committed transaction: still nothing to do.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.query_one("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(client);
    let client = pool.get().await.unwrap();
    let query = tokio::task::spawn_blocking(move || last_query(pid))
        .await
        .unwrap();
    assert_eq!(query, "COMMIT");

    // After a raw BEGIN: the probe, then ROLLBACK.
    client.batch_execute("BEGIN").await.unwrap();
    drop(client);
    let client = pool.get().await.unwrap();
    let query = tokio::task::spawn_blocking(move || last_query(pid))
        .await
        .unwrap();
    assert_eq!(query, "ROLLBACK");
    // After a raw BEGIN … COMMIT: the probe only (no ROLLBACK, so no warning).
    client.batch_execute("BEGIN; COMMIT").await.unwrap();
    drop(client);
    let _client = pool.get().await.unwrap();
    let query = tokio::task::spawn_blocking(move || last_query(pid))
        .await
        .unwrap();
    assert!(query.contains("pqlib.pool_probe"), "{query}");
}

// --- r2d2 --------------------------------------------------------------------------------

fn r2d2(application_name: &str, max_size: u32, test_on_check_out: bool) -> rp::Pool {
    rp::Pool::builder()
        .max_size(max_size)
        .test_on_check_out(test_on_check_out)
        .connection_timeout(Duration::from_secs(10))
        .build(rp::ConnectionManager::new(config(application_name)))
        .unwrap()
}

fn sync_pid(conn: &mut Connection) -> i32 {
    conn.backend_pid() as i32
}

#[test]
fn r2d2_exhausted_pool_times_out_then_recovers() {
    let pool = r2d2("pools_r2_exhaust", 2, true);
    let first = pool.get().unwrap();
    let second = pool.get().unwrap();
    assert!(pool.try_get().is_none());
    let started = Instant::now();
    let error = pool.get_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(error.to_string().contains("timed out"), "{error}");

    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            tid_tx.send(common::current_tid()).unwrap();
            sync_pid(&mut pool.get().unwrap())
        })
    };
    // Returned only once the waiter is blocked in `get` (bounded), so that the hand-over is
    // what is tested.
    common::wait_until_blocked(tid_rx.recv().unwrap());
    let returned = first.backend_pid() as i32;
    drop(first);
    assert_eq!(waiter.join().unwrap(), returned);
    drop(second);
}

#[test]
fn r2d2_recovers_after_backends_are_killed() {
    let pool = r2d2("pools_r2_kill", 3, true);
    let mut held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let old: Vec<i32> = held.iter_mut().map(|c| sync_pid(c)).collect();
    drop(held);
    kill(&old);

    let mut held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let mut new = HashSet::new();
    for conn in &mut held {
        let n: i64 = conn
            .query_one("SELECT $1::int8 * 2", &[&21i64])
            .unwrap()
            .get(0);
        assert_eq!(n, 42);
        new.insert(sync_pid(conn));
    }
    assert_eq!(new.len(), 3);
    assert!(old.iter().all(|pid| !new.contains(pid)));
}

#[test]
fn r2d2_never_hands_out_a_broken_connection_again() {
    // No test on checkout: the broken connection must be caught when it is returned.
    let pool = r2d2("pools_r2_broken", 1, false);
    let mut conn = pool.get().unwrap();
    let pid = sync_pid(&mut conn);
    kill(&[pid]);
    let error = conn.query_one("SELECT 1", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert!(!conn.is_closed());
    assert_ne!(sync_pid(&mut conn), pid);
    let n: i32 = conn.query_one("SELECT 7", &[]).unwrap().get(0);
    assert_eq!(n, 7);
}

#[test]
fn r2d2_rolls_back_a_transaction_left_open() {
    table("pools_r2_tx");
    let pool = r2d2("pools_r2_tx", 1, false);

    let mut conn = pool.get().unwrap();
    let pid = sync_pid(&mut conn);
    conn.batch_execute("BEGIN; INSERT INTO pools_r2_tx VALUES (1)")
        .unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::InTransaction);
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_eq!(sync_pid(&mut conn), pid, "the same connection, recycled");
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(count("pools_r2_tx"), 0);

    // A failed transaction.
    conn.batch_execute("BEGIN").unwrap();
    conn.query("SELECT 1 / 0", &[]).unwrap_err();
    assert_eq!(conn.transaction_status(), TransactionStatus::InError);
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_eq!(sync_pid(&mut conn), pid);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    let n: i32 = conn.query_one("SELECT 7", &[]).unwrap().get(0);
    assert_eq!(n, 7);
    drop(conn);

    // A leaked `Transaction`.
    let mut conn = pool.get().unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO pools_r2_tx VALUES (2)", &[])
        .unwrap();
    std::mem::forget(tx);
    drop(conn);
    let conn = pool.get().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(count("pools_r2_tx"), 0);
    drop(conn);
    observer().batch_execute("DROP TABLE pools_r2_tx").unwrap();
}
