//! Notices: the handler set with `set_notice_handler` sees every notice and warning; a
//! panicking handler's panic comes out of the query call, never through libpq; the handler's
//! state lives as long as any result that may call it; without a handler nothing is printed.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pqlib::error::{DbError, Severity, SqlState};
use pqlib::{Config, Connection};

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting to the test server")
}

/// Installs a handler that forwards each notice to the returned channel.
fn collect(conn: &mut Connection) -> Receiver<DbError> {
    let (tx, rx) = mpsc::channel();
    conn.set_notice_handler(move |notice| {
        let _ = tx.send(notice.clone());
    });
    rx
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<non-string panic>".to_owned()
    }
}

#[test]
fn handler_receives_raise_notice() {
    let mut conn = connect();
    let rx = collect(&mut conn);
    conn.batch_execute(
        "DO $$ BEGIN
             RAISE NOTICE 'first %', 1 USING DETAIL = 'some detail', HINT = 'a hint';
             RAISE WARNING 'second';
             RAISE NOTICE 'naïve ✓';
         END $$",
    )
    .unwrap();
    let notices: Vec<DbError> = rx.try_iter().collect();
    assert_eq!(notices.len(), 3, "{notices:?}");
    let first = &notices[0];
    assert_eq!(first.message(), "first 1");
    assert_eq!(first.severity(), "NOTICE");
    assert_eq!(first.parsed_severity(), Some(Severity::Notice));
    assert_eq!(first.code(), &SqlState::SUCCESSFUL_COMPLETION);
    assert_eq!(first.detail(), Some("some detail"));
    assert_eq!(first.hint(), Some("a hint"));
    assert!(first.where_().unwrap().contains("PL/pgSQL"), "{first:?}");
    assert_eq!(notices[1].message(), "second");
    assert_eq!(notices[1].parsed_severity(), Some(Severity::Warning));
    assert_eq!(notices[1].code(), &SqlState::WARNING);
    assert_eq!(notices[2].message(), "naïve ✓");
}

#[test]
fn notices_from_every_query_path() {
    let mut conn = connect();
    let rx = collect(&mut conn);
    conn.batch_execute(
        "CREATE FUNCTION pg_temp.pqlib_noisy(t text) RETURNS int4 LANGUAGE plpgsql AS $$
         BEGIN RAISE NOTICE 'noisy %', t; RETURN 1; END $$",
    )
    .unwrap();
    conn.query("SELECT pg_temp.pqlib_noisy($1)", &[&"query"])
        .unwrap();
    conn.execute("SELECT pg_temp.pqlib_noisy($1)", &[&"execute"])
        .unwrap();
    conn.query_one("SELECT pg_temp.pqlib_noisy('one')", &[])
        .unwrap();
    conn.query_typed(
        "SELECT pg_temp.pqlib_noisy($1)",
        &[(&"typed", pqlib::types::Type::TEXT)],
    )
    .unwrap();
    {
        let mut tx = conn.transaction().unwrap();
        tx.query("SELECT pg_temp.pqlib_noisy('tx')", &[]).unwrap();
        tx.commit().unwrap();
    }
    // A server-generated notice: an implicit-commit warning.
    conn.batch_execute("COMMIT").unwrap();
    let messages: Vec<String> = rx.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(
        messages,
        [
            "noisy query",
            "noisy execute",
            "noisy one",
            "noisy typed",
            "noisy tx",
            "there is no transaction in progress"
        ]
    );
}

#[test]
fn replacing_and_clearing_the_handler() {
    let mut conn = connect();
    let first = collect(&mut conn);
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'one'; END $$")
        .unwrap();
    let second = collect(&mut conn);
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'two'; END $$")
        .unwrap();
    conn.clear_notice_handler();
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'three'; END $$")
        .unwrap();
    let got: Vec<String> = first.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(got, ["one"]);
    let got: Vec<String> = second.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(got, ["two"]);
    // Both handlers were dropped: their senders are gone, so the channels report
    // `Disconnected` at once. A handler leaked by replace or clear would keep its sender
    // alive, and the wait would end in `Timeout` instead.
    for (name, rx) in [("first", &first), ("second", &second)] {
        assert!(
            matches!(
                rx.recv_timeout(Duration::from_secs(5)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            ),
            "the {name} handler is still alive"
        );
    }
}

#[test]
fn server_side_min_messages_filters() {
    let mut conn = connect();
    let rx = collect(&mut conn);
    conn.batch_execute(
        "SET client_min_messages = warning;
         DO $$ BEGIN RAISE NOTICE 'hidden'; RAISE WARNING 'shown'; END $$",
    )
    .unwrap();
    let got: Vec<String> = rx.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(got, ["shown"]);
}

#[test]
fn panicking_handler_panics_out_of_the_call_and_the_connection_survives() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE after_panic (x int4)")
        .unwrap();
    conn.set_notice_handler(|notice| panic!("handler saw: {}", notice.message()));
    let payload = catch_unwind(AssertUnwindSafe(|| {
        conn.batch_execute(
            "INSERT INTO after_panic VALUES (1);
             DO $$ BEGIN RAISE NOTICE 'boom 1'; RAISE NOTICE 'boom 2'; END $$",
        )
    }))
    .expect_err("the handler's panic comes out of batch_execute");
    // The first panic is the one raised; the statement itself ran to completion.
    assert_eq!(panic_message(&*payload), "handler saw: boom 1");
    assert!(!conn.is_closed());
    assert_eq!(conn.transaction_status(), pqlib::TransactionStatus::Idle);
    let n: i64 = conn
        .query_one("SELECT count(*) FROM after_panic", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // The same handler panics again, from the extended-protocol path too.
    let payload = catch_unwind(AssertUnwindSafe(|| {
        conn.execute("DO $$ BEGIN RAISE NOTICE 'boom 3'; END $$", &[])
    }))
    .expect_err("panics again");
    assert_eq!(panic_message(&*payload), "handler saw: boom 3");

    // A new handler gets later notices; no stale panic is left behind.
    let rx = collect(&mut conn);
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'calm'; END $$")
        .unwrap();
    let got: Vec<String> = rx.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(got, ["calm"]);
    assert_eq!(
        conn.query_one("SELECT 2::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[test]
fn panicking_handler_inside_a_transaction() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE tx_panic (x int4)")
        .unwrap();
    conn.set_notice_handler(|_| panic!("no notices please"));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO tx_panic VALUES (1)", &[]).unwrap();
        tx.batch_execute("DO $$ BEGIN RAISE NOTICE 'x'; END $$")
            .unwrap();
        tx.commit().unwrap();
    }));
    // The handler's own panic, re-raised by the call that received the notice.
    let payload = result.expect_err("the handler's panic comes out");
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    assert_eq!(message, Some("no notices please"));
    // The transaction was dropped during the unwind: rolled back.
    conn.clear_notice_handler();
    assert_eq!(conn.transaction_status(), pqlib::TransactionStatus::Idle);
    let n: i64 = conn
        .query_one("SELECT count(*) FROM tx_panic", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn handler_state_lives_as_long_as_the_rows() {
    let mut conn = connect();
    let token = Arc::new(());
    let held = token.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    conn.set_notice_handler(move |n| {
        let _ = &held;
        seen2.lock().unwrap().push(n.message().to_owned());
    });
    assert_eq!(Arc::strong_count(&token), 2);
    let rows = conn
        .query("SELECT 'still here'::text, generate_series(1, 3)", &[])
        .unwrap();
    let one = conn.query_one("SELECT 'owned'::text", &[]).unwrap();
    drop(conn);
    // libpq copied the notice hook into each result: the handler must outlive the connection.
    assert_eq!(
        Arc::strong_count(&token),
        2,
        "handler freed while results live"
    );
    let texts: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(texts, ["still here"; 3]);
    assert_eq!(one.get::<_, &str>(0), "owned");
    drop(rows);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(one);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "handler not freed after the last result"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn replacing_the_handler_frees_the_old_one() {
    let mut conn = connect();
    let token = Arc::new(());
    let held = token.clone();
    conn.set_notice_handler(move |_| {
        let _ = &held;
    });
    assert_eq!(Arc::strong_count(&token), 2);
    conn.clear_notice_handler();
    assert_eq!(Arc::strong_count(&token), 1);
}

/// The config at `conninfo`, with `client_min_messages=debug5`: the server then sends DEBUG
/// notices while the session starts.
fn noisy_config(conninfo: &str) -> Config {
    let mut config: Config = conninfo.parse().unwrap();
    config.options("-c client_min_messages=debug5");
    config
}

/// BUG: notices that arrive while `reset()` reconnects reach the handler, but `reset` never
/// re-raises a panic the handler raised then: it surfaces later, out of an unrelated call.
#[test]
fn panic_during_reset_comes_out_of_reset() {
    let mut conn = noisy_config(&common::conninfo()).connect().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let trigger = armed.clone();
    conn.set_notice_handler(move |_| {
        if trigger.swap(false, Ordering::SeqCst) {
            panic!("notice during reset");
        }
    });
    armed.store(true, Ordering::SeqCst);
    let reset = catch_unwind(AssertUnwindSafe(|| conn.reset()));
    let during_reset = reset.is_err();
    let handler_called = !armed.swap(false, Ordering::SeqCst);
    assert!(handler_called, "the handler was never called during reset");
    let later = catch_unwind(AssertUnwindSafe(|| conn.batch_execute("SELECT 1")));
    let later_panic = later.as_ref().err().map(|p| panic_message(&**p));
    assert_eq!(
        later_panic, None,
        "a panic from reset() surfaced in a later call"
    );
    assert!(
        during_reset,
        "the handler's panic did not come out of reset()"
    );
}

// ---- what is printed without a handler, in a child process --------------------------------

const CHILD: &str = "PQLIB_NOTICES_TEST_CHILD";
const CHILD_CONNINFO: &str = "PQLIB_NOTICES_TEST_CONNINFO";

/// Runs this test binary again as `notices_child`, connecting to `conninfo`.
fn run_child(scenario: &str, conninfo: &str) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "notices_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, scenario)
        .env(CHILD_CONNINFO, conninfo);
    let (status, output) = common::run_bounded(command, Duration::from_secs(60));
    (status.success() && output.contains("CHILD OK"), output)
}

/// A panic payload whose `Drop` panics, with another `Bomb`.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        std::panic::panic_any(Bomb);
    }
}

/// Not a test of its own: the body of the child process that `run_child` starts.
#[test]
fn notices_child() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    let conninfo = std::env::var(CHILD_CONNINFO).unwrap();
    match scenario.as_str() {
        "quiet-long-application-name" => {
            let mut config: Config = conninfo.parse().unwrap();
            config.application_name(&long_application_name("child"));
            let mut conn = config.connect().unwrap();
            conn.batch_execute("SELECT 1").unwrap();
            let mut config: Config = conninfo.parse().unwrap();
            config.application_name(&long_application_name("child-async"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
                let driver = tokio::spawn(connection);
                client.batch_execute("SELECT 1").await.unwrap();
                drop(client);
                driver.await.unwrap().unwrap();
            });
        }
        "quiet" | "quiet-noisy-start" => {
            let mut conn = if scenario == "quiet" {
                Connection::connect(&conninfo).unwrap()
            } else {
                noisy_config(&conninfo).connect().unwrap()
            };
            conn.batch_execute(
                "DO $$ BEGIN RAISE NOTICE 'pqlib-marker-notice'; \
                 RAISE WARNING 'pqlib-marker-warning'; END $$",
            )
            .unwrap();
            let rows = conn.query("SELECT 1", &[]).unwrap();
            drop(conn);
            drop(rows);
        }
        "double-panic" => {
            let mut conn = Connection::connect(&conninfo).unwrap();
            conn.set_notice_handler(|n| panic!("handler saw: {}", n.message()));
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut tx = conn.transaction().unwrap();
                // The transaction ends at SQL level, then a notice makes the handler panic;
                // dropping `tx` while unwinding sends ROLLBACK, which warns "there is no
                // transaction in progress", and the handler panics again.
                tx.batch_execute("COMMIT; DO $$ BEGIN RAISE NOTICE 'first'; END $$")
                    .unwrap();
            }));
            let payload = result.expect_err("the handler's panic propagates");
            assert_eq!(panic_message(&*payload), "handler saw: first");
        }
        "bomb-payload" => {
            let mut conn = Connection::connect(&conninfo).unwrap();
            conn.set_notice_handler(|_| std::panic::panic_any(Bomb));
            // Two notices in one libpq call: the second panic's payload is not the one raised
            // and must be disposed of without its panicking Drop unwinding into libpq.
            let payload = catch_unwind(AssertUnwindSafe(|| {
                conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'one'; RAISE NOTICE 'two'; END $$")
            }))
            .expect_err("the handler's panic comes out of batch_execute");
            assert!(payload.is::<Bomb>(), "the first payload is resumed");
            // Dropping a Bomb panics: the test keeps it.
            std::mem::forget(payload);
            conn.clear_notice_handler();
            assert!(!conn.is_closed());
            assert_eq!(conn.transaction_status(), pqlib::TransactionStatus::Idle);
            let two: i32 = conn.query_one("SELECT 2::int4", &[]).unwrap().get(0);
            assert_eq!(two, 2);
        }
        "bomb-payload-while-unwinding" => {
            let mut conn = Connection::connect(&conninfo).unwrap();
            conn.set_notice_handler(|_| std::panic::panic_any(Bomb));
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut tx = conn.transaction().unwrap();
                // As in "double-panic": the rollback that dropping `tx` sends while unwinding
                // draws a second notice, whose payload cannot be raised and must not be
                // dropped while the thread unwinds.
                tx.batch_execute("COMMIT; DO $$ BEGIN RAISE NOTICE 'first'; END $$")
                    .unwrap();
            }));
            let payload = result.expect_err("the handler's panic propagates");
            assert!(payload.is::<Bomb>());
            std::mem::forget(payload);
            conn.clear_notice_handler();
            let two: i32 = conn.query_one("SELECT 2::int4", &[]).unwrap().get(0);
            assert_eq!(two, 2);
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("CHILD OK");
}

#[test]
fn no_handler_prints_nothing() {
    let (ok, output) = run_child("quiet", &common::conninfo());
    assert!(ok, "child failed:\n{output}");
    assert!(
        !output.contains("pqlib-marker"),
        "notice printed:\n{output}"
    );
    assert!(
        !output.contains("NOTICE") && !output.contains("WARNING"),
        "{output}"
    );
}

/// Notices the server sends while the session starts used to be printed to stderr by libpq's
/// default notice processor (the receiver was installed after `PQconnectdbParams` returned);
/// the connect is now made of `PQconnectStartParams` + `PQconnectPoll` steps, with the
/// receiver in place from the start.
#[test]
fn no_handler_prints_nothing_during_connect() {
    let (ok, output) = run_child("quiet-noisy-start", &common::conninfo());
    assert!(ok, "child failed:\n{output}");
    assert!(!output.contains("DEBUG"), "notices printed:\n{output}");
}

/// The truncation notice of a too-long `application_name`, from both clients without a
/// handler: logged, not printed.
#[test]
fn no_handler_prints_nothing_for_a_long_application_name() {
    let (ok, output) = run_child("quiet-long-application-name", &common::conninfo());
    assert!(ok, "child failed:\n{output}");
    assert!(!output.contains("truncated"), "notice printed:\n{output}");
    assert!(!output.contains("NOTICE"), "notice printed:\n{output}");
}

/// BUG: `Transaction`'s `Drop` re-raises a notice handler's panic even while the thread is
/// already unwinding from one, which aborts the process.
#[test]
fn handler_panic_while_a_transaction_unwinds_does_not_abort() {
    let (ok, output) = run_child("double-panic", &common::conninfo());
    assert!(ok, "child failed (aborted?):\n{output}");
}

/// Issue 13, finding 6: a handler that panics twice in one libpq call, with a payload whose
/// `Drop` panics. The second payload used to be dropped in the C-called receiver, outside
/// `catch_unwind`, which aborts the process.
#[test]
fn second_panic_payload_with_a_panicking_drop_does_not_abort() {
    let (ok, output) = run_child("bomb-payload", &common::conninfo());
    assert!(ok, "child failed (aborted?):\n{output}");
}

/// The same payload when the second panic comes while the thread unwinds from the first: it
/// can be neither raised nor dropped there.
#[test]
fn panic_payload_with_a_panicking_drop_while_unwinding_does_not_abort() {
    let (ok, output) = run_child("bomb-payload-while-unwinding", &common::conninfo());
    assert!(ok, "child failed (aborted?):\n{output}");
}

// ---- notices sent while the session starts ---------------------------------------------

/// An `application_name` longer than the server keeps (63 bytes), starting with `marker`:
/// the server truncates it and says so with a NOTICE during startup.
fn long_application_name(marker: &str) -> String {
    format!("{marker}-{}", "x".repeat(70))
}

fn is_truncation_notice(notice: &DbError, marker: &str) -> bool {
    notice.message().contains("truncated") && notice.message().contains(marker)
}

/// A config with a callback that forwards each notice to the returned channel.
fn config_with_callback(marker: &str) -> (Config, Receiver<DbError>) {
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name(marker));
    let (tx, rx) = mpsc::channel();
    config.notice_callback(move |notice| {
        let _ = tx.send(notice.clone());
    });
    (config, rx)
}

#[test]
fn config_callback_gets_the_startup_notice() {
    let (config, rx) = config_with_callback("pqlib-startup-blocking");
    let mut conn = config.connect().unwrap();
    // Delivered while connecting: there before connect returned.
    let startup: Vec<DbError> = rx.try_iter().collect();
    assert_eq!(
        startup
            .iter()
            .filter(|n| is_truncation_notice(n, "pqlib-startup-blocking"))
            .count(),
        1,
        "{startup:?}"
    );
    assert_eq!(startup[0].parsed_severity(), Some(Severity::Notice));
    // The same callback goes on receiving the connection's later notices.
    conn.batch_execute("DO $$ BEGIN RAISE NOTICE 'after startup'; END $$")
        .unwrap();
    let later: Vec<String> = rx.try_iter().map(|n| n.message().to_owned()).collect();
    assert_eq!(later, ["after startup"]);
    // And the server really did truncate the name.
    let name: String = conn.query_one("SHOW application_name", &[]).unwrap().get(0);
    assert_eq!(name.len(), 63, "{name}");
}

#[test]
fn config_callback_is_shared_by_clones_and_replaced_by_set_notice_handler() {
    let (config, rx) = config_with_callback("pqlib-startup-clone");
    let clone = config.clone();
    assert_eq!(clone, config);
    assert!(format!("{clone:?}").contains("notice_callback"));
    let _first = config.connect().unwrap();
    let mut second = clone.connect().unwrap();
    let startup = rx
        .try_iter()
        .filter(|n| is_truncation_notice(n, "pqlib-startup-clone"))
        .count();
    assert_eq!(startup, 2);
    let (tx, own) = mpsc::channel();
    second.set_notice_handler(move |n| {
        let _ = tx.send(n.message().to_owned());
    });
    second
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'own'; END $$")
        .unwrap();
    assert_eq!(own.try_iter().collect::<Vec<_>>(), ["own"]);
    assert_eq!(rx.try_iter().count(), 0);
    // A config with another callback is not equal.
    let mut other = config.clone();
    other.notice_callback(|_| {});
    assert_ne!(other, config);
}

#[test]
fn startup_notices_also_come_with_debug_messages() {
    // client_min_messages=debug5 makes the server send DEBUG notices while the session
    // starts, before and after authentication.
    let mut config = noisy_config(&common::conninfo());
    let (tx, rx) = mpsc::channel();
    config.notice_callback(move |notice| {
        let _ = tx.send(notice.severity().to_owned());
    });
    let conn = config.connect().unwrap();
    let severities: Vec<String> = rx.try_iter().collect();
    assert!(
        severities.iter().any(|s| s == "DEBUG"),
        "no DEBUG notice during startup: {severities:?}"
    );
    drop(conn);
}

#[test]
fn panicking_config_callback_during_startup_panics_out_of_connect() {
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name("pqlib-startup-panic"));
    let armed = Arc::new(AtomicBool::new(true));
    let trigger = armed.clone();
    config.notice_callback(move |notice| {
        if trigger.swap(false, Ordering::SeqCst) {
            panic!("startup notice: {}", notice.message());
        }
    });
    let payload = catch_unwind(AssertUnwindSafe(|| config.connect()))
        .expect_err("the callback's panic comes out of connect");
    let message = panic_message(&*payload);
    assert!(
        message.starts_with("startup notice: ") && message.contains("truncated"),
        "{message}"
    );
    // Nothing is left behind: the same config connects, and the (now calm) callback works.
    let mut conn = config.connect().unwrap();
    assert_eq!(
        conn.query_one("SELECT 1::int4", &[])
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

// ---- the `log` crate, without a handler --------------------------------------------------

/// The captured log lines that mention `marker`.
fn logged(marker: &str) -> Vec<String> {
    let text = common::captured_logs();
    text.lines()
        .filter(|line| line.contains(marker))
        .map(str::to_owned)
        .collect()
}

#[test]
fn startup_notice_without_a_handler_is_logged() {
    common::capture_logs();
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name("pqlib-startup-log"));
    let conn = config.connect().unwrap();
    let lines = logged("pqlib-startup-log");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("INFO pqlib::notice: ") && lines[0].contains("truncated"),
        "{lines:?}"
    );
    drop(conn);
}

// ---- the async client ------------------------------------------------------------------

/// Runs `test` on a current-thread runtime, failing it if it takes more than a minute.
fn block_on_bounded<F: std::future::Future>(test: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), test)
            .await
            .expect("the test finishes within a minute")
    })
}

#[test]
fn async_config_callback_gets_the_startup_notice() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let (config, rx) = config_with_callback("pqlib-startup-async");
    block_on_bounded(async {
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute("DO $$ BEGIN RAISE NOTICE 'async later'; END $$")
            .await
            .unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .expect("the connection task ends once the client is gone")
            .unwrap()
            .unwrap();
    });
    let notices: Vec<DbError> = rx.try_iter().collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        is_truncation_notice(&notices[0], "pqlib-startup-async"),
        "{notices:?}"
    );
    assert_eq!(notices[1].message(), "async later");
}

#[test]
fn async_startup_notice_comes_first_from_poll_message() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name("pqlib-startup-poll"));
    block_on_bounded(async {
        let (client, mut connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        let query = tokio::spawn(async move { client.batch_execute("SELECT 1").await });
        let message = tokio::time::timeout(
            Duration::from_secs(30),
            std::future::poll_fn(|cx| connection.poll_message(cx)),
        )
        .await
        .expect("a message within 30 s");
        match message {
            Some(Ok(pqlib::tokio::AsyncMessage::Notice(notice))) => {
                assert!(
                    is_truncation_notice(&notice, "pqlib-startup-poll"),
                    "{notice:?}"
                );
            }
            other => panic!("expected the startup notice, got {other:?}"),
        }
        let driver = tokio::spawn(connection);
        query.await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
}

#[test]
fn async_startup_notice_without_a_handler_is_logged() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    common::capture_logs();
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name("pqlib-startup-async-log"));
    block_on_bounded(async {
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute("SELECT 1").await.unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
    let lines = logged("pqlib-startup-async-log");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("INFO pqlib::notice: "), "{lines:?}");
}

#[test]
fn async_panicking_config_callback_ends_the_connection_task() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut config: Config = common::conninfo().parse().unwrap();
    config.application_name(&long_application_name("pqlib-startup-async-panic"));
    config.notice_callback(|notice| panic!("async startup notice: {}", notice.message()));
    block_on_bounded(async {
        let (client, connection) = pqlib::tokio::connect_config(&config).await.unwrap();
        let driver = tokio::spawn(connection);
        let joined = tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .expect("the task ends");
        let payload = joined.expect_err("the task panicked").into_panic();
        let message = panic_message(&*payload);
        assert!(message.starts_with("async startup notice: "), "{message}");
        // The client sees the connection gone, not a hang.
        let e = tokio::time::timeout(Duration::from_secs(30), client.batch_execute("SELECT 1"))
            .await
            .expect("an answer within 30 s")
            .unwrap_err();
        assert!(e.is_closed(), "{e}");
    });
}
