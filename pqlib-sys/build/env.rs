//! Every environment variable the build script reads goes through here, so that each one is
//! declared to cargo with `rerun-if-env-changed` (unquoted: a quoted name never matches).

use std::ffi::OsString;

pub struct BuildEnv {
    /// The target triple, as cargo spells it (`x86_64-unknown-linux-gnu`).
    pub target: String,
    /// `CARGO_CFG_TARGET_OS`: facts about the target, never `cfg!` (that is the host's).
    pub target_os: String,
    /// `CARGO_CFG_TARGET_ENV`: `msvc` names the library `libpq.lib`, everyone else `libpq.a`.
    pub target_env: String,
}

impl BuildEnv {
    pub fn new() -> BuildEnv {
        BuildEnv {
            target: cargo_var("TARGET"),
            target_os: cargo_var("CARGO_CFG_TARGET_OS"),
            target_env: cargo_var("CARGO_CFG_TARGET_ENV"),
        }
    }

    /// A variable cargo always sets for build scripts.
    pub fn cargo(&self, name: &str) -> String {
        cargo_var(name)
    }

    /// Whether cargo enabled this crate's feature `name` (as written in Cargo.toml).
    pub fn feature(&self, name: &str) -> bool {
        let var = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
        std::env::var_os(var).is_some()
    }

    /// A user-set variable; an empty value counts as unset.
    pub fn var(&self, name: &str) -> Option<OsString> {
        println!("cargo::rerun-if-env-changed={name}");
        std::env::var_os(name).filter(|value| !value.is_empty())
    }

    /// `NAME_<target>` (with the triple's `-` as is, or as `_`) before `NAME`, as the `cc` crate
    /// does. Returns the name that was set, for error messages.
    pub fn target_var(&self, name: &str) -> Option<(String, OsString)> {
        let candidates = [
            format!("{name}_{}", self.target),
            format!("{name}_{}", self.target.replace('-', "_")),
            name.to_owned(),
        ];
        candidates
            .into_iter()
            .find_map(|candidate| self.var(&candidate).map(|value| (candidate, value)))
    }

    /// A yes/no switch: set to anything but `0`, `false`, `no` or `off` means yes.
    pub fn flag(&self, name: &str) -> bool {
        self.var(name).is_some_and(|value| is_yes(&value))
    }

    /// A switch with target-specific forms, as for [`BuildEnv::target_var`].
    pub fn target_flag(&self, name: &str) -> bool {
        self.target_var(name)
            .is_some_and(|(_, value)| is_yes(&value))
    }
}

fn is_yes(value: &OsString) -> bool {
    let value = value.to_string_lossy().to_ascii_lowercase();
    !matches!(value.as_str(), "0" | "false" | "no" | "off")
}

fn cargo_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
