//! Each probe step, exercised for real: cargo builds this crate's `libpq_version` example in
//! a scratch target dir under the environment of one scenario, and the test reads what the
//! build script told cargo (`--message-format=json`), runs the example, and checks its shared
//! libraries. Scenarios share one target dir, so every scenario also proves that the build
//! script reruns when a variable it declared with `rerun-if-env-changed` changes.
//!
//! These tests need the system libpq (Debian: libpq-dev, pkg-config, and for the static cases
//! postgresql-server-dev-NN), as `.ci/run` installs.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Every variable the build script reads, removed from the child's environment so that the
/// developer's own settings cannot leak into a scenario.
const PROBE_VARS: &[&str] = &[
    "PQ_LIB_DIR",
    "PQ_INCLUDE_DIR",
    "PQ_LIB_STATIC",
    "PG_CONFIG",
    "PQLIB_NO_BINDGEN",
    "LIBPQ_NO_PKG_CONFIG",
    "PKG_CONFIG",
    "PKG_CONFIG_PATH",
];

struct Build {
    success: bool,
    stderr: String,
    /// The `build-script-executed` message for pqlib-sys.
    script: Option<Value>,
    example: Option<PathBuf>,
    /// The environment the example runs with (a library path for a libpq outside the
    /// system's).
    run_vars: Vec<(String, String)>,
}

impl Build {
    fn script(&self) -> &Value {
        self.script
            .as_ref()
            .unwrap_or_else(|| panic!("no build-script message:\n{}", self.stderr))
    }

    fn env(&self, name: &str) -> String {
        self.script()["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair[1].as_str())
            .unwrap_or_else(|| panic!("build script set no {name}"))
            .to_owned()
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.script()[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The build script's own stdout, as cargo saved it.
    fn script_output(&self) -> String {
        let out_dir = Path::new(self.script()["out_dir"].as_str().unwrap());
        std::fs::read_to_string(out_dir.parent().unwrap().join("output")).unwrap()
    }

    /// Runs the example; returns its `key=value` report.
    fn run_example(&self) -> String {
        let exe = self.example.as_ref().expect("example was built");
        let out = clean_command(exe)
            .envs(self.run_vars.iter().cloned())
            .output()
            .unwrap();
        assert!(out.status.success(), "{} failed: {out:?}", exe.display());
        String::from_utf8(out.stdout).unwrap()
    }

    fn shared_libraries(&self) -> String {
        let out = clean_command("ldd")
            .envs(self.run_vars.iter().cloned())
            .arg(self.example.as_ref().unwrap())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn loads(&self, lib: &str) -> bool {
        self.shared_libraries()
            .lines()
            .any(|l| l.trim_start().starts_with(lib))
    }
}

/// A command that sees the system's libpq whatever the caller's environment names: without
/// the probe's variables and without a library path (CI's libpq 18 step sets both for the
/// suite, and these scenarios are about the system's libpq unless they say otherwise).
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in PROBE_VARS.iter().chain(&["LD_LIBRARY_PATH"]) {
        cmd.env_remove(var);
    }
    cmd
}

fn build(features: &[&str], vars: &[(&str, &str)]) -> Build {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe");
    let mut cmd = clean_command(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "--example",
        "libpq_version",
    ])
    .arg("--manifest-path")
    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    cmd.envs(vars.iter().copied());
    let out = cmd.output().expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let messages: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let script = messages
        .iter()
        .find(|m| {
            m["reason"] == "build-script-executed"
                && m["package_id"]
                    .as_str()
                    .is_some_and(|id| id.contains("pqlib-sys"))
        })
        .cloned();
    let example = messages.iter().find_map(|m| {
        (m["reason"] == "compiler-artifact" && m["target"]["name"] == "libpq_version")
            .then(|| m["executable"].as_str().map(PathBuf::from))
            .flatten()
    });
    Build {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        script,
        example,
        run_vars: Vec::new(),
    }
}

fn pkg_config_variable(name: &str) -> String {
    let out = clean_command("pkg-config")
        .args(["--variable", name, "libpq"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pkg-config knows libpq");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn system_version_number() -> u32 {
    let out = clean_command("pkg-config")
        .args(["--modversion", "libpq"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().unwrap());
    parts.next().unwrap() * 10000 + parts.next().unwrap_or(0)
}

fn host_target() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned()
}

#[test]
fn pkg_config_finds_the_system_libpq() {
    let b = build(&[], &[]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "pkg-config");
    assert_eq!(b.env("PQLIB_SYS_BINDINGS"), "bindgen");
    let version = system_version_number();
    assert_eq!(b.env("PQLIB_SYS_LIBPQ_VERSION_NUMBER"), version.to_string());
    assert!(b.strings("linked_libs").contains(&"pq".to_owned()));
    assert!(b.loads("libpq.so"), "{}", b.shared_libraries());
    let report = b.run_example();
    assert!(
        report.contains(&format!(
            "runtime={version} headers={version} origin=pkg-config"
        )),
        "{report}"
    );

    // Version cfgs: `libpq_N` for every N up to the found major version, declared for check-cfg.
    let cfgs = b.strings("cfgs");
    for major in 15..=18 {
        let name = format!("libpq_{major}");
        assert_eq!(
            cfgs.contains(&name),
            version / 10000 >= major,
            "{name} in {cfgs:?}"
        );
    }
    let output = b.script_output();
    assert!(output.contains("cargo::rustc-check-cfg=cfg(libpq_15, libpq_16, libpq_17, libpq_18)"));
    assert!(output.contains(&format!("cargo::metadata=version_number={version}")));
    assert!(output.contains("cargo::metadata=include=/"));
}

/// The PostgreSQL 18 package `scripts/postgres-versions.sh` installs (the same cache rule as
/// the script's), or `None` after saying why the caller does not run.
fn installed_postgres_18() -> Option<PathBuf> {
    let cache = match std::env::var_os("PQLIB_POSTGRES_CACHE").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        // SAFETY: geteuid has no preconditions.
        None if unsafe { libc::geteuid() } == 0 => PathBuf::from("/var/cache/pqlib/postgres"),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("pqlib/postgres"),
    };
    let dir = cache.join("18");
    if dir.join(".complete").exists() {
        return Some(dir);
    }
    let reason = format!(
        "no PostgreSQL 18 package in {}: run scripts/postgres-versions.sh 18",
        cache.display()
    );
    assert!(std::env::var_os("PQLIB_TEST_NO_SKIP").is_none(), "{reason}");
    eprintln!("SKIPPED: {reason}");
    None
}

/// The route a user with a newer libpq than the system's takes: `PKG_CONFIG_PATH` at its
/// `libpq.pc`, the library path at its `lib` when running.
#[test]
fn pkg_config_path_selects_another_libpq() {
    let Some(pg18) = installed_postgres_18() else {
        return;
    };
    let pkgconfig = pg18.join("lib/pkgconfig");
    let lib = pg18.join("lib");
    let mut b = build(&[], &[("PKG_CONFIG_PATH", pkgconfig.to_str().unwrap())]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "pkg-config");
    assert_eq!(b.env("PQLIB_SYS_LIBPQ_VERSION_NUMBER"), "180006");
    assert!(b.strings("cfgs").contains(&"libpq_18".to_owned()));
    assert!(
        b.strings("linked_paths")
            .iter()
            .any(|p| p.ends_with(lib.to_str().unwrap())),
        "{:?}",
        b.strings("linked_paths")
    );
    b.run_vars = vec![("LD_LIBRARY_PATH".into(), lib.to_str().unwrap().into())];
    assert!(
        b.shared_libraries()
            .contains(&format!("{}/libpq.so.5", lib.display())),
        "{}",
        b.shared_libraries()
    );
    let report = b.run_example();
    assert!(
        report.contains("runtime=180006 headers=180006 origin=pkg-config"),
        "{report}"
    );
}

#[test]
fn every_variable_read_is_declared_unquoted() {
    let b = build(&[], &[]);
    assert!(b.success, "{}", b.stderr);
    let output = b.script_output();
    let declared: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("cargo::rerun-if-env-changed="))
        .collect();
    let target = host_target();
    assert!(declared.contains(&"PQLIB_NO_BINDGEN"), "{declared:?}");
    for var in ["PQ_LIB_DIR", "PQ_INCLUDE_DIR", "PQ_LIB_STATIC", "PG_CONFIG"] {
        assert!(declared.contains(&var), "{var} not declared: {declared:?}");
        let specific = format!("{var}_{}", target.replace('-', "_"));
        assert!(
            declared.contains(&specific.as_str()),
            "{specific} not declared"
        );
    }
    assert!(
        declared.iter().all(|name| !name.contains('"')),
        "{declared:?}"
    );
}

#[test]
fn pq_lib_static_links_libpq_into_the_binary() {
    let b = build(&[], &[("PQ_LIB_STATIC", "1")]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "pkg-config");
    assert!(b.strings("linked_libs").contains(&"static=pq".to_owned()));
    assert!(!b.loads("libpq.so"), "{}", b.shared_libraries());
    assert!(b.run_example().contains("origin=pkg-config tls=OpenSSL"));
}

#[test]
fn pq_lib_dir_comes_before_pkg_config() {
    let lib_dir = pkg_config_variable("libdir");
    let include_dir = pkg_config_variable("includedir");
    let b = build(
        &[],
        &[
            ("PQ_LIB_DIR", lib_dir.as_str()),
            ("PQ_INCLUDE_DIR", include_dir.as_str()),
            // Were pkg-config consulted at all, this would fail the build.
            ("PKG_CONFIG", "/nonexistent/pkg-config"),
        ],
    );
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "PQ_LIB_DIR");
    assert!(
        b.strings("linked_paths")
            .iter()
            .any(|p| p.ends_with(&lib_dir))
    );
    assert!(b.run_example().contains("origin=PQ_LIB_DIR"));
}

#[test]
fn target_specific_pq_lib_dir_wins_over_the_plain_one() {
    let lib_dir = pkg_config_variable("libdir");
    let specific = format!("PQ_LIB_DIR_{}", host_target().replace('-', "_"));
    // Without PQ_INCLUDE_DIR the headers are looked for beside the library (Debian multiarch).
    let b = build(
        &[],
        &[
            (specific.as_str(), lib_dir.as_str()),
            ("PQ_LIB_DIR", "/nonexistent"),
        ],
    );
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "PQ_LIB_DIR");
}

#[test]
fn a_missing_pq_lib_dir_is_an_error_naming_the_variable() {
    let b = build(&[], &[("PQ_LIB_DIR", "/nonexistent/pqlib/lib")]);
    assert!(!b.success);
    assert!(
        b.stderr
            .contains("PQ_LIB_DIR=/nonexistent/pqlib/lib does not exist"),
        "{}",
        b.stderr
    );
    let b = build(&[], &[("PQ_INCLUDE_DIR", "/nonexistent/pqlib/include")]);
    assert!(!b.success);
    assert!(
        b.stderr
            .contains("PQ_INCLUDE_DIR=/nonexistent/pqlib/include"),
        "{}",
        b.stderr
    );
}

#[test]
fn pg_config_is_used_when_pkg_config_is_not() {
    let b = build(
        &[],
        &[
            ("LIBPQ_NO_PKG_CONFIG", "1"),
            ("PG_CONFIG", "/usr/bin/pg_config"),
        ],
    );
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "pg_config");
    assert!(b.loads("libpq.so"));
    assert!(b.run_example().contains("origin=pg_config"));

    let b = build(&[], &[("LIBPQ_NO_PKG_CONFIG", "1"), ("PQ_LIB_STATIC", "1")]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "pg_config");
    assert!(!b.loads("libpq.so"), "{}", b.shared_libraries());
    assert!(b.run_example().contains("origin=pg_config tls=OpenSSL"));
}

#[test]
fn a_broken_pg_config_is_an_error_naming_the_variable() {
    let b = build(
        &[],
        &[
            ("LIBPQ_NO_PKG_CONFIG", "1"),
            ("PG_CONFIG", "/nonexistent/pg_config"),
        ],
    );
    assert!(!b.success);
    assert!(
        b.stderr
            .contains("PG_CONFIG=/nonexistent/pg_config could not be run"),
        "{}",
        b.stderr
    );
}

#[test]
fn nothing_found_lists_what_was_tried_and_how_to_fix_it() {
    // A PATH with the toolchain and the C compiler but no pg_config.
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-path-without-pg_config");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["cc", "gcc", "ld", "as", "ar"] {
        let link = bin.join(tool);
        if !link.exists() {
            std::os::unix::fs::symlink(Path::new("/usr/bin").join(tool), &link).unwrap();
        }
    }
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap());
    let path = std::env::join_paths([bin.as_path(), cargo.parent().unwrap()]).unwrap();
    let b = build(
        &[],
        &[
            ("LIBPQ_NO_PKG_CONFIG", "1"),
            ("PATH", path.to_str().unwrap()),
        ],
    );
    assert!(!b.success);
    for expected in [
        "libpq 14 or newer was not found",
        "feature `vendored`: not enabled",
        "PQ_LIB_DIR (or PQ_LIB_DIR_<target>): not set",
        "pkg-config `libpq >= 14`",
        "pg_config: not on PATH, and PG_CONFIG is not set",
        "sudo apt-get install libpq-dev pkg-config",
        "sudo dnf install libpq-devel",
        "brew install libpq",
        "PQ_LIB_DIR=\"C:\\Program Files\\PostgreSQL\\18\\lib\"",
        "features = [\"vendored\"]",
    ] {
        assert!(
            b.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            b.stderr
        );
    }
}

#[test]
fn pregenerated_bindings_are_announced_and_work_with_the_system_libpq() {
    let b = build(&[], &[("PQLIB_NO_BINDGEN", "1")]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_BINDINGS"), "pregenerated");
    assert!(
        b.script_output()
            .contains("cargo::warning=using pregenerated libpq 18 bindings"),
        "{}",
        b.script_output()
    );
    let version = system_version_number();
    assert!(b.run_example().contains(&format!("runtime={version}")));
}

#[test]
fn vendored_builds_libpq_18_from_source_and_links_it_statically() {
    let b = build(&["vendored"], &[]);
    assert!(b.success, "{}", b.stderr);
    assert_eq!(b.env("PQLIB_SYS_ORIGIN"), "vendored");
    assert_eq!(b.env("PQLIB_SYS_LIBPQ_VERSION_NUMBER"), "180006");
    assert!(b.strings("cfgs").contains(&"libpq_18".to_owned()));
    assert!(!b.loads("libpq.so"), "{}", b.shared_libraries());
    // The header version is right; pq-src 0.3.14's PQlibVersion() is not (18.600).
    assert!(
        b.run_example()
            .contains("runtime=180600 headers=180006 origin=vendored tls=OpenSSL")
    );
}

#[test]
fn the_vendored_version_constant_matches_the_pq_src_pin() {
    let manifest = include_str!("../Cargo.toml");
    let build_version: String = include_str!("../build/version.rs")
        .split_whitespace()
        .collect();
    assert!(
        manifest.contains("pq-src = { version = \"=0.3.14\""),
        "pq-src pin changed"
    );
    // pq-src 0.3.14 is 0.3.14+libpq-18.6.
    assert!(build_version.contains("pubconstVENDORED:Version=Version{major:18,minor:6,};"));
}
