#!/usr/bin/env bash
# The long soak (issue 8): 1,000,000 queries, 1,000,000 COPY rows and 100,000 notifications
# on one connection, every result checked, resident memory after warm-up growing < 10 %
# (tests/soak.rs, `soak_long`). A release build: the point is the connection, not the
# debug build's speed. Change the counts with PQLIB_SOAK_QUERIES, PQLIB_SOAK_COPY_ROWS,
# PQLIB_SOAK_NOTIFICATIONS; SOAK_BUDGET (default 1800 s) bounds the run.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout "${SOAK_BUDGET:-1800}" cargo test --release --test soak soak_long -- \
    --ignored --exact --nocapture
