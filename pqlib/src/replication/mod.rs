//! The replication protocol: [`Lsn`], replication connections and their typed commands
//! ([`ReplicationConnection`]), and the COPY BOTH stream of WAL or logical changes
//! ([`ReplicationStream`]).

mod connection;
mod lsn;
mod message;
mod stream;

pub use connection::{
    CreatedSlot, ReplicationConnection, ReplicationMode, SlotKind, SlotPosition, SnapshotAction,
    SystemIdentity,
};
pub use lsn::{Lsn, ParseLsnError};
pub use message::{PrimaryKeepalive, ReplicationMessage, XLogData};
pub use stream::{Received, ReplicationStream};
