//! COPY through the async client: sink and stream, binary helpers, failures and aborts, with
//! concurrent statements before and after.

mod common;

use std::time::SystemTime;

use bytes::Bytes;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::tokio::{BinaryCopyInWriter, BinaryCopyOutStream, Client};
use pqlib::types::Type;

use common::connect_async as connect;

async fn table(client: &Client, name: &str) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int4 PRIMARY KEY, note text)"
        ))
        .await
        .unwrap();
}

async fn count(client: &Client, name: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {name}") as &str, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn text_copy_in_and_out_round_trip() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    table(&client, "acopy_text").await;
    // Statements queued before the COPY finish first; the COPY waits for them.
    let before = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .query_one("SELECT pg_sleep(0.05), 1::int4", &[])
                .await
        })
    };
    let mut sink = client.copy_in("COPY acopy_text FROM STDIN").await.unwrap();
    for chunk in 0..100 {
        let mut data = String::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            data.push_str(&format!("{i}\tnote {i}\n"));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    before.await.unwrap().unwrap();
    assert_eq!(count(&client, "acopy_text").await, 100_000);

    let mut stream = client
        .copy_out("COPY (SELECT id, note FROM acopy_text ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let mut lines = 0;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        if bytes.len() < 64 {
            bytes.extend_from_slice(&chunk);
        }
    }
    assert_eq!(lines, 100_000);
    assert!(bytes.starts_with(b"0\tnote 0\n1\tnote 1\n"));
    // Back to pipelined statements.
    let n: i32 = client
        .query_one("SELECT 7::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn a_failing_copy_in_reports_at_finish_and_leaves_the_client_usable() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    table(&client, "acopy_dup").await;
    let mut sink = client.copy_in("COPY acopy_dup FROM STDIN").await.unwrap();
    sink.send(Bytes::from_static(b"1\ta\n1\tb\n"))
        .await
        .unwrap();
    let error = sink.finish().await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(count(&client, "acopy_dup").await, 0);
}

#[tokio::test]
async fn a_dropped_sink_aborts_the_copy() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    table(&client, "acopy_abort").await;
    {
        let mut sink = client.copy_in("COPY acopy_abort FROM STDIN").await.unwrap();
        sink.send(Bytes::from_static(b"1\ta\n")).await.unwrap();
    }
    assert_eq!(count(&client, "acopy_abort").await, 0);
    let mut sink = client.copy_in("COPY acopy_abort FROM STDIN").await.unwrap();
    sink.send(Bytes::from_static(b"2\tb\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
}

#[tokio::test]
async fn copy_out_errors_and_early_drops() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let mut stream = client
        .copy_out("COPY (SELECT 1 / (g - 5000) FROM generate_series(1, 10000) g) TO STDOUT")
        .await
        .unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert_eq!(
        last.unwrap().unwrap_err().code(),
        Some(&SqlState::DIVISION_BY_ZERO)
    );

    let mut stream = client
        .copy_out("COPY (SELECT generate_series(1, 200000)) TO STDOUT")
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    let n: i32 = client
        .query_one("SELECT 8::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8);
}

/// A consumer that stops reading a COPY OUT holds the server back: the connection task keeps
/// the stream's channel and libpq's buffer full, not everything the server sends.
#[tokio::test]
async fn a_paused_copy_out_stream_holds_the_server_back() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    // The sequence counts the rows the server has produced.
    let (sequence, pid) = common::progress_sequence(&client, "copy_out_progress").await;
    // ≈ 100 MB: far more than the socket, the channel (16 chunks of 64 KiB) and libpq hold.
    const ROWS: i64 = 100_000;
    let mut stream = client
        .copy_out(&format!(
            "COPY (SELECT nextval('{sequence}'), repeat('x', 1000) \
             FROM generate_series(1, {ROWS})) TO STDOUT"
        ))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"1\t"), "{:?}", &first[..8]);
    let mut lines = first.iter().filter(|&&b| b == b'\n').count();
    // Paused: the connection task keeps running; the backend must block on the socket.
    let produced = common::assert_held_back(pid, &sequence).await;
    assert!(
        produced < ROWS / 10,
        "{produced} rows were read ahead of the consumer"
    );
    while let Some(chunk) = stream.next().await {
        lines += chunk.unwrap().iter().filter(|&&b| b == b'\n').count();
    }
    assert_eq!(i64::try_from(lines).unwrap(), ROWS);
    client
        .batch_execute(&format!("DROP SEQUENCE {sequence}"))
        .await
        .unwrap();
}

/// A COPY OUT's stream reads the socket itself while it waits for a chunk, as a row stream
/// does: the data needs no turn of the connection task, so a task that is not polled (a busy
/// runtime, here held on purpose) does not stall it. The task is only needed again after.
#[tokio::test(flavor = "current_thread")]
async fn a_copy_out_stream_reads_while_the_connection_task_is_held() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    let _deadline = common::deadline(common::TEST_DEADLINE);
    let (client, mut connection) = pqlib::tokio::connect(&common::conninfo()).await.unwrap();
    let held = Arc::new(AtomicBool::new(false));
    let parked = Arc::new(Mutex::new(None::<Waker>));
    let (hold, park) = (held.clone(), parked.clone());
    tokio::spawn(std::future::poll_fn(move |cx| {
        if hold.load(Ordering::Acquire) {
            *park.lock().unwrap() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        while let Poll::Ready(message) = connection.poll_message(cx) {
            if message.is_none() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }));

    // ≈ 10 MB: many times what the socket and the stream's channel hold.
    const ROWS: usize = 100_000;
    let mut stream = client
        .copy_out(&format!(
            "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g) TO STDOUT"
        ))
        .await
        .unwrap();
    held.store(true, Ordering::Release);
    let mut lines = 0;
    let read_all = async {
        while let Some(chunk) = stream.next().await {
            lines += chunk.unwrap().iter().filter(|&&b| b == b'\n').count();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read_all)
        .await
        .expect("the stream reads the whole COPY within 30 s while the task is held");
    assert_eq!(lines, ROWS);

    held.store(false, Ordering::Release);
    if let Some(waker) = parked.lock().unwrap().take() {
        waker.wake();
    }
    let row = client.query_one("SELECT 42::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn the_wrong_direction_or_no_copy_is_bad_input() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    table(&client, "acopy_dir").await;
    let e = client
        .copy_in("COPY acopy_dir TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = client
        .copy_out("COPY acopy_dir FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = client.copy_in("SELECT 1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let n: i32 = client
        .query_one("SELECT 9::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 9);
}

#[tokio::test]
async fn binary_copy_round_trip() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS acopy_bin; CREATE TABLE acopy_bin (id int4, note text, x float8, at timestamptz)",
        )
        .await
        .unwrap();
    let types = [Type::INT4, Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ];
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let sink = client
        .copy_in("COPY acopy_bin FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for i in 0..10_000i32 {
        let note = (i % 3 != 0).then(|| format!("note ✓ {i}"));
        writer
            .write(&[&i, &note, &(f64::from(i) / 4.0), &now])
            .await
            .unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 10_000);

    let stream = client
        .copy_out("COPY (SELECT * FROM acopy_bin ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let mut rows = BinaryCopyOutStream::new(stream, &types);
    let mut i = 0i32;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.get::<i32>(0), i);
        let note: Option<&str> = row.get(1);
        assert_eq!(
            note.map(str::to_owned),
            (i % 3 != 0).then(|| format!("note ✓ {i}"))
        );
        assert_eq!(row.get::<f64>(2), f64::from(i) / 4.0);
        assert_eq!(row.get::<SystemTime>(3), now);
        i += 1;
    }
    assert_eq!(i, 10_000);
}

/// A server that stops reading holds the sender back: chunks wait in the sink's channel and
/// the socket, not in a buffer that grows with what the caller sends.
#[tokio::test]
async fn a_stalled_server_holds_the_sink_back() {
    use std::time::Duration;
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    let holder = connect().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS acopy_stall;
             CREATE TABLE acopy_stall (id int4, note text);
             CREATE OR REPLACE FUNCTION acopy_stall_wait() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_advisory_xact_lock_shared(71720); RETURN NEW; END $$;
             CREATE TRIGGER acopy_stall_wait BEFORE INSERT ON acopy_stall
               FOR EACH ROW EXECUTE FUNCTION acopy_stall_wait();",
        )
        .await
        .unwrap();
    holder
        .batch_execute("SELECT pg_advisory_lock(71720)")
        .await
        .unwrap();
    let mut sink = client.copy_in("COPY acopy_stall FROM STDIN").await.unwrap();
    let chunk = Bytes::from("1\tstalled\n".repeat(6_554)); // ~64 KiB, 6,554 rows
    // The server blocks on its first row. With nothing growing behind the channel, a send
    // stops completing after the channel (16 chunks) and the socket buffers are full.
    let limit = 64 << 20;
    let mut sent = 0usize;
    while sent < limit {
        match tokio::time::timeout(Duration::from_secs(2), sink.send(chunk.clone())).await {
            Ok(result) => {
                result.unwrap();
                sent += chunk.len();
            }
            Err(_stalled) => break,
        }
    }
    assert!(
        sent < 16 << 20,
        "{sent} bytes accepted while the server read nothing"
    );
    holder
        .batch_execute("SELECT pg_advisory_unlock(71720)")
        .await
        .unwrap();
    let rows = sink.finish().await.unwrap();
    // The abandoned send had its chunk taken into the channel and waited for room behind
    // it: that chunk is copied too, whole.
    let accepted = (sent / chunk.len()) as u64 * 6_554;
    assert!(
        rows == accepted || rows == accepted + 6_554,
        "{rows} rows copied, {accepted} sent"
    );
    assert_eq!(count(&client, "acopy_stall").await, rows as i64);
}

/// A server that answers every row with a notice fills the socket towards the client while
/// the client's data fills it the other way: the connection keeps reading while it waits
/// to write, or both sides would wait for each other forever.
#[tokio::test]
async fn copy_in_keeps_reading_while_the_server_floods_notices() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = connect().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS acopy_noisy;
             CREATE TABLE acopy_noisy (id int4, note text);
             CREATE OR REPLACE FUNCTION acopy_noisy_notice() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE NOTICE 'row % %', NEW.id, repeat('n', 2000); RETURN NEW; END $$;
             CREATE TRIGGER acopy_noisy_notice BEFORE INSERT ON acopy_noisy
               FOR EACH ROW EXECUTE FUNCTION acopy_noisy_notice();",
        )
        .await
        .unwrap();
    let mut sink = client.copy_in("COPY acopy_noisy FROM STDIN").await.unwrap();
    // 20,000 rows out, ~40 MB of notices back: far more than both socket buffers hold.
    for chunk in 0..20 {
        let mut data = String::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            data.push_str(&format!("{i}\t{}\n", "d".repeat(60)));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);
    assert_eq!(count(&client, "acopy_noisy").await, 20_000);
}
