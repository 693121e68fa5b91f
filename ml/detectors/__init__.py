"""Detectors under one interface (see :mod:`ml.detectors.base`).

Prophet is imported only when a :class:`ProphetDetector` is fitted, so importing this
package stays cheap.
"""

from ml.detectors.base import BaseDetector, ScoreDetails, Segment
from ml.detectors.isolation_forest import IsolationForestDetector
from ml.detectors.prophet import ProphetDetector
from ml.detectors.robust_baseline import RobustBaselineDetector

__all__ = [
    "BaseDetector",
    "IsolationForestDetector",
    "ProphetDetector",
    "RobustBaselineDetector",
    "ScoreDetails",
    "Segment",
]
