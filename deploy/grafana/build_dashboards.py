"""Generate the Grafana dashboards in deploy/grafana/dashboards/ (``make dashboards``).

The host panels use the detectors' own PromQL (``smartcloudops.sources.PROMQL``) so a graph
and the model always show the same number; the detection panels use the scoring service's
metric names (``serving/metrics.py``) and the event store's tables (``smartcloudops/events.py``).
tests/infra checks that the committed JSON is what this script writes, and that every query
names something that is really exported.

Run: ``.venv/bin/python deploy/grafana/build_dashboards.py [--check]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smartcloudops.sources import PROMQL

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
EVENTS = {"type": "grafana-postgresql-datasource", "uid": "events"}
SCHEMA_VERSION = 39

#: Canonical metric -> (panel title, unit, max) for the host dashboard.
HOST_PANELS: dict[str, tuple[str, str, float | None]] = {
    "cpu": ("CPU busy", "percent", 100),
    "memory": ("Memory used", "percent", 100),
    "disk": ("Disk used (/)", "percent", 100),
    "load": ("Load average (1 min)", "short", None),
    "network_in": ("Network in", "Bps", None),
    "network_out": ("Network out", "Bps", None),
}

#: Severity names as the scoring service labels them (smartcloudops.domain.Severity).
SEVERITY_COLORS = {"low": "blue", "medium": "yellow", "high": "orange", "critical": "red"}


def host_filtered(promql: str) -> str:
    """Keep only the hosts picked in the dashboard's ``host`` variable.

    ``and on (host)`` filters by label without changing the left side's values, so the
    expression stays the detectors' PromQL verbatim.
    """
    return f'({promql}) and on (host) node_load1{{host=~"$host"}}'


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def prom_target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": PROMETHEUS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def sql_target(sql: str, fmt: str, ref: str = "A") -> dict[str, Any]:
    return {
        "datasource": EVENTS,
        "refId": ref,
        "rawSql": sql,
        "format": fmt,
        "editorMode": "code",
        "rawQuery": True,
    }


def timeseries(
    panel_id: int,
    title: str,
    targets: list[dict[str, Any]],
    grid: dict[str, int],
    unit: str = "short",
    max_value: float | None = None,
    stacked_bars: bool = False,
    description: str = "",
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "min": 0}
    if max_value is not None:
        defaults["max"] = max_value
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stacked_bars:
        custom.update({"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal", "group": "A"}})
    defaults["custom"] = custom
    datasource = targets[0]["datasource"]
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def stat(
    panel_id: int,
    title: str,
    target: dict[str, Any],
    grid: dict[str, int],
    text_mode: str = "value",
    mappings: list[dict[str, Any]] | None = None,
    description: str = "",
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "gridPos": grid,
        "targets": [target],
        "fieldConfig": {"defaults": {"mappings": mappings or [], "unit": "short"}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
            "colorMode": "value",
            "graphMode": "none",
        },
    }


def table(
    panel_id: int, title: str, target: dict[str, Any], grid: dict[str, int], description: str = ""
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "table",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "gridPos": grid,
        "targets": [target],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], templating: list[dict[str, Any]], tags: list[str]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["smartcloudops", *tags],
        "timezone": "utc",
        "editable": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def hosts_dashboard() -> dict[str, Any]:
    host_var = {
        "name": "host",
        "label": "Host",
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": "label_values(node_load1, host)", "refId": "hosts"},
        "definition": "label_values(node_load1, host)",
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }
    panels = []
    for i, (metric, (title, unit, max_value)) in enumerate(HOST_PANELS.items()):
        panels.append(
            timeseries(
                i + 1,
                title,
                [prom_target(host_filtered(PROMQL[metric]), legend="{{host}}")],
                _grid(12 * (i % 2), 8 * (i // 2), 12, 8),
                unit=unit,
                max_value=max_value,
                description=f"Canonical metric `{metric}`, the detectors' PromQL (smartcloudops/sources.py).",
            )
        )
    return dashboard("smartcloudops-hosts", "SmartCloudOps — Hosts", panels, [host_var], ["hosts"])


def detection_dashboard() -> dict[str, Any]:
    p = "smartcloudops_scoring"
    score_rate = f'rate({p}_request_duration_seconds_bucket{{route="/v1/score"}}[$__rate_interval])'
    loaded_mappings = [
        {
            "type": "value",
            "options": {
                "0": {"text": "no model", "color": "red"},
                "1": {"text": "serving", "color": "green"},
            },
        }
    ]
    panels = [
        stat(
            1,
            "Serving model version",
            prom_target(f"{p}_model_info", legend="{{version}}", instant=True),
            _grid(0, 0, 6, 4),
            text_mode="name",
            description="The registry version being served (the champion alias unless --model-uri).",
        ),
        stat(
            2,
            "Model loaded",
            prom_target(f"max({p}_model_loaded)", instant=True),
            _grid(6, 0, 6, 4),
            mappings=loaded_mappings,
        ),
        stat(
            3,
            "Pending approvals",
            sql_target("SELECT count(*) AS pending FROM actions WHERE result = 'pending_approval'", "table"),
            _grid(12, 0, 6, 4),
            description="Remediation actions waiting for 'approve act-…' in ChatOps.",
        ),
        stat(
            4,
            "Model loads / failures (24h)",
            prom_target(
                f"sum(increase({p}_model_load_failures_total[24h]))", legend="failures", instant=True
            ),
            _grid(18, 0, 6, 4),
            text_mode="value_and_name",
        ),
        timeseries(
            5,
            "Anomalies by severity",
            [
                prom_target(
                    f"sum by (severity) (increase({p}_anomalies_total[$__rate_interval]))",
                    legend="{{severity}}",
                )
            ],
            _grid(0, 4, 12, 8),
            stacked_bars=True,
            description="Rows the scoring service flagged, by severity (low, medium, high, critical).",
        ),
        timeseries(
            6,
            "Remediation actions by result",
            [
                sql_target(
                    "SELECT $__timeGroupAlias(timestamp, '5m'), result AS metric, count(*) AS value\n"
                    "FROM actions\nWHERE $__timeFilter(timestamp)\nGROUP BY 1, 2\nORDER BY 1",
                    "time_series",
                )
            ],
            _grid(12, 4, 12, 8),
            stacked_bars=True,
            description="From the event store: succeeded, failed, dry_run, skipped, pending_approval, ...",
        ),
        timeseries(
            7,
            "Rows scored per second",
            [prom_target(f"sum(rate({p}_rows_scored_total[$__rate_interval]))", legend="rows/s")],
            _grid(0, 12, 12, 8),
        ),
        timeseries(
            8,
            "Scoring latency (POST /v1/score)",
            [
                prom_target(
                    f"histogram_quantile(0.5, sum by (le) ({score_rate}))",
                    legend="p50",
                ),
                prom_target(
                    f"histogram_quantile(0.99, sum by (le) ({score_rate}))",
                    legend="p99",
                    ref="B",
                ),
            ],
            _grid(12, 12, 12, 8),
            unit="s",
        ),
        table(
            9,
            "Recent remediation actions",
            sql_target(
                "SELECT timestamp, action, instance, result, rule, dry_run, approved_by,\n"
                "  duration_ms, action_id\n"
                "FROM actions\nWHERE $__timeFilter(timestamp)\nORDER BY timestamp DESC\nLIMIT 50",
                "table",
            ),
            _grid(0, 20, 24, 8),
            description="The event store's copy; `smartcloudops audit verify` checks the hash-chained files.",
        ),
        table(
            10,
            "Recent anomalies",
            sql_target(
                "SELECT timestamp, host,\n"
                "  CASE severity WHEN 1 THEN 'low' WHEN 2 THEN 'medium' WHEN 3 THEN 'high'\n"
                "    ELSE 'critical' END AS severity,\n"
                "  score, model_version, anomaly_id\n"
                "FROM anomalies\nWHERE $__timeFilter(timestamp)\nORDER BY timestamp DESC\nLIMIT 50",
                "table",
            ),
            _grid(0, 28, 12, 8),
        ),
        table(
            11,
            "Firing alerts",
            prom_target('ALERTS{alertstate="firing"}', instant=True),
            _grid(12, 28, 12, 8),
            description="Rules in deploy/prometheus/alerts.yml that are firing now.",
        ),
    ]
    return dashboard(
        "smartcloudops-detection", "SmartCloudOps — Detection & remediation", panels, [], ["detection"]
    )


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    boards = {
        "smartcloudops-hosts.json": hosts_dashboard(),
        "smartcloudops-detection.json": detection_dashboard(),
    }
    return {name: json.dumps(board, indent=2, ensure_ascii=False) + "\n" for name, board in boards.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run make dashboards): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
