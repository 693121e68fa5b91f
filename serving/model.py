"""Model lifecycle for the scoring service: where models come from, how they are swapped.

Three pieces, each replaceable on its own:

- a :class:`ModelSource` says which model *should* serve (``resolve``, cheap: a registry
  lookup) and loads it (``load``, expensive: artifacts). :class:`ChampionSource` follows the
  registry alias ``champion``; :class:`UriSource` pins one model URI.
- :func:`make_scorer` turns a loaded model into a :class:`Scorer`, the object requests call.
  A fitted ``ml.fleet.FleetModel`` gets :class:`serving.fast.ArrayFleetScorer` (numpy end
  to end, the forest re-laid flat at load time); anything else with ``score(frame)`` gets
  :class:`FleetScorer`, which hands a pandas frame to it. The HTTP layer never changes.
- :class:`ModelProvider` holds the current scorer behind one reference. A background thread
  polls the source; a new version is loaded, probed with a test row and only then swapped in
  with a single assignment. A request reads the reference once and keeps that object, so an
  in-flight request finishes on the model it started with and every response names exactly
  one version. A failed check or load keeps the old model and is reported.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import math
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from serving.schema import CANONICAL_METRICS, Batch, ScoreOutput
from smartcloudops.errors import ModelError

if TYPE_CHECKING:
    import pandas as pd

    from smartcloudops.settings import Settings

logger = logging.getLogger("serving.model")

CHAMPION_ALIAS = "champion"
#: Longest a loader process may take to load and compile a model.
LOADER_TIMEOUT_SECONDS = 600.0
#: A registry only a loader process can ask (not HTTP, not SQLite) is asked at most this often.
SLOW_RESOLVE_SECONDS = 60.0
#: Longest wait before the poller retries a model version that failed to load.
MAX_RETRY_SECONDS = 300.0


# -- what gets loaded ----------------------------------------------------------------------


@runtime_checkable
class FleetModelLike(Protocol):
    """``ml.fleet.FleetModel``'s scoring contract.

    ``score`` takes a wide frame (``timestamp``, ``host``, one column per metric) and returns
    a frame with ``score``, ``anomaly``, ``severity`` and ``contributions``, same row order.
    """

    def score(self, frame: pd.DataFrame, /) -> pd.DataFrame: ...


class LoadedModelLike(Protocol):
    """``ml.tracking.LoadedModel``: the model plus where it came from."""

    @property
    def model(self) -> Any: ...
    @property
    def version(self) -> str | int: ...
    @property
    def run_id(self) -> str | None: ...


@dataclass(frozen=True)
class Loaded:
    """A plain :class:`LoadedModelLike` for sources that do not go through ``ml.tracking``."""

    model: Any
    version: str | int
    run_id: str | None = None
    event_f1: float | None = None
    #: False: the loader already tried to compile this FleetModel to a plan and could not.
    compile: bool = True


class ModelSource(Protocol):
    def describe(self) -> str:
        """Where models come from, for logs and /readyz (e.g. ``models:/name@champion``)."""
        ...

    def resolve(self) -> str:
        """A key naming what ``load`` would return now; cheap, called every poll.

        Raises:
            ModelError: nothing to serve (no model registered, alias unset, registry down).
        """
        ...

    def load(self) -> LoadedModelLike: ...


class ChampionSource:
    """Follows a registry alias (``champion``).

    ``isolated`` (the default): nothing of MLflow or ``ml`` is imported here. ``resolve``
    asks the registry directly and cheaply: MLflow's REST API for an ``http(s)`` tracking
    URI, a read-only query of the alias table for SQLite (only when the database file
    changed since the last answer); any other store through a loader process, at most every
    :data:`SLOW_RESOLVE_SECONDS`. ``load`` runs :mod:`serving.loader` in a short-lived
    process that returns the model compiled to plain arrays, so the service never holds
    MLflow, pandas or scikit-learn for an Isolation-Forest model. ``isolated=False`` does
    both in this process through ``ml.tracking`` (what the loader process itself uses).
    """

    def __init__(
        self,
        tracking_uri: str,
        registered_model: str,
        alias: str = CHAMPION_ALIAS,
        *,
        isolated: bool = True,
        loader_timeout: float = LOADER_TIMEOUT_SECONDS,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        self.alias = alias
        self.isolated = isolated
        self.loader_timeout = loader_timeout
        self._client: Any = None
        self._gate: tuple[Any, str | ModelError] | None = None  # (store fingerprint, answer)
        self._slow_until = 0.0

    def describe(self) -> str:
        return f"models:/{self.registered_model}@{self.alias}"

    def resolve(self) -> str:
        _require_sqlite_file(self.tracking_uri)
        scheme = self.tracking_uri.partition(":")[0].lower()
        if scheme in ("http", "https"):
            return _rest_alias_version(self.tracking_uri, self.registered_model, self.alias)
        if scheme == "sqlite":
            found = self._sqlite_resolve()
            if found is not None:
                return found
        if not self.isolated:
            return self._mlflow_resolve()
        # Another store (PostgreSQL, a file store): a loader process answers; it imports
        # MLflow (seconds of CPU), so its answer is reused for a while.
        if self._gate is not None and time.monotonic() < self._slow_until:
            return _answer(self._gate[1])
        try:
            answer: str | ModelError = _run_loader(
                ["--tracking-uri", self.tracking_uri, "--model-uri", self.describe(), "--resolve"],
                self.loader_timeout,
            ).strip()
        except ModelError as exc:
            answer = exc
        self._gate = (None, answer)
        self._slow_until = time.monotonic() + SLOW_RESOLVE_SECONDS
        return _answer(answer)

    def _sqlite_resolve(self) -> str | None:
        """The alias's version read from the SQLite store, None if the layout is unknown."""
        path = _sqlite_path(self.tracking_uri)
        if path is None:
            return None
        fingerprint = _file_fingerprint(path)
        if self._gate is not None and self._gate[0] == fingerprint:
            return _answer(self._gate[1])
        answer: str | ModelError
        try:
            found = _sqlite_alias_versions(path, self.registered_model, self.alias)
        except sqlite3.Error:
            return None  # not the table layout this query knows: ask MLflow instead
        if len(found) > 1:
            return None  # several workspaces: MLflow knows which one is ours
        if found:
            answer = str(found[0])
        else:
            answer = ModelError(
                f"no {self.alias!r} alias for model {self.registered_model!r} at {self.tracking_uri}"
            )
        self._gate = (fingerprint, answer)
        return _answer(answer)

    def _mlflow_resolve(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            if self._client is None:
                # One client for the life of the source: building a client on a SQLite
                # tracking URI re-checks the schema, far too slow to do every poll.
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            found = self._client.get_model_version_by_alias(self.registered_model, self.alias)
        except MlflowException as exc:
            raise ModelError(
                f"no {self.alias!r} alias for model {self.registered_model!r} at "
                f"{self.tracking_uri}: {exc.message}"
            ) from exc
        return str(found.version)

    def load(self) -> LoadedModelLike:
        if self.isolated:
            return load_in_loader_process(self.tracking_uri, self.describe(), self.loader_timeout)
        from ml.tracking import load_version

        loaded: LoadedModelLike = load_version(self.tracking_uri, self.registered_model, self.alias)
        return loaded


class UriSource:
    """One fixed model URI (``models:/name/3``, ``runs:/<id>/model``): loaded once.

    ``models:/name@alias`` URIs are followed like :class:`ChampionSource`; ``isolated`` as
    there.
    """

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str,
        *,
        isolated: bool = True,
        loader_timeout: float = LOADER_TIMEOUT_SECONDS,
    ) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.isolated = isolated
        self.loader_timeout = loader_timeout
        alias = alias_of(model_uri)
        self._alias_source = (
            ChampionSource(tracking_uri, alias[0], alias[1], isolated=isolated, loader_timeout=loader_timeout)
            if alias
            else None
        )

    def describe(self) -> str:
        return self.model_uri

    def resolve(self) -> str:
        if self._alias_source is not None:
            return self._alias_source.resolve()
        return self.model_uri

    def load(self) -> LoadedModelLike:
        if self._alias_source is not None:
            return self._alias_source.load()
        if self.isolated:
            return load_in_loader_process(self.tracking_uri, self.model_uri, self.loader_timeout)
        return _load_pyfunc_fleet(self.model_uri, self.tracking_uri)


def _answer(answer: str | ModelError) -> str:
    if isinstance(answer, ModelError):
        raise answer
    return answer


def _sqlite_path(tracking_uri: str) -> Path | None:
    path = tracking_uri.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def _file_fingerprint(path: Path) -> tuple[tuple[int, int, int], ...]:
    """Changes whenever the database does (its write-ahead log included, if any)."""
    out = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _sqlite_alias_versions(path: Path, name: str, alias: str) -> list[int]:
    # Read-only, so a store being created or migrated by training is never written here.
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
        rows = conn.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchall()
    return [int(row[0]) for row in rows]


def _rest_alias_version(tracking_uri: str, name: str, alias: str) -> str:
    """MLflow's REST API: ``GET /api/2.0/mlflow/registered-models/alias``."""
    import httpx

    url = tracking_uri.rstrip("/") + "/api/2.0/mlflow/registered-models/alias"
    auth: Any = None
    headers = {}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"))
    try:
        response = httpx.get(
            url, params={"name": name, "alias": alias}, headers=headers, auth=auth, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise ModelError(f"cannot reach the MLflow registry at {tracking_uri}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200:
        try:
            return str(body["model_version"]["version"])
        except (KeyError, TypeError) as exc:
            raise ModelError(f"unexpected answer from the MLflow registry at {tracking_uri}") from exc
    message = body.get("message") if isinstance(body, dict) else None
    if response.status_code in (400, 404):
        raise ModelError(
            f"no {alias!r} alias for model {name!r} at {tracking_uri}: {message or response.text[:200]}"
        )
    raise ModelError(
        f"the MLflow registry at {tracking_uri} answered {response.status_code}: {message or ''}"
    )


def load_in_loader_process(tracking_uri: str, model_uri: str, timeout: float) -> Loaded:
    """Run :mod:`serving.loader` for ``model_uri`` and read what it wrote.

    A compiled plan needs numpy and numba only; a pickled FleetModel (a model the plan cannot express)
    brings ``ml`` into this process, still not MLflow.
    """
    from serving.loader import META, PICKLE

    work = Path(tempfile.mkdtemp(prefix="smartcloudops-model-"))
    try:
        _run_loader(["--tracking-uri", tracking_uri, "--model-uri", model_uri, "--out", str(work)], timeout)
        try:
            meta = json.loads((work / META).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"the model loader wrote no usable {META}: {exc}") from exc
        model: Any
        if meta.get("form") == "plan":
            from ml.compiled import FleetPlan

            model = FleetPlan.load(work)
        else:
            with (work / PICKLE).open("rb") as fh:
                # Written by our own loader process into a directory private to this call.
                model = pickle.load(fh)  # noqa: S301  # nosec B301
        run_id = meta.get("run_id")
        return Loaded(
            model=model, version=str(meta["version"]), run_id=str(run_id) if run_id else None, compile=False
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_loader(args: list[str], timeout: float) -> str:
    """``python -m serving.loader ARGS``; its stdout, or a ModelError with its last words."""
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # NOTES.md: MLflow import deadlock
    # The loader must import whatever this process could (the model's pickle may name any
    # module on our path), and this package first.
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (root, *sys.path) if p and Path(p).is_dir()))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "serving.loader", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"the model loader did not finish in {timeout:.0f}s") from exc
    except OSError as exc:
        raise ModelError(f"cannot start the model loader: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        if done.returncode != 2:
            logger.error("model loader failed (exit %s):\n%s", done.returncode, done.stderr[-4000:])
        raise ModelError(lines[-1] if lines else f"the model loader failed (exit status {done.returncode})")
    return done.stdout


def _load_pyfunc_fleet(model_uri: str, tracking_uri: str) -> Loaded:
    """Load any MLflow URI holding the project's pyfunc and unwrap its FleetModel.

    ``ml.tracking`` loads by registry alias only; pinned URIs (``models:/name/3``,
    ``runs:/<id>/model``) are unwrapped here the same way (``FleetPyfunc.fleet``).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from ml.fleet import FleetModel

    # models:/ URIs resolve through the registry URI, which MLflow reads process-wide; this
    # process serves from one store, so setting it is safe (ml.tracking does the same).
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ModelError(f"cannot load {model_uri} from {tracking_uri}: {exc.message}") from exc
    fleet = getattr(pyfunc.unwrap_python_model(), "fleet", None)
    if not isinstance(fleet, FleetModel):
        raise ModelError(f"{model_uri} does not hold a FleetModel")
    # The registry version when the URI names one (models:/name/3), else the URI itself:
    # results must say exactly which model scored them.
    name, _, version = model_uri.removeprefix("models:/").rstrip("/").rpartition("/")
    label = version if model_uri.startswith("models:/") and name and version.isdigit() else model_uri
    return Loaded(model=fleet, version=label, run_id=pyfunc.metadata.run_id)


def _release_free_heap() -> None:
    """Hand the heap freed by loading (unpickling, MLflow's registry calls) back to the OS.

    glibc keeps freed arenas mapped; after a load that is tens of MB of resident memory
    the process will not touch again. Best effort: a no-op off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return


def _require_sqlite_file(tracking_uri: str) -> None:
    """Refuse a SQLite tracking store that does not exist yet.

    Opening it through MLflow would create and migrate an empty database: a side effect the
    scoring service should not have, and a migration race with a training run starting at
    the same time. Until training creates it there is simply no model.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    # sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute.
    path = tracking_uri.removeprefix("sqlite:///").partition("?")[0]
    if path and path != ":memory:" and not Path(path).exists():
        raise ModelError(f"no MLflow database at {path} yet (train a model first)")


def alias_of(model_uri: str) -> tuple[str, str] | None:
    """``(name, alias)`` of a ``models:/name@alias`` URI, else None (a pinned URI)."""
    if not model_uri.startswith("models:/"):
        return None
    name, sep, alias = model_uri.removeprefix("models:/").rstrip("/").partition("@")
    return (name, alias) if sep and name and alias else None


class StaticSource:
    """An in-memory model: tests, benchmarks and embedding the service in another process."""

    def __init__(self, model: Any, version: str | int = "static", run_id: str | None = None) -> None:
        self._loaded = Loaded(model=model, version=version, run_id=run_id)

    def describe(self) -> str:
        return f"static:{self._loaded.version}"

    def resolve(self) -> str:
        return str(self._loaded.version)

    def load(self) -> LoadedModelLike:
        return self._loaded


# -- what requests call --------------------------------------------------------------------


class Scorer(Protocol):
    """An immutable, ready-to-call model. One request uses exactly one scorer."""

    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def loaded_at(self) -> datetime: ...

    def score(self, batch: Batch) -> ScoreOutput:
        """Score live rows (a stateful model updates its per-host history)."""
        ...

    def check(self, batch: Batch) -> ScoreOutput:
        """Score without touching live state: validates a model before it serves."""
        ...


@dataclass(frozen=True, eq=False)
class FleetScorer:
    """Scores through ``FleetModel.score`` on a pandas frame (the walking-skeleton path).

    ``FleetModel`` keeps a small per-host history so one row at a time scores like a batch;
    that state lives in the model object, so it belongs to this scorer and is left behind
    with it on a swap (the new model starts each host with neutral features).
    """

    model: FleetModelLike
    version: str
    run_id: str | None = None
    source: str = ""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: the model's ``score`` takes ``stateful=`` (ml.fleet.FleetModel does)
    supports_stateless: bool = False

    def score(self, batch: Batch) -> ScoreOutput:
        return self._score(batch)

    def check(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=False) if self.supports_stateless else self._score(batch)

    def _score(self, batch: Batch, **kwargs: Any) -> ScoreOutput:
        frame = batch_to_frame(batch)
        score: Callable[..., Any] = self.model.score
        try:
            out = score(frame, **kwargs)
        except ModelError:
            raise
        except Exception as exc:  # any failure inside the model is the model's, not the request's
            raise ModelError(f"model {self.version} failed to score: {exc}") from exc
        return frame_to_output(out, len(batch), self.version)


def batch_to_frame(batch: Batch) -> pd.DataFrame:
    """The wide frame ``FleetModel.score`` takes: ``timestamp, host, <metrics>``."""
    import pandas as pd

    data: dict[str, Any] = {
        "timestamp": pd.DatetimeIndex(batch.timestamps).as_unit("ns"),
        "host": batch.hosts,
    }
    for i, metric in enumerate(batch.metrics):
        data[metric] = batch.values[:, i]
    return pd.DataFrame(data)


def frame_to_output(out: pd.DataFrame, rows: int, version: str) -> ScoreOutput:
    """Check and convert a ``FleetModel.score`` result; a malformed one is a ModelError."""
    import pandas as pd

    if not isinstance(out, pd.DataFrame):
        raise ModelError(f"model {version} returned {type(out).__name__}, expected a DataFrame")
    if len(out) != rows:
        raise ModelError(f"model {version} returned {len(out)} rows for {rows}")
    missing = [c for c in ("score", "anomaly") if c not in out.columns]
    if missing:
        raise ModelError(f"model {version} output lacks columns: {', '.join(missing)}")
    scores = pd.to_numeric(out["score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    anomaly = np.array([_flag(v) for v in out["anomaly"]], dtype=np.bool_)
    severity = [_severity(v) for v in out["severity"]] if "severity" in out.columns else [None] * rows
    if "contributions" in out.columns:
        contributions = [_contributions(v) for v in out["contributions"]]
    else:
        contributions = [{} for _ in range(rows)]
    return ScoreOutput(scores=scores, anomaly=anomaly, severity=severity, contributions=contributions)


def _flag(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _severity(value: Any) -> str | None:
    from smartcloudops.domain import Severity

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, Severity):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(Severity(int(value)))
    text = str(value).strip().lower()
    return text or None


def _contributions(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, float] = {}
    for name, weight in value.items():
        try:
            number = float(weight)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(name)] = number
    return out


def make_scorer(loaded: LoadedModelLike, source: str) -> Scorer:
    """Build the request-path object for a freshly loaded model (compile here, not per request).

    ``loaded.model`` may be an :class:`ml.compiled.FleetPlan` (what the loader process
    writes), a fitted ``ml.fleet.FleetModel`` (compiled to a plan here when it can be,
    checked against its own ``score`` first) or anything with ``score(frame)``.
    """
    model = loaded.model
    from ml.compiled import FleetPlan  # numpy and numba only
    from serving import fast

    version, run_id = str(loaded.version), loaded.run_id
    if isinstance(model, FleetPlan):
        return fast.PlanScorer(plan=model, version=version, run_id=run_id, source=source)
    if fast.supports(model):
        plan = compiled_plan(model) if getattr(loaded, "compile", True) else None
        if plan is not None:
            return fast.PlanScorer(plan=plan, version=version, run_id=run_id, source=source)
        # numpy arrays end to end through the model's own detectors (serving.fast).
        return fast.ArrayFleetScorer(model=model, version=version, run_id=run_id, source=source)
    if not isinstance(model, FleetModelLike):
        raise ModelError(f"loaded model {type(model).__name__} has no score(frame) method")
    return FleetScorer(
        model=model,
        version=version,
        run_id=run_id,
        source=source,
        supports_stateless=_takes_keyword(model.score, "stateful"),
    )


def compiled_plan(fleet: Any) -> Any:
    """``fleet`` as an :class:`ml.compiled.FleetPlan` checked equal to ``fleet.score``, or None
    when it cannot be compiled exactly (then the generic scorer serves it)."""
    from ml.compiled import NotCompilableError, check_plan, compile_fleet

    try:
        plan = compile_fleet(fleet)
        check_plan(plan, fleet)
    except NotCompilableError as exc:
        logger.info("model served without a compiled plan: %s", exc)
        return None
    return plan


def _takes_keyword(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def probe_batch() -> Batch:
    """One plausible row, scored before a new model is swapped in: a model that cannot
    score it is refused and the old one keeps serving."""
    typical = {"cpu": 35.0, "memory": 50.0, "disk": 40.0, "load": 1.0, "network_in": 1e5, "network_out": 1e5}
    values = np.array([[typical.get(m, 1.0) for m in CANONICAL_METRICS]], dtype=np.float64)
    return Batch(hosts=["__probe__"], timestamps=[datetime.now(UTC)], values=values)


# -- the provider --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderStatus:
    ready: bool
    source: str
    model_version: str | None = None
    run_id: str | None = None
    loaded_at: datetime | None = None
    last_check_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    loads: int = 0
    load_failures: int = 0
    polling: bool = False

    @property
    def reason(self) -> str | None:
        """Why the service is not ready (None when it is)."""
        if self.ready:
            return None
        if self.last_error:
            return f"no model loaded: {self.last_error}"
        return f"no model loaded yet from {self.source}"

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "ready": self.ready,
            "reason": self.reason,
            "source": self.source,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "loaded_at": iso(self.loaded_at),
            "last_check_at": iso(self.last_check_at),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "loads": self.loads,
            "load_failures": self.load_failures,
            "polling": self.polling,
        }


class ModelProvider:
    """Holds the scorer requests use and keeps it in step with its source."""

    def __init__(
        self,
        source: ModelSource,
        *,
        poll_seconds: float = 10.0,
        probe: bool = True,
        scorer_factory: Callable[[LoadedModelLike, str], Scorer] = make_scorer,
        freeze_gc: bool = False,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self.source = source
        self.poll_seconds = poll_seconds
        self._probe = probe
        self._scorer_factory = scorer_factory
        self._freeze_gc = freeze_gc
        # The one reference requests read. Rebinding an attribute is atomic under the GIL,
        # so a reader sees the old scorer or the new one, never a mix.
        self._current: Scorer | None = None
        self._key: str | None = None
        self._failed_key: str | None = None
        self._failed_attempts = 0
        self._retry_at = 0.0
        self._refresh_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._last_check_at: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._loads = 0
        self._load_failures = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, model_uri: str | None = None) -> ModelProvider:
        source: ModelSource
        if model_uri:
            source = UriSource(model_uri, settings.resolved_tracking_uri)
        else:
            source = ChampionSource(settings.resolved_tracking_uri, settings.registered_model)
        return cls(source, poll_seconds=settings.model_poll_seconds, freeze_gc=True)

    @classmethod
    def static(cls, model: Any, version: str | int = "static", run_id: str | None = None) -> ModelProvider:
        """A provider already serving ``model`` (loaded synchronously; raises if it cannot)."""
        provider = cls(StaticSource(model, version, run_id))
        if not provider.refresh():
            raise ModelError(provider.status().last_error or "static model failed to load")
        return provider

    # -- request path ----------------------------------------------------------------------

    def current(self) -> Scorer | None:
        return self._current

    def status(self) -> ProviderStatus:
        scorer = self._current
        with self._state_lock:
            return ProviderStatus(
                ready=scorer is not None,
                source=self.source.describe(),
                model_version=scorer.version if scorer else None,
                run_id=scorer.run_id if scorer else None,
                loaded_at=scorer.loaded_at if scorer else None,
                last_check_at=self._last_check_at,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                loads=self._loads,
                load_failures=self._load_failures,
                polling=self._thread is not None and self._thread.is_alive(),
            )

    # -- lifecycle -------------------------------------------------------------------------

    def refresh(self, *, force: bool = True) -> bool:
        """Check the source once; load and swap if it names something new. True if swapped.

        ``force=False`` (the poller) backs off from a version that failed to load: loading
        holds the GIL for a while (unpickling, probing), so retrying a broken artifact every
        poll would cost serving latency for nothing.
        """
        with self._refresh_lock:
            description = self.source.describe()
            try:
                candidate = self.source.resolve()
            except Exception as exc:  # noqa: BLE001 - boundary: a registry failure must not stop serving
                self._failed(f"checking {description} failed: {exc}", candidate=None, exc=exc)
                return False
            self._checked()
            if self._current is not None and candidate == self._key:
                self._clear_error()
                return False
            if not force and candidate == self._failed_key and time.monotonic() < self._retry_at:
                return False
            try:
                loaded = self.source.load()
                scorer = self._scorer_factory(loaded, description)
                if self._probe:
                    self._check_probe(scorer)
            except Exception as exc:  # noqa: BLE001 - boundary: a bad new model must not replace a good one
                self._failed(
                    f"loading {description} ({candidate}) failed: {exc}", candidate=candidate, exc=exc
                )
                return False
            previous = self._current
            self._current = scorer
            self._key = candidate
            self._failed_key = None
            self._failed_attempts = 0
            self._ready.set()
            if self._freeze_gc:
                # A loaded model (and MLflow, scikit-learn, pandas) is a million long-lived
                # objects; a full collection scanning them costs ~50-100 ms, paid by whichever
                # request happens to trigger it: the p99 and every big batch. Freezing moves
                # what exists now out of the collector's sight; refcounting still frees it.
                gc.collect()
                gc.freeze()
                _release_free_heap()
            with self._state_lock:
                self._loads += 1
                self._last_error = None
                self._last_error_at = None
            logger.info(
                "serving model %s from %s",
                scorer.version,
                description,
                extra={
                    "model_version": scorer.version,
                    "previous_version": previous.version if previous else None,
                    "run_id": scorer.run_id,
                    "model_source": description,
                },
            )
            return True

    def start(self) -> None:
        """Start polling in a daemon thread; the first check happens at once. Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._poll, args=(self._stop,), name="model-poller", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # A load in progress may outlast the timeout; the thread is a daemon, so it
            # cannot hold the process open.
            thread.join(timeout)
        self._thread = None

    def wait_ready(self, timeout: float) -> bool:
        """Block until a model is loaded or ``timeout`` seconds pass (CLI, tests)."""
        return self._ready.wait(timeout)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.refresh(force=False)
            except Exception:  # never let the poller die: the next poll may succeed
                logger.exception("model poll failed unexpectedly")
            stop.wait(self.poll_seconds)

    def _check_probe(self, scorer: Scorer) -> None:
        batch = probe_batch()
        output = scorer.check(batch)
        if len(output) != len(batch):
            raise ModelError(f"probe row gave {len(output)} results")

    def _checked(self) -> None:
        with self._state_lock:
            self._last_check_at = datetime.now(UTC)

    def _clear_error(self) -> None:
        with self._state_lock:
            self._last_error = None
            self._last_error_at = None

    def _failed(self, message: str, *, candidate: str | None, exc: BaseException) -> None:
        repeat = candidate is not None and candidate == self._failed_key
        self._failed_attempts = self._failed_attempts + 1 if repeat else 1
        self._failed_key = candidate
        # Retry a failed version after 1, 2, 4, ... polls, at most every MAX_RETRY_SECONDS.
        backoff = min(self.poll_seconds * 2 ** (self._failed_attempts - 1), MAX_RETRY_SECONDS)
        self._retry_at = time.monotonic() + backoff
        with self._state_lock:
            repeat = repeat or (candidate is None and message == self._last_error)
            self._last_error = message
            self._last_error_at = datetime.now(UTC)
            self._load_failures += 1
        serving = self._current.version if self._current else None
        extra = {"model_source": self.source.describe(), "serving_version": serving, "candidate": candidate}
        # Log the first failure loudly; the same failure every poll would drown the log.
        # A ModelError is an expected state (nothing registered yet): no traceback.
        level = logging.DEBUG if repeat else logging.ERROR
        exc_info = None if isinstance(exc, ModelError) else exc
        if self._current is not None:
            logger.log(level, "%s; still serving model %s", message, serving, extra=extra, exc_info=exc_info)
        else:
            logger.log(level, "%s; not ready", message, extra=extra, exc_info=exc_info)
