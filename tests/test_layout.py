"""The package's layout: imports follow the data flow, with no cycle and no oracle in
the library.

The import graph is built from the source with ``ast`` (module-level and
function-level imports alike), so a cycle hidden inside a function still fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "structinf"

# Rank of each part of the package: a module may import only from parts of a rank
# <= its own (and, within one rank, without a cycle). The kernels and the energy come
# before the models because a BLSTM-CRF is built from them; metrics, io and masks are
# leaves that any layer uses.
RANKS = [
    (0, ("structinf.masks", "structinf.io", "structinf.metrics", "structinf.pretrained",
         "structinf.distributed")),
    (1, ("structinf.data",)),
    (2, ("structinf.constraints", "structinf.torch_ops", "structinf.ops", "structinf.energy",
         "structinf.crf", "structinf.compat", "structinf._C")),
    (3, ("structinf.models",)),
    (4, ("structinf.decode",)),
    (5, ("structinf.evaluate", "structinf.tagging")),  # tagging: `structinf tag`'s work
    (6, ("structinf.train",)),
    (7, ("structinf.experiments",)),
    (8, ("structinf.cli", "structinf.__main__")),
    (9, ("structinf.reference",)),  # oracles: nothing in the library imports them
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path) -> dict:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, known: set) -> set:
    """The structinf modules ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_pkg, node.level, node.module)
            # `from pkg import sub` imports the submodule when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("structinf") and t != name:
                out.add(t)
    return out


def rank(name: str):
    for r, prefixes in RANKS:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return r
    return None


@pytest.fixture(scope="module")
def graph():
    mods = modules(PKG)
    known = set(mods)
    return {n: imports_of(n, p, known) for n, p in mods.items()}


def find_cycle(graph: dict):
    """A list of modules forming a cycle, or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_of_sees_function_level_imports(tmp_path):
    src = tmp_path / "structinf" / "x.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from . import y\n")
    assert imports_of("structinf.x", src, {"structinf.x", "structinf.y"}) == {"structinf.y"}


def test_no_import_cycle(graph):
    # The package root only re-exports; every other module is held to the graph.
    inner = {n: {m for m in deps if m != "structinf"} for n, deps in graph.items()
             if n != "structinf"}
    assert find_cycle(inner) is None, f"import cycle: {' -> '.join(find_cycle(inner))}"


def test_every_module_has_a_rank(graph):
    unranked = [n for n in graph if n != "structinf" and rank(n) is None]
    assert not unranked, f"modules outside the layout: {unranked}"


def test_imports_follow_the_data_flow(graph):
    bad = []
    for n, deps in graph.items():
        if n == "structinf":
            continue
        for m in deps:
            if m.startswith("structinf.reference"):
                continue  # checked below
            if rank(m) is not None and rank(m) > rank(n):
                bad.append(f"{n} (rank {rank(n)}) imports {m} (rank {rank(m)})")
    assert not bad, "\n".join(bad)


def test_oracles_are_imported_only_by_tests_and_benchmarks(graph):
    users = sorted(n for n, deps in graph.items()
                   if not n.startswith("structinf.reference")
                   and any(m.startswith("structinf.reference") for m in deps))
    assert users == [], f"library modules import the float64 oracles: {users}"


def test_tagging_does_not_load_the_study():
    """``structinf tag`` builds the whole parser but must not import the study (nor
    matplotlib): the study's subcommands import their work only when they run."""
    import subprocess
    import sys

    code = ("import sys, structinf.cli as c; c.build_parser(); "
            "heavy = [m for m in ('matplotlib', 'structinf.experiments.reproduce', "
            "'structinf.experiments.speed') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]", out
