"""NAB benchmark: ``detect`` on every labelled series, against a plain IsolationForest.

Prints ONE JSON line. For every CSV of the NAB directory (``timestamp,value``; labels in
``combined_windows.json``):

- **project**: :func:`ml.detect.detect_series` — exactly what ``smartcloudops detect
  --train-fraction 0.15`` runs (``--cli`` runs the real command instead);
- **baseline**: a plain IsolationForest on the raw value, fitted on the same first 15 %,
  alarm at its 99.5th training-score percentile, no alarm handling (NOTES.md's peer).

Both are evaluated with :func:`ml.evaluation.evaluate` on the rows *after* the training
fraction (NAB's probationary period: a detector is not judged on the data it learned from),
micro over all series: event-F1, Fc1, point-F1, FP/day, delay. Labels are read only here,
after detection. Timing: wall time of each ``detect`` call (target: < 5 s for a 4,000-row
series).

``--synthetic N`` runs the same on ``N`` synthetic labelled series (:mod:`ml.injection`), the
development set: the detector's configuration is chosen there, not on NAB.

    python bench/nab.py [--data DIR] [--train-fraction 0.15] [--cli] [--per-file]
    python bench/nab.py --synthetic 40 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.detect import detect_series, read_series_csv  # noqa: E402
from ml.evaluation import EvaluationReport, evaluate, load_nab_windows, parse_windows  # noqa: E402
from ml.training import DEFAULT_CANDIDATE  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nab"


def load_nab(data: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    windows = load_nab_windows(data / "combined_windows.json")
    series = {}
    for name in sorted(windows):
        path = data / name
        if path.is_file():
            series[name] = read_series_csv(path)
    if not series:
        raise SystemExit(f"no labelled CSV found under {data}")
    return series, windows


def project_alarms(frame: pd.DataFrame, fraction: float, candidate: str, cli: bool) -> pd.DataFrame:
    if not cli:
        return detect_series(frame, fraction, candidate=candidate)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.csv", Path(tmp) / "out.csv"
        frame[["timestamp", "value"]].to_csv(src, index=False)
        exe = Path(sys.executable).with_name("smartcloudops")
        argv = [str(exe), "detect", "--input", str(src), "--output", str(dst)]
        subprocess.run(
            [*argv, "--train-fraction", str(fraction)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        out = pd.read_csv(dst)
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
        out["is_anomaly"] = out["is_anomaly"].astype(bool)
        return out


def baseline_alarms(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Plain IsolationForest on the raw value; alarm above the 99.5th training percentile."""
    values = frame["value"].ffill().bfill().to_numpy(dtype=float)[:, None]
    n_train = int(len(values) * fraction)
    model = IsolationForest(random_state=0).fit(values[:n_train])
    train_scores = -model.score_samples(values[:n_train])
    scores = -model.score_samples(values)
    out = frame.copy()
    out["score"] = scores
    out["is_anomaly"] = scores > np.quantile(train_scores, 0.995)
    return out


def held_out(out: pd.DataFrame, fraction: float) -> pd.Series:
    ordered = out.sort_values("timestamp", kind="stable")
    n_train = int(len(ordered) * fraction)
    part = ordered.iloc[n_train:]
    return pd.Series(part["is_anomaly"].to_numpy(dtype=bool), index=pd.DatetimeIndex(part["timestamp"]))


def figures(report: EvaluationReport) -> dict[str, Any]:
    return {
        "event_f1": round(report.event_f1, 4),
        "fc1": round(report.fc1, 4),
        "point_f1": round(report.point_f1, 4),
        "fp_per_day": round(report.fp_per_day, 4),
        "event_precision": round(report.event_precision, 4),
        "event_recall": round(report.event_recall, 4),
        "tp": report.tp,
        "fn": report.fn,
        "fp": report.fp,
        "windows": report.windows,
        "delay_seconds": None if report.delay_seconds is None else round(report.delay_seconds),
        "days": round(report.days, 2),
    }


def run(
    series: dict[str, pd.DataFrame],
    windows: dict[str, Any],
    fraction: float,
    candidate: str,
    cli: bool,
) -> dict[str, Any]:
    project: dict[str, pd.Series] = {}
    baseline: dict[str, pd.Series] = {}
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    for name, frame in series.items():
        started = time.perf_counter()
        out = project_alarms(frame, fraction, candidate, cli)
        seconds[name] = time.perf_counter() - started
        rows[name] = len(frame)
        project[name] = held_out(out, fraction)
        baseline[name] = held_out(baseline_alarms(frame, fraction), fraction)
    labelled = parse_windows({k: v for k, v in windows.items() if k in series})
    rep_p = evaluate(project, labelled)
    rep_b = evaluate(baseline, labelled)
    per_file = {
        name: {
            "windows": r.windows,
            "tp": r.tp,
            "fn": r.fn,
            "fp": r.fp,
            "baseline_tp": rep_b.per_series[name].tp,
            "baseline_fp": rep_b.per_series[name].fp,
            "detect_seconds": round(seconds[name], 3),
        }
        for name, r in rep_p.per_series.items()
    }
    largest = max(rows, key=lambda k: rows[k])
    return {
        "project": figures(rep_p),
        "baseline_isolation_forest": figures(rep_b),
        "event_f1_ratio": round(rep_p.event_f1 / rep_b.event_f1, 2) if rep_b.event_f1 else None,
        "timing": {
            "detect_seconds_max": round(max(seconds.values()), 3),
            "detect_seconds_mean": round(float(np.mean(list(seconds.values()))), 3),
            "rows_of_largest": rows[largest],
            "detect_seconds_largest": round(seconds[largest], 3),
        },
        "per_file": per_file,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB directory")
    parser.add_argument("--train-fraction", type=float, default=0.15)
    parser.add_argument("--candidate", default=DEFAULT_CANDIDATE)
    parser.add_argument("--cli", action="store_true", help="run the smartcloudops CLI per series")
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic series instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    parser.add_argument("--per-file", action="store_true", help="also print a per-file table to stderr")
    args = parser.parse_args(argv)

    if args.synthetic:
        from ml.injection import synthetic_corpus

        corpus = synthetic_corpus(args.synthetic, seed=args.seed, start_fraction=args.train_fraction)
        series, windows = corpus.series, corpus.windows
        dataset = f"synthetic(n={args.synthetic}, seed={args.seed})"
    else:
        series, windows = load_nab(args.data)
        dataset = str(args.data)
    started = time.perf_counter()
    result = run(series, windows, args.train_fraction, args.candidate, args.cli)
    line = {
        "benchmark": "nab" if not args.synthetic else "synthetic",
        "dataset": dataset,
        "series": len(series),
        "train_fraction": args.train_fraction,
        "candidate": args.candidate,
        "via": "cli" if args.cli else "ml.detect.detect_series",
        **result,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    if args.per_file:
        head = f"{'series':<55} {'win':>3} {'tp':>3} {'fn':>3} {'fp':>3}"
        print(f"{head} | {'IF tp':>5} {'IF fp':>5} {'sec':>6}", file=sys.stderr)
        for name, r in result["per_file"].items():
            print(
                f"{name:<55} {r['windows']:>3} {r['tp']:>3} {r['fn']:>3} {r['fp']:>3} | "
                f"{r['baseline_tp']:>5} {r['baseline_fp']:>5} {r['detect_seconds']:>6.2f}",
                file=sys.stderr,
            )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
