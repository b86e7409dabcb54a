//! What users can meet on the server versions pqlib supports (14 to 18), where pqlib has
//! something to get right: each test starts a server of one major version and checks, with
//! the blocking `Connection` and the async `Client`, that
//! - the version pqlib reports is that server's;
//! - `MERGE … RETURNING` (17+) returns its rows through `query`, and before 17 fails with a
//!   clear syntax error (SQLSTATE 42601) that leaves the connection usable;
//! - a multirange value (14+) comes through as text (`simple_query`), as raw binary bytes,
//!   and as a clear `Conversion` error, never a panic, when read or sent as a `String`;
//! - `search_path` is reported through ParameterStatus from 18 on, and not before;
//! - a server error's fields (SQLSTATE, detail, constraint, table) arrive intact;
//! - with libpq 17+, a statement dropped inside a failed transaction is closed at once (the
//!   server's Close message handling has no failed-transaction check, in every version).
//!
//! Versions come from `scripts/postgres-versions.sh` (and the system's server); a version not
//! installed is reported as skipped, which fails under `PQLIB_TEST_NO_SKIP`.

mod common;

use pqlib::SimpleQueryMessage;
use pqlib::error::{ErrorKind, SqlState};
use pqlib::tempdb::TempCluster;

/// `'{[1,3),[5,7)}'::int4multirange` in the binary format: a count, then each range with its
/// length (flags 0x02: inclusive lower bound; each bound a length and an int4).
const MULTIRANGE_BINARY: [u8; 46] = [
    0, 0, 0, 2, //
    0, 0, 0, 17, 2, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 3, //
    0, 0, 0, 17, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 7,
];
const MULTIRANGE_TEXT: &str = "{[1,3),[5,7)}";

fn start(major: u32) -> Option<TempCluster> {
    let dir = common::server_of(major)?;
    let cluster = TempCluster::builder()
        .bin_dir(&dir)
        .start()
        .unwrap_or_else(|e| {
            panic!(
                "a PostgreSQL {major} TempCluster from {}: {e}",
                dir.display()
            )
        });
    Some(cluster)
}

/// The text values of the rows among `messages`, first column.
fn texts(messages: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}

const MERGE_SETUP: &str = "CREATE TEMP TABLE merge_target (id int4 PRIMARY KEY, n int4);
     INSERT INTO merge_target VALUES (1, 10)";
const MERGE_RETURNING: &str = "MERGE INTO merge_target t
     USING (VALUES (1, 11), (2, 20)) AS s(id, n) ON t.id = s.id
     WHEN MATCHED THEN UPDATE SET n = s.n
     WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.n)
     RETURNING merge_action(), t.id, t.n";

const ERROR_SETUP: &str =
    "CREATE TEMP TABLE fields_target (id int4 CONSTRAINT fields_pk PRIMARY KEY);
     INSERT INTO fields_target VALUES (1)";

/// What one server version did, printed for the docs' table.
#[derive(Debug, Default)]
struct Seen {
    server_version: u32,
    merge_returning: String,
    multirange: String,
    search_path_status: String,
    /// Whether a statement dropped in a failed transaction was gone in the request that
    /// rolled back, by client.
    failed_txn_close: String,
}

/// The checks of a MERGE … RETURNING answer, for either client.
fn check_merge(major: u32, answer: pqlib::Result<pqlib::Rows>) -> String {
    if major >= 17 {
        let rows = answer.unwrap_or_else(|e| panic!("MERGE … RETURNING on {major}: {e}"));
        let mut got: Vec<(String, i32, i32)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("INSERT".to_owned(), 2, 20), ("UPDATE".to_owned(), 1, 11)]
        );
        assert_eq!(rows.rows_affected(), 2);
        "rows returned".to_owned()
    } else {
        let err = answer
            .err()
            .unwrap_or_else(|| panic!("MERGE … RETURNING succeeded on {major}"));
        assert_eq!(err.kind(), ErrorKind::Db, "{err}");
        assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR), "{err}");
        format!("42601: {}", err.as_db_error().unwrap().message())
    }
}

/// The checks of a multirange column read through `query`, for either client.
fn check_multirange(rows: &pqlib::Rows) -> String {
    assert_eq!(rows.columns()[0].type_().name(), "int4multirange");
    let row = rows.get(0).unwrap();
    assert_eq!(row.raw(0).unwrap(), Some(&MULTIRANGE_BINARY[..]));
    let err = row.try_get::<_, String>(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conversion, "{err}");
    format!("type int4multirange, raw bytes; get::<String>: {err}")
}

async fn check_version(major: u32) {
    let Some(cluster) = start(major) else {
        return;
    };
    let mut seen = Seen::default();

    // --- The blocking Connection.
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    seen.server_version = conn.server_version();
    assert_eq!(conn.server_version() / 10000, major);
    let reported = conn.parameter_status("server_version").unwrap();
    assert!(reported.starts_with(&format!("{major}.")), "{reported}");

    conn.batch_execute(MERGE_SETUP).unwrap();
    seen.merge_returning = check_merge(major, conn.query(MERGE_RETURNING, &[]));
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);

    let sql = format!("SELECT '{MULTIRANGE_TEXT}'::int4multirange");
    assert_eq!(
        texts(&conn.simple_query(&sql).unwrap()),
        [Some(MULTIRANGE_TEXT.to_owned())]
    );
    seen.multirange = check_multirange(&conn.query(sql.as_str(), &[]).unwrap());
    let err = conn
        .query("SELECT $1::int4multirange", &[&MULTIRANGE_TEXT])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conversion, "{err}");
    let text: String = conn
        .query_one("SELECT $1::text::int4multirange::text", &[&MULTIRANGE_TEXT])
        .unwrap()
        .get(0);
    assert_eq!(text, MULTIRANGE_TEXT);

    let before = conn.parameter_status("search_path");
    conn.batch_execute("SET search_path TO pg_temp, public")
        .unwrap();
    let after = conn.parameter_status("search_path");
    if major >= 18 {
        assert!(before.is_some(), "no search_path reported at startup");
        assert_eq!(after.as_deref(), Some("pg_temp, public"));
    } else {
        assert_eq!((&before, &after), (&None, &None));
    }
    seen.search_path_status = format!("startup {before:?}, after SET {after:?}");

    conn.batch_execute(ERROR_SETUP).unwrap();
    let err = conn
        .execute("INSERT INTO fields_target VALUES (1)", &[])
        .unwrap_err();
    check_unique_violation(&err);
    assert_eq!(conn.query_one("SELECT 2", &[]).unwrap().get::<_, i32>(0), 2);

    let closed_blocking = dropped_in_failed_transaction(&mut conn);
    assert_eq!(
        closed_blocking,
        closes_at_once(),
        "blocking, server {major}"
    );

    // --- The async Client, on the same server.
    let client = common::connect_async_to(&cluster.conninfo()).await;
    let num = texts(
        &client
            .simple_query("SHOW server_version_num")
            .await
            .unwrap(),
    );
    assert_eq!(num, [Some(seen.server_version.to_string())]);

    client.batch_execute(MERGE_SETUP).await.unwrap();
    check_merge(major, client.query(MERGE_RETURNING, &[]).await);
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    assert_eq!(
        texts(&client.simple_query(&sql).await.unwrap()),
        [Some(MULTIRANGE_TEXT.to_owned())]
    );
    check_multirange(&client.query(sql.as_str(), &[]).await.unwrap());
    let err = client
        .query("SELECT $1::int4multirange", &[&MULTIRANGE_TEXT])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conversion, "{err}");

    client.batch_execute(ERROR_SETUP).await.unwrap();
    let err = client
        .execute("INSERT INTO fields_target VALUES (1)", &[])
        .await
        .unwrap_err();
    check_unique_violation(&err);
    let row = client.query_one("SELECT 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);

    let (closed_async, gone_async) = dropped_in_failed_transaction_async(&client).await;
    assert_eq!(closed_async, closes_at_once(), "async, server {major}");
    assert!(
        gone_async,
        "async, server {major}: still prepared after the rollback"
    );
    seen.failed_txn_close = format!(
        "blocking: at once {closed_blocking}, gone after; async: at once {closed_async}, gone \
         after {gone_async}"
    );

    eprintln!("server {major}: {seen:?}");
}

/// Whether the linked libpq closes a dropped statement inside a failed transaction at once
/// (17+: the protocol's Close); before 17 `DEALLOCATE` has to wait for the rollback.
fn closes_at_once() -> bool {
    pqlib::version().major >= 17
}

const FAILED_TXN_SQL: &str = "SELECT 1 AS dropped_in_failed_txn";

/// Counts the session's statements of text `FAILED_TXN_SQL`.
fn count_sql() -> String {
    format!("SELECT count(*) FROM pg_prepared_statements WHERE statement = '{FAILED_TXN_SQL}'")
}

/// The request that rolls back, and counts the statement in the same round trip.
fn rollback_and_count() -> String {
    format!("ROLLBACK; {}", count_sql())
}

/// Drops a statement in a failed transaction: whether it was already gone in the request
/// that rolled back.
fn dropped_in_failed_transaction(conn: &mut pqlib::Connection) -> bool {
    let stmt = conn.prepare(FAILED_TXN_SQL).unwrap();
    conn.batch_execute("BEGIN").unwrap();
    let err = conn.execute("SELECT 1/0", &[]).unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    drop(stmt);
    let left = texts(&conn.simple_query(&rollback_and_count()).unwrap());
    // Gone by the next request in any case.
    let after = texts(&conn.simple_query(&count_sql()).unwrap());
    assert_eq!(after, [Some("0".to_owned())]);
    left == [Some("0".to_owned())]
}

/// As [`dropped_in_failed_transaction`], and whether the statement is gone after the rollback
/// (before libpq 17 the async client's `DEALLOCATE` is refused in the failed transaction and
/// goes out again with the next request).
async fn dropped_in_failed_transaction_async(client: &pqlib::tokio::Client) -> (bool, bool) {
    let stmt = client.prepare(FAILED_TXN_SQL).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    drop(stmt);
    let left = texts(&client.simple_query(&rollback_and_count()).await.unwrap());
    let after = texts(&client.simple_query(&count_sql()).await.unwrap());
    (
        left == [Some("0".to_owned())],
        after == [Some("0".to_owned())],
    )
}

fn check_unique_violation(err: &pqlib::Error) {
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.detail(), Some("Key (id)=(1) already exists."));
    assert_eq!(db.constraint(), Some("fields_pk"));
    assert_eq!(db.table(), Some("fields_target"));
    assert!(
        db.schema().is_some_and(|s| s.starts_with("pg_temp")),
        "{db:?}"
    );
}

macro_rules! server_test {
    ($name:ident, $major:expr) => {
        #[tokio::test]
        async fn $name() {
            let _deadline = common::deadline(common::TEST_DEADLINE);
            check_version($major).await;
        }
    };
}

server_test!(server_14, 14);
server_test!(server_15, 15);
server_test!(server_16, 16);
server_test!(server_17, 17);
server_test!(server_18, 18);
