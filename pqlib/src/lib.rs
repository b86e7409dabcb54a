//! Safe, fast bindings to libpq, PostgreSQL's C client library.
//!
//! pqlib speaks PostgreSQL the way `psql` does, because it *is* libpq underneath: every
//! connection option, `.pgpass`, service files, `PG*` variables, all TLS modes and
//! authentication methods (GSSAPI included), multi-host failover, pipeline mode, COPY, large
//! objects and row streaming — with an API shaped like the `postgres` crate and ownership
//! rules the compiler checks.
//!
//! # A 30-second tour
//!
//! ```no_run
//! # fn main() -> Result<(), pqlib::Error> {
//! // Any libpq connection string or URI; PG* variables and ~/.pgpass apply as in psql.
//! let mut conn = pqlib::Connection::connect("host=localhost user=postgres dbname=postgres")?;
//! conn.batch_execute("CREATE TEMP TABLE people (id int4, name text)")?;
//!
//! // Parameters and results travel in binary; SQL text is prepared once and cached.
//! conn.execute("INSERT INTO people VALUES ($1, $2)", &[&1i32, &"Ada"])?;
//! for row in &conn.query("SELECT id, name FROM people", &[])? {
//!     let id: i32 = row.get("id");
//!     let name: &str = row.get("name"); // borrowed from libpq's result, no copy
//!     println!("{id}: {name}");
//! }
//!
//! // Many statements, one round trip.
//! let mut pipeline = conn.pipeline()?;
//! for i in 2..100i32 {
//!     pipeline.execute("INSERT INTO people VALUES ($1, 'someone')", &[&i])?;
//! }
//! pipeline.sync()?;
//! while let Some(result) = pipeline.next_result() {
//!     result?;
//! }
//! pipeline.finish()?;
//!
//! // Bulk data through COPY.
//! use std::io::Write;
//! let mut copy = conn.copy_in("COPY people FROM STDIN")?;
//! copy.write_all(b"100\tGrace\n")?;
//! copy.finish()?;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! |---|---|
//! | `vendored` | libpq 18.6 built from source and linked statically (OpenSSL from the system) |
//! | `vendored-openssl` | as `vendored`, with OpenSSL built from source too |
//! | `tokio` | `pqlib::tokio`: an async client with automatic pipelining (unix) |
//! | `openssl` | `Connection::ssl`: the session's OpenSSL `SslRef` |
//! | `tracing` | `tracing` events for connections, statements and COPY |
//! | `tempdb` | `pqlib::tempdb::TempCluster`: a throwaway server for examples and tests (unix) |
//! | `derive` | `#[derive(ToSql, FromSql)]` for enums, composites and domains |
//! | `serde_json`, `chrono`, `time`, `uuid` | `ToSql`/`FromSql` for those crates' types |
//!
//! The examples in the repository (`examples/`) are small complete programs: `quickstart`,
//! `pipeline`, `copy_csv`, `tls`, `async_tokio`, `pool`.
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
//!
//! # Public dependencies
//!
//! A new major version of one of these crates is a breaking change of pqlib, because their
//! types or traits appear in its API: `postgres-types` (re-exported as [`types`]), `bytes`
//! and the `Stream`/`Sink` traits of `futures-core`/`futures-sink` (async COPY and row
//! streams), `openssl` (feature `openssl`), `deadpool` and `r2d2` (their features), and
//! `pqlib-sys` (the raw handle from [`Connection::as_ptr`]). Everything else pqlib depends on
//! stays private; `scripts/public-api-deps.py` checks this in CI from rustdoc's JSON.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::undocumented_unsafe_blocks)]

mod auth;
pub mod binary_copy;
mod cancel;
pub mod config;
mod connect;
mod connection;
mod copy;
mod copy_discard;
mod decode;
mod encoding;
pub mod error;
mod handle;
pub mod large_object;
mod notice;
pub mod notify;
#[cfg(libpq_18)]
#[cfg_attr(docsrs, doc(cfg(libpq_18)))]
pub mod oauth;
mod params;
pub mod pipeline;
mod portal;
mod prepare;
pub mod replication;
mod row;
mod row_stream;
mod session;
mod simple_query;
mod statement;
pub mod tls;
mod trace;
mod transaction;
pub mod types;
mod version;

#[cfg(all(feature = "tempdb", unix))]
pub mod tempdb;

#[cfg(all(feature = "tokio", unix))]
pub mod tokio;

#[cfg(any(all(feature = "deadpool", unix), feature = "r2d2"))]
pub mod pool;

pub use cancel::CancelToken;
pub use config::Config;
pub use connection::{Connection, MAX_PARAMETERS, TransactionStatus};
pub use copy::{CopyInWriter, CopyOutReader};
pub use error::{Error, Result};
pub use large_object::{LargeObject, LargeObjectMode};
pub use notify::{Notification, Notifications};
pub use pipeline::{Pipeline, PipelineResult};
pub use portal::Portal;
pub use prepare::PreparePolicy;
pub use row::{Column, OwnedRow, Row, RowIndex, RowIter, Rows};
pub use row_stream::{RowStream, STREAM_CHUNK_ROWS};
pub use session::ProtocolVersion;
pub use simple_query::{SimpleColumn, SimpleQueryMessage, SimpleQueryRow, SimpleRowIndex};
pub use statement::{STATEMENT_CACHE_CAPACITY, Statement, ToStatement};
pub use transaction::{IsolationLevel, Transaction, TransactionBuilder};
pub use version::{Version, version};
