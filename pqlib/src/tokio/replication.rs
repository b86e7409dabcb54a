//! The async replication connection and its COPY BOTH stream: the blocking types' commands
//! and stream core, waiting on the socket through tokio's reactor instead of `poll(2)`.
//!
//! The connection stays in libpq's non-blocking mode, so no call here waits in libpq. The
//! keeper thread of `replication::stream` answers the server while the stream is not polled,
//! exactly as for the blocking stream.

use std::ffi::CString;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use foreign_types::ForeignType;
use futures_core::Stream;
use pqlib_sys as ffi;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::connect::handshake;
use super::driver::{Socket, readable_now};
use crate::error::{Error, Result};
use crate::handle::PgResult;
use crate::notice::NoticeState;
use crate::replication::commands::{self, Row};
use crate::replication::stream::{Step, StreamCore};
use crate::replication::{
    CreatedSlot, Lsn, ReplicationConnection, ReplicationMessage, ReplicationMode, SlotKind,
    SlotPosition, SystemIdentity,
};
use crate::{Config, SimpleQueryMessage};

/// A replication connection for async code: what
/// [`ReplicationConnection`](crate::replication::ReplicationConnection) is, without blocking
/// a runtime thread.
///
/// ```no_run
/// # async fn run() -> pqlib::Result<()> {
/// use pqlib::replication::{Lsn, ReplicationMode};
/// use pqlib::tokio::ReplicationClient;
///
/// let config: pqlib::Config = "host=localhost user=postgres dbname=app".parse()?;
/// let mut client = ReplicationClient::connect(&config, ReplicationMode::Logical).await?;
/// let system = client.identify_system().await?;
/// println!("at {}", system.wal_position);
/// # Ok(()) }
/// ```
pub struct ReplicationClient {
    inner: ReplicationConnection,
    socket: AsyncFd<Socket>,
}

impl ReplicationClient {
    /// Connects with `config` plus the `replication` option for `mode`, without blocking.
    ///
    /// ```no_run
    /// # async fn run() -> pqlib::Result<()> {
    /// use pqlib::replication::ReplicationMode;
    /// let config: pqlib::Config = "host=localhost user=postgres".parse()?;
    /// let client = pqlib::tokio::ReplicationClient::connect(&config, ReplicationMode::Physical).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQconnectStartParams")]
    #[doc(alias = "PQconnectPoll")]
    pub async fn connect(config: &Config, mode: ReplicationMode) -> Result<ReplicationClient> {
        config.validate()?;
        let mut config = config.clone();
        config.param("replication", mode.conninfo_value());
        // Asked for at startup, so that nothing has to be set (and waited for) afterwards.
        config.param("client_encoding", "UTF8");
        let notices = NoticeState::new(
            config
                .notice_callback
                .as_ref()
                .map(crate::notice::NoticeCallback::handler),
        );
        let password = config
            .get("password")
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let redact = |e: Error| match &password {
            Some(password) => e.redact(password),
            None => e,
        };
        let (conn, socket) = handshake(
            &config,
            notices.clone(),
            Interest::READABLE | Interest::WRITABLE,
        )
        .await
        .map_err(redact)?;
        let conn = crate::Connection::from_connected(conn, notices)?;
        let mut client = ReplicationClient {
            inner: ReplicationConnection::from_connection(conn, mode),
            socket,
        };
        client.nonblocking()?;
        Ok(client)
    }

    /// The mode this connection was made in.
    pub fn mode(&self) -> ReplicationMode {
        self.inner.mode()
    }

    /// The server's version number (`PQserverVersion`).
    #[doc(alias = "PQserverVersion")]
    pub fn server_version(&self) -> u32 {
        self.inner.server_version()
    }

    /// `IDENTIFY_SYSTEM`; see
    /// [`ReplicationConnection::identify_system`](crate::replication::ReplicationConnection::identify_system).
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// let timeline = client.identify_system().await?.timeline;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "IDENTIFY_SYSTEM")]
    #[doc(alias = "PQsendQuery")]
    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        commands::system_identity(&self.one_row(commands::IDENTIFY_SYSTEM).await?)
    }

    /// `CREATE_REPLICATION_SLOT`; see
    /// [`ReplicationConnection::create_replication_slot`](crate::replication::ReplicationConnection::create_replication_slot).
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// use pqlib::replication::{SlotKind, SnapshotAction};
    /// let kind = SlotKind::Logical { plugin: "pgoutput".into(), snapshot: SnapshotAction::Nothing };
    /// let slot = client.create_replication_slot("app_slot", &kind, false).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "CREATE_REPLICATION_SLOT")]
    #[doc(alias = "PQsendQuery")]
    pub async fn create_replication_slot(
        &mut self,
        name: &str,
        kind: &SlotKind,
        temporary: bool,
    ) -> Result<CreatedSlot> {
        let sql = commands::create_slot(name, kind, temporary, self.server_version())?;
        commands::created_slot(&self.one_row(&sql).await?)
    }

    /// `DROP_REPLICATION_SLOT [WAIT]`.
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// client.drop_replication_slot("app_slot", true).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "DROP_REPLICATION_SLOT")]
    #[doc(alias = "PQsendQuery")]
    pub async fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<()> {
        let sql = commands::drop_slot(name, wait)?;
        self.simple_query(&sql).await.map(drop)
    }

    /// `READ_REPLICATION_SLOT` (server 15+).
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// if let Some(slot) = client.read_replication_slot("app_slot").await? {
    ///     println!("{:?}", slot.restart_lsn);
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "READ_REPLICATION_SLOT")]
    #[doc(alias = "PQsendQuery")]
    pub async fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotPosition>> {
        let sql = commands::read_slot(name, self.server_version())?;
        commands::slot_position(&self.one_row(&sql).await?)
    }

    /// `TIMELINE_HISTORY`: the history file's name and contents.
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// let (name, content) = client.timeline_history(2).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "TIMELINE_HISTORY")]
    #[doc(alias = "PQsendQuery")]
    pub async fn timeline_history(&mut self, timeline: u32) -> Result<(String, String)> {
        let sql = commands::timeline_history(timeline);
        commands::history_file(&self.one_row(&sql).await?)
    }

    /// Runs SQL (logical connections) or a replication command with the simple query
    /// protocol. `START_REPLICATION` is an error of kind
    /// [`BadInput`](crate::error::ErrorKind::BadInput) (start a stream with the `start_*`
    /// methods); any other text that starts a COPY is refused by closing the connection.
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// let messages = client.simple_query("SELECT 1").await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQsendQuery")]
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        commands::refuse_stream(sql)?;
        self.send(sql)?;
        self.flush().await?;
        let mut messages = Vec::new();
        let mut error = None;
        while let Some(result) = self.next_result().await? {
            let conn = &mut self.inner.conn;
            if crate::copy_discard::is_copy(result.status()) {
                drop(result);
                return Err(conn.poison(
                    "simple_query started a COPY on an async replication connection; use \
                     start_logical_replication or start_physical_replication",
                ));
            }
            match conn.check_each(result.into_ptr()) {
                Ok(result) if error.is_none() => {
                    crate::simple_query::push_messages(&mut messages, &result);
                }
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        self.inner.conn.after_results()?;
        match error {
            Some(error) => Err(error),
            None => Ok(messages),
        }
    }

    /// `START_REPLICATION SLOT … LOGICAL`; see
    /// [`ReplicationConnection::start_logical_replication`](crate::replication::ReplicationConnection::start_logical_replication).
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// use pqlib::replication::Lsn;
    /// let stream = client
    ///     .start_logical_replication("app_slot", Lsn::INVALID, &[("proto_version", "1"), ("publication_names", "app")])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "START_REPLICATION")]
    #[doc(alias = "PQgetCopyData")]
    pub async fn start_logical_replication<N: AsRef<str>, V: AsRef<str>>(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(N, V)],
    ) -> Result<ReplicationStream<'_>> {
        if self.mode() != ReplicationMode::Logical {
            return Err(commands::not_logical());
        }
        if self.inner.logical_streamed {
            return Err(commands::second_logical_stream());
        }
        let sql = commands::start_logical(slot, start, options)?;
        self.start(&sql, false).await
    }

    /// `START_REPLICATION [SLOT …] PHYSICAL`; see
    /// [`ReplicationConnection::start_physical_replication`](crate::replication::ReplicationConnection::start_physical_replication).
    ///
    /// ```no_run
    /// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
    /// let start = client.identify_system().await?.wal_position;
    /// let stream = client.start_physical_replication(None, start, None).await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "START_REPLICATION")]
    #[doc(alias = "PQgetCopyData")]
    pub async fn start_physical_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<u32>,
    ) -> Result<ReplicationStream<'_>> {
        let sql = commands::start_physical(slot, start, timeline)?;
        self.start(&sql, true).await
    }

    async fn start(&mut self, sql: &str, physical: bool) -> Result<ReplicationStream<'_>> {
        self.send(sql)?;
        self.flush().await?;
        let Some(first) = self.next_result().await? else {
            return Err(self.inner.conn.connection_error());
        };
        if first.status() != ffi::ExecStatusType::PGRES_COPY_BOTH {
            // Read to the end first, so that the error leaves the connection idle.
            while self.next_result().await?.is_some() {}
        }
        let core = self.inner.begin_stream(first, sql, physical)?;
        Ok(ReplicationStream {
            client: self,
            core,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }

    async fn one_row(&mut self, sql: &str) -> Result<Row> {
        let messages = self.simple_query(sql).await?;
        commands::first_row(messages, sql)
    }

    /// Queues `sql` on libpq (after a leaked stream's keeper is stopped).
    fn send(&mut self, sql: &str) -> Result<()> {
        self.inner.stop_keeper();
        self.nonblocking()?;
        let conn = &mut self.inner.conn;
        let text = CString::new(sql).map_err(|e| Error::nul_byte("the SQL text", e))?;
        conn.before_query()?;
        conn.copies_left = crate::copy_discard::max_copies(sql);
        // SAFETY: the connection is alive, idle and ours; `text` is NUL-terminated for the
        // call (libpq copies it).
        if unsafe { ffi::PQsendQuery(conn.as_ptr(), text.as_ptr()) } != 1 {
            return Err(conn.connection_error());
        }
        Ok(())
    }

    fn nonblocking(&mut self) -> Result<()> {
        let conn = &mut self.inner.conn;
        // SAFETY: the connection is alive and ours.
        if unsafe { ffi::PQsetnonblocking(conn.as_ptr(), 1) } != 0 {
            return Err(conn.connection_error());
        }
        Ok(())
    }

    /// Sends what libpq holds, waiting for the socket as needed.
    async fn flush(&mut self) -> Result<()> {
        loop {
            let conn = &mut self.inner.conn;
            // SAFETY: the connection is alive and ours.
            match unsafe { ffi::PQflush(conn.as_ptr()) } {
                0 => return Ok(()),
                1 => {
                    let mut guard = self.socket.writable().await.map_err(socket_error)?;
                    guard.clear_ready();
                }
                _ => return Err(conn.connection_error()),
            }
        }
    }

    /// The next result of the request in flight, once it has arrived; `None` at its end.
    async fn next_result(&mut self) -> Result<Option<PgResult>> {
        loop {
            let ptr = self.inner.conn.as_ptr();
            // SAFETY: the connection is alive and ours.
            if unsafe { ffi::PQisBusy(ptr) } == 0 {
                // SAFETY: as above; not busy, so this does not wait.
                return Ok(PgResult::from_returned(unsafe { ffi::PQgetResult(ptr) }));
            }
            let mut guard = self.socket.readable().await.map_err(socket_error)?;
            // SAFETY: as above.
            if unsafe { ffi::PQconsumeInput(ptr) } == 0 {
                return Err(self.inner.conn.connection_error());
            }
            if !readable_now(self.socket.get_ref()) {
                guard.clear_ready();
            }
        }
    }
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The COPY BOTH stream of an async replication connection: a [`Stream`] of
/// [`ReplicationMessage`]s, ending (`None`) when the server or [`stop`](ReplicationStream::stop)
/// ends it. Everything the blocking
/// [`ReplicationStream`](crate::replication::ReplicationStream) says about status updates,
/// confirmation and timeouts holds here; a consumer that does not poll for a while is kept
/// alive the same way.
///
/// Dropping the stream before its end closes the connection (ending it by the book needs
/// `.await`): call [`stop`](ReplicationStream::stop) to keep the connection.
///
/// ```no_run
/// # async fn run(client: &mut pqlib::tokio::ReplicationClient) -> pqlib::Result<()> {
/// use pqlib::replication::{Lsn, ReplicationMessage};
///
/// let mut stream = client
///     .start_logical_replication("app_slot", Lsn::INVALID, &[("include-xids", "0")])
///     .await?;
/// while let Some(message) = stream.next().await {
///     if let ReplicationMessage::XLogData(data) = message? {
///         println!("{}", String::from_utf8_lossy(data.data()));
///         stream.confirm(data.wal_start());
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ReplicationStream<'c> {
    client: &'c mut ReplicationClient,
    core: StreamCore,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl ReplicationStream<'_> {
    /// The next message, or `None` at the end; the same as `StreamExt::next`.
    ///
    /// ```no_run
    /// # async fn run(stream: &mut pqlib::tokio::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// while let Some(message) = stream.next().await {
    ///     println!("{:?}", message?);
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQgetCopyData")]
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Option<Result<ReplicationMessage>> {
        poll_fn(|cx| self.poll_step(cx)).await
    }

    /// Records that everything up to `lsn` is processed and durably stored.
    ///
    /// ```no_run
    /// # fn demo(stream: &mut pqlib::tokio::ReplicationStream<'_>, lsn: pqlib::replication::Lsn) {
    /// stream.confirm(lsn);
    /// # }
    /// ```
    pub fn confirm(&mut self, lsn: Lsn) {
        self.core.confirm(lsn);
    }

    /// The position last confirmed.
    pub fn confirmed(&self) -> Lsn {
        self.core.confirmed()
    }

    /// The end of what has been received so far.
    pub fn received(&self) -> Lsn {
        self.core.received()
    }

    /// Sends a status update now.
    ///
    /// ```no_run
    /// # fn demo(stream: &mut pqlib::tokio::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// stream.send_status(true)?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQputCopyData")]
    pub fn send_status(&mut self, reply_requested: bool) -> Result<()> {
        self.core
            .send_status(&mut self.client.inner.conn, reply_requested)
    }

    /// How often a status update is sent unasked (10 s by default).
    pub fn set_status_interval(&mut self, interval: Duration) {
        self.core.set_status_interval(interval);
    }

    /// How long the server may stay silent before the connection counts as lost (60 s).
    pub fn set_server_timeout(&mut self, timeout: Duration) {
        self.core.set_server_timeout(timeout);
    }

    /// For a physical stream the server ended at the end of a timeline: the next one.
    pub fn next_timeline(&self) -> Option<(u32, Lsn)> {
        self.core.next_timeline()
    }

    /// Ends the stream by the book (CopyDone both ways, the command's result) and leaves
    /// the connection usable; returns the next timeline if the server ended a physical
    /// stream at the end of one.
    ///
    /// ```no_run
    /// # async fn run(stream: pqlib::tokio::ReplicationStream<'_>) -> pqlib::Result<()> {
    /// stream.stop().await?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "PQputCopyEnd")]
    pub async fn stop(mut self) -> Result<Option<(u32, Lsn)>> {
        self.core.begin_stop();
        while let Some(message) = self.next().await {
            message?;
        }
        Ok(self.core.next_timeline())
    }

    /// Steps the core until a message, the end, or nothing to do but wait (registered with
    /// the reactor and the timer).
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ReplicationMessage>>> {
        loop {
            let conn = &mut self.client.inner.conn;
            let (write, until) = match self.core.step(conn) {
                Ok(Step::Message(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(Step::Ended) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Step::Wait { write, until }) => (write, until),
            };
            let pending = match self.core.before_wait(conn) {
                Ok((pending, _)) => pending,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            match self.client.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    if let Err(e) = self.core.consume_input(&mut self.client.inner.conn) {
                        return Poll::Ready(Some(Err(e)));
                    }
                    if !readable_now(self.client.socket.get_ref()) {
                        guard.clear_ready();
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(socket_error(e)))),
                Poll::Pending => {}
            }
            if write || pending {
                match self.client.socket.poll_write_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(socket_error(e)))),
                    Poll::Pending => {}
                }
            }
            self.timer.as_mut().reset(until.into());
            if self.timer.as_mut().poll(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Stream for ReplicationStream<'_> {
    type Item = Result<ReplicationMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_step(cx)
    }
}

impl Drop for ReplicationStream<'_> {
    fn drop(&mut self) {
        let conn = &mut self.client.inner.conn;
        if !self.core.is_ended() && !conn.is_lost() {
            // Ending by the book would have to wait; closing keeps the protocol state honest.
            conn.poison("a replication stream was dropped before its end");
        }
        self.client.inner.finish_stream();
    }
}

impl std::fmt::Debug for ReplicationStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("ended", &self.core.is_ended())
            .finish_non_exhaustive()
    }
}

fn socket_error(e: std::io::Error) -> Error {
    Error::closed(format!("waiting for the replication socket: {e}"))
}
