"""A work dir in object storage, on the real S3 server: runs, kills, races, faults, readers.

Every run is the real ``dj-runner`` command line in its own process, with the work dir (and the
input and the export, where said) in a bucket, as a user would run it; each must give the same
bytes as the same job run with everything on local disk.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from dj_runner.contract import ExitCode
from dj_runner.store.blobs import S3Blobs
from dj_runner.store.fencing import Superseded, take_claim
from dj_runner.store.lease import Lease
from dj_runner.store.location import S3Config, configure_s3
from dj_runner.store.workdir import WorkDir
from tests.harness.s3faults import FaultProxy
from tests.harness.s3server import ADMIN, S3Server
from tests.harness.waiting import wait_for

CLI = (sys.executable, "-m", "dj_runner.cli")
OPS = [
    {"whitespace_normalization_mapper": {}},
    {"text_length_filter": {"min_len": 5, "max_len": 20000}},
    {"document_deduplicator": {"lowercase": True}},
    {"words_num_filter": {"min_num": 2}},
]
#: The test-only ops (``slow_mapper``), loaded as a user's custom ops are.
TEST_OPS_ENV = {
    "PYTHONPATH": os.pathsep.join(
        filter(
            None,
            [
                str(Path(__file__).parents[1] / "runner" / "support"),
                os.environ.get("PYTHONPATH", ""),
            ],
        )
    ),
    "DJ_RUNNER_OP_MODULES": "dj_test_ops",
}
#: Short leases, so that a killed runner's successor takes over in seconds.
LEASE_ENV = {"DJ_RUNNER_S3_LEASE_TTL_S": "3"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 2,000 short documents with some duplicates, on local disk."""
    rng = random.Random(7)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "data",
        "flows",
        "in",
        "clean",
        "streams",
    ]
    lines = []
    for i in range(2000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
        lines.append(json.dumps({"text": f"doc {i % 1900}:  {text}", "id": i}))
    path = tmp_path_factory.mktemp("corpus") / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(tmp: Path, name: str, **keys: object) -> Path:
    path = tmp / f"{name}.yaml"
    body = {"project_name": name, "np": 2, "partition_size": 100, "process": OPS, **keys}
    path.write_text(yaml.safe_dump(body))
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus: Path) -> bytes:
    """The job with everything on local disk: the bytes every S3 run must give."""
    tmp = tmp_path_factory.mktemp("reference")
    path = recipe(tmp, "ref", dataset_path=str(corpus), export_path=str(tmp / "out.jsonl"))
    proc = cli("run", str(path), "--work-dir", str(tmp / "work"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    return (tmp / "out.jsonl").read_bytes()


def objects(server: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    from pyarrow.fs import FileSelector, FileType

    fs = server.filesystem()
    out = {}
    selector = FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == FileType.File:
            with fs.open_input_stream(info.path) as fh:
                out[info.path] = fh.read()
    return out


def commits(server: S3Server, bucket: str, prefix: str) -> int:
    """Commit records under a work dir in the bucket (one object each)."""
    from pyarrow.fs import FileSelector

    try:
        infos = server.filesystem().get_file_info(
            FileSelector(f"{bucket}/{prefix}/checkpoints", recursive=True, allow_not_found=True)
        )
    except OSError:
        return 0
    return sum(1 for i in infos if "/commits.jsonl/" in i.path and i.path.endswith(".json"))


def test_input_work_dir_and_export_all_in_s3_match_the_local_run(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, reference
):
    s3_server.put_object(s3_bucket, "in/data.jsonl", corpus.read_bytes())
    work = f"s3://{s3_bucket}/work/all"
    path = recipe(
        tmp_path,
        "all",
        dataset_path=f"s3://{s3_bucket}/in/data.jsonl",
        export_path=f"s3://{s3_bucket}/out/all.jsonl",
        work_dir=work,
    )
    env = s3_server.env()
    proc = cli("run", str(path), env=env)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert s3_server.get_object(s3_bucket, "out/all.jsonl") == reference
    assert not any(tmp_path.glob("**/checkpoints")), "a local work dir was made"
    stored = objects(s3_server, s3_bucket, "work/all")
    keys = {k.split("/work/all/", 1)[1] for k in stored}
    assert {
        "job.json",
        "plan.json",
        "status.json",
        "result.json",
        "claims/000000000001.json",
        ".lock",
    } <= keys
    assert any(k.startswith("checkpoints/p00000/commits.jsonl/") for k in keys)
    assert any(k.startswith("events/events-") for k in keys)
    # no secret in any object of the work dir
    assert not [k for k, v in stored.items() if ADMIN.secret_key.encode() in v]
    # the readers work on the bucket
    st = cli("status", work, "--json", env=env)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["state"] == "succeeded" and status["partitions"]["done"] == 20
    assert status["runner_alive"] is False
    ev = cli("events", work, "--json", env=env)
    assert ev.returncode == 0, ev.stderr
    types = [json.loads(line)["event_type"] for line in ev.stdout.splitlines()]
    assert types[0] == "job_start" and types[-1] == "job_complete"
    assert types.count("partition_complete") == 20
    follow = cli("events", work, "--follow", "--until-done", env=env, timeout=60)
    assert follow.returncode == 0 and "job_complete" in follow.stdout
    rep = cli("report", work, env=env)
    assert rep.returncode == 0 and "[succeeded]" in rep.stdout, rep.stderr
    # a second run finds the job done and changes nothing
    again = cli("run", str(path), env=env)
    assert again.returncode == ExitCode.OK, again.stderr
    assert s3_server.get_object(s3_bucket, "out/all.jsonl") == reference
    # retention works on the bucket: the final checkpoints only, then none
    final = cli("clean", work, "--checkpoints", "final", env=env)
    assert final.returncode == 0, final.stderr
    left = objects(s3_server, s3_bucket, "work/all/checkpoints")
    data = [k for k in left if "/commits.jsonl/" not in k]
    # per partition, the final checkpoint and the full one it selects rows of (the first)
    assert len(data) == 40, data
    assert sorted({k.rsplit("/", 1)[1].split("-")[0] for k in data}) == ["op001", "op004"], data
    gone = cli("clean", work, "--checkpoints", "none", env=env)
    assert gone.returncode == 0 and "bytes" in gone.stdout, gone.stderr
    assert not objects(s3_server, s3_bucket, "work/all/checkpoints")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kills_at_random_moments_then_resume_give_identical_bytes(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, reference, sig
):
    work = f"s3://{s3_bucket}/work/kill"
    out = tmp_path / "out.jsonl"
    ops = [{"slow_mapper": {"seconds": 0.01}}, *OPS]
    path = recipe(
        tmp_path,
        "kill",
        dataset_path=str(corpus),
        export_path=str(out),
        work_dir=work,
        max_retries=0,
        process=ops,
    )
    env = {**s3_server.env(), **LEASE_ENV, **TEST_OPS_ENV}
    ref_path = recipe(
        tmp_path,
        "killref",
        dataset_path=str(corpus),
        export_path=str(tmp_path / "ref.jsonl"),
        process=ops,
    )
    proc = cli("run", str(ref_path), "--work-dir", str(tmp_path / "refwork"), env=env)
    assert proc.returncode == ExitCode.OK, proc.stderr
    expected = (tmp_path / "ref.jsonl").read_bytes()
    rng = random.Random(20261207 + int(sig))
    kills = 0
    for _ in range(4):
        before = commits(s3_server, s3_bucket, "work/kill")
        runner = subprocess.Popen(
            [*CLI, "run", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **env},
        )
        target = before + rng.randint(1, 15)
        wait_for(
            lambda t=target, p=runner: (
                commits(s3_server, s3_bucket, "work/kill") >= t or p.poll() is not None
            ),
            180,
            "checkpoint commits in the bucket",
            interval=0.1,
        )
        if runner.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(runner.pid, signal.SIGKILL)
            else:
                runner.send_signal(signal.SIGTERM)
            kills += 1
        runner.wait(timeout=120)
        if runner.returncode == 0:
            break
    assert kills >= 2
    final = cli("run", str(path), env=env)
    assert final.returncode == ExitCode.OK, final.stderr
    assert out.read_bytes() == expected
    assert "already done" in final.stderr or "resum" in final.stderr


def test_two_runners_racing_on_one_s3_work_dir(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, reference
):
    work = f"s3://{s3_bucket}/work/race"
    outs = []
    procs = []
    env = {**s3_server.env(), **LEASE_ENV}
    for i in range(2):
        out = tmp_path / f"out{i}.jsonl"
        outs.append(out)
        path = recipe(
            tmp_path,
            f"race{i}",
            dataset_path=str(corpus),
            export_path=str(out),
            work_dir=work,
            project_name="race",
        )
        procs.append(
            subprocess.Popen(
                [*CLI, "run", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **env},
            )
        )
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [ExitCode.OK, ExitCode.LOCKED], results
    loser = next(err for code, err in results if code == ExitCode.LOCKED)
    assert "in use by run" in loser and "pid" in loser, loser
    winner = next(i for i, (code, _) in enumerate(results) if code == ExitCode.OK)
    assert outs[winner].read_bytes() == reference


def test_the_lease_excludes_a_second_holder_and_passes_on_when_released_or_dead(
    s3_server: S3Server, s3_bucket
):
    configure_s3(S3Config(endpoint_url=s3_server.endpoint, region=s3_server.region))
    os.environ.update(s3_server.env())
    work = WorkDir(f"s3://{s3_bucket}/work/lease")

    class Locked(Exception):
        pass

    def locked(holder: Any, waited: float) -> Exception:
        return Locked(holder)

    first = Lease(work, {"run_id": "first"}, ttl_s=2.0)
    first.acquire(0, locked)
    second = Lease(work, {"run_id": "second"}, ttl_s=2.0)
    with pytest.raises(Locked) as refused:
        second.acquire(0, locked, poll_s=0.1)
    assert refused.value.args[0] == {"run_id": "first"}
    first.release()
    second.acquire(0, locked, poll_s=0.1)  # a released lease is taken at once
    # the holder dies (no more renewals): a waiter takes over after the ttl, and the dead
    # holder's renewal, were it to come back, finds itself taken over
    second._stop.set()
    second._thread.join(timeout=5)
    third = Lease(work, {"run_id": "third"}, ttl_s=2.0)
    started = time.monotonic()
    third.acquire(10, locked, poll_s=0.1)
    assert time.monotonic() - started < 8
    assert work.blobs.replace(WorkDir.LOCK, b"{}", second._version or "") is None
    third.release()


def test_a_superseded_run_cannot_commit(s3_server: S3Server, s3_bucket):
    configure_s3(S3Config(endpoint_url=s3_server.endpoint, region=s3_server.region))
    os.environ.update(s3_server.env())
    root = f"s3://{s3_bucket}/work/fence"
    old = take_claim(root, "old")
    new = take_claim(root, "new")
    assert (old.epoch, new.epoch) == (1, 2)
    new.check_current()
    with pytest.raises(Superseded):
        old.check_current()
    # two writers appending to one commit log never overwrite each other's record
    blobs = S3Blobs(root)
    for i in range(5):
        blobs.append("log", {"i": i, "who": "a"})
        S3Blobs(root).append("log", {"i": i, "who": "b"})
    assert len(S3Blobs(root).records("log")) == 10


def test_503s_and_resets_on_the_work_dir_are_retried_with_identical_output(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, reference, s3_proxy: FaultProxy
):
    work = f"s3://{s3_bucket}/work/faults"
    out = tmp_path / "out.jsonl"
    path = recipe(tmp_path, "faults", dataset_path=str(corpus), export_path=str(out), work_dir=work)
    env = s3_server.env(endpoint=s3_proxy.endpoint)
    s3_proxy.fail_next(6, "PUT")
    s3_proxy.reset_next(3, "GET")
    proc = cli("run", str(path), env=env)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert out.read_bytes() == reference
    assert s3_proxy.pending() == 0, "the faults were not all met"
    ev = cli("events", work, "--json", "--type", "job_complete", env=s3_server.env())
    assert ev.returncode == 0, ev.stderr
    done = json.loads(ev.stdout.splitlines()[-1])
    assert done["s3_request_retries"] == 9  # each fault cost one retry, all counted


def test_a_missing_bucket_or_no_permission_on_the_work_dir_is_exit_2(
    tmp_path, s3_server: S3Server, s3_bucket, corpus
):
    from tests.harness.s3server import READER

    path = recipe(
        tmp_path,
        "nobucket",
        dataset_path=str(corpus),
        export_path=str(tmp_path / "o.jsonl"),
        work_dir="s3://dj-no-such-bucket/work",
    )
    proc = cli("run", str(path), env=s3_server.env())
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "work_dir s3://dj-no-such-bucket/work" in proc.stderr
    assert ADMIN.secret_key not in proc.stderr
    path = recipe(
        tmp_path,
        "readonly",
        dataset_path=str(corpus),
        export_path=str(tmp_path / "o.jsonl"),
        work_dir=f"s3://{s3_bucket}/work/ro",
    )
    proc = cli("run", str(path), env=s3_server.env(READER))
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "PutObject" in proc.stderr and READER.secret_key not in proc.stderr


def test_the_server_restarted_mid_job_is_retried_with_identical_output(
    tmp_path, s3_server: S3Server, s3_bucket, corpus
):
    work = f"s3://{s3_bucket}/work/restart"
    ops = [{"slow_mapper": {"seconds": 0.01}}, *OPS]
    out = tmp_path / "out.jsonl"
    path = recipe(
        tmp_path,
        "restart",
        dataset_path=str(corpus),
        export_path=str(out),
        work_dir=work,
        process=ops,
    )
    env = {**s3_server.env(), **TEST_OPS_ENV}
    ref = recipe(
        tmp_path,
        "restartref",
        dataset_path=str(corpus),
        export_path=str(tmp_path / "ref.jsonl"),
        process=ops,
    )
    proc = cli("run", str(ref), "--work-dir", str(tmp_path / "refwork"), env=env)
    assert proc.returncode == ExitCode.OK, proc.stderr
    runner = subprocess.Popen(
        [*CLI, "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    wait_for(
        lambda: commits(s3_server, s3_bucket, "work/restart") >= 5 or runner.poll() is not None,
        180,
        "the first commits in the bucket",
        interval=0.1,
    )
    assert runner.poll() is None, "the job ended before the server could be restarted"
    s3_server.restart(down_s=2.0)
    assert runner.wait(timeout=300) == ExitCode.OK, runner.stderr.read() if runner.stderr else ""
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    done = json.loads(s3_server.get_object(s3_bucket, "work/restart/status.json"))
    assert done["state"] == "succeeded"


def test_on_ray_the_workers_commit_to_the_bucket(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, reference
):
    """The Ray engine: every partition task opens the bucket itself (no shared filesystem)."""
    s3_server.put_object(s3_bucket, "in/ray.jsonl", corpus.read_bytes())
    work = f"s3://{s3_bucket}/work/ray"
    path = recipe(
        tmp_path,
        "ray",
        dataset_path=f"s3://{s3_bucket}/in/ray.jsonl",
        export_path=f"s3://{s3_bucket}/out/ray.jsonl",
        work_dir=work,
        engine="ray",
    )
    proc = cli("run", str(path), env=s3_server.env(), timeout=600)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert s3_server.get_object(s3_bucket, "out/ray.jsonl") == reference
    events = cli("events", work, "--json", env=s3_server.env())
    writers = {
        json.loads(line).get("process_id")
        for line in events.stdout.splitlines()
        if json.loads(line)["event_type"] == "checkpoint_save"
    }
    driver = {
        json.loads(line).get("process_id")
        for line in events.stdout.splitlines()
        if json.loads(line)["event_type"] == "job_start"
    }
    assert writers and not writers & driver, "checkpoints were not written by Ray workers"


def test_a_work_dir_listing_of_more_than_1000_objects_is_read_whole(s3_server: S3Server, s3_bucket):
    configure_s3(S3Config(endpoint_url=s3_server.endpoint, region=s3_server.region))
    os.environ.update(s3_server.env())
    blobs = S3Blobs(f"s3://{s3_bucket}/work/many")
    for i in range(1100):
        s3_server.put_object(s3_bucket, f"work/many/events/e-{i:05d}", b"x")
    keys = [e.key for e in blobs.list("events")]
    assert len(keys) == 1100 and keys[0] == "events/e-00000" and keys[-1] == "events/e-01099"


def test_a_store_without_conditional_writes_is_refused_as_a_work_dir(
    tmp_path, s3_server: S3Server, s3_bucket, corpus, s3_proxy: FaultProxy
):
    s3_proxy.refuse_conditional = True
    path = recipe(
        tmp_path,
        "nocond",
        dataset_path=str(corpus),
        export_path=str(tmp_path / "o.jsonl"),
        work_dir=f"s3://{s3_bucket}/work/nocond",
    )
    proc = cli("run", str(path), env=s3_server.env(endpoint=s3_proxy.endpoint))
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "does not support conditional writes" in proc.stderr
    assert "If-None-Match" in proc.stderr and "local work dir" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_the_export_reads_each_final_checkpoint_once_and_matches_the_local_run(
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_proxy: FaultProxy,
    corpus: Path,
    reference: bytes,
) -> None:
    out = tmp_path / "out.jsonl"
    path = recipe(
        tmp_path,
        "once",
        dataset_path=str(corpus),
        export_path=str(out),
        work_dir=f"s3://{s3_bucket}/work/once",
    )
    proc = cli("run", str(path), env=s3_server.env(endpoint=s3_proxy.endpoint))
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert out.read_bytes() == reference
    configure_s3(S3Config(endpoint_url=s3_server.endpoint, region=s3_server.region))
    os.environ.update(s3_server.env())
    final = f"op{len(OPS):03d}-"
    gets = Counter(p.split("?")[0] for m, p, _ in s3_proxy.log if m == "GET" and f"/{final}" in p)
    assert len(gets) == 20, gets  # 2,000 documents in partitions of 100
    assert set(gets.values()) == {1}, gets
    # The final checkpoints select rows of the first (docs/runner.md, "Selection
    # checkpoints"): each base is read twice, by the task that resumes after the global
    # deduplicator's decision and by the export, each time once.
    base = "op001-"
    base_gets = Counter(
        p.split("?")[0] for m, p, _ in s3_proxy.log if m == "GET" and f"/{base}" in p
    )
    assert len(base_gets) == 20 and set(base_gets.values()) == {2}, base_gets
    # every other checkpoint was pruned, in one request per partition task
    blobs = S3Blobs(f"s3://{s3_bucket}/work/once")
    files = [e.key for e in blobs.list("checkpoints") if "/commits.jsonl/" not in e.key]
    assert len(files) == 40, files
    assert all(f"/{final}" in k or f"/{base}" in k for k in files), files
