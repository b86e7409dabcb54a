//! `PreparePolicy`: what each policy leaves on the server (`pg_prepared_statements`), that
//! results and errors are the same as with named statements, and how a description made
//! stale by DDL is noticed and made again. Both clients.

mod common;

use pqlib::error::ErrorKind;
use pqlib::{Config, Connection, PreparePolicy};

fn config(policy: PreparePolicy) -> Config {
    common::config_with(&common::conninfo(), policy)
}

fn connect(policy: PreparePolicy) -> Connection {
    config(policy).connect().expect("connect")
}

/// The named statements the server holds for this session.
fn prepared(conn: &mut Connection) -> Vec<String> {
    conn.simple_query("SELECT statement FROM pg_prepared_statements ORDER BY name")
        .expect("pg_prepared_statements")
        .iter()
        .filter_map(|m| match m {
            pqlib::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[test]
fn never_leaves_no_named_statement_and_answers_the_same() {
    let mut conn = connect(PreparePolicy::Never);
    for i in 0..5i64 {
        let row = conn
            .query_one("SELECT $1::int8 * 2, $2::text", &[&i, &"x"])
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 2 * i);
        assert_eq!(row.get::<_, &str>(1), "x");
    }
    assert_eq!(conn.execute("SELECT 1", &[]).unwrap(), 1);
    assert!(
        conn.query_opt("SELECT 1 WHERE false", &[])
            .unwrap()
            .is_none()
    );
    let mut stream = conn
        .query_raw("SELECT g FROM generate_series(1, $1) g", [&3i32])
        .unwrap();
    let mut sum = 0;
    while let Some(row) = stream.next_row() {
        sum += row.unwrap().get::<_, i32>(0);
    }
    drop(stream);
    assert_eq!(sum, 6);
    {
        let mut pipeline = conn.pipeline().unwrap();
        pipeline.query("SELECT $1::int4 + 1", &[&1i32]).unwrap();
        pipeline.query("SELECT $1::int4 + 2", &[&1i32]).unwrap();
        pipeline.sync().unwrap();
        let mut got = Vec::new();
        while let Some(result) = pipeline.next_result() {
            if let Some(rows) = result.unwrap().into_rows() {
                got.push(rows.get(0).unwrap().get::<_, i32>(0));
            }
        }
        pipeline.finish().unwrap();
        assert_eq!(got, [2, 3]);
    }
    {
        let mut tx = conn.transaction().unwrap();
        let portal = tx
            .bind("SELECT g FROM generate_series(1, $1) g", &[&5i32])
            .unwrap();
        assert_eq!(tx.query_portal(&portal, 2).unwrap().len(), 2);
        assert_eq!(tx.query_portal(&portal, 0).unwrap().len(), 3);
        drop(portal);
        tx.commit().unwrap();
    }
    assert_eq!(prepared(&mut conn), Vec::<String>::new());
    // An explicit prepare still makes a named statement.
    let statement = conn.prepare("SELECT $1::int4").unwrap();
    assert_eq!(
        conn.query_one(&statement, &[&7i32])
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    assert_eq!(prepared(&mut conn), ["SELECT $1::int4"]);
}

#[test]
fn after_runs_prepares_a_text_once_it_has_run_that_often() {
    let mut conn = connect(PreparePolicy::AfterRuns(2));
    let sql = "SELECT $1::int4 AS after_runs";
    for run in 1..=2 {
        conn.query_one(sql, &[&run]).unwrap();
        assert_eq!(prepared(&mut conn), Vec::<String>::new(), "run {run}");
    }
    conn.query_one(sql, &[&3i32]).unwrap();
    assert_eq!(prepared(&mut conn), [sql]);
    // A text that runs once is never prepared.
    conn.query_one("SELECT $1::int4 AS once", &[&1i32]).unwrap();
    assert_eq!(prepared(&mut conn), [sql]);
}

#[test]
fn always_is_the_default_and_prepares_at_once() {
    assert_eq!(Config::new().get_prepare_policy(), PreparePolicy::Always);
    let mut conn = Connection::connect(&common::conninfo()).unwrap();
    conn.query_one("SELECT $1::int4 AS always", &[&1i32])
        .unwrap();
    assert_eq!(prepared(&mut conn), ["SELECT $1::int4 AS always"]);
}

#[test]
fn the_policy_is_pqlibs_own_setting_not_a_connection_option() {
    let mut a = Config::new();
    a.host("localhost");
    let mut b = a.clone();
    b.prepare_policy(PreparePolicy::Never);
    assert_ne!(a, b);
    assert!(format!("{b:?}").contains("prepare_policy: Never"), "{b:?}");
    assert!(!b.to_string().contains("prepare"), "{b}");
    assert!("prepare_policy=never".parse::<Config>().is_err());
}

/// DDL changes a parameter's type under a remembered description: the run fails with the
/// server's error (class 42), the description is dropped, and the next run describes again.
#[test]
fn a_description_made_stale_by_ddl_is_made_again() {
    let mut conn = connect(PreparePolicy::Never);
    conn.batch_execute(
        "DROP TABLE IF EXISTS policy_stale; CREATE TABLE policy_stale (k int4, v text);
         INSERT INTO policy_stale VALUES (1, 'one')",
    )
    .unwrap();
    let sql = "SELECT v FROM policy_stale WHERE k = $1";
    assert_eq!(
        conn.query_one(sql, &[&1i32]).unwrap().get::<_, &str>(0),
        "one"
    );
    conn.batch_execute("ALTER TABLE policy_stale ALTER COLUMN k TYPE text")
        .unwrap();
    let stale = conn.query_one(sql, &[&1i32]).unwrap_err();
    assert!(
        stale.code().is_some_and(|c| c.code().starts_with("42")),
        "{stale}"
    );
    // Described again: the parameter is text now, and an i32 is a clear conversion error.
    let wrong = conn.query_one(sql, &[&1i32]).unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Conversion, "{wrong}");
    assert_eq!(
        conn.query_one(sql, &[&"1"]).unwrap().get::<_, &str>(0),
        "one"
    );
}

/// A row stream takes its columns from the description: if DDL changed them, the stream
/// ends with an error instead of decoding rows as the wrong type, and the next run works.
#[test]
fn a_stream_whose_columns_changed_says_so() {
    let mut conn = connect(PreparePolicy::Never);
    conn.batch_execute(
        "DROP TABLE IF EXISTS policy_stream; CREATE TABLE policy_stream (k int4, v int4);
         INSERT INTO policy_stream VALUES (1, 10)",
    )
    .unwrap();
    let sql = "SELECT v FROM policy_stream WHERE k = $1";
    let first = {
        let mut stream = conn.query_raw(sql, [&1i32]).unwrap();
        let row = stream.next_row().unwrap().unwrap();
        row.get::<_, i32>(0)
    };
    assert_eq!(first, 10);
    conn.batch_execute("ALTER TABLE policy_stream ALTER COLUMN v TYPE int8")
        .unwrap();
    let error = {
        let mut stream = conn.query_raw(sql, [&1i32]).unwrap();
        stream.next_row().unwrap().unwrap_err()
    };
    assert!(error.to_string().contains("other columns"), "{error}");
    let mut stream = conn.query_raw(sql, [&1i32]).unwrap();
    assert_eq!(stream.next_row().unwrap().unwrap().get::<_, i64>(0), 10);
}

#[test]
fn wrong_parameters_are_clear_errors_and_nothing_is_sent() {
    let mut conn = connect(PreparePolicy::Never);
    let count = conn.query("SELECT $1::int4", &[]).unwrap_err();
    assert_eq!(count.kind(), ErrorKind::BadInput, "{count}");
    let nul = conn.query("SELECT $1::int4 -- \0", &[&1i32]).unwrap_err();
    assert_eq!(nul.kind(), ErrorKind::BadInput, "{nul}");
    let copy = conn.query("COPY (SELECT 1) TO STDOUT", &[]).unwrap_err();
    assert_eq!(copy.kind(), ErrorKind::BadInput, "{copy}");
    let syntax = conn.query("SELEC $1", &[&1i32]).unwrap_err();
    assert!(syntax.code().is_some(), "{syntax}");
    assert_eq!(conn.query_one("SELECT 5", &[]).unwrap().get::<_, i32>(0), 5);
}

#[tokio::test]
async fn the_async_client_follows_the_policy() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let (client, connection) = pqlib::tokio::connect_config(&config(PreparePolicy::Never))
        .await
        .unwrap();
    tokio::spawn(connection);
    let answers = futures_util::future::join_all((0..16i64).map(|i| {
        let client = client.clone();
        async move {
            let sql = format!("SELECT $1::int8 * {}", i % 4);
            let row = client.query_one(&sql as &str, &[&i]).await.unwrap();
            (i, row.get::<_, i64>(0))
        }
    }))
    .await;
    for (i, got) in answers {
        assert_eq!(got, i * (i % 4));
    }
    let mut batch = client.pipeline();
    batch.query("SELECT $1::int4 + 1", &[&1i32]).await.unwrap();
    batch.query("SELECT $1::int4 + 2", &[&1i32]).await.unwrap();
    let rows = batch.run().await.unwrap();
    assert_eq!(rows[1].get(0).unwrap().get::<_, i32>(0), 3);
    let mut stream = client
        .query_raw("SELECT g FROM generate_series(1, $1) g", [&4i32])
        .await
        .unwrap();
    let mut n = 0;
    while let Some(chunk) = stream.next_chunk().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, 4);
    let statements = client
        .query("SELECT statement FROM pg_prepared_statements", &[])
        .await
        .unwrap();
    assert_eq!(statements.len(), 0);
}
