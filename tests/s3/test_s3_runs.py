"""``dj-runner run`` on the real S3 server: input from s3://, export to s3://, faults, refusals.

Each run is the real command line in its own process, with a local work dir and the server's
address and credentials in its environment, as a user would run it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from pyarrow.fs import FileSelector

from dj_runner.contract import ExitCode
from tests.harness.s3faults import FaultProxy
from tests.harness.s3server import ADMIN, OUTSIDER, READER, S3Server
from tests.harness.sigv4 import Credentials

CLI = (sys.executable, "-m", "dj_runner.cli")
OPS = [
    {"whitespace_normalization_mapper": {}},
    {"text_length_filter": {"min_len": 5, "max_len": 20000}},
    {"document_deduplicator": {"lowercase": True}},
]


def rows(n: int, tag: str, ids: bool = True) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [
        {"text": f"{tag}  sample {i}  with   some words " + "x" * (i % 7), "id": i}
        for i in range(n)
    ] + [{"text": f"{tag}  sample 3  with   some words xxx", "id": n}]  # a duplicate
    return out if ids else [{"text": r["text"]} for r in out]


def write_inputs(directory: Path) -> None:
    """One file of every input format the runner reads."""
    directory.mkdir(parents=True)
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in rows(40, "plain"))
    (directory / "a.jsonl").write_bytes(lines)
    gz = b"".join(json.dumps(r).encode() + b"\n" for r in rows(40, "gzip"))
    (directory / "b.jsonl.gz").write_bytes(gzip.compress(gz))
    zs = b"".join(json.dumps(r).encode() + b"\n" for r in rows(40, "zstd"))
    (directory / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(zs))
    (directory / "d.json").write_text(json.dumps(rows(30, "array")))
    table = pa.Table.from_pylist(rows(50, "columnar"))
    pq.write_table(table, directory / "e.parquet", row_group_size=7)
    with ipc.new_file(directory / "f.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=9)
    buf = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pylist(rows(30, "csv", ids=False)), buf)  # CSV: all strings
    (directory / "g.csv").write_bytes(buf.getvalue())


def run(
    tmp: Path,
    name: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    work_dir: str | None = None,
    **recipe: object,
) -> subprocess.CompletedProcess[str]:
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"project_name": name, "np": 2, "partition_size": 13, "process": OPS, **recipe}
        )
    )
    return subprocess.run(
        [*CLI, "run", str(path), "--work-dir", work_dir or str(tmp / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def partitions(work: Path) -> list[dict[str, object]]:
    """The plan's partitions: ranges, row counts and content hashes (not the file names)."""
    return json.loads((work / "plan.json").read_text())["partitions"]


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("inputs") / "data"
    write_inputs(directory)
    return directory


@pytest.fixture(scope="module")
def local_reference(local_inputs: Path, tmp_path_factory) -> tuple[Path, bytes]:
    """The same job with everything local: the output every S3 run must equal."""
    tmp = tmp_path_factory.mktemp("local")
    proc = run(tmp, "local", dataset_path=str(local_inputs), export_path=str(tmp / "out.jsonl"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    return tmp / "local", (tmp / "out.jsonl").read_bytes()


def test_every_input_format_from_s3_matches_the_local_run(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs, local_reference
):
    s3_server.upload_tree(local_inputs, s3_bucket, "in/data")
    out = tmp_path / "out.jsonl"
    proc = run(
        tmp_path,
        "s3in",
        env=s3_server.env(),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=str(out),
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    local_work, expected = local_reference
    assert out.read_bytes() == expected
    assert partitions(tmp_path / "s3in") == partitions(local_work)
    plan = json.loads((tmp_path / "s3in" / "plan.json").read_text())
    formats = {(s["fmt"], s["compression"]) for s in plan["sources"]}
    assert formats == {
        ("jsonl", "none"),
        ("jsonl", "gzip"),
        ("jsonl", "zstd"),
        ("json", "none"),
        ("parquet", "none"),
        ("arrow", "none"),
        ("csv", "none"),
    }
    assert all(s["path"].startswith(f"s3://{s3_bucket}/in/data/") for s in plan["sources"])
    # run again: the plan's objects (size, last-modified) still match, nothing is redone
    out.unlink()
    again = run(
        tmp_path,
        "s3in",
        env=s3_server.env(),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=str(out),
    )
    assert again.returncode == ExitCode.OK, again.stderr
    assert f"{len(plan['partitions'])} already done" in again.stderr
    assert out.read_bytes() == expected


@pytest.mark.parametrize("kind", ["out.jsonl", "out.parquet", "shards", "shards-parquet"])
def test_export_to_s3_in_each_kind(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs, local_reference, kind
):
    target = f"s3://{s3_bucket}/exports/{kind}"
    s3_server.put_object(s3_bucket, "exports-neighbour", b"not the runner's")
    proc = run(
        tmp_path, "s3out", env=s3_server.env(), dataset_path=str(local_inputs), export_path=target
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    fs = s3_server.filesystem()
    keys = sorted(
        i.path for i in fs.get_file_info(FileSelector(s3_bucket, recursive=True)) if i.is_file
    )
    assert f"{s3_bucket}/exports-neighbour" in keys
    assert not [k for k in keys if ".dj-runner-tmp-" in k or "probe" in k], keys
    _, expected = local_reference
    expected_rows = [json.loads(line) for line in expected.splitlines()]
    if kind == "out.jsonl":
        assert s3_server.get_object(s3_bucket, f"exports/{kind}") == expected
    elif kind == "out.parquet":
        with fs.open_input_file(f"{s3_bucket}/exports/{kind}") as fh:
            assert pq.read_table(fh).to_pylist() == expected_rows
    else:
        marker = json.loads(s3_server.get_object(s3_bucket, f"exports/{kind}/.dj-runner-export"))
        shards = sorted(marker["shards"])
        exported = [k for k in keys if k.startswith(f"{s3_bucket}/exports/")]
        assert shards and exported == [
            f"{s3_bucket}/exports/{kind}/{name}" for name in [".dj-runner-export", *shards]
        ]
        got: list[dict[str, object]] = []
        for name in shards:
            data = s3_server.get_object(s3_bucket, f"exports/{kind}/{name}")
            assert len(data) == marker["shards"][name]
            if name.endswith(".parquet"):
                got += pq.read_table(pa.BufferReader(data)).to_pylist()
            else:
                got += [json.loads(line) for line in data.splitlines()]
        assert got == expected_rows


def test_a_prefix_of_more_than_1000_objects_is_listed_whole(
    tmp_path, s3_server: S3Server, s3_bucket
):
    n = 1003  # more than one ListObjectsV2 page (1,000 keys)
    for i in range(n):
        s3_server.put_object(s3_bucket, f"many/{i:05d}.jsonl", b'{"text": "object %d"}\n' % i)
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in s3_server.env().items() if k not in ("AWS_ENDPOINT_URL", "AWS_REGION")}
    assert "AWS_ENDPOINT_URL" not in os.environ
    proc = run(  # the endpoint from the recipe this time, which the Ray workers must use too
        tmp_path,
        "many",
        env=env,
        dataset_path=f"s3://{s3_bucket}/many",
        export_path=str(out),
        partition_size=200,
        process=[{"whitespace_normalization_mapper": {}}],
        s3={"endpoint_url": s3_server.endpoint, "region": s3_server.region},
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert texts == [f"object {i}" for i in range(n)]
    listed = s3_server.request("GET", f"/{s3_bucket}", query={"list-type": "2", "prefix": "many/"})
    assert b"<IsTruncated>true</IsTruncated>" in listed.body  # the server did page


def test_injected_503s_and_resets_are_retried_with_identical_output(
    tmp_path, s3_server: S3Server, s3_bucket, s3_proxy: FaultProxy, local_inputs, local_reference
):
    s3_server.upload_tree(local_inputs, s3_bucket, "in/data")
    s3_proxy.fail_next(6)
    s3_proxy.reset_next(2, method="GET")
    s3_proxy.fail_next(3, method="PUT")
    target = f"s3://{s3_bucket}/faulty/out.jsonl"
    proc = run(
        tmp_path,
        "faults",
        env=s3_server.env(endpoint=s3_proxy.endpoint),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=target,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert s3_proxy.pending() == 0 and s3_proxy.faults_injected == 11
    _, expected = local_reference
    assert s3_server.get_object(s3_bucket, "faulty/out.jsonl") == expected
    # partitions were read back from their recorded byte offsets, with ranged GETs
    plan = json.loads((tmp_path / "faults" / "plan.json").read_text())
    plain = next(i for i, s in enumerate(plan["sources"]) if s["path"].endswith("/a.jsonl"))
    starts = {r["start"] for p in plan["partitions"] for r in p["ranges"] if r["file"] == plain}
    ranged = {
        int(rng.removeprefix("bytes=").split("-")[0])
        for method, path, rng in s3_proxy.log
        if method == "GET" and path.endswith("/in/data/a.jsonl") and rng
    }
    assert len(starts) > 1 and starts <= ranged, (starts, ranged)
    whole = [r for m, p, r in s3_proxy.log if m == "GET" and "/in/data/" in p and r is None]
    assert whole == []  # no object was fetched without a range


def _refused(proc: subprocess.CompletedProcess[str], bucket: str, operation: str) -> None:
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"'{bucket}'" in proc.stderr and operation in proc.stderr, proc.stderr
    for secret in (ADMIN.secret_key, READER.secret_key, "wrong-secret-value-0001"):
        assert secret not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_wrong_credentials_missing_bucket_and_no_permission_exit_2(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs
):
    s3_server.upload_tree(local_inputs, s3_bucket, "in/data")
    wrong = s3_server.env(Credentials(ADMIN.access_key, "wrong-secret-value-0001"))
    proc = run(
        tmp_path,
        "wrong",
        env=wrong,
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=str(tmp_path / "o.jsonl"),
    )
    _refused(proc, s3_bucket, "HeadBucket")
    assert "check the credentials" in proc.stderr

    proc = run(
        tmp_path,
        "missing",
        env=s3_server.env(),
        dataset_path="s3://no-such-bucket-here/in",
        export_path=str(tmp_path / "o.jsonl"),
    )
    _refused(proc, "no-such-bucket-here", "does not exist (HeadBucket)")

    proc = run(
        tmp_path,
        "readonly",
        env=s3_server.env(READER),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=f"s3://{s3_bucket}/out/o.jsonl",
    )
    _refused(proc, s3_bucket, "write (PutObject)")

    proc = run(
        tmp_path,
        "outsider",
        env=s3_server.env(OUTSIDER),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=str(tmp_path / "o.jsonl"),
    )
    _refused(proc, s3_bucket, "HeadBucket")
    assert OUTSIDER.secret_key not in proc.stderr
    assert (
        not (tmp_path / "readonly").exists() or not (tmp_path / "readonly" / "plan.json").exists()
    )


def test_export_or_work_dir_inside_the_input_prefix_is_refused(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs
):
    s3_server.upload_tree(local_inputs, s3_bucket, "in/data")
    proc = run(
        tmp_path,
        "inside",
        env=s3_server.env(),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=f"s3://{s3_bucket}/in/data/out",
    )
    assert proc.returncode == ExitCode.USAGE and "export_path" in proc.stderr, proc.stderr
    assert "outside the input prefix" in proc.stderr
    proc = run(
        tmp_path,
        "workinside",
        env=s3_server.env(),
        dataset_path=f"s3://{s3_bucket}/in/data",
        export_path=f"s3://{s3_bucket}/o.jsonl",
        work_dir=f"s3://{s3_bucket}/in/data/work",
    )
    assert proc.returncode == ExitCode.USAGE and "work_dir" in proc.stderr, proc.stderr
    assert "outside the input prefix" in proc.stderr


def test_a_foreign_prefix_is_never_exported_over(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs
):
    s3_server.put_object(s3_bucket, "theirs/keep.txt", b"someone else's")
    proc = run(
        tmp_path,
        "foreign",
        env=s3_server.env(),
        dataset_path=str(local_inputs),
        export_path=f"s3://{s3_bucket}/theirs",
    )
    assert proc.returncode == ExitCode.USAGE and "holds other objects" in proc.stderr, proc.stderr
    assert s3_server.get_object(s3_bucket, "theirs/keep.txt") == b"someone else's"


def test_data_juicers_s3_dataset_config_runs_as_written(
    tmp_path, s3_server: S3Server, s3_bucket, local_inputs, local_reference
):
    """Data-Juicer's ``dataset: {configs: [{type: remote, source: s3, ...}]}`` form: its
    endpoint and region are used (the environment names neither), the output is the same."""
    s3_server.upload_tree(local_inputs, s3_bucket, "dj/data")
    env = {k: v for k, v in s3_server.env().items() if k not in ("AWS_ENDPOINT_URL", "AWS_REGION")}
    out = tmp_path / "out.jsonl"
    proc = run(
        tmp_path,
        "djform",
        env={**env, "AWS_ENDPOINT_URL": "", "AWS_REGION": ""},
        dataset={
            "configs": [
                {
                    "type": "remote",
                    "source": "s3",
                    "path": f"s3://{s3_bucket}/dj/data",
                    "aws_region": s3_server.region,
                    "endpoint_url": s3_server.endpoint,
                }
            ]
        },
        export_path=str(out),
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "dataset: read as dataset_path" in proc.stderr
    assert out.read_bytes() == local_reference[1]
