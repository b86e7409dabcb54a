//! The replication protocol: [`Lsn`], replication connections and their typed commands
//! ([`ReplicationConnection`]), and the COPY BOTH stream of WAL or logical changes
//! ([`ReplicationStream`]).

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
