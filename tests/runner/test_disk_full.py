"""A disk that fills during a job: exit 8 naming the path, committed work kept, resume identical.

No fakes: ``dj-runner run`` writes to a real, really full filesystem. Each test starts a private
user+mount namespace (``tests/harness/mountns.py``, ``unshare -rm``) and mounts a small tmpfs over the
work dir or the export dir, sized from a clean run's checkpoint sizes so that it fills at a
known point: half-way through the first stage, or at the export. The embedded Ray's temp dir
stays outside the tmpfs (``TMPDIR``). Then space is freed (the tmpfs remounted larger) and the
same command resumes in the same namespace; its output must be byte-identical to the clean run's.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dj_runner.contract import ExitCode
from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.workdir import WorkDir
from tests.harness.mountns import MountNamespace, unavailable

from conftest import run_cli, write_recipe

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

PARTITIONS = 8
ROWS = 2000
PROCESS = [
    {"whitespace_normalization_mapper": {}},
    {"clean_email_mapper": {}},
    {"text_length_filter": {"min_len": 20, "max_len": 20000}},
    {"document_deduplicator": {"lowercase": True}},
    {"words_num_filter": {"min_num": 5}},
]
HASHED = CheckpointKey(3, hashed=True)  # the first stage's target: rows hashed for the dedup
FINAL = CheckpointKey(len(PROCESS))
PAGE = 4096
#: Room for what is not a checkpoint: job.json, plan.json, claim, lock, status, the event log.
SMALL_FILES = 128 * 1024
ROOMY = 64 * 1024 * 1024


def make_corpus(path: Path) -> None:
    """2,000 records of 60-140 random words (about 1.3 MB; random text barely compresses, so
    checkpoint sizes are close to the text's), every fifth with an e-mail, some duplicates."""
    rng = random.Random(20261130)
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(alphabet, k=rng.randint(2, 9))) for _ in range(4000)]
    records = []
    for i in range(ROWS):
        text = " ".join(rng.choices(words, k=rng.randint(60, 140)))
        if i % 5 == 0:
            text += f"  contact me at user{i}@example.com "
        records.append({"text": text, "id": i})
    for i in range(0, ROWS, 37):
        records[(i * 7) % ROWS] = {**records[i], "id": (i * 7) % ROWS}
    with open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def recipe(path: Path, corpus: Path, export: Path) -> Path:
    return write_recipe(
        path,
        project_name="diskfull",
        dataset_path=str(corpus),
        export_path=str(export),
        np=1,  # one task at a time, in partition order: the disk fills at a known partition
        engine="ray",  # tasks write from their own processes, as on a cluster
        partition_size=ROWS // PARTITIONS,
        process=PROCESS,
    )


@dataclass(frozen=True)
class CleanRun:
    output: bytes
    #: every checkpoint's committed size, per partition and key
    sizes: dict[int, dict[CheckpointKey, int]]
    seconds: float


def commits_by_partition(work: Path) -> dict[int, list[Any]]:
    out = {}
    for d in sorted(WorkDir(work).checkpoints_dir.glob("p*")):
        out[int(d.name[1:])] = CheckpointDir(d, "parquet", "none").commits()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "data.jsonl"
    make_corpus(path)
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory, corpus) -> CleanRun:
    """The same recipe run to the end on an ordinary disk: the expected output and sizes."""
    tmp = tmp_path_factory.mktemp("clean")
    t0 = time.monotonic()
    proc = run_cli(
        "run", str(recipe(tmp / "r.yaml", corpus, tmp / "out.jsonl")), "--work-dir", str(tmp / "w")
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == ExitCode.OK, proc.stderr
    sizes = {
        pid: {c.key: c.bytes for c in commits}
        for pid, commits in commits_by_partition(tmp / "w").items()
    }
    assert sorted(sizes) == list(range(PARTITIONS))
    return CleanRun((tmp / "out.jsonl").read_bytes(), sizes, seconds)


@pytest.fixture
def ns(tmp_path) -> Any:
    """A mount namespace whose commands see a private Ray temp dir outside any tmpfs."""
    ray_tmp = tmp_path / "raytmp"
    ray_tmp.mkdir()
    with MountNamespace({**os.environ, "TMPDIR": str(ray_tmp)}) as namespace:
        yield namespace


def dj(ns: MountNamespace, *args: str) -> Any:
    return ns.run(sys.executable, "-m", "dj_runner.cli", *args, timeout=300)


def pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def events_since_last_start(ns: MountNamespace, work: Path) -> list[dict[str, Any]]:
    proc = dj(ns, "events", str(work), "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    starts = [i for i, e in enumerate(events) if e["event_type"] in ("job_start", "job_restart")]
    return events[starts[-1] :]


def assert_full_disk_failure(proc: Any, path_prefix: Path) -> str:
    """Exit 8, one clear line naming a path under ``path_prefix``; returns that line."""
    assert proc.returncode == ExitCode.NO_SPACE, proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(
        ln for ln in proc.stderr.splitlines() if ln.startswith("job ") and " failed: " in ln
    )
    assert "no space left on device" in line
    assert f"cannot write {path_prefix}" in line, line
    assert "free of" in line  # the space left, from statvfs
    assert "resume with the same command" in proc.stderr
    return line


def snapshot(ns: MountNamespace, work: Path, to: Path) -> Path:
    """Copy the work dir out of the namespace's tmpfs, to check it from this process."""
    ns.check("cp", "-a", str(work), str(to))
    return to


def assert_commits_intact(work: Path) -> tuple[list[int], list[int]]:
    """Every partition's newest commit loads whole (size, checksum, rows as committed) and no
    temporary is left; returns the partitions hashed for the dedup, and those with a commit.
    (A partition whose first write failed has a directory and no commit: it has none to load.)"""
    committed = {pid: cs for pid, cs in commits_by_partition(work).items() if cs}
    for pid, commits in committed.items():
        store = CheckpointDir(WorkDir(work).checkpoint_dir(pid), "parquet", "none")
        newest = max(commits, key=lambda c: c.key)
        assert store.load(newest).num_rows == newest.rows
        assert not list(store.dir.glob(".*.tmp-*")), "a failed write left its temporary"
    hashed = sorted(pid for pid, cs in committed.items() if max(c.key for c in cs) >= HASHED)
    return hashed, sorted(committed)


def resume_identically(
    ns: MountNamespace, rec: Path, work: Path, export: Path, clean: CleanRun, outside: Path
) -> list[dict[str, Any]]:
    """Run the same command again: exit 0 and the clean run's bytes (a directory export's
    shards, in order); returns the run's events."""
    resumed = dj(ns, "run", str(rec), "--work-dir", str(work))
    assert resumed.returncode == ExitCode.OK, resumed.stderr
    copy = outside / "output.copy"
    files = f"{export}/part-*.jsonl" if export.suffix == "" else str(export)
    ns.check("sh", "-c", f"cat {files} > {copy}")
    assert copy.read_bytes() == clean.output
    return events_since_last_start(ns, work)


def test_a_disk_that_fills_mid_job_fails_with_exit_8_and_keeps_every_committed_checkpoint(
    ns, tmp_path, corpus, clean
):
    vol = tmp_path / "vol"  # the tmpfs: work dir and export both
    work, export = vol / "work", vol / "out.jsonl"
    rec = recipe(tmp_path / "r.yaml", corpus, export)
    # Room for the first half of the partitions' hashed checkpoints (the first stage keeps one
    # per partition), one partition's two checkpoints in flight, and the small files.
    half = sum(clean.sizes[pid][HASHED] for pid in range(PARTITIONS // 2))
    biggest = max(size for per in clean.sizes.values() for size in per.values())
    size = pages(SMALL_FILES + half + 2 * biggest)
    ns.mount_tmpfs(vol, size)

    t0 = time.monotonic()
    failed = dj(ns, "run", str(rec), "--work-dir", str(work))
    fail_s = time.monotonic() - t0
    line = assert_full_disk_failure(failed, WorkDir(work).checkpoints_dir)
    used, total = ns.usage(vol)

    # The job stopped at the first failed write: no retry, one partition failed, none after.
    events = events_since_last_start(ns, work)
    kinds = [e["event_type"] for e in events]
    assert "partition_retry" not in kinds and kinds.count("partition_failed") == 1
    assert "job_failed" in kinds
    stop_s = events[kinds.index("job_failed")]["timestamp"] - events[0]["timestamp"]
    first_failure = next(e for e in events if e["event_type"] == "partition_failed")
    react_s = events[kinds.index("job_failed")]["timestamp"] - first_failure["timestamp"]
    status = json.loads(dj(ns, "status", str(work), "--json").stdout)
    assert status["state"] == "failed" and "no space left on device" in status["error"]["message"]

    hashed, started = assert_commits_intact(snapshot(ns, work, tmp_path / "after-failure"))
    assert 1 <= len(hashed) < PARTITIONS, (hashed, line)  # it filled mid-way, not at once
    assert ns.run("test", "-e", str(export)).returncode == 1  # no export, not even a part

    # Space freed: the same command resumes from what was committed.
    ns.resize(vol, ROOMY)
    t0 = time.monotonic()
    events = resume_identically(ns, rec, work, export, clean, tmp_path)
    resume_s = time.monotonic() - t0
    from_source = {e["partition_id"] for e in events if e["event_type"] == "partition_start"}
    assert from_source == set(range(PARTITIONS)) - set(started)  # committed work not redone
    print(
        f"\nmid-job: tmpfs {size} bytes; clean run {clean.seconds:.1f}s; failed after "
        f"{fail_s:.1f}s with {used}/{total} bytes used, partitions {hashed} hashed, "
        f"{started} with a checkpoint; job_failed {react_s * 1000:.0f} ms after the failed "
        f"write's partition_failed, {stop_s:.1f}s after job_start: {line}\n"
        f"  resumed in {resume_s:.1f}s"
    )


@pytest.mark.parametrize("export_name", ["out.jsonl", "out"], ids=["file", "directory"])
def test_an_export_that_fills_its_disk_fails_with_exit_8_and_leaves_no_partial_file(
    ns, tmp_path, corpus, clean, export_name
):
    vol = tmp_path / "vol"  # the tmpfs: the export only; the work dir is on an ordinary disk
    work, export = tmp_path / "work", vol / export_name
    rec = recipe(tmp_path / "r.yaml", corpus, export)
    size = pages(len(clean.output) // 2)
    ns.mount_tmpfs(vol, size)

    t0 = time.monotonic()
    failed = dj(ns, "run", str(rec), "--work-dir", str(work))
    fail_s = time.monotonic() - t0
    line = assert_full_disk_failure(failed, export)
    # the export's own name (a directory's shard), not its temporary's
    assert re.search(rf"cannot write {re.escape(str(export))}(/part-\d{{5}}\.jsonl)?: ", line)
    assert ns.check("ls", "-A", str(vol)) == ""  # no partial export, no temporary
    # Every partition's final checkpoint was committed before the export began.
    for pid in range(PARTITIONS):
        store = CheckpointDir(WorkDir(work).checkpoint_dir(pid), "parquet", "none")
        assert store.newest_key() == FINAL
        assert store.newest_valid() is not None
    status = json.loads(dj(ns, "status", str(work), "--json").stdout)
    assert status["state"] == "failed" and status["stage"]["op"] == "export"

    ns.resize(vol, ROOMY)
    t0 = time.monotonic()
    kinds = [e["event_type"] for e in resume_identically(ns, rec, work, export, clean, tmp_path)]
    resume_s = time.monotonic() - t0
    assert "partition_start" not in kinds and "partition_resume" not in kinds  # export only
    print(
        f"\nexport to {export_name}: tmpfs {size} bytes for a {len(clean.output)}-byte export; failed after "
        f"{fail_s:.1f}s: {line}\n  resumed in {resume_s:.1f}s"
    )


def test_a_disk_without_room_for_the_error_path_still_exits_8_and_resumes(
    ns, tmp_path, corpus, clean
):
    """Out of inodes: no new file can be made, not even status.json's or result.json's next
    version, so the error path finds the disk full too. It must still report, and resume."""
    vol = tmp_path / "vol"
    work, export = vol / "work", vol / "out.jsonl"
    rec = recipe(tmp_path / "r.yaml", corpus, export)
    # The mount root, the work dir and its ten small files and directories, then three per
    # partition (its directory, commits.jsonl, one checkpoint): room for about four partitions.
    ns.check("mkdir", "-p", str(vol))
    ns.check("mount", "-t", "tmpfs", "-o", f"size={ROOMY},nr_inodes=24", "tmpfs", str(vol))

    failed = dj(ns, "run", str(rec), "--work-dir", str(work))
    line = assert_full_disk_failure(failed, WorkDir(work).checkpoints_dir)
    assert "no free inodes" in line
    assert "warning: the run's end could not be recorded" in failed.stderr
    assert ns.run("test", "-e", str(WorkDir(work).result_path)).returncode == 1
    status = dj(ns, "status", str(work), "--json")
    assert status.returncode == 0, status.stderr
    # status.json keeps the last state it could be given; its runner is gone
    assert json.loads(status.stdout)["state"] == "interrupted"
    hashed, started = assert_commits_intact(snapshot(ns, work, tmp_path / "after-failure"))
    assert 1 <= len(hashed) < PARTITIONS, (hashed, line)

    ns.check("mount", "-o", "remount,nr_inodes=100000", str(vol))
    events = resume_identically(ns, rec, work, export, clean, tmp_path)
    from_source = {e["partition_id"] for e in events if e["event_type"] == "partition_start"}
    assert from_source == set(range(PARTITIONS)) - set(started)
    print(f"\ninodes: hashed {hashed}, started {started}: {line}")


def test_a_disk_full_before_the_job_starts_is_exit_8_before_any_work(ns, tmp_path, corpus):
    vol = tmp_path / "vol"
    work, export = vol / "work", vol / "out.jsonl"
    rec = recipe(tmp_path / "r.yaml", corpus, export)
    ns.mount_tmpfs(vol, 64 * 1024)
    filler = ns.run("sh", "-c", f"cat /dev/zero > {vol}/filler")  # ends when the disk is full
    assert "No space left on device" in filler.stderr
    assert ns.usage(vol)[0] == ns.usage(vol)[1]
    for command in ("validate", "run"):
        t0 = time.monotonic()
        proc = dj(ns, command, str(rec), "--work-dir", str(work))
        seconds = time.monotonic() - t0
        assert proc.returncode == ExitCode.NO_SPACE, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"error: cannot write {vol}" in proc.stderr  # the export's or the work dir's
        assert "no space left on device" in proc.stderr and "0 bytes free" in proc.stderr
    assert ns.check("ls", "-A", str(vol)).split() == ["filler"]  # nothing was written
    print(f"\nfull before start: run refused in {seconds:.1f}s")
