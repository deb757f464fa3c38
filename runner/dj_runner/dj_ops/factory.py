"""Building the runner op for a Data-Juicer op: its parameters checked, its packages and
models found, then wrapped as a table op (mappers, filters) or a global deduplicator.

Above ``catalog`` (names, kinds, parameters), ``bridge`` and ``dedup`` (the wrappers), so that
none of them imports another back.
"""

from __future__ import annotations

from typing import Any

from dj_runner.dj_ops.bridge import DJTableOp
from dj_runner.dj_ops.catalog import check_params, construct, kind_of, load_registry, refusal
from dj_runner.dj_ops.dedup import DJDocumentDeduplicator
from dj_runner.dj_ops.guard import MissingDependency
from dj_runner.dj_ops.models import MissingModel, ensure_models
from dj_runner.dj_ops.ray_twins import split_params, twin_of
from dj_runner.errors import RecipeError


def build(name: str, params: dict[str, Any], where: str) -> tuple[Any, list[str]]:
    """The runner op for Data-Juicer op ``name``, its parameters checked, and the notices
    about parameters accepted and ignored; RecipeError if the op cannot run.

    A Ray deduplicator runs as its document-level twin (``ray_twins``)."""
    twin = twin_of(name)
    if twin is not None:
        twin_params, notices = split_params(name, params, where)
        op, more = build(twin, twin_params, where)
        return op, [*notices, *more]
    cls = load_registry()[name]
    kind = kind_of(cls)
    why = refusal(name, kind)
    if why is not None:
        raise RecipeError(where, name, why)
    check_params(name, cls, params, where)
    try:
        instance = construct(cls, params, "text")
        ensure_models(name, instance)
        _probe(instance, kind)
    except MissingModel as exc:
        raise RecipeError(f"{where}.{name}", params, f"a model on this machine: {exc}") from None
    except MissingDependency as exc:
        raise RecipeError(f"{where}.{name}", params, f"its packages installed: {exc}") from None
    except Exception as exc:  # the op's own checks (asserts, ValueErrors, pydantic)
        raise RecipeError(
            f"{where}.{name}",
            params,
            f"parameters Data-Juicer accepts ({type(exc).__name__}: {exc})",
        ) from None
    if kind == "deduplicator":
        return DJDocumentDeduplicator(dj_name=name, params=dict(params)), []
    return DJTableOp(dj_name=name, kind=kind, params=dict(params)), []


def _probe(instance: Any, kind: str) -> None:
    """Run the op once on a made-up sample, so a package or model it loads on first use is
    found missing now, before any work; any other error of the made-up sample is ignored."""
    sample = {
        instance.text_key: "A short sample. It checks the op's dependencies.",
        "__dj__stats__": {},
    }
    if instance.is_batched_op():
        sample = {k: [v] for k, v in sample.items()}
    try:
        if kind == "deduplicator":
            instance.compute_hash(sample)
        elif kind == "filter":
            instance.compute_stats(sample)
        else:
            instance.process(sample)
    except (MissingDependency, MissingModel):
        raise
    except Exception:
        return
