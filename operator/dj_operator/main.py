"""Entry point of ``dj-operator``."""

from __future__ import annotations

import sys


def main() -> int:
    print("dj-operator: the operator is not implemented yet", file=sys.stderr)
    return 2
