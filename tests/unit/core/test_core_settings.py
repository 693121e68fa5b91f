"""Settings: SMARTCLOUDOPS_* variables, the PROMETHEUS_URL alias, caching, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartcloudops.errors import ConfigError, SmartCloudOpsError
from smartcloudops.settings import Settings, SettingsError, get_settings


def test_defaults_hang_off_home(isolated_home: Path) -> None:
    settings = get_settings()
    assert settings.home == isolated_home
    assert settings.prometheus_url is None
    assert settings.metrics_bucket is None
    assert settings.dry_run is True
    assert settings.host_list == ["web-1", "web-2", "app-1", "db-1", "db-2"]
    assert settings.log_dir == isolated_home / "logs"
    assert settings.audit_dir == isolated_home / "logs" / "remediation"
    assert settings.resolved_event_store_url.startswith("sqlite:///")
    assert settings.resolved_event_store_url.endswith("events.db")
    assert settings.resolved_tracking_uri.startswith("sqlite:///")


def test_env_prefix_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCLOUDOPS_STEP_SECONDS", "30")
    monkeypatch.setenv("SMARTCLOUDOPS_SIM_HOSTS", " web-9 , db-7,,")
    monkeypatch.setenv("SMARTCLOUDOPS_DRY_RUN", "false")
    monkeypatch.setenv("SMARTCLOUDOPS_CHATOPS_TOKENS", "t1, t2")
    # an unprefixed name is not ours
    monkeypatch.setenv("STEP_SECONDS", "5")
    settings = Settings()
    assert settings.step_seconds == 30
    assert settings.host_list == ["web-9", "db-7"]
    assert settings.dry_run is False
    assert settings.chatops_token_list() == ["t1", "t2"]
    assert "t1" not in repr(settings)  # secrets stay out of reprs and logs


@pytest.mark.parametrize("name", ["PROMETHEUS_URL", "SMARTCLOUDOPS_PROMETHEUS_URL"])
def test_prometheus_url_alias(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "http://127.0.0.1:9090")
    assert Settings().prometheus_url == "http://127.0.0.1:9090"


def test_blank_prometheus_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_URL", "")
    assert Settings().prometheus_url is None


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    assert get_settings() is first
    monkeypatch.setenv("SMARTCLOUDOPS_SIM_SEED", "99")
    assert get_settings().sim_seed == first.sim_seed  # read once per process
    get_settings.cache_clear()
    assert get_settings().sim_seed == 99


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMARTCLOUDOPS_STEP_SECONDS", "abc"),
        ("SMARTCLOUDOPS_STEP_SECONDS", "0"),
        ("SMARTCLOUDOPS_CHATOPS_PORT", "70000"),
        ("SMARTCLOUDOPS_F1_GATE", "1.5"),
        ("SMARTCLOUDOPS_DRY_RUN", "maybe"),
        ("SMARTCLOUDOPS_LOG_LEVEL", "loud"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    # one tree for callers: the CLI catches SmartCloudOpsError, older code ValueError
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, SmartCloudOpsError)
    assert isinstance(info.value, ValueError)


def test_invalid_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCLOUDOPS_STEP_SECONDS", "-1")
    monkeypatch.setenv("SMARTCLOUDOPS_CHATOPS_TOKENS", "s3cr3t-token")
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as info:
        get_settings()
    assert "s3cr3t-token" not in str(info.value)


def test_log_level_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCLOUDOPS_LOG_LEVEL", " warning ")
    assert Settings().log_level == "WARNING"


def test_reading_settings_connects_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # URLs pointing at closed ports: building settings must not try them.
    monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SMARTCLOUDOPS_EVENT_STORE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/x")
    monkeypatch.setenv("SMARTCLOUDOPS_REDIS_URL", "redis://127.0.0.1:1/0")
    settings = Settings()
    assert settings.resolved_event_store_url.endswith(":1/x")
    assert settings.redis_url == "redis://127.0.0.1:1/0"
