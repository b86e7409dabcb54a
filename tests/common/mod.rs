//! Support shared by the integration tests: where the test server is, and a minimal
//! connection over the raw `pqlib_sys` API.
//!
//! The server is, in order: `DATABASE_URL` if set; else whatever the `PG*` variables name if
//! `PGHOST` is set (an empty conninfo lets libpq read them); else one [`TempCluster`] per test
//! binary, started on first use and stopped when the binary exits (unix only: elsewhere, set
//! one of the variables).

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
#[cfg(unix)]
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(unix)]
use pqlib::tempdb::TempCluster;

/// Where this binary's [`TempCluster`] is.
#[derive(Debug)]
pub struct TestCluster {
    /// Over the unix socket.
    pub conninfo: String,
    /// Over TCP to 127.0.0.1.
    pub tcp_conninfo: String,
    pub socket_dir: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    /// The postmaster's pid.
    pub pid: u32,
}

#[cfg(unix)]
static INFO: OnceLock<Result<TestCluster, String>> = OnceLock::new();
/// The cluster itself, where the exit handler can take it: statics are never dropped.
#[cfg(unix)]
static CLUSTER: Mutex<Option<TempCluster>> = Mutex::new(None);

/// The connection string for the test server.
pub fn conninfo() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    match cluster() {
        Some(cluster) => cluster.conninfo.clone(),
        None => String::new(), // PGHOST is set: libpq reads the PG* variables itself.
    }
}

/// A config for `conninfo` (a libpq string or URI) with `policy`: how the tests connect under
/// a [`pqlib::PreparePolicy`], to the test server ([`conninfo`]) or through a pooler.
pub fn config_with(conninfo: &str, policy: pqlib::PreparePolicy) -> pqlib::Config {
    let mut config: pqlib::Config = conninfo
        .parse()
        .unwrap_or_else(|e| panic!("the conninfo {conninfo:?}: {e}"));
    config.prepare_policy(policy);
    config
}

/// An async client on the test server, its connection task spawned on the current runtime
/// (an error that ends the connection is printed).
#[cfg(unix)]
pub async fn connect_async() -> pqlib::tokio::Client {
    connect_async_to(&conninfo()).await
}

/// [`connect_async`] to the server at `conninfo` (a test's own cluster).
#[cfg(unix)]
pub async fn connect_async_to(conninfo: &str) -> pqlib::tokio::Client {
    let (client, connection) = pqlib::tokio::connect(conninfo).await.unwrap();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    client
}

/// How long an async test may take before [`deadline`] aborts the binary.
pub const TEST_DEADLINE: Duration = Duration::from_secs(180);

/// Bounds the calling test from outside while the returned guard lives: a test still running
/// after `limit` is hung (a deadlock or a lost wake-up that no timeout inside it can see,
/// since those need the runtime that is stuck), so the whole binary aborts, naming the test,
/// rather than hanging until CI's own limit.
#[must_use = "the deadline ends when the guard is dropped"]
///
/// `PQLIB_TEST_TIME_SCALE` multiplies every limit (scripts/memcheck.sh sets it: code under
/// valgrind runs tens of times slower).
pub fn deadline(limit: Duration) -> Deadline {
    let scale: u32 = std::env::var("PQLIB_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let limit = limit * scale.max(1);
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            // Straight to the descriptor: libtest captures `eprintln!`, and the abort below
            // would discard what it captured.
            let message = format!("\n{test} did not finish within {limit:?}: aborting\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
            std::process::abort();
        }
    });
    Deadline(done)
}

/// The guard of [`deadline`]; dropping it (the test ended, or is unwinding) disarms it.
pub struct Deadline(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// Set by `.ci/run`: a test that cannot run what it is about fails instead of skipping.
pub const NO_SKIP: &str = "PQLIB_TEST_NO_SKIP";

/// Reports that the calling test does not run here, and why (the caller then returns). Where
/// [`NO_SKIP`] is set and the suite runs its own servers (no `DATABASE_URL`/`PGHOST`: CI's
/// setup, where every test can run), this panics instead. Children that a test starts with
/// `DATABASE_URL` pointing at its server may still skip: their parent checks what they did.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let external =
        std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("PGHOST").is_some();
    if std::env::var_os(NO_SKIP).is_some() && !external {
        panic!("{test} would be skipped ({reason}), and {NO_SKIP} is set");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// [`cluster`], or `None` after reporting the skip: for tests that need this binary's own
/// server (to stop it, reach it over TCP, or read its files).
pub fn own_cluster() -> Option<&'static TestCluster> {
    let cluster = cluster();
    if cluster.is_none() {
        skip("needs the suite's own server; DATABASE_URL or PGHOST names an external one");
    }
    cluster
}

/// This binary's [`TempCluster`], started on first use; `None` when `DATABASE_URL` or `PGHOST`
/// names an external server. Panics with the reason if the cluster cannot start.
pub fn cluster() -> Option<&'static TestCluster> {
    if std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("PGHOST").is_some() {
        return None;
    }
    #[cfg(unix)]
    match INFO.get_or_init(start_cluster) {
        Ok(info) => Some(info),
        Err(message) => panic!("{message}"),
    }
    #[cfg(not(unix))]
    panic!("pqlib::tempdb needs unix: set DATABASE_URL or PGHOST to a test server")
}

#[cfg(unix)]
fn start_cluster() -> Result<TestCluster, String> {
    let cluster = TempCluster::start().map_err(|e| {
        format!(
            "could not start a TempCluster for the tests (set DATABASE_URL or PGHOST to use \
             another server): {e}"
        )
    })?;
    let info = TestCluster {
        conninfo: cluster.conninfo(),
        tcp_conninfo: cluster.tcp_conninfo(),
        socket_dir: cluster.socket_dir().to_owned(),
        data_dir: cluster.data_dir().to_owned(),
        port: cluster.port(),
        pid: cluster.pid(),
    };
    *CLUSTER.lock().unwrap_or_else(PoisonError::into_inner) = Some(cluster);
    // SAFETY: `stop_cluster` takes no arguments, returns nothing and never unwinds, as an
    // atexit handler must. INFO's OnceLock runs this function once, so it is registered once.
    if unsafe { libc::atexit(stop_cluster) } != 0 {
        eprintln!("could not register the exit handler: the test cluster will be left behind");
    }
    Ok(info)
}

/// Stops the cluster and removes its directory when the test binary exits.
#[cfg(unix)]
extern "C" fn stop_cluster() {
    // A panic must not unwind into C; TempCluster's Drop does not panic, but be sure.
    let _ = std::panic::catch_unwind(|| {
        let cluster = CLUSTER
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(cluster);
    });
}

/// A connection through the raw API, finished on drop.
pub struct RawConn(*mut pqlib_sys::PGconn);

impl RawConn {
    /// Connects, or returns libpq's error message.
    pub fn connect(conninfo: &str) -> Result<RawConn, String> {
        let conninfo = CString::new(conninfo).map_err(|e| e.to_string())?;
        // SAFETY: `conninfo` is NUL-terminated and outlives the call.
        let conn = RawConn(unsafe { pqlib_sys::PQconnectdb(conninfo.as_ptr()) });
        if conn.0.is_null() {
            return Err("PQconnectdb returned NULL (out of memory)".into());
        }
        // SAFETY: conn.0 is a live connection from PQconnectdb.
        if unsafe { pqlib_sys::PQstatus(conn.0) } != pqlib_sys::ConnStatusType::CONNECTION_OK {
            return Err(conn.error_message());
        }
        Ok(conn)
    }

    /// The connection's last error message.
    pub fn error_message(&self) -> String {
        // SAFETY: self.0 is live; libpq returns a NUL-terminated string owned by the
        // connection, copied here before any other call on it.
        unsafe { CStr::from_ptr(pqlib_sys::PQerrorMessage(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Runs `sql` and returns the first column of the first row (`None` for NULL), or the
    /// error message.
    pub fn query_value(&self, sql: &str) -> Result<Option<String>, String> {
        let sql = CString::new(sql).map_err(|e| e.to_string())?;
        // SAFETY: self.0 is live and `sql` is NUL-terminated.
        let res = unsafe { pqlib_sys::PQexec(self.0, sql.as_ptr()) };
        let _clear = ClearOnDrop(res);
        if res.is_null() {
            return Err(self.error_message());
        }
        // SAFETY: `res` is a live result until `_clear` drops, after every use below.
        let status = unsafe { pqlib_sys::PQresultStatus(res) };
        if status != pqlib_sys::ExecStatusType::PGRES_TUPLES_OK {
            // SAFETY: as above; the message is copied before the result is cleared.
            let message = unsafe { CStr::from_ptr(pqlib_sys::PQresultErrorMessage(res)) };
            return Err(message.to_string_lossy().into_owned());
        }
        // SAFETY: as above.
        let (rows, columns) = unsafe { (pqlib_sys::PQntuples(res), pqlib_sys::PQnfields(res)) };
        if rows < 1 || columns < 1 {
            return Err("the query returned no value".into());
        }
        // SAFETY: as above; row 0, column 0 exists.
        if unsafe { pqlib_sys::PQgetisnull(res, 0, 0) } != 0 {
            return Ok(None);
        }
        // SAFETY: as above; the value is NUL-terminated text, copied before the clear.
        let value = unsafe { CStr::from_ptr(pqlib_sys::PQgetvalue(res, 0, 0)) };
        Ok(Some(value.to_string_lossy().into_owned()))
    }

    /// Whether the connection is still usable (`CONNECTION_OK`).
    pub fn is_ok(&self) -> bool {
        // SAFETY: self.0 is live.
        unsafe { pqlib_sys::PQstatus(self.0) == pqlib_sys::ConnStatusType::CONNECTION_OK }
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        // SAFETY: self.0 came from PQconnectdb (NULL is allowed) and is finished only here.
        unsafe { pqlib_sys::PQfinish(self.0) }
    }
}

struct ClearOnDrop(*mut pqlib_sys::PGresult);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        // SAFETY: the result came from PQexec (NULL is allowed) and is cleared only here.
        unsafe { pqlib_sys::PQclear(self.0) }
    }
}

/// Whether a server answers at `conninfo` and would accept connections.
pub fn ping_ok(conninfo: &str) -> bool {
    let conninfo = CString::new(conninfo).expect("no NUL in a conninfo");
    // SAFETY: `conninfo` is NUL-terminated and outlives the call.
    unsafe { pqlib_sys::PQping(conninfo.as_ptr()) == pqlib_sys::PGPing::PQPING_OK }
}

/// Whether a process with this pid exists (a zombie counts).
#[cfg(unix)]
pub fn process_exists(pid: u32) -> bool {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits in pid_t");
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Runs `command` with stdout and stderr captured, killing it if it runs longer than
/// `timeout`. Returns its exit status and its stdout followed by its stderr.
pub fn run_bounded(mut command: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a child process");
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process ran longer than {timeout:?}: {command:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = out.join().unwrap() + &err.join().unwrap();
    (status, text)
}

/// Waits (at most 20 s) until some backend other than `observer`'s runs a statement whose
/// text starts with `prefix`, and returns its pid: for a statement sent through a pooler,
/// whose server backend the client cannot name.
pub fn wait_until_running(observer: &mut pqlib::Connection, prefix: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' \
                 AND starts_with(query, $1) AND pid <> pg_backend_pid() LIMIT 1",
                &[&prefix],
            )
            .expect("query pg_stat_activity")
            .map(|row| row.get(0));
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no statement starting with {prefix:?} ran within 20 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (at most 10 s) until backend `pid` is running a statement, as seen from `observer`:
/// the condition a test needs before cancelling or terminating that statement.
pub fn wait_until_active(observer: &mut pqlib::Connection, pid: i32) {
    wait_for_activity(
        observer,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active')",
        &[&pid],
        &format!("backend {pid} did not become active within 10 s"),
    );
}

/// Waits (at most 10 s) until backend `pid` is blocked on `wait_event` (a name from
/// `pg_stat_activity`, such as `ClientWrite`), as seen from `observer`.
pub fn wait_until_waiting_on(observer: &mut pqlib::Connection, pid: i32, wait_event: &str) {
    wait_for_activity(
        observer,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = $2)",
        &[&pid, &wait_event],
        &format!("backend {pid} did not wait on {wait_event} within 10 s"),
    );
}

/// A fresh sequence named `prefix_<test process id>` that counts what a backend has done
/// (`nextval` in the statement under test): others see its value at once, outside any
/// transaction. Returns its name and the backend's pid.
pub async fn progress_sequence(client: &pqlib::tokio::Client, prefix: &str) -> (String, i32) {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0);
    let sequence = format!("{prefix}_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SEQUENCE IF EXISTS {sequence}; CREATE SEQUENCE {sequence}"
        ))
        .await
        .expect("create the progress sequence");
    (sequence, pid)
}

/// Asserts that backend `pid`, whose consumer stopped reading, is held back: it blocks on
/// `ClientWrite` and `sequence` stays put for 300 ms (it also blocks for a moment whenever it
/// outruns a reader: what tells held back from slow is that nothing moves). Returns the
/// sequence's value. The async test's runtime keeps running meanwhile.
pub async fn assert_held_back(pid: i32, sequence: &str) -> i64 {
    let progress = format!("SELECT last_value FROM {sequence}");
    tokio::task::spawn_blocking(move || {
        let mut observer = pqlib::Connection::connect(&conninfo()).expect("observer");
        wait_until_waiting_on(&mut observer, pid, "ClientWrite");
        let done: i64 = observer.query_one(&progress, &[]).expect(&progress).get(0);
        thread::sleep(Duration::from_millis(300));
        let still: i64 = observer.query_one(&progress, &[]).expect(&progress).get(0);
        assert_eq!(done, still, "the server ran on while the consumer paused");
        done
    })
    .await
    .expect("the observer panicked")
}

/// Polls `condition` (one boolean) from `observer` until it holds; panics with `failure`
/// after 10 s.
fn wait_for_activity(
    observer: &mut pqlib::Connection,
    condition: &str,
    params: &[&(dyn pqlib::types::ToSql + Sync)],
    failure: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let holds: bool = observer
            .query_one(condition, params)
            .expect("query pg_stat_activity")
            .get(0);
        if holds {
            return;
        }
        assert!(Instant::now() < deadline, "{failure}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Values dropped when the test binary exits (see [`drop_at_exit`]).
#[cfg(unix)]
static AT_EXIT: Mutex<Vec<Box<dyn std::any::Any + Send>>> = Mutex::new(Vec::new());

/// Keeps `value` alive until the test binary exits, then drops it: for a fixture shared by
/// the tests of one binary (a [`TempCluster`] with its own settings, the files it uses),
/// which a `static` would never drop. Values are dropped in reverse order of registration.
#[cfg(unix)]
pub fn drop_at_exit<T: Send + 'static>(value: T) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    AT_EXIT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Box::new(value));
    REGISTER.call_once(|| {
        // SAFETY: `drop_registered` takes no arguments, returns nothing and never unwinds,
        // as an atexit handler must; the Once registers it once.
        if unsafe { libc::atexit(drop_registered) } != 0 {
            eprintln!("could not register the exit handler: test fixtures will be left behind");
        }
    });
}

#[cfg(unix)]
extern "C" fn drop_registered() {
    let _ = std::panic::catch_unwind(|| {
        let values = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner));
        for value in values.into_iter().rev() {
            drop(value);
        }
    });
}

/// Starts a child process of this test binary that runs only test `name` (which acts when
/// `flag` is set in its environment), with every `PG*` variable and `DATABASE_URL` removed
/// and `vars` set, and waits for it (at most 120 s). Returns whether it succeeded and printed
/// `CHILD OK`, and its output.
pub fn run_child_test(name: &str, flag: &str, vars: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command.args([
        "--exact",
        name,
        "--nocapture",
        "--include-ignored",
        "--test-threads=1",
    ]);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PG") || key_text == "DATABASE_URL" {
            command.env_remove(&key);
        }
    }
    command.env(flag, "1").stdin(Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    let (status, output) = run_bounded(command, Duration::from_secs(120));
    (status.success() && output.contains("CHILD OK"), output)
}

// ---------------------------------------------------------------------------------------------
// Fault injection (tests/faults.rs, tests/faults_async.rs, tests/bad_input.rs, tests/soak.rs).

/// Runs `f` on a thread of its own and returns its value, failing the test if it takes longer
/// than `limit`: the test reports a hang instead of becoming one (the stuck thread is left
/// behind and ends with the test binary).
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = worker.join();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: re-raise its panic here.
            match worker.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!("the worker sent nothing and did not panic"),
            }
        }
    }
}

/// Resident and peak resident memory of this process in bytes (`VmRSS`, `VmHWM`).
#[cfg(target_os = "linux")]
pub fn memory_status() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(unix)]
/// Terminates backend `pid` with `pg_terminate_backend` from a connection of its own and
/// waits (at most 10 s) until the backend has exited.
pub fn terminate_backend(pid: u32) {
    let mut killer = pqlib::Connection::connect(&conninfo()).expect("connecting the killer");
    let pid = i32::try_from(pid).expect("a backend pid fits in int4");
    let gone: bool = killer
        .query_one("SELECT pg_terminate_backend($1, 10000)", &[&pid])
        .expect("pg_terminate_backend")
        .get(0);
    assert!(gone, "backend {pid} did not exit within 10 s");
}

#[cfg(unix)]
/// Where a [`Proxy`] forwards connections to.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// A TCP port on 127.0.0.1.
    Tcp(u16),
    /// A unix socket (reachable from another network namespace, unlike a TCP port).
    Unix(PathBuf),
    /// Nowhere: connections are accepted and held, and nothing is ever sent back.
    Silent,
}

#[cfg(unix)]
#[derive(Default)]
struct ProxyShared {
    stalled: std::sync::atomic::AtomicBool,
    stopped: std::sync::atomic::AtomicBool,
    /// Every socket the proxy holds, for `cut` and `Drop`.
    sockets: Mutex<Vec<std::net::TcpStream>>,
    unix_sockets: Mutex<Vec<std::os::unix::net::UnixStream>>,
    accepted: std::sync::atomic::AtomicUsize,
}

#[cfg(unix)]
/// A TCP proxy on 127.0.0.1 written for the fault tests: it forwards bytes both ways until
/// told to [`stall`](Proxy::stall) (stop moving bytes, keeping the sockets open) or to
/// [`cut`](Proxy::cut) (shut every socket down). Its threads end when it is dropped.
pub struct Proxy {
    port: u16,
    shared: std::sync::Arc<ProxyShared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

#[cfg(unix)]
impl Proxy {
    pub fn start(upstream: Upstream) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        // Non-blocking, polled: waking a blocked accept would need a connection, which a
        // dead network (see `drop_all_packets`) does not let through.
        listener.set_nonblocking(true).unwrap();
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                while !shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            shared
                                .accepted
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Proxy::serve(&shared, client, &upstream);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    fn serve(shared: &std::sync::Arc<ProxyShared>, client: std::net::TcpStream, to: &Upstream) {
        let Ok(client_copy) = client.try_clone() else {
            return;
        };
        shared.sockets.lock().unwrap().push(client_copy);
        let (server_read, server_write): (
            Box<dyn std::io::Read + Send>,
            Box<dyn std::io::Write + Send>,
        ) = match to {
            Upstream::Silent => return,
            Upstream::Tcp(port) => {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", *port)) else {
                    return;
                };
                server
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                shared
                    .sockets
                    .lock()
                    .unwrap()
                    .push(server.try_clone().unwrap());
                (Box::new(server.try_clone().unwrap()), Box::new(server))
            }
            Upstream::Unix(path) => {
                let Ok(server) = std::os::unix::net::UnixStream::connect(path) else {
                    return;
                };
                server
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                shared
                    .unix_sockets
                    .lock()
                    .unwrap()
                    .push(server.try_clone().unwrap());
                (Box::new(server.try_clone().unwrap()), Box::new(server))
            }
        };
        client
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let client_read: Box<dyn std::io::Read + Send> = Box::new(client.try_clone().unwrap());
        let client_write: Box<dyn std::io::Write + Send> = Box::new(client);
        for (from, to) in [(client_read, server_write), (server_read, client_write)] {
            let shared = shared.clone();
            thread::spawn(move || Proxy::pump(&shared, from, to));
        }
    }

    /// Moves bytes from `from` to `to` until either side closes or the proxy stops; while
    /// stalled, reads nothing (polling the flag every few milliseconds).
    fn pump(
        shared: &ProxyShared,
        mut from: Box<dyn std::io::Read + Send>,
        mut to: Box<dyn std::io::Write + Send>,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut buf = vec![0u8; 64 * 1024];
        while !shared.stopped.load(SeqCst) {
            if shared.stalled.load(SeqCst) {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A conninfo that reaches the server through the proxy.
    pub fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres {extra}",
            self.port
        )
    }

    /// Stops forwarding bytes (in both directions) but keeps every socket open.
    pub fn stall(&self) {
        self.shared
            .stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards bytes again (for connections made after a stall).
    pub fn resume(&self) {
        self.shared
            .stalled
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Shuts down every socket the proxy holds: both peers see the connection end.
    pub fn cut(&self) {
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        for socket in self.shared.unix_sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(unix)]
impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[cfg(unix)]
/// Runs test `name` of this binary in a child process inside a new network namespace of its
/// own (`unshare --net`), with `flag` set, `DATABASE_URL` pointing at this binary's server
/// over its unix socket (which other network namespaces reach), and waits at most 120 s.
///
/// Inside, the test may drop every packet on its private loopback interface
/// ([`drop_all_packets`]) without touching anything else on the machine. Returns `None` when
/// network namespaces cannot be made here (not root, no `unshare`).
pub fn run_child_in_netns(name: &str, flag: &str) -> Option<(bool, String)> {
    let probe = Command::new("unshare")
        .args(["--net", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(status) if status.success()) {
        return None;
    }
    let mut command = Command::new("unshare");
    command
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            name,
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ]);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PG") || key_text == "DATABASE_URL" {
            command.env_remove(&key);
        }
    }
    command
        .env(flag, "1")
        .env("DATABASE_URL", conninfo())
        .stdin(Stdio::null());
    let (status, output) = run_bounded(command, Duration::from_secs(120));
    Some((status.success() && output.contains("CHILD OK"), output))
}

#[cfg(unix)]
/// In a child made by [`run_child_in_netns`]: brings the namespace's loopback interface up.
pub fn netns_loopback_up() {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("running ip");
    assert!(status.success(), "ip link set lo up failed");
}

#[cfg(unix)]
/// In a child made by [`run_child_in_netns`]: from now on every packet on the namespace's
/// loopback interface is dropped (a `pfifo` queue of length 0), as when a network path dies
/// without either peer closing its socket. The kernel neither acknowledges data nor answers
/// keepalive probes any more.
pub fn drop_all_packets() {
    let status = Command::new("tc")
        .args(["qdisc", "add", "dev", "lo", "root", "pfifo", "limit", "0"])
        .status()
        .expect("running tc");
    assert!(
        status.success(),
        "tc qdisc add dev lo root pfifo limit 0 failed"
    );
}

#[cfg(unix)]
/// In a child made by [`run_child_in_netns`]: takes the namespace's loopback interface down,
/// so nothing sent on it arrives any more. Unlike [`drop_all_packets`] (a local queue drop,
/// which the kernel treats as congestion and retries without counting), a probe that cannot
/// be routed counts as sent and unanswered: the way keepalives see a dead peer.
#[cfg(unix)]
pub fn loopback_down() {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "down"])
        .status()
        .expect("running ip");
    assert!(status.success(), "ip link set lo down failed");
}

/// Waits (at most 5 s) until the TCP socket `fd` has no unacknowledged data (`TCP_INFO`'s
/// `tcpi_unacked` is 0): a delayed ACK still pending when packets start being dropped would
/// otherwise leave data unacknowledged, and retransmissions (not keepalives) would decide
/// when the connection dies.
#[cfg(target_os = "linux")]
pub fn wait_until_acked(fd: std::os::fd::RawFd) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: tcp_info is plain data; all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` and `len` are valid for writing; the kernel writes at most `len`
        // bytes. A closed or non-TCP fd only makes the call fail.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(
            rc,
            0,
            "getsockopt(TCP_INFO): {}",
            std::io::Error::last_os_error()
        );
        if info.tcpi_unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} segments still unacknowledged after 5 s",
            info.tcpi_unacked
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The TCP sockets of this process whose peer is 127.0.0.1:`port` (found by trying
/// `getpeername` on each open descriptor): the client side of connections to a [`Proxy`],
/// for APIs that do not expose their socket.
#[cfg(target_os = "linux")]
pub fn sockets_connected_to(port: u16) -> Vec<std::os::fd::RawFd> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are valid for writing; the kernel writes at most `len`
        // bytes; a descriptor that is not a connected socket only makes the call fail.
        let rc = unsafe {
            libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
        };
        if rc == 0
            && i32::from(addr.sin_family) == libc::AF_INET
            && u16::from_be(addr.sin_port) == port
            && u32::from_be(addr.sin_addr.s_addr) == u32::from(std::net::Ipv4Addr::LOCALHOST)
        {
            found.push(fd);
        }
    }
    found
}

/// The path of the unix socket of this binary's server (`None` for an external server that is
/// only known by conninfo).
pub fn unix_socket_path() -> Option<PathBuf> {
    let info = cluster()?;
    Some(info.socket_dir.join(format!(".s.PGSQL.{}", info.port)))
}

/// A server restarted by [`restart_cluster`] on a stopped [`TempCluster`]'s data directory;
/// stopped (fast shutdown) when dropped, which must happen before the `TempCluster` is
/// dropped (it removes the directory).
#[cfg(unix)]
pub struct RestartedServer {
    child: std::process::Child,
}

#[cfg(unix)]
impl RestartedServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

#[cfg(unix)]
impl Drop for RestartedServer {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops `cluster`'s server with `signal` (`SIGINT`: fast shutdown, `SIGQUIT`: immediate
/// shutdown) and waits (at most 30 s) until it has exited, which the removal of its
/// `postmaster.pid` shows. The `TempCluster` still owns the (exited) process and reaps it
/// when dropped.
#[cfg(unix)]
pub fn stop_cluster_with(cluster: &TempCluster, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(cluster.pid()).unwrap();
    // SAFETY: the postmaster is a child of this process that nobody has reaped (TempCluster
    // reaps it only when dropped), so the pid is still ours.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "signalling the postmaster"
    );
    let pid_file = cluster.data_dir().join("postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 30 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a server again on the data directory, port and socket directory of `cluster`,
/// stopped before with [`stop_cluster_with`], as its owner; waits (at most 60 s: after an
/// immediate shutdown it recovers first) until it accepts connections.
#[cfg(unix)]
pub fn restart_cluster(cluster: &TempCluster) -> RestartedServer {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let owner = std::fs::metadata(cluster.data_dir()).expect("the data directory");
    let log = std::fs::File::create(cluster.socket_dir().join("restarted.log")).unwrap();
    let mut command = Command::new(cluster.bin_dir().join("postgres"));
    command
        .arg("-D")
        .arg(cluster.data_dir())
        .args(["-c", &format!("port={}", cluster.port())])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args([
            "-c",
            &format!("unix_socket_directories={}", cluster.socket_dir().display()),
        ])
        .current_dir(cluster.socket_dir())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(owner.uid()).gid(owner.gid());
    }
    let mut server = RestartedServer {
        child: command.spawn().expect("restarting postgres"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ping_ok(&cluster.conninfo()) {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(cluster.socket_dir().join("restarted.log"));
            panic!("the restarted server exited ({status}): {log:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the restarted server did not accept connections within 60 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The calling thread's kernel id (0 where there is none to read).
pub fn current_tid() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        i64::from(unsafe { libc::gettid() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Waits (at most 10 s) until thread `tid` of this process sleeps in the kernel (state `S`
/// in /proc: blocked in `poll`, on a condition variable, …), seen twice 10 ms apart so that a
/// passing lock wait does not count. Elsewhere than Linux, a pause instead.
pub fn wait_until_blocked(tid: i64) {
    #[cfg(target_os = "linux")]
    {
        let state = || {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            // "pid (comm) S ...": the state follows the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if state().as_deref() == Some("S") {
                thread::sleep(Duration::from_millis(10));
                if state().as_deref() == Some("S") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "thread {tid} never blocked");
            thread::sleep(Duration::from_millis(1));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        thread::sleep(Duration::from_millis(100));
    }
}

/// Everything logged through the `log` crate in this process once [`capture_logs`] ran
/// (pqlib's `tracing` events reach it too when no `tracing` subscriber is installed).
struct LogCapture(Mutex<String>);

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        use std::fmt::Write;
        let mut text = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(
            text,
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOG_CAPTURE: LogCapture = LogCapture(Mutex::new(String::new()));

/// Installs this binary's logger, which keeps every line (`LEVEL target: message`) to search
/// with [`captured_logs`]. Idempotent; a binary that calls it may install no other logger.
pub fn capture_logs() {
    static INSTALL: OnceLock<()> = OnceLock::new();
    INSTALL.get_or_init(|| {
        log::set_logger(&LOG_CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Every line logged since [`capture_logs`] was first called.
pub fn captured_logs() -> String {
    capture_logs();
    LOG_CAPTURE
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Where `scripts/postgres-versions.sh` installs servers of other major versions (the same
/// rule as the script's: `PQLIB_POSTGRES_CACHE`, else a shared directory as root, whose test
/// servers run as another user, else the user's cache).
pub fn postgres_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("PQLIB_POSTGRES_CACHE").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "/var/cache/pqlib/postgres".into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("pqlib/postgres")
}

/// The `bin` directory of PostgreSQL `major` installed by `scripts/postgres-versions.sh`.
pub fn installed_bin_dir(major: u32) -> Option<PathBuf> {
    let dir = postgres_cache().join(major.to_string());
    dir.join(".complete").exists().then(|| dir.join("bin"))
}

/// The `bin` directory the suite's own servers run from: `PG_BINDIR`, else `pg_config --bindir`.
pub fn default_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        return Some(dir.into());
    }
    pg_config_bin_dir()
}

/// `pg_config --bindir` (`PG_CONFIG` names another `pg_config`): the system's server, which is
/// not the default one where `PG_BINDIR` names another (CI's libpq 18 run).
pub fn pg_config_bin_dir() -> Option<PathBuf> {
    let pg_config = std::env::var_os("PG_CONFIG").unwrap_or_else(|| "pg_config".into());
    let output = Command::new(pg_config).arg("--bindir").output().ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| PathBuf::from(dir.trim()))
}

/// The major version of the server in `bin_dir` (`postgres --version`).
pub fn server_major_of(bin_dir: &std::path::Path) -> Option<u32> {
    let output = Command::new(bin_dir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    // "postgres (PostgreSQL) 18.6" or "… 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// A `bin` directory of a server of major version `min_major` or newer, for a test of a
/// feature the server must have: the suite's own server when it is new enough, else the
/// oldest such version `scripts/postgres-versions.sh` installed. `None` after reporting the
/// skip ([`skip`]: CI installs them, so there it fails instead).
pub fn server_at_least(min_major: u32) -> Option<(u32, PathBuf)> {
    if let Some(dir) = default_bin_dir() {
        if let Some(major) = server_major_of(&dir).filter(|&m| m >= min_major) {
            return Some((major, dir));
        }
    }
    for major in min_major..=99 {
        if let Some(dir) = installed_bin_dir(major) {
            return Some((major, dir));
        }
    }
    skip(&format!(
        "needs a PostgreSQL {min_major}+ server: run scripts/postgres-versions.sh {min_major}"
    ));
    None
}

/// A `bin` directory of a server of exactly major version `major` (the suite's own, the
/// system's, or one from `scripts/postgres-versions.sh`); `None` after reporting the skip, as
/// [`server_at_least`].
pub fn server_of(major: u32) -> Option<PathBuf> {
    let candidates = [default_bin_dir(), pg_config_bin_dir()];
    if let Some(dir) = candidates
        .into_iter()
        .flatten()
        .find(|d| server_major_of(d) == Some(major))
    {
        return Some(dir);
    }
    if let Some(dir) = installed_bin_dir(major) {
        return Some(dir);
    }
    skip(&format!(
        "needs a PostgreSQL {major} server: run scripts/postgres-versions.sh {major}"
    ));
    None
}

/// Whether the linked libpq is `major` or newer; if not, reports why the calling test does
/// not run. Unlike [`skip`] this never fails under [`NO_SKIP`]: CI runs the suite with libpq
/// 15 and with libpq 18, and the test runs in the second.
pub fn libpq_at_least(major: u32, feature: &str) -> bool {
    let linked = pqlib::version();
    if linked.major >= major {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("SKIPPED {test}: {feature} needs libpq {major}+, this binary links libpq {linked}");
    false
}

/// SplitMix64, the model tests' random source: small, fast, and the same sequence everywhere
/// for a seed (so that `PQLIB_MODEL_SEED` replays a run).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// An index into `weights`, chosen with those weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}
