"""The polygon model: :class:`Annotation`, :class:`AnnotationSet` and the readers' shared rules."""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_real
from cervixwsi.errors import AnnotationError
from cervixwsi.geometry import Box

if TYPE_CHECKING:
    from cervixwsi.geometry import Raster

__all__ = ["Annotation", "AnnotationSet", "AnnotationWarning"]

Errors = Literal["raise", "skip"]


class AnnotationWarning(UserWarning):
    """An annotation was skipped or clipped (a point set, an invalid polygon, a far vertex)."""


# --- polygons -------------------------------------------------------------------------


def _ring(points: Any, what: str) -> npt.NDArray[np.float64]:
    """A read-only ``(N, 2)`` float64 ring, N >= 3, finite; ``what`` names it in errors."""
    try:
        ring = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{what}: coordinates are not numbers ({exc})") from None
    if ring.ndim != 2 or ring.shape[1] != 2:
        raise AnnotationError(f"{what}: expected (N, 2) x, y coordinates, got shape {ring.shape}")
    if ring.shape[0] < 3:
        raise AnnotationError(f"{what}: a polygon needs at least 3 points, got {ring.shape[0]}")
    if not np.isfinite(ring).all():
        bad = int(np.argwhere(~np.isfinite(ring))[0][0])
        raise AnnotationError(
            f"{what}: coordinate {bad} is not finite ({ring[bad, 0]!r}, {ring[bad, 1]!r})"
        )
    ring.setflags(write=False)
    return ring


def _shoelace(ring: npt.NDArray[np.float64]) -> float:
    """Signed area of a ring (positive when counter-clockwise in x-right, y-up axes)."""
    x, y = ring[:, 0], ring[:, 1]
    # Centre the coordinates: the products stay small and the sum exact for large slides.
    x = x - x.mean()
    y = y - y.mean()
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


@dataclass(frozen=True, eq=False)
class Annotation:
    """One annotated region: a polygon with holes in level-0 pixel coordinates.

    Parameters
    ----------
    exterior : array_like
        ``(N, 2)`` level-0 ``(x, y)`` vertices of the outer ring, ``N >= 3``,
        finite; not closed (the first point is not repeated at the end).
    holes : tuple of array_like
        Inner rings, each ``(M, 2)`` like ``exterior``.
    label : str
        The class (``"tumor"``, ``"exclusion"``, ``"normal"``, ...).
    name : str
        A free name (ASAP's ``Name``, QuPath's ``name``).

    Raises
    ------
    AnnotationError
        For a ring with fewer than 3 points, non-numeric or non-finite
        coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> a = Annotation(np.array([[10, 10], [30, 10], [30, 20]]), label="tumor")
    >>> a.area, a.bounds()
    (100.0, Box(x=10.0, y=10.0, width=20.0, height=10.0))
    >>> a.translate(5, 0).scale(0.5).exterior
    array([[ 7.5,  5. ],
           [17.5,  5. ],
           [17.5, 10. ]])
    """

    exterior: npt.NDArray[np.float64]
    holes: tuple[npt.NDArray[np.float64], ...] = ()
    label: str = "tumor"
    name: str = ""

    def __post_init__(self) -> None:
        what = f"annotation {self.name!r}" if self.name else "annotation"
        object.__setattr__(self, "exterior", _ring(self.exterior, f"{what} exterior"))
        holes = tuple(_ring(h, f"{what} hole {i}") for i, h in enumerate(self.holes))
        object.__setattr__(self, "holes", holes)
        if not isinstance(self.label, str) or not isinstance(self.name, str):
            raise AnnotationError(f"{what}: label and name must be str, got {self.label!r}")

    @property
    def area(self) -> float:
        """Area in level-0 pixels²: the exterior's shoelace area minus the holes'."""
        return abs(_shoelace(self.exterior)) - sum(abs(_shoelace(h)) for h in self.holes)

    @property
    def rings(self) -> tuple[npt.NDArray[np.float64], ...]:
        """The exterior followed by the holes."""
        return (self.exterior, *self.holes)

    @property
    def n_vertices(self) -> int:
        """Number of vertices over all rings."""
        return sum(len(r) for r in self.rings)

    def bounds(self) -> Box:
        """The level-0 bounding box of the exterior."""
        x0, y0 = self.exterior.min(axis=0)
        x1, y1 = self.exterior.max(axis=0)
        return Box.from_bounds(float(x0), float(y0), float(x1), float(y1))

    def translate(self, dx: float, dy: float) -> Annotation:
        """The same annotation moved by ``(dx, dy)`` level-0 pixels."""
        shift = np.array([dx, dy], dtype=np.float64)
        return Annotation(
            self.exterior + shift, tuple(h + shift for h in self.holes), self.label, self.name
        )

    def scale(self, factor: float) -> Annotation:
        """Every coordinate multiplied by ``factor`` (> 0), e.g. ``1 / downsample``."""
        factor = check_real(factor, "Annotation.scale factor", min=0, min_open=True)
        return Annotation(
            self.exterior * factor, tuple(h * factor for h in self.holes), self.label, self.name
        )

    def with_label(self, label: str) -> Annotation:
        """The same polygon with another label."""
        return Annotation(self.exterior, self.holes, label, self.name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotation):
            return NotImplemented
        return (
            self.label == other.label
            and self.name == other.name
            and len(self.holes) == len(other.holes)
            and all(np.array_equal(a, b) for a, b in zip(self.rings, other.rings, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        b = self.bounds()
        holes = f", {len(self.holes)} holes" if self.holes else ""
        name = f", name={self.name!r}" if self.name else ""
        return (
            f"Annotation(label={self.label!r}{name}, {len(self.exterior)} vertices{holes}, "
            f"bounds=({b.x:g}, {b.y:g}, {b.x1:g}, {b.y1:g}))"
        )


class AnnotationSet(Sequence[Annotation]):
    """An ordered collection of :class:`Annotation`, usually one file's.

    Parameters
    ----------
    annotations : iterable of Annotation
        The annotations, in order.
    source : str or os.PathLike, optional
        The file they came from (shown in messages).

    Examples
    --------
    >>> import numpy as np
    >>> tri = np.array([[0, 0], [10, 0], [0, 10]])
    >>> s = AnnotationSet([Annotation(tri), Annotation(tri + 20, label="exclusion")])
    >>> len(s), s.labels, s.area("tumor")
    (2, ('tumor', 'exclusion'), 50.0)
    >>> s.filter("exclusion")[0].bounds()
    Box(x=20.0, y=20.0, width=10.0, height=10.0)
    """

    __slots__ = ("_items", "_source")

    def __init__(
        self,
        annotations: Iterable[Annotation] = (),
        *,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        items = tuple(annotations)
        for i, a in enumerate(items):
            if not isinstance(a, Annotation):
                raise AnnotationError(f"item {i} of an AnnotationSet is a {type(a).__name__}")
        self._items = items
        self._source = None if source is None else pathlib.Path(source)

    @property
    def source(self) -> pathlib.Path | None:
        """The file the annotations were read from, if any."""
        return self._source

    @overload
    def __getitem__(self, index: int) -> Annotation: ...
    @overload
    def __getitem__(self, index: slice) -> AnnotationSet: ...
    def __getitem__(self, index: int | slice) -> Annotation | AnnotationSet:
        if isinstance(index, slice):
            return AnnotationSet(self._items[index], source=self.source)
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnnotationSet):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        src = f", source={str(self.source)!r}" if self.source else ""
        counts = ", ".join(f"{lab}: {len(self.filter(lab))}" for lab in self.labels)
        return f"AnnotationSet({len(self)} annotations{{{counts}}}{src})".replace("{}", "")

    @property
    def labels(self) -> tuple[str, ...]:
        """The distinct labels, in order of first appearance."""
        return tuple(dict.fromkeys(a.label for a in self._items))

    def filter(self, label: str | Iterable[str]) -> AnnotationSet:
        """The annotations whose label is ``label`` (or one of several)."""
        wanted = {label} if isinstance(label, str) else set(label)
        return AnnotationSet((a for a in self._items if a.label in wanted), source=self.source)

    def area(self, label: str | None = None) -> float:
        """Summed area (level-0 pixels²) of the annotations with ``label`` (all when None).

        Overlapping annotations are counted once each; rasterise for the area
        of their union.
        """
        items = self._items if label is None else self.filter(label)._items
        return float(sum(a.area for a in items))

    def bounds(self) -> Box | None:
        """The level-0 box around every annotation, or ``None`` for an empty set."""
        if not self._items:
            return None
        boxes = [a.bounds() for a in self._items]
        return Box.from_bounds(
            min(b.x for b in boxes),
            min(b.y for b in boxes),
            max(b.x1 for b in boxes),
            max(b.y1 for b in boxes),
        )

    def translate(self, dx: float, dy: float) -> AnnotationSet:
        """Every annotation moved by ``(dx, dy)``."""
        return AnnotationSet((a.translate(dx, dy) for a in self._items), source=self.source)

    def scale(self, factor: float) -> AnnotationSet:
        """Every coordinate multiplied by ``factor``."""
        return AnnotationSet((a.scale(factor) for a in self._items), source=self.source)

    def to_mask(
        self,
        shape_or_raster: tuple[int, int] | Raster,
        downsample: float | None = None,
        *,
        slide_dimensions: tuple[int, int] | None = None,
        classes: Iterable[str] = ("tumor",),
        exclude: Iterable[str] = ("exclusion",),
        mpp: float | None = None,
        outside: Literal["clip", "raise"] = "clip",
    ) -> Raster:
        """This set drawn as a boolean mask: :func:`~cervixwsi.annotations.rasterize` of it.

        Given a :class:`~cervixwsi.geometry.Raster`, the mask takes its grid, so
        ``annotations.to_mask(grid)`` is the ground truth on that grid: ``"tumor"``
        polygons minus ``"exclusion"`` ones, a pixel inside when its centre is.
        This is the method :class:`cervixwsi.metrics.FROCEvaluator` calls on
        ground truth given as annotations (any object with a ``to_mask(grid)``
        method will do, see :class:`cervixwsi.metrics.MaskSource`).  The
        parameters are those of :func:`~cervixwsi.annotations.rasterize`.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.geometry import Raster
        >>> s = AnnotationSet([Annotation(np.array([[0, 0], [64, 0], [64, 64], [0, 64]]))])
        >>> grid = Raster(np.zeros((4, 4), bool), 32, (128, 128), mpp=0.25)
        >>> mask = s.to_mask(grid)
        >>> mask.same_grid(grid), mask.array.astype(int).tolist()
        (True, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
        """
        from cervixwsi.annotations._raster import _rasterize

        return _rasterize(
            self,
            shape_or_raster,
            downsample,
            slide_dimensions=slide_dimensions,
            classes=classes,
            exclude=exclude,
            mpp=mpp,
            outside=outside,
        )


def _as_set(annotations: Iterable[Annotation]) -> AnnotationSet:
    return annotations if isinstance(annotations, AnnotationSet) else AnnotationSet(annotations)


def _normalise_label(raw: str, label_map: Mapping[str, str]) -> str:
    raw = raw.strip()
    mapped = label_map.get(raw)
    if mapped is None:
        mapped = label_map.get(raw.lower(), raw)
    return mapped.lower()


def _invalid(errors: Errors, exc: AnnotationError, where: str) -> None:
    if errors == "raise":
        raise AnnotationError(f"{where}: {exc}") from None
    warnings.warn(f"{where}: skipped, {exc}", AnnotationWarning, stacklevel=3)


def _check_errors(errors: str, owner: str) -> None:
    check_choice(errors, f"{owner}.errors", ("raise", "skip"))
