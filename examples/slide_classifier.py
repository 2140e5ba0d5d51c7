"""Heatmap features and the slide classifier, end to end on synthetic heatmaps.

Tumor slides get heatmaps with many small high-probability blobs, normal slides
sparse noise with a few false-positive pixels.  The script extracts the study's
28 features, cross-validates the random forest with the top-5 selection inside
each fold, fits it on all slides, prints the feature ranking, and saves and
reloads the classifier.

Usage::

    python examples/slide_classifier.py [--out DIR] [--slides 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from cervixwsi.features import FeatureTable, HeatmapFeatureExtractor
from cervixwsi.geometry import Raster
from cervixwsi.slide_classifier import SlideClassifier, cross_validate

STRIDE = 256  # level-0 pixels per heatmap pixel (one 256 x 256 patch)
MPP = 0.25  # level-0 µm per pixel (40x)


def synthetic_heatmap(rng: np.random.Generator, tumor: bool, shape: tuple[int, int]) -> Raster:
    """A tumor-probability map over an elliptic piece of tissue (NaN outside it)."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    tissue = ((yy - rows / 2) / (0.45 * rows)) ** 2 + ((xx - cols / 2) / (0.45 * cols)) ** 2 <= 1
    p = rng.beta(1, 15, size=shape)  # the CNN's background noise
    # Tumor: many small blobs of high probability; normal: a few small false positives.
    n = int(rng.integers(3, 60)) if tumor else int(rng.integers(0, 10))
    sigma = float(rng.uniform(0.8, 1.5)) if tumor else float(rng.uniform(0.4, 0.9))
    if n:
        seeds = np.zeros(shape)
        seeds[rng.integers(0, rows, n), rng.integers(0, cols, n)] = 1.0
        blobs = ndimage.gaussian_filter(seeds, sigma)
        p = np.maximum(p, np.clip(blobs / np.quantile(blobs[blobs > 0], 0.9), 0, 1))
    p = np.where(tissue, p, np.nan).astype(np.float32)
    return Raster(p, STRIDE, (cols * STRIDE, rows * STRIDE), mpp=MPP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for features.csv and the classifier, created if missing "
        "(default: a new temporary folder)",
    )
    parser.add_argument(
        "--slides",
        type=int,
        default=60,
        help="number of synthetic slides, half tumor and half normal (default: 60)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the heatmaps, the folds and the forest (default: 0)",
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi-classifier-"))
    out.mkdir(parents=True, exist_ok=True)

    # 1. Heatmaps (in a real project: cervixwsi.heatmap.Heatmap objects).
    rng = np.random.default_rng(args.seed)
    labels = np.arange(args.slides) % 2  # 1 = tumor
    heatmaps = [synthetic_heatmap(rng, bool(y), (60, 80)) for y in labels]
    slide_ids = [f"slide-{i:03d}" for i in range(args.slides)]

    # 2. The study's 28 features (thresholds 0.5 and 0.9), one row per slide.
    extractor = HeatmapFeatureExtractor(preset="cervix28", thresholds=(0.5, 0.9))
    table = extractor.extract_many(heatmaps, slide_ids=slide_ids, progress=False)
    table.to_csv(out / "features.csv")
    print(f"features: {table.shape[0]} slides x {table.shape[1]} features")
    print(
        "  e.g.",
        ", ".join(f"{n} [{u}]" for n, u in zip(table.names[4:7], table.units[4:7], strict=True)),
    )

    # 3. 5-fold cross-validation; the top-5 selection is redone inside every fold.
    classifier = SlideClassifier(n_estimators=200, top_k=5, random_state=args.seed)
    cv = cross_validate(table, labels, cv=5, classifier=classifier, seed=args.seed)
    aucs = ", ".join(f"{a:.3f}" for a in cv.fold_auc)
    print(f"cross-validated AUC: {cv.mean_auc:.3f} ± {cv.std_auc:.3f} (folds: {aucs})")

    # 4. The final classifier on all slides, and its ranking (the study's Table 2).
    classifier.fit(table, labels)
    print("top-5 features:")
    for rank, (name, importance) in enumerate(classifier.ranking_, start=1):
        if rank > 5:
            break
        print(f"  {rank}. {name:<36} {importance:.3f}")

    # 5. Save, reload (no unpickling), and score a new batch of slides.
    path = classifier.save(out / "slide_classifier.cwsi.zip", thresholds=extractor.thresholds)
    loaded = SlideClassifier.load(path)
    new_labels = np.array([0, 1, 0, 1])
    new = extractor.extract_many(
        [synthetic_heatmap(rng, bool(y), (60, 80)) for y in new_labels], progress=False
    )
    reloaded = FeatureTable.from_csv(out / "features.csv", preset="cervix28")
    assert np.array_equal(loaded.predict_proba(reloaded), classifier.predict_proba(table))
    print(f"saved to {path}")
    print(f"new slides: tumor probability {np.round(loaded.predict_proba(new)[:, 1], 2)}")
    print(f"            labels            {new_labels}")


if __name__ == "__main__":
    main()
