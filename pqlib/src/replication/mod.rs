//! The replication protocol: [`Lsn`], replication connections and their typed commands
//! ([`ReplicationConnection`]; async: `pqlib::tokio::ReplicationClient`), the COPY BOTH
//! stream of WAL or logical changes ([`ReplicationStream`]), and a decoder for the pgoutput
//! plugin's messages ([`pgoutput`]). docs/replication.md has the slot life cycle, feedback and
//! WAL retention, and failover.

pub(crate) mod commands;
mod connection;
mod lsn;
mod message;
pub mod pgoutput;
pub(crate) mod stream;

pub use commands::{
    CreatedSlot, ReplicationMode, SlotKind, SlotPosition, SnapshotAction, SystemIdentity,
};
pub use connection::ReplicationConnection;
pub use lsn::{Lsn, ParseLsnError};
pub use message::{PrimaryKeepalive, ReplicationMessage, XLogData};
pub use stream::{Received, ReplicationStream};
