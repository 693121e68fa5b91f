"""Anomaly detection for SmartCloudOps AI: features, detectors, evaluation, training, tracking.

Modules are named after pipeline stages:

- :mod:`ml.features` — causal feature engineering on wide per-host frames.
- :mod:`ml.detectors` — detectors under scikit-learn's estimator contract.
- :mod:`ml.thresholds` — label-free thresholds, which also calibrate scores.
- :mod:`ml.alarms` — alarm handling (M-of-N, cooldown) as a post-step on flags.
- :mod:`ml.severity` — severity levels from calibrated scores.
- :mod:`ml.fleet` — :class:`~ml.fleet.FleetModel`, the unit registered and served.
- :mod:`ml.evaluation` — event-F1 and friends, exactly as ARCHITECTURE.md defines them.
- :mod:`ml.injection` — labelled validation data: anomalies injected into real segments, and
  the synthetic development corpus the detectors' configuration was chosen on.
- :mod:`ml.training` — history split, candidates registry, candidate training.
- :mod:`ml.tracking` — MLflow logging, registry, champion promotion and loading.
- :mod:`ml.detect` — the engine behind ``smartcloudops detect``.

Importing this package is cheap: Prophet, MLflow and matplotlib are imported lazily.
"""

__version__ = "0.1.0"
