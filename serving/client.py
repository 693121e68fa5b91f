"""A small client for the scoring service (the anomaly sensor DAG uses it).

Only httpx and the project's errors are imported at module level, so DAG files stay cheap
to parse. Failures are translated at this boundary:

- the service cannot be reached, times out, or answers something that is not the API:
  :class:`~smartcloudops.errors.SourceError`;
- the service answers with an error (no model loaded, input it refuses, model failure):
  :class:`~smartcloudops.errors.ModelError`, carrying the service's code and field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from smartcloudops.errors import ModelError, SourceError

if TYPE_CHECKING:
    import pandas as pd

#: The service's per-request row limit; larger inputs are sent in several requests.
BATCH_ROWS = 10_000


class ScoringError(ModelError):
    """The service answered with an error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"scoring service answered {status} {code}: {message}{where}")
        self.status = status
        self.code = code
        self.field = field


class ScoringClient:
    """``ScoringClient("http://127.0.0.1:8080").score([{"host", "timestamp", "metrics"}])``."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        *,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        # Connection-level retries only (refused, reset before a response): never a re-sent
        # scoring request the service may already have processed.
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport or httpx.HTTPTransport(retries=retries),
            headers={"accept": "application/json"},
        )

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- API -------------------------------------------------------------------------------

    def score(
        self, rows: Sequence[Mapping[str, Any]], *, batch_rows: int = BATCH_ROWS
    ) -> list[dict[str, Any]]:
        """Score rows ``{"host", "timestamp"?, "metrics": {...}}``; one result per row, in order.

        ``timestamp`` may be a datetime or an ISO string; metrics that are None or NaN are
        sent as missing.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        results: list[dict[str, Any]] = []
        for start in range(0, len(rows), batch_rows):
            chunk = [_row_payload(row) for row in rows[start : start + batch_rows]]
            answer = self._request("POST", "/v1/score", json={"instances": chunk})
            got = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(got, list) or len(got) != len(chunk):
                raise SourceError(f"scoring service at {self.base_url} returned a malformed answer")
            results.extend(got)
        return results

    def score_frame(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Score a long (``timestamp, host, metric, value``) or wide metric frame."""
        return self.score(rows_from_frame(frame))

    def health(self) -> bool:
        try:
            return self._client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> dict[str, Any]:
        """The /readyz body (``ready``, ``reason``, ``model_version``, ``last_error``)."""
        try:
            response = self._client.get("/readyz")
        except httpx.HTTPError as exc:
            raise SourceError(f"scoring service at {self.base_url} unreachable: {exc}") from exc
        body = _json(response, self.base_url)
        if not isinstance(body, dict) or "ready" not in body:
            raise SourceError(f"scoring service at {self.base_url} returned a malformed /readyz")
        return body

    def wait_ready(self, timeout: float, interval: float = 0.5) -> dict[str, Any]:
        """Poll /readyz until a model is loaded; raise ModelError (with the service's reason)
        or SourceError (never reachable) when ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        failure: SourceError | None = None
        while True:
            try:
                last = self.ready()
                failure = None
                if last.get("ready"):
                    return last
            except SourceError as exc:
                failure = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
        if failure is not None or last is None:
            raise SourceError(
                f"scoring service at {self.base_url} not reachable within {timeout:g}s"
            ) from failure
        raise ModelError(
            f"scoring service at {self.base_url} not ready after {timeout:g}s: {last.get('reason')}"
        )

    def model(self) -> dict[str, Any]:
        """What the service is serving (``GET /v1/model``)."""
        answer = self._request("GET", "/v1/model")
        if not isinstance(answer, dict):
            raise SourceError(f"scoring service at {self.base_url} returned a malformed /v1/model")
        return answer

    # -- plumbing --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SourceError(f"scoring service at {self.base_url} timed out on {path}") from exc
        except httpx.HTTPError as exc:
            raise SourceError(f"scoring service at {self.base_url} unreachable: {exc}") from exc
        body = _json(response, self.base_url)
        if response.is_success:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ScoringError(
                response.status_code,
                str(error.get("code", "error")),
                str(error.get("message", "")),
                error.get("field"),
            )
        raise SourceError(f"scoring service at {self.base_url} answered {response.status_code} on {path}")


def _json(response: httpx.Response, base_url: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise SourceError(
            f"scoring service at {base_url} answered {response.status_code} with a non-JSON body"
        ) from exc


def _row_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    # Light normalisation only (datetimes, NaN as missing); the service validates and its
    # 422 names the field, which ScoringError carries.
    payload: dict[str, Any] = {"host": row.get("host"), "metrics": _clean_metrics(row.get("metrics") or {})}
    timestamp = row.get("timestamp")
    if timestamp is None or timestamp != timestamp:  # None or NaT
        return payload
    payload["timestamp"] = timestamp.isoformat() if hasattr(timestamp, "isoformat") else timestamp
    return payload


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if value is None:
            continue
        # numpy and pandas scalars too; strings and bools go as they are for the service to refuse
        if hasattr(value, "__float__") and not isinstance(value, str | bool):
            number = float(value)
            if not math.isfinite(number):
                continue  # NaN is "missing"; JSON cannot carry it anyway
            value = number
        out[str(name)] = value
    return out


def rows_from_frame(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for :meth:`ScoringClient.score` from a long or wide metric frame.

    Long frames (``metric``/``value`` columns) are pivoted with
    :func:`smartcloudops.domain.long_to_wide`; rows whose metrics are all missing are
    dropped (the service refuses them).
    """
    from smartcloudops.domain import CANONICAL_METRICS, long_to_wide

    wide = long_to_wide(frame) if {"metric", "value"} <= set(frame.columns) else frame
    metrics = [m for m in CANONICAL_METRICS if m in wide.columns]
    rows: list[dict[str, Any]] = []
    for record in wide.to_dict("records"):
        values = _clean_metrics({m: record[m] for m in metrics if record.get(m) is not None})
        if values:
            rows.append(
                {"host": str(record["host"]), "timestamp": record.get("timestamp"), "metrics": values}
            )
    return rows


def iter_anomalies(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The results the model flagged."""
    return [dict(r) for r in results if r.get("anomaly")]
