"""Data-Juicer's op registry: which names exist, what kind each op is, its parameters.

``build`` turns a recipe entry into a runner op: mappers and filters become table ops
(``bridge``), the three document-level deduplicators global ops (``dedup``). Parameters are
checked against the op's own signature (the ``__init__`` of the op and its Data-Juicer base
classes, with their annotations, ``Annotated`` bounds included) before any work starts, and
the op is then constructed once so its own checks run too. Ops that need the whole dataset at
once (selectors, groupers, aggregators, other deduplicators) are refused with the reason.

Data-Juicer installs missing packages at run time by default; ``load_registry`` turns that
off (``guard.no_runtime_installs``) before it imports a single op.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from dj_runner.dj_ops.guard import no_runtime_installs
from dj_runner.errors import RecipeError, closest
from dj_runner.recipe.keys import COMMON_FILTER_PARAMS, COMMON_OP_PARAMS

#: Keyword arguments every Data-Juicer op takes through its base class (``OP.__init__``), and
#: every filter through ``Filter.__init__``: described once, in the recipe schema.
BASE_KWARGS = frozenset(COMMON_OP_PARAMS)
FILTER_KWARGS = frozenset(COMMON_FILTER_PARAMS)
#: Deduplicators that run as a global stage: signatures per partition, one decision.
GLOBAL_DEDUPLICATORS = frozenset(
    {"document_deduplicator", "document_minhash_deduplicator", "document_simhash_deduplicator"}
)
#: Data-Juicer's Ray deduplicators -> the document-level op that runs each (``ray_twins``).
RAY_TWINS = {
    "ray_document_deduplicator": "document_deduplicator",
    "ray_bts_minhash_deduplicator": "document_minhash_deduplicator",
}
#: Runner-only option inside an op's parameters: which implementation runs it.
IMPLEMENTATION_OPTION = "op_implementation"


@functools.cache
def load_registry() -> dict[str, type]:
    """Every op class of Data-Juicer's registry, by name (imports ``data_juicer.ops``)."""
    no_runtime_installs()
    import data_juicer.ops  # noqa: F401  (registers every op)
    from data_juicer.ops.base_op import OPERATORS

    from dj_runner.dj_ops.models import offline_models

    offline_models()

    return dict(OPERATORS.modules)


def kind_of(cls: type) -> str:
    """``mapper``, ``filter``, ``deduplicator``, ``selector``, ``grouper``, ``aggregator``."""
    from data_juicer.ops import base_op

    for name in ("Mapper", "Filter", "Deduplicator", "Selector", "Grouper", "Aggregator"):
        base = getattr(base_op, name, None)
        if base is not None and issubclass(cls, base):
            return name.lower()
    return "op"


def signature(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of the op: its own ``__init__`` and its bases' up to ``OP``."""
    from data_juicer.ops.base_op import OP

    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is OP or not (isinstance(klass, type) and issubclass(klass, OP)):
            continue
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params.setdefault(p.name, p)
    return params


def accepted(cls: type) -> set[str]:
    names = set(signature(cls)) | BASE_KWARGS
    if kind_of(cls) == "filter":
        names |= FILTER_KWARGS
    return names


def _annotations(cls: type) -> dict[str, Any]:
    from data_juicer.ops.base_op import OP

    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, OP)) or klass is OP:
            continue
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints.update(typing.get_type_hints(init, include_extras=True))
        except Exception:  # an annotation that does not resolve: leave it unchecked
            hints.update(getattr(init, "__annotations__", {}))
    hints.pop("return", None)
    return hints


def check_params(name: str, cls: type, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check names and types against the op's signature; return the parameters unchanged."""
    from pydantic import TypeAdapter, ValidationError

    valid = accepted(cls)
    hints = _annotations(cls)
    for pname, value in params.items():
        key = f"{where}.{name}.{pname}"
        if pname not in valid:
            own = sorted(signature(cls))
            raise RecipeError(
                key,
                value,
                f"a parameter of Data-Juicer's {name} ({', '.join(own) or 'none of its own'}"
                " and the common ones of every op)",
                closest(pname, valid),
            )
        annotation = hints.get(pname)
        if annotation is None or annotation is inspect.Parameter.empty:
            continue
        try:
            TypeAdapter(annotation).validate_python(value, strict=False)
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors()[:2])
            raise RecipeError(key, value, f"{_describe(annotation)} ({problem})") from None
        except Exception:  # pydantic cannot build a validator for this annotation
            continue
    return params


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    text = getattr(annotation, "__name__", None) or str(annotation)
    return f"a value of type {text.replace('typing.', '')}"


def construct(cls: type, params: dict[str, Any], text_key: str) -> Any:
    """An instance of the Data-Juicer op, as its own executor would build it."""
    kwargs = dict(params)
    kwargs.setdefault("text_key", text_key)
    return cls(**kwargs)


def refusal(name: str, kind: str) -> str | None:
    """Why the runner cannot run op ``name`` of ``kind``, or None when it can."""
    if kind in ("mapper", "filter"):
        return None
    if kind == "deduplicator":
        if name in GLOBAL_DEDUPLICATORS:
            return None
        return (
            "a deduplicator the runner does not run: only the document-level ones ("
            + ", ".join(sorted(GLOBAL_DEDUPLICATORS))
            + ") run as a global stage over every partition, and Data-Juicer's Ray "
            + f"versions of two of them ({', '.join(sorted(RAY_TWINS))})"
        )
    if kind == "op":
        return (
            f"an op the runner can run; {name} is a Data-Juicer pipeline, which runs only "
            "inside Data-Juicer's own Ray executor"
        )
    return (
        f"an op the runner can run; {name} is a Data-Juicer {kind}, which needs the whole "
        "dataset in one process at once, and a partitioned job never holds it (run it on the "
        "job's output with Data-Juicer's own executor)"
    )
