//! Soak: many queries, COPY rows and notifications on one connection, every result checked,
//! resident memory watched; and `every_sync_api`, one pass over every blocking API, which
//! `scripts/memcheck.sh` runs under valgrind.
//!
//! `soak_short` (a normal test) does 50,000 queries, 50,000 COPY rows and 5,000
//! notifications in a child process of its own, so that only its memory is measured.
//! `scripts/soak.sh` runs `soak_long` (1,000,000 / 1,000,000 / 100,000 by default; the
//! `PQLIB_SOAK_*` variables change the counts).
#![cfg(unix)]

mod common;

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pqlib::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::Type;
use pqlib::{Config, Connection, LargeObjectMode, PipelineResult};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// Resident memory in KiB.
fn rss_kib() -> u64 {
    common::memory_status().0 >> 10
}

struct Counts {
    queries: u64,
    copy_rows: u64,
    notifications: u64,
}

impl Counts {
    fn from_env(default: Counts) -> Counts {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Counts {
            queries: var("PQLIB_SOAK_QUERIES", default.queries),
            copy_rows: var("PQLIB_SOAK_COPY_ROWS", default.copy_rows),
            notifications: var("PQLIB_SOAK_NOTIFICATIONS", default.notifications),
        }
    }
}

/// One round: `queries` checked round trips (prepared, typed, pipelined), `copy_rows` rows
/// copied in (text and binary) and read back out, `notifications` sent and received in order.
fn round(conn: &mut Connection, base: u64, queries: u64, copy_rows: u64, notifications: u64) {
    let add = conn.prepare("SELECT $1::int8 + 1, $2::text").unwrap();
    let mut done = 0;
    while done < queries {
        let i = i64::try_from(base + done).unwrap();
        match done % 4 {
            0 | 1 => {
                let text = format!("q{i}");
                let row = conn.query_one(&add, &[&i, &text]).unwrap();
                assert_eq!(row.get::<_, i64>(0), i + 1);
                assert_eq!(row.get::<_, &str>(1), text);
                done += 1;
            }
            2 => {
                let rows = conn
                    .query_typed("SELECT $1 * 2", &[(&i, Type::INT8)])
                    .unwrap();
                assert_eq!(rows.get(0).unwrap().get::<_, i64>(0), i * 2);
                done += 1;
            }
            _ => {
                // A pipeline of up to 64 statements: each counts as one query.
                let n = (queries - done).min(64);
                let mut pipeline = conn.pipeline().unwrap();
                for k in 0..n {
                    let v = i + i64::try_from(k).unwrap();
                    pipeline.query(&add, &[&v, &"p"]).unwrap();
                }
                pipeline.sync().unwrap();
                for k in 0..n {
                    let v = i + i64::try_from(k).unwrap();
                    let rows = pipeline
                        .next_result()
                        .unwrap()
                        .unwrap()
                        .into_rows()
                        .unwrap();
                    assert_eq!(rows.get(0).unwrap().get::<_, i64>(0), v + 1);
                }
                assert!(pipeline.next_result().unwrap().unwrap().is_sync());
                pipeline.finish().unwrap();
                done += n;
            }
        }
    }

    // COPY: half text, half binary; read back and checked by sum.
    conn.batch_execute("TRUNCATE soak_copy").unwrap();
    let half = copy_rows / 2;
    let mut writer = conn.copy_in("COPY soak_copy (x, t) FROM STDIN").unwrap();
    let mut expected_sum: i64 = 0;
    for r in 0..half {
        let x = i64::try_from(base + r).unwrap();
        expected_sum += x;
        writeln!(writer, "{x}\trow {x}").unwrap();
    }
    assert_eq!(writer.finish().unwrap(), half);
    let writer = conn
        .copy_in("COPY soak_copy (x, t) FROM STDIN (FORMAT binary)")
        .unwrap();
    let mut binary = BinaryCopyInWriter::new(writer, &[Type::INT8, Type::TEXT]);
    for r in half..copy_rows {
        let x = i64::try_from(base + r).unwrap();
        expected_sum += x;
        binary.write(&[&x, &format!("row {x}")]).unwrap();
    }
    assert_eq!(binary.finish().unwrap(), copy_rows - half);
    let reader = conn
        .copy_out("COPY soak_copy (x, t) TO STDOUT (FORMAT binary)")
        .unwrap();
    let (mut sum, mut count) = (0i64, 0u64);
    for row in BinaryCopyOutIter::new(reader, &[Type::INT8, Type::TEXT]) {
        let row = row.unwrap();
        let x: i64 = row.get(0);
        assert_eq!(row.get::<&str>(1), format!("row {x}"));
        sum += x;
        count += 1;
    }
    assert_eq!((count, sum), (copy_rows, expected_sum));
    let mut text = conn.copy_out("COPY soak_copy (x) TO STDOUT").unwrap();
    let mut lines = 0u64;
    let mut line = String::new();
    while text.read_line(&mut line).unwrap() > 0 {
        lines += 1;
        line.clear();
    }
    drop(text);
    assert_eq!(lines, copy_rows);

    // Notifications to this session, 1,000 per statement, received in order.
    let mut sent = 0;
    while sent < notifications {
        let n = (notifications - sent).min(1000);
        let from = i64::try_from(base + sent).unwrap();
        let to = from + i64::try_from(n).unwrap() - 1;
        conn.execute(
            "SELECT pg_notify('soak', g::text) FROM generate_series($1::int8, $2::int8) g",
            &[&from, &to],
        )
        .unwrap();
        let mut next = from;
        for notification in conn.notifications().iter() {
            let notification = notification.unwrap();
            assert_eq!(notification.channel(), "soak");
            assert_eq!(notification.payload(), next.to_string());
            next += 1;
        }
        assert_eq!(next, to + 1, "every notification arrived");
        sent += n;
    }
}

/// The soak itself: 10 % as warm-up, then the rest in 20 rounds; RSS must not grow by 10 %
/// or more after the warm-up.
fn soak(counts: Counts) {
    let mut conn = connect();
    conn.batch_execute(
        "CREATE TEMP TABLE soak_copy (x int8, t text); LISTEN soak; SET synchronous_commit = off",
    )
    .unwrap();
    let started = Instant::now();
    let rounds = 20u64;
    let share = |total: u64, parts: u64| total / parts;
    round(
        &mut conn,
        0,
        share(counts.queries, 10),
        share(counts.copy_rows, 10),
        share(counts.notifications, 10),
    );
    let warm = rss_kib();
    let mut peak = warm;
    let (q, c, n) = (
        share(counts.queries * 9 / 10, rounds),
        share(counts.copy_rows * 9 / 10, rounds),
        share(counts.notifications * 9 / 10, rounds),
    );
    let mut samples = Vec::new();
    for r in 0..rounds {
        round(&mut conn, (r + 1) * 10_000_000, q, c, n);
        let now = rss_kib();
        peak = peak.max(now);
        samples.push(now);
    }
    let end = rss_kib();
    let total = (
        share(counts.queries, 10) + q * rounds,
        share(counts.copy_rows, 10) + c * rounds,
        share(counts.notifications, 10) + n * rounds,
    );
    let growth = (end as f64 - warm as f64) / warm as f64 * 100.0;
    println!(
        "soak: {} queries, {} COPY rows, {} notifications in {:?}; RSS after warm-up {warm} KiB, \
         end {end} KiB ({growth:+.1} %), peak {peak} KiB; per round: {samples:?}",
        total.0,
        total.1,
        total.2,
        started.elapsed()
    );
    assert!(
        (end as f64) < warm as f64 * 1.10,
        "RSS grew {growth:.1} % after the warm-up"
    );
}

/// 50,000 queries, 50,000 COPY rows and 5,000 notifications, in a child process.
#[test]
#[cfg(target_os = "linux")]
fn soak_short() {
    let (ok, output) = common::run_child_test(
        "soak_child",
        "PQLIB_SOAK_CHILD",
        &[("DATABASE_URL", common::conninfo())],
    );
    eprintln!("{output}");
    assert!(ok, "the child failed:\n{output}");
}

#[test]
#[ignore = "run by soak_short, in a process of its own"]
fn soak_child() {
    if std::env::var_os("PQLIB_SOAK_CHILD").is_none() {
        return;
    }
    soak(Counts::from_env(Counts {
        queries: 50_000,
        copy_rows: 50_000,
        notifications: 5_000,
    }));
    println!("CHILD OK");
}

/// The long soak for scripts/soak.sh: 1,000,000 queries, 1,000,000 COPY rows, 100,000
/// notifications unless `PQLIB_SOAK_*` say otherwise.
#[test]
#[ignore = "long: run by scripts/soak.sh"]
fn soak_long() {
    soak(Counts::from_env(Counts {
        queries: 1_000_000,
        copy_rows: 1_000_000,
        notifications: 100_000,
    }));
}

// ---------------------------------------------------------------------------------------------
// One pass over every blocking API (the valgrind driver).

/// Every blocking API once, with its error paths: what `scripts/memcheck.sh` runs under
/// valgrind (and ASan) to find leaks and invalid accesses in pqlib and libpq.
#[test]
fn every_sync_api() {
    let conninfo = common::conninfo();
    // Config parsing, printing, errors.
    let config: Config = format!("{conninfo} application_name=tour password=secret")
        .parse()
        .unwrap();
    assert!(!format!("{config:?}").contains("secret"));
    assert!(!config.to_string().contains("secret"));
    assert!("hots=x".parse::<Config>().is_err());
    assert!(
        "postgresql://u:pw@h:5432/db?sslmode=disable&application_name=%41"
            .parse::<Config>()
            .is_ok()
    );
    assert!(Connection::connect("host=/nonexistent/dir connect_timeout=1").is_err());

    let mut conn = Connection::connect(&conninfo).unwrap();
    let _ = format!("{conn:?}");
    assert!(conn.server_version() > 0);
    assert!(conn.parameter_status("server_version").is_some());
    assert_eq!(conn.client_encoding(), "UTF8");

    // Queries, types, rows.
    conn.batch_execute(
        "CREATE TEMP TABLE tour (id int4 PRIMARY KEY, name text, data bytea, at timestamptz, \
         j jsonb, f float8, a int4[])",
    )
    .unwrap();
    let insert = conn
        .prepare("INSERT INTO tour VALUES ($1, $2, $3, now(), $4, $5, $6)")
        .unwrap();
    assert_eq!(insert.params().len(), 6);
    for i in 0..50i32 {
        let json = serde_json::json!({ "i": i, "s": "x".repeat(i as usize) });
        let n = conn
            .execute(
                &insert,
                &[
                    &i,
                    &format!("name {i}"),
                    &vec![i as u8; 100],
                    &json,
                    &f64::from(i),
                    &vec![i; 3],
                ],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let rows = conn.query("SELECT * FROM tour ORDER BY id", &[]).unwrap();
    assert_eq!(rows.len(), 50);
    for row in &rows {
        let id: i32 = row.get("id");
        let name: &str = row.get(1);
        let data: &[u8] = row.get(2);
        let _: chrono::DateTime<chrono::Utc> = row.get(3);
        let json: serde_json::Value = row.get(4);
        let a: Vec<i32> = row.get(6);
        assert_eq!(name, format!("name {id}"));
        assert_eq!(data.len(), 100);
        assert_eq!(json["i"], id);
        assert_eq!(a, [id; 3]);
        assert!(row.try_get::<_, i32>("nope").is_err());
        assert!(row.try_get::<_, String>(0).is_err());
    }
    let owned = conn.query_one("SELECT NULL::int4, 'x'::text", &[]).unwrap();
    assert!(owned.try_get::<_, i32>(0).is_err());
    assert_eq!(owned.get::<_, Option<i32>>(0), None);
    assert!(
        conn.query_opt("SELECT 1 WHERE false", &[])
            .unwrap()
            .is_none()
    );
    assert_eq!(
        conn.query_one("SELECT 1 UNION ALL SELECT 2", &[])
            .unwrap_err()
            .kind(),
        ErrorKind::RowCount
    );
    let typed = conn
        .query_typed(
            "SELECT $1::text || $2",
            &[(&"a", Type::TEXT), (&"b", Type::TEXT)],
        )
        .unwrap();
    assert_eq!(typed.get(0).unwrap().get::<_, &str>(0), "ab");

    // Errors.
    let e = conn.batch_execute("SELECT 1/0").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let _ = format!("{e} {e:?}");
    let e = conn.execute(
        &insert,
        &[
            &1i32,
            &"dup",
            &vec![0u8],
            &serde_json::json!(1),
            &0f64,
            &vec![1i32],
        ],
    );
    assert_eq!(e.unwrap_err().code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        conn.query("SELECT 1\0", &[]).unwrap_err().kind(),
        ErrorKind::BadInput
    );
    assert_eq!(
        conn.query("SELECT $1::int4", &[&"x"]).unwrap_err().kind(),
        ErrorKind::Conversion
    );

    // Transactions and savepoints.
    {
        let mut tx = conn.transaction().unwrap();
        tx.execute("DELETE FROM tour WHERE id = 0", &[]).unwrap();
        {
            let mut sp = tx.transaction().unwrap();
            sp.execute("DELETE FROM tour", &[]).unwrap();
            sp.rollback().unwrap();
        }
        tx.commit().unwrap();
    }
    {
        let mut tx = conn.transaction().unwrap();
        tx.execute("DELETE FROM tour", &[]).unwrap();
        // dropped: rolled back
    }
    let n: i64 = conn
        .query_one("SELECT count(*) FROM tour", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 49);

    // Notices, including a panicking handler.
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        conn.set_notice_handler(move |n| seen.lock().unwrap().push(n.message().to_owned()));
    }
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), ["hello"]);
    conn.set_notice_handler(|_| panic!("handler panics"));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'boom'; END $$")
    }));
    assert!(outcome.is_err());
    conn.clear_notice_handler();
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'logged'; END $$")
        .unwrap();

    // Notifications.
    conn.batch_execute("LISTEN tour; NOTIFY tour, 'one'")
        .unwrap();
    assert_eq!(conn.notifications().len(), 1);
    let n = conn.notifications().iter().next().unwrap().unwrap();
    assert_eq!(n.payload(), "one");
    assert!(
        conn.notifications()
            .timeout_iter(Duration::from_millis(10))
            .next()
            .is_none()
    );

    // Cancel: a running statement, an idle connection.
    let token = conn.cancel_token();
    let _ = format!("{token:?}");
    token.cancel_query().unwrap();
    let canceller = std::thread::spawn({
        let token = token.clone();
        let pid = conn.backend_pid();
        move || {
            let mut observer = connect();
            common::wait_until_active(&mut observer, i32::try_from(pid).unwrap());
            token.cancel_query().unwrap();
        }
    });
    let e = conn.batch_execute("SELECT pg_sleep(30)").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED));
    canceller.join().unwrap();

    // COPY in and out, text, binary, errors, drops.
    let mut writer = conn.copy_in("COPY tour (id, name) FROM STDIN").unwrap();
    for i in 100..1100 {
        writeln!(writer, "{i}\tcopied {i}").unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 1000);
    let mut writer = conn.copy_in("COPY tour (id) FROM STDIN").unwrap();
    writer.write_all(b"bad\n").unwrap();
    assert!(writer.finish().is_err());
    let mut writer = conn.copy_in("COPY tour (id) FROM STDIN").unwrap();
    writer.write_all(b"5000\n").unwrap();
    drop(writer);
    let mut csv = String::new();
    conn.copy_out("COPY (SELECT id, name FROM tour ORDER BY id) TO STDOUT (FORMAT csv)")
        .unwrap()
        .read_to_string(&mut csv)
        .unwrap();
    assert_eq!(csv.lines().count(), 1049);
    let mut reader = conn.copy_out("COPY tour TO STDOUT").unwrap();
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    let writer = conn
        .copy_in("COPY tour (id, name) FROM STDIN (FORMAT binary)")
        .unwrap();
    let mut binary = BinaryCopyInWriter::new(writer, &[Type::INT4, Type::TEXT]);
    for i in 2000..2100i32 {
        binary.write(&[&i, &"binary"]).unwrap();
    }
    assert!(binary.write(&[&"wrong", &"types"]).is_err());
    assert_eq!(binary.finish().unwrap(), 100);
    let reader = conn
        .copy_out("COPY (SELECT id, name FROM tour WHERE id >= 2000) TO STDOUT (FORMAT binary)")
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutIter::new(reader, &[Type::INT4, Type::TEXT])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[0].get::<&str>(1), "binary");
    assert!(rows[0].try_get::<i32>(5).is_err());

    // Pipeline: results, an error and its aborted segment, a prepare, drop mid-way.
    {
        let mut pipeline = conn.pipeline().unwrap();
        pipeline.query("SELECT $1::int4", &[&1i32]).unwrap();
        pipeline.execute("SELECT 1/0", &[]).unwrap();
        pipeline.query("SELECT $1::int4", &[&2i32]).unwrap();
        pipeline.sync().unwrap();
        pipeline.prepare("SELECT $1::text").unwrap();
        pipeline
            .query_typed("SELECT $1", &[(&3i64, Type::INT8)])
            .unwrap();
        pipeline.sync().unwrap();
        let mut kinds = Vec::new();
        while let Some(result) = pipeline.next_result() {
            kinds.push(match result {
                Ok(PipelineResult::Rows(_)) => "rows",
                Ok(PipelineResult::Prepared(_)) => "prepared",
                Ok(PipelineResult::Sync) => "sync",
                Ok(_) => "other",
                Err(e) if e.kind() == ErrorKind::PipelineAborted => "aborted",
                Err(_) => "error",
            });
        }
        assert_eq!(
            kinds,
            [
                "rows", "error", "aborted", "sync", "prepared", "rows", "sync"
            ]
        );
        pipeline.finish().unwrap();
    }
    {
        let mut pipeline = conn.pipeline().unwrap();
        for i in 0..10i32 {
            pipeline.query("SELECT $1::int4", &[&i]).unwrap();
        }
        pipeline.sync().unwrap();
        let _ = pipeline.next_result();
        // dropped with results unread
    }

    // Row streaming: to the end, an error mid-way, dropped early.
    let mut stream = conn
        .query_raw(
            "SELECT g, md5(g::text) FROM generate_series(1, $1) g",
            [5000i32],
        )
        .unwrap();
    let mut count = 0;
    while let Some(row) = stream.next_row() {
        let row = row.unwrap();
        let _: &str = row.get(1);
        count += 1;
    }
    assert_eq!((count, stream.rows_affected()), (5000, Some(5000)));
    drop(stream);
    let mut stream = conn
        .query_raw(
            "SELECT 10 / (100 - g) FROM generate_series(1, 200) g",
            std::iter::empty::<i32>(),
        )
        .unwrap();
    let mut failed = false;
    while let Some(row) = stream.next_row() {
        failed |= row.is_err();
    }
    assert!(failed);
    drop(stream);
    let mut stream = conn
        .query_raw(
            "SELECT generate_series(1, 100000)",
            std::iter::empty::<i32>(),
        )
        .unwrap();
    let chunk = stream.next_chunk().unwrap().unwrap();
    assert!(!chunk.is_empty());
    drop(stream);

    // Large objects.
    {
        let mut tx = conn.transaction().unwrap();
        let oid = tx.large_object_create().unwrap();
        let mut lo = tx
            .large_object_open(oid, LargeObjectMode::ReadWrite)
            .unwrap();
        lo.write_all(&vec![42u8; 100_000]).unwrap();
        lo.seek(SeekFrom::Start(10)).unwrap();
        let mut buf = vec![0u8; 1000];
        lo.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 42));
        assert_eq!(lo.len().unwrap(), 100_000);
        lo.truncate(10).unwrap();
        lo.close().unwrap();
        let path = std::env::temp_dir().join(format!("pqlib-tour-{}.bin", std::process::id()));
        // The client writes the file (pqlib reads the object itself): it must work, and hold
        // the object as truncated above.
        tx.large_object_export(oid, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [42u8; 10]);
        std::fs::remove_file(&path).unwrap();
        tx.large_object_unlink(oid).unwrap();
        assert!(tx.large_object_open(oid, LargeObjectMode::Read).is_err());
        tx.rollback().unwrap();
    }

    // Escaping, passwords.
    assert_eq!(conn.escape_literal("it's").unwrap(), "'it''s'");
    assert_eq!(
        conn.escape_identifier("My \"T\"").unwrap(),
        "\"My \"\"T\"\"\""
    );
    assert!(conn.escape_literal("a\0").is_err());
    let verifier = conn
        .encrypt_password("secret", "tour", Some("scram-sha-256"))
        .unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$"));

    // A lost connection, and reset.
    common::terminate_backend(conn.backend_pid());
    assert!(conn.batch_execute("SELECT 1").unwrap_err().is_closed());
    assert!(conn.is_closed());
    conn.reset().unwrap();
    assert_eq!(
        conn.query_one("SELECT 1::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    drop(rows);
    drop(typed);
    drop(conn);
}
