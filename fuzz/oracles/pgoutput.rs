//! The pgoutput decoder (`pqlib::replication::pgoutput::Decoder`) on arbitrary messages, in
//! sequence, so that Relation and Type messages and Stream Start/Stop blocks carry state
//! from one message to the next. Each message must decode or be an error, never panic or
//! allocate by an unchecked count; an error leaves the stream-block state as it was; values
//! are slices of the payload; a decoded message written back in the same format decodes to
//! the same message; every value of a row read as several Rust types is `Ok` or `Err`.
//!
//! Input: byte 0 picks the protocol version (bits 0-1: 1 to 4) and `streaming = parallel`
//! (bit 2); then messages, each a length byte and that many bytes.

use std::time::SystemTime;

use bytes::Bytes;
use pqlib::replication::pgoutput::{
    Decoder, Message, OldTuple, Relation, Streaming, Tuple, TupleColumn,
};

/// The target's oracle: panics (or aborts) on a finding.
pub fn check(data: &[u8]) {
    let Some((config, mut rest)) = data.split_first() else {
        return;
    };
    let version = u32::from(config & 3) + 1;
    let streaming = if config & 4 != 0 {
        Streaming::Parallel
    } else {
        Streaming::On
    };
    let mut decoder = Decoder::new(version, streaming);
    while let Some((len, tail)) = rest.split_first() {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let payload = Bytes::copy_from_slice(payload);
        let before = decoder.clone();
        match decoder.decode(payload.clone()) {
            Err(e) => {
                assert_eq!(decoder.streaming_xid(), before.streaming_xid(), "{e}");
                assert!(e.offset() <= payload.len(), "{e}");
                let _ = e.to_string();
                let _: pqlib::Error = e.into();
            }
            Ok(message) => {
                // Written back, it decodes to the same message (from the state before).
                let mut again = before;
                let encoded = encode(&message, again.streaming_xid().is_some());
                assert_eq!(
                    again.decode(Bytes::from(encoded.clone())).as_ref(),
                    Ok(&message),
                    "{encoded:?}"
                );
                read_values(&decoder, &message, &payload);
            }
        }
    }
}

/// Reads every value of a row message as several Rust types (with the table's Relation
/// message, if there was one).
fn read_values(decoder: &Decoder, message: &Message, payload: &Bytes) {
    let (oid, tuples): (u32, Vec<&Tuple>) = match message {
        Message::Insert {
            relation_oid, new, ..
        } => (*relation_oid, vec![new]),
        Message::Update {
            relation_oid,
            old,
            new,
            ..
        } => {
            let mut tuples = vec![new];
            tuples.extend(old.as_ref().map(OldTuple::tuple));
            (*relation_oid, tuples)
        }
        Message::Delete {
            relation_oid, old, ..
        } => (*relation_oid, vec![old.tuple()]),
        Message::LogicalMessage { content, .. } => {
            assert_within(content, payload);
            return;
        }
        _ => return,
    };
    for tuple in tuples {
        for (i, column) in tuple.columns().iter().enumerate() {
            if let TupleColumn::Text(bytes) | TupleColumn::Binary(bytes) = column {
                assert_within(bytes, payload);
            }
            let _ = tuple.text(i);
        }
        assert!(tuple.text(tuple.len()).is_err());
        if let Some(relation) = decoder.relation(oid) {
            read_as_types(tuple, relation);
        }
    }
}

fn read_as_types(tuple: &Tuple, relation: &Relation) {
    for i in 0..=relation.columns.len() {
        let _ = tuple.try_get::<Option<i32>, _>(relation, i);
        let _ = tuple.try_get::<Option<i64>, _>(relation, i);
        let _ = tuple.try_get::<Option<&str>, _>(relation, i);
        let _ = tuple.try_get::<Option<String>, _>(relation, i);
        let _ = tuple.try_get::<Option<&[u8]>, _>(relation, i);
        let _ = tuple.try_get::<Option<bool>, _>(relation, i);
        let _ = tuple.try_get::<Option<f64>, _>(relation, i);
        let _ = tuple.try_get::<Option<SystemTime>, _>(relation, i);
        let _ = tuple.try_get::<Option<serde_json::Value>, _>(relation, i);
        let _ = tuple.try_get::<Option<Vec<Option<i32>>>, _>(relation, i);
        let _ = tuple.try_get::<Option<Vec<String>>, _>(relation, i);
        let _ = tuple.try_get::<i64, _>(relation, i);
    }
    for column in &relation.columns {
        let _ = tuple.try_get::<Option<i64>, _>(relation, column.name.as_str());
    }
    assert!(
        tuple
            .try_get::<i32, _>(relation, relation.columns.len())
            .is_err()
    );
}

/// `part` is a slice of `whole`'s buffer (no copy).
fn assert_within(part: &Bytes, whole: &Bytes) {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    assert!(
        part.is_empty() || (at >= start && at + part.len() <= end),
        "a value copied out of the payload"
    );
}

/// The message in pgoutput's format (the server's `logicalrep_write_*`).
fn encode(message: &Message, in_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let lsn = |out: &mut Vec<u8>, lsn: pqlib::replication::Lsn| {
        out.extend_from_slice(&lsn.offset().to_be_bytes())
    };
    let time = |out: &mut Vec<u8>, time: &SystemTime| {
        let epoch = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
        let micros = match time.duration_since(epoch) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => (e.duration().as_micros() as i64).wrapping_neg(),
        };
        out.extend_from_slice(&micros.to_be_bytes());
    };
    let u32_ = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_be_bytes());
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    let xid = |out: &mut Vec<u8>, xid: &Option<u32>| {
        assert_eq!(xid.is_some(), in_stream);
        if let Some(xid) = xid {
            out.extend_from_slice(&xid.to_be_bytes());
        }
    };
    let tuple = |out: &mut Vec<u8>, tuple: &Tuple| {
        out.extend_from_slice(&(tuple.len() as u16).to_be_bytes());
        for column in tuple.columns() {
            match column {
                TupleColumn::Null => out.push(b'n'),
                TupleColumn::UnchangedToast => out.push(b'u'),
                TupleColumn::Text(b) | TupleColumn::Binary(b) => {
                    out.push(if matches!(column, TupleColumn::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let old = |out: &mut Vec<u8>, old: &OldTuple| {
        out.push(if matches!(old, OldTuple::Key(_)) {
            b'K'
        } else {
            b'O'
        });
        tuple(out, old.tuple());
    };
    match message {
        Message::Begin {
            final_lsn,
            commit_time,
            xid,
            ..
        } => {
            out.push(b'B');
            lsn(&mut out, *final_lsn);
            time(&mut out, commit_time);
            u32_(&mut out, *xid);
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
            ..
        } => {
            out.extend_from_slice(&[b'C', *flags]);
            lsn(&mut out, *commit_lsn);
            lsn(&mut out, *end_lsn);
            time(&mut out, commit_time);
        }
        Message::Origin {
            commit_lsn, name, ..
        } => {
            out.push(b'O');
            lsn(&mut out, *commit_lsn);
            string(&mut out, name);
        }
        Message::Relation {
            xid: x, relation, ..
        } => {
            out.push(b'R');
            xid(&mut out, x);
            u32_(&mut out, relation.oid);
            string(&mut out, &relation.namespace);
            string(&mut out, &relation.name);
            out.push(match relation.replica_identity {
                pqlib::replication::pgoutput::ReplicaIdentity::Default => b'd',
                pqlib::replication::pgoutput::ReplicaIdentity::Nothing => b'n',
                pqlib::replication::pgoutput::ReplicaIdentity::Full => b'f',
                pqlib::replication::pgoutput::ReplicaIdentity::Index => b'i',
                other => panic!("{other:?}"),
            });
            out.extend_from_slice(&(relation.columns.len() as u16).to_be_bytes());
            for column in &relation.columns {
                out.push(column.flags);
                string(&mut out, &column.name);
                u32_(&mut out, column.type_oid);
                u32_(&mut out, column.type_modifier as u32);
            }
        }
        Message::Type {
            xid: x,
            oid,
            namespace,
            name,
            ..
        } => {
            out.push(b'Y');
            xid(&mut out, x);
            u32_(&mut out, *oid);
            string(&mut out, namespace);
            string(&mut out, name);
        }
        Message::Insert {
            xid: x,
            relation_oid,
            new,
            ..
        } => {
            out.push(b'I');
            xid(&mut out, x);
            u32_(&mut out, *relation_oid);
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Update {
            xid: x,
            relation_oid,
            old: before,
            new,
            ..
        } => {
            out.push(b'U');
            xid(&mut out, x);
            u32_(&mut out, *relation_oid);
            if let Some(before) = before {
                old(&mut out, before);
            }
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Delete {
            xid: x,
            relation_oid,
            old: before,
            ..
        } => {
            out.push(b'D');
            xid(&mut out, x);
            u32_(&mut out, *relation_oid);
            old(&mut out, before);
        }
        Message::Truncate {
            xid: x,
            cascade,
            restart_identity,
            relation_oids,
            ..
        } => {
            out.push(b'T');
            xid(&mut out, x);
            u32_(&mut out, relation_oids.len() as u32);
            out.push(u8::from(*cascade) | u8::from(*restart_identity) << 1);
            for oid in relation_oids {
                u32_(&mut out, *oid);
            }
        }
        Message::LogicalMessage {
            xid: x,
            transactional,
            lsn: at,
            prefix,
            content,
            ..
        } => {
            out.push(b'M');
            xid(&mut out, x);
            out.push(u8::from(*transactional));
            lsn(&mut out, *at);
            string(&mut out, prefix);
            u32_(&mut out, content.len() as u32);
            out.extend_from_slice(content);
        }
        Message::StreamStart {
            xid, first_segment, ..
        } => {
            out.push(b'S');
            u32_(&mut out, *xid);
            out.push(u8::from(*first_segment));
        }
        Message::StreamStop => out.push(b'E'),
        Message::StreamCommit {
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
            ..
        } => {
            out.push(b'c');
            u32_(&mut out, *xid);
            out.push(*flags);
            lsn(&mut out, *commit_lsn);
            lsn(&mut out, *end_lsn);
            time(&mut out, commit_time);
        }
        Message::StreamAbort {
            xid,
            subxid,
            abort_lsn,
            abort_time,
            ..
        } => {
            out.push(b'A');
            u32_(&mut out, *xid);
            u32_(&mut out, *subxid);
            assert_eq!(abort_lsn.is_some(), abort_time.is_some());
            if let (Some(at), Some(when)) = (abort_lsn, abort_time) {
                lsn(&mut out, *at);
                time(&mut out, when);
            }
        }
        Message::BeginPrepare {
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
            ..
        } => {
            out.push(b'b');
            lsn(&mut out, *prepare_lsn);
            lsn(&mut out, *end_lsn);
            time(&mut out, prepare_time);
            u32_(&mut out, *xid);
            string(&mut out, gid);
        }
        Message::Prepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
            ..
        }
        | Message::StreamPrepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
            ..
        } => {
            out.push(if matches!(message, Message::Prepare { .. }) {
                b'P'
            } else {
                b'p'
            });
            out.push(*flags);
            lsn(&mut out, *prepare_lsn);
            lsn(&mut out, *end_lsn);
            time(&mut out, prepare_time);
            u32_(&mut out, *xid);
            string(&mut out, gid);
        }
        Message::CommitPrepared {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
            xid,
            gid,
            ..
        } => {
            out.extend_from_slice(&[b'K', *flags]);
            lsn(&mut out, *commit_lsn);
            lsn(&mut out, *end_lsn);
            time(&mut out, commit_time);
            u32_(&mut out, *xid);
            string(&mut out, gid);
        }
        Message::RollbackPrepared {
            flags,
            prepare_end_lsn,
            rollback_end_lsn,
            prepare_time,
            rollback_time,
            xid,
            gid,
            ..
        } => {
            out.extend_from_slice(&[b'r', *flags]);
            lsn(&mut out, *prepare_end_lsn);
            lsn(&mut out, *rollback_end_lsn);
            time(&mut out, prepare_time);
            time(&mut out, rollback_time);
            u32_(&mut out, *xid);
            string(&mut out, gid);
        }
        other => panic!("a message the oracle cannot write: {other:?}"),
    }
    out
}
