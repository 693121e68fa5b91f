"""PNG plots of validation series with label windows shaded and alarms marked.

Uses :class:`matplotlib.figure.Figure` directly (no pyplot), so nothing touches the global
backend and it works headless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from ml.evaluation import Window


def plot_host(frame: pd.DataFrame, host: str, metrics: Sequence[str], windows: Sequence[Window]) -> object:
    """One figure: a panel per metric plus the calibrated score; windows shaded red."""
    from matplotlib.figure import Figure

    rows = frame.loc[frame["host"].astype(str) == host].sort_values("timestamp")
    ts = pd.to_datetime(rows["timestamp"], utc=True)
    panels = [m for m in metrics if m in rows.columns] + ["score"]
    fig = Figure(figsize=(11, 1.6 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    alarms = rows["anomaly"].to_numpy(dtype=bool) if "anomaly" in rows else None
    for ax, name in zip(axes, panels, strict=True):
        ax.plot(ts, rows[name].to_numpy(dtype=float), lw=0.7, color="tab:blue")
        for start, end in windows:
            ax.axvspan(start, end, color="tab:red", alpha=0.15, lw=0)
        if alarms is not None and alarms.any():
            ax.scatter(ts[alarms], rows[name].to_numpy(dtype=float)[alarms], color="tab:red", s=18, zorder=3)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].axhline(1.0, color="tab:orange", lw=0.8, ls="--")
    fig.suptitle(f"{host}: validation (labels shaded, alarms as red dots, alarm line dashed)", fontsize=9)
    return fig


def plot_validation(
    frame: pd.DataFrame, metrics: Sequence[str], windows: Mapping[str, Sequence[Window]]
) -> dict[str, object]:
    """host -> figure, for every host in ``frame``."""
    hosts = sorted(frame["host"].astype(str).unique())
    return {h: plot_host(frame, h, metrics, windows.get(h, [])) for h in hosts}
