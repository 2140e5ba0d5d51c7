"""Annotations and rasters: :func:`rasterize` polygons, trace masks back into polygons."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_int, check_real
from cervixwsi.annotations._model import Annotation, AnnotationSet, AnnotationWarning, _as_set
from cervixwsi.errors import GeometryError, ParameterError
from cervixwsi.geometry import Raster

__all__ = ["annotations_from_mask", "rasterize"]


def _fill_even_odd(
    rings: Sequence[npt.NDArray[np.float64]],
    x_centres: npt.NDArray[np.float64],
    y_centres: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.bool_], int, int] | None:
    """Pixels whose centre is inside ``rings`` (even-odd rule), within their bounding window.

    ``rings`` and the (increasing) pixel centres are in level-0 coordinates.
    Returns ``(window mask, row0, col0)``, or ``None`` when no pixel centre
    can be inside.  A centre exactly on a left or top edge is inside, on a
    right or bottom edge outside (half-open, so polygons that tile the plane
    tile the pixels).
    """
    p0 = np.concatenate(rings)
    p1 = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    # Rows whose centre y satisfies min(y0, y1) <= y < max(y0, y1) cross the edge.
    r0 = np.searchsorted(y_centres, np.minimum(p0[:, 1], p1[:, 1]), side="left")
    r1 = np.searchsorted(y_centres, np.maximum(p0[:, 1], p1[:, 1]), side="left")
    counts = r1 - r0
    total = int(counts.sum())
    if total == 0:
        return None
    col0 = int(np.searchsorted(x_centres, p0[:, 0].min(), side="left"))
    col1 = int(np.searchsorted(x_centres, p0[:, 0].max(), side="left"))
    if col1 <= col0:
        return None
    row0, row1 = int(r0[counts > 0].min()), int(r1[counts > 0].max())
    edge = np.repeat(np.arange(len(p0)), counts)
    r = np.repeat(r0, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    x0, y0 = p0[edge, 0], p0[edge, 1]
    x1, y1 = p1[edge, 0], p1[edge, 1]
    x = x0 + (y_centres[r] - y0) * ((x1 - x0) / (y1 - y0))
    # The crossing toggles inside/outside for every centre at or right of x.
    c = np.searchsorted(x_centres[col0:col1], x, side="left")
    # One byte per pixel of the window: only the parity of the crossings matters, which
    # uint8 wrap-around keeps.
    toggles = np.zeros((row1 - row0, col1 - col0 + 1), np.uint8)
    np.add.at(toggles, (r - row0, c), 1)
    inside = np.bitwise_xor.accumulate(toggles[:, :-1] & 1, axis=1).view(bool)
    return inside, row0, col0


def _grid(
    shape_or_raster: tuple[int, int] | Raster,
    downsample: float | None,
    slide_dimensions: tuple[int, int] | None,
    mpp: float | None,
) -> tuple[int, int, float, tuple[int, int], float | None]:
    """``(rows, cols, downsample, slide_dimensions, mpp)`` of the output raster."""
    if isinstance(shape_or_raster, Raster):
        ref = shape_or_raster
        if downsample is not None and not math.isclose(downsample, ref.downsample, rel_tol=1e-9):
            raise ParameterError(
                f"downsample={downsample} differs from the raster's {ref.downsample:g}; "
                "give one or the other"
            )
        if slide_dimensions is not None and tuple(slide_dimensions) != ref.slide_dimensions:
            raise ParameterError(
                f"slide_dimensions={slide_dimensions} differ from the raster's "
                f"{ref.slide_dimensions}"
            )
        rows, cols = ref.shape
        return rows, cols, ref.downsample, ref.slide_dimensions, ref.mpp if mpp is None else mpp
    try:
        rows_value, cols_value = shape_or_raster
    except (TypeError, ValueError):
        raise ParameterError(
            f"shape_or_raster must be a Raster or a (rows, cols) shape, got {shape_or_raster!r}"
        ) from None
    rows = check_int(rows_value, "rasterize shape rows", min=1)
    cols = check_int(cols_value, "rasterize shape cols", min=1)
    if downsample is None:
        if slide_dimensions is None:
            d = 1.0
        else:
            d = (slide_dimensions[0] / cols + slide_dimensions[1] / rows) / 2
    else:
        d = check_real(downsample, "rasterize.downsample", min=0, min_open=True)
    if slide_dimensions is None:
        slide_dimensions = (max(round(cols * d), 1), max(round(rows * d), 1))
    return rows, cols, d, (int(slide_dimensions[0]), int(slide_dimensions[1])), mpp


def rasterize(
    annotations: Iterable[Annotation],
    shape_or_raster: tuple[int, int] | Raster,
    downsample: float | None = None,
    *,
    slide_dimensions: tuple[int, int] | None = None,
    classes: Iterable[str] = ("tumor",),
    exclude: Iterable[str] = ("exclusion",),
    mpp: float | None = None,
    outside: Literal["clip", "raise"] = "clip",
) -> Raster:
    """Draw annotations into a boolean mask over the slide, at any downsample.

    Raster pixel ``(r, c)`` covers the level-0 square
    ``[c·d, (c+1)·d) × [r·d, (r+1)·d)`` (as in :class:`~cervixwsi.geometry.Raster`)
    clipped to the slide, and is inside a polygon when the centre of that
    square (:meth:`~cervixwsi.geometry.Raster.pixel_centers`; ``(c + ½)·d``
    except in a last column clipped by the slide's edge) is inside, by the
    even-odd rule over the polygon's exterior and holes; a centre exactly on
    a left/top edge is inside, on a right/bottom edge outside.  The result
    is ``union(classes) - union(exclude)``: holes belong to their own
    annotation (a hole does not erase another annotation lying inside it),
    while polygons with an ``exclude`` label
    (Camelyon16's ``_2`` groups) are cleared from every class after all
    classes are drawn.  The scan-line fill is vectorised over all edge/row
    crossings, so its cost is the polygon's perimeter in raster pixels plus
    its bounding box.

    Parameters
    ----------
    annotations : iterable of Annotation
        Level-0 polygons.
    shape_or_raster : (int, int) or Raster
        The output's ``(rows, cols)``, or a raster whose grid (shape,
        downsample, slide dimensions, mpp) the output takes, e.g. a tissue mask.
    downsample : float, optional
        Level-0 pixels per raster pixel, for a shape.  When ``None`` it is
        the mean ratio of ``slide_dimensions`` to the shape (OpenSlide's level
        downsample), or 1.
    slide_dimensions : (int, int), optional
        The slide's level-0 ``(width, height)``; default ``shape × downsample``.
    classes : iterable of str
        Labels drawn as True.  A class that no annotation has gives an
        :class:`AnnotationWarning` (a typo such as ``"Tumor"`` would
        otherwise give an empty mask).
    exclude : iterable of str
        Labels whose polygons are cleared after drawing ``classes``.
    mpp : float, optional
        Level-0 micrometres per pixel, stored in the raster.
    outside : {"clip", "raise"}
        Annotations with vertices outside the slide are clipped to it with an
        :class:`AnnotationWarning` (``"clip"``), or refused with a
        :class:`~cervixwsi.errors.GeometryError` naming the first one
        (``"raise"``).

    Returns
    -------
    Raster
        A boolean raster.

    Examples
    --------
    >>> import numpy as np
    >>> tumor = Annotation(np.array([[0, 0], [40, 0], [40, 40], [0, 40]]))
    >>> cut = Annotation(np.array([[20, 0], [40, 0], [40, 20]]), label="exclusion")
    >>> rasterize([tumor, cut], (4, 4), 10).array.astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 1, 0],
           [1, 1, 1, 1],
           [1, 1, 1, 1]])
    """
    return _rasterize(
        annotations,
        shape_or_raster,
        downsample,
        slide_dimensions=slide_dimensions,
        classes=classes,
        exclude=exclude,
        mpp=mpp,
        outside=outside,
    )


def _rasterize(
    annotations: Iterable[Annotation],
    shape_or_raster: tuple[int, int] | Raster,
    downsample: float | None,
    *,
    slide_dimensions: tuple[int, int] | None,
    classes: Iterable[str],
    exclude: Iterable[str],
    mpp: float | None,
    outside: str,
) -> Raster:
    """:func:`rasterize`; its warnings point at the caller of whoever calls this."""
    check_choice(outside, "rasterize.outside", ("clip", "raise"))
    classes = {classes} if isinstance(classes, str) else set(classes)
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    rows, cols, d, dims, mpp = _grid(shape_or_raster, downsample, slide_dimensions, mpp)
    items = _as_set(annotations)
    source = f" of {items.source}" if items.source else ""
    missing = sorted(classes - set(items.labels))
    if missing and items:
        warnings.warn(
            f"rasterize: no annotation{source} has the class(es) {missing}; the labels present "
            f"are {list(items.labels)}",
            AnnotationWarning,
            stacklevel=3,
        )
    width, height = dims
    try:
        grid = Raster(np.empty((rows, cols), bool), d, dims, mpp=mpp)
    except GeometryError as exc:
        raise ParameterError(f"rasterize: the output grid does not fit the slide: {exc}") from None
    x_centres, y_centres = grid.pixel_centers()
    n_outside = 0
    mask = np.zeros((rows, cols), bool)
    excluded = np.zeros((rows, cols), bool)
    for index, a in enumerate(items):
        if a.label not in classes and a.label not in exclude:
            continue
        b = a.bounds()
        if b.x < 0 or b.y < 0 or b.x1 > width or b.y1 > height:
            if outside == "raise":
                raise GeometryError(
                    f"annotation {index}{source} ({a.label!r}, {a.name!r}) has vertices outside "
                    f"the {width}x{height} slide: bounds ({b.x:g}, {b.y:g}, {b.x1:g}, {b.y1:g})"
                )
            n_outside += 1
        filled = _fill_even_odd(a.rings, x_centres, y_centres)
        if filled is None:
            continue
        inside, r0, c0 = filled
        target = excluded if a.label in exclude else mask
        target[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] |= inside
    if n_outside:
        warnings.warn(
            f"rasterize: {n_outside} annotation(s){source} reach outside the {width}x{height} "
            "slide; they were clipped to it",
            AnnotationWarning,
            stacklevel=3,
        )
    mask &= ~excluded
    return grid.with_array(mask)


def annotations_from_mask(
    mask: Raster,
    *,
    label: str = "tumor",
    min_area: float = 0.0,
    simplify: float = 0.0,
) -> AnnotationSet:
    """Trace the regions of a boolean raster as polygons with holes, in level-0 coordinates.

    Each 8-connected region becomes one :class:`Annotation` whose holes are
    the region's holes; a region lying inside another's hole is an
    annotation of its own.  The polygons follow the pixel edges (the
    boundary between True and False pixels, clipped to the slide), so with
    ``simplify=0`` the tracing is exact: an annotation's area is its pixel
    count times the pixel area, and :func:`rasterize` of the result on the
    mask's grid gives the mask back, pixel for pixel.  Two pixels touching
    only at a corner are one region whose outline touches itself there.

    Parameters
    ----------
    mask : Raster
        A 2-D raster; nonzero pixels are inside.
    label : str
        The label of every annotation.
    min_area : float
        Regions smaller than this many level-0 pixels² (exterior area minus
        holes) are left out.
    simplify : float
        Douglas-Peucker tolerance in raster pixels (0: exact, no
        simplification).  A positive value drops vertices; the round trip is
        then exact only up to about that many pixels at the boundary.

    Returns
    -------
    AnnotationSet

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> array = np.zeros((6, 6), bool)
    >>> array[1:5, 1:5] = True
    >>> array[2:4, 2:4] = False
    >>> mask = Raster(array, 16, (96, 96))
    >>> regions = annotations_from_mask(mask)
    >>> len(regions), regions[0].exterior.tolist(), regions[0].area == 12 * 16 * 16
    (1, [[16.0, 16.0], [16.0, 80.0], [80.0, 80.0], [80.0, 16.0]], True)
    >>> bool((rasterize(regions, mask).array == array).all())
    True
    """
    import cv2

    if not isinstance(mask, Raster):
        raise ParameterError(f"mask must be a Raster, got {type(mask).__name__}")
    simplify = check_real(simplify, "annotations_from_mask.simplify", min=0)
    binary = (np.asarray(mask.array) != 0).astype(np.uint8)
    # Trace at twice the resolution: every contour point is then a quarter of a pixel
    # (the quarter towards the boundary) and maps to that corner of its pixel, which
    # turns OpenCV's pixel-centre contours into pixel-edge ("crack") outlines.
    doubled = np.repeat(np.repeat(binary, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return AnnotationSet()
    d = mask.downsample
    width, height = mask.slide_dimensions
    tree = hierarchy[0]

    def to_level0(contour: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        # Doubled index i lies in pixel i // 2; its pixel corner is at (i + 1) // 2.
        corners = (contour.reshape(-1, 2) + 1) // 2
        ring = _clean_ring(corners.astype(np.float64))
        if simplify > 0 and len(ring) > 3:
            curve = ring.astype(np.float32).reshape(-1, 1, 2)
            reduced = cv2.approxPolyDP(curve, simplify, True).reshape(-1, 2)
            if len(reduced) >= 3:
                ring = reduced.astype(np.float64)
        level0 = ring * d
        np.minimum(level0[:, 0], width, out=level0[:, 0])
        np.minimum(level0[:, 1], height, out=level0[:, 1])
        return level0

    result: list[Annotation] = []
    for i, (_, _, first_child, parent) in enumerate(tree):
        if parent != -1:
            continue
        holes = []
        child = first_child
        while child != -1:
            holes.append(to_level0(contours[child]))
            child = tree[child][0]
        annotation = Annotation(to_level0(contours[i]), tuple(holes), label)
        if annotation.area >= min_area:
            result.append(annotation)
    return AnnotationSet(result)


def _clean_ring(ring: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Drop repeated and straight-through (collinear, same-direction) vertices of a ring."""
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    if keep.any():
        ring = ring[keep]
    if len(ring) > 3:
        before = ring - np.roll(ring, 1, axis=0)
        after = np.roll(ring, -1, axis=0) - ring
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        dot = (before * after).sum(axis=1)
        straight = (cross == 0) & (dot > 0)
        if (~straight).sum() >= 3:
            ring = ring[~straight]
    return ring
