//! A GiB of logical changes through the blocking replication stream at bounded memory
//! (issue 18, item 6): every row arrives, and the process's resident memory does not grow
//! with the volume (the data must not pile up anywhere in pqlib or libpq).
//!
//! The output plugin is `test_decoding` (text, one message per row, easy to check). The
//! cheapest changes that decode to a GiB: each row carries a 10 000-byte string of one
//! letter, which the server stores compressed inline (about 150 bytes of WAL per row) and
//! test_decoding prints in full, so 108 000 rows in 10 transactions decode to a little over
//! 1 GiB of text in 10 kB messages, and inserting them takes seconds instead of minutes
//! (the value is compressed once, in a table of its own, and copied compressed).

mod common;

use std::time::{Duration, Instant};

use pqlib::replication::{
    Received, ReplicationConnection, ReplicationMessage, ReplicationMode, SlotKind, SnapshotAction,
};

/// Transactions, and rows in each: 10 × 10 800 rows of ~10 045 bytes of test_decoding text.
const TRANSACTIONS: u64 = 10;
const ROWS_PER_TRANSACTION: u64 = 10_800;
/// The payload of every row.
const BODY_BYTES: usize = 10_000;
/// Confirm progress every so many messages.
const CONFIRM_EVERY: u64 = 1_000;
/// The bound on resident memory growth while streaming.
const RSS_BOUND: u64 = 64 * 1024 * 1024;
/// The bound on the streaming part.
const STREAM_LIMIT: Duration = Duration::from_secs(150);

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn a_gib_of_changes_streams_through_at_bounded_memory() {
    let cluster = pqlib::tempdb::TempCluster::builder()
        .config("wal_level = logical")
        .config("max_wal_size = '4GB'")
        .config("logical_decoding_work_mem = '256MB'")
        .start()
        .expect("a throwaway server with wal_level = logical");
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    println!(
        "libpq {}, server {}",
        pqlib::version(),
        direct.server_version()
    );
    direct
        .batch_execute(&format!(
            "CREATE TABLE volume (id bigint, body text);
             CREATE TABLE body AS SELECT repeat('x', {BODY_BYTES}) AS body;"
        ))
        .unwrap();
    let config: pqlib::Config = cluster.conninfo().parse().unwrap();
    let mut conn = ReplicationConnection::connect(&config, ReplicationMode::Logical).unwrap();
    let kind = SlotKind::Logical {
        plugin: "test_decoding".into(),
        snapshot: SnapshotAction::Nothing,
    };
    conn.create_replication_slot("volume_slot", &kind, false)
        .unwrap();

    let started = Instant::now();
    for t in 0..TRANSACTIONS {
        let first = t * ROWS_PER_TRANSACTION + 1;
        let last = first + ROWS_PER_TRANSACTION - 1;
        direct
            .batch_execute(&format!(
                "INSERT INTO volume SELECT g, body.body \
                 FROM generate_series({first}, {last}) g, body"
            ))
            .unwrap();
    }
    let insert_time = started.elapsed();
    let total_rows = TRANSACTIONS * ROWS_PER_TRANSACTION;

    let (rss_before, hwm_before) = common::memory_status();
    let cpu_before = cpu_time();
    let mut stream = conn
        .start_logical_replication(
            "volume_slot",
            pqlib::replication::Lsn::INVALID,
            &[("include-xids", "0"), ("skip-empty-xacts", "1")],
        )
        .unwrap();
    let prefix: &[u8] = b"table public.volume: INSERT: id[bigint]:";
    let (mut bytes, mut messages, mut rows, mut commits, mut id_sum) = (0u64, 0u64, 0u64, 0, 0u64);
    let mut rss_peak = rss_before;
    let started = Instant::now();
    let deadline = started + STREAM_LIMIT;
    while rows < total_rows || commits < TRANSACTIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {rows} of {total_rows} rows and {commits} commits in {STREAM_LIMIT:?}"
        );
        let data = match stream.recv_timeout(left).unwrap() {
            Received::Message(ReplicationMessage::XLogData(data)) => data,
            Received::Message(_) | Received::TimedOut => continue,
            Received::End => panic!("the stream ended after {rows} rows: {stream:?}"),
            _ => unreachable!(),
        };
        let payload = data.data();
        messages += 1;
        bytes += u64::try_from(payload.len()).unwrap();
        if let Some(rest) = payload.strip_prefix(prefix) {
            // "<id> body[text]:'xxx…'"
            let space = rest.iter().position(|&b| b == b' ').unwrap();
            let id: u64 = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            let body = &rest[space..];
            assert!(
                body.len() == " body[text]:''".len() + BODY_BYTES
                    && body.starts_with(b" body[text]:'x")
                    && body.ends_with(b"x'"),
                "row {id}: {} bytes, {:?}",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            rows += 1;
            id_sum += id;
        } else if payload.starts_with(b"COMMIT") {
            commits += 1;
        } else {
            assert!(
                payload.starts_with(b"BEGIN"),
                "unexpected: {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(80)])
            );
        }
        if messages % CONFIRM_EVERY == 0 {
            stream.confirm(data.wal_start());
            rss_peak = rss_peak.max(common::memory_status().0);
        }
    }
    let stream_time = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    stream.stop().unwrap();
    let (rss_after, hwm_after) = common::memory_status();
    rss_peak = rss_peak.max(rss_after);

    let seconds = stream_time.as_secs_f64();
    let report = format!(
        "RSS before {:.1} MiB, peak {:.1} MiB (sampled; VmHWM {:.1} -> {:.1} MiB), after \
         {:.1} MiB; {bytes} bytes ({:.2} GiB) in {messages} messages, {rows} rows, \
         {seconds:.1} s, {:.1} MB/s, this process's CPU {:.1} s (inserting took {:.1} s)",
        rss_before as f64 / MIB,
        rss_peak as f64 / MIB,
        hwm_before as f64 / MIB,
        hwm_after as f64 / MIB,
        rss_after as f64 / MIB,
        bytes as f64 / (MIB * 1024.0),
        bytes as f64 / 1e6 / seconds,
        cpu.as_secs_f64(),
        insert_time.as_secs_f64(),
    );
    println!("{report}");

    assert_eq!(rows, total_rows, "{report}");
    assert_eq!(id_sum, total_rows * (total_rows + 1) / 2, "{report}");
    assert_eq!(commits, TRANSACTIONS, "{report}");
    assert!(bytes >= 1 << 30, "less than a GiB streamed: {report}");
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < RSS_BOUND,
        "resident memory grew by {:.1} MiB (bound {} MiB): {report}",
        growth as f64 / MIB,
        RSS_BOUND / 1024 / 1024
    );
    // The kernel's own peak, which sampling could miss: it may include what the process
    // reached before the stream, so it is measured against the higher of the two.
    let hwm_growth = hwm_after.saturating_sub(hwm_before.max(rss_before));
    assert!(
        hwm_growth < RSS_BOUND,
        "peak resident memory (VmHWM) grew by {:.1} MiB (bound {} MiB): {report}",
        hwm_growth as f64 / MIB,
        RSS_BOUND / 1024 / 1024
    );

    conn.drop_replication_slot("volume_slot", true).unwrap();
}

/// The CPU time (user and system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let of = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap())
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap())
    };
    of(usage.ru_utime) + of(usage.ru_stime)
}
