"""The scoring service: model loading, fast scoring, HTTP API.

Modules, lightest first: ``client`` (httpx only; what the anomaly sensor imports),
``schema`` (request decoding and validation), ``metrics`` (Prometheus text), ``model``
(model sources, the hot-swapping provider, the scorer seam), ``app`` (the ASGI app factory),
``server`` (uvicorn entry point). This package imports nothing at import time so that
``serving.client`` stays cheap for DAG files.
"""
