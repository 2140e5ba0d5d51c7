"""Pixel filters of tissue detection: pen ink (:func:`pen_mask`) and morphology."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["pen_mask"]

# Ink colours in OpenCV HSV (hue 0..179, saturation/value 0..255), measured on real
# pen-marked H&E crops.  Haematoxylin and eosin stain hues lie in [125, 175); inks are
# green/teal (35..90), blue (90..125), strongly saturated red (< 10 or >= 170 with
# saturation >= 170), pure red (< 5 or >= 174) of saturation >= 95 (eosin-rich, red-
# shifted H&E reaches hue 176 at saturation 35-105; the red-pen tiles' ink stays out
# of the mask at 95, not at 110), or black (value < 50, darker than any stained tissue).
_GREEN_HUE = (35, 90)
_BLUE_HUE = (90, 125)
_RED_HUE_LOW, _RED_HUE_HIGH, _RED_MIN_SATURATION = 10, 170, 170
_INK_MIN_SATURATION = 30
_PURE_RED_HUE = (5, 174)
_PURE_RED_MIN_SATURATION = 95
_BLACK_MAX_VALUE = 50


def pen_mask(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels that look like red, green, blue or black marker ink.

    Parameters
    ----------
    hsv : numpy.ndarray
        An ``(h, w, 3)`` uint8 image in OpenCV's HSV (``cv2.COLOR_RGB2HSV``).

    Returns
    -------
    numpy.ndarray
        Boolean ``(h, w)``: true where the colour is ink.  Green/teal and blue
        hues (never produced by H&E staining), red of saturation at least 170
        (eosin is paler), and anything of value below 50 (darker than nuclei).

    Examples
    --------
    >>> import cv2, numpy as np
    >>> rgb = np.array([[[30, 140, 120], [200, 120, 180], [20, 20, 25]]], np.uint8)
    >>> pen_mask(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))
    array([[ True, False,  True]])
    """
    hsv = np.ascontiguousarray(hsv, dtype=np.uint8)
    ranges = (  # (low, high) HSV bounds, inclusive, of each kind of ink
        ((_GREEN_HUE[0], _INK_MIN_SATURATION, 0), (_GREEN_HUE[1] - 1, 255, 255)),
        ((_BLUE_HUE[0], _INK_MIN_SATURATION, 0), (_BLUE_HUE[1] - 1, 255, 255)),
        ((0, _RED_MIN_SATURATION, 0), (_RED_HUE_LOW - 1, 255, 255)),
        ((_RED_HUE_HIGH, _RED_MIN_SATURATION, 0), (179, 255, 255)),
        ((0, _PURE_RED_MIN_SATURATION, 0), (_PURE_RED_HUE[0] - 1, 255, 255)),
        ((_PURE_RED_HUE[1], _PURE_RED_MIN_SATURATION, 0), (179, 255, 255)),
        ((0, 0, 0), (179, 255, _BLACK_MAX_VALUE - 1)),
    )
    ink = np.zeros(hsv.shape[:2], np.uint8)
    for low, high in ranges:  # cv2.inRange: one fast pass per range
        cv2.bitwise_or(ink, cv2.inRange(hsv, low, high), dst=ink)
    out: npt.NDArray[np.bool_] = ink > 0
    return out


def _ellipse(diameter_px: float) -> npt.NDArray[np.uint8] | None:
    """A disk of the given diameter, symmetric under flips and 90° rotations (or None)."""
    radius = round(diameter_px / 2)
    if radius < 1:
        return None
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk: npt.NDArray[np.uint8] = (x * x + y * y <= radius * radius).astype(np.uint8)
    return disk


def _remove_small(mask: npt.NDArray[np.bool_], min_px: float) -> npt.NDArray[np.bool_]:
    """Drop 8-connected pieces of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), 8, cv2.CV_32S)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    out: npt.NDArray[np.bool_] = keep[labels]
    return out


def _fill_holes(mask: npt.NDArray[np.bool_], max_px: float) -> npt.NDArray[np.bool_]:
    """Fill 4-connected background pieces of at most ``max_px`` pixels not touching the border."""
    if max_px < 1 or mask.all():
        return mask
    background = (~mask).view(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(background, 4, cv2.CV_32S)
    rows, cols = mask.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    inner = (left > 0) & (top > 0) & (right < cols) & (bottom < rows)
    fill = inner & (stats[:, cv2.CC_STAT_AREA] <= max_px)
    fill[0] = False  # label 0 is the tissue itself
    out: npt.NDArray[np.bool_] = mask | fill[labels]
    return out
