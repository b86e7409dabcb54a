//! A throwaway PostgreSQL server for examples and tests.
//!
//! [`TempCluster::start`] runs `initdb` into a fresh directory under [`std::env::temp_dir`],
//! starts `postgres` on a unix socket in that directory and on a free `127.0.0.1` port, and
//! waits until it accepts connections. Dropping the [`TempCluster`] stops the server (fast
//! shutdown) and deletes the directory, also while a panicking test unwinds.
//!
//! The cluster trusts every connection (`--auth=trust`, superuser `postgres`) and trades
//! durability for speed (`fsync`, `synchronous_commit` and `full_page_writes` are off): it is
//! for tests and examples only.
//!
//! ```no_run
//! use pqlib::tempdb::TempCluster;
//!
//! let cluster = TempCluster::start()?;
//! println!("psql \"{}\"", cluster.conninfo());
//! # Ok::<(), pqlib::tempdb::TempClusterError>(())
//! ```
//!
//! # Finding the server binaries
//!
//! The first of these that holds both `initdb` and `postgres` is used:
//!
//! 1. [`TempClusterBuilder::bin_dir`], else the `PG_BINDIR` environment variable. Either one
//!    is final: if it lacks the binaries, starting fails rather than silently using another
//!    installation.
//! 2. `pg_config --bindir` (`PG_CONFIG` names another `pg_config`).
//! 3. `/usr/lib/postgresql/<version>/bin` (Debian, Ubuntu), newest version first.
//! 4. The directories in `PATH`.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the effective user is root, both run
//! as the `postgres` user if it exists, else as `nobody`, and the cluster's directory is
//! given to that user. Clients connect as before: authentication is `trust`.
//!
//! # When `Drop` cannot run
//!
//! A process killed outright (SIGKILL, `abort`) leaves the server running and the directory
//! (`$TMPDIR/pqlib-<pid>-<n>`) behind. Ctrl-C in a terminal also reaches the server, which
//! is in the same process group, so it shuts itself down; only the directory remains.
//!
//! # A connection pooler in front
//!
//! [`TempPgBouncer`] runs a throwaway PgBouncer in front of a cluster, to test clients behind
//! a pooler (see [its module](pgbouncer)).

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod pgbouncer;
pub use pgbouncer::{PoolMode, TempPgBouncer, TempPgBouncerBuilder};

/// The database superuser `initdb` creates.
const SUPERUSER: &str = "postgres";
/// The TCP address the server listens on.
const HOST: &str = "127.0.0.1";
/// How many times a start is tried when another process took the free port first.
const START_ATTEMPTS: u32 = 5;
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown (SIGINT) may take before SIGQUIT, and SIGQUIT before SIGKILL.
const FAST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Where Debian and Ubuntu install one `bin` directory per server version.
const DEBIAN_VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// The longest unix socket path every supported OS accepts (macOS: 104 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 103;

const PACKAGES: &str = "Debian/Ubuntu: `apt install postgresql`; Fedora: `dnf install \
     postgresql-server`; macOS: `brew install postgresql@18`, which is keg-only: set \
     PG_BINDIR=$(brew --prefix postgresql@18)/bin";

/// What kind of failure a [`TempClusterError`] reports.
///
/// ```no_run
/// use pqlib::tempdb::{TempCluster, TempClusterErrorKind};
///
/// match TempCluster::start() {
///     Ok(cluster) => println!("{}", cluster.conninfo()),
///     Err(e) if e.kind() == TempClusterErrorKind::BinariesNotFound => eprintln!("skipped: {e}"),
///     Err(e) => panic!("{e}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TempClusterErrorKind {
    /// `initdb` and `postgres` (for a [`TempPgBouncer`], `pgbouncer`) were not found; the
    /// message says where they were looked for and how to install them.
    BinariesNotFound,
    /// Preparing the cluster's directory or files failed.
    Io,
    /// `initdb` failed; the message includes its output.
    Initdb,
    /// `pg_basebackup` failed to copy the primary for a
    /// [`standby_of`](TempClusterBuilder::standby_of) cluster; the message includes its
    /// output.
    BaseBackup,
    /// The server (or PgBouncer) exited or did not accept connections in time; the message
    /// includes the end of its log.
    Start,
    /// The server did not stop on a fast shutdown (PgBouncer: on SIGTERM), or its directory
    /// could not be removed.
    Stop,
}

/// Why a [`TempCluster`] could not be started or stopped.
///
/// The message is meant for a person: it says what was attempted and, where there is one,
/// includes the end of `initdb`'s output or the server log.
///
/// ```no_run
/// use pqlib::tempdb::TempCluster;
///
/// if let Err(e) = TempCluster::start() {
///     eprintln!("no test server: {e}");
/// }
/// ```
#[derive(Debug)]
pub struct TempClusterError {
    kind: TempClusterErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl TempClusterError {
    fn new(kind: TempClusterErrorKind, message: impl Into<String>) -> Self {
        TempClusterError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn io(context: impl fmt::Display, source: io::Error) -> Self {
        TempClusterError {
            kind: TempClusterErrorKind::Io,
            message: context.to_string(),
            source: Some(source),
        }
    }

    /// What kind of failure this is.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::{TempCluster, TempClusterErrorKind};
    /// let err = TempCluster::builder().bin_dir("/nowhere").start().unwrap_err();
    /// assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound);
    /// ```
    pub fn kind(&self) -> TempClusterErrorKind {
        self.kind
    }
}

impl fmt::Display for TempClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TempClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Settings for a [`TempCluster`]; [`TempCluster::builder`] makes one.
///
/// ```no_run
/// use pqlib::tempdb::TempCluster;
///
/// let cluster = TempCluster::builder()
///     .config("work_mem = '64MB'")
///     .config("log_statement = 'all'")
///     .start()?;
/// # Ok::<(), pqlib::tempdb::TempClusterError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TempClusterBuilder {
    config: Vec<String>,
    hba: Vec<String>,
    tls: Option<TlsFiles>,
    bin_dir: Option<PathBuf>,
    start_timeout: Duration,
    /// For [`standby_of`](Self::standby_of): the primary's conninfo.
    primary: Option<String>,
}

#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
}

impl Default for TempClusterBuilder {
    fn default() -> Self {
        TempClusterBuilder {
            config: Vec::new(),
            hba: Vec::new(),
            tls: None,
            bin_dir: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            primary: None,
        }
    }
}

impl TempClusterBuilder {
    /// Appends a line to `postgresql.conf`, after the settings this module makes, so that it
    /// overrides them (a later setting wins).
    ///
    /// `port`, `listen_addresses` and `unix_socket_directories` are given on the server's
    /// command line, which takes precedence over the file: they cannot be changed here.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::builder().config("max_connections = 20").start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.config.push(line.into());
        self
    }

    /// Adds a line to `pg_hba.conf`.
    ///
    /// If any line is given, these lines *replace* the whole file, in the order given, so the
    /// rules in force are exactly the ones listed here. Without any, `initdb`'s file applies:
    /// `trust` for every local and loopback connection.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// // Unix socket connections are trusted; TCP ones must present a client certificate.
    /// let cluster = TempCluster::builder()
    ///     .hba("local all all trust")
    ///     .hba("hostssl all all 127.0.0.1/32 cert")
    ///     .tls("server.crt", "server.key", Some("ca.crt".as_ref()))
    ///     .start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// Enables TLS with this certificate and private key, and optionally a CA file for
    /// verifying client certificates.
    ///
    /// The files are copied into the data directory (mode 0600, owned by the user the server
    /// runs as) and `ssl`, `ssl_cert_file`, `ssl_key_file` and `ssl_ca_file` are set.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::builder().tls("server.crt", "server.key", None).start()?;
    /// let conninfo = format!("{} sslmode=require", cluster.tcp_conninfo());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn tls(
        mut self,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        ca_file: Option<&Path>,
    ) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert_file.as_ref().to_owned(),
            key: key_file.as_ref().to_owned(),
            ca: ca_file.map(Path::to_owned),
        });
        self
    }

    /// Uses the `initdb` and `postgres` in this directory instead of searching for them
    /// (see [the module documentation](self)). Takes precedence over `PG_BINDIR`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::builder().bin_dir("/usr/lib/postgresql/17/bin").start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// How long to wait for the server to accept connections; 30 seconds by default.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// # use std::time::Duration;
    /// let cluster = TempCluster::builder().start_timeout(Duration::from_secs(120)).start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Makes the cluster a streaming replica of `primary` instead of a new one: its data
    /// directory is a `pg_basebackup --write-recovery-conf` copy of the primary's (settings,
    /// `pg_hba.conf` and TLS files included), and the server starts as a hot standby that
    /// streams WAL from the primary over its unix socket. Lines given with
    /// [`config`](Self::config), [`hba`](Self::hba) and [`tls`](Self::tls) apply on top.
    ///
    /// The primary's binaries are used unless [`bin_dir`](Self::bin_dir) is given, and it
    /// must allow replication connections from its socket, as `initdb`'s `pg_hba.conf`
    /// does. [`start`](Self::start) returns once the standby accepts (read-only)
    /// connections, which says nothing about how far replication has got. Promote it with
    /// `SELECT pg_promote()`.
    ///
    /// ```no_run
    /// use pqlib::tempdb::TempCluster;
    ///
    /// let primary = TempCluster::start()?;
    /// let standby = TempCluster::builder().standby_of(&primary).start()?;
    /// let conninfo = format!(
    ///     "host={0},{0} port={1},{2} target_session_attrs=read-write",
    ///     primary.host(),
    ///     standby.port(),
    ///     primary.port()
    /// );
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn standby_of(mut self, primary: &TempCluster) -> Self {
        self.primary = Some(primary.conninfo());
        if self.bin_dir.is_none() {
            self.bin_dir = Some(primary.bin_dir().to_owned());
        }
        self
    }

    /// Creates the cluster and starts the server, returning once it accepts connections.
    ///
    /// On failure nothing is left behind: a started server is stopped and the directory is
    /// removed.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::builder().config("fsync = on").start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn start(&self) -> Result<TempCluster, TempClusterError> {
        self.start_with_ports(&mut free_port)
    }

    /// [`start`](Self::start), taking each attempt's TCP port from `next_port`.
    fn start_with_ports(
        &self,
        next_port: &mut dyn FnMut() -> io::Result<u16>,
    ) -> Result<TempCluster, TempClusterError> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => check_chosen_bin_dir(dir, "TempClusterBuilder::bin_dir")?,
            None => find_bin_dir(&SearchEnv::from_process())?,
        };
        let owner = server_user()?;
        if let Some(owner) = owner {
            check_reachable_by(&bin_dir, owner)?;
        }
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
        // From here on, dropping `cluster` stops whatever was started and removes `root`.
        let mut cluster = TempCluster {
            data_dir: root.join("data"),
            log_file: root.join("postgres.log"),
            socket_dir,
            root,
            bin_dir,
            owner,
            port: 0,
            pid: 0,
            server: None,
            removed: false,
        };
        match &self.primary {
            Some(primary) => cluster.base_backup(primary, self.start_timeout)?,
            None => cluster.initdb()?,
        }
        self.configure(&cluster)?;
        for _ in 0..START_ATTEMPTS {
            let port = next_port()
                .map_err(|e| TempClusterError::io("could not find a free TCP port", e))?;
            if cluster.launch(port, self.start_timeout)? {
                return Ok(cluster);
            }
        }
        Err(TempClusterError::new(
            TempClusterErrorKind::Start,
            format!(
                "postgres could not bind a free port on {HOST} in {START_ATTEMPTS} attempts \
                 (another process took each one first){}",
                log_tail(&cluster.log_file)
            ),
        ))
    }

    /// Writes the settings, TLS files and `pg_hba.conf` into the fresh data directory.
    fn configure(&self, cluster: &TempCluster) -> Result<(), TempClusterError> {
        let data_dir = &cluster.data_dir;
        let mut conf = String::from(
            "\n# pqlib::tempdb: a throwaway cluster, so speed over durability.\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
        );
        if let Some(tls) = &self.tls {
            // Relative paths in these settings are relative to the data directory.
            let mut files = vec![
                (&tls.cert, "server.crt", "ssl_cert_file"),
                (&tls.key, "server.key", "ssl_key_file"),
            ];
            if let Some(ca) = &tls.ca {
                files.push((ca, "ca.crt", "ssl_ca_file"));
            }
            conf.push_str("ssl = on\n");
            for (from, name, setting) in files {
                install_private_file(from, &data_dir.join(name), cluster.owner)?;
                conf.push_str(&format!("{setting} = '{name}'\n"));
            }
        }
        if !self.config.is_empty() {
            conf.push_str("# TempClusterBuilder::config\n");
            for line in &self.config {
                conf.push_str(line);
                conf.push('\n');
            }
        }
        let conf_file = data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf_file)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| TempClusterError::io(format!("writing {}", conf_file.display()), e))?;
        if !self.hba.is_empty() {
            let hba_file = data_dir.join("pg_hba.conf");
            let text: String = self.hba.iter().map(|line| format!("{line}\n")).collect();
            // Truncating the existing file keeps its owner.
            fs::write(&hba_file, text)
                .map_err(|e| TempClusterError::io(format!("writing {}", hba_file.display()), e))?;
        }
        Ok(())
    }
}

/// A running throwaway PostgreSQL server in its own temporary directory.
///
/// Dropping it stops the server with a fast shutdown (open connections are closed) and
/// removes the directory; [`stop`](Self::stop) does the same and reports failures.
///
/// ```no_run
/// use pqlib::tempdb::TempCluster;
///
/// let cluster = TempCluster::start()?;
/// let unix = cluster.conninfo(); // host=/tmp/pqlib-... port=... user=postgres dbname=postgres
/// let tcp = cluster.url(); // postgresql://postgres@127.0.0.1:.../postgres
/// cluster.stop()?;
/// # Ok::<(), pqlib::tempdb::TempClusterError>(())
/// ```
#[derive(Debug)]
pub struct TempCluster {
    /// The temporary directory: socket dir, log file and `data/`.
    root: PathBuf,
    socket_dir: String,
    data_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    /// The user the server runs as, when it is not us (we are root).
    owner: Option<Owner>,
    port: u16,
    pid: u32,
    server: Option<Child>,
    removed: bool,
}

impl TempCluster {
    /// Starts a cluster with default settings: `TempCluster::builder().start()`.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn start() -> Result<TempCluster, TempClusterError> {
        TempClusterBuilder::default().start()
    }

    /// A builder for a cluster with extra settings.
    ///
    /// ```no_run
    /// # use pqlib::tempdb::TempCluster;
    /// let cluster = TempCluster::builder().config("work_mem = '7MB'").start()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn builder() -> TempClusterBuilder {
        TempClusterBuilder::default()
    }

    /// A libpq connection string for the superuser and database `postgres` over the unix
    /// socket: `host=<socket dir> port=<port> user=postgres dbname=postgres`.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let conninfo = format!("{} application_name=test", cluster.conninfo());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={SUPERUSER}",
            conninfo_value(&self.socket_dir),
            self.port
        )
    }

    /// As [`conninfo`](Self::conninfo), over TCP to `127.0.0.1`.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// println!("{}", cluster.tcp_conninfo()); // host=127.0.0.1 port=... user=postgres ...
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn tcp_conninfo(&self) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname={SUPERUSER}",
            self.port
        )
    }

    /// A `postgresql://` URI for the superuser and database `postgres` over TCP.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// println!("{}", cluster.url()); // postgresql://postgres@127.0.0.1:.../postgres
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn url(&self) -> String {
        format!("postgresql://{SUPERUSER}@{HOST}:{}/{SUPERUSER}", self.port)
    }

    /// The TCP address the server listens on: `127.0.0.1`.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let addr = (cluster.host(), cluster.port());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn host(&self) -> &str {
        HOST
    }

    /// The port, for TCP and in the unix socket's name (`.s.PGSQL.<port>`).
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let socket = cluster.socket_dir().join(format!(".s.PGSQL.{}", cluster.port()));
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket; libpq's `host` for socket connections.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// println!("PGHOST={}", cluster.socket_dir().display());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn socket_dir(&self) -> &Path {
        Path::new(&self.socket_dir)
    }

    /// The data directory (`PGDATA`), inside [`socket_dir`](Self::socket_dir).
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let version = std::fs::read_to_string(cluster.data_dir().join("PG_VERSION"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file (its stdout and stderr).
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let log = std::fs::read_to_string(cluster.log_file())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The directory the `initdb` and `postgres` used came from.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// let pg_dump = cluster.bin_dir().join("pg_dump");
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The database superuser: `postgres`.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// assert_eq!(cluster.user(), "postgres");
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The process id of the postmaster.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// println!("postmaster pid {}", cluster.pid());
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops the server with a fast shutdown and removes the directory, as dropping does, but
    /// reports what went wrong.
    ///
    /// The server gets SIGINT (fast shutdown: open connections are closed) and 10 seconds; then
    /// SIGQUIT, then SIGKILL. Needing either of those is reported as an error, after which the
    /// directory is still removed. A server that had already exited by itself (a test killed
    /// it, say) is not an error.
    ///
    /// ```no_run
    /// # let cluster = pqlib::tempdb::TempCluster::start()?;
    /// cluster.stop()?;
    /// # Ok::<(), pqlib::tempdb::TempClusterError>(())
    /// ```
    pub fn stop(mut self) -> Result<(), TempClusterError> {
        self.shutdown()
    }

    fn initdb(&self) -> Result<(), TempClusterError> {
        let mut command = Command::new(self.bin_dir.join("initdb"));
        command
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg(format!("--username={SUPERUSER}"))
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]);
        self.prepare(&mut command);
        let output = command.output().map_err(|e| {
            TempClusterError::io(
                format!("could not run {}", self.bin_dir.join("initdb").display()),
                e,
            )
        })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(TempClusterError::new(
            TempClusterErrorKind::Initdb,
            format!(
                "initdb failed ({}){}:\n{}",
                output.status,
                self.owner_note(),
                last_lines(&text)
            ),
        ))
    }

    /// Fills the data directory with a base backup of the server at `primary` and configures
    /// it to stream from there (`standby.signal`, `primary_conninfo`).
    fn base_backup(&self, primary: &str, timeout: Duration) -> Result<(), TempClusterError> {
        let program = self.bin_dir.join("pg_basebackup");
        // Output goes to a file: a pipe nobody reads while waiting could fill and block it.
        let log_path = self.root.join("pg_basebackup.log");
        let log = File::create(&log_path)
            .map_err(|e| TempClusterError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| TempClusterError::io("duplicating the log file descriptor", e))?;
        let mut command = Command::new(&program);
        command
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg(format!("--dbname={primary}"))
            // A fast checkpoint: the default spreads it over minutes.
            .args(["--checkpoint=fast", "--write-recovery-conf", "--no-sync"])
            .stdout(log)
            .stderr(log_err);
        self.prepare(&mut command);
        let mut child = command.spawn().map_err(|e| {
            TempClusterError::io(
                format!("could not run {}{}", program.display(), self.owner_note()),
                e,
            )
        })?;
        let failure = match wait_timeout(&mut child, timeout) {
            Ok(true) => match child.wait() {
                Ok(status) if status.success() => return Ok(()),
                Ok(status) => format!("pg_basebackup failed ({status})"),
                Err(e) => return Err(TempClusterError::io("waiting for pg_basebackup", e)),
            },
            Ok(false) => {
                let _ = child.kill();
                let _ = child.wait();
                format!("pg_basebackup did not finish within {timeout:?}")
            }
            Err(e) => return Err(TempClusterError::io("waiting for pg_basebackup", e)),
        };
        let output = fs::read_to_string(&log_path).unwrap_or_default();
        Err(TempClusterError::new(
            TempClusterErrorKind::BaseBackup,
            format!(
                "{failure}{} copying {primary}:\n{}",
                self.owner_note(),
                last_lines(&output)
            ),
        ))
    }

    /// Starts `postgres` on `port` and waits until it accepts connections. `Ok(false)` means
    /// the port was taken meanwhile and the server exited: try another one.
    fn launch(&mut self, port: u16, timeout: Duration) -> Result<bool, TempClusterError> {
        let log = File::create(&self.log_file).map_err(|e| {
            TempClusterError::io(format!("creating {}", self.log_file.display()), e)
        })?;
        let log_err = log
            .try_clone()
            .map_err(|e| TempClusterError::io("duplicating the log file descriptor", e))?;
        let postgres = self.bin_dir.join("postgres");
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-c", &format!("port={port}")])
            .args(["-c", &format!("listen_addresses={HOST}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.socket_dir),
            ])
            .stdout(log)
            .stderr(log_err);
        self.prepare(&mut command);
        let child = command.spawn().map_err(|e| {
            TempClusterError::io(
                format!("could not run {}{}", postgres.display(), self.owner_note()),
                e,
            )
        })?;
        self.port = port;
        self.pid = child.id();
        self.server = Some(child);

        let ping = CString::new(format!("{} connect_timeout=5", self.conninfo()))
            .map_err(|e| TempClusterError::io("building the conninfo", io::Error::other(e)))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            if ping_ok(&ping) {
                return Ok(true);
            }
            if let Some(status) = self.try_wait_server()? {
                let tail = log_tail(&self.log_file);
                if tail.contains("could not create any TCP/IP sockets")
                    || tail.contains("Address already in use")
                {
                    return Ok(false);
                }
                return Err(TempClusterError::new(
                    TempClusterErrorKind::Start,
                    format!(
                        "postgres exited ({status}) before accepting connections{}{tail}",
                        self.owner_note()
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(TempClusterError::new(
                    TempClusterErrorKind::Start,
                    format!(
                        "postgres did not accept connections within {timeout:?}{}",
                        log_tail(&self.log_file)
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The setup `initdb` and `postgres` share.
    fn prepare(&self, command: &mut Command) {
        command
            .current_dir(&self.root)
            .stdin(Stdio::null())
            // English messages: a failed start is recognised by its log text.
            .env("LC_ALL", "C");
        if let Some(owner) = self.owner {
            // std calls setgroups(0) before setuid when uid() is set and groups() is not, so
            // the server keeps none of root's supplementary groups. (A pre_exec setgroups could
            // not do it: pre_exec closures run after the uid change.)
            command.uid(owner.uid).gid(owner.gid);
        }
    }

    fn owner_note(&self) -> String {
        match self.owner {
            Some(owner) => format!(" [run as user `{}` because we are root]", owner.name),
            None => String::new(),
        }
    }

    /// Reaps the server if it has exited.
    fn try_wait_server(&mut self) -> Result<Option<ExitStatus>, TempClusterError> {
        reap(&mut self.server, "postgres")
    }

    fn shutdown(&mut self) -> Result<(), TempClusterError> {
        let stopped = match self.server.take() {
            Some(child) => stop_server(child),
            None => Ok(()),
        };
        stopped.and(remove_root_once(&self.root, &mut self.removed))
    }
}

/// Reaps `child` (`what` names it in errors) if it has exited, leaving `None` then.
pub(super) fn reap(
    child: &mut Option<Child>,
    what: &str,
) -> Result<Option<ExitStatus>, TempClusterError> {
    let Some(running) = child else {
        return Ok(None);
    };
    match running.try_wait() {
        Ok(Some(status)) => {
            *child = None;
            Ok(Some(status))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(TempClusterError::io(format_args!("waiting for {what}"), e)),
    }
}

/// Deletes a throwaway directory the first time it is asked to (`removed` remembers).
pub(super) fn remove_root_once(root: &Path, removed: &mut bool) -> Result<(), TempClusterError> {
    if std::mem::replace(removed, true) {
        return Ok(());
    }
    match fs::remove_dir_all(root) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(TempClusterError {
            kind: TempClusterErrorKind::Stop,
            message: format!("could not remove {}", root.display()),
            source: Some(e),
        }),
        _ => Ok(()),
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("pqlib::tempdb: {e}");
        }
    }
}

/// Fast shutdown, escalating to SIGQUIT and then SIGKILL.
fn stop_server(mut child: Child) -> Result<(), TempClusterError> {
    let pid = child.id();
    let error = |message: &str, source: Option<io::Error>| TempClusterError {
        kind: TempClusterErrorKind::Stop,
        message: format!("postgres (pid {pid}) {message}"),
        source,
    };
    let io_error = |e| error("could not be signalled or waited for", Some(e));
    // Exited by itself (stopped by someone else, or crashed): nothing left to stop.
    if wait_timeout(&mut child, Duration::ZERO).map_err(io_error)? {
        return Ok(());
    }
    send_signal(&child, libc::SIGINT).map_err(io_error)?;
    if wait_timeout(&mut child, FAST_SHUTDOWN_TIMEOUT).map_err(io_error)? {
        return Ok(());
    }
    send_signal(&child, libc::SIGQUIT).map_err(io_error)?;
    if wait_timeout(&mut child, QUIT_TIMEOUT).map_err(io_error)? {
        return Err(error(
            &format!("ignored a fast shutdown for {FAST_SHUTDOWN_TIMEOUT:?}; SIGQUIT stopped it"),
            None,
        ));
    }
    let killed = child.kill().and_then(|()| child.wait());
    Err(error("ignored SIGINT and SIGQUIT; killed it", killed.err()))
}

/// Waits up to `timeout` for `child` to exit (and reaps it); `Ok(true)` if it did.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn send_signal(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions. The pid is our child's and it has not
    // been reaped, so it cannot have been reused by another process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the server answers and would accept a connection.
fn ping_ok(conninfo: &CString) -> bool {
    // PQping may open TLS (`sslmode=prefer` over TCP).
    crate::tls::install_passphrase_trampoline();
    // SAFETY: `conninfo` is a NUL-terminated string that outlives the call; PQping keeps no
    // pointer to it.
    let status = unsafe { pqlib_sys::PQping(conninfo.as_ptr()) };
    status == pqlib_sys::PGPing::PQPING_OK
}

/// Binds port 0 to let the kernel pick a free port. The listener is closed before postgres
/// binds the port, so another process may take it first: the caller retries.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Copies a TLS file where only the server user can read it, as postgres requires of keys.
fn install_private_file(
    from: &Path,
    to: &Path,
    owner: Option<Owner>,
) -> Result<(), TempClusterError> {
    let error =
        |e| TempClusterError::io(format!("copying {} to {}", from.display(), to.display()), e);
    fs::copy(from, to).map_err(error)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o600)).map_err(error)?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(to, Some(owner.uid), Some(owner.gid)).map_err(error)?;
    }
    Ok(())
}

/// A user the server runs as instead of root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    name: &'static str,
    uid: u32,
    gid: u32,
}

/// `None` unless we are root; then the unprivileged user to run the server as.
fn server_user() -> Result<Option<Owner>, TempClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    match lookup_user("postgres").or_else(|| lookup_user("nobody")) {
        Some(owner) => Ok(Some(owner)),
        None => Err(TempClusterError::new(
            TempClusterErrorKind::Start,
            "running as root, but there is neither a `postgres` nor a `nobody` user to run \
             the server as (postgres refuses to run as root)",
        )),
    }
}

fn lookup_user(name: &'static str) -> Option<Owner> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: `passwd` is a plain C struct; all zeroes (null pointers) is a valid value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size.
        // getpwnam_r (unlike getpwnam) uses no shared static storage, so threads are fine.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(Owner {
            name,
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        });
    }
}

/// Creates a new private directory under the system temp dir, owned by `owner`.
fn create_root_dir(owner: Option<Owner>) -> Result<PathBuf, TempClusterError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    let io_error =
        |e| TempClusterError::io(format!("creating a directory in {}", base.display()), e);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Short: the socket path inside must fit in sun_path.
        let dir = base.join(format!("pqlib-{}-{n}", std::process::id()));
        let socket = dir.join(".s.PGSQL.65535");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(TempClusterError::new(
                TempClusterErrorKind::Io,
                format!(
                    "the unix socket path {} would be too long (at most {MAX_SOCKET_PATH} bytes); \
                     set TMPDIR to a shorter directory",
                    socket.display()
                ),
            ));
        }
        // mkdir fails on anything already there, a symlink included: the directory is ours.
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue, // left by a dead run
            Err(e) => return Err(io_error(e)),
        }
        if let Some(owner) = owner {
            if let Err(e) = std::os::unix::fs::chown(&dir, Some(owner.uid), Some(owner.gid)) {
                let _ = fs::remove_dir(&dir);
                return Err(io_error(e));
            }
        }
        return Ok(dir);
    }
}

/// Quotes a value for a libpq `key=value` string if it needs it.
fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The last lines of the server log, formatted to end an error message.
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        f.read_to_end(&mut text)
    });
    match read {
        Ok(_) => format!(
            "\n--- end of the server log ({}) ---\n{}",
            path.display(),
            last_lines(&String::from_utf8_lossy(&text))
        ),
        Err(e) => format!("\n(could not read {}: {e})", path.display()),
    }
}

fn last_lines(text: &str) -> String {
    const LINES: usize = 30;
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// The process environment the binary search reads, gathered in one place so that tests can
/// search with other values without touching the (process-global) environment.
#[derive(Debug, Clone)]
struct SearchEnv {
    pg_bindir: Option<OsString>,
    pg_config: Option<OsString>,
    path: Option<OsString>,
    versions_dir: PathBuf,
}

impl SearchEnv {
    fn from_process() -> Self {
        SearchEnv {
            pg_bindir: std::env::var_os("PG_BINDIR").filter(|v| !v.is_empty()),
            pg_config: std::env::var_os("PG_CONFIG").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            versions_dir: PathBuf::from(DEBIAN_VERSIONS_DIR),
        }
    }
}

fn find_bin_dir(env: &SearchEnv) -> Result<PathBuf, TempClusterError> {
    if let Some(dir) = &env.pg_bindir {
        return check_chosen_bin_dir(Path::new(dir), "PG_BINDIR");
    }
    let mut searched = vec!["PG_BINDIR: not set".to_owned()];

    let pg_config = env.pg_config.as_deref().unwrap_or(OsStr::new("pg_config"));
    let label = format!("`{} --bindir`", Path::new(pg_config).display());
    match pg_config_bindir(pg_config, env.path.as_deref()) {
        Ok(dir) if has_server_binaries(&dir) => return Ok(dir),
        Ok(dir) => searched.push(format!(
            "{label}: {} has no initdb and postgres",
            dir.display()
        )),
        Err(why) => searched.push(format!("{label}: {why}")),
    }

    let versions = format!("{}/*/bin", env.versions_dir.display());
    let dirs = versioned_bin_dirs(&env.versions_dir);
    match dirs.iter().find(|dir| has_server_binaries(dir)) {
        Some(dir) => return Ok(dir.clone()),
        None if dirs.is_empty() => searched.push(format!("{versions}: none")),
        None => searched.push(format!("{versions}: none has initdb and postgres")),
    }

    let path = env.path.as_deref().unwrap_or_default();
    if let Some(dir) = std::env::split_paths(path).find(|dir| has_server_binaries(dir)) {
        return Ok(dir);
    }
    searched.push(format!("PATH: {}", path.to_string_lossy()));

    Err(TempClusterError::new(
        TempClusterErrorKind::BinariesNotFound,
        format!(
            "PostgreSQL server binaries (initdb, postgres) not found; searched:\n  {}\nInstall \
             the server ({PACKAGES}) or set PG_BINDIR to the directory that holds them",
            searched.join("\n  ")
        ),
    ))
}

/// A directory the user named explicitly: use it or fail, never fall back.
fn check_chosen_bin_dir(dir: &Path, source: &str) -> Result<PathBuf, TempClusterError> {
    if has_server_binaries(dir) {
        return Ok(dir.to_owned());
    }
    Err(TempClusterError::new(
        TempClusterErrorKind::BinariesNotFound,
        format!(
            "PostgreSQL server binaries (initdb, postgres) not found in {} (from {source}); \
             point {source} at the directory that holds them, or install the server \
             ({PACKAGES}) and unset it",
            dir.display()
        ),
    ))
}

/// As root the server runs as `owner`, who must be able to reach the binaries (and the
/// installation's `share` and `lib` beside them): a directory under root's private home, say,
/// would fail later inside `initdb` with a less helpful message.
fn check_reachable_by(bin_dir: &Path, owner: Owner) -> Result<(), TempClusterError> {
    let absolute = fs::canonicalize(bin_dir).unwrap_or_else(|_| bin_dir.to_owned());
    let may_search = |dir: &Path| {
        fs::metadata(dir).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            let mode = m.mode();
            if m.uid() == owner.uid {
                mode & 0o100 != 0
            } else if m.gid() == owner.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        })
    };
    let binaries = ["initdb", "postgres"].map(|name| absolute.join(name));
    let blocked = absolute
        .ancestors()
        .chain(binaries.iter().map(PathBuf::as_path))
        .find(|dir| !may_search(dir));
    match blocked {
        None => Ok(()),
        Some(dir) => Err(TempClusterError::new(
            TempClusterErrorKind::BinariesNotFound,
            format!(
                "running as root, the server runs as user `{}`, who cannot reach {} (no \
                 search or execute permission for it on {}); put the PostgreSQL installation \
                 where that user can read it",
                owner.name,
                bin_dir.display(),
                dir.display()
            ),
        )),
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|name| {
        fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Runs `pg_config --bindir`, looking `pg_config` up in `path` when it is a bare name.
fn pg_config_bindir(pg_config: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, String> {
    let program = if Path::new(pg_config).components().count() > 1 {
        PathBuf::from(pg_config)
    } else {
        std::env::split_paths(path.unwrap_or_default())
            .map(|dir| dir.join(pg_config))
            .find(|p| p.is_file())
            .ok_or("not found in PATH")?
    };
    let output = Command::new(&program)
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", program.display(), output.status));
    }
    let text = String::from_utf8(output.stdout).map_err(|_| "printed a non-UTF-8 path")?;
    Ok(PathBuf::from(text.trim_end_matches(['\n', '\r'])))
}

/// `<versions_dir>/<version>/bin`, newest version first (numerically: 10 is newer than 9.6).
fn versioned_bin_dirs(versions_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(versions_dir) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<TempCluster>();
        assert_send_sync::<TempClusterBuilder>();
        assert_send_sync::<TempClusterError>();
    }

    /// A scratch directory for one test, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "pqlib-unit-{}-{name}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Creates `dir/initdb` and `dir/postgres` as executable files.
        fn fake_bin_dir(&self, rel: &str) -> PathBuf {
            let dir = self.0.join(rel);
            fs::create_dir_all(&dir).unwrap();
            for name in ["initdb", "postgres"] {
                self.executable(&dir.join(name), "#!/bin/sh\nexit 1\n");
            }
            dir
        }

        fn executable(&self, path: &Path, text: &str) {
            fs::write(path, text).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// An environment where nothing is found.
    fn empty_env(scratch: &Scratch) -> SearchEnv {
        SearchEnv {
            pg_bindir: None,
            pg_config: Some(scratch.0.join("no-pg_config").into()),
            path: Some(scratch.0.join("empty-path").into()),
            versions_dir: scratch.0.join("no-versions"),
        }
    }

    #[test]
    fn nothing_found_names_packages_and_what_was_searched() {
        let scratch = Scratch::new("nothing");
        let err = find_bin_dir(&empty_env(&scratch)).unwrap_err();
        assert_eq!(err.kind(), TempClusterErrorKind::BinariesNotFound);
        let message = err.to_string();
        for needle in [
            "apt install postgresql",
            "dnf install postgresql-server",
            "brew install postgresql@18",
            "PG_BINDIR: not set",
            "no-pg_config --bindir",
            "no-versions/*/bin: none",
            "PATH: ",
            "empty-path",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from: {message}"
            );
        }
    }

    #[test]
    fn pg_bindir_is_final() {
        let scratch = Scratch::new("bindir");
        let good = scratch.fake_bin_dir("good");
        let empty = scratch.0.join("empty");
        fs::create_dir(&empty).unwrap();
        let mut env = empty_env(&scratch);
        env.path = Some(good.clone().into()); // would be found, but PG_BINDIR wins

        env.pg_bindir = Some(empty.clone().into());
        let message = find_bin_dir(&env).unwrap_err().to_string();
        assert!(message.contains("PG_BINDIR"), "{message}");
        assert!(message.contains(&*empty.to_string_lossy()), "{message}");
        assert!(message.contains("apt install postgresql"), "{message}");

        env.pg_bindir = Some(good.clone().into());
        env.path = None;
        assert_eq!(find_bin_dir(&env).unwrap(), good);
    }

    #[test]
    fn pg_config_bindir_is_used_only_if_it_has_the_server() {
        let scratch = Scratch::new("pg_config");
        let good = scratch.fake_bin_dir("server/bin");
        let client_only = scratch.0.join("client/bin");
        fs::create_dir_all(&client_only).unwrap();
        let in_path = scratch.fake_bin_dir("path");
        for (bindir, expected) in [(&good, &good), (&client_only, &in_path)] {
            let script = scratch.0.join(format!("pg_config-{}", expected == &good));
            scratch.executable(
                &script,
                &format!("#!/bin/sh\necho '{}'\n", bindir.display()),
            );
            let mut env = empty_env(&scratch);
            env.pg_config = Some(script.into());
            env.path = Some(in_path.clone().into());
            // Exec of a just-written script can fail with ETXTBSY while another test thread
            // forks (the child holds the write descriptor until it execs); find_bin_dir then
            // moves on to PATH, so an answer other than the expected one is retried (bounded).
            let mut found = find_bin_dir(&env);
            for _ in 0..50 {
                if found.as_ref().is_ok_and(|dir| dir == expected) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                found = find_bin_dir(&env);
            }
            assert_eq!(&found.unwrap(), expected);
        }
    }

    #[test]
    fn pg_config_is_looked_up_in_path() {
        let scratch = Scratch::new("pg_config_path");
        let mut env = empty_env(&scratch);
        env.pg_config = None;
        let message = find_bin_dir(&env).unwrap_err().to_string();
        assert!(
            message.contains("`pg_config --bindir`: not found in PATH"),
            "{message}"
        );
    }

    #[test]
    fn versioned_dirs_newest_first_numerically() {
        let scratch = Scratch::new("versions");
        let root = scratch.0.join("postgresql");
        scratch.fake_bin_dir("postgresql/9.6/bin");
        let ten = scratch.fake_bin_dir("postgresql/10/bin");
        fs::create_dir_all(root.join("11/bin")).unwrap(); // client only: skipped
        fs::create_dir_all(root.join("common")).unwrap(); // not a version: ignored
        assert_eq!(
            versioned_bin_dirs(&root),
            [root.join("11/bin"), ten.clone(), root.join("9.6/bin")]
        );
        let mut env = empty_env(&scratch);
        env.versions_dir = root;
        assert_eq!(find_bin_dir(&env).unwrap(), ten);
    }

    #[test]
    fn path_is_searched_last() {
        let scratch = Scratch::new("path");
        let in_path = scratch.fake_bin_dir("b");
        let mut env = empty_env(&scratch);
        env.path = Some(std::env::join_paths([scratch.0.join("a"), in_path.clone()]).unwrap());
        assert_eq!(find_bin_dir(&env).unwrap(), in_path);
    }

    #[test]
    fn conninfo_values_are_quoted_when_needed() {
        assert_eq!(conninfo_value("/tmp/pqlib-1-0"), "/tmp/pqlib-1-0");
        assert_eq!(conninfo_value("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(conninfo_value(r"/tmp/it's\x"), r"'/tmp/it\'s\\x'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn start_retries_when_the_port_is_taken() {
        // Hold a port so that the first attempt cannot bind it.
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
        let cluster = TempCluster::builder()
            .start_with_ports(&mut next_port)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempts, 2);
        assert_ne!(cluster.port(), taken_port);
        let ping = CString::new(cluster.tcp_conninfo()).unwrap();
        assert!(ping_ok(&ping));
        cluster.stop().unwrap();
    }

    #[test]
    fn start_gives_up_after_a_few_taken_ports() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut attempts = 0;
        let mut next_port = || {
            attempts += 1;
            Ok(taken_port)
        };
        let err = TempCluster::builder()
            .start_with_ports(&mut next_port)
            .unwrap_err();
        assert_eq!(attempts, START_ATTEMPTS);
        assert_eq!(err.kind(), TempClusterErrorKind::Start);
        let message = err.to_string();
        assert!(message.contains("Address already in use"), "{message}");
    }
}
