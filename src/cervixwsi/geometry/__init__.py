"""Coordinates: level-0 boxes, raster windows and rasters over a slide.

This module is the single place where coordinates are converted.  The
conventions, used everywhere in cervixwsi, are OpenSlide's:

* a location is ``(x, y)`` in **level-0 pixels** (x to the right, y down),
  a size is ``(width, height)``;
* arrays are indexed ``[row, col] = [y, x]``;
* a :class:`Raster` is a 2-D array over a whole slide (a tissue mask, an
  annotation mask, a heatmap) plus its ``downsample``: the level-0 size of one
  raster pixel.  Raster pixel ``(row, col)`` covers the level-0 half-open
  square ``[col * d, (col + 1) * d) x [row * d, (row + 1) * d)``, clipped to
  the slide.  Downsamples need not be integers: real pyramid levels have
  downsamples such as 4.0003.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.geometry import Box, Raster
>>> mask = Raster(np.zeros((3, 4), bool), downsample=256, slide_dimensions=(1000, 700))
>>> mask.box_to_window(Box(300, 10, 256, 256))
Window(row0=0, row1=2, col0=1, col1=3)
>>> mask.pixel_to_box(2, 3)  # the last pixel is clipped to the slide
Box(x=768.0, y=512.0, width=232.0, height=188.0)
"""

from cervixwsi.geometry._box import Box, Window
from cervixwsi.geometry._levels import (
    Resolution,
    level_for_downsample,
    resolve_level,
    resolve_resolution,
    slide_mpp,
)
from cervixwsi.geometry._raster import Raster, axis_overlap_matrix

__all__ = [
    "Box",
    "Raster",
    "Resolution",
    "Window",
    "axis_overlap_matrix",
    "level_for_downsample",
    "resolve_level",
    "resolve_resolution",
    "slide_mpp",
]
