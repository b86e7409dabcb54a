//! The replication protocol (issue 18, in progress): so far the [`Lsn`] type that every part
//! of it (slots, the WAL stream, feedback) speaks in.

mod lsn;

pub use lsn::{Lsn, ParseLsnError};
