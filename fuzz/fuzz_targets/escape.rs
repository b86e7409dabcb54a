//! The `escape` target: its oracle lives in `fuzz/oracles/escape.rs`, shared with the test suite's
//! replay of `fuzz/regressions/` (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/escape.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
