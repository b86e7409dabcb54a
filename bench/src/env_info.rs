//! What the report says about the machine and the software measured.

use std::process::Command;
use std::time::Duration;

use crate::{Opts, Result, Server, Sizes};

pub struct EnvInfo {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub server_version: String,
    pub libpq: String,
    pub transport: String,
    pub crates: Vec<(String, String)>,
    pub python: Option<String>,
    pub mode: String,
    /// The harness's arguments, for the report.
    pub args: String,
    pub reps: usize,
    pub load: String,
    pub load_end: String,
    pub pinning: String,
    /// The multi-thread runtime rows: the runtime, or why they were not run.
    pub multi: String,
    /// The main runtime: `current` or `multi`.
    pub main_runtime: String,
    /// Where libpq came from: the system's (pkg-config) or built from source (`vendored`).
    pub libpq_source: String,
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// `name = version` of the packages in this crate's Cargo.lock.
fn locked_versions(names: &[&str]) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut current: Option<&str> = None;
    for line in lock.lines() {
        if let Some(name) = line.strip_prefix("name = ") {
            current = Some(name.trim_matches('"'));
        } else if let (Some(name), Some(version)) = (current, line.strip_prefix("version = ")) {
            if names.contains(&name) {
                found.push((name.to_owned(), version.trim_matches('"').to_owned()));
            }
            current = None;
        }
    }
    found.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    found
}

/// The 1, 5 and 15 minute load averages: other work on the machine disturbs the numbers.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl EnvInfo {
    pub fn collect(
        admin: &mut pqlib::Connection,
        server: &Server,
        opts: &Opts,
        sizes: &Sizes,
    ) -> Result<EnvInfo> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']))
            })
            .unwrap_or("unknown")
            .to_owned();
        let server_version: String = admin.query_one("SELECT version()", &[])?.get(0);
        let lib = pqlib_bench::c::lib_version();
        let _ = sizes;
        Ok(EnvInfo {
            cpu,
            // Online CPUs, not this (possibly pinned) process's share of them.
            // SAFETY: sysconf has no preconditions.
            cores: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
                .unwrap_or(1),
            kernel: command_output("uname", &["-sr"]),
            rustc: command_output("rustc", &["--version"]),
            server_version,
            libpq: format!("{}.{}", lib / 10000, lib % 10000),
            transport: server.transport.to_owned(),
            crates: locked_versions(&["pqlib", "postgres", "tokio-postgres", "sqlx", "tokio"]),
            python: None,
            args: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            mode: if opts.quick {
                "quick".into()
            } else {
                "full".into()
            },
            reps: opts.reps,
            load: load_average(),
            load_end: String::new(),
            pinning: String::new(),
            multi: String::new(),
            main_runtime: String::new(),
            libpq_source: if cfg!(feature = "vendored") {
                "built from source (`--features vendored`)".into()
            } else {
                "the one pqlib-sys's build script found (not `vendored`)".into()
            },
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        })
    }
}
