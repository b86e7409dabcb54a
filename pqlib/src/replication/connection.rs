//! A replication connection (`replication=database` or `replication=true`) and its typed
//! commands.

use std::fmt;

use crate::error::{Error, Result};
use crate::{Config, Connection, SimpleQueryMessage};

use super::Lsn;
use super::stream::{Keeper, ReplicationStream};

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
    fn conninfo_value(self) -> &'static str {
        match self {
            ReplicationMode::Logical => "database",
            ReplicationMode::Physical => "true",
        }
    }
}

/// A connection to a walsender: what `replication=database` or `replication=true` makes,
/// with typed replication commands. The server accepts only the simple query protocol on
/// it, so this type offers only that ([`simple_query`](ReplicationConnection::simple_query)
/// for SQL on a logical connection) besides the commands.
///
/// ```no_run
/// use pqlib::replication::{ReplicationConnection, ReplicationMode};
///
/// let config: pqlib::Config = "host=localhost user=postgres dbname=app".parse()?;
/// let mut conn = ReplicationConnection::connect(&config, ReplicationMode::Logical)?;
/// let system = conn.identify_system()?;
/// println!("cluster {} at {} on timeline {}", system.system_id, system.wal_position, system.timeline);
/// # Ok::<(), pqlib::Error>(())
/// ```
pub struct ReplicationConnection {
    pub(crate) conn: Connection,
    mode: ReplicationMode,
    /// The keeper thread of a running stream (see `stream.rs`).
    pub(crate) keeper: Option<Keeper>,
    /// A logical stream ran on this connection: the walsender keeps its "streaming done"
    /// flags afterwards (only the physical start resets them), so a second one would end
    /// the moment it started.
    logical_streamed: bool,
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
    /// Where the slot starts (for logical slots, the first transaction it decodes commits
    /// after this; for a physical slot without reserved WAL, `None`).
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

impl ReplicationConnection {
    /// Connects with `config` plus the `replication` option for `mode` (which replaces any
    /// `replication` already in the config).
    #[doc(alias = "PQconnectdbParams")]
    pub fn connect(config: &Config, mode: ReplicationMode) -> Result<ReplicationConnection> {
        let mut config = config.clone();
        config.param("replication", mode.conninfo_value());
        let conn = config.connect()?;
        Ok(ReplicationConnection {
            conn,
            mode,
            keeper: None,
            logical_streamed: false,
        })
    }

    /// The mode this connection was made in.
    pub fn mode(&self) -> ReplicationMode {
        self.mode
    }

    /// `IDENTIFY_SYSTEM`: the cluster's identity and current WAL position.
    #[doc(alias = "IDENTIFY_SYSTEM")]
    #[doc(alias = "PQexec")]
    pub fn identify_system(&mut self) -> Result<SystemIdentity> {
        let row = self.one_row("IDENTIFY_SYSTEM")?;
        Ok(SystemIdentity {
            system_id: row.required("systemid")?.to_owned(),
            timeline: parse(row.required("timeline")?, "timeline")?,
            wal_position: parse(row.required("xlogpos")?, "xlogpos")?,
            database: row.optional("dbname").map(str::to_owned),
        })
    }

    /// `CREATE_REPLICATION_SLOT`, temporary (dropped when this connection ends) or not.
    ///
    /// A slot name is 1 to 63 lower-case letters, digits and underscores (the server's own
    /// rule, checked here first); a plugin name is sent quoted.
    #[doc(alias = "CREATE_REPLICATION_SLOT")]
    #[doc(alias = "PQexec")]
    pub fn create_replication_slot(
        &mut self,
        name: &str,
        kind: &SlotKind,
        temporary: bool,
    ) -> Result<CreatedSlot> {
        check_slot_name(name)?;
        let modern = self.live().server_version() >= 150000;
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
        let row = self.one_row(&sql)?;
        Ok(CreatedSlot {
            slot_name: row.required("slot_name")?.to_owned(),
            consistent_point: row
                .optional("consistent_point")
                .map(|text| parse(text, "consistent_point"))
                .transpose()?,
            snapshot_name: row.optional("snapshot_name").map(str::to_owned),
            output_plugin: row.optional("output_plugin").map(str::to_owned),
        })
    }

    /// `DROP_REPLICATION_SLOT`; with `wait`, waits until a connection still using the slot
    /// has gone instead of failing.
    #[doc(alias = "DROP_REPLICATION_SLOT")]
    #[doc(alias = "PQexec")]
    pub fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        check_slot_name(name)?;
        let mut sql = format!("DROP_REPLICATION_SLOT {}", quote_ident(name));
        if wait {
            sql.push_str(" WAIT");
        }
        self.live().simple_query(&sql).map(drop)
    }

    /// `READ_REPLICATION_SLOT` (server 15+): where a slot stands, or `None` if there is no
    /// such slot. An error of kind [`Unsupported`](crate::error::ErrorKind::Unsupported) on
    /// older servers.
    #[doc(alias = "READ_REPLICATION_SLOT")]
    #[doc(alias = "PQexec")]
    pub fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotPosition>> {
        check_slot_name(name)?;
        let version = self.live().server_version();
        if version < 150000 {
            return Err(Error::unsupported(format!(
                "READ_REPLICATION_SLOT needs server 15 or newer; this one is {version}"
            )));
        }
        let row = self.one_row(&format!("READ_REPLICATION_SLOT {}", quote_ident(name)))?;
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

    /// `TIMELINE_HISTORY`: the history file of timeline `timeline` (2 or later), as its
    /// file name and contents.
    #[doc(alias = "TIMELINE_HISTORY")]
    #[doc(alias = "PQexec")]
    pub fn timeline_history(&mut self, timeline: u32) -> Result<(String, String)> {
        let row = self.one_row(&format!("TIMELINE_HISTORY {timeline}"))?;
        Ok((
            row.required("filename")?.to_owned(),
            row.required("content")?.to_owned(),
        ))
    }

    /// `START_REPLICATION SLOT … LOGICAL`: streams the changes the slot's output plugin
    /// decodes, from `start` (or, with [`Lsn::INVALID`], from where the slot's consumer last
    /// confirmed). `options` go to the plugin as name/value pairs (for pgoutput,
    /// [`PgOutputOptions`](crate::replication::pgoutput::PgOutputOptions) makes them); pqlib
    /// quotes both.
    ///
    /// One logical stream per connection: the server ends a second one on the same
    /// connection as soon as it starts, so that is an error of kind
    /// [`Unsupported`](crate::error::ErrorKind::Unsupported); connect again instead.
    ///
    /// ```no_run
    /// use pqlib::replication::{Lsn, ReplicationConnection, ReplicationMode};
    ///
    /// let config: pqlib::Config = "host=localhost user=postgres dbname=app".parse()?;
    /// let mut conn = ReplicationConnection::connect(&config, ReplicationMode::Logical)?;
    /// let stream = conn.start_logical_replication(
    ///     "app_slot",
    ///     Lsn::INVALID,
    ///     &[("proto_version", "1"), ("publication_names", "app_pub")],
    /// )?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "START_REPLICATION")]
    #[doc(alias = "PQgetCopyData")]
    pub fn start_logical_replication<N: AsRef<str>, V: AsRef<str>>(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(N, V)],
    ) -> Result<ReplicationStream<'_>> {
        if self.mode != ReplicationMode::Logical {
            return Err(Error::bad_input(
                "logical replication needs a connection made with ReplicationMode::Logical",
            ));
        }
        check_slot_name(slot)?;
        if self.logical_streamed {
            return Err(Error::unsupported(
                "a logical stream already ran on this connection, and the server ends a \
                 second one at once (the walsender keeps its end-of-stream state); connect \
                 again to restart",
            ));
        }
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
        let stream = self.start_stream(&sql, false)?;
        stream.conn.logical_streamed = true;
        Ok(stream)
    }

    /// `START_REPLICATION [SLOT …] PHYSICAL`: streams the cluster's WAL from `start` on
    /// `timeline` (the current one if `None`), through `slot` if given (which then keeps the
    /// WAL the stream has not confirmed).
    ///
    /// ```no_run
    /// use pqlib::replication::{ReplicationConnection, ReplicationMode};
    ///
    /// let config: pqlib::Config = "host=localhost user=postgres".parse()?;
    /// let mut conn = ReplicationConnection::connect(&config, ReplicationMode::Physical)?;
    /// let system = conn.identify_system()?;
    /// let stream = conn.start_physical_replication(None, system.wal_position, None)?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "START_REPLICATION")]
    #[doc(alias = "PQgetCopyData")]
    pub fn start_physical_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<u32>,
    ) -> Result<ReplicationStream<'_>> {
        let mut sql = String::from("START_REPLICATION");
        if let Some(slot) = slot {
            check_slot_name(slot)?;
            sql.push_str(&format!(" SLOT {}", quote_ident(slot)));
        }
        sql.push_str(&format!(" PHYSICAL {start}"));
        if let Some(timeline) = timeline {
            sql.push_str(&format!(" TIMELINE {timeline}"));
        }
        self.start_stream(&sql, true)
    }

    /// Runs SQL (or a replication command) with the simple query protocol; on a physical
    /// connection the server accepts only replication commands.
    #[doc(alias = "PQexec")]
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        self.live().simple_query(sql)
    }

    /// The server's version number (`PQserverVersion`).
    #[doc(alias = "PQserverVersion")]
    pub fn server_version(&self) -> u32 {
        self.conn.server_version()
    }

    /// The connection, once no keeper thread can touch it any more (a leaked stream's).
    fn live(&mut self) -> &mut Connection {
        self.stop_keeper();
        &mut self.conn
    }

    fn one_row(&mut self, sql: &str) -> Result<Row> {
        let messages = self.live().simple_query(sql)?;
        let mut rows = messages.into_iter().filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let row = rows
            .next()
            .ok_or_else(|| Error::client(format!("{sql} returned no row")))?;
        Ok(Row { row })
    }
}

impl Drop for ReplicationConnection {
    fn drop(&mut self) {
        // Before the connection is freed: the keeper holds its pointer.
        self.stop_keeper();
    }
}

impl fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("mode", &self.mode)
            .field("conn", &self.conn)
            .finish()
    }
}

/// A command's row, read by column name.
struct Row {
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
