"""Rasters over a slide and exact area-weighted resampling between them."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import GeometryError
from cervixwsi.geometry._box import _SNAP, Box, Window, _snap, _snap_array


def _axis_cells(n: int, d: float, length: float) -> tuple[npt.NDArray[np.float64], ...]:
    """Level-0 start and end of each of ``n`` cells of size ``d``, clipped to ``length``.

    The last cell ends at ``length`` also when ``n * d < length`` (a floor-shaped
    raster), like :meth:`Raster.to_index`, which maps that strip to it.
    """
    starts = np.arange(n, dtype=np.float64) * d
    ends = np.minimum(starts + d, length)
    if n:
        ends[-1] = length
    return np.minimum(starts, length), ends


def axis_overlap_matrix(n_out: int, d_out: float, n_in: int, d_in: float, length: float) -> Any:
    """Sparse ``(n_out, n_in)`` matrix of level-0 overlap lengths between two grids.

    Entry ``(i, j)`` is the length of the overlap of output cell ``i`` (size
    ``d_out``) and input cell ``j`` (size ``d_in``) along one axis of length
    ``length``, both clipped to ``[0, length)``.  Used for exact area-weighted
    resampling of rasters with any (also non-integer) downsample ratio.

    Examples
    --------
    >>> m = axis_overlap_matrix(2, 3.0, 3, 2.0, 6.0).toarray()
    >>> m
    array([[2., 1., 0.],
           [0., 1., 2.]])
    """
    from scipy import sparse

    out_start, out_end = _axis_cells(n_out, d_out, length)
    in_start, in_end = _axis_cells(n_in, d_in, length)
    # Input cells overlapping output cell i: from floor(start/d_in) to ceil(end/d_in).
    first = np.clip(np.floor(out_start / d_in).astype(np.int64), 0, max(n_in - 1, 0))
    last = np.clip(np.ceil(out_end / d_in).astype(np.int64), 1, n_in)
    counts = np.maximum(last - first, 0)
    rows = np.repeat(np.arange(n_out), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = np.repeat(first, counts) + offsets
    overlap = np.minimum(out_end[rows], in_end[cols]) - np.maximum(out_start[rows], in_start[cols])
    keep = overlap > 0
    return sparse.csr_matrix(
        (overlap[keep], (rows[keep], cols[keep])), shape=(n_out, n_in), dtype=np.float64
    )


class Raster:
    """A 2-D array over a whole slide, with the level-0 size of its pixels.

    Parameters
    ----------
    array : numpy.ndarray
        The raster, 2-D, indexed ``[row, col]``.  Any dtype (bool masks, float
        heatmaps, integer labels).
    downsample : float
        Level-0 pixels per raster pixel along both axes (may be non-integer,
        e.g. ``4.0003`` for a real SVS level, or ``256`` for a heatmap with one
        pixel per 256-pixel patch).
    slide_dimensions : tuple of int
        The slide's level-0 ``(width, height)``.  The raster must cover it: along
        each axis its pixel count is ``floor`` or ``ceil`` of ``size / downsample``.
    mpp : float, optional
        The slide's level-0 micrometres per pixel, when known; then
        :attr:`pixel_size_um` is ``downsample * mpp``.

    Raises
    ------
    GeometryError
        If the array is not 2-D, the downsample is not positive and finite, or
        the array's shape does not cover ``slide_dimensions`` at ``downsample``.

    Examples
    --------
    >>> import numpy as np
    >>> heat = Raster(np.full((4, 5), 0.5, np.float32), 256.0, (1200, 1000), mpp=0.25)
    >>> heat.shape, heat.pixel_size_um
    ((4, 5), 64.0)
    >>> heat.to_index(1199, 999)
    (3, 4)
    """

    __slots__ = ("_array", "_downsample", "_mpp", "_slide_dimensions")

    def __init__(
        self,
        array: npt.ArrayLike,
        downsample: float,
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.ndim != 2:
            raise GeometryError(f"a Raster needs a 2-D array, got shape {arr.shape}")
        d = float(downsample)
        if not math.isfinite(d) or d <= 0:
            raise GeometryError(f"downsample must be positive and finite, got {downsample!r}")
        try:
            width, height = (int(v) for v in slide_dimensions)
        except (TypeError, ValueError):
            raise GeometryError(
                f"slide_dimensions must be (width, height), got {slide_dimensions!r}"
            ) from None
        if width <= 0 or height <= 0:
            raise GeometryError(f"slide_dimensions must be positive, got {slide_dimensions!r}")
        for axis, n, length in (("columns", arr.shape[1], width), ("rows", arr.shape[0], height)):
            expected = length / d
            if abs(n - expected) >= 1 + _SNAP * expected:
                lo, hi = math.floor(_snap(expected)), math.ceil(_snap(expected))
                valid = f"{lo}" if lo == hi else f"{lo} or {hi}"
                raise GeometryError(
                    f"a raster over a slide of {width}x{height} level-0 pixels at downsample "
                    f"{d:g} has {valid} {axis}, got {n} (array shape {arr.shape}): is it the "
                    "mask of another slide or another level?"
                )
        if mpp is not None:
            mpp = float(mpp)
            if not math.isfinite(mpp) or mpp <= 0:
                raise GeometryError(f"mpp must be positive and finite, got {mpp!r}")
        self._array = arr
        self._downsample = d
        self._slide_dimensions = (width, height)
        self._mpp = mpp

    # --- basic attributes -------------------------------------------------------------

    @property
    def array(self) -> npt.NDArray[Any]:
        """The 2-D array, indexed ``[row, col]``."""
        return self._array

    @property
    def downsample(self) -> float:
        """Level-0 pixels per raster pixel."""
        return self._downsample

    @property
    def slide_dimensions(self) -> tuple[int, int]:
        """The slide's level-0 ``(width, height)``."""
        return self._slide_dimensions

    @property
    def mpp(self) -> float | None:
        """The slide's level-0 micrometres per pixel, or ``None`` when unknown."""
        return self._mpp

    @property
    def pixel_size_um(self) -> float | None:
        """Micrometres per raster pixel (``downsample * mpp``), or ``None``."""
        return None if self._mpp is None else self._downsample * self._mpp

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the array."""
        rows, cols = self._array.shape
        return (int(rows), int(cols))

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype."""
        return self._array.dtype

    @property
    def extent(self) -> Box:
        """The slide's level-0 extent ``Box(0, 0, width, height)``."""
        return Box(0, 0, *self._slide_dimensions)

    def __repr__(self) -> str:
        mpp = "" if self._mpp is None else f", mpp={self._mpp:g}"
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, "
            f"downsample={self._downsample:g}, slide_dimensions={self._slide_dimensions}{mpp})"
        )

    def with_array(self, array: npt.ArrayLike) -> Raster:
        """A raster with the same geometry and another array of the same shape."""
        arr = np.asarray(array)
        if arr.shape != self._array.shape:
            raise GeometryError(f"with_array needs shape {self.shape}, got {arr.shape}")
        return Raster(arr, self._downsample, self._slide_dimensions, mpp=self._mpp)

    def same_grid(self, other: Raster, *, rtol: float = 1e-9) -> bool:
        """True when ``other`` has the same shape, downsample and slide dimensions."""
        return (
            self.shape == other.shape
            and self._slide_dimensions == other._slide_dimensions
            and math.isclose(self._downsample, other._downsample, rel_tol=rtol)
        )

    # --- level-0 <-> raster ----------------------------------------------------------

    def box_to_window(self, box: Box) -> Window:
        """The smallest window of raster pixels whose level-0 extent covers ``box``.

        The part of ``box`` outside the slide is ignored; a box wholly outside
        gives an empty window.  The window never leaves the array.
        """
        rows, cols = self.shape
        width, height = self._slide_dimensions
        col0, col1 = self._axis_window(box.x, box.x1, width, cols)
        row0, row1 = self._axis_window(box.y, box.y1, height, rows)
        return Window(row0, row1, col0, col1)

    def _axis_window(self, lo: float, hi: float, length: int, n: int) -> tuple[int, int]:
        """Index range ``[k0, k1)`` of the pixels along one axis covering ``[lo, hi)``.

        In a floor-shaped raster (``n * d < length``) the last pixel also covers
        the strip ``[n * d, length)`` (as :meth:`to_index` maps it there).
        """
        d = self._downsample
        if lo >= length or hi <= 0 or hi <= lo:  # wholly outside the slide, or empty
            k = min(max(math.floor(_snap(lo / d)), 0), n)
            return k, k
        k0 = min(max(math.floor(_snap(lo / d)), 0), n - 1)  # n - 1: a floor-shaped strip
        k1 = min(max(math.ceil(_snap(hi / d)), k0 + 1), n)
        return k0, k1

    def window_to_box(self, window: Window) -> Box:
        """The level-0 extent of a window of raster pixels, clipped to the slide."""
        width, height = self._slide_dimensions
        rows, cols = self.shape
        x0, x1 = self._axis_extent(window.col0, window.col1, width, cols)
        y0, y1 = self._axis_extent(window.row0, window.row1, height, rows)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def _axis_extent(self, k0: int, k1: int, length: int, n: int) -> tuple[float, float]:
        """Level-0 ``[start, end)`` of pixels ``k0 .. k1 - 1`` along one axis, in the slide.

        The last pixel reaches the slide's edge (also in a floor-shaped raster).
        """
        d = self._downsample
        # Snapped: 230 * 1.1 is 253.00000000000003 in floats, and means level-0 x = 253.
        start = min(_snap(k0 * d), length)
        end = float(length) if k1 >= n and k1 > k0 else min(_snap(k1 * d), length)
        return float(start), max(float(end), float(start))

    def pixel_to_box(self, row: int, col: int) -> Box:
        """The level-0 box covered by raster pixel ``(row, col)``, clipped to the slide."""
        rows, cols = self.shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise GeometryError(f"pixel ({row}, {col}) is outside the raster of shape {self.shape}")
        return self.window_to_box(Window(row, row + 1, col, col + 1))

    def pixel_edges(
        self,
    ) -> tuple[
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
    ]:
        """Level-0 extents of the raster's rows and columns, clipped to the slide.

        Returns
        -------
        (row_starts, row_ends, col_starts, col_ends) : numpy.ndarray
            Row ``r`` covers level-0 ``y`` in ``[row_starts[r], row_ends[r])``; the
            last row and column reach the slide's edge (as in :meth:`pixel_to_box`).

        Examples
        --------
        >>> Raster(np.zeros((2, 3)), 4, (10, 9)).pixel_edges()[1]
        array([4., 9.])
        """
        width, height = self._slide_dimensions
        rows, cols = self.shape
        ys, ye = _axis_cells(rows, self._downsample, height)
        xs, xe = _axis_cells(cols, self._downsample, width)
        return ys, ye, xs, xe

    def to_index(self, x: Any, y: Any, *, clip: bool = False) -> Any:
        """Raster ``(row, col)`` of level-0 point(s) ``(x, y)``: ``floor(y / d), floor(x / d)``.

        Accepts scalars (returns a tuple of ints) or arrays (returns a tuple of
        int64 arrays).  Points outside the slide raise :class:`GeometryError`,
        unless ``clip`` is true, when they map to the nearest edge pixel.
        """
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        width, height = self._slide_dimensions
        outside = (xa < 0) | (xa >= width) | (ya < 0) | (ya >= height) | ~np.isfinite(xa + ya)
        if not clip and np.any(outside):
            bad = np.argwhere(np.atleast_1d(outside))[0][0]
            px, py = np.atleast_1d(xa)[bad], np.atleast_1d(ya)[bad]
            raise GeometryError(
                f"level-0 point ({px:g}, {py:g}) is outside the slide of {width}x{height} pixels"
            )
        rows, cols = self.shape
        d = self._downsample
        r = np.clip(np.floor(_snap_array(ya / d)), 0, rows - 1).astype(np.int64)
        c = np.clip(np.floor(_snap_array(xa / d)), 0, cols - 1).astype(np.int64)
        if r.ndim == 0:
            return (int(r), int(c))
        return (r, c)

    def pixel_centers(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Level-0 ``(x, y)`` centres of the columns and rows (clipped cells' centres)."""
        width, height = self._slide_dimensions
        rows, cols = self.shape
        xs, xe = _axis_cells(cols, self._downsample, width)
        ys, ye = _axis_cells(rows, self._downsample, height)
        return (xs + xe) / 2, (ys + ye) / 2

    def values_at(self, x: Any, y: Any) -> npt.NDArray[Any]:
        """The raster's values at level-0 points (arrays of the same shape)."""
        r, c = self.to_index(np.asarray(x), np.asarray(y))
        return np.asarray(self._array[r, c])

    def read(self, box: Box) -> tuple[npt.NDArray[Any], Window]:
        """The raster pixels covering a level-0 box, and their window (a view, not a copy)."""
        window = self.box_to_window(box)
        return self._array[window.slices], window

    # --- resampling -------------------------------------------------------------------

    def shape_at(self, downsample: float) -> tuple[int, int]:
        """``(rows, cols)`` of a raster covering the slide at ``downsample`` (ceil)."""
        d = float(downsample)
        if not math.isfinite(d) or d <= 0:
            raise GeometryError(f"downsample must be positive and finite, got {downsample!r}")
        width, height = self._slide_dimensions
        return (math.ceil(_snap(height / d)), math.ceil(_snap(width / d)))

    def resample(
        self, downsample: float, *, method: Literal["nearest", "area"] = "nearest"
    ) -> Raster:
        """This raster at another downsample, covering the same slide.

        Parameters
        ----------
        downsample : float
            The new level-0 pixels per raster pixel.  The new shape is
            ``ceil(size / downsample)`` along each axis.
        method : {"nearest", "area"}
            ``"nearest"``: each new pixel takes the value of the old pixel under
            its level-0 centre (keeps the dtype; for masks and labels).
            ``"area"``: each new pixel is the mean of the old pixels weighted by
            their exact level-0 overlap (float64; a boolean mask becomes the
            fraction of each new pixel that is inside it).  NaN values are left
            out of the mean; a new pixel over NaN only is NaN.

        Examples
        --------
        >>> import numpy as np
        >>> m = Raster(np.array([[1, 0], [0, 0]], bool), 2, (4, 4))
        >>> m.resample(1).array.astype(int)
        array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]])
        >>> m.resample(4, method="area").array
        array([[0.25]])
        """
        rows_out, cols_out = self.shape_at(downsample)
        d_out = float(downsample)
        width, height = self._slide_dimensions
        rows, cols = self.shape
        if method == "nearest":
            xs, xe = _axis_cells(cols_out, d_out, width)
            ys, ye = _axis_cells(rows_out, d_out, height)
            ci = np.clip(np.floor((xs + xe) / 2 / self._downsample), 0, cols - 1).astype(np.intp)
            ri = np.clip(np.floor((ys + ye) / 2 / self._downsample), 0, rows - 1).astype(np.intp)
            out = self._array[np.ix_(ri, ci)]
        elif method == "area":
            ax = axis_overlap_matrix(cols_out, d_out, cols, self._downsample, width)
            ay = axis_overlap_matrix(rows_out, d_out, rows, self._downsample, height)
            values = self._array.astype(np.float64)
            valid = np.isfinite(values)
            if valid.all():
                num = ay @ (ax @ values.T).T
                den = np.outer(np.asarray(ay.sum(axis=1)).ravel(), np.asarray(ax.sum(axis=1)))
            else:
                num = ay @ (ax @ np.where(valid, values, 0.0).T).T
                den = ay @ (ax @ valid.astype(np.float64).T).T
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        else:
            raise GeometryError(f"method must be 'nearest' or 'area', got {method!r}")
        return Raster(out, d_out, self._slide_dimensions, mpp=self._mpp)

    @classmethod
    def from_level(
        cls,
        array: npt.ArrayLike,
        level_dimensions: tuple[int, int],
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
    ) -> Raster:
        """A raster made from an image of a whole pyramid level.

        The downsample is OpenSlide's for that level: the mean of the width
        and height ratios.

        Examples
        --------
        >>> import numpy as np
        >>> Raster.from_level(np.zeros((741, 555)), (555, 741), (2220, 2967)).downsample
        4.002024291497976
        """
        w, h = level_dimensions
        width, height = slide_dimensions
        return cls(array, (width / w + height / h) / 2, slide_dimensions, mpp=mpp)
