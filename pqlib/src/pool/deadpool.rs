//! A [`deadpool`](https://docs.rs/deadpool) manager for the async client (feature `deadpool`,
//! unix).
//!
//! [`Manager`] connects with [`crate::tokio::connect_config`] and spawns each connection's
//! task on the current tokio runtime. The pool hands out [`Object`]s, which dereference to a
//! [`PooledClient`], which dereferences to a [`Client`]: use it like any client, and drop it
//! to give it back.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use pqlib::pool::deadpool::{Manager, Pool, Runtime};
//!
//! let manager = Manager::new("host=localhost user=postgres".parse()?);
//! let pool = Pool::builder(manager)
//!     .max_size(16)
//!     .runtime(Runtime::Tokio1) // needed for the timeouts
//!     .wait_timeout(Some(Duration::from_secs(5)))
//!     .build()?;
//! let mut client = pool.get().await?;
//! let tx = client.transaction().await?;
//! tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[&7i32])
//!     .await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! # Recycling
//!
//! deadpool recycles an object when it is checked out again ([`Manager`]'s
//! `recycle`). Recycling here:
//!
//! 1. **Drops a broken connection**: if the connection task has finished (the server closed
//!    the session, the socket failed) or the client is closed, the object is discarded and
//!    the pool moves on to another one or connects anew. This costs nothing: no round trip.
//! 2. **Ends a transaction left open**, without a round trip when there is none. The async
//!    client cannot see libpq's transaction status (the connection task owns the `PGconn`),
//!    so the [`PooledClient`] keeps a *may be in a transaction* flag, set before sending
//!    anything that could leave a transaction block open:
//!    - a transaction opened with [`PooledClient::transaction`] sets it until it is
//!      committed or rolled back, or dropped (the client then queues a `ROLLBACK` ahead of
//!      everything sent later, so the flag is cleared at once);
//!    - SQL run through [`PooledClient`]'s own query methods sets it if the text has one of
//!      the words `BEGIN`, `START` or `CHAIN` (a superset test: it errs only towards a
//!      needless check, e.g. for a `DO` block).
//!
//!    Only when the flag is set does recycling ask the server where the session stands (one
//!    round trip: two pipelined statements, `set_config('pqlib.pool_probe', …, true)` and
//!    `current_setting('pqlib.pool_probe', true)`: a transaction-local setting that is still
//!    there in the second statement means a transaction block is open; an
//!    `in_failed_sql_transaction` error means a failed one) and sends `ROLLBACK` if a
//!    transaction is open. Probing first means a plain `ROLLBACK` is never sent to an idle
//!    session, so the server logs no "there is no transaction in progress" warnings.
//!
//! With [`RecyclingMethod::Fast`] (the default) a clean object is handed out again with no
//! I/O at all. [`RecyclingMethod::Verified`] always runs the probe: one round trip per
//! checkout, in exchange for proof that the server still answers and for catching
//! transactions opened around the wrapper (through [`PooledClient::client`], a clone of the
//! client, or a function that takes `&Client`).
//!
//! Session state other than the transaction (settings, `LISTEN`s, temporary tables,
//! prepared statements) is left as the last user left it, as with `deadpool-postgres`.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use ::deadpool::managed;
use tokio::task::JoinHandle;

use crate::Config;
use crate::error::{Error, Result, SqlState};
use crate::row::{OwnedRow, Rows};
use crate::statement::{StatementRef, ToStatement};
use crate::tokio::Client;
use crate::types::{ToSql, Type};

pub use ::deadpool::managed::reexports::{
    Metrics, ObjectId, PoolConfig, Runtime, Status, TimeoutType, Timeouts,
};
pub use ::deadpool::managed::{BuildError, QueueMode};

/// How long recycling waits for a broken connection's task to finish.
const DRIVER_EXIT_WAIT: Duration = Duration::from_secs(1);

/// A pool of async clients.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::deadpool::{Manager, Pool};
///
/// let pool = Pool::builder(Manager::new("dbname=app".parse()?)).max_size(4).build()?;
/// let client = pool.get().await?;
/// client.batch_execute("SELECT 1").await?;
/// # Ok(()) }
/// ```
pub type Pool = managed::Pool<Manager>;

/// Builds a [`Pool`]: [`Pool::builder`]`(manager)`.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::deadpool::{Manager, Pool, PoolBuilder};
///
/// let builder: PoolBuilder = Pool::builder(Manager::new("dbname=app".parse()?));
/// let pool = builder.max_size(4).build()?;
/// # Ok(()) }
/// ```
pub type PoolBuilder = managed::PoolBuilder<Manager>;

/// A pooled client, checked out with [`Pool::get`]: dereferences to [`PooledClient`], and
/// goes back to the pool when dropped.
///
/// ```no_run
/// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let client: pqlib::pool::deadpool::Object = pool.get().await?;
/// let rows = client.query("SELECT 1", &[]).await?;
/// drop(client); // back to the pool
/// # Ok(()) }
/// ```
pub type Object = managed::Object<Manager>;

/// Why [`Pool::get`] failed: a timeout ([`TimeoutType`]), a connection error
/// ([`PoolError::Backend`](managed::PoolError::Backend) with a [`crate::Error`]), or a closed
/// pool.
///
/// ```no_run
/// # async fn run(pool: pqlib::pool::deadpool::Pool) {
/// use pqlib::pool::deadpool::{PoolError, TimeoutType};
///
/// match pool.get().await {
///     Ok(client) => { /* … */ }
///     Err(PoolError::Timeout(TimeoutType::Wait)) => eprintln!("every connection is busy"),
///     Err(e) => eprintln!("no connection: {e}"),
/// }
/// # }
/// ```
pub type PoolError = managed::PoolError<Error>;

/// Why a connection could not be recycled (it is then dropped, never handed out).
///
/// ```no_run
/// let e = pqlib::pool::deadpool::RecycleError::message("the connection is closed");
/// ```
pub type RecycleError = managed::RecycleError<Error>;

/// A hook run on objects as they are created or recycled ([`PoolBuilder::post_create`]…).
///
/// ```no_run
/// # fn run(builder: pqlib::pool::deadpool::PoolBuilder) {
/// use pqlib::pool::deadpool::Hook;
///
/// let builder = builder.post_create(Hook::async_fn(|client, _metrics| {
///     Box::pin(async move {
///         client
///             .batch_execute("SET application_name = 'worker'")
///             .await
///             .map_err(pqlib::pool::deadpool::HookError::Backend)
///     })
/// }));
/// # }
/// ```
pub type Hook = managed::Hook<Manager>;

/// The error a [`Hook`] returns.
///
/// ```no_run
/// let e = pqlib::pool::deadpool::HookError::message("refused");
/// ```
pub type HookError = managed::HookError<Error>;

/// How much work [`Manager`] does when it recycles a client; see the
/// [module documentation](self).
///
/// ```no_run
/// # fn run() -> Result<(), pqlib::Error> {
/// use pqlib::pool::deadpool::{Manager, RecyclingMethod};
///
/// let manager = Manager::new("dbname=app".parse()?).recycling_method(RecyclingMethod::Verified);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecyclingMethod {
    /// No round trip unless the client may have left a transaction open: a broken
    /// connection is caught when its connection task has ended.
    #[default]
    Fast,
    /// One round trip per checkout: proves the server answers, and ends any open
    /// transaction, even one the [`PooledClient`] did not see start.
    Verified,
}

/// Creates and recycles async clients for a deadpool [`Pool`].
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use pqlib::pool::deadpool::{Manager, Pool};
///
/// let mut config = pqlib::Config::new();
/// config.host("/var/run/postgresql").dbname("app");
/// let pool = Pool::builder(Manager::new(config)).max_size(8).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Manager {
    config: Config,
    recycling_method: RecyclingMethod,
}

impl Manager {
    /// A manager that connects with `config`, recycling with [`RecyclingMethod::Fast`].
    ///
    /// ```no_run
    /// # fn run() -> Result<(), pqlib::Error> {
    /// let manager = pqlib::pool::deadpool::Manager::new("postgresql://app@db/app".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn new(config: Config) -> Manager {
        Manager {
            config,
            recycling_method: RecyclingMethod::Fast,
        }
    }

    /// Sets how clients are recycled.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), pqlib::Error> {
    /// use pqlib::pool::deadpool::{Manager, RecyclingMethod};
    ///
    /// let manager = Manager::new("dbname=app".parse()?).recycling_method(RecyclingMethod::Verified);
    /// # Ok(()) }
    /// ```
    pub fn recycling_method(mut self, method: RecyclingMethod) -> Manager {
        self.recycling_method = method;
        self
    }

    /// The connection parameters.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), pqlib::Error> {
    /// let manager = pqlib::pool::deadpool::Manager::new("dbname=app".parse()?);
    /// assert_eq!(manager.config().get("dbname"), Some("app"));
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl managed::Manager for Manager {
    type Type = PooledClient;
    type Error = Error;

    /// Connects and spawns the connection task on the current runtime.
    async fn create(&self) -> Result<PooledClient> {
        let (client, connection) = connect(self.config.clone()).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::warn!(target: "pqlib::pool", "a pooled connection ended: {e}");
            }
        });
        Ok(PooledClient {
            client,
            driver,
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Drops a broken client; ends a transaction it may have left open; with
    /// [`RecyclingMethod::Verified`], also checks that the server answers.
    async fn recycle(
        &self,
        client: &mut PooledClient,
        _: &Metrics,
    ) -> managed::RecycleResult<Error> {
        if client.is_broken() {
            // Wait (briefly) for the connection task to finish, so that its socket is out of
            // the reactor before the pool connects anew: libpq closes a lost connection's
            // socket at once, and a new socket may be given the same descriptor number,
            // which the old registration must not be removed from under.
            let _ = tokio::time::timeout(DRIVER_EXIT_WAIT, &mut client.driver).await;
            return Err(RecycleError::message("the connection is closed"));
        }
        let dirty = *client.dirty.get_mut();
        if dirty || self.recycling_method == RecyclingMethod::Verified {
            client.end_transaction().await?;
        }
        Ok(())
    }
}

/// Connects without blocking the runtime. deadpool needs the future to be `Send`, which the
/// async connect is (tests/async_client.rs `the_connect_future_is_send`).
async fn connect(config: Config) -> Result<(Client, crate::tokio::Connection)> {
    crate::tokio::connect_config(&config).await
}

/// An async client owned by a [`Pool`]: what an [`Object`] dereferences to.
///
/// Query methods are those of [`Client`] (through `Deref`); the ones defined here note SQL
/// that could leave a transaction open, so that recycling knows when to check (see the
/// [module documentation](self)). Transactions come from [`PooledClient::transaction`].
///
/// ```no_run
/// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let client = pool.get().await?;
/// let n: i64 = client.query_one("SELECT $1::int8 + 1", &[&1i64]).await?.get(0);
/// let token = client.cancel_token(); // any `Client` method, through `Deref`
/// # Ok(()) }
/// ```
pub struct PooledClient {
    client: Client,
    /// The connection task: once it has finished, the connection is gone.
    driver: JoinHandle<()>,
    /// Whether a transaction block may be open (see the module documentation).
    dirty: AtomicBool,
    /// Whether a statement sent through this wrapper found the connection closed.
    closed: AtomicBool,
}

impl PooledClient {
    /// Whether the connection is unusable: its task has ended, the client is closed, or a
    /// statement sent through this wrapper found the connection closed. Such a client is
    /// never handed out again once returned.
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// assert!(!client.is_broken());
    /// # Ok(()) }
    /// ```
    pub fn is_broken(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.driver.is_finished() || self.client.is_closed()
    }

    /// The client itself. Statements sent through it (or through a clone of it) are not
    /// seen by the pool: a transaction opened there and left open is ended on return only
    /// with [`RecyclingMethod::Verified`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// async fn count(client: &pqlib::tokio::Client) -> Result<i64, pqlib::Error> {
    ///     Ok(client.query_one("SELECT count(*) FROM t", &[]).await?.get(0))
    /// }
    /// let client = pool.get().await?;
    /// let n = count(client.client()).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts a transaction; see [`Client::transaction`]. Dropped without
    /// [`commit`](Transaction::commit), it rolls back; if it never finishes (leaked, or its
    /// `commit` future dropped half way), the pool rolls it back before reuse.
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut client = pool.get().await?;
    /// let tx = client.transaction().await?;
    /// tx.execute("DELETE FROM sessions WHERE expires < now()", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "BEGIN")]
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        let PooledClient { client, dirty, .. } = self;
        dirty.store(true, Ordering::Relaxed);
        let inner = client.transaction().await?;
        Ok(Transaction {
            inner: Some(inner),
            dirty,
        })
    }

    /// Runs statements with the simple query protocol; see [`Client::batch_execute`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// client.batch_execute("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1)").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQuery")]
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.watch(sql);
        self.note(self.client.batch_execute(sql).await)
    }

    /// Runs SQL text with the simple query protocol and returns its rows and completions;
    /// see [`Client::simple_query`]. Text that may open a transaction is noted, as for
    /// [`batch_execute`](PooledClient::batch_execute).
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// let messages = client.simple_query("SELECT 1; SELECT 2").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQuery")]
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<crate::SimpleQueryMessage>> {
        self.watch(sql);
        self.note(self.client.simple_query(sql).await)
    }

    /// Runs a statement and returns the number of rows it affected; see
    /// [`Client::execute`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// let n = client.execute("UPDATE t SET x = x + 1 WHERE x > $1", &[&0i32]).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn execute<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64>
    where
        T: ?Sized + ToStatement,
    {
        self.watch_statement(statement);
        self.note(self.client.execute(statement, params).await)
    }

    /// Runs a statement and returns its rows; see [`Client::query`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// let rows = client.query("SELECT generate_series(1, $1)", &[&3i32]).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Rows>
    where
        T: ?Sized + ToStatement,
    {
        self.watch_statement(statement);
        self.note(self.client.query(statement, params).await)
    }

    /// Runs a statement expected to return exactly one row; see [`Client::query_one`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<OwnedRow>
    where
        T: ?Sized + ToStatement,
    {
        self.watch_statement(statement);
        self.note(self.client.query_one(statement, params).await)
    }

    /// Runs a statement expected to return at most one row; see [`Client::query_opt`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = pool.get().await?;
    /// let row = client.query_opt("SELECT x FROM t WHERE x = $1", &[&5i32]).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<OwnedRow>>
    where
        T: ?Sized + ToStatement,
    {
        self.watch_statement(statement);
        self.note(self.client.query_opt(statement, params).await)
    }

    /// Runs a statement with explicitly typed parameters, without preparing; see
    /// [`Client::query_typed`].
    ///
    /// ```no_run
    /// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
    /// use pqlib::types::Type;
    ///
    /// let client = pool.get().await?;
    /// let rows = client.query_typed("SELECT $1 || '!'", &[(&"hi", Type::TEXT)]).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQueryParams")]
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Rows> {
        self.watch(sql);
        self.note(self.client.query_typed(sql, params).await)
    }

    /// Notes a closed connection, so that it is dropped when returned even if the connection
    /// task has not finished yet.
    fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.is_closed() {
                self.closed.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    fn watch_statement<T: ?Sized + ToStatement>(&self, statement: &T) {
        match statement.__statement_ref() {
            StatementRef::Sql(sql) => self.watch(sql),
            StatementRef::Prepared(statement) => self.watch(statement.sql()),
        }
    }

    /// Notes SQL that may leave a transaction block open. Called before anything is sent,
    /// so that a future dropped half way still counts.
    fn watch(&self, sql: &str) {
        if may_open_transaction(sql) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Asks the server whether a transaction block is open and rolls it back if so.
    async fn end_transaction(&mut self) -> Result<()> {
        let client = &self.client;
        let (set, get) = join(
            client.query_typed(
                "SELECT pg_catalog.set_config('pqlib.pool_probe', 'in transaction', true)",
                &[],
            ),
            client.query_typed(
                "SELECT pg_catalog.current_setting('pqlib.pool_probe', true)",
                &[],
            ),
        )
        .await;
        let open = match (set, get) {
            (Ok(_), Ok(rows)) => {
                let value: Option<String> = rows.get(0).and_then(|row| row.get(0));
                value.as_deref() == Some("in transaction")
            }
            (Err(e), _) | (_, Err(e)) => {
                if e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION) {
                    return Err(e);
                }
                true
            }
        };
        if open {
            client.batch_execute("ROLLBACK").await?;
        }
        *self.dirty.get_mut() = false;
        Ok(())
    }
}

/// Whether `sql` has one of the words that can open a transaction block that outlives the
/// statement: `BEGIN`, `START` (`START TRANSACTION`) or `CHAIN` (`COMMIT AND CHAIN`), as a
/// whole word in any case. Words are runs of the characters PostgreSQL allows in identifiers,
/// so a keyword cannot hide inside a longer word; text in quotes or comments counts too,
/// which can only cause a needless check.
fn may_open_transaction(sql: &str) -> bool {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .any(|word| {
            ["begin", "start", "chain"]
                .iter()
                .any(|keyword| word.eq_ignore_ascii_case(keyword))
        })
}

/// Polls two futures together (both start on the first poll) until both are done.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut a_out, mut b_out) = (None, None);
    std::future::poll_fn(move |cx| {
        if a_out.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                a_out = Some(out);
            }
        }
        if b_out.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                b_out = Some(out);
            }
        }
        match (a_out.take(), b_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (a_out, b_out) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

impl Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledClient")
            .field("broken", &self.is_broken())
            .field("may_be_in_transaction", &self.dirty.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A transaction on a [`PooledClient`]: a [`crate::tokio::Transaction`] (query methods come
/// through `Deref`) that also tells the pool when it is over.
///
/// ```no_run
/// # async fn run(pool: pqlib::pool::deadpool::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = pool.get().await?;
/// let mut tx = client.transaction().await?;
/// tx.execute("INSERT INTO t VALUES ($1)", &[&1i32]).await?;
/// let savepoint = tx.transaction().await?;
/// savepoint.execute("INSERT INTO t VALUES ($1)", &[&2i32]).await?;
/// savepoint.rollback().await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct Transaction<'a> {
    /// `None` once committed or rolled back.
    inner: Option<crate::tokio::Transaction<'a>>,
    dirty: &'a AtomicBool,
}

impl<'a> Transaction<'a> {
    /// Commits; see [`crate::tokio::Transaction::commit`].
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::pool::deadpool::Object) -> Result<(), pqlib::Error> {
    /// let tx = client.transaction().await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "COMMIT")]
    pub async fn commit(mut self) -> Result<()> {
        let inner = self.inner.take().expect("an unfinished transaction");
        inner.commit().await?;
        self.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Rolls back; see [`crate::tokio::Transaction::rollback`].
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::pool::deadpool::Object) -> Result<(), pqlib::Error> {
    /// let tx = client.transaction().await?;
    /// tx.rollback().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "ROLLBACK")]
    pub async fn rollback(mut self) -> Result<()> {
        let inner = self.inner.take().expect("an unfinished transaction");
        inner.rollback().await?;
        self.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a nested transaction: a savepoint; see
    /// [`crate::tokio::Transaction::transaction`].
    ///
    /// ```no_run
    /// # async fn run(mut client: pqlib::pool::deadpool::Object) -> Result<(), pqlib::Error> {
    /// let mut tx = client.transaction().await?;
    /// let savepoint = tx.transaction().await?;
    /// savepoint.commit().await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "SAVEPOINT")]
    pub async fn transaction(&mut self) -> Result<crate::tokio::Transaction<'_>> {
        self.inner
            .as_mut()
            .expect("an unfinished transaction")
            .transaction()
            .await
    }
}

impl<'a> Deref for Transaction<'a> {
    type Target = crate::tokio::Transaction<'a>;

    fn deref(&self) -> &crate::tokio::Transaction<'a> {
        self.inner.as_ref().expect("an unfinished transaction")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // The inner transaction, dropped right after this, queues its ROLLBACK ahead of
            // anything the client sends later: the session is idle for the next user.
            self.dirty.store(false, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::may_open_transaction;

    #[test]
    fn transaction_words_are_found_as_whole_words() {
        for sql in [
            "BEGIN",
            "begin isolation level serializable",
            "START TRANSACTION",
            "SELECT 1; Begin; SELECT 2",
            "COMMIT AND CHAIN",
            "rollback and chain",
            "/* x */BEGIN",
            "SELECT 1;begin",
            "DO $$ BEGIN RAISE NOTICE 'x'; END $$",
        ] {
            assert!(may_open_transaction(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "COMMIT",
            "ROLLBACK",
            "SELECT start_date, begins, restart FROM t",
            "SELECT starts_with('a', 'b')",
            "INSERT INTO t VALUES ($1)",
        ] {
            assert!(!may_open_transaction(sql), "{sql}");
        }
    }
}
