"""A patch predictor that normalizes stains first: :class:`StainNormalizedPredictor`."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import NotFittedError, ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.stain._base import StainNormalizer
from cervixwsi.tissue import SlideLike

__all__ = ["StainNormalizedPredictor"]


class StainNormalizedPredictor:
    """Wrap a patch predictor so that every batch is stain-normalized before it.

    ``predict(batch)`` is ``predictor.predict(normalizer.transform(batch))``: the
    :class:`~cervixwsi.heatmap.PatchPredictor` protocol, so a
    :class:`~cervixwsi.heatmap.HeatmapGenerator`, an
    :class:`~cervixwsi.models.EnsembleClassifier` (as a member or around members) or a
    cohort's heatmap stage uses it like any predictor.

    With a normalizer whose source is estimated per image (the default) each patch is
    normalized on its own; for a slide normalized consistently, wrap a per-slide
    normalizer: ``StainNormalizedPredictor(model, normalizer.for_slide(slide))``, or
    :meth:`for_slide`.

    Parameters
    ----------
    predictor : PatchPredictor or ModelSpec
        Anything with ``predict(uint8 (N, H, W, 3)) -> (N,) probabilities``; or an
        object with a ``load()`` method that returns one (a
        :class:`cervixwsi.cohort.ModelSpec`), loaded on the first prediction in each
        process, so that the wrapper pickles small to cohort workers.
    normalizer : StainNormalizer
        A fitted normalizer (:meth:`~cervixwsi.stain.StainNormalizer.fit`).

    Raises
    ------
    ParameterError
        If ``predictor`` has neither ``predict`` nor ``load``, or ``normalizer`` is not
        a :class:`~cervixwsi.stain.StainNormalizer`.
    NotFittedError
        If ``normalizer`` is not fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.stain import ReinhardNormalizer, StainNormalizedPredictor
    >>> class MeanRed:
    ...     name = "mean-red"
    ...     def predict(self, batch):
    ...         return batch[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255
    >>> target = np.random.default_rng(0).integers(90, 210, (32, 32, 3), dtype=np.uint8)
    >>> wrapped = StainNormalizedPredictor(MeanRed(), ReinhardNormalizer().fit(target))
    >>> wrapped.predict(np.stack([target, target // 2])).round(2)
    array([0.59, 0.59], dtype=float32)
    >>> wrapped.name.startswith("mean-red+reinhard-")
    True
    """

    def __init__(self, predictor: Any, normalizer: StainNormalizer) -> None:
        has_predict = callable(getattr(predictor, "predict", None))
        if not has_predict and not callable(getattr(predictor, "load", None)):
            raise ParameterError(
                "StainNormalizedPredictor.predictor must have a predict(batch) method "
                f"(or be a ModelSpec with load()), got {type(predictor).__name__}"
            )
        if not isinstance(normalizer, StainNormalizer):
            raise ParameterError(
                "StainNormalizedPredictor.normalizer must be a StainNormalizer "
                f"(MacenkoNormalizer, ReinhardNormalizer), got {type(normalizer).__name__}"
            )
        if not normalizer.fitted:
            raise NotFittedError(
                f"StainNormalizedPredictor needs a fitted normalizer; this "
                f"{type(normalizer).__name__} is not fitted (call fit(image) first)"
            )
        self.predictor = predictor
        self.normalizer = normalizer
        self._loaded: Any = predictor if has_predict else None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self.predictor.load()
        return self._loaded

    def predict(self, batch: npt.NDArray[np.uint8], /) -> Any:
        """Tumor probabilities of a uint8 ``(N, H, W, 3)`` batch, normalized first.

        Raises
        ------
        ParameterError
            If ``batch`` is not uint8 ``(N, H, W, 3)``.
        """
        arr = np.asarray(batch)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ParameterError(
                "StainNormalizedPredictor.predict takes a uint8 (N, H, W, 3) batch, got "
                f"{arr.shape} {arr.dtype}"
            )
        return self._model().predict(self.normalizer.transform(arr))

    @property
    def name(self) -> str:
        """The wrapped predictor's name, the method and the normalizer's fingerprint.

        E.g. ``small_cnn-64-3f2a9c1b+macenko-1a2b3c4d``: a heatmap run store made with
        another normalizer (or none) is not taken for this one's.
        """
        inner = getattr(self.predictor, "name", None)
        if not isinstance(inner, str) or not inner:
            inner = type(self.predictor).__name__
        return f"{inner}+{self.normalizer.method}-{self.normalizer.fingerprint()}"

    @property
    def input_size(self) -> Any:
        """The wrapped predictor's ``input_size`` (AttributeError when it has none)."""
        return self._model().input_size

    def for_slide(
        self,
        slide: SlideLike,
        tissue: Raster | None = None,
        *,
        level: int | None = None,
        mpp: float | None = None,
    ) -> StainNormalizedPredictor:
        """The same predictor with the normalizer's source fixed on ``slide``.

        See :meth:`cervixwsi.stain.StainNormalizer.for_slide` (same parameters).
        """
        normalizer = self.normalizer.for_slide(slide, tissue, level=level, mpp=mpp)
        new = StainNormalizedPredictor(self.predictor, normalizer)
        new._loaded = self._loaded
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        if not callable(getattr(self.predictor, "predict", None)):
            state["_loaded"] = None  # a spec: loaded again where it is unpickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StainNormalizedPredictor({self.predictor!r}, {self.normalizer!r})"
