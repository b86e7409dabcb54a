//! Finds libpq, tells cargo how to link it, and generates bindings from its headers.
//!
//! Probe order (first match wins): feature `vendored` → `PQ_LIB_DIR` → pkg-config → pg_config
//! → a build error listing what was tried. See the crate README for every variable.

mod bindgen_config;
mod env;
mod probe;
mod version;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use env::BuildEnv;
use version::Version;

fn main() -> ExitCode {
    let env = BuildEnv::new();
    match run(&env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // A plain message reads better in cargo's output than a panic with a backtrace hint.
            eprintln!("\nerror: pqlib-sys could not build against libpq\n\n{message}\n");
            ExitCode::FAILURE
        }
    }
}

fn run(env: &BuildEnv) -> Result<(), String> {
    println!("cargo::rerun-if-changed=build");
    println!("cargo::rustc-check-cfg=cfg(docsrs)");
    println!("cargo::rerun-if-changed={}", PREGENERATED);

    let libpq = probe::find_libpq(env)?;
    let version = resolve_version(&libpq)?;

    let out_dir = PathBuf::from(env.cargo("OUT_DIR"));
    let bindings_origin = write_bindings(env, &libpq.include_dirs, &out_dir)?;

    let include = std::env::join_paths(&libpq.include_dirs)
        .map_err(|e| format!("include dirs cannot be joined into one value: {e}"))?;
    let include = include.to_string_lossy();
    // Metadata for dependents (DEP_PQ_*), as the `openssl` crate reads DEP_OPENSSL_VERSION_NUMBER.
    println!("cargo::metadata=version_number={}", version.number());
    println!("cargo::metadata=include={include}");
    println!("cargo::metadata=vendored={}", u8::from(libpq.vendored));
    println!("cargo::metadata=origin={}", libpq.origin);
    // The same facts for this crate's own code, examples and tests.
    println!(
        "cargo::rustc-env=PQLIB_SYS_LIBPQ_VERSION_NUMBER={}",
        version.number()
    );
    println!("cargo::rustc-env=PQLIB_SYS_INCLUDE_DIRS={include}");
    println!("cargo::rustc-env=PQLIB_SYS_BINDINGS={bindings_origin}");
    println!("cargo::rustc-env=PQLIB_SYS_ORIGIN={}", libpq.origin);
    emit_version_cfgs(version);
    Ok(())
}

/// `libpq_N` is set for every N from 15 up to the found major version: code that needs a
/// function added in libpq 17 is written `#[cfg(libpq_17)]`.
fn emit_version_cfgs(version: Version) {
    let names: Vec<String> = (version::MINIMUM_MAJOR + 1..=version::NEWEST_CFG_MAJOR)
        .map(|major| format!("libpq_{major}"))
        .collect();
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    for major in version::MINIMUM_MAJOR + 1..=version.major.min(version::NEWEST_CFG_MAJOR) {
        println!("cargo::rustc-cfg=libpq_{major}");
    }
}

fn resolve_version(libpq: &probe::Libpq) -> Result<Version, String> {
    let headers = version::from_headers(&libpq.include_dirs)?;
    let version = match (libpq.vendored, headers.exact) {
        (true, _) => {
            if headers.major_at_least != version::VENDORED.major {
                return Err(format!(
                    "pq-src's headers look like libpq {}, but build/version.rs says the pinned \
                     pq-src bundles libpq {}: update version::VENDORED with the pin",
                    headers.major_at_least,
                    version::VENDORED
                ));
            }
            version::VENDORED
        }
        (false, Some(exact)) => exact,
        (false, None) => {
            let assumed = Version {
                major: headers.major_at_least,
                minor: 0,
            };
            println!(
                "cargo::warning=pg_config.h is not among the libpq include dirs ({}); assuming \
                 libpq {assumed} from libpq-fe.h's feature macros. Set PQ_INCLUDE_DIR to a \
                 directory with pg_config.h to enable newer features.",
                version::display_dirs(&libpq.include_dirs)
            );
            assumed
        }
    };
    if version.major < version::MINIMUM_MAJOR {
        return Err(format!(
            "found libpq {version} through {}, but pqlib needs libpq {} or newer \
             (pipeline mode). Install a newer libpq or enable the `vendored` feature.",
            libpq.origin,
            version::MINIMUM_MAJOR
        ));
    }
    Ok(version)
}

/// Bindings committed to the repository, generated from libpq 18's headers; used when
/// libclang is unavailable or `PQLIB_NO_BINDGEN=1`.
const PREGENERATED: &str = "bindings/libpq18.rs";

/// Writes `$OUT_DIR/bindings.rs` and says where it came from: "bindgen" or "pregenerated".
fn write_bindings(
    env: &BuildEnv,
    include_dirs: &[PathBuf],
    out_dir: &Path,
) -> Result<&'static str, String> {
    let target = out_dir.join("bindings.rs");
    let use_pregenerated = |why: String| -> Result<&'static str, String> {
        println!(
            "cargo::warning=using pregenerated libpq 18 bindings: {why}. They declare functions \
             newer than an older libpq has; pqlib only calls those under its libpq_N cfgs."
        );
        let source = Path::new(&env.cargo("CARGO_MANIFEST_DIR")).join(PREGENERATED);
        fs::copy(&source, &target)
            .map_err(|e| format!("copying {} to {}: {e}", source.display(), target.display()))?;
        Ok("pregenerated")
    };

    if env.flag("PQLIB_NO_BINDGEN") {
        return use_pregenerated("PQLIB_NO_BINDGEN is set".into());
    }
    env.var("LIBCLANG_PATH");
    if let Err(why) = clang_sys::load() {
        return use_pregenerated(format!(
            "libclang could not be loaded ({why}); install it (Debian/Ubuntu: libclang-dev, \
             Fedora: clang-devel, macOS: Xcode command line tools) or set LIBCLANG_PATH"
        ));
    }
    let bindings = bindgen_config::libpq_builder(include_dirs)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .map_err(|e| {
            format!(
                "bindgen failed on libpq's headers in {}: {e}",
                version::display_dirs(include_dirs)
            )
        })?;
    bindings
        .write_to_file(&target)
        .map_err(|e| format!("writing {}: {e}", target.display()))?;
    Ok("bindgen")
}
