"""The op registry: one op per module of ``dj_runner.ops``, registered by name.

Ops outside the package register the same way; name their modules in the environment
variable ``DJ_RUNNER_OP_MODULES`` (comma-separated) and they load with the built-in ones.
A built-in op's module is named as the op: ``find_op`` imports that module alone, so a recipe
loads only the ops it names (``fix_unicode_mapper`` and its ftfy, say, only when it names it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path

from dj_runner.ops.common.base import Op

OP_MODULES_ENV = "DJ_RUNNER_OP_MODULES"
_OPS: dict[str, type[Op]] = {}
_LOADED = False


def register(name: str) -> Callable[[type[Op]], type[Op]]:
    """Class decorator: register an op class under ``name``."""

    def wrap(cls: type[Op]) -> type[Op]:
        if name in _OPS and _OPS[name] is not cls:
            raise ValueError(f"op '{name}' is registered twice")
        cls.name = name
        _OPS[name] = cls
        return cls

    return wrap


#: The ops package: this subpackage's parent (read from the file system rather than imported,
#: so the registry does not import the package that exports it).
_OPS_DIR = Path(__file__).resolve().parents[1]


def _load_custom() -> None:
    # Custom ops: modules named in DJ_RUNNER_OP_MODULES (comma-separated) register theirs,
    # also when the variable is set after the first lookup (importing twice is a no-op).
    for name in filter(None, os.environ.get(OP_MODULES_ENV, "").split(",")):
        importlib.import_module(name.strip())


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for mod in pkgutil.iter_modules([str(_OPS_DIR)]):
            # Every module of the package is an op; what ops share is the subpackage
            # ``common`` (a package, so skipped) and private modules (the C kernels).
            if not mod.ispkg and not mod.name.startswith("_"):
                importlib.import_module(f"dj_runner.ops.{mod.name}")
        _LOADED = True
    _load_custom()


def all_ops() -> dict[str, type[Op]]:
    """Every registered op, by name."""
    _load_all()
    return dict(_OPS)


def find_op(name: str) -> type[Op] | None:
    """The op registered as ``name``, or None; of the built-in ops only the module named
    ``name`` is imported."""
    builtin = name.isidentifier() and not name.startswith("_")
    if name not in _OPS and not _LOADED and builtin and (_OPS_DIR / f"{name}.py").is_file():
        importlib.import_module(f"dj_runner.ops.{name}")
    _load_custom()
    return _OPS.get(name)


def get_op(name: str) -> type[Op]:
    """The op class registered as ``name``; KeyError when there is none."""
    _load_all()
    return _OPS[name]
