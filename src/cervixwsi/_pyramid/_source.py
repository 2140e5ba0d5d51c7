"""Level-0 tiles of :func:`~cervixwsi.slide.write_pyramid`'s source, validated and clipped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_positive_int
from cervixwsi.errors import ParameterError

__all__ = ["TileSource"]

TileSource = (
    npt.NDArray[Any] | Callable[[int, int, int, int], npt.NDArray[Any]] | Iterable[npt.NDArray[Any]]
)


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
        w, h = dimensions
    except (TypeError, ValueError):
        raise ParameterError(
            f"write_pyramid.dimensions must be (width, height), got {dimensions!r}"
        ) from None
    width = check_positive_int(w, "write_pyramid.dimensions[0]")
    height = check_positive_int(h, "write_pyramid.dimensions[1]")
    if not callable(source) and not isinstance(source, Iterable):
        raise ParameterError(
            "source must be a uint8 array, a callable source(x, y, width, height) or an "
            f"iterable of level-0 tiles, got {type(source).__name__}"
        )
    return width, height
