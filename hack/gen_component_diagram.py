"""Write docs/diagrams/components.dot: the runner's and the operator's parts and their imports.

Read from the code itself with ``ast``, so the diagram cannot drift from it. A node is a part:
a subpackage (``dj_runner.engine``) or a top-level module (``dj_runner.cli``); the built-in
ops (``dj_runner.ops``) and what they share (``dj_runner.ops.common``) are two parts. Its label
lists the part's modules. An edge A -> B says that some module of A imports from B:

- solid: imported at module level;
- dashed: imported only inside a function (on first use: Ray, Data-Juicer, lazy paths);
- dotted: imported only for type checking (``if TYPE_CHECKING:``).

Third-party packages a part imports are listed in its label; the standard library is not.
Imports by name at run time (``importlib.import_module``, the op registry's way of loading
op modules) are not statements, so they are not drawn.

    python hack/gen_component_diagram.py           # rewrite the file
    python hack/gen_component_diagram.py --check   # exit 1 when the file differs from the code
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = Path("docs/diagrams/components.dot")
#: Import roots and where their packages live, relative to the repository root.
PACKAGES = {"dj_runner": Path("runner"), "dj_operator": Path("operator")}
TITLES = {
    "dj_runner": "dj-runner (runner/dj_runner)",
    "dj_operator": "dj-operator (operator/dj_operator)",
}
COLORS = {"dj_runner": "#e8f0fe", "dj_operator": "#fdf1e6"}
#: Each kind of edge, strongest first (an edge takes its strongest import), and its style.
STYLES = {"module": "solid", "function": "dashed", "typing": "dotted"}


@dataclass
class Part:
    name: str
    modules: set[str] = field(default_factory=set)


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The part a module belongs to: its package's first subpackage, or the top-level module.

    ``dj_runner.ops.common.base`` -> ``dj_runner.ops.common``; ``dj_runner.ops.words_num_filter``
    -> ``dj_runner.ops``; ``dj_runner.cli`` -> ``dj_runner.cli``; ``dj_runner`` -> ``dj_runner``.
    """
    bits = module.split(".")
    if bits[:3] == ["dj_runner", "ops", "common"]:
        return "dj_runner.ops.common"
    return ".".join(bits[:2])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, str]]:
    """(imported module, kind) for every import statement, kind as in ``STYLES``."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_one(stmt, "typing")
                for stmt in child.orelse:
                    yield from walk_one(stmt, kind)
                continue
            yield from walk_one(child, kind)

    def walk_one(node: ast.AST, kind: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, kind
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import mod`` names a module when pkg.mod is one; the caller
                # resolves it against the known modules.
                yield f"{base}.{alias.name}" if base else alias.name, kind
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from walk(node, "typing" if kind == "typing" else "function")
        else:
            yield from walk(node, kind)

    yield from walk(tree, "module")


def scan(root: Path) -> tuple[dict[str, Part], dict[tuple[str, str], str]]:
    """The parts and the edges (source part, target part or package) -> strongest kind."""
    modules: dict[str, Path] = {}
    for package, where in PACKAGES.items():
        for path in sorted((root / where / package).rglob("*.py")):
            modules[module_name(root / where, path)] = path
    parts: dict[str, Part] = {}
    for module in modules:
        parts.setdefault(part_of(module), Part(part_of(module))).modules.add(module)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    rank = list(STYLES)
    edges: dict[tuple[str, str], str] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        source = part_of(module)
        for imported, kind in imports(tree, module, path.name == "__init__.py"):
            top = imported.split(".")[0]
            if top in stdlib:
                continue
            if top in PACKAGES:
                # ``from pkg import name``: the module pkg.name if it exists, else pkg itself.
                while imported not in modules and "." in imported:
                    imported = imported.rsplit(".", 1)[0]
                target = part_of(imported)
            else:
                target = top
            if target == source or target in PACKAGES:
                continue  # within a part, or the package's own __init__ (its version)
            key = (source, target)
            if key not in edges or rank.index(kind) < rank.index(edges[key]):
                edges[key] = kind
    return parts, edges


def _label(part: Part, uses: dict[str, str]) -> str:
    package, _, short = part.name.partition(".")
    subs = sorted(
        m.removeprefix(part.name + ".")
        for m in part.modules
        if m != part.name and part_of(m) == part.name
    )
    if part.name == "dj_runner.ops":
        ops = [m for m in subs if not m.startswith("_")]
        subs = [f"{len(ops)} built-in ops, one a module,", "and the C extension _kernels"]
    else:
        subs = [", ".join(subs[i : i + 3]) for i in range(0, len(subs), 3)]
    lines = [f"<B>{short or package}</B>", *subs]
    if uses:
        names = [name if kind == "module" else f"{name}*" for name, kind in sorted(uses.items())]
        lines += [
            '<FONT COLOR="#666666">' + ", ".join(names[i : i + 3]) + "</FONT>"
            for i in range(0, len(names), 3)
        ]
    return "<" + "<BR/>".join(lines) + ">"


def render(parts: dict[str, Part], edges: dict[tuple[str, str], str]) -> str:
    uses: dict[str, dict[str, str]] = {name: {} for name in parts}
    for (source, target), kind in edges.items():
        if target not in parts:
            uses[source][target] = kind
    out = [
        "// Generated by hack/gen_component_diagram.py from the imports of the code: do not edit.",
        "digraph components {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=12, nodesep=0.3, ranksep=0.45,',
        "         labelloc=t, label=<<B>Components</B>: an arrow A → B: A imports B; solid: at "
        "module level, dashed: on first use (inside a function), dotted: for type checking "
        "only<BR/>"
        '<FONT COLOR="#666666" POINT-SIZE="10">grey: the third-party packages a part imports '
        "(*: on first use)</FONT>>];",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, '
        "fillcolor=white];",
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    for package in PACKAGES:
        out.append(f'  subgraph "cluster_{package}" {{')
        out.append(
            f'    label="{TITLES[package]}"; style="rounded,filled"; '
            f'fillcolor="{COLORS[package]}"; color="#999999";'
        )
        for name in sorted(p for p in parts if p.startswith(package + ".")):
            out.append(f'    "{name}" [label={_label(parts[name], uses[name])}];')
        out.append("  }")
    for (source, target), kind in sorted(edges.items()):
        if target not in parts:
            continue
        attrs = "" if kind == "module" else f" [style={STYLES[kind]}]"
        out.append(f'  "{source}" -> "{target}"{attrs};')
    out.append("}")
    return "\n".join(out) + "\n"


def generate(root: Path) -> str:
    """The DOT of the code under ``root`` as it is now."""
    return render(*scan(root))


def is_current(root: Path) -> bool:
    """Whether the committed ``components.dot`` under ``root`` is what the code gives."""
    target = root / OUTPUT
    return target.is_file() and target.read_text(encoding="utf-8") == generate(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        if not is_current(args.root):
            print(
                f"{OUTPUT} differs from the imports of the code; run `make diagrams`",
                file=sys.stderr,
            )
            return 1
        return 0
    target = args.root / OUTPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(generate(args.root), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
