"""Run the ChatOps API under gunicorn (``smartcloudops chatops --host --port``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from chatops.app import close_app, create_app
from smartcloudops.logs import configure_logging
from smartcloudops.settings import Settings, get_settings

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, app: Flask, options: Mapping[str, Any]) -> None:
        self._app = app
        self._options = dict(options)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def run(
    host: str | None = None,
    port: int | None = None,
    workers: int = 2,
    *,
    threads: int | None = None,
    timeout_seconds: int = 60,
    settings: Settings | None = None,
    allow_no_auth: bool = False,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. Blocks.

    The app is built here, before gunicorn forks, so a bad configuration (no tokens, say)
    fails at once with a clear message instead of in every worker. Nothing is connected
    yet at that point -- resources open lazily inside each worker.
    """
    # litellm fetches a price map over the network on import unless told not to (NOTES.md).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # MLflow's HTTP client otherwise retries an unreachable server for minutes; /status and
    # "model status" should say "unavailable" within seconds instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    settings = settings or get_settings()
    configure_logging("chatops", settings)
    app = create_app({**(config or {}), "SETTINGS": settings, "ALLOW_NO_AUTH": allow_no_auth})
    if threads is None:
        # Without an LLM every question is short CPU work under one GIL: more threads per
        # worker only queue for it (bench: 4 threads cost ~35 % more CPU per request than
        # 2, and a worse p95). With an LLM, requests mostly wait on the provider: more threads.
        threads = 4 if (config or {}).get("LLM_MODEL") or settings.llm_model else 2
    bind_host = host or settings.chatops_host
    bind_port = port or settings.chatops_port

    def worker_exit(server: Any, worker: Any) -> None:
        close_app(app)

    options = {
        "bind": f"{bind_host}:{bind_port}",
        "workers": max(1, int(workers)),
        "worker_class": "gthread",
        "threads": max(1, int(threads)),
        # Longer than one LLM call with its retry, so a slow provider does not kill workers.
        "timeout": timeout_seconds,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,  # each query is logged as one JSON line by the app itself
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "smartcloudops-chatops",
        "worker_exit": worker_exit,
        # Request line and header limits: bodies are capped by MAX_CONTENT_LENGTH in the app.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
    }
    log.info("starting ChatOps", extra={"bind": options["bind"], "workers": options["workers"]})
    try:
        _Gunicorn(app, options).run()
    finally:
        close_app(app)
