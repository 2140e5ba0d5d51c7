"""The positions a heatmap run predicts, and the check of what a predictor returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import PredictorError


@dataclass(frozen=True)
class _Plan:
    """The positions to predict, in prediction order, and the heatmap grid."""

    x: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    grid_shape: tuple[int, int]

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x, self.y):
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
        h.update(repr(self.grid_shape).encode())
        return h.hexdigest()


def _check_predictions(
    values: Any, batch: npt.NDArray[np.intp], index: int, plan: _Plan
) -> npt.NDArray[np.float32]:
    arr = np.asarray(values)
    where = (
        f"batch {index} (positions {int(batch[0])}..{int(batch[-1])}, first patch at level-0 "
        f"({int(plan.x[batch[0]])}, {int(plan.y[batch[0]])}))"
    )
    if arr.shape != (len(batch),):
        arr = arr.reshape(-1) if arr.size == len(batch) else arr
        if arr.shape != (len(batch),):
            raise PredictorError(
                f"the predictor returned shape {np.shape(values)} for {len(batch)} patches in "
                f"{where}; it must return one probability per patch"
            )
    if not np.issubdtype(arr.dtype, np.number):
        raise PredictorError(f"the predictor returned {arr.dtype} values in {where}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise PredictorError(f"the predictor returned NaN or infinite values in {where}")
    if arr.min() < 0 or arr.max() > 1:
        raise PredictorError(
            f"the predictor returned values in [{arr.min():g}, {arr.max():g}] in {where}; "
            "tumor probabilities must lie in [0, 1]"
        )
    return arr


def public_name(qualified: str) -> str:
    """A dotted name without its private (``_``-prefixed) modules.

    Examples
    --------
    >>> public_name("cervixwsi.models._training.PatchClassifier:small")
    'cervixwsi.models.PatchClassifier:small'
    >>> public_name("builtins.object")
    'builtins.object'
    """
    head, sep, tail = qualified.partition(":")
    parts = head.split(".")
    kept = [q for q in parts[:-1] if not q.startswith("_")] + parts[-1:]
    return ".".join(kept) + sep + tail
