//! Safe, fast bindings to libpq, PostgreSQL's C client library.
#![deny(missing_docs)]

mod version;

#[cfg(feature = "tempdb")]
pub mod tempdb;

pub use version::{Version, version};
