//! Change data capture: follow one table through logical replication (pgoutput) and print
//! each change as a JSON line, confirming progress to the server as transactions end.
//!
//! Uses `DATABASE_URL` when set (the server needs `wal_level = logical` and a role allowed to
//! replicate); otherwise starts a throwaway server with `wal_level = logical`. Either way the
//! example makes its own changes to show, from a second thread, and uses a temporary slot
//! (gone with the connection, so an interrupted run leaves nothing behind that keeps WAL).
//!
//! ```sh
//! cargo run --example cdc
//! DATABASE_URL=postgresql://postgres@localhost/postgres cargo run --example cdc
//! ```

use std::time::Duration;

use pqlib::replication::pgoutput::{
    Message, OldTuple, PgOutputOptions, Relation, Tuple, TupleColumn,
};
use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMessage, ReplicationMode, SlotKind,
    SnapshotAction,
};
use pqlib::tempdb::TempCluster;
use serde_json::{Map, Value, json};

const TABLE: &str = "cdc_orders";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            eprintln!("DATABASE_URL is not set: starting a throwaway server (wal_level = logical)");
            let server = TempCluster::builder()
                .config("wal_level = logical")
                .start()?;
            (server.conninfo(), Some(server))
        }
    };

    let mut conn = pqlib::Connection::connect(&conninfo)?;
    conn.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS cdc_pub;
         DROP TABLE IF EXISTS {TABLE};
         CREATE TABLE {TABLE} (id int4 PRIMARY KEY, item text NOT NULL, qty int4 NOT NULL);
         CREATE PUBLICATION cdc_pub FOR TABLE {TABLE};"
    ))?;

    // The slot first: changes made after it are what the stream delivers.
    let config: pqlib::Config = conninfo.parse()?;
    let mut replication = ReplicationConnection::connect(&config, ReplicationMode::Logical)?;
    let kind = SlotKind::Logical {
        plugin: "pgoutput".into(),
        snapshot: SnapshotAction::Nothing,
    };
    let slot = replication.create_replication_slot("cdc_example", &kind, true)?;
    eprintln!(
        "temporary slot {} at {}",
        slot.slot_name,
        slot.consistent_point.unwrap_or(Lsn::INVALID)
    );

    // Another session changes the table meanwhile: three transactions that change it, and
    // one that rolls back (which the stream never shows).
    const CHANGING_TRANSACTIONS: usize = 3;
    let writer = std::thread::spawn(move || -> Result<(), pqlib::Error> {
        // One text per transaction: a multi-statement text is one implicit transaction.
        for sql in [
            format!("INSERT INTO {TABLE} VALUES (1, 'tea', 2), (2, 'scones', 6)"),
            format!("UPDATE {TABLE} SET qty = qty + 1 WHERE id = 1"),
            format!("BEGIN; INSERT INTO {TABLE} VALUES (99, 'never happened', 1); ROLLBACK"),
            format!("DELETE FROM {TABLE} WHERE id = 2"),
        ] {
            conn.batch_execute(&sql)?;
        }
        Ok(())
    });

    let options = PgOutputOptions::for_server(replication.server_version(), ["cdc_pub"]);
    let mut decoder = options.decoder();
    let mut stream = replication.start_logical_replication(
        "cdc_example",
        Lsn::INVALID,
        &options.option_values()?,
    )?;

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut changed, mut transactions) = (false, 0);
    while transactions < CHANGING_TRANSACTIONS {
        if std::time::Instant::now() > deadline {
            return Err("the changes did not arrive within 60 s".into());
        }
        let data = match stream.recv_timeout(Duration::from_millis(200))? {
            Received::Message(ReplicationMessage::XLogData(data)) => data,
            Received::End => break,
            _ => continue,
        };
        match decoder.decode(data.into_data())? {
            Message::Insert {
                relation_oid, new, ..
            } => {
                let relation = decoder
                    .relation(relation_oid)
                    .ok_or("no Relation message")?;
                print_change("insert", relation, None, Some(&new))?;
                changed = true;
            }
            Message::Update {
                relation_oid,
                old,
                new,
                ..
            } => {
                let relation = decoder
                    .relation(relation_oid)
                    .ok_or("no Relation message")?;
                print_change("update", relation, old.as_ref(), Some(&new))?;
                changed = true;
            }
            Message::Delete {
                relation_oid, old, ..
            } => {
                let relation = decoder
                    .relation(relation_oid)
                    .ok_or("no Relation message")?;
                print_change("delete", relation, Some(&old), None)?;
                changed = true;
            }
            Message::Commit { end_lsn, .. } => {
                println!("{}", json!({ "op": "commit", "lsn": end_lsn.to_string() }));
                // Printed is as stored as it gets here: the server may forget it now.
                stream.confirm(end_lsn);
                transactions += usize::from(std::mem::take(&mut changed));
            }
            _ => {}
        }
    }
    writer.join().expect("the writer thread")?;
    stream.send_status(false)?;
    stream.stop()?;
    eprintln!(
        "confirmed up to {}; done",
        replication_position(&mut replication)?
    );
    Ok(())
}

/// One change as a JSON line: the table, and the old and new rows by column name (an old row
/// that is only the replica identity key shows only the key's columns).
fn print_change(
    op: &str,
    relation: &Relation,
    old: Option<&OldTuple>,
    new: Option<&Tuple>,
) -> Result<(), pqlib::Error> {
    let mut line = Map::new();
    line.insert("op".into(), op.into());
    line.insert(
        "table".into(),
        format!("{}.{}", relation.namespace, relation.name).into(),
    );
    if let Some(old) = old {
        let key_only = matches!(old, OldTuple::Key(_));
        line.insert("old".into(), row_json(relation, old.tuple(), key_only)?);
    }
    if let Some(new) = new {
        line.insert("new".into(), row_json(relation, new, false)?);
    }
    println!("{}", Value::Object(line));
    Ok(())
}

fn row_json(relation: &Relation, tuple: &Tuple, key_only: bool) -> Result<Value, pqlib::Error> {
    let mut row = Map::new();
    for (i, column) in relation.columns.iter().enumerate() {
        if key_only && !column.is_key() {
            continue;
        }
        let value = match tuple.columns().get(i) {
            Some(TupleColumn::Null) | None => Value::Null,
            Some(TupleColumn::UnchangedToast) => "(unchanged)".into(),
            Some(_) => tuple.text(i)?.map_or(Value::Null, Value::from),
        };
        row.insert(column.name.clone(), value);
    }
    Ok(Value::Object(row))
}

/// Where the slot stands now, as the server sees it.
fn replication_position(conn: &mut ReplicationConnection) -> Result<String, pqlib::Error> {
    let messages = conn.simple_query(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc_example'",
    )?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            pqlib::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}
