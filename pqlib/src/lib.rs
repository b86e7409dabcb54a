//! Safe, fast bindings to libpq, PostgreSQL's C client library.
//!
//! ```no_run
//! # fn main() -> Result<(), pqlib::Error> {
//! let mut conn = pqlib::Connection::connect("host=localhost user=postgres dbname=postgres")?;
//! conn.batch_execute("CREATE TEMP TABLE people (id int4, name text)")?;
//! conn.execute("INSERT INTO people VALUES ($1, $2)", &[&1i32, &"Ada"])?;
//! for row in &conn.query("SELECT id, name FROM people", &[])? {
//!     let id: i32 = row.get("id");
//!     let name: &str = row.get("name"); // borrowed from libpq's result, no copy
//!     println!("{id}: {name}");
//! }
//! # Ok(()) }
//! ```
//!
//! # Ownership and threads
//!
//! Every libpq object has exactly one Rust owner that frees it on drop: a [`Connection`] owns
//! its `PGconn`, [`Rows`] owns a `PGresult`. Nothing that holds a raw pointer is `Clone`.
//! Values borrowed from a row (`&str`, `&[u8]`) point into the result's memory and the
//! borrow checker keeps them from outliving it; a [`Transaction`] borrows its connection
//! mutably, so the connection cannot be used behind its back.
//!
//! libpq allows one thread at a time per connection, so `Connection` is `Send` but not
//! `Sync`; results are immutable, so `Rows` is `Send + Sync`. A [`CancelToken`] is the one
//! thing meant to be used from another thread while a query runs.
//!
//! Callbacks from C into Rust (the notice handler) run inside a trampoline that catches
//! panics; a panic is re-raised on the calling thread after libpq returns, never unwound
//! through C.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::undocumented_unsafe_blocks)]

mod auth;
pub mod binary_copy;
mod cancel;
pub mod config;
mod connection;
mod copy;
pub mod error;
mod handle;
pub mod large_object;
mod notice;
pub mod notify;
pub mod pipeline;
mod row;
mod row_stream;
mod statement;
mod trace;
pub mod tls;
mod transaction;
pub mod types;
mod version;

#[cfg(all(feature = "tempdb", unix))]
pub mod tempdb;

#[cfg(all(feature = "tokio", unix))]
pub mod tokio;


pub use cancel::CancelToken;
pub use config::Config;
pub use connection::{Connection, MAX_PARAMETERS, TransactionStatus};
pub use copy::{CopyInWriter, CopyOutReader};
pub use error::{Error, Result};
pub use large_object::{LargeObject, LargeObjectMode};
pub use notify::{Notification, Notifications};
pub use pipeline::{Pipeline, PipelineResult};
pub use row_stream::{RowStream, STREAM_CHUNK_ROWS};
pub use row::{Column, OwnedRow, Row, RowIndex, RowIter, Rows};
pub use statement::{STATEMENT_CACHE_CAPACITY, Statement, ToStatement};
pub use transaction::{IsolationLevel, Transaction, TransactionBuilder};
pub use version::{Version, version};
