"""The local engine's workers: each task in a process of its own, so a worker that dies fails
its own task and no other; closing ends every worker."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from pathlib import Path

import pytest

from dj_runner.engine.local_backend import LocalPool, WorkerDied
from tests.harness.localwork import task
from tests.harness.proctree import alive
from tests.harness.waiting import wait_for


def test_a_dead_worker_fails_its_own_task_and_no_other() -> None:
    pool = LocalPool(2, fn=task)
    try:
        futures = [
            pool.submit(("sleep", "0.2")),
            pool.submit(("die", "")),
            pool.submit(("ok", "second")),
            pool.submit(("raise", "bad value")),
            pool.submit(("ok", "last")),
        ]
        _, pending = cf.wait(futures, timeout=120)
        assert not pending, "the workers did not finish within 120 s"
        assert futures[0].result() == "0.2"
        with pytest.raises(WorkerDied, match="ended without a result"):
            futures[1].result()
        assert futures[2].result() == "second"
        with pytest.raises(ValueError, match="bad value"):
            futures[3].result()
        assert futures[4].result() == "last"
    finally:
        pool.close()


def test_close_ends_the_running_workers_and_drops_the_queued_tasks() -> None:
    pool = LocalPool(2, fn=task)
    running = [pool.submit(("sleep", "300")) for _ in range(2)]
    queued = pool.submit(("ok", "never"))
    wait_for(lambda: len(pool.pids()) == 2, 60, "two workers running")
    workers = pool.pids()
    assert all(f.running() for f in running) and not queued.done()
    pool.close()
    assert queued.cancelled()
    for f in running:
        with pytest.raises(WorkerDied):
            f.result(timeout=30)
    wait_for(lambda: not any(map(alive, workers)), 30, "the workers to end")


def test_one_worker_runs_tasks_in_the_driver_one_at_a_time_while_submit_returns() -> None:
    pool = LocalPool(1, fn=task)
    slow = pool.submit(("sleep", "0.5"))
    queued = pool.submit(("ok", "inline"))
    assert not queued.done()  # submit did not run it: the scheduler sees both in flight
    assert queued.result(timeout=30) == "inline" and slow.result() == "0.5"
    assert pool.pids() == []  # no process was started
    with pytest.raises(ValueError):
        pool.submit(("raise", "x")).result(timeout=30)
    pool.close()


def _meet(barrier: threading.Barrier) -> int:
    barrier.wait()
    return os.getpid()


def test_inline_tasks_run_side_by_side_on_threads_of_the_driver() -> None:
    pool = LocalPool(2, fn=_meet, inline=True)
    barrier = threading.Barrier(2, timeout=30)
    first = pool.submit((barrier,))
    second = pool.submit((barrier,))
    # Each waits for the other at the barrier: both finish only if they ran at the same time.
    assert first.result(timeout=30) == second.result(timeout=30) == os.getpid()
    assert pool.pids() == []  # no process was started
    pool.close()


WARM_PROBE = """
import sys
from dj_runner.engine.local_backend import LocalPool
from dj_runner.ops.common.warm import warm_env
from tests.harness.localwork import models_loaded

ops = sys.argv[1:]
pool = LocalPool(2, fn=models_loaded, server_env=warm_env(ops))
try:
    print(pool.submit(("", "")).result(timeout=120))
finally:
    pool.close()
"""


@pytest.mark.parametrize(
    ("ops", "loaded"),
    [
        (["language_id_score_filter", "no_such_op"], "fasttext=True native=True"),
        (["text_length_filter"], "fasttext=False native=False"),
    ],
)
def test_workers_start_with_the_recipes_models_loaded_by_the_fork_server(
    ops: list[str], loaded: str
) -> None:
    """The fork server warms the recipe's ops (``ops.common.warm``): a worker forked from it
    has fastText's models before its first batch, instead of loading them for each partition.
    An op it cannot find is skipped. (A process of its own: the fork server is one per
    process, started with the first pool's environment.)"""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", WARM_PROBE, *ops],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == loaded, proc.stdout


EARLY_PROBE = """
import os
from dj_runner.engine.local_backend import LocalPool, start_fork_server
from dj_runner.ops.common.warm import WARM_OPS_ENV, warm_env
from tests.harness.localwork import models_loaded

start_fork_server(warm_env(["language_id_score_filter"]))
assert WARM_OPS_ENV not in os.environ, "the server's environment leaked into the driver's"
pool = LocalPool(2, fn=models_loaded, server_env={})
try:
    print(pool.submit(("", "")).result(timeout=120))
finally:
    pool.close()
"""


def test_a_fork_server_started_before_the_pool_is_the_one_its_workers_come_from() -> None:
    """The executor starts the fork server before it plans (``start_fork_server``), so that it
    imports and warms meanwhile; the pool made after the plan forks its workers from that
    server, warmed with the environment it was started with, and the driver's own environment
    is left as it was."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", EARLY_PROBE],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "fasttext=True native=True", proc.stdout
