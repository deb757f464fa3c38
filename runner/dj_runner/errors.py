"""Error types shared by the runner, and how an error is named in one line.

Which exit code each error ends in is decided by the driver (``engine/executor.py``) and the
command line (``cli.py``); the codes themselves are ``contract.ExitCode``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def short_error(exc: BaseException) -> str:
    """``Type: last line of the message``: an error in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


def closest(name: str, valid: Iterable[str]) -> str | None:
    """Return the valid name closest to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return matches[0] if matches else None


class RunnerError(Exception):
    """Base class of every error the runner reports to a user."""


class RecipeError(RunnerError):
    """A recipe is invalid. The message names the key, the value and what would be valid."""

    def __init__(self, key: str, value: object, expected: str, suggestion: str | None = None):
        self.key = key
        self.value = value
        self.expected = expected
        self.suggestion = suggestion
        msg = f"recipe key '{key}': got {value!r}; expected {expected}"
        if suggestion:
            msg += f" (did you mean '{suggestion}'?)"
        super().__init__(msg)


class OpError(RunnerError):
    """An op failed on a sample. Names the op, the partition and the sample."""

    def __init__(
        self,
        op_name: str,
        op_idx: int,
        partition_id: int,
        sample_index: int | None,
        sample_preview: str | None,
        cause: BaseException,
    ):
        self.op_name = op_name
        self.op_idx = op_idx
        self.partition_id = partition_id
        self.sample_index = sample_index
        self.sample_preview = sample_preview
        self.cause_type = type(cause).__name__
        where = f"op '{op_name}' (#{op_idx}) failed in partition {partition_id}"
        if sample_index is not None:
            where += f" on sample {sample_index}"
            if sample_preview is not None:
                where += f" ({sample_preview!r})"
        super().__init__(f"{where}: {self.cause_type}: {cause}")

    def __reduce__(self):  # keep picklable across Ray processes
        return (
            _rebuild_op_error,
            (
                self.op_name,
                self.op_idx,
                self.partition_id,
                self.sample_index,
                self.sample_preview,
                self.cause_type,
                str(self),
            ),
        )


def _rebuild_op_error(op_name, op_idx, partition_id, sample_index, preview, cause_type, msg):
    err = OpError.__new__(OpError)
    err.op_name, err.op_idx, err.partition_id = op_name, op_idx, partition_id
    err.sample_index, err.sample_preview, err.cause_type = sample_index, preview, cause_type
    Exception.__init__(err, msg)
    return err


class MalformedRecordError(RunnerError):
    """An input record cannot be parsed and the recipe makes malformed records fatal."""


class ResumeRefused(RunnerError):
    """The work dir belongs to a different recipe or dataset; resuming would mix results."""


class InputError(RunnerError):
    """An input file cannot be read as its format says (corrupt, truncated, not that format).

    The message names the file, and the line or row where it is known.
    """


class RayUnavailable(RunnerError):
    """The connection to Ray broke while the job ran (``ExitCode.RAY_UNAVAILABLE``, retried)."""


class Interrupted(RunnerError):
    """The run stopped on SIGTERM/SIGINT after letting its in-flight checkpoints commit."""


class PlanRefused(ResumeRefused):
    """plan.json cannot be used by this runner (another plan version)."""


class InvalidInput(RunnerError):
    """Bad input outside the recipe: arguments, paths, an unreachable Ray address (``ExitCode.USAGE``)."""


class NoSpace(RunnerError):
    """A write failed because its device is full or its quota used up (``ExitCode.NO_SPACE``, resumable).

    Names the path that could not be written and, where ``statvfs`` could tell, the space left
    on its filesystem. Built by ``nospace.no_space``; picklable across Ray processes.
    """

    def __init__(self, path: str, reason: str, free_bytes: int | None, total_bytes: int | None):
        self.path = path
        self.reason = reason
        self.free_bytes = free_bytes
        self.total_bytes = total_bytes
        msg = f"cannot write {path}: {reason}"
        if free_bytes is not None and total_bytes is not None:
            msg += f" ({_size(free_bytes)} free of {_size(total_bytes)} on that filesystem)"
        super().__init__(msg)

    def __reduce__(self):  # keep picklable across Ray processes
        return (NoSpace, (self.path, self.reason, self.free_bytes, self.total_bytes))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"
