#!/usr/bin/env bash
# Dependency policy check with cargo-deny (configuration: deny.toml at the repository root):
# licences, banned/duplicate/wildcard dependencies, and sources (crates.io only), for the
# root workspace with all features. `bench/` and `fuzz/` are separate workspaces and are not
# checked.
#
#   scripts/deny.sh                 # licenses bans sources (what CI runs)
#   scripts/deny.sh advisories      # the RustSec advisories check; needs github.com
#
# The advisories check is not run by default: cargo-deny clones the advisory database from
# GitHub, which the CI machines cannot reach (see deny.toml).
#
# cargo-deny is installed first if it is missing or not the pinned version (about 3 minutes
# on a 2-core machine: `cargo install --locked` builds it from source).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2

installed=$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$installed" != "$CARGO_DENY_VERSION" ]]; then
    echo "installing cargo-deny $CARGO_DENY_VERSION${installed:+ (found $installed)}"
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

if [[ $# -eq 0 ]]; then
    set -- licenses bans sources
fi
# --locked: the check is about Cargo.lock as committed, so it must not be re-resolved.
exec cargo deny --all-features --locked check "$@"
