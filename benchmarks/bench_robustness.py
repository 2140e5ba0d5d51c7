"""Benchmark: lesion detection under a stain and artifact shift, and what each remedy buys.

A small CNN is trained on a clean synthetic cohort (its own seeds, the default stain
variation 0.1, no artifacts, JPEG quality 90) and tested on two cohorts of the same size
drawn from the same unseen seeds: an **unshifted** one (as the training slides) and a
**shifted** one (stain variation 0.35, all four artifacts: pen, fold, dust, blur, and
JPEG quality 70), so the two differ by the shift only.  Rows (the ablation):

1. baseline: the CNN, the default tissue mask, one detection per connected component;
2. + artifact mask: ``TissueMasker(artifacts=ArtifactMasker())``;
3. + stain augmentation: the CNN trained with ``Augmentation.stain("strong")`` (HED,
   brightness, contrast, saturation and hue jitter);
4. + stain normalization: Macenko, target fitted on a training slide, source estimated
   once per test slide (``StainNormalizedPredictor(...).for_slide(slide)``), with the
   stains' amounts matched (Macenko et al.) and, in a row of its own, kept
   (``amounts="keep"``: the stain vectors only);
5. + hard-negative mining: the CNN's false positives on the training slides (p >= 0.2,
   outside the tumor annotations with a margin of one patch) added to its patch store
   as normal patches, and the CNN trained again from scratch;
6. + detection method: ``detect_lesions`` settings chosen by
   ``choose_detection_params`` on the training cohort's heatmaps (FROC);
7. all together (the mining done with the stain-augmented CNN, the detection settings
   chosen on the training heatmaps of that configuration; Macenko keeps the amounts
   when the clean training slides' hematoxylin maxima differ between tumor and normal
   slides by more than 10 %: content, not stain, that matching would undo).

``--parts`` also tests the baseline and all together on three more cohorts of the same
seeds, each with one part of the shift (stain only, artifacts only, JPEG only).

Columns, per test cohort: slide AUC (slide score: the heatmap's maximum probability),
lesion FROC (Camelyon16 protocol) and the mean number of detections with p >= 0.9 per
normal slide (each a false positive).  Models, patch stores and heatmaps are cached in
``--workdir`` (a rerun reuses them; an interrupted run resumes).

    python benchmarks/bench_robustness.py --quick     # 3 + 3 slides a cohort, 2048 px
    # 8 + 2 training and 10 + 10 test slides of 3072 px: ~35 min from scratch on 2 busy cores
    python benchmarks/bench_robustness.py --workdir robust-run \\
        --markdown table.md --figure docs/_static/hard_negatives.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _robustness_report import figure, goals, markdown
from _robustness_truth import artifacts_kept, false_positive_sites, hidden_tissue

from cervixwsi.annotations import AnnotationSet, read_asap_xml
from cervixwsi.heatmap import Heatmap, HeatmapGenerator, add_hard_negatives
from cervixwsi.metrics import FROCEvaluator, choose_detection_params, detect_lesions, roc_auc
from cervixwsi.slide import Slide
from cervixwsi.synthetic import Cohort, CohortRow, make_cohort
from cervixwsi.tiling import PatchSampler, PatchStore
from cervixwsi.tissue import TissueMasker

MPP = 1.0  # level-0 µm/px: 64 px patches see the study's 64 µm field of view
PATCH = 64
INPUT = 56
SHIFT = {"stain_variation": 0.35, "artifacts": ("blur", "dust", "fold", "pen"), "quality": 70}
#: ``--parts``: test cohorts with one part of the shift each (same seeds as the others).
#: Each: (its folder and heatmap tag, the spec options of its slides).
SHIFT_PARTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stain only": ("stain", {"stain_variation": SHIFT["stain_variation"]}),
    "artifacts only": ("artifacts", {"artifacts": SHIFT["artifacts"]}),
    "JPEG only": ("jpeg", {"quality": SHIFT["quality"]}),
}


@dataclasses.dataclass(frozen=True)
class Size:
    train: int  # tumor slides = normal slides of the training cohort
    test: int  # tumor slides = normal slides of each test cohort
    side: int  # level-0 pixels
    epochs: int
    scale: float  # fraction of the study's patch counts per slide


QUICK = Size(train=3, test=3, side=2048, epochs=3, scale=0.15)
FULL = Size(train=5, test=5, side=3072, epochs=8, scale=0.15)
#: Mining threshold: the first model rarely reaches 0.5 on the clean training slides it
#: was trained on, so its hardest negatives are taken from 0.2 up.
MINING_THRESHOLD = 0.2
#: Detection threshold of the chosen (smoothed-maxima) detections.  The FROC sweeps the
#: threshold over the detections' probabilities itself; with smoothed maxima a lower cut
#: only adds detections less probable than every other, which extends the FROC curve to
#: more false positives and cannot lower the score (a stain-shifted model's lesions often
#: peak between 0.05 and 0.5).  The confident false detections (p >= 0.9) are unchanged.
DETECTION_THRESHOLD = 0.05


# --- the remedies ---------------------------------------------------------------------------


def artifact_masker() -> TissueMasker:
    """The default tissue mask less pen, folds, blur and dust."""
    from cervixwsi.tissue import ArtifactMasker

    return TissueMasker(artifacts=ArtifactMasker())


def stain_augmentation() -> Any:
    """The study's augmentation plus strong stain and colour jitter (the test shift is large)."""
    from cervixwsi.models import Augmentation

    return Augmentation.stain("strong")


def macenko_target(train_rows: list[CohortRow], amounts: str = "match") -> Any:
    """A Macenko normalizer fitted on the first training tumor slide."""
    from cervixwsi.stain import MacenkoNormalizer

    row = next(r for r in train_rows if r.label == "tumor")
    with Slide(row.path) as slide:
        return MacenkoNormalizer(amounts=amounts).fit_slide(slide)


def hematoxylin_maxima(train_rows: list[CohortRow]) -> dict[str, list[float]]:
    """Each clean training slide's Macenko hematoxylin maximum, by label.

    The slides share one stain (variation 0.1), so a difference between tumor and
    normal slides is content, not stain: what ``amounts="match"`` would wrongly undo.
    """
    from cervixwsi.stain import MacenkoNormalizer

    out: dict[str, list[float]] = {"tumor": [], "normal": []}
    for row in train_rows:
        with Slide(row.path) as slide:
            maxima = MacenkoNormalizer().fit_slide(slide).max_concentrations
        out[row.label].append(round(float(maxima[0]), 3))
    return out


# --- the pipeline ---------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    work: Path
    size: Size
    difficulty: float = 0.0
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    stain_failures: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {text}", flush=True)

    def cohorts(self) -> dict[str, Cohort]:
        s = self.size
        out = {
            "train": make_cohort(
                self.work / "cohort-train",
                s.train,
                s.train,
                seed=101,
                split=(0.75, 0.25, 0.0),
                spec_options={"mpp": MPP},
                size=(s.side, s.side),
                workers=2,
                progress=False,
                difficulty=self.difficulty,
            ),
            "clean": self.test_cohort("cohort-clean", {}),
            "shifted": self.test_cohort("cohort-shifted", SHIFT),
        }
        self.say(
            "cohorts: train "
            f"{len(out['train'].select(split='train'))} + validation "
            f"{len(out['train'].select(split='validation'))} slides (clean); test "
            f"{len(out['clean'])} unshifted and {len(out['shifted'])} shifted slides, "
            f"{s.side} px at {MPP} µm/px, difficulty {self.difficulty}"
        )
        return out

    def test_cohort(self, folder: str, options: dict[str, Any]) -> Cohort:
        """A test cohort of the unseen seed 303, its slides drawn with ``options``."""
        s = self.size
        return make_cohort(
            self.work / folder,
            s.test,
            s.test,
            seed=303,
            split=(0.0, 0.0, 1.0),
            spec_options={"mpp": MPP, **options},
            size=(s.side, s.side),
            workers=2,
            progress=False,
            difficulty=self.difficulty,
        )

    def store(self, rows: list[CohortRow], name: str) -> PatchStore:
        s = self.size.scale
        sampler = PatchSampler(
            n_tumor=round(1000 * s),
            n_normal=round(500 * s),
            n_normal_normal_slide=round(500 * s),
            patch_size=PATCH,
            seed=0,
        )
        tumors = []
        for row in rows:
            tumors.append(None if row.label == "normal" else tumor_raster(row))
        return PatchStore.build(
            self.work / f"{name}.zarr",
            [r.path for r in rows],
            sampler,
            tumor_masks=tumors,
            workers=2,
            progress=False,
        )

    def model(self, name: str, train: PatchStore, val: PatchStore, augmentation: Any) -> Any:
        from cervixwsi.models import PatchClassifier

        path = self.work / "models" / f"{name}.keras"
        if path.exists():
            return PatchClassifier.load(path)
        t = time.perf_counter()
        clf = PatchClassifier(
            "small_cnn",
            input_size=INPUT,
            epochs=self.size.epochs,
            learning_rate=1e-3,
            augmentation=augmentation,
            seed=0,
            progress=False,
        )
        clf.fit(train, val, checkpoint_dir=self.work / "models" / f"{name}-checkpoints")
        # A few hundred steps leave BatchNormalization's moving statistics far from the
        # data's: without this the small CNN's inference can be nearly constant.
        clf.recalibrate_batchnorm(train, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        clf.save(path)
        counts = np.bincount(train.labels, minlength=2)
        self.say(
            f"model {name}: trained on {counts[1]} tumor + {counts[0]} normal patches in "
            f"{time.perf_counter() - t:.0f} s"
        )
        return clf

    def heatmaps(
        self,
        config: str,
        rows: list[CohortRow],
        predictor: Any,
        masker: TissueMasker | None,
        normalizer: Any = None,
    ) -> dict[str, Heatmap]:
        """One heatmap per slide, resumable, in ``heatmaps/<config>/<slide>.zarr``."""
        from cervixwsi.errors import StainError
        from cervixwsi.stain import StainNormalizedPredictor

        folder = self.work / "heatmaps" / config
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        t = time.perf_counter()
        for row in rows:
            with Slide(row.path) as slide:
                p = predictor
                if normalizer is not None:
                    # the slide's stains estimated on the tissue the heatmap scores (with
                    # the artifact masker: without pen ink, whose colour would pass for
                    # a stain)
                    tissue = None if masker is None else masker.mask(slide)
                    try:
                        p = StainNormalizedPredictor(predictor, normalizer).for_slide(slide, tissue)
                    except StainError as exc:  # counted and reported: left unnormalized
                        self.stain_failures.setdefault(config, []).append(row.slide_id)
                        self.say(f"Macenko could not estimate {row.slide_id}'s stains: {exc}")
                gen = HeatmapGenerator(
                    p, patch_size=PATCH, masker=masker, batch_size=64, workers=2, progress=False
                )
                out[row.slide_id] = gen.generate(slide, out=folder / f"{row.slide_id}.zarr")
        self.say(f"heatmaps {config}: {len(rows)} slides in {time.perf_counter() - t:.0f} s")
        return out


def tumor_raster(row: CohortRow) -> Any:
    """The slide's annotated tumor as a boolean raster at downsample 16."""
    from cervixwsi.annotations import rasterize

    with Slide(row.path) as slide:
        w, h = slide.dimensions
    d = 16
    return rasterize(
        read_asap_xml(row.annotation_path), (-(-h // d), -(-w // d)), d, slide_dimensions=(w, h)
    )


def truth(rows: list[CohortRow]) -> dict[str, AnnotationSet | None]:
    return {
        r.slide_id: read_asap_xml(r.annotation_path) if r.label == "tumor" else None for r in rows
    }


@dataclasses.dataclass(frozen=True)
class Scores:
    auc: float
    n_slides: int
    froc: float
    n_lesions: int
    fp90: float
    n_normal: int
    froc_readable: float  # lesions at most half under drawn blur, folds or ink
    n_readable: int


def score(
    rows: list[CohortRow],
    maps: dict[str, Heatmap],
    detect: Callable[[Heatmap], Any],
    hidden: dict[str, Any],
) -> Scores:
    y = np.array([r.label == "tumor" for r in rows], int)
    slide_scores = np.array([float(np.nanmax(maps[r.slide_id].array, initial=0.0)) for r in rows])
    dets = {r.slide_id: detect(maps[r.slide_id]) for r in rows}
    dims = {r.slide_id: maps[r.slide_id].slide_dimensions for r in rows}
    evaluator = FROCEvaluator(progress=False)
    result = evaluator.evaluate(truth(rows), dets, mpp=MPP, slide_dimensions=dims)
    readable = evaluator.evaluate(
        truth(rows), dets, mpp=MPP, slide_dimensions=dims, unreadable=hidden
    )
    normal = [r.slide_id for r in rows if r.label == "normal"]
    fp90 = float(np.mean([(dets[s][:, 0] >= 0.9).sum() for s in normal])) if normal else 0.0
    return Scores(
        roc_auc(y, slide_scores),
        len(rows),
        result.score,
        result.n_lesions,
        fp90,
        len(normal),
        readable.score,
        readable.n_lesions,
    )


def components(heat: Heatmap) -> Any:
    return detect_lesions(heat)


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = QUICK if args.quick else FULL
    if args.epochs is not None:
        size = dataclasses.replace(size, epochs=args.epochs)
    if args.train_slides is not None:
        size = dataclasses.replace(size, train=args.train_slides)
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(work, size, args.difficulty)
    print(f"{os.cpu_count()} CPUs; sizes {size}; workdir {work}", flush=True)
    cohorts = b.cohorts()
    train_rows = list(cohorts["train"].select(split="train"))
    val_rows = list(cohorts["train"].select(split="validation"))
    tests = {name: list(cohorts[name].rows) for name in ("shifted", "clean")}
    hidden = {name: hidden_tissue(rows) for name, rows in tests.items()}

    train_store = b.store(train_rows, "patches-train")
    val_store = b.store(val_rows, "patches-validation")
    counts = np.bincount(train_store.labels, minlength=2)
    b.say(f"patches: train {counts[1]} tumor + {counts[0]} normal, validation {len(val_store)}")

    plain = TissueMasker()
    art = artifact_masker()
    base = b.model("base", train_store, val_store, study_augmentation())
    aug = b.model("stain-aug", train_store, val_store, stain_augmentation())
    macenko = macenko_target(train_rows)
    # Chosen on the training slides: when their hematoxylin maxima differ between tumor
    # and normal slides of one stain, matching maxima brightens normal nuclei; then the
    # stain vectors only are normalized (amounts are left to augmentation).
    maxima = hematoxylin_maxima(train_rows)
    ratio = float(np.median(maxima["tumor"]) / np.median(maxima["normal"]))
    amounts = "keep" if ratio > 1.1 else "match"
    b.say(f"training slides' H maxima {maxima}: tumor / normal {ratio:.2f}, amounts={amounts}")
    macenko_all = macenko_target(train_rows, amounts)

    # Hard-negative mining: the first model's false positives on its training slides.
    def mined_model(name: str, first: Any, augmentation: Any, masker: TissueMasker | None) -> Any:
        path = work / f"patches-train-{name}.zarr"
        if not path.exists():
            partial = work / f".patches-train-{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(train_store.path, partial)
            partial.rename(path)
        store = PatchStore(path)
        maps = b.heatmaps(f"train-{name}-round1", train_rows, first, masker)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            added = add_hard_negatives(
                store,
                [r.path for r in train_rows],
                [maps[r.slide_id] for r in train_rows],
                tumors=[
                    read_asap_xml(r.annotation_path) if r.label == "tumor" else None
                    for r in train_rows
                ],
                threshold=MINING_THRESHOLD,
            )
        store = PatchStore(path)
        n_hn = int((store.sources == "hard_negative").sum())
        b.say(f"hard negatives ({name}): {n_hn} in the store ({sum(added.values())} added now)")
        return b.model(name, store, val_store, augmentation), n_hn, maps

    hn, n_hn, base_train_maps = mined_model("hn", base, study_augmentation(), plain)
    everything, n_hn_all, _ = mined_model("hn-aug", aug, stain_augmentation(), plain)

    # Detection settings, chosen on the training cohort only.
    truth_train = truth(train_rows)
    choice_base = choose_detection_params(
        base_train_maps, truth_train, mpp=MPP, threshold=DETECTION_THRESHOLD
    )
    all_train_maps = b.heatmaps(f"train-all-{amounts}", train_rows, everything, art, macenko_all)
    choice_all = choose_detection_params(
        all_train_maps, truth_train, mpp=MPP, threshold=DETECTION_THRESHOLD
    )
    for label, c in (("baseline", choice_base), ("all", choice_all)):
        tried = ", ".join(f"{m}/{s:g}/{d:g}={f:.3f} ({n} FP)" for m, s, d, f, n in c.tried)
        b.say(f"detection chosen on the training slides ({label}): {c.kwargs} FROC {c.froc:.3f}")
        b.say(f"  tried (method/sigma_um/min_distance_um=FROC): {tried}")

    def chosen(c: Any) -> Callable[[Heatmap], Any]:
        return lambda heat: detect_lesions(heat, **c.kwargs)

    configs: list[tuple[str, str, Any, TissueMasker, Any, Callable[[Heatmap], Any]]] = [
        ("baseline", "base", base, plain, None, components),
        ("+ artifact mask", "base-art", base, art, None, components),
        ("+ stain augmentation", "aug", aug, plain, None, components),
        ("+ stain normalization (Macenko)", "base-macenko", base, plain, macenko, components),
        (
            "+ stain normalization (Macenko, stain vectors only)",
            "base-macenko-keep",
            base,
            plain,
            macenko_target(train_rows, "keep"),
            components,
        ),
        ("+ hard-negative mining", "hn", hn, plain, None, components),
        ("+ detection method", "base", base, plain, None, chosen(choice_base)),
        ("all together", f"all-{amounts}", everything, art, macenko_all, chosen(choice_all)),
    ]
    table: list[dict[str, Any]] = []
    maps_by: dict[tuple[str, str], dict[str, Heatmap]] = {}
    for label, config, model, masker, normalizer, detect in configs:
        record: dict[str, Any] = {"row": label}
        for cohort, rows in tests.items():
            key = (config, cohort)
            if key not in maps_by:
                maps_by[key] = b.heatmaps(f"{config}-{cohort}", rows, model, masker, normalizer)
            record[cohort] = dataclasses.asdict(score(rows, maps_by[key], detect, hidden[cohort]))
        table.append(record)
        b.say(f"row done: {label}")
    sites = {
        f"{config} {cohort}": false_positive_sites(tests[cohort], maps_by[(config, cohort)])
        for config in ("base", f"all-{amounts}")
        for cohort in ("shifted", "clean")
    }
    kept = artifacts_kept(tests["shifted"], art)
    b.say(f"artifacts left in the artifact mask of the shifted test slides: {kept}")
    parts: dict[str, dict[str, Any]] = {}
    for part, (tag, options) in SHIFT_PARTS.items() if args.parts else ():
        rows = list(b.test_cohort(f"cohort-only-{tag}", options).rows)
        veiled = hidden_tissue(rows)
        parts[part] = {
            "baseline": dataclasses.asdict(
                score(rows, b.heatmaps(f"base-only-{tag}", rows, base, plain), components, veiled)
            ),
            "all together": dataclasses.asdict(
                score(
                    rows,
                    b.heatmaps(f"all-{amounts}-only-{tag}", rows, everything, art, macenko_all),
                    chosen(choice_all),
                    veiled,
                )
            ),
        }
        b.say(f"shift part done: {part}")
    extras = {
        "parts": parts,
        "artifacts_kept": kept,
        "training_hematoxylin_maxima": maxima,
        "macenko_amounts_all": amounts,
        "false_positive_sites": sites,
        "hard_negatives": {"hn": n_hn, "hn-aug": n_hn_all},
        "stain_failures": b.stain_failures,
        "detection_baseline": choice_base.kwargs,
        "detection_all": choice_all.kwargs,
        "seconds": time.perf_counter() - b.t0,
        "size": dataclasses.asdict(size),
    }
    if args.figure is not None:
        figure(
            args.figure, tests["shifted"], maps_by[("base", "shifted")], maps_by[("hn", "shifted")]
        )
        b.say(f"figure written to {args.figure}")
    return {"table": table, **extras}


def study_augmentation() -> Any:
    """The study's augmentation (flips, rotations, crops; no stain jitter)."""
    from cervixwsi.models import Augmentation

    return Augmentation()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3+3 slides of 2048 px per cohort")
    parser.add_argument("--workdir", type=Path, default=Path("bench-robustness"), help="cache")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--figure", type=Path, default=None, help="before/after HN figure")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=0.0,
        help="synthetic difficulty of every cohort (default 0: the issue's first goal's "
        "setting; 0.5 is the generator's default, the second goal's); one --workdir each",
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also test baseline and all together on cohorts with one part of the shift each",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default {FULL.epochs})"
    )
    parser.add_argument(
        "--train-slides",
        type=int,
        default=None,
        help=f"tumor slides (= normal slides) of the training cohort (default {FULL.train})",
    )
    args = parser.parse_args()
    result = run(args)
    command = "python benchmarks/bench_robustness.py" + (" --quick" if args.quick else "")
    command += f" --difficulty {args.difficulty:g}"
    command += " --parts" if args.parts else ""
    for flag, value in (("--epochs", args.epochs), ("--train-slides", args.train_slides)):
        if value is not None:
            command += f" {flag} {value}"
    text = markdown(result, command)
    print(text)
    for line in goals(result):
        print(line)
    (args.workdir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    if args.markdown is not None:
        args.markdown.write_text(text + "\n" + "\n".join(f"- {g}" for g in goals(result)) + "\n")


if __name__ == "__main__":
    main()
