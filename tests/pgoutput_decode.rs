//! The pgoutput decoder (`pqlib::replication::pgoutput`) against a real server's messages,
//! read with SQL (`pg_logical_slot_peek_binary_changes`): every event decodes to what the
//! test wrote, in protocol version 1 and in the highest one the server speaks. The streaming
//! replication path is tested elsewhere; this is the decoder alone.

mod common;

use std::time::SystemTime;

use bytes::Bytes;
use pqlib::Connection;
use pqlib::replication::Lsn;
use pqlib::replication::pgoutput::{
    Decoder, Message, OldTuple, PgOutputOptions, Streaming, Tuple, TupleColumn,
};
use pqlib::tempdb::TempCluster;

/// A publication name that needs quoting: a quote, a double quote, a space and a comma.
const PUBLICATION: &str = r#"it's "pub", too"#;

/// A cluster that allows logical decoding (its own: `wal_level = logical` needs a restart).
fn logical_cluster() -> TempCluster {
    TempCluster::builder()
        .config("wal_level = logical")
        .config("max_prepared_transactions = 4")
        // The SQL functions decode up to the flushed WAL: every commit flushed when it returns.
        .config("synchronous_commit = on")
        .start()
        .expect("a throwaway server with wal_level = logical")
}

/// `name` as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every message in `slot` (without consuming them), decoded with `options`' decoder: the
/// decoder (for its relations) and the messages with their LSNs.
fn peek(conn: &mut Connection, slot: &str, options: &PgOutputOptions) -> (Decoder, Vec<Message>) {
    let flat: Vec<String> = options
        .option_values()
        .unwrap()
        .into_iter()
        .flat_map(|(name, value)| [name, value])
        .collect();
    let rows = conn
        .query(
            "SELECT lsn, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             VARIADIC $2::text[])",
            &[&slot, &flat],
        )
        .unwrap_or_else(|e| panic!("peek {slot} with {flat:?}: {e}"));
    let mut decoder = options.decoder();
    let mut messages = Vec::new();
    for row in &rows {
        let lsn: Lsn = row.get(0);
        let data: Vec<u8> = row.get(1);
        let message = decoder
            .decode(Bytes::from(data.clone()))
            .unwrap_or_else(|e| panic!("{e}: {data:?}"));
        match &message {
            Message::LogicalMessage { lsn: at, .. } => assert_eq!(*at, lsn),
            Message::Begin { final_lsn, .. } => assert!(*final_lsn > lsn),
            _ => {}
        }
        messages.push(message);
    }
    (decoder, messages)
}

/// A column value, short: `NULL`, `TOAST` (unchanged), the text, or `b:` and the bytes'
/// length for binary values.
fn value(column: &TupleColumn) -> String {
    match column {
        TupleColumn::Null => "NULL".into(),
        TupleColumn::UnchangedToast => "TOAST".into(),
        TupleColumn::Text(text) if text.len() > 40 => format!("<{} bytes>", text.len()),
        TupleColumn::Text(text) => String::from_utf8(text.to_vec()).unwrap(),
        TupleColumn::Binary(bytes) => format!("b:{}", bytes.len()),
        other => panic!("{other:?}"),
    }
}

fn tuple(tuple: &Tuple) -> String {
    let values: Vec<String> = tuple.columns().iter().map(value).collect();
    format!("({})", values.join(", "))
}

fn old(old: &OldTuple) -> String {
    match old {
        OldTuple::Key(key) => format!("key{}", tuple(key)),
        OldTuple::Full(row) => format!("old{}", tuple(row)),
        other => panic!("{other:?}"),
    }
}

/// The messages as short lines, checking along the way what a line does not show:
/// Begin/Commit pairs agree on LSN and time, stream blocks on their xid, row messages name a
/// table described earlier.
fn summary(decoder: &Decoder, messages: &[Message]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut begin: Option<(Lsn, SystemTime)> = None;
    let mut block: Option<u32> = None;
    let name = |oid: u32| {
        let relation = decoder
            .relation(oid)
            .unwrap_or_else(|| panic!("relation {oid}"));
        relation.name.clone()
    };
    for message in messages {
        let line = match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
                ..
            } => {
                assert!(*xid != 0);
                assert!(begin.is_none());
                begin = Some((*final_lsn, *commit_time));
                "BEGIN".to_string()
            }
            Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => {
                assert_eq!(*flags, 0);
                assert_eq!(begin.take(), Some((*commit_lsn, *commit_time)));
                assert!(end_lsn > commit_lsn);
                let age = SystemTime::now().duration_since(*commit_time).unwrap();
                assert!(age.as_secs() < 600, "{age:?}");
                "COMMIT".to_string()
            }
            Message::Relation { xid, relation, .. } => {
                same_transaction(*xid, block);
                let columns: Vec<String> = relation
                    .columns
                    .iter()
                    .map(|c| format!("{}{}", c.name, if c.is_key() { "*" } else { "" }))
                    .collect();
                format!(
                    "RELATION {}.{} {:?} {}",
                    relation.namespace,
                    relation.name,
                    relation.replica_identity,
                    columns.join(" ")
                )
            }
            Message::Type {
                xid,
                namespace,
                name,
                ..
            } => {
                same_transaction(*xid, block);
                format!("TYPE {namespace}.{name}")
            }
            Message::Insert {
                xid,
                relation_oid,
                new,
                ..
            } => {
                same_transaction(*xid, block);
                format!("INSERT {} {}", name(*relation_oid), tuple(new))
            }
            Message::Update {
                xid,
                relation_oid,
                old: before,
                new,
                ..
            } => {
                same_transaction(*xid, block);
                let before = before.as_ref().map(old).unwrap_or_default();
                format!("UPDATE {} {before}{}", name(*relation_oid), tuple(new))
            }
            Message::Delete {
                xid,
                relation_oid,
                old: before,
                ..
            } => {
                same_transaction(*xid, block);
                format!("DELETE {} {}", name(*relation_oid), old(before))
            }
            Message::Truncate {
                xid,
                cascade,
                restart_identity,
                relation_oids,
                ..
            } => {
                same_transaction(*xid, block);
                let names: Vec<String> = relation_oids.iter().map(|oid| name(*oid)).collect();
                format!(
                    "TRUNCATE {} cascade={cascade} restart={restart_identity}",
                    names.join(" ")
                )
            }
            Message::LogicalMessage {
                xid,
                transactional,
                lsn,
                prefix,
                content,
                ..
            } => {
                if *transactional {
                    same_transaction(*xid, block);
                } else {
                    assert_eq!(*xid, None);
                }
                assert!(!lsn.is_invalid());
                format!(
                    "MESSAGE {prefix} {} transactional={transactional}",
                    String::from_utf8_lossy(content)
                )
            }
            Message::StreamStart {
                xid, first_segment, ..
            } => {
                assert!(block.is_none());
                block = Some(*xid);
                format!("STREAM START first={first_segment}")
            }
            Message::StreamStop => {
                assert!(block.take().is_some());
                "STREAM STOP".to_string()
            }
            Message::StreamCommit {
                flags,
                commit_lsn,
                end_lsn,
                ..
            } => {
                assert_eq!(*flags, 0);
                assert!(end_lsn > commit_lsn);
                "STREAM COMMIT".to_string()
            }
            Message::StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_time,
                ..
            } => format!(
                "STREAM ABORT {} lsn={} time={}",
                if xid == subxid { "top" } else { "sub" },
                abort_lsn.is_some(),
                abort_time.is_some()
            ),
            Message::BeginPrepare {
                prepare_lsn,
                end_lsn,
                gid,
                ..
            } => {
                assert!(end_lsn > prepare_lsn);
                format!("BEGIN PREPARE {gid}")
            }
            Message::Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                gid,
                ..
            } => {
                assert_eq!(*flags, 0);
                assert!(end_lsn > prepare_lsn);
                format!("PREPARE {gid}")
            }
            Message::CommitPrepared { flags, gid, .. } => {
                assert_eq!(*flags, 0);
                format!("COMMIT PREPARED {gid}")
            }
            Message::RollbackPrepared {
                flags,
                prepare_time,
                rollback_time,
                gid,
                ..
            } => {
                assert_eq!(*flags, 0);
                assert!(rollback_time >= prepare_time);
                format!("ROLLBACK PREPARED {gid}")
            }
            other => format!("{other:?}"),
        };
        lines.push(line);
    }
    assert!(begin.is_none() && block.is_none(), "unfinished: {lines:#?}");
    lines
}

/// A change's xid inside a stream block is the block's transaction or one of its
/// subtransactions (a larger xid); outside, there is none.
fn same_transaction(xid: Option<u32>, block: Option<u32>) {
    match (xid, block) {
        (None, None) => {}
        (Some(xid), Some(top)) => assert!(xid >= top, "xid {xid} in the block of {top}"),
        other => panic!("xid and stream block: {other:?}"),
    }
}

#[test]
fn decoded_events_match_what_was_written() {
    let cluster = logical_cluster();
    let mut conn = Connection::connect(&cluster.conninfo()).unwrap();
    let server = conn.server_version();
    conn.batch_execute(&format!(
        "CREATE TYPE mood AS ENUM ('happy', 'sad');
         CREATE TABLE items (id int8 PRIMARY KEY, name text, qty int4, note text);
         CREATE TABLE full_items (id int4, v text);
         ALTER TABLE full_items REPLICA IDENTITY FULL;
         CREATE TABLE moods (id int4 PRIMARY KEY, m mood);
         CREATE TABLE big (id int4 PRIMARY KEY, payload text, counter int4);
         CREATE TABLE not_published (id int4);
         CREATE PUBLICATION {} FOR TABLE items, full_items, moods, big;",
        ident(PUBLICATION)
    ))
    .unwrap();
    conn.batch_execute("SELECT pg_create_logical_replication_slot('events', 'pgoutput')")
        .unwrap();
    run_each(
        &mut conn,
        "INSERT INTO items VALUES (1, 'one', 10, NULL), (2, 'two', 20, 'n2');
         UPDATE items SET qty = 11 WHERE id = 1;
         UPDATE items SET id = 3 WHERE id = 2;
         DELETE FROM items WHERE id = 1;
         INSERT INTO not_published VALUES (1);
         BEGIN;
         INSERT INTO full_items VALUES (1, 'a');
         UPDATE full_items SET v = 'b';
         DELETE FROM full_items;
         COMMIT;
         BEGIN;
         INSERT INTO items VALUES (99, 'rolled back', 0, NULL);
         ROLLBACK;
         TRUNCATE full_items RESTART IDENTITY;
         INSERT INTO moods VALUES (1, 'sad');
         INSERT INTO big SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 5000) i;
         UPDATE big SET counter = 1 WHERE id = 1;",
    );
    let messages = server >= 140000;
    if messages {
        run_each(
            &mut conn,
            "BEGIN;
             SELECT pg_logical_emit_message(true, 'pfx', 'in the transaction');
             SELECT pg_logical_emit_message(false, 'pfx', 'on its own');
             INSERT INTO items VALUES (4, 'four', 40, NULL);
             COMMIT",
        );
    }
    let highest = PgOutputOptions::highest_proto_version(server);
    let mut expected: Vec<&str> = vec![
        "BEGIN",
        "RELATION public.items Default id* name qty note",
        "INSERT items (1, one, 10, NULL)",
        "INSERT items (2, two, 20, n2)",
        "COMMIT",
        "BEGIN",
        "UPDATE items (1, one, 11, NULL)",
        "COMMIT",
        "BEGIN",
        // The key changed: the old key, the other columns NULL.
        "UPDATE items key(2, NULL, NULL, NULL)(3, two, 20, n2)",
        "COMMIT",
        "BEGIN",
        "DELETE items key(1, NULL, NULL, NULL)",
        "COMMIT",
        // The transaction on the unpublished table: empty (servers before 15 send it).
        "BEGIN",
        "COMMIT",
        "BEGIN",
        // With REPLICA IDENTITY FULL, every column is part of the key.
        "RELATION public.full_items Full id* v*",
        "INSERT full_items (1, a)",
        "UPDATE full_items old(1, a)(1, b)",
        "DELETE full_items old(1, b)",
        "COMMIT",
        "BEGIN",
        // RESTART IDENTITY gave the table a new file: described again.
        "RELATION public.full_items Full id* v*",
        "TRUNCATE full_items cascade=false restart=true",
        "COMMIT",
        "BEGIN",
        "TYPE public.mood",
        "RELATION public.moods Default id* m",
        "INSERT moods (1, sad)",
        "COMMIT",
        "BEGIN",
        "RELATION public.big Default id* payload counter",
        "INSERT big (1, <160000 bytes>, 0)",
        "COMMIT",
        "BEGIN",
        // The big value was not changed (nor sent).
        "UPDATE big (1, TOAST, 1)",
        "COMMIT",
    ];
    if server >= 150000 {
        // Servers 15 and later skip transactions without published changes.
        let at = expected
            .iter()
            .position(|l| l.starts_with("DELETE items"))
            .unwrap()
            + 2;
        expected.drain(at..at + 2);
    }
    if messages {
        expected.extend([
            // Decoded where it was written (the commit flushes it); the transaction's
            // changes come at its commit.
            "MESSAGE pfx on its own transactional=false",
            "BEGIN",
            "MESSAGE pfx in the transaction transactional=true",
            "INSERT items (4, four, 40, NULL)",
            "COMMIT",
        ]);
    }
    for version in [1, highest] {
        let options = PgOutputOptions::new([PUBLICATION])
            .proto_version(version)
            .messages(messages);
        let (decoder, decoded) = peek(&mut conn, "events", &options);
        assert_eq!(
            summary(&decoder, &decoded),
            expected,
            "proto_version {version}"
        );

        // Values through Tuple::text and try_get (text format: text types only).
        let relation = decoder.relation(items_oid(&mut conn)).unwrap().clone();
        let Message::Insert { new, .. } = &decoded[2] else {
            panic!("{:?}", decoded[2])
        };
        assert_eq!(new.text(1).unwrap(), Some("one"));
        assert_eq!(new.try_get::<&str, _>(&relation, "name").unwrap(), "one");
        assert_eq!(
            new.try_get::<Option<String>, _>(&relation, "note").unwrap(),
            None
        );
        let e = new.try_get::<i64, _>(&relation, "id").unwrap_err();
        assert!(
            format!("{e} {:?}", std::error::Error::source(&e)).contains("binary"),
            "{e}"
        );
        let e = new.try_get::<String, _>(&relation, "note").unwrap_err();
        assert_eq!(e.kind(), pqlib::error::ErrorKind::Conversion);
        // The enum column's type, from the Type message.
        let moods = decoder.relation(table_oid(&mut conn, "moods")).unwrap();
        let mood = moods.columns[1]
            .ty
            .as_ref()
            .expect("the Type message's type");
        assert_eq!((mood.name(), mood.schema()), ("mood", "public"));
        let mood_oid: u32 = conn
            .query_one("SELECT 'mood'::regtype::oid", &[])
            .unwrap()
            .get(0);
        assert_eq!(mood.oid(), mood_oid);
        // The unchanged TOAST value is its own error.
        let big = decoder.relation(table_oid(&mut conn, "big")).unwrap();
        let toast = decoded
            .iter()
            .find_map(|m| match m {
                Message::Update {
                    relation_oid, new, ..
                } if *relation_oid == big.oid => Some(new),
                _ => None,
            })
            .unwrap();
        let e = toast.try_get::<&str, _>(big, "payload").unwrap_err();
        assert!(
            format!("{e} {:?}", std::error::Error::source(&e)).contains("TOAST"),
            "{e}"
        );
    }
}

fn table_oid(conn: &mut Connection, table: &str) -> u32 {
    conn.query_one("SELECT $1::text::regclass::oid", &[&table])
        .unwrap()
        .get(0)
}

fn items_oid(conn: &mut Connection) -> u32 {
    table_oid(conn, "items")
}

/// Runs the `;`-separated statements one at a time (one simple query would make them one
/// transaction).
fn run_each(conn: &mut Connection, statements: &str) {
    for statement in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        conn.batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// Binary-format values (`binary = true`, server 14+) read through `Tuple::try_get` are the
/// values a query returns.
#[test]
fn binary_values_convert_through_from_sql() {
    let cluster = logical_cluster();
    let mut conn = Connection::connect(&cluster.conninfo()).unwrap();
    let server = conn.server_version();
    if server < 140000 {
        println!("SKIPPED: the binary option needs server 14 (this one is {server})");
        return;
    }
    conn.batch_execute(
        "CREATE TYPE mood AS ENUM ('happy', 'sad');
         CREATE TABLE typed (id int4 PRIMARY KEY, big int8, t text, vc varchar(10), b bool,
             n numeric, ts timestamptz, f float8, raw bytea, arr int4[], j jsonb, m mood);
         CREATE PUBLICATION p FOR TABLE typed;",
    )
    .unwrap();
    conn.batch_execute("SELECT pg_create_logical_replication_slot('bin', 'pgoutput')")
        .unwrap();
    run_each(
        &mut conn,
        "INSERT INTO typed VALUES (1, 9007199254740993, 'tëxt', 'short', true, 12345.678900,
             '2024-02-29 12:34:56.789012+00', -1.5, '\\x00ff', '{1,NULL,3}', '{\"k\": [1]}', 'sad');
         INSERT INTO typed (id) VALUES (2)",
    );
    let expected: (
        i32,
        i64,
        String,
        String,
        bool,
        SystemTime,
        f64,
        Vec<u8>,
        Vec<Option<i32>>,
    ) = {
        let row = conn
            .query_one(
                "SELECT id, big, t, vc, b, ts, f, raw, arr FROM typed WHERE id = 1",
                &[],
            )
            .unwrap();
        (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
            row.get(6),
            row.get(7),
            row.get(8),
        )
    };
    assert_eq!(expected.1, 9007199254740993);
    let (numeric, json): (Vec<u8>, serde_json::Value) = {
        let row = conn
            .query_one("SELECT numeric_send(n), j FROM typed WHERE id = 1", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    for version in [1, PgOutputOptions::highest_proto_version(server)] {
        let options = PgOutputOptions::new(["p"])
            .proto_version(version)
            .binary(true);
        let (decoder, messages) = peek(&mut conn, "bin", &options);
        let relation = decoder.relation(table_oid(&mut conn, "typed")).unwrap();
        let rows: Vec<&Tuple> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Insert { new, .. } => Some(new),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 2, "{messages:?}");
        let row = rows[0];
        assert!(
            row.columns()
                .iter()
                .all(|c| matches!(c, TupleColumn::Binary(_))),
            "{row:?}"
        );
        assert_eq!(row.try_get::<i32, _>(relation, "id").unwrap(), expected.0);
        assert_eq!(row.try_get::<i64, _>(relation, "big").unwrap(), expected.1);
        assert_eq!(row.try_get::<&str, _>(relation, "t").unwrap(), expected.2);
        assert_eq!(
            row.try_get::<String, _>(relation, "vc").unwrap(),
            expected.3
        );
        assert!(row.try_get::<bool, _>(relation, "b").unwrap());
        assert_eq!(
            row.try_get::<SystemTime, _>(relation, "ts").unwrap(),
            expected.5
        );
        assert_eq!(row.try_get::<f64, _>(relation, "f").unwrap(), expected.6);
        assert_eq!(
            row.try_get::<&[u8], _>(relation, "raw").unwrap(),
            expected.7
        );
        assert_eq!(
            row.try_get::<Vec<Option<i32>>, _>(relation, "arr").unwrap(),
            expected.8
        );
        assert_eq!(
            row.try_get::<serde_json::Value, _>(relation, "j").unwrap(),
            json
        );
        // numeric has no FromSql here: its binary form is numeric_send's.
        let n = relation.column_index("n").unwrap();
        assert_eq!(relation.columns[n].ty, Some(pqlib::types::Type::NUMERIC));
        assert_eq!(
            row.columns()[n],
            TupleColumn::Binary(Bytes::from(numeric.clone()))
        );
        // The enum, described by a Type message: its binary form is its label.
        let m = relation.column_index("m").unwrap();
        assert_eq!(relation.columns[m].ty.as_ref().unwrap().name(), "mood");
        assert_eq!(
            row.columns()[m],
            TupleColumn::Binary(Bytes::from_static(b"sad"))
        );
        assert!(row.try_get::<String, _>(relation, "m").is_err());
        // Wrong Rust types are errors, not panics.
        let e = row.try_get::<i32, _>(relation, "big").unwrap_err();
        assert_eq!(e.kind(), pqlib::error::ErrorKind::Conversion);
        assert!(row.text(0).is_err());
        // The row of NULLs.
        let nulls = rows[1];
        assert_eq!(nulls.try_get::<i32, _>(relation, 0).unwrap(), 2);
        assert_eq!(nulls.try_get::<Option<i64>, _>(relation, 1).unwrap(), None);
        let e = nulls.try_get::<i64, _>(relation, 1).unwrap_err();
        assert_eq!(e.kind(), pqlib::error::ErrorKind::Conversion);
        assert!(format!("{e:?}").contains("WasNull"), "{e:?}");
        assert_eq!(nulls.text(11).unwrap(), None);
    }
}

/// Large transactions with `streaming` on (server 14+, `logical_decoding_work_mem` at its
/// 64kB minimum) arrive in Stream Start/Stop blocks carrying their xid, then Stream Commit or
/// Stream Abort; `streaming = parallel` (16+) adds the abort LSN and time.
#[test]
fn large_transactions_stream_in_blocks() {
    let cluster = logical_cluster();
    let mut conn = Connection::connect(&cluster.conninfo()).unwrap();
    let server = conn.server_version();
    if server < 140000 {
        println!("SKIPPED: streaming needs server 14 (this one is {server})");
        return;
    }
    conn.batch_execute("CREATE TABLE s (id int4, pad text); CREATE PUBLICATION p FOR TABLE s;")
        .unwrap();
    conn.batch_execute("SELECT pg_create_logical_replication_slot('stream', 'pgoutput')")
        .unwrap();
    let xid = |conn: &mut Connection| -> u32 {
        let xid: String = conn
            .query_one("SELECT txid_current()::text", &[])
            .unwrap()
            .get(0);
        xid.parse().unwrap()
    };
    const ROWS: usize = 3000;
    let insert =
        format!("INSERT INTO s SELECT i, repeat('x', 100) FROM generate_series(1, {ROWS}) i");
    // Committed.
    conn.batch_execute("BEGIN").unwrap();
    let committed = xid(&mut conn);
    conn.batch_execute(&insert).unwrap();
    conn.batch_execute("COMMIT").unwrap();
    // Rolled back.
    conn.batch_execute("BEGIN").unwrap();
    let rolled_back = xid(&mut conn);
    conn.batch_execute(&insert).unwrap();
    conn.batch_execute("ROLLBACK").unwrap();
    // A subtransaction rolled back, then the rest committed.
    conn.batch_execute("BEGIN").unwrap();
    let with_savepoint = xid(&mut conn);
    conn.batch_execute("INSERT INTO s VALUES (-1, 'kept')")
        .unwrap();
    conn.batch_execute("SAVEPOINT sp").unwrap();
    conn.batch_execute(&insert).unwrap();
    conn.batch_execute("ROLLBACK TO SAVEPOINT sp").unwrap();
    conn.batch_execute("INSERT INTO s VALUES (-2, 'kept too')")
        .unwrap();
    conn.batch_execute("COMMIT").unwrap();

    conn.batch_execute("SET logical_decoding_work_mem = '64kB'")
        .unwrap();
    let highest = PgOutputOptions::highest_proto_version(server);
    let mut modes = vec![(highest, Streaming::On)];
    if server >= 160000 {
        modes.push((4, Streaming::Parallel));
    }
    for (version, streaming) in modes {
        let options = PgOutputOptions::new(["p"])
            .proto_version(version)
            .streaming(streaming);
        let (decoder, messages) = peek(&mut conn, "stream", &options);
        // Without the rows, for the messages of failed assertions.
        let lines: Vec<String> = summary(&decoder, &messages)
            .into_iter()
            .filter(|l| !l.starts_with("INSERT"))
            .collect();
        let parallel = streaming == Streaming::Parallel;
        // Per transaction: the rows streamed, how it ended.
        let mut rows: std::collections::HashMap<u32, usize> = Default::default();
        let mut ends = Vec::new();
        let mut block = None;
        let mut first_segments = Vec::new();
        for message in &messages {
            match message {
                Message::StreamStart {
                    xid, first_segment, ..
                } => {
                    block = Some(*xid);
                    if *first_segment {
                        first_segments.push(*xid);
                    }
                }
                Message::StreamStop => block = None,
                Message::Insert { xid: Some(_), .. } => {
                    *rows.entry(block.unwrap()).or_default() += 1;
                }
                Message::Insert { xid: None, .. } => panic!("a row outside a stream block"),
                Message::StreamCommit { xid, .. } => ends.push(format!("commit {xid}")),
                Message::StreamAbort {
                    xid,
                    subxid,
                    abort_lsn,
                    abort_time,
                    ..
                } => {
                    assert_eq!(abort_lsn.is_some(), parallel, "{lines:#?}");
                    assert_eq!(abort_time.is_some(), parallel);
                    if xid == subxid {
                        ends.push(format!("abort {xid}"));
                    } else {
                        assert!(subxid > xid);
                        ends.push(format!("abort {xid} sub"));
                    }
                }
                Message::Begin { .. } | Message::Commit { .. } => {
                    panic!("a transaction not streamed: {lines:#?}")
                }
                _ => {}
            }
        }
        // Servers 17 and later see that the rolled back transaction has aborted (it had, by
        // the time it was decoded) and drop it instead of streaming it.
        let aborted_streamed = server < 170000;
        let mut expected_starts = vec![committed, rolled_back, with_savepoint];
        let mut expected_ends = vec![
            format!("commit {committed}"),
            format!("abort {rolled_back}"),
            format!("abort {with_savepoint} sub"),
            format!("commit {with_savepoint}"),
        ];
        if !aborted_streamed {
            expected_starts.remove(1);
            expected_ends.remove(1);
        }
        assert_eq!(first_segments, expected_starts, "{lines:#?}");
        assert_eq!(ends, expected_ends, "{lines:#?}");
        assert_eq!(rows[&committed], ROWS);
        if aborted_streamed {
            assert!(rows[&rolled_back] > 0 && rows[&rolled_back] <= ROWS);
        } else {
            assert!(!rows.contains_key(&rolled_back));
        }
        // The rows of the savepoint's subtransaction (some streamed before the rollback)
        // and the two kept rows.
        assert!(rows[&with_savepoint] >= 2, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("STREAM START first=false")),
            "{lines:#?}"
        );
    }
    // Without streaming (and in protocol version 1), the committed transactions arrive whole.
    let (decoder, messages) = peek(&mut conn, "stream", &PgOutputOptions::new(["p"]));
    let lines = summary(&decoder, &messages);
    let (inserts, others): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|l| l.starts_with("INSERT s"));
    assert_eq!(
        others,
        [
            "BEGIN",
            "RELATION public.s Default id pad",
            "COMMIT",
            "BEGIN",
            "COMMIT"
        ]
    );
    assert_eq!(inserts.len(), ROWS + 2);
    assert_eq!(inserts[0], "INSERT s (1, <100 bytes>)");
    assert_eq!(
        inserts[ROWS..],
        ["INSERT s (-1, kept)", "INSERT s (-2, kept too)"]
    );
}

/// Prepared transactions with `two_phase` (server 15+, a slot created with two-phase
/// decoding): Begin Prepare, Prepare, Commit Prepared and Rollback Prepared.
#[test]
fn prepared_transactions_decode_with_two_phase() {
    let cluster = logical_cluster();
    let mut conn = Connection::connect(&cluster.conninfo()).unwrap();
    let server = conn.server_version();
    if server < 150000 {
        println!("SKIPPED: two_phase needs server 15 (this one is {server})");
        return;
    }
    conn.batch_execute("CREATE TABLE tp (id int4 PRIMARY KEY); CREATE PUBLICATION p FOR TABLE tp;")
        .unwrap();
    conn.batch_execute("SELECT pg_create_logical_replication_slot('tp', 'pgoutput', false, true)")
        .unwrap();
    run_each(
        &mut conn,
        "BEGIN; INSERT INTO tp VALUES (1); PREPARE TRANSACTION 'g''1';
         COMMIT PREPARED 'g''1';
         BEGIN; INSERT INTO tp VALUES (2); PREPARE TRANSACTION 'g2';
         ROLLBACK PREPARED 'g2'",
    );
    let options = PgOutputOptions::new(["p"]).proto_version(3).two_phase(true);
    let (decoder, messages) = peek(&mut conn, "tp", &options);
    assert_eq!(
        summary(&decoder, &messages),
        [
            "BEGIN PREPARE g'1",
            "RELATION public.tp Default id*",
            "INSERT tp (1)",
            "PREPARE g'1",
            "COMMIT PREPARED g'1",
            "BEGIN PREPARE g2",
            "INSERT tp (2)",
            "PREPARE g2",
            "ROLLBACK PREPARED g2",
        ]
    );
    // The xids agree.
    let xids: Vec<u32> = messages
        .iter()
        .filter_map(|m| match m {
            Message::BeginPrepare { xid, .. }
            | Message::Prepare { xid, .. }
            | Message::CommitPrepared { xid, .. }
            | Message::RollbackPrepared { xid, .. } => Some(*xid),
            _ => None,
        })
        .collect();
    assert_eq!(xids.len(), 6);
    assert!(xids[..3].iter().all(|x| *x == xids[0]));
    assert!(xids[3..].iter().all(|x| *x == xids[3]) && xids[3] != xids[0]);
}
