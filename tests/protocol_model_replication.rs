//! The seeded model-based test of replication (issue 18) against the protocol-state
//! invariant (DESIGN.md): every request gets exactly its own answer, and a logical stream
//! delivers every committed change, in commit order, never a rolled-back one, and restarts
//! right after the last *confirmed* commit.
//!
//! A writer (an ordinary `Connection`) commits tagged rows into a table: one row per
//! transaction, several rows in one, or rows it rolls back; the model records what committed,
//! in order. A consumer alternates at random between the blocking and the async replication
//! APIs over one test_decoding slot (`include-xids 0`, `skip-empty-xacts 1`), directly or
//! through a `common::Proxy`. Each session connects, runs tagged commands and SQL (each
//! answer checked against its request, errors only where asked for), starts a stream, reads a
//! random number of messages while the writer goes on, confirms at some COMMITs (and at some
//! of them waits until `pg_replication_slots` shows the confirmation), and ends the stream in
//! a random way: `stop`, drop, a tiny `recv_timeout` then `stop`, `pg_terminate_backend` of
//! the walsender, or a cut of the proxy. Afterwards the connection must answer its own tags
//! (stop, blocking drop) or be `Closed` (async drop, terminate, cut).
//!
//! The invariant checked on every decoded transaction: its tags are exactly those of the
//! next committed transaction the model expects (so nothing rolled back appears, nothing is
//! skipped, the order is the commit order); after a reconnect the stream restarts at the
//! first transaction after the slot's `confirmed_flush_lsn`, which must lie between the last
//! confirmation the server acknowledged (all of them after a clean stop) and the last one
//! sent: nothing confirmed is delivered again, nothing unconfirmed is lost. At the end the
//! stream is read to the end: every committed transaction was seen.
//!
//! `PQLIB_MODEL_SEED` replays a run (printed at the start and in every failure, with the
//! last events); `PQLIB_MODEL_REQUESTS` sets the number of steps (default 5000).

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Rng;
use pqlib::error::ErrorKind;
use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMessage, ReplicationMode, SlotPosition,
    SystemIdentity,
};
use pqlib::tokio::ReplicationClient;
use pqlib::{Error, SimpleQueryMessage};
use tokio::runtime::Runtime;

const SLOT: &str = "model_slot";
const OPTIONS: &[(&str, &str)] = &[("include-xids", "0"), ("skip-empty-xacts", "1")];
/// The bound on every wait for the server (a stream's end, a slot becoming free).
const WAIT: Duration = Duration::from_secs(10);
/// How long one read waits for a message.
const READ_WAIT: Duration = Duration::from_millis(30);
/// The whole test, from outside.
const TEST_LIMIT: Duration = Duration::from_secs(170);

// ---------------------------------------------------------------------------------------------
// Seeds and randomness (as in protocol_model.rs).

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
        .unwrap_or(5000)
}

// ---------------------------------------------------------------------------------------------
// One facade over the blocking and the async replication APIs (the async one driven by a
// current-thread runtime), so that one model drives both.

enum Conn {
    Blocking(ReplicationConnection),
    Async(ReplicationClient),
}

impl Conn {
    fn connect(rt: &Runtime, config: &pqlib::Config, is_async: bool) -> Result<Conn, Error> {
        if is_async {
            rt.block_on(async {
                bounded(ReplicationClient::connect(config, ReplicationMode::Logical)).await
            })
            .map(Conn::Async)
        } else {
            ReplicationConnection::connect(config, ReplicationMode::Logical).map(Conn::Blocking)
        }
    }

    fn api(&self) -> &'static str {
        match self {
            Conn::Blocking(_) => "blocking",
            Conn::Async(_) => "async",
        }
    }

    fn simple_query(&mut self, rt: &Runtime, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        match self {
            Conn::Blocking(c) => c.simple_query(sql),
            Conn::Async(c) => rt.block_on(bounded(c.simple_query(sql))),
        }
    }

    fn identify(&mut self, rt: &Runtime) -> Result<SystemIdentity, Error> {
        match self {
            Conn::Blocking(c) => c.identify_system(),
            Conn::Async(c) => rt.block_on(bounded(c.identify_system())),
        }
    }

    fn read_slot(&mut self, rt: &Runtime, name: &str) -> Result<Option<SlotPosition>, Error> {
        match self {
            Conn::Blocking(c) => c.read_replication_slot(name),
            Conn::Async(c) => rt.block_on(bounded(c.read_replication_slot(name))),
        }
    }

    fn drop_slot(&mut self, rt: &Runtime, name: &str) -> Result<(), Error> {
        match self {
            Conn::Blocking(c) => c.drop_replication_slot(name, false),
            Conn::Async(c) => rt.block_on(bounded(c.drop_replication_slot(name, false))),
        }
    }

    fn start<'a>(&'a mut self, rt: &'a Runtime) -> Result<Stream<'a>, Error> {
        match self {
            Conn::Blocking(c) => c
                .start_logical_replication(SLOT, Lsn::INVALID, OPTIONS)
                .map(Stream::Blocking),
            Conn::Async(c) => rt
                .block_on(bounded(c.start_logical_replication(
                    SLOT,
                    Lsn::INVALID,
                    OPTIONS,
                )))
                .map(|s| Stream::Async(s, rt)),
        }
    }
}

/// An async call bounded by [`WAIT`]: a hang fails the test, naming the seed.
async fn bounded<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout(WAIT, f).await {
        Ok(result) => result,
        Err(_) => panic!(
            "protocol_model_replication FAILED (seed {}): an async call HUNG (no answer within \
             {WAIT:?})",
            seed()
        ),
    }
}

enum Stream<'a> {
    Blocking(pqlib::replication::ReplicationStream<'a>),
    Async(pqlib::tokio::ReplicationStream<'a>, &'a Runtime),
}

impl Stream<'_> {
    fn recv(&mut self, wait: Duration) -> Result<Received, Error> {
        match self {
            Stream::Blocking(s) => s.recv_timeout(wait),
            Stream::Async(s, rt) => {
                match rt.block_on(async { tokio::time::timeout(wait, s.next()).await }) {
                    Err(_) => Ok(Received::TimedOut),
                    Ok(None) => Ok(Received::End),
                    Ok(Some(Ok(message))) => Ok(Received::Message(message)),
                    Ok(Some(Err(e))) => Err(e),
                }
            }
        }
    }

    fn confirm(&mut self, lsn: Lsn) {
        match self {
            Stream::Blocking(s) => s.confirm(lsn),
            Stream::Async(s, _) => s.confirm(lsn),
        }
    }

    fn send_status(&mut self, reply: bool) -> Result<(), Error> {
        match self {
            Stream::Blocking(s) => s.send_status(reply),
            Stream::Async(s, _) => s.send_status(reply),
        }
    }

    fn set_server_timeout(&mut self, timeout: Duration) {
        match self {
            Stream::Blocking(s) => s.set_server_timeout(timeout),
            Stream::Async(s, _) => s.set_server_timeout(timeout),
        }
    }

    fn stop(self) -> Result<(), Error> {
        match self {
            Stream::Blocking(s) => s.stop().map(drop),
            Stream::Async(s, rt) => rt.block_on(bounded(s.stop())).map(drop),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Stop,
    Drop,
    TinyWaitThenStop,
    Terminate,
    Cut,
}

#[derive(Default, Debug)]
struct Stats {
    sessions: usize,
    blocking: usize,
    proxied: usize,
    commands: usize,
    committed_rows: usize,
    rolled_back_rows: usize,
    delivered_txns: usize,
    redelivered_txns: usize,
    confirms: usize,
    acked_confirms: usize,
    ends: Vec<(End, usize)>,
}

struct Model {
    seed: u64,
    rng: Rng,
    events: VecDeque<String>,
    started: Instant,
    writer: pqlib::Connection,
    proxy: common::Proxy,
    conninfo: String,
    tags: u64,
    /// The committed transactions' tags, in commit order.
    committed: Vec<Vec<String>>,
    rolled_back: HashSet<String>,
    /// The end LSN of each committed transaction, once it was delivered.
    ends: Vec<Option<Lsn>>,
    /// The index of the transaction the stream must deliver next.
    next: usize,
    /// The tags of the transaction being decoded.
    in_txn: Option<Vec<String>>,
    /// How many transactions (a prefix) were confirmed, and the last LSN confirmed.
    confirmed: usize,
    confirmed_lsn: Lsn,
    /// How many of those the server showed in `pg_replication_slots`.
    acked: usize,
    stats: Stats,
}

impl Model {
    fn event(&mut self, text: String) {
        if self.events.len() == 60 {
            self.events.pop_front();
        }
        self.events.push_back(format!(
            "{:>8.3}s {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn fail(&self, why: String) -> ! {
        let events: Vec<&str> = self.events.iter().map(String::as_str).collect();
        panic!(
            "protocol_model_replication FAILED (seed {seed}): {why}\n\
             last events:\n  {}\n\
             replay: PQLIB_MODEL_SEED={seed} PQLIB_MODEL_REQUESTS={} cargo test -p pqlib-suite \
             --test protocol_model_replication",
            events.join("\n  "),
            requests(),
            seed = self.seed,
        );
    }

    fn tag(&mut self) -> String {
        self.tags += 1;
        format!("m{}_{}", self.seed, self.tags)
    }

    // --- the writer ---

    fn write(&mut self) {
        let choice = self.rng.weighted(&[6, 2, 2]);
        let result = match choice {
            0 => {
                let tag = self.tag();
                let r = self
                    .writer
                    .execute("INSERT INTO mt (tag) VALUES ($1)", &[&tag]);
                r.map(|_| vec![tag])
            }
            _ => {
                let rows = if choice == 1 { 1 } else { self.rng.range(2, 4) };
                let tags: Vec<String> = (0..rows).map(|_| self.tag()).collect();
                let commit = choice == 2 && self.rng.chance(75);
                let r = (|| {
                    let mut tx = self.writer.transaction()?;
                    for tag in &tags {
                        tx.execute("INSERT INTO mt (tag) VALUES ($1)", &[tag])?;
                    }
                    if commit { tx.commit() } else { tx.rollback() }
                })();
                match r {
                    Ok(()) if commit => Ok(tags),
                    Ok(()) => {
                        self.event(format!("writer: rolled back {tags:?}"));
                        self.stats.rolled_back_rows += tags.len();
                        self.rolled_back.extend(tags);
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(tags) => {
                self.event(format!(
                    "writer: committed #{} {tags:?}",
                    self.committed.len()
                ));
                self.stats.committed_rows += tags.len();
                self.committed.push(tags);
                self.ends.push(None);
            }
            Err(e) => self.fail(format!("the writer failed: {e}")),
        }
    }

    /// The slot's `confirmed_flush_lsn` and whether a walsender still holds it.
    fn slot_state(&mut self) -> (Option<Lsn>, bool) {
        match self.writer.query_one(
            "SELECT confirmed_flush_lsn, active FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        ) {
            Ok(row) => (row.get(0), row.get(1)),
            Err(e) => self.fail(format!("reading pg_replication_slots: {e}")),
        }
    }

    /// Waits until no walsender holds the slot (a killed one may take a moment to go).
    fn wait_slot_free(&mut self) -> Option<Lsn> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (confirmed, active) = self.slot_state();
            if !active {
                return confirmed;
            }
            if Instant::now() >= deadline {
                self.fail(format!(
                    "the slot stayed active for {WAIT:?} after its stream ended"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn walsender_pid(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.writer.query_one(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            ) {
                Ok(row) => {
                    if let Some(pid) = row.get::<_, Option<i32>>(0) {
                        return pid;
                    }
                }
                Err(e) => self.fail(format!("reading active_pid: {e}")),
            }
            if Instant::now() >= deadline {
                self.fail("the stream's walsender never showed in pg_replication_slots".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn terminate(&mut self, pid: i32) {
        // Without waiting for the exit: a walsender whose client has not read a backlog of
        // changes blocks sending its FATAL message until the client reads on.
        match self
            .writer
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        {
            Ok(row) if row.get::<_, bool>(0) => {}
            Ok(_) => self.fail(format!("walsender {pid} could not be signalled")),
            Err(e) => self.fail(format!("pg_terminate_backend: {e}")),
        }
    }

    // --- the consumer ---

    /// Before a stream starts: where the slot restarts, checked against what was confirmed.
    fn restart_point(&mut self) {
        let confirmed_flush = self.wait_slot_free().unwrap_or(Lsn::INVALID);
        let restart = self
            .ends
            .iter()
            .position(|end| end.is_none_or(|end| end > confirmed_flush))
            .unwrap_or(self.ends.len());
        self.event(format!(
            "slot restarts after {confirmed_flush}: at #{restart} (confirmed {}, acked {}, \
             delivered up to #{})",
            self.confirmed, self.acked, self.next
        ));
        if restart < self.acked {
            self.fail(format!(
                "the slot restarts at #{restart}, before #{} which was confirmed and \
                 acknowledged: confirmed changes would be delivered again",
                self.acked
            ));
        }
        if restart > self.confirmed {
            self.fail(format!(
                "the slot restarts at #{restart}, past #{} which was never confirmed: those \
                 changes would be lost",
                self.confirmed
            ));
        }
        if self.confirmed_lsn > confirmed_flush && self.acked == self.confirmed {
            self.fail(format!(
                "confirmed_flush_lsn {confirmed_flush} is behind the acknowledged {}",
                self.confirmed_lsn
            ));
        }
        self.stats.redelivered_txns += self.next.saturating_sub(restart);
        self.confirmed_lsn = confirmed_flush;
        self.next = restart;
        // Whatever was not confirmed is sent again: only the confirmed prefix stays.
        self.confirmed = restart;
        self.acked = restart;
        self.in_txn = None;
    }

    /// Handles one message of the stream; returns the LSN of a COMMIT.
    fn handle(&mut self, message: ReplicationMessage) -> Option<Lsn> {
        let ReplicationMessage::XLogData(data) = message else {
            return None;
        };
        let text = match std::str::from_utf8(data.data()) {
            Ok(text) => text.to_owned(),
            Err(e) => self.fail(format!("test_decoding sent no UTF-8: {e}")),
        };
        if text == "BEGIN" {
            if let Some(open) = &self.in_txn {
                self.fail(format!("BEGIN inside a transaction that has {open:?}"));
            }
            self.in_txn = Some(Vec::new());
            return None;
        }
        if let Some(rest) = text.strip_prefix("table public.mt: INSERT: ") {
            let Some(tag) = rest
                .split_once("tag[text]:'")
                .and_then(|(_, t)| t.strip_suffix('\''))
            else {
                self.fail(format!("an INSERT without a tag: {text:?}"));
            };
            let tag = tag.to_owned();
            if self.rolled_back.contains(&tag) {
                self.fail(format!("rolled-back row {tag} was delivered"));
            }
            match &mut self.in_txn {
                Some(open) => open.push(tag),
                None => self.fail(format!("a change outside a transaction: {text:?}")),
            }
            return None;
        }
        if text == "COMMIT" {
            let Some(tags) = self.in_txn.take() else {
                self.fail("COMMIT outside a transaction".into());
            };
            let index = self.next;
            let lsn = data.wal_start();
            self.event(format!("delivered #{index} {tags:?} at {lsn}"));
            match self.committed.get(index) {
                None => self.fail(format!(
                    "transaction {tags:?} delivered as #{index}, but only {} committed",
                    self.committed.len()
                )),
                Some(want) if *want != tags => self.fail(format!(
                    "delivered {tags:?} where #{index} {want:?} was expected (in commit order)"
                )),
                Some(_) => {}
            }
            match self.ends[index] {
                Some(end) if end != lsn => self.fail(format!(
                    "#{index} was delivered at {end} before and now at {lsn}"
                )),
                _ => self.ends[index] = Some(lsn),
            }
            self.next += 1;
            self.stats.delivered_txns += 1;
            return Some(lsn);
        }
        self.fail(format!(
            "an unexpected message from test_decoding: {text:?}"
        ))
    }

    /// A tagged command or SQL on an idle connection, its answer checked.
    fn command(&mut self, rt: &Runtime, conn: &mut Conn) {
        self.stats.commands += 1;
        let tag = self.tag();
        let version = self.writer.server_version();
        match self.rng.below(5) {
            0 => {
                self.event(format!("{}: SELECT '{tag}'", conn.api()));
                let r = conn.simple_query(rt, &format!("SELECT '{tag}'"));
                self.own_tag(r, &tag);
            }
            1 => {
                self.event(format!("{}: IDENTIFY_SYSTEM", conn.api()));
                match conn.identify(rt) {
                    Ok(s) if s.timeline == 1 && s.database.as_deref() == Some("postgres") => {}
                    other => self.fail(format!("IDENTIFY_SYSTEM answered {other:?}")),
                }
            }
            2 => {
                self.event(format!("{}: SELECT 1/0 -- {tag}", conn.api()));
                let r = conn.simple_query(rt, &format!("SELECT 1/0 -- {tag}"));
                self.want_error(r, "22012");
            }
            3 => {
                self.event(format!("{}: DROP_REPLICATION_SLOT {tag}", conn.api()));
                let r = conn.drop_slot(rt, &tag);
                self.want_error(r, "42704");
            }
            _ => {
                // READ_REPLICATION_SLOT refuses a logical slot (15+); older servers lack it.
                self.event(format!("{}: READ_REPLICATION_SLOT {SLOT}", conn.api()));
                let r = conn.read_slot(rt, SLOT);
                match r {
                    Err(e) if version < 150000 && e.kind() == ErrorKind::Unsupported => {}
                    r => self.want_error(r, "0A000"),
                }
            }
        }
    }

    fn own_tag(&mut self, r: Result<Vec<SimpleQueryMessage>, Error>, tag: &str) {
        let rows: Vec<Option<String>> = match &r {
            Ok(messages) => messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                    _ => None,
                })
                .collect(),
            Err(e) => self.fail(format!("SELECT '{tag}' failed: {e}")),
        };
        if rows != [Some(tag.to_owned())] {
            self.fail(format!("SELECT '{tag}' answered {rows:?}"));
        }
    }

    fn want_error<T: std::fmt::Debug>(&mut self, r: Result<T, Error>, code: &str) {
        match r {
            Err(e) if e.code().is_some_and(|c| c.code() == code) => {}
            other => self.fail(format!("wanted error {code}, got {other:?}")),
        }
    }

    fn want_closed<T: std::fmt::Debug>(&mut self, r: Result<T, Error>, what: &str) {
        match r {
            Err(e) if e.is_closed() => {}
            other => self.fail(format!("{what}: wanted Closed, got {other:?}")),
        }
    }

    /// Confirms `lsn` (a COMMIT's), and sometimes waits until the server shows it.
    fn confirm(&mut self, stream: &mut Stream<'_>, lsn: Lsn, may_wait: bool) {
        stream.confirm(lsn);
        self.confirmed = self.next;
        self.confirmed_lsn = lsn;
        self.stats.confirms += 1;
        self.event(format!(
            "confirmed {lsn} (through #{})",
            self.next.wrapping_sub(1)
        ));
        if !may_wait || !self.rng.chance(30) {
            return;
        }
        // What this confirmation covers (nested ones below may confirm more meanwhile).
        let count = self.confirmed;
        if let Err(e) = stream.send_status(true) {
            self.fail(format!("send_status: {e}"));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let (flushed, _) = self.slot_state();
            if flushed.is_some_and(|f| f >= lsn) {
                self.acked = self.acked.max(count);
                self.stats.acked_confirms += 1;
                self.event(format!("the server shows {lsn} confirmed"));
                return;
            }
            if Instant::now() >= deadline {
                self.fail(format!("confirmed_flush_lsn never reached {lsn}"));
            }
            match stream.recv(Duration::from_millis(20)) {
                Ok(Received::Message(m)) => {
                    if let Some(commit) = self.handle(m) {
                        // Later commits are confirmed too, without waiting again.
                        if self.rng.chance(50) {
                            self.confirm(stream, commit, false);
                        }
                    }
                }
                Ok(Received::End) => self.fail("the stream ended by itself".into()),
                Ok(_) => {}
                Err(e) => self.fail(format!("reading the stream: {e}")),
            }
        }
    }

    /// Reads until the stream fails (after a fault): that error must be `Closed`.
    fn read_to_closed(&mut self, stream: &mut Stream<'_>, fault: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if Instant::now() >= deadline {
                self.fail(format!("no error within {WAIT:?} after {fault}"));
            }
            match stream.recv(Duration::from_millis(200)) {
                Ok(Received::Message(m)) => {
                    self.handle(m);
                }
                Ok(Received::End) => self.fail(format!("a clean end after {fault}")),
                Ok(_) => {}
                Err(e) if e.is_closed() => {
                    self.event(format!("stream: Closed after {fault}: {e}"));
                    return;
                }
                Err(e) => self.fail(format!("after {fault}: wanted Closed, got {e:?}")),
            }
        }
    }

    /// One session: connect, commands, a stream, its end, the connection's state after it.
    fn session(&mut self, rt: &Runtime, steps: &mut usize) {
        self.restart_point();
        let is_async = self.rng.chance(50);
        let proxied = self.rng.chance(30);
        let conninfo = if proxied {
            self.proxy.conninfo("")
        } else {
            self.conninfo.clone()
        };
        let config: pqlib::Config = conninfo.parse().expect("the conninfo");
        let mut conn = match Conn::connect(rt, &config, is_async) {
            Ok(conn) => conn,
            Err(e) => self.fail(format!("connecting: {e}")),
        };
        self.stats.sessions += 1;
        self.stats.blocking += usize::from(!is_async);
        self.stats.proxied += usize::from(proxied);
        self.event(format!(
            "session {}: {} {}",
            self.stats.sessions,
            conn.api(),
            if proxied { "via the proxy" } else { "direct" }
        ));
        for _ in 0..self.rng.below(4) {
            self.command(rt, &mut conn);
            *steps += 1;
        }
        let api = conn.api();
        let mut stream = match conn.start(rt) {
            Ok(stream) => stream,
            Err(e) => self.fail(format!("{api}: START_REPLICATION: {e}")),
        };
        stream.set_server_timeout(Duration::from_secs(5));
        let reads = self.rng.range(1, 40);
        for _ in 0..reads {
            *steps += 1;
            if self.rng.chance(40) {
                self.write();
            }
            match stream.recv(READ_WAIT) {
                Ok(Received::Message(m)) => {
                    if let Some(commit) = self.handle(m) {
                        if self.rng.chance(50) {
                            self.confirm(&mut stream, commit, true);
                        }
                    }
                }
                Ok(Received::TimedOut) => {}
                Ok(Received::End) => self.fail(format!("{api}: the stream ended by itself")),
                Ok(_) => {}
                Err(e) => self.fail(format!("{api}: reading the stream: {e}")),
            }
        }
        let mut ends = vec![End::Stop, End::Drop, End::TinyWaitThenStop, End::Terminate];
        if proxied {
            ends.push(End::Cut);
        }
        let end = ends[self.rng.below(ends.len() as u64) as usize];
        self.event(format!("{api}: ending the stream by {end:?}"));
        match self.stats.ends.iter_mut().find(|(e, _)| *e == end) {
            Some((_, n)) => *n += 1,
            None => self.stats.ends.push((end, 1)),
        }
        let closed = match end {
            End::Stop | End::TinyWaitThenStop => {
                if end == End::TinyWaitThenStop {
                    match stream.recv(Duration::from_millis(1)) {
                        Ok(Received::Message(m)) => {
                            // Not confirmed: delivered again next time.
                            self.handle(m);
                        }
                        Ok(Received::End) => self.fail(format!("{api}: ended by itself")),
                        Ok(_) => {}
                        Err(e) => self.fail(format!("{api}: reading the stream: {e}")),
                    }
                }
                if let Err(e) = stream.stop() {
                    self.fail(format!("{api}: stop: {e}"));
                }
                // The final status update went out before CopyDone: the server has it all.
                self.acked = self.confirmed;
                false
            }
            End::Drop => {
                drop(stream);
                // The blocking stream ends by the book (with a final update); the async one
                // closes the connection.
                if !is_async {
                    self.acked = self.confirmed;
                }
                is_async
            }
            End::Terminate => {
                let pid = self.walsender_pid();
                self.terminate(pid);
                self.read_to_closed(&mut stream, "pg_terminate_backend");
                drop(stream);
                true
            }
            End::Cut => {
                self.proxy.cut();
                self.read_to_closed(&mut stream, "the proxy's cut");
                drop(stream);
                true
            }
        };
        let tag = self.tag();
        self.event(format!("{api}: SELECT '{tag}' after the stream"));
        let r = conn.simple_query(rt, &format!("SELECT '{tag}'"));
        if closed {
            self.want_closed(r, "a request after the stream");
            let r = conn.identify(rt);
            self.want_closed(r, "a second request after the stream");
        } else {
            self.own_tag(r, &tag);
            if self.rng.chance(30) {
                // The walsender would end a second logical stream at once: refused.
                match conn.start(rt) {
                    Err(e) if e.kind() == ErrorKind::Unsupported => {}
                    Err(e) => self.fail(format!("{api}: a second stream: {e}")),
                    Ok(_) => self.fail(format!("{api}: a second stream started")),
                }
            }
            if self.rng.chance(50) {
                self.command(rt, &mut conn);
            }
        }
        drop(conn);
        if proxied {
            // common::Proxy does not pass a close on to the other side (its pumps end, the
            // sockets stay open): after pqlib closed a connection (an async drop), the server
            // would keep its walsender, and the slot, until wal_sender_timeout. A real
            // network passes the close on; the cut does it here.
            self.proxy.cut();
        }
    }

    /// The end: a stream read until every committed transaction has been delivered.
    fn drain(&mut self, rt: &Runtime) {
        self.restart_point();
        let config: pqlib::Config = self.conninfo.parse().expect("the conninfo");
        let mut conn = match Conn::connect(rt, &config, false) {
            Ok(conn) => conn,
            Err(e) => self.fail(format!("connecting to drain: {e}")),
        };
        self.event(format!(
            "draining from #{} to #{}",
            self.next,
            self.committed.len()
        ));
        let mut stream = match conn.start(rt) {
            Ok(stream) => stream,
            Err(e) => self.fail(format!("START_REPLICATION to drain: {e}")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.next < self.committed.len() {
            if Instant::now() >= deadline {
                self.fail(format!(
                    "#{} .. #{} committed but never delivered",
                    self.next,
                    self.committed.len()
                ));
            }
            match stream.recv(Duration::from_millis(200)) {
                Ok(Received::Message(m)) => {
                    if let Some(commit) = self.handle(m) {
                        self.confirm(&mut stream, commit, false);
                    }
                }
                Ok(Received::End) => self.fail("the drain stream ended by itself".into()),
                Ok(_) => {}
                Err(e) => self.fail(format!("draining: {e}")),
            }
        }
        if let Err(e) = stream.stop() {
            self.fail(format!("stopping the drain: {e}"));
        }
        drop(conn);
        if let Some(missing) = self.ends.iter().position(Option::is_none) {
            self.fail(format!("#{missing} was never delivered"));
        }
        // Everything was confirmed and the stream stopped: nothing comes again.
        self.acked = self.confirmed;
        self.restart_point();
        if self.next != self.committed.len() {
            self.fail("the slot would deliver something again".into());
        }
    }
}

#[test]
fn replication_model() {
    let _deadline = common::deadline(TEST_LIMIT);
    let seed = seed();
    let total = requests();
    println!("protocol_model_replication: PQLIB_MODEL_SEED={seed} requests={total}");
    let cluster = pqlib::tempdb::TempCluster::builder()
        .config("wal_level = logical")
        .config("max_wal_senders = 20")
        .start()
        .expect("a throwaway server with wal_level = logical");
    let mut writer = pqlib::Connection::connect(&cluster.conninfo()).expect("the writer");
    writer
        .batch_execute("CREATE TABLE mt (id serial PRIMARY KEY, tag text NOT NULL)")
        .expect("the table");
    writer
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&SLOT],
        )
        .expect("the slot");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let proxy = common::Proxy::start(common::Upstream::Tcp(cluster.port()));
    let mut model = Model {
        seed,
        rng: Rng::new(seed),
        events: VecDeque::new(),
        started: Instant::now(),
        writer,
        proxy,
        conninfo: cluster.conninfo(),
        tags: 0,
        committed: Vec::new(),
        rolled_back: HashSet::new(),
        ends: Vec::new(),
        next: 0,
        in_txn: None,
        confirmed: 0,
        confirmed_lsn: Lsn::INVALID,
        acked: 0,
        stats: Stats::default(),
    };
    let mut steps = 0;
    while steps < total {
        for _ in 0..model.rng.below(4) {
            model.write();
            steps += 1;
        }
        model.session(&rt, &mut steps);
    }
    model.drain(&rt);
    println!(
        "protocol_model_replication: seed {seed}: {steps} steps in {:.1} s; {:?}",
        model.started.elapsed().as_secs_f64(),
        model.stats
    );
    assert_eq!(model.next, model.committed.len());
}
