"""Level-0 patches of one structure at a time (:func:`structure_patch`): figures, morphometrics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_int, check_real
from cervixwsi.geometry import Raster
from cervixwsi.synthetic._layout import F, SlideLayout, _stain
from cervixwsi.synthetic._noise import TextureBank, stream_key
from cervixwsi.synthetic._render import render
from cervixwsi.synthetic._spec import SyntheticSlideSpec

__all__ = ["STRUCTURES", "structure_patch"]

#: The kinds :func:`structure_patch` draws.
STRUCTURES: tuple[str, ...] = (
    "epithelium",
    "basal",
    "parabasal",
    "intermediate",
    "superficial",
    "stroma",
    "lymphoid",
    "gland",
    "tumor",
    "mimic",
    "necrosis",
    "tangential_basal",
    "crush",
    "cautery",
)

# epithelium depth of each single-layer kind (0 surface, 1 basal row, > 1 stroma)
_DEPTH = {"basal": 0.97, "parabasal": 0.8, "intermediate": 0.45, "superficial": 0.1}


def structure_patch(
    kind: str,
    size: int = 256,
    mpp: float = 0.25,
    difficulty: float = 0.5,
    seed: int = 0,
) -> npt.NDArray[np.uint8]:
    """A level-0 patch that shows only one structure, drawn as slides draw it.

    The patch is rendered by the slide renderer (the same cells, stain and
    scanner noise as :func:`~cervixwsi.synthetic.render_region`) from a
    layout that is that structure everywhere, with the reference stain (no
    per-slide variation), so it serves figures and nuclear morphometrics.

    Parameters
    ----------
    kind : str
        One of :data:`STRUCTURES`: ``"epithelium"`` (full thickness,
        superficial at the top to the basal row and stroma at the bottom,
        compressed into the patch's height), a single epithelial layer
        (``"basal"``, ``"parabasal"``, ``"intermediate"``, ``"superficial"``),
        ``"stroma"`` (collagen, fibroblasts, scattered lymphocytes,
        capillaries with red cells), ``"lymphoid"`` (a lymphocyte cluster),
        ``"gland"`` (an endocervical gland in stroma), ``"tumor"`` (squamous
        cell carcinoma at ``difficulty``), ``"mimic"`` (immature squamous
        metaplasia, what the carcinoma of difficulty 1 resembles),
        ``"necrosis"`` (comedo-type central necrosis of a nest: eosinophilic
        granular debris with ghost cells and nuclear dust, in a disc of 0.38
        of the patch's side, with viable carcinoma at ``difficulty`` around
        it), ``"tangential_basal"`` (an elongated island of basal and
        parabasal cells with a dark palisaded edge in stroma: tangentially
        cut basal epithelium), ``"crush"`` or ``"cautery"`` (the tissue
        border at the top, glass above it, and a band of crushed tissue with
        smeared dark nuclei, or of cauterised tissue, homogenised and
        amphophilic with streaming nuclei, over stroma).
    size : int
        Side in level-0 pixels, 64 to 8192 (default 256).
    mpp : float
        Micrometres per pixel, as :class:`SyntheticSlideSpec` (default 0.25).
    difficulty : float
        In [0, 1]; changes ``"tumor"`` and ``"necrosis"`` only (default 0.5).
    seed : int
        Picks the atlas variant and the offsets into it.

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 RGB.

    Raises
    ------
    ParameterError
        For an unknown kind or an out-of-range argument.

    Examples
    --------
    >>> from cervixwsi.synthetic import structure_patch
    >>> patch = structure_patch("tumor", size=128, difficulty=0.0)
    >>> patch.shape, patch.dtype
    ((128, 128, 3), dtype('uint8'))
    >>> bool(patch.mean() < structure_patch("stroma", size=128).mean())  # darker: nuclei
    True
    >>> necrosis = structure_patch("necrosis", size=256, difficulty=0.0).astype(int)
    >>> dark = necrosis.sum(axis=2) < 400  # nuclei and nuclear dust
    >>> rim = np.hypot(*np.mgrid[-128:128, -128:128]) > 115  # viable carcinoma around it
    >>> bool(dark[96:160, 96:160].mean() < 0.5 * dark[rim].mean())
    True
    """
    check_choice(kind, "structure_patch.kind", STRUCTURES)
    size = check_int(size, "structure_patch.size", min=64, max=8192)
    spec = SyntheticSlideSpec(
        width=size,
        height=size,
        mpp=check_real(mpp, "structure_patch.mpp", min=0.05, max=5.0),
        tumor=kind in ("tumor", "necrosis"),
        difficulty=check_real(difficulty, "structure_patch.difficulty", min=0.0, max=1.0),
        seed=check_int(seed, "structure_patch.seed", min=0, max=2**63 - 1),
        stain_variation=0.0,
        n_nests=0,
        large_nests=0,
    )
    return render(_layout(spec, kind), 0, 0, size, size)


def _layout(spec: SyntheticSlideSpec, kind: str) -> SlideLayout:
    d = spec.mask_downsample
    rows, cols = math.ceil(spec.height / d), math.ceil(spec.width / d)
    fields = np.zeros((rows, cols, F.N), np.float32)
    fields[..., F.SDF] = 1e6
    if kind == "epithelium":
        v = (np.arange(rows, dtype=np.float32) + 0.5) / rows
        fields[..., F.DEPTH] = (1.15 * v)[:, None]
    else:
        fields[..., F.DEPTH] = _DEPTH.get(kind, 4.0)
    fields[..., F.TUMOR] = float(kind in ("tumor", "necrosis"))
    fields[..., F.MIMIC] = float(kind == "mimic")
    fields[..., F.LYMPH] = float(kind == "lymphoid")
    rng = np.random.default_rng(stream_key(spec.seed, 7))
    theta = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    if kind in ("necrosis", "tangential_basal", "crush", "cautery"):
        _mimic_patch(fields, kind, xx, yy, spec, theta)
    fields[..., F.PSI] = 0.8 * (xx * np.cos(theta) + yy * np.sin(theta)) * d
    glands = np.zeros((0, 5), np.float64)
    if kind == "gland":
        a = min(30.0 / spec.mpp, 0.3 * spec.width)
        glands = np.array([[spec.width / 2, spec.height / 2, a, 0.6 * a, theta]])
    stain = _stain(spec, np.random.default_rng(stream_key(spec.seed, 3)))
    textures = TextureBank.make(stream_key(spec.seed, 4))
    glass = np.broadcast_to(stain.glass, (textures.size, textures.size, 3)).copy()
    glass_u8 = np.clip(glass + 0.8 * textures.white[..., None] + 0.5, 0.0, 255.0).astype(np.uint8)
    tissue = fields[..., F.SDF] > 0
    return SlideLayout(
        spec=spec,
        fields=fields,
        artifact_fields=np.zeros((rows, cols, 0), np.float32),
        pearls=np.zeros((0, 3)),
        stain=stain,
        textures=textures,
        glass=glass,
        glass_u8=glass_u8,
        tissue_mask=Raster(tissue, d, spec.dimensions, mpp=spec.mpp),
        tumor_mask=Raster(tissue & spec.tumor, d, spec.dimensions, mpp=spec.mpp),
        n_lesions=int(spec.tumor),
        glands=glands,
    )


def _mimic_patch(
    fields: npt.NDArray[np.float32],
    kind: str,
    xx: npt.NDArray[np.float32],
    yy: npt.NDArray[np.float32],
    spec: SyntheticSlideSpec,
    theta: float,
) -> None:
    """The fields of the necrosis, tangential-basal, crush and cautery patches (in place)."""
    d = spec.mask_downsample
    side = spec.width / d  # mask px
    if kind in ("necrosis", "tangential_basal"):  # drawn and smoothed as the layout does
        canvas = np.zeros(xx.shape, np.float32)
        centre = (round(side / 2 * 16 - 8), round(side / 2 * 16 - 8))
        if kind == "necrosis":
            a = b = 0.38 * side
        else:
            a = min(0.42 * side, 80.0 / spec.mpp / d)
            b = 0.45 * a
        axes = (round(a * 16), round(b * 16))
        cv2.ellipse(canvas, centre, axes, math.degrees(theta), 0, 360, 1.0, -1, cv2.LINE_8, 4)
        channel = F.NECROSIS if kind == "necrosis" else F.BASALOID
        fields[..., channel] = cv2.GaussianBlur(canvas, (0, 0), 0.8)
    else:  # the border near the top, a band 0.55 of the side (at most 120 µm) below it
        sdf = (yy + 0.5 - 0.1 * side) * d  # level-0 px
        fields[..., F.SDF] = sdf
        band = min(0.55 * spec.width, 120.0 / spec.mpp)
        sign = 1.0 if kind == "crush" else -1.0
        fields[..., F.CRUSH] = sign * np.clip((band - sdf) / (1.5 * d) + 0.5, 0.0, 1.0)
