//! LISTEN/NOTIFY: `Connection::notifications` and its iterators.

mod common;

use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::{Connection, Notification};

static_assertions::assert_impl_all!(Notification: Send, Sync, Clone, std::fmt::Debug);

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// Sends a notification from `conn` (committed when this returns).
fn notify(conn: &mut Connection, channel: &str, payload: &str) {
    conn.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .expect("NOTIFY");
}

#[test]
fn iter_yields_a_notification_from_another_connection() {
    let mut listener = connect();
    let mut sender = connect();
    listener.batch_execute("LISTEN iter_other").unwrap();
    notify(&mut sender, "iter_other", "hello");

    // iter() does not wait: the server sends the notification to the listener's socket
    // shortly after the sender's commit, so poll for it, for at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let received = loop {
        let batch: Vec<Notification> = listener
            .notifications()
            .iter()
            .collect::<Result<_, _>>()
            .unwrap();
        if !batch.is_empty() {
            break batch;
        }
        assert!(Instant::now() < deadline, "no notification within 10 s");
        thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(received.len(), 1, "{received:?}");
    let n = &received[0];
    assert_eq!(n.channel(), "iter_other");
    assert_eq!(n.payload(), "hello");
    assert_eq!(n.process_id(), sender.backend_pid());
    assert_ne!(n.process_id(), listener.backend_pid());
    // Nothing more, and iter() returns at once.
    let start = Instant::now();
    assert!(listener.notifications().iter().next().is_none());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn timeout_iter_receives_a_notification_from_another_connection() {
    let mut listener = connect();
    let mut sender = connect();
    listener.batch_execute("LISTEN timeout_other").unwrap();
    notify(&mut sender, "timeout_other", "first");
    notify(&mut sender, "timeout_other", "second");
    notify(&mut sender, "timeout_other", "");

    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(10));
    let payloads: Vec<String> = (0..3)
        .map(|_| {
            let n = iter.next().expect("a notification within 10 s").unwrap();
            assert_eq!(n.channel(), "timeout_other");
            assert_eq!(n.process_id(), sender.backend_pid());
            n.payload().to_owned()
        })
        .collect();
    assert_eq!(payloads, ["first", "second", ""]);
}

#[test]
fn blocking_iter_receives_a_notification_sent_while_it_waits() {
    let mut listener = connect();
    listener.batch_execute("LISTEN blocking_chan").unwrap();
    let mut sender = connect();
    let sender_pid = sender.backend_pid();

    // The listener waits on its own thread, so that a broken wait fails the test (below)
    // instead of hanging it.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let listening = thread::spawn(move || {
        let mut notifications = listener.notifications();
        let mut iter = notifications.blocking_iter();
        ready_tx.send(common::current_tid()).unwrap();
        let start = Instant::now();
        let received = iter.next();
        result_tx.send((received, start.elapsed())).unwrap();
    });

    // Sent only once the listener is blocked in next()'s wait (bounded), so that the test
    // exercises the wait rather than the first non-blocking read.
    common::wait_until_blocked(ready_rx.recv().unwrap());
    notify(&mut sender, "blocking_chan", "wake up");

    let (received, waited) = result_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("blocking_iter returned within 30 s of the NOTIFY");
    listening.join().unwrap();
    let n = received.expect("a notification, not the end").unwrap();
    eprintln!("blocking_iter waited {waited:?}");
    assert_eq!(n.channel(), "blocking_chan");
    assert_eq!(n.payload(), "wake up");
    assert_eq!(n.process_id(), sender_pid);
}

#[test]
fn timeout_iter_with_nothing_pending_ends_after_the_timeout() {
    let mut conn = connect();
    conn.batch_execute("LISTEN quiet_chan").unwrap();
    let mut notifications = conn.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_millis(200));
    let start = Instant::now();
    assert!(iter.next().is_none());
    let elapsed = start.elapsed();
    eprintln!("timeout_iter(200 ms) returned after {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // A zero timeout does not wait.
    let start = Instant::now();
    assert!(notifications.timeout_iter(Duration::ZERO).next().is_none());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn notifications_received_during_a_query_are_queued() {
    let mut conn = connect();
    let pid = conn.backend_pid();
    conn.batch_execute("LISTEN during_query").unwrap();
    // A session's own notifications reach it at commit, in the same response as the
    // statement's result: libpq queues them while reading that response.
    let rows = conn
        .query(
            "SELECT pg_notify('during_query', 'one'), pg_notify('during_query', 'two'), 42",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    conn.batch_execute("NOTIFY during_query, 'three'").unwrap();
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);

    let mut notifications = conn.notifications();
    assert_eq!(notifications.len(), 3);
    assert!(!notifications.is_empty());
    let received: Vec<Notification> = notifications.iter().collect::<Result<_, _>>().unwrap();
    let payloads: Vec<&str> = received.iter().map(Notification::payload).collect();
    assert_eq!(payloads, ["one", "two", "three"]);
    assert!(
        received
            .iter()
            .all(|n| n.process_id() == pid && n.channel() == "during_query")
    );
    assert!(notifications.is_empty());
    assert_eq!(notifications.len(), 0);
}

#[test]
fn len_does_not_lose_notifications_across_notifications_values() {
    let mut conn = connect();
    conn.batch_execute("LISTEN len_chan; NOTIFY len_chan, 'a'; NOTIFY len_chan, 'b'")
        .unwrap();
    // len() moves libpq's queue into the connection's; a later Notifications still sees it,
    // and what arrives meanwhile comes after it, in order.
    assert_eq!(conn.notifications().len(), 2);
    conn.batch_execute("NOTIFY len_chan, 'c'").unwrap();
    {
        let mut notifications = conn.notifications();
        assert_eq!(notifications.len(), 3);
        let first = notifications.iter().next().unwrap().unwrap();
        assert_eq!(first.payload(), "a");
    }
    let rest: Vec<String> = conn
        .notifications()
        .timeout_iter(Duration::from_millis(10))
        .map(|n| n.unwrap().payload().to_owned())
        .collect();
    assert_eq!(rest, ["b", "c"]);
    // Queued notifications are freed with the connection.
    conn.batch_execute("NOTIFY len_chan, 'left behind'")
        .unwrap();
    assert_eq!(conn.notifications().len(), 1);
    conn.reset().unwrap();
    assert_eq!(
        conn.notifications().len(),
        1,
        "received notifications survive a reset"
    );
    drop(conn);
}

#[test]
fn listen_on_a_channel_name_with_a_nul_byte_is_bad_input() {
    let mut conn = connect();
    let error = conn.batch_execute("LISTEN \"bad\0name\"").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadInput, "{error:?}");
    // The connection is untouched.
    assert_eq!(conn.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn unicode_channel_and_payload_round_trip() {
    let mut listener = connect();
    let mut sender = connect();
    listener.batch_execute("LISTEN \"ünïcødé ✓\"").unwrap();
    notify(&mut sender, "ünïcødé ✓", "héllo ✓ — 日本語 🐘");
    let n = listener
        .notifications()
        .timeout_iter(Duration::from_secs(10))
        .next()
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(n.channel(), "ünïcødé ✓");
    assert_eq!(n.payload(), "héllo ✓ — 日本語 🐘");
    let copy = n.clone();
    assert_eq!(copy, n);
    let debug = format!("{n:?}");
    assert!(debug.contains("héllo ✓"), "{debug}");
}

#[test]
fn a_lost_connection_ends_the_iterators_with_an_error() {
    let mut listener = connect();
    listener.batch_execute("LISTEN lost_chan").unwrap();
    let pid = i32::try_from(listener.backend_pid()).unwrap();
    let mut killer = connect();
    let killed: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed);

    {
        let mut notifications = listener.notifications();
        let mut iter = notifications.timeout_iter(Duration::from_secs(10));
        let start = Instant::now();
        let error = match iter.next() {
            Some(Err(e)) => e,
            other => panic!("expected the lost connection's error, got {other:?}"),
        };
        eprintln!(
            "lost connection noticed after {:?}: {error}",
            start.elapsed()
        );
        assert_eq!(error.kind(), ErrorKind::Closed, "{error:?}");
        assert!(iter.next().is_none(), "the iterator ends after the error");
    }
    assert!(listener.is_closed());

    // Every iterator on the closed connection reports it once, then ends.
    let mut notifications = listener.notifications();
    let mut iter = notifications.iter();
    assert!(matches!(iter.next(), Some(Err(e)) if e.is_closed()));
    assert!(iter.next().is_none());
    let mut blocking = notifications.blocking_iter();
    assert!(matches!(blocking.next(), Some(Err(e)) if e.is_closed()));
    assert!(blocking.next().is_none());
    assert_eq!(notifications.len(), 0);
}

/// A signal that interrupts the wait (EINTR) neither ends it early nor makes it fail: the
/// wait resumes for the time that is left.
#[cfg(unix)]
#[test]
fn waits_survive_signals() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction is valid; the handler does nothing, so it is async-signal
    // safe. No SA_RESTART: poll returns EINTR, which is the case under test. SIGUSR2 is used
    // by nothing else in this test binary.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
            0
        );
    }

    let mut conn = connect();
    conn.batch_execute("LISTEN signalled_chan").unwrap();
    let waiting = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&waiting);
    let listener = thread::spawn(move || {
        let start = Instant::now();
        let next = conn
            .notifications()
            .timeout_iter(Duration::from_millis(500))
            .next();
        flag.store(false, Ordering::SeqCst);
        (next.map(|n| n.map_err(|e| e.to_string())), start.elapsed())
    });
    let thread = listener.as_pthread_t();
    let mut signals = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "timeout_iter(500 ms) still waits after 10 s of signals"
        );
        // SAFETY: the thread has not been joined yet, so its pthread_t is valid.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
        signals += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let (next, elapsed) = listener.join().unwrap();
    eprintln!("timeout_iter(500 ms) under {signals} signals returned after {elapsed:?}");
    assert!(next.is_none(), "{next:?}");
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
