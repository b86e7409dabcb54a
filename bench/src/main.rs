//! The side-by-side benchmark of issue 7: raw C libpq, pqlib (sync and async), postgres,
//! tokio-postgres, sqlx and psycopg 3 on the same workloads, in one run.
//!
//! ```text
//! cd bench && cargo run --release -- [--quick] [--tcp] [--reps N] [--only W1,W4] [--out DIR]
//! ```
//!
//! It starts a `TempCluster` (or uses `DATABASE_URL`, a libpq connection string or URI),
//! prepares the data, then for each workload opens every client's connection, runs one
//! warm-up per client, and then `reps` measured runs interleaved A B C … A B C …; it reports
//! the median, its spread and the ratio to the C program, and writes `benchmarks.md`,
//! `benchmarks.json` and `benchmarks.svg` into `--out` (default `docs/`). The async clients run
//! W1 and W7b once more on a multi-thread runtime as `#[tokio::main]` builds it (`--no-multi`
//! skips that), and the report checks the goals of issues 7 and 16 against the medians. W8
//! runs W1 and W2 with `PreparePolicy::Never`, direct and through a throwaway PgBouncer in
//! transaction mode that the harness starts next to its `TempCluster`.

mod env_info;
mod psycopg;
mod report;
mod workloads;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
use pqlib_bench::c;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The clients, in the order they run and are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Client {
    C,
    PqlibSync,
    PqlibAsync,
    Postgres,
    TokioPostgres,
    Sqlx,
    Psycopg,
}

impl Client {
    pub const ALL: [Client; 7] = [
        Client::C,
        Client::PqlibSync,
        Client::PqlibAsync,
        Client::Postgres,
        Client::TokioPostgres,
        Client::Sqlx,
        Client::Psycopg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Client::C => "C libpq",
            Client::PqlibSync => "pqlib",
            Client::PqlibAsync => "pqlib::tokio",
            Client::Postgres => "postgres",
            Client::TokioPostgres => "tokio-postgres",
            Client::Sqlx => "sqlx",
            Client::Psycopg => "psycopg 3",
        }
    }

    /// The protocol choices the client makes on every workload.
    pub fn protocol(self) -> &'static str {
        match self {
            Client::C => {
                "PQprepare once, PQexecPrepared/PQsendQueryPrepared with binary parameters and \
                 binary results; pipeline mode with PQpipelineSync; COPY through 64 KiB \
                 PQputCopyData buffers and PQgetCopyData"
            }
            Client::PqlibSync => {
                "SQL prepared once and cached (or a `Statement`), binary parameters and results \
                 (always); `pipeline()`; `copy_in`/`copy_out`, `binary_copy`; `query_raw` \
                 streaming (libpq's single-row mode before libpq 17, chunked rows after)"
            }
            Client::PqlibAsync => {
                "as pqlib, through libpq's non-blocking API; concurrent requests are pipelined, \
                 each in its own sync segment; `pipeline()` batches (one sync each) where pqlib \
                 uses `pipeline()` (W4b; W6p with results streamed by `stream()`); `query_raw` \
                 streaming"
            }
            Client::Postgres => {
                "prepared `Statement`s, binary parameters and results (always); its own protocol \
                 implementation over tokio, on a current-thread runtime of its own"
            }
            Client::TokioPostgres => {
                "prepared `Statement`s, binary parameters and results (always); concurrent \
                 futures are pipelined (each request with its own Sync)"
            }
            Client::Sqlx => {
                "`sqlx::query` with persistent (cached) prepared statements, binary parameters \
                 and results; no pipelining, no binary COPY encoder"
            }
            Client::Psycopg => {
                "`execute(..., prepare=True, binary=True)`, `conn.pipeline()`, `cursor.copy` \
                 (text rows with `write`, binary with `write_row`); C implementation \
                 (psycopg[binary], its own bundled libpq)"
            }
        }
    }
}

/// Which tokio runtime an async client's entry runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rt {
    /// The run's runtime (`--runtime`): what every client's main row uses.
    Main,
    /// The extra multi-thread runtime of the "multi-thread runtime" rows (W1 and W7b), as
    /// `#[tokio::main]` builds it: one worker per CPU, the workers not pinned, each measured
    /// run a task spawned on it.
    Multi,
}

/// Command-line options.
#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    pub tcp: bool,
    pub reps: usize,
    pub only: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    pub out: PathBuf,
    pub skip_python: bool,
    /// Where the client and the server run: `same` CPU (default), `split` (client on CPU 0,
    /// server on CPU 1), or `none` (wherever the kernel puts them).
    pub cpu: String,
    /// The tokio runtime for the async clients: `current` (one thread: the client's futures
    /// and the connection tasks all run on it) or `multi`. Default: `current` when the
    /// client is pinned to one CPU, `multi` (one worker per CPU) when it is not.
    pub runtime: Option<String>,
    /// Skip the extra multi-thread runtime rows of W1 and W7b (`--no-multi`).
    pub no_multi: bool,
    /// Exit non-zero when a client failed (an error, or a checksum other than C's) or a goal
    /// of issue 7 or 16 is missed.
    pub enforce_goals: bool,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut opts = Opts {
            quick: false,
            tcp: false,
            reps: 0,
            only: None,
            clients: None,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs"),
            skip_python: false,
            cpu: "same".into(),
            runtime: None,
            no_multi: false,
            enforce_goals: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--tcp" => opts.tcp = true,
                "--no-python" => opts.skip_python = true,
                "--no-multi" => opts.no_multi = true,
                "--enforce-goals" => opts.enforce_goals = true,
                "--cpu" => {
                    opts.cpu = args.next().ok_or("--cpu needs same, split or none")?;
                    if !["same", "split", "none"].contains(&opts.cpu.as_str()) {
                        return Err(format!("--cpu {}: use same, split or none", opts.cpu).into());
                    }
                }
                "--runtime" => {
                    let runtime = args.next().ok_or("--runtime needs current or multi")?;
                    if !["current", "multi"].contains(&runtime.as_str()) {
                        return Err(format!("--runtime {runtime}: use current or multi").into());
                    }
                    opts.runtime = Some(runtime);
                }
                "--reps" => opts.reps = args.next().ok_or("--reps needs a number")?.parse()?,
                "--only" => {
                    let list = args.next().ok_or("--only needs a list such as W1,W4")?;
                    opts.only = Some(list.split(',').map(|s| s.trim().to_uppercase()).collect());
                }
                "--clients" => {
                    let list = args
                        .next()
                        .ok_or("--clients needs a list such as c,pqlib")?;
                    opts.clients = Some(list.split(',').map(|s| s.trim().to_lowercase()).collect());
                }
                "--out" => opts.out = args.next().ok_or("--out needs a directory")?.into(),
                "-h" | "--help" => {
                    println!(
                        "usage: cargo run --release -- [--quick] [--tcp] [--reps N] \
                         [--only W1,W2,...] [--out DIR] [--no-python] [--no-multi] \
                         [--enforce-goals]\n\n\
                         --quick       smaller workloads and 3 repetitions: a smoke run\n\
                         --tcp         connect over loopback TCP instead of the unix socket\n\
                         --reps N      measured repetitions per client (default 5, quick 3)\n\
                         --only LIST   run only these workloads (W1 … W8)\n\
                         --clients LIST  run only these clients (c, pqlib, pqlib::tokio, \
                         postgres, tokio-postgres, sqlx, psycopg), e.g. for a profiler\n\
                         --out DIR     where benchmarks.md/.json/.svg go (default docs/)\n\
                         --no-python   skip psycopg\n\
                         --enforce-goals  exit with status 1 if a client failed (an error, or \
                         a checksum other than C's) or a goal of issue 7 or 16 is missed\n\
                         --cpu MODE    same: client and server pinned to CPU 0 (default); \
                         split: client on CPU 0, server on CPU 1; none: not pinned\n\
                         --runtime R   tokio runtime of the async clients: current (default \
                         when pinned) or multi (one worker per CPU; default when not)\n\
                         --no-multi    skip the extra rows of W1 and W7b on a multi-thread \
                         runtime (run when the main runtime is current-thread)\n\n\
                         W8            W1 and W2 with PreparePolicy::Never (the unnamed \
                         statement), direct (W8a, W8c) and through a PgBouncer in transaction \
                         mode, pool_size 4 (W8b, W8d; /usr/sbin/pgbouncer, started next to the \
                         TempCluster)\n\
                         DATABASE_URL  use this server instead of a TempCluster (W2 and W8c/W8d \
                         need pgbench; W8b/W8d are skipped: no PgBouncer of the bench's own)"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}; try --help").into()),
            }
        }
        if opts.reps == 0 {
            opts.reps = if opts.quick { 3 } else { 5 };
        }
        Ok(opts)
    }

    pub fn wants_client(&self, client: Client) -> bool {
        let name = client.name().to_lowercase();
        let short = name.split_whitespace().next().unwrap_or_default();
        self.clients
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| *c == name || c == short))
    }

    pub fn wants(&self, workload: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|list| list.iter().any(|w| w == workload))
    }
}

/// Workload sizes: the issue's in a full run, a tenth or so with `--quick`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// W1 round trips.
    pub w1: usize,
    /// W2 point selects, and pgbench's scale.
    pub w2: usize,
    pub pgbench_scale: u32,
    /// W3 rows, and the streamed variant's.
    pub w3: usize,
    pub w3_stream: usize,
    /// W4 rows per variant.
    pub w4: usize,
    /// Rows in the W5 table (~78 bytes each in text COPY format).
    pub w5_rows: usize,
    /// W6: statements per batch, and batches per measured run.
    pub w6: usize,
    pub w6_batches: usize,
    /// W7 queries and tasks.
    pub w7: usize,
    pub w7_tasks: usize,
    /// W9: rows in the logical stream (inserted in `W9_TXNS` transactions).
    pub w9: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                w1: 10_000,
                w2: 10_000,
                pgbench_scale: 1,
                w3: 100_000,
                w3_stream: 100_000,
                w4: 20_000,
                w5_rows: 65_000,
                w6: 1000,
                w6_batches: 2,
                w7: 2000,
                w7_tasks: 32,
                w9: 100_000,
            }
        } else {
            Sizes {
                w1: 100_000,
                w2: 100_000,
                pgbench_scale: 10,
                w3: 100_000,
                w3_stream: 1_000_000,
                w4: 100_000,
                w5_rows: 650_000,
                w6: 1000,
                w6_batches: 10,
                w7: 10_000,
                w7_tasks: 32,
                w9: 1_000_000,
            }
        }
    }
}

/// Where the server is.
pub struct Server {
    /// A libpq connection string (key=value) or URI, for every client.
    pub conninfo: String,
    pub cluster: Option<TempCluster>,
    pub transport: &'static str,
}

fn start_server(opts: &Opts) -> Result<Server> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(Server {
            conninfo: url,
            cluster: None,
            transport: "DATABASE_URL",
        });
    }
    // Enough shared buffers to hold pgbench's scale 10 and the W5 table in memory; logical
    // WAL for W9's slots (the other workloads' tables are unlogged and write no WAL).
    let cluster = TempCluster::builder()
        .config("shared_buffers = '512MB'")
        .config("max_connections = 50")
        .config("autovacuum = off")
        .config("wal_level = logical")
        .start()?;
    let (conninfo, transport) = if opts.tcp {
        (cluster.tcp_conninfo(), "loopback TCP (127.0.0.1)")
    } else {
        (cluster.conninfo(), "unix socket")
    };
    Ok(Server {
        conninfo,
        cluster: Some(cluster),
        transport,
    })
}

/// Starts W8's PgBouncer (transaction mode, 4 server connections) in front of the bench's own
/// cluster, and pins it where the server runs. `Err` says why there is none.
fn start_bouncer(
    cluster: Option<&TempCluster>,
    opts: &Opts,
    server_cpu: Option<usize>,
) -> std::result::Result<TempPgBouncer, String> {
    let cluster = cluster.ok_or(
        "DATABASE_URL is set: the bench starts a PgBouncer only in front of its own TempCluster",
    )?;
    let bouncer = TempPgBouncer::builder(cluster)
        .pool_mode(PoolMode::Transaction)
        .pool_size(4)
        .start()
        .map_err(|e| format!("PgBouncer did not start: {e}"))?;
    if let Some(cpu) = server_cpu {
        pin(bouncer.pid() as libc::pid_t, cpu)
            .map_err(|e| format!("pinning PgBouncer to CPU {cpu}: {e}"))?;
    }
    eprintln!(
        "pgbouncer {}: {} (transaction mode, pool_size 4)",
        bouncer.version(),
        if opts.tcp {
            bouncer.tcp_conninfo()
        } else {
            bouncer.conninfo()
        }
    );
    Ok(bouncer)
}

/// Pins process (or thread) `pid` (0: the calling thread) to one CPU.
fn pin(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it (cpu < CPU_SETSIZE,
    // checked by the caller); sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A thread's CPU affinity: the harness's own before it pins itself, given back to the
/// worker threads of the multi-thread runtime rows, which stand for a program that nobody
/// pinned.
#[derive(Clone, Copy)]
struct Affinity(libc::cpu_set_t);

impl Affinity {
    /// The calling thread's.
    fn current() -> std::io::Result<Affinity> {
        // SAFETY: a zeroed cpu_set_t is a valid (empty) set; sched_getaffinity writes at most
        // `size_of` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Affinity(set))
        }
    }

    /// Gives it to the calling thread.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: sched_setaffinity reads `size_of` bytes of a valid cpu_set_t.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// How many CPUs it allows.
    fn count(&self) -> usize {
        // SAFETY: CPU_COUNT reads the set it is given.
        usize::try_from(unsafe { libc::CPU_COUNT(&self.0) }).unwrap_or(1)
    }
}

/// Pins the server (the postmaster, whose later backends inherit it, and the processes it has
/// started) to `server_cpu`, and this process (every thread and child started from now on) to
/// CPU 0.
///
/// Unpinned, on 2 cores, where a backend lands relative to its client changes round-trip
/// times by up to 2× from one connection to the next (and so from one client to the next);
/// pinned, every client meets the same placement. On one CPU a round trip is a context switch
/// and every instruction of client and server adds to the time, which makes client overhead
/// visible; split over two CPUs each round trip pays two cross-CPU wake-ups (slow in a VM).
fn pin_client_and_server(postmaster: u32, server_cpu: usize) -> std::io::Result<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus <= server_cpu {
        return Ok(format!("not pinned ({cpus} CPU)"));
    }
    let mut server = vec![postmaster as libc::pid_t];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            server.push(pid);
        }
    }
    for pid in &server {
        pin(*pid, server_cpu)?;
    }
    pin(0, 0)?;
    Ok(if server_cpu == 0 {
        "client and server pinned to CPU 0 (`--cpu same`)".to_owned()
    } else {
        format!("client pinned to CPU 0, the server to CPU {server_cpu} (`--cpu split`)")
    })
}

/// Runs a workload once; `true` for the warm-up. Returns the checksum, and the time when the
/// client measured it itself.
pub type RunFn<'a> = Box<dyn FnMut(bool) -> Result<(i64, Option<Duration>)> + 'a>;

/// One client's way of running one workload variant.
pub struct Entry<'a> {
    pub client: Client,
    /// How this client runs this workload, when it differs from its general protocol notes.
    pub how: String,
    /// The runtime it runs on: the run's own, or the extra multi-thread one.
    pub rt: Rt,
    /// Runs the workload once; `true` for the warm-up. Returns the checksum, and the time
    /// when the client measured it itself (psycopg's subprocess).
    pub run: RunFn<'a>,
}

impl<'a> Entry<'a> {
    pub fn new(
        client: Client,
        how: impl Into<String>,
        mut run: impl FnMut(bool) -> Result<i64> + 'a,
    ) -> Entry<'a> {
        Entry {
            client,
            how: how.into(),
            rt: Rt::Main,
            run: Box::new(move |warm| run(warm).map(|sum| (sum, None))),
        }
    }

    /// Marks an entry as one of the multi-thread runtime rows.
    pub fn on_multi(self) -> Entry<'a> {
        Entry {
            rt: Rt::Multi,
            ..self
        }
    }

    /// An entry whose runs measure their own time.
    pub fn timed(
        client: Client,
        how: impl Into<String>,
        mut run: impl FnMut(bool) -> Result<(i64, Duration)> + 'a,
    ) -> Entry<'a> {
        Entry {
            client,
            how: how.into(),
            rt: Rt::Main,
            run: Box::new(move |warm| run(warm).map(|(sum, t)| (sum, Some(t)))),
        }
    }
}

/// A workload variant: what the table shows in one row group.
pub struct Variant<'a> {
    pub id: &'static str,
    pub title: String,
    /// What one measured run is, e.g. "100000 round trips".
    pub unit: String,
    /// SQL run (untimed) before every run, e.g. a TRUNCATE.
    pub reset: Option<&'static str>,
    pub entries: Vec<Entry<'a>>,
    /// Clients that cannot run it, and why.
    pub missing: Vec<(Client, String)>,
    /// For a stream (W9): the rows and bytes one run receives, for rows/s and MB/s.
    pub volume: Option<Volume>,
}

/// What one run of a streaming workload (W9) moves, measured once before the runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// Rows in the stream.
    pub rows: u64,
    /// The stream's bytes (XLogData payloads) as every client but C receives it.
    pub bytes: u64,
    /// What those bytes are, e.g. "pgoutput, binary".
    pub what: String,
    /// The bytes the C baseline receives (W9b: test_decoding text, not pgoutput), and what.
    pub c_bytes: u64,
    pub c_what: String,
}

impl Volume {
    /// The bytes `client` receives in one run.
    pub fn bytes_of(&self, client: Client) -> u64 {
        if client == Client::C {
            self.c_bytes
        } else {
            self.bytes
        }
    }
}

/// What was measured for one client on one variant.
#[derive(Clone, Debug)]
pub struct Measured {
    pub client: Client,
    pub rt: Rt,
    pub how: String,
    pub times: Vec<Duration>,
    pub error: Option<String>,
    pub checksum: Option<i64>,
}

impl Measured {
    /// The client's name, and the runtime for a multi-thread runtime row.
    pub fn label(&self) -> String {
        match self.rt {
            Rt::Main => self.client.name().to_owned(),
            Rt::Multi => format!("{} (multi-thread runtime)", self.client.name()),
        }
    }

    pub fn median(&self) -> Option<Duration> {
        if self.times.is_empty() {
            return None;
        }
        let mut t = self.times.clone();
        t.sort();
        let n = t.len();
        Some(if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2
        })
    }

    pub fn min_max(&self) -> Option<(Duration, Duration)> {
        Some((*self.times.iter().min()?, *self.times.iter().max()?))
    }
}

pub struct VariantResult {
    pub id: &'static str,
    pub title: String,
    pub unit: String,
    pub measured: Vec<Measured>,
    pub missing: Vec<(Client, String)>,
    pub checksum_note: Option<String>,
    pub volume: Option<Volume>,
}

impl VariantResult {
    pub fn c_median(&self) -> Option<Duration> {
        self.measured
            .iter()
            .find(|m| m.client == Client::C)
            .and_then(Measured::median)
    }
}

fn run_variant(admin: &mut pqlib::Connection, variant: Variant<'_>, reps: usize) -> VariantResult {
    let Variant {
        id,
        title,
        unit,
        reset,
        mut entries,
        missing,
        volume,
    } = variant;
    eprintln!("== {id}: {title} ({unit})");
    let mut measured: Vec<Measured> = entries
        .iter()
        .map(|e| Measured {
            client: e.client,
            rt: e.rt,
            how: e.how.clone(),
            times: Vec::new(),
            error: None,
            checksum: None,
        })
        .collect();
    let reset_table = |admin: &mut pqlib::Connection| -> Result<()> {
        if let Some(sql) = reset {
            admin.batch_execute(sql)?;
        }
        Ok(())
    };
    // Warm-up: one run each (smaller where a run is long), not measured.
    for (entry, m) in entries.iter_mut().zip(&mut measured) {
        let started = Instant::now();
        let outcome = reset_table(admin).and_then(|()| (entry.run)(true));
        match outcome {
            Ok(_) => eprintln!(
                "   warm-up {:<15} {:>9.1} ms",
                m.label(),
                ms(started.elapsed())
            ),
            Err(e) => {
                eprintln!("   warm-up {:<15} FAILED: {e}", m.label());
                m.error = Some(e.to_string());
            }
        }
    }
    let count = entries.len();
    for rep in 0..reps {
        // Interleaved, and rotated: rep k starts with client k, so that no client always runs
        // right after the same neighbour (e.g. after psycopg's process and server backend exit).
        for k in 0..count {
            let i = (rep + k) % count;
            let (entry, m) = (&mut entries[i], &mut measured[i]);
            if m.error.is_some() {
                continue;
            }
            std::thread::sleep(SETTLE);
            if let Err(e) = reset_table(admin) {
                m.error = Some(format!("reset: {e}"));
                continue;
            }
            let started = Instant::now();
            let outcome = (entry.run)(false);
            let elapsed = started.elapsed();
            match outcome {
                Ok((sum, own)) => {
                    m.times.push(own.unwrap_or(elapsed));
                    if m.checksum.is_some_and(|c| c != sum) {
                        m.error = Some(format!(
                            "checksum changed between runs: {:?} then {sum}",
                            m.checksum
                        ));
                    }
                    m.checksum = Some(sum);
                }
                Err(e) => {
                    eprintln!("   rep {rep} {:<15} FAILED: {e}", m.label());
                    m.error = Some(e.to_string());
                }
            }
        }
        eprint!("   rep {}/{reps} done\r", rep + 1);
    }
    drop(entries);
    let c_sum = measured
        .iter()
        .find(|m| m.client == Client::C)
        .and_then(|m| m.checksum);
    let mut checksum_note = None;
    if let Some(c_sum) = c_sum {
        let wrong: Vec<String> = measured
            .iter()
            .filter(|m| m.checksum.is_some_and(|s| s != c_sum))
            .map(|m| format!("{} = {}", m.label(), m.checksum.unwrap_or_default()))
            .collect();
        if !wrong.is_empty() {
            checksum_note = Some(format!(
                "checksums differ from C's {c_sum}: {}",
                wrong.join(", ")
            ));
        }
    }
    let c = measured
        .iter()
        .find(|m| m.client == Client::C)
        .and_then(Measured::median);
    for m in &measured {
        match (m.median(), &m.error) {
            (_, Some(e)) => eprintln!("   {:<15} error: {e}", m.label()),
            (Some(t), None) => eprintln!(
                "   {:<15} {:>9.1} ms  {}",
                m.label(),
                ms(t),
                c.map(|c| format!("{:.2}x", t.as_secs_f64() / c.as_secs_f64()))
                    .unwrap_or_default()
            ),
            (None, None) => {}
        }
    }
    if let Some(note) = &checksum_note {
        eprintln!("   WARNING: {note}");
    }
    VariantResult {
        id,
        title,
        unit,
        measured,
        missing,
        checksum_note,
        volume,
    }
}

/// A pause before each measured run, for the previous run's server-side work (a backend
/// exiting, a TRUNCATE) to finish.
const SETTLE: Duration = Duration::from_millis(30);

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `pgbench -i` for W2 against the server.
fn pgbench_init(server: &Server, scale: u32) -> Result<()> {
    let bin = server
        .cluster
        .as_ref()
        .map(|c| c.bin_dir().join("pgbench"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pgbench"));
    let started = Instant::now();
    let status = Command::new(&bin)
        .args(["-i", "-q", "--unlogged-tables", "-s", &scale.to_string()])
        .arg(&server.conninfo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !status.success() {
        return Err(format!("{} -i failed: {status}", bin.display()).into());
    }
    eprintln!(
        "pgbench -i -s {scale}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let opts = Opts::parse()?;
    let sizes = Sizes::new(opts.quick);
    let started = Instant::now();
    // Before the harness pins itself: the CPUs a program that nobody pinned may use.
    let unpinned = Affinity::current()?;
    let server = start_server(&opts)?;
    eprintln!("server: {} ({})", server.conninfo, server.transport);
    let pinning = match (&server.cluster, opts.cpu.as_str()) {
        (None, _) => "not pinned (DATABASE_URL)".to_owned(),
        (Some(_), "none") => "not pinned (`--cpu none`)".to_owned(),
        (Some(cluster), mode) => {
            pin_client_and_server(cluster.pid(), usize::from(mode == "split"))?
        }
    };
    let pinned = pinning.contains("pinned to");
    eprintln!("cpu: {pinning}");
    // W8's PgBouncer runs where the server runs (started after the harness pinned itself, it
    // would inherit the client's CPU).
    let server_cpu = pinned.then(|| usize::from(opts.cpu == "split"));
    let bouncer = if opts.wants("W8") {
        start_bouncer(server.cluster.as_ref(), &opts, server_cpu)
    } else {
        Err("not run".to_owned())
    };
    let bouncer_conninfo = bouncer.as_ref().map_err(Clone::clone).map(|b| {
        if opts.tcp {
            b.tcp_conninfo()
        } else {
            b.conninfo()
        }
    });
    let mut admin = pqlib::Connection::connect(&server.conninfo)?;

    let python = if opts.skip_python {
        Err("skipped (--no-python)".to_owned())
    } else {
        psycopg::Python::find()
    };
    match &python {
        Ok(py) => eprintln!("psycopg: {}", py.describe()),
        Err(why) => eprintln!("psycopg: missing: {why}"),
    }

    // Pinned to one CPU, the async clients get a current-thread runtime: their futures and
    // connection tasks run on the measuring thread. A multi-thread runtime there (even with
    // one worker) makes every await a wakeup of another thread on the same CPU, which measures
    // the scheduler rather than the client (W1 with pqlib::tokio: 2.1x C instead of 1.4x).
    let runtime_kind = opts
        .runtime
        .clone()
        .unwrap_or_else(|| if pinned { "current" } else { "multi" }.to_owned());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (runtime, runtime_desc) = if runtime_kind == "current" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        (rt, "tokio current-thread runtime".to_owned())
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?;
        (
            rt,
            format!("tokio multi-thread runtime with {workers} worker(s)"),
        )
    };

    // The multi-thread runtime rows (W1 and W7b): what `#[tokio::main]` gives a program on
    // this machine, next to the current-thread rows, in the same run. Its workers get the
    // affinity the harness had before it pinned itself (so on 2 CPUs: 2 workers, free to run
    // on either CPU), and each measured run is a task spawned on it, as a request handler is.
    // The server stays where it is for every row (pinned to CPU 0 with `--cpu same`), so the
    // C baseline and these rows meet the same server.
    let unpin_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wanted = opts.wants("W1") || opts.wants("W7");
    let multi = if runtime_kind == "current" && !opts.no_multi && wanted {
        let failed = unpin_failed.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(unpinned.count())
            .on_thread_start(move || {
                if unpinned.apply().is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .enable_all()
            .build()?;
        Some(rt)
    } else {
        None
    };
    let multi_desc = match &multi {
        Some(_) => format!(
            "tokio multi-thread runtime with {} worker(s) (as `#[tokio::main]` builds it), \
             its workers not pinned, each measured run a task spawned on it",
            unpinned.count()
        ),
        None if opts.no_multi => "not run (`--no-multi`)".to_owned(),
        None if !wanted => "not run (neither W1 nor W7 runs)".to_owned(),
        None => format!("not run: the main runtime is already the {runtime_desc}"),
    };

    let mut env = env_info::EnvInfo::collect(&mut admin, &server, &opts, &sizes)?;
    env.python = python.as_ref().ok().map(|py| py.describe().to_owned());
    env.pinning = format!("{pinning}; {runtime_desc}");
    env.multi = multi_desc;
    env.main_runtime = runtime_kind.clone();
    let data = workloads::Data::new(&sizes);
    workloads::prepare_tables(&mut admin, &sizes)?;
    let pgbench = if opts.wants("W2") || opts.wants("W8") {
        pgbench_init(&server, sizes.pgbench_scale).map_err(|e| e.to_string())
    } else {
        Err("not run".into())
    };
    admin.batch_execute("VACUUM ANALYZE")?;
    admin.batch_execute("CHECKPOINT")?;

    let ctx = workloads::Ctx {
        conninfo: &server.conninfo,
        sizes,
        data: &data,
        rt: &runtime,
        multi: multi.as_ref(),
        python: python.as_ref().ok(),
        pgbench_error: pgbench.as_ref().err().cloned(),
        bouncer: bouncer_conninfo,
        pg_bin: server.cluster.as_ref().map(|c| c.bin_dir().to_path_buf()),
    };
    let mut results = Vec::new();
    for build in workloads::ALL {
        let (id, make) = build;
        if !opts.wants(id) {
            continue;
        }
        for mut variant in make(&ctx)? {
            variant.entries.retain(|e| opts.wants_client(e.client));
            results.push(run_variant(&mut admin, variant, opts.reps));
        }
    }
    if opts.wants("W9") {
        // An abandoned logical slot keeps its WAL (and catalog rows) forever.
        workloads::w9_cleanup(&mut admin)?;
    }
    env.elapsed = started.elapsed();
    if unpin_failed.load(std::sync::atomic::Ordering::Relaxed) {
        env.notes.push(
            "the multi-thread runtime's workers could not be unpinned (sched_setaffinity \
             failed): its rows ran on the harness's CPU"
                .to_owned(),
        );
    }
    env.load_end = env_info::load_average();
    if let Err(why) = &python {
        env.notes.push(format!("psycopg 3: missing ({why})"));
    }
    match &bouncer {
        Ok(b) => env.notes.push(format!(
            "W8b/W8d: through PgBouncer {} in transaction mode, pool_size 4, in front of the \
             same server, pinned with it",
            b.version()
        )),
        Err(why) if opts.wants("W8") => {
            env.notes.push(format!("W8b/W8d: skipped ({why})"));
        }
        Err(_) => {}
    }
    let report = report::Report {
        env: &env,
        results: &results,
    };
    std::fs::create_dir_all(&opts.out)?;
    let md = report.markdown();
    std::fs::write(opts.out.join("benchmarks.md"), &md)?;
    std::fs::write(opts.out.join("benchmarks.json"), report.json())?;
    report.svg(&opts.out.join("benchmarks.svg"))?;
    println!("{md}");
    eprintln!(
        "wrote {}/benchmarks.{{md,json,svg}} in {:.0} s",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    let failures = report.failures();
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    let verdict = report.verdict();
    drop(ctx);
    drop(multi);
    drop(admin);
    if let Ok(bouncer) = bouncer {
        bouncer.stop()?;
    }
    if let Some(cluster) = server.cluster {
        cluster.stop()?;
    }
    enforce(opts.enforce_goals, verdict)
}

/// With `--enforce-goals`, a failed client or a missed goal is an error (exit status 1);
/// without it, the report shows them and the run succeeds.
fn enforce(enforce_goals: bool, verdict: std::result::Result<(), String>) -> Result<()> {
    match verdict {
        Err(wrong) if enforce_goals => {
            Err(format!("--enforce-goals: the run does not meet its goals:\n{wrong}").into())
        }
        _ => Ok(()),
    }
}
