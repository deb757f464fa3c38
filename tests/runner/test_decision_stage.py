"""The last op's decision on the local engine: applied in place on threads of the driver for
each partition it can be, and every other partition's task in a worker process, never the op
chain in the driver."""

from __future__ import annotations

import json
import os

from dj_runner.contract import ExitCode
from dj_runner.engine import local_backend
from dj_runner.engine.executor import Executor
from dj_runner.recipe.parse import parse_recipe
from dj_runner.store.checkpoint import CheckpointDir, InvalidCheckpoint


def _job(tmp, name: str) -> Executor:
    data = tmp / "in.jsonl"
    if not data.exists():
        data.write_text(
            "".join(
                json.dumps({"text": f"sample {i % 40} " + "word " * (i % 30 + 5)}) + "\n"
                for i in range(400)
            )
        )
    recipe = parse_recipe(
        {
            "dataset_path": str(data),
            "export_path": str(tmp / f"{name}.jsonl"),
            "engine": "local",
            "np": 2,
            "partition_size": 100,
            "process": [
                {"text_length_filter": {"min_len": 30}},
                {"document_deduplicator": {}},
            ],
        }
    )
    return Executor(recipe, work_dir=tmp / f"work-{name}")


def test_a_partition_the_driver_cannot_decide_goes_to_a_worker(tmp_path, monkeypatch):
    # worker processes whatever the input's size
    monkeypatch.setattr(local_backend, "INLINE_MAX_BYTES", 0)
    clean = _job(tmp_path, "clean")
    assert clean.run().exit_code == ExitCode.OK

    select = CheckpointDir.select

    def refuse_partition_0(self, commit, *args, **kwargs):
        if self.show(commit.file).find("p00000") >= 0:
            raise InvalidCheckpoint(f"{commit.file}: refused by the test")
        return select(self, commit, *args, **kwargs)

    monkeypatch.setattr(CheckpointDir, "select", refuse_partition_0)  # in this process only
    ex = _job(tmp_path, "patched")
    assert ex.run().exit_code == ExitCode.OK
    assert (tmp_path / "patched.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    decided = {
        e.partition_id: e.process_id
        for e in ex.get_events()
        if e.event_type == "op_complete" and e.operation_name == "document_deduplicator"
    }
    assert sorted(decided) == [0, 1, 2, 3]
    assert all(decided[p] == os.getpid() for p in (1, 2, 3))  # in place, in the driver
    assert decided[0] != os.getpid()  # its task ran in a worker process
