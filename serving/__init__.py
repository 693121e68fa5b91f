"""The scoring service: model loading, fast scoring, HTTP API.

Modules, lightest first: ``client`` (httpx only; what the anomaly sensor imports),
``schema`` (request decoding and validation), ``metrics`` (Prometheus text), ``model``
(model sources, the hot-swapping provider, the scorer seam), ``fast`` (the numpy scorers),
``app`` (the ASGI app factory), ``server`` (uvicorn entry point), ``loader`` (run as a
short-lived child process: loads a registered model through MLflow and hands the service a
compiled plan (numpy and numba), so the service process never imports MLflow, pandas or
scikit-learn for an Isolation-Forest model). This package imports nothing at import time so
that ``serving.client`` stays cheap for DAG files.
"""
