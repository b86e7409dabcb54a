//! The replication commands: their text, built with names checked and values quoted, and
//! their answers, read into typed values. Shared by the blocking and the async connection.

use std::fmt;

use crate::SimpleQueryMessage;
use crate::error::{Error, Result};

use super::Lsn;

/// What a replication connection streams: changes decoded from one database, or the whole
/// cluster's WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// `replication=database`: logical decoding of the database connected to; simple SQL
    /// works as well as the replication commands.
    Logical,
    /// `replication=true`: the physical WAL stream of the cluster; only replication commands.
    Physical,
}

impl ReplicationMode {
    pub(crate) fn conninfo_value(self) -> &'static str {
        match self {
            ReplicationMode::Logical => "database",
            ReplicationMode::Physical => "true",
        }
    }
}

/// What `IDENTIFY_SYSTEM` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemIdentity {
    /// The cluster's unique system identifier (a 64-bit number, as text).
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub wal_position: Lsn,
    /// The database connected to (logical connections only).
    pub database: Option<String>,
}

/// What kind of slot to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A physical slot.
    Physical {
        /// Keep WAL from now on, rather than from the first connection that streams from it.
        reserve_wal: bool,
    },
    /// A logical slot.
    Logical {
        /// The output plugin that decodes for it (`pgoutput`, `test_decoding`, …).
        plugin: String,
        /// What to do with the snapshot of its consistent point.
        snapshot: SnapshotAction,
    },
}

/// What a new logical slot does with the snapshot of its consistent point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it (its name is in [`CreatedSlot::snapshot_name`]) until the next command on
    /// this connection, for `SET TRANSACTION SNAPSHOT` elsewhere: the initial copy.
    Export,
    /// Use it in this connection's current transaction (which must be the first thing in it).
    Use,
    /// Neither.
    Nothing,
}

/// What `CREATE_REPLICATION_SLOT` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// Where a logical slot starts: the first transaction it decodes commits after this.
    /// `None` for physical slots (the server answers 0/0 for them; where one keeps WAL from
    /// is `READ_REPLICATION_SLOT`'s `restart_lsn`).
    pub consistent_point: Option<Lsn>,
    /// The exported snapshot ([`SnapshotAction::Export`]).
    pub snapshot_name: Option<String>,
    /// The output plugin of a logical slot.
    pub output_plugin: Option<String>,
}

/// What `READ_REPLICATION_SLOT` answers for an existing slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotPosition {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// The oldest WAL the slot keeps, if it keeps any.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub restart_timeline: Option<u32>,
}

/// `IDENTIFY_SYSTEM`.
pub(crate) const IDENTIFY_SYSTEM: &str = "IDENTIFY_SYSTEM";

pub(crate) fn system_identity(row: &Row) -> Result<SystemIdentity> {
    Ok(SystemIdentity {
        system_id: row.required("systemid")?.to_owned(),
        timeline: parse(row.required("timeline")?, "timeline")?,
        wal_position: parse(row.required("xlogpos")?, "xlogpos")?,
        database: row.optional("dbname").map(str::to_owned),
    })
}

/// `CREATE_REPLICATION_SLOT` in the syntax of `server_version`.
pub(crate) fn create_slot(
    name: &str,
    kind: &SlotKind,
    temporary: bool,
    server_version: u32,
) -> Result<String> {
    check_slot_name(name)?;
    let modern = server_version >= 150000;
    let mut sql = format!("CREATE_REPLICATION_SLOT {}", quote_ident(name));
    if temporary {
        sql.push_str(" TEMPORARY");
    }
    match kind {
        SlotKind::Physical { reserve_wal } => {
            sql.push_str(" PHYSICAL");
            if *reserve_wal {
                sql.push_str(if modern {
                    " (RESERVE_WAL)"
                } else {
                    " RESERVE_WAL"
                });
            }
        }
        SlotKind::Logical { plugin, snapshot } => {
            sql.push_str(" LOGICAL ");
            sql.push_str(&quote_ident(plugin));
            // Server 15 took the options into parentheses; 14 has keywords.
            let option = match (modern, snapshot) {
                (true, SnapshotAction::Export) => " (SNAPSHOT 'export')",
                (true, SnapshotAction::Use) => " (SNAPSHOT 'use')",
                (true, SnapshotAction::Nothing) => " (SNAPSHOT 'nothing')",
                (false, SnapshotAction::Export) => " EXPORT_SNAPSHOT",
                (false, SnapshotAction::Use) => " USE_SNAPSHOT",
                (false, SnapshotAction::Nothing) => " NOEXPORT_SNAPSHOT",
            };
            sql.push_str(option);
        }
    }
    Ok(sql)
}

pub(crate) fn created_slot(row: &Row) -> Result<CreatedSlot> {
    Ok(CreatedSlot {
        slot_name: row.required("slot_name")?.to_owned(),
        // Physical slots answer 0/0: no position at all.
        consistent_point: row
            .optional("consistent_point")
            .map(|text| parse::<Lsn>(text, "consistent_point"))
            .transpose()?
            .filter(|lsn| !lsn.is_invalid()),
        snapshot_name: row.optional("snapshot_name").map(str::to_owned),
        output_plugin: row.optional("output_plugin").map(str::to_owned),
    })
}

pub(crate) fn drop_slot(name: &str, wait: bool) -> Result<String> {
    check_slot_name(name)?;
    let mut sql = format!("DROP_REPLICATION_SLOT {}", quote_ident(name));
    if wait {
        sql.push_str(" WAIT");
    }
    Ok(sql)
}

/// `READ_REPLICATION_SLOT`, which servers before 15 do not have.
pub(crate) fn read_slot(name: &str, server_version: u32) -> Result<String> {
    check_slot_name(name)?;
    if server_version < 150000 {
        return Err(Error::unsupported(format!(
            "READ_REPLICATION_SLOT needs server 15 or newer; this one is {server_version}"
        )));
    }
    Ok(format!("READ_REPLICATION_SLOT {}", quote_ident(name)))
}

pub(crate) fn slot_position(row: &Row) -> Result<Option<SlotPosition>> {
    let Some(slot_type) = row.optional("slot_type") else {
        return Ok(None);
    };
    Ok(Some(SlotPosition {
        slot_type: slot_type.to_owned(),
        restart_lsn: row
            .optional("restart_lsn")
            .map(|text| parse(text, "restart_lsn"))
            .transpose()?,
        restart_timeline: row
            .optional("restart_tli")
            .map(|text| parse(text, "restart_tli"))
            .transpose()?,
    }))
}

pub(crate) fn timeline_history(timeline: u32) -> String {
    format!("TIMELINE_HISTORY {timeline}")
}

pub(crate) fn history_file(row: &Row) -> Result<(String, String)> {
    Ok((
        row.required("filename")?.to_owned(),
        row.required("content")?.to_owned(),
    ))
}

/// `START_REPLICATION SLOT … LOGICAL …`, option names and values quoted.
pub(crate) fn start_logical<N: AsRef<str>, V: AsRef<str>>(
    slot: &str,
    start: Lsn,
    options: &[(N, V)],
) -> Result<String> {
    check_slot_name(slot)?;
    let mut sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let list: Vec<String> = options
            .iter()
            .map(|(name, value)| {
                format!(
                    "{} {}",
                    quote_ident(name.as_ref()),
                    quote_literal(value.as_ref())
                )
            })
            .collect();
        sql.push_str(&format!(" ({})", list.join(", ")));
    }
    Ok(sql)
}

/// `START_REPLICATION [SLOT …] PHYSICAL … [TIMELINE …]`.
pub(crate) fn start_physical(
    slot: Option<&str>,
    start: Lsn,
    timeline: Option<u32>,
) -> Result<String> {
    let mut sql = String::from("START_REPLICATION");
    if let Some(slot) = slot {
        check_slot_name(slot)?;
        sql.push_str(&format!(" SLOT {}", quote_ident(slot)));
    }
    sql.push_str(&format!(" PHYSICAL {start}"));
    if let Some(timeline) = timeline {
        sql.push_str(&format!(" TIMELINE {timeline}"));
    }
    Ok(sql)
}

pub(crate) fn not_logical() -> Error {
    Error::bad_input("logical replication needs a connection made with ReplicationMode::Logical")
}

pub(crate) fn second_logical_stream() -> Error {
    Error::unsupported(
        "a logical stream already ran on this connection, and the server ends a second one \
         at once (the walsender keeps its end-of-stream state); connect again to restart",
    )
}

/// `simple_query` cannot read a stream: `START_REPLICATION` is refused before it is sent
/// (any other way of starting a COPY BOTH is ended by the book and reported as an error).
pub(crate) fn refuse_stream(sql: &str) -> Result<()> {
    let start = sql.trim_start();
    let keyword = "START_REPLICATION";
    if start
        .get(..keyword.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(keyword))
    {
        return Err(Error::bad_input(
            "START_REPLICATION starts a COPY BOTH stream, which simple_query cannot read; use \
             start_logical_replication or start_physical_replication",
        ));
    }
    Ok(())
}

/// The first row of a command's answer.
pub(crate) fn first_row(messages: Vec<SimpleQueryMessage>, sql: &str) -> Result<Row> {
    let row = messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| Error::client(format!("{sql} returned no row")))?;
    Ok(Row { row })
}

/// A command's row, read by column name.
pub(crate) struct Row {
    row: crate::SimpleQueryRow,
}

impl Row {
    fn optional(&self, column: &str) -> Option<&str> {
        self.row.try_get(column).ok().flatten()
    }

    fn required(&self, column: &str) -> Result<&str> {
        self.optional(column)
            .ok_or_else(|| Error::client(format!("the server's answer has no {column}")))
    }
}

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    text.parse()
        .map_err(|e| Error::client(format!("the server's {what} {text:?}: {e}")))
}

/// The server's rule for slot names (`ReplicationSlotValidateName`), checked before sending.
fn check_slot_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "{name:?} is not a replication slot name (1 to 63 lower-case letters, digits and \
             underscores)"
        )))
    }
}

/// `'value'`, with any `'` doubled (the replication grammar has no backslash escapes).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `"name"`, with any `"` doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_the_servers_rule() {
        for good in ["a", "slot_1", &"x".repeat(63)] {
            assert!(check_slot_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Slot",
            "a-b",
            "a b",
            "é",
            "a\"b",
            &"x".repeat(64),
            "a;DROP",
        ] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
        assert_eq!(quote_ident("pg\"output"), "\"pg\"\"output\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
