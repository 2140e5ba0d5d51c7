"""The study's whole pipeline on a synthetic cohort, from slides to ROC AUC and FROC.

1. a cohort of synthetic H&E slides (pyramidal TIFFs) with ASAP tumor annotations,
   split train / validation / test in the study's proportions;
2. tissue detection (HSV + Otsu + morphology on a low-resolution level);
3. training patches from the annotated tumor and normal regions of the training
   slides (the study's 1000 tumor + 500 normal per tumor slide, 500 per normal
   slide, scaled down), written to a zarr patch store;
4. a patch CNN trained with the study's recipe (random crops, flips, rotations;
   Adam, exponential decay, x0.1 on plateau);
5. a tumor-probability heatmap of every slide, one pixel per patch;
6. the 28 heatmap features at thresholds 0.5 and 0.9, and a random forest on the
   top 5 of them, trained on the training and validation slides;
7. slide-level ROC AUC on the test slides (and cross-validated over the cohort),
   lesion-level FROC (Camelyon16 protocol) on the test slides, and figures.

To run on two CPU cores in a few minutes the slides are small (4 x 4 mm) and
scanned at 1 µm/px, and the patches are 64 x 64 pixels: the same 64 µm field of
view as the study's 256 x 256 patches at 0.25 µm/px.  The network is the small
CNN; pass ``--arch resnet50 --input-size 224`` with larger slides to run the
study's networks (hours on a CPU).  Everything is written under ``--out`` and a
second run with the same ``--out`` reuses the slides, the patch store and the
heatmaps already there.

    python examples/end_to_end.py --out e2e-out
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cv2
import matplotlib.pyplot as plt
import numpy as np

from cervixwsi.annotations import rasterize, read_asap_xml
from cervixwsi.features import HeatmapFeatureExtractor
from cervixwsi.geometry import Raster
from cervixwsi.heatmap import Heatmap, HeatmapGenerator, PatchPredictor
from cervixwsi.metrics import FROCEvaluator, auc_ci, detect_lesions, roc_curve
from cervixwsi.models import PatchClassifier  # TensorFlow loads when a model is built
from cervixwsi.plotting import plot_froc, plot_roc
from cervixwsi.slide import Slide
from cervixwsi.slide_classifier import SlideClassifier, cross_validate
from cervixwsi.synthetic import Cohort, CohortRow, make_cohort
from cervixwsi.tiling import PatchSampler, PatchStore
from cervixwsi.tissue import TissueMask, TissueMasker

MASKER = TissueMasker()  # the study's ROI detection at its defaults (8 µm/px)


def step(text: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f} s] {text}")


def tumor_mask(row: CohortRow, slide: Slide, downsample: int = 16) -> Raster | None:
    """The slide's annotated tumor as a boolean raster (None for a normal slide)."""
    if row.label != "tumor":
        return None
    w, h = slide.dimensions
    shape = (-(-h // downsample), -(-w // downsample))
    return rasterize(read_asap_xml(row.annotation_path), shape, downsample, slide_dimensions=(w, h))


def build_patch_store(rows: list[CohortRow], out: Path, patch: int, scale: float) -> PatchStore:
    """Training patches from the annotated regions, as the study sampled them (scaled)."""
    masks, tumors = [], []
    for row in rows:
        with Slide(row.path) as slide:
            masks.append(MASKER.mask(slide))
            tumors.append(tumor_mask(row, slide))
    sampler = PatchSampler(
        n_tumor=round(1000 * scale),
        n_normal=round(500 * scale),
        n_normal_normal_slide=round(500 * scale),
        patch_size=patch,
        seed=0,
    )
    return PatchStore.build(
        out,
        [row.path for row in rows],
        sampler,
        tumor_masks=tumors,
        tissue_masks=masks,
        workers=2,
        progress=False,
    )


def train_cnn(
    train: PatchStore, validation: PatchStore, args: argparse.Namespace
) -> PatchClassifier:
    path = args.out / "patch_cnn.keras"
    if path.exists():
        return PatchClassifier.load(path)
    clf = PatchClassifier(
        args.arch,
        input_size=args.input_size,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=0,
        progress=False,
    )
    clf.fit(train, validation, checkpoint_dir=args.out / "checkpoints")
    h = clf.history_
    best = int(np.nanargmin(h.val_loss))
    print(
        f"           patch CNN: epoch {h.epoch[best]} kept, validation accuracy "
        f"{h.val_accuracy[best]:.3f} on {len(validation)} patches"
    )
    clf.save(path)
    return clf


def heatmaps(
    rows: list[CohortRow], predictor: PatchPredictor, args: argparse.Namespace
) -> list[Heatmap]:
    """One heatmap per slide, resumable (``heatmaps/<id>.zarr``)."""
    generator = HeatmapGenerator(
        predictor,
        patch_size=args.patch,
        masker=MASKER,
        batch_size=32,
        workers=2,
        progress=False,
    )
    (args.out / "heatmaps").mkdir(exist_ok=True)
    maps = []
    for row in rows:
        store = args.out / "heatmaps" / f"{row.slide_id}.zarr"
        maps.append(generator.generate(row.path, out=store))
    return maps


def save_overlay(row: CohortRow, heat: Heatmap, out: Path) -> Path:
    """The study's Fig. 5: the heatmap over the slide with the annotated tumor outlined."""
    with Slide(row.path) as slide:
        picture = heat.overlay(
            slide, max_size=1024, ground_truth=read_asap_xml(row.annotation_path)
        )
    path = out / f"overlay_{row.slide_id}.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cervixwsi-e2e"), help="output folder")
    parser.add_argument("--tumor", type=int, default=10, help="tumor slides (the study: 347)")
    parser.add_argument("--normal", type=int, default=10, help="normal slides (the study: 453)")
    parser.add_argument("--size", type=int, default=4096, help="slide side, level-0 pixels")
    parser.add_argument("--mpp", type=float, default=1.0, help="level-0 µm/px (study: 0.25)")
    parser.add_argument("--patch", type=int, default=64, help="patch side (study: 256)")
    parser.add_argument("--input-size", type=int, default=56, help="CNN input (study: 224)")
    parser.add_argument("--arch", default="small_cnn", help="small_cnn, resnet50, ...")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="study: 0.01")
    parser.add_argument(
        "--patch-scale", type=float, default=0.15, help="x the study's patch counts per slide"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()

    # 1. the cohort -------------------------------------------------------------------
    cohort: Cohort = make_cohort(
        args.out / "cohort",
        args.tumor,
        args.normal,
        size=(args.size, args.size),
        spec_options={"mpp": args.mpp},
        workers=2,
        progress=False,
    )
    split = {s: list(cohort.select(split=s)) for s in ("train", "validation", "test")}
    step(
        f"cohort: {len(cohort.rows)} slides of {args.size} x {args.size} px at {args.mpp} µm/px; "
        + ", ".join(f"{s} {len(r)}" for s, r in split.items()),
        t0,
    )

    # 2-3. tissue, patches --------------------------------------------------------------
    with Slide(split["train"][0].path) as slide:
        mask: TissueMask = MASKER.mask(slide)
    step(f"tissue: {mask.tissue_fraction:.0%} of {split['train'][0].slide_id}", t0)
    stores = {
        s: build_patch_store(split[s], args.out / f"patches_{s}.zarr", args.patch, args.patch_scale)
        for s in ("train", "validation")
    }
    counts = {s: np.bincount(st.labels, minlength=2) for s, st in stores.items()}
    step(
        "patches: " + ", ".join(f"{s} {c[1]} tumor + {c[0]} normal" for s, c in counts.items()),
        t0,
    )

    # 4. the patch CNN --------------------------------------------------------------------
    predictor = train_cnn(stores["train"], stores["validation"], args)
    step(f"patch CNN trained: {args.arch}, {args.input_size} px input", t0)

    # 5. heatmaps -----------------------------------------------------------------------------
    rows = [r for s in ("train", "validation", "test") for r in split[s]]
    maps = heatmaps(rows, predictor, args)
    n_patches = sum(int(np.isfinite(m.array).sum()) for m in maps)
    step(f"heatmaps: {len(maps)} slides, {n_patches} patches predicted", t0)

    # 6. features and the slide classifier ------------------------------------------------------
    table = HeatmapFeatureExtractor().extract_many(maps, progress=False)
    table.to_csv(args.out / "features.csv")
    y = np.array([r.label == "tumor" for r in rows], dtype=int)
    fit_idx = np.array([i for i, r in enumerate(rows) if r.split != "test"])
    test_idx = np.array([i for i, r in enumerate(rows) if r.split == "test"])
    forest = SlideClassifier(n_estimators=500, top_k=5, random_state=0)
    forest.fit(table.rows(fit_idx), y[fit_idx])
    forest.save(args.out / "slide_classifier.cwsi.zip")
    step(f"slide classifier: top 5 features {', '.join(forest.selected_features_)}", t0)

    # 7. evaluation -------------------------------------------------------------------------
    scores = forest.predict_proba(table.rows(test_idx))[:, 1]
    y_test = y[test_idx]
    summary: dict[str, object] = {"test_slides": len(test_idx)}
    if 0 < y_test.sum() < len(y_test):
        ci = auc_ci(y_test, scores)
        summary["test_auc"] = ci.auc
        print(f"           test AUC {ci.auc:.3f} (95% CI {ci.low:.3f}-{ci.high:.3f})")
    cv = cross_validate(table, y, cv=min(5, int(y.sum()), int(len(y) - y.sum())), seed=0)
    summary["cv_auc_mean"], summary["cv_auc_std"] = cv.mean_auc, cv.std_auc
    print(f"           cross-validated AUC over all slides {cv.mean_auc:.3f} ± {cv.std_auc:.3f}")

    test_rows = [rows[i] for i in test_idx]
    ground_truth, detections, dims = {}, {}, {}
    for row, i in zip(test_rows, test_idx, strict=True):
        ground_truth[row.slide_id] = (
            read_asap_xml(row.annotation_path) if row.label == "tumor" else None
        )
        detections[row.slide_id] = detect_lesions(maps[i])
        dims[row.slide_id] = maps[i].slide_dimensions
    froc = FROCEvaluator(progress=False).evaluate(
        ground_truth, detections, mpp=args.mpp, slide_dimensions=dims
    )
    summary["froc"] = froc.score
    print(
        f"           FROC {froc.score:.3f} over {froc.n_lesions} lesions; sensitivity "
        f"{np.array2string(froc.eval_sensitivities, precision=2)} at "
        f"{', '.join(f'{f:g}' for f in froc.eval_fps)} FPs/slide"
    )
    step("evaluation done", t0)

    # figures -----------------------------------------------------------------------------------
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
    if "test_auc" in summary:
        plot_roc({"random forest, test slides": roc_curve(y_test, scores)}, ax=left)
    plot_froc({"small CNN heatmaps": froc}, ax=right)
    fig.tight_layout()
    fig.savefig(args.out / "evaluation.png", dpi=110)
    plt.close(fig)
    tumor_test = [
        (r, maps[i]) for r, i in zip(test_rows, test_idx, strict=True) if r.label == "tumor"
    ]
    if tumor_test:
        overlay = save_overlay(*tumor_test[0], args.out)
        print(f"           {overlay.name}: heatmap over the slide, annotations in green")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    step(f"done: results in {args.out}", t0)


if __name__ == "__main__":
    main()
