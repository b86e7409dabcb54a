//! Every input kept in `fuzz/regressions/` replayed through its target's oracle (the same code
//! `cargo fuzz` runs, from `fuzz/oracles/`), as an ordinary test: a finding that comes back
//! fails here without a fuzzing toolchain. A file is named `<target>-<what it found>`.

#[path = "../fuzz/oracles/binary_copy.rs"]
mod binary_copy;
#[path = "../fuzz/oracles/config.rs"]
mod config;
#[path = "../fuzz/oracles/escape.rs"]
mod escape;
#[path = "../fuzz/oracles/from_sql.rs"]
mod from_sql;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

/// libFuzzer's `-malloc_limit_mb` for this binary: a request this large is refused (and the
/// process aborts with "memory allocation of N bytes failed"), where the system allocator
/// would hand out untouched pages and let the test pass. The array-header findings asked
/// for 7 GB from under 100 bytes.
const MALLOC_LIMIT: usize = 256 << 20;

struct Limited;

// SAFETY: forwards to the system allocator; refusing a request (null) is allowed.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// A target's oracle: panics (or aborts) on a finding.
type Oracle = fn(&[u8]);

const TARGETS: &[(&str, Oracle)] = &[
    ("binary_copy", binary_copy::check),
    ("config", config::check),
    ("escape", escape::check),
    ("from_sql", from_sql::check),
];

#[test]
fn every_stored_fuzz_input_passes_its_oracle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (_, check) = TARGETS
            .iter()
            .find(|(target, _)| {
                name.strip_prefix(target)
                    .is_some_and(|r| r.starts_with('-'))
            })
            .unwrap_or_else(|| panic!("{name}: names no fuzz target ({TARGETS:?})"));
        check(&std::fs::read(&path).unwrap());
        replayed.push(name);
    }
    // The two array-header findings at least: an empty or misplaced directory must not pass.
    assert!(replayed.len() >= 2, "replayed only {replayed:?}");
}

/// The oracles also accept ordinary inputs (a smoke check that they are wired up: an oracle
/// that rejected everything would make the replay above meaningless).
#[test]
fn oracles_accept_well_formed_inputs() {
    config::check(b"host=localhost port=5432 password=secret");
    escape::check("it's \\ \"quoted\"".as_bytes());
    // INT4 (type index 2), one non-NULL row.
    from_sql::check(&[2, 0, 0, 0, 0, 42]);
    binary_copy::check(&[0x80 | 16, 0]);
}
