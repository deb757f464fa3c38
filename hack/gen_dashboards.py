"""Generate the Grafana dashboards shipped with the chart, from code (grafana-foundation-sdk).

    python hack/gen_dashboards.py            # write charts/datajuicer-operator/dashboards/*.json
    python hack/gen_dashboards.py --check    # exit 1 if the committed files differ

Three dashboards, one file each: the fleet ("Data-Juicer jobs"), one job ("Data-Juicer job",
with namespace and job variables) and the operator ("Data-Juicer operator"). Every panel
queries Prometheus through the ``datasource`` variable. Label names match the metrics:
``namespace`` and ``job_name`` (not ``job``, which Prometheus reserves for the scrape job).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import gauge, stat, timeseries
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from dj_operator.status import timeline

OUT_DIR = Path(__file__).resolve().parents[1] / "charts" / "datajuicer-operator" / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The rate window: Grafana's own, four scrape intervals at least.
W = "$__rate_interval"
#: The per-job selector of the job dashboard.
JOB = 'namespace="$namespace", job_name="$job"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _targets(panel: gd.Panel, queries: list[Query]) -> gd.Panel:
    for i, q in enumerate(queries):
        target = gp.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DS)
        if q.legend:
            target = target.legend_format(q.legend)
        panel = panel.with_target(target)
    return panel


def series(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    stacked: bool = False,
    width: int = 12,
) -> gd.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(8)
        .span(width)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    return _targets(panel, queries)


def single(
    title: str, description: str, queries: list[Query], unit: str = "short", width: int = 6
) -> gd.Panel:
    panel = stat.Panel().title(title).description(description).datasource(DS).unit(unit)
    panel = panel.reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    return _targets(panel.height(5).span(width), queries)


def dial(
    title: str, description: str, queries: list[Query], unit: str = "percentunit", width: int = 6
) -> gd.Panel:
    panel = gauge.Panel().title(title).description(description).datasource(DS).unit(unit)
    panel = panel.reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel = panel.min(0).max(1) if unit == "percentunit" else panel
    return _targets(panel.height(5).span(width), queries)


def _datasource_var() -> gd.DatasourceVariable:
    return gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _label_var(name: str, label: str, query: str) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": query, "refId": name})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _base(uid: str, title: str, description: str) -> gd.Dashboard:
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["datajuicer"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(_datasource_var())
    )


def fleet() -> gd.Dashboard:
    d = _base(
        "datajuicer-jobs",
        "Data-Juicer jobs",
        "Every DataJuicerJob the operator tracks: phases, outcomes, failures, time to Running,"
        " the durations between startup milestones.",
    ).with_variable(
        _label_var("namespace", "Namespace", "label_values(datajuicer_job_info, namespace)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    ns = 'namespace=~"$namespace"'
    d = (
        d.with_row(gd.Row("Jobs"))
        .with_panel(
            single(
                "Running",
                "Jobs in phase Running now.",
                [Query(f'sum(datajuicer_job_phase{{{ns}, phase="Running"}})')],
            )
        )
        .with_panel(
            single(
                "Failed",
                "Jobs in phase Failed (kept until they are deleted).",
                [Query(f'sum(datajuicer_job_phase{{{ns}, phase="Failed"}})')],
            )
        )
        .with_panel(
            dial(
                "Success rate",
                "Of the finished jobs still tracked: Succeeded or PartiallySucceeded / all finished.",
                [
                    Query(
                        f'sum(datajuicer_job_phase{{{ns}, phase=~"Succeeded|PartiallySucceeded"}})'
                        f" / clamp_min(sum(datajuicer_job_phase{{{ns}, "
                        f'phase=~"Succeeded|PartiallySucceeded|Failed"}}), 1)'
                    )
                ],
            )
        )
        .with_panel(
            single(
                "Tracked",
                "DataJuicerJobs in the operator's index.",
                [Query("sum(datajuicer_operator_tracked_jobs)")],
            )
        )
        .with_panel(
            series(
                "Jobs by phase",
                "How many jobs are in each phase.",
                [Query(f"sum by (phase) (datajuicer_job_phase{{{ns}}})", "{{phase}}")],
                stacked=True,
            )
        )
        .with_panel(
            series(
                "Failed jobs by reason",
                "Jobs now Failed, by failure reason.",
                [Query(f"sum by (reason) (datajuicer_job_failure{{{ns}}})", "{{reason}}")],
                stacked=True,
            )
        )
        .with_row(gd.Row("Outcomes"))
        .with_panel(
            series(
                "Failures by reason",
                "Jobs that ended Failed, per second, by reason.",
                [
                    Query(
                        f"sum by (reason) (rate(datajuicer_job_failures_total{{{ns}}}[{W}]))",
                        "{{reason}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Jobs finished by result",
                "Jobs reaching a final phase, per second.",
                [
                    Query(
                        f"sum by (phase) (rate(datajuicer_job_duration_seconds_count{{{ns}}}[{W}]))",
                        "{{phase}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Time to Running",
                "Seconds from creation to Running: median and 95th percentile.",
                [
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(datajuicer_job_time_to_running_seconds_bucket{{{ns}}}[{W}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Job duration",
                "Seconds from start to end, 95th percentile, by result.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (phase, le) "
                        f"(rate(datajuicer_job_duration_seconds_bucket{{{ns}}}[{W}])))",
                        "{{phase}}",
                    )
                ],
                unit="s",
            )
        )
    )
    d = d.with_row(gd.Row("Phase durations by mode"))
    for panel in phase_interval_panels(ns):
        d = d.with_panel(panel)
    return d


def _interval_title(interval: str) -> str:
    """``apply_to_pod_created`` -> ``Apply → pod created``."""
    text = interval.replace("_to_", " → ").replace("_", " ")
    return text[0].upper() + text[1:]


def phase_interval_panels(ns: str) -> list[gd.Panel]:
    """One panel per interval between startup milestones: p50, p90 and p99 by mode."""
    panels = []
    for interval in timeline.INTERVALS:
        modes = [m for m in timeline.ORDER if interval in timeline.mode_intervals(m)]
        modes = [m for m in modes if m != "external"]  # reached in the order of local mode
        panels.append(
            series(
                _interval_title(interval),
                f"Seconds from one startup milestone to the next ({' and '.join(modes)} mode):"
                " p50, p90 and p99 by mode, of the jobs that reached it in the window.",
                [
                    Query(
                        f"histogram_quantile({q}, sum by (mode, le) "
                        f"(rate(datajuicer_job_phase_interval_seconds_bucket{{{ns}, "
                        f'interval="{interval}"}}[{W}])))',
                        f"{{{{mode}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ],
                unit="s",
                width=8,
            )
        )
    return panels


def job() -> gd.Dashboard:
    d = (
        _base(
            "datajuicer-job",
            "Data-Juicer job",
            "One DataJuicerJob: progress, throughput per op, checkpoints, retries and failures.",
        )
        .with_variable(
            _label_var("namespace", "Namespace", "label_values(datajuicer_job_info, namespace)")
        )
        .with_variable(
            _label_var(
                "job",
                "Job",
                'label_values(datajuicer_job_info{namespace="$namespace"}, job_name)',
            )
        )
    )
    return (
        d.with_row(gd.Row("Progress"))
        .with_panel(
            dial(
                "Progress",
                "Partitions finished / total.",
                [Query(f"max(datajuicer_job_progress_ratio{{{JOB}}})")],
            )
        )
        .with_panel(
            single(
                "ETA",
                "Estimated time to completion, while Running.",
                [Query(f"max(datajuicer_job_eta_seconds{{{JOB}}})")],
                unit="s",
            )
        )
        .with_panel(
            single(
                "Phase",
                "The job's phase now.",
                [Query(f"max by (phase) (datajuicer_job_phase{{{JOB}}}) == 1", "{{phase}}")],
            )
        )
        .with_panel(
            single(
                "Checkpoint age",
                "Seconds since the runner last committed a checkpoint.",
                [Query(f"time() - max(datajuicer_job_last_checkpoint_timestamp_seconds{{{JOB}}})")],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Partitions",
                "Partitions by state.",
                [Query(f"max by (state) (datajuicer_job_partitions{{{JOB}}})", "{{state}}")],
            )
        )
        .with_panel(
            series(
                "Samples",
                "Samples in and out of the partitions done.",
                [
                    Query(f"max(datajuicer_job_input_samples{{{JOB}}})", "in"),
                    Query(f"max(datajuicer_job_output_samples{{{JOB}}})", "out"),
                ],
            )
        )
        .with_row(gd.Row("Ops"))
        .with_panel(
            series(
                "Throughput per op",
                "Samples each op passes on, per second.",
                [
                    Query(
                        "sum by (op) "
                        f"(rate(datajuicer_runner_op_output_samples_total{{{JOB}}}[{W}]))",
                        "{{op}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Drop rate per op",
                "Share of the samples each op removes (filters and deduplicators).",
                [
                    Query(
                        "sum by (op) "
                        f"(rate(datajuicer_runner_op_dropped_samples_total{{{JOB}}}[{W}])) / "
                        "sum by (op) "
                        f"(rate(datajuicer_runner_op_input_samples_total{{{JOB}}}[{W}]))",
                        "{{op}}",
                    )
                ],
                unit="percentunit",
            )
        )
        .with_panel(
            series(
                "Op duration per partition (p95)",
                "95th percentile of the time one op takes on one partition.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (op, le) "
                        f"(rate(datajuicer_runner_op_duration_seconds_bucket{{{JOB}}}[{W}])))",
                        "{{op}}",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Input read",
                "Bytes and samples read from the input, per second.",
                [
                    Query(
                        f"sum(rate(datajuicer_runner_input_bytes_total{{{JOB}}}[{W}]))", "bytes/s"
                    ),
                ],
                unit="Bps",
            )
        )
        .with_row(gd.Row("Checkpoints"))
        .with_panel(
            series(
                "Checkpoint write latency",
                "Time to write, fsync and commit one checkpoint: p50 and p95.",
                [
                    Query(
                        f"histogram_quantile({q}, sum by (le) (rate("
                        f"datajuicer_runner_checkpoint_write_duration_seconds_bucket{{{JOB}}}[{W}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Checkpoint size",
                "Average size of a committed checkpoint, and bytes committed per second.",
                [
                    Query(
                        f"sum(rate(datajuicer_runner_checkpoint_size_bytes_sum{{{JOB}}}[{W}])) / "
                        f"sum(rate(datajuicer_runner_checkpoint_size_bytes_count{{{JOB}}}[{W}]))",
                        "average size",
                    ),
                    Query(
                        f"sum(rate(datajuicer_runner_checkpoint_written_bytes_total{{{JOB}}}[{W}]))",
                        "bytes/s",
                    ),
                ],
                unit="bytes",
            )
        )
        .with_row(gd.Row("Resources"))
        .with_panel(
            series(
                "CPU by op",
                "CPU seconds per second the worker processes spent in each op (about the "
                "cores it keeps busy).",
                [
                    Query(
                        f"sum by (op) (rate(datajuicer_runner_op_cpu_seconds_total{{{JOB}}}[{W}]))",
                        "{{op}}",
                    )
                ],
                unit="short",
                stacked=True,
            )
        )
        .with_panel(
            series(
                "Peak memory",
                "The highest peak RSS of a worker process, overall and while each op ran.",
                [
                    Query(f"max(datajuicer_runner_worker_peak_rss_bytes{{{JOB}}})", "worker peak"),
                    Query(f"max by (op) (datajuicer_runner_op_peak_rss_bytes{{{JOB}}})", "{{op}}"),
                ],
                unit="bytes",
            )
        )
        .with_panel(
            series(
                "Disk I/O",
                "Bytes per second read (input, checkpoints resumed from) and written "
                "(checkpoints, rejects).",
                [
                    Query(
                        f"sum(rate(datajuicer_runner_input_bytes_total{{{JOB}}}[{W}])) + "
                        f"sum(rate(datajuicer_runner_checkpoint_read_bytes_total{{{JOB}}}[{W}]))",
                        "read",
                    ),
                    Query(
                        f"sum(rate(datajuicer_runner_written_bytes_total{{{JOB}}}[{W}]))",
                        "written",
                    ),
                ],
                unit="Bps",
            )
        )
        .with_panel(
            series(
                "Work dir size",
                "Disk space the job's work dir uses: checkpoints, event log and state files.",
                [Query(f"max(datajuicer_runner_work_dir_bytes{{{JOB}}})", "work dir")],
                unit="bytes",
            )
        )
        .with_row(gd.Row("Retries and failures"))
        .with_panel(
            series(
                "Retries and restarts",
                "Partition retries per second, and the runner's restarts.",
                [
                    Query(
                        f"sum(rate(datajuicer_runner_partitions_retried_total{{{JOB}}}[{W}]))",
                        "partition retries/s",
                    ),
                    Query(f"max(datajuicer_job_restarts{{{JOB}}})", "runner restarts"),
                ],
            )
        )
        .with_panel(
            series(
                "Failures",
                "Partitions failed after retries, and op failures, per second.",
                [
                    Query(
                        f"sum(rate(datajuicer_runner_partitions_failed_total{{{JOB}}}[{W}]))",
                        "partitions failed",
                    ),
                    Query(
                        f"sum by (op) (rate(datajuicer_runner_op_failures_total{{{JOB}}}[{W}]))",
                        "{{op}} failures",
                    ),
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Events by type",
                "Events the runner and its tasks logged, per second.",
                [
                    Query(
                        f"sum by (type) (rate(datajuicer_runner_events_total{{{JOB}}}[{W}]))",
                        "{{type}}",
                    )
                ],
                unit="ops",
                stacked=True,
                width=24,
            )
        )
    )


def operator() -> gd.Dashboard:
    d = _base(
        "datajuicer-operator",
        "Data-Juicer operator",
        "The datajuicer-operator's health: reconciles, errors, latency, API calls, watch freshness.",
    )
    return (
        d.with_row(gd.Row("Reconciles"))
        .with_panel(
            series(
                "Reconcile rate",
                "Handler calls per second, by handler.",
                [
                    Query(
                        f"sum by (handler) (rate(datajuicer_operator_reconciles_total[{W}]))",
                        "{{handler}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Reconcile errors",
                "Handler calls that raised, per second, by handler.",
                [
                    Query(
                        f"sum by (handler) (rate(datajuicer_operator_reconcile_errors_total[{W}]))",
                        "{{handler}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            series(
                "Reconcile duration (p95)",
                "95th percentile of one handler call.",
                [
                    Query(
                        "histogram_quantile(0.95, sum by (handler, le) "
                        f"(rate(datajuicer_operator_reconcile_duration_seconds_bucket[{W}])))",
                        "{{handler}}",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Kubernetes API requests",
                "Requests per second, by HTTP status code.",
                [
                    Query(
                        f"sum by (code) (rate(datajuicer_operator_api_requests_total[{W}]))",
                        "{{code}}",
                    )
                ],
                unit="reqps",
            )
        )
        .with_row(gd.Row("Watch and Events"))
        .with_panel(
            series(
                "Watch freshness",
                "Seconds since the last watch event, by kind.",
                [
                    Query(
                        "time() - max by (kind) "
                        "(datajuicer_operator_watch_last_event_timestamp_seconds)",
                        "{{kind}}",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            series(
                "Kubernetes Events",
                "Events posted and suppressed by the rate limit, per second, by reason.",
                [
                    Query(
                        f"sum by (reason) (rate(datajuicer_operator_events_posted_total[{W}]))",
                        "posted {{reason}}",
                    ),
                    Query(
                        f"sum by (reason) (rate(datajuicer_operator_events_suppressed_total[{W}]))",
                        "suppressed {{reason}}",
                    ),
                ],
                unit="ops",
            )
        )
        .with_panel(
            single(
                "Tracked jobs",
                "DataJuicerJobs in the operator's index.",
                [Query("sum(datajuicer_operator_tracked_jobs)")],
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], gd.Dashboard]] = {
    "datajuicer-jobs.json": fleet,
    "datajuicer-job.json": job,
    "datajuicer-operator.json": operator,
}


def render() -> dict[str, str]:
    """Each dashboard file's name and its JSON text."""
    return {
        name: json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where to write the files")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(
            "stale dashboards (run: python hack/gen_dashboards.py): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
