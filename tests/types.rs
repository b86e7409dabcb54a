//! Values to and from the server in binary format, through `pqlib::types` (postgres-types):
//! for each type, what the server makes of the value we send (its text form), what we make
//! of the value the server sends, a round trip through a prepared statement, and NULL.
//! Custom enums, composites and domains go through `#[derive(ToSql, FromSql)]` and the
//! connection's catalog lookups.

mod common;

use pqlib::types::*;

use std::fmt::Debug;
use std::net::IpAddr;

use pqlib::Connection;
use pqlib::error::{ErrorKind, SqlState};
// FromSql, ToSql (traits and derives), Kind, Type, Json: from the glob re-export above.

fn connect() -> Connection {
    let mut conn = Connection::connect(&common::conninfo()).expect("connecting to the test server");
    // Fixed text forms for timestamptz and intervals.
    conn.batch_execute(
        "SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'; SET DateStyle = 'ISO, MDY'",
    )
    .unwrap();
    conn
}

/// Checks `value` of Rust type `T` against SQL type `sql_type`, whose text form is `text`:
/// sent as a parameter, received as a column, round-tripped, and as NULL.
#[track_caller]
fn check<T>(conn: &mut Connection, sql_type: &str, value: T, text: &str)
where
    T: ToSql + Sync + for<'a> FromSql<'a> + PartialEq + Debug,
{
    let to_text = format!("SELECT ($1::{sql_type})::text");
    let sent: String = conn
        .query_one(&to_text, &[&value])
        .unwrap_or_else(|e| panic!("{to_text} with {value:?}: {e}"))
        .get(0);
    assert_eq!(sent, text, "{value:?} sent as {sql_type}");

    let from_text = format!("SELECT $1::text::{sql_type}");
    let received: T = conn
        .query_one(&from_text, &[&text])
        .unwrap_or_else(|e| panic!("{from_text} with {text:?}: {e}"))
        .try_get(0)
        .unwrap_or_else(|e| {
            panic!(
                "{sql_type} {text:?} into {}: {e}",
                std::any::type_name::<T>()
            )
        });
    assert_eq!(received, value, "{sql_type} {text:?} received");

    let round_trip = format!("SELECT $1::{sql_type}");
    let back: T = conn.query_one(&round_trip, &[&value]).unwrap().get(0);
    assert_eq!(back, value, "{sql_type} round trip");

    let null: Option<T> = conn.query_one(&round_trip, &[&None::<T>]).unwrap().get(0);
    assert_eq!(null, None, "{sql_type} NULL");
    let is_null: bool = conn
        .query_one(&format!("SELECT $1::{sql_type} IS NULL"), &[&None::<T>])
        .unwrap()
        .get(0);
    assert!(is_null, "{sql_type}: None is sent as NULL");
}

#[test]
fn booleans_and_integers() {
    let mut conn = connect();
    check(&mut conn, "bool", true, "true");
    check(&mut conn, "bool", false, "false");
    check(&mut conn, "\"char\"", b'A' as i8, "A");
    check(&mut conn, "int2", i16::MIN, "-32768");
    check(&mut conn, "int2", 12345i16, "12345");
    check(&mut conn, "int4", i32::MAX, "2147483647");
    check(&mut conn, "int4", -1i32, "-1");
    check(&mut conn, "int8", i64::MIN, "-9223372036854775808");
    check(&mut conn, "int8", 1i64 << 40, "1099511627776");
    check(&mut conn, "oid", u32::MAX, "4294967295");
    check(&mut conn, "oid", 0u32, "0");
}

#[test]
fn floats_including_nan_and_infinity() {
    let mut conn = connect();
    check(&mut conn, "float4", 1.5f32, "1.5");
    check(&mut conn, "float4", -0.25f32, "-0.25");
    check(&mut conn, "float4", f32::INFINITY, "Infinity");
    check(&mut conn, "float4", f32::NEG_INFINITY, "-Infinity");
    check(&mut conn, "float8", 0.1f64, "0.1");
    check(&mut conn, "float8", f64::MAX, "1.7976931348623157e+308");
    check(&mut conn, "float8", f64::INFINITY, "Infinity");
    check(&mut conn, "float8", f64::NEG_INFINITY, "-Infinity");
    // NaN != NaN: checked by hand.
    let sent: String = conn
        .query_one("SELECT ($1::float4)::text", &[&f32::NAN])
        .unwrap()
        .get(0);
    assert_eq!(sent, "NaN");
    let sent: String = conn
        .query_one("SELECT ($1::float8)::text", &[&f64::NAN])
        .unwrap()
        .get(0);
    assert_eq!(sent, "NaN");
    let n: f64 = conn.query_one("SELECT 'NaN'::float8", &[]).unwrap().get(0);
    assert!(n.is_nan());
    let n: f32 = conn
        .query_one("SELECT $1::float4", &[&f32::NAN])
        .unwrap()
        .get(0);
    assert!(n.is_nan());
    let is_nan: bool = conn
        .query_one("SELECT $1::float8 = 'NaN'::float8", &[&f64::NAN])
        .unwrap()
        .get(0);
    assert!(is_nan);
}

#[test]
fn numeric_through_text() {
    let mut conn = connect();
    for value in [
        "0",
        "-1.5",
        "123456789012345678901234567890.000000000000000000001",
        "NaN",
        "Infinity",
    ] {
        let back: String = conn
            .query_one("SELECT ($1::text::numeric)::text", &[&value])
            .unwrap()
            .get(0);
        assert_eq!(back, value);
    }
    let doubled: String = conn
        .query_one(
            "SELECT ($1::text::numeric * 2)::text",
            &[&"0.000000000000000000005"],
        )
        .unwrap()
        .get(0);
    assert_eq!(doubled, "0.000000000000000000010");
    // postgres-types has no Rust type for numeric: reading one is a conversion error.
    let row = conn.query_one("SELECT 1.5::numeric", &[]).unwrap();
    assert_eq!(
        row.try_get::<_, String>(0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
    assert_eq!(
        row.try_get::<_, f64>(0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
    // Its raw bytes are the binary numeric: ndigits=1, weight=0, sign=+, dscale=1, 1, 5000.
    assert_eq!(
        row.row().raw(0).unwrap().unwrap(),
        [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 19, 136]
    );
}

#[test]
fn text_types() {
    let mut conn = connect();
    for sql_type in ["text", "varchar", "name", "bpchar"] {
        check(&mut conn, sql_type, String::from("hello"), "hello");
        check(
            &mut conn,
            sql_type,
            String::from("naïve ✓ 日本"),
            "naïve ✓ 日本",
        );
        check(&mut conn, sql_type, String::new(), "");
        // Borrowed from the parameter, borrowed from the result.
        let row = conn
            .query_one(&format!("SELECT $1::{sql_type}"), &[&"borrowed"])
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "borrowed");
    }
    let padded: String = conn
        .query_one("SELECT $1::char(5)", &[&"ab"])
        .unwrap()
        .get(0);
    assert_eq!(padded, "ab   ");
    let cut: String = conn
        .query_one("SELECT $1::varchar(3)", &[&"abcdef"])
        .unwrap()
        .get(0);
    assert_eq!(cut, "abc");
    // name is 63 bytes at most; in binary, the server refuses a longer one.
    let e = conn
        .query_one("SELECT $1::name", &[&"x".repeat(100)])
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::NAME_TOO_LONG));
    // A large value.
    let big = "0123456789".repeat(200_000);
    let len: i32 = conn
        .query_one("SELECT length($1::text)", &[&big])
        .unwrap()
        .get(0);
    assert_eq!(len, 2_000_000);
    let back: String = conn.query_one("SELECT $1::text", &[&big]).unwrap().get(0);
    assert!(back == big);
    // PostgreSQL text cannot hold NUL: the server refuses it.
    let e = conn.query_one("SELECT $1::text", &[&"a\0b"]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE));
}

#[test]
fn bytea() {
    let mut conn = connect();
    let all: Vec<u8> = (0..=255).collect();
    let hex: String = std::iter::once("\\x".to_owned())
        .chain(all.iter().map(|b| format!("{b:02x}")))
        .collect();
    check(&mut conn, "bytea", all.clone(), &hex);
    check(&mut conn, "bytea", Vec::<u8>::new(), "\\x");
    let row = conn.query_one("SELECT $1::bytea", &[&&all[..]]).unwrap();
    let borrowed: &[u8] = row.get(0);
    assert_eq!(borrowed, &all[..]);
    let len: i32 = conn
        .query_one("SELECT octet_length($1::bytea)", &[&vec![0u8; 1 << 20]])
        .unwrap()
        .get(0);
    assert_eq!(len, 1 << 20);
}

#[test]
fn json_and_jsonb() {
    let mut conn = connect();
    let value = serde_json::json!({"a": 1, "b": [true, null, "ü"], "c": {"d": 1.5}});
    let back: serde_json::Value = conn.query_one("SELECT $1::json", &[&value]).unwrap().get(0);
    assert_eq!(back, value);
    let back: serde_json::Value = conn
        .query_one("SELECT $1::jsonb", &[&value])
        .unwrap()
        .get(0);
    assert_eq!(back, value);
    check(
        &mut conn,
        "jsonb",
        serde_json::json!({"b": [true, null], "a": 1}),
        r#"{"a": 1, "b": [true, null]}"#,
    );
    check(&mut conn, "json", serde_json::json!([1, "x"]), r#"[1,"x"]"#);
    let field: i64 = conn
        .query_one("SELECT ($1::jsonb -> 'c' ->> 'd')::float8::int8", &[&value])
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(field, 2);
    // Json<T> wraps any serde type.
    let wrapped: pqlib::types::Json<Vec<i32>> = conn
        .query_one("SELECT '[1, 2, 3]'::jsonb", &[])
        .unwrap()
        .get(0);
    assert_eq!(wrapped.0, [1, 2, 3]);
}

#[test]
fn uuid() {
    let mut conn = connect();
    let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    check(
        &mut conn,
        "uuid",
        id,
        "01234567-89ab-cdef-0123-456789abcdef",
    );
    check(
        &mut conn,
        "uuid",
        uuid::Uuid::nil(),
        "00000000-0000-0000-0000-000000000000",
    );
}

#[test]
fn chrono_date_and_time() {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    let mut conn = connect();
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let time = NaiveTime::from_hms_micro_opt(13, 14, 15, 123_456).unwrap();
    let ts = NaiveDateTime::new(date, time);
    check(&mut conn, "date", date, "2024-02-29");
    check(&mut conn, "time", time, "13:14:15.123456");
    check(&mut conn, "timestamp", ts, "2024-02-29 13:14:15.123456");
    check(
        &mut conn,
        "timestamptz",
        ts.and_utc(),
        "2024-02-29 13:14:15.123456+00",
    );
    // Before PostgreSQL's epoch (2000-01-01): negative in binary.
    let moon = NaiveDate::from_ymd_opt(1969, 7, 20)
        .unwrap()
        .and_hms_opt(20, 17, 40)
        .unwrap();
    check(&mut conn, "timestamp", moon, "1969-07-20 20:17:40");
    check(
        &mut conn,
        "date",
        NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
        "0001-01-01",
    );
    // A zone other than UTC is converted to the same instant.
    let berlin: DateTime<Utc> = conn
        .query_one("SELECT '2024-06-01 12:00:00+02'::timestamptz", &[])
        .unwrap()
        .get(0);
    assert_eq!(berlin.to_rfc3339(), "2024-06-01T10:00:00+00:00");
    // 'infinity' has no chrono value.
    let row = conn.query_one("SELECT 'infinity'::timestamp", &[]).unwrap();
    assert_eq!(
        row.try_get::<_, NaiveDateTime>(0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
}

#[test]
fn time_crate_date_and_time() {
    use time::{Date, Month, PrimitiveDateTime, Time};
    let mut conn = connect();
    let date = Date::from_calendar_date(2024, Month::February, 29).unwrap();
    let time = Time::from_hms_micro(13, 14, 15, 123_456).unwrap();
    let ts = PrimitiveDateTime::new(date, time);
    check(&mut conn, "date", date, "2024-02-29");
    check(&mut conn, "time", time, "13:14:15.123456");
    check(&mut conn, "timestamp", ts, "2024-02-29 13:14:15.123456");
    check(
        &mut conn,
        "timestamptz",
        ts.assume_utc(),
        "2024-02-29 13:14:15.123456+00",
    );
    let before = PrimitiveDateTime::new(
        Date::from_calendar_date(1969, Month::July, 20).unwrap(),
        Time::from_hms(20, 17, 40).unwrap(),
    );
    check(&mut conn, "timestamp", before, "1969-07-20 20:17:40");
}

#[test]
fn interval_through_text() {
    let mut conn = connect();
    for value in ["1 year 2 mons 3 days 04:05:06.789", "-00:00:01", "00:00:00"] {
        let back: String = conn
            .query_one("SELECT ($1::text::interval)::text", &[&value])
            .unwrap()
            .get(0);
        assert_eq!(back, value);
    }
    let secs: f64 = conn
        .query_one(
            "SELECT extract(epoch FROM $1::text::interval)::float8",
            &[&"1 day 1 second"],
        )
        .unwrap()
        .get(0);
    assert_eq!(secs, 86401.0);
}

#[test]
fn inet() {
    let mut conn = connect();
    // An inet's text form includes its netmask; an IpAddr is a single host.
    check(
        &mut conn,
        "inet",
        IpAddr::from([192, 168, 0, 1]),
        "192.168.0.1/32",
    );
    check(
        &mut conn,
        "inet",
        "2001:db8::1".parse::<IpAddr>().unwrap(),
        "2001:db8::1/128",
    );
    let host: String = conn
        .query_one("SELECT host($1::inet)", &[&IpAddr::from([10, 0, 0, 7])])
        .unwrap()
        .get(0);
    assert_eq!(host, "10.0.0.7");
    // A network: the address is read, the prefix dropped.
    let addr: IpAddr = conn
        .query_one("SELECT '10.1.2.3/8'::inet", &[])
        .unwrap()
        .get(0);
    assert_eq!(addr, IpAddr::from([10, 1, 2, 3]));
}

#[test]
fn arrays() {
    let mut conn = connect();
    check(&mut conn, "int4[]", vec![1i32, 2, 3], "{1,2,3}");
    check(&mut conn, "int4[]", Vec::<i32>::new(), "{}");
    check(&mut conn, "int8[]", vec![i64::MAX], "{9223372036854775807}");
    check(
        &mut conn,
        "text[]",
        vec![
            "a".to_owned(),
            "b c".to_owned(),
            "\"q\"".to_owned(),
            String::new(),
        ],
        r#"{a,"b c","\"q\"",""}"#,
    );
    check(
        &mut conn,
        "int4[]",
        vec![Some(1i32), None, Some(3)],
        "{1,NULL,3}",
    );
    check(&mut conn, "bool[]", vec![true, false], "{t,f}");
    check(
        &mut conn,
        "bytea[]",
        vec![vec![0u8, 255], vec![]],
        r#"{"\\x00ff","\\x"}"#,
    );
    check(
        &mut conn,
        "uuid[]",
        vec![uuid::Uuid::nil()],
        "{00000000-0000-0000-0000-000000000000}",
    );
    // Borrowed elements.
    let row = conn
        .query_one("SELECT ARRAY['x', 'yz']::text[]", &[])
        .unwrap();
    let strs: Vec<&str> = row.get(0);
    assert_eq!(strs, ["x", "yz"]);
    // Slices go out as arrays too.
    let n: i32 = conn
        .query_one("SELECT array_length($1::int4[], 1)", &[&&[5i32, 6, 7][..]])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // A NULL element into a non-Option element type, or two dimensions into a Vec, fail.
    let row = conn
        .query_one(
            "SELECT ARRAY[1, NULL]::int4[], '{{1,2},{3,4}}'::int4[]",
            &[],
        )
        .unwrap();
    assert_eq!(
        row.try_get::<_, Vec<i32>>(0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
    assert_eq!(
        row.try_get::<_, Vec<i32>>(1).unwrap_err().kind(),
        ErrorKind::Conversion
    );
}

#[test]
fn nulls_of_several_types() {
    let mut conn = connect();
    let row = conn
        .query_one(
            "SELECT NULL::bool, NULL::int8, NULL::float8, NULL::text, NULL::bytea, NULL::uuid, \
                    NULL::timestamptz, NULL::jsonb, NULL::int4[], NULL::inet",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<bool>>(0), None);
    assert_eq!(row.get::<_, Option<i64>>(1), None);
    assert_eq!(row.get::<_, Option<f64>>(2), None);
    assert_eq!(row.get::<_, Option<&str>>(3), None);
    assert_eq!(row.get::<_, Option<&[u8]>>(4), None);
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(5), None);
    assert_eq!(row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(6), None);
    assert_eq!(row.get::<_, Option<serde_json::Value>>(7), None);
    assert_eq!(row.get::<_, Option<Vec<i32>>>(8), None);
    assert_eq!(row.get::<_, Option<IpAddr>>(9), None);
    for i in 0..row.len() {
        assert_eq!(row.row().raw(i).unwrap(), None);
    }
}

#[test]
fn query_typed_with_several_types() {
    let mut conn = connect();
    let when = chrono::NaiveDate::from_ymd_opt(2020, 1, 2).unwrap();
    let rows = conn
        .query_typed(
            "SELECT $1, $2, $3, $4",
            &[
                (&7i16, Type::INT2),
                (&"t", Type::VARCHAR),
                (&when, Type::DATE),
                (&vec![1.5f64], Type::FLOAT8_ARRAY),
            ],
        )
        .unwrap();
    let row = rows.get(0).unwrap();
    assert_eq!(row.get::<_, i16>(0), 7);
    assert_eq!(row.get::<_, &str>(1), "t");
    assert_eq!(row.get::<_, chrono::NaiveDate>(2), when);
    assert_eq!(row.get::<_, Vec<f64>>(3), [1.5]);
    let types: Vec<&Type> = rows.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(
        types,
        [
            &Type::INT2,
            &Type::VARCHAR,
            &Type::DATE,
            &Type::FLOAT8_ARRAY
        ]
    );
}

// ---- custom types ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(name = "pqlib_mood")]
enum Mood {
    #[postgres(name = "happy")]
    Happy,
    #[postgres(name = "sad")]
    Sad,
    #[postgres(name = "so so")]
    SoSo,
}

#[derive(Debug, Clone, PartialEq, ToSql, FromSql)]
#[postgres(name = "pqlib_item")]
struct Item {
    name: String,
    qty: i32,
    price: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(name = "pqlib_posint")]
struct PosInt(i32);

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(transparent)]
struct UserId(i32);

#[derive(Debug, Clone, PartialEq, ToSql, FromSql)]
#[postgres(name = "pqlib_order_item")]
struct OrderItem {
    name: String,
    qty: i32,
}

#[derive(Debug, Clone, PartialEq, ToSql, FromSql)]
#[postgres(name = "pqlib_order")]
struct Order {
    mood: Mood,
    items: Vec<OrderItem>,
    tags: Option<Vec<String>>,
}

#[test]
fn custom_enum() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TYPE IF EXISTS pqlib_mood_other CASCADE;
         CREATE TYPE pqlib_mood_other AS ENUM ('happy', 'sad', 'so so', 'angry');",
    )
    .unwrap();
    ensure_mood(&mut conn);
    check(&mut conn, "pqlib_mood", Mood::Happy, "happy");
    check(&mut conn, "pqlib_mood", Mood::SoSo, "so so");
    check(
        &mut conn,
        "pqlib_mood[]",
        vec![Mood::Sad, Mood::Happy],
        "{sad,happy}",
    );
    let stmt = conn.prepare("SELECT $1::pqlib_mood").unwrap();
    let ty = &stmt.params()[0];
    assert_eq!(ty.name(), "pqlib_mood");
    assert_eq!(ty.schema(), "public");
    assert_eq!(
        ty.kind(),
        &Kind::Enum(vec!["happy".into(), "sad".into(), "so so".into()])
    );
    // Another enum with the same labels is a different type.
    let e = conn
        .query_one("SELECT $1::pqlib_mood_other", &[&Mood::Sad])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    let row = conn
        .query_one("SELECT 'angry'::pqlib_mood_other", &[])
        .unwrap();
    assert_eq!(
        row.try_get::<_, Mood>(0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
    // As text, any enum reads.
    let s: String = conn
        .query_one("SELECT 'angry'::pqlib_mood_other::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(s, "angry");
}

/// Creates pqlib_mood if needed; several tests use it, in any order.
fn ensure_mood(conn: &mut Connection) {
    let created = conn.batch_execute(
        "DO $$ BEGIN
             CREATE TYPE pqlib_mood AS ENUM ('happy', 'sad', 'so so');
         EXCEPTION WHEN duplicate_object THEN NULL;
         END $$",
    );
    if let Err(e) = created {
        // Two tests creating it at once: one of them loses on the catalog's unique index.
        assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    }
}

#[test]
fn composite_type() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TYPE IF EXISTS pqlib_item CASCADE;
         CREATE TYPE pqlib_item AS (name text, qty int4, price float8);",
    )
    .unwrap();
    let item = Item {
        name: "widget, \"large\"".into(),
        qty: 3,
        price: Some(9.5),
    };
    check(
        &mut conn,
        "pqlib_item",
        item.clone(),
        r#"("widget, ""large""",3,9.5)"#,
    );
    let cheap = Item {
        name: String::new(),
        qty: -1,
        price: None,
    };
    check(&mut conn, "pqlib_item", cheap.clone(), r#"("",-1,)"#);
    check(
        &mut conn,
        "pqlib_item[]",
        vec![item.clone(), cheap],
        r#"{"(\"widget, \"\"large\"\"\",3,9.5)","(\"\",-1,)"}"#,
    );
    let rows = conn.query("SELECT ($1::pqlib_item).qty", &[&item]).unwrap();
    assert_eq!(rows.get(0).unwrap().get::<_, i32>(0), 3);
    let stmt = conn.prepare("SELECT $1::pqlib_item").unwrap();
    match stmt.params()[0].kind() {
        Kind::Composite(fields) => {
            let fields: Vec<(&str, &Type)> = fields.iter().map(|f| (f.name(), f.type_())).collect();
            assert_eq!(
                fields,
                [
                    ("name", &Type::TEXT),
                    ("qty", &Type::INT4),
                    ("price", &Type::FLOAT8)
                ]
            );
        }
        other => panic!("not a composite: {other:?}"),
    }
}

#[test]
fn nested_custom_types() {
    let mut conn = connect();
    ensure_mood(&mut conn);
    conn.batch_execute(
        "DROP TYPE IF EXISTS pqlib_order CASCADE;
         DROP TYPE IF EXISTS pqlib_order_item CASCADE;
         CREATE TYPE pqlib_order_item AS (name text, qty int4);
         CREATE TYPE pqlib_order AS (mood pqlib_mood, items pqlib_order_item[], tags text[]);",
    )
    .unwrap();
    let order = Order {
        mood: Mood::SoSo,
        items: vec![
            OrderItem {
                name: "a".into(),
                qty: 1,
            },
            OrderItem {
                name: "b".into(),
                qty: 2,
            },
        ],
        tags: None,
    };
    let back: Order = conn
        .query_one("SELECT $1::pqlib_order", &[&order])
        .unwrap()
        .get(0);
    assert_eq!(back, order);
    let mood: Mood = conn
        .query_one("SELECT ($1::pqlib_order).mood", &[&order])
        .unwrap()
        .get(0);
    assert_eq!(mood, Mood::SoSo);
    let tagged = Order {
        tags: Some(vec!["x".into()]),
        items: vec![],
        ..order
    };
    let text: String = conn
        .query_one("SELECT ($1::pqlib_order)::text", &[&tagged])
        .unwrap()
        .get(0);
    assert_eq!(text, r#"("so so",{},{x})"#);
}

#[test]
fn domain_over_int4() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP DOMAIN IF EXISTS pqlib_posint CASCADE;
         CREATE DOMAIN pqlib_posint AS int4 CHECK (VALUE > 0);",
    )
    .unwrap();
    let stmt = conn.prepare("SELECT $1::pqlib_posint AS v").unwrap();
    assert_eq!(stmt.params()[0].name(), "pqlib_posint");
    assert_eq!(stmt.params()[0].kind(), &Kind::Domain(Type::INT4));
    // The server describes a domain-typed result column by its base type.
    assert_eq!(stmt.columns()[0].type_(), &Type::INT4);

    let v: i32 = conn.query_one(&stmt, &[&PosInt(5)]).unwrap().get(0);
    assert_eq!(v, 5);
    let text: String = conn
        .query_one("SELECT ($1::pqlib_posint)::text", &[&PosInt(7)])
        .unwrap()
        .get(0);
    assert_eq!(text, "7");
    let e = conn.query_one(&stmt, &[&PosInt(-5)]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION));
    assert_eq!(e.as_db_error().unwrap().datatype(), Some("pqlib_posint"));
    // A transparent newtype is its inner type.
    check(&mut conn, "int4", UserId(42), "42");
    // A domain over text read as a column: its base type again.
    conn.batch_execute(
        "DROP DOMAIN IF EXISTS pqlib_email CASCADE;
         CREATE DOMAIN pqlib_email AS text CHECK (VALUE LIKE '%@%');",
    )
    .unwrap();
    let s: String = conn
        .query_one("SELECT 'a@b'::pqlib_email", &[])
        .unwrap()
        .get(0);
    assert_eq!(s, "a@b");
}

#[test]
fn range_and_multirange_kinds_are_looked_up() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TYPE IF EXISTS pqlib_floatrange CASCADE;
         CREATE TYPE pqlib_floatrange AS RANGE (subtype = float8, multirange_type_name = pqlib_floatmultirange);",
    )
    .unwrap();
    let rows = conn
        .query(
            "SELECT '[1.5,2.5)'::pqlib_floatrange AS r, '{[1,2)}'::pqlib_floatmultirange AS m, \
                    ARRAY['[1,2)'::pqlib_floatrange] AS a",
            &[],
        )
        .unwrap();
    let kinds: Vec<(&str, &Kind)> = rows
        .columns()
        .iter()
        .map(|c| (c.type_().name(), c.type_().kind()))
        .collect();
    assert_eq!(kinds[0], ("pqlib_floatrange", &Kind::Range(Type::FLOAT8)));
    assert_eq!(kinds[1].0, "pqlib_floatmultirange");
    match kinds[1].1 {
        Kind::Multirange(range) => assert_eq!(range.name(), "pqlib_floatrange"),
        other => panic!("not a multirange: {other:?}"),
    }
    match kinds[2].1 {
        Kind::Array(element) => assert_eq!(element.name(), "pqlib_floatrange"),
        other => panic!("not an array: {other:?}"),
    }
    // No Rust type reads them, but the raw bytes are there and readable as text.
    let row = rows.get(0).unwrap();
    assert!(row.raw(0).unwrap().is_some());
    let text: String = conn
        .query_one("SELECT '[1.5,2.5)'::pqlib_floatrange::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(text, "[1.5,2.5)");
}

#[test]
fn recreated_type_gets_a_fresh_lookup() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TYPE IF EXISTS pqlib_recreated CASCADE;
         CREATE TYPE pqlib_recreated AS ENUM ('a');",
    )
    .unwrap();
    let rows = conn.query("SELECT 'a'::pqlib_recreated", &[]).unwrap();
    assert_eq!(
        rows.columns()[0].type_().kind(),
        &Kind::Enum(vec!["a".into()])
    );
    conn.batch_execute(
        "DROP TYPE pqlib_recreated CASCADE;
         CREATE TYPE pqlib_recreated AS ENUM ('a', 'b');",
    )
    .unwrap();
    let rows = conn.query("SELECT 'b'::pqlib_recreated", &[]).unwrap();
    assert_eq!(
        rows.columns()[0].type_().kind(),
        &Kind::Enum(vec!["a".into(), "b".into()])
    );
}
