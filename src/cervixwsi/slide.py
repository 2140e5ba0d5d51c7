"""Pyramidal whole-slide images: :class:`Slide` (TIFF files) and :class:`ArraySlide`.

Both share OpenSlide's surface (``dimensions``, ``level_count``,
``level_dimensions``, ``level_downsamples``, ``get_best_level_for_downsample``,
``read_region``, ``get_thumbnail``, ``properties``) and add what a pipeline in
physical units needs: ``mpp``, ``objective_power``, ``level_mpp``,
``level_for_mpp`` and ``read_region_at_mpp``.

Conventions (those of OpenSlide):

* ``location`` is ``(x, y)`` in **level-0** pixels; ``size`` is
  ``(width, height)`` in pixels **of the level read**;
* a level-0 location maps to level ``k`` pixel ``round(x / d_k)`` (halves
  round up), with ``d_k`` OpenSlide's downsample of the level, the mean of
  its width and height ratios to level 0.  Real levels rarely divide exactly
  (2220 -> 555 is 4.0000 across but 2967 -> 741 is 4.0040 down), and the
  nearest pixel is what OpenSlide's resampling at the fractional position is
  closest to;
* regions are ``(height, width, 3)`` RGB ``uint8`` arrays; whatever lies
  outside the slide is white (255), never an error.

:class:`Slide` needs no OpenSlide: it finds the pyramid with tifffile and
decodes only the tiles a region touches (with a small shared cache), reading
their bytes with ``os.pread`` so that any number of threads can read at once.
A slide pickles as its path and reopens in the process that unpickles it.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.slide import ArraySlide
>>> image = np.zeros((300, 400, 3), np.uint8)
>>> slide = ArraySlide([image, image[::2, ::2], image[::4, ::4]], mpp=0.25)
>>> slide.level_dimensions
((400, 300), (200, 150), (100, 75))
>>> slide.read_region((390, 0), 0, (20, 2))[0, :, 0]  # 10 pixels in, 10 beyond the edge
array([  0,   0,   0,   0,   0,   0,   0,   0,   0,   0, 255, 255, 255, 255, 255, 255, 255,
       255, 255, 255], dtype=uint8)
>>> slide.level_for_mpp(0.5), slide.level_mpp(2)
(1, (1.0, 1.0))
"""

from __future__ import annotations

import abc
import logging
import math
import operator
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from cervixwsi._pyramid import write_pyramid
from cervixwsi._tiff import (
    AssociatedPage,
    TiffLevel,
    inspect_tiff,
    level_properties,
    to_rgb,
    ycbcr_to_rgb,
)
from cervixwsi._tilecache import TileCache
from cervixwsi.errors import (
    ParameterError,
    RegionError,
    SlideNotFoundError,
    SlideOpenError,
    SlideReadError,
)
from cervixwsi.geometry import level_for_downsample

__all__ = ["ArraySlide", "BaseSlide", "Slide", "write_pyramid"]

logger = logging.getLogger(__name__)

RGBImage = npt.NDArray[np.uint8]

#: Default bound of a :class:`Slide`'s decoded-tile cache (bytes): 256 RGB tiles of 256².
DEFAULT_TILE_CACHE_BYTES = 48 * 2**20
# Aperio JPEG 2000 with YCbCr components, which the codec leaves unconverted.
_APERIO_JP2K_YCBCR = 33003
# A read touching at least this many tiles decodes them in parallel threads.
_PARALLEL_MIN_TILES = 8


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


def _positive_mpp(mpp: Any) -> float:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise RegionError(f"mpp must be a number of micrometres per pixel, got {mpp!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise RegionError(f"mpp must be positive and finite, got {mpp!r}")
    return value


class BaseSlide(abc.ABC):
    """The surface common to :class:`Slide` and :class:`ArraySlide`.

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

    @abc.abstractmethod
    def _tile_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of the tiles of ``level`` (the level itself if untiled)."""

    @abc.abstractmethod
    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        """Tile ``(col, row)`` of ``level`` as ``(h, w, 3)`` uint8 (at least the part
        inside the level), or ``None`` for a tile the file does not have (white)."""

    def _tiles(
        self, level: int, cells: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, RGBImage | None]]:
        """The tiles ``cells`` of ``level``, in any order (a subclass may decode in parallel)."""
        for col, row in cells:
            yield col, row, self._tile(level, col, row)

    # --- geometry -----------------------------------------------------------------------

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
        try:
            k = operator.index(level)
        except TypeError:
            raise RegionError(f"level must be an integer, got {level!r}") from None
        if not 0 <= k < self.level_count:
            raise RegionError(
                f"level {k} is out of range for slide {self._name!r}, which has "
                f"{self.level_count} level(s): valid levels are 0..{self.level_count - 1}"
            )
        return k

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """Micrometres per pixel ``(x, y)`` of a level, or ``None`` when unknown.

        Examples
        --------
        >>> import numpy as np
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

    def _require_mpp(self) -> tuple[float, float]:
        if self._mpp is None:
            raise RegionError(
                f"slide {self._name!r} does not record its micrometres per pixel (no Aperio MPP, "
                "TIFF resolution or OME physical size): use levels and downsamples instead"
            )
        return self._mpp

    def level_for_mpp(self, mpp: float) -> int:
        """The coarsest level fine enough for ``mpp`` micrometres per pixel.

        That is the level with the largest mpp that is at most ``mpp`` (1 %
        tolerance, for scanners' rounding), so reading it and downscaling never
        upsamples; level 0 when even level 0 is coarser than ``mpp``.

        Raises
        ------
        RegionError
            If the slide's mpp is unknown or ``mpp`` is not positive.

        Examples
        --------
        >>> import numpy as np
        >>> levels = [np.zeros((64 >> k, 64 >> k, 3), np.uint8) for k in range(3)]
        >>> s = ArraySlide(levels, mpp=0.25)
        >>> [s.level_for_mpp(m) for m in (0.1, 0.25, 0.5, 0.99, 1.004, 8.0)]
        [0, 0, 1, 1, 2, 2]
        """
        target = _positive_mpp(mpp)
        base = self._require_mpp()
        return level_for_downsample(self._level_downsamples, target / max(base))

    # --- pixels ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SlideReadError(f"slide {self._name!r} is closed")

    def _read_level_pixels(self, level: int, x0: int, y0: int, w: int, h: int) -> RGBImage:
        """Pixels ``[y0, y0 + h) x [x0, x0 + w)`` of a level, white outside it.

        The single place where tiles are clipped and pasted into a region.
        """
        out = np.full((h, w, 3), 255, np.uint8)
        level_w, level_h = self._level_dimensions[level]
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, level_w), min(y0 + h, level_h)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        tile_w, tile_h = self._tile_size(level)
        cells = [
            (col, row)
            for row in range(cy0 // tile_h, (cy1 - 1) // tile_h + 1)
            for col in range(cx0 // tile_w, (cx1 - 1) // tile_w + 1)
        ]
        for col, row, tile in self._tiles(level, cells):
            if tile is None:
                continue
            tx0, ty0 = col * tile_w, row * tile_h
            ix0, iy0 = max(cx0, tx0), max(cy0, ty0)
            ix1, iy1 = min(cx1, tx0 + tile_w), min(cy1, ty0 + tile_h)
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
            out of range.
        SlideReadError
            If a tile of the region cannot be decoded (a corrupt file).

        Examples
        --------
        >>> import numpy as np
        >>> image = np.arange(36, dtype=np.uint8).reshape(2, 6, 3)
        >>> ArraySlide(image).read_region((-1, 1), 0, (3, 2))[..., 0]
        array([[255,  18,  21],
               [255, 255, 255]], dtype=uint8)
        """
        self._check_open()
        k = self._check_level(level)
        x, y = _pair(location, "location")
        w, h = _positive_size(size)
        if k == 0:
            return self._read_level_pixels(0, x, y, w, h)
        d = self._level_downsamples[k]
        return self._read_level_pixels(k, _nearest(x / d), _nearest(y / d), w, h)

    def read_level(self, level: int) -> RGBImage:
        """A whole level as ``(h, w, 3)`` uint8 (meant for low-resolution levels).

        Examples
        --------
        >>> import numpy as np
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
        RegionError
            If the slide's mpp is unknown, or for an invalid size, location or mpp.

        Examples
        --------
        >>> import numpy as np
        >>> image = np.zeros((64, 64, 3), np.uint8)
        >>> image[:, 32:] = 200
        >>> s = ArraySlide(image, mpp=0.25)
        >>> s.read_region_at_mpp((0, 0), (8, 2), mpp=2.0)[..., 0]  # 64x16 pixels shrunk 8x
        array([[  0,   0,   0,   0, 200, 200, 200, 200],
               [  0,   0,   0,   0, 200, 200, 200, 200]], dtype=uint8)
        """
        import cv2

        w, h = _positive_size(size)
        target = _positive_mpp(mpp)
        k = self.level_for_mpp(target)
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


def _slide_name(path: Path) -> str:
    """The file name without its extension (``.ome.tif`` counts as one)."""
    for suffix in (".ome.tiff", ".ome.tif"):
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _close_files(fd: int, tif: Any) -> None:
    os.close(fd)
    tif.close()


class _AssociatedImages(Mapping[str, RGBImage]):
    """Label, macro and thumbnail images of a :class:`Slide`, decoded when accessed."""

    def __init__(self, slide: Slide, pages: Sequence[AssociatedPage]) -> None:
        self._slide = slide
        self._pages = {p.name: p for p in pages}

    def __getitem__(self, name: str) -> RGBImage:
        return self._slide._read_associated(self._pages[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._pages)

    def __len__(self) -> int:
        return len(self._pages)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n!r}: {p.width}x{p.height}" for n, p in self._pages.items())
        return f"<associated images {{{sizes}}}>"


class Slide(BaseSlide):
    """A pyramidal TIFF slide: Aperio SVS, generic tiled TIFF, OME-TIFF, and more.

    The pyramid is what tifffile exposes as the file's main image series with
    its resolution levels (successive pages marked reduced-resolution, SubIFDs,
    OME levels, SVS pages), keeping those that are tiled and successively
    smaller with level 0's aspect ratio.  Other images (an SVS file's
    thumbnail, label and macro) are :attr:`associated_images`.  Level 0 must be
    tiled: a strip-based (untiled) TIFF, even a small one, is refused with
    :class:`~cervixwsi.errors.SlideOpenError` (convert it to a tiled pyramid).

    Reads decode only the tiles a region touches (JPEG, JPEG 2000, deflate,
    LZW, ... anything tifffile decodes), keep recently decoded tiles in a
    bounded cache, and are safe from several threads at once.  A slide pickles
    as its path and options and reopens when unpickled (process pools, Dask).

    The mpp comes from the Aperio ``MPP`` field, else the OME ``PhysicalSizeX``/
    ``Y``, else the TIFF ``XResolution``/``YResolution`` with a ``ResolutionUnit``
    of inch or centimetre; it is ``None`` otherwise (never guessed).

    Parameters
    ----------
    path : str or os.PathLike
        The slide file.
    tile_cache_bytes : int, optional
        Bound of the decoded-tile cache in bytes (default 48 MiB; 0 disables it).
    threads : int, optional
        Threads that decode the tiles of one large read (a region of at least
        8 tiles, e.g. a thumbnail) in parallel.  Default: up to 4, as many as
        there are CPUs.  Small reads always decode in the calling thread.

    Raises
    ------
    SlideNotFoundError
        If ``path`` does not exist.
    SlideOpenError
        If the file is not a TIFF, is truncated or corrupt, or has no tiled
        pyramid of 8-bit grey/RGB pixels.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, tifffile
    >>> from cervixwsi.slide import Slide
    >>> image = np.random.default_rng(0).integers(0, 255, (500, 700, 3), dtype=np.uint8)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.tif"
    >>> with tifffile.TiffWriter(path) as tif:
    ...     tif.write(image, tile=(128, 128), compression="zlib", subifds=1,
    ...               resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    ...     tif.write(image[::2, ::2], tile=(128, 128), compression="zlib", subfiletype=1)
    >>> with Slide(path) as slide:
    ...     print(slide.level_dimensions, slide.mpp)
    ...     region = slide.read_region((600, 10), 0, (200, 100))
    ((700, 500), (350, 250)) (0.5, 0.5)
    >>> bool((region[:, :100] == image[10:110, 600:]).all()), int(region[:, 100:].min())
    (True, 255)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES,
        threads: int | None = None,
    ) -> None:
        import tifffile

        self._path = Path(path)
        self._tile_cache_bytes = int(tile_cache_bytes)
        self._threads = min(4, os.cpu_count() or 1) if threads is None else int(threads)
        if self._tile_cache_bytes < 0:
            raise ParameterError(f"tile_cache_bytes must be >= 0, got {tile_cache_bytes!r}")
        if self._threads < 1:
            raise ParameterError(f"threads must be >= 1, got {threads!r}")
        path_ = self._path
        if not path_.exists():
            raise SlideNotFoundError(f"{path_}: no such slide file")
        if not path_.is_file():
            raise SlideOpenError(f"{path_}: not a file (a slide is one TIFF file)")
        file_size = path_.stat().st_size
        if file_size == 0:
            raise SlideOpenError(f"{path_}: the file is empty (0 bytes), not a TIFF slide")
        try:
            tif = tifffile.TiffFile(path_)
        except Exception as exc:  # tifffile raises TiffFileError, struct.error, ValueError...
            raise SlideOpenError(
                f"{path_}: not a readable TIFF file ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            layout = inspect_tiff(tif, path_, file_size)
            fd = os.open(path_, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except BaseException:
            tif.close()
            raise
        self._tif = tif
        self._fd = fd
        # Closes the file when the slide is garbage-collected without close().
        self._finalizer = weakref.finalize(self, _close_files, fd, tif)
        self._levels: tuple[TiffLevel, ...] = layout.levels
        self._io_lock = threading.Lock()  # tifffile's file handle and pread-less platforms
        self._cache = TileCache(self._tile_cache_bytes)
        self._associated = _AssociatedImages(self, layout.associated)
        dims = tuple((lv.width, lv.height) for lv in layout.levels)
        super().__init__(
            name=_slide_name(path_),
            level_dimensions=dims,
            mpp=layout.mpp,
            objective_power=layout.objective_power,
            properties=layout.properties,
        )
        self._properties.update(
            level_properties(
                dims,
                self._level_downsamples,
                tuple((lv.tile_width, lv.tile_height) for lv in layout.levels),
            )
        )
        logger.debug("opened %r: levels %s", self, dims)

    @property
    def path(self) -> Path:
        """The slide file."""
        return self._path

    @property
    def associated_images(self) -> Mapping[str, RGBImage]:
        """Non-pyramid images (``label``, ``macro``, ``thumbnail``), decoded on access."""
        return self._associated

    def _tile_size(self, level: int) -> tuple[int, int]:
        lv = self._levels[level]
        return lv.tile_width, lv.tile_height

    def _read_bytes(self, offset: int, count: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self._fd, count, offset)
        with self._io_lock:  # pragma: no cover - platforms without pread (Windows)
            os.lseek(self._fd, offset, os.SEEK_SET)
            return os.read(self._fd, count)

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        key = (level, col, row)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lv = self._levels[level]
        index = row * lv.tiles_across + col
        count = int(lv.bytecounts[index])
        if count == 0:  # a tile the scanner did not write: background
            return None
        where = (
            f"{self._path}: level {level} (page {lv.page_index}), tile {index} "
            f"(column {col}, row {row}, at level pixel x={col * lv.tile_width}, "
            f"y={row * lv.tile_height})"
        )
        try:
            data = self._read_bytes(int(lv.offsets[index]), count)
        except OSError as exc:
            raise SlideReadError(f"{where} cannot be read: {exc}") from exc
        if len(data) != count:
            raise SlideReadError(
                f"{where}: read {len(data)} of its {count} bytes: the file was truncated"
            )
        try:
            decoded, _, _ = lv.decode(
                data, index, jpegtables=lv.jpegtables, jpegheader=lv.jpegheader
            )
        except Exception as exc:  # imagecodecs/zlib/tifffile errors of corrupt data
            raise SlideReadError(
                f"{where} cannot be decoded (compression {lv.compression}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        need_h = min(lv.tile_height, lv.height - row * lv.tile_height)
        need_w = min(lv.tile_width, lv.width - col * lv.tile_width)
        arr = np.asarray(decoded)
        if arr.ndim == 4:
            arr = arr[0]
        if arr.ndim not in (2, 3) or arr.shape[0] < need_h or arr.shape[1] < need_w:
            raise SlideReadError(
                f"{where} decoded to shape {arr.shape}, expected at least ({need_h}, {need_w})"
            )
        try:
            tile = to_rgb(arr, where)
        except ValueError as exc:
            raise SlideReadError(str(exc)) from exc
        if lv.compression == _APERIO_JP2K_YCBCR and tile.shape[2] == 3:
            tile = ycbcr_to_rgb(tile)
        self._cache.put(key, tile)
        return tile

    def _tiles(
        self, level: int, cells: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, RGBImage | None]]:
        if self._threads == 1 or len(cells) < _PARALLEL_MIN_TILES:
            yield from super()._tiles(level, cells)
            return
        with ThreadPoolExecutor(max_workers=self._threads) as pool:
            tiles = pool.map(lambda cell: self._tile(level, *cell), cells)
            for (col, row), tile in zip(cells, tiles, strict=True):
                yield col, row, tile

    def _read_associated(self, associated: AssociatedPage) -> RGBImage:
        self._check_open()
        try:
            with self._io_lock:
                array = associated.page.asarray()
            return to_rgb(np.asarray(array), f"{self._path}: associated image {associated.name}")
        except Exception as exc:
            raise SlideReadError(
                f"{self._path}: associated image {associated.name!r} "
                f"(page {associated.page.index}) cannot be read: {exc}"
            ) from exc

    def close(self) -> None:
        """Close the file; reading afterwards raises :class:`SlideReadError`."""
        if self._closed:
            return
        super().close()
        self._cache.clear()
        self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": str(self._path.resolve()),  # a worker may have another cwd
            "tile_cache_bytes": self._tile_cache_bytes,
            "threads": self._threads,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"], tile_cache_bytes=state["tile_cache_bytes"], threads=state["threads"]
        )

    def __repr__(self) -> str:
        return (
            f"Slide({str(self._path)!r}, dimensions={self.dimensions}, levels={self.level_count})"
        )


class ArraySlide(BaseSlide):
    """The slide interface over images already in memory.

    Parameters
    ----------
    image_or_levels : numpy.ndarray or sequence of numpy.ndarray
        One image (a one-level slide) or the levels of a pyramid, level 0
        first, each no larger than the one before.  Each is ``(H, W, 3)``
        ``uint8`` RGB; ``(H, W)`` grey images are repeated into three channels
        and an RGBA image's alpha channel is dropped.  Arrays are used as they
        are (not copied): do not modify them while the slide is in use.
    mpp : float or tuple of float, optional
        Level-0 micrometres per pixel, one value or ``(x, y)``; ``None`` (the
        default) when unknown.
    name : str, optional
        The slide's identifier.

    Raises
    ------
    ParameterError
        For images that are not uint8 grey/RGB(A), levels that grow, or an
        invalid mpp.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((96, 160, 3), 200, np.uint8)
    >>> slide = ArraySlide([image, image[::4, ::4]], mpp=0.5, name="demo")
    >>> slide.level_dimensions, slide.level_downsamples, slide.mpp
    (((160, 96), (40, 24)), (1.0, 4.0), (0.5, 0.5))
    >>> slide.read_region((152, 92), 1, (4, 2))[:, :, 0]  # level pixel (38, 23)
    array([[200, 200, 255, 255],
           [255, 255, 255, 255]], dtype=uint8)
    """

    def __init__(
        self,
        image_or_levels: npt.ArrayLike | Sequence[npt.ArrayLike],
        mpp: float | tuple[float, float] | None = None,
        *,
        name: str = "array",
    ) -> None:
        if isinstance(image_or_levels, np.ndarray):
            raw: list[Any] = [image_or_levels]
        elif isinstance(image_or_levels, Sequence) and not isinstance(image_or_levels, str):
            raw = list(image_or_levels)
        else:
            raw = [np.asarray(image_or_levels)]
        if not raw:
            raise ParameterError("ArraySlide needs at least one image, got an empty sequence")
        levels: list[RGBImage] = []
        for k, item in enumerate(raw):
            array = np.asarray(item)
            try:
                rgb = to_rgb(array, f"ArraySlide level {k}")
            except ValueError as exc:
                raise ParameterError(str(exc)) from None
            h, w = rgb.shape[:2]
            if h == 0 or w == 0:
                raise ParameterError(f"ArraySlide level {k} is empty (shape {array.shape})")
            if levels:
                ph, pw = levels[-1].shape[:2]
                if h > ph or w > pw or (h, w) == (ph, pw):
                    raise ParameterError(
                        f"ArraySlide level {k} ({w}x{h}) must be smaller than level {k - 1} "
                        f"({pw}x{ph}): give levels finest first"
                    )
            levels.append(rgb)
        mpp_xy = self._parse_mpp(mpp)
        self._arrays = tuple(levels)
        dims = [(a.shape[1], a.shape[0]) for a in levels]
        properties = {"openslide.vendor": "array"}
        if mpp_xy is not None:
            properties["openslide.mpp-x"] = format(mpp_xy[0], ".17g")
            properties["openslide.mpp-y"] = format(mpp_xy[1], ".17g")
        super().__init__(
            name=name,
            level_dimensions=dims,
            mpp=mpp_xy,
            objective_power=None,
            properties=properties,
        )
        self._properties.update(
            level_properties(self._level_dimensions, self._level_downsamples, None)
        )

    @staticmethod
    def _parse_mpp(mpp: float | tuple[float, float] | None) -> tuple[float, float] | None:
        if mpp is None:
            return None
        values: Any = (mpp, mpp) if np.ndim(mpp) == 0 else mpp
        try:
            mx, my = (float(v) for v in values)
        except (TypeError, ValueError):
            raise ParameterError(f"mpp must be a number or (x, y), got {mpp!r}") from None
        if not all(math.isfinite(v) and v > 0 for v in (mx, my)):
            raise ParameterError(f"mpp must be positive and finite, got {mpp!r}")
        return (mx, my)

    def _tile_size(self, level: int) -> tuple[int, int]:
        return self._level_dimensions[level]

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        return self._arrays[level]
