//! What the compiler must refuse: values borrowed from a result outliving it, a connection
//! used behind a transaction's back, notice handlers that are not `Send + 'static`, and a
//! connection shared between threads. Each case's `.stderr` shows the intended error.

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}

/// `#[derive(ToSql, FromSql)]` through `pqlib::types`, as documented (with `postgres-types`
/// as a direct dependency, since postgres-derive's output names `::postgres_types`).
#[test]
fn derive_as_documented() {
    let t = trybuild::TestCases::new();
    t.pass("tests/compile_fail/pass/*.rs");
}
