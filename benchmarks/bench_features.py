"""Benchmark: the 28 ``cervix28`` features of a cohort of heatmaps.

Measures :class:`cervixwsi.features.HeatmapFeatureExtractor` (labels once per
threshold, areas and probability sums for all regions from one ``bincount``,
shape measures of the pixel squares only for the regions that need them)
against the plain loop a user would write: per threshold one ``regionprops``
call, then each feature computed separately from the region objects (the
shape measures of the union of the pixel squares from each region's
``inertia_tensor_eigvals``, ``image`` and a scipy convex hull of its pixels'
corners).  Both must give the same values.

The study's cohort has 800 slides; the heatmaps here (one pixel per 256-pixel
patch, about 240 x 320) have tissue over ~60% of the map, low noise, and for
half of them many small high-probability blobs.

Usage::

    python benchmarks/bench_features.py            # 800 heatmaps
    python benchmarks/bench_features.py --quick    # 80 heatmaps
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.measure import label, regionprops

from cervixwsi.features import HeatmapFeatureExtractor
from cervixwsi.geometry import Raster

STRIDE, MPP = 256, 0.25


def synthetic_heatmap(rng: np.random.Generator, tumor: bool, shape: tuple[int, int]) -> Raster:
    """Probabilities in [0, 1] over an elliptic tissue mask, NaN outside it."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    cy, cx = rows / 2 + rng.normal(0, 5), cols / 2 + rng.normal(0, 5)
    tissue = ((yy - cy) / (0.45 * rows)) ** 2 + ((xx - cx) / (0.42 * cols)) ** 2 <= 1
    p = rng.beta(1, 12, size=shape)  # sparse noise
    n_blobs = int(rng.integers(150, 400)) if tumor else int(rng.integers(0, 15))
    seeds = np.zeros(shape)
    seeds[rng.integers(0, rows, n_blobs), rng.integers(0, cols, n_blobs)] = 1.0
    blobs = ndimage.gaussian_filter(seeds, float(rng.uniform(0.8, 1.6)))
    if blobs.max() > 0:
        p = np.maximum(p, np.clip(blobs / np.quantile(blobs[blobs > 0], 0.8), 0, 1))
    p = np.where(tissue, p, np.nan).astype(np.float32)
    return Raster(p, STRIDE, (cols * STRIDE, rows * STRIDE), mpp=MPP)


def pixel_square_shape(region: Any) -> dict[str, float]:
    """The library's shape measures of one region, the plain way from its regionprops.

    The region as the union of its pixel squares: moment ellipse of the pixel
    centres plus 1/12 px² per axis, perimeter 4 edges per pixel less 2 per pair of
    4-adjacent pixels, convex hull of all the pixels' corners.
    """
    l1, l2 = (float(v) + 1 / 12 for v in region.inertia_tensor_eigvals)
    img = region.image
    area = float(region.area)
    pairs = int((img[1:] & img[:-1]).sum() + (img[:, 1:] & img[:, :-1]).sum())
    rows, cols = np.nonzero(img)
    corners = np.concatenate(
        [np.column_stack([rows + i, cols + j]) for i in (0, 1) for j in (0, 1)]
    )
    return {
        "extent": float(region.extent),
        "axis_major_length": 4 * math.sqrt(l1),
        "eccentricity": math.sqrt(max(0.0, 1 - l2 / l1)),
        "solidity": area / ConvexHull(corners).volume,
        "perimeter": 4 * area - 2 * pairs,
    }


def plain_loop(heatmap: Raster, thresholds: tuple[float, ...] = (0.5, 0.9)) -> list[float]:
    """The straightforward way: one regionprops per threshold, then feature by feature."""
    p = np.asarray(heatmap.array, dtype=np.float64)
    tissue = np.isfinite(p)
    pz = np.where(tissue, p, 0.0)
    values = pz[tissue]
    s = float(heatmap.pixel_size_um or heatmap.downsample)
    out = [
        float(values.max()),
        float(values.mean()),
        float(values.std()),
        float(np.percentile(values, 99)),
    ]
    for t in thresholds:
        props = regionprops(label(pz >= t, connectivity=2), intensity_image=pz)
        n = len(props)
        tumor_px = sum(r.area for r in props)
        if n:
            # The largest region; ties broken as the library documents.
            biggest = max(r.area for r in props)
            shapes = {r.label: pixel_square_shape(r) for r in props if r.area == biggest}
            largest = max(
                (r for r in props if r.area == biggest),
                key=lambda r: tuple(round(v, 9) for v in shapes[r.label].values()),
            )
            shape = shapes[largest.label]
        out += [
            float(n),
            tumor_px / values.size,
            tumor_px * s**2,
            largest.area * s**2 if n else 0.0,
            float(np.mean([r.area for r in props])) * s**2 if n else 0.0,
            shape["axis_major_length"] * s if n else 0.0,
            shape["eccentricity"] if n else 0.0,
            largest.extent if n else 0.0,
            shape["solidity"] if n else 0.0,
            shape["perimeter"] * s if n else 0.0,
            sum(r.intensity_mean * r.area for r in props) / tumor_px if n else 0.0,
            sum(r.intensity_mean * r.area for r in props) / values.size,
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="80 heatmaps instead of 800")
    parser.add_argument("-n", type=int, default=None, help="number of heatmaps")
    parser.add_argument("--shape", type=int, nargs=2, default=(240, 320), metavar=("ROWS", "COLS"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.n or (80 if args.quick else 800)

    rng = np.random.default_rng(args.seed)
    heatmaps = [synthetic_heatmap(rng, i % 2 == 1, tuple(args.shape)) for i in range(n)]
    extractor = HeatmapFeatureExtractor()

    t0 = time.perf_counter()
    table = extractor.extract_many(heatmaps, progress=False)
    ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    peer = np.array([plain_loop(h) for h in heatmaps])
    theirs = time.perf_counter() - t0

    np.testing.assert_allclose(table.values, peer, rtol=1e-9, atol=1e-9)
    n_regions = table["n_regions@0.5"]
    print(
        f"{n} heatmaps of {args.shape[0]}x{args.shape[1]} px, "
        f"{n_regions.mean():.0f} regions at t=0.5 on average (max {n_regions.max():.0f})"
    )
    print(f"HeatmapFeatureExtractor : {ours:7.2f} s  ({1e3 * ours / n:6.2f} ms/heatmap)")
    print(f"plain regionprops loop  : {theirs:7.2f} s  ({1e3 * theirs / n:6.2f} ms/heatmap)")
    print(f"speed-up                : {theirs / ours:7.2f}x  (same values: yes)")


if __name__ == "__main__":
    main()
