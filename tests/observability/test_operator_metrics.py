"""The operator's metrics: per-job families computed from the job index at scrape time."""

from __future__ import annotations

import pytest

from dj_operator.metrics import OperatorMetrics, start_metrics_server
from dj_operator.status.reader import JobView

from .conftest import promtool_check_metrics
from .djjobs import djjob
from .scrape import scrape

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served():
    clock = Clock(T0 + 600)
    metrics = OperatorMetrics(clock=clock)
    server = start_metrics_server(0, metrics.index, host="127.0.0.1")
    yield metrics, server, clock
    server.close()


def test_per_job_families_from_the_index(served, promtool):
    metrics, server, _ = served
    metrics.index.upsert(
        djjob(
            "running",
            started=T0 + 5,
            run_started=T0 + 100,
            updated=T0 + 590,
            last_checkpoint=T0 + 580,
            partitions=(10, 5, 1, 2),
            resumed_done=2,
            attempts=2,
            mode="kuberay",
        )
    )
    metrics.index.upsert(
        djjob(
            "broken", started=T0, completed=T0 + 50, phase="Failed", failure_reason="InvalidInput"
        )
    )
    metrics.index.upsert(djjob("queued", namespace="team-b", phase=None))
    # The runner's own estimate wins: 42 s after the scrape's clock (T0 + 600).
    metrics.index.upsert(
        djjob("estimated", started=T0, run_started=T0, estimated_completion=T0 + 642)
    )
    s = scrape(server.url)
    r = {"namespace": "team-a", "job_name": "running"}
    assert s.value("datajuicer_job_info", mode="kuberay", **r) == 1
    assert s.value("datajuicer_job_phase", phase="Running", **r) == 1
    assert s.total("datajuicer_job_phase", **r) == 1  # one-hot over the 7 phases
    assert (
        len(
            [
                1
                for n, ls, _ in s.samples
                if n == "datajuicer_job_phase" and dict(ls)["job_name"] == "running"
            ]
        )
        == 7
    )
    assert s.value("datajuicer_job_condition", type="Running", status="True", **r) == 1
    assert s.value("datajuicer_job_condition", type="Running", status="False", **r) == 0
    assert s.value("datajuicer_job_progress_ratio", **r) == pytest.approx(0.6)
    assert s.value("datajuicer_job_partitions", state="total", **r) == 10
    assert s.value("datajuicer_job_partitions", state="running", **r) == 2
    assert s.value("datajuicer_job_input_samples", **r) == 1234
    assert s.value("datajuicer_job_output_samples", **r) == 1100
    # ETA: 4 partitions finished in this run (5 done + 1 failed - 2 resumed) in 500 s: 4 left.
    assert s.value("datajuicer_job_eta_seconds", **r) == pytest.approx(4 * 500 / 4)
    e = {"namespace": "team-a", "job_name": "estimated"}
    assert s.value("datajuicer_job_eta_seconds", **e) == pytest.approx(42)
    assert s.value("datajuicer_job_attempt", **r) == 2
    assert s.value("datajuicer_job_restarts", **r) == 1
    assert s.value("datajuicer_job_last_checkpoint_timestamp_seconds", **r) == T0 + 580
    assert s.value("datajuicer_job_last_progress_timestamp_seconds", **r) == T0 + 590
    assert s.value("datajuicer_job_created_timestamp_seconds", **r) == T0
    assert s.value("datajuicer_job_start_timestamp_seconds", **r) == T0 + 5
    # A finished job keeps its figures; a Failed one says why; no ETA once it is not Running.
    b = {"namespace": "team-a", "job_name": "broken"}
    assert s.value("datajuicer_job_failure", reason="InvalidInput", **b) == 1
    assert s.value("datajuicer_job_eta_seconds", **b) is None
    assert s.value("datajuicer_job_completion_timestamp_seconds", **b) == T0 + 50
    # A job without status yet is Pending.
    assert (
        s.value("datajuicer_job_phase", phase="Pending", namespace="team-b", job_name="queued") == 1
    )
    assert s.value("datajuicer_operator_tracked_jobs") == 4
    check = promtool_check_metrics(promtool, s.text)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_deleting_a_job_removes_its_series(served):
    metrics, server, _ = served
    metrics.index.upsert(djjob("a", started=T0))
    metrics.index.upsert(djjob("b", started=T0))
    metrics.index.remove("team-a", "a")
    s = scrape(server.url)
    assert s.label_values("datajuicer_job_phase", "job_name") == {"b"}


def test_a_restarted_operator_serves_the_same_per_job_figures():
    """Gauges come from the bodies, not from transitions: a fresh process agrees at once."""
    bodies = [
        djjob(f"j{i}", phase=p, started=T0, completed=T0 + 9 if p != "Running" else None)
        for i, p in enumerate(["Running", "Succeeded", "Failed", "Suspended"])
    ]
    first = OperatorMetrics(clock=Clock(T0 + 10))
    for b in [djjob(f"j{i}", phase="Pending") for i in range(4)] + bodies:
        first.index.upsert(b)
    second = OperatorMetrics(clock=Clock(T0 + 10))
    for b in bodies:
        second.index.upsert(b)

    def gauges(m: OperatorMetrics) -> dict:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in m.registry.collect()
            if fam.type == "gauge" and fam.name.startswith("datajuicer_job_")
            for s in fam.samples
        }

    assert gauges(first) == gauges(second)
    assert len(gauges(first)) > 40


def test_transitions_witnessed_once_feed_the_histograms_and_the_failure_counter():
    clock = Clock(T0)
    m = OperatorMetrics(clock=clock)
    m.index.upsert(djjob("a", phase=None))  # created: no status yet
    m.index.upsert(djjob("a", phase="Starting"))
    m.index.upsert(djjob("a", phase="Running", started=T0 + 7))
    m.index.upsert(djjob("a", phase="Running", started=T0 + 7, updated=T0 + 20))  # progress only
    m.index.upsert(
        djjob("a", phase="Failed", started=T0 + 7, completed=T0 + 67, failure_reason="RunnerFailed")
    )
    m.index.upsert(
        djjob("a", phase="Failed", started=T0 + 7, completed=T0 + 67, failure_reason="RunnerFailed")
    )
    # First seen already Running or finished (an operator restart): not observed again.
    m.index.upsert(djjob("b", phase="Running", started=T0 + 1))
    m.index.upsert(djjob("c", phase="Succeeded", started=T0 + 1, completed=T0 + 2))
    get = m.registry.get_sample_value
    assert get("datajuicer_job_time_to_running_seconds_count", {"namespace": "team-a"}) == 1
    assert get("datajuicer_job_time_to_running_seconds_sum", {"namespace": "team-a"}) == 7
    assert (
        get("datajuicer_job_duration_seconds_count", {"namespace": "team-a", "phase": "Failed"})
        == 1
    )
    assert (
        get("datajuicer_job_duration_seconds_sum", {"namespace": "team-a", "phase": "Failed"}) == 60
    )
    assert (
        get("datajuicer_job_failures_total", {"namespace": "team-a", "reason": "RunnerFailed"}) == 1
    )
    assert (
        get("datajuicer_job_duration_seconds_count", {"namespace": "team-a", "phase": "Succeeded"})
        == 0  # the series exists from the first job in the namespace, at zero
    )
    assert get("datajuicer_job_failures_total", {"namespace": "team-a", "reason": "Stalled"}) == 0


def test_phase_intervals_are_observed_once_each_when_their_end_is_recorded():
    """apply -> pod created -> Ray ready -> first checkpoint -> finished, by mode; a restarted
    operator reading the same milestones observes nothing again."""
    pod, ray, ckpt = T0 + 2, T0 + 5, T0 + 15

    def local(phase: str, tl: dict, **kw: float) -> dict:
        return djjob("loc", phase=phase, started=pod, timeline=tl, **kw)

    def kuberay(phase: str, tl: dict, **kw: float) -> dict:
        return djjob("kr", phase=phase, started=T0 + 40, mode="kuberay", timeline=tl, **kw)

    m = OperatorMetrics(clock=Clock(T0))
    steps = [
        local("Starting", {}),
        local("Starting", {"podCreated": pod}),
        local("Running", {"podCreated": pod, "rayReady": ray}),
        local("Running", {"podCreated": pod, "rayReady": ray}, updated=T0 + 9),  # progress only
        local("Running", {"podCreated": pod, "rayReady": ray, "firstCheckpoint": ckpt}),
        local(
            "Succeeded",
            {"podCreated": pod, "rayReady": ray, "firstCheckpoint": ckpt},
            completed=T0 + 100,
        ),
        kuberay("Starting", {}),
        kuberay("Starting", {"rayReady": T0 + 30}),
        # Both recorded by one status write: both intervals are observed.
        kuberay(
            "Running", {"rayReady": T0 + 30, "podCreated": T0 + 31, "firstCheckpoint": T0 + 50}
        ),
    ]
    for body in steps:
        m.index.upsert(body)

    def count(mode: str, interval: str, registry: OperatorMetrics = m) -> float | None:
        labels = {"namespace": "team-a", "mode": mode, "interval": interval}
        return registry.registry.get_sample_value(
            "datajuicer_job_phase_interval_seconds_count", labels
        )

    def total(mode: str, interval: str) -> float | None:
        labels = {"namespace": "team-a", "mode": mode, "interval": interval}
        return m.registry.get_sample_value("datajuicer_job_phase_interval_seconds_sum", labels)

    expected = {
        ("local", "apply_to_pod_created"): 2,
        ("local", "pod_created_to_ray_ready"): 3,
        ("local", "ray_ready_to_first_checkpoint"): 10,
        ("local", "first_checkpoint_to_finished"): 85,
        ("kuberay", "apply_to_ray_ready"): 30,
        ("kuberay", "ray_ready_to_pod_created"): 1,
        ("kuberay", "pod_created_to_first_checkpoint"): 19,
    }
    for (mode, interval), seconds in expected.items():
        assert count(mode, interval) == 1, (mode, interval)
        assert total(mode, interval) == seconds, (mode, interval)
    assert count("kuberay", "first_checkpoint_to_finished") == 0  # not finished: at zero

    # A restarted operator lists the jobs as they are now, then sees them again: no observation.
    again = OperatorMetrics(clock=Clock(T0 + 200))
    for body in (steps[5], steps[5], steps[-1], steps[-1]):
        again.index.upsert(body)
    for mode, interval in expected:
        assert count(mode, interval, again) == 0, (mode, interval)


def test_a_job_recreated_under_the_same_name_is_a_new_job():
    m = OperatorMetrics(clock=Clock(T0))
    m.index.upsert(djjob("a", phase="Running", started=T0 + 1, uid="old"))
    m.index.upsert(djjob("a", phase="Succeeded", started=T0 + 1, completed=T0 + 2, uid="new"))
    assert (
        m.registry.get_sample_value(
            "datajuicer_job_duration_seconds_count", {"namespace": "team-a", "phase": "Succeeded"}
        )
        == 0
    )


def test_health_helpers():
    clock = Clock(T0)
    m = OperatorMetrics(clock=clock, handlers=("on_create", "on_update"))
    declared = {"handler": "on_update"}
    assert m.registry.get_sample_value("datajuicer_operator_reconciles_total", declared) == 0
    with m.reconcile("on_create"):
        pass
    with pytest.raises(RuntimeError), m.reconcile("on_update"):
        raise RuntimeError("boom")
    m.api_request("create", 201)
    m.api_request("create", 409)
    m.event_posted("Warning", "Retrying")
    m.event_suppressed("Retrying")
    m.watch_event("DataJuicerJob")
    get = m.registry.get_sample_value
    assert get("datajuicer_operator_reconciles_total", {"handler": "on_create"}) == 1
    assert get("datajuicer_operator_reconcile_errors_total", {"handler": "on_update"}) == 1
    assert get("datajuicer_operator_reconcile_errors_total", {"handler": "on_create"}) == 0
    assert (
        get("datajuicer_operator_reconcile_duration_seconds_count", {"handler": "on_update"}) == 1
    )
    assert get("datajuicer_operator_api_requests_total", {"verb": "create", "code": "409"}) == 1
    assert get("datajuicer_operator_events_suppressed_total", {"reason": "Retrying"}) == 1
    assert (
        get("datajuicer_operator_watch_last_event_timestamp_seconds", {"kind": "DataJuicerJob"})
        == T0
    )


def test_eta_absent_until_a_partition_finished_in_this_run():
    view = JobView.of(djjob("a", started=T0, partitions=(10, 2, 0, 2), resumed_done=2), T0 + 60)
    assert view.eta_seconds is None
    view = JobView.of(djjob("a", started=T0, partitions=(10, 0, 0, 0)), T0 + 60)
    assert view.eta_seconds is None and view.progress_ratio == 0


def test_bad_port_is_refused():
    with pytest.raises(ValueError, match=r"metrics port: -1 "):
        start_metrics_server(-1, OperatorMetrics())


def test_progress_as_the_contract_writes_it_is_read_too():
    """status.progress holding the runner's status.json verbatim (snake_case, nested)."""
    body = djjob("a", started=T0)
    body["status"]["progress"] = {
        "schema_version": 1,
        "state": "running",
        "started_at": "2023-11-14T22:13:20.000Z",
        "updated_at": "2023-11-14T22:14:20.000Z",
        "partitions": {"total": 10, "done": 4, "failed": 1, "running": 2},
        "samples": {"in": 400, "out": 350, "rejected": 3},
        "last_checkpoint_at": "2023-11-14T22:14:10.500Z",
        "resumed": {"partitions_done": 3, "checkpoints": 9},
    }
    view = JobView.of(body, T0 + 120)
    assert view.partitions == {"total": 10, "done": 4, "failed": 1, "running": 2}
    assert view.samples == {"in": 400, "out": 350, "rejected": 3}
    assert view.last_checkpoint_at == T0 + 50.5 and view.last_progress_at == T0 + 60
    # 2 partitions finished in this run (4 + 1 - 3 resumed) in 120 s; 5 remain.
    assert view.eta_seconds == pytest.approx(5 * 120 / 2)


def test_a_full_list_heals_a_missed_delete():
    m = OperatorMetrics(clock=Clock(T0))
    for name in ("a", "b", "c"):
        m.index.upsert(djjob(name, started=T0))
    m.index.replace_all([djjob("a", started=T0), djjob("d", started=T0)])
    assert sorted(v.name for v in m.index.views()) == ["a", "d"]


def test_serve_metrics_serves_the_process_metrics():
    from dj_operator.metrics import default_metrics, serve_metrics

    server = serve_metrics(0, host="127.0.0.1")
    try:
        assert server.metrics is default_metrics()
        default_metrics().index.upsert(djjob("served-default", namespace="team-z", started=T0))
        s = scrape(server.url)
        assert s.value("datajuicer_job_phase", phase="Running", job_name="served-default") == 1
    finally:
        default_metrics().index.remove("team-z", "served-default")
        server.close()


def test_api_requests_of_a_real_kubernetes_client_are_counted_by_code():
    """The official client against a local HTTP server that answers 200, then 404."""
    import http.server
    import json
    import threading

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from dj_operator.metrics import instrument_api_client

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.endswith("/namespaces/present")
            body = (
                {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "present"}}
                if found
                else {"kind": "Status", "apiVersion": "v1", "code": 404, "status": "Failure"}
            )
            data = json.dumps(body).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{httpd.server_port}"
        m = OperatorMetrics()
        api = client.CoreV1Api(instrument_api_client(client.ApiClient(cfg), m))
        assert api.read_namespace("present").metadata.name == "present"
        with pytest.raises(ApiException):
            api.read_namespace("absent")
        get = m.registry.get_sample_value
        assert get("datajuicer_operator_api_requests_total", {"verb": "get", "code": "200"}) == 1
        assert get("datajuicer_operator_api_requests_total", {"verb": "get", "code": "404"}) == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_finished_jobs_series_go_after_the_ttl_even_while_the_job_stays(served):
    """Cardinality: per-job series of finished jobs are bounded in time, not kept forever."""
    metrics, server, clock = served
    ttl = metrics.index.finished_ttl
    metrics.index.upsert(djjob("done", started=T0, completed=T0 + 500, phase="Succeeded"))
    metrics.index.upsert(djjob("live", started=T0))
    assert scrape(server.url).label_values("datajuicer_job_phase", "job_name") == {"done", "live"}
    clock.now = T0 + 500 + ttl + 1
    assert scrape(server.url).label_values("datajuicer_job_phase", "job_name") == {"live"}
    assert len(metrics.index) == 1  # its body is dropped too
