"""FleetModel: per-host detectors, fallback, live scoring state, pickling."""

from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from ml.fleet import SCORE_COLUMNS, FleetModel, training_span
from ml.training import CANDIDATES, make_candidate, split_history
from smartcloudops.errors import InputError, ModelError


@pytest.fixture(scope="module")
def split(small_fleet: tuple[pd.DataFrame, dict[str, list[list[str]]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    history, _ = small_fleet
    return split_history(history, 0.25)


@pytest.fixture(scope="module", params=["isolation_forest", "robust_baseline"])
def fitted(request: pytest.FixtureRequest, split: tuple[pd.DataFrame, pd.DataFrame]) -> FleetModel:
    train, _ = split
    return make_candidate(request.param).fit(train)


def test_fit_builds_one_detector_per_host_and_a_fallback(fitted: FleetModel) -> None:
    assert sorted(fitted.hosts) == ["db-1", "web-1", "web-2"]
    assert fitted.metrics == ["cpu", "memory", "disk", "load", "network_in", "network_out"]
    assert fitted.fallback_ is not fitted.detectors_["web-1"]
    info = fitted.version_info
    assert info["name"] == fitted.name and info["family"] == fitted.family
    assert info["versions"]["scikit-learn"]


def test_score_output_contract_and_row_order(
    fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, valid = split
    shuffled = valid.sample(frac=1.0, random_state=1)
    out = fitted.score(shuffled, stateful=False)
    assert list(out.columns) == list(SCORE_COLUMNS)
    assert out.index.equals(shuffled.index)
    assert out["score"].dtype == float and out["anomaly"].dtype == bool
    ordered = fitted.score(valid, stateful=False)
    np.testing.assert_allclose(out["score"].to_numpy(), ordered.loc[shuffled.index, "score"].to_numpy())
    flagged = out[out["anomaly"]]
    assert flagged["severity"].isin(["low", "medium", "high", "critical"]).all()
    assert out.loc[~out["anomaly"], "severity"].isna().all()
    assert set(out["contributions"].iloc[0]) == set(fitted.metrics)


def test_unknown_host_uses_the_fallback(fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, valid = split
    stranger = valid[valid["host"] == "web-1"].head(50).assign(host="brand-new-1")
    out = fitted.score(stranger, stateful=False)
    assert len(out) == 50 and np.isfinite(out["score"]).all()
    assert fitted.detector_for("brand-new-1") is fitted.fallback_


def test_one_row_at_a_time_equals_batch(fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = split
    rows = valid.sort_values(["timestamp", "host"]).head(60)
    fitted.reset_state()
    fitted.prime(train)
    batch = fitted.score(rows)
    fitted.reset_state()
    fitted.prime(train)
    single = pd.concat([fitted.score(rows.iloc[[i]]) for i in range(len(rows))])
    fitted.reset_state()
    np.testing.assert_allclose(single["score"].to_numpy(), batch["score"].to_numpy(), atol=1e-9)
    assert single["anomaly"].tolist() == batch["anomaly"].tolist()


def test_single_row_without_history_is_neutral_not_an_error(
    fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, valid = split
    fitted.reset_state()
    out = fitted.score(valid.head(1))
    fitted.reset_state()
    assert len(out) == 1 and np.isfinite(out["score"].iloc[0])


def test_pickle_round_trip_scores_identically(
    fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = split
    fitted.prime(train)  # live state must not travel with the pickle
    clone = cloudpickle.loads(cloudpickle.dumps(fitted))
    fitted.reset_state()
    assert clone._state == {}
    a = fitted.score(valid, stateful=False)
    b = clone.score(valid, stateful=False)
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy())
    clone.score(valid.head(3))  # the lock was re-created


def test_bad_scoring_input(fitted: FleetModel) -> None:
    with pytest.raises(InputError, match="host"):
        fitted.score(pd.DataFrame({"timestamp": ["2024-03-05"], "cpu": [1.0]}))
    with pytest.raises(InputError, match="non-numeric"):
        fitted.score(pd.DataFrame({"timestamp": ["2024-03-05"], "host": ["web-1"], "cpu": ["hot"]}))
    with pytest.raises(InputError, match="DataFrame"):
        fitted.score([1, 2, 3])  # type: ignore[arg-type]
    empty = fitted.score(pd.DataFrame(columns=["timestamp", "host", "cpu"]))
    assert empty.empty and list(empty.columns) == list(SCORE_COLUMNS)


def test_unfitted_fleet_model_raises() -> None:
    with pytest.raises(ModelError):
        make_candidate("robust_baseline").score(pd.DataFrame({"timestamp": [], "host": []}))


def test_host_with_too_little_data_is_served_by_the_fallback(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = split
    tiny = pd.concat([train, train[train["host"] == "web-1"].head(5).assign(host="tiny-1")])
    model = make_candidate("robust_baseline").fit(tiny)
    assert "tiny-1" in model.skipped_hosts_
    assert model.detector_for("tiny-1") is model.fallback_


def test_fleet_get_params_are_flat(fitted: FleetModel) -> None:
    params = fitted.get_params()
    assert params["family"] == fitted.family
    assert any(k.startswith("detector__") for k in params)
    assert "alarm__cooldown" in params


def test_empty_training_data_is_an_input_error() -> None:
    with pytest.raises(InputError, match="empty"):
        FleetModel(make_candidate("robust_baseline").detector).fit(
            pd.DataFrame(columns=["timestamp", "host", "cpu"])
        )


def test_priming_by_scoring_continues_exactly_like_one_batch(
    fitted: FleetModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = split
    whole = pd.concat([train, valid], ignore_index=True)
    fitted.reset_state()
    # One batch replaying the whole history, as prime(score=True) replays the training rows.
    batch = fitted._score_frame(whole, stateful=True, replay=True).iloc[len(train) :]
    fitted.reset_state()
    fitted.prime(train, score=True)  # history scored: buffers *and* alarm state are warm
    assert any(state.alarm.hour_max or state.alarm.recent for state in fitted._state.values())
    # The score likelihood's history (robust baseline) is the replayed rows alone: training
    # scores count once. Policies without it keep no history.
    uses_likelihood = fitted.policy.likelihood_z is not None
    assert uses_likelihood == (fitted.name == "robust_baseline")
    for host, state in fitted._state.items():
        replayed = int((train["host"] == host).sum()) if uses_likelihood else 0
        assert state.alarm.score_moments[0] == replayed
    live = fitted.score(valid)
    fitted.reset_state()
    np.testing.assert_allclose(live["score"].to_numpy(), batch["score"].to_numpy(), atol=1e-9)
    assert live["anomaly"].tolist() == batch["anomaly"].tolist()
    with pytest.raises(InputError, match="y has"):
        fitted.prime(train, score=True, y=np.zeros(3, dtype=bool))


def test_a_host_starts_from_its_training_scores_unless_history_is_replayed(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, valid = split
    model = make_candidate("robust_baseline").fit(train)
    host = str(train["host"].iloc[0])
    detector = model.detector_for(host)
    count, total, squares = detector.score_moments_
    assert count == detector.n_fit_rows_ and total > 0 and squares > 0
    assert model.initial_alarm_state(host).score_moments == detector.score_moments_
    # Context without scores (prime(score=False)) keeps the training history ...
    model.prime(train)
    assert model._state[host].alarm.score_moments == detector.score_moments_
    # ... and live rows add to it, one by one.
    rows = valid[valid["host"] == host].iloc[:5]
    model.score(rows)
    assert model._state[host].alarm.score_moments[0] == count + 5


def _fit_by_parts(name: str, train: pd.DataFrame, known: np.ndarray | None) -> FleetModel:
    """What the train_validate_deploy DAG does: each part fitted alone, through a pickle."""
    model = make_candidate(name)
    metrics = model.training_metrics(train)
    hosts = train["host"].astype(str).to_numpy()
    detectors = {}
    for host in pd.unique(hosts):
        rows = hosts == host
        part = model.fit_host(train[rows], None if known is None else known[rows], metrics)
        detectors[str(host)] = pickle.loads(pickle.dumps(part))
    pooled = pickle.loads(pickle.dumps(model.fit_pooled(train, known, metrics)))
    return model.assemble(detectors, pooled, metrics=metrics, training_span=training_span(train))


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_fitting_host_by_host_gives_the_model_fit_gives(
    name: str, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = split
    # Two hosts keep Prophet's dozen fits quick; the pooled fallback still differs from both.
    train = train[train["host"].isin(["web-1", "db-1"])].reset_index(drop=True)
    # Some rows marked as known incidents: they must be kept out of both fits alike.
    known = np.zeros(len(train), dtype=bool)
    known[len(train) // 3 : len(train) // 3 + 40] = True
    whole = make_candidate(name).fit(train, known)
    parts = _fit_by_parts(name, train, known)
    assert parts.hosts == whole.hosts and parts.metrics == whole.metrics
    assert parts.skipped_hosts_ == whole.skipped_hosts_
    assert (parts.train_start_, parts.train_end_, parts.n_train_rows_) == (
        whole.train_start_,
        whole.train_end_,
        whole.n_train_rows_,
    )
    stranger = valid[valid["host"] == "web-1"].assign(host="brand-new-1")  # scored by the fallback
    rows = pd.concat([valid[valid["host"].isin(["web-1", "db-1"])], stranger], ignore_index=True)
    for stateful in (False, True):
        expected = whole.score(rows, stateful=stateful)
        got = parts.score(rows, stateful=stateful)
        np.testing.assert_array_equal(got["score"].to_numpy(), expected["score"].to_numpy())
        assert got["anomaly"].tolist() == expected["anomaly"].tolist()
        assert got["contributions"].tolist() == expected["contributions"].tolist()


def test_assembling_parts_skips_hosts_and_needs_the_pooled_fallback(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = split
    tiny = pd.concat([train, train[train["host"] == "web-1"].head(5).assign(host="tiny-1")])
    model = make_candidate("robust_baseline")
    metrics = model.training_metrics(tiny)
    assert model.fit_host(tiny[tiny["host"] == "tiny-1"], None, metrics) is None
    web = tiny[tiny["host"] == "web-1"]
    one = model.fit_host(web, None, metrics)
    # One host, fitted: it is its own fallback, as FleetModel.fit makes it.
    single = make_candidate("robust_baseline").assemble(
        {"web-1": one}, None, metrics=metrics, training_span=training_span(web)
    )
    assert single.detector_for("elsewhere") is one
    fitted_whole = make_candidate("robust_baseline").fit(web)
    assert fitted_whole.fallback_ is fitted_whole.detectors_["web-1"]
    with pytest.raises(InputError, match="pooled fallback"):
        make_candidate("robust_baseline").assemble(
            {"web-1": one, "tiny-1": None}, None, metrics=metrics, training_span=training_span(tiny)
        )
