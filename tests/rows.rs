//! Reading results: `Rows`, `Row`, `OwnedRow`, `Column`; borrowed (zero-copy) values; NULL
//! handling; errors and panics for missing columns and wrong types.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use pqlib::error::ErrorKind;
use pqlib::types::Type;
use pqlib::{Connection, Rows};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

fn sample(conn: &mut Connection) -> Rows {
    conn.query(
        "SELECT i AS id, 'name ' || i AS name, decode(lpad(to_hex(i), 2, '0'), 'hex') AS data, \
                CASE WHEN i % 2 = 0 THEN i END AS maybe \
         FROM generate_series(1, 4) AS i ORDER BY i",
        &[],
    )
    .unwrap()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<non-string panic>".to_owned()
    }
}

#[test]
fn len_columns_and_types() {
    let mut conn = connect();
    let rows = sample(&mut conn);
    assert_eq!(rows.len(), 4);
    assert!(!rows.is_empty());
    let columns: Vec<(&str, &Type)> = rows
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", &Type::INT4),
            ("name", &Type::TEXT),
            ("data", &Type::BYTEA),
            ("maybe", &Type::INT4)
        ]
    );
    let row = rows.get(0).unwrap();
    assert_eq!(row.len(), 4);
    assert!(!row.is_empty());
    assert_eq!(row.columns(), rows.columns());
    assert!(rows.get(3).is_some());
    assert!(rows.get(4).is_none());

    let empty = conn.query("SELECT 1 AS x WHERE false", &[]).unwrap();
    assert_eq!(empty.len(), 0);
    assert!(empty.is_empty());
    assert!(empty.get(0).is_none());
    assert_eq!(empty.iter().count(), 0);
    assert_eq!(empty.columns()[0].name(), "x");

    // A statement that returns no rows has no columns.
    let none = conn
        .query("SET application_name = 'rows test'", &[])
        .unwrap();
    assert!(none.is_empty() && none.columns().is_empty());
    // An unnamed expression is "?column?".
    let unnamed = conn.query("SELECT 1 + 1", &[]).unwrap();
    assert_eq!(unnamed.columns()[0].name(), "?column?");
}

#[test]
fn get_by_index_and_by_name() {
    let mut conn = connect();
    let rows = sample(&mut conn);
    let row = rows.get(1).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, i32>("id"), 2);
    assert_eq!(row.get::<_, String>(1), "name 2");
    assert_eq!(row.get::<_, &str>("name"), "name 2");
    assert_eq!(row.get::<_, Vec<u8>>("data"), [2u8]);
    assert_eq!(row.get::<_, &[u8]>(2), [2u8]);
    assert_eq!(row.try_get::<_, i32>("id").unwrap(), 2);
    assert_eq!(row.try_get::<_, &str>(1).unwrap(), "name 2");
    // A name computed at run time.
    let name = String::from("name");
    assert_eq!(row.get::<_, &str>(name.as_str()), "name 2");
    // Names match exactly first, then ignoring ASCII case.
    assert_eq!(row.get::<_, i32>("ID"), 2);
    let cased = conn
        .query(r#"SELECT 1::int4 AS "A", 2::int4 AS a"#, &[])
        .unwrap();
    let cased = cased.get(0).unwrap();
    assert_eq!(cased.get::<_, i32>("A"), 1);
    assert_eq!(cased.get::<_, i32>("a"), 2);
    // With duplicate names, the first column wins.
    let dup = conn
        .query("SELECT 1::int4 AS x, 2::int4 AS x", &[])
        .unwrap();
    assert_eq!(dup.get(0).unwrap().get::<_, i32>("x"), 1);
}

#[test]
fn borrowed_values_point_into_the_result() {
    let mut conn = connect();
    let rows = conn
        .query("SELECT 'zero copy'::text, '\\x00ff10'::bytea", &[])
        .unwrap();
    let row = rows.get(0).unwrap();
    let a: &str = row.get(0);
    let b: &str = row.get(0);
    assert_eq!(a, "zero copy");
    assert_eq!(a.as_ptr(), b.as_ptr(), "two gets return the same memory");
    let raw = row.raw(0).unwrap().unwrap();
    assert_eq!(
        raw.as_ptr(),
        a.as_ptr(),
        "the &str is the raw value, not a copy"
    );
    // Through another Row handle on the same result: still the same memory.
    let again: &str = rows.iter().next().unwrap().get(0);
    assert_eq!(again.as_ptr(), a.as_ptr());

    let bytes: &[u8] = row.get(1);
    assert_eq!(bytes, [0x00, 0xff, 0x10]);
    let bytes2: &[u8] = row.get(1);
    assert_eq!(bytes.as_ptr(), bytes2.as_ptr());
    // An owned String is a copy.
    let owned: String = row.get(0);
    assert_ne!(owned.as_ptr(), a.as_ptr());

    // OwnedRow lends the same way.
    let one = conn.query_one("SELECT 'owned row'::text", &[]).unwrap();
    let x: &str = one.get(0);
    let y: &str = one.row().get(0);
    assert_eq!(x, "owned row");
    assert_eq!(x.as_ptr(), y.as_ptr());
}

#[test]
fn null_handling() {
    let mut conn = connect();
    let rows = conn
        .query(
            "SELECT NULL::int4 AS n, 5::int4 AS five, NULL::text AS t",
            &[],
        )
        .unwrap();
    let row = rows.get(0).unwrap();
    assert_eq!(row.get::<_, Option<i32>>("n"), None);
    assert_eq!(row.get::<_, Option<i32>>("five"), Some(5));
    assert_eq!(row.get::<_, Option<&str>>("t"), None);
    assert_eq!(row.raw(0).unwrap(), None);
    // NULL into a non-Option is a conversion error.
    let e = row.try_get::<_, i32>("n").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(e.to_string().contains('n'), "{e}");
    let e = row.try_get::<_, String>(2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    // The sample's `maybe` column alternates.
    let sample = sample(&mut conn);
    let maybes: Vec<Option<i32>> = sample.iter().map(|r| r.get("maybe")).collect();
    assert_eq!(maybes, [None, Some(2), None, Some(4)]);
}

#[test]
fn wrong_type_is_a_conversion_error() {
    let mut conn = connect();
    let rows = conn
        .query("SELECT 1::int4, 'x'::text, 1::int8", &[])
        .unwrap();
    let row = rows.get(0).unwrap();
    for e in [
        row.try_get::<_, String>(0).unwrap_err(),
        row.try_get::<_, i64>(0).unwrap_err(), // no silent widening
        row.try_get::<_, i32>(1).unwrap_err(),
        row.try_get::<_, i32>(2).unwrap_err(), // no silent narrowing
        row.try_get::<_, Vec<u8>>(1).unwrap_err(),
        row.try_get::<_, Option<bool>>(0).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Conversion, "{e}");
        assert!(e.as_db_error().is_none());
    }
    let e = row.try_get::<_, String>(0).unwrap_err();
    assert!(e.to_string().contains("int4"), "{e}");
}

/// Whether a Rust type fits a column is decided once per column (and kept with the prepared
/// statement), yet every value is still judged: a NULL in a later row or a later execution,
/// another Rust type, threads reading the same rows as different types.
#[test]
fn checks_made_once_per_column_still_judge_every_row() {
    let mut conn = connect();
    let stmt = conn
        .prepare(
            "SELECT CASE WHEN i < $1 THEN i END AS v, i::text AS t \
             FROM generate_series(1, 3) AS i ORDER BY i",
        )
        .unwrap();
    let rows = conn.query(&stmt, &[&3i32]).unwrap();
    let (first, last) = (rows.get(0).unwrap(), rows.get(2).unwrap());
    assert_eq!(first.get::<_, i32>("v"), 1);
    assert_eq!(rows.get(1).unwrap().get::<_, i32>("v"), 2);
    let e = last.try_get::<_, i32>("v").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e}");
    assert!(e.to_string().contains("column v of type int4"), "{e}");
    assert_eq!(last.get::<_, Option<i32>>("v"), None);
    // Accepting i32 says nothing about other types.
    assert_eq!(
        first.try_get::<_, i64>("v").unwrap_err().kind(),
        ErrorKind::Conversion
    );
    assert_eq!(
        first.try_get::<_, &str>("v").unwrap_err().kind(),
        ErrorKind::Conversion
    );
    assert_eq!(first.get::<_, &str>("t"), "1");
    assert_eq!(
        first.try_get::<_, i32>("t").unwrap_err().kind(),
        ErrorKind::Conversion
    );
    // The same statement again, every value NULL this time.
    let nulls = conn.query(&stmt, &[&0i32]).unwrap();
    for row in &nulls {
        assert_eq!(
            row.try_get::<_, i32>(0).unwrap_err().kind(),
            ErrorKind::Conversion
        );
        assert_eq!(row.get::<_, Option<i32>>(0), None);
    }
    // Threads reading the same rows, each as its own type.
    std::thread::scope(|s| {
        for k in 0..4 {
            let rows = &rows;
            s.spawn(move || {
                for _ in 0..200 {
                    for (i, row) in rows.iter().enumerate() {
                        let expected = (i < 2).then_some(i as i32 + 1);
                        match k % 3 {
                            0 => assert_eq!(row.get::<_, Option<i32>>(0), expected),
                            1 => assert_eq!(row.try_get::<_, i32>(0).ok(), expected),
                            _ => assert!(row.try_get::<_, Option<i64>>(0).is_err()),
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn missing_column_is_a_column_error() {
    let mut conn = connect();
    let rows = conn
        .query("SELECT 1::int4 AS a, 2::int4 AS b", &[])
        .unwrap();
    let row = rows.get(0).unwrap();
    for e in [
        row.try_get::<_, i32>(2).unwrap_err(),
        row.try_get::<_, i32>(usize::MAX).unwrap_err(),
        row.try_get::<_, i32>("c").unwrap_err(),
        row.try_get::<_, i32>("").unwrap_err(),
        row.raw(2).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Column, "{e}");
    }
    let e = row.try_get::<_, i32>("no_such_column").unwrap_err();
    assert!(e.to_string().contains("no_such_column"), "{e}");
    let one = conn.query_one("SELECT 1::int4 AS a", &[]).unwrap();
    assert_eq!(
        one.try_get::<_, i32>("z").unwrap_err().kind(),
        ErrorKind::Column
    );
}

#[test]
fn get_panics_with_the_column_in_the_message() {
    let mut conn = connect();
    let rows = conn
        .query("SELECT 1::int4 AS num, NULL::text AS nothing", &[])
        .unwrap();
    let row = rows.get(0).unwrap();
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let cases: [Case; 4] = [
        (
            "no_such_column",
            Box::new(|| {
                let _: i32 = row.get("no_such_column");
            }),
        ),
        (
            "7",
            Box::new(|| {
                let _: i32 = row.get(7);
            }),
        ),
        ("num", Box::new(|| drop(row.get::<_, String>("num")))),
        (
            "nothing",
            Box::new(|| drop(row.get::<_, String>("nothing"))),
        ),
    ];
    for (column, f) in cases {
        let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("get panics");
        let message = panic_message(payload);
        assert!(
            message.contains(&format!("column {column}")),
            "panic message for {column}: {message}"
        );
    }
    // The rows are unharmed.
    assert_eq!(row.get::<_, i32>("num"), 1);
}

#[test]
fn query_one_get_infers_the_type() {
    let mut conn = connect();
    let n: i64 = conn.query_one("SELECT 1::int8", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    fn fetch(conn: &mut Connection) -> Result<i64, pqlib::Error> {
        let n: i64 = conn.query_one("SELECT 1::int8", &[])?.get(0);
        Ok(n)
    }
    assert_eq!(fetch(&mut conn).unwrap(), 1);
    let row = conn.query_one("SELECT 2::int8 AS two", &[]).unwrap();
    assert_eq!(row.columns()[0].name(), "two");
    assert_eq!((row.len(), row.is_empty()), (1, false));
    let rows = row.into_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows.get(0).unwrap().get::<_, i64>("two"), 2);
}

#[test]
fn iteration_forwards_backwards_and_by_reference() {
    let mut conn = connect();
    let rows = sample(&mut conn);
    let mut ids = Vec::new();
    for row in &rows {
        ids.push(row.get::<_, i32>("id"));
    }
    assert_eq!(ids, [1, 2, 3, 4]);
    let reversed: Vec<i32> = rows.iter().rev().map(|r| r.get(0)).collect();
    assert_eq!(reversed, [4, 3, 2, 1]);
    // Both ends meet in the middle without repeating a row.
    let mut it = rows.iter();
    assert_eq!(it.len(), 4);
    assert_eq!(it.next().unwrap().get::<_, i32>(0), 1);
    assert_eq!(it.next_back().unwrap().get::<_, i32>(0), 4);
    assert_eq!(it.len(), 2);
    assert_eq!(it.next_back().unwrap().get::<_, i32>(0), 3);
    assert_eq!(it.next().unwrap().get::<_, i32>(0), 2);
    assert!(it.next().is_none() && it.next_back().is_none());
    assert_eq!(it.size_hint(), (0, Some(0)));
    // Row handles are Copy and independent of the iterator.
    let third = rows.iter().nth(2).unwrap();
    let copy = third;
    assert_eq!(copy.get::<_, &str>("name"), "name 3");
    let names: Vec<&str> = rows.iter().map(|r| r.get("name")).collect();
    assert_eq!(names, ["name 1", "name 2", "name 3", "name 4"]);
}

#[test]
fn rows_affected_and_command_tag() {
    let mut conn = connect();
    let rows = conn
        .query("SELECT * FROM generate_series(1, 3)", &[])
        .unwrap();
    assert_eq!(
        (rows.rows_affected(), rows.command_tag().as_str()),
        (3, "SELECT")
    );
    let created = conn
        .query("CREATE TEMP TABLE tagged (x int4)", &[])
        .unwrap();
    assert_eq!(created.command_tag(), "CREATE TABLE");
    assert_eq!(created.rows_affected(), 0);
    let inserted = conn
        .query("INSERT INTO tagged SELECT generate_series(1, 5)", &[])
        .unwrap();
    assert_eq!(
        (inserted.rows_affected(), inserted.command_tag().as_str()),
        (5, "INSERT")
    );
    let returning = conn
        .query("UPDATE tagged SET x = x * 10 WHERE x > 2 RETURNING x", &[])
        .unwrap();
    assert_eq!(returning.command_tag(), "UPDATE");
    assert_eq!(returning.rows_affected(), 3);
    let mut xs: Vec<i32> = returning.iter().map(|r| r.get(0)).collect();
    xs.sort_unstable();
    assert_eq!(xs, [30, 40, 50]);
    let deleted = conn.query("DELETE FROM tagged", &[]).unwrap();
    assert_eq!(
        (deleted.rows_affected(), deleted.command_tag().as_str()),
        (5, "DELETE")
    );
    let typed = conn
        .query_typed("SELECT 1 UNION ALL SELECT 2", &[])
        .unwrap();
    assert_eq!(
        (typed.rows_affected(), typed.command_tag().as_str()),
        (2, "SELECT")
    );
}

#[test]
fn debug_output_shows_shape_not_data() {
    let mut conn = connect();
    let rows = conn.query("SELECT 'secret value'::text AS s", &[]).unwrap();
    let debug = format!("{rows:?}");
    assert!(debug.contains("len: 1"), "{debug}");
    assert!(debug.contains("\"s\""), "{debug}");
    assert!(!debug.contains("secret value"), "{debug}");
    let row_debug = format!("{:?}", rows.get(0).unwrap());
    assert!(!row_debug.contains("secret value"), "{row_debug}");
}

#[test]
fn large_result() {
    let mut conn = connect();
    let rows = conn
        .query(
            "SELECT i, md5(i::text) FROM generate_series(1, 20000) AS i ORDER BY i",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 20000);
    let sum: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).sum();
    assert_eq!(sum, 20000 * 20001 / 2);
    assert!(rows.iter().all(|r| r.get::<_, &str>(1).len() == 32));
}
