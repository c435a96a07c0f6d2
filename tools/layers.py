"""The import graph of gridkv-core: its cycles, its upward imports, its largest modules.

    python tools/layers.py [--src gridkv-core/src] [--fail]

Every ``import`` and ``from ... import`` of a ``gridkv`` module counts, those under
``if TYPE_CHECKING:`` included: a type-only import still ties the modules together for a
reader. Layers, lowest first, are those of ``docs/architecture.md``; a module may import from
its own layer and the layers below it, never from above. ``--fail`` exits 1 when there is a
cycle or an upward import (``gridkv-core/tests/test_layers.py`` runs it). The few imports
listed in :data:`DEFERRED` (made inside a function, each with its reason) are left out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

#: Layers, lowest first, by module-name prefix (the longest matching prefix decides).
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["gridkv.base", "gridkv._repr"]),
    ("storage", ["gridkv.storage"]),
    ("transport", ["gridkv.transport"]),
    ("wire", ["gridkv.wire"]),
    ("security", ["gridkv.security"]),
    ("cluster", ["gridkv.cluster"]),
    ("plugins", ["gridkv.plugins"]),
    ("node", ["gridkv.node"]),
    ("api", ["gridkv.api"]),
    ("tools", ["gridkv.testing", "gridkv.cli", "gridkv"]),
]
_RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
#: Imports made inside a function to reach a subclass from its base class's convenience
#: constructor, left out of the cycle check (each one listed here, with why):
#: ``GridKV.for_workers`` returns a ``WorkerGridKV`` (``gridkv.api.workers``), a ``GridKV``
#: subclass; the classmethod is where users look for it (issue 16), the subclass is where
#: the worker group's code lives.
DEFERRED: frozenset[tuple[str, str]] = frozenset({("gridkv.api.blocking", "gridkv.api.workers")})


def layer_of(module: str) -> str:
    """The layer a module belongs to (``gridkv`` itself, the package, is a tool's door)."""
    best, length = "tools", -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = name, len(prefix)
    return best


def modules(src: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the ``gridkv`` package under ``src``."""
    out: dict[str, Path] = {}
    for path in sorted((src / "gridkv").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The ``gridkv`` modules ``name`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gridkv"):
                    yield _resolve(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if not base.startswith("gridkv"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else _resolve(base, known)


def _resolve(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def graph(src: Path) -> dict[str, set[str]]:
    """Module -> the ``gridkv`` modules it imports (itself left out)."""
    found = modules(src)
    known = set(found)
    return {
        name: {
            m
            for m in imports(path, name, known)
            if m != name and m in known and (name, m) not in DEFERRED
        }
        for name, path in found.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where a module imports from a layer above its own."""
    return sorted(
        (a, b)
        for a, targets in edges.items()
        for b in targets
        if _RANK[layer_of(b)] > _RANK[layer_of(a)]
    )


def main() -> int:
    """Print the report; with ``--fail``, exit 1 on a cycle or an upward import."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--src", type=Path, default=Path("gridkv-core/src"))
    parser.add_argument("--fail", action="store_true", help="exit 1 on a cycle or upward import")
    parser.add_argument("--largest", type=int, default=10, help="modules to list by size")
    args = parser.parse_args()
    edges = graph(args.src)
    found = cycles(edges)
    up = upward(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports between them")
    print(f"cycles: {len(found)}")
    for group in found:
        print(f"  {len(group)} modules: {', '.join(group)}")
    print(f"upward imports: {len(up)}")
    for a, b in up:
        print(f"  {a} ({layer_of(a)}) -> {b} ({layer_of(b)})")
    sizes = sorted(
        ((len(path.read_text().splitlines()), name) for name, path in modules(args.src).items()),
        reverse=True,
    )
    print(
        f"largest modules (lines): {', '.join(f'{n} {name}' for n, name in sizes[: args.largest])}"
    )
    return 1 if args.fail and (found or up) else 0


if __name__ == "__main__":
    sys.exit(main())
