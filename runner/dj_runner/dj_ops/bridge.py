"""Data-Juicer mappers and filters as runner ops, run on Arrow tables in the partition tasks.

``DJTableOp`` holds only the op's name and parameters (it is pickled to every Ray worker);
each process builds the Data-Juicer op once, on first use, and keeps it. A table is cut into
Data-Juicer batches (the op's ``batch_size`` for batched ops; 2,048 samples converted at a
time for the others, which Data-Juicer calls one sample at a time), converted to a dict of
lists (``convert``), passed through the op exactly as Data-Juicer's own executor calls it
(mappers: ``process``; filters: ``compute_stats`` then ``process`` for the keep flags), and
converted back. A failing batch is replayed one sample at a time to name the sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dj_runner.dj_ops.convert import Batch, from_dj_batch, to_dj_batch
from dj_runner.io.table_schema import concat_unified
from dj_runner.ops.common.base import STATS_COLUMN, SampleError, TableOp

#: Samples converted between Arrow and Python at a time for ops that are not batched.
CONVERT_ROWS = 2048
META_COLUMN = "__dj__meta__"

_INSTANCES: dict[tuple[str, str, str], Any] = {}


def dj_instance(name: str, params: dict[str, Any], text_key: str) -> Any:
    """This process's instance of Data-Juicer op ``name`` (built once, models checked)."""
    key = (name, json.dumps(params, sort_keys=True, default=str), text_key)
    op = _INSTANCES.get(key)
    if op is None:
        from dj_runner.dj_ops.catalog import construct, load_registry
        from dj_runner.dj_ops.models import ensure_models

        op = construct(load_registry()[name], params, text_key)
        ensure_models(name, op)
        _INSTANCES[key] = op
    return op


@dataclass(frozen=True, kw_only=True)
class DJTableOp(TableOp):
    """A Data-Juicer mapper or filter. ``kind`` is ``mapper`` or ``filter``."""

    dj_name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.dj_name)

    def apply_table(self, table: pa.Table, text_key: str) -> pa.Table:
        op = dj_instance(self.dj_name, self.params, text_key)
        if table.num_rows == 0:
            return table
        batched = bool(op.is_batched_op())
        step = (
            max(1, int(getattr(op, "batch_size", 0) or CONVERT_ROWS)) if batched else CONVERT_ROWS
        )
        parts = []
        for start in range(0, table.num_rows, step):
            piece = table.slice(start, step)
            try:
                parts.append(self._run(op, piece, batched))
            except SampleError as exc:
                if exc.index is not None:
                    exc.index += start
                raise
        return concat_unified(parts) if len(parts) > 1 else parts[0]

    # -- one piece
    def _prepare(self, op: Any, table: pa.Table) -> pa.Table:
        from data_juicer.ops.base_op import NON_STATS_FILTERS, TAGGING_OPS

        # Data-Juicer's OP.run adds these columns before the op sees a sample.
        n = table.num_rows
        if self.dj_name in TAGGING_OPS.modules and META_COLUMN not in table.column_names:
            table = table.append_column(META_COLUMN, pa.array([{}] * n, pa.struct([])))
        if (
            self.kind == "filter"
            and self.dj_name not in NON_STATS_FILTERS.modules
            and STATS_COLUMN not in table.column_names
        ):
            table = table.append_column(STATS_COLUMN, pa.array([None] * n, pa.struct([])))
        return table

    def _run(self, op: Any, table: pa.Table, batched: bool) -> pa.Table:
        schema = table.schema
        batch = to_dj_batch(self._prepare(op, table))
        try:
            out, keep = self._call(op, batch, table.num_rows, batched)
        except Exception as exc:
            raise self._locate(op, table, batched, exc) from exc
        # Back to Arrow with every sample's stats, then filter: the stats type never depends
        # on which samples survive.
        result = from_dj_batch(out, schema)
        return result if keep is None else result.filter(pa.array(keep, pa.bool_()))

    def _call(
        self, op: Any, batch: Batch, rows: int, batched: bool
    ) -> tuple[Batch, list[bool] | None]:
        if self.kind == "mapper":
            if batched:
                return op.process(batch), None
            return _per_sample(op.process, batch, rows), None
        if batched:
            batch = op.compute_stats(batch)
            keep = [bool(k) for k in op.process(batch)]
        else:
            batch = _per_sample(op.compute_stats, batch, rows)
            keep = [bool(op.process(_one(batch, i))[0]) for i in range(rows)]
        return batch, keep

    def _locate(self, op: Any, table: pa.Table, batched: bool, exc: Exception) -> SampleError:
        text_key = getattr(op, "text_key", "text")
        for i in range(table.num_rows):
            one = table.slice(i, 1)
            try:
                self._call(op, to_dj_batch(self._prepare(op, one)), 1, batched)
            except Exception:
                value = one.column(text_key)[0].as_py() if text_key in one.column_names else None
                return SampleError(i, value[:200] if isinstance(value, str) else None, exc)
        return SampleError(None, None, exc)


def _one(batch: Batch, i: int) -> Batch:
    """Sample ``i`` as a batch of one: how Data-Juicer's executor calls non-batched ops."""
    return {k: v[i : i + 1] for k, v in batch.items()}


def _per_sample(call: Any, batch: Batch, rows: int) -> Batch:
    """Call a non-batched op on each sample, as Data-Juicer's executor does; rebuild the lists."""
    out: Batch = {k: [] for k in batch}
    for i in range(rows):
        res = call(_one(batch, i))
        for k, v in res.items():
            out.setdefault(k, [None] * i).append(v[0] if v else None)
        for k in out:
            if len(out[k]) < i + 1:
                out[k].append(None)
    return out
