"""``smartcloudops status``: one screen that says whether the loop is healthy."""

from __future__ import annotations

from datetime import timedelta

import httpx

from smartcloudops.domain import utcnow
from smartcloudops.errors import SmartCloudOpsError
from smartcloudops.settings import Settings


def _probe(url: str) -> str:
    try:
        response = httpx.get(url, timeout=2.0)
    except httpx.HTTPError as exc:
        return f"down ({type(exc).__name__})"
    return "up" if response.status_code == 200 else f"HTTP {response.status_code}"


def print_status(settings: Settings) -> int:
    print(f"home            {settings.home.resolve()}")
    print(f"metric source   {settings.prometheus_url or 'fleet simulator (embedded)'}")
    print(
        "metric store    "
        + (f"s3://{settings.metrics_bucket}" if settings.metrics_bucket else str(settings.metrics_dir))
    )
    print(f"remediation     {'DRY-RUN' if settings.dry_run else 'acting'}")
    print(f"scoring         {settings.scoring_url}: {_probe(settings.scoring_url + '/readyz')}")
    chatops = f"http://{settings.chatops_host}:{settings.chatops_port}"
    print(f"chatops         {chatops}: {_probe(chatops + '/healthz')}")
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=settings.resolved_tracking_uri)
        version = client.get_model_version_by_alias(settings.registered_model, "champion")
        f1 = client.get_run(version.run_id).data.metrics.get("event_f1") if version.run_id else None
        f1_text = f", event-F1 {f1:.3f}" if f1 is not None else ""
        print(f"champion        {settings.registered_model} v{version.version}{f1_text}")
    except Exception as exc:  # noqa: BLE001 - any MLflow failure is reported, not raised: status must always print
        print(f"champion        none ({str(exc).splitlines()[0][:100]})")
    try:
        from smartcloudops.events import EventStore

        events = EventStore.from_settings(settings)
        since = utcnow() - timedelta(hours=24)
        anomalies = events.recent_anomalies(limit=1000, since=since)
        actions = events.actions(limit=1000, since=since)
        events.close()
        print(f"last 24 h       {len(anomalies)} anomalies, {len(actions)} remediation actions")
        for action in actions[:5]:
            print(
                f"  {action.timestamp:%H:%M:%S} {action.action} {action.instance} "
                f"{action.result.value} ({action.rule})"
            )
        _print_breaker(settings)
    except SmartCloudOpsError as exc:
        print(f"events          unavailable ({exc})")
    return 0


def _print_breaker(settings: Settings) -> None:
    """The circuit breaker is what an operator most needs to see when actions stop."""
    from remediation.safety import RateLimitBreaker
    from smartcloudops.events import EventStore

    events = EventStore.from_settings(settings)
    try:
        state = RateLimitBreaker(
            events,
            max_actions=settings.remediation_rate_limit_actions,
            window=timedelta(minutes=settings.remediation_rate_limit_window_minutes),
            open_for=timedelta(minutes=settings.remediation_breaker_open_minutes),
        ).status(utcnow())
    finally:
        events.close()
    if state["open"]:
        print(f"breaker         OPEN until {state['open_until']}: {state['reason']}")
    else:
        print("breaker         closed")
