"""ModelProvider: loading, swapping, failures, the poller."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import pytest

from serving.model import (
    ChampionSource,
    FleetScorer,
    ModelProvider,
    UriSource,
    alias_of,
    make_scorer,
)
from smartcloudops.errors import ModelError
from smartcloudops.settings import Settings


def test_refresh_loads_once_per_version(fake_source: Any, fake_model_cls: Any) -> None:
    first, second = fake_model_cls(), fake_model_cls()
    source = fake_source({"1": first, "2": second}, version="1")
    provider = ModelProvider(source)
    assert provider.current() is None and not provider.status().ready

    assert provider.refresh() is True
    scorer = provider.current()
    assert scorer is not None and scorer.version == "1" and scorer.run_id == "run-1"
    assert provider.refresh() is False  # same version: no reload
    assert source.loads == 1 and provider.current() is scorer

    source.version = "2"
    assert provider.refresh() is True
    assert provider.current().version == "2"  # type: ignore[union-attr]
    assert scorer.version == "1"  # the old object is untouched: in-flight requests keep it
    status = provider.status()
    assert (status.loads, status.load_failures, status.last_error) == (2, 0, None)


def test_failed_load_keeps_the_old_model_then_recovers(fake_source: Any, fake_model_cls: Any) -> None:
    source = fake_source({"1": fake_model_cls(), "2": fake_model_cls()}, version="1")
    provider = ModelProvider(source)
    provider.refresh()
    source.version, source.load_error = "2", OSError("disk full")

    assert provider.refresh() is False
    status = provider.status()
    assert status.ready and status.model_version == "1"
    assert status.last_error is not None and "disk full" in status.last_error and "(2)" in status.last_error
    assert status.load_failures == 1 and status.last_error_at is not None

    source.load_error = None
    assert provider.refresh() is True
    assert provider.status().model_version == "2" and provider.status().last_error is None


def test_registry_outage_keeps_the_old_model(fake_source: Any, fake_model: Any) -> None:
    source = fake_source({"1": fake_model}, version="1")
    provider = ModelProvider(source)
    provider.refresh()
    source.resolve_error = ConnectionError("registry down")
    assert provider.refresh() is False
    assert provider.current().version == "1"  # type: ignore[union-attr]
    assert "registry down" in (provider.status().last_error or "")
    source.resolve_error = None
    provider.refresh()
    assert provider.status().last_error is None  # same version again: the error clears


def test_a_model_that_cannot_score_the_probe_is_refused(fake_source: Any, fake_model: Any) -> None:
    class Broken:
        def score(self, frame: pd.DataFrame) -> pd.DataFrame:
            raise ValueError("feature mismatch")

    source = fake_source({"1": fake_model, "2": Broken(), "3": object()}, version="1")
    provider = ModelProvider(source)
    provider.refresh()
    source.version = "2"
    assert provider.refresh() is False
    assert provider.current().version == "1"  # type: ignore[union-attr]
    assert "feature mismatch" in (provider.status().last_error or "")
    source.version = "3"
    assert provider.refresh() is False
    assert "no score(frame) method" in (provider.status().last_error or "")


def test_not_ready_reason_names_the_problem(fake_source: Any) -> None:
    provider = ModelProvider(fake_source({}, version=None))
    assert provider.status().reason == "no model loaded yet from fake:champion"
    provider.refresh()
    status = provider.status()
    assert not status.ready and status.reason is not None and "no champion registered" in status.reason
    assert status.to_dict()["reason"] == status.reason


def test_repeated_failure_is_logged_once(
    fake_source: Any, fake_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source = fake_source({"1": fake_model}, version="1")
    source.load_error = OSError("nope")
    provider = ModelProvider(source)
    with caplog.at_level(logging.DEBUG, logger="serving.model"):
        for _ in range(3):
            provider.refresh()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "nope" in errors[0].getMessage()
    assert provider.status().load_failures == 3


def test_swap_is_logged_with_versions(
    fake_source: Any, fake_model_cls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    source = fake_source({"1": fake_model_cls(), "2": fake_model_cls()}, version="1")
    provider = ModelProvider(source)
    with caplog.at_level(logging.INFO, logger="serving.model"):
        provider.refresh()
        source.version = "2"
        provider.refresh()
    swap = caplog.records[-1]
    assert swap.model_version == "2" and swap.previous_version == "1"  # type: ignore[attr-defined]


def test_poller_follows_the_source_and_stops(fake_source: Any, fake_model_cls: Any) -> None:
    source = fake_source({"1": fake_model_cls(), "2": fake_model_cls()}, version="1")
    provider = ModelProvider(source, poll_seconds=0.02)
    provider.start()
    provider.start()  # idempotent
    try:
        assert provider.wait_ready(5)
        source.version = "2"
        deadline = time.monotonic() + 5
        while provider.status().model_version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert provider.status().model_version == "2"
        assert provider.status().polling
    finally:
        provider.stop()
    assert not provider.status().polling
    checks = source.resolves
    time.sleep(0.1)
    assert source.resolves == checks  # stopped means stopped


def test_static_provider_is_ready_at_once_and_rejects_a_broken_model(fake_model: Any) -> None:
    provider = ModelProvider.static(fake_model, version=4)
    assert provider.current() is not None and provider.current().version == "4"  # type: ignore[union-attr]
    with pytest.raises(ModelError, match="no score"):
        ModelProvider.static(object())


def test_make_scorer_wraps_a_fleet_model(fake_model: Any) -> None:
    from serving.model import Loaded

    scorer = make_scorer(Loaded(model=fake_model, version=12, run_id="abc"), "src")
    assert isinstance(scorer, FleetScorer)
    assert (scorer.version, scorer.run_id, scorer.source) == ("12", "abc", "src")


def test_from_settings_picks_champion_or_the_given_uri(tmp_path: Any) -> None:
    settings = Settings(home=tmp_path, registered_model="m", model_poll_seconds=3)
    champion = ModelProvider.from_settings(settings)
    assert isinstance(champion.source, ChampionSource)
    assert champion.source.describe() == "models:/m@champion" and champion.poll_seconds == 3
    pinned = ModelProvider.from_settings(settings, model_uri="models:/m/3")
    assert isinstance(pinned.source, UriSource)
    assert pinned.source.resolve() == "models:/m/3"  # a pinned URI never changes: loaded once


def test_alias_uris_are_followed() -> None:
    assert alias_of("models:/m@challenger") == ("m", "challenger")
    assert alias_of("models:/m/3") is None
    assert alias_of("runs:/abc/model") is None


def test_champion_source_never_creates_a_missing_sqlite_store(tmp_path: Any) -> None:
    db = tmp_path / "mlflow.db"
    source = ChampionSource(f"sqlite:///{db}", "nothing-here")
    with pytest.raises(ModelError, match="no MLflow database"):
        source.resolve()
    assert not db.exists()


def test_champion_source_without_the_alias_is_a_model_error(tmp_path: Any) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_registered_model("m")
    with pytest.raises(ModelError, match="no 'champion' alias for model 'm'"):
        ChampionSource(uri, "m").resolve()


def test_poll_seconds_must_be_positive(fake_source: Any) -> None:
    with pytest.raises(ValueError):
        ModelProvider(fake_source(), poll_seconds=0)


def test_poller_backs_off_from_a_version_that_failed_to_load(fake_source: Any, fake_model: Any) -> None:
    source = fake_source({"1": fake_model, "2": fake_model}, version="1")
    provider = ModelProvider(source, poll_seconds=60)
    provider.refresh()
    source.version, source.load_error = "2", OSError("corrupt artifact")
    assert provider.refresh(force=False) is False
    assert provider.refresh(force=False) is False  # within the backoff: not even tried
    assert source.loads == 2 and provider.status().load_failures == 1
    source.load_error = None
    assert provider.refresh() is True  # an explicit refresh always tries
    assert provider.status().model_version == "2"
