"""Fixtures shared by every test: each test gets its own SMARTCLOUDOPS_HOME.

Keep this file small; area-specific fixtures live in the area's own conftest.py.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# NOTES.md: litellm fetches a cost map on import; offline that deadlocks MLflow. Child
# processes inherit this too.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# One numba kernel cache for the whole run (and its child processes): ml.compiled would
# otherwise cache under each test's fresh SMARTCLOUDOPS_HOME and compile its kernels again,
# about 3 s, in every test that starts a loader or a server. The cache is keyed by source
# and numba version, so sharing it cannot serve a stale kernel.
_NUMBA_CACHE = os.path.join(tempfile.gettempdir(), f"smartcloudops-numba-{os.getuid()}")
os.environ.setdefault("NUMBA_CACHE_DIR", _NUMBA_CACHE)

# Settings that came from the shell running pytest (e.g. a PROMETHEUS_URL left exported by
# `make up`) must not leak into tests; ones a test sets itself (monkeypatch) are its own.
_SHELL_SETTINGS = [k for k in os.environ if k.startswith("SMARTCLOUDOPS_") or k == "PROMETHEUS_URL"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point SMARTCLOUDOPS_HOME at a fresh directory; get_settings() re-reads the env."""
    from smartcloudops.settings import get_settings

    for name in _SHELL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "scops-home"
    monkeypatch.setenv("SMARTCLOUDOPS_HOME", str(home))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
