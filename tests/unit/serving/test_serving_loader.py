"""The service loads models through a short-lived loader process (serving.loader) and asks
the registry cheaply: a real MLflow registry (SQLite in tmp_path, and `mlflow server` over it
for the REST path), real child processes."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import VENV_BIN, free_port, stop_process, wait_until
from serving_helpers import START, steady_history

from serving import model as serving_model
from serving.fast import PlanScorer
from serving.model import ChampionSource, ModelProvider, make_scorer
from serving.schema import Batch
from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.errors import ModelError

tracking = pytest.importorskip("ml.tracking", reason="ml.tracking (ML helper) not present")
training = pytest.importorskip("ml.training", reason="ml.training (ML helper) not present")
mlflow = pytest.importorskip("mlflow")

NAME = "serving-loader-detector"
ROOT = Path(__file__).resolve().parents[3]


def history(seed: int) -> pd.DataFrame:
    return steady_history(240, seed=seed, noise=0.03)


def forest_fleet(seed: int) -> Any:
    fleet = training.make_candidate("isolation_forest")
    fleet.detector.set_params(n_estimators=20)
    return fleet.fit(history(seed))


def register(uri: str, artifacts: Path, fleet: Any) -> str:
    from ml._pyfunc import FleetPyfunc

    experiment_id = tracking.ensure_experiment(uri, "serving-loader", artifacts)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=FleetPyfunc(fleet), registered_model_name=NAME, pip_requirements=[]
        )
    version = str(info.registered_model_version)
    tracking._client(uri).set_registered_model_alias(NAME, "champion", version)
    return version


def rows(minutes: list[int], cpu: list[float]) -> pd.DataFrame:
    ts = [START + pd.Timedelta(minutes=240 + m) for m in minutes]
    data: dict[str, Any] = {"timestamp": ts, "host": ["web-1"] * len(ts)}
    for metric in CANONICAL_METRICS:
        data[metric] = [{"network_in": 1e5, "network_out": 1e5}.get(metric, 40.0)] * len(ts)
    data["cpu"] = cpu
    return pd.DataFrame(data)


def as_batch(frame: pd.DataFrame) -> Batch:
    return Batch(
        hosts=frame["host"].tolist(),
        timestamps=[t.to_pydatetime() for t in frame["timestamp"]],
        values=frame[list(CANONICAL_METRICS)].to_numpy(dtype=np.float64),
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    fleet = forest_fleet(1)
    version = register(uri, home / "artifacts", fleet)
    return {"uri": uri, "home": home, "fleet": fleet, "version": version}


def test_the_loader_process_hands_over_a_compiled_plan_equal_to_the_fleet(registry: dict[str, Any]) -> None:
    source = ChampionSource(registry["uri"], NAME)
    assert source.resolve() == registry["version"]  # read from SQLite, no MLflow here
    loaded = source.load()
    assert type(loaded.model).__name__ == "FleetPlan" and loaded.version == registry["version"]
    assert loaded.run_id
    scorer = make_scorer(loaded, source.describe())
    assert isinstance(scorer, PlanScorer)
    reference = copy.deepcopy(registry["fleet"])
    for part in (rows([1], [30.0]), rows([2], [95.0]), rows([5, 3, 4], [31.0, 97.0, 30.0])):
        ours = scorer.score(as_batch(part))
        theirs = reference.score(part)
        np.testing.assert_allclose(ours.scores, theirs["score"].to_numpy(dtype=float), rtol=0, atol=1e-9)
        assert ours.anomaly.tolist() == theirs["anomaly"].astype(bool).tolist()


def test_the_service_process_never_imports_mlflow_pandas_or_scikit_learn(registry: dict[str, Any]) -> None:
    code = f"""
import json, sys
from serving.app import create_app
from serving.model import ModelProvider, ChampionSource
from smartcloudops.settings import Settings
provider = ModelProvider(ChampionSource({registry["uri"]!r}, {NAME!r}))
assert provider.refresh(), provider.status().last_error
app = create_app(Settings(home={str(registry["home"])!r}), model_provider=provider)
heavy = [m for m in ("mlflow", "pandas", "sklearn", "scipy", "pyarrow") if m in sys.modules]
print(json.dumps({{"heavy": heavy, "version": provider.status().model_version}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "version": registry["version"]}


def test_a_loader_that_fails_keeps_the_old_model_serving(registry: dict[str, Any], tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    v1 = register(uri, tmp_path / "artifacts", forest_fleet(2))
    source = ChampionSource(uri, NAME)
    provider = ModelProvider(source, poll_seconds=3600)
    assert provider.refresh() and provider.status().model_version == v1
    v2 = register(uri, tmp_path / "artifacts", forest_fleet(3))
    source.loader_timeout = 0.01  # the loader process cannot finish: killed, reported
    assert not provider.refresh()
    status = provider.status()
    assert status.model_version == v1 and "did not finish" in (status.last_error or "")
    assert provider.current() is not None and provider.current().score(as_batch(rows([1], [30.0])))  # type: ignore[union-attr]
    source.loader_timeout = serving_model.LOADER_TIMEOUT_SECONDS
    assert provider.refresh(force=True) and provider.status().model_version == v2


def test_sqlite_is_queried_only_when_the_database_changed(
    registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = serving_model._sqlite_alias_versions

    def counted(*args: Any) -> list[int]:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(serving_model, "_sqlite_alias_versions", counted)
    source = ChampionSource(registry["uri"], NAME)
    assert [source.resolve() for _ in range(5)] == [registry["version"]] * 5
    assert len(calls) == 1
    missing = ChampionSource(registry["uri"], "no-such-model")
    for _ in range(2):
        with pytest.raises(ModelError, match="no 'champion' alias for model 'no-such-model'"):
            missing.resolve()
    assert len(calls) == 2


def test_an_http_registry_is_asked_through_the_rest_api(registry: dict[str, Any], tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("wb")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", registry["uri"], "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        import httpx

        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 120, "mlflow server")
        started = time.perf_counter()
        assert ChampionSource(url, NAME).resolve() == registry["version"]
        assert time.perf_counter() - started < 5
        with pytest.raises(ModelError, match="no 'champion' alias for model 'no-such-model'"):
            ChampionSource(url, "no-such-model").resolve()
    finally:
        # `mlflow server` runs its workers as children: stop the session it leads, by its id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        stop_process(proc)
        log.close()
