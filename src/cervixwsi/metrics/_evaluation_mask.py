"""The Camelyon16 evaluation mask: labelled lesions dilated by 37.5 µm, and ITC regions."""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_real
from cervixwsi.errors import MetricsError
from cervixwsi.geometry import Raster

__all__ = ["evaluation_mask", "itc_labels"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _check_level_mpp(level: int, mpp: float, owner: str) -> tuple[int, float]:
    """``(level, mpp)`` checked: an integer evaluation level >= 0, level-0 µm per pixel > 0."""
    return (
        check_int(level, f"{owner}.level", min=0),
        check_real(mpp, f"{owner}.mpp", min=0, min_open=True),
    )


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

    level, mpp = _check_level_mpp(level, mpp, "evaluation_mask")
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
    level, mpp = _check_level_mpp(level, mpp, "itc_labels")
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
