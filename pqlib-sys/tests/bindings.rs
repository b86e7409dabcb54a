//! The committed pregenerated bindings (used without libclang or with `PQLIB_NO_BINDGEN=1`)
//! must equal what bindgen makes from libpq 18's headers with the build script's configuration.
//!
//! Runs with `--features vendored` (the bundled libpq 18 headers). To refresh the file after a
//! bindgen or pq-src upgrade:
//! `PQLIB_UPDATE_BINDINGS=1 cargo test -p pqlib-sys --features vendored --test bindings`.

#[path = "../build/bindgen_config.rs"]
mod bindgen_config;

use std::path::PathBuf;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bindings/libpq18.rs");

#[test]
fn committed_bindings_match_a_fresh_bindgen_run() {
    let version: u32 = env!("PQLIB_SYS_LIBPQ_VERSION_NUMBER").parse().unwrap();
    if version / 10000 != 18 {
        eprintln!(
            "skipped: the committed bindings come from libpq 18 headers, this build found libpq \
             {version} ({}); run with --features vendored",
            pqlib_sys::LIBPQ_ORIGIN
        );
        return;
    }
    if let Err(why) = clang_sys::load() {
        eprintln!("skipped: libclang could not be loaded ({why})");
        return;
    }
    let include_dirs: Vec<PathBuf> =
        std::env::split_paths(env!("PQLIB_SYS_INCLUDE_DIRS")).collect();
    let fresh = bindgen_config::libpq_builder(&include_dirs)
        .generate()
        .expect("bindgen runs on libpq's headers")
        .to_string();

    if std::env::var_os("PQLIB_UPDATE_BINDINGS").is_some() {
        std::fs::write(COMMITTED, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap();
    if let Some((line, (fresh_line, committed_line))) = fresh
        .lines()
        .zip(committed.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "{COMMITTED} drifted from a fresh bindgen run at line {}:\n  fresh:     {fresh_line}\n  \
             committed: {committed_line}\nrefresh it with PQLIB_UPDATE_BINDINGS=1 (see this file's docs)",
            line + 1
        );
    }
    assert_eq!(
        fresh.lines().count(),
        committed.lines().count(),
        "{COMMITTED} and a fresh bindgen run differ in length; refresh with PQLIB_UPDATE_BINDINGS=1"
    );
}
