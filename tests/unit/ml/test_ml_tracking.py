"""MLflow tracking and registry against a SQLite store in tmp_path (no server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from ml import tracking
from ml.training import CandidateResult, split_history, train_candidate
from smartcloudops.errors import ModelError

MODEL = "smartcloudops-anomaly-detector"


@pytest.fixture(scope="module")
def candidate(small_fleet) -> CandidateResult:  # type: ignore[no-untyped-def]
    history, labels = small_fleet
    train, valid = split_history(history, 0.4)
    return train_candidate("robust_baseline", train, valid, labels)


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    return {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": str(tmp_path / "artifacts")}


def log(result: CandidateResult, store: dict[str, str]) -> tuple[str, str]:
    return tracking.log_candidate(
        result,
        tracking_uri=store["tracking_uri"],
        experiment="smartcloudops-anomaly",
        artifact_location=store["artifacts"],
        registered_model=MODEL,
        tags={"trigger": "test"},
    )


def promote(
    result: CandidateResult, version: str, store: dict[str, str], gate: float
) -> tracking.PromotionDecision:
    return tracking.promote(
        tracking_uri=store["tracking_uri"],
        registered_model=MODEL,
        version=version,
        event_f1=result.report.event_f1,
        labelled_windows=result.report.windows,
        gate=gate,
        validation_key=result.validation_key,
    )


def test_log_promote_load_and_guard_the_champion(candidate: CandidateResult, store: dict[str, str]) -> None:
    from mlflow import MlflowClient

    assert candidate.report.windows > 0
    # The steps compare event-F1s: start below 1.0 so that a better candidate can exist.
    base = dataclasses.replace(
        candidate, report=dataclasses.replace(candidate.report, event_f1=0.8 * candidate.report.event_f1)
    )
    uri = store["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # 1. First candidate: logged with params, metrics, report and plots; becomes champion.
    run_id, v1 = log(base, store)
    run = client.get_run(run_id)
    assert {"event_f1", "point_f1", "fc1", "fp_per_day", "train_seconds"} <= set(run.data.metrics)
    assert run.data.metrics["event_f1"] == pytest.approx(base.report.event_f1)
    assert run.data.params["detector__n_bins"] == "24"
    assert run.data.tags["trigger"] == "test"
    artifacts = {a.path for a in client.list_artifacts(run_id, "validation")}
    assert "validation/report.json" in artifacts
    plots = {a.path for a in client.list_artifacts(run_id, "validation/plots")}
    assert {f"validation/plots/{h}.png" for h in ("web-1", "web-2", "db-1")} <= plots
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("file://")

    first = promote(base, v1, store, gate=0.0)
    assert first.promoted and "no champion yet" in first.reason
    loaded = tracking.load_champion(uri, MODEL)
    assert loaded.version == v1 and loaded.run_id == run_id
    assert loaded.event_f1 == pytest.approx(base.report.event_f1)
    valid = base.validation[["timestamp", "host", *loaded.model.metrics]]
    scores = loaded.model.score(valid, stateful=False)["score"].to_numpy()
    assert len(scores) == len(valid)
    # Same model as trained (validation was scored with training context, so compare late rows).
    assert scores[-100:] == pytest.approx(base.validation["score"].to_numpy()[-100:], abs=1e-9)

    # 2. A candidate failing the gate becomes challenger, never champion; the run says why.
    run2, v2 = log(base, store)
    failed = promote(base, v2, store, gate=1.01)
    assert not failed.promoted and "below the gate" in failed.reason
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v1
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == v2
    assert client.get_run(run2).data.tags["promotion"] == "kept"
    assert "below the gate" in client.get_run(run2).data.tags["promotion_reason"]

    # 3. Passing the gate but only equalling the champion on the same data: kept.
    _, v3 = log(base, store)
    tie = promote(base, v3, store, gate=0.0)
    assert not tie.promoted and "does not beat" in tie.reason
    assert tie.champion_event_f1 == pytest.approx(base.report.event_f1)

    # 4. Better on the same validation data: promoted.
    better_report = dataclasses.replace(base.report, event_f1=min(1.0, base.report.event_f1 + 0.1))
    better = dataclasses.replace(base, report=better_report)
    _, v4 = log(better, store)
    won = promote(better, v4, store, gate=0.0)
    assert won.promoted and won.previous_champion == v1
    assert tracking.load_champion(uri, MODEL).version == v4

    # 5. Different validation data and no re-evaluation of the champion: kept, with a reason.
    other = dataclasses.replace(better, validation_key="someotherdata")
    _, v5 = log(other, store)
    unknown = promote(other, v5, store, gate=0.0)
    assert not unknown.promoted and "different data" in unknown.reason


def test_pyfunc_serves_the_signature(candidate: CandidateResult, store: dict[str, str]) -> None:
    import mlflow.pyfunc

    _, version = log(candidate, store)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    names = model.metadata.get_input_schema().input_names()
    assert names[:2] == ["timestamp", "host"]
    rows = candidate.validation[["timestamp", "host", *candidate.model.metrics]].head(3).copy()
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True).dt.tz_localize(None)
    out = model.predict(rows)
    assert list(out.columns) == ["score", "anomaly", "severity", "contributions"]
    assert len(out) == 3


def test_load_champion_without_one_is_a_clear_model_error(store: dict[str, str]) -> None:
    uri = store["tracking_uri"]
    with pytest.raises(ModelError, match="no MLflow store"):
        tracking.load_champion(uri, MODEL)
    assert not Path(uri.removeprefix("sqlite:///")).exists()  # loading created nothing
    tracking.ensure_experiment(uri, "smartcloudops-anomaly", store["artifacts"])
    with pytest.raises(ModelError, match="no champion model registered"):
        tracking.load_champion(uri, MODEL)
