"""MLflow: log candidates, register them, move aliases, load the champion.

Every function takes the tracking URI and names explicitly (the DAG passes them from
settings); nothing here reads settings or environment. MLflow is imported inside the
functions because importing it takes seconds.

Registry conventions (ARCHITECTURE.md): registered model ``smartcloudops-anomaly-detector``,
aliases ``challenger`` (the latest candidate) and ``champion`` (what serves). Each model
version carries tags ``event_f1``, ``validation_key``, ``candidate`` and ``gate_passed``, so a
later promotion can compare on the *same* validation data without re-reading runs.

Errors from MLflow are translated to :class:`~smartcloudops.errors.ModelError` at this
boundary.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from ml.evaluation import EvaluationReport, gate_passed, windows_to_json
from ml.fleet import FleetModel
from ml.training import CandidateResult
from smartcloudops.errors import ModelError

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class LoadedModel:
    model: FleetModel
    version: str
    run_id: str
    event_f1: float | None


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    version: str
    reason: str
    event_f1: float
    gate: float
    previous_champion: str | None = None
    champion_event_f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers ---------------------------------------------------------------------------------
def _sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def _client(tracking_uri: str, *, create: bool = True) -> Any:
    import mlflow
    from mlflow import MlflowClient

    db = _sqlite_path(tracking_uri)
    if db is not None:
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)  # SQLite will not create the directory
        elif not db.exists():
            # Reading must not conjure an empty store (and a migration) out of a typo.
            raise ModelError(f"no MLflow store at {tracking_uri}; train a model first (smartcloudops train)")

    # The fluent API (start_run, log_model) reads the process-wide URI: set it per call so
    # one process can talk to several stores (tests) without leaking state between them.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise ModelError(f"{what}: {exc.message}") from exc


def _artifact_uri(location: str | Path) -> str:
    text = str(location)
    if urlparse(text).scheme and not Path(text).drive:
        return text
    return Path(text).expanduser().resolve().as_uri()


def ensure_experiment(tracking_uri: str, experiment: str, artifact_location: str | Path) -> str:
    """The experiment's id, creating it with ``artifact_location`` when missing."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    with _mlflow_errors(f"cannot open experiment {experiment!r} at {tracking_uri}"):
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(
                client.create_experiment(experiment, artifact_location=_artifact_uri(artifact_location))
            )
        except MlflowException:
            # Another process created it between our two calls.
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return str(found.experiment_id)


def _flat_params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else repr(value)
        out[key] = text[:500]
    return out


def report_metrics(report: EvaluationReport, train_seconds: float) -> dict[str, float]:
    metrics = {
        "event_f1": report.event_f1,
        "event_precision": report.event_precision,
        "event_recall": report.event_recall,
        "point_f1": report.point_f1,
        "fc1": report.fc1,
        "fp_per_day": report.fp_per_day,
        "train_seconds": train_seconds,
        "tp": float(report.tp),
        "fn": float(report.fn),
        "fp": float(report.fp),
    }
    if report.delay_seconds is not None:
        metrics["delay"] = report.delay_seconds
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def model_signature(metrics: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("datetime", "timestamp"),
            ColSpec("string", "host"),
            *[ColSpec("double", m, required=False) for m in metrics],
        ]
    )
    outputs = Schema(
        [
            ColSpec("double", "score"),
            ColSpec("boolean", "anomaly"),
            ColSpec("string", "severity", required=False),
            ColSpec("string", "contributions"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements() -> list[str]:
    # Explicit pins: MLflow would otherwise infer them by loading the model in a subprocess.
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("scikit-learn", "pandas", "numpy", "cloudpickle", "pydantic-settings", "mlflow"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return reqs


def _input_example(result: CandidateResult) -> Any:
    columns = ["timestamp", "host", *result.model.metrics]
    if result.validation.empty or not set(columns) <= set(result.validation.columns):
        return None
    example = result.validation.loc[:, columns].head(2).reset_index(drop=True)
    # MLflow's datetime columns are timezone-naive: the contract is naive = UTC.
    example["timestamp"] = pd.to_datetime(example["timestamp"], utc=True).dt.tz_localize(None)
    return example


# -- logging ---------------------------------------------------------------------------------
def log_candidate(
    result: CandidateResult,
    *,
    tracking_uri: str,
    experiment: str,
    artifact_location: str | Path,
    registered_model: str,
    tags: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Log one trained candidate as an MLflow run and register its model.

    Logs params (the detector's ``get_params``), metrics (``event_f1, point_f1, fc1,
    fp_per_day, delay, train_seconds`` and counts), the validation report JSON, one PNG per
    validation host, and the model as a pyfunc with a signature. Returns
    ``(run_id, model_version)``.
    """
    import mlflow

    from ml._pyfunc import FleetPyfunc
    from ml.plots import plot_validation

    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    client = _client(tracking_uri)
    run_tags = {
        "candidate": result.name,
        "family": result.model.family,
        "validation_key": result.validation_key,
        **(tags or {}),
    }
    with _mlflow_errors(f"cannot log candidate {result.name!r} to {tracking_uri}"):
        with mlflow.start_run(experiment_id=experiment_id, run_name=result.name, tags=run_tags) as run:
            run_id = run.info.run_id
            mlflow.log_params(_flat_params(result.params))
            mlflow.log_metrics(report_metrics(result.report, result.train_seconds))
            report = result.report.to_dict()
            report["candidate"] = result.name
            report["validation_key"] = result.validation_key
            report["windows"] = windows_to_json(result.windows)
            report["model"] = result.model.version_info
            mlflow.log_dict(report, "validation/report.json")
            if not result.validation.empty:
                figures = plot_validation(result.validation, result.model.metrics, result.windows)
                for host, fig in figures.items():
                    mlflow.log_figure(fig, f"validation/plots/{host}.png")
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=FleetPyfunc(result.model),
                signature=model_signature(result.model.metrics),
                pip_requirements=_requirements(),
                input_example=_input_example(result),
                registered_model_name=registered_model,
            )
        version = str(info.registered_model_version)
        for key, value in {
            "candidate": result.name,
            "event_f1": repr(float(result.report.event_f1)),
            "validation_key": result.validation_key,
            "run_id": run_id,
        }.items():
            client.set_model_version_tag(registered_model, version, key, value)
    return run_id, version


# -- promotion -------------------------------------------------------------------------------
def _version_f1(version: Any) -> float | None:
    try:
        return float(version.tags["event_f1"])
    except (KeyError, TypeError, ValueError):
        return None


def promote(
    *,
    tracking_uri: str,
    registered_model: str,
    version: str,
    event_f1: float,
    labelled_windows: int,
    gate: float,
    validation_key: str,
    champion_event_f1: float | None = None,
) -> PromotionDecision:
    """Alias ``version`` as challenger; move ``champion`` only if it earned it.

    ``event_f1`` and ``labelled_windows`` are the candidate's validation figures
    (``report.event_f1``, ``report.windows``). The champion moves when the candidate passes
    the event-F1 gate AND beats the current
    champion's event-F1 *on the same validation data*: either the champion version's
    recorded ``event_f1`` when its ``validation_key`` tag equals ``validation_key``, or
    ``champion_event_f1`` when the caller re-evaluated the champion on this data
    (:func:`ml.training.evaluate_model`). Without a comparable figure the champion stays.
    The decision and its reason are tagged on the candidate's run and model version.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    f1 = float(event_f1)
    passed = gate_passed(f1, labelled_windows, gate)
    with _mlflow_errors(f"cannot promote {registered_model} v{version}"):
        candidate = client.get_model_version(registered_model, version)
        client.set_registered_model_alias(registered_model, CHALLENGER, version)
        client.set_model_version_tag(registered_model, version, "gate_passed", str(passed))
        try:
            champion = client.get_model_version_by_alias(registered_model, CHAMPION)
        except MlflowException:
            champion = None

        previous = str(champion.version) if champion is not None else None
        baseline = champion_event_f1
        if (
            baseline is None
            and champion is not None
            and champion.tags.get("validation_key") == validation_key
        ):
            baseline = _version_f1(champion)

        promoted = False
        if not passed:
            if labelled_windows == 0:
                reason = "kept: the validation data has no labelled windows, so the gate cannot be checked"
            else:
                reason = f"kept: event-F1 {f1:.3f} is below the gate {gate:.2f}"
        elif champion is None:
            promoted, reason = (
                True,
                f"promoted: event-F1 {f1:.3f} passes the gate {gate:.2f}; no champion yet",
            )
        elif previous == version:
            promoted, reason = True, f"v{version} is already the champion"
        elif baseline is None:
            reason = (
                f"kept: champion v{previous} was validated on different data and no re-evaluation "
                f"on this validation data was given"
            )
        elif f1 > baseline:
            promoted = True
            reason = (
                f"promoted: event-F1 {f1:.3f} passes the gate {gate:.2f} and beats champion "
                f"v{previous} ({baseline:.3f}) on the same validation data"
            )
        else:
            reason = (
                f"kept: event-F1 {f1:.3f} passes the gate {gate:.2f} but does not beat champion "
                f"v{previous} ({baseline:.3f}) on the same validation data"
            )
        if promoted and previous != version:
            client.set_registered_model_alias(registered_model, CHAMPION, version)
        decision = "promoted" if promoted else "kept"
        client.set_model_version_tag(registered_model, version, "promotion", decision)
        client.set_model_version_tag(registered_model, version, "promotion_reason", reason)
        if candidate.run_id:
            client.set_tag(candidate.run_id, "promotion", decision)
            client.set_tag(candidate.run_id, "promotion_reason", reason)
    return PromotionDecision(
        promoted=promoted,
        version=str(version),
        reason=reason,
        event_f1=f1,
        gate=gate,
        previous_champion=previous,
        champion_event_f1=baseline,
    )


# -- loading ---------------------------------------------------------------------------------
def load_version(tracking_uri: str, registered_model: str, alias: str = CHAMPION) -> LoadedModel:
    """Load the model version behind ``alias``; :class:`ModelError` when there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri, create=False)
    try:
        mv = client.get_model_version_by_alias(registered_model, alias)
    except MlflowException as exc:
        raise ModelError(
            f"no {alias} model registered as {registered_model!r} at {tracking_uri}; "
            f"run the train_validate_deploy pipeline (smartcloudops train) first"
        ) from exc
    with _mlflow_errors(f"cannot load {registered_model} v{mv.version}"):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_model}/{mv.version}")
    wrapped = pyfunc.unwrap_python_model()
    fleet = getattr(wrapped, "fleet", None)
    if not isinstance(fleet, FleetModel):
        raise ModelError(f"{registered_model} v{mv.version} does not hold a FleetModel")
    return LoadedModel(
        model=fleet, version=str(mv.version), run_id=str(mv.run_id or ""), event_f1=_version_f1(mv)
    )


def load_champion(tracking_uri: str, registered_model: str) -> LoadedModel:
    """The model aliased ``champion``; :class:`ModelError` with a clear message if none."""
    return load_version(tracking_uri, registered_model, CHAMPION)


def save_report(result: CandidateResult, directory: str | Path) -> Path:
    """Write the candidate's validation report JSON to ``directory`` (handy outside MLflow)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{result.name}-report.json"
    with tempfile.NamedTemporaryFile("w", dir=target, delete=False, suffix=".tmp") as fh:
        json.dump(result.report.to_dict(), fh, indent=2, default=str)
    Path(fh.name).replace(path)
    return path


def find_logged(
    tracking_uri: str,
    *,
    experiment: str,
    artifact_location: str | Path,
    registered_model: str,
    model_key: str,
) -> tuple[str, str] | None:
    """``(run_id, version)`` an earlier attempt logged *and fully registered* for ``model_key``
    (the run tag that names the detectors and the validation data they were judged on).

    A rerun of a training task finds its own earlier result here instead of logging a second
    run and version of the same model. A run whose registration did not finish (no version
    tagged with its ``run_id``) does not count: that attempt logs again.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # Creates the experiment when missing, as logging would a moment later.
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.model_key = '{model_key}' and attributes.status = 'FINISHED'",
            max_results=10,
        )
        for run in runs:
            versions = client.search_model_versions(
                f"name = '{registered_model}' and run_id = '{run.info.run_id}'"
            )
            for version in versions:
                if version.tags.get("run_id") == run.info.run_id:
                    return run.info.run_id, str(version.version)
    except MlflowException as exc:
        raise ModelError(f"cannot search the runs at {tracking_uri}: {exc.message}") from exc
    return None
