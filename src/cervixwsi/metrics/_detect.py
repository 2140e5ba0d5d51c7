"""From a tumor-probability heatmap to lesion detections ``(p, x, y)``."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_real
from cervixwsi.errors import MetricsError
from cervixwsi.geometry import Raster

__all__ = ["detect_lesions"]


def _centres(
    heatmap: Raster, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    xc, yc = heatmap.pixel_centers()
    width, height = heatmap.slide_dimensions
    # Integer level-0 pixels (the Camelyon16 format), kept inside the slide.
    x = np.clip(np.floor(xc[cols]), 0, width - 1)
    y = np.clip(np.floor(yc[rows]), 0, height - 1)
    return x, y


def detect_lesions(
    heatmap: Raster,
    *,
    threshold: float = 0.5,
    method: Literal["components", "nms"] = "components",
    radius_um: float = 75.0,
) -> npt.NDArray[np.float64]:
    """Turn a tumor-probability heatmap into lesion detections for FROC.

    Two documented strategies:

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

    NaN pixels (no tissue) count as probability 0.

    Parameters
    ----------
    heatmap : Raster
        Tumor probabilities over the slide (e.g. one pixel per patch).
    threshold : float
        Minimum probability of a detection (0.5, the study's heatmap threshold).
    method : {"components", "nms"}
        The strategy, see above.
    radius_um : float
        Suppression radius in micrometres (``"nms"`` only; 75 µm, the
        protocol's merge distance of two lesions).

    Returns
    -------
    numpy.ndarray (N, 3), float64
        ``prob, x, y`` with integer level-0 ``x, y`` (the centre of the heatmap
        pixel, floored and kept inside the slide), sorted by decreasing
        probability.

    Raises
    ------
    MetricsError
        A non-numeric heatmap, or ``"nms"`` on a heatmap without ``mpp``.
    ParameterError
        A bad ``threshold``, ``method`` or ``radius_um``.

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
    """
    from scipy import ndimage

    arr = np.asarray(heatmap.array)
    if arr.dtype.kind not in "biuf":
        raise MetricsError(f"a heatmap must be numeric, got dtype {arr.dtype}")
    t = check_real(threshold, "detect_lesions.threshold")
    check_choice(method, "detect_lesions.method", ("components", "nms"))
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
