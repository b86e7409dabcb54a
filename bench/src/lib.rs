//! The benchmark harness's library part: the raw C baseline's functions (`c/baseline.c`),
//! shared by the harness (`src/main.rs`) and the FFI micro-benchmarks (`benches/ffi.rs`).

pub mod c;
