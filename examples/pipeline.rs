//! What pipeline mode saves: the same 2,000 statements run one round trip at a time, then
//! pipelined, in the same run, against the same server.
//!
//! ```sh
//! cargo run --release --example pipeline            # throwaway server over loopback TCP
//! DATABASE_URL=postgresql://postgres@db/postgres cargo run --release --example pipeline
//! ```
//!
//! The saving grows with the round-trip time: over loopback it is the per-message system-call
//! cost, across a network it is the latency itself.

use std::time::{Duration, Instant};

use pqlib::Connection;
use pqlib::tempdb::TempCluster;

const STATEMENTS: i32 = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = TempCluster::start()?;
            // TCP rather than the unix socket: closer to a real deployment's round trip.
            (server.tcp_conninfo(), Some(server))
        }
    };
    let mut conn = Connection::connect(&conninfo)?;
    let select = conn.prepare("SELECT $1::int4 + 1")?;

    let one_by_one = |conn: &mut Connection| -> pqlib::Result<Duration> {
        let started = Instant::now();
        for i in 0..STATEMENTS {
            let n: i32 = conn.query_one(&select, &[&i])?.get(0);
            assert_eq!(n, i + 1);
        }
        Ok(started.elapsed())
    };
    let pipelined = |conn: &mut Connection| -> pqlib::Result<Duration> {
        let started = Instant::now();
        let mut pipeline = conn.pipeline()?;
        for i in 0..STATEMENTS {
            pipeline.query(&select, &[&i])?;
        }
        pipeline.sync()?;
        let mut i = 0;
        while let Some(result) = pipeline.next_result() {
            if let Some(rows) = result?.into_rows() {
                assert_eq!(rows.get(0).map(|r| r.get::<_, i32>(0)), Some(i + 1));
                i += 1;
            }
        }
        pipeline.finish()?;
        Ok(started.elapsed())
    };

    // Warm up, then alternate so that neither side gets the quieter moments.
    one_by_one(&mut conn)?;
    pipelined(&mut conn)?;
    let (mut loop_times, mut pipeline_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        loop_times.push(one_by_one(&mut conn)?);
        pipeline_times.push(pipelined(&mut conn)?);
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (looped, piped) = (median(&mut loop_times), median(&mut pipeline_times));
    println!("{STATEMENTS} × SELECT $1::int4 + 1 (median of 5)");
    println!(
        "  one round trip each: {looped:>10.2?}  ({:.1} µs/statement)",
        per(looped)
    );
    println!(
        "  pipelined:           {piped:>10.2?}  ({:.1} µs/statement)",
        per(piped)
    );
    println!(
        "  pipeline is {:.1}× faster",
        looped.as_secs_f64() / piped.as_secs_f64()
    );
    Ok(())
}

fn per(total: Duration) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(STATEMENTS)
}
