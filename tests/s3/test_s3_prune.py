"""Deleting in a bucket, on the real S3 server: batched deletes and deferred pruning.

``S3Blobs.delete_many`` removes exactly the keys it is given (one ``DeleteObjects`` per batch,
or one ``DeleteObject`` each on a store that refuses it); a partition's pruned checkpoints are
deleted only at ``drop_pruned``, so a crash before it leaves the older files beside a newer
commit, which a resume passes over.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from dj_runner.store import blobs as blobs_module
from dj_runner.store import location
from dj_runner.store.blobs import S3Blobs
from dj_runner.store.checkpoint import CheckpointDir, CheckpointKey
from dj_runner.store.location import S3Config, configure_s3
from tests.harness.s3faults import FaultProxy
from tests.harness.s3server import S3Server


def _configure(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None
) -> None:
    """This process's S3 settings and credentials for the test (restored after it)."""
    monkeypatch.setattr(location, "_options", location.current_s3_config())
    configure_s3(S3Config(endpoint_url=endpoint or server.endpoint, region=server.region))
    for key, value in server.env(endpoint=endpoint).items():
        monkeypatch.setenv(key, value)


def _keys(blobs: S3Blobs) -> list[str]:
    return [e.key for e in blobs.list("")]


@pytest.mark.parametrize("refused", [False, True], ids=["DeleteObjects", "one-by-one"])
def test_delete_many_removes_exactly_the_keys_named(
    s3_server: S3Server, s3_bucket: str, s3_proxy: FaultProxy, monkeypatch, refused: bool
) -> None:
    monkeypatch.setattr(blobs_module, "_DELETE_BATCH", 3)
    monkeypatch.setattr(blobs_module, "_no_batch_delete", set())
    s3_proxy.refuse_batch_delete = refused
    _configure(s3_server, monkeypatch, s3_proxy.endpoint)
    blobs = S3Blobs(f"s3://{s3_bucket}/work/many")
    for i in range(7):
        blobs.write(f"a/{i}", b"x")
    blobs.write("b/0", b"y")
    S3Blobs(f"s3://{s3_bucket}/work/other").write("a/0", b"z")  # same key, another prefix
    before = len(s3_proxy.log)
    blobs.delete_many(["a/0", "a/1", "a/2", "a/3", "a/4", "a/missing"])
    methods = Counter(m for m, _, _ in s3_proxy.log[before:])
    assert _keys(blobs) == ["a/5", "a/6", "b/0"]
    assert _keys(S3Blobs(f"s3://{s3_bucket}/work/other")) == ["a/0"]
    if refused:  # two refused batches, then each key alone
        assert methods == {"POST": 1, "DELETE": 6}, methods
    else:
        assert methods == {"POST": 2}, methods


def test_pruned_files_stay_until_drop_pruned_and_a_resume_takes_the_newest(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(s3_server, monkeypatch)
    root = f"s3://{s3_bucket}/work/prune/checkpoints/p00000"
    table = pa.table({"text": ["a", "b", "c"]})
    store = CheckpointDir(root, "parquet", "none")
    first = store.save(CheckpointKey(1), table, "op1")
    second = store.save(CheckpointKey(2), table.slice(1), "op2")
    blobs = S3Blobs(root)
    files = [k for k in _keys(blobs) if not k.startswith("commits.jsonl/")]
    # a crash here (before drop_pruned) leaves both files: the resume takes the newer commit
    assert sorted(files) == sorted([first.file, second.file])
    resumed = CheckpointDir(root, "parquet", "none").newest_valid()
    assert resumed is not None and resumed[0].key == CheckpointKey(2)
    assert resumed[1].equals(table.slice(1))
    store.drop_pruned()
    assert [k for k in _keys(blobs) if not k.startswith("commits.jsonl/")] == [second.file]
    assert len([k for k in _keys(blobs) if k.startswith("commits.jsonl/")]) == 2
