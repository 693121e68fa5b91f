"""The HTTP API through Starlette's TestClient, with a fake FleetModel."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from serving.app import create_app
from serving.model import ModelProvider
from serving.schema import MAX_BATCH_ROWS
from smartcloudops.settings import Settings

JSON = {"content-type": "application/json"}


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(home=tmp_path, model_poll_seconds=0.05)


@pytest.fixture
def client(settings: Settings, fake_model: Any) -> Iterator[TestClient]:
    app = create_app(settings, model_provider=ModelProvider.static(fake_model, version="3", run_id="r1"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_single_row_is_scored(client: TestClient) -> None:
    response = client.post("/v1/score", json={"host": "web-1", "timestamp": "2024-05-01T12:00:00Z",
                                              "metrics": {"cpu": 97.5, "memory": 40}})  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "results": [
            {"host": "web-1", "timestamp": "2024-05-01T12:00:00Z", "anomaly": True, "score": 0.975,
             "severity": "critical", "model_version": "3", "contributions": {"cpu": 0.975, "memory": 0.0}}
        ]
    }  # fmt: skip


def test_batch_results_follow_request_order(
    client: TestClient, make_row: Callable[..., dict[str, Any]]
) -> None:
    rows = [make_row(f"h{i}", cpu=i / 2) for i in range(100)]
    rows[42]["metrics"] = {"cpu": 99.0}
    response = client.post("/v1/score", json={"instances": rows})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["host"] for r in results] == [f"h{i}" for i in range(100)]
    assert [r["anomaly"] for r in results].count(True) == 1 and results[42]["anomaly"] is True
    assert results[42]["severity"] == "critical" and results[41]["severity"] is None
    assert {r["model_version"] for r in results} == {"3"}


def test_model_receives_the_wide_frame_contract(client: TestClient, fake_model: Any) -> None:
    client.post("/v1/score", json={"host": "db-1", "metrics": {"disk": 91}})
    frame = fake_model.frames[-1]
    assert list(frame.columns) == [
        "timestamp",
        "host",
        "cpu",
        "memory",
        "disk",
        "load",
        "network_in",
        "network_out",
    ]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame.loc[0, "host"] == "db-1" and frame.loc[0, "disk"] == 91.0
    assert frame["cpu"].isna().all()


def test_missing_timestamp_defaults_to_now_utc(client: TestClient) -> None:
    result = client.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}}).json()["results"][0]
    assert result["timestamp"].endswith("Z")


def test_large_batch_is_scored_off_the_event_loop(
    settings: Settings, fake_model: Any, make_row: Callable[..., dict[str, Any]]
) -> None:
    app = create_app(settings, model_provider=ModelProvider.static(fake_model), offload_body_bytes=1)
    with TestClient(app) as c:
        response = c.post("/v1/score", json={"instances": [make_row(cpu=95.0)] * 10})
    assert response.status_code == 200 and len(response.json()["results"]) == 10


# -- bad input: one table, each row -> status, code, field -------------------------------

ROW = b'{"host": "a", "metrics": {"cpu": 1}}'
BAD_INPUTS: list[tuple[str, bytes, dict[str, str], int, str, str | None]] = [
    ("malformed json", b'{"host": "a", "metrics": {', JSON, 400, "malformed_json", None),
    ("empty body", b"", JSON, 400, "malformed_json", None),
    ("NaN literal", b'{"host": "a", "metrics": {"cpu": NaN}}', JSON, 400, "malformed_json", None),
    ("trailing garbage", b'{"host": "a", "metrics": {"cpu": 1}} x', JSON, 400, "malformed_json", None),
    ("not utf-8", b'{"host": "\xff", "metrics": {"cpu": 1}}', JSON, 400, "malformed_json", None),
    ("body is an array", b"[1, 2]", JSON, 422, "invalid_body", None),
    ("body is a string", b'"hello"', JSON, 422, "invalid_body", None),
    ("empty object", b"{}", JSON, 422, "missing_field", "host"),
    ("no metrics", b'{"host": "a"}', JSON, 422, "missing_field", "metrics"),
    ("empty metrics", b'{"host": "a", "metrics": {}}', JSON, 422, "missing_metric", "metrics"),
    ("all metrics null", b'{"host": "a", "metrics": {"cpu": null}}', JSON, 422, "missing_metric", "metrics"),
    ("host not a string", b'{"host": 7, "metrics": {"cpu": 1}}', JSON, 422, "invalid_field", "host"),
    ("empty host", b'{"host": "", "metrics": {"cpu": 1}}', JSON, 422, "invalid_field", "host"),
    ("metric as string", b'{"host": "a", "metrics": {"cpu": "9"}}', JSON, 422, "invalid_field",
     "metrics.cpu"),
    ("metric as bool", b'{"host": "a", "metrics": {"cpu": true}}', JSON, 422, "invalid_field", "metrics.cpu"),
    ("metric overflow", b'{"host": "a", "metrics": {"cpu": 1e999}}', JSON, 422, "non_finite", "metrics.cpu"),
    ("unknown metric", b'{"host": "a", "metrics": {"cpux": 1}}', JSON, 422, "unknown_metric", "metrics.cpux"),
    ("metrics not object", b'{"host": "a", "metrics": [1]}', JSON, 422, "invalid_field", "metrics"),
    ("unknown top field", b'{"host": "a", "metrics": {"cpu": 1}, "x": 1}', JSON, 422, "unknown_field", "x"),
    ("bad timestamp", b'{"host": "a", "metrics": {"cpu": 1}, "timestamp": "yesterday"}', JSON, 422,
     "invalid_field", "timestamp"),
    ("timestamp bool", b'{"host": "a", "metrics": {"cpu": 1}, "timestamp": true}', JSON, 422,
     "invalid_field", "timestamp"),
    ("timestamp out of range", b'{"host": "a", "metrics": {"cpu": 1}, "timestamp": 1e300}', JSON, 422,
     "invalid_field", "timestamp"),
    ("timestamp past int64 nanoseconds", b'{"host": "a", "metrics": {"cpu": 1}, '
     b'"timestamp": "2300-01-01T00:00:00Z"}', JSON, 422, "invalid_field", "timestamp"),
    ("batch timestamp before 1678", b'{"instances": [' + ROW + b', {"host": "a", "metrics": {"cpu": 1}, '
     b'"timestamp": "1600-01-01T00:00:00Z"}]}', JSON, 422, "invalid_field", "instances[1].timestamp"),
    ("empty batch", b'{"instances": []}', JSON, 422, "empty_batch", "instances"),
    ("instances not list", b'{"instances": {"host": "a"}}', JSON, 422, "invalid_field", "instances"),
    ("row and instances", b'{"host": "a", "instances": [{"host": "a", "metrics": {"cpu": 1}}]}', JSON, 422,
     "invalid_field", "instances"),
    ("batch row type error", b'{"instances": [' + ROW + b", " + ROW + b", " + ROW
     + b', {"host": "b", "metrics": {"cpu": "x"}}]}', JSON, 422, "invalid_field", "instances[3].metrics.cpu"),
    ("batch row unknown metric", b'{"instances": [{"host": "a", "metrics": {"cpu": 1, "gpu": 2}}]}', JSON,
     422, "unknown_metric", "instances[0].metrics.gpu"),
    ("batch row missing host", b'{"instances": [{"metrics": {"cpu": 1}}]}', JSON, 422,
     "missing_field", "instances[0].host"),
    ("batch row missing metrics", b'{"instances": [' + ROW + b', {"host": "a"}]}', JSON,
     422, "missing_field", "instances[1].metrics"),
    ("batch row empty metrics", b'{"instances": [' + ROW + b', {"host": "b", "metrics": {}}]}',
     JSON, 422, "missing_metric", "instances[1].metrics"),
    ("batch row overflow", b'{"instances": [{"host": "a", "metrics": {"load": -1e400}}]}', JSON, 422,
     "non_finite", "instances[0].metrics.load"),
    ("batch row not object", b'{"instances": [5]}', JSON, 422, "invalid_field", "instances[0]"),
    ("no content type", b'{"host": "a", "metrics": {"cpu": 1}}', {}, 415, "unsupported_media_type", None),
    ("form content type", b"host=a", {"content-type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type", None),
    ("text content type", b'{"host": "a", "metrics": {"cpu": 1}}', {"content-type": "text/plain"}, 415,
     "unsupported_media_type", None),
    ("latin-1 charset", b'{"host": "a", "metrics": {"cpu": 1}}',
     {"content-type": "application/json; charset=latin-1"}, 415, "unsupported_media_type", None),
    ("gzip encoding", b"\x1f\x8b", {**JSON, "content-encoding": "gzip"}, 415, "unsupported_media_type", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "field"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_answers_4xx_json_naming_the_field(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, code: str, field: str | None
) -> None:
    response = client.post("/v1/score", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert isinstance(error["message"], str) and error["message"]


def test_unknown_metric_message_lists_the_valid_names(client: TestClient) -> None:
    error = client.post("/v1/score", json={"host": "a", "metrics": {"cpuu": 1}}).json()["error"]
    assert "cpuu" in error["message"] and "network_out" in error["message"]


def test_json_charset_and_vendor_json_types_are_accepted(client: TestClient) -> None:
    body = b'{"host": "a", "metrics": {"cpu": 1}}'
    for ctype in (
        "application/json; charset=utf-8",
        "application/vnd.smartcloudops+json",
        "Application/JSON",
    ):
        assert client.post("/v1/score", content=body, headers={"content-type": ctype}).status_code == 200


def test_over_limit_batch_is_413(client: TestClient) -> None:
    rows = [{"host": "a", "metrics": {"cpu": 1.0}}] * (MAX_BATCH_ROWS + 1)
    response = client.post("/v1/score", json={"instances": rows})
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "batch_too_large",
        "message": f"batch has {MAX_BATCH_ROWS + 1} rows; the limit is {MAX_BATCH_ROWS} per request",
        "field": "instances",
    }


def test_batch_at_the_limit_is_scored(client: TestClient) -> None:
    rows = [{"host": "a", "metrics": {"cpu": 1.0}}] * MAX_BATCH_ROWS
    response = client.post("/v1/score", json={"instances": rows})
    assert response.status_code == 200 and len(response.json()["results"]) == MAX_BATCH_ROWS


def test_body_over_byte_limit_is_413_declared_or_chunked(settings: Settings, fake_model: Any) -> None:
    app = create_app(settings, model_provider=ModelProvider.static(fake_model), max_body_bytes=100)
    body = json.dumps({"host": "a" * 200, "metrics": {"cpu": 1}}).encode()
    with TestClient(app) as c:
        declared = c.post("/v1/score", content=body, headers=JSON)
        chunked = c.post("/v1/score", content=iter([body[:50], body[50:]]), headers=JSON)
        small = c.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"
    assert "transfer-encoding" not in declared.request.headers
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert small.status_code == 200


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/score", 405, "method_not_allowed"),
    ("POST", "/healthz", 405, "method_not_allowed"),
    ("GET", "/nope", 404, "not_found"),
])  # fmt: skip
def test_unknown_routes_and_methods_answer_json(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_model_failure_is_a_json_500_not_a_traceback(settings: Settings) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def score(self, frame: Any) -> Any:
            self.calls += 1
            if self.calls > 1:  # let the load-time probe pass
                raise RuntimeError("tree walk exploded")
            import pandas as pd

            return pd.DataFrame({"score": [0.0], "anomaly": [False]})

    app = create_app(settings, model_provider=ModelProvider.static(Broken(), version="9"))
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "model_error" and "tree walk exploded" in error["message"]


def test_model_returning_wrong_row_count_is_a_model_error(settings: Settings) -> None:
    import pandas as pd

    class Short:
        def score(self, frame: Any) -> Any:
            return pd.DataFrame({"score": [0.1], "anomaly": [False]})  # always one row

    app = create_app(settings, model_provider=ModelProvider.static(Short()))
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/score", json={"instances": [{"host": "a", "metrics": {"cpu": 1}}] * 2})
    assert response.status_code == 500 and response.json()["error"]["code"] == "model_error"


# -- readiness and lifecycle ----------------------------------------------------------------


def test_healthz_is_always_ok_and_readyz_waits_for_a_model(
    settings: Settings, fake_source: Any, fake_model: Any
) -> None:
    source = fake_source({"5": fake_model}, version=None)  # nothing registered yet
    provider = ModelProvider(source, poll_seconds=0.05)
    app = create_app(settings, model_provider=provider)
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        not_ready = c.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["ready"] is False and "no champion registered" in not_ready.json()["reason"]
        refused = c.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
        assert refused.headers["retry-after"] == "5"

        source.version = "5"  # the champion alias is set
        assert provider.wait_ready(5.0)
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "reason": None, "model_version": "5", "last_error": None}
        scored = c.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}})
        assert scored.status_code == 200 and scored.json()["results"][0]["model_version"] == "5"


def test_poller_starts_with_the_app_lifespan_not_at_construction(
    settings: Settings, fake_source: Any, fake_model: Any
) -> None:
    source = fake_source({"1": fake_model}, version="1")
    provider = ModelProvider(source, poll_seconds=0.05)
    app = create_app(settings, model_provider=provider)
    assert source.resolves == 0 and not provider.status().polling
    with TestClient(app) as c:
        assert provider.wait_ready(5.0)
        assert provider.status().polling
        assert c.get("/v1/model").json()["model_version"] == "1"
    assert not provider.status().polling


def test_default_provider_follows_settings_without_connecting_at_construction(settings: Settings) -> None:
    app = create_app(settings)
    provider = app.state.provider
    assert provider.source.describe() == "models:/smartcloudops-anomaly-detector@champion"
    assert not provider.status().polling and provider.current() is None


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def test_metrics_exposes_latency_rows_anomalies_and_model_version(client: TestClient) -> None:
    client.post("/v1/score", json={"instances": [{"host": "a", "metrics": {"cpu": 99}},
                                                 {"host": "b", "metrics": {"cpu": 92}},
                                                 {"host": "c", "metrics": {"cpu": 10}}]})  # fmt: skip
    client.post("/v1/score", content=b"{", headers=JSON)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    latency = "smartcloudops_scoring_request_duration_seconds"
    assert f"# TYPE {latency} histogram" in text
    assert sample(text, f"{latency}_count", route="/v1/score", status="200") == 1
    assert sample(text, f"{latency}_count", route="/v1/score", status="400") == 1
    assert sample(text, f"{latency}_bucket", route="/v1/score", status="200", le="+Inf") == 1
    assert sample(text, "smartcloudops_scoring_rows_scored_total") == 3
    assert sample(text, "smartcloudops_scoring_anomalies_total", severity="critical") == 1
    assert sample(text, "smartcloudops_scoring_anomalies_total", severity="high") == 1
    assert sample(text, "smartcloudops_scoring_model_info", version="3", run_id="r1", source="static:3") == 1
    assert sample(text, "smartcloudops_scoring_model_loaded") == 1
    assert sample(text, "smartcloudops_scoring_model_loads_total") == 1
    assert sample(text, "smartcloudops_scoring_model_load_failures_total") == 0


def test_metrics_before_any_model(settings: Settings, fake_source: Any) -> None:
    provider = ModelProvider(fake_source({}, version=None), poll_seconds=60)
    with TestClient(create_app(settings, model_provider=provider)) as c:
        provider.refresh()
        text = c.get("/metrics").text
    assert sample(text, "smartcloudops_scoring_model_loaded") == 0
    assert sample(text, "smartcloudops_scoring_model_info") is None
    assert sample(text, "smartcloudops_scoring_model_load_error") == 1


def test_failed_reload_is_reported_while_the_old_model_keeps_serving(
    settings: Settings, fake_source: Any, fake_model: Any
) -> None:
    source = fake_source({"1": fake_model}, version="1")
    provider = ModelProvider(source, poll_seconds=60)
    assert provider.refresh()
    app = create_app(settings, model_provider=provider)
    with TestClient(app) as c:
        source.version = "2"
        source.load_error = OSError("artifact store unreachable")
        assert provider.refresh() is False
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["model_version"] == "1"
        assert "artifact store unreachable" in ready.json()["last_error"]
        metrics = c.get("/metrics").text
        assert sample(metrics, "smartcloudops_scoring_model_load_failures_total") == 1
        error = "loading fake:champion (2) failed: artifact store unreachable"
        assert sample(metrics, "smartcloudops_scoring_model_load_error", error=error) == 1
        assert sample(metrics, "smartcloudops_scoring_model_info", version="1") == 1
        assert (
            c.post("/v1/score", json={"host": "a", "metrics": {"cpu": 1}}).json()["results"][0][
                "model_version"
            ]
            == "1"
        )
