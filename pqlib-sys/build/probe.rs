//! The probe: where libpq is, how to link it, where its headers are.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::BuildEnv;

pub struct Libpq {
    /// Directories holding `libpq-fe.h` (and, for system installs, `pg_config.h`).
    pub include_dirs: Vec<PathBuf>,
    /// How it was found, for messages and `DEP_PQ_ORIGIN`: `vendored`, `PQ_LIB_DIR`,
    /// `pkg-config` or `pg_config`.
    pub origin: &'static str,
    pub vendored: bool,
}

/// Runs the probe steps in order. A step that is not configured is noted and skipped; a step
/// that the user configured explicitly and that fails is an error, never a silent fallback.
pub fn find_libpq(env: &BuildEnv) -> Result<Libpq, String> {
    let include_override = include_dir_override(env)?;
    if env.feature("vendored") {
        return Ok(vendored(env));
    }
    let statik = env.target_flag("PQ_LIB_STATIC");
    // Read up front so that it is declared to cargo even when an earlier step succeeds.
    let pg_config = PgConfig::from_env(env);
    let mut tried = vec!["feature `vendored`: not enabled".to_owned()];

    match from_lib_dir(env, statik, include_override.as_deref())? {
        Some(found) => return Ok(found),
        None => tried.push("PQ_LIB_DIR (or PQ_LIB_DIR_<target>): not set".into()),
    }
    match from_pkg_config(env, &pg_config, statik, include_override.as_deref()) {
        Ok(found) => return Ok(found),
        Err(why) => tried.push(format!("pkg-config `libpq >= 14`: {}", why.trim())),
    }
    match from_pg_config(env, &pg_config, statik, include_override.as_deref())? {
        Some(found) => return Ok(found),
        None => tried.push("pg_config: not on PATH, and PG_CONFIG is not set".into()),
    }
    Err(not_found(env, &tried))
}

/// `PQ_INCLUDE_DIR` replaces whatever include dir a probe step found.
fn include_dir_override(env: &BuildEnv) -> Result<Option<PathBuf>, String> {
    let Some((name, dir)) = env.target_var("PQ_INCLUDE_DIR") else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.join("libpq-fe.h").is_file() {
        return Err(format!(
            "{name}={} does not contain libpq-fe.h (the directory {})",
            dir.display(),
            if dir.is_dir() {
                "exists"
            } else {
                "does not exist"
            }
        ));
    }
    Ok(Some(dir))
}

/// libpq compiled from source by `pq-src`, which also emits the link lines for its static
/// archive; OpenSSL comes from `openssl-sys` (built from source with `vendored-openssl`).
fn vendored(env: &BuildEnv) -> Libpq {
    for ignored in ["PQ_LIB_DIR", "PG_CONFIG"] {
        if let Some((name, _)) = env.target_var(ignored) {
            println!(
                "cargo::warning={name} is ignored: feature `vendored` builds libpq from source"
            );
        }
    }
    let include = env.cargo("DEP_PQ_SYS_SRC_INCLUDE");
    Libpq {
        include_dirs: vec![PathBuf::from(include)],
        origin: "vendored",
        vendored: true,
    }
}

fn from_lib_dir(
    env: &BuildEnv,
    statik: bool,
    include_override: Option<&Path>,
) -> Result<Option<Libpq>, String> {
    let Some((name, dir)) = env.target_var("PQ_LIB_DIR") else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(format!(
            "{name}={} does not exist or is not a directory",
            dir.display()
        ));
    }
    let include_dir = match include_override {
        Some(include) => include.to_owned(),
        None => {
            // Conventional layouts: <prefix>/lib + <prefix>/include[/postgresql], and Debian's
            // multiarch <prefix>/lib/<triple> + <prefix>/include/postgresql.
            let candidates = [
                dir.join("../include"),
                dir.join("../include/postgresql"),
                dir.join("../../include/postgresql"),
            ];
            candidates
                .iter()
                .find(|c| c.join("libpq-fe.h").is_file())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{name} is set but PQ_INCLUDE_DIR is not, and libpq-fe.h is in none of \
                         {}: set PQ_INCLUDE_DIR to the directory holding libpq-fe.h",
                        candidates
                            .iter()
                            .map(|c| c.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
        }
    };
    println!("cargo::rustc-link-search=native={}", dir.display());
    if statik {
        let archive = dir.join(static_archive_name(env, "pq"));
        if !archive.is_file() {
            return Err(format!(
                "PQ_LIB_STATIC is set, but {} does not exist (from {name})",
                archive.display()
            ));
        }
        println!("cargo::rustc-link-lib=static={}", libpq_name(env));
        // A source install puts libpq's own helpers beside it; its system libraries (OpenSSL,
        // GSSAPI, LDAP) are the user's to add, since nothing here lists them.
        for helper in ["pgcommon", "pgport"] {
            if dir.join(static_archive_name(env, helper)).is_file() {
                println!("cargo::rustc-link-lib=static={helper}");
            }
        }
    } else {
        println!("cargo::rustc-link-lib={}", libpq_name(env));
    }
    Ok(Some(Libpq {
        include_dirs: vec![include_dir],
        origin: "PQ_LIB_DIR",
        vendored: false,
    }))
}

fn from_pkg_config(
    env: &BuildEnv,
    pg_config: &PgConfig,
    statik: bool,
    include_override: Option<&Path>,
) -> Result<Libpq, String> {
    // The crate's own link lines are not used: for a library in a system directory it links
    // dynamically even when asked for static, which is exactly what PQ_LIB_STATIC must not do.
    let library = pkg_config::Config::new()
        .atleast_version("14")
        .cargo_metadata(false)
        .env_metadata(true)
        .statik(statik)
        .probe("libpq")
        .map_err(|e| e.to_string())?;
    let mut search = library.link_paths.clone();
    for dir in &library.link_paths {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    if statik {
        // Debian's libpq.pc names -lpgcommon -lpgport without the directory they live in.
        search.extend(
            pg_config
                .query("--pkglibdir")
                .ok()
                .flatten()
                .map(PathBuf::from),
        );
        link_static_libpq(env, &library.libs, &search, "pkg-config")?;
    } else {
        for lib in &library.libs {
            println!("cargo::rustc-link-lib={lib}");
        }
    }
    Ok(Libpq {
        include_dirs: match include_override {
            Some(include) => vec![include.to_owned()],
            None => library.include_paths,
        },
        origin: "pkg-config",
        vendored: false,
    })
}

/// `pg_config`, or the program that `PG_CONFIG` (or `PG_CONFIG_<target>`) names.
struct PgConfig {
    program: OsString,
    /// The variable that chose the program, when one did.
    configured: bool,
    /// For messages: `PG_CONFIG=/path` or `pg_config (from PATH)`.
    described: String,
}

impl PgConfig {
    fn from_env(env: &BuildEnv) -> PgConfig {
        match env.target_var("PG_CONFIG") {
            Some((name, value)) => PgConfig {
                described: format!("{name}={}", Path::new(&value).display()),
                program: value,
                configured: true,
            },
            None => PgConfig {
                program: "pg_config".into(),
                configured: false,
                described: "pg_config (from PATH)".into(),
            },
        }
    }

    /// `Ok(None)` when no `pg_config` is on PATH and none was configured; a configured one
    /// that cannot run is an error.
    fn query(&self, arg: &str) -> Result<Option<String>, String> {
        match Command::new(&self.program).arg(arg).output() {
            Ok(out) if out.status.success() => {
                Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
            }
            Ok(out) => Err(format!(
                "{} {arg} failed ({}): {}",
                self.described,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) if !self.configured && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{} could not be run: {e}", self.described)),
        }
    }
}

fn from_pg_config(
    env: &BuildEnv,
    pg_config: &PgConfig,
    statik: bool,
    include_override: Option<&Path>,
) -> Result<Option<Libpq>, String> {
    let Some(lib_dir) = pg_config.query("--libdir")? else {
        return Ok(None);
    };
    let include_dir = match include_override {
        Some(include) => include.to_owned(),
        None => PathBuf::from(pg_config.query("--includedir")?.unwrap_or_default()),
    };
    println!("cargo::rustc-link-search=native={lib_dir}");
    if statik {
        let mut search = vec![PathBuf::from(&lib_dir)];
        search.extend(pg_config.query("--pkglibdir")?.map(PathBuf::from));
        let libs = static_dependencies(pg_config)?;
        link_static_libpq(env, &libs, &search, &pg_config.described)?;
    } else {
        println!("cargo::rustc-link-lib={}", libpq_name(env));
    }
    Ok(Some(Libpq {
        include_dirs: vec![include_dir],
        origin: "pg_config",
        vendored: false,
    }))
}

/// What a static libpq needs beside itself. `pg_config --libs` lists what the *server* links
/// (keep only what libpq may use) and leaves out LDAP, which `--configure` reveals.
fn static_dependencies(pg_config: &PgConfig) -> Result<Vec<String>, String> {
    let server_libs = pg_config.query("--libs")?.unwrap_or_default();
    let configure = pg_config.query("--configure")?.unwrap_or_default();
    let mut libs = vec!["pq".to_owned()];
    let mut add = |lib: &str| {
        if !libs.iter().any(|known| known == lib) {
            libs.push(lib.to_owned());
        }
    };
    server_libs
        .split_whitespace()
        .filter_map(|flag| flag.strip_prefix("-l"))
        .filter(|lib| LIBPQ_DEPENDENCIES.contains(lib))
        .for_each(&mut add);
    if configure.contains("--with-ldap") {
        add("ldap");
    }
    if configure.contains("--with-gssapi") {
        add("gssapi_krb5");
    }
    if configure.contains("--with-ssl=openssl") || configure.contains("--with-openssl") {
        add("ssl");
        add("crypto");
    }
    Ok(libs)
}

/// Libraries a libpq build can depend on; anything else in `pg_config --libs` is the server's.
const LIBPQ_DEPENDENCIES: &[&str] = &[
    "pgcommon",
    "pgport",
    "ssl",
    "crypto",
    "gssapi_krb5",
    "gssapi",
    "ldap",
    "ldap_r",
    "lber",
    "m",
    "secur32",
    "ws2_32",
    "shell32",
    "advapi32",
    "wldap32",
    "crypt32",
];

/// Links libpq and its PostgreSQL helper archives statically, everything else dynamically.
fn link_static_libpq(
    env: &BuildEnv,
    libs: &[String],
    search: &[PathBuf],
    source: &str,
) -> Result<(), String> {
    for lib in libs {
        if !matches!(lib.as_str(), "pq" | "pgcommon" | "pgport") {
            println!("cargo::rustc-link-lib={lib}");
            continue;
        }
        let archive = static_archive_name(env, lib);
        let Some(dir) = search.iter().find(|dir| dir.join(&archive).is_file()) else {
            return Err(format!(
                "PQ_LIB_STATIC is set and {source} found libpq, but {archive} is in none of: {}.\n\
                 Debian/Ubuntu ship libpgcommon.a and libpgport.a in postgresql-server-dev-NN; \
                 or enable the `vendored` feature for a static libpq built from source.",
                search
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        println!("cargo::rustc-link-search=native={}", dir.display());
        let name = if lib == "pq" { libpq_name(env) } else { lib };
        println!("cargo::rustc-link-lib=static={name}");
    }
    Ok(())
}

/// MSVC builds of PostgreSQL name the library `libpq.lib`; everywhere else it is `libpq.a`/`.so`.
fn libpq_name(env: &BuildEnv) -> &'static str {
    if env.target_env == "msvc" {
        "libpq"
    } else {
        "pq"
    }
}

fn static_archive_name(env: &BuildEnv, lib: &str) -> String {
    match (env.target_env.as_str(), lib) {
        ("msvc", "pq") => "libpq.lib".to_owned(),
        ("msvc", _) => format!("{lib}.lib"),
        _ => format!("lib{lib}.a"),
    }
}

fn not_found(env: &BuildEnv, tried: &[String]) -> String {
    let platforms: &[(&str, &str, &str)] = &[
        (
            "linux",
            "Debian/Ubuntu",
            "sudo apt-get install libpq-dev pkg-config",
        ),
        (
            "linux",
            "Fedora/RHEL",
            "sudo dnf install libpq-devel pkgconf-pkg-config",
        ),
        (
            "macos",
            "macOS",
            "brew install libpq, then PG_CONFIG=\"$(brew --prefix libpq)/bin/pg_config\" \
             (Homebrew's libpq is keg-only)",
        ),
        (
            "windows",
            "Windows",
            "install PostgreSQL, then PQ_LIB_DIR=\"C:\\Program Files\\PostgreSQL\\18\\lib\" and \
             PQ_INCLUDE_DIR=\"C:\\Program Files\\PostgreSQL\\18\\include\"",
        ),
    ];
    let mut message = String::from("libpq 14 or newer was not found. Tried, in order:\n");
    for step in tried {
        message += &format!("  - {step}\n");
    }
    message += "\nInstall libpq's development files:\n";
    for (os, platform, how) in platforms {
        let here = if *os == env.target_os {
            "  <- this target"
        } else {
            ""
        };
        message += &format!("  {platform:<14} {how}{here}\n");
    }
    message += "\nor build libpq from source into the binary with the `vendored` feature:\n  \
                pqlib = { version = \"*\", features = [\"vendored\"] }   \
                # add `vendored-openssl` to build OpenSSL too";
    message
}
