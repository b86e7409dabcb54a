//! A throwaway PgBouncer in front of a [`TempCluster`], for tests and examples only.
//!
//! [`TempPgBouncer::builder`] takes the cluster to pool; [`start`](TempPgBouncerBuilder::start)
//! writes a `pgbouncer.ini` and an auth file into a fresh directory under
//! [`std::env::temp_dir`], runs `pgbouncer` on a unix socket in that directory and on a free
//! `127.0.0.1` port, and waits until it accepts connections. Dropping the [`TempPgBouncer`]
//! stops it and deletes the directory. Nothing outside that directory is read or written: no
//! `/etc/pgbouncer`, no system service.
//!
//! It exists to test how clients behave behind a connection pooler (prepared statements
//! under transaction pooling, transactions under statement pooling, a pooler that dies): its
//! settings suit that and nothing else.
//!
//! ```no_run
//! use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
//!
//! let cluster = TempCluster::start()?;
//! let bouncer = TempPgBouncer::builder(&cluster)
//!     .pool_mode(PoolMode::Transaction)
//!     .pool_size(2)
//!     .start()?;
//! println!("psql \"{}\"", bouncer.conninfo());
//! # Ok::<(), pqlib::tempdb::TempClusterError>(())
//! ```
//!
//! # Configuration
//!
//! - Every database name maps to the cluster (`* = host=<cluster socket dir> port=<port>`):
//!   PgBouncer opens a pool per database and user on first use. The admin console is the
//!   database `pgbouncer` ([`admin_conninfo`](TempPgBouncer::admin_conninfo)); it speaks only
//!   the simple query protocol (`Connection::simple_query("SHOW POOLS")`).
//! - Authentication: `auth_type = trust`. PgBouncer still looks every user up in its
//!   `auth_file`, which lists the cluster's superuser `postgres` (with no password: the cluster
//!   trusts its socket); other roles are looked up in the cluster itself (`auth_user =
//!   postgres`, PgBouncer's default `auth_query` on `pg_shadow`), so any role that exists there
//!   can log in too. PgBouncer logs into the cluster as the client's user, without a password.
//! - `pool_mode` (transaction by default), `default_pool_size` (4), `max_client_conn` (200);
//!   [`setting`](TempPgBouncerBuilder::setting) adds any other `[pgbouncer]` line.
//! - `ignore_startup_parameters` is empty: what libpq and pqlib send at startup (`user`,
//!   `database`, `client_encoding`, and `application_name` if set) is all understood by
//!   PgBouncer. A connection string that sets `options`, or libpq's `PGOPTIONS`, is refused
//!   with `unsupported startup parameter: options`; add
//!   `setting("ignore_startup_parameters = options")` to drop it silently (the server then
//!   never sees those settings).
//! - Its log (stdout and stderr, appended across [`restart`](TempPgBouncer::restart)s) is
//!   [`log_file`](TempPgBouncer::log_file).
//!
//! # Finding `pgbouncer`
//!
//! [`TempPgBouncerBuilder::binary`], else the `PGBOUNCER` environment variable (either one is
//! final), else `pgbouncer` in `PATH`, else `/usr/sbin/pgbouncer` (Debian and Ubuntu install it
//! there, outside an ordinary user's `PATH`). Debian/Ubuntu: `apt-get install pgbouncer`.
//!
//! # Running as root
//!
//! PgBouncer refuses to run as root. As for [`TempCluster`], when the effective user is root it
//! runs as the `postgres` user if it exists, else as `nobody`, and its directory is given to
//! that user.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{
    DEFAULT_START_TIMEOUT, HOST, Owner, START_ATTEMPTS, SUPERUSER, TempCluster, TempClusterError,
    TempClusterErrorKind, conninfo_value, create_root_dir, free_port, last_lines, ping_ok, reap,
    remove_root_once, send_signal, server_user, wait_timeout,
};

/// The admin console's database name.
const ADMIN_DATABASE: &str = "pgbouncer";
/// Where Debian and Ubuntu install the binary.
const SYSTEM_BINARY: &str = "/usr/sbin/pgbouncer";
/// How long an orderly stop (SIGTERM) may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed pgbouncer may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_POOL_SIZE: u32 = 4;
const DEFAULT_MAX_CLIENT_CONN: u32 = 200;
/// What PgBouncer logs (`strerror(EADDRINUSE)`) when another process has its port.
const PORT_TAKEN: &str = "Address already in use";

const PACKAGES: &str = "Debian/Ubuntu: `apt-get install pgbouncer`; Fedora: `dnf install \
     pgbouncer`; macOS: `brew install pgbouncer`";

/// How PgBouncer hands server connections to clients (`pool_mode`).
///
/// ```no_run
/// use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
///
/// let cluster = TempCluster::start()?;
/// let bouncer = TempPgBouncer::builder(&cluster).pool_mode(PoolMode::Session).start()?;
/// assert_eq!(PoolMode::Session.as_str(), "session");
/// # Ok::<(), pqlib::tempdb::TempClusterError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// A client keeps its server connection until it disconnects.
    Session,
    /// A client holds a server connection for one transaction only: named prepared
    /// statements and other session state do not follow it to the next one.
    Transaction,
    /// A client holds a server connection for one statement only; a transaction of more than
    /// one statement is refused (PgBouncer closes the client's connection).
    Statement,
}

impl PoolMode {
    /// The name PgBouncer uses in `pgbouncer.ini` and in `SHOW POOLS`.
    ///
    /// ```
    /// use pqlib::tempdb::PoolMode;
    /// assert_eq!(PoolMode::Transaction.as_str(), "transaction");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Settings for a [`TempPgBouncer`]; [`TempPgBouncer::builder`] makes one.
///
/// ```no_run
/// use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
///
/// let cluster = TempCluster::start()?;
/// let bouncer = TempPgBouncer::builder(&cluster)
///     .pool_mode(PoolMode::Statement)
///     .pool_size(8)
///     .max_client_conn(100)
///     .setting("server_idle_timeout = 5")
///     .start()?;
/// # Ok::<(), pqlib::tempdb::TempClusterError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TempPgBouncerBuilder {
    /// The cluster's unix socket directory and port.
    cluster_socket_dir: String,
    cluster_port: u16,
    pool_mode: PoolMode,
    pool_size: u32,
    max_client_conn: u32,
    settings: Vec<String>,
    binary: Option<PathBuf>,
    start_timeout: Duration,
}

impl TempPgBouncerBuilder {
    /// The pool mode; [`PoolMode::Transaction`] by default.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{PoolMode, TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster).pool_mode(PoolMode::Session).start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn pool_mode(&mut self, mode: PoolMode) -> &mut Self {
        self.pool_mode = mode;
        self
    }

    /// How many server connections each database and user pair gets (`default_pool_size`);
    /// 4 by default.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster).pool_size(1).start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn pool_size(&mut self, n: u32) -> &mut Self {
        self.pool_size = n;
        self
    }

    /// How many client connections PgBouncer accepts (`max_client_conn`); 200 by default.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster).max_client_conn(1000).start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn max_client_conn(&mut self, n: u32) -> &mut Self {
        self.max_client_conn = n;
        self
    }

    /// Appends a line to the `[pgbouncer]` section of `pgbouncer.ini`, after the settings this
    /// module makes, so that it overrides them (PgBouncer keeps the last value of a setting).
    ///
    /// `listen_addr`, `listen_port` and `unix_socket_dir` are chosen by [`start`](Self::start);
    /// changing them here breaks [`conninfo`](TempPgBouncer::conninfo) and the wait for the
    /// start.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster)
    ///     .setting("ignore_startup_parameters = options")
    ///     .setting("verbose = 1")
    ///     .start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn setting(&mut self, line: &str) -> &mut Self {
        self.settings.push(line.to_owned());
        self
    }

    /// Runs this `pgbouncer` binary instead of searching for one (see
    /// [the module documentation](self)). Takes precedence over `PGBOUNCER`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster)
    ///     .binary("/opt/pgbouncer/bin/pgbouncer")
    ///     .start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn binary(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.binary = Some(path.into());
        self
    }

    /// How long [`start`](Self::start) and [`restart`](TempPgBouncer::restart) wait for
    /// PgBouncer to accept connections; 30 seconds by default.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # use std::time::Duration;
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster)
    ///     .start_timeout(Duration::from_secs(60))
    ///     .start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn start_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.start_timeout = timeout;
        self
    }

    /// Writes the configuration, starts `pgbouncer` and returns once it accepts connections
    /// on its unix socket and its TCP port.
    ///
    /// Errors: [`BinariesNotFound`](TempClusterErrorKind::BinariesNotFound) when there is no
    /// `pgbouncer` (the message says how to install it),
    /// [`Start`](TempClusterErrorKind::Start) when it exits or does not answer in time (the
    /// message names the binary and quotes its log). On failure nothing is left behind.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempClusterErrorKind, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// match TempPgBouncer::builder(&cluster).start() {
    ///     Ok(bouncer) => println!("{}", bouncer.conninfo()),
    ///     Err(e) if e.kind() == TempClusterErrorKind::BinariesNotFound => eprintln!("{e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    #[doc(alias = "PQping")]
    pub fn start(&self) -> Result<TempPgBouncer, TempClusterError> {
        self.start_with_ports(&mut free_port)
    }

    /// [`start`](Self::start), taking each attempt's TCP port from `next_port`.
    fn start_with_ports(
        &self,
        next_port: &mut dyn FnMut() -> io::Result<u16>,
    ) -> Result<TempPgBouncer, TempClusterError> {
        let binary = find_binary(self.binary.as_deref(), &BinaryEnv::from_process())?;
        let owner = server_user()?;
        let version = read_version(&binary, owner)?;
        let root = create_root_dir(owner)?;
        let socket_dir = match root.to_str() {
            Some(s) => s.to_owned(),
            None => {
                let _ = fs::remove_dir(&root);
                return Err(TempClusterError::new(
                    TempClusterErrorKind::Io,
                    format!(
                        "the temporary directory {} is not UTF-8; set TMPDIR to another one",
                        root.display()
                    ),
                ));
            }
        };
        // From here on, dropping `bouncer` stops whatever was started and removes `root`.
        let mut bouncer = TempPgBouncer {
            config_file: root.join("pgbouncer.ini"),
            auth_file: root.join("userlist.txt"),
            log_file: root.join("pgbouncer.log"),
            root,
            socket_dir,
            binary,
            version,
            owner,
            start_timeout: self.start_timeout,
            port: 0,
            pid: 0,
            child: None,
            removed: false,
        };
        // The auth file lists the users PgBouncer knows without asking the cluster; with
        // `auth_type = trust` their password is never checked, so it is empty.
        bouncer.write_file(&bouncer.auth_file, &format!("\"{SUPERUSER}\" \"\"\n"))?;
        for _ in 0..START_ATTEMPTS {
            let port = next_port()
                .map_err(|e| TempClusterError::io("could not find a free TCP port", e))?;
            bouncer.write_file(&bouncer.config_file, &self.config_text(&bouncer, port))?;
            if bouncer.launch(port)? {
                return Ok(bouncer);
            }
        }
        Err(TempClusterError::new(
            TempClusterErrorKind::Start,
            format!(
                "{} could not bind a free port on {HOST} in {START_ATTEMPTS} attempts (another \
                 process took each one first){}",
                bouncer.binary.display(),
                log_tail(&bouncer.log_file, 0)
            ),
        ))
    }

    /// The text of `pgbouncer.ini` for a start on `port`.
    fn config_text(&self, bouncer: &TempPgBouncer, port: u16) -> String {
        let mut text = format!(
            "# pqlib::tempdb::TempPgBouncer: a throwaway pooler for tests.\n\
             [databases]\n\
             * = host={cluster_host} port={cluster_port}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = {HOST}\n\
             listen_port = {port}\n\
             unix_socket_dir = {socket_dir}\n\
             auth_type = trust\n\
             auth_file = {auth_file}\n\
             # Users missing from auth_file are looked up in the cluster (default auth_query).\n\
             auth_user = {SUPERUSER}\n\
             admin_users = {SUPERUSER}\n\
             stats_users = {SUPERUSER}\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = {max_client_conn}\n\
             # No ignore_startup_parameters: libpq and pqlib send user, database,\n\
             # client_encoding (pqlib: always UTF8) and application_name (if set), all of\n\
             # which PgBouncer handles itself. `options` (PGOPTIONS) would be refused.\n\
             # The log goes to stderr, which start() sends to pgbouncer.log.\n\
             syslog = 0\n",
            cluster_host = conninfo_value(&self.cluster_socket_dir),
            cluster_port = self.cluster_port,
            socket_dir = bouncer.socket_dir,
            auth_file = bouncer.auth_file.display(),
            pool_mode = self.pool_mode.as_str(),
            pool_size = self.pool_size,
            max_client_conn = self.max_client_conn,
        );
        if !self.settings.is_empty() {
            text.push_str("# TempPgBouncerBuilder::setting\n");
            for line in &self.settings {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// A running throwaway PgBouncer in front of a [`TempCluster`], in its own temporary
/// directory (see [the module documentation](self)).
///
/// Dropping it stops PgBouncer (SIGTERM: an immediate shutdown, open client connections are
/// closed; SIGKILL after 5 seconds) and removes the directory; [`stop`](Self::stop) does the
/// same and reports failures. The cluster is not touched.
///
/// ```no_run
/// use pqlib::tempdb::{TempCluster, TempPgBouncer};
///
/// let cluster = TempCluster::start()?;
/// let bouncer = TempPgBouncer::builder(&cluster).start()?;
/// let unix = bouncer.conninfo(); // host=/tmp/pqlib-... port=... user=postgres dbname=postgres
/// let tcp = bouncer.tcp_conninfo(); // host=127.0.0.1 port=... user=postgres dbname=postgres
/// let admin = bouncer.admin_conninfo(); // ... dbname=pgbouncer
/// # Ok::<(), pqlib::tempdb::TempClusterError>(())
/// ```
#[derive(Debug)]
pub struct TempPgBouncer {
    /// The temporary directory: socket, configuration, auth file and log.
    root: PathBuf,
    socket_dir: String,
    config_file: PathBuf,
    auth_file: PathBuf,
    log_file: PathBuf,
    binary: PathBuf,
    version: String,
    /// The user PgBouncer runs as, when it is not us (we are root).
    owner: Option<Owner>,
    start_timeout: Duration,
    port: u16,
    pid: u32,
    child: Option<Child>,
    removed: bool,
}

impl TempPgBouncer {
    /// A builder for a PgBouncer in front of `cluster`: pool mode transaction, pool size 4,
    /// at most 200 clients.
    ///
    /// The PgBouncer does not borrow the cluster, but needs it running: drop the PgBouncer
    /// first (declare it after the cluster).
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn builder(cluster: &TempCluster) -> TempPgBouncerBuilder {
        TempPgBouncerBuilder {
            cluster_socket_dir: cluster.socket_dir.clone(),
            cluster_port: cluster.port(),
            pool_mode: PoolMode::Transaction,
            pool_size: DEFAULT_POOL_SIZE,
            max_client_conn: DEFAULT_MAX_CLIENT_CONN,
            settings: Vec::new(),
            binary: None,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    /// A libpq connection string for the user and database `postgres` through PgBouncer's
    /// unix socket: `host=<its socket dir> port=<port> user=postgres dbname=postgres`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let conninfo = format!("{} application_name=behind-the-pooler", bouncer.conninfo());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn conninfo(&self) -> String {
        self.conninfo_for(&conninfo_value(&self.socket_dir))
    }

    /// As [`conninfo`](Self::conninfo), over TCP to `127.0.0.1`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// println!("{}", bouncer.tcp_conninfo()); // host=127.0.0.1 port=... user=postgres ...
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn tcp_conninfo(&self) -> String {
        self.conninfo_for(HOST)
    }

    /// A connection string for PgBouncer's admin console (database `pgbouncer`, user
    /// `postgres`, over the unix socket): `SHOW POOLS`, `SHOW CLIENTS`, `KILL db`,
    /// `RECONNECT`, …, with the simple query protocol only.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let mut admin = pqlib::Connection::connect(&bouncer.admin_conninfo())?;
    /// for message in admin.simple_query("SHOW POOLS")? {
    ///     if let pqlib::SimpleQueryMessage::Row(row) = message {
    ///         println!("{:?} {:?}", row.get("database"), row.get("pool_mode"));
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn admin_conninfo(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={ADMIN_DATABASE}",
            conninfo_value(&self.socket_dir),
            self.port
        )
    }

    /// The port, for TCP and in the unix socket's name (`.s.PGSQL.<port>`). It stays the
    /// same across [`restart`](Self::restart).
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", bouncer.port());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding PgBouncer's unix socket (and its files); libpq's `host` for
    /// socket connections.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let socket = bouncer.socket_dir().join(format!(".s.PGSQL.{}", bouncer.port()));
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn socket_dir(&self) -> &Path {
        Path::new(&self.socket_dir)
    }

    /// PgBouncer's log (its stdout and stderr), appended to across restarts.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let log = std::fs::read_to_string(bouncer.log_file())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The process id of the running `pgbouncer` (a new one after [`restart`](Self::restart)).
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// println!("pgbouncer pid {}", bouncer.pid());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// PgBouncer's version as `pgbouncer --version` prints it, e.g. `"1.18.0"`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// # let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let minor: u32 = bouncer.version().split('.').nth(1).unwrap().parse().unwrap();
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Kills PgBouncer hard (SIGKILL: every client and server connection is cut without a
    /// word) and starts it again on the same port and socket with the same configuration,
    /// returning once it accepts connections. Pools start empty.
    ///
    /// Fails with [`Start`](TempClusterErrorKind::Start) if it does not come back, for
    /// instance because another process took the port meanwhile.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let mut bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// let mut conn = pqlib::Connection::connect(&bouncer.conninfo())?;
    /// bouncer.restart()?;
    /// assert!(conn.batch_execute("SELECT 1").is_err()); // that connection is gone
    /// let mut conn = pqlib::Connection::connect(&bouncer.conninfo())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "PQping")]
    pub fn restart(&mut self) -> Result<(), TempClusterError> {
        if let Some(mut child) = self.child.take() {
            let pid = self.pid;
            let error =
                |e| TempClusterError::io(format!("killing pgbouncer (pid {pid}) to restart it"), e);
            // An already exited (unreaped) child is no error: kill() then still succeeds.
            child.kill().map_err(error)?;
            if !wait_timeout(&mut child, KILL_TIMEOUT).map_err(error)? {
                return Err(TempClusterError::new(
                    TempClusterErrorKind::Stop,
                    format!(
                        "pgbouncer (pid {pid}) did not exit within {KILL_TIMEOUT:?} of SIGKILL"
                    ),
                ));
            }
        }
        let port = self.port;
        if self.launch(port)? {
            return Ok(());
        }
        Err(TempClusterError::new(
            TempClusterErrorKind::Start,
            format!(
                "{} could not listen on port {port} again: another process took it{}",
                self.binary.display(),
                log_tail(&self.log_file, 0)
            ),
        ))
    }

    /// Stops PgBouncer and removes its directory, as dropping does, but reports what went
    /// wrong.
    ///
    /// PgBouncer gets SIGTERM (an immediate shutdown in PgBouncer 1.18) and 5 seconds, then
    /// SIGKILL, which is reported as an error; the directory is removed either way. A
    /// PgBouncer that had already exited is not an error.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempPgBouncer};
    /// # let cluster = TempCluster::start()?;
    /// let bouncer = TempPgBouncer::builder(&cluster).start()?;
    /// bouncer.stop()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn stop(mut self) -> Result<(), TempClusterError> {
        self.shutdown()
    }

    fn conninfo_for(&self, host: &str) -> String {
        format!(
            "host={host} port={} user={SUPERUSER} dbname={SUPERUSER}",
            self.port
        )
    }

    /// Writes a file PgBouncer reads, owned by the user it runs as.
    fn write_file(&self, path: &Path, text: &str) -> Result<(), TempClusterError> {
        let error = |e| TempClusterError::io(format!("writing {}", path.display()), e);
        fs::write(path, text).map_err(error)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(error)?;
        if let Some(owner) = self.owner {
            std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid)).map_err(error)?;
        }
        Ok(())
    }

    /// Starts `pgbouncer` on `port` (written in the configuration) and waits until it
    /// accepts connections. `Ok(false)` means the port was taken meanwhile and it exited:
    /// try another one.
    fn launch(&mut self, port: u16) -> Result<bool, TempClusterError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| TempClusterError::io(format!("opening {}", self.log_file.display()), e))?;
        // Only what this attempt writes tells why it failed.
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| TempClusterError::io("duplicating the log file descriptor", e))?;
        let mut command = Command::new(&self.binary);
        command.arg(&self.config_file).stdout(log).stderr(log_err);
        prepare(&mut command, &self.root, self.owner);
        let child = command.spawn().map_err(|e| {
            TempClusterError::io(
                format!(
                    "could not run {}{}",
                    self.binary.display(),
                    owner_note(self.owner)
                ),
                e,
            )
        })?;
        self.port = port;
        self.pid = child.id();
        self.child = Some(child);

        let pings = [self.admin_conninfo(), self.admin_conninfo_tcp()]
            .map(|conninfo| CString::new(format!("{conninfo} connect_timeout=5")));
        let [Ok(unix), Ok(tcp)] = pings else {
            return Err(TempClusterError::new(
                TempClusterErrorKind::Io,
                format!("the directory {} holds a NUL byte", self.socket_dir),
            ));
        };
        let timeout = self.start_timeout;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        let log_file = self.log_file.clone();
        let port_taken = || read_from(&log_file, log_start).contains(PORT_TAKEN);
        loop {
            // PgBouncer opens its TCP listener, then its unix socket. A failed bind is only a
            // warning to it, and the port's owner may accept the TCP ping and leave it
            // hanging: once the socket answers, the log says whether the port was taken.
            if ping_ok(&unix) && !port_taken() && ping_ok(&tcp) {
                return Ok(true);
            }
            if let Some(status) = self.try_wait()? {
                if port_taken() {
                    return Ok(false);
                }
                return Err(self.start_error(format!("exited ({status})"), log_start));
            }
            if port_taken() {
                // Whether PgBouncer gives up or goes on with the listeners it has, this start
                // is no good: end it and try another port.
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = wait_timeout(&mut child, KILL_TIMEOUT);
                }
                return Ok(false);
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(
                    format!("did not accept connections within {timeout:?}"),
                    log_start,
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn start_error(&self, what: String, log_start: u64) -> TempClusterError {
        TempClusterError::new(
            TempClusterErrorKind::Start,
            format!(
                "{} (PgBouncer {}, configuration {}) {what} before accepting connections{}{}",
                self.binary.display(),
                self.version,
                self.config_file.display(),
                owner_note(self.owner),
                log_tail(&self.log_file, log_start)
            ),
        )
    }

    fn admin_conninfo_tcp(&self) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname={ADMIN_DATABASE}",
            self.port
        )
    }

    /// Reaps PgBouncer if it has exited.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, TempClusterError> {
        reap(&mut self.child, "pgbouncer")
    }

    fn shutdown(&mut self) -> Result<(), TempClusterError> {
        let stopped = match self.child.take() {
            Some(child) => stop_pgbouncer(child),
            None => Ok(()),
        };
        stopped.and(remove_root_once(&self.root, &mut self.removed))
    }
}

impl Drop for TempPgBouncer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("pqlib::tempdb: {e}");
        }
    }
}

/// SIGTERM, escalating to SIGKILL.
fn stop_pgbouncer(mut child: Child) -> Result<(), TempClusterError> {
    let pid = child.id();
    let error = |message: &str, source: Option<io::Error>| TempClusterError {
        kind: TempClusterErrorKind::Stop,
        message: format!("pgbouncer (pid {pid}) {message}"),
        source,
    };
    let io_error = |e| error("could not be signalled or waited for", Some(e));
    if wait_timeout(&mut child, Duration::ZERO).map_err(io_error)? {
        return Ok(()); // exited by itself, or killed by a test
    }
    send_signal(&child, libc::SIGTERM).map_err(io_error)?;
    if wait_timeout(&mut child, STOP_TIMEOUT).map_err(io_error)? {
        return Ok(());
    }
    let killed = child.kill().and_then(|()| child.wait());
    Err(error(
        &format!("ignored SIGTERM for {STOP_TIMEOUT:?}; killed it"),
        killed.err(),
    ))
}

/// The setup every `pgbouncer` run shares.
fn prepare(command: &mut Command, dir: &Path, owner: Option<Owner>) {
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        // English messages: a taken port is recognised by its log text.
        .env("LC_ALL", "C");
    if let Some(owner) = owner {
        // As for postgres (see TempCluster::prepare): no supplementary groups of root's.
        command.uid(owner.uid).gid(owner.gid);
    }
}

fn owner_note(owner: Option<Owner>) -> String {
    match owner {
        Some(owner) => format!(" [run as user `{}` because we are root]", owner.name),
        None => String::new(),
    }
}

/// Runs `pgbouncer --version` and returns the version number from its first line
/// (`PgBouncer 1.18.0`).
fn read_version(binary: &Path, owner: Option<Owner>) -> Result<String, TempClusterError> {
    let mut command = Command::new(binary);
    command.arg("--version");
    prepare(&mut command, Path::new("/"), owner);
    let output = command.output().map_err(|e| {
        TempClusterError::io(
            format!(
                "could not run {} --version{}",
                binary.display(),
                owner_note(owner)
            ),
            e,
        )
    })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    match parse_version(&text) {
        Some(version) if output.status.success() => Ok(version.to_owned()),
        _ => Err(TempClusterError::new(
            TempClusterErrorKind::Start,
            format!(
                "{} --version ({}) printed no version: {:?}",
                binary.display(),
                output.status,
                last_lines(&text)
            ),
        )),
    }
}

/// The first word of the first line that starts with a digit.
fn parse_version(text: &str) -> Option<&str> {
    text.lines()
        .next()?
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
}

/// The process environment the binary search reads (tests pass other values).
#[derive(Debug, Clone)]
struct BinaryEnv {
    pgbouncer: Option<OsString>,
    path: Option<OsString>,
    system: PathBuf,
}

impl BinaryEnv {
    fn from_process() -> Self {
        BinaryEnv {
            pgbouncer: std::env::var_os("PGBOUNCER").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            system: PathBuf::from(SYSTEM_BINARY),
        }
    }
}

fn find_binary(chosen: Option<&Path>, env: &BinaryEnv) -> Result<PathBuf, TempClusterError> {
    let named = chosen
        .map(|path| (path, "TempPgBouncerBuilder::binary"))
        .or_else(|| env.pgbouncer.as_ref().map(|p| (Path::new(p), "PGBOUNCER")));
    if let Some((path, source)) = named {
        if is_executable(path) {
            return Ok(path.to_owned());
        }
        return Err(TempClusterError::new(
            TempClusterErrorKind::BinariesNotFound,
            format!(
                "pgbouncer not found at {} (from {source}): no executable file there; point \
                 {source} at the pgbouncer binary, or install PgBouncer ({PACKAGES}) and unset it",
                path.display()
            ),
        ));
    }
    let path = env.path.as_deref().unwrap_or_default();
    if let Some(found) = std::env::split_paths(path)
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| is_executable(candidate))
    {
        return Ok(found);
    }
    if is_executable(&env.system) {
        return Ok(env.system.clone());
    }
    Err(TempClusterError::new(
        TempClusterErrorKind::BinariesNotFound,
        format!(
            "pgbouncer not found; searched:\n  PGBOUNCER: not set\n  PATH: {}\n  {}: not \
             there\nInstall PgBouncer ({PACKAGES}) or set PGBOUNCER to the binary",
            path.to_string_lossy(),
            env.system.display()
        ),
    ))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the log holds from byte `offset` on (the end of it, at most 64 KiB).
fn read_from(path: &Path, offset: u64) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut text = Vec::new();
    let _ = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(offset.max(len.saturating_sub(MAX_BYTES))))?;
        f.read_to_end(&mut text)
    });
    String::from_utf8_lossy(&text).into_owned()
}

/// The last lines the log got from byte `offset` on, formatted to end an error message.
fn log_tail(path: &Path, offset: u64) -> String {
    let text = read_from(path, offset);
    if text.trim().is_empty() {
        return format!("\n(its log {} is empty)", path.display());
    }
    format!(
        "\n--- end of the pgbouncer log ({}) ---\n{}",
        path.display(),
        last_lines(&text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<TempPgBouncer>();
        assert_send_sync::<TempPgBouncerBuilder>();
        assert_send_sync::<PoolMode>();
    }

    #[test]
    fn version_is_the_first_number_of_the_first_line() {
        let text = "PgBouncer 1.18.0\nlibevent 2.1.12-stable\nadns: c-ares 1.18.1\n";
        assert_eq!(parse_version(text), Some("1.18.0"));
        assert_eq!(parse_version("pgbouncer version 1.7.2\n"), Some("1.7.2"));
        assert_eq!(parse_version("usage: pgbouncer\n"), None);
        assert_eq!(parse_version(""), None);
    }

    /// A scratch directory for one test, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("pqlib-unit-bouncer-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn executable(&self, rel: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "#!/bin/sh\nexit 1\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn empty_env(scratch: &Scratch) -> BinaryEnv {
        BinaryEnv {
            pgbouncer: None,
            path: Some(scratch.0.join("empty-path").into()),
            system: scratch.0.join("no-system/pgbouncer"),
        }
    }

    #[test]
    fn missing_binary_says_how_to_install_it() {
        let scratch = Scratch::new("missing");
        let err = find_binary(None, &empty_env(&scratch)).unwrap_err();
        assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound);
        let message = err.to_string();
        for needle in [
            "apt-get install pgbouncer",
            "PGBOUNCER: not set",
            "empty-path",
            "no-system/pgbouncer: not there",
        ] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }

    #[test]
    fn a_named_binary_is_final() {
        let scratch = Scratch::new("named");
        let in_path = scratch.executable("bin/pgbouncer");
        let chosen = scratch.executable("chosen/pgbouncer");
        let from_env = scratch.executable("env/pgbouncer");
        let mut env = empty_env(&scratch);
        env.path = Some(in_path.parent().unwrap().into());
        assert_eq!(find_binary(None, &env).unwrap(), in_path);

        env.pgbouncer = Some(from_env.clone().into());
        assert_eq!(find_binary(None, &env).unwrap(), from_env);
        assert_eq!(find_binary(Some(chosen.as_path()), &env).unwrap(), chosen);

        let nowhere = scratch.0.join("nowhere/pgbouncer");
        let message = find_binary(Some(nowhere.as_path()), &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("TempPgBouncerBuilder::binary"),
            "{message}"
        );
        assert!(message.contains("nowhere/pgbouncer"), "{message}");
        assert!(message.contains("apt-get install pgbouncer"), "{message}");

        env.pgbouncer = Some(nowhere.into());
        let err = find_binary(None, &env).unwrap_err();
        assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound);
        assert!(err.to_string().contains("(from PGBOUNCER)"), "{err}");
    }

    #[test]
    fn system_binary_is_the_last_resort() {
        let scratch = Scratch::new("system");
        let system = scratch.executable("sbin/pgbouncer");
        let mut env = empty_env(&scratch);
        env.system = system.clone();
        assert_eq!(find_binary(None, &env).unwrap(), system);
    }

    /// A cluster and a builder for it, or `None` (reported) where PgBouncer is not
    /// installed and `PQLIB_TEST_NO_SKIP` is unset.
    fn cluster_and_builder() -> Option<(TempCluster, TempPgBouncerBuilder)> {
        if let Err(e) = find_binary(None, &BinaryEnv::from_process()) {
            if std::env::var_os("PQLIB_TEST_NO_SKIP").is_some() {
                panic!("{e}");
            }
            eprintln!("SKIPPED: {e}");
            return None;
        }
        let cluster = TempCluster::start().unwrap_or_else(|e| panic!("{e}"));
        let builder = TempPgBouncer::builder(&cluster);
        Some((cluster, builder))
    }

    #[test]
    fn start_retries_when_the_port_is_taken() {
        let Some((_cluster, builder)) = cluster_and_builder() else {
            return;
        };
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut attempts = 0;
        let mut next_port = || {
            attempts += 1;
            if attempts == 1 {
                Ok(taken_port)
            } else {
                free_port()
            }
        };
        let bouncer = builder
            .start_with_ports(&mut next_port)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempts, 2);
        assert_ne!(bouncer.port(), taken_port);
        let log = fs::read_to_string(bouncer.log_file()).unwrap();
        assert!(log.contains("Address already in use"), "{log}");
        assert!(ping_ok(&CString::new(bouncer.tcp_conninfo()).unwrap()));
        let root = bouncer.root.clone();
        bouncer.stop().unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn start_gives_up_after_a_few_taken_ports() {
        let Some((_cluster, builder)) = cluster_and_builder() else {
            return;
        };
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut attempts = 0;
        let err = builder
            .start_with_ports(&mut || {
                attempts += 1;
                Ok(taken_port)
            })
            .unwrap_err();
        assert_eq!(attempts, START_ATTEMPTS);
        assert_eq!(err.kind(), TempClusterErrorKind::Start);
        let message = err.to_string();
        assert!(message.contains("Address already in use"), "{message}");
        assert!(message.contains("pgbouncer"), "{message}");
    }

    #[test]
    fn a_bad_setting_fails_the_start_with_the_log() {
        let Some((_cluster, mut builder)) = cluster_and_builder() else {
            return;
        };
        let err = builder.setting("pool_mode = nonsense").start().unwrap_err();
        assert_eq!(err.kind(), TempClusterErrorKind::Start);
        let message = err.to_string();
        assert!(message.contains("nonsense"), "{message}");
        assert!(message.contains("pgbouncer.ini"), "{message}");
    }
}
