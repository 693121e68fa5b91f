"""The fast path equals the reference: scikit-learn's scores and FleetModel.score's output."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_helpers import BASE, START, steady_history

from serving.fast import ArrayFleetScorer, PlanScorer, batch_nanos
from serving.model import FleetScorer, Loaded, frame_to_output, make_scorer
from serving.schema import Batch
from smartcloudops.domain import CANONICAL_METRICS

fleet_mod = pytest.importorskip("ml.fleet", reason="ml.fleet (ML helper) not present")
training = pytest.importorskip("ml.training", reason="ml.training (ML helper) not present")

ROWS = 240


def history() -> pd.DataFrame:
    return steady_history(ROWS, seed=11, noise=0.03)


@pytest.fixture(scope="module")
def forest_fleet() -> Any:
    model = training.make_candidate("isolation_forest")
    model.detector.set_params(n_estimators=30)  # enough trees to compare; fast to fit
    return model.fit(history())


@pytest.fixture(scope="module")
def baseline_fleet() -> Any:
    return training.make_candidate("robust_baseline").fit(history())


# -- the scorer against FleetModel.score ---------------------------------------------------


def rows_frame(minutes: list[int], hosts: list[str], cpu: list[float]) -> pd.DataFrame:
    ts = [START + pd.Timedelta(minutes=ROWS + m) for m in minutes]
    data: dict[str, Any] = {"timestamp": ts, "host": hosts}
    for metric in CANONICAL_METRICS:
        data[metric] = [BASE[metric]] * len(ts)
    data["cpu"] = cpu
    return pd.DataFrame(data)


def as_batch(frame: pd.DataFrame) -> Batch:
    values = frame[list(CANONICAL_METRICS)].to_numpy(dtype=np.float64)
    stamps = [t.to_pydatetime() for t in frame["timestamp"]]
    return Batch(hosts=frame["host"].tolist(), timestamps=stamps, values=values)


def assert_same(ours: Any, frame: pd.DataFrame) -> None:
    # Read FleetModel's frame exactly as the pandas scorer does (pandas 3 turns None into NaN).
    reference = frame_to_output(frame, len(frame), "ref")
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=0, atol=1e-9)
    assert ours.anomaly.tolist() == reference.anomaly.tolist()
    assert list(ours.severity) == list(reference.severity)
    for mine, theirs in zip(ours.contribution_dicts(), reference.contributions, strict=True):
        assert mine.keys() == theirs.keys()
        # Both are rounded to 4 decimals; np.round and round() may part by one unit on ties.
        assert max((abs(mine[k] - theirs[k]) for k in mine), default=0.0) <= 1.0001e-4


def stream() -> list[pd.DataFrame]:
    """Single rows for two known hosts and one never seen, a spike, a gap, then batches:
    out of order, mixed hosts, a missing value, a retried (older) timestamp."""
    parts = [rows_frame([i], ["web-1"], [30.0 + (55.0 if 70 <= i < 74 else 0.0)]) for i in range(1, 90)]
    parts += [rows_frame([i], ["web-2"], [31.0]) for i in range(1, 20)]
    parts += [rows_frame([i], ["new-host"], [29.0 + i % 3]) for i in range(1, 10)]
    mixed = rows_frame([95, 91, 93, 92, 94, 91], ["web-1", "web-2", "web-1", "new-host", "web-2", "web-1"],
                       [30.0, 99.0, 31.0, 28.0, 30.0, 97.0])  # fmt: skip
    mixed.loc[2, "memory"] = np.nan
    parts.append(mixed)
    parts.append(rows_frame([60], ["web-1"], [30.0]))  # older than the host's history
    gap = rows_frame([96], ["web-1"], [30.0])
    gap.loc[0, "disk"] = np.nan  # a missing value in a single row: carried forward
    parts.append(gap)
    parts.append(rows_frame(list(range(100, 400)), ["web-2"] * 300, [30.0 + (i % 17) for i in range(300)]))
    return parts


@pytest.mark.parametrize("family", ["forest_fleet", "baseline_fleet"])
def test_scorer_equals_fleet_model_score_row_by_row_and_in_batches(family: str, request: Any) -> None:
    fitted = request.getfixturevalue(family)
    reference = copy.deepcopy(fitted)
    scorer = make_scorer(Loaded(model=copy.deepcopy(fitted), version="3"), "test")
    if family == "forest_fleet":
        # The forest fleet compiles to a plan (numpy and numba) (it passed its load-time check).
        assert isinstance(scorer, PlanScorer)
    else:
        assert isinstance(scorer, ArrayFleetScorer)
        assert scorer._alarm_plan is not None  # the one-row alarm path passed its self-check
    alarms = 0
    for part in stream():
        ours = scorer.score(as_batch(part))
        theirs = reference.score(part)
        assert_same(ours, theirs)
        alarms += int(ours.anomaly.sum())
    if family == "forest_fleet":
        assert alarms >= 1  # the stream really exercised the alarm path


def test_large_batches_scored_as_two_host_groups_equal_one_call(
    forest_fleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.fast as fast

    whole = make_scorer(Loaded(model=copy.deepcopy(forest_fleet), version="1"), "test")
    split = make_scorer(Loaded(model=copy.deepcopy(forest_fleet), version="1"), "test")
    reference = copy.deepcopy(forest_fleet)
    assert isinstance(split, PlanScorer)
    calls = []
    plan_score = split.plan.score
    monkeypatch.setattr(split.plan, "score", lambda *a: calls.append(len(a[0])) or plan_score(*a))
    minutes = [m for m in range(1, 120) for _ in range(3)]
    hosts = ["web-1", "web-2", "new-host"] * 119
    cpu = [30.0 + (60.0 if m in (50, 51, 52, 90) else m % 5) for m in minutes]
    for part in (
        rows_frame(minutes[:180], hosts[:180], cpu[:180]),
        rows_frame(minutes[180:], hosts[180:], cpu[180:]),
    ):
        batch = as_batch(part)
        monkeypatch.setattr(fast, "PARALLEL_ROWS", 100)
        monkeypatch.setattr(fast, "_CPUS", 2)
        monkeypatch.setattr(fast, "_spare_core", lambda: True)
        ours = split.score(batch)
        monkeypatch.setattr(fast, "PARALLEL_ROWS", 10**9)
        one_call = whole.score(batch)
        # The plan's running sums differ in the last bits with the batch's make-up; results
        # (and the alarms) stay those of FleetModel.score.
        np.testing.assert_allclose(ours.scores, one_call.scores, rtol=0, atol=1e-9)
        assert ours.contribution_matrix is not None and one_call.contribution_matrix is not None
        np.testing.assert_allclose(ours.contribution_matrix, one_call.contribution_matrix, rtol=0, atol=1e-9)
        assert ours.anomaly.tolist() == one_call.anomaly.tolist()
        assert list(ours.severity) == list(one_call.severity)
        assert_same(ours, reference.score(part))
    # Each batch went to the plan as two host groups, every row once.
    assert len(calls) == 4 and sum(calls) == len(minutes)
    assert whole._state.keys() == split._state.keys()
    for host, state in split._state.items():
        other = whole._state[host]
        np.testing.assert_array_equal(state.timestamps, other.timestamps)
        np.testing.assert_array_equal(state.values, other.values)
        assert (state.recent, state.last_alarm_ns, state.last_by_key) == (
            other.recent,
            other.last_alarm_ns,
            other.last_by_key,
        )


def test_no_second_thread_without_a_spare_core(forest_fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.fast as fast

    scorer = make_scorer(Loaded(model=copy.deepcopy(forest_fleet), version="1"), "test")
    assert isinstance(scorer, PlanScorer)
    calls = []
    plan_score = scorer.plan.score
    monkeypatch.setattr(scorer.plan, "score", lambda *a: calls.append(len(a[0])) or plan_score(*a))
    monkeypatch.setattr(fast, "PARALLEL_ROWS", 2)
    monkeypatch.setattr(fast, "_CPUS", 2)
    monkeypatch.setattr(fast, "_spare_core", lambda: False)
    scorer.score(as_batch(rows_frame([1, 1, 2, 2], ["web-1", "web-2"] * 2, [30.0] * 4)))
    assert calls == [4]
    assert isinstance(fast._spare_core(), bool)  # readable on this platform


def test_host_groups_balance_rows_and_keep_each_host_whole() -> None:
    from serving.fast import _host_halves

    assert _host_halves(["a"] * 50) is None  # one host: nothing to split
    hosts = ["big"] * 50 + ["b"] * 20 + ["c"] * 20 + ["d"] * 10
    halves = _host_halves(hosts[::-1])
    assert halves is not None
    groups = [{hosts[::-1][i] for i in half} for half in halves]
    assert groups[0].isdisjoint(groups[1]) and groups[0] | groups[1] == {"big", "b", "c", "d"}
    assert sorted(len(half) for half in halves) == [50, 50]
    assert np.array_equal(np.sort(np.concatenate(halves)), np.arange(len(hosts)))


def test_check_is_stateless_and_equals_fleet_model_stateless(forest_fleet: Any) -> None:
    scorer = make_scorer(Loaded(model=copy.deepcopy(forest_fleet), version="1"), "test")
    part = rows_frame([1, 2, 3], ["web-1", "web-1", "web-2"], [30.0, 90.0, 30.0])
    first = scorer.check(as_batch(part))
    assert scorer._state == {}  # type: ignore[attr-defined]
    assert_same(first, forest_fleet.score(part, stateful=False))
    second = scorer.check(as_batch(part))
    np.testing.assert_array_equal(first.scores, second.scores)


def test_other_models_keep_the_pandas_scorer(fake_model: Any) -> None:
    assert isinstance(make_scorer(Loaded(model=fake_model, version=1), "s"), FleetScorer)


def test_batch_nanos_is_exact_to_the_microsecond() -> None:
    stamp = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    batch = Batch(hosts=["a"], timestamps=[stamp], values=np.ones((1, len(CANONICAL_METRICS))))
    assert batch_nanos(batch).tolist() == [pd.Timestamp(stamp).value]


def test_unknown_alarm_policies_fall_back_to_their_own_code() -> None:
    from ml.alarms import AlarmPolicy
    from ml.training import default_alarm_policy
    from serving.fast import _AlarmRowPlan

    class Custom(AlarmPolicy):  # a subclass may change the rules: never re-implemented here
        pass

    assert _AlarmRowPlan.build(Custom()) is None
    for policy in (
        AlarmPolicy(),
        AlarmPolicy(m=2, n=3, cooldown="1h"),
        AlarmPolicy(recent_days=1.0, bypass=1.5),
        default_alarm_policy(likelihood=True),  # likelihood, spike level and score record
        AlarmPolicy(record_ratio=1.2, record_floor=0.0),
    ):
        assert _AlarmRowPlan.build(policy) is not None


def test_swapping_real_models_under_load_fails_no_request(
    tmp_path: Any, forest_fleet: Any, fake_source: Any, live_server: Any
) -> None:
    """The fast path keeps the swap guarantee: every response names one version, none fails."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from serving.app import create_app
    from serving.model import ModelProvider
    from smartcloudops.settings import Settings

    models = {str(v): copy.deepcopy(forest_fleet) for v in range(1, 5)}
    source = fake_source(models, version="1")
    provider = ModelProvider(source, poll_seconds=3600)
    assert provider.refresh()
    server = live_server(create_app(Settings(home=tmp_path), model_provider=provider))
    stop = threading.Event()

    def hammer(k: int) -> list[tuple[int, set[str]]]:
        seen = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            minute = 0
            while not stop.is_set():
                minute += 1
                ts = (START + pd.Timedelta(minutes=ROWS + minute)).isoformat()
                body = {"host": f"web-{k % 2 + 1}", "timestamp": ts, "metrics": dict(BASE)}
                if minute % 5 == 0:  # batches too
                    body = {"instances": [body, {**body, "host": "new-host"}]}
                response = client.post("/v1/score", json=body)
                results = response.json().get("results", []) if response.status_code == 200 else []
                seen.append((response.status_code, {r["model_version"] for r in results}))
        return seen

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, k) for k in range(4)]
        for version in ("2", "3", "4"):
            threading.Event().wait(0.15)
            source.version = version
            assert provider.refresh()
        threading.Event().wait(0.15)
        stop.set()
        responses = [item for f in futures for item in f.result()]
    assert responses and [r for r in responses if r[0] != 200] == []
    assert all(len(versions) == 1 for _, versions in responses)
    assert len({next(iter(v)) for _, v in responses}) >= 2
    assert isinstance(provider.current(), PlanScorer)
