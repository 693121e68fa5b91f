"""Load a registered model in a short-lived process; hand the service a plain form of it.

``python -m serving.loader --tracking-uri URI --model-uri models:/name@champion --out DIR``

Loading goes through MLflow (the registry lookup, the pyfunc artifact) and unpickles a
``FleetModel`` (pandas, scikit-learn): about 250 MB of imports the scoring service would
otherwise keep for its whole life to use a few arrays. This process does that work, then
writes what the service needs into ``DIR`` and exits, returning the memory to the system:

- ``plan.json`` + ``arrays.npz``: the model compiled by :mod:`ml.compiled`, checked equal
  to ``FleetModel.score`` on a probe stream first; the service runs it with numpy and numba alone;
- else ``fleet.pkl``: the FleetModel itself (a family or alarm rule the plan does not
  express), which the service unpickles and scores through ``ml`` (still without MLflow);
- ``meta.json`` last (written whole, then renamed): version, run id and which form. Its
  absence means the load failed; the service keeps the model it has.

``--resolve`` only prints the version the URI names now (for registries the service cannot
query cheaply itself). Exit status: 0 done, 2 a :class:`~smartcloudops.errors.ModelError`
(message on stderr, one line), 1 anything else (traceback on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

#: Exit status for an expected failure (no such model, not a FleetModel): one-line message.
EXIT_MODEL_ERROR = 2
META = "meta.json"
PICKLE = "fleet.pkl"


def resolve(tracking_uri: str, model_uri: str) -> str:
    """The version ``model_uri`` names now (the URI itself when it pins one)."""
    from serving.model import ChampionSource, alias_of

    alias = alias_of(model_uri)
    if alias is None:
        return model_uri

    return ChampionSource(tracking_uri, alias[0], alias[1], isolated=False).resolve()


def load(tracking_uri: str, model_uri: str, out: Path) -> dict[str, Any]:
    """Load ``model_uri``, write its plain form into ``out``; returns what ``meta.json`` says."""
    from serving.model import UriSource, compiled_plan

    loaded = UriSource(model_uri, tracking_uri, isolated=False).load()
    fleet = loaded.model
    out.mkdir(parents=True, exist_ok=True)
    plan = compiled_plan(fleet)
    # Compile the response writer here too, into the numba cache the service shares: the
    # service then loads it from disk instead of holding the compiler's memory.
    from serving.batch_response import warm_up

    warm_up()
    if plan is not None:
        plan.save(out)
        form = "plan"
    else:
        with (out / PICKLE).open("wb") as fh:
            pickle.dump(fleet, fh, protocol=pickle.HIGHEST_PROTOCOL)
        form = "pickle"
    meta = {"version": str(loaded.version), "run_id": loaded.run_id, "form": form, "model_uri": model_uri}
    partial = out / (META + ".tmp")
    partial.write_text(json.dumps(meta))
    partial.replace(out / META)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.loader", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument(
        "--model-uri", required=True, help="models:/name@alias, models:/name/3 or runs:/id/model"
    )
    parser.add_argument("--out", type=Path, help="directory to write the model into")
    parser.add_argument("--resolve", action="store_true", help="only print the version the URI names")
    args = parser.parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # NOTES.md: MLflow import deadlock
    with contextlib.suppress(OSError):
        # Loading competes with the service for the CPU: let requests go first.
        os.nice(5)
    from smartcloudops.errors import ModelError

    try:
        if args.resolve:
            print(resolve(args.tracking_uri, args.model_uri))
            return 0
        if args.out is None:
            parser.error("--out is required unless --resolve")
        print(json.dumps(load(args.tracking_uri, args.model_uri, args.out)))
        return 0
    except ModelError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return EXIT_MODEL_ERROR


if __name__ == "__main__":
    sys.exit(main())
