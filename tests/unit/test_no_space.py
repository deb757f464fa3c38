"""A full device as the runner reports it: the error, its exit code, and that it is fatal.

Pure logic; the real full filesystem is in tests/runner/test_disk_full.py.
"""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
from test_scheduler import FakeBackend, FakeClock, Part, Recorder

from dj_runner.engine.executor import FATAL_ERRORS, best_effort
from dj_runner.engine.scheduler import PartitionScheduler, RetryPolicy
from dj_runner.errors import NoSpace
from dj_runner.store.nospace import free_space, is_no_space, no_space, raising_no_space


def test_the_message_names_the_path_the_cause_and_the_space_left() -> None:
    err = NoSpace("/data/work/checkpoints/p00003/op002.parquet", "no space left", 61440, 1 << 20)
    assert str(err) == (
        "cannot write /data/work/checkpoints/p00003/op002.parquet: no space left "
        "(60.0 KiB free of 1.0 MiB on that filesystem)"
    )
    assert str(NoSpace("/x", "disk quota exceeded", None, None)) == (
        "cannot write /x: disk quota exceeded"
    )


def test_it_survives_pickling_as_a_ray_task_error_does() -> None:
    err = pickle.loads(pickle.dumps(NoSpace("/w/a", "no space left", 0, 4096)))
    assert isinstance(err, NoSpace)
    assert (err.path, err.free_bytes, err.total_bytes) == ("/w/a", 0, 4096)
    assert "0 bytes free of 4.0 KiB" in str(err)


def test_enospc_and_edquot_become_nospace_for_the_named_path(tmp_path: Path) -> None:
    target = tmp_path / "not" / "yet" / "there.parquet"
    for code, reason in ((errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "quota")):
        with pytest.raises(NoSpace, match=reason) as caught, raising_no_space(target):
            raise OSError(code, "from the kernel")
        assert caught.value.path == str(target)
        assert caught.value.free_bytes is not None  # statvfs of the nearest existing ancestor
    with pytest.raises(PermissionError), raising_no_space(target):
        raise PermissionError(errno.EACCES, "not this")
    deeper = NoSpace("/more/precise", "no space left", None, None)
    with pytest.raises(NoSpace) as caught, raising_no_space(target):
        raise deeper
    assert caught.value is deeper


def test_free_space_walks_up_to_an_existing_directory(tmp_path: Path) -> None:
    space = free_space(tmp_path / "a" / "b")
    assert space is not None and 0 <= space[0] <= space[1]
    assert is_no_space(no_space(tmp_path, OSError(errno.ENOSPC, "full")))
    assert is_no_space(OSError(errno.EDQUOT, "quota")) and not is_no_space(OSError(5, "EIO"))


def test_a_full_disk_is_never_retried_and_stops_the_other_tasks() -> None:
    clock = FakeClock()
    full = NoSpace("/w/checkpoints/p00000/op001.parquet", "no space left", 0, 4096)
    backend = FakeBackend(clock, {0: [full, "ok"]})
    backend.hold = {1}
    rec = Recorder()
    scheduler = PartitionScheduler(
        backend,
        RetryPolicy(3, 0.1),
        2,
        fatal=FATAL_ERRORS,
        listener=rec,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(NoSpace):
        scheduler.run([Part(0), Part(1), Part(2)])
    assert [(pid, attempt) for _, pid, attempt in backend.submitted] == [(0, 0), (1, 0)]
    assert backend.cancelled == [1]
    assert rec.calls == [("fatal", 0, "NoSpace")]


def test_best_effort_swallows_a_full_disk_only() -> None:
    full = NoSpace("/w/status.json", "no space left", 0, 4096)

    def write_full() -> None:
        raise full

    def write_broken() -> None:
        raise PermissionError("read-only")

    assert best_effort(write_full) is full
    assert best_effort(lambda: None) is None
    with pytest.raises(PermissionError):
        best_effort(write_broken)
