"""Shared data for the scoring service tests that fit real fleet models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from smartcloudops.domain import CANONICAL_METRICS

START = pd.Timestamp("2024-05-01T00:00:00Z")
#: Each metric's steady level in :func:`steady_history`.
BASE = {"cpu": 30.0, "memory": 50.0, "disk": 40.0, "load": 1.0, "network_in": 1e5, "network_out": 1e5}


def steady_history(
    rows: int, *, seed: int, noise: float, hosts: Sequence[str] = ("web-1", "web-2")
) -> pd.DataFrame:
    """One-minute rows from :data:`START` per host: every metric at its :data:`BASE` level
    times ``1 + N(0, noise)``, hosts one after another (quiet training data, no incident)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=rows, freq="1min")
    frames = [
        pd.DataFrame({"timestamp": ts, "host": host,
                      **{m: BASE[m] * (1 + rng.normal(0, noise, rows)) for m in CANONICAL_METRICS}})
        for host in hosts
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)
