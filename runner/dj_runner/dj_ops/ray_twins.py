"""Data-Juicer's Ray deduplicators, run as their document-level twins.

Data-Juicer's Ray executors refuse ``document_deduplicator`` and
``document_minhash_deduplicator``; recipes written for them name the Ray versions instead:

- ``ray_document_deduplicator``: the md5 of the (optionally lower-cased, non-character
  stripped) text, the first copy kept, decided by Ray actors or Redis. Its twin is
  ``document_deduplicator``, with the same hash; the runner keeps the first copy in input order,
  where Data-Juicer keeps whichever copy its actors see first.
- ``ray_bts_minhash_deduplicator``: the same MinHash signatures and LSH bands as
  ``document_minhash_deduplicator`` (tokenisation, shingles, permutations, seed and band
  choice), clusters found by a union-find spread over Ray actors. Its twin computes the same
  signatures; the runner's global stage joins the clusters in one pass and keeps each
  cluster's first sample.

The parameters the twin shares mean the same on both; those only the Ray version has tune its
actors and tasks (how many, their memory, batch sizes, Redis), which the runner's global stage
does not have: they are accepted, named in a notice and left out of the op's parameters (and
so of the recipe's fingerprint). A parameter neither version knows is refused as for any op.
"""

from __future__ import annotations

from typing import Any

from dj_runner.dj_ops.catalog import RAY_TWINS as TWINS
from dj_runner.dj_ops.catalog import check_params, load_registry, signature


def twin_of(name: str) -> str | None:
    """The document-level op that runs Ray deduplicator ``name``, or None."""
    return TWINS.get(name)


def split_params(name: str, params: dict[str, Any], where: str) -> tuple[dict, list[str]]:
    """Check ``params`` against the Ray op ``name``; return (the twin's parameters, notices).

    Every name is checked against the Ray op's own signature first, so a typo is refused with
    the same message as on any op; the Ray-only tuning parameters become notices.
    """
    registry = load_registry()
    check_params(name, registry[name], params, where)
    twin_params = set(signature(registry[TWINS[name]]))
    own = set(signature(registry[name]))
    kept: dict[str, Any] = {}
    notices: list[str] = []
    for pname, value in params.items():
        if pname in own and pname not in twin_params:
            notices.append(
                f"{where}.{name}.{pname}: tunes the actors and tasks of Data-Juicer's Ray "
                f"deduplication, which the runner's global stage ({TWINS[name]}'s decision over "
                "every partition) does not have; accepted and ignored"
            )
        else:
            kept[pname] = value
    return kept, notices
