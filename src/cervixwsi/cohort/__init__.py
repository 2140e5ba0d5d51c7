"""Cohort runs: any per-slide stage over many slides, on any executor, resumably.

:func:`run_cohort` runs a stage (a :class:`SlideTask`) over the slides of a manifest,
a folder or a list of paths, one slide per task, on

* this process (no executor),
* any :class:`concurrent.futures.Executor`: a ``ProcessPoolExecutor`` or a
  ``ThreadPoolExecutor``,
* a Dask distributed ``Client``: of a ``LocalCluster`` on one machine, or of a
  cluster's scheduler (``pip install 'cervixwsi[distributed]'``).

The stages are the library's own, each keeping a slide's result where the stage itself
persists it: :class:`TissueTask` (``tissue/<id>.tissue.npz``), :class:`PatchTask`
(``patches/<id>.zarr``, a :class:`~cervixwsi.tiling.PatchStore` per slide),
:class:`HeatmapTask` (``heatmaps/<id>.zarr``, a resumable heatmap run),
:class:`FeatureTask` (``features/<id>.csv``, then ``features.csv``),
:class:`DetectionTask` (``detections/<id>.csv``), a function of yours
(:class:`FunctionTask`) and a :class:`Chain` of them.

What a run guarantees:

* **Resumable.** A result appears only when whole (an atomic rename, or a resumable
  store marked complete), so a rerun skips finished slides, and a slide whose worker
  died is finished from what it had saved (a heatmap from its last batch, a patch store
  from its last chunk): nothing is lost, written twice or read half-written.  A rerun
  into the same folder with other settings is refused (``<out>/<stage>/run.json``).
* **Failures isolated.** A slide that raises (a corrupt file, a text file among the
  slides) is recorded with its error; the others finish; the run then writes its
  report (``<out>/<stage>-report.json`` and ``.txt``) and raises one
  :class:`CohortRunError` naming the failures, or returns the :class:`CohortReport`.
* **Models loaded once per worker process.** A :class:`ModelSpec` (a model's file)
  travels instead of the model; each worker process loads it once, with memory growth
  on every GPU it sees.
* **One progress bar** over the slides, in the calling process, whatever the executor.

Examples
--------
>>> import tempfile
>>> from cervixwsi.cohort import TissueTask, run_cohort
>>> from cervixwsi.synthetic import make_cohort
>>> with tempfile.TemporaryDirectory() as tmp:
...     cohort = make_cohort(f"{tmp}/cohort", 1, 1, size=(512, 512), progress=False)
...     report = run_cohort(cohort.manifest_path, TissueTask(), f"{tmp}/run", progress=False)
...     again = run_cohort(cohort.manifest_path, TissueTask(), f"{tmp}/run", progress=False)
...     sorted(p.name for p in (report.json_path.parent / "tissue").iterdir())
['normal_000.tissue.npz', 'run.json', 'tumor_000.tissue.npz']
>>> report.counts["done"], again.counts["skipped"]
(2, 2)

Modules: ``_slides`` (:class:`SlideRef`, :func:`find_slides`), ``_task`` (the
:class:`SlideTask` protocol, :class:`FunctionTask`, :class:`Chain`), ``_stages`` (the
library's stages), ``_models`` (:class:`ModelSpec`), ``_runner`` (:func:`run_cohort`,
:func:`cohort_executor`), ``_worker`` (what a worker runs), ``_report`` (the report) and
``_patchset`` (:class:`PatchStoreSet`, per-slide stores as one training set).
"""

from cervixwsi.cohort._models import ModelSpec, loaded_models
from cervixwsi.cohort._patchset import PatchStoreSet
from cervixwsi.cohort._report import CohortReport, CohortRunError, SlideOutcome
from cervixwsi.cohort._runner import cohort_executor, describe_executor, run_cohort
from cervixwsi.cohort._slides import SLIDE_SUFFIXES, SlideRef, find_slides, slide_id_of
from cervixwsi.cohort._stages import (
    DetectionTask,
    FeatureTask,
    HeatmapTask,
    PatchTask,
    TissueTask,
    slide_seed,
    tumor_mask,
)
from cervixwsi.cohort._task import Chain, FunctionTask, SlideTask

__all__ = [
    "SLIDE_SUFFIXES",
    "Chain",
    "CohortReport",
    "CohortRunError",
    "DetectionTask",
    "FeatureTask",
    "FunctionTask",
    "HeatmapTask",
    "ModelSpec",
    "PatchStoreSet",
    "PatchTask",
    "SlideOutcome",
    "SlideRef",
    "SlideTask",
    "TissueTask",
    "cohort_executor",
    "describe_executor",
    "find_slides",
    "loaded_models",
    "run_cohort",
    "slide_id_of",
    "slide_seed",
    "tumor_mask",
]
