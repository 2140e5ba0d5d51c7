"""Streaming writer of tiled pyramidal TIFF files (``cervixwsi.slide.write_pyramid``).

The file layout is the one OpenSlide's *generic tiled TIFF* reader, tiffslide,
tifffile and :class:`cervixwsi.slide.Slide` all understand:

* page 0 is level 0, pages ``1 .. L-1`` are the lower levels, each marked
  reduced-resolution (``NewSubfileType = 1``), one after the other (not SubIFDs);
* every page is tiled with square ``tile_size`` tiles;
* level ``k + 1`` is level ``k`` halved (``ceil`` of each side) by 2×2 area
  averaging; along an odd edge the last pixel is the mean of the pixels that
  exist (one or two instead of four);
* ``XResolution``/``YResolution`` are pixels per centimetre
  (``ResolutionUnit = CENTIMETER``), so ``mpp = 10**4 / resolution`` for every
  level, level ``k`` having level 0's resolution divided by its downsample.

Memory stays bounded by a few rows of tiles, whatever the slide size: level-0
tiles are streamed from the source straight into the TIFF encoder while each
tile, halved, is put into a one-tile-row buffer of level 1; when that row is
complete its tiles are spooled (uncompressed) to an anonymous temporary file
beside the output and halved into level 2's row buffer, and so on down the
pyramid.  Once level 0 is written, each lower level is written from its spool.
The temporary disk space is about a third of the uncompressed level 0.  The
source and the lower levels run in one background thread, a bounded queue of
tiles ahead of tifffile's encoder threads, so that making tiles, averaging them
and JPEG encoding overlap.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import pathlib
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import ParameterError

__all__ = ["write_pyramid"]

logger = logging.getLogger(__name__)

Compression = Literal["jpeg", "deflate", "lzw", "jpeg2000", "none"]
TileSource = (
    npt.NDArray[Any] | Callable[[int, int, int, int], npt.NDArray[Any]] | Iterable[npt.NDArray[Any]]
)

_COMPRESSIONS: dict[str, str | None] = {
    "jpeg": "jpeg",
    "deflate": "adobe_deflate",
    "lzw": "lzw",
    "jpeg2000": "jpeg2000",
    "none": None,
}
# Above this many uncompressed bytes the file is written as BigTIFF (64-bit offsets);
# OpenSlide, tiffslide and tifffile all read BigTIFF.
_BIGTIFF_BYTES = 2**32 - 2**27
# Tiles handed to the encoder threads at a time (tifffile's default buffers 512 MB).
_ENCODE_BATCH_TILES = 16
# Level-0 tiles the source thread may run ahead of the encoder.
_PREFETCH_TILES = 32


def _tqdm(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="tile", leave=False)


def _check_parameters(
    tile_size: int, compression: str, quality: int, mpp: float | tuple[float, float] | None
) -> tuple[float, float] | None:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int | np.integer):
        raise ParameterError(f"tile_size must be an int, got {tile_size!r}")
    if tile_size < 16 or tile_size % 16:
        raise ParameterError(
            f"tile_size must be a positive multiple of 16 (TIFF tiles), got {tile_size}"
        )
    if compression not in _COMPRESSIONS:
        raise ParameterError(
            f"compression must be one of {sorted(_COMPRESSIONS)}, got {compression!r}"
        )
    if isinstance(quality, bool) or not isinstance(quality, int | np.integer):
        raise ParameterError(f"quality must be an int in 1..100, got {quality!r}")
    if not 1 <= quality <= 100:
        raise ParameterError(f"quality must be in 1..100, got {quality}")
    if mpp is None:
        return None
    pair = (mpp, mpp) if isinstance(mpp, int | float | np.floating | np.integer) else tuple(mpp)
    if len(pair) != 2:
        raise ParameterError(f"mpp must be a float or an (x, y) pair, got {mpp!r}")
    mx, my = (float(v) for v in pair)
    if not (math.isfinite(mx) and math.isfinite(my) and mx > 0 and my > 0):
        raise ParameterError(
            f"mpp must be positive and finite (micrometres per pixel), got {mpp!r}"
        )
    return (mx, my)


def _level_dimensions(
    width: int, height: int, tile_size: int, levels: int | None
) -> list[tuple[int, int]]:
    dims = [(width, height)]
    if levels is None:
        while max(dims[-1]) > tile_size:
            w, h = dims[-1]
            dims.append(((w + 1) // 2, (h + 1) // 2))
        return dims
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer) or levels < 1:
        raise ParameterError(f"levels must be a positive int or None, got {levels!r}")
    while len(dims) < levels:
        w, h = dims[-1]
        if w == 1 and h == 1:
            raise ParameterError(
                f"levels={levels} is too many for a {width}x{height} slide: level "
                f"{len(dims) - 1} is already 1x1 (at most {len(dims)} levels)"
            )
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


def halve(tile: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Halve an ``(h, w, C)`` uint8 image by 2×2 area averaging (``ceil`` of each side).

    Each output pixel is the mean of the 2×2 input block under it, rounded to
    the nearest integer; along an odd edge the block is clipped to the image
    and the mean is over the pixels that exist.

    Examples
    --------
    >>> import numpy as np
    >>> tile = np.array([[0, 2, 9], [4, 6, 9], [1, 1, 5]], np.uint8)[..., None]
    >>> halve(tile)[..., 0]
    array([[3, 9],
           [1, 5]], dtype=uint8)
    """
    import cv2

    h, w, c = tile.shape
    if h % 2 or w % 2:
        tile = np.pad(tile, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    # On an exact factor of 2, INTER_AREA is the 2x2 block mean; edge replication
    # makes the clipped blocks' mean the mean of the pixels that exist.
    out = cv2.resize(tile, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8).reshape((h + 1) // 2, (w + 1) // 2, c)


def _pad_tile(tile: npt.NDArray[np.uint8], tile_size: int) -> npt.NDArray[np.uint8]:
    """A full ``tile_size`` tile: an edge tile padded by replicating its last row/column."""
    h, w = tile.shape[:2]
    if h == tile_size and w == tile_size:
        return tile
    return np.pad(tile, ((0, tile_size - h), (0, tile_size - w), (0, 0)), mode="edge")


class _Spool:
    """Full, uncompressed tiles of one level in an anonymous temporary file, in order."""

    def __init__(self, directory: pathlib.Path, tile_shape: tuple[int, int, int]) -> None:
        # Closed explicitly by write_pyramid (its lifetime spans several pages).
        self._file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115
            dir=directory, prefix=".cervixwsi-"
        )
        self._shape = tile_shape
        self._count = 0

    def append(self, tile: npt.NDArray[np.uint8]) -> None:
        self._file.write(np.ascontiguousarray(tile).data)
        self._count += 1

    def tiles(self) -> Iterator[npt.NDArray[np.uint8]]:
        self._file.flush()
        self._file.seek(0)
        for _ in range(self._count):
            # A new array per tile: the encoder threads may still hold earlier ones.
            tile = np.empty(self._shape, np.uint8)
            if self._file.readinto(tile.data) != tile.nbytes:  # type: ignore[attr-defined]
                raise OSError("the temporary tile spool of write_pyramid was truncated")
            yield tile

    def close(self) -> None:
        self._file.close()


class _Prefetch:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Iterating the prefetcher yields the items; an exception raised by
    ``items`` is raised again in the consumer, in place of the next item.
    :meth:`finish` waits for ``items`` to end (raising its error, if any);
    :meth:`close` stops the thread early.
    """

    def __init__(self, items: Iterator[npt.NDArray[np.uint8]], depth: int) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="write_pyramid-source", daemon=True
        )
        self._thread.start()

    def _put(self, message: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator[npt.NDArray[np.uint8]]) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer thread
            self._put(("error", exc))
        else:
            self._put(("end", None))

    def _get(self) -> tuple[str, Any]:
        kind, payload = self._queue.get()
        if kind == "error":
            self._ended = True
            raise payload
        if kind == "end":
            self._ended = True
        return kind, payload

    def __iter__(self) -> Iterator[npt.NDArray[np.uint8]]:
        while not self._ended:
            kind, payload = self._get()
            if kind == "item":
                yield payload

    def finish(self) -> None:
        """Wait for the items to end; raise their error, or if more items are left."""
        if not self._ended:
            kind, _ = self._get()
            if kind == "item":  # pragma: no cover - the source raises first
                raise ParameterError("the source yields more level-0 tiles than the slide holds")
        self._thread.join()

    def close(self) -> None:
        """Stop the thread (when the writer failed part way) and wait for it."""
        self._stop.set()
        self._thread.join(timeout=10)


class _Level:
    """A lower pyramid level being built: one row of tiles, filled by halving its parent's."""

    def __init__(
        self,
        dimensions: tuple[int, int],
        tile_size: int,
        channels: int,
        spool: _Spool,
        child: _Level | None,
    ) -> None:
        self.width, self.height = dimensions
        self.tile_size = tile_size
        self.cols = -(-self.width // tile_size)
        self.rows = -(-self.height // tile_size)
        self.buffer = np.empty((tile_size, self.width, channels), np.uint8)
        self.spool = spool
        self.child = child

    def add_parent_tile(self, tx: int, ty: int, tile: npt.NDArray[np.uint8]) -> None:
        """Put the halved parent tile ``(tx, ty)`` (parent tile indices) into the row buffer."""
        half = halve(tile)
        y0 = (ty % 2) * (self.tile_size // 2)
        x0 = tx * (self.tile_size // 2)
        self.buffer[y0 : y0 + half.shape[0], x0 : x0 + half.shape[1]] = half

    def parent_row_done(self, ty: int, parent_rows: int) -> None:
        """The parent finished its tile row ``ty``: flush this level's row when complete."""
        if ty % 2 == 1 or ty == parent_rows - 1:
            self._flush(ty // 2)

    def _flush(self, row: int) -> None:
        ts = self.tile_size
        nrows = min(ts, self.height - row * ts)
        for tx in range(self.cols):
            tile = self.buffer[:nrows, tx * ts : min((tx + 1) * ts, self.width)]
            self.spool.append(_pad_tile(tile, ts))
            if self.child is not None:
                self.child.add_parent_tile(tx, row, tile)
        if self.child is not None:
            self.child.parent_row_done(row, self.rows)


def _as_tile(
    item: Any,
    tx: int,
    ty: int,
    origin: tuple[int, int],
    expected: tuple[int, int],
    channels: int | None,
    *,
    full_ok: bool,
) -> npt.NDArray[np.uint8]:
    """Validate one level-0 tile from the source; return it ``(h, w, C)`` and clipped."""
    try:
        tile = np.asarray(item)
    except Exception as exc:  # an object numpy cannot turn into an array
        raise ParameterError(
            f"the source's level-0 tile (col={tx}, row={ty}) is not an array: {exc}"
        ) from exc
    where = f"level-0 tile (col={tx}, row={ty}) at x={origin[0]}, y={origin[1]}"
    if tile.dtype != np.uint8:
        raise ParameterError(f"the source's {where} has dtype {tile.dtype}; only uint8 is written")
    if tile.ndim == 2:
        tile = tile[..., None]
    if tile.ndim != 3 or tile.shape[2] not in (1, 3):
        raise ParameterError(
            f"the source's {where} has shape {tile.shape}; expected (height, width, 3) RGB "
            "or (height, width) / (height, width, 1) grayscale"
        )
    if channels is not None and tile.shape[2] != channels:
        raise ParameterError(
            f"the source's {where} has {tile.shape[2]} channels, earlier tiles had {channels}"
        )
    h, w = expected
    if tile.shape[:2] != (h, w):
        full = full_ok and tile.shape[0] >= h and tile.shape[1] >= w
        if not full:
            raise ParameterError(
                f"the source's {where} has shape {tile.shape[:2]} (height, width); "
                f"expected ({h}, {w})" + (" or a full tile" if full_ok else "")
            )
        tile = tile[:h, :w]
    return tile


def _level0_tiles(
    source: TileSource,
    width: int,
    height: int,
    tile_size: int,
) -> Iterator[tuple[int, int, npt.NDArray[np.uint8]]]:
    """Level-0 tiles ``(tx, ty, tile)`` in row-major order, validated and clipped."""
    cols, rows = -(-width // tile_size), -(-height // tile_size)
    channels: int | None = None
    iterator: Iterator[Any] | None = None
    if isinstance(source, np.ndarray):
        array = source if source.ndim == 3 else source[..., None]
    elif callable(source):
        array = None
    else:
        iterator = iter(source)
        array = None
    for ty in range(rows):
        y, h = ty * tile_size, min(tile_size, height - ty * tile_size)
        for tx in range(cols):
            x, w = tx * tile_size, min(tile_size, width - tx * tile_size)
            if array is not None:
                item: Any = array[y : y + h, x : x + w]
            elif iterator is not None:
                try:
                    item = next(iterator)
                except StopIteration:
                    raise ParameterError(
                        f"the source iterator ended after {ty * cols + tx} tiles; a "
                        f"{width}x{height} slide in {tile_size}-pixel tiles needs {rows * cols} "
                        f"(missing tile col={tx}, row={ty})"
                    ) from None
            else:
                item = source(x, y, w, h)  # type: ignore[operator]
            tile = _as_tile(item, tx, ty, (x, y), (h, w), channels, full_ok=iterator is not None)
            channels = tile.shape[2]
            yield tx, ty, tile
    if iterator is not None:
        extra = next(iterator, None)
        if extra is not None:
            raise ParameterError(
                f"the source iterator yields more than the {rows * cols} tiles of a "
                f"{width}x{height} slide in {tile_size}-pixel tiles: are `dimensions` right?"
            )


def _source_dimensions(source: TileSource, dimensions: tuple[int, int] | None) -> tuple[int, int]:
    """Level-0 ``(width, height)`` of the source, validated."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3)):
            raise ParameterError(
                f"an array source must be (height, width, 3) RGB or (height, width) grayscale, "
                f"got shape {source.shape}"
            )
        if source.dtype not in (np.uint8, np.bool_):
            raise ParameterError(
                f"an array source must be uint8 (or a bool mask), got dtype {source.dtype}"
            )
        height, width = source.shape[:2]
        if dimensions is not None and tuple(dimensions) != (width, height):
            raise ParameterError(
                f"dimensions={dimensions!r} do not match the array's (width, height) "
                f"({width}, {height})"
            )
        if width < 1 or height < 1:
            raise ParameterError(f"an array source must not be empty, got shape {source.shape}")
        return int(width), int(height)
    if dimensions is None:
        raise ParameterError(
            "dimensions=(width, height) of level 0 is required when the source is a callable "
            "or an iterable of tiles"
        )
    try:
        width, height = (int(v) for v in dimensions)
    except (TypeError, ValueError):
        raise ParameterError(f"dimensions must be (width, height), got {dimensions!r}") from None
    if width < 1 or height < 1:
        raise ParameterError(f"dimensions must be positive, got {dimensions!r}")
    if not callable(source) and not isinstance(source, Iterable):
        raise ParameterError(
            "source must be a uint8 array, a callable source(x, y, width, height) or an "
            f"iterable of level-0 tiles, got {type(source).__name__}"
        )
    return width, height


def write_pyramid(
    path: str | os.PathLike[str],
    source: TileSource,
    *,
    mpp: float | tuple[float, float] | None,
    dimensions: tuple[int, int] | None = None,
    tile_size: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    levels: int | None = None,
    description: str | None = None,
    progress: bool = False,
) -> pathlib.Path:
    """Write a tiled pyramidal TIFF that OpenSlide, tiffslide and ``Slide`` open alike.

    The image is streamed: level 0 is read from ``source`` one tile at a time
    and lower levels are built tile by tile, so memory holds a few rows of
    tiles, never a whole level (a 40000×40000 RGB slide writes in about the
    memory of a 20000×20000 one).  The file appears at ``path`` only when it
    is complete: it is written under a temporary name in the same directory
    and renamed at the end, so a failing source never leaves a half slide.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.tif``/``.tiff`` file to write (replaced if it exists).
    source : numpy.ndarray, callable or iterable
        Level 0, as one of

        * a uint8 array ``(height, width, 3)`` (RGB) or ``(height, width)`` /
          ``(height, width, 1)`` (grayscale: masks, 8-bit heatmaps), or a
          bool mask (written as 0 / 255); a :class:`numpy.memmap` is read
          tile by tile;
        * a callable ``source(x, y, width, height) -> array`` returning the
          level-0 tile at ``(x, y)``; edge tiles are asked for clipped to the
          slide, so ``width``/``height`` may be less than ``tile_size``;
        * an iterable of level-0 tiles in row-major order (left to right, then
          top to bottom), each ``tile_size`` square; edge tiles may be clipped
          to the slide or full size (the part outside the slide is dropped).

        Every tile must have the same number of channels (1 or 3).  Callables
        and iterators are run in a background thread (one tile at a time, in
        order), so that making tiles overlaps with encoding them.
    mpp : float or (float, float) or None
        Level-0 micrometres per pixel, ``(x, y)`` or one value for both;
        ``None`` writes no resolution.
    dimensions : (int, int), optional
        Level-0 ``(width, height)``; required for callable and iterable sources
        (checked against the array for an array source).
    tile_size : int
        Side of the square TIFF tiles, a multiple of 16 (256 is OpenSlide's
        and Aperio's usual size).
    compression : {"jpeg", "deflate", "lzw", "jpeg2000", "none"}
        Tile compression.  JPEG stores RGB as YCbCr with 4:2:0 chroma
        subsampling, grayscale as one-channel JPEG.  ``"deflate"`` and
        ``"lzw"`` are lossless (with the horizontal predictor), for masks and
        label images.  OpenSlide cannot read ``"jpeg2000"`` tiles in a generic
        TIFF (tifffile and tiffslide can, through imagecodecs).
    quality : int
        JPEG quality in 1..100 (also passed as the level of the JPEG 2000
        encoder); ignored by the lossless compressions.
    levels : int, optional
        Number of levels (level 0 included).  ``None`` halves until a level
        fits in one tile.
    description : str, optional
        Extra text appended to the ImageDescription of level 0.
    progress : bool
        Show a tqdm progress bar over the tiles of all levels.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ParameterError
        For a bad ``tile_size``, ``quality``, ``compression``, ``levels`` or
        ``mpp``; a source that is not uint8 with 1 or 3 channels; a tile of the
        wrong shape (the message names its tile column and row); an iterator
        with too few or too many tiles.
    OSError
        When ``path``'s directory does not exist or is not writable.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, tifffile
    >>> image = np.zeros((600, 1000, 3), np.uint8)
    >>> image[:, 500:] = (200, 40, 120)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_pyramid(pathlib.Path(tmp) / "s.tif", image, mpp=0.25)
    ...     with tifffile.TiffFile(path) as tif:
    ...         [page.shape for page in tif.pages]
    [(600, 1000, 3), (300, 500, 3), (150, 250, 3)]

    A callable source of any size, one tile at a time:

    >>> def tile(x, y, width, height):
    ...     return np.full((height, width), (x // 256 + y // 256) % 2 * 255, np.uint8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_pyramid(
    ...         pathlib.Path(tmp) / "m.tif", tile, mpp=None, dimensions=(2000, 1000),
    ...         compression="deflate")
    ...     with tifffile.TiffFile(path) as tif:
    ...         len(tif.pages), tif.pages[1].asarray()[0, 126:130]
    (4, array([  0,   0, 255, 255], dtype=uint8))
    """
    import tifffile

    if isinstance(source, np.ndarray) and source.dtype == np.bool_:
        source = source.view(np.uint8) * np.uint8(255)  # a mask: 0 / 255
    mpp_xy = _check_parameters(tile_size, compression, quality, mpp)
    tile_size = int(tile_size)
    width, height = _source_dimensions(source, dimensions)
    dims = _level_dimensions(width, height, tile_size, levels)
    out = pathlib.Path(path)
    directory = out.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            2, f"cannot write the pyramid: directory {directory} does not exist", str(out)
        )

    tiles0 = _level0_tiles(source, width, height, tile_size)
    # Peek at the first tile: callables and iterables say their channel count only there.
    first = next(tiles0)
    channels = first[2].shape[2]

    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot write the pyramid into {directory}: {exc.strerror}", str(out)
        ) from exc
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    tile_shape = (tile_size, tile_size, channels)
    raw_bytes = sum(w * h for w, h in dims) * channels
    spools: list[_Spool] = []
    try:
        spools = [_Spool(directory, tile_shape) for _ in dims[1:]]
        lower: list[_Level] = []
        child: _Level | None = None
        for dim, spool in zip(reversed(dims[1:]), reversed(spools), strict=True):
            child = _Level(dim, tile_size, channels, spool, child)
            lower.insert(0, child)
        level1 = lower[0] if lower else None
        n_tiles = [(-(-w // tile_size)) * (-(-h // tile_size)) for w, h in dims]
        rows0 = -(-height // tile_size)
        cols0 = -(-width // tile_size)
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(_tqdm(sum(n_tiles), progress, "write_pyramid"))

            def produce() -> Iterator[npt.NDArray[np.uint8]]:
                # Runs in the prefetch thread, overlapping the source and the lower
                # levels with the encoder threads' JPEG work.
                for tx, ty, tile in itertools.chain([first], tiles0):
                    if level1 is not None:
                        level1.add_parent_tile(tx, ty, tile)
                        if tx == cols0 - 1:
                            level1.parent_row_done(ty, rows0)
                    yield _encoder_tile(tile, tile_size)

            prefetch = _Prefetch(produce(), _PREFETCH_TILES)
            stack.callback(prefetch.close)

            def level0() -> Iterator[npt.NDArray[np.uint8]]:
                for tile in prefetch:
                    bar.update()
                    yield tile

            def spooled(spool: _Spool) -> Iterator[npt.NDArray[np.uint8]]:
                for tile in spool.tiles():
                    bar.update()
                    yield tile if channels == 3 else tile[..., 0]

            common = _page_options(compression, quality, channels, tile_size)
            with tifffile.TiffWriter(tmp, bigtiff=raw_bytes > _BIGTIFF_BYTES) as writer:
                for k, (w, h) in enumerate(dims):
                    data = level0() if k == 0 else spooled(spools[k - 1])
                    writer.write(
                        data,
                        shape=(h, w, 3) if channels == 3 else (h, w),
                        dtype=np.uint8,
                        subfiletype=0 if k == 0 else 1,
                        resolution=_resolution(mpp_xy, width / w, height / h),
                        resolutionunit="CENTIMETER" if mpp_xy is not None else "NONE",
                        description=_description(k, dims, mpp_xy, description),
                        **common,
                    )
                    if k == 0:
                        # The source ended (an iterator with more tiles than the slide
                        # holds raises here) and the lower levels are all spooled.
                        prefetch.finish()
                    else:
                        spools[k - 1].close()
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for spool in spools:
            spool.close()
    logger.info(
        "wrote %s: %d levels, level 0 %dx%d, %s, %d bytes",
        out,
        len(dims),
        width,
        height,
        compression,
        out.stat().st_size,
    )
    return out


def _encoder_tile(tile: npt.NDArray[np.uint8], tile_size: int) -> npt.NDArray[np.uint8]:
    """A full tile for tifffile (edge-replicated, which JPEG encodes without a dark seam)."""
    full = _pad_tile(tile, tile_size)
    return full if full.shape[2] == 3 else full[..., 0]


def _page_options(compression: str, quality: int, channels: int, tile_size: int) -> dict[str, Any]:
    tag = _COMPRESSIONS[compression]
    options: dict[str, Any] = {
        "tile": (tile_size, tile_size),
        "photometric": "rgb" if channels == 3 else "minisblack",
        "compression": tag,
        "metadata": None,
        "software": "cervixwsi",
        "maxworkers": min(4, os.cpu_count() or 1),
        "buffersize": _ENCODE_BATCH_TILES * tile_size * tile_size * channels,
    }
    if compression in ("jpeg", "jpeg2000"):
        options["compressionargs"] = {"level": quality}
    elif compression in ("deflate", "lzw"):
        options["predictor"] = True
    return options


def _resolution(
    mpp: tuple[float, float] | None, downsample_x: float, downsample_y: float
) -> tuple[float, float] | None:
    """Pixels per centimetre of a level with these downsamples."""
    if mpp is None:
        return None
    return (1e4 / (mpp[0] * downsample_x), 1e4 / (mpp[1] * downsample_y))


def _description(
    level: int,
    dims: list[tuple[int, int]],
    mpp: tuple[float, float] | None,
    extra: str | None,
) -> str:
    w, h = dims[level]
    text = f"cervixwsi pyramid level {level} of {len(dims)}: {w}x{h}"
    if mpp is not None:
        text += f"; level-0 mpp {mpp[0]:.6g}x{mpp[1]:.6g}"
    if level == 0 and extra:
        text += "\n" + extra
    return text
