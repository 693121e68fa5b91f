"""One function per subcommand. Each imports what it needs when it runs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from smartcloudops.errors import InputError
from smartcloudops.settings import Settings, get_settings


def say(message: str) -> None:
    print(message, flush=True)


def parse_utc(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{what}: not an ISO 8601 time: {text!r} (e.g. 2026-11-22T10:00:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def last_complete_hour(now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    return end - timedelta(hours=1), end


# -- demo / up / down -------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from smartcloudops.cli.demo import run_demo

    return run_demo(days=args.days, keep=args.keep)


def cmd_up(args: argparse.Namespace) -> int:
    from smartcloudops.cli.stack import stack_up

    return stack_up(get_settings(), airflow=not args.no_airflow)


def cmd_down(args: argparse.Namespace) -> int:
    from smartcloudops.cli.stack import stack_down

    return stack_down(get_settings())


# -- observe ----------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from smartcloudops.logs import configure_logging
    from smartcloudops.simulator import FleetSimulator, serve_exporters

    settings = get_settings()
    configure_logging("simulator", settings)
    sim = FleetSimulator.from_settings(settings)

    if args.inject:
        if not args.host:
            raise InputError("--inject needs --host (one of: " + ", ".join(sim.hosts) + ")")
        incident = sim.inject(args.inject, args.host, duration_minutes=args.duration)
        say(json.dumps(incident.to_dict()))
        return 0

    if args.history_days:
        if not args.output:
            raise InputError("--history-days needs --output FILE (.csv or .parquet)")
        output = Path(args.output)
        if output.suffix not in {".csv", ".parquet"}:
            raise InputError(f"--output must end in .csv or .parquet, not {output.suffix or '(none)'}")
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        start = end - timedelta(days=args.history_days)
        frame = sim.values(start, end, settings.step_seconds)
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix == ".csv":
            frame.to_csv(output, index=False)
        else:
            frame.to_parquet(output, index=False)
        labels = sim.write_labels(start, end, output.with_suffix(".labels.json"))
        say(f"wrote {len(frame):,} samples of {len(sim.hosts)} hosts to {output}; labels: {labels}")
        return 0

    # default and --serve: live exporters until stopped
    port = args.port or settings.sim_port
    group = serve_exporters(sim, host=args.bind, base_port=port)
    say(
        f"simulator: {len(group.targets)} node_exporter-style targets: "
        + ", ".join(f"{h}=http://{t}/metrics" for h, t in zip(group.hosts, group.targets, strict=True))
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        group.stop()
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from smartcloudops.extract import extract_interval
    from smartcloudops.logs import configure_logging

    settings = get_settings()
    configure_logging("extract", settings)
    if args.days:
        _, end = last_complete_hour()
        start = end - timedelta(days=args.days)
    elif args.start:
        start = parse_utc(args.start, "--start")
        end = parse_utc(args.end, "--end") if args.end else start + timedelta(hours=1)
    else:
        start, end = last_complete_hour()
    if end <= start:
        raise InputError("--end must be after --start")
    hours = int((end - start).total_seconds() // 3600) or 1
    total = 0
    cursor = start
    done = 0
    while cursor < end:
        step_end = min(cursor + timedelta(hours=1), end)
        result = extract_interval(cursor, step_end, settings=settings)
        total += result.rows
        done += 1
        if hours > 1:
            print(f"\rextract: {done}/{hours} hours, {total:,} samples", end="", flush=True)
        cursor = step_end
    if hours > 1:
        print()
    say(f"extracted {total:,} samples for {start.isoformat()} .. {end.isoformat()}")
    return 0


# -- learn / detect ---------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from smartcloudops.cli.training import train_now

    settings = get_settings()
    return train_now(settings, days=args.days)


def cmd_detect(args: argparse.Namespace) -> int:
    from ml.detect import detect_series, read_series_csv, write_detect_csv

    input_path = Path(args.input)
    output_path = Path(args.output)
    if not input_path.is_file():
        raise InputError(f"--input {input_path}: no such file")
    if output_path.resolve() == input_path.resolve():
        raise InputError("--output must differ from --input (the input would be overwritten)")
    frame = read_series_csv(input_path)
    say(f"detect: {len(frame):,} rows, fitting on the first {args.train_fraction:.0%}")
    result = detect_series(frame, train_fraction=args.train_fraction)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    write_detect_csv(result, output_path)
    flagged = int(result["is_anomaly"].sum())
    say(f"detect: {flagged} anomalous rows of {len(result):,}; wrote {output_path}")
    return 0


# -- serve / explain / act --------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import run

    settings = get_settings()
    run(
        host=args.host or settings.scoring_host,
        port=args.port or settings.scoring_port,
        workers=max(1, args.workers),
        model_uri=args.model_uri,
    )
    return 0


def cmd_chatops(args: argparse.Namespace) -> int:
    from chatops.server import run

    settings = get_settings()
    run(
        host=args.host or settings.chatops_host,
        port=args.port or settings.chatops_port,
        workers=max(1, args.workers),
    )
    return 0


def cmd_remediate(args: argparse.Namespace) -> int:
    from remediation.sensor import sense_and_act
    from smartcloudops.logs import configure_logging

    settings = get_settings()
    if args.execute:
        settings = settings.model_copy(update={"dry_run": False})
    configure_logging("remediation", settings)
    while True:
        summary = sense_and_act(settings)
        say(json.dumps(summary, default=str))
        if not args.loop:
            return 0
        time.sleep(args.loop)


def cmd_status(args: argparse.Namespace) -> int:
    from smartcloudops.cli.status import print_status

    return print_status(get_settings())


def cmd_audit(args: argparse.Namespace) -> int:
    from smartcloudops.audit import verify_audit

    settings: Settings = get_settings()
    directory = Path(args.dir) if args.dir else settings.audit_dir
    if not directory.is_dir():
        raise InputError(f"audit directory {directory} does not exist")
    result = verify_audit(directory)
    for warning in result.warnings:
        say(f"warning: {warning}")
    for problem in result.problems:
        say(f"PROBLEM: {problem}")
    verdict = "OK" if result.ok else "FAILED"
    say(f"audit verify {verdict}: {result.records} records in {result.files} files")
    sys.stdout.flush()
    return 0 if result.ok else 1


# -- operator labels ---------------------------------------------------------------------


def cmd_labels(args: argparse.Namespace) -> int:
    import getpass

    from smartcloudops.labels import LabelStore, iso_utc

    store = LabelStore.from_settings(get_settings())
    try:
        if args.labels_command == "add":
            author = args.author
            if author is None:
                try:
                    author = f"cli:{getpass.getuser()}"
                except (KeyError, OSError):  # no login name (a container without a passwd entry)
                    author = "cli"
            label, created = store.add(args.host, args.start, args.end, args.kind, author=author,
                                       note=args.note, anomaly_id=args.anomaly_id)
            verb = "stored" if created else "already stored"
            say(f"{verb} {label.label_id}: {label.host} {iso_utc(label.start)} .. {iso_utc(label.end)} "
                f"{label.kind} by {label.author}")
            return 0
        if args.labels_command == "list":
            found = store.find(host=args.host, since=args.since, kind=args.kind, limit=args.limit)
            for label in found:
                if args.json:
                    say(json.dumps(label.to_dict(), sort_keys=True))
                else:
                    note = f"  {label.note}" if label.note else ""
                    say(f"{label.label_id}  {label.host}  {iso_utc(label.start)} .. {iso_utc(label.end)}  "
                        f"{label.kind}  {label.author}{note}")
            if not args.json:
                say(f"{len(found)} label{'' if len(found) == 1 else 's'}")
            return 0
        if not store.delete(args.label_id):
            raise InputError(f"no label {args.label_id!r}")
        say(f"deleted {args.label_id}")
        return 0
    finally:
        store.close()
