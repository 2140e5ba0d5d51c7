"""The regular grid of patches over a slide (:class:`PatchGrid`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cervixwsi._validate import check_fraction, check_positive_int, check_real
from cervixwsi.errors import GeometryError
from cervixwsi.geometry import Raster, resolve_resolution
from cervixwsi.tiling._coords import PatchCoords, check_mask
from cervixwsi.tissue import SlideLike

__all__ = ["PatchGrid"]

logger = logging.getLogger("cervixwsi.tiling")


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
        the coarsest level at least as fine and resampled (the level is chosen by
        :func:`cervixwsi.geometry.resolve_resolution`; the slide's µm/px is its
        coarser axis).
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
        check_positive_int(self.patch_size, "PatchGrid.patch_size")
        if self.stride is not None:
            check_positive_int(self.stride, "PatchGrid.stride")
        check_fraction(self.min_tissue, "PatchGrid.min_tissue")
        if self.mpp is not None:
            check_real(self.mpp, "PatchGrid.mpp", min=0, min_open=True)

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
        LevelError
            If the slide lacks ``level``, or ``mpp`` is asked of a slide that records no
            resolution (see :func:`cervixwsi.geometry.resolve_resolution`).
        """
        self._validate()
        resolution = resolve_resolution(
            slide, None if self.mpp is not None else self.level, self.mpp, owner="PatchGrid"
        )
        level, downsample = resolution.level, resolution.downsample
        width, height = slide.dimensions
        tissue_mask = check_mask(mask, (width, height), "tissue mask")
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
