"""Reading a work dir back: job status, performance summary and a printable status report.

Works on any work dir, from any process, while the job runs or after it ended.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from dj_runner.atomic import read_records
from dj_runner.events import Event, read_events


def _n_ops(manifest: dict[str, Any]) -> int:
    return len(manifest["result_defining"]["process"])


def status(work_root: str | Path) -> dict[str, Any]:
    """Partitions done, failed and remaining; the last checkpoint; whether it can resume."""
    root = Path(work_root)
    try:
        manifest = json.loads((root / "job.json").read_text())
    except FileNotFoundError:
        return {"work_dir": str(root), "state": "empty", "resumable": False}
    try:
        plan = json.loads((root / "plan.json").read_text())
    except FileNotFoundError:
        plan = None
    result = None
    if (root / "result.json").exists():
        result = json.loads((root / "result.json").read_text())
    n_ops = _n_ops(manifest)
    events = read_events(
        root / "events",
        event_type=(
            "partition_failed",
            "partition_complete",
            "partition_start",
            "partition_resume",
        ),
    )
    last_event: dict[int, str] = {}
    for ev in events:
        if ev.partition_id is not None:
            last_event[ev.partition_id] = ev.event_type
    done, failed, remaining = [], [], []
    last_ckpt: dict[str, Any] | None = None
    pids = [p["pid"] for p in plan["partitions"]] if plan else []
    for pid in pids:
        commits = read_records(root / "checkpoints" / f"p{pid:05d}" / "commits.jsonl")
        newest = max(commits, key=lambda c: (c["step"], c.get("hashed", False)), default=None)
        if commits:
            latest = max(commits, key=lambda c: c.get("committed_at", 0))
            if last_ckpt is None or latest.get("committed_at", 0) > last_ckpt["committed_at"]:
                last_ckpt = {
                    "partition_id": pid,
                    "path": str(root / "checkpoints" / f"p{pid:05d}" / latest["file"]),
                    "after_op": latest["step"],
                    "op_name": latest.get("op_name"),
                    "rows": latest["rows"],
                    "committed_at": latest.get("committed_at", 0),
                }
        if newest is not None and newest["step"] >= n_ops and not newest.get("hashed"):
            done.append(pid)
        elif last_event.get(pid) == "partition_failed":
            failed.append(pid)
        else:
            remaining.append(pid)
    job_state = result["status"] if result else "running_or_interrupted"
    return {
        "work_dir": str(root),
        "job_id": manifest["job_id"],
        "state": job_state,
        "total_partitions": len(pids),
        "partitions_done": len(done),
        "partitions_failed": len(failed),
        "partitions_remaining": len(remaining),
        "failed_partitions": failed,
        "total_ops": n_ops,
        "last_checkpoint": last_ckpt,
        "resumable": plan is not None and job_state != "succeeded",
        "rows_in": result.get("rows_in") if result else None,
        "rows_out": result.get("rows_out") if result else None,
        "error": result.get("error") if result else None,
    }


def performance_summary(events: list[Event]) -> dict[str, Any]:
    """Time per op, rows in and out, and throughput, from op_complete events."""
    per_op: dict[tuple[int, str], dict[str, float]] = defaultdict(
        lambda: {"duration": 0.0, "rows_in": 0, "rows_out": 0, "runs": 0}
    )
    for ev in events:
        if ev.event_type != "op_complete":
            continue
        agg = per_op[(ev.get("operation_idx", -1), ev.get("operation_name", "?"))]
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


def status_report(work_root: str | Path) -> str:
    """A human-readable report of the job: status, partitions, ops, failures."""
    root = Path(work_root)
    st = status(root)
    if st["state"] == "empty":
        return f"{root}: no job here"
    events = read_events(root / "events")
    perf = performance_summary(events)
    lines = [
        f"Job {st['job_id']}  [{st['state']}]",
        f"  work dir:   {st['work_dir']}",
        f"  partitions: {st['partitions_done']} done, {st['partitions_failed']} failed, "
        f"{st['partitions_remaining']} remaining (of {st['total_partitions']})",
    ]
    if st["rows_in"] is not None:
        lines.append(f"  samples:    {st['rows_in']} in, {st['rows_out']} out")
    if perf["job_seconds"]:
        lines.append(f"  last run:   {perf['job_seconds']:.2f}s")
    ck = st["last_checkpoint"]
    if ck:
        lines.append(
            f"  last checkpoint: partition {ck['partition_id']} after op {ck['after_op']} "
            f"({ck['op_name']}), {ck['rows']} rows: {ck['path']}"
        )
    lines.append(f"  resumable:  {'yes' if st['resumable'] else 'no'}")
    if st["error"]:
        lines.append(f"  error:      {st['error']}")
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
