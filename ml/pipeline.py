"""The ``train_validate_deploy`` pipeline's steps, as plain functions the DAG calls.

Each step reads settings itself (``get_settings()``, or a ``settings`` argument in tests), is
keyed on the data interval, and hands the next step a *path* or a small dict — never data.
Every file is written atomically under the dataset directory, so re-running a step for the
same interval replaces its files and never duplicates them.

1. :func:`prepare_dataset` — ``train_days`` of history ending at the interval end, from the
   metric store; hours the store lacks are read from the metric source. Written to
   ``<home>/datasets/<end>/`` (history.parquet + manifest.json).
2. :func:`write_labels` — the label windows for the same range: the simulator's incidents
   (or an existing labels file when metrics come from a real Prometheus) united with the
   incidents operators confirmed (:func:`smartcloudops.labels.operator_windows`).
3. :func:`prepare_split` — the split every candidate sees (the last
   :data:`VALIDATION_FRACTION` of the time span validates; without any label there,
   anomalies are injected into those held-back rows), written to ``split/``; returns the
   fit keys: the training hosts plus :data:`POOLED`.
4. :func:`fit_part` — one detector of one candidate: a host's own, or the pooled fallback,
   pickled to ``models/<candidate>/<key>.pkl``. The DAG maps it over candidate × key.
5. :func:`evaluate_and_log` — one candidate: assemble its :class:`~ml.fleet.FleetModel` from
   the parts, evaluate, log an MLflow run, register a version (or find the run and version an
   earlier attempt logged for the very same model and data: a rerun adds no duplicate).
   :func:`train_and_log` runs 4 and 5 for one candidate in this process (the CLI, the bench).
6. :func:`promote_best` — the best candidate (passes the gate, then event-F1, then fewer
   false positives per day) goes to :func:`ml.tracking.promote`; the current champion is
   re-evaluated on this dataset's validation data first, so the comparison is like for like.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from ml.evaluation import gate_passed, parse_windows
from ml.fleet import training_span
from ml.training import (
    CANDIDATES,
    evaluate_candidate,
    evaluate_model,
    host_windows,
    in_windows,
    inject_validation,
    make_candidate,
    split_history,
)
from smartcloudops.domain import normalize_long
from smartcloudops.errors import InputError, ModelError
from smartcloudops.settings import Settings, get_settings

#: The last share of the dataset's time span used for validation.
VALIDATION_FRACTION = 0.3

_HISTORY = "history.parquet"
_LABELS = "labels.json"
_MANIFEST = "manifest.json"
_SPLIT = "split"
_MODELS = "models"

#: The fit key of a candidate's fleet-wide fallback detector (beside one key per host). Not
#: a valid Prometheus instance or simulator host name, so it cannot clash with a host.
POOLED = "(pooled)"


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


def _unite(*sources: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, list[list[str]]]:
    """NAB windows of several sources, per key, without repeating a window."""
    out: dict[str, list[list[str]]] = {}
    for windows in sources:
        for key, wins in windows.items():
            merged = out.setdefault(str(key), [])
            for win in wins:
                pair = [str(win[0]), str(win[1])]
                if pair not in merged:
                    merged.append(pair)
    return {key: sorted(wins) for key, wins in out.items()}


def write_labels(dataset_path: str, *, settings: Settings | None = None) -> str:
    """Write the dataset's label windows (NAB format); return their path.

    The union of the simulator's incidents (keys ``host/metric``, also written to
    ``settings.labels_file`` for the other components) and the incidents operators confirmed
    (keys ``host``: the whole host). With a real Prometheus the simulator knows nothing of the
    hosts: an existing labels file is used instead, else operator labels alone. The manifest
    records how many windows came from each source (``label_windows``).
    """
    from smartcloudops.labels import operator_windows

    settings = settings or get_settings()
    path = Path(dataset_path)
    manifest = _manifest(path)
    start, end = datetime.fromisoformat(manifest["start"]), datetime.fromisoformat(manifest["end"])
    if settings.prometheus_url:
        origin = "labels_file" if settings.labels_file.exists() else "none"
        base = json.loads(settings.labels_file.read_text()) if origin == "labels_file" else {}
    else:
        from smartcloudops.simulator import FleetSimulator

        origin = "simulator"
        sim = FleetSimulator.from_settings(settings)
        sim.write_labels(start, end, settings.labels_file)
        base = json.loads(settings.labels_file.read_text())
    operator = operator_windows(settings, start=start, end=end)
    parse_windows(operator)  # a malformed operator window fails here, naming its series
    labels = _unite(base, operator)
    target = path / _LABELS
    _write_atomic(target, json.dumps(labels, indent=1, sort_keys=True).encode())
    manifest["label_windows"] = {
        "source": origin,
        "source_windows": sum(len(v) for v in base.values()),
        "operator_windows": sum(len(v) for v in operator.values()),
    }
    _write_atomic(path / _MANIFEST, json.dumps(manifest, indent=1).encode())
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


# -- the split every candidate sees ----------------------------------------------------------
def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes() if path.exists() else b"<none>")
    return digest.hexdigest()


def _split_inputs(path: Path) -> str:
    """Fingerprint of what the split is made of (history, labels, manifest)."""
    return _sha256(path / _HISTORY, path / _LABELS, path / _MANIFEST)[:16]


def prepare_split(dataset_path: str) -> list[str]:
    """Split the dataset as every candidate sees it, write it to ``split/``; return the fit keys.

    Fit keys: the hosts of the training part, then :data:`POOLED`. When no labelled window
    of a validation host overlaps the validation period (metrics from a real Prometheus and no
    operator labels yet), anomalies are injected into the held-back validation rows
    (:func:`ml.training.inject_validation`, seeded by the dataset's interval, so a rerun makes
    the same rows); the split's manifest then counts them (``injected``).
    """
    path = Path(dataset_path)
    inputs = _split_inputs(path)
    history, windows, manifest = load_dataset(dataset_path)
    train, valid = split_history(history, VALIDATION_FRACTION)
    ts = pd.to_datetime(valid["timestamp"], utc=True)
    valid_start, valid_end = ts.min(), ts.max()
    valid_hosts = set(valid["host"].astype(str))
    labelled = any(
        start <= valid_end and end >= valid_start
        for host, wins in host_windows(windows).items()
        if host in valid_hosts
        for start, end in wins
    )
    injected = 0
    if not labelled:
        seed = int(pd.Timestamp(manifest["end"]).timestamp()) % (2**31)
        valid, extra = inject_validation(valid, seed=seed)
        windows = {**windows, **extra}
        injected = sum(len(v) for v in extra.values())
    hosts = [str(h) for h in pd.unique(train["host"].astype(str))]
    split = {
        "inputs": inputs,
        "hosts": hosts,
        "injected": injected,
        # Per candidate: a candidate may ask for its own metrics (FleetModel's ``metrics``).
        "metrics": {name: make_candidate(name).training_metrics(train) for name in CANDIDATES},
        "training_span": list(training_span(train)),
    }
    target = path / _SPLIT
    target.mkdir(exist_ok=True)
    _write_atomic(target / "train.parquet", train.to_parquet(index=False))
    _write_atomic(target / "valid.parquet", valid.to_parquet(index=False))
    _write_atomic(target / _LABELS, json.dumps(windows, indent=1, sort_keys=True).encode())
    # Last: its presence (with matching inputs) says the other three files are complete.
    _write_atomic(target / _MANIFEST, json.dumps(split, indent=1).encode())
    return [*hosts, POOLED]


def _split_manifest(dataset_path: str) -> dict[str, Any]:
    """The split's manifest, (re)making the split when missing or made from other inputs."""
    path = Path(dataset_path)
    try:
        split: dict[str, Any] = json.loads((path / _SPLIT / _MANIFEST).read_text())
    except FileNotFoundError:
        split = {}
    if split.get("inputs") != _split_inputs(path):
        prepare_split(dataset_path)
        split = json.loads((path / _SPLIT / _MANIFEST).read_text())
    return split


def validation_data(
    dataset_path: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[list[str]]], dict[str, Any]]:
    """``(train, valid, windows, manifest)`` of a dataset, split as every candidate sees it.

    See :func:`prepare_split`. ``manifest`` is the dataset's, plus ``injected`` (anomalies
    written into the validation rows), ``operator_windows`` and the split's ``hosts``,
    ``metrics`` and ``training_span``.
    """
    split = _split_manifest(dataset_path)
    path = Path(dataset_path)
    manifest = _manifest(path)
    train = pd.read_parquet(path / _SPLIT / "train.parquet")
    valid = pd.read_parquet(path / _SPLIT / "valid.parquet")
    windows = json.loads((path / _SPLIT / _LABELS).read_text())
    operator = int(manifest.get("label_windows", {}).get("operator_windows", 0))
    return train, valid, windows, {**manifest, **split, "operator_windows": operator}


# -- one detector of one candidate -----------------------------------------------------------
def part_path(dataset_path: str, candidate: str, key: str) -> Path:
    """Where :func:`fit_part` keeps candidate ``candidate``'s detector for fit key ``key``."""
    return Path(dataset_path) / _MODELS / candidate / f"{quote(key, safe='')}.pkl"


def fit_part(candidate: str, key: str, dataset_path: str) -> dict[str, Any]:
    """Fit one detector of ``candidate``: host ``key``'s own, or the fleet's (:data:`POOLED`).

    Pickled to :func:`part_path` (replaced on a rerun). Returns a small dict: ``candidate``,
    ``host``, ``path``, ``fitted`` (False: the host is skipped, the fallback serves it),
    ``rows``, ``seconds`` and ``sha256`` of the file (what :func:`evaluate_and_log` loads).
    """
    model = make_candidate(candidate)
    split = _split_manifest(dataset_path)
    if key != POOLED and key not in split["hosts"]:
        raise InputError(f"no training rows for host {key!r} in {dataset_path}")
    path = Path(dataset_path)
    filters = None if key == POOLED else [("host", "==", key)]
    rows = pd.read_parquet(path / _SPLIT / "train.parquet", filters=filters)
    windows = json.loads((path / _SPLIT / _LABELS).read_text())
    # Labelled training rows stay context but are kept out of fitting, as in train_candidate.
    known = in_windows(rows, host_windows(windows))
    metrics = split["metrics"][candidate]
    started = time.perf_counter()
    detector = (
        model.fit_pooled(rows, known, metrics) if key == POOLED else model.fit_host(rows, known, metrics)
    )
    seconds = time.perf_counter() - started
    data = pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)
    target = part_path(dataset_path, candidate, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data)
    return {
        "candidate": candidate,
        "host": key,
        "path": str(target),
        "fitted": detector is not None,
        "rows": len(rows),
        "seconds": round(seconds, 3),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _load_part(part: Mapping[str, Any]) -> Any:
    data = Path(str(part["path"])).read_bytes()
    if hashlib.sha256(data).hexdigest() != part["sha256"]:
        # Another run rewrote it since: this run's evaluation must not mix models.
        raise ModelError(f"{part['path']} changed after it was fitted; rerun its fit task")
    # Our own file, checked above against the SHA-256 its fit task recorded.
    return pickle.loads(data)  # noqa: S301  # nosec B301


def assemble_candidate(
    candidate: str, dataset_path: str, parts: Sequence[Mapping[str, Any]]
) -> tuple[Any, float, str]:
    """``(fleet_model, fit_seconds, parts_digest)`` of ``candidate`` from its :func:`fit_part` dicts.

    ``parts_digest`` names the fitted detectors' content: equal digests, equal models.
    """
    split = _split_manifest(dataset_path)
    mine = {str(p["host"]): p for p in parts if p["candidate"] == candidate}
    missing = [k for k in [*split["hosts"], POOLED] if k not in mine]
    if missing:
        raise InputError(f"candidate {candidate!r} lacks fitted parts for {', '.join(missing)}")
    detectors = {host: _load_part(mine[host]) for host in split["hosts"]}
    model = make_candidate(candidate).assemble(
        detectors,
        _load_part(mine[POOLED]),
        metrics=split["metrics"][candidate],
        training_span=(split["training_span"][0], split["training_span"][1], int(split["training_span"][2])),
    )
    seconds = sum(float(mine[k]["seconds"]) for k in [*split["hosts"], POOLED])
    digest = hashlib.sha256(candidate.encode())
    for key in [*split["hosts"], POOLED]:
        digest.update(f"{key}={mine[key]['sha256']}".encode())
    return model, seconds, digest.hexdigest()


def evaluate_and_log(
    candidate: str,
    dataset_path: str,
    parts: Sequence[Mapping[str, Any]],
    *,
    tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Assemble ``candidate`` from its fitted parts, evaluate, log, register; a small summary.

    Idempotent: when an earlier attempt already logged and registered this very model (same
    parts, same validation data), its run and version are returned instead of new ones.
    """
    from ml.tracking import find_logged, log_candidate

    settings = settings or get_settings()
    train, valid, windows, manifest = validation_data(dataset_path)
    model, fit_seconds, parts_digest = assemble_candidate(candidate, dataset_path, parts)
    result = evaluate_candidate(candidate, model, train, valid, windows, train_seconds=fit_seconds)
    # The same detectors judged on the same validation data and labels: nothing new to log.
    model_key = hashlib.sha256(f"{parts_digest}:{result.validation_key}".encode()).hexdigest()[:32]
    logged = find_logged(
        settings.resolved_tracking_uri,
        experiment=settings.mlflow_experiment,
        artifact_location=settings.mlflow_artifact_root,
        registered_model=settings.registered_model,
        model_key=model_key,
    )
    if logged is None:
        run_tags = {
            "dataset": str(dataset_path),
            "data_interval_end": str(manifest["end"]),
            "injected_anomalies": str(manifest["injected"]),
            "operator_windows": str(manifest["operator_windows"]),
            "model_key": model_key,
            **(tags or {}),
        }
        logged = log_candidate(
            result,
            tracking_uri=settings.resolved_tracking_uri,
            experiment=settings.mlflow_experiment,
            artifact_location=settings.mlflow_artifact_root,
            registered_model=settings.registered_model,
            tags=run_tags,
        )
    run_id, version = logged
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
        "model_key": model_key,
        "injected_anomalies": manifest["injected"],
        "operator_windows": manifest["operator_windows"],
        "dataset_path": str(dataset_path),
    }


def train_and_log(
    candidate: str,
    dataset_path: str,
    *,
    tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """:func:`fit_part` for every key, then :func:`evaluate_and_log`, in this process."""
    keys = [*_split_manifest(dataset_path)["hosts"], POOLED]
    parts = [fit_part(candidate, key, dataset_path) for key in keys]
    return evaluate_and_log(candidate, dataset_path, parts, tags=tags, settings=settings)


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
