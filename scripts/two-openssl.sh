#!/usr/bin/env bash
# Issue 13, finding 4: a system libpq (its OpenSSL 3) with the `openssl` crate's vendored
# OpenSSL in the same process. Builds scripts/two-openssl (OpenSSL from source: minutes),
# makes a throwaway certificate, and runs the program, which fails unless
# `Connection::ssl()` refuses with `Unsupported`. Run it by hand; not part of .ci/run, whose
# vendored step already builds OpenSSL once.
set -euo pipefail
cd "$(dirname "$0")/two-openssl"
started=$SECONDS
export CARGO_TARGET_DIR="${TWO_OPENSSL_TARGET_DIR:-$PWD/../../target/two-openssl}"
cargo build --quiet
certs="$(mktemp -d)"
trap 'rm -rf "$certs"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$certs/server.key" -out "$certs/server.crt" 2>/dev/null
chmod 600 "$certs/server.key"
"$CARGO_TARGET_DIR/debug/two-openssl" "$certs"
echo "two-openssl: ok in $((SECONDS - started)) s"
