//! What the compiler must refuse: values borrowed from a result outliving it, a connection
//! used behind a transaction's back, notice handlers that are not `Send + 'static`, and a
//! connection shared between threads. Each case's `.stderr` shows the intended error.
//!
//! rustc shortens type names in its messages only when they are unique, so the expected
//! output holds for one feature set: pqlib's defaults, as `cargo test -p pqlib --test
//! compile_fail` builds it (`.ci/run` does). Under other features (e.g. `tokio`, which adds a
//! second `Connection`) the cases are not compared.

fn canonical_features() -> bool {
    let canonical = !cfg!(feature = "tokio") && !cfg!(feature = "vendored");
    if !canonical {
        eprintln!(
            "not compared under this feature set; run `cargo test -p pqlib --test compile_fail`"
        );
    }
    canonical
}

#[test]
fn compile_fail() {
    if canonical_features() {
        trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
    }
}

/// `#[derive(ToSql, FromSql)]` through `pqlib::types`, as documented (with `postgres-types`
/// as a direct dependency, since postgres-derive's output names `::postgres_types`).
#[test]
fn derive_as_documented() {
    if canonical_features() {
        trybuild::TestCases::new().pass("tests/compile_fail/pass/*.rs");
    }
}
