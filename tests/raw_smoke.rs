//! The raw bindings against a real server: connect, `SELECT 1`, read the value back.

mod common;

use std::ffi::{CStr, CString};

use pqlib_sys::{ConnStatusType, ExecStatusType};

/// Connects with `PQconnectdb`, runs `SELECT 1` with `PQexec` and returns the value, using the
/// raw API step by step. Everything is freed before any assertion can fail.
fn select_one(conninfo: &str) -> Result<String, String> {
    let conninfo = CString::new(conninfo).unwrap();
    // SAFETY: `conninfo` is NUL-terminated and outlives the call.
    let conn = unsafe { pqlib_sys::PQconnectdb(conninfo.as_ptr()) };
    assert!(!conn.is_null(), "PQconnectdb returned NULL");
    let error_message = || {
        // SAFETY: `conn` is live until PQfinish below; the message is copied at once.
        unsafe { CStr::from_ptr(pqlib_sys::PQerrorMessage(conn)) }
            .to_string_lossy()
            .into_owned()
    };

    // SAFETY: `conn` is live.
    let result = if unsafe { pqlib_sys::PQstatus(conn) } != ConnStatusType::CONNECTION_OK {
        Err(format!("connection failed: {}", error_message()))
    } else {
        // SAFETY: `conn` is live and the query is a NUL-terminated literal.
        let res = unsafe { pqlib_sys::PQexec(conn, c"SELECT 1".as_ptr()) };
        // SAFETY: PQresultStatus accepts NULL (it reports PGRES_FATAL_ERROR).
        let status = unsafe { pqlib_sys::PQresultStatus(res) };
        let value = if status != ExecStatusType::PGRES_TUPLES_OK {
            Err(format!("SELECT 1 gave {status:?}: {}", error_message()))
        } else {
            // SAFETY: `res` holds one row of one column (a tuples result of SELECT 1), and
            // the value is copied before PQclear.
            let value = unsafe { CStr::from_ptr(pqlib_sys::PQgetvalue(res, 0, 0)) };
            Ok(value.to_string_lossy().into_owned())
        };
        // SAFETY: `res` came from PQexec and is cleared once.
        unsafe { pqlib_sys::PQclear(res) };
        value
    };
    // SAFETY: `conn` came from PQconnectdb and is finished once, after its last use.
    unsafe { pqlib_sys::PQfinish(conn) };
    result
}

#[test]
fn select_one_over_the_test_server() {
    assert_eq!(select_one(&common::conninfo()).as_deref(), Ok("1"));
}

#[test]
fn select_one_over_tcp() {
    let Some(cluster) = common::own_cluster() else {
        return;
    };
    assert_eq!(select_one(&cluster.tcp_conninfo).as_deref(), Ok("1"));
}

#[test]
fn connection_failure_is_reported() {
    let Some(cluster) = common::own_cluster() else {
        return;
    };
    let conninfo = format!("{} dbname=no_such_database", cluster.conninfo);
    let err = select_one(&conninfo).unwrap_err();
    assert!(err.contains("no_such_database"), "{err}");
}

/// The exit handler of the cluster in `common`.
#[cfg(unix)]
mod at_exit {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use crate::common;

    /// Set in the environment of the child process `common_cluster_is_stopped_at_exit` runs.
    const CHILD_VAR: &str = "PQLIB_TEST_ATEXIT_CHILD";

    /// Not a test by itself: the child process of `common_cluster_is_stopped_at_exit`.
    #[test]
    fn child_reports_common_cluster() {
        if std::env::var_os(CHILD_VAR).is_none() {
            return;
        }
        let cluster = common::cluster().expect("a TempCluster in the child");
        assert!(common::ping_ok(&cluster.conninfo));
        println!(
            "CLUSTER pid={} data_dir={}",
            cluster.pid,
            cluster.data_dir.display()
        );
    }

    /// The cluster in tests/common lives in a static, which is never dropped: its exit handler
    /// must stop the server and remove the directory when the test binary exits. Run this binary
    /// again as a child that starts the cluster, and check after it has exited.
    #[test]
    fn common_cluster_is_stopped_at_exit() {
        if common::own_cluster().is_none() {
            return;
        }
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "at_exit::child_reports_common_cluster",
                "--nocapture",
            ])
            .env(CHILD_VAR, "1")
            .stdin(Stdio::null());
        let (status, stdout) = common::run_bounded(command, Duration::from_secs(120));
        assert!(status.success(), "child failed ({status}):\n{stdout}");
        // Anywhere in a line: run serially (one CPU), libtest prints "test … ... " before
        // the test's own output, on the same line.
        let line = stdout
            .lines()
            .find_map(|line| line.split_once("CLUSTER ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no CLUSTER line in:\n{stdout}"));
        let (pid, data_dir) = line
            .strip_prefix("pid=")
            .and_then(|rest| rest.split_once(" data_dir="))
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let pid: u32 = pid.parse().unwrap();

        let still_running = common::process_exists(pid);
        let left_behind = std::path::Path::new(data_dir).exists();
        if still_running {
            // Do not leave a server behind when the check fails.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
        }
        if left_behind {
            let root = std::path::Path::new(data_dir).parent().unwrap();
            let _ = std::fs::remove_dir_all(root);
        }
        assert!(
            !still_running,
            "postmaster {pid} still runs after the test binary exited"
        );
        assert!(
            !left_behind,
            "{data_dir} still exists after the test binary exited"
        );
    }
}
