"""Zero-downtime swaps: the model changes while requests are in flight.

Each VersionedModel scores every row with its own version number, so a response proves
which model computed it: it must name exactly one version, and every score must equal it
(a request that started on model N finishes on model N even if N+1 was swapped in).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from serving.app import create_app
from serving.model import ModelProvider
from smartcloudops.settings import Settings

CLIENTS = 8
SWAPS = 12


def test_swaps_under_concurrent_load_fail_no_request(
    tmp_path: Any, fake_source: Any, versioned_model: Any, live_server: Callable[[Any], Any]
) -> None:
    # delay keeps each request inside the model for a while, so swaps land mid-request.
    models = {str(v): versioned_model(v, delay=0.004) for v in range(1, SWAPS + 2)}
    source = fake_source(models, version="1")
    provider = ModelProvider(source, poll_seconds=3600)  # swaps driven by the test, not the timer
    assert provider.refresh()
    # offload_body_bytes=0: every request is scored in a worker thread, so several are
    # genuinely in flight at once while the swapper thread rebinds the model.
    app = create_app(Settings(home=tmp_path), model_provider=provider, offload_body_bytes=0)
    server = live_server(app)

    stop = threading.Event()
    started = threading.Semaphore(0)
    body = {"instances": [{"host": f"h{i}", "metrics": {"cpu": 50.0}} for i in range(5)]}

    def hammer(_: int) -> list[tuple[int, set[str], set[float]]]:
        seen: list[tuple[int, set[str], set[float]]] = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                if len(seen) == 1:
                    started.release()
                response = client.post("/v1/score", json=body)
                results = response.json().get("results", []) if response.status_code == 200 else []
                seen.append(
                    (
                        response.status_code,
                        {r["model_version"] for r in results},
                        {r["score"] for r in results},
                    )
                )
        return seen

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(hammer, i) for i in range(CLIENTS)]
        # Swap only once every client is under way (starting a client is slow on a busy box).
        for _ in range(CLIENTS):
            assert started.acquire(timeout=60)
        for version in range(2, SWAPS + 2):
            time.sleep(0.03)
            source.version = str(version)
            assert provider.refresh(), f"swap to {version} did not happen"
        time.sleep(0.03)
        stop.set()
        responses = [item for f in futures for item in f.result()]

    assert len(responses) > CLIENTS * 5
    failures = [r for r in responses if r[0] != 200]
    assert failures == []
    for _, versions, scores in responses:
        assert len(versions) == 1  # one model per response
        (version,) = versions
        assert scores == {float(version)}  # ...and it is the model that did the scoring
    served = {next(iter(v)) for _, v, _ in responses}
    assert len(served) >= 3, f"swaps were not interleaved with requests: {served}"
    assert provider.status().model_version == str(SWAPS + 1)
    assert provider.status().loads == SWAPS + 1


def test_poller_swap_while_serving_through_testclient(
    tmp_path: Any, fake_source: Any, versioned_model: Any
) -> None:
    """The same guarantee with the background poller doing the swap (no test hook)."""
    from starlette.testclient import TestClient

    source = fake_source({"1": versioned_model(1), "2": versioned_model(2)}, version="1")
    provider = ModelProvider(source, poll_seconds=0.01)
    app = create_app(Settings(home=tmp_path), model_provider=provider)

    def score_once(client: Any) -> str:
        response = client.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1.0}})
        assert response.status_code == 200
        result = response.json()["results"][0]
        assert result["score"] == float(result["model_version"])
        return str(result["model_version"])

    with TestClient(app) as client:
        assert provider.wait_ready(5)
        assert {score_once(client) for _ in range(5)} == {"1"}
        source.version = "2"  # the alias moves; only the poller notices
        seen = []
        deadline = time.monotonic() + 5
        while (not seen or seen[-1] != "2") and time.monotonic() < deadline:
            seen.append(score_once(client))
    assert seen[-1] == "2" and set(seen) <= {"1", "2"}
    # once swapped, never back
    assert seen == sorted(seen)
