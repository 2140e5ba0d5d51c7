"""The lower levels of a pyramid being written: halving, row buffers, spools, prefetch."""

from __future__ import annotations

import pathlib
import queue
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import ParameterError

__all__ = ["halve"]


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


def _encoder_tile(tile: npt.NDArray[np.uint8], tile_size: int) -> npt.NDArray[np.uint8]:
    """A full tile for tifffile (edge-replicated, which JPEG encodes without a dark seam)."""
    full = _pad_tile(tile, tile_size)
    return full if full.shape[2] == 3 else full[..., 0]
