"""Hard-negative mining: the false-positive patches of a first model, added to training.

The Camelyon16 winners (Wang et al. 2016) trained a patch model, predicted the normal
regions of the training slides, took the patches it called tumor there and trained again
with them as normal patches.  :func:`mine_hard_negatives` finds such patches in one
heatmap; :func:`add_hard_negatives` does the whole step over a list of training slides
(heatmap, mining, :meth:`PatchStore.add_patches <cervixwsi.tiling.PatchStore.add_patches>`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_fraction, check_int, check_real
from cervixwsi.errors import GeometryError, ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.heatmap._heatmap import Heatmap
from cervixwsi.tiling import PatchCoords
from cervixwsi.tissue import SlideLike

if TYPE_CHECKING:
    from cervixwsi.heatmap._generator import HeatmapGenerator
    from cervixwsi.tiling import PatchStore

__all__ = ["add_hard_negatives", "mine_hard_negatives"]

logger = logging.getLogger("cervixwsi.heatmap")

#: Level-0 pixels per pixel of the grid annotations are drawn on (when ``tumor`` is not
#: a raster) as a fraction of the patch extent: fine enough that the margin of one patch
#: covers what drawing by pixel centres can miss.
_DRAW_FRACTION = 8


def _tumor_raster(tumor: Any, heatmap: Heatmap, extent: float) -> Raster | None:
    """``tumor`` (a Raster, anything with ``to_mask(grid)``, or None) as a bool raster."""
    if tumor is None:
        return None
    dims = tuple(heatmap.slide_dimensions)
    if not isinstance(tumor, Raster):
        to_mask = getattr(tumor, "to_mask", None)
        if not callable(to_mask):
            raise ParameterError(
                "mine_hard_negatives.tumor must be a boolean Raster, an object with a "
                f"to_mask(grid) method (an AnnotationSet) or None, got {type(tumor).__name__}"
            )
        d = max(1.0, extent / _DRAW_FRACTION)
        shape = (max(1, int(np.ceil(dims[1] / d))), max(1, int(np.ceil(dims[0] / d))))
        grid = Raster(np.zeros(shape, bool), d, (int(dims[0]), int(dims[1])), mpp=heatmap.mpp)
        tumor = to_mask(grid)
        if not isinstance(tumor, Raster):
            raise ParameterError(
                f"mine_hard_negatives.tumor.to_mask(grid) must return a Raster, got "
                f"{type(tumor).__name__}"
            )
    if tuple(tumor.slide_dimensions) != dims:
        raise GeometryError(
            f"mine_hard_negatives: the tumor mask is of a slide of {tumor.slide_dimensions[0]}x"
            f"{tumor.slide_dimensions[1]} level-0 pixels, the heatmap of {dims[0]}x{dims[1]}: "
            "is it another slide's mask?"
        )
    return tumor


def _touches(
    mask: Raster, x0: npt.NDArray[np.float64], y0: npt.NDArray[np.float64], side: float
) -> npt.NDArray[np.bool_]:
    """Per square ``[x0, x0 + side) x [y0, y0 + side)`` (level 0): does it meet ``mask``?

    Every mask pixel whose square overlaps it counts (rounded outwards), by an
    integral image, so the answer is never "no" for a square that meets the mask.
    """
    arr = np.asarray(mask.array).astype(bool)
    h, w = arr.shape
    d = float(mask.downsample)
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = arr.cumsum(0).cumsum(1)
    c0 = np.clip(np.floor(x0 / d), 0, w).astype(np.intp)
    r0 = np.clip(np.floor(y0 / d), 0, h).astype(np.intp)
    c1 = np.clip(np.ceil((x0 + side) / d), 0, w).astype(np.intp)
    r1 = np.clip(np.ceil((y0 + side) / d), 0, h).astype(np.intp)
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    out: npt.NDArray[np.bool_] = total > 0
    return out


def mine_hard_negatives(
    heatmap: Heatmap,
    *,
    tumor: Raster | Any | None = None,
    threshold: float = 0.5,
    margin: float | None = None,
    max_patches: int | None = None,
    seed: int | np.random.Generator | None = 0,
) -> PatchCoords:
    """The false-positive patches of a heatmap: predicted tumor where there is none.

    A heatmap pixel is a hard negative when its probability is ``>= threshold``, it
    is in the heatmap's tissue (predicted) and its patch, grown by ``margin`` on
    every side, does not meet the tumor.  Its patch is the square of the heatmap's
    patch extent (``patch_size`` pixels of the heatmap's level, in level-0 pixels)
    centred on the pixel: with the study's stride (one pixel per patch) exactly the
    patch that was predicted.

    Parameters
    ----------
    heatmap : Heatmap
        Tumor probabilities of one slide (from :class:`HeatmapGenerator`).
    tumor : Raster, AnnotationSet or None
        The slide's tumor: a boolean :class:`~cervixwsi.geometry.Raster` over the
        same slide (any resolution), anything with a ``to_mask(grid)`` method
        (an :class:`~cervixwsi.annotations.AnnotationSet`: drawn at an eighth of a
        patch), or ``None`` for a normal slide.
    threshold : float
        Minimum probability of a hard negative, in ``[0, 1]`` (0.5, the study's
        heatmap threshold).
    margin : float, optional
        Level-0 pixels kept clear around the tumor; default one patch extent, so
        that no mined patch lies within a patch of an annotation (annotations
        are drawn by hand and their edges are uncertain).
    max_patches : int, optional
        Keep at most this many, drawn at random (uniformly, from ``seed``) so they
        spread over the slide's false positives; default all.
    seed : int or numpy.random.Generator, optional
        Seed of that draw (default 0: the same heatmap gives the same patches).

    Returns
    -------
    PatchCoords
        The patches, in raster order of the heatmap: level-0 corners at the
        heatmap's level, patch size and level downsample, labels 0 (normal),
        ``rows``/``cols`` the heatmap pixels and ``tissue`` NaN (not measured).
        Empty when there are none.

    Raises
    ------
    ParameterError
        For a bad ``threshold``, ``margin``, ``max_patches`` or ``tumor``.
    GeometryError
        If ``tumor`` is a mask of a slide of other dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> from cervixwsi.heatmap import Heatmap, HeatmapInfo
    >>> p = np.zeros((4, 6), np.float32); p[0, 0] = p[3, 5] = p[1, 3] = 0.9
    >>> info = HeatmapInfo("s", 64, 0, 1.0, 64.0, 0.5, "demo")
    >>> heat = Heatmap(p, 64, (384, 256), tissue_mask=np.ones((4, 6), bool), info=info)
    >>> tumor = Raster(np.zeros((4, 6), bool), 64, (384, 256))
    >>> tumor.array[1, 2] = True            # pixel (1, 3) is next to the tumor
    >>> coords = mine_hard_negatives(heat, tumor=tumor, threshold=0.5)
    >>> coords.boxes().tolist()
    [[0.0, 0.0, 64.0, 64.0], [320.0, 192.0, 64.0, 64.0]]
    """
    t = check_fraction(threshold, "mine_hard_negatives.threshold")
    if not isinstance(heatmap, Heatmap):
        raise ParameterError(
            f"mine_hard_negatives.heatmap must be a Heatmap, got {type(heatmap).__name__}"
        )
    info = heatmap.info
    extent = float(info.patch_size) * float(info.level_downsample)
    pad = (
        extent
        if margin is None
        else check_real(margin, "mine_hard_negatives.margin", min=0.0, max=float("inf"))
    )
    limit = (
        None
        if max_patches is None
        else check_int(max_patches, "mine_hard_negatives.max_patches", min=0)
    )
    mask = _tumor_raster(tumor, heatmap, extent)
    p = np.asarray(heatmap.array, np.float64)
    tissue = np.asarray(heatmap.tissue_mask.array, bool)
    with np.errstate(invalid="ignore"):
        candidate = np.isfinite(p) & tissue & (p >= t)
    rows, cols = np.nonzero(candidate)  # raster order
    s = float(heatmap.downsample)
    x0 = np.asarray((cols + 0.5) * s - extent / 2, np.float64)
    y0 = np.asarray((rows + 0.5) * s - extent / 2, np.float64)
    if mask is not None and rows.size:
        clear = ~_touches(mask, x0 - pad, y0 - pad, extent + 2 * pad)
        rows, cols, x0, y0 = rows[clear], cols[clear], x0[clear], y0[clear]
    if limit is not None and rows.size > limit:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(rows.size, size=limit, replace=False))
        rows, cols, x0, y0 = rows[chosen], cols[chosen], x0[chosen], y0[chosen]
    return PatchCoords(
        np.floor(x0 + 0.5).astype(np.int64),
        np.floor(y0 + 0.5).astype(np.int64),
        level=int(info.level),
        size=int(info.patch_size),
        downsample=float(info.level_downsample),
        slide_dimensions=(int(heatmap.slide_dimensions[0]), int(heatmap.slide_dimensions[1])),
        tissue=np.full(rows.size, np.nan, np.float32),
        labels=np.zeros(rows.size, np.int8),
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        grid_shape=(int(p.shape[0]), int(p.shape[1])),
        grid_downsample=s,
    )


def add_hard_negatives(
    store: PatchStore | str | os.PathLike[str],
    slides: Sequence[Any],
    heatmaps: HeatmapGenerator | Sequence[Heatmap],
    *,
    tumors: Sequence[Raster | Any | None] | None = None,
    threshold: float = 0.5,
    max_per_slide: int | None = None,
    heatmap_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Predict the training slides, mine their false positives, add them to the store.

    For each slide: its heatmap (made with ``heatmaps``, a
    :class:`HeatmapGenerator`, or given), :func:`mine_hard_negatives` against its
    tumor, and :meth:`PatchStore.add_patches
    <cervixwsi.tiling.PatchStore.add_patches>` with ``label="normal"``,
    ``source="hard_negative"``.  Resumable: with ``heatmap_dir`` the heatmaps are
    stored (``<dir>/<slide>.zarr``) and reused, and patches already added are not
    added again, so rerunning after an interruption finishes the job.  Train again
    on the store afterwards (it now holds the hard negatives as normal patches).

    Parameters
    ----------
    store : PatchStore or path
        The training patch store; every slide must be one of its slides.
    slides : sequence
        The slides (:class:`~cervixwsi.slide.Slide`, paths, or objects with
        ``.path`` and ``.tumor_mask`` such as
        :class:`~cervixwsi.synthetic.SyntheticSlide`).
    heatmaps : HeatmapGenerator or sequence of Heatmap
        How to predict them (the first-round model in a generator whose patch
        size and level match the store's), or their heatmaps, one per slide.
    tumors : sequence of Raster, AnnotationSet or None, optional
        Each slide's tumor (``None``: normal); default each slide's
        ``.tumor_mask`` if it has one, else ``None``.
    threshold : float
        Minimum probability of a hard negative (0.5).
    max_per_slide : int, optional
        At most this many per slide (drawn at random); default all.
    heatmap_dir : path, optional
        Where to keep the heatmaps a generator makes (resumable runs).
    seed : int
        Seed of the draws (slide ``i`` draws with ``seed + i``).

    Returns
    -------
    dict of str to int
        Per slide name, the patches added now.

    Warns
    -----
    UserWarning
        When no slide has a hard negative (an empty set): the store is unchanged.

    Raises
    ------
    ParameterError
        If ``tumors`` or the heatmaps are not one per slide, or a slide is not one
        of the store's (and as :func:`mine_hard_negatives` and ``add_patches``).

    Examples
    --------
    >>> import numpy as np, tempfile, warnings
    >>> from cervixwsi.heatmap import HeatmapGenerator
    >>> from cervixwsi.slide import ArraySlide
    >>> from cervixwsi.tiling import PatchSampler, PatchStore
    >>> from cervixwsi.tissue import TissueMasker
    >>> rgb = np.full((512, 512, 3), 235, np.uint8); rgb[64:448, 64:448] = (190, 100, 170)
    >>> rgb[64:192, 64:192] = (150, 40, 120)             # a dark region the model mistakes
    >>> slide = ArraySlide(rgb, mpp=1.0, name="normal-1")
    >>> class Darkness:                                  # a "first-round model"
    ...     def predict(self, batch):
    ...         return 1 - batch[..., 1].mean(axis=(1, 2)).astype(np.float32) / 255
    >>> gen = HeatmapGenerator(Darkness(), patch_size=64, masker=TissueMasker(level=0),
    ...                        progress=False)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     store = PatchStore.build(folder + "/p.zarr", [slide],
    ...                              PatchSampler(n_normal_normal_slide=4, patch_size=64),
    ...                              seed=0, progress=False)
    ...     added = add_hard_negatives(store, [slide], gen, threshold=0.7)
    ...     again = add_hard_negatives(store, [slide], gen, threshold=0.7)
    ...     store = PatchStore(store.path)
    ...     print(added, again, int((store.sources == "hard_negative").sum()))
    {'normal-1': 4} {'normal-1': 0} 4
    """
    from cervixwsi.heatmap._generator import HeatmapGenerator
    from cervixwsi.tiling import PatchStore

    check_fraction(threshold, "add_hard_negatives.threshold")
    if max_per_slide is not None:
        check_int(max_per_slide, "add_hard_negatives.max_per_slide", min=0)
    seed = check_int(seed, "add_hard_negatives.seed", min=0)
    opened = store if isinstance(store, PatchStore) else PatchStore(store)
    items = list(slides)
    if tumors is not None and len(tumors) != len(items):
        raise ParameterError(
            f"add_hard_negatives: tumors has {len(tumors)} entries for {len(items)} slides"
        )
    generator = heatmaps if isinstance(heatmaps, HeatmapGenerator) else None
    given: list[Heatmap] = [] if generator is not None else list(heatmaps)  # type: ignore[arg-type]
    if generator is None and len(given) != len(items):
        raise ParameterError(
            f"add_hard_negatives: heatmaps must be a HeatmapGenerator or one Heatmap per "
            f"slide; got {len(given)} heatmaps for {len(items)} slides"
        )
    folder = None if heatmap_dir is None else Path(heatmap_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    added: dict[str, int] = {}
    mined_total = 0
    for i, item in enumerate(items):
        tumor = tumors[i] if tumors is not None else getattr(item, "tumor_mask", None)
        target = _slide_or_path(item)
        if generator is not None:
            out = None
            if folder is not None:
                out = folder / f"{_slide_name(target)}.zarr"
            heat = generator.generate(target, out=out)
        else:
            heat = given[i]
        coords = mine_hard_negatives(
            heat, tumor=tumor, threshold=threshold, max_patches=max_per_slide, seed=seed + i
        )
        mined_total += len(coords)
        name = heat.slide_id
        added[name] = opened.add_patches(target, coords) if len(coords) else 0
        logger.info("%s: %d hard negatives mined, %d added", name, len(coords), added[name])
    if mined_total == 0:
        warnings.warn(
            f"add_hard_negatives: no hard negatives at p >= {threshold:g} on {len(items)} "
            f"slide(s); {opened.path} is unchanged",
            UserWarning,
            stacklevel=2,
        )
    return added


def _slide_or_path(item: Any) -> Any:
    """A slide object or path as given, or the ``.path`` of a ``SyntheticSlide``-like one."""
    if isinstance(item, str | os.PathLike | SlideLike):
        return item
    path = getattr(item, "path", None)
    if path is None:
        raise ParameterError(
            f"add_hard_negatives takes slides as Slide objects, paths or objects with a "
            f".path (a SyntheticSlide), got {item!r}"
        )
    return path


def _slide_name(target: Any) -> str:
    """The name a slide's heatmap is stored under (its name, or its file's stem)."""
    if isinstance(target, str | os.PathLike):
        return Path(target).stem
    return str(target.name)
