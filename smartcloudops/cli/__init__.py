"""``smartcloudops`` — the command line, and the project's composition root.

This package is the one place allowed to wire every other package together (the
import-linter contract exempts it). It imports them lazily, inside each command, so
``smartcloudops --help`` starts in a blink and a broken optional part breaks only its command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from smartcloudops.errors import SmartCloudOpsError

Handler = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive): {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from smartcloudops.cli import commands

    parser = argparse.ArgumentParser(
        prog="smartcloudops",
        description="SmartCloudOps AI: observe, learn, detect, act, explain.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("demo", commands.cmd_demo, "One end-to-end pass of the loop on the embedded default.")
    p.add_argument(
        "--days", type=_positive_float, default=3.0, help="days of history to backfill (default 3)"
    )
    p.add_argument("--keep", action="store_true", help="keep the demo's state directory from earlier runs")

    p = add("up", commands.cmd_up, "Start the long-running stack in the background.")
    p.add_argument("--no-airflow", action="store_true", help="skip Airflow (faster start)")
    add("down", commands.cmd_down, "Stop everything `up` started, and check nothing is left.")

    p = add("simulate", commands.cmd_simulate, "Run the fleet simulator: exporters, history, incidents.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true", help="serve one /metrics target per host until stopped")
    mode.add_argument("--history-days", type=_positive_float, help="write N days of history now (instant)")
    mode.add_argument(
        "--inject", metavar="KIND", help="inject an incident: cpu_hog, memory_leak, disk_fill, network_flood"
    )
    p.add_argument("--host", help="host for --inject")
    p.add_argument("--duration", type=_positive_float, default=30.0, help="incident minutes (default 30)")
    p.add_argument("--output", help="file for --history-days (.csv or .parquet)")
    p.add_argument("--bind", default="127.0.0.1", help="address for --serve (default loopback)")
    p.add_argument("--port", type=_port, help="first per-host port for --serve")

    p = add("extract", commands.cmd_extract, "Copy metric intervals from the source into the metric store.")
    p.add_argument("--start", help="UTC start (ISO 8601); default: the last complete hour")
    p.add_argument("--end", help="UTC end (ISO 8601)")
    p.add_argument("--days", type=_positive_float, help="backfill this many days, hour by hour")

    p = add("train", commands.cmd_train, "Train, evaluate and register every candidate detector.")
    p.add_argument("--days", type=_positive_float, help="days of history (default: settings.train_days)")

    p = add("detect", commands.cmd_detect, "Score one timestamp,value series from a CSV file.")
    p.add_argument("--input", required=True, help="CSV with columns timestamp,value")
    p.add_argument("--output", required=True, help="CSV to write: input rows + score,is_anomaly")
    p.add_argument(
        "--train-fraction", type=_fraction, default=0.15, help="leading share used to fit (default 0.15)"
    )

    p = add("serve", commands.cmd_serve, "Run the scoring service.")
    p.add_argument("--host", default=None, help="bind address (default settings.scoring_host)")
    p.add_argument("--port", type=_port, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--model-uri", default=None, help="serve this model instead of the champion alias")

    p = add("chatops", commands.cmd_chatops, "Run the ChatOps API.")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=_port, default=None)
    p.add_argument("--workers", type=int, default=2)

    p = add("remediate", commands.cmd_remediate, "Run the sensor and rule engine once (or in a loop).")
    p.add_argument(
        "--loop", type=_positive_float, metavar="SECONDS", help="repeat every SECONDS until stopped"
    )
    p.add_argument("--execute", action="store_true", help="act for real (default: settings.dry_run)")

    add("status", commands.cmd_status, "Show services, model champion, recent anomalies and actions.")

    p = add("labels", commands.cmd_labels,
            "Operator labels: windows that were real incidents or false alarms.")
    labels = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    q = labels.add_parser("add", help="store a label (idempotent)", description=(
        "Store a label: HOST's window START..END (ISO 8601, UTC unless an offset is given) was a "
        "real incident (training validates on it) or a false alarm."))
    q.add_argument("--host", required=True)
    q.add_argument("--start", required=True, help="window start, e.g. 2026-01-15T10:00:00Z")
    q.add_argument("--end", required=True, help="window end")
    q.add_argument("--kind", required=True, choices=["incident", "false_alarm"])
    q.add_argument("--note", default="", help="why (at most 500 characters)")
    q.add_argument("--anomaly-id", help="the anomaly this label is about")
    q.add_argument("--author", help="who labels (default: cli:<login name>)")
    q = labels.add_parser("list", help="list labels, newest window first")
    q.add_argument("--host")
    q.add_argument("--since", help="only windows ending at or after this time (ISO 8601)")
    q.add_argument("--kind", choices=["incident", "false_alarm"])
    q.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = labels.add_parser("delete", help="delete a label by id")
    q.add_argument("label_id", help="e.g. lbl-1a2b3c4d5e6f")

    p = add("audit", commands.cmd_audit, "Work with the remediation audit log.")
    p.add_argument("audit_command", choices=["verify"], help="verify: check the hash chain")
    p.add_argument("--dir", help="audit directory (default: settings)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SmartCloudOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
