"""From a tumor-probability heatmap to lesion detections ``(p, x, y)``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_real
from cervixwsi.errors import MetricsError, ParameterError
from cervixwsi.geometry import Raster

__all__ = ["DetectionChoice", "choose_detection_params", "detect_lesions"]


def _centres(
    heatmap: Raster, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    xc, yc = heatmap.pixel_centers()
    width, height = heatmap.slide_dimensions
    # Integer level-0 pixels (the Camelyon16 format), kept inside the slide.
    x = np.clip(np.floor(xc[cols]), 0, width - 1)
    y = np.clip(np.floor(yc[rows]), 0, height - 1)
    return x, y


#: The ``"smoothed_maxima"`` defaults, chosen by :func:`choose_detection_params` on the
#: training cohort of ``benchmarks/bench_robustness.py`` (see the robustness page).
SMOOTHED_SIGMA_UM = 64.0
SMOOTHED_MIN_DISTANCE_UM = 64.0

DetectionMethod = Literal["components", "nms", "smoothed_maxima"]
METHODS: tuple[str, ...] = ("components", "nms", "smoothed_maxima")


def detect_lesions(
    heatmap: Raster,
    *,
    threshold: float = 0.5,
    method: DetectionMethod = "components",
    radius_um: float = 75.0,
    sigma_um: float = SMOOTHED_SIGMA_UM,
    min_distance_um: float = SMOOTHED_MIN_DISTANCE_UM,
) -> npt.NDArray[np.float64]:
    """Turn a tumor-probability heatmap into lesion detections for FROC.

    Three documented strategies:

    ``"components"``
        The pixels with probability ``>= threshold`` are grouped into
        8-connected components; each component gives one detection, its
        maximum probability at the centre of its most probable pixel (the first
        in raster order on ties).
    ``"nms"``
        Local maxima with non-maximum suppression: the pixels ``>= threshold``
        that are the maximum of the disk of radius ``radius_um`` around them
        are candidates; taken by decreasing probability, a candidate is kept
        unless a kept one lies within ``radius_um`` (so plateaus give one
        detection).  Needs the heatmap's ``mpp``.  Reports several detections
        for one large lesion, which the FROC protocol does not penalise (only
        the best counts, the others are dropped).
    ``"smoothed_maxima"``
        For scattered small lesions: the map is smoothed with a Gaussian of
        standard deviation ``sigma_um`` (0: not smoothed), then every local
        maximum of the smoothed map ``>= threshold`` is a detection
        (:func:`skimage.feature.peak_local_max`), taken by decreasing
        probability and dropped when a kept one lies within
        ``min_distance_um`` (Euclidean; a plateau gives one detection per
        ``min_distance_um``).  Its probability is the smoothed value.  Unlike
        ``"components"``, lesions whose above-threshold pixels touch still get
        a detection each once their peaks are apart; unlike ``"nms"``, a lone
        noisy pixel is flattened by the smoothing instead of becoming a
        confident false positive.  Needs the heatmap's ``mpp``.  The defaults
        (``SMOOTHED_SIGMA_UM`` = 64 µm, ``SMOOTHED_MIN_DISTANCE_UM`` = 64 µm)
        were chosen by :func:`choose_detection_params` on the training cohort
        of ``benchmarks/bench_robustness.py`` (64 µm heatmap pixels: a sigma of
        one pixel); choose them on your own training slides.

    NaN pixels (no tissue) count as probability 0.

    Parameters
    ----------
    heatmap : Raster
        Tumor probabilities over the slide (e.g. one pixel per patch).
    threshold : float
        Minimum probability of a detection (0.5, the study's heatmap threshold).
    method : {"components", "nms", "smoothed_maxima"}
        The strategy, see above.
    radius_um : float
        Suppression radius in micrometres (``"nms"`` only; 75 µm, the
        protocol's merge distance of two lesions).
    sigma_um : float
        Standard deviation of the smoothing in micrometres, ``>= 0``
        (``"smoothed_maxima"`` only).
    min_distance_um : float
        Least distance between two detections in micrometres, ``> 0``
        (``"smoothed_maxima"`` only).

    Returns
    -------
    numpy.ndarray (N, 3), float64
        ``prob, x, y`` with integer level-0 ``x, y`` (the centre of the heatmap
        pixel, floored and kept inside the slide), sorted by decreasing
        probability.

    Raises
    ------
    MetricsError
        A non-numeric heatmap, or ``"nms"`` / ``"smoothed_maxima"`` on a heatmap
        without ``mpp``.
    ParameterError
        A bad ``threshold``, ``method``, ``radius_um``, ``sigma_um`` or
        ``min_distance_um``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> from cervixwsi.metrics import detect_lesions
    >>> p = np.zeros((4, 6))
    >>> p[1, 1], p[1, 2], p[3, 5] = 0.7, 0.95, 0.6
    >>> heat = Raster(p, 256, (1536, 1024), mpp=0.25)
    >>> detect_lesions(heat)
    array([[9.50e-01, 6.40e+02, 3.84e+02],
           [6.00e-01, 1.408e+03, 8.96e+02]])

    Two lesions whose above-threshold pixels touch are one component, but two maxima:

    >>> p = np.zeros((3, 8)); p[1, 1:7] = [0.6, 0.9, 0.7, 0.7, 0.95, 0.6]
    >>> heat = Raster(p, 64, (512, 192), mpp=1.0)
    >>> len(detect_lesions(heat)), len(detect_lesions(heat, method="smoothed_maxima",
    ...                                               sigma_um=0, min_distance_um=128))
    (1, 2)
    """
    from scipy import ndimage

    arr = np.asarray(heatmap.array)
    if arr.dtype.kind not in "biuf":
        raise MetricsError(f"a heatmap must be numeric, got dtype {arr.dtype}")
    t = check_real(threshold, "detect_lesions.threshold")
    check_choice(method, "detect_lesions.method", METHODS)
    p = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if method == "components":
        above = p >= t
        labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            return np.zeros((0, 3), np.float64)
        flat = np.flatnonzero(above)
        lab = labels.ravel()[flat]
        # Per component: highest probability, then the first pixel in raster order.
        order = flat[np.lexsort((flat, -p.ravel()[flat], lab))]
        first = np.ones(order.size, bool)
        first[1:] = labels.ravel()[order[1:]] != labels.ravel()[order[:-1]]
        peaks = order[first]
    elif method == "smoothed_maxima":
        peaks, p = _smoothed_maxima(heatmap, p, t, sigma_um, min_distance_um)
        if peaks.size == 0:
            return np.zeros((0, 3), np.float64)
    else:  # "nms": check_choice refused anything else
        size_um = heatmap.pixel_size_um
        if size_um is None:
            raise MetricsError(
                "method='nms' needs the heatmap's mpp (to convert radius_um to pixels); "
                "build the Raster with mpp=..."
            )
        radius = check_real(radius_um, "detect_lesions.radius_um", min=0) / size_um
        k = math.floor(radius)
        d = np.arange(-k, k + 1)
        disk = d[:, None] ** 2 + d[None, :] ** 2 <= radius**2
        local_max = ndimage.maximum_filter(p, footprint=disk, mode="constant", cval=-np.inf)
        cand = np.flatnonzero((p >= t) & (p == local_max))
        if cand.size == 0:
            return np.zeros((0, 3), np.float64)
        cand = cand[np.lexsort((cand, -p.ravel()[cand]))]
        cr, cc = np.divmod(cand, p.shape[1])
        from scipy.spatial import cKDTree

        tree = cKDTree(np.column_stack([cr, cc]).astype(np.float64))
        suppressed = np.zeros(cand.size, bool)
        keep: list[int] = []
        for i in range(cand.size):
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed[tree.query_ball_point((cr[i], cc[i]), radius)] = True
        peaks = cand[np.asarray(keep, np.intp)]
    rows, cols = np.divmod(peaks, p.shape[1])
    x, y = _centres(heatmap, rows, cols)
    out = np.column_stack([p.ravel()[peaks], x, y])
    order = np.lexsort((peaks, -out[:, 0]))
    return np.asarray(out[order], np.float64)


def _smoothed_maxima(
    heatmap: Raster,
    p: npt.NDArray[np.float64],
    threshold: float,
    sigma_um: float,
    min_distance_um: float,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The flat indices of the smoothed map's maxima ``>= threshold``, and that map."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    sigma = check_real(sigma_um, "detect_lesions.sigma_um", min=0)
    spacing = check_real(min_distance_um, "detect_lesions.min_distance_um", min=0, min_open=True)
    size_um = heatmap.pixel_size_um
    if size_um is None:
        raise MetricsError(
            "method='smoothed_maxima' needs the heatmap's mpp (to convert sigma_um and "
            "min_distance_um to pixels); build the Raster with mpp=..."
        )
    q = ndimage.gaussian_filter(p, sigma / size_um, mode="constant", cval=0.0) if sigma else p
    peaks = peak_local_max(
        q,
        min_distance=max(1, math.ceil(spacing / size_um - 1e-9)),
        threshold_abs=float(np.nextafter(threshold, -np.inf)),  # ">= threshold"
        exclude_border=False,
        p_norm=2,
    )
    flat = np.ravel_multi_index((peaks[:, 0], peaks[:, 1]), q.shape) if len(peaks) else peaks
    return np.asarray(flat, np.intp).reshape(-1), np.asarray(q, np.float64)


@dataclass(frozen=True)
class DetectionChoice:
    """The detection settings :func:`choose_detection_params` picked, and all it tried.

    Attributes
    ----------
    method : str
        ``"components"`` or ``"smoothed_maxima"`` (the best).
    sigma_um, min_distance_um : float
        Its smoothing and spacing (``"smoothed_maxima"``; NaN for ``"components"``).
    threshold : float
        The detection threshold used throughout.
    froc : float
        Its FROC score on the slides it was chosen on.
    tried : tuple of (str, float, float, float, int)
        Every candidate ``(method, sigma_um, min_distance_um, froc, false_positives)``
        (the last: its detections outside every lesion, all slides together), in the
        order tried.
    """

    method: str
    sigma_um: float
    min_distance_um: float
    threshold: float
    froc: float
    tried: tuple[tuple[str, float, float, float, int], ...]

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`detect_lesions` for this choice."""
        if self.method == "components":
            return {"method": "components", "threshold": self.threshold}
        return {
            "method": self.method,
            "threshold": self.threshold,
            "sigma_um": self.sigma_um,
            "min_distance_um": self.min_distance_um,
        }


def choose_detection_params(
    heatmaps: Mapping[str, Raster],
    ground_truth: Mapping[str, Any],
    *,
    mpp: float | None = None,
    sigmas_um: Sequence[float] = (0.0, 16.0, 32.0, 64.0),
    min_distances_um: Sequence[float] = (64.0, 128.0, 256.0),
    threshold: float = 0.5,
    evaluator: Any | None = None,
) -> DetectionChoice:
    """Pick the detection settings with the best FROC on (training) slides.

    Tries ``"components"`` and ``"smoothed_maxima"`` for every pair of
    ``sigmas_um`` and ``min_distances_um``, scores each by
    :class:`FROCEvaluator` against ``ground_truth``, and returns the best: the
    highest FROC; on a tie (training slides are often detected perfectly), the
    fewest false positives; then the first tried (``"components"``, then the
    smallest values).  Choose on the training cohort only, and apply the choice to
    the test cohort unchanged.

    Parameters
    ----------
    heatmaps : mapping of str to Raster
        Per slide id, its tumor-probability heatmap (with ``mpp``).
    ground_truth : mapping of str to Raster, MaskSource or None
        Per slide id, as for :meth:`FROCEvaluator.evaluate` (``None``: normal).
    mpp : float, optional
        Level-0 µm per pixel of every slide (needed for a ``MaskSource``).
    sigmas_um, min_distances_um : sequence of float
        The candidates (defaults suit heatmaps of 32-128 µm pixels).
    threshold : float
        Detection threshold for every candidate (0.5).
    evaluator : FROCEvaluator, optional
        How to score; default ``FROCEvaluator(progress=False)``.

    Returns
    -------
    DetectionChoice
        ``detect_lesions(heatmap, **choice.kwargs)`` applies it.

    Raises
    ------
    MetricsError
        If the heatmaps and the ground truth have other slide ids, or no slide
        has a lesion to score on (from the evaluator).
    ParameterError
        If a candidate value is invalid or a candidate list is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> p = np.zeros((8, 16)); p[2, 2:12] = [.9, .95, .9, .6, .6, .85, .92, .85, .6, .6]
    >>> p[6, 14] = 0.7                                         # a false positive
    >>> truth = np.zeros((8, 16), bool); truth[2, 2:5] = truth[2, 7:10] = True
    >>> choice = choose_detection_params(
    ...     {"s": Raster(p, 256, (4096, 2048), mpp=0.5)},
    ...     {"s": Raster(truth, 256, (4096, 2048), mpp=0.5)},
    ...     sigmas_um=(0.0,), min_distances_um=(256.0,))
    >>> choice.method, choice.froc, len(choice.tried)
    ('smoothed_maxima', 1.0, 2)
    """
    from cervixwsi.metrics._evaluator import FROCEvaluator

    t = check_real(threshold, "choose_detection_params.threshold")
    sigmas = [check_real(v, "choose_detection_params.sigmas_um", min=0) for v in sigmas_um]
    spacings = [
        check_real(v, "choose_detection_params.min_distances_um", min=0, min_open=True)
        for v in min_distances_um
    ]
    if not sigmas or not spacings:
        raise ParameterError(
            "choose_detection_params: sigmas_um and min_distances_um must each name at least "
            "one value"
        )
    if set(heatmaps) != set(ground_truth):
        raise MetricsError(
            "choose_detection_params: heatmaps and ground_truth must have the same slide ids; "
            f"only in heatmaps: {sorted(set(heatmaps) - set(ground_truth))}, only in "
            f"ground_truth: {sorted(set(ground_truth) - set(heatmaps))}"
        )
    scorer = evaluator if evaluator is not None else FROCEvaluator(progress=False)
    dims = {sid: h.slide_dimensions for sid, h in heatmaps.items()}
    candidates: list[tuple[str, float, float]] = [("components", math.nan, math.nan)]
    candidates += [("smoothed_maxima", s, d) for s in sigmas for d in spacings]
    tried: list[tuple[str, float, float, float, int]] = []
    for method, sigma, spacing in candidates:
        kwargs: dict[str, Any] = {"threshold": t, "method": method}
        if method == "smoothed_maxima":
            kwargs.update(sigma_um=sigma, min_distance_um=spacing)
        detections = {sid: detect_lesions(h, **kwargs) for sid, h in heatmaps.items()}
        result = scorer.evaluate(ground_truth, detections, mpp=mpp, slide_dimensions=dims)
        n_fp = int(sum(int(s.is_false_positive.sum()) for s in result.slides))
        tried.append((method, sigma, spacing, float(result.score), n_fp))
    best = max(range(len(tried)), key=lambda i: (tried[i][3], -tried[i][4], -i))
    method, sigma, spacing, score, _ = tried[best]
    return DetectionChoice(method, sigma, spacing, t, score, tuple(tried))
