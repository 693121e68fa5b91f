"""The built-in fleet simulator: realistic host metrics, labelled incidents, live exporters.

Design: the simulator is a *pure function* of ``(seed, state file, time)``. Any process —
the exporter serving Prometheus, an Airflow task backfilling history, a remediation adapter —
computes the same values for the same instant, so there is no simulator server to keep in
sync. What changes over time (incidents injected by hand, restarts, scale-ups) is appended to
a small JSON state file under a file lock; readers notice its mtime and reload.

Values: role-specific base levels, a daily cycle, deterministic noise (a hash of
seed/host/metric/minute, so re-reading a minute gives the same value), plus the effects of
incidents. Scheduled incidents come from the same seed (about one per host every 1.5 days),
injected ones from the state. Remediation acts on both: a restart ends a ``cpu_hog`` or
``memory_leak`` on that host, a scale-up spreads the role's CPU over more replicas.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from smartcloudops.domain import CANONICAL_METRICS, new_id, normalize_long, utcnow
from smartcloudops.errors import InputError, StoreError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

INCIDENT_KINDS: tuple[str, ...] = ("cpu_hog", "memory_leak", "disk_fill", "network_flood")

#: The series each incident kind visibly disturbs; these become the labelled windows.
INCIDENT_METRICS: dict[str, tuple[str, ...]] = {
    "cpu_hog": ("cpu", "load"),
    "memory_leak": ("memory",),
    "disk_fill": ("disk",),
    "network_flood": ("network_in", "cpu"),
}

#: Kinds a service restart cures (a runaway process or a leak lives in the service).
RESTART_CURES: frozenset[str] = frozenset({"cpu_hog", "memory_leak"})

NAB_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
CPUS_PER_HOST = 4
MEMORY_BYTES = 16 * 2**30
DISK_BYTES = 200 * 2**30


@dataclass(frozen=True)
class RoleProfile:
    cpu: float
    cpu_amplitude: float
    memory: float
    disk: float
    network: float
    replicas: int


ROLE_PROFILES: dict[str, RoleProfile] = {
    "web": RoleProfile(cpu=35, cpu_amplitude=18, memory=55, disk=42, network=4e6, replicas=2),
    "app": RoleProfile(cpu=45, cpu_amplitude=15, memory=62, disk=48, network=2e6, replicas=1),
    "db": RoleProfile(cpu=30, cpu_amplitude=10, memory=70, disk=60, network=1.5e6, replicas=2),
    "host": RoleProfile(cpu=40, cpu_amplitude=15, memory=60, disk=50, network=2e6, replicas=1),
}


def role_of(host: str) -> str:
    prefix = host.split("-", 1)[0]
    return prefix if prefix in ROLE_PROFILES else "host"


@dataclass(frozen=True)
class Incident:
    incident_id: str
    kind: str
    host: str
    start: datetime
    end: datetime
    ended_by: str | None = None
    injected: bool = False

    def active_at(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat()
        return data


@dataclass
class _State:
    """What the simulator remembers: injected incidents and remediation events."""

    injected: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    scales: list[dict[str, Any]] = field(default_factory=list)


def _as_utc(value: datetime | str | pd.Timestamp) -> datetime:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _seed_int(*parts: object) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _noise(seed: int, host: str, metric: str, minutes: np.ndarray) -> np.ndarray:
    """Deterministic standard-normal noise per (seed, host, metric, minute).

    A counter-based hash (splitmix64) instead of a stateful RNG, so the value of any minute can
    be computed alone, in any order, by any process.
    """
    key = np.uint64(_seed_int(seed, host, metric) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = minutes.astype(np.uint64) * np.uint64(2) + key
        u = []
        for offset in (np.uint64(0), np.uint64(1)):
            x = z + offset + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
            u.append((x >> np.uint64(11)).astype(np.float64) / float(1 << 53))
    u1 = np.clip(u[0], 1e-12, 1.0)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u[1])


class FleetSimulator:
    """A fleet of virtual hosts whose metrics are a pure function of time and state."""

    def __init__(
        self,
        state_dir: Path,
        hosts: Sequence[str] = ("web-1", "web-2", "app-1", "db-1", "db-2"),
        seed: int = 7,
        schedule: bool = True,
        incidents_per_host_day: float = 0.67,
    ) -> None:
        if not hosts:
            raise InputError("the simulator needs at least one host")
        self.state_dir = Path(state_dir)
        self.hosts = list(hosts)
        self.seed = seed
        self.schedule = schedule
        self.incidents_per_host_day = incidents_per_host_day
        self._state = _State()
        # (mtime_ns, inode, size) of the state file last loaded. mtime alone is not enough:
        # its clock ticks in milliseconds, so two replaces in one tick look like none.
        self._state_mtime: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FleetSimulator:
        return cls(settings.simulator_dir, settings.host_list, seed=settings.sim_seed)

    # -- state ---------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _refresh(self) -> _State:
        try:
            st = self.state_file.stat()
        except FileNotFoundError:
            return self._state
        mtime = (st.st_mtime_ns, st.st_ino, st.st_size)
        with self._lock:
            if mtime != self._state_mtime:
                try:
                    raw = json.loads(self.state_file.read_text())
                except (OSError, ValueError) as exc:
                    raise StoreError(f"simulator state {self.state_file} is unreadable: {exc}") from exc
                self._state = _State(
                    injected=list(raw.get("injected", [])),
                    restarts=list(raw.get("restarts", [])),
                    scales=list(raw.get("scales", [])),
                )
                self._state_mtime = mtime
            return self._state

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[_State]:
        """Read-modify-write the state under an exclusive file lock, replaced atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir / "state.lock"
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._state_mtime = None
            state = self._refresh()
            yield state
            tmp = self.state_file.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(asdict(state), indent=1))
            os.replace(tmp, self.state_file)
            self._state_mtime = None

    # -- incidents -----------------------------------------------------------------------

    def _scheduled(self, start: datetime, end: datetime) -> list[Incident]:
        if not self.schedule or self.incidents_per_host_day <= 0:
            return []
        out: list[Incident] = []
        day = start.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        while day < end:
            for host in self.hosts:
                rng = np.random.default_rng(_seed_int(self.seed, "incidents", host, day.date()))
                for n in range(int(rng.poisson(self.incidents_per_host_day))):
                    kind = INCIDENT_KINDS[int(rng.integers(len(INCIDENT_KINDS)))]
                    begin = day + timedelta(minutes=int(rng.integers(0, 24 * 60)))
                    length = timedelta(minutes=int(rng.integers(25, 95)))
                    incident_id = f"sched-{host}-{day:%Y%m%d}-{n}"
                    out.append(Incident(incident_id, kind, host, begin, begin + length))
            day += timedelta(days=1)
        return out

    def _injected(self, state: _State) -> list[Incident]:
        return [
            Incident(
                d["incident_id"], d["kind"], d["host"], _as_utc(d["start"]), _as_utc(d["end"]),
                injected=True,
            )
            for d in state.injected
        ]

    def incidents(self, start: datetime, end: datetime) -> list[Incident]:
        """Incidents overlapping ``[start, end)``, truncated where a restart cured them."""
        start, end = _as_utc(start), _as_utc(end)
        state = self._refresh()
        restarts = sorted(
            ((d["host"], _as_utc(d["at"])) for d in state.restarts), key=lambda r: r[1]
        )
        out = []
        for inc in self._scheduled(start, end) + self._injected(state):
            if inc.end <= start or inc.start >= end or inc.host not in self.hosts:
                continue
            if inc.kind in RESTART_CURES:
                for host, at in restarts:
                    if host == inc.host and inc.start <= at < inc.end:
                        inc = Incident(
                            inc.incident_id, inc.kind, inc.host, inc.start, at,
                            ended_by="restart_service", injected=inc.injected,
                        )
                        break
            out.append(inc)
        return sorted(out, key=lambda i: (i.start, i.host))

    def inject(
        self,
        kind: str,
        host: str,
        start: datetime | None = None,
        duration_minutes: float = 30,
    ) -> Incident:
        if kind not in INCIDENT_KINDS:
            raise InputError(f"unknown incident kind {kind!r}; valid: {', '.join(INCIDENT_KINDS)}")
        if host not in self.hosts:
            raise InputError(f"unknown host {host!r}; valid: {', '.join(self.hosts)}")
        if not 0 < duration_minutes <= 7 * 24 * 60:
            raise InputError("duration_minutes must be between 0 and one week")
        begin = _as_utc(start) if start is not None else utcnow()
        incident = Incident(
            new_id("inc"), kind, host, begin, begin + timedelta(minutes=duration_minutes),
            injected=True,
        )
        with self._mutate() as state:
            state.injected.append(incident.to_dict())
        return incident

    # -- remediation hooks ---------------------------------------------------------------

    def _check_host(self, host: str) -> None:
        if host not in self.hosts:
            raise InputError(f"unknown host {host!r}; valid: {', '.join(self.hosts)}")

    def restart_service(self, host: str, service: str = "app", at: datetime | None = None) -> None:
        self._check_host(host)
        when = _as_utc(at) if at is not None else utcnow()
        with self._mutate() as state:
            state.restarts.append({"host": host, "service": service, "at": when.isoformat()})

    def capacity(self, host: str, at: datetime | None = None) -> int:
        self._check_host(host)
        when = _as_utc(at) if at is not None else utcnow()
        role = role_of(host)
        extra = sum(
            int(d["delta"])
            for d in self._refresh().scales
            if d["role"] == role and _as_utc(d["at"]) <= when
        )
        return max(1, ROLE_PROFILES[role].replicas + extra)

    def _scale(self, host: str, delta: int, at: datetime | None) -> int:
        self._check_host(host)
        when = _as_utc(at) if at is not None else utcnow()
        with self._mutate() as state:
            state.scales.append({"role": role_of(host), "delta": delta, "at": when.isoformat()})
        return self.capacity(host, when)

    def scale_up(self, host: str, replicas: int = 1, at: datetime | None = None) -> int:
        if replicas < 1:
            raise InputError("replicas must be >= 1")
        return self._scale(host, replicas, at)

    def scale_down(self, host: str, replicas: int = 1, at: datetime | None = None) -> int:
        if replicas < 1:
            raise InputError("replicas must be >= 1")
        if self.capacity(host, at) - replicas < 1:
            raise InputError("cannot scale below one replica")
        return self._scale(host, -replicas, at)

    def health(self, host: str, at: datetime | None = None) -> dict[str, Any]:
        self._check_host(host)
        when = _as_utc(at) if at is not None else utcnow()
        latest = self.latest(when, hosts=[host])
        values = dict(zip(latest["metric"], latest["value"], strict=True))
        # ``incidents`` is half-open at the end; +1 µs keeps one starting exactly at ``when``.
        window = self.incidents(when - timedelta(days=7), when + timedelta(microseconds=1))
        active = [i.kind for i in window if i.active_at(when) and i.host == host]
        checks = {
            "cpu_below_90": values["cpu"] < 90,
            "memory_below_90": values["memory"] < 90,
            "disk_below_90": values["disk"] < 90,
        }
        return {
            "host": host,
            "healthy": all(checks.values()),
            "checks": checks,
            "active_incidents": active,
            "values": values,
        }

    # -- values --------------------------------------------------------------------------

    def _host_values(self, host: str, times: pd.DatetimeIndex) -> dict[str, np.ndarray]:
        profile = ROLE_PROFILES[role_of(host)]
        # pandas 3 keeps a Python datetime's microsecond unit; asi8 must be nanoseconds below,
        # else a "minute" lasts 1000 minutes and the noise stands still for 16 hours.
        times = pd.DatetimeIndex(times).as_unit("ns")
        minutes = (times.asi8 // 60_000_000_000).astype(np.int64)
        hour = np.asarray(times.hour + times.minute / 60.0, dtype=float)
        day_index = (times.asi8 / 86_400e9).astype(float)
        # Busy hours peak mid-afternoon UTC; host index shifts each host a little.
        phase = (_seed_int(self.seed, host) % 90) / 60.0
        daily = np.sin(2 * np.pi * (hour - 9.0 - phase) / 24.0)
        weekly = 1.0 - 0.15 * np.asarray(times.dayofweek >= 5, dtype=float)

        def noise(metric: str) -> np.ndarray:
            return _noise(self.seed, host, metric, minutes)

        cpu = (profile.cpu + profile.cpu_amplitude * daily) * weekly + 3.0 * noise("cpu")
        memory = profile.memory + 3.0 * daily + 1.0 * noise("memory")
        # Disk creeps up and is cleaned weekly, as log rotation would do.
        disk = profile.disk + 0.8 * (day_index % 7.0) + 0.15 * noise("disk")
        net_factor = np.clip(1.0 + 0.6 * daily * weekly + 0.08 * noise("network"), 0.1, None)
        network_in = profile.network * net_factor
        network_out = profile.network * 0.7 * net_factor * (1 + 0.05 * noise("network_out"))

        start, end = times[0].to_pydatetime(), times[-1].to_pydatetime() + timedelta(seconds=1)
        for inc in self.incidents(start, end):
            if inc.host != host:
                continue
            mask = (times >= inc.start) & (times < inc.end)
            if not mask.any():
                continue
            elapsed = (times[mask] - inc.start).total_seconds().to_numpy() / 60.0
            length = max((inc.end - inc.start).total_seconds() / 60.0, 1.0)
            if inc.kind == "cpu_hog":
                cpu[mask] = 97.0 + 1.0 * np.clip(noise("cpu_hog")[mask], -2.5, 2.5)
            elif inc.kind == "memory_leak":
                ramp = np.minimum(elapsed / max(length * 0.6, 1.0), 1.0)
                memory[mask] = memory[mask] + (97.0 - memory[mask]) * ramp
            elif inc.kind == "disk_fill":
                ramp = np.minimum(elapsed / max(length * 0.5, 1.0), 1.0)
                disk[mask] = disk[mask] + (97.0 - disk[mask]) * ramp
            elif inc.kind == "network_flood":
                network_in[mask] = network_in[mask] * 8.0
                cpu[mask] = cpu[mask] + 25.0

        # Scale-ups spread the role's load over more replicas (cuts CPU per host).
        base_replicas = ROLE_PROFILES[role_of(host)].replicas
        scales = [d for d in self._refresh().scales if d["role"] == role_of(host)]
        if scales:
            capacity = np.full(len(times), float(base_replicas))
            for d in scales:
                capacity[times >= _as_utc(d["at"])] += float(d["delta"])
            cpu = cpu * base_replicas / np.maximum(capacity, 1.0)

        cpu = np.clip(cpu, 0.5, 100.0)
        load = np.clip(cpu / 100.0 * CPUS_PER_HOST * 1.1 + 0.15 * noise("load"), 0.0, None)
        return {
            "cpu": cpu,
            "memory": np.clip(memory, 1.0, 100.0),
            "disk": np.clip(disk, 1.0, 100.0),
            "load": load,
            "network_in": np.clip(network_in, 0.0, None),
            "network_out": np.clip(network_out, 0.0, None),
        }

    def values(
        self,
        start: datetime,
        end: datetime,
        step_seconds: int = 60,
        hosts: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Samples on the step grid in ``[start, end)``, long format."""
        start, end = _as_utc(start), _as_utc(end)
        if step_seconds <= 0:
            raise InputError("step_seconds must be positive")
        if end <= start:
            raise InputError(f"empty time range: start {start} is not before end {end}")
        first = pd.Timestamp(start).ceil(f"{step_seconds}s")
        times = pd.date_range(first, end, freq=f"{step_seconds}s", inclusive="left", tz="UTC")
        if len(times) == 0:
            return normalize_long(pd.DataFrame(columns=["timestamp", "host", "metric", "value"]))
        frames = []
        for host in hosts or self.hosts:
            self._check_host(host)
            for metric, vals in self._host_values(host, times).items():
                frames.append(
                    pd.DataFrame({"timestamp": times, "host": host, "metric": metric, "value": vals})
                )
        return normalize_long(pd.concat(frames, ignore_index=True))

    def latest(self, at: datetime | None = None, hosts: Sequence[str] | None = None) -> pd.DataFrame:
        when = _as_utc(at) if at is not None else utcnow()
        frames = []
        for host in hosts or self.hosts:
            self._check_host(host)
            vals = self._host_values(host, pd.DatetimeIndex([when]))
            frames.append(
                pd.DataFrame(
                    {"timestamp": [when] * len(vals), "host": host, "metric": list(vals),
                     "value": [float(v[0]) for v in vals.values()]}
                )
            )
        return normalize_long(pd.concat(frames, ignore_index=True))

    # -- labels --------------------------------------------------------------------------

    def labels(self, start: datetime, end: datetime) -> dict[str, list[list[str]]]:
        """NAB-format windows keyed ``host/metric`` for every incident in the range."""
        spans: dict[str, list[tuple[datetime, datetime]]] = {
            f"{h}/{m}": [] for h in self.hosts for m in CANONICAL_METRICS
        }
        for inc in self.incidents(start, end):
            if inc.end <= inc.start:
                continue  # cured by a restart at the instant it began: nothing to label
            for metric in INCIDENT_METRICS[inc.kind]:
                spans[f"{inc.host}/{metric}"].append((inc.start, inc.end))
        # NAB windows of one series never overlap; two incidents disturbing the same series at
        # once are one event for the evaluation (else one alarm would "find" two windows).
        windows: dict[str, list[list[str]]] = {}
        for key, items in spans.items():
            merged: list[list[datetime]] = []
            for begin, finish in sorted(items):
                if merged and begin <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], finish)
                else:
                    merged.append([begin, finish])
            windows[key] = [
                [b.strftime(NAB_TIME_FORMAT), f.strftime(NAB_TIME_FORMAT)] for b, f in merged
            ]
        return windows

    def write_labels(self, start: datetime, end: datetime, path: Path | None = None) -> Path:
        target = Path(path) if path is not None else self.state_dir / "labels.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.labels(start, end), indent=1, sort_keys=True))
        os.replace(tmp, target)
        return target


# -- live exporters: one node_exporter-shaped target per host -----------------------------


class _HostExporter:
    """Turns the simulator's gauges into node_exporter's counters and gauges for one host.

    CPU and network are counters in node_exporter, so they are integrated here: each scrape
    advances them by (value at now) × (seconds since the last scrape).
    """

    def __init__(self, sim: FleetSimulator, host: str) -> None:
        self.sim = sim
        self.host = host
        self._lock = threading.Lock()
        self._last = time.time()
        base = float(_seed_int(sim.seed, host, "boot") % 10_000_000)
        self._idle = [base + i * 1000.0 for i in range(CPUS_PER_HOST)]
        self._busy = [base / 3 + i * 100.0 for i in range(CPUS_PER_HOST)]
        self._rx = base * 1000.0
        self._tx = base * 700.0

    def render(self) -> str:
        now = time.time()
        sample = self.sim.latest(datetime.fromtimestamp(now, UTC), hosts=[self.host])
        v = dict(zip(sample["metric"], sample["value"], strict=True))
        with self._lock:
            dt = max(now - self._last, 0.0)
            self._last = now
            busy = v["cpu"] / 100.0
            for i in range(CPUS_PER_HOST):
                self._idle[i] += dt * (1.0 - busy)
                self._busy[i] += dt * busy
            self._rx += dt * v["network_in"]
            self._tx += dt * v["network_out"]
            lines = [
                "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
                "# TYPE node_cpu_seconds_total counter",
            ]
            for i in range(CPUS_PER_HOST):
                lines.append(f'node_cpu_seconds_total{{cpu="{i}",mode="idle"}} {self._idle[i]:.3f}')
                lines.append(f'node_cpu_seconds_total{{cpu="{i}",mode="user"}} {self._busy[i] * 0.8:.3f}')
                lines.append(f'node_cpu_seconds_total{{cpu="{i}",mode="system"}} {self._busy[i] * 0.2:.3f}')
            rx, tx = self._rx, self._tx
        fs = 'device="/dev/vda1",fstype="ext4",mountpoint="/"'
        lines += [
            "# TYPE node_memory_MemTotal_bytes gauge",
            f"node_memory_MemTotal_bytes {MEMORY_BYTES}",
            "# TYPE node_memory_MemAvailable_bytes gauge",
            f"node_memory_MemAvailable_bytes {MEMORY_BYTES * (1 - v['memory'] / 100.0):.0f}",
            "# TYPE node_filesystem_size_bytes gauge",
            f"node_filesystem_size_bytes{{{fs}}} {DISK_BYTES}",
            "# TYPE node_filesystem_avail_bytes gauge",
            f"node_filesystem_avail_bytes{{{fs}}} {DISK_BYTES * (1 - v['disk'] / 100.0):.0f}",
            "# TYPE node_load1 gauge",
            f"node_load1 {v['load']:.4f}",
            "# TYPE node_network_receive_bytes_total counter",
            f'node_network_receive_bytes_total{{device="eth0"}} {rx:.0f}',
            "# TYPE node_network_transmit_bytes_total counter",
            f'node_network_transmit_bytes_total{{device="eth0"}} {tx:.0f}',
            "# TYPE smartcloudops_simulator_capacity gauge",
            f'smartcloudops_simulator_capacity{{role="{role_of(self.host)}"}} {self.sim.capacity(self.host)}',
        ]
        return "\n".join(lines) + "\n"


class ExporterGroup:
    """One loopback HTTP server per simulated host, each answering ``/metrics``."""

    def __init__(self, sim: FleetSimulator, bind: str, base_port: int) -> None:
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.targets: list[str] = []
        self.hosts: list[str] = []
        for offset, host in enumerate(sim.hosts):
            exporter = _HostExporter(sim, host)
            port = base_port + offset if base_port else 0
            try:
                server = ThreadingHTTPServer((bind, port), _handler_for(exporter))
            except OSError:
                self.stop()  # do not leak the servers already started (port taken, ...)
                raise
            server.daemon_threads = True
            # a short poll interval keeps stop() quick: shutdown() waits for the next poll
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"exporter-{host}",
                daemon=True,
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
            self.targets.append(f"{bind}:{server.server_address[1]}")
            self.hosts.append(host)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def _handler_for(exporter: _HostExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            if self.path.split("?", 1)[0] == "/metrics":
                try:
                    body = exporter.render().encode()
                except (StoreError, OSError, ValueError) as exc:
                    # e.g. an unreadable state file: answer the scrape, do not drop the socket
                    body = json.dumps({"error": {"code": "simulator_error", "message": str(exc)}}).encode()
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            else:
                body = b'{"error": {"code": "not_found", "message": "try /metrics"}}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # scrapes every few seconds would flood the logs

    return Handler


def serve_exporters(sim: FleetSimulator, host: str = "127.0.0.1", base_port: int = 9201) -> ExporterGroup:
    """Start one exporter per host on consecutive ports (``base_port=0`` picks free ports)."""
    return ExporterGroup(sim, host, base_port)
