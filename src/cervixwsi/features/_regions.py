"""Tumor regions of a heatmap at one threshold, and their stride-independent shape measures."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import FeatureError
from cervixwsi.features._units import FloatArray

__all__ = ["Regions"]


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
