"""Dust for the artifact masker: grey specks darker than their surroundings in every channel.

Dust is grey: it adds the same optical density (OD) to each channel, where
hematoxylin and eosin each leave one channel pale.  What a speck adds is measured
over its own surroundings (a per-channel median), so a speck on dense tissue and one
on glass look alike, and the tissue's own colour drops out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.tissue._odcone import _optical_density


def _low_index(
    size: tuple[int, int],
    margin: int,
    ds: float,
    x0: float,
    y0: float,
    low_downsample: float,
    low_shape: tuple[int, ...],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Low-grid rows and columns of a block's inner working pixels."""
    w, h = size
    cols = np.arange(margin, w - margin)
    rows = np.arange(margin, h - margin)
    lx = np.clip(((cols + 0.5) * ds + x0) / low_downsample, 0, low_shape[1] - 1)
    ly = np.clip(((rows + 0.5) * ds + y0) / low_downsample, 0, low_shape[0] - 1)
    return ly.astype(np.intp), lx.astype(np.intp)


def _grey_excess(
    rgb: npt.NDArray[np.uint8],
    od: npt.NDArray[np.float32],
    glass: npt.NDArray[np.float32],
    window_px: float,
) -> npt.NDArray[np.float32]:
    """Per pixel, its smallest-channel OD over that of its surroundings.

    The surroundings are the per-channel median of a ``window_px`` window, taken on
    a copy four times coarser (the background is smooth; a median of the full
    window would cost sixteen times more).  Dust is grey: a translucent speck adds
    the same OD to every channel, an opaque one has the same OD in every channel,
    so either lifts the pixel's *smallest* channel well over the surroundings'
    (the tissue's own colour drops out); a nucleus adds hematoxylin, which
    leaves the blue channel pale.
    """
    h, w = rgb.shape[:2]
    factor = 4
    small = cv2.resize(
        rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
    )
    k = max(3, 2 * round(window_px / factor / 2) + 1)
    background = cv2.resize(cv2.medianBlur(small, k), (w, h), interpolation=cv2.INTER_LINEAR)
    excess: npt.NDArray[np.float32] = od.min(axis=2) - _optical_density(background, glass).min(
        axis=2
    )
    return excess


def _dark_specks(
    grey: npt.NDArray[np.float32],
    min_od: float,
    area_px: tuple[float, float],
    margin: int,
    ds: float,
    origin: tuple[float, float],
    low_downsample: float,
    low_shape: tuple[int, ...],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Pieces of ``grey >= min_od`` of ``area_px`` working px: their peaks and low-grid cells.

    Returns ``(levels (m,), cells (k, 2))``: each piece's level, the ``grey`` that
    ``area_px[0]`` of its pixels reach (so that one bright pixel, a grain of
    chromatin, does not lift a piece), and rows ``(piece, low-grid flat index)`` of
    the cells it touches.  A piece belongs to
    the block holding its centre; a piece cut by the block's edge (larger than it
    looks) is left out.  The speck's faint rim (under the threshold) is dust too:
    one working pixel around it.
    """
    none = (np.zeros(0, np.float32), np.zeros((0, 2), np.intp))
    dark = (grey >= min_od).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, 8, cv2.CV_32S)
    if n <= 1:
        return none
    h, w = grey.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    cw, ch = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    area = stats[:, cv2.CC_STAT_AREA]
    cx, cy = left + cw / 2, top + ch / 2
    keep = (area >= area_px[0]) & (area <= area_px[1])
    keep &= (cx >= margin) & (cx < w - margin) & (cy >= margin) & (cy < h - margin)
    keep &= (left > 0) & (top > 0) & (left + cw < w) & (top + ch < h)
    keep[0] = False
    if not keep.any():
        return none
    ids = np.flatnonzero(keep)
    number = np.zeros(n, np.float32)  # the kept pieces numbered 1..m
    number[ids] = np.arange(1, ids.size + 1)
    numbered = number[labels]
    # each piece's k-th highest value: its pixels sorted by piece, then value downwards
    inside = numbered > 0
    piece, value = numbered[inside], grey[inside]
    order = np.lexsort((-value, piece))
    starts = np.searchsorted(piece[order], np.arange(1, ids.size + 1))
    k = max(1, math.ceil(area_px[0]))
    levels = value[order][starts + k - 1].astype(np.float32)
    # one pixel of rim around each piece (a shared rim pixel goes to one of them)
    grown = cv2.dilate(numbered, np.ones((3, 3), np.uint8))
    rr, cc = np.nonzero(grown)
    x0, y0 = origin
    lx = np.clip(((cc + 0.5) * ds + x0) / low_downsample, 0, low_shape[1] - 1).astype(np.intp)
    ly = np.clip(((rr + 0.5) * ds + y0) / low_downsample, 0, low_shape[0] - 1).astype(np.intp)
    pairs = np.stack([grown[rr, cc].astype(np.intp) - 1, ly * low_shape[1] + lx], axis=1)
    return levels, np.unique(pairs, axis=0)
