"""Fixtures for the ml tests (data generators live in ml_helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from ml_helpers import make_fleet

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def fleet_factory() -> Callable[..., Any]:
    return make_fleet


@pytest.fixture(scope="session")
def small_fleet() -> tuple[pd.DataFrame, dict[str, list[list[str]]]]:
    """Three hosts, four days at 5-minute steps: quick to train, with incidents."""
    return make_fleet(hosts=("web-1", "web-2", "db-1"), days=4, freq="5min", incidents_per_host=2, seed=3)
