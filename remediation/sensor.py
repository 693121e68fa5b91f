"""The anomaly sensor's two halves: "is there work?" (polled) and "do the work" (one pass).

:func:`pending_work` is what the deferrable trigger polls every few seconds. It tests the
*current* state against what the last pass processed (a cursor in the event store), never an
edge between two polls, so nothing that happens between two runs of the continuous DAG is
missed: there is work when a host has a sample newer than the last one scored, or a rule's
threshold is crossed on a (rule, host) the last pass did not see crossed.

:func:`sense_and_act` is one pass: read the recent metrics window (as long as the rules need),
score the newest row of each host through the scoring service, record the anomalies, run the
rule engine, move the cursor. If the scoring service is down or has no model, the threshold
rules still run (they need no model) and the pass says so in its summary and a warning log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from smartcloudops.domain import Anomaly, Severity, long_to_wide, normalize_long, utcnow
from smartcloudops.errors import InputError, ModelError, SourceError

if TYPE_CHECKING:
    from remediation.engine import RemediationEngine
    from remediation.rules import RuleSet
    from smartcloudops.events import EventStore
    from smartcloudops.settings import Settings
    from smartcloudops.sources import MetricSource

log = logging.getLogger(__name__)

CURSOR_KEY = "anomaly_sensor/cursor"
#: The sensor must keep up with the fleet: a slow scoring service costs a pass, not a minute.
MAX_SCORING_TIMEOUT = 5.0

Scorer = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


# -- current state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentState:
    """What the fleet looks like now, at the resolution the sensor acts on."""

    #: newest sample time per host, floored to the sample step
    latest: dict[str, datetime]
    #: (rule, host) pairs whose threshold the newest value crosses
    breaching: frozenset[tuple[str, str]]

    def to_cursor(self) -> dict[str, Any]:
        return {
            "latest": {h: t.isoformat() for h, t in sorted(self.latest.items())},
            "breaching": sorted([r, h] for r, h in self.breaching),
        }


def _floor(ts: datetime, step_seconds: int) -> datetime:
    return pd.Timestamp(ts).tz_convert("UTC").floor(f"{step_seconds}s").to_pydatetime()


def current_state(source: MetricSource, rules: RuleSet | None, step_seconds: int) -> CurrentState:
    """Newest sample per host and the threshold rules its values cross (cheap: one query).

    ``rules=None`` (the rules file is broken) tests fresh samples only.
    """
    from remediation.rules import ThresholdCondition

    frame = source.latest()
    if frame.empty:
        return CurrentState({}, frozenset())
    frame = normalize_long(frame).dropna(subset=["value"])
    latest: dict[str, datetime] = {}
    values: dict[tuple[str, str], float] = {}
    for row in frame.itertuples(index=False):
        host, ts = str(row.host), _floor(row.timestamp, step_seconds)
        latest[host] = max(latest.get(host, ts), ts)
        values[(host, str(row.metric))] = float(row.value)
    breaching = set()
    for rule in rules.active if rules is not None else ():
        cond = rule.condition
        if not isinstance(cond, ThresholdCondition):
            continue
        for host in latest:
            value = values.get((host, cond.metric))
            if value is not None and rule.matches_host(host) and cond.breaches(value):
                breaching.add((rule.name, host))
    return CurrentState(latest, frozenset(breaching))


def work_in(state: CurrentState, cursor: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What ``state`` holds that the pass recorded in ``cursor`` did not process, or None."""
    cursor = cursor or {}
    seen_latest = {h: pd.Timestamp(t).to_pydatetime() for h, t in (cursor.get("latest") or {}).items()}
    seen_breaching = {(str(r), str(h)) for r, h in cursor.get("breaching") or []}
    fresh = sorted(h for h, t in state.latest.items() if h not in seen_latest or t > seen_latest[h])
    new_breaches = sorted(state.breaching - seen_breaching)
    if not fresh and not new_breaches:
        return None
    return {
        "fresh_hosts": fresh,
        "new_breaches": [f"{rule}@{host}" for rule, host in new_breaches],
        "latest": max(state.latest.values()).isoformat() if state.latest else None,
    }


def pending_work(settings: Settings | None = None) -> dict[str, Any] | None:
    """The trigger's check: a small JSON-able description of unprocessed work, or None.

    Synchronous (the trigger runs it in a thread); opens what it needs and closes it again.
    """
    from remediation.rules import RulesError, load_rules
    from smartcloudops.events import EventStore
    from smartcloudops.settings import get_settings
    from smartcloudops.sources import get_metric_source

    settings = settings or get_settings()
    try:
        rules: RuleSet | None = load_rules(settings.rules_file)
    except RulesError as exc:
        # Keep sensing on fresh samples: the pass then fails visibly on the same error.
        log.error("remediation rules are invalid; sensing fresh samples only: %s", exc)
        rules = None
    state = current_state(get_metric_source(settings), rules, settings.step_seconds)
    events = EventStore.from_settings(settings)
    try:
        cursor = events.get_state(CURSOR_KEY)
    finally:
        events.close()
    return work_in(state, cursor)


# -- scoring -------------------------------------------------------------------------------------


def latest_rows(metrics_long: pd.DataFrame) -> list[dict[str, Any]]:
    """The newest row per host (its present metrics only), as scoring-API instances."""
    return scoring_rows(metrics_long, rows_per_host=1)


def scoring_rows(metrics_long: pd.DataFrame, rows_per_host: int | None = None) -> list[dict[str, Any]]:
    """Rows per host, oldest first (all, or the newest ``rows_per_host``), as API instances.

    Sending the recent window rather than only the newest row gives the model the context its
    features need (deviation from the last hours) even right after the scoring service
    started; the model re-scores timestamps it has seen instead of counting them twice.
    """
    if metrics_long.empty:
        return []
    wide = long_to_wide(normalize_long(metrics_long)).sort_values(["host", "timestamp"], kind="stable")
    if rows_per_host is not None:
        wide = wide.groupby("host", sort=True).tail(rows_per_host)
    instances = []
    for row in wide.to_dict("records"):
        values = {
            k: float(v)
            for k, v in row.items()
            if k not in ("timestamp", "host") and v is not None and not math.isnan(float(v))
        }
        if values:
            ts = pd.Timestamp(row["timestamp"]).tz_convert("UTC")
            instances.append({"host": str(row["host"]), "timestamp": ts.isoformat(), "metrics": values})
    return instances


def http_scorer(base_url: str, timeout: float) -> Scorer:
    """``POST {base_url}/v1/score`` with ``{"instances": [...]}``; errors become SourceError/ModelError."""
    url = base_url.rstrip("/") + "/v1/score"

    def score(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            response = httpx.post(url, json={"instances": instances}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise SourceError(f"scoring service at {base_url} is unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceError(f"scoring service answered {response.status_code} with non-JSON") from exc
        if response.status_code != 200:
            error = body.get("error", body) if isinstance(body, dict) else body
            raise ModelError(f"scoring service answered {response.status_code}: {error}")
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise SourceError("scoring service answer has no 'results' list")
        return results

    return score


def anomaly_id(host: str, timestamp: datetime) -> str:
    """Deterministic: a retried or overlapping pass records the same anomaly once."""
    return f"anom-{host}-{pd.Timestamp(timestamp).tz_convert('UTC'):%Y%m%dT%H%M%SZ}"


def to_anomalies(
    results: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]
) -> list[Anomaly]:
    """Flagged scoring results -> domain anomalies (with the metric values that were scored)."""
    scored_metrics = {(i["host"], i["timestamp"]): i["metrics"] for i in instances}
    by_host = {i["host"]: i["metrics"] for i in instances}
    out = []
    for r in results:
        if not r.get("anomaly"):
            continue
        try:
            host = str(r["host"])
            ts = pd.Timestamp(r["timestamp"])
            ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
            score = float(r["score"]) if r.get("score") is not None else float("nan")
            severity = Severity.parse(str(r["severity"])) if r.get("severity") else Severity.LOW
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"malformed scoring result {dict(r)!r}: {exc}") from exc
        metrics = scored_metrics.get((host, r.get("timestamp"))) or by_host.get(host, {})
        out.append(
            Anomaly(
                host=host,
                timestamp=ts,
                score=score,
                severity=severity,
                model_version=str(r.get("model_version", "")),
                contributions={str(k): float(v) for k, v in (r.get("contributions") or {}).items()},
                metrics=dict(metrics),
                anomaly_id=anomaly_id(host, ts),
            )
        )
    return out


# -- one pass ----------------------------------------------------------------------------------


def _unseen(
    results: Sequence[Mapping[str, Any]],
    cursor: Mapping[str, Any] | None,
    first_pass_since: datetime,
) -> list[Mapping[str, Any]]:
    """Results worth recording: rows newer than what the last pass saw.

    The context rows sent for the model's sake were judged by earlier passes; recording their
    flags again would turn one incident into a stream of anomalies. Without a previous pass
    (a fresh sensor), rows since ``first_pass_since`` (the rules' lookback) count as new, so
    an incident that began just before the sensor started is still recorded.
    """
    seen = {h: pd.Timestamp(t) for h, t in ((cursor or {}).get("latest") or {}).items()}
    floor = pd.Timestamp(first_pass_since)
    keep = []
    for result in results:
        host = str(result.get("host"))
        try:
            ts = pd.Timestamp(result.get("timestamp"))
        except (TypeError, ValueError):
            keep.append(result)  # to_anomalies reports the malformed row
            continue
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        if ts > seen.get(host, floor):
            keep.append(result)
    return keep


def sense_and_act(
    settings: Settings | None = None,
    *,
    source: MetricSource | None = None,
    events: EventStore | None = None,
    engine: RemediationEngine | None = None,
    scorer: Scorer | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One sensor pass; returns a small summary (the DAG task's XCom).

    Everything not given is built from ``settings``: the metric source, the event store, the
    rule engine (``RemediationEngine.from_settings``) and an HTTP scorer for
    ``settings.scoring_url``.
    """
    from smartcloudops.settings import get_settings

    settings = settings or get_settings()
    owns_events = events is None
    if source is None:
        from smartcloudops.sources import get_metric_source

        source = get_metric_source(settings)
    if events is None:
        from smartcloudops.events import EventStore

        events = EventStore.from_settings(settings)
    try:
        if engine is None:
            from remediation.engine import RemediationEngine

            engine = RemediationEngine.from_settings(settings, events=events)
        # Observe first: anything that changes after this point is new work for the next pass.
        state = current_state(source, engine.rules, settings.step_seconds)
        end = now or utcnow()
        context = timedelta(minutes=settings.scoring_context_minutes)
        start = end - max(engine.lookback, context)
        metrics = source.query_range(start, end, settings.step_seconds)

        instances = scoring_rows(metrics)
        scoring, anomalies, model_version = "skipped: no samples", [], None
        if instances:
            score = scorer or http_scorer(
                settings.scoring_url, min(settings.http_timeout_seconds, MAX_SCORING_TIMEOUT)
            )
            try:
                results = score(instances)
                fresh = _unseen(results, events.get_state(CURSOR_KEY), end - engine.lookback)
                anomalies = to_anomalies(fresh, instances)
                scoring = "ok"
                versions = [str(r["model_version"]) for r in results if r.get("model_version")]
                model_version = versions[0] if versions else None
            except (SourceError, ModelError, InputError) as exc:
                # Threshold rules need no model: keep remediating while scoring is down.
                scoring = f"unavailable: {exc}"
                log.warning(
                    "scoring failed; running the rules without anomalies: %s",
                    exc,
                    extra={"stage": "sensor", "scoring_url": settings.scoring_url},
                )
        recorded = events.record_anomalies(anomalies)
        actions = engine.evaluate(metrics, anomalies, now=end)
        events.put_state(CURSOR_KEY, {**state.to_cursor(), "processed_at": end.isoformat()})
    finally:
        if owns_events:
            events.close()

    summary = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "hosts": len({i["host"] for i in instances}),
        "rows_scored": len(instances),
        "scoring": scoring,
        "model_version": model_version,
        "anomalies": len(anomalies),
        "anomalies_new": recorded,
        "anomaly_ids": [a.anomaly_id for a in anomalies][:20],
        "breaching": [f"{r}@{h}" for r, h in sorted(state.breaching)],
        "dry_run": engine.dry_run,
        "actions": [
            {
                "action_id": a.action_id,
                "action": a.action,
                "instance": a.instance,
                "rule": a.rule,
                "result": a.result.value,
                "dry_run": a.dry_run,
            }
            for a in actions
        ],
    }
    log.info(
        "sensor pass",
        extra={
            "stage": "sensor",
            "hosts": summary["hosts"],
            "rows_scored": len(instances),
            "scoring": scoring.split(":")[0],
            "anomalies": len(anomalies),
            "actions": len(actions),
        },
    )
    return summary


__all__ = [
    "CURSOR_KEY",
    "CurrentState",
    "current_state",
    "http_scorer",
    "latest_rows",
    "pending_work",
    "sense_and_act",
    "to_anomalies",
    "work_in",
]
