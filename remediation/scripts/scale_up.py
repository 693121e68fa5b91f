"""``python -m remediation.scripts.scale_up --host web-1 [--replicas 1] [--max-capacity 10]``"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from remediation.scripts._cli import run


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=1, help="replicas to add (default: 1)")
    parser.add_argument("--max-capacity", type=int, default=10,
                        help="never scale the group above this (default: 10)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"replicas": args.replicas, "max_capacity": args.max_capacity}


def main(argv: Sequence[str] | None = None) -> int:
    return run("scale_up", argv, _add, _params)


if __name__ == "__main__":
    sys.exit(main())
