//! `pqlib::tokio::Client::pipeline`: many statements in one sync segment, results in order,
//! all-or-nothing on error, and a connection that stays usable.

mod common;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::tokio::Client;

use common::connect_async as connect;

/// A table of this test's own, so that tests running at once never share rows.
async fn table(client: &Client, name: &str) -> String {
    let table = format!("{name}_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int4 PRIMARY KEY, name text)"
        ))
        .await
        .unwrap();
    table
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_thousand_inserts_in_one_batch() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let table = table(&client, "batch_insert").await;
    let insert = client
        .prepare(&format!("INSERT INTO {table} VALUES ($1, $2)"))
        .await
        .unwrap();
    let mut batch = client.pipeline();
    for id in 0..1000i32 {
        batch
            .query(&insert, &[&id, &format!("row {id}")])
            .await
            .unwrap();
    }
    assert_eq!(batch.len(), 1000);
    let results = batch.run().await.unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r.rows_affected() == 1));
    assert_eq!(count(&client, &table).await, 1000);
    let name: String = client
        .query_one(&format!("SELECT name FROM {table} WHERE id = 999"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "row 999");
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

/// Through `run` and `stream`, with statements prepared or run as the unnamed statement.
#[tokio::test]
async fn results_come_back_in_order_with_their_own_columns() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    for policy in [pqlib::PreparePolicy::Always, pqlib::PreparePolicy::Never] {
        let config = common::config_with(&common::conninfo(), policy);
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        tokio::spawn(connection);
        for streamed in [false, true] {
            let mut batch = client.pipeline();
            batch.query("SELECT $1::int4 * 2", &[&21i32]).await.unwrap();
            batch
                .query("SELECT $1::text AS word, 7::int8 AS n", &[&"hello"])
                .await
                .unwrap();
            batch
                .query("SELECT g FROM generate_series(1, $1) g", &[&5i32])
                .await
                .unwrap();
            batch
                .query("SET LOCAL work_mem = '1MB'", &[])
                .await
                .unwrap();
            let results = if streamed {
                let mut stream = batch.stream().unwrap();
                assert_eq!(stream.remaining(), 4);
                let first = stream.next_result().await.unwrap().unwrap();
                assert_eq!(stream.remaining(), 3);
                let (mut rest, error) = drain(&mut stream).await;
                assert!(error.is_none(), "{error:?}");
                assert!(
                    stream.next_result().await.is_none(),
                    "ended streams stay ended"
                );
                rest.insert(0, first);
                rest
            } else {
                batch.run().await.unwrap()
            };
            assert_eq!(results.len(), 4, "{policy:?}, streamed: {streamed}");
            assert_eq!(results[0].get(0).unwrap().get::<_, i32>(0), 42);
            let row = results[1].get(0).unwrap();
            assert_eq!(row.get::<_, &str>("word"), "hello");
            assert_eq!(row.get::<_, i64>("n"), 7);
            let series: Vec<i32> = results[2].iter().map(|r| r.get(0)).collect();
            assert_eq!(series, [1, 2, 3, 4, 5]);
            assert!(results[3].is_empty());
        }
        // An empty batch is an empty stream.
        assert!(
            client
                .pipeline()
                .stream()
                .unwrap()
                .next_result()
                .await
                .is_none()
        );
    }
}

/// Through `run` (the first error) and `stream` (the results before it, then the error as
/// the last item) alike.
#[tokio::test]
async fn an_error_rolls_the_whole_batch_back_and_the_connection_goes_on() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let table = table(&client, "batch_error").await;
    let insert = format!("INSERT INTO {table} VALUES ($1, 'x')");
    for (streamed, fresh_id) in [(false, 10i32), (true, 20)] {
        let mut batch = client.pipeline();
        for id in [1i32, 2, 3, 2, 4] {
            // The second 2 violates the primary key.
            batch.query(insert.as_str(), &[&id]).await.unwrap();
        }
        let error = if streamed {
            let (results, error) = drain(&mut batch.stream().unwrap()).await;
            // The three inserts before it were handed out, and are undone with the rest.
            assert_eq!(results.len(), 3);
            assert!(results.iter().all(|r| r.rows_affected() == 1));
            error.expect("the streamed batch failed")
        } else {
            batch.run().await.unwrap_err()
        };
        assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION), "{error}");
        // One implicit transaction: the inserts before the failure are gone too.
        assert_eq!(count(&client, &table).await, i64::from(streamed));
        // A new batch works afterwards.
        let mut batch = client.pipeline();
        batch.query(insert.as_str(), &[&fresh_id]).await.unwrap();
        if streamed {
            let (results, error) = drain(&mut batch.stream().unwrap()).await;
            assert!(error.is_none(), "{error:?}");
            assert_eq!(results.len(), 1);
        } else {
            batch.run().await.unwrap();
        }
        assert_eq!(count(&client, &table).await, 1 + i64::from(streamed));
    }
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_statements_fail_before_anything_is_sent() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut batch = client.pipeline();
    let e = batch.query("SELECT $1::int4", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let e = batch
        .query("SELECT $1::int4", &[&"text"])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e}");
    let e = batch.query("SELEKT 1", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e}");
    // The failed additions left nothing behind; what was added still runs.
    batch.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(batch.len(), 1);
    let results = batch.run().await.unwrap();
    assert_eq!(results[0].get(0).unwrap().get::<_, i32>(0), 1);
    assert!(client.pipeline().run().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_single_statements_from_other_tasks_interleave_safely() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut tasks = Vec::new();
    for t in 0..8i32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            if t % 2 == 0 {
                let mut batch = client.pipeline();
                for i in 0..100i32 {
                    batch.query("SELECT $1::int4 + $2::int4", &[&t, &i]).await?;
                }
                let results = batch.run().await?;
                for (i, rows) in results.iter().enumerate() {
                    assert_eq!(rows.get(0).unwrap().get::<_, i32>(0), t + i as i32);
                }
            } else {
                for i in 0..100i32 {
                    let row = client
                        .query_one("SELECT $1::int4 - $2::int4", &[&t, &i])
                        .await?;
                    assert_eq!(row.get::<_, i32>(0), t - i);
                }
            }
            Ok::<(), pqlib::Error>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_batch_inside_a_transaction_is_part_of_it() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    let table = table(&client, "batch_tx").await;
    let insert = format!("INSERT INTO {table} VALUES ($1, 'x')");
    let tx = client.transaction().await.unwrap();
    let mut batch = tx.pipeline();
    batch.query(insert.as_str(), &[&1i32]).await.unwrap();
    batch.query(insert.as_str(), &[&2i32]).await.unwrap();
    batch.run().await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&client, &table).await, 0);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

/// Reads a streamed batch to its end: its results, or the error that ended it.
async fn drain(
    stream: &mut pqlib::tokio::PipelineStream,
) -> (Vec<pqlib::Rows>, Option<pqlib::Error>) {
    let mut results = Vec::new();
    while let Some(item) = stream.next_result().await {
        match item {
            Ok(rows) => results.push(rows),
            Err(e) => {
                assert!(
                    stream.next_result().await.is_none(),
                    "an item after the error"
                );
                return (results, Some(e));
            }
        }
    }
    (results, None)
}

/// A consumer that stops reading holds the server back (its backend waits to write) instead
/// of the results piling up in memory; it then gets every result. (The batch itself is small:
/// while libpq sends one larger than the socket holds, it reads the server's answers into its
/// buffer, to avoid a deadlock.)
#[tokio::test]
async fn a_paused_streamed_batch_holds_the_server_back_and_loses_nothing() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    // The sequence counts the statements the server has run.
    let (sequence, pid) = common::progress_sequence(&client, "batch_progress").await;
    let statement = client
        .prepare(&format!(
            "SELECT $1::int8, repeat('x', 10000), nextval('{sequence}')"
        ))
        .await
        .unwrap();
    // ≈ 80 kB of requests, 20 MB of answers: far more than the socket and the stream hold.
    const STATEMENTS: i64 = 2_000;
    let mut batch = client.pipeline();
    for i in 0..STATEMENTS {
        batch.query(&statement, &[&i]).await.unwrap();
    }
    let mut stream = batch.stream().unwrap();
    let first = stream.next_result().await.unwrap().unwrap();
    assert_eq!(first.get(0).unwrap().get::<_, i64>(0), 0);
    // Paused: the connection task keeps running, the backend must block on the socket.
    let ran = common::assert_held_back(pid, &sequence).await;
    assert!(
        ran < STATEMENTS / 2,
        "{ran} statements ran ahead of the consumer"
    );
    let mut sum = 0;
    let mut next = 1;
    while let Some(rows) = stream.next_result().await {
        let value: i64 = rows.unwrap().get(0).unwrap().get(0);
        assert_eq!(value, next);
        sum += value;
        next += 1;
    }
    assert_eq!(next, STATEMENTS);
    assert_eq!(sum, (1..STATEMENTS).sum::<i64>());
    client
        .batch_execute(&format!("DROP SEQUENCE {sequence}"))
        .await
        .unwrap();
}

/// A stream dropped part way (or before its first poll): the rest is read and discarded,
/// and the next request gets its own answer.
#[tokio::test]
async fn a_dropped_streamed_batch_leaves_the_connection_answering_correctly() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let statement = client.prepare("SELECT $1::int8").await.unwrap();
    for read_first in [0, 1, 300] {
        let mut batch = client.pipeline();
        for i in 0..2_000i64 {
            batch.query(&statement, &[&i]).await.unwrap();
        }
        let mut stream = batch.stream().unwrap();
        for i in 0..read_first {
            let rows = stream.next_result().await.unwrap().unwrap();
            assert_eq!(rows.get(0).unwrap().get::<_, i64>(0), i);
        }
        drop(stream);
        for probe in [-1i64, -2] {
            let row = client.query_one(&statement, &[&probe]).await.unwrap();
            assert_eq!(
                row.get::<_, i64>(0),
                probe,
                "after dropping at {read_first}"
            );
        }
    }
}
