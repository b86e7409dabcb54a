//! Connecting without blocking: `PQconnectStartParams` + `PQconnectPoll`, waiting on the socket
//! through tokio. libpq may switch sockets while it tries hosts and addresses in turn, so the
//! socket is looked up again after every step.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foreign_types::ForeignType;
use pqlib_sys as ffi;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Client;
use super::driver::{Connection, Socket};
use crate::Config;
use crate::error::{DbError, Error, Result};
use crate::handle::{PgConn, lossy_string};
use crate::notice::NoticeState;

/// Connects with a libpq connection string (`key=value` pairs or a `postgresql://` URI),
/// with libpq's environment, password-file and service-file semantics, without blocking the
/// runtime.
///
/// Returns the [`Client`] to query with and the [`Connection`] that does the I/O: spawn it.
///
/// ```no_run
/// # async fn run() -> Result<(), pqlib::Error> {
/// let (client, connection) = pqlib::tokio::connect("host=localhost user=postgres").await?;
/// tokio::spawn(async move {
///     if let Err(e) = connection.await {
///         eprintln!("connection error: {e}");
///     }
/// });
/// let n: i32 = client.query_one("SELECT $1::int4 + 1", &[&41i32]).await?.get(0);
/// # Ok(()) }
/// ```
#[doc(alias = "PQconnectStartParams")]
#[doc(alias = "PQconnectPoll")]
pub async fn connect(params: &str) -> Result<(Client, Connection)> {
    let config: Config = params.parse()?;
    connect_config(&config).await
}

/// Connects with the parameters of a [`Config`]; see [`connect`].
///
/// ```no_run
/// # async fn run() -> Result<(), pqlib::Error> {
/// let mut config = pqlib::Config::new();
/// config.host("localhost").user("postgres");
/// let (client, connection) = pqlib::tokio::connect_config(&config).await?;
/// # Ok(()) }
/// ```
#[doc(alias = "PQconnectStartParams")]
#[doc(alias = "PQconnectPoll")]
pub async fn connect_config(config: &Config) -> Result<(Client, Connection)> {
    config.validate()?;
    let password = config
        .get("password")
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    connect_inner(config).await.map_err(|e| match &password {
        Some(password) => e.redact(password),
        None => e,
    })
}

async fn connect_inner(config: &Config) -> Result<(Client, Connection)> {
    let conn = start(config)?;
    // The effective settings, with environment variables and service files applied.
    let effective = effective_options(&conn);
    let timeout = connect_timeout(&effective);
    let hosts = host_list(&effective);
    if timeout.is_none() || hosts.len() < 2 {
        return finish(conn, timeout).await;
    }
    // libpq moves to the next host on a timeout only inside its blocking connect, so with a
    // timeout and several hosts, each host is tried on its own, in libpq's order.
    drop(conn);
    let mut hosts = hosts;
    if option(&effective, "load_balance_hosts") == "random" {
        shuffle(&mut hosts);
    }
    let mut failures = Vec::new();
    for (host, hostaddr, port) in hosts {
        let mut single = Config::new();
        for (keyword, value) in &effective {
            if !matches!(
                keyword.as_str(),
                "host" | "hostaddr" | "port" | "load_balance_hosts"
            ) {
                single.param(keyword, value);
            }
        }
        single
            .param("host", &host)
            .param("hostaddr", &hostaddr)
            .param("port", &port);
        match finish(start(&single)?, timeout).await {
            Ok(connected) => return Ok(connected),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(Error::connect(failures.join("\n")))
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

/// Starts connecting; the handshake is `finish`'s.
fn start(config: &Config) -> Result<PgConn> {
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
    // copies them); expand_dbname = 0 as in the blocking connect.
    let ptr = unsafe { ffi::PQconnectStartParams(keyword_ptrs.as_ptr(), value_ptrs.as_ptr(), 0) };
    if ptr.is_null() {
        return Err(Error::client("libpq could not allocate a connection"));
    }
    // SAFETY: a new PGconn, owned from here on (PQfinish on every exit path).
    let conn = unsafe { PgConn::from_ptr(ptr) };
    if conn.status() == ffi::ConnStatusType::CONNECTION_BAD {
        return Err(Error::connect(conn.error_message()));
    }
    Ok(conn)
}

async fn finish(conn: PgConn, timeout: Option<Duration>) -> Result<(Client, Connection)> {
    // Installed before the handshake, so notices sent during startup are caught too.
    let notices = Arc::new(Mutex::new(VecDeque::<DbError>::new()));
    let notice_state = NoticeState::install(&conn);
    {
        let queue = notices.clone();
        notice_state.set_handler(Box::new(move |notice: &DbError| {
            queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(notice.clone());
        }));
    }
    let (conn, socket) = handshake(conn, timeout).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let client = Client::new(
        sender,
        notice_state.clone(),
        crate::CancelToken::for_conn(&conn),
    );
    let connection = Connection::new(conn, socket, receiver, notice_state, notices)?;
    Ok((client, connection))
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

/// (host, hostaddr, port) for each host, as libpq pairs up its comma-separated lists: a
/// single port (or hostaddr) applies to every host.
fn host_list(options: &[(String, String)]) -> Vec<(String, String, String)> {
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
        .map(|i| (pick(&hosts, i), pick(&addrs, i), pick(&ports, i)))
        .collect()
}

/// The effective `connect_timeout`: libpq applies it only in its blocking connect, so the
/// handshake here applies it itself, per host as libpq does. Values below 2 (other than 0)
/// count as 2 seconds, as in libpq.
fn connect_timeout(options: &[(String, String)]) -> Option<Duration> {
    let seconds: i64 = option(options, "connect_timeout").trim().parse().ok()?;
    (seconds > 0).then(|| Duration::from_secs(seconds.max(2) as u64))
}

/// Runs `PQconnectPoll` to completion, waiting for the socket in between. The socket is
/// registered with the reactor only while waiting: libpq may close it (and open another) in
/// any `PQconnectPoll` call.
///
/// The future owns the connection and holds no raw pointer across an await, so it is `Send`.
async fn handshake(conn: PgConn, timeout: Option<Duration>) -> Result<(PgConn, AsyncFd<Socket>)> {
    let mut attempt_started = tokio::time::Instant::now();
    let mut attempt_socket = -1;
    let mut timed_out = false;
    loop {
        // SAFETY: the connection is alive and still connecting.
        let status = unsafe { ffi::PQconnectPoll(conn.as_ptr()) };
        // SAFETY: as above.
        let fd = unsafe { ffi::PQsocket(conn.as_ptr()) };
        if status == ffi::PostgresPollingStatusType::PGRES_POLLING_FAILED || fd < 0 {
            let message = conn.error_message();
            return Err(Error::connect(match (timed_out, timeout) {
                (true, Some(limit)) => {
                    format!("timeout expired after {}s: {message}", limit.as_secs())
                }
                _ => message,
            }));
        }
        if fd != attempt_socket {
            // A new socket: libpq moved on to the next host or address, with its own timeout.
            attempt_socket = fd;
            attempt_started = tokio::time::Instant::now();
        }
        let wait = match status {
            ffi::PostgresPollingStatusType::PGRES_POLLING_OK => {
                let socket = register(fd)?;
                return Ok((conn, socket));
            }
            ffi::PostgresPollingStatusType::PGRES_POLLING_READING => Interest::READABLE,
            ffi::PostgresPollingStatusType::PGRES_POLLING_WRITING => Interest::WRITABLE,
            other => {
                return Err(Error::client(format!(
                    "unexpected connect poll status {}",
                    other.0
                )));
            }
        };
        let socket = register(fd)?;
        let ready = async {
            socket
                .ready(wait)
                .await
                .map(drop)
                .map_err(|e| Error::connect(format!("waiting for the socket: {e}")))
        };
        match timeout {
            None => ready.await?,
            Some(limit) => {
                if tokio::time::timeout_at(attempt_started + limit, ready)
                    .await
                    .is_err()
                {
                    // Time is up for this host: make its socket fail, so that libpq goes on
                    // to the next host or address (or reports the failure), as its blocking
                    // connect does.
                    // SAFETY: `fd` is libpq's open socket; shutting it down (not closing it)
                    // leaves the descriptor for libpq to close.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    attempt_socket = -1;
                    timed_out = true;
                }
            }
        }
        // Deregistered here, before libpq runs again and may close the descriptor.
        drop(socket);
    }
}

/// Registers a duplicate of libpq's socket with the reactor. Owning its own descriptor, the
/// registration can never outlive it, nor (if libpq closes its socket and the number is
/// reused) deregister someone else's descriptor that got the same number.
fn register(fd: std::os::fd::RawFd) -> Result<AsyncFd<Socket>> {
    let socket = Socket::duplicate(fd)
        .map_err(|e| Error::connect(format!("duplicating the socket: {e}")))?;
    // SAFETY: the descriptor is `socket`'s own (a dup), open until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::WRITABLE) }
        .map_err(|e| Error::connect(format!("registering the socket: {}", e.into_parts().1)))
}
