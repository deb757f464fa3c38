"""The recipe's entry point to Data-Juicer ops: which implementation runs an op, or why none.

``implementation`` is ``builtin`` (the default: the runner's own op where one exists,
Data-Juicer's otherwise) or ``data_juicer`` (Data-Juicer's op even where a built-in exists),
set for the whole recipe by ``op_implementation`` and per op by the same option among its
parameters. Without the ``dj`` extra, only built-in ops exist, and the error says which extra
would run the others.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dj_runner.dj_ops import INSTALL_HINT, available
from dj_runner.errors import RecipeError, closest

IMPLEMENTATIONS = ("builtin", "data_juicer")
OPTION = "op_implementation"


def choose(name: str, params: dict[str, Any], default: str, where: str) -> tuple[str, dict]:
    """Split the per-op option off the parameters; return (implementation, parameters)."""
    params = dict(params)
    impl = params.pop(OPTION, default)
    if impl not in IMPLEMENTATIONS:
        raise RecipeError(f"{where}.{name}.{OPTION}", impl, "one of " + ", ".join(IMPLEMENTATIONS))
    return impl, params


def resolve(
    name: str, params: dict[str, Any], where: str, builtin: Collection[str], impl: str
) -> tuple[Any, list[str]]:
    """The Data-Juicer op for ``name`` (not built in, or ``impl`` is ``data_juicer``), and the
    notices about parameters it accepts and ignores."""
    if not available():
        if impl == "data_juicer":
            raise RecipeError(
                f"{where}.{name}.{OPTION}",
                impl,
                f"'builtin' unless Data-Juicer is installed ({INSTALL_HINT})",
            )
        raise RecipeError(
            where,
            name,
            f"a built-in op name ({len(builtin)} built in); every other Data-Juicer op runs "
            f"with the dj extra: {INSTALL_HINT}",
            closest(name, builtin),
        )
    from dj_runner.dj_ops.catalog import load_registry
    from dj_runner.dj_ops.factory import build

    registry = load_registry()
    if name not in registry:
        raise RecipeError(
            where,
            name,
            "a built-in op or an op of Data-Juicer's registry",
            closest(name, set(builtin) | set(registry)),
        )
    return build(name, params, where)
