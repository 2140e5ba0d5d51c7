"""Lesion-level FROC: the Camelyon16 protocol, vectorised."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import MetricsError
from cervixwsi.geometry import Raster
from cervixwsi.metrics._detections import as_detections, read_detections_csv

__all__ = [
    "EVAL_FPS",
    "FROCEvaluator",
    "FROCResult",
    "SlideFROC",
    "evaluation_mask",
    "froc",
    "itc_labels",
]

if TYPE_CHECKING:
    from cervixwsi.annotations import AnnotationSet

logger = logging.getLogger(__name__)

Protocol: TypeAlias = Literal["camelyon16", "strict"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Average false positives per slide at which sensitivity is read (Camelyon16).
EVAL_FPS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SlideFROC:
    """What happened on one slide: which lesions were hit by which detection.

    Attributes
    ----------
    slide_id : str
        The slide's key in the inputs.
    is_tumor : bool
        False for a normal slide (no mask): then every detection is an FP.
    detections : numpy.ndarray (N, 3)
        The slide's detections ``prob, x, y`` (level-0 pixels), in input order.
    detection_label : numpy.ndarray (N,), int64
        The evaluation-mask label under each detection (0: outside every lesion).
    is_true_positive : numpy.ndarray (N,), bool
        The detection that counts for its lesion (the most probable one with
        probability > 0; on ties, the first).
    is_false_positive : numpy.ndarray (N,), bool
        Detections outside every lesion (label 0), and every detection of a
        normal slide.
    in_itc : numpy.ndarray (N,), bool
        Detections in an ITC region: ignored, neither TP nor FP.  Detections
        in no category (inside a lesion whose hit is another detection, or of
        probability 0) are dropped.
    lesion_labels : numpy.ndarray (L,), int64
        The labels of the lesions to detect (non-ITC), increasing.
    lesion_probability : numpy.ndarray (L,), float64
        The probability of each lesion's counting detection, 0 when missed.
    lesion_detection : numpy.ndarray (L,), int64
        Index (into ``detections``) of each lesion's counting detection, -1
        when missed.
    itc_labels : numpy.ndarray, int64
        The labels of ITC regions (excluded from sensitivity).
    n_labels : int
        Number of connected regions of the evaluation mask (lesions + ITCs).
    """

    slide_id: str
    is_tumor: bool
    detections: FloatArray
    detection_label: IntArray
    is_true_positive: BoolArray
    is_false_positive: BoolArray
    in_itc: BoolArray
    lesion_labels: IntArray
    lesion_probability: FloatArray
    lesion_detection: IntArray
    itc_labels: IntArray
    n_labels: int

    @property
    def n_lesions(self) -> int:
        """Number of non-ITC lesions (the slide's sensitivity denominator)."""
        return int(self.lesion_labels.size)

    @property
    def n_false_positives(self) -> int:
        """Number of FP detections (at threshold 0)."""
        return int(self.is_false_positive.sum())

    @property
    def n_detected(self) -> int:
        """Number of lesions hit by a detection of probability > 0."""
        return int((self.lesion_detection >= 0).sum())


@dataclass(frozen=True, slots=True, eq=False)
class FROCResult:
    """A lesion-level FROC evaluation (Table 3's FROC score and Fig. 4's curve).

    Attributes
    ----------
    fps_per_image : numpy.ndarray
        Average false positives per slide at each threshold, in the official
        order (increasing threshold), ending with the appended 0.
    sensitivity : numpy.ndarray
        Fraction of non-ITC lesions detected at each threshold, same order.
    thresholds : numpy.ndarray
        The probability threshold of each point (``>=``); ``inf`` for the
        final ``(0, 0)`` point.
    eval_fps : tuple of float
        ``(1/4, 1/2, 1, 2, 4, 8)`` false positives per slide.
    eval_sensitivities : numpy.ndarray (6,)
        The sensitivity at each of ``eval_fps`` (linear interpolation of the curve).
    score : float
        The mean of ``eval_sensitivities``: the FROC score.
    n_slides : int
        Slides evaluated (tumor and normal): the FP denominator.
    n_lesions : int
        Non-ITC lesions over all slides: the sensitivity denominator.
    protocol : str
        ``"camelyon16"`` or ``"strict"``.
    level : int
        The evaluation level (downsample ``2**level``).
    slides : tuple of SlideFROC
        Per-slide details, in input order.
    """

    fps_per_image: FloatArray
    sensitivity: FloatArray
    thresholds: FloatArray
    eval_fps: tuple[float, ...]
    eval_sensitivities: FloatArray
    score: float
    n_slides: int
    n_lesions: int
    protocol: str
    level: int
    slides: tuple[SlideFROC, ...]

    def slide(self, slide_id: str) -> SlideFROC:
        """The details of one slide, by id."""
        for s in self.slides:
            if s.slide_id == slide_id:
                return s
        raise MetricsError(f"no slide {slide_id!r} in this result; slides: {self.slide_ids}")

    @property
    def slide_ids(self) -> tuple[str, ...]:
        """The evaluated slide ids, in input order."""
        return tuple(s.slide_id for s in self.slides)


# --- evaluation mask, ITC -------------------------------------------------------------


def _check_level_mpp(level: int, mpp: float) -> tuple[int, float]:
    if isinstance(level, bool) or int(level) != level or level < 0:
        raise MetricsError(f"level must be a non-negative integer, got {level!r}")
    m = float(mpp)
    if not math.isfinite(m) or m <= 0:
        raise MetricsError(f"mpp (level-0 µm per pixel) must be positive and finite, got {mpp!r}")
    return int(level), m


def _disk(radius: float) -> npt.NDArray[np.uint8]:
    """Offsets whose Euclidean length is ``< radius``, as a 0/1 footprint.

    The lengths are computed as ``sqrt(dy**2 + dx**2)`` in float64, exactly as
    :func:`scipy.ndimage.distance_transform_edt` computes distances, so the
    dilation equals thresholding the distance transform bit for bit.
    """
    r = max(math.ceil(radius), 0)
    d = np.arange(-r, r + 1, dtype=np.float64)
    return (np.sqrt(d[:, None] ** 2 + d[None, :] ** 2) < radius).astype(np.uint8)


def _fill_holes(binary: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """:func:`scipy.ndimage.binary_fill_holes` (4-connected background) of a 0/1 image.

    The background reachable from outside the image is flood-filled from a
    one-pixel frame around it; every other background pixel is a hole.
    """
    import cv2

    h, w = binary.shape
    framed = np.zeros((h + 2, w + 2), np.uint8)
    framed[1:-1, 1:-1] = binary
    cv2.floodFill(framed, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
    return np.asarray(framed[1:-1, 1:-1] != 2, dtype=np.uint8)


def _label_raster_order(
    binary: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int32], int, IntArray]:
    """8-connected labels ``1..K`` numbered in raster order of each region's first pixel.

    That is :func:`skimage.measure.label`'s numbering (the official script's);
    OpenCV labels faster but may number block-wise, so its labels are renumbered.
    Returns the labels, ``K`` and the flat indices of the labelled pixels.
    """
    import cv2

    n, labels = cv2.connectedComponents(binary, connectivity=8, ltype=cv2.CV_32S)
    n -= 1
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if n <= 1:
        return np.asarray(labels, np.int32), n, idx
    first = np.full(n + 1, flat.size, np.int64)
    np.minimum.at(first, flat[idx], idx)
    order = np.argsort(first[1:], kind="stable")
    if np.array_equal(order, np.arange(n)):
        return np.asarray(labels, np.int32), n, idx
    remap = np.zeros(n + 1, np.int32)
    remap[order + 1] = np.arange(1, n + 1, dtype=np.int32)
    return np.asarray(remap[labels], np.int32), n, idx


def evaluation_mask(tumor: npt.ArrayLike, *, mpp: float, level: int = 5) -> npt.NDArray[np.int32]:
    """The Camelyon16 evaluation mask: labelled lesions, dilated by 37.5 µm.

    Keeps the pixels whose Euclidean distance to the tumor is
    ``< 75 / (mpp * 2**level * 2)`` pixels, fills holes, and labels the
    regions with 8-connectivity, as the official ``computeEvaluationMask``
    does (same result, computed by a disk dilation and labelling instead of a
    full distance transform and iterative hole filling).

    A mask without tumor pixels gives no labels.  (The official script, via
    ``distance_transform_edt`` of an image without zeros, would make a small
    phantom region in the top-left corner; this is a deliberate difference.)

    Parameters
    ----------
    tumor : array-like of bool, 2-D
        The ground-truth tumor mask at the evaluation level.
    mpp : float
        Level-0 micrometres per pixel of the slide.
    level : int
        Evaluation level: the mask's pixels are ``2**level`` level-0 pixels
        (5, Camelyon16's value and the study's value).

    Returns
    -------
    numpy.ndarray of int32
        0 outside every lesion, ``1..K`` for the regions, numbered in raster
        order of their first pixel (as :func:`skimage.measure.label`).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.metrics import evaluation_mask
    >>> m = np.zeros((12, 12), bool)
    >>> m[2, 2] = m[2, 8] = True   # 6 px apart: merged by the 37.5 µm dilation
    >>> evaluation_mask(m, mpp=0.243).max()
    np.int32(1)
    >>> m[2, 8], m[10, 10] = False, True
    >>> evaluation_mask(m, mpp=0.243).max()
    np.int32(2)
    """
    import cv2

    level, mpp = _check_level_mpp(level, mpp)
    arr = np.asarray(tumor)
    if arr.ndim != 2 or arr.dtype != np.bool_:
        raise MetricsError(
            f"a tumor mask must be a 2-D bool array, got shape {arr.shape} dtype {arr.dtype} "
            "(for a 0/255 Camelyon16 mask use mask == 255)"
        )
    if not arr.any():
        return np.zeros(arr.shape, np.int32)
    # The official threshold expression, evaluated in the same order.
    threshold = 75 / (mpp * pow(2, level) * 2)
    binary = cv2.dilate(arr.astype(np.uint8), _disk(threshold))
    return _label_raster_order(_fill_holes(binary))[0]


def _major_axis_lengths(labels: npt.NDArray[np.integer], n: int, idx: IntArray) -> FloatArray:
    """``major_axis_length`` of regions ``1..n`` (pixels at flat ``idx``) from their moments."""
    rows, cols = np.divmod(idx, labels.shape[1])
    lab = labels.ravel()[idx].astype(np.intp)
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)[1:]
    mr = np.bincount(lab, weights=rows, minlength=n + 1)[1:] / count
    mc = np.bincount(lab, weights=cols, minlength=n + 1)[1:] / count
    dr = rows - mr[lab - 1]
    dc = cols - mc[lab - 1]
    a = np.bincount(lab, weights=dr * dr, minlength=n + 1)[1:] / count
    d = np.bincount(lab, weights=dc * dc, minlength=n + 1)[1:] / count
    b = np.bincount(lab, weights=dr * dc, minlength=n + 1)[1:] / count
    big = (a + d) / 2 + np.sqrt(4 * b * b + (a - d) ** 2) / 2
    return np.asarray(4 * np.sqrt(np.maximum(big, 0.0)), np.float64)


def itc_labels(
    labels: npt.NDArray[np.integer], *, mpp: float, level: int = 5
) -> npt.NDArray[np.int64]:
    """Labels of isolated-tumor-cell regions: major axis ``< 275 / (mpp * 2**level)`` pixels.

    The major axis is :mod:`skimage.measure.regionprops`' ``major_axis_length``
    (4 × the square root of the largest eigenvalue of the region's inertia
    tensor).  ITCs are regions whose longest diameter is below 200 µm before
    the 75 µm dilation (official ``computeITCList``).

    Parameters
    ----------
    labels : numpy.ndarray of int
        An evaluation mask (:func:`evaluation_mask`).
    mpp : float
        Level-0 micrometres per pixel.
    level : int
        The evaluation level (5, the study's value).

    Returns
    -------
    numpy.ndarray of int64
        The ITC labels, increasing.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.metrics import evaluation_mask, itc_labels
    >>> m = np.zeros((80, 80), bool)
    >>> m[5, 5] = True             # a single cell: ITC
    >>> m[40:70, 20:75] = True     # 55 px ≈ 430 µm at level 5: a lesion
    >>> itc_labels(evaluation_mask(m, mpp=0.243), mpp=0.243)
    array([1])
    """
    level, mpp = _check_level_mpp(level, mpp)
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    return _itc(labels, n, np.flatnonzero(labels), mpp, level)


def _itc(
    labels: npt.NDArray[np.integer], n: int, idx: IntArray, mpp: float, level: int
) -> IntArray:
    from skimage.measure import regionprops

    if n == 0:
        return np.zeros(0, np.int64)
    threshold = 275 / (mpp * pow(2, level))
    major = _major_axis_lengths(labels, n, idx)
    is_itc = major < threshold
    # Within rounding distance of the threshold, ask scikit-image itself (on the
    # same bounding-box image regionprops uses), so the decision is the official one.
    close = np.flatnonzero(np.abs(major - threshold) <= 1e-9 * threshold)
    if close.size:
        from scipy import ndimage

        boxes = ndimage.find_objects(labels)
        for i in close:
            box = boxes[i]
            crop = (labels[box] == i + 1).astype(np.uint8)
            is_itc[i] = regionprops(crop)[0].axis_major_length < threshold
    return np.flatnonzero(is_itc).astype(np.int64) + 1


def _regions(
    tumor: npt.NDArray[np.bool_], mpp: float, level: int, itc: bool, slide_id: str
) -> tuple[npt.NDArray[np.int32], IntArray]:
    """Evaluation mask and ITC labels of one slide (one pass over the labelled pixels)."""
    import cv2

    if not tumor.any():
        logger.warning(
            "slide %r: the tumor mask has no tumor pixels; every detection is an FP", slide_id
        )
        return np.zeros(tumor.shape, np.int32), np.zeros(0, np.int64)
    threshold = 75 / (mpp * pow(2, level) * 2)
    binary = cv2.dilate(tumor.astype(np.uint8), _disk(threshold))
    labels, n, idx = _label_raster_order(_fill_holes(binary))
    itcs = _itc(labels, n, idx, mpp, level) if itc else np.zeros(0, np.int64)
    logger.debug("slide %r: %d regions, %d ITC", slide_id, n, itcs.size)
    return labels, itcs


# --- one slide ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SlideTally:
    detail: SlideFROC
    fp_probs: FloatArray  # float64
    slots: FloatArray  # float64 max probability per label 1..K (0: missed, ITC)
    itc: BoolArray  # per label 1..K


def _score_slide(
    slide_id: str,
    labels: npt.NDArray[np.integer] | None,
    itc: IntArray,
    dets: FloatArray,
    level: int,
) -> _SlideTally:
    n = dets.shape[0]
    probs = dets[:, 0]
    xs = dets[:, 1].astype(np.int64)
    ys = dets[:, 2].astype(np.int64)
    if (xs < 0).any() or (ys < 0).any():
        i = int(np.argmax((xs < 0) | (ys < 0)))
        raise MetricsError(
            f"slide {slide_id!r}: detection {i} at ({xs[i]}, {ys[i]}) has a negative "
            "level-0 coordinate"
        )
    if labels is None:
        return _SlideTally(
            SlideFROC(
                slide_id=slide_id,
                is_tumor=False,
                detections=dets,
                detection_label=np.zeros(n, np.int64),
                is_true_positive=np.zeros(n, bool),
                is_false_positive=np.ones(n, bool),
                in_itc=np.zeros(n, bool),
                lesion_labels=np.zeros(0, np.int64),
                lesion_probability=np.zeros(0, np.float64),
                lesion_detection=np.zeros(0, np.int64),
                itc_labels=np.zeros(0, np.int64),
                n_labels=0,
            ),
            fp_probs=probs,
            slots=np.zeros(0, np.float64),
            itc=np.zeros(0, bool),
        )
    rows, cols = ys >> level, xs >> level
    h, w = labels.shape
    outside = (rows >= h) | (cols >= w)
    if outside.any():
        i = int(np.argmax(outside))
        raise MetricsError(
            f"slide {slide_id!r}: detection {i} at level-0 ({xs[i]}, {ys[i]}) falls on "
            f"evaluation-mask pixel (row {rows[i]}, col {cols[i]}), outside the {h}x{w} mask "
            f"at level {level}: detections must be level-0 pixels inside the mask "
            f"(x < {w * 2**level}, y < {h * 2**level})"
        )
    k = int(labels.max(initial=0))
    hit = labels[rows, cols].astype(np.int64)
    is_itc_label = np.zeros(k + 1, bool)
    is_itc_label[itc] = True
    in_itc = is_itc_label[hit]
    fp = hit == 0
    cand = np.flatnonzero(~fp & ~in_itc & (probs > 0))
    slots = np.zeros(k + 1, np.float64)
    best = np.full(k + 1, -1, np.int64)
    if cand.size:
        # Highest probability per label, the first on ties.
        order = cand[np.lexsort((cand, -probs[cand], hit[cand]))]
        first = np.ones(order.size, bool)
        first[1:] = hit[order[1:]] != hit[order[:-1]]
        winners = order[first]
        slots[hit[winners]] = probs[winners]
        best[hit[winners]] = winners
    tp = np.zeros(n, bool)
    tp[best[best >= 0]] = True
    lesions = np.flatnonzero(~is_itc_label[1:]).astype(np.int64) + 1
    detail = SlideFROC(
        slide_id=slide_id,
        is_tumor=True,
        detections=dets,
        detection_label=hit,
        is_true_positive=tp,
        is_false_positive=fp,
        in_itc=in_itc,
        lesion_labels=lesions,
        lesion_probability=slots[lesions],
        lesion_detection=best[lesions],
        itc_labels=np.asarray(itc, np.int64),
        n_labels=k,
    )
    return _SlideTally(detail, probs[fp], slots[1:], is_itc_label[1:])


# --- the curve ----------------------------------------------------------------------------


def _count_at_least(
    sorted_values: npt.NDArray[np.floating], thresholds: npt.NDArray[np.floating]
) -> IntArray:
    return np.asarray(
        sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left"), np.int64
    )


def _curve(
    tallies: list[_SlideTally], protocol: Protocol
) -> tuple[FloatArray, FloatArray, FloatArray, int]:
    fp = np.sort(np.concatenate([t.fp_probs for t in tallies] + [np.zeros(0)]))
    n_lesions = sum(t.detail.n_lesions for t in tallies)
    if n_lesions == 0:
        raise MetricsError(
            f"none of the {len(tallies)} slides has a lesion to detect (non-ITC tumor region): "
            "FROC sensitivity is undefined; give at least one tumor mask with a lesion"
        )
    if protocol == "camelyon16":
        # Official: TP slots are float32 (every label, ITCs and misses at 0), FP
        # probabilities float64; thresholds are the distinct values in float64
        # (NumPy 1 compares float32 and Python floats in float64), the smallest
        # skipped; TPs are counted in float32 against the threshold cast to float32.
        tp32 = np.sort(
            np.concatenate([t.slots for t in tallies] + [np.zeros(0)]).astype(np.float32)
        )
        thresholds = np.unique(np.concatenate([fp, tp32.astype(np.float64)]))[1:]
        n_fp = _count_at_least(fp, thresholds)
        n_tp = _count_at_least(tp32, thresholds.astype(np.float32))
    elif protocol == "strict":
        hits = np.concatenate([t.slots[~t.itc] for t in tallies] + [np.zeros(0)])
        hits = np.sort(hits[hits > 0])
        thresholds = np.unique(np.concatenate([fp, hits]))
        n_fp = _count_at_least(fp, thresholds)
        n_tp = _count_at_least(hits, thresholds)
    else:  # pragma: no cover - validated by the callers
        raise MetricsError(f"protocol must be 'camelyon16' or 'strict', got {protocol!r}")
    fps = np.append(n_fp, 0) / float(len(tallies))
    sens = np.append(n_tp, 0) / float(n_lesions)
    return fps, sens, np.append(thresholds, np.inf), n_lesions


def _check_protocol(protocol: str) -> Protocol:
    if protocol not in ("camelyon16", "strict"):
        raise MetricsError(f"protocol must be 'camelyon16' or 'strict', got {protocol!r}")
    return protocol  # type: ignore[return-value]


_SlideInput: TypeAlias = tuple[str, npt.NDArray[np.integer] | None, IntArray, FloatArray]


def _froc(
    slides: list[_SlideInput],
    *,
    level: int,
    protocol: Protocol,
) -> FROCResult:
    if not slides:
        raise MetricsError("no slides to evaluate: give at least one slide")
    tallies = [_score_slide(sid, lab, itc, dets, level) for sid, lab, itc, dets in slides]
    fps, sens, thresholds, n_lesions = _curve(tallies, protocol)
    evals = np.interp(EVAL_FPS, fps[::-1], sens[::-1])
    return FROCResult(
        fps_per_image=fps,
        sensitivity=sens,
        thresholds=thresholds,
        eval_fps=EVAL_FPS,
        eval_sensitivities=np.asarray(evals, np.float64),
        score=float(np.mean(evals)),
        n_slides=len(tallies),
        n_lesions=n_lesions,
        protocol=protocol,
        level=level,
        slides=tuple(t.detail for t in tallies),
    )


def _check_keys(masks: Mapping[str, object], detections: Mapping[str, object]) -> None:
    missing = [k for k in masks if k not in detections]
    extra = [k for k in detections if k not in masks]
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"slides without detections: {missing[:5]} (give an empty array for a slide "
                "without detections)"
            )
        if extra:
            parts.append(
                f"detections for slides without ground truth: {extra[:5]} (give None for a "
                "normal slide)"
            )
        raise MetricsError(
            "ground truth and detections must name the same slides; " + "; ".join(parts)
        )


def froc(
    masks: Mapping[str, npt.ArrayLike | None],
    detections: Mapping[str, npt.ArrayLike],
    *,
    mpp: float,
    level: int = 5,
    protocol: Protocol = "camelyon16",
    itc: bool = True,
) -> FROCResult:
    """Lesion-level FROC of detections against tumor masks at the evaluation level.

    The Camelyon16 protocol (official ``Evaluation_FROC.py``): each mask is
    dilated by 37.5 µm, hole-filled and labelled (:func:`evaluation_mask`);
    small regions are isolated tumor cells (:func:`itc_labels`), ignored.  A
    detection ``(p, x, y)`` hits the label at ``[y // 2**level, x // 2**level]``:
    label 0 is a false positive; in a lesion only the most probable detection
    with ``p > 0`` counts, the others are dropped; on a normal slide every
    detection is a false positive.  For each threshold, FPs are averaged over
    all slides and sensitivity is the fraction of non-ITC lesions detected; the
    score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 FPs per slide.

    ``protocol="camelyon16"`` reproduces the official numbers exactly, on any
    NumPy version: the thresholds are the distinct FP probabilities (float64)
    and per-label TP slots (float32; missed lesions and ITCs at 0), with the
    smallest one skipped (``all_probs[1:]``); a TP counts at threshold ``t``
    when ``float32(p) >= float32(t)``.  So a TP of 0.3 and an FP of 0.3 are two
    thresholds, the lowest operating point is lost when no lesion is missed, and
    (as in the script) a threshold below float32's smallest number, ``< 1e-45``,
    counts missed lesions as detected.

    ``protocol="strict"`` is the same protocol without those quirks: all
    values in float64, every distinct probability of an FP or a lesion's hit is
    a threshold (none skipped), and missed lesions and ITCs add no threshold.

    Parameters
    ----------
    masks : mapping of str to numpy.ndarray of bool or None
        Per slide id, the tumor mask at the evaluation level (pixel ``[r, c]``
        covers level-0 ``[c * 2**level, (c + 1) * 2**level)`` horizontally),
        or ``None`` for a normal slide.
    detections : mapping of str to array-like (N, 3)
        Per slide id (the same ids as ``masks``), ``prob, x, y`` with ``x, y``
        integer level-0 pixels and ``prob >= 0``.  An empty array for a slide
        without detections.
    mpp : float
        Level-0 micrometres per pixel (Camelyon16: 0.243).
    level : int
        Evaluation level, downsample ``2**level`` (5, the study's value).
    protocol : {"camelyon16", "strict"}
        See above.
    itc : bool
        Exclude isolated-tumor-cell regions (the protocol).  ``False`` counts
        every region as a lesion.

    Returns
    -------
    FROCResult

    Raises
    ------
    MetricsError
        Different slide ids in ``masks`` and ``detections``, malformed
        detections, a detection outside its slide's mask (a clear error, where
        the official script wraps negative indices or crashes), no non-ITC
        lesion in any slide, or a bad ``level``, ``mpp`` or ``protocol``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.metrics import froc
    >>> mask = np.zeros((64, 64), bool)
    >>> mask[10:50, 10:50] = True      # a lesion of 40 x 40 level-5 pixels
    >>> dets = {"tumor": [[0.9, 640, 640], [0.6, 1800, 1800]], "normal": [[0.4, 100, 100]]}
    >>> result = froc({"tumor": mask, "normal": None}, dets, mpp=0.243, protocol="strict")
    >>> result.fps_per_image.tolist(), result.sensitivity.tolist()
    ([1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0])
    >>> result.score
    1.0
    """
    protocol = _check_protocol(protocol)
    level, mpp = _check_level_mpp(level, mpp)
    _check_keys(masks, detections)
    slides: list[_SlideInput] = []
    for sid, mask in masks.items():
        dets = as_detections(detections[sid], f"detections of slide {sid!r}")
        if mask is None:
            slides.append((sid, None, np.zeros(0, np.int64), dets))
            continue
        arr = np.asarray(mask)
        if arr.ndim != 2 or arr.dtype != np.bool_:
            raise MetricsError(
                f"the tumor mask of slide {sid!r} must be a 2-D bool array, got shape "
                f"{arr.shape} dtype {arr.dtype} (for a 0/255 Camelyon16 mask use mask == 255)"
            )
        labels, itcs = _regions(arr, mpp, level, itc, sid)
        slides.append((sid, labels, itcs, dets))
    return _froc(slides, level=level, protocol=protocol)


# --- the evaluator over Rasters ------------------------------------------------------------


def _level_mask(raster: Raster, level: int, slide_id: str) -> npt.NDArray[np.bool_]:
    """The mask as reading level ``level`` of a Camelyon16 mask TIFF gives it.

    ASAP writes mask pyramids with nearest-neighbour 2× subsampling (the top-left
    pixel of each 2×2 block) and level sizes ``floor(size / 2**level)``; so
    evaluation pixel ``(r, c)`` is the mask's value at level-0 point
    ``(c * 2**level, r * 2**level)``.
    """
    if raster.dtype != np.bool_:
        raise MetricsError(
            f"ground truth of slide {slide_id!r} must be a bool Raster, got dtype {raster.dtype} "
            "(for a 0/255 mask use raster.with_array(raster.array == 255))"
        )
    width, height = raster.slide_dimensions
    d = 2**level
    rows, cols = height // d, width // d
    if rows == 0 or cols == 0:
        raise MetricsError(
            f"slide {slide_id!r} of {width}x{height} level-0 pixels is smaller than one "
            f"evaluation pixel at level {level} ({d}x{d})"
        )
    step = d / raster.downsample
    if step == int(step):  # e.g. a level-0 or level-5 mask: floor(r * d / ds) = r * step
        k = int(step)
        return np.asarray(raster.array[: rows * k : k, : cols * k : k], dtype=bool)
    ys = np.arange(rows, dtype=np.float64) * d
    xs = np.arange(cols, dtype=np.float64) * d
    r, _ = raster.to_index(np.zeros_like(ys), ys)
    _, c = raster.to_index(xs, np.zeros_like(xs))
    return np.asarray(raster.array[np.ix_(r, c)], dtype=bool)


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
        protocol: Protocol = "camelyon16",
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
        level, _ = _check_level_mpp(self.level, 1.0)
        m = self._mpp(ground_truth, mpp, slide_id)
        return evaluation_mask(_level_mask(ground_truth, level, slide_id), mpp=m, level=level)

    @staticmethod
    def _rasterize(
        annotations: object,
        slide_id: str,
        level: int,
        mpp: float | None,
        slide_dimensions: Mapping[str, tuple[int, int]] | None,
    ) -> Raster:
        from cervixwsi.annotations import AnnotationSet, rasterize

        if not isinstance(annotations, AnnotationSet):
            raise MetricsError(
                f"ground truth of slide {slide_id!r} must be a Raster, an AnnotationSet or None, "
                f"got {type(annotations).__name__}"
            )
        if slide_dimensions is None or slide_id not in slide_dimensions or mpp is None:
            raise MetricsError(
                f"slide {slide_id!r} has annotations as ground truth: pass its level-0 size in "
                "slide_dimensions={...} and mpp=... to evaluate()"
            )
        width, height = (int(v) for v in slide_dimensions[slide_id])
        d = 2**level
        shape = (height // d, width // d)
        if shape[0] == 0 or shape[1] == 0:
            raise MetricsError(
                f"slide {slide_id!r} of {width}x{height} level-0 pixels is smaller than one "
                f"evaluation pixel at level {level} ({d}x{d})"
            )
        return rasterize(annotations, shape, d, slide_dimensions=(width, height), mpp=mpp)

    @staticmethod
    def _mpp(raster: Raster, mpp: float | None, slide_id: str) -> float:
        value = mpp if mpp is not None else raster.mpp
        if value is None:
            raise MetricsError(
                f"slide {slide_id!r}: its ground-truth Raster has no mpp; pass mpp=... to "
                "evaluate() or build the Raster with mpp"
            )
        return float(value)

    def evaluate(
        self,
        ground_truth: Mapping[str, Raster | AnnotationSet | None],
        detections: Mapping[str, npt.ArrayLike | str | os.PathLike[str]],
        *,
        mpp: float | None = None,
        slide_dimensions: Mapping[str, tuple[int, int]] | None = None,
    ) -> FROCResult:
        """Evaluate detections of many slides.

        Parameters
        ----------
        ground_truth : mapping of str to Raster, AnnotationSet or None
            Per slide id, a bool tumor-mask :class:`~cervixwsi.geometry.Raster`
            at any downsample, annotations
            (:class:`~cervixwsi.annotations.AnnotationSet`: ``"tumor"``
            polygons minus ``"exclusion"`` ones, rasterised at the evaluation
            level, each evaluation pixel inside when its centre is), or
            ``None`` for a normal slide.
        detections : mapping of str to array-like (N, 3) or path
            Per slide id (the same ids), ``prob, x, y`` in level-0 pixels, or a
            Camelyon16 CSV file (:func:`read_detections_csv`).
        mpp : float, optional
            Level-0 µm per pixel for every slide; by default each Raster's own.
            Required for annotations.
        slide_dimensions : mapping of str to (int, int), optional
            Level-0 ``(width, height)`` of the slides given as annotations.

        Returns
        -------
        FROCResult

        Raises
        ------
        MetricsError
            See :func:`froc`; also a Raster without mpp when ``mpp`` is not
            given, a non-bool Raster, or a detection outside its slide.
        """
        from tqdm.auto import tqdm

        protocol = _check_protocol(self.protocol)
        level, _ = _check_level_mpp(self.level, 1.0 if mpp is None else mpp)
        _check_keys(ground_truth, detections)
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
                gt = self._rasterize(gt, sid, level, mpp, slide_dimensions)
            width, height = gt.slide_dimensions
            out = (dets[:, 1] >= width) | (dets[:, 2] >= height)
            if out.any():
                i = int(np.argmax(out))
                raise MetricsError(
                    f"slide {sid!r}: detection {i} at level-0 ({dets[i, 1]:g}, {dets[i, 2]:g}) "
                    f"is outside the slide of {width}x{height} pixels"
                )
            m = self._mpp(gt, mpp, sid)
            _check_level_mpp(level, m)
            labels, itcs = _regions(_level_mask(gt, level, sid), m, level, self.itc, sid)
            slides.append((sid, labels, itcs, dets))
        return _froc(slides, level=level, protocol=protocol)
