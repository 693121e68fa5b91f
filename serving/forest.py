"""The Isolation Forest re-laid for serving: one flat node table, two traversals.

``ml.detectors._forest.CompiledForest`` walks (trees × rows) padded 2-D arrays with fancy
indexing and a leaf test per level: fine for a row, but a 10,000-row batch costs about a
quarter of a second there. :class:`FlatForest` computes the same score
``2^(-E[h(x)] / c(ψ))`` (equal to ``-IsolationForest.score_samples``; tested to 1e-9):

- every tree's nodes are concatenated into one table; a leaf's two children are itself, so
  a traversal step is the same five ``take`` calls for every row and tree with no leaf
  test, and ``max_depth`` steps put every walk on its leaf;
- per node the value ``depth + c(n_samples) - 1`` is precomputed, so the path length of a
  row is a sum of leaf values;
- large batches walk tree by tree through scikit-learn's own compiled ``Tree.apply``
  (C, no Python per row) and look the leaves up in the same table: one call per tree is
  cheap against thousands of rows, where per-call overhead dominates a handful.

:func:`accelerate` swaps it in for a detector's ``forest_`` at model load time (the
detector calls ``self.forest_.anomaly_score(features)``), leaving everything else alone.
"""

# ruff: noqa: N803, N806  (X is scikit-learn's name for a feature matrix)
from __future__ import annotations

from typing import Any

import numpy as np

from ml.detectors._forest import average_path_length

#: From this many rows on, walking tree by tree in scikit-learn's C code is faster.
TREEWISE_ROWS = 512
#: Rows walked at once by the flat traversal (bounds its (rows × trees) temporaries).
_CHUNK = 2048


class FlatForest:
    """A fitted ``sklearn.ensemble.IsolationForest`` as flat arrays; see the module doc."""

    def __init__(self, model: Any) -> None:
        trees = [est.tree_ for est in model.estimators_]
        self.n_features = int(model.n_features_in_)
        subsample = model._max_features != self.n_features
        counts = [t.node_count for t in trees]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        total = int(offsets[-1])
        children = np.zeros((total, 2), dtype=np.intp)
        self.feature = np.zeros(total, dtype=np.intp)
        self.threshold = np.zeros(total, dtype=np.float64)
        self.value = np.zeros(total, dtype=np.float64)
        self._columns: list[np.ndarray | None] = []
        for i, (tree, feats) in enumerate(zip(trees, model.estimators_features_, strict=True)):
            lo, k = int(offsets[i]), tree.node_count
            own = np.arange(k)
            leaf = tree.children_left == -1
            children[lo : lo + k, 0] = np.where(leaf, own, tree.children_left) + lo
            children[lo : lo + k, 1] = np.where(leaf, own, tree.children_right) + lo
            local = np.where(leaf, 0, tree.feature)
            self.feature[lo : lo + k] = np.asarray(feats)[local] if subsample else local
            self.threshold[lo : lo + k] = np.where(leaf, np.inf, tree.threshold)
            self.value[lo : lo + k] = (
                tree.compute_node_depths() + average_path_length(tree.n_node_samples) - 1.0
            )
            self._columns.append(np.asarray(feats, dtype=np.intp) if subsample else None)
        self.children = children.ravel()
        self.roots = offsets[:-1].copy()
        self.offsets = self.roots
        self.trees = trees
        self.max_depth = max((int(t.max_depth) for t in trees), default=0)
        self.denominator = len(trees) * float(average_path_length(np.array([model._max_samples]))[0])

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        X32 = np.ascontiguousarray(X, dtype=np.float32)  # the trees compare float32 inputs
        n = len(X32)
        if n == 0:
            return np.empty(0)
        if self.denominator == 0:
            return np.ones(n)
        if n >= TREEWISE_ROWS:
            depths = self._treewise(X32)
        else:
            depths = np.concatenate([self._flat(X32[lo : lo + _CHUNK]) for lo in range(0, n, _CHUNK)])
        return np.asarray(2.0 ** (-depths / self.denominator))

    def _flat(self, X32: np.ndarray) -> np.ndarray:
        X = X32.astype(np.float64)
        n, f = X.shape
        nodes = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        base = (np.arange(n, dtype=np.intp) * f)[:, None]
        flat_x = X.ravel()
        feature, threshold, children = self.feature, self.threshold, self.children
        for _ in range(self.max_depth):
            go_right = flat_x.take(feature.take(nodes) + base) > threshold.take(nodes)
            nodes = children.take(nodes * 2 + go_right)
        return np.asarray(self.value.take(nodes).sum(axis=1))

    def _treewise(self, X32: np.ndarray) -> np.ndarray:
        total = np.zeros(len(X32))
        for tree, offset, columns in zip(self.trees, self.offsets, self._columns, strict=True):
            part = X32 if columns is None else np.ascontiguousarray(X32[:, columns])
            total += self.value.take(tree.apply(part) + offset)
        return total


def accelerate(fleet: Any) -> int:
    """Give every Isolation Forest detector of ``fleet`` a :class:`FlatForest`; returns how
    many were swapped. Detectors of other families (or without a fitted ``model_``) are left
    as they are."""
    from sklearn.ensemble import IsolationForest

    detectors = [*getattr(fleet, "detectors_", {}).values(), getattr(fleet, "fallback_", None)]
    swapped = 0
    seen: set[int] = set()
    for det in detectors:
        if det is None or id(det) in seen:
            continue
        seen.add(id(det))
        model = getattr(det, "model_", None)
        forest = getattr(det, "forest_", None)
        if isinstance(model, IsolationForest) and forest is not None and hasattr(forest, "anomaly_score"):
            if not isinstance(forest, FlatForest):
                det.forest_ = FlatForest(model)
            swapped += 1
    return swapped
