"""The study's experiment in one command: networks A-D, Tables 2 and 3, Figs. 4 and 5.

1. a cohort (synthetic by default, or yours: ``--manifest``), tissue masks, and one
   patch store of the training and validation slides shared by all networks;
2. models A (Inception-v3), B (InceptionResNet-v2) and C (ResNet50) trained with the
   study's recipe on the same patches; D, their ensemble (mean probability);
3. a heatmap of every slide per model (D's is the mean of A-C's on the same grid,
   which is what D predicts patch by patch);
4. per model: the 28 heatmap features, the random forest on its top 5 trained on the
   training and validation slides, slide-level ROC AUC with its 95 % DeLong interval
   on the test slides, and the lesion-level FROC with the sensitivities at 1/4 to 8
   false positives per slide;
5. ``table3.csv`` / ``table3.md`` (the study's Table 3, plus intervals, counts and the
   paired DeLong p-value of D against each of A-C), ``table2.csv`` (the features by
   importance, per model), ``fig4.png`` (ROC, FROC and scores of A-D, the study's
   Table 3 marked), ``fig5_<slide>.png`` (a test slide and its ground truth beside the
   heatmaps of A-D) and ``summary.json``.

Every stage is resumable: each result is written whole or by resumable steps (slides,
tissue masks, patch stores, training checkpoints after each epoch, heatmap runs by
batch, feature rows), so a rerun with the same ``--out`` after an interruption loses
nothing, and a rerun of a finished run takes seconds.

Presets (``--preset``):

``cpu`` (default)
    The real Keras networks, randomly initialised, at a reduced size: slides scanned
    at 0.667 µm/px, patches of 96 px (64 µm, the field of view of the study's 256 px
    at 0.25 µm/px) read at 0.667 µm/px from any slide, random crops of 84 px (the
    study's 224/256 ratio; the Inception networks need at least 75).  44 slides of
    1.5 x 1.5 mm (16 train, 4 validation, 24 test, half tumor), 60 tumor + 30 normal
    patches per tumor slide and 30 per normal slide (6 % of the study's), 3 epochs
    of batch 16, Adam at 0.001; synthetic difficulty 0 (``--difficulty`` for harder
    slides).  About 18 minutes on 2 idle CPU cores (see the tutorial for the measured
    time per stage).
``study``
    The study's settings: 347 tumor + 453 normal slides split 480 / 160 / 160, 256 px
    patches at level 0 (the highest magnification), random 224 crops, quarter turns
    and flips, 1000 tumor + 500 normal patches per tumor slide and 500 per normal
    slide (about 450 000 training patches), Adam at 0.01 with exponential decay and
    x0.1 on plateau, batch 32, 20 epochs, 500 trees.  Meant for a GPU: estimated from
    the benchmarks (2 CPU cores at 224 px: ResNet50 13-16 patches/s, Inception-v3
    22-47/s, InceptionResNet-v2 9-13/s; a GPU 50-100x that), one training epoch takes
    a GPU 5-20 min (A), 17-50 min (B) and 14-34 min (C), so 20 epochs 2-17 hours per
    network, and the heatmaps of the 800 synthetic 5 x 5 mm slides (1.7 million
    patches per network) 6-63 min per network; on 2 CPU cores a single epoch of C
    takes about a day.  The tutorial "Reproducing the study" has the table.  On a
    GPU with less than 16 GB, lower ``--batch-size`` (16, or 8).
``--smoke``
    The same code path at toy size for CI (the small CNN stands in for A-C, 12 tiny
    slides, 1 epoch): under 3 minutes on 2 cores.

    python examples/reproduce_study.py --out study-out
    python examples/reproduce_study.py --out my-run --manifest my-cohort/manifest.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from cervixwsi.cohort import (
    FeatureTask,
    HeatmapTask,
    ModelSpec,
    PatchStoreSet,
    PatchTask,
    SlideRef,
    TissueTask,
    find_slides,
    run_cohort,
    tumor_mask,
)
from cervixwsi.features import FeatureTable
from cervixwsi.heatmap import Heatmap
from cervixwsi.metrics import FROCEvaluator, compare_models, detect_lesions, roc_curve
from cervixwsi.plotting import plot_heatmap_panels, plot_model_comparison
from cervixwsi.slide import Slide
from cervixwsi.slide_classifier import SlideClassifier
from cervixwsi.synthetic import make_cohort
from cervixwsi.tiling import PatchSampler
from cervixwsi.tissue import ArtifactMasker, TissueMasker

NETWORKS = {"A": "inception_v3", "B": "inception_resnet_v2", "C": "resnet50"}
LABELS = {
    "inception_v3": "Inception-v3",
    "inception_resnet_v2": "InceptionResNet-v2",
    "resnet50": "ResNet50",
    "small_cnn": "small CNN",
}
SHOW_PROGRESS = True  # progress bars over slides and training batches (on standard error)
#: The study's Table 3: slide-level ROC AUC and lesion-level FROC score.
STUDY_TABLE3 = {
    "A": (0.9476, 0.5279),
    "B": (0.9621, 0.5417),
    "C": (0.9593, 0.5338),
    "D": (0.9784, 0.5609),
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one run; the synthetic cohort's only when no manifest is given."""

    tumor: int
    normal: int
    split: tuple[float, float, float]  # train / validation / test fractions
    size: int  # slide side, level-0 pixels
    mpp: float  # level-0 µm/px of the synthetic slides
    patch: int  # patch side in pixels, read at patch_mpp µm/px
    patch_mpp: float | None  # None: at level 0, whatever its µm/px (the study)
    input_size: int  # the networks' input: random crops in training, centre crop after
    per_tumor_slide: tuple[int, int]  # tumor, normal patches
    per_normal_slide: int
    epochs: int
    learning_rate: float
    batch_size: int = 32
    trees: int = 500  # the random forests' (the study's 500)
    networks: dict[str, str] = field(default_factory=lambda: dict(NETWORKS))
    spec_options: dict[str, Any] = field(default_factory=dict)


PRESETS = {
    "study": Preset(
        tumor=347, normal=453, split=(0.6, 0.2, 0.2), size=20000, mpp=0.25,
        patch=256, patch_mpp=None, input_size=224,
        per_tumor_slide=(1000, 500), per_normal_slide=500,
        epochs=20, learning_rate=0.01,
    ),
    "cpu": Preset(
        tumor=22, normal=22, split=(16 / 44, 4 / 44, 24 / 44), size=2250, mpp=0.6667,
        patch=96, patch_mpp=0.6667, input_size=84,
        per_tumor_slide=(60, 30), per_normal_slide=30,
        epochs=3, learning_rate=1e-3, batch_size=16,
        spec_options={
            "difficulty": 0.0,  # harder slides: see the tutorial (near chance at 0.5)
            "stain_variation": 0.25,
            "large_nests": 1,
            "artifacts": ("dust", "fold", "pen"),
            "quality": 80,
        },
    ),
    "smoke": Preset(
        tumor=6, normal=6, split=(0.5, 1 / 6, 1 / 3), size=1024, mpp=0.6667,
        patch=48, patch_mpp=0.6667, input_size=40,
        per_tumor_slide=(24, 12), per_normal_slide=12,
        epochs=1, learning_rate=1e-3, trees=100,
        networks=dict.fromkeys(NETWORKS, "small_cnn"),
    ),
}  # fmt: skip


def stage(name: str, t0: float, times: dict[str, float], text: str = "") -> None:
    """Record and print a stage's wall time."""
    times[name] = round(time.perf_counter() - t0, 1)
    print(f"[{times[name]:7.1f} s] {name}{': ' + text if text else ''}", flush=True)


def cohort_slides(args: argparse.Namespace, p: Preset) -> tuple[SlideRef, ...]:
    """The slides: the user's manifest, or a synthetic cohort made (or kept) under --out."""
    manifest = args.manifest
    if manifest is None and (args.out / "cohort" / "manifest.csv").exists():
        manifest = args.out / "cohort" / "manifest.csv"  # written last: the cohort is whole
    elif manifest is None:
        options = dict(p.spec_options, mpp=p.mpp)
        if args.difficulty is not None:
            options["difficulty"] = args.difficulty
        made = make_cohort(
            args.out / "cohort",
            p.tumor,
            p.normal,
            size=(p.size, p.size),
            split=p.split,
            spec_options=options,
            workers=2,
            progress=SHOW_PROGRESS,
        )
        manifest = made.manifest_path
    slides = find_slides(manifest)
    bad = [s.slide_id for s in slides if s.label not in ("tumor", "normal") or s.split is None]
    if bad:
        raise SystemExit(f"{manifest}: slides without a tumor/normal label or a split: {bad[:5]}")
    return slides


def accuracy(clf: Any, patches: PatchStoreSet, n: int = 1000) -> float:
    """Patch accuracy at probability 0.5 on (up to ``n`` of) the validation patches."""
    pick = np.sort(np.random.default_rng(0).permutation(len(patches))[:n])
    p = clf.predict(patches.read(pick))
    return float(np.mean((p > 0.5) == patches.labels[pick]))


def train_networks(p: Preset, out: Path, train: PatchStoreSet, val: PatchStoreSet) -> dict:
    """A, B and C on the same patches (each resumes from its checkpoints), and D."""
    from cervixwsi.models import EnsembleClassifier, PatchClassifier  # TensorFlow loads here

    paths = {}
    for seed, (key, arch) in enumerate(p.networks.items()):
        paths[key] = out / "models" / f"{key}.keras"
        if not paths[key].exists():
            t = time.perf_counter()
            clf = PatchClassifier(
                arch,
                input_size=p.input_size,
                batch_size=p.batch_size,
                learning_rate=p.learning_rate,
                epochs=p.epochs,
                seed=seed,
                progress=SHOW_PROGRESS,
            )
            clf.fit(train, val, checkpoint_dir=out / "models" / f"{key}_checkpoints")
            before = clf.history_.val_accuracy
            # A few hundred steps from random weights leave BatchNormalization's moving
            # statistics far from the data's: re-estimate them ("precise BN").
            clf.recalibrate_batchnorm(train)
            clf.save(paths[key])
            print(
                f"            {key} ({arch}): {time.perf_counter() - t:.0f} s, validation "
                f"accuracy by epoch {np.round(before, 3).tolist()}, "
                f"{accuracy(clf, val):.3f} with recalibrated BatchNormalization",
                flush=True,
            )
    paths["D"] = out / "models" / "D"
    if not (paths["D"] / "ensemble.json").exists():
        members = [PatchClassifier.load(paths[k]) for k in p.networks]
        EnsembleClassifier(members).save(paths["D"])
    return paths


def ensemble_heatmaps(slides: tuple[SlideRef, ...], out: Path, members: list[str]) -> None:
    """D's heatmaps: the mean of the members' on the same grid (what D predicts per patch)."""
    folder = out / "heatmaps_D"
    folder.mkdir(exist_ok=True)
    for s in slides:
        path = folder / f"{s.slide_id}.zarr"
        if path.exists():
            continue  # Heatmap.save is atomic: there means whole
        maps = [Heatmap.load(out / f"heatmaps_{k}" / f"{s.slide_id}.zarr") for k in members]
        mean = np.mean([m.array.astype(np.float64) for m in maps], axis=0)
        info = dataclasses.replace(maps[0].info, predictor=f"mean of {', '.join(members)}")
        Heatmap(
            mean,
            maps[0].downsample,
            maps[0].slide_dimensions,
            tissue_mask=maps[0].tissue_mask,
            info=info,
            mpp=maps[0].mpp,
        ).save(path)


def evaluate(
    key: str, slides: tuple[SlideRef, ...], out: Path, trees: int
) -> tuple[np.ndarray, Any, list[tuple[str, str, float]]]:
    """One model: forest on its features, test-slide scores, FROC, Table 2 rows."""
    table = FeatureTable.from_csv(out / f"features_{key}.csv")
    y = np.array([s.label == "tumor" for s in slides], dtype=int)
    fit = np.array([i for i, s in enumerate(slides) if s.split != "test"])
    test = np.array([i for i, s in enumerate(slides) if s.split == "test"])
    forest = SlideClassifier(n_estimators=trees, top_k=5, random_state=0)
    forest.fit(table.rows(fit), y[fit])
    scores = forest.predict_proba(table.rows(test))[:, 1]
    truth, found = {}, {}
    for i in test:
        s = slides[i]
        heatmap = Heatmap.load(out / f"heatmaps_{key}" / f"{s.slide_id}.zarr")
        found[s.slide_id] = detect_lesions(heatmap)
        with Slide(s.path) as opened:
            truth[s.slide_id] = tumor_mask(s, opened) if s.label == "tumor" else None
    froc = FROCEvaluator(progress=False).evaluate(truth, found)
    ranking = [(key, name, value) for name, value in forest.ranking_]
    return scores, froc, ranking


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.epilog = "\n\n".join(__doc__.split("\n\n")[1:])
    add = parser.add_argument
    add("--out", type=Path, required=True, help="output folder; a rerun resumes it")
    add("--preset", choices=("cpu", "study"), default="cpu", help="sizes (default: cpu)")
    add("--smoke", action="store_true", help="toy sizes, the same code path (CI)")
    add("--manifest", type=Path, help="your cohort: CSV of slide_id, path, label, split, ...")
    add("--difficulty", type=float, help="the synthetic slides' difficulty (default: the spec's)")
    add("--batch-size", type=int, help="training batch (default: the preset's, cpu 16, study 32)")
    args = parser.parse_args()
    p = PRESETS["smoke" if args.smoke else args.preset]
    global SHOW_PROGRESS
    SHOW_PROGRESS = not args.smoke
    if args.batch_size:
        p = dataclasses.replace(p, batch_size=args.batch_size)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes: 3 models
    names = {k: f"{k} ({LABELS.get(a, a)})" for k, a in p.networks.items()}
    names["D"] = "D (ensemble of A-C)"
    times: dict[str, float] = {}
    t0 = start = time.perf_counter()

    # 1. cohort, tissue, one patch store per training / validation slide -------------------
    slides = cohort_slides(args, p)
    split = {k: [s for s in slides if s.split == k] for k in ("train", "validation", "test")}
    stage("cohort", t0, times, ", ".join(f"{k} {len(v)}" for k, v in split.items()) + " slides")
    t0 = time.perf_counter()
    # Marker pen, folds and dust found relative to each slide's own stain (the fixed ink
    # colours of the default masker take stain-shifted H&E for red or blue ink).
    masker = TissueMasker(artifacts=ArtifactMasker())
    run_cohort(slides, TissueTask(masker=masker), out, progress=SHOW_PROGRESS)
    stage("tissue", t0, times)
    t0 = time.perf_counter()
    sampler = PatchSampler(
        n_tumor=p.per_tumor_slide[0],
        n_normal=p.per_tumor_slide[1],
        n_normal_normal_slide=p.per_normal_slide,
        patch_size=p.patch,
        mpp=p.patch_mpp,
        seed=0,
    )
    run_cohort(
        split["train"] + split["validation"],
        PatchTask(sampler, tissue="tissue"),
        out,
        progress=SHOW_PROGRESS,
    )
    train, val = (
        PatchStoreSet.from_folder(out / "patches", [s.slide_id for s in split[k]])
        for k in ("train", "validation")
    )
    counts = [
        f"{k} {int(d.labels.sum())} tumor + {int((d.labels == 0).sum())} normal"
        for k, d in (("train", train), ("validation", val))
    ]
    stage("patches", t0, times, ", ".join(counts))

    # 2. networks A-C on the same patches, D their ensemble ----------------------------------
    t0 = time.perf_counter()
    models = train_networks(p, out, train, val)
    stage("training", t0, times, ", ".join(f"{k} {a}" for k, a in p.networks.items()))

    # 3. heatmaps of every slide, per model ------------------------------------------------
    t0 = time.perf_counter()
    for key in p.networks:
        task = HeatmapTask(
            ModelSpec(models[key]),
            patch_size=p.patch,
            mpp=p.patch_mpp,
            batch_size=max(p.batch_size, 32),
            tissue="tissue",
            name=f"heatmaps_{key}",
        )
        run_cohort(slides, task, out, progress=SHOW_PROGRESS)
    ensemble_heatmaps(slides, out, list(p.networks))
    stage("heatmaps", t0, times, f"{len(slides)} slides x {len(p.networks) + 1} models")

    # 4. features, forests, scores, FROC ----------------------------------------------------
    t0 = time.perf_counter()
    keys = [*p.networks, "D"]
    for key in keys:
        task = FeatureTask(heatmaps=f"heatmaps_{key}", name=f"features_{key}")
        run_cohort(slides, task, out, progress=SHOW_PROGRESS)
    if (out / "summary.json").exists():  # written last: the tables and figures are there
        print(f"\n{(out / 'table3.md').read_text(encoding='utf-8')}")
        took = time.perf_counter() - start
        print(f"finished before (see summary.json); checked in {took:.1f} s")
        return
    results = {key: evaluate(key, slides, out, p.trees) for key in keys}
    test = [s for s in slides if s.split == "test"]
    y_test = np.array([s.label == "tumor" for s in test], dtype=int)
    table = compare_models(
        {k: r[0] for k, r in results.items()},
        y_test,
        froc_by_model={k: r[1] for k, r in results.items()},
        reference="D",
    )
    stage("features, forests, evaluation", t0, times)

    # 5. tables, figures, summary ---------------------------------------------------------
    t0 = time.perf_counter()
    table.to_csv(out / "table3.csv")
    study = "\n".join(f"| {k} | {auc:.4f} | {fr:.4f} |" for k, (auc, fr) in STUDY_TABLE3.items())
    markdown = (
        table.to_markdown(names=names)
        + "\nThe study's Table 3 (A-C: Inception-v3, InceptionResNet-v2, ResNet50; D: their "
        + "ensemble; real slides, 160 test slides):\n\n"
        + "| Model | ROC AUC | FROC |\n|---|---|---|\n"
        + study
        + "\n"
    )
    (out / "table3.md").write_text(markdown, encoding="utf-8")
    lines = ["model,rank,feature,importance,selected"]
    for key in keys:
        for rank, (_, name, value) in enumerate(results[key][2], 1):
            lines.append(f"{key},{rank},{name},{value:.6f},{int(rank <= 5)}")
    (out / "table2.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig = plot_model_comparison(
        {k: roc_curve(y_test, r[0]) for k, r in results.items()},
        {k: r[1] for k, r in results.items()},
        comparison=table,
        reference_scores=STUDY_TABLE3,
        reference_label="study (Table 3)",
    )
    fig.savefig(out / "fig4.png", dpi=110)
    plt.close(fig)
    shown = max(
        (s for s in test if s.label == "tumor"),
        key=lambda s: results["D"][1].slide(s.slide_id).n_lesions,
    )
    with Slide(shown.path) as opened:
        fig = plot_heatmap_panels(
            opened,
            {
                names[k]: Heatmap.load(out / f"heatmaps_{k}" / f"{shown.slide_id}.zarr")
                for k in keys
            },
            ground_truth=tumor_mask(shown, opened),
        )
    fig.savefig(out / f"fig5_{shown.slide_id}.png", dpi=110)
    plt.close(fig)
    stage("tables and figures", t0, times)
    summary = {
        "preset": "smoke" if args.smoke else args.preset,
        "settings": dataclasses.asdict(p),
        "manifest": str(args.manifest) if args.manifest else None,
        "slides": {k: len(v) for k, v in split.items()},
        "patches": {"train": len(train), "validation": len(val)},
        "table3": table.to_rows(),
        "top5_features": {k: [n for _, n, _ in results[k][2][:5]] for k in keys},
        "seconds": {**times, "total": round(time.perf_counter() - start, 1)},
    }
    partial = out / "summary.json.partial"  # renamed when whole: it marks the run finished
    partial.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    partial.replace(out / "summary.json")
    print()
    print(markdown)
    print(f"total {summary['seconds']['total']:.1f} s; results in {out}")


if __name__ == "__main__":
    main()
