"""Central necrosis of large nests and two mimics: tangentially cut basal epithelium, crush.

The layout side (:func:`mimic_fields`) fills three channels of the layout's
fields, each from a random stream of its own, after everything else is drawn,
so that for a given seed the tissue, the nests, the tumor mask, the mimic
islands and the glands are those of a layout without them:

* ``F.NECROSIS``: comedo-type central necrosis of nests at least
  :data:`NECROSIS_MIN_RADIUS_UM` in radius, with a rim of viable carcinoma; it
  lies inside the tumor mask (a pathologist annotates a nest with its
  necrosis), which it does not change;
* ``F.BASALOID``: islands of basal and parabasal cells in the stroma just
  under the epithelium (a rete ridge cut tangentially), away from the nests;
* ``F.CRUSH``: bands 50-200 µm wide along stretches of the tissue border,
  > 0 crushed (smeared dark nuclei), < 0 cauterised (homogenised, amphophilic,
  streaming nuclei), away from the nests.

The render side (:func:`draw_mimics`) redraws the optical density a region
got from :func:`~cervixwsi.synthetic._render._tissue_od` where these
channels are set; a region without them pays for one look at the layout.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.synthetic._atlas import atlas_size
from cervixwsi.synthetic._layout import F, SlideLayout, _blob_polygon, _pick, _smooth_noise
from cervixwsi.synthetic._noise import FloatArray, stream_key
from cervixwsi.synthetic._render import (
    _NUCLEUS_EDGE_UM,
    Weight,
    _atlas_offsets,
    _atlas_region,
    _periodic,
    _Region,
    _smoothstep,
)
from cervixwsi.synthetic._spec import SyntheticSlideSpec, drawn_difficulty

__all__ = ["NECROSIS_MIN_RADIUS_UM", "draw_mimics", "mimic_fields"]

#: Nests at least this radius (µm) may get central necrosis.
NECROSIS_MIN_RADIUS_UM = 150.0
#: The widest crushed or cauterised band (µm from the tissue border).
CRUSH_MAX_UM = 200.0


def necrosis_probability(hard: float) -> float:
    """Chance that a nest large enough gets central necrosis: 0.85 at hardness 0, 0.25 at 1."""
    return 0.85 - 0.6 * hard


def mimic_fields(
    spec: SyntheticSlideSpec,
    fields: FloatArray,
    tumor_truth: npt.NDArray[np.bool_],
    nests: list[tuple[float, float, float]],
    glands: npt.NDArray[np.float64],
) -> None:
    """Fill ``F.NECROSIS``, ``F.BASALOID`` and ``F.CRUSH`` of ``fields`` (in place).

    ``nests`` are ``(u, v, radius_um)``: the centres (mask px) and radii of the
    tumor nests as drawn; ``glands`` as :attr:`SlideLayout.glands`.
    """
    d = spec.mask_downsample
    um = d * spec.mpp
    hard = drawn_difficulty(spec)
    sdf_um = fields[..., F.SDF] * spec.mpp
    tissue = sdf_um > 0
    if not tissue.any():
        return
    if tumor_truth.any():
        fields[..., F.NECROSIS] = _necrosis(spec, tumor_truth, nests, hard, um)
    # mimics keep away from the nests (the smoothed tumor field, 40 µm around)
    near = cv2.GaussianBlur(fields[..., F.TUMOR], (0, 0), max(1.0, 40.0 / um)) > 0.01
    near |= fields[..., F.TUMOR] > 0.05
    fields[..., F.BASALOID] = _basaloid(spec, fields, near, glands, hard, um)
    fields[..., F.CRUSH] = _crush(spec, sdf_um, near, hard, um)


def _necrosis(
    spec: SyntheticSlideSpec,
    tumor_truth: npt.NDArray[np.bool_],
    nests: list[tuple[float, float, float]],
    hard: float,
    um: float,
) -> FloatArray:
    rng = np.random.default_rng(stream_key(spec.seed, 8))
    inside_um = cv2.distanceTransform(tumor_truth.astype(np.uint8), cv2.DIST_L2, 5) * um
    canvas = np.zeros(tumor_truth.shape, np.float32)
    p = necrosis_probability(hard)
    for u, v, radius_um in nests:
        # the same draws per nest whatever happens to it
        draw, rim_um, frac, sub = (
            rng.random(),
            rng.uniform(40.0, 60.0),
            rng.uniform(0.5, 0.75),
            rng.integers(2**62),
        )
        if radius_um < NECROSIS_MIN_RADIUS_UM or draw >= p:
            continue
        zone = np.zeros_like(canvas)
        poly = _blob_polygon(np.random.default_rng(sub), u, v, frac * radius_um / um, 6, 0.5)
        cv2.fillPoly(zone, [poly], 1.0, cv2.LINE_8, 4)
        zone[inside_um < rim_um] = 0.0  # a rim of viable carcinoma around it
        np.maximum(canvas, zone, out=canvas)
    out = cv2.GaussianBlur(canvas, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out * tumor_truth, np.float32)


def _basaloid(
    spec: SyntheticSlideSpec,
    fields: FloatArray,
    near: npt.NDArray[np.bool_],
    glands: npt.NDArray[np.float64],
    hard: float,
    um: float,
) -> FloatArray:
    """Tangentially cut basal epithelium: elongated islands under the epithelium."""
    rng = np.random.default_rng(stream_key(spec.seed, 9))
    rows, cols = near.shape
    depth, sdf_um = fields[..., F.DEPTH], fields[..., F.SDF] * spec.mpp
    forbidden = (near | (sdf_um < 25.0) | (depth < 1.0)).astype(np.uint8)
    d = spec.mask_downsample
    for gx, gy, ga, *_ in glands:  # and away from the glands
        centre = (round(gx / d * 16 - 8), round(gy / d * 16 - 8))
        cv2.circle(forbidden, centre, round((ga / d + 45.0 / um) * 16), 1, -1, cv2.LINE_8, 4)
    zone = np.flatnonzero(((depth > 1.05) & (depth < 2.5) & (forbidden == 0)).ravel())
    canvas = np.zeros((rows, cols), np.float32)
    if not zone.size:
        return canvas
    zone_mm2 = zone.size * (um / 1000.0) ** 2
    grad = np.gradient(fields[..., F.SDF])
    grad_y, grad_x = np.asarray(grad[0], np.float32), np.asarray(grad[1], np.float32)
    n = int(rng.poisson((3.0 + 60.0 * hard) * zone_mm2))
    tries = 4  # places tried per island, the first free one taken
    for k, (u, v) in enumerate(_pick(rng, zone, cols, n * tries)):
        if k % tries == 0:
            a_um, ratio = rng.uniform(25.0, 70.0), rng.uniform(0.3, 0.55)
            wobble, sub, placed = rng.uniform(-0.4, 0.4), rng.integers(2**62), False
        if placed:
            continue
        # elongated along the surface, as a rete ridge cut parallel to it
        along = math.atan2(float(grad_y[int(v), int(u)]), float(grad_x[int(v), int(u)]))
        along += math.pi / 2 + wobble
        poly = _blob_polygon(np.random.default_rng(sub), 0.0, 0.0, a_um / um, 5, 0.4)
        xy = (poly / 16.0 + 0.5) * np.array([1.0, ratio])
        cos_t, sin_t = math.cos(along), math.sin(along)
        x = xy[:, 0] * cos_t - xy[:, 1] * sin_t + u
        y = xy[:, 0] * sin_t + xy[:, 1] * cos_t + v
        c0, r0 = max(0, math.floor(x.min()) - 2), max(0, math.floor(y.min()) - 2)
        c1, r1 = min(cols, math.ceil(x.max()) + 3), min(rows, math.ceil(y.max()) + 3)
        if c1 <= c0 or r1 <= r0:
            continue
        pts = np.round(np.stack([x - c0 - 0.5, y - r0 - 0.5], axis=1) * 16.0).astype(np.int32)
        island = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.fillPoly(island, [pts], 1, cv2.LINE_8, 4)
        if (island & forbidden[r0:r1, c0:c1]).any():  # not over the epithelium, nests, glands
            continue
        placed = True
        np.maximum(canvas[r0:r1, c0:c1], island, out=canvas[r0:r1, c0:c1])
    out = cv2.GaussianBlur(canvas, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out * ~near, np.float32)


def _crush(
    spec: SyntheticSlideSpec,
    sdf_um: FloatArray,
    near: npt.NDArray[np.bool_],
    hard: float,
    um: float,
) -> FloatArray:
    """Crushed (> 0) or cauterised (< 0) bands along stretches of the tissue border."""
    rng = np.random.default_rng(stream_key(spec.seed, 10))
    rows, cols = sdf_um.shape
    border = np.flatnonzero(((sdf_um > 0) & (sdf_um < 1.5 * um)).ravel())
    canvas = np.zeros((rows, cols), np.float32)
    if not border.size:
        return canvas
    perimeter_mm = border.size * um / 1500.0  # the ring is about 1.5 px wide
    n = int(rng.poisson((0.02 + 0.2 * hard) * perimeter_mm))
    if n == 0:
        return canvas
    wobble = _smooth_noise(rng, (rows, cols), max(1.0, 30.0 / um))
    yy, xx = np.ogrid[0:rows, 0:cols]
    for u, v in _pick(rng, border, cols, n):
        half_um, width_um = rng.uniform(100.0, 400.0), rng.uniform(50.0, 160.0)
        sign = -1.0 if rng.random() < 0.4 else 1.0
        reach = math.ceil(half_um / um) + 1
        r0, r1 = max(0, int(v) - reach), min(rows, int(v) + reach + 1)
        c0, c1 = max(0, int(u) - reach), min(cols, int(u) + reach + 1)
        s = sdf_um[r0:r1, c0:c1]
        limit = np.minimum(width_um * (1.0 + 0.15 * wobble[r0:r1, c0:c1]), CRUSH_MAX_UM - 2.0 * um)
        along = ((xx[:, c0:c1] + 0.5 - u) ** 2 + (yy[r0:r1] + 0.5 - v) ** 2) * (um / half_um) ** 2
        band = (s > 0) & (s < limit) & (along < 1.0)
        canvas[r0:r1, c0:c1][band] = sign
    out = cv2.GaussianBlur(canvas, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out * ~near * (sdf_um > -2.0 * um), np.float32)


# --- rendering --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _debris(mpp: float) -> FloatArray:
    """A periodic square of karyorrhectic nuclear dust: dark fragments 1-3 µm, some in clumps."""
    size = atlas_size(mpp)
    um = 1.0 / mpp
    rng = np.random.default_rng(stream_key(0, 400))
    n_clumps = round((size / (14.0 * um)) ** 2)
    pad = round(6.0 * um)
    canvas = np.zeros((size + 2 * pad, size + 2 * pad), np.float32)
    centres = rng.uniform(0.0, size, (n_clumps, 2))
    for cx, cy in centres:
        for _ in range(int(rng.integers(1, 6))):
            x, y = cx + rng.normal(0.0, 1.8 * um) + pad, cy + rng.normal(0.0, 1.8 * um) + pad
            r = rng.uniform(0.5, 1.5) * um
            val = float(rng.uniform(1.2, 2.0))
            cv2.circle(
                canvas, (round(x * 16), round(y * 16)), round(r * 16), val, -1, cv2.LINE_8, 4
            )
    canvas = np.minimum(canvas, 2.0)
    canvas = cv2.GaussianBlur(canvas, (0, 0), _NUCLEUS_EDGE_UM * um)  # pad > its reach
    out = canvas[pad : pad + size, pad : pad + size].copy()  # fold the margins back: a torus
    out[:pad] += canvas[pad + size :, pad : pad + size]
    out[-pad:] += canvas[:pad, pad : pad + size]
    out[:, :pad] += canvas[pad : pad + size, pad + size :]
    out[:, -pad:] += canvas[pad : pad + size, :pad]
    out.setflags(write=False)
    return np.asarray(out, np.float32)


def _ramp(field: FloatArray, ragged: FloatArray, slope: float) -> FloatArray:
    return np.clip((field - 0.5 + 0.03 * ragged) * slope + 0.5, 0.0, 1.0)


def draw_mimics(
    layout: SlideLayout,
    region: _Region,
    hema: FloatArray,
    eosin: FloatArray,
    w_tumor: Weight,
    w_stroma: Weight,
    grain: FloatArray,
) -> tuple[FloatArray, FloatArray, Weight]:
    """Necrosis, tangential basal islands and crushed edges over a region's stain amounts.

    Returns the new ``(hema, eosin, w_stroma)`` (the stroma's weight, for its
    red cells, less where an island replaces it); the arguments unchanged
    where the region shows none of them.
    """
    win = layout.fields[region.window][..., F.NECROSIS : F.CRUSH + 1]
    if not win.size or not win.any():
        return hema, eosin, w_stroma
    spec, tex = layout.spec, layout.textures
    mpp = spec.mpp
    nec, bas, cru = cv2.split(region._remap(win))
    ragged = region.ragged
    if float(win[..., 0].max()) > 0.3:  # central necrosis, inside the carcinoma
        w = _ramp(nec, ragged, 6.0) * w_tumor
        gh, ge = _atlas_region(layout, "tumor", drawn_difficulty(spec), region)
        size = atlas_size(mpp)
        ox, oy = _atlas_offsets(spec.seed, size)[0]
        dust = _periodic(_debris(mpp), region.x0 + oy, region.y0 + ox, region.w, region.h)
        shade = tex.sample_grid(tex.low, region.xs * (mpp / 2.0), region.ys * (mpp / 2.0))
        # eosinophilic granular debris, pale to bright; ghost outlines, no nuclei; dust
        e_nec = 0.62 + 0.18 * shade + 0.08 * grain + 0.3 * np.minimum(ge, 0.8)
        h_nec = 0.07 + 0.02 * grain + 0.1 * np.minimum(gh, 1.5) + dust
        hema = np.asarray(hema * (1.0 - w) + w * h_nec, np.float32)
        eosin = np.asarray(eosin * (1.0 - w) + w * e_nec, np.float32)
    if float(win[..., 1].max()) > 0.3:  # basal and parabasal cells, a dark palisaded edge
        w = _ramp(bas, ragged, 12.5) * (1.0 - w_tumor)
        edge = 1.0 - _smoothstep((bas - 0.9) / 0.08)
        bh, be = _atlas_region(layout, "basal", 0.0, region)
        ph, pe = _atlas_region(layout, "parabasal", 0.0, region)
        hema = hema * (1.0 - w) + w * (edge * 1.1 * bh + (1.0 - edge) * ph)
        eosin = eosin * (1.0 - w) + w * (edge * be + (1.0 - edge) * pe)
        w_stroma = w_stroma * (1.0 - w)
    if float(np.abs(win[..., 2]).max()) > 0.3:
        hema, eosin, w_stroma = _crushed(
            layout, region, hema, eosin, cru, win[..., 2], w_tumor, w_stroma, grain
        )
    return hema, eosin, w_stroma


def _crushed(
    layout: SlideLayout,
    region: _Region,
    hema: FloatArray,
    eosin: FloatArray,
    cru: FloatArray,
    window: FloatArray,
    w_tumor: Weight,
    w_stroma: Weight,
    grain: FloatArray,
) -> tuple[FloatArray, FloatArray, Weight]:
    """Crush: nuclei smeared into dark streaks; cautery: homogenised, streaming nuclei.

    Each is drawn only where the layout ``window`` (``F.CRUSH``) shows it.
    """
    tex, mpp = layout.textures, layout.spec.mpp
    w = _ramp(np.abs(cru), region.ragged, 4.0) * (1.0 - w_tumor)
    along_x = np.mod(0.9 * region.xs * mpp, tex.size).astype(np.float32)
    along_y = np.mod(0.7 * region.ys * mpp, tex.size).astype(np.float32)
    along = along_x[None, :] + along_y[:, None]
    sdf = region.sdf * np.float32(mpp)  # µm; streaks run along the border
    h_new = np.zeros_like(hema)
    e_new = np.zeros_like(eosin)
    if float(window.max()) > 0.3:  # crush
        streak = tex.sample(tex.fibre, along, sdf * 1.4 + 3.0 * region.ragged)
        patchy = tex.sample_grid(tex.low, region.xs * (mpp / 1.2), region.ys * (mpp / 1.2))
        smear = _smoothstep(np.asarray(streak - 0.3 + 0.5 * patchy, np.float32))
        crush = np.clip(cru * 4.0, 0.0, 1.0)
        h_new += crush * (0.2 * hema + 0.2 + 1.25 * smear * (0.85 + 0.15 * grain))
        e_new += crush * (0.3 * eosin + 0.3 + 0.05 * grain)
    if float(window.min()) < -0.3:  # cautery
        streaming = tex.sample(tex.fibre, along + 97.0, sdf * 1.6)
        nuc = _smoothstep((streaming - 1.2) / 0.6)
        charred = np.clip(1.0 - sdf / 25.0, 0.0, 1.0)
        caut = np.clip(-cru * 4.0, 0.0, 1.0)
        h_new += caut * (0.34 + 0.04 * grain + 0.25 * charred + 1.1 * nuc)
        e_new += caut * (0.58 + 0.06 * grain)
    hema = hema * (1.0 - w) + w * h_new
    eosin = eosin * (1.0 - w) + w * e_new
    return np.asarray(hema, np.float32), np.asarray(eosin, np.float32), w_stroma * (1.0 - w)
