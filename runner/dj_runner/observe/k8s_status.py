"""Progress reporter: copies the runner's `status.json` into its DataJuicerJob's `status.progress`.

Started by `dj-runner run` when DJ_JOB_NAME and DJ_JOB_NAMESPACE are set (the operator sets them
on the runner pod). A daemon thread reads `<work_dir>/status.json` every second and, when it
changed, merge-patches the job's status subresource with it, at most once every
`min_interval` seconds, plus a final patch when the run ends. It needs only `patch` on its
own job's `datajuicerjobs/status`. Reporting never fails the run: API errors are logged and the
next change is tried again. Given its run's id, it reports that run's status.json only: not the
previous run's (before this one has written its own), nor a newer run's (after a newer run
superseded this one, e.g. a runner cut off with its node that runs on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dj_runner import contract
from dj_runner.observe.status_file import read_status

log = logging.getLogger(__name__)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def to_progress(status: dict[str, Any], pod_name: str | None = None) -> contract.Progress:
    """Map the runner's status.json (``contract.Status``) to the job's `status.progress`
    (``contract.Progress``)."""
    parts = status.get("partitions") or {}
    samples = status.get("samples") or {}
    stage = status.get("stage") or {}
    resumed = status.get("resumed") or {}
    error = status.get("error")
    total = _int(parts.get("total")) or 0
    done = _int(parts.get("done")) or 0
    progress: contract.Progress = {
        "state": status.get("state"),
        "runId": status.get("run_id"),
        "podName": pod_name,
        "partitionsTotal": total,
        "partitionsCompleted": done,
        "partitionsFailed": _int(parts.get("failed")) or 0,
        "partitionsRunning": _int(parts.get("running")) or 0,
        "completion": f"{done}/{total}" if total else "0/?",
        "percent": (100 * done // total) if total else 0,
        "samplesIn": _int(samples.get("in")) or 0,
        "samplesOut": _int(samples.get("out")) or 0,
        "samplesRejected": _int(samples.get("rejected")) or 0,
        "currentOp": stage.get("op"),
        "opIndex": _int(stage.get("index")),
        "lastCheckpointTime": status.get("last_checkpoint_at"),
        "estimatedCompletionTime": status.get("estimated_completion_at"),
        "engineReadyTime": status.get("engine_ready_at"),
        "updateTime": status.get("updated_at"),
        "resumedPartitions": _int(resumed.get("partitions_done")) if resumed else None,
        "resumedCheckpoints": _int(resumed.get("checkpoints")) if resumed else None,
        "checkpoint": progress_checkpoint(status.get("checkpoint")),
        "retries": _retries(status.get("retries")),
        "error": (
            {
                "op": error.get("op"),
                "partition": _int(error.get("partition")),
                "message": str(error.get("message") or "")[:4000],
            }
            if isinstance(error, dict)
            else None
        ),
    }
    # Merge-patch semantics: None removes a key, which is what a cleared field means.
    return progress


def _retries(value: Any) -> contract.Retries | None:
    if not isinstance(value, dict):
        return None
    return {
        "count": _int(value.get("count")) or 0,
        "partition": _int(value.get("partition")),
        "message": str(value.get("message") or "")[:1000],
    }


def progress_checkpoint(point: Any) -> contract.ProgressCheckpoint | None:
    """status.json's ``checkpoint`` (``contract.Checkpoint``) as ``status.progress.checkpoint``."""
    if not isinstance(point, dict):
        return None
    committed = _int(point.get("partitions_committed")) or 0
    total = _int(point.get("partitions_total")) or 0
    ops = _int(point.get("ops_done")) or 0
    op = point.get("op") if isinstance(point.get("op"), str) else None
    after = f"after op {ops} {op}" if op else "before the first op"
    return {
        "partitionsCommitted": committed,
        "partitionsTotal": total,
        "opsDone": ops,
        "op": op,
        "time": point.get("at") if isinstance(point.get("at"), str) else None,
        "summary": f"{committed}/{total} partitions {after}",
    }


class _StatusApi:
    """PATCH of the job's status subresource with the official client (loaded lazily)."""

    def __init__(self, namespace: str, name: str) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.api = client.CustomObjectsApi()
        self.namespace = namespace
        self.name = name

    def patch(self, progress: contract.Progress) -> None:
        # A merge patch: the endpoint's only content type in the pinned client (kubernetes 35).
        self.api.patch_namespaced_custom_object_status(
            contract.GROUP,
            contract.VERSION,
            self.namespace,
            contract.PLURAL,
            self.name,
            {"status": {"progress": progress}},
            _request_timeout=(5, 15),
        )


class ProgressReporter:
    """Polls status.json and patches the job's status.progress when it changed (throttled)."""

    def __init__(
        self,
        work_dir: str | Path,
        namespace: str,
        name: str,
        min_interval: float = 2.0,
        poll_interval: float = 1.0,
        api: Any = None,
        run_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        # As given: Path() would fold an s3:// work dir into "s3:/...", a local path.
        self.work_dir = work_dir
        self.namespace = namespace
        self.name = name
        self.min_interval = min_interval
        self.poll_interval = poll_interval
        self.pod_name = os.environ.get("HOSTNAME")
        self._api = api
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dj-k8s-progress", daemon=True)
        self._last_sent: contract.Progress | None = None
        self._last_time: float | None = None
        self.patches = 0

    def _client(self) -> Any:
        if self._api is None:
            self._api = _StatusApi(self.namespace, self.name)
        return self._api

    def report_once(self, force: bool = False) -> bool:
        """Patch if status.json changed (and, unless `force`, the throttle allows)."""
        status = read_status(self.work_dir)
        if status is None:
            return False
        if self.run_id is not None and status.get("run_id") != self.run_id:
            return False  # another run's status: the previous one's, or a newer one's
        progress = to_progress(status, self.pod_name)
        if progress == self._last_sent:
            return False
        throttled = (
            self._last_time is not None and time.monotonic() - self._last_time < self.min_interval
        )
        if not force and throttled:
            return False
        try:
            self._client().patch(progress)
        except Exception as exc:  # never fail the run for a report
            log.warning("progress not reported to %s/%s: %s", self.namespace, self.name, exc)
            return False
        self._last_sent = progress
        self._last_time = time.monotonic()
        self.patches += 1
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.report_once()

    def start(self) -> ProgressReporter:
        if self._api is None:
            # Import the client library now, on the calling thread. On the reporter's thread the
            # import races the main thread's own (both import `requests`: the kube config loader
            # and Ray), and Python may then hand one of them a half-initialised module.
            import kubernetes.client
            import kubernetes.config  # noqa: F401
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and send the final state."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.report_once(force=True)


@contextlib.contextmanager
def reporter_from_env(args: Any) -> Iterator[ProgressReporter | None]:
    """Around `dj-runner run`: report progress while it runs when the job's env is set."""
    name = os.environ.get(contract.ENV_JOB_NAME)
    namespace = os.environ.get(contract.ENV_JOB_NAMESPACE)
    work_dir = getattr(args, "work_dir", None)
    if getattr(args, "command", None) != "run" or not name or not namespace or not work_dir:
        yield None
        return
    run_id = getattr(args, "run_id", None)
    reporter = ProgressReporter(work_dir, namespace, name, run_id=run_id).start()
    try:
        yield reporter
    finally:
        reporter.stop()
