//! The async replication client and stream (issue 18, item 4): the same guarantees as the
//! blocking stream, on tokio's reactor: changes arrive, feedback moves the slot, a consumer
//! that does not poll survives `wal_sender_timeout`, a dying backend or a silent network ends
//! the stream with `Closed` within a bound, and dropping a stream early closes the connection.

mod common;

use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::replication::{Lsn, ReplicationMessage, ReplicationMode, SlotKind, SnapshotAction};
use pqlib::tokio::{ReplicationClient, ReplicationStream};

const WAIT: Duration = Duration::from_secs(20);

fn logical_cluster(extra: &[&str]) -> pqlib::tempdb::TempCluster {
    let mut builder = pqlib::tempdb::TempCluster::builder().config("wal_level = logical");
    for line in extra {
        builder = builder.config(*line);
    }
    builder
        .start()
        .expect("a throwaway server with wal_level = logical")
}

async fn connect(conninfo: &str) -> ReplicationClient {
    let config: pqlib::Config = conninfo.parse().unwrap();
    ReplicationClient::connect(&config, ReplicationMode::Logical)
        .await
        .unwrap()
}

async fn slot(client: &mut ReplicationClient, name: &str) {
    let kind = SlotKind::Logical {
        plugin: "test_decoding".into(),
        snapshot: SnapshotAction::Nothing,
    };
    client
        .create_replication_slot(name, &kind, false)
        .await
        .unwrap();
}

/// test_decoding's text of each message until one contains `until`, and the last one's LSN.
async fn read_until(stream: &mut ReplicationStream<'_>, until: &str) -> (Vec<String>, Lsn) {
    let mut seen = Vec::new();
    let read = async {
        let seen = &mut seen;
        loop {
            match stream.next().await {
                Some(Ok(ReplicationMessage::XLogData(data))) => {
                    let text = String::from_utf8(data.data().to_vec()).unwrap();
                    let done = text.contains(until);
                    seen.push(text);
                    if done {
                        return data.wal_start();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
                None => panic!("the stream ended early"),
            }
        }
    };
    let lsn = tokio::time::timeout(WAIT, read).await;
    let lsn = lsn.unwrap_or_else(|_| panic!("{until:?} did not arrive; saw {seen:?}"));
    (seen, lsn)
}

async fn slot_state(direct: &pqlib::tokio::Client, slot: &str) -> (Option<Lsn>, Option<i32>) {
    let row = direct
        .query_one(
            "SELECT confirmed_flush_lsn, active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Reads until the stream's first error, which must come within `bound` (a clean end fails).
async fn first_error(stream: &mut ReplicationStream<'_>, bound: Duration) -> pqlib::Error {
    let read = async {
        loop {
            match stream.next().await {
                Some(Err(e)) => return e,
                Some(Ok(_)) => {}
                None => panic!("a clean end instead of an error"),
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .unwrap_or_else(|_| panic!("no error within {bound:?}"))
}

async fn direct(conninfo: &str) -> pqlib::tokio::Client {
    let (client, connection) = pqlib::tokio::connect(conninfo).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn changes_arrive_feedback_moves_the_slot_and_stop_keeps_the_connection() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logical_cluster(&[]);
    let direct = direct(&cluster.conninfo()).await;
    direct
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, word text)")
        .await
        .unwrap();
    let mut client = connect(&cluster.conninfo()).await;
    assert_eq!(client.identify_system().await.unwrap().timeline, 1);
    slot(&mut client, "async_slot").await;
    // One simple-protocol text is one implicit transaction (its ROLLBACK would take the
    // INSERT with it): one text per transaction.
    for sql in [
        "INSERT INTO t VALUES (1, 'one')",
        "BEGIN; INSERT INTO t VALUES (99, 'gone'); ROLLBACK",
        "UPDATE t SET word = 'uno' WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
    ] {
        direct.batch_execute(sql).await.unwrap();
    }
    let mut stream = client
        .start_logical_replication("async_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    let (seen, _) = read_until(&mut stream, "DELETE").await;
    let changes: Vec<&String> = seen.iter().filter(|s| s.starts_with("table")).collect();
    assert_eq!(
        changes,
        [
            "table public.t: INSERT: id[integer]:1 word[text]:'one'",
            "table public.t: UPDATE: id[integer]:1 word[text]:'uno'",
            "table public.t: DELETE: id[integer]:1",
        ]
    );
    let (_, commit) = read_until(&mut stream, "COMMIT").await;
    stream.confirm(commit);
    stream.send_status(true).unwrap();
    let deadline = Instant::now() + WAIT;
    while slot_state(&direct, "async_slot")
        .await
        .0
        .is_none_or(|lsn| lsn < commit)
    {
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn never reached {commit}"
        );
        // Polling reads the server's answers (the reply it was asked for).
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    }
    assert_eq!(stream.stop().await.unwrap(), None);
    // Usable after a clean stop; a second logical stream needs a new connection.
    assert_eq!(client.identify_system().await.unwrap().timeline, 1);
    let again = client
        .start_logical_replication("async_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Unsupported, "{again}");
    // Bad input is an error, and the connection stays usable.
    let error = client
        .drop_replication_slot("Bad Name", false)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput);
    let error = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Db, "{error}");
    let rows = client.simple_query("SELECT 41 + 1").await.unwrap();
    assert!(
        rows.iter()
            .any(|m| matches!(m, pqlib::SimpleQueryMessage::Row(r) if r.get(0) == Some("42")))
    );
    drop(client);

    // From a new connection the slot restarts after what was confirmed: nothing twice.
    let mut client = connect(&cluster.conninfo()).await;
    direct
        .batch_execute("INSERT INTO t VALUES (2, 'two')")
        .await
        .unwrap();
    let mut stream = client
        .start_logical_replication("async_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    let (seen, _) = read_until(&mut stream, "COMMIT").await;
    let changes: Vec<&String> = seen.iter().filter(|s| s.starts_with("table")).collect();
    assert_eq!(
        changes,
        ["table public.t: INSERT: id[integer]:2 word[text]:'two'"]
    );
    stream.stop().await.unwrap();
    client
        .drop_replication_slot("async_slot", true)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_consumer_that_does_not_poll_outlives_wal_sender_timeout() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logical_cluster(&["wal_sender_timeout = '1s'"]);
    let direct = direct(&cluster.conninfo()).await;
    direct
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let mut client = connect(&cluster.conninfo()).await;
    slot(&mut client, "idle_slot").await;
    direct
        .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    let mut stream = client
        .start_logical_replication("idle_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    stream.set_status_interval(Duration::from_millis(200));
    read_until(&mut stream, "INSERT: id[integer]:1").await;
    let walsender = slot_state(&direct, "idle_slot").await.1;
    assert!(walsender.is_some());
    // Four timeouts without polling the stream.
    tokio::time::sleep(Duration::from_secs(4)).await;
    direct
        .batch_execute("INSERT INTO t VALUES (-1)")
        .await
        .unwrap();
    read_until(&mut stream, "INSERT: id[integer]:-1").await;
    assert_eq!(slot_state(&direct, "idle_slot").await.1, walsender);
    stream.stop().await.unwrap();
}

#[tokio::test]
async fn a_terminated_walsender_ends_the_stream_with_closed() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logical_cluster(&[]);
    let direct = direct(&cluster.conninfo()).await;
    let mut client = connect(&cluster.conninfo()).await;
    slot(&mut client, "killed_slot").await;
    let mut stream = client
        .start_logical_replication("killed_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        if let (_, Some(pid)) = slot_state(&direct, "killed_slot").await {
            break pid;
        }
        assert!(Instant::now() < deadline, "the slot never became active");
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
    };
    direct
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let end = first_error(&mut stream, WAIT).await;
    assert_eq!(end.kind(), ErrorKind::Closed, "{end}");
    assert!(stream.next().await.is_none());
    drop(stream);
    let error = client.identify_system().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
}

#[tokio::test]
async fn a_silent_network_is_detected_and_a_dropped_stream_closes_the_connection() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = logical_cluster(&[]);
    let proxy = common::Proxy::start(common::Upstream::Tcp(cluster.port()));
    let mut client = connect(&proxy.conninfo("")).await;
    slot(&mut client, "silent_slot").await;
    let mut stream = client
        .start_logical_replication("silent_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    stream.set_server_timeout(Duration::from_secs(2));
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    proxy.stall();
    let start = Instant::now();
    let end = first_error(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(end.kind(), ErrorKind::Closed, "{end}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    drop(stream);
    proxy.cut();

    // A stream dropped before its end closes its connection: nothing half-read is left.
    let mut client = connect(&cluster.conninfo()).await;
    slot(&mut client, "dropped_slot").await;
    let stream = client
        .start_logical_replication("dropped_slot", Lsn::INVALID, &[("include-xids", "0")])
        .await
        .unwrap();
    drop(stream);
    let error = client.identify_system().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
}
