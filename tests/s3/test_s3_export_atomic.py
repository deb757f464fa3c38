"""An export to S3 that fails or is killed midway never leaves an object that reads as complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pyarrow as pa
import pytest
from pyarrow.fs import FileSelector

from dj_runner.io.export import EXPORT_MARKER, WRITING_MARKER, write_export
from tests.harness.s3server import S3Server
from tests.harness.waiting import wait_for


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)


def table(i: int) -> pa.Table:
    return pa.table({"text": [f"partition {i} row {j}" for j in range(50)]})


def failing_partitions(fail_at: int) -> Iterator[Iterator[pa.Table]]:
    for i in range(4):
        if i == fail_at:
            raise RuntimeError("the export's input broke")
        yield iter([table(i)])


def keys(s3_server: S3Server, bucket: str) -> list[str]:
    fs = s3_server.filesystem()
    infos = fs.get_file_info(FileSelector(bucket, recursive=True))
    return sorted(i.path for i in infos if i.is_file)


def test_a_failed_single_file_export_leaves_no_object(s3_server, s3_bucket, s3_env):
    schema = table(0).schema
    with pytest.raises(RuntimeError, match="broke"):
        write_export(f"s3://{s3_bucket}/out.jsonl", lambda: failing_partitions(2), [schema], False)
    assert keys(s3_server, s3_bucket) == []


def test_a_failed_shard_export_has_no_marker_and_the_next_one_completes(
    s3_server, s3_bucket, s3_env
):
    schema = table(0).schema
    target = f"s3://{s3_bucket}/shards"
    with pytest.raises(RuntimeError, match="broke"):
        write_export(target, lambda: failing_partitions(2), [schema], False)
    after_failure = keys(s3_server, s3_bucket)
    assert f"{s3_bucket}/shards/{EXPORT_MARKER}" not in after_failure
    assert f"{s3_bucket}/shards/{WRITING_MARKER}" in after_failure  # reads as incomplete
    assert not [k for k in after_failure if ".dj-runner-tmp-" in k]
    rows = write_export(target, lambda: failing_partitions(99), [schema], False)
    assert rows == 200
    assert keys(s3_server, s3_bucket) == [
        f"{s3_bucket}/shards/{name}"
        for name in [EXPORT_MARKER, *(f"part-{i:05d}.jsonl" for i in range(4))]
    ]


def test_a_runner_killed_mid_upload_leaves_no_final_object(tmp_path, s3_server, s3_bucket):
    """SIGKILL while the export's object is being uploaded (several MiB already sent)."""
    ready = tmp_path / "uploading"
    script = textwrap.dedent(
        f"""
        import pathlib, threading
        import pyarrow as pa
        from dj_runner.io.export import write_export

        def slices():
            for i in range(10**6):
                yield pa.table({{"text": ["x" * 1000 + str(i)] * 1000}})
                if i == 20:  # about 20 MB written: the multipart upload is under way
                    pathlib.Path({str(ready)!r}).write_text("yes")
                    threading.Event().wait()  # hold here until killed

        write_export("s3://{s3_bucket}/big.jsonl", lambda: iter([slices()]),
                     [pa.schema([("text", pa.string())])], False)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, **s3_server.env()},
        start_new_session=True,
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=120, what="the upload")
        assert proc.poll() is None, "the export process ended before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert keys(s3_server, s3_bucket) == []  # no object at all, final or temporary
    uploads = s3_server.request("GET", f"/{s3_bucket}", query={"uploads": ""})
    assert b"big.jsonl.dj-runner-tmp-" in uploads.body  # it was killed mid-multipart
