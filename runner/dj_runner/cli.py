"""The ``dj-runner`` command line: run, status, events, report, validate, ops.

Exit codes: 0 succeeded; 1 failed; 2 invalid recipe or arguments; 3 partially succeeded;
4 resume refused (the work dir belongs to another recipe or input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dj_runner.errors import InputError, RecipeError, ResumeRefused
from dj_runner.events import follow_events, read_events

if TYPE_CHECKING:
    from dj_runner.recipe import Recipe


def _cmd_run(args: argparse.Namespace) -> int:
    from dj_runner.executor import EXIT_REFUSED, EXIT_USAGE, Executor
    from dj_runner.progress import make_progress
    from dj_runner.ray_env import RayAddressError, preflight

    try:
        recipe = _load_and_preflight(args.recipe, args.work_dir)
        preflight(args.ray_address or recipe.ray_address)  # before --restart deletes anything
    except (RecipeError, InputError, RayAddressError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    executor = Executor(
        recipe,
        work_dir=args.work_dir,
        job_id=args.job_id,
        restart=args.restart,
        progress=make_progress(sys.stderr),
        ray_address=args.ray_address,
    )
    try:
        result = executor.run()
    except ResumeRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RayAddressError as exc:  # answered the preflight, but no Ray connection came of it
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.status == "failed":
        print(f"job {result.job_id} failed: {result.error}", file=sys.stderr)
        print(
            f"  resume with the same command; details: dj-runner report {result.work_dir}",
            file=sys.stderr,
        )
    else:
        line = f"job {result.job_id} {result.status}: {result.rows_in} -> {result.rows_out} samples"
        line += f" in {result.duration:.1f}s; output: {result.export_path}"
        if result.failed_partitions:
            line += f"; failed partitions: {result.failed_partitions}"
        if result.rejected:
            line += f"; {result.rejected} malformed records in {result.work_dir}/rejects/"
        print(line, file=sys.stderr)
    return result.exit_code


def _load_and_preflight(recipe_path: str, work_dir: str | None) -> Recipe:
    """The recipe, checked against the filesystem as ``run`` needs it (dj_runner.preflight)."""
    from dj_runner.executor import default_work_dir
    from dj_runner.preflight import preflight
    from dj_runner.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    preflight(recipe, work_dir or recipe.work_dir or default_work_dir(recipe))
    return recipe


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        recipe = _load_and_preflight(args.recipe, args.work_dir)
    except (RecipeError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {len(recipe.process)} ops, fingerprint {recipe.fingerprint()}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from dj_runner.report import status

    st = status(args.work_dir)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    if st["state"] == "empty":
        print(f"{args.work_dir}: no job here")
        return 1
    print(f"job {st['job_id']}: {st['state']}")
    print(
        f"partitions: {st['partitions_done']} done, {st['partitions_failed']} failed, "
        f"{st['partitions_remaining']} remaining (of {st['total_partitions']})"
    )
    ck = st["last_checkpoint"]
    print("last checkpoint: " + (f"{ck['path']} (after op {ck['after_op']})" if ck else "none"))
    print(f"resumable: {'yes' if st['resumable'] else 'no'}")
    return 0


def _format_event(ev_dict: dict) -> str:
    ts = datetime.fromtimestamp(ev_dict["timestamp"]).strftime("%H:%M:%S.%f")[:-3]
    pid = ev_dict.get("partition_id")
    where = f" p{pid}" if pid is not None else ""
    return f"{ts} {ev_dict['event_type']:<20}{where} {ev_dict.get('message', '')}"


def _cmd_events(args: argparse.Namespace) -> int:
    events_dir = Path(args.work_dir) / "events"
    types = set(args.type or [])

    def show(ev) -> None:
        if types and ev.event_type not in types:
            return
        d = ev.to_dict()
        print(json.dumps(d, default=str) if args.json else _format_event(d), flush=True)

    if args.follow:
        try:
            for ev in follow_events(
                events_dir, until=("job_complete", "job_failed") if args.until_done else ()
            ):
                show(ev)
        except KeyboardInterrupt:
            pass
        return 0
    for ev in read_events(events_dir, partition_id=args.partition):
        show(ev)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dj_runner.report import performance_summary, status_report

    if args.json:
        print(
            json.dumps(performance_summary(read_events(Path(args.work_dir) / "events")), indent=2)
        )
    else:
        print(status_report(args.work_dir))
    return 0


def _cmd_ops(args: argparse.Namespace) -> int:
    import dataclasses

    from dj_runner.ops import all_ops

    for name, cls in sorted(all_ops().items()):
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        print(f"{name}({params})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dj-runner",
        description="Run Data-Juicer recipes partitioned, checkpointed and resumable, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a recipe")
    run.add_argument("recipe", help="the recipe YAML file")
    run.add_argument("--work-dir", help="checkpoints, plan and event log (default: beside export)")
    run.add_argument("--job-id", help="a name for the job (default: from the recipe or generated)")
    run.add_argument(
        "--restart",
        action="store_true",
        help="discard the work dir's earlier progress and start over",
    )
    run.add_argument("--ray-address", help="auto, ray://host:port or host:port (default: embedded)")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a recipe without running it")
    val.add_argument("recipe")
    val.add_argument("--work-dir", help="the work dir run would use (default: beside export)")
    val.set_defaults(func=_cmd_validate)

    st = sub.add_parser("status", help="partitions done, failed and remaining; resumable or not")
    st.add_argument("work_dir")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)

    ev = sub.add_parser("events", help="print the event log")
    ev.add_argument("work_dir")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--until-done", action="store_true", help="with --follow: stop at job end")
    ev.add_argument("--type", "-t", action="append", help="only this event type (repeatable)")
    ev.add_argument("--partition", "-p", type=int, help="only this partition")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.set_defaults(func=_cmd_events)

    rep = sub.add_parser("report", help="status and per-op performance")
    rep.add_argument("work_dir")
    rep.add_argument("--json", action="store_true", help="the performance summary as JSON")
    rep.set_defaults(func=_cmd_report)

    ops = sub.add_parser("ops", help="list the built-in ops and their parameters")
    ops.set_defaults(func=_cmd_ops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = int(args.func(args))
    if args.command == "run" and _embedded_ray_running():
        # Ray's own graceful shutdown would add seconds to every run for nothing: the
        # embedded Ray's processes are stopped at once, then this process exits.
        from dj_runner.ray_env import stop_embedded

        sys.stdout.flush()
        sys.stderr.flush()
        stop_embedded()
        os._exit(code)
    return code


def _embedded_ray_running() -> bool:
    if "ray" not in sys.modules:
        return False
    from dj_runner.ray_env import is_embedded

    return is_embedded()


if __name__ == "__main__":
    sys.exit(main())
