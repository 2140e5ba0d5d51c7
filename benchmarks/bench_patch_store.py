"""Benchmark: PatchStore.build against a plain loop of OpenSlide ``read_region`` calls.

Makes a synthetic tumor slide (a JPEG pyramidal TIFF, with its tumor mask) with
:func:`cervixwsi.synthetic.make_slide`, then, in the same run:

* ``PatchStore.build``: tissue mask, the study's 1000 tumor + 500 normal patches
  (256 x 256, level 0) sampled and extracted into a zarr store with a thread pool;
* the peer: the same coordinates read one by one with
  ``openslide.OpenSlide(path).read_region(...)``, converted to RGB numpy arrays
  (kept in memory: no store is written), in the order the sampler returns them
  (what a plain loop does) and, for reference, in the store's raster order.

It prints patches per second for both and the ratio.  Both start with a cold
slide object; the file itself is in the page cache for both (the store is built
first, the loop second).

Run ``python benchmarks/bench_patch_store.py --quick`` for a smaller slide and
300 patches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi.slide import Slide
from cervixwsi.synthetic import SyntheticSlideSpec, make_slide
from cervixwsi.tiling import PatchSampler, PatchStore
from cervixwsi.tissue import TissueMasker


def openslide_loop(
    openslide: Any, path: Path, positions: list[tuple[int, int]]
) -> tuple[float, list[np.ndarray]]:
    """Seconds to read ``positions`` with a fresh OpenSlide, and the RGB patches."""
    t = time.perf_counter()
    reader = openslide.OpenSlide(str(path))
    patches = [
        np.asarray(reader.read_region((x, y), 0, (256, 256)).convert("RGB")) for x, y in positions
    ]
    reader.close()
    return time.perf_counter() - t, patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small slide and 300 patches")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import openslide
    import zarr  # noqa: F401  (imported before timing: a one-off cost of the first build)

    size = 8192 if args.quick else 16384
    n_tumor, n_normal = (200, 100) if args.quick else (1000, 500)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        syn = make_slide(
            SyntheticSlideSpec(width=size, height=size, tumor=True, seed=1), work / "slide.tif"
        )
        print(f"synthetic slide {size}x{size} made in {time.perf_counter() - t:.1f} s")
        sampler = PatchSampler(n_tumor=n_tumor, n_normal=n_normal, seed=0)

        t = time.perf_counter()
        store = PatchStore.build(
            work / "patches.zarr", [syn], sampler, workers=args.workers, progress=False
        )
        t_store = time.perf_counter() - t
        n = len(store)
        print(
            f"PatchStore.build ({args.workers} threads): {n} patches in {t_store:.2f} s, "
            f"{n / t_store:.0f} patches/s (mask, sampling and zarr writes included)"
        )

        # The plain approach loops over the coordinates as the sampler returns them
        # (random order); the store reads them in raster order.  Both loops are timed.
        with Slide(syn.path) as slide:
            planned = sampler.sample(
                slide,
                TissueMasker().mask(slide),
                syn.tumor_mask,
                seed=np.random.default_rng(np.random.SeedSequence(sampler.seed).spawn(1)[0]),
            )
        as_sampled = list(zip(planned.x.tolist(), planned.y.tolist(), strict=True))
        in_store = list(zip(store.x.tolist(), store.y.tolist(), strict=True))
        assert sorted(as_sampled) == sorted(in_store), "the store holds the sampled patches"
        t_loop, _ = openslide_loop(openslide, syn.path, as_sampled)
        print(
            f"OpenSlide loop, sampled order: {n} patches in {t_loop:.2f} s, "
            f"{n / t_loop:.0f} patches/s"
        )
        t_sorted, patches = openslide_loop(openslide, syn.path, in_store)
        print(
            f"OpenSlide loop, store order:   {n} patches in {t_sorted:.2f} s, "
            f"{n / t_sorted:.0f} patches/s"
        )
        sample = np.arange(0, n, max(1, n // 20))
        same = all(
            np.abs(store.read([i])[0].astype(int) - patches[i].astype(int)).max() <= 2
            for i in sample
        )
        print(f"pixels agree with OpenSlide (JPEG decoders, max diff <= 2): {same}")
        print(
            f"ratio PatchStore / OpenSlide loop: {t_loop / t_store:.2f}x "
            f"(against the loop in the store's order: {t_sorted / t_store:.2f}x)"
        )


if __name__ == "__main__":
    main()
