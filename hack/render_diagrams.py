"""Render the architecture diagrams: docs/diagrams/*.dot -> docs/img/architecture/*.svg, *.png.

The sources are Graphviz DOT. ``components.dot`` is generated from the code's imports first
(``gen_component_diagram.py``); the others are written by hand. Every rendered image carries
the SHA-256 of the source it was rendered from: an XML comment in the SVG, a ``tEXt`` chunk
(keyword ``Source``) in the PNG, both reading ``docs/diagrams/<name>.dot sha256=<hex>``. So
``--check`` tells, without Graphviz, whether every image is current: it exits 1 naming each
source whose images are missing or were rendered from another version of it, each image
without a source, and a stale ``components.dot``.

    python hack/render_diagrams.py           # regenerate components.dot, render every image
    python hack/render_diagrams.py --check   # verify only (no Graphviz needed)

Rendering needs ``dot`` (Debian/Ubuntu: the ``graphviz`` package; hack/install-system-deps.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import gen_component_diagram

REPO = Path(__file__).resolve().parents[1]
SOURCES = Path("docs/diagrams")
IMAGES = Path("docs/img/architecture")
FORMATS = ("svg", "png")
PNG_DPI = 96
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEYWORD = b"Source"
STAMP = re.compile(r"(?P<source>docs/diagrams/[\w.-]+\.dot) sha256=(?P<digest>[0-9a-f]{64})")


def stamp_for(root: Path, source: Path) -> str:
    """What an image rendered from ``source`` as it is now must carry."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return f"{source.relative_to(root).as_posix()} sha256={digest}"


def stamp_svg(svg: bytes, stamp: str) -> bytes:
    """The SVG with the stamp as a comment right after its XML declaration."""
    comment = f"<!-- {stamp} -->\n".encode()
    head, sep, rest = svg.partition(b"?>\n")
    if not sep or not head.startswith(b"<?xml"):
        return comment + svg
    return head + sep + comment + rest


def stamp_png(png: bytes, stamp: str) -> bytes:
    """The PNG with a ``tEXt`` chunk (keyword ``Source``) right after its IHDR chunk."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    ihdr_end = len(PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    data = PNG_KEYWORD + b"\x00" + stamp.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def read_stamp(image: Path) -> str | None:
    """The stamp an image carries, or None."""
    data = image.read_bytes()
    if image.suffix == ".png":
        pos = len(PNG_SIGNATURE)
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            body = data[pos + 8 : pos + 8 + length]
            if kind == b"tEXt" and body.startswith(PNG_KEYWORD + b"\x00"):
                return body[len(PNG_KEYWORD) + 1 :].decode("latin-1")
            if kind == b"IDAT":
                return None
            pos += 12 + length
        return None
    found = STAMP.search(data[:4096].decode("utf-8", "replace"))
    return found.group(0) if found else None


def problems(root: Path) -> list[str]:
    """Everything that makes the committed images disagree with their sources."""
    found = []
    if not gen_component_diagram.is_current(root):
        found.append(
            f"{gen_component_diagram.OUTPUT.as_posix()} differs from the imports of the code"
        )
    sources = sorted((root / SOURCES).glob("*.dot"))
    if not sources:
        found.append(f"no diagram sources in {SOURCES}")
    for source in sources:
        want = stamp_for(root, source)
        for fmt in FORMATS:
            image = root / IMAGES / f"{source.stem}.{fmt}"
            rel = image.relative_to(root)
            if not image.is_file():
                found.append(f"{rel} is missing (source {source.relative_to(root)})")
            elif (have := read_stamp(image)) != want:
                found.append(
                    f"{rel} was rendered from another version of {source.relative_to(root)} "
                    f"(image: {have or 'no stamp'}; source: {want})"
                )
    stems = {s.stem for s in sources}
    for image in sorted((root / IMAGES).glob("*")):
        if image.suffix.lstrip(".") in FORMATS and image.stem not in stems:
            found.append(f"{image.relative_to(root)} has no source in {SOURCES}")
    return found


def render(root: Path) -> None:
    dot = shutil.which("dot")
    if dot is None:
        sys.exit(
            "render_diagrams: `dot` not found; install Graphviz (bash hack/install-system-deps.sh)"
        )
    components = root / gen_component_diagram.OUTPUT
    components.write_text(gen_component_diagram.generate(root), encoding="utf-8")
    out_dir = root / IMAGES
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted((root / SOURCES).glob("*.dot")):
        stamp = stamp_for(root, source)
        for fmt, stamper, extra in (
            ("svg", stamp_svg, []),
            ("png", stamp_png, [f"-Gdpi={PNG_DPI}"]),
        ):
            done = subprocess.run(
                [dot, f"-T{fmt}", *extra, str(source)], capture_output=True, check=False
            )
            if done.returncode != 0:
                sys.exit(f"dot failed on {source}: {done.stderr.decode(errors='replace')}")
            (out_dir / f"{source.stem}.{fmt}").write_bytes(stamper(done.stdout, stamp))
        print(f"rendered {source.relative_to(root)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of rendering")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if not args.check:
        render(args.root)
    found = problems(args.root)
    for problem in found:
        print(f"render_diagrams: {problem}", file=sys.stderr)
    if found:
        print("render_diagrams: run `make diagrams`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
