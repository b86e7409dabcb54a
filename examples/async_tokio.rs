//! The async client: many tasks share one connection, their statements pipelined instead of
//! queued behind each other's round trips; and notices and notifications as a stream.
//!
//! Uses `DATABASE_URL` when set (a conninfo string or `postgresql://` URI); otherwise starts
//! a throwaway server in a temp dir and stops it at the end.
//!
//! ```sh
//! cargo run --example async_tokio
//! cargo run --release --example async_tokio   # for throughput worth quoting
//! ```

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pqlib::tempdb::TempCluster;
use pqlib::tokio::{AsyncMessage, Client};

const TASKS: usize = 64;
const QUERIES_PER_TASK: usize = 500;
/// Queries the single task runs, for the comparison.
const SEQUENTIAL_QUERIES: usize = 5000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the throwaway server alive until the end of main.
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            println!("DATABASE_URL is not set: starting a throwaway server");
            let server = TempCluster::start()?;
            (server.conninfo(), Some(server))
        }
    };

    // The connection does the I/O. Awaiting it would drop notifications, so drive it as a
    // stream of messages instead, and pass them on to main.
    let (client, mut connection) = pqlib::tokio::connect(&conninfo).await?;
    let (message_sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                // Keep driving the connection even if nobody listens any more.
                Ok(message) => drop(message_sender.send(message)),
                Err(e) => {
                    eprintln!("connection error: {e}");
                    break;
                }
            }
        }
    });

    let version: String = client
        .query_one("SELECT current_setting('server_version')", &[])
        .await?
        .get(0);
    println!("connected: libpq {}, server {version}", pqlib::version());

    // One task, one statement at a time: a round trip each.
    let started = Instant::now();
    run_queries(&client, 0, SEQUENTIAL_QUERIES).await?;
    let elapsed = started.elapsed();
    let sequential_rate = SEQUENTIAL_QUERIES as f64 / elapsed.as_secs_f64();
    println!(
        "1 task:   {SEQUENTIAL_QUERIES} queries in {elapsed:.2?} ({sequential_rate:.0} queries/s)"
    );

    // Many tasks on clones of the same client: statements ride the same pipeline.
    let total = TASKS * QUERIES_PER_TASK;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                run_queries(&client, task * QUERIES_PER_TASK, QUERIES_PER_TASK).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let concurrent_rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "{TASKS} tasks: {total} queries in {elapsed:.2?} ({concurrent_rate:.0} queries/s, {:.1}x)",
        concurrent_rate / sequential_rate
    );

    // Notices and notifications arrive on the message stream.
    client.batch_execute("LISTEN pqlib_example").await?;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await?;
    let notifier = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .query(
                    "SELECT pg_notify('pqlib_example', $1)",
                    &[&"hello from a task"],
                )
                .await
        })
    };
    notifier.await??;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, messages.recv()).await {
            Ok(Some(AsyncMessage::Notice(notice))) => {
                println!("notice: {}", notice.message());
            }
            Ok(Some(AsyncMessage::Notification(note))) => {
                println!(
                    "notification on {:?} from backend {}: {:?}",
                    note.channel(),
                    note.process_id(),
                    note.payload()
                );
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the connection ended".into()),
            Err(_) => return Err("no notification within 5 s".into()),
        }
    }

    // Dropping the last client lets the connection finish.
    drop(client);
    driver.await?;
    println!("done");
    Ok(())
}

/// Runs `count` queries one after another, checking every answer.
async fn run_queries(client: &Client, first: usize, count: usize) -> Result<(), pqlib::Error> {
    for i in first..first + count {
        let n = i as i64;
        let doubled: i64 = client.query_one("SELECT $1::int8 * 2", &[&n]).await?.get(0);
        assert_eq!(doubled, 2 * n);
    }
    Ok(())
}
