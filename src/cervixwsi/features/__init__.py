"""Slide-level features of tumor-probability heatmaps.

A heatmap has one pixel per patch: the tumor probability the patch CNN gave
it (NaN where nothing was predicted) over a tissue mask.  This module turns
each heatmap into a fixed-length vector of features that a slide classifier
(:mod:`cervixwsi.slide_classifier`) can learn from.

*Regions* are the 8-connected components of ``p >= t`` inside tissue, for each
threshold ``t``, labelled once per threshold and shared by every feature
that needs them.  Their shape measures (perimeter, moment ellipse, convex
hull, see :class:`Regions`) describe the union of the regions' pixel squares,
so features in physical units do not depend on the stride: the same heatmap
at half the stride (each pixel split into 2 × 2) gives the same values.  Pixel
counts (``n_pixels`` of the camelyon16 preset) do, by definition, and the 99th
percentile moves slightly with the number of pixels.

Units
-----
Lengths are in µm and areas in µm² when the heatmap's ``mpp`` is known (one
heatmap pixel is ``downsample × mpp`` µm, its :attr:`~cervixwsi.geometry.Raster.pixel_size_um`),
and in level-0 pixels otherwise.  The unit is part of every feature's name:
``mean_region_area_um2@0.9`` (µm²) or ``mean_region_area_l0px2@0.9`` (level-0
pixels²), so two tables made in different units never mix silently.  Names
end in ``@t`` for features of threshold ``t``.

Every value is defined on every input: a heatmap without regions gives 0 for
counts, areas, lengths and shape measures; a heatmap without tissue gives 0
for every feature (and logs a warning).  No feature is ever NaN.

Presets
-------
``"cervix28"`` (the default, the study's 28 features)
    4 threshold-independent features (maximum, mean, standard deviation and
    99th percentile of the probability over tissue) and 12 per threshold
    (number of regions, tumor/tissue ratio, total tumor area, area of the
    largest region, mean region area, major axis, eccentricity, extent,
    solidity and perimeter of the largest region, mean probability inside the
    regions, probability mass inside the regions / tissue area).
``"camelyon16"``
    The 28 features of the widely used reimplementation of the Camelyon16
    winner (Wang et al. 2016): area, perimeter, eccentricity and solidity of
    the regions at the high threshold and extent of the regions at the low
    one, each summarised by maximum, mean, variance, skewness and kurtosis;
    plus the tumor/tissue ratio at the high threshold, the major axis of the
    largest region at the low one and the number of heatmap pixels at or
    above the high threshold.

Your own features are :class:`Feature` objects, passed as ``extra_features``
(or as the whole ``preset``); their function receives a
:class:`FeatureContext` with the shared regions.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.geometry import Raster
>>> from cervixwsi.features import HeatmapFeatureExtractor
>>> p = np.zeros((8, 8), np.float32)
>>> p[2:4, 2:6] = 0.95                      # one 2 x 4 tumor region
>>> heat = Raster(p, 256, (2048, 2048), mpp=0.5)   # one pixel = 128 µm
>>> fv = HeatmapFeatureExtractor().extract(heat, slide_id="s1")
>>> len(fv.values)
28
>>> fv["n_regions@0.9"], fv["largest_region_extent@0.9"]
(1.0, 1.0)
>>> fv["total_tumor_area_um2@0.9"] == 8 * 128.0**2
True
"""

from cervixwsi.features import _catalogue
from cervixwsi.features._catalogue import Feature, FeatureContext, preset_features
from cervixwsi.features._extractor import HeatmapFeatureExtractor, HeatmapLike
from cervixwsi.features._regions import Regions
from cervixwsi.features._table import FeatureTable, FeatureVector
from cervixwsi.features._units import unit_of

#: The names of the built-in presets.
PRESETS: tuple[str, ...] = _catalogue.PRESETS

__all__ = [
    "PRESETS",
    "Feature",
    "FeatureContext",
    "FeatureTable",
    "FeatureVector",
    "HeatmapFeatureExtractor",
    "HeatmapLike",
    "Regions",
    "preset_features",
    "unit_of",
]
