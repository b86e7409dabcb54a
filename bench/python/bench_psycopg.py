#!/usr/bin/env python3
"""psycopg 3's side of the pqlib benchmark (bench/src/psycopg.rs runs it).

One workload per process: connect, warm up (a tenth of the size), run it once timed, and print
{"seconds": ..., "checksum": ...} as JSON. The checksums are those of the Rust harness, so
that every client is seen to do the same work. `--version` prints psycopg's version.
"""
import argparse
import datetime
import json
import sys
import time

try:
    import psycopg
except ImportError as e:  # the harness reports this as "missing"
    print(f"psycopg is not importable: {e}", file=sys.stderr)
    sys.exit(3)

W1 = "SELECT %s::int4"
W3 = "SELECT g, g::text, g::float8, now() FROM generate_series(1, %s) g"
W5 = "COPY w5 TO STDOUT"
W6 = "SELECT %s::int8"
COPY_TEXT = "COPY w4 (a, b, c, d) FROM STDIN"
COPY_BINARY = "COPY w4 (a, b, c, d) FROM STDIN (FORMAT binary)"
BASE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def w1(conn, n):
    total = 0
    with conn.cursor(binary=True) as cur:
        for i in range(1, n + 1):
            cur.execute(W1, (i,), prepare=True)
            total += cur.fetchone()[0]
    return total


def w3(conn, n):
    with conn.cursor(binary=True) as cur:
        cur.execute(W3, (n,), prepare=True)
        rows = cur.fetchall()
    total = 0
    for g, t, f, ts in rows:
        total += g + len(t) + int(f) + (ts is not None)
    return total


def copy_lines(n):
    return [
        f"{i}\trow-{i:016d}\t{i * 0.5:g}\t2024-01-01 00:00:00.{i:06d}+00\n".encode()
        for i in range(n)
    ]


def copy_rows(n):
    us = datetime.timedelta(microseconds=1)
    return [(i, f"row-{i:016d}", i * 0.5, BASE + i * us) for i in range(n)]


def w4_text(conn, lines):
    with conn.cursor() as cur:
        with cur.copy(COPY_TEXT) as copy:
            for line in lines:
                copy.write(line)
        return cur.rowcount


def w4_binary(conn, rows):
    with conn.cursor() as cur:
        with cur.copy(COPY_BINARY) as copy:
            copy.set_types(["int4", "text", "float8", "timestamptz"])
            for row in rows:
                copy.write_row(row)
        return cur.rowcount


def w5(conn):
    total = 0
    with conn.cursor() as cur:
        with cur.copy(W5) as copy:
            for data in copy:
                total += len(data)
    return total


def w6_sequential(conn, n):
    total = 0
    with conn.cursor(binary=True) as cur:
        for start in range(0, n, 1000):
            for i in range(1, min(1000, n - start) + 1):
                cur.execute(W6, (i,), prepare=True)
                total += cur.fetchone()[0]
    return total


def w6_pipelined(conn, n):
    total = 0
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        with conn.pipeline() as pipeline:
            cursors = [conn.cursor(binary=True) for _ in range(count)]
            for i, cur in enumerate(cursors, 1):
                cur.execute(W6, (i,), prepare=True)
            pipeline.sync()
            total += sum(cur.fetchone()[0] for cur in cursors)
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", action="store_true")
    parser.add_argument("--conninfo")
    parser.add_argument("--workload")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args()
    if args.version:
        print(
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation, "
            f"libpq {psycopg.pq.version() // 10000}.{psycopg.pq.version() % 10000}), "
            f"Python {sys.version.split()[0]}"
        )
        return

    n = args.n
    # autocommit: each statement on its own, as the Rust clients run them.
    with psycopg.connect(args.conninfo, autocommit=True) as conn:
        if args.workload == "W1":
            run = lambda size: w1(conn, size)
        elif args.workload == "W3":
            run = lambda size: w3(conn, size)
        elif args.workload == "W4c":
            lines = copy_lines(n)
            run = lambda size: w4_text(conn, lines[:size])
        elif args.workload == "W4d":
            rows = copy_rows(n)
            run = lambda size: w4_binary(conn, rows[:size])
        elif args.workload == "W5":
            run = lambda size: w5(conn)
        elif args.workload == "W6s":
            run = lambda size: w6_sequential(conn, size)
        elif args.workload == "W6p":
            run = lambda size: w6_pipelined(conn, size)
        else:
            sys.exit(f"unknown workload {args.workload}")
        if not args.no_warmup:
            run(max(n // 10, 1))
        # The harness truncates w4 before each run; the warm-up inserted rows again.
        if args.workload in ("W4c", "W4d"):
            conn.execute("TRUNCATE w4")
        started = time.perf_counter()
        checksum = run(n)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "checksum": checksum}))


if __name__ == "__main__":
    main()
