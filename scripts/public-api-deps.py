#!/usr/bin/env python3
"""Lists the foreign crates whose items appear in pqlib's public API.

A crate whose types or traits appear in pqlib's public signatures is a *public dependency*:
a semver-incompatible release of it is a breaking change of pqlib. This reads rustdoc's JSON
output for pqlib and walks everything reachable from the crate root:

- re-exports (`pub use other_crate::Thing`),
- signatures of public functions and methods (parameters, return types, generics, bounds),
- public struct fields, enum variants, type aliases, constants and statics,
- trait impls on public types: the trait itself, its generic arguments, and the signatures of
  the impl's items (reported separately: implementing a foreign trait such as `Stream` is
  expected, a foreign *type* in `impl From<other::Error> for Error` is a public dependency).

Crates of the standard library are ignored. Each foreign crate is printed with the public
items that mention it; crates not in EXPECTED are marked and make the exit status 1.

Usage:
    RUSTC_BOOTSTRAP=1 cargo +stable rustdoc -p pqlib --all-features -- \\
        -Zunstable-options --output-format json
    scripts/public-api-deps.py [target/doc/pqlib.json]

`--build` runs that cargo command first. Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(ROOT, "target", "doc", "pqlib.json")
BUILD = [
    "cargo", "+stable", "rustdoc", "-p", "pqlib", "--all-features", "--",
    "-Zunstable-options", "--output-format", "json",
]

STD_CRATES = {"std", "core", "alloc", "proc_macro", "test"}
# The crates pqlib means to expose (see the issue "release readiness" and DESIGN.md).
EXPECTED = {
    "pqlib_sys",             # the raw bindings: `Connection::as_ptr() -> *mut PGconn` etc.
    "postgres_types",        # ToSql/FromSql/Type, re-exported as pqlib::types
    "postgres_protocol",     # what postgres_types' own public signatures use, re-exported with it
    "foreign_types",         # ForeignType(Ref) of pqlib's own handles
    "foreign_types_shared",  # the `ForeignTypeRef` of foreign-types 0.3 that openssl's types use
    "openssl",               # Connection::ssl (feature `openssl`)
    "tokio",                 # the async client (feature `tokio`)
    "bytes",                 # COPY data and ToSql buffers
    "futures_core",          # Stream on async types
    "futures_sink",          # Sink on CopyInSink
    "deadpool",              # pqlib::pool::deadpool (feature `deadpool`)
    # `Runtime`, re-exported by deadpool itself (`deadpool::managed::reexports`) and needed
    # for `PoolBuilder::runtime`: public because deadpool's builder is, and moves with it.
    "deadpool_runtime",
    "r2d2",                  # pqlib::pool::r2d2 (feature `r2d2`)
}


class Api:
    def __init__(self, doc: dict):
        self.index: dict[str, dict] = doc["index"]
        self.paths: dict[str, dict] = doc["paths"]
        self.crates = {int(k): v["name"] for k, v in doc["external_crates"].items()}
        self.root = str(doc["root"])
        # crate name -> {(item, mention, how)}
        self.found: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        self.visited: set[str] = set()

    # --- where an id comes from -------------------------------------------------------------

    def crate_of(self, id_) -> int | None:
        key = str(id_)
        if key in self.index:
            return self.index[key].get("crate_id")
        if key in self.paths:
            return self.paths[key].get("crate_id")
        return None

    def foreign_name(self, id_) -> tuple[str, str] | None:
        """(crate name, item path) for an id from another non-std crate, else None."""
        crate = self.crate_of(id_)
        if crate is None or crate == 0:
            return None
        name = self.crates.get(crate, f"crate#{crate}")
        if name in STD_CRATES:
            return None
        path = self.paths.get(str(id_), {}).get("path")
        return name, "::".join(path) if path else "?"

    # --- scanning ---------------------------------------------------------------------------

    def mentions(self, node, label: str, how: str) -> None:
        """Records every foreign path (`{"path": .., "id": ..}`) anywhere inside `node`."""
        if isinstance(node, dict):
            if isinstance(node.get("path"), str) and "id" in node:
                foreign = self.foreign_name(node["id"])
                if foreign:
                    self.found[foreign[0]].add((label, foreign[1], how))
            for value in node.values():
                self.mentions(value, label, how)
        elif isinstance(node, list):
            for value in node:
                self.mentions(value, label, how)

    def item(self, id_) -> dict | None:
        return self.index.get(str(id_))

    def visit(self, id_, label: str) -> None:
        key = str(id_)
        if key in self.visited:
            return
        item = self.item(id_)
        if item is None:
            return
        self.visited.add(key)
        if item.get("crate_id", 0) != 0:
            # A foreign item inlined into pqlib's docs: a re-export.
            foreign = self.foreign_name(id_)
            if foreign:
                self.found[foreign[0]].add((label, foreign[1], "re-export"))
            return
        (kind, inner), = item["inner"].items()
        name = item.get("name") or ""
        here = f"{label}::{name}" if name and label else (name or label)

        if kind == "module":
            for child in inner["items"]:
                self.visit(child, here)
        elif kind == "use":
            target = inner.get("id")
            if target is None:
                return
            target_item = self.item(target)
            use_label = f"{label}::{inner['name']}" if not inner.get("is_glob") else f"{label}::*"
            if target_item is not None and target_item.get("crate_id", 0) == 0:
                # Re-export of pqlib's own item (or module) under another name.
                (tkind, tinner), = target_item["inner"].items()
                if inner.get("is_glob") and tkind == "module":
                    for child in tinner["items"]:
                        self.visit(child, label)
                else:
                    self.visit(target, label)
            else:
                foreign = self.foreign_name(target)
                if foreign:
                    self.found[foreign[0]].add((use_label, foreign[1], "re-export"))
                elif target_item is None and inner.get("source"):
                    first = inner["source"].split("::")[0]
                    if first not in STD_CRATES | {"crate", "self", "super"}:
                        self.found[first].add((use_label, inner["source"], "re-export"))
        elif kind in ("struct", "enum", "union"):
            self.mentions(inner.get("generics"), here, "signature")
            if kind == "struct":
                struct_kind = inner.get("kind", {})
                fields = []
                if isinstance(struct_kind, dict):
                    if "plain" in struct_kind:
                        fields = struct_kind["plain"].get("fields", [])
                    elif "tuple" in struct_kind:
                        fields = [f for f in struct_kind["tuple"] if f is not None]
                for field in fields:
                    self.field(field, here)
            elif kind == "union":
                for field in inner.get("fields", []):
                    self.field(field, here)
            else:
                for variant in inner.get("variants", []):
                    self.variant(variant, here)
            for impl in inner.get("impls", []):
                self.impl(impl, here)
        elif kind == "trait":
            self.mentions(inner.get("generics"), here, "signature")
            self.mentions(inner.get("bounds"), here, "signature")
            for child in inner.get("items", []):
                child_item = self.item(child)
                if child_item:
                    self.visited.add(str(child))
                    self.mentions(
                        child_item["inner"], f"{here}::{child_item.get('name')}", "signature"
                    )
        elif kind in ("function", "type_alias", "constant", "static", "trait_alias"):
            self.mentions(inner, here, "signature")
        # macros, primitives, keywords: no types to follow

    def field(self, id_, owner: str) -> None:
        item = self.item(id_)
        if item and item.get("visibility") == "public":
            self.mentions(item["inner"], f"{owner}.{item.get('name')}", "signature")

    def variant(self, id_, owner: str) -> None:
        item = self.item(id_)
        if not item:
            return
        label = f"{owner}::{item.get('name')}"
        kind = item["inner"].get("variant", {}).get("kind", {})
        ids = []
        if isinstance(kind, dict):
            if "tuple" in kind:
                ids = [f for f in kind["tuple"] if f is not None]
            elif "struct" in kind:
                ids = kind["struct"].get("fields", [])
        for field in ids:
            field_item = self.item(field)
            if field_item:
                self.mentions(field_item["inner"], label, "signature")

    def impl(self, id_, owner: str) -> None:
        item = self.item(id_)
        if not item or str(id_) in self.visited:
            return
        self.visited.add(str(id_))
        inner = item["inner"].get("impl", {})
        if inner.get("is_synthetic") or inner.get("blanket_impl") is not None:
            return  # auto traits and blanket impls from other crates: not ours to decide
        trait = inner.get("trait")
        if trait is None:
            self.mentions(inner.get("generics"), owner, "signature")
            for child in inner.get("items", []):
                child_item = self.item(child)
                if child_item and child_item.get("visibility") == "public":
                    self.visited.add(str(child))
                    self.mentions(
                        child_item["inner"], f"{owner}::{child_item.get('name')}", "signature"
                    )
            return
        trait_name = trait.get("path", "?") + ("<…>" if trait.get("args") else "")
        label = f"impl {trait_name} for {owner}"
        foreign_trait = self.foreign_name(trait["id"])
        if foreign_trait:
            self.found[foreign_trait[0]].add((label, foreign_trait[1], "trait implemented"))
        # The trait's generic arguments (`From<X>`, `Sink<Bytes>`) and the impl's items.
        self.mentions(trait.get("args"), label, "trait impl")
        self.mentions(inner.get("generics"), label, "trait impl")
        for child in inner.get("items", []):
            child_item = self.item(child)
            if child_item:
                self.mentions(
                    child_item["inner"], f"{label} (in {child_item.get('name')})", "trait impl"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", default=DEFAULT_JSON, help="rustdoc JSON of pqlib")
    parser.add_argument("--build", action="store_true", help="run cargo rustdoc first")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="list every mention (default: up to 12 per crate and kind)")
    args = parser.parse_args()

    if args.build:
        env = dict(os.environ, RUSTC_BOOTSTRAP="1")
        subprocess.run(BUILD, cwd=ROOT, env=env, check=True)
    if not os.path.exists(args.json):
        print(f"{args.json} not found; build it with:\n  RUSTC_BOOTSTRAP=1 {' '.join(BUILD)}",
              file=sys.stderr)
        return 2
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)

    api = Api(doc)
    api.visit(api.root, "")
    # Positive controls: a scan that walked nothing (a changed JSON format, a wrong file) would
    # find no foreign crate and pass. These mentions are certain: `ToSql` in `query`'s
    # signature, and the raw `PGconn` pointer of `Connection::as_ptr`.
    for crate, how in (("postgres_types", "signature"), ("pqlib_sys", "signature")):
        if not any(h == how for _, _, h in api.found.get(crate, ())):
            print(f"control: no {how} mention of {crate} found in {args.json}", file=sys.stderr)
            return 2
    unexpected = []
    for crate in sorted(api.found):
        marker = "" if crate in EXPECTED else "   <-- NOT AN INTENDED PUBLIC DEPENDENCY"
        if marker:
            unexpected.append(crate)
        entries = sorted(api.found[crate])
        print(f"{crate} ({len(entries)} mentions){marker}")
        by_how: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for label, mention, how in entries:
            by_how[how].append((label, mention))
        for how in ("re-export", "signature", "trait implemented", "trait impl"):
            rows = by_how.get(how, [])
            if not rows:
                continue
            print(f"  {how}:")
            shown = rows if args.verbose else rows[:12]
            for label, mention in shown:
                print(f"    {label}  ->  {mention}")
            if len(rows) > len(shown):
                print(f"    … {len(rows) - len(shown)} more (--verbose)")
    if unexpected:
        print(f"\nunexpected public dependencies: {', '.join(unexpected)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
