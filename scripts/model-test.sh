#!/usr/bin/env bash
# The long run of the seeded model-based concurrency test (tests/protocol_model.rs): one seed
# after another, each with PQLIB_MODEL_REQUESTS requests (default 200000), until the time
# budget (first argument, seconds; default 600) is spent. Prints each seed, the requests it
# ran and how long it took; a failing seed's output (with its request history) is kept in
# target/model-test/ and the script exits non-zero. Replay a seed with
#   PQLIB_MODEL_SEED=<seed> PQLIB_MODEL_REQUESTS=<n> cargo test --test protocol_model
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-600}"
requests="${PQLIB_MODEL_REQUESTS:-200000}"
out="${CARGO_TARGET_DIR:-target}/model-test"
mkdir -p "$out"
cargo test --test protocol_model --no-run >/dev/null 2>&1 || cargo test --test protocol_model --no-run
start=$(date +%s)
runs=0 failures=0 total=0
while :; do
    now=$(date +%s)
    left=$((budget - (now - start)))
    [ "$left" -gt 5 ] || break
    seed="${PQLIB_MODEL_SEED:-$(( (RANDOM << 15 | RANDOM) ))}"
    log="$out/seed-$seed.log"
    t0=$(date +%s.%N)
    code=0
    PQLIB_MODEL_SEED="$seed" PQLIB_MODEL_REQUESTS="$requests" \
        timeout "$left" cargo test -q --test protocol_model -- --nocapture >"$log" 2>&1 || code=$?
    if [ "$code" -eq 0 ]; then
        status=ok
    elif [ "$code" -eq 124 ]; then
        status="cut off by the time budget"
    else
        status="FAILED (output in $log)"
        failures=$((failures + 1))
    fi
    t1=$(date +%s.%N)
    # Requests of the models that finished (shared client n, pool n/2, blocking n/2).
    ran=$(grep -ho 'ran [0-9]* requests' "$log" | awk '{s += $2} END {print s + 0}')
    [ "$code" -ne 0 ] || rm -f "$log"
    total=$((total + ran))
    runs=$((runs + 1))
    printf 'seed %-12s requests %-8s %6.1f s  %s\n' "$seed" "$ran" "$(echo "$t1 - $t0" | bc)" "$status"
    [ -z "${PQLIB_MODEL_SEED:-}" ] || break
done
echo "model-test: $runs seeds, $total requests, $failures failures in $(( $(date +%s) - start )) s"
[ "$failures" -eq 0 ]
