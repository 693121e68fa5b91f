"""End to end with a real MLflow registry (SQLite in tmp_path): register FleetModels the way
training does (the project's pyfunc wrapper), serve the ``champion`` alias through
``ml.tracking.load_champion``, follow the alias when it moves, and survive a bad version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from serving_helpers import steady_history
from starlette.testclient import TestClient

from serving.app import create_app
from serving.model import ChampionSource, ModelProvider, UriSource
from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.settings import Settings

tracking = pytest.importorskip("ml.tracking", reason="ml.tracking (ML helper) not present")
training = pytest.importorskip("ml.training", reason="ml.training (ML helper) not present")
mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc")

NAME = "serving-e2e-detector"


def history(seed: int) -> pd.DataFrame:
    return steady_history(240, seed=seed, noise=0.02, hosts=("web-1",))


def register(uri: str, artifacts: Path, python_model: Any, *, champion: bool) -> tuple[str, str]:
    """Log ``python_model`` as a registered pyfunc version; returns (version, run_id)."""
    import mlflow

    experiment_id = tracking.ensure_experiment(uri, "serving-e2e", artifacts)
    client = tracking._client(uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=python_model, registered_model_name=NAME, pip_requirements=[]
        )
    version = str(info.registered_model_version)
    if champion:
        client.set_registered_model_alias(NAME, "champion", version)
    return version, run.info.run_id


class NotAFleet(mlflow_pyfunc.PythonModel):  # type: ignore[misc]
    """A valid pyfunc that is not the FleetModel wrapper: the service must refuse it."""

    # No annotations on purpose: MLflow 3 reads predict's type hints as a schema and warns.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


def fleet_pyfunc(seed: int) -> Any:
    from ml._pyfunc import FleetPyfunc

    return FleetPyfunc(training.make_candidate("robust_baseline").fit(history(seed)))


def score(client: TestClient) -> dict[str, Any]:
    body = {"host": "web-1", "timestamp": "2024-05-01T05:00:00Z", "metrics": {"cpu": 95.0, "memory": 50.0}}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["results"][0])


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_champion_is_served_followed_and_a_bad_version_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "artifacts"
    v1, run1 = register(uri, artifacts, fleet_pyfunc(1), champion=True)

    settings = Settings(home=tmp_path, mlflow_tracking_uri=uri, registered_model=NAME, model_poll_seconds=0.2)
    app = create_app(settings)  # the default provider: the registry's champion alias
    provider: ModelProvider = app.state.provider
    assert isinstance(provider.source, ChampionSource)
    with TestClient(app) as client:
        assert provider.wait_ready(30), provider.status().last_error
        ready = client.get("/readyz").json()
        assert ready["ready"] is True and ready["model_version"] == v1
        first = score(client)
        assert first["model_version"] == v1
        assert set(first["contributions"]) <= set(CANONICAL_METRICS)
        assert client.get("/v1/model").json()["run_id"] == run1

        # Training promotes a new champion: the poller notices and swaps.
        v2, _ = register(uri, artifacts, fleet_pyfunc(2), champion=True)
        wait_for(lambda: provider.status().model_version == v2)
        assert score(client)["model_version"] == v2

        # A broken champion (not a FleetModel) is refused; v2 keeps serving and says why.
        v3, _ = register(uri, artifacts, NotAFleet(), champion=True)
        wait_for(lambda: provider.status().last_error is not None)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == v2
        assert "does not hold a FleetModel" in ready.json()["last_error"]
        assert score(client)["model_version"] == v2
        assert "smartcloudops_scoring_model_load_error{" in client.get("/metrics").text

    # --model-uri pins one version (and runs:/ URIs work too), whatever the alias says.
    pinned = ModelProvider.from_settings(settings, model_uri=f"models:/{NAME}/{v1}")
    assert isinstance(pinned.source, UriSource)
    assert pinned.refresh() and pinned.status().model_version == v1
    by_run = ModelProvider.from_settings(settings, model_uri=f"runs:/{run1}/model")
    assert by_run.refresh(), by_run.status().last_error
    assert by_run.status().model_version == f"runs:/{run1}/model" and by_run.status().run_id == run1
    missing = ModelProvider.from_settings(settings, model_uri=f"models:/{NAME}/99")
    assert not missing.refresh() and "models:/serving-e2e-detector/99" in (missing.status().last_error or "")
    assert v3 == "3"
