"""FROCEvaluator: the Camelyon16 FROC over whole slides, ground truth at any downsample.

Ground truth is a boolean :class:`~cervixwsi.geometry.Raster`, ``None`` (a normal
slide) or anything that draws itself as one (:class:`MaskSource`, e.g. a
:class:`cervixwsi.annotations.AnnotationSet`): metrics takes masks, never
annotations, so it depends on nothing above the geometry layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_real
from cervixwsi.errors import MetricsError
from cervixwsi.geometry import Raster
from cervixwsi.metrics._detections import as_detections, read_detections_csv
from cervixwsi.metrics._evaluation_mask import _level_mask, _regions, evaluation_mask
from cervixwsi.metrics._froc import (
    FROCProtocol,
    FROCResult,
    _check_keys,
    _check_protocol,
    _froc,
    _SlideInput,
)

__all__ = ["FROCEvaluator", "MaskSource"]


@runtime_checkable
class MaskSource(Protocol):
    """Ground truth that draws itself as a boolean tumor mask on a grid it is given.

    Besides a bool :class:`~cervixwsi.geometry.Raster` or ``None``,
    :meth:`FROCEvaluator.evaluate` takes, per slide, any object with a method
    ``to_mask(grid)``: ``grid`` is an all-False bool Raster at the evaluation
    level (downsample ``2**level``, ``floor(size / 2**level)`` pixels per axis,
    the slide's ``mpp``), and the method returns a bool Raster over the same
    slide, True on tumor (usually ``grid.with_array(...)``).
    :class:`cervixwsi.annotations.AnnotationSet` is one: its
    :meth:`~cervixwsi.annotations.AnnotationSet.to_mask` draws the ``"tumor"``
    polygons minus the ``"exclusion"`` ones, a pixel inside when its centre is.
    So an annotation file goes straight to FROC, while :mod:`cervixwsi.metrics`
    never imports :mod:`cervixwsi.annotations`.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.metrics import FROCEvaluator, MaskSource
    >>> class Disc:
    ...     "A round lesion of radius r level-0 pixels around (x, y)."
    ...     def __init__(self, x, y, r):
    ...         self.x, self.y, self.r = x, y, r
    ...     def to_mask(self, grid):
    ...         xc, yc = grid.pixel_centers()
    ...         inside = (xc[None, :] - self.x) ** 2 + (yc[:, None] - self.y) ** 2 < self.r**2
    ...         return grid.with_array(inside)
    >>> isinstance(Disc(0, 0, 1), MaskSource)
    True
    >>> result = FROCEvaluator(progress=False).evaluate(
    ...     {"t": Disc(1200, 800, 600)},
    ...     {"t": [[0.9, 1200, 800], [0.4, 3000, 100]]},
    ...     mpp=0.25,
    ...     slide_dimensions={"t": (4096, 2048)},
    ... )
    >>> result.slide("t").is_true_positive.tolist(), result.n_lesions
    ([True, False], 1)
    """

    def to_mask(self, grid: Raster, /) -> Raster:
        """A bool Raster over ``grid``'s slide, True on tumor (usually on ``grid`` itself)."""
        ...


class FROCEvaluator:
    """Camelyon16 lesion-level FROC over whole slides.

    Parameters
    ----------
    level : int
        Evaluation level, downsample ``2**level`` (5, Camelyon16's and the
        study's value).
    protocol : {"camelyon16", "strict"}
        ``"camelyon16"`` reproduces the official script's numbers, quirks
        included; ``"strict"`` drops the quirks (see :func:`froc`).
    itc : bool
        Exclude isolated-tumor-cell regions (the protocol).
    progress : bool
        Show a progress bar over slides.

    Notes
    -----
    Ground truth is resampled to the evaluation level the way reading level
    ``level`` of a Camelyon16 mask TIFF does: ``floor(size / 2**level)`` pixels
    per axis (ASAP's pyramid; OpenSlide reports these sizes), each the mask's
    value at the level-0 top-left corner of the evaluation pixel.  Detections
    in the partial last row or column of evaluation pixels (or outside the
    slide) raise :class:`~cervixwsi.errors.MetricsError`; the official script
    crashes on them.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> from cervixwsi.metrics import FROCEvaluator
    >>> tumor = np.zeros((40, 40), bool)
    >>> tumor[5:30, 5:30] = True                      # at downsample 64
    >>> gt = {"t1": Raster(tumor, 64, (2560, 2560), mpp=0.243), "n1": None}
    >>> dets = {"t1": np.array([[0.8, 1000, 1000], [0.3, 2400, 100]]), "n1": np.zeros((0, 3))}
    >>> result = FROCEvaluator(progress=False).evaluate(gt, dets)
    >>> result.slide("t1").is_false_positive.tolist(), result.n_slides
    ([False, True], 2)
    """

    def __init__(
        self,
        level: int = 5,
        protocol: FROCProtocol = "camelyon16",
        itc: bool = True,
        progress: bool = True,
    ) -> None:
        self.level = level
        self.protocol = protocol
        self.itc = itc
        self.progress = progress

    def evaluation_mask(
        self, ground_truth: Raster, *, mpp: float | None = None, slide_id: str = "slide"
    ) -> npt.NDArray[np.int32]:
        """The labelled evaluation mask of one slide's ground truth (:func:`evaluation_mask`)."""
        level = check_int(self.level, "FROCEvaluator.level", min=0)
        m = self._mpp(ground_truth, mpp, slide_id)
        return evaluation_mask(_level_mask(ground_truth, level, slide_id), mpp=m, level=level)

    @staticmethod
    def _draw(
        source: object,
        slide_id: str,
        level: int,
        mpp: float | None,
        slide_dimensions: Mapping[str, tuple[int, int]] | None,
    ) -> Raster:
        """The ground truth of a :class:`MaskSource`, drawn on the evaluation-level grid."""
        if not isinstance(source, MaskSource):
            raise MetricsError(
                f"ground truth of slide {slide_id!r} must be a Raster, None, or an object with "
                f"a to_mask(grid) method such as an AnnotationSet; got {type(source).__name__}"
            )
        kind = type(source).__name__
        if slide_dimensions is None or slide_id not in slide_dimensions or mpp is None:
            raise MetricsError(
                f"slide {slide_id!r} has ground truth to draw ({kind}): pass its level-0 size "
                "in slide_dimensions={...} and mpp=... to evaluate()"
            )
        width, height = (int(v) for v in slide_dimensions[slide_id])
        d = 2**level
        shape = (height // d, width // d)
        if shape[0] == 0 or shape[1] == 0:
            raise MetricsError(
                f"slide {slide_id!r} of {width}x{height} level-0 pixels is smaller than one "
                f"evaluation pixel at level {level} ({d}x{d})"
            )
        grid = Raster(np.zeros(shape, bool), d, (width, height), mpp=mpp)
        mask = source.to_mask(grid)
        if not isinstance(mask, Raster) or mask.slide_dimensions != grid.slide_dimensions:
            got = (
                f"a Raster over a slide of {mask.slide_dimensions}"
                if isinstance(mask, Raster)
                else f"a {type(mask).__name__}"
            )
            raise MetricsError(
                f"slide {slide_id!r}: {kind}.to_mask(grid) must return a bool Raster over the "
                f"slide of {width}x{height} level-0 pixels, got {got}"
            )
        return mask

    @staticmethod
    def _mpp(raster: Raster, mpp: float | None, slide_id: str) -> float:
        value = mpp if mpp is not None else raster.mpp
        if value is None:
            raise MetricsError(
                f"slide {slide_id!r}: its ground-truth Raster has no mpp; pass mpp=... to "
                "evaluate() or build the Raster with mpp"
            )
        return check_real(value, f"the mpp of slide {slide_id!r}", min=0, min_open=True)

    def evaluate(
        self,
        ground_truth: Mapping[str, Raster | MaskSource | None],
        detections: Mapping[str, npt.ArrayLike | str | os.PathLike[str]],
        *,
        mpp: float | None = None,
        slide_dimensions: Mapping[str, tuple[int, int]] | None = None,
        unreadable: Mapping[str, Raster | None] | None = None,
    ) -> FROCResult:
        """Evaluate detections of many slides.

        Parameters
        ----------
        ground_truth : mapping of str to Raster, MaskSource or None
            Per slide id, a bool tumor-mask :class:`~cervixwsi.geometry.Raster`
            at any downsample, ``None`` for a normal slide, or a
            :class:`MaskSource`, drawn on the evaluation-level grid: e.g. an
            :class:`~cervixwsi.annotations.AnnotationSet` read from an ASAP
            XML or GeoJSON file (``"tumor"`` polygons minus ``"exclusion"``
            ones, each evaluation pixel inside when its centre is).
        detections : mapping of str to array-like (N, 3) or path
            Per slide id (the same ids), ``prob, x, y`` in level-0 pixels, or a
            Camelyon16 CSV file (:func:`read_detections_csv`).
        mpp : float, optional
            Level-0 µm per pixel for every slide; by default each Raster's own.
            Required for a :class:`MaskSource`.
        slide_dimensions : mapping of str to (int, int), optional
            Level-0 ``(width, height)`` of the slides given as a
            :class:`MaskSource` (e.g. ``Slide.dimensions``).
        unreadable : mapping of str to Raster or None, optional
            Per slide id (any subset), a bool Raster of regions where no
            detector can see the tissue: out of focus, under a fold or ink (for
            example ``art.with_array(art.any)`` for a slide's
            :class:`~cervixwsi.tissue.ArtifactMask` ``art``, or an artifact's
            ground truth).  A lesion with at
            least half of its evaluation region there is ignored as an ITC is
            (among :attr:`SlideFROC.itc_labels`; detections in it are neither
            true nor false positives), so the score measures detection on what
            can be read.  Default: every lesion counts (the protocol).

        Returns
        -------
        FROCResult

        Raises
        ------
        MetricsError
            See :func:`froc`; also a Raster without mpp when ``mpp`` is not
            given, a non-bool Raster, a :class:`MaskSource` without
            ``slide_dimensions`` and ``mpp``, a detection outside its slide, or
            an ``unreadable`` entry for a slide not in ``ground_truth``, not a
            bool Raster, or over a slide of another size.
        ParameterError
            A bad ``level``, ``protocol`` or ``mpp``.
        """
        from tqdm.auto import tqdm

        protocol = _check_protocol(self.protocol, "FROCEvaluator")
        level = check_int(self.level, "FROCEvaluator.level", min=0)
        if mpp is not None:
            mpp = check_real(mpp, "FROCEvaluator.evaluate mpp", min=0, min_open=True)
        _check_keys(ground_truth, detections)
        unreadable = dict(unreadable or {})
        extra = sorted(set(unreadable) - set(ground_truth))
        if extra:
            raise MetricsError(f"unreadable regions for slides without ground truth: {extra[:5]}")
        slides: list[_SlideInput] = []
        for sid, gt in tqdm(
            ground_truth.items(), total=len(ground_truth), desc="FROC", disable=not self.progress
        ):
            raw = detections[sid]
            if isinstance(raw, (str, os.PathLike)):
                dets = read_detections_csv(raw)
            else:
                dets = as_detections(raw, f"detections of slide {sid!r}")
            if gt is None:
                slides.append((sid, None, np.zeros(0, np.int64), dets))
                continue
            if not isinstance(gt, Raster):
                gt = self._draw(gt, sid, level, mpp, slide_dimensions)
            width, height = gt.slide_dimensions
            out = (dets[:, 1] >= width) | (dets[:, 2] >= height)
            if out.any():
                i = int(np.argmax(out))
                raise MetricsError(
                    f"slide {sid!r}: detection {i} at level-0 ({dets[i, 1]:g}, {dets[i, 2]:g}) "
                    f"is outside the slide of {width}x{height} pixels"
                )
            m = self._mpp(gt, mpp, sid)
            labels, itcs = _regions(_level_mask(gt, level, sid), m, level, self.itc, sid)
            hidden = unreadable.get(sid)
            if hidden is not None:
                itcs = np.union1d(itcs, _hidden_labels(labels, hidden, gt, level, sid))
            slides.append((sid, labels, itcs, dets))
        return _froc(slides, level=level, protocol=protocol)


def _hidden_labels(
    labels: npt.NDArray[np.int32], hidden: Raster, gt: Raster, level: int, slide_id: str
) -> npt.NDArray[np.int64]:
    """The labels with at least half of their evaluation pixels in ``hidden``."""
    if not isinstance(hidden, Raster) or hidden.dtype != np.bool_:
        raise MetricsError(
            f"the unreadable regions of slide {slide_id!r} must be a bool Raster, got "
            f"{getattr(hidden, 'dtype', type(hidden).__name__)}"
        )
    if tuple(hidden.slide_dimensions) != tuple(gt.slide_dimensions):
        raise MetricsError(
            f"the unreadable regions of slide {slide_id!r} are over a slide of "
            f"{hidden.slide_dimensions}, its ground truth over {gt.slide_dimensions}"
        )
    inside = _level_mask(hidden, level, slide_id)
    n = int(labels.max(initial=0)) + 1
    total = np.bincount(labels.ravel(), minlength=n)
    covered = np.bincount(labels[inside].ravel(), minlength=n)
    half = (2 * covered >= total) & (total > 0)
    half[0] = False
    return np.flatnonzero(half).astype(np.int64)
