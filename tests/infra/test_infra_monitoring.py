"""deploy/prometheus and deploy/grafana: valid, tested rules; dashboards whose every query
names something the stack really exports (node_exporter, the simulator, the scoring service).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from exported_metrics import all_exported, promql_metric_names
from helpers import require_binary
from infra_helpers import REPO

from smartcloudops.sources import PROMQL

PROM_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
INSTALL = "apt-get install prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool", INSTALL)
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=PROM_DIR)


def test_prometheus_config_loads_the_alert_rules() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    check = _promtool("check", "config", "prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 rule files found" in check.stdout + check.stderr


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    check = _promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    unit = _promtool("test", "rules", "alerts.test.yml")
    assert unit.returncode == 0, unit.stdout + unit.stderr


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_is_labelled_documented_and_linked_to_the_runbook() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    rules = _alert_rules()
    assert {r["alert"] for r in rules} >= {
        "HostHighCpu",
        "HostHighMemory",
        "HostDiskFilling",
        "ScrapeTargetDown",
        "ScoringModelNotLoaded",
        "CriticalAnomalyDetected",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        link = rule["annotations"]["runbook"]
        assert link.startswith("docs/runbook.md#"), rule["alert"]
        assert link.split("#", 1)[1] in anchors, (
            f"{rule['alert']}: runbook has no section #{link.split('#', 1)[1]}"
        )


def _anchor(heading: str) -> str:
    # GitHub's anchor rule: lower case, drop punctuation, spaces to dashes
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_alert_host_expressions_are_the_detectors_promql() -> None:
    rules = {r["alert"]: " ".join(r["expr"].split()) for r in _alert_rules()}
    assert " ".join(PROMQL["cpu"].split()) in rules["HostHighCpu"]
    assert " ".join(PROMQL["memory"].split()) in rules["HostHighMemory"]
    assert " ".join(PROMQL["disk"].split()) in rules["HostDiskFilling"]


def test_every_alert_names_an_exported_metric() -> None:
    exported = all_exported()
    for rule in _alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= exported, f"{rule['alert']}: nothing exports {sorted(names - exported)}"


# -- Grafana ------------------------------------------------------------------------------------


def _datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text())
    assert doc["apiVersion"] == 1
    return {ds["uid"]: ds for ds in doc["datasources"]}


def test_datasources_are_provisioned_without_secrets_in_the_file() -> None:
    sources = _datasources()
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["prometheus"]["url"] == "${GRAFANA_PROMETHEUS_URL}"
    assert sources["prometheus"]["isDefault"] is True
    events = sources["events"]
    assert events["type"] == "grafana-postgresql-datasource"
    assert events["user"] == "grafana_reader"
    assert events["secureJsonData"]["password"] == "${GRAFANA_DB_READER_PASSWORD}"
    assert events["jsonData"]["database"] == "smartcloudops"


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    doc = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    provider = doc["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    sys.path.insert(0, str(GRAFANA_DIR))
    from build_dashboards import render_all

    rendered = render_all()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], (
            f"{path.name} is stale: make dashboards"
        )


def _panels() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        out += [(board["uid"], panel) for panel in board["panels"]]
    return out


def test_dashboard_structure() -> None:
    sources = _datasources()
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] not in uids
        uids.add(board["uid"])
        assert board["title"] and board["schemaVersion"] >= 36
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            assert panel["type"] in {"timeseries", "stat", "table"}
            assert (
                set(panel["gridPos"]) == {"x", "y", "w", "h"}
                and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            )
            assert panel["targets"], f"{panel['title']}: no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in sources, f"{panel['title']}: unknown data source"
    titles = {p["title"] for _, p in _panels()}
    assert {
        "CPU busy",
        "Memory used",
        "Disk used (/)",
        "Anomalies by severity",
        "Remediation actions by result",
        "Serving model version",
    } <= titles


def test_every_prometheus_panel_names_an_exported_metric() -> None:
    exported = all_exported()
    checked = 0
    for _, panel in _panels():
        for target in panel["targets"]:
            if target["datasource"]["uid"] != "prometheus":
                continue
            names = promql_metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            assert names <= exported, f"{panel['title']}: nothing exports {sorted(names - exported)}"
            checked += 1
    assert checked >= 10


def test_host_panels_use_the_detectors_promql_verbatim() -> None:
    hosts = json.loads((GRAFANA_DIR / "dashboards" / "smartcloudops-hosts.json").read_text())
    exprs = [t["expr"] for p in hosts["panels"] for t in p["targets"]]
    for metric, promql in PROMQL.items():
        assert any(promql in e for e in exprs), f"no panel shows {metric} with the detectors' PromQL"


def test_sql_panels_name_event_store_tables_and_columns() -> None:
    import sqlalchemy as sa

    from smartcloudops.events import _tables

    tables = _tables(sa.MetaData())
    for _, panel in _panels():
        for target in panel["targets"]:
            if target["datasource"]["uid"] != "events":
                continue
            sql = target["rawSql"]
            table = re.search(r"\bFROM\s+(\w+)", sql, re.I)
            assert table and table.group(1) in tables, f"{panel['title']}: unknown table in {sql!r}"
            columns = set(tables[table.group(1)].columns.keys())
            select = re.search(r"SELECT(.*?)\bFROM\b", sql, re.S | re.I)
            assert select
            words = set(re.findall(r"\b([a-z_]+)\b", re.sub(r"'[^']*'", "", select.group(1))))
            sql_words = {
                "count",
                "as",
                "case",
                "when",
                "then",
                "else",
                "end",
                "metric",
                "value",
                "pending",
                "time",
            }
            unknown = words - columns - sql_words
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not columns of {table.group(1)}"


@pytest.mark.parametrize("name", ["prometheus.yml", "alerts.yml", "alerts.test.yml"])
def test_prometheus_files_are_plain_yaml(name: str) -> None:
    assert isinstance(yaml.safe_load((PROM_DIR / name).read_text()), dict)
