//! Streaming 5 million rows of ~100 bytes (about 500 MB) keeps this process's peak RSS under
//! 64 MiB. A binary of its own, so no other test's allocations count against the peak.
#![cfg(target_os = "linux")]

mod common;

/// The peak resident set size of this process, from /proc.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn five_million_rows_stream_in_bounded_memory() {
    let mut conn = pqlib::Connection::connect(&common::conninfo()).unwrap();
    let before = peak_rss_bytes();
    let started = std::time::Instant::now();
    let mut stream = conn
        .query_raw(
            "SELECT g, repeat('x', 92) FROM generate_series(1, 5000000) g",
            std::iter::empty::<i32>(),
        )
        .unwrap();
    let (mut rows, mut bytes) = (0u64, 0usize);
    while let Some(row) = stream.next_row() {
        let row = row.unwrap();
        let text: &str = row.get(1);
        bytes += text.len() + 4;
        rows += 1;
    }
    drop(stream);
    let peak = peak_rss_bytes();
    eprintln!(
        "streamed {rows} rows ({} MB) in {:?}; peak RSS {} MiB (before: {} MiB)",
        bytes / 1_000_000,
        started.elapsed(),
        peak >> 20,
        before >> 20
    );
    assert_eq!(rows, 5_000_000);
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}
