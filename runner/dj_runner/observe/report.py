"""Reading a work dir back: job status, performance summary and a printable status report.

Works on any work dir, from any process, while the job runs or after it ended. ``status``
reads only ``status.json`` (and the lock, to tell a live run from a killed one); the report
adds the event log's per-op figures.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dj_runner.observe.event_log import Event, read_events
from dj_runner.observe.status_file import read_status
from dj_runner.store.fencing import read_claim
from dj_runner.store.lock import is_locked, read_holder
from dj_runner.store.workdir import WorkDir


def status(work_root: str | Path) -> dict[str, Any]:
    """The current run's status, from ``status.json`` alone: constant time, no event log.

    ``state`` is the recorded one, except that a run recorded as ``running`` whose runner no
    longer holds the work dir's lock is reported ``interrupted`` (it was killed).
    """
    work = WorkDir(work_root)
    root = work.uri
    st = read_status(root)
    if st is None:
        if not work.blobs.exists(WorkDir.MANIFEST):
            return {"work_dir": root, "state": "empty", "resumable": False}
        st = {"state": "not_started", "partitions": None, "samples": None}
    alive = is_locked(root)
    state = st.get("state")
    if state == "running" and not alive:
        state = "interrupted"
    parts = st.get("partitions") or {"total": 0, "done": 0, "failed": 0, "running": 0}
    if not parts.get("total"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            parts = {**parts, "total": len(work.blobs.read_json(WorkDir.PLAN)["partitions"])}
    claim = read_claim(root)
    runs = int(claim["epoch"]) if claim and isinstance(claim.get("epoch"), int) else 0
    return {
        **st,
        "work_dir": root,
        "state": state,
        # Each run that took over the work dir raised the claim's epoch: after the first,
        # each one is a restart (what the operator counts as the job's restarts).
        "runs": runs,
        "restarts": max(0, runs - 1),
        "recorded_state": st.get("state"),
        "runner_alive": alive,
        "holder": asdict(h) if (alive and (h := read_holder(root))) else None,
        "partitions": parts,
        "resumable": state not in ("succeeded", "running"),
    }


def performance_summary(events: list[Event]) -> dict[str, Any]:
    """Time per op, rows in and out, and throughput, from op_complete events.

    Each partition counts once per op, with its latest computation (the one its output comes
    from): a partition recomputed by a rerun, a resume or a retry is not added up twice.
    """
    latest: dict[tuple[int, str, Any], Event] = {}
    for ev in events:
        if ev.event_type == "op_complete":
            key = (ev.get("operation_idx", -1), ev.get("operation_name", "?"), ev.partition_id)
            latest[key] = ev
    per_op: dict[tuple[int, str], dict[str, float]] = defaultdict(
        lambda: {"duration": 0.0, "rows_in": 0, "rows_out": 0, "runs": 0}
    )
    for (idx, name, _), ev in latest.items():
        agg = per_op[(idx, name)]
        agg["duration"] += ev.get("duration", 0.0)
        agg["rows_in"] += ev.get("input_rows", 0)
        agg["rows_out"] += ev.get("output_rows", 0)
        agg["runs"] += 1
    ops = []
    for (idx, name), agg in sorted(per_op.items()):
        d = agg["duration"]
        ops.append(
            {
                "op_idx": idx,
                "op_name": name,
                "partitions": int(agg["runs"]),
                "seconds": round(d, 6),
                "rows_in": int(agg["rows_in"]),
                "rows_out": int(agg["rows_out"]),
                "rows_per_second": round(agg["rows_in"] / d, 1) if d > 0 else None,
            }
        )
    starts = [e.timestamp for e in events if e.event_type in ("job_start", "job_restart")]
    ends = [e for e in events if e.event_type in ("job_complete", "job_failed")]
    job_seconds = ends[-1].timestamp - starts[-1] if starts and ends else None
    complete = [e for e in ends if e.event_type == "job_complete"]
    rows_in = complete[-1].get("input_rows") if complete else None
    return {
        "ops": ops,
        "job_seconds": job_seconds,
        "rows_in": rows_in,
        "rows_out": complete[-1].get("output_rows") if complete else None,
        "rows_per_second": round(rows_in / job_seconds, 1) if rows_in and job_seconds else None,
        "events": len(events),
        "retries": sum(1 for e in events if e.event_type == "partition_retry"),
        "invalid_checkpoints": sum(1 for e in events if e.event_type == "checkpoint_invalid"),
    }


def format_status(st: dict[str, Any]) -> list[str]:
    """The status as lines for a person."""
    if st["state"] == "empty":
        return [f"{st['work_dir']}: no job here"]
    p = st["partitions"]
    lines = [f"job {st.get('job_id')}: {st['state']}"]
    if st.get("recorded_state") == "running" and st["state"] == "interrupted":
        lines[0] += " (its runner is gone; rerun the same command to resume)"
    if st.get("holder"):
        h = st["holder"]
        lines.append(f"runner: run {h['run_id']}, pid {h['pid']} on {h['host']}")
    remaining = p["total"] - p["done"] - p["failed"]
    lines.append(
        f"partitions: {p['done']} done, {p['failed']} failed, {p.get('running', 0)} running, "
        f"{max(0, remaining)} remaining (of {p['total']})"
    )
    if st.get("samples"):
        s = st["samples"]
        lines.append(f"samples: {s['in']} in, {s['out']} out, {s['rejected']} rejected")
    if st.get("stage"):
        g = " (global)" if st["stage"].get("global") else ""
        lines.append(f"stage: #{st['stage']['index']} {st['stage']['op']}{g}")
    if st.get("estimated_completion_at") and st["state"] == "running":
        lines.append(f"estimated completion: {st['estimated_completion_at']}")
    lines.append(f"last checkpoint: {st.get('last_checkpoint_at') or 'none'}")
    if st.get("runs"):
        lines.append(f"runs: {st['runs']} ({st['restarts']} restarts)")
    if st.get("updated_at"):
        lines.append(f"updated: {st['updated_at']}")
    if st.get("error"):
        lines.append(f"error: {st['error'].get('message')}")
    lines.append(f"resumable: {'yes' if st['resumable'] else 'no'}")
    return lines


def status_report(work_root: str | Path) -> str:
    """A human-readable report of the job: status, per-op figures, failures."""
    root = WorkDir(work_root).uri
    st = status(root)
    if st["state"] == "empty":
        return f"{root}: no job here"
    events = read_events(WorkDir(root).events_uri)
    perf = performance_summary(events)
    lines = [f"Job {st.get('job_id')}  [{st['state']}]", f"  work dir:   {root}"]
    lines += ["  " + line for line in format_status(st)[1:]]
    if perf["job_seconds"]:
        lines.append(f"  last run:   {perf['job_seconds']:.2f}s")
    if perf["ops"]:
        lines.append("")
        lines.append(
            f"  {'#':>3} {'op':<36} {'seconds':>9} {'rows in':>10} {'rows out':>10} {'rows/s':>11}"
        )
        for op in perf["ops"]:
            rps = f"{op['rows_per_second']:.0f}" if op["rows_per_second"] else "-"
            lines.append(
                f"  {op['op_idx']:>3} {op['op_name']:<36} {op['seconds']:>9.3f} "
                f"{op['rows_in']:>10} {op['rows_out']:>10} {rps:>11}"
            )
    fails = [e for e in events if e.event_type in ("partition_failed", "op_failed", "job_failed")]
    if fails:
        lines.append("")
        lines.append("  failures:")
        for e in fails[-10:]:
            lines.append(f"    {e.event_type}: {e.message}")
    return "\n".join(lines)
