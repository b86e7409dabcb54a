//! The protocol-state invariant (DESIGN.md), tested as a space: every statement kind through
//! every API, generated from two lists rather than written out case by case.
//!
//! For each (API, kind) pair a fresh connection
//! 1. answers a tagged probe (so its statement cache is warm: `DISCARD ALL` and
//!    `DEALLOCATE ALL` then have something to invalidate),
//! 2. runs the kind's SQL through the API, which must give the answer expected for that pair
//!    or a clear error (never a panic, a hang or a wrong answer), and then
//! 3. answers two more tagged probes with exactly their own tags (a result queue shifted by
//!    one shows up on the second), and on the async client four concurrent ones; or it is
//!    closed, and then every later call is an error of kind `Closed`. A wrong tag is never
//!    acceptable.
//!
//! The probe is `SELECT $1::text, chr(233)`: the tag checks that the answer is this request's,
//! and the server-made `é` checks that text still arrives as UTF-8 (what pqlib decodes), which
//! a `SET client_encoding` behind pqlib's back would break.
//!
//! Failures are collected, not raised one by one: each test prints every failing pair with its
//! API and kind, and a summary of how the cases ended.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pqlib::error::ErrorKind;
use pqlib::types::Type;
use pqlib::{
    Connection, Error, LargeObjectMode, PipelineResult, PreparePolicy, Row, Rows,
    SimpleQueryMessage,
};

/// Every case (its call and the probes after it) must end within this.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// How many blocking cases run at once (each on its own thread and connection).
const BLOCKING_PARALLEL: usize = 6;
/// How many async cases run at once (each on its own client).
const ASYNC_PARALLEL: usize = 8;
/// The whole async matrix, bounded from outside its runtime.
const MATRIX_TIMEOUT: Duration = Duration::from_secs(120);

/// Run on every fresh connection before anything else: the table the kinds write to, and a
/// LISTEN so that the NOTIFY kind is delivered to the connection that sends it.
const SETUP: &str = "CREATE TEMP TABLE matrix_t (n int4); LISTEN matrix_ch";
/// The tagged probe; see the module docs.
const PROBE: &str = "SELECT $1::text, chr(233)";
/// What the COPY FROM STDIN cases send.
const COPY_DATA: &[u8] = b"1\n2\n";
/// What the large-object API writes before running the kind, and reads back after it.
const LO_DATA: &[u8] = b"large object data";

// ---------------------------------------------------------------------------------------
// The statement kinds, as data.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RowsTwo,
    RowOne,
    CreateTempTable,
    Insert,
    EmptyString,
    Semicolon,
    CommentOnly,
    DivisionByZero,
    SyntaxError,
    MultiSelect,
    CopyFromStdin,
    CopyToStdout,
    CommentedCopyToStdout,
    TwoCopiesToStdout,
    TwoCopiesFromStdin,
    SelectThenCopy,
    Listen,
    Notify,
    SetLatin1,
    SetUtf8,
    SetSqlAscii,
    Latin1AndBack,
    DiscardAll,
    DeallocateAll,
    Notices,
    Cancelled,
}

/// What a kind's SQL does, which decides what each API must answer.
#[derive(Clone, Copy, Debug)]
enum Nature {
    /// One statement returning these text values in its first column.
    Rows(&'static [&'static str]),
    /// One statement without rows, affecting this many.
    Command(u64),
    /// No statement at all.
    Empty,
    /// One statement failing with this SQLSTATE.
    Fails(&'static str),
    /// Several statements, none of them a COPY; what `simple_query` answers for them, one
    /// line per message as [`messages_answer`] writes them.
    Multi(&'static [&'static str]),
    /// `COPY … FROM STDIN`.
    CopyIn,
    /// `COPY … TO STDOUT` with this output.
    CopyOut(&'static str),
    /// Two `COPY … FROM STDIN` in one text.
    CopyInTwice,
    /// Two `COPY … TO STDOUT` in one text; the first one's output.
    CopyOutTwice(&'static str),
    /// A SELECT, then a `COPY … TO STDOUT` with this output.
    SelectThenCopyOut(&'static str),
    /// `SET client_encoding` to something pqlib does not decode.
    ForeignEncoding,
    /// `DISCARD ALL`: a command that refuses to run inside a transaction block.
    NoTransactionBlock,
    /// Runs until cancelled.
    Cancelled,
}

struct KindDef {
    kind: Kind,
    sql: &'static str,
    nature: Nature,
}

const KINDS: &[KindDef] = &[
    KindDef {
        kind: Kind::RowsTwo,
        sql: "SELECT g::text FROM generate_series(1, 2) g",
        nature: Nature::Rows(&["1", "2"]),
    },
    KindDef {
        kind: Kind::RowOne,
        sql: "SELECT 'one'::text",
        nature: Nature::Rows(&["one"]),
    },
    KindDef {
        kind: Kind::CreateTempTable,
        sql: "CREATE TEMP TABLE IF NOT EXISTS matrix_t (n int4)",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::Insert,
        sql: "INSERT INTO matrix_t VALUES (7)",
        nature: Nature::Command(1),
    },
    KindDef {
        kind: Kind::EmptyString,
        sql: "",
        nature: Nature::Empty,
    },
    KindDef {
        kind: Kind::Semicolon,
        sql: ";",
        nature: Nature::Empty,
    },
    KindDef {
        kind: Kind::CommentOnly,
        sql: "-- nothing but a comment",
        nature: Nature::Empty,
    },
    KindDef {
        kind: Kind::DivisionByZero,
        sql: "SELECT 1/0",
        nature: Nature::Fails("22012"),
    },
    KindDef {
        kind: Kind::SyntaxError,
        sql: "SELEC 1",
        nature: Nature::Fails("42601"),
    },
    KindDef {
        kind: Kind::MultiSelect,
        sql: "SELECT 1; SELECT 2",
        nature: Nature::Multi(&["desc", "row 1", "complete 1", "desc", "row 2", "complete 1"]),
    },
    KindDef {
        kind: Kind::CopyFromStdin,
        sql: "COPY matrix_t FROM STDIN",
        nature: Nature::CopyIn,
    },
    KindDef {
        kind: Kind::CopyToStdout,
        sql: "COPY (SELECT 1) TO STDOUT",
        nature: Nature::CopyOut("1\n"),
    },
    KindDef {
        kind: Kind::CommentedCopyToStdout,
        sql: "/* leading comment */ copy (SELECT 3) TO STDOUT",
        nature: Nature::CopyOut("3\n"),
    },
    KindDef {
        kind: Kind::TwoCopiesToStdout,
        sql: "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT",
        nature: Nature::CopyOutTwice("1\n"),
    },
    KindDef {
        kind: Kind::TwoCopiesFromStdin,
        sql: "COPY matrix_t FROM STDIN; COPY matrix_t FROM STDIN",
        nature: Nature::CopyInTwice,
    },
    KindDef {
        kind: Kind::SelectThenCopy,
        sql: "SELECT 1; COPY (SELECT 2) TO STDOUT",
        nature: Nature::SelectThenCopyOut("2\n"),
    },
    KindDef {
        kind: Kind::Listen,
        sql: "LISTEN matrix_other",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::Notify,
        sql: "NOTIFY matrix_ch, 'x'",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::SetLatin1,
        sql: "SET client_encoding TO 'LATIN1'",
        nature: Nature::ForeignEncoding,
    },
    KindDef {
        kind: Kind::SetUtf8,
        sql: "SET client_encoding TO 'UTF8'",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::SetSqlAscii,
        sql: "SET client_encoding TO 'SQL_ASCII'",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::Latin1AndBack,
        sql: "SET client_encoding TO 'LATIN1'; SET client_encoding TO 'UTF8'",
        nature: Nature::Multi(&["complete 0", "complete 0"]),
    },
    KindDef {
        kind: Kind::DiscardAll,
        sql: "DISCARD ALL",
        nature: Nature::NoTransactionBlock,
    },
    KindDef {
        kind: Kind::DeallocateAll,
        sql: "DEALLOCATE ALL",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::Notices,
        sql: "DO $$ BEGIN RAISE NOTICE 'n1'; RAISE NOTICE 'n2'; END $$",
        nature: Nature::Command(0),
    },
    KindDef {
        kind: Kind::Cancelled,
        // The marker (unique per case) lets the canceller find this statement in
        // pg_stat_activity; see `KindDef::sql`.
        sql: "SELECT pg_sleep(30) /* {marker} */",
        nature: Nature::Cancelled,
    },
];

impl KindDef {
    fn sql(&self, marker: &str) -> String {
        self.sql.replace("{marker}", marker)
    }
}

// ---------------------------------------------------------------------------------------
// The APIs, as data.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    BatchExecute,
    Execute,
    Query,
    QueryOne,
    QueryOpt,
    QueryTyped,
    QueryRaw,
    PrepareQuery,
    Pipeline,
    CopyIn,
    CopyOut,
    Transaction,
    LargeObject,
    SimpleQuery,
    /// `Transaction::bind`, then `query_portal` one row at a time until it returns none.
    Portal,
    AsyncBatchExecute,
    AsyncExecute,
    AsyncQuery,
    AsyncQueryOne,
    AsyncQueryOpt,
    AsyncQueryTyped,
    AsyncQueryRaw,
    AsyncPrepareQuery,
    AsyncPipeline,
    /// `pipeline()` with one statement, its result taken from `stream()`.
    AsyncPipelineStream,
    AsyncCopyIn,
    AsyncCopyOut,
    AsyncTransaction,
    AsyncSimpleQuery,
    AsyncPortal,
}

const BLOCKING_APIS: &[Api] = &[
    Api::BatchExecute,
    Api::Execute,
    Api::Query,
    Api::QueryOne,
    Api::QueryOpt,
    Api::QueryTyped,
    Api::QueryRaw,
    Api::PrepareQuery,
    Api::Pipeline,
    Api::CopyIn,
    Api::CopyOut,
    Api::Transaction,
    Api::LargeObject,
    Api::SimpleQuery,
    Api::Portal,
];

/// The APIs that run SQL text through the statement cache, and so through the unnamed
/// statement under [`PreparePolicy::Never`]: the matrix runs them again with that policy.
const BLOCKING_STATEMENT_APIS: &[Api] = &[
    Api::Execute,
    Api::Query,
    Api::QueryOne,
    Api::QueryOpt,
    Api::QueryRaw,
    Api::Pipeline,
    Api::Transaction,
    Api::Portal,
];

const ASYNC_STATEMENT_APIS: &[Api] = &[
    Api::AsyncExecute,
    Api::AsyncQuery,
    Api::AsyncQueryOne,
    Api::AsyncQueryOpt,
    Api::AsyncQueryRaw,
    Api::AsyncPipeline,
    Api::AsyncPipelineStream,
    Api::AsyncTransaction,
    Api::AsyncPortal,
];

const ASYNC_APIS: &[Api] = &[
    Api::AsyncBatchExecute,
    Api::AsyncExecute,
    Api::AsyncQuery,
    Api::AsyncQueryOne,
    Api::AsyncQueryOpt,
    Api::AsyncQueryTyped,
    Api::AsyncQueryRaw,
    Api::AsyncPrepareQuery,
    Api::AsyncPipeline,
    Api::AsyncPipelineStream,
    Api::AsyncCopyIn,
    Api::AsyncCopyOut,
    Api::AsyncTransaction,
    Api::AsyncSimpleQuery,
    Api::AsyncPortal,
];

/// How an API presents a successful answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `batch_execute`: nothing.
    Done,
    /// `execute`: the count.
    Affected,
    /// The rows (`query` and everything that returns `Rows`).
    Rows,
    /// `query_one`: exactly one row.
    One,
    /// `query_opt`: at most one row.
    Opt,
    /// `copy_in`: rows copied.
    CopyIn,
    /// `copy_out`: the data.
    CopyOut,
    /// `simple_query`: every statement's messages.
    Messages,
}

impl Api {
    fn shape(self) -> Shape {
        use Api::*;
        match self {
            BatchExecute | AsyncBatchExecute => Shape::Done,
            Execute | AsyncExecute => Shape::Affected,
            QueryOne | AsyncQueryOne => Shape::One,
            QueryOpt | AsyncQueryOpt => Shape::Opt,
            CopyIn | AsyncCopyIn => Shape::CopyIn,
            CopyOut | AsyncCopyOut => Shape::CopyOut,
            SimpleQuery | AsyncSimpleQuery => Shape::Messages,
            Query | QueryTyped | QueryRaw | PrepareQuery | Pipeline | Transaction | LargeObject
            | Portal | AsyncQuery | AsyncQueryTyped | AsyncQueryRaw | AsyncPrepareQuery
            | AsyncPipeline | AsyncPipelineStream | AsyncTransaction | AsyncPortal => Shape::Rows,
        }
    }

    /// Whether the statement runs inside an explicit transaction block.
    fn in_transaction(self) -> bool {
        matches!(
            self,
            Api::Transaction
                | Api::LargeObject
                | Api::Portal
                | Api::AsyncTransaction
                | Api::AsyncPortal
        )
    }

    /// Whether the statement runs in libpq's pipeline mode (the async client pipelines
    /// everything but the simple protocol and COPY).
    fn pipelined(self) -> bool {
        use Api::*;
        matches!(
            self,
            Pipeline
                | AsyncExecute
                | AsyncQuery
                | AsyncQueryOne
                | AsyncQueryOpt
                | AsyncQueryTyped
                | AsyncQueryRaw
                | AsyncPrepareQuery
                | AsyncPipeline
                | AsyncPipelineStream
                | AsyncPortal
        )
    }

    /// Whether the statement becomes a cursor (`DECLARE … CURSOR FOR <sql>`).
    fn portal(self) -> bool {
        matches!(self, Api::Portal | Api::AsyncPortal)
    }
}

// ---------------------------------------------------------------------------------------
// Answers and expectations.

/// A successful call, in a form every API's answer fits.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Done,
    Affected(u64),
    Rows {
        values: Vec<String>,
        affected: u64,
    },
    One(String),
    NoRow,
    Copied(u64),
    Data(String),
    /// `simple_query`'s messages, one line each (see [`messages_answer`]).
    Messages(Vec<String>),
    /// The API broke its own contract (a pipeline without its sync result, a large object
    /// that reads back different bytes, …); never expected.
    Anomaly(String),
}

/// What a call returned.
#[derive(Clone, Debug)]
enum Got {
    Ok(Answer),
    Err {
        kind: ErrorKind,
        code: Option<String>,
        message: String,
    },
}

impl From<Result<Answer, Error>> for Got {
    fn from(result: Result<Answer, Error>) -> Got {
        match result {
            Ok(answer) => Got::Ok(answer),
            Err(e) => Got::Err {
                kind: e.kind(),
                code: e.code().map(|c| c.code().to_owned()),
                message: e.to_string(),
            },
        }
    }
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Ok(answer) => write!(f, "{answer:?}"),
            Got::Err {
                kind,
                code,
                message,
            } => write!(
                f,
                "error {kind:?} {} ({message})",
                code.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// What a call may return.
#[derive(Clone, Debug)]
enum Want {
    Answer(Answer),
    /// An error of this kind (and SQLSTATE, if given).
    Err(ErrorKind, Option<&'static str>),
    /// A successful COPY FROM STDIN of any count (checked against the table afterwards).
    AnyCopied,
    Either(Vec<Want>),
}

impl Want {
    fn accepts(&self, got: &Got) -> bool {
        match (self, got) {
            (Want::Answer(want), Got::Ok(got)) => want == got,
            (
                Want::Err(kind, code),
                Got::Err {
                    kind: k, code: c, ..
                },
            ) => kind == k && code.is_none_or(|code| c.as_deref() == Some(code)),
            (Want::AnyCopied, Got::Ok(Answer::Copied(_))) => true,
            (Want::Either(options), got) => options.iter().any(|w| w.accepts(got)),
            _ => false,
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Answer(answer) => write!(f, "{answer:?}"),
            Want::Err(kind, None) => write!(f, "error {kind:?}"),
            Want::Err(kind, Some(code)) => write!(f, "error {kind:?} {code}"),
            Want::AnyCopied => write!(f, "Copied(_)"),
            Want::Either(options) => {
                let all: Vec<String> = options.iter().map(ToString::to_string).collect();
                write!(f, "one of [{}]", all.join(" | "))
            }
        }
    }
}

fn db(code: &'static str) -> Want {
    Want::Err(ErrorKind::Db, Some(code))
}

fn bad_input() -> Want {
    Want::Err(ErrorKind::BadInput, None)
}

/// The successful answer of a single statement (`values` in its first column, `affected`
/// rows) as `api` presents it.
fn success(api: Api, values: &[&str], affected: u64) -> Want {
    let owned = || values.iter().map(|v| v.to_string()).collect();
    let answer = match (api.shape(), values) {
        (Shape::Done, _) => Answer::Done,
        (Shape::Affected, _) => Answer::Affected(affected),
        (Shape::Rows, _) => Answer::Rows {
            values: owned(),
            affected,
        },
        (Shape::One, [one]) | (Shape::Opt, [one]) => Answer::One(one.to_string()),
        (Shape::Opt, []) => Answer::NoRow,
        (Shape::One | Shape::Opt, _) => return Want::Err(ErrorKind::RowCount, None),
        // COPY APIs given a statement that is not a COPY (it ran; it is not data).
        (Shape::CopyIn | Shape::CopyOut, _) => return bad_input(),
        (Shape::Messages, _) => unreachable!("simple_query's answers come from want_messages"),
    };
    Want::Answer(answer)
}

/// Two COPYs in one text through any API but the COPY ones: refused before sending, or (by
/// the server, at Parse, before anything runs) as several statements.
fn refused_copies(shape: Shape) -> Want {
    match shape {
        Shape::Done | Shape::CopyIn | Shape::CopyOut | Shape::Messages => bad_input(),
        _ => Want::Either(vec![bad_input(), db("42601")]),
    }
}

/// `simple_query`'s expectation: each statement's messages (a row description, its rows and
/// its completion; a completion alone for a command; nothing for an empty text), and COPY
/// refused as `batch_execute` refuses it (the COPY ended, then `BadInput`).
fn want_messages(api: Api, nature: Nature) -> Want {
    let lines = |lines: Vec<String>| Want::Answer(Answer::Messages(lines));
    let complete = |n: u64| lines(vec![format!("complete {n}")]);
    match nature {
        Nature::Rows(values) => {
            let mut all = vec!["desc".to_owned()];
            all.extend(values.iter().map(|v| format!("row {v}")));
            all.push(format!("complete {}", values.len()));
            lines(all)
        }
        Nature::Command(n) => complete(n),
        Nature::Empty => lines(Vec::new()),
        Nature::Fails(code) => db(code),
        Nature::Multi(messages) => lines(messages.iter().map(|m| m.to_string()).collect()),
        Nature::CopyIn
        | Nature::CopyOut(_)
        | Nature::CopyInTwice
        | Nature::CopyOutTwice(_)
        | Nature::SelectThenCopyOut(_) => bad_input(),
        Nature::ForeignEncoding => Want::Either(vec![
            complete(0),
            bad_input(),
            Want::Err(ErrorKind::Unsupported, None),
            Want::Err(ErrorKind::Closed, None),
        ]),
        Nature::NoTransactionBlock if api.in_transaction() => db("25001"),
        Nature::NoTransactionBlock => complete(0),
        Nature::Cancelled => db("57014"),
    }
}

/// The expectation for one pair: the whole table of the matrix, by rule.
fn want(api: Api, nature: Nature) -> Want {
    if api.portal() {
        return want_portal(nature);
    }
    let shape = api.shape();
    if shape == Shape::Messages {
        return want_messages(api, nature);
    }
    match nature {
        Nature::Rows(values) => success(api, values, values.len() as u64),
        Nature::Command(n) => success(api, &[], n),
        Nature::Empty => success(api, &[], 0),
        Nature::Fails(code) => db(code),
        // The extended protocol takes one statement: the server refuses several.
        Nature::Multi(_) => match shape {
            Shape::Done => Want::Answer(Answer::Done),
            Shape::CopyIn | Shape::CopyOut => bad_input(),
            _ => db("42601"),
        },
        Nature::CopyIn => match shape {
            Shape::CopyIn => Want::Answer(Answer::Copied(2)),
            _ => bad_input(),
        },
        Nature::CopyOut(data) => match shape {
            Shape::CopyOut => Want::Answer(Answer::Data(data.into())),
            _ => bad_input(),
        },
        // Only the first COPY of a text is taken; the second is aborted, which (one implicit
        // transaction) fails the whole text. Success is acceptable only if the table agrees.
        Nature::CopyInTwice => match shape {
            Shape::CopyIn => Want::Either(vec![
                Want::AnyCopied,
                Want::Err(ErrorKind::Db, None),
                bad_input(),
            ]),
            _ => refused_copies(shape),
        },
        Nature::CopyOutTwice(data) => match shape {
            Shape::CopyOut => Want::Either(vec![
                Want::Answer(Answer::Data(data.into())),
                Want::Err(ErrorKind::Db, None),
                bad_input(),
            ]),
            _ => refused_copies(shape),
        },
        Nature::SelectThenCopyOut(data) => match shape {
            Shape::Done | Shape::CopyIn => bad_input(),
            Shape::CopyOut => Want::Answer(Answer::Data(data.into())),
            _ => db("42601"),
        },
        // pqlib may run it (the probes then show whether it coped) or refuse it.
        Nature::ForeignEncoding => Want::Either(vec![
            success(api, &[], 0),
            bad_input(),
            Want::Err(ErrorKind::Unsupported, None),
            Want::Err(ErrorKind::Closed, None),
        ]),
        Nature::NoTransactionBlock => {
            if api.in_transaction() {
                db("25001")
            } else if api.pipelined() {
                // PostgreSQL 17+ treats a pipeline segment as a transaction block.
                Want::Either(vec![success(api, &[], 0), db("25001")])
            } else {
                success(api, &[], 0)
            }
        }
        Nature::Cancelled => db("57014"),
    }
}

/// Through a portal the SQL becomes `DECLARE … CURSOR FOR <sql>`, which takes one SELECT (or
/// VALUES): anything else is a syntax error there (so the SETs never run), several statements
/// fail when the text is prepared, and COPY text is refused before anything is sent. The
/// cancelled statement sleeps in the FETCH.
fn want_portal(nature: Nature) -> Want {
    match nature {
        Nature::Rows(values) => Want::Answer(Answer::Rows {
            values: values.iter().map(|v| v.to_string()).collect(),
            affected: values.len() as u64,
        }),
        Nature::Fails(code) => db(code),
        Nature::Command(_)
        | Nature::Empty
        | Nature::Multi(_)
        | Nature::SelectThenCopyOut(_)
        | Nature::ForeignEncoding
        | Nature::NoTransactionBlock => db("42601"),
        Nature::CopyIn | Nature::CopyOut(_) | Nature::CopyInTwice | Nature::CopyOutTwice(_) => {
            bad_input()
        }
        Nature::Cancelled => db("57014"),
    }
}

// ---------------------------------------------------------------------------------------
// Reading answers.

/// The first column of a row as text (for text columns), or its type's name.
fn value_of(row: &Row<'_>) -> String {
    match row.columns().first() {
        None => "<no columns>".into(),
        Some(column) if *column.type_() == Type::TEXT => {
            match row.try_get::<_, Option<String>>(0) {
                Ok(Some(text)) => text,
                Ok(None) => "NULL".into(),
                Err(e) => format!("<undecodable: {e}>"),
            }
        }
        Some(column) => format!("<{}>", column.type_().name()),
    }
}

fn rows_answer(rows: &Rows) -> Answer {
    Answer::Rows {
        values: rows.iter().map(|row| value_of(&row)).collect(),
        affected: rows.rows_affected(),
    }
}

/// `simple_query`'s messages: `desc`, `row {first value}` (`NULL` for NULL), `complete {n}`.
fn messages_answer(messages: &[SimpleQueryMessage]) -> Answer {
    let line = |message: &SimpleQueryMessage| match message {
        SimpleQueryMessage::RowDescription(_) => "desc".to_owned(),
        SimpleQueryMessage::Row(row) => match row.try_get(0) {
            Ok(Some(value)) => format!("row {value}"),
            Ok(None) => "row NULL".to_owned(),
            Err(e) => format!("row <undecodable: {e}>"),
        },
        SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
        other => format!("unknown message {other:?}"),
    };
    Answer::Messages(messages.iter().map(line).collect())
}

fn one_answer(row: pqlib::OwnedRow) -> Answer {
    Answer::One(value_of(&row.row()))
}

fn opt_answer(row: Option<pqlib::OwnedRow>) -> Answer {
    row.map_or(Answer::NoRow, one_answer)
}

// ---------------------------------------------------------------------------------------
// Probes: the connection's state after a case.

/// What one tagged probe showed.
enum Probe {
    /// Exactly its own tag (and UTF-8 text).
    Own,
    /// An error of kind `Closed`.
    Closed,
    /// Anything else: a wrong answer or another error.
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

fn judge_probe(result: Result<Rows, Error>, tag: &str) -> Probe {
    let rows = match result {
        Ok(rows) => rows,
        Err(e) if e.is_closed() => return Probe::Closed,
        Err(e) => return Probe::Wrong(format!("error {:?}: {e}", e.kind())),
    };
    if rows.len() != 1 || rows.columns().len() != 2 {
        return Probe::Wrong(format!(
            "{} rows of {} columns: {:?}",
            rows.len(),
            rows.columns().len(),
            rows_answer(&rows)
        ));
    }
    let row = rows.get(0).expect("one row");
    let got_tag = row.try_get::<_, String>(0).map_err(|e| e.to_string());
    let got_e = row.try_get::<_, String>(1).map_err(|e| e.to_string());
    match (got_tag, got_e) {
        (Ok(t), Ok(e)) if t == tag && e == "é" => Probe::Own,
        (t, e) => Probe::Wrong(format!("tag {t:?} (sent {tag:?}), chr(233) {e:?}")),
    }
}

/// How a case left its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Answered,
    Closed,
}

/// Every probe after the case answered with its own tag, or every one was `Closed`.
fn judge_after(probes: &[(String, Probe)], closed_flag: bool) -> Result<After, String> {
    if probes.iter().all(|(_, p)| matches!(p, Probe::Own)) {
        return Ok(After::Answered);
    }
    if probes.iter().all(|(_, p)| matches!(p, Probe::Closed)) {
        if closed_flag {
            return Ok(After::Closed);
        }
        return Err("every probe failed with Closed but is_closed() is false".into());
    }
    let own = probes
        .iter()
        .filter(|(_, p)| matches!(p, Probe::Own))
        .count();
    let closed = probes
        .iter()
        .filter(|(_, p)| matches!(p, Probe::Closed))
        .count();
    let wrong: Vec<String> = probes
        .iter()
        .filter(|(_, p)| matches!(p, Probe::Wrong(_)))
        .map(|(tag, p)| format!("{tag}: {p}"))
        .collect();
    Err(format!(
        "of {} probes {own} answered, {closed} closed, {} wrong; first wrong: {}",
        probes.len(),
        wrong.len(),
        wrong.first().map_or("-", String::as_str)
    ))
}

// ---------------------------------------------------------------------------------------
// One case's report.

struct Report {
    api: Api,
    kind: Kind,
    /// The case ended (no panic, no hang), with what the call returned and how the
    /// connection was left; or what went wrong.
    after: Option<After>,
    problems: Vec<String>,
}

impl Report {
    fn failed(api: Api, kind: Kind, problem: String) -> Report {
        Report {
            api,
            kind,
            after: None,
            problems: vec![problem],
        }
    }
}

/// Checks a finished case: the call's answer against the pair's expectation, and the probes.
fn judge(
    api: Api,
    def: &KindDef,
    got: &Got,
    after: Result<After, String>,
    mut problems: Vec<String>,
) -> Report {
    let want = want(api, def.nature);
    if !want.accepts(got) {
        problems.insert(0, format!("(a) expected {want}, got {got}"));
    }
    let after = match after {
        Ok(after) => Some(after),
        Err(why) => {
            problems.push(format!("(b) {why}"));
            None
        }
    };
    Report {
        api,
        kind: def.kind,
        after,
        problems,
    }
}

fn tag(api: Api, kind: Kind, n: usize, which: &str) -> String {
    format!("tag-{api:?}-{kind:?}-{n}-{which}")
}

fn marker(api: Api, n: usize) -> String {
    format!("matrix-cancel-{api:?}-{n}")
}

/// Finds the cancel marker's statement sleeping in pg_stat_activity (another backend's): by
/// the marker in its text, or (for a portal, where the sleeping statement is the `FETCH`) by
/// the backend pid given as the marker `pid:N`.
const ACTIVE_SLEEP: &str = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
     WHERE pid <> pg_backend_pid() AND state = 'active' AND wait_event = 'PgSleep' \
     AND (strpos(query, $1) > 0 OR 'pid:' || pid = $1))";

fn summarize(title: &str, reports: &[Report], started: Instant) {
    let answered = reports
        .iter()
        .filter(|r| r.after == Some(After::Answered))
        .count();
    let closed = reports
        .iter()
        .filter(|r| r.after == Some(After::Closed))
        .count();
    let failing: Vec<&Report> = reports.iter().filter(|r| !r.problems.is_empty()).collect();
    println!(
        "{title}: {} cases ({} APIs × {} kinds) in {:.1} s: {answered} answered, {closed} \
         closed, {} neither (wrong probe answers or no end); {} failing",
        reports.len(),
        reports.len() / KINDS.len(),
        KINDS.len(),
        started.elapsed().as_secs_f64(),
        reports.len() - answered - closed,
        failing.len()
    );
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
        "{title}: {} of {} cases failed (listed above)",
        failing.len(),
        reports.len()
    );
}

/// The cases of `apis` × every kind, numbered.
fn cases(apis: &[Api]) -> Vec<(Api, &'static KindDef, usize)> {
    let mut cases = Vec::new();
    for &api in apis {
        for def in KINDS {
            cases.push((api, def, cases.len()));
        }
    }
    cases
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a non-string panic".into())
}

// ---------------------------------------------------------------------------------------
// The blocking client.

fn run_blocking(conn: &mut Connection, api: Api, sql: &str) -> Result<Answer, Error> {
    match api {
        Api::BatchExecute => conn.batch_execute(sql).map(|()| Answer::Done),
        Api::Execute => conn.execute(sql, &[]).map(Answer::Affected),
        Api::Query => conn.query(sql, &[]).map(|rows| rows_answer(&rows)),
        Api::QueryOne => conn.query_one(sql, &[]).map(one_answer),
        Api::QueryOpt => conn.query_opt(sql, &[]).map(opt_answer),
        Api::QueryTyped => conn.query_typed(sql, &[]).map(|rows| rows_answer(&rows)),
        Api::QueryRaw => {
            let mut stream = conn.query_raw(sql, Vec::<String>::new())?;
            let mut values = Vec::new();
            while let Some(row) = stream.next_row() {
                values.push(value_of(&row?));
            }
            Ok(match stream.rows_affected() {
                Some(affected) => Answer::Rows { values, affected },
                None => Answer::Anomaly("the ended stream has no rows_affected".into()),
            })
        }
        Api::PrepareQuery => {
            let statement = conn.prepare(sql)?;
            conn.query(&statement, &[]).map(|rows| rows_answer(&rows))
        }
        Api::Pipeline => run_pipeline(conn, sql),
        Api::CopyIn => {
            let mut writer = conn.copy_in(sql)?;
            writer.write_all(COPY_DATA).map_err(Error::from)?;
            writer.finish().map(Answer::Copied)
        }
        Api::CopyOut => {
            let mut reader = conn.copy_out(sql)?;
            let mut data = Vec::new();
            reader.read_to_end(&mut data).map_err(Error::from)?;
            Ok(Answer::Data(String::from_utf8_lossy(&data).into_owned()))
        }
        Api::Transaction => {
            let mut tx = conn.transaction()?;
            let result = tx.query(sql, &[]).map(|rows| rows_answer(&rows));
            end_transaction(tx, result)
        }
        Api::LargeObject => run_large_object(conn, sql),
        Api::SimpleQuery => conn.simple_query(sql).map(|m| messages_answer(&m)),
        Api::Portal => {
            let mut tx = conn.transaction()?;
            let result = run_portal(&mut tx, sql);
            end_transaction(tx, result)
        }
        _ => unreachable!("{api:?} is async"),
    }
}

/// At most this many fetches of one row each before a portal counts as never ending.
const PORTAL_FETCHES: usize = 100;

fn run_portal(tx: &mut pqlib::Transaction<'_>, sql: &str) -> Result<Answer, Error> {
    let portal = tx.bind(sql, &[])?;
    let (mut values, mut affected) = (Vec::new(), 0);
    for _ in 0..PORTAL_FETCHES {
        let rows = tx.query_portal(&portal, 1)?;
        if rows.is_empty() {
            return Ok(Answer::Rows { values, affected });
        }
        affected += rows.rows_affected();
        values.extend(rows.iter().map(|row| value_of(&row)));
    }
    Ok(Answer::Anomaly(format!(
        "the portal still had rows after {PORTAL_FETCHES} fetches"
    )))
}

fn run_pipeline(conn: &mut Connection, sql: &str) -> Result<Answer, Error> {
    let mut pipeline = conn.pipeline()?;
    pipeline.query(sql, &[])?;
    pipeline.sync()?;
    let first = match pipeline.next_result() {
        Some(first) => first,
        None => return Ok(Answer::Anomaly("no result for the statement".into())),
    };
    if matches!(&first, Err(e) if e.is_closed()) {
        return first.map(|_| Answer::Done);
    }
    let mut rest = Vec::new();
    while let Some(result) = pipeline.next_result() {
        rest.push(result);
    }
    if !(rest.len() == 1 && matches!(&rest[0], Ok(r) if r.is_sync())) {
        return Ok(Answer::Anomaly(format!(
            "after the statement's result, expected one sync, got {rest:?}"
        )));
    }
    pipeline.finish()?;
    match first? {
        PipelineResult::Rows(rows) => Ok(rows_answer(&rows)),
        other => Ok(Answer::Anomaly(format!("not rows: {other:?}"))),
    }
}

fn end_transaction(
    tx: pqlib::Transaction<'_>,
    result: Result<Answer, Error>,
) -> Result<Answer, Error> {
    match &result {
        Ok(_) => {
            if let Err(e) = tx.commit() {
                return Ok(Answer::Anomaly(format!("commit failed: {e}")));
            }
        }
        Err(_) => match tx.rollback() {
            Err(e) if !e.is_closed() => {
                return Ok(Answer::Anomaly(format!("rollback failed: {e}")));
            }
            _ => {}
        },
    }
    result
}

/// As [`end_transaction`], for the async client.
async fn end_async_transaction(
    tx: pqlib::tokio::Transaction<'_>,
    result: Result<Answer, Error>,
) -> Result<Answer, Error> {
    match &result {
        Ok(_) => {
            if let Err(e) = tx.commit().await {
                return Ok(Answer::Anomaly(format!("commit failed: {e}")));
            }
        }
        Err(_) => match tx.rollback().await {
            Err(e) if !e.is_closed() => {
                return Ok(Answer::Anomaly(format!("rollback failed: {e}")));
            }
            _ => {}
        },
    }
    result
}

/// A large object written before the statement, inside the same transaction, must read back
/// the same afterwards.
fn run_large_object(conn: &mut Connection, sql: &str) -> Result<Answer, Error> {
    let mut tx = conn.transaction()?;
    let oid = tx.large_object_create()?;
    let mut lo = tx.large_object_open(oid, LargeObjectMode::ReadWrite)?;
    lo.write_all(LO_DATA).map_err(Error::from)?;
    lo.close()?;
    let result = tx.query(sql, &[]).map(|rows| rows_answer(&rows));
    if result.is_ok() {
        let mut lo = tx.large_object_open(oid, LargeObjectMode::Read)?;
        let mut data = Vec::new();
        lo.read_to_end(&mut data).map_err(Error::from)?;
        drop(lo);
        if data != LO_DATA {
            return Ok(Answer::Anomaly(format!(
                "the large object reads back {:?}",
                String::from_utf8_lossy(&data)
            )));
        }
    }
    end_transaction(tx, result)
}

/// Cancels the marker's statement once another backend shows it sleeping (bounded poll).
fn cancel_when_active(token: pqlib::CancelToken, marker: String) -> Result<(), String> {
    let mut observer = Connection::connect(&common::conninfo()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: bool = observer
            .query_one(ACTIVE_SLEEP, &[&marker])
            .map_err(|e| e.to_string())?
            .get(0);
        if active {
            return token.cancel_query().map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            return Err("the statement never showed up sleeping within 10 s".into());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The test server's config with `policy`.
fn config(policy: PreparePolicy) -> pqlib::Config {
    common::config_with(&common::conninfo(), policy)
}

fn blocking_case(api: Api, def: &'static KindDef, n: usize, policy: PreparePolicy) -> Report {
    let mut conn = config(policy).connect().expect("connect");
    let notices = Arc::new(Mutex::new(Vec::new()));
    {
        let notices = notices.clone();
        conn.set_notice_handler(move |notice| {
            notices.lock().unwrap().push(notice.message().to_owned());
        });
    }
    conn.batch_execute(SETUP).expect("setup");
    let pre = tag(api, def.kind, n, "before");
    if let probe @ (Probe::Closed | Probe::Wrong(_)) = judge_probe(conn.query(PROBE, &[&pre]), &pre)
    {
        return Report::failed(
            api,
            def.kind,
            format!("setup: probe before the case: {probe}"),
        );
    }

    let marker = marker(api, n);
    let sql = def.sql(&marker);
    let canceller = matches!(def.nature, Nature::Cancelled).then(|| {
        let token = conn.cancel_token();
        let marker = if api.portal() {
            format!("pid:{}", conn.backend_pid())
        } else {
            marker.clone()
        };
        thread::spawn(move || cancel_when_active(token, marker))
    });
    let got = Got::from(run_blocking(&mut conn, api, &sql));
    let mut problems = Vec::new();
    if let Some(canceller) = canceller {
        if let Err(why) = canceller.join().expect("the canceller panicked") {
            problems.push(format!("canceller: {why}"));
        }
    }

    let mut probes = Vec::new();
    for which in ["after-1", "after-2"] {
        let tag = tag(api, def.kind, n, which);
        let probe = judge_probe(conn.query(PROBE, &[&tag]), &tag);
        probes.push((tag, probe));
    }
    let after = judge_after(&probes, conn.is_closed());

    if after == Ok(After::Answered) {
        check_table(&got, || {
            conn.query_one("SELECT count(*) FROM matrix_t", &[])
                .map(|row| row.get(0))
        })
        .unwrap_or_else(|p| problems.push(p));
        if def.kind == Kind::Notices && matches!(got, Got::Ok(_)) {
            let seen = notices.lock().unwrap().clone();
            if !(seen.contains(&"n1".to_string()) && seen.contains(&"n2".to_string())) {
                problems.push(format!(
                    "the notices n1 and n2 were not both seen: {seen:?}"
                ));
            }
        }
    }
    judge(api, def, &got, after, problems)
}

/// A COPY FROM STDIN reported as successful must have put exactly that many rows in the table.
fn check_table(got: &Got, count: impl FnOnce() -> Result<i64, Error>) -> Result<(), String> {
    let Got::Ok(Answer::Copied(copied)) = got else {
        return Ok(());
    };
    match count() {
        Ok(rows) if u64::try_from(rows) == Ok(*copied) => Ok(()),
        Ok(rows) => Err(format!(
            "copy_in reported {copied} rows, the table has {rows}"
        )),
        Err(e) => Err(format!("counting the table's rows: {e}")),
    }
}

/// Runs a case on its own thread, bounded by [`CASE_TIMEOUT`]; a panic or a hang is a report.
fn blocking_case_bounded(
    api: Api,
    def: &'static KindDef,
    n: usize,
    policy: PreparePolicy,
) -> Report {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let report =
            std::panic::catch_unwind(AssertUnwindSafe(|| blocking_case(api, def, n, policy)));
        let _ = sender.send(report);
    });
    match receiver.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(report)) => report,
        Ok(Err(panic)) => Report::failed(
            api,
            def.kind,
            format!("panicked: {}", panic_message(&*panic)),
        ),
        // The thread is left behind, still blocked: there is no way to stop it.
        Err(_) => Report::failed(
            api,
            def.kind,
            format!("hung: no end within {CASE_TIMEOUT:?}"),
        ),
    }
}

#[test]
fn blocking_matrix() {
    blocking_matrix_with("blocking matrix", BLOCKING_APIS, PreparePolicy::Always);
}

/// SQL text as the unnamed statement: described once, then Parse/Bind/Execute each run.
#[test]
fn blocking_matrix_never_prepare() {
    blocking_matrix_with(
        "blocking matrix, PreparePolicy::Never",
        BLOCKING_STATEMENT_APIS,
        PreparePolicy::Never,
    );
}

fn blocking_matrix_with(title: &str, apis: &[Api], policy: PreparePolicy) {
    let started = Instant::now();
    let queue = Mutex::new(cases(apis).into_iter());
    let reports = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..BLOCKING_PARALLEL {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some((api, def, n)) = next else { break };
                    let report = blocking_case_bounded(api, def, n, policy);
                    reports.lock().unwrap().push((n, report));
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|(n, _)| *n);
    let reports: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
    summarize(title, &reports, started);
}

// ---------------------------------------------------------------------------------------
// The async client.

async fn run_async(client: &pqlib::tokio::Client, api: Api, sql: &str) -> Result<Answer, Error> {
    match api {
        Api::AsyncBatchExecute => client.batch_execute(sql).await.map(|()| Answer::Done),
        Api::AsyncExecute => client.execute(sql, &[]).await.map(Answer::Affected),
        Api::AsyncQuery => client.query(sql, &[]).await.map(|rows| rows_answer(&rows)),
        Api::AsyncQueryOne => client.query_one(sql, &[]).await.map(one_answer),
        Api::AsyncQueryOpt => client.query_opt(sql, &[]).await.map(opt_answer),
        Api::AsyncQueryTyped => client
            .query_typed(sql, &[])
            .await
            .map(|rows| rows_answer(&rows)),
        Api::AsyncQueryRaw => {
            let mut stream = client.query_raw(sql, Vec::<String>::new()).await?;
            let mut values = Vec::new();
            while let Some(chunk) = stream.next_chunk().await {
                values.extend(chunk?.iter().map(|row| value_of(&row)));
            }
            Ok(match stream.rows_affected() {
                Some(affected) => Answer::Rows { values, affected },
                None => Answer::Anomaly("the ended stream has no rows_affected".into()),
            })
        }
        Api::AsyncPrepareQuery => {
            let statement = client.prepare(sql).await?;
            client
                .query(&statement, &[])
                .await
                .map(|rows| rows_answer(&rows))
        }
        Api::AsyncPipeline => {
            let mut batch = client.pipeline();
            batch.query(sql, &[]).await?;
            let results = batch.run().await?;
            Ok(match results.as_slice() {
                [rows] => rows_answer(rows),
                other => Answer::Anomaly(format!("{} results for one statement", other.len())),
            })
        }
        Api::AsyncPipelineStream => {
            let mut batch = client.pipeline();
            batch.query(sql, &[]).await?;
            let mut stream = batch.stream()?;
            let mut results = Vec::new();
            while let Some(rows) = stream.next_result().await {
                results.push(rows?);
            }
            Ok(match results.as_slice() {
                [rows] => rows_answer(rows),
                other => Answer::Anomaly(format!("{} results for one statement", other.len())),
            })
        }
        Api::AsyncCopyIn => {
            let mut sink = client.copy_in(sql).await?;
            sink.send(Bytes::from_static(COPY_DATA)).await?;
            sink.finish().await.map(Answer::Copied)
        }
        Api::AsyncCopyOut => {
            let mut stream = client.copy_out(sql).await?;
            let mut data = Vec::new();
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(&chunk?);
            }
            Ok(Answer::Data(String::from_utf8_lossy(&data).into_owned()))
        }
        Api::AsyncTransaction => {
            let mut client = client.clone();
            let tx = client.transaction().await?;
            let result = tx.query(sql, &[]).await.map(|rows| rows_answer(&rows));
            end_async_transaction(tx, result).await
        }
        Api::AsyncSimpleQuery => client.simple_query(sql).await.map(|m| messages_answer(&m)),
        Api::AsyncPortal => {
            let mut client = client.clone();
            let tx = client.transaction().await?;
            let result = run_async_portal(&tx, sql).await;
            end_async_transaction(tx, result).await
        }
        _ => unreachable!("{api:?} is blocking"),
    }
}

async fn run_async_portal(tx: &pqlib::tokio::Transaction<'_>, sql: &str) -> Result<Answer, Error> {
    let portal = tx.bind(sql, &[]).await?;
    let (mut values, mut affected) = (Vec::new(), 0);
    for _ in 0..PORTAL_FETCHES {
        let rows = tx.query_portal(&portal, 1).await?;
        if rows.is_empty() {
            return Ok(Answer::Rows { values, affected });
        }
        affected += rows.rows_affected();
        values.extend(rows.iter().map(|row| value_of(&row)));
    }
    Ok(Answer::Anomaly(format!(
        "the portal still had rows after {PORTAL_FETCHES} fetches"
    )))
}

async fn cancel_when_active_async(
    token: pqlib::tokio::CancelToken,
    marker: String,
) -> Result<(), String> {
    let observer = common::connect_async().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: bool = observer
            .query_one(ACTIVE_SLEEP, &[&marker])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if active {
            return token.cancel_query().await.map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            return Err("the statement never showed up sleeping within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn async_probe(client: &pqlib::tokio::Client, tag: String) -> (String, Probe) {
    let probe = judge_probe(client.query(PROBE, &[&tag]).await, &tag);
    (tag, probe)
}

async fn async_case(api: Api, def: &'static KindDef, n: usize, policy: PreparePolicy) -> Report {
    let (client, connection) = pqlib::tokio::connect_config(&config(policy))
        .await
        .expect("connect");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    client.batch_execute(SETUP).await.expect("setup");
    let pre = tag(api, def.kind, n, "before");
    if let (_, probe @ (Probe::Closed | Probe::Wrong(_))) = async_probe(&client, pre).await {
        return Report::failed(
            api,
            def.kind,
            format!("setup: probe before the case: {probe}"),
        );
    }

    let marker = marker(api, n);
    let sql = def.sql(&marker);
    let marker = if api.portal() && matches!(def.nature, Nature::Cancelled) {
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("the backend pid")
            .get(0);
        format!("pid:{pid}")
    } else {
        marker
    };
    let canceller = matches!(def.nature, Nature::Cancelled)
        .then(|| tokio::spawn(cancel_when_active_async(client.cancel_token(), marker)));
    let got = Got::from(run_async(&client, api, &sql).await);
    let mut problems = Vec::new();
    if let Some(canceller) = canceller {
        if let Err(why) = canceller.await.expect("the canceller panicked") {
            problems.push(format!("canceller: {why}"));
        }
    }

    let mut probes = Vec::new();
    for which in ["after-1", "after-2"] {
        probes.push(async_probe(&client, tag(api, def.kind, n, which)).await);
    }
    // Four at once: each must still get its own answer.
    let concurrent = (0..4).map(|i| async_probe(&client, tag(api, def.kind, n, &format!("c{i}"))));
    probes.extend(futures_util::future::join_all(concurrent).await);
    let closed_flag = if probes.iter().all(|(_, p)| matches!(p, Probe::Closed)) {
        // The connection task ends once it has given up on the connection; give it a
        // bounded moment to wind down, then the client must say so.
        wait_closed(&client).await
    } else {
        client.is_closed()
    };
    let after = judge_after(&probes, closed_flag);

    if after == Ok(After::Answered) {
        let count = client
            .query_one("SELECT count(*) FROM matrix_t", &[])
            .await
            .map(|row| row.get(0));
        check_table(&got, || count).unwrap_or_else(|p| problems.push(p));
    }
    judge(api, def, &got, after, problems)
}

/// Whether the client reports itself closed within 5 s (bounded poll).
async fn wait_closed(client: &pqlib::tokio::Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.is_closed() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// The async cases run on a runtime of their own thread, and this thread waits for them with
/// a deadline of its own: a driver stuck in a blocking loop can starve the runtime's timers,
/// and then `tokio::time::timeout` never fires.
#[test]
fn async_matrix() {
    async_matrix_with("async matrix", ASYNC_APIS, PreparePolicy::Always);
}

/// SQL text as the unnamed statement on the async client.
#[test]
fn async_matrix_never_prepare() {
    async_matrix_with(
        "async matrix, PreparePolicy::Never",
        ASYNC_STATEMENT_APIS,
        PreparePolicy::Never,
    );
}

fn async_matrix_with(title: &str, apis: &'static [Api], policy: PreparePolicy) {
    let started = Instant::now();
    let finished: Arc<Mutex<Vec<(usize, Report)>>> = Arc::default();
    let running: Arc<Mutex<BTreeMap<usize, (Api, Kind)>>> = Arc::default();
    let (done, all_done) = mpsc::channel();
    {
        let finished = finished.clone();
        let running = running.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async_cases(apis, policy, finished, running));
            let _ = done.send(());
            runtime.shutdown_background();
        });
    }
    let deadline = MATRIX_TIMEOUT;
    let hung = all_done.recv_timeout(deadline).is_err();
    let mut reports = std::mem::take(&mut *finished.lock().unwrap());
    if hung {
        for (&n, &(api, kind)) in running.lock().unwrap().iter() {
            let why = format!("hung: the async matrix had no end within {deadline:?}");
            reports.push((n, Report::failed(api, kind, why)));
        }
    }
    reports.sort_by_key(|(n, _)| *n);
    let reports: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
    summarize(title, &reports, started);
}

async fn async_cases(
    apis: &'static [Api],
    policy: PreparePolicy,
    finished: Arc<Mutex<Vec<(usize, Report)>>>,
    running: Arc<Mutex<BTreeMap<usize, (Api, Kind)>>>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(ASYNC_PARALLEL));
    let mut handles = Vec::new();
    for (api, def, n) in cases(apis) {
        let limit = limit.clone();
        let running_now = running.clone();
        let handle = tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            running_now.lock().unwrap().insert(n, (api, def.kind));
            tokio::time::timeout(CASE_TIMEOUT, async_case(api, def, n, policy)).await
        });
        handles.push((n, api, def.kind, handle));
    }
    for (n, api, kind, handle) in handles {
        let report = match handle.await {
            Ok(Ok(report)) => report,
            Ok(Err(_)) => {
                Report::failed(api, kind, format!("hung: no end within {CASE_TIMEOUT:?}"))
            }
            Err(e) if e.is_panic() => Report::failed(
                api,
                kind,
                format!("panicked: {}", panic_message(&*e.into_panic())),
            ),
            Err(e) => Report::failed(api, kind, format!("the case's task failed: {e}")),
        };
        running.lock().unwrap().remove(&n);
        finished.lock().unwrap().push((n, report));
    }
}
