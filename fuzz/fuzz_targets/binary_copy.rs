//! The `binary_copy` target: its oracle lives in `fuzz/oracles/binary_copy.rs`, shared with the test suite's
//! replay of `fuzz/regressions/` (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/binary_copy.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
