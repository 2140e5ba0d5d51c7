"""The coarse scale of a synthetic slide: where tissue, epithelium and tumor are.

A :class:`SlideLayout` holds smooth fields at the mask resolution
(``spec.mask_downsample`` level-0 pixels per pixel).  The ground-truth masks are
these fields thresholded at mask-pixel centres, and the renderer draws pixels
from the same fields interpolated bilinearly, so masks and pixels agree by
construction (up to the few pixels of a ragged border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.geometry import Raster
from cervixwsi.synthetic._noise import FloatArray, TextureBank, stream_key
from cervixwsi.synthetic._spec import NESTS_PER_MM2, SyntheticSlideSpec, drawn_difficulty

__all__ = ["F", "SlideLayout", "Stain", "make_layout"]


class F:
    """Channel indices of :attr:`SlideLayout.fields`."""

    # SlideLayout.fields
    SDF = 0  # signed distance to the tissue border, level-0 px (> 0 inside)
    DEPTH = 1  # epithelium depth: 0 at the surface, 1 at the basal layer, > 1 stroma
    TUMOR = 2  # tumor indicator, smoothed; tumor where > 0.5 (and inside tissue)
    PSI = 3  # stream function of collagen fibres, level-0 px
    MIMIC = 4  # mimic islands (immature metaplasia), smoothed; mimic where > 0.5
    LYMPH = 5  # lymphocyte clusters, smoothed weight in [0, 1]
    NECROSIS = 6  # central necrosis of large nests, smoothed; where > 0.5 (inside tumor)
    BASALOID = 7  # tangentially cut basal epithelium, smoothed; where > 0.5
    CRUSH = 8  # crushed (> 0.5) or cauterised (< -0.5) edges, smoothed, signed
    N = 9
    # SlideLayout.artifact_fields
    FOLD = 0  # fold indicator, fold where > 0.5
    BLUR = 1  # out-of-focus weight in [0, 1]
    PEN = 2  # pen-ink indicator, ink where > 0.5
    N_ARTIFACTS = 3


# Stain optical-density vectors as measured on scanned H&E slides.  Hematoxylin is the
# reference of Macenko et al. 2009.  Eosin is the mean direction of the Macenko eosin
# vectors of the two real H&E references in tests/data (the CMU slide [0.143, 0.910,
# 0.388], the TCGA tiles [0.168, 0.849, 0.502]), 3.8° from each; Macenko's reference
# [0.2159, 0.8012, 0.5581] is 12° from the CMU slide's.  Ruifrok & Johnston's
# ([0.65, 0.70, 0.29], [0.07, 0.99, 0.11]) make nuclei too blue and eosin magenta.
HEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062])
EOSIN = np.array([0.1558, 0.8814, 0.4459])
_INKS = {
    "green": (40.0, 130.0, 95.0),
    "blue": (40.0, 60.0, 160.0),
    "red": (185.0, 40.0, 70.0),
    "black": (45.0, 45.0, 50.0),
}


@dataclass(frozen=True, eq=False)
class Stain:
    """Per-slide staining: OD vectors, stain amounts, glass brightness, pen ink."""

    hematoxylin: FloatArray  # (3,) unit optical-density vector
    eosin: FloatArray  # (3,)
    h_scale: float
    e_scale: float
    glass: FloatArray  # (3,) RGB of empty glass
    ink: FloatArray  # (3,) optical density of the pen ink
    ink_name: str


@dataclass(frozen=True, eq=False)
class SlideLayout:
    """Everything drawn at the coarse scale, made once per slide by :func:`make_layout`.

    Attributes
    ----------
    spec : SyntheticSlideSpec
    fields : numpy.ndarray
        ``(rows, cols, F.N)`` float32 fields at ``spec.mask_downsample``.
    artifact_fields : numpy.ndarray
        ``(rows, cols, F.N_ARTIFACTS)`` float32 fields of the artifacts;
        ``(rows, cols, 0)`` when the spec has none.
    pearls : numpy.ndarray
        ``(n, 3)`` keratin pearls ``(x, y, radius)`` in level-0 pixels.
    stain : Stain
    textures : TextureBank
    glass : numpy.ndarray
        ``(size, size, 3)`` float32 RGB of empty glass before scanner noise
        (the texture size; repeated over the slide).
    glass_u8 : numpy.ndarray
        ``(size, size, 3)`` uint8: ``glass`` plus scanner noise, as drawn.
    tissue_mask, tumor_mask : Raster
        The ground truth (bool, at ``spec.mask_downsample``).
    n_lesions : int
        Connected components (8-connected) of the tumor mask.
    glands : numpy.ndarray
        ``(n, 5)`` endocervical glands ``(x, y, a, b, angle)``: centre, lumen
        semi-axes in level-0 px and angle in radians.
    """

    spec: SyntheticSlideSpec
    fields: FloatArray
    artifact_fields: FloatArray
    pearls: npt.NDArray[np.float64]
    stain: Stain
    textures: TextureBank
    glass: FloatArray
    glass_u8: npt.NDArray[np.uint8]
    tissue_mask: Raster
    tumor_mask: Raster
    n_lesions: int
    glands: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 5)))

    @property
    def epithelium_mask(self) -> Raster:
        """Normal squamous epithelium (bool, on the grid of :attr:`tissue_mask`)."""
        inside = (self.fields[..., F.DEPTH] < 1.0) & self.tissue_mask.array
        return self.tissue_mask.with_array(inside & ~self.tumor_mask.array)

    def artifact_masks(self) -> dict[str, Raster]:
        """Where each artifact of ``spec.artifacts`` is (bool, on the grid of :attr:`tissue_mask`).

        ``"pen"``: the ink (on glass and tissue); ``"fold"``: the doubled tissue;
        ``"blur"``: tissue at least half out of focus; ``"dust"``: mask pixels a
        dust speck touches (on glass and tissue).  The fields the renderer draws
        from, thresholded at one half, so masks and pixels agree by construction.

        Examples
        --------
        >>> from cervixwsi.synthetic import SyntheticSlideSpec, make_layout
        >>> layout = make_layout(SyntheticSlideSpec(width=2048, height=2048, seed=1,
        ...                                         artifacts=("pen", "fold")))
        >>> masks = layout.artifact_masks()
        >>> sorted(masks), masks["pen"].shape == layout.tissue_mask.shape
        (['fold', 'pen'], True)
        """
        from cervixwsi.synthetic._render import dust_mask

        inside = self.fields[..., F.SDF] > 0
        art = self.artifact_fields
        arrays = {
            "pen": lambda: art[..., F.PEN] > 0.5,
            "fold": lambda: (art[..., F.FOLD] > 0.5) & inside,
            "blur": lambda: (art[..., F.BLUR] > 0.5) & inside,
            "dust": lambda: dust_mask(self),
        }
        return {name: self.tissue_mask.with_array(arrays[name]()) for name in self.spec.artifacts}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> FloatArray:
    """Gaussian-smoothed white noise (z-scored) with correlation length ``sigma`` pixels.

    Large ``sigma`` is made on a coarser grid and upsampled, so the cost does not
    grow with the blur.
    """
    rows, cols = shape
    factor = max(1.0, sigma / 4.0)
    small = (math.ceil(rows / factor) + 3, math.ceil(cols / factor) + 3)
    noise = rng.standard_normal(small).astype(np.float32)
    s = sigma / factor
    if s >= 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), s, borderType=cv2.BORDER_REFLECT)
    if factor > 1.0:
        big = (round(small[1] * factor), round(small[0] * factor))
        noise = cv2.resize(noise, big, interpolation=cv2.INTER_CUBIC)
    out = noise[:rows, :cols]
    return np.asarray((out - out.mean()) / (out.std() + 1e-6), dtype=np.float32)


def _signed_distance(inside: npt.NDArray[np.bool_]) -> FloatArray:
    """Signed distance (pixels) to the border of ``inside``, positive inside, smoothed."""
    u8 = inside.astype(np.uint8)
    d_in = cv2.distanceTransform(u8, cv2.DIST_L2, 5)
    d_out = cv2.distanceTransform(1 - u8, cv2.DIST_L2, 5)
    sdf = np.where(inside, d_in - 0.5, 0.5 - d_out).astype(np.float32)
    smooth = np.asarray(cv2.GaussianBlur(sdf, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT))
    if inside.any() and not (smooth > 0).any():
        return np.asarray(sdf, np.float32)  # a few mask px of tissue: smoothing would erase it
    return smooth


def _blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, radius: float, harmonics: int, amp: float
) -> npt.NDArray[np.int32]:
    """An irregular closed polygon around ``(cx, cy)`` in cv2 fixed point (shift 4)."""
    phi = np.linspace(0.0, 2.0 * np.pi, 128, endpoint=False)
    r = np.ones_like(phi)
    for k in range(2, harmonics + 1):
        r += rng.uniform(0.0, amp) / k**1.5 * np.cos(k * phi + rng.uniform(0.0, 2.0 * np.pi))
    r = radius * np.clip(r, 0.35, None)
    pts = np.stack([cx + r * np.cos(phi) - 0.5, cy + r * np.sin(phi) - 0.5], axis=1)
    return np.round(pts * 16.0).astype(np.int32)


def _stroke(
    rng: np.random.Generator, start: npt.NDArray[np.float64], length: float, steps: int = 40
) -> npt.NDArray[np.int32]:
    """A smooth random curve (cv2 fixed point, shift 4) from ``start``."""
    heading = rng.uniform(0.0, 2.0 * np.pi)
    turns = np.cumsum(rng.normal(0.0, 0.12, steps))
    angles = heading + turns
    step = length / steps
    xy = start + np.cumsum(np.stack([np.cos(angles), np.sin(angles)], axis=1) * step, axis=0)
    return np.round(np.vstack([start, xy]) * 16.0).astype(np.int32)


def _pick(
    rng: np.random.Generator, candidates: npt.NDArray[np.intp], cols: int, n: int
) -> npt.NDArray[np.float64]:
    """``n`` random continuous mask coordinates ``(u, v)`` inside the flat pixel indices."""
    idx = rng.choice(candidates, size=n)
    u = (idx % cols) + rng.uniform(0.0, 1.0, n)
    v = (idx // cols) + rng.uniform(0.0, 1.0, n)
    return np.stack([u, v], axis=1)


def _stain(spec: SyntheticSlideSpec, rng: np.random.Generator) -> Stain:
    v = spec.stain_variation

    def perturb(vec: npt.NDArray[np.float64]) -> FloatArray:
        p = np.abs(vec * (1.0 + v * rng.normal(0.0, 0.6, 3)))
        return np.asarray(p / np.linalg.norm(p), dtype=np.float32)

    h, e = perturb(HEMATOXYLIN), perturb(EOSIN)
    glass = np.clip(243.0 + v * 25.0 * rng.normal(0.0, 1.0, 3), 225.0, 252.0)
    ink_name = str(rng.choice(sorted(_INKS)))
    ink = -np.log(np.asarray(_INKS[ink_name]) / 243.0)
    return Stain(
        hematoxylin=h,
        eosin=e,
        h_scale=float(np.exp(v * rng.normal())),
        e_scale=float(np.exp(v * rng.normal())),
        glass=glass.astype(np.float32),
        ink=ink.astype(np.float32),
        ink_name=ink_name,
    )


def _nest_scale(spec: SyntheticSlideSpec) -> float:
    """Size factor of tumor nests: 1 at difficulty 0, 0.65 at difficulty 1."""
    return 1.0 - 0.35 * drawn_difficulty(spec)


def _draw_nests(
    rng: np.random.Generator,
    canvas: FloatArray,
    inner: npt.NDArray[np.intp],
    sdf: FloatArray,
    spec: SyntheticSlideSpec,
    n: int,
    um: float,
) -> list[tuple[float, float, float, float]]:
    """Draw ``n`` small nests (50-400 µm, smaller when harder) into ``canvas`` (in place).

    The first is at least 200 µm across, so that a slide has patches that are
    mostly tumor even when all the others are small.

    Returns ``(u, v, radius_um, draw)`` per nest: its centre in mask px, its
    radius and a uniform number for the caller (the same random draws whatever
    the caller does with them, so tumor nests and mimic islands share shapes).
    """
    rows, cols = canvas.shape
    if n <= 0 or not inner.size:
        return []
    scale = _nest_scale(spec)
    n_foci = max(1, math.ceil(n / 6))
    foci = _pick(rng, inner, cols, n_foci)
    out = []
    for i in range(n):
        if rng.random() < spec.nest_scatter:
            c = _pick(rng, inner, cols, 1)[0]
        else:
            c = foci[i % n_foci] + rng.normal(0.0, 400.0 / um, 2)
            r_, c_ = int(np.clip(c[1], 0, rows - 1)), int(np.clip(c[0], 0, cols - 1))
            if sdf[r_, c_] <= 1.0:
                c = _pick(rng, inner, cols, 1)[0]
        radius_um = scale * float(np.clip(60.0 * np.exp(rng.normal(0.0, 0.55)), 25.0, 200.0))
        if i == 0:  # one nest large enough for patches that are mostly tumor
            radius_um = max(radius_um, 100.0)
        # at least 1.6 mask px: a smaller nest would vanish when smoothed onto the grid
        radius_um = max(radius_um, 1.6 * um)
        poly = _blob_polygon(rng, c[0], c[1], radius_um / um, 9, 0.8)
        cv2.fillPoly(canvas, [poly], 1.0, cv2.LINE_8, 4)
        out.append((float(c[0]), float(c[1]), radius_um, float(rng.random())))
    return out


def _draw_large_nests(
    rng: np.random.Generator,
    canvas: FloatArray,
    inner: npt.NDArray[np.intp],
    sdf: FloatArray,
    spec: SyntheticSlideSpec,
    n: int,
    um: float,
    record: list[tuple[float, float, float]] | None = None,
) -> npt.NDArray[np.float64]:
    """Draw ``n`` large lobulated nests into ``canvas`` (in place); points inside them.

    Appends ``(u, v, radius_um)`` of each nest to ``record`` when given.
    """
    rows, cols = canvas.shape
    scale = _nest_scale(spec)
    side_um = min(rows, cols) * um
    points = []
    for _ in range(n if inner.size else 0):
        radius_um = 0.5 * scale * float(np.exp(rng.uniform(np.log(600.0), np.log(1500.0))))
        radius_um = max(min(radius_um, 0.08 * side_um), 1.6 * um)
        deep = np.flatnonzero(sdf * um > 0.5 * radius_um)
        c = _pick(rng, deep if deep.size else inner, cols, 1)[0]
        if record is not None:
            record.append((float(c[0]), float(c[1]), radius_um))
        lobe = np.zeros_like(canvas)
        cv2.fillPoly(
            lobe, [_blob_polygon(rng, c[0], c[1], radius_um / um, 8, 1.2)], 1.0, cv2.LINE_8, 4
        )
        septa = _smooth_noise(rng, (rows, cols), 35.0 / um) > -0.35
        np.maximum(canvas, lobe * septa, out=canvas)
        inside = np.flatnonzero((lobe * septa).ravel() > 0)
        if inside.size:
            points.append(_pick(rng, inside, cols, int(rng.integers(2, 6))))
    return np.concatenate(points) if points else np.zeros((0, 2))


def _deepest_nest(canvas: FloatArray, tissue: npt.NDArray[np.bool_], um: float) -> None:
    """Draw a nest (60 µm, smaller in thin tissue) at the deepest point of ``tissue``."""
    dist = cv2.distanceTransform(tissue.astype(np.uint8), cv2.DIST_L2, 5)
    r_, c_ = np.unravel_index(int(np.argmax(dist)), dist.shape)
    radius = max(1.6, min(60.0 / um, 0.8 * float(dist[r_, c_])))
    centre = (round(float(c_) * 16), round(float(r_) * 16))
    cv2.circle(canvas, centre, round(radius * 16), 1.0, -1, cv2.LINE_8, 4)


def _glands(
    rng: np.random.Generator,
    spec: SyntheticSlideSpec,
    tissue: npt.NDArray[np.bool_],
    sdf: FloatArray,
    depth: FloatArray,
    taken: FloatArray,
    um: float,
    tissue_mm2: float,
) -> npt.NDArray[np.float64]:
    """Endocervical glands in the stroma, away from the tumor nests: ``(n, 5)``."""
    rows, cols = tissue.shape
    d = spec.mask_downsample
    near = cv2.GaussianBlur(taken, (0, 0), max(1.0, 40.0 / um))
    free = tissue & (depth > 1.4) & (sdf * um > 80.0) & (near < 0.02)
    free_idx = np.flatnonzero(free)
    if not free_idx.size:
        return np.zeros((0, 5), np.float64)
    used = np.zeros((rows, cols), bool)
    glands: list[tuple[float, float, float, float, float]] = []
    for u, v in _pick(rng, free_idx, cols, int(rng.poisson(4.0 * tissue_mm2))):
        a_um = rng.uniform(15.0, 40.0)
        b_um = a_um * rng.uniform(0.35, 0.9)
        angle = rng.uniform(0.0, np.pi)
        r_c, c_c = int(v), int(u)
        reach = math.ceil((a_um + 40.0) / um)
        box = (
            slice(max(0, r_c - reach), r_c + reach + 1),
            slice(max(0, c_c - reach), c_c + reach + 1),
        )
        if free[box].mean() < 0.8 or used[box].any():
            continue
        used[box] = True
        glands.append((u * d, v * d, a_um / spec.mpp, b_um / spec.mpp, angle))
    return np.asarray(glands, np.float64).reshape(-1, 5)


def make_layout(spec: SyntheticSlideSpec) -> SlideLayout:
    """The coarse layout of the slide ``spec`` describes (deterministic per ``spec.seed``).

    Takes a fraction of a second for a 20000 x 20000 slide; its arrays take
    about ``rows * cols * 40`` bytes (``(width / mask_downsample) * (height /
    mask_downsample)`` pixels; 60 MB at 20000 x 20000 with the default
    downsample 16; for 100000 x 100000 slides consider ``mask_downsample=32``).

    Parameters
    ----------
    spec : SyntheticSlideSpec
        The slide.

    Returns
    -------
    SlideLayout
        The fields the pixels are drawn from and the ground-truth masks; pass
        it to :func:`render_region` to draw patches.

    Examples
    --------
    >>> from cervixwsi.synthetic import SyntheticSlideSpec, make_layout
    >>> spec = SyntheticSlideSpec(width=8192, height=8192, n_nests=12, nest_scatter=1.0, seed=1)
    >>> layout = make_layout(spec)
    >>> layout.tumor_mask.shape, layout.tumor_mask.downsample
    ((512, 512), 16.0)
    >>> bool(layout.tumor_mask.array.any()), layout.n_lesions > 3
    (True, True)
    """
    d = spec.mask_downsample
    rows, cols = math.ceil(spec.height / d), math.ceil(spec.width / d)
    um = d * spec.mpp  # micrometres per mask pixel
    rng = np.random.default_rng(stream_key(spec.seed, 1))
    fields = np.zeros((rows, cols, F.N), np.float32)
    n_art = F.N_ARTIFACTS if spec.artifacts else 0  # no memory for artifacts not asked for
    artifact_fields = np.zeros((rows, cols, n_art), np.float32)

    # --- tissue: a few fragments (elongated bumps) with borders made ragged by noise,
    # thresholded to cover tissue_fraction, kept away from the slide's edges
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    noise = np.zeros((rows, cols), np.float32)
    n_fragments = int(rng.integers(2, 5))
    for _ in range(n_fragments):
        cx, cy = rng.uniform(0.2, 0.8) * cols, rng.uniform(0.2, 0.8) * rows
        a = rng.uniform(0.15, 0.35) * cols
        b = a * rng.uniform(0.35, 0.8)
        t = rng.uniform(0.0, np.pi)
        xr = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        yr = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        noise = np.maximum(noise, np.exp(-((xr / a) ** 2 + (yr / b) ** 2)))
    noise += (
        0.35 * _smooth_noise(rng, (rows, cols), min(250.0 / um, 0.08 * min(rows, cols)))
        + 0.12 * _smooth_noise(rng, (rows, cols), 50.0 / um)
        + 0.04 * _smooth_noise(rng, (rows, cols), 12.0 / um)
    )
    edge = np.minimum(np.minimum(xx + 0.5, cols - 0.5 - xx), np.minimum(yy + 0.5, rows - 0.5 - yy))
    margin = max(2.0, 0.04 * min(rows, cols))
    noise -= 3.0 * np.clip(1.0 - edge / margin, 0.0, 1.0) ** 2
    threshold = np.quantile(noise, 1.0 - spec.tissue_fraction)
    tissue = noise > threshold
    sdf = _signed_distance(tissue)  # mask px
    fields[..., F.SDF] = sdf * d

    # --- squamous epithelium: a band along part of the tissue surface
    presence = np.clip((_smooth_noise(rng, (rows, cols), 500.0 / um) + 0.3) / 0.12, 0.0, 1.0)
    rete = _smooth_noise(rng, (rows, cols), 18.0 / um)
    width = (220.0 + 60.0 * rete) / um * (0.4 + 0.6 * presence) * (presence > 0)
    depth = np.where(width > 1e-3, sdf / np.maximum(width, 1e-3), 4.0)
    fields[..., F.DEPTH] = np.clip(depth, 0.0, 4.0)

    # --- tumor nests (many small, clustered or scattered, plus a few large lobulated ones)
    hard = drawn_difficulty(spec)
    stroma_idx = np.flatnonzero((sdf * um > 60.0) & (depth > 1.3))
    inner = stroma_idx if stroma_idx.size else np.flatnonzero(tissue)
    nest_canvas = np.zeros((rows, cols), np.float32)
    pearls: list[tuple[float, float, float]] = []
    nests: list[tuple[float, float, float]] = []  # (u, v, radius_um), for central necrosis
    if spec.tumor and tissue.any():
        centres = _draw_nests(rng, nest_canvas, inner, sdf, spec, spec.nest_count, um)
        nests += [(cx, cy, radius_um) for cx, cy, radius_um, _ in centres]
        pearl_p = 0.6 * (1.0 - hard) ** 1.5
        for cx, cy, radius_um, draw in centres:
            if radius_um >= 50.0 and draw < pearl_p:
                pearls.append((cx * d, cy * d, min(0.3 * radius_um, 40.0) / spec.mpp))
        large = _draw_large_nests(rng, nest_canvas, inner, sdf, spec, spec.large_nests, um, nests)
        for p in large:
            if rng.random() < (1.0 - hard) ** 1.5:
                pearls.append((p[0] * d, p[1] * d, rng.uniform(20.0, 45.0) / spec.mpp))
    fields[..., F.TUMOR] = cv2.GaussianBlur(nest_canvas, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)

    # --- mimics, from their own stream: islands of immature metaplasia shaped like the
    # nests (same shapes and sizes), lymphocyte clusters; more of both when harder
    mrng = np.random.default_rng(stream_key(spec.seed, 5))
    glands = np.zeros((0, 5), np.float64)
    if tissue.any():
        base = max(5, round(NESTS_PER_MM2 * spec.slide_area_mm2 * spec.tissue_fraction))
        mimic = np.zeros((rows, cols), np.float32)
        _draw_nests(mrng, mimic, inner, sdf, spec, round(base * (0.1 + 14.0 * hard**1.5)), um)
        _draw_large_nests(mrng, mimic, inner, sdf, spec, round(spec.large_nests * hard), um)
        fields[..., F.MIMIC] = cv2.GaussianBlur(mimic, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)
        lymph = np.zeros((rows, cols), np.float32)
        tissue_mm2 = float(tissue.sum()) * (um / 1000.0) ** 2
        for u, v in _pick(mrng, inner, cols, int(mrng.poisson((0.5 + 4.0 * hard) * tissue_mm2))):
            r = max(1.5, mrng.uniform(30.0, 110.0) / um)
            cv2.fillPoly(lymph, [_blob_polygon(mrng, u, v, r, 6, 0.6)], 1.0, cv2.LINE_8, 4)
        lymph = cv2.GaussianBlur(lymph, (0, 0), max(0.8, 8.0 / um))
        if spec.tumor and hard < 1.0:  # inflamed stroma around the nests of easier slides
            peri = cv2.GaussianBlur(nest_canvas, (0, 0), max(1.0, 30.0 / um))
            lymph = np.maximum(lymph, (1.0 - hard) * np.clip(1.2 * peri, 0.0, 1.0))
        fields[..., F.LYMPH] = lymph
        glands = _glands(mrng, spec, tissue, sdf, depth, nest_canvas, um, tissue_mm2)

    # --- stroma: fibre streamlines and density
    # Fibres run along the level lines of psi: smooth noise (waves, whorls) plus a ramp
    # in one direction, so that the fibres are mostly parallel and rarely fan out
    # where the noise alone would be flat.
    psi = _smooth_noise(rng, (rows, cols), 120.0 / um)
    gy, gx = np.gradient(psi)
    psi *= 0.8 / (float(np.mean(np.hypot(gx, gy))) + 1e-6)  # mean |grad| 0.8 per mask px
    theta = rng.uniform(0.0, np.pi)
    psi += 0.6 * (xx * np.cos(theta) + yy * np.sin(theta))
    fields[..., F.PSI] = psi * d  # in level-0 px: its gradient is about 1 per level-0 px

    # --- artifacts (each from its own stream so adding one does not move the others)
    art = np.random.default_rng(stream_key(spec.seed, 2))
    size = float(min(rows, cols))
    tissue_idx = np.flatnonzero(tissue)
    if "pen" in spec.artifacts:
        pen = np.zeros((rows, cols), np.uint8)
        for _ in range(int(art.integers(1, 3))):
            start = art.uniform(0.1, 0.9, 2) * np.array([cols, rows])
            thick = max(1, round(art.uniform(250.0, 450.0) / um))
            cv2.polylines(pen, [_stroke(art, start, 0.6 * size)], False, 255, thick, cv2.LINE_AA, 4)
        artifact_fields[..., F.PEN] = cv2.GaussianBlur(pen.astype(np.float32) / 255.0, (0, 0), 1.0)
    if "fold" in spec.artifacts and tissue_idx.size:
        fold = np.zeros((rows, cols), np.uint8)
        start = _pick(art, tissue_idx, cols, 1)[0]
        thick = max(1, round(art.uniform(80.0, 200.0) / um))
        cv2.polylines(fold, [_stroke(art, start, 0.4 * size)], False, 255, thick, cv2.LINE_AA, 4)
        artifact_fields[..., F.FOLD] = cv2.GaussianBlur(
            fold.astype(np.float32) / 255.0, (0, 0), 1.5
        )
    if "blur" in spec.artifacts and tissue_idx.size:
        blur = np.zeros((rows, cols), np.float32)
        for u, v in _pick(art, tissue_idx, cols, int(art.integers(2, 5))):
            r = max(2.0, art.uniform(150.0, 500.0) / um)
            cv2.circle(
                blur,
                (round((u - 0.5) * 16), round((v - 0.5) * 16)),
                round(r * 16),
                1.0,
                -1,
                cv2.LINE_8,
                4,
            )
        artifact_fields[..., F.BLUR] = np.clip(
            cv2.GaussianBlur(blur, (0, 0), max(1.0, 60.0 / um)), 0.0, 1.0
        )

    stain = _stain(spec, np.random.default_rng(stream_key(spec.seed, 3)))
    textures = TextureBank.make(stream_key(spec.seed, 4))
    # Glass is the slide's glass colour plus scanner noise.  (No smooth shading: it
    # would have to repeat with the texture period and show as a grid in thumbnails.)
    glass = np.broadcast_to(stain.glass, (textures.size, textures.size, 3)).copy()
    glass_u8 = np.clip(glass + 0.8 * textures.white[..., None] + 0.5, 0.0, 255.0).astype(np.uint8)

    tissue_truth = fields[..., F.SDF] > 0
    if "pen" in spec.artifacts:  # ink is not tissue
        tissue_truth &= ~(artifact_fields[..., F.PEN] > 0.5)
    tumor_truth = (fields[..., F.TUMOR] > 0.5) & tissue_truth
    if spec.tumor and not tumor_truth.any() and tissue_truth.any():
        # every nest was cut away (by the slide's edges, pen ink, or a coarse mask grid):
        # a tumor slide always shows tumor, so put one nest where the tissue is deepest
        _deepest_nest(nest_canvas, tissue_truth, um)
        fields[..., F.TUMOR] = cv2.GaussianBlur(
            nest_canvas, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT
        )
        tumor_truth = (fields[..., F.TUMOR] > 0.5) & tissue_truth
    n_lesions = int(cv2.connectedComponents(tumor_truth.astype(np.uint8), connectivity=8)[0]) - 1
    from cervixwsi.synthetic._mimics import mimic_fields  # it draws with the renderer's helpers

    mimic_fields(spec, fields, tumor_truth, nests, glands)  # necrosis, basaloid, crush
    return SlideLayout(
        spec=spec,
        fields=fields,
        artifact_fields=artifact_fields,
        pearls=np.asarray(pearls, np.float64).reshape(-1, 3),
        stain=stain,
        textures=textures,
        glass=glass,
        glass_u8=glass_u8,
        tissue_mask=Raster(tissue_truth, d, spec.dimensions, mpp=spec.mpp),
        tumor_mask=Raster(tumor_truth, d, spec.dimensions, mpp=spec.mpp),
        n_lesions=n_lesions,
        glands=glands,
    )
