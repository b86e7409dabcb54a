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

/// Waits (at most 10 s) until backend `pid` is running a statement, as seen from `observer`:
/// the condition a test needs before cancelling or terminating that statement.
pub fn wait_until_active(observer: &mut pqlib::Connection, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active')",
                &[&pid],
            )
            .expect("query pg_stat_activity")
            .get(0);
        if active {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} did not become active within 10 s"
        );
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
