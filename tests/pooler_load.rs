//! Behind a real PgBouncer in transaction mode with `PreparePolicy::Never`: a mixed load from
//! blocking threads, async clients and a deadpool pool at once, every answer checked; and bad
//! input, a killed server connection and a restarted PgBouncer, each giving a clear error and
//! leaving the client usable or cleanly closed.
//!
//! The harness is `pqlib::tempdb::TempPgBouncer` (tests/pooler.rs tests the harness itself and
//! the simpler loads).

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pqlib::error::ErrorKind;
use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
use pqlib::{Config, Connection, PreparePolicy};

/// How long each client of the mixed load keeps going.
const LOAD_TIME: Duration = Duration::from_secs(8);
/// Server connections PgBouncer may open: far fewer than clients.
const SERVER_POOL: u32 = 4;
/// Distinct SQL texts the load cycles through (each one described once per connection).
const TEXTS: u64 = 40;

struct Setup {
    // Field order: the bouncer stops before the cluster.
    bouncer: TempPgBouncer,
    cluster: TempCluster,
}

fn start(mode: PoolMode) -> Setup {
    let cluster = TempCluster::builder()
        .config("max_connections = 50")
        .start()
        .expect("a throwaway server");
    let mut direct = Connection::connect(&cluster.conninfo()).expect("direct connection");
    direct
        .batch_execute(
            "CREATE TABLE load_t (client text, n int8, note text);
             CREATE TABLE copy_t (client text, n int8)",
        )
        .expect("tables");
    let bouncer = TempPgBouncer::builder(&cluster)
        .pool_mode(mode)
        .pool_size(SERVER_POOL)
        .max_client_conn(300)
        .start()
        .expect("a throwaway PgBouncer");
    Setup { bouncer, cluster }
}

fn never(conninfo: &str) -> Config {
    common::config_with(conninfo, PreparePolicy::Never)
}

/// One of [`TEXTS`] texts for step `n`: the same query, told apart by an alias.
fn text(n: u64) -> String {
    format!(
        "SELECT $1::int8 * 2 AS doubled_{}, $2::text || '!' AS shout",
        n % TEXTS
    )
}

fn blocking_client(config: &Config, who: &str, deadline: Instant) -> Result<u64, String> {
    let mut conn = config
        .connect()
        .map_err(|e| format!("{who} connect: {e}"))?;
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let tag = format!("{who}-{n}");
        let step = |e: pqlib::Error| format!("{who} step {n} ({}): {e}", n % 6);
        match n % 6 {
            0 => {
                let row = conn
                    .query_one(&text(n) as &str, &[&(n as i64), &tag])
                    .map_err(step)?;
                let (doubled, shout): (i64, String) = (row.get(0), row.get(1));
                if doubled != 2 * n as i64 || shout != format!("{tag}!") {
                    return Err(format!("{who}: {doubled}, {shout} for {n}, {tag}"));
                }
            }
            1 => {
                let none = conn
                    .query_opt("SELECT n FROM load_t WHERE client = $1 AND n < 0", &[&tag])
                    .map_err(step)?;
                if none.is_some() {
                    return Err(format!("{who}: a row where none was"));
                }
            }
            2 => {
                // A transaction with a savepoint that rolls back a failed statement.
                let mut tx = conn.transaction().map_err(step)?;
                tx.execute(
                    "INSERT INTO load_t VALUES ($1, $2, 'kept')",
                    &[&tag, &(n as i64)],
                )
                .map_err(step)?;
                {
                    let mut sp = tx.savepoint("sp").map_err(step)?;
                    let failed = sp.execute("SELECT 1 / ($1::int4 - $1::int4)", &[&1i32]);
                    if failed.is_ok() {
                        return Err(format!("{who}: a division by zero succeeded"));
                    }
                    sp.rollback().map_err(step)?;
                }
                let kept: i64 = tx
                    .query_one("SELECT count(*) FROM load_t WHERE client = $1", &[&tag])
                    .map_err(step)?
                    .get(0);
                tx.commit().map_err(step)?;
                if kept != 1 {
                    return Err(format!("{who}: {kept} rows kept for {tag}"));
                }
            }
            3 => {
                let mut pipeline = conn.pipeline().map_err(step)?;
                for i in 0..3i64 {
                    pipeline
                        .query(&text(n + i as u64) as &str, &[&i, &tag])
                        .map_err(step)?;
                }
                pipeline.sync().map_err(step)?;
                for i in 0..3i64 {
                    let rows = pipeline
                        .next_result()
                        .ok_or_else(|| format!("{who}: a pipeline result missing"))?
                        .map_err(step)?
                        .into_rows()
                        .ok_or_else(|| format!("{who}: not rows"))?;
                    let doubled: i64 = rows.get(0).ok_or("no row")?.get(0);
                    if doubled != 2 * i {
                        return Err(format!("{who}: pipeline answer {doubled} for {i}"));
                    }
                }
                let sync = pipeline
                    .next_result()
                    .ok_or_else(|| format!("{who}: the sync result missing"))?
                    .map_err(step)?;
                if !sync.is_sync() {
                    return Err(format!("{who}: {sync:?} where the sync was due"));
                }
                pipeline.finish().map_err(step)?;
            }
            4 => {
                let mut writer = conn.copy_in("COPY copy_t FROM STDIN").map_err(step)?;
                for i in 0..3 {
                    writer
                        .write_all(format!("{tag}\t{i}\n").as_bytes())
                        .map_err(|e| format!("{who}: {e}"))?;
                }
                let copied = writer.finish().map_err(step)?;
                let counted: i64 = conn
                    .query_one("SELECT count(*) FROM copy_t WHERE client = $1", &[&tag])
                    .map_err(step)?
                    .get(0);
                if copied != 3 || counted != 3 {
                    return Err(format!("{who}: copied {copied}, counted {counted}"));
                }
            }
            _ => {
                let mut out = String::new();
                conn.copy_out(&format!(
                    "COPY (SELECT '{tag}', g FROM generate_series(1, 3) g) TO STDOUT"
                ))
                .map_err(step)?
                .read_to_string(&mut out)
                .map_err(|e| format!("{who}: {e}"))?;
                if out != format!("{tag}\t1\n{tag}\t2\n{tag}\t3\n") {
                    return Err(format!("{who}: COPY out gave {out:?}"));
                }
            }
        }
    }
    Ok(n)
}

async fn async_step(client: &pqlib::tokio::Client, who: &str, n: u64) -> Result<(), String> {
    let tag = format!("{who}-{n}");
    let step = |e: pqlib::Error| format!("{who} step {n} ({}): {e}", n % 5);
    match n % 5 {
        0 => {
            let row = client
                .query_one(&text(n) as &str, &[&(n as i64), &tag])
                .await
                .map_err(step)?;
            let (doubled, shout): (i64, String) = (row.get(0), row.get(1));
            if doubled != 2 * n as i64 || shout != format!("{tag}!") {
                return Err(format!("{who}: {doubled}, {shout} for {n}, {tag}"));
            }
        }
        1 => {
            let rows = client
                .query("SELECT g FROM generate_series(1, $1::int4) g", &[&3i32])
                .await
                .map_err(step)?;
            if rows.len() != 3 {
                return Err(format!("{who}: {} rows", rows.len()));
            }
        }
        2 => {
            let mut batch = client.pipeline();
            for i in 0..3i64 {
                batch
                    .query(&text(n + i as u64) as &str, &[&i, &tag])
                    .await
                    .map_err(step)?;
            }
            let results = batch.run().await.map_err(step)?;
            for (i, rows) in results.iter().enumerate() {
                let doubled: i64 = rows.get(0).ok_or("no row")?.get(0);
                if doubled != 2 * i as i64 {
                    return Err(format!("{who}: batch answer {doubled} for {i}"));
                }
            }
        }
        3 => {
            let mut sink = client
                .copy_in("COPY copy_t FROM STDIN")
                .await
                .map_err(step)?;
            sink.send(Bytes::from(format!("{tag}\t1\n{tag}\t2\n")))
                .await
                .map_err(step)?;
            let copied = sink.finish().await.map_err(step)?;
            if copied != 2 {
                return Err(format!("{who}: copied {copied}"));
            }
        }
        _ => {
            let mut stream = client
                .query_raw(
                    "SELECT g, $1::text FROM generate_series(1, 100) g",
                    [&tag as &(dyn pqlib::types::ToSql + Sync)],
                )
                .await
                .map_err(step)?;
            let mut seen = 0;
            while let Some(chunk) = stream.next_chunk().await {
                for row in &chunk.map_err(step)? {
                    let t: &str = row.get(1);
                    if t != tag {
                        return Err(format!("{who}: a stream row of {t}"));
                    }
                    seen += 1;
                }
            }
            if seen != 100 {
                return Err(format!("{who}: {seen} streamed rows"));
            }
        }
    }
    Ok(())
}

async fn async_client(config: Config, who: String, deadline: Instant) -> Result<u64, String> {
    let (client, connection) = pqlib::tokio::connect_config(&config)
        .await
        .map_err(|e| format!("{who} connect: {e}"))?;
    tokio::spawn(connection);
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        async_step(&client, &who, n).await?;
    }
    Ok(n)
}

async fn pooled_client(
    pool: pqlib::pool::deadpool::Pool,
    who: String,
    deadline: Instant,
) -> Result<u64, String> {
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let client = pool.get().await.map_err(|e| format!("{who} get: {e}"))?;
        async_step(&client, &who, n).await?;
    }
    Ok(n)
}

/// 24 threads, 24 async clients and 16 tasks over a deadpool pool of 12 connections, all
/// through 4 server connections.
#[test]
fn mixed_load_behind_transaction_pooling() {
    let setup = start(PoolMode::Transaction);
    let config = never(&setup.bouncer.conninfo());
    let deadline = Instant::now() + LOAD_TIME;
    let done = Arc::new(AtomicU64::new(0));
    let mut errors = Vec::new();
    thread::scope(|scope| {
        let blocking: Vec<_> = (0..24)
            .map(|i| {
                let (config, done) = (&config, done.clone());
                scope.spawn(move || {
                    let n = blocking_client(config, &format!("b{i}"), deadline)?;
                    done.fetch_add(n, Ordering::Relaxed);
                    Ok::<_, String>(())
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let async_errors = runtime.block_on(async {
            let _deadline = common::deadline(common::TEST_DEADLINE);
            let pool = pqlib::pool::deadpool::Pool::builder(pqlib::pool::deadpool::Manager::new(
                config.clone(),
            ))
            .max_size(12)
            .runtime(pqlib::pool::deadpool::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .expect("the pool");
            let mut tasks = Vec::new();
            for i in 0..24 {
                tasks.push(tokio::spawn(async_client(
                    config.clone(),
                    format!("a{i}"),
                    deadline,
                )));
            }
            for i in 0..16 {
                tasks.push(tokio::spawn(pooled_client(
                    pool.clone(),
                    format!("p{i}"),
                    deadline,
                )));
            }
            let mut errors = Vec::new();
            for task in tasks {
                match task.await.expect("a load task panicked") {
                    Ok(n) => {
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e),
                }
            }
            errors
        });
        errors.extend(async_errors);
        for thread in blocking {
            if let Err(e) = thread.join().expect("a load thread panicked") {
                errors.push(e);
            }
        }
    });
    let done = done.load(Ordering::Relaxed);
    println!(
        "mixed load through PgBouncer: {done} steps, {} errors",
        errors.len()
    );
    assert!(errors.is_empty(), "errors: {errors:#?}");
    assert!(done > 64 * 10, "only {done} steps in {LOAD_TIME:?}");
}

/// Bad input behind the pooler is a clear error and the connection stays usable.
#[test]
fn bad_input_behind_the_pooler_leaves_the_client_usable() {
    let setup = start(PoolMode::Transaction);
    let mut conn = never(&setup.bouncer.conninfo()).connect().unwrap();
    let wrong_type = conn.query_one("SELECT $1::int4", &[&"seven"]).unwrap_err();
    assert_eq!(wrong_type.kind(), ErrorKind::Conversion, "{wrong_type}");
    let nul = conn.query_one("SELECT 1\0", &[]).unwrap_err();
    assert_eq!(nul.kind(), ErrorKind::BadInput, "{nul}");
    let count = conn
        .query_one("SELECT $1::int4", &[&1i32, &2i32])
        .unwrap_err();
    assert_eq!(count.kind(), ErrorKind::BadInput, "{count}");
    let syntax = conn.query_one("SELEC $1::int4", &[&1i32]).unwrap_err();
    assert!(syntax.code().is_some(), "{syntax}");
    let n: i32 = conn.query_one("SELECT $1::int4", &[&7i32]).unwrap().get(0);
    assert_eq!(n, 7);
}

/// The server connection behind a running statement is terminated: the client gets an
/// error (PgBouncer reports the lost server connection), never a hang or someone else's
/// answer, and a client through the same PgBouncer works afterwards.
#[test]
fn a_killed_server_connection_is_a_clear_error() {
    let setup = start(PoolMode::Transaction);
    let config = never(&setup.bouncer.conninfo());
    let mut victim = config.connect().unwrap();
    let mut killer = Connection::connect(&setup.cluster.conninfo()).unwrap();
    let runner = thread::spawn(move || {
        let result = victim.query("SELECT pg_sleep(30), $1::text", &[&"victim"]);
        (victim, result)
    });
    let pid = common::wait_until_running(&mut killer, "SELECT pg_sleep(30)");
    let killed: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed);
    let (mut victim, result) = runner.join().unwrap();
    let error = result.expect_err("the statement's backend was terminated");
    println!("the victim saw: {error}");
    // Then: either a clean Closed, or (PgBouncer kept the client) a working connection.
    match victim.query_one("SELECT $1::text", &[&"after"]) {
        Ok(row) => assert_eq!(row.get::<_, &str>(0), "after"),
        Err(e) => assert!(e.is_closed(), "neither working nor closed: {e}"),
    }
    let mut fresh = config.connect().unwrap();
    let n: i32 = fresh.query_one("SELECT $1::int4", &[&3i32]).unwrap().get(0);
    assert_eq!(n, 3);
}

/// PgBouncer itself is killed during a statement and started again: the client's statement
/// fails as `Closed`, and new connections work once it is back.
#[test]
fn a_restarted_pgbouncer_closes_its_clients_cleanly() {
    let mut setup = start(PoolMode::Transaction);
    let config = never(&setup.bouncer.conninfo());
    let mut client = config.connect().unwrap();
    client.query_one("SELECT $1::int4", &[&1i32]).unwrap();
    let runner = thread::spawn(move || {
        let result = client.query("SELECT pg_sleep(30), $1::int4", &[&2i32]);
        (client, result)
    });
    let mut observer = Connection::connect(&setup.cluster.conninfo()).unwrap();
    common::wait_until_running(&mut observer, "SELECT pg_sleep(30)");
    setup.bouncer.restart().expect("restarting PgBouncer");
    let (mut client, result) = runner.join().unwrap();
    let error = result.expect_err("PgBouncer went away during the statement");
    assert!(error.is_closed(), "{error}");
    let after = client.query_one("SELECT 1", &[]).unwrap_err();
    assert!(after.is_closed(), "{after}");
    let mut fresh = config.connect().unwrap();
    let n: i32 = fresh.query_one("SELECT $1::int4", &[&4i32]).unwrap().get(0);
    assert_eq!(n, 4);
}

/// One async client shared by 32 tasks: their requests are pipelined on one client
/// connection, several sync segments in flight at once, which PgBouncer must keep on one
/// server connection until the last of them is answered.
#[test]
fn a_shared_async_client_pipelines_behind_transaction_pooling() {
    let setup = start(PoolMode::Transaction);
    let config = never(&setup.bouncer.conninfo());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let errors = runtime.block_on(async {
        let _deadline = common::deadline(common::TEST_DEADLINE);
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        tokio::spawn(connection);
        let deadline = Instant::now() + Duration::from_secs(4);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let who = format!("s{i}");
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let tag = format!("{who}-{n}");
                        let row = client
                            .query_one(&text(n) as &str, &[&(n as i64), &tag])
                            .await
                            .map_err(|e| format!("{who} step {n}: {e}"))?;
                        let shout: String = row.get(1);
                        if shout != format!("{tag}!") {
                            return Err(format!("{who}: {shout} for {tag}"));
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut errors = Vec::new();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                errors.push(e);
            }
        }
        errors
    });
    assert!(errors.is_empty(), "errors: {errors:#?}");
}
