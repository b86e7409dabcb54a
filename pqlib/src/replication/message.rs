//! The messages inside a replication COPY BOTH stream: what the walsender sends (XLogData,
//! primary keepalive) and what the client answers (standby status update). Shared by the
//! blocking stream and the async one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};

use super::Lsn;
use crate::error::{Error, Result};

/// PostgreSQL's epoch, 2000-01-01 00:00:00 UTC, in seconds after the Unix epoch.
const PG_EPOCH_UNIX_SECONDS: u64 = 946_684_800;

/// A server clock reading: microseconds since 2000-01-01, as the protocol sends it.
pub(crate) fn pg_time(micros: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS);
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        epoch.checked_add(offset).unwrap_or(epoch)
    } else {
        epoch.checked_sub(offset).unwrap_or(epoch)
    }
}

/// `time` as microseconds since 2000-01-01 (saturating).
pub(crate) fn pg_micros(time: SystemTime) -> i64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS);
    match time.duration_since(epoch) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// One message of a replication stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicationMessage {
    /// WAL (physical) or output plugin data (logical).
    XLogData(XLogData),
    /// The server's heartbeat; when it asks for a reply, pqlib has already sent one.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// An `XLogData` message: a piece of WAL, or one message of the logical output plugin.
///
/// ```no_run
/// # fn show(data: &pqlib::replication::XLogData) {
/// println!("{} bytes at {}", data.data().len(), data.wal_start());
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XLogData {
    wal_start: Lsn,
    wal_end: Lsn,
    server_time: SystemTime,
    data: Bytes,
}

impl XLogData {
    /// Where this data starts in the WAL (for logical decoding: the LSN of the change, or
    /// 0/0 for messages that have none).
    pub fn wal_start(&self) -> Lsn {
        self.wal_start
    }

    /// The server's current end of WAL when it sent this.
    pub fn wal_end(&self) -> Lsn {
        self.wal_end
    }

    /// The server's clock when it sent this.
    pub fn server_time(&self) -> SystemTime {
        self.server_time
    }

    /// The payload: WAL bytes, or the output plugin's message (decode pgoutput's with
    /// [`pgoutput`](crate::replication::pgoutput)). It shares libpq's buffer: no copy was made.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The payload, taken out.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

/// A primary keepalive message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The server's clock when it sent this.
    pub server_time: SystemTime,
    /// The server asked for a status update (pqlib has sent it).
    pub reply_requested: bool,
}

/// Parses one CopyData payload from the walsender. `buf` owns the bytes (libpq's buffer), so
/// the XLogData payload is a slice of it.
pub(crate) fn parse(mut buf: Bytes) -> Result<ReplicationMessage> {
    let malformed = |what: &str| {
        Error::client(format!(
            "malformed replication message from the server: {what}"
        ))
    };
    if buf.is_empty() {
        return Err(malformed("an empty CopyData"));
    }
    match buf.get_u8() {
        b'w' => {
            if buf.remaining() < 24 {
                return Err(malformed("XLogData shorter than its header"));
            }
            let wal_start = Lsn::new(buf.get_u64());
            let wal_end = Lsn::new(buf.get_u64());
            let server_time = pg_time(buf.get_i64());
            Ok(ReplicationMessage::XLogData(XLogData {
                wal_start,
                wal_end,
                server_time,
                data: buf,
            }))
        }
        b'k' => {
            if buf.remaining() < 17 {
                return Err(malformed("a keepalive shorter than 18 bytes"));
            }
            let wal_end = Lsn::new(buf.get_u64());
            let server_time = pg_time(buf.get_i64());
            let reply_requested = buf.get_u8() != 0;
            Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end,
                server_time,
                reply_requested,
            }))
        }
        tag => Err(malformed(&format!(
            "unknown message type {:?}",
            char::from(tag)
        ))),
    }
}

/// Where the client stands, as a standby status update reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    /// The end of the last WAL received.
    pub(crate) received: Lsn,
    /// What the consumer confirmed as durably processed.
    pub(crate) flushed: Lsn,
    /// What the consumer confirmed as applied.
    pub(crate) applied: Lsn,
    /// Where the last data handed to the consumer stands.
    pub(crate) delivered: Lsn,
}

impl Positions {
    /// A standby status update (`r`) for these positions.
    pub(crate) fn status_update(&self, now: SystemTime, reply_requested: bool) -> [u8; 34] {
        let mut message = [0u8; 34];
        message[0] = b'r';
        // The write position never trails the flush position the consumer confirmed.
        let written = self.received.max(self.flushed);
        message[1..9].copy_from_slice(&written.offset().to_be_bytes());
        message[9..17].copy_from_slice(&self.flushed.offset().to_be_bytes());
        message[17..25].copy_from_slice(&self.applied.offset().to_be_bytes());
        message[25..33].copy_from_slice(&pg_micros(now).to_be_bytes());
        message[33] = u8::from(reply_requested);
        message
    }

    /// Records a message's progress: a physical stream's data ends where its bytes end, a
    /// logical message's start is its change's LSN.
    ///
    /// A keepalive's end of WAL was sent after all data before it, so once the consumer has
    /// confirmed everything it was handed, the position moves on to it: otherwise an idle
    /// slot would hold WAL back, and a server shutting down would wait for a confirmation
    /// that never comes (the walsender leaves only once its client has caught up).
    pub(crate) fn saw(&mut self, message: &ReplicationMessage, physical: bool) {
        match message {
            ReplicationMessage::XLogData(data) => {
                let end = if physical {
                    let len = u64::try_from(data.data.len()).unwrap_or(u64::MAX);
                    data.wal_start.checked_add(len).unwrap_or(Lsn::MAX)
                } else {
                    data.wal_start
                };
                self.received = self.received.max(end);
                self.delivered = self.delivered.max(end);
            }
            ReplicationMessage::PrimaryKeepalive(keepalive) => {
                self.received = self.received.max(keepalive.wal_end);
                if self.flushed >= self.delivered && !self.flushed.is_invalid() {
                    self.confirm(keepalive.wal_end);
                }
            }
        }
    }

    /// The consumer has processed everything up to `lsn`.
    pub(crate) fn confirm(&mut self, lsn: Lsn) {
        self.flushed = self.flushed.max(lsn);
        self.applied = self.applied.max(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_keeps_its_payload_without_a_copy() {
        let mut raw = vec![b'w'];
        raw.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        raw.extend_from_slice(&0x1_0000_0020u64.to_be_bytes());
        raw.extend_from_slice(&1_000_000i64.to_be_bytes());
        raw.extend_from_slice(b"payload");
        let buf = Bytes::from(raw);
        let start = buf.as_ptr();
        let ReplicationMessage::XLogData(data) = parse(buf).unwrap() else {
            panic!("not XLogData")
        };
        assert_eq!(data.wal_start().to_string(), "1/10");
        assert_eq!(data.wal_end().to_string(), "1/20");
        assert_eq!(data.data().as_ref(), b"payload");
        assert_eq!(data.data().as_ptr(), start.wrapping_add(25));
        assert_eq!(
            data.server_time(),
            UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS + 1)
        );
    }

    #[test]
    fn keepalives_and_malformed_messages() {
        let mut raw = vec![b'k'];
        raw.extend_from_slice(&7u64.to_be_bytes());
        raw.extend_from_slice(&(-1i64).to_be_bytes());
        raw.push(1);
        let message = parse(Bytes::from(raw.clone())).unwrap();
        assert_eq!(
            message,
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn::new(7),
                server_time: pg_time(-1),
                reply_requested: true,
            })
        );
        for bad in [&b""[..], b"w", b"k\0\0", b"x123", &raw[..17]] {
            assert!(parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_updates_carry_the_confirmed_positions() {
        let mut positions = Positions {
            received: Lsn::new(100),
            ..Positions::default()
        };
        positions.confirm(Lsn::new(40));
        let now = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS + 2);
        let message = positions.status_update(now, true);
        assert_eq!(message[0], b'r');
        assert_eq!(u64::from_be_bytes(message[1..9].try_into().unwrap()), 100);
        assert_eq!(u64::from_be_bytes(message[9..17].try_into().unwrap()), 40);
        assert_eq!(u64::from_be_bytes(message[17..25].try_into().unwrap()), 40);
        assert_eq!(
            i64::from_be_bytes(message[25..33].try_into().unwrap()),
            2_000_000
        );
        assert_eq!(message[33], 1);
        assert_eq!(pg_micros(pg_time(-5)), -5);
    }
}
