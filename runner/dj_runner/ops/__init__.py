"""Built-in ops. Each module holds one op and registers it by name; see ``common.registry``. What the ops share
(base classes, parameters, text helpers) lives in ``common/``; every other module is an op.

The registry is imported on first use, so that ``dj_runner.ops.common.params`` (and with it the
recipe schema) can be imported without Arrow or any op implementation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["all_ops", "find_op", "get_op", "register"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dj_runner.ops.common import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'dj_runner.ops' has no attribute {name!r}")
