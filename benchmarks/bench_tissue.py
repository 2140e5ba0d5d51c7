"""Benchmark: tissue detection on one low level against thresholding a full level-2 read.

The slide is a 100000 x 100000 synthetic slide at 0.25 µm/px (25 x 25 mm) with a
pyramid that halves at each level (downsamples 1, 2, 4, ..., 64, as
``cervixwsi.slide.write_pyramid`` writes them).  Its levels are made in memory from
the synthetic generator's layout (tissue, tumor nests and stain of
:func:`cervixwsi.synthetic.make_layout`), coloured as H&E with pixel noise; level 0
and 1 are never read by either method and are not materialised.  Reading a level
returns the array in memory, so neither timing includes decoding tiles (which
would cost the naive method far more: 1.9 GB of level 2 against 29 MB).

* ``TissueMasker()``: reads the level at 8 µm/px (downsample 32), HSV, Otsu,
  morphology in µm, small pieces and holes;
* naive: reads level 2 (1 µm/px) whole and thresholds it the same way (HSV, Otsu
  on saturation, 3 x 3 opening and closing in pixels, as the study's code did).

It prints the time of each, the ratio, and the masker's time at smaller slide
sizes (it grows with the slide's area at 8 µm/px, not with level 0).

Run ``python benchmarks/bench_tissue.py --quick`` for a 25000-pixel slide.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import cv2
import numpy as np

from cervixwsi.synthetic import SyntheticSlideSpec, make_layout
from cervixwsi.tissue import TissueMasker

MPP = 0.25


class LevelsSlide:
    """A slide whose levels are arrays made on first use from a synthetic layout."""

    def __init__(self, size: int, seed: int = 0) -> None:
        spec = SyntheticSlideSpec(width=size, height=size, seed=seed, mask_downsample=64)
        self._layout = make_layout(spec)
        self.dimensions = (size, size)
        self.mpp = (MPP, MPP)
        self.name = f"synthetic-{size}"
        n = 1 + int(math.log2(size / 256))
        self.level_downsamples = tuple(float(2**k) for k in range(n))
        self.level_dimensions = tuple(
            (math.ceil(size / d), math.ceil(size / d)) for d in self.level_downsamples
        )
        self.level_count = n
        self._cache: dict[int, np.ndarray] = {}

    def make_level(self, level: int) -> np.ndarray:
        """Colour the layout at one level (not timed)."""
        if level not in self._cache:
            w, h = self.level_dimensions[level]
            tissue = self._layout.tissue_mask.array.astype(np.uint8)
            tumor = self._layout.tumor_mask.array.astype(np.uint8)
            tissue = cv2.resize(tissue, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            tumor = cv2.resize(tumor, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            rgb = np.empty((h, w, 3), np.uint8)
            rng = np.random.default_rng(level)
            col_noise = rng.integers(-12, 13, (1, w, 3), dtype=np.int16)
            for r0 in range(0, h, 1024):  # in bands, to keep temporaries small
                band = np.empty((min(1024, h - r0), w, 3), np.int16)
                band[:] = (240, 238, 242)
                t, n = tissue[r0 : r0 + 1024], tumor[r0 : r0 + 1024]
                band[t] = (215, 140, 190)
                band[t & n] = (130, 80, 160)
                band += col_noise
                band += rng.integers(-12, 13, (len(band), 1, 1), dtype=np.int16)
                rgb[r0 : r0 + len(band)] = np.clip(band, 0, 255)
            self._cache[level] = rgb
        return self._cache[level]

    def read_level(self, level: int) -> np.ndarray:
        return self.make_level(level)

    def read_region(self, location: Any, level: int, size: Any) -> np.ndarray:
        raise NotImplementedError("the benchmark reads whole levels only")


def naive(slide: LevelsSlide, level: int = 2) -> np.ndarray:
    rgb = slide.read_level(level)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = np.ascontiguousarray(hsv[..., 1])
    _, mask = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask > 0


def best_of(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 25000-pixel slide")
    parser.add_argument("--size", type=int, default=None, help="slide side in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size or (25_000 if args.quick else 100_000)

    masker = TissueMasker()
    for small in sorted({size // 4, size // 2}):
        s = LevelsSlide(small)
        s.make_level(masker.choose_level(s))
        t, _ = best_of(lambda s=s: masker.mask(s), args.repeat)
        print(f"TissueMasker, {small:>6} px slide: {t * 1000:8.1f} ms")

    slide = LevelsSlide(size)
    level = masker.choose_level(slide)
    slide.make_level(level)
    t_ours, mask = best_of(lambda: masker.mask(slide), args.repeat)
    print(
        f"TissueMasker, {size:>6} px slide: {t_ours * 1000:8.1f} ms  (level {level}, "
        f"{slide.level_dimensions[level][0]} px square, {mask.tissue_fraction:.1%} tissue)"
    )
    slide.make_level(2)
    t_naive, naive_mask = best_of(lambda: naive(slide), max(1, args.repeat - 1))
    print(
        f"naive level-2 threshold:     {t_naive * 1000:8.1f} ms  (level 2, "
        f"{slide.level_dimensions[2][0]} px square, {naive_mask.mean():.1%} tissue)"
    )
    print(f"ratio naive / TissueMasker: {t_naive / t_ours:.1f}x")


if __name__ == "__main__":
    main()
