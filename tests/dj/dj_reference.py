"""Run recipes through Data-Juicer's own default executor, in this process (the oracle).

Usage: ``python dj_reference.py CASES.json`` where the file holds
``{"dataset": path, "out_dir": dir, "cases": {case_id: [process entries]}}``; each case's
output is written to ``out_dir/<case_id>.jsonl`` by Data-Juicer's exporter. Or
``python dj_reference.py --config CONFIG.yaml``: one config file, run as written (relative
paths against the current directory). Run by the tests in a subprocess of the environment
that has the ``dj`` extra.

Data-Juicer frees GPU memory after every op with ``torch.cuda.empty_cache()``; torch is not
part of the extra (no op here uses it), so that one call is a no-op here.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import yaml


def _without_torch() -> None:
    from data_juicer.utils import model_utils

    model_utils.torch = types.SimpleNamespace(
        cuda=types.SimpleNamespace(empty_cache=lambda: None, is_available=lambda: False)
    )


def main() -> None:
    _without_torch()
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    if sys.argv[1] == "--config":
        DefaultExecutor(init_configs(args=["--config", sys.argv[2]])).run()
        return
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)

    for case, process in spec["cases"].items():
        recipe = {
            "project_name": case,
            "dataset_path": spec["dataset"],
            "export_path": str(out_dir / f"{case}.jsonl"),
            "executor_type": "default",
            "np": 1,
            "work_dir": str(out_dir / f"{case}-work"),
            "process": process,
        }
        path = out_dir / f"{case}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        cfg = init_configs(args=["--config", str(path)])
        DefaultExecutor(cfg).run()


if __name__ == "__main__":
    main()
