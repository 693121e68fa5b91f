"""Shared command line for the action scripts.

Exit codes: 0 the action succeeded (or was a dry run, or was not needed), 1 it failed, did not
take effect or (health_check) the host is unhealthy, 2 bad input (unknown host, bad
parameter, unreadable settings).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from remediation.actions import registry
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import InputError, SmartCloudOpsError

if TYPE_CHECKING:
    from remediation.engine import RemediationEngine

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's default exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser(action: str, add_params: Callable[[argparse.ArgumentParser], None]) -> _Parser:
    cls = registry.get(action)
    parser = _Parser(
        prog=f"python -m remediation.scripts.{action}",
        description=f"{cls.description} Audited like every remediation action.",
        epilog="exit codes: 0 ok (or dry run), 1 action failed or not effective, 2 bad input",
    )
    parser.add_argument("--host", required=True, help="target host, e.g. web-1")
    add_params(parser)
    mode = parser.add_mutually_exclusive_group()
    default = "executes" if cls.read_only else "follows SMARTCLOUDOPS_DRY_RUN (default: dry run)"
    mode.add_argument("--dry-run", dest="dry_run", action="store_true", default=None,
                      help="only record what would be done")
    mode.add_argument("--execute", dest="dry_run", action="store_false",
                      help=f"really act (default: {default})")
    parser.add_argument("--by", default=None, help="operator name for the audit log (default: $USER)")
    parser.add_argument("--json", action="store_true", help="print the action record as JSON")
    return parser


def run(
    action: str,
    argv: Sequence[str] | None,
    add_params: Callable[[argparse.ArgumentParser], None],
    params_of: Callable[[argparse.Namespace], dict[str, Any]],
    *,
    engine_factory: Callable[[], RemediationEngine] | None = None,
) -> int:
    parser = build_parser(action, add_params)
    args = parser.parse_args(argv)
    cls = registry.get(action)
    dry_run = args.dry_run
    if dry_run is None and cls.read_only:
        dry_run = False  # reading health changes nothing; a dry run would show nothing
    try:
        params = registry.validate_params(action, params_of(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        engine = engine_factory() if engine_factory else _default_engine()
        record, verification = engine.run_action(
            action, args.host, params.model_dump(), by=args.by or _user(), dry_run=dry_run
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SmartCloudOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        body = record.to_dict()
        body["verified"] = verification.verified if verification else None
        print(json.dumps(body, default=str))
    else:
        print(f"{record.result.value}: {record.detail} (action {record.action_id})")
        if verification is not None:
            print(f"verified: {str(verification.verified).lower()} ({verification.detail})")
    if record.result is ActionStatus.FAILED:
        return EXIT_FAILED
    if verification is not None and not verification.verified:
        return EXIT_FAILED
    return EXIT_OK


def _default_engine() -> RemediationEngine:
    from remediation.engine import RemediationEngine
    from remediation.rules import RuleSet
    from smartcloudops.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InputError(f"invalid SMARTCLOUDOPS_* settings: {exc}") from exc
    # Manual actions need no rules: a broken rules file must not block an operator's fix.
    return RemediationEngine.from_settings(settings, rules=RuleSet(rules=[]))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"
