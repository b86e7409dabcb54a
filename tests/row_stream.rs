//! `query_raw`: rows streamed as the server sends them.

mod common;

use pqlib::Connection;
use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::ToSql;

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connect to the test server")
}

#[test]
fn rows_arrive_in_order_with_the_final_count() {
    let mut conn = connect();
    let mut stream = conn
        .query_raw(
            "SELECT g, g::text FROM generate_series(1, $1) g",
            [&25_000i32],
        )
        .unwrap();
    let mut expected = 1;
    while let Some(row) = stream.next_row() {
        let row = row.unwrap();
        assert_eq!(row.get::<_, i32>(0), expected);
        assert_eq!(row.get::<_, &str>(1), expected.to_string());
        expected += 1;
    }
    assert_eq!(expected, 25_001);
    assert_eq!(stream.rows_affected(), Some(25_000));
    assert!(
        stream.next_row().is_none(),
        "a finished stream stays finished"
    );
    drop(stream);
    assert_eq!(
        conn.query_one("SELECT 1::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[test]
fn parameters_can_be_built_at_run_time() {
    let mut conn = connect();
    let params: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(3i32), Box::new("x".to_owned())];
    let mut stream = conn
        .query_raw("SELECT repeat($2, g) FROM generate_series(1, $1) g", params)
        .unwrap();
    let mut seen = Vec::new();
    while let Some(row) = stream.next_row() {
        seen.push(row.unwrap().get::<_, String>(0));
    }
    assert_eq!(seen, ["x", "xx", "xxx"]);
}

#[test]
fn chunks_are_owned_results() {
    let mut conn = connect();
    let mut stream = conn
        .query_raw("SELECT generate_series(1, 5000)", std::iter::empty::<i32>())
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next_chunk() {
        chunks.push(chunk.unwrap());
    }
    drop(stream);
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    assert_eq!(total, 5000);
    // Chunks outlive the stream and the connection's next query.
    conn.batch_execute("SELECT 1").unwrap();
    let last: i32 = chunks.last().unwrap().iter().next_back().unwrap().get(0);
    assert_eq!(last, 5000);
    if pqlib::version().major >= 17 {
        assert_eq!(
            chunks.len(),
            5000 / pqlib::STREAM_CHUNK_ROWS,
            "chunked-rows mode"
        );
    } else {
        assert_eq!(chunks.len(), 5000, "single-row mode");
    }
}

#[test]
fn an_error_mid_stream_ends_it_and_leaves_the_connection_usable() {
    let mut conn = connect();
    let mut stream = conn
        .query_raw(
            "SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g",
            std::iter::empty::<i32>(),
        )
        .unwrap();
    let mut rows = 0;
    let mut error = None;
    while let Some(row) = stream.next_row() {
        match row {
            Ok(_) => rows += 1,
            Err(e) => error = Some(e),
        }
    }
    let error = error.expect("the division by zero arrives as an Err item");
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert!(rows < 5000, "rows before the error: {rows}");
    drop(stream);
    assert_eq!(
        conn.query_one("SELECT 2::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[test]
fn dropping_a_stream_early_leaves_the_connection_usable() {
    let mut conn = connect();
    {
        let mut stream = conn
            .query_raw(
                "SELECT generate_series(1, 100000)",
                std::iter::empty::<i32>(),
            )
            .unwrap();
        assert_eq!(stream.next_row().unwrap().unwrap().get::<_, i32>(0), 1);
    }
    assert_eq!(
        conn.query_one("SELECT 3::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[test]
fn a_wrong_parameter_count_is_bad_input() {
    let mut conn = connect();
    let error = conn
        .query_raw("SELECT $1::int4", std::iter::empty::<i32>())
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput);
    assert_eq!(
        conn.query_one("SELECT 4::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        4
    );
}
