//! [`Config`]: libpq connection parameters, built in code or parsed from a connection string.
//!
//! A `Config` is an ordered list of libpq `keyword = value` parameters, exactly what
//! `PQconnectdbParams` takes. Builder methods exist for the common keywords (named as in the
//! `postgres` crate where it has one); [`Config::param`] sets any other keyword libpq knows.
//! Parsing (`str::parse`) goes through libpq's own `PQconninfoParse`, so both the
//! `key=value` syntax and `postgresql://` URIs mean exactly what they mean to `psql`.
//!
//! What a `Config` leaves out is filled in by libpq when it connects: `PG*` environment
//! variables, the service file (`service=`), the password file (`~/.pgpass`) and compiled-in
//! defaults. Neither building nor parsing a `Config` reads any of them.
//!
//! ```
//! use std::time::Duration;
//! use pqlib::config::{Config, SslMode};
//!
//! let mut config: Config = "postgresql://app@db1,db2/appdb".parse()?;
//! config
//!     .connect_timeout(Duration::from_secs(5))
//!     .ssl_mode(SslMode::Require)
//!     .application_name("reporter");
//! assert_eq!(config.get("host"), Some("db1,db2"));
//! assert_eq!(config.get("sslmode"), Some("require"));
//! # Ok::<(), pqlib::Error>(())
//! ```

use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::net::IpAddr;
use std::ptr::{self, NonNull};
use std::str::FromStr;
use std::time::Duration;

use pqlib_sys as ffi;

use crate::error::Error;
use crate::handle::lossy_string;
use crate::notice::NoticeCallback;

/// What [`Debug`](fmt::Debug) and [`Display`](fmt::Display) show instead of a password.
const REDACTED: &str = "********";

/// Keywords whose values are secrets: never shown by `Debug` or `Display`.
/// `scram_client_key`/`scram_server_key` (libpq 18) authenticate as the user just as the
/// password does.
const SECRET_KEYWORDS: [&str; 5] = [
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
];

/// libpq connection parameters: an ordered list of `(keyword, value)` pairs for
/// `PQconnectdbParams`.
///
/// Setting a keyword that is already present replaces its value in place, except
/// [`host`](Config::host), [`hostaddr`](Config::hostaddr) and [`port`](Config::port), which
/// add one more entry to libpq's comma-separated list, as the `postgres` crate's methods do
/// (use [`param`](Config::param) to replace the whole list).
///
/// Parsing a string (`"host=db port=5433".parse()` or a `postgresql://` URI) uses libpq's
/// `PQconninfoParse`: the syntax is libpq's, and an unknown keyword is an error. Parsing
/// does not apply environment variables or the service file; libpq does that when it
/// connects.
///
/// `Debug` and `Display` never show the values of `password`, `sslpassword`,
/// `oauth_client_secret`, `scram_client_key` and `scram_server_key` (they print `********`), so a `Config` can be logged. That also
/// means `Display` is not a way to hand the configuration on: its string has lost the
/// passwords.
///
/// ```no_run
/// use std::time::Duration;
///
/// let mut config = pqlib::Config::new();
/// config
///     .host("localhost")
///     .port(5432)
///     .user("app")
///     .password("secret")
///     .dbname("appdb")
///     .connect_timeout(Duration::from_secs(10));
/// let conn = config.connect()?;
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone, Default)]
#[doc(alias = "PQconninfoParse")]
#[doc(alias = "PQconninfoOption")]
pub struct Config {
    params: Vec<(String, String)>,
    /// Set with [`Config::notice_callback`] (in `notice.rs`).
    pub(crate) notice_callback: Option<NoticeCallback>,
    /// Set with [`Config::prepare_policy`]; pqlib's own, not a libpq option.
    pub(crate) prepare_policy: crate::PreparePolicy,
}

/// Equal parameters and prepare policy, and the same notice callback (the same one shared by
/// clones) or none.
impl PartialEq for Config {
    fn eq(&self, other: &Config) -> bool {
        self.params == other.params
            && self.prepare_policy == other.prepare_policy
            && match (&self.notice_callback, &other.notice_callback) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same(b),
                _ => false,
            }
    }
}

impl Eq for Config {}

/// The `sslmode` parameter: whether and how to use TLS.
///
/// libpq's default is `prefer`.
///
/// ```
/// let mut config = pqlib::Config::new();
/// config.ssl_mode(pqlib::config::SslMode::VerifyFull);
/// assert_eq!(config.get("sslmode"), Some("verify-full"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// `disable`: only try a connection without TLS.
    Disable,
    /// `allow`: first try without TLS; if that fails, try with TLS.
    Allow,
    /// `prefer`: first try with TLS; if that fails, try without.
    Prefer,
    /// `require`: only TLS, without verifying the server's certificate (unless a root
    /// certificate file is present, as libpq documents).
    Require,
    /// `verify-ca`: only TLS, and the server's certificate must be signed by a trusted CA.
    VerifyCa,
    /// `verify-full`: as `verify-ca`, and the certificate must also match the host name.
    VerifyFull,
}

impl SslMode {
    /// The value libpq takes, e.g. `"verify-full"`.
    ///
    /// ```
    /// assert_eq!(pqlib::config::SslMode::VerifyCa.as_str(), "verify-ca");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The `sslnegotiation` parameter (libpq 17 and later): how TLS is started.
///
/// ```
/// let mut config = pqlib::Config::new();
/// config.ssl_negotiation(pqlib::config::SslNegotiation::Direct);
/// assert_eq!(config.get("sslnegotiation"), Some("direct"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslNegotiation {
    /// `postgres`: ask the server for TLS first (libpq's default; works with every server).
    Postgres,
    /// `direct`: start the TLS handshake at once (servers 17 and later; needs `sslmode`
    /// `require` or stricter).
    Direct,
}

impl SslNegotiation {
    /// The value libpq takes, e.g. `"direct"`.
    ///
    /// ```
    /// assert_eq!(pqlib::config::SslNegotiation::Postgres.as_str(), "postgres");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SslNegotiation::Postgres => "postgres",
            SslNegotiation::Direct => "direct",
        }
    }
}

/// The `target_session_attrs` parameter: which of several hosts is acceptable.
///
/// ```
/// let mut config = pqlib::Config::new();
/// config
///     .host("db1")
///     .host("db2")
///     .target_session_attrs(pqlib::config::TargetSessionAttrs::ReadWrite);
/// assert_eq!(config.get("target_session_attrs"), Some("read-write"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetSessionAttrs {
    /// `any`: any server will do (libpq's default).
    Any,
    /// `read-write`: the session must accept writes.
    ReadWrite,
    /// `read-only`: the session must not accept writes by default.
    ReadOnly,
    /// `primary`: the server must not be in hot standby.
    Primary,
    /// `standby`: the server must be in hot standby.
    Standby,
    /// `prefer-standby`: a standby if there is one, else any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// The value libpq takes, e.g. `"prefer-standby"`.
    ///
    /// ```
    /// use pqlib::config::TargetSessionAttrs;
    /// assert_eq!(TargetSessionAttrs::PreferStandby.as_str(), "prefer-standby");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }
}

/// The `channel_binding` parameter: whether SCRAM authentication must bind to the TLS channel.
///
/// ```
/// let mut config = pqlib::Config::new();
/// config.channel_binding(pqlib::config::ChannelBinding::Require);
/// assert_eq!(config.get("channel_binding"), Some("require"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelBinding {
    /// `disable`: never use channel binding.
    Disable,
    /// `prefer`: use it if the server and TLS allow (libpq's default with TLS support).
    Prefer,
    /// `require`: fail unless channel binding is used.
    Require,
}

impl ChannelBinding {
    /// The value libpq takes, e.g. `"require"`.
    ///
    /// ```
    /// assert_eq!(pqlib::config::ChannelBinding::Disable.as_str(), "disable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

/// The `load_balance_hosts` parameter (libpq 16 and later): the order hosts are tried in.
///
/// ```
/// let mut config = pqlib::Config::new();
/// config.load_balance_hosts(pqlib::config::LoadBalanceHosts::Random);
/// assert_eq!(config.get("load_balance_hosts"), Some("random"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadBalanceHosts {
    /// `disable`: in the order given (libpq's default).
    Disable,
    /// `random`: in random order, to spread connections over the hosts.
    Random,
}

impl LoadBalanceHosts {
    /// The value libpq takes, e.g. `"random"`.
    ///
    /// ```
    /// assert_eq!(pqlib::config::LoadBalanceHosts::Disable.as_str(), "disable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::Disable => "disable",
            LoadBalanceHosts::Random => "random",
        }
    }
}

/// Whole seconds, rounded up so that a non-zero duration never becomes 0 (which libpq reads
/// as "no timeout" or "system default"), capped at what libpq's `int` can hold.
fn whole_seconds(duration: Duration) -> String {
    let seconds = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    seconds.min(i32::MAX as u64).to_string()
}

/// Whole milliseconds, rounded up and capped like [`whole_seconds`].
fn whole_millis(duration: Duration) -> String {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    millis.min(i32::MAX as u128).to_string()
}

impl Config {
    /// An empty configuration: libpq's defaults and `PG*` environment variables decide
    /// everything when connecting.
    ///
    /// ```
    /// let config = pqlib::Config::new();
    /// assert_eq!(config.params().count(), 0);
    /// ```
    pub fn new() -> Config {
        Config::default()
    }

    /// Sets any libpq connection keyword, replacing its value if it is already set.
    ///
    /// The keyword is not checked here: libpq rejects one it does not know ("invalid
    /// connection option") when connecting, or call [`validate`](Config::validate) first.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.param("gssencmode", "disable").param("sslcompression", "0");
    /// assert_eq!(config.get("gssencmode"), Some("disable"));
    /// ```
    pub fn param(&mut self, keyword: &str, value: &str) -> &mut Config {
        match self.params.iter_mut().find(|(k, _)| k == keyword) {
            Some((_, v)) => {
                v.clear();
                v.push_str(value);
            }
            None => self.params.push((keyword.to_owned(), value.to_owned())),
        }
        self
    }

    /// Adds one entry to a comma-separated list keyword (`host`, `hostaddr`, `port`).
    fn append(&mut self, keyword: &str, value: &str) -> &mut Config {
        match self.params.iter_mut().find(|(k, _)| k == keyword) {
            Some((_, v)) if !v.is_empty() => {
                v.push(',');
                v.push_str(value);
            }
            _ => {
                self.param(keyword, value);
            }
        }
        self
    }

    /// The value set for `keyword`, if any (only what this `Config` holds: not environment
    /// variables or libpq's defaults). Passwords are returned as they are.
    ///
    /// ```
    /// let config: pqlib::Config = "host=db port=5433".parse()?;
    /// assert_eq!(config.get("port"), Some("5433"));
    /// assert_eq!(config.get("user"), None);
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }

    /// Every `(keyword, value)` pair, in order. Unlike `Debug` and `Display`, this includes
    /// the values of `password` and `sslpassword` unredacted: take care where they go.
    ///
    /// ```
    /// let config: pqlib::Config = "host=db dbname=app".parse()?;
    /// for (keyword, value) in config.params() {
    ///     println!("{keyword} = {value}");
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Adds a host to try: a name, an IP address, or (starting with `/`) the directory of a
    /// Unix-domain socket. Each call adds one more host to libpq's list; they are tried in
    /// order (see [`load_balance_hosts`](Config::load_balance_hosts)), each with the port at
    /// the same position in the [`port`](Config::port) list, or the only port given.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.host("db1").host("db2").port(5432).port(5433);
    /// assert_eq!(config.get("host"), Some("db1,db2"));
    /// assert_eq!(config.get("port"), Some("5432,5433"));
    /// ```
    pub fn host(&mut self, host: &str) -> &mut Config {
        self.append("host", host)
    }

    /// Adds a numeric host address (`hostaddr`), which skips the name lookup. Like
    /// [`host`](Config::host), each call adds one entry to the list; with both set, the
    /// entries pair up by position and `host` is used for authentication and TLS checks.
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    ///
    /// let mut config = pqlib::Config::new();
    /// config.host("db.example.com").hostaddr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)));
    /// assert_eq!(config.get("hostaddr"), Some("10.0.0.7"));
    /// ```
    pub fn hostaddr(&mut self, hostaddr: IpAddr) -> &mut Config {
        self.append("hostaddr", &hostaddr.to_string())
    }

    /// Adds a port, one per host (see [`host`](Config::host)); libpq's default is 5432.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.port(5433);
    /// assert_eq!(config.get("port"), Some("5433"));
    /// ```
    pub fn port(&mut self, port: u16) -> &mut Config {
        self.append("port", &port.to_string())
    }

    /// The user name (`user`); libpq's default is the operating-system user.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.user("app");
    /// assert_eq!(config.get("user"), Some("app"));
    /// ```
    pub fn user(&mut self, user: &str) -> &mut Config {
        self.param("user", user)
    }

    /// The password. Without one, libpq looks in the password file (`~/.pgpass` or
    /// [`passfile`](Config::passfile)) and `PGPASSWORD`. `Debug` and `Display` show it as
    /// `********`.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.password("secret");
    /// assert!(!format!("{config:?} {config}").contains("secret"));
    /// ```
    pub fn password(&mut self, password: &str) -> &mut Config {
        self.param("password", password)
    }

    /// The database name (`dbname`); libpq's default is the user name. With
    /// [`connect`](Config::connect) it is only a name: a connection string or URI here is not
    /// expanded.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.dbname("appdb");
    /// assert_eq!(config.get("dbname"), Some("appdb"));
    /// ```
    pub fn dbname(&mut self, dbname: &str) -> &mut Config {
        self.param("dbname", dbname)
    }

    /// Command-line options sent to the server at connection start (`options`), e.g.
    /// `-c search_path=app -c statement_timeout=5s`.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.options("-c statement_timeout=5s");
    /// assert_eq!(config.get("options"), Some("-c statement_timeout=5s"));
    /// ```
    pub fn options(&mut self, options: &str) -> &mut Config {
        self.param("options", options)
    }

    /// The `application_name` the server shows in `pg_stat_activity` and logs.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.application_name("reporter");
    /// assert_eq!(config.get("application_name"), Some("reporter"));
    /// ```
    pub fn application_name(&mut self, name: &str) -> &mut Config {
        self.param("application_name", name)
    }

    /// The `application_name` to use only if neither this configuration nor `PGAPPNAME` sets
    /// one (`fallback_application_name`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.fallback_application_name("mytool");
    /// assert_eq!(config.get("fallback_application_name"), Some("mytool"));
    /// ```
    pub fn fallback_application_name(&mut self, name: &str) -> &mut Config {
        self.param("fallback_application_name", name)
    }

    /// The longest wait for each connection attempt, per host and address
    /// (`connect_timeout`).
    ///
    /// libpq counts whole seconds: the duration is rounded up, so a non-zero value below one
    /// second becomes 1 s (libpq itself then waits at least 2 s). `Duration::ZERO` means wait
    /// indefinitely, libpq's default.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.connect_timeout(Duration::from_millis(2500));
    /// assert_eq!(config.get("connect_timeout"), Some("3"));
    /// ```
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Config {
        self.param("connect_timeout", &whole_seconds(timeout))
    }

    /// Whether to use TCP keepalives (`keepalives`, on by default in libpq).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.keepalives(false);
    /// assert_eq!(config.get("keepalives"), Some("0"));
    /// ```
    pub fn keepalives(&mut self, keepalives: bool) -> &mut Config {
        self.param("keepalives", if keepalives { "1" } else { "0" })
    }

    /// Idle time before the first TCP keepalive probe (`keepalives_idle`), in whole seconds
    /// rounded up.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.keepalives_idle(Duration::from_secs(60));
    /// assert_eq!(config.get("keepalives_idle"), Some("60"));
    /// ```
    pub fn keepalives_idle(&mut self, idle: Duration) -> &mut Config {
        self.param("keepalives_idle", &whole_seconds(idle))
    }

    /// Time between unanswered TCP keepalive probes (`keepalives_interval`), in whole seconds
    /// rounded up.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.keepalives_interval(Duration::from_secs(10));
    /// assert_eq!(config.get("keepalives_interval"), Some("10"));
    /// ```
    pub fn keepalives_interval(&mut self, interval: Duration) -> &mut Config {
        self.param("keepalives_interval", &whole_seconds(interval))
    }

    /// How many unanswered keepalive probes mean the connection is dead
    /// (`keepalives_count`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.keepalives_retries(3);
    /// assert_eq!(config.get("keepalives_count"), Some("3"));
    /// ```
    pub fn keepalives_retries(&mut self, retries: u32) -> &mut Config {
        self.param("keepalives_count", &retries.to_string())
    }

    /// How long sent data may stay unacknowledged before the connection is closed
    /// (`tcp_user_timeout`, Linux only), in whole milliseconds rounded up.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.tcp_user_timeout(Duration::from_secs(30));
    /// assert_eq!(config.get("tcp_user_timeout"), Some("30000"));
    /// ```
    pub fn tcp_user_timeout(&mut self, timeout: Duration) -> &mut Config {
        self.param("tcp_user_timeout", &whole_millis(timeout))
    }

    /// Whether and how to use TLS (`sslmode`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.ssl_mode(pqlib::config::SslMode::Disable);
    /// assert_eq!(config.get("sslmode"), Some("disable"));
    /// ```
    pub fn ssl_mode(&mut self, mode: SslMode) -> &mut Config {
        self.param("sslmode", mode.as_str())
    }

    /// How TLS is started (`sslnegotiation`, libpq 17 and later; an older libpq rejects the
    /// keyword when connecting).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.ssl_negotiation(pqlib::config::SslNegotiation::Postgres);
    /// assert_eq!(config.get("sslnegotiation"), Some("postgres"));
    /// ```
    pub fn ssl_negotiation(&mut self, negotiation: SslNegotiation) -> &mut Config {
        self.param("sslnegotiation", negotiation.as_str())
    }

    /// The file of trusted CA certificates (`sslrootcert`), or `system` for the system's
    /// trust store (libpq 16 and later).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.sslrootcert("/etc/ssl/pg/root.crt");
    /// assert_eq!(config.get("sslrootcert"), Some("/etc/ssl/pg/root.crt"));
    /// ```
    pub fn sslrootcert(&mut self, path: &str) -> &mut Config {
        self.param("sslrootcert", path)
    }

    /// The client certificate file (`sslcert`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.sslcert("client.crt").sslkey("client.key");
    /// assert_eq!(config.get("sslcert"), Some("client.crt"));
    /// ```
    pub fn sslcert(&mut self, path: &str) -> &mut Config {
        self.param("sslcert", path)
    }

    /// The client certificate's private key file (`sslkey`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.sslkey("client.key");
    /// assert_eq!(config.get("sslkey"), Some("client.key"));
    /// ```
    pub fn sslkey(&mut self, path: &str) -> &mut Config {
        self.param("sslkey", path)
    }

    /// The passphrase of the [`sslkey`](Config::sslkey) file (`sslpassword`). `Debug` and
    /// `Display` show it as `********`.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.sslpassword("passphrase");
    /// assert!(!format!("{config:?} {config}").contains("passphrase"));
    /// ```
    pub fn sslpassword(&mut self, password: &str) -> &mut Config {
        self.param("sslpassword", password)
    }

    /// Whether SCRAM authentication must use channel binding (`channel_binding`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.channel_binding(pqlib::config::ChannelBinding::Prefer);
    /// assert_eq!(config.get("channel_binding"), Some("prefer"));
    /// ```
    pub fn channel_binding(&mut self, binding: ChannelBinding) -> &mut Config {
        self.param("channel_binding", binding.as_str())
    }

    /// Which authentication methods the server may ask for (`require_auth`, libpq 16 and
    /// later): a comma-separated list such as `scram-sha-256` or `!password,!md5`.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.require_auth("scram-sha-256");
    /// assert_eq!(config.get("require_auth"), Some("scram-sha-256"));
    /// ```
    pub fn require_auth(&mut self, methods: &str) -> &mut Config {
        self.param("require_auth", methods)
    }

    /// Which hosts are acceptable when several are given (`target_session_attrs`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.target_session_attrs(pqlib::config::TargetSessionAttrs::Primary);
    /// assert_eq!(config.get("target_session_attrs"), Some("primary"));
    /// ```
    pub fn target_session_attrs(&mut self, attrs: TargetSessionAttrs) -> &mut Config {
        self.param("target_session_attrs", attrs.as_str())
    }

    /// The order hosts are tried in (`load_balance_hosts`, libpq 16 and later).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.load_balance_hosts(pqlib::config::LoadBalanceHosts::Random);
    /// assert_eq!(config.get("load_balance_hosts"), Some("random"));
    /// ```
    pub fn load_balance_hosts(&mut self, order: LoadBalanceHosts) -> &mut Config {
        self.param("load_balance_hosts", order.as_str())
    }

    /// The oldest protocol version to accept (`min_protocol_version`, libpq 18 and later;
    /// an older libpq rejects the keyword when connecting). libpq's default is 3.0; with 3.2
    /// the connection fails against a server older than PostgreSQL 18 instead of falling back.
    ///
    /// ```
    /// use pqlib::ProtocolVersion;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.min_protocol_version(ProtocolVersion::V3_2);
    /// assert_eq!(config.get("min_protocol_version"), Some("3.2"));
    /// ```
    pub fn min_protocol_version(&mut self, version: crate::ProtocolVersion) -> &mut Config {
        self.param("min_protocol_version", &version.to_string())
    }

    /// The newest protocol version to ask for (`max_protocol_version`, libpq 18 and later;
    /// an older libpq rejects the keyword when connecting). libpq 18 asks for 3.0 unless told
    /// otherwise; a server that speaks less answers with the version it takes, which
    /// [`Connection::protocol_version`](crate::Connection::protocol_version) reports. (libpq
    /// also takes `latest`, which [`param`](Config::param) can set.)
    ///
    /// ```
    /// use pqlib::ProtocolVersion;
    ///
    /// let mut config = pqlib::Config::new();
    /// config.max_protocol_version(ProtocolVersion::V3_2);
    /// assert_eq!(config.get("max_protocol_version"), Some("3.2"));
    /// ```
    pub fn max_protocol_version(&mut self, version: crate::ProtocolVersion) -> &mut Config {
        self.param("max_protocol_version", &version.to_string())
    }

    /// The password file to read instead of `~/.pgpass` (`passfile`).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.passfile("/run/secrets/pgpass");
    /// assert_eq!(config.get("passfile"), Some("/run/secrets/pgpass"));
    /// ```
    pub fn passfile(&mut self, path: &str) -> &mut Config {
        self.param("passfile", path)
    }

    /// A service name to look up in `pg_service.conf` (`service`); libpq reads the file when
    /// connecting, and parameters set here win over the service's.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.service("reporting");
    /// assert_eq!(config.get("service"), Some("reporting"));
    /// ```
    pub fn service(&mut self, service: &str) -> &mut Config {
        self.param("service", service)
    }

    /// The client encoding (`client_encoding`). pqlib decodes text as UTF-8 and switches a
    /// session to `UTF8` after connecting if it is not already; setting `UTF8` here saves
    /// that extra round trip.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.client_encoding("UTF8");
    /// assert_eq!(config.get("client_encoding"), Some("UTF8"));
    /// ```
    pub fn client_encoding(&mut self, encoding: &str) -> &mut Config {
        self.param("client_encoding", encoding)
    }

    /// The OAuth authorization server to get a bearer token from (`oauth_issuer`, libpq 18
    /// and later): its issuer identifier (`https://login.example.com`) or the URL of its
    /// discovery document (`…/.well-known/openid-configuration`). Needed, with
    /// [`oauth_client_id`](Config::oauth_client_id), when the server asks for OAuth; it must
    /// match the issuer the server trusts. The `pqlib::oauth` module (built with libpq 18 and
    /// later) hands libpq the token.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.oauth_issuer("https://login.example.com");
    /// assert_eq!(config.get("oauth_issuer"), Some("https://login.example.com"));
    /// ```
    pub fn oauth_issuer(&mut self, issuer: &str) -> &mut Config {
        self.param("oauth_issuer", issuer)
    }

    /// The OAuth client identifier this program is registered under with the
    /// [issuer](Config::oauth_issuer) (`oauth_client_id`, libpq 18 and later).
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.oauth_client_id("my-app");
    /// assert_eq!(config.get("oauth_client_id"), Some("my-app"));
    /// ```
    pub fn oauth_client_id(&mut self, client_id: &str) -> &mut Config {
        self.param("oauth_client_id", client_id)
    }

    /// The OAuth client secret, for clients registered with one (`oauth_client_secret`, libpq
    /// 18 and later; used by libpq's built-in flow). `Debug` and `Display` show it as
    /// `********`.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.oauth_client_secret("s3cret");
    /// assert!(!format!("{config:?} {config}").contains("s3cret"));
    /// ```
    pub fn oauth_client_secret(&mut self, secret: &str) -> &mut Config {
        self.param("oauth_client_secret", secret)
    }

    /// The scope(s) to request for the bearer token, space-separated (`oauth_scope`, libpq 18
    /// and later). Without it, libpq uses the scope the server asks for.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.oauth_scope("openid postgres");
    /// assert_eq!(config.get("oauth_scope"), Some("openid postgres"));
    /// ```
    pub fn oauth_scope(&mut self, scope: &str) -> &mut Config {
        self.param("oauth_scope", scope)
    }

    /// Checks that libpq knows every keyword, as the linked libpq will when connecting
    /// (a newer keyword such as `load_balance_hosts` fails with an older libpq).
    ///
    /// The check uses the keyword list of `PQconninfoParse`; values are checked only when
    /// connecting.
    ///
    /// ```
    /// let mut config = pqlib::Config::new();
    /// config.host("db");
    /// assert!(config.validate().is_ok());
    /// config.param("hots", "db");
    /// assert!(config.validate().is_err());
    /// ```
    #[doc(alias = "PQconninfoParse")]
    pub fn validate(&self) -> Result<(), Error> {
        let known = ConninfoOptions::parse(c"").map_err(Error::client)?;
        for (keyword, _) in &self.params {
            if !known
                .entries()
                .any(|(k, _)| k.to_bytes() == keyword.as_bytes())
            {
                if let Some(major) = newer_keyword_major(keyword) {
                    return Err(Error::unsupported(format!(
                        "connection option {keyword:?} needs libpq {major} or newer; this \
                         program runs libpq {}",
                        crate::version()
                    )));
                }
                return Err(Error::bad_input(format!(
                    "invalid connection option {keyword:?}"
                )));
            }
        }
        Ok(())
    }

    /// When SQL text passed to `query`, `execute` and friends becomes a named prepared
    /// statement; see [`PreparePolicy`](crate::PreparePolicy). The default prepares and
    /// caches every text; behind a pooler in transaction mode use
    /// [`PreparePolicy::Never`](crate::PreparePolicy::Never).
    ///
    /// This is pqlib's setting, not a libpq connection option: it is not part of the
    /// connection string (`Display`) and cannot be parsed from one.
    ///
    /// ```
    /// use pqlib::PreparePolicy;
    ///
    /// let mut config = pqlib::Config::new();
    /// assert_eq!(config.get_prepare_policy(), PreparePolicy::Always);
    /// config.prepare_policy(PreparePolicy::AfterRuns(5));
    /// assert_eq!(config.get_prepare_policy(), PreparePolicy::AfterRuns(5));
    /// ```
    pub fn prepare_policy(&mut self, policy: crate::PreparePolicy) -> &mut Config {
        self.prepare_policy = policy;
        self
    }

    /// The policy set with [`prepare_policy`](Config::prepare_policy).
    ///
    /// ```
    /// let config = pqlib::Config::new();
    /// assert_eq!(config.get_prepare_policy(), pqlib::PreparePolicy::Always);
    /// ```
    pub fn get_prepare_policy(&self) -> crate::PreparePolicy {
        self.prepare_policy
    }

    /// Connects with these parameters; see
    /// [`Connection::connect_config`](crate::Connection::connect_config).
    ///
    /// libpq applies environment variables, the service file and the password file for
    /// whatever is not set here. A `dbname` is only a database name (not expanded as a
    /// connection string).
    ///
    /// ```no_run
    /// let mut config = pqlib::Config::new();
    /// config.host("/var/run/postgresql").dbname("postgres");
    /// let mut conn = config.connect()?;
    /// conn.batch_execute("SELECT 1")?;
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQconnectdbParams")]
    pub fn connect(&self) -> Result<crate::Connection, Error> {
        crate::Connection::connect_config(self)
    }

    /// Keywords and values as C strings for `PQconnectdbParams` (with `expand_dbname = 0`),
    /// in order. A NUL byte anywhere is an error naming the keyword, never a truncation.
    pub(crate) fn to_c_params(&self) -> Result<(Vec<CString>, Vec<CString>), Error> {
        let mut keywords = Vec::with_capacity(self.params.len());
        let mut values = Vec::with_capacity(self.params.len());
        for (keyword, value) in &self.params {
            keywords.push(CString::new(keyword.as_str()).map_err(|e| {
                Error::nul_byte(&format!("the connection option keyword {keyword:?}"), e)
            })?);
            values.push(CString::new(value.as_str()).map_err(|e| {
                Error::nul_byte(&format!("the value of connection option {keyword:?}"), e)
            })?);
        }
        Ok((keywords, values))
    }
}

impl FromStr for Config {
    type Err = Error;

    /// Parses a `key=value` connection string or a `postgresql://` (or `postgres://`) URI
    /// with libpq's `PQconninfoParse`. Errors carry libpq's message; if the string may hold
    /// a password, the fragments of it that libpq quotes are masked.
    fn from_str(s: &str) -> Result<Config, Error> {
        let conninfo = CString::new(s).map_err(|e| Error::nul_byte("the connection string", e))?;
        let options = ConninfoOptions::parse(&conninfo).map_err(|message| {
            if let Some(error) = unsupported_keyword(&message) {
                return error;
            }
            let message = if may_hold_secret(s) {
                mask_quoted(&message)
            } else {
                message
            };
            Error::bad_input(message)
        })?;
        let mut params = Vec::new();
        for (keyword, value) in options.entries() {
            let Some(value) = value else { continue };
            // libpq's keywords are ASCII; its values are the input's bytes, but URI
            // percent-decoding can make them invalid UTF-8.
            let keyword = keyword.to_string_lossy().into_owned();
            let Ok(value) = value.to_str() else {
                return Err(Error::bad_input(format!(
                    "the value of connection option {keyword:?} is not valid UTF-8 \
                     after percent-decoding"
                )));
            };
            params.push((keyword, value.to_owned()));
        }
        Ok(Config {
            params,
            notice_callback: None,
            prepare_policy: crate::PreparePolicy::default(),
        })
    }
}

/// Whether a connection string that failed to parse might contain a password, so that
/// libpq's message (which quotes pieces of the input) must be masked.
fn may_hold_secret(conninfo: &str) -> bool {
    conninfo.to_ascii_lowercase().contains("password")
        || (conninfo.contains("://") && conninfo.contains('@'))
}

/// Replaces every double-quoted fragment of a libpq message with `********`, except libpq
/// keywords and single punctuation characters (the separators libpq names, like `"="`),
/// which are not pieces of a secret.
fn mask_quoted(message: &str) -> String {
    let known = ConninfoOptions::parse(c"").ok();
    let is_keyword = |fragment: &str| {
        known.as_ref().is_some_and(|known| {
            known
                .entries()
                .any(|(k, _)| k.to_bytes() == fragment.as_bytes())
        })
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else {
            // An unpaired quote: mask everything after it.
            out.push_str(REDACTED);
            return out;
        };
        let fragment = &after[..close];
        let separator = fragment.len() == 1 && fragment.bytes().all(|b| b.is_ascii_punctuation());
        if separator || is_keyword(fragment) {
            out.push_str(fragment);
        } else {
            out.push_str(REDACTED);
        }
        out.push('"');
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The option array `PQconninfoParse` returns, freed with `PQconninfoFree`.
struct ConninfoOptions(NonNull<ffi::PQconninfoOption>);

impl ConninfoOptions {
    /// Parses with libpq; on failure, libpq's message.
    fn parse(conninfo: &CStr) -> Result<ConninfoOptions, String> {
        let mut errmsg: *mut c_char = ptr::null_mut();
        // SAFETY: `conninfo` is NUL-terminated and outlives the call; `errmsg` is a valid
        // place for libpq to store a message pointer. libpq only parses: it reads no
        // environment variables or files here.
        let options = unsafe { ffi::PQconninfoParse(conninfo.as_ptr(), &mut errmsg) };
        // SAFETY: `errmsg` is NULL or a message libpq allocated for the caller to free.
        let message = unsafe { take_message(errmsg) };
        match NonNull::new(options) {
            Some(options) => Ok(ConninfoOptions(options)),
            None => {
                Err(message
                    .unwrap_or_else(|| "out of memory parsing the connection string".to_owned()))
            }
        }
    }

    /// The `(keyword, value)` of each entry, up to the terminating entry (NULL keyword);
    /// `None` for a value the string did not set.
    fn entries(&self) -> impl Iterator<Item = (&CStr, Option<&CStr>)> {
        let mut next = self.0.as_ptr();
        std::iter::from_fn(move || {
            // SAFETY: `next` points at an entry of the array libpq returned, which lives as
            // long as `self`: it starts at the first entry and never moves past the
            // terminating one (NULL keyword), where iteration stops.
            let option: &ffi::PQconninfoOption = unsafe { &*next };
            if option.keyword.is_null() {
                return None;
            }
            // SAFETY: this entry is not the terminator, so the array has a next entry.
            next = unsafe { next.add(1) };
            // SAFETY: non-NULL keyword and value strings are NUL-terminated and owned by
            // the array, which outlives the returned borrows (tied to `self`).
            let keyword = unsafe { CStr::from_ptr(option.keyword) };
            let value = NonNull::new(option.val).map(|val| {
                // SAFETY: as for the keyword.
                unsafe { CStr::from_ptr(val.as_ptr()) }
            });
            Some((keyword, value))
        })
    }
}

impl Drop for ConninfoOptions {
    fn drop(&mut self) {
        // SAFETY: the array came from PQconninfoParse and is freed only here, once.
        unsafe { ffi::PQconninfoFree(self.0.as_ptr()) }
    }
}

/// Copies and frees a message libpq allocated for the caller; `None` for NULL.
///
/// # Safety
/// `ptr` must be NULL or a NUL-terminated string from libpq that the caller must release
/// with `PQfreemem` and does not use afterwards.
unsafe fn take_message(ptr: *mut c_char) -> Option<String> {
    // SAFETY: NULL or NUL-terminated, per this function's contract; copied before the free.
    let message = unsafe { lossy_string(ptr) }?;
    // SAFETY: non-NULL memory from libpq, freed exactly once here.
    unsafe { ffi::PQfreemem(ptr.cast()) };
    Some(message.trim_end().to_owned())
}

impl fmt::Debug for Config {
    /// Every parameter, with the secrets' values (`password`, `sslpassword`,
    /// `oauth_client_secret`, `scram_client_key`, `scram_server_key`) shown as `********`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        for (keyword, value) in &self.params {
            if SECRET_KEYWORDS.contains(&keyword.as_str()) {
                d.field(keyword, &REDACTED);
            } else {
                d.field(keyword, value);
            }
        }
        if self.notice_callback.is_some() {
            d.field("notice_callback", &format_args!("<callback>"));
        }
        if self.prepare_policy != crate::PreparePolicy::default() {
            d.field("prepare_policy", &self.prepare_policy);
        }
        d.finish()
    }
}

impl fmt::Display for Config {
    /// A libpq `key='value'` connection string, with the secrets' values (`password`,
    /// `sslpassword`, `oauth_client_secret`, `scram_client_key`, `scram_server_key`) replaced
    /// by `********`: for logs, not for connecting.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (keyword, value)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{keyword}='")?;
            if SECRET_KEYWORDS.contains(&keyword.as_str()) {
                f.write_str(REDACTED)?;
            } else {
                for c in value.chars() {
                    if c == '\'' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
            }
            f.write_str("'")?;
        }
        Ok(())
    }
}

/// libpq's "invalid connection option" for a keyword a newer libpq knows, as the same
/// `Unsupported` error `validate` gives.
fn unsupported_keyword(message: &str) -> Option<Error> {
    let keyword = message
        .trim()
        .strip_prefix("invalid connection option \"")?
        .split('"')
        .next()?;
    let major = newer_keyword_major(keyword)?;
    Some(Error::unsupported(format!(
        "connection option {keyword:?} needs libpq {major} or newer; this program runs libpq {}",
        crate::version()
    )))
}

/// The libpq release that introduced a connection keyword newer than the oldest supported
/// libpq (14), so that using it with an older one says what to upgrade instead of
/// "invalid connection option".
fn newer_keyword_major(keyword: &str) -> Option<u32> {
    Some(match keyword {
        "require_auth" | "load_balance_hosts" | "sslcertmode" | "gssdelegation" => 16,
        "sslnegotiation" => 17,
        "min_protocol_version"
        | "max_protocol_version"
        | "sslkeylogfile"
        | "scram_client_key"
        | "scram_server_key"
        | "oauth_issuer"
        | "oauth_client_id"
        | "oauth_client_secret"
        | "oauth_scope" => 18,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keywords_of_newer_libpq_are_unsupported_not_invalid() {
        let mut config = Config::new();
        config.param("require_auth", "scram-sha-256");
        let result = config.validate();
        if cfg!(libpq_16) {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let e = result.unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported);
            assert!(e.to_string().contains("needs libpq 16"), "{e}");
        }
    }
    #[test]
    fn parsing_a_keyword_of_a_newer_libpq_is_unsupported() {
        let parsed = "host=a load_balance_hosts=random".parse::<Config>();
        if cfg!(libpq_16) {
            assert!(parsed.is_ok(), "{parsed:?}");
        } else {
            let e = parsed.unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported, "{e}");
        }
    }

    use super::*;
    use crate::error::ErrorKind;

    fn sorted(config: &Config) -> Vec<(String, String)> {
        let mut params: Vec<_> = config
            .params()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        params.sort();
        params
    }

    #[test]
    fn parses_key_value() {
        let config: Config = "host=localhost port=5433 dbname='my db' user = app"
            .parse()
            .unwrap();
        assert_eq!(config.get("host"), Some("localhost"));
        assert_eq!(config.get("port"), Some("5433"));
        assert_eq!(config.get("dbname"), Some("my db"));
        assert_eq!(config.get("user"), Some("app"));
        assert_eq!(config.get("password"), None);
        assert_eq!(config.params().count(), 4);
    }

    #[test]
    fn parses_uri_and_hides_password() {
        for uri in [
            "postgresql://u:secret@h:5433/db?sslmode=require",
            "postgres://u:secret@h:5433/db?sslmode=require",
        ] {
            let config: Config = uri.parse().unwrap();
            assert_eq!(config.get("user"), Some("u"));
            assert_eq!(config.get("password"), Some("secret"));
            assert_eq!(config.get("host"), Some("h"));
            assert_eq!(config.get("port"), Some("5433"));
            assert_eq!(config.get("dbname"), Some("db"));
            assert_eq!(config.get("sslmode"), Some("require"));
            let debug = format!("{config:?}");
            let display = config.to_string();
            assert!(!debug.contains("secret"), "{debug}");
            assert!(!display.contains("secret"), "{display}");
            assert!(debug.contains(r#"password: "********""#), "{debug}");
            assert!(display.contains("password='********'"), "{display}");
            assert!(display.contains("host='h'"), "{display}");
        }
    }

    #[test]
    fn scram_keys_are_secrets() {
        let mut config = Config::new();
        config
            .param("scram_client_key", "Y2xpZW50LWtleQ==")
            .param("scram_server_key", "c2VydmVyLWtleQ==");
        for shown in [format!("{config:?}"), config.to_string()] {
            assert!(!shown.contains("LWtleQ=="), "{shown}");
            assert_eq!(shown.matches("********").count(), 2, "{shown}");
        }
    }

    #[test]
    fn parses_percent_encoding_and_multiple_hosts() {
        let config: Config = "postgresql://a%20b@h1:1,h2:2/d%2Fb?application_name=x%3Dy"
            .parse()
            .unwrap();
        assert_eq!(config.get("user"), Some("a b"));
        assert_eq!(config.get("host"), Some("h1,h2"));
        assert_eq!(config.get("port"), Some("1,2"));
        assert_eq!(config.get("dbname"), Some("d/b"));
        assert_eq!(config.get("application_name"), Some("x=y"));

        let config: Config = "host=a,b port=1,2".parse().unwrap();
        assert_eq!(config.get("host"), Some("a,b"));
        assert_eq!(config.get("port"), Some("1,2"));
    }

    #[test]
    fn empty_string_is_empty_config() {
        let config: Config = "".parse().unwrap();
        assert_eq!(config, Config::new());
        assert_eq!(config.to_string(), "");
        assert_eq!(format!("{config:?}"), "Config");
    }

    #[test]
    fn parse_error_has_libpq_message() {
        let err = "host=a foo".parse::<Config>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        let text = err.to_string();
        assert!(text.contains(r#"missing "=" after "foo""#), "{text}");

        let err = "hots=a".parse::<Config>().unwrap_err();
        assert!(
            err.to_string().contains("invalid connection option"),
            "{err}"
        );

        let err = "host='unterminated".parse::<Config>().unwrap_err();
        assert!(err.to_string().contains("unterminated"), "{err}");

        let err = "postgresql://h:notaport%zz/db"
            .parse::<Config>()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
    }

    #[test]
    fn parse_error_masks_possible_passwords() {
        for (input, secret) in [
            ("password=abc def", "def"),
            ("postgresql://u:secret@[::1/db", "secret"),
            ("postgresql://h/db?sslpassword=x=secret", "secret"),
            ("postgresql://u:s%zzecret@h/db", "ecret"),
            ("user=u password='abc", "abc"),
        ] {
            let err = input.parse::<Config>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadInput);
            let text = format!("{err} {err:?}");
            assert!(!text.contains(secret), "{input}: {text}");
        }
    }

    #[test]
    fn mask_keeps_keywords_and_equals() {
        assert_eq!(
            mask_quoted(r#"missing "=" after "x y" in connection info string"#),
            r#"missing "=" after "********" in connection info string"#
        );
        assert_eq!(
            mask_quoted(r#"invalid "password" value: "abc"#),
            r#"invalid "password" value: "********"#
        );
        assert_eq!(mask_quoted("no quotes"), "no quotes");
        assert_eq!(
            mask_quoted(r#"matching "]" in "a]b""#),
            r#"matching "]" in "********""#
        );
        assert_eq!(mask_quoted(r#"unpaired "abc"#), r#"unpaired "********"#);
    }

    #[test]
    fn nul_byte_is_bad_input() {
        let err = "host=a\0b".parse::<Config>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(err.to_string().contains("NUL"), "{err}");

        let mut config = Config::new();
        config.host("ok").password("se\0cret");
        let err = config.to_c_params().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        let text = err.to_string();
        assert!(text.contains("\"password\""), "{text}");
        assert!(!text.contains("cret"), "{text}");

        let mut config = Config::new();
        config.param("ho\0st", "x");
        assert_eq!(
            config.to_c_params().unwrap_err().kind(),
            ErrorKind::BadInput
        );
    }

    #[test]
    fn builder_round_trip() {
        let mut config = Config::new();
        config
            .host("db1")
            .host("/tmp")
            .hostaddr("10.0.0.1".parse().unwrap())
            .hostaddr("::1".parse().unwrap())
            .port(5432)
            .port(5433)
            .user("app")
            .password("pw")
            .dbname("appdb")
            .options("-c search_path=app")
            .application_name("test")
            .fallback_application_name("fallback")
            .connect_timeout(Duration::from_millis(1))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_millis(1500))
            .keepalives_retries(4)
            .tcp_user_timeout(Duration::from_micros(1500))
            .ssl_mode(SslMode::VerifyFull)
            .sslrootcert("root.crt")
            .sslcert("client.crt")
            .sslkey("client.key")
            .sslpassword("keypw")
            .channel_binding(ChannelBinding::Require)
            .target_session_attrs(TargetSessionAttrs::PreferStandby)
            .passfile("/dev/null")
            .service("svc")
            .client_encoding("UTF8")
            .param("gssencmode", "disable");
        let expected = [
            ("host", "db1,/tmp"),
            ("hostaddr", "10.0.0.1,::1"),
            ("port", "5432,5433"),
            ("user", "app"),
            ("password", "pw"),
            ("dbname", "appdb"),
            ("options", "-c search_path=app"),
            ("application_name", "test"),
            ("fallback_application_name", "fallback"),
            ("connect_timeout", "1"),
            ("keepalives", "1"),
            ("keepalives_idle", "30"),
            ("keepalives_interval", "2"),
            ("keepalives_count", "4"),
            ("tcp_user_timeout", "2"),
            ("sslmode", "verify-full"),
            ("sslrootcert", "root.crt"),
            ("sslcert", "client.crt"),
            ("sslkey", "client.key"),
            ("sslpassword", "keypw"),
            ("channel_binding", "require"),
            ("target_session_attrs", "prefer-standby"),
            ("passfile", "/dev/null"),
            ("service", "svc"),
            ("client_encoding", "UTF8"),
            ("gssencmode", "disable"),
        ];
        assert_eq!(config.params().collect::<Vec<_>>(), expected);
        // Every keyword is one libpq 15 knows.
        config.validate().unwrap();

        // Setting again replaces in place.
        config.user("other").param("host", "only");
        assert_eq!(config.get("user"), Some("other"));
        assert_eq!(config.get("host"), Some("only"));
        assert_eq!(config.params().count(), expected.len());
        assert_eq!(config.params().nth(3), Some(("user", "other")));

        // Display parses back to the same parameters, passwords aside.
        let back: Config = config.to_string().parse().unwrap();
        let mut want = sorted(&config);
        for (k, v) in &mut want {
            if SECRET_KEYWORDS.contains(&k.as_str()) {
                *v = REDACTED.to_owned();
            }
        }
        assert_eq!(sorted(&back), want);

        let (keywords, values) = config.to_c_params().unwrap();
        assert_eq!(keywords.len(), expected.len());
        assert_eq!(keywords[4].as_c_str(), c"password");
        assert_eq!(values[4].as_c_str(), c"pw");
    }

    #[test]
    fn newer_keywords() {
        let mut config = Config::new();
        config
            .ssl_negotiation(SslNegotiation::Direct)
            .require_auth("scram-sha-256")
            .load_balance_hosts(LoadBalanceHosts::Random);
        assert_eq!(
            config.params().collect::<Vec<_>>(),
            [
                ("sslnegotiation", "direct"),
                ("require_auth", "scram-sha-256"),
                ("load_balance_hosts", "random"),
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(whole_seconds(Duration::ZERO), "0");
        assert_eq!(whole_seconds(Duration::from_nanos(1)), "1");
        assert_eq!(whole_seconds(Duration::from_secs(2)), "2");
        assert_eq!(whole_seconds(Duration::from_millis(2001)), "3");
        assert_eq!(whole_seconds(Duration::MAX), i32::MAX.to_string());
        assert_eq!(whole_millis(Duration::ZERO), "0");
        assert_eq!(whole_millis(Duration::from_nanos(1)), "1");
        assert_eq!(whole_millis(Duration::from_millis(250)), "250");
        assert_eq!(whole_millis(Duration::MAX), i32::MAX.to_string());
    }

    #[test]
    fn display_quotes_and_parses_back() {
        let mut config = Config::new();
        config
            .host("h")
            .dbname("my db")
            .user("o'brien")
            .options(r"-c x=\y")
            .application_name("")
            .param("sslkey", r"C:\keys\it's here");
        let text = config.to_string();
        assert_eq!(
            text,
            r"host='h' dbname='my db' user='o\'brien' options='-c x=\\y' application_name='' sslkey='C:\\keys\\it\'s here'"
        );
        let back: Config = text.parse().unwrap();
        assert_eq!(sorted(&back), sorted(&config));
    }

    #[test]
    fn debug_hides_passwords() {
        let mut config = Config::new();
        config.host("h").password("hunter2").sslpassword("hunter3");
        let debug = format!("{config:?}");
        assert_eq!(
            debug,
            r#"Config { host: "h", password: "********", sslpassword: "********" }"#
        );
        let display = config.to_string();
        assert_eq!(
            display,
            "host='h' password='********' sslpassword='********'"
        );
        // ...but params() and get() give the real value.
        assert_eq!(config.get("password"), Some("hunter2"));
    }

    #[test]
    fn validate_rejects_unknown_keyword() {
        let mut config = Config::new();
        config.host("h").param("no_such_option", "1");
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(err.to_string().contains("no_such_option"), "{err}");
        let mut config = Config::new();
        config.param("", "1");
        assert!(config.validate().is_err());
    }

    #[test]
    fn invalid_utf8_after_percent_decoding() {
        let err = "postgresql://h/db?application_name=%FF"
            .parse::<Config>()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(err.to_string().contains("application_name"), "{err}");
    }
}
