"""``python -m remediation.scripts.health_check --host web-1 [--service app]``

Read-only, so it runs without ``--execute``; exits 1 when the host is unhealthy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from remediation.scripts._cli import run


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", default="app", help="service to check (default: app)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"service": args.service}


def main(argv: Sequence[str] | None = None) -> int:
    return run("health_check", argv, _add, _params)


if __name__ == "__main__":
    sys.exit(main())
