//! The libpq version, read from headers rather than asked of the library at run time:
//! pq-src 0.3.14 compiles `PQlibVersion()` to return 180600 for libpq 18.6.

use std::fmt;
use std::fs;
use std::path::PathBuf;

/// The libpq release bundled by the exact `pq-src` version pinned in Cargo.toml.
/// pq-src's headers carry no version number, so it is stated here; `tests/probe.rs` checks it
/// against the pin and the build checks the major version against the headers' feature macros.
pub const VENDORED: Version = Version {
    major: 18,
    minor: 6,
};

/// The oldest libpq this crate supports (pipeline mode arrived in 14).
pub const MINIMUM_MAJOR: u32 = 14;

/// The newest major version that gets a `libpq_N` cfg.
pub const NEWEST_CFG_MAJOR: u32 = 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// The number in `PG_VERSION_NUM` format: major * 10000 + minor (10 and later).
    pub fn number(self) -> u32 {
        self.major * 10000 + self.minor
    }

    fn from_number(number: u32) -> Version {
        Version {
            major: number / 10000,
            minor: number % 10000,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What the headers in `include_dirs` say: the exact version from `pg_config.h` when it is
/// there (system installs ship it), and the lowest major version consistent with the feature
/// macros of `libpq-fe.h` (always there).
pub struct HeaderVersion {
    pub exact: Option<Version>,
    pub major_at_least: u32,
}

pub fn from_headers(include_dirs: &[PathBuf]) -> Result<HeaderVersion, String> {
    let read = |name: &str| {
        include_dirs
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .map(|path| {
                fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
            })
            .transpose()
    };
    let fe = read("libpq-fe.h")?
        .ok_or_else(|| format!("libpq-fe.h not found in {}", display_dirs(include_dirs)))?;
    let major_at_least = major_from_feature_macros(&fe);
    let exact = read("pg_config.h")?
        .as_deref()
        .and_then(|text| define_value(text, "PG_VERSION_NUM"))
        .and_then(|value| value.parse().ok())
        .map(Version::from_number);
    if let Some(v) = exact {
        if v.major < major_at_least {
            return Err(format!(
                "pg_config.h says libpq {v}, but libpq-fe.h has features of libpq {major_at_least}: \
                 the include dirs ({}) mix two installations",
                display_dirs(include_dirs)
            ));
        }
    }
    Ok(HeaderVersion {
        exact,
        major_at_least,
    })
}

/// Each `LIBPQ_HAS_*` macro marks the release that introduced it; 15 and 16 added none.
fn major_from_feature_macros(libpq_fe: &str) -> u32 {
    const MARKERS: &[(&str, u32)] = &[
        ("LIBPQ_HAS_FULL_PROTOCOL_VERSION", 18),
        ("LIBPQ_HAS_PROMPT_OAUTH_DEVICE", 18),
        ("LIBPQ_HAS_ASYNC_CANCEL", 17),
        ("LIBPQ_HAS_CHUNK_MODE", 17),
        ("LIBPQ_HAS_PIPELINING", 14),
    ];
    MARKERS
        .iter()
        .filter(|(name, _)| define_value(libpq_fe, name).is_some())
        .map(|&(_, major)| major)
        .max()
        .unwrap_or(0)
}

/// The value of `#define NAME value` in C source text.
fn define_value<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines().find_map(|line| {
        let mut words = line.trim_start().strip_prefix('#')?.split_whitespace();
        (words.next()? == "define" && words.next()? == name).then(|| words.next().unwrap_or(""))
    })
}

pub fn display_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    names.join(", ")
}
