"""Real Prometheus + real node_exporter + the simulator's exporters, all on loopback.

One Prometheus for the whole module (1 s scrape interval). A cpu_hog on web-1 is injected
before Prometheus starts, so every CPU sample it scrapes from web-1 is the hog's.
Missing binaries FAIL with the install command: CI (`.ci/run`) installs them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from helpers import free_port, require_binary, stop_process, wait_until

from smartcloudops.domain import CANONICAL_METRICS, long_to_wide
from smartcloudops.errors import SourceError
from smartcloudops.extract import extract_interval
from smartcloudops.settings import Settings
from smartcloudops.simulator import ExporterGroup, FleetSimulator, serve_exporters
from smartcloudops.sources import PrometheusSource, get_metric_source
from smartcloudops.store import LocalMetricStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]
NODE_HOST = "node-local"
INSTALL = "apt-get install prometheus prometheus-node-exporter"


@dataclass
class Stack:
    url: str
    sim: FleetSimulator
    exporters: ExporterGroup
    source: PrometheusSource
    #: when every series had two samples: Prometheus holds no data from before this
    ready_at: datetime


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def _scrape_config(targets: list[tuple[str, str]], node_target: str) -> str:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "simulator",
                "static_configs": [{"targets": [t], "labels": {"host": h}} for h, t in targets],
            },
            {
                "job_name": "node",
                "static_configs": [{"targets": [node_target], "labels": {"host": NODE_HOST}}],
            },
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_binary("prometheus", INSTALL)
    node_exporter = require_binary("prometheus-node-exporter", INSTALL)
    work = tmp_path_factory.mktemp("prometheus")
    sim = FleetSimulator(work / "sim", HOSTS, schedule=False)
    sim.inject("cpu_hog", "web-1", start=datetime.now(UTC) - timedelta(minutes=5), duration_minutes=120)

    procs: list[subprocess.Popen[bytes]] = []
    exporters = serve_exporters(sim, base_port=0)
    try:
        node_port = free_port()
        procs.append(_start(
            [node_exporter, f"--web.listen-address=127.0.0.1:{node_port}", "--no-collector.systemd"],
            work / "node_exporter.log",
        ))
        config = work / "prometheus.yml"
        targets = list(zip(HOSTS, exporters.targets, strict=True))
        config.write_text(_scrape_config(targets, f"127.0.0.1:{node_port}"))
        prom_port = free_port()
        procs.append(_start(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--storage.tsdb.retention.time=1h",
            ],
            work / "prometheus.log",
        ))
        url = f"http://127.0.0.1:{prom_port}"

        def all_up() -> bool:
            for proc, log in zip(procs, ("node_exporter.log", "prometheus.log"), strict=True):
                if proc.poll() is not None:
                    tail = (work / log).read_text()[-2000:]
                    pytest.fail(f"{log.split('.')[0]} exited with {proc.returncode}:\n{tail}")
            body = httpx.get(f"{url}/api/v1/targets", timeout=2).json()
            active = body["data"]["activeTargets"]
            return len(active) == len(HOSTS) + 1 and all(t["health"] == "up" for t in active)

        wait_until(all_up, 60, "Prometheus to report all 6 targets up")
        source = PrometheusSource(url, timeout_seconds=5)
        # rate(...[1m]) needs two samples of every counter in its window
        wait_until(lambda: _complete(source.latest()), 30, "every canonical metric for every host")
        yield Stack(url, sim, exporters, source, datetime.now(UTC))
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        exporters.stop()


def _complete(frame: pd.DataFrame) -> bool:
    return {(h, m) for h, m in zip(frame["host"], frame["metric"], strict=True)} == {
        (h, m) for h in [*HOSTS, NODE_HOST] for m in CANONICAL_METRICS
    }


def test_hosts(stack: Stack) -> None:
    assert stack.source.hosts() == sorted([*HOSTS, NODE_HOST])


def test_latest_matches_the_simulator(stack: Stack) -> None:
    frame = stack.source.latest()
    assert _complete(frame)
    assert list(frame.columns) == ["timestamp", "host", "metric", "value"]
    got = long_to_wide(frame).set_index("host")
    want = long_to_wide(stack.sim.latest()).set_index("host")
    for host in HOSTS:
        # gauges: the last scrape is under 2 s old, almost always the same minute's value
        assert got.loc[host, "memory"] == pytest.approx(want.loc[host, "memory"], abs=4)
        assert got.loc[host, "disk"] == pytest.approx(want.loc[host, "disk"], abs=1)
        assert got.loc[host, "load"] == pytest.approx(want.loc[host, "load"], abs=1.0)
        # counters through rate(...[1m]): within noise of the minute(s) the window spans
        assert got.loc[host, "cpu"] == pytest.approx(want.loc[host, "cpu"], abs=10)
        # rate() divides by the whole 1m window, so in Prometheus's first minute network reads
        # low by the same factor for in and out; their ratio is exact from the start
        assert got.loc[host, "network_in"] > 0
        ratio = got.loc[host, "network_out"] / got.loc[host, "network_in"]
        assert ratio == pytest.approx(want.loc[host, "network_out"] / want.loc[host, "network_in"], rel=0.2)
    # the cpu_hog on web-1: ~95 %, its role peer unaffected
    assert got.loc["web-1", "cpu"] == pytest.approx(95, abs=5)
    assert got.loc["web-2", "cpu"] < 85


def test_query_range_returns_every_metric_for_every_host(stack: Stack) -> None:
    end = datetime.now(UTC)
    start = max(end - timedelta(seconds=20), stack.ready_at)
    frame = stack.source.query_range(start, end, step_seconds=1)
    assert _complete(frame.drop_duplicates(["host", "metric"]))
    assert frame["timestamp"].min() >= pd.Timestamp(start) - pd.Timedelta(seconds=1)
    assert frame["timestamp"].max() <= pd.Timestamp(end) + pd.Timedelta(seconds=1)
    wide = long_to_wide(frame)
    web1 = wide[wide["host"] == "web-1"]
    assert web1["cpu"].median() == pytest.approx(95, abs=5)
    # compare gauges point by point with what the simulator says for those instants
    sim = long_to_wide(stack.sim.values(start, end + timedelta(minutes=1), step_seconds=60))
    for host in HOSTS:
        disk = wide.loc[wide["host"] == host, "disk"]
        ref = sim.loc[sim["host"] == host, "disk"]
        assert (disk - ref.median()).abs().max() < 1.5
    # the real host answers the same PromQL with plausible values
    node = wide[wide["host"] == NODE_HOST].dropna()
    assert len(node) >= 1
    for metric in ("cpu", "memory", "disk"):
        assert node[metric].between(0, 100).all(), metric
    assert (node["load"] >= 0).all() and (node["network_in"] >= 0).all()


def test_query_range_host_filter(stack: Stack) -> None:
    end = datetime.now(UTC)
    frame = stack.source.query_range(end - timedelta(seconds=10), end, 5, hosts=["db-1", NODE_HOST])
    assert set(frame["host"]) == {"db-1", NODE_HOST}
    assert set(frame["metric"]) == set(CANONICAL_METRICS)


def test_settings_pick_prometheus_and_extract_reads_from_it(stack: Stack, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, prometheus_url=stack.url, step_seconds=1)
    source = get_metric_source(settings)
    assert isinstance(source, PrometheusSource)
    start = stack.ready_at.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (start + timedelta(seconds=4) - datetime.now(UTC)).total_seconds()))
    end = datetime.now(UTC).replace(microsecond=0)
    store = LocalMetricStore(tmp_path / "data")
    result = extract_interval(start, end, settings=settings, store=store)
    assert result.hosts == len(HOSTS) + 1
    steps = int((end - start).total_seconds() / settings.step_seconds)
    assert result.rows >= steps * (len(HOSTS) + 1) * len(CANONICAL_METRICS) * 0.8
    back = store.read(start, end)
    assert len(back) == result.rows
    assert back["timestamp"].max() < pd.Timestamp(end)


def test_unreachable_or_wrong_prometheus_is_a_source_error(stack: Stack) -> None:
    with pytest.raises(SourceError, match="unreachable"):
        PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_seconds=2).latest()
    with pytest.raises(SourceError, match="404"):
        PrometheusSource(f"{stack.url}/not-prometheus", timeout_seconds=2).hosts()


def test_deploy_config_passes_promtool() -> None:
    promtool = require_binary("promtool", INSTALL)
    path = REPO / "deploy" / "prometheus" / "prometheus.yml"
    assert path.exists(), f"{path} is missing"
    check = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    config = yaml.safe_load(path.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= {"node", "simulator", "scoring", "chatops"}
    sim = jobs["simulator"]["static_configs"]
    ports = [int(t.rsplit(":", 1)[1]) for group in sim for t in group["targets"]]
    assert ports == [9201, 9202, 9203, 9204, 9205]
    assert [group["labels"]["host"] for group in sim] == HOSTS
    assert all("host" in group["labels"] for group in jobs["node"]["static_configs"])
    assert jobs["scoring"]["static_configs"][0]["targets"][0].endswith(":8080")
    assert jobs["chatops"]["static_configs"][0]["targets"][0].endswith(":8090")
