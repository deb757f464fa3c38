"""Keep Data-Juicer from installing packages or downloading files while a job runs.

Data-Juicer's ``LazyLoader`` pip-installs a missing package the first time an op touches it,
and its model helpers download missing models. In a job that would mean a network install in
the middle of a partition, on one worker and not another. ``no_runtime_installs`` replaces the
installer with an error naming the package and the extra or pip line that provides it, and
puts the Hugging Face libraries in offline mode.
"""

from __future__ import annotations

import os

from dj_runner.dj_ops import INSTALL_HINT


class MissingDependency(ImportError):
    """A Data-Juicer op needs a package that is not installed."""


def _refuse(package_spec: object, *_: object, **__: object) -> None:
    raise MissingDependency(
        f"Data-Juicer needs the package {package_spec!s}, which is not installed; the runner "
        f"never installs packages at run time: install it where the job runs "
        f"(pip install '{package_spec!s}'), next to {INSTALL_HINT}"
    )


_DONE = False


def no_runtime_installs() -> None:
    """Idempotent: patch Data-Juicer's installer and set the offline switches."""
    global _DONE
    if _DONE:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from data_juicer.utils import lazy_loader

    loader = lazy_loader.LazyLoader
    loader._install_package = classmethod(lambda cls, spec, pip_args=None: _refuse(spec))

    def check_packages(cls: type, package_specs: list[str], pip_args: object = None) -> None:
        import importlib.util

        for spec in package_specs:
            module = cls.get_package_name(spec) if hasattr(cls, "get_package_name") else spec
            if importlib.util.find_spec(str(module).replace("-", "_")) is None:
                _refuse(spec)

    loader.check_packages = classmethod(check_packages)
    _DONE = True
