"""Ops that transform a whole partition table themselves (not one text array at a time).

A ``TableOp`` is a mapper or filter that needs every column of a sample, not just the text:
the Data-Juicer bridge is one. ``apply.apply_local`` hands it the partition's table and takes
back the new one; checkpoints, events and resume treat it like any other op. It reports a
failing sample by raising ``apply.SampleError`` with the sample's index in the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dj_runner.ops.base import Op


@dataclass(frozen=True, kw_only=True)
class TableOp(Op):
    """A mapper or filter over whole tables; rows may be rewritten, dropped or added."""

    def apply_table(self, table: pa.Table, text_key: str) -> pa.Table:
        raise NotImplementedError
