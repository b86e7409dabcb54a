//! Pipeline mode against a real server, following libpq's own pipeline test scenarios.

mod common;

use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::Type;
use pqlib::{Connection, PipelineResult, Rows, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connect to the test server")
}

fn rows(result: Option<pqlib::Result<PipelineResult>>) -> Rows {
    result
        .expect("a result")
        .expect("no error")
        .into_rows()
        .expect("rows")
}

fn int(rows: &Rows) -> i32 {
    rows.get(0).expect("one row").get(0)
}

fn table(conn: &mut Connection, name: &str) {
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int4 PRIMARY KEY)"
    ))
    .unwrap();
}

fn ids(conn: &mut Connection, name: &str) -> Vec<i32> {
    conn.query(&format!("SELECT id FROM {name} ORDER BY id") as &str, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn simple_pipeline_returns_results_in_order() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    for i in 0..3i32 {
        p.query("SELECT $1::int4 * 10", &[&i]).unwrap();
    }
    p.query_typed("SELECT $1 || '!'", &[(&"typed", Type::TEXT)])
        .unwrap();
    p.sync().unwrap();
    assert_eq!(p.pending(), 5);
    for i in 0..3 {
        assert_eq!(int(&rows(p.next_result())), i * 10);
    }
    let typed = rows(p.next_result());
    assert_eq!(typed.get(0).unwrap().get::<_, &str>(0), "typed!");
    assert!(p.next_result().unwrap().unwrap().is_sync());
    assert!(p.next_result().is_none());
    p.finish().unwrap();
    // Back in normal mode.
    assert_eq!(
        conn.query_one("SELECT 7::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[test]
fn several_pipelines_are_sent_before_any_result_is_read() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    p.query("SELECT $1::int4", &[&1i32]).unwrap();
    p.sync().unwrap();
    p.query("SELECT $1::int4", &[&2i32]).unwrap();
    p.sync().unwrap();
    let mut seen = Vec::new();
    while let Some(result) = p.next_result() {
        match result.unwrap() {
            PipelineResult::Rows(r) => seen.push(int(&r)),
            PipelineResult::Sync => seen.push(-1),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [1, -1, 2, -1]);
    p.finish().unwrap();
}

#[test]
fn flush_request_returns_results_without_a_sync_point() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    p.query("SELECT $1::int4", &[&5i32]).unwrap();
    p.flush_request().unwrap();
    assert_eq!(int(&rows(p.next_result())), 5);
    // Reading also asks for a flush itself, so this cannot hang either.
    p.query("SELECT $1::int4", &[&6i32]).unwrap();
    assert_eq!(int(&rows(p.next_result())), 6);
    // finish() syncs the work after the last sync point.
    p.finish().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

#[test]
fn an_error_aborts_the_rest_of_its_sync_segment_only() {
    let mut conn = connect();
    table(&mut conn, "pipeline_abort");
    let mut p = conn.pipeline().unwrap();
    let insert = "INSERT INTO pipeline_abort VALUES ($1)";
    p.execute(insert, &[&1i32]).unwrap();
    p.sync().unwrap();
    p.execute(insert, &[&2i32]).unwrap();
    p.query("SELECT 1 / $1::int4", &[&0i32]).unwrap();
    p.execute(insert, &[&3i32]).unwrap();
    p.sync().unwrap();
    p.execute(insert, &[&4i32]).unwrap();
    p.sync().unwrap();

    assert_eq!(rows(p.next_result()).rows_affected(), 1);
    assert!(p.next_result().unwrap().unwrap().is_sync());
    // The failed segment: the insert before the error ran...
    assert_eq!(rows(p.next_result()).rows_affected(), 1);
    let error = p.next_result().unwrap().unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let skipped = p.next_result().unwrap().unwrap_err();
    assert_eq!(skipped.kind(), ErrorKind::PipelineAborted);
    assert!(p.next_result().unwrap().unwrap().is_sync());
    // ...and after the sync point everything works again.
    assert_eq!(rows(p.next_result()).rows_affected(), 1);
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
    // The failed segment was one implicit transaction: its first insert was rolled back too.
    assert_eq!(ids(&mut conn, "pipeline_abort"), [1, 4]);
}

#[test]
fn finishing_with_unread_results_is_an_error_not_a_hang() {
    let mut conn = connect();
    let started = Instant::now();
    let mut p = conn.pipeline().unwrap();
    p.query("SELECT 1", &[]).unwrap();
    p.query("SELECT 2", &[]).unwrap();
    let error = p.finish().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput);
    assert!(
        error
            .to_string()
            .contains("2 pipeline results were not read"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The dropped pipeline discarded them and left pipeline mode.
    assert_eq!(
        conn.query_one("SELECT 3::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[test]
fn dropping_a_pipeline_mid_way_leaves_the_connection_usable() {
    let mut conn = connect();
    table(&mut conn, "pipeline_drop");
    {
        let mut p = conn.pipeline().unwrap();
        for i in 0..100i32 {
            p.execute("INSERT INTO pipeline_drop VALUES ($1)", &[&i])
                .unwrap();
        }
        assert_eq!(rows(p.next_result()).rows_affected(), 1);
        // Dropped with 99 results unread and no sync point: synced, drained, exited.
    }
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(ids(&mut conn, "pipeline_drop").len(), 100);
}

#[test]
fn prepare_inside_a_pipeline_and_new_sql_text_keep_result_order() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    p.prepare("SELECT $1::int8 + 1").unwrap();
    // New SQL text is prepared inside the pipeline; the earlier result is kept in order.
    p.query("SELECT $1::text || 'x'", &[&"a"]).unwrap();
    p.sync().unwrap();
    let statement = p.next_result().unwrap().unwrap().into_statement().unwrap();
    assert_eq!(statement.params(), &[Type::INT8]);
    assert_eq!(statement.columns()[0].type_(), &Type::INT8);
    let text = rows(p.next_result());
    assert_eq!(text.get(0).unwrap().get::<_, &str>(0), "ax");
    assert!(p.next_result().unwrap().unwrap().is_sync());
    // The prepared statement runs in the pipeline and outside it.
    p.query(&statement, &[&41i64]).unwrap();
    p.sync().unwrap();
    let n: i64 = rows(p.next_result()).get(0).unwrap().get(0);
    assert_eq!(n, 42);
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
    let n: i64 = conn.query_one(&statement, &[&1i64]).unwrap().get(0);
    assert_eq!(n, 2);
}

#[test]
fn a_failed_prepare_inside_a_pipeline_is_reported_by_the_call() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    let error = p
        .query("SELECT * FROM no_such_table_anywhere", &[])
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE));
    p.sync().unwrap();
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.query("SELECT $1::int4", &[&9i32]).unwrap();
    p.sync().unwrap();
    assert_eq!(int(&rows(p.next_result())), 9);
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
}

#[test]
fn unique_violation_in_a_long_insert_stream() {
    let mut conn = connect();
    table(&mut conn, "pipeline_unique");
    let mut p = conn.pipeline().unwrap();
    let n = 10_000i32;
    for i in 0..n {
        let id = if i == 5_000 { 17 } else { i }; // 17 again: a duplicate key
        p.execute("INSERT INTO pipeline_unique VALUES ($1)", &[&id])
            .unwrap();
    }
    p.sync().unwrap();
    let mut ok = 0;
    let mut aborted = 0;
    let mut failed_at = None;
    for i in 0..n {
        match p.next_result().unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.kind() == ErrorKind::PipelineAborted => aborted += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
                failed_at = Some(i);
            }
        }
    }
    assert_eq!((ok, failed_at, aborted), (5_000, Some(5_000), n - 5_001));
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
    assert!(
        ids(&mut conn, "pipeline_unique").is_empty(),
        "the implicit transaction rolled back"
    );
}

#[test]
fn simple_protocol_calls_are_rejected_in_pipeline_mode() {
    let mut conn = connect();
    let mut p = conn.pipeline().unwrap();
    let error = p.batch_execute("SELECT 1").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput);
    assert!(
        error.to_string().contains("not allowed in pipeline mode"),
        "{error}"
    );
    // Several statements in one extended-protocol query are the server's error.
    p.query_typed("SELECT 1; SELECT 2", &[]).unwrap();
    p.sync().unwrap();
    assert_eq!(
        p.next_result().unwrap().unwrap_err().code(),
        Some(&SqlState::SYNTAX_ERROR)
    );
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
}

#[test]
fn one_hundred_thousand_inserts_do_not_deadlock() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TABLE IF EXISTS pipeline_bulk; CREATE UNLOGGED TABLE pipeline_bulk (id int4, note text)",
    )
    .unwrap();
    let note = "twenty bytes of text";
    let started = Instant::now();
    let mut p = conn.pipeline().unwrap();
    // Everything is sent before anything is read: libpq reads the server's answers while it
    // waits to send, so neither side blocks the other.
    for i in 0..100_000i32 {
        p.execute("INSERT INTO pipeline_bulk VALUES ($1, $2)", &[&i, &note])
            .unwrap();
    }
    p.sync().unwrap();
    let mut inserted = 0;
    while let Some(result) = p.next_result() {
        if let PipelineResult::Rows(r) = result.unwrap() {
            inserted += r.rows_affected();
        }
    }
    p.finish().unwrap();
    assert_eq!(inserted, 100_000);
    eprintln!("100k pipelined inserts: {:?}", started.elapsed());
    let count: i64 = conn
        .query_one("SELECT count(*) FROM pipeline_bulk", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 100_000);
}

#[test]
fn a_terminated_backend_ends_the_pipeline_with_a_closed_error() {
    let mut conn = connect();
    let pid = conn.backend_pid() as i32;
    let mut killer = connect();
    // Prepared up front: new SQL text inside a pipeline would wait for earlier results.
    let sleep = conn.prepare("SELECT pg_sleep(30)").unwrap();
    let one = conn.prepare("SELECT 1").unwrap();
    let mut p = conn.pipeline().unwrap();
    p.query(&sleep, &[]).unwrap();
    p.query(&one, &[]).unwrap();
    p.sync().unwrap();
    common::wait_until_active(&mut killer, pid);
    let terminated: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    let started = Instant::now();
    let mut closed = false;
    while let Some(result) = p.next_result() {
        if let Err(e) = result {
            closed |= e.is_closed();
        }
    }
    assert!(closed, "a Closed error was reported");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(p);
    assert!(conn.is_closed());
    conn.reset().unwrap();
    assert_eq!(
        conn.query_one("SELECT 1::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[test]
fn closing_a_prepared_statement_inside_a_pipeline() {
    let mut conn = connect();
    let statement = conn.prepare("SELECT $1::int4 + 100").unwrap();
    let name_count = |conn: &mut Connection| -> i64 {
        conn.query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int4 + 100'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(name_count(&mut conn), 1);
    let mut p = conn.pipeline().unwrap();
    p.query(&statement, &[&1i32]).unwrap();
    p.close(&statement).unwrap();
    p.query(&statement, &[&2i32]).unwrap();
    p.sync().unwrap();
    assert_eq!(int(&rows(p.next_result())), 101);
    assert!(p.next_result().unwrap().is_ok(), "the close");
    let error = p.next_result().unwrap().unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
    assert!(p.next_result().unwrap().unwrap().is_sync());
    p.finish().unwrap();
    assert_eq!(name_count(&mut conn), 0);
}
