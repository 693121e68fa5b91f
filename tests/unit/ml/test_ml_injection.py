"""Labelled validation data: anomalies injected into real segments, the synthetic corpus."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from ml_helpers import make_series

from ml.evaluation import parse_windows
from ml.injection import ANOMALY_KINDS, inject_anomalies, synthetic_corpus, windows_of
from smartcloudops.errors import InputError


def test_injected_anomalies_are_labelled_after_the_training_part() -> None:
    frame = make_series(4032)
    out, injected = inject_anomalies(frame, count=3, seed=4)
    assert len(out) == len(frame) and out["timestamp"].equals(frame["timestamp"])
    changed = np.flatnonzero(out["value"].to_numpy() != frame["value"].to_numpy())
    assert changed.size and changed.min() >= int(0.15 * len(frame))
    windows = parse_windows({"s": windows_of(injected)})["s"]
    assert len(windows) == 3
    for (_, end), (next_start, _) in itertools.pairwise(windows):
        assert end < next_start  # never overlapping
    ts = pd.DatetimeIndex(out["timestamp"])
    for anomaly, (start, end) in zip(injected, windows, strict=True):
        assert anomaly.kind in ANOMALY_KINDS
        assert start <= ts[anomaly.start] <= end  # the onset sits inside its window


def test_injection_is_deterministic_and_respects_bounds() -> None:
    frame = make_series(3000)
    a, _ = inject_anomalies(frame, count=2, seed=9, clip=(0.0, 100.0))
    b, _ = inject_anomalies(frame, count=2, seed=9, clip=(0.0, 100.0))
    pd.testing.assert_frame_equal(a, b)
    assert a["value"].between(0.0, 100.0).all()


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_every_kind_changes_the_series(kind: str) -> None:
    frame = make_series(3000, seed=2)
    out, injected = inject_anomalies(frame, count=1, kinds=[kind], seed=1)
    a = injected[0]
    assert a.kind == kind
    before = frame["value"].to_numpy()[a.start : a.end]
    after = out["value"].to_numpy()[a.start : a.end]
    assert not np.allclose(before, after)


def test_bad_injection_requests() -> None:
    with pytest.raises(InputError, match="unknown anomaly kind"):
        inject_anomalies(make_series(3000), kinds=["gremlins"])
    with pytest.raises(InputError, match="too short"):
        inject_anomalies(make_series(100), count=3)


def test_synthetic_corpus_shapes() -> None:
    corpus = synthetic_corpus(6, seed=3, n=1500)
    assert set(corpus.series) == set(corpus.windows) == set(corpus.kinds)
    for name, frame in corpus.series.items():
        assert list(frame.columns) == ["timestamp", "value"] and len(frame) == 1500
        assert np.isfinite(frame["value"]).all()
        assert len(corpus.windows[name]) == len(corpus.kinds[name])
    again = synthetic_corpus(6, seed=3, n=1500)
    assert again.windows == corpus.windows
