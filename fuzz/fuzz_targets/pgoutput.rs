//! The `pgoutput` target: its oracle lives in `fuzz/oracles/pgoutput.rs`, shared with the test
//! suite's replay of `fuzz/regressions/` (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/pgoutput.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::check(data));
