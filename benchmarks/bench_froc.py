"""Benchmark: FROCEvaluator against a per-detection loop port of the official Camelyon16 script.

160 slides (the study's test set), 40% with tumor masks of many small lesions at the
evaluation level (level 5, 0.243 µm/px), ~1000 detections per slide.  The peer is a
straightforward Python port of the organisers' ``Evaluation_FROC.py``
(distance transform, ``binary_fill_holes``, ``measure.label``, ``regionprops`` per
label, a loop over detections, a loop over thresholds), written here and run on the
same data in the same process.  Both scores must agree exactly.

Detection probabilities are written with ``--decimals`` decimals (3 by default, as in
many submission CSVs): the official threshold loop is quadratic in the number of
distinct probabilities, and with full-precision probabilities the peer alone would
take hours at this size.

    python benchmarks/bench_froc.py            # 160 slides, 1024x1024 masks
    python benchmarks/bench_froc.py --quick    # 24 slides, 384x384 masks
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from scipy import ndimage as nd
from skimage import measure

from cervixwsi.geometry import Raster
from cervixwsi.metrics import FROCEvaluator

LEVEL = 5
MPP = 0.243


def make_cohort(
    rng: np.random.Generator, n_slides: int, size: int, n_dets: int, decimals: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tumor masks (level 5) with many small lesions, and detections near and far from them."""
    masks: dict[str, Any] = {}
    dets: dict[str, Any] = {}
    yy, xx = np.mgrid[-48:49, -48:49]
    for i in range(n_slides):
        if rng.random() < 0.4:
            m = np.zeros((size, size), bool)
            for _ in range(rng.integers(10, 60)):
                ry, rx = rng.integers(1, 48, 2)
                cy, cx = rng.integers(48, size - 48, 2)
                blob = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
                m[cy - 48 : cy + 49, cx - 48 : cx + 49] |= blob
            masks[f"tumor_{i:03d}"] = m
            near = np.argwhere(m)[rng.integers(0, int(m.sum()), n_dets // 5)]
            far = rng.integers(0, size, (n_dets - near.shape[0], 2))
            cells = np.vstack([near, far])
        else:
            masks[f"normal_{i:03d}"] = None
            cells = rng.integers(0, size, (n_dets, 2))
        offsets = rng.integers(0, 2**LEVEL, cells.shape)
        probs = np.round(rng.random(cells.shape[0]), decimals)
        key = list(masks)[-1]
        dets[key] = np.column_stack(
            [probs, cells[:, 1] * 32 + offsets[:, 1], cells[:, 0] * 32 + offsets[:, 0]]
        ).astype(np.float64)
    return masks, dets


# --- the peer: a per-detection loop port of Evaluation_FROC.py -----------------------------


def loop_froc(masks: dict[str, Any], dets: dict[str, Any]) -> float:
    fp_lists, tp_lists, n_tumors = [], [], []
    for case, mask in masks.items():
        d = dets[case]
        probs = [float(v) for v in d[:, 0]]
        xs = [int(v) for v in d[:, 1]]
        ys = [int(v) for v in d[:, 2]]
        fps: list[float] = []
        if mask is None:
            fps.extend(probs)
            tps = np.zeros(0, np.float32)
            n = 0
        else:
            pixelarray = np.where(mask, 255, 0).astype(np.uint8)
            distance = nd.distance_transform_edt(255 - pixelarray)
            binary = distance < 75 / (MPP * pow(2, LEVEL) * 2)
            em = measure.label(nd.binary_fill_holes(binary), connectivity=2)
            max_label = int(np.amax(em))
            props = measure.regionprops(em)
            itc = [
                i + 1
                for i in range(max_label)
                if props[i].axis_major_length < 275 / (MPP * pow(2, LEVEL))
            ]
            tps = np.zeros((max_label,), dtype=np.float32)
            for p, x, y in zip(probs, xs, ys, strict=True):
                hit = em[int(y / pow(2, LEVEL)), int(x / pow(2, LEVEL))]
                if hit == 0:
                    fps.append(p)
                elif hit not in itc and p > float(tps[hit - 1]):
                    tps[hit - 1] = p
            n = max_label - len(itc)
        fp_lists.append(fps)
        tp_lists.append(tps)
        n_tumors.append(n)
    all_fps = [p for sub in fp_lists for p in sub]
    all_tps = [float(p) for sub in tp_lists for p in sub]
    fp_arr = np.asarray(all_fps, np.float64)
    tp_arr = np.asarray(all_tps, np.float64).astype(np.float32)
    total_fps, total_tps = [], []
    for t in sorted(set(all_fps + all_tps))[1:]:
        total_fps.append((fp_arr >= t).sum())
        total_tps.append((tp_arr >= np.float32(t)).sum())
    total_fps.append(0)
    total_tps.append(0)
    fps_curve = np.asarray(total_fps) / float(len(fp_lists))
    sens = np.asarray(total_tps) / float(sum(n_tumors))
    return float(np.mean(np.interp([0.25, 0.5, 1, 2, 4, 8], fps_curve[::-1], sens[::-1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (24 slides, 384 px)")
    parser.add_argument("--slides", type=int, default=160)
    parser.add_argument("--size", type=int, default=1024, help="level-5 mask side, pixels")
    parser.add_argument("--detections", type=int, default=1000, help="per slide")
    parser.add_argument("--decimals", type=int, default=3, help="of the probabilities")
    parser.add_argument("--repeat", type=int, default=3, help="runs of FROCEvaluator (best)")
    args = parser.parse_args()
    if args.quick:
        args.slides, args.size = 24, 384
    rng = np.random.default_rng(0)
    masks, dets = make_cohort(rng, args.slides, args.size, args.detections, args.decimals)
    dims = (args.size * 32, args.size * 32)
    ground_truth = {
        k: None if m is None else Raster(m, 32, dims, mpp=MPP) for k, m in masks.items()
    }
    n_tumor = sum(m is not None for m in masks.values())
    print(
        f"{args.slides} slides ({n_tumor} with tumor), {args.size}x{args.size} level-5 masks, "
        f"{args.detections} detections per slide"
    )

    evaluator = FROCEvaluator(progress=False)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = evaluator.evaluate(ground_truth, dets)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    peer_score = loop_froc(masks, dets)
    peer = time.perf_counter() - t0

    print(
        f"FROCEvaluator (camelyon16): {best:8.3f} s   score {result.score:.6f}  "
        f"({result.n_lesions} lesions)"
    )
    print(f"per-detection loop port:    {peer:8.3f} s   score {peer_score:.6f}")
    print(f"speed-up: {peer / best:.1f}x")
    assert result.score == peer_score, (result.score, peer_score)


if __name__ == "__main__":
    main()
