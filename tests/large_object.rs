//! Large objects: a 100 MiB round trip with random seeks, truncate/tell/len, every byte value,
//! import/export through files, the errors (missing object, read-only descriptor, bad paths,
//! out-of-range seeks, a lost connection) and how objects follow their transaction.

mod common;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Rng;
use pqlib::error::{ErrorKind, SqlState};
use pqlib::{Connection, LargeObjectMode, TransactionStatus};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// The pqlib error inside an `io::Error` from a large object.
fn inner(e: &io::Error) -> &pqlib::Error {
    assert_eq!(e.kind(), io::ErrorKind::Other, "{e:?}");
    e.get_ref()
        .and_then(|e| e.downcast_ref::<pqlib::Error>())
        .unwrap_or_else(|| panic!("not a pqlib::Error inside: {e:?}"))
}

/// A fresh directory for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pqlib-lo-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: impl AsRef<Path>) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MIB: usize = 1 << 20;

#[test]
fn round_trip_100_mib_with_random_seeks() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let source = rng.bytes(100 * MIB);
    let total = source.len() as u64;
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, LargeObjectMode::ReadWrite)
        .unwrap();

    // Uneven chunks: mostly large ones, some tiny, one larger than a single call moves.
    let started = Instant::now();
    let mut written = 0;
    let mut first = true;
    while written < source.len() {
        let len = if first {
            20 * MIB
        } else {
            match rng.below(4) {
                0 => 1 + rng.below(4096) as usize,
                _ => 1 + rng.below(3 * MIB as u64) as usize,
            }
        };
        let end = (written + len).min(source.len());
        if first {
            // One `write` moves at most 2 MiB; write_all loops for the rest.
            let n = lo.write(&source[written..end]).unwrap();
            assert_eq!(n, 2 * MIB);
            lo.write_all(&source[written + n..end]).unwrap();
            first = false;
        } else {
            lo.write_all(&source[written..end]).unwrap();
        }
        written = end;
    }
    let write_time = started.elapsed();
    assert_eq!(lo.tell().unwrap(), total);
    assert_eq!(lo.len().unwrap(), total);
    assert_eq!(lo.stream_position().unwrap(), total, "len() seeks back");

    // Everything back, in large reads.
    assert_eq!(lo.seek(SeekFrom::Start(0)).unwrap(), 0);
    let started = Instant::now();
    let mut back = vec![0u8; source.len() + 4096];
    let mut got = 0;
    loop {
        let n = lo.read(&mut back[got..]).unwrap();
        assert!(n <= 2 * MIB, "one read moves at most 2 MiB, got {n}");
        if n == 0 {
            break;
        }
        got += n;
    }
    let read_time = started.elapsed();
    assert_eq!(got, source.len());
    assert!(back[..got] == source[..], "the data read back differs");
    drop(back);
    let mib = total as f64 / MIB as f64;
    eprintln!(
        "large object 100 MiB: write {:.0} MiB/s ({write_time:.2?}), read {:.0} MiB/s ({read_time:.2?})",
        mib / write_time.as_secs_f64(),
        mib / read_time.as_secs_f64(),
    );

    // Random seeks of every kind, each followed by a read of random length.
    let mut position = total;
    let mut buf = vec![0u8; 256 * 1024];
    for i in 0..200 {
        let target = rng.below(total + 1000); // sometimes past the end
        let (from, expected) = match i % 3 {
            0 => (SeekFrom::Start(target), target),
            1 => (SeekFrom::Current(target as i64 - position as i64), target),
            _ => (SeekFrom::End(target as i64 - total as i64), target),
        };
        assert_eq!(lo.seek(from).unwrap(), expected, "seek {i}: {from:?}");
        let want = 1 + rng.below(buf.len() as u64) as usize;
        let available = total.saturating_sub(target) as usize;
        let len = want.min(available);
        lo.read_exact(&mut buf[..len]).unwrap();
        let start = target as usize;
        assert!(
            buf[..len] == source[start..start + len],
            "seek {i}: {len} bytes at {start} differ"
        );
        if len < want {
            assert_eq!(
                lo.read(&mut buf[..want - len]).unwrap(),
                0,
                "seek {i}: end of object"
            );
        }
        position = target + len as u64;
        assert_eq!(lo.stream_position().unwrap(), position);
    }
    lo.close().unwrap();
    tx.rollback().unwrap();
}

#[test]
fn truncate_tell_and_len() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, LargeObjectMode::ReadWrite)
        .unwrap();
    assert_eq!(lo.oid(), oid);
    assert_eq!(lo.mode(), LargeObjectMode::ReadWrite);
    assert_eq!(lo.len().unwrap(), 0);
    assert_eq!(lo.tell().unwrap(), 0);
    let data = Rng::new(7).bytes(10_000);
    lo.write_all(&data).unwrap();
    assert_eq!(lo.tell().unwrap(), 10_000);

    // Shrink: the position stays where it was, now past the end.
    lo.truncate(100).unwrap();
    assert_eq!(lo.len().unwrap(), 100);
    assert_eq!(lo.tell().unwrap(), 10_000);
    let mut buf = [0u8; 16];
    assert_eq!(lo.read(&mut buf).unwrap(), 0);

    // Grow: zero bytes after the old end.
    lo.truncate(5_000).unwrap();
    assert_eq!(lo.len().unwrap(), 5_000);
    lo.rewind().unwrap();
    let mut all = Vec::new();
    lo.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 5_000);
    assert_eq!(&all[..100], &data[..100]);
    assert!(all[100..].iter().all(|&b| b == 0));

    // A write past the end leaves a hole of zeros.
    lo.seek(SeekFrom::Start(6_000)).unwrap();
    lo.write_all(b"tail").unwrap();
    assert_eq!(lo.len().unwrap(), 6_004);
    lo.seek(SeekFrom::End(-1004)).unwrap();
    let mut gap = vec![0xffu8; 1004];
    lo.read_exact(&mut gap).unwrap();
    assert!(gap[..1000].iter().all(|&b| b == 0));
    assert_eq!(&gap[1000..], b"tail");

    // Past 4 GiB: 64-bit offsets (the object stays sparse on the server).
    let far = 5u64 << 30;
    lo.truncate(far).unwrap();
    assert_eq!(lo.len().unwrap(), far);
    assert_eq!(lo.seek(SeekFrom::End(-2)).unwrap(), far - 2);
    lo.write_all(b"xy").unwrap();
    assert_eq!(lo.tell().unwrap(), far);
    lo.truncate(0).unwrap();
    assert_eq!(lo.len().unwrap(), 0);
    drop(lo);
    tx.commit().unwrap();
}

#[test]
fn every_byte_value_round_trips() {
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 17 + 3).collect();
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Write).unwrap();
    lo.write_all(&data).unwrap();
    lo.flush().unwrap();
    // The server lets a write-mode descriptor read.
    lo.rewind().unwrap();
    let mut back = Vec::new();
    lo.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    lo.close().unwrap();
    tx.commit().unwrap();

    let mut tx = conn.transaction().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
    let mut back = Vec::new();
    lo.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    drop(lo);
    tx.large_object_unlink(oid).unwrap();
    tx.commit().unwrap();
}

#[test]
fn import_and_export_through_files() {
    let dir = TempDir::new("files");
    let data = Rng::new(11).bytes(MIB + 12_345);
    let source = dir.path("source.bin");
    std::fs::write(&source, &data).unwrap();
    let mut conn = connect();

    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_import(&source).unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
    let mut back = Vec::new();
    lo.read_to_end(&mut back).unwrap();
    assert!(back == data, "imported bytes differ");
    drop(lo);
    let exported = dir.path("exported.bin");
    tx.large_object_export(oid, &exported).unwrap();
    assert!(
        std::fs::read(&exported).unwrap() == data,
        "exported bytes differ"
    );

    // Overwrites an existing file.
    std::fs::write(&exported, vec![1u8; 3 * MIB]).unwrap();
    tx.large_object_export(oid, &exported).unwrap();
    assert!(
        std::fs::read(&exported).unwrap() == data,
        "re-exported bytes differ"
    );

    // With a chosen OID: one past the server's choice is free in a fresh cluster, and if not
    // the error says so.
    let chosen = oid + 1_000_003;
    assert_eq!(
        tx.large_object_import_with_oid(&source, chosen).unwrap(),
        chosen
    );
    let mut lo = tx.large_object_open(chosen, LargeObjectMode::Read).unwrap();
    assert_eq!(lo.len().unwrap(), data.len() as u64);
    drop(lo);
    tx.large_object_unlink(chosen).unwrap();
    tx.commit().unwrap();

    // An empty file.
    let empty = dir.path("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_import(&empty).unwrap();
    let out = dir.path("empty-out.bin");
    tx.large_object_export(oid, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"");
    tx.commit().unwrap();
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_work_on_unix() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = TempDir::new("non-utf8");
    let source = dir.path(OsStr::from_bytes(b"in-\xff\xfe.bin"));
    std::fs::write(&source, b"bytes behind a non-UTF-8 name").unwrap();
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_import(&source).unwrap();
    let out = dir.path(OsStr::from_bytes(b"out-\x80.bin"));
    tx.large_object_export(oid, &out).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"bytes behind a non-UTF-8 name"
    );
}

#[test]
fn file_errors_come_from_libpq() {
    let dir = TempDir::new("file-errors");
    let mut conn = connect();

    let mut tx = conn.transaction().unwrap();
    let e = tx.large_object_import(dir.path("missing.bin")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Client, "{e:?}");
    assert!(e.to_string().contains("could not open file"), "{e}");
    drop(tx);

    // Exporting into a directory that does not exist.
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let e = tx
        .large_object_export(oid, dir.path("no/such/dir/out.bin"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Client, "{e:?}");
    assert!(e.to_string().contains("could not open file"), "{e}");
    drop(tx);

    // Exporting an object that does not exist: the export opens it as large_object_open
    // does (pqlib reads it itself since issue 13, finding 8), with the server's SQLSTATE.
    let mut tx = conn.transaction().unwrap();
    let e = tx
        .large_object_export(4_000_000_000, dir.path("out.bin"))
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(
        !dir.path("out.bin").exists(),
        "no file for a missing object"
    );
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
}

#[test]
fn path_with_nul_byte_is_bad_input() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let e = tx.large_object_import("in\0put.bin").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    let e = tx
        .large_object_import_with_oid("in\0put.bin", 77_777)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    let e = tx.large_object_export(oid, "out\0put.bin").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert!(e.to_string().contains("offset 3"), "{e}");
    // Nothing reached the server: the transaction is still good.
    assert_eq!(tx.transaction_status(), TransactionStatus::InTransaction);
    tx.large_object_unlink(oid).unwrap();
    tx.commit().unwrap();
}

#[test]
fn unlinked_object_cannot_be_opened() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    tx.commit().unwrap();

    let mut tx = conn.transaction().unwrap();
    tx.large_object_unlink(oid).unwrap();
    tx.commit().unwrap();

    let mut tx = conn.transaction().unwrap();
    let e = tx
        .large_object_open(oid, LargeObjectMode::Read)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Db, "{e:?}");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
    assert!(e.to_string().contains(&oid.to_string()), "{e}");
    // The error aborted the transaction, as any server error does.
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    drop(tx);

    let mut tx = conn.transaction().unwrap();
    let e = tx.large_object_unlink(oid).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
    drop(tx);
    assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
}

#[test]
fn create_with_oid() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let e = tx.large_object_create_with_oid(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    let oid = tx.large_object_create().unwrap();
    let chosen = oid + 2_000_003;
    assert_eq!(tx.large_object_create_with_oid(chosen).unwrap(), chosen);
    tx.commit().unwrap();
    let mut tx = conn.transaction().unwrap();
    let e = tx.large_object_create_with_oid(chosen).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e:?}");
    drop(tx);
    let mut tx = conn.transaction().unwrap();
    tx.large_object_unlink(chosen).unwrap();
    tx.commit().unwrap();
}

#[test]
fn read_mode_cannot_write_or_truncate() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    tx.commit().unwrap();

    let mut tx = conn.transaction().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
    let e = lo.write(b"nope").unwrap_err();
    let e = inner(&e);
    assert_eq!(e.kind(), ErrorKind::Client, "{e:?}");
    assert!(e.to_string().contains("not opened for writing"), "{e}");
    drop(lo);
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
    drop(tx);

    let mut tx = conn.transaction().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
    let e = lo.truncate(0).unwrap_err();
    assert!(e.to_string().contains("not opened for writing"), "{e}");
    // close reports what drop would ignore: the transaction is aborted.
    let e = lo.close().unwrap_err();
    assert!(e.to_string().contains("aborted"), "{e}");
}

#[test]
fn seek_errors() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, LargeObjectMode::ReadWrite)
        .unwrap();
    lo.write_all(b"0123456789").unwrap();

    // Beyond i64: refused before anything is sent, so the transaction goes on.
    let e = lo.seek(SeekFrom::Start(u64::MAX)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e:?}");
    let e = lo.truncate(1 << 63).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e:?}");
    assert_eq!(lo.seek(SeekFrom::Current(-4)).unwrap(), 6);
    let mut buf = [0u8; 4];
    lo.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"6789");

    // Before the start: the server refuses, which aborts the transaction. Seeks run as SQL
    // (`lo_lseek64(fd, off, whence)`), so the error is the server's, with its SQLSTATE.
    let e = lo.seek(SeekFrom::End(-11)).unwrap_err();
    let e = inner(&e);
    assert_eq!(e.kind(), ErrorKind::Db, "{e:?}");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e:?}");
    drop(lo);
    assert_eq!(tx.transaction_status(), TransactionStatus::InError);
}

/// Reads, seeks and tells (SQL `loread`, `lo_lseek64`, `lo_tell64` since issue 13, finding 8)
/// across the 2 MiB chunk boundary and at the end: a read bigger than the object, a read into
/// an empty buffer, reads and seeks past the end.
#[test]
fn reads_seeks_and_tells_at_chunk_boundaries_and_the_end() {
    let data = Rng::new(13).bytes(2 * MIB + 3);
    let total = data.len() as u64;
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, LargeObjectMode::ReadWrite)
        .unwrap();
    lo.write_all(&data).unwrap();
    assert_eq!(lo.tell().unwrap(), total);

    // At the end: nothing to read, into any buffer.
    let mut buf = vec![0x5au8; 3 * MIB];
    assert_eq!(lo.read(&mut buf).unwrap(), 0);
    assert_eq!(lo.read(&mut []).unwrap(), 0);
    assert_eq!(lo.tell().unwrap(), total);

    // A read bigger than the object, from the start: one call moves one chunk, the rest
    // follows, and nothing past the object's bytes is touched.
    lo.rewind().unwrap();
    assert_eq!(lo.read(&mut buf).unwrap(), 2 * MIB);
    assert_eq!(lo.tell().unwrap(), 2 * MIB as u64);
    assert_eq!(lo.read(&mut buf[2 * MIB..]).unwrap(), 3);
    assert!(buf[..data.len()] == data[..]);
    assert!(
        buf[data.len()..].iter().all(|&b| b == 0x5a),
        "written past the object's bytes"
    );
    assert_eq!(lo.read(&mut buf).unwrap(), 0);

    // A zero-length read moves nothing, mid-object too.
    assert_eq!(lo.seek(SeekFrom::Start(10)).unwrap(), 10);
    assert_eq!(lo.read(&mut []).unwrap(), 0);
    assert_eq!(lo.tell().unwrap(), 10);

    // Straddling the chunk boundary, with every kind of seek.
    for (from, at) in [
        (SeekFrom::Start(2 * MIB as u64 - 5), 2 * MIB - 5),
        (SeekFrom::End(-8), data.len() - 8),
        (SeekFrom::Current(-(MIB as i64)), data.len() - MIB),
    ] {
        let position = lo.seek(from).unwrap();
        assert_eq!(position, at as u64, "{from:?}");
        assert_eq!(lo.stream_position().unwrap(), position);
        let mut piece = [0u8; 8];
        lo.read_exact(&mut piece).unwrap();
        assert_eq!(&piece[..], &data[at..at + 8], "{from:?}");
        assert_eq!(lo.tell().unwrap(), position + 8);
    }

    // The last bytes, asked for with a larger buffer; then past the end.
    lo.seek(SeekFrom::End(-2)).unwrap();
    let mut tail = [0u8; 64];
    assert_eq!(lo.read(&mut tail).unwrap(), 2);
    assert_eq!(&tail[..2], &data[data.len() - 2..]);
    assert_eq!(lo.seek(SeekFrom::End(100)).unwrap(), total + 100);
    assert_eq!(lo.read(&mut tail).unwrap(), 0);
    assert_eq!(lo.len().unwrap(), total);
    assert_eq!(lo.tell().unwrap(), total + 100, "len() seeks back");

    // A read-only descriptor reads through the same path.
    drop(lo);
    tx.commit().unwrap();
    let mut tx = conn.transaction().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
    let mut back = Vec::new();
    assert_eq!(lo.read_to_end(&mut back).unwrap(), data.len());
    assert!(back == data);
    drop(lo);
    tx.large_object_unlink(oid).unwrap();
    tx.commit().unwrap();
}

#[test]
fn committed_object_is_readable_later_and_elsewhere() {
    let data = Rng::new(3).bytes(300_001);
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Write).unwrap();
    lo.write_all(&data).unwrap();
    lo.close().unwrap();
    tx.commit().unwrap();

    for conn in [&mut conn, &mut connect()] {
        let mut tx = conn.transaction().unwrap();
        let mut lo = tx.large_object_open(oid, LargeObjectMode::Read).unwrap();
        let mut back = Vec::new();
        lo.read_to_end(&mut back).unwrap();
        assert!(back == data, "committed bytes differ");
        drop(lo);
        tx.commit().unwrap();
    }
}

#[test]
fn rolled_back_object_does_not_exist() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx.large_object_open(oid, LargeObjectMode::Write).unwrap();
    lo.write_all(b"never committed").unwrap();
    drop(lo);
    drop(tx); // rolled back

    let mut tx = conn.transaction().unwrap();
    let e = tx
        .large_object_open(oid, LargeObjectMode::Read)
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
}

#[test]
fn objects_in_savepoints() {
    let mut conn = connect();
    let mut tx = conn.transaction().unwrap();
    let kept = {
        let mut savepoint = tx.transaction().unwrap();
        let oid = savepoint.large_object_create().unwrap();
        let mut lo = savepoint
            .large_object_open(oid, LargeObjectMode::Write)
            .unwrap();
        lo.write_all(b"released").unwrap();
        drop(lo);
        savepoint.commit().unwrap();
        oid
    };
    let discarded = {
        let mut savepoint = tx.transaction().unwrap();
        let oid = savepoint.large_object_create().unwrap();
        savepoint.rollback().unwrap();
        oid
    };
    let mut lo = tx.large_object_open(kept, LargeObjectMode::Read).unwrap();
    let mut text = String::new();
    lo.read_to_string(&mut text).unwrap();
    assert_eq!(text, "released");
    drop(lo);
    let mut savepoint = tx.transaction().unwrap();
    let e = savepoint
        .large_object_open(discarded, LargeObjectMode::Read)
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e:?}");
    drop(savepoint);
    tx.commit().unwrap();
}

#[test]
fn lost_connection_is_closed() {
    let mut conn = connect();
    let pid = conn.backend_pid() as i32;
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, LargeObjectMode::ReadWrite)
        .unwrap();
    lo.write_all(b"before").unwrap();

    let mut killer = connect();
    let terminated: bool = killer
        .query_one("SELECT pg_terminate_backend($1::int4, 10000)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated, "the backend did not exit within 10 s");

    let e = lo.write(b"after").unwrap_err();
    let e = inner(&e);
    assert_eq!(e.kind(), ErrorKind::Closed, "{e:?}");
    let e = lo.seek(SeekFrom::Start(0)).unwrap_err();
    assert_eq!(inner(&e).kind(), ErrorKind::Closed);
    let e = lo.tell().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e:?}");
    drop(lo); // must not hang or panic on the dead connection
    drop(tx);
    assert!(conn.is_closed());
}

/// A measurement, not a check: large-object write and read throughput over the test server's
/// unix socket, 100 MiB per run, writes and reads interleaved, median of
/// `PQLIB_LO_REPS` (default 5) runs per buffer size. Run it in release mode:
/// `cargo test --release --test large_object -- --ignored --nocapture throughput`.
#[test]
#[ignore = "a measurement: run in release mode with --ignored --nocapture"]
fn throughput_100_mib() {
    let reps: usize = std::env::var("PQLIB_LO_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let source = Rng::new(0x51_7cc1_b727_220a).bytes(100 * MIB);
    let mut conn = connect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // `PQLIB_LO_BUFFERS_KIB=2048,8192` measures only those buffer sizes.
    let buffers: Vec<usize> = match std::env::var("PQLIB_LO_BUFFERS_KIB") {
        Ok(list) => list
            .split(',')
            .map(|kib| kib.trim().parse::<usize>().unwrap() * 1024)
            .collect(),
        Err(_) => vec![64 * 1024, 256 * 1024, MIB, 2 * MIB, 8 * MIB],
    };
    for buffer in buffers {
        let (mut writes, mut reads) = (Vec::new(), Vec::new());
        let mut back = vec![0u8; buffer];
        for _ in 0..reps {
            let mut tx = conn.transaction().unwrap();
            let oid = tx.large_object_create().unwrap();
            let mut lo = tx
                .large_object_open(oid, LargeObjectMode::ReadWrite)
                .unwrap();
            let started = Instant::now();
            for piece in source.chunks(buffer) {
                lo.write_all(piece).unwrap();
            }
            writes.push(100.0 / started.elapsed().as_secs_f64());
            lo.seek(SeekFrom::Start(0)).unwrap();
            let started = Instant::now();
            let mut got = 0;
            loop {
                let n = lo.read(&mut back).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            reads.push(100.0 / started.elapsed().as_secs_f64());
            assert_eq!(got, source.len());
            drop(lo);
            tx.rollback().unwrap();
        }
        eprintln!(
            "large object 100 MiB, {:>5} KiB buffers, median of {reps}: write {:.0} MiB/s, read {:.0} MiB/s",
            buffer / 1024,
            median(writes),
            median(reads),
        );
    }
}
