//! What else pqlib does on its own, checked behind PgBouncer in transaction mode with
//! `PreparePolicy::Never` (docs/poolers.md has the table): custom types looked up by OID,
//! `client_encoding`, cancel, and named statements in session mode. What cannot work there
//! (`LISTEN`, session `SET`) is session state PgBouncer does not carry between server
//! connections; docs/poolers.md says so rather than a test that could only be flaky.

#![cfg(unix)]

mod common;

use std::thread;

use pqlib::error::SqlState;
use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
use pqlib::types::{FromSql, ToSql};
use pqlib::{Config, Connection, PreparePolicy};

struct Setup {
    // Field order: the bouncer stops before the cluster.
    bouncer: TempPgBouncer,
    cluster: TempCluster,
}

fn start(mode: PoolMode, pool_size: u32) -> Setup {
    let cluster = TempCluster::start().expect("a throwaway server");
    let mut direct = Connection::connect(&cluster.conninfo()).expect("direct connection");
    direct
        .batch_execute(
            "CREATE TYPE pooler_mood AS ENUM ('happy', 'sad');
             CREATE TYPE pooler_pair AS (name text, n int4)",
        )
        .expect("types");
    let bouncer = TempPgBouncer::builder(&cluster)
        .pool_mode(mode)
        .pool_size(pool_size)
        .start()
        .expect("a throwaway PgBouncer");
    Setup { bouncer, cluster }
}

fn never(conninfo: &str) -> Config {
    common::config_with(conninfo, PreparePolicy::Never)
}

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(name = "pooler_mood")]
enum Mood {
    #[postgres(name = "happy")]
    Happy,
    #[postgres(name = "sad")]
    Sad,
}

#[derive(Debug, Clone, PartialEq, ToSql, FromSql)]
#[postgres(name = "pooler_pair")]
struct Pair {
    name: String,
    n: i32,
}

/// Enums and composites are looked up in the catalog by OID, which is the same on every
/// server connection of the pool: both clients decode and encode them.
#[test]
fn custom_types_work_behind_transaction_pooling() {
    let setup = start(PoolMode::Transaction, 2);
    let config = never(&setup.bouncer.conninfo());
    let mut conn = config.connect().unwrap();
    for _ in 0..4 {
        let row = conn
            .query_one(
                "SELECT $1::pooler_mood, ROW('a', 1)::pooler_pair",
                &[&Mood::Sad],
            )
            .unwrap();
        assert_eq!(row.get::<_, Mood>(0), Mood::Sad);
        assert_eq!(
            row.get::<_, Pair>(1),
            Pair {
                name: "a".into(),
                n: 1
            }
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _deadline = common::deadline(common::TEST_DEADLINE);
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        tokio::spawn(connection);
        let pair = Pair {
            name: "b".into(),
            n: 2,
        };
        let row = client
            .query_one("SELECT $1::pooler_pair, 'happy'::pooler_mood", &[&pair])
            .await
            .unwrap();
        assert_eq!(row.get::<_, Pair>(0), pair);
        assert_eq!(row.get::<_, Mood>(1), Mood::Happy);
    });
}

/// pqlib asks for UTF8 at startup; PgBouncer keeps `client_encoding` per client and sets it
/// on whichever server connection runs the client's statement.
#[test]
fn client_encoding_stays_utf8_behind_the_pooler() {
    let setup = start(PoolMode::Transaction, 2);
    let mut conns: Vec<Connection> = (0..4)
        .map(|_| never(&setup.bouncer.conninfo()).connect().unwrap())
        .collect();
    for round in 0..3 {
        for conn in &mut conns {
            let row = conn
                .query_one(
                    "SELECT current_setting('client_encoding'), $1::text || chr(233)",
                    &[&"caf"],
                )
                .unwrap();
            assert_eq!(row.get::<_, &str>(0), "UTF8", "round {round}");
            assert_eq!(row.get::<_, &str>(1), "café");
        }
    }
}

/// A cancel request goes to PgBouncer with the key PgBouncer gave the client; PgBouncer
/// forwards it to the server connection running the client's statement.
#[test]
fn cancel_reaches_the_statement_through_pgbouncer() {
    let setup = start(PoolMode::Transaction, 2);
    let mut conn = never(&setup.bouncer.conninfo()).connect().unwrap();
    let token = conn.cancel_token();
    let runner = thread::spawn(move || {
        let result = conn.query("SELECT pg_sleep(30), $1::text", &[&"cancel me"]);
        (conn, result)
    });
    let mut observer = Connection::connect(&setup.cluster.conninfo()).unwrap();
    common::wait_until_running(&mut observer, "SELECT pg_sleep(30)");
    token.cancel_query().unwrap();
    let (mut conn, result) = runner.join().unwrap();
    let error = result.expect_err("the statement was cancelled");
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    let n: i32 = conn.query_one("SELECT $1::int4", &[&9i32]).unwrap().get(0);
    assert_eq!(n, 9);
}

/// In session mode a client keeps its server connection: the default policy's named
/// statements work, as without a pooler.
#[test]
fn session_mode_keeps_named_statements_working() {
    let setup = start(PoolMode::Session, 8);
    let conninfo = setup.bouncer.conninfo();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let conninfo = conninfo.clone();
            thread::spawn(move || {
                let mut conn = Connection::connect(&conninfo).unwrap();
                for i in 0..50i64 {
                    let sql = format!("SELECT $1::int8 + {}", i % 5);
                    let got: i64 = conn.query_one(&sql as &str, &[&t]).unwrap().get(0);
                    assert_eq!(got, t + i % 5);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// A portal lives in its transaction, which PgBouncer keeps on one server connection; a row
/// stream is one statement. Both work with the unnamed statement behind transaction pooling.
#[test]
fn portals_and_row_streams_work_behind_transaction_pooling() {
    let setup = start(PoolMode::Transaction, 2);
    let mut conns: Vec<Connection> = (0..4)
        .map(|_| never(&setup.bouncer.conninfo()).connect().unwrap())
        .collect();
    for round in 0..3 {
        for (c, conn) in conns.iter_mut().enumerate() {
            let rows = 10 + c as i32 + round;
            {
                let mut tx = conn.transaction().unwrap();
                let portal = tx
                    .bind("SELECT g FROM generate_series(1, $1) g", &[&rows])
                    .unwrap();
                let first = tx.query_portal(&portal, 4).unwrap();
                assert_eq!(first.len(), 4);
                let rest = tx.query_portal(&portal, 0).unwrap();
                assert_eq!(rest.len() as i32, rows - 4);
                drop(portal);
                tx.commit().unwrap();
            }
            let mut stream = conn
                .query_raw("SELECT g FROM generate_series(1, $1) g", [&rows])
                .unwrap();
            let mut sum = 0;
            while let Some(row) = stream.next_row() {
                sum += row.unwrap().get::<_, i32>(0);
            }
            assert_eq!(sum, rows * (rows + 1) / 2);
        }
    }
}
