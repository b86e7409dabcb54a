//! A deadpool pool of async clients shared by many tokio tasks: each task checks a client
//! out per unit of work (a query, or a transaction) and gives it back by dropping it. Reports
//! queries per second and what the pool looked like.
//!
//! Uses `DATABASE_URL` when set (a conninfo string or `postgresql://` URI); otherwise starts
//! a throwaway server in a temp dir and stops it at the end.
//!
//! ```sh
//! cargo run --example pool
//! cargo run --release --example pool   # for throughput worth quoting
//! ```

use std::time::{Duration, Instant};

use pqlib::pool::deadpool::{Manager, Pool, Runtime};
use pqlib::tempdb::TempCluster;

const POOL_SIZE: usize = 8;
const TASKS: usize = 64;
const QUERIES_PER_TASK: usize = 1000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Keep the throwaway server alive until the end of main.
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            println!("DATABASE_URL is not set: starting a throwaway server");
            let server = TempCluster::start()?;
            (server.conninfo(), Some(server))
        }
    };

    let manager = Manager::new(conninfo.parse()?);
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1) // for the timeouts
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()?;

    {
        let client = pool.get().await?;
        client
            .batch_execute(
                "DROP TABLE IF EXISTS pool_example_counts;
                 CREATE TABLE pool_example_counts (task int4 PRIMARY KEY, done int8 NOT NULL)",
            )
            .await?;
    }

    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS as i32)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move { work(&pool, task).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let queries = TASKS * QUERIES_PER_TASK;
    println!(
        "{TASKS} tasks, pool of {POOL_SIZE}: {queries} queries (a checkout each) in {elapsed:.2?}: \
         {:.0} queries/s",
        queries as f64 / elapsed.as_secs_f64()
    );

    let client = pool.get().await?;
    let done: i64 = client
        .query_one("SELECT sum(done)::int8 FROM pool_example_counts", &[])
        .await?
        .get(0);
    println!("the tasks' transactions recorded {done} queries");
    assert_eq!(done, queries as i64);
    client
        .batch_execute("DROP TABLE pool_example_counts")
        .await?;
    drop(client);

    let status = pool.status();
    println!(
        "pool: {} connections, {} idle, {} waiting",
        status.size, status.available, status.waiting
    );
    Ok(())
}

/// One task's work: queries, each on a client checked out for it; then a transaction that
/// records how many it ran.
async fn work(pool: &Pool, task: i32) -> Result<(), BoxError> {
    for i in 0..QUERIES_PER_TASK as i64 {
        let n = i64::from(task) * 1_000_000 + i;
        let client = pool.get().await?;
        let doubled: i64 = client.query_one("SELECT $1::int8 * 2", &[&n]).await?.get(0);
        assert_eq!(doubled, 2 * n);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO pool_example_counts (task, done) VALUES ($1, $2)",
        &[&task, &(QUERIES_PER_TASK as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
