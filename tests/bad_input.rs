//! Bad input, one test per kind: each is a clear `Error` of the documented kind, never a
//! panic (every call runs under `catch_unwind`, where a panic fails the test) and never UB,
//! and the connection is usable afterwards.
#![cfg(unix)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::{ToSql, Type};
use pqlib::{Config, Connection};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// Runs `f`, failing the test if it panics; returns its result.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{what} panicked: {message}")
        }
    }
}

/// `f` fails with an error of `kind` (and does not panic).
#[track_caller]
fn expect_kind<T: std::fmt::Debug>(
    what: &str,
    kind: ErrorKind,
    f: impl FnOnce() -> pqlib::Result<T>,
) -> pqlib::Error {
    match no_panic(what, f) {
        Ok(value) => panic!("{what}: succeeded with {value:?}, expected {kind:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e:?}");
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

fn assert_works(conn: &mut Connection) {
    let n: i32 = conn.query_one("SELECT 7::int4", &[]).unwrap().get(0);
    assert_eq!(n, 7);
}

/// The `pqlib::Error` inside an `io::Error`.
fn inner(e: std::io::Error) -> pqlib::Error {
    *e.into_inner()
        .expect("an inner error")
        .downcast::<pqlib::Error>()
        .expect("a pqlib::Error")
}

// ---------------------------------------------------------------------------------------------
// Interior NUL bytes.

const NUL_SQL: &str = "SELECT 1\0; DROP TABLE users";

/// SQL text with a NUL byte, through every method that takes SQL: `BadInput`, nothing sent.
#[test]
fn nul_in_sql_is_bad_input_everywhere() {
    let mut conn = connect();
    let bad = ErrorKind::BadInput;
    expect_kind("batch_execute", bad, || conn.batch_execute(NUL_SQL));
    expect_kind("query", bad, || conn.query(NUL_SQL, &[]));
    expect_kind("execute", bad, || conn.execute(NUL_SQL, &[]));
    expect_kind("query_one", bad, || conn.query_one(NUL_SQL, &[]));
    expect_kind("query_opt", bad, || conn.query_opt(NUL_SQL, &[]));
    expect_kind("query_typed", bad, || conn.query_typed(NUL_SQL, &[]));
    expect_kind("prepare", bad, || conn.prepare(NUL_SQL));
    expect_kind("prepare_typed", bad, || {
        conn.prepare_typed(NUL_SQL, &[Type::INT4])
    });
    expect_kind("query_raw", bad, || {
        conn.query_raw(NUL_SQL, std::iter::empty::<i32>()).map(drop)
    });
    expect_kind("copy_in", bad, || conn.copy_in(NUL_SQL).map(drop));
    expect_kind("copy_out", bad, || conn.copy_out(NUL_SQL).map(drop));
    {
        let mut pipeline = conn.pipeline().unwrap();
        expect_kind("Pipeline::query", bad, || pipeline.query(NUL_SQL, &[]));
        expect_kind("Pipeline::execute", bad, || pipeline.execute(NUL_SQL, &[]));
        expect_kind("Pipeline::prepare", bad, || pipeline.prepare(NUL_SQL));
        expect_kind("Pipeline::query_typed", bad, || {
            pipeline.query_typed(NUL_SQL, &[])
        });
        pipeline.finish().unwrap();
    }
    {
        let mut tx = conn.transaction().unwrap();
        expect_kind("Transaction::batch_execute", bad, || {
            tx.batch_execute(NUL_SQL)
        });
        expect_kind("Transaction::query", bad, || tx.query(NUL_SQL, &[]));
        expect_kind("Transaction::prepare", bad, || tx.prepare(NUL_SQL));
        expect_kind("Transaction::copy_in", bad, || {
            tx.copy_in(NUL_SQL).map(drop)
        });
        // The transaction is still good: nothing reached the server.
        tx.execute("SELECT 1", &[]).unwrap();
        tx.commit().unwrap();
    }
    assert_works(&mut conn);
}

/// NUL in a connection string, a `Config` keyword or value, a channel name, an escaped
/// string, a password, a user name, a file path: `BadInput` (or `None` for lookups).
#[test]
fn nul_in_every_other_string_argument_is_bad_input() {
    let bad = ErrorKind::BadInput;
    let conninfo = format!("{} application_name=a\0b", common::conninfo());
    expect_kind("Connection::connect", bad, || {
        Connection::connect(&conninfo)
    });
    expect_kind("Config::from_str", bad, || conninfo.parse::<Config>());
    let mut config: Config = common::conninfo().parse().unwrap();
    config.param("application_name", "a\0b");
    expect_kind("connect_config with a NUL value", bad, || config.connect());
    let mut config: Config = common::conninfo().parse().unwrap();
    config.param("application\0name", "x");
    expect_kind("connect_config with a NUL keyword", bad, || {
        config.connect()
    });

    let mut conn = connect();
    expect_kind("LISTEN on a channel name with NUL", bad, || {
        conn.batch_execute("LISTEN \"a\0b\"")
    });
    expect_kind("escape_literal", bad, || conn.escape_literal("it's\0"));
    expect_kind("escape_identifier", bad, || conn.escape_identifier("a\0b"));
    expect_kind("encrypt_password (password)", bad, || {
        conn.encrypt_password("pass\0word", "app", None)
    });
    expect_kind("encrypt_password (user)", bad, || {
        conn.encrypt_password("password", "a\0pp", None)
    });
    expect_kind("encrypt_password (algorithm)", bad, || {
        conn.encrypt_password("password", "app", Some("md5\0"))
    });
    expect_kind("change_password", bad, || {
        conn.change_password("postgres", "new\0password")
    });
    {
        let mut tx = conn.transaction().unwrap();
        expect_kind("large_object_import", bad, || {
            tx.large_object_import("/tmp/a\0b")
        });
        expect_kind("large_object_export", bad, || {
            tx.large_object_export(1, "/tmp/a\0b")
        });
        tx.rollback().unwrap();
    }
    assert_eq!(
        no_panic("parameter_status", || conn.parameter_status("Time\0Zone")),
        None
    );
    assert_works(&mut conn);
}

/// A NUL inside a text *parameter* travels as data (parameters are length-counted); the
/// server refuses it as invalid for the encoding: a database error 22021, and the session
/// goes on. In `bytea` it is just a byte.
#[test]
fn nul_in_a_text_parameter_is_a_server_error() {
    let mut conn = connect();
    let e = expect_kind("text parameter with NUL", ErrorKind::Db, || {
        conn.query_one("SELECT $1::text", &[&"a\0b"])
    });
    assert_eq!(
        e.code(),
        Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE),
        "{e:?}"
    );
    let bytes: Vec<u8> = conn
        .query_one("SELECT $1::bytea", &[&&b"a\0b"[..]])
        .unwrap()
        .get(0);
    assert_eq!(bytes, b"a\0b");
    assert_works(&mut conn);
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// Too few or too many parameters: `BadInput` before anything is sent.
#[test]
fn wrong_parameter_count_is_bad_input() {
    let mut conn = connect();
    let bad = ErrorKind::BadInput;
    let sql = "SELECT $1::int4 + $2::int4";
    expect_kind("query with 1 of 2", bad, || conn.query(sql, &[&1i32]));
    expect_kind("query with 3 of 2", bad, || {
        conn.query(sql, &[&1i32, &2i32, &3i32])
    });
    let statement = conn.prepare(sql).unwrap();
    expect_kind("execute a Statement", bad, || conn.execute(&statement, &[]));
    expect_kind("query_raw", bad, || {
        conn.query_raw(&statement, [1i32]).map(drop)
    });
    {
        let mut pipeline = conn.pipeline().unwrap();
        expect_kind("Pipeline::query", bad, || pipeline.query(&statement, &[]));
        pipeline.finish().unwrap();
    }
    // query_typed states the types itself: the server counts the placeholders.
    let e = expect_kind("query_typed with 1 of 2", ErrorKind::Db, || {
        conn.query_typed(sql, &[(&1i32, Type::INT4)])
    });
    assert_eq!(e.code(), Some(&SqlState::PROTOCOL_VIOLATION), "{e:?}");
    assert_works(&mut conn);
}

/// The protocol counts parameters in 16 bits: 65,535 work, 65,536 are `BadInput`.
#[test]
fn parameter_count_limit() {
    let mut conn = connect();
    let values: Vec<i32> = (0..65_536).collect();
    let params: Vec<(&(dyn ToSql + Sync), Type)> = values
        .iter()
        .map(|v| (v as &(dyn ToSql + Sync), Type::INT4))
        .collect();
    // $65535 names the last of 65,535 parameters; the others are typed but unused.
    let n: i32 = no_panic("65,535 parameters", || {
        conn.query_typed("SELECT $65535", &params[..65_535])
    })
    .expect("65,535 parameters are allowed")
    .get(0)
    .unwrap()
    .get(0);
    assert_eq!(n, 65_534);
    let e = expect_kind("65,536 parameters", ErrorKind::BadInput, || {
        conn.query_typed("SELECT $65536", &params)
    });
    assert!(e.to_string().contains("65535"), "{e}");
    let untyped: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    expect_kind("query with 65,536 parameters", ErrorKind::BadInput, || {
        conn.query("SELECT 1", &untyped)
    });
    let types = vec![Type::INT4; 65_536];
    expect_kind(
        "prepare_typed with 65,536 types",
        ErrorKind::BadInput,
        || conn.prepare_typed("SELECT 1", &types),
    );
    assert_works(&mut conn);
}

/// A Rust value of the wrong type for a parameter: `Conversion`, naming the parameter.
#[test]
fn parameter_of_the_wrong_type_is_a_conversion_error() {
    let mut conn = connect();
    let e = expect_kind("&str for int4", ErrorKind::Conversion, || {
        conn.query("SELECT $1::int4", &[&"seven"])
    });
    assert!(e.to_string().contains("$1"), "{e}");
    expect_kind("i64 for int4", ErrorKind::Conversion, || {
        conn.query("SELECT $1::int4", &[&7i64])
    });
    expect_kind("i32 for text in query_typed", ErrorKind::Conversion, || {
        conn.query_typed("SELECT $1", &[(&7i32, Type::TEXT)])
    });
    assert_works(&mut conn);
}

/// A statement prepared on another connection: `BadInput` (it names nothing here).
#[test]
fn statement_from_another_connection_is_bad_input() {
    let mut a = connect();
    let mut b = connect();
    let statement = a.prepare("SELECT 1").unwrap();
    expect_kind("query", ErrorKind::BadInput, || b.query(&statement, &[]));
    expect_kind("query_raw", ErrorKind::BadInput, || {
        b.query_raw(&statement, std::iter::empty::<i32>()).map(drop)
    });
    assert_works(&mut b);
}

// ---------------------------------------------------------------------------------------------
// Reading results.

/// SQL NULL into a non-`Option`: `try_get` says `Conversion`; `get` panics with a message
/// (documented), which is a Rust panic, not UB.
#[test]
fn null_into_a_non_option_is_a_conversion_error() {
    let mut conn = connect();
    let row = conn
        .query_one("SELECT NULL::int4, NULL::text", &[])
        .unwrap();
    let e = expect_kind("try_get::<i32>", ErrorKind::Conversion, || {
        row.try_get::<_, i32>(0)
    });
    assert!(e.to_string().to_lowercase().contains("null"), "{e}");
    expect_kind("try_get::<&str>", ErrorKind::Conversion, || {
        row.try_get::<_, &str>(1)
    });
    assert_eq!(row.try_get::<_, Option<i32>>(0).unwrap(), None);
    let panic = catch_unwind(AssertUnwindSafe(|| row.get::<_, i32>(0))).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("column 0"), "{message}");
}

/// A column name the result does not have, or an index past its columns: `Column`.
#[test]
fn unknown_column_is_a_column_error() {
    let mut conn = connect();
    let row = conn.query_one("SELECT 1::int4 AS a", &[]).unwrap();
    expect_kind("try_get(\"nope\")", ErrorKind::Column, || {
        row.try_get::<_, i32>("nope")
    });
    expect_kind("try_get(1)", ErrorKind::Column, || row.try_get::<_, i32>(1));
    expect_kind("try_get(usize::MAX)", ErrorKind::Column, || {
        row.try_get::<_, i32>(usize::MAX)
    });
    expect_kind("raw(1)", ErrorKind::Column, || row.row().raw(1));
}

/// Indices that were valid in one result, used on another with fewer rows or columns:
/// `Rows::get` returns `None`, `try_get` a `Column` error; nothing reads out of bounds.
#[test]
fn indices_from_another_result_are_checked() {
    let mut conn = connect();
    let big = conn
        .query("SELECT g, g * 2, g * 3 FROM generate_series(1, 5) g", &[])
        .unwrap();
    let small = conn.query("SELECT 1::int4", &[]).unwrap();
    let (last_row, last_col) = (big.len() - 1, big.columns().len() - 1);
    assert!(big.get(last_row).is_some());
    assert!(small.get(last_row).is_none());
    let row = small.get(0).unwrap();
    expect_kind(
        "a column index from a wider result",
        ErrorKind::Column,
        || row.try_get::<_, i32>(last_col),
    );
    assert!(
        catch_unwind(AssertUnwindSafe(|| row.get::<_, i32>(last_col))).is_err(),
        "get panics (documented) rather than reading out of bounds"
    );
    assert_eq!(small.iter().nth(last_row).map(|r| r.len()), None);
    // A BinaryCopyOutRow is checked the same way.
    let reader = conn
        .copy_out("COPY (SELECT 1::int4) TO STDOUT (FORMAT binary)")
        .unwrap();
    let row = pqlib::binary_copy::BinaryCopyOutIter::new(reader, &[Type::INT4])
        .next()
        .unwrap()
        .unwrap();
    expect_kind("BinaryCopyOutRow::try_get(2)", ErrorKind::Column, || {
        row.try_get::<i32>(last_col)
    });
}

/// `bytea` read as `&str`/`String`: a `Conversion` error (wrong type), whatever the bytes.
/// And text that really is invalid UTF-8 (a `SQL_ASCII` database stores any bytes; the
/// server does not convert them): `Conversion` from the UTF-8 check, never an invalid `&str`.
#[test]
fn invalid_utf8_is_a_conversion_error() {
    let mut conn = connect();
    let row = conn.query_one("SELECT '\\xff00fe'::bytea", &[]).unwrap();
    expect_kind("bytea as &str", ErrorKind::Conversion, || {
        row.try_get::<_, &str>(0)
    });
    expect_kind("bytea as String", ErrorKind::Conversion, || {
        row.try_get::<_, String>(0)
    });
    assert_eq!(row.get::<_, &[u8]>(0), b"\xff\x00\xfe");

    let _ = conn.batch_execute("DROP DATABASE IF EXISTS pqlib_sql_ascii");
    conn.batch_execute(
        "CREATE DATABASE pqlib_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' \
         TEMPLATE template0",
    )
    .unwrap();
    let mut config: Config = common::conninfo().parse().unwrap();
    config.dbname("pqlib_sql_ascii");
    {
        let mut ascii = config.connect().unwrap();
        // With the client encoding SQL_ASCII too, the server passes the bytes unchecked.
        ascii
            .batch_execute("SET client_encoding = 'SQL_ASCII'")
            .unwrap();
        let row = ascii
            .query_one("SELECT convert_from('\\xff41'::bytea, 'SQL_ASCII')", &[])
            .unwrap();
        let e = expect_kind("invalid UTF-8 text as &str", ErrorKind::Conversion, || {
            row.try_get::<_, &str>(0)
        });
        eprintln!("{e}");
        expect_kind(
            "invalid UTF-8 text as String",
            ErrorKind::Conversion,
            || row.try_get::<_, String>(0),
        );
        assert_eq!(row.row().raw(0).unwrap(), Some(&b"\xffA"[..]));
        // Escaping refuses a session that was switched away from UTF8.
        expect_kind("escape_literal in SQL_ASCII", ErrorKind::BadInput, || {
            ascii.escape_literal("x")
        });
    }
    conn.batch_execute("DROP DATABASE pqlib_sql_ascii").unwrap();
}

// ---------------------------------------------------------------------------------------------
// Connection strings.

/// An unknown keyword: `BadInput` from parsing, from `validate`, and from connecting, which
/// never tries the network.
#[test]
fn invalid_conninfo_keyword_is_bad_input() {
    let bad = ErrorKind::BadInput;
    expect_kind("Config::from_str", bad, || {
        "hots=localhost".parse::<Config>()
    });
    expect_kind("Connection::connect", bad, || {
        Connection::connect("hots=localhost connect_timeout=1")
    });
    expect_kind("a URI parameter", bad, || {
        "postgresql://localhost/db?hots=x".parse::<Config>()
    });
    let mut config = Config::new();
    config.param("hots", "localhost");
    expect_kind("Config::validate", bad, || config.validate());
    expect_kind("Config::connect", bad, || config.connect());
}

/// Malformed connection strings: `BadInput`, with libpq's reason.
#[test]
fn malformed_conninfo_is_bad_input() {
    for text in [
        "host='unterminated",
        "host",
        "= value",
        "postgresql://[::1",
        "postgresql://host/db?application_name=%zz",
        "postgresql://host/db?application_name=%ff%fe",
    ] {
        let e = expect_kind(text, ErrorKind::BadInput, || text.parse::<Config>());
        eprintln!("{text:?}: {e}");
    }
    // Values libpq checks only when connecting: a `Connect` error, not a panic.
    for text in ["port=notaport", "sslmode=sometimes", "connect_timeout=soon"] {
        let conninfo = format!("{} {text}", common::conninfo());
        let e = no_panic(text, || Connection::connect(&conninfo)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{text}: {e:?}");
    }
    for conninfo in [
        "postgresql://127.0.0.1:notaport/db",
        "postgresql://127.0.0.1:99999/db",
    ] {
        let e = no_panic(conninfo, || Connection::connect(conninfo)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{conninfo}: {e:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// A 1 GiB parameter.

/// A 1 GiB `bytea` parameter exceeds what the server accepts in one message (1 GiB - 1):
/// the server drops the connection, which pqlib reports as an error (kind `Closed`), not an
/// out-of-memory abort. Runs in a child process so that its memory is measured alone.
#[test]
#[cfg(target_os = "linux")]
fn a_1_gib_parameter_is_an_error_not_an_oom() {
    let (ok, output) = common::run_child_test(
        "one_gib_parameter_child",
        "PQLIB_ONE_GIB_CHILD",
        &[("DATABASE_URL", common::conninfo())],
    );
    eprintln!("{output}");
    assert!(ok, "the child failed:\n{output}");
}

#[test]
#[ignore = "run by a_1_gib_parameter_is_an_error_not_an_oom"]
#[cfg(target_os = "linux")]
fn one_gib_parameter_child() {
    if std::env::var_os("PQLIB_ONE_GIB_CHILD").is_none() {
        return;
    }
    let mut conn = connect();
    let (rss_before, _) = common::memory_status();
    // 256 MiB goes through: the limit is the server's, not pqlib's.
    let quarter = vec![7u8; 256 << 20];
    let started = Instant::now();
    let n: i32 = conn
        .query_one("SELECT length($1::bytea)", &[&quarter])
        .unwrap()
        .get(0);
    assert_eq!(n, 256 << 20);
    println!(
        "256 MiB bytea parameter: accepted in {:?}",
        started.elapsed()
    );
    drop(quarter);

    let huge = vec![7u8; 1 << 30];
    let (rss_with_vec, _) = common::memory_status();
    let started = Instant::now();
    let result = no_panic("a 1 GiB parameter", || {
        conn.query_one("SELECT length($1::bytea)", &[&huge])
    });
    let elapsed = started.elapsed();
    let (rss_after, peak) = common::memory_status();
    let mib = |b: u64| b >> 20;
    println!(
        "1 GiB bytea parameter: {elapsed:?}: {result:?}\n  RSS before {} MiB, with the 1 GiB \
         Vec {} MiB, after {} MiB, peak {} MiB",
        mib(rss_before),
        mib(rss_with_vec),
        mib(rss_after),
        mib(peak)
    );
    let e = result.expect_err("the server refuses a 1 GiB message");
    // The server ends the session on an over-long message: the connection is lost, not
    // merely answered with an error.
    assert_eq!(e.kind(), ErrorKind::Closed, "{e:?}");
    assert!(
        conn.is_closed(),
        "the session survived a refused 1 GiB message"
    );
    // The Vec (1 GiB), pqlib's encoded copy (1 GiB) and libpq's output buffer (1 GiB): the
    // peak stays near 3 GiB, the memory goes back after the call.
    assert!(peak < (3 << 30) + (512 << 20), "peak RSS {} MiB", mib(peak));
    drop(huge);
    let (rss_end, _) = common::memory_status();
    println!("  RSS after dropping the Vec: {} MiB", mib(rss_end));
    conn.reset().unwrap();
    assert_works(&mut conn);
    let _ = Duration::ZERO;
    println!("CHILD OK");
}

// ---------------------------------------------------------------------------------------------
// A parameter over 2 GiB.

/// A `bytea` value of `i32::MAX + 1` bytes (2 GiB), more than libpq's `int` lengths can say,
/// whose encoding costs no memory: `BytesMut::zeroed` maps fresh zero pages that nothing
/// touches, and an empty output buffer (the first parameter's) takes them whole.
#[derive(Debug)]
struct TwoGibBytea;

impl ToSql for TwoGibBytea {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<pqlib::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.unsplit(bytes::BytesMut::zeroed(i32::MAX as usize + 1));
        Ok(pqlib::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::BYTEA
    }

    pqlib::types::to_sql_checked!();
}

/// docs/ffi.md §2: a parameter longer than a C `int` is a `BadInput` error naming it, not a
/// length truncated on its way to libpq; nothing is sent, the session goes on. In a child
/// process so that its peak memory is its own: it must stay far below the 2 GiB that
/// touching the value would cost.
#[test]
#[cfg(target_os = "linux")]
fn a_parameter_over_2_gib_is_bad_input() {
    let (ok, output) = common::run_child_test(
        "two_gib_parameter_child",
        "PQLIB_TWO_GIB_CHILD",
        &[("DATABASE_URL", common::conninfo())],
    );
    eprintln!("{output}");
    assert!(ok, "the child failed:\n{output}");
}

#[test]
#[ignore = "run by a_parameter_over_2_gib_is_bad_input"]
#[cfg(target_os = "linux")]
fn two_gib_parameter_child() {
    if std::env::var_os("PQLIB_TWO_GIB_CHILD").is_none() {
        return;
    }
    let mut conn = connect();
    let statement = conn.prepare("SELECT length($1::bytea)").unwrap();
    for (what, sql) in [
        ("query_one", "SELECT length($1::bytea)"),
        ("execute", "SELECT length($1::bytea)"),
    ] {
        let e = expect_kind(what, ErrorKind::BadInput, || match what {
            "query_one" => conn.query_one(sql, &[&TwoGibBytea]).map(|_| ()),
            _ => conn.execute(&statement, &[&TwoGibBytea]).map(|_| ()),
        });
        assert!(
            e.to_string().contains("parameter $1 is larger than 2 GiB"),
            "{what}: {e}"
        );
        assert!(!conn.is_closed(), "{what}: the session survives");
        assert_works(&mut conn);
    }
    let (_, peak) = common::memory_status();
    println!("2 GiB parameter: BadInput; peak RSS {} MiB", peak >> 20);
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
    println!("CHILD OK");
}

// ---------------------------------------------------------------------------------------------
// COPY misuse.

/// Data the server rejects in a COPY: a `Db` error at `finish`; bad binary rows are refused
/// by the writer (`Conversion`/`BadInput`) before they are sent.
#[test]
fn bad_copy_data_is_an_error() {
    use std::io::Write;
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE bad_copy (x int4)")
        .unwrap();
    let mut writer = conn.copy_in("COPY bad_copy FROM STDIN").unwrap();
    writer.write_all(b"not a number\n").unwrap();
    let e = expect_kind("finish", ErrorKind::Db, || writer.finish());
    assert_eq!(e.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    let writer = conn
        .copy_in("COPY bad_copy FROM STDIN (FORMAT binary)")
        .unwrap();
    let mut binary = pqlib::binary_copy::BinaryCopyInWriter::new(writer, &[Type::INT4]);
    expect_kind("a text value for int4", ErrorKind::Conversion, || {
        binary.write(&[&"x"])
    });
    expect_kind("two values for one column", ErrorKind::BadInput, || {
        binary.write(&[&1i32, &2i32])
    });
    binary.write(&[&3i32]).unwrap();
    assert_eq!(binary.finish().unwrap(), 1);
    // Text-format data sent as binary: the reader says it is not binary.
    let reader = conn.copy_out("COPY bad_copy TO STDOUT").unwrap();
    let e = pqlib::binary_copy::BinaryCopyOutIter::new(reader, &[Type::INT4])
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    let mut reader = conn
        .copy_out("COPY bad_copy TO STDOUT (FORMAT binary)")
        .unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut all)
        .map_err(inner)
        .unwrap();
    drop(reader);
    assert_works(&mut conn);
}
