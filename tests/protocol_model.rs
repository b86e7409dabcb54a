//! The seeded model-based concurrency test of the protocol-state invariant (DESIGN.md):
//! every request gets exactly its own answer, whatever it carries, whichever API sent it,
//! however many tasks share the connection and whenever a caller gives up.
//!
//! Every request carries a unique tag (`{seed}-{task}-{n}`) that comes back in its answer
//! (rows, COPY data, notices, notifications, rows written and read back), and every answer is
//! checked against its own request. An error is accepted only where the model says one may
//! come: the one the request asks for (a division by zero, a COPY sent through `query`), a
//! cancel that overlapped the request, a transaction some other task had open on the shared
//! connection (`in_failed_sql_transaction`), a backend the model terminated (`Closed`). A
//! request dropped by a fault (a tiny timeout, a `select!` against a timer, a single poll)
//! has no answer to check; what comes after it still must be right.
//!
//! Three models: K tasks sharing one async `Client` (with kills and reconnects), the same
//! requests over a deadpool pool (a checkout per request), and blocking `Connection`s, one per
//! thread, with pipelines, leaked guards and cancels from another thread.
//!
//! `PQLIB_MODEL_SEED` replays a run (printed at the start and in every failure, with the
//! last events before it); `PQLIB_MODEL_REQUESTS` sets the number of requests (default 2000
//! for the shared client; the pool and the blocking model run half as many each).
//! `scripts/model-test.sh` runs it long over many seeds.

mod common;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Rng;
use futures_util::FutureExt;
use pqlib::error::{ErrorKind, SqlState};
use pqlib::tokio::{AsyncMessage, Client};
use pqlib::types::{ToSql, Type};

// ---------------------------------------------------------------------------------------------
// Seeds, randomness, history.

impl Rng {
    /// A generator of its own for task `task`.
    fn fork(seed: u64, what: u64, task: u64) -> Rng {
        let mut r = Rng::new(seed ^ what.wrapping_mul(0xA24B_AED4_963E_E407));
        for _ in 0..=task {
            r.next();
        }
        Rng::new(r.next() ^ task)
    }
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("PQLIB_MODEL_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.expect("PQLIB_MODEL_SEED is a number")
        }
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let mut r = Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32);
            r.next() % 1_000_000_000
        }
    })
}

fn requests() -> usize {
    std::env::var("PQLIB_MODEL_REQUESTS")
        .ok()
        .map(|n| n.trim().parse().expect("PQLIB_MODEL_REQUESTS is a number"))
        .unwrap_or(2000)
}

/// The last events of a run (every model's tasks write here), for the failure report.
struct History {
    model: &'static str,
    started: Instant,
    events: Mutex<VecDeque<String>>,
    stop: AtomicBool,
}

const HISTORY_LINES: usize = 400;

impl History {
    fn new(model: &'static str) -> History {
        History {
            model,
            started: Instant::now(),
            events: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
        }
    }

    fn log(&self, line: String) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == HISTORY_LINES {
            events.pop_front();
        }
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        events.push_back(format!("{ms:9.1} ms  {line}"));
    }

    /// Reports a violation of the model and panics (ends the run).
    fn fail(&self, who: &str, message: &str) -> ! {
        self.stop.store(true, SeqCst);
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<&String> = events.iter().filter(|e| e.contains(who)).collect();
        let mut report = format!(
            "\nMODEL VIOLATION in the {} model, {who}: {message}\nreplay with \
             PQLIB_MODEL_SEED={} PQLIB_MODEL_REQUESTS={} cargo test --test protocol_model\n\
             --- the last events of {who} ---\n",
            self.model,
            seed(),
            requests()
        );
        for e in mine.iter().rev().take(40).rev() {
            report.push_str(e);
            report.push('\n');
        }
        report.push_str(&format!(
            "--- driver: {} ---\n",
            DRIVER_DEBUG.lock().unwrap()
        ));
        report.push_str("--- the last events of every task ---\n");
        for e in events.iter().rev().take(120).rev() {
            report.push_str(e);
            report.push('\n');
        }
        panic!("{report}");
    }
}

// ---------------------------------------------------------------------------------------------
// Schema and SQL shared by the models.

/// `tag` and 1..=$2, one row each.
const SQL_ROWS: &str = "SELECT $1::text AS tag, g FROM generate_series(1, $2::int4) g";
/// One row: the tag and a number.
const SQL_ITEM: &str = "SELECT $1::text AS tag, $2::int4 AS i";
/// A division by zero, after the tag is known.
const SQL_DIV: &str = "SELECT $1::text AS tag, 1 / ($2::int4 - $2::int4) AS i";
/// A statement with sleep, for cancels.
const SQL_SLEEP: &str = "SELECT $1::text AS tag FROM pg_sleep($2::float8)";
/// The count and the sum of `n` of the rows with a tag.
const SQL_READ_BACK: &str =
    "SELECT count(*)::int8, coalesce(sum(n), 0)::int8 FROM model_rows WHERE tag = $1";
const COPY_IN_SQL: &str = "COPY model_rows (tag, n) FROM STDIN";

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut conn = pqlib::Connection::connect(&common::conninfo()).expect("connecting");
        conn.batch_execute("CREATE TABLE IF NOT EXISTS model_rows (tag text NOT NULL, n int4)")
            .expect("creating model_rows");
    });
}

/// A number from the tag, for answers that carry no text (row counts).
fn tag_number(tag: &str) -> i32 {
    let mut h: u32 = 2166136261;
    for b in tag.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    1 + (h % 97) as i32
}

/// Checks rows of `SQL_ROWS`: `n` rows, each with `tag` and g = 1..=n.
fn check_rows(rows: &pqlib::Rows, tag: &str, n: i32) -> Result<(), String> {
    if rows.len() != n as usize {
        return Err(format!("{} rows, expected {n}", rows.len()));
    }
    for (i, row) in rows.iter().enumerate() {
        check_row(&row, tag, i as i32 + 1)?;
    }
    Ok(())
}

fn check_row(row: &pqlib::Row<'_>, tag: &str, i: i32) -> Result<(), String> {
    let got: Result<(&str, i32), pqlib::Error> = (|| Ok((row.try_get(0)?, row.try_get(1)?)))();
    match got {
        Ok((t, g)) if t == tag && g == i => Ok(()),
        Ok((t, g)) => Err(format!(
            "row ({t:?}, {g}) where ({tag:?}, {i}) was expected"
        )),
        Err(e) => Err(format!(
            "a row that is not (text, int4) where ({tag:?}, {i}) was expected: {e}"
        )),
    }
}

fn check_owned_row(row: &pqlib::OwnedRow, tag: &str, i: i32) -> Result<(), String> {
    let got: Result<(&str, i32), pqlib::Error> = (|| Ok((row.try_get(0)?, row.try_get(1)?)))();
    match got {
        Ok((t, g)) if t == tag && g == i => Ok(()),
        Ok((t, g)) => Err(format!(
            "row ({t:?}, {g}) where ({tag:?}, {i}) was expected"
        )),
        Err(e) => Err(format!(
            "a row that is not (text, int4) where ({tag:?}, {i}) was expected: {e}"
        )),
    }
}

/// COPY text rows `tag\tg` for g = 1..=n.
fn copy_lines(tag: &str, n: i32) -> String {
    (1..=n).map(|g| format!("{tag}\t{g}\n")).collect()
}

/// Checks COPY OUT text against `copy_lines(tag, n)`: all of it, or (`prefix`) a start of it
/// made of whole rows.
fn check_copy_text(data: &[u8], tag: &str, n: i32, prefix: bool) -> Result<(), String> {
    let expected = copy_lines(tag, n);
    let ok = if prefix {
        expected.as_bytes().starts_with(data) && (data.is_empty() || data.ends_with(b"\n"))
    } else {
        data == expected.as_bytes()
    };
    if ok {
        Ok(())
    } else {
        let shown = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
        Err(format!(
            "COPY OUT gave {} bytes starting {shown:?}; expected {} rows of {tag:?}{}",
            data.len(),
            n,
            if prefix { " (a prefix)" } else { "" }
        ))
    }
}

/// An error the model expects from a request.
#[derive(Clone, Copy, Debug)]
enum Exp {
    Db(&'static SqlState),
    Kind(ErrorKind),
}

impl Exp {
    fn matches(&self, e: &pqlib::Error) -> bool {
        match self {
            Exp::Db(code) => e.code() == Some(*code),
            Exp::Kind(kind) => e.kind() == *kind,
        }
    }
}

const DIV: Exp = Exp::Db(&SqlState::DIVISION_BY_ZERO);
const BAD_INPUT: Exp = Exp::Kind(ErrorKind::BadInput);

// ---------------------------------------------------------------------------------------------
// The async models.

/// How long any single await may take before the run counts as hung.
const HANG: Duration = Duration::from_secs(60);

/// A batch's results through `stream()`: those handed out, and how the stream ended (`Err`
/// inside: the error that was its last item; `Err` outside: an item came after it).
async fn stream_batch(
    batch: pqlib::tokio::Pipeline<'_>,
) -> (Vec<pqlib::Rows>, Result<pqlib::Result<()>, String>) {
    let mut stream = match batch.stream() {
        Ok(stream) => stream,
        Err(e) => return (Vec::new(), Ok(Err(e))),
    };
    let mut handed = Vec::new();
    while let Some(item) = stream.next_result().await {
        match item {
            Ok(rows) => handed.push(rows),
            Err(e) => {
                let end = match stream.next_result().await {
                    None => Ok(Err(e)),
                    Some(_) => Err(format!("a streamed batch went on after its error: {e}")),
                };
                return (handed, end);
            }
        }
    }
    (handed, Ok(Ok(())))
}

async fn within<F: Future>(what: &str, fut: F) -> Result<F::Output, String> {
    tokio::time::timeout(HANG, fut)
        .await
        .map_err(|_| format!("{what} did not finish within {HANG:?} (a hang)"))
}

/// One connection's life as the model sees it.
struct Epoch {
    n: u64,
    pid: i32,
    /// Set before the model terminates this backend: from then on `Closed` is an answer.
    killed: AtomicBool,
    /// The backend has exited.
    terminated: AtomicBool,
    cancels_started: AtomicU64,
    cancels_active: AtomicU64,
    /// Changes whenever a transaction on this connection starts or ends.
    txn_seq: AtomicU64,
    txn_active: AtomicBool,
    /// Requests that may leave a server error behind (a transaction then fails).
    risky_started: AtomicU64,
    risky_active: AtomicU64,
}

impl Epoch {
    fn new(n: u64, pid: i32) -> Epoch {
        Epoch {
            n,
            pid,
            killed: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
            cancels_started: AtomicU64::new(0),
            cancels_active: AtomicU64::new(0),
            txn_seq: AtomicU64::new(0),
            txn_active: AtomicBool::new(false),
            risky_started: AtomicU64::new(0),
            risky_active: AtomicU64::new(0),
        }
    }

    fn snap(&self) -> Snap {
        Snap {
            cancels_started: self.cancels_started.load(SeqCst),
            cancel_active: self.cancels_active.load(SeqCst) > 0,
            txn_seq: self.txn_seq.load(SeqCst),
            txn_active: self.txn_active.load(SeqCst),
            risky_started: self.risky_started.load(SeqCst),
            risky_active: self.risky_active.load(SeqCst) > 0,
        }
    }
}

/// What was going on on the connection when a request started.
#[derive(Clone, Copy, Debug)]
struct Snap {
    cancels_started: u64,
    cancel_active: bool,
    txn_seq: u64,
    txn_active: bool,
    risky_started: u64,
    risky_active: bool,
}

/// Counts a request as risky while it lives.
struct Risk(Arc<Epoch>);

impl Risk {
    fn new(epoch: &Arc<Epoch>) -> Risk {
        epoch.risky_started.fetch_add(1, SeqCst);
        epoch.risky_active.fetch_add(1, SeqCst);
        Risk(epoch.clone())
    }
}

impl Drop for Risk {
    fn drop(&mut self) {
        self.0.risky_active.fetch_sub(1, SeqCst);
    }
}

/// Notices and notifications that reached the shared client's connection task.
#[derive(Default)]
struct Messages {
    notices: Mutex<HashSet<String>>,
    payloads: Mutex<HashSet<String>>,
}

impl Messages {
    fn has_notice(&self, text: &str) -> bool {
        self.notices.lock().unwrap().contains(text)
    }

    fn has_payload(&self, text: &str) -> bool {
        self.payloads.lock().unwrap().contains(text)
    }
}

/// How a request's answer turned out, when it was acceptable.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    /// The connection is gone (the model killed it): reconnect.
    Closed,
}

type Outcome = Result<Verdict, String>;

/// What a request runs against.
struct Ctx<'a> {
    client: &'a Client,
    epoch: Arc<Epoch>,
    snap: Snap,
    tag: String,
    /// Notices and notifications are observable (the shared client's own connection task).
    messages: Option<&'a Messages>,
}

impl Ctx<'_> {
    fn cancel_overlap(&self) -> bool {
        self.snap.cancel_active
            || self.epoch.cancels_started.load(SeqCst) > self.snap.cancels_started
    }

    fn txn_overlap(&self) -> bool {
        self.snap.txn_active || self.epoch.txn_seq.load(SeqCst) != self.snap.txn_seq
    }

    /// Whether `e` is an acceptable answer here; `expected` are the errors the request asks for.
    fn judge(&self, e: &pqlib::Error, expected: &[Exp]) -> Outcome {
        if e.is_closed() {
            return if self.epoch.killed.load(SeqCst) {
                Ok(Verdict::Closed)
            } else {
                Err(format!(
                    "a Closed error on a connection nobody killed: {e} ({e:?})"
                ))
            };
        }
        if expected.iter().any(|x| x.matches(e)) {
            return Ok(Verdict::Done);
        }
        if e.code() == Some(&SqlState::QUERY_CANCELED) && self.cancel_overlap() {
            return Ok(Verdict::Done);
        }
        if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) && self.txn_overlap() {
            return Ok(Verdict::Done);
        }
        Err(format!(
            "unexpected error (kind {:?}, code {:?}), expected one of {expected:?}: {e}",
            e.kind(),
            e.code().map(|c| c.code())
        ))
    }
}

/// Runs `fut`; an error answer ends the request with the model's verdict on it.
macro_rules! attempt {
    ($ctx:expr, $what:expr, $fut:expr) => {
        attempt!($ctx, $what, $fut, [])
    };
    ($ctx:expr, $what:expr, $fut:expr, [$($exp:expr),*]) => {
        match within($what, $fut).await? {
            Ok(value) => value,
            Err(e) => return $ctx.judge(&e, &[$($exp),*]),
        }
    };
}

/// Runs `fut`, which must fail with one of the expected errors (or an error the model allows).
macro_rules! refused {
    ($ctx:expr, $what:expr, $fut:expr, [$($exp:expr),*]) => {
        match within($what, $fut).await? {
            Ok(_) => return Err(format!("{} succeeded; it must fail", $what)),
            Err(e) => return $ctx.judge(&e, &[$($exp),*]),
        }
    };
}

fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(message()) }
}

/// A way to give up on a request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// `tokio::time::timeout` with this many microseconds.
    Timeout(u64),
    /// `select!` against a timer of this many microseconds.
    Select(u64),
    /// Polled once, then dropped.
    PollOnce,
}

impl Fault {
    fn random(rng: &mut Rng) -> Fault {
        match rng.weighted(&[80, 8, 6, 6]) {
            0 => Fault::None,
            1 => Fault::Timeout(rng.below(4000)),
            2 => Fault::Select(rng.below(4000)),
            _ => Fault::PollOnce,
        }
    }

    /// Runs `fut` under the fault: `None` if it was dropped before it finished.
    async fn apply<F: Future>(self, fut: F) -> Option<F::Output> {
        match self {
            Fault::None => Some(fut.await),
            Fault::Timeout(us) => tokio::time::timeout(Duration::from_micros(us), fut)
                .await
                .ok(),
            Fault::Select(us) => {
                tokio::select! {
                    out = fut => Some(out),
                    _ = tokio::time::sleep(Duration::from_micros(us)) => None,
                }
            }
            Fault::PollOnce => fut.now_or_never(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum QueryApi {
    Query,
    QueryOne,
    QueryOpt,
    Execute,
    Prepared,
}

#[derive(Clone, Copy, Debug)]
enum SimpleKind {
    One,
    Many,
    CopyOut,
    CopyIn,
    Notice,
    Notify,
    Empty,
    Error,
}

/// What the text of a `simple_query` request does.
#[derive(Clone, Copy, Debug)]
enum SqKind {
    /// The tag and g = 1..=n as rows, then a `VALUES` row of the tag and a NULL.
    Rows(i32),
    /// `SET application_name` to the tag, then `SHOW` it.
    Show,
    Empty,
    /// A tagged SELECT, a division by zero, a SELECT that never runs.
    Error,
    /// A COPY OUT between two SELECTs: ended and refused.
    CopyOut,
    /// A COPY IN after a SELECT: aborted and refused.
    CopyIn,
}

impl SqKind {
    fn random(rng: &mut Rng) -> SqKind {
        match rng.weighted(&[40, 15, 10, 15, 10, 10]) {
            0 => SqKind::Rows(rng.below(50) as i32),
            1 => SqKind::Show,
            2 => SqKind::Empty,
            3 => SqKind::Error,
            4 => SqKind::CopyOut,
            _ => SqKind::CopyIn,
        }
    }

    fn sql(self, tag: &str) -> String {
        match self {
            SqKind::Rows(n) => format!(
                "SELECT '{tag}' AS tag, g FROM generate_series(1, {n}) g; VALUES ('{tag}', NULL)"
            ),
            SqKind::Show => format!("SET application_name = '{tag}'; SHOW application_name"),
            SqKind::Empty => String::new(),
            SqKind::Error => format!("SELECT '{tag}'; SELECT 1/0; SELECT 3"),
            SqKind::CopyOut => format!(
                "SELECT '{tag}'; COPY (SELECT '{tag}', g FROM generate_series(1, 2000) g) TO \
                 STDOUT; SELECT 2"
            ),
            SqKind::CopyIn => format!("SELECT '{tag}'; {COPY_IN_SQL}"),
        }
    }

    /// The error the text must end with, if any.
    fn error(self) -> Option<Exp> {
        match self {
            SqKind::Error => Some(DIV),
            SqKind::CopyOut | SqKind::CopyIn => Some(BAD_INPUT),
            SqKind::Rows(_) | SqKind::Show | SqKind::Empty => None,
        }
    }
}

/// Checks `simple_query`'s messages for the text of `kind` with `tag`, line by line.
fn check_simple_query(
    messages: &[pqlib::SimpleQueryMessage],
    kind: SqKind,
    tag: &str,
) -> Result<(), String> {
    use pqlib::SimpleQueryMessage as M;
    let got: Vec<String> = messages
        .iter()
        .map(|message| match message {
            M::RowDescription(columns) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                format!("desc {}", names.join(","))
            }
            M::Row(row) => {
                let values: Vec<String> = (0..row.len())
                    .map(|i| match row.try_get(i) {
                        Ok(Some(value)) => value.to_owned(),
                        Ok(None) => "NULL".to_owned(),
                        Err(e) => format!("<{e}>"),
                    })
                    .collect();
                format!("row {}", values.join("|"))
            }
            M::CommandComplete(n) => format!("complete {n}"),
            other => format!("unknown {other:?}"),
        })
        .collect();
    let want: Vec<String> = match kind {
        SqKind::Rows(n) => {
            let mut want = vec!["desc tag,g".to_owned()];
            want.extend((1..=n).map(|g| format!("row {tag}|{g}")));
            want.push(format!("complete {n}"));
            want.push("desc column1,column2".to_owned());
            want.push(format!("row {tag}|NULL"));
            want.push("complete 1".to_owned());
            want
        }
        SqKind::Show => vec![
            "complete 0".to_owned(),
            "desc application_name".to_owned(),
            format!("row {tag}"),
            "complete 0".to_owned(),
        ],
        SqKind::Empty => Vec::new(),
        SqKind::Error | SqKind::CopyOut | SqKind::CopyIn => {
            return Err(format!("simple_query({kind:?}) succeeded; it must fail"));
        }
    };
    ensure(got == want, || {
        format!("simple_query({kind:?}) answered {got:?}, expected {want:?}")
    })
}

#[derive(Clone, Copy, Debug)]
enum CopyApi {
    Query,
    QueryTyped,
    Execute,
    QueryOne,
    QueryRaw,
    Prepared,
    Batch,
}

#[derive(Clone, Copy, Debug)]
enum TxnEnd {
    Commit,
    Rollback,
    Drop,
}

/// One request of the async models.
#[derive(Clone, Debug)]
enum Req {
    Query(QueryApi, i32),
    Typed(i32),
    Stream {
        rows: i32,
        keep_chunks: Option<u64>,
    },
    Batch {
        items: i32,
        error_at: Option<i32>,
        copy_at: Option<i32>,
        /// Results taken from `stream()` rather than `run()`.
        streamed: bool,
    },
    Simple(SimpleKind),
    SimpleQuery(SqKind),
    CopyIn {
        rows: i32,
        chunks: u64,
        abandon: bool,
    },
    /// With `pause`, a COPY of more than the stream's channel and the socket hold, whose
    /// consumer stops after its first chunk (for `pause` ms) while the other tasks queue
    /// their requests behind it: the connection task must hold reading back, and the
    /// requests queued meanwhile must still get their own answers.
    CopyOut {
        rows: i32,
        keep_chunks: Option<u64>,
        pause: Option<u64>,
    },
    CopyThrough(CopyApi),
    Error(u64),
    Empty(u64),
    Cancel {
        delay_us: u64,
        sleep_ms: u64,
    },
    Txn {
        end: TxnEnd,
        error: bool,
        savepoint: Option<bool>,
    },
    /// A transaction in which a portal (`bind`) of `rows` tagged rows is fetched `step` at a
    /// time, fetch number `fault_at` under `fault`; the portal dropped before the transaction's
    /// statements (its CLOSE checked in `pg_cursors`) or kept past its end.
    Portal {
        rows: i32,
        step: i32,
        fault_at: i32,
        fault: Fault,
        drop_early: bool,
        end: TxnEnd,
    },
    /// A transaction from `build_transaction()` at an isolation level, whose `start()` runs
    /// under `fault`: dropped, the session must be outside any transaction afterwards.
    BuiltTxn {
        level: u64,
        fault: Fault,
        end: TxnEnd,
        error: bool,
    },
    Kill,
}

/// The isolation levels `BuiltTxn` draws from, with what `SHOW transaction_isolation` says.
const LEVELS: [(pqlib::IsolationLevel, &str); 4] = [
    (pqlib::IsolationLevel::ReadUncommitted, "read uncommitted"),
    (pqlib::IsolationLevel::ReadCommitted, "read committed"),
    (pqlib::IsolationLevel::RepeatableRead, "repeatable read"),
    (pqlib::IsolationLevel::Serializable, "serializable"),
];

/// How a transaction request begins and what it does before its usual statements.
#[derive(Clone, Copy, Debug)]
enum TxnHow {
    Plain,
    Built {
        level: u64,
        fault: Fault,
    },
    Portal {
        rows: i32,
        step: i32,
        fault_at: i32,
        fault: Fault,
        drop_early: bool,
    },
}

impl Req {
    fn random(rng: &mut Rng, pooled: bool) -> Req {
        let kill_weight = if pooled { 1 } else { 2 };
        match rng.weighted(&[30, 8, 8, 8, 8, 7, 6, 6, 6, 3, 3, 5, 7, 4, 3, kill_weight]) {
            0 => {
                let api = [
                    QueryApi::Query,
                    QueryApi::QueryOne,
                    QueryApi::QueryOpt,
                    QueryApi::Execute,
                    QueryApi::Prepared,
                ][rng.below(5) as usize];
                let rows = match api {
                    QueryApi::Query => rng.below(5) as i32,
                    QueryApi::QueryOpt => rng.below(2) as i32,
                    _ => 1,
                };
                Req::Query(api, rows)
            }
            1 => Req::Typed(rng.below(1000) as i32),
            2 => Req::Stream {
                rows: rng.range(1, 3000) as i32,
                keep_chunks: rng.chance(40).then(|| rng.below(3)),
            },
            3 => {
                let items = rng.range(1, 8) as i32;
                Req::Batch {
                    items,
                    error_at: rng.chance(20).then(|| rng.below(items as u64) as i32),
                    copy_at: rng.chance(15).then(|| rng.below(items as u64) as i32),
                    streamed: rng.chance(50),
                }
            }
            4 => Req::Simple(
                [
                    SimpleKind::One,
                    SimpleKind::Many,
                    SimpleKind::CopyOut,
                    SimpleKind::CopyIn,
                    SimpleKind::Notice,
                    SimpleKind::Notify,
                    SimpleKind::Empty,
                    SimpleKind::Error,
                ][rng.below(8) as usize],
            ),
            5 => Req::CopyIn {
                rows: rng.range(1, 500) as i32,
                chunks: rng.range(1, 5),
                abandon: rng.chance(15),
            },
            6 => {
                let pause = rng.chance(10).then(|| rng.range(2, 20));
                Req::CopyOut {
                    // ≈ 1.5–2.5 MB with a pause: more than 16 chunks of 64 KiB and the socket.
                    rows: if pause.is_some() {
                        rng.range(100_000, 160_000) as i32
                    } else {
                        rng.range(1, 3000) as i32
                    },
                    // Paused ones are dropped (if at all) after the pause, with the channel full.
                    keep_chunks: rng.chance(30).then(|| {
                        if pause.is_some() {
                            rng.range(2, 24)
                        } else {
                            rng.below(2)
                        }
                    }),
                    pause,
                }
            }
            7 => Req::CopyThrough(
                [
                    CopyApi::Query,
                    CopyApi::QueryTyped,
                    CopyApi::Execute,
                    CopyApi::QueryOne,
                    CopyApi::QueryRaw,
                    CopyApi::Prepared,
                    CopyApi::Batch,
                ][rng.below(7) as usize],
            ),
            8 => Req::Error(rng.below(3)),
            9 => Req::Empty(rng.below(3)),
            10 => Req::Cancel {
                delay_us: rng.below(30_000),
                sleep_ms: rng.range(1, 40),
            },
            11 => Req::Txn {
                end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
                error: rng.chance(20),
                savepoint: rng.chance(30).then(|| rng.chance(50)),
            },
            12 => Req::SimpleQuery(SqKind::random(rng)),
            13 => {
                let rows = rng.range(0, 40) as i32;
                let step = rng.range(1, 12) as i32;
                Req::Portal {
                    rows,
                    step,
                    fault_at: rng.below((rows / step + 2) as u64) as i32,
                    fault: Fault::random(rng),
                    drop_early: rng.chance(50),
                    end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
                }
            }
            14 if !pooled => Req::BuiltTxn {
                level: rng.below(LEVELS.len() as u64),
                fault: Fault::random(rng),
                end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
                error: rng.chance(20),
            },
            // A pooled object has no `build_transaction` (it hands out `&Client`).
            14 => Req::Txn {
                end: TxnEnd::Commit,
                error: false,
                savepoint: None,
            },
            _ => Req::Kill,
        }
    }

    /// Whether a fault may drop this request (transactions, kills and cancels run to the end;
    /// portals and built transactions apply their faults to one step inside).
    fn droppable(&self) -> bool {
        !matches!(
            self,
            Req::Txn { .. }
                | Req::Portal { .. }
                | Req::BuiltTxn { .. }
                | Req::Kill
                | Req::Cancel { .. }
        )
    }

    /// Whether the request is a transaction (one at a time on the shared client).
    fn transaction(&self) -> bool {
        matches!(
            self,
            Req::Txn { .. } | Req::Portal { .. } | Req::BuiltTxn { .. }
        )
    }

    /// Whether the request may leave a server error behind in a transaction.
    fn risky(&self) -> bool {
        matches!(
            self,
            Req::Batch {
                error_at: Some(_),
                ..
            } | Req::Simple(SimpleKind::CopyIn | SimpleKind::Error)
                | Req::SimpleQuery(SqKind::CopyIn | SqKind::Error)
                | Req::CopyIn { abandon: true, .. }
                | Req::Error(_)
        )
    }
}

/// The kinds of request to draw from (`PQLIB_MODEL_ONLY`, a comma-separated list of name
/// prefixes such as `Kill,CopyOut,Query`), for narrowing a failure down; all by default.
fn only() -> &'static [String] {
    static ONLY: OnceLock<Vec<String>> = OnceLock::new();
    ONLY.get_or_init(|| {
        std::env::var("PQLIB_MODEL_ONLY")
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn random_request(rng: &mut Rng, pooled: bool) -> Req {
    loop {
        let req = Req::random(rng, pooled);
        let name = format!("{req:?}");
        if only().is_empty() || only().iter().any(|p| name.starts_with(p.as_str())) {
            return req;
        }
    }
}

/// Runs one (non-transaction, non-kill) request and checks its answer.
async fn run_request(ctx: &Ctx<'_>, req: &Req, rng: &mut Rng) -> Outcome {
    let client = ctx.client;
    let tag = ctx.tag.as_str();
    match req {
        Req::Query(api, rows) => {
            let rows = *rows;
            match api {
                QueryApi::Query => {
                    let got = attempt!(ctx, "query", client.query(SQL_ROWS, &[&tag, &rows]));
                    check_rows(&got, tag, rows)?;
                }
                QueryApi::QueryOne => {
                    let row =
                        attempt!(ctx, "query_one", client.query_one(SQL_ROWS, &[&tag, &1i32]));
                    check_owned_row(&row, tag, 1)?;
                }
                QueryApi::QueryOpt => {
                    let row =
                        attempt!(ctx, "query_opt", client.query_opt(SQL_ROWS, &[&tag, &rows]));
                    match (row, rows) {
                        (None, 0) => {}
                        (Some(row), 1) => check_owned_row(&row, tag, 1)?,
                        (row, _) => {
                            return Err(format!(
                                "query_opt of {rows} rows answered {:?}",
                                row.map(|_| "a row")
                            ));
                        }
                    }
                }
                QueryApi::Execute => {
                    let n = tag_number(tag);
                    let count = attempt!(
                        ctx,
                        "execute",
                        client.execute("SELECT g FROM generate_series(1, $1::int4) g", &[&n])
                    );
                    ensure(count == n as u64, || {
                        format!("execute affected {count} rows, expected {n}")
                    })?;
                }
                QueryApi::Prepared => {
                    let sql = format!("SELECT $1::text AS tag, $2::int4 AS i -- v{}", rng.below(4));
                    let statement = attempt!(ctx, "prepare", client.prepare(&sql));
                    let i = rng.below(1000) as i32;
                    let row = attempt!(
                        ctx,
                        "query_one(prepared)",
                        client.query_one(&statement, &[&tag, &i])
                    );
                    check_owned_row(&row, tag, i)?;
                }
            }
        }
        Req::Typed(i) => {
            let rows = attempt!(
                ctx,
                "query_typed",
                client.query_typed(
                    "SELECT $1 AS tag, $2 AS i",
                    &[(&tag, Type::TEXT), (i, Type::INT4)]
                )
            );
            ensure(rows.len() == 1, || {
                format!("query_typed gave {} rows", rows.len())
            })?;
            check_row(&rows.get(0).unwrap(), tag, *i)?;
        }
        Req::Stream { rows, keep_chunks } => {
            let params: [&(dyn ToSql + Sync); 2] = [&tag, rows];
            let mut stream = attempt!(ctx, "query_raw", client.query_raw(SQL_ROWS, params));
            let mut next = 1;
            let mut chunks = 0;
            loop {
                if keep_chunks.is_some_and(|k| chunks >= k) {
                    // Dropped half way: the connection task discards the rest.
                    return Ok(Verdict::Done);
                }
                match within("a stream chunk", stream.next_chunk()).await? {
                    None => break,
                    Some(Err(e)) => return ctx.judge(&e, &[]),
                    Some(Ok(chunk)) => {
                        chunks += 1;
                        for row in chunk.iter() {
                            check_row(&row, tag, next)?;
                            next += 1;
                        }
                    }
                }
            }
            ensure(next - 1 == *rows, || {
                format!("the stream gave {} rows of {rows}", next - 1)
            })?;
            ensure(stream.rows_affected() == Some(*rows as u64), || {
                format!("the stream's rows_affected is {:?}", stream.rows_affected())
            })?;
        }
        Req::Batch {
            items,
            error_at,
            copy_at,
            streamed,
        } => {
            let mut batch = client.pipeline();
            for i in 0..*items {
                if *copy_at == Some(i) {
                    match within(
                        "queuing a COPY in a batch",
                        batch.query("COPY model_rows TO STDOUT", &[]),
                    )
                    .await?
                    {
                        Ok(()) => return Err("a COPY was queued in a batch".into()),
                        Err(e) if BAD_INPUT.matches(&e) => {}
                        Err(e) => return ctx.judge(&e, &[]),
                    }
                }
                let sql = if *error_at == Some(i) {
                    SQL_DIV
                } else {
                    SQL_ITEM
                };
                attempt!(ctx, "queuing in a batch", batch.query(sql, &[&tag, &i]));
            }
            let results = if *streamed {
                let (handed, end) = within("a streamed batch", stream_batch(batch)).await?;
                // Whatever came before the end: the first statements' results, in order.
                for (i, rows) in handed.iter().enumerate() {
                    ensure(rows.len() == 1, || {
                        format!("streamed batch item {i} has {} rows", rows.len())
                    })?;
                    check_row(&rows.get(0).unwrap(), tag, i as i32)?;
                }
                match (end?, error_at) {
                    (Ok(()), None) => handed,
                    (Ok(()), Some(_)) => {
                        return Err("a streamed batch with an error succeeded".into());
                    }
                    (Err(e), Some(at)) if DIV.matches(&e) => {
                        ensure(handed.len() == *at as usize, || {
                            format!(
                                "a streamed batch failing at item {at} handed out {} results",
                                handed.len()
                            )
                        })?;
                        return ctx.judge(&e, &[DIV]);
                    }
                    (Err(e), _) => return ctx.judge(&e, &[]),
                }
            } else if error_at.is_some() {
                refused!(ctx, "a batch with an error", batch.run(), [DIV]);
            } else {
                attempt!(ctx, "a batch", batch.run())
            };
            ensure(results.len() == *items as usize, || {
                format!("a batch of {items} gave {} results", results.len())
            })?;
            for (i, rows) in results.iter().enumerate() {
                ensure(rows.len() == 1, || {
                    format!("batch item {i} has {} rows", rows.len())
                })?;
                check_row(&rows.get(0).unwrap(), tag, i as i32)?;
            }
        }
        Req::Simple(kind) => match kind {
            SimpleKind::One => attempt!(ctx, "batch_execute", client.batch_execute("SELECT 1")),
            SimpleKind::Many => attempt!(
                ctx,
                "batch_execute",
                client.batch_execute("SELECT 1; SELECT 2, 3; VALUES (4)")
            ),
            SimpleKind::CopyOut => {
                let sql = format!("SELECT 1; COPY (SELECT '{tag}') TO STDOUT; SELECT 2");
                refused!(
                    ctx,
                    "batch_execute with COPY OUT",
                    client.batch_execute(&sql),
                    [BAD_INPUT]
                );
            }
            SimpleKind::CopyIn => {
                let sql = format!("SELECT '{tag}'; {COPY_IN_SQL}");
                refused!(
                    ctx,
                    "batch_execute with COPY IN",
                    client.batch_execute(&sql),
                    [BAD_INPUT]
                );
            }
            SimpleKind::Notice => {
                let text = format!("model-notice {tag}");
                let sql = format!("DO $$BEGIN RAISE NOTICE '{text}'; END$$");
                attempt!(ctx, "batch_execute(notice)", client.batch_execute(&sql));
                if let Some(messages) = ctx.messages {
                    // Notices are not transactional: a DO that ran raised it.
                    if !wait_for(|| messages.has_notice(&text)).await
                        && !ctx.epoch.killed.load(SeqCst)
                    {
                        return Err(format!("the notice {text:?} never arrived"));
                    }
                }
            }
            SimpleKind::Notify => {
                let sql = format!("LISTEN model_chan; NOTIFY model_chan, '{tag}'");
                attempt!(ctx, "batch_execute(notify)", client.batch_execute(&sql));
                if let Some(messages) = ctx.messages {
                    // Inside another task's transaction it comes at commit, or never.
                    let found = if ctx.txn_overlap() {
                        messages.has_payload(tag)
                    } else {
                        wait_for(|| messages.has_payload(tag)).await
                    };
                    if !found && !ctx.txn_overlap() && !ctx.epoch.killed.load(SeqCst) {
                        return Err(format!("the notification {tag:?} never arrived"));
                    }
                }
            }
            SimpleKind::Empty => attempt!(ctx, "batch_execute(\"\")", client.batch_execute("")),
            SimpleKind::Error => {
                let sql = format!("SELECT '{tag}'; SELECT 1/0; SELECT 3");
                refused!(
                    ctx,
                    "batch_execute with an error",
                    client.batch_execute(&sql),
                    [DIV]
                );
            }
        },
        Req::SimpleQuery(kind) => {
            let sql = kind.sql(tag);
            match kind.error() {
                Some(exp) => refused!(ctx, "simple_query", client.simple_query(&sql), [exp]),
                None => {
                    let messages = attempt!(ctx, "simple_query", client.simple_query(&sql));
                    check_simple_query(&messages, *kind, tag)?;
                }
            }
        }
        Req::CopyIn {
            rows,
            chunks,
            abandon,
        } => {
            let data = copy_lines(tag, *rows).into_bytes();
            let mut sink = attempt!(ctx, "copy_in", client.copy_in(COPY_IN_SQL));
            // Random cut points, not at row boundaries.
            let mut cuts: Vec<usize> = (1..*chunks)
                .map(|_| rng.below(data.len() as u64) as usize)
                .collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut from = 0;
            let sent_all = cuts.len();
            for (k, to) in cuts.into_iter().enumerate() {
                if *abandon && k + 1 == sent_all {
                    break;
                }
                let piece = Bytes::copy_from_slice(&data[from..to]);
                from = to;
                attempt!(ctx, "CopyInSink::send", sink.send(piece));
            }
            let expect = if *abandon {
                drop(sink);
                (0, 0)
            } else {
                let n = attempt!(ctx, "CopyInSink::finish", sink.finish());
                ensure(n == *rows as u64, || {
                    format!("copy_in copied {n} rows of {rows}")
                })?;
                let r = i64::from(*rows);
                (r, r * (r + 1) / 2)
            };
            let row = attempt!(
                ctx,
                "reading copy_in back",
                client.query_one(SQL_READ_BACK, &[&tag])
            );
            let got = read_back(&row)?;
            // Inside another task's transaction that rolled back, the rows are gone again.
            ensure(
                got == expect || (ctx.txn_overlap() && got == (0, 0)),
                || format!("copy_in read back (count, sum) = {got:?}, expected {expect:?}"),
            )?;
        }
        Req::CopyOut {
            rows,
            keep_chunks,
            pause,
        } => {
            let sql =
                format!("COPY (SELECT '{tag}', g FROM generate_series(1, {rows}) g) TO STDOUT");
            let mut stream = attempt!(ctx, "copy_out", client.copy_out(&sql));
            let mut data = Vec::new();
            let mut chunks = 0;
            loop {
                if keep_chunks.is_some_and(|k| chunks >= k) {
                    check_copy_text(&data, tag, *rows, true)?;
                    return Ok(Verdict::Done);
                }
                if let (Some(ms), 1) = (pause, chunks) {
                    // A slow consumer, not a synchronisation: the others run meanwhile.
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                }
                match within("a COPY OUT chunk", stream.next()).await? {
                    None => break,
                    Some(Err(e)) => return ctx.judge(&e, &[]),
                    Some(Ok(chunk)) => {
                        chunks += 1;
                        data.extend_from_slice(&chunk);
                    }
                }
            }
            check_copy_text(&data, tag, *rows, false)?;
        }
        Req::CopyThrough(api) => {
            let sql = "COPY model_rows TO STDOUT";
            match api {
                CopyApi::Query => refused!(ctx, "query(COPY)", client.query(sql, &[]), [BAD_INPUT]),
                CopyApi::QueryTyped => {
                    refused!(
                        ctx,
                        "query_typed(COPY)",
                        client.query_typed(sql, &[]),
                        [BAD_INPUT]
                    )
                }
                CopyApi::Execute => {
                    refused!(ctx, "execute(COPY)", client.execute(sql, &[]), [BAD_INPUT])
                }
                CopyApi::QueryOne => {
                    let sql = format!("COPY (SELECT '{tag}') TO STDOUT");
                    refused!(
                        ctx,
                        "query_one(COPY)",
                        client.query_one(&sql, &[]),
                        [BAD_INPUT]
                    )
                }
                CopyApi::QueryRaw => refused!(
                    ctx,
                    "query_raw(COPY)",
                    client.query_raw(sql, std::iter::empty::<i32>()),
                    [BAD_INPUT]
                ),
                CopyApi::Prepared => {
                    let sql = format!("COPY model_rows FROM STDIN -- {tag}");
                    let statement = attempt!(ctx, "prepare(COPY)", client.prepare(&sql));
                    refused!(
                        ctx,
                        "query(prepared COPY)",
                        client.query(&statement, &[]),
                        [BAD_INPUT]
                    )
                }
                CopyApi::Batch => {
                    let mut batch = client.pipeline();
                    refused!(ctx, "a batch of a COPY", batch.query(sql, &[]), [BAD_INPUT])
                }
            }
        }
        Req::Error(variant) => match variant {
            0 => refused!(
                ctx,
                "query(1/0)",
                client.query(SQL_DIV, &[&tag, &7i32]),
                [DIV]
            ),
            1 => refused!(
                ctx,
                "query_typed(syntax error)",
                client.query_typed("SELEC $1", &[(&tag, Type::TEXT)]),
                [Exp::Db(&SqlState::SYNTAX_ERROR)]
            ),
            _ => refused!(
                ctx,
                "query_one(3 rows)",
                client.query_one(SQL_ROWS, &[&tag, &3i32]),
                [Exp::Kind(ErrorKind::RowCount)]
            ),
        },
        Req::Empty(variant) => {
            let rows = match variant {
                0 => attempt!(ctx, "query(\"\")", client.query("", &[])),
                1 => attempt!(ctx, "query_typed(\"\")", client.query_typed("", &[])),
                _ => attempt!(
                    ctx,
                    "query(\"  -- nothing\")",
                    client.query("  -- nothing", &[])
                ),
            };
            ensure(rows.is_empty(), || {
                format!("an empty query gave {} rows", rows.len())
            })?;
        }
        Req::Cancel { .. }
        | Req::Txn { .. }
        | Req::Portal { .. }
        | Req::BuiltTxn { .. }
        | Req::Kill => unreachable!("run by the task loop"),
    }
    Ok(Verdict::Done)
}

/// Terminates backend `pid` from a connection of its own and waits (at most 10 s) until it
/// has exited (another task may have terminated it already).
fn terminate(pid: i32) -> Result<(), String> {
    let mut control = pqlib::Connection::connect(&common::conninfo()).map_err(|e| e.to_string())?;
    control
        .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: bool = control
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .map_err(|e| e.to_string())?
            .get(0);
        if !alive {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("backend {pid} still there after 10 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (at most 5 s) for a condition, polling.
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A statement that sleeps, with a cancel sent after `delay_us` from this task's side.
async fn run_cancel(ctx: &Ctx<'_>, delay_us: u64, sleep_ms: u64) -> Outcome {
    let token = ctx.client.cancel_token();
    let epoch = ctx.epoch.clone();
    let canceller = async move {
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        epoch.cancels_started.fetch_add(1, SeqCst);
        epoch.cancels_active.fetch_add(1, SeqCst);
        let result = within("cancel_query", token.cancel_query()).await;
        epoch.cancels_active.fetch_sub(1, SeqCst);
        result
    };
    let seconds = sleep_ms as f64 / 1000.0;
    let query = async {
        let row = attempt!(
            ctx,
            "a statement to cancel",
            ctx.client.query_one(SQL_SLEEP, &[&ctx.tag, &seconds])
        );
        let tag: &str = row.try_get(0).map_err(|e| e.to_string())?;
        ensure(tag == ctx.tag, || {
            format!("the cancel target answered {tag:?}")
        })?;
        Ok::<Verdict, String>(Verdict::Done)
    };
    let (outcome, cancelled) = tokio::join!(query, canceller);
    match cancelled? {
        Ok(()) => {}
        // The cancel request itself may fail once the backend is gone.
        Err(e) if ctx.epoch.killed.load(SeqCst) => drop(e),
        Err(e) => return Err(format!("cancel_query failed: {e}")),
    }
    outcome
}

/// Terminates the backend under `ctx` and checks that the next request on it is refused.
async fn run_kill(ctx: &Ctx<'_>) -> Outcome {
    if !ctx.epoch.killed.swap(true, SeqCst) {
        let pid = ctx.epoch.pid;
        within(
            "terminating a backend",
            tokio::task::spawn_blocking(move || terminate(pid)),
        )
        .await?
        .map_err(|e| format!("terminating backend {pid}: {e}"))??;
        ctx.epoch.terminated.store(true, SeqCst);
    } else {
        // Another task is terminating it: wait until it is gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ctx.epoch.terminated.load(SeqCst) {
            if Instant::now() >= deadline {
                return Err("another task's kill did not finish within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let after = within(
        "a query after the kill",
        ctx.client.query_one(SQL_ITEM, &[&ctx.tag, &1i32]),
    )
    .await?;
    match after {
        Ok(row) => {
            let now = ctx
                .client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map(|r| r.get::<_, i32>(0));
            Err(format!(
                "a query on terminated backend {} answered {:?}; the client's backend is now {now:?}",
                ctx.epoch.pid,
                row.try_get::<_, &str>(0)
            ))
        }
        Err(e) => match ctx.judge(&e, &[])? {
            Verdict::Closed => Ok(Verdict::Closed),
            Verdict::Done => Err(format!("a query on a terminated backend failed with {e}")),
        },
    }
}

/// Ends a transaction step on an error: an error the model does not allow fails the run; an
/// allowed one ends the transaction request (`Closed`: the connection is gone).
macro_rules! step_failed {
    ($ctx:expr, $e:expr, [$($exp:expr),*]) => {
        match $ctx.judge(&$e, &[$($exp),*])? {
            Verdict::Closed => return Ok(Err(Verdict::Closed)),
            Verdict::Done => {}
        }
    };
}

/// The transaction request's statements, on a started transaction `$tx` (async or pooled,
/// dereferencing to a `Client`): a tagged row inserted, a tagged query, maybe an error, then
/// commit, rollback or drop. Evaluates to `Some(true)` if committed, `Some(false)` if rolled
/// back, `None` if dropped or if its end failed as the model allows.
macro_rules! transaction_body {
    ($ctx:expr, $tx:expr, $end:expr, $error:expr) => {{
        let ctx: &Ctx<'_> = $ctx;
        let tag = ctx.tag.as_str();
        let tx = $tx;
        let mut failed = false;
        match within(
            "insert in a transaction",
            tx.execute("INSERT INTO model_rows (tag, n) VALUES ($1, 1)", &[&tag]),
        )
        .await?
        {
            Ok(n) => ensure(n == 1, || format!("the insert affected {n} rows"))?,
            Err(e) => {
                step_failed!(ctx, e, []);
                failed = true;
            }
        }
        match within("query in a transaction", tx.query(SQL_ROWS, &[&tag, &2i32])).await? {
            Ok(rows) => check_rows(&rows, tag, 2)?,
            Err(e) => {
                step_failed!(ctx, e, []);
                failed = true;
            }
        }
        if $error {
            match within(
                "an error in a transaction",
                tx.query(SQL_DIV, &[&tag, &1i32]),
            )
            .await?
            {
                Ok(_) => return Err("1/0 succeeded in a transaction".into()),
                Err(e) => step_failed!(ctx, e, [DIV]),
            }
            failed = true;
        }
        match $end {
            TxnEnd::Commit => match within("commit", tx.commit()).await? {
                Ok(()) => Some(true),
                Err(e) => {
                    // "COMMIT rolled the transaction back": only after an error in it, its
                    // own or (on the shared client) another task's.
                    let may_fail = failed
                        || ctx.cancel_overlap()
                        || ctx.epoch.risky_started.load(SeqCst) != ctx.snap.risky_started
                        || ctx.snap.risky_active;
                    if !(e.kind() == ErrorKind::Client && may_fail && failed_before(&e)) {
                        step_failed!(ctx, e, []);
                    }
                    None
                }
            },
            TxnEnd::Rollback => match within("rollback", tx.rollback()).await? {
                Ok(()) => Some(false),
                Err(e) => {
                    step_failed!(ctx, e, []);
                    None
                }
            },
            TxnEnd::Drop => {
                drop(tx);
                None
            }
        }
    }};
}

/// Whether a commit error says that the transaction had already failed.
fn failed_before(e: &pqlib::Error) -> bool {
    e.to_string().contains("rolled the transaction back")
}

fn read_back(row: &pqlib::OwnedRow) -> Result<(i64, i64), String> {
    let got: Result<(i64, i64), pqlib::Error> = (|| Ok((row.try_get(0)?, row.try_get(1)?)))();
    got.map_err(|e| format!("the read-back query answered something else: {e}"))
}

/// Runs a transaction request on the shared client or a pooled one; afterwards its rows are
/// there exactly when the commit succeeded.
async fn run_txn(
    ctx: &Ctx<'_>,
    target: &mut Target,
    end: TxnEnd,
    error: bool,
    savepoint: Option<bool>,
    how: TxnHow,
) -> Outcome {
    let epoch = ctx.epoch.clone();
    epoch.txn_active.store(true, SeqCst);
    epoch.txn_seq.fetch_add(1, SeqCst);
    let outcome = txn_steps(ctx, target, end, error, savepoint, how).await;
    // However the transaction ended, make sure none is left open (a cancel can hit the
    // COMMIT or ROLLBACK itself), then close the window.
    let mut cleaned = false;
    if !epoch.killed.load(SeqCst) {
        for _ in 0..5 {
            match within(
                "ROLLBACK after a transaction",
                ctx.client.batch_execute("ROLLBACK"),
            )
            .await?
            {
                Ok(()) => {
                    cleaned = true;
                    break;
                }
                Err(e) => {
                    if ctx.judge(&e, &[])? == Verdict::Closed {
                        break;
                    }
                }
            }
        }
    }
    epoch.txn_active.store(false, SeqCst);
    epoch.txn_seq.fetch_add(1, SeqCst);
    let (committed, savepoint_kept) = match outcome? {
        Err(verdict) => return Ok(verdict),
        Ok(ended) => ended,
    };
    if !cleaned {
        return Ok(Verdict::Closed);
    }
    // Another task's statement may run in a new transaction by now: a window of its own.
    let check = Ctx {
        client: ctx.client,
        epoch: epoch.clone(),
        snap: epoch.snap(),
        tag: ctx.tag.clone(),
        messages: ctx.messages,
    };
    let tag = ctx.tag.as_str();
    let row = attempt!(
        check,
        "reading a transaction's rows back",
        ctx.client.query_one(SQL_READ_BACK, &[&tag])
    );
    let (count, sum) = read_back(&row)?;
    let expected = match (committed, savepoint_kept) {
        (Some(true), true) => (2, 3),
        (Some(true), false) => (1, 1),
        _ => (0, 0),
    };
    ensure((count, sum) == expected, || {
        format!(
            "after the transaction ({end:?}, committed {committed:?}, savepoint kept \
             {savepoint_kept}) (count, sum) of its rows is {:?}, expected {expected:?}",
            (count, sum)
        )
    })?;
    Ok(Verdict::Done)
}

/// The transaction's statements: `Ok(Ok((committed, savepoint kept)))` when it ended as the
/// model allows, `Ok(Err(verdict))` when an allowed error ended it early.
async fn txn_steps(
    ctx: &Ctx<'_>,
    target: &mut Target,
    end: TxnEnd,
    error: bool,
    savepoint: Option<bool>,
    how: TxnHow,
) -> Result<Result<(Option<bool>, bool), Verdict>, String> {
    let tag = ctx.tag.as_str();
    match target {
        Target::Shared(client) => {
            let begun = match how {
                TxnHow::Built { level, fault } => {
                    let (level, name) = LEVELS[level as usize];
                    let start = client
                        .build_transaction()
                        .isolation_level(level)
                        .read_only(false)
                        .start();
                    match fault
                        .apply(within("BEGIN (build_transaction)", start))
                        .await
                    {
                        None => None,
                        Some(begun) => Some((begun?, Some(name))),
                    }
                }
                _ => Some((within("BEGIN", client.transaction()).await?, None)),
            };
            let Some((begun, level)) = begun else {
                // start() dropped by the fault: whether its BEGIN ran or not, the session
                // must be outside a transaction now (its rollback, if due, is queued).
                return outside_transaction(ctx, ctx.client).await.map(Err);
            };
            let mut tx = match begun {
                Ok(tx) => tx,
                Err(e) => return ctx.judge(&e, &[]).map(Err),
            };
            if let Some(level) = level {
                match within(
                    "SHOW transaction_isolation",
                    tx.query_one("SHOW transaction_isolation", &[]),
                )
                .await?
                {
                    Ok(row) => {
                        let got: String = row.get(0);
                        ensure(got == level, || {
                            format!(
                                "build_transaction asked for {level:?}, the session is at {got:?}"
                            )
                        })?;
                    }
                    Err(e) => step_failed!(ctx, e, []),
                }
            }
            let portal = match portal_steps(ctx, &tx, how).await? {
                Ok(portal) => portal,
                Err(verdict) => return Ok(Err(verdict)),
            };
            let mut kept = false;
            if let Some(keep) = savepoint {
                let sp = match within("SAVEPOINT", tx.transaction()).await? {
                    Ok(sp) => sp,
                    Err(e) => return ctx.judge(&e, &[]).map(Err),
                };
                let params: [&(dyn ToSql + Sync); 1] = [&tag];
                let insert = sp.execute("INSERT INTO model_rows (tag, n) VALUES ($1, 2)", &params);
                if let Err(e) = within("insert in a savepoint", insert).await? {
                    return ctx.judge(&e, &[]).map(Err);
                }
                let done = if keep {
                    within("RELEASE SAVEPOINT", sp.commit()).await?
                } else {
                    within("ROLLBACK TO SAVEPOINT", sp.rollback()).await?
                };
                if let Err(e) = done {
                    return ctx.judge(&e, &[]).map(Err);
                }
                kept = keep;
            }
            let committed = transaction_body!(ctx, tx, end, error);
            // A portal kept past its transaction's end: dropping it now sends nothing.
            drop(portal);
            Ok(Ok((committed, kept)))
        }
        Target::Pooled(object) => {
            let tx = match within("BEGIN", object.transaction()).await? {
                Ok(tx) => tx,
                Err(e) => return ctx.judge(&e, &[]).map(Err),
            };
            let portal = match portal_steps(ctx, &tx, how).await? {
                Ok(portal) => portal,
                Err(verdict) => return Ok(Err(verdict)),
            };
            let committed = transaction_body!(ctx, tx, end, error);
            drop(portal);
            Ok(Ok((committed, false)))
        }
    }
}

/// Two `txid_current()` on `client` must run in two transactions: no transaction block is
/// open (the model holds the transaction slot, so no other task opened one).
async fn outside_transaction(ctx: &Ctx<'_>, client: &Client) -> Outcome {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let row = attempt!(
            ctx,
            "txid_current()",
            client.query_one("SELECT txid_current()", &[])
        );
        ids.push(row.get::<_, i64>(0));
    }
    ensure(ids[0] != ids[1], || {
        format!(
            "a dropped build_transaction().start() left the session in a transaction (txid {})",
            ids[0]
        )
    })?;
    Ok(Verdict::Done)
}

/// The cursor checks of a `Portal` request: its rows fetched `step` at a time, each batch
/// exactly the next rows (tag and numbers); one fetch under a fault, after which the position
/// may have moved by that fetch or not (it was dropped before or after it went out). The
/// portal comes back unless it was dropped early (then its CLOSE is checked); an error the
/// model allows ends the checks (`Ok(Ok(None))`) and the transaction goes on.
async fn portal_steps(
    ctx: &Ctx<'_>,
    tx: &pqlib::tokio::Transaction<'_>,
    how: TxnHow,
) -> Result<Result<Option<pqlib::tokio::Portal>, Verdict>, String> {
    let TxnHow::Portal {
        rows,
        step,
        fault_at,
        fault,
        drop_early,
    } = how
    else {
        return Ok(Ok(None));
    };
    let tag = ctx.tag.as_str();
    macro_rules! allowed {
        ($e:expr) => {
            return match ctx.judge(&$e, &[])? {
                Verdict::Closed => Ok(Err(Verdict::Closed)),
                Verdict::Done => Ok(Ok(None)),
            }
        };
    }
    let portal = match within("bind", tx.bind(SQL_ROWS, &[&tag, &rows])).await? {
        Ok(portal) => portal,
        Err(e) => allowed!(e),
    };
    // The number of the next row, and what a dropped fetch may have taken.
    let mut next = 1;
    let mut maybe_taken = None;
    for i in 0..(rows / step + 4) {
        let fetch = within("query_portal", tx.query_portal(&portal, step));
        let got = if i == fault_at {
            fault.apply(fetch).await
        } else {
            Some(fetch.await)
        };
        let Some(got) = got else {
            maybe_taken = Some(step.min(rows + 1 - next));
            continue;
        };
        let batch = match got? {
            Ok(batch) => batch,
            Err(e) => allowed!(e),
        };
        let first = match batch.iter().next() {
            Some(row) => row.try_get::<_, i32>(1).unwrap_or(-1),
            None => rows + 1,
        };
        match maybe_taken.take() {
            Some(taken) if first == next + taken => next += taken,
            _ => {}
        }
        let want = step.min(rows + 1 - next);
        ensure(batch.len() == want as usize, || {
            format!(
                "fetch {i} of {step} from row {next} of {rows}: {} rows, expected {want}",
                batch.len()
            )
        })?;
        for (k, row) in batch.iter().enumerate() {
            check_row(&row, tag, next + k as i32)?;
        }
        next += want;
        if want == 0 {
            break;
        }
    }
    ensure(next == rows + 1, || {
        format!("the portal's fetches ended at row {next} of {rows}")
    })?;
    if !drop_early {
        return Ok(Ok(Some(portal)));
    }
    drop(portal);
    // The CLOSE was queued on the drop, ahead of this query.
    let open = match within(
        "counting cursors",
        tx.query_one(
            "SELECT count(*) FROM pg_cursors WHERE name LIKE 'pqlib_portal_%'",
            &[],
        ),
    )
    .await?
    {
        Ok(row) => row.get::<_, i64>(0),
        Err(e) => allowed!(e),
    };
    ensure(open == 0, || {
        format!("{open} cursors still open after the portal was dropped")
    })?;
    Ok(Ok(None))
}

/// What a request of the async models runs on.
enum Target {
    Shared(Client),
    Pooled(pqlib::pool::deadpool::Object),
}

impl Target {
    fn client(&self) -> &Client {
        match self {
            Target::Shared(client) => client,
            Target::Pooled(object) => object.client(),
        }
    }
}

/// The shared client of the first model, replaced after the model kills its backend.
struct Slot {
    client: Client,
    epoch: Arc<Epoch>,
}

struct AsyncWorld {
    history: History,
    slot: tokio::sync::Mutex<Slot>,
    messages: Arc<Messages>,
    /// One transaction at a time on the shared client.
    txn_lock: tokio::sync::Mutex<()>,
    pool: Option<pqlib::pool::deadpool::Pool>,
    /// Tells this model's tags and random streams from those of the models running beside
    /// it on the same server (the same tag in two models would mix their rows).
    mode: &'static str,
    stream: u64,
}

/// The prepare policy of connection `n` (a model's `n`th connection or reconnection): each
/// policy in turn, from a point the seed picks, so every run has connections with each.
fn policy_for(n: u64) -> pqlib::PreparePolicy {
    match (seed() % 3 + n) % 3 {
        0 => pqlib::PreparePolicy::Always,
        1 => pqlib::PreparePolicy::Never,
        _ => pqlib::PreparePolicy::AfterRuns(3),
    }
}

/// The test server's config with `policy`.
fn config(policy: pqlib::PreparePolicy) -> pqlib::Config {
    common::config_with(&common::conninfo(), policy)
}

/// The shared client's connection task as it was after its latest poll (`Debug`: requests in
/// flight, COPY state, pipeline mode), printed with a failure: a hang shows where it stopped.
static DRIVER_DEBUG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Connects without holding a non-`Send` future on a worker, and runs the connection task
/// with its notices and notifications going to `messages`.
async fn connect_shared(n: u64, messages: Arc<Messages>) -> Slot {
    let config = config(policy_for(n));
    let handle = tokio::runtime::Handle::current();
    let (client, mut connection) =
        tokio::task::spawn_blocking(move || handle.block_on(pqlib::tokio::connect_config(&config)))
            .await
            .expect("the connecting task")
            .expect("connecting");
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| {
                let polled = connection.poll_message(cx);
                *DRIVER_DEBUG.lock().unwrap() = format!(
                    "{connection:?}, last poll {}",
                    if polled.is_ready() {
                        "ready"
                    } else {
                        "pending"
                    }
                );
                polled
            })
            .await
            {
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    messages
                        .notices
                        .lock()
                        .unwrap()
                        .insert(notice.message().to_owned());
                }
                Some(Ok(AsyncMessage::Notification(n))) => {
                    messages
                        .payloads
                        .lock()
                        .unwrap()
                        .insert(n.payload().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("the backend pid")
        .get(0);
    Slot {
        client,
        epoch: Arc::new(Epoch::new(n, pid)),
    }
}

impl AsyncWorld {
    async fn current(&self) -> (Client, Arc<Epoch>) {
        let slot = self.slot.lock().await;
        (slot.client.clone(), slot.epoch.clone())
    }

    async fn reconnect(&self, dead: u64) {
        let mut slot = self.slot.lock().await;
        if slot.epoch.n == dead {
            self.history.log(format!("reconnect after epoch {dead}"));
            *slot = connect_shared(dead + 1, self.messages.clone()).await;
        }
    }
}

const ASYNC_TASKS: usize = 8;

async fn async_task(world: Arc<AsyncWorld>, task: usize, count: usize) -> usize {
    let pooled = world.pool.is_some();
    let mode = world.mode;
    let who = format!("task {mode}{task} ");
    let mut rng = Rng::fork(seed(), world.stream, task as u64);
    let mut done = 0;
    for n in 0..count {
        if world.history.stop.load(SeqCst) {
            break;
        }
        let tag = format!("{}-{mode}{task}-{n}", seed());
        let req = random_request(&mut rng, pooled);
        let fault = if req.droppable() {
            Fault::random(&mut rng)
        } else {
            Fault::None
        };
        let mut req_rng = Rng::new(rng.next());
        let (mut target, epoch) = match &world.pool {
            None => {
                let (client, epoch) = world.current().await;
                (Target::Shared(client), epoch)
            }
            Some(pool) => {
                let object = match within("pool.get", pool.get()).await {
                    Ok(Ok(object)) => object,
                    Ok(Err(e)) => world.history.fail(&who, &format!("pool.get failed: {e}")),
                    Err(e) => world.history.fail(&who, &e),
                };
                let pid = match within(
                    "the pid",
                    object.client().query_one("SELECT pg_backend_pid()", &[]),
                )
                .await
                {
                    Ok(Ok(row)) => row.get(0),
                    Ok(Err(e)) => world
                        .history
                        .fail(&who, &format!("SELECT pg_backend_pid(): {e}")),
                    Err(e) => world.history.fail(&who, &e),
                };
                (Target::Pooled(object), Arc::new(Epoch::new(0, pid)))
            }
        };
        world.history.log(format!(
            "{who}#{n} epoch {} {req:?} fault {fault:?} tag {tag}",
            epoch.n
        ));
        let _txn_guard = if req.transaction() && !pooled {
            match within("the transaction slot", world.txn_lock.lock()).await {
                Ok(guard) => Some(guard),
                Err(e) => world.history.fail(&who, &e),
            }
        } else {
            None
        };
        let risk = (req.risky() || !matches!(fault, Fault::None)).then(|| Risk::new(&epoch));
        let snap = epoch.snap();
        let client = target.client().clone();
        let ctx = Ctx {
            client: &client,
            epoch: epoch.clone(),
            snap,
            tag: tag.clone(),
            messages: (!pooled).then_some(&*world.messages),
        };
        let outcome = match &req {
            Req::Txn {
                end,
                error,
                savepoint,
            } => Some(run_txn(&ctx, &mut target, *end, *error, *savepoint, TxnHow::Plain).await),
            Req::Portal {
                rows,
                step,
                fault_at,
                fault,
                drop_early,
                end,
            } => {
                let how = TxnHow::Portal {
                    rows: *rows,
                    step: *step,
                    fault_at: *fault_at,
                    fault: *fault,
                    drop_early: *drop_early,
                };
                Some(run_txn(&ctx, &mut target, *end, false, None, how).await)
            }
            Req::BuiltTxn {
                level,
                fault,
                end,
                error,
            } => {
                let how = TxnHow::Built {
                    level: *level,
                    fault: *fault,
                };
                Some(run_txn(&ctx, &mut target, *end, *error, None, how).await)
            }
            Req::Kill => Some(run_kill(&ctx).await),
            Req::Cancel { delay_us, sleep_ms } => {
                Some(run_cancel(&ctx, *delay_us, *sleep_ms).await)
            }
            _ => fault.apply(run_request(&ctx, &req, &mut req_rng)).await,
        };
        drop(risk);
        match outcome {
            None => world.history.log(format!("{who}#{n} dropped by the fault")),
            Some(Ok(Verdict::Done)) => world.history.log(format!("{who}#{n} ok")),
            Some(Ok(Verdict::Closed)) => {
                world
                    .history
                    .log(format!("{who}#{n} closed (epoch {} killed)", epoch.n));
                if !pooled {
                    world.reconnect(epoch.n).await;
                }
            }
            Some(Err(message)) => world.history.fail(
                &who,
                &format!("request #{n} ({req:?}, tag {tag}): {message}"),
            ),
        }
        done += 1;
    }
    done
}

/// The runtimes the async models run on. Clients drive the connection themselves while they
/// wait (and the connection task does too): on worker threads they race for it, on one
/// thread they take turns with it.
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    MultiThread,
    CurrentThread,
}

fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    match flavor {
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    }
}

fn run_async_model(pooled: bool, total: usize, flavor: Flavor) {
    setup();
    let (model, mode, stream) = match (pooled, flavor) {
        (true, _) => ("async pool", "p", 2),
        (false, Flavor::MultiThread) => ("async shared client", "s", 1),
        (false, Flavor::CurrentThread) => ("async shared client, current-thread runtime", "c", 4),
    };
    eprintln!(
        "protocol_model {model}: PQLIB_MODEL_SEED={} requests={total}",
        seed()
    );
    let started = Instant::now();
    let rt = runtime(flavor);
    let done = rt.block_on(async {
        let messages = Arc::new(Messages::default());
        let slot = connect_shared(0, messages.clone()).await;
        let pool = pooled.then(|| {
            // Every checkout may be another connection, as behind a transaction pooler.
            let config = config(pqlib::PreparePolicy::Never);
            pqlib::pool::deadpool::Pool::builder(pqlib::pool::deadpool::Manager::new(config))
                .max_size(4)
                .runtime(pqlib::pool::deadpool::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .build()
                .expect("the pool")
        });
        let world = Arc::new(AsyncWorld {
            history: History::new(model),
            slot: tokio::sync::Mutex::new(slot),
            messages,
            txn_lock: tokio::sync::Mutex::new(()),
            pool,
            mode,
            stream,
        });
        let per_task = total.div_ceil(ASYNC_TASKS);
        let handles: Vec<_> = (0..ASYNC_TASKS)
            .map(|task| tokio::spawn(async_task(world.clone(), task, per_task)))
            .collect();
        let mut done = 0;
        let mut panic = None;
        for handle in handles {
            match handle.await {
                Ok(n) => done += n,
                Err(e) if e.is_panic() => {
                    world.history.stop.store(true, SeqCst);
                    panic.get_or_insert(e.into_panic());
                }
                Err(e) => panic!("a model task failed: {e}"),
            }
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        done
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    eprintln!(
        "protocol_model {model}: seed {} ran {done} requests in {:.1?}",
        seed(),
        started.elapsed()
    );
}

#[test]
fn async_shared_client_model() {
    run_async_model(false, requests(), Flavor::MultiThread);
}

#[test]
fn async_shared_client_model_on_one_thread() {
    run_async_model(false, requests() / 2, Flavor::CurrentThread);
}

#[test]
fn async_pool_model() {
    run_async_model(true, requests() / 2, Flavor::MultiThread);
}

// ---------------------------------------------------------------------------------------------
// The blocking model: one `Connection` per thread.

/// A blocking connection with what the model knows about it.
struct Blocking {
    conn: pqlib::Connection,
    pid: i32,
    notices: Arc<Mutex<Vec<String>>>,
    st: BState,
}

/// What the model knows about a blocking connection's state.
#[derive(Clone, Copy, Debug, Default)]
struct BState {
    /// The model killed the backend or leaked a guard: the next call must fail with `Closed`.
    dead: bool,
    /// A cancel may hit the statement running now.
    cancelling: bool,
    /// The connection is in a transaction that failed.
    failed_txn: bool,
}

impl Blocking {
    /// Connection `n` of a thread (see [`policy_for`]).
    fn connect(n: u64) -> Result<Blocking, String> {
        let mut conn = config(policy_for(n)).connect().map_err(|e| e.to_string())?;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        conn.set_notice_handler(move |notice| {
            sink.lock().unwrap().push(notice.message().to_owned())
        });
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .map_err(|e| e.to_string())?
            .get(0);
        // The statements pipelines use, prepared and cached ahead (a pipeline prepares new
        // SQL text inside itself, which an aborted segment would refuse).
        conn.query(SQL_ITEM, &[&"warm-up", &0i32])
            .map_err(|e| e.to_string())?;
        let _ = conn.query(SQL_DIV, &[&"warm-up", &0i32]);
        Ok(Blocking {
            conn,
            pid,
            notices,
            st: BState::default(),
        })
    }
}

impl BState {
    fn judge(&self, e: &pqlib::Error, expected: &[Exp]) -> Outcome {
        if e.is_closed() {
            return if self.dead {
                Ok(Verdict::Closed)
            } else {
                Err(format!(
                    "a Closed error on a connection nobody killed: {e} ({e:?})"
                ))
            };
        }
        if expected.iter().any(|x| x.matches(e)) {
            return Ok(Verdict::Done);
        }
        if e.code() == Some(&SqlState::QUERY_CANCELED) && self.cancelling {
            return Ok(Verdict::Done);
        }
        if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) && self.failed_txn {
            return Ok(Verdict::Done);
        }
        Err(format!(
            "unexpected error (kind {:?}, code {:?}), expected one of {expected:?}: {e}",
            e.kind(),
            e.code().map(|c| c.code())
        ))
    }
}

/// `attempt!` for the blocking model.
macro_rules! b_attempt {
    ($b:expr, $call:expr) => {
        b_attempt!($b, $call, [])
    };
    ($b:expr, $call:expr, [$($exp:expr),*]) => {
        match $call {
            Ok(value) => value,
            Err(e) => return $b.judge(&e, &[$($exp),*]),
        }
    };
}

/// `refused!` for the blocking model.
macro_rules! b_refused {
    ($b:expr, $what:expr, $call:expr, [$($exp:expr),*]) => {
        match $call {
            Ok(_) => return Err(format!("{} succeeded; it must fail", $what)),
            Err(e) => return $b.judge(&e, &[$($exp),*]),
        }
    };
}

#[derive(Clone, Copy, Debug)]
enum POp {
    Item(i32),
    Div(i32),
    Typed(i32),
    Prepare(u64),
    Sync,
    CopyQuery,
    CopyTyped,
}

#[derive(Clone, Copy, Debug)]
enum PEnd {
    ReadAll,
    DropAfter(usize),
    Forget(usize),
}

/// One request of the blocking model.
#[derive(Clone, Debug)]
enum BReq {
    Query(QueryApi, i32),
    Typed(i32),
    Stream {
        rows: i32,
        keep: Option<usize>,
        forget: bool,
    },
    Pipeline {
        ops: Vec<POp>,
        end: PEnd,
    },
    Simple(SimpleKind),
    SimpleQuery(SqKind),
    CopyIn {
        rows: i32,
        chunks: u64,
        abandon: bool,
        forget: bool,
    },
    CopyOut {
        rows: i32,
        keep: Option<usize>,
        forget: bool,
    },
    CopyThrough(u64),
    Error(u64),
    Empty(u64),
    Cancel {
        wait_active: bool,
        delay_us: u64,
        sleep_ms: u64,
    },
    Txn {
        end: TxnEnd,
        error: bool,
        savepoint: Option<bool>,
    },
    /// A transaction in which a portal of `rows` tagged rows is fetched `step` at a time.
    Portal {
        rows: i32,
        step: i32,
        drop_early: bool,
        end: TxnEnd,
    },
    /// A transaction from `build_transaction()` at an isolation level (index into `LEVELS`).
    BuiltTxn {
        level: u64,
        end: TxnEnd,
        error: bool,
    },
    Kill,
}

impl BReq {
    fn random(rng: &mut Rng) -> BReq {
        match rng.weighted(&[25, 6, 8, 16, 8, 6, 6, 5, 5, 3, 3, 5, 6, 3, 2, 1]) {
            0 => match Req::random(rng, false) {
                Req::Query(api, rows) => BReq::Query(api, rows),
                _ => BReq::Query(QueryApi::QueryOne, 1),
            },
            1 => BReq::Typed(rng.below(1000) as i32),
            2 => BReq::Stream {
                rows: rng.range(1, 3000) as i32,
                keep: rng.chance(40).then(|| rng.below(50) as usize),
                forget: rng.chance(5),
            },
            3 => {
                let ops = (0..rng.range(1, 10))
                    .map(|k| {
                        let i = k as i32;
                        match rng.weighted(&[40, 8, 15, 8, 20, 4, 4]) {
                            0 => POp::Item(i),
                            1 => POp::Div(i),
                            2 => POp::Typed(i),
                            3 => POp::Prepare(rng.below(4)),
                            4 => POp::Sync,
                            5 => POp::CopyQuery,
                            _ => POp::CopyTyped,
                        }
                    })
                    .collect::<Vec<_>>();
                let end = match rng.weighted(&[80, 12, 8]) {
                    0 => PEnd::ReadAll,
                    1 => PEnd::DropAfter(rng.below(ops.len() as u64 + 1) as usize),
                    _ => PEnd::Forget(rng.below(ops.len() as u64 + 1) as usize),
                };
                BReq::Pipeline { ops, end }
            }
            4 => match Req::random(rng, false) {
                Req::Simple(kind) => BReq::Simple(kind),
                _ => BReq::Simple(SimpleKind::Notify),
            },
            5 => BReq::CopyIn {
                rows: rng.range(1, 500) as i32,
                chunks: rng.range(1, 5),
                abandon: rng.chance(15),
                forget: rng.chance(5),
            },
            6 => BReq::CopyOut {
                rows: rng.range(1, 3000) as i32,
                keep: rng.chance(30).then(|| rng.below(20) as usize),
                forget: rng.chance(5),
            },
            7 => BReq::CopyThrough(rng.below(5)),
            8 => BReq::Error(rng.below(3)),
            9 => BReq::Empty(rng.below(3)),
            10 => BReq::Cancel {
                wait_active: rng.chance(50),
                delay_us: rng.below(30_000),
                sleep_ms: rng.range(1, 40),
            },
            11 => BReq::Txn {
                end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
                error: rng.chance(20),
                savepoint: rng.chance(30).then(|| rng.chance(50)),
            },
            12 => BReq::SimpleQuery(SqKind::random(rng)),
            13 => BReq::Portal {
                rows: rng.range(0, 40) as i32,
                step: rng.range(1, 12) as i32,
                drop_early: rng.chance(50),
                end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
            },
            14 => BReq::BuiltTxn {
                level: rng.below(LEVELS.len() as u64),
                end: [TxnEnd::Commit, TxnEnd::Rollback, TxnEnd::Drop][rng.below(3) as usize],
                error: rng.chance(20),
            },
            _ => BReq::Kill,
        }
    }
}

fn check_pipeline_rows(result: &pqlib::PipelineResult, tag: &str, i: i32) -> Result<(), String> {
    match result {
        pqlib::PipelineResult::Rows(rows) => {
            ensure(rows.len() == 1, || {
                format!("pipeline item {i} has {} rows", rows.len())
            })?;
            check_row(&rows.get(0).unwrap(), tag, i)
        }
        other => Err(format!("pipeline item {i} answered {other:?}")),
    }
}

/// What a queued pipeline operation must answer.
#[derive(Debug)]
enum PExp {
    Rows(i32),
    Prepared,
    Sync,
    Error(Exp),
}

fn run_pipeline(b: &mut Blocking, tag: &str, ops: &[POp], end: PEnd) -> Outcome {
    let st = b.st;
    let dead_after = matches!(end, PEnd::Forget(_));
    let mut pipeline = b_attempt!(st, b.conn.pipeline());
    let mut expected = Vec::new();
    let mut aborted = false;
    let aborted_exp = Exp::Kind(ErrorKind::PipelineAborted);
    for op in ops {
        match *op {
            POp::Item(i) | POp::Div(i) => {
                let div = matches!(op, POp::Div(_));
                let sql = if div { SQL_DIV } else { SQL_ITEM };
                if let Err(e) = pipeline.query(sql, &[&tag, &i]) {
                    return Err(format!("queuing {op:?} failed: {e}"));
                }
                expected.push(match (aborted, div) {
                    (true, _) => PExp::Error(aborted_exp),
                    (false, true) => PExp::Error(DIV),
                    (false, false) => PExp::Rows(i),
                });
                aborted |= div;
            }
            POp::Typed(i) => {
                let queued = pipeline.query_typed(
                    "SELECT $1 AS tag, $2 AS i",
                    &[(&tag, Type::TEXT), (&i, Type::INT4)],
                );
                if let Err(e) = queued {
                    return Err(format!("queuing {op:?} failed: {e}"));
                }
                expected.push(if aborted {
                    PExp::Error(aborted_exp)
                } else {
                    PExp::Rows(i)
                });
            }
            POp::Prepare(v) => {
                let sql = format!("SELECT $1::text AS tag, $2::int4 AS i -- p{v}");
                if let Err(e) = pipeline.prepare(&sql) {
                    return Err(format!("queuing {op:?} failed: {e}"));
                }
                expected.push(if aborted {
                    PExp::Error(aborted_exp)
                } else {
                    PExp::Prepared
                });
            }
            POp::Sync => {
                if let Err(e) = pipeline.sync() {
                    return Err(format!("sync failed: {e}"));
                }
                expected.push(PExp::Sync);
                aborted = false;
            }
            POp::CopyQuery | POp::CopyTyped => {
                let refused = if matches!(op, POp::CopyQuery) {
                    pipeline.query("COPY model_rows TO STDOUT", &[])
                } else {
                    pipeline.query_typed("COPY model_rows TO STDOUT", &[])
                };
                match refused {
                    Ok(()) => return Err(format!("{op:?} was queued in a pipeline")),
                    Err(e) if BAD_INPUT.matches(&e) => {}
                    Err(e) if aborted && aborted_exp.matches(&e) => {}
                    Err(e) => return Err(format!("{op:?} in a pipeline failed with {e}")),
                }
            }
        }
    }
    let read = match end {
        PEnd::ReadAll => expected.len(),
        PEnd::DropAfter(k) | PEnd::Forget(k) => k.min(expected.len()),
    };
    for (n, exp) in expected.iter().take(read).enumerate() {
        let got = match pipeline.next_result() {
            None => return Err(format!("pipeline result {n} ({exp:?}) is missing")),
            Some(got) => got,
        };
        match (exp, got) {
            (PExp::Rows(i), Ok(result)) => check_pipeline_rows(&result, tag, *i)?,
            (PExp::Prepared, Ok(pqlib::PipelineResult::Prepared(_))) => {}
            (PExp::Sync, Ok(pqlib::PipelineResult::Sync)) => {}
            (PExp::Error(x), Err(e)) if x.matches(&e) => {}
            (exp, got) => {
                return Err(format!(
                    "pipeline result {n}: expected {exp:?}, got {got:?}"
                ));
            }
        }
    }
    match end {
        PEnd::ReadAll => {
            if let Some(extra) = pipeline.next_result() {
                return Err(format!("a pipeline result nobody asked for: {extra:?}"));
            }
            b_attempt!(st, pipeline.finish());
        }
        PEnd::DropAfter(_) => drop(pipeline),
        PEnd::Forget(_) => std::mem::forget(pipeline),
    }
    b.st.dead |= dead_after;
    Ok(Verdict::Done)
}

fn copy_error(e: std::io::Error) -> pqlib::Error {
    match e.into_inner().map(|inner| inner.downcast::<pqlib::Error>()) {
        Some(Ok(e)) => *e,
        Some(Err(other)) => panic!("an I/O error that is no pqlib::Error: {other}"),
        None => panic!("an I/O error without a pqlib::Error"),
    }
}

fn run_blocking_request(b: &mut Blocking, req: &BReq, tag: &str, rng: &mut Rng) -> Outcome {
    let st = b.st;
    match req {
        BReq::Query(api, rows) => {
            let rows = *rows;
            match api {
                QueryApi::Query => {
                    let got = b_attempt!(st, b.conn.query(SQL_ROWS, &[&tag, &rows]));
                    check_rows(&got, tag, rows)?;
                }
                QueryApi::QueryOne => {
                    let row = b_attempt!(st, b.conn.query_one(SQL_ROWS, &[&tag, &1i32]));
                    check_owned_row(&row, tag, 1)?;
                }
                QueryApi::QueryOpt => match (
                    b_attempt!(st, b.conn.query_opt(SQL_ROWS, &[&tag, &rows])),
                    rows,
                ) {
                    (None, 0) => {}
                    (Some(row), 1) => check_owned_row(&row, tag, 1)?,
                    (row, _) => {
                        return Err(format!(
                            "query_opt of {rows} rows answered {:?}",
                            row.map(|_| "a row")
                        ));
                    }
                },
                QueryApi::Execute => {
                    let n = tag_number(tag);
                    let count = b_attempt!(
                        st,
                        b.conn
                            .execute("SELECT g FROM generate_series(1, $1::int4) g", &[&n])
                    );
                    ensure(count == n as u64, || {
                        format!("execute affected {count} rows, expected {n}")
                    })?;
                }
                QueryApi::Prepared => {
                    let sql = format!("SELECT $1::text AS tag, $2::int4 AS i -- v{}", rng.below(4));
                    let statement = b_attempt!(st, b.conn.prepare(&sql));
                    let i = rng.below(1000) as i32;
                    let row = b_attempt!(st, b.conn.query_one(&statement, &[&tag, &i]));
                    check_owned_row(&row, tag, i)?;
                }
            }
        }
        BReq::Typed(i) => {
            let rows = b_attempt!(
                st,
                b.conn.query_typed(
                    "SELECT $1 AS tag, $2 AS i",
                    &[(&tag, Type::TEXT), (i, Type::INT4)]
                )
            );
            ensure(rows.len() == 1, || {
                format!("query_typed gave {} rows", rows.len())
            })?;
            check_row(&rows.get(0).unwrap(), tag, *i)?;
        }
        BReq::Stream { rows, keep, forget } => {
            let params: [&(dyn ToSql + Sync); 2] = [&tag, rows];
            let mut stream = b_attempt!(st, b.conn.query_raw(SQL_ROWS, params));
            let mut next = 1;
            loop {
                if keep.is_some_and(|k| next > k as i32) {
                    if *forget {
                        std::mem::forget(stream);
                        b.st.dead = true;
                    }
                    return Ok(Verdict::Done);
                }
                match stream.next_row() {
                    None => break,
                    Some(Err(e)) => return st.judge(&e, &[]),
                    Some(Ok(row)) => {
                        check_row(&row, tag, next)?;
                        next += 1;
                    }
                }
            }
            ensure(next - 1 == *rows, || {
                format!("the stream gave {} rows of {rows}", next - 1)
            })?;
            ensure(stream.rows_affected() == Some(*rows as u64), || {
                format!("the stream's rows_affected is {:?}", stream.rows_affected())
            })?;
        }
        BReq::Pipeline { ops, end } => return run_pipeline(b, tag, ops, *end),
        BReq::Simple(kind) => match kind {
            SimpleKind::One => b_attempt!(st, b.conn.batch_execute("SELECT 1")),
            SimpleKind::Many => b_attempt!(
                st,
                b.conn.batch_execute("SELECT 1; SELECT 2, 3; VALUES (4)")
            ),
            SimpleKind::CopyOut => {
                let sql = format!("SELECT 1; COPY (SELECT '{tag}') TO STDOUT; SELECT 2");
                b_refused!(
                    st,
                    "batch_execute with COPY OUT",
                    b.conn.batch_execute(&sql),
                    [BAD_INPUT]
                );
            }
            SimpleKind::CopyIn => {
                let sql = format!("SELECT '{tag}'; {COPY_IN_SQL}");
                b_refused!(
                    st,
                    "batch_execute with COPY IN",
                    b.conn.batch_execute(&sql),
                    [BAD_INPUT]
                );
            }
            SimpleKind::Notice => {
                let text = format!("model-notice {tag}");
                let sql = format!("DO $$BEGIN RAISE NOTICE '{text}'; END$$");
                b_attempt!(st, b.conn.batch_execute(&sql));
                let seen = b.notices.lock().unwrap().contains(&text);
                ensure(seen, || {
                    format!("the notice {text:?} did not arrive with its statement")
                })?;
            }
            SimpleKind::Notify => {
                let sql = format!("LISTEN model_chan; NOTIFY model_chan, '{tag}'");
                b_attempt!(st, b.conn.batch_execute(&sql));
                let mut found = false;
                for n in b.conn.notifications().timeout_iter(Duration::from_secs(5)) {
                    match n {
                        Ok(n) if n.payload() == tag => {
                            found = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => return st.judge(&e, &[]),
                    }
                }
                ensure(found, || format!("the notification {tag:?} never arrived"))?;
            }
            SimpleKind::Empty => b_attempt!(st, b.conn.batch_execute("")),
            SimpleKind::Error => {
                let sql = format!("SELECT '{tag}'; SELECT 1/0; SELECT 3");
                b_refused!(
                    st,
                    "batch_execute with an error",
                    b.conn.batch_execute(&sql),
                    [DIV]
                );
            }
        },
        BReq::SimpleQuery(kind) => {
            let sql = kind.sql(tag);
            match kind.error() {
                Some(exp) => b_refused!(st, "simple_query", b.conn.simple_query(&sql), [exp]),
                None => {
                    let messages = b_attempt!(st, b.conn.simple_query(&sql));
                    check_simple_query(&messages, *kind, tag)?;
                }
            }
        }
        BReq::CopyIn {
            rows,
            chunks,
            abandon,
            forget,
        } => {
            let data = copy_lines(tag, *rows).into_bytes();
            let mut writer = b_attempt!(st, b.conn.copy_in(COPY_IN_SQL));
            let mut cuts: Vec<usize> = (1..*chunks)
                .map(|_| rng.below(data.len() as u64) as usize)
                .collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut from = 0;
            let last = cuts.len();
            for (k, to) in cuts.into_iter().enumerate() {
                if (*abandon || *forget) && k + 1 == last {
                    break;
                }
                if let Err(e) = writer.write_all(&data[from..to]) {
                    return st.judge(&copy_error(e), &[]);
                }
                from = to;
            }
            let expect = if *forget {
                std::mem::forget(writer);
                b.st.dead = true;
                return Ok(Verdict::Done);
            } else if *abandon {
                drop(writer);
                (0, 0)
            } else {
                let n = b_attempt!(st, writer.finish());
                ensure(n == *rows as u64, || {
                    format!("copy_in copied {n} rows of {rows}")
                })?;
                let r = i64::from(*rows);
                (r, r * (r + 1) / 2)
            };
            let row = b_attempt!(st, b.conn.query_one(SQL_READ_BACK, &[&tag]));
            let got = read_back(&row)?;
            ensure(got == expect, || {
                format!("copy_in read back (count, sum) = {got:?}, expected {expect:?}")
            })?;
        }
        BReq::CopyOut { rows, keep, forget } => {
            let sql =
                format!("COPY (SELECT '{tag}', g FROM generate_series(1, {rows}) g) TO STDOUT");
            let mut reader = b_attempt!(st, b.conn.copy_out(&sql));
            if let Some(k) = keep {
                let mut data = Vec::new();
                let mut ended = false;
                for _ in 0..*k {
                    let chunk = match reader.fill_buf() {
                        Ok(chunk) => chunk.to_vec(),
                        Err(e) => return st.judge(&copy_error(e), &[]),
                    };
                    if chunk.is_empty() {
                        ended = true;
                        break;
                    }
                    reader.consume(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                check_copy_text(&data, tag, *rows, true)?;
                if *forget {
                    std::mem::forget(reader);
                    // A reader that saw the end has already read the COPY's result: the
                    // session is idle, and forgetting the guard leaves nothing behind.
                    // Otherwise the next call finds the COPY still running: Closed.
                    b.st.dead = !ended;
                }
                return Ok(Verdict::Done);
            }
            let mut data = Vec::new();
            if let Err(e) = reader.read_to_end(&mut data) {
                return st.judge(&copy_error(e), &[]);
            }
            drop(reader);
            check_copy_text(&data, tag, *rows, false)?;
        }
        BReq::CopyThrough(api) => {
            let sql = "COPY model_rows TO STDOUT";
            match api {
                0 => b_refused!(st, "query(COPY)", b.conn.query(sql, &[]), [BAD_INPUT]),
                1 => b_refused!(
                    st,
                    "query_typed(COPY)",
                    b.conn.query_typed(sql, &[]),
                    [BAD_INPUT]
                ),
                2 => b_refused!(st, "execute(COPY)", b.conn.execute(sql, &[]), [BAD_INPUT]),
                3 => b_refused!(
                    st,
                    "query_raw(COPY)",
                    b.conn.query_raw(sql, std::iter::empty::<i32>()).map(drop),
                    [BAD_INPUT]
                ),
                _ => {
                    let sql = format!("COPY model_rows FROM STDIN -- {tag}");
                    let statement = b_attempt!(st, b.conn.prepare(&sql));
                    b_refused!(
                        st,
                        "query(prepared COPY)",
                        b.conn.query(&statement, &[]),
                        [BAD_INPUT]
                    );
                }
            }
        }
        BReq::Error(variant) => match variant {
            0 => b_refused!(
                st,
                "query(1/0)",
                b.conn.query(SQL_DIV, &[&tag, &7i32]),
                [DIV]
            ),
            1 => b_refused!(
                st,
                "query_typed(syntax error)",
                b.conn.query_typed("SELEC $1", &[(&tag, Type::TEXT)]),
                [Exp::Db(&SqlState::SYNTAX_ERROR)]
            ),
            _ => b_refused!(
                st,
                "query_one(3 rows)",
                b.conn.query_one(SQL_ROWS, &[&tag, &3i32]),
                [Exp::Kind(ErrorKind::RowCount)]
            ),
        },
        BReq::Empty(variant) => {
            let rows = match variant {
                0 => b_attempt!(st, b.conn.query("", &[])),
                1 => b_attempt!(st, b.conn.query_typed("", &[])),
                _ => b_attempt!(st, b.conn.query("  -- nothing", &[])),
            };
            ensure(rows.is_empty(), || {
                format!("an empty query gave {} rows", rows.len())
            })?;
        }
        BReq::Cancel {
            wait_active,
            delay_us,
            sleep_ms,
        } => {
            let token = b.conn.cancel_token();
            let pid = b.pid;
            let wait_active = *wait_active;
            let delay = Duration::from_micros(*delay_us);
            let canceller = std::thread::spawn(move || -> Result<(), String> {
                if wait_active {
                    let mut observer = pqlib::Connection::connect(&common::conninfo())
                        .map_err(|e| e.to_string())?;
                    common::wait_until_active(&mut observer, pid);
                } else {
                    std::thread::sleep(delay);
                }
                token.cancel_query().map_err(|e| e.to_string())
            });
            // With a wait, the statement outlives the cancel: it must be cancelled.
            let seconds = if wait_active {
                30.0
            } else {
                *sleep_ms as f64 / 1000.0
            };
            b.st.cancelling = true;
            let st = b.st;
            let result = b.conn.query_one(SQL_SLEEP, &[&tag, &seconds]);
            let cancelled = canceller
                .join()
                .map_err(|_| "the canceller panicked".to_string())?;
            cancelled.map_err(|e| format!("cancel_query failed: {e}"))?;
            let outcome = match result {
                Ok(row) if !wait_active => {
                    let got: &str = row.try_get(0).map_err(|e| e.to_string())?;
                    ensure(got == tag, || format!("the cancel target answered {got:?}"))?;
                    Ok(Verdict::Done)
                }
                Ok(_) => Err("a 30 s statement cancelled while active was not cancelled".into()),
                Err(e) => st.judge(&e, &[]),
            };
            b.st.cancelling = false;
            return outcome;
        }
        BReq::Txn {
            end,
            error,
            savepoint,
        } => return run_blocking_txn(b, tag, *end, *error, *savepoint),
        BReq::Portal {
            rows,
            step,
            drop_early,
            end,
        } => return run_blocking_portal(b, tag, *rows, *step, *drop_early, *end),
        BReq::BuiltTxn { level, end, error } => {
            return run_blocking_built(b, tag, *level, *end, *error);
        }
        BReq::Kill => {
            terminate(b.pid)?;
            b.st.dead = true;
        }
    }
    Ok(Verdict::Done)
}

fn run_blocking_txn(
    b: &mut Blocking,
    tag: &str,
    end: TxnEnd,
    error: bool,
    savepoint: Option<bool>,
) -> Outcome {
    let st = b.st;
    let mut tx = b_attempt!(st, b.conn.transaction());
    let mut kept = false;
    if let Some(keep) = savepoint {
        let mut sp = match tx.transaction() {
            Ok(sp) => sp,
            Err(e) => return Err(format!("SAVEPOINT: {e}")),
        };
        if let Err(e) = sp.execute("INSERT INTO model_rows (tag, n) VALUES ($1, 2)", &[&tag]) {
            return Err(format!("insert in a savepoint: {e}"));
        }
        let done = if keep { sp.commit() } else { sp.rollback() };
        done.map_err(|e| format!("ending a savepoint: {e}"))?;
        kept = keep;
    }
    let n = tx
        .execute("INSERT INTO model_rows (tag, n) VALUES ($1, 1)", &[&tag])
        .map_err(|e| format!("insert in a transaction: {e}"))?;
    ensure(n == 1, || format!("the insert affected {n} rows"))?;
    let rows = tx
        .query(SQL_ROWS, &[&tag, &2i32])
        .map_err(|e| format!("query in a transaction: {e}"))?;
    check_rows(&rows, tag, 2)?;
    if error {
        match tx.query(SQL_DIV, &[&tag, &1i32]) {
            Ok(_) => return Err("1/0 succeeded in a transaction".into()),
            Err(e) if DIV.matches(&e) => {}
            Err(e) => return Err(format!("1/0 in a transaction failed with {e}")),
        }
        // The transaction is failed now: everything but its end is refused.
        match tx.query(SQL_ITEM, &[&tag, &1i32]) {
            Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {}
            other => {
                return Err(format!(
                    "a statement in a failed transaction answered {other:?}"
                ));
            }
        }
    }
    let committed = match end {
        TxnEnd::Commit => match (tx.commit(), error) {
            (Ok(()), false) => true,
            (Err(e), true) if e.kind() == ErrorKind::Client && failed_before(&e) => false,
            (other, _) => {
                return Err(format!(
                    "commit (error in the transaction: {error}) answered {other:?}"
                ));
            }
        },
        TxnEnd::Rollback => {
            tx.rollback().map_err(|e| format!("rollback: {e}"))?;
            false
        }
        TxnEnd::Drop => {
            drop(tx);
            false
        }
    };
    let row = b_attempt!(st, b.conn.query_one(SQL_READ_BACK, &[&tag]));
    let got = read_back(&row)?;
    let expected = match (committed, kept) {
        (true, true) => (2, 3),
        (true, false) => (1, 1),
        _ => (0, 0),
    };
    ensure(got == expected, || {
        format!(
            "after the transaction ({end:?}, committed {committed}) (count, sum) of its rows is {got:?}, expected {expected:?}"
        )
    })?;
    Ok(Verdict::Done)
}

/// Ends a blocking transaction request's transaction `tx` as `end` says: whether it committed.
fn end_blocking_txn(tx: pqlib::Transaction<'_>, end: TxnEnd, failed: bool) -> Result<bool, String> {
    Ok(match end {
        TxnEnd::Commit => match (tx.commit(), failed) {
            (Ok(()), false) => true,
            (Err(e), true) if e.kind() == ErrorKind::Client && failed_before(&e) => false,
            (other, _) => {
                return Err(format!(
                    "commit (error in the transaction: {failed}) answered {other:?}"
                ));
            }
        },
        TxnEnd::Rollback => {
            tx.rollback().map_err(|e| format!("rollback: {e}"))?;
            false
        }
        TxnEnd::Drop => {
            drop(tx);
            false
        }
    })
}

fn check_blocking_read_back(b: &mut Blocking, tag: &str, committed: bool) -> Outcome {
    let st = b.st;
    let row = b_attempt!(st, b.conn.query_one(SQL_READ_BACK, &[&tag]));
    let got = read_back(&row)?;
    let expected = if committed { (1, 1) } else { (0, 0) };
    ensure(got == expected, || {
        format!(
            "after the transaction (committed {committed}) (count, sum) of its rows is {got:?}, expected {expected:?}"
        )
    })?;
    Ok(Verdict::Done)
}

fn run_blocking_portal(
    b: &mut Blocking,
    tag: &str,
    rows: i32,
    step: i32,
    drop_early: bool,
    end: TxnEnd,
) -> Outcome {
    let st = b.st;
    let mut tx = b_attempt!(st, b.conn.transaction());
    let portal = tx
        .bind(SQL_ROWS, &[&tag, &rows])
        .map_err(|e| format!("bind: {e}"))?;
    let mut next = 1;
    for _ in 0..(rows / step + 2) {
        let batch = tx
            .query_portal(&portal, step)
            .map_err(|e| format!("query_portal: {e}"))?;
        let want = step.min(rows + 1 - next);
        ensure(batch.len() == want as usize, || {
            format!(
                "a fetch of {step} from row {next} of {rows}: {} rows, expected {want}",
                batch.len()
            )
        })?;
        for (k, row) in batch.iter().enumerate() {
            check_row(&row, tag, next + k as i32)?;
        }
        next += want;
        if want == 0 {
            break;
        }
    }
    ensure(next == rows + 1, || {
        format!("the portal's fetches ended at row {next} of {rows}")
    })?;
    let kept = if drop_early {
        drop(portal);
        let open: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_cursors WHERE name LIKE 'pqlib_portal_%'",
                &[],
            )
            .map_err(|e| format!("counting cursors: {e}"))?
            .get(0);
        ensure(open == 0, || {
            format!("{open} cursors still open after the portal was dropped")
        })?;
        None
    } else {
        Some(portal)
    };
    let n = tx
        .execute("INSERT INTO model_rows (tag, n) VALUES ($1, 1)", &[&tag])
        .map_err(|e| format!("insert in a transaction: {e}"))?;
    ensure(n == 1, || format!("the insert affected {n} rows"))?;
    let committed = end_blocking_txn(tx, end, false)?;
    // Its transaction has ended: dropping the portal now must send nothing (the next
    // statement, the read-back, must find the session in step). Using it in a later
    // transaction does not compile (tests/compile_fail/portal_outlives_transaction.rs).
    drop(kept);
    check_blocking_read_back(b, tag, committed)
}

fn run_blocking_built(
    b: &mut Blocking,
    tag: &str,
    level: u64,
    end: TxnEnd,
    error: bool,
) -> Outcome {
    let st = b.st;
    let (level, name) = LEVELS[level as usize];
    let mut tx = b_attempt!(
        st,
        b.conn
            .build_transaction()
            .isolation_level(level)
            .read_only(false)
            .start()
    );
    let got: String = tx
        .query_one("SHOW transaction_isolation", &[])
        .map_err(|e| format!("SHOW transaction_isolation: {e}"))?
        .get(0);
    ensure(got == name, || {
        format!("build_transaction asked for {name:?}, the session is at {got:?}")
    })?;
    let n = tx
        .execute("INSERT INTO model_rows (tag, n) VALUES ($1, 1)", &[&tag])
        .map_err(|e| format!("insert in a transaction: {e}"))?;
    ensure(n == 1, || format!("the insert affected {n} rows"))?;
    if error {
        match tx.query(SQL_DIV, &[&tag, &1i32]) {
            Ok(_) => return Err("1/0 succeeded in a transaction".into()),
            Err(e) if DIV.matches(&e) => {}
            Err(e) => return Err(format!("1/0 in a transaction failed with {e}")),
        }
    }
    let committed = end_blocking_txn(tx, end, error)?;
    check_blocking_read_back(b, tag, committed)
}

const BLOCKING_THREADS: usize = 4;

fn blocking_thread(history: Arc<History>, thread: usize, count: usize) -> usize {
    let who = format!("thread b{thread} ");
    let mut rng = Rng::fork(seed(), 3, thread as u64);
    let mut connections = thread as u64;
    let mut b = Blocking::connect(connections)
        .unwrap_or_else(|e| history.fail(&who, &format!("connecting: {e}")));
    let mut done = 0;
    for n in 0..count {
        if history.stop.load(SeqCst) {
            break;
        }
        let tag = format!("{}-b{thread}-{n}", seed());
        let req = loop {
            let req = BReq::random(&mut rng);
            let name = format!("{req:?}");
            if only().is_empty() || only().iter().any(|p| name.starts_with(p.as_str())) {
                break req;
            }
        };
        let mut req_rng = Rng::new(rng.next());
        history.log(format!("{who}#{n} {req:?} tag {tag}"));
        match run_blocking_request(&mut b, &req, &tag, &mut req_rng) {
            Ok(_) if b.st.dead => {
                // Killed or a guard leaked: the next call must fail with Closed, never read
                // what was left; then reconnect.
                let after = b.conn.query_one(SQL_ITEM, &[&tag, &1i32]);
                match after {
                    Err(e) if e.is_closed() => {}
                    other => history.fail(
                        &who,
                        &format!("request #{n} ({req:?}): the next call after it answered {other:?}, not Closed"),
                    ),
                }
                history.log(format!("{who}#{n} ok, closed; reconnecting"));
                connections += 1;
                b = Blocking::connect(connections)
                    .unwrap_or_else(|e| history.fail(&who, &format!("reconnecting: {e}")));
            }
            Ok(Verdict::Done) => history.log(format!("{who}#{n} ok")),
            Ok(Verdict::Closed) => history.fail(&who, &format!("request #{n} ({req:?}): closed")),
            Err(message) => history.fail(
                &who,
                &format!("request #{n} ({req:?}, tag {tag}): {message}"),
            ),
        }
        b.st.failed_txn = false;
        done += 1;
    }
    done
}

#[test]
fn blocking_model() {
    setup();
    let total = requests() / 2;
    eprintln!(
        "protocol_model blocking: PQLIB_MODEL_SEED={} requests={total}",
        seed()
    );
    let started = Instant::now();
    let history = Arc::new(History::new("blocking"));
    let per_thread = total.div_ceil(BLOCKING_THREADS);
    let threads: Vec<_> = (0..BLOCKING_THREADS)
        .map(|t| {
            let history = history.clone();
            std::thread::spawn(move || blocking_thread(history, t, per_thread))
        })
        .collect();
    let mut done = 0;
    let mut panic = None;
    for thread in threads {
        match thread.join() {
            Ok(n) => done += n,
            Err(payload) => {
                history.stop.store(true, SeqCst);
                panic.get_or_insert(payload);
            }
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    eprintln!(
        "protocol_model blocking: seed {} ran {done} requests in {:.1?}",
        seed(),
        started.elapsed()
    );
}
