//! The protocol-state invariant (DESIGN.md) on replication connections, tested as a space:
//! replication commands, SQL and streams (kinds) through the blocking and the async
//! replication APIs, logical and physical (APIs), generated from two lists.
//!
//! For each (API, kind) pair a fresh replication connection
//! 1. runs the kind through the API, which must give the answer expected for that pair or a
//!    clear error (never a panic, a hang or a wrong answer), and then
//! 2. answers tagged probes with exactly their own tags: `SELECT '<tag>'` twice on a logical
//!    connection; on a physical one (which takes no SQL) `IDENTIFY_SYSTEM`, then
//!    `CREATE_REPLICATION_SLOT <tag> TEMPORARY PHYSICAL` (its answer names the slot, so it
//!    carries the tag), then `IDENTIFY_SYSTEM` again; or the connection is closed, and then
//!    every later call is an error of kind `Closed`. A wrong or shifted answer is never
//!    acceptable.
//!
//! Every case runs on a thread of its own, bounded by [`CASE_TIMEOUT`]; failures are
//! collected and printed as a table, then one assert fails.

mod common;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMode, SlotKind, SnapshotAction,
};
use pqlib::tokio::ReplicationClient;
use pqlib::{Error, SimpleQueryMessage};

/// Every case (its call and the probes after it) must end within this.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a case waits for a stream's end or error after a fault.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// How many cases run at once (each on its own thread and connection).
const PARALLEL: usize = 4;

// ---------------------------------------------------------------------------------------
// The server: one for the whole file, with logical decoding.

struct Server {
    conninfo: String,
    version: u32,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let cluster = pqlib::tempdb::TempCluster::builder()
            .config("wal_level = logical")
            .config("max_wal_senders = 40")
            .config("max_replication_slots = 400")
            .start()
            .expect("a throwaway server with wal_level = logical");
        let conninfo = cluster.conninfo();
        let mut direct = pqlib::Connection::connect(&conninfo).expect("connecting to it");
        direct
            .batch_execute(
                "CREATE TABLE rm_t (id serial PRIMARY KEY, tag text);
                 CREATE PUBLICATION rm_pub FOR TABLE rm_t",
            )
            .expect("the table and publication");
        let version = direct.server_version();
        common::drop_at_exit(cluster);
        Server { conninfo, version }
    })
}

fn config(n: usize) -> pqlib::Config {
    let mut config: pqlib::Config = server().conninfo.parse().expect("the conninfo");
    config.application_name(&app_name(n));
    config
}

fn app_name(n: usize) -> String {
    format!("rm_case_{n}")
}

fn slot_name(n: usize) -> String {
    format!("rm_slot_{n}")
}

// ---------------------------------------------------------------------------------------
// The APIs and kinds, as data.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    BlockingSimple,
    BlockingTyped,
    AsyncSimple,
    AsyncTyped,
    PhysBlockingSimple,
    PhysBlockingTyped,
    PhysAsyncSimple,
    PhysAsyncTyped,
}

const APIS: &[Api] = &[
    Api::BlockingSimple,
    Api::BlockingTyped,
    Api::AsyncSimple,
    Api::AsyncTyped,
    Api::PhysBlockingSimple,
    Api::PhysBlockingTyped,
    Api::PhysAsyncSimple,
    Api::PhysAsyncTyped,
];

impl Api {
    fn mode(self) -> ReplicationMode {
        match self {
            Api::BlockingSimple | Api::BlockingTyped | Api::AsyncSimple | Api::AsyncTyped => {
                ReplicationMode::Logical
            }
            _ => ReplicationMode::Physical,
        }
    }

    fn physical(self) -> bool {
        self.mode() == ReplicationMode::Physical
    }

    fn is_async(self) -> bool {
        matches!(
            self,
            Api::AsyncSimple | Api::AsyncTyped | Api::PhysAsyncSimple | Api::PhysAsyncTyped
        )
    }

    fn typed(self) -> bool {
        matches!(
            self,
            Api::BlockingTyped | Api::AsyncTyped | Api::PhysBlockingTyped | Api::PhysAsyncTyped
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    IdentifySystem,
    CreateLogicalTemporary,
    CreateLogicalPermanent,
    CreatePhysical,
    DropMissingSlot,
    ReadMissingSlot,
    ReadExistingSlot,
    TimelineHistory1,
    SqlRows,
    SqlDivisionByZero,
    SqlEmpty,
    SqlMultiStatement,
    StartThroughSimpleQuery,
    StartUnknownSlot,
    StreamStop,
    StreamDrop,
    StreamTwice,
    StreamTerminated,
    StreamBadPluginOption,
    StreamMissingPublication,
}

const KINDS: &[Kind] = &[
    Kind::IdentifySystem,
    Kind::CreateLogicalTemporary,
    Kind::CreateLogicalPermanent,
    Kind::CreatePhysical,
    Kind::DropMissingSlot,
    Kind::ReadMissingSlot,
    Kind::ReadExistingSlot,
    Kind::TimelineHistory1,
    Kind::SqlRows,
    Kind::SqlDivisionByZero,
    Kind::SqlEmpty,
    Kind::SqlMultiStatement,
    Kind::StartThroughSimpleQuery,
    Kind::StartUnknownSlot,
    Kind::StreamStop,
    Kind::StreamDrop,
    Kind::StreamTwice,
    Kind::StreamTerminated,
    Kind::StreamBadPluginOption,
    Kind::StreamMissingPublication,
];

/// One acceptable outcome of the call.
#[derive(Clone, Copy, Debug)]
enum Accept {
    /// Success, its rendering matching this pattern (`*` matches any run of characters).
    Ok(&'static str),
    /// A server error with this SQLSTATE.
    Db(&'static str),
    /// An error of this kind.
    ErrKind(ErrorKind),
    /// An error whose message says what happened (contains this text).
    ErrorSaying(&'static str),
}

/// How the connection must be left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    Answered,
    Closed,
    Either,
}

struct Expect {
    call: Vec<Accept>,
    left: Left,
}

fn expect(call: &[Accept], left: Left) -> Option<Expect> {
    Some(Expect {
        call: call.to_vec(),
        left,
    })
}

/// What the simple-query form of a kind sends (`{slot}`, `{pos}` and `{tag}` filled in at run
/// time), if it has one.
fn simple_sql(kind: Kind, physical: bool) -> Option<&'static str> {
    Some(match kind {
        Kind::IdentifySystem => "IDENTIFY_SYSTEM",
        Kind::CreateLogicalTemporary => {
            "CREATE_REPLICATION_SLOT {tag} TEMPORARY LOGICAL test_decoding (SNAPSHOT 'nothing')"
        }
        Kind::CreateLogicalPermanent => {
            "CREATE_REPLICATION_SLOT {tag} LOGICAL test_decoding (SNAPSHOT 'nothing')"
        }
        Kind::CreatePhysical => "CREATE_REPLICATION_SLOT {tag} TEMPORARY PHYSICAL (RESERVE_WAL)",
        Kind::DropMissingSlot => "DROP_REPLICATION_SLOT rm_no_such_slot",
        Kind::ReadMissingSlot => "READ_REPLICATION_SLOT rm_no_such_slot",
        Kind::ReadExistingSlot => "READ_REPLICATION_SLOT {slot}",
        Kind::TimelineHistory1 => "TIMELINE_HISTORY 1",
        Kind::SqlRows => "SELECT g::text FROM generate_series(1, 2) g",
        Kind::SqlDivisionByZero => "SELECT 1/0",
        Kind::SqlEmpty => "",
        Kind::SqlMultiStatement => "SELECT 1; SELECT 2",
        Kind::StartThroughSimpleQuery if physical => "START_REPLICATION PHYSICAL {pos}",
        Kind::StartThroughSimpleQuery => "START_REPLICATION SLOT {slot} LOGICAL 0/0",
        Kind::StartUnknownSlot if physical => {
            "START_REPLICATION SLOT rm_no_such_slot PHYSICAL {pos}"
        }
        Kind::StartUnknownSlot => "START_REPLICATION SLOT rm_no_such_slot LOGICAL 0/0",
        _ => return None,
    })
}

/// Whether the kind has a typed form (a method of the replication API).
fn has_typed(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::SqlRows
            | Kind::SqlDivisionByZero
            | Kind::SqlEmpty
            | Kind::SqlMultiStatement
            | Kind::StartThroughSimpleQuery
    )
}

/// Whether the case first makes a slot of its own ([`slot_name`]): a temporary test_decoding
/// slot on a logical connection, a temporary physical one on a physical connection.
fn needs_slot(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::ReadExistingSlot
            | Kind::StartThroughSimpleQuery
            | Kind::StreamStop
            | Kind::StreamDrop
            | Kind::StreamTwice
            | Kind::StreamTerminated
            | Kind::StreamBadPluginOption
    )
}

/// What the (API, kind) pair must answer; `None` where the pair does not exist.
fn want(api: Api, kind: Kind, version: u32) -> Option<Expect> {
    use Accept::*;
    use Left::*;
    let physical = api.physical();
    let typed = api.typed();
    if typed && !has_typed(kind) || !typed && simple_sql(kind, physical).is_none() {
        return None;
    }
    // What the physical walsender says to anything that is not a replication command.
    const NO_SQL: &str = "0A000";
    match kind {
        Kind::IdentifySystem => match (typed, physical) {
            (true, false) => expect(&[Ok("identify tl=1 db=postgres")], Answered),
            (true, true) => expect(&[Ok("identify tl=1 db=-")], Answered),
            (false, false) => expect(
                &[Ok(
                    "desc(systemid,timeline,xlogpos,dbname) row(*,1,*/*,postgres) complete(*)",
                )],
                Answered,
            ),
            (false, true) => expect(
                &[Ok(
                    "desc(systemid,timeline,xlogpos,dbname) row(*,1,*/*,null) complete(*)",
                )],
                Answered,
            ),
        },
        Kind::CreateLogicalTemporary | Kind::CreateLogicalPermanent => {
            if physical {
                // Logical decoding needs a database connection.
                expect(&[Db("55000")], Answered)
            } else if typed {
                expect(&[Ok("slot {tag} cp=*/* plugin=test_decoding")], Answered)
            } else {
                expect(
                    &[Ok(
                        "desc(slot_name,consistent_point,snapshot_name,output_plugin) \
                         row({tag},*/*,null,test_decoding) complete(*)",
                    )],
                    Answered,
                )
            }
        }
        Kind::CreatePhysical => {
            if typed {
                expect(&[Ok("slot {tag} cp=- plugin=-")], Answered)
            } else {
                expect(
                    &[Ok(
                        "desc(slot_name,consistent_point,snapshot_name,output_plugin) \
                         row({tag},*/*,null,null) complete(*)",
                    )],
                    Answered,
                )
            }
        }
        Kind::DropMissingSlot => expect(&[Db("42704")], Answered),
        Kind::ReadMissingSlot | Kind::ReadExistingSlot => {
            let existing = kind == Kind::ReadExistingSlot;
            if version < 150000 {
                if typed {
                    expect(&[ErrKind(ErrorKind::Unsupported)], Answered)
                } else {
                    expect(&[Db("42601")], Answered)
                }
            } else if existing && !physical {
                // READ_REPLICATION_SLOT refuses logical slots.
                expect(&[Db("0A000")], Answered)
            } else if typed {
                if existing {
                    expect(&[Ok("read physical */* tl=1")], Answered)
                } else {
                    expect(&[Ok("read none")], Answered)
                }
            } else if existing {
                expect(
                    &[Ok(
                        "desc(slot_type,restart_lsn,restart_tli) row(physical,*/*,1) complete(*)",
                    )],
                    Answered,
                )
            } else {
                expect(
                    &[Ok(
                        "desc(slot_type,restart_lsn,restart_tli) row(null,null,null) complete(*)",
                    )],
                    Answered,
                )
            }
        }
        // There is no history file for timeline 1.
        Kind::TimelineHistory1 => expect(&[Db("58P01")], Answered),
        Kind::SqlRows if physical => expect(&[Db(NO_SQL)], Answered),
        Kind::SqlRows => expect(&[Ok("desc(g) row(1) row(2) complete(2)")], Answered),
        Kind::SqlDivisionByZero if physical => expect(&[Db(NO_SQL)], Answered),
        Kind::SqlDivisionByZero => expect(&[Db("22012")], Answered),
        Kind::SqlEmpty if physical => expect(&[Db(NO_SQL), Ok("")], Answered),
        Kind::SqlEmpty => expect(&[Ok("")], Answered),
        Kind::SqlMultiStatement if physical => expect(&[Db(NO_SQL)], Answered),
        Kind::SqlMultiStatement => expect(
            &[Ok(
                "desc(?column?) row(1) complete(1) desc(?column?) row(2) complete(1)",
            )],
            Answered,
        ),
        // A COPY BOTH nobody asked for: a clear error (one that says a COPY was started), the
        // connection usable or closed. simple_query refuses START_REPLICATION before sending it.
        Kind::StartThroughSimpleQuery => expect(&[ErrorSaying("COPY")], Either),
        Kind::StartUnknownSlot if !api.typed() => expect(&[ErrKind(ErrorKind::BadInput)], Answered),
        Kind::StartUnknownSlot => expect(&[Db("42704")], Answered),
        Kind::StreamStop => expect(&[Ok("stopped")], Answered),
        // The blocking stream ends the COPY by the book when dropped; the async one cannot
        // wait in Drop, so it closes the connection.
        Kind::StreamDrop if api.is_async() => expect(&[Ok("dropped")], Closed),
        Kind::StreamDrop => expect(&[Ok("dropped")], Answered),
        Kind::StreamTwice if physical => None,
        Kind::StreamTwice => expect(&[ErrKind(ErrorKind::Unsupported)], Answered),
        Kind::StreamTerminated => expect(&[ErrKind(ErrorKind::Closed)], Closed),
        Kind::StreamBadPluginOption if physical => None,
        // test_decoding refuses an unknown option at startup, before the COPY BOTH.
        Kind::StreamBadPluginOption => expect(&[Db("22023")], Answered),
        Kind::StreamMissingPublication if physical => None,
        // pgoutput looks the publication up at the first change: an error mid-stream (server
        // 18 skips a missing publication with a warning instead, and the stream goes on).
        Kind::StreamMissingPublication => expect(&[Db("42704"), Ok("no error; stopped")], Answered),
    }
}

// ---------------------------------------------------------------------------------------
// Answers and their renderings.

/// What the call gave.
enum Got {
    Ok(String),
    Err(Error),
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Ok(text) => write!(f, "Ok({text:?})"),
            Got::Err(e) => write!(
                f,
                "Err({:?}, code {:?}: {e})",
                e.kind(),
                e.code().map(|c| c.code())
            ),
        }
    }
}

fn got<T>(result: Result<T, Error>, render: impl FnOnce(T) -> String) -> Got {
    match result {
        Ok(value) => Got::Ok(render(value)),
        Err(e) => Got::Err(e),
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else {
                return false;
            };
            (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .any(|i| glob(rest, &text[i..]))
        }
    }
}

fn accepts(accept: &Accept, got: &Got, tag: &str) -> bool {
    match (accept, got) {
        (Accept::Ok(pattern), Got::Ok(text)) => glob(&pattern.replace("{tag}", tag), text),
        (Accept::Db(code), Got::Err(e)) => {
            e.kind() == ErrorKind::Db && e.code().is_some_and(|c| c.code() == *code)
        }
        (Accept::ErrKind(kind), Got::Err(e)) => e.kind() == *kind,
        (Accept::ErrorSaying(text), Got::Err(e)) => e.to_string().contains(text),
        _ => false,
    }
}

fn messages_answer(messages: &[SimpleQueryMessage]) -> String {
    let mut parts = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                parts.push(format!("desc({})", names.join(",")));
            }
            SimpleQueryMessage::Row(row) => {
                let values: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("null"))
                    .collect();
                parts.push(format!("row({})", values.join(",")));
            }
            SimpleQueryMessage::CommandComplete(n) => parts.push(format!("complete({n})")),
            _ => parts.push("other".into()),
        }
    }
    parts.join(" ")
}

fn identity_answer(system: pqlib::replication::SystemIdentity) -> String {
    format!(
        "identify tl={} db={}",
        system.timeline,
        system.database.as_deref().unwrap_or("-")
    )
}

fn slot_answer(slot: pqlib::replication::CreatedSlot) -> String {
    format!(
        "slot {} cp={} plugin={}",
        slot.slot_name,
        slot.consistent_point
            .map_or("-".to_owned(), |lsn| lsn.to_string()),
        slot.output_plugin.as_deref().unwrap_or("-")
    )
}

fn read_answer(position: Option<pqlib::replication::SlotPosition>) -> String {
    match position {
        None => "read none".into(),
        Some(p) => format!(
            "read {} {} tl={}",
            p.slot_type,
            p.restart_lsn.map_or("-".to_owned(), |l| l.to_string()),
            p.restart_timeline.map_or("-".to_owned(), |t| t.to_string())
        ),
    }
}

fn fill(sql: &str, n: usize, tag: &str, pos: Lsn) -> String {
    sql.replace("{slot}", &slot_name(n))
        .replace("{tag}", tag)
        .replace("{pos}", &pos.to_string())
}

fn logical_kind(plugin: &str) -> SlotKind {
    SlotKind::Logical {
        plugin: plugin.into(),
        snapshot: SnapshotAction::Nothing,
    }
}

/// The walsender of case `n`, found by its application name.
fn walsender_pid(direct: &mut pqlib::Connection, n: usize) -> Result<i32, String> {
    direct
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND backend_type = 'walsender'",
            &[&app_name(n)],
        )
        .map_err(|e| e.to_string())?
        .map(|row| row.get::<_, i32>(0))
        .ok_or_else(|| format!("no walsender named {}", app_name(n)))
}

fn terminate(n: usize) -> Result<(), String> {
    let mut direct = pqlib::Connection::connect(&server().conninfo).map_err(|e| e.to_string())?;
    let pid = walsender_pid(&mut direct, n)?;
    let gone: bool = direct
        .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
        .map_err(|e| e.to_string())?
        .get(0);
    if gone {
        Ok(())
    } else {
        Err(format!("walsender {pid} did not exit within 10 s"))
    }
}

/// A committed change, for the missing-publication case (pgoutput looks up its
/// publications at the first change it decodes).
fn write_a_row(tag: &str) -> Result<(), String> {
    let mut direct = pqlib::Connection::connect(&server().conninfo).map_err(|e| e.to_string())?;
    direct
        .execute("INSERT INTO rm_t (tag) VALUES ($1)", &[&tag])
        .map(drop)
        .map_err(|e| e.to_string())
}

const BAD_OPTION: &[(&str, &str)] = &[("rm-no-such-option", "1")];
const MISSING_PUBLICATION: &[(&str, &str)] = &[
    ("proto_version", "1"),
    ("publication_names", "rm_no_such_publication"),
];
const TEST_DECODING: &[(&str, &str)] = &[("include-xids", "0"), ("skip-empty-xacts", "1")];

// ---------------------------------------------------------------------------------------
// Probes.

enum Probe {
    Own,
    Closed,
    Wrong(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Own => write!(f, "own tag"),
            Probe::Closed => write!(f, "Closed"),
            Probe::Wrong(what) => write!(f, "WRONG: {what}"),
        }
    }
}

/// The probes' requests for a connection of this mode, with the answer each must give.
fn probes(physical: bool, case_tag: &str) -> Vec<(String, String)> {
    if physical {
        let tag = format!("{case_tag}_p");
        vec![
            (
                "IDENTIFY_SYSTEM".into(),
                "desc(systemid,timeline,xlogpos,dbname) row(*,1,*/*,null) complete(*)".into(),
            ),
            (
                format!("CREATE_REPLICATION_SLOT {tag} TEMPORARY PHYSICAL"),
                format!(
                    "desc(slot_name,consistent_point,snapshot_name,output_plugin) \
                     row({tag},*,null,null) complete(*)"
                ),
            ),
            (
                "IDENTIFY_SYSTEM".into(),
                "desc(systemid,timeline,xlogpos,dbname) row(*,1,*/*,null) complete(*)".into(),
            ),
        ]
    } else {
        (1..=2)
            .map(|i| {
                let tag = format!("{case_tag}-probe{i}");
                (
                    format!("SELECT '{tag}' AS probe"),
                    format!("desc(probe) row({tag}) complete(1)"),
                )
            })
            .collect()
    }
}

fn judge_probe(result: Result<Vec<SimpleQueryMessage>, Error>, pattern: &str) -> Probe {
    match result {
        Ok(messages) => {
            let answer = messages_answer(&messages);
            if glob(pattern, &answer) {
                Probe::Own
            } else {
                Probe::Wrong(format!("{answer:?}, wanted {pattern:?}"))
            }
        }
        Err(e) if e.is_closed() => Probe::Closed,
        Err(e) => Probe::Wrong(format!("error {:?}: {e}", e.kind())),
    }
}

/// Every probe answered with its own tag, or every one was `Closed`.
fn judge_after(probes: &[Probe]) -> Result<Left, String> {
    if probes.iter().all(|p| matches!(p, Probe::Own)) {
        return Ok(Left::Answered);
    }
    if probes.iter().all(|p| matches!(p, Probe::Closed)) {
        return Ok(Left::Closed);
    }
    let list: Vec<String> = probes.iter().map(ToString::to_string).collect();
    Err(format!("probes: {}", list.join("; ")))
}

// ---------------------------------------------------------------------------------------
// The blocking API.

fn blocking_call(
    conn: &mut ReplicationConnection,
    api: Api,
    kind: Kind,
    n: usize,
    tag: &str,
    pos: Lsn,
) -> Got {
    let physical = api.physical();
    if !api.typed() {
        let sql = fill(
            simple_sql(kind, physical).expect("a simple form"),
            n,
            tag,
            pos,
        );
        return got(conn.simple_query(&sql), |m| messages_answer(&m));
    }
    let slot = slot_name(n);
    match kind {
        Kind::IdentifySystem => got(conn.identify_system(), identity_answer),
        Kind::CreateLogicalTemporary | Kind::CreateLogicalPermanent => got(
            conn.create_replication_slot(
                tag,
                &logical_kind("test_decoding"),
                kind == Kind::CreateLogicalTemporary,
            ),
            slot_answer,
        ),
        Kind::CreatePhysical => got(
            conn.create_replication_slot(tag, &SlotKind::Physical { reserve_wal: true }, true),
            slot_answer,
        ),
        Kind::DropMissingSlot => got(conn.drop_replication_slot("rm_no_such_slot", false), |()| {
            "dropped".into()
        }),
        Kind::ReadMissingSlot => got(conn.read_replication_slot("rm_no_such_slot"), read_answer),
        Kind::ReadExistingSlot => got(conn.read_replication_slot(&slot), read_answer),
        Kind::TimelineHistory1 => got(conn.timeline_history(1), |(name, _)| name),
        Kind::StartUnknownSlot if physical => got(
            conn.start_physical_replication(Some("rm_no_such_slot"), pos, None)
                .map(drop),
            |()| "started".into(),
        ),
        Kind::StartUnknownSlot => got(
            conn.start_logical_replication("rm_no_such_slot", Lsn::INVALID, TEST_DECODING)
                .map(drop),
            |()| "started".into(),
        ),
        Kind::StreamTwice => match blocking_stream(conn, physical, kind, n, tag, pos) {
            Got::Ok(_) => got(
                conn.start_logical_replication(&slot, Lsn::INVALID, TEST_DECODING)
                    .map(drop),
                |()| "started twice".into(),
            ),
            other => other,
        },
        _ => blocking_stream(conn, physical, kind, n, tag, pos),
    }
}

fn blocking_stream(
    conn: &mut ReplicationConnection,
    physical: bool,
    kind: Kind,
    n: usize,
    tag: &str,
    pos: Lsn,
) -> Got {
    let slot = slot_name(n);
    let options = match kind {
        Kind::StreamBadPluginOption => BAD_OPTION,
        Kind::StreamMissingPublication => MISSING_PUBLICATION,
        _ => TEST_DECODING,
    };
    let started = if physical {
        conn.start_physical_replication(Some(&slot), pos, None)
    } else {
        conn.start_logical_replication(&slot, Lsn::INVALID, options)
    };
    let mut stream = match started {
        Ok(stream) => stream,
        Err(e) => return Got::Err(e),
    };
    match kind {
        Kind::StreamStop | Kind::StreamTwice => {
            if let Err(e) = stream.recv_timeout(Duration::from_millis(100)) {
                return Got::Err(e);
            }
            let received = stream.received();
            stream.confirm(received);
            if let Err(e) = stream.stop() {
                return Got::Err(e);
            }
            Got::Ok("stopped".into())
        }
        Kind::StreamDrop => {
            if let Err(e) = stream.recv_timeout(Duration::from_millis(100)) {
                return Got::Err(e);
            }
            drop(stream);
            Got::Ok("dropped".into())
        }
        Kind::StreamTerminated | Kind::StreamMissingPublication => {
            let fault = if kind == Kind::StreamTerminated {
                terminate(n)
            } else {
                write_a_row(tag)
            };
            if let Err(why) = fault {
                return Got::Ok(format!("the fault failed: {why}"));
            }
            let deadline = Instant::now() + STREAM_WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match stream.recv_timeout(left) {
                    Ok(Received::Message(_)) | Ok(Received::TimedOut) => {}
                    Ok(Received::End) => return Got::Ok("ended".into()),
                    Ok(_) => return Got::Ok("something new".into()),
                    Err(e) => return Got::Err(e),
                }
            }
            got(stream.stop(), |_| "no error; stopped".into())
        }
        _ => Got::Ok(format!("{kind:?} is no stream kind")),
    }
}

fn blocking_case(api: Api, kind: Kind, n: usize) -> Report {
    let tag = format!("rm_tag_{n}");
    let mut problems = Vec::new();
    let mut conn = match ReplicationConnection::connect(&config(n), api.mode()) {
        Ok(conn) => conn,
        Err(e) => return Report::failed(api, kind, format!("connect: {e}")),
    };
    let pos = match conn.identify_system() {
        Ok(system) => system.wal_position,
        Err(e) => return Report::failed(api, kind, format!("identify: {e}")),
    };
    if needs_slot(kind) {
        let slot_kind = if api.physical() {
            SlotKind::Physical { reserve_wal: true }
        } else {
            logical_kind("test_decoding")
        };
        if let Err(e) = conn.create_replication_slot(&slot_name(n), &slot_kind, true) {
            return Report::failed(api, kind, format!("creating the case's slot: {e}"));
        }
    }
    let got = blocking_call(&mut conn, api, kind, n, &tag, pos);
    let mut judged = Vec::new();
    for (sql, pattern) in probes(api.physical(), &tag) {
        judged.push(judge_probe(conn.simple_query(&sql), &pattern));
    }
    let after = judge_after(&judged);
    drop(conn);
    if kind == Kind::CreateLogicalPermanent && matches!(got, Got::Ok(_)) {
        if let Err(e) = drop_slot(&tag) {
            problems.push(format!("dropping the permanent slot: {e}"));
        }
    }
    judge(api, kind, &tag, got, after, problems)
}

fn drop_slot(name: &str) -> Result<(), String> {
    let mut direct = pqlib::Connection::connect(&server().conninfo).map_err(|e| e.to_string())?;
    direct
        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .map(drop)
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The async API.

async fn async_call(
    client: &mut ReplicationClient,
    api: Api,
    kind: Kind,
    n: usize,
    tag: &str,
    pos: Lsn,
) -> Got {
    let physical = api.physical();
    if !api.typed() {
        let sql = fill(
            simple_sql(kind, physical).expect("a simple form"),
            n,
            tag,
            pos,
        );
        return got(client.simple_query(&sql).await, |m| messages_answer(&m));
    }
    let slot = slot_name(n);
    match kind {
        Kind::IdentifySystem => got(client.identify_system().await, identity_answer),
        Kind::CreateLogicalTemporary | Kind::CreateLogicalPermanent => got(
            client
                .create_replication_slot(
                    tag,
                    &logical_kind("test_decoding"),
                    kind == Kind::CreateLogicalTemporary,
                )
                .await,
            slot_answer,
        ),
        Kind::CreatePhysical => got(
            client
                .create_replication_slot(tag, &SlotKind::Physical { reserve_wal: true }, true)
                .await,
            slot_answer,
        ),
        Kind::DropMissingSlot => got(
            client.drop_replication_slot("rm_no_such_slot", false).await,
            |()| "dropped".into(),
        ),
        Kind::ReadMissingSlot => got(
            client.read_replication_slot("rm_no_such_slot").await,
            read_answer,
        ),
        Kind::ReadExistingSlot => got(client.read_replication_slot(&slot).await, read_answer),
        Kind::TimelineHistory1 => got(client.timeline_history(1).await, |(name, _)| name),
        Kind::StartUnknownSlot if physical => got(
            client
                .start_physical_replication(Some("rm_no_such_slot"), pos, None)
                .await
                .map(stream_stopped_later),
            |()| "started".into(),
        ),
        Kind::StartUnknownSlot => got(
            client
                .start_logical_replication("rm_no_such_slot", Lsn::INVALID, TEST_DECODING)
                .await
                .map(stream_stopped_later),
            |()| "started".into(),
        ),
        Kind::StreamTwice => match async_stream(client, physical, kind, n, tag, pos).await {
            Got::Ok(_) => got(
                client
                    .start_logical_replication(&slot, Lsn::INVALID, TEST_DECODING)
                    .await
                    .map(stream_stopped_later),
                |()| "started twice".into(),
            ),
            other => other,
        },
        _ => async_stream(client, physical, kind, n, tag, pos).await,
    }
}

/// A stream that should not have started: dropped (which closes the connection, so the
/// probes show it too).
fn stream_stopped_later(stream: pqlib::tokio::ReplicationStream<'_>) {
    drop(stream);
}

async fn async_stream(
    client: &mut ReplicationClient,
    physical: bool,
    kind: Kind,
    n: usize,
    tag: &str,
    pos: Lsn,
) -> Got {
    let slot = slot_name(n);
    let options = match kind {
        Kind::StreamBadPluginOption => BAD_OPTION,
        Kind::StreamMissingPublication => MISSING_PUBLICATION,
        _ => TEST_DECODING,
    };
    let started = if physical {
        client
            .start_physical_replication(Some(&slot), pos, None)
            .await
    } else {
        client
            .start_logical_replication(&slot, Lsn::INVALID, options)
            .await
    };
    let mut stream = match started {
        Ok(stream) => stream,
        Err(e) => return Got::Err(e),
    };
    let peek = Duration::from_millis(100);
    match kind {
        Kind::StreamStop | Kind::StreamTwice => {
            if let Ok(Some(Err(e))) = tokio::time::timeout(peek, stream.next()).await {
                return Got::Err(e);
            }
            let received = stream.received();
            stream.confirm(received);
            if let Err(e) = stream.stop().await {
                return Got::Err(e);
            }
            Got::Ok("stopped".into())
        }
        Kind::StreamDrop => {
            if let Ok(Some(Err(e))) = tokio::time::timeout(peek, stream.next()).await {
                return Got::Err(e);
            }
            drop(stream);
            Got::Ok("dropped".into())
        }
        Kind::StreamTerminated | Kind::StreamMissingPublication => {
            let tag = tag.to_owned();
            let fault = tokio::task::spawn_blocking(move || {
                if kind == Kind::StreamTerminated {
                    terminate(n)
                } else {
                    write_a_row(&tag)
                }
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(why) = fault {
                return Got::Ok(format!("the fault failed: {why}"));
            }
            let deadline = tokio::time::Instant::now() + STREAM_WAIT;
            loop {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => return Got::Err(e),
                    Ok(None) => return Got::Ok("ended".into()),
                }
            }
            got(stream.stop().await, |_| "no error; stopped".into())
        }
        _ => Got::Ok(format!("{kind:?} is no stream kind")),
    }
}

async fn async_case(api: Api, kind: Kind, n: usize) -> Report {
    let tag = format!("rm_tag_{n}");
    let mut problems = Vec::new();
    let mut client = match ReplicationClient::connect(&config(n), api.mode()).await {
        Ok(client) => client,
        Err(e) => return Report::failed(api, kind, format!("connect: {e}")),
    };
    let pos = match client.identify_system().await {
        Ok(system) => system.wal_position,
        Err(e) => return Report::failed(api, kind, format!("identify: {e}")),
    };
    if needs_slot(kind) {
        let slot_kind = if api.physical() {
            SlotKind::Physical { reserve_wal: true }
        } else {
            logical_kind("test_decoding")
        };
        if let Err(e) = client
            .create_replication_slot(&slot_name(n), &slot_kind, true)
            .await
        {
            return Report::failed(api, kind, format!("creating the case's slot: {e}"));
        }
    }
    let got = async_call(&mut client, api, kind, n, &tag, pos).await;
    let mut judged = Vec::new();
    for (sql, pattern) in probes(api.physical(), &tag) {
        judged.push(judge_probe(client.simple_query(&sql).await, &pattern));
    }
    let after = judge_after(&judged);
    drop(client);
    if kind == Kind::CreateLogicalPermanent && matches!(got, Got::Ok(_)) {
        let name = tag.clone();
        match tokio::task::spawn_blocking(move || drop_slot(&name)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("dropping the permanent slot: {e}")),
            Err(e) => problems.push(format!("dropping the permanent slot: {e}")),
        }
    }
    judge(api, kind, &tag, got, after, problems)
}

// ---------------------------------------------------------------------------------------
// Reports.

struct Report {
    api: Api,
    kind: Kind,
    outcome: String,
    /// The message of an error that is not the server's own.
    note: Option<String>,
    left: Option<Left>,
    problems: Vec<String>,
}

impl Report {
    fn failed(api: Api, kind: Kind, problem: String) -> Report {
        Report {
            api,
            kind,
            outcome: "-".into(),
            note: None,
            left: None,
            problems: vec![problem],
        }
    }
}

fn judge(
    api: Api,
    kind: Kind,
    tag: &str,
    got: Got,
    after: Result<Left, String>,
    mut problems: Vec<String>,
) -> Report {
    let want = want(api, kind, server().version).expect("only existing pairs run");
    if !want.call.iter().any(|a| accepts(a, &got, tag)) {
        problems.insert(0, format!("(a) expected one of {:?}, got {got}", want.call));
    }
    let left = match after {
        Ok(left) => {
            if want.left != Left::Either && want.left != left {
                problems.push(format!(
                    "(b) the connection was left {left:?}, expected {:?}",
                    want.left
                ));
            }
            Some(left)
        }
        Err(why) => {
            problems.push(format!("(b) {why}"));
            None
        }
    };
    let outcome = match &got {
        Got::Ok(_) => "ok".to_owned(),
        Got::Err(e) => match e.code() {
            Some(code) => format!("{:?} {}", e.kind(), code.code()),
            None => format!("{:?}", e.kind()),
        },
    };
    let note = match &got {
        Got::Err(e) if e.kind() != ErrorKind::Db => Some(e.to_string()),
        _ => None,
    };
    Report {
        api,
        kind,
        outcome,
        note,
        left,
        problems,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a non-string panic".into())
}

fn run_case(api: Api, kind: Kind, n: usize) -> Report {
    if api.is_async() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async_case(api, kind, n))
    } else {
        blocking_case(api, kind, n)
    }
}

fn case_bounded(api: Api, kind: Kind, n: usize) -> Report {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let report = std::panic::catch_unwind(AssertUnwindSafe(|| run_case(api, kind, n)));
        let _ = sender.send(report);
    });
    match receiver.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(report)) => report,
        Ok(Err(panic)) => {
            Report::failed(api, kind, format!("panicked: {}", panic_message(&*panic)))
        }
        // The thread is left behind, still blocked: there is no way to stop it.
        Err(_) => Report::failed(api, kind, format!("hung: no end within {CASE_TIMEOUT:?}")),
    }
}

fn summarize(reports: &[Report], started: Instant) {
    let count = |left: Left| reports.iter().filter(|r| r.left == Some(left)).count();
    let failing: Vec<&Report> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    println!(
        "replication matrix (server {}, libpq {}): {} cases in {:.1} s: {} answered, {} closed, \
         {} neither; {} failing",
        server().version,
        pqlib::version(),
        reports.len(),
        started.elapsed().as_secs_f64(),
        count(Left::Answered),
        count(Left::Closed),
        reports.len() - count(Left::Answered) - count(Left::Closed),
        failing.len()
    );
    println!("{:<20} {:<26} {:<14} left", "api", "kind", "call");
    for r in reports {
        println!(
            "{:<20} {:<26} {:<14} {}{}",
            format!("{:?}", r.api),
            format!("{:?}", r.kind),
            r.outcome,
            r.left.map_or("-".to_owned(), |l| format!("{l:?}")),
            if r.problems.is_empty() { "" } else { "  FAIL" }
        );
    }
    for r in reports {
        if let Some(note) = &r.note {
            println!("[{:?} × {:?}] {note}", r.api, r.kind);
        }
    }
    for report in &failing {
        println!(
            "FAIL [{:?} × {:?}]\n    {}",
            report.api,
            report.kind,
            report.problems.join("\n    ")
        );
    }
    assert!(
        failing.is_empty(),
        "replication matrix: {} of {} cases failed (listed above)",
        failing.len(),
        reports.len()
    );
}

#[test]
fn replication_matrix() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let version = server().version;
    let started = Instant::now();
    let mut cases = Vec::new();
    for &api in APIS {
        for &kind in KINDS {
            if want(api, kind, version).is_some() {
                let n = cases.len();
                cases.push((api, kind, n));
            }
        }
    }
    let queue = Mutex::new(cases.into_iter());
    let reports = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some((api, kind, n)) = next else { break };
                    let report = case_bounded(api, kind, n);
                    reports.lock().unwrap().push((n, report));
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|(n, _)| *n);
    let reports: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
    summarize(&reports, started);
}
