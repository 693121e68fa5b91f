"""Detectors: estimator contract, layers, behaviour, and their building blocks."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from ml_helpers import wide_host
from sklearn.base import clone
from sklearn.ensemble import IsolationForest

from ml.alarms import AlarmPolicy, AlarmState
from ml.detectors import IsolationForestDetector, ProphetDetector, RobustBaselineDetector
from ml.detectors._forest import CompiledForest
from ml.features import causal_features, feature_names, rolling_previous, tod_profile
from ml.severity import severity_from_score, severity_labels
from ml.thresholds import PotThreshold, QuantileThreshold, RateThreshold, exponential_tail_line
from smartcloudops.domain import Severity
from smartcloudops.errors import InputError, ModelError

FAMILIES = [
    pytest.param(lambda: IsolationForestDetector(n_estimators=50), id="isolation_forest"),
    pytest.param(lambda: RobustBaselineDetector(), id="robust_baseline"),
    pytest.param(lambda: ProphetDetector(horizon="2D"), id="prophet"),
]


@pytest.fixture(scope="module")
def train_frame() -> pd.DataFrame:
    return wide_host(n=3 * 288, freq="5min", seed=1)


@pytest.fixture(scope="module")
def test_frame() -> pd.DataFrame:
    frame = wide_host(n=288, freq="5min", seed=2)
    frame["timestamp"] = frame["timestamp"] + pd.Timedelta(days=3)
    return frame


# -- contract ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", FAMILIES)
def test_estimator_contract(make, train_frame: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    det = make()
    params = det.get_params()
    assert set(params) == set(inspect.signature(type(det).__init__).parameters) - {"self"}
    twin = clone(det)
    assert twin.get_params() == params and twin is not det
    assert det.fit(train_frame) is det
    learned = [k for k in vars(det) if k not in params]
    assert learned and all(k.endswith("_") for k in learned)
    assert not any(k.endswith("_") for k in vars(clone(det)))  # clone drops learned state
    assert det.metrics_ == ["cpu", "memory"]


@pytest.mark.parametrize("make", FAMILIES)
def test_layers_are_consistent(make, train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    det = make().fit(train_frame)
    raw = det.score_samples(test_frame)
    calibrated = det.decision_function(test_frame)
    flags = det.predict(test_frame)
    assert raw.shape == calibrated.shape == flags.shape == (len(test_frame),)
    np.testing.assert_allclose(calibrated, det.threshold_.calibrate(raw))
    np.testing.assert_array_equal(flags, calibrated >= 1.0)
    contrib = det.contributions(test_frame)
    assert list(contrib.columns) == ["cpu", "memory"]
    sums = contrib.sum(axis=1).to_numpy()
    assert np.all((np.abs(sums - 1) < 1e-9) | (sums == 0))


@pytest.mark.parametrize("make", FAMILIES)
def test_unfitted_detector_raises_model_error(make, test_frame: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError, match="not fitted"):
        make().predict(test_frame)


def test_datetime_index_input_and_unsorted_rows(train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> None:
    det = RobustBaselineDetector().fit(train_frame.set_index("timestamp"))
    shuffled = test_frame.sample(frac=1.0, random_state=0)
    by_index = det.score_samples(shuffled.set_index("timestamp"))
    ordered = pd.Series(det.score_samples(test_frame), index=test_frame.index)
    np.testing.assert_allclose(by_index, ordered.loc[shuffled.index].to_numpy())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"cpu": [1.0, 2.0]}), "timestamp"),
        (pd.DataFrame({"timestamp": ["2024-01-01", "soon"], "cpu": [1.0, 2.0]}), "unparseable"),
        (pd.DataFrame({"timestamp": ["2024-01-01", "2024-01-02"], "cpu": ["1", "x"]}), "non-numeric"),
        (pd.DataFrame({"timestamp": pd.date_range("2024", periods=5, freq="min"), "cpu": 1.0}), "at least"),
    ],
)
def test_bad_training_input(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(InputError, match=message):
        RobustBaselineDetector().fit(frame)


def test_scoring_input_without_model_metrics(train_frame: pd.DataFrame) -> None:
    det = RobustBaselineDetector().fit(train_frame)
    with pytest.raises(InputError, match="none of the model's metrics"):
        det.predict(pd.DataFrame({"timestamp": ["2024-01-05"], "disk": [1.0]}))


def test_missing_values_are_carried_forward(train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> None:
    det = RobustBaselineDetector().fit(train_frame)
    gappy = test_frame.copy()
    gappy.loc[gappy.index[100:105], "cpu"] = np.nan
    assert np.isfinite(det.score_samples(gappy)).all()


# -- behaviour ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make", FAMILIES)
def test_injected_spike_raises_the_score(make, train_frame: pd.DataFrame, test_frame: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    det = make().fit(train_frame)
    clean = det.decision_function(test_frame)
    spiked = test_frame.copy()
    spiked.loc[spiked.index[150], "cpu"] += 60.0  # ~30 sigma of the noise
    scores = det.decision_function(spiked)
    assert scores[150] > np.quantile(clean, 0.99)
    assert scores[150] > clean[150]
    if not isinstance(det, IsolationForestDetector):  # isolation scores saturate, see docs
        assert det.predict(spiked)[150]
        assert det.contributions(spiked).iloc[150].idxmax() == "cpu"


@pytest.mark.parametrize("make", FAMILIES[:2])
def test_sustained_shift_in_training_is_learned_as_normal(make) -> None:  # type: ignore[no-untyped-def]
    history = wide_host(n=5 * 288, freq="5min", seed=4)
    history.loc[history.index[2 * 288 :], "cpu"] += 15.0  # a long, constant shift
    train, test = history.iloc[: 4 * 288], history.iloc[4 * 288 :]
    det = make().fit(train)
    # Score the test day with the training tail as history, as a live scorer would.
    flags = det.score_details(test, context=train.iloc[-300:]).flags
    assert flags.mean() < 0.01


def test_robust_baseline_shift_alarms_at_onset_then_adapts() -> None:
    history = wide_host(n=4 * 288, freq="5min", seed=5)
    train, test = history.iloc[: 3 * 288], history.iloc[3 * 288 :].copy()
    test.loc[test.index[100:], "cpu"] += 30.0
    det = RobustBaselineDetector().fit(train)
    flags = det.score_details(test, context=train.iloc[-100:]).flags
    assert flags[100:110].any()  # the onset is flagged
    assert not flags[200:].any()  # the new level became normal


# -- building blocks ---------------------------------------------------------------------------
def test_features_are_causal() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 2))
    ts = pd.date_range("2024", periods=200, freq="min").as_unit("ns").asi8
    profile = tod_profile(values[:100], ts[:100], n_bins=24, min_days=0.0)
    base = causal_features(values, ts, window=10, profile=profile)
    changed = values.copy()
    changed[150:] += 100.0
    np.testing.assert_array_equal(causal_features(changed, ts, window=10, profile=profile)[:150], base[:150])
    assert base.shape == (200, len(feature_names(["a", "b"])))


def test_seasonal_feature_is_the_departure_from_the_usual_level_at_that_hour() -> None:
    ts = pd.date_range("2024-01-01", periods=4 * 288, freq="5min").as_unit("ns").asi8
    hour = (ts // 3_600_000_000_000) % 24
    busy = np.where((hour >= 9) & (hour < 17), 80.0, 20.0)[:, None]
    profile = tod_profile(busy[: 3 * 288], ts[: 3 * 288], n_bins=24, min_days=2.0)
    assert profile.shape == (24, 1)
    assert profile[12, 0] == 80.0 and profile[3, 0] == 20.0
    night_spike = busy.copy()
    night_spike[3 * 288 + 36] = 80.0  # 03:00 on day 4 reads what 12:00 usually reads
    feats = causal_features(night_spike, ts, window=12, profile=profile)
    seasonal = feats[:, feature_names(["cpu"]).index("cpu__seasonal")]
    assert seasonal[3 * 288 + 36] == 60.0
    assert np.count_nonzero(seasonal) == 1  # every usual reading sits on its baseline
    # Under min_days of data the baseline is one bin: the overall median.
    flat = tod_profile(busy[:288], ts[:288], n_bins=24, min_days=2.0)
    assert flat.shape == (1, 1) and flat[0, 0] == 20.0


def test_rolling_previous_excludes_the_current_row() -> None:
    values = np.arange(10, dtype=float)[:, None]
    mean = rolling_previous(values, 3, "mean")
    assert np.isnan(mean[0, 0])
    assert mean[5, 0] == pytest.approx((2 + 3 + 4) / 3)
    tail = rolling_previous(values, 3, "median", from_row=8)
    assert np.isnan(tail[:8]).all() and tail[9, 0] == 7.0


@pytest.mark.parametrize("max_features", [1.0, 0.5])
@pytest.mark.parametrize("rows", [1, 7, 2500])
def test_compiled_forest_equals_scikit_learn_score_samples(max_features: float, rows: int) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 9))  # noqa: N806
    model = IsolationForest(n_estimators=40, max_features=max_features, random_state=1).fit(X)
    # Outliers, training rows, values exactly on split points and just either side of them
    # (float32 inputs against float64 thresholds), and rows past one traversal chunk.
    probe = np.vstack([rng.normal(scale=4.0, size=(rows, 9)), X[:3]])
    split = model.estimators_[0].tree_.threshold[0]
    probe[0, :] = split
    if rows > 1:
        probe[1, :] = np.nextafter(np.float32(split), np.float32(np.inf))
    expected = -model.score_samples(probe)
    assert np.abs(CompiledForest.from_sklearn(model).anomaly_score(probe) - expected).max() <= 1e-9


def test_compiled_forest_survives_pickling_and_reads_the_older_padded_layout() -> None:
    import pickle

    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 4))  # noqa: N806
    model = IsolationForest(n_estimators=12, max_samples=64, random_state=3).fit(X)
    probe = rng.normal(scale=3.0, size=(50, 4))
    expected = -model.score_samples(probe)
    forest = pickle.loads(pickle.dumps(CompiledForest.from_sklearn(model)))
    assert np.abs(forest.anomaly_score(probe) - expected).max() <= 1e-9
    # Detectors pickled before the complete-tree layout hold (trees x nodes) padded arrays.
    trees = [est.tree_ for est in model.estimators_]
    width = max(t.node_count for t in trees)
    legacy = {
        "left": np.full((len(trees), width), -1), "right": np.full((len(trees), width), -1),
        "feature": np.zeros((len(trees), width), dtype=int), "threshold": np.zeros((len(trees), width)),
        "leaf_value": np.zeros((len(trees), width)), "max_depth": max(t.max_depth for t in trees),
        "denominator": forest.denominator,
    }  # fmt: skip
    for i, tree in enumerate(trees):
        k = tree.node_count
        legacy["left"][i, :k], legacy["right"][i, :k] = tree.children_left, tree.children_right
        legacy["feature"][i, :k] = np.where(tree.feature >= 0, tree.feature, 0)
        legacy["threshold"][i, :k] = tree.threshold
        legacy["leaf_value"][i, :k] = forest_leaf_values(tree)
    old = CompiledForest.__new__(CompiledForest)
    old.__setstate__(legacy)
    assert np.abs(old.anomaly_score(probe) - expected).max() <= 1e-9


def forest_leaf_values(tree: object) -> np.ndarray:
    from ml.compiled import average_path_length

    return tree.compute_node_depths() + average_path_length(tree.n_node_samples) - 1.0  # type: ignore[attr-defined]


def test_quantile_threshold_calibration() -> None:
    scores = np.arange(1001, dtype=float)  # median 500, 99.9 % quantile 999
    th = QuantileThreshold(quantile=0.999, margin=1.0).fit(scores)
    assert th.baseline_ == 500 and th.threshold_ == pytest.approx(999)
    np.testing.assert_allclose(th.calibrate(np.array([0.0, 500.0, 999.0, 1498.0])), [0.0, 0.0, 1.0, 2.0])
    constant = QuantileThreshold().fit(np.zeros(50))
    assert np.isfinite(constant.calibrate(np.array([0.0, 1.0]))).all()
    with pytest.raises(InputError):
        QuantileThreshold(quantile=1.5).fit(scores)
    with pytest.raises(InputError, match="no finite"):
        QuantileThreshold().fit(np.array([np.nan]))


def test_pot_threshold_sits_in_the_tail() -> None:
    scores = np.random.default_rng(0).exponential(size=20_000)
    th = PotThreshold(risk=1e-4).fit(scores)
    # Exponential tail: P(X > t) = 1e-4 at t = ln(1e4) ≈ 9.2.
    assert 7.5 < th.threshold_ < 11.5


def test_alarm_policy_m_of_n_and_cooldown() -> None:
    ts = pd.date_range("2024", periods=12, freq="min").as_unit("ns").asi8
    flags = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    alarms, _ = AlarmPolicy(m=2, n=3).apply_array(ts, flags)
    assert np.flatnonzero(alarms).tolist() == [2, 3, 7, 8, 10, 11]  # flagged rows with company
    alarms, _ = AlarmPolicy(m=2, n=3, cooldown="5min").apply_array(ts, flags)
    assert np.flatnonzero(alarms).tolist() == [2, 7]
    # Streaming one row at a time gives the same alarms as a batch.
    state = AlarmState()
    streamed = []
    for t, f in zip(ts, flags, strict=True):
        out, state = AlarmPolicy(m=2, n=3, cooldown="5min").apply_array(np.array([t]), np.array([f]), state)
        streamed.append(bool(out[0]))
    assert np.flatnonzero(streamed).tolist() == [2, 7]


def test_alarm_policy_on_series_keeps_order_and_validates() -> None:
    index = pd.date_range("2024", periods=4, freq="h", tz="UTC")
    flags = pd.Series([True, False, True, True], index=index)[::-1]
    out = AlarmPolicy(cooldown="90min").apply(flags)
    assert out.index.equals(flags.index)
    assert out.tolist() == [False, True, False, True]  # reversed order: alarms at 02:00 and 00:00
    with pytest.raises(InputError):
        AlarmPolicy(m=3, n=2).apply(flags)
    with pytest.raises(InputError):
        AlarmPolicy(cooldown="soon").apply(flags)


def test_severity_bands() -> None:
    assert severity_from_score(0.5) is None
    assert severity_from_score(1.0) is Severity.LOW
    assert severity_from_score(1.7) is Severity.MEDIUM
    assert severity_from_score(2.2) is Severity.HIGH
    assert severity_from_score(9.0) is Severity.CRITICAL
    assert severity_labels([0.2, 1.2, 0.9], [False, True, True]) == [None, "low", "low"]


def test_alarm_policy_bypass_for_extreme_rows() -> None:
    ts = pd.date_range("2024", periods=5, freq="min").as_unit("ns").asi8
    flags = np.array([0, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.1, 0.2, 5.0, 0.3, 0.1])
    assert not AlarmPolicy(m=2, n=3).apply_array(ts, flags, None, scores)[0].any()
    alarms, _ = AlarmPolicy(m=2, n=3, bypass=3.0).apply_array(ts, flags, None, scores)
    assert np.flatnonzero(alarms).tolist() == [2]


# -- robust baseline: recoveries, flatlines, noise bursts ----------------------------------------
def test_robust_baseline_end_of_an_incident_is_not_news() -> None:
    history = wide_host(n=4 * 288, freq="5min", seed=6)
    train, test = history.iloc[: 3 * 288], history.iloc[3 * 288 :].copy()
    test.loc[test.index[100:118], "cpu"] += 40.0  # a 90-minute incident, then back to normal
    det = RobustBaselineDetector().fit(train)
    flags = det.score_details(test, context=train.iloc[-100:]).flags
    assert flags[100:104].any()  # the onset
    assert not flags[118:200].any()  # returning to the usual level raises nothing


def test_robust_baseline_flags_a_stuck_metric_and_a_noise_burst() -> None:
    history = wide_host(n=4 * 288, freq="5min", seed=7)
    train, test = history.iloc[: 3 * 288], history.iloc[3 * 288 :].copy()
    stuck = test.copy()
    stuck.loc[stuck.index[100:140], "cpu"] = float(stuck["cpu"].iloc[99])
    noisy = test.copy()
    noisy.loc[noisy.index[100:140], "memory"] += np.random.default_rng(0).normal(0, 6.0, 40)
    det = RobustBaselineDetector().fit(train)
    clean = det.score_details(test, context=train.iloc[-100:]).flags
    for frame, metric in ((stuck, "cpu"), (noisy, "memory")):
        details = det.score_details(frame, context=train.iloc[-100:])
        assert details.flags[100:140].sum() > clean[100:140].sum()
        assert det.contributions(frame).iloc[100:140].mean().idxmax() == metric


@pytest.mark.parametrize("unit", [1e-3, 1e3], ids=["fraction", "thousands"])
def test_robust_baseline_scores_do_not_depend_on_the_metric_unit(unit: float) -> None:
    # CPU as 0.5 or 50, bytes or kilobytes: the same series in another unit is the same
    # evidence. (The volatility channel's offset once came from the median *log* spread,
    # negative below a spread of 1: the channel read NaN except right after a burst, where
    # its floored scale turned it into scores near 100.)
    history = wide_host(n=4 * 288, freq="5min", seed=8)
    history["cpu"] = np.round(history["cpu"] / 10.0) * 0.066  # quantised small values
    train, test = history.iloc[: 3 * 288], history.iloc[3 * 288 :].copy()
    test.loc[test.index[150], "cpu"] += 1.5
    scaled_train, scaled_test = train.copy(), test.copy()
    for frame in (scaled_train, scaled_test):
        frame[["cpu", "memory"]] *= unit
    plain = RobustBaselineDetector().fit(train)
    scaled = RobustBaselineDetector().fit(scaled_train)
    assert np.isfinite(plain.center_).all() and np.isfinite(plain.vol_eps_).all()
    assert (plain.vol_eps_ > 0).all()
    a = plain.score_details(test, context=train.iloc[-100:]).calibrated
    b = scaled.score_details(scaled_test, context=scaled_train.iloc[-100:]).calibrated
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)  # the floors add 1e-9 and 1e-12


def test_robust_baseline_transform_choice() -> None:
    rng = np.random.default_rng(3)
    frame = wide_host(n=3 * 288, freq="5min", seed=3)
    frame["cpu"] = np.exp(rng.normal(10, 1.0, len(frame)))  # multiplicative, heavy-tailed
    det = RobustBaselineDetector(transform="auto").fit(frame)
    assert np.isfinite(det.asinh_scale_[0]) and np.isnan(det.asinh_scale_[1])
    assert np.isnan(RobustBaselineDetector().fit(frame).asinh_scale_).all()  # default: none
    with pytest.raises(ValueError, match="transform"):
        RobustBaselineDetector(transform="cube").fit(frame)


# -- thresholds ----------------------------------------------------------------------------------
def test_exponential_tail_line_extrapolates() -> None:
    scores = np.random.default_rng(1).exponential(size=20_000)
    # P(X > t) = 1e-3 at t = ln(1000) ≈ 6.9; far beyond the data it still follows the tail.
    assert 6.3 < exponential_tail_line(scores, 1e-3) < 7.5
    assert 13.0 < exponential_tail_line(scores, 1e-6) < 15.5
    assert exponential_tail_line(scores, 0.5) == pytest.approx(np.quantile(scores, 0.5))


def test_rate_threshold_is_per_day_not_per_row() -> None:
    scores = np.random.default_rng(2).exponential(size=20_000)
    minute = RateThreshold(false_alarms_per_day=1.0).fit(scores, rows_per_day=1440)
    five = RateThreshold(false_alarms_per_day=1.0).fit(scores, rows_per_day=288)
    assert minute.risk() == pytest.approx(1 / 1440) and five.risk() == pytest.approx(1 / 288)
    # One a day at one-minute steps is a rarer row than one a day at five-minute steps.
    assert minute.threshold_ - five.threshold_ == pytest.approx(np.log(5), abs=0.3)
    assert RateThreshold().fit(scores).risk() == pytest.approx(0.05 / 1440)
    with pytest.raises(InputError):
        RateThreshold(false_alarms_per_day=0).fit(scores)
