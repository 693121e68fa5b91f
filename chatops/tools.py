"""Evidence fetchers: each reads one real source and returns what it found, as data.

Every fetcher returns an :data:`Evidence` dict -- ``source``, ``query`` (the query or filter
as run), ``window_start`` / ``window_end`` (UTC ISO or None), ``values`` (a list of small
dicts) -- plus ``error`` when the source could not be read. A fetcher never raises for a
source problem: the answer says "unavailable: ..." instead, because a ChatOps question must
not fail just because, say, MLflow is down.

Sources are reached through :class:`Resources`, which the Flask app opens lazily; tests pass
fakes through the same seam.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smartcloudops.domain import METRIC_UNITS, ActionRecord, ActionStatus, Anomaly
from smartcloudops.errors import InputError, ModelError, SmartCloudOpsError, StoreError

if TYPE_CHECKING:
    import pandas as pd

    from smartcloudops.labels import Label
    from smartcloudops.settings import Settings

log = logging.getLogger(__name__)

Evidence = dict[str, Any]

DEFAULT_HISTORY_MINUTES = 60
DEFAULT_LOG_LIMIT = 20
DEFAULT_ANOMALY_LIMIT = 10
DEFAULT_ACTION_LIMIT = 10
MAX_HISTORY_POINTS = 720
LOG_MESSAGE_CHARS = 300
F1_METRIC_KEYS = ("event_f1", "val_event_f1", "validation_event_f1", "f1", "event_f1_micro")
#: An alarm labelled as an incident becomes the hour around it. The operator confirms *that*
#: alarm, not when the trouble began or ended; an hour is the evaluation's false-positive
#: bucket and about the length of the simulator's incidents (25-95 minutes), so the window
#: holds the alarm with room for detection delay either side without swallowing the next
#: hour's unrelated alarms. The end is clipped at "now" (labels never reach the future).
LABEL_HALF_WIDTH = timedelta(minutes=30)
#: "the web-2 anomaly at 14:05": people round clock times; further than this is another alarm.
LABEL_AT_TOLERANCE = timedelta(minutes=10)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def evidence(
    source: str,
    query: str,
    window_start: datetime | None,
    window_end: datetime | None,
    values: list[Any],
    **extra: Any,
) -> Evidence:
    out: Evidence = {
        "source": source,
        "query": query,
        "window_start": iso(window_start),
        "window_end": iso(window_end),
        "values": values,
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def unavailable(source: str, query: str, exc: BaseException | str,
                start: datetime | None = None, end: datetime | None = None) -> Evidence:
    reason = exc if isinstance(exc, str) else _reason(exc)
    return evidence(source, query, start, end, [], error=f"unavailable: {reason}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def _round(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return round(number, 3 if abs(number) < 1000 else 1)


# ---------------------------------------------------------------------------------------
# Resources the tools read. Protocols keep chatops honest about what it uses.
# ---------------------------------------------------------------------------------------

class MetricSourceLike(Protocol):
    def query_range(self, start: datetime, end: datetime, step_seconds: int = 60,
                    hosts: Sequence[str] | None = None) -> pd.DataFrame: ...

    def latest(self, hosts: Sequence[str] | None = None) -> pd.DataFrame: ...

    def hosts(self) -> list[str]: ...


class EventStoreLike(Protocol):
    def recent_anomalies(self, limit: int = 10, since: datetime | None = None,
                         host: str | None = None) -> list[Anomaly]: ...

    def get_anomaly(self, anomaly_id: str) -> Anomaly | None: ...

    def actions(self, limit: int = 20, since: datetime | None = None, instance: str | None = None,
                status: ActionStatus | None = None) -> list[ActionRecord]: ...

    def get_action(self, action_id: str) -> ActionRecord | None: ...


class LabelStoreLike(Protocol):
    def add(self, host: Any, start: datetime | str | None, end: datetime | str | None, kind: Any, *,
            author: Any, note: Any = "", anomaly_id: Any = None,
            now: datetime | None = None) -> tuple[Label, bool]: ...

    def find(self, *, host: str | None = None, since: datetime | str | None = None,
             until: datetime | str | None = None, kind: str | None = None,
             limit: int = 100) -> list[Label]: ...

    def delete(self, label_id: str) -> bool: ...


class EngineLike(Protocol):
    def approve(self, action_id: str, by: str) -> ActionRecord: ...

    def reject(self, action_id: str, by: str, reason: str = "") -> ActionRecord: ...


LogReader = Callable[..., list[dict[str, Any]]]


@dataclass
class Resources:
    """Lazy handles to everything the tools read; each opener runs at most once."""

    settings: Settings
    open_metric_source: Callable[[], MetricSourceLike]
    open_event_store: Callable[[], EventStoreLike]
    open_engine: Callable[[], EngineLike]
    model_status: Callable[[], dict[str, Any]]
    log_reader: LogReader
    log_dir: Path
    clock: Callable[[], datetime]
    #: ``chatops.cache.RecentAnomalies`` (or None: always read the event store)
    anomaly_cache: Any = None
    #: opens a ``smartcloudops.labels.LabelStore`` (None: labels cannot be stored)
    open_label_store: Callable[[], LabelStoreLike] | None = None

    def __post_init__(self) -> None:
        # Re-entrant: opening the engine opens the event store it shares.
        self._lock = threading.RLock()
        self._cache: dict[str, Any] = {}
        self._hosts: tuple[float, list[str]] | None = None

    def _get(self, name: str, opener: Callable[[], Any]) -> Any:
        if name not in self._cache:
            with self._lock:
                if name not in self._cache:
                    self._cache[name] = opener()
        return self._cache[name]

    @property
    def metric_source(self) -> MetricSourceLike:
        return self._get("metric_source", self.open_metric_source)  # type: ignore[no-any-return]

    @property
    def event_store(self) -> EventStoreLike:
        return self._get("event_store", self.open_event_store)  # type: ignore[no-any-return]

    @property
    def engine(self) -> EngineLike:
        return self._get("engine", self.open_engine)  # type: ignore[no-any-return]

    @property
    def labels(self) -> LabelStoreLike:
        if self.open_label_store is None:
            raise StoreError("no label store configured")
        return self._get("labels", self.open_label_store)  # type: ignore[no-any-return]

    def opened(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._cache)

    def known_hosts(self, ttl_seconds: float = 60.0) -> list[str]:
        """Hosts the metric source knows (cached a minute); settings' list if it fails."""
        now = time.monotonic()
        if self._hosts and now - self._hosts[0] < ttl_seconds:
            return self._hosts[1]
        try:
            hosts = list(self.metric_source.hosts())
        except Exception as exc:  # noqa: BLE001 -- any source failure just means "use settings"
            log.warning("could not list hosts from the metric source", extra={"error": _reason(exc)})
            hosts = []
        hosts = hosts or list(self.settings.host_list)
        self._hosts = (now, hosts)
        return hosts


# ---------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------

class Tools:
    def __init__(self, resources: Resources) -> None:
        self.r = resources

    # -- metrics ---------------------------------------------------------------------------

    def _source_name(self) -> str:
        source = self.r.metric_source
        name = str(getattr(source, "wrapped_name", type(source).__name__)).lower()  # through caches
        return "prometheus" if "prometheus" in name else "simulator" if "simulator" in name else name

    def _metric_query(self, metric: str | None, host: str | None, kind: str) -> str:
        host_part = f'host="{host}"' if host else "all hosts"
        if self._source_name() == "prometheus" and metric:
            from smartcloudops.sources import PROMQL

            return f"{kind}: {PROMQL[metric]} ({host_part})"
        return f"{kind}(metric={metric or 'all'}, host={host or 'all'})"

    def current_metrics(self, metric: str | None = None, host: str | None = None) -> Evidence:
        try:
            source = self._source_name()
            query = self._metric_query(metric, host, "latest")
            frame = self.r.metric_source.latest(hosts=[host] if host else None)
        except InputError as exc:
            return unavailable("metrics", f"latest(host={host})", exc)
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("metric source failed", extra={"error": _reason(exc)})
            return unavailable("metrics", f"latest(metric={metric}, host={host})", exc)
        # Plain lists, not pandas: a "latest" frame is a few dozen rows, where pandas' per-call
        # overhead (filter, sort, itertuples) cost milliseconds.
        rows = [] if frame.empty else list(zip(
            frame["host"].tolist(), frame["metric"].tolist(), frame["value"].tolist(),
            frame["timestamp"].tolist(), strict=True))
        if metric is not None:
            rows = [r for r in rows if r[1] == metric]
        rows.sort(key=lambda r: (r[0], r[1]))
        values = [
            {"host": h, "metric": m, "value": _round(v), "unit": METRIC_UNITS.get(m, ""),
             "timestamp": iso(_py(ts))}
            for h, m, v, ts in rows
            if _round(v) is not None
        ]
        start = min((r[3] for r in rows), default=None)
        end = max((r[3] for r in rows), default=None)
        return evidence(source, query, _py(start), _py(end), values)

    def metric_history(self, metric: str | None = None, host: str | None = None,
                       since_minutes: int | None = None) -> Evidence:
        minutes = since_minutes or DEFAULT_HISTORY_MINUTES
        end = self.r.clock()
        start = end - timedelta(minutes=minutes)
        base_step = max(1, int(self.r.settings.step_seconds))
        step = max(base_step, math.ceil(minutes * 60 / MAX_HISTORY_POINTS / base_step) * base_step)
        query = self._metric_query(metric, host, f"query_range[{minutes}m, step {step}s]")
        try:
            source = self._source_name()
            frame = self.r.metric_source.query_range(start, end, step, hosts=[host] if host else None)
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("metric source failed", extra={"error": _reason(exc)})
            return unavailable("metrics", query, exc, start, end)
        values = _series_summaries(frame, metric) if not frame.empty else []
        return evidence(source, query, start, end, values, step_seconds=step)

    # -- anomalies -------------------------------------------------------------------------

    def anomalies(self, limit: int | None = None, since_minutes: int | None = None,
                  host: str | None = None, metric: str | None = None, offset: int = 0) -> Evidence:
        limit = limit or DEFAULT_ANOMALY_LIMIT
        end = self.r.clock()
        start = end - timedelta(minutes=since_minutes) if since_minutes else None
        # With a window, fetch the whole window (bounded) so the answer can say how many.
        fetch = 1000 if (since_minutes or metric) else limit + offset
        query = _filter_text("recent_anomalies", limit=limit, since=iso(start), host=host,
                             metric=metric, offset=offset or None)
        cache_age: float | None = None
        try:
            if self.r.anomaly_cache is not None:
                found, cache_age = self.r.anomaly_cache.lookup(limit=fetch, since=start, host=host)
            else:
                found = self.r.event_store.recent_anomalies(limit=fetch, since=start, host=host)
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("event store failed", extra={"error": _reason(exc)})
            return unavailable("event_store", query, exc, start, end)
        if metric:
            found = [a for a in found if _anomaly_metric(a) == metric]
        page = found[offset: offset + limit]
        return evidence(
            "event_store", query, start, end, [_anomaly_dict(a) for a in page],
            total=len(found) if fetch > limit + offset or len(found) < fetch else None,
            offset=offset or None,
            # Honest about staleness: served from the recent-anomalies cache, this old.
            cached_seconds=round(cache_age, 1) if cache_age is not None else None,
        )

    def explain(self, limit: int | None = None, since_minutes: int | None = None,
                host: str | None = None, metric: str | None = None, anomaly_id: str | None = None,
                offset: int = 0) -> list[Evidence]:
        if anomaly_id:
            query = _filter_text("get_anomaly", anomaly_id=anomaly_id)
            try:
                one = self.r.event_store.get_anomaly(anomaly_id)
            except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
                return [unavailable("event_store", query, exc)]
            found = evidence("event_store", query, None, None, [_anomaly_dict(one)] if one else [])
        else:
            found = self.anomalies(limit or 1, since_minutes, host, metric, offset)
        out = [found]
        for item in found["values"][:3]:
            out.append(self._baseline(item))
        return out

    def _baseline(self, anomaly: Mapping[str, Any]) -> Evidence:
        """The host's typical values in the hour before an anomaly, to compare against."""
        at = datetime.fromisoformat(str(anomaly["timestamp"]).replace("Z", "+00:00"))
        start, end = at - timedelta(minutes=65), at - timedelta(minutes=5)
        host = str(anomaly["host"])
        query = f"baseline for {anomaly['anomaly_id']}: median per metric, host={host}"
        try:
            frame = self.r.metric_source.query_range(start, end, max(60, self.r.settings.step_seconds),
                                                     hosts=[host])
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            return unavailable("metrics", query, exc, start, end)
        values = []
        if not frame.empty:
            medians = frame.dropna(subset=["value"]).groupby("metric")["value"].median()
            for m, v in medians.items():
                values.append({"host": host, "metric": str(m), "median": _round(v),
                               "unit": METRIC_UNITS.get(str(m), ""),
                               "anomaly_id": anomaly["anomaly_id"]})
        return evidence(self._source_name(), query, start, end, values)

    # -- logs ------------------------------------------------------------------------------

    def logs(self, since_minutes: int | None = None, level: str | None = None,
             contains: str | None = None, limit: int | None = None, host: str | None = None,
             offset: int = 0) -> Evidence:
        limit = limit or DEFAULT_LOG_LIMIT
        end = self.r.clock()
        start = end - timedelta(minutes=since_minutes) if since_minutes else None
        needle = contains or host
        fetch = limit + offset if not (host and contains) else min(5000, (limit + offset) * 20)
        query = _filter_text("read_logs", since=iso(start), level=level, contains=contains,
                             host=host, limit=limit, offset=offset or None)
        try:
            records = self.r.log_reader(self.r.log_dir, since=start, level=level,
                                        contains=needle, limit=fetch)
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("log reader failed", extra={"error": _reason(exc)})
            return unavailable("logs", query, exc, start, end)
        if host and contains:
            records = [r for r in records if host.lower() in _flat(r).lower()]
        page = records[offset: offset + limit]
        return evidence("logs", query, start, end, [_log_dict(r) for r in page],
                        log_dir=str(self.r.log_dir), offset=offset or None)

    # -- remediation -----------------------------------------------------------------------

    def actions(self, limit: int | None = None, since_minutes: int | None = None,
                host: str | None = None, action_id: str | None = None,
                offset: int = 0) -> list[Evidence]:
        store_name = "event_store"
        if action_id:
            query = _filter_text("get_action", action_id=action_id)
            try:
                record = self.r.event_store.get_action(action_id)
            except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
                return [unavailable(store_name, query, exc)]
            return [evidence(store_name, query, None, None, [_action_dict(record)] if record else [])]
        limit = limit or DEFAULT_ACTION_LIMIT
        end = self.r.clock()
        start = end - timedelta(minutes=since_minutes) if since_minutes else None
        hist_q = _filter_text("actions", limit=limit, since=iso(start), instance=host,
                              offset=offset or None)
        pend_q = _filter_text("actions", status="pending_approval", instance=host, limit=50)
        out: list[Evidence] = []
        try:
            records = self.r.event_store.actions(limit=limit + offset, since=start, instance=host)
            out.append(evidence(store_name, hist_q, start, end,
                                [_action_dict(r) for r in records[offset:offset + limit]],
                                kind="history", offset=offset or None))
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            out.append(unavailable(store_name, hist_q, exc, start, end) | {"kind": "history"})
        try:
            pending = self.r.event_store.actions(limit=50, instance=host, status=ActionStatus.PENDING)
            out.append(evidence(store_name, pend_q, None, end, [_action_dict(r) for r in pending],
                                kind="pending"))
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            out.append(unavailable(store_name, pend_q, exc) | {"kind": "pending"})
        return out

    def decide(self, verb: str, action_id: str, by: str, note: str | None = None) -> Evidence:
        """Approve or reject one pending action through the remediation engine."""
        query = f"RemediationEngine.{verb}({action_id!r}, by={by!r})"
        now = self.r.clock()
        try:
            engine = self.r.engine
            if verb == "approve":
                record = engine.approve(action_id, by=by)
            else:
                reason = f"rejected via ChatOps: {note}" if note else "rejected via ChatOps"
                record = engine.reject(action_id, by=by, reason=reason)
        except InputError as exc:  # unknown id, already decided, expired: the engine says which
            return evidence("remediation", query, None, now, [], error=f"refused: {_reason(exc)}")
        except Exception as exc:  # noqa: BLE001 -- report, never fail the request
            log.error("remediation engine failed", extra={"action_id": action_id, "error": _reason(exc)})
            return evidence("remediation", query, None, now, [], error=f"failed: {_reason(exc)}")
        values = [_action_dict(record)] if isinstance(record, ActionRecord) else [_plain(record)]
        return evidence("remediation", query, None, now, values)

    # -- labels ----------------------------------------------------------------------------

    def add_label(self, params: Mapping[str, Any], *, author: str, target: str | None = None,
                  note: str | None = None, previous_anomalies: Sequence[str] = ()) -> Evidence:
        """Store one operator label; the evidence is exactly what was stored (or why not).

        ``params`` are ``label.add``'s: ``kind`` and either ``start``/``end`` (with ``host``),
        ``at``, ``anomaly_id``, or ``target`` = ``"latest"`` / ``"previous"`` (then
        ``previous_anomalies`` are the ids the session's last answer showed).
        """
        now = self.r.clock()
        kind = str(params.get("kind"))
        query = _filter_text("LabelStore.add", **{k: params.get(k) for k in (
            "host", "kind", "start", "end", "at", "anomaly_id")}, target=target)
        try:
            host, start, end, anomaly, how = self._label_target(params, target, previous_anomalies, now)
        except InputError as exc:
            return evidence("labels", query, None, now, [], error=f"refused: {_reason(exc)}")
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("event store failed", extra={"error": _reason(exc)})
            return unavailable("event_store", query, exc, None, now)
        try:
            label, created = self.r.labels.add(
                host, start, end, kind, author=author, note=note or "",
                anomaly_id=anomaly.anomaly_id if anomaly else None, now=now)
        except InputError as exc:
            return evidence("labels", query, start, end, [], error=f"refused: {_reason(exc)}")
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            log.warning("label store failed", extra={"error": _reason(exc)})
            return unavailable("labels", query, exc, start, end)
        log.info("operator label stored" if created else "operator label already present",
                 extra={"label_id": label.label_id, "host": label.host, "kind": label.kind, "author": author})
        value = label.to_dict() | {"created": created, "target": how}
        if anomaly is not None:
            value["anomaly_timestamp"] = iso(anomaly.timestamp)
        return evidence("labels", query, label.start, label.end, [value])

    def _label_target(self, params: Mapping[str, Any], target: str | None, previous: Sequence[str],
                      now: datetime) -> tuple[str, datetime, datetime, Anomaly | None, str]:
        """``(host, start, end, anomaly, how)`` for a label; InputError says what is missing."""
        host = params.get("host")
        store = self.r.event_store
        anomaly: Anomaly | None = None
        if params.get("start") and params.get("end"):
            if not host:
                raise InputError("which host? a window needs one")
            start = datetime.fromisoformat(str(params["start"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(params["end"]).replace("Z", "+00:00"))
            return str(host), start, end, None, "window"
        if params.get("anomaly_id"):
            anomaly = store.get_anomaly(str(params["anomaly_id"]))
            if anomaly is None:
                raise InputError(f"no anomaly {params['anomaly_id']} in the event store")
            how = "anomaly id"
        elif params.get("at"):
            at = datetime.fromisoformat(str(params["at"]).replace("Z", "+00:00"))
            near = [a for a in store.recent_anomalies(limit=1000, since=at - LABEL_AT_TOLERANCE, host=host)
                    if a.timestamp <= at + LABEL_AT_TOLERANCE]
            if near:
                anomaly = min(near, key=lambda a: abs(a.timestamp - at))
                how = f"nearest anomaly to {iso(at)}"
            elif host:
                return (str(host), at - LABEL_HALF_WIDTH, min(at + LABEL_HALF_WIDTH, now), None,
                        f"no recorded anomaly within {_minutes(LABEL_AT_TOLERANCE)} of {iso(at)}; "
                        "the hour around that time")
            else:
                raise InputError(f"no anomaly within {_minutes(LABEL_AT_TOLERANCE)} of {iso(at)}; "
                                 "name the host to label that time anyway")
        elif target == "latest":
            latest = store.recent_anomalies(limit=1, host=host)
            if not latest:
                raise InputError("no anomaly recorded" + (f" on {host}" if host else ""))
            anomaly, how = latest[0], "latest anomaly" + (f" on {host}" if host else "")
        else:
            if not previous:
                raise InputError("which anomaly? I have not shown you one in this conversation")
            if len(previous) > 1:
                raise InputError(f"which anomaly? my last answer showed {len(previous)} "
                                 f"({', '.join(previous[:5])}); name one, e.g. 'mark {previous[0]} as ...'")
            anomaly = store.get_anomaly(previous[0])
            if anomaly is None:
                raise InputError(f"anomaly {previous[0]} is no longer in the event store")
            how = "the anomaly my last answer showed"
        if host and anomaly.host != host:
            raise InputError(f"{anomaly.anomaly_id} is on {anomaly.host}, not {host}")
        return (anomaly.host, anomaly.timestamp - LABEL_HALF_WIDTH,
                min(anomaly.timestamp + LABEL_HALF_WIDTH, now), anomaly, how)

    # -- model -----------------------------------------------------------------------------

    def model(self) -> Evidence:
        settings = self.r.settings
        query = f"MlflowClient.get_model_version_by_alias({settings.registered_model!r}, 'champion')"
        now = self.r.clock()
        try:
            status = self.r.model_status()
        except Exception as exc:  # noqa: BLE001 -- MLflow down is an answer, not an error
            return unavailable("mlflow", query, exc, None, now)
        return evidence("mlflow", query, None, now, [status])

    # -- overview --------------------------------------------------------------------------

    def breaker(self) -> Evidence:
        """The remediation circuit breaker: when it is open, no automatic action runs."""
        query = "remediation circuit breaker"
        now = self.r.clock()
        try:
            from remediation.safety import RateLimitBreaker

            settings = self.r.settings
            state = RateLimitBreaker(
                self.r.event_store,  # type: ignore[arg-type]
                max_actions=settings.remediation_rate_limit_actions,
                window=timedelta(minutes=settings.remediation_rate_limit_window_minutes),
                open_for=timedelta(minutes=settings.remediation_breaker_open_minutes),
            ).status(now)
        except Exception as exc:  # noqa: BLE001 -- degrade, never fail the question
            return unavailable("event_store", query, exc, end=now) | {"kind": "breaker"}
        return evidence("event_store", query, None, now, [state], kind="breaker")

    def overview(self, host: str | None = None, window_minutes: int = 60) -> list[Evidence]:
        return [
            self.current_metrics(host=host),
            self.anomalies(limit=5, since_minutes=window_minutes, host=host),
            *self.actions(limit=5, host=host),
            self.breaker(),
            self.model(),
        ]


# ---------------------------------------------------------------------------------------
# MLflow model status (the default ``Resources.model_status``)
# ---------------------------------------------------------------------------------------

class MlflowModelStatus:
    """Champion version, F1 and training time from the MLflow registry.

    MLflow is imported on first use (it takes seconds); the call runs in a worker thread with
    a deadline, because an unreachable tracking server otherwise retries for minutes. A
    result is cached briefly so ``/status`` polling does not hammer the registry.
    """

    def __init__(self, tracking_uri: str, model_name: str, *, timeout_seconds: float = 5.0,
                 cache_seconds: float = 30.0,
                 client_factory: Callable[[str], Any] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.timeout_seconds = timeout_seconds
        self.cache_seconds = cache_seconds
        self.client_factory = client_factory
        self._cached: tuple[float, dict[str, Any] | BaseException] | None = None
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def __call__(self) -> dict[str, Any]:
        import sys

        now = time.monotonic()
        cached = self._cached
        if cached and now - cached[0] < (self.cache_seconds if isinstance(cached[1], dict) else 5.0):
            if isinstance(cached[1], BaseException):
                raise cached[1]
            return cached[1]
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlflow")
            future = self._pool.submit(self._fetch)
        try:
            # The first read may import mlflow (seconds on a busy machine): give it longer.
            cold = self.client_factory is None and "mlflow" not in sys.modules
            deadline = max(self.timeout_seconds, 20.0) if cold else self.timeout_seconds
            result: dict[str, Any] | BaseException = future.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            result = ModelError(f"MLflow at {_safe_uri(self.tracking_uri)} did not answer "
                                f"within {deadline:g}s")
        except SmartCloudOpsError as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 -- translated at this boundary
            result = ModelError(f"MLflow: {_reason(exc)}")
        self._cached = (time.monotonic(), result)
        if isinstance(result, BaseException):
            raise result
        return result

    def _fetch(self) -> dict[str, Any]:
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            if not db.exists():
                # Opening it would create an empty registry as a side effect of a question.
                raise ModelError(f"no MLflow registry yet ({db} does not exist); run training first")
        if self.client_factory is not None:
            client = self.client_factory(uri)
        else:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            version = client.get_model_version_by_alias(self.model_name, "champion")
        except Exception as exc:
            raise ModelError(f"no champion for model {self.model_name!r}: {_reason(exc)}") from exc
        metrics: dict[str, float] = {}
        run_info: dict[str, Any] = {}
        run_id = getattr(version, "run_id", None)
        if run_id:
            try:
                run = client.get_run(run_id)
                metrics = {k: float(v) for k, v in dict(run.data.metrics).items()}
                run_info = {
                    "run_start": _ms(getattr(run.info, "start_time", None)),
                    "run_end": _ms(getattr(run.info, "end_time", None)),
                }
            except Exception as exc:  # noqa: BLE001 -- the version alone is still an answer
                run_info = {"run_error": _reason(exc)}
        f1_key = next((k for k in F1_METRIC_KEYS if k in metrics), None) or next(
            (k for k in sorted(metrics) if "f1" in k.lower()), None)
        return {
            "model": self.model_name,
            "alias": "champion",
            "version": str(version.version),
            "run_id": run_id,
            "f1": _round(metrics[f1_key]) if f1_key else None,
            "f1_metric": f1_key,
            "registered_at": _ms(getattr(version, "creation_timestamp", None)),
            "trained_at": run_info.get("run_end") or run_info.get("run_start"),
            "metrics": {k: _round(v) for k, v in sorted(metrics.items())[:20]},
            **{k: v for k, v in run_info.items() if k == "run_error"},
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------

def _ms(value: Any) -> str | None:
    if not value:
        return None
    return iso(datetime.fromtimestamp(int(value) / 1000, tz=UTC))


def _safe_uri(uri: str) -> str:
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@/\s]+(@)", r"\1***\2", uri)


def _py(value: Any) -> datetime | None:
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def _series_summaries(frame: pd.DataFrame, metric: str | None = None) -> list[dict[str, Any]]:
    """min/max/mean/first/last/peak time of each (host, metric) series (only ``metric``'s
    when given), sorted by host and metric; missing values ignored.

    In numpy rather than pandas filters and a groupby: their fixed cost (several ms even for
    one 60-point series) was most of a history question's time.
    """
    import numpy as np
    import pandas as pd

    stamps = frame["timestamp"]
    ns = getattr(stamps.array, "asi8", None)
    if ns is None:  # not pandas' own datetime array (e.g. Arrow-backed): convert once
        ns = pd.to_datetime(stamps, utc=True).array.asi8
    host_codes, host_names = pd.factorize(frame["host"], sort=True)
    metric_codes, metric_names = pd.factorize(frame["metric"], sort=True)
    values = frame["value"].to_numpy(dtype=float)
    keep = ~np.isnan(values) & (np.asarray(host_codes) >= 0) & (np.asarray(metric_codes) >= 0)
    if metric is not None:
        wanted = [i for i, name in enumerate(metric_names) if name == metric]
        keep &= np.asarray(metric_codes) == (wanted[0] if wanted else -2)
    group = np.asarray(host_codes, dtype=np.int64) * len(metric_names) + np.asarray(metric_codes)
    group, ns, values = group[keep], np.asarray(ns)[keep], values[keep]
    if not len(values):
        return []
    order = np.lexsort((ns, group))  # by host, then metric, then time
    group, ns, values = group[order], ns[order], values[order]
    bounds = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), len(order)]
    out = []
    for a, b in itertools.pairwise(bounds):
        host_code, metric_code = divmod(int(group[a]), len(metric_names))
        host, metric = str(host_names[host_code]), str(metric_names[metric_code])
        series = values[a:b]
        peak = int(np.argmax(series))
        out.append({
            "host": host, "metric": metric, "unit": METRIC_UNITS.get(metric, ""),
            "min": _round(series.min()), "max": _round(series.max()),
            "mean": _round(series.mean()), "last": _round(series[-1]),
            "first": _round(series[0]), "samples": int(series.size),
            "max_at": iso(datetime.fromtimestamp(int(ns[a + peak]) / 1e9, tz=UTC)),
        })
    return out


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} minutes"


def _filter_text(name: str, **kwargs: Any) -> str:
    parts = [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"{name}({', '.join(parts)})"


def _anomaly_metric(anomaly: Anomaly) -> str | None:
    return anomaly.top_metric


def _anomaly_dict(a: Anomaly) -> dict[str, Any]:
    top = sorted(a.contributions.items(), key=lambda kv: kv[1], reverse=True)[:3]
    return {
        "anomaly_id": a.anomaly_id,
        "host": a.host,
        "timestamp": iso(a.timestamp),
        "severity": str(a.severity),
        "score": _round(a.score),
        "top_metric": a.top_metric,
        "contributions": {k: _round(v) for k, v in top},
        "metrics": {k: _round(v) for k, v in a.metrics.items()},
        "model_version": a.model_version,
    }


def _action_dict(r: ActionRecord) -> dict[str, Any]:
    return {
        "action_id": r.action_id,
        "timestamp": iso(r.timestamp),
        "action": r.action,
        "instance": r.instance,
        "result": r.result.value,
        "rule": r.rule,
        "dry_run": r.dry_run,
        "approved_by": r.approved_by,
        "anomaly_id": r.anomaly_id,
        "detail": r.detail[:300],
    }


def _plain(value: Any) -> dict[str, Any]:
    if hasattr(value, "to_dict"):
        return value.to_dict()  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return dict(value)
    return {"result": str(value)}


def _flat(record: Mapping[str, Any]) -> str:
    import json

    return json.dumps(record, default=str)


def _log_dict(record: Mapping[str, Any]) -> dict[str, Any]:
    message = str(record.get("message", ""))
    out = {
        "timestamp": record.get("timestamp"),
        "level": str(record.get("level", "")).lower() or None,
        "component": record.get("component"),
        "logger": record.get("logger"),
        "message": message[:LOG_MESSAGE_CHARS] + ("…" if len(message) > LOG_MESSAGE_CHARS else ""),
    }
    for key in ("host", "action_id", "anomaly_id", "error"):
        if key in record:
            out[key] = record[key]
    return out
