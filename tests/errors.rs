//! Errors: the server's report (`DbError` fields, SQLSTATE, positions), the error kinds,
//! `source()` chains, non-ASCII messages, and a connection whose backend was terminated.

mod common;

use std::error::Error as _;

use pqlib::error::{DbError, ErrorKind, ErrorPosition, Severity, SqlState};
use pqlib::types::{WasNull, WrongType};
use pqlib::{Connection, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

fn db_error(e: &pqlib::Error) -> &DbError {
    e.as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e:?}"))
}

#[test]
fn unique_violation_names_table_constraint_and_detail() {
    let mut conn = connect();
    conn.batch_execute(
        "DROP TABLE IF EXISTS pqlib_errors_unique;
         CREATE TABLE pqlib_errors_unique (id int4 CONSTRAINT pqlib_errors_unique_pk PRIMARY KEY, v text);
         INSERT INTO pqlib_errors_unique VALUES (1, 'a');",
    )
    .unwrap();
    let e = conn
        .execute(
            "INSERT INTO pqlib_errors_unique VALUES ($1, $2)",
            &[&1i32, &"b"],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Db);
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let db = db_error(&e);
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(db.code().code(), "23505");
    assert_eq!(db.severity(), "ERROR");
    assert_eq!(db.parsed_severity(), Some(Severity::Error));
    assert_eq!(db.table(), Some("pqlib_errors_unique"));
    assert_eq!(db.schema(), Some("public"));
    assert_eq!(db.constraint(), Some("pqlib_errors_unique_pk"));
    assert_eq!(db.detail(), Some("Key (id)=(1) already exists."));
    assert!(
        db.message().contains("pqlib_errors_unique_pk"),
        "{}",
        db.message()
    );
    assert!(db.file().is_some() && db.line().is_some() && db.routine().is_some());
    // Display carries the message, code and detail.
    let display = e.to_string();
    assert!(display.contains("duplicate key"), "{display}");
    assert!(display.contains("23505"), "{display}");
    assert!(
        display.contains("Key (id)=(1) already exists."),
        "{display}"
    );
    // A not-null violation names the column.
    let e = conn
        .execute("INSERT INTO pqlib_errors_unique VALUES (NULL, 'x')", &[])
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::NOT_NULL_VIOLATION));
    assert_eq!(db_error(&e).column(), Some("id"));
    conn.batch_execute("DROP TABLE pqlib_errors_unique")
        .unwrap();
}

#[test]
fn division_by_zero() {
    let mut conn = connect();
    let e = conn.query("SELECT 1 / $1::int4", &[&0i32]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(db_error(&e).message(), "division by zero");
    let e = conn.batch_execute("SELECT 1/0").unwrap_err();
    assert_eq!(db_error(&e).message(), "division by zero");
    assert!(!e.is_closed());
}

#[test]
fn syntax_error_position_counts_characters() {
    let mut conn = connect();
    let e = conn.batch_execute("SELECT 1 FROM WHERE").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(db_error(&e).position(), Some(&ErrorPosition::Original(15)));
    // Through prepare (the cached statement path) as well; multi-byte characters count once.
    let e = conn.query("SELECT 'ñññ' FROM WHERE", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(db_error(&e).position(), Some(&ErrorPosition::Original(19)));
    let e = conn.query_typed("SELEC 1", &[]).unwrap_err();
    assert_eq!(db_error(&e).position(), Some(&ErrorPosition::Original(1)));
}

#[test]
fn error_in_an_internal_query_has_internal_position() {
    let mut conn = connect();
    let e = conn
        .batch_execute("DO $$ BEGIN EXECUTE 'SELECT 1 FROM WHERE'; END $$")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    assert_eq!(
        db_error(&e).position(),
        Some(&ErrorPosition::Internal {
            position: 15,
            query: "SELECT 1 FROM WHERE".into()
        })
    );
    assert!(db_error(&e).where_().unwrap().contains("PL/pgSQL"), "{e:?}");
}

#[test]
fn raise_exception_fills_hint_detail_and_context() {
    let mut conn = connect();
    conn.batch_execute(
        "CREATE OR REPLACE FUNCTION pg_temp.pqlib_fail(n int4) RETURNS int4 LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'failed with %', n
                 USING HINT = 'try another n', DETAIL = 'n was ' || n, ERRCODE = 'P0001';
         END $$",
    )
    .unwrap();
    let e = conn
        .query("SELECT pg_temp.pqlib_fail($1)", &[&7i32])
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::RAISE_EXCEPTION));
    let db = db_error(&e);
    assert_eq!(db.message(), "failed with 7");
    assert_eq!(db.hint(), Some("try another n"));
    assert_eq!(db.detail(), Some("n was 7"));
    let where_ = db.where_().expect("a PL/pgSQL context");
    assert!(where_.contains("pqlib_fail"), "{where_}");
    assert!(where_.contains("RAISE"), "{where_}");
    let display = e.to_string();
    assert!(display.contains("HINT: try another n"), "{display}");
    assert!(display.contains("DETAIL: n was 7"), "{display}");
    // A custom SQLSTATE.
    let e = conn
        .batch_execute("DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'XX123'; END $$")
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "XX123");
}

#[test]
fn non_ascii_error_text_round_trips() {
    let mut conn = connect();
    let e = conn
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'naïve ✓ 日本' USING DETAIL = 'ünïcödé'; END $$",
        )
        .unwrap_err();
    assert_eq!(db_error(&e).message(), "naïve ✓ 日本");
    assert_eq!(db_error(&e).detail(), Some("ünïcödé"));
    assert!(e.to_string().contains("naïve ✓ 日本"));
    // Through a parameter, too.
    let e = conn
        .query(
            "SELECT CASE WHEN $1::text <> '' THEN (SELECT 1/0) END",
            &[&"✓"],
        )
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
}

#[test]
fn source_chains() {
    let mut conn = connect();
    // A database error's source is the DbError.
    let e = conn.batch_execute("SELECT 1/0").unwrap_err();
    let source = e.source().expect("a database error has a source");
    let db = source
        .downcast_ref::<DbError>()
        .expect("the source is the DbError");
    assert_eq!(db.message(), "division by zero");
    assert_eq!(db.code(), &SqlState::DIVISION_BY_ZERO);

    // A conversion error's source is postgres-types' error.
    let row = conn.query_one("SELECT 1::int4, NULL::int4", &[]).unwrap();
    let e = row.try_get::<_, String>(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(e.as_db_error().is_none() && e.code().is_none());
    let source = e.source().expect("a conversion error has a source");
    assert!(source.is::<WrongType>(), "{source:?}");
    let e = row.try_get::<_, i32>(1).unwrap_err();
    assert!(e.source().unwrap().is::<WasNull>(), "{e:?}");
    // A parameter that cannot be encoded, likewise.
    let e = conn.query("SELECT $1::int8", &[&1i32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(e.source().unwrap().is::<WrongType>(), "{e:?}");

    // Kinds of pqlib's own making have no source.
    let e = conn.query_one("SELECT 1 WHERE false", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RowCount);
    assert!(e.source().is_none());
    let e = row.try_get::<_, i32>(9).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Column);
    assert!(e.source().is_none());

    // The error can be boxed and sent like any error.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    assert!(boxed.to_string().contains('9'));
}

#[test]
fn error_in_a_transaction_block_and_after() {
    let mut conn = connect();
    conn.batch_execute("BEGIN").unwrap();
    let e = conn.batch_execute("SELECT 1/0").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(conn.transaction_status(), TransactionStatus::InError);
    let e = conn.query("SELECT 1", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    conn.batch_execute("ROLLBACK").unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        conn.query_one("SELECT 1::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

/// Terminates `conn`'s backend from another connection and waits (bounded) until it is gone.
fn terminate_backend(conn: &Connection) {
    let mut killer = connect();
    let terminated: bool = killer
        .query_one(
            "SELECT pg_terminate_backend($1::int4, 10000)",
            &[&(conn.backend_pid() as i32)],
        )
        .unwrap()
        .get(0);
    assert!(terminated, "the backend did not exit within 10 s");
}

#[test]
fn terminated_backend_is_closed_and_reset_recovers() {
    let mut conn = connect();
    let old_pid = conn.backend_pid();
    conn.query("SELECT 'cached'::text", &[]).unwrap();
    terminate_backend(&conn);
    // libpq has not noticed yet.
    assert!(!conn.is_closed());

    let e = conn.query("SELECT 'cached'::text", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e:?}");
    assert!(e.is_closed());
    assert!(conn.is_closed());
    // Every later call fails the same way, whichever path it takes.
    for e in [
        conn.batch_execute("SELECT 1").unwrap_err(),
        conn.query("SELECT 'not cached'::text", &[]).unwrap_err(),
        conn.query_typed("SELECT 1", &[]).unwrap_err(),
        conn.prepare("SELECT 1").unwrap_err(),
    ] {
        assert!(e.is_closed(), "{e:?}");
    }

    conn.reset().unwrap();
    assert!(!conn.is_closed());
    assert_ne!(conn.backend_pid(), old_pid);
    // The statement cache was cleared with the session: the same text is prepared afresh.
    let s: String = conn.query_one("SELECT 'cached'::text", &[]).unwrap().get(0);
    assert_eq!(s, "cached");
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

/// BUG: `transaction()` on a lost connection says "a transaction is already open" (BadInput):
/// `TransactionBuilder::start` treats `TransactionStatus::Unknown` like an open transaction.
#[test]
fn transaction_on_a_closed_connection_reports_closed() {
    let mut conn = connect();
    terminate_backend(&conn);
    assert!(conn.batch_execute("SELECT 1").unwrap_err().is_closed());
    assert_eq!(conn.transaction_status(), TransactionStatus::Unknown);
    let e = conn.transaction().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}

#[test]
fn terminated_inside_a_transaction() {
    let mut conn = connect();
    {
        let mut tx = conn.transaction().unwrap();
        tx.execute("SELECT 1", &[]).unwrap();
        terminate_backend_of_transaction(&mut tx);
        let e = tx.query("SELECT 2", &[]).unwrap_err();
        assert!(e.is_closed(), "{e:?}");
        // Dropping the transaction on a closed connection must not panic or hang.
    }
    assert!(conn.is_closed());
    conn.reset().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        conn.query_one("SELECT 3::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

fn terminate_backend_of_transaction(tx: &mut pqlib::Transaction<'_>) {
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut killer = connect();
    let terminated: bool = killer
        .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
}

#[test]
fn reset_on_a_healthy_connection_starts_a_new_session() {
    let mut conn = connect();
    conn.batch_execute("SET application_name = 'before reset'")
        .unwrap();
    let pid = conn.backend_pid();
    conn.reset().unwrap();
    assert_ne!(conn.backend_pid(), pid);
    let name: String = conn.query_one("SHOW application_name", &[]).unwrap().get(0);
    assert_ne!(name, "before reset");
}

#[test]
fn error_debug_is_informative() {
    let mut conn = connect();
    let e = conn
        .batch_execute("SELECT * FROM pqlib_no_such_table")
        .unwrap_err();
    let debug = format!("{e:?}");
    assert!(debug.contains("Db"), "{debug}");
    assert!(debug.contains("42P01"), "{debug}");
    assert!(debug.contains("pqlib_no_such_table"), "{debug}");
    let e = conn.query("SELECT 1\0", &[]).unwrap_err();
    let debug = format!("{e:?}");
    assert!(debug.contains("BadInput"), "{debug}");
}
