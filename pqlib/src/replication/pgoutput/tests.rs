//! Hand-built messages of every type, every protocol-version difference, and malformed ones.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::error::ErrorKind;

/// Builds a message the way the server's `pq_send*` functions do.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn new(tag: u8) -> Msg {
        Msg(vec![tag])
    }
    fn u8(mut self, v: u8) -> Msg {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(self, v: i64) -> Msg {
        self.u64(v as u64)
    }
    fn str(mut self, s: &str) -> Msg {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    fn raw(mut self, b: &[u8]) -> Msg {
        self.0.extend_from_slice(b);
        self
    }
    fn text(self, s: &str) -> Msg {
        self.u8(b't').u32(s.len() as u32).raw(s.as_bytes())
    }
    fn binary(self, b: &[u8]) -> Msg {
        self.u8(b'b').u32(b.len() as u32).raw(b)
    }
    fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

const T0: i64 = 123_456_789_012; // microseconds after 2000-01-01

fn time(micros: i64) -> SystemTime {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    if micros >= 0 {
        epoch + Duration::from_micros(micros as u64)
    } else {
        epoch - Duration::from_micros(micros.unsigned_abs())
    }
}

fn decoder(version: u32) -> Decoder {
    Decoder::new(version, Streaming::Off)
}

/// Every strict prefix of `msg` fails to decode (with a fresh clone of `decoder`), without
/// changing the decoder's state; so does `msg` plus a trailing byte.
fn assert_prefixes_fail(decoder: &Decoder, msg: &Msg) {
    for len in 0..msg.0.len() {
        let mut d = decoder.clone();
        let e = d
            .decode(Bytes::copy_from_slice(&msg.0[..len]))
            .expect_err(&format!("prefix of {len} bytes of {:?}", msg.0));
        assert!(e.offset() <= len, "{e}");
        assert!(!e.to_string().is_empty());
        assert_eq!(d.streaming_xid(), decoder.streaming_xid());
    }
    let mut longer = msg.clone().u8(0);
    let e = decoder.clone().decode(longer.bytes()).unwrap_err();
    assert!(e.to_string().contains("unexpected bytes"), "{e}");
    longer.0.clear();
}

fn relation_msg(xid: Option<u32>) -> Msg {
    let mut m = Msg::new(b'R');
    if let Some(xid) = xid {
        m = m.u32(xid);
    }
    m.u32(16384)
        .str("")
        .str("items")
        .u8(b'f')
        .u16(5)
        .u8(1)
        .str("id")
        .u32(20)
        .u32(u32::MAX)
        .u8(0)
        .str("name")
        .u32(1043)
        .u32(68)
        .u8(0)
        .str("mood")
        .u32(70000)
        .u32(u32::MAX)
        .u8(0)
        .str("n")
        .u32(1700)
        .u32(u32::MAX)
        .u8(0)
        .str("odd")
        .u32(99999)
        .u32(u32::MAX)
}

#[test]
fn begin_commit_origin() {
    let mut d = decoder(1);
    let begin = Msg::new(b'B').u64(0x16_B374_D848).i64(T0).u32(742);
    assert_eq!(
        d.decode(begin.bytes()).unwrap(),
        Message::Begin {
            final_lsn: Lsn::new(0x16_B374_D848),
            commit_time: time(T0),
            xid: 742
        }
    );
    assert_prefixes_fail(&d, &begin);
    let commit = Msg::new(b'C').u8(0).u64(10).u64(20).i64(-T0);
    assert_eq!(
        d.decode(commit.bytes()).unwrap(),
        Message::Commit {
            flags: 0,
            commit_lsn: Lsn::new(10),
            end_lsn: Lsn::new(20),
            commit_time: time(-T0)
        }
    );
    assert_prefixes_fail(&d, &commit);
    let origin = Msg::new(b'O').u64(99).str("node_a");
    assert_eq!(
        d.decode(origin.bytes()).unwrap(),
        Message::Origin {
            commit_lsn: Lsn::new(99),
            name: "node_a".into()
        }
    );
    assert_prefixes_fail(&d, &origin);
}

#[test]
fn relation_and_type_are_cached_and_resolve_column_types() {
    let mut d = decoder(1);
    let ty = Msg::new(b'Y').u32(70000).str("public").str("mood");
    assert_eq!(
        d.decode(ty.bytes()).unwrap(),
        Message::Type {
            xid: None,
            oid: 70000,
            namespace: "public".into(),
            name: "mood".into()
        }
    );
    assert_prefixes_fail(&d, &ty);
    let Message::Relation { xid, relation } = d.decode(relation_msg(None).bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(xid, None);
    assert_eq!(relation.oid, 16384);
    assert_eq!(relation.namespace, "pg_catalog");
    assert_eq!(relation.name, "items");
    assert_eq!(relation.replica_identity, ReplicaIdentity::Full);
    assert_eq!(relation.columns.len(), 5);
    assert!(relation.columns[0].is_key());
    assert!(!relation.columns[1].is_key());
    assert_eq!(relation.columns[1].type_modifier, 68);
    assert_eq!(relation.columns[0].type_modifier, -1);
    assert_eq!(relation.columns[0].ty, Some(Type::INT8));
    let mood = relation.columns[2].ty.as_ref().unwrap();
    assert_eq!(
        (mood.name(), mood.schema(), mood.oid()),
        ("mood", "public", 70000)
    );
    assert_eq!(relation.columns[4].ty, None);
    assert_eq!(d.relation(16384), Some(&relation));
    assert_eq!(relation.column_index("n"), Some(3));
    assert_prefixes_fail(&d, &relation_msg(None));
    // A second description replaces the first.
    let renamed = Msg::new(b'R')
        .u32(16384)
        .str("s")
        .str("renamed")
        .u8(b'd')
        .u16(0);
    d.decode(renamed.bytes()).unwrap();
    assert_eq!(d.relation(16384).unwrap().name, "renamed");
    assert_eq!(
        d.relation(16384).unwrap().replica_identity,
        ReplicaIdentity::Default
    );
    for (byte, identity) in [
        (b'n', ReplicaIdentity::Nothing),
        (b'i', ReplicaIdentity::Index),
    ] {
        let m = Msg::new(b'R').u32(1).str("s").str("t").u8(byte).u16(0);
        d.decode(m.bytes()).unwrap();
        assert_eq!(d.relation(1).unwrap().replica_identity, identity);
    }
    let bad = Msg::new(b'R').u32(1).str("s").str("t").u8(b'x').u16(0);
    let e = d.decode(bad.bytes()).unwrap_err();
    assert!(e.to_string().contains("replica identity"), "{e}");
}

#[test]
fn insert_update_delete() {
    let mut d = decoder(1);
    let insert = Msg::new(b'I')
        .u32(16384)
        .u8(b'N')
        .u16(4)
        .text("42")
        .u8(b'n')
        .u8(b'u')
        .binary(&[0, 0, 0, 7]);
    let Message::Insert {
        xid,
        relation_oid,
        new,
    } = d.decode(insert.bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!((xid, relation_oid), (None, 16384));
    assert_eq!(
        new.columns(),
        &[
            TupleColumn::Text(Bytes::from_static(b"42")),
            TupleColumn::Null,
            TupleColumn::UnchangedToast,
            TupleColumn::Binary(Bytes::from_static(&[0, 0, 0, 7])),
        ]
    );
    assert_prefixes_fail(&d, &insert);

    // Update: no old tuple, a key, a full old row.
    let new_only = Msg::new(b'U').u32(5).u8(b'N').u16(1).text("x");
    let Message::Update { old: None, new, .. } = d.decode(new_only.bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(new.text(0).unwrap(), Some("x"));
    assert_prefixes_fail(&d, &new_only);
    for (kind, full) in [(b'K', false), (b'O', true)] {
        let update = Msg::new(b'U')
            .u32(5)
            .u8(kind)
            .u16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .u16(2)
            .text("2")
            .text("b");
        let Message::Update {
            old: Some(old),
            new,
            ..
        } = d.decode(update.bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(matches!(old, OldTuple::Full(_)), full);
        assert_eq!(old.tuple().text(0).unwrap(), Some("1"));
        assert_eq!(old.tuple().text(1).unwrap(), None);
        assert_eq!(new.text(1).unwrap(), Some("b"));
        assert_prefixes_fail(&d, &update);
        let delete = Msg::new(b'D').u32(5).u8(kind).u16(1).text("1");
        let Message::Delete {
            xid: None,
            relation_oid: 5,
            old,
        } = d.decode(delete.bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(matches!(old, OldTuple::Full(_)), full);
        assert_prefixes_fail(&d, &delete);
    }
    // Wrong tuple kinds.
    for bad in [
        Msg::new(b'I').u32(5).u8(b'K').u16(0),
        Msg::new(b'U').u32(5).u8(b'X').u16(0),
        Msg::new(b'U').u32(5).u8(b'K').u16(0).u8(b'K').u16(0),
        Msg::new(b'D').u32(5).u8(b'N').u16(0),
        Msg::new(b'I').u32(5).u8(b'N').u16(1).u8(b'z'),
    ] {
        let e = d.decode(bad.bytes()).unwrap_err();
        assert!(
            e.to_string().contains("expected") || e.to_string().contains("kind"),
            "{e}"
        );
    }
}

#[test]
fn truncate_and_logical_message() {
    let mut d = decoder(1);
    let truncate = Msg::new(b'T').u32(2).u8(3).u32(10).u32(11);
    assert_eq!(
        d.decode(truncate.bytes()).unwrap(),
        Message::Truncate {
            xid: None,
            cascade: true,
            restart_identity: true,
            relation_oids: vec![10, 11]
        }
    );
    assert_prefixes_fail(&d, &truncate);
    let plain = Msg::new(b'T').u32(1).u8(0).u32(10);
    let Message::Truncate {
        cascade: false,
        restart_identity: false,
        ..
    } = d.decode(plain.bytes()).unwrap()
    else {
        panic!()
    };
    let message = Msg::new(b'M').u8(1).u64(77).str("pfx").u32(3).raw(b"a\0b");
    assert_eq!(
        d.decode(message.bytes()).unwrap(),
        Message::LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn::new(77),
            prefix: "pfx".into(),
            content: Bytes::from_static(b"a\0b")
        }
    );
    assert_prefixes_fail(&d, &message);
}

#[test]
fn stream_blocks_carry_xids() {
    let mut d = Decoder::new(2, Streaming::On);
    let start = Msg::new(b'S').u32(900).u8(1);
    assert_eq!(
        d.decode(start.bytes()).unwrap(),
        Message::StreamStart {
            xid: 900,
            first_segment: true
        }
    );
    assert_eq!(d.streaming_xid(), Some(900));
    // Inside: a leading xid on these messages (a subtransaction's, here).
    assert_prefixes_fail(&d, &relation_msg(Some(901)));
    let Message::Relation { xid: Some(901), .. } =
        d.decode(relation_msg(Some(901)).bytes()).unwrap()
    else {
        panic!()
    };
    let cases = [
        Msg::new(b'Y').u32(901).u32(70001).str("s").str("t"),
        Msg::new(b'I').u32(901).u32(16384).u8(b'N').u16(1).text("1"),
        Msg::new(b'U').u32(901).u32(16384).u8(b'N').u16(1).text("1"),
        Msg::new(b'D').u32(901).u32(16384).u8(b'K').u16(1).text("1"),
        Msg::new(b'T').u32(901).u32(1).u8(0).u32(16384),
        Msg::new(b'M').u32(901).u8(1).u64(5).str("p").u32(0),
    ];
    for case in &cases {
        let message = d.decode(case.bytes()).unwrap();
        let xid = match message {
            Message::Type { xid, .. }
            | Message::Insert { xid, .. }
            | Message::Update { xid, .. }
            | Message::Delete { xid, .. }
            | Message::Truncate { xid, .. }
            | Message::LogicalMessage { xid, .. } => xid,
            other => panic!("{other:?}"),
        };
        assert_eq!(xid, Some(901));
        assert_prefixes_fail(&d, case);
    }
    // Origin has no xid, even inside.
    d.decode(Msg::new(b'O').u64(1).str("o").bytes()).unwrap();
    // Transaction-level messages do not belong inside a block.
    for inside in [
        Msg::new(b'B').u64(1).i64(0).u32(1),
        Msg::new(b'C').u8(0).u64(1).u64(2).i64(0),
        Msg::new(b'S').u32(1).u8(0),
        Msg::new(b'c').u32(900).u8(0).u64(1).u64(2).i64(0),
        Msg::new(b'A').u32(900).u32(900),
    ] {
        let e = d.decode(inside.bytes()).unwrap_err();
        assert!(e.to_string().contains("inside a Stream"), "{e}");
    }
    assert_eq!(
        d.decode(Msg::new(b'E').bytes()).unwrap(),
        Message::StreamStop
    );
    assert_eq!(d.streaming_xid(), None);
    let e = d.decode(Msg::new(b'E').bytes()).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    // Outside, the same Insert without the xid.
    let outside = Msg::new(b'I').u32(16384).u8(b'N').u16(1).text("1");
    let Message::Insert { xid: None, .. } = d.decode(outside.bytes()).unwrap() else {
        panic!()
    };
}

#[test]
fn stream_commit_and_abort_by_version() {
    let mut d = Decoder::new(2, Streaming::On);
    let commit = Msg::new(b'c').u32(900).u8(0).u64(30).u64(40).i64(T0);
    assert_eq!(
        d.decode(commit.bytes()).unwrap(),
        Message::StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: Lsn::new(30),
            end_lsn: Lsn::new(40),
            commit_time: time(T0)
        }
    );
    assert_prefixes_fail(&d, &commit);
    let abort = Msg::new(b'A').u32(900).u32(901);
    let expected = Message::StreamAbort {
        xid: 900,
        subxid: 901,
        abort_lsn: None,
        abort_time: None,
    };
    assert_eq!(d.decode(abort.bytes()).unwrap(), expected);
    assert_prefixes_fail(&d, &abort);
    // Version 4 with streaming = on: the short form still.
    let mut on4 = Decoder::new(4, Streaming::On);
    assert_eq!(on4.decode(abort.bytes()).unwrap(), expected);
    // Version 4 with streaming = parallel: abort LSN and time follow.
    let mut parallel = Decoder::new(4, Streaming::Parallel);
    let long = abort.clone().u64(50).i64(T0);
    assert_eq!(
        parallel.decode(long.bytes()).unwrap(),
        Message::StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: Some(Lsn::new(50)),
            abort_time: Some(time(T0))
        }
    );
    assert_prefixes_fail(&parallel, &long);
    assert!(d.decode(long.bytes()).is_err());
    // Stream messages need version 2.
    let mut v1 = decoder(1);
    for m in [
        Msg::new(b'S').u32(1).u8(1),
        Msg::new(b'E'),
        commit.clone(),
        abort.clone(),
    ] {
        let e = v1.decode(m.bytes()).unwrap_err();
        assert!(e.to_string().contains("needs protocol version 2"), "{e}");
    }
    let e = d.decode(Msg::new(b'S').u32(1).u8(2).bytes()).unwrap_err();
    assert!(e.to_string().contains("first-segment"), "{e}");
}

#[test]
fn two_phase_messages() {
    let mut d = decoder(3);
    let begin = Msg::new(b'b').u64(1).u64(2).i64(T0).u32(7).str("gid-1");
    assert_eq!(
        d.decode(begin.bytes()).unwrap(),
        Message::BeginPrepare {
            prepare_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            prepare_time: time(T0),
            xid: 7,
            gid: "gid-1".into()
        }
    );
    let prepare = Msg::new(b'P')
        .u8(0)
        .u64(1)
        .u64(2)
        .i64(T0)
        .u32(7)
        .str("gid-1");
    assert_eq!(
        d.decode(prepare.bytes()).unwrap(),
        Message::Prepare {
            flags: 0,
            prepare_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            prepare_time: time(T0),
            xid: 7,
            gid: "gid-1".into()
        }
    );
    let commit = Msg::new(b'K')
        .u8(0)
        .u64(3)
        .u64(4)
        .i64(T0 + 1)
        .u32(7)
        .str("gid-1");
    assert_eq!(
        d.decode(commit.bytes()).unwrap(),
        Message::CommitPrepared {
            flags: 0,
            commit_lsn: Lsn::new(3),
            end_lsn: Lsn::new(4),
            commit_time: time(T0 + 1),
            xid: 7,
            gid: "gid-1".into()
        }
    );
    let rollback = Msg::new(b'r')
        .u8(0)
        .u64(2)
        .u64(5)
        .i64(T0)
        .i64(T0 + 2)
        .u32(7)
        .str("gid-1");
    assert_eq!(
        d.decode(rollback.bytes()).unwrap(),
        Message::RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn::new(2),
            rollback_end_lsn: Lsn::new(5),
            prepare_time: time(T0),
            rollback_time: time(T0 + 2),
            xid: 7,
            gid: "gid-1".into()
        }
    );
    let stream_prepare = Msg::new(b'p').u8(0).u64(1).u64(2).i64(T0).u32(7).str("g");
    assert_eq!(
        d.decode(stream_prepare.bytes()).unwrap(),
        Message::StreamPrepare {
            flags: 0,
            prepare_lsn: Lsn::new(1),
            end_lsn: Lsn::new(2),
            prepare_time: time(T0),
            xid: 7,
            gid: "g".into()
        }
    );
    for m in [&begin, &prepare, &commit, &rollback, &stream_prepare] {
        assert_prefixes_fail(&d, m);
        let e = decoder(2).decode(m.bytes()).unwrap_err();
        assert!(e.to_string().contains("needs protocol version 3"), "{e}");
    }
}

#[test]
fn malformed_messages_are_errors() {
    let mut d = decoder(4);
    let e = d.decode(Bytes::new()).unwrap_err();
    assert_eq!((e.tag(), e.offset()), (None, 0));
    let e = d.decode(Bytes::from_static(b"Z")).unwrap_err();
    assert!(e.to_string().contains("unknown message type 'Z'"), "{e}");
    // A string without its NUL.
    let e = d
        .decode(Msg::new(b'O').u64(1).raw(b"abc").bytes())
        .unwrap_err();
    assert!(e.to_string().contains("no terminating NUL"), "{e}");
    assert_eq!(e.offset(), 9);
    // Names that are not UTF-8.
    let e = d
        .decode(Msg::new(b'O').u64(1).raw(b"\xff\0").bytes())
        .unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    let bad_column = Msg::new(b'R')
        .u32(1)
        .str("s")
        .str("t")
        .u8(b'd')
        .u16(1)
        .u8(0)
        .raw(b"\xc3\0")
        .u32(23)
        .u32(0);
    assert!(
        d.decode(bad_column.bytes())
            .unwrap_err()
            .to_string()
            .contains("not UTF-8")
    );
    // Counts larger than the data: refused before allocating.
    for (m, what) in [
        (Msg::new(b'I').u32(1).u8(b'N').u16(u16::MAX), "columns"),
        (
            Msg::new(b'R')
                .u32(1)
                .str("s")
                .str("t")
                .u8(b'd')
                .u16(u16::MAX),
            "columns",
        ),
        (Msg::new(b'T').u32(u32::MAX).u8(0), "relations"),
        (Msg::new(b'T').u32(3).u8(0).u32(1).u32(2), "relations"),
        (
            Msg::new(b'I').u32(1).u8(b'N').u16(1).u8(b't').u32(u32::MAX),
            "claims",
        ),
        (
            Msg::new(b'I')
                .u32(1)
                .u8(b'N')
                .u16(1)
                .u8(b'b')
                .u32(5)
                .raw(b"1234"),
            "claims",
        ),
        (
            Msg::new(b'M').u8(0).u64(1).str("p").u32(0x7fff_ffff),
            "claims",
        ),
    ] {
        let e = d.decode(m.bytes()).unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    }
    // Converts into pqlib's error.
    let error: crate::Error = d.decode(Bytes::from_static(b"Z")).unwrap_err().into();
    assert_eq!(error.kind(), ErrorKind::Client);
    assert!(
        error.to_string().contains("unknown message type"),
        "{error}"
    );
    // Timestamps at the ends of the range decode (SystemTime holds them on this platform) or
    // are errors, never panics.
    for t in [i64::MIN, i64::MAX] {
        let _ = d.decode(Msg::new(b'B').u64(1).i64(t).u32(1).bytes());
    }
}

fn typed_relation() -> (Decoder, Relation) {
    let mut d = decoder(1);
    d.decode(Msg::new(b'Y').u32(70000).str("public").str("mood").bytes())
        .unwrap();
    d.decode(relation_msg(None).bytes()).unwrap();
    let relation = d.relation(16384).unwrap().clone();
    (d, relation)
}

#[test]
fn try_get_converts_through_from_sql() {
    let (_, relation) = typed_relation();
    let tuple = Tuple {
        columns: vec![
            TupleColumn::Binary(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 1, 0])),
            TupleColumn::Text(Bytes::from_static(b"caf\xc3\xa9")),
            TupleColumn::Binary(Bytes::from_static(b"happy")),
            TupleColumn::Text(Bytes::from_static(b"1.5")),
            TupleColumn::Binary(Bytes::from_static(b"?")),
        ],
    };
    assert_eq!(tuple.try_get::<i64, _>(&relation, 0).unwrap(), 256);
    assert_eq!(tuple.try_get::<i64, _>(&relation, "id").unwrap(), 256);
    assert_eq!(
        tuple
            .try_get::<Option<i64>, _>(&relation, &String::from("id"))
            .unwrap(),
        Some(256)
    );
    // Text of a text type (varchar): through FromSql.
    assert_eq!(tuple.try_get::<&str, _>(&relation, "name").unwrap(), "café");
    assert_eq!(tuple.text(1).unwrap(), Some("café"));
    // A type from a Type message: Kind::Simple, its bytes readable as raw bytes only.
    let e = tuple.try_get::<String, _>(&relation, "mood").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    // Text of a non-text type: ask for binary.
    let e = tuple.try_get::<String, _>(&relation, "n").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    assert!(format!("{e:?} {e}").contains("binary"), "{e}");
    // An unknown type.
    let e = tuple.try_get::<&[u8], _>(&relation, "odd").unwrap_err();
    assert!(
        format!("{e} {:?}", std::error::Error::source(&e)).contains("unknown type oid 99999"),
        "{e}"
    );
    // Wrong Rust type; bad column references.
    assert_eq!(
        tuple.try_get::<i32, _>(&relation, 0).unwrap_err().kind(),
        ErrorKind::Conversion
    );
    assert_eq!(
        tuple.try_get::<i64, _>(&relation, 5).unwrap_err().kind(),
        ErrorKind::Column
    );
    assert_eq!(
        tuple
            .try_get::<i64, _>(&relation, "nope")
            .unwrap_err()
            .kind(),
        ErrorKind::Column
    );
    // A tuple shorter than the relation.
    let short = Tuple { columns: vec![] };
    assert_eq!(
        short.try_get::<i64, _>(&relation, 0).unwrap_err().kind(),
        ErrorKind::Column
    );
    // NULL and unchanged TOAST.
    let odd = Tuple {
        columns: vec![TupleColumn::Null, TupleColumn::UnchangedToast],
    };
    assert_eq!(odd.try_get::<Option<i64>, _>(&relation, 0).unwrap(), None);
    let e = odd.try_get::<i64, _>(&relation, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion);
    let e = odd.try_get::<Option<&str>, _>(&relation, 1).unwrap_err();
    assert!(
        format!("{e} {:?}", std::error::Error::source(&e)).contains("TOAST"),
        "{e}"
    );
    assert!(odd.text(1).is_err());
    assert_eq!(odd.text(0).unwrap(), None);
    assert!(tuple.text(0).is_err()); // binary
    assert_eq!(tuple.text(9).unwrap_err().kind(), ErrorKind::Column);
    let not_utf8 = Tuple {
        columns: vec![TupleColumn::Text(Bytes::from_static(b"\xff"))],
    };
    assert_eq!(not_utf8.text(0).unwrap_err().kind(), ErrorKind::Conversion);
    assert!(!tuple.is_empty());
    assert_eq!(tuple.len(), 5);
}

#[test]
fn options_quote_names_and_values() {
    let options = PgOutputOptions::new(["plain", "it's", "say \"hi\"", "a,b", " spaced "]);
    let pairs = options.start_replication_options().unwrap();
    assert_eq!(
        pairs,
        [
            ("proto_version".to_string(), "'1'".to_string()),
            (
                "publication_names".to_string(),
                r#"'"plain","it''s","say ""hi""","a,b"," spaced "'"#.to_string()
            ),
        ]
    );
    let values = options.option_values().unwrap();
    assert_eq!(
        values[1].1,
        r#""plain","it's","say ""hi""","a,b"," spaced ""#
    );
    let all = PgOutputOptions::for_server(160000, ["p"])
        .binary(true)
        .messages(true)
        .streaming(Streaming::Parallel)
        .two_phase(true)
        .origin("none")
        .start_replication_options()
        .unwrap();
    let text: Vec<String> = all.iter().map(|(k, v)| format!("{k} {v}")).collect();
    assert_eq!(
        text.join(", "),
        "proto_version '4', publication_names '\"p\"', binary 'true', messages 'true', \
         streaming 'parallel', two_phase 'true', origin 'none'"
    );
    let on = PgOutputOptions::for_server(140000, ["p"]).streaming(Streaming::On);
    assert_eq!(on.start_replication_options().unwrap()[2].1, "'on'");
    assert_eq!(on.decoder().proto_version(), 2);
    // Refused: bad input, with a message that says why.
    for (bad, why) in [
        (PgOutputOptions::new(Vec::<String>::new()), "at least one"),
        (PgOutputOptions::new([""]), "empty"),
        (PgOutputOptions::new(["a\0b"]), "NUL"),
        (PgOutputOptions::new(["a"]).origin("x\0"), "NUL"),
        (PgOutputOptions::new(["a"]).proto_version(0), "1 to 4"),
        (PgOutputOptions::new(["a"]).proto_version(5), "1 to 4"),
        (
            PgOutputOptions::new(["a"]).streaming(Streaming::On),
            "needs proto_version 2",
        ),
        (
            PgOutputOptions::new(["a"])
                .proto_version(3)
                .streaming(Streaming::Parallel),
            "needs proto_version 4",
        ),
        (
            PgOutputOptions::new(["a"]).proto_version(2).two_phase(true),
            "needs proto_version 3",
        ),
    ] {
        let e = bad.start_replication_options().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().contains(why), "{e}");
        assert!(bad.option_values().is_err());
    }
    for (version, proto) in [
        (100000, 1),
        (130012, 1),
        (140000, 2),
        (150000, 3),
        (160000, 4),
        (180000, 4),
    ] {
        assert_eq!(PgOutputOptions::highest_proto_version(version), proto);
    }
}
