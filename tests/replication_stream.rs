//! The blocking replication stream (issue 18, item 4): changes arrive, feedback moves the
//! slot, a paused consumer survives `wal_sender_timeout`, and a dying backend, a stopped
//! server or a cut network end the stream with `Closed` within a bound.

mod common;

use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMessage, ReplicationMode, ReplicationStream,
    SlotKind, SnapshotAction,
};

const WAIT: Duration = Duration::from_secs(20);

fn logical_cluster(extra: &[&str]) -> pqlib::tempdb::TempCluster {
    let mut builder = pqlib::tempdb::TempCluster::builder();
    builder = builder.config("wal_level = logical");
    for line in extra {
        builder = builder.config(*line);
    }
    builder
        .start()
        .expect("a throwaway server with wal_level = logical")
}

fn connect_logical(conninfo: &str) -> ReplicationConnection {
    let config: pqlib::Config = conninfo.parse().unwrap();
    ReplicationConnection::connect(&config, ReplicationMode::Logical).unwrap()
}

fn create_test_decoding_slot(conn: &mut ReplicationConnection, name: &str) -> Lsn {
    let kind = SlotKind::Logical {
        plugin: "test_decoding".into(),
        snapshot: SnapshotAction::Nothing,
    };
    conn.create_replication_slot(name, &kind, false)
        .unwrap()
        .consistent_point
        .unwrap()
}

/// The text test_decoding made of each change, until `until` has been seen; the LSN of the
/// last message read is returned too.
fn read_until(stream: &mut ReplicationStream<'_>, until: &str) -> (Vec<String>, Lsn) {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{until:?} did not arrive; saw {seen:?}");
        match stream.recv_timeout(left).unwrap() {
            Received::Message(ReplicationMessage::XLogData(data)) => {
                let text = String::from_utf8(data.data().to_vec()).unwrap();
                let done = text.contains(until);
                seen.push(text);
                if done {
                    return (seen, data.wal_start());
                }
            }
            Received::Message(_) | Received::TimedOut => {}
            Received::End => panic!("the stream ended early; saw {seen:?}: {stream:?}"),
            _ => unreachable!(),
        }
    }
}

fn confirmed_flush(direct: &mut pqlib::Connection, slot: &str) -> Option<Lsn> {
    direct
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .unwrap()
        .get(0)
}

#[test]
fn changes_arrive_and_feedback_moves_the_slot_without_loss_or_repeats() {
    let cluster = logical_cluster(&[]);
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    direct
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, word text)")
        .unwrap();
    let mut conn = connect_logical(&cluster.conninfo());
    create_test_decoding_slot(&mut conn, "stream_slot");

    direct
        .batch_execute(
            "BEGIN; INSERT INTO t VALUES (1, 'one'), (2, 'two'); COMMIT;
             BEGIN; INSERT INTO t VALUES (99, 'rolled back'); ROLLBACK;
             UPDATE t SET word = 'uno' WHERE id = 1;
             DELETE FROM t WHERE id = 2;",
        )
        .unwrap();
    let mut stream = conn
        .start_logical_replication(
            "stream_slot",
            Lsn::INVALID,
            &[("include-xids", "0"), ("skip-empty-xacts", "1")],
        )
        .unwrap();
    let (seen, last) = read_until(&mut stream, "DELETE");
    let changes: Vec<&String> = seen.iter().filter(|s| s.starts_with("table")).collect();
    assert_eq!(
        changes,
        [
            "table public.t: INSERT: id[integer]:1 word[text]:'one'",
            "table public.t: INSERT: id[integer]:2 word[text]:'two'",
            "table public.t: UPDATE: id[integer]:1 word[text]:'uno'",
            "table public.t: DELETE: id[integer]:2",
        ]
    );
    assert!(!seen.iter().any(|s| s.contains("rolled back")), "{seen:?}");
    // The DELETE's transaction commits after it.
    let (_, commit) = read_until(&mut stream, "COMMIT");
    assert!(commit >= last);

    stream.confirm(commit);
    assert_eq!(stream.confirmed(), commit);
    stream.send_status(false).unwrap();
    let deadline = Instant::now() + WAIT;
    while confirmed_flush(&mut direct, "stream_slot").is_none_or(|lsn| lsn < commit) {
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn never reached {commit}"
        );
        // The server takes the update when it reads it; a reply request makes it answer.
        let _ = stream.recv_timeout(Duration::from_millis(50)).unwrap();
    }
    assert_eq!(stream.stop().unwrap(), None);

    // The connection is usable after a stream, but the server would end a second logical
    // stream on it at once: pqlib says so. A new connection starts after what was confirmed.
    assert_eq!(conn.identify_system().unwrap().timeline, 1);
    let again = conn
        .start_logical_replication("stream_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Unsupported, "{again}");
    drop(conn);
    let mut conn = connect_logical(&cluster.conninfo());
    direct
        .batch_execute("INSERT INTO t VALUES (3, 'three')")
        .unwrap();
    let mut stream = conn
        .start_logical_replication("stream_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap();
    let (seen, _) = read_until(&mut stream, "COMMIT");
    let changes: Vec<&String> = seen.iter().filter(|s| s.starts_with("table")).collect();
    assert_eq!(
        changes,
        ["table public.t: INSERT: id[integer]:3 word[text]:'three'"]
    );
    drop(stream);
    conn.drop_replication_slot("stream_slot", true).unwrap();
}

#[test]
fn bad_starts_are_errors_and_the_connection_stays_usable() {
    let cluster = logical_cluster(&[]);
    let mut conn = connect_logical(&cluster.conninfo());
    let error = conn
        .start_logical_replication("no_such_slot", Lsn::INVALID, &[("a", "b")])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Db, "{error}");
    let error = conn
        .start_logical_replication("Bad Name", Lsn::INVALID, &[("a", "b")])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
    create_test_decoding_slot(&mut conn, "opts_slot");
    // A quote in an option's name and value is quoted, not SQL: test_decoding refuses the
    // option by its name, when the stream starts.
    let error = conn
        .start_logical_replication("opts_slot", Lsn::INVALID, &[("it's", "a 'value'")])
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Db, "{error}");
    assert!(
        error.to_string().contains("\"it's\" = \"a 'value'\""),
        "{error}"
    );
    assert_eq!(conn.identify_system().unwrap().timeline, 1);
    conn.drop_replication_slot("opts_slot", false).unwrap();
}

#[test]
fn a_paused_consumer_outlives_wal_sender_timeout() {
    let cluster = logical_cluster(&["wal_sender_timeout = '1s'"]);
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    direct.batch_execute("CREATE TABLE t (id int)").unwrap();
    let mut conn = connect_logical(&cluster.conninfo());
    create_test_decoding_slot(&mut conn, "slow_slot");
    direct
        .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    let mut stream = conn
        .start_logical_replication("slow_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap();
    stream.set_status_interval(Duration::from_millis(200));
    read_until(&mut stream, "INSERT: id[integer]:1");
    let walsender: i32 = direct
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slow_slot'",
            &[],
        )
        .unwrap()
        .get(0);
    // The consumer is busy for four timeouts, with the server's data waiting unread.
    std::thread::sleep(Duration::from_secs(4));
    direct.batch_execute("INSERT INTO t VALUES (-1)").unwrap();
    read_until(&mut stream, "INSERT: id[integer]:-1");
    let still: Option<i32> = direct
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slow_slot'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(still, Some(walsender), "the walsender was replaced");
    stream.stop().unwrap();
}

/// Reads until an error; it must come within `bound` and be `Closed`.
fn assert_closed_within(stream: &mut ReplicationStream<'_>, bound: Duration) {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < bound, "no error within {bound:?}");
        match stream.recv_timeout(Duration::from_millis(100)) {
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
                return;
            }
            Ok(Received::End) => panic!("a clean end instead of Closed"),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_terminated_walsender_ends_the_stream_with_closed() {
    let cluster = logical_cluster(&[]);
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let mut conn = connect_logical(&cluster.conninfo());
    create_test_decoding_slot(&mut conn, "killed_slot");
    let mut stream = conn
        .start_logical_replication("killed_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        let pid: Option<i32> = direct
            .query_one(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'killed_slot'",
                &[],
            )
            .unwrap()
            .get(0);
        if let Some(pid) = pid {
            break pid;
        }
        assert!(Instant::now() < deadline, "the slot never became active");
        let _ = stream.recv_timeout(Duration::from_millis(20)).unwrap();
    };
    direct
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert_closed_within(&mut stream, WAIT);
    drop(stream);
    let error = conn.identify_system().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
}

#[test]
fn a_stopped_server_ends_the_stream_within_a_bound() {
    let cluster = logical_cluster(&[]);
    let mut conn = connect_logical(&cluster.conninfo());
    create_test_decoding_slot(&mut conn, "stopped_slot");
    let mut stream = conn
        .start_logical_replication("stopped_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap();
    let _ = stream.recv_timeout(Duration::from_millis(100)).unwrap();
    common::stop_cluster_with(&cluster, libc::SIGINT);
    // A fast shutdown ends walsenders by the book (the stream may end cleanly) or with a
    // FATAL: either way within the bound, and never a hang.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < WAIT, "no end within {WAIT:?}");
        match stream.recv_timeout(Duration::from_millis(100)) {
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
                break;
            }
            Ok(Received::End) => break,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_cut_network_is_detected_by_the_server_timeout() {
    let cluster = logical_cluster(&[]);
    let proxy = common::Proxy::start(common::Upstream::Tcp(cluster.port()));
    let mut conn = connect_logical(&proxy.conninfo(""));
    create_test_decoding_slot(&mut conn, "cut_slot");
    let mut stream = conn
        .start_logical_replication("cut_slot", Lsn::INVALID, &[("include-xids", "0")])
        .unwrap();
    stream.set_server_timeout(Duration::from_secs(2));
    let _ = stream.recv_timeout(Duration::from_millis(100)).unwrap();
    // Nothing moves any more, but no socket closes: only silence tells.
    proxy.stall();
    let start = Instant::now();
    assert_closed_within(&mut stream, Duration::from_secs(10));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    drop(stream);
    proxy.cut();
}

#[test]
fn a_stream_started_behind_pqlibs_back_is_ended_by_the_book() {
    // A plain Connection on a walsender: START_REPLICATION through simple_query starts a COPY
    // BOTH that nothing reads. pqlib ends it with CopyDone (the walsender would take CopyFail
    // as a protocol violation and end the session), reports a clear error, and the
    // connection answers the next statement with its own answer.
    let cluster = logical_cluster(&[]);
    let mut repl = connect_logical(&cluster.conninfo());
    create_test_decoding_slot(&mut repl, "behind_slot");
    drop(repl);
    let mut conn =
        pqlib::Connection::connect(&format!("{} replication=database", cluster.conninfo()))
            .unwrap();
    for api in ["simple_query", "batch_execute"] {
        let sql = "START_REPLICATION SLOT behind_slot LOGICAL 0/0";
        let error = match api {
            "simple_query" => conn.simple_query(sql).map(drop).unwrap_err(),
            _ => conn.batch_execute(sql).unwrap_err(),
        };
        assert_eq!(error.kind(), ErrorKind::BadInput, "{api}: {error}");
        assert!(error.to_string().contains("COPY"), "{api}: {error}");
        let messages = conn.simple_query("SELECT 'after ' || $$tag$$").unwrap();
        assert!(
            messages.iter().any(
                |m| matches!(m, pqlib::SimpleQueryMessage::Row(r) if r.get(0) == Some("after tag"))
            ),
            "{api}: {messages:?}"
        );
    }
}
