"""The local store of a work dir: atomic writes, conditional create/replace, logs, listing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dj_runner.errors import InvalidInput
from dj_runner.store.blobs import LocalBlobs, S3Blobs, open_blobs
from dj_runner.store.fencing import take_claim


def test_open_blobs_picks_the_store_by_the_uri(tmp_path: Path) -> None:
    assert isinstance(open_blobs(tmp_path), LocalBlobs)
    s3 = open_blobs("s3://bucket-a/some/prefix/")
    assert isinstance(s3, S3Blobs) and s3.uri == "s3://bucket-a/some/prefix"
    assert s3.join("job.json") == "s3://bucket-a/some/prefix/job.json"


def test_create_only_once_and_replace_only_the_version_read(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path)
    first = blobs.create("a/claim.json", b"1")
    assert first is not None and blobs.create("a/claim.json", b"2") is None
    assert blobs.read("a/claim.json") == b"1"
    data, version = blobs.read_versioned("a/claim.json") or (b"", "")
    assert data == b"1" and version == first
    second = blobs.replace("a/claim.json", b"3", version)
    assert second is not None and second != version
    assert blobs.replace("a/claim.json", b"4", version) is None  # a stale version loses
    assert blobs.read("a/claim.json") == b"3"
    assert blobs.replace("missing", b"x", version) is None
    assert not list(tmp_path.glob("a/.*tmp*")), "a temporary was left behind"


def test_records_list_delete(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path)
    for i in range(3):
        blobs.append("p/commits.jsonl", {"i": i})
    assert [r["i"] for r in blobs.records("p/commits.jsonl")] == [0, 1, 2]
    blobs.write("p/x.bin", b"12345")
    assert [(e.key, e.size) for e in blobs.list("p") if e.key.endswith(".bin")] == [("p/x.bin", 5)]
    assert blobs.size("p/x.bin") == 5 and blobs.size("p") is None and blobs.size("nope") is None
    blobs.delete_tree("p")
    assert blobs.list("") == [] and blobs.read("p/x.bin") is None


def test_racing_claims_get_distinct_epochs(tmp_path: Path) -> None:
    """Conditional writes order concurrent claims: every run gets an epoch of its own."""
    epochs: list[int] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        fence = take_claim(tmp_path, f"run-{i}")
        with lock:
            epochs.append(fence.epoch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(epochs) == list(range(1, 9))


def test_retries_are_summed_once_per_process_at_their_newest_count():
    from dj_runner.store.blobs import total_retries

    # Counts only grow: a process reporting 2 then 5 retried 5 times, not 7; the driver's own
    # count joins the tasks' (and wins over a task of its own process reporting less).
    reports = {"a:1": 5, "b:7": 3}
    assert total_retries(reports) == 8
    assert total_retries(reports, ("a:1", 6)) == 9
    assert total_retries(reports, ("a:1", 2)) == 8
    assert total_retries({}, ("driver:9", 4)) == 4


def test_an_unreachable_store_is_tried_again_until_its_outage_bound(monkeypatch):
    """A store that refuses connections (a restart) is tried again, with waits of 1, 2, 4 ...
    s, until DJ_RUNNER_S3_OUTAGE_S; other errors are not; a bad bound is refused by name."""
    from botocore.exceptions import EndpointConnectionError

    from dj_runner.store import blobs as mod

    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    class Store:
        def __init__(self, refusals: int) -> None:
            self.refusals = refusals

        def head_object(self, **kwargs):
            if self.refusals:
                self.refusals -= 1
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k")
            return {"ContentLength": 3, "ResponseMetadata": {"RetryAttempts": 0}}

    monkeypatch.setattr(mod.time, "sleep", sleep)
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("DJ_RUNNER_S3_OUTAGE_S", "10")
    before = mod.s3_retries()
    monkeypatch.setattr(mod, "s3_client", lambda: Store(refusals=3))
    assert mod.S3Blobs("s3://bkt/p").size("k") == 3
    assert waits == [1.0, 2.0, 4.0] and mod.s3_retries() - before == 3
    waits.clear()
    monkeypatch.setattr(mod, "s3_client", lambda: Store(refusals=100))
    with pytest.raises(mod.S3Error, match="head_object failed after 10 attempts and 10 s"):
        mod.S3Blobs("s3://bkt/p").size("k")
    assert sum(waits) == pytest.approx(10.0)
    monkeypatch.setenv("DJ_RUNNER_S3_OUTAGE_S", "soon")
    with pytest.raises(InvalidInput, match="DJ_RUNNER_S3_OUTAGE_S: got 'soon'"):
        mod.outage_seconds()
