"""A small thread-safe LRU cache of decoded tiles, bounded in bytes.

Private helper of :mod:`cervixwsi.slide`: neighbouring reads (a patch grid walks
along a row of tiles; a 256-pixel patch on 240-pixel tiles touches up to four)
decode each tile once instead of up to four times.

Examples
--------
>>> import numpy as np
>>> cache = TileCache(max_bytes=100)
>>> cache.put((0, 0), np.zeros(60, np.uint8))
>>> cache.put((0, 1), np.zeros(60, np.uint8))  # evicts (0, 0): 120 > 100 bytes
>>> cache.get((0, 0)) is None, cache.get((0, 1)) is not None
(True, True)
>>> cache.nbytes
60
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["TileCache"]


def _held_bytes(value: npt.NDArray[Any]) -> int:
    """Bytes an array keeps alive: its own, or those of the array it is a view of."""
    base = value.base
    return int(base.nbytes if isinstance(base, np.ndarray) else value.nbytes)


class TileCache:
    """Least-recently-used mapping ``key -> array`` holding at most ``max_bytes``.

    Stored arrays are made read-only, so a caller cannot corrupt the cache by
    writing into a tile it got back.  All methods are safe to call from
    several threads at once.

    Parameters
    ----------
    max_bytes : int
        Upper bound of the summed ``nbytes`` of the cached arrays; ``0``
        disables caching.  An array larger than the bound is not cached.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, npt.NDArray[Any]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> npt.NDArray[Any] | None:
        """The cached array for ``key`` (marked most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: npt.NDArray[Any]) -> None:
        """Cache ``value`` under ``key``, evicting the least recently used arrays.

        A view counts as the whole array it keeps alive (the top rows of a larger
        decoded tile, the RGB channels of an RGBA one): the bound is on memory held.
        """
        size = _held_bytes(value)
        if size > self.max_bytes:
            return
        value.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= _held_bytes(old)
            self._items[key] = value
            self._nbytes += size
            while self._nbytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= _held_bytes(evicted)

    def clear(self) -> None:
        """Drop every cached array."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0
