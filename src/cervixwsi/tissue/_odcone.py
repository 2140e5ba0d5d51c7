"""The tissue's colours in optical density: the cone its two stains span, for the artifact masker.

Pen is colour outside this cone, a fold is tissue much darker than the cone's typical
density for its hue; the helpers here fit the cone on a slide's low level and keep or
grow the pieces found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.tissue._filters import _ellipse, _remove_small


@dataclass(frozen=True)
class _StainCone:
    """The tissue's colours in OD: the plane of its two stains and the span of hue in it."""

    normal: npt.NDArray[np.float64]  # unit normal of the stain plane
    e1: npt.NDArray[np.float64]  # in-plane unit vectors: e1 the mean tissue colour
    e2: npt.NDArray[np.float64]
    angle_lo: float  # span of in-plane angle (radians) of the tissue
    angle_hi: float
    plane_tol: float  # sine of the largest ordinary angle out of the plane

    def angles(self, u: npt.NDArray[np.float32]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """``(in-plane angle, sine out of plane)`` of unit OD vectors ``(..., 3)``."""
        return (
            np.arctan2(u @ self.e2.astype(np.float32), u @ self.e1.astype(np.float32)),
            np.abs(u @ self.normal.astype(np.float32)),
        )

    def distance(self, u: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Angle (radians) of unit OD vectors ``(..., 3)`` outside the tissue's cone (<= 0 in)."""
        angle, off_plane = self.angles(u)
        outside = np.maximum(self.angle_lo - angle, angle - self.angle_hi)
        off = np.arcsin(np.clip(off_plane, 0, 1)) - math.asin(min(self.plane_tol, 1.0))
        out: npt.NDArray[Any] = np.maximum(outside, off)
        return out

    def typical_od(
        self, angle: npt.NDArray[Any], norm: npt.NDArray[Any], tissue: npt.NDArray[np.bool_]
    ) -> npt.NDArray[Any]:
        """The tissue's median |OD| for its colour: per pixel, over tissue of the same hue."""
        n_bins = 6
        edges = np.linspace(self.angle_lo, self.angle_hi, n_bins + 1)
        k = np.clip(np.searchsorted(edges, angle) - 1, 0, n_bins - 1)
        values = norm[tissue]
        overall = float(np.median(values)) if values.size else 0.0
        kt = k[tissue]
        typical = np.array(
            [
                float(np.median(values[kt == i])) if (kt == i).sum() >= 20 else overall
                for i in range(n_bins)
            ]
        )
        return typical[k]


def _glass_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The slide's glass colour: the median of its brightest tenth, at least 200 per channel."""
    flat = rgb.reshape(-1, 3)
    if not flat.size:
        return np.full(3, 255.0, np.float32)
    total = flat.astype(np.int32).sum(axis=1)
    bright = flat[total >= np.percentile(total, 90)]
    out: npt.NDArray[np.float32] = np.maximum(np.median(bright, axis=0), 200.0).astype(np.float32)
    return out


def _optical_density(
    rgb: npt.NDArray[np.uint8], glass: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    od = np.log((glass + 1.0) / (rgb.astype(np.float32) + 1.0))
    out: npt.NDArray[np.float32] = np.maximum(od, 0.0, dtype=np.float32)
    return out


def _unit(od: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    norm = np.sqrt((od * od).sum(axis=-1))
    return od / np.maximum(norm, 1e-6)[..., None], norm


def _stain_cone(
    od: npt.NDArray[np.float32], tissue: npt.NDArray[np.bool_], reach: float
) -> _StainCone | None:
    """The colour cone of ordinary tissue, or None with too little tissue.

    Fitted on the paler half of the tissue (ink and folds, the darkest things on a
    slide, stay out even when they cover a third of it), then again on the tissue
    up to the 80th percentile of OD within ``reach`` radians of that cone (the
    denser, bluer tissue the paler half lacks).
    """
    u, norm = _unit(od)
    sel = tissue & (norm > 0.15)
    if sel.sum() < 50:
        return None
    lo, mid, hi = np.percentile(norm[sel], [5, 50, 80])
    ref = sel & (norm >= lo) & (norm <= mid)
    if ref.sum() < 50:
        ref = sel
    cone = _fit_cone(u[ref].astype(np.float64))
    near = sel & (norm <= hi) & (cone.distance(u) <= reach)
    if near.sum() >= 50:
        cone = _fit_cone(u[near].astype(np.float64))
    return cone


def _main_cluster(angle: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The angles of the contiguous run of 1° bins around the median (no gap of 3°).

    Tissue's hues form one continuous run; pale ink (a pen stroke's rim, diluted ink)
    that slips into the fit forms a separate one, which must not widen the cone.  A bin
    is empty below 0.1 % of the pixels.
    """
    width = math.radians(1.0)
    bins = np.floor(angle / width).astype(np.int64)
    first = int(bins.min())
    counts = np.bincount(bins - first)
    occupied = counts >= max(1, 0.001 * angle.size)
    centre = int(np.floor(np.median(angle) / width)) - first
    lo = hi = centre
    gap = 3
    while lo > 0 and occupied[max(0, lo - gap) : lo].any():
        lo -= 1
    while hi < counts.size - 1 and occupied[hi + 1 : hi + 1 + gap].any():
        hi += 1
    keep = (bins - first >= lo) & (bins - first <= hi)
    out: npt.NDArray[np.float64] = angle[keep]
    return out


def _fit_cone(vecs: npt.NDArray[np.float64]) -> _StainCone:
    """The plane and angular span of unit OD vectors ``(n, 3)``."""
    _, _, vt = np.linalg.svd(vecs, full_matrices=False)
    normal = vt[2] / np.linalg.norm(vt[2])
    mean = vecs.mean(axis=0)
    e1 = mean - (mean @ normal) * normal
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    angle = np.arctan2(vecs @ e2, vecs @ e1)
    a_lo, a_hi = np.percentile(_main_cluster(angle), [1, 99])
    plane = float(np.percentile(np.abs(vecs @ normal), 99))
    return _StainCone(
        normal=normal,
        e1=e1,
        e2=e2,
        angle_lo=float(a_lo),
        angle_hi=float(a_hi),
        plane_tol=plane,
    )


def _keep_large(mask: npt.NDArray[np.bool_], min_px: float) -> npt.NDArray[np.bool_]:
    return _remove_small(np.ascontiguousarray(mask), min_px)


def _dilate(mask: npt.NDArray[np.bool_], diameter_px: float) -> npt.NDArray[np.bool_]:
    kernel = _ellipse(diameter_px)
    if kernel is None or not mask.any():
        return mask
    out: npt.NDArray[np.bool_] = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return out
