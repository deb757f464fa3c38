"""The ``dj-runner`` command line: run, status, events, report, clean, validate, ops.

The exit codes and their meanings are the contract's (``contract.ExitCode``; docs/runner.md).
Nothing a user does ends in a Python traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import traceback
from datetime import datetime
from typing import Any

from dj_runner import contract
from dj_runner.contract import ExitCode
from dj_runner.errors import (
    InputError,
    Interrupted,
    InvalidInput,
    NoSpace,
    RecipeError,
    ResumeRefused,
)
from dj_runner.observe.event_log import (
    EVENT_TYPES,
    RUNNER_EVENT_TYPES,
    follow_events,
    read_events,
)
from dj_runner.recipe.keys import ENGINES, RETENTION_CHECKPOINTS
from dj_runner.store.workdir import WorkDir

#: Event types the driver adds to the log's standard ones.
JOB_END_EVENTS = ("job_complete", "job_failed", "job_interrupted")


def _error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


NO_SPACE_HINT = (
    "  free space on that filesystem (or enlarge the volume), then resume with the same "
    "command: committed checkpoints are kept"
)


def _no_space(exc: NoSpace, hint: str = NO_SPACE_HINT) -> int:
    _error(str(exc))
    print(hint, file=sys.stderr)
    return ExitCode.NO_SPACE


def load_checked_recipe(path: str, work_dir: str | None = None, job_id: str | None = None) -> Any:
    """Load the recipe and run every check ``run`` would, before any work.

    The one place ``validate`` and ``run`` load and check a recipe. Raises RecipeError or InvalidInput.
    """
    from dj_runner.io.export import check_export_target
    from dj_runner.io.sources import list_sources
    from dj_runner.plan.manifest import resolve_work_dir
    from dj_runner.plan.preflight import preflight
    from dj_runner.recipe.parse import load_recipe
    from dj_runner.store.location import configure_s3

    try:
        recipe = load_recipe(path, job_id=job_id, work_dir=work_dir)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"recipe file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    configure_s3(recipe.s3)
    list_sources(recipe.dataset_path)  # no input is an error before any work
    # Paths, patterns, text keys and writability, checked against the filesystem as run needs it
    # (the default work dir checks project_name as a path component).
    preflight(recipe, resolve_work_dir(recipe, work_dir))
    check_export_target(recipe.export_path)
    return recipe


def _seconds(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name}: got {value}; expected a finite number of seconds >= 0")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from dj_runner.engine.executor import Executor
    from dj_runner.engine.ray_env import RayAddressError
    from dj_runner.engine.ray_env import preflight as ray_preflight
    from dj_runner.observe.console import make_progress
    from dj_runner.store.lock import WorkDirLocked

    try:
        wait_s = _seconds("--wait-for-lock", args.wait_for_lock)
        grace_s = _seconds("--grace-period", args.grace_period)
        recipe = load_checked_recipe(args.recipe, args.work_dir, args.job_id)
        ray_preflight(args.ray_address or recipe.ray_address)  # before --restart deletes anything
        executor = Executor(
            recipe,
            work_dir=args.work_dir,
            job_id=args.job_id,
            restart=args.restart,
            progress=make_progress(sys.stderr),
            ray_address=args.ray_address,
            engine=args.engine,
            wait_for_lock_s=wait_s,
            grace_period_s=grace_s,
            handle_signals=True,
            run_id=getattr(args, "run_id", None),
        )
        metrics = None
        if args.metrics_port is not None:
            from dj_runner.observe.metrics import serve_metrics

            metrics = serve_metrics(
                executor.work.uri,
                args.metrics_port,
                host=args.metrics_host,
                run_id=executor.run_id,
            )
        try:
            result = executor.run()
        finally:
            if metrics is not None:
                metrics.close()
    except (RecipeError, InvalidInput, InputError, RayAddressError) as exc:
        _error(str(exc))
        return ExitCode.USAGE
    except WorkDirLocked as exc:
        _error(str(exc))
        return ExitCode.LOCKED
    except ResumeRefused as exc:
        _error(str(exc))
        return ExitCode.REFUSED
    except Interrupted as exc:  # a signal before the run owned the work dir
        _error(str(exc))
        return ExitCode.INTERRUPTED
    except NoSpace as exc:  # before the run owned the work dir: the lock, claim, manifest
        return _no_space(exc)
    code = result.exit_code
    if result.status == "interrupted":
        print(
            f"job {result.job_id} interrupted; its committed checkpoints are kept: "
            "resume with the same command",
            file=sys.stderr,
        )
    elif result.status == "failed":
        print(f"job {result.job_id} failed: {result.error}", file=sys.stderr)
        if code == ExitCode.REFUSED:
            pass  # the message says what to do; rerunning unchanged would be refused again
        elif code == ExitCode.USAGE:
            print("  fix the input and run again", file=sys.stderr)
        elif code == ExitCode.INTERNAL:
            print(
                f"  this is a bug in dj-runner; the stack trace is in the event log "
                f"(dj-runner events {result.work_dir} -t job_failed --json)",
                file=sys.stderr,
            )
        elif code == ExitCode.RAY_UNAVAILABLE:
            print("  Ray went away; resume with the same command once it is back", file=sys.stderr)
        elif code == ExitCode.NO_SPACE:
            print(NO_SPACE_HINT, file=sys.stderr)
        elif code == ExitCode.LOCKED:  # superseded: rerunning would supersede the newer run
            print(
                "  a newer run owns the work dir and carries the job on; nothing to do here",
                file=sys.stderr,
            )
        else:
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
            line += f"; {result.rejected} malformed records in {WorkDir(result.work_dir).show(WorkDir.REJECTS)}/"
        print(line, file=sys.stderr)
    return code


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        recipe = load_checked_recipe(args.recipe, args.work_dir)
    except (RecipeError, InvalidInput, InputError) as exc:
        _error(str(exc))
        return ExitCode.USAGE
    except NoSpace as exc:
        return _no_space(exc, "  free space on that filesystem (or enlarge the volume)")
    for notice in recipe.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(f"ok: {len(recipe.process)} ops, fingerprint {recipe.fingerprint()}")
    return ExitCode.OK


def _require_work_dir(path: str) -> str | None:
    """The work dir's path or ``s3://`` URI, if a runner has used it; else an error."""
    from dj_runner.errors import RunnerError

    try:
        work = WorkDir(path)
        used = (not work.is_local or work.root.is_dir()) and work.is_work_dir()
    except (RunnerError, RecipeError) as exc:
        _error(f"{path}: {exc}")
        return None
    if not used:
        names = f"{contract.JOB_FILE}, {contract.STATUS_FILE} or {contract.EVENTS_DIR}/"
        _error(f"{path} is not a dj-runner work dir (no {names})")
        return None
    return work.uri


def _cmd_status(args: argparse.Namespace) -> int:
    from dj_runner.observe.report import format_status, status

    root = _require_work_dir(args.work_dir)
    if root is None:
        return ExitCode.USAGE
    st = status(root)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        print("\n".join(format_status(st)))
    return ExitCode.OK


def _format_event(ev_dict: dict) -> str:
    ts = datetime.fromtimestamp(ev_dict["timestamp"]).strftime("%H:%M:%S.%f")[:-3]
    pid = ev_dict.get("partition_id")
    where = f" p{pid}" if pid is not None else ""
    return f"{ts} {ev_dict['event_type']:<20}{where} {ev_dict.get('message', '')}"


def _cmd_events(args: argparse.Namespace) -> int:
    root = _require_work_dir(args.work_dir)
    if root is None:
        return ExitCode.USAGE
    types = set(args.type or [])
    unknown = types - EVENT_TYPES - RUNNER_EVENT_TYPES
    if unknown:
        valid = ", ".join(sorted(EVENT_TYPES | RUNNER_EVENT_TYPES))
        _error(f"--type: unknown event type(s) {sorted(unknown)}; valid: {valid}")
        return ExitCode.USAGE
    if args.partition is not None and args.partition < 0:
        _error(f"--partition: got {args.partition}; expected a partition number >= 0")
        return ExitCode.USAGE
    events_dir = WorkDir(root).events_uri

    def show(ev) -> None:
        if types and ev.event_type not in types:
            return
        if args.partition is not None and ev.partition_id != args.partition:
            return
        d = ev.to_dict()
        print(json.dumps(d, default=str) if args.json else _format_event(d), flush=True)

    if args.follow:
        for ev in follow_events(events_dir, until=JOB_END_EVENTS if args.until_done else ()):
            show(ev)
        return ExitCode.OK
    for ev in read_events(events_dir, partition_id=args.partition):
        show(ev)
    return ExitCode.OK


def _cmd_report(args: argparse.Namespace) -> int:
    from dj_runner.observe.report import performance_summary, status_report

    root = _require_work_dir(args.work_dir)
    if root is None:
        return ExitCode.USAGE
    if args.json:
        print(json.dumps(performance_summary(read_events(WorkDir(root).events_uri)), indent=2))
    else:
        print(status_report(root))
    return ExitCode.OK


def _cmd_clean(args: argparse.Namespace) -> int:
    from dj_runner.engine.retention import clean
    from dj_runner.recipe.parse import load_recipe, retention_config
    from dj_runner.store.lock import WorkDirLocked

    root = _require_work_dir(args.work_dir)
    if root is None:
        return ExitCode.USAGE
    flags = {
        "checkpoints": args.checkpoints,
        "event_log_max_age_days": args.event_log_max_age_days,
        "event_log_max_segments": args.event_log_max_segments,
    }
    try:
        policy = load_recipe(args.recipe).retention if args.recipe else retention_config({})
        given = {k: v for k, v in flags.items() if v is not None}
        policy = retention_config({**dataclasses.asdict(policy), **given})
    except RecipeError as exc:
        _error(f"{exc} (the --recipe's retention block, or the option of that name)")
        return ExitCode.USAGE
    try:
        wait = _seconds("--wait-for-lock", args.wait_for_lock)
        done = clean(WorkDir(root), policy, dry_run=args.dry_run, wait_for_lock_s=wait)
    except InvalidInput as exc:
        _error(str(exc))
        return ExitCode.USAGE
    except WorkDirLocked as exc:
        _error(str(exc))
        return ExitCode.LOCKED
    verb = "would remove" if args.dry_run else "removed"
    for e in done.entries:
        print(f"{verb} {e.path} ({e.bytes:,} bytes): {e.why}")
    if args.dry_run:
        total = sum(e.bytes for e in done.entries)
        print(f"would free {total:,} bytes ({len(done.entries)} entries); job {done.state}")
    else:
        print(
            f"freed {done.bytes_freed:,} bytes ({len(done.entries)} entries); job {done.state}; "
            f"the work dir now holds {done.bytes_left:,} bytes"
        )
    return ExitCode.OK


def _cmd_ops(args: argparse.Namespace) -> int:
    from dj_runner.ops import all_ops

    for name, cls in sorted(all_ops().items()):
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        print(f"{name}({params})")
    return ExitCode.OK


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
    run.add_argument(
        "--engine",
        choices=ENGINES,
        help="where tasks run: ray, local processes (no Ray), or auto (the recipe's engine "
        "key; default auto: local for small inputs when no Ray cluster is named)",
    )
    run.add_argument(
        "--wait-for-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another live runner holds the work dir, wait this long for it (default: 0, "
        "give up at once with exit 5)",
    )
    run.add_argument(
        "--grace-period",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="after SIGTERM/SIGINT, how long in-flight checkpoints may take (default: 20)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics of this run on PORT (0: any free port) while it runs",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics endpoint binds (default 127.0.0.1; 0.0.0.0 in a pod)",
    )
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a recipe without running it")
    val.add_argument("recipe")
    val.add_argument("--work-dir", help="the work dir run would use (default: beside export)")
    val.set_defaults(func=_cmd_validate)

    st = sub.add_parser("status", help="the current run's state, partitions and samples")
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

    cl = sub.add_parser(
        "clean", help="remove what a finished job no longer needs (its retention policy)"
    )
    cl.add_argument("work_dir")
    cl.add_argument("--recipe", help="take the policy from this recipe's retention block")
    cl.add_argument(
        "--checkpoints",
        choices=RETENTION_CHECKPOINTS,
        help="what a succeeded job keeps of its checkpoints (default: final)",
    )
    cl.add_argument("--event-log-max-age-days", type=float, help="older earlier-run segments go")
    cl.add_argument("--event-log-max-segments", type=int, help="earlier-run segments kept")
    cl.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    cl.add_argument(
        "--wait-for-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a runner holding the work dir to finish",
    )
    cl.set_defaults(func=_cmd_clean)

    ops = sub.add_parser("ops", help="list the built-in ops and their parameters")
    ops.set_defaults(func=_cmd_ops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from dj_runner.store.fencing import new_run_id

        # Named now: the progress reporter reports this run's status.json and no other's.
        args.run_id = new_run_id()
    from dj_runner.observe.k8s_status import reporter_from_env  # a no-op outside a DataJuicerJob

    with reporter_from_env(args):
        try:
            code = int(args.func(args))
        except KeyboardInterrupt:  # Ctrl-C outside a run's own handler (e.g. events --follow)
            print("", file=sys.stderr)
            code = contract.SIGNAL_EXIT_BASE + signal.SIGINT
        except BrokenPipeError:  # piped into `head`: the reader is gone, nothing to say
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = contract.SIGNAL_EXIT_BASE + signal.SIGPIPE
        except NoSpace as exc:
            code = _no_space(exc)
        except Exception as exc:
            from dj_runner.store.nospace import is_no_space, no_space

            if isinstance(exc, OSError) and is_no_space(exc):  # a write no path named: still 8
                code = _no_space(no_space(exc.filename or os.getcwd(), exc))
            else:
                _error(f"internal error: {type(exc).__name__}: {exc}")
                if os.environ.get("DJ_RUNNER_DEBUG"):
                    traceback.print_exc()
                else:
                    print("  set DJ_RUNNER_DEBUG=1 for the stack trace", file=sys.stderr)
                code = ExitCode.INTERNAL
    if args.command == "run" and _embedded_ray_running():
        # An embedded Ray's processes share this process's fate and exit with it; Ray's own
        # graceful shutdown would add seconds to every run for nothing. The checkpoints,
        # status.json and result.json are fsynced; the event log is in the page cache.
        from dj_runner.engine.ray_env import stop_embedded

        _flush_quietly()
        stop_embedded()
        os._exit(code)
    _flush_quietly()
    return code


def _flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.flush()


def _embedded_ray_running() -> bool:
    if "ray" not in sys.modules:
        return False
    from dj_runner.engine.ray_env import is_embedded

    return is_embedded()


if __name__ == "__main__":
    sys.exit(main())
