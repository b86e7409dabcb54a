//! The suite's own `libpq_N` cfgs, rebuilt from pqlib-sys' metadata (`DEP_PQ_VERSION_NUMBER`)
//! exactly as `pqlib/build.rs` does: a test of an API that pqlib only has with a newer libpq
//! (e.g. `pqlib::oauth`, libpq 18) is compiled under `#[cfg(libpq_18)]`, and reports SKIPPED
//! at run time otherwise (`common::libpq_at_least`).

const MINIMUM_MAJOR: u32 = 14;
const NEWEST_CFG_MAJOR: u32 = 18;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DEP_PQ_VERSION_NUMBER");
    let number: u32 = std::env::var("DEP_PQ_VERSION_NUMBER")
        .expect("pqlib-sys (links = \"pq\") sets DEP_PQ_VERSION_NUMBER")
        .parse()
        .expect("pqlib-sys exports a decimal DEP_PQ_VERSION_NUMBER");
    let major = number / 10000;
    let names: Vec<String> = (MINIMUM_MAJOR + 1..=NEWEST_CFG_MAJOR)
        .map(|m| format!("libpq_{m}"))
        .collect();
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    for m in MINIMUM_MAJOR + 1..=major.min(NEWEST_CFG_MAJOR) {
        println!("cargo::rustc-cfg=libpq_{m}");
    }
}
