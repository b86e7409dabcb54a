//! COPY FROM STDIN / TO STDOUT through `CopyInWriter` and `CopyOutReader`, the typed binary
//! format on top of them, and the states errors and early drops leave the connection in.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use pqlib::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::Type;
use pqlib::{Connection, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// A fresh table `name` with the given columns.
fn fresh_table(conn: &mut Connection, name: &str, columns: &str) {
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE UNLOGGED TABLE {name} ({columns})"
    ))
    .unwrap();
}

fn count(conn: &mut Connection, table: &str) -> i64 {
    conn.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// The connection answers a query and is not left inside a transaction or a COPY.
fn assert_usable(conn: &mut Connection) {
    let one: i32 = conn.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

/// The pqlib error inside an `io::Error` from a COPY reader or writer.
fn inner(e: &std::io::Error) -> &pqlib::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<pqlib::Error>())
        .unwrap_or_else(|| panic!("the io::Error carries a pqlib::Error: {e:?}"))
}

#[test]
fn copy_in_text_rows() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_text", "id int4 PRIMARY KEY, name text");
    let start = Instant::now();
    let mut writer = conn.copy_in("COPY copy_in_text FROM STDIN").unwrap();
    for i in 0..100_000 {
        writer
            .write_all(format!("{i}\tname {i}\n").as_bytes())
            .unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 100_000);
    let elapsed = start.elapsed();
    eprintln!("copy_in of 100k text rows: {elapsed:?}");
    assert_eq!(count(&mut conn, "copy_in_text"), 100_000);
    let row = conn
        .query_one("SELECT name FROM copy_in_text WHERE id = 99999", &[])
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "name 99999");

    let start = Instant::now();
    let mut data = Vec::new();
    conn.copy_out("COPY copy_in_text TO STDOUT")
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    eprintln!(
        "copy_out of 100k text rows ({} bytes): {:?}",
        data.len(),
        start.elapsed()
    );
    assert_eq!(data.iter().filter(|&&b| b == b'\n').count(), 100_000);
}

#[test]
fn copy_in_csv_with_quoting() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_csv", "id int4, name text, note text");
    let mut writer = conn
        .copy_in("COPY copy_in_csv FROM STDIN (FORMAT csv, HEADER true)")
        .unwrap();
    writer
        .write_all(
            b"id,name,note\n\
              1,\"Hopper, Grace\",\"said \"\"hi\"\"\"\n\
              2,plain,\n\
              3,\"multi\nline\",\"\"\n",
        )
        .unwrap();
    assert_eq!(writer.finish().unwrap(), 3);
    let rows = conn
        .query("SELECT id, name, note FROM copy_in_csv ORDER BY id", &[])
        .unwrap();
    let got: Vec<(i32, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                "Hopper, Grace".to_owned(),
                Some("said \"hi\"".to_owned())
            ),
            (2, "plain".to_owned(), None),
            (3, "multi\nline".to_owned(), Some(String::new())),
        ]
    );
}

#[test]
fn copy_in_through_a_transaction() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_tx", "x int4");
    let mut tx = conn.transaction().unwrap();
    let mut writer = tx.copy_in("COPY copy_in_tx FROM STDIN").unwrap();
    writer.write_all(b"1\n2\n3\n").unwrap();
    assert_eq!(writer.finish().unwrap(), 3);
    let mut data = String::new();
    tx.copy_out("COPY copy_in_tx TO STDOUT")
        .unwrap()
        .read_to_string(&mut data)
        .unwrap();
    assert_eq!(data, "1\n2\n3\n");
    tx.rollback().unwrap();
    assert_eq!(count(&mut conn, "copy_in_tx"), 0);
}

#[test]
fn copy_in_unique_violation() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_dup", "id int4 PRIMARY KEY");
    let mut writer = conn.copy_in("COPY copy_in_dup FROM STDIN").unwrap();
    // The duplicate comes early; plenty of data follows it.
    let mut result = writer.write_all(b"1\n2\n1\n").map_err(|e| {
        let kind = inner(&e).kind();
        (kind, inner(&e).code().cloned())
    });
    for i in 3..50_000 {
        if result.is_err() {
            break;
        }
        result = writer
            .write_all(format!("{i}\n").as_bytes())
            .map_err(|e| (inner(&e).kind(), inner(&e).code().cloned()));
    }
    let code = match result {
        Err((_, code)) => {
            drop(writer);
            code
        }
        Ok(()) => {
            let e = writer.finish().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Db, "{e:?}");
            e.code().cloned()
        }
    };
    assert_eq!(code, Some(SqlState::UNIQUE_VIOLATION));
    assert_usable(&mut conn);
    assert_eq!(count(&mut conn, "copy_in_dup"), 0);
}

#[test]
fn copy_in_malformed_data_fails_at_finish() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_bad", "x int4");
    let mut writer = conn.copy_in("COPY copy_in_bad FROM STDIN").unwrap();
    writer.write_all(b"1\nnot a number\n3\n").unwrap();
    let e = writer.finish().unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION),
        "{e:?}"
    );
    assert_usable(&mut conn);
    assert_eq!(count(&mut conn, "copy_in_bad"), 0);
}

#[test]
fn copy_in_dropped_without_finish() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_drop", "x int4");
    {
        let mut writer = conn.copy_in("COPY copy_in_drop FROM STDIN").unwrap();
        for i in 0..10_000 {
            writer.write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        writer.flush().unwrap();
        // dropped here
    }
    assert_usable(&mut conn);
    assert_eq!(count(&mut conn, "copy_in_drop"), 0);
    let mut writer = conn.copy_in("COPY copy_in_drop FROM STDIN").unwrap();
    writer.write_all(b"7\n8\n").unwrap();
    assert_eq!(writer.finish().unwrap(), 2);
    assert_eq!(count(&mut conn, "copy_in_drop"), 2);
}

#[test]
fn copy_in_dropped_inside_a_transaction() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_drop_tx", "x int4");
    let mut tx = conn.transaction().unwrap();
    drop(tx.copy_in("COPY copy_in_drop_tx FROM STDIN").unwrap());
    // The aborted COPY failed the transaction, as any failed statement does.
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    drop(tx);
    assert_usable(&mut conn);
}

#[test]
fn copy_in_rejects_other_statements() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_wrong", "x int4");
    conn.batch_execute("INSERT INTO copy_in_wrong SELECT generate_series(1, 1000)")
        .unwrap();

    let e = conn.copy_in("SELECT 1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert!(e.to_string().contains("COPY"), "{e}");
    assert_usable(&mut conn);

    let e = conn.copy_in("COPY copy_in_wrong TO STDOUT").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert!(e.to_string().contains("copy_out"), "{e}");
    assert_usable(&mut conn);

    let e = conn.copy_out("COPY copy_in_wrong FROM STDIN").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert_usable(&mut conn);
    assert_eq!(count(&mut conn, "copy_in_wrong"), 1000);

    let e = conn.copy_out("SELECT 1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert_usable(&mut conn);

    // A statement that fails is reported as itself.
    let e = conn.copy_in("COPY no_such_table FROM STDIN").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e:?}");
    let e = conn.copy_in("COPY x FROM STDIN\0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert_usable(&mut conn);
}

/// The text COPY of `generate_series(1, n)` with a padded second column, as the server
/// writes it.
fn expected_series(n: u32) -> String {
    let mut expected = String::new();
    for g in 1..=n {
        expected.push_str(&format!("{g}\t{}\n", "x".repeat(80)));
    }
    expected
}

#[test]
fn copy_out_large_read_to_end() {
    let mut conn = connect();
    let n = 120_000; // ~10 MB
    let expected = expected_series(n);
    let sql = format!("COPY (SELECT g, repeat('x', 80) FROM generate_series(1, {n}) g) TO STDOUT");
    let start = Instant::now();
    let mut data = Vec::new();
    conn.copy_out(&sql).unwrap().read_to_end(&mut data).unwrap();
    eprintln!("copy_out of {} bytes: {:?}", data.len(), start.elapsed());
    assert_eq!(data.len(), expected.len());
    assert!(data == expected.as_bytes());
    assert_usable(&mut conn);
}

#[test]
fn copy_out_lines() {
    let mut conn = connect();
    let reader = conn
        .copy_out("COPY (SELECT g, 'line ' || g FROM generate_series(1, 100000) g) TO STDOUT (FORMAT csv)")
        .unwrap();
    let mut lines = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.unwrap();
        let g = i + 1;
        assert_eq!(line, format!("{g},line {g}"));
        lines += 1;
    }
    assert_eq!(lines, 100_000);
    assert_usable(&mut conn);
}

#[test]
fn copy_out_small_reads() {
    let mut conn = connect();
    let mut reader = conn
        .copy_out("COPY (SELECT 'abcdefghij' FROM generate_series(1, 3)) TO STDOUT")
        .unwrap();
    let mut data = Vec::new();
    let mut byte = [0; 3];
    loop {
        let n = reader.read(&mut byte).unwrap();
        if n == 0 {
            break;
        }
        data.extend_from_slice(&byte[..n]);
    }
    assert_eq!(data, b"abcdefghij\n".repeat(3));
    // At the end: stays at the end.
    assert_eq!(reader.read(&mut byte).unwrap(), 0);
    assert!(reader.fill_buf().unwrap().is_empty());
    drop(reader);
    assert_usable(&mut conn);
}

#[test]
fn copy_out_dropped_midway() {
    let mut conn = connect();
    {
        let mut reader = conn
            .copy_out(
                "COPY (SELECT g, repeat('y', 100) FROM generate_series(1, 100000) g) TO STDOUT",
            )
            .unwrap();
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with("1\t"), "{first}");
    }
    assert_usable(&mut conn);
    // And before reading anything at all.
    drop(conn.copy_out("COPY (SELECT 1) TO STDOUT").unwrap());
    assert_usable(&mut conn);
}

#[test]
fn copy_out_error_midway() {
    let mut conn = connect();
    let mut reader = conn
        .copy_out("COPY (SELECT 1/(g-50000) FROM generate_series(1,100000) g) TO STDOUT")
        .unwrap();
    let mut data = Vec::new();
    let e = reader.read_to_end(&mut data).unwrap_err();
    assert_eq!(inner(&e).code(), Some(&SqlState::DIVISION_BY_ZERO), "{e:?}");
    // Reading on repeats the failure rather than pretending the data ended.
    assert!(reader.read(&mut [0; 16]).is_err());
    drop(reader);
    assert_usable(&mut conn);
}

#[test]
fn copy_out_error_through_lines() {
    let mut conn = connect();
    let reader = conn
        .copy_out("COPY (SELECT 1/(g-50000) FROM generate_series(1,100000) g) TO STDOUT")
        .unwrap();
    let mut good = 0;
    let mut failure = None;
    for line in reader.lines() {
        match line {
            Ok(_) => good += 1,
            Err(e) => {
                failure = Some(inner(&e).code().cloned());
                break;
            }
        }
    }
    assert_eq!(failure, Some(Some(SqlState::DIVISION_BY_ZERO)));
    assert!(good <= 49_999, "{good}");
    assert_usable(&mut conn);
}

#[test]
fn binary_copy_round_trip() {
    let mut conn = connect();
    fresh_table(
        &mut conn,
        "copy_binary",
        "id int4, name text, score float8, at timestamptz, note text",
    );
    let types = [
        Type::INT4,
        Type::TEXT,
        Type::FLOAT8,
        Type::TIMESTAMPTZ,
        Type::TEXT,
    ];
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let row = |i: i32| {
        let name = format!("name {i} ✓");
        let score = f64::from(i) * 1.5 - 7.25;
        // Microsecond precision: what timestamptz keeps.
        let at = base + Duration::from_micros(u64::try_from(i).unwrap() * 1_000_003);
        let note = (i % 3 == 0).then(|| format!("note {i}"));
        (i, name, score, at, note)
    };

    let writer = conn
        .copy_in("COPY copy_binary FROM STDIN (FORMAT binary)")
        .unwrap();
    let start = Instant::now();
    let mut writer = BinaryCopyInWriter::new(writer, &types);
    for i in 0..10_000 {
        let (id, name, score, at, note) = row(i);
        let note = note.as_deref();
        writer.write(&[&id, &name, &score, &at, &note]).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 10_000);
    eprintln!("binary copy_in of 10k rows: {:?}", start.elapsed());

    let start = Instant::now();
    let reader = conn
        .copy_out("COPY (SELECT * FROM copy_binary ORDER BY id) TO STDOUT (FORMAT binary)")
        .unwrap();
    let mut n = 0;
    for (i, got) in BinaryCopyOutIter::new(reader, &types).enumerate() {
        let got = got.unwrap();
        let (id, name, score, at, note) = row(i32::try_from(i).unwrap());
        assert_eq!(got.len(), 5);
        assert_eq!(got.get::<i32>(0), id);
        assert_eq!(got.get::<&str>(1), name);
        assert_eq!(got.get::<f64>(2), score);
        assert_eq!(got.get::<SystemTime>(3), at);
        assert_eq!(got.get::<Option<&str>>(4), note.as_deref());
        assert_eq!(
            got.try_get::<String>(0).unwrap_err().kind(),
            ErrorKind::Conversion
        );
        assert_eq!(got.try_get::<i32>(5).unwrap_err().kind(), ErrorKind::Column);
        if note.is_none() {
            assert_eq!(
                got.try_get::<&str>(4).unwrap_err().kind(),
                ErrorKind::Conversion
            );
        }
        n += 1;
    }
    assert_eq!(n, 10_000);
    eprintln!(
        "binary copy_out of 10k rows, checked: {:?}",
        start.elapsed()
    );
    assert_usable(&mut conn);
}

#[test]
fn binary_copy_in_errors() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_binary_errors", "id int4, name text");
    let types = [Type::INT4, Type::TEXT];
    let writer = conn
        .copy_in("COPY copy_binary_errors FROM STDIN (FORMAT binary)")
        .unwrap();
    let mut writer = BinaryCopyInWriter::new(writer, &types);
    writer.write(&[&1i32, &"one"]).unwrap();

    let e = writer.write(&[&2i32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    let e = writer.write(&[&2i32, &"two", &3i32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");

    // A text value for the int4 column: caught by to_sql_checked, nothing of the row sent.
    let e = writer.write(&[&"x", &"two"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e:?}");
    // The second value fails after the first was encoded: that is taken back too.
    let e = writer.write(&[&2i32, &2i64]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e:?}");

    writer.write(&[&2i32, &None::<&str>]).unwrap();
    let boxed: Vec<Box<dyn pqlib::types::ToSql + Sync>> = vec![Box::new(3i32), Box::new("three")];
    writer.write_raw(boxed).unwrap();
    assert_eq!(writer.finish().unwrap(), 3);
    let rows = conn
        .query("SELECT id, name FROM copy_binary_errors ORDER BY id", &[])
        .unwrap();
    let got: Vec<(i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (1, Some("one".into())),
            (2, None),
            (3, Some("three".into()))
        ]
    );
}

#[test]
fn binary_copy_out_errors() {
    let mut conn = connect();
    // Types that do not match the row width.
    let reader = conn
        .copy_out("COPY (SELECT 1::int4, 2::int4) TO STDOUT (FORMAT binary)")
        .unwrap();
    let mut rows = BinaryCopyOutIter::new(reader, &[Type::INT4]);
    assert_eq!(
        rows.next().unwrap().unwrap_err().kind(),
        ErrorKind::BadInput
    );
    assert!(rows.next().is_none());
    drop(rows);
    assert_usable(&mut conn);

    // Text data is not binary COPY data.
    let reader = conn.copy_out("COPY (SELECT 1) TO STDOUT").unwrap();
    let mut rows = BinaryCopyOutIter::new(reader, &[Type::INT4]);
    assert_eq!(
        rows.next().unwrap().unwrap_err().kind(),
        ErrorKind::BadInput
    );
    drop(rows);
    assert_usable(&mut conn);

    // A server error midway ends the iteration with it.
    let reader = conn
        .copy_out(
            "COPY (SELECT 1/(g-500) FROM generate_series(1,1000) g) TO STDOUT (FORMAT binary)",
        )
        .unwrap();
    let results: Vec<_> = BinaryCopyOutIter::new(reader, &[Type::INT4]).collect();
    let (last, rows) = results.split_last().unwrap();
    assert!(rows.iter().all(Result::is_ok));
    let e = last.as_ref().unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO), "{e:?}");
    assert_usable(&mut conn);

    // No rows at all.
    let reader = conn
        .copy_out("COPY (SELECT 1::int4 WHERE false) TO STDOUT (FORMAT binary)")
        .unwrap();
    assert_eq!(BinaryCopyOutIter::new(reader, &[Type::INT4]).count(), 0);
    assert_usable(&mut conn);
}

#[test]
fn binary_copy_writer_dropped() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_binary_drop", "x int8");
    {
        let writer = conn
            .copy_in("COPY copy_binary_drop FROM STDIN (FORMAT binary)")
            .unwrap();
        let mut writer = BinaryCopyInWriter::new(writer, &[Type::INT8]);
        for i in 0..50_000i64 {
            writer.write(&[&i]).unwrap();
        }
    }
    assert_usable(&mut conn);
    assert_eq!(count(&mut conn, "copy_binary_drop"), 0);
}

#[test]
fn copy_in_on_a_nonblocking_connection() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_nonblocking", "x text");
    // SAFETY: a live connection; the COPY code handles non-blocking mode.
    assert_eq!(unsafe { pqlib_sys::PQsetnonblocking(conn.as_ptr(), 1) }, 0);
    let line = format!("{}\n", "z".repeat(1000));
    let mut writer = conn.copy_in("COPY copy_in_nonblocking FROM STDIN").unwrap();
    for _ in 0..20_000 {
        writer.write_all(line.as_bytes()).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 20_000);
    // SAFETY: as above.
    assert_eq!(unsafe { pqlib_sys::PQsetnonblocking(conn.as_ptr(), 0) }, 0);
    assert_eq!(count(&mut conn, "copy_in_nonblocking"), 20_000);
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap()
}

/// Runs [`copy_in_memory_child`] in a process of its own, so that other tests' memory does
/// not count, against this binary's server.
#[test]
#[cfg(target_os = "linux")]
fn copy_in_memory_is_bounded() {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "copy_in_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("DATABASE_URL", common::conninfo());
    let (status, output) = common::run_bounded(command, Duration::from_secs(120));
    eprintln!("{output}");
    assert!(status.success(), "the child failed:\n{output}");
    assert!(output.contains("1 passed"), "{output}");
}

/// 200 MB streamed in 1 MB writes: resident memory must not follow the amount copied.
#[test]
#[ignore = "run by copy_in_memory_is_bounded in a process of its own"]
fn copy_in_memory_child() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_memory", "t text");
    let line = format!("{}\n", "m".repeat(1023));
    let chunk = line.repeat(1024); // 1 MiB, 1024 rows
    let mut writer = conn.copy_in("COPY copy_in_memory FROM STDIN").unwrap();
    writer.write_all(chunk.as_bytes()).unwrap();
    let baseline = rss();
    let mut peak = baseline;
    let start = Instant::now();
    for _ in 1..200 {
        writer.write_all(chunk.as_bytes()).unwrap();
        peak = peak.max(rss());
    }
    assert_eq!(writer.finish().unwrap(), 200 * 1024);
    let elapsed = start.elapsed();
    let growth = peak.saturating_sub(baseline);
    println!(
        "copy_in of 200 MiB in 1 MiB writes: {elapsed:?}, RSS baseline {} KiB, peak {} KiB, growth {} KiB",
        baseline / 1024,
        peak / 1024,
        growth / 1024
    );
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
    conn.batch_execute("DROP TABLE copy_in_memory").unwrap();
}

fn is_lost(e: &pqlib::Error) -> bool {
    e.is_closed() || e.code() == Some(&SqlState::ADMIN_SHUTDOWN)
}

#[test]
fn copy_in_backend_terminated() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_in_terminated", "x int4");
    let pid = conn.backend_pid();
    let mut writer = conn.copy_in("COPY copy_in_terminated FROM STDIN").unwrap();
    writer.write_all(b"1\n2\n").unwrap();
    writer.flush().unwrap();
    common::terminate_backend(pid);
    // libpq discards what it cannot send so that it can read the server's last words: the
    // error may come from a write or from finish.
    let mut failed = None;
    for i in 0..100_000 {
        if let Err(e) = writer.write_all(format!("{i}\n").as_bytes()) {
            failed = Some(is_lost(inner(&e)));
            break;
        }
    }
    let e = writer.finish().unwrap_err();
    assert!(failed.unwrap_or(true) && is_lost(&e), "{e:?}");
    assert!(conn.query_one("SELECT 1", &[]).is_err());
    assert!(conn.is_closed());
}

#[test]
fn copy_out_backend_terminated() {
    let mut conn = connect();
    let pid = conn.backend_pid();
    let mut reader = conn
        .copy_out("COPY (SELECT generate_series(1, 1000000000)) TO STDOUT")
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "1\n");
    // Terminated while blocked on the full socket, far from done (10^9 rows), the backend
    // drops its output and exits. Terminated while it is still producing rows, it would try
    // to send its FATAL message to a client that is not reading, and wait for it.
    common::wait_until_waiting_on(&mut connect(), i32::try_from(pid).unwrap(), "ClientWrite");
    common::terminate_backend(pid);
    let e = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert!(is_lost(inner(&e)), "{e:?}");
    drop(reader);
    assert!(conn.query_one("SELECT 1", &[]).is_err());
}

fn all_byte_values() -> Vec<u8> {
    (0..=255u8).collect()
}

#[test]
fn all_256_byte_values_in_text_copy() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_bytes_text", "id int4, data bytea");
    let hex: String = all_byte_values()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut writer = conn.copy_in("COPY copy_bytes_text FROM STDIN").unwrap();
    // In COPY text, a backslash is escaped: `\\x…` is the bytea hex form `\x…`.
    writer
        .write_all(format!("1\t\\\\x{hex}\n").as_bytes())
        .unwrap();
    assert_eq!(writer.finish().unwrap(), 1);
    let stored: Vec<u8> = conn
        .query_one("SELECT data FROM copy_bytes_text", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, all_byte_values());

    let mut out = String::new();
    conn.copy_out("COPY copy_bytes_text (data) TO STDOUT")
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, format!("\\\\x{hex}\n"));
}

#[test]
fn all_256_byte_values_in_binary_copy() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_bytes_binary", "data bytea");
    let writer = conn
        .copy_in("COPY copy_bytes_binary FROM STDIN (FORMAT binary)")
        .unwrap();
    let mut writer = BinaryCopyInWriter::new(writer, &[Type::BYTEA]);
    let bytes = all_byte_values();
    writer.write(&[&bytes]).unwrap();
    // Each single byte as its own value too, including 0x00 and 0xff.
    for b in 0..=255u8 {
        writer.write(&[&vec![b]]).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 257);
    let reader = conn
        .copy_out("COPY copy_bytes_binary TO STDOUT (FORMAT binary)")
        .unwrap();
    let rows: Vec<Vec<u8>> = BinaryCopyOutIter::new(reader, &[Type::BYTEA])
        .map(|row| row.unwrap().get::<Vec<u8>>(0))
        .collect();
    assert_eq!(rows[0], bytes);
    assert_eq!(rows[1..].iter().map(|r| r[0]).collect::<Vec<_>>(), bytes);
}

#[test]
fn rows_larger_than_10_mib() {
    let mut conn = connect();
    fresh_table(&mut conn, "copy_big_rows", "id int4, body text");
    let body: String = "0123456789abcdef".repeat(12 << 16); // 12 MiB
    let mut writer = conn.copy_in("COPY copy_big_rows FROM STDIN").unwrap();
    for id in 0..2 {
        writer.write_all(format!("{id}\t").as_bytes()).unwrap();
        writer.write_all(body.as_bytes()).unwrap();
        writer.write_all(b"\n").unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 2);

    let mut reader = conn
        .copy_out("COPY (SELECT body FROM copy_big_rows ORDER BY id) TO STDOUT")
        .unwrap();
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.len(), body.len() + 1);
        assert!(line[..body.len()] == body);
    }
    drop(reader);

    let reader = conn
        .copy_out("COPY (SELECT body FROM copy_big_rows) TO STDOUT (FORMAT binary)")
        .unwrap();
    for row in BinaryCopyOutIter::new(reader, &[Type::TEXT]) {
        let row = row.unwrap();
        let text: &str = row.get(0);
        assert_eq!(text.len(), body.len());
    }
    assert_usable(&mut conn);
}
