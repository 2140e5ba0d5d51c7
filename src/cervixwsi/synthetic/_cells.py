"""Packed cells on a torus: the cell-level drawing behind the texture atlases.

A periodic jittered-Voronoi tessellation of a ``size x size`` square (one
centre per square of an ``n x n`` grid, jittered by
:func:`~cervixwsi.synthetic._noise.hash_uniform` of the square's index modulo
``n``), so the square tiles the plane without a seam.  Each pixel finds its
nearest and second-nearest centre among the 2 x 2 grid squares nearest it; the
difference of the two distances gives the cell borders and the offset to the
nearest centre places the nucleus, drawn per pixel (no per-cell loop).

:func:`draw_cells` turns a :class:`CellParams` into hematoxylin and eosin
optical-density amounts: the same function draws basal, parabasal,
intermediate and superficial squamous cells, carcinoma and its mimics, so the
carcinoma of a hard slide and a mimic differ only by their parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from cervixwsi.synthetic._noise import FloatArray, hash_uniform

__all__ = ["CellField", "CellParams", "draw_cells", "lerp_params", "voronoi"]

_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass(frozen=True, eq=False)
class CellField:
    """The tessellation of a periodic square.

    ``d1``, ``d2``: distances (px, in the possibly anisotropic metric) to the
    nearest and second-nearest centre; ``dx``, ``dy``: Euclidean offset (px)
    of the pixel from its nearest centre; ``cell``: flat index of the nearest
    centre into ``u`` (``(n_cells, k)`` uniforms per cell).
    """

    d1: FloatArray
    d2: FloatArray
    dx: FloatArray
    dy: FloatArray
    cell: npt.NDArray[np.intp]
    u: npt.NDArray[np.float32]

    def per_cell(self, values: npt.ArrayLike) -> FloatArray:
        """A per-cell value (``(n_cells,)``) spread to the pixels of each cell."""
        return np.asarray(np.take(np.asarray(values, np.float32), self.cell), dtype=np.float32)

    def border(self, width_px: float) -> FloatArray:
        """Cell-border weight in [0, 1]: 1 on the border, 0 beyond ``width_px``."""
        return np.asarray(
            np.clip(1.0 - (self.d2 - self.d1) / np.float32(width_px), 0.0, 1.0), np.float32
        )


def voronoi(key: int, size: int, n: int, *, n_uniform: int = 12, flatten: float = 1.0) -> CellField:
    """The periodic tessellation of ``[0, size)²`` with ``n x n`` cells.

    ``flatten`` (<= 1) shrinks distances along x, so cells are ``1 / flatten``
    times longer along x than along y (flattened squamous cells).
    """
    s = size / n
    xs = np.arange(size, dtype=np.float64)
    q = np.floor(xs / s - 0.5).astype(np.int64)  # -1 .. n - 1
    g = np.arange(-1, n + 1, dtype=np.int64)  # the grid squares, wrapped at the ends
    jj, ii = np.meshgrid(g, g, indexing="ij")
    u = hash_uniform(key, np.mod(ii, n), np.mod(jj, n), n_uniform + 2)
    jit = 0.6
    cx = ((ii + 0.5 + jit * (u[..., 0] - 0.5)) * s).astype(np.float32)
    cy = ((jj + 0.5 + jit * (u[..., 1] - 0.5)) * s).astype(np.float32)
    lq = (q + 1).astype(np.intp)  # index into g
    px = np.arange(size, dtype=np.float32)[None, :]
    py = np.arange(size, dtype=np.float32)[:, None]
    f2 = np.float32(flatten * flatten)
    d1 = np.zeros((size, size), np.float32)
    d2 = np.full((size, size), np.float32(1e30), np.float32)
    best = np.zeros((size, size), np.int8)
    for k, (dj, di) in enumerate(_OFFSETS):
        gx = np.take(cx[lq + dj], lq + di, axis=1)
        gy = np.take(cy[lq + dj], lq + di, axis=1)
        vx = px - gx
        vy = py - gy
        d = f2 * vx * vx + vy * vy
        if k == 0:
            d1 = d
            continue
        closer = d < d1
        np.minimum(d2, np.where(closer, d1, d), out=d2)
        np.minimum(d1, d, out=d1)
        best[closer] = k
    dj_of = np.array([o[0] for o in _OFFSETS], np.intp)
    di_of = np.array([o[1] for o in _OFFSETS], np.intp)
    rows = lq[:, None] + dj_of[best]
    cols = lq[None, :] + di_of[best]
    cell = rows * g.size + cols
    dx = px - np.take(cx.ravel(), cell)
    dy = py - np.take(cy.ravel(), cell)
    return CellField(
        d1=np.sqrt(d1),
        d2=np.sqrt(d2),
        dx=np.asarray(dx, np.float32),
        dy=np.asarray(dy, np.float32),
        cell=cell,
        u=u[..., 2:].reshape(-1, n_uniform).astype(np.float32),
    )


@dataclass(frozen=True)
class CellParams:
    """How one kind of packed cell looks (sizes in µm, amounts in optical density)."""

    spacing: float  # centre-to-centre distance
    radius: float  # mean nuclear radius (equivalent diameter / 2)
    radius_spread: float  # log-normal spread of the radius (pleomorphism)
    aspect: float  # mean minor / major axis of the nucleus
    aspect_spread: float
    value: float  # hematoxylin of the nucleoplasm
    value_spread: float
    present: float  # fraction of cells whose nucleus is in the section
    chromatin: float  # relative amplitude of the chromatin texture
    membrane: float  # extra hematoxylin on the nuclear membrane
    outline: float  # irregularity of the outline
    vesicular: float  # fraction of vesicular nuclei (clear, chromatin on the rim)
    nucleolus: float  # fraction of nuclei with a prominent nucleolus
    nucleolus_radius: float
    mitosis: float  # fraction of cells in mitosis
    cyto_e: float  # eosin of the cytoplasm
    cyto_h: float  # hematoxylin of the cytoplasm (basophilia)
    keratin: float  # fraction of keratinizing (bright pink) cells
    border_e: float  # eosin of the cell borders
    flatten: float = 1.0  # cells 1 / flatten times longer along x
    orient: float = 1.0  # 0: nuclei along x, 1: random orientation


def lerp_params(a: CellParams, b: CellParams, t: float) -> CellParams:
    """The parameters ``(1 - t) * a + t * b``, field by field."""
    values = {f.name: (1.0 - t) * getattr(a, f.name) + t * getattr(b, f.name) for f in fields(a)}
    return CellParams(**values)


def _f32(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, np.float32)


def draw_cells(
    key: int, size: int, um: float, p: CellParams, grain: FloatArray, lumpy: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Hematoxylin and eosin of packed cells ``p`` over a periodic ``size x size`` square.

    ``um`` is px per µm; ``grain`` (fine, chromatin) and ``lumpy`` (coarser,
    outlines) are periodic z-scored noises of the same size.
    """
    n = max(2, round(size / (p.spacing * um)))
    cells = voronoi(key, size, n, flatten=p.flatten)
    u = cells.u
    radius = p.radius * um * np.exp(p.radius_spread * 1.7 * (u[:, 0] - 0.5))
    radius = np.minimum(radius, 0.62 * p.spacing * um / max(p.flatten, 0.3))
    aspect = np.clip(p.aspect - p.aspect_spread * (u[:, 1] - 0.5), 0.2, 1.0)
    mitosis = u[:, 6] < p.mitosis
    # keep the area of the nucleus: equivalent radius = radius
    a = radius / np.sqrt(aspect)
    b = radius * np.sqrt(aspect)
    a = np.where(mitosis, 0.8 * radius, a)
    b = np.where(mitosis, 0.32 * radius, b)
    angle = np.where(u[:, 2] < p.orient, 2.0 * math.pi * u[:, 7], 0.15 * (u[:, 7] - 0.5))
    value = np.where(mitosis, 2.4, p.value + p.value_spread * (u[:, 3] - 0.5) * 2.0)
    vesicular = np.where(mitosis, 0.0, (u[:, 4] < p.vesicular) * 1.0)
    nucleolus = np.where(
        (u[:, 5] < p.nucleolus) & ~mitosis, p.nucleolus_radius * um * (0.7 + 0.6 * u[:, 9]), 0.0
    )
    present = (u[:, 8] < p.present) | mitosis

    ca = cells.per_cell(angle)
    c, s = np.cos(ca), np.sin(ca)
    pa, pb = cells.per_cell(a), cells.per_cell(b)
    ex = (cells.dx * c + cells.dy * s) / pa
    ey = (cells.dy * c - cells.dx * s) / pb
    rn = np.sqrt(ex * ex + ey * ey) * (1.0 + np.float32(p.outline) * lumpy)
    inside = np.clip((1.0 - rn) * pb + 0.5, 0.0, 1.0) * cells.per_cell(present)
    chrom = 1.0 + np.float32(p.chromatin) * grain
    rim = np.clip(1.0 - np.abs(rn - 0.9) * pb / 1.2, 0.0, 1.0)
    ves = cells.per_cell(vesicular)
    clumps = np.clip(grain - 0.8, 0.0, None)
    body = chrom * (1.0 - 0.6 * ves) + ves * clumps
    hema = inside * (cells.per_cell(value) * body + np.float32(p.membrane) * rim * (1.0 + ves))
    eos = np.zeros_like(hema)
    if p.nucleolus > 0.0:
        r = cells.per_cell(nucleolus)
        ox, oy = 0.25 * pa * c, 0.25 * pa * s
        dn = np.sqrt((cells.dx - ox) ** 2 + (cells.dy - oy) ** 2)
        dot = np.clip(r - dn + 0.5, 0.0, 1.0) * inside * (r > 0)
        hema = hema + 0.9 * dot
        eos = 0.5 * dot
    keratin = cells.per_cell(u[:, 10] < p.keratin)
    mottle = 1.0 + 0.12 * grain + 0.06 * lumpy
    cyto = 1.0 - inside
    eos = eos + (p.cyto_e + 0.45 * keratin) * mottle * (1.0 - 0.7 * inside)
    hema = hema + p.cyto_h * (1.0 - 0.6 * keratin) * cyto
    border = cells.border(0.7 * um) * cyto
    eos = eos + p.border_e * border
    return _f32(hema), _f32(eos)


def draw_scattered(
    key: int,
    size: int,
    um: float,
    spacing: float,
    kinds: tuple[tuple[float, float, float, float, float], ...],
    grain: FloatArray,
) -> FloatArray:
    """Hematoxylin of nuclei scattered in stroma (no cell borders), periodic.

    ``kinds``: rows ``(fraction, a_um, b_um, value, orient)`` with cumulative
    fractions of the grid's cells; a cell beyond the last fraction is empty.
    """
    n = max(2, round(size / (spacing * um)))
    cells = voronoi(key, size, n)
    u = cells.u
    a = np.zeros(u.shape[0])
    b = np.ones(u.shape[0])
    value = np.zeros(u.shape[0])
    angle = 2.0 * math.pi * u[:, 2]
    lo = 0.0
    for frac, a_um, b_um, val, orient in kinds:
        sel = (u[:, 0] >= lo) & (u[:, 0] < lo + frac)
        a = np.where(sel, a_um * um * (0.85 + 0.3 * u[:, 1]), a)
        b = np.where(sel, b_um * um * (0.85 + 0.3 * u[:, 3]), b)
        value = np.where(sel, val * (0.9 + 0.2 * u[:, 4]), value)
        angle = np.where(sel & (u[:, 5] >= orient), 0.25 * (u[:, 2] - 0.5), angle)
        lo += frac
    ca = cells.per_cell(angle)
    c, s = np.cos(ca), np.sin(ca)
    pa, pb = cells.per_cell(np.maximum(a, 1e-3)), cells.per_cell(b)
    ex = (cells.dx * c + cells.dy * s) / pa
    ey = (cells.dy * c - cells.dx * s) / pb
    rn = np.sqrt(ex * ex + ey * ey)
    inside = np.clip((1.0 - rn) * pb + 0.5, 0.0, 1.0) * cells.per_cell(a > 0)
    return _f32(inside * cells.per_cell(value) * (1.0 + 0.2 * grain))
