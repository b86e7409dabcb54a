//! The one bindgen configuration, shared by the build script and by the test that checks the
//! committed pregenerated bindings against a fresh run (`tests/bindings.rs`).

use std::path::PathBuf;

/// The headers bindings are generated from, relative to an include dir.
pub const HEADERS: &[&str] = &["libpq-fe.h", "libpq-events.h"];

/// A bindgen builder for libpq's public headers found in `include_dirs`.
pub fn libpq_builder(include_dirs: &[PathBuf]) -> bindgen::Builder {
    let wrapper: String = HEADERS
        .iter()
        .map(|h| format!("#include <{h}>\n"))
        .collect();
    bindgen::Builder::default()
        .header_contents("pqlib_sys_wrapper.h", &wrapper)
        .clang_args(
            include_dirs
                .iter()
                .map(|dir| format!("-I{}", dir.display())),
        )
        // libpq's own items only: everything declared in its public headers, nothing from libc.
        .allowlist_file(r".*[/\\](libpq-fe|libpq-events|postgres_ext)\.h")
        // `FILE` (for PQprint/PQtrace) is libc's; the lib re-exports `libc::FILE` instead of a
        // platform-specific struct layout.
        .blocklist_type("FILE|_IO_FILE")
        // C enums become newtypes with associated constants: a newer libpq may return a value
        // this binding has never heard of, which a Rust `enum` could not hold soundly.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .size_t_is_usize(true)
        .rust_target(bindgen::RustTarget::stable(85, 0).expect("a stable Rust version"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .merge_extern_blocks(true)
        .generate_comments(true)
        .formatter(bindgen::Formatter::Prettyplease)
}
