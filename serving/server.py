"""Run the scoring service under uvicorn (``smartcloudops serve`` calls :func:`run`).

uvicorn is given an import string and a factory so that ``workers > 1`` works: each worker
process builds its own app, its own model provider and poller, and its own metrics. The
model URI override travels to the workers in an environment variable, because the workers
are fresh interpreters that only share the environment with the parent.
"""

from __future__ import annotations

import logging
import os
import socket

from starlette.applications import Starlette

from serving.app import create_app
from serving.model import ModelProvider
from smartcloudops.errors import ConfigError, InputError
from smartcloudops.logs import configure_logging
from smartcloudops.settings import Settings, get_settings

logger = logging.getLogger("serving.server")

#: Set by :func:`run` for its workers; empty means "follow the champion alias".
MODEL_URI_ENV = "SMARTCLOUDOPS_SERVE_MODEL_URI"

# MLflow's REST client retries for minutes by default; a poll that hangs that long would
# hide a dead registry. Bounded here, overridable from the environment.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    # NOTES.md: without it, importing mlflow next to litellm can deadlock offline.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def build_app() -> Starlette:
    """uvicorn's app factory: runs once in every worker process."""
    settings = get_settings()
    configure_logging("serving", settings, console=True)
    model_uri = os.environ.get(MODEL_URI_ENV) or None
    provider = ModelProvider.from_settings(settings, model_uri=model_uri)
    return create_app(settings, model_provider=provider)


def run(
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    model_uri: str | None = None,
    *,
    settings: Settings | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; blocks.

    Args:
        host: interface to bind; defaults to ``settings.scoring_host``.
        port: defaults to ``settings.scoring_port``.
        workers: uvicorn worker processes (each loads the model once).
        model_uri: serve this MLflow model URI (``models:/name/3``, ``runs:/<id>/model``,
            ``models:/name@alias``) instead of following the ``champion`` alias.

    Raises:
        InputError: bad workers or port.
        ConfigError: the address cannot be bound (in use, not local, no permission).
    """
    import uvicorn

    settings = settings or get_settings()
    configure_logging("serving", settings, console=True)
    host = host or settings.scoring_host
    port = settings.scoring_port if port is None else port
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if not 0 < port < 65536:
        raise InputError(f"--port must be 1-65535, got {port}")
    _check_bindable(host, port)
    if workers > 1:
        # FleetModel keeps per-host history in memory; without host affinity, successive rows
        # of one host land on different workers and each sees only part of the history.
        logger.warning(
            "serving with %d workers: each keeps its own per-host history and metrics",
            workers,
            extra={"workers": workers},
        )

    for key, value in _MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ[MODEL_URI_ENV] = model_uri or ""

    uvicorn.run(
        "serving.server:build_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Logging is ours (JSON, configured in build_app); per-request access lines would
        # cost more than scoring a row — /metrics has the request figures.
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def _check_bindable(host: str, port: int) -> None:
    """Fail with a clear message before uvicorn would log an error and exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
