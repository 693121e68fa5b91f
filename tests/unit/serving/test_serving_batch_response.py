"""The compiled response writer gives the struct encoder's bytes, or leaves the job to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from serving.batch_response import encode_rows
from serving.schema import (
    CANONICAL_METRICS,
    KERNEL_ENCODE_ROWS,
    Batch,
    ScoreOutput,
    _encode_structs,
    batch_micros,
    encode_score_response,
)

# Hosts JSON must escape, a long one, non-ASCII: each piece is encoded by msgspec once.
HOSTS = ["web-1", 'db "primary"', "cache\\2", "ünïcødé-ホスト", "h" * 253, "tab\there"]


def make_batch(rows: int, seed: int, stamps: list[datetime] | None = None) -> Batch:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    if stamps is None:
        # Whole minutes shared by several rows, odd microseconds, and the same stamp twice.
        stamps = [
            start
            + timedelta(
                minutes=int(i // 3), microseconds=int(rng.integers(0, 2)) * int(rng.integers(1, 10**6))
            )
            for i in range(rows)
        ]
    hosts = [HOSTS[int(k)] for k in rng.integers(0, len(HOSTS), rows)]
    values = rng.random((rows, len(CANONICAL_METRICS)))
    micros = [(s - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) for s in stamps]
    nanos = np.array([u * 1000 if abs(u) < 2**63 // 1000 else 0 for u in micros], dtype=np.int64)
    return Batch(hosts=hosts, timestamps=stamps, values=values, nanos=nanos)


def make_output(rows: int, seed: int) -> ScoreOutput:
    rng = np.random.default_rng(seed + 1)
    contrib = rng.random((rows, len(CANONICAL_METRICS)))
    contrib /= contrib.sum(axis=1, keepdims=True)
    contrib[::5] = 0.0  # rows without contributions
    contrib[1::7, 0] = 1.0  # exactly one
    # Halfway cases of the 4th decimal, tiny values that round to 0.0 or 0.0001, a large one.
    halfway = [0.00005, 0.12345, 0.99995, 0.00004999, 0.5, 123456.78915]
    contrib[2::9, 1] = np.resize(halfway, len(contrib[2::9]))
    scores = rng.random(rows) * 3
    scores[::11] = np.nan  # a row the model could not score answers null
    scores[3::13] = np.resize([1e-7, 1e17, 0.1, 2.0, 1 / 3], len(scores[3::13]))
    anomaly = rng.random(rows) < 0.2
    levels = ["low", "medium", "high", "critical"]
    severity = [
        levels[int(k)] if flag else None for k, flag in zip(rng.integers(0, 4, rows), anomaly, strict=True)
    ]
    return ScoreOutput(
        scores=scores,
        anomaly=anomaly,
        severity=severity,
        contribution_matrix=contrib,
        contribution_metrics=CANONICAL_METRICS,
    )


@pytest.mark.parametrize("seed", range(5))
def test_kernel_bytes_equal_the_struct_encoder(seed: int) -> None:
    rows = 997
    batch, output = make_batch(rows, seed), make_output(rows, seed)
    kernel = encode_score_response(batch, output, 'v"7')
    assert kernel == _encode_structs(batch, output, 'v"7')
    assert len(msgspec.json.decode(kernel)["results"]) == rows


def test_timestamps_before_1970_and_at_the_ends_of_the_calendar() -> None:
    stamps = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1900, 2, 28, 12, tzinfo=UTC),
        datetime(2000, 2, 29, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ] * 20
    # Years 1 and 9999 overflow int64 nanoseconds (decoding refuses them): microseconds only.
    batch = make_batch(len(stamps), 3, stamps)
    batch = Batch(hosts=batch.hosts, timestamps=batch.timestamps, values=batch.values)
    output = make_output(len(stamps), 3)
    assert encode_score_response(batch, output, "1") == _encode_structs(batch, output, "1")


def test_metric_names_other_than_the_canonical_ones_are_written_as_given() -> None:
    batch = make_batch(KERNEL_ENCODE_ROWS, 4)
    base = make_output(KERNEL_ENCODE_ROWS, 4)
    output = ScoreOutput(
        scores=base.scores,
        anomaly=base.anomaly,
        severity=base.severity,
        contribution_matrix=base.contribution_matrix[:, :2],  # type: ignore[index]
        contribution_metrics=("cpu", 'odd "name"'),
    )
    assert encode_score_response(batch, output, "1") == _encode_structs(batch, output, "1")


def kernel_encode(batch: Batch, output: ScoreOutput) -> bytes | None:
    """The kernel's response for the whole batch (None: left to msgspec)."""
    assert output.contribution_matrix is not None
    return encode_rows(
        batch.hosts, batch_micros(batch), output.scores, output.anomaly, output.severity, "1",
        output.contribution_matrix, output.contribution_metrics,
    )  # fmt: skip


@pytest.mark.parametrize("value", [-0.25, -0.0, np.nan, np.inf, 1e12])
def test_values_msgspec_writes_differently_are_left_to_msgspec(value: float) -> None:
    rows = KERNEL_ENCODE_ROWS
    batch, output = make_batch(rows, 5), make_output(rows, 5)
    assert output.contribution_matrix is not None
    output.contribution_matrix[rows // 2, 3] = value
    body = kernel_encode(batch, output)
    assert body is None
    # The response is still right: the struct encoder wrote it.
    assert encode_score_response(batch, output, "1") == _encode_structs(batch, output, "1")


def test_mismatched_columns_are_a_programming_error() -> None:
    batch, output = make_batch(10, 6), make_output(10, 6)
    assert output.contribution_matrix is not None
    with pytest.raises(ValueError, match="different lengths"):
        encode_rows(
            batch.hosts[:-1], batch_micros(batch), output.scores, output.anomaly, output.severity, "1",
            output.contribution_matrix, output.contribution_metrics,
        )  # fmt: skip
    with pytest.raises(ValueError, match="contributions"):
        encode_rows(
            batch.hosts, batch_micros(batch), output.scores, output.anomaly, output.severity, "1",
            output.contribution_matrix[:, :3], output.contribution_metrics,
        )  # fmt: skip


def test_batch_micros_without_precomputed_nanos() -> None:
    batch = make_batch(20, 7)
    plain = Batch(hosts=batch.hosts, timestamps=batch.timestamps, values=batch.values)
    assert batch.nanos is not None
    assert batch_micros(plain).tolist() == (batch.nanos // 1000).tolist()


def test_a_buffer_sized_too_small_gives_up_instead_of_writing_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import serving.batch_response as writer

    mixed, output = make_batch(KERNEL_ENCODE_ROWS, 8), make_output(KERNEL_ENCODE_ROWS, 8)
    # One host: no row is smaller than the sizing assumes, so an undercount shows at once.
    batch = Batch(
        hosts=["a"] * len(mixed), timestamps=mixed.timestamps, values=mixed.values, nanos=mixed.nanos
    )
    assert output.contribution_matrix is not None
    monkeypatch.setattr(writer, "_CONTRIBUTION_CHARS", 0)  # the sizing undercounts every row
    body = kernel_encode(batch, output)
    assert body is None
    assert encode_score_response(batch, output, "1") == _encode_structs(batch, output, "1")
