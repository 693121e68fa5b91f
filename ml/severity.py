"""Severity levels from calibrated scores (1.0 = the alarm line, see :mod:`ml.thresholds`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from smartcloudops.domain import Severity

#: Lower edges on the calibrated scale, highest first. 1.0 is the alarm line, so LOW is
#: "just over the line" and CRITICAL "three times as far from typical as the line".
SEVERITY_BANDS: tuple[tuple[float, Severity], ...] = (
    (3.0, Severity.CRITICAL),
    (2.0, Severity.HIGH),
    (1.5, Severity.MEDIUM),
    (1.0, Severity.LOW),
)


def severity_from_score(score: float) -> Severity | None:
    """The severity of a calibrated score, or None below the alarm line (or NaN)."""
    if not np.isfinite(score):
        return None if np.isnan(score) else Severity.CRITICAL
    for edge, level in SEVERITY_BANDS:
        if score >= edge:
            return level
    return None


def severity_labels(scores: Iterable[float], flags: Iterable[bool]) -> list[str | None]:
    """Severity names for flagged rows, None elsewhere (a suppressed row has no severity)."""
    out: list[str | None] = []
    for score, flag in zip(scores, flags, strict=True):
        level = severity_from_score(float(score)) if flag else None
        # An alarm kept by M-of-N may sit on a row just under the line: still LOW, not None.
        out.append(str(level or Severity.LOW) if flag else None)
    return out
