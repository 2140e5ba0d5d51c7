"""Writing a tiled pyramidal TIFF: :func:`write_pyramid`."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pathlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_path
from cervixwsi._pyramid._source import TileSource, _level0_tiles, _source_dimensions
from cervixwsi._pyramid._stream import _encoder_tile, _Level, _Prefetch, _Spool
from cervixwsi._validate import check_choice, check_int, check_real, is_real
from cervixwsi.errors import ParameterError

__all__ = ["write_pyramid"]

logger = logging.getLogger(__name__)

Compression = Literal["jpeg", "deflate", "lzw", "jpeg2000", "none"]

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
    check_int(tile_size, "write_pyramid.tile_size")
    if tile_size < 16 or tile_size % 16:
        raise ParameterError(
            "write_pyramid.tile_size must be a positive multiple of 16 (TIFF tiles), "
            f"got {tile_size!r}"
        )
    check_choice(compression, "write_pyramid.compression", tuple(_COMPRESSIONS))
    check_int(quality, "write_pyramid.quality", min=1, max=100)
    if mpp is None:
        return None
    pair = (mpp, mpp) if is_real(mpp) else mpp
    try:
        mx, my = pair  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ParameterError(
            f"write_pyramid.mpp must be a number or an (x, y) pair (micrometres per pixel), "
            f"got {mpp!r}"
        ) from None
    return (
        check_real(mx, "write_pyramid.mpp", min=0, min_open=True),
        check_real(my, "write_pyramid.mpp", min=0, min_open=True),
    )


def _level_dimensions(
    width: int, height: int, tile_size: int, levels: int | None
) -> list[tuple[int, int]]:
    dims = [(width, height)]
    if levels is None:
        while max(dims[-1]) > tile_size:
            w, h = dims[-1]
            dims.append(((w + 1) // 2, (h + 1) // 2))
        return dims
    check_int(levels, "write_pyramid.levels", min=1)
    while len(dims) < levels:
        w, h = dims[-1]
        if w == 1 and h == 1:
            raise ParameterError(
                f"levels={levels} is too many for a {width}x{height} slide: level "
                f"{len(dims) - 1} is already 1x1 (at most {len(dims)} levels)"
            )
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


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
    and renamed at the end, so a failing source never leaves a half slide.  The
    file gets the permissions the umask allows (0644 under umask 022), like any
    file a user writes.

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

    tile_shape = (tile_size, tile_size, channels)
    raw_bytes = sum(w * h for w, h in dims) * channels
    spools: list[_Spool] = []
    try:
        # Written under a temporary name beside ``out`` (created with the umask's
        # permissions, 0644 under umask 022) and renamed into place when complete.
        with atomic_path(out) as tmp:
            _create(tmp, out)
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


def _create(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Create the empty temporary file, or say why the pyramid cannot be written there."""
    try:
        tmp.open("xb").close()
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot write the pyramid into {out.parent}: {exc.strerror}", str(out)
        ) from exc


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
