"""Deterministic answers: evidence in, one plain paragraph out.

Everything said here is read off the evidence, so the answer is correct without an LLM; the
LLM layer may only rephrase it. When a source is unavailable or has nothing, the answer says
so in as many words -- "no data" is an answer, a guess is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from chatops.tools import Evidence

METRIC_NAMES = {
    "cpu": "CPU", "memory": "memory", "disk": "disk", "load": "load",
    "network_in": "network in", "network_out": "network out",
}
MAX_LINES = 10

HELP_TEXT = (
    "I answer from live evidence (metrics, anomalies, logs, remediation actions, the model "
    "registry) and show it. Try: \"What's current CPU?\", \"memory on web-1 over the last "
    "2h\", \"Summarize last 3 anomalies\", \"why is db-1 anomalous?\", \"Show logs from 10 "
    "minutes ago\", \"errors containing timeout\", \"remediation history\", \"pending "
    "approvals\", \"model status\", \"status\". Follow up with \"and on db-1?\" or \"more\". "
    "To decide a pending action send exactly \"approve act-…\" or \"reject act-…\". "
    "Teach the detector with \"mark the last anomaly on web-1 as a false alarm\" or \"that "
    "was a real incident\"."
)
LABEL_HELP = ("A label needs a host and a window, an anomaly id, or an anomaly I just showed you: "
              "e.g. 'mark the last anomaly on web-1 as a false alarm', 'label web-1 from 10:00 to "
              "10:30 as an incident' (UTC).")


def fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in ("cpu", "memory", "disk"):
        return f"{value:.1f} %"
    if metric == "load":
        return f"{value:.2f}"
    if metric.startswith("network"):
        return _bytes_per_second(value)
    return f"{value:g}"


def _bytes_per_second(value: float) -> str:
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B/s"


def fmt_time(text: str | None, now: datetime | None = None) -> str:
    if not text:
        return "?"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return text
    if now is not None and when.date() == now.astimezone(UTC).date():
        return when.strftime("%H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _window(params: Mapping[str, Any]) -> str:
    minutes = params.get("since_minutes")
    if not minutes:
        return ""
    return f" in the last {_duration(int(minutes))}"


def _duration(minutes: int) -> str:
    if minutes % 1440 == 0:
        days = minutes // 1440
        return "day" if days == 1 else f"{days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "hour" if hours == 1 else f"{hours} hours"
    return "minute" if minutes == 1 else f"{minutes} minutes"


def _unavailable(ev: Evidence, what: str) -> str | None:
    if ev.get("error"):
        return f"I could not read {what}: {ev['error']}."
    return None


def compose(intent: str, params: Mapping[str, Any], evidence: Sequence[Evidence], *,
            now: datetime | None = None, refusal: str | None = None, note: str | None = None,
            known_hosts: Sequence[str] = ()) -> str:
    """The deterministic answer for one resolved question."""
    composer = _COMPOSERS.get(intent)
    if composer is None:
        text = _unknown(params, evidence, refusal, note)
    else:
        text = composer(params, evidence, now, known_hosts)
    if note and intent != "unknown":
        text = f"{note} {text}"
    return text


def _no_host_hint(params: Mapping[str, Any], known_hosts: Sequence[str]) -> str:
    host = params.get("host")
    if host and known_hosts and host not in known_hosts:
        return f" Host {host} is not one I know (known: {', '.join(known_hosts)})."
    return ""


def _metric_current(params: Mapping[str, Any], evidence: Sequence[Evidence],
                    now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    metric, host = params.get("metric"), params.get("host")
    if (bad := _unavailable(ev, "current metrics")):
        return bad + _no_host_hint(params, known_hosts)
    rows = ev["values"]
    scope = " on " + host if host else ""
    if not rows:
        what = METRIC_NAMES.get(metric, "metric") if metric else "metric"
        return f"No current {what} data{scope}." + _no_host_hint(params, known_hosts)
    when = fmt_time(ev.get("window_end"), now)
    if metric:
        parts = [f"{r['host']} {fmt_value(metric, r['value'])}" for r in rows]
        text = f"Current {METRIC_NAMES[metric]}{scope} (as of {when}): {', '.join(parts)}."
        if len(rows) > 1:
            top = max(rows, key=lambda r: r["value"])
            text += f" Highest: {top['host']} at {fmt_value(metric, top['value'])}."
        return text
    by_host: dict[str, list[str]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(
            f"{METRIC_NAMES.get(r['metric'], r['metric'])} {fmt_value(r['metric'], r['value'])}")
    lines = [f"{h}: {', '.join(v)}" for h, v in by_host.items()]
    return f"Current metrics (as of {when}): " + "; ".join(lines) + "."


def _metric_history(params: Mapping[str, Any], evidence: Sequence[Evidence],
                    now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    if (bad := _unavailable(ev, "metric history")):
        return bad
    minutes = params.get("since_minutes")
    span = f"last {_duration(int(minutes))}" if minutes else "last hour (default window)"
    rows = ev["values"]
    metric, host = params.get("metric"), params.get("host")
    if not rows:
        what = METRIC_NAMES.get(metric, "metric") if metric else "metric"
        scope = f" on {host}" if host else ""
        return f"No {what} data{scope} in the {span}." + _no_host_hint(params, known_hosts)
    lines = []
    for r in rows[:MAX_LINES * 2]:
        m = r["metric"]
        lines.append(
            f"{METRIC_NAMES.get(m, m)} on {r['host']}: avg {fmt_value(m, r['mean'])}, "
            f"min {fmt_value(m, r['min'])}, max {fmt_value(m, r['max'])} "
            f"(at {fmt_time(r.get('max_at'), now)}), latest {fmt_value(m, r['last'])} "
            f"({r['samples']} samples)"
        )
    more = f" (+{len(rows) - len(lines)} more series in the evidence)" if len(rows) > len(lines) else ""
    return f"Over the {span}: " + "; ".join(lines) + "." + more


def _anomaly_line(i: int, a: Mapping[str, Any], now: datetime | None) -> str:
    top = a.get("top_metric")
    signal = ""
    if top:
        value = (a.get("metrics") or {}).get(top)
        signal = f"; mostly {METRIC_NAMES.get(top, top)}" + (
            f" ({fmt_value(top, value)})" if value is not None else "")
    return (f"{i}. {a['host']} at {fmt_time(a['timestamp'], now)}: severity {a['severity']}, "
            f"score {a['score']}{signal}")


def _anomaly_summary(params: Mapping[str, Any], evidence: Sequence[Evidence],
                     now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    if (bad := _unavailable(ev, "anomalies")):
        return bad
    rows = ev["values"]
    scope = _anomaly_scope(params)
    offset = int(ev.get("offset") or 0)
    if not rows:
        if offset:
            return f"No more anomalies{scope} beyond the {offset} already shown."
        return f"No anomalies recorded{scope}." + _no_host_hint(params, known_hosts)
    total = ev.get("total")
    head = ""
    if total is not None and params.get("since_minutes"):
        head = f"{total} anomal{'y' if total == 1 else 'ies'}{scope}. "
    which = "most recent" if not offset else f"next (after the first {offset})"
    noun = "anomaly" if len(rows) == 1 else "anomalies"
    head += f"The {len(rows)} {which} {noun}, newest first: "
    lines = [_anomaly_line(offset + i + 1, a, now) for i, a in enumerate(rows)]
    return head + "; ".join(lines) + "."


def _anomaly_scope(params: Mapping[str, Any]) -> str:
    scope = ""
    if params.get("metric"):
        scope += f" driven by {METRIC_NAMES[params['metric']]}"
    if params.get("host"):
        scope += f" on {params['host']}"
    return scope + _window(params)


def _anomaly_explain(params: Mapping[str, Any], evidence: Sequence[Evidence],
                     now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    if (bad := _unavailable(ev, "anomalies")):
        return bad
    rows = ev["values"]
    if not rows:
        return (f"No anomaly to explain{_anomaly_scope(params)}: none is recorded."
                + _no_host_hint(params, known_hosts))
    baselines: dict[str, dict[str, float]] = {}
    for b in evidence[1:]:
        for v in b.get("values", []):
            baselines.setdefault(v["anomaly_id"], {})[v["metric"]] = v["median"]
    texts = []
    for a in rows[:3]:
        contrib = a.get("contributions") or {}
        ranked = sorted(contrib.items(), key=lambda kv: kv[1] or 0, reverse=True)
        parts = [f"{a['host']} at {fmt_time(a['timestamp'], now)} (severity {a['severity']}, "
                 f"score {a['score']}, model {a['model_version']})"]
        if ranked:
            drivers = ", ".join(f"{METRIC_NAMES.get(m, m)} ({w})" for m, w in ranked)
            parts.append(f"the model's score was driven by {drivers}")
        base = baselines.get(a["anomaly_id"], {})
        comparisons = []
        for m, _ in ranked[:2] or [(a.get("top_metric"), None)]:
            if not m:
                continue
            value = (a.get("metrics") or {}).get(m)
            if value is None:
                continue
            typical = base.get(m)
            comparisons.append(
                f"{METRIC_NAMES.get(m, m)} was {fmt_value(m, value)}"
                + (f" vs a typical {fmt_value(m, typical)} in the hour before" if typical is not None
                   else " (no baseline available for the hour before)"))
        if comparisons:
            parts.append("; ".join(comparisons))
        texts.append(": ".join(parts[:2]) + (". " + parts[2] if len(parts) > 2 else "") + ".")
    return " ".join(texts)


def _logs(params: Mapping[str, Any], evidence: Sequence[Evidence],
          now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    if (bad := _unavailable(ev, "the logs")):
        return bad
    rows = ev["values"]
    filters = []
    if params.get("since_minutes"):
        filters.append(f"last {_duration(int(params['since_minutes']))}")
    if params.get("level"):
        filters.append(f"level {params['level']} and above")
    if params.get("contains"):
        filters.append(f"containing {params['contains']!r}")
    if params.get("host"):
        filters.append(f"mentioning {params['host']}")
    where = f" ({', '.join(filters)})" if filters else ""
    offset = int(ev.get("offset") or 0)
    if not rows:
        return (f"No more log lines{where}." if offset
                else f"No log lines match{where}.")
    shown = rows[:MAX_LINES]
    lines = [
        f"{fmt_time(r.get('timestamp'), now)} {str(r.get('level') or '').upper()} "
        f"[{r.get('component') or r.get('logger') or '?'}] {r.get('message', '')}"
        for r in shown
    ]
    head = f"{len(rows)} log line{'s' if len(rows) != 1 else ''}{where}, newest first"
    tail = ""
    if len(rows) > len(shown):
        tail = f" (first {len(shown)} shown; all {len(rows)} are in the evidence)"
    return head + tail + ": " + " | ".join(lines)


def _action_line(r: Mapping[str, Any], now: datetime | None) -> str:
    who = f", by {r['approved_by']}" if r.get("approved_by") else ""
    dry = " (dry run)" if r.get("dry_run") else ""
    return (f"{r['action_id']} {fmt_time(r.get('timestamp'), now)}: {r['action']} on "
            f"{r['instance']} -> {r['result']}{dry} (rule {r.get('rule')}{who})")


def _remediation(params: Mapping[str, Any], evidence: Sequence[Evidence],
                 now: datetime | None, known_hosts: Sequence[str]) -> str:
    if params.get("action_id"):
        ev = evidence[0]
        if (bad := _unavailable(ev, "the action")):
            return bad
        if not ev["values"]:
            return f"No remediation action {params['action_id']} is recorded."
        r = ev["values"][0]
        text = _action_line(r, now) + "."
        if r.get("detail"):
            text += f" Detail: {r['detail']}"
        if r["result"] == "pending_approval":
            aid = r["action_id"]
            text += f" It is waiting for approval: send 'approve {aid}' or 'reject {aid}'."
        return text
    history = next((e for e in evidence if e.get("kind") == "history"), evidence[0])
    pending = next((e for e in evidence if e.get("kind") == "pending"), None)
    scope = (f" on {params['host']}" if params.get("host") else "") + _window(params)
    parts = []
    if (bad := _unavailable(history, "remediation history")):
        parts.append(bad)
    elif history["values"]:
        offset = int(history.get("offset") or 0)
        label = "most recent" if not offset else f"next (after the first {offset})"
        parts.append(f"The {len(history['values'])} {label} remediation actions{scope}: "
                     + "; ".join(_action_line(r, now) for r in history["values"][:MAX_LINES]) + ".")
    else:
        parts.append(f"No remediation actions recorded{scope}.")
    if pending is not None:
        if (bad := _unavailable(pending, "pending approvals")):
            parts.append(bad)
        elif pending["values"]:
            parts.append(f"Waiting for approval ({len(pending['values'])}): "
                         + "; ".join(_action_line(r, now) for r in pending["values"][:MAX_LINES])
                         + ". Approve with 'approve <action id>' or reject with 'reject <action id>'.")
        else:
            parts.append("Nothing is waiting for approval.")
    return " ".join(parts)


def _decision(verb: str) -> Any:
    def compose_decision(params: Mapping[str, Any], evidence: Sequence[Evidence],
                         now: datetime | None, known_hosts: Sequence[str]) -> str:
        ev = evidence[0]
        action_id = params.get("action_id")
        if ev.get("error"):
            return f"Did not {verb} {action_id}: {ev['error']}."
        r = ev["values"][0] if ev["values"] else {}
        done = "Approved" if verb == "approve" else "Rejected"
        if "action" in r:
            return f"{done} {action_id}: " + _action_line(r, now).split(": ", 1)[1] + "."
        return f"{done} {action_id}."
    return compose_decision


KIND_WORDS = {"incident": "a real incident", "false_alarm": "a false alarm"}


def _label(params: Mapping[str, Any], evidence: Sequence[Evidence],
           now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    kind = KIND_WORDS.get(str(params.get("kind")), str(params.get("kind")))
    if ev.get("error"):
        return f"I stored no label ({kind}): {str(ev['error']).removeprefix('refused: ')}. " + LABEL_HELP
    r = ev["values"][0]
    stored = ("Stored label " if r.get("created") else "Already stored as label ") + str(r["label_id"])
    about = ""
    if r.get("anomaly_id"):
        about = f" (anomaly {r['anomaly_id']} at {fmt_time(r.get('anomaly_timestamp'), now)}, {r['target']})"
    elif r.get("target") and r["target"] != "window":
        about = f" ({r['target']})"
    text = (f"{stored}: {r['host']} from {fmt_time(r['start'], now)} to {fmt_time(r['end'], now)}"
            f"{about} is {KIND_WORDS.get(r['kind'], r['kind'])}, by {r['author']}")
    if r.get("note"):
        text += f", note: \"{r['note']}\""
    text += "."
    if r.get("created") is False and r["kind"] == params.get("kind"):
        text += " Nothing new was written."
    if r["kind"] == "incident":
        text += " Training validates on it as an incident window."
    return text


def _model(params: Mapping[str, Any], evidence: Sequence[Evidence],
           now: datetime | None, known_hosts: Sequence[str]) -> str:
    ev = evidence[0]
    if ev.get("error"):
        return f"Model status {ev['error']}."
    m = ev["values"][0]
    text = f"Champion: {m['model']} version {m['version']}"
    if m.get("f1") is not None:
        text += f", {m.get('f1_metric') or 'F1'} {m['f1']}"
    else:
        text += ", no F1 metric logged on its run"
    if m.get("trained_at"):
        text += f", trained {fmt_time(m['trained_at'], now)}"
    if m.get("run_id"):
        text += f" (run {m['run_id']})"
    return text + "."


def _overview(params: Mapping[str, Any], evidence: Sequence[Evidence],
              now: datetime | None, known_hosts: Sequence[str]) -> str:
    by_source: dict[str, Evidence] = {}
    for ev in evidence:
        key = ev.get("kind") or ev["source"]
        known = ("history", "pending", "breaker", "mlflow", "event_store")
        by_source.setdefault(key if key in known else "metrics", ev)
    parts: list[str] = []
    metrics = by_source.get("metrics")
    if metrics is not None:
        if metrics.get("error"):
            parts.append(f"Metrics {metrics['error']}.")
        elif not metrics["values"]:
            parts.append("No current metric data." + _no_host_hint(params, known_hosts))
        else:
            hosts = sorted({r["host"] for r in metrics["values"]})
            busiest = []
            for metric in ("cpu", "memory", "disk"):
                rows = [r for r in metrics["values"] if r["metric"] == metric]
                if rows:
                    top = max(rows, key=lambda r: r["value"])
                    busiest.append(f"{METRIC_NAMES[metric]} {top['host']} {fmt_value(metric, top['value'])}")
            label = f"Host {hosts[0]}" if len(hosts) == 1 else f"{len(hosts)} hosts reporting"
            parts.append(f"{label}; highest " + ", ".join(busiest) + ".")
    anomalies = by_source.get("event_store")
    if anomalies is not None:
        if anomalies.get("error"):
            parts.append(f"Anomalies {anomalies['error']}.")
        else:
            total = anomalies.get("total", len(anomalies["values"]))
            parts.append(f"{total} anomal{'y' if total == 1 else 'ies'} in the last "
                         f"{_duration(_window_minutes(anomalies))}"
                         + (f" (latest: {anomalies['values'][0]['host']} at "
                            f"{fmt_time(anomalies['values'][0]['timestamp'], now)})"
                            if anomalies["values"] else "") + ".")
    pending = by_source.get("pending")
    if pending is not None:
        if pending.get("error"):
            parts.append(f"Pending approvals {pending['error']}.")
        else:
            ids = ", ".join(r["action_id"] for r in pending["values"][:5])
            count = len(pending["values"])
            parts.append(f"{count} action{'' if count == 1 else 's'} waiting for approval: {ids}."
                         if count else "Nothing is waiting for approval.")
    breaker = by_source.get("breaker")
    if breaker is not None and not breaker.get("error") and breaker["values"]:
        state = breaker["values"][0]
        if state.get("open"):
            parts.append(f"Remediation circuit breaker is OPEN until {state.get('open_until')} "
                         f"({state.get('reason')}): no automatic actions until then.")
        else:
            parts.append("Remediation circuit breaker is closed.")
    history = by_source.get("history")
    if history is not None and not history.get("error") and history["values"]:
        parts.append("Last action: " + _action_line(history["values"][0], now) + ".")
    model = by_source.get("mlflow")
    if model is not None:
        parts.append(_model(params, [model], now, known_hosts))
    return " ".join(parts)


def _window_minutes(ev: Evidence) -> int:
    try:
        start = datetime.fromisoformat(str(ev["window_start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(ev["window_end"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 60
    return max(1, round((end - start).total_seconds() / 60))


def _help(params: Mapping[str, Any], evidence: Sequence[Evidence],
          now: datetime | None, known_hosts: Sequence[str]) -> str:
    return HELP_TEXT


def _unknown(params: Mapping[str, Any], evidence: Sequence[Evidence], refusal: str | None,
             note: str | None) -> str:
    if refusal:
        text = refusal
        pending = next((e for e in evidence if e.get("kind") == "pending" and e.get("values")), None)
        if pending:
            text += " Waiting for approval now: " + ", ".join(
                f"{r['action_id']} ({r['action']} on {r['instance']})" for r in pending["values"][:5]) + "."
        return text
    if note:
        return note
    return "I did not understand that. " + HELP_TEXT


_COMPOSERS = {
    "metric.current": _metric_current,
    "metric.history": _metric_history,
    "anomaly.summary": _anomaly_summary,
    "anomaly.explain": _anomaly_explain,
    "logs.search": _logs,
    "remediation.history": _remediation,
    "remediation.approve": _decision("approve"),
    "remediation.reject": _decision("reject"),
    "label.add": _label,
    "model.status": _model,
    "status.overview": _overview,
    "help": _help,
}
