//! Transactions: commit, rollback, rollback on drop, savepoints, options, and the states a
//! failed statement or a SQL-level `BEGIN` leave behind.

mod common;

use pqlib::error::{ErrorKind, SqlState};
use pqlib::{Connection, IsolationLevel, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// A fresh table `name` (a real one, so other connections can see what was committed).
fn fresh_table(conn: &mut Connection, name: &str) {
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (x int4)"
    ))
    .unwrap();
}

fn values(conn: &mut Connection, table: &str) -> Vec<i32> {
    conn.query(&format!("SELECT x FROM {table} ORDER BY x"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn commit_persists_and_is_visible_elsewhere() {
    let mut conn = connect();
    let mut other = connect();
    fresh_table(&mut conn, "pqlib_tx_commit");
    let mut tx = conn.transaction().unwrap();
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.execute(
        "INSERT INTO pqlib_tx_commit VALUES ($1), ($2)",
        &[&1i32, &2i32],
    )
    .unwrap();
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM pqlib_tx_commit", &[])
        .unwrap()
        .get(0);
    assert_eq!(inside, 2);
    // Not visible to another session before the commit.
    assert!(values(&mut other, "pqlib_tx_commit").is_empty());
    tx.commit().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert_eq!(values(&mut other, "pqlib_tx_commit"), [1, 2]);
    conn.batch_execute("DROP TABLE pqlib_tx_commit").unwrap();
}

#[test]
fn rollback_and_drop_discard() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE discarded (x int4)")
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO discarded VALUES (1)", &[]).unwrap();
    tx.rollback().unwrap();
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(values(&mut conn, "discarded").is_empty());

    {
        let mut tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO discarded VALUES (2)", &[]).unwrap();
        // Dropped without commit.
    }
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(values(&mut conn, "discarded").is_empty());

    // DDL is transactional too.
    {
        let mut tx = conn.transaction().unwrap();
        tx.batch_execute("CREATE TEMP TABLE never_created (x int4)")
            .unwrap();
    }
    let e = conn.query("SELECT * FROM never_created", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
}

#[test]
fn drop_during_a_panic_rolls_back() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE panicked (x int4)")
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO panicked VALUES (1)", &[]).unwrap();
        panic!("bail out");
    }));
    assert!(result.is_err());
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(values(&mut conn, "panicked").is_empty());
}

#[test]
fn nested_transaction_is_a_savepoint() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE nested (x int4)")
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO nested VALUES (1)", &[]).unwrap();
    {
        let mut sp = tx.transaction().unwrap();
        sp.execute("INSERT INTO nested VALUES (2)", &[]).unwrap();
        sp.rollback().unwrap();
    }
    {
        let mut sp = tx.transaction().unwrap();
        sp.execute("INSERT INTO nested VALUES (3)", &[]).unwrap();
        // Dropped: rolled back to the savepoint.
    }
    {
        let mut sp = tx.transaction().unwrap();
        sp.execute("INSERT INTO nested VALUES (4)", &[]).unwrap();
        {
            let mut deeper = sp.transaction().unwrap();
            deeper
                .execute("INSERT INTO nested VALUES (5)", &[])
                .unwrap();
            deeper.commit().unwrap();
        }
        {
            let mut deeper = sp.transaction().unwrap();
            deeper
                .execute("INSERT INTO nested VALUES (6)", &[])
                .unwrap();
        }
        sp.commit().unwrap();
    }
    // Still inside the outer transaction.
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.commit().unwrap();
    assert_eq!(values(&mut conn, "nested"), [1, 4, 5]);
}

#[test]
fn savepoint_recovers_from_a_failed_statement() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE recovered (x int4 PRIMARY KEY)")
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO recovered VALUES (1)", &[]).unwrap();
    {
        let mut sp = tx.transaction().unwrap();
        let e = sp
            .execute("INSERT INTO recovered VALUES (1)", &[])
            .unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
        assert_eq!(sp.transaction_status(), TransactionStatus::InError);
        // Dropped: back to the savepoint, the outer transaction is good again.
    }
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.execute("INSERT INTO recovered VALUES (2)", &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(values(&mut conn, "recovered"), [1, 2]);
}

#[test]
fn serializable_read_only() {
    let mut conn = connect();
    let mut tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .read_only(true)
        .start()
        .unwrap();
    let level: String = tx
        .query_one("SHOW transaction_isolation", &[])
        .unwrap()
        .get(0);
    assert_eq!(level, "serializable");
    let ro: String = tx
        .query_one("SHOW transaction_read_only", &[])
        .unwrap()
        .get(0);
    assert_eq!(ro, "on");
    let e = tx
        .batch_execute("CREATE TABLE pqlib_tx_read_only (x int4)")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    drop(tx);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    // The options were for that transaction only.
    let level: String = conn
        .query_one("SHOW transaction_isolation", &[])
        .unwrap()
        .get(0);
    assert_eq!(level, "read committed");
}

#[test]
fn every_builder_option() {
    let mut conn = connect();
    for (level, name) in [
        (IsolationLevel::ReadUncommitted, "read uncommitted"),
        (IsolationLevel::ReadCommitted, "read committed"),
        (IsolationLevel::RepeatableRead, "repeatable read"),
        (IsolationLevel::Serializable, "serializable"),
    ] {
        let mut tx = conn
            .build_transaction()
            .isolation_level(level)
            .read_only(false)
            .deferrable(false)
            .start()
            .unwrap();
        let shown: String = tx
            .query_one("SHOW transaction_isolation", &[])
            .unwrap()
            .get(0);
        assert_eq!(shown, name);
        let deferrable: String = tx
            .query_one("SHOW transaction_deferrable", &[])
            .unwrap()
            .get(0);
        assert_eq!(deferrable, "off");
        tx.commit().unwrap();
    }
    let mut tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .read_only(true)
        .deferrable(true)
        .start()
        .unwrap();
    let deferrable: String = tx
        .query_one("SHOW transaction_deferrable", &[])
        .unwrap()
        .get(0);
    assert_eq!(deferrable, "on");
    tx.rollback().unwrap();
    // No options at all is a plain BEGIN.
    let tx = conn.build_transaction().start().unwrap();
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
}

#[test]
fn commit_after_a_failed_statement_is_an_error() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE failed_commit (x int4)")
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO failed_commit VALUES (1)", &[])
        .unwrap();
    let e = tx.execute("SELECT 1/0", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    let e = tx.commit().unwrap_err();
    assert!(e.to_string().to_lowercase().contains("roll"), "{e}");
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(values(&mut conn, "failed_commit").is_empty());
    // And the connection goes on.
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO failed_commit VALUES (2)", &[])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(values(&mut conn, "failed_commit"), [2]);
}

#[test]
fn commit_failing_on_a_deferred_constraint() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE deferred (x int4 UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        .unwrap();
    let mut tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO deferred VALUES (1), (1)", &[])
        .unwrap();
    let e = tx.commit().unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
    assert!(values(&mut conn, "deferred").is_empty());
}

#[test]
fn transaction_while_sql_begin_is_open_is_bad_input() {
    let mut conn = connect();
    conn.batch_execute("BEGIN").unwrap();
    let e = conn.transaction().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = conn
        .build_transaction()
        .read_only(true)
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    // The SQL-level transaction is untouched.
    assert_eq!(conn.transaction_status(), TransactionStatus::InTransaction);
    conn.batch_execute("COMMIT").unwrap();
    let tx = conn.transaction().unwrap();
    tx.commit().unwrap();
}

#[test]
fn statements_prepared_inside_a_transaction() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE prepared_in_tx (x int4)")
        .unwrap();
    let insert = {
        let mut tx = conn.transaction().unwrap();
        let insert = tx
            .prepare("INSERT INTO prepared_in_tx VALUES ($1)")
            .unwrap();
        tx.execute(&insert, &[&1i32]).unwrap();
        let typed = tx
            .prepare_typed("SELECT $1", &[pqlib::types::Type::INT8])
            .unwrap();
        let v: i64 = tx.query_one(&typed, &[&5i64]).unwrap().get(0);
        assert_eq!(v, 5);
        let rows = tx
            .query_typed("SELECT count(*) FROM prepared_in_tx", &[])
            .unwrap();
        assert_eq!(rows.get(0).unwrap().get::<_, i64>(0), 1);
        assert!(tx.query_opt("SELECT 1 WHERE false", &[]).unwrap().is_none());
        tx.commit().unwrap();
        insert
    };
    // Prepared statements are not transactional: still usable afterwards.
    conn.execute(&insert, &[&2i32]).unwrap();
    assert_eq!(values(&mut conn, "prepared_in_tx"), [1, 2]);
}

#[test]
fn debug_shows_depth_and_status() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let debug = format!("{tx:?}");
    assert!(debug.contains("depth: 0"), "{debug}");
    assert!(debug.contains("InTransaction"), "{debug}");
    let sp = tx.transaction().unwrap();
    assert!(format!("{sp:?}").contains("depth: 1"));
}
