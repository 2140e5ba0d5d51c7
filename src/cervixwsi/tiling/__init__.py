"""Patches: regular grids, random training samples and on-disk patch stores.

* :class:`PatchGrid` lays the regular grid of patches over a slide and keeps
  the ones with enough tissue (vectorised: one integral-image lookup per patch,
  no Python loop).
* :class:`PatchSampler` draws the study's random training patches: tumor
  patches from the annotation mask and normal patches from the rest of the
  tissue, uniformly over area at level-0 resolution, labelled by a documented
  rule.
* :class:`PatchStore` extracts sampled patches into a zarr store (resumable,
  multi-threaded) and reads them back as numpy batches.

All three speak :class:`PatchCoords`: level-0 top-left corners plus the level,
size and resolution of the patches, and for a grid the ``(row, col)`` of each
patch so that a heatmap can place one value per patch.  Levels are chosen by
:func:`cervixwsi.geometry.resolve_resolution`, the rule every stage shares.

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

from cervixwsi.tiling._coords import PatchCoords, read_patch, read_patches
from cervixwsi.tiling._grid import PatchGrid
from cervixwsi.tiling._sampler import PatchSampler
from cervixwsi.tiling._store import PatchStore

__all__ = [
    "PatchCoords",
    "PatchGrid",
    "PatchSampler",
    "PatchStore",
    "read_patch",
    "read_patches",
]
