"""The fine scale of a synthetic slide: pixels of any level-0 region, tile by tile.

A region is drawn in optical density (Beer–Lambert): hematoxylin and eosin
concentration maps are built from the layout fields (bilinearly interpolated)
and from nuclei placed on global jittered grids, then mixed with the slide's
stain vectors, ``RGB = glass * exp(-(c_H * v_H + c_E * v_E))``.

Every value is a function of global level-0 coordinates, the layout and the
seed, and each region is drawn with a margin that covers every blur, so a
region drawn in one call equals the same region assembled from sub-regions.
"""

from __future__ import annotations

import math
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.synthetic._layout import F, SlideLayout
from cervixwsi.synthetic._noise import FloatArray, hash_uniform, stream_key

__all__ = ["dust_mask", "render"]

_T = TypeVar("_T", bound=np.generic)

_RAGGED = 6.0  # amplitude (px) of the fine raggedness of tissue borders
_OUT_OF_FOCUS_SIGMA = 4.0  # px, Gaussian blur of the "blur" artifact
_NUCLEUS_EDGE_UM = 0.18  # µm, Gaussian blur of nucleus and cell-border edges
_DUST_SIGMA = 0.8  # px


def _margin(mpp: float) -> int:
    """Level-0 px drawn around a region: the sum of the radii of the blurs applied in turn.

    cv2 cuts a float Gaussian kernel at 4 sigma; a pixel of the region then only
    sees pixels that were themselves computed from complete neighbourhoods.
    """
    radii = (_OUT_OF_FOCUS_SIGMA, _NUCLEUS_EDGE_UM / mpp, _DUST_SIGMA)
    return sum(math.ceil(4.0 * s) + 1 for s in radii)


# Nucleus kinds (drawn in this order, so crowded tumor nuclei lie on top).
_STROMA, _EPITHELIUM, _TUMOR = 0, 1, 2
_SPACING_UM = {_STROMA: 18.0, _EPITHELIUM: 7.0, _TUMOR: 11.0}


def _epi_density(depth: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Fraction of epithelial grid cells holding a nucleus: sparse superficial, dense basal."""
    dep = np.asarray(depth, np.float64)
    return np.where(dep > 0.85, 1.0, 0.15 + 0.6 * dep**3)


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
        self.nuclei = np.zeros((h, w), np.float32)  # hematoxylin of nuclei
        self.borders = np.zeros((h, w), np.float32)  # eosin of cell borders
        self.lumen: FloatArray | None = None  # 1 inside capillary lumens (made on demand)
        self.blood: FloatArray | None = None  # red blood cells


# Red blood cells: bright red-orange, as measured on scans (RGB about 235, 95, 105).
_RBC = np.array([0.027, 0.745, 0.666], np.float32)
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
        cv2.ellipse(canvas.nuclei, (x, y), axes, ang, 0, 360, 0.0, -1, cv2.LINE_8, 4)
        c = cells[k]
        cos_t, sin_t = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        if u[6] < 0.75:  # red cells in the lumen
            for m in range(min(12, max(1, round(a * b / 14.0)))):
                rho, phi = 0.75 * math.sqrt(c[2 * m]), 6.2832 * c[2 * m + 1]
                ex, ey = rho * a * math.cos(phi), rho * b * math.sin(phi)
                px = x + round((ex * cos_t - ey * sin_t) * um16)
                py = y + round((ex * sin_t + ey * cos_t) * um16)
                cv2.circle(canvas.blood, (px, py), round(3.4 * um16), 1.0, -1, cv2.LINE_8, 4)
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


def _draw_nuclei(layout: SlideLayout, canvas: _Canvas, kind: int) -> None:
    """Place and draw the nuclei of one kind that can touch the canvas."""
    spec = layout.spec
    px_per_um = 1.0 / spec.mpp
    s = _SPACING_UM[kind] * px_per_um
    reach = 12.0 * px_per_um  # the largest nucleus or cell border radius
    i0 = math.floor((canvas.x0 - reach) / s)
    i1 = math.floor((canvas.x0 + canvas.w + reach) / s)
    j0 = math.floor((canvas.y0 - reach) / s)
    j1 = math.floor((canvas.y0 + canvas.h + reach) / s)
    jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
    ii, jj = ii.ravel().astype(np.int64), jj.ravel().astype(np.int64)
    r = hash_uniform(stream_key(spec.seed, 100 + kind), ii, jj, 8)
    x16 = np.floor((ii + 0.1 + 0.8 * r[:, 0]) * s * 16.0).astype(np.int64)
    y16 = np.floor((jj + 0.1 + 0.8 * r[:, 1]) * s * 16.0).astype(np.int64)
    f = sample_points(layout, x16 / 16.0, y16 / 16.0)
    sdf, depth, tumor = f[:, F.SDF], f[:, F.DEPTH], f[:, F.TUMOR]
    in_tissue = sdf > 0.0
    if kind == _TUMOR:
        keep = in_tissue & (tumor > 0.5)
    elif kind == _EPITHELIUM:
        dep = np.clip(depth, 0.0, 1.0)
        keep = in_tissue & (depth < 1.0) & (tumor < 0.5) & (r[:, 2] < _epi_density(dep))
    else:
        keep = in_tissue & (depth >= 1.0) & (tumor < 0.45) & (r[:, 2] < 0.3)
    if not keep.any():
        return
    u = r[keep]
    cx = x16[keep] - canvas.x0 * 16 - 8  # canvas fixed point (shift 4, pixel centres)
    cy = y16[keep] - canvas.y0 * 16 - 8
    n = u.shape[0]
    border = np.zeros(n)  # eosin of the cell border ring (0: none)
    cell = np.zeros(n)  # cell radius, µm
    flat_cell = np.ones(n)
    second = np.zeros(n, bool)  # a second lobe: irregular outline
    nucleolus = np.zeros(n, bool)
    if kind == _TUMOR:
        a = 4.0 * np.exp(1.1 * (u[:, 3] - 0.5))
        b = a * (0.6 + 0.4 * u[:, 4])
        angle = 360.0 * u[:, 5]
        value = 1.2 + 0.55 * u[:, 6]
        border[:] = 0.22
        cell = 5.6 + 1.2 * u[:, 7]
        flat_cell[:] = 0.9
        second = u[:, 2] < 0.45
        nucleolus = u[:, 7] < 0.5
        if layout.pearls.size:  # no nuclei in a keratin pearl, squeezed ones around it
            px, py, pr = layout.pearls.T
            dx = (x16[keep] / 16.0)[:, None] - px[None, :]
            dy = (y16[keep] / 16.0)[:, None] - py[None, :]
            rel = np.hypot(dx, dy) / pr[None, :]
            k = np.argmin(rel, axis=1)
            near = rel[np.arange(n), k]
            wrap = near < 1.4
            b = np.where(wrap, 0.4 * a, b)
            tangent = np.degrees(np.arctan2(dy[np.arange(n), k], dx[np.arange(n), k])) + 90.0
            angle = np.where(wrap, tangent, angle)
            value = np.where(wrap, 1.6, value)
            inside = near >= 0.85
            u, cx, cy, a, b, angle, value = (v[inside] for v in (u, cx, cy, a, b, angle, value))
            border, cell, flat_cell = border[inside], cell[inside], flat_cell[inside]
            second, nucleolus = second[inside], nucleolus[inside]
    elif kind == _EPITHELIUM:
        dep = np.clip(depth[keep], 0.0, 1.0)
        a = 2.6 + 0.6 * u[:, 3] - 0.5 * (1.0 - dep)
        flat = 0.35 + 0.6 * np.minimum(1.0, dep / 0.45)
        b = a * np.minimum(1.0, flat * (0.85 + 0.15 * u[:, 4]))
        g = _gradients(layout, x16[keep] / 16.0, y16[keep] / 16.0)  # flat along the surface
        angle = np.degrees(np.arctan2(g[:, 3], g[:, 2])) + 90.0 + 40.0 * (u[:, 5] - 0.5) * dep
        value = 0.95 + 0.3 * dep + 0.15 * u[:, 6] + np.where(dep > 0.85, 0.25, 0.0)
        border[:] = 0.15
        cell = np.minimum(0.5 * _SPACING_UM[_EPITHELIUM] / np.sqrt(_epi_density(dep)), 11.0)
        flat_cell = flat
    else:
        g = _gradients(layout, x16[keep] / 16.0, y16[keep] / 16.0)  # along the fibres
        angle = np.degrees(np.arctan2(g[:, 1], g[:, 0])) + 90.0
        lymphocyte = u[:, 3] < 0.12  # small, round, dark; else a fibroblast along the fibres
        a = np.where(lymphocyte, 2.3 + 0.4 * u[:, 4], 4.5 + 2.5 * u[:, 4])
        b = np.where(lymphocyte, a, 1.0 + 0.5 * u[:, 5])
        value = np.where(lymphocyte, 1.8, 1.25 + 0.3 * u[:, 6])

    um16 = 16.0 * px_per_um
    ring_width = max(1, round(0.3 * px_per_um))
    rim_width = max(1, round(0.35 * px_per_um))
    nuc, borders = canvas.nuclei, canvas.borders
    lobe_t = 6.2832 * u[:, 1]
    rows = zip(
        cx.tolist(),
        cy.tolist(),
        np.round(a * um16).astype(int).tolist(),
        np.round(b * um16).astype(int).tolist(),
        angle.tolist(),
        value.tolist(),
        border.tolist(),
        np.round(cell * um16).astype(int).tolist(),
        np.round(cell * flat_cell * um16).astype(int).tolist(),
        second.tolist(),
        nucleolus.tolist(),
        lobe_t.tolist(),
        (6.2832 * u[:, 2]).tolist(),
        strict=True,
    )
    ellipse = cv2.ellipse
    for x, y, ax, bx, ang, val, bord, ca, cb, lobed, nucl, lt, nt in rows:
        if bord:
            ellipse(borders, (x, y), (ca, cb), ang, 0, 360, bord, ring_width, cv2.LINE_8, 4)
        ellipse(nuc, (x, y), (ax, bx), ang, 0, 360, val, -1, cv2.LINE_8, 4)
        if lobed:
            lx, ly = x + round(0.45 * ax * math.cos(lt)), y + round(0.45 * ax * math.sin(lt))
            ellipse(
                nuc,
                (lx, ly),
                (round(0.7 * ax), round(0.6 * bx)),
                ang + 50.0,
                0,
                360,
                val,
                -1,
                cv2.LINE_8,
                4,
            )
        if kind != _STROMA:  # chromatin condensed along the nuclear membrane
            ellipse(nuc, (x, y), (ax, bx), ang, 0, 360, val + 0.35, rim_width, cv2.LINE_8, 4)
        if nucl:  # a prominent nucleolus
            ox, oy = round(0.3 * ax * math.cos(nt)), round(0.3 * bx * math.sin(nt))
            cv2.circle(nuc, (x + ox, y + oy), round(0.7 * um16), val + 0.6, -1, cv2.LINE_8, 4)


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
    m = _margin(spec.mpp)
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
            od = dust[..., None] if od is None else od + dust[..., None]
    # Glass with scanner noise is periodic over the texture size.
    out: npt.NDArray[np.uint8]
    if od is None:
        out = _periodic(layout.glass_u8, x, y, width, height).copy()
    else:
        rgb = _periodic(layout.glass, x, y, width, height) * np.exp(
            -od[m : m + height, m : m + width]
        )
        rgb += 0.8 * _periodic(tex.white, x, y, width, height)[..., None]
        out = np.clip(rgb + 0.5, 0.0, 255.0).astype(np.uint8)
    out[(ys < 0) | (ys >= spec.height), :] = 255
    out[:, (xs < 0) | (xs >= spec.width)] = 255
    return out


def _periodic(array: npt.NDArray[_T], x: int, y: int, width: int, height: int) -> npt.NDArray[_T]:
    """The region of an image repeated periodically over the plane (a view when it can)."""
    n_rows, n_cols = array.shape[:2]
    x0, y0 = x % n_cols, y % n_rows
    if x0 + width <= n_cols and y0 + height <= n_rows:
        return array[y0 : y0 + height, x0 : x0 + width]
    rows = np.arange(y0, y0 + height) % n_rows
    cols = np.arange(x0, x0 + width) % n_cols
    return array[np.ix_(rows, cols)]


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
        mx = np.ascontiguousarray(np.broadcast_to(u[None, :], (h, w)))
        my = np.ascontiguousarray(np.broadcast_to(v[:, None], (h, w)))
        fld = cv2.remap(layout.fields, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self.sdf, self.depth, self.tumor, self.psi = cv2.split(fld)
        self.art: FloatArray | None = None  # None: no artifact reaches the region
        if with_artifacts:
            self.art = cv2.remap(
                layout.artifact_fields, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        tex = layout.textures
        self.ragged = tex.sample_grid(tex.low, self.xs / 3.0, self.ys / 3.0)


def _tissue_od(layout: SlideLayout, region: _Region) -> FloatArray:
    spec, tex, stain = layout.spec, layout.textures, layout.stain
    mpp = spec.mpp
    h, w = region.h, region.w
    xs, ys = region.xs, region.ys
    grain = tex.lookup(tex.grain, xs.astype(np.int64), ys.astype(np.int64))
    ragged = region.ragged

    alpha = np.clip((region.sdf + _RAGGED * ragged) * 0.5 + 0.5, 0.0, 1.0)
    w_tumor = np.clip((region.tumor - 0.5 + 0.03 * ragged) * 12.5 + 0.5, 0.0, 1.0)
    depth = region.depth
    w_epi = np.clip((1.0 - depth) * 16.0 + 0.5, 0.0, 1.0) * (1.0 - w_tumor)
    w_stroma = 1.0 - w_tumor - w_epi

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

    # squamous epithelium: paler cytoplasm, a little more basophilic towards the basal layer
    dep = np.clip(depth, 0.0, 1.0)
    mottle = tex.sample_grid(tex.grain, xs * (mpp / 0.8), ys * (mpp / 0.8))
    e_epi = (0.5 - 0.12 * dep) * (1.0 + 0.1 * mottle + 0.05 * grain)
    h_epi = 0.05 + 0.12 * dep * dep

    # SCC: amphophilic cytoplasm, keratin pearls
    e_tumor = 0.62 * (1.0 + 0.12 * mottle + 0.05 * grain)
    h_tumor: FloatArray | float = 0.2
    pearl = _pearls(layout, xs, ys, grain)
    if pearl is not None:
        e_tumor = e_tumor * (1.0 - pearl) + pearl * 1.35
        h_tumor = 0.2 * (1.0 - pearl)

    canvas = _Canvas(region.x0, region.y0, w, h)
    _draw_nuclei(layout, canvas, _STROMA)
    _draw_vessels(layout, canvas)
    _draw_nuclei(layout, canvas, _EPITHELIUM)
    _draw_nuclei(layout, canvas, _TUMOR)
    sigma = _NUCLEUS_EDGE_UM / mpp
    nuclei = cv2.GaussianBlur(canvas.nuclei, (0, 0), sigma) * (0.9 + 0.16 * grain)
    borders = cv2.GaussianBlur(canvas.borders, (0, 0), sigma)
    in_nucleus = np.minimum(nuclei, 1.0)

    if canvas.lumen is not None:  # capillary lumens are empty, but for red cells
        open_ = 1.0 - 0.85 * cv2.GaussianBlur(canvas.lumen, (0, 0), sigma)
        e_stroma = e_stroma * open_
        h_stroma = h_stroma * open_
    hema = w_stroma * h_stroma + w_epi * h_epi + w_tumor * h_tumor + nuclei
    eosin = (w_stroma * e_stroma + w_epi * e_epi + w_tumor * e_tumor) * (1.0 - 0.25 * in_nucleus)
    eosin += borders * (w_epi + w_tumor)
    scale = alpha
    if region.art is not None:  # a fold doubles the tissue
        scale = alpha * (1.0 + 0.9 * _smoothstep((region.art[..., F.FOLD] - 0.4) / 0.2))
    hema *= scale * np.float32(stain.h_scale)
    eosin *= scale * np.float32(stain.e_scale)
    od = cv2.merge([hema * stain.hematoxylin[i] + eosin * stain.eosin[i] for i in range(3)])
    if canvas.blood is not None:
        blood = cv2.GaussianBlur(canvas.blood, (0, 0), sigma) * (1.05 * alpha * w_stroma)
        od += blood[..., None] * _RBC
    if region.art is not None:
        b = region.art[..., F.BLUR]
        if float(b.max()) > 0.0:
            soft = cv2.GaussianBlur(od, (0, 0), _OUT_OF_FOCUS_SIGMA)
            od = od * (1.0 - b[..., None]) + soft * b[..., None]
    return np.asarray(od, np.float32)


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
