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

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.synthetic._layout import F, SlideLayout
from cervixwsi.synthetic._noise import FloatArray, hash_uniform, stream_key

__all__ = ["render"]

_MARGIN = 16  # level-0 px drawn around a region, more than any blur radius
_RAGGED = 6.0  # amplitude (px) of the fine raggedness of tissue borders
_OUT_OF_FOCUS_SIGMA = 4.0  # px, Gaussian blur of the "blur" artifact

# Nucleus kinds (drawn in this order, so crowded tumor nuclei lie on top).
_STROMA, _EPITHELIUM, _TUMOR = 0, 1, 2
_SPACING_UM = {_STROMA: 18.0, _EPITHELIUM: 7.0, _TUMOR: 10.0}


def _epi_density(depth: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Fraction of epithelial grid cells holding a nucleus: sparse superficial, dense basal."""
    dep = np.asarray(depth, np.float64)
    return np.where(dep > 0.85, 1.0, 0.15 + 0.6 * dep**3)


def _smoothstep(x: FloatArray) -> FloatArray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sample_points(
    layout: SlideLayout, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Layout fields and gradients, bilinearly interpolated at level-0 points."""
    d = layout.spec.mask_downsample
    rows, cols = layout.fields.shape[:2]
    u = np.clip((x + 0.5) / d - 0.5, 0.0, cols - 1.0)
    v = np.clip((y + 0.5) / d - 0.5, 0.0, rows - 1.0)
    c0 = np.minimum(np.floor(u).astype(np.intp), cols - 2 if cols > 1 else 0)
    r0 = np.minimum(np.floor(v).astype(np.intp), rows - 2 if rows > 1 else 0)
    c1, r1 = np.minimum(c0 + 1, cols - 1), np.minimum(r0 + 1, rows - 1)
    fu = (u - c0)[:, None].astype(np.float32)
    fv = (v - r0)[:, None].astype(np.float32)
    out = []
    for arr in (layout.fields, layout.grads):
        top = arr[r0, c0] * (1 - fu) + arr[r0, c1] * fu
        bottom = arr[r1, c0] * (1 - fu) + arr[r1, c1] * fu
        out.append((top * (1 - fv) + bottom * fv).astype(np.float32))
    return out[0], out[1]


class _Canvas:
    """Float layers of one region being drawn, with its global origin."""

    def __init__(self, x0: int, y0: int, w: int, h: int) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.nuclei = np.zeros((h, w), np.float32)  # hematoxylin of nuclei
        self.borders = np.zeros((h, w), np.float32)  # eosin of cell borders

    def point(self, x16: int, y16: int) -> tuple[int, int]:
        """Canvas point (cv2 fixed point, shift 4) of a global fixed-point position."""
        return (x16 - self.x0 * 16 - 8, y16 - self.y0 * 16 - 8)


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
    f, g = sample_points(layout, x16 / 16.0, y16 / 16.0)
    sdf, depth, tumor = f[:, F.SDF], f[:, F.DEPTH], f[:, F.TUMOR]
    in_tissue = sdf > 0.0
    if kind == _TUMOR:
        keep = in_tissue & (tumor > 0.5)
    elif kind == _EPITHELIUM:
        dep = np.clip(depth, 0.0, 1.0)
        keep = in_tissue & (depth < 1.0) & (tumor < 0.5) & (r[:, 2] < _epi_density(dep))
    else:
        keep = in_tissue & (depth >= 1.0) & (tumor < 0.45) & (r[:, 2] < 0.4 * f[:, F.DENSITY])
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return

    # keratin pearls: no nuclei in the core, flattened nuclei wrapped around it
    pearl_d = np.full(idx.size, np.inf)
    pearl_angle = np.zeros(idx.size)
    if kind == _TUMOR and layout.pearls.size:
        px, py, pr = layout.pearls.T
        dx = x16[idx, None] / 16.0 - px[None, :]
        dy = y16[idx, None] / 16.0 - py[None, :]
        rel = np.hypot(dx, dy) / pr[None, :]
        k = np.argmin(rel, axis=1)
        pearl_d = rel[np.arange(idx.size), k]
        pearl_angle = np.degrees(np.arctan2(dy[np.arange(idx.size), k], dx[np.arange(idx.size), k]))

    um16 = 16.0 * px_per_um
    nuc, borders = canvas.nuclei, canvas.borders
    for n, i in enumerate(idx):
        u = r[i]
        center = canvas.point(int(x16[i]), int(y16[i]))
        if kind == _TUMOR:
            if pearl_d[n] < 0.85:
                continue
            a = 4.3 * math.exp(0.9 * (u[3] - 0.5))
            b = a * (0.6 + 0.4 * u[4])
            angle = 360.0 * u[5]
            value = 1.05 + 0.5 * u[6]
            if pearl_d[n] < 1.4:  # squeezed around a pearl, tangential
                b, angle, value = 0.4 * a, pearl_angle[n] + 90.0, 1.4
            cell = 5.6 + 1.2 * u[7]
            cv2.ellipse(borders, center, (round(cell * um16), round(cell * 0.9 * um16)),
                        angle, 0, 360, 0.12, 1, cv2.LINE_8, 4)
        elif kind == _EPITHELIUM:
            dep = float(np.clip(depth[i], 0.0, 1.0))
            a = 2.6 + 0.6 * u[3] - 0.5 * (1.0 - dep)
            flat = 0.35 + 0.6 * min(1.0, dep / 0.45)
            b = a * min(1.0, flat * (0.85 + 0.15 * u[4]))
            angle = math.degrees(math.atan2(float(g[i, 3]), float(g[i, 2]))) + 90.0
            angle += 40.0 * (u[5] - 0.5) * dep
            value = 0.8 + 0.3 * dep + 0.15 * u[6] + (0.25 if dep > 0.85 else 0.0)
            cell = 0.5 * _SPACING_UM[_EPITHELIUM] / math.sqrt(float(_epi_density(dep)))
            cell = min(cell, 11.0)
            cv2.ellipse(borders, center, (round(cell * um16), round(cell * flat * um16)),
                        angle, 0, 360, 0.16, max(1, round(0.3 * px_per_um)), cv2.LINE_8, 4)
        else:
            angle = math.degrees(math.atan2(float(g[i, 1]), float(g[i, 0]))) + 90.0
            if u[3] < 0.12:  # lymphocyte: small, round, dark
                a = b = 2.3 + 0.4 * u[4]
                value = 1.6
            else:  # fibroblast: spindle along the fibres
                a = 4.5 + 2.5 * u[4]
                b = 1.0 + 0.5 * u[5]
                value = 1.1 + 0.3 * u[6]
        axes = (round(a * um16), round(b * um16))
        cv2.ellipse(nuc, center, axes, angle, 0, 360, float(value), -1, cv2.LINE_8, 4)
        if kind == _TUMOR and u[2] < 0.45:  # an irregular, lobulated outline
            t = 6.2832 * u[1]
            lobe = (center[0] + round(0.45 * a * um16 * math.cos(t)),
                    center[1] + round(0.45 * a * um16 * math.sin(t)))
            cv2.ellipse(nuc, lobe, (round(0.7 * a * um16), round(0.6 * b * um16)),
                        angle + 50.0, 0, 360, float(value), -1, cv2.LINE_8, 4)
        if kind != _STROMA:  # chromatin condensed along the nuclear membrane
            cv2.ellipse(nuc, center, axes, angle, 0, 360, float(value) + 0.35,
                        max(1, round(0.35 * px_per_um)), cv2.LINE_8, 4)
        if kind == _TUMOR and u[7] < 0.5:  # a prominent nucleolus
            off = (round(0.3 * a * um16 * math.cos(u[2] * 6.28)), round(0.3 * b * um16 * math.sin(u[2] * 6.28)))
            cv2.circle(nuc, (center[0] + off[0], center[1] + off[1]), round(0.7 * um16),
                       float(value) + 0.6, -1, cv2.LINE_8, 4)


def _pearls(layout: SlideLayout, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], grain: FloatArray) -> FloatArray | None:
    """Eosin of keratin pearls (concentric whorls) over the grid ``xs`` x ``ys``."""
    if not layout.pearls.size:
        return None
    px, py, pr = layout.pearls.T
    hit = (
        (px + 1.3 * pr > xs[0]) & (px - 1.3 * pr < xs[-1])
        & (py + 1.3 * pr > ys[0]) & (py - 1.3 * pr < ys[-1])
    )
    if not hit.any():
        return None
    period = 3.5 / layout.spec.mpp
    out = np.zeros((ys.size, xs.size), np.float32)
    for cx, cy, rad in layout.pearls[hit]:
        dx = (xs - cx)[None, :].astype(np.float32)
        dy = (ys - cy)[:, None].astype(np.float32)
        dist = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        swirl = dist + 0.35 * rad * 0.15 * np.sin(3.0 * theta + dist / rad * 4.0)
        rings = 0.85 + 0.15 * np.cos(2.0 * np.pi * swirl / period)
        body = _smoothstep((1.0 - dist / rad) / 0.25)
        out = np.maximum(out, (rings * body).astype(np.float32))
    return out * (0.9 + 0.1 * grain)


def render(layout: SlideLayout, x: int, y: int, width: int, height: int) -> npt.NDArray[np.uint8]:
    """The RGB pixels of the level-0 region ``[x, x + width) x [y, y + height)``."""
    spec, tex, stain = layout.spec, layout.textures, layout.stain
    m = _MARGIN
    x0, y0, w, h = x - m, y - m, width + 2 * m, height + 2 * m
    xs = np.arange(x0, x0 + w, dtype=np.int64)
    ys = np.arange(y0, y0 + h, dtype=np.int64)
    xf, yf = xs.astype(np.float32), ys.astype(np.float32)

    # glass: a faint shading plus scanner noise, the same everywhere on the slide
    shade = tex.sample(tex.low, *_grid(xf / 40.0, yf / 40.0))
    white = tex.lookup(tex.white, xs, ys)
    glass = stain.glass[None, None, :] * (1.0 + 0.004 * shade)[..., None]

    od = np.zeros((h, w, 3), np.float32)
    d = spec.mask_downsample
    rows, cols = layout.fields.shape[:2]
    r0, r1 = max(0, (y0 // d) - 2), min(rows, (y0 + h) // d + 3)
    c0, c1 = max(0, (x0 // d) - 2), min(cols, (x0 + w) // d + 3)
    window = layout.fields[r0:r1, c0:c1]
    has_tissue = window.size and float(window[..., F.SDF].max()) > -(_RAGGED + 2.0)
    has_pen = window.size and float(window[..., F.PEN].max()) > 0.4
    if has_tissue or has_pen:
        mx, my = _grid((xf + 0.5) / d - 0.5, (yf + 0.5) / d - 0.5)
        fld = cv2.remap(layout.fields, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ragged = tex.sample(tex.low, *_grid(xf / 3.0, yf / 3.0))
        if has_tissue:
            od += _tissue_od(layout, fld, xs, ys, ragged)
        if has_pen:
            ink = _smoothstep((fld[..., F.PEN] - 0.4) / 0.2) * (0.92 + 0.08 * ragged)
            od += ink[..., None] * stain.ink[None, None, :]
    if "dust" in spec.artifacts:
        od += _dust(layout, x0, y0, w, h)[..., None]

    rgb = glass * np.exp(-od) + 0.8 * white[..., None]
    out = np.clip(rgb[m : m + height, m : m + width] + 0.5, 0.0, 255.0).astype(np.uint8)
    outside_x = (xs[m : m + width] < 0) | (xs[m : m + width] >= spec.width)
    outside_y = (ys[m : m + height] < 0) | (ys[m : m + height] >= spec.height)
    out[outside_y, :] = 255
    out[:, outside_x] = 255
    return out


def _grid(u: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Dense ``(len(v), len(u))`` maps of two axis coordinates, for cv2.remap."""
    uu = np.ascontiguousarray(np.broadcast_to(u[None, :], (v.size, u.size)), dtype=np.float32)
    vv = np.ascontiguousarray(np.broadcast_to(v[:, None], (v.size, u.size)), dtype=np.float32)
    return uu, vv


def _tissue_od(
    layout: SlideLayout,
    fld: FloatArray,
    xs: npt.NDArray[np.int64],
    ys: npt.NDArray[np.int64],
    ragged: FloatArray,
) -> FloatArray:
    spec, tex, stain = layout.spec, layout.textures, layout.stain
    mpp = spec.mpp
    h, w = fld.shape[:2]
    xf, yf = xs.astype(np.float32), ys.astype(np.float32)
    grain = tex.lookup(tex.grain, xs, ys)

    alpha = np.clip((fld[..., F.SDF] + _RAGGED * ragged) / 2.0 + 0.5, 0.0, 1.0)
    w_tumor = np.clip((fld[..., F.TUMOR] - 0.5 + 0.03 * ragged) / 0.08 + 0.5, 0.0, 1.0)
    depth = fld[..., F.DEPTH]
    w_epi = np.clip((1.0 - depth) / 0.06 + 0.5, 0.0, 1.0) * (1.0 - w_tumor)
    w_stroma = 1.0 - w_tumor - w_epi

    # stroma: wavy collagen fibres along the streamlines of psi, loose and dense areas
    along = np.broadcast_to(
        ((0.6 * xf[None, :] + 0.8 * yf[:, None]) * (mpp / 4.0)).astype(np.float32), (h, w)
    )
    across = fld[..., F.PSI] * (mpp / 0.45) + 2.0 * ragged
    fibre = tex.sample(tex.fibre, np.ascontiguousarray(along), across)
    density = fld[..., F.DENSITY]
    breaks = tex.sample(tex.low, *_grid(xf * (mpp / 1.5), yf * (mpp / 1.5)))
    e_stroma = density * np.clip(0.72 + 0.25 * fibre + 0.12 * breaks, 0.2, 1.25) * 0.72
    h_stroma = 0.05 + 0.03 * grain

    # squamous epithelium: paler cytoplasm, a little more basophilic towards the basal layer
    dep = np.clip(depth, 0.0, 1.0)
    e_epi = (0.42 - 0.12 * dep) * (1.0 + 0.08 * grain)
    h_epi = 0.05 + 0.12 * dep**2

    # SCC: amphophilic cytoplasm, keratin pearls
    e_tumor = 0.48 * (1.0 + 0.1 * grain)
    h_tumor = np.full((h, w), 0.16, np.float32)
    pearl = _pearls(layout, xs.astype(np.float64), ys.astype(np.float64), grain)
    if pearl is not None:
        e_tumor = e_tumor * (1.0 - pearl) + pearl * 1.15
        h_tumor = h_tumor * (1.0 - pearl)

    canvas = _Canvas(int(xs[0]), int(ys[0]), w, h)
    for kind in (_STROMA, _EPITHELIUM, _TUMOR):
        _draw_nuclei(layout, canvas, kind)
    sigma = 0.18 / mpp
    nuclei = cv2.GaussianBlur(canvas.nuclei, (0, 0), sigma) * (0.9 + 0.16 * grain)
    borders = cv2.GaussianBlur(canvas.borders, (0, 0), sigma)
    in_nucleus = np.clip(nuclei, 0.0, 1.0)

    hema = w_stroma * h_stroma + w_epi * h_epi + w_tumor * h_tumor + nuclei
    eosin = (w_stroma * e_stroma + w_epi * e_epi + w_tumor * e_tumor) * (1.0 - 0.25 * in_nucleus)
    eosin = eosin + borders * (w_epi + w_tumor)
    scale = alpha * (1.0 + 0.9 * _smoothstep((fld[..., F.FOLD] - 0.4) / 0.2))
    hema = (hema * scale * stain.h_scale).astype(np.float32)
    eosin = (eosin * scale * stain.e_scale).astype(np.float32)
    od = hema[..., None] * stain.hematoxylin + eosin[..., None] * stain.eosin
    if "blur" in spec.artifacts:
        b = fld[..., F.BLUR]
        if float(b.max()) > 0.0:
            soft = cv2.GaussianBlur(od, (0, 0), _OUT_OF_FOCUS_SIGMA)
            od = od * (1.0 - b[..., None]) + soft * b[..., None]
    return od.astype(np.float32)


def _dust(layout: SlideLayout, x0: int, y0: int, w: int, h: int) -> FloatArray:
    """Optical density of dust specks (on glass and tissue alike)."""
    spec = layout.spec
    s = 250.0 / spec.mpp  # one candidate speck per 250 µm cell
    reach = 20.0 / spec.mpp
    i0, i1 = math.floor((x0 - reach) / s), math.floor((x0 + w + reach) / s)
    j0, j1 = math.floor((y0 - reach) / s), math.floor((y0 + h + reach) / s)
    jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
    r = hash_uniform(stream_key(spec.seed, 200), ii.ravel(), jj.ravel(), 6)
    out = np.zeros((h, w), np.float32)
    for (i, j), u in zip(zip(ii.ravel(), jj.ravel(), strict=True), r, strict=True):
        if u[0] > 0.35:
            continue
        cx = round(((i + u[1]) * s - x0) * 16 - 8)
        cy = round(((j + u[2]) * s - y0) * 16 - 8)
        a = round((1.5 + 8.0 * u[3] ** 2) / spec.mpp * 16)
        cv2.ellipse(out, (cx, cy), (a, max(8, round(a * (0.4 + 0.6 * u[4])))), 360 * u[5],
                    0, 360, 1.1 + 0.6 * u[4], -1, cv2.LINE_8, 4)
    return np.asarray(cv2.GaussianBlur(out, (0, 0), 0.8))
