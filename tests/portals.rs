//! Portals (`Transaction::bind` / `query_portal`, as cursors), named savepoints,
//! `Connection::close` / `Client::close` and the async `build_transaction`, blocking and
//! async, against the real server.

mod common;

use std::future::Future;
use std::time::Duration;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::{Connection, IsolationLevel, TransactionStatus};

static_assertions::assert_impl_all!(pqlib::Portal<'static>: Send, Sync, Clone, std::fmt::Debug);
static_assertions::assert_impl_all!(pqlib::tokio::Portal: Send, Sync, Clone, std::fmt::Debug);

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// The values of the single int4 column of `rows`.
fn ints(rows: &pqlib::Rows) -> Vec<i32> {
    rows.iter().map(|row| row.get(0)).collect()
}

/// How many cursors the session has open (the `pg_cursors` view, session-local).
fn cursors(tx: &mut pqlib::Transaction<'_>) -> i64 {
    tx.query_one(
        "SELECT count(*) FROM pg_cursors WHERE name LIKE 'pqlib_portal_%'",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_portal_fetches_three_rows_at_a_time() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let portal = tx
        .bind("SELECT generate_series(1, $1) AS n", &[&10i32])
        .unwrap();
    let mut batches = Vec::new();
    for _ in 0..5 {
        batches.push(ints(&tx.query_portal(&portal, 3).unwrap()));
    }
    assert_eq!(
        batches,
        [
            vec![1, 2, 3],
            vec![4, 5, 6],
            vec![7, 8, 9],
            vec![10],
            vec![]
        ]
    );
    // The rows are decoded with the cursor's columns.
    let rows = tx.query_portal(&portal, 3).unwrap();
    assert!(rows.is_empty());
    assert_eq!(rows.columns()[0].name(), "n");
    tx.commit().unwrap();
}

#[test]
fn max_rows_zero_or_negative_fetches_the_rest() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let portal = tx
        .bind(
            "SELECT n, 'row ' || n AS label FROM generate_series(1, 10) AS n",
            &[],
        )
        .unwrap();
    let first = tx.query_portal(&portal, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = tx.query_portal(&portal, 0).unwrap();
    assert_eq!(ints(&rest), (3..=10).collect::<Vec<_>>());
    let label: &str = rest.iter().next().unwrap().get("label");
    assert_eq!(label, "row 3");
    assert!(tx.query_portal(&portal, -1).unwrap().is_empty());

    let portal = tx.bind("SELECT generate_series(1, 4)", &[]).unwrap();
    assert_eq!(tx.query_portal(&portal, -5).unwrap().len(), 4);
}

#[test]
fn parameters_are_bound_with_the_statement_types() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let statement = tx
        .prepare("SELECT $1::text || '-' || n, $2::int8 * n FROM generate_series(1, 3) AS n")
        .unwrap();
    let portal = tx.bind(&statement, &[&"tag", &10i64]).unwrap();
    let rows = tx.query_portal(&portal, 10).unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("tag-1".to_owned(), 10),
            ("tag-2".to_owned(), 20),
            ("tag-3".to_owned(), 30)
        ]
    );
    // NULL parameters, and SQL text (cached statement) with inferred types.
    let portal = tx.bind("SELECT $1::int4 IS NULL", &[&None::<i32>]).unwrap();
    let is_null: bool = tx
        .query_portal(&portal, 1)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .get(0);
    assert!(is_null);
}

#[test]
fn two_portals_interleave_in_one_transaction() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let odd = tx
        .bind("SELECT 2 * n - 1 FROM generate_series(1, 5) AS n", &[])
        .unwrap();
    let even = tx
        .bind("SELECT 2 * n FROM generate_series(1, 5) AS n", &[])
        .unwrap();
    let mut merged = Vec::new();
    loop {
        let a = ints(&tx.query_portal(&odd, 2).unwrap());
        let b = ints(&tx.query_portal(&even, 2).unwrap());
        if a.is_empty() && b.is_empty() {
            break;
        }
        merged.extend(a);
        merged.extend(b);
        // Other statements in between don't disturb the cursors.
        assert_eq!(tx.query_one("SELECT 42", &[]).unwrap().get::<_, i32>(0), 42);
    }
    assert_eq!(merged, [1, 3, 2, 4, 5, 7, 6, 8, 9, 10]);
}

#[test]
fn a_dropped_portal_closes_its_cursor() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    assert_eq!(cursors(&mut tx), 0);
    let portal = tx.bind("SELECT generate_series(1, 100)", &[]).unwrap();
    let clone = portal.clone();
    assert_eq!(tx.query_portal(&portal, 1).unwrap().len(), 1);
    assert_eq!(cursors(&mut tx), 1);
    drop(portal);
    // A clone keeps it open.
    assert_eq!(cursors(&mut tx), 1);
    assert_eq!(tx.query_portal(&clone, 1).unwrap().len(), 1);
    drop(clone);
    assert_eq!(cursors(&mut tx), 0);
    // The transaction is still good.
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.commit().unwrap();
}

/// A portal cannot be used after its transaction: that does not compile (it keeps the
/// transaction's borrow of the connection; tests/compile_fail in pqlib). What remains to
/// check at run time: a portal kept past its transaction's (or savepoint's) end and dropped
/// then sends nothing that could fail in what comes next.
#[test]
fn a_portal_dropped_after_its_transaction_sends_nothing() {
    let mut conn = connect();
    let portal = {
        let mut tx = conn.transaction().unwrap();
        let portal = tx.bind("SELECT 1", &[]).unwrap();
        tx.commit().unwrap();
        portal
    };
    drop(portal);
    let mut tx = conn.transaction().unwrap();
    assert_eq!(cursors(&mut tx), 0);
    assert_eq!(tx.query_one("SELECT 2", &[]).unwrap().get::<_, i32>(0), 2);
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.commit().unwrap();

    // A portal of a savepoint ends with it; one of the outer transaction works inside one.
    let mut tx = conn.transaction().unwrap();
    let outer = tx.bind("SELECT generate_series(1, 3)", &[]).unwrap();
    {
        let mut sp = tx.savepoint("inner").unwrap();
        assert_eq!(ints(&sp.query_portal(&outer, 1).unwrap()), [1]);
        let inner = sp.bind("SELECT 1", &[]).unwrap();
        sp.rollback().unwrap();
        // Rolled back with its savepoint: the drop must not CLOSE a cursor that is gone.
        drop(inner);
    }
    assert_eq!(ints(&tx.query_portal(&outer, 0).unwrap()), [2, 3]);
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
}

#[test]
fn a_portal_from_another_connection_is_refused() {
    let mut a = connect();
    let mut b = connect();
    let mut tx_a = a.transaction().unwrap();
    let mut tx_b = b.transaction().unwrap();
    let portal = tx_a.bind("SELECT 1", &[]).unwrap();
    let error = tx_b.query_portal(&portal, 1).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    assert_eq!(tx_b.transaction_status(), TransactionStatus::InTransaction);
    assert_eq!(tx_a.query_portal(&portal, 1).unwrap().len(), 1);
}

#[test]
fn bad_input_to_bind_is_a_clear_error() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    // Wrong parameter count and type: refused before anything is sent.
    let error = tx.bind("SELECT $1::int4", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    let error = tx.bind("SELECT $1::int4", &[&"text"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conversion, "{error}");
    // Interior NUL.
    let error = tx.bind("SELECT 1\0", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    // COPY: refused before sending.
    let error = tx.bind("COPY (SELECT 1) TO STDOUT", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    assert_eq!(cursors(&mut tx), 0);
    // A statement that cannot be a cursor: a server error, which aborts the transaction.
    let error = tx
        .bind("CREATE TEMP TABLE never (x int4)", &[])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR), "{error}");
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    tx.rollback().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(conn.query_one("SELECT 7", &[]).unwrap().get::<_, i32>(0), 7);
}

#[test]
fn a_failing_fetch_is_returned_cleanly() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let portal = tx
        .bind("SELECT 10 / (3 - n) FROM generate_series(1, 5) AS n", &[])
        .unwrap();
    assert_eq!(ints(&tx.query_portal(&portal, 2).unwrap()), [5, 10]);
    let error = tx.query_portal(&portal, 2).unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    // Dropping the portal in the failed transaction queues nothing that could fail later.
    drop(portal);
    drop(tx);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(conn.query_one("SELECT 8", &[]).unwrap().get::<_, i32>(0), 8);
}

// --- named savepoints ---

fn fresh_table(conn: &mut Connection, name: &str) {
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (x int4)"
    ))
    .unwrap();
}

fn values(conn: &mut Connection, table: &str) -> Vec<i32> {
    ints(
        &conn
            .query(&format!("SELECT x FROM {table} ORDER BY x"), &[])
            .unwrap(),
    )
}

#[test]
fn a_named_savepoint_rolls_back_only_its_work() {
    let mut conn = connect();
    fresh_table(&mut conn, "pqlib_portal_sp");
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO pqlib_portal_sp VALUES (1)", &[])
        .unwrap();
    {
        let mut sp = tx.savepoint("first").unwrap();
        sp.execute("INSERT INTO pqlib_portal_sp VALUES (2)", &[])
            .unwrap();
        sp.commit().unwrap();
    }
    {
        let mut sp = tx.savepoint("second").unwrap();
        sp.execute("INSERT INTO pqlib_portal_sp VALUES (3)", &[])
            .unwrap();
        {
            let mut nested = sp.savepoint("second").unwrap();
            nested
                .execute("INSERT INTO pqlib_portal_sp VALUES (4)", &[])
                .unwrap();
            // Dropped: rolled back to the inner "second" only.
        }
        sp.execute("INSERT INTO pqlib_portal_sp VALUES (5)", &[])
            .unwrap();
        sp.rollback().unwrap();
    }
    {
        let mut sp = tx.savepoint("third").unwrap();
        sp.execute("INSERT INTO pqlib_portal_sp VALUES (6)", &[])
            .unwrap();
        // Dropped: rolled back.
    }
    tx.execute("INSERT INTO pqlib_portal_sp VALUES (7)", &[])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(values(&mut conn, "pqlib_portal_sp"), [1, 2, 7]);
    conn.batch_execute("DROP TABLE pqlib_portal_sp").unwrap();
}

#[test]
fn savepoint_names_are_quoted_as_identifiers() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    for name in [
        "a\"b",
        "with spaces",
        "ünïcødé 名前",
        "\"",
        "Mixed Case",
        "x'; ROLLBACK; --",
        "pqlib_savepoint_1",
    ] {
        let mut sp = tx.savepoint(name).unwrap();
        sp.batch_execute("SELECT 1").unwrap();
        // The name on the server is exactly the text: the user can roll back to it.
        let quoted = quote(name);
        sp.batch_execute(&format!("ROLLBACK TO SAVEPOINT {quoted}"))
            .unwrap();
        sp.commit().unwrap();
        assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    }
    tx.commit().unwrap();
}

/// Quotes an identifier as the server reads it (the test's own quoting, not pqlib's).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[test]
fn bad_savepoint_names_are_refused_before_sending() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    for name in ["nul\0byte", ""] {
        let error = tx.savepoint(name).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadInput, "{name:?}: {error}");
    }
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.commit().unwrap();
}

// --- close ---

#[test]
fn a_clean_close_is_ok() {
    let conn = connect();
    conn.close().unwrap();

    let mut conn = connect();
    conn.query_one("SELECT 1", &[]).unwrap();
    let pid = conn.backend_pid();
    conn.close().unwrap();
    // The backend is gone (it exits on Terminate; waited for, bounded).
    let mut other = connect();
    let gone = other
        .query_one(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1",
            &[&(pid as i32)],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap();
    let gone = gone || wait_until_gone(&mut other, pid);
    assert!(gone, "backend {pid} still there after close");
}

fn wait_until_gone(conn: &mut Connection, pid: u32) -> bool {
    // pg_stat_activity lags the exit a little; poll for at most 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let gone: bool = conn
            .query_one(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1",
                &[&(pid as i32)],
            )
            .unwrap()
            .get(0);
        if gone {
            return true;
        }
        conn.batch_execute("SELECT pg_sleep(0.05)").unwrap();
    }
    false
}

#[test]
fn close_after_the_backend_was_killed_is_an_error() {
    let conn = connect();
    common::terminate_backend(conn.backend_pid());
    let error = conn.close().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");

    // Noticed before close, too.
    let mut conn = connect();
    common::terminate_backend(conn.backend_pid());
    conn.query_one("SELECT 1", &[]).unwrap_err();
    let error = conn.close().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
}

#[test]
fn close_with_a_sql_transaction_open_reports_it() {
    let mut conn = connect();
    conn.batch_execute("BEGIN").unwrap();
    let error = conn.close().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Client, "{error}");
}

// --- async ---

const STEP: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("a step took longer than 30 s")
}

async fn async_cursors(client: &pqlib::tokio::Client) -> i64 {
    bounded(client.query_one(
        "SELECT count(*) FROM pg_cursors WHERE name LIKE 'pqlib_portal_%'",
        &[],
    ))
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn async_portals_fetch_in_steps_interleave_and_close() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = common::connect_async().await;
    let tx = bounded(client.transaction()).await.unwrap();
    let portal = bounded(tx.bind("SELECT generate_series(1, $1)", &[&10i32]))
        .await
        .unwrap();
    let mut batches = Vec::new();
    for _ in 0..5 {
        batches.push(ints(&bounded(tx.query_portal(&portal, 3)).await.unwrap()));
    }
    assert_eq!(
        batches,
        [
            vec![1, 2, 3],
            vec![4, 5, 6],
            vec![7, 8, 9],
            vec![10],
            vec![]
        ]
    );

    let odd = bounded(tx.bind("SELECT 2 * n - 1 FROM generate_series(1, 3) AS n", &[]))
        .await
        .unwrap();
    let even = bounded(tx.bind("SELECT 2 * n FROM generate_series(1, 3) AS n", &[]))
        .await
        .unwrap();
    let mut merged = Vec::new();
    for _ in 0..3 {
        // Both fetches in flight at once, pipelined.
        let (a, b) =
            bounded(async { tokio::join!(tx.query_portal(&odd, 1), tx.query_portal(&even, 1)) })
                .await;
        merged.extend(ints(&a.unwrap()));
        merged.extend(ints(&b.unwrap()));
    }
    assert_eq!(merged, [1, 2, 3, 4, 5, 6]);
    assert_eq!(async_cursors(&tx).await, 3);
    drop(portal);
    drop(odd);
    // The CLOSE is queued ahead of the count.
    assert_eq!(async_cursors(&tx).await, 1);
    drop(even);
    assert_eq!(async_cursors(&tx).await, 0);
    bounded(tx.commit()).await.unwrap();
}

#[tokio::test]
async fn async_portal_after_its_transaction_is_an_error() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = common::connect_async().await;
    let tx = bounded(client.transaction()).await.unwrap();
    let portal = bounded(tx.bind("SELECT 1", &[])).await.unwrap();
    bounded(tx.commit()).await.unwrap();

    let tx = bounded(client.transaction()).await.unwrap();
    let error = bounded(tx.query_portal(&portal, 1)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    // Dropping it sends no CLOSE into this transaction.
    drop(portal);
    assert_eq!(async_cursors(&tx).await, 0);
    let status: i32 = bounded(tx.query_one("SELECT 3", &[])).await.unwrap().get(0);
    assert_eq!(status, 3);
    bounded(tx.commit()).await.unwrap();

    // A portal from another client's transaction.
    let mut other = common::connect_async().await;
    let other_tx = bounded(other.transaction()).await.unwrap();
    let foreign = bounded(other_tx.bind("SELECT 1", &[])).await.unwrap();
    let tx = bounded(client.transaction()).await.unwrap();
    let error = bounded(tx.query_portal(&foreign, 1)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    assert_eq!(
        bounded(other_tx.query_portal(&foreign, 1))
            .await
            .unwrap()
            .len(),
        1
    );
    bounded(tx.commit()).await.unwrap();
}

#[tokio::test]
async fn async_bad_input_to_bind() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = common::connect_async().await;
    let tx = bounded(client.transaction()).await.unwrap();
    for (sql, kind) in [
        ("SELECT $1::int4", ErrorKind::BadInput),
        ("SELECT 1\0", ErrorKind::BadInput),
        ("COPY (SELECT 1) TO STDOUT", ErrorKind::BadInput),
    ] {
        let error = bounded(tx.bind(sql, &[])).await.unwrap_err();
        assert_eq!(error.kind(), kind, "{sql:?}: {error}");
    }
    assert_eq!(async_cursors(&tx).await, 0);
    let error = bounded(tx.bind("SHOW server_version", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR), "{error}");
    bounded(tx.rollback()).await.unwrap();
    let n: i32 = bounded(client.query_one("SELECT 9", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 9);
}

#[tokio::test]
async fn async_named_savepoints() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = common::connect_async().await;
    bounded(client.batch_execute(
        "DROP TABLE IF EXISTS pqlib_portal_asp; CREATE TABLE pqlib_portal_asp (x int4)",
    ))
    .await
    .unwrap();
    let mut tx = bounded(client.transaction()).await.unwrap();
    bounded(tx.execute("INSERT INTO pqlib_portal_asp VALUES (1)", &[]))
        .await
        .unwrap();
    for name in ["a\"b", "with spaces", "ünïcødé"] {
        let sp = bounded(tx.savepoint(name)).await.unwrap();
        bounded(sp.execute("INSERT INTO pqlib_portal_asp VALUES (2)", &[]))
            .await
            .unwrap();
        bounded(sp.rollback()).await.unwrap();
    }
    {
        let sp = bounded(tx.savepoint("kept")).await.unwrap();
        bounded(sp.execute("INSERT INTO pqlib_portal_asp VALUES (3)", &[]))
            .await
            .unwrap();
        bounded(sp.commit()).await.unwrap();
    }
    for name in ["nul\0", ""] {
        let error = bounded(tx.savepoint(name)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    }
    bounded(tx.commit()).await.unwrap();
    let rows = bounded(client.query("SELECT x FROM pqlib_portal_asp ORDER BY x", &[]))
        .await
        .unwrap();
    assert_eq!(ints(&rows), [1, 3]);
    bounded(client.batch_execute("DROP TABLE pqlib_portal_asp"))
        .await
        .unwrap();
}

#[tokio::test]
async fn async_build_transaction_applies_its_options() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = common::connect_async().await;
    let tx = bounded(
        client
            .build_transaction()
            .isolation_level(IsolationLevel::Serializable)
            .read_only(true)
            .deferrable(true)
            .start(),
    )
    .await
    .unwrap();
    let show = |sql: &'static str| {
        let tx = &tx;
        async move {
            bounded(tx.query_one(sql, &[]))
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("SHOW transaction_isolation").await, "serializable");
    assert_eq!(show("SHOW transaction_read_only").await, "on");
    assert_eq!(show("SHOW transaction_deferrable").await, "on");
    let error = bounded(tx.batch_execute("CREATE TEMP TABLE t_read_only (x int4)"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{error}"
    );
    drop(tx);

    let tx = bounded(
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(false)
            .start(),
    )
    .await
    .unwrap();
    let level: String = bounded(tx.query_one("SHOW transaction_isolation", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "repeatable read");
    bounded(tx.commit()).await.unwrap();
    let level: String = bounded(client.query_one("SHOW transaction_isolation", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "read committed");
}

#[tokio::test]
async fn async_close_is_clean_and_ends_the_connection() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let (client, connection) = bounded(pqlib::tokio::connect(&common::conninfo()))
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let other = client.clone();
    // A request queued before the close is answered: polled once, it is in the queue.
    let mut before = Box::pin(other.query_typed("SELECT pg_sleep(0.1)::text, 5", &[]));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(before.as_mut().poll(&mut cx).is_pending());
    bounded(client.close()).await.unwrap();
    assert_eq!(
        bounded(before)
            .await
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .get::<_, i32>(1),
        5
    );
    bounded(task).await.unwrap().unwrap();
    // Other clones see Closed.
    let error = bounded(other.query_one("SELECT 1", &[])).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    assert!(other.is_closed());
}

#[tokio::test]
async fn async_close_after_the_backend_was_killed_is_an_error() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    let pid: i32 = bounded(client.query_one("SELECT pg_backend_pid()", &[]))
        .await
        .unwrap()
        .get(0);
    tokio::task::spawn_blocking(move || common::terminate_backend(pid as u32))
        .await
        .unwrap();
    let error = bounded(client.close()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
}

#[tokio::test]
async fn async_close_with_a_transaction_open_reports_it() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    bounded(client.batch_execute("BEGIN")).await.unwrap();
    let error = bounded(client.close()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Client, "{error}");
}

#[test]
fn a_portal_dropped_in_a_failed_savepoint_is_closed_after_the_rollback_to_it() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let portal = tx.bind("SELECT generate_series(1, 5)", &[]).unwrap();
    assert_eq!(cursors(&mut tx), 1);
    {
        let mut sp = tx.savepoint("fails").unwrap();
        sp.batch_execute("SELECT 1/0").unwrap_err();
        assert_eq!(sp.transaction_status(), TransactionStatus::InError);
        // Queued: nothing can be sent in the failed savepoint.
        drop(portal);
        sp.rollback().unwrap();
    }
    // The transaction is usable again and the cursor, declared before the savepoint, is
    // closed ahead of the next statement.
    assert_eq!(cursors(&mut tx), 0);
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.commit().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_close_dropped_before_its_turn_closes_nothing() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A statement in flight, so that the close (which needs everything before it answered)
    // has to wait for its turn. (A client drives the connection itself while it waits: with
    // nothing ahead of it, a close would be sent at its first poll.)
    let mut slow = Box::pin(client.query_one("SELECT 7 FROM pg_sleep(0.2)", &[]));
    assert!(slow.as_mut().poll(&mut cx).is_pending());
    {
        let mut close = Box::pin(client.clone().close());
        assert!(close.as_mut().poll(&mut cx).is_pending());
    }
    let n: i32 = bounded(slow).await.unwrap().get(0);
    assert_eq!(n, 7);
    let n: i32 = bounded(client.query_one("SELECT 11", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 11);
    assert!(!client.is_closed());
    bounded(client.close()).await.unwrap();
}
