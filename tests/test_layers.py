"""The package's floors: a module imports only from its own floor or lower ones, no modules
import each other in a circle, and no module imports another's private (underscore) names.

Every import counts, including those inside functions (a deferred import still ties the two
modules together); relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "polyhead"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Lowest first. Key: the top-level module or subpackage under polyhead. A floor may import
# from itself and from the floors below it, never from one above.
FLOORS = [
    # base: no knowledge of data sets, models or runs of them beyond file names
    {"registry", "audio", "features", "text", "config", "collectives", "metrics", "ctc", "scoring", "runs"},
    {"data"},
    # decoding runs the model's decoder head (its searches take any head with steps()); the
    # head's generate/beam_search are thin wrappers over it, so the two share a floor
    {"model", "decoding"},
    {"tasks"},
    {"evaluation"},
    {"objectives"},
    {"training"},
    {"inference"},
    {"serving"},
    {"cli", "demo", "sweep", "__init__"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}

# imports that may go up a floor (none: keep it so)
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in module ``name``
    that reaches into the package; ``from pkg import mod`` counts as importing ``pkg.mod``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def floor_of(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in FLOOR, f"{name}: {key!r} is on no floor; add it to FLOORS in tests/test_layers.py"
    return FLOOR[key]


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}


def test_every_module_is_on_a_floor():
    for name in MODULES:
        floor_of(name)


def test_no_upward_imports():
    upward = [f"{m}:{line} -> {t} (floor {floor_of(m)} imports floor {floor_of(t)})"
              for m in MODULES for t, _, line in imports_of(m)
              if floor_of(t) > floor_of(m) and (m, t) not in ALLOWED_UPWARD]
    assert not upward, "\n".join(upward)


def test_allow_list_is_still_needed():
    used = {(m, t) for m in MODULES for t, _, _ in imports_of(m)}
    assert ALLOWED_UPWARD <= used, f"no longer imported, drop from ALLOWED_UPWARD: {ALLOWED_UPWARD - used}"


def test_no_private_names_across_modules():
    private = [f"{m}:{line} imports {t}.{n}" for m in MODULES for t, n, line in imports_of(m)
               if t != m and (n or t.rpartition(".")[2]).startswith("_") and not (n or "").startswith("__")]
    assert not private, "\n".join(private)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_cycle_finder(edges, expected):
    assert cycles(edges) == expected
