"""Training benchmark: the ``train_validate_deploy`` pipeline on the demo fleet, without Airflow.

Prints ONE JSON line. Runs the DAG's steps as plain calls (:mod:`ml.pipeline`) in a temporary
home: gather 7 days of the simulator's 5 hosts × 6 metrics at 1-minute steps, write its
labels, train + evaluate + log + register every candidate (sequentially here; the DAG maps
them in parallel), promote the best. Reports wall seconds per step and per candidate, the
simulator gate figures (event-F1 etc.) of each candidate, and the promotion decision.
Target: the whole pipeline under 3 minutes on 2 cores.

    python bench/training.py [--days 7] [--seed 7] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-mlflow", action="store_true", help="fit and evaluate only")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", train_days=args.days, sim_seed=args.seed)
        steps: dict[str, float] = {}
        started = time.perf_counter()
        t = time.perf_counter()
        dataset = pipeline.prepare_dataset(END, settings=settings)
        steps["gather_metrics"] = time.perf_counter() - t
        t = time.perf_counter()
        pipeline.write_labels(dataset, settings=settings)
        steps["write_labels"] = time.perf_counter() - t

        candidates: dict[str, dict[str, Any]] = {}
        results = []
        for name in pipeline.candidate_names():
            t = time.perf_counter()
            if args.no_mlflow:
                history, windows, _ = pipeline.load_dataset(dataset)
                train, valid = pipeline.split_history(history, pipeline.VALIDATION_FRACTION)
                res = train_candidate(name, train, valid, windows)
                rep = res.report
                summary = {
                    "event_f1": rep.event_f1,
                    "fc1": rep.fc1,
                    "fp_per_day": rep.fp_per_day,
                    "tp": rep.tp,
                    "fn": rep.fn,
                    "fp": rep.fp,
                    "train_seconds": res.train_seconds,
                }
            else:
                summary = pipeline.train_and_log(name, dataset, settings=settings)
                results.append(summary)
            wall = time.perf_counter() - t
            candidates[name] = {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in summary.items()
                if k in ("event_f1", "fc1", "fp_per_day", "tp", "fn", "fp", "train_seconds", "passes_gate")
            }
            candidates[name]["step_seconds"] = round(wall, 2)
            steps[f"train[{name}]"] = wall
        decision = None
        if results:
            t = time.perf_counter()
            decision = pipeline.promote_best(results, settings=settings)
            steps["promote"] = time.perf_counter() - t
        total = time.perf_counter() - started

    line = {
        "benchmark": "training",
        "fleet": f"{len(settings.host_list)} hosts x 6 metrics x {args.days:g} days @ 1 min",
        "seed": args.seed,
        "total_seconds": round(total, 1),
        "target_seconds": 180,
        "steps_seconds": {k: round(v, 2) for k, v in steps.items()},
        "candidates": candidates,
        "promotion": None
        if decision is None
        else {k: decision[k] for k in ("candidate", "promoted", "reason") if k in decision},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
