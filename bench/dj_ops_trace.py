"""Run inside the Data-Juicer venv: apply each op of a job file to its own input texts.

Called by ``bench/op_diff.py``. The job file holds the ops (name, params), the distinct
stage inputs (lists of texts) and, per op, which stage it reads. For each op this writes the
mapped texts (mappers), the keep flags and stats (filters) or the hashes (deduplicators),
one sample at a time, exactly as Data-Juicer's own op code computes them.

    python dj_ops_trace.py JOB.json OUT.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def trace(job: dict[str, Any]) -> list[dict[str, Any]]:
    from data_juicer.ops import load_ops
    from data_juicer.utils.constant import Fields, HashKeys

    out: list[dict[str, Any]] = []
    for (name, params), stage in zip(job["ops"], job["op_stage"], strict=True):
        (op,) = load_ops([{name: params or {}}])
        texts = job["stages"][stage]
        if name.endswith("_mapper"):
            res = []
            for t in texts:
                if op.is_batched_op():
                    res.append(op.process_batched({"text": [t]})["text"][0])
                else:
                    res.append(op.process_single({"text": t})["text"])
            out.append({"kind": "mapper", "texts": res})
        elif name.endswith("_filter"):
            keep, stats = [], []
            for t in texts:
                if op.is_batched_op():
                    b = op.compute_stats_batched({"text": [t], Fields.stats: [{}]})
                    keep.append(bool(next(iter(op.process_batched(b)))))
                    st = b[Fields.stats][0]
                else:
                    s = op.compute_stats_single({"text": t, Fields.stats: {}})
                    keep.append(bool(op.process_single(s)))
                    st = s[Fields.stats]
                stats.append(
                    {k: (v if isinstance(v, str | int | float) else str(v)) for k, v in st.items()}
                )
            out.append({"kind": "filter", "keep": keep, "stats": stats})
        elif name.endswith("_deduplicator"):
            hashes = [op.compute_hash({"text": t})[HashKeys.hash] for t in texts]
            out.append({"kind": "deduplicator", "hashes": hashes})
        else:
            raise ValueError(f"op kind of {name} unknown")
    return out


def main() -> int:
    job = json.loads(open(sys.argv[1], encoding="utf-8").read())
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(trace(job), fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
