"""The native TIFF-family reader: :class:`TiffSlide` (Aperio SVS, generic tiled TIFF, OME-TIFF).

It needs no OpenSlide: :func:`~cervixwsi.slide._tiff.inspect_tiff` finds the pyramid
with tifffile when the file is opened, and a read decodes only the tiles a region
touches (with a small shared cache), reading their bytes with ``os.pread`` so that any
number of threads can read at once.  A slide pickles as its path and reopens in the
process that unpickles it.

The read path, fastest first:

* baseline JPEG tiles (nearly every scanner's) go straight to libjpeg-turbo
  (``imagecodecs.jpeg8_decode`` with the page's tables and colour spaces bound once),
  skipping tifffile's per-call work; other compressions go through tifffile;
* a tile in the region's bottom row of tiles is decoded only down to the last row the
  region uses (:func:`~cervixwsi.slide._tiff.jpeg_top_rows`), while reads show little
  reuse of tiles (random patches); patch grids, whose next row reuses those tiles,
  get whole tiles;
* decoded tiles are kept, read-only, in a least-recently-used cache bounded in bytes;
  a region inside one tile is one copy out of it, any other is assembled in place.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi.errors import SlideNotFoundError, SlideOpenError, SlideReadError
from cervixwsi.slide._base import RGBImage
from cervixwsi.slide._slide import (
    _PARALLEL_MIN_TILES,
    DEFAULT_TILE_CACHE_BYTES,
    Slide,
    settle_mpp,
)
from cervixwsi.slide._tiff import (
    AssociatedPage,
    TiffLevel,
    inspect_tiff,
    jpeg_top_rows,
    level_properties,
    to_rgb,
    ycbcr_to_rgb,
)
from cervixwsi.slide._tilecache import TileCache

__all__ = ["TiffSlide"]

logger = logging.getLogger(__name__)

# Aperio JPEG 2000 with YCbCr components, which the codec leaves unconverted.
_APERIO_JP2K_YCBCR = 33003
# Positioned reads that need no lock (every platform but Windows).
_HAVE_PREAD = hasattr(os, "pread")
#: Tile lookups of small reads over which a slide measures how often its cache serves.
_LOCALITY_WINDOW = 256


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

    def __init__(self, slide: TiffSlide, pages: Sequence[AssociatedPage]) -> None:
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


class TiffSlide(Slide):
    """A pyramidal TIFF slide (``backend="tiff"``): Aperio SVS, generic tiled TIFF, OME-TIFF.

    The native reader, and what ``Slide(path)`` picks for those formats; it needs no
    OpenSlide.  Vendor TIFFs with layouts of their own (Hamamatsu NDPI, Leica SCN,
    Ventana BIF, Philips TIFF) go to :class:`OpenSlideSlide` instead.

    The pyramid is what tifffile exposes as the file's main image series with
    its resolution levels (successive pages marked reduced-resolution, SubIFDs,
    OME levels, SVS pages), keeping those that are tiled and successively
    smaller with level 0's aspect ratio.  Other images (an SVS file's
    thumbnail, label and macro) are :attr:`associated_images`.  Level 0 must be
    tiled: a strip-based (untiled) TIFF, even a small one, is refused with
    :class:`~cervixwsi.errors.SlideOpenError` (convert it to a tiled pyramid).

    Reads decode only the tiles a region touches (JPEG, JPEG 2000, deflate,
    LZW, ... anything tifffile decodes), and of a JPEG tile only the rows down to
    the region's bottom edge when reads are scattered; they keep recently decoded
    tiles in a bounded cache, and are safe from several threads at once.  A slide pickles
    as its path and options and reopens when unpickled (process pools, Dask).

    The mpp is ``mpp=`` when given, else the Aperio ``MPP`` field, else the OME
    ``PhysicalSizeX``/``Y``, else the TIFF ``XResolution``/``YResolution`` with a
    ``ResolutionUnit`` of inch or centimetre, else derived from the objective power
    (Aperio ``AppMag``, OME ``NominalMagnification``) with a :class:`SlideWarning`
    (see :func:`~cervixwsi.slide._slide.settle_mpp`); ``None`` otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file.
    backend : {"tiff"}, optional
        Accepted for ``Slide(path, backend="tiff")``.
    mpp : float or (float, float), optional
        Level-0 µm per pixel, overriding or supplying the metadata's.
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
    ParameterError
        If ``tile_cache_bytes`` is not an integer >= 0, ``threads`` not one >= 1, or
        ``mpp`` not a positive number.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, tifffile
    >>> from cervixwsi.slide import Slide
    >>> image = np.random.default_rng(0).integers(0, 255, (500, 700, 3), dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "tiny.tif"
    ...     with tifffile.TiffWriter(path) as tif:
    ...         tif.write(image, tile=(128, 128), compression="zlib", subifds=1,
    ...                   resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    ...         tif.write(image[::2, ::2], tile=(128, 128), compression="zlib", subfiletype=1)
    ...     with Slide(path) as slide:
    ...         print(slide.level_dimensions, slide.mpp)
    ...         region = slide.read_region((600, 10), 0, (200, 100))
    ((700, 500), (350, 250)) (0.5, 0.5)
    >>> bool((region[:, :100] == image[10:110, 600:]).all()), int(region[:, 100:].min())
    (True, 255)
    """

    _backend_name = "tiff"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | None = None,
        mpp: float | tuple[float, float] | None = None,
        tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES,
        threads: int | None = None,
    ) -> None:
        import tifffile

        path_ = self._start(path, backend, mpp, tile_cache_bytes, threads)
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
        self._tiles_across = tuple(lv.tiles_across for lv in layout.levels)
        self._io_lock = threading.Lock()  # tifffile's file handle and pread-less platforms
        self._cache = TileCache(self._tile_cache_bytes)
        # Whether small reads decode only the rows they use of a JPEG tile: yes without
        # a cache; with one, while it serves few lookups (see _tile_top).
        self._track_locality = self._tile_cache_bytes > 0
        self._scattered = not self._track_locality
        self._lookups = self._reused = 0
        self._associated = _AssociatedImages(self, layout.associated)
        dims = tuple((lv.width, lv.height) for lv in layout.levels)
        properties = dict(layout.properties)
        super().__init__(
            name=_slide_name(path_),
            level_dimensions=dims,
            mpp=settle_mpp(path_, self._user_mpp, layout.mpp, layout.objective_power, properties),
            objective_power=layout.objective_power,
            properties=properties,
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
    def associated_images(self) -> Mapping[str, RGBImage]:
        """Non-pyramid images (``label``, ``macro``, ``thumbnail``), decoded on access."""
        return self._associated

    def _tile_size(self, level: int) -> tuple[int, int]:
        lv = self._levels[level]
        return lv.tile_width, lv.tile_height

    def _read_bytes(self, offset: int, count: int) -> bytes:
        if _HAVE_PREAD:
            return os.pread(self._fd, count, offset)
        with self._io_lock:  # pragma: no cover - platforms without pread (Windows)
            os.lseek(self._fd, offset, os.SEEK_SET)
            return os.read(self._fd, count)

    def _where(self, level: int, col: int, row: int) -> str:
        """The tile ``(col, row)`` of ``level``, in words, for an error message."""
        lv = self._levels[level]
        return (
            f"{self._path}: level {level} (page {lv.page_index}), tile "
            f"{row * lv.tiles_across + col} (column {col}, row {row}, at level pixel "
            f"x={col * lv.tile_width}, y={row * lv.tile_height})"
        )

    def _full_rows(self, level: int, row: int) -> int:
        """Rows of tile row ``row`` of ``level`` that lie inside the level."""
        lv = self._levels[level]
        return min(lv.tile_height, lv.height - row * lv.tile_height)

    def _decode(self, level: int, col: int, row: int, data: bytes, rows: int) -> RGBImage:
        """The pixels of tile ``(col, row)`` of ``level`` from its bytes, as RGB.

        Baseline JPEG goes straight to libjpeg-turbo (:attr:`TiffLevel.fast_decode`),
        only down to row ``rows`` when that is > 0 and saves work
        (:func:`~cervixwsi.slide._tiff.jpeg_top_rows`); anything else, and JPEG that this
        refuses, through tifffile's decoder.  The result is checked: at least ``rows``
        rows (all the tile's rows inside the level when ``rows`` is 0) and every column
        inside the level, grey or RGB(A).
        """
        lv = self._levels[level]
        arr: Any = None
        need_h = self._full_rows(level, row)
        if lv.fast_decode is not None:
            try:
                top = jpeg_top_rows(data, rows) if 0 < rows < need_h else None
                if top is None:
                    arr = lv.fast_decode(data)
                else:
                    arr = lv.fast_decode(top[0])[: top[1]]
                    need_h = rows
            except Exception:  # corrupt, or JPEG only tifffile's path decodes: try that
                logger.debug("%s: JPEG fast path failed", self._where(level, col, row))
                arr, need_h = None, self._full_rows(level, row)
        if arr is None:
            try:
                arr, _, _ = lv.decode(
                    data,
                    row * self._tiles_across[level] + col,
                    jpegtables=lv.jpegtables,
                    jpegheader=lv.jpegheader,
                )
            except Exception as exc:  # imagecodecs/zlib/tifffile errors of corrupt data
                raise SlideReadError(
                    f"{self._where(level, col, row)} cannot be decoded (compression "
                    f"{lv.compression}): {type(exc).__name__}: {exc}"
                ) from exc
            arr = np.asarray(arr)
            if arr.ndim == 4:
                arr = arr[0]
        shape = arr.shape
        need_w = min(lv.tile_width, lv.width - col * lv.tile_width)
        if len(shape) not in (2, 3) or shape[0] < need_h or shape[1] < need_w:
            raise SlideReadError(
                f"{self._where(level, col, row)} decoded to shape {shape}, expected at "
                f"least ({need_h}, {need_w})"
            )
        if len(shape) == 3 and shape[2] == 3 and arr.dtype == np.uint8:
            tile: RGBImage = arr  # already RGB: no copy
        else:
            try:
                tile = to_rgb(arr, self._where(level, col, row))
            except ValueError as exc:
                raise SlideReadError(str(exc)) from exc
        if lv.compression == _APERIO_JP2K_YCBCR and tile.shape[2] == 3:
            tile = ycbcr_to_rgb(tile)
        return tile

    def _load(self, level: int, col: int, row: int, rows: int) -> RGBImage | None:
        """Read and decode a tile (down to row ``rows`` if > 0) and cache it."""
        lv = self._levels[level]
        index = row * self._tiles_across[level] + col
        count = lv.bytecounts.item(index)
        if count == 0:  # a tile the scanner did not write: background
            return None
        try:
            data = self._read_bytes(lv.offsets.item(index), count)
        except OSError as exc:
            raise SlideReadError(f"{self._where(level, col, row)} cannot be read: {exc}") from exc
        if len(data) != count:
            raise SlideReadError(
                f"{self._where(level, col, row)}: read {len(data)} of its {count} bytes: "
                "the file was truncated"
            )
        tile = self._decode(level, col, row, data, rows)
        self._cache.put((level, col, row), tile)
        return tile

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        cached = self._cache.get((level, col, row))
        if cached is not None and cached.shape[0] >= self._full_rows(level, row):
            return cached
        return self._load(level, col, row, 0)

    def _tile_top(self, level: int, col: int, row: int, rows: int) -> RGBImage | None:
        """Tile ``(col, row)`` with at least its first ``rows`` rows (all when 0).

        While reads rarely come back to a tile (fewer than 1 in 4 of the last
        :data:`_LOCALITY_WINDOW` lookups found it in the cache, even in part: random
        patches), a JPEG tile is decoded only down to the rows the read uses.  Reads
        that do come back (a patch grid walking over the tiles, whose next row of
        patches needs the rest of each tile) decode whole tiles.  Either way the pixels
        are the same.
        """
        full = self._full_rows(level, row)
        wanted = full if rows <= 0 or rows > full else rows
        cached = self._cache.get((level, col, row))
        if self._track_locality:
            self._lookups += 1
            self._reused += cached is not None
            if self._lookups >= _LOCALITY_WINDOW:
                self._scattered = 4 * self._reused < self._lookups
                self._lookups = self._reused = 0
        if cached is not None and cached.shape[0] >= wanted:
            return cached
        return self._load(level, col, row, wanted if self._scattered and wanted < full else 0)

    def _region_tiles(
        self, level: int, cells: list[tuple[int, int]], last_rows: int
    ) -> Iterable[tuple[int, int, RGBImage | None]]:
        if self._threads > 1 and len(cells) >= _PARALLEL_MIN_TILES:
            return self._tiles(level, cells)  # a large read: whole tiles, in parallel
        last_row = cells[-1][1]  # cells come row by row
        # A generator: each tile is pasted (and may leave the cache) before the next.
        return (
            (col, row, self._tile_top(level, col, row, last_rows if row == last_row else 0))
            for col, row in cells
        )

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
