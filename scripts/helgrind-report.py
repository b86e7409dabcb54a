#!/usr/bin/env python3
"""Summarises a helgrind log for scripts/memcheck.sh helgrind.

Exit status 1 if any report is "on pqlib code": a report whose own stack (the access helgrind
flags, not the earlier conflicting access it quotes, which is often an unrelated former user
of reused memory) has a frame in pqlib, pqlib-sys or libpq. Other reports lie entirely in
the Rust runtime or libtest (thread start-up, output capture, channels, Arc), whose futex
and atomic synchronisation helgrind does not see; they are counted, not failed.

Usage: helgrind-report.py LOG
"""
import re
import sys

FRAME = re.compile(r"(?:at|by) 0x[0-9A-Fa-f]+: (.*?)(?: \((?:in )?([^()]*)\))?$")


def records(text):
    """Helgrind's reports, each a list of lines without the ==pid== prefix."""
    current = None
    for line in text.splitlines():
        if not line.startswith("=="):
            continue
        line = re.sub(r"^==\d+== ?", "", line)
        if line.startswith("----") or line.startswith("---Thread-Announcement"):
            if current:
                yield current
            current = []
        elif current is not None:
            current.append(line)
    if current:
        yield current


def own_stack(record):
    stack = []
    for line in record:
        if line.startswith("This conflicts") or line.lstrip().startswith("Address"):
            break
        stack.append(line)
    return stack


def is_ours(line):
    m = FRAME.search(line)
    if not m:
        return False
    func, where = m.group(1), m.group(2) or ""
    return bool(
        re.match(r"<?(pqlib|pqlib_sys)::", func)
        or "libpq" in where
        or re.match(r"(PQ|pq)[A-Za-z0-9_]+$", func)
        or re.match(r"fe-[a-z0-9-]+\.c", where)
    )


def main():
    text = open(sys.argv[1], errors="replace").read()
    errors = []
    for record in records(text):
        record = [line for line in record if line.strip()]
        head = record[0] if record else ""
        if "was created" in head or "is the program's main thread" in head or not head:
            continue  # a thread announcement, not a report
        errors.append(record)
    ours = [r for r in errors if any(is_ours(line) for line in own_stack(r))]
    suppressed = re.findall(r"ERROR SUMMARY: \d+ errors from \d+ contexts \(suppressed: (\d+)", text)
    print(
        f"helgrind: {len(ours)} report(s) on pqlib/libpq code; "
        f"{len(errors) - len(ours)} in the Rust runtime/libtest only (not counted); "
        f"suppressed (valgrind defaults and scripts/helgrind.supp): {suppressed[-1] if suppressed else '?'}"
    )
    for record in ours:
        print("----")
        print("\n".join(record[:60]))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
