#!/usr/bin/env python3
"""Reports public functions of `pqlib` that call libpq but carry no `#[doc(alias = "PQ…")]`.

Every public method or function of pqlib that wraps a libpq C function names it in a doc
alias, so that searching the docs for `PQexecPrepared` finds `Connection::query`. This is a
heuristic check over the source text, not a Rust parser:

- it walks `pqlib/src/**/*.rs` and looks at `pub fn` items (also `pub const/async/unsafe fn`;
  not `pub(crate)`/`pub(super)`), inside `impl` blocks or free;
- an item's body runs from its `fn` line to the `}` at the same indentation (rustfmt layout);
- a body "calls libpq" when it names `ffi::NAME` or `pqlib_sys::NAME` where NAME is a function
  of `pqlib-sys` (read from its pregenerated bindings; `PQ*`/`lo_*`/`pg_*` if they are missing);
  a function passed as a value (`self.escape(text, ffi::PQescapeLiteral)`) counts too;
- the attributes and doc comments directly above the item must contain `alias = "…"`
  (`#[doc(alias = "PQexec")]`, several aliases in one attribute, or several attributes).

With `--indirect`, functions that reach libpq only through helpers in pqlib (any visibility,
matched by name, followed transitively) are reported too, marked `via`. Helper names are
matched crate-wide, so common names (`new`, `check`) can give false positives: review by hand.

Usage: scripts/check-doc-aliases.py [--indirect] [--exclude PATH]... [--quiet]
Exits 1 when something is missing, 0 otherwise. `--exclude` takes paths relative to the
repository root (a directory excludes everything under it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "pqlib", "src")
BINDINGS_DIR = os.path.join(ROOT, "pqlib-sys", "bindings")

FN_RE = re.compile(
    r"^(?P<indent>\s*)(?P<vis>pub(?:\([^)]*\))?\s+)?"
    r"(?:(?:const|async|unsafe|extern\s+\"C\")\s+)*fn\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
)
IMPL_RE = re.compile(r"^(?P<indent>\s*)(?:unsafe\s+)?impl\b(?P<rest>.*)$")
FFI_RE = re.compile(r"\b(?:ffi|pqlib_sys)::([A-Za-z_][A-Za-z0-9_]*)")
ALIAS_RE = re.compile(r"\balias\s*=")
CALL_RE = re.compile(
    r"(?P<recv>\bself\s*\.\s*(?P<field>[a-z_][a-z0-9_]*)\s*\.\s*|\bself\s*\.\s*|\bSelf::|\b(?P<path>[A-Za-z_][A-Za-z0-9_]*)::|\.\s*)?"
    r"\b(?P<name>[a-z_][a-z0-9_]*)\s*(?:::<[^>]*>)?\s*\("
)
ALIAS_VALUE_RE = re.compile(r"\balias\s*=\s*\"([^\"]+)\"")
# Helpers are not looked through into other crates' or std's methods of these names.
KEYWORDS = {"if", "while", "match", "for", "return", "loop", "fn", "in", "as", "move", "unsafe"}
# `x.f()` with one of these names is most likely a method of std or another crate (a Vec's
# `truncate`, an iterator's `next`), not a pqlib helper: not followed.
STD_METHODS = {
    "as_ref", "clear", "clone", "close", "drop", "extend", "flush", "from", "get", "get_mut",
    "insert", "into", "is_empty", "iter", "len", "lock", "map", "new", "next", "poll", "pop",
    "push", "read", "remove", "seek", "send", "take", "truncate", "try_from", "write", "write_all",
}
# Public functions that call libpq but are not wrappers of it: no alias wanted.
# (path relative to pqlib/src, Type::function or function)
NOT_WRAPPERS = {
    # Polls the fresh server with PQping until it accepts connections: a test-server helper.
    ("tempdb.rs", "TempClusterBuilder::start"),
}
# `f()` with one of these names is std's (`foreign_type!`'s `fn drop = ffi::PQfinish;` in
# handle.rs also looks like a free function called `drop`).
STD_FUNCTIONS = {"drop", "panic", "format", "write", "min", "max", "replace", "take", "swap"}


def libpq_functions() -> set[str] | None:
    """The extern functions pqlib-sys declares, from its pregenerated bindings."""
    names: set[str] = set()
    if os.path.isdir(BINDINGS_DIR):
        for entry in sorted(os.listdir(BINDINGS_DIR)):
            if entry.endswith(".rs"):
                with open(os.path.join(BINDINGS_DIR, entry), encoding="utf-8") as f:
                    names.update(re.findall(r"\bpub fn ([A-Za-z_][A-Za-z0-9_]*)", f.read()))
    return names or None


def strip_comment_and_strings(line: str) -> str:
    """The line without `//` comments and string literal contents (good enough for braces)."""
    out = []
    i, in_str = 0, False
    while i < len(line):
        c = line[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
                out.append(c)
        else:
            if c == '"':
                in_str = True
                out.append(c)
            elif line.startswith("//", i):
                break
            elif c == "'" and i + 2 < len(line) and line[i + 2] == "'":
                i += 3  # a char literal like '{'
                continue
            else:
                out.append(c)
        i += 1
    return "".join(out)


@dataclass
class Item:
    path: str
    line: int  # 1-based
    name: str
    public: bool
    owner: str  # the impl header ("impl Connection") or "" for free functions
    attrs: list[str]
    body: list[str]
    direct: set[str] = field(default_factory=set)
    # Calls to other functions: (kind, qualifier, name), kind one of "self" (`self.f(`,
    # `Self::f(`), "field" (`self.field.f(`), "path" (`Type::f(`), "free" (`f(`,
    # `module::f(`), "method" (`x.f(`).
    calls: set[tuple[str, str, str]] = field(default_factory=set)
    aliases: set[str] = field(default_factory=set)
    reach: set[str] = field(default_factory=set)

    @property
    def owner_type(self) -> str:
        return owner_type(self.owner) if self.owner else ""


def preceding_attrs(lines: list[str], index: int) -> list[str]:
    """Attribute and doc-comment lines directly above line `index`."""
    attrs: list[str] = []
    i = index - 1
    while i >= 0:
        s = lines[i].strip()
        if s.startswith(("///", "//", "#[")):
            attrs.append(s)
            i -= 1
        elif s.endswith(("]", ",", "(")) and not s.endswith(";"):
            # A line inside a multi-line attribute: take lines up to its `#[`.
            j = i
            while j >= 0 and not lines[j].strip().startswith("#["):
                j -= 1
            if j < 0 or index - j > 40:
                break
            attrs.extend(x.strip() for x in lines[j : i + 1])
            i = j - 1
        else:
            break
    return attrs


def body_end(lines: list[str], start: int, indent: str) -> int:
    """Index of the last line of the item that starts at `start`."""
    first = strip_comment_and_strings(lines[start]).rstrip()
    if first.endswith(";") or first.endswith("}"):
        return start  # no body, or a one-line body
    depth, opened = 0, False
    for i in range(start, len(lines)):
        code = strip_comment_and_strings(lines[i])
        for c in code:
            if c == "{":
                depth, opened = depth + 1, True
            elif c == "}":
                depth -= 1
        if opened and depth <= 0:
            return i
        if i > start and code.strip() == "}" and lines[i].startswith(indent + "}"):
            return i
    return len(lines) - 1


STRUCT_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?struct\s+([A-Z][A-Za-z0-9_]*)")
FIELD_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?([a-z_][a-z0-9_]*)\s*:\s*(.+?),?\s*$")
WRAPPERS = {"Option", "Arc", "Rc", "Box", "RefCell", "Mutex", "ManuallyDrop", "Cell"}

# (file, struct name) -> {field name: type name}, filled by scan_file.
FIELD_TYPES: dict[tuple[str, str], dict[str, str]] = {}


def field_type_name(ty: str) -> str:
    """`&'a mut Connection` -> `Connection`; `Option<crate::tokio::Transaction<'a>>` ->
    `Transaction`: the type whose methods a call through the field reaches."""
    ty = re.sub(r"&\s*('[a-z_]+\s+)?(mut\s+)?", "", ty.strip())
    while True:
        m = re.match(r"^(?:[a-z_][a-z0-9_]*::)*([A-Z][A-Za-z0-9_]*)\s*<(.*)>$", ty)
        if m and m.group(1) in WRAPPERS:
            ty = m.group(2).strip()
            ty = re.sub(r"&\s*('[a-z_]+\s+)?(mut\s+)?", "", ty)
            continue
        break
    m = re.match(r"^(?:[A-Za-z_][A-Za-z0-9_]*::)*([A-Z][A-Za-z0-9_]*)", ty)
    return m.group(1) if m else ""


def scan_file(path: str, functions: set[str] | None) -> list[Item]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    items: list[Item] = []
    # The impl blocks open at each point: (indent, header).
    impls: list[tuple[str, str]] = []
    in_test_mod_indent: str | None = None
    for idx, line in enumerate(lines):
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        # Leave impl blocks (and a #[cfg(test)] module) at their closing brace.
        if stripped == "}" or stripped.startswith("} "):
            while impls and len(impls[-1][0]) >= len(indent):
                impls.pop()
            if in_test_mod_indent is not None and len(in_test_mod_indent) >= len(indent):
                in_test_mod_indent = None
        if in_test_mod_indent is not None:
            continue
        if stripped.startswith("mod tests") and "#[cfg(test)]" in lines[idx - 1]:
            in_test_mod_indent = indent
            continue
        m = STRUCT_RE.match(line)
        if m and stripped.endswith("{"):
            fields = FIELD_TYPES.setdefault((path, m.group(1)), {})
            for other in lines[idx + 1 :]:
                if other.strip().startswith("}"):
                    break
                fm = FIELD_RE.match(other)
                if fm and not other.strip().startswith("//"):
                    fields[fm.group(1)] = field_type_name(fm.group(2))
            continue
        m = IMPL_RE.match(line)
        if m and not stripped.endswith(";"):
            header = ("impl" + m.group("rest")).rstrip(" {")
            impls.append((indent, header))
            continue
        m = FN_RE.match(line)
        if not m:
            continue
        end = body_end(lines, idx, m.group("indent"))
        body = lines[idx : end + 1]
        vis = (m.group("vis") or "").strip()
        owner = ""
        for impl_indent, header in reversed(impls):
            if len(impl_indent) < len(m.group("indent")):
                owner = header
                break
        item = Item(
            path=path,
            line=idx + 1,
            name=m.group("name"),
            public=vis == "pub",
            owner=owner,
            attrs=preceding_attrs(lines, idx),
            body=body,
        )
        code = "\n".join(strip_comment_and_strings(x) for x in body[1:] or body)
        for name in FFI_RE.findall(code):
            if functions is not None:
                if name in functions:
                    item.direct.add(name)
            elif re.match(r"(PQ[a-z]|lo_|pg_)", name):
                item.direct.add(name)
        for call in CALL_RE.finditer(code):
            name, recv, path_ = call.group("name"), call.group("recv") or "", call.group("path")
            if name in KEYWORDS:
                continue
            if call.group("field"):
                item.calls.add(("field", call.group("field"), name))
            elif recv.startswith(("self", "Self")):
                item.calls.add(("self", "", name))
            elif path_ is not None:
                kind = "path" if path_[:1].isupper() else "free"
                item.calls.add((kind, path_, name))
            elif recv.startswith("."):
                item.calls.add(("method", "", name))
            else:
                item.calls.add(("free", "", name))
        for attr in item.attrs:
            item.aliases.update(ALIAS_VALUE_RE.findall(attr))
        items.append(item)
    return items


def owner_type(header: str) -> str:
    """`impl<'a> Foo<'a>` -> `Foo`, `impl Trait for Foo` -> `Foo`."""
    header = re.sub(r"^impl\s*(<[^{]*?>)?\s*", "", header)
    if " for " in header:
        header = header.split(" for ", 1)[1]
    header = header.split(" where", 1)[0]
    return re.split(r"[<\s{]", header.strip(), 1)[0]


def resolve_indirect(items: list[Item], functions: set[str] | None) -> None:
    """Fills `reach`: the libpq functions an item reaches through helpers in pqlib.

    A callee that is public and has doc aliases contributes its aliases (what it documents
    itself as wrapping); any other callee contributes what it reaches, transitively. Calls are
    resolved by name: `self.f()` to the caller's own type, `self.field.f()` to the field's type
    (from the struct definition), `Type::f()` to that type, `f()` to free functions, and `x.f()` on another receiver to every method `f` of pqlib when all of
    them wrap libpq (public with aliases) or when only one type defines `f`.
    """
    by_owner: dict[tuple[str, str], list[Item]] = {}
    methods: dict[str, list[Item]] = {}
    free: dict[str, list[Item]] = {}

    def of_type(type_: str, name: str, near: str) -> list[Item]:
        """Methods `name` of types called `type_`: those in file `near` if any there."""
        found = by_owner.get((type_, name), [])
        return [c for c in found if c.path == near] or found

    def field_type(item: Item, field_name: str) -> str:
        same_file = FIELD_TYPES.get((item.path, item.owner_type))
        if same_file and field_name in same_file:
            return same_file[field_name]
        for (_path, struct), fields in FIELD_TYPES.items():
            if struct == item.owner_type and field_name in fields:
                return fields[field_name]
        return ""

    for item in items:
        if item.owner:
            by_owner.setdefault((item.owner_type, item.name), []).append(item)
            methods.setdefault(item.name, []).append(item)
        else:
            free.setdefault(item.name, []).append(item)

    def callees(item: Item) -> list[Item]:
        out: list[Item] = []
        for kind, qual, name in item.calls:
            if kind == "self":
                out += of_type(item.owner_type, name, item.path)
            elif kind == "field":
                type_ = field_type(item, qual)
                if type_:
                    out += of_type(type_, name, "")
            elif kind == "path":
                out += of_type(qual, name, item.path)
            elif kind == "free" and name not in STD_FUNCTIONS:
                out += free.get(name, [])
            elif name not in STD_METHODS:
                candidates = methods.get(name, [])
                owners = {c.owner_type for c in candidates}
                if len(owners) == 1 or all(c.public and c.aliases for c in candidates):
                    out += candidates
        return [c for c in out if c is not item]

    graph = {id(item): callees(item) for item in items}
    for item in items:
        item.reach = set(item.direct)
    changed = True
    while changed:
        changed = False
        for item in items:
            before = len(item.reach)
            for callee in graph[id(item)]:
                if callee.public and callee.aliases:
                    # Only aliases that name libpq functions (some name SQL, e.g. "COMMIT").
                    item.reach |= {
                        a for a in callee.aliases
                        if (a in functions if functions else re.match(r"(PQ|lo_|pg_)", a))
                    }
                else:
                    item.reach |= callee.reach
            if len(item.reach) != before:
                changed = True


def positive_controls(items: list[Item], functions: set[str]) -> bool:
    """A checker that scans nothing, or cannot see a missing alias, passes anything: it must
    find known aliased wrappers in the tree, and flag a wrapper without one."""
    ok = True
    public = [i for i in items if i.public]
    if len(public) < 100:
        print(f"control: only {len(public)} public functions found under {SRC}", file=sys.stderr)
        ok = False
    for owner, name, alias in [("Connection", "server_version", "PQserverVersion"),
                               ("Connection", "execute", "PQexecPrepared")]:
        found = [i for i in public if i.name == name and i.owner_type == owner]
        if not any(alias in " ".join(i.attrs) for i in found):
            print(f"control: {owner}::{name} with doc(alias = \"{alias}\") not found", file=sys.stderr)
            ok = False
    with tempfile.NamedTemporaryFile("w", suffix=".rs", delete=False) as f:
        f.write("pub struct C;\nimpl C {\n    /// Runs.\n    pub fn run(&self) {\n"
                "        unsafe { ffi::PQexec(self.0, c\"\".as_ptr()) };\n    }\n}\n")
    try:
        flagged = [i for i in scan_file(f.name, functions) if i.public and "PQexec" in i.direct]
    finally:
        os.unlink(f.name)
    if not flagged:
        print("control: a public wrapper of PQexec without an alias was not flagged", file=sys.stderr)
        ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--indirect", action="store_true", help="follow calls to helpers")
    parser.add_argument("--exclude", action="append", default=[], help="path to skip")
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    args = parser.parse_args()

    functions = libpq_functions()
    excluded = [os.path.normpath(os.path.join(ROOT, e)) for e in args.exclude]
    all_items: list[Item] = []
    for dirpath, _dirs, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".rs"):
                all_items.extend(scan_file(os.path.join(dirpath, name), functions))

    if args.indirect:
        resolve_indirect(all_items, functions)
    if not positive_controls(all_items, functions):
        return 2

    missing = 0
    for item in sorted(all_items, key=lambda i: (i.path, i.line)):
        path = os.path.relpath(item.path, ROOT)
        if any(os.path.normpath(item.path).startswith(e) for e in excluded):
            continue
        if not item.public or any(ALIAS_RE.search(a) for a in item.attrs if "doc" in a or "alias" in a):
            continue
        if any(re.search(r"doc\s*\(\s*hidden", a) for a in item.attrs):
            continue  # not public API
        qual = f"{item.owner_type}::{item.name}" if item.owner else item.name
        if (os.path.relpath(item.path, SRC), qual) in NOT_WRAPPERS:
            continue
        via = ""
        if item.direct:
            names = item.direct
        elif args.indirect and item.reach:
            names, via = item.reach, " via helpers"
        else:
            continue
        if not names:
            continue
        missing += 1
        if not args.quiet:
            print(f"{path}:{item.line}: {qual}: no doc(alias){via}; calls {', '.join(sorted(names))}")
    print(f"{missing} public function(s) without a doc alias", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
