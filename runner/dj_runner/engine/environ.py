"""The process environment set for a child process's start, and restored after it.

Ray's daemons and the local engine's fork server take their settings from the environment they
start with; the driver's own environment stays as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environ_for(env: Mapping[str, str | None]) -> Iterator[None]:
    """Set each key of ``env`` (unset where its value is None) inside the block; afterwards
    every one of them is as it was before, set or unset."""
    saved = {key: os.environ.get(key) for key in env}
    try:
        _put(env)
        yield
    finally:
        _put(saved)


def _put(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
