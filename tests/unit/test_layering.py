"""The import graph of dj_runner and dj_operator: no cycle, leaves stay leaves, layers only look down.

Every module is parsed with ``ast``; every import counts, at the top of a module or inside a
function. ``from X import name`` is an import of ``X.name`` when that is a module, else of ``X``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "dj_runner": ROOT / "runner" / "dj_runner",
    "dj_operator": ROOT / "operator" / "dj_operator",
}

#: The runner's layers, lowest first. A module may import its own layer and the layers below;
#: a module's layer is that of the longest name here its name starts with.
RUNNER_LAYERS: list[tuple[str, ...]] = [
    ("dj_runner", "dj_runner.contract"),  # the package root holds only __version__
    ("dj_runner.errors",),
    ("dj_runner.store",),  # the work dir's paths, atomic writes, lock, claim, checkpoints
    ("dj_runner.observe",),  # readers and writers of status.json, the event log, metrics
    ("dj_runner.io", "dj_runner.recipe", "dj_runner.ops", "dj_runner.dj_ops"),
    ("dj_runner.plan",),
    ("dj_runner.engine",),
    ("dj_runner.cli",),
]

#: Imports that run up a layer, each with the reason it is allowed.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

#: Modules that import nothing from the project but what is listed.
LEAVES: dict[str, set[str]] = {
    "dj_runner.contract": set(),
    # WorkDir joins the contract's names to a root and opens the store they live in.
    "dj_runner.store.workdir": {"dj_runner", "dj_runner.contract", "dj_runner.store.blobs"},
}


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            found[_module_name(package, root, path)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """Every project module ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH: dict[str, set[str]] = {name: set(_imported(name, path)) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(name: str) -> int:
    best, best_len = None, -1
    for i, layer in enumerate(RUNNER_LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best is not None, f"{name} is in no layer of RUNNER_LAYERS"
    return best


def test_the_graph_sees_the_project() -> None:
    assert "dj_runner.engine.executor" in GRAPH["dj_runner.cli"]  # a function-level import
    assert "dj_runner.store.workdir" in GRAPH["dj_runner.engine.executor"]
    assert "dj_runner.contract" in GRAPH["dj_operator.status.attempts"]


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == [], "import cycles (each a set of modules importing each other)"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_nothing_from_the_project(leaf: str) -> None:
    extra = GRAPH[leaf] - LEAVES[leaf]
    assert not extra, f"{leaf} must stay a leaf; it imports {sorted(extra)}"


def test_the_runner_never_imports_the_operator() -> None:
    offenders = {
        name: sorted(d for d in deps if d.startswith("dj_operator"))
        for name, deps in GRAPH.items()
        if name.startswith("dj_runner")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_runner_module_has_a_layer() -> None:
    for name in MODULES:
        if name.startswith("dj_runner"):
            _layer(name)


def test_runner_imports_only_look_down() -> None:
    upward = sorted(
        (src, dst)
        for src, deps in GRAPH.items()
        if src.startswith("dj_runner")
        for dst in deps
        if dst.startswith("dj_runner") and _layer(dst) > _layer(src)
    )
    unexplained = [edge for edge in upward if edge not in ALLOWED_UPWARD]
    assert not unexplained, (
        "imports that run up a layer (fix them, or explain them in ALLOWED_UPWARD)"
    )
    stale = sorted(set(ALLOWED_UPWARD) - set(upward))
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer run up: {stale}"


def test_the_readme_layout_table_names_every_runner_part() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `runner/dj_runner/([^`]+)` \|", table, re.M))
    runner = PACKAGES["dj_runner"]
    parts = {f"{d.name}/" for d in runner.iterdir() if (d / "__init__.py").exists()}
    parts |= {f.name for f in runner.glob("*.py") if f.name != "__init__.py"}
    assert parts <= listed, f"README's layout table lacks {sorted(parts - listed)}"
    assert listed <= parts, f"README's layout table names what is gone: {listed - parts}"
