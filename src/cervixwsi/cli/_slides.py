"""The per-slide subcommands: ``info``, ``tissue``, ``patches``, ``heatmap``, ``features``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from cervixwsi.cli._common import one_line, run_stage
from cervixwsi.cli._options import (
    batch_size_option,
    executor_options,
    heatmaps_option,
    min_tissue_option,
    out_option,
    patch_level_option,
    patch_size_option,
    progress_option,
    seed_option,
    slides_argument,
    tissue_option,
)
from cervixwsi.cohort import (
    CohortRunError,
    FeatureTask,
    FunctionTask,
    HeatmapTask,
    ModelSpec,
    PatchTask,
    SlideRef,
    TissueTask,
    cohort_executor,
    find_slides,
    run_cohort,
)
from cervixwsi.errors import ParameterError

__all__ = ["features", "heatmap", "info", "patches", "slide_info", "tissue"]


def slide_info(slide: SlideRef, folder: Path) -> dict[str, Any]:
    """What ``cervixwsi info`` reports of a slide (a cohort task: picklable, top level)."""
    from cervixwsi.slide import Slide

    with Slide(slide.path) as opened:
        properties = opened.properties
        return {
            "path": str(slide.path),
            "vendor": properties.get("openslide.vendor"),
            "backend": getattr(opened, "backend", None),
            "dimensions": list(opened.dimensions),
            "mpp": None if opened.mpp is None else list(opened.mpp),
            "objective_power": opened.objective_power,
            "levels": [
                {"dimensions": list(dims), "downsample": float(d)}
                for dims, d in zip(opened.level_dimensions, opened.level_downsamples, strict=True)
            ],
            "associated_images": sorted(opened.associated_images),
        }


def _echo_info(slide_id: str, info: dict[str, Any]) -> None:
    mpp = info["mpp"]
    mpp_words = "unknown" if mpp is None else f"{mpp[0]:.4g} x {mpp[1]:.4g} µm/px"
    power = info["objective_power"]
    backend = f" (read by {info['backend']})" if info.get("backend") else ""
    click.echo(f"{slide_id}  {info['path']}")
    click.echo(
        f"  vendor {info['vendor'] or 'unknown'}{backend}, mpp {mpp_words}, objective "
        f"{'unknown' if power is None else f'{power:g}x'}"
    )
    levels = "  ".join(
        f"{k}: {lv['dimensions'][0]} x {lv['dimensions'][1]} ({lv['downsample']:.4g}x)"
        for k, lv in enumerate(info["levels"])
    )
    click.echo(f"  levels  {levels}")
    click.echo(f"  associated images: {', '.join(info['associated_images']) or 'none'}")


@click.command()
@slides_argument()
@out_option("Folder for info/<slide>.json and the report (default: print only).", required=False)
@executor_options
@progress_option
def info(
    slides: tuple[Path, ...],
    out: Path | None,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Describe slides: levels, mpp, vendor, associated images.

    SLIDES are slide files, folders of slides, or a manifest CSV (a `path` column,
    as `cervixwsi synth` writes).  A file that is not a slide is reported as such.

    \b
    Example:
      cervixwsi info cohort/slides/tumor_000.tiff
      cervixwsi info cohort/manifest.csv --out run --workers 4
    """
    refs = find_slides(list(slides))
    with tempfile.TemporaryDirectory() as scratch:
        folder = out if out is not None else Path(scratch)
        with cohort_executor(workers, scheduler) as executor:
            report = run_cohort(
                refs,
                FunctionTask(slide_info, name="info"),
                folder,
                executor=executor,
                on_error="report",
                progress=not quiet and out is not None,
            )
        for outcome in report.outcomes:
            if outcome.status == "failed":
                click.echo(f"{outcome.slide_id}  {outcome.error_type}: {one_line(outcome.message)}")
            else:
                _echo_info(outcome.slide_id, FunctionTask.read(outcome.slide_id, folder / "info"))
        if out is not None:
            click.echo(f"info in {folder / 'info'}; report: {report.text_path}")
            if report.failed:
                raise CohortRunError(report)
    if report.failed:
        n = len(report.failed)
        raise click.ClickException(
            f"{n} of {len(report.outcomes)} files could not be read as slides (listed above)"
        )


@click.command()
@slides_argument()
@out_option("The run's folder: masks go to OUT/tissue/<slide>.tissue.npz.")
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=8.0,
    show_default=True,
    help="Working resolution in µm/px (the study's: 8, a 32x downsample of a 40x scan).",
)
@click.option("--level", type=click.IntRange(min=0), help="Read this level instead of --mpp.")
@executor_options
@progress_option
def tissue(
    slides: tuple[Path, ...],
    out: Path,
    mpp: float,
    level: int | None,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Detect tissue (HSV, Otsu, morphology in µm) on every slide.

    Each mask is saved as OUT/tissue/<slide>.tissue.npz as soon as it is made; a rerun
    skips the slides that have one.  Slides that cannot be read are listed in
    OUT/tissue-report.txt, the others finish.

    \b
    Example:
      cervixwsi tissue cohort/manifest.csv --out run --workers 2
    """
    from cervixwsi.tissue import TissueMasker

    task = TissueTask(TissueMasker(mpp=mpp, level=level))
    run_stage(
        slides,
        task,
        out,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        what=f"masks in {out / 'tissue'}",
    )


def _tissue_folder(tissue: Path | None, out: Path) -> str | None:
    """``--tissue``: as given, else OUT/tissue when `cervixwsi tissue` made it."""
    if tissue is not None:
        return str(tissue.absolute())
    return "tissue" if (out / "tissue" / "run.json").is_file() else None


@click.command()
@slides_argument()
@out_option("The run's folder: one patch store per slide in OUT/patches/<slide>.zarr.")
@patch_size_option
@patch_level_option
@click.option(
    "--tumor",
    "n_tumor",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Tumor patches per tumor slide (the study's: 1000).",
)
@click.option(
    "--normal",
    "n_normal",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Normal patches per tumor slide (the study's: 500).",
)
@click.option(
    "--normal-slide",
    "n_normal_slide",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Normal patches per slide without tumor (the study's: 500).",
)
@min_tissue_option
@seed_option("Seed of the run (each slide draws from its own stream).")
@tissue_option
@executor_options
@progress_option
def patches(
    slides: tuple[Path, ...],
    out: Path,
    patch_size: int,
    level: int | None,
    n_tumor: int,
    n_normal: int,
    n_normal_slide: int,
    min_tissue: float,
    seed: int,
    tissue: Path | None,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Sample training patches into one patch store per slide.

    Tumor patches come from each slide's annotations (the manifest's annotation_path,
    ASAP XML or GeoJSON), normal ones from the tissue away from them.  A store is
    planned, then filled chunk by chunk, so a rerun finishes an interrupted slide
    and skips finished ones.

    \b
    Example:
      cervixwsi patches cohort/manifest.csv --out run --patch-size 64 --tumor 150 \\
          --normal 75 --normal-slide 75 --workers 2
    """
    from cervixwsi.tiling import PatchSampler

    sampler = PatchSampler(
        n_tumor=n_tumor,
        n_normal=n_normal,
        n_normal_normal_slide=n_normal_slide,
        patch_size=patch_size,
        level=0 if level is None else level,
        min_tissue=min_tissue,
        seed=seed,
    )
    task = PatchTask(sampler, tissue=_tissue_folder(tissue, out), threads=2)
    run_stage(
        slides,
        task,
        out,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        what=f"patch stores in {out / 'patches'}",
    )


@click.command()
@slides_argument()
@out_option("The run's folder: heatmaps go to OUT/heatmaps/<slide>.zarr.")
@click.option(
    "--model",
    type=click.Path(exists=True, path_type=Path),
    help="A .keras model (or a saved ensemble's folder); default OUT/model.keras.",
)
@click.option(
    "--engine",
    type=click.Choice(["tensorflow", "onnxruntime"]),
    help="Inference engine (default: the model's).",
)
@patch_size_option
@patch_level_option
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Resolution in µm/px instead of --level.",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    help="Pixels between patches (default: the patch size, one pixel per patch).",
)
@min_tissue_option
@batch_size_option
@tissue_option
@click.option(
    "--gpu",
    is_flag=True,
    help="With --scheduler: run only on workers started with `--resources GPU=1`.",
)
@executor_options
@progress_option
def heatmap(
    slides: tuple[Path, ...],
    out: Path,
    model: Path | None,
    engine: str | None,
    patch_size: int,
    level: int | None,
    mpp: float | None,
    stride: int | None,
    min_tissue: float,
    batch_size: int,
    tissue: Path | None,
    gpu: bool,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Make a tumor-probability heatmap of every slide.

    The model is loaded once in each worker process (with memory growth on its
    GPUs).  Predictions are stored as batches finish, so a slide whose worker died
    continues where it stopped on the next run.

    \b
    Example:
      cervixwsi heatmap cohort/manifest.csv --out run --patch-size 64 --workers 2
    """
    path = model if model is not None else out / "model.keras"
    if not path.exists():
        raise ParameterError(f"no model at {path}: train one (cervixwsi train) or give --model")
    threads = None
    if scheduler is None and workers is not None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)  # the workers share the cores
    task = HeatmapTask(
        ModelSpec(path, engine=engine, threads=threads),
        patch_size=patch_size,
        level=level,
        mpp=mpp,
        stride=stride,
        min_tissue=min_tissue,
        batch_size=batch_size,
        tissue=_tissue_folder(tissue, out),
    )
    run_stage(
        slides,
        task,
        out,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        what=f"heatmaps in {out / 'heatmaps'}",
        resources={"GPU": 1} if gpu else None,
    )


@click.command()
@slides_argument(required=False)
@out_option("The run's folder: rows go to OUT/features/<slide>.csv, the table to OUT/features.csv.")
@heatmaps_option
@click.option(
    "--preset",
    type=click.Choice(["cervix28", "camelyon16"]),
    default="cervix28",
    show_default=True,
    help="The features (the study's: cervix28).",
)
@click.option(
    "--thresholds",
    default="0.5,0.9",
    show_default=True,
    help="Probability thresholds of the tumor regions, comma-separated.",
)
@executor_options
@progress_option
def features(
    slides: tuple[Path, ...],
    out: Path,
    heatmaps: Path | None,
    preset: str,
    thresholds: str,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Compute heatmap features: a row per slide, then one table.

    SLIDES (optional) say which slides, in which order; by default every heatmap
    in the heatmap folder, by name.  OUT/features.csv is written once every slide
    has its row.

    \b
    Example:
      cervixwsi features cohort/manifest.csv --out run
    """
    from cervixwsi.features import HeatmapFeatureExtractor

    try:
        levels = tuple(float(t) for t in thresholds.split(","))
    except ValueError:
        raise ParameterError(
            f"--thresholds must be numbers separated by commas, got {thresholds!r}"
        ) from None
    folder = heatmaps.absolute() if heatmaps is not None else out.absolute() / "heatmaps"
    task = FeatureTask(HeatmapFeatureExtractor(preset, levels), heatmaps=str(folder))
    refs: list[Any] = list(slides)
    if not refs:
        stores = sorted(p for p in folder.glob("*.zarr") if not p.name.startswith("."))
        if not stores:
            raise ParameterError(f"no heatmaps (<slide>.zarr) in {folder}: run cervixwsi heatmap")
        refs = [SlideRef(p.name[: -len(".zarr")], p) for p in stores]
    report = run_stage(
        refs,
        task,
        out,
        workers=workers,
        scheduler=scheduler,
        quiet=quiet,
        what=f"feature rows in {out / 'features'}",
    )
    click.echo(f"feature table: {task.table_path(out.absolute())} ({len(report.outcomes)} slides)")
