"""``EnsembleClassifier``: the study's model D, the mean of member probabilities."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_text
from cervixwsi.errors import ModelError, ParameterError, PredictorError, WeightsError
from cervixwsi.models._classifier import PatchClassifier
from cervixwsi.models._data import check_patch_array

__all__ = ["EnsembleClassifier"]

_MANIFEST = "ensemble.json"
_FORMAT = "cervixwsi.EnsembleClassifier"
_FORMAT_VERSION = 1


class EnsembleClassifier:
    """Mean (optionally weighted) tumor probability of several patch predictors.

    The study's model D averages Inception-v3, InceptionResNet-v2 and
    ResNet50. Members are fitted :class:`PatchClassifier` objects or any
    object with ``predict(uint8 (N, H, W, 3)) -> float (N,)``; only
    ``PatchClassifier`` members can be saved.

    Parameters
    ----------
    members : sequence of predictors
        At least one.
    weights : sequence of float, optional
        Non-negative weight of each member (normalised to sum 1); default
        equal weights (the study's plain mean).

    Attributes
    ----------
    members : tuple
        The predictors.
    weights : numpy.ndarray of float64
        Normalised weights.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import EnsembleClassifier
    >>> class Constant:
    ...     def __init__(self, p):
    ...         self.p = p
    ...     def predict(self, patches):
    ...         return np.full(len(patches), self.p, np.float32)
    >>> ens = EnsembleClassifier([Constant(0.2), Constant(0.8)], weights=[3, 1])
    >>> ens.predict(np.zeros((2, 8, 8, 3), np.uint8))
    array([0.35, 0.35], dtype=float32)
    """

    def __init__(self, members: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        self.members = tuple(members)
        if not self.members:
            raise ParameterError("an EnsembleClassifier needs at least one member")
        for i, m in enumerate(self.members):
            if not callable(getattr(m, "predict", None)):
                raise ParameterError(
                    f"ensemble member {i} ({type(m).__name__}) has no predict(patches) method"
                )
        if weights is None:
            w = np.full(len(self.members), 1.0 / len(self.members))
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(self.members),):
                raise ParameterError(
                    f"weights must have one value per member ({len(self.members)}), "
                    f"got shape {w.shape}"
                )
            if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ParameterError(
                    f"weights must be finite, non-negative and not all zero, got {w.tolist()}"
                )
            w = w / w.sum()
        self.weights = w

    def __repr__(self) -> str:
        names = ", ".join(type(m).__name__ for m in self.members)
        return f"EnsembleClassifier([{names}], weights={np.round(self.weights, 4).tolist()})"

    @property
    def name(self) -> str:
        """The members' names and weights, e.g. ``ensemble(resnet50-224-3f2a9c1b:0.5, ...)``."""
        parts = [
            f"{getattr(m, 'name', type(m).__name__)}:{w:.4g}"
            for m, w in zip(self.members, self.weights, strict=True)
        ]
        return f"ensemble({', '.join(parts)})"

    def predict(self, patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Weighted mean of the members' tumor probabilities.

        Parameters
        ----------
        patches : numpy.ndarray (N, H, W, 3) of uint8
            N >= 1 RGB patches (each member crops what it needs).

        Returns
        -------
        ndarray of float32, shape (N,)

        Raises
        ------
        ModelError
            Bad input batch.
        PredictorError
            A member returned something that is not one probability per patch.
        """
        arr = check_patch_array(patches, "patches", 1)
        total = np.zeros(arr.shape[0], dtype=np.float64)
        for i, (member, w) in enumerate(zip(self.members, self.weights, strict=True)):
            p = np.asarray(member.predict(arr))
            if p.shape != (arr.shape[0],) or not np.issubdtype(p.dtype, np.floating):
                raise PredictorError(
                    f"ensemble member {i} ({type(member).__name__}) returned {p.dtype} "
                    f"{p.shape}; expected float ({arr.shape[0]},)"
                )
            if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
                raise PredictorError(
                    f"ensemble member {i} ({type(member).__name__}) returned values outside "
                    "[0, 1] or NaN"
                )
            total += w * p
        return total.astype(np.float32)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write each member as ``member_<i>.keras`` and a JSON manifest.

        Returns
        -------
        pathlib.Path
            The directory.
        """
        out = Path(directory)
        for i, m in enumerate(self.members):
            if not isinstance(m, PatchClassifier):
                raise ModelError(
                    f"only PatchClassifier members can be saved; member {i} is {type(m).__name__}"
                )
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for i, m in enumerate(self.members):
            name = f"member_{i}.keras"
            m.save(out / name)
            files.append(name)
        manifest = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "members": files,
            "weights": self.weights.tolist(),
        }
        atomic_write_text(out / _MANIFEST, json.dumps(manifest, indent=2))
        return out

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, engine: str | None = None
    ) -> EnsembleClassifier:
        """Load an ensemble written by :meth:`save`; it predicts identically.

        Parameters
        ----------
        directory : str or os.PathLike
            The directory :meth:`save` wrote.
        engine : {"tensorflow", "onnxruntime"}, optional
            Inference engine of every member (see :class:`PatchClassifier`);
            default: the one each was saved with.

        Raises
        ------
        WeightsError
            Missing or malformed manifest or member file.
        """
        src = Path(directory)
        manifest_path = src / _MANIFEST
        if not manifest_path.is_file():
            raise WeightsError(f"{src} is not a saved ensemble: {_MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            files = [str(f) for f in manifest["members"]]
            weights = [float(w) for w in manifest["weights"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"ensemble manifest {manifest_path} is malformed: {exc}") from exc
        if manifest.get("format") != _FORMAT or manifest.get("version") != _FORMAT_VERSION:
            raise WeightsError(
                f"{manifest_path} has format {manifest.get('format')!r} version "
                f"{manifest.get('version')!r}; expected {_FORMAT!r} version {_FORMAT_VERSION}"
            )
        for f in files:
            if Path(f).name != f:
                raise WeightsError(f"ensemble manifest {manifest_path} names a bad file {f!r}")
        members = [PatchClassifier.load(src / f, engine=engine) for f in files]
        return cls(members, weights=weights)
