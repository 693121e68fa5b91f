"""Synthetic data for the ml tests, built here so they depend on nothing else.

``make_fleet`` imitates the simulator's contract: a long frame ``timestamp, host, metric,
value`` with daily seasonality and noise, plus incidents (cpu_hog, memory_leak, disk_fill,
network_flood) whose windows are returned NAB-style, keyed ``"host/metric"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FMT = "%Y-%m-%d %H:%M:%S.%f"
START = pd.Timestamp("2024-03-04 00:00:00", tz="UTC")


def make_fleet(
    hosts: tuple[str, ...] = ("web-1", "web-2", "app-1", "db-1", "db-2"),
    days: float = 7.0,
    freq: str = "1min",
    incidents_per_host: int = 3,
    seed: int = 7,
) -> tuple[pd.DataFrame, dict[str, list[list[str]]]]:
    """Long-format history and NAB-format label windows keyed ``host/metric``."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=int(pd.Timedelta(days=days) / pd.Timedelta(freq)), freq=freq)
    n = len(ts)
    tod = ((ts.hour * 60 + ts.minute) / 1440.0).to_numpy()
    daily = np.sin(2 * np.pi * (tod - 0.25))
    frames = []
    labels: dict[str, list[list[str]]] = {}
    step = pd.Timedelta(freq)
    for h, host in enumerate(hosts):
        base = 20 + 8 * h
        cpu = base + 12 * daily + rng.normal(0, 2.5, n)
        load = 0.04 * cpu + rng.normal(0, 0.1, n)
        memory = 45 + 5 * h + 2 * np.sin(2 * np.pi * tod * 2) + rng.normal(0, 0.8, n)
        disk = 40 + 3 * h + np.linspace(0, 2, n) + rng.normal(0, 0.05, n)
        net_in = 2e6 * (1 + 0.5 * daily) * np.exp(rng.normal(0, 0.08, n))
        net_out = 1.5e6 * (1 + 0.5 * daily) * np.exp(rng.normal(0, 0.08, n))
        # Incidents in the second half of every day-long slot, never overlapping.
        kinds = ["cpu_hog", "memory_leak", "disk_fill", "network_flood"]
        slots = rng.choice(
            np.arange(1, int(days)), size=min(incidents_per_host, int(days) - 1), replace=False
        )
        for slot in sorted(slots):
            kind = kinds[rng.integers(len(kinds))]
            start = int((slot + rng.uniform(0.1, 0.8)) * 1440 * pd.Timedelta("1min") / step)
            length = int(rng.integers(30, 90) * pd.Timedelta("1min") / step)
            end = min(n - 1, start + length)
            sl = slice(start, end + 1)
            ramp = np.linspace(0, 1, end + 1 - start)
            if kind == "cpu_hog":
                cpu[sl] = 95 + rng.normal(0, 1.5, end + 1 - start)
                load[sl] += 4
                metric = "cpu"
            elif kind == "memory_leak":
                memory[sl] += 35 * ramp
                metric = "memory"
            elif kind == "disk_fill":
                disk[sl] += 30 * ramp
                metric = "disk"
            else:
                net_in[sl] *= 6
                metric = "network_in"
            labels.setdefault(f"{host}/{metric}", []).append([ts[start].strftime(FMT), ts[end].strftime(FMT)])
        for metric, values in (
            ("cpu", np.clip(cpu, 0, 100)),
            ("memory", np.clip(memory, 0, 100)),
            ("disk", np.clip(disk, 0, 100)),
            ("load", np.clip(load, 0, None)),
            ("network_in", net_in),
            ("network_out", net_out),
        ):
            frames.append(pd.DataFrame({"timestamp": ts, "host": host, "metric": metric, "value": values}))
    return pd.concat(frames, ignore_index=True), labels


def make_series(n: int = 2000, freq: str = "5min", seed: int = 0, level: float = 50.0) -> pd.DataFrame:
    """One ``timestamp,value`` series with daily seasonality and noise."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=n, freq=freq)
    tod = ((ts.hour * 60 + ts.minute) / 1440.0).to_numpy()
    value = level + 10 * np.sin(2 * np.pi * tod) + rng.normal(0, 1.0, n)
    return pd.DataFrame({"timestamp": ts, "value": value})


def wide_host(n: int = 3 * 1440, seed: int = 0, freq: str = "1min") -> pd.DataFrame:
    """One host's wide frame (cpu, memory), timestamp column."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=n, freq=freq)
    tod = ((ts.hour * 60 + ts.minute) / 1440.0).to_numpy()
    return pd.DataFrame(
        {
            "timestamp": ts,
            "cpu": 30 + 10 * np.sin(2 * np.pi * tod) + rng.normal(0, 2, n),
            "memory": 50 + rng.normal(0, 1, n),
        }
    )
