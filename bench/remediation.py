"""Remediation benchmark: injected incidents -> real sensor path -> action executed and audited.

Prints ONE JSON line::

    {"incidents", "p50_detect_to_action_s", "p95_detect_to_action_s", "lost_audit_records",
     "duplicate_actions", "false_actions", ...extras}

Setup (all on the embedded default, in a throw-away ``SMARTCLOUDOPS_HOME``):

- the built-in fleet simulator at a compressed resolution (``SMARTCLOUDOPS_STEP_SECONDS=1``)
  with ``K`` injected ``cpu_hog`` incidents, staggered over the fleet;
- a bench rules file: ``cpu > 90 for 5s`` (M of N tolerant, clears at 80) -> ``restart_service``,
  cooldown 15 s -- the packaged rule with its durations compressed 36x;
- ``--sensors N`` (default 2) sensor processes sharing the event store and the audit log, each
  doing what the ``anomaly_sensor`` DAG does: poll :func:`remediation.sensor.pending_work`
  every ``--poll`` seconds (the deferrable trigger's check) and run
  :func:`remediation.sensor.sense_and_act` when it reports work. Dry-run is off (the simulator
  adapter really restarts the service, which ends the incident); the safety rails are wired
  from settings as in production (breaker and fleet lock on, limits raised for K incidents).
  The model is left out (a scorer that flags nothing): the threshold path is what is timed.

Measured per incident: from the instant the rule's condition becomes true (the first sample
at or after the incident start on the step grid, plus the rule's duration: before that the
data cannot satisfy it) to the instant ``AuditLog.append`` of the action returned (executed,
stored and fsynced) in whichever sensor acted.

- ``lost_audit_records``: actions in the event store with no audit record, plus any problem
  ``verify_audit`` finds;
- ``duplicate_actions``: restarts beyond the first per incident (simulator state) plus audit
  records sharing an action id;
- ``false_actions``: actions on a host with no incident (injected or scheduled) active then.

    python bench/remediation.py [--incidents 12] [--sensors 2] [--poll 1.0] [--gap 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_RULES = """
version: 1
rules:
  - name: cpu_high
    description: the packaged cpu_high rule, durations compressed for the benchmark
    condition:
      metric: cpu
      operator: ">"
      threshold: 90
      duration: 5s
      min_samples_ratio: 0.75
      clear_threshold: 80
    action: restart_service
    params:
      service: app
    cooldown: 15s
"""
RULE_DURATION = timedelta(seconds=5)
STEP_SECONDS = 1


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    # nearest-rank: no interpolation between two measured values
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 3)


def _env(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "SMARTCLOUDOPS_HOME": str(home),
        "SMARTCLOUDOPS_STEP_SECONDS": str(STEP_SECONDS),
        "SMARTCLOUDOPS_DRY_RUN": "false",
        "SMARTCLOUDOPS_RULES_FILE": str(home / "bench-rules.yaml"),
        "SMARTCLOUDOPS_SCORING_CONTEXT_MINUTES": "1",
        "SMARTCLOUDOPS_REMEDIATION_SETTLE_SECONDS": "0",
        # The rails stay wired (breaker + fleet lock); their limits fit K incidents.
        "SMARTCLOUDOPS_REMEDIATION_RATE_LIMIT_ACTIONS": "1000",
        "SMARTCLOUDOPS_REMEDIATION_BLAST_RADIUS_SHARE": "1.0",
        "SMARTCLOUDOPS_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_URL", None)
    env.pop("SMARTCLOUDOPS_PROMETHEUS_URL", None)
    return env


# -- one sensor process -------------------------------------------------------------------------


def sensor_loop(until: float, poll: float, acks: Path) -> int:
    """What the anomaly_sensor DAG does, in a loop: the trigger's check, then one pass."""
    import logging

    from remediation.engine import RemediationEngine
    from remediation.sensor import pending_work, sense_and_act
    from smartcloudops.audit import AuditLog
    from smartcloudops.events import EventStore
    from smartcloudops.settings import get_settings

    logging.basicConfig(level=logging.ERROR)  # stdout carries the one JSON line; keep stderr quiet
    settings = get_settings()

    class TimedAudit(AuditLog):
        """Notes when each action's append returned: the action is executed and audited."""

        def append(self, record: Any) -> dict[str, Any]:
            entry = super().append(record)
            if entry.get("event") == "action":
                with open(acks, "a") as fh:
                    fh.write(json.dumps({"action_id": entry["action_id"], "at": time.time()}) + "\n")
            return entry

    def no_model(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"host": i["host"], "timestamp": i["timestamp"], "anomaly": False} for i in instances]

    events = EventStore.from_settings(settings)
    audit = TimedAudit(settings.audit_dir, retention_days=settings.audit_retention_days)
    passes = 0
    while time.time() < until:
        started = time.time()
        if pending_work(settings) is not None:
            # A fresh engine per pass, as each DAG run builds one.
            engine = RemediationEngine.from_settings(settings, events=events, audit=audit)
            sense_and_act(settings, events=events, engine=engine, scorer=no_model)
            passes += 1
        time.sleep(max(0.0, poll - (time.time() - started)))
    events.close()
    print(json.dumps({"passes": passes}), flush=True)
    return 0


# -- the run ------------------------------------------------------------------------------------


def run(k: int, sensors: int, poll: float, gap: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-remediation-"))
    (home / "bench-rules.yaml").write_text(BENCH_RULES)
    env = _env(home)
    os.environ.update(env)

    from smartcloudops.settings import get_settings
    from smartcloudops.simulator import FleetSimulator

    get_settings.cache_clear()
    settings = get_settings()
    sim = FleetSimulator.from_settings(settings)
    hosts = settings.host_list
    # Leave the sensors time to import and warm up, then one incident every ``gap`` seconds,
    # round-robin over the fleet (same host again after len(hosts) * gap > the cooldown).
    warmup = 12.0
    begin = datetime.now(UTC) + timedelta(seconds=warmup)
    injected = [
        sim.inject("cpu_hog", hosts[i % len(hosts)], start=begin + timedelta(seconds=i * gap),
                   duration_minutes=2)
        for i in range(k)
    ]
    last_true = max(inc.start for inc in injected) + RULE_DURATION + timedelta(seconds=STEP_SECONDS)
    until = last_true.timestamp() + 20.0  # the last incident's action, with room to spare

    procs = []
    for n in range(sensors):
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--sensor-loop", "--until", str(until),
                 "--poll", str(poll), "--acks", str(home / f"acks-{n}.jsonl")],
                env=env, stdout=subprocess.PIPE, text=True,
            )
        )
    passes = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=until - time.time() + 120)
        if proc.returncode != 0:
            raise SystemExit(f"sensor process failed with {proc.returncode}")
        passes += int(json.loads(out.strip().splitlines()[-1])["passes"])
    return {**measure(home, sim, injected, begin), "sensor_passes": passes}


def measure(home: Path, sim: Any, injected: list[Any], begin: datetime) -> dict[str, Any]:
    import pandas as pd

    from smartcloudops.audit import AuditLog, verify_audit
    from smartcloudops.domain import ActionStatus
    from smartcloudops.events import EventStore
    from smartcloudops.settings import get_settings

    settings = get_settings()
    acks: dict[str, float] = {}
    for path in home.glob("acks-*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            acks.setdefault(row["action_id"], row["at"])
    events = EventStore.from_settings(settings)
    stored = events.actions(limit=10_000, since=begin - timedelta(minutes=5))
    events.close()
    executed = [r for r in stored if r.result is ActionStatus.SUCCEEDED and r.rule == "cpu_high"]

    audit_actions = [r for r in AuditLog(settings.audit_dir).records() if r.get("event") == "action"]
    audit_ids = [str(r["action_id"]) for r in audit_actions]
    verification = verify_audit(settings.audit_dir)
    lost = len({r.action_id for r in stored} - set(audit_ids)) + len(verification.problems)

    # Restarts the adapter really made, from the simulator's own state (not our records).
    restarts = [
        (d["host"], pd.Timestamp(d["at"]).to_pydatetime())
        for d in json.loads(sim.state_file.read_text()).get("restarts", [])
    ]
    delays, duplicates, missed = [], len(audit_ids) - len(set(audit_ids)), 0
    claimed: set[int] = set()
    for inc in injected:
        # An incident owns the time until it would have ended, or until the next incident on
        # the same host began (whichever is first): a restart then is for that one.
        later = [x.start for x in injected if x.host == inc.host and x.start > inc.start]
        original_end = min([inc.start + timedelta(minutes=2), *later])
        mine = [i for i, (h, at) in enumerate(restarts) if h == inc.host and inc.start <= at < original_end]
        claimed.update(mine)
        duplicates += max(0, len(mine) - 1)
        acted = sorted(
            (r for r in executed if r.instance == inc.host and inc.start <= r.timestamp < original_end),
            key=lambda r: r.timestamp,
        )
        if not acted or acted[0].action_id not in acks:
            missed += 1
            continue
        grid_start = pd.Timestamp(inc.start).ceil(f"{STEP_SECONDS}s").to_pydatetime()
        condition_true = grid_start + RULE_DURATION
        delays.append(acks[acted[0].action_id] - condition_true.timestamp())
    # Anything else the fleet was restarted for must match some real incident.
    window = sim.incidents(begin - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=1))
    false_actions = sum(
        1
        for i, (host, at) in enumerate(restarts)
        if i not in claimed
        and not any(x.host == host and x.start <= at <= x.end + timedelta(seconds=5) for x in window)
    )
    return {
        "incidents": len(injected),
        "p50_detect_to_action_s": _percentile(delays, 50),
        "p95_detect_to_action_s": _percentile(delays, 95),
        "lost_audit_records": lost,
        "duplicate_actions": duplicates,
        "false_actions": false_actions,
        "missed_incidents": missed,
        "max_detect_to_action_s": round(max(delays), 3) if delays else None,
        "actions_executed": len(executed),
        "audit_records": len(audit_actions),
        "audit_verify_ok": verification.ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=12)
    parser.add_argument("--sensors", type=int, default=2, help="concurrent sensor processes")
    parser.add_argument("--poll", type=float, default=1.0, help="trigger poll interval, seconds")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between incident starts")
    parser.add_argument("--sensor-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--acks", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sensor_loop:
        return sensor_loop(args.until, args.poll, args.acks)
    if args.incidents < 1 or args.sensors < 1 or args.poll <= 0 or args.gap <= 0:
        parser.error("--incidents, --sensors, --poll and --gap must be positive")
    started = time.perf_counter()
    result = run(args.incidents, args.sensors, args.poll, args.gap)
    result.update(
        sensors=args.sensors,
        poll_s=args.poll,
        step_s=STEP_SECONDS,
        wall_s=round(time.perf_counter() - started, 1),
        machine=f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
