"""The MLflow pyfunc wrapper around a pickled :class:`~ml.fleet.FleetModel`.

Kept apart from :mod:`ml.tracking` because defining the class imports MLflow (seconds);
only code that logs or loads a model imports this module.
"""

from __future__ import annotations

import json

import pandas as pd
from mlflow.pyfunc import PythonModel

from ml.fleet import FleetModel


# MLflow emits a one-off UserWarning that predict has no type hints (it forces its own
# warning filter, so it cannot be silenced here). That is deliberate: MLflow 3 reads
# predict's annotations as the input schema and only accepts list[...] there, while the
# explicit signature given at logging time is our schema.
class FleetPyfunc(PythonModel):  # type: ignore[misc]
    """``predict`` takes ``timestamp, host, <metrics>`` rows (timestamps naive UTC, as
    MLflow's datetime type wants) and returns ``score, anomaly, severity, contributions``
    (contributions as a JSON string: pyfunc outputs are scalar columns). ``mlflow models
    serve`` can serve it; our scoring service unwraps ``fleet`` instead."""

    def __init__(self, fleet: FleetModel) -> None:
        self.fleet = fleet

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        out = self.fleet.score(frame)
        out["contributions"] = [json.dumps(c) for c in out["contributions"]]
        return out
