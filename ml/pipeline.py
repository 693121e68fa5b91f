"""The ``train_validate_deploy`` pipeline's steps, as plain functions the DAG calls.

Each step reads settings itself (``get_settings()``, or a ``settings`` argument in tests), is
keyed on the data interval, and hands the next step a *path* or a small dict — never data.

1. :func:`prepare_dataset` — ``train_days`` of history ending at the interval end, from the
   metric store; hours the store lacks are read from the metric source. Written to
   ``<home>/datasets/<end>/`` (history.parquet + manifest.json), replaced on re-runs.
2. :func:`write_labels` — the label windows for the same range (the simulator's incidents,
   or an existing labels file when metrics come from a real Prometheus).
3. :func:`train_and_log` — one candidate: split (last :data:`VALIDATION_FRACTION` of the
   time span validates; without any label there, anomalies are injected into those held-back
   rows, see :func:`validation_data`), fit, evaluate, log an MLflow run, register a version.
4. :func:`promote_best` — the best candidate (passes the gate, then event-F1, then fewer
   false positives per day) goes to :func:`ml.tracking.promote`; the current champion is
   re-evaluated on this dataset's validation data first, so the comparison is like for like.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ml.evaluation import gate_passed
from ml.training import (
    CANDIDATES,
    evaluate_model,
    host_windows,
    in_windows,
    inject_validation,
    split_history,
    train_candidate,
)
from smartcloudops.domain import normalize_long
from smartcloudops.errors import InputError, ModelError
from smartcloudops.settings import Settings, get_settings

#: The last share of the dataset's time span used for validation.
VALIDATION_FRACTION = 0.3

_HISTORY = "history.parquet"
_LABELS = "labels.json"
_MANIFEST = "manifest.json"


def _utc(moment: datetime) -> datetime:
    """A plain ``datetime`` in UTC (Airflow hands over pendulum objects)."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise InputError(f"interval end {stamp.isoformat()} must be timezone-aware (UTC)")
    return datetime.fromtimestamp(stamp.timestamp(), tz=UTC)


def dataset_dir(settings: Settings, end: datetime) -> Path:
    return settings.home / "datasets" / _utc(end).strftime("%Y%m%dT%H%M%SZ")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare_dataset(
    data_interval_end: datetime,
    *,
    settings: Settings | None = None,
    source: Any = None,
    store: Any = None,
) -> str:
    """Gather ``[end − train_days, end)`` into a dataset directory; return its path."""
    from smartcloudops.store import get_metric_store, interval_hours

    settings = settings or get_settings()
    end = _utc(data_interval_end)
    start = end - timedelta(days=settings.train_days)
    store = store if store is not None else get_metric_store(settings)
    stored = store.read(start, end)
    hours = [pd.Timestamp(h).tz_convert("UTC") for h in interval_hours(start, end)]
    have = set(pd.to_datetime(stored["timestamp"], utc=True).dt.floor("h")) if len(stored) else set()
    missing = [h for h in hours if h not in have]
    frames = [stored]
    if missing:
        if source is None:
            from smartcloudops.sources import get_metric_source

            source = get_metric_source(settings)
        for run_start, run_end in _runs(missing):
            lo, hi = max(run_start, pd.Timestamp(start)), min(run_end, pd.Timestamp(end))
            part = source.query_range(lo.to_pydatetime(), hi.to_pydatetime(), settings.step_seconds)
            ts = pd.to_datetime(part["timestamp"], utc=True)
            frames.append(part.loc[(ts >= lo) & (ts < hi)])  # query_range includes its end
    parts = [f for f in frames if len(f)]
    history = normalize_long(pd.concat(parts, ignore_index=True) if parts else stored)
    # The store wins over the source where both have a sample.
    history = history.drop_duplicates(["timestamp", "host", "metric"], keep="first").reset_index(drop=True)
    if history.empty:
        raise InputError(f"no metrics between {start.isoformat()} and {end.isoformat()}")

    target = dataset_dir(settings, end)
    target.mkdir(parents=True, exist_ok=True)
    _write_atomic(target / _HISTORY, history.to_parquet(index=False))
    manifest = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "hours": len(hours),
        "hours_from_store": len(hours) - len(missing),
        "hours_from_source": len(missing),
        "rows": len(history),
        "hosts": sorted(history["host"].unique().tolist()),
        "step_seconds": settings.step_seconds,
    }
    _write_atomic(target / _MANIFEST, json.dumps(manifest, indent=1).encode())
    return str(target)


def _runs(hours: Sequence[pd.Timestamp]) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Contiguous runs of hour starts as ``[start, end)`` ranges (one source query each)."""
    runs: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for hour in sorted(hours):
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + pd.Timedelta(hours=1))
        else:
            runs.append((hour, hour + pd.Timedelta(hours=1)))
    return runs


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((path / _MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path} is not a dataset (no {_MANIFEST}); run prepare_dataset first") from exc
    return data


def write_labels(dataset_path: str, *, settings: Settings | None = None) -> str:
    """Write the dataset's label windows (NAB format, ``host/metric``); return their path.

    Labels come from the simulator's incidents (also written to ``settings.labels_file`` for
    the other components); with a real Prometheus an existing labels file is used as is.
    """
    settings = settings or get_settings()
    path = Path(dataset_path)
    manifest = _manifest(path)
    start, end = datetime.fromisoformat(manifest["start"]), datetime.fromisoformat(manifest["end"])
    if settings.prometheus_url and settings.labels_file.exists():
        labels = json.loads(settings.labels_file.read_text())
    else:
        from smartcloudops.simulator import FleetSimulator

        sim = FleetSimulator.from_settings(settings)
        sim.write_labels(start, end, settings.labels_file)
        labels = json.loads(settings.labels_file.read_text())
    target = path / _LABELS
    _write_atomic(target, json.dumps(labels, indent=1, sort_keys=True).encode())
    return str(target)


def load_dataset(dataset_path: str) -> tuple[pd.DataFrame, dict[str, list[list[str]]], dict[str, Any]]:
    """``(history_long, windows, manifest)`` of a dataset directory (no labels: ``{}``)."""
    path = Path(dataset_path)
    manifest = _manifest(path)
    history = pd.read_parquet(path / _HISTORY)
    labels_file = path / _LABELS
    windows = json.loads(labels_file.read_text()) if labels_file.exists() else {}
    return history, windows, manifest


def candidate_names() -> list[str]:
    return list(CANDIDATES)


def validation_data(
    dataset_path: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[list[str]]], dict[str, Any]]:
    """``(train, valid, windows, manifest)`` of a dataset, split as every candidate sees it.

    When no labelled window overlaps the validation period (metrics from a real Prometheus
    and no operator labels yet), anomalies are injected into the held-back validation rows
    (:func:`ml.training.inject_validation`, seeded by the dataset's interval, so every
    candidate and the re-evaluated champion see the same rows); ``manifest["injected"]``
    then counts them.
    """
    history, windows, manifest = load_dataset(dataset_path)
    train, valid = split_history(history, VALIDATION_FRACTION)
    start = pd.to_datetime(valid["timestamp"], utc=True).min()
    labelled = any(end >= start for wins in host_windows(windows).values() for _, end in wins)
    manifest = {**manifest, "injected": 0}
    if not labelled:
        seed = int(pd.Timestamp(manifest["end"]).timestamp()) % (2**31)
        valid, extra = inject_validation(valid, seed=seed)
        windows = {**windows, **extra}
        manifest["injected"] = sum(len(v) for v in extra.values())
    return train, valid, windows, manifest


def train_and_log(
    candidate: str,
    dataset_path: str,
    *,
    tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log and register one candidate; return a small summary dict."""
    from ml.tracking import log_candidate

    settings = settings or get_settings()
    train, valid, windows, manifest = validation_data(dataset_path)
    result = train_candidate(candidate, train, valid, windows)
    run_tags = {
        "dataset": str(dataset_path),
        "data_interval_end": str(manifest["end"]),
        "injected_anomalies": str(manifest["injected"]),
        **(tags or {}),
    }
    run_id, version = log_candidate(
        result,
        tracking_uri=settings.resolved_tracking_uri,
        experiment=settings.mlflow_experiment,
        artifact_location=settings.mlflow_artifact_root,
        registered_model=settings.registered_model,
        tags=run_tags,
    )
    report = result.report
    return {
        "candidate": candidate,
        "run_id": run_id,
        "version": version,
        "event_f1": report.event_f1,
        "point_f1": report.point_f1,
        "fc1": report.fc1,
        "fp_per_day": report.fp_per_day,
        "delay_seconds": report.delay_seconds,
        "windows": report.windows,
        "tp": report.tp,
        "fn": report.fn,
        "fp": report.fp,
        "passes_gate": gate_passed(report.event_f1, report.windows, settings.f1_gate),
        "train_seconds": round(result.train_seconds, 3),
        "validation_key": result.validation_key,
        "injected_anomalies": manifest["injected"],
        "dataset_path": str(dataset_path),
    }


def champion_event_f1_on(dataset_path: str, *, settings: Settings | None = None) -> tuple[str, float] | None:
    """Re-evaluate the current champion on this dataset's validation split: ``(version, f1)``.

    None when there is no champion yet.
    """
    from ml.tracking import load_champion

    settings = settings or get_settings()
    try:
        loaded = load_champion(settings.resolved_tracking_uri, settings.registered_model)
    except ModelError:
        return None
    train, valid, windows, _ = validation_data(dataset_path)
    hw = host_windows(windows)
    report, _ = evaluate_model(
        loaded.model, valid, hw, context=train, context_known=in_windows(train, hw)
    )
    return loaded.version, report.event_f1


def promote_best(results: Sequence[Mapping[str, Any]], *, settings: Settings | None = None) -> dict[str, Any]:
    """Pick the best candidate and let :func:`ml.tracking.promote` decide; return the decision."""
    from ml.tracking import promote

    settings = settings or get_settings()
    if not results:
        raise InputError("no candidate results to promote")
    best = max(results, key=lambda r: (bool(r["passes_gate"]), float(r["event_f1"]), -float(r["fp_per_day"])))
    champion_f1 = None
    if best["passes_gate"]:
        # Only worth loading the champion when the candidate could replace it.
        champion = champion_event_f1_on(str(best["dataset_path"]), settings=settings)
        champion_f1 = champion[1] if champion is not None else None
    decision = promote(
        tracking_uri=settings.resolved_tracking_uri,
        registered_model=settings.registered_model,
        version=str(best["version"]),
        event_f1=float(best["event_f1"]),
        labelled_windows=int(best["windows"]),
        gate=settings.f1_gate,
        validation_key=str(best["validation_key"]),
        champion_event_f1=champion_f1,
    )
    return {**decision.to_dict(), "candidate": best["candidate"]}
