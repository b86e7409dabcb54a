//! The physical replication stream (issue 18, item 6): one whole WAL segment streamed by
//! pqlib is byte for byte the segment file `pg_receivewal` (the server's own client, C and
//! libpq) writes for the same range.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMessage, ReplicationMode, SlotKind,
};

const WAIT: Duration = Duration::from_secs(60);

fn connect_physical(conninfo: &str) -> ReplicationConnection {
    let config: pqlib::Config = conninfo.parse().unwrap();
    ReplicationConnection::connect(&config, ReplicationMode::Physical)
        .expect("a physical replication connection (pg_hba.conf must allow `replication`)")
}

/// The server's WAL segment size in bytes.
fn wal_segment_size(direct: &mut pqlib::Connection) -> u64 {
    let bytes: String = direct
        .query_one(
            "SELECT (setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 \
             WHEN 'MB' THEN 1048576 ELSE 1 END)::text \
             FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .unwrap()
        .get(0);
    let bytes: u64 = bytes.parse().unwrap();
    assert!(bytes.is_power_of_two(), "wal_segment_size {bytes}");
    bytes
}

/// The file name of the segment starting at `start` on `timeline` (`XLogFileName`).
fn segment_file_name(timeline: u32, start: u64, segment_size: u64) -> String {
    let segno = start / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// A fresh, empty directory for `pg_receivewal`, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(what: &str) -> ScratchDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("pqlib-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where `a` and `b` first differ, if they do.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[test]
fn a_physical_segment_matches_what_pg_receivewal_writes() {
    // READ_REPLICATION_SLOT (where the slots start, and where pg_receivewal starts) is 15+.
    let Some((_, bin_dir)) = common::server_at_least(15) else {
        return;
    };
    let cluster = pqlib::tempdb::TempCluster::builder()
        .bin_dir(bin_dir)
        .config("wal_level = replica")
        .config("max_wal_senders = 4")
        .start()
        .expect("a throwaway server");
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let segment_size = wal_segment_size(&mut direct);
    println!(
        "libpq {}, server {}",
        pqlib::version(),
        direct.server_version()
    );

    let mut conn = connect_physical(&cluster.conninfo());
    let system = conn.identify_system().unwrap();
    assert_eq!(system.timeline, 1);
    assert_eq!(
        system.database, None,
        "a physical connection names no database"
    );
    let reserve = SlotKind::Physical { reserve_wal: true };
    // Two slots reserving WAL from the same place: one for pqlib, one for pg_receivewal.
    conn.create_replication_slot("pqlib_physical", &reserve, false)
        .unwrap();
    conn.create_replication_slot("receivewal_physical", &reserve, false)
        .unwrap();
    // The server reports no consistent point for physical slots (see
    // `a_physical_slot_reports_no_consistent_point`): READ_REPLICATION_SLOT says where
    // they start (servers 15+).
    let restart_of = |conn: &mut ReplicationConnection, slot: &str| {
        let position = conn.read_replication_slot(slot).unwrap().unwrap();
        assert_eq!(position.slot_type, "physical");
        assert_eq!(position.restart_timeline, Some(1));
        position
            .restart_lsn
            .expect("a slot reserving WAL has a restart_lsn")
    };
    let restart = restart_of(&mut conn, "pqlib_physical");
    let segment_start = Lsn::new(restart.offset() & !(segment_size - 1));
    let segment_end = segment_start + segment_size;
    let theirs = restart_of(&mut conn, "receivewal_physical");
    let theirs_start = Lsn::new(theirs.offset() & !(segment_size - 1));
    assert_eq!(theirs_start, segment_start, "the two slots start apart");

    // Enough WAL that the segment of the slots' start is complete, and then some.
    direct
        .batch_execute(
            "CREATE TABLE wal_filler (id int, pad text);
             INSERT INTO wal_filler SELECT g, repeat('w', 500) FROM generate_series(1, 60000) g;
             SELECT pg_switch_wal();",
        )
        .unwrap();
    let flushed: Lsn = direct
        .query_one("SELECT pg_current_wal_flush_lsn()", &[])
        .unwrap()
        .get(0);
    assert!(
        flushed > segment_end,
        "{flushed} is not past the segment end {segment_end}"
    );

    // pqlib: every XLogData at its place, contiguous from the segment start.
    let mut ours_bytes = vec![0u8; usize::try_from(segment_size).unwrap()];
    let mut next = segment_start;
    let mut messages = 0u64;
    let mut stream = conn
        .start_physical_replication(Some("pqlib_physical"), segment_start, None)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while next < segment_end {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the stream reached only {next} of {segment_end} within {WAIT:?}"
        );
        match stream.recv_timeout(left).unwrap() {
            Received::Message(ReplicationMessage::XLogData(data)) => {
                messages += 1;
                assert_eq!(data.wal_start(), next, "a gap or overlap in the stream");
                assert!(data.wal_end() >= data.wal_start(), "{data:?}");
                let start = data.wal_start().bytes_since(segment_start).unwrap();
                let start = usize::try_from(start).unwrap();
                let wanted = (ours_bytes.len() - start).min(data.data().len());
                ours_bytes[start..start + wanted].copy_from_slice(&data.data()[..wanted]);
                next = data.wal_start() + u64::try_from(data.data().len()).unwrap();
                stream.confirm(next.min(segment_end));
            }
            Received::Message(_) | Received::TimedOut => {}
            Received::End => panic!("the stream ended at {next}: {stream:?}"),
            _ => unreachable!(),
        }
    }
    assert_eq!(stream.next_timeline(), None);
    assert!(stream.received() >= segment_end, "{}", stream.received());
    assert_eq!(stream.stop().unwrap(), None, "no timeline ended");
    // The connection takes commands again after the stream.
    let after = conn.identify_system().unwrap();
    assert_eq!(after.timeline, 1);
    assert!(after.wal_position >= segment_end, "{}", after.wal_position);

    // pg_receivewal, from its own slot (it starts at the segment of the slot's restart_lsn),
    // until past the same segment's end.
    let dir = ScratchDir::new("receivewal");
    let mut command = Command::new(cluster.bin_dir().join("pg_receivewal"));
    command
        .arg("-D")
        .arg(dir.path())
        .args(["--slot", "receivewal_physical", "--no-loop", "--no-sync"])
        .arg(format!("--endpos={segment_end}"))
        .arg("-h")
        .arg(cluster.socket_dir())
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            cluster.user(),
            "-v",
        ]);
    let (status, output) = common::run_bounded(command, WAIT);
    assert!(status.success(), "pg_receivewal failed: {status}\n{output}");
    let name = segment_file_name(1, segment_start.offset(), segment_size);
    let file = dir.path().join(&name);
    let theirs_bytes = std::fs::read(&file).unwrap_or_else(|e| {
        let listing: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        panic!("pg_receivewal wrote no complete {name} ({e}); it wrote {listing:?}\n{output}")
    });

    let (ours_sum, theirs_sum) = (sha256_hex(&ours_bytes), sha256_hex(&theirs_bytes));
    println!(
        "segment {name} ({segment_start}..{segment_end}): pqlib {} bytes in {messages} \
         messages, sha256 {ours_sum}; pg_receivewal {} bytes, sha256 {theirs_sum}",
        ours_bytes.len(),
        theirs_bytes.len()
    );
    assert_eq!(
        ours_bytes.len(),
        theirs_bytes.len(),
        "segment lengths differ"
    );
    assert!(
        ours_sum == theirs_sum,
        "segment {name} differs from pg_receivewal's first at byte {:?} (sha256 {ours_sum} vs \
         {theirs_sum})",
        first_difference(&ours_bytes, &theirs_bytes)
    );
    // Not a segment of zeros that would match anything: WAL page headers carry the
    // segment's own address (XLogPageHeaderData.xlp_pageaddr at byte 8 of each page).
    let pageaddr = u64::from_le_bytes(ours_bytes[8..16].try_into().unwrap());
    assert_eq!(pageaddr, segment_start.offset(), "the first page's address");

    conn.drop_replication_slot("pqlib_physical", false).unwrap();
    conn.drop_replication_slot("receivewal_physical", false)
        .unwrap();
}

/// `CREATE_REPLICATION_SLOT … PHYSICAL` answers `consistent_point` = `0/0` (the walsender
/// prints the slot's `confirmed_flush`, which physical slots never set), with or without
/// `RESERVE_WAL`. `CreatedSlot::consistent_point` documents `None` for a physical slot
/// without reserved WAL; 0/0 is no position, so it should be `None` for every physical slot
/// rather than `Some(0/0)`.
#[test]
fn a_physical_slot_reports_no_consistent_point() {
    let cluster = pqlib::tempdb::TempCluster::builder()
        .start()
        .expect("a throwaway server");
    let mut conn = connect_physical(&cluster.conninfo());
    for reserve_wal in [false, true] {
        let name = format!("physical_reserve_{reserve_wal}");
        let created = conn
            .create_replication_slot(&name, &SlotKind::Physical { reserve_wal }, true)
            .unwrap();
        assert_eq!(created.slot_name, name);
        assert_eq!(created.snapshot_name, None);
        assert_eq!(created.output_plugin, None);
        assert_eq!(
            created.consistent_point, None,
            "reserve_wal {reserve_wal}: {created:?}"
        );
    }
}

/// After a standby's promotion, streaming the old timeline ends exactly at the switch point
/// with the server's CopyDone, and the stream names the next timeline and where it starts
/// (what `TIMELINE_HISTORY` says too); the same connection then streams the new timeline
/// from there.
#[test]
fn the_old_timeline_ends_at_the_switch_point_and_names_the_next() {
    let primary = pqlib::tempdb::TempCluster::builder()
        .start()
        .expect("a throwaway primary");
    let mut direct = pqlib::Connection::connect(&primary.conninfo()).unwrap();
    let segment_size = wal_segment_size(&mut direct);
    direct
        .batch_execute("CREATE TABLE before_promotion AS SELECT generate_series(1, 1000) AS id")
        .unwrap();
    let standby = pqlib::tempdb::TempCluster::builder()
        .standby_of(&primary)
        .start()
        .expect("a standby of the primary");
    let mut on_standby = pqlib::Connection::connect(&standby.conninfo()).unwrap();
    // WAL the standby replays before its promotion, so that the switch point is inside a
    // segment (the base backup ended its own at a segment boundary).
    direct
        .batch_execute(
            "SET synchronous_commit = on;
             INSERT INTO before_promotion SELECT generate_series(1, 1000);",
        )
        .unwrap();
    let written: Lsn = direct
        .query_one("SELECT pg_current_wal_flush_lsn()", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let replayed: Option<Lsn> = on_standby
            .query_one("SELECT pg_last_wal_replay_lsn()", &[])
            .unwrap()
            .get(0);
        if replayed.is_some_and(|lsn| lsn >= written) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby replayed only {replayed:?} of {written} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let promoted: bool = on_standby
        .query_one("SELECT pg_promote(wait => true, wait_seconds => 60)", &[])
        .unwrap()
        .get(0);
    assert!(promoted, "the standby was not promoted within 60 s");

    let mut conn = connect_physical(&standby.conninfo());
    assert_eq!(conn.identify_system().unwrap().timeline, 2);
    let (file, history) = conn.timeline_history(2).unwrap();
    assert_eq!(file, "00000002.history");
    // "1\t0/3000060\tno recovery target specified": the parent timeline and the switch point.
    let fields: Vec<&str> = history.lines().next().unwrap().split('\t').collect();
    assert_eq!(fields[0], "1", "{history:?}");
    let switch: Lsn = fields[1].parse().unwrap();
    assert_ne!(switch.offset() % segment_size, 0, "{history:?}");

    // Starting where the timeline ends, the server answers with the next timeline at once,
    // without a stream: an error, and the connection stays usable.
    let error = conn
        .start_physical_replication(None, switch, Some(1))
        .unwrap_err();
    assert!(
        error.to_string().contains("did not start a stream"),
        "{error}"
    );
    assert_eq!(conn.identify_system().unwrap().timeline, 2);

    // Timeline 1 from the start of the switch point's segment: up to the switch, then the end.
    let start = Lsn::new(switch.offset() & !(segment_size - 1));
    let mut stream = conn
        .start_physical_replication(None, start, Some(1))
        .unwrap();
    let mut next = start;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timeline 1 did not end within {WAIT:?}, at {next}"
        );
        match stream.recv_timeout(left).unwrap() {
            Received::Message(ReplicationMessage::XLogData(data)) => {
                assert_eq!(data.wal_start(), next, "a gap or overlap in the stream");
                next = data.wal_start() + u64::try_from(data.data().len()).unwrap();
            }
            Received::Message(_) | Received::TimedOut => {}
            Received::End => break,
            _ => unreachable!(),
        }
    }
    assert_eq!(next, switch, "timeline 1's WAL ends at the switch point");
    assert_eq!(stream.next_timeline(), Some((2, switch)));
    assert_eq!(stream.stop().unwrap(), Some((2, switch)));

    // The new timeline, from where the old one ended, on the same connection.
    let mut stream = conn
        .start_physical_replication(None, switch, Some(2))
        .unwrap();
    let first = loop {
        match stream.recv_timeout(WAIT).unwrap() {
            Received::Message(ReplicationMessage::XLogData(data)) => break data,
            Received::Message(_) => {}
            other => panic!("no WAL on timeline 2: {other:?}"),
        }
    };
    assert_eq!(first.wal_start(), switch);
    assert!(!first.data().is_empty());
    assert_eq!(stream.next_timeline(), None);
    assert_eq!(stream.stop().unwrap(), None);
    assert_eq!(conn.identify_system().unwrap().timeline, 2);
}
