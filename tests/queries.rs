//! Running statements: `batch_execute`, `execute`, `query`, `query_one`, `query_opt`,
//! `query_typed`, `prepare`/`prepare_typed`, the statement cache, and bad input that must be
//! refused before it reaches libpq (leaving the connection usable).

mod common;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::types::{ToSql, Type};
use pqlib::{Connection, MAX_PARAMETERS, STATEMENT_CACHE_CAPACITY, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

fn count_prepared(conn: &mut Connection) -> i64 {
    conn.query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .unwrap()
        .get(0)
}

/// The connection still answers queries correctly and is not in a transaction.
fn assert_usable(conn: &mut Connection) {
    let n: i32 = conn
        .query_one("SELECT $1::int4 + 1", &[&41i32])
        .expect("the connection is still usable")
        .get(0);
    assert_eq!(n, 42);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(!conn.is_closed());
}

#[test]
fn batch_execute_runs_several_statements() {
    let mut conn = connect();
    conn.batch_execute(
        "CREATE TEMP TABLE batch (id int4, name text);
         INSERT INTO batch VALUES (1, 'one'), (2, 'two');
         UPDATE batch SET name = upper(name) WHERE id = 2;
         INSERT INTO batch VALUES (3, 'three');",
    )
    .unwrap();
    let rows = conn
        .query("SELECT id, name FROM batch ORDER BY id", &[])
        .unwrap();
    let got: Vec<(i32, &str)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, "one"), (2, "TWO"), (3, "three")]);

    // Stops at the first error; as one implicit transaction, nothing of it is kept.
    let e = conn
        .batch_execute("INSERT INTO batch VALUES (4, 'four'); SELECT 1/0; INSERT INTO batch VALUES (5, 'five')")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let n: i64 = conn
        .query_one("SELECT count(*) FROM batch", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // Empty and comment-only batches are fine.
    conn.batch_execute("").unwrap();
    conn.batch_execute("-- nothing").unwrap();
    assert_usable(&mut conn);
}

#[test]
fn execute_returns_rows_affected() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE counts (id int4 PRIMARY KEY, v text)")
        .unwrap();
    let inserted = conn
        .execute(
            "INSERT INTO counts SELECT i, 'v' || i FROM generate_series(1, $1::int4) i",
            &[&10i32],
        )
        .unwrap();
    assert_eq!(inserted, 10);
    let updated = conn
        .execute("UPDATE counts SET v = 'even' WHERE id % 2 = 0", &[])
        .unwrap();
    assert_eq!(updated, 5);
    let deleted = conn
        .execute("DELETE FROM counts WHERE id > $1", &[&7i32])
        .unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(
        conn.execute("DELETE FROM counts WHERE false", &[]).unwrap(),
        0
    );
    // A SELECT reports the rows it returned; DDL reports none.
    assert_eq!(conn.execute("SELECT * FROM counts", &[]).unwrap(), 7);
    assert_eq!(
        conn.execute("CREATE TEMP TABLE counts2 (x int)", &[])
            .unwrap(),
        0
    );
}

#[test]
fn query_one_and_query_opt_check_the_row_count() {
    let mut conn = connect();
    let row = conn.query_one("SELECT 1::int4 AS one", &[]).unwrap();
    assert_eq!(row.get::<_, i32>("one"), 1);
    assert_eq!(row.len(), 1);

    let e = conn.query_one("SELECT 1 WHERE false", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RowCount);
    let e = conn
        .query_one("SELECT * FROM generate_series(1, 2)", &[])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RowCount);
    assert!(e.to_string().contains('2'), "{e}");

    assert!(
        conn.query_opt("SELECT 1 WHERE false", &[])
            .unwrap()
            .is_none()
    );
    let some = conn.query_opt("SELECT 'x'::text", &[]).unwrap().unwrap();
    assert_eq!(some.get::<_, &str>(0), "x");
    let e = conn
        .query_opt("SELECT * FROM generate_series(1, 2)", &[])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RowCount);
    assert_usable(&mut conn);
}

#[test]
fn query_returns_all_rows_in_order() {
    let mut conn = connect();
    let rows = conn
        .query(
            "SELECT i, i * i AS sq FROM generate_series($1::int4, $2::int4) i ORDER BY i",
            &[&3i32, &6i32],
        )
        .unwrap();
    let got: Vec<(i32, i32)> = rows.iter().map(|r| (r.get("i"), r.get("sq"))).collect();
    assert_eq!(got, [(3, 9), (4, 16), (5, 25), (6, 36)]);
    let empty = conn.query("SELECT 1 WHERE false", &[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.columns().len(), 1);
}

#[test]
fn query_typed_uses_the_given_types() {
    let mut conn = connect();
    let rows = conn
        .query_typed(
            "SELECT $1 + $2, pg_typeof($1)::text, $3 || '!'",
            &[
                (&1i64, Type::INT8),
                (&2i64, Type::INT8),
                (&"hi", Type::TEXT),
            ],
        )
        .unwrap();
    let row = rows.get(0).unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, &str>(1), "bigint");
    assert_eq!(row.get::<_, &str>(2), "hi!");
    assert_eq!(rows.columns()[0].type_(), &Type::INT8);

    // The Rust value must fit the declared type.
    let e = conn
        .query_typed("SELECT $1", &[(&1i32, Type::INT8)])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    // No parameters at all is fine, and nothing is prepared.
    let before = count_prepared(&mut conn);
    let rows = conn.query_typed("SELECT 'plain'::text", &[]).unwrap();
    assert_eq!(rows.get(0).unwrap().get::<_, &str>(0), "plain");
    assert_eq!(count_prepared(&mut conn), before);
}

#[test]
fn prepare_describes_params_and_columns() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE described (id int8, name text, data bytea)")
        .unwrap();
    let stmt = conn
        .prepare("SELECT id, name AS label, data, $1::int4 + 1 AS n FROM described WHERE name = $2")
        .unwrap();
    assert_eq!(stmt.params(), &[Type::INT4, Type::TEXT]);
    let columns: Vec<(&str, &Type)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", &Type::INT8),
            ("label", &Type::TEXT),
            ("data", &Type::BYTEA),
            ("n", &Type::INT4)
        ]
    );
    // Table columns know where they come from; expressions do not.
    assert!(stmt.columns()[0].table_oid().is_some());
    assert_eq!(stmt.columns()[0].column_id(), Some(1));
    assert_eq!(stmt.columns()[1].column_id(), Some(2));
    assert_eq!(stmt.columns()[3].table_oid(), None);
    assert_eq!(stmt.columns()[3].column_id(), None);

    let insert = conn
        .prepare("INSERT INTO described VALUES ($1, $2, $3)")
        .unwrap();
    assert_eq!(insert.params(), &[Type::INT8, Type::TEXT, Type::BYTEA]);
    assert!(insert.columns().is_empty());

    let typed = conn.prepare_typed("SELECT $1, $2", &[Type::INT2]).unwrap();
    assert_eq!(typed.params()[0], Type::INT2);
    assert_eq!(typed.params()[1], Type::TEXT); // inferred as unknown → text
}

#[test]
fn execute_with_statement_and_with_text() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE both_ways (id int4, v text)")
        .unwrap();
    let insert = conn
        .prepare("INSERT INTO both_ways VALUES ($1, $2)")
        .unwrap();
    for i in 0..5i32 {
        assert_eq!(conn.execute(&insert, &[&i, &format!("s{i}")]).unwrap(), 1);
    }
    let sql = String::from("INSERT INTO both_ways VALUES ($1, $2)");
    assert_eq!(conn.execute(&sql, &[&5i32, &"text"]).unwrap(), 1);
    assert_eq!(conn.execute(sql.as_str(), &[&6i32, &"str"]).unwrap(), 1);
    let select = conn
        .prepare("SELECT v FROM both_ways WHERE id = $1")
        .unwrap();
    let v: String = conn.query_one(&select, &[&3i32]).unwrap().get(0);
    assert_eq!(v, "s3");
    let v: Option<String> = conn.query_opt(&select, &[&6i32]).unwrap().map(|r| r.get(0));
    assert_eq!(v.as_deref(), Some("str"));
    assert_eq!(conn.query(&select, &[&99i32]).unwrap().len(), 0);
}

#[test]
fn same_sql_text_is_prepared_once() {
    let mut conn = connect();
    let before = count_prepared(&mut conn);
    let sql = "SELECT $1::int4 * 2 /* cache test */";
    let a: i32 = conn.query_one(sql, &[&2i32]).unwrap().get(0);
    let b: i32 = conn.query_one(sql, &[&5i32]).unwrap().get(0);
    conn.execute(sql, &[&1i32]).unwrap();
    assert_eq!((a, b), (4, 10));
    assert_eq!(count_prepared(&mut conn), before + 1);
    // A different text is a different statement.
    conn.query_one("SELECT $1::int4 * 3 /* cache test */", &[&1i32])
        .unwrap();
    assert_eq!(count_prepared(&mut conn), before + 2);
}

#[test]
fn dropped_statement_is_deallocated() {
    let mut conn = connect();
    let before = count_prepared(&mut conn);
    let stmt = conn.prepare("SELECT 'explicit'::text").unwrap();
    let clone = stmt.clone();
    assert_eq!(count_prepared(&mut conn), before + 1);
    drop(stmt);
    // A clone keeps it alive.
    assert_eq!(count_prepared(&mut conn), before + 1);
    assert_eq!(
        conn.query_one(&clone, &[]).unwrap().get::<_, &str>(0),
        "explicit"
    );
    drop(clone);
    assert_eq!(count_prepared(&mut conn), before);
}

#[test]
fn statement_cache_is_bounded() {
    let mut conn = connect();
    for i in 0..STATEMENT_CACHE_CAPACITY + 50 {
        let v: i32 = conn
            .query_one(&format!("SELECT {i}::int4"), &[])
            .unwrap()
            .get(0);
        assert_eq!(v, i as i32);
    }
    let n = count_prepared(&mut conn);
    assert!(
        n as usize <= STATEMENT_CACHE_CAPACITY + 1,
        "{n} statements prepared, cache capacity {STATEMENT_CACHE_CAPACITY}"
    );
    // Evicted text is prepared again on demand.
    let v: i32 = conn.query_one("SELECT 0::int4", &[]).unwrap().get(0);
    assert_eq!(v, 0);
}

#[test]
fn cached_select_star_sees_new_column_after_alter_table() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE altered (a int4); INSERT INTO altered VALUES (1)")
        .unwrap();
    let sql = "SELECT * FROM altered";
    let rows = conn.query(sql, &[]).unwrap();
    assert_eq!(rows.columns().len(), 1);
    conn.batch_execute("ALTER TABLE altered ADD COLUMN b text DEFAULT 'new'")
        .unwrap();
    let rows = conn.query(sql, &[]).unwrap();
    let names: Vec<&str> = rows.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["a", "b"]);
    let row = rows.get(0).unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, &str>("b")), (1, "new"));
    // And again after a column is dropped.
    conn.batch_execute("ALTER TABLE altered DROP COLUMN a")
        .unwrap();
    let rows = conn.query(sql, &[]).unwrap();
    assert_eq!(rows.columns().len(), 1);
    assert_eq!(rows.get(0).unwrap().get::<_, &str>("b"), "new");
}

#[test]
fn stale_cached_statement_inside_a_transaction_fails_then_recovers() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE stale_tx (a int4); INSERT INTO stale_tx VALUES (1)")
        .unwrap();
    let sql = "SELECT * FROM stale_tx";
    conn.query(sql, &[]).unwrap();
    {
        let mut tx = conn.transaction().unwrap();
        tx.batch_execute("ALTER TABLE stale_tx ADD COLUMN b int4")
            .unwrap();
        // Inside a transaction a retry could hide lost work: the error is reported.
        let e = tx.query(sql, &[]).unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    }
    // Rolled back: the table has one column again, and the stale entry was forgotten.
    let rows = conn.query(sql, &[]).unwrap();
    assert_eq!(rows.columns().len(), 1);
    assert_usable(&mut conn);
}

#[test]
fn parameter_count_mismatch_is_bad_input() {
    let mut conn = connect();
    let e = conn
        .query("SELECT $1::int4, $2::int4", &[&1i32])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(
        e.to_string().contains('2') && e.to_string().contains('1'),
        "{e}"
    );
    let e = conn.execute("SELECT 1", &[&1i32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let stmt = conn.prepare("SELECT $1::text").unwrap();
    let e = conn.query_one(&stmt, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_usable(&mut conn);
}

#[test]
fn parameter_of_the_wrong_type_is_a_conversion_error() {
    let mut conn = connect();
    let e = conn.query("SELECT $1::int4", &[&"text"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(e.to_string().contains("$1"), "{e}");
    let e = conn
        .query("SELECT $1::int4, $2::int8", &[&1i32, &1i32])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(e.to_string().contains("$2"), "{e}");
    assert_usable(&mut conn);
}

#[test]
fn statement_from_another_connection_is_bad_input() {
    let mut a = connect();
    let mut b = connect();
    let stmt = a.prepare("SELECT 1::int4").unwrap();
    let e = b.query(&stmt, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = b.execute(&stmt, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_eq!(a.query_one(&stmt, &[]).unwrap().get::<_, i32>(0), 1);
    assert_usable(&mut b);

    // After a reset the server forgot it: it is refused the same way, not sent.
    a.reset().unwrap();
    let e = a.query(&stmt, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_usable(&mut a);
}

#[test]
fn too_many_parameters_is_bad_input() {
    let mut conn = connect();
    let values = vec![0i32; MAX_PARAMETERS + 1];
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = values
        .iter()
        .map(|v| (v as &(dyn ToSql + Sync), Type::INT4))
        .collect();
    let e = conn.query_typed("SELECT 1", &typed).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let e = conn.query("SELECT $1::int4", &params).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let types = vec![Type::INT4; MAX_PARAMETERS + 1];
    let e = conn.prepare_typed("SELECT $1", &types).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_usable(&mut conn);

    // The most the protocol allows does work.
    let last = MAX_PARAMETERS as i32;
    let values: Vec<i32> = (1..=last).collect();
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = values
        .iter()
        .map(|v| (v as &(dyn ToSql + Sync), Type::INT4))
        .collect();
    let rows = conn
        .query_typed(&format!("SELECT ${last} + $1"), &typed)
        .unwrap();
    assert_eq!(rows.get(0).unwrap().get::<_, i32>(0), last + 1);
}

#[test]
fn interior_nul_in_sql_is_bad_input() {
    let mut conn = connect();
    for e in [
        conn.batch_execute("SELECT 1;\0 DROP TABLE x").unwrap_err(),
        conn.query("SELECT 1\0", &[]).unwrap_err(),
        conn.execute("SELECT\0 1", &[]).unwrap_err(),
        conn.query_typed("SELECT 1\0", &[]).unwrap_err(),
        conn.prepare("SELECT 1\0").unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        assert!(e.to_string().contains("NUL"), "{e}");
    }
    assert_usable(&mut conn);
}

#[test]
fn copy_through_plain_query_methods_is_refused() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE copied (x int4)")
        .unwrap();
    let e = conn.batch_execute("COPY copied FROM STDIN").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert_usable(&mut conn);
    let e = conn.batch_execute("COPY (SELECT 1) TO STDOUT").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert_usable(&mut conn);
    let e = conn.query("COPY copied FROM STDIN", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert_usable(&mut conn);
    let e = conn
        .query("COPY (SELECT generate_series(1, 1000)) TO STDOUT", &[])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert_usable(&mut conn);
    // Nothing was copied in.
    let n: i64 = conn
        .query_one("SELECT count(*) FROM copied", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Inside a transaction the aborted COPY IN fails the transaction but keeps the session.
    let mut tx = conn.transaction().unwrap();
    let e = tx.batch_execute("COPY copied FROM STDIN").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    drop(tx);
    assert_usable(&mut conn);
}

#[test]
fn server_errors_leave_the_connection_usable() {
    let mut conn = connect();
    let e = conn
        .query("SELECT * FROM no_such_table_pqlib", &[])
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    assert_eq!(e.kind(), ErrorKind::Db);
    let e = conn.execute("SELECT 1/$1::int4", &[&0i32]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    // Failed to prepare: not cached, so a fixed table makes the same text work.
    conn.batch_execute("CREATE TEMP TABLE no_such_table_pqlib (x int4)")
        .unwrap();
    assert!(
        conn.query("SELECT * FROM no_such_table_pqlib", &[])
            .unwrap()
            .is_empty()
    );
    assert_usable(&mut conn);
}

/// Regression: a statement dropped while the transaction is failed was never deallocated
/// (`before_query` sent `DEALLOCATE`, the server refused it, "current transaction is
/// aborted", and the name was discarded with the error).
#[test]
fn statement_dropped_in_failed_transaction_is_deallocated_later() {
    let mut conn = connect();
    assert_usable(&mut conn); // its statement is cached before counting
    let before = count_prepared(&mut conn);
    let stmt = conn.prepare("SELECT 'doomed'::text").unwrap();
    assert_eq!(count_prepared(&mut conn), before + 1);
    {
        let mut tx = conn.transaction().unwrap();
        let e = tx.batch_execute("SELECT 1/0").unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
        drop(stmt);
        // The next statement (the ROLLBACK) is where the DEALLOCATE is attempted.
        tx.rollback().unwrap();
    }
    assert_usable(&mut conn);
    assert_eq!(
        count_prepared(&mut conn),
        before,
        "the statement is still prepared"
    );
}

/// Regression: after `DEALLOCATE ALL` / `DISCARD ALL` (what connection poolers run) the
/// statement cache still mapped the SQL text to the vanished statement, so that text failed
/// with "prepared statement does not exist" (26000) on every call until it was evicted.
#[test]
fn cached_statement_recovers_after_deallocate_all() {
    let mut conn = connect();
    for reset in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let sql = format!("SELECT 'after {reset}'::text");
        conn.query(&sql, &[]).unwrap();
        conn.batch_execute(reset).unwrap();
        // The first call may report the missing statement; the next one must work.
        if let Err(e) = conn.query(&sql, &[]) {
            assert_eq!(e.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{e}");
        }
        let again = conn.query(&sql, &[]);
        assert!(again.is_ok(), "{reset}: {:?}", again.err());
    }
}

#[test]
fn empty_statements() {
    let mut conn = connect();
    for sql in ["", ";", "-- only a comment"] {
        let rows = conn.query(sql, &[]).unwrap();
        assert!(rows.is_empty() && rows.columns().is_empty());
        assert_eq!(rows.rows_affected(), 0);
    }
    assert_usable(&mut conn);
}

#[test]
fn statement_outliving_its_connection_is_harmless() {
    let mut conn = connect();
    let stmt = conn.prepare("SELECT 1::int4").unwrap();
    let clone = stmt.clone();
    drop(conn);
    assert_eq!(stmt.sql(), "SELECT 1::int4");
    assert_eq!(clone.columns().len(), 1);
    drop(stmt);
    drop(clone);
    // And one prepared before a reset is simply forgotten with the old session.
    let mut conn = connect();
    let stmt = conn.prepare("SELECT 2::int4").unwrap();
    conn.reset().unwrap();
    drop(stmt);
    let before = count_prepared(&mut conn);
    assert_eq!(before, 1, "only the count query itself is prepared");
    assert_usable(&mut conn);
}
