"""The library's stages as cohort tasks: tissue, patches, heatmaps, features, detections.

Each keeps a slide's result where the stage itself persists it, so that a result
appears only when whole and a rerun finds what is finished:

=============  ==============================================  ============================
task           result of a slide                               written by
=============  ==============================================  ============================
tissue         ``tissue/<id>.tissue.npz``                       :meth:`TissueMask.save`
patches        ``patches/<id>.zarr``                            :meth:`PatchStore.build`
heatmaps       ``heatmaps/<id>.zarr``                           :meth:`HeatmapGenerator.generate`
features       ``features/<id>.csv``; all: ``features.csv``     :meth:`FeatureTable.to_csv`
detections     ``detections/<id>.csv``                          :func:`write_detections_csv`
=============  ==============================================  ============================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cervixwsi._validate import check_positive_int, check_real
from cervixwsi.cohort._models import ModelSpec
from cervixwsi.cohort._slides import SlideRef
from cervixwsi.cohort._task import SlideTask
from cervixwsi.errors import HeatmapError, ParameterError, PatchStoreError, ResultFileError
from cervixwsi.features import FeatureTable, HeatmapFeatureExtractor
from cervixwsi.tiling import PatchSampler
from cervixwsi.tissue import TissueMask, TissueMasker

if TYPE_CHECKING:
    from cervixwsi.cohort._report import CohortReport
    from cervixwsi.geometry import Raster
    from cervixwsi.slide import Slide

__all__ = [
    "DetectionTask",
    "FeatureTask",
    "HeatmapTask",
    "PatchTask",
    "TissueTask",
    "slide_seed",
    "tumor_mask",
]


def _open(slide: SlideRef) -> Slide:
    from cervixwsi.slide import Slide

    return Slide(slide.path)


def _resolve(folder: str | None, out: Path) -> Path | None:
    """A folder option: absolute as given, or relative to the run's output."""
    return None if folder is None else out / folder


def _saved_mask(folder: Path, slide: SlideRef) -> TissueMask:
    path = folder / f"{slide.slide_id}.tissue.npz"
    if not path.is_file():
        raise ResultFileError(
            f"no tissue mask of slide {slide.slide_id!r} at {path}: run the tissue stage "
            "first (cervixwsi tissue), or leave the tissue folder out to detect it here"
        )
    return TissueMask.load(path)


def slide_seed(seed: int | None, slide_id: str) -> int | None:
    """The seed of one slide's draws, from the run's seed and the slide's id.

    The same for a slide whatever the other slides, their order or the worker.

    Examples
    --------
    >>> slide_seed(0, "tumor_000") == slide_seed(0, "tumor_000") != slide_seed(0, "tumor_001")
    True
    """
    if seed is None:
        return None
    state = np.random.SeedSequence([int(seed), *slide_id.encode("utf-8")]).generate_state(1)
    return int(state[0])


def tumor_mask(slide: SlideRef, opened: Any, downsample: float = 16.0) -> Raster | None:
    """The annotated tumor of a slide as a boolean raster (``None`` without annotations).

    Reads ``slide.annotation_path`` (ASAP XML, or GeoJSON for ``.json`` / ``.geojson``)
    and draws its ``"tumor"`` polygons at ``downsample`` level-0 pixels per pixel.
    """
    if slide.annotation_path is None:
        return None
    from cervixwsi.annotations import rasterize, read_asap_xml, read_geojson
    from cervixwsi.geometry import slide_mpp

    path = slide.annotation_path
    suffix = path.suffix.lower()
    annotations = read_geojson(path) if suffix in (".json", ".geojson") else read_asap_xml(path)
    width, height = opened.dimensions
    shape = (math.ceil(height / downsample), math.ceil(width / downsample))
    return rasterize(
        annotations, shape, downsample, slide_dimensions=(width, height), mpp=slide_mpp(opened)
    )


@dataclass(frozen=True)
class TissueTask(SlideTask):
    """Tissue masks: ``<out>/tissue/<id>.tissue.npz`` (:meth:`TissueMask.save`).

    Parameters
    ----------
    masker : TissueMasker
        The detector (default ``TissueMasker()``, the study's).
    name : str
        The stage's folder, default ``"tissue"``.
    """

    masker: TissueMasker = field(default_factory=TissueMasker)
    name: str = "tissue"

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.tissue.npz"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        return self.output(slide, out).is_file()  # saved atomically: whole if there

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        with _open(slide) as opened:
            mask = self.masker.mask(opened)
            level = self.masker.choose_level(opened)
        self.folder(out).mkdir(parents=True, exist_ok=True)
        mask.save(self.output(slide, out))
        return {"tissue_fraction": round(mask.tissue_fraction, 4), "level": level}

    def identity(self) -> dict[str, Any]:
        return {"stage": self.name, "masker": dataclasses.asdict(self.masker)}


@dataclass(frozen=True)
class PatchTask(SlideTask):
    """Training patches into one store per slide: ``<out>/patches/<id>.zarr``.

    Each slide's store is a :class:`~cervixwsi.tiling.PatchStore` built by
    :meth:`~cervixwsi.tiling.PatchStore.build`: planned beside its place and renamed in,
    then filled chunk by chunk, so a slide whose worker dies is finished, not redone,
    by the next run.  Tumor patches come from the slide's annotations (a manifest's
    ``annotation_path``); a slide without them gives normal patches only.

    Parameters
    ----------
    sampler : PatchSampler
        How many patches of which size and level (see :class:`~cervixwsi.tiling.PatchSampler`).
    masker : TissueMasker, optional
        Tissue detection when ``tissue`` is not given (default ``TissueMasker()``).
    tissue : str, optional
        A folder of saved masks (``<id>.tissue.npz``, what :class:`TissueTask` writes),
        relative to the run's output or absolute, instead of detecting tissue here.
    seed : int, optional
        The run's seed (default the sampler's); each slide draws from its own stream
        (:func:`slide_seed`), so its patches do not depend on the other slides.
    annotation_downsample : float
        Level-0 pixels per pixel of the drawn tumor mask (16).
    chunk_patches : int
        Patches per zarr chunk (8).
    threads : int
        Threads reading one slide's patches (2).
    name : str
        The stage's folder, default ``"patches"``.
    """

    sampler: PatchSampler = field(default_factory=PatchSampler)
    masker: TissueMasker | None = None
    tissue: str | None = None
    seed: int | None = None
    annotation_downsample: float = 16.0
    chunk_patches: int = 8
    threads: int = 2
    name: str = "patches"

    def __post_init__(self) -> None:
        check_positive_int(self.chunk_patches, "PatchTask.chunk_patches")
        check_positive_int(self.threads, "PatchTask.threads")
        check_real(self.annotation_downsample, "PatchTask.annotation_downsample", min=1)

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.zarr"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        from cervixwsi.tiling import PatchStore

        path = self.output(slide, out)
        if not path.exists():
            return False
        try:
            return PatchStore(path).is_complete
        except PatchStoreError:
            return False

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        from cervixwsi.tiling import PatchStore

        folder = _resolve(self.tissue, out)
        with _open(slide) as opened:
            tumor = tumor_mask(slide, opened, self.annotation_downsample)
            tissue = None if folder is None else [_saved_mask(folder, slide)]
            store = PatchStore.build(
                self.output(slide, out),
                [opened],
                self.sampler,
                tumor_masks=[tumor],
                tissue_masks=tissue,
                masker=self.masker,
                seed=slide_seed(
                    self.sampler.seed if self.seed is None else self.seed, slide.slide_id
                ),
                workers=self.threads,
                chunk_patches=self.chunk_patches,
                progress=False,
            )
        labels = store.labels
        return {
            "patches": len(store),
            "tumor": int(labels.sum()),
            "normal": int((labels == 0).sum()),
        }

    def identity(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "sampler": self.sampler.params(),
            "masker": None if self.masker is None else dataclasses.asdict(self.masker),
            "tissue": self.tissue,
            "seed": self.seed,
            "annotation_downsample": self.annotation_downsample,
        }


@dataclass(frozen=True)
class HeatmapTask(SlideTask):
    """Tumor-probability heatmaps, resumable: ``<out>/heatmaps/<id>.zarr``.

    Each slide runs :meth:`HeatmapGenerator.generate(slide, out=...)
    <cervixwsi.heatmap.HeatmapGenerator.generate>`, which stores predictions as batches
    finish: a slide whose worker died continues from its last batch.

    Parameters
    ----------
    model : ModelSpec or PatchPredictor
        A :class:`ModelSpec` (loaded once per worker process: the way to run a Keras
        model), or any picklable object with ``predict(batch)``, sent with every task.
    patch_size, level, mpp, stride, min_tissue, batch_size
        As for :class:`~cervixwsi.heatmap.HeatmapGenerator` (256, level 0, one pixel per
        patch, 0.5, 32).
    masker : TissueMasker, optional
        Tissue detection when ``tissue`` is not given.
    tissue : str, optional
        A folder of saved tissue masks (relative to the run's output, or absolute).
    threads : int
        Threads reading patches for the predictor (2).
    name : str
        The stage's folder, default ``"heatmaps"``.
    """

    model: Any
    patch_size: int = 256
    level: int | None = None
    mpp: float | None = None
    stride: int | None = None
    min_tissue: float = 0.5
    batch_size: int = 32
    masker: TissueMasker | None = None
    tissue: str | None = None
    threads: int = 2
    name: str = "heatmaps"

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSpec) and not callable(
            getattr(self.model, "predict", None)
        ):
            raise ParameterError(
                "HeatmapTask.model must be a ModelSpec or an object with predict(batch), "
                f"got {self.model!r}"
            )
        self._generator(None)._validate()

    def _generator(self, predictor: Any) -> Any:
        from cervixwsi.heatmap import HeatmapGenerator

        return HeatmapGenerator(
            predictor if predictor is not None else _NoPredictor(),
            patch_size=self.patch_size,
            level=self.level,
            mpp=self.mpp,
            stride=self.stride,
            min_tissue=self.min_tissue,
            batch_size=self.batch_size,
            masker=self.masker,
            workers=self.threads,
            progress=False,
        )

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.zarr"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        from cervixwsi.heatmap import Heatmap

        path = self.output(slide, out)
        if not path.exists():
            return False
        try:
            Heatmap.load(path)  # refuses an unfinished run
        except HeatmapError:
            return False
        return True

    def predictor(self) -> Any:
        """The predictor: loaded (once per process) from a :class:`ModelSpec`, or as given."""
        return self.model.load() if isinstance(self.model, ModelSpec) else self.model

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        folder = _resolve(self.tissue, out)
        mask = None if folder is None else _saved_mask(folder, slide)
        generator = self._generator(self.predictor())
        self.folder(out).mkdir(parents=True, exist_ok=True)
        with _open(slide) as opened:
            heatmap = generator.generate(opened, out=self.output(slide, out), tissue_mask=mask)
        finite = heatmap.array[np.isfinite(heatmap.array)]
        return {
            "predicted": heatmap.info.n_predicted,
            "max_probability": round(float(finite.max()), 4) if finite.size else None,
        }

    def identity(self) -> dict[str, Any]:
        from cervixwsi.heatmap import predictor_name

        model = self.model.identity() if isinstance(self.model, ModelSpec) else None
        return {
            "stage": self.name,
            "model": model if model is not None else predictor_name(self.model),
            "patch_size": self.patch_size,
            "level": self.level,
            "mpp": self.mpp,
            "stride": self.stride,
            "min_tissue": self.min_tissue,
            "masker": None if self.masker is None else dataclasses.asdict(self.masker),
            "tissue": self.tissue,
        }


class _NoPredictor:
    """Stands in for the model while only the settings are checked."""

    def predict(self, batch: Any) -> Any:  # pragma: no cover - never called
        raise TypeError("a stand-in for checking settings: it predicts nothing")


def _load_heatmap(folder: Path, slide: SlideRef) -> Any:
    from cervixwsi.heatmap import Heatmap

    path = folder / f"{slide.slide_id}.zarr"
    if not path.exists():
        raise ResultFileError(
            f"no heatmap of slide {slide.slide_id!r} at {path}: run the heatmap stage first"
        )
    return Heatmap.load(path)


@dataclass(frozen=True)
class FeatureTask(SlideTask):
    """Heatmap features: a row per slide, ``<out>/features/<id>.csv``, then ``features.csv``.

    Each slide's row is a one-row :class:`~cervixwsi.features.FeatureTable` written
    atomically.  When every slide of the run has its row, :meth:`finish` writes them
    all, in the order the slides were given, to ``<out>/features.csv`` (the table
    :mod:`cervixwsi.slide_classifier` reads); it is not written while a slide lacks one.

    Parameters
    ----------
    extractor : HeatmapFeatureExtractor
        Which features (default the study's 28, ``"cervix28"``).
    heatmaps : str
        The folder of heatmap stores (``<id>.zarr``), relative to the run's output or
        absolute; default ``"heatmaps"``, where :class:`HeatmapTask` writes them.
    name : str
        The stage's folder, default ``"features"``.
    """

    extractor: HeatmapFeatureExtractor = field(default_factory=HeatmapFeatureExtractor)
    heatmaps: str = "heatmaps"
    name: str = "features"

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.csv"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        return self.output(slide, out).is_file()  # written atomically

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        heatmap = _load_heatmap(out / self.heatmaps, slide)
        vector = self.extractor.extract(heatmap, slide_id=slide.slide_id)
        row = FeatureTable(vector.values[None, :], vector.names, (slide.slide_id,), vector.preset)
        self.folder(out).mkdir(parents=True, exist_ok=True)
        row.to_csv(self.output(slide, out))
        return {"features": len(vector)}

    def table_path(self, out: Path) -> Path:
        """``<out>/<name>.csv``: the table of every slide."""
        return out / f"{self.name}.csv"

    def finish(self, report: CohortReport, out: Path) -> None:
        if not report.ok:
            return
        preset = self.extractor._preset_name
        rows = [
            FeatureTable.from_csv(self.folder(out) / f"{o.slide_id}.csv", preset=preset)
            for o in report.outcomes
        ]
        names = rows[0].names
        for row in rows:
            if row.names != names:
                raise ResultFileError(
                    f"the feature row of {row.slide_ids[0]!r} has other columns than that of "
                    f"{rows[0].slide_ids[0]!r} (units differ: give every heatmap an mpp, or none)"
                )
        values = np.vstack([r.values for r in rows])
        ids = tuple(r.slide_ids[0] for r in rows)
        FeatureTable(values, names, ids, preset).to_csv(self.table_path(out))

    def identity(self) -> dict[str, Any]:
        ex = self.extractor
        return {
            "stage": self.name,
            "features": list(ex.feature_names()),
            "thresholds": list(ex.thresholds),
            "on_missing": ex.on_missing,
            "heatmaps": self.heatmaps,
        }


@dataclass(frozen=True)
class DetectionTask(SlideTask):
    """Lesion detections of each heatmap (for FROC): ``<out>/detections/<id>.csv``.

    :func:`cervixwsi.metrics.detect_lesions` on the slide's heatmap, written as a
    Camelyon16 submission CSV (:func:`cervixwsi.metrics.write_detections_csv`).

    Parameters
    ----------
    threshold, method, radius_um
        As for :func:`~cervixwsi.metrics.detect_lesions` (0.5, ``"components"``, 75 µm).
    heatmaps : str
        The folder of heatmap stores (default ``"heatmaps"``).
    name : str
        The stage's folder, default ``"detections"``.
    """

    threshold: float = 0.5
    method: Literal["components", "nms"] = "components"
    radius_um: float = 75.0
    heatmaps: str = "heatmaps"
    name: str = "detections"

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.csv"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        return self.output(slide, out).is_file()  # written atomically

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        from cervixwsi.metrics import detect_lesions, write_detections_csv

        heatmap = _load_heatmap(out / self.heatmaps, slide)
        found = detect_lesions(
            heatmap, threshold=self.threshold, method=self.method, radius_um=self.radius_um
        )
        self.folder(out).mkdir(parents=True, exist_ok=True)
        write_detections_csv(self.output(slide, out), found)
        return {"detections": len(found)}

    def identity(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "threshold": self.threshold,
            "method": self.method,
            "radius_um": self.radius_um,
            "heatmaps": self.heatmaps,
        }
