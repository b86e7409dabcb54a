//! Every input kept in `fuzz/regressions/` replayed through its target's oracle (the same code
//! `cargo fuzz` runs, from `fuzz/oracles/`), as an ordinary test: a finding that comes back
//! fails here without a fuzzing toolchain. A file is named `<target>-<what it found>`.

#[path = "../fuzz/oracles/binary_copy.rs"]
mod binary_copy;
#[path = "../fuzz/oracles/config.rs"]
mod config;
#[path = "../fuzz/oracles/escape.rs"]
mod escape;
#[path = "../fuzz/oracles/from_sql.rs"]
mod from_sql;
#[path = "../fuzz/oracles/pgoutput.rs"]
mod pgoutput;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

/// libFuzzer's `-malloc_limit_mb` for this binary: a request this large is refused (and the
/// process aborts with "memory allocation of N bytes failed"), where the system allocator
/// would hand out untouched pages and let the test pass. The array-header findings asked
/// for 7 GB from under 100 bytes.
const MALLOC_LIMIT: usize = 256 << 20;

struct Limited;

// SAFETY: forwards to the system allocator; refusing a request (null) is allowed.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// A target's oracle: panics (or aborts) on a finding.
type Oracle = fn(&[u8]);

const TARGETS: &[(&str, Oracle)] = &[
    ("binary_copy", binary_copy::check),
    ("config", config::check),
    ("escape", escape::check),
    ("from_sql", from_sql::check),
    ("pgoutput", pgoutput::check),
];

#[test]
fn every_stored_fuzz_input_passes_its_oracle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (_, check) = TARGETS
            .iter()
            .find(|(target, _)| {
                name.strip_prefix(target)
                    .is_some_and(|r| r.starts_with('-'))
            })
            .unwrap_or_else(|| panic!("{name}: names no fuzz target ({TARGETS:?})"));
        check(&std::fs::read(&path).unwrap());
        replayed.push(name);
    }
    // The two array-header findings at least: an empty or misplaced directory must not pass.
    assert!(replayed.len() >= 2, "replayed only {replayed:?}");
}

/// The oracles also accept ordinary inputs (a smoke check that they are wired up: an oracle
/// that rejected everything would make the replay above meaningless).
#[test]
fn oracles_accept_well_formed_inputs() {
    config::check(b"host=localhost port=5432 password=secret");
    escape::check("it's \\ \"quoted\"".as_bytes());
    // INT4 (type index 2), one non-NULL row.
    from_sql::check(&[2, 0, 0, 0, 0, 42]);
    binary_copy::check(&[0x80 | 16, 0]);
    pgoutput::check(&pgoutput_seed());
}

/// A stream of pgoutput messages (protocol version 2): a Relation, a Begin, an Insert and a
/// Commit, then a streamed transaction's block and its commit.
fn pgoutput_seed() -> Vec<u8> {
    let mut relation = b"R\0\0\x40\0public\0t\0d\0\x02".to_vec();
    relation.extend_from_slice(b"\x01id\0\0\0\0\x17\xff\xff\xff\xff");
    relation.extend_from_slice(b"\0name\0\0\0\0\x19\xff\xff\xff\xff");
    let begin = [
        &b"B"[..],
        &[0, 0, 0, 0, 1, 0, 0, 0],
        &[0; 8],
        &[0, 0, 2, 0xe6],
    ]
    .concat();
    let insert = b"I\0\0\x40\0N\0\x02b\0\0\0\x04\0\0\0\x2at\0\0\0\x03abc".to_vec();
    let commit = [
        &b"C\0"[..],
        &[0, 0, 0, 0, 1, 0, 0, 0],
        &[0, 0, 0, 0, 1, 0, 0, 8],
        &[0; 8],
    ]
    .concat();
    let start = b"S\0\0\x02\xe7\x01".to_vec();
    let streamed = b"I\0\0\x02\xe7\0\0\x40\0N\0\x02nu".to_vec();
    let stop = b"E".to_vec();
    let stream_commit = [
        &b"c\0\0\x02\xe7\0"[..],
        &[0, 0, 0, 0, 2, 0, 0, 0],
        &[0, 0, 0, 0, 2, 0, 0, 8],
        &[0; 8],
    ]
    .concat();
    let mut input = vec![1]; // protocol version 2
    for message in [
        relation,
        begin,
        insert,
        commit,
        start,
        streamed,
        stop,
        stream_commit,
    ] {
        input.push(u8::try_from(message.len()).unwrap());
        input.extend_from_slice(&message);
    }
    input
}

/// The seed above decodes: every message of it (so the oracle's `Ok` path runs, and the seed
/// in fuzz/corpus/pgoutput stays meaningful).
#[test]
fn pgoutput_inline_seed_decodes_whole() {
    use pqlib::replication::pgoutput::{Decoder, Message, Streaming};
    let seed = pgoutput_seed();
    let mut decoder = Decoder::new(2, Streaming::On);
    let mut rest = &seed[1..];
    let mut decoded = Vec::new();
    while let [len, tail @ ..] = rest {
        let (payload, next) = tail.split_at(usize::from(*len));
        rest = next;
        decoded.push(
            decoder
                .decode(bytes::Bytes::copy_from_slice(payload))
                .unwrap(),
        );
    }
    assert_eq!(decoded.len(), 8);
    let relation = decoder.relation(0x4000).unwrap();
    let Message::Insert { new, .. } = &decoded[2] else {
        panic!("{decoded:?}")
    };
    assert_eq!(new.try_get::<i32, _>(relation, "id").unwrap(), 42);
    assert_eq!(new.text(1).unwrap(), Some("abc"));
    assert!(
        matches!(decoded[7], Message::StreamCommit { xid: 743, .. }),
        "{decoded:?}"
    );
}

/// The hand-written seeds of the pgoutput target (fuzz/corpus/pgoutput, kept in git although
/// the rest of corpus/ is not) decode whole: every message, in each protocol version the seed
/// names, so the fuzzer starts from valid streams.
#[test]
fn pgoutput_seeds_decode_whole() {
    use pqlib::replication::pgoutput::{Decoder, Streaming};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pgoutput");
    for (name, messages) in [
        ("rows", 11),
        ("stream", 10),
        ("parallel", 4),
        ("two_phase", 7),
    ] {
        let seed = std::fs::read(dir.join(name)).unwrap();
        let streaming = if seed[0] & 4 != 0 {
            Streaming::Parallel
        } else {
            Streaming::On
        };
        let mut decoder = Decoder::new(u32::from(seed[0] & 3) + 1, streaming);
        let mut rest = &seed[1..];
        let mut decoded = 0;
        while let Some((len, tail)) = rest.split_first() {
            let (payload, next) = tail.split_at(usize::from(*len));
            rest = next;
            decoder
                .decode(bytes::Bytes::copy_from_slice(payload))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            decoded += 1;
        }
        assert_eq!(decoded, messages, "{name}");
        pgoutput::check(&seed);
    }
}
