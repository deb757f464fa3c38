"""Waiting on conditions: poll a predicate until it holds, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Exceptions listed in `ignore` count as "not yet". On timeout, raise WaitTimeout naming `what`
    and the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value = None  # type: ignore[assignment]
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
