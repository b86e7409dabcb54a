#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer + AddressSanitizer), issue 8.
#
#   scripts/fuzz.sh --smoke          20 s per target (CI)
#   scripts/fuzz.sh [SECONDS]        SECONDS per target (default 600: the 10-minute run)
#   scripts/fuzz.sh --list           the targets
#
# Targets (fuzz/fuzz_targets/): config (Config parsing/printing), escape (escape_literal,
# escape_identifier on a connection to a fake server), from_sql (FromSql through Row::try_get
# on PGresults built with PQmakeEmptyPGresult/PQsetResultAttrs/PQsetvalue) and binary_copy
# (the binary COPY parser). The last two use pqlib's hidden fuzzing hooks
# (`Rows::__single_column`, `binary_copy::__decode`), built with the `hooks` feature.
# Every target in fuzz/Cargo.toml runs; one that does not build or run fails the script.
# Each oracle lives in fuzz/oracles/, shared with tests/fuzz_regressions.rs, which replays
# fuzz/regressions/ in the ordinary test suite.
#
# cargo-fuzz needs nightly flags (-Zsanitizer); with no nightly toolchain available this
# runs stable rustc with RUSTC_BOOTSTRAP=1. `cargo install cargo-fuzz` if it is missing.
# FUZZ_BUDGET bounds the whole run (default: targets × (SECONDS + 600) for the builds).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=600
case "${1:-}" in
--smoke) seconds=20 ;;
--list) cargo fuzz list 2>/dev/null || sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml; exit 0 ;;
"") ;;
*) seconds="$1" ;;
esac
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

features=(--features hooks)
mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -vx pqlib-fuzz)
if ((${#targets[@]} < 4)); then
    echo "fuzz: expected at least 4 targets in fuzz/Cargo.toml, found: ${targets[*]}"
    exit 1
fi
echo "fuzz: targets: ${targets[*]}"
budget="${FUZZ_BUDGET:-$(( ${#targets[@]} * (seconds + 600) ))}"
deadline=$(( $(date +%s) + budget ))

status=0
for target in "${targets[@]}"; do
    left=$(( deadline - $(date +%s) ))
    if (( left <= 0 )); then echo "fuzz: budget of ${budget}s used up before $target"; status=1; break; fi
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "== fuzz $target for ${seconds}s"
    # -rss_limit_mb: the escape target keeps a fake-server thread; 4 GiB is ample.
    if ! timeout "$left" cargo fuzz run -O "${features[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>&1 | tee "artifacts/$target.log" |
        grep -E "^#[0-9]+.*(DONE|pulse)|Done [0-9]+ runs|stat::number_of_executed_units|ERROR|panicked|SUMMARY" ; then
        :
    fi
    if grep -qE "ERROR: libFuzzer|ERROR: AddressSanitizer|panicked at|deadly signal" "artifacts/$target.log"; then
        echo "fuzz: $target FAILED: see fuzz/artifacts/$target.log and fuzz/artifacts/$target/"
        status=1
    elif ! grep -q "Done [0-9]* runs" "artifacts/$target.log"; then
        echo "fuzz: $target did not finish its run: see fuzz/artifacts/$target.log"
        status=1
    fi
done
exit "$status"
