//! `pqlib::tokio::Client::query_raw`: rows streamed in chunks, in order, with backpressure
//! that reaches the server, errors as the last item, and a connection that stays in step
//! whatever the consumer does.

mod common;

use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};

use common::connect_async as connect;

/// The most rows one chunk may hold with this libpq: chunked-rows mode on 17+, single rows
/// before.
fn max_chunk_rows() -> usize {
    if pqlib::version().major >= 17 {
        pqlib::STREAM_CHUNK_ROWS
    } else {
        1
    }
}

#[tokio::test]
async fn every_row_arrives_in_order_in_bounded_chunks() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut stream = client
        .query_raw(
            "SELECT g, g::text FROM generate_series(1, $1) g",
            [&25_000i32],
        )
        .await
        .unwrap();
    assert_eq!(stream.columns().len(), 2);
    let (mut next, mut chunks) = (1i32, 0usize);
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk.unwrap();
        assert!(
            !chunk.is_empty() && chunk.len() <= max_chunk_rows(),
            "{}",
            chunk.len()
        );
        chunks += 1;
        for row in &chunk {
            assert_eq!(row.get::<_, i32>(0), next);
            assert_eq!(row.get::<_, &str>(1), next.to_string());
            next += 1;
        }
    }
    assert_eq!(next, 25_001);
    assert!(chunks >= 25_000 / max_chunk_rows());
    assert_eq!(stream.rows_affected(), Some(25_000));
    // Ended for good.
    assert!(stream.next_chunk().await.is_none());
}

#[tokio::test]
async fn an_empty_result_is_an_empty_stream() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut stream = client
        .query_raw("SELECT 1 WHERE false", std::iter::empty::<i32>())
        .await
        .unwrap();
    assert!(stream.next_chunk().await.is_none());
    assert_eq!(stream.rows_affected(), Some(0));
}

#[tokio::test]
async fn the_stream_is_a_futures_stream() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    use futures_util::TryStreamExt;
    let client = connect().await;
    let stream = client
        .query_raw("SELECT generate_series(1, 3000)", std::iter::empty::<i32>())
        .await
        .unwrap();
    let chunks: Vec<pqlib::Rows> = stream.try_collect().await.unwrap();
    let total: i64 = chunks
        .iter()
        .flat_map(|chunk| chunk.iter().map(|row| i64::from(row.get::<_, i32>(0))))
        .sum();
    assert_eq!(total, 3000 * 3001 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_before_and_after_a_stream_keep_their_own_answers() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    // Sent before the stream: the stream waits for it.
    let before = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .query_one("SELECT pg_sleep(0.05)::text || $1::text", &[&"before"])
                .await
        })
    };
    tokio::task::yield_now().await;
    let mut stream = client
        .query_raw(
            "SELECT generate_series(1, 20000)",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    // Sent while the stream is open: queued behind it.
    let after: Vec<_> = (0..20i32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.query_one("SELECT $1::int4 * 3", &[&i]).await })
        })
        .collect();
    let mut rows = 0;
    while let Some(chunk) = stream.next_chunk().await {
        rows += chunk.unwrap().len();
    }
    assert_eq!(rows, 20_000);
    let before = before.await.unwrap().unwrap();
    assert_eq!(before.get::<_, &str>(0), "before");
    for (i, handle) in after.into_iter().enumerate() {
        let row = handle.await.unwrap().unwrap();
        assert_eq!(row.get::<_, i32>(0), 3 * i as i32);
    }
}

#[tokio::test]
async fn an_error_mid_stream_is_the_last_item_and_the_connection_goes_on() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut stream = client
        .query_raw(
            "SELECT 10 / (5000 - g) FROM generate_series(1, 10000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    let mut rows = 0;
    let error = loop {
        match stream.next_chunk().await {
            Some(Ok(chunk)) => rows += chunk.len(),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the division's error"),
        }
    };
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO), "{error}");
    // Rows before the failing one may or may not have been sent; none after it.
    assert!(rows < 5000, "{rows}");
    assert!(stream.next_chunk().await.is_none());
    assert_eq!(stream.rows_affected(), None);
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn bad_parameters_fail_before_anything_is_sent() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let e = client
        .query_raw("SELECT $1::int4", std::iter::empty::<i32>())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let e = client
        .query_raw("SELECT $1::int4", [&"text"])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e}");
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn a_dropped_stream_is_read_to_its_end_and_the_next_statement_gets_its_own_answer() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    for _ in 0..3 {
        let mut stream = client
            .query_raw(
                "SELECT g, repeat('y', 100) FROM generate_series(1, 200000) g",
                std::iter::empty::<i32>(),
            )
            .await
            .unwrap();
        let first = stream.next_chunk().await.unwrap().unwrap();
        assert_eq!(first.get(0).unwrap().get::<_, i32>(0), 1);
        drop(stream);
        let started = Instant::now();
        let row = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT 'next'::text", &[]),
        )
        .await
        .expect("the statement after a dropped stream hung")
        .unwrap();
        assert_eq!(row.get::<_, &str>(0), "next");
        eprintln!("the rest of a dropped stream took {:?}", started.elapsed());
    }
    // A stream dropped before it was even sent.
    let stream = client
        .query_raw("SELECT generate_series(1, 10)", std::iter::empty::<i32>())
        .await
        .unwrap();
    drop(stream);
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

/// A consumer that stops reading holds the server back: the backend stops producing rows
/// (blocked writing to the client) after a bounded number, instead of the connection task
/// reading the whole result into memory. A sequence counts the rows the server has made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_the_server_back() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    const ROWS: i64 = 2_000_000;
    let client = connect().await;
    let observer = connect().await;
    let sequence = format!("stream_progress_{}", std::process::id());
    observer
        .batch_execute(&format!(
            "DROP SEQUENCE IF EXISTS {sequence}; CREATE SEQUENCE {sequence}"
        ))
        .await
        .unwrap();
    let produced = || async {
        observer
            .query_one(&format!("SELECT last_value FROM {sequence}"), &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let mut stream = client
        .query_raw(
            &format!(
                "SELECT nextval('{sequence}'), repeat('z', 200) FROM generate_series(1, $1::int8) g"
            ),
            [&ROWS],
        )
        .await
        .unwrap();
    let mut rows = stream.next_chunk().await.unwrap().unwrap().len();
    // Not reading now: the count must settle (unchanged for 300 ms) well short of the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = produced().await;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300) {
        assert!(
            Instant::now() < deadline,
            "the server never stopped producing rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = produced().await;
        if now != last {
            (last, stable_since) = (now, Instant::now());
        }
    }
    eprintln!("the server stopped after {last} of {ROWS} rows");
    // What may pile up while nobody reads: the channel's batches, libpq's input buffer and
    // the socket's buffers in both kernels, ≈2,600 rows of ≈230 bytes here (unix socket).
    // Bounded at 40,000 rows (≈9 MB, above the largest TCP buffers Linux autotunes to by
    // default, 6 MB): a margin for other machines and connections, still 50 times short of
    // the 2,000,000 a client that buffered the whole result would let the server make.
    assert!(last < 40_000, "{last} rows produced while nobody read");
    // Then the whole result arrives once the consumer reads again.
    while let Some(chunk) = stream.next_chunk().await {
        rows += chunk.unwrap().len();
    }
    assert_eq!(rows as i64, ROWS);
    assert_eq!(stream.rows_affected(), Some(ROWS as u64));
    assert_eq!(produced().await, ROWS);
    observer
        .batch_execute(&format!("DROP SEQUENCE {sequence}"))
        .await
        .unwrap();
}
