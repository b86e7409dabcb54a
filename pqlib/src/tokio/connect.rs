//! Connecting without blocking: the steps of `crate::connect` (`PQconnectStartParams` +
//! `PQconnectPoll`, `connect_timeout` per host), waiting on the socket through tokio. libpq
//! may switch sockets while it tries hosts and addresses in turn, so the socket is looked up
//! again after every step.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use foreign_types::ForeignType;
use pqlib_sys as ffi;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Client;
use super::driver::{Connection, Driver, Socket};
use crate::Config;
use crate::connect::{Connector, Interest as ConnectInterest, RawSocket, Step};
use crate::error::{DbError, Error, Result};
use crate::handle::PgConn;
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
    // Installed before the handshake, so notices sent during startup are caught too. They
    // are queued for the connection task, which hands them to the config's callback or
    // returns them from `poll_message`.
    let notices = Arc::new(Mutex::new(VecDeque::<DbError>::new()));
    let queue = notices.clone();
    let notice_state = NoticeState::new(Some(Box::new(move |notice: &DbError| {
        queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(notice.clone());
    })));
    // Reads only: the driver registers for writability while the socket is full (see
    // `Driver::poll_flush`).
    let (conn, socket) = handshake(config, notice_state.clone(), Interest::READABLE).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let cancel = crate::CancelToken::for_conn(&conn);
    let driver = Driver::new(
        conn,
        socket,
        receiver,
        notice_state.clone(),
        notices,
        config.notice_callback.clone(),
    )?;
    let (connection, driver) = Connection::new(driver);
    let client = Client::new(sender, driver, notice_state, cancel, config.prepare_policy);
    Ok((client, connection))
}

/// libpq's connection steps, waiting on the socket through the reactor: the connected
/// `PGconn` and its socket, registered for `interest`.
pub(crate) async fn handshake(
    config: &Config,
    notices: Arc<NoticeState>,
    interest: Interest,
) -> Result<(PgConn, AsyncFd<Socket>)> {
    let mut connector = Connector::start(config, notices)?;
    let mut expired = false;
    loop {
        match connector.poll(expired)? {
            Step::Ready => {
                let conn = connector.into_conn();
                // SAFETY: the connection is alive and connected.
                let fd = unsafe { ffi::PQsocket(conn.as_ptr()) };
                let socket = register(fd, interest)?;
                return Ok((conn, socket));
            }
            Step::Wait {
                fd,
                interest,
                deadline,
            } => expired = !wait(fd, interest, deadline).await?,
        }
    }
}

/// Waits for libpq's socket through the reactor; `false` if `deadline` passed first. The
/// socket is registered only while waiting: libpq may close it (and open another) in any
/// `PQconnectPoll` call. The future holds no raw pointer, so it is `Send`.
async fn wait(fd: RawSocket, interest: ConnectInterest, deadline: Option<Instant>) -> Result<bool> {
    let interest = match interest {
        ConnectInterest::Read => Interest::READABLE,
        ConnectInterest::Write => Interest::WRITABLE,
    };
    let socket = register(fd, interest)?;
    let ready = async {
        socket
            .ready(interest)
            .await
            .map(drop)
            .map_err(|e| Error::connect(format!("waiting for the socket: {e}")))
    };
    let ready = match deadline {
        None => ready.await.map(|()| true),
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), ready).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        },
    };
    // Deregistered here, before libpq runs again and may close the descriptor.
    drop(socket);
    ready
}

/// Registers a duplicate of libpq's socket with the reactor for `interest`. Owning its own
/// descriptor, the registration can never outlive it, nor (if libpq closes its socket and the
/// number is reused) deregister someone else's descriptor that got the same number.
fn register(fd: std::os::fd::RawFd, interest: Interest) -> Result<AsyncFd<Socket>> {
    Socket::register(fd, interest).map_err(|e| Error::connect(format!("{e}")))
}
