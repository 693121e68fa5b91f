"""The fleet simulator: deterministic values, incidents and labels, remediation hooks, exporters."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smartcloudops.domain import CANONICAL_METRICS, long_to_wide
from smartcloudops.errors import InputError, StoreError
from smartcloudops.settings import get_settings
from smartcloudops.simulator import (
    INCIDENT_KINDS,
    INCIDENT_METRICS,
    NAB_TIME_FORMAT,
    FleetSimulator,
    serve_exporters,
)

HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]
# A Monday, so the weekend dip does not enter windows that start here.
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


def _sim(path: Path, schedule: bool = False, seed: int = 7) -> FleetSimulator:
    return FleetSimulator(path, HOSTS, seed=seed, schedule=schedule)


def _series(sim: FleetSimulator, host: str, metric: str, start: datetime, end: datetime) -> pd.Series:
    frame = sim.values(start, end, hosts=[host])
    picked = frame[frame["metric"] == metric]
    return pd.Series(picked["value"].to_numpy(), index=pd.DatetimeIndex(picked["timestamp"]))


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


# -- determinism ---------------------------------------------------------------------------


def test_values_are_long_format_on_the_step_grid(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    frame = sim.values(T0 + timedelta(seconds=10), T0 + timedelta(minutes=10), step_seconds=60)
    assert list(frame.columns) == ["timestamp", "host", "metric", "value"]
    assert set(frame["metric"]) == set(CANONICAL_METRICS)
    assert set(frame["host"]) == set(HOSTS)
    # start rounds up to the grid; the end is exclusive
    assert frame["timestamp"].min() == pd.Timestamp(T0 + timedelta(minutes=1))
    assert frame["timestamp"].max() == pd.Timestamp(T0 + timedelta(minutes=9))
    assert len(frame) == 9 * len(HOSTS) * len(CANONICAL_METRICS)
    wide = long_to_wide(frame)
    assert wide["cpu"].between(0, 100).all() and wide["memory"].between(0, 100).all()
    assert wide["disk"].between(0, 100).all() and (wide["load"] >= 0).all()
    assert (wide["network_in"] > 0).all() and (wide["network_out"] > 0).all()


def test_same_seed_same_values_across_instances(tmp_path: Path) -> None:
    start, end = T0, T0 + timedelta(days=2)
    a = _sim(tmp_path / "a", schedule=True).values(start, end)
    b = _sim(tmp_path / "b", schedule=True).values(start, end)
    pd.testing.assert_frame_equal(a, b)
    # any sub-range reads the same values as the full range (no stateful RNG)
    part = _sim(tmp_path / "c", schedule=True).values(start + timedelta(hours=7), start + timedelta(hours=8))
    inside = a[(a["timestamp"] >= part["timestamp"].min()) & (a["timestamp"] <= part["timestamp"].max())]
    pd.testing.assert_frame_equal(part, inside.reset_index(drop=True))
    other_seed = FleetSimulator(tmp_path / "d", HOSTS, seed=8, schedule=True).values(start, end)
    assert not np.allclose(a["value"], other_seed["value"])


def test_latest_matches_values_at_the_same_instant(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s", schedule=True)
    at = T0 + timedelta(minutes=17)
    latest = sim.latest(at)
    assert set(latest["timestamp"]) == {pd.Timestamp(at)}
    assert len(latest) == len(HOSTS) * len(CANONICAL_METRICS)
    pd.testing.assert_frame_equal(latest, sim.values(at, at + timedelta(minutes=1)))


def test_same_values_in_another_process(tmp_path: Path) -> None:
    start, end = T0, T0 + timedelta(hours=6)
    here = _digest(_sim(tmp_path / "s", schedule=True).values(start, end))
    code = (
        "import hashlib, sys\n"
        "from datetime import datetime\n"
        "from smartcloudops.simulator import FleetSimulator\n"
        f"sim = FleetSimulator({str(tmp_path / 'other')!r}, {HOSTS!r}, seed=7, schedule=True)\n"
        f"frame = sim.values(datetime.fromisoformat({start.isoformat()!r}), "
        f"datetime.fromisoformat({end.isoformat()!r}))\n"
        "print(hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # a different str-hash seed must not matter
    )
    assert out.stdout.strip() == here


def test_daily_seasonality_is_visible(tmp_path: Path) -> None:
    start = datetime(2024, 5, 6, tzinfo=UTC)  # Monday .. Friday: no weekend dip
    frame = _sim(tmp_path / "s").values(start, start + timedelta(days=5), hosts=["web-1"])
    cpu = frame[frame["metric"] == "cpu"].set_index("timestamp")["value"]
    by_hour = cpu.groupby(cpu.index.hour).mean()
    # web's profile: 35 % ± 18 % over the day; noise averages out over 5 × 60 samples
    assert by_hour.max() - by_hour.min() > 25
    assert 13 <= by_hour.idxmax() <= 17  # busy mid-afternoon UTC
    assert by_hour.idxmin() <= 5 or by_hour.idxmin() >= 23
    # and the noise is real: neighbouring minutes differ
    assert cpu.diff().abs().iloc[1:61].mean() > 0.5


# -- incidents and labels --------------------------------------------------------------------


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_each_incident_disturbs_its_metrics_inside_its_window(tmp_path: Path, kind: str) -> None:
    host = "app-1"
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)
    baseline = _sim(tmp_path / "base")
    sim = _sim(tmp_path / "inc")
    incident = sim.inject(kind, host, start=start, duration_minutes=60)
    assert (incident.kind, incident.host, incident.start, incident.end) == (kind, host, start, end)

    before, after = T0, T0 + timedelta(hours=3)
    got = long_to_wide(sim.values(before, after, hosts=[host])).set_index("timestamp")
    ref = long_to_wide(baseline.values(before, after, hosts=[host])).set_index("timestamp")
    inside = (got.index >= start) & (got.index < end)
    late = got.index >= start + timedelta(minutes=40)  # ramps have reached their plateau

    # outside the window the incident changes nothing, on any metric
    pd.testing.assert_frame_equal(got[~inside], ref[~inside])
    # inside it, the kind's metrics move clearly
    if kind == "cpu_hog":
        assert got.loc[inside, "cpu"].min() > 88
        assert got.loc[inside, "load"].mean() > ref.loc[inside, "load"].mean() + 1.0
    elif kind == "memory_leak":
        assert got.loc[inside & late, "memory"].min() > 95
        assert (got.loc[inside, "memory"] >= ref.loc[inside, "memory"] - 1e-9).all()
    elif kind == "disk_fill":
        assert got.loc[inside & late, "disk"].min() > 95
    elif kind == "network_flood":
        ratio = got.loc[inside, "network_in"] / ref.loc[inside, "network_in"]
        assert np.allclose(ratio, 8.0)
        assert got.loc[inside, "cpu"].mean() > ref.loc[inside, "cpu"].mean() + 20
    # and only those: load follows cpu, everything else stays as it was
    moved = set(INCIDENT_METRICS[kind]) | ({"load"} if "cpu" in INCIDENT_METRICS[kind] else set())
    for metric in set(CANONICAL_METRICS) - moved:
        pd.testing.assert_series_equal(got.loc[inside, metric], ref.loc[inside, metric])

    # labels: NAB format, keyed host/metric, one window on each disturbed series only
    labels = sim.labels(before, after)
    assert set(labels) == {f"{h}/{m}" for h in HOSTS for m in CANONICAL_METRICS}
    window = [start.strftime(NAB_TIME_FORMAT), end.strftime(NAB_TIME_FORMAT)]
    for key, windows in labels.items():
        expected = [window] if key in {f"{host}/{m}" for m in INCIDENT_METRICS[kind]} else []
        assert windows == expected, key
    datetime.strptime(window[0], NAB_TIME_FORMAT)  # the format NAB's readers parse


def test_write_labels_writes_the_same_windows(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    sim.inject("disk_fill", "db-2", start=T0, duration_minutes=45)
    path = sim.write_labels(T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    assert path == tmp_path / "s" / "labels.json"
    assert json.loads(path.read_text()) == sim.labels(T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


def test_overlapping_incidents_on_one_series_make_one_window(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    sim.inject("cpu_hog", "web-1", start=T0, duration_minutes=30)
    sim.inject("network_flood", "web-1", start=T0 + timedelta(minutes=20), duration_minutes=30)
    labels = sim.labels(T0, T0 + timedelta(hours=2))
    fmt = NAB_TIME_FORMAT
    assert labels["web-1/cpu"] == [[T0.strftime(fmt), (T0 + timedelta(minutes=50)).strftime(fmt)]]
    assert labels["web-1/load"] == [[T0.strftime(fmt), (T0 + timedelta(minutes=30)).strftime(fmt)]]
    assert labels["web-1/network_in"] == [
        [(T0 + timedelta(minutes=20)).strftime(fmt), (T0 + timedelta(minutes=50)).strftime(fmt)]
    ]


def test_scheduled_incidents_are_reproducible_and_labelled(tmp_path: Path) -> None:
    start, end = T0, T0 + timedelta(days=4)
    a = _sim(tmp_path / "a", schedule=True)
    b = _sim(tmp_path / "b", schedule=True)
    incidents = a.incidents(start, end)
    assert incidents == b.incidents(start, end)
    # about 0.67 per host-day: 5 hosts × 4 days should hold several, of known kinds
    assert len(incidents) >= 4
    assert {i.kind for i in incidents} <= set(INCIDENT_KINDS)
    labels = a.labels(start, end)
    for inc in incidents:
        for metric in INCIDENT_METRICS[inc.kind]:
            windows = [
                (datetime.strptime(s, NAB_TIME_FORMAT), datetime.strptime(e, NAB_TIME_FORMAT))
                for s, e in labels[f"{inc.host}/{metric}"]
            ]
            begin = inc.start.replace(tzinfo=None)
            assert any(s <= begin < e for s, e in windows), (inc, metric)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fork_bomb", "host": "web-1"}, "unknown incident kind 'fork_bomb'; valid: cpu_hog"),
        ({"kind": "cpu_hog", "host": "web-9"}, "unknown host 'web-9'; valid: web-1"),
        ({"kind": "cpu_hog", "host": "web-1", "duration_minutes": 0}, "duration_minutes"),
        ({"kind": "cpu_hog", "host": "web-1", "duration_minutes": -5}, "duration_minutes"),
        ({"kind": "cpu_hog", "host": "web-1", "duration_minutes": 8 * 24 * 60}, "duration_minutes"),
        ({"kind": "cpu_hog", "host": "web-1", "duration_minutes": float("nan")}, "duration_minutes"),
    ],
)
def test_inject_validation(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    sim = _sim(tmp_path / "s")
    with pytest.raises(InputError, match=message):
        sim.inject(**kwargs)  # type: ignore[arg-type]
    assert not sim.state_file.exists()  # nothing half-written


def test_hooks_reject_unknown_hosts_and_bad_counts(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    for call in (
        lambda: sim.restart_service("nope-1"),
        lambda: sim.scale_up("nope-1"),
        lambda: sim.health("nope-1"),
        lambda: sim.scale_up("web-1", replicas=0),
        lambda: sim.scale_down("web-1", replicas=5),
        lambda: sim.values(T0, T0 + timedelta(hours=1), hosts=["nope-1"]),
        lambda: sim.values(T0, T0, step_seconds=60),
        lambda: sim.values(T0, T0 + timedelta(hours=1), step_seconds=0),
    ):
        with pytest.raises(InputError):
            call()
    with pytest.raises(InputError):
        FleetSimulator(tmp_path / "x", [])


# -- remediation hooks -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cpu_hog", "memory_leak"])
def test_restart_ends_runaway_incidents_from_then_on(tmp_path: Path, kind: str) -> None:
    host = "web-2"
    metric = INCIDENT_METRICS[kind][0]
    baseline = _sim(tmp_path / "base")
    sim = _sim(tmp_path / "s")
    sim.inject(kind, host, start=T0, duration_minutes=60)
    restart_at = T0 + timedelta(minutes=40)
    sim.restart_service(host, at=restart_at)

    got = _series(sim, host, metric, T0, T0 + timedelta(hours=2))
    ref = _series(baseline, host, metric, T0, T0 + timedelta(hours=2))
    disturbed = (got.index >= T0 + timedelta(minutes=30)) & (got.index < restart_at)
    assert (got[disturbed] > 90).all()
    after = got.index >= restart_at
    pd.testing.assert_series_equal(got[after], ref[after])

    [incident] = sim.incidents(T0, T0 + timedelta(hours=2))
    assert incident.end == restart_at and incident.ended_by == "restart_service"
    label = sim.labels(T0, T0 + timedelta(hours=2))[f"{host}/{metric}"]
    assert label == [[T0.strftime(NAB_TIME_FORMAT), restart_at.strftime(NAB_TIME_FORMAT)]]

    # a restart cures what runs now, not what starts later
    later = sim.inject(kind, host, start=T0 + timedelta(hours=3), duration_minutes=30)
    [again] = [i for i in sim.incidents(T0, T0 + timedelta(hours=5)) if i.incident_id == later.incident_id]
    assert again.end == later.end and again.ended_by is None


def test_restart_does_not_end_a_disk_fill(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    sim.inject("disk_fill", "db-1", start=T0, duration_minutes=60)
    sim.restart_service("db-1", at=T0 + timedelta(minutes=40))
    [incident] = sim.incidents(T0, T0 + timedelta(hours=2))
    assert incident.end == T0 + timedelta(minutes=60) and incident.ended_by is None
    disk = _series(sim, "db-1", "disk", T0 + timedelta(minutes=40), T0 + timedelta(minutes=60))
    assert (disk > 95).all()


def test_restart_of_another_host_changes_nothing(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    sim.inject("cpu_hog", "web-1", start=T0, duration_minutes=60)
    sim.restart_service("web-2", at=T0 + timedelta(minutes=10))
    [incident] = sim.incidents(T0, T0 + timedelta(hours=2))
    assert incident.ended_by is None


def test_scale_up_lowers_cpu_of_the_role_from_then_on(tmp_path: Path) -> None:
    baseline = _sim(tmp_path / "base")
    sim = _sim(tmp_path / "s")
    at = T0 + timedelta(minutes=30)
    assert sim.capacity("web-1") == 2
    assert sim.scale_up("web-1", at=at) == 3
    assert sim.capacity("web-2") == 3  # same role group
    assert sim.capacity("db-1") == 2
    start, end = T0, T0 + timedelta(hours=1)
    for host, factor in (("web-1", 2 / 3), ("web-2", 2 / 3), ("db-1", 1.0), ("app-1", 1.0)):
        got = _series(sim, host, "cpu", start, end)
        ref = _series(baseline, host, "cpu", start, end)
        before = got.index < at
        pd.testing.assert_series_equal(got[before], ref[before])
        np.testing.assert_allclose(got[~before], np.clip(ref[~before] * factor, 0.5, 100.0), rtol=1e-9)
    # and back down again
    assert sim.scale_down("web-1", at=at + timedelta(minutes=10)) == 2
    got = _series(sim, "web-1", "cpu", at + timedelta(minutes=10), end)
    ref = _series(baseline, "web-1", "cpu", at + timedelta(minutes=10), end)
    pd.testing.assert_series_equal(got, ref)


def test_health(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    healthy = sim.health("db-1", at=T0)
    assert healthy["host"] == "db-1" and healthy["healthy"] is True
    assert set(healthy["checks"]) == {"cpu_below_90", "memory_below_90", "disk_below_90"}
    assert healthy["active_incidents"] == []
    sim.inject("cpu_hog", "db-1", start=T0, duration_minutes=30)
    # the incident starts exactly at this instant: it is active already
    sick = sim.health("db-1", at=T0)
    assert sick["healthy"] is False
    assert sick["checks"]["cpu_below_90"] is False
    assert sick["active_incidents"] == ["cpu_hog"]
    assert sim.health("db-1", at=T0 + timedelta(minutes=30))["healthy"] is True
    assert sim.health("db-2", at=T0 + timedelta(minutes=5))["healthy"] is True


# -- state file ------------------------------------------------------------------------------


def test_state_is_persisted_atomically_and_reloaded_by_another_instance(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    writer, reader = _sim(state_dir), _sim(state_dir)
    assert reader.incidents(T0, T0 + timedelta(days=1)) == []
    seen = []
    # several writes in quick succession (within one mtime tick): the reader sees each one
    for i in range(5):
        writer.inject("cpu_hog", "web-1", start=T0 + timedelta(hours=i), duration_minutes=10)
        seen.append(len(reader.incidents(T0, T0 + timedelta(days=1))))
    assert seen == [1, 2, 3, 4, 5]
    raw = json.loads(writer.state_file.read_text())
    assert len(raw["injected"]) == 5
    assert sorted(p.name for p in state_dir.iterdir()) == ["state.json", "state.lock"]
    # remediation events go through the same file
    writer.restart_service("web-1", at=T0 + timedelta(minutes=5))
    writer.scale_up("db-1", at=T0)
    assert reader.capacity("db-2", at=T0 + timedelta(minutes=1)) == 3
    assert reader.incidents(T0, T0 + timedelta(minutes=30))[0].ended_by == "restart_service"


def test_concurrent_writers_lose_nothing_and_readers_never_see_half_a_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(offset: int) -> None:
        sim = _sim(state_dir)  # its own instance, like another process would have
        try:
            for i in range(15):
                sim.inject("disk_fill", "db-1", start=T0 + timedelta(minutes=offset + i), duration_minutes=5)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            try:
                text = (state_dir / "state.json").read_text()
            except FileNotFoundError:
                continue
            try:
                json.loads(text)
            except ValueError as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(n * 100,)) for n in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(30)
    stop.set()
    reader.join(10)
    assert errors == []
    assert len(json.loads((state_dir / "state.json").read_text())["injected"]) == 45


def test_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    sim.state_dir.mkdir(parents=True)
    sim.state_file.write_text("{not json")
    with pytest.raises(StoreError, match=r"state\.json is unreadable"):
        sim.incidents(T0, T0 + timedelta(hours=1))


def test_from_settings_uses_home_hosts_and_seed(monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    monkeypatch.setenv("SMARTCLOUDOPS_SIM_HOSTS", "web-1,db-1")
    monkeypatch.setenv("SMARTCLOUDOPS_SIM_SEED", "3")
    get_settings.cache_clear()
    sim = FleetSimulator.from_settings(get_settings())
    assert sim.hosts == ["web-1", "db-1"] and sim.seed == 3
    assert sim.state_dir == isolated_home / "simulator"


# -- exporters -------------------------------------------------------------------------------


NODE_EXPORTER_NAMES = {
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_load1",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
}


def _scrape(target: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"http://{target}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_exporters_serve_node_exporter_metrics(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    now = datetime.now(UTC)
    sim.inject("cpu_hog", "web-2", start=now - timedelta(minutes=5), duration_minutes=60)
    group = serve_exporters(sim, base_port=0)
    try:
        assert len(group.targets) == len(HOSTS) and group.hosts == HOSTS
        assert all(t.startswith("127.0.0.1:") for t in group.targets)
        assert len({t.rsplit(":", 1)[1] for t in group.targets}) == len(HOSTS)
        target = group.targets[HOSTS.index("web-2")]
        first = _scrape(target)
        assert set(first) >= NODE_EXPORTER_NAMES
        modes = {(labels["cpu"], labels["mode"]) for labels, _ in first["node_cpu_seconds_total"]}
        assert ("0", "idle") in modes and ("3", "user") in modes
        [(fs_labels, _)] = first["node_filesystem_avail_bytes"]
        assert fs_labels["mountpoint"] == "/"

        latest = long_to_wide(sim.latest(hosts=["web-2"])).iloc[0]
        total = first["node_memory_MemTotal_bytes"][0][1]
        available = first["node_memory_MemAvailable_bytes"][0][1]
        assert 100 * (1 - available / total) == pytest.approx(latest["memory"], abs=2.0)

        # CPU is a counter, as in node_exporter: its rate gives the simulated CPU back
        time.sleep(0.3)
        second = _scrape(target)

        def totals(samples: dict[str, list[tuple[dict[str, str], float]]]) -> tuple[float, float]:
            idle = sum(v for lab, v in samples["node_cpu_seconds_total"] if lab["mode"] == "idle")
            return idle, sum(v for _, v in samples["node_cpu_seconds_total"])
        idle0, all0 = totals(first)
        idle1, all1 = totals(second)
        busy = 100 * (1 - (idle1 - idle0) / (all1 - all0))
        assert busy == pytest.approx(95, abs=6)  # the cpu_hog
        rx0 = first["node_network_receive_bytes_total"][0][1]
        assert second["node_network_receive_bytes_total"][0][1] > rx0

        assert httpx.get(f"http://{target}/healthz", timeout=5).json() == {"status": "ok"}
        missing = httpx.get(f"http://{target}/nope", timeout=5)
        assert missing.status_code == 404 and "error" in missing.json()
    finally:
        group.stop()


def test_exporter_answers_500_when_state_is_broken(tmp_path: Path) -> None:
    sim = _sim(tmp_path / "s")
    group = serve_exporters(sim, base_port=0)
    try:
        sim.state_dir.mkdir(parents=True, exist_ok=True)
        sim.state_file.write_text("{broken")
        response = httpx.get(f"http://{group.targets[0]}/metrics", timeout=5)
        assert response.status_code == 500
        assert "unreadable" in response.json()["error"]["message"]
    finally:
        group.stop()
