"""Filling a planned :class:`~cervixwsi.tiling.PatchStore`: its pixels, chunk by chunk.

The plan (every patch position) is written first; :func:`fill_patches` then reads the
patches of every chunk not yet flagged done on a pool of threads, writes each chunk and
flags it done, so an interrupted fill resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._store import mark_complete
from cervixwsi.tiling._coords import IntArray, PatchCoords, read_patch
from cervixwsi.tiling._plan import Source

__all__ = ["fill_patches"]


def fill_patches(
    group: Any,
    sources: Sequence[Source],
    *,
    x: IntArray,
    y: IntArray,
    slide_index: npt.NDArray[np.int32],
    levels: Sequence[int],
    downsamples: Sequence[float],
    complete: bool,
    workers: int,
    progress: bool,
) -> npt.NDArray[np.bool_]:
    """Extract the planned patches of ``group`` (opened for writing) not yet done.

    ``x``, ``y`` and ``slide_index`` are the planned patches' level-0 corners and slides,
    ``levels`` and ``downsamples`` each slide's level and level-0 pixels per patch pixel.
    Each chunk's ``done`` flag is written at least once a second and at the end (also
    on an error or an interruption); the store is marked complete once every chunk is
    done (``complete``: whether it already is).  Returns the chunks' ``done`` flags.
    """
    from tqdm.auto import tqdm

    patches, done_arr = group["patches"], group["done"]
    done = np.asarray(done_arr[:], dtype=bool)
    n = len(x)
    size = int(patches.shape[1])
    chunk = int(patches.chunks[0])
    todo = np.flatnonzero(~done)
    if not len(todo):
        if not complete:
            mark_complete(group)
        return done

    def extract(k: int) -> int:
        lo, hi = k * chunk, min(n, (k + 1) * chunk)
        batch = np.empty((hi - lo, size, size, 3), np.uint8)
        for j, i in enumerate(range(lo, hi)):
            s = int(slide_index[i])
            coords = PatchCoords(
                x[i : i + 1],
                y[i : i + 1],
                level=levels[s],
                size=size,
                downsample=downsamples[s],
                slide_dimensions=sources[s].slide.dimensions,
            )
            batch[j] = read_patch(sources[s].slide, coords, 0)
        patches[lo:hi] = batch
        return k

    remaining = sum(min(n, (int(k) + 1) * chunk) - int(k) * chunk for k in todo)
    bar = tqdm(total=n, initial=n - remaining, unit="patch", disable=not progress)
    last_flush = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    futures: dict[concurrent.futures.Future[int], int] = {}
    try:
        futures.update({pool.submit(extract, int(k)): int(k) for k in todo})
        for future in concurrent.futures.as_completed(futures):
            k = future.result()
            done[k] = True
            bar.update(min(n, (k + 1) * chunk) - k * chunk)
            if time.monotonic() - last_flush > 1.0:
                done_arr[:] = done
                last_flush = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future, k in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                done[k] = True
        done_arr[:] = done
        if done.all():
            mark_complete(group)
        bar.close()
    return done
