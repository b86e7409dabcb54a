//! The end of a session asked for by [`Client::close`](crate::tokio::Client::close).

use foreign_types::ForeignType;
use pqlib_sys as ffi;
use tokio::sync::oneshot;

use super::{Driver, Reply};
use crate::error::{Error, Result};

impl Driver {
    /// Ends the session at a [`Work::Close`], with nothing in flight (every request queued
    /// before it has been answered): answers it with whether the session can end cleanly,
    /// fails every request queued after it with `Closed` and refuses new ones. The future
    /// then resolves (with the connection's error if it was broken), and dropping it runs
    /// `PQfinish`, which sends Terminate.
    pub(super) fn close_session(&mut self, reply: oneshot::Sender<Reply>) -> Result<()> {
        let outcome = self.clean_end();
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(Error::closed(
                "the connection was closed by Client::close",
            )));
        }
        self.clients_gone = true;
        let _ = reply.send(outcome.map(|()| Vec::new()));
        if self.is_bad() {
            return Err(self.connection_error());
        }
        Ok(())
    }

    /// Whether the idle session is in a state to end cleanly (see `Client::close`).
    fn clean_end(&mut self) -> Result<()> {
        let ptr = self.conn.as_ptr();
        // What the server sent since the last answer: a session it ended shows as a FATAL
        // error and then the end of the socket. Each call reads what is there without waiting.
        for _ in 0..4 {
            // SAFETY: the connection is alive; non-blocking, so this takes what is there.
            if unsafe { ffi::PQconsumeInput(ptr) } == 0 {
                break;
            }
        }
        if self.is_bad() {
            return Err(Error::closed(format!(
                "the server had already ended the session: {}",
                self.conn.error_message().trim_end()
            )));
        }
        // SAFETY: the connection is alive.
        let status = unsafe { ffi::PQtransactionStatus(ptr) };
        if matches!(
            status,
            ffi::PGTransactionStatusType::PQTRANS_INTRANS
                | ffi::PGTransactionStatusType::PQTRANS_INERROR
        ) {
            return Err(Error::client(
                "a transaction was still open; closing rolled it back",
            ));
        }
        // SAFETY: the connection is alive; in non-blocking mode PQflush never waits.
        if unsafe { ffi::PQflush(ptr) } != 0 {
            return Err(Error::client(
                "libpq still held output that could not be sent when the session ended",
            ));
        }
        Ok(())
    }
}
