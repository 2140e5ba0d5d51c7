"""Patches: regular grids, random training samples and on-disk patch stores.

* :class:`PatchGrid` lays the regular grid of patches over a slide and keeps
  the ones with enough tissue (vectorised: one integral-image lookup per patch,
  no Python loop).
* :class:`PatchSampler` draws the study's random training patches: tumor
  patches from the annotation mask and normal patches from the rest of the
  tissue, uniformly over area at level-0 resolution, labelled by a documented
  rule.
* :class:`PatchStore` extracts sampled patches into a zarr store (resumable,
  multi-threaded) and reads them back as numpy batches or as a
  ``tf.data.Dataset`` (TensorFlow is imported only then).

All three speak :class:`PatchCoords`: level-0 top-left corners plus the level,
size and resolution of the patches, and for a grid the ``(row, col)`` of each
patch so that a heatmap can place one value per patch.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.slide import ArraySlide
>>> from cervixwsi.tissue import TissueMask
>>> slide = ArraySlide(np.full((600, 800, 3), 230, np.uint8), mpp=0.5)
>>> tissue = TissueMask(np.ones((6, 8), bool), 100, (800, 600))
>>> coords = PatchGrid(patch_size=256).coords(slide, tissue)
>>> len(coords), coords.grid_shape
(6, (3, 4))
>>> read_patch(slide, coords, 0).shape
(256, 256, 3)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._version import __version__
from cervixwsi.errors import (
    GeometryError,
    ParameterError,
    PatchStoreError,
    RegionError,
    SamplingError,
    StoreMismatchError,
)
from cervixwsi.geometry import Raster, level_for_downsample
from cervixwsi.tissue import SlideLike, TissueMask, TissueMasker

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "PatchCoords",
    "PatchGrid",
    "PatchSampler",
    "PatchStore",
    "read_patch",
    "read_patches",
]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FORMAT_NAME = "cervixwsi.PatchStore"
FORMAT_VERSION = 1


# --- coordinates ----------------------------------------------------------------------


_EMPTY_F32: npt.NDArray[np.float32] = np.zeros(0, np.float32)
_EMPTY_I8: npt.NDArray[np.int8] = np.zeros(0, np.int8)
_EMPTY_I64: IntArray = np.zeros(0, np.int64)


def _frozen(a: npt.ArrayLike, dtype: type[np.generic]) -> Any:
    out = np.array(a, dtype=dtype, copy=True).reshape(-1)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class PatchCoords:
    """Square patches over one slide, as arrays (one entry per patch).

    Parameters
    ----------
    x, y : array_like of int
        Level-0 top-left corners.
    level : int
        The pyramid level the pixels are read from.
    size : int
        Patch side in output pixels (e.g. 256).
    downsample : float
        Level-0 pixels per output pixel: the level's downsample, or
        ``target_mpp / slide_mpp`` for patches at a target resolution.  A
        patch covers ``size * downsample`` level-0 pixels (:attr:`extent`).
    slide_dimensions : tuple of int
        The slide's level-0 ``(width, height)``.
    tissue : array_like of float, optional
        Tissue fraction of each patch (1 when no mask was used).
    labels : array_like of int, optional
        1 tumor, 0 normal, -1 unlabelled (grid patches).
    rows, cols : array_like of int, optional
        Grid indices (``-1`` for sampled patches).
    grid_shape : tuple of int, optional
        ``(rows, cols)`` of the whole grid over the slide (``None`` for sampled
        patches): a :class:`~cervixwsi.geometry.Raster` of this shape at
        downsample :attr:`grid_downsample` holds one value per grid patch.
    grid_downsample : float, optional
        Level-0 pixels between neighbouring grid patches (the stride).

    Examples
    --------
    >>> c = PatchCoords([0, 256], [0, 0], level=0, size=256, downsample=1.0,
    ...                 slide_dimensions=(512, 300))
    >>> len(c), c.extent, c[1].x
    (2, 256.0, array([256]))
    >>> c.boxes()
    array([[  0.,   0., 256., 256.],
           [256.,   0., 256., 256.]])
    """

    x: IntArray
    y: IntArray
    level: int
    size: int
    downsample: float
    slide_dimensions: tuple[int, int]
    tissue: npt.NDArray[np.float32] = dataclasses.field(default_factory=lambda: _EMPTY_F32)
    labels: npt.NDArray[np.int8] = dataclasses.field(default_factory=lambda: _EMPTY_I8)
    rows: IntArray = dataclasses.field(default_factory=lambda: _EMPTY_I64)
    cols: IntArray = dataclasses.field(default_factory=lambda: _EMPTY_I64)
    grid_shape: tuple[int, int] | None = None
    grid_downsample: float | None = None

    def __post_init__(self) -> None:
        x = _frozen(self.x, np.int64)
        n = len(x)
        fields: dict[str, Any] = {"x": x, "y": _frozen(self.y, np.int64)}
        for name, dtype, fill in (
            ("tissue", np.float32, 1.0),
            ("labels", np.int8, -1),
            ("rows", np.int64, -1),
            ("cols", np.int64, -1),
        ):
            value = np.asarray(getattr(self, name))
            fields[name] = _frozen(np.full(n, fill) if value.size == 0 and n else value, dtype)
        for name, value in fields.items():
            if len(value) != n:
                raise GeometryError(f"PatchCoords.{name} has {len(value)} entries, x has {n}")
            object.__setattr__(self, name, value)
        if int(self.size) <= 0 or not (math.isfinite(self.downsample) and self.downsample > 0):
            raise GeometryError(
                f"PatchCoords needs a positive size and downsample, got size={self.size}, "
                f"downsample={self.downsample}"
            )
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "level", int(self.level))
        object.__setattr__(self, "downsample", float(self.downsample))
        w, h = self.slide_dimensions
        object.__setattr__(self, "slide_dimensions", (int(w), int(h)))

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (
            f"PatchCoords(n={len(self)}, level={self.level}, size={self.size}, "
            f"downsample={self.downsample:g}, slide_dimensions={self.slide_dimensions}, "
            f"grid_shape={self.grid_shape})"
        )

    def __getitem__(self, index: int | slice | npt.ArrayLike) -> PatchCoords:
        """The patches at ``index`` (an int, a slice, indices or a boolean mask)."""
        if isinstance(index, int | np.integer):
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        index = index if isinstance(index, slice) else np.asarray(index)
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=self.y[index],
            tissue=self.tissue[index],
            labels=self.labels[index],
            rows=self.rows[index],
            cols=self.cols[index],
        )

    @property
    def extent(self) -> float:
        """The level-0 side of every patch: ``size * downsample``."""
        return self.size * self.downsample

    def boxes(self) -> npt.NDArray[np.float64]:
        """Level-0 ``(x, y, width, height)`` of every patch, shape ``(n, 4)``."""
        e = np.full(len(self), self.extent)
        return np.stack([self.x.astype(np.float64), self.y.astype(np.float64), e, e], axis=1)

    def centers(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Level-0 ``(x, y)`` centres of the patches."""
        half = self.extent / 2
        return self.x.astype(np.float64) + half, self.y.astype(np.float64) + half


# --- reading patches ------------------------------------------------------------------


def read_patch(slide: SlideLike, coords: PatchCoords, index: int) -> npt.NDArray[np.uint8]:
    """The RGB pixels of patch ``index`` of ``coords``: ``(size, size, 3)`` uint8.

    Parts outside the slide are white.  When ``coords.downsample`` is not the
    level's downsample (patches at a target mpp), the level's pixels are
    resampled (``cv2.INTER_AREA``) to ``size``.
    """
    if not (0 <= coords.level < slide.level_count):
        raise RegionError(
            f"slide {slide.name!r} has levels 0..{slide.level_count - 1}, "
            f"the patches are of level {coords.level}"
        )
    level_ds = float(slide.level_downsamples[coords.level])
    read = max(1, round(coords.size * coords.downsample / level_ds))
    location = (int(coords.x[index]), int(coords.y[index]))
    pixels = np.asarray(slide.read_region(location, coords.level, (read, read)))
    if read != coords.size:
        interpolation = cv2.INTER_AREA if read > coords.size else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (coords.size, coords.size), interpolation=interpolation)
    return pixels


def read_patches(
    slide: SlideLike, coords: PatchCoords, indices: npt.ArrayLike | None = None
) -> npt.NDArray[np.uint8]:
    """The patches at ``indices`` (default all) as one ``(k, size, size, 3)`` uint8 array."""
    idx = np.arange(len(coords)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.empty((len(idx), coords.size, coords.size, 3), np.uint8)
    for k, i in enumerate(idx):
        out[k] = read_patch(slide, coords, int(i))
    return out


# --- resolution helpers ---------------------------------------------------------------


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ParameterError(f"{owner}.{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_fraction(owner: str, name: str, value: Any) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if not (real and 0 <= value <= 1):
        raise ParameterError(f"{owner}.{name} must be a number in [0, 1], got {value!r}")


def _slide_mpp(slide: SlideLike) -> float | None:
    return None if slide.mpp is None else float(np.mean(slide.mpp))


def _resolve(slide: SlideLike, level: int, mpp: float | None, owner: str) -> tuple[int, float]:
    """``(level to read, level-0 pixels per patch pixel)``."""
    if mpp is None:
        if not (isinstance(level, int) and 0 <= level < slide.level_count):
            raise RegionError(
                f"{owner}: slide {slide.name!r} has levels 0..{slide.level_count - 1}, "
                f"got level {level!r}"
            )
        return level, float(slide.level_downsamples[level])
    mpp0 = _slide_mpp(slide)
    if mpp0 is None:
        raise ParameterError(
            f"{owner}(mpp={mpp}) needs the slide's resolution, but slide {slide.name!r} "
            "records no mpp; give a level instead"
        )
    downsample = mpp / mpp0
    return level_for_downsample(slide.level_downsamples, downsample), downsample


def _check_mask(mask: Raster | None, dims: tuple[int, int], what: str) -> TissueMask | None:
    if mask is None:
        return None
    if not isinstance(mask, Raster):
        raise ParameterError(f"the {what} must be a Raster (e.g. a TissueMask), got {mask!r}")
    if tuple(mask.slide_dimensions) != tuple(dims):
        raise GeometryError(
            f"the {what} is of a slide of {mask.slide_dimensions[0]}x{mask.slide_dimensions[1]} "
            f"level-0 pixels, but the slide is {dims[0]}x{dims[1]}: is it another slide's mask?"
        )
    return TissueMask.from_raster(mask)


# --- the grid -------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchGrid:
    """The regular grid of patches over a slide, keeping those with enough tissue.

    Parameters
    ----------
    patch_size : int
        Patch side in pixels, default 256 (the study's value).
    level : int
        Pyramid level the patches are read from, default 0 (the study's value).
        A level-``k`` patch covers ``patch_size * downsample_k`` level-0 pixels.
    stride : int, optional
        Step between patches in the same pixels as ``patch_size``; default
        ``patch_size`` (patches tile the slide without overlap).
    min_tissue : float
        Keep patches whose tissue fraction is at least this, default 0.5;
        0 keeps every patch.
    mpp : float, optional
        Patches at this resolution (µm/px) instead of at ``level``: read from
        the coarsest level at least as fine and resampled.
    include_partial : bool
        Also lay patches over the right and bottom edges that reach past the
        slide (read as white beyond it), so the grid covers the whole slide
        (for heatmaps).  Default False: every patch lies inside the slide.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> slide = ArraySlide(np.zeros((500, 700, 3), np.uint8))
    >>> PatchGrid(256, min_tissue=0).coords(slide).grid_shape
    (2, 3)
    >>> len(PatchGrid(256, min_tissue=0).coords(slide))
    2
    >>> len(PatchGrid(256, min_tissue=0, include_partial=True).coords(slide))
    6
    """

    patch_size: int = 256
    level: int = 0
    stride: int | None = None
    min_tissue: float = 0.5
    mpp: float | None = None
    include_partial: bool = False

    def _validate(self) -> None:
        _positive_int("PatchGrid", "patch_size", self.patch_size)
        if self.stride is not None:
            _positive_int("PatchGrid", "stride", self.stride)
        _check_fraction("PatchGrid", "min_tissue", self.min_tissue)
        if self.mpp is not None and not (
            isinstance(self.mpp, int | float) and math.isfinite(self.mpp) and self.mpp > 0
        ):
            raise ParameterError(f"PatchGrid.mpp must be a positive number, got {self.mpp!r}")

    def coords(self, slide: SlideLike, mask: Raster | None = None) -> PatchCoords:
        """The grid patches of ``slide`` with tissue fraction at least ``min_tissue``.

        Parameters
        ----------
        slide : SlideLike
            The slide (only its geometry is used).
        mask : Raster, optional
            Its tissue mask (e.g. from :class:`~cervixwsi.tissue.TissueMasker`);
            without one every patch counts as all tissue.

        Returns
        -------
        PatchCoords
            In row-major grid order, with ``rows``, ``cols`` and ``grid_shape``.

        Raises
        ------
        GeometryError
            If the mask belongs to a slide of other dimensions, or a patch is
            larger than the slide (unless ``include_partial``).
        RegionError
            If the slide lacks ``level``.
        """
        self._validate()
        level, downsample = _resolve(slide, self.level, self.mpp, "PatchGrid")
        width, height = slide.dimensions
        tissue_mask = _check_mask(mask, (width, height), "tissue mask")
        extent = self.patch_size * downsample
        step = (self.stride or self.patch_size) * downsample
        grid_shape = (math.ceil(height / step - 1e-9), math.ceil(width / step - 1e-9))
        if self.include_partial:
            n_rows, n_cols = grid_shape
        else:
            if extent > width or extent > height:
                raise GeometryError(
                    f"a patch of {extent:g} level-0 pixels (patch_size={self.patch_size} at "
                    f"level {level}) does not fit slide {slide.name!r} of {width}x{height}; "
                    "use include_partial=True to pad it with white"
                )
            n_rows = math.floor((height - extent) / step + 1e-9) + 1
            n_cols = math.floor((width - extent) / step + 1e-9) + 1
        col_grid, row_grid = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
        rows, cols = row_grid.ravel(), col_grid.ravel()
        xs = np.floor(cols * step + 1e-9).astype(np.int64)
        ys = np.floor(rows * step + 1e-9).astype(np.int64)
        if tissue_mask is None:
            inside_w = np.minimum(xs + extent, width) - xs
            inside_h = np.minimum(ys + extent, height) - ys
            tissue = inside_w * inside_h / (extent * extent)
        else:
            tissue = tissue_mask.fraction(xs, ys, extent, extent)
        keep = tissue >= self.min_tissue - 1e-12 if self.min_tissue > 0 else np.ones_like(xs, bool)
        logger.debug("grid over %s: %d of %d patches kept", slide.name, int(keep.sum()), keep.size)
        return PatchCoords(
            xs[keep],
            ys[keep],
            level=level,
            size=self.patch_size,
            downsample=downsample,
            slide_dimensions=(width, height),
            tissue=tissue[keep],
            rows=rows[keep],
            cols=cols[keep],
            grid_shape=grid_shape,
            grid_downsample=step,
        )


# --- the sampler ----------------------------------------------------------------------


def _grow(mask: TissueMask, margin_um: float) -> TissueMask:
    """``mask`` grown by ``margin_um`` (an elliptical dilation at the mask's resolution)."""
    if margin_um <= 0 or not mask.array.any():
        return mask
    if mask.pixel_size_um is None:
        raise ParameterError(
            "normal_margin_um needs the tumor mask's mpp (the mask records none); "
            "use normal_margin_um=0 or give the mask an mpp"
        )
    radius = math.ceil(margin_um / mask.pixel_size_um)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = cv2.dilate(mask.array.view(np.uint8), kernel).view(np.bool_)
    return TissueMask(grown, mask.downsample, mask.slide_dimensions, mpp=mask.mpp)


@dataclass(frozen=True)
class _DrawContext:
    """What every draw of one slide shares."""

    tissue: TissueMask
    rng: np.random.Generator
    extent: float
    taken: set[int]  # level-0 positions already returned (no duplicates across labels)
    slide: str


@dataclass(frozen=True)
class PatchSampler:
    """The study's random training patches: tumor patches and normal-tissue patches.

    Positions are uniform over area at level-0 resolution: a candidate's
    centre is drawn in a mask pixel chosen with probability proportional to
    its level-0 area (clipped at the slide's edge), at a uniform continuous
    offset inside it, and floored to an integer level-0 pixel; candidates that
    break the rules below are redrawn, and a position is never returned twice.

    Every sampled patch lies wholly inside the slide and has a tissue fraction
    of at least ``min_tissue``.  Labels:

    * ``label_rule="center"`` (default): **tumor** (1) when the patch's centre
      point lies in the tumor mask; **normal** (0) when it lies outside the
      tumor mask grown by ``normal_margin_um``.
    * ``label_rule="fraction"``: **tumor** when at least
      ``min_tumor_fraction`` of the patch's area is tumor; **normal** when the
      patch does not overlap the grown tumor mask at all.

    Tumor candidates are drawn in the tumor mask, normal ones in the tissue
    mask.

    Parameters
    ----------
    n_tumor : int
        Tumor patches per tumor slide, default 1000 (the study's value).
    n_normal : int
        Normal patches per tumor slide, default 500 (the study's value).
    n_normal_normal_slide : int
        Normal patches per slide without tumor, default 500 (the study's value).
    patch_size : int
        Patch side in pixels, default 256 (the study's value).
    level : int
        Level the patches are read from, default 0 (the study's value).
    label_rule : {"center", "fraction"}
        See above.
    min_tumor_fraction : float
        For ``label_rule="fraction"``, default 0.5.
    normal_margin_um : float
        Normal patches keep this distance (µm) from tumor, default 0.
    min_tissue : float
        Minimum tissue fraction of every patch, default 0.5.
    on_shortfall : {"warn", "raise"}
        When fewer valid positions are found than asked (in
        ``max_draws_per_patch`` candidates per asked patch), return those
        with a warning, or raise :class:`~cervixwsi.errors.SamplingError`.
    max_draws_per_patch : int
        Candidate budget per asked patch, default 200.
    seed : int, optional
        Default seed of :meth:`sample`.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.tissue import TissueMask
    >>> tissue = TissueMask(np.ones((40, 40), bool), 64, (2560, 2560))
    >>> tumor = np.zeros((40, 40), bool); tumor[10:20, 10:30] = True
    >>> tumor = TissueMask(tumor, 64, (2560, 2560))
    >>> sampler = PatchSampler(n_tumor=20, n_normal=10, seed=0)
    >>> coords = sampler.sample((2560, 2560), tissue, tumor)
    >>> np.bincount(coords.labels)
    array([10, 20])
    >>> bool(tumor.values_at(*coords[coords.labels == 1].centers()).all())
    True
    """

    n_tumor: int = 1000
    n_normal: int = 500
    n_normal_normal_slide: int = 500
    patch_size: int = 256
    level: int = 0
    label_rule: Literal["center", "fraction"] = "center"
    min_tumor_fraction: float = 0.5
    normal_margin_um: float = 0.0
    min_tissue: float = 0.5
    on_shortfall: Literal["warn", "raise"] = "warn"
    max_draws_per_patch: int = 200
    seed: int | None = None

    def _validate(self) -> None:
        for name in ("n_tumor", "n_normal", "n_normal_normal_slide"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ParameterError(
                    f"PatchSampler.{name} must be a non-negative integer, got {value!r}"
                )
        _positive_int("PatchSampler", "patch_size", self.patch_size)
        _positive_int("PatchSampler", "max_draws_per_patch", self.max_draws_per_patch)
        if isinstance(self.level, bool) or not isinstance(self.level, int) or self.level < 0:
            raise ParameterError(f"PatchSampler.level must be a level index, got {self.level!r}")
        if self.label_rule not in ("center", "fraction"):
            raise ParameterError(
                f"PatchSampler.label_rule must be 'center' or 'fraction', got {self.label_rule!r}"
            )
        if self.on_shortfall not in ("warn", "raise"):
            raise ParameterError(
                f"PatchSampler.on_shortfall must be 'warn' or 'raise', got {self.on_shortfall!r}"
            )
        _check_fraction("PatchSampler", "min_tumor_fraction", self.min_tumor_fraction)
        _check_fraction("PatchSampler", "min_tissue", self.min_tissue)
        if not (
            isinstance(self.normal_margin_um, int | float)
            and math.isfinite(self.normal_margin_um)
            and self.normal_margin_um >= 0
        ):
            raise ParameterError(
                f"PatchSampler.normal_margin_um must be >= 0, got {self.normal_margin_um!r}"
            )

    def params(self) -> dict[str, Any]:
        """The parameters as JSON-compatible values (recorded by :class:`PatchStore`)."""
        return dataclasses.asdict(self)

    def sample(
        self,
        slide: SlideLike | tuple[int, int],
        tissue_mask: Raster,
        tumor_mask: Raster | None = None,
        *,
        seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    ) -> PatchCoords:
        """Draw the patches of one slide.

        Parameters
        ----------
        slide : SlideLike or tuple of int
            The slide, or its level-0 ``(width, height)`` (then ``level`` must be 0).
        tissue_mask : Raster
            Its tissue mask (boolean raster over the slide).
        tumor_mask : Raster, optional
            Its tumor annotation mask; ``None`` or an empty mask make it a normal
            slide (``n_normal_normal_slide`` normal patches).
        seed : int, SeedSequence or Generator, optional
            Overrides the sampler's ``seed``.

        Returns
        -------
        PatchCoords
            Tumor patches first (label 1), then normal ones (label 0), each in
            random order.

        Raises
        ------
        GeometryError
            If a mask belongs to a slide of other dimensions.
        SamplingError
            On a shortfall with ``on_shortfall="raise"``, or if the patch is
            larger than the slide.
        """
        self._validate()
        if isinstance(slide, tuple):
            dims = (int(slide[0]), int(slide[1]))
            name = "slide"
            if self.level != 0:
                raise ParameterError(
                    f"PatchSampler(level={self.level}) needs the slide itself, not its dimensions"
                )
            downsample = 1.0
        else:
            dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
            name = slide.name
            _, downsample = _resolve(slide, self.level, None, "PatchSampler")
        tissue = _check_mask(tissue_mask, dims, "tissue mask")
        tumor = _check_mask(tumor_mask, dims, "tumor mask")
        assert tissue is not None
        extent = self.patch_size * downsample
        if extent > dims[0] or extent > dims[1]:
            raise SamplingError(
                f"a patch of {extent:g} level-0 pixels does not fit slide {name!r} of "
                f"{dims[0]}x{dims[1]} pixels"
            )
        ctx = _DrawContext(
            tissue=tissue,
            rng=np.random.default_rng(seed if seed is not None else self.seed),
            extent=extent,
            taken=set(),
            slide=name,
        )
        # (where candidates are drawn, how many, the mask of the label rule, the label)
        plan: list[tuple[TissueMask, int, TissueMask | None, int]]
        if tumor is not None and tumor.array.any():
            grown = _grow(tumor, self.normal_margin_um)
            plan = [(tumor, self.n_tumor, tumor, 1), (tissue, self.n_normal, grown, 0)]
        else:
            plan = [(tissue, self.n_normal_normal_slide, None, 0)]
        parts = []
        for region, n, rule, label in plan:  # a loop, not a comprehension: warning stacklevel
            parts.append((*self._draw(region, n, rule, label == 1, ctx), label))
        xs = np.concatenate([p[0] for p in parts])
        ys = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([np.full(len(p[0]), p[2], np.int8) for p in parts])
        return PatchCoords(
            xs,
            ys,
            level=self.level,
            size=self.patch_size,
            downsample=downsample,
            slide_dimensions=dims,
            tissue=tissue.fraction(xs, ys, extent, extent).astype(np.float32),
            labels=labels,
        )

    def _accept(
        self,
        x0: IntArray,
        y0: IntArray,
        extent: float,
        tissue: TissueMask,
        tumor: TissueMask | None,
        positive: bool,
    ) -> npt.NDArray[np.bool_]:
        width, height = tissue.slide_dimensions
        ok = (x0 >= 0) & (y0 >= 0) & (x0 + extent <= width) & (y0 + extent <= height)
        ok &= tissue.fraction(x0, y0, extent, extent) >= self.min_tissue - 1e-12
        if tumor is None:
            return ok
        if self.label_rule == "center":
            cx = np.clip(x0 + extent / 2, 0, width - 1)
            cy = np.clip(y0 + extent / 2, 0, height - 1)
            inside: npt.NDArray[np.bool_] = tumor.values_at(cx, cy).astype(bool)
            return ok & (inside if positive else ~inside)
        frac = tumor.fraction(x0, y0, extent, extent)
        if positive:
            return ok & (frac >= self.min_tumor_fraction - 1e-12)
        return ok & (frac <= 1e-9)

    def _draw(
        self,
        region: TissueMask,
        n: int,
        tumor: TissueMask | None,
        positive: bool,
        ctx: _DrawContext,
    ) -> tuple[IntArray, IntArray]:
        """``n`` distinct accepted top-left corners, candidates drawn uniformly in ``region``."""
        kind = "tumor" if positive else "normal"
        empty = np.zeros(0, np.int64)
        if n == 0:
            return empty, empty
        width = region.slide_dimensions[0]
        rr, cc = np.nonzero(region.array)
        row_start, row_end, col_start, col_end = region.pixel_edges()
        px0, py0 = col_start[cc], row_start[rr]
        pw, ph = col_end[cc] - px0, row_end[rr] - py0
        weights = np.cumsum(pw * ph)
        got_x: list[int] = []
        got_y: list[int] = []
        drawn = 0
        budget = self.max_draws_per_patch * n
        extent, rng, taken = ctx.extent, ctx.rng, ctx.taken
        half = math.floor(extent / 2)
        accepted_rate = 1.0
        while len(got_x) < n and drawn < budget and len(weights) and weights[-1] > 0:
            want = n - len(got_x)
            batch = int(min(max(2 * want / max(accepted_rate, 1e-3), 256), budget - drawn, 2**20))
            drawn += batch
            pick = np.searchsorted(weights, rng.random(batch) * weights[-1], side="right")
            pick = np.minimum(pick, len(weights) - 1)
            cx = np.floor(px0[pick] + rng.random(batch) * pw[pick]).astype(np.int64)
            cy = np.floor(py0[pick] + rng.random(batch) * ph[pick]).astype(np.int64)
            x0, y0 = cx - half, cy - half
            ok = self._accept(x0, y0, extent, ctx.tissue, tumor, positive)
            accepted_rate = max(float(ok.mean()), 1.0 / batch)
            x0, y0 = x0[ok], y0[ok]
            keys = y0 * (width + 1) + x0
            _, first = np.unique(keys, return_index=True)
            first.sort()
            for i in first:  # in draw order, so the first n are a uniform sample
                key = int(keys[i])
                if key not in taken:
                    taken.add(key)
                    got_x.append(int(x0[i]))
                    got_y.append(int(y0[i]))
                    if len(got_x) == n:
                        break
        xs, ys = np.array(got_x, np.int64), np.array(got_y, np.int64)
        got = len(xs)
        if got < n:
            message = (
                f"slide {ctx.slide!r}: found only {got} of {n} {kind} patch positions "
                f"(patch {extent:g} level-0 px, min_tissue={self.min_tissue}, "
                f"label_rule={self.label_rule!r}) in {drawn} candidates"
            )
            if self.on_shortfall == "raise":
                raise SamplingError(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        return xs, ys


# --- the patch store ------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    slide: SlideLike
    name: str
    path: str | None
    tumor_mask: Raster | None
    owned: bool


def _as_source(item: Any, tumor_mask: Raster | None) -> _Source:
    from cervixwsi.slide import Slide

    if isinstance(item, str | os.PathLike):
        slide = Slide(item)
        return _Source(slide, slide.name, str(Path(item).resolve()), tumor_mask, True)
    if isinstance(item, SlideLike):
        path = getattr(item, "path", None)
        resolved = None if path is None else str(Path(path).resolve())
        return _Source(item, item.name, resolved, tumor_mask, False)
    path = getattr(item, "path", None)
    if path is not None:  # e.g. a SyntheticSlide: a file with ground truth
        own = tumor_mask if tumor_mask is not None else getattr(item, "tumor_mask", None)
        slide = Slide(path)
        return _Source(slide, slide.name, str(Path(path).resolve()), own, True)
    raise ParameterError(
        f"PatchStore.build takes slides as Slide objects, paths or objects with a .path "
        f"(a SyntheticSlide), got {item!r}"
    )


@dataclass(frozen=True, eq=False)
class _StoreView:
    """Some patches of a store, with the read side of a store (for input pipelines)."""

    store: PatchStore
    index: IntArray

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = self.store.labels[self.index]
        return out

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        return self.store.read(self.index[np.asarray(indices, dtype=np.int64)])


class PatchStore:
    """Extracted patches in a zarr store, with labels and where they came from.

    Layout (zarr v3 group): ``patches`` (N, H, W, 3) uint8 in chunks of a few
    patches, ``labels`` int8, ``x``, ``y`` int64 (level-0), ``slide_index``
    int32, ``tissue`` float32, ``done`` (one flag per chunk of ``patches``),
    and attributes: format name and version, the cervixwsi version, patch size,
    level, the slides (name, path, dimensions), the sampler's parameters and
    seed, a digest of each slide's tumor and tissue mask, and the tissue
    masker's parameters (when it made the masks).

    Each slide's patches are stored in raster order (bands one patch high,
    left to right; tumor and normal mixed), which makes extraction decode
    each slide tile about once: shuffle them for training
    (``iter_batches(shuffle=True)``).

    Open one with ``PatchStore(path)`` or :meth:`open`; make one with
    :meth:`build`.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from cervixwsi.slide import ArraySlide
    >>> rgb = np.full((512, 512, 3), 235, np.uint8); rgb[64:448, 64:448] = (190, 100, 170)
    >>> slide = ArraySlide(rgb, mpp=1.0, name="demo")
    >>> sampler = PatchSampler(n_normal_normal_slide=6, patch_size=64)
    >>> path = tempfile.mkdtemp() + "/patches.zarr"
    >>> store = PatchStore.build(path, [slide], sampler, seed=0, progress=False)
    >>> len(store), store.patch_size, store.read([0, 5]).shape
    (6, 64, (2, 64, 64, 3))
    >>> [labels.tolist() for _, labels in store.iter_batches(4)]
    [[0, 0, 0, 0], [0, 0]]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zarr

        self._path = Path(path)
        if not self._path.exists():
            raise PatchStoreError(f"no patch store at {self._path}")
        try:
            group = zarr.open_group(str(self._path), mode="r")
            attrs = dict(group.attrs)
        except Exception as exc:  # zarr raises many types for a broken store
            raise PatchStoreError(f"{self._path} is not a readable zarr group: {exc}") from exc
        if attrs.get("format") != FORMAT_NAME:
            raise PatchStoreError(f"{self._path} is not a cervixwsi patch store")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise PatchStoreError(
                f"{self._path} has patch store format {attrs.get('format_version')!r}; "
                f"this cervixwsi reads format {FORMAT_VERSION}"
            )
        try:
            self._arrays = {
                name: group[name]
                for name in ("patches", "labels", "x", "y", "slide_index", "tissue", "done")
            }
            self._labels = np.asarray(self._arrays["labels"][:], dtype=np.int64)
            self._done = np.asarray(self._arrays["done"][:], dtype=bool)
        except Exception as exc:
            raise PatchStoreError(
                f"patch store {self._path} is incomplete or corrupt: {exc}"
            ) from exc
        self._attrs = attrs
        self._chunk = int(self._arrays["patches"].chunks[0])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PatchStore:
        """Open an existing store (read-only)."""
        return cls(path)

    # --- metadata -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._arrays["patches"].shape[0])

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return (
            f"PatchStore({str(self._path)!r}, n={len(self)}, patch_size={self.patch_size}, {state})"
        )

    @property
    def path(self) -> Path:
        """Where the store is."""
        return self._path

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self._attrs["patch_size"])

    @property
    def patches(self) -> Any:
        """The zarr array of patches, ``(N, H, W, 3)`` uint8."""
        return self._arrays["patches"]

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Per-patch label: 1 tumor, 0 normal."""
        return self._labels.copy()

    @property
    def x(self) -> IntArray:
        """Level-0 left edges."""
        return np.asarray(self._arrays["x"][:], dtype=np.int64)

    @property
    def y(self) -> IntArray:
        """Level-0 top edges."""
        return np.asarray(self._arrays["y"][:], dtype=np.int64)

    @property
    def slide_index(self) -> npt.NDArray[np.int32]:
        """Per-patch index into :attr:`slide_names`."""
        return np.asarray(self._arrays["slide_index"][:], dtype=np.int32)

    @property
    def slide_names(self) -> tuple[str, ...]:
        """The slides' ids, in build order."""
        return tuple(str(s["name"]) for s in self._attrs["slides"])

    @property
    def sampler(self) -> PatchSampler:
        """The :class:`PatchSampler` the store was built with."""
        return PatchSampler(**self._attrs["sampler"])

    @property
    def extracted(self) -> npt.NDArray[np.bool_]:
        """Per patch: True when its pixels have been extracted (all True once complete)."""
        return np.repeat(self._done, self._chunk)[: len(self)]

    @property
    def masker(self) -> TissueMasker | None:
        """The :class:`~cervixwsi.tissue.TissueMasker` that made the tissue masks.

        ``None`` when the masks were given to :meth:`build`.
        """
        params = self._attrs.get("masker")
        if params is None:
            return None
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(params).items()
        }
        return TissueMasker(**fields)

    @property
    def is_complete(self) -> bool:
        """True when every patch has been extracted."""
        return bool(self._done.all())

    # --- reading --------------------------------------------------------------------

    def read(self, indices: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The patches at ``indices``: ``(k, H, W, 3)`` uint8, in the order asked.

        Raises
        ------
        PatchStoreError
            If an index is out of range, a patch has not been extracted yet
            (an interrupted :meth:`build`), or a chunk is corrupt.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise PatchStoreError(f"patch index out of range for a store of {n} patches")
        idx = np.where(idx < 0, idx + n, idx)
        missing = ~self._done[idx // self._chunk] if idx.size else np.zeros(0, bool)
        if missing.any():
            raise PatchStoreError(
                f"patch {int(idx[missing][0])} of {self._path} has not been extracted; "
                "run PatchStore.build again to finish it"
            )
        if not idx.size:
            return np.empty((0, self.patch_size, self.patch_size, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)  # sorted: chunk by chunk
        try:
            data = np.asarray(self._arrays["patches"].oindex[unique], dtype=np.uint8)
        except Exception as exc:
            raise PatchStoreError(f"cannot read patches of {self._path}: {exc}") from exc
        out: npt.NDArray[np.uint8] = data[inverse.reshape(-1)]
        return out

    def iter_batches(
        self,
        batch_size: int = 32,
        *,
        shuffle: bool = False,
        seed: int | np.random.Generator | None = None,
        indices: npt.ArrayLike | None = None,
    ) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]]:
        """Yield ``(patches, labels)`` batches (the last one may be smaller).

        Parameters
        ----------
        batch_size : int
            Patches per batch, default 32 (the study's value).
        shuffle : bool
            Visit the patches in a random order (from ``seed``).
        indices : array_like, optional
            Only these patches (e.g. a training split).
        """
        _positive_int("iter_batches", "batch_size", batch_size)
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        if shuffle:
            idx = np.random.default_rng(seed).permutation(idx)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            yield self.read(part), self._labels[part]

    def as_tf_dataset(
        self,
        batch_size: int = 32,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        labels: bool = True,
        epochs: int = 1,
        indices: npt.ArrayLike | None = None,
    ) -> tf.data.Dataset:
        """The patches as a ``tf.data.Dataset`` of batches, for Keras or a training loop.

        The pipeline is the one :class:`~cervixwsi.models.PatchClassifier`
        trains from: each batch's patches are read with one :meth:`read` call
        (in index order, so each zarr chunk is read once), several batches are
        read at once in parallel threads, and batches are prefetched.  The
        patches never need to fit in memory.  TensorFlow is imported by this
        method only (``pip install 'cervixwsi[tf]'``).

        Parameters
        ----------
        batch_size : int
            Patches per batch, default 32 (the study's value); the last batch
            of each pass may be smaller.
        shuffle : bool
            Visit the patches in a random order, a new one for each pass,
            drawn from ``(seed, pass)``: the same seed gives the same batches.
            Default False: index order.
        seed : int, optional
            Non-negative seed of the order; default a fresh random one.
        labels : bool
            Yield ``(patches, labels)`` (default) or the patches alone.
        epochs : int
            Passes over the patches in the dataset, default 1 (iterate it
            again for another pass in the same order, or ask for several
            passes here to have each in its own order).
        indices : array_like, optional
            Only these patches (e.g. a training split), in this order when not
            shuffled.

        Returns
        -------
        tf.data.Dataset
            Batches of uint8 ``(B, H, W, 3)`` patches and int32 ``(B,)``
            labels (1 tumor, 0 normal); every patch once in each pass.

        Raises
        ------
        ParameterError
            If ``batch_size`` or ``epochs`` is not a positive int, or ``seed``
            not a non-negative int.
        PatchStoreError
            If an index is out of range or a patch asked for has not been
            extracted (an interrupted :meth:`build`).
        ImportError
            If TensorFlow is not installed.

        Examples
        --------
        .. code-block:: python

            for patches, labels in store.as_tf_dataset(32, shuffle=True, seed=0):
                ...  # uint8 (32, 256, 256, 3) and int32 (32,) tensors
        """
        import importlib.util

        _positive_int("as_tf_dataset", "batch_size", batch_size)
        _positive_int("as_tf_dataset", "epochs", epochs)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
        ):
            raise ParameterError(f"as_tf_dataset: seed must be a non-negative int, got {seed!r}")
        n = len(self)
        view: _StoreView | PatchStore = self
        if indices is not None:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise PatchStoreError(f"patch index out of range for a store of {n} patches")
            view = _StoreView(self, np.where(idx < 0, idx + n, idx))
        wanted = view.index if isinstance(view, _StoreView) else np.arange(n)
        missing = wanted[~self._done[wanted // self._chunk]] if wanted.size else wanted
        if missing.size:
            raise PatchStoreError(
                f"{missing.size} of the patches asked for in {self._path} have not been "
                f"extracted (the first is patch {int(missing[0])}); run PatchStore.build "
                "again to finish it"
            )
        if importlib.util.find_spec("tensorflow") is None:
            raise ImportError(
                "PatchStore.as_tf_dataset needs TensorFlow: pip install 'cervixwsi[tf]'"
            )
        # The models' input pipeline: importing cervixwsi.models first gives TensorFlow its
        # environment defaults (oneDNN kernels, quiet logs) when it is first imported.
        from cervixwsi.models._augment import Augmentation
        from cervixwsi.models._data import source_dataset

        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        dataset, _ = source_dataset(
            view,
            batch_size=batch_size,
            size=self.patch_size,  # the full patch: no crop
            # Shuffled without augmentation; None: index order.
            augmentation=Augmentation.none() if shuffle else None,
            seed=int(seed),
            epochs=epochs,
        )
        if not labels:
            dataset = dataset.map(lambda patches, _labels: patches)
        return dataset

    # --- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        path: str | os.PathLike[str],
        slides: Sequence[Any],
        sampler: PatchSampler,
        *,
        tumor_masks: Sequence[Raster | None] | None = None,
        tissue_masks: Sequence[Raster] | None = None,
        masker: TissueMasker | None = None,
        seed: int | None = None,
        workers: int = 4,
        chunk_patches: int = 8,
        compress: bool = False,
        progress: bool = True,
    ) -> PatchStore:
        """Sample patches from ``slides`` and extract them into a store at ``path``.

        Resumable: all coordinates are planned (and written) first, then the
        pixels are filled chunk by chunk, each chunk marked done once written.
        If the build stops (an error, Ctrl-C, a killed process), calling
        ``build`` again with the same arguments fills only the chunks not yet
        done: no patch is lost or duplicated.

        Parameters
        ----------
        path : str or PathLike
            The zarr store (a directory) to create or resume.
        slides : sequence
            :class:`~cervixwsi.slide.Slide` / :class:`~cervixwsi.slide.ArraySlide`
            objects, slide paths, or objects with ``.path`` and ``.tumor_mask``
            (a :class:`~cervixwsi.synthetic.SyntheticSlide`).
        sampler : PatchSampler
            How to draw patches.
        tumor_masks : sequence of Raster or None, optional
            One per slide (``None`` for a normal slide); default: each slide's
            ``.tumor_mask`` if it has one, else ``None``.
        tissue_masks : sequence of Raster, optional
            One per slide; default: computed with ``masker``.
        masker : TissueMasker, optional
            Default ``TissueMasker()``.
        seed : int, optional
            Seed of the plan (each slide gets an independent stream); default
            the sampler's seed.
        workers : int
            Threads reading patches, default 4.
        chunk_patches : int
            Patches per zarr chunk, default 8.
        compress : bool
            Compress the patches (zstd).  Default False: decoded H&E patches
            shrink by about 40 %, and writing them raw is two to three times
            faster (extraction is then limited by reading the slide).
        progress : bool
            Show a progress bar.

        Raises
        ------
        StoreMismatchError
            If a store at ``path`` was planned from other slides, sampler
            parameters, seed, tumor or tissue masks (compared by a digest of
            their pixels and geometry) or masker parameters; the message names
            what differs.
        """
        _positive_int("PatchStore.build", "workers", workers)
        _positive_int("PatchStore.build", "chunk_patches", chunk_patches)
        sampler._validate()
        seed = sampler.seed if seed is None else seed
        items = list(slides)
        for what, seq in (("tumor_masks", tumor_masks), ("tissue_masks", tissue_masks)):
            if seq is not None and len(seq) != len(items):
                raise ParameterError(
                    f"PatchStore.build: {what} has {len(seq)} entries for {len(items)} slides"
                )
        sources = [
            _as_source(item, None if tumor_masks is None else tumor_masks[i])
            for i, item in enumerate(items)
        ]
        try:
            store = cls._plan(
                Path(path), sources, sampler, tissue_masks, masker, seed, chunk_patches, compress
            )
            store._fill(sources, workers, progress)
        finally:
            for source in sources:
                if source.owned:
                    close = getattr(source.slide, "close", None)
                    if close is not None:
                        close()
        return cls(path)

    @classmethod
    def _plan(
        cls,
        path: Path,
        sources: list[_Source],
        sampler: PatchSampler,
        tissue_masks: Sequence[Raster] | None,
        masker: TissueMasker | None,
        seed: int | None,
        chunk_patches: int,
        compress: bool,
    ) -> PatchStore:
        import zarr

        slides_attr = [
            {"name": s.name, "path": s.path, "dimensions": list(s.slide.dimensions)}
            for s in sources
        ]
        masker = masker or TissueMasker()
        identity = {
            "slides": slides_attr,
            "sampler": sampler.params(),
            "seed": seed,
            # What the plan was drawn from besides: the masks (a digest of each) and
            # the masker's parameters when it made the tissue masks.
            "tumor_masks": [_mask_digest(s.tumor_mask, "tumor mask") for s in sources],
            "tissue_masks": (
                None
                if tissue_masks is None
                else [_mask_digest(m, "tissue mask") for m in tissue_masks]
            ),
            "masker": None if tissue_masks is not None else dataclasses.asdict(masker),
        }
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # an empty directory made for the store
        if path.exists():
            try:
                existing = dict(zarr.open_group(str(path), mode="r").attrs)
            except Exception as exc:
                raise PatchStoreError(f"{path} exists and is not a zarr store: {exc}") from exc
            if existing.get("format") != FORMAT_NAME:
                raise PatchStoreError(f"{path} exists and is not a cervixwsi patch store")
            if existing.get("planned"):
                diff = _differences(existing, identity, [s.name for s in sources])
                if diff:
                    raise StoreMismatchError(
                        f"the patch store {path} was built with other {', '.join(diff)}; "
                        "build into a new path (or delete it)"
                    )
                return cls(path)
        children = np.random.SeedSequence(seed).spawn(len(sources))
        xs, ys, labels, tissue, index = [], [], [], [], []
        level_info: list[tuple[int, float]] = []
        for i, source in enumerate(sources):
            mask = tissue_masks[i] if tissue_masks is not None else masker.mask(source.slide)
            coords = sampler.sample(
                source.slide, mask, source.tumor_mask, seed=np.random.default_rng(children[i])
            )
            # Raster order (bands one patch high, left to right): neighbouring patches
            # share tiles, so extraction decodes each tile about once.
            coords = coords[np.lexsort((coords.x, coords.y // max(1, int(coords.extent))))]
            logger.info(
                "%s: %d tumor + %d normal patches planned",
                source.name,
                int((coords.labels == 1).sum()),
                int((coords.labels == 0).sum()),
            )
            xs.append(coords.x)
            ys.append(coords.y)
            labels.append(coords.labels)
            tissue.append(coords.tissue)
            index.append(np.full(len(coords), i, np.int32))
            level_info.append((coords.level, coords.downsample))
        n = int(sum(len(v) for v in xs))
        size = sampler.patch_size
        chunk = max(1, min(chunk_patches, n))
        group = zarr.open_group(str(path), mode="w")
        group.attrs.update(
            {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "planned": False}
        )

        def column(name: str, parts: list[Any], dtype: Any) -> None:
            data = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
            arr = group.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=dtype)
            if n:
                arr[:] = data

        column("x", xs, np.int64)
        column("y", ys, np.int64)
        column("labels", labels, np.int8)
        column("tissue", tissue, np.float32)
        column("slide_index", index, np.int32)
        group.create_array(
            "patches",
            shape=(n, size, size, 3),
            chunks=(chunk, size, size, 3),
            dtype=np.uint8,
            compressors="auto" if compress else None,
        )
        n_chunks = math.ceil(n / chunk)
        done = group.create_array(
            "done", shape=(n_chunks,), chunks=(max(n_chunks, 1),), dtype=bool, fill_value=False
        )
        if n_chunks:
            done[:] = np.zeros(n_chunks, bool)
        group.attrs.update(
            {
                **_jsonable(identity),
                "patch_size": size,
                "level": sampler.level,
                "downsamples": [ds for _, ds in level_info],
                "cervixwsi_version": __version__,
                "planned": True,
            }
        )
        return cls(path)

    def _fill(self, sources: list[_Source], workers: int, progress: bool) -> None:
        import zarr
        from tqdm.auto import tqdm

        group = zarr.open_group(str(self._path), mode="r+")
        patches, done_arr = group["patches"], group["done"]
        done = np.asarray(done_arr[:], dtype=bool)
        n = len(self)
        xs, ys, index = self.x, self.y, self.slide_index
        size = self.patch_size
        level = int(self._attrs["level"])
        downsamples = self._attrs["downsamples"]
        todo = np.flatnonzero(~done)
        if not len(todo):
            return
        chunk = self._chunk

        def extract(k: int) -> int:
            lo, hi = k * chunk, min(n, (k + 1) * chunk)
            batch = np.empty((hi - lo, size, size, 3), np.uint8)
            for j, i in enumerate(range(lo, hi)):
                s = int(index[i])
                coords = PatchCoords(
                    xs[i : i + 1],
                    ys[i : i + 1],
                    level=level,
                    size=size,
                    downsample=downsamples[s],
                    slide_dimensions=sources[s].slide.dimensions,
                )
                batch[j] = read_patch(sources[s].slide, coords, 0)
            patches[lo:hi] = batch
            return k

        remaining = sum(min(n, (int(k) + 1) * chunk) - int(k) * chunk for k in todo)
        bar = tqdm(total=n, initial=n - remaining, unit="patch", disable=not progress)
        last_flush = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        futures: dict[concurrent.futures.Future[int], int] = {}
        try:
            futures.update({pool.submit(extract, int(k)): int(k) for k in todo})
            for future in concurrent.futures.as_completed(futures):
                k = future.result()
                done[k] = True
                bar.update(min(n, (k + 1) * chunk) - k * chunk)
                if time.monotonic() - last_flush > 1.0:
                    done_arr[:] = done
                    last_flush = time.monotonic()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future, k in futures.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    done[k] = True
            done_arr[:] = done
            bar.close()
        self._done = done


def _mask_digest(mask: Raster | None, what: str) -> str | None:
    """A fingerprint of a mask as sampling sees it (``None`` for no mask).

    SHA-256 of its pixels (tissue or not, as :class:`~cervixwsi.tissue.TissueMask`
    reads them), its shape, downsample, slide dimensions and mpp.
    """
    if mask is None:
        return None
    if not isinstance(mask, Raster):
        raise ParameterError(f"the {what} must be a Raster (e.g. a TissueMask), got {mask!r}")
    m = TissueMask.from_raster(mask)
    geometry = {
        "shape": list(m.shape),
        "downsample": float(m.downsample),
        "slide_dimensions": [int(v) for v in m.slide_dimensions],
        "mpp": None if m.mpp is None else float(m.mpp),
    }
    digest = hashlib.sha256(json.dumps(geometry, sort_keys=True).encode())
    digest.update(np.packbits(m.array).tobytes())
    return f"sha256:{digest.hexdigest()}"


def _differences(existing: dict[str, Any], identity: dict[str, Any], names: list[str]) -> list[str]:
    """What a store's recorded plan inputs and a new build's differ in, in words."""
    out = []
    for key, ours in identity.items():
        if key not in existing:  # a store planned before cervixwsi recorded this
            out.append(f"{key} (the store does not record them)")
            continue
        theirs, ours = _jsonable(existing[key]), _jsonable(ours)
        if theirs == ours:
            continue
        if (
            key.endswith("_masks")
            and isinstance(theirs, list)
            and isinstance(ours, list)
            and len(theirs) == len(ours) == len(names)
        ):
            which = [repr(names[i]) for i in range(len(ours)) if theirs[i] != ours[i]]
            out.append(f"{key} (of slide{'s' if len(which) > 1 else ''} {', '.join(which)})")
            continue
        if key == "masker" and isinstance(theirs, dict) and isinstance(ours, dict):
            fields = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            out.append(f"masker ({', '.join(fields)})")
            continue
        out.append(key)
    return out


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would store it (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
