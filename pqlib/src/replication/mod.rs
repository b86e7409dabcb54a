//! The replication protocol (issue 18, in progress): [`Lsn`], replication connections and
//! their typed commands. The COPY BOTH stream and the pgoutput decoder come next.

mod connection;
mod lsn;
pub mod pgoutput;

pub use connection::{
    CreatedSlot, ReplicationConnection, ReplicationMode, SlotKind, SlotPosition, SnapshotAction,
    SystemIdentity,
};
pub use lsn::{Lsn, ParseLsnError};
