//! The blocking replication connection (`replication=database` or `replication=true`).

use std::fmt;

use crate::error::Result;
use crate::{Config, Connection, SimpleQueryMessage};

use super::commands::{self, Row};
use super::stream::{Keeper, ReplicationStream};
use super::{CreatedSlot, Lsn, ReplicationMode, SlotKind, SlotPosition, SystemIdentity};

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
    pub(crate) logical_streamed: bool,
}

impl ReplicationConnection {
    /// Connects with `config` plus the `replication` option for `mode` (which replaces any
    /// `replication` already in the config).
    #[doc(alias = "PQconnectdbParams")]
    pub fn connect(config: &Config, mode: ReplicationMode) -> Result<ReplicationConnection> {
        let mut config = config.clone();
        config.param("replication", mode.conninfo_value());
        let conn = config.connect()?;
        Ok(ReplicationConnection::from_connection(conn, mode))
    }

    pub(crate) fn from_connection(
        conn: Connection,
        mode: ReplicationMode,
    ) -> ReplicationConnection {
        ReplicationConnection {
            conn,
            mode,
            keeper: None,
            logical_streamed: false,
        }
    }

    /// The mode this connection was made in.
    pub fn mode(&self) -> ReplicationMode {
        self.mode
    }

    /// `IDENTIFY_SYSTEM`: the cluster's identity and current WAL position.
    #[doc(alias = "IDENTIFY_SYSTEM")]
    #[doc(alias = "PQexec")]
    pub fn identify_system(&mut self) -> Result<SystemIdentity> {
        commands::system_identity(&self.one_row(commands::IDENTIFY_SYSTEM)?)
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
        let version = self.live().server_version();
        let sql = commands::create_slot(name, kind, temporary, version)?;
        commands::created_slot(&self.one_row(&sql)?)
    }

    /// `DROP_REPLICATION_SLOT`; with `wait`, waits until a connection still using the slot
    /// has gone instead of failing.
    #[doc(alias = "DROP_REPLICATION_SLOT")]
    #[doc(alias = "PQexec")]
    pub fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        let sql = commands::drop_slot(name, wait)?;
        self.live().simple_query(&sql).map(drop)
    }

    /// `READ_REPLICATION_SLOT` (server 15+): where a slot stands, or `None` if there is no
    /// such slot. An error of kind [`Unsupported`](crate::error::ErrorKind::Unsupported) on
    /// older servers.
    #[doc(alias = "READ_REPLICATION_SLOT")]
    #[doc(alias = "PQexec")]
    pub fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotPosition>> {
        let version = self.live().server_version();
        let sql = commands::read_slot(name, version)?;
        commands::slot_position(&self.one_row(&sql)?)
    }

    /// `TIMELINE_HISTORY`: the history file of timeline `timeline` (2 or later), as its
    /// file name and contents.
    #[doc(alias = "TIMELINE_HISTORY")]
    #[doc(alias = "PQexec")]
    pub fn timeline_history(&mut self, timeline: u32) -> Result<(String, String)> {
        let sql = commands::timeline_history(timeline);
        commands::history_file(&self.one_row(&sql)?)
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
            return Err(commands::not_logical());
        }
        if self.logical_streamed {
            return Err(commands::second_logical_stream());
        }
        let sql = commands::start_logical(slot, start, options)?;
        self.start_stream(&sql, false)
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
        let sql = commands::start_physical(slot, start, timeline)?;
        self.start_stream(&sql, true)
    }

    /// Runs SQL (or a replication command) with the simple query protocol; on a physical
    /// connection the server accepts only replication commands. `START_REPLICATION` is an
    /// error of kind [`BadInput`](crate::error::ErrorKind::BadInput): its stream needs
    /// [`start_logical_replication`](Self::start_logical_replication) or
    /// [`start_physical_replication`](Self::start_physical_replication).
    #[doc(alias = "PQexec")]
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        commands::refuse_stream(sql)?;
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
        commands::first_row(messages, sql)
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
