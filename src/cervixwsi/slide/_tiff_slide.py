"""The native TIFF-family reader: :class:`TiffSlide` (Aperio SVS, generic tiled TIFF, OME-TIFF).

It needs no OpenSlide: :func:`~cervixwsi.slide._tiff.inspect_tiff` finds the pyramid
with tifffile when the file is opened, and a read decodes only the tiles a region
touches (with a small shared cache), reading their bytes with ``os.pread`` so that any
number of threads can read at once.  A slide pickles as its path and reopens in the
process that unpickles it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi.errors import SlideNotFoundError, SlideOpenError, SlideReadError
from cervixwsi.slide._base import RGBImage
from cervixwsi.slide._slide import DEFAULT_TILE_CACHE_BYTES, Slide, settle_mpp
from cervixwsi.slide._tiff import (
    AssociatedPage,
    TiffLevel,
    inspect_tiff,
    level_properties,
    to_rgb,
    ycbcr_to_rgb,
)
from cervixwsi.slide._tilecache import TileCache

__all__ = ["TiffSlide"]

logger = logging.getLogger(__name__)

# Aperio JPEG 2000 with YCbCr components, which the codec leaves unconverted.
_APERIO_JP2K_YCBCR = 33003


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
    LZW, ... anything tifffile decodes), keep recently decoded tiles in a
    bounded cache, and are safe from several threads at once.  A slide pickles
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
        self._io_lock = threading.Lock()  # tifffile's file handle and pread-less platforms
        self._cache = TileCache(self._tile_cache_bytes)
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
