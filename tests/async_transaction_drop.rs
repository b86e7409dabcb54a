//! A `transaction()` future (BEGIN, or SAVEPOINT when nested) dropped before its answer
//! arrives, by hand or by `tokio::time::timeout`: the client's next statement must run
//! outside the abandoned transaction or savepoint, directly and through deadpool, and a
//! BEGIN that failed must leave no rollback behind. The same for named savepoints
//! (`savepoint(name)`) and `build_transaction().start()`.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pqlib::error::SqlState;
use pqlib::pool::deadpool as dp;
use pqlib::tokio::Client;

/// The longest any single step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("a step took longer than 30 s")
}

async fn connect() -> Client {
    let (client, connection) = bounded(pqlib::tokio::connect(&common::conninfo()))
        .await
        .unwrap();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    client
}

/// Polls `future` exactly once (so its request is queued), lets the connection task run
/// (so the request is sent) if `yield_first`, then drops the future.
async fn poll_once_then_drop<F: Future>(future: F, yield_first: bool) {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        matches!(future.as_mut().poll(&mut cx), Poll::Pending),
        "a request cannot be answered before it is sent"
    );
    if yield_first {
        tokio::task::yield_now().await;
    }
}

async fn poll_once_and_drop<F: Future>(future: F) {
    poll_once_then_drop(future, true).await;
}

async fn txid(client: &Client) -> i64 {
    bounded(client.query_one("SELECT txid_current()", &[]))
        .await
        .unwrap()
        .get(0)
}

/// Fails unless two statements of `client` run in two transactions: no transaction block
/// is open on the session.
async fn assert_outside_transaction(client: &Client, context: &str) {
    let first = txid(client).await;
    let second = txid(client).await;
    assert_ne!(
        first, second,
        "{context}: the session is still inside a transaction"
    );
}

/// Fails unless `pqlib_savepoint_{depth}` does not exist in the transaction `client` is in.
/// Leaves that transaction aborted.
async fn assert_no_savepoint(client: &Client, depth: u32, context: &str) {
    let error =
        bounded(client.batch_execute(&format!("ROLLBACK TO SAVEPOINT pqlib_savepoint_{depth}")))
            .await
            .expect_err(&format!(
                "{context}: the abandoned savepoint is still there"
            ));
    assert_eq!(
        error.code(),
        Some(&SqlState::S_E_INVALID_SPECIFICATION),
        "{context}: {error}"
    );
}

/// A small reproducible generator (xorshift64*), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// A tiny timeout: zero to ~1.5 ms, so it fires before, during and after the BEGIN.
    fn tiny(&mut self) -> Duration {
        Duration::from_micros(self.below(1500))
    }

    /// Runs `future` until a random point: half the time a tiny `timeout` (whose timer ticks
    /// every millisecond, so mostly before or after the answer), otherwise a random number
    /// of yields, which on a multi-thread runtime lands anywhere while the statement is on
    /// its way. `None` if the future was dropped unfinished.
    async fn cut_short<F: Future>(&mut self, future: F) -> Option<F::Output> {
        if self.below(2) == 0 {
            return tokio::time::timeout(self.tiny(), future).await.ok();
        }
        let yields = self.below(40);
        tokio::select! {
            biased;
            output = future => Some(output),
            () = async {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            } => None,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_begin_dropped_after_it_was_queued_leaves_no_transaction() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    assert_outside_transaction(&client, "before").await;
    poll_once_and_drop(client.transaction()).await;
    assert_outside_transaction(&client, "BEGIN sent, future dropped").await;

    // Queued, then dropped before the connection task saw it: it skips the BEGIN, and the
    // ROLLBACK behind it (which depends on the BEGIN) as well.
    poll_once_then_drop(client.transaction(), false).await;
    assert_outside_transaction(&client, "BEGIN never sent").await;

    // The client still works for real transactions afterwards.
    let tx = bounded(client.transaction()).await.unwrap();
    let a = txid(&tx).await;
    let b = txid(&tx).await;
    assert_eq!(a, b);
    bounded(tx.commit()).await.unwrap();
    assert_outside_transaction(&client, "after commit").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_savepoint_dropped_after_it_was_queued_is_rolled_back_and_released() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    bounded(client.batch_execute(
        "DROP TABLE IF EXISTS txn_drop_nested; CREATE TABLE txn_drop_nested (x int4)",
    ))
    .await
    .unwrap();

    let mut tx = bounded(client.transaction()).await.unwrap();
    bounded(tx.execute("INSERT INTO txn_drop_nested VALUES (1)", &[]))
        .await
        .unwrap();
    poll_once_and_drop(tx.transaction()).await;
    // The savepoint was made and then rolled back and released: outer work goes on in the
    // outer transaction, and a later nested one gets depth 1 again with its own savepoint.
    bounded(tx.execute("INSERT INTO txn_drop_nested VALUES (2)", &[]))
        .await
        .unwrap();
    {
        let nested = bounded(tx.transaction()).await.unwrap();
        bounded(nested.execute("INSERT INTO txn_drop_nested VALUES (3)", &[]))
            .await
            .unwrap();
        bounded(nested.rollback()).await.unwrap();
    }
    assert_no_savepoint(&tx, 1, "nested future dropped").await;
    // The check aborted the transaction: its rollback returns the session to idle.
    drop(tx);
    assert_outside_transaction(&client, "after the outer rollback").await;

    // The same again, committed: only rows 1 and 2 are there.
    let mut tx = bounded(client.transaction()).await.unwrap();
    bounded(tx.execute("INSERT INTO txn_drop_nested VALUES (1)", &[]))
        .await
        .unwrap();
    poll_once_and_drop(tx.transaction()).await;
    bounded(tx.execute("INSERT INTO txn_drop_nested VALUES (2)", &[]))
        .await
        .unwrap();
    bounded(tx.commit()).await.unwrap();
    let rows: Vec<i32> = bounded(client.query("SELECT x FROM txn_drop_nested ORDER BY x", &[]))
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, [1, 2]);
    assert_outside_transaction(&client, "after commit").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_begin_leaves_no_rollback_behind() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    // Another clone's transaction, aborted by an error.
    let other = client.clone();
    bounded(other.batch_execute("BEGIN")).await.unwrap();
    bounded(other.batch_execute("SELECT 1/0"))
        .await
        .unwrap_err();

    // BEGIN fails in the aborted transaction; its rollback must not run and end it.
    poll_once_and_drop(client.transaction()).await;
    let error = bounded(other.batch_execute("SELECT 1")).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "the aborted transaction was ended by someone else's cleanup: {error}"
    );
    // And awaited to the end, the failed BEGIN is an error and leaves nothing either.
    let error = bounded(client.transaction()).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    let error = bounded(other.batch_execute("SELECT 1")).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    bounded(other.batch_execute("ROLLBACK")).await.unwrap();
    assert_outside_transaction(&client, "after the owner's rollback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_under_random_timeouts_never_leave_one_open() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    let mut random = Random(0x5eed_0001);
    let (mut abandoned, mut finished) = (0, 0);
    for i in 0..300 {
        match random.cut_short(client.transaction()).await {
            Some(tx) => {
                finished += 1;
                drop(tx.unwrap());
            }
            None => abandoned += 1,
        }
        assert_outside_transaction(&client, &format!("iteration {i}")).await;
    }
    eprintln!("{abandoned} abandoned, {finished} finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_under_random_timeouts_never_leave_one_behind() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    let mut random = Random(0x5eed_0002);
    let (mut abandoned, mut finished) = (0, 0);
    for i in 0..300 {
        let context = format!("iteration {i}");
        let mut tx = bounded(client.transaction()).await.unwrap();
        match random.cut_short(tx.transaction()).await {
            Some(nested) => {
                finished += 1;
                drop(nested.unwrap());
            }
            None => abandoned += 1,
        }
        assert_no_savepoint(&tx, 1, &context).await;
        drop(tx);
        assert_outside_transaction(&client, &context).await;
    }
    eprintln!("{abandoned} abandoned, {finished} finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_transactions_under_random_timeouts_never_leave_one_open() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let manager = dp::Manager::new(common::conninfo().parse().unwrap());
    let pool = dp::Pool::builder(manager)
        .max_size(1)
        .runtime(dp::Runtime::Tokio1)
        .wait_timeout(Some(STEP))
        .create_timeout(Some(STEP))
        .build()
        .unwrap();
    let mut random = Random(0x5eed_0003);
    let (mut abandoned, mut finished) = (0, 0);
    for i in 0..300 {
        let context = format!("iteration {i}");
        let mut object = pool.get().await.unwrap();
        match random.cut_short(object.transaction()).await {
            Some(tx) => {
                let mut tx = tx.unwrap();
                finished += 1;
                // Half the time a savepoint under a timeout too.
                if random.below(2) == 0 {
                    let _ = random.cut_short(tx.transaction()).await;
                    assert_no_savepoint(&tx, 1, &context).await;
                }
                drop(tx);
            }
            None => abandoned += 1,
        }
        // The same pooled client, before it goes back to the pool.
        assert_outside_transaction(object.client(), &context).await;
    }
    eprintln!("{abandoned} abandoned, {finished} finished");
}

/// Fails unless the savepoint `quoted` (an SQL identifier) does not exist in the transaction
/// `client` is in. Leaves that transaction aborted.
async fn assert_no_named_savepoint(client: &Client, quoted: &str, context: &str) {
    let error = bounded(client.batch_execute(&format!("ROLLBACK TO SAVEPOINT {quoted}")))
        .await
        .expect_err(&format!(
            "{context}: the abandoned savepoint {quoted} is still there"
        ));
    assert_eq!(
        error.code(),
        Some(&SqlState::S_E_INVALID_SPECIFICATION),
        "{context}: {error}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_named_savepoint_dropped_after_it_was_queued_is_rolled_back_and_released() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    for (yield_first, context) in [(true, "SAVEPOINT sent"), (false, "SAVEPOINT never sent")] {
        let mut tx = bounded(client.transaction()).await.unwrap();
        poll_once_then_drop(tx.savepoint("named \"sp\""), yield_first).await;
        // The outer transaction goes on, outside the abandoned savepoint.
        let a = txid(&tx).await;
        let b = txid(&tx).await;
        assert_eq!(a, b, "{context}");
        assert_no_named_savepoint(&tx, "\"named \"\"sp\"\"\"", context).await;
        drop(tx);
        assert_outside_transaction(&client, context).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_savepoints_under_random_timeouts_never_leave_one_behind() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    let mut random = Random(0x5eed_0004);
    let (mut abandoned, mut finished) = (0, 0);
    for i in 0..300 {
        let context = format!("iteration {i}");
        let mut tx = bounded(client.transaction()).await.unwrap();
        match random.cut_short(tx.savepoint("ünï code")).await {
            Some(nested) => {
                finished += 1;
                drop(nested.unwrap());
            }
            None => abandoned += 1,
        }
        assert_no_named_savepoint(&tx, "\"ünï code\"", &context).await;
        drop(tx);
        assert_outside_transaction(&client, &context).await;
    }
    eprintln!("{abandoned} abandoned, {finished} finished");
}

#[tokio::test(flavor = "current_thread")]
async fn a_build_transaction_start_dropped_leaves_no_transaction() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    for (yield_first, context) in [(true, "BEGIN sent"), (false, "BEGIN never sent")] {
        poll_once_then_drop(
            client
                .build_transaction()
                .isolation_level(pqlib::IsolationLevel::Serializable)
                .read_only(true)
                .start(),
            yield_first,
        )
        .await;
        assert_outside_transaction(&client, context).await;
        // Not left read-only either: a write works.
        bounded(client.batch_execute("CREATE TEMP TABLE IF NOT EXISTS built_drop (x int4)"))
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_transactions_under_random_timeouts_never_leave_one_open() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let mut client = connect().await;
    let mut random = Random(0x5eed_0005);
    let (mut abandoned, mut finished) = (0, 0);
    for i in 0..300 {
        let start = client
            .build_transaction()
            .isolation_level(pqlib::IsolationLevel::RepeatableRead)
            .deferrable(true)
            .start();
        match random.cut_short(start).await {
            Some(tx) => {
                finished += 1;
                drop(tx.unwrap());
            }
            None => abandoned += 1,
        }
        assert_outside_transaction(&client, &format!("iteration {i}")).await;
    }
    eprintln!("{abandoned} abandoned, {finished} finished");
}
