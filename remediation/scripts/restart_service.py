"""``python -m remediation.scripts.restart_service --host web-1 [--service app] [--execute]``"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from remediation.scripts._cli import run


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", default="app", help="service to restart (default: app)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"service": args.service}


def main(argv: Sequence[str] | None = None) -> int:
    return run("restart_service", argv, _add, _params)


if __name__ == "__main__":
    sys.exit(main())
