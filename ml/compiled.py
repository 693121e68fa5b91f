"""A fitted Isolation-Forest FleetModel as plain arrays, executed by numpy and numba kernels.

The scoring service must not carry MLflow, pandas, scikit-learn and SciPy (about 250 MB of
resident memory) to walk 100 small trees. This module imports only numpy, numba (whose
kernels it compiles to machine code, cached on disk under ``NUMBA_CACHE_DIR``) and the
standard library, and holds everything the request path needs:

- :class:`CompiledForest`: the one compiled Isolation Forest of the project (the detector
  scores through it too). Every tree is re-laid as a *complete* binary tree of its maximum
  depth: a leaf above the bottom level is copied down (its threshold is +inf, so every row
  goes left), which makes a traversal step ``i = 2i + 1 + (x[f_i] > t_i)``, with no child
  table and no leaf test; the path length of a row is a sum
  of bottom-level values ``depth + c(n_samples) - 1``. Thresholds are kept as the largest
  float32 not above scikit-learn's float64 threshold, so comparing float32 inputs gives
  exactly scikit-learn's decisions (``x <= t`` for a float32 ``x`` is the same test either
  way). Scores equal ``-IsolationForest.score_samples`` (tested to 1e-9).
- :class:`FleetPlan`: per-host detectors (features, forest, calibration, contributions), the
  fleet's alarm rules (M-of-N with bypass, cooldown per leading metric) and the severity
  bands, scored on whole batches at once: every host's rows and remembered context are laid
  end to end, rolling statistics come from running sums (O(rows), not O(rows x window)),
  and each detector's forest is walked once per call.

:func:`compile_fleet` (which needs the fitted model, so pandas and scikit-learn are there)
builds a plan and :func:`check_plan` holds it equal to ``FleetModel.score`` on a probe
stream, row by row and in batches. A model this module cannot express exactly (another
family, another alarm rule, a changed feature layout) raises :class:`NotCompilableError` and is
served by the generic path instead; it is never scored approximately.
"""

# ruff: noqa: N803, N806  (X is scikit-learn's name for a feature matrix)
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.alarm_step import alarm_step


def _numba_cache_dir() -> str:
    """Where compiled kernels are cached: under SMARTCLOUDOPS_HOME (never site-packages,
    which numba would otherwise try next to this file), else a temporary directory."""
    for base in (Path(os.environ.get("SMARTCLOUDOPS_HOME", ".smartcloudops")), Path(tempfile.gettempdir())):
        directory = base.resolve() / "cache" / "numba"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return str(directory)
    return ""


os.environ.setdefault("NUMBA_CACHE_DIR", _numba_cache_dir())
# numba checks SciPy's version on import and loads SciPy's BLAS with its numpy support (for
# np.dot and friends, which these kernels do not use) whenever SciPy is importable. The
# scoring service keeps SciPy and its memory out: hidden while both load, here at once.
_hide_scipy = "scipy" not in sys.modules
if _hide_scipy:
    sys.modules["scipy"] = None  # type: ignore[assignment]
try:
    import numba
    import numba.np.arraymath
finally:
    if _hide_scipy and sys.modules.get("scipy", 0) is None:
        del sys.modules["scipy"]
_numba_config: Any = numba.config  # read by numba when a kernel below is decorated
if not _numba_config.CACHE_DIR:  # numba was imported before this module set the variable
    _numba_config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

DAY_NS = 86_400 * 10**9
#: Version of the on-disk plan layout (:meth:`FleetPlan.save`); a reader refuses others.
PLAN_FORMAT = 2
#: Per-metric feature kinds this module computes, in ``ml.features`` column order.
FEATURE_KINDS = ("value", "diff", "dev", "std", "seasonal")

FloatArray = npt.NDArray[np.float64]


class NotCompilableError(ValueError):
    """The model holds something this module does not reproduce exactly."""


def average_path_length(n: Any) -> FloatArray:
    """c(n) of Liu et al.: the average path length of an unsuccessful BST search."""
    n = np.asarray(n, dtype=float)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_at_most(threshold: FloatArray) -> npt.NDArray[np.float32]:
    """The largest float32 not above each float64 threshold (so float32 tests agree)."""
    out = threshold.astype(np.float32)
    over = out.astype(np.float64) > threshold
    out[over] = np.nextafter(out[over], np.float32(-np.inf))
    return out


# -- compiled kernels (numba; cached on disk, compiled when a plan is loaded) ------------------


@numba.njit(cache=True, nogil=True)
def _tree_sum(
    x32: npt.NDArray[np.float32],
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float32],
    leaf_value: FloatArray,
    n_trees: int,
    depth: int,
) -> float:
    """Summed path length of one float32 row over all trees (complete layout): one level of
    every tree at a time, so the trees' walks are independent work the CPU overlaps."""
    width = (1 << (depth + 1)) - 1
    leaves = 1 << depth
    nodes = np.zeros(n_trees, dtype=np.int32)
    for _ in range(depth):
        for tree in range(n_trees):
            node = nodes[tree]
            g = tree * width + node
            right = x32[feature[g]] > threshold[g]
            nodes[tree] = 2 * node + 1 + right
    total = 0.0
    for tree in range(n_trees):
        total += leaf_value[tree * leaves + nodes[tree] - (leaves - 1)]
    return total


#: Rows walked in lockstep through one tree (their nodes and the tree stay in L1 cache).
_BLOCK = 256


@numba.njit(cache=True, nogil=True)
def _walk_block(
    X32: npt.NDArray[np.float32],
    lo: int,
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float32],
    leaf_value: FloatArray,
    n_trees: int,
    depth: int,
    out: FloatArray,
) -> None:
    """Summed path lengths of rows ``lo:lo+_BLOCK`` into ``out[lo:...]``: tree by tree, one
    level for all the block's rows at a time, so the rows' walks are independent work the
    CPU overlaps (one row's walk is a chain of dependent loads)."""
    width = (1 << (depth + 1)) - 1
    leaves = 1 << depth
    n_features = X32.shape[1]
    size = min(X32.shape[0], lo + _BLOCK) - lo
    nodes = np.empty(size, dtype=np.int32)
    offsets = np.arange(lo, lo + size) * n_features
    flat = X32.ravel()
    for r in range(size):
        out[lo + r] = 0.0
    for tree in range(n_trees):
        tree_feature = feature[tree * width : (tree + 1) * width]
        tree_threshold = threshold[tree * width : (tree + 1) * width]
        tree_leaf = leaf_value[tree * leaves : (tree + 1) * leaves]
        nodes[:] = 0
        for _ in range(depth):
            for r in range(size):
                node = nodes[r]
                right = flat[offsets[r] + tree_feature[node]] > tree_threshold[node]
                nodes[r] = 2 * node + 1 + right
        for r in range(size):
            out[lo + r] += tree_leaf[nodes[r] - (leaves - 1)]


@numba.njit(cache=True, nogil=True)
def _path_lengths(
    X32: npt.NDArray[np.float32],
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float32],
    leaf_value: FloatArray,
    n_trees: int,
    depth: int,
) -> FloatArray:
    out = np.empty(X32.shape[0])
    for lo in range(0, X32.shape[0], _BLOCK):
        _walk_block(X32, lo, feature, threshold, leaf_value, n_trees, depth, out)
    return out


@numba.njit(cache=True, nogil=True)
def _score_row(
    seg_values: FloatArray,
    t: int,
    window: int,
    warmup: int,
    fill: FloatArray,
    feature_fill: FloatArray,
    center: FloatArray,
    scale: FloatArray,
    profile: FloatArray,
    baseline: float,
    line: float,
    feature: npt.NDArray[np.int32],
    threshold: npt.NDArray[np.float32],
    leaf_value: FloatArray,
    n_trees: int,
    depth: int,
    denominator: float,
    contrib: FloatArray,
) -> float:
    """The calibrated score of a host's last row (earlier rows: its context, NaN where
    missing); the normalised contributions go into ``contrib``. Same arithmetic as the batch
    path (:meth:`FleetPlan._detect`) for that one row."""
    rows, m = seg_values.shape
    values = seg_values
    if np.isnan(seg_values).any():
        # Carry the last value forward, else the detector's training median.
        values = seg_values.copy()
        for j in range(m):
            last = math.nan
            for i in range(rows):
                if math.isnan(values[i, j]):
                    values[i, j] = fill[j] if math.isnan(last) else last
                else:
                    last = values[i, j]
    here = rows - 1
    kinds = 5
    feats = np.empty(kinds * m + 2)
    lo = max(0, here - window)
    count = here - lo
    tod_bin = (t % DAY_NS) * profile.shape[0] // DAY_NS
    for j in range(m):
        x = values[here, j]
        feats[kinds * j] = x
        feats[kinds * j + 4] = x - profile[tod_bin, j] if profile.shape[0] > 1 else 0.0
        feats[kinds * j + 1] = x - values[here - 1, j] if here else math.nan
        if here >= warmup:
            total = 0.0
            for i in range(lo, here):
                total += values[i, j]
            mean = total / count
            squares = 0.0
            for i in range(lo, here):
                squares += (values[i, j] - mean) ** 2
            feats[kinds * j + 2] = x - mean
            feats[kinds * j + 3] = math.sqrt(squares / count)
        else:
            feats[kinds * j + 2] = math.nan
            feats[kinds * j + 3] = math.nan
    phase = 2.0 * math.pi * (t % DAY_NS) / DAY_NS
    feats[-2] = math.sin(phase)
    feats[-1] = math.cos(phase)
    if here < warmup:  # features without enough history take the training medians
        for i in range(len(feats)):
            if math.isnan(feats[i]):
                feats[i] = feature_fill[i]
    if denominator == 0:
        raw = 0.5  # one training sample: scikit-learn's E[h]/c is 1
    else:
        path = _tree_sum(feats.astype(np.float32), feature, threshold, leaf_value, n_trees, depth)
        raw = 2.0 ** (-path / denominator)
    score = max((raw - baseline) / (line - baseline), 0.0)
    total = 0.0
    for j in range(m):
        top = 0.0
        for k in range(kinds):
            i = kinds * j + k
            z = abs(feats[i] - center[i]) / scale[i]
            top = z if k == 0 or z > top else top
        contrib[j] = top
        total += top
    for j in range(m):
        contrib[j] = contrib[j] / total if total > 0 else 0.0
    return score


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _batch_features(
    values: FloatArray,
    seg_start: npt.NDArray[np.intp],
    own: npt.NDArray[np.intp],
    ts: npt.NDArray[np.int64],
    det_row: npt.NDArray[np.intp],
    window: npt.NDArray[np.intp],
    warmup: npt.NDArray[np.intp],
    feature_fill: FloatArray,
    center: FloatArray,
    scale: FloatArray,
    profiles: FloatArray,
    profile_start: npt.NDArray[np.intp],
    feats: FloatArray,
    contrib: FloatArray,
) -> None:
    """Features (into ``feats``) and normalised contributions (into ``contrib``) of the own
    rows ``own`` of imputed segments laid end to end (``seg_start``: each row's segment
    start). Per detector ``det_row[r]``: its window, warm-up, feature fill, contribution
    centre and scale, and seasonal profile (rows ``profile_start[d]:profile_start[d + 1]`` of
    ``profiles``). The rolling mean and spread come from running sums of the values less
    their segment's first row (exact zeros for constant series, no large totals to cancel).
    The per-metric order is :data:`FEATURE_KINDS`, written out here as in :func:`_score_row`:
    a change of features changes both.
    """
    rows, m = values.shape
    kinds = 5
    sums = np.zeros((rows + 1, m))
    squares = np.zeros((rows + 1, m))
    for i in range(rows):
        base = seg_start[i]
        for j in range(m):
            shifted = values[i, j] - values[base, j]
            sums[i + 1, j] = sums[i, j] + shifted
            squares[i + 1, j] = squares[i, j] + shifted * shifted
    n_feats = kinds * m + 2
    for r in range(len(own)):
        i = own[r]
        first = seg_start[i]
        d = det_row[r]
        lo = max(first, i - window[d])
        count = i - lo
        ready = count >= warmup[d]
        p0 = profile_start[d]
        bins = profile_start[d + 1] - p0
        tod_bin = (ts[i] % DAY_NS) * bins // DAY_NS
        for j in range(m):
            x = values[i, j]
            feats[r, kinds * j] = x
            feats[r, kinds * j + 1] = x - values[i - 1, j] if i > first else math.nan
            if ready:
                mean = (sums[i, j] - sums[lo, j]) / count
                var = max((squares[i, j] - squares[lo, j]) / count - mean * mean, 0.0)
                feats[r, kinds * j + 2] = (x - values[first, j]) - mean
                feats[r, kinds * j + 3] = math.sqrt(var)
            else:
                feats[r, kinds * j + 2] = math.nan
                feats[r, kinds * j + 3] = math.nan
            # The seasonal baseline is the detector's own; none known: 0 (ml.features).
            feats[r, kinds * j + 4] = x - profiles[p0 + tod_bin, j] if bins > 1 else 0.0
        phase = 2.0 * np.pi * (ts[i] % DAY_NS) / DAY_NS
        feats[r, kinds * m] = np.sin(phase)
        feats[r, kinds * m + 1] = np.cos(phase)
        for c in range(n_feats):
            if math.isnan(feats[r, c]):
                feats[r, c] = feature_fill[d, c]
        total = 0.0
        for j in range(m):
            top = 0.0
            for k in range(kinds):
                c = kinds * j + k
                z = abs(feats[r, c] - center[d, c]) / scale[d, c]
                if k == 0 or z > top or math.isnan(z):  # a NaN wins, as in np.max
                    top = z
            contrib[r, j] = top
            total += top
        for j in range(m):
            contrib[r, j] = contrib[r, j] / total if total > 0 else 0.0


# -- the forest ------------------------------------------------------------------------------


class CompiledForest:
    """Isolation-forest anomaly score ``2^(-E[h(x)] / c(psi))``: equals ``-score_samples``."""

    def __init__(
        self,
        feature: npt.NDArray[np.integer[Any]],
        threshold: npt.NDArray[np.float32],
        leaf_value: FloatArray,
        denominator: float,
    ) -> None:
        n_trees, width = feature.shape
        self.depth = int(np.log2(width + 1)) - 1
        if feature.shape != threshold.shape or leaf_value.shape != (n_trees, 2**self.depth):
            raise ValueError("inconsistent forest arrays")
        self.n_trees = n_trees
        self.width = width
        self.feature = np.ascontiguousarray(feature, dtype=np.intp).ravel()
        self.threshold = np.ascontiguousarray(threshold, dtype=np.float32).ravel()
        self.leaf_value = np.ascontiguousarray(leaf_value, dtype=np.float64).ravel()
        self.denominator = float(denominator)
        self._feature32 = self.feature.astype(np.int32)  # half the cache footprint of intp

    @classmethod
    def from_sklearn(cls, model: Any) -> CompiledForest:
        """From a fitted ``sklearn.ensemble.IsolationForest`` (read by attribute only)."""
        n_features = int(model.n_features_in_)
        subsample = model._max_features != n_features
        trees = []
        for est, columns in zip(model.estimators_, model.estimators_features_, strict=True):
            tree = est.tree_
            leaf = tree.children_left == -1
            local = np.where(leaf, 0, tree.feature)
            feature = np.asarray(columns)[local] if subsample else local
            value = tree.compute_node_depths() + average_path_length(tree.n_node_samples) - 1.0
            trees.append((tree.children_left, tree.children_right, feature, tree.threshold, value))
        denominator = len(trees) * float(average_path_length(np.array([model._max_samples]))[0])
        depth = max((int(est.tree_.max_depth) for est in model.estimators_), default=0)
        return cls(*_complete_layout(trees, depth), denominator)

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for :meth:`from_arrays` (what a saved plan stores)."""
        return {
            "feature": self.feature.reshape(self.n_trees, self.width).astype(np.int32),
            "threshold": self.threshold.reshape(self.n_trees, self.width),
            "leaf_value": self.leaf_value.reshape(self.n_trees, -1),
            "denominator": np.array(self.denominator),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CompiledForest:
        return cls(arrays["feature"], arrays["threshold"], arrays["leaf_value"], float(arrays["denominator"]))

    def __getstate__(self) -> dict[str, Any]:
        return self.arrays()

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "left" in state:
            # Pickled by the padded-array forest this class replaced: same trees, other layout.
            n_trees = state["left"].shape[0]
            trees = [
                (state["left"][i], state["right"][i], state["feature"][i], state["threshold"][i],
                 state["leaf_value"][i])
                for i in range(n_trees)
            ]  # fmt: skip
            layout = _complete_layout(trees, int(state["max_depth"]))
            self.__init__(*layout, float(state["denominator"]))  # type: ignore[misc]
            return
        self.__init__(  # type: ignore[misc]
            state["feature"], state["threshold"], state["leaf_value"], float(state["denominator"])
        )

    def anomaly_score(self, X: np.ndarray) -> FloatArray:
        # The trees compare float32 inputs (scikit-learn casts X the same way).
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        if self.denominator == 0:
            # One training sample: scikit-learn sets E[h]/c to 1 (score_samples = -0.5).
            return np.full(len(X32), 0.5)
        depths = _path_lengths(
            X32, self._feature32, self.threshold, self.leaf_value, self.n_trees, self.depth
        )
        return np.asarray(2.0 ** (-depths / self.denominator))

    def anomaly_score_one(self, x: FloatArray) -> float:
        if self.denominator == 0:
            return 0.5
        path = _tree_sum(
            x.astype(np.float32), self._feature32, self.threshold, self.leaf_value, self.n_trees, self.depth
        )
        return float(2.0 ** (-path / self.denominator))


def _complete_layout(
    trees: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, float32 threshold, bottom-level value) of each tree as a complete binary tree.

    ``trees``: per tree (children_left, children_right, global feature, float64 threshold,
    per-node value), scikit-learn's node arrays (a leaf has children -1); ``depth``: the
    deepest tree's depth.
    """
    width = 2 ** (depth + 1) - 1
    feature = np.zeros((len(trees), width), dtype=np.intp)
    threshold = np.full((len(trees), width), np.inf, dtype=np.float32)
    leaf_value = np.zeros((len(trees), 2**depth))
    for i, (left, right, feat, thr, value) in enumerate(trees):
        left, right = np.asarray(left), np.asarray(right)
        thr32 = _float32_at_most(np.asarray(thr, dtype=np.float64))
        nodes = np.zeros(1, dtype=np.intp)
        for level in range(depth):
            lo = 2**level - 1
            is_leaf = left[nodes] == -1
            feature[i, lo : lo + len(nodes)] = np.where(is_leaf, 0, np.asarray(feat)[nodes])
            threshold[i, lo : lo + len(nodes)] = np.where(is_leaf, np.float32(np.inf), thr32[nodes])
            below = np.empty(2 * len(nodes), dtype=np.intp)
            below[0::2] = np.where(is_leaf, nodes, left[nodes])
            below[1::2] = np.where(is_leaf, nodes, right[nodes])
            nodes = below
        leaf_value[i] = np.asarray(value, dtype=np.float64)[nodes]
    return feature, threshold, leaf_value


# -- the fleet -------------------------------------------------------------------------------


@dataclass
class DetectorPlan:
    """One host's Isolation Forest detector: features, forest, calibration, contributions."""

    window: int  # rows of history the rolling features look at
    fill: FloatArray  # per metric: training medians for values missing before any seen
    feature_fill: FloatArray  # per feature: training medians for features without history
    center: FloatArray  # per feature: robust centre and scale of contributions
    scale: FloatArray
    profile: FloatArray  # (time-of-day bins, metrics): the seasonal baseline
    baseline: float  # calibration: (raw - baseline) / (line - baseline), clipped at 0
    line: float
    forest: CompiledForest

    @property
    def keep(self) -> int:
        """Rows of history kept per host so one row scores as in a batch."""
        return self.window + 1

    @property
    def warmup(self) -> int:
        return max(2, self.window // 2)


@dataclass(frozen=True)
class AlarmRules:
    """``ml.alarms.AlarmPolicy`` without the routine bar: M-of-N (with bypass), cooldown."""

    m: int
    n: int
    cooldown_ns: int
    bypass: float | None


@dataclass
class HostState:
    """What live scoring remembers per host between calls."""

    timestamps: npt.NDArray[np.int64]
    values: FloatArray  # raw rows (NaN kept): imputation is redone with the new rows
    recent: tuple[bool, ...] = ()  # the last n-1 flags, oldest first
    last_alarm_ns: int | None = None
    last_by_key: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanOutput:
    scores: FloatArray
    anomaly: npt.NDArray[np.bool_]
    severity: list[str | None]
    contributions: FloatArray  # (n, metrics), each row sums to 1 or is all 0


@dataclass(frozen=True)
class _DetectorTables:
    """The detectors' parameters stacked for :func:`_batch_features` (one row per detector;
    the seasonal profiles end to end, detector ``d``'s at ``profile_start[d]:[d + 1]``)."""

    window: npt.NDArray[np.intp]
    warmup: npt.NDArray[np.intp]
    feature_fill: FloatArray
    center: FloatArray
    scale: FloatArray
    profiles: FloatArray
    profile_start: npt.NDArray[np.intp]

    @classmethod
    def stack(cls, detectors: Sequence[DetectorPlan]) -> _DetectorTables:
        profile_start = np.zeros(len(detectors) + 1, dtype=np.intp)
        np.cumsum([len(d.profile) for d in detectors], out=profile_start[1:])
        return cls(
            window=np.array([d.window for d in detectors], dtype=np.intp),
            warmup=np.array([d.warmup for d in detectors], dtype=np.intp),
            feature_fill=np.ascontiguousarray(np.stack([d.feature_fill for d in detectors])),
            center=np.ascontiguousarray(np.stack([d.center for d in detectors])),
            scale=np.ascontiguousarray(np.stack([d.scale for d in detectors])),
            profiles=np.ascontiguousarray(np.concatenate([d.profile for d in detectors]), dtype=np.float64),
            profile_start=profile_start,
        )


class FleetPlan:
    """A fitted Isolation-Forest FleetModel as plain arrays (see the module doc)."""

    def __init__(
        self,
        metrics: Sequence[str],
        detectors: list[DetectorPlan],
        host_detector: dict[str, int],
        fallback: int,
        alarm: AlarmRules,
        severity_bands: Sequence[tuple[float, str]],
        line: float = 1.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.metrics = tuple(metrics)
        self.detectors = detectors
        self.host_detector = dict(host_detector)
        self.fallback = fallback
        self.alarm = alarm
        self.severity_bands = tuple((float(edge), str(name)) for edge, name in severity_bands)
        self.line = float(line)
        self.info = dict(info or {})
        if any(d.feature_fill.shape != (len(FEATURE_KINDS) * len(self.metrics) + 2,) for d in detectors):
            kinds = len(FEATURE_KINDS)
            raise NotCompilableError(f"feature count differs from {kinds} per metric + time of day")
        for det in detectors:
            # One memory layout and dtype for every call: each other one is another compilation.
            for name in ("fill", "feature_fill", "center", "scale", "profile"):
                setattr(det, name, np.ascontiguousarray(getattr(det, name), dtype=np.float64))
        self._tables = _DetectorTables.stack(detectors)

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) every kernel scoring runs, so the first
        request after a swap does not pay for it: one row and a batch, stateless."""
        t = 1_700_000_000 * 10**9
        rows = np.stack([self.detectors[self.fallback].fill] * 2)
        self.score(["warm-up"], np.array([t], dtype=np.int64), rows[:1])
        self.score(["warm-up"] * 2, np.array([t, t + 60 * 10**9], dtype=np.int64), rows)

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``plan.json`` (rules, hosts) and ``arrays.npz`` (numbers): no pickle, no code."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        detectors = []
        for i, det in enumerate(self.detectors):
            for name in ("fill", "feature_fill", "center", "scale", "profile"):
                arrays[f"d{i}_{name}"] = getattr(det, name)
            for name, value in det.forest.arrays().items():
                arrays[f"d{i}_forest_{name}"] = value
            detectors.append({"window": det.window, "baseline": det.baseline, "line": det.line})
        meta = {
            "format": PLAN_FORMAT,
            "metrics": list(self.metrics),
            "detectors": detectors,
            "host_detector": self.host_detector,
            "fallback": self.fallback,
            "alarm": {"m": self.alarm.m, "n": self.alarm.n, "cooldown_ns": self.alarm.cooldown_ns,
                      "bypass": self.alarm.bypass},
            "severity_bands": [list(band) for band in self.severity_bands],
            "line": self.line,
            "info": self.info,
        }  # fmt: skip
        with (target / "arrays.npz").open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        (target / "plan.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> FleetPlan:
        source = Path(directory)
        meta = json.loads((source / "plan.json").read_text())
        if meta.get("format") != PLAN_FORMAT:
            raise NotCompilableError(f"plan format {meta.get('format')!r}, this reader knows {PLAN_FORMAT}")
        with np.load(source / "arrays.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        detectors = []
        for i, spec in enumerate(meta["detectors"]):
            forest = CompiledForest.from_arrays(
                {
                    k.removeprefix(f"d{i}_forest_"): v
                    for k, v in arrays.items()
                    if k.startswith(f"d{i}_forest_")
                }
            )
            detectors.append(
                DetectorPlan(
                    window=int(spec["window"]),
                    fill=arrays[f"d{i}_fill"],
                    feature_fill=arrays[f"d{i}_feature_fill"],
                    center=arrays[f"d{i}_center"],
                    scale=arrays[f"d{i}_scale"],
                    profile=arrays[f"d{i}_profile"],
                    baseline=float(spec["baseline"]),
                    line=float(spec["line"]),
                    forest=forest,
                )
            )
        alarm = meta["alarm"]
        return cls(
            metrics=meta["metrics"],
            detectors=detectors,
            host_detector={str(k): int(v) for k, v in meta["host_detector"].items()},
            fallback=int(meta["fallback"]),
            alarm=AlarmRules(
                int(alarm["m"]),
                int(alarm["n"]),
                int(alarm["cooldown_ns"]),
                None if alarm["bypass"] is None else float(alarm["bypass"]),
            ),
            severity_bands=[(float(e), str(s)) for e, s in meta["severity_bands"]],
            line=float(meta["line"]),
            info=meta.get("info") or {},
        )

    # -- scoring ---------------------------------------------------------------------------
    def score(
        self,
        hosts: Sequence[str],
        timestamps_ns: npt.NDArray[np.int64],
        values: FloatArray,
        state: dict[str, HostState] | None = None,
    ) -> PlanOutput:
        """Score rows (any host order, any time order) like ``FleetModel.score``.

        ``values``: ``(n, len(metrics))``, NaN where missing. ``state``: per-host history,
        read and updated in place (live scoring); None scores the rows on their own.
        """
        n = len(hosts)
        m = len(self.metrics)
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        if n == 0:
            return PlanOutput(np.zeros(0), np.zeros(0, dtype=bool), [], np.zeros((0, m)))
        if n == 1:
            score, alarm, contrib = self._score_one(hosts[0], int(ts[0]), values[0], state)
            scores = np.array([score])
            alarms = np.array([alarm])
            return PlanOutput(scores, alarms, self.severities(scores, alarms), contrib[None, :])
        order, host_names, bounds = _group_rows(hosts, ts)

        # Lay every host's context and rows end to end: one segment per host.
        seg_ts: list[np.ndarray] = []
        seg_values: list[np.ndarray] = []
        seg_len = np.empty(len(host_names), dtype=np.intp)
        ctx_len = np.empty(len(host_names), dtype=np.intp)
        det_of = np.empty(len(host_names), dtype=np.intp)
        for h, host in enumerate(host_names):
            rows = order[bounds[h] : bounds[h + 1]]
            det_of[h] = self.host_detector.get(host, self.fallback)
            previous = state.get(host) if state is not None else None
            host_ts = ts[rows]
            if previous is not None:
                older = previous.timestamps < host_ts[0]
                seg_ts += [previous.timestamps[older], host_ts]
                seg_values += [previous.values[older], values[rows]]
                ctx_len[h] = int(older.sum())
            else:
                seg_ts.append(host_ts)
                seg_values.append(values[rows])
                ctx_len[h] = 0
            seg_len[h] = ctx_len[h] + len(rows)
        all_ts = np.concatenate(seg_ts) if len(seg_ts) > 1 else seg_ts[0]
        raw_values = np.concatenate(seg_values) if len(seg_values) > 1 else seg_values[0]
        starts = np.zeros(len(host_names), dtype=np.intp)
        np.cumsum(seg_len[:-1], out=starts[1:])
        # Own rows (not context): their place in the segments, host by host as in `order`.
        own_counts = seg_len - ctx_len
        own_host = np.repeat(np.arange(len(host_names)), own_counts)
        own = np.arange(n) + np.repeat(starts + ctx_len - bounds[:-1], own_counts)
        scores, contrib = self._detect(all_ts, raw_values, starts, seg_len, own, own_host, det_of)
        keys = np.argmax(contrib, axis=1) if m > 1 else None
        alarms = self._alarms(all_ts[own], scores, keys, own_host, bounds, host_names, state)
        if state is not None:
            for h, host in enumerate(host_names):
                keep = self.detectors[det_of[h]].keep
                lo = max(starts[h], starts[h] + seg_len[h] - keep)
                hi = starts[h] + seg_len[h]
                record = state.get(host)
                new_ts, new_values = all_ts[lo:hi].copy(), raw_values[lo:hi].copy()
                if record is None:
                    state[host] = HostState(new_ts, new_values)
                else:
                    record.timestamps, record.values = new_ts, new_values
        out_scores = np.empty(n)
        out_alarms = np.empty(n, dtype=bool)
        out_contrib = np.empty((n, m))
        out_scores[order] = scores
        out_alarms[order] = alarms
        out_contrib[order] = contrib
        return PlanOutput(out_scores, out_alarms, self.severities(out_scores, out_alarms), out_contrib)

    def _score_one(
        self, host: str, t: int, row: FloatArray, state: dict[str, HostState] | None
    ) -> tuple[float, bool, FloatArray]:
        """One live row: the batch path's arithmetic for the last row only, on a handful of
        small arrays (a request of one row is most of the traffic)."""
        det = self.detectors[self.host_detector.get(host, self.fallback)]
        m = len(self.metrics)
        previous = state.get(host) if state is not None else None
        if previous is None or not len(previous.timestamps):
            seg_ts, seg_values = np.array([t], dtype=np.int64), row.reshape(1, m)
        else:
            ctx_ts, ctx_values = previous.timestamps, previous.values
            if ctx_ts[-1] >= t:  # a retried or late row: only older history is context
                older = ctx_ts < t
                ctx_ts, ctx_values = ctx_ts[older], ctx_values[older]
            seg_ts = np.concatenate((ctx_ts, np.array([t], dtype=np.int64)))
            seg_values = np.concatenate((ctx_values, row.reshape(1, m)))
        seg_values = np.ascontiguousarray(seg_values, dtype=np.float64)
        forest = det.forest
        contrib = np.empty(m)
        score = _score_row(
            seg_values, t, det.window, det.warmup, det.fill, det.feature_fill, det.center, det.scale,
            det.profile, det.baseline, det.line, forest._feature32, forest.threshold, forest.leaf_value,
            forest.n_trees, forest.depth, forest.denominator, contrib,
        )  # fmt: skip

        key = int(np.argmax(contrib)) if m > 1 else None
        alarm, recent, last, by_key = self._alarm_one(previous, t, score, key)
        if state is not None:
            keep = det.keep
            state[host] = HostState(seg_ts[-keep:], seg_values[-keep:], recent, last, by_key)
        return score, alarm, contrib

    def _alarm_one(
        self, previous: HostState | None, t: int, score: float, key: int | None
    ) -> tuple[bool, tuple[bool, ...], int | None, dict[int, int]]:
        """The alarm rules for one row on plain numbers (same steps as :meth:`_alarms`):
        (alarm, recent flags, last alarm, last alarm per key) after it."""
        rules = self.alarm
        return alarm_step(
            previous.recent if previous is not None else (),
            previous.last_alarm_ns if previous is not None else None,
            dict(previous.last_by_key) if previous is not None else {},
            flag=score >= self.line, score=score, t=t, key=key,
            m=rules.m, n=rules.n, bypass=rules.bypass, cooldown_ns=rules.cooldown_ns,
        )  # fmt: skip

    def severities(self, scores: FloatArray, alarms: npt.NDArray[np.bool_]) -> list[str | None]:
        out: list[str | None] = [None] * len(scores)
        if len(scores) == 1 and not alarms[0]:
            return out
        for i in np.flatnonzero(alarms).tolist():
            score = float(scores[i])
            # An alarm kept by M-of-N may sit just under the line: still the lowest band.
            level = self.severity_bands[-1][1]
            for edge, name in self.severity_bands:
                if score >= edge:
                    level = name
                    break
            out[i] = level
        return out

    def _detect(
        self,
        ts: npt.NDArray[np.int64],
        raw_values: FloatArray,
        starts: np.ndarray,
        seg_len: np.ndarray,
        own: np.ndarray,
        own_host: np.ndarray,
        det_of: np.ndarray,
    ) -> tuple[FloatArray, FloatArray]:
        """Calibrated scores and normalised contributions of the own rows."""
        m = len(self.metrics)
        seg_start = np.repeat(starts, seg_len)
        det_row = det_of[own_host]
        fills = np.stack([d.fill for d in self.detectors])
        values = _impute(raw_values, seg_start, fills[np.repeat(det_of, seg_len)])

        # Features and contributions of every own row in one compiled pass (the numpy
        # version of the same arithmetic made ~25 temporary (rows, metrics) arrays).
        feats = np.empty((len(own), len(FEATURE_KINDS) * m + 2))
        contrib = np.empty((len(own), m))
        t = self._tables
        _batch_features(
            np.ascontiguousarray(values), seg_start, own, ts, det_row, t.window, t.warmup,
            t.feature_fill, t.center, t.scale, t.profiles, t.profile_start, feats, contrib,
        )  # fmt: skip
        scores = np.empty(len(own))
        for d in np.unique(det_row).tolist():
            det = self.detectors[d]
            rows = np.flatnonzero(det_row == d) if len(self.detectors) > 1 else slice(None)
            raw = det.forest.anomaly_score(feats[rows])
            scores[rows] = np.maximum((raw - det.baseline) / (det.line - det.baseline), 0.0)
        return scores, contrib

    def _alarms(
        self,
        ts: npt.NDArray[np.int64],
        scores: FloatArray,
        keys: np.ndarray | None,
        own_host: np.ndarray,
        bounds: np.ndarray,
        host_names: list[str],
        state: dict[str, HostState] | None,
    ) -> npt.NDArray[np.bool_]:
        """``AlarmPolicy.apply_array`` per host, M-of-N counted for all hosts at once.

        Rows are grouped by host (``bounds``), each host's in time order; ``keys``: the
        leading metric per row (the cooldown's key), None for one key.
        """
        rules = self.alarm
        flags = scores >= self.line
        keyed = keys is not None
        if keys is None:
            keys = np.zeros(len(scores), dtype=np.intp)
        pad = rules.n - 1
        hosts_n = len(host_names)
        # Each host's rows behind n-1 slots of its remembered flags (False where none): a
        # window of n then never reaches into the previous host.
        sizes = np.diff(bounds)
        slots = np.zeros(len(scores) + hosts_n * pad, dtype=np.int64)
        slot_of_row = np.arange(len(scores)) + pad * (own_host + 1)
        slots[slot_of_row] = flags
        if pad and state is not None:
            for h, host in enumerate(host_names):
                previous = state.get(host)
                if previous is not None and previous.recent:
                    recent = previous.recent[-pad:]
                    first = int(slot_of_row[bounds[h]]) if sizes[h] else 0
                    slots[first - len(recent) : first] = recent
        running = np.concatenate([[0], np.cumsum(slots)])
        counts = running[slot_of_row + 1] - running[slot_of_row + 1 - rules.n]
        candidates = flags & (counts >= rules.m)
        if rules.bypass is not None:
            candidates |= flags & (scores >= rules.bypass)
        alarms = np.zeros(len(scores), dtype=bool)
        for h, host in enumerate(host_names):
            previous = state.get(host) if state is not None else None
            last = previous.last_alarm_ns if previous is not None else None
            by_key = dict(previous.last_by_key) if previous is not None else {}
            if not keyed and not by_key and last is not None:
                by_key[0] = last
            lo, hi = int(bounds[h]), int(bounds[h + 1])
            for i in (lo + np.flatnonzero(candidates[lo:hi])).tolist():
                key = int(keys[i])
                before = by_key.get(key)
                if before is None or rules.cooldown_ns == 0 or ts[i] >= before + rules.cooldown_ns:
                    alarms[i] = True
                    last = int(ts[i])
                    by_key[key] = last
            if state is not None:
                end = int(slot_of_row[hi - 1]) + 1
                recent = tuple(bool(v) for v in slots[end - pad : end]) if pad else ()
                record = state.get(host)
                if record is None:
                    record = state[host] = HostState(
                        np.empty(0, dtype=np.int64), np.empty((0, len(self.metrics)))
                    )
                record.recent, record.last_alarm_ns, record.last_by_key = recent, last, by_key
        return alarms


def _group_rows(hosts: Sequence[str], ts: npt.NDArray[np.int64]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Row order grouping hosts (first seen first), each host's rows by time (stable);
    the host names and the group bounds in that order."""
    if len(hosts) == 1:
        return np.zeros(1, dtype=np.intp), [hosts[0]], np.array([0, 1], dtype=np.intp)
    # dict.fromkeys keeps first-seen order; the per-row lookups then run in C (map, fromiter).
    index: dict[str, int] = dict.fromkeys(hosts, 0)
    for code, host in enumerate(index):
        index[host] = code
    codes = np.fromiter(map(index.__getitem__, hosts), dtype=np.intp, count=len(hosts))
    order = np.lexsort((ts, codes)) if len(index) > 1 else np.argsort(ts, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(index) + 1))
    return order.astype(np.intp), list(index), bounds.astype(np.intp)


def _impute(values: FloatArray, seg_start: np.ndarray, fill: FloatArray) -> FloatArray:
    """Carry the last value forward within each segment, else the detector's training median."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    rows = np.arange(len(values))[:, None]
    last = np.where(missing, -1, rows)
    np.maximum.accumulate(last, axis=0, out=last)
    seen = last >= seg_start[:, None]
    carried = values[np.maximum(last, 0), np.arange(values.shape[1])]
    return np.where(seen, carried, fill)


# -- building and checking a plan (where the fitted model lives: pandas, scikit-learn) ---------


def compile_fleet(fleet: Any) -> FleetPlan:
    """The plan of a fitted Isolation-Forest ``ml.fleet.FleetModel``.

    Raises:
        NotCompilableError: another family, another alarm rule or an unknown layout.
    """
    from ml.alarms import AlarmPolicy
    from ml.detectors.isolation_forest import IsolationForestDetector
    from ml.features import PER_METRIC_FEATURES, SHARED_FEATURES
    from ml.severity import SEVERITY_BANDS
    from ml.thresholds import CALIBRATED_THRESHOLD, Threshold

    if tuple(PER_METRIC_FEATURES) != FEATURE_KINDS or tuple(SHARED_FEATURES) != ("tod_sin", "tod_cos"):
        raise NotCompilableError(f"unknown feature layout {PER_METRIC_FEATURES} + {SHARED_FEATURES}")
    policy = fleet.policy
    if type(policy) is not AlarmPolicy or set(policy.get_params()) != {
        "m", "n", "cooldown", "bypass", "recent_days", "recent_rank", "recent_margin", "likelihood_z",
        "likelihood_rows", "spike_level", "record_ratio", "record_floor", "record_history",
    }:  # fmt: skip
        raise NotCompilableError(f"unknown alarm policy {type(policy).__name__}")
    if policy.recent_days is not None:
        raise NotCompilableError("the routine bar of the alarm policy is not compiled")
    if policy.likelihood_z is not None or policy.spike_level != 1.0 or policy.record_ratio is not None:
        raise NotCompilableError(
            "the score likelihood, spike level or score record of the alarm policy is not compiled"
        )
    alarm = AlarmRules(
        m=int(policy.m),
        n=int(policy.n),
        cooldown_ns=int(policy._check()),
        bypass=None if policy.bypass is None else float(policy.bypass),
    )
    unique: dict[int, int] = {}
    detectors: list[DetectorPlan] = []

    def add(det: Any) -> int:
        if id(det) in unique:
            return unique[id(det)]
        if type(det) is not IsolationForestDetector:
            raise NotCompilableError(f"{type(det).__name__} is not compiled")
        if type(det.threshold_).calibrate is not Threshold.calibrate:
            raise NotCompilableError(f"calibration of {type(det.threshold_).__name__} is not compiled")
        if list(det.metrics_) != list(fleet.metrics):
            raise NotCompilableError("a detector's metrics differ from the fleet's")
        forest = (
            det.forest_
            if isinstance(det.forest_, CompiledForest)
            else CompiledForest.from_sklearn(det.model_)
        )
        detectors.append(
            DetectorPlan(
                window=int(det.window_rows_),
                fill=np.asarray(det.fill_values_, dtype=np.float64),
                feature_fill=np.asarray(det.feature_fill_, dtype=np.float64),
                center=np.asarray(det.feature_center_, dtype=np.float64),
                scale=np.asarray(det.feature_scale_, dtype=np.float64),
                profile=np.asarray(det.profile_, dtype=np.float64),
                baseline=float(det.threshold_.baseline_),
                line=float(det.threshold_.threshold_),
                forest=forest,
            )
        )
        if det.required_context() != detectors[-1].keep:
            raise NotCompilableError("the detector's context differs from window + 1 rows")
        unique[id(det)] = len(detectors) - 1
        return unique[id(det)]

    host_detector = {str(host): add(det) for host, det in fleet.detectors_.items()}
    fallback = add(fleet.fallback_)
    return FleetPlan(
        metrics=fleet.metrics,
        detectors=detectors,
        host_detector=host_detector,
        fallback=fallback,
        alarm=alarm,
        severity_bands=[(edge, str(level)) for edge, level in SEVERITY_BANDS],
        line=CALIBRATED_THRESHOLD,
        info={"name": fleet.name, "family": fleet.family},
    )


def probe_stream(
    plan: FleetPlan, start_ns: int = 1_700_000_000 * 10**9
) -> list[tuple[list[str], np.ndarray, FloatArray]]:
    """Requests to check a plan with: single rows for a known and an unknown host, spikes,
    missing values, a gap and a retried timestamp, then mixed and long batches."""
    rng = np.random.default_rng(3)
    base = np.stack([d.fill for d in plan.detectors]).mean(axis=0)
    base = np.where(base != 0, np.abs(base), 1.0)
    step = 60 * 10**9
    known = next(iter(plan.host_detector), "probe-known")
    hosts = [known, "probe-unknown"]
    window = max(d.window for d in plan.detectors)
    requests: list[tuple[list[str], np.ndarray, FloatArray]] = []

    def rows(count: int, spike: float = 0.0, lead: int = 0) -> FloatArray:
        out = base * (1 + rng.normal(0, 0.05, (count, len(base))))
        # Every metric off (one feature far out isolates in few of a forest's splits), one
        # the most, so the leading metric (the cooldown's key) changes between spikes.
        out *= 1 + spike
        out[:, lead % len(base)] *= 1 + spike
        return out

    # Past the warm-up (half a window) and the first full window, then spikes of growing
    # and alternating sizes, so flags come alone, in pairs and in runs (M-of-N, bypass,
    # cooldown per leading metric).
    spikes = [0.5, 1.0, 2.0, 4.0, 8.0, 0.0, 4.0, 0.0, 4.0, 4.0, 8.0, 0.0, 2.0, 8.0]
    minute = 0
    for i in range(window + len(spikes)):
        minute += 1
        for host in hosts:
            values = rows(1, spikes[i - window] if i >= window else 0.0, lead=i // 4)
            if i % 11 == 0:
                values[0, -1] = np.nan
            requests.append(([host], np.array([start_ns + minute * step]), values))
    requests.append(([hosts[0]], np.array([start_ns + (minute - 5) * step]), rows(1)))  # a retry
    minute += 240  # a gap of hours
    mixed_minutes = np.array([3, 1, 2, 1, 4, 2]) + minute
    mixed = rows(6, 0.0)
    mixed[1, 0] = base[0] * 6
    mixed[2, 1] = np.nan
    requests.append(([hosts[0], hosts[1], hosts[0], "probe-third", hosts[1], hosts[0]],
                     start_ns + mixed_minutes * step, mixed))  # fmt: skip
    minute += 10
    long = rows(3 * window, 0.0)
    long[window : window + 5, 0] *= 4
    requests.append(([hosts[1]] * len(long), start_ns + (minute + np.arange(len(long))) * step, long))
    return requests


def check_alarms(plan: FleetPlan, policy: Any) -> None:
    """Hold the plan's alarm rules equal to ``policy.apply_array`` (``ml.alarms``) on a
    random stream of calibrated scores, row by row and in chunks, with and without keys:
    whatever scores a model gives, M-of-N, bypass and cooldown then behave the same.

    Raises:
        NotCompilableError: on the first difference.
    """
    rng = np.random.default_rng(1)
    t = 1_700_000_000 * 10**9
    steps = rng.choice(np.array([60, 60, 60, 600, 3 * 3600, -300]) * 10**9, size=600)
    stamps = t + np.cumsum(steps)
    # Scores under the line, between it and the bypass, and beyond.
    scores = np.where(rng.random(600) < 0.5, rng.random(600) * 0.9, 1.0 + rng.random(600) * 2.5)
    keys = rng.integers(0, 3, size=600)
    for keyed in (True, False):
        theirs, ours = None, None
        for i in range(len(stamps)):
            key = np.array([keys[i]]) if keyed else None
            a_ref, theirs = policy.apply_array(
                stamps[i : i + 1], scores[i : i + 1] >= plan.line, theirs, scores[i : i + 1], key
            )
            alarm, recent, last, by_key = plan._alarm_one(
                ours, int(stamps[i]), float(scores[i]), int(keys[i]) if keyed else None
            )
            ours = HostState(np.empty(0, dtype=np.int64), np.empty((0, 0)), recent, last, by_key)
            if bool(a_ref[0]) != alarm:
                raise NotCompilableError(
                    f"one-row alarm rules differ from {type(policy).__name__} at row {i}"
                )
        theirs = None
        state: dict[str, HostState] = {}
        lo = 0
        while lo < len(stamps):
            hi = min(len(stamps), lo + int(rng.integers(1, 40)))
            order = np.argsort(stamps[lo:hi], kind="stable") + lo  # FleetModel sorts each host's rows
            key_part = keys[order] if keyed else None
            a_ref, theirs = policy.apply_array(
                stamps[order], scores[order] >= plan.line, theirs, scores[order], key_part
            )
            n = hi - lo
            got = plan._alarms(
                stamps[order],
                scores[order],
                key_part,
                np.zeros(n, dtype=np.intp),
                np.array([0, n]),
                ["h"],
                state,
            )
            if got.tolist() != np.asarray(a_ref, dtype=bool).tolist():
                raise NotCompilableError(
                    f"batch alarm rules differ from {type(policy).__name__} at rows {lo}:{hi}"
                )
            lo = hi


def check_plan(plan: FleetPlan, fleet: Any, tolerance: float = 1e-9) -> None:
    """Hold ``plan`` equal to ``fleet.score`` on :func:`probe_stream`, live and stateless.

    Raises:
        NotCompilableError: naming the first request that differs.
    """
    import copy

    import pandas as pd

    check_alarms(plan, fleet.policy)
    reference = copy.deepcopy(fleet)
    reference.reset_state()
    state: dict[str, HostState] = {}
    requests = probe_stream(plan)
    for k, (hosts, ts, values) in enumerate(requests):
        frame = pd.DataFrame({"timestamp": pd.to_datetime(ts, utc=True), "host": hosts})
        for j, metric in enumerate(plan.metrics):
            frame[metric] = values[:, j]
        # Stateless scoring shares all the code but the state: a sample of requests will do.
        sample = len(hosts) > 1 or k % 10 == 0 or k == len(requests) - 1
        for stateful in (True, False) if sample else (True,):
            want = reference.score(frame, stateful=stateful)
            got = plan.score(hosts, ts, values, state if stateful else None)
            contrib = np.array([[row[m] for m in plan.metrics] for row in want["contributions"]])
            same = (
                np.allclose(got.scores, want["score"].to_numpy(dtype=float), rtol=0, atol=tolerance)
                and got.anomaly.tolist() == want["anomaly"].astype(bool).tolist()
                and [s or None for s in got.severity]
                == [s if isinstance(s, str) else None for s in want["severity"]]
                and np.allclose(np.round(got.contributions, 4), contrib, rtol=0, atol=1.0001e-4)
            )
            if not same:
                mode = "live" if stateful else "stateless"
                raise NotCompilableError(f"plan differs from FleetModel.score on probe request {k} ({mode})")
