#!/usr/bin/env bash
# Checks that the dependency minimums declared in the Cargo.toml files are true: every direct
# dependency (normal, build and dev) is resolved to the lowest version its requirement allows,
# and the workspace must still compile, tests and examples included.
#
#   scripts/minimal-versions.sh          # the root workspace (what CI runs)
#   scripts/minimal-versions.sh --all    # also the separate bench/ and fuzz/ workspaces
#
# How: the tracked files are copied into a scratch workspace under the target dir, so that
# the committed Cargo.lock is never touched; there `cargo update -Z direct-minimal-versions`
# writes a lockfile with every direct dependency at its declared minimum, and
# `cargo check --all-targets` runs on it. `-Z` needs a nightly cargo: the stable one accepts
# it with RUSTC_BOOTSTRAP=1 (no nightly toolchain can be fetched here).
#
# Why `direct-minimal-versions` and not `minimal-versions`: the latter also takes every
# transitive dependency at its minimum, and ancient releases deep in the tree (which no
# requirement of ours can fix) no longer build or declare too-low minimums of their own. What
# this project controls, and what this check is about, is its own requirements. With direct
# minimums, a requirement must also be at least what any other crate in the tree asks of the
# same dependency (e.g. `bytes` >= 1.11 because postgres-types 0.2.14 asks for it), or the
# workspace does not resolve: that is reported as an error too.
#
# Feature sets: the whole workspace as `cargo test --workspace` builds it (the root package
# turns on every pqlib feature but `vendored*`), then pqlib and pqlib-sys with no optional
# features. Not checked: `vendored` and `vendored-openssl`, which add only pq-src (pinned
# exactly, `=0.3.14`: nothing to minimize) and openssl-sys's `vendored` feature, and would
# build libpq and OpenSSL from C sources for minutes; openssl-sys itself is at its minimum in
# the checked builds through the `openssl` feature.
#
# Its own target dir (the versions differ from Cargo.lock's, so nothing is shared with
# target/): MINVER_TARGET_DIR, default target/minimal-versions. A cold run checks every
# dependency once: 3.5 minutes on a busy 2-core machine (2 minutes of CPU); warm, ~30 s.
# `--all` adds about 5 minutes cold (sqlx, criterion, libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all=false
case "${1:-}" in
    --all) all=true ;;
    "") ;;
    *) echo "usage: $0 [--all]" >&2; exit 2 ;;
esac

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${MINVER_TARGET_DIR:-$root/target/minimal-versions}"
scratch="$CARGO_TARGET_DIR/workspace"
start=$SECONDS

# The tracked and untracked-but-not-ignored files, as they are in the work tree now. The
# scratch copy keeps its path from run to run and tar keeps the files' mtimes, so cargo's
# fingerprints stay valid and a rerun only rechecks what changed.
rm -rf "$scratch"
mkdir -p "$scratch"
git ls-files -z --cached --others --exclude-standard |
    grep -zv -E '^(docs|target)/' |
    tar --null -cf - -T - | tar -xf - -C "$scratch"

minimize() {
    # Lockfile with direct dependencies at their minimum (from the committed one, so that
    # transitive dependencies stay where they are where they can).
    echo "== $1: resolving direct dependencies to their declared minimums"
    (cd "$scratch/$1" && cargo update -Z direct-minimal-versions --quiet)
}

check() {
    local dir=$1; shift
    echo "== $dir: cargo check $*"
    (cd "$scratch/$dir" && cargo check --quiet "$@")
}

minimize .
check . --workspace --all-targets
check . -p pqlib -p pqlib-sys --all-targets

if $all; then
    # Workspaces of their own (see their Cargo.toml); they also depend on pqlib by path.
    minimize bench
    check bench --all-targets
    minimize fuzz
    check fuzz --all-targets --all-features
fi

echo "minimal versions: OK ($((SECONDS - start)) s)"
