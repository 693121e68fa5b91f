"""Request decoding: the wire format turned into a Batch (no HTTP here)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from serving.schema import (
    Batch,
    Metrics,
    RequestError,
    ScoreOutput,
    decode_score_request,
    encode_score_response,
)
from smartcloudops.domain import CANONICAL_METRICS

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def decode(body: object, **kwargs: object) -> Batch:
    return decode_score_request(json.dumps(body).encode(), now=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def test_metrics_struct_matches_canonical_metrics() -> None:
    # The struct is written out for type checkers; it must list exactly the canonical names.
    assert Metrics.__struct_fields__ == CANONICAL_METRICS


def test_single_row_becomes_a_one_row_batch_with_nan_for_missing_metrics() -> None:
    batch = decode(
        {"host": "web-1", "timestamp": "2024-05-01T10:00:00Z", "metrics": {"cpu": 97.5, "disk": 3}}
    )
    assert batch.hosts == ["web-1"]
    assert batch.timestamps == [datetime(2024, 5, 1, 10, 0, tzinfo=UTC)]
    assert batch.values.shape == (1, len(CANONICAL_METRICS))
    assert batch.column("cpu")[0] == 97.5
    assert batch.column("disk")[0] == 3.0
    assert math.isnan(batch.column("memory")[0])


def test_null_metric_counts_as_missing() -> None:
    batch = decode({"host": "a", "metrics": {"cpu": None, "memory": 5}})
    assert math.isnan(batch.column("cpu")[0])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, NOW),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),  # naive: taken as UTC
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (1714557600, datetime(2024, 5, 1, 10, tzinfo=UTC)),  # epoch seconds
        (1714557600.5, datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalised_to_utc(given: object, expected: datetime) -> None:
    body: dict[str, object] = {"host": "a", "metrics": {"cpu": 1}}
    if given is not None:
        body["timestamp"] = given
    (ts,) = decode(body).timestamps
    assert ts == expected
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_batch_keeps_row_order() -> None:
    rows = [{"host": f"h{i}", "metrics": {"cpu": float(i)}} for i in range(50)]
    batch = decode({"instances": rows})
    assert batch.hosts == [f"h{i}" for i in range(50)]
    assert batch.column("cpu").tolist() == [float(i) for i in range(50)]


def test_batch_limit_is_inclusive() -> None:
    rows = [{"host": "a", "metrics": {"cpu": 1.0}}] * 3
    assert len(decode({"instances": rows}, max_rows=3)) == 3
    with pytest.raises(RequestError) as info:
        decode({"instances": rows}, max_rows=2)
    assert (info.value.status, info.value.code, info.value.field) == (413, "batch_too_large", "instances")


def test_duplicate_keys_do_not_crash() -> None:
    # Last one wins, as in every JSON parser we know; not an error worth a 4xx.
    batch = decode_score_request(b'{"host": "a", "metrics": {"cpu": 1, "cpu": 2}}')
    assert batch.column("cpu")[0] == 2.0


def test_response_encoding_turns_nan_scores_into_null() -> None:
    batch = decode(
        {"instances": [{"host": "a", "metrics": {"cpu": 1}}, {"host": "b", "metrics": {"cpu": 2}}]}
    )
    output = ScoreOutput(
        scores=np.array([0.5, np.nan]),
        anomaly=np.array([True, False]),
        severity=["low", None],
        contributions=[{"cpu": 1.0}, {}],
    )
    body = msgspec.json.decode(encode_score_response(batch, output, "7"))
    assert body == {
        "results": [
            {"host": "a", "timestamp": "2024-05-01T12:00:00Z", "anomaly": True, "score": 0.5,
             "severity": "low", "model_version": "7", "contributions": {"cpu": 1.0}},
            {"host": "b", "timestamp": "2024-05-01T12:00:00Z", "anomaly": False, "score": None,
             "severity": None, "model_version": "7", "contributions": {}},
        ]
    }  # fmt: skip


def test_one_row_rounding_is_numpys_to_the_bit() -> None:
    from serving.schema import _rounded

    rng = np.random.default_rng(3)
    # Random values, halfway cases of the 4th decimal, signed zeros and tiny negatives.
    specials = [0.00005, 0.00015, 0.12345, 0.99995, 2.5e-5, -0.0, 0.0, -1e-6, -0.00005, 1.0, 123456.78915]
    for row in [*rng.random((200, 6)), *rng.normal(0, 1e-3, (200, 6)), *np.resize(specials, (4, 6))]:
        ours = _rounded(np.asarray([row]))[0]
        expected = np.round(np.asarray(row), 4).tolist()
        assert [(v, math.copysign(1, v)) for v in ours] == [(v, math.copysign(1, v)) for v in expected]


@pytest.mark.parametrize(
    ("score", "anomaly", "severity", "contributions"),
    [
        (0.25, False, None, [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]),
        (3.75, True, "critical", [0.12345, 0.00005, 0.87645, 0.0, 0.0, 0.0]),
        (np.nan, False, None, [0.0] * 6),  # a row the model could not score answers null
        (1.0, True, "low", [1.0, -0.0, 0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_one_row_encoding_equals_the_struct_path(
    score: float, anomaly: bool, severity: str | None, contributions: list[float]
) -> None:
    from serving.schema import _encode_structs

    batch = decode({"host": 'web "1"', "timestamp": "2024-05-01T10:00:00.25Z", "metrics": {"cpu": 1}})
    output = ScoreOutput(
        scores=np.array([score]),
        anomaly=np.array([anomaly]),
        severity=[severity],
        contribution_matrix=np.array([contributions]),
        contribution_metrics=CANONICAL_METRICS,
    )
    assert encode_score_response(batch, output, "7") == _encode_structs(batch, output, "7")
