//! Connection pools: a [`deadpool`] manager for the async client (feature `deadpool`, unix)
//! and an [`r2d2`] manager for the blocking [`Connection`](crate::Connection) (feature
//! `r2d2`).
//!
//! Both keep the same promises:
//!
//! - **A broken connection is never handed out again.** The async pool checks that the
//!   connection task is still running; the blocking pool asks libpq (`PQstatus`). Either
//!   drops a broken connection and hands out another (or a new) one.
//! - **No transaction survives a return to the pool.** A connection given back inside a
//!   transaction (or a failed one) is rolled back before anyone else gets it.
//! - **Recycling an idle connection is cheap**: no round trip to the server unless asked for
//!   (the async pool's [`RecyclingMethod::Verified`](self::deadpool::RecyclingMethod), the
//!   blocking pool's `test_on_check_out`).
//!
//! ```no_run
//! # #[cfg(all(feature = "deadpool", unix))]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use pqlib::pool::deadpool::{Manager, Pool};
//!
//! let manager = Manager::new("host=localhost user=postgres".parse()?);
//! let pool = Pool::builder(manager).max_size(8).build()?;
//! let client = pool.get().await?;
//! let n: i64 = client.query_one("SELECT $1::int8 * 2", &[&21i64]).await?.get(0);
//! # Ok(()) }
//! ```

#[cfg(all(feature = "deadpool", unix))]
pub mod deadpool;

#[cfg(feature = "r2d2")]
pub mod r2d2;
