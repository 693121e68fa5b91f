"""The compiled Isolation Forest the detector scores through.

It lives in :mod:`ml.compiled` (numpy only, so the scoring service runs it without
scikit-learn); this name stays because pickled detectors refer to
``ml.detectors._forest.CompiledForest`` (an older, padded layout is converted on unpickling).
"""

from ml.compiled import CompiledForest, average_path_length

__all__ = ["CompiledForest", "average_path_length"]
