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

from __future__ import annotations

import copy
import csv
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import FeatureError, ParameterError, ResultFileError

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

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
UnitSystem = Literal["um", "l0px"]

#: The names of the built-in presets.
PRESETS: tuple[str, ...] = ("cervix28", "camelyon16")

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_UNIT_SUFFIX_RE = re.compile(r"_(um|l0px)(\d*)$")
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_UNIT_BASE = {"um": "µm", "l0px": "level-0 px"}


# --- inputs -------------------------------------------------------------------------------


@runtime_checkable
class HeatmapLike(Protocol):
    """What the extractor needs of a heatmap: a :class:`~cervixwsi.geometry.Raster` fits.

    A ``Heatmap`` (a Raster subclass with ``tissue_mask`` and ``slide_id``)
    fits too; those two attributes are used when present.
    """

    @property
    def array(self) -> npt.NDArray[Any]:
        """Tumor probabilities, 2-D, NaN where not predicted."""

    @property
    def downsample(self) -> float:
        """Level-0 pixels per heatmap pixel (the patch stride)."""

    @property
    def mpp(self) -> float | None:
        """Level-0 µm per pixel, or ``None``."""

    @property
    def pixel_size_um(self) -> float | None:
        """µm per heatmap pixel, or ``None``."""


def _pixel_scale(heatmap: HeatmapLike) -> tuple[float, UnitSystem]:
    """Length of one heatmap pixel and the unit system it is in."""
    size_um = heatmap.pixel_size_um
    if size_um is not None:
        return float(size_um), "um"
    return float(heatmap.downsample), "l0px"


def unit_of(name: str) -> str:
    """The unit of a feature, read from its name.

    Parameters
    ----------
    name : str
        A feature name such as ``"mean_region_area_um2@0.9"``.

    Returns
    -------
    str
        ``"µm"``, ``"µm²"``, ``"level-0 px²"``, ... or ``"1"`` for a
        dimensionless feature (counts, ratios, probabilities, shape measures).

    Examples
    --------
    >>> unit_of("mean_region_area_um2@0.9"), unit_of("largest_region_major_axis_l0px@0.5")
    ('µm²', 'level-0 px')
    >>> unit_of("tumor_tissue_ratio@0.9")
    '1'
    """
    key = name.split("@", 1)[0]
    match = _UNIT_SUFFIX_RE.search(key)
    if match is None:
        return "1"
    system, power = match.group(1), match.group(2)
    return _UNIT_BASE[system] + power.translate(_SUPERSCRIPT)


# --- regions --------------------------------------------------------------------------------


class Regions:
    """The tumor regions of one heatmap at one threshold.

    The 8-connected components of ``p >= threshold`` inside tissue, labelled
    once.  Areas and probability sums of all regions come from one
    :func:`numpy.bincount`.

    Shape measures describe each region as what it is on the slide: the union
    of its pixels' squares (one heatmap pixel = one patch).  They are
    computed here, not by scikit-image, so that they do not depend on the
    stride the heatmap was sampled at: the same region at stride ``s / k``
    (each pixel split into ``k × k``) has the same measures in µm.

    ``area``
        Pixels in the region.
    ``perimeter``
        Length of the boundary of the union of the pixel squares: the number
        of pixel edges between the region and the rest of the map, holes
        included.  This is the boundary of the *pixelated* region: it
        overestimates a smooth diagonal boundary by up to 4/π, but does not
        depend on the stride.
    ``axis_major_length``, ``axis_minor_length``, ``eccentricity``
        Of the moment ellipse of the union of the squares (the ellipse with
        the same second moments): ``4·sqrt(λ)`` for the eigenvalues ``λ1 ≥ λ2``
        of its covariance, which is the covariance of the pixel centres plus
        ``1/12`` px² on each axis, and ``sqrt(1 - λ2/λ1)``.  A single pixel
        has axes ``4/sqrt(12)`` and eccentricity 0.
    ``area_convex``, ``solidity``
        Area of the convex hull of the pixel squares (of their corners) and
        ``area / area_convex``: 1 for a rectangle, never 0 or NaN.
    ``extent``
        ``area`` / area of the bounding box.

    Computed with exact integer arithmetic where it matters (second moments,
    edge counts, hull areas), so resampling gives the same values to
    rounding.  Any other scalar :func:`skimage.measure.regionprops` property
    (in heatmap pixels, as scikit-image defines it) is available through
    :meth:`column` and :meth:`largest_property` too.  All quantities are in
    heatmap pixels; :class:`Feature` converts them to physical units.

    Parameters
    ----------
    probabilities : numpy.ndarray
        2-D float64 probabilities, 0 outside tissue.
    tissue : numpy.ndarray
        2-D bool tissue mask.
    threshold : float
        In ``(0, 1]``.

    Attributes
    ----------
    labels : numpy.ndarray
        Region labels, 0 for background, ``1..count`` for the regions.
    count : int
        Number of regions.
    areas : numpy.ndarray
        Pixels per region, in label order (float64).
    probability_sums : numpy.ndarray
        Sum of the probabilities of each region's pixels.
    pixels : int
        Pixels in all regions.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((5, 6)); p[1:3, 1:4] = 0.9; p[4, 5] = 1.0
    >>> r = Regions(p, np.ones_like(p, bool), 0.5)
    >>> r.count, r.areas.tolist(), r.largest
    (2, [6.0, 1.0], 0)
    >>> r.column("extent").tolist(), r.column("perimeter").tolist()
    ([1.0, 1.0], [10.0, 4.0])
    >>> round(r.largest_property("axis_major_length"), 6)  # 4·sqrt(3² / 12): 3 squares long
    3.464102
    """

    # Properties used to break ties between regions of the same (largest) area, in
    # order: extent and major axis keep their order when the map is resampled.
    _TIE_BREAK = ("extent", "axis_major_length", "eccentricity", "solidity", "perimeter")

    def __init__(
        self,
        probabilities: FloatArray,
        tissue: npt.NDArray[np.bool_],
        threshold: float,
    ) -> None:
        from skimage.measure import label

        self.threshold = float(threshold)
        mask = (probabilities >= threshold) & tissue
        self.labels: npt.NDArray[np.intp] = np.asarray(
            label(mask, connectivity=2, background=0), dtype=np.intp
        )
        self.count = int(self.labels.max(initial=0))
        flat = self.labels.ravel()
        self.areas: FloatArray = np.bincount(flat, minlength=self.count + 1)[1:].astype(np.float64)
        self.probability_sums: FloatArray = np.asarray(
            np.bincount(flat, weights=probabilities.ravel(), minlength=self.count + 1)[1:],
            dtype=np.float64,
        )
        self.pixels = int(self.areas.sum())
        self._props: list[Any] | None = None
        self._objects: list[Any] | None = None
        self._single_cache: dict[int, Any] = {}
        self._shape_cache: dict[int, dict[str, float]] = {}
        self._columns: dict[str, FloatArray] = {}
        self._largest: int | None = None
        self._largest_known = False

    def _regionprops(self) -> list[Any]:
        if self._props is None:
            from skimage.measure import regionprops

            self._props = regionprops(self.labels)
        return self._props

    def column(self, name: str) -> FloatArray:
        """One region property for every region, in label order.

        Parameters
        ----------
        name : str
            One of the shape measures above (``"perimeter"``,
            ``"eccentricity"``, ``"solidity"``, ...), or another scalar
            property of :func:`skimage.measure.regionprops`.
        """
        column = self._columns.get(name)
        if column is None:
            if name in _SHAPE_MEASURES:
                column = self._shape_column(name)
            else:
                props = self._regionprops()
                try:
                    column = np.array([float(getattr(r, name)) for r in props], dtype=np.float64)
                except (AttributeError, TypeError) as exc:
                    raise FeatureError(
                        f"{name!r} is not a scalar region property "
                        "(e.g. 'perimeter', 'eccentricity', 'solidity', 'extent')"
                    ) from exc
            self._columns[name] = column
        return column

    def _shape_column(self, name: str) -> FloatArray:
        """A shape measure of every region, vectorised over the label image."""
        if name == "area":
            return self.areas.copy()
        if name == "extent":
            boxes = np.array(
                [(s[0].stop - s[0].start) * (s[1].stop - s[1].start) for s in self._find_objects()],
                dtype=np.float64,
            ).reshape(-1)
            return self.areas / boxes if self.count else np.zeros(0)
        if name == "perimeter":
            return _edge_counts(self.labels, self.count)
        if name in ("area_convex", "solidity"):
            hulls = self.areas.copy()  # a region that fills its bounding box is its own hull
            for i, window in enumerate(self._find_objects()):
                box = (window[0].stop - window[0].start) * (window[1].stop - window[1].start)
                if self.areas[i] < box:
                    hulls[i] = _hull_area(self.labels[window] == i + 1)
            self._columns["area_convex"] = hulls
            self._columns["solidity"] = self.areas / hulls
            return self._columns[name]
        major, minor, ecc = _moment_ellipse(*_label_moments(self.labels, self.count))
        self._columns.update(axis_major_length=major, axis_minor_length=minor, eccentricity=ecc)
        return self._columns[name]

    def _property_of(self, index: int, name: str) -> float:
        column = self._columns.get(name)
        if column is not None:
            return float(column[index])
        if name in _SHAPE_MEASURES:
            return self._shape_of(index)[name]
        if self._props is not None:
            return float(getattr(self._props[index], name))
        return float(getattr(self._single(index), name))

    def _shape_of(self, index: int) -> dict[str, float]:
        """The shape measures of one region, from its bounding box only."""
        shape = self._shape_cache.get(index)
        if shape is None:
            crop = self.labels[self._find_objects()[index]] == index + 1
            shape = _crop_shape(crop)
            self._shape_cache[index] = shape
        return shape

    def _single(self, index: int) -> Any:
        """The regionprops of one region, made from its bounding box only.

        Cheaper than :func:`~skimage.measure.regionprops` of the whole label
        image when only a few regions are needed (the largest one); gives the
        same shape properties (they do not depend on the region's position).
        """
        region = self._single_cache.get(index)
        if region is None:
            from skimage.measure import regionprops

            window = self._find_objects()[index]
            region = regionprops((self.labels[window] == index + 1).astype(np.uint8))[0]
            self._single_cache[index] = region
        return region

    @property
    def largest(self) -> int | None:
        """Index of the largest region, or ``None`` when there is none.

        Ties in area are broken by extent, then major axis, eccentricity,
        solidity and perimeter (largest first), so the choice does not depend
        on where the regions lie, and not on 90° rotations or flips.
        """
        if not self._largest_known:
            self._largest_known = True
            if self.count:
                tied = [int(i) for i in np.flatnonzero(self.areas == self.areas.max())]
                self._largest = tied[0] if len(tied) == 1 else self._break_tie(tied)
        return self._largest

    def _break_tie(self, tied: list[int]) -> int:
        """The lexicographic maximum of the tie-break properties (first in label order)."""
        objects = self._find_objects()
        # Regions with identical pixels have identical properties: measure one of each.
        unique: dict[tuple[tuple[int, ...], bytes], int] = {}
        for i in tied:
            crop = self.labels[objects[i]] == i + 1
            unique.setdefault((crop.shape, np.packbits(crop).tobytes()), i)
        candidates = list(unique.values())
        for prop in self._TIE_BREAK:  # narrow down one property at a time
            if len(candidates) == 1:
                break
            values = [round(self._property_of(i, prop), 9) for i in candidates]
            best = max(values)
            candidates = [i for i, v in zip(candidates, values, strict=True) if v == best]
        return candidates[0]

    def _find_objects(self) -> list[Any]:
        if self._objects is None:
            from scipy import ndimage

            self._objects = ndimage.find_objects(self.labels)
        return self._objects

    def largest_property(self, name: str) -> float:
        """A property of the largest region, or 0.0 when there are no regions."""
        index = self.largest
        if index is None:
            return 0.0
        if name == "area":
            return float(self.areas[index])
        return self._property_of(index, name)


#: Region properties measured on the union of the pixel squares (see :class:`Regions`).
_SHAPE_MEASURES = frozenset(
    {
        "area",
        "area_convex",
        "axis_major_length",
        "axis_minor_length",
        "eccentricity",
        "extent",
        "perimeter",
        "solidity",
    }
)

# Integer sums below this are exact in float64 (np.bincount adds float weights).
_EXACT_FLOAT_INT = 2**53


def _edge_counts(labels: npt.NDArray[np.intp], count: int) -> FloatArray:
    """Exposed pixel edges of each region ``1..count``: its perimeter in pixels.

    An edge is exposed where a region pixel meets a pixel of another label
    (in practice the background: regions are 8-connected, so two regions are
    never 4-adjacent) or the border of the map.
    """
    padded = np.pad(labels, 1)
    edges = np.zeros(count + 1, dtype=np.int64)
    for a, b in ((padded[1:, :], padded[:-1, :]), (padded[:, 1:], padded[:, :-1])):
        exposed = a != b
        edges += np.bincount(a[exposed], minlength=count + 1)
        edges += np.bincount(b[exposed], minlength=count + 1)
    return edges[1:].astype(np.float64)


def _label_moments(labels: npt.NDArray[np.intp], count: int) -> tuple[Any, ...]:
    """Exact pixel count and sums of r, c, r², c², r·c of every region's pixel centres.

    Object arrays of Python ints (so the second moments that follow neither
    round nor overflow).
    """
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols]
    weights = (rows, cols, rows * rows, cols * cols, rows * cols)
    n = np.bincount(lab, minlength=count + 1)[1:]
    largest = max(labels.shape) ** 2 * int(n.max(initial=0))
    sums: list[npt.NDArray[np.int64]] = []
    for w in weights:
        if largest < _EXACT_FLOAT_INT:
            s = np.rint(np.bincount(lab, weights=w, minlength=count + 1)).astype(np.int64)
        else:  # a huge region: slower, but exact
            s = np.zeros(count + 1, dtype=np.int64)
            np.add.at(s, lab, w.astype(np.int64))
        sums.append(s[1:])
    return tuple(x.astype(object) for x in (n, *sums))


def _crop_shape(crop: npt.NDArray[np.bool_]) -> dict[str, float]:
    """The shape measures (see :class:`Regions`) of the region in a bounding-box crop."""
    rows, cols = np.nonzero(crop)
    n = int(rows.size)
    sums = (rows, cols, rows * rows, cols * cols, rows * cols)
    major, minor, ecc = _moment_ellipse(n, *(int(s.sum()) for s in sums))
    box = crop.size
    hull = float(n) if n == box else _hull_area(crop)
    padded = np.pad(crop, 1)
    edges = np.count_nonzero(padded[1:, :] != padded[:-1, :]) + np.count_nonzero(
        padded[:, 1:] != padded[:, :-1]
    )
    return {
        "area": float(n),
        "area_convex": hull,
        "axis_major_length": float(major),
        "axis_minor_length": float(minor),
        "eccentricity": float(ecc),
        "extent": n / box,
        "perimeter": float(edges),
        "solidity": n / hull,
    }


def _moment_ellipse(n: Any, sr: Any, sc: Any, srr: Any, scc: Any, src: Any) -> tuple[Any, ...]:
    """Major axis, minor axis and eccentricity of the moment ellipse of pixel squares.

    The arguments are exact integers (Python ints, or object arrays of them):
    the pixel count and the sums of r, c, r², c² and r·c over the pixel
    centres.  The covariance of the union of the unit squares is that of the
    centres plus 1/12 on the diagonal; ``12·n²`` times it has the integer
    entries ``a``, ``b``, ``c`` below.  Its eigenvalues are
    ``(a + c ± root) / 2`` with ``root = sqrt((a - c)² + 4b²)``; the smaller
    one is taken as ``det / larger`` (no cancellation), and the eccentricity
    as ``sqrt(2·root / (a + c + root))`` (exactly 0 for a symmetric region).
    """
    a = 12 * (n * srr - sr * sr) + n * n
    c = 12 * (n * scc - sc * sc) + n * n
    b = 12 * (n * src - sr * sc)
    trace = np.asarray(a + c, dtype=np.float64)
    root = np.sqrt(np.asarray((a - c) ** 2 + 4 * b * b, dtype=np.float64))
    det = np.asarray(a * c - b * b, dtype=np.float64)
    scale = 12.0 * np.asarray(n * n, dtype=np.float64)  # the eigenvalues are in px² × scale
    twice_major = trace + root  # 2·λ1·scale, > 0: λ2 >= 1/12
    major = 4.0 * np.sqrt(twice_major / (2.0 * scale))
    minor = 4.0 * np.sqrt(2.0 * det / (twice_major * scale))
    eccentricity = np.sqrt(2.0 * root / twice_major)
    return major, minor, eccentricity


def _hull_area(crop: npt.NDArray[np.bool_]) -> float:
    """Area (px²) of the convex hull of the pixel squares of the region in ``crop``.

    The hull of the corners of each row's outermost squares (at most 4 points
    per row, never collinear); its area by the shoelace formula on the
    integer vertices, so it is exact.
    """
    from scipy.spatial import ConvexHull

    width = crop.shape[1]
    rows = np.flatnonzero(crop.any(axis=1))
    left = crop[rows].argmax(axis=1)
    right = width - crop[rows, ::-1].argmax(axis=1)  # one past the last pixel
    points = np.concatenate(
        [
            np.column_stack([rows, left]),
            np.column_stack([rows + 1, left]),
            np.column_stack([rows, right]),
            np.column_stack([rows + 1, right]),
        ]
    ).astype(np.int64)
    vertices = points[ConvexHull(points).vertices]
    x, y = vertices[:, 0], vertices[:, 1]
    twice = int(np.dot(x, np.roll(y, -1))) - int(np.dot(np.roll(x, -1), y))
    return abs(twice) / 2


# --- features -----------------------------------------------------------------------------


class FeatureContext:
    """What a feature's function sees: one heatmap, and the threshold of the feature.

    Regions are computed once per threshold and shared by all features of a
    heatmap.  All quantities are in heatmap pixels.

    Attributes
    ----------
    probability_map : numpy.ndarray
        2-D float64 probabilities, 0 outside tissue.
    tissue : numpy.ndarray
        2-D bool tissue mask.
    probabilities : numpy.ndarray
        1-D float64 probabilities of the tissue pixels.
    tissue_pixels : int
        Number of tissue pixels.
    threshold : float or None
        The feature's threshold (``None`` for threshold-independent features).

    Examples
    --------
    >>> import numpy as np
    >>> ctx = FeatureContext(np.array([[0.2, 0.95]]), np.ones((1, 2), bool), 0.9)
    >>> ctx.tissue_pixels, ctx.regions.count
    (2, 1)
    """

    def __init__(
        self,
        probability_map: FloatArray,
        tissue: npt.NDArray[np.bool_],
        threshold: float | None = None,
    ) -> None:
        self.probability_map = probability_map
        self.tissue = tissue
        self.probabilities: FloatArray = probability_map[tissue]
        self.tissue_pixels = int(self.probabilities.size)
        self.threshold = threshold
        self._cache: dict[float, Regions] = {}

    def at(self, threshold: float | None) -> FeatureContext:
        """The same heatmap seen by a feature of another threshold (shares the regions)."""
        ctx = copy.copy(self)  # shallow: the region cache is shared
        ctx.threshold = threshold
        return ctx

    def regions_at(self, threshold: float) -> Regions:
        """The regions of ``p >= threshold`` (computed once per threshold)."""
        regions = self._cache.get(threshold)
        if regions is None:
            regions = Regions(self.probability_map, self.tissue, threshold)
            self._cache[threshold] = regions
        return regions

    @property
    def regions(self) -> Regions:
        """The regions at the feature's own threshold."""
        if self.threshold is None:
            raise FeatureError("a threshold-independent feature cannot use regions")
        return self.regions_at(self.threshold)


@dataclass(frozen=True, slots=True)
class Feature:
    """One heatmap feature: a declarative record and the function that computes it.

    Parameters
    ----------
    key : str
        Identifier without unit or threshold, ``[a-z][a-z0-9_]*`` (e.g.
        ``"mean_region_area"``).  The full name adds the unit and ``@t``.
    function : callable
        ``function(context: FeatureContext) -> float``, in heatmap pixels.
    description : str
        One line for documentation.
    threshold : float or None
        The threshold in ``(0, 1]`` whose regions the feature uses, or
        ``None``.
    length_power : int
        The feature's dimension as a power of length: 0 for dimensionless
        values (counts, ratios, probabilities, shape measures), 1 for lengths,
        2 for areas, 4 for variances of areas.  The value is multiplied by the
        heatmap's pixel length to this power.

    Examples
    --------
    >>> f = Feature("n_pixels", lambda ctx: float(ctx.regions.pixels), "pixels >= t",
    ...             threshold=0.7)
    >>> f.name("um")
    'n_pixels@0.7'
    >>> Feature("area", lambda ctx: 0.0, "", threshold=0.5, length_power=2).name("l0px")
    'area_l0px2@0.5'
    """

    key: str
    function: Callable[[FeatureContext], float] = field(repr=False, compare=False)
    description: str = ""
    threshold: float | None = None
    length_power: int = 0

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key) or _UNIT_SUFFIX_RE.search(self.key):
            raise ParameterError(
                f"feature key must match [a-z][a-z0-9_]* and not end in a unit suffix "
                f"(_um, _um2, _l0px, ...), got {self.key!r}"
            )
        if self.threshold is not None:
            _check_threshold(self.threshold)
            object.__setattr__(self, "threshold", float(self.threshold))
        power = self.length_power
        if not _is_integer(power) or power < 0:
            raise ParameterError(f"length_power must be a non-negative int, got {power!r}")
        object.__setattr__(self, "length_power", int(power))

    def name(self, units: UnitSystem) -> str:
        """The full name in unit system ``"um"`` (µm) or ``"l0px"`` (level-0 pixels)."""
        name = self.key
        if self.length_power:
            power = str(self.length_power) if self.length_power > 1 else ""
            name += f"_{units}{power}"
        if self.threshold is not None:
            name += f"@{self.threshold:g}"
        return name

    def compute(self, context: FeatureContext, pixel_length: float) -> float:
        """The value in physical units (or level-0 pixels); always finite."""
        value = float(self.function(context.at(self.threshold)))
        if not math.isfinite(value):
            raise FeatureError(
                f"feature {self.name('um')!r} gave {value!r}; features must be finite"
            )
        return value * pixel_length**self.length_power if self.length_power else value


def _is_real(x: object) -> bool:
    """A real number of any type (Python, NumPy, ...), but not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


def _is_integer(x: object) -> bool:
    """An integer of any type (Python, NumPy, ...), but not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


def _check_threshold(t: object) -> None:
    if not (_is_real(t) and 0 < t <= 1):  # type: ignore[operator]
        raise ParameterError(f"thresholds must be numbers in (0, 1], got {t!r}")


# --- feature functions (heatmap pixel units) ------------------------------------------------


def _max_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.max()) if ctx.tissue_pixels else 0.0


def _mean_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.mean()) if ctx.tissue_pixels else 0.0


def _std_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.std()) if ctx.tissue_pixels else 0.0


def _p99_probability(ctx: FeatureContext) -> float:
    return float(np.percentile(ctx.probabilities, 99)) if ctx.tissue_pixels else 0.0


def _n_regions(ctx: FeatureContext) -> float:
    return float(ctx.regions.count)


def _n_pixels(ctx: FeatureContext) -> float:
    return float(ctx.regions.pixels)


def _tumor_tissue_ratio(ctx: FeatureContext) -> float:
    return ctx.regions.pixels / ctx.tissue_pixels if ctx.tissue_pixels else 0.0


def _total_tumor_area(ctx: FeatureContext) -> float:
    return float(ctx.regions.pixels)


def _mean_region_area(ctx: FeatureContext) -> float:
    r = ctx.regions
    return r.pixels / r.count if r.count else 0.0


def _mean_region_probability(ctx: FeatureContext) -> float:
    r = ctx.regions
    return float(r.probability_sums.sum()) / r.pixels if r.pixels else 0.0


def _probability_mass_ratio(ctx: FeatureContext) -> float:
    mass = float(ctx.regions.probability_sums.sum())
    return mass / ctx.tissue_pixels if ctx.tissue_pixels else 0.0


def _largest(prop: str) -> Callable[[FeatureContext], float]:
    def function(ctx: FeatureContext) -> float:
        return ctx.regions.largest_property(prop)

    function.__name__ = f"largest_{prop}"
    return function


_Stat = Literal["max", "mean", "var", "skew", "kurt"]


def _summary(values: FloatArray, stat: _Stat) -> float:
    """Max, mean, population variance, skewness or excess kurtosis; 0 where undefined."""
    if values.size == 0:
        return 0.0
    if stat == "max":
        return float(values.max())
    if stat == "mean":
        return float(values.mean())
    centred = values - values.mean()
    var = float(np.mean(centred**2))
    if stat == "var":
        return var
    # Skewness and kurtosis of fewer than two distinct values are undefined: 0.
    if values.size < 2 or var <= 1e-12 * max(1.0, float(np.mean(values**2))):
        return 0.0
    if stat == "skew":
        return float(np.mean(centred**3) / var**1.5)
    return float(np.mean(centred**4) / var**2 - 3.0)


def _region_summary(prop: str, stat: _Stat) -> Callable[[FeatureContext], float]:
    def function(ctx: FeatureContext) -> float:
        r = ctx.regions
        values = r.areas if prop == "area" else r.column(prop)
        return _summary(values, stat)

    function.__name__ = f"{stat}_{prop}"
    return function


def _cervix28(thresholds: Sequence[float]) -> list[Feature]:
    features = [
        Feature("max_probability", _max_probability, "maximum probability over tissue"),
        Feature("mean_probability", _mean_probability, "mean probability over tissue"),
        Feature(
            "std_probability",
            _std_probability,
            "standard deviation (population) of the probability over tissue",
        ),
        Feature("p99_probability", _p99_probability, "99th percentile of the probability"),
    ]
    per_threshold: list[tuple[str, Callable[[FeatureContext], float], str, int]] = [
        ("n_regions", _n_regions, "number of regions", 0),
        ("tumor_tissue_ratio", _tumor_tissue_ratio, "tumor area / tissue area", 0),
        ("total_tumor_area", _total_tumor_area, "total area of the regions", 2),
        ("largest_region_area", _largest("area"), "area of the largest region", 2),
        ("mean_region_area", _mean_region_area, "mean area of the regions", 2),
        (
            "largest_region_major_axis",
            _largest("axis_major_length"),
            "longest axis (major axis of the moment ellipse) of the largest region",
            1,
        ),
        (
            "largest_region_eccentricity",
            _largest("eccentricity"),
            "eccentricity of the moment ellipse of the largest region",
            0,
        ),
        (
            "largest_region_extent",
            _largest("extent"),
            "extent of the largest region (area / bounding-box area)",
            0,
        ),
        (
            "largest_region_solidity",
            _largest("solidity"),
            "solidity of the largest region (area / convex-hull area)",
            0,
        ),
        (
            "largest_region_perimeter",
            _largest("perimeter"),
            "perimeter of the largest region (the boundary of its pixel squares)",
            1,
        ),
        (
            "mean_region_probability",
            _mean_region_probability,
            "mean probability inside the regions",
            0,
        ),
        (
            "region_probability_mass_ratio",
            _probability_mass_ratio,
            "sum of the probability inside the regions / tissue area",
            0,
        ),
    ]
    for t in thresholds:
        features += [
            Feature(key, fn, desc, threshold=t, length_power=power)
            for key, fn, desc, power in per_threshold
        ]
    return features


_STAT_POWER = {"max": 1, "mean": 1, "var": 2, "skew": 0, "kurt": 0}
_STAT_WORD = {
    "max": "maximum",
    "mean": "mean",
    "var": "variance",
    "skew": "skewness",
    "kurt": "excess kurtosis",
}


def _camelyon16(thresholds: Sequence[float]) -> list[Feature]:
    if len(thresholds) != 2:
        raise ParameterError(
            f"the 'camelyon16' preset needs two thresholds (low, high), got {tuple(thresholds)}"
        )
    low, high = sorted(thresholds)
    features: list[Feature] = []
    for prop, t, power in (
        ("area", high, 2),
        ("perimeter", high, 1),
        ("eccentricity", high, 0),
        ("solidity", high, 0),
        ("extent", low, 0),
    ):
        for stat in ("max", "mean", "var", "skew", "kurt"):
            features.append(
                Feature(
                    f"{stat}_region_{prop}",
                    _region_summary(prop, stat),
                    f"{_STAT_WORD[stat]} of the {prop} of the regions",
                    threshold=t,
                    length_power=power * _STAT_POWER[stat],
                )
            )
    features += [
        Feature("tumor_tissue_ratio", _tumor_tissue_ratio, "tumor area / tissue area", high),
        Feature(
            "largest_region_major_axis",
            _largest("axis_major_length"),
            "longest axis (major axis of the moment ellipse) of the largest region",
            low,
            length_power=1,
        ),
        Feature(
            "n_pixels",
            _n_pixels,
            "number of heatmap pixels at or above t (Wang et al.'s count: it depends on the "
            "heatmap's stride, unlike the features in µm)",
            high,
        ),
    ]
    return features


_PRESET_BUILDERS: dict[str, Callable[[Sequence[float]], list[Feature]]] = {
    "cervix28": _cervix28,
    "camelyon16": _camelyon16,
}


def preset_features(
    preset: str = "cervix28", thresholds: Sequence[float] = (0.5, 0.9)
) -> list[Feature]:
    """The :class:`Feature` list of a built-in preset.

    Parameters
    ----------
    preset : {"cervix28", "camelyon16"}
        ``"cervix28"`` (the study's value) or ``"camelyon16"``.
    thresholds : sequence of float
        Thresholds in ``(0, 1]``; ``(0.5, 0.9)`` (the study's value).
        ``"cervix28"`` has 4 + 12 features per threshold; ``"camelyon16"``
        needs exactly two (low, high).

    Examples
    --------
    >>> [f.name("um") for f in preset_features("cervix28")][:5]
    ['max_probability', 'mean_probability', 'std_probability', 'p99_probability', 'n_regions@0.5']
    >>> len(preset_features("camelyon16"))
    28
    """
    builder = _PRESET_BUILDERS.get(preset)
    if builder is None:
        raise ParameterError(f"unknown feature preset {preset!r}; valid presets: {PRESETS}")
    return builder(_check_thresholds(thresholds))


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(thresholds)
    if not values:
        raise ParameterError("thresholds must not be empty")
    for t in values:
        _check_threshold(t)
    floats = tuple(float(t) for t in values)  # NumPy scalars become plain floats
    if len(set(floats)) != len(floats):
        raise ParameterError(f"thresholds must be distinct, got {floats}")
    return floats


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class FeatureVector:
    """The features of one heatmap.

    Attributes
    ----------
    values : numpy.ndarray
        1-D float64, finite.
    names : tuple of str
        Feature names (unit and threshold included).
    units : tuple of str
        Unit of each feature (see :func:`unit_of`).
    slide_id : str or None
        The heatmap's slide.
    preset : str or None
        The preset the features come from (``None`` for a custom list).
    """

    values: FloatArray
    names: tuple[str, ...]
    units: tuple[str, ...]
    slide_id: str | None = None
    preset: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureVector):
            return NotImplemented
        return (
            (self.names, self.units, self.slide_id, self.preset)
            == (other.names, other.units, other.slide_id, other.preset)
        ) and bool(np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.values[self.names.index(name)])
        except ValueError:
            raise KeyError(f"no feature {name!r}; features: {self.names}") from None

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, slots=True, eq=False)
class FeatureTable:
    """Features of many heatmaps: one row per slide, one column per feature.

    Attributes
    ----------
    values : numpy.ndarray
        2-D float64, ``(n_slides, n_features)``.
    names : tuple of str
        Column names.
    slide_ids : tuple of str
        Row names.
    preset : str or None
        The preset the features come from.

    Examples
    --------
    >>> import numpy as np
    >>> t = FeatureTable(np.arange(6.0).reshape(2, 3), ("a", "b_um2@0.5", "c"), ("s1", "s2"))
    >>> t.select(["c", "a"]).values.tolist()
    [[2.0, 0.0], [5.0, 3.0]]
    >>> t.units
    ('1', 'µm²', '1')
    >>> t["b_um2@0.5"].tolist()
    [1.0, 4.0]
    """

    values: FloatArray
    names: tuple[str, ...]
    slide_ids: tuple[str, ...]
    preset: str | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "slide_ids", tuple(str(s) for s in self.slide_ids))
        if values.ndim != 2 or values.shape != (len(self.slide_ids), len(self.names)):
            raise FeatureError(
                f"a FeatureTable needs values of shape (n_slides, n_features) = "
                f"({len(self.slide_ids)}, {len(self.names)}), got {values.shape}"
            )
        if len(set(self.names)) != len(self.names):
            raise FeatureError(f"feature names must be unique, got {self.names}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureTable):
            return NotImplemented
        return (self.names, self.slide_ids, self.preset) == (
            other.names,
            other.slide_ids,
            other.preset,
        ) and bool(np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]

    @property
    def units(self) -> tuple[str, ...]:
        """Unit of each column (read from its name, see :func:`unit_of`)."""
        return tuple(unit_of(n) for n in self.names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_slides, n_features)``."""
        return (len(self.slide_ids), len(self.names))

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getitem__(self, name: str) -> FloatArray:
        """One column by name."""
        return self.values[:, self._indices([name])[0]]

    def _indices(self, names: Iterable[str]) -> list[int]:
        index = {n: i for i, n in enumerate(self.names)}
        wanted = list(names)
        missing = [n for n in wanted if n not in index]
        if missing:
            raise FeatureError(f"no feature(s) {missing} in the table; it has {self.names}")
        return [index[n] for n in wanted]

    def select(self, names: Iterable[str]) -> FeatureTable:
        """The table with only the given columns, in the given order."""
        wanted = list(names)
        return FeatureTable(
            self.values[:, self._indices(wanted)], tuple(wanted), self.slide_ids, self.preset
        )

    def rows(self, indices: npt.ArrayLike) -> FeatureTable:
        """The table with only the given rows (an index array or a boolean mask)."""
        idx = np.arange(len(self))[np.asarray(indices)]
        return FeatureTable(
            self.values[idx], self.names, tuple(self.slide_ids[i] for i in idx), self.preset
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV: a ``slide_id`` column, then one column per feature.

        Values are written with full precision, so :meth:`from_csv` gives back
        the same numbers.
        """
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["slide_id", *self.names])
            for sid, row in zip(self.slide_ids, self.values, strict=True):
                writer.writerow([sid, *(repr(float(v)) for v in row)])
        return path

    @classmethod
    def from_csv(cls, path: str | Path, *, preset: str | None = None) -> FeatureTable:
        """Read a table written by :meth:`to_csv`.

        Raises
        ------
        ResultFileError
            If the file is missing, empty, truncated or not a feature table.
        """
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ResultFileError(f"cannot read the feature table {path}: {exc}") from exc
        if not rows or not rows[0] or rows[0][0] != "slide_id":
            raise ResultFileError(
                f"{path} is not a feature table: its first row must start with 'slide_id'"
            )
        names = rows[0][1:]
        values = np.empty((len(rows) - 1, len(names)), dtype=np.float64)
        for i, row in enumerate(rows[1:]):
            if len(row) != len(names) + 1:
                raise ResultFileError(
                    f"{path}, line {i + 2}: {len(row)} fields, expected {len(names) + 1} "
                    "(is the file truncated?)"
                )
            try:
                values[i] = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise ResultFileError(f"{path}, line {i + 2}: {exc}") from exc
        try:
            return cls(values, tuple(names), tuple(r[0] for r in rows[1:]), preset)
        except FeatureError as exc:
            raise ResultFileError(f"{path}: {exc}") from exc


# --- the extractor --------------------------------------------------------------------------


def _tissue_of(heatmap: HeatmapLike, tissue_mask: Any) -> npt.NDArray[np.bool_] | None:
    """The explicit mask when given, else the heatmap's own ``tissue_mask``, else None."""
    mask = tissue_mask
    if mask is None:
        mask = getattr(heatmap, "tissue_mask", None)
    if mask is None:
        return None
    return np.asarray(getattr(mask, "array", mask))


class HeatmapFeatureExtractor:
    """Turns tumor-probability heatmaps into slide-level feature vectors.

    Parameters
    ----------
    preset : str or sequence of Feature
        ``"cervix28"`` (the study's value; 28 features with the default
        thresholds), ``"camelyon16"``, or your own list of :class:`Feature`.
    thresholds : sequence of float
        Probability thresholds that define tumor regions, ``(0.5, 0.9)`` (the
        study's value).  Ignored when ``preset`` is a list of features.
    extra_features : sequence of Feature
        Features appended to the preset's.
    on_missing : {"raise", "exclude"}
        What to do with tissue pixels that have no probability (NaN):
        ``"raise"`` a :class:`~cervixwsi.errors.FeatureError` (default), or
        ``"exclude"`` them from the tissue (logged).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> rng = np.random.default_rng(0)
    >>> maps = [Raster(rng.random((16, 16)), 256, (4096, 4096)) for _ in range(3)]
    >>> ex = HeatmapFeatureExtractor(preset="camelyon16")
    >>> table = ex.extract_many(maps, slide_ids=["a", "b", "c"], progress=False)
    >>> table.shape, table.names[-1]
    ((3, 28), 'n_pixels@0.9')
    >>> def bright(ctx):                      # a feature of your own
    ...     return float((ctx.probabilities > 0.99).mean())
    >>> ex = HeatmapFeatureExtractor(extra_features=[Feature("frac_above_99", bright)])
    >>> ex.feature_names()[-1]
    'frac_above_99'
    """

    def __init__(
        self,
        preset: str | Sequence[Feature] = "cervix28",
        thresholds: Sequence[float] = (0.5, 0.9),
        *,
        extra_features: Sequence[Feature] = (),
        on_missing: Literal["raise", "exclude"] = "raise",
    ) -> None:
        self.preset = preset
        self.thresholds = tuple(thresholds)
        self.extra_features = tuple(extra_features)
        self.on_missing = on_missing

    def __repr__(self) -> str:
        preset = self.preset if isinstance(self.preset, str) else f"<{len(self.preset)} features>"
        return (
            f"HeatmapFeatureExtractor(preset={preset!r}, thresholds={self.thresholds}, "
            f"extra_features=<{len(self.extra_features)}>, on_missing={self.on_missing!r})"
        )

    @property
    def features(self) -> tuple[Feature, ...]:
        """The features, in output order (validated)."""
        if isinstance(self.preset, str):
            base = preset_features(self.preset, self.thresholds)
        else:
            base = list(self.preset)
        features = (*base, *self.extra_features)
        for f in features:
            if not isinstance(f, Feature):
                raise ParameterError(f"features must be Feature objects, got {f!r}")
        keys = [f.name("um") for f in features]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ParameterError(f"feature names must be unique, repeated: {dup}")
        if self.on_missing not in ("raise", "exclude"):
            raise ParameterError(
                f"on_missing must be 'raise' or 'exclude', got {self.on_missing!r}"
            )
        return features

    def feature_names(self, units: UnitSystem = "um") -> tuple[str, ...]:
        """Names of the features in unit system ``"um"`` or ``"l0px"``."""
        return tuple(f.name(units) for f in self.features)

    @property
    def _preset_name(self) -> str | None:
        return self.preset if isinstance(self.preset, str) and not self.extra_features else None

    def extract(
        self,
        heatmap: HeatmapLike,
        tissue_mask: Any = None,
        *,
        slide_id: str | None = None,
    ) -> FeatureVector:
        """The features of one heatmap.

        Parameters
        ----------
        heatmap : HeatmapLike
            A probability raster (values in ``[0, 1]``, NaN where not predicted).
        tissue_mask : Raster or numpy.ndarray, optional
            Boolean, same shape.  When given it is the tissue, even if the
            heatmap has a ``tissue_mask`` attribute of its own (which is used
            otherwise); without either, tissue is where the probabilities are
            finite.
        slide_id : str, optional
            Defaults to the heatmap's ``slide_id`` attribute, if any.

        Raises
        ------
        FeatureError
            If the tissue mask has another shape, a tissue pixel has an
            out-of-range probability, or (with ``on_missing="raise"``) a NaN.
        """
        return self._extract(self.features, heatmap, tissue_mask, slide_id)

    def _extract(
        self,
        features: tuple[Feature, ...],
        heatmap: HeatmapLike,
        tissue_mask: Any,
        slide_id: str | None,
    ) -> FeatureVector:
        ctx, pixel_length, units = self._prepare(heatmap, tissue_mask)
        values = np.array([f.compute(ctx, pixel_length) for f in features], dtype=np.float64)
        if slide_id is None:
            sid = getattr(heatmap, "slide_id", None)
            slide_id = None if sid is None else str(sid)
        names = tuple(f.name(units) for f in features)
        return FeatureVector(
            values, names, tuple(unit_of(n) for n in names), slide_id, self._preset_name
        )

    def extract_many(
        self,
        heatmaps: Iterable[HeatmapLike],
        *,
        tissue_masks: Iterable[Any] | None = None,
        slide_ids: Sequence[str] | None = None,
        progress: bool = True,
    ) -> FeatureTable:
        """The features of many heatmaps, as a :class:`FeatureTable`.

        Parameters
        ----------
        heatmaps : iterable of HeatmapLike
            Read one at a time (a generator that loads heatmaps lazily keeps
            memory flat).
        tissue_masks : iterable, optional
            One mask per heatmap, or ``None`` for a heatmap's own
            ``tissue_mask`` (see :meth:`extract`).
        slide_ids : sequence of str, optional
            Row names; default each heatmap's ``slide_id``, else its index.
        progress : bool
            Show a tqdm progress bar.

        Raises
        ------
        FeatureError
            As :meth:`extract` (the message names the heatmap), or when some
            heatmaps know their mpp and others do not (their features would
            have different units).
        ParameterError
            If ``tissue_masks`` or ``slide_ids`` are not one per heatmap.
        """
        from tqdm.auto import tqdm

        features = self.features
        total = len(heatmaps) if isinstance(heatmaps, Sized) else None
        masks: Iterator[Any] | None = None if tissue_masks is None else iter(tissue_masks)
        rows: list[FloatArray] = []
        ids: list[str] = []
        names: tuple[str, ...] | None = None
        bar = tqdm(heatmaps, total=total, desc="heatmap features", disable=not progress)
        for i, heatmap in enumerate(bar):
            mask = None
            if masks is not None:
                mask = next(masks, _END)
                if mask is _END:
                    raise ParameterError(f"tissue_masks ran out at heatmap {i}: give one each")
            if slide_ids is not None and i >= len(slide_ids):
                raise ParameterError(f"got {len(slide_ids)} slide_ids for more heatmaps")
            sid = None if slide_ids is None else str(slide_ids[i])
            try:
                fv = self._extract(features, heatmap, mask, sid)
            except FeatureError as exc:
                who = sid or getattr(heatmap, "slide_id", None)
                raise FeatureError(
                    f"heatmap {i}{'' if who is None else f' ({who})'}: {exc}"
                ) from exc
            if names is None:
                names = fv.names
            elif fv.names != names:
                raise FeatureError(
                    f"heatmap {i} gives features in other units than heatmap 0 "
                    f"({fv.units} vs {tuple(unit_of(n) for n in names)}): give all heatmaps "
                    "an mpp, or none"
                )
            rows.append(fv.values)
            ids.append(fv.slide_id if fv.slide_id is not None else str(i))
        if slide_ids is not None and len(slide_ids) != len(rows):
            raise ParameterError(f"got {len(slide_ids)} slide_ids for {len(rows)} heatmaps")
        if masks is not None and next(masks, _END) is not _END:
            raise ParameterError(f"got more tissue_masks than the {len(rows)} heatmaps")
        if names is None:
            names = tuple(f.name("um") for f in features)
        values = np.vstack(rows) if rows else np.empty((0, len(names)))
        logger.info("extracted %d features from %d heatmaps", len(names), len(rows))
        return FeatureTable(values, names, tuple(ids), self._preset_name)

    def _prepare(
        self, heatmap: HeatmapLike, tissue_mask: Any
    ) -> tuple[FeatureContext, float, UnitSystem]:
        try:
            p = np.asarray(heatmap.array, dtype=np.float64)
        except (AttributeError, TypeError, ValueError) as exc:
            raise FeatureError(
                f"a heatmap needs a numeric 2-D .array (a Raster), got {type(heatmap).__name__}"
            ) from exc
        if p.ndim != 2:
            raise FeatureError(f"a heatmap must be 2-D, got shape {p.shape}")
        finite = np.isfinite(p)
        tissue = _tissue_of(heatmap, tissue_mask)
        if tissue is None:
            tissue = finite
        else:
            if tissue.shape != p.shape:
                raise FeatureError(
                    f"the tissue mask has shape {tissue.shape}, the heatmap {p.shape}: "
                    "they must be on the same grid"
                )
            tissue = tissue.astype(bool, copy=False)
            missing = tissue & ~finite
            if missing.any():
                n = int(missing.sum())
                r, c = np.argwhere(missing)[0]
                if self.on_missing == "raise":
                    raise FeatureError(
                        f"{n} tissue pixel(s) have no probability (NaN), first at "
                        f"[row, col] = [{r}, {c}]: predict every tissue patch, or pass "
                        "on_missing='exclude' to leave them out of the tissue"
                    )
                logger.info("left %d tissue pixel(s) without a probability out of tissue", n)
                tissue = tissue & finite
        inside = p[tissue]
        if inside.size and (inside.min() < 0 or inside.max() > 1):
            raise FeatureError(
                f"probabilities must be in [0, 1], got values in "
                f"[{inside.min():g}, {inside.max():g}]"
            )
        if not inside.size:
            logger.warning("the heatmap has no tissue: all its features are 0")
        pixel_length, units = _pixel_scale(heatmap)
        return FeatureContext(np.where(tissue, p, 0.0), tissue), pixel_length, units


_END = object()
