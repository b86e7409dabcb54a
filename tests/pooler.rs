//! Behind a connection pooler: each test starts its own `TempCluster` and a
//! `pqlib::tempdb::TempPgBouncer` in front of it. What the default prepare policy does under
//! transaction pooling (named statements land on the wrong server connection), that
//! `PreparePolicy::Never` works there, blocking and async, and what statement pooling does
//! to a transaction.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pqlib::error::ErrorKind;
use pqlib::tempdb::{PoolMode, TempCluster, TempClusterErrorKind, TempPgBouncer};
use pqlib::{Config, Connection, PreparePolicy, SimpleQueryMessage};

/// Clients at once: many more than the pool has server connections.
const CLIENTS: usize = 64;
const POOL_SIZE: u32 = 4;
/// How long each client keeps querying.
const LOAD_TIME: Duration = Duration::from_secs(3);
/// Distinct SQL texts each default-policy client prepares (all stay in its cache).
const DEFAULT_TEXTS: usize = 5;

fn start_cluster() -> TempCluster {
    TempCluster::start().unwrap_or_else(|e| panic!("{e}"))
}

/// A PgBouncer in `mode` with `pool_size` server connections in front of `cluster`, or
/// `None` (skipped; fails under PQLIB_TEST_NO_SKIP) where PgBouncer is not installed.
fn start_bouncer(cluster: &TempCluster, mode: PoolMode, pool_size: u32) -> Option<TempPgBouncer> {
    let start = |extra: Option<&str>| {
        let mut builder = TempPgBouncer::builder(cluster);
        builder.pool_mode(mode).pool_size(pool_size);
        if let Some(line) = extra {
            builder.setting(line);
        }
        builder.start()
    };
    let bouncer = match start(None) {
        Ok(bouncer) => bouncer,
        Err(e) if e.kind() == TempClusterErrorKind::BinariesNotFound => {
            common::skip(&e.to_string());
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    // PgBouncer 1.21 learned to track protocol-level prepared statements
    // (`max_prepared_statements`, on by default since 1.22). These tests are about a pooler
    // that does not, as 1.18 (Debian 12) does not: turn it off where it exists.
    if version_at_least(bouncer.version(), (1, 21)) {
        drop(bouncer);
        return Some(start(Some("max_prepared_statements = 0")).unwrap_or_else(|e| panic!("{e}")));
    }
    Some(bouncer)
}

fn version_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// The `k`th SQL text: the same parameter and result types for every `k` (so that a named
/// statement run on a server connection where that name means another text answers with a
/// wrong value rather than an error), a different answer for each.
fn text(k: usize) -> String {
    format!(
        "SELECT $1::int8 * {} AS product, $2::text || '-{k}' AS tagged",
        k + 2
    )
}

/// What `text(k)` answers for `n` and `s`.
fn expected(k: usize, n: i64, s: &str) -> (i64, String) {
    (n * (k as i64 + 2), format!("{s}-{k}"))
}

/// The per-call values of call `call` of client `client`.
fn values(client: usize, call: u64) -> (i64, String) {
    let n = (client as i64) * 1_000_003 + call as i64 * 7 + 1;
    (n, format!("c{client}/{call}"))
}

/// The rows of `sql` on the admin console, as (column name, value) maps.
fn admin_rows(bouncer: &TempPgBouncer, sql: &str) -> Vec<BTreeMap<String, String>> {
    let mut admin = Connection::connect(&bouncer.admin_conninfo())
        .unwrap_or_else(|e| panic!("admin console: {e}"));
    let messages = admin
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        (
                            column.name().to_owned(),
                            row.get(i).unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Through the pooler to the cluster: the cluster's port, read with the simple protocol
/// (no statement to prepare, whatever the pool mode).
fn cluster_port_through(conn: &mut Connection) -> pqlib::Result<String> {
    let messages = conn.simple_query("SELECT current_setting('port')")?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row"))
}

#[test]
fn pgbouncer_starts_in_every_mode_and_restarts() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    for mode in [
        PoolMode::Session,
        PoolMode::Transaction,
        PoolMode::Statement,
    ] {
        let Some(mut bouncer) = start_bouncer(&cluster, mode, 2) else {
            return;
        };
        assert!(
            bouncer.version().starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            bouncer.version()
        );
        assert_ne!(bouncer.port(), cluster.port());
        let socket = bouncer
            .socket_dir()
            .join(format!(".s.PGSQL.{}", bouncer.port()));
        assert!(socket.exists(), "no socket at {}", socket.display());
        assert!(bouncer.log_file().is_file());

        let conninfos = [bouncer.conninfo(), bouncer.tcp_conninfo()];
        let mut open = Vec::new();
        for conninfo in &conninfos {
            let mut conn = Connection::connect(conninfo)
                .unwrap_or_else(|e| panic!("{mode:?} {conninfo}: {e}"));
            assert_eq!(
                cluster_port_through(&mut conn).unwrap(),
                cluster.port().to_string(),
                "{mode:?} {conninfo}"
            );
            open.push(conn);
        }
        // One client over the socket and one over TCP.
        let clients = admin_rows(&bouncer, "SHOW CLIENTS");
        let addrs: Vec<&str> = clients
            .iter()
            .filter(|c| c["database"] == "postgres")
            .map(|c| c["addr"].as_str())
            .collect();
        assert!(addrs.contains(&"unix"), "{mode:?} {clients:?}");
        assert!(addrs.contains(&"127.0.0.1"), "{mode:?} {clients:?}");

        let pools = admin_rows(&bouncer, "SHOW POOLS");
        let pool = pools
            .iter()
            .find(|p| p["database"] == "postgres" && p["user"] == "postgres")
            .unwrap_or_else(|| panic!("{mode:?}: no pool for postgres in {pools:?}"));
        assert_eq!(pool["pool_mode"], mode.as_str(), "{pools:?}");

        let (old_pid, port) = (bouncer.pid(), bouncer.port());
        bouncer
            .restart()
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_ne!(bouncer.pid(), old_pid);
        assert_eq!(bouncer.port(), port, "restarted on another port");
        assert!(
            socket.exists(),
            "no socket at {} after the restart",
            socket.display()
        );
        assert!(
            !common::process_exists(old_pid),
            "pgbouncer {old_pid} lives on"
        );
        for mut conn in open {
            let err = cluster_port_through(&mut conn).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Closed, "{mode:?}: {err}");
        }
        for conninfo in &conninfos {
            let mut conn = Connection::connect(conninfo)
                .unwrap_or_else(|e| panic!("{mode:?} after restart, {conninfo}: {e}"));
            assert_eq!(
                cluster_port_through(&mut conn).unwrap(),
                cluster.port().to_string()
            );
        }
        let root = bouncer.socket_dir().to_owned();
        let pid = bouncer.pid();
        bouncer.stop().unwrap_or_else(|e| panic!("{e}"));
        assert!(!root.exists(), "{} left behind", root.display());
        assert!(!common::process_exists(pid), "pgbouncer {pid} still runs");
    }
}

#[test]
fn pgbouncer_lets_in_any_role_of_the_cluster() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Transaction, 2) else {
        return;
    };
    Connection::connect(&cluster.conninfo())
        .unwrap()
        .batch_execute("CREATE ROLE app LOGIN")
        .unwrap();
    // Not in PgBouncer's auth file: looked up in the cluster (auth_user, auth_query).
    for conninfo in [bouncer.conninfo(), bouncer.tcp_conninfo()] {
        let conninfo = format!("{conninfo} user=app");
        let mut conn = Connection::connect(&conninfo).unwrap_or_else(|e| panic!("{e}"));
        let messages = conn.simple_query("SELECT current_user").unwrap();
        let user = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(user.as_deref(), Some("app"), "{conninfo}");
    }
    // A role the cluster does not have is refused.
    let err = Connection::connect(&format!("{} user=nobody_here", bouncer.conninfo()))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
}

#[test]
fn pgbouncer_startup_parameters() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Session, 2) else {
        return;
    };
    let show = |conn: &mut Connection, setting: &str| -> String {
        let messages = conn.simple_query(&format!("SHOW {setting}")).unwrap();
        messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap()
    };
    // What libpq and pqlib send by themselves passes, application_name included.
    let conninfo = format!("{} application_name=pooled", bouncer.conninfo());
    let mut conn = Connection::connect(&conninfo).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(show(&mut conn, "application_name"), "pooled");
    assert_eq!(show(&mut conn, "client_encoding"), "UTF8");

    // `options` is not something PgBouncer 1.18 understands: the connection is refused.
    let with_options = format!("{} options='-c work_mem=7MB'", bouncer.conninfo());
    match Connection::connect(&with_options) {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
            assert!(
                e.to_string()
                    .contains("unsupported startup parameter: options"),
                "{e}"
            );
        }
        // PgBouncer 1.20 learned to pass `-c` settings in `options` on.
        Ok(mut conn) => {
            assert!(
                version_at_least(bouncer.version(), (1, 20)),
                "{}",
                bouncer.version()
            );
            assert_eq!(show(&mut conn, "work_mem"), "7MB");
        }
    }
    drop(bouncer);

    // Told to ignore it, PgBouncer drops it: the server never sees the setting.
    let mut builder = TempPgBouncer::builder(&cluster);
    builder.setting("ignore_startup_parameters = options");
    let bouncer = builder.start().unwrap_or_else(|e| panic!("{e}"));
    if !version_at_least(bouncer.version(), (1, 20)) {
        let with_options = format!("{} options='-c work_mem=7MB'", bouncer.conninfo());
        let mut conn = Connection::connect(&with_options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show(&mut conn, "work_mem"), "4MB");
    }
}

/// What a load's clients saw: answers checked, errors by SQLSTATE (or kind) with one
/// message each, and answers that were wrong.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<String, (u64, String)>,
    wrong: u64,
    wrong_example: Option<String>,
}

impl Tally {
    fn error(&mut self, e: &pqlib::Error) {
        let key = match e.code() {
            Some(code) => code.code().to_owned(),
            None => format!("{:?}", e.kind()),
        };
        let entry = self.errors.entry(key).or_insert((0, e.to_string()));
        entry.0 += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

#[test]
fn the_default_policy_breaks_behind_transaction_pooling() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Transaction, POOL_SIZE) else {
        return;
    };
    let conninfo = bouncer.conninfo();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + LOAD_TIME;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let conninfo = conninfo.clone();
            let tally = tally.clone();
            thread::spawn(move || {
                let mut conn = Connection::connect(&conninfo).unwrap_or_else(|e| panic!("{e}"));
                let mut local = Tally::default();
                let mut call = 0;
                while Instant::now() < until {
                    for k in 0..DEFAULT_TEXTS {
                        call += 1;
                        let (n, s) = values(client, call);
                        match conn.query_one(&text(k), &[&n, &s]) {
                            Ok(row) => {
                                let got: (i64, String) = (row.get(0), row.get(1));
                                if got == expected(k, n, &s) {
                                    local.ok += 1;
                                } else {
                                    local.wrong += 1;
                                    local.wrong_example.get_or_insert_with(|| {
                                        format!("{:?} answered {got:?} for ({n}, {s:?})", text(k))
                                    });
                                }
                            }
                            Err(e) => local.error(&e),
                        }
                    }
                }
                let mut tally = tally.lock().unwrap();
                tally.ok += local.ok;
                tally.wrong += local.wrong;
                if tally.wrong_example.is_none() {
                    tally.wrong_example = local.wrong_example;
                }
                for (key, (n, message)) in local.errors {
                    tally.errors.entry(key).or_insert((0, message)).0 += n;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    eprintln!(
        "default policy, {CLIENTS} clients over {POOL_SIZE} server connections in transaction \
         mode: {} answers right, {} wrong, {} errors",
        tally.ok,
        tally.wrong,
        tally.error_count()
    );
    for (code, (n, message)) in &tally.errors {
        eprintln!("  {n} x {code}: {message}");
    }
    if let Some(example) = &tally.wrong_example {
        eprintln!("  a wrong answer: {example}");
    }
    assert!(tally.error_count() > 0, "no errors: {tally:?}");
    // Statement names carry a random per-session part: a name another client prepared on
    // that server connection is never taken for this client's text (with counted names,
    // pqlib_1 .. pqlib_5, a third of the answers here came from another text).
    assert_eq!(tally.wrong, 0, "{:?}", tally.wrong_example);
    for (code, (_, message)) in &tally.errors {
        // 26000 invalid_sql_statement_name: `prepared statement "pqlib_3" does not exist`,
        // run on a server connection that never prepared it; 42P05 duplicate_prepared_statement:
        // `prepared statement "pqlib_1" already exists`, prepared where another client had.
        match code.as_str() {
            "26000" => assert!(message.contains("does not exist"), "{message}"),
            "42P05" => assert!(message.contains("already exists"), "{message}"),
            _ => panic!("unexpected error {code}: {message}"),
        }
        assert!(message.contains("prepared statement \"pqlib_"), "{message}");
    }
}

/// Distinct SQL texts the `Never` clients cycle through.
const NEVER_TEXTS: usize = 40;

/// A config for `conninfo` that never prepares (SQL text runs as the unnamed statement).
fn never_config(conninfo: &str) -> Config {
    common::config_with(conninfo, PreparePolicy::Never)
}

/// After a `Never` load: every client's committed rows are there, the rolled-back savepoints'
/// rows are not, and the cluster served it all through at most the pool's connections.
fn check_never_load(cluster: &TempCluster, iterations: &[u64]) {
    let mut direct = Connection::connect(&cluster.conninfo()).unwrap();
    let rows = direct
        .query(
            "SELECT client, count(*) FROM pooled WHERE i >= 0 GROUP BY client ORDER BY client",
            &[],
        )
        .unwrap();
    let counted: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let wanted: Vec<(i32, i64)> = iterations
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(client, n)| (client as i32, *n as i64))
        .collect();
    assert_eq!(counted, wanted);
    let rolled_back: i64 = direct
        .query_one("SELECT count(*) FROM pooled WHERE i < 0", &[])
        .unwrap()
        .get(0);
    assert_eq!(rolled_back, 0, "rows of rolled-back savepoints");
    assert!(
        iterations.iter().all(|n| *n > 0),
        "a client made no progress: {iterations:?}"
    );
    // The pooler's server connections, and this one.
    let backends: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        backends <= i64::from(POOL_SIZE) + 1,
        "{backends} client backends behind a pool of {POOL_SIZE}"
    );
}

fn create_table(cluster: &TempCluster) {
    Connection::connect(&cluster.conninfo())
        .unwrap()
        .batch_execute("CREATE TABLE pooled (client int4 NOT NULL, i int4 NOT NULL)")
        .unwrap();
}

/// One iteration of a `Never` client: distinct texts with per-call values, `query`,
/// `query_opt`, and a transaction with a savepoint that is rolled back. `Err` says what went
/// wrong.
fn never_iteration(
    conn: &mut Connection,
    client: usize,
    iteration: u64,
    call: &mut u64,
) -> Result<(), String> {
    for j in 0..5 {
        *call += 1;
        let k = (client + iteration as usize * 5 + j) % NEVER_TEXTS;
        let (n, s) = values(client, *call);
        let row = conn
            .query_one(&text(k), &[&n, &s])
            .map_err(|e| format!("query_one {:?}: {e}", text(k)))?;
        let got: (i64, String) = (row.get(0), row.get(1));
        if got != expected(k, n, &s) {
            return Err(format!("{:?} answered {got:?} for ({n}, {s:?})", text(k)));
        }
    }
    *call += 1;
    let (n, s) = values(client, *call);
    let k = *call as usize % NEVER_TEXTS;
    let rows = conn
        .query(&text(k), &[&n, &s])
        .map_err(|e| format!("query: {e}"))?;
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if got != [expected(k, n, &s)] {
        return Err(format!("query {:?} answered {got:?}", text(k)));
    }
    let opt = conn
        .query_opt(
            &format!("SELECT $1::int8 AS even /* {k} */ WHERE $1::int8 % 2 = 0"),
            &[&n],
        )
        .map_err(|e| format!("query_opt: {e}"))?;
    let got: Option<i64> = opt.map(|row| row.get(0));
    if got != (n % 2 == 0).then_some(n) {
        return Err(format!("query_opt for {n} answered {got:?}"));
    }

    let client = client as i32;
    let i = iteration as i32;
    let mut tx = conn.transaction().map_err(|e| format!("BEGIN: {e}"))?;
    tx.execute(
        "INSERT INTO pooled (client, i) VALUES ($1, $2)",
        &[&client, &i],
    )
    .map_err(|e| format!("INSERT: {e}"))?;
    let mut sp = tx.savepoint("sp").map_err(|e| format!("SAVEPOINT: {e}"))?;
    sp.execute(
        "INSERT INTO pooled (client, i) VALUES ($1, -1 - $2)",
        &[&client, &i],
    )
    .map_err(|e| format!("INSERT in the savepoint: {e}"))?;
    sp.rollback()
        .map_err(|e| format!("ROLLBACK TO SAVEPOINT: {e}"))?;
    let mine: i64 = tx
        .query_one("SELECT count(*) FROM pooled WHERE client = $1", &[&client])
        .map_err(|e| format!("count: {e}"))?
        .get(0);
    if mine != i64::from(i) + 1 {
        return Err(format!("iteration {i} sees {mine} rows of its own"));
    }
    tx.commit().map_err(|e| format!("COMMIT: {e}"))
}

#[test]
fn never_prepare_works_behind_transaction_pooling_blocking() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Transaction, POOL_SIZE) else {
        return;
    };
    create_table(&cluster);
    let config = never_config(&bouncer.conninfo());
    let until = Instant::now() + LOAD_TIME;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let config = config.clone();
            thread::spawn(move || -> Result<u64, String> {
                let mut conn = Connection::connect_config(&config)
                    .map_err(|e| format!("client {client}: connect: {e}"))?;
                let mut call = 0;
                let mut iteration = 0;
                while Instant::now() < until {
                    never_iteration(&mut conn, client, iteration, &mut call)
                        .map_err(|e| format!("client {client}, iteration {iteration}: {e}"))?;
                    iteration += 1;
                }
                Ok(iteration)
            })
        })
        .collect();
    let mut iterations = Vec::new();
    let mut failures = Vec::new();
    for thread in threads {
        match thread.join().unwrap() {
            Ok(n) => iterations.push(n),
            Err(e) => {
                iterations.push(0);
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed: {failures:#?}",
        failures.len()
    );
    eprintln!(
        "PreparePolicy::Never, {CLIENTS} blocking clients over {POOL_SIZE} server connections: \
         {} iterations",
        iterations.iter().sum::<u64>()
    );
    check_never_load(&cluster, &iterations);
}

/// [`never_iteration`] with the async client.
async fn never_iteration_async(
    client: &mut pqlib::tokio::Client,
    id: usize,
    iteration: u64,
    call: &mut u64,
) -> Result<(), String> {
    for j in 0..5 {
        *call += 1;
        let k = (id + iteration as usize * 5 + j) % NEVER_TEXTS;
        let (n, s) = values(id, *call);
        let row = client
            .query_one(&text(k), &[&n, &s])
            .await
            .map_err(|e| format!("query_one {:?}: {e}", text(k)))?;
        let got: (i64, String) = (row.get(0), row.get(1));
        if got != expected(k, n, &s) {
            return Err(format!("{:?} answered {got:?} for ({n}, {s:?})", text(k)));
        }
    }
    *call += 1;
    let (n, s) = values(id, *call);
    let k = *call as usize % NEVER_TEXTS;
    let rows = client
        .query(&text(k), &[&n, &s])
        .await
        .map_err(|e| format!("query: {e}"))?;
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if got != [expected(k, n, &s)] {
        return Err(format!("query {:?} answered {got:?}", text(k)));
    }
    let opt = client
        .query_opt(
            &format!("SELECT $1::int8 AS even /* {k} */ WHERE $1::int8 % 2 = 0"),
            &[&n],
        )
        .await
        .map_err(|e| format!("query_opt: {e}"))?;
    let got: Option<i64> = opt.map(|row| row.get(0));
    if got != (n % 2 == 0).then_some(n) {
        return Err(format!("query_opt for {n} answered {got:?}"));
    }

    let id = id as i32;
    let i = iteration as i32;
    let mut tx = client
        .transaction()
        .await
        .map_err(|e| format!("BEGIN: {e}"))?;
    tx.execute("INSERT INTO pooled (client, i) VALUES ($1, $2)", &[&id, &i])
        .await
        .map_err(|e| format!("INSERT: {e}"))?;
    let sp = tx
        .savepoint("sp")
        .await
        .map_err(|e| format!("SAVEPOINT: {e}"))?;
    sp.execute(
        "INSERT INTO pooled (client, i) VALUES ($1, -1 - $2)",
        &[&id, &i],
    )
    .await
    .map_err(|e| format!("INSERT in the savepoint: {e}"))?;
    sp.rollback()
        .await
        .map_err(|e| format!("ROLLBACK TO SAVEPOINT: {e}"))?;
    let mine: i64 = tx
        .query_one("SELECT count(*) FROM pooled WHERE client = $1", &[&id])
        .await
        .map_err(|e| format!("count: {e}"))?
        .get(0);
    if mine != i64::from(i) + 1 {
        return Err(format!("iteration {i} sees {mine} rows of its own"));
    }
    tx.commit().await.map_err(|e| format!("COMMIT: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_prepare_works_behind_transaction_pooling_async() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Transaction, POOL_SIZE) else {
        return;
    };
    create_table(&cluster);
    let config = never_config(&bouncer.conninfo());
    let until = tokio::time::Instant::now() + LOAD_TIME;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let config = config.clone();
            tokio::spawn(async move {
                let (mut client, connection) = match pqlib::tokio::connect_config(&config).await {
                    Ok(pair) => pair,
                    Err(e) => return Err(format!("client {id}: connect: {e}")),
                };
                let connection = tokio::spawn(connection);
                let mut call = 0;
                let mut iteration = 0;
                while tokio::time::Instant::now() < until {
                    never_iteration_async(&mut client, id, iteration, &mut call)
                        .await
                        .map_err(|e| format!("client {id}, iteration {iteration}: {e}"))?;
                    iteration += 1;
                }
                drop(client);
                match connection.await {
                    Ok(Ok(())) => Ok::<u64, String>(iteration),
                    Ok(Err(e)) => Err(format!("client {id}: the connection ended with {e}")),
                    Err(e) => Err(format!("client {id}: the connection task: {e}")),
                }
            })
        })
        .collect();
    let mut iterations = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(n) => iterations.push(n),
            Err(e) => {
                iterations.push(0);
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed: {failures:#?}",
        failures.len()
    );
    eprintln!(
        "PreparePolicy::Never, {CLIENTS} async clients over {POOL_SIZE} server connections: \
         {} iterations",
        iterations.iter().sum::<u64>()
    );
    // Blocking calls on a runtime worker: this test's own, and its load is over.
    tokio::task::block_in_place(|| check_never_load(&cluster, &iterations));
}

#[test]
fn statement_mode() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Statement, 2) else {
        return;
    };
    let config = never_config(&bouncer.conninfo());
    let mut conn = Connection::connect_config(&config).unwrap_or_else(|e| panic!("{e}"));
    // Autocommit statements, each on whichever server connection is free.
    for i in 0..20i64 {
        let k = i as usize % NEVER_TEXTS;
        let s = format!("s{i}");
        let row = conn.query_one(&text(k), &[&i, &s]).unwrap();
        let got: (i64, String) = (row.get(0), row.get(1));
        assert_eq!(got, expected(k, i, &s));
        let none = conn
            .query_opt("SELECT 1 WHERE $1::int8 < 0", &[&i])
            .unwrap();
        assert!(none.is_none());
    }
    conn.batch_execute("CREATE TABLE stmt (x int4)").unwrap();
    // PgBouncer judges by the ReadyForQuery after each request: a whole transaction in one
    // simple query ends idle, and passes.
    conn.batch_execute("BEGIN; INSERT INTO stmt VALUES (1); INSERT INTO stmt VALUES (2); COMMIT")
        .unwrap();

    // A transaction left open: PgBouncer sends a FATAL protocol_violation and closes the
    // client's connection (and the server connection, which it cannot reset).
    let err = conn.simple_query("BEGIN").unwrap_err();
    eprintln!("statement mode, BEGIN: {:?}: {err}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert_eq!(err.code().map(|c| c.code()), Some("08P01"), "{err}");
    let db = err.as_db_error().expect("the pooler's error report");
    assert_eq!(db.severity(), "FATAL", "{err}");
    assert_eq!(
        db.message(),
        "transaction blocks not allowed in statement pooling mode"
    );
    let next = conn.query_one("SELECT 1", &[]).unwrap_err();
    assert_eq!(next.kind(), ErrorKind::Closed, "{next}");
    assert!(conn.is_closed());

    // The Transaction API, on a new connection: refused the same way, reported as a lost
    // connection (the FATAL's text: see statement_mode_transaction_reports_the_reason).
    let mut conn = Connection::connect_config(&config).unwrap_or_else(|e| panic!("{e}"));
    let result = (|| -> pqlib::Result<()> {
        let mut tx = conn.transaction()?;
        tx.execute("INSERT INTO stmt VALUES ($1)", &[&3i32])?;
        tx.execute("INSERT INTO stmt VALUES ($1)", &[&4i32])?;
        tx.commit()
    })();
    let err = result.expect_err("a transaction in statement pooling mode");
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(conn.is_closed());

    // A new connection works, and nothing of the refused transactions stayed.
    let mut conn = Connection::connect_config(&config).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<i32> = conn
        .query("SELECT x FROM stmt ORDER BY x", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [1, 2]);
}

/// `Connection::transaction` sends `BEGIN` with `batch_execute`. PgBouncer answers with a
/// FATAL and closes the connection, so libpq's own "server closed the connection
/// unexpectedly" comes last; `PQexec` returned only that one, and PgBouncer's reason (its
/// text and SQLSTATE 08P01) was lost. `batch_execute` now keeps the first error.
#[test]
fn statement_mode_transaction_reports_the_reason() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let cluster = start_cluster();
    let Some(bouncer) = start_bouncer(&cluster, PoolMode::Statement, 2) else {
        return;
    };
    let mut conn = Connection::connect_config(&never_config(&bouncer.conninfo()))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = conn.transaction().map(drop).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert_eq!(err.code().map(|c| c.code()), Some("08P01"), "{err}");
    assert!(
        err.to_string()
            .contains("transaction blocks not allowed in statement pooling mode"),
        "{err}"
    );
}
