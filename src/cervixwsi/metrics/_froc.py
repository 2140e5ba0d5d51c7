"""Lesion-level FROC: the Camelyon16 protocol, vectorised (detections against label masks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice
from cervixwsi.errors import MetricsError
from cervixwsi.metrics._detections import as_detections
from cervixwsi.metrics._evaluation_mask import _check_level_mpp, _regions

__all__ = ["EVAL_FPS", "FROCResult", "SlideFROC", "froc"]

FROCProtocol: TypeAlias = Literal["camelyon16", "strict"]
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
        The labels of ITC regions (excluded from sensitivity), and of lesions
        ignored as unreadable (``FROCEvaluator.evaluate(unreadable=...)``).
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
    tallies: list[_SlideTally], protocol: FROCProtocol
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


def _check_protocol(protocol: str, owner: str) -> FROCProtocol:
    return check_choice(protocol, f"{owner}.protocol", ("camelyon16", "strict"))


_SlideInput: TypeAlias = tuple[str, npt.NDArray[np.integer] | None, IntArray, FloatArray]


def _froc(
    slides: list[_SlideInput],
    *,
    level: int,
    protocol: FROCProtocol,
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
    protocol: FROCProtocol = "camelyon16",
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
        the official script wraps negative indices or crashes), or no non-ITC
        lesion in any slide.
    ParameterError
        A bad ``level`` (an integer >= 0), ``mpp`` (a number > 0) or
        ``protocol``.

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
    protocol = _check_protocol(protocol, "froc")
    level, mpp = _check_level_mpp(level, mpp, "froc")
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
