//! Rebuilds pqlib-sys' `libpq_N` cfgs from its metadata (`DEP_PQ_VERSION_NUMBER`), as the
//! `openssl` crate does with `DEP_OPENSSL_VERSION_NUMBER`, so that code here can be written
//! `#[cfg(libpq_17)]` for functions libpq 17 added.

const MINIMUM_MAJOR: u32 = 14;
const NEWEST_CFG_MAJOR: u32 = 18;

fn main() {
    let number: u32 = metadata("DEP_PQ_VERSION_NUMBER")
        .parse()
        .expect("pqlib-sys exports a decimal DEP_PQ_VERSION_NUMBER");
    let major = number / 10000;

    let names: Vec<String> = (MINIMUM_MAJOR + 1..=NEWEST_CFG_MAJOR)
        .map(|m| format!("libpq_{m}"))
        .collect();
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    println!("cargo::rustc-check-cfg=cfg(pqlib_vendored)");
    println!("cargo::rustc-check-cfg=cfg(docsrs)");
    for m in MINIMUM_MAJOR + 1..=major.min(NEWEST_CFG_MAJOR) {
        println!("cargo::rustc-cfg=libpq_{m}");
    }
    if metadata("DEP_PQ_VENDORED") == "1" {
        println!("cargo::rustc-cfg=pqlib_vendored");
    }
}

fn metadata(name: &str) -> String {
    println!("cargo::rerun-if-env-changed={name}");
    std::env::var(name).unwrap_or_else(|_| panic!("pqlib-sys (links = \"pq\") sets {name}"))
}
