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
import textwrap
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
from cervixwsi.metrics import (
    FROCEvaluator,
    FROCResult,
    auc_ci,
    detect_lesions,
    roc_auc,
    roc_curve,
)
from cervixwsi.models import PatchClassifier  # TensorFlow loads when a model is built
from cervixwsi.plotting import plot_froc, plot_roc
from cervixwsi.slide import Slide
from cervixwsi.slide_classifier import SlideClassifier, cross_validate
from cervixwsi.synthetic import Cohort, CohortRow, make_cohort
from cervixwsi.tiling import PatchSampler, PatchStore
from cervixwsi.tissue import TissueMask, TissueMasker

MASKER = TissueMasker()  # the study's ROI detection at its defaults (8 µm/px)
MIN_PER_CLASS = 10  # slides of each class below which no confidence interval is shown
INDENT = " " * 11  # lines without a time stamp line up under the step text


def wrap(text: str, first: str) -> str:
    """``first + text`` in lines of at most 100 characters, continued under the text."""
    return textwrap.fill(
        text,
        width=100,
        initial_indent=first,
        subsequent_indent=INDENT + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def step(text: str, t0: float) -> None:
    """A step's result, time-stamped from the start of the run."""
    print(wrap(text, f"[{time.perf_counter() - t0:6.1f} s] "))


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
    # A few hundred steps leave BatchNormalization's moving statistics behind the
    # weights; re-estimated on training patches, the CNN's probabilities are its own.
    clf.recalibrate_batchnorm(train)
    x_val = validation.read(np.arange(len(validation)))
    accuracy = float(np.mean((clf.predict(x_val) >= 0.5) == (np.asarray(validation.labels) == 1)))
    print(
        f"           patch CNN: epoch {h.epoch[best]} kept, validation accuracy "
        f"{h.val_accuracy[best]:.3f} on {len(validation)} patches, {accuracy:.3f} with "
        "BatchNormalization re-estimated"
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


def say(text: str) -> None:
    """A result line without a time stamp, lined up under the step text."""
    print(wrap(text, INDENT))


def slide_counts(y: np.ndarray) -> str:
    """``"N slides (T tumor, M normal)"`` for labels ``y`` (1 = tumor)."""
    n_tumor = int(np.sum(y))
    return f"{len(y)} slides ({n_tumor} tumor, {len(y) - n_tumor} normal)"


def auc_report(name: str, y: np.ndarray, scores: np.ndarray) -> tuple[str, dict[str, object]]:
    """An AUC with its slide counts, and a 95% CI only where one means something.

    No interval is shown with fewer than ``MIN_PER_CLASS`` slides of a class, nor
    when DeLong's interval collapses to a point (classes perfectly separated):
    either way the line says so instead.
    """
    n_tumor, n_normal = int(np.sum(y)), int(len(y) - np.sum(y))
    record: dict[str, object] = {"n_tumor": n_tumor, "n_normal": n_normal}
    if min(n_tumor, n_normal) == 0:
        record["ci"] = "none: one class only"
        return f"{name}: no AUC, {slide_counts(y)}", record
    auc = roc_auc(y, scores)
    record["auc"] = auc
    head = f"{name} {auc:.3f} on {slide_counts(y)}"
    if min(n_tumor, n_normal) < MIN_PER_CLASS:
        record["ci"] = f"none: fewer than {MIN_PER_CLASS} slides of a class"
        return f"{head}; no 95% CI: under {MIN_PER_CLASS} slides of a class", record
    ci = auc_ci(y, scores)
    if ci.low == ci.high:
        record["ci"] = "none: degenerate, the scores separate the classes completely"
        return (
            f"{head}; no 95% CI: the scores separate the classes completely, so DeLong's "
            f"interval is the point {ci.low:.3f}",
            record,
        )
    record["ci"] = [ci.low, ci.high]
    return f"{head}, 95% CI {ci.low:.3f}-{ci.high:.3f} (DeLong)", record


def froc_report(froc: FROCResult, test_rows: list[CohortRow]) -> list[str]:
    """The FROC score with its lesion and slide counts, and which lesions count."""
    n_tumor = sum(r.label == "tumor" for r in test_rows)
    annotated = sum(r.n_lesions for r in test_rows if r.label == "tumor")
    regions = sum(s.n_labels for s in froc.slides)
    n_itc = sum(int(s.itc_labels.size) for s in froc.slides)
    sens = " ".join(f"{v:.2f}" for v in froc.eval_sensitivities)
    fps = ", ".join(f"{f:g}" for f in froc.eval_fps)
    lines = [
        f"FROC {froc.score:.3f} over {froc.n_lesions} lesions on {froc.n_slides} test slides "
        f"({n_tumor} tumor, {froc.n_slides - n_tumor} normal): sensitivity {sens} at {fps} "
        "false positives per slide",
        f"the {froc.n_lesions} lesions: the {annotated} annotated tumor regions become "
        f"{regions} once the Camelyon16 rule dilates them by 37.5 µm (close ones merge), "
        f"less {n_itc} isolated tumor cells (ITCs: under ~200 µm across), which count "
        "neither as hits nor as false positives",
    ]
    if froc.n_lesions < MIN_PER_CLASS:
        lines.append(f"fewer than {MIN_PER_CLASS} lesions: the FROC score is a rough figure")
    return lines


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
    add = parser.add_argument
    add(
        "--out",
        type=Path,
        default=Path("cervixwsi-e2e"),
        help="output folder, created if missing; reused by a second run (default: cervixwsi-e2e)",
    )
    add("--tumor", type=int, default=10, help="tumor slides (default: 10; the study: 347)")
    add("--normal", type=int, default=10, help="normal slides (default: 10; the study: 453)")
    add("--size", type=int, default=4096, help="slide side in level-0 pixels (default: 4096)")
    add("--mpp", type=float, default=1.0, help="level-0 µm/px (default: 1.0; the study: 0.25)")
    add("--patch", type=int, default=64, help="patch side in pixels (default: 64; the study: 256)")
    add("--input-size", type=int, default=56, help="CNN input side (default: 56; the study: 224)")
    add(
        "--arch",
        default="small_cnn",
        help="patch CNN: small_cnn, resnet50, inception_v3, ... (default: small_cnn)",
    )
    add("--epochs", type=int, default=6, help="training epochs of the patch CNN (default: 6)")
    add(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's initial learning rate (default: 0.001; the study: 0.01)",
    )
    add(
        "--patch-scale",
        type=float,
        default=0.15,
        help="fraction of the study's patch counts per slide (default: 0.15; the study: 1)",
    )
    add(
        "--difficulty",
        type=float,
        help="synthetic slides' difficulty in [0, 1] (default: SyntheticSlideSpec's, 0.5)",
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
        difficulty=args.difficulty,
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
    line, summary["test_auc"] = auc_report("test AUC", y_test, scores)
    say(line)
    # Out-of-fold scores of every slide (the feature selection is redone inside each fold).
    folds = min(5, int(y.sum()), int(len(y) - y.sum()))
    cv = cross_validate(table, y, cv=folds, seed=0)
    name = f"cross-validated AUC (out-of-fold, {folds} folds)"
    line, summary["cv_auc"] = auc_report(name, y, cv.probabilities)
    summary["cv_fold_auc"] = cv.fold_auc.tolist()
    say(line + "; fold AUCs " + " ".join(f"{a:.2f}" for a in cv.fold_auc))

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
    summary["froc_lesions"] = froc.n_lesions
    summary["froc_itc_excluded"] = sum(int(s.itc_labels.size) for s in froc.slides)
    for line in froc_report(froc, test_rows):
        say(line)
    say(
        "synthetic slides: these scores show how the pipeline does at this difficulty, "
        "not how it would do on real slides"
    )
    step("evaluation done", t0)

    # figures -----------------------------------------------------------------------------------
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
    if 0 < y_test.sum() < len(y_test):
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
