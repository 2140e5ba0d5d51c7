"""The fine scale of a synthetic slide: pixels of any level-0 region, tile by tile.

A region is drawn in optical density (Beer–Lambert): hematoxylin and eosin
concentration maps are the periodic cell atlases of :mod:`._atlas` (sampled at
global coordinates plus a per-slide offset, by slicing) blended with weights
from the layout fields (bilinearly interpolated), plus collagen fibres,
capillaries, glands and keratin pearls, then mixed with the slide's stain
vectors, ``RGB = glass * exp(-(c_H * v_H + c_E * v_E))``.  Weights that the
layout shows to be constant over a region are scalars, so a tile pays only
for the structures it shows.

Every value is a function of global level-0 coordinates, the layout and the
seed, and each region is drawn with a margin that covers every blur, so a
region drawn in one call equals the same region assembled from sub-regions.
"""

from __future__ import annotations

import functools
import math
from typing import Any, TypeAlias, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.synthetic._atlas import ATLAS_KINDS, N_VARIANTS, PAD, atlas, atlas_size
from cervixwsi.synthetic._layout import F, SlideLayout
from cervixwsi.synthetic._noise import FloatArray, hash_uniform, stream_key
from cervixwsi.synthetic._spec import SyntheticSlideSpec, drawn_difficulty

__all__ = ["dust_mask", "render"]

_T = TypeVar("_T", bound=np.generic)
#: A per-pixel weight, or a scalar where it is constant over the region.
Weight: TypeAlias = "npt.NDArray[Any] | float"

_RAGGED = 6.0  # amplitude (px) of the fine raggedness of tissue borders
_OUT_OF_FOCUS_SIGMA = 4.0  # px, Gaussian blur of the "blur" artifact
_NUCLEUS_EDGE_UM = 0.18  # µm, Gaussian blur of nucleus and cell-border edges
_DUST_SIGMA = 0.8  # px


def _margin(spec: SyntheticSlideSpec) -> int:
    """Level-0 px drawn around a region: the sum of the radii of the blurs applied in turn.

    cv2 cuts a float Gaussian kernel at 4 sigma; a pixel of the region then only
    sees pixels that were themselves computed from complete neighbourhoods.
    Only the blurs the spec can apply count (the out-of-focus blur with the
    ``"blur"`` artifact, the dust blur with ``"dust"``).
    """
    radii = [_NUCLEUS_EDGE_UM / spec.mpp]
    if "blur" in spec.artifacts:
        radii.append(_OUT_OF_FOCUS_SIGMA)
    if "dust" in spec.artifacts:
        radii.append(_DUST_SIGMA)
    return sum(math.ceil(4.0 * s) + 1 for s in radii)


def _smoothstep(x: FloatArray) -> FloatArray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sample_points(
    layout: SlideLayout, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """Layout fields ``(n, F.N)``, bilinearly interpolated at level-0 points."""
    d = layout.spec.mask_downsample
    rows, cols = layout.fields.shape[:2]
    u = np.clip((x + 0.5) / d - 0.5, 0.0, cols - 1.0)
    v = np.clip((y + 0.5) / d - 0.5, 0.0, rows - 1.0)
    c0 = np.minimum(np.floor(u).astype(np.intp), cols - 2 if cols > 1 else 0)
    r0 = np.minimum(np.floor(v).astype(np.intp), rows - 2 if rows > 1 else 0)
    c1, r1 = np.minimum(c0 + 1, cols - 1), np.minimum(r0 + 1, rows - 1)
    fu = (u - c0)[:, None].astype(np.float32)
    fv = (v - r0)[:, None].astype(np.float32)
    arr = layout.fields
    top = arr[r0, c0] * (1 - fu) + arr[r0, c1] * fu
    bottom = arr[r1, c0] * (1 - fu) + arr[r1, c1] * fu
    return np.asarray(top * (1 - fv) + bottom * fv, dtype=np.float32)


def _gradients(
    layout: SlideLayout, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """``(n, 4)``: d(psi)/dx, d(psi)/dy, d(sdf)/dx, d(sdf)/dy at level-0 points.

    Central differences over one mask pixel (only directions are used).
    """
    d = float(layout.spec.mask_downsample)
    dx = sample_points(layout, x + d, y) - sample_points(layout, x - d, y)
    dy = sample_points(layout, x, y + d) - sample_points(layout, x, y - d)
    return np.stack([dx[:, F.PSI], dy[:, F.PSI], dx[:, F.SDF], dy[:, F.SDF]], axis=1)


class _Canvas:
    """Float layers of one region being drawn, with its global origin."""

    def __init__(self, x0: int, y0: int, w: int, h: int) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.nuclei = np.zeros((h, w), np.float32)  # hematoxylin of endothelial nuclei
        self.lumen: FloatArray | None = None  # 1 inside capillary lumens (made on demand)
        self.blood: FloatArray | None = None  # red blood cells


# Red blood cells: bright red-orange, as measured on scans (RGB about 235, 95, 105).
_RBC = np.array([0.027, 0.745, 0.666], np.float32)
_RBC_RADIUS_UM = 3.75  # 7.5 µm across, as red cells are (7-8 µm)
_VESSEL_SPACING_UM = 90.0


def _draw_vessels(layout: SlideLayout, canvas: _Canvas) -> None:
    """Capillaries in the stroma: lumens (erasing stroma nuclei), endothelium, red cells."""
    spec = layout.spec
    px_per_um = 1.0 / spec.mpp
    s = _VESSEL_SPACING_UM * px_per_um
    reach = 20.0 * px_per_um
    i0, i1 = math.floor((canvas.x0 - reach) / s), math.floor((canvas.x0 + canvas.w + reach) / s)
    j0, j1 = math.floor((canvas.y0 - reach) / s), math.floor((canvas.y0 + canvas.h + reach) / s)
    jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
    ii, jj = ii.ravel().astype(np.int64), jj.ravel().astype(np.int64)
    r = hash_uniform(stream_key(spec.seed, 110), ii, jj, 8)
    x16 = np.floor((ii + 0.15 + 0.7 * r[:, 0]) * s * 16.0).astype(np.int64)
    y16 = np.floor((jj + 0.15 + 0.7 * r[:, 1]) * s * 16.0).astype(np.int64)
    f = sample_points(layout, x16 / 16.0, y16 / 16.0)
    keep = (
        (f[:, F.SDF] * spec.mpp > 25.0)
        & (f[:, F.DEPTH] > 1.3)
        & (f[:, F.TUMOR] < 0.2)
        & (r[:, 2] < 0.45)
    )
    if not keep.any():
        return
    if canvas.lumen is None or canvas.blood is None:
        canvas.lumen = np.zeros((canvas.h, canvas.w), np.float32)
        canvas.blood = np.zeros((canvas.h, canvas.w), np.float32)
    um16 = 16.0 * px_per_um
    g = _gradients(layout, x16[keep] / 16.0, y16[keep] / 16.0)
    along = np.degrees(np.arctan2(g[:, 1], g[:, 0])) + 90.0  # elongated along the fibres
    cells = hash_uniform(stream_key(spec.seed, 111), ii[keep], jj[keep], 26)
    for k, u in enumerate(r[keep]):
        x = int(x16[keep][k]) - canvas.x0 * 16 - 8
        y = int(y16[keep][k]) - canvas.y0 * 16 - 8
        a = 5.0 + 9.0 * u[3]
        b = a * (0.35 + 0.55 * u[4])
        ang = float(along[k]) + 30.0 * (u[5] - 0.5)
        axes = (round(a * um16), round(b * um16))
        cv2.ellipse(canvas.lumen, (x, y), axes, ang, 0, 360, 1.0, -1, cv2.LINE_8, 4)
        c = cells[k]
        cos_t, sin_t = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        if u[6] < 0.75:  # red cells in the lumen
            r16 = round(_RBC_RADIUS_UM * um16)
            for m in range(min(12, max(1, round(a * b / 14.0)))):
                rho, phi = 0.75 * math.sqrt(c[2 * m]), 6.2832 * c[2 * m + 1]
                ex, ey = rho * a * math.cos(phi), rho * b * math.sin(phi)
                px = x + round((ex * cos_t - ey * sin_t) * um16)
                py = y + round((ex * sin_t + ey * cos_t) * um16)
                cv2.circle(canvas.blood, (px, py), r16, 1.0, -1, cv2.LINE_8, 4)
        for m in range(2):  # flat endothelial nuclei on the wall
            phi = 6.2832 * (c[24] + 0.5 * m)
            ex, ey = (a + 0.8) * math.cos(phi), (b + 0.8) * math.sin(phi)
            px = x + round((ex * cos_t - ey * sin_t) * um16)
            py = y + round((ex * sin_t + ey * cos_t) * um16)
            tangent = ang + math.degrees(math.atan2(b * math.cos(phi), -a * math.sin(phi)))
            cv2.ellipse(
                canvas.nuclei,
                (px, py),
                (round(4.0 * um16), round(1.1 * um16)),
                tangent,
                0,
                360,
                1.3,
                -1,
                cv2.LINE_8,
                4,
            )


def _pearls(
    layout: SlideLayout, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], grain: FloatArray
) -> FloatArray | None:
    """Eosin of keratin pearls (concentric whorls) over the grid ``xs`` x ``ys``."""
    if not layout.pearls.size:
        return None
    px, py, pr = layout.pearls.T
    hit = (px + pr > xs[0]) & (px - pr < xs[-1]) & (py + pr > ys[0]) & (py - pr < ys[-1])
    if not hit.any():
        return None
    period = 3.5 / layout.spec.mpp
    out = np.zeros((ys.size, xs.size), np.float32)
    for cx, cy, rad in layout.pearls[hit]:
        c0, c1 = np.searchsorted(xs, [cx - rad, cx + rad])
        r0, r1 = np.searchsorted(ys, [cy - rad, cy + rad])
        dx = (xs[c0:c1] - cx)[None, :]
        dy = (ys[r0:r1] - cy)[:, None]
        dist = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        swirl = dist + 0.05 * rad * np.sin(3.0 * theta + dist / rad * 4.0)
        rings = 0.8 + 0.2 * np.cos(2.0 * np.pi * swirl / period)
        body = _smoothstep((1.0 - dist / rad) / 0.25)
        sub = out[r0:r1, c0:c1]
        np.maximum(sub, (rings * body).astype(np.float32), out=sub)
    return out * (0.9 + 0.1 * grain)


def render(layout: SlideLayout, x: int, y: int, width: int, height: int) -> npt.NDArray[np.uint8]:
    """The RGB pixels of the level-0 region ``[x, x + width) x [y, y + height)``."""
    spec, tex, stain = layout.spec, layout.textures, layout.stain
    xs = np.arange(x, x + width, dtype=np.int64)
    ys = np.arange(y, y + height, dtype=np.int64)
    m = _margin(spec)
    x0, y0, w, h = x - m, y - m, width + 2 * m, height + 2 * m
    d = spec.mask_downsample
    rows, cols = layout.fields.shape[:2]
    r0, r1 = max(0, y0 // d - 2), min(rows, (y0 + h) // d + 3)
    c0, c1 = max(0, x0 // d - 2), min(cols, (x0 + w) // d + 3)
    window = layout.fields[r0:r1, c0:c1, F.SDF]
    has_tissue = window.size > 0 and float(window.max()) > -(_RAGGED + 2.0)
    art = layout.artifact_fields[r0:r1, c0:c1]
    has_artifact = art.size > 0 and float(art.max()) > 0.0
    od: FloatArray | None = None
    if has_tissue or has_artifact:
        region = _Region(layout, x0, y0, w, h, with_artifacts=has_artifact)
        od = np.zeros((h, w, 3), np.float32)
        if has_tissue:
            od += _tissue_od(layout, region)
        if region.art is not None:
            ink = _smoothstep((region.art[..., F.PEN] - 0.4) / 0.2) * (0.92 + 0.08 * region.ragged)
            od += ink[..., None] * stain.ink
    if "dust" in spec.artifacts:
        dust = _dust(layout, x0, y0, w, h)
        if dust is not None:
            if od is None:  # dust on bare glass: grey, the same density in R, G and B
                od = np.repeat(dust[..., None], 3, axis=2)
            else:
                od += dust[..., None]
    # Glass with scanner noise is periodic over the texture size.
    out: npt.NDArray[np.uint8]
    if od is None:
        out = _periodic(layout.glass_u8, x, y, width, height).copy()
    else:
        transmitted = cv2.exp(np.ascontiguousarray(-od[m : m + height, m : m + width]))
        rgb = _periodic(layout.glass, x, y, width, height) * transmitted
        rgb += _periodic(tex.scanner_noise, x, y, width, height)
        rgb += 0.5
        out = np.clip(rgb, 0.0, 255.0, out=rgb).astype(np.uint8)
    out[(ys < 0) | (ys >= spec.height), :] = 255
    out[:, (xs < 0) | (xs >= spec.width)] = 255
    return out


def _periodic(array: npt.NDArray[_T], x: int, y: int, width: int, height: int) -> npt.NDArray[_T]:
    """The region of an image repeated periodically over the plane (a view when it can)."""
    n_rows, n_cols = array.shape[:2]
    x0, y0 = x % n_cols, y % n_rows
    if x0 + width <= n_cols and y0 + height <= n_rows:
        return array[y0 : y0 + height, x0 : x0 + width]
    out = np.empty((height, width, *array.shape[2:]), array.dtype)
    r = 0
    while r < height:  # copy whole blocks: much faster than fancy indexing
        ry = (y0 + r) % n_rows
        nr = min(height - r, n_rows - ry)
        c = 0
        while c < width:
            cx = (x0 + c) % n_cols
            nc = min(width - c, n_cols - cx)
            out[r : r + nr, c : c + nc] = array[ry : ry + nr, cx : cx + nc]
            c += nc
        r += nr
    return out


class _Region:
    """The layout fields interpolated over a region (with its margin)."""

    def __init__(
        self, layout: SlideLayout, x0: int, y0: int, w: int, h: int, *, with_artifacts: bool
    ) -> None:
        d = layout.spec.mask_downsample
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xs = np.arange(x0, x0 + w, dtype=np.float64)
        self.ys = np.arange(y0, y0 + h, dtype=np.float64)
        u = ((self.xs + 0.5) / d - 0.5).astype(np.float32)
        v = ((self.ys + 0.5) / d - 0.5).astype(np.float32)
        # Remap a window of the layout (float32 coordinates minus the window's integer
        # origin are exact, so the values equal those of the whole layout), 4 channels
        # at a time (cv2.remap is much slower with more); the mimic channels only
        # where the window has them.
        rows, cols = layout.fields.shape[:2]
        c0 = min(max(0, math.floor(float(u[0])) - 1), cols - 1)
        c1 = max(c0 + 1, min(cols, math.floor(float(u[-1])) + 3))
        r0 = min(max(0, math.floor(float(v[0])) - 1), rows - 1)
        r1 = max(r0 + 1, min(rows, math.floor(float(v[-1])) + 3))
        self.window = (slice(r0, r1), slice(c0, c1))
        self._mx = np.ascontiguousarray(np.broadcast_to(u[None, :] - np.float32(c0), (h, w)))
        self._my = np.ascontiguousarray(np.broadcast_to(v[:, None] - np.float32(r0), (h, w)))
        win = layout.fields[self.window]
        self.sdf, self.depth, self.tumor, self.psi = cv2.split(self._remap(win[..., : F.PSI + 1]))
        self.mimic: FloatArray | float = 0.0
        self.lymph: FloatArray | float = 0.0
        extra = win[..., F.MIMIC : F.LYMPH + 1]
        if extra.size and float(extra.max()) > 0.0:
            self.mimic, self.lymph = cv2.split(self._remap(extra))
        self.art: FloatArray | None = None  # None: no artifact reaches the region
        if with_artifacts:
            self.art = self._remap(layout.artifact_fields[self.window])
        tex = layout.textures
        self.ragged = tex.sample_grid(tex.low, self.xs / 3.0, self.ys / 3.0)

    def _remap(self, window: FloatArray) -> FloatArray:
        return np.asarray(
            cv2.remap(
                np.ascontiguousarray(window),
                self._mx,
                self._my,
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            ),
            np.float32,
        )


@functools.lru_cache(maxsize=64)
def _atlas_offsets(seed: int, size: int) -> list[tuple[int, int]]:
    """Per-kind integer offsets of a slide into the atlases (from its seed)."""
    ids = np.arange(len(ATLAS_KINDS), dtype=np.int64)
    u = hash_uniform(stream_key(seed, 6), ids, np.zeros_like(ids), 2)
    return [(int(a * size), int(b * size)) for a, b in u]


def _atlas_region(
    layout: SlideLayout, kind: str, difficulty: float, region: _Region
) -> tuple[FloatArray, FloatArray]:
    """Hematoxylin and eosin of atlas ``kind`` over the region (periodic, offset per slide)."""
    spec = layout.spec
    arr = atlas(kind, spec.mpp, difficulty, spec.seed % N_VARIANTS)
    size = atlas_size(spec.mpp)
    ox, oy = _atlas_offsets(spec.seed, size)[ATLAS_KINDS.index(kind)]
    ax = (region.x0 + ox) % size
    ay = (region.y0 + oy) % size
    if region.w <= PAD and region.h <= PAD:
        sub = arr[ay : ay + region.h, ax : ax + region.w]
    else:
        sub = _periodic(arr[:size, :size], ax, ay, region.w, region.h)
    return sub[..., 0], sub[..., 1]


def _layer_weights(depth: FloatArray, window: FloatArray) -> list[tuple[str, Weight]]:
    """Weights of the epithelial layers by depth (0 at the surface, 1 at the basal row).

    A step that is 0 or 1 all over the layout ``window`` is a scalar.
    """
    lo = float(np.clip(window[..., F.DEPTH].min(), 0.0, 1.0))
    hi = float(np.clip(window[..., F.DEPTH].max(), 0.0, 1.0))
    dep = np.clip(depth, 0.0, 1.0)
    steps: list[Weight] = []
    for edge in (0.25, 0.62, 0.93):
        if hi <= edge - 0.03:
            steps.append(0.0)
        elif lo >= edge + 0.03:
            steps.append(1.0)
        else:
            steps.append(_smoothstep((dep - edge) / 0.05 + 0.5))
    return [
        ("superficial", 1.0 - steps[0]),
        ("intermediate", steps[0] - steps[1]),
        ("parabasal", steps[1] - steps[2]),
        ("basal", steps[2]),
    ]


def _any(weight: Weight) -> bool:
    """Whether a weight (array or scalar) is anywhere above 0."""
    return float(np.max(weight)) > 0.0


def _nest_weight(
    field: Weight, window: FloatArray, ragged: FloatArray, low: tuple[float, float]
) -> Weight:
    """Weight of a nest-like field (tumor, mimic): a ramp around 0.5, ragged."""
    if not window.size or float(window.max()) + 0.03 * low[1] < 0.45:
        return 0.0
    return np.clip((field - 0.5 + 0.03 * ragged) * 12.5 + 0.5, 0.0, 1.0)


def _tissue_od(layout: SlideLayout, region: _Region) -> FloatArray:
    spec, tex, stain = layout.spec, layout.textures, layout.stain
    mpp = spec.mpp
    hard = drawn_difficulty(spec)
    h, w = region.h, region.w
    xs, ys = region.xs, region.ys
    grain = _periodic(tex.grain, region.x0, region.y0, w, h)
    ragged = region.ragged
    win = layout.fields[region.window]
    low = tex.low_range

    # Each weight is skipped (a scalar) where the window of the layout shows that it
    # is constant over the region, with the texture's extremes: the same pixels as
    # computing it.
    alpha: Weight = 1.0
    if float(win[..., F.SDF].min()) + _RAGGED * low[0] < 1.1:
        alpha = np.clip((region.sdf + _RAGGED * ragged) * 0.5 + 0.5, 0.0, 1.0)
    w_tumor = _nest_weight(region.tumor, win[..., F.TUMOR], ragged, low)
    w_mimic = _nest_weight(region.mimic, win[..., F.MIMIC], ragged, low) * (1.0 - w_tumor)
    w_epi: Weight = 0.0
    if float(win[..., F.DEPTH].min()) < 1.04:
        w_epi = np.clip((1.0 - region.depth) * 16.0 + 0.5, 0.0, 1.0) * (1.0 - w_tumor - w_mimic)
    w_stroma: Weight = 1.0 - w_tumor - w_mimic - w_epi
    w_lymph: Weight = 0.0
    if float(win[..., F.LYMPH].max()) > 0.3:
        w_lymph = np.clip((region.lymph - 0.3) / 0.4, 0.0, 1.0) * w_stroma
        w_stroma = w_stroma - w_lymph

    # stroma: wavy collagen fibres along the streamlines of psi, loose and dense areas
    along_x = np.mod(0.6 * xs * (mpp / 2.0), tex.size).astype(np.float32)
    along_y = np.mod(0.8 * ys * (mpp / 2.0), tex.size).astype(np.float32)
    along = along_x[None, :] + along_y[:, None]
    along = np.where(along >= tex.size, along - tex.size, along)
    across = region.psi * np.float32(mpp / 0.3) + 2.0 * ragged
    fibre = tex.sample(tex.fibre, along, across)
    breaks = tex.sample_grid(tex.low, xs * (mpp / 1.5), ys * (mpp / 1.5))
    density = np.clip(
        0.8 + 0.2 * tex.sample_grid(tex.low, xs * (mpp / 6.0), ys * (mpp / 6.0)), 0.45, 1.1
    )
    e_stroma = density * np.clip(0.6 + 0.35 * fibre + 0.15 * breaks, 0.08, 1.3) * 0.95
    h_stroma = 0.05 + 0.03 * grain
    hema = np.zeros((h, w), np.float32)
    eosin = np.zeros((h, w), np.float32)
    canvas: _Canvas | None = None
    if _any(w_stroma):
        sh, _ = _atlas_region(layout, "stroma", 0.0, region)
        canvas = _Canvas(region.x0, region.y0, w, h)
        _draw_vessels(layout, canvas)
        h_stroma = h_stroma + sh
        sigma = _NUCLEUS_EDGE_UM / mpp
        if canvas.lumen is not None and canvas.blood is not None:
            # capillary lumens are empty, but for red cells and the endothelium
            open_ = 1.0 - 0.85 * cv2.GaussianBlur(canvas.lumen, (0, 0), sigma)
            e_stroma = e_stroma * open_
            h_stroma = h_stroma * open_ + cv2.GaussianBlur(canvas.nuclei, (0, 0), sigma)
        hema += w_stroma * h_stroma
        eosin += w_stroma * e_stroma * (1.0 - 0.25 * np.minimum(sh, 1.0))

    parts: list[tuple[str, float, Weight]] = [
        ("tumor", hard, w_tumor),
        ("mimic", 0.0, w_mimic),
        ("lymphoid", 0.0, w_lymph),
    ]
    if _any(w_epi):
        parts += [(kind, 0.0, wk * w_epi) for kind, wk in _layer_weights(region.depth, win)]
    for kind, difficulty, weight in parts:
        if not _any(weight):
            continue
        ah, ae = _atlas_region(layout, kind, difficulty, region)
        if kind == "tumor" and layout.pearls.size:
            pearl = _pearls(layout, xs, ys, grain)
            if pearl is not None:  # keratin pearls: laminated keratin, no nuclei
                ah = ah * (1.0 - pearl) + 0.05 * pearl
                ae = ae * (1.0 - pearl) + pearl * 1.35
        hema += weight * ah
        eosin += weight * ae

    glands = _glands(layout, xs, ys, grain)
    if glands is not None:  # a gland replaces the stroma it lies in
        cover, lumen, gh, ge = glands
        keep = 1.0 - cover * w_stroma
        hema = np.asarray(hema * keep + gh * w_stroma, np.float32)
        eosin = np.asarray(eosin * keep + ge * w_stroma, np.float32)
        w_stroma = np.asarray(w_stroma * (1.0 - lumen), np.float32)
    from cervixwsi.synthetic._mimics import draw_mimics  # necrosis, basaloid islands, crush

    hema, eosin, w_stroma = draw_mimics(layout, region, hema, eosin, w_tumor, w_stroma, grain)

    scale = alpha
    if region.art is not None:  # a fold doubles the tissue
        scale = alpha * (1.0 + 0.9 * _smoothstep((region.art[..., F.FOLD] - 0.4) / 0.2))
    hema *= scale * np.float32(stain.h_scale)
    eosin *= scale * np.float32(stain.e_scale)
    od = cv2.merge([hema * stain.hematoxylin[i] + eosin * stain.eosin[i] for i in range(3)])
    if canvas is not None and canvas.blood is not None:
        blood = cv2.GaussianBlur(canvas.blood, (0, 0), _NUCLEUS_EDGE_UM / mpp)
        od += (blood * (1.05 * alpha * w_stroma))[..., None] * _RBC
    if region.art is not None:
        b = region.art[..., F.BLUR]
        if float(b.max()) > 0.0:
            soft = cv2.GaussianBlur(od, (0, 0), _OUT_OF_FOCUS_SIGMA)
            od = od * (1.0 - b[..., None]) + soft * b[..., None]
    return np.asarray(od, np.float32)


def _glands(
    layout: SlideLayout,
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    grain: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None:
    """Endocervical glands: one row of columnar mucinous cells with basal nuclei around a lumen.

    Returns ``(cover, lumen, hema, eosin)`` (``cover`` 1 over lumen and lining),
    or None when no gland reaches the region.
    """
    if not layout.glands.size:
        return None
    um = 1.0 / layout.spec.mpp
    lining = 20.0 * um
    gx, gy, ga = layout.glands[:, 0], layout.glands[:, 1], layout.glands[:, 2]
    reach = ga + 2.0 * lining
    hit = (
        (gx + reach > xs[0]) & (gx - reach < xs[-1]) & (gy + reach > ys[0]) & (gy - reach < ys[-1])
    )
    if not hit.any():
        return None
    h, w = ys.size, xs.size
    cover = np.zeros((h, w), np.float32)
    lumen = np.zeros((h, w), np.float32)
    hema = np.zeros((h, w), np.float32)
    eos = np.zeros((h, w), np.float32)
    cell_w = 5.0 * um
    for cx, cy, a, b, ang in layout.glands[hit]:
        c, s = math.cos(ang), math.sin(ang)
        dx = (xs - cx)[None, :].astype(np.float32)
        dy = (ys - cy)[:, None].astype(np.float32)
        ex = (dx * c + dy * s) / a
        ey = (dy * c - dx * s) / b
        q = np.sqrt(ex * ex + ey * ey)
        t = ((q - 1.0) * math.sqrt(a * b)).astype(np.float32)  # px from the lumen outwards
        theta = np.arctan2(ey, ex)
        n_cells = max(8, round(2.0 * math.pi * math.sqrt(a * b) / cell_w))
        phi = (theta / (2.0 * math.pi) + 0.5) * n_cells
        frac = (phi - np.floor(phi)).astype(np.float32)
        in_lining = np.clip(t + 0.5, 0.0, 1.0) * np.clip(lining - t + 0.5, 0.0, 1.0)
        border = np.clip(1.0 - np.minimum(frac, 1.0 - frac) * cell_w / (0.7 * um), 0.0, 1.0)
        nuc_r = ((frac - 0.5) * cell_w / (1.7 * um)) ** 2 + ((t - 0.8 * lining) / (4.0 * um)) ** 2
        nucleus = np.clip((1.0 - nuc_r) * 2.0 * um + 0.5, 0.0, 1.0) * in_lining
        open_ = np.clip(-t + 0.5, 0.0, 1.0)
        np.maximum(cover, np.clip(lining - t + 0.5, 0.0, 1.0), out=cover)
        np.maximum(lumen, open_, out=lumen)
        cyto = in_lining * (1.0 - nucleus)
        hema += cyto * 0.16 + nucleus * (1.35 + 0.3 * grain) + open_ * 0.03
        eos += cyto * (0.12 + 0.35 * border) + open_ * 0.02
    return cover, lumen, hema, eos


def _dust_specks(
    layout: SlideLayout, x0: float, y0: float, x1: float, y1: float
) -> npt.NDArray[np.float64]:
    """Dust specks that can touch the level-0 box ``[x0, x1) x [y0, y1)``.

    ``(n, 6)`` rows ``(x16, y16, a16, b16, angle, od)``: the speck's centre and
    semi-axes in level-0 pixels times 16 (cv2 fixed point, shift 4, before the
    half-pixel shift of the drawing), its angle in degrees and its optical density.
    """
    spec = layout.spec
    s = 250.0 / spec.mpp  # one candidate speck per 250 µm cell
    reach = 20.0 / spec.mpp
    i0, i1 = math.floor((x0 - reach) / s), math.floor((x1 + reach) / s)
    j0, j1 = math.floor((y0 - reach) / s), math.floor((y1 + reach) / s)
    jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
    ii, jj = ii.ravel().astype(np.int64), jj.ravel().astype(np.int64)
    u = hash_uniform(stream_key(spec.seed, 200), ii, jj, 6)
    keep = u[:, 0] < 0.35
    ii, jj, u = ii[keep], jj[keep], u[keep]
    cx = np.floor((ii + u[:, 1]) * s * 16.0).astype(np.int64)
    cy = np.floor((jj + u[:, 2]) * s * 16.0).astype(np.int64)
    a = np.round((1.5 + 8.0 * u[:, 3] ** 2) / spec.mpp * 16.0).astype(np.int64)
    b = np.maximum(8, np.round(a * (0.4 + 0.6 * u[:, 4]))).astype(np.int64)
    return np.stack(
        [cx, cy, a, b, 360.0 * u[:, 5], 1.1 + 0.6 * u[:, 4]], axis=1, dtype=np.float64
    ).reshape(-1, 6)


def _dust(layout: SlideLayout, x0: int, y0: int, w: int, h: int) -> FloatArray | None:
    """Optical density of dust specks (on glass and tissue alike), or None when none."""
    specks = _dust_specks(layout, x0, y0, x0 + w, y0 + h)
    if not specks.size:
        return None
    out = np.zeros((h, w), np.float32)
    for x, y, ax, bx, ang, val in specks.tolist():
        centre = (int(x) - x0 * 16 - 8, int(y) - y0 * 16 - 8)
        cv2.ellipse(out, centre, (int(ax), int(bx)), ang, 0, 360, val, -1, cv2.LINE_8, 4)
    return np.asarray(cv2.GaussianBlur(out, (0, 0), _DUST_SIGMA))


def dust_mask(layout: SlideLayout) -> npt.NDArray[np.bool_]:
    """Mask pixels (at ``spec.mask_downsample``) that a dust speck touches.

    Each speck is drawn filled on the mask grid (its level-0 ellipse scaled by
    ``1 / mask_downsample``); a speck smaller than a mask pixel marks the pixel
    under its centre.
    """
    spec = layout.spec
    rows, cols = layout.fields.shape[:2]
    out = np.zeros((rows, cols), np.uint8)
    d = float(spec.mask_downsample)
    for x, y, ax, bx, ang, _ in _dust_specks(layout, 0, 0, spec.width, spec.height).tolist():
        centre = (round((x / 16.0 / d - 0.5) * 16.0), round((y / 16.0 / d - 0.5) * 16.0))
        axes = (round(ax / d), round(bx / d))
        cv2.ellipse(out, centre, axes, ang, 0, 360, 1, -1, cv2.LINE_8, 4)
    mask: npt.NDArray[np.bool_] = out > 0
    return mask
