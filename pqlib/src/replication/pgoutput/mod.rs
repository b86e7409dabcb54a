//! A decoder for the messages of PostgreSQL's built-in logical decoding plugin, `pgoutput`
//! (the "Logical Replication Message Formats" of the PostgreSQL documentation), protocol
//! versions 1 to 4. Pure: it reads message bytes (the payload of an XLogData message, or
//! the `data` column of `pg_logical_slot_get_binary_changes`) and does no I/O.
//!
//! [`PgOutputOptions`] makes the plugin's options and the matching [`Decoder`];
//! [`Decoder::decode`] turns each payload into a [`Message`], keeping the Relation and Type
//! messages it has seen, which the row messages refer to by OID. Column values are slices
//! of the payload ([`TupleColumn`]); [`Tuple::try_get`] converts them with `FromSql`.
//!
//! ```
//! use bytes::Bytes;
//! use pqlib::replication::Lsn;
//! use pqlib::replication::pgoutput::{Message, PgOutputOptions};
//!
//! let mut decoder = PgOutputOptions::new(["pub"]).decoder();
//! // A Begin message: 'B', final LSN, commit time (microseconds since 2000-01-01), xid.
//! let mut begin = vec![b'B'];
//! begin.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
//! begin.extend_from_slice(&0i64.to_be_bytes());
//! begin.extend_from_slice(&742u32.to_be_bytes());
//! match decoder.decode(Bytes::from(begin))? {
//!     Message::Begin { final_lsn, xid, .. } => {
//!         assert_eq!(final_lsn, "16/B374D848".parse::<Lsn>().unwrap());
//!         assert_eq!(xid, 742);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(decoder.decode(Bytes::from_static(b"B\0\0")).is_err());
//! # Ok::<(), pqlib::replication::pgoutput::DecodeError>(())
//! ```

mod options;
mod tuple;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::replication::Lsn;
use crate::types::{Kind, Oid, Type};

pub use options::{PgOutputOptions, Streaming};
pub use tuple::{
    OldTuple, Relation, RelationColumn, ReplicaIdentity, Tuple, TupleColumn, TupleIndex,
};

/// One pgoutput message, as [`Decoder::decode`] returns it.
///
/// The `xid` of the row, Relation, Type, Truncate and logical messages is `Some` inside a
/// Stream Start/Stop block (the streamed transaction or subtransaction the change belongs
/// to), `None` otherwise. Times are `SystemTime`s (the server sends microseconds since
/// 2000-01-01).
///
/// ```no_run
/// # fn f(decoder: &mut pqlib::replication::pgoutput::Decoder, payload: bytes::Bytes)
/// # -> Result<(), pqlib::replication::pgoutput::DecodeError> {
/// use pqlib::replication::pgoutput::Message;
/// match decoder.decode(payload)? {
///     Message::Begin { xid, .. } => println!("transaction {xid}"),
///     Message::Insert { relation_oid, new, .. } => {
///         let relation = decoder.relation(relation_oid).expect("a Relation message first");
///         println!("insert into {}: {:?}", relation.name, new.columns());
///     }
///     Message::Commit { commit_lsn, .. } => println!("committed at {commit_lsn}"),
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `B`: a transaction begins.
    #[non_exhaustive]
    Begin {
        /// The LSN of the commit record.
        final_lsn: Lsn,
        /// The commit time.
        commit_time: SystemTime,
        /// The transaction id.
        xid: u32,
    },
    /// `C`: the transaction commits.
    #[non_exhaustive]
    Commit {
        /// Flags (none defined; 0).
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The end LSN of the transaction.
        end_lsn: Lsn,
        /// The commit time.
        commit_time: SystemTime,
    },
    /// `O`: the transaction came from another replication origin.
    #[non_exhaustive]
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// The origin's name.
        name: String,
    },
    /// `R`: a table's description, sent before its first change in a session and after it
    /// changes. The decoder also keeps it ([`Decoder::relation`]).
    #[non_exhaustive]
    Relation {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// The table.
        relation: Relation,
    },
    /// `Y`: a type that is not built in (an enum, a domain, …), sent before a Relation
    /// message whose columns use it.
    #[non_exhaustive]
    Type {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// The type's OID.
        oid: Oid,
        /// Its schema (`pg_catalog` where the message has the empty string).
        namespace: String,
        /// Its name.
        name: String,
    },
    /// `I`: a row inserted.
    #[non_exhaustive]
    Insert {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// The table's OID ([`Decoder::relation`]).
        relation_oid: Oid,
        /// The new row.
        new: Tuple,
    },
    /// `U`: a row updated.
    #[non_exhaustive]
    Update {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// The table's OID ([`Decoder::relation`]).
        relation_oid: Oid,
        /// The old row's key (when the key changed) or the whole old row (`REPLICA
        /// IDENTITY FULL`); `None` when the key stayed the same.
        old: Option<OldTuple>,
        /// The new row.
        new: Tuple,
    },
    /// `D`: a row deleted.
    #[non_exhaustive]
    Delete {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// The table's OID ([`Decoder::relation`]).
        relation_oid: Oid,
        /// The old row's key, or the whole old row (`REPLICA IDENTITY FULL`).
        old: OldTuple,
    },
    /// `T`: tables truncated.
    #[non_exhaustive]
    Truncate {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
        /// The tables' OIDs.
        relation_oids: Vec<Oid>,
    },
    /// `M`: a message from `pg_logical_emit_message` (the `messages` option).
    #[non_exhaustive]
    LogicalMessage {
        /// Inside a stream block, the streamed transaction or subtransaction it belongs to.
        xid: Option<u32>,
        /// Whether it was emitted as part of the transaction.
        transactional: bool,
        /// The LSN of the message.
        lsn: Lsn,
        /// Its prefix.
        prefix: String,
        /// Its content (a slice of the payload).
        content: Bytes,
    },
    /// `S`: a block of a streamed (not yet committed) transaction begins.
    #[non_exhaustive]
    StreamStart {
        /// The transaction id.
        xid: u32,
        /// Whether this is the transaction's first block.
        first_segment: bool,
    },
    /// `E`: the block ends.
    StreamStop,
    /// `c`: a streamed transaction commits.
    #[non_exhaustive]
    StreamCommit {
        /// The transaction id.
        xid: u32,
        /// Flags (none defined; 0).
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The end LSN of the transaction.
        end_lsn: Lsn,
        /// The commit time.
        commit_time: SystemTime,
    },
    /// `A`: a streamed transaction, or one of its subtransactions, aborts.
    #[non_exhaustive]
    StreamAbort {
        /// The top-level transaction id.
        xid: u32,
        /// The aborted subtransaction (the same as `xid` for the whole transaction).
        subxid: u32,
        /// The LSN of the abort (only with `streaming = parallel`).
        abort_lsn: Option<Lsn>,
        /// The abort time (only with `streaming = parallel`).
        abort_time: Option<SystemTime>,
    },
    /// `b`: a prepared transaction begins (the `two_phase` option).
    #[non_exhaustive]
    BeginPrepare {
        /// The LSN of the prepare record.
        prepare_lsn: Lsn,
        /// The end LSN of the prepared transaction.
        end_lsn: Lsn,
        /// The prepare time.
        prepare_time: SystemTime,
        /// The transaction id.
        xid: u32,
        /// The global identifier of `PREPARE TRANSACTION`.
        gid: String,
    },
    /// `P`: the transaction is prepared.
    #[non_exhaustive]
    Prepare {
        /// Flags (none defined; 0).
        flags: u8,
        /// The LSN of the prepare record.
        prepare_lsn: Lsn,
        /// The end LSN of the prepared transaction.
        end_lsn: Lsn,
        /// The prepare time.
        prepare_time: SystemTime,
        /// The transaction id.
        xid: u32,
        /// The global identifier.
        gid: String,
    },
    /// `K`: `COMMIT PREPARED`.
    #[non_exhaustive]
    CommitPrepared {
        /// Flags (none defined; 0).
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The end LSN of the commit.
        end_lsn: Lsn,
        /// The commit time.
        commit_time: SystemTime,
        /// The transaction id.
        xid: u32,
        /// The global identifier.
        gid: String,
    },
    /// `r`: `ROLLBACK PREPARED`.
    #[non_exhaustive]
    RollbackPrepared {
        /// Flags (none defined; 0).
        flags: u8,
        /// The end LSN of the prepared transaction.
        prepare_end_lsn: Lsn,
        /// The end LSN of the rollback.
        rollback_end_lsn: Lsn,
        /// The prepare time.
        prepare_time: SystemTime,
        /// The rollback time.
        rollback_time: SystemTime,
        /// The transaction id.
        xid: u32,
        /// The global identifier.
        gid: String,
    },
    /// `p`: a streamed transaction is prepared (`two_phase` with streaming).
    #[non_exhaustive]
    StreamPrepare {
        /// Flags (none defined; 0).
        flags: u8,
        /// The LSN of the prepare record.
        prepare_lsn: Lsn,
        /// The end LSN of the prepared transaction.
        end_lsn: Lsn,
        /// The prepare time.
        prepare_time: SystemTime,
        /// The transaction id.
        xid: u32,
        /// The global identifier.
        gid: String,
    },
}

/// A payload that is not a valid pgoutput message (for the decoder's protocol version and
/// state): truncated, an unknown message type, a string without its NUL, a count larger
/// than the data, a name that is not UTF-8, a stream message outside its block, …
///
/// Converts into a [`crate::Error`] of kind [`Client`](crate::error::ErrorKind::Client)
/// (a protocol violation).
///
/// ```
/// use pqlib::replication::pgoutput::PgOutputOptions;
///
/// let mut decoder = PgOutputOptions::new(["pub"]).decoder();
/// let error = decoder.decode(bytes::Bytes::from_static(b"I\0\0")).unwrap_err();
/// assert_eq!(error.tag(), Some(b'I'));
/// assert_eq!(error.offset(), 1);
/// assert!(error.to_string().contains("Insert"), "{error}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    tag: Option<u8>,
    offset: usize,
    reason: String,
}

impl DecodeError {
    /// The message's type byte (`b'I'` for Insert, …); `None` for an empty payload.
    ///
    /// ```
    /// # let mut decoder = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).decoder();
    /// let error = decoder.decode(bytes::Bytes::new()).unwrap_err();
    /// assert_eq!(error.tag(), None);
    /// ```
    pub fn tag(&self) -> Option<u8> {
        self.tag
    }

    /// Where in the payload the problem is (a byte offset).
    ///
    /// ```
    /// # let mut decoder = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).decoder();
    /// let error = decoder.decode(bytes::Bytes::from_static(b"?")).unwrap_err();
    /// assert_eq!(error.offset(), 0);
    /// ```
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// The name of a message type, for errors.
fn tag_name(tag: u8) -> &'static str {
    match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        b'b' => "Begin Prepare",
        b'P' => "Prepare",
        b'K' => "Commit Prepared",
        b'r' => "Rollback Prepared",
        b'p' => "Stream Prepare",
        _ => "unknown",
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            None => write!(f, "pgoutput message: {}", self.reason),
            Some(tag) => write!(
                f,
                "pgoutput {} message ({:?}): {} at byte {}",
                tag_name(tag),
                char::from(tag),
                self.reason,
                self.offset
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for crate::Error {
    fn from(error: DecodeError) -> crate::Error {
        crate::Error::client(error.to_string())
    }
}

/// The PostgreSQL epoch, 2000-01-01 00:00:00 UTC, in seconds after the Unix epoch.
const PG_EPOCH_UNIX_SECONDS: u64 = 946_684_800;

/// Reads one message, tracking the offset for errors.
struct Reader {
    data: Bytes,
    pos: usize,
    tag: u8,
}

impl Reader {
    fn error(&self, at: usize, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            tag: Some(self.tag),
            offset: at,
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.error(
                self.pos,
                format!(
                    "truncated: {what} needs {n} bytes, {} left",
                    self.remaining()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.data[start..start + n])
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn lsn(&mut self, what: &str) -> Result<Lsn, DecodeError> {
        self.u64(what).map(Lsn::new)
    }

    fn time(&mut self, what: &str) -> Result<SystemTime, DecodeError> {
        let at = self.pos;
        let micros = self.u64(what)? as i64;
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS);
        let time = if micros >= 0 {
            epoch.checked_add(Duration::from_micros(micros.unsigned_abs()))
        } else {
            epoch.checked_sub(Duration::from_micros(micros.unsigned_abs()))
        };
        time.ok_or_else(|| self.error(at, format!("{what} {micros} is out of SystemTime's range")))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let at = self.pos;
        let rest = &self.data[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error(at, format!("{what} has no terminating NUL byte")));
        };
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.error(at, format!("{what} is not UTF-8 ({e})")))?
            .to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    /// `n` bytes as a slice of the payload.
    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(self.data.slice(start..start + n))
    }

    /// An Int32 length followed by that many bytes.
    fn counted_bytes(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let at = self.pos;
        let len = self.u32(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| {
                self.error(
                    at,
                    format!(
                        "{what} claims {} bytes, {} left",
                        len as i32,
                        self.remaining()
                    ),
                )
            })?;
        self.bytes(len, what)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.error(
                self.pos,
                format!("{} unexpected bytes after the message", self.remaining()),
            ));
        }
        Ok(())
    }

    /// A schema name, the empty string meaning `pg_catalog`.
    fn namespace(&mut self) -> Result<String, DecodeError> {
        let name = self.string("the namespace")?;
        Ok(if name.is_empty() {
            "pg_catalog".to_owned()
        } else {
            name
        })
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = usize::from(self.u16("the column count")?);
        // Each column takes at least its kind byte: check before allocating.
        if count > self.remaining() {
            return Err(self.error(
                self.pos - 2,
                format!(
                    "the tuple claims {count} columns, {} bytes left",
                    self.remaining()
                ),
            ));
        }
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let at = self.pos;
            let column = match self.u8("a column's kind")? {
                b'n' => TupleColumn::Null,
                b'u' => TupleColumn::UnchangedToast,
                b't' => TupleColumn::Text(self.counted_bytes("a text value")?),
                b'b' => TupleColumn::Binary(self.counted_bytes("a binary value")?),
                other => {
                    return Err(
                        self.error(at, format!("unknown column kind {:?}", char::from(other)))
                    );
                }
            };
            columns.push(column);
        }
        Ok(Tuple { columns })
    }

    fn old_tuple(&mut self, kind: u8) -> Result<OldTuple, DecodeError> {
        Ok(match kind {
            b'K' => OldTuple::Key(self.tuple()?),
            _ => OldTuple::Full(self.tuple()?),
        })
    }
}

/// Decodes pgoutput messages, one payload at a time, in the order the server sent them.
///
/// It knows the protocol version and whether `streaming = parallel` was asked for (Stream
/// Abort is longer then), tracks Stream Start/Stop blocks (inside one, row, Relation, Type,
/// Truncate and logical messages carry the streamed transaction's id), and keeps the latest
/// Relation message per table and Type message per type.
///
/// ```no_run
/// # fn f(payloads: Vec<bytes::Bytes>) -> Result<(), pqlib::Error> {
/// use pqlib::replication::pgoutput::{Message, PgOutputOptions};
///
/// let mut decoder = PgOutputOptions::for_server(160000, ["pub"]).binary(true).decoder();
/// for payload in payloads {
///     if let Message::Insert { relation_oid, new, .. } = decoder.decode(payload)? {
///         let relation = decoder.relation(relation_oid).expect("described first");
///         let id: i64 = new.try_get(relation, "id")?;
///         println!("inserted {id}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    proto_version: u32,
    parallel: bool,
    /// The transaction of the Stream Start/Stop block we are in.
    streaming_xid: Option<u32>,
    relations: HashMap<Oid, Relation>,
    types: HashMap<Oid, Type>,
}

impl Decoder {
    /// A decoder for protocol version `proto_version`, with `streaming` as asked of the
    /// server ([`PgOutputOptions::decoder`] does this).
    ///
    /// ```
    /// use pqlib::replication::pgoutput::{Decoder, Streaming};
    /// let decoder = Decoder::new(4, Streaming::Parallel);
    /// assert_eq!(decoder.proto_version(), 4);
    /// ```
    pub fn new(proto_version: u32, streaming: Streaming) -> Decoder {
        Decoder {
            proto_version,
            parallel: streaming == Streaming::Parallel,
            streaming_xid: None,
            relations: HashMap::new(),
            types: HashMap::new(),
        }
    }

    /// The protocol version it decodes.
    ///
    /// ```
    /// # let decoder = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).decoder();
    /// assert_eq!(decoder.proto_version(), 1);
    /// ```
    pub fn proto_version(&self) -> u32 {
        self.proto_version
    }

    /// The transaction whose Stream Start/Stop block the decoder is in, if it is in one.
    ///
    /// ```
    /// # let decoder = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).decoder();
    /// assert_eq!(decoder.streaming_xid(), None);
    /// ```
    pub fn streaming_xid(&self) -> Option<u32> {
        self.streaming_xid
    }

    /// The latest Relation message for table `oid`.
    ///
    /// ```no_run
    /// # fn f(decoder: &pqlib::replication::pgoutput::Decoder) {
    /// if let Some(relation) = decoder.relation(16384) {
    ///     println!("{}", relation.name);
    /// }
    /// # }
    /// ```
    pub fn relation(&self, oid: Oid) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// The type with OID `oid`: built in, or as the latest Type message described it (a
    /// [`Kind::Simple`] type with its name and schema).
    ///
    /// ```
    /// # let decoder = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).decoder();
    /// assert_eq!(decoder.type_(23), Some(pqlib::types::Type::INT4));
    /// assert_eq!(decoder.type_(99999), None);
    /// ```
    pub fn type_(&self, oid: Oid) -> Option<Type> {
        Type::from_oid(oid).or_else(|| self.types.get(&oid).cloned())
    }

    /// Decodes one message (the whole payload). A malformed payload is an error, and leaves
    /// the decoder as it was.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the message type and the offset of the problem.
    ///
    /// ```
    /// use pqlib::replication::pgoutput::{Message, PgOutputOptions, Streaming};
    ///
    /// let mut decoder = PgOutputOptions::new(["p"]).proto_version(2)
    ///     .streaming(Streaming::On).decoder();
    /// let start = bytes::Bytes::from_static(b"S\0\0\x02\xe6\x01");
    /// assert_eq!(decoder.decode(start)?, Message::StreamStart { xid: 742, first_segment: true });
    /// assert_eq!(decoder.streaming_xid(), Some(742));
    /// assert_eq!(decoder.decode(bytes::Bytes::from_static(b"E"))?, Message::StreamStop);
    /// # Ok::<(), pqlib::replication::pgoutput::DecodeError>(())
    /// ```
    pub fn decode(&mut self, payload: Bytes) -> Result<Message, DecodeError> {
        let Some(&tag) = payload.first() else {
            return Err(DecodeError {
                tag: None,
                offset: 0,
                reason: "an empty payload".into(),
            });
        };
        let mut r = Reader {
            data: payload,
            pos: 1,
            tag,
        };
        let in_stream = self.streaming_xid.is_some();
        let needs = |r: &Reader, version: u32| {
            if self.proto_version < version {
                Err(r.error(
                    0,
                    format!(
                        "needs protocol version {version}, the decoder has {}",
                        self.proto_version
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let outside_stream = |r: &Reader| {
            if in_stream {
                Err(r.error(0, "inside a Stream Start/Stop block"))
            } else {
                Ok(())
            }
        };
        let stream_xid = |r: &mut Reader| -> Result<Option<u32>, DecodeError> {
            if in_stream {
                r.u32("the streamed transaction id").map(Some)
            } else {
                Ok(None)
            }
        };
        let message = match tag {
            b'B' => {
                outside_stream(&r)?;
                Message::Begin {
                    final_lsn: r.lsn("the final LSN")?,
                    commit_time: r.time("the commit time")?,
                    xid: r.u32("the xid")?,
                }
            }
            b'C' => {
                outside_stream(&r)?;
                Message::Commit {
                    flags: r.u8("the flags")?,
                    commit_lsn: r.lsn("the commit LSN")?,
                    end_lsn: r.lsn("the end LSN")?,
                    commit_time: r.time("the commit time")?,
                }
            }
            b'O' => Message::Origin {
                commit_lsn: r.lsn("the origin's commit LSN")?,
                name: r.string("the origin name")?,
            },
            b'R' => {
                let xid = stream_xid(&mut r)?;
                let oid = r.u32("the relation OID")?;
                let namespace = r.namespace()?;
                let name = r.string("the relation name")?;
                let at = r.pos;
                let identity = r.u8("the replica identity")?;
                let replica_identity = ReplicaIdentity::from_byte(identity).ok_or_else(|| {
                    r.error(
                        at,
                        format!("unknown replica identity {:?}", char::from(identity)),
                    )
                })?;
                let count = usize::from(r.u16("the column count")?);
                // A column takes at least 10 bytes (flags, an empty name, type, modifier).
                if count > r.remaining() / 10 {
                    return Err(r.error(
                        r.pos - 2,
                        format!("{count} columns claimed, {} bytes left", r.remaining()),
                    ));
                }
                let mut columns = Vec::with_capacity(count);
                for _ in 0..count {
                    let flags = r.u8("the column flags")?;
                    let name = r.string("the column name")?;
                    let type_oid = r.u32("the column type")?;
                    let type_modifier = r.u32("the type modifier")? as i32;
                    columns.push(RelationColumn {
                        flags,
                        name,
                        type_oid,
                        type_modifier,
                        ty: self.type_(type_oid),
                    });
                }
                Message::Relation {
                    xid,
                    relation: Relation {
                        oid,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    },
                }
            }
            b'Y' => Message::Type {
                xid: stream_xid(&mut r)?,
                oid: r.u32("the type OID")?,
                namespace: r.namespace()?,
                name: r.string("the type name")?,
            },
            b'I' => {
                let xid = stream_xid(&mut r)?;
                let relation_oid = r.u32("the relation OID")?;
                let at = r.pos;
                match r.u8("the tuple kind")? {
                    b'N' => {}
                    other => {
                        return Err(r.error(
                            at,
                            format!("expected 'N' (new tuple), got {:?}", char::from(other)),
                        ));
                    }
                }
                Message::Insert {
                    xid,
                    relation_oid,
                    new: r.tuple()?,
                }
            }
            b'U' => {
                let xid = stream_xid(&mut r)?;
                let relation_oid = r.u32("the relation OID")?;
                let at = r.pos;
                let mut kind = r.u8("the tuple kind")?;
                let mut old = None;
                if kind == b'K' || kind == b'O' {
                    old = Some(r.old_tuple(kind)?);
                    kind = r.u8("the new tuple kind")?;
                }
                if kind != b'N' {
                    return Err(r.error(
                        at,
                        format!(
                            "expected 'K', 'O' or 'N' then 'N', got {:?}",
                            char::from(kind)
                        ),
                    ));
                }
                Message::Update {
                    xid,
                    relation_oid,
                    old,
                    new: r.tuple()?,
                }
            }
            b'D' => {
                let xid = stream_xid(&mut r)?;
                let relation_oid = r.u32("the relation OID")?;
                let at = r.pos;
                let kind = r.u8("the tuple kind")?;
                if kind != b'K' && kind != b'O' {
                    return Err(r.error(
                        at,
                        format!("expected 'K' or 'O', got {:?}", char::from(kind)),
                    ));
                }
                Message::Delete {
                    xid,
                    relation_oid,
                    old: r.old_tuple(kind)?,
                }
            }
            b'T' => {
                let xid = stream_xid(&mut r)?;
                let at = r.pos;
                let count = r.u32("the relation count")?;
                let flags = r.u8("the options")?;
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&n| n <= r.remaining() / 4)
                    .ok_or_else(|| {
                        r.error(
                            at,
                            format!("{count} relations claimed, {} bytes left", r.remaining()),
                        )
                    })?;
                let mut relation_oids = Vec::with_capacity(count);
                for _ in 0..count {
                    relation_oids.push(r.u32("a relation OID")?);
                }
                Message::Truncate {
                    xid,
                    cascade: flags & 1 != 0,
                    restart_identity: flags & 2 != 0,
                    relation_oids,
                }
            }
            b'M' => {
                let xid = stream_xid(&mut r)?;
                let flags = r.u8("the flags")?;
                Message::LogicalMessage {
                    xid,
                    transactional: flags & 1 != 0,
                    lsn: r.lsn("the message LSN")?,
                    prefix: r.string("the prefix")?,
                    content: r.counted_bytes("the content")?,
                }
            }
            b'S' => {
                needs(&r, 2)?;
                outside_stream(&r)?;
                let xid = r.u32("the xid")?;
                let at = r.pos;
                let first_segment = match r.u8("the first-segment flag")? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(r.error(at, format!("first-segment flag {other}, not 0 or 1")));
                    }
                };
                Message::StreamStart { xid, first_segment }
            }
            b'E' => {
                needs(&r, 2)?;
                if !in_stream {
                    return Err(r.error(0, "outside a Stream Start/Stop block"));
                }
                Message::StreamStop
            }
            b'c' => {
                needs(&r, 2)?;
                outside_stream(&r)?;
                Message::StreamCommit {
                    xid: r.u32("the xid")?,
                    flags: r.u8("the flags")?,
                    commit_lsn: r.lsn("the commit LSN")?,
                    end_lsn: r.lsn("the end LSN")?,
                    commit_time: r.time("the commit time")?,
                }
            }
            b'A' => {
                needs(&r, 2)?;
                outside_stream(&r)?;
                let xid = r.u32("the xid")?;
                let subxid = r.u32("the subtransaction xid")?;
                let (abort_lsn, abort_time) = if self.parallel && self.proto_version >= 4 {
                    (
                        Some(r.lsn("the abort LSN")?),
                        Some(r.time("the abort time")?),
                    )
                } else {
                    (None, None)
                };
                Message::StreamAbort {
                    xid,
                    subxid,
                    abort_lsn,
                    abort_time,
                }
            }
            b'b' => {
                needs(&r, 3)?;
                outside_stream(&r)?;
                Message::BeginPrepare {
                    prepare_lsn: r.lsn("the prepare LSN")?,
                    end_lsn: r.lsn("the end LSN")?,
                    prepare_time: r.time("the prepare time")?,
                    xid: r.u32("the xid")?,
                    gid: r.string("the gid")?,
                }
            }
            b'P' | b'p' => {
                needs(&r, 3)?;
                outside_stream(&r)?;
                let flags = r.u8("the flags")?;
                let prepare_lsn = r.lsn("the prepare LSN")?;
                let end_lsn = r.lsn("the end LSN")?;
                let prepare_time = r.time("the prepare time")?;
                let xid = r.u32("the xid")?;
                let gid = r.string("the gid")?;
                if tag == b'P' {
                    Message::Prepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_time,
                        xid,
                        gid,
                    }
                } else {
                    Message::StreamPrepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_time,
                        xid,
                        gid,
                    }
                }
            }
            b'K' => {
                needs(&r, 3)?;
                outside_stream(&r)?;
                Message::CommitPrepared {
                    flags: r.u8("the flags")?,
                    commit_lsn: r.lsn("the commit LSN")?,
                    end_lsn: r.lsn("the end LSN")?,
                    commit_time: r.time("the commit time")?,
                    xid: r.u32("the xid")?,
                    gid: r.string("the gid")?,
                }
            }
            b'r' => {
                needs(&r, 3)?;
                outside_stream(&r)?;
                Message::RollbackPrepared {
                    flags: r.u8("the flags")?,
                    prepare_end_lsn: r.lsn("the prepare end LSN")?,
                    rollback_end_lsn: r.lsn("the rollback end LSN")?,
                    prepare_time: r.time("the prepare time")?,
                    rollback_time: r.time("the rollback time")?,
                    xid: r.u32("the xid")?,
                    gid: r.string("the gid")?,
                }
            }
            other => {
                return Err(r.error(0, format!("unknown message type {:?}", char::from(other))));
            }
        };
        r.finish()?;
        // The message is whole: now update the state.
        match &message {
            Message::Relation { relation, .. } => {
                self.relations.insert(relation.oid, relation.clone());
            }
            Message::Type {
                oid,
                namespace,
                name,
                ..
            } => {
                self.types.insert(
                    *oid,
                    Type::new(name.clone(), *oid, Kind::Simple, namespace.clone()),
                );
            }
            Message::StreamStart { xid, .. } => self.streaming_xid = Some(*xid),
            Message::StreamStop => self.streaming_xid = None,
            _ => {}
        }
        Ok(message)
    }
}
