#!/usr/bin/env bash
# Binary size of examples/quickstart (issue 7, item 5): linked against the system's shared
# libpq, and with `vendored-openssl` (libpq and OpenSSL built from source, linked statically).
# Builds into bench/target/size (not the workspace's target dir) and writes
# bench/results/binary-size.md, which the harness's report includes.
set -euo pipefail
cd "$(dirname "$0")/.."
target=bench/target/size
out=bench/results
mkdir -p "$out" "$target/bin"

build() { # name, extra cargo args...
  local name=$1; shift
  cargo build --quiet --release --example quickstart --target-dir "$target" "$@"
  cp "$target/release/examples/quickstart" "$target/bin/quickstart-$name"
  strip -o "$target/bin/quickstart-$name.stripped" "$target/bin/quickstart-$name"
}
build dynamic
build vendored-openssl --features vendored-openssl

row() { # name, description
  local f="$target/bin/quickstart-$1"
  local libs
  libs=$(ldd "$f" | awk '/=>/ {print $1}' | grep -E 'libpq|libssl|libcrypto' | paste -sd, - || true)
  printf '| %s | %s | %.1f MiB | %.1f MiB | %s |\n' "$1" "$2" \
    "$(echo "$(stat -c %s "$f") / 1048576" | bc -l)" \
    "$(echo "$(stat -c %s "$f.stripped") / 1048576" | bc -l)" "${libs:-none}"
}
{
  echo "| build | how | size (release) | stripped | shared libpq/OpenSSL loaded |"
  echo "|---|---|---:|---:|---|"
  row dynamic "system libpq (shared)"
  row vendored-openssl "\`--features vendored-openssl\`: libpq 18 + OpenSSL, static"
} > "$out/binary-size.md"
cat "$out/binary-size.md"
