"""Every Data-Juicer op, through Data-Juicer's own implementation (the ``dj`` extra).

The runner's built-in ops (``dj_runner.ops``) are the fast path. Any other op of
``py-data-juicer``'s registry runs through this package when the extra is installed:
mappers and filters as table ops in the partition tasks (``bridge``), document-level
deduplicators as global ops (``dedup``); ``catalog`` resolves names and checks parameters,
``factory`` builds the runner op for a name,
``convert`` moves batches between Arrow and Data-Juicer's dict of lists, ``models`` resolves
model files offline. Nothing here imports ``data_juicer`` until an op needs it.
"""

from __future__ import annotations

import importlib.util

EXTRA = "dj"
INSTALL_HINT = "pip install 'datajuicer-operator[dj]'"


def available() -> bool:
    """Whether Data-Juicer is installed (the ``dj`` extra)."""
    return importlib.util.find_spec("data_juicer") is not None
