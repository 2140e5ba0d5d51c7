"""The cohort-wide subcommands: ``synth``, ``train``, ``classify``, ``evaluate``."""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from cervixwsi._io import atomic_write_text
from cervixwsi.cli._common import run_stage
from cervixwsi.cli._options import (
    batch_size_option,
    executor_options,
    heatmaps_option,
    manifest_option,
    out_option,
    progress_option,
    seed_option,
)
from cervixwsi.cohort import (
    DetectionTask,
    PatchStoreSet,
    SlideRef,
    cohort_executor,
    find_slides,
)
from cervixwsi.errors import ParameterError

__all__ = ["classify", "evaluate", "synth", "train"]

SPLITS = ("train", "validation", "test")


def _on_cluster(scheduler: str | None, job: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one job here, or (with ``--scheduler``) as one task on a worker of the cluster."""
    if scheduler is None:
        return job(*args, **kwargs)
    with cohort_executor(None if scheduler != "local" else 1, scheduler) as client:
        return client.submit(job, *args, pure=False, **kwargs).result()


def _count(n: int, noun: str) -> str:
    """``"1 slide"``, ``"3 slides"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _manifest(manifest: Path | None) -> tuple[SlideRef, ...] | None:
    return None if manifest is None else find_slides(manifest)


def _labels(refs: Sequence[SlideRef]) -> dict[str, int]:
    """Slide id -> 1 (tumor) / 0 (normal), from a manifest's labels."""
    out = {}
    for ref in refs:
        if ref.label not in ("tumor", "normal"):
            raise ParameterError(
                f"slide {ref.slide_id!r} has the label {ref.label!r} in the manifest: "
                "classify and evaluate need 'tumor' or 'normal'"
            )
        out[ref.slide_id] = int(ref.label == "tumor")
    return out


# --- synth ----------------------------------------------------------------------------


@click.command()
@out_option("The cohort's folder: slides/, annotations/ and manifest.csv.")
@click.option(
    "--tumor",
    "n_tumor",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Tumor slides (the study: 347).",
)
@click.option(
    "--normal",
    "n_normal",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Normal slides (the study: 453).",
)
@click.option(
    "--size",
    type=click.IntRange(min=256),
    default=4096,
    show_default=True,
    help="Slide side in level-0 pixels.",
)
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="Level-0 µm/px (0.25: a 40x scan).",
)
@seed_option("The cohort's seed.")
@executor_options
@progress_option
def synth(
    out: Path,
    n_tumor: int,
    n_normal: int,
    size: int,
    mpp: float,
    seed: int,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Draw a synthetic cohort of slides, annotations and a manifest.

    Slides are pyramidal TIFFs, split train / validation / test in the study's
    proportions.  A rerun keeps the slides already drawn.  With --scheduler the
    cohort is drawn by one worker of the cluster (OUT must be on a shared disk).

    \b
    Example:
      cervixwsi synth --out cohort --tumor 6 --normal 6 --size 2048 --mpp 1 --workers 2
    """
    from cervixwsi.synthetic import make_cohort

    cohort = _on_cluster(
        scheduler,
        make_cohort,
        out.absolute(),
        n_tumor,
        n_normal,
        size=(size, size),
        seed=seed,
        workers=workers or 1,
        spec_options={"mpp": mpp},
        progress=not quiet and scheduler is None,
    )
    counts = {s: len(cohort.select(split=s)) for s in SPLITS}
    click.echo(
        f"synth: {len(cohort)} slides ({n_tumor} tumor, {n_normal} normal) of {size} x {size} "
        f"px at {mpp:g} µm/px; " + ", ".join(f"{s} {n}" for s, n in counts.items())
    )
    click.echo(f"manifest: {cohort.manifest_path}")


# --- train ----------------------------------------------------------------------------


def train_model(
    out: str,
    patches: str,
    train_ids: list[str] | None,
    validation_ids: list[str],
    params: dict[str, Any],
    threads: int | None,
    progress: bool,
) -> dict[str, Any]:
    """Train (or resume training) the patch CNN on per-slide patch stores; save it."""
    from cervixwsi.cohort._models import _prepare_tensorflow

    root = Path(out)
    train = PatchStoreSet.from_folder(patches, train_ids)
    validation = PatchStoreSet.from_folder(patches, validation_ids) if validation_ids else None
    _prepare_tensorflow(threads, memory_growth=True)  # before TensorFlow runs anything
    from cervixwsi.models import PatchClassifier

    clf = PatchClassifier(**params, progress=progress)
    clf.fit(train, validation, checkpoint_dir=root / "train-checkpoints")
    clf.save(root / "model.keras")
    h = clf.history_
    scored = ~np.isnan(h.val_loss)
    best = int(np.nanargmin(h.val_loss)) if scored.any() else len(h.epoch) - 1
    return {
        "train": [len(train), int(train.labels.sum()), len(train.stores)],
        "validation": None if validation is None else [len(validation), len(validation.stores)],
        "epochs": len(h.epoch),
        "kept": int(h.epoch[best]),
        "val_accuracy": None if not scored.any() else float(h.val_accuracy[best]),
        "loss": float(h.loss[best]),
    }


@click.command()
@out_option(
    "The run's folder: the model goes to OUT/model.keras, checkpoints to OUT/train-checkpoints."
)
@click.option(
    "--patches",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder of per-slide patch stores (default: OUT/patches).",
)
@manifest_option(
    "Manifest whose split column picks the training and validation slides "
    "(default: every store trains, no validation)."
)
@click.option(
    "--arch",
    type=click.Choice(["small_cnn", "inception_v3", "inception_resnet_v2", "resnet50"]),
    default="small_cnn",
    show_default=True,
    help="The network (the study's: the three ImageNet ones).",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=8),
    default=224,
    show_default=True,
    help="Network input side; patches are cropped to it (the study's: 224).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Training epochs."
)
@batch_size_option
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=0.01,
    show_default=True,
    help="Adam's initial learning rate (the study's: 0.01).",
)
@seed_option("Seed of the weights, shuffling and augmentation.")
@executor_options
@progress_option
def train(
    out: Path,
    patches: Path | None,
    manifest: Path | None,
    arch: str,
    input_size: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Train the patch CNN on the patch stores of `cervixwsi patches`.

    Checkpoints are written after every epoch, so a rerun continues an
    interrupted training; once OUT/model.keras exists a rerun does nothing
    (delete it to train again).  --workers sets the CPU threads TensorFlow uses;
    with --scheduler the training runs on one worker of the cluster (e.g. the
    one with a GPU).

    \b
    Example:
      cervixwsi train --out run --manifest cohort/manifest.csv --input-size 56 --epochs 6
    """
    model = out / "model.keras"
    if model.exists():
        click.echo(f"train: {model} exists, nothing to do (delete it to train again)")
        return
    folder = (patches or out / "patches").absolute()
    refs = _manifest(manifest)
    train_ids: list[str] | None = None
    validation_ids: list[str] = []
    if refs is not None:
        train_ids = [r.slide_id for r in refs if r.split == "train"]
        validation_ids = [r.slide_id for r in refs if r.split == "validation"]
        if not train_ids:
            raise ParameterError(f"the manifest {manifest} has no slide of the split 'train'")
    params = {
        "arch": arch,
        "input_size": input_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    threads = workers if scheduler is None else None
    done = _on_cluster(
        scheduler,
        train_model,
        str(out.absolute()),
        str(folder),
        train_ids,
        validation_ids,
        params,
        threads,
        not quiet and scheduler is None,
    )
    n, tumor, slides = done["train"]
    click.echo(
        f"train: {arch} ({input_size} px input), {done['epochs']} epochs on {n} patches "
        f"({tumor} tumor, {n - tumor} normal) from {_count(slides, 'slide')}"
    )
    if done["validation"] is not None:
        click.echo(
            f"  kept epoch {done['kept']}: validation accuracy {done['val_accuracy']:.3f} on "
            f"{done['validation'][0]} patches from {_count(done['validation'][1], 'slide')}"
        )
    click.echo(f"model: {model}")


# --- classify -------------------------------------------------------------------------


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


@click.command()
@out_option(
    "The run's folder: the classifier goes to OUT/slide_classifier.cwsi.zip, the "
    "scores to OUT/predictions.csv."
)
@manifest_option("Manifest with each slide's label and split.", required=True)
@click.option(
    "--features",
    "features_csv",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Feature table (default: OUT/features.csv).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Features the forest keeps (the study's: 5).",
)
@click.option(
    "--trees",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Trees of each random forest.",
)
@seed_option("Seed of the forests.")
@executor_options
@progress_option
def classify(
    out: Path,
    manifest: Path,
    features_csv: Path | None,
    top_k: int,
    trees: int,
    seed: int,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Fit the slide classifier and score every slide.

    The classifier is a random forest on the top features (the study's: 5).

    It is fitted on the training and validation slides of the manifest and scores
    every slide of the feature table.  An existing OUT/slide_classifier.cwsi.zip is
    reused (delete it to fit again).  --workers are the forest's parallel jobs;
    with --scheduler the trees are fitted on the cluster (joblib's Dask backend).

    \b
    Example:
      cervixwsi classify --out run --manifest cohort/manifest.csv
    """
    from cervixwsi.features import FeatureTable
    from cervixwsi.slide_classifier import SlideClassifier

    refs = find_slides(manifest)
    labels = _labels(refs)
    split = {r.slide_id: r.split for r in refs}
    table = FeatureTable.from_csv(features_csv or out / "features.csv")
    missing = [sid for sid in table.slide_ids if sid not in labels]
    if missing:
        raise ParameterError(f"slides {missing} of the feature table are not in {manifest}")
    path = out / "slide_classifier.cwsi.zip"
    if path.exists():
        forest = SlideClassifier.load(path)
        click.echo(f"classify: reusing {path}")
    else:
        fit = np.array([split[s] in ("train", "validation", None) for s in table.slide_ids])
        y = np.array([labels[s] for s in table.slide_ids])
        forest = SlideClassifier(n_estimators=trees, top_k=top_k, random_state=seed, n_jobs=workers)
        if scheduler is None:
            forest.fit(table.rows(fit), y[fit])
        else:
            joblib: Any = importlib.import_module("joblib")
            with cohort_executor(None if scheduler != "local" else 1, scheduler) as client:
                client.wait_for_workers(1)
                with joblib.parallel_config(backend="dask"):
                    forest.set_params(n_jobs=-1)
                    forest.fit(table.rows(fit), y[fit])
            forest.set_params(n_jobs=None)
        forest.save(path)
        click.echo(
            f"classify: fitted on {int(fit.sum())} slides ({int(y[fit].sum())} tumor); "
            f"top {top_k} features: {', '.join(forest.selected_features_)}"
        )
    scores = forest.predict_proba(table)[:, 1]
    rows = [
        [sid, split[sid] or "", "tumor" if labels[sid] else "normal", repr(float(p))]
        for sid, p in zip(table.slide_ids, scores, strict=True)
    ]
    _write_csv(out / "predictions.csv", ("slide_id", "split", "label", "probability"), rows)
    click.echo(f"scores of {len(rows)} slides: {out / 'predictions.csv'}; classifier: {path}")


# --- evaluate -------------------------------------------------------------------------


def _auc(y: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> dict[str, Any]:
    from cervixwsi.metrics import auc_ci

    n_tumor = int(y.sum())
    record: dict[str, Any] = {"slides": len(y), "tumor": n_tumor, "normal": len(y) - n_tumor}
    if min(n_tumor, len(y) - n_tumor) == 0:
        record["auc"] = None
        return record
    ci = auc_ci(y, scores)
    record.update({"auc": ci.auc, "ci95": [ci.low, ci.high]})
    return record


@click.command()
@out_option(
    "The run's folder: the results go to OUT/evaluation.json, detections to "
    "OUT/detections/<slide>.csv."
)
@manifest_option("Manifest with each slide's label, split and annotations.", required=True)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Slide scores (default: OUT/predictions.csv).",
)
@click.option(
    "--split",
    type=click.Choice([*SPLITS, "all"]),
    default="test",
    show_default=True,
    help="The slides evaluated.",
)
@heatmaps_option
@executor_options
@progress_option
def evaluate(
    out: Path,
    manifest: Path,
    predictions: Path | None,
    split: str,
    heatmaps: Path | None,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Slide-level ROC AUC and lesion-level FROC of the scored slides.

    The AUC comes with a 95% confidence interval (DeLong); the FROC follows the
    Camelyon16 protocol.

    The AUC scores the slides of --split with OUT/predictions.csv.  The FROC
    detects lesions on every heatmap of the split (one task per slide, on the
    workers) and compares them with the manifest's tumor annotations; it is skipped
    when there is no heatmap folder.

    \b
    Example:
      cervixwsi evaluate --out run --manifest cohort/manifest.csv --split test
    """
    refs = [r for r in find_slides(manifest) if split == "all" or r.split == split]
    if not refs:
        raise ParameterError(f"no slide of the split {split!r} in {manifest}")
    labels = _labels(refs)
    scores_file = predictions or out / "predictions.csv"
    with Path(scores_file).open(newline="", encoding="utf-8") as f:
        scored = {row["slide_id"]: float(row["probability"]) for row in csv.DictReader(f)}
    missing = [r.slide_id for r in refs if r.slide_id not in scored]
    if missing:
        raise ParameterError(f"slides {missing} have no score in {scores_file}: run classify")
    y = np.array([labels[r.slide_id] for r in refs])
    result: dict[str, Any] = {
        "split": split,
        "roc": _auc(y, np.array([scored[r.slide_id] for r in refs])),
    }
    roc = result["roc"]
    which = f"all {roc['slides']} slides" if split == "all" else f"{roc['slides']} {split} slides"
    if roc["auc"] is None:
        click.echo(f"evaluate: no AUC on {which}: one class only")
    else:
        click.echo(
            f"evaluate: AUC {roc['auc']:.3f} (95% CI {roc['ci95'][0]:.3f}-{roc['ci95'][1]:.3f}, "
            f"DeLong) on {which} ({roc['tumor']} tumor, {roc['normal']} normal)"
        )
    folder = (heatmaps or out / "heatmaps").absolute()
    if folder.is_dir():
        result["froc"] = _froc(refs, folder, out, workers, scheduler, quiet)
    atomic_write_text(out / "evaluation.json", json.dumps(result, indent=2) + "\n")
    click.echo(f"results: {out / 'evaluation.json'}")


def _froc(
    refs: list[SlideRef],
    folder: Path,
    out: Path,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> dict[str, Any]:
    from cervixwsi.annotations import read_asap_xml, read_geojson
    from cervixwsi.heatmap import Heatmap
    from cervixwsi.metrics import FROCEvaluator

    task = DetectionTask(heatmaps=str(folder))
    run_stage(
        refs,
        task,
        out,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        what=f"detections in {out / 'detections'}",
    )
    truth: dict[str, Any] = {}
    dims: dict[str, tuple[int, int]] = {}
    mpps = set()
    for ref in refs:
        heat = Heatmap.load(folder / f"{ref.slide_id}.zarr")
        dims[ref.slide_id] = heat.slide_dimensions
        mpps.add(heat.mpp)
        path = ref.annotation_path
        if ref.label != "tumor" or path is None:
            truth[ref.slide_id] = None
        elif path.suffix.lower() in (".json", ".geojson"):
            truth[ref.slide_id] = read_geojson(path)
        else:
            truth[ref.slide_id] = read_asap_xml(path)
    if len(mpps) != 1 or None in mpps:
        raise ParameterError(
            f"the FROC needs one known resolution for every slide; the heatmaps have {mpps}"
        )
    mpp = float(next(iter(mpps)))  # type: ignore[arg-type]
    detections = {r.slide_id: str(task.output(r, out.absolute())) for r in refs}
    froc = FROCEvaluator(progress=False).evaluate(truth, detections, mpp=mpp, slide_dimensions=dims)
    sens = " ".join(f"{v:.2f}" for v in froc.eval_sensitivities)
    score = froc.score if math.isfinite(froc.score) else None
    click.echo(
        f"  FROC {froc.score:.3f} over {froc.n_lesions} lesions on {froc.n_slides} slides "
        f"(sensitivity {sens} at {', '.join(f'{v:g}' for v in froc.eval_fps)} FP per slide)"
    )
    return {
        "score": score,
        "lesions": froc.n_lesions,
        "slides": froc.n_slides,
        "sensitivities": [float(v) for v in froc.eval_sensitivities],
        "fps": list(froc.eval_fps),
    }
