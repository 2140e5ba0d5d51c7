"""Periodic texture atlases: each kind of tissue drawn cell by cell, once per process.

Drawing cells per pixel is expensive, so it is done once per ``(kind, mpp,
difficulty, variant)`` on a periodic square of about 256 µm (an *atlas*), and
the tile renderer samples the atlases by integer periodic indexing at global
level-0 coordinates (plus a per-slide offset), blending them with the weights
the layout gives each pixel.  An atlas holds hematoxylin and eosin optical
density amounts before the stain vectors, so it does not depend on a slide's
stain and a whole cohort shares the same few atlases.

The kinds:

* ``"basal"``, ``"parabasal"``, ``"intermediate"``, ``"superficial"``: the
  layers of non-keratinizing squamous epithelium (nuclei about 7, 7.5, 8 and 5
  µm; crowded dark basal cells, pale glycogenated intermediate cells,
  flattened pink superficial cells with pyknotic nuclei);
* ``"stroma"``: hematoxylin of spindle fibroblasts (about 2.5 x 12 µm) and
  scattered lymphocytes (about 7 µm) (the collagen is drawn along the layout's
  fibre field by the renderer);
* ``"lymphoid"``: a dense cluster of lymphocytes;
* ``"mimic"``: immature squamous metaplasia / tangentially cut basal
  epithelium, crowded basaloid cells (nuclei about 8.5 µm);
* ``"tumor"``: squamous cell carcinoma at the given difficulty: at 0 large
  (10-25 µm) pleomorphic hyperchromatic or vesicular nuclei with prominent
  nucleoli, mitoses and keratinizing cells; towards 1 its parameters move to
  those of ``"mimic"`` with 7 % larger nuclei and rare nucleoli.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from cervixwsi.synthetic._cells import (
    CellParams,
    draw_cells,
    draw_scattered,
    lerp_params,
)
from cervixwsi.synthetic._noise import FloatArray, _periodic_noise, stream_key

__all__ = ["ATLAS_KINDS", "N_VARIANTS", "PAD", "TUMOR_EASY", "TUMOR_HARD", "atlas", "atlas_size"]

#: Extent of an atlas in µm (its side in px is this over the mpp, within bounds).
ATLAS_UM = 256.0
#: Pixels each atlas repeats beyond its period, so a region up to this size
#: (a tile plus its margin) is one slice.
PAD = 384
#: Atlas variants; a slide uses the one its seed picks.
N_VARIANTS = 2

BASAL = CellParams(
    spacing=7.2, radius=3.4, radius_spread=0.1, aspect=0.62, aspect_spread=0.15,
    value=1.45, value_spread=0.12, present=0.95, chromatin=0.25, membrane=0.3,
    outline=0.06, vesicular=0.0, nucleolus=0.0, nucleolus_radius=0.6, mitosis=0.004,
    cyto_e=0.36, cyto_h=0.12, keratin=0.0, border_e=0.2,
)  # fmt: skip
PARABASAL = CellParams(
    spacing=10.0, radius=3.75, radius_spread=0.12, aspect=0.8, aspect_spread=0.2,
    value=1.1, value_spread=0.15, present=0.92, chromatin=0.3, membrane=0.3,
    outline=0.06, vesicular=0.0, nucleolus=0.0, nucleolus_radius=0.6, mitosis=0.002,
    cyto_e=0.42, cyto_h=0.1, keratin=0.0, border_e=0.22,
)  # fmt: skip
INTERMEDIATE = CellParams(
    spacing=21.0, radius=4.0, radius_spread=0.12, aspect=0.85, aspect_spread=0.15,
    value=0.95, value_spread=0.12, present=0.8, chromatin=0.35, membrane=0.35,
    outline=0.06, vesicular=0.0, nucleolus=0.0, nucleolus_radius=0.6, mitosis=0.0,
    cyto_e=0.13, cyto_h=0.02, keratin=0.0, border_e=0.38, flatten=0.75,
)  # fmt: skip
SUPERFICIAL = CellParams(
    spacing=22.0, radius=2.5, radius_spread=0.12, aspect=0.75, aspect_spread=0.2,
    value=1.9, value_spread=0.2, present=0.75, chromatin=0.05, membrane=0.1,
    outline=0.04, vesicular=0.0, nucleolus=0.0, nucleolus_radius=0.6, mitosis=0.0,
    cyto_e=0.62, cyto_h=0.0, keratin=0.0, border_e=0.3, flatten=0.4, orient=0.2,
)  # fmt: skip
MIMIC = CellParams(
    spacing=9.6, radius=4.3, radius_spread=0.12, aspect=0.75, aspect_spread=0.2,
    value=1.25, value_spread=0.15, present=0.94, chromatin=0.28, membrane=0.3,
    outline=0.06, vesicular=0.03, nucleolus=0.03, nucleolus_radius=0.6, mitosis=0.004,
    cyto_e=0.4, cyto_h=0.12, keratin=0.03, border_e=0.2,
)  # fmt: skip
#: The carcinoma of difficulty 1: a mimic with 7 % larger nuclei, a few nucleoli.
TUMOR_HARD = CellParams(
    spacing=9.8, radius=4.6, radius_spread=0.14, aspect=0.74, aspect_spread=0.21,
    value=1.28, value_spread=0.16, present=0.94, chromatin=0.29, membrane=0.31,
    outline=0.065, vesicular=0.04, nucleolus=0.06, nucleolus_radius=0.65, mitosis=0.006,
    cyto_e=0.4, cyto_h=0.12, keratin=0.05, border_e=0.2,
)  # fmt: skip
#: The carcinoma of difficulty 0: textbook high-grade SCC.
TUMOR_EASY = CellParams(
    spacing=16.0, radius=7.0, radius_spread=0.38, aspect=0.7, aspect_spread=0.35,
    value=1.6, value_spread=0.35, present=0.97, chromatin=0.35, membrane=0.5,
    outline=0.12, vesicular=0.4, nucleolus=0.85, nucleolus_radius=0.95, mitosis=0.04,
    cyto_e=0.45, cyto_h=0.14, keratin=0.25, border_e=0.22,
)  # fmt: skip

_CELLS = {
    "basal": BASAL,
    "parabasal": PARABASAL,
    "intermediate": INTERMEDIATE,
    "superficial": SUPERFICIAL,
    "mimic": MIMIC,
}
ATLAS_KINDS: tuple[str, ...] = (*_CELLS, "stroma", "lymphoid", "tumor")
_STREAM = {kind: 300 + i for i, kind in enumerate(ATLAS_KINDS)}


def atlas_size(mpp: float) -> int:
    """Side in level-0 px of the atlases at ``mpp`` (a multiple of 8, 128 to 1024).

    256 µm at 0.25 µm/px; capped at 1024 px so that an atlas takes at most
    about 16 MB (finer scans get atlases of fewer µm).
    """
    return int(np.clip(round(ATLAS_UM / mpp / 8.0) * 8, 128, 1024))


def tumor_params(difficulty: float) -> CellParams:
    """The carcinoma's cells at hardness ``difficulty`` in [0, 1].

    ``difficulty`` is what :func:`~cervixwsi.synthetic._spec.drawn_difficulty`
    gives (the dial's calibrated hardness), not the spec's own.  The parameters
    move from :data:`TUMOR_EASY` to :data:`TUMOR_HARD` by
    ``1 - (1 - difficulty) ** 2``: faster at first, so that the middle of the
    dial is already moderately hard.
    """
    t = 1.0 - (1.0 - float(difficulty)) ** 2
    return lerp_params(TUMOR_EASY, TUMOR_HARD, t)


@functools.lru_cache(maxsize=4)
def _noises(size: int, um: float, variant: int) -> tuple[FloatArray, FloatArray]:
    """Fine (chromatin) and coarser (outlines) periodic noise shared by the kinds."""
    rng = np.random.default_rng(stream_key(1_000_003 * variant + 17, 299))
    return (
        _periodic_noise(rng, size, max(0.6, 0.25 * um)),
        _periodic_noise(rng, size, max(1.0, 1.2 * um)),
    )


_LOCK = threading.Lock()


def atlas(kind: str, mpp: float, difficulty: float, variant: int) -> FloatArray:
    """The atlas of ``kind``: ``(A + PAD, A + PAD, 2)`` float32 hematoxylin and eosin.

    ``A`` is :func:`atlas_size`; the array repeats periodically, so
    ``out[y:y + h, x:x + w]`` with ``0 <= x, y < A`` and ``w, h <= PAD`` is
    the periodic texture at ``(x, y)``.  ``difficulty`` only matters for
    ``"tumor"`` (pass 0.0 otherwise, so the cache is shared); it is rounded
    to 0.01.  Atlases are cached per process (the last 24; about 16 MB each
    at 0.25 µm/px), and made once even when drawing threads ask together.
    """
    with _LOCK:
        return _atlas(kind, float(mpp), round(float(difficulty), 2), int(variant))


@functools.lru_cache(maxsize=24)
def _atlas(kind: str, mpp: float, difficulty: float, variant: int) -> FloatArray:
    size = atlas_size(mpp)
    um = 1.0 / mpp
    key = stream_key(1_000_003 * variant + 17, _STREAM[kind])
    grain, lumpy = _noises(size, um, variant)
    # shift the shared noises per kind, so that kinds blended together differ
    shift = (7 * _STREAM[kind]) % size
    grain = np.roll(grain, (shift, 3 * shift), axis=(0, 1))
    lumpy = np.roll(lumpy, (5 * shift, shift), axis=(0, 1))
    if kind == "stroma":
        hema = draw_scattered(
            key, size, um, 16.0, ((0.3, 6.0, 1.2, 1.3, 0.5), (0.05, 3.3, 3.1, 1.8, 1.0)), grain
        )
        eos = np.zeros_like(hema)
    elif kind == "lymphoid":
        hema = draw_scattered(key, size, um, 8.0, ((0.85, 3.3, 3.1, 1.75, 1.0),), grain)
        eos = 0.25 * (1.0 - np.minimum(hema, 1.0)) * (1.0 + 0.1 * grain)
        hema = hema + 0.05
    else:
        params = tumor_params(difficulty) if kind == "tumor" else _CELLS[kind]
        hema, eos = draw_cells(key, size, um, params, grain, lumpy)
    out = np.stack([hema, eos], axis=-1).astype(np.float32)
    reps = -(-(size + PAD) // size)
    out = np.tile(out, (reps, reps, 1))[: size + PAD, : size + PAD]
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out
