//! `simple_query` on the blocking `Connection` and `Transaction`, the async `Client` and the
//! pooled client: several statements' rows and completions in order, access by index and
//! name, NULL, empty text, errors and COPY in the middle of a text (the connection stays in
//! step), NUL bytes, text that is not UTF-8 (a `SQL_ASCII` database), concurrency with
//! pipelined queries, and futures dropped before their answer.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Context;
use std::time::Duration;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::tokio::Client;
use pqlib::{Config, Connection, SimpleQueryMessage, SimpleQueryRow, TransactionStatus};

// Answers own their data: they can go to other threads and outlive the connection.
static_assertions::assert_impl_all!(SimpleQueryMessage: Send, Sync, std::fmt::Debug);
static_assertions::assert_impl_all!(SimpleQueryRow: Send, Sync, std::fmt::Debug);
static_assertions::assert_impl_all!(pqlib::SimpleColumn: Send, Sync, Clone, std::fmt::Debug);

/// The longest any async step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

/// A script with commands and rows: CREATE, INSERT of three rows (one NULL), their SELECT,
/// and SHOW.
const SCRIPT: &str = "CREATE TEMP TABLE people (id int4, name text); \
     INSERT INTO people VALUES (1, 'Ada'), (2, NULL), (3, 'Grace'); \
     SELECT id, name FROM people ORDER BY id; \
     SHOW server_version";

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting")
}

/// One line per message: `desc a,b`, `row v1|v2` (`NULL` for NULL), `complete n`.
fn render(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|message| match message {
            SimpleQueryMessage::RowDescription(columns) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                format!("desc {}", names.join(","))
            }
            SimpleQueryMessage::Row(row) => {
                let values: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect();
                format!("row {}", values.join("|"))
            }
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            other => format!("unknown message {other:?}"),
        })
        .collect()
}

fn script_answer(server_version: &str) -> Vec<String> {
    [
        "complete 0",
        "complete 3",
        "desc id,name",
        "row 1|Ada",
        "row 2|NULL",
        "row 3|Grace",
        "complete 3",
        "desc server_version",
        &format!("row {server_version}"),
        "complete 0",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn rows(messages: &[SimpleQueryMessage]) -> Vec<&SimpleQueryRow> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect()
}

/// The connection answers a tagged query with its own tag, outside any transaction.
fn assert_in_step(conn: &mut Connection, tag: &str) {
    let row = conn.query_one("SELECT $1::text", &[&tag]).expect("a probe");
    assert_eq!(row.get::<_, &str>(0), tag);
    let messages = conn
        .simple_query(&format!("SELECT '{tag}' AS tag"))
        .expect("a simple probe");
    assert_eq!(
        render(&messages),
        ["desc tag", &format!("row {tag}"), "complete 1"]
    );
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

// ---------------------------------------------------------------------------------------------
// The blocking client.

#[test]
fn a_script_gives_rows_and_completions_in_order() {
    let mut conn = connect();
    let version = conn.parameter_status("server_version").unwrap();
    let messages = conn.simple_query(SCRIPT).unwrap();
    assert_eq!(render(&messages), script_answer(&version));
    // The rows own their text: the messages outlive the next statement.
    conn.batch_execute("DROP TABLE people").unwrap();
    let rows = rows(&messages);
    assert_eq!(rows[2].get("name"), Some("Grace"));
    assert_eq!(rows[0].columns()[1].name(), "name");
    assert_in_step(&mut conn, "after the script");
    drop(conn);
    assert_eq!(rows[0].get(1), Some("Ada"));
}

#[test]
fn values_by_index_and_name_null_and_wrong_columns() {
    let mut conn = connect();
    let messages = conn
        .simple_query("SELECT 1 AS \"Id\", NULL AS nothing, '' AS empty, 'x' AS id")
        .unwrap();
    let [row] = rows(&messages)[..] else {
        panic!("one row expected: {:?}", render(&messages));
    };
    assert_eq!(row.len(), 4);
    assert!(!row.is_empty());
    assert_eq!(row.get(0), Some("1"));
    // An exact match first, then one that differs in case.
    assert_eq!(row.get("Id"), Some("1"));
    assert_eq!(row.get("id"), Some("x"));
    assert_eq!(row.get("ID"), Some("1"));
    // NULL is None; the empty string is not.
    assert_eq!(row.get("nothing"), None);
    assert_eq!(row.try_get(1).unwrap(), None);
    assert_eq!(row.raw("nothing").unwrap(), None);
    assert_eq!(row.get("empty"), Some(""));
    assert_eq!(row.raw(2).unwrap(), Some(&b""[..]));

    let unknown = row.try_get("missing").unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::Column, "{unknown}");
    assert!(unknown.to_string().contains("missing"), "{unknown}");
    let out_of_range = row.try_get(4).unwrap_err();
    assert_eq!(out_of_range.kind(), ErrorKind::Column, "{out_of_range}");
    assert_eq!(row.raw(9).unwrap_err().kind(), ErrorKind::Column);
    // `get` with a column that does not exist is a bug in the caller: it panics, as in
    // `postgres`, and says which column.
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| row.get("missing"))).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("missing"), "{message:?}");

    // A statement that returns no rows still describes its columns; `SELECT;` has none.
    let messages = conn
        .simple_query("SELECT 1 AS a WHERE false; SELECT;")
        .unwrap();
    assert_eq!(
        render(&messages),
        ["desc a", "complete 0", "desc ", "row ", "complete 1"]
    );
    let empty = rows(&messages)[0];
    assert!(empty.is_empty());
    assert!(empty.try_get(0).is_err());
}

/// A `BINARY` cursor's rows are binary: `raw` gives each value's exact bytes, NULs included.
#[test]
fn binary_cursor_values_come_whole_through_raw() {
    let mut conn = connect();
    let messages = conn
        .simple_query(
            "BEGIN; DECLARE c BINARY CURSOR FOR SELECT 258::int4, '\\x00ff00'::bytea; \
             FETCH c; ROLLBACK",
        )
        .unwrap();
    let [row] = rows(&messages)[..] else {
        panic!("one row expected: {:?}", render(&messages));
    };
    assert_eq!(row.raw(0).unwrap(), Some(&[0u8, 0, 1, 2][..]));
    assert_eq!(row.raw(1).unwrap(), Some(&[0u8, 0xff, 0][..]));
    assert_eq!(row.try_get(1).unwrap_err().kind(), ErrorKind::Conversion);
    assert_in_step(&mut conn, "after a binary cursor");
}

#[test]
fn empty_text_gives_no_messages() {
    let mut conn = connect();
    for sql in ["", ";", "  -- only a comment", "/* a comment */ ;"] {
        let messages = conn.simple_query(sql).unwrap();
        assert!(messages.is_empty(), "{sql:?}: {:?}", render(&messages));
    }
    assert_in_step(&mut conn, "after empty texts");
}

#[test]
fn an_error_ends_the_text_and_rolls_back_its_implicit_transaction() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE e (x int4)").unwrap();
    let error = conn
        .simple_query(
            "INSERT INTO e VALUES (1); SELECT 'before'; SELECT 1/0; INSERT INTO e VALUES (2)",
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    // The statements before the error ran in the same implicit transaction: rolled back.
    let count: i64 = conn
        .query_one("SELECT count(*) FROM e", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    assert_in_step(&mut conn, "after an error");

    // A syntax error refuses the whole text before anything runs.
    let error = conn.simple_query("SELECT 1; SELEC 2").unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR), "{error}");
    assert_in_step(&mut conn, "after a syntax error");

    // Inside an explicit transaction the error leaves it failed, as the server says.
    let error = conn.simple_query("BEGIN; SELECT 1/0").unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    assert_eq!(conn.transaction_status(), TransactionStatus::InError);
    let messages = conn.simple_query("ROLLBACK").unwrap();
    assert_eq!(render(&messages), ["complete 0"]);
    assert_in_step(&mut conn, "after a failed explicit transaction");
}

#[test]
fn copy_in_a_text_is_ended_and_refused() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE c (x int4)").unwrap();
    for sql in [
        "SELECT 1; COPY (SELECT 2) TO STDOUT; SELECT 3",
        "COPY (SELECT generate_series(1, 100000)) TO STDOUT",
        "SELECT 1; COPY c FROM STDIN",
        "COPY c FROM STDIN; COPY c FROM STDIN",
        "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT; SELECT 3",
    ] {
        let error = conn.simple_query(sql).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadInput, "{sql}: {error}");
        assert!(error.to_string().contains("COPY"), "{sql}: {error}");
        assert!(!conn.is_closed(), "{sql}");
        assert_in_step(&mut conn, sql);
    }
    let count: i64 = conn
        .query_one("SELECT count(*) FROM c", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "an aborted COPY FROM STDIN copied rows");
}

#[test]
fn a_nul_byte_in_the_text_is_bad_input() {
    let mut conn = connect();
    let error = conn.simple_query("SELECT 1;\0 DROP TABLE x").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    assert!(error.to_string().contains("NUL"), "{error}");
    assert_in_step(&mut conn, "after a NUL byte");
}

#[test]
fn transaction_simple_query_runs_inside_the_transaction() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE tx (x int4)").unwrap();
    {
        let mut tx = conn.transaction().unwrap();
        let messages = tx
            .simple_query("INSERT INTO tx VALUES (1), (2); SELECT count(*) FROM tx")
            .unwrap();
        assert_eq!(
            render(&messages),
            ["complete 2", "desc count", "row 2", "complete 1"]
        );
        assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
        // Dropped: rolled back.
    }
    let count: i64 = conn
        .query_one("SELECT count(*) FROM tx", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

/// In a `SQL_ASCII` database with the client encoding `SQL_ASCII` the server passes stored
/// bytes through unchecked: `try_get` says the value is not UTF-8, `get` replaces what is
/// invalid, `raw` gives the bytes. Nothing panics.
#[test]
fn text_that_is_not_utf8_is_an_error_in_try_get_and_replaced_in_get() {
    let mut conn = connect();
    let _ = conn.batch_execute("DROP DATABASE IF EXISTS pqlib_simple_sql_ascii");
    conn.batch_execute(
        "CREATE DATABASE pqlib_simple_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' \
         LC_CTYPE 'C' TEMPLATE template0",
    )
    .unwrap();
    let mut config: Config = common::conninfo().parse().unwrap();
    config.dbname("pqlib_simple_sql_ascii");
    {
        let mut ascii = config.connect().unwrap();
        let messages = ascii
            .simple_query(
                "SET client_encoding = 'SQL_ASCII'; \
                 SELECT convert_from('\\xff41'::bytea, 'SQL_ASCII') AS bad, 'ok' AS good",
            )
            .unwrap();
        let [row] = rows(&messages)[..] else {
            panic!("one row expected: {:?}", render(&messages));
        };
        let error = row.try_get("bad").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conversion, "{error}");
        assert!(error.to_string().contains("UTF-8"), "{error}");
        assert_eq!(row.get("bad"), Some("\u{FFFD}A"));
        assert_eq!(row.raw("bad").unwrap(), Some(&b"\xffA"[..]));
        assert_eq!(row.try_get("good").unwrap(), Some("ok"));
        assert_eq!(row.raw(1).unwrap(), Some(&b"ok"[..]));
        let debug = format!("{row:?}");
        assert!(debug.contains("ok"), "{debug}");
        assert_in_step(&mut ascii, "in SQL_ASCII");
    }
    conn.batch_execute("DROP DATABASE pqlib_simple_sql_ascii")
        .unwrap();
}

/// `SET client_encoding` to an encoding that converts, then back, in one text: allowed (as
/// with `batch_execute`); left converting: the connection is closed, never read wrongly.
#[test]
fn client_encoding_changed_by_the_text() {
    let mut conn = connect();
    let messages = conn
        .simple_query("SET client_encoding TO 'LATIN1'; SET client_encoding TO 'UTF8'")
        .unwrap();
    assert_eq!(render(&messages), ["complete 0", "complete 0"]);
    assert_in_step(&mut conn, "after LATIN1 and back");
    let error = conn
        .simple_query("SET client_encoding TO 'LATIN1'; SELECT chr(233)")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    assert!(conn.is_closed());
    let after = conn.simple_query("SELECT 1").unwrap_err();
    assert_eq!(after.kind(), ErrorKind::Closed, "{after}");
}

// ---------------------------------------------------------------------------------------------
// The async client.

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("a step took longer than 30 s")
}

async fn connect_async() -> Client {
    bounded(common::connect_async()).await
}

async fn assert_in_step_async(client: &Client, tag: &str) {
    let row = bounded(client.query_one("SELECT $1::text", &[&tag]))
        .await
        .expect("a probe");
    assert_eq!(row.get::<_, &str>(0), tag);
    let messages = bounded(client.simple_query(&format!("SELECT '{tag}' AS tag")))
        .await
        .expect("a simple probe");
    assert_eq!(
        render(&messages),
        ["desc tag", &format!("row {tag}"), "complete 1"]
    );
}

#[tokio::test]
async fn async_script_error_copy_and_nul() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect_async().await;
    let version: String = bounded(client.query_one("SHOW server_version", &[]))
        .await
        .unwrap()
        .get(0);
    let messages = bounded(client.simple_query(SCRIPT)).await.unwrap();
    assert_eq!(render(&messages), script_answer(&version));
    assert_eq!(rows(&messages)[0].get("ID"), Some("1"));

    let messages = bounded(client.simple_query("")).await.unwrap();
    assert!(messages.is_empty(), "{:?}", render(&messages));

    let error = bounded(client.simple_query(
        "INSERT INTO people VALUES (4, 'x'); SELECT 1/0; INSERT INTO people VALUES (5, 'y')",
    ))
    .await
    .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    let count: i64 = bounded(client.query_one("SELECT count(*) FROM people", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3, "the failed text's insert was not rolled back");
    assert_in_step_async(&client, "after an error").await;

    for sql in [
        "SELECT 1; COPY (SELECT 2) TO STDOUT; SELECT 3",
        "SELECT 1; COPY people FROM STDIN",
        "COPY people FROM STDIN; COPY people FROM STDIN",
        "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT",
    ] {
        let error = bounded(client.simple_query(sql)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadInput, "{sql}: {error}");
        assert_in_step_async(&client, sql).await;
    }

    let error = bounded(client.simple_query("SELECT\0 1"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    assert_in_step_async(&client, "after a NUL byte").await;
    assert!(!client.is_closed());
}

#[tokio::test]
async fn async_transaction_simple_query_through_deref() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect_async().await;
    bounded(client.batch_execute("CREATE TEMP TABLE atx (x int4)"))
        .await
        .unwrap();
    let tx = bounded(client.transaction()).await.unwrap();
    let messages = bounded(tx.simple_query("INSERT INTO atx VALUES (1); SELECT count(*) FROM atx"))
        .await
        .unwrap();
    assert_eq!(
        render(&messages),
        ["complete 1", "desc count", "row 1", "complete 1"]
    );
    bounded(tx.rollback()).await.unwrap();
    let count: i64 = bounded(client.query_one("SELECT count(*) FROM atx", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

/// Tasks sharing one client mix `simple_query` (which runs alone, outside the pipeline)
/// with pipelined queries: each gets exactly its own answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_simple_queries_and_queries_get_their_own_answers() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect_async().await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let tag = format!("t{task}-{i}");
                    if (task + i) % 2 == 0 {
                        let sql = format!(
                            "SELECT '{tag}' AS tag; SELECT g FROM generate_series(1, {i}) g"
                        );
                        let messages = bounded(client.simple_query(&sql)).await.unwrap();
                        let mut want = vec!["desc tag".to_owned(), format!("row {tag}")];
                        want.push("complete 1".into());
                        want.push("desc g".into());
                        want.extend((1..=i).map(|g| format!("row {g}")));
                        want.push(format!("complete {i}"));
                        assert_eq!(render(&messages), want, "{tag}");
                    } else {
                        let row = bounded(client.query_one("SELECT $1::text", &[&tag]))
                            .await
                            .unwrap();
                        assert_eq!(row.get::<_, &str>(0), tag);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        bounded(task).await.expect("a task panicked");
    }
    assert_in_step_async(&client, "after the tasks").await;
}

/// Polls `future` once (so its request is queued), lets the connection task run if
/// `yield_first` (so it may be sent), then drops it.
async fn poll_once_then_drop<F: Future>(future: F, yield_first: bool) {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // On a multi-thread runtime the connection task may send the request and get its answer
    // before this first poll returns (a loaded machine deschedules the poller): then there is
    // nothing left to drop, and the round checks only that the client is in step.
    if future.as_mut().poll(&mut cx).is_ready() {
        return;
    }
    if yield_first {
        tokio::task::yield_now().await;
    }
}

/// `simple_query` futures dropped before their answer (polled once, cut by a timeout, held
/// behind a pipelined query, or cut in the middle of a COPY it must discard): the next
/// requests get their own answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_simple_query_futures_leave_the_client_in_step() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect_async().await;
    bounded(client.batch_execute("CREATE TEMP TABLE dropped (tag text)"))
        .await
        .unwrap();
    for round in 0..30u64 {
        let tag = format!("dropped-{round}");
        let sql = format!(
            "INSERT INTO dropped VALUES ('{tag}'); SELECT '{tag}', pg_sleep(0.001); \
             SELECT g FROM generate_series(1, 1000) g"
        );
        match round % 4 {
            0 => poll_once_then_drop(client.simple_query(&sql), false).await,
            1 => poll_once_then_drop(client.simple_query(&sql), true).await,
            2 => {
                let cut = Duration::from_micros(round * 200);
                let _ = tokio::time::timeout(cut, client.simple_query(&sql)).await;
            }
            _ => {
                // Held behind a pipelined query still running, then dropped.
                let params: [&(dyn pqlib::types::ToSql + Sync); 1] = [&tag];
                let ahead = client.query_one("SELECT $1::text, pg_sleep(0.01)", &params);
                let mut ahead = Box::pin(ahead);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                assert!(ahead.as_mut().poll(&mut cx).is_pending());
                poll_once_then_drop(client.simple_query(&sql), true).await;
                let row = bounded(ahead).await.unwrap();
                assert_eq!(row.get::<_, &str>(0), tag);
            }
        }
        if round % 5 == 0 {
            // A dropped text with a COPY the connection task must discard.
            let copy = format!("SELECT '{tag}'; COPY (SELECT generate_series(1, 50000)) TO STDOUT");
            poll_once_then_drop(client.simple_query(&copy), true).await;
        }
        let own = format!("own-{round}");
        assert_in_step_async(&client, &own).await;
    }
    // The dropped texts that were sent ran to their end (or not at all): never half.
    let messages = bounded(client.simple_query("SELECT count(*) FROM dropped"))
        .await
        .unwrap();
    let count: u64 = rows(&messages)[0].get(0).unwrap().parse().unwrap();
    assert!(count <= 30, "{count} rows from 30 texts");
}

/// Through deadpool: a text that opens a transaction is noted, so the next checkout of the
/// connection is not inside it.
#[tokio::test]
async fn pooled_simple_query_that_begins_a_transaction_is_cleaned_up() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    use pqlib::pool::deadpool::{Manager, Pool};
    let config: Config = common::conninfo().parse().unwrap();
    let pool = Pool::builder(Manager::new(config))
        .max_size(1)
        .build()
        .unwrap();
    {
        let client = bounded(pool.get()).await.unwrap();
        let messages = bounded(client.simple_query("BEGIN; SELECT 1 AS one"))
            .await
            .unwrap();
        assert_eq!(
            render(&messages),
            ["complete 0", "desc one", "row 1", "complete 1"]
        );
    }
    let client = bounded(pool.get()).await.unwrap();
    let mut txids = Vec::new();
    for _ in 0..2 {
        let messages = bounded(client.simple_query("SELECT txid_current()"))
            .await
            .unwrap();
        txids.push(rows(&messages)[0].get(0).unwrap().to_owned());
    }
    let (first, second) = (&txids[0], &txids[1]);
    assert_ne!(
        first, second,
        "the checkout is still inside the transaction"
    );
}
