"""Typed settings, read once from ``SMARTCLOUDOPS_*`` environment variables.

Every component asks :func:`get_settings` instead of reading ``os.environ`` itself, so a
newcomer finds every knob in this one class. Reading settings never connects to anything:
URLs are only strings until a component opens them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from smartcloudops.errors import ConfigError

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ConfigError, ValueError):
    """An environment variable holds a value the settings cannot accept.

    Also a ``ValueError``, as pydantic's ValidationError was, so callers written against
    that keep working.
    """


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMARTCLOUDOPS_", extra="ignore")

    # -- where state lives (embedded default) -------------------------------------------
    home: Path = Field(default=Path(".smartcloudops"), description="Root of all local state.")

    # -- metrics --------------------------------------------------------------------------
    prometheus_url: str | None = Field(
        default=None,
        # PROMETHEUS_URL is the name operators already use; accept it unprefixed too.
        validation_alias=AliasChoices("SMARTCLOUDOPS_PROMETHEUS_URL", "PROMETHEUS_URL"),
        description="Prometheus base URL; unset means read the built-in fleet simulator.",
    )
    metrics_bucket: str | None = Field(
        default=None, description="S3 bucket for metric partitions; unset keeps them local."
    )
    metrics_prefix: str = "metrics"
    s3_endpoint_url: str | None = Field(
        default=None, description="Custom S3 endpoint (e.g. moto on loopback in tests)."
    )
    aws_region: str = "us-east-1"
    step_seconds: int = Field(default=60, ge=1, le=3600, description="Sample resolution.")
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    # -- simulator ------------------------------------------------------------------------
    sim_hosts: str = "web-1,web-2,app-1,db-1,db-2"
    sim_seed: int = 7
    sim_port: int = Field(default=9201, ge=1, le=65535, description="First per-host port.")

    # -- learning -------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Unset: SQLite under home (embedded default)."
    )
    mlflow_experiment: str = "smartcloudops-anomaly"
    registered_model: str = "smartcloudops-anomaly-detector"
    f1_gate: float = Field(default=0.85, ge=0.0, le=1.0)
    train_days: float = Field(default=7.0, gt=0)

    # -- detect / serve -------------------------------------------------------------------
    scoring_url: str = "http://127.0.0.1:8080"
    scoring_host: str = "127.0.0.1"
    scoring_port: int = Field(default=8080, ge=1, le=65535)
    model_poll_seconds: float = Field(default=10.0, gt=0)
    scoring_context_minutes: int = Field(
        default=150,
        ge=1,
        le=24 * 60,
        description="History the sensor sends per host with each pass: detectors judge the "
        "newest samples against it (a freshly started scoring service has none of its own).",
    )

    # -- act ------------------------------------------------------------------------------
    dry_run: bool = Field(default=True, description="Remediation only logs unless False.")
    rules_file: Path | None = Field(default=None, description="Unset: the packaged rules.")
    event_store_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset: SQLite under home."
    )
    audit_retention_days: int = Field(default=90, ge=1)
    remediation_settle_seconds: float = Field(
        default=0.0, ge=0, description="Wait before re-checking a fixed condition."
    )
    approval_ttl_minutes: float = Field(
        default=30.0, gt=0, description="Pending approvals expire after this long."
    )

    # -- explain --------------------------------------------------------------------------
    chatops_host: str = "127.0.0.1"
    chatops_port: int = Field(default=8090, ge=1, le=65535)
    chatops_tokens: SecretStr | None = Field(
        default=None, description="Comma-separated bearer tokens accepted by the ChatOps API."
    )
    llm_model: str | None = Field(default=None, description="LiteLLM model name; unset: no LLM.")
    redis_url: str | None = None
    slack_signing_secret: SecretStr | None = None

    # -- logging --------------------------------------------------------------------------
    log_level: str = "INFO"

    # -- chatops: Slack approvals, rate limit (added for issue 6) --------------------------
    # Slack proves a request came from the workspace, not that the person may decide a
    # remediation: approve/reject from Slack needs the user's id listed here. Empty: nobody.
    slack_approvers: str | None = Field(
        default=None, description="Comma-separated Slack user ids (U…) allowed to approve/reject."
    )

    # Per bearer token (or Slack user) per minute; 0 turns the limit off (benchmarks).
    chatops_rate_limit_per_minute: int = Field(default=300, ge=0, le=1_000_000)

    def slack_approver_list(self) -> list[str]:
        return [u.strip() for u in (self.slack_approvers or "").split(",") if u.strip()]

    # -- remediation safety rails (issue 5; added by the remediation owner) ----------------
    # Safe defaults: every rail is on. 0 actions disables the breaker; share 1.0 disables
    # the blast-radius cap; an empty window list means no maintenance window.
    remediation_rate_limit_actions: int = Field(
        default=10, ge=0, description="Automatic actions per rate window before the circuit "
        "breaker opens (0: no breaker)."
    )
    remediation_rate_limit_window_minutes: float = Field(default=10.0, gt=0)
    remediation_breaker_open_minutes: float = Field(
        default=30.0, gt=0, description="How long an opened circuit breaker blocks actions."
    )
    remediation_blast_radius_share: float = Field(
        default=0.4, gt=0, le=1.0, description="Largest share of the fleet automatic actions "
        "may touch per blast-radius window (1.0: no cap)."
    )
    remediation_blast_radius_window_minutes: float = Field(default=60.0, gt=0)
    remediation_maintenance_windows: str = Field(
        default="", description="';'-separated windows that suppress automatic actions, UTC: "
        "'2026-11-22T02:00Z/2026-11-22T04:00Z' (one-off, ISO 8601), 'daily 02:00-03:00', "
        "'sat,sun 00:00-06:00', 'mon-fri 22:00-02:00'; append '@web-*,db-1' to limit a "
        "window to hosts (globs)."
    )
    remediation_adapter: Literal["simulator", "local", "aws"] = Field(
        default="simulator", description="Where actions land: the built-in simulator, this "
        "machine (allowlisted argv commands) or AWS (Auto Scaling + SSM)."
    )
    remediation_adapter_config: Path | None = Field(
        default=None, description="YAML for the local adapter (hosts, allowlist; unset: "
        "systemd's app.service on this host) or the AWS adapter (targets: host -> asg, "
        "instance_id; required)."
    )
    remediation_aws_endpoint_url: str | None = Field(
        default=None, description="Custom AWS endpoint for Auto Scaling and SSM (moto in tests)."
    )
    remediation_locks: Literal["events", "redis"] = Field(
        default="events", description="Where the engine's short-lived locks live: the event "
        "store, or Redis (SMARTCLOUDOPS_REDIS_URL) in service mode. Incident claims always stay "
        "in the event store (durable)."
    )

    @field_validator("prometheus_url", "metrics_bucket", "mlflow_tracking_uri", "redis_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        # logging.setLevel("LOUD") would only fail later, with a traceback, in every process
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return level

    # -- derived paths: one place decides the layout under home --------------------------
    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def audit_dir(self) -> Path:
        return self.log_dir / "remediation"

    @property
    def metrics_dir(self) -> Path:
        return self.home / "data"

    @property
    def simulator_dir(self) -> Path:
        return self.home / "simulator"

    @property
    def labels_file(self) -> Path:
        return self.simulator_dir / "labels.json"

    @property
    def resolved_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.home / "mlflow" / "artifacts").resolve()

    @property
    def resolved_event_store_url(self) -> str:
        if self.event_store_url:
            return self.event_store_url
        return f"sqlite:///{(self.home / 'events.db').resolve()}"

    @property
    def host_list(self) -> list[str]:
        return [h.strip() for h in self.sim_hosts.split(",") if h.strip()]

    def chatops_token_list(self) -> list[str]:
        if self.chatops_tokens is None:
            return []
        return [t.strip() for t in self.chatops_tokens.get_secret_value().split(",") if t.strip()]


def _describe(exc: ValidationError) -> str:
    """One line per bad variable, named as the operator wrote it (never echoing secrets)."""
    secret = {name for name, f in Settings.model_fields.items() if "SecretStr" in repr(f.annotation)}
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = field.upper()
        if not name.startswith("SMARTCLOUDOPS_"):
            name = f"SMARTCLOUDOPS_{name}"
        shown = "" if field in secret else f" (got {error.get('input')!r})"
        problems.append(f"{name}: {error['msg']}{shown}")
    return "invalid settings: " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings. Tests call ``get_settings.cache_clear()`` after changing env.

    Raises:
        SettingsError: an ``SMARTCLOUDOPS_*`` variable is malformed; the message names it.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
