#!/usr/bin/env bash
# Memory checks for pqlib and libpq (issue 8):
#
#   1. valgrind (memcheck) over the blocking-API driver `every_sync_api` (tests/soak.rs),
#      the bad-input table (tests/bad_input.rs), the protocol-state tests and the replication
#      stream (tests/replication_stream.rs: libpq's copy buffers shared as `Bytes`, the
#      keeper thread), against the system libpq: no invalid access,
#      and 0 bytes "definitely" or "indirectly" lost. No suppressions are needed today; if
#      one ever is, it goes in scripts/memcheck.supp with a comment saying why.
#   2. AddressSanitizer: the same tests built with `-Zsanitizer=address` (stable rustc with
#      RUSTC_BOOTSTRAP=1: no nightly toolchain can be fetched here) and the vendored libpq
#      compiled with `-fsanitize=address` (through `CFLAGS_<target>`, which pq-src's build
#      passes to the C compiler; checked in the binary afterwards), with LeakSanitizer on:
#      0 reports.
#   3. helgrind (issue 13): the threading, cancel and TLS passphrase-hook tests
#      (tests/threading.rs, tests/cancel.rs, tests/tls_hook.rs) under valgrind's race
#      detector, against the system libpq: 0 reports on pqlib or libpq code
#      (scripts/helgrind-report.py). scripts/helgrind.supp holds the documented false
#      positives inside libpq and OpenSSL; reports that lie only in the Rust runtime or libtest
#      (futex- and atomic-based synchronisation helgrind cannot see) are counted, not failed.
#      The replication keeper thread is not run under helgrind: it shares the connection
#      through a std `Mutex`, which is futex-based, so helgrind reports every access to what
#      it guards as a race.
#
# Usage: scripts/memcheck.sh [valgrind|asan|helgrind|all]   (default: all)
# Each part is bounded: MEMCHECK_VALGRIND_BUDGET (default 900 s), MEMCHECK_ASAN_BUDGET
# (default 1800 s: the first ASan build compiles OpenSSL-using libpq from source).
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests that bound themselves (tests/common: `deadline`) get ten times as long under the tools.
export PQLIB_TEST_TIME_SCALE=10

what="${1:-all}"
valgrind_budget="${MEMCHECK_VALGRIND_BUDGET:-900}"
asan_budget="${MEMCHECK_ASAN_BUDGET:-1800}"
helgrind_budget="${MEMCHECK_HELGRIND_BUDGET:-600}"
tests=(soak bad_input protocol_state replication_stream)
# The 1 GiB parameter child needs ~3 GiB and minutes under valgrind; soak_short measures RSS
# in a child process; neither adds coverage of pqlib's own memory handling here. In
# protocol_state: the 2 GiB COPY chunk (minutes under valgrind), the child-process encoding
# test, and the leaked-guard tests, whose `mem::forget` leaks on purpose.
skips=(--skip a_1_gib_parameter_is_an_error_not_an_oom --skip soak_short
       --skip async_copy_in_chunk_over_2_gib_is_sent_whole
       --skip client_encoding_stays_utf8_whatever_the_environment
       --skip a_leaked_pipeline_closes_the_connection_instead_of_leaking_its_results
       --skip leaked_copy_and_row_stream_guards_close_the_connection)

test_binary() {
    # The path of the test binary cargo built for `$1` (last line of cargo's JSON messages).
    cargo test --test "$1" --no-run --message-format=json "${@:2}" 2>/dev/null |
        grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4
}

run_valgrind() {
    command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed"; return 1; }
    cargo test --no-run "${tests[@]/#/--test=}" >/dev/null
    local status=0
    for t in "${tests[@]}"; do
        local bin log
        bin="$(test_binary "$t")"
        log="target/memcheck-valgrind-$t.log"
        echo "== valgrind: $t ($bin)"
        if ! timeout "$valgrind_budget" valgrind --leak-check=full \
            --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
            --error-exitcode=99 --num-callers=40 --track-origins=yes \
            $( [ -f scripts/memcheck.supp ] && echo --suppressions=scripts/memcheck.supp ) \
            "$bin" --test-threads=1 "${skips[@]}" >"$log" 2>&1; then
            echo "valgrind: $t FAILED (see $log)"
            status=1
        fi
        grep -E "test result|definitely lost|indirectly lost|ERROR SUMMARY" "$log" || true
    done
    return "$status"
}

run_asan() {
    local target
    target="$(rustc -vV | sed -n 's/^host: //p')"
    echo "== AddressSanitizer ($target, vendored libpq with -fsanitize=address)"
    # A target dir of its own: sanitizer flags change every crate's hash.
    export CARGO_TARGET_DIR=target/asan
    export RUSTC_BOOTSTRAP=1
    export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
    export RUSTDOCFLAGS="$RUSTFLAGS"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1"
    # Only the deliberate leaks of one fault test (see the file).
    export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
    # libpq itself is instrumented through the C compiler's flags, not a cargo feature (one
    # would break `--all-features`: a sanitized libpq does not link into plain binaries).
    export "CFLAGS_${target//-/_}=-fsanitize=address -fno-omit-frame-pointer"
    local log=target/memcheck-asan.log
    mkdir -p target
    if ! timeout "$asan_budget" cargo test --target "$target" --features vendored \
        "${tests[@]/#/--test=}" -- --test-threads=1 "${skips[@]}" >"$log" 2>&1; then
        echo "ASan: FAILED (see $log)"
        grep -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY|test result|error" "$log" | head -20 || true
        return 1
    fi
    grep -E "test result" "$log"
    # A libpq built without the flags would pass silently: its code must call into ASan.
    local bin
    bin="$(find "$CARGO_TARGET_DIR/$target/debug/deps" -name 'soak-*' -type f -executable | head -1)"
    if ! objdump -d --no-show-raw-insn "$bin" | awk '/<PQgetvalue>:/,/^$/' | grep -q '__asan_'; then
        echo "ASan: libpq in $bin is not instrumented (PQgetvalue makes no __asan_ call)"
        return 1
    fi
    echo "ASan: libpq instrumented (PQgetvalue calls into ASan)"
    if grep -q "Sanitizer" "$log"; then
        echo "ASan: reports found (see $log)"
        return 1
    fi
    echo "ASan: 0 reports"
}

run_helgrind() {
    command -v valgrind >/dev/null || { echo "helgrind: valgrind is not installed"; return 1; }
    local hg_tests=(threading cancel tls_hook)
    cargo test --no-run "${hg_tests[@]/#/--test=}" >/dev/null
    local status=0 start=$SECONDS
    mkdir -p target
    for t in "${hg_tests[@]}"; do
        local bin log
        bin="$(test_binary "$t")"
        log="target/memcheck-helgrind-$t.log"
        echo "== helgrind: $t ($bin)"
        # The test binary's own exit status (not --error-exitcode: the Rust runtime's reports
        # are not failures, see scripts/helgrind-report.py).
        if ! timeout "$helgrind_budget" valgrind --tool=helgrind --num-callers=40 \
            --suppressions=scripts/helgrind.supp \
            "$bin" --test-threads=1 >"$log" 2>&1; then
            echo "helgrind: $t FAILED or timed out (see $log)"
            status=1
        fi
        grep -E "test result" "$log" || true
        python3 scripts/helgrind-report.py "$log" || status=1
    done
    echo "helgrind: $((SECONDS - start)) s"
    return "$status"
}

case "$what" in
valgrind) run_valgrind ;;
asan) run_asan ;;
helgrind) run_helgrind ;;
all)
    status=0
    run_valgrind || status=1
    run_helgrind || status=1
    run_asan || status=1
    exit "$status"
    ;;
*) echo "usage: $0 [valgrind|asan|helgrind|all]" >&2; exit 2 ;;
esac
