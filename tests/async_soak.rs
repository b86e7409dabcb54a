//! Soak: 100k queries from 32 tasks, every answer checked, on one pipelined client and on a
//! deadpool pool of 4 clients (a checkout per query). Prints elapsed time and queries per
//! second: `cargo test --test async_soak -- --nocapture` (add `--release` for the numbers
//! that matter). Both run the full 100k in a debug build too, in about ten seconds.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pqlib::pool::deadpool::{Manager, Pool, Runtime};

const TASKS: usize = 32;
/// Queries in all.
const TOTAL: usize = 100_000;
const PER_TASK: usize = TOTAL / TASKS;
const SQL: &str = "SELECT $1::int8 * 2";

/// One soak at a time: they measure throughput.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// The value task `task` sends in its `i`th query: distinct across all queries.
fn value(task: usize, i: usize) -> i64 {
    (task * PER_TASK + i) as i64 * 7 - 3
}

fn report(what: &str, queries: usize, elapsed: Duration) {
    let rate = queries as f64 / elapsed.as_secs_f64();
    eprintln!("{what}: {queries} queries from {TASKS} tasks in {elapsed:.2?}: {rate:.0} queries/s");
}

#[test]
fn soak_one_client_32_tasks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    runtime().block_on(async {
        let (client, connection) = pqlib::tokio::connect(&common::conninfo()).await.unwrap();
        let driver = tokio::spawn(connection);
        // Prepare the statement once, ahead of the clock.
        let n: i64 = client.query_one(SQL, &[&1i64]).await.unwrap().get(0);
        assert_eq!(n, 2);

        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        let v = value(task, i);
                        let row = client.query_one(SQL, &[&v]).await.unwrap();
                        let doubled: i64 = row.get(0);
                        assert_eq!(doubled, 2 * v, "task {task}, query {i}");
                    }
                    PER_TASK
                })
            })
            .collect();
        let mut checked = 0;
        for task in tasks {
            checked += task.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(checked, TASKS * PER_TASK);
        report("one client", checked, elapsed);

        drop(client);
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("the connection ends once the client is dropped")
            .unwrap()
            .unwrap();
    });
}

#[test]
fn soak_pool_of_4_32_tasks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    runtime().block_on(async {
        let config = common::conninfo().parse().unwrap();
        let pool = Pool::builder(Manager::new(config))
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .unwrap();
        // Open all four connections and prepare the statement on each, ahead of the clock.
        let mut warm = Vec::new();
        for _ in 0..4 {
            let client = pool.get().await.unwrap();
            client.query_one(SQL, &[&1i64]).await.unwrap();
            warm.push(client);
        }
        drop(warm);

        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        let v = value(task, i);
                        // A checkout (and a recycle) per query.
                        let client = pool.get().await.unwrap();
                        let doubled: i64 = client.query_one(SQL, &[&v]).await.unwrap().get(0);
                        assert_eq!(doubled, 2 * v, "task {task}, query {i}");
                    }
                    PER_TASK
                })
            })
            .collect();
        let mut checked = 0;
        for task in tasks {
            checked += task.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(checked, TASKS * PER_TASK);
        report("pool of 4", checked, elapsed);
        let status = pool.status();
        assert_eq!((status.size, status.available), (4, 4), "{status:?}");
    });
}
