"""The architecture diagrams: every image rendered from its source as it is now, the component
diagram generated from the code's imports, and all five shown in the docs.

``hack/render_diagrams.py --check`` needs no Graphviz: each image carries the SHA-256 of the
source it was rendered from, and ``components.dot`` is regenerated from the code and compared.
"""

from __future__ import annotations

import ast
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "hack" / "render_diagrams.py"
GENERATE = REPO / "hack" / "gen_component_diagram.py"
SOURCES = REPO / "docs" / "diagrams"
IMAGES = REPO / "docs" / "img" / "architecture"
FIVE = ("system", "data-flow", "event-logging", "fault-tolerance", "components")


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, each CRC checked."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path.name}: not a PNG"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"{path.name}: bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_every_image_is_rendered_from_its_source_as_it_is_now() -> None:
    result = run(RENDER, "--check")
    assert result.returncode == 0, result.stderr


def test_the_five_diagrams_have_a_source_an_svg_and_a_png() -> None:
    assert {p.stem for p in SOURCES.glob("*.dot")} == set(FIVE)
    for name in FIVE:
        assert (IMAGES / f"{name}.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
        kinds = [kind for kind, _ in png_chunks(IMAGES / f"{name}.png")]
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" in kinds


def test_the_component_diagram_has_every_part_of_the_code_and_its_imports() -> None:
    assert run(GENERATE, "--check").returncode == 0
    dot = (SOURCES / "components.dot").read_text(encoding="utf-8")
    for package, where in (("dj_runner", "runner"), ("dj_operator", "operator")):
        root = REPO / where / package
        subpackages = [p.parent.name for p in root.glob("*/__init__.py")]
        modules = [p.stem for p in root.glob("*.py") if p.stem != "__init__"]
        for part in subpackages + modules:
            assert f'"{package}.{part}" [label=' in dot, f"{package}.{part} missing"
    # The operator validates recipes with the runner's own parser; the runner's engine runs
    # Ray only on first use; the handlers are the only part that imports kopf at module level.
    assert '"dj_operator.api" -> "dj_runner.recipe";' in dot
    assert re.search(r'"dj_runner\.engine" \[label=<[^\n]*ray\*', dot)
    assert re.search(r'"dj_operator\.handlers" \[label=<[^\n]*kopf[^*]', dot)


def string_constants(package: Path) -> set[str]:
    """Every string literal in a package's Python files."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_the_drawn_diagrams_name_only_modules_and_events_that_exist() -> None:
    """The four hand-drawn diagrams cite modules and event types; a rename must update them."""
    drawn = [SOURCES / f"{name}.dot" for name in FIVE if name != "components"]
    for source in drawn:
        for cited in re.findall(r"[\w/]+\.py", source.read_text(encoding="utf-8")):
            places = [REPO / cited, REPO / "runner/dj_runner" / cited]
            places.append(REPO / "operator/dj_operator" / cited)
            assert any(p.is_file() for p in places), f"{source.name} cites {cited}"
    written = string_constants(REPO / "runner/dj_runner")
    dot = (SOURCES / "event-logging.dot").read_text(encoding="utf-8")
    for writer in ("driver", "task"):
        label = re.search(rf"^    {writer} \[.*$", dot, re.MULTILINE)
        assert label, writer
        events = re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", re.sub(r"<[^>]*>", " ", label.group(0)))
        assert len(events) >= 9, events
        missing = [event for event in events if event not in written]
        assert not missing, f"event-logging.dot names events the runner never writes: {missing}"


def copy_of_the_repository(tmp_path: Path) -> Path:
    """What the check reads: the diagram sources and images, and the code's Python files."""
    root = tmp_path / "repo"
    for rel in ("docs/diagrams", "docs/img/architecture"):
        shutil.copytree(REPO / rel, root / rel)
    for rel in ("runner/dj_runner", "operator/dj_operator"):
        shutil.copytree(
            REPO / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c")
        )
    return root


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    root = copy_of_the_repository(tmp_path)
    ok = run(RENDER, "--check", "--root", str(root))
    assert ok.returncode == 0, ok.stderr  # the copy passes before it is changed
    return root


def test_an_edited_source_is_caught_naming_both_images(copy: Path) -> None:
    with (copy / "docs/diagrams/system.dot").open("a", encoding="utf-8") as f:
        f.write("// edited\n")
    result = run(RENDER, "--check", "--root", str(copy))
    assert result.returncode == 1
    assert "docs/img/architecture/system.svg was rendered from another version" in result.stderr
    assert "docs/img/architecture/system.png was rendered from another version" in result.stderr
    assert "data-flow" not in result.stderr


def test_a_new_import_in_the_code_makes_the_component_diagram_stale(copy: Path) -> None:
    module = copy / "runner/dj_runner/errors.py"
    module.write_text(
        module.read_text(encoding="utf-8") + "\nfrom dj_runner.io import sources  # noqa\n",
        encoding="utf-8",
    )
    result = run(RENDER, "--check", "--root", str(copy))
    assert result.returncode == 1
    assert "docs/diagrams/components.dot differs from the imports of the code" in result.stderr
    assert run(GENERATE, "--check", "--root", str(copy)).returncode == 1


def test_a_missing_image_and_an_image_without_source_are_caught(copy: Path) -> None:
    (copy / "docs/img/architecture/data-flow.svg").unlink()
    shutil.copy(copy / "docs/img/architecture/system.png", copy / "docs/img/architecture/old.png")
    result = run(RENDER, "--check", "--root", str(copy))
    assert result.returncode == 1
    assert "docs/img/architecture/data-flow.svg is missing" in result.stderr
    assert "docs/img/architecture/old.png has no source in docs/diagrams" in result.stderr


def test_the_docs_show_the_five_and_the_readme_the_system_diagram() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in FIVE:
        assert f"(img/architecture/{name}.png)" in architecture, name
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/img/architecture/system.png)" in readme
    assert "(docs/architecture.md)" in readme
