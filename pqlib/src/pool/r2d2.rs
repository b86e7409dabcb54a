//! An [`r2d2`](https://docs.rs/r2d2) manager for the blocking [`Connection`] (feature
//! `r2d2`).
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use pqlib::pool::r2d2::{ConnectionManager, Pool};
//!
//! let manager = ConnectionManager::new("host=localhost user=postgres".parse()?);
//! let pool = Pool::builder()
//!     .max_size(8)
//!     .connection_timeout(Duration::from_secs(5))
//!     .build(manager)?;
//! let mut conn = pool.get()?;
//! let n: i64 = conn.query_one("SELECT $1::int8 * 2", &[&21i64])?.get(0);
//! # Ok(()) }
//! ```
//!
//! # Recycling
//!
//! The blocking connection knows its transaction status exactly (`PQtransactionStatus`), so
//! nothing is guessed:
//!
//! - **On return** (r2d2's `has_broken`, run on the returning thread): a closed connection
//!   is dropped. One left inside a transaction block (good or failed) is rolled back there
//!   and then, so the next user never sees it; that costs a round trip only in this case
//!   (a [`Transaction`](crate::Transaction) rolls back when dropped, so it takes a raw
//!   `BEGIN` left open). A connection that cannot be rolled back, or is still busy with a
//!   statement (a leaked COPY or row stream), is dropped. An idle connection costs nothing.
//! - **On checkout** (r2d2's `is_valid`, only if the pool's `test_on_check_out` is on,
//!   which is r2d2's default): an empty query, the cheapest round trip that proves the
//!   server still answers. Turn `test_on_check_out` off for checkouts with no round trip;
//!   a connection whose server went away is then found out by the first statement on it
//!   (and dropped when returned).

use crate::error::{Error, Result};
use crate::{Config, Connection, TransactionStatus};

/// A pool of blocking connections.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::r2d2::{ConnectionManager, Pool};
///
/// let pool = Pool::new(ConnectionManager::new("dbname=app".parse()?))?;
/// let mut conn = pool.get()?;
/// conn.batch_execute("SELECT 1")?;
/// # Ok(()) }
/// ```
pub type Pool = ::r2d2::Pool<ConnectionManager>;

/// A connection checked out of a [`Pool`]: dereferences to [`Connection`] and goes back to
/// the pool when dropped.
///
/// ```no_run
/// # fn run(pool: pqlib::pool::r2d2::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn: pqlib::pool::r2d2::PooledConnection = pool.get()?;
/// let mut tx = conn.transaction()?;
/// tx.execute("INSERT INTO t VALUES (1)", &[])?;
/// tx.commit()?;
/// # Ok(()) }
/// ```
pub type PooledConnection = ::r2d2::PooledConnection<ConnectionManager>;

/// Builds a [`Pool`]: `Pool::builder()`.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::r2d2::{Builder, ConnectionManager, Pool};
///
/// let builder: Builder = Pool::builder();
/// let pool = builder.max_size(4).build(ConnectionManager::new("dbname=app".parse()?))?;
/// # Ok(()) }
/// ```
pub type Builder = ::r2d2::Builder<ConnectionManager>;

/// Why [`Pool::get`] failed (r2d2's error: a timeout, with the last connection error if
/// there was one).
///
/// ```no_run
/// # fn run(pool: pqlib::pool::r2d2::Pool) {
/// match pool.get() {
///     Ok(conn) => { /* … */ }
///     Err(e) => eprintln!("no connection: {e}"),
/// }
/// # }
/// ```
pub use ::r2d2::Error as PoolError;

/// Creates, checks and recycles blocking connections for an r2d2 [`Pool`]; see the
/// [module documentation](self).
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::r2d2::{ConnectionManager, Pool};
///
/// let mut config = pqlib::Config::new();
/// config.host("/var/run/postgresql").dbname("app");
/// let pool = Pool::builder().max_size(4).build(ConnectionManager::new(config))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionManager {
    config: Config,
}

impl ConnectionManager {
    /// A manager that connects with `config`.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), pqlib::Error> {
    /// let manager = pqlib::pool::r2d2::ConnectionManager::new("postgresql://app@db/app".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn new(config: Config) -> ConnectionManager {
        ConnectionManager { config }
    }

    /// The connection parameters.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), pqlib::Error> {
    /// let manager = pqlib::pool::r2d2::ConnectionManager::new("dbname=app".parse()?);
    /// assert_eq!(manager.config().get("dbname"), Some("app"));
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ::r2d2::ManageConnection for ConnectionManager {
    type Connection = Connection;
    type Error = Error;

    fn connect(&self) -> Result<Connection> {
        Connection::connect_config(&self.config)
    }

    /// An empty query: one round trip, no parsing or planning. A transaction left open
    /// (which `has_broken` normally ends already) is rolled back first.
    fn is_valid(&self, conn: &mut Connection) -> Result<()> {
        end_transaction(conn)?;
        conn.batch_execute("")
    }

    /// Closed, or left in a transaction that cannot be rolled back: dropped.
    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.is_closed() || end_transaction(conn).is_err()
    }
}

/// Rolls back a transaction block left open; fails if the connection is not idle afterwards.
fn end_transaction(conn: &mut Connection) -> Result<()> {
    match conn.transaction_status() {
        TransactionStatus::Idle => return Ok(()),
        TransactionStatus::InTransaction | TransactionStatus::InError => {
            conn.batch_execute("ROLLBACK")?;
        }
        TransactionStatus::Active | TransactionStatus::Unknown => {}
    }
    match conn.transaction_status() {
        TransactionStatus::Idle => Ok(()),
        status => Err(Error::client(format!(
            "the connection was returned to the pool {status:?}, and could not be made idle"
        ))),
    }
}
