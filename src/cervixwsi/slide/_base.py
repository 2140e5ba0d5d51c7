"""The surface every slide reader shares: :class:`BaseSlide`.

A reader (one module per file format) says how big its levels and tiles are and
how to decode one tile; level arithmetic, region coordinates, clipping, white
padding, thumbnails and physical units live here, once.
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int
from cervixwsi.errors import RegionError, SlideReadError
from cervixwsi.geometry import resolve_level

__all__ = ["BaseSlide", "RGBImage"]

RGBImage = npt.NDArray[np.uint8]


def _nearest(q: float) -> int:
    """``q`` rounded to the nearest integer, halves up (``round`` would round to even)."""
    return math.floor(q + 0.5)


def _as_int(value: Any, what: str) -> int:
    """An integer coordinate; integral floats are accepted, anything else is a RegionError."""
    try:
        return operator.index(value)
    except TypeError:
        pass
    if (
        isinstance(value, float | np.floating)
        and math.isfinite(value)
        and float(value) == int(value)
    ):
        return int(value)
    raise RegionError(f"{what} must be an integer, got {value!r}")


def _pair(value: Any, what: str) -> tuple[int, int]:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise RegionError(f"{what} must be a pair of integers, got {value!r}") from None
    return _as_int(a, what), _as_int(b, what)


def _positive_size(value: Any, what: str = "size") -> tuple[int, int]:
    w, h = _pair(value, what)
    if w <= 0 or h <= 0:
        raise RegionError(f"{what} must be positive (width, height), got ({w}, {h})")
    return w, h


class BaseSlide(abc.ABC):  # noqa: B024 - a reader provides tiles or regions
    """The surface common to every slide reader (:class:`Slide`, :class:`ArraySlide`).

    A subclass says how big its levels and tiles are and how to get one tile;
    everything else (level arithmetic, clipping, white padding, pasting tiles
    into a region, thumbnails, physical units) lives here, once.

    The attributes are read-only properties: ``dimensions`` (level-0
    ``(width, height)``), ``level_count``, ``level_dimensions``,
    ``level_downsamples`` (OpenSlide's: the mean of ``W / w_k`` and
    ``H / h_k``), ``mpp`` (level-0 micrometres per pixel ``(x, y)``, ``None``
    when the file does not say: never guessed), ``objective_power``,
    ``properties`` (OpenSlide's key names) and ``name``.
    """

    def __init__(
        self,
        *,
        name: str,
        level_dimensions: Sequence[tuple[int, int]],
        mpp: tuple[float, float] | None,
        objective_power: float | None,
        properties: Mapping[str, str],
    ) -> None:
        dims = tuple((int(w), int(h)) for w, h in level_dimensions)
        width, height = dims[0]
        self._name = name
        self._level_dimensions = dims
        self._level_downsamples = tuple((width / w + height / h) / 2 for w, h in dims)
        self._mpp = mpp
        self._objective_power = objective_power
        self._properties = dict(properties)
        self._closed = False

    # --- what a subclass provides ------------------------------------------------------
    #
    # A tile reader (TIFF, DICOM, arrays) provides ``_tile_size`` and ``_tile``; the
    # region arithmetic below then does everything else.  A region reader (OpenSlide,
    # which resamples itself) overrides ``_read_region`` instead.

    #: What reads the pixels (``slide.backend``): ``"tiff"``, ``"dicom"``, ``"openslide"``...
    _backend_name: ClassVar[str] = "custom"

    def _tile_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of the tiles of ``level`` (the level itself if untiled)."""
        raise TypeError(f"{type(self).__name__} reads regions, not tiles")

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        """Tile ``(col, row)`` of ``level`` as ``(h, w, 3)`` uint8 (at least the part
        inside the level), or ``None`` for a tile the file does not have (white)."""
        raise TypeError(f"{type(self).__name__} reads regions, not tiles")

    def _tiles(
        self, level: int, cells: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, RGBImage | None]]:
        """The tiles ``cells`` of ``level``, in any order (a subclass may decode in parallel)."""
        for col, row in cells:
            yield col, row, self._tile(level, col, row)

    def _region_tiles(
        self, level: int, cells: list[tuple[int, int]], last_rows: int
    ) -> Iterable[tuple[int, int, RGBImage | None]]:
        """The tiles ``cells`` of one region (row by row), in any order.

        The region uses the cells of its bottom tile row only down to their row
        ``last_rows`` (exclusive), so a reader may return those tiles with only their
        first ``last_rows`` rows (a TIFF JPEG tile decodes only those).  Default:
        :meth:`_tiles`, whole tiles.
        """
        return self._tiles(level, cells)

    # --- geometry -----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """What reads the pixels: ``"tiff"`` (the native TIFF reader), ``"dicom"``
        (DICOM WSI through wsidicom), ``"openslide"``, or ``"array"`` (in memory)."""
        return self._backend_name

    @property
    def name(self) -> str:
        """The slide's identifier (file stem for a :class:`Slide`)."""
        return self._name

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self._level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level, level 0 first."""
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """OpenSlide's downsample of each level: the mean of ``W / w_k`` and ``H / h_k``."""
        return self._level_downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 micrometres per pixel ``(x, y)``, or ``None`` when unknown."""
        return self._mpp

    @property
    def objective_power(self) -> float | None:
        """Objective magnification of the scan (e.g. ``20.0``), or ``None`` when unknown."""
        return self._objective_power

    @property
    def properties(self) -> Mapping[str, str]:
        """Metadata, with OpenSlide's key names where it has one."""
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, RGBImage]:
        """Non-pyramid images (``label``, ``macro``, ``thumbnail``), decoded on access."""
        return {}

    def _check_level(self, level: Any) -> int:
        """``level``, if the slide has it (:func:`cervixwsi.geometry.resolve_level`)."""
        if type(level) is int and 0 <= level < len(self._level_dimensions):
            return level  # what resolve_level answers, without its checks (hot read path)
        return resolve_level(self, level=check_int(level, "level"))

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """Micrometres per pixel ``(x, y)`` of a level, or ``None`` when unknown.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> ArraySlide([np.zeros((8, 8, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)],
        ...            mpp=0.5).level_mpp(1)
        (2.0, 2.0)
        """
        k = self._check_level(level)
        if self._mpp is None:
            return None
        d = self._level_downsamples[k]
        return (self._mpp[0] * d, self._mpp[1] * d)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The level to read for a wanted downsample, exactly as OpenSlide chooses it.

        That is the largest level whose downsample is at most ``downsample``
        (comparisons are exact, as in OpenSlide), or level 0 when
        ``downsample`` is below every level's.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> s = ArraySlide([np.zeros((250, 300, 3), np.uint8), np.zeros((125, 150, 3), np.uint8),
        ...                 np.zeros((62, 75, 3), np.uint8)])
        >>> s.level_downsamples
        (1.0, 2.0, 4.016129032258064)
        >>> [s.get_best_level_for_downsample(d) for d in (0.5, 1.99, 2.0, 4.0, 4.1, 64)]
        [0, 0, 1, 1, 2, 2]
        """
        d = float(downsample)
        downsamples = self._level_downsamples
        if d < downsamples[0]:
            return 0
        for k in range(1, len(downsamples)):
            if d < downsamples[k]:
                return k - 1
        return len(downsamples) - 1

    def level_for_mpp(self, mpp: float) -> int:
        """The coarsest level fine enough for ``mpp`` micrometres per pixel.

        That is the level with the largest mpp that is at most ``mpp`` on both axes
        (1 % tolerance, for scanners' rounding), so reading it and downscaling never
        upsamples; level 0 when even level 0 is coarser than ``mpp``.  The rule of
        :func:`cervixwsi.geometry.resolve_level`, which every stage uses, so a tissue
        masker, a patch grid and a heatmap asked for the same ``mpp`` read this level.

        Raises
        ------
        LevelError
            If the slide's mpp is unknown (a :class:`~cervixwsi.errors.RegionError`).
        ParameterError
            If ``mpp`` is not a positive number.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> levels = [np.zeros((64 >> k, 64 >> k, 3), np.uint8) for k in range(3)]
        >>> s = ArraySlide(levels, mpp=0.25)
        >>> [s.level_for_mpp(m) for m in (0.1, 0.25, 0.5, 0.99, 1.004, 8.0)]
        [0, 0, 1, 1, 2, 2]
        """
        return resolve_level(self, mpp=mpp)

    # --- pixels ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SlideReadError(f"slide {self._name!r} is closed")

    def _read_level_pixels(self, level: int, x0: int, y0: int, w: int, h: int) -> RGBImage:
        """Pixels ``[y0, y0 + h) x [x0, x0 + w)`` of a level, white outside it.

        The single place where tiles are clipped and pasted into a region.  A region
        inside one tile is one copy out of that tile; otherwise each tile's part is
        written once into an output that is only pre-filled with white where the
        region leaves the level.
        """
        level_w, level_h = self._level_dimensions[level]
        x1, y1 = x0 + w, y0 + h
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, level_w), min(y1, level_h)
        if cx1 <= cx0 or cy1 <= cy0:
            return np.full((h, w, 3), 255, np.uint8)
        tile_w, tile_h = self._tile_size(level)
        col0, col1 = cx0 // tile_w, (cx1 - 1) // tile_w
        row0, row1 = cy0 // tile_h, (cy1 - 1) // tile_h
        inside = cx0 == x0 and cy0 == y0 and cx1 == x1 and cy1 == y1
        last_rows = cy1 - row1 * tile_h  # rows the region uses of its bottom row of tiles
        if inside and col0 == col1 and row0 == row1:
            _, _, tile = next(iter(self._region_tiles(level, [(col0, row0)], last_rows)))
            if tile is None:
                return np.full((h, w, 3), 255, np.uint8)
            tx0, ty0 = col0 * tile_w, row0 * tile_h
            region: RGBImage = tile[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0].copy()
            return region
        # Inside the level every pixel comes from a tile (or is a missing tile's white).
        out = np.empty((h, w, 3), np.uint8) if inside else np.full((h, w, 3), 255, np.uint8)
        cells = [(col, row) for row in range(row0, row1 + 1) for col in range(col0, col1 + 1)]
        for col, row, tile in self._region_tiles(level, cells, last_rows):
            tx0, ty0 = col * tile_w, row * tile_h
            ix0, iy0 = max(cx0, tx0), max(cy0, ty0)
            ix1, iy1 = min(cx1, tx0 + tile_w), min(cy1, ty0 + tile_h)
            if tile is None:
                if inside:
                    out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = 255
                continue
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = tile[
                iy0 - ty0 : iy1 - ty0, ix0 - tx0 : ix1 - tx0
            ]
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> RGBImage:
        """Read a region of a level.

        Parameters
        ----------
        location : tuple of int
            ``(x, y)`` of the top-left corner in **level-0** pixels (may lie
            outside the slide).  At level ``k`` the region starts at level
            pixel ``round(x / d_k), round(y / d_k)``.
        level : int
            The pyramid level, ``0 <= level < level_count``.
        size : tuple of int
            ``(width, height)`` in pixels **of that level**, both positive.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` RGB ``uint8``; parts outside the slide are
            white (255).

        Raises
        ------
        RegionError
            For a non-integer location, a size that is not positive, or a level
            out of range (:class:`~cervixwsi.errors.LevelError`).
        ParameterError
            If ``level`` is not an integer.
        SlideReadError
            If a tile of the region cannot be decoded (a corrupt file).

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> image = np.arange(36, dtype=np.uint8).reshape(2, 6, 3)
        >>> ArraySlide(image).read_region((-1, 1), 0, (3, 2))[..., 0]
        array([[255,  18,  21],
               [255, 255, 255]], dtype=uint8)
        """
        self._check_open()
        k = self._check_level(level)
        x, y = _pair(location, "location")
        w, h = _positive_size(size)
        return self._read_region(k, x, y, w, h)

    def _read_region(self, level: int, x: int, y: int, w: int, h: int) -> RGBImage:
        """A validated region: level-0 ``(x, y)``, ``w x h`` pixels of ``level``.

        Level pixel ``round(x / d)`` (halves up); a region reader overrides this.
        """
        if level == 0:
            return self._read_level_pixels(0, x, y, w, h)
        d = self._level_downsamples[level]
        return self._read_level_pixels(level, _nearest(x / d), _nearest(y / d), w, h)

    def read_level(self, level: int) -> RGBImage:
        """A whole level as ``(h, w, 3)`` uint8 (meant for low-resolution levels).

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> ArraySlide([np.zeros((40, 60, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)]
        ...            ).read_level(1).shape
        (20, 30, 3)
        """
        k = self._check_level(level)
        return self.read_region((0, 0), k, self._level_dimensions[k])

    def read_region_at_mpp(
        self, location: tuple[int, int], size: tuple[int, int], mpp: float
    ) -> RGBImage:
        """Read a region at a resolution given in micrometres per pixel.

        Reads the level chosen by :meth:`level_for_mpp` (the coarsest one at
        least as fine as ``mpp``), enough of it to cover ``size`` pixels of
        ``mpp`` micrometres, and resizes that to ``size`` with area averaging
        (``cv2.INTER_AREA``).

        Parameters
        ----------
        location : tuple of int
            ``(x, y)`` of the top-left corner in level-0 pixels.
        size : tuple of int
            ``(width, height)`` of the result, in pixels of ``mpp`` µm.
        mpp : float
            Micrometres per pixel of the result.

        Raises
        ------
        LevelError
            If the slide's mpp is unknown (a :class:`~cervixwsi.errors.RegionError`).
        RegionError
            For an invalid size or location.
        ParameterError
            If ``mpp`` is not a positive number.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> image = np.zeros((64, 64, 3), np.uint8)
        >>> image[:, 32:] = 200
        >>> s = ArraySlide(image, mpp=0.25)
        >>> s.read_region_at_mpp((0, 0), (8, 2), mpp=2.0)[..., 0]  # 64x16 pixels shrunk 8x
        array([[  0,   0,   0,   0, 200, 200, 200, 200],
               [  0,   0,   0,   0, 200, 200, 200, 200]], dtype=uint8)
        """
        import cv2

        w, h = _positive_size(size)
        k = self.level_for_mpp(mpp)
        target = float(mpp)  # a positive number: level_for_mpp checked it
        level_mpp = self.level_mpp(k)
        assert level_mpp is not None  # level_for_mpp raised otherwise
        read_w = max(1, _nearest(w * target / level_mpp[0]))
        read_h = max(1, _nearest(h * target / level_mpp[1]))
        region = self.read_region(location, k, (read_w, read_h))
        if (read_w, read_h) == (w, h):
            return region
        resized: RGBImage = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        return resized

    def get_thumbnail(self, max_size: tuple[int, int]) -> RGBImage:
        """The whole slide fitting in ``max_size`` ``(width, height)``, aspect kept.

        Like OpenSlide: reads the level :meth:`get_best_level_for_downsample`
        picks for the needed downsample (the smallest level at least as large as
        the thumbnail) and shrinks it with area averaging.  Never enlarges: a
        slide smaller than ``max_size`` comes back at level-0 size.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> ArraySlide(np.zeros((300, 1000, 3), np.uint8)).get_thumbnail((100, 100)).shape
        (30, 100, 3)
        """
        import cv2

        max_w, max_h = _positive_size(max_size, "max_size")
        width, height = self.dimensions
        downsample = max(width / max_w, height / max_h)
        k = self.get_best_level_for_downsample(downsample)
        image = self.read_level(k)
        if downsample <= 1:
            return image
        thumb_w = min(max_w, max(1, _nearest(width / downsample)))
        thumb_h = min(max_h, max(1, _nearest(height / downsample)))
        if (thumb_w, thumb_h) == self._level_dimensions[k]:
            return image
        thumb: RGBImage = cv2.resize(image, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
        return thumb

    # --- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release the slide's resources; reading afterwards raises :class:`SlideReadError`."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = "" if self._mpp is None else f", mpp=({self._mpp[0]:g}, {self._mpp[1]:g})"
        return (
            f"{type(self).__name__}({self._name!r}, dimensions={self.dimensions}, "
            f"level_count={self.level_count}{mpp})"
        )
