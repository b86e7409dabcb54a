//! Statements whose last handle was dropped, and those the statement cache evicts, are closed
//! on the server before the connection's next request: with the protocol's Close message
//! under libpq 17+ (`PQclosePrepared`, `PQsendClosePrepared`), which the server also accepts
//! in a failed transaction, and with `DEALLOCATE` before it. Each test runs its own server
//! with `log_statement = 'all'`, whose log shows which of the two went out.

mod common;

use pqlib::SimpleQueryMessage;
use pqlib::error::SqlState;
use pqlib::tempdb::TempCluster;

/// A server of the suite's version that logs every statement.
fn logging_cluster() -> TempCluster {
    let mut builder = TempCluster::builder().config("log_statement = 'all'");
    if let Some(dir) = common::default_bin_dir() {
        builder = builder.bin_dir(dir);
    }
    builder
        .start()
        .expect("a TempCluster with log_statement = 'all'")
}

fn server_log(cluster: &TempCluster) -> String {
    std::fs::read_to_string(cluster.log_file()).expect("the server log")
}

/// Whether the linked libpq closes statements with the protocol's Close (17+).
fn closes_by_protocol() -> bool {
    pqlib::version().major >= 17
}

/// The SQL that counts the session's prepared statements of text `sql` (run through the
/// simple protocol, so that counting prepares nothing itself).
fn count_sql(sql: &str) -> String {
    format!("SELECT count(*) FROM pg_prepared_statements WHERE statement = $q${sql}$q$")
}

/// The one value of the last row among `messages`.
fn last_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().to_owned()),
            _ => None,
        })
        .expect("a row")
}

fn prepared_count(conn: &mut pqlib::Connection, sql: &str) -> i64 {
    last_value(&conn.simple_query(&count_sql(sql)).unwrap())
        .parse()
        .unwrap()
}

async fn prepared_count_async(client: &pqlib::tokio::Client, sql: &str) -> i64 {
    last_value(&client.simple_query(&count_sql(sql)).await.unwrap())
        .parse()
        .unwrap()
}

/// What the log must say about how the statements were closed: no `DEALLOCATE` at all under
/// libpq 17+, one `DEALLOCATE` of a generated name before it. `marker` is text a logged
/// statement of the test contained, so that an empty log cannot pass.
fn assert_closed_as_expected(cluster: &TempCluster, marker: &str) {
    let log = server_log(cluster);
    assert!(
        log.contains(marker),
        "the server log does not show the test's statements ({marker:?}):\n{log}"
    );
    if closes_by_protocol() {
        assert!(
            !log.contains("DEALLOCATE"),
            "libpq {} closes by protocol, yet the server log shows DEALLOCATE:\n{log}",
            pqlib::version()
        );
    } else {
        assert!(
            log.contains("DEALLOCATE pqlib_"),
            "libpq {} deallocates with SQL, but the server log shows no DEALLOCATE:\n{log}",
            pqlib::version()
        );
    }
}

#[test]
fn dropped_statement_is_closed_blocking() {
    let cluster = logging_cluster();
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let sql = "SELECT $1::int4 AS dropped_blocking";
    let stmt = conn.prepare(sql).unwrap();
    let kept = conn.prepare("SELECT 2 AS kept_blocking").unwrap();
    let row = conn.query_one(&stmt, &[&7i32]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(prepared_count(&mut conn, sql), 1);
    let clone = stmt.clone();
    drop(stmt);
    // A clone still holds it: nothing is closed.
    assert_eq!(prepared_count(&mut conn, sql), 1);
    drop(clone);
    assert_eq!(prepared_count(&mut conn, sql), 0);
    // The other statement is untouched, and the session is in step.
    let row = conn.query_one(&kept, &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_closed_as_expected(&cluster, "dropped_blocking");
}

#[tokio::test]
async fn dropped_statement_is_closed_async() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logging_cluster();
    let client = common::connect_async_to(&cluster.conninfo()).await;
    let sql = "SELECT $1::int4 AS dropped_async";
    let stmt = client.prepare(sql).await.unwrap();
    let kept = client.prepare("SELECT 2 AS kept_async").await.unwrap();
    let row = client.query_one(&stmt, &[&7i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(prepared_count_async(&client, sql).await, 1);
    drop(stmt);
    // The close goes out ahead of this request; its answer (nobody's) must not be taken for
    // the count's, nor the next query's.
    assert_eq!(prepared_count_async(&client, sql).await, 0);
    let row = client.query_one(&kept, &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // Several closes queued at once, with concurrent requests behind them.
    let texts: Vec<String> = (0..5)
        .map(|i| format!("SELECT {i} AS many_async"))
        .collect();
    let many: Vec<_> = futures_util::future::join_all(texts.iter().map(|t| client.prepare(t)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(many);
    let (a, b) = tokio::join!(
        client.query_one("SELECT 'a'::text", &[]),
        client.query_one("SELECT 'b'::text", &[]),
    );
    assert_eq!(a.unwrap().get::<_, String>(0), "a");
    assert_eq!(b.unwrap().get::<_, String>(0), "b");
    let left = last_value(
        &client
            .simple_query(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%many_async'",
            )
            .await
            .unwrap(),
    );
    assert_eq!(left, "0");
    assert_closed_as_expected(&cluster, "dropped_async");
}

#[test]
fn cache_eviction_closes_blocking() {
    let cluster = logging_cluster();
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let text = |i: usize| format!("SELECT {i} AS evicted_blocking");
    // One more than the cache holds: the least recently used (the first) is evicted.
    for i in 0..=pqlib::STATEMENT_CACHE_CAPACITY {
        let n: i32 = conn.query_one(&text(i), &[]).unwrap().get(0);
        assert_eq!(n as usize, i);
    }
    let messages = conn
        .simple_query(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%evicted_blocking'",
        )
        .unwrap();
    assert_eq!(
        last_value(&messages),
        pqlib::STATEMENT_CACHE_CAPACITY.to_string()
    );
    assert_eq!(prepared_count(&mut conn, &text(0)), 0);
    assert_eq!(prepared_count(&mut conn, &text(1)), 1);
    // The evicted text is prepared again when it comes back.
    let n: i32 = conn.query_one(&text(0), &[]).unwrap().get(0);
    assert_eq!(n, 0);
    assert_eq!(prepared_count(&mut conn, &text(0)), 1);
    assert_closed_as_expected(&cluster, "evicted_blocking");
}

#[tokio::test]
async fn cache_eviction_closes_async() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logging_cluster();
    let client = common::connect_async_to(&cluster.conninfo()).await;
    let text = |i: usize| format!("SELECT {i} AS evicted_async");
    for i in 0..=pqlib::STATEMENT_CACHE_CAPACITY {
        let n: i32 = client.query_one(&text(i), &[]).await.unwrap().get(0);
        assert_eq!(n as usize, i);
    }
    let messages = client
        .simple_query(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%evicted_async'",
        )
        .await
        .unwrap();
    assert_eq!(
        last_value(&messages),
        pqlib::STATEMENT_CACHE_CAPACITY.to_string()
    );
    assert_eq!(prepared_count_async(&client, &text(0)).await, 0);
    assert_eq!(prepared_count_async(&client, &text(1)).await, 1);
    let n: i32 = client.query_one(&text(0), &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    assert_closed_as_expected(&cluster, "evicted_async");
}

/// A statement dropped while the transaction has failed: under libpq 17+ its Close goes out
/// at once (the server accepts Close in an aborted transaction), so it is gone already in
/// the request that rolls back; before 17, `DEALLOCATE` waits until after the `ROLLBACK`.
#[test]
fn dropped_in_failed_transaction_blocking() {
    let cluster = logging_cluster();
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let sql = "SELECT 1 AS failed_blocking";
    let stmt = conn.prepare(sql).unwrap();
    conn.batch_execute("BEGIN").unwrap();
    let err = conn.execute("SELECT 1/0", &[]).unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(conn.transaction_status(), pqlib::TransactionStatus::InError);
    drop(stmt);
    // One request, sent while the transaction has failed: whatever closes the statement
    // before it went out first.
    let messages = conn
        .simple_query(&format!("ROLLBACK; {}", count_sql(sql)))
        .unwrap();
    let left = last_value(&messages);
    if closes_by_protocol() {
        assert_eq!(
            left, "0",
            "the Close was not sent in the failed transaction"
        );
    } else {
        assert_eq!(left, "1", "DEALLOCATE cannot run in a failed transaction");
    }
    // Either way it is gone by the next request, and the session is in step.
    assert_eq!(prepared_count(&mut conn, sql), 0);
    assert_eq!(conn.query_one("SELECT 5", &[]).unwrap().get::<_, i32>(0), 5);
    assert_closed_as_expected(&cluster, "failed_blocking");
}

/// The async client queues the Close (or `DEALLOCATE`) ahead of the next request whatever the
/// transaction's state. Under libpq 17+ the server accepts the Close in the failed
/// transaction; before 17 the refused `DEALLOCATE` goes out again with the requests after it,
/// until one after the rollback succeeds.
#[tokio::test]
async fn dropped_in_failed_transaction_async() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logging_cluster();
    let client = common::connect_async_to(&cluster.conninfo()).await;
    let sql = "SELECT 1 AS failed_async";
    let stmt = client.prepare(sql).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    drop(stmt);
    // The Close's (or DEALLOCATE's) own answer is nobody's; the statement after it is
    // refused as in any failed transaction, and gets that answer.
    let err = client.query_one("SELECT 2", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    let messages = client
        .simple_query(&format!("ROLLBACK; {}", count_sql(sql)))
        .await
        .unwrap();
    if closes_by_protocol() {
        assert_eq!(last_value(&messages), "0");
    } else {
        assert_eq!(last_value(&messages), "1");
    }
    // Gone by now in either case, and the answers are in step.
    assert_eq!(prepared_count_async(&client, sql).await, 0);
    let row = client.query_one("SELECT 6", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 6);
    assert_closed_as_expected(&cluster, "failed_async");
}

/// Statement names are generated (`pqlib_N`), never taken from the SQL text: text that looks
/// like SQL of its own, quotes and all, is closed like any other and touches nothing else.
#[test]
fn odd_statement_text_is_closed_by_its_generated_name() {
    let cluster = logging_cluster();
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let odd = "SELECT 'x; DEALLOCATE ALL; \"odd name\"' AS \"odd; \"\"column\"\"\"";
    let stmt = conn.prepare(odd).unwrap();
    assert!(
        format!("{stmt:?}").contains("\"pqlib_"),
        "not a generated name: {stmt:?}"
    );
    let kept = conn.prepare("SELECT 3 AS kept_odd").unwrap();
    let row = conn.query_one(&stmt, &[]).unwrap();
    assert_eq!(row.get::<_, &str>(0), "x; DEALLOCATE ALL; \"odd name\"");
    drop(stmt);
    assert_eq!(prepared_count(&mut conn, odd), 0);
    assert_eq!(conn.query_one(&kept, &[]).unwrap().get::<_, i32>(0), 3);
}

/// A statement the server has already forgotten (`DISCARD ALL`) is closed without an error
/// reaching anyone, with both clients.
#[tokio::test]
async fn closing_a_forgotten_statement_is_silent() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logging_cluster();
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let stmt = conn.prepare("SELECT 1 AS forgotten").unwrap();
    conn.batch_execute("DISCARD ALL").unwrap();
    drop(stmt);
    assert_eq!(conn.query_one("SELECT 4", &[]).unwrap().get::<_, i32>(0), 4);

    let client = common::connect_async_to(&cluster.conninfo()).await;
    let stmt = client.prepare("SELECT 1 AS forgotten").await.unwrap();
    client.batch_execute("DISCARD ALL").await.unwrap();
    drop(stmt);
    let row = client.query_one("SELECT 4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 4);
    let left = last_value(
        &client
            .simple_query("SELECT count(*) FROM pg_prepared_statements")
            .await
            .unwrap(),
    );
    // Only the cached "SELECT 4".
    assert_eq!(left, "1");
}
