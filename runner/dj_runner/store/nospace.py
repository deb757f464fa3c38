"""A full device: recognise it, and say which path could not be written and what was free.

Every write of a job (checkpoints and their commit records, global-op decisions, the plan, the
manifest, the claim, the lock's holder line, rejects, ``status.json``, ``result.json``, the event
log, the export) goes through ``raising_no_space``: an ``OSError`` with ``ENOSPC`` or ``EDQUOT``
becomes ``NoSpace`` (exit 8), naming the path the user knows (the checkpoint or export, not its
temporary name) and the space ``statvfs`` reports left on its filesystem. A full disk is not a
partition's transient failure: the executor ends the job at once instead of retrying, and the
committed checkpoints stay for the resume once space is freed. Other errors pass unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from dj_runner.errors import NoSpace

#: ``ENOSPC``: the device is full; ``EDQUOT``: the user's or project's quota is used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, NoSpace) or (isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS)


def _statvfs(path: str | Path) -> os.statvfs_result | None:
    """``statvfs`` of the filesystem holding ``path`` or its nearest existing ancestor."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return os.statvfs(probe)
    except OSError:
        return None


def free_space(path: str | Path) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the filesystem holding ``path`` for an unprivileged writer;
    None when ``statvfs`` cannot tell."""
    st = _statvfs(path)
    return None if st is None else (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def no_space(path: str | Path, exc: OSError) -> NoSpace:
    """The ``NoSpace`` error for a write of ``path`` that failed with ``exc``."""
    st = _statvfs(path)
    if exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    elif st is not None and st.f_files > 0 and st.f_favail == 0:
        reason = "no space left on device (no free inodes: the filesystem's file limit is reached)"
    else:
        reason = "no space left on device (the filesystem is full)"
    if st is None:
        return NoSpace(str(path), reason, None, None)
    return NoSpace(str(path), reason, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


@contextlib.contextmanager
def raising_no_space(path: str | Path) -> Iterator[None]:
    """Turn an ``ENOSPC``/``EDQUOT`` ``OSError`` raised inside into ``NoSpace`` for ``path``.

    A ``NoSpace`` raised deeper (naming a more precise path) passes unchanged.
    """
    try:
        yield
    except NoSpace:
        raise
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise no_space(path, exc) from exc
        raise
