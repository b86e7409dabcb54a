//! Compiles the raw C baseline (`c/baseline.c`) against the libpq headers pqlib-sys found.
//! Linking libpq itself comes through the pqlib-sys dependency.

fn main() {
    println!("cargo::rerun-if-changed=c/baseline.c");
    println!("cargo::rerun-if-env-changed=DEP_PQ_INCLUDE");
    let include = std::env::var_os("DEP_PQ_INCLUDE")
        .expect("pqlib-sys exports DEP_PQ_INCLUDE to its direct dependents");
    let mut build = cc::Build::new();
    build
        .file("c/baseline.c")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true);
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build.compile("pqlib_bench_baseline");
}
