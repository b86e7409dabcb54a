//! Connecting, for the blocking and the async client alike: `PQconnectStartParams` +
//! `PQconnectPoll`, with pqlib's notice receiver installed before the server can send
//! anything, and libpq's `connect_timeout` applied here, as libpq's blocking connect does.
//!
//! The clients differ only in how they wait for the socket: [`Connector::poll`] says what to
//! wait for and until when ([`Step::Wait`]); the blocking client waits with `poll(2)`
//! ([`wait_blocking`]), the async one through tokio.
//!
//! `connect_timeout` is applied only inside libpq's blocking connect (`PQconnectdb*`), per
//! address: when it expires, libpq gives up on the address and goes on to the next one (or
//! host). A non-blocking connect cannot tell libpq to move on, so this module emulates it:
//! - an attempt still waiting for the TCP connection to be made is cut off by shutting the
//!   socket down, which libpq reports as a failed connect and moves on from by itself;
//! - an attempt to a server that accepted the connection but does not answer cannot be cut
//!   off that way (libpq treats any failure after connecting as final), so it is abandoned,
//!   and a new connection is started with the hosts after it (so, unlike libpq, the other
//!   addresses of a host name that resolves to several are not tried after such a timeout).
//!   To know which hosts those are, with a timeout and several hosts the host list is passed
//!   to libpq in an explicit order (shuffled here for `load_balance_hosts=random`).
//!
//! Either way the failure is reported with libpq's words ("timeout expired"), and the messages
//! of all attempts are joined as libpq joins them.

// Without a way to wait for a socket (neither poll(2) nor libpq 17's PQsocketPoll), the
// blocking client falls back to PQconnectdbParams and only `failed` is used.
#![cfg_attr(not(any(unix, libpq_17)), allow(dead_code))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use foreign_types::ForeignType;
use pqlib_sys as ffi;

use crate::Config;
use crate::error::{Error, Result};
use crate::handle::{PgConn, lossy_string};
use crate::notice::NoticeState;

/// What the socket has to become ready for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// What [`Connector::poll`] asks for next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Wait until `fd` is ready for `interest` or `deadline` has passed, then call `poll`
    /// again, saying whether the deadline passed first. `fd` is libpq's: it may be closed by
    /// the next `poll`, so nothing may keep it registered across that call.
    Wait {
        fd: RawSocket,
        interest: Interest,
        deadline: Option<Instant>,
    },
    /// Connected: [`Connector::into_conn`].
    Ready,
}

/// libpq's socket number (`PQsocket`).
pub(crate) type RawSocket = std::ffi::c_int;

/// After shutting an unfinished TCP connect down, how long libpq gets to notice and move on
/// before the attempt is abandoned instead.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A connection being made, possibly over several `PGconn`s (see the module docs).
pub(crate) struct Connector {
    conn: PgConn,
    notices: Arc<NoticeState>,
    timeout: Option<Duration>,
    /// With a timeout and several hosts: the hosts in the order they are tried, and where
    /// the current `PGconn`'s list starts in it.
    plan: Option<Plan>,
    /// The current attempt's endpoint (host, port, address) and its deadline.
    endpoint: Option<Endpoint>,
    deadline: Option<Instant>,
    /// Whether the current attempt's socket was shut down after its deadline.
    shut_down: bool,
    /// Byte offsets into the current `PGconn`'s error message where an attempt timed out
    /// (the message as it was then): libpq's report of the shut-down socket that follows
    /// each is replaced with "timeout expired".
    cuts: Vec<usize>,
    /// The messages of earlier `PGconn`s, as libpq would have joined them.
    earlier: String,
}

struct Plan {
    /// Every option libpq resolved, except the host list, ports and the host order.
    base: Vec<(String, String)>,
    hosts: Vec<HostEntry>,
    /// Index into `hosts` of the host being tried (best known).
    current: usize,
}

/// One entry of libpq's host list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostEntry {
    pub(crate) host: String,
    pub(crate) hostaddr: String,
    pub(crate) port: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: String,
    addr: String,
}

impl Connector {
    /// Starts connecting with `config`, notices going to `notices` from the start.
    pub(crate) fn start(config: &Config, notices: Arc<NoticeState>) -> Result<Connector> {
        let conn = start(config, &notices)?;
        // The effective settings, with environment variables and service files applied.
        let effective = effective_options(&conn);
        // libpq's blocking connect reads it after starting: its complaint follows whatever the
        // start already wrote (the first host's "connection to server at … failed: ").
        let timeout = connect_timeout(option(&effective, "connect_timeout"))
            .map_err(|message| failed(&conn, format!("{}{message}", conn.error_message())))?;
        let hosts = host_list(&effective);
        let mut connector = Connector {
            conn,
            notices,
            timeout,
            plan: None,
            endpoint: None,
            deadline: None,
            shut_down: false,
            cuts: Vec::new(),
            earlier: String::new(),
        };
        if timeout.is_none() || hosts.len() < 2 {
            return Ok(connector);
        }
        let base = effective
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "host" | "hostaddr" | "port"))
            .collect::<Vec<_>>();
        let random = option(&base, "load_balance_hosts") == "random";
        let mut plan = Plan {
            base,
            hosts,
            current: 0,
        };
        if random {
            // libpq's own shuffle cannot be seen from outside: shuffle here, and have libpq
            // take the hosts in that order.
            shuffle(&mut plan.hosts);
            connector.conn = start(&plan.params(0), &connector.notices)?;
        }
        connector.plan = Some(plan);
        Ok(connector)
    }

    /// Drives the handshake one step: `expired` says the last [`Step::Wait`]'s deadline
    /// passed before the socket was ready. A panic a notice handler raised during the step
    /// comes out of here.
    pub(crate) fn poll(&mut self, expired: bool) -> Result<Step> {
        if expired && self.expire()? {
            // A new connection was started with the remaining hosts: wait for it to connect.
            return self.waiting(ffi::PostgresPollingStatusType::PGRES_POLLING_WRITING);
        }
        // SAFETY: the connection is alive and still connecting (or failed, which
        // PQconnectPoll reports again).
        let status = unsafe { ffi::PQconnectPoll(self.conn.as_ptr()) };
        self.notices.resume_panic();
        match status {
            ffi::PostgresPollingStatusType::PGRES_POLLING_OK => {
                // A refusal by the OAuth hook that libpq got past (another host) is history.
                #[cfg(libpq_18)]
                crate::oauth::take_refusal(self.conn.as_ptr());
                Ok(Step::Ready)
            }
            ffi::PostgresPollingStatusType::PGRES_POLLING_READING
            | ffi::PostgresPollingStatusType::PGRES_POLLING_WRITING => self.waiting(status),
            _ => Err(self.failure(None)),
        }
    }

    fn waiting(&mut self, status: ffi::PostgresPollingStatusType) -> Result<Step> {
        // SAFETY: the connection is alive.
        let fd = unsafe { ffi::PQsocket(self.conn.as_ptr()) };
        if fd < 0 {
            return Err(self.failure(None));
        }
        let interest = if status == ffi::PostgresPollingStatusType::PGRES_POLLING_READING {
            Interest::Read
        } else {
            Interest::Write
        };
        if let Some(timeout) = self.timeout {
            let endpoint = self.endpoint_now();
            if self.endpoint.as_ref() != Some(&endpoint) {
                // libpq restarts the clock for every host and address it tries.
                if let Some(plan) = &mut self.plan {
                    plan.locate(&endpoint);
                }
                self.endpoint = Some(endpoint);
                self.deadline = Some(Instant::now() + timeout);
                self.shut_down = false;
            }
        }
        Ok(Step::Wait {
            fd,
            interest,
            deadline: self.deadline,
        })
    }

    /// The current attempt's deadline passed. Returns whether a new connection was started
    /// (with the hosts after the one that timed out); an error when none is left.
    fn expire(&mut self) -> Result<bool> {
        let raw = self.conn.error_message();
        let cut = raw.len();
        #[cfg(unix)]
        if !self.shut_down && self.conn.status() == ffi::ConnStatusType::CONNECTION_STARTED {
            // Still waiting for the TCP connection: shut the socket down, so that libpq sees
            // a failed connect and goes on to the next address or host itself.
            // SAFETY: the connection is alive.
            let fd = unsafe { ffi::PQsocket(self.conn.as_ptr()) };
            if fd >= 0 {
                // SAFETY: `fd` is libpq's open socket; shutting it down (not closing it)
                // leaves the descriptor for libpq to close.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                self.cuts.push(cut);
                self.shut_down = true;
                self.deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                return Ok(false);
            }
        }
        // Connected but unanswered (or the shutdown did not help): give this attempt up, and
        // go on with the hosts after it, if any.
        let next = self.plan.as_ref().and_then(|plan| {
            let next = plan.current + 1;
            (next < plan.hosts.len()).then(|| (next, plan.params(next)))
        });
        let Some((next, params)) = next else {
            return Err(self.failure(Some(cut)));
        };
        let message = with_timeouts(&raw, &self.cuts, true);
        self.earlier.push_str(&message);
        match start(&params, &self.notices) {
            Ok(conn) => self.conn = conn,
            Err(e) if e.kind() == crate::error::ErrorKind::Connect => {
                // Keep the joined messages: the new connection's failure is the last one.
                let message = format!("{}{}", self.earlier, e.raw_message());
                return Err(Error::connect_failed(
                    message,
                    e.needs_password(),
                    e.used_password(),
                ));
            }
            Err(e) => return Err(e),
        }
        if let Some(plan) = &mut self.plan {
            plan.current = next;
        }
        self.endpoint = None;
        self.deadline = None;
        self.shut_down = false;
        self.cuts.clear();
        Ok(true)
    }

    /// The error for a failed attempt: every `PGconn`'s messages, joined, timeouts reported
    /// as libpq reports them. `abandoned_at`: the attempt was given up at this offset of the
    /// current message.
    fn failure(&self, abandoned_at: Option<usize>) -> Error {
        let raw = self.conn.error_message();
        let current = match abandoned_at {
            Some(cut) => with_timeouts(raw.get(..cut).unwrap_or(&raw), &self.cuts, true),
            None => with_timeouts(&raw, &self.cuts, false),
        };
        failed(&self.conn, format!("{}{current}", self.earlier))
    }

    fn endpoint_now(&self) -> Endpoint {
        let text = |getter: unsafe extern "C" fn(*const ffi::PGconn) -> *mut std::ffi::c_char| {
            // SAFETY: the connection is alive; the string is owned by libpq and copied.
            unsafe { lossy_string(getter(self.conn.as_ptr())) }.unwrap_or_default()
        };
        Endpoint {
            host: text(ffi::PQhost),
            port: text(ffi::PQport),
            addr: text(ffi::PQhostaddr),
        }
    }

    /// The connected `PGconn`, after [`Step::Ready`].
    pub(crate) fn into_conn(self) -> PgConn {
        self.conn
    }
}

impl Plan {
    /// The parameters of a connection that tries `hosts[from..]` in order.
    fn params(&self, from: usize) -> Config {
        let rest = &self.hosts[from..];
        let join = |field: fn(&HostEntry) -> &str| -> String {
            rest.iter().map(field).collect::<Vec<_>>().join(",")
        };
        let mut params: Vec<(String, String)> = self
            .base
            .iter()
            .filter(|(k, _)| k != "load_balance_hosts")
            .cloned()
            .collect();
        params.push(("host".into(), join(|h| &h.host)));
        if rest.iter().any(|h| !h.hostaddr.is_empty()) {
            params.push(("hostaddr".into(), join(|h| &h.hostaddr)));
        }
        params.push(("port".into(), join(|h| &h.port)));
        if self.base.iter().any(|(k, _)| k == "load_balance_hosts") {
            // The order is already the one to use.
            params.push(("load_balance_hosts".into(), "disable".into()));
        }
        let mut config = Config::new();
        for (keyword, value) in &params {
            config.param(keyword, value);
        }
        config
    }

    /// Moves `current` to the first host at or after it that libpq's report matches (libpq
    /// only ever moves forward through the list).
    fn locate(&mut self, endpoint: &Endpoint) {
        let matches = |entry: &HostEntry| {
            let host = if !entry.host.is_empty() {
                entry.host == endpoint.host
            } else if !entry.hostaddr.is_empty() {
                entry.hostaddr == endpoint.host || entry.hostaddr == endpoint.addr
            } else {
                true // libpq's default host
            };
            host && (entry.port.is_empty() || entry.port == endpoint.port)
        };
        if let Some(i) = (self.current..self.hosts.len()).find(|&i| matches(&self.hosts[i])) {
            self.current = i;
        }
    }
}

/// Starts connecting with `params` (plus `client_encoding=UTF8`), the notice receiver
/// installed before the server can send anything.
fn start(config: &Config, notices: &Arc<NoticeState>) -> Result<PgConn> {
    let (keywords, values) = config.to_c_params()?;
    let mut keyword_ptrs: Vec<_> = keywords.iter().map(|k| k.as_ptr()).collect();
    let mut value_ptrs: Vec<_> = values.iter().map(|v| v.as_ptr()).collect();
    // Text is exchanged as UTF-8 whatever the environment (PGCLIENTENCODING) or a service
    // file says; a later keyword overrides an earlier one.
    keyword_ptrs.push(c"client_encoding".as_ptr());
    value_ptrs.push(c"UTF8".as_ptr());
    keyword_ptrs.push(std::ptr::null());
    value_ptrs.push(std::ptr::null());
    // Before libpq may open TLS: the passphrase hook global is written only once, first.
    crate::tls::install_passphrase_trampoline();
    // SAFETY: NULL-terminated arrays of NUL-terminated strings, alive for the call (libpq
    // copies them). expand_dbname = 0: a dbname is a name, not a conninfo.
    let ptr = unsafe { ffi::PQconnectStartParams(keyword_ptrs.as_ptr(), value_ptrs.as_ptr(), 0) };
    if ptr.is_null() {
        return Err(Error::client("libpq could not allocate a connection"));
    }
    // SAFETY: a new PGconn, owned from here on (PQfinish on every exit path).
    let conn = unsafe { PgConn::from_ptr(ptr) };
    // PQconnectStartParams has only opened the socket (and sent nothing the server could
    // answer yet): the receiver is in place before any notice can arrive.
    NoticeState::attach(notices, &conn);
    if conn.status() == ffi::ConnStatusType::CONNECTION_BAD {
        return Err(failed(&conn, conn.error_message()));
    }
    Ok(conn)
}

/// A failed connection's error, with what libpq knows about the password (and why pqlib's
/// OAuth hook refused, which libpq's message cannot say).
pub(crate) fn failed(conn: &PgConn, message: String) -> Error {
    #[cfg(libpq_18)]
    let message = match crate::oauth::take_refusal(conn.as_ptr()) {
        Some(reason) => format!(
            "{}\n(the OAuth bearer token hook {reason})\n",
            message.trim_end()
        ),
        None => message,
    };
    // SAFETY: the connection is alive.
    let (needs, used) = unsafe {
        (
            ffi::PQconnectionNeedsPassword(conn.as_ptr()) == 1,
            ffi::PQconnectionUsedPassword(conn.as_ptr()) == 1,
        )
    };
    Error::connect_failed(message, needs, used)
}

/// `raw` with libpq's report after each cut (the rest of that line and the tab-indented lines
/// under it) replaced by "timeout expired", as libpq's blocking connect words a timeout.
/// `abandoned`: the attempt at the end of `raw` timed out too (nothing follows its cut).
fn with_timeouts(raw: &str, cuts: &[usize], abandoned: bool) -> String {
    const EXPIRED: &str = "timeout expired\n";
    let mut out = String::with_capacity(raw.len() + EXPIRED.len());
    let mut pos = 0;
    for &cut in cuts {
        if cut < pos || cut > raw.len() || !raw.is_char_boundary(cut) {
            continue;
        }
        out.push_str(&raw[pos..cut]);
        out.push_str(EXPIRED);
        let rest = &raw[cut..];
        let mut skip = rest.find('\n').map_or(rest.len(), |i| i + 1);
        while rest[skip..].starts_with('\t') {
            skip += rest[skip..].find('\n').map_or(rest.len() - skip, |i| i + 1);
        }
        pos = cut + skip;
    }
    out.push_str(&raw[pos..]);
    if abandoned {
        out.push_str(EXPIRED);
    }
    out
}

/// The connection's options as libpq resolved them (`PQconninfo`): keyword and value pairs.
fn effective_options(conn: &PgConn) -> Vec<(String, String)> {
    // SAFETY: the connection is alive; the array is freed with PQconninfoFree below.
    let options = unsafe { ffi::PQconninfo(conn.as_ptr()) };
    let mut pairs = Vec::new();
    if options.is_null() {
        return pairs;
    }
    let mut option = options;
    // SAFETY: the array ends with an entry whose keyword is NULL; strings are copied out
    // before the array is freed.
    unsafe {
        while !(*option).keyword.is_null() {
            if let (Some(keyword), Some(value)) =
                (lossy_string((*option).keyword), lossy_string((*option).val))
            {
                pairs.push((keyword, value));
            }
            option = option.add(1);
        }
        ffi::PQconninfoFree(options);
    }
    pairs
}

fn option<'a>(options: &'a [(String, String)], keyword: &str) -> &'a str {
    options
        .iter()
        .find(|(k, _)| k == keyword)
        .map_or("", |(_, v)| v.as_str())
}

/// The hosts as libpq pairs up its comma-separated lists: a single port (or hostaddr)
/// applies to every host.
pub(crate) fn host_list(options: &[(String, String)]) -> Vec<HostEntry> {
    let split = |keyword: &str| -> Vec<String> {
        let value = option(options, keyword);
        if value.is_empty() {
            Vec::new()
        } else {
            value.split(',').map(str::to_owned).collect()
        }
    };
    let (hosts, addrs, ports) = (split("host"), split("hostaddr"), split("port"));
    let count = hosts.len().max(addrs.len());
    let pick = |list: &[String], i: usize| -> String {
        match list.len() {
            0 => String::new(),
            1 => list[0].clone(),
            _ => list.get(i).cloned().unwrap_or_default(),
        }
    };
    (0..count)
        .map(|i| HostEntry {
            host: pick(&hosts, i),
            hostaddr: pick(&addrs, i),
            port: pick(&ports, i),
        })
        .collect()
}

/// libpq's reading of `connect_timeout`: an integer (surrounding white space allowed); 0 or
/// negative means none. Before libpq 17, which measures it in microseconds, less than 2
/// seconds counts as 2 (whole-second clocks could otherwise give up at once). A value libpq
/// would reject is an error with libpq's message.
pub(crate) fn connect_timeout(value: &str) -> Result<Option<Duration>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let seconds: i32 = value.trim().parse().map_err(|_| {
        format!(
            "invalid integer value \"{}\" for connection option \"connect_timeout\"\n",
            value.trim_start()
        )
    })?;
    if seconds <= 0 {
        return Ok(None);
    }
    #[cfg(not(libpq_17))]
    let seconds = seconds.max(2);
    Ok(Some(Duration::from_secs(seconds as u64)))
}

/// A Fisher-Yates shuffle seeded from the standard library's per-process random hash keys.
fn shuffle<T>(items: &mut [T]) {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    for i in (1..items.len()).rev() {
        let j = (state.hash_one(i) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Waits, blocking the thread, until `fd` is ready for `interest`; `false` if `deadline`
/// passed first.
#[cfg(unix)]
pub(crate) fn wait_blocking(
    fd: RawSocket,
    interest: Interest,
    deadline: Option<Instant>,
) -> Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Rounded up, so that the deadline has passed when poll times out.
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut pollfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call; `fd` is libpq's open socket.
        let n = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        if n > 0 {
            // Ready, or an error/hang-up that PQconnectPoll will report.
            return Ok(true);
        }
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::connect(format!("waiting for the socket: {error}")));
        }
        // n == 0: timed out; the loop checks the deadline again.
    }
}

/// Waits, blocking the thread, until `fd` is ready for `interest`; `false` if `deadline`
/// passed first.
#[cfg(all(not(unix), libpq_17))]
pub(crate) fn wait_blocking(
    fd: RawSocket,
    interest: Interest,
    deadline: Option<Instant>,
) -> Result<bool> {
    loop {
        let end_time = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // SAFETY: no arguments; reads the clock.
                let now = unsafe { ffi::PQgetCurrentTimeUSec() };
                now + left.as_micros().min(i64::MAX as u128 / 2) as ffi::pg_usec_time_t
            }
        };
        let (read, write) = match interest {
            Interest::Read => (1, 0),
            Interest::Write => (0, 1),
        };
        // SAFETY: `fd` is libpq's open socket.
        let n = unsafe { ffi::PQsocketPoll(fd, read, write, end_time) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::connect(format!("waiting for the socket: {error}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_replace_the_shutdown_report() {
        let p1 = "connection to server at \"127.0.0.1\", port 1 failed: ";
        let junk = "server closed the connection unexpectedly\n\tThis probably means\n\tbefore.\n";
        let p2 = "connection to server at \"127.0.0.1\", port 2 failed: Connection refused\n\
                  \tIs the server running on that host?\n";
        let raw = format!("{p1}{junk}{p2}");
        assert_eq!(
            with_timeouts(&raw, &[p1.len()], false),
            format!("{p1}timeout expired\n{p2}")
        );
        assert_eq!(
            with_timeouts(p1, &[], true),
            format!("{p1}timeout expired\n")
        );
        assert_eq!(with_timeouts(&raw, &[], false), raw);
        // A cut past the end (the message was reset) is ignored.
        assert_eq!(with_timeouts("x\n", &[10], false), "x\n");
    }

    #[test]
    fn connect_timeout_as_libpq_reads_it() {
        assert_eq!(connect_timeout(""), Ok(None));
        assert_eq!(connect_timeout("0"), Ok(None));
        assert_eq!(connect_timeout("-5"), Ok(None));
        assert_eq!(connect_timeout(" 10 "), Ok(Some(Duration::from_secs(10))));
        #[cfg(not(libpq_17))]
        assert_eq!(connect_timeout("1"), Ok(Some(Duration::from_secs(2))));
        #[cfg(libpq_17)]
        assert_eq!(connect_timeout("1"), Ok(Some(Duration::from_secs(1))));
        let e = connect_timeout("ten").unwrap_err();
        assert!(e.contains("invalid integer value \"ten\""), "{e}");
        assert!(connect_timeout("99999999999").is_err());
    }

    #[test]
    fn host_list_pairs_ports_and_addresses() {
        let options = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let hosts = host_list(&options(&[("host", "a,b"), ("port", "5432")]));
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].host, "b");
        assert_eq!(hosts[1].port, "5432");
        let hosts = host_list(&options(&[
            ("hostaddr", "10.0.0.1,10.0.0.2"),
            ("port", "1,2"),
        ]));
        assert_eq!(hosts[1].hostaddr, "10.0.0.2");
        assert_eq!(hosts[1].port, "2");
        assert!(hosts[0].host.is_empty());
    }

    #[test]
    fn plan_params_list_the_remaining_hosts_in_order() {
        let hosts = vec![
            HostEntry {
                host: "a".into(),
                hostaddr: String::new(),
                port: "1".into(),
            },
            HostEntry {
                host: "b".into(),
                hostaddr: String::new(),
                port: "2".into(),
            },
            HostEntry {
                host: "c".into(),
                hostaddr: String::new(),
                port: "3".into(),
            },
        ];
        let mut plan = Plan {
            base: vec![
                ("user".into(), "u".into()),
                ("load_balance_hosts".into(), "random".into()),
            ],
            hosts,
            current: 0,
        };
        let params = plan.params(1);
        let get = |k: &str| params.get(k);
        assert_eq!(get("host"), Some("b,c"));
        assert_eq!(get("port"), Some("2,3"));
        assert_eq!(get("hostaddr"), None);
        assert_eq!(get("load_balance_hosts"), Some("disable"));
        assert_eq!(get("user"), Some("u"));
        plan.locate(&Endpoint {
            host: "c".into(),
            port: "3".into(),
            addr: "10.1.1.1".into(),
        });
        assert_eq!(plan.current, 2);
        // Never backwards.
        plan.locate(&Endpoint {
            host: "a".into(),
            port: "1".into(),
            addr: String::new(),
        });
        assert_eq!(plan.current, 2);
    }
}
