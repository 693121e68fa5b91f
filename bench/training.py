"""Training benchmark: the ``train_validate_deploy`` pipeline on the demo fleet.

Prints ONE JSON line. In a temporary home: gather 7 days of the simulator's 5 hosts × 6
metrics at 1-minute steps, write its labels, split, fit every candidate host by host (one
detector per candidate × host plus the pooled fallback), evaluate + log + register every
candidate, promote the best. Target: the whole pipeline under 3 minutes on 2 cores.

By default the DAG's steps run as plain calls (:mod:`ml.pipeline`), one after another, and
each step is timed. ``--airflow`` runs the DAG itself instead (``dag.test()`` in this process,
as ``make demo`` does, tasks one after another; Airflow's migration is not timed) and reports
the per-task wall times Airflow recorded, so the two modes together show what the DAG's
task-per-host layout costs over plain calls.

    python bench/training.py [--days 7] [--seed 7] [--no-mlflow | --airflow]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml import pipeline  # noqa: E402
from ml.training import train_candidate  # noqa: E402
from smartcloudops.settings import Settings  # noqa: E402

END = datetime(2024, 3, 11, tzinfo=UTC)
_FIGURES = ("event_f1", "fc1", "fp_per_day", "tp", "fn", "fp", "train_seconds", "passes_gate")


def _rounded(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items() if k in _FIGURES}


def _plain(settings: Settings, no_mlflow: bool) -> tuple[dict[str, float], dict[str, Any], Any]:
    """The DAG's steps as plain calls; ``(steps_seconds, candidates, decision)``."""
    steps: dict[str, float] = {}

    def timed(name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = call(*args, **kwargs)
        steps[name] = time.perf_counter() - t
        return out

    dataset = timed("gather_metrics", pipeline.prepare_dataset, END, settings=settings)
    timed("write_labels", pipeline.write_labels, dataset, settings=settings)
    keys = timed("split", pipeline.prepare_split, dataset)
    candidates: dict[str, dict[str, Any]] = {}
    results = []
    for name in pipeline.candidate_names():
        if no_mlflow:
            train, valid, windows, _ = pipeline.validation_data(dataset)
            res = timed(f"fit+evaluate[{name}]", train_candidate, name, train, valid, windows)
            rep = res.report
            candidates[name] = _rounded(
                {**rep.to_dict(), "passes_gate": rep.event_f1 >= settings.f1_gate,
                 "train_seconds": res.train_seconds}
            )
            continue
        parts = [timed(f"fit[{name}/{key}]", pipeline.fit_part, name, key, dataset) for key in keys]
        summary = timed(
            f"evaluate[{name}]", pipeline.evaluate_and_log, name, dataset, parts, settings=settings
        )
        results.append(summary)
        candidates[name] = _rounded(summary)
    decision = timed("promote", pipeline.promote_best, results, settings=settings) if results else None
    return steps, candidates, decision


def _airflow(settings: Settings) -> tuple[dict[str, float], dict[str, Any], Any, float]:
    """The DAG run by ``dag.test()``; ``(task_seconds, candidates, decision, run_seconds)``."""
    from smartcloudops.cli import airflow_runner

    os.environ["SMARTCLOUDOPS_HOME"] = str(settings.home)
    os.environ["SMARTCLOUDOPS_TRAIN_DAYS"] = str(settings.train_days)
    os.environ["SMARTCLOUDOPS_SIM_SEED"] = str(settings.sim_seed)
    airflow_runner.prepare(settings)  # configures and migrates a fresh Airflow home: not timed
    outcome = airflow_runner.run_dag_outcome("train_validate_deploy", END, settings=settings, retries=0)
    if not outcome.ok:
        raise SystemExit(f"train_validate_deploy ended {outcome.state}: {outcome.task_states}")
    steps = _task_seconds(outcome)
    candidates = {r["candidate"]: _rounded(r) for r in outcome.returns["evaluate"]}
    return steps, candidates, outcome.returns["promote"], outcome.seconds


def _task_seconds(outcome: Any) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance).where(
        TaskInstance.dag_id == outcome.dag_id, TaskInstance.run_id == outcome.run_id
    )
    steps: dict[str, float] = {}
    with create_session() as session:
        for ti in session.scalars(query):
            index = ti.rendered_map_index or ti.map_index
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{index}]"
            steps[name] = float(ti.duration or 0.0)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-mlflow", action="store_true", help="fit and evaluate only (FleetModel.fit)")
    mode.add_argument("--airflow", action="store_true", help="run the DAG with dag.test()")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", train_days=args.days, sim_seed=args.seed)
        started = time.perf_counter()
        if args.airflow:
            steps, candidates, decision, run_seconds = _airflow(settings)
            total = run_seconds
        else:
            steps, candidates, decision = _plain(settings, args.no_mlflow)
            total = time.perf_counter() - started

    # Per candidate: its fits summed, the slowest one (the critical path with enough workers).
    per_candidate: dict[str, dict[str, float]] = defaultdict(lambda: {"fits": 0.0, "slowest_fit": 0.0})
    for name, seconds in steps.items():
        if name.startswith("fit["):
            candidate = name[4:-1].split("/", 1)[0]
            per_candidate[candidate]["fits"] += seconds
            per_candidate[candidate]["slowest_fit"] = max(per_candidate[candidate]["slowest_fit"], seconds)
    for name, figures in per_candidate.items():
        candidates.setdefault(name, {}).update({k: round(v, 2) for k, v in figures.items()})

    line = {
        "benchmark": "training",
        "mode": "airflow dag.test" if args.airflow else ("no-mlflow" if args.no_mlflow else "plain calls"),
        "fleet": f"{len(settings.host_list)} hosts x 6 metrics x {args.days:g} days @ 1 min",
        "seed": args.seed,
        "total_seconds": round(total, 1),
        "target_seconds": 180,
        "tasks": len(steps),
        "steps_seconds": {k: round(v, 2) for k, v in steps.items()},
        "candidates": candidates,
        "promotion": None
        if decision is None
        else {k: decision[k] for k in ("candidate", "promoted", "reason") if k in decision},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
