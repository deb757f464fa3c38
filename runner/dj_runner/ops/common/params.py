"""Op parameter declarations: the metadata an op field carries beyond its type and default.

Pure: no Arrow, no op implementation. An op declares a parameter as a dataclass field; with
``param(...)`` it adds bounds, choices, a description or ``regex=True`` (a user pattern that
must compile, with its replacement template). The recipe schema reads this metadata to
validate recipes and to render the JSON Schema of ``process``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: The key under which ``param`` stores its metadata in a dataclass field.
PARAM_META = "dj_param"


@dataclasses.dataclass(frozen=True)
class ParamMeta:
    """What a recipe may set a parameter to, beyond its type."""

    description: str = ""
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    #: A Python ``re`` pattern; ``repl_field`` names the parameter holding its replacement.
    regex: bool = False
    repl_field: str | None = None


def param(
    default: Any,
    *,
    description: str = "",
    minimum: float | None = None,
    exclusive_minimum: bool = False,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
    regex: bool = False,
    repl_field: str | None = None,
) -> Any:
    """A dataclass field for an op parameter, with the metadata the recipe schema checks."""
    meta = ParamMeta(description, minimum, exclusive_minimum, maximum, choices, regex, repl_field)
    return dataclasses.field(default=default, metadata={PARAM_META: meta})


def param_meta(f: dataclasses.Field) -> ParamMeta:
    """A field's declared metadata (empty when it was declared without ``param``)."""
    return f.metadata.get(PARAM_META, ParamMeta())


def unwrap_raw_pattern(pattern: str) -> str:
    """Data-Juicer strips a literal ``r'...'`` / ``r"..."`` wrapper from a recipe pattern."""
    if len(pattern) > 2 and (
        (pattern.startswith("r'") and pattern.endswith("'"))
        or (pattern.startswith('r"') and pattern.endswith('"'))
    ):
        return pattern[2:-1]
    return pattern
