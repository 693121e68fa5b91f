"""``python -m remediation.scripts.scale_down --host web-1 [--replicas 1] [--min-capacity 1]``"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from remediation.scripts._cli import run


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=1, help="replicas to remove (default: 1)")
    parser.add_argument("--min-capacity", type=int, default=1,
                        help="never scale the group below this (default: 1)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"replicas": args.replicas, "min_capacity": args.min_capacity}


def main(argv: Sequence[str] | None = None) -> int:
    return run("scale_down", argv, _add, _params)


if __name__ == "__main__":
    sys.exit(main())
