//! Leaving a COPY that nobody reads or writes: the one implementation shared by the blocking
//! client (`copy.rs`, `Connection::check`) and the async driver.
//!
//! A COPY that no API asked for (one started by `batch_execute`, a second COPY in the SQL
//! text of `copy_in`, a `CopyOutReader` dropped early) must still be ended by the book: a COPY
//! IN aborted with `PQputCopyEnd(message)`, a COPY OUT read to its end. Only then does
//! `PQgetResult` move on; asked while libpq is still in COPY mode it returns a fresh COPY
//! result on every call, so a loop that does not end the COPY first spins forever.
//!
//! Every step here either makes libpq move past a server message or fails, and the number of
//! COPYs one request may start is bounded by its SQL text ([`max_copies`]), so no loop built
//! on it can spin.

use std::ffi::{CStr, c_char};

use pqlib_sys as ffi;

use crate::handle::PqBuffer;

/// The most COPYs that SQL text can start: one per statement, and statements are separated
/// by semicolons (those inside literals only make the bound looser).
pub(crate) fn max_copies(sql: &str) -> usize {
    sql.bytes().filter(|&b| b == b';').count() + 1
}

/// Whether a result status means libpq is in a COPY.
pub(crate) fn is_copy(status: ffi::ExecStatusType) -> bool {
    matches!(
        status,
        ffi::ExecStatusType::PGRES_COPY_IN
            | ffi::ExecStatusType::PGRES_COPY_OUT
            | ffi::ExecStatusType::PGRES_COPY_BOTH
    )
}

/// What one [`CopyDiscard::step`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Discard {
    /// The COPY is over: `PQgetResult` now returns the COPY's own result.
    Done,
    /// libpq's output buffer is full (non-blocking connection): flush, then step again.
    NeedsFlush,
    /// The rest of a COPY OUT has not arrived: wait until the socket is readable, call
    /// `PQconsumeInput`, then step again.
    NeedsInput,
    /// The connection is broken.
    Failed,
}

/// A COPY being left. COPY BOTH is both: the end is sent and the data read to the end.
///
/// A COPY BOTH is ended with CopyDone, not aborted: it only comes from a walsender
/// (`START_REPLICATION`), which takes CopyFail as a protocol violation and ends the session,
/// while CopyDone ends the stream by the book and leaves the connection usable.
#[derive(Debug)]
pub(crate) struct CopyDiscard {
    end_sent: bool,
    read_out: bool,
    both: bool,
}

impl CopyDiscard {
    /// For libpq in the COPY state `status` (`PGRES_COPY_IN`, `_OUT` or `_BOTH`).
    pub(crate) fn new(status: ffi::ExecStatusType) -> CopyDiscard {
        CopyDiscard {
            end_sent: status == ffi::ExecStatusType::PGRES_COPY_OUT,
            read_out: status != ffi::ExecStatusType::PGRES_COPY_IN,
            both: status == ffi::ExecStatusType::PGRES_COPY_BOTH,
        }
    }

    /// Moves the COPY towards its end without waiting: sends the abort (`message`), reads and
    /// frees whatever COPY OUT data has arrived.
    ///
    /// # Safety
    /// `conn` is a live connection in the COPY state this was made for, used by nobody else
    /// for the call.
    pub(crate) unsafe fn step(&mut self, conn: *mut ffi::PGconn, message: &CStr) -> Discard {
        if !self.end_sent {
            let message = if self.both {
                std::ptr::null()
            } else {
                message.as_ptr()
            };
            // SAFETY: per the contract; `message` is NULL or NUL-terminated and outlives the
            // call.
            match unsafe { ffi::PQputCopyEnd(conn, message) } {
                1 => self.end_sent = true,
                0 => return Discard::NeedsFlush,
                // SAFETY: as above.
                _ => return unsafe { left_or_failed(conn) },
            }
        }
        while self.read_out {
            let mut buffer: *mut c_char = std::ptr::null_mut();
            // SAFETY: per the contract; async = 1 never waits, and a returned buffer (n > 0)
            // is freed by PqBuffer.
            let n = unsafe { ffi::PQgetCopyData(conn, &mut buffer, 1) };
            // SAFETY: `buffer` is NULL or libpq memory holding `n` bytes.
            drop(unsafe { PqBuffer::from_raw(buffer, usize::try_from(n).unwrap_or(0)) });
            match n {
                0 => return Discard::NeedsInput,
                -1 => self.read_out = false,
                n if n > 0 => {}
                // SAFETY: as above.
                _ => return unsafe { left_or_failed(conn) },
            }
        }
        Discard::Done
    }
}

/// libpq refused a COPY call: either it has already left the COPY (the server ended it with
/// an error, e.g. a cancel, which `PQgetResult` now returns), or the connection is broken.
///
/// # Safety
/// `conn` is a live connection.
unsafe fn left_or_failed(conn: *mut ffi::PGconn) -> Discard {
    // SAFETY: per the contract.
    if unsafe { ffi::PQstatus(conn) } == ffi::ConnStatusType::CONNECTION_OK {
        Discard::Done
    } else {
        Discard::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::max_copies;

    #[test]
    fn copies_are_bounded_by_the_statements_in_the_text() {
        assert_eq!(max_copies("COPY t TO STDOUT"), 1);
        assert_eq!(max_copies("COPY a TO STDOUT; COPY b TO STDOUT"), 2);
        assert_eq!(max_copies("SELECT ';'; COPY b TO STDOUT;"), 4);
    }
}
