"""Benchmark: artifacts out of the tissue mask, against the synthetic ground truth.

Synthetic slides with all four artifacts (pen, fold, blur, dust) and clean slides,
several seeds, stain variation 0.1 (the default) and 0.35.  Each slide is masked
twice: ``TissueMasker(artifacts=ArtifactMasker(causes=()))`` (the plain mask: the
same thresholds, nothing removed) and ``TissueMasker(artifacts=ArtifactMasker())``.
Per cause it prints the fraction of the artifact's area in the plain mask that
stays in the mask (goals: < 5 % pen and dust, < 20 % folds and blur), and the
fraction of clean tissue (no artifact) of the plain mask that is lost (goal < 2 %
on clean slides), and of it the annotated tumor (the same goal: the pipeline looks for
it).  The real H&E slides of tests/data (whose tissue is all genuine)
give the tissue lost on real pixels.  Counts (slides, mask pixels) are printed.

The slides are 2 x 2 mm at 1 µm/px with ``--quick`` (their structures are sized in
µm; blur is then a 4 µm Gaussian) and 2 x 2 mm at 0.25 µm/px otherwise (a 40x
scan, where the synthetic blur is a 1 µm Gaussian).

``--figure PATH`` writes a picture of one slide with all four artifacts and the
per-cause outlines of what was removed (the heatmap overlay's colours).

Run ``python benchmarks/bench_artifacts.py --quick``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cervixwsi.slide import Slide
from cervixwsi.synthetic import SyntheticSlide, SyntheticSlideSpec, make_slide
from cervixwsi.tissue import CAUSES, ArtifactMasker, TissueMasker

PLAIN = TissueMasker(artifacts=ArtifactMasker(causes=()))
FULL = TissueMasker(artifacts=ArtifactMasker())
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "slides"
REAL = ["cmu_small_region.svs", "cmu_small_region_dicom", "openslide-python_small.svs"]


def measure(made: SyntheticSlide) -> dict[str, tuple[float, float]]:
    """Per cause ``(area kept, area in the plain mask)``; ``"clean"``, ``"tumor"``: (lost, total).

    ``"tumor"`` is the annotated tumor with no artifact drawn over it: an artifact
    masker that takes dense carcinoma for a fold or for dust removes what the
    pipeline is looking for.
    """
    with Slide(made.path) as slide:
        plain = PLAIN.mask(slide)
        mask = FULL.mask(slide)
    d = made.tissue_mask.downsample
    kept = np.asarray(plain.resample(d).array, bool)
    final = np.asarray(mask.resample(d).array, bool)
    out: dict[str, tuple[float, float]] = {}
    anywhere = np.zeros(kept.shape, bool)
    for name, truth in made.artifact_masks.items():
        on = truth.array & kept
        anywhere |= truth.array
        out[name] = (float((final & on).sum()), float(on.sum()))
    clean = kept & ~anywhere
    out["clean"] = (float((clean & ~final).sum()), float(clean.sum()))
    tumor = clean & np.asarray(made.tumor_mask.resample(d).array, bool)
    out["tumor"] = (float((tumor & ~final).sum()), float(tumor.sum()))
    return out


def figure(made: SyntheticSlide, path: Path) -> None:
    """The slide's thumbnail with the outlines of what was removed, per cause, and a legend."""
    import cv2

    from cervixwsi.heatmap._overlay import ARTIFACT_COLOURS, TISSUE_COLOUR

    with Slide(made.path) as slide:
        mask = FULL.mask(slide)
        thumb = np.ascontiguousarray(slide.get_thumbnail((1024, 1024))[..., :3])
    h, w = thumb.shape[:2]
    d = slide.dimensions[0] / w
    art = mask.artifacts
    assert art is not None
    labels = cv2.resize(
        np.asarray(art.resample(d).array, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )
    tissue = cv2.resize(
        np.asarray(mask.resample(d).array, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )
    out = thumb.copy()
    contours, _ = cv2.findContours(tissue, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, TISSUE_COLOUR, 1)
    for code, name in enumerate(CAUSES, start=1):
        found = (labels == code).astype(np.uint8)
        contours, _ = cv2.findContours(found, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, ARTIFACT_COLOURS[name], 2)
    y = 12
    cv2.rectangle(out, (4, 4), (190, 20 + 22 * (len(CAUSES) + 1)), (40, 40, 40), -1)
    for name, colour in [("tissue kept", TISSUE_COLOUR), *ARTIFACT_COLOURS.items()]:
        cv2.line(out, (12, y + 8), (40, y + 8), colour, 3)
        cv2.putText(out, name, (48, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
        y += 22
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 µm/px slides, 3 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting")
    parser.add_argument("--figure", type=Path, default=None, help="write a picture here")
    parser.add_argument(
        "--difficulty", type=float, default=0.5, help="synthetic difficulty (default 0.5)"
    )
    args = parser.parse_args()
    mpp, size = (1.0, 2048) if args.quick else (0.25, 8192)
    seeds = range(1, 1 + (args.seeds or 3))
    stains = (0.1, 0.35)
    sums: dict[str, list[float]] = {
        name: [0.0, 0.0] for name in (*CAUSES, "art-clean", "clean", "art-tumor", "tumor")
    }
    per_slide: dict[str, list[float]] = {name: [] for name in sums}
    n_slides = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for stain in stains:
                for artifacts in (tuple(sorted(CAUSES)), ()):
                    spec = SyntheticSlideSpec(
                        width=size,
                        height=size,
                        mpp=mpp,
                        seed=seed,
                        stain_variation=stain,
                        artifacts=artifacts,
                        tissue_fraction=0.5,
                        difficulty=args.difficulty,
                        mask_downsample=4 if args.quick else 16,
                    )
                    made = make_slide(spec, Path(tmp) / "s.tiff", annotations=False)
                    got = measure(made)
                    n_slides += 1
                    for name, (part, whole) in got.items():
                        key = f"art-{name}" if name in ("clean", "tumor") and artifacts else name
                        sums[key][0] += part
                        sums[key][1] += whole
                        if whole:
                            per_slide[key].append(part / whole)
                    if args.figure is not None and artifacts and seed == 1 and stain == 0.1:
                        figure(made, args.figure)
    elapsed = time.perf_counter() - start
    print(f"\n{n_slides} synthetic slides ({size}x{size} px at {mpp} µm/px, seeds {list(seeds)}, ")
    print(f"stain variation {stains}, half with all four artifacts, difficulty {args.difficulty}),")
    print(f"{elapsed:.0f} s\n")
    goals = {"pen": 5, "dust": 5, "fold": 20, "blur": 20, "art-clean": None, "clean": 2}
    goals |= {"art-tumor": None, "tumor": 2}
    titles = {
        "art-clean": "clean tissue lost, slides with artifacts",
        "clean": "tissue lost, clean slides",
        "art-tumor": "tumor lost, slides with artifacts",
        "tumor": "tumor lost, clean slides",
    }
    print(f"{'what':44s} {'pooled':>8s} {'worst slide':>12s} {'goal':>6s} {'mask px':>9s}")
    for name, (part, whole) in sums.items():
        title = titles.get(name, f"{name}: area kept in the mask")
        pooled = 100 * part / whole if whole else float("nan")
        worst = 100 * max(per_slide[name]) if per_slide[name] else float("nan")
        goal = goals[name]
        goal_text = f"< {goal} %" if goal is not None else ""
        print(f"{title:44s} {pooled:7.1f}% {worst:11.1f}% {goal_text:>6s} {int(whole):9d}")
    print("\nreal H&E (tissue lost: plain mask vs with the artifact masker)")
    for name in REAL:
        path = DATA / name
        if not path.exists():
            continue
        with Slide(path) as slide:
            plain = PLAIN.mask(slide)
            mask = FULL.mask(slide)
        lost = 1 - mask.area_px / plain.area_px if plain.area_px else 0.0
        print(f"  {name:34s} {100 * lost:5.2f} % of {int(plain.array.sum())} mask px")


if __name__ == "__main__":
    main()
