"""The service around a real ml.fleet.FleetModel (fit here on a little synthetic history)."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import pytest
from serving_helpers import START, steady_history
from starlette.testclient import TestClient

from serving.app import create_app
from serving.fast import ArrayFleetScorer
from serving.model import ModelProvider
from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.settings import Settings

fleet = pytest.importorskip("ml.fleet", reason="ml.fleet (ML helper) not present")
training = pytest.importorskip("ml.training", reason="ml.training (ML helper) not present")

ROWS = 300


def history() -> pd.DataFrame:
    return steady_history(ROWS, seed=3, noise=0.02)


@pytest.fixture(scope="module")
def fitted() -> Any:
    return training.make_candidate("robust_baseline").fit(history())


def row(minute: int, cpu: float, host: str = "web-1") -> dict[str, Any]:
    ts = START + pd.Timedelta(minutes=ROWS + minute)
    metrics = {"cpu": cpu, "memory": 50.0, "disk": 40.0, "load": 1.0, "network_in": 1e5, "network_out": 1e5}
    return {"host": host, "timestamp": ts.isoformat(), "metrics": metrics}


def test_real_fleet_model_scores_through_the_api(tmp_path: Any, fitted: Any) -> None:
    model = copy.deepcopy(fitted)
    provider = ModelProvider.static(model, version="1")
    scorer = provider.current()
    # A real FleetModel gets the numpy fast path; its history lives in the scorer.
    assert isinstance(scorer, ArrayFleetScorer)
    # The load-time probe used stateful=False: no history was recorded for it.
    assert "__probe__" not in scorer._state and "__probe__" not in model._state

    app = create_app(Settings(home=tmp_path), model_provider=provider)
    with TestClient(app) as client:
        # An hour of ordinary rows first: the model's per-host history (features need context).
        warmup = client.post("/v1/score", json={"instances": [row(i, 30.0) for i in range(1, 61)]})
        assert warmup.status_code == 200
        calm = client.post("/v1/score", json=row(61, 30.0)).json()["results"][0]
        spike = client.post("/v1/score", json=row(62, 99.0)).json()["results"][0]
        unseen = client.post("/v1/score", json=row(1, 30.0, host="new-host"))
    assert calm["score"] < spike["score"]
    assert set(spike["contributions"]) == set(CANONICAL_METRICS)
    assert max(spike["contributions"], key=spike["contributions"].get) == "cpu"
    assert isinstance(spike["anomaly"], bool)
    assert spike["severity"] in (None, "low", "medium", "high", "critical")
    assert unseen.status_code == 200  # the pooled fallback serves hosts never seen in training


def test_rows_one_at_a_time_score_like_one_batch(tmp_path: Any, fitted: Any) -> None:
    rows = [row(i, 30.0 + (60.0 if 10 <= i < 14 else 0.0)) for i in range(1, 21)]
    one_by_one = create_app(
        Settings(home=tmp_path), model_provider=ModelProvider.static(copy.deepcopy(fitted))
    )
    batched = create_app(Settings(home=tmp_path), model_provider=ModelProvider.static(copy.deepcopy(fitted)))
    with TestClient(one_by_one) as a, TestClient(batched) as b:
        single = [a.post("/v1/score", json=r).json()["results"][0] for r in rows]
        batch = b.post("/v1/score", json={"instances": rows}).json()["results"]
    assert [s["score"] for s in single] == pytest.approx([r["score"] for r in batch], rel=1e-9, abs=1e-12)
    assert [s["anomaly"] for s in single] == [r["anomaly"] for r in batch]
