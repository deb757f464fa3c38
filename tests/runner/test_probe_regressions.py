"""Black-box regression tests for the defects of the runner probe at commit 31cdb7c.

One test per defect ID (the ID starts the test's name). Each drives only the ``dj-runner``
command line, its files, signals and ``/proc``, as a user would, and asserts the promise the
user sees: exit code, a message naming the field or file, files left intact, correct output.
So the same tests run against any install: the binary is ``$DJ_RUNNER_UNDER_TEST`` (default:
the ``dj-runner`` beside this Python). ``hack/probe-regressions.sh`` runs them against the
runner at 31cdb7c (where each must fail) and against the working tree (where each must pass).

Every run gets a private ``HOME``, ``TMPDIR`` and ``RAY_TMPDIR`` (a short directory, for Ray's
Unix sockets) and no ``RAY_ADDRESS``: an older runner's embedded Ray then never touches
``/tmp/ray`` or ``~/.ray``, and whatever it leaves running is killed when the test ends.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.harness.proctree import cmdline, descendants, listening
from tests.harness.waiting import WaitTimeout, wait_for

RUNNER = os.environ.get("DJ_RUNNER_UNDER_TEST") or str(Path(sys.executable).with_name("dj-runner"))
CORPORA = Path(__file__).resolve().parents[2] / "tests" / "data" / "corpora"
SUPPORT = Path(__file__).resolve().parent / "support"
DOCS = CORPORA / "python-docs-excerpt.jsonl"  # 1,500 records
DEMO = CORPORA / "demo-dataset.jsonl"  # 6 records
#: exit codes the user is promised (docs/runner.md)
EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 2, 4, 6
RUN_TIMEOUT_S = 300


# --- a private sandbox per run -------------------------------------------------------------


def _interruptible() -> None:
    """Ctrl-C's default meaning in the child, as in a terminal's foreground job (a background
    job of a non-interactive shell, such as a script's pytest, starts with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass(frozen=True)
class Sandbox:
    """A private temp root (short: Ray's socket paths must fit) with its own HOME."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "PYTHONPATH", "DJ_RUNNER_OP_MODULES")
            and not k.startswith("PYTEST_")
        }
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        env.update(HOME=str(home), TMPDIR=str(self.root), RAY_TMPDIR=str(self.root))
        env.update(self.extra_env, **extra)
        return env

    def dj(
        self, *args: str, cwd: Path | None = None, timeout: float = RUN_TIMEOUT_S, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUNNER, *args],
            cwd=cwd or self.root,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, cwd: Path | None = None, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RUNNER, *args],
            cwd=cwd or self.root,
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a shell job is
            preexec_fn=_interruptible,
        )

    def processes(self) -> list[int]:
        """Live processes whose command line names this sandbox (Ray's, for one)."""
        mine = str(self.root).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if mine in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def close(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def new_sandbox(**extra_env: str) -> Sandbox:
    # These tests drive the runner on Ray (the engine every release under test has), so that
    # the same suite means the same thing against an older install; the local engine has its
    # own tests (test_engines.py). An older runner ignores the variable.
    return Sandbox(
        Path(tempfile.mkdtemp(prefix="djp-", dir="/tmp")),
        {"DJ_RUNNER_ENGINE": "ray", **extra_env},
    )


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = new_sandbox()
    yield box
    box.close()


def custom_ops_env() -> dict[str, str]:
    """The test ops (tests/runner/support: slow_mapper, gate_mapper) loaded as a user's custom
    ops."""
    return {"PYTHONPATH": str(SUPPORT), "DJ_RUNNER_OP_MODULES": "dj_test_ops"}


# --- helpers ---------------------------------------------------------------------------------


def recipe(path: Path, **keys: Any) -> Path:
    keys.setdefault("process", [{"whitespace_normalization_mapper": {}}])
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback (most recent call last)" not in stream, stream[-3000:]


def refused(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The run was refused with ``code`` and a message (no traceback) holding ``words``."""
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    no_traceback(proc)
    for word in words:
        assert word in proc.stderr, f"{word!r} not in:\n{proc.stderr[-3000:]}"


def succeeded(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == EXIT_OK, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    no_traceback(proc)


def events_text(work: Path) -> str:
    """The raw event log (any layout): enough to see that a kind of event happened."""
    parts = []
    for path in sorted((work / "events").glob("*")) if (work / "events").is_dir() else ():
        try:
            parts.append(path.read_text(errors="replace"))
        except OSError:
            continue
    return "".join(parts)


def docs_records() -> list[dict[str, Any]]:
    return read_jsonl(DOCS)


# --- one finished run, shared where reading it is safe --------------------------------------


@dataclass(frozen=True)
class FinishedRun:
    box: Sandbox
    data: Path  # the input (a private copy)
    work: Path
    output: Path
    proc: subprocess.CompletedProcess[str]
    leftover_processes: tuple[int, ...]  # the sandbox's processes a few seconds after exit
    leftover_tmp: tuple[str, ...]  # what the run left in its TMPDIR


FINISHED_MIN_LEN = 30


def finished_recipe(root: Path, name: str, **over: Any) -> Path:
    """The shared run's recipe: python-docs, auto partitioning for 2 CPUs (4 partitions)."""
    keys: dict[str, Any] = dict(
        project_name="finished",
        dataset_path=str(root / "data" / "docs.jsonl"),
        export_path=str(root / "out" / "result.jsonl"),
        np=2,
        keep_stats_in_res_ds=True,
        process=[{"text_length_filter": {"min_len": FINISHED_MIN_LEN}}],
    )
    keys.update(over)
    return recipe(root / name, **keys)


@pytest.fixture(scope="module")
def finished() -> Iterator[FinishedRun]:
    box = new_sandbox()
    (box.root / "data").mkdir()
    data = box.root / "data" / "docs.jsonl"
    shutil.copyfile(DOCS, data)
    work = box.root / "work"
    proc = box.dj("run", str(finished_recipe(box.root, "r.yaml")), "--work-dir", str(work))
    with contextlib.suppress(WaitTimeout):  # what is left is recorded; the m10 test judges it
        wait_for(lambda: not box.processes(), timeout=5, what="the run's processes to go")
    leftovers = tuple(box.processes())
    tmp = tuple(
        sorted(
            p.name
            for p in box.root.iterdir()
            if p.name not in ("home", "data", "out", "work", "r.yaml")
        )
    )
    yield FinishedRun(box, data, work, box.root / "out" / "result.jsonl", proc, leftovers, tmp)
    box.close()


def copy_work(run: FinishedRun, dest: Path) -> Path:
    shutil.copytree(run.work, dest, symlinks=True)
    (dest / ".lock").unlink(missing_ok=True)
    return dest


# --- never destroy what the user did not hand over -------------------------------------------


def test_C1_a_directory_export_never_deletes_the_users_files(sandbox):
    root = sandbox.root
    shutil.copyfile(DEMO, root / "in.jsonl")
    results = root / "results"
    (results / "old_run").mkdir(parents=True)
    (results / "notes.txt").write_text("my precious notes")
    (results / "old_run" / "keep.me").write_text("x")
    before = snapshot(results)
    proc = sandbox.dj(
        "run",
        str(recipe(root / "r.yaml", dataset_path=str(root / "in.jsonl"), export_path=str(results))),
    )
    assert snapshot(results) == before
    refused(proc, EXIT_USAGE, "export_path")
    # `export_path: ./` in a project directory: nothing of it may go
    project = root / "project"
    (project / "data").mkdir(parents=True)
    shutil.copyfile(DEMO, project / "data" / "in.jsonl")
    (project / "README.txt").write_text("important")
    recipe(project / "recipe.yaml", dataset_path="data/in.jsonl", export_path="./")
    before = snapshot(project)
    proc = sandbox.dj("run", "recipe.yaml", cwd=project)
    assert snapshot(project) == before
    refused(proc, EXIT_USAGE, "export_path")


def test_M1_an_export_onto_the_input_is_refused_and_the_input_kept(sandbox):
    data = sandbox.root / "in.jsonl"
    shutil.copyfile(DEMO, data)
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(data),
        export_path=str(data),
        process=[{"text_length_filter": {"min_len": 30}}],
    )
    proc = sandbox.dj("run", str(r))
    assert data.read_bytes() == DEMO.read_bytes()
    refused(proc, EXIT_USAGE, "export_path", "dataset_path")


def test_M15_an_export_inside_the_dataset_directory_is_refused_before_work(sandbox):
    data = sandbox.root / "data"
    data.mkdir()
    shutil.copyfile(DEMO, data / "a.jsonl")
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(data),
        export_path=str(data / "out" / "result.jsonl"),
    )
    proc = sandbox.dj("run", str(r))
    assert sorted(p.name for p in data.iterdir()) == ["a.jsonl"]  # no work dir read back
    refused(proc, EXIT_USAGE, "export_path", "dataset directory")


def test_m11_a_project_name_never_escapes_the_export_directory(sandbox):
    out = sandbox.root / "a" / "b" / "out"
    r = recipe(
        sandbox.root / "r.yaml",
        project_name="../../../escaped/evil",
        dataset_path=str(DEMO),
        export_path=str(out / "result.jsonl"),
    )
    proc = sandbox.dj("run", str(r))
    assert not (sandbox.root / "escaped").exists()
    refused(proc, EXIT_USAGE, "project_name")


def test_m12_two_recipes_without_a_project_name_exporting_to_one_directory_both_run(sandbox):
    root = sandbox.root
    out = root / "shared"
    a = recipe(root / "a.yaml", dataset_path=str(DEMO), export_path=str(out / "a.jsonl"))
    b = recipe(
        root / "b.yaml",
        dataset_path=str(CORPORA / "alpaca-cot.jsonl"),
        export_path=str(out / "b.jsonl"),
    )
    succeeded(sandbox.dj("run", str(a)))
    succeeded(sandbox.dj("run", str(b)))
    assert len(read_jsonl(out / "a.jsonl")) == 6
    assert len(read_jsonl(out / "b.jsonl")) == 11


# --- never return silently wrong output ------------------------------------------------------


def test_M11_restart_without_job_json_never_reuses_stale_checkpoints(finished, sandbox):
    succeeded(finished.proc)
    work = copy_work(finished, sandbox.root / "work")
    (work / "job.json").unlink()
    changed = finished_recipe(
        finished.box.root,
        "m11.yaml",
        export_path=str(sandbox.root / "out" / "result.jsonl"),
        process=[{"text_length_filter": {"min_len": 100}}],
    )
    proc = sandbox.dj("run", str(changed), "--work-dir", str(work), "--restart")
    succeeded(proc)
    expected = [r["text"] for r in docs_records() if len(r["text"]) >= 100]
    assert 0 < len(expected) < len(read_jsonl(finished.output))
    got = [r["text"] for r in read_jsonl(sandbox.root / "out" / "result.jsonl")]
    assert len(got) == len(expected) and got == expected


def test_M11_restart_over_a_damaged_job_json_starts_over(finished, sandbox):
    succeeded(finished.proc)
    work = copy_work(finished, sandbox.root / "work")
    with open(work / "job.json", "r+b") as fh:
        fh.truncate(50)
    changed = finished_recipe(
        finished.box.root,
        "m11-damaged.yaml",
        export_path=str(sandbox.root / "out" / "result.jsonl"),
        process=[{"text_length_filter": {"min_len": 10, "max_len": 120}}],
    )
    succeeded(sandbox.dj("run", str(changed), "--work-dir", str(work), "--restart"))
    expected = [r["text"] for r in docs_records() if 10 <= len(r["text"]) <= 120]
    assert 0 < len(expected) < len(read_jsonl(finished.output))
    assert [r["text"] for r in read_jsonl(sandbox.root / "out" / "result.jsonl")] == expected


def test_M12_a_lost_plan_never_pairs_old_checkpoints_with_new_partitions(finished, sandbox):
    succeeded(finished.proc)
    work = copy_work(finished, sandbox.root / "work")
    (work / "plan.json").unlink()
    # one CPU plans 2 partitions where the first run planned 4
    one_cpu = finished_recipe(
        finished.box.root, "m12.yaml", export_path=str(sandbox.root / "out" / "result.jsonl"), np=1
    )
    succeeded(sandbox.dj("run", str(one_cpu), "--work-dir", str(work)))
    got = [r["text"] for r in read_jsonl(sandbox.root / "out" / "result.jsonl")]
    assert got == [r["text"] for r in read_jsonl(finished.output)]


def test_M17_files_added_to_a_directory_dataset_are_refused_on_rerun(sandbox):
    data = sandbox.root / "in"
    data.mkdir()
    shutil.copyfile(DEMO, data / "a.jsonl")
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(data),
        export_path=str(sandbox.root / "out" / "r.jsonl"),
    )
    succeeded(sandbox.dj("run", str(r)))
    shutil.copyfile(CORPORA / "alpaca-cot.jsonl", data / "b.jsonl")
    refused(sandbox.dj("run", str(r)), EXIT_REFUSED, "b.jsonl")


def test_M5_a_text_key_no_record_has_is_refused_naming_it(sandbox):
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(CORPORA / "alpaca-cot.jsonl"),
        export_path=str(sandbox.root / "out" / "r.jsonl"),
        text_keys="txt",
        process=[{"text_length_filter": {"min_len": 10}}],
    )
    proc = sandbox.dj("run", str(r))
    assert not (sandbox.root / "out" / "r.jsonl").exists()
    refused(proc, EXIT_USAGE, "text_keys", "txt")


TYPED_ROWS = {
    "text": ["row one here", "row two here"],
    "blob": pa.array([b"\x00\x01\x02", b"\xff\xfe"], pa.binary()),
    "at": pa.array(
        [dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime(1999, 12, 31, 23, 59, 59)],
        pa.timestamp("us"),
    ),
    "day": pa.array([dt.date(2024, 2, 29), dt.date(1970, 1, 1)], pa.date32()),
    "amount": pa.array([decimal.Decimal("12.34"), decimal.Decimal("-0.01")], pa.decimal128(10, 2)),
}


def test_M16_jsonl_checkpoints_keep_binary_temporal_and_decimal_columns(sandbox):
    source = pa.table(TYPED_ROWS)
    pq.write_table(source, sandbox.root / "typed.parquet")
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(sandbox.root / "typed.parquet"),
        export_path=str(sandbox.root / "out" / "result.parquet"),
        storage_format="jsonl",
    )
    succeeded(sandbox.dj("run", str(r)))
    out = pq.read_table(sandbox.root / "out" / "result.parquet")
    for name in ("blob", "at", "day", "amount"):
        assert out.column(name).type == source.column(name).type, name
        assert out.column(name).to_pylist() == source.column(name).to_pylist(), name


def test_m13_exports_keep_nested_fields_and_binary_values(sandbox):
    root = sandbox.root
    nested = root / "nested.jsonl"
    nested.write_text(
        "".join(
            json.dumps({"text": f"record number {i}", "meta": {"lang": "en", "n": i}}) + "\n"
            for i in range(3)
        )
    )
    r = recipe(root / "n.yaml", dataset_path=str(nested), export_path=str(root / "n" / "r.parquet"))
    succeeded(sandbox.dj("run", str(r)))
    meta = pq.read_table(root / "n" / "r.parquet").column("meta")
    assert pa.types.is_struct(meta.type), meta.type
    assert meta.to_pylist() == [{"lang": "en", "n": i} for i in range(3)]
    # binary values in a JSONL export: base64, never a Python repr
    pq.write_table(
        pa.table({"text": TYPED_ROWS["text"], "blob": TYPED_ROWS["blob"]}), root / "b.parquet"
    )
    r = recipe(
        root / "b.yaml",
        dataset_path=str(root / "b.parquet"),
        export_path=str(root / "b" / "r.jsonl"),
    )
    succeeded(sandbox.dj("run", str(r)))
    blobs = [rec["blob"] for rec in read_jsonl(root / "b" / "r.jsonl")]
    assert [base64.b64decode(b) for b in blobs] == TYPED_ROWS["blob"].to_pylist()


def test_M4_a_run_chains_on_the_output_of_a_run_that_kept_its_stats(finished, sandbox):
    succeeded(finished.proc)
    stage1 = read_jsonl(finished.output)
    assert all("__dj__stats__" in rec for rec in stage1)
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(finished.output),
        export_path=str(sandbox.root / "out" / "result.jsonl"),
        process=[{"text_length_filter": {"min_len": 100}}],
    )
    succeeded(sandbox.dj("run", str(r)))
    got = [r["text"] for r in read_jsonl(sandbox.root / "out" / "result.jsonl")]
    expected = [r["text"] for r in stage1 if len(r["text"]) >= 100]
    assert 0 < len(expected) < len(stage1) and got == expected


# --- every bad input gets a clear error, early -----------------------------------------------


def test_M2_a_lone_surrogate_goes_to_rejects_and_the_good_records_are_kept(sandbox):
    data = sandbox.root / "surr.jsonl"
    data.write_bytes(
        b'{"text": "good one", "meta": "a"}\n'
        b'{"text": "lone \\ud800 escape in text", "meta": "b"}\n'
        b'{"text": "bad meta", "meta": "lone \\udc00 in meta"}\n'
        b'{"text": "cesu surrogate bytes \xed\xa0\x80 here", "meta": "c"}\n'
        b'{"text": "good two", "meta": "d"}\n'
    )
    work = sandbox.root / "work"
    out = sandbox.root / "out" / "result.jsonl"
    r = recipe(sandbox.root / "r.yaml", dataset_path=str(data), export_path=str(out))
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    assert [rec["text"] for rec in read_jsonl(out)] == ["good one", "good two"]
    rejects = [rec for path in (work / "rejects").glob("*.jsonl") for rec in read_jsonl(path)]
    assert len(rejects) == 3
    assert all("surr.jsonl" in json.dumps(rec) for rec in rejects)


def test_M8_a_corrupt_input_file_is_one_line_naming_it(sandbox):
    root = sandbox.root
    packed = gzip.compress(DOCS.read_bytes())
    (root / "trunc.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (root / "notgz.jsonl.gz").write_bytes(b"not gzip\n")
    (root / "arrfirst.json").write_bytes(b'[1,2]\n{"text": "a real record"}\n')
    for name in ("notgz.jsonl.gz", "trunc.jsonl.gz", "arrfirst.json"):
        r = recipe(
            root / "r.yaml",
            dataset_path=str(root / name),
            export_path=str(root / "o" / name / "r.jsonl"),
        )
        proc = sandbox.dj("run", str(r))
        assert proc.returncode in (1, 2), (name, proc.returncode, proc.stderr[-3000:])
        no_traceback(proc)
        assert name in proc.stderr, (name, proc.stderr[-3000:])


def _read_only_dir(path: Path) -> list[str]:
    """A command prefix that runs its command with ``path`` read-only (even for root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("root, and no unshare to make a read-only mount")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"root, and unshare -m is not permitted here: {probe.stderr!r}")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(path)]


def test_M9_a_read_only_export_location_is_refused_before_any_work(sandbox):
    ro = sandbox.root / "ro"
    prefix = _read_only_dir(ro)
    work = sandbox.root / "work"
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(ro / "result.jsonl"),
        work_dir=str(work),
    )
    proc = subprocess.run(
        [*prefix, RUNNER, "run", str(r)],
        cwd=sandbox.root,
        env=sandbox.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    refused(proc, EXIT_USAGE, "export_path", str(ro))
    assert not (work / "checkpoints").exists() or not any((work / "checkpoints").iterdir())


def _validate_refuses(sandbox: Sandbox, text: str, *words: str) -> None:
    path = sandbox.root / "v.yaml"
    path.write_text(text)
    refused(sandbox.dj("validate", str(path)), EXIT_USAGE, *words)


def _base_yaml(sandbox: Sandbox) -> str:
    return f"dataset_path: {DEMO}\nexport_path: {sandbox.root / 'out' / 'r.jsonl'}\n"


def test_M10_an_invalid_regex_fails_validation_naming_the_key(sandbox):
    _validate_refuses(
        sandbox,
        _base_yaml(sandbox) + 'process:\n  - clean_email_mapper: {pattern: "("}\n',
        "process[0].clean_email_mapper.pattern",
    )


def test_m2_non_finite_numbers_fail_validation(sandbox):
    ops = "process:\n  - whitespace_normalization_mapper:\n"
    for key, value in (("max_partition_size_mb", ".inf"), ("retry_base_delay_s", ".nan")):
        _validate_refuses(sandbox, _base_yaml(sandbox) + f"{key}: {value}\n" + ops, key)


def test_m3_validate_refuses_a_missing_dataset_and_an_empty_glob(sandbox):
    ops = "process:\n  - whitespace_normalization_mapper:\n"
    export = f"export_path: {sandbox.root / 'out' / 'r.jsonl'}\n"
    for path in (sandbox.root / "nope" / "x.jsonl", sandbox.root / "none-*.jsonl"):
        _validate_refuses(sandbox, f"dataset_path: {path}\n" + export + ops, "dataset_path")


def test_M14_a_malformed_or_unreachable_ray_address_exits_2_in_bounded_time(sandbox):
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(sandbox.root / "o" / "r.jsonl"),
    )
    refused(sandbox.dj("run", str(r), "--ray-address", "foo"), EXIT_USAGE, "foo")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    try:
        proc = sandbox.dj(
            "run",
            str(r),
            "--ray-address",
            f"127.0.0.1:{port}",
            timeout=90,
            DJ_RUNNER_RAY_CONNECT_TIMEOUT_S="5",
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"no answer after {time.monotonic() - started:.0f} s for an unreachable address"
        )
    refused(proc, EXIT_USAGE, f"127.0.0.1:{port}")


def test_m1_a_recipe_that_is_not_utf8_is_a_one_line_error(sandbox):
    path = sandbox.root / "latin1.yaml"
    path.write_bytes(
        b"# caf\xe9\n"
        + _base_yaml(sandbox).encode()
        + b"process: [whitespace_normalization_mapper]\n"
    )
    refused(sandbox.dj("validate", str(path)), EXIT_USAGE, "UTF-8")


@dataclass(frozen=True)
class InterruptedRun:
    """A slow run observed while it ran (its listening sockets), then stopped with Ctrl-C."""

    box: Sandbox
    work: Path
    sockets: dict[int, list[str]] | None  # pid -> listening addresses; None: never saw tasks
    second_run: subprocess.CompletedProcess[str] | None  # a second run on the same work dir
    returncode: int | None
    stderr: str


def _is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


def _second_run(box: Sandbox, r: Path, work: Path) -> subprocess.CompletedProcess[str] | None:
    """Another run on the busy work dir (the first run is held at a closed gate meanwhile),
    given 120 s to answer; None when it did not answer by then."""
    proc = box.popen("run", str(r), "--work-dir", str(work))
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.fixture(scope="module")
def interrupted() -> Iterator[InterruptedRun]:
    box = new_sandbox(**custom_ops_env())
    work = box.root / "work"
    r = recipe(
        box.root / "r.yaml",
        project_name="slow",
        dataset_path=str(CORPORA / "alpaca-cot.jsonl"),
        export_path=str(box.root / "out" / "r.jsonl"),
        partition_size=1,
        np=2,
        # Every partition waits at a gate the test never opens (bounded: 600 s), so the run is
        # still busy when the second run and Ctrl-C come, however slow the machine.
        process=[
            {"gate_mapper": {"marker": "", "state_dir": str(box.root), "timeout_s": 600.0}},
            {"whitespace_normalization_mapper": {}},
        ],
    )
    proc = box.popen("run", str(r), "--work-dir", str(work))
    sockets = second = None
    try:

        def tasks_running() -> dict[int, list[str]]:
            pids = [proc.pid, *descendants(proc.pid)]
            busy = [
                p
                for p in pids
                if cmdline(p).startswith(("ray::partition_task_entry", "ray::_partition_task"))
            ]
            socks = listening(pids)
            return socks if busy and sum(map(len, socks.values())) >= 5 else {}

        try:
            sockets = wait_for(tasks_running, timeout=180, what="partition tasks of the slow run")
        except WaitTimeout:
            sockets = None
        if sockets is not None:
            second = _second_run(box, r, work)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        try:
            returncode = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    stderr = proc.stderr.read() if proc.stderr else ""
    yield InterruptedRun(box, work, sockets, second, returncode, stderr)
    box.close()


def test_m4_ctrl_c_stops_cleanly_without_a_traceback(interrupted):
    assert interrupted.sockets is not None, "the run never got to run its partition tasks"
    assert "Traceback" not in interrupted.stderr and "KeyboardInterrupt" not in interrupted.stderr
    assert "*** SIG" not in interrupted.stderr, interrupted.stderr[-3000:]
    assert interrupted.returncode == EXIT_INTERRUPTED, interrupted.stderr[-3000:]


# --- the embedded Ray is not an open door ----------------------------------------------------


def test_M6_everything_the_embedded_ray_opens_listens_on_loopback_only(interrupted):
    assert interrupted.sockets is not None, "the run never got to run its partition tasks"
    exposed = {
        f"{pid} {cmdline(pid)[:60]}": [a for a in addrs if not _is_loopback(a)]
        for pid, addrs in interrupted.sockets.items()
    }
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"


def test_M7_modules_in_the_current_directory_never_run_in_the_workers(sandbox):
    cwd = sandbox.root / "cwd"
    cwd.mkdir()
    for name in ("gzip", "difflib"):
        (cwd / f"{name}.py").write_text(
            "import os\n"
            f"open(os.path.join(os.path.dirname(__file__), 'RAN-{name}-' + str(os.getpid())), 'w').close()\n"
            f"raise ImportError('the {name}.py of the current directory ran')\n"
        )
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(DEMO),
        export_path=str(sandbox.root / "out" / "r.jsonl"),
        process=[{"fix_unicode_mapper": {}}],
    )
    proc = sandbox.dj("run", str(r), cwd=cwd)
    assert sorted(p.name for p in cwd.iterdir()) == ["difflib.py", "gzip.py"]
    succeeded(proc)


def test_m10_a_finished_run_leaves_no_process_and_no_ray_session_behind(finished):
    succeeded(finished.proc)
    assert finished.leftover_processes == (), [cmdline(p) for p in finished.leftover_processes]
    assert finished.leftover_tmp == (), finished.leftover_tmp


# --- inspection commands ---------------------------------------------------------------------


def test_m5_inspection_piped_into_a_closed_pipe_is_quiet(finished):
    succeeded(finished.proc)
    for args in (("events", str(finished.work)), ("report", "--json", str(finished.work))):
        read_end, write_end = os.pipe()
        os.close(read_end)  # like `| head` that has already gone
        try:
            proc = subprocess.run(
                [RUNNER, *args],
                stdout=write_end,
                stderr=subprocess.PIPE,
                env=finished.box.env(),
                text=True,
                timeout=60,
            )
        finally:
            os.close(write_end)
        assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_m7_inspection_of_a_directory_that_is_no_work_dir_exits_2(sandbox):
    empty = sandbox.root / "empty"
    empty.mkdir()
    missing = sandbox.root / "missing"
    for args in (
        ("status", str(empty)),
        ("status", "--json", str(empty)),
        ("report", str(empty)),
        ("report", "--json", str(empty)),
        ("events", str(missing)),
        ("events", "--follow", str(missing)),
    ):
        try:
            proc = sandbox.dj(*args, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dj-runner {' '.join(args[:-1])} waited 30 s on {args[-1]}")
        assert proc.returncode == EXIT_USAGE, (args, proc.returncode, proc.stdout, proc.stderr)
        no_traceback(proc)


def test_m14_after_the_input_changed_the_advice_is_never_to_resume(sandbox):
    data = sandbox.root / "in.jsonl"
    shutil.copyfile(CORPORA / "alpaca-cot.jsonl", data)
    work = sandbox.root / "work"
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(data),
        export_path=str(sandbox.root / "out" / "r.jsonl"),
        partition_size=4,
    )
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    # a partition to recompute from the input, whose content changes but not its size or time
    shutil.rmtree(work / "checkpoints" / "p00001")
    st = data.stat()
    lines = data.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].swapcase()
    data.write_bytes(b"".join(lines))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    proc = sandbox.dj("run", str(r), "--work-dir", str(work))
    assert "same command" not in proc.stderr, proc.stderr[-3000:]
    refused(proc, EXIT_REFUSED, str(data))


# --- shared with the hardening issue ---------------------------------------------------------


def test_C2_a_second_run_on_a_busy_work_dir_is_refused_at_once(interrupted):
    assert interrupted.sockets is not None, "the run never got to run its partition tasks"
    second = interrupted.second_run
    assert second is not None, "the second run did not answer within 120 s"
    refused(second, 5, "pid")


def test_m6_events_refuses_an_unknown_type_and_a_negative_partition(finished):
    succeeded(finished.proc)
    for args in (("--type", "no_such_type"), ("-p", "-5")):
        proc = subprocess.run(
            [RUNNER, "events", str(finished.work), *args],
            capture_output=True,
            text=True,
            env=finished.box.env(),
            timeout=60,
        )
        refused(proc, EXIT_USAGE, args[1])
    followed = subprocess.run(
        [RUNNER, "events", str(finished.work), "-p", "1", "--follow", "--until-done", "--json"],
        capture_output=True,
        text=True,
        env=finished.box.env(),
        timeout=60,
    )
    succeeded(followed)
    shown = [json.loads(line) for line in followed.stdout.splitlines() if line.strip()]
    assert shown and {ev.get("partition_id") for ev in shown} == {1}, followed.stdout[-3000:]


def test_M5_records_with_missing_or_null_text_are_rejected_and_counted(sandbox):
    data = sandbox.root / "in.jsonl"
    data.write_text(
        '{"text": "a perfectly valid record", "id": 1}\n'
        '{"meta": "a record without a text field", "id": 2}\n'
        '{"text": null, "id": 3}\n'
        '{"text": "valid again", "id": 4}\n'
    )
    work = sandbox.root / "work"
    out = sandbox.root / "out" / "r.jsonl"
    r = recipe(sandbox.root / "r.yaml", dataset_path=str(data), export_path=str(out))
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    assert [rec["id"] for rec in read_jsonl(out)] == [1, 4]
    assert json.loads((work / "result.json").read_text())["rejected"] == 2


def test_M3_the_rejected_count_survives_a_global_op_and_a_rerun(sandbox):
    data = sandbox.root / "in.jsonl"
    good = [json.dumps({"text": f"record {i % 4} is fine", "id": i}) for i in range(8)]
    bad = ['{"text": "trunc', "[1, 2, 3]", "42"]
    data.write_text("\n".join([*good[:3], bad[0], *good[3:6], bad[1], bad[2], *good[6:]]) + "\n")
    work = sandbox.root / "work"
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(data),
        export_path=str(sandbox.root / "out" / "r.jsonl"),
        process=[{"whitespace_normalization_mapper": {}}, {"document_deduplicator": {}}],
    )
    for _ in ("first run", "rerun"):
        succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
        assert json.loads((work / "result.json").read_text())["rejected"] == 3
    assert len(read_jsonl(sandbox.root / "out" / "r.jsonl")) == 4  # the duplicates went


@dataclass(frozen=True)
class RecomputedRun:
    """The shared run's work dir with one partition's checkpoints gone: a rerun killed at its
    start (its status then read), then a rerun to the end (its report then read)."""

    status_after_kill: subprocess.CompletedProcess[str]
    finished_rerun: subprocess.CompletedProcess[str]
    report: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def recomputed(finished) -> Iterator[RecomputedRun]:
    succeeded(finished.proc)
    box = new_sandbox()
    work = copy_work(finished, box.root / "work")
    shutil.rmtree(work / "checkpoints" / "p00001")
    r = finished_recipe(finished.box.root, "again.yaml", export_path=str(box.root / "out.jsonl"))

    def starts() -> int:  # a job's first event; a rerun's comes before its Ray starts
        text = events_text(work)
        return text.count('"job_start"') + text.count('"job_restart"')

    before = starts()
    proc = box.popen("run", str(r), "--work-dir", str(work))
    try:
        wait_for(
            lambda: starts() > before or proc.poll() is not None,
            timeout=120,
            interval=0.02,
            what="the rerun's first event",
        )
        assert proc.poll() is None, "the rerun ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    status = box.dj("status", str(work), timeout=60)
    rerun = box.dj("run", str(r), "--work-dir", str(work))
    report = box.dj("report", "--json", str(work), timeout=60)
    yield RecomputedRun(status, rerun, report)
    box.close()


def test_M13_status_of_a_killed_rerun_is_never_the_previous_success(recomputed):
    shown = recomputed.status_after_kill.stdout
    assert "succeeded" not in shown, shown
    assert "resumable: yes" in shown, shown


def test_m8_report_counts_each_partition_once_after_a_recompute(recomputed):
    succeeded(recomputed.finished_rerun)
    ops = json.loads(recomputed.report.stdout)["ops"]
    assert [(op["op_name"], op["rows_in"]) for op in ops] == [("text_length_filter", 1500)]


def three_mappers_and_a_filter(sandbox: Sandbox) -> tuple[Path, Path, Path]:
    """A recipe of three mappers and a filter, every_op, partitions of 4: (recipe, work dir,
    export)."""
    work = sandbox.root / "work"
    out = sandbox.root / "out" / "r.jsonl"
    r = recipe(
        sandbox.root / "r.yaml",
        dataset_path=str(CORPORA / "alpaca-cot.jsonl"),
        export_path=str(out),
        partition_size=4,
        checkpoint={"enabled": True, "strategy": "every_op"},
        process=[
            {"whitespace_normalization_mapper": {}},
            {"clean_email_mapper": {}},
            {"clean_links_mapper": {}},
            {"text_length_filter": {"min_len": 5}},
        ],
    )
    return r, work, out


def test_m9_a_damaged_checkpoint_is_reported_but_pruned_ones_are_not(sandbox):
    r, work, out = three_mappers_and_a_filter(sandbox)
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    first = out.read_bytes()
    (final,) = (work / "checkpoints" / "p00001").glob("op004.*")
    with open(final, "r+b") as fh:
        fh.truncate(final.stat().st_size // 2)
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    assert out.read_bytes() == first
    shown = sandbox.dj("events", str(work), "-t", "checkpoint_invalid", timeout=60).stdout
    assert "op004" in shown, shown  # the damaged one is reported
    for pruned in ("op001", "op002", "op003"):  # older ones, deleted on purpose, are not
        assert pruned not in shown, shown


def test_a_damaged_base_of_a_final_selection_is_found_before_the_export(sandbox):
    """The final checkpoint after a filter is a selection of the full one after the last
    mapper (docs/runner.md, "Selection checkpoints"). Damage that base after a run: the rerun's
    check of the final checkpoints finds it, names it, and recomputes the partition."""
    r, work, out = three_mappers_and_a_filter(sandbox)
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    first = out.read_bytes()
    pdir = work / "checkpoints" / "p00001"
    records = [json.loads(line) for line in (pdir / "commits.jsonl").read_text().splitlines()]
    final = max(records, key=lambda rec: rec["step"])
    assert final["file"].startswith("op004") and final["base_file"].startswith("op003")
    base = pdir / final["base_file"]
    with open(base, "r+b") as fh:
        fh.truncate(base.stat().st_size // 2)
    succeeded(sandbox.dj("run", str(r), "--work-dir", str(work)))
    assert out.read_bytes() == first
    shown = sandbox.dj("events", str(work), "-t", "checkpoint_invalid", timeout=60).stdout
    assert "its base op003" in shown, shown
    for pruned in ("op001", "op002"):  # deleted on purpose, not reported
        assert pruned not in shown, shown
