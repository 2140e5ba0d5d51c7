"""Level-0 boxes and raster windows, and the snapping of coordinates to integers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import GeometryError

# Relative tolerance under which a coordinate divided by a downsample is taken to be
# an integer, so that ``window -> box -> window`` round-trips despite float rounding.
_SNAP = 1e-9


def _snap(q: float) -> float:
    r = round(q)
    return float(r) if abs(q - r) <= _SNAP * max(1.0, abs(q)) else q


def _snap_array(q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r = np.round(q)
    return np.where(np.abs(q - r) <= _SNAP * np.maximum(1.0, np.abs(q)), r, q)


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise GeometryError(f"{name} must be finite, got {value!r}")


def _span(start: float, end: float) -> float:
    """The largest length from ``start`` that does not end past ``end`` in floating point.

    ``start + (end - start)`` can round one ulp above ``end``; an intersection built from
    it would then not lie inside the boxes it came from.
    """
    length = end - start
    while length > 0 and start + length > end:
        length = math.nextafter(length, 0.0)
    return length


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle in level-0 pixel coordinates.

    Parameters
    ----------
    x, y : float
        Top-left corner (level-0 pixels).
    width, height : float
        Size (level-0 pixels), non-negative.  The box is the half-open region
        ``[x, x + width) x [y, y + height)``.

    Examples
    --------
    >>> a = Box(0, 0, 100, 50)
    >>> a.intersection(Box(50, 25, 100, 100))
    Box(x=50, y=25, width=50, height=25)
    >>> a.scale(0.25)
    Box(x=0.0, y=0.0, width=25.0, height=12.5)
    >>> a.contains(Box(10, 10, 5, 5))
    True
    """

    x: float
    y: float
    width: float
    height: float

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            _check_finite(f"Box.{name}", getattr(self, name))
        if self.width < 0 or self.height < 0:
            raise GeometryError(
                f"Box size must be non-negative, got width={self.width}, height={self.height}"
            )

    @classmethod
    def from_bounds(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        """Make a box from its corners ``(x0, y0)`` (inclusive) and ``(x1, y1)`` (exclusive).

        Examples
        --------
        >>> Box.from_bounds(10, 20, 30, 60)
        Box(x=10, y=20, width=20, height=40)
        """
        if x1 < x0 or y1 < y0:
            raise GeometryError(f"Box bounds must be ordered, got ({x0}, {y0}, {x1}, {y1})")
        return cls(x0, y0, x1 - x0, y1 - y0)

    @property
    def x1(self) -> float:
        """Right edge (exclusive)."""
        return self.x + self.width

    @property
    def y1(self) -> float:
        """Bottom edge (exclusive)."""
        return self.y + self.height

    @property
    def location(self) -> tuple[float, float]:
        """``(x, y)``, as OpenSlide's ``read_region`` takes it."""
        return (self.x, self.y)

    @property
    def size(self) -> tuple[float, float]:
        """``(width, height)``."""
        return (self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        """``(x, y)`` of the centre."""
        return (self.x + self.width / 2, self.y + self.height / 2)

    @property
    def area(self) -> float:
        """``width * height``."""
        return self.width * self.height

    @property
    def is_empty(self) -> bool:
        """True when the box has zero area."""
        return self.width == 0 or self.height == 0

    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``."""
        return (self.x, self.y, self.x1, self.y1)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or ``None`` when they do not overlap."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, _span(x0, x1), _span(y0, y1))

    def intersects(self, other: Box) -> bool:
        """True when the boxes share a region of positive area."""
        return self.intersection(other) is not None

    def contains(self, other: Box) -> bool:
        """True when ``other`` lies inside this box (edges may touch)."""
        return (
            self.x <= other.x and self.y <= other.y and other.x1 <= self.x1 and other.y1 <= self.y1
        )

    def contains_point(self, x: float, y: float) -> bool:
        """True when ``(x, y)`` lies in the half-open box."""
        return self.x <= x < self.x1 and self.y <= y < self.y1

    def scale(self, factor: float) -> Box:
        """Multiply every coordinate by ``factor``.

        ``box.scale(1 / downsample)`` gives the box in the pixels of a level whose
        downsample is ``downsample``; ``scale(downsample)`` goes back to level 0.
        """
        _check_finite("factor", factor)
        if factor <= 0:
            raise GeometryError(f"scale factor must be positive, got {factor}")
        return Box(self.x * factor, self.y * factor, self.width * factor, self.height * factor)

    def translate(self, dx: float, dy: float) -> Box:
        """The same box moved by ``(dx, dy)``."""
        return Box(self.x + dx, self.y + dy, self.width, self.height)

    def clip(self, width: float, height: float) -> Box | None:
        """The part of the box inside ``[0, width) x [0, height)``, or ``None``."""
        return self.intersection(Box(0, 0, width, height))

    def round_out(self) -> Box:
        """The smallest box with integer corners that contains this one."""
        x0, y0 = math.floor(_snap(self.x)), math.floor(_snap(self.y))
        x1, y1 = math.ceil(_snap(self.x1)), math.ceil(_snap(self.y1))
        return Box(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open index window ``[row0, row1) x [col0, col1)`` of a raster.

    Examples
    --------
    >>> import numpy as np
    >>> w = Window(1, 3, 0, 2)
    >>> np.arange(12).reshape(3, 4)[w.slices]
    array([[4, 5],
           [8, 9]])
    """

    row0: int
    row1: int
    col0: int
    col1: int

    def __post_init__(self) -> None:
        if self.row1 < self.row0 or self.col1 < self.col0:
            raise GeometryError(f"Window must have row0 <= row1 and col0 <= col1, got {self}")

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices, to index a 2-D array."""
        return (slice(self.row0, self.row1), slice(self.col0, self.col1))

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in raster pixels."""
        return (self.row1 - self.row0, self.col1 - self.col0)

    @property
    def is_empty(self) -> bool:
        """True when the window holds no pixel."""
        return self.row1 == self.row0 or self.col1 == self.col0
