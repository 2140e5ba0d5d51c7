"""Tests of cervixwsi.cohort: cohort runs on process and thread pools and on Dask distributed.

The Dask tests run a real ``LocalCluster`` of two worker processes over a few tiny
synthetic slides; the results must equal a serial run's bit for bit.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from cervixwsi.cohort import (
    Chain,
    CohortReport,
    CohortRunError,
    FeatureTask,
    FunctionTask,
    HeatmapTask,
    ModelSpec,
    PatchStoreSet,
    PatchTask,
    SlideRef,
    TissueTask,
    cohort_executor,
    find_slides,
    loaded_models,
    run_cohort,
    slide_seed,
)
from cervixwsi.errors import ParameterError, StoreMismatchError
from cervixwsi.heatmap import Heatmap
from cervixwsi.slide import Slide
from cervixwsi.synthetic import Cohort, make_cohort
from cervixwsi.tiling import PatchSampler, PatchStore
from cervixwsi.tissue import TissueMask, TissueMasker

distributed = pytest.importorskip("distributed")  # the `distributed` extra (in `test`)
cloudpickle = pytest.importorskip("cloudpickle")

# The workers cannot import this test module by name: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SAMPLER = PatchSampler(n_tumor=12, n_normal=12, n_normal_normal_slide=12, patch_size=32, seed=0)


class Redness:
    """A deterministic NumPy predictor (picklable): the mean red of a patch."""

    name = "redness"

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (batch[..., 0].mean(axis=(1, 2)) / 255).astype(np.float32)


def pipeline() -> Chain:
    """Tissue, patches, heatmaps and features: every stage persisted per slide."""
    return Chain(
        (
            TissueTask(),
            PatchTask(SAMPLER, tissue="tissue", threads=1),
            HeatmapTask(Redness(), patch_size=64, batch_size=16, tissue="tissue", threads=1),
            FeatureTask(),
        )
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    folder = tmp_path_factory.mktemp("cohort")
    return make_cohort(folder, 2, 2, size=(1024, 1024), spec_options={"mpp": 1.0}, progress=False)


@pytest.fixture(scope="module")
def serial(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline run serially: the reference of every other run."""
    out = tmp_path_factory.mktemp("serial")
    report = run_cohort(cohort.manifest_path, pipeline(), out, progress=False)
    assert report.counts["done"] == 4
    return out


@pytest.fixture(scope="module")
def client() -> Any:
    """A LocalCluster of two worker processes, one thread each."""
    with cohort_executor(2, "local") as c:
        yield c


def ids(cohort: Cohort) -> list[str]:
    return [row.slide_id for row in cohort.rows]


def assert_same_outputs(a: Path, b: Path, slide_ids: list[str]) -> None:
    """Every persisted result of two runs is equal, bit for bit."""
    for sid in slide_ids:
        ma = TissueMask.load(a / "tissue" / f"{sid}.tissue.npz")
        mb = TissueMask.load(b / "tissue" / f"{sid}.tissue.npz")
        assert ma.same_grid(mb) and np.array_equal(ma.array, mb.array), sid
        sa, sb = (
            PatchStore(a / "patches" / f"{sid}.zarr"),
            PatchStore(b / "patches" / f"{sid}.zarr"),
        )
        assert sa.is_complete and sb.is_complete
        for column in ("x", "y", "labels"):
            assert np.array_equal(getattr(sa, column), getattr(sb, column)), (sid, column)
        everything = np.arange(len(sa))
        assert np.array_equal(sa.read(everything), sb.read(everything)), sid
        ha, hb = (
            Heatmap.load(a / "heatmaps" / f"{sid}.zarr"),
            Heatmap.load(b / "heatmaps" / f"{sid}.zarr"),
        )
        assert ha.array.tobytes() == hb.array.tobytes(), sid
        assert np.array_equal(ha.tissue_mask.array, hb.tissue_mask.array), sid
    assert (a / "features.csv").read_text() == (b / "features.csv").read_text()


# --------------------------------------------------------------------------- the slides


def test_slides_come_from_a_manifest_a_folder_or_paths(cohort: Cohort, tmp_path: Path) -> None:
    refs = find_slides(cohort.manifest_path)
    assert [r.slide_id for r in refs] == ids(cohort)
    tumor = refs[0]
    assert (tumor.label, tumor.path.is_absolute()) == ("tumor", True)
    assert tumor.annotation_path == cohort.rows[0].annotation_path.absolute()
    assert {r.split for r in refs} <= {"train", "validation", "test"}
    assert find_slides(cohort) == refs  # the Cohort object itself
    in_folder = find_slides(cohort.directory / "slides")  # sorted by name, no labels
    assert [r.slide_id for r in in_folder] == sorted(ids(cohort))
    assert in_folder[0].label is None
    given = find_slides([cohort.rows[1].path, str(cohort.rows[0].path)])
    assert [r.slide_id for r in given] == [cohort.rows[1].slide_id, cohort.rows[0].slide_id]
    with pytest.raises(ParameterError, match="no slide, folder or manifest at"):
        find_slides(tmp_path / "missing.tiff")
    with pytest.raises(ParameterError, match="no slides in the folder"):
        find_slides(tmp_path)
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / f"{cohort.rows[0].slide_id}.svs").write_bytes(b"")
    with pytest.raises(ParameterError, match="two slides have the id"):
        find_slides([cohort.rows[0].path, twin])
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\na.tiff,tumor\n")
    with pytest.raises(ParameterError, match="no 'path' column"):
        find_slides(bad)


def test_each_slide_draws_from_its_own_stream() -> None:
    assert slide_seed(0, "a") == slide_seed(0, "a")
    assert len({slide_seed(0, "a"), slide_seed(0, "b"), slide_seed(1, "a")}) == 3
    assert slide_seed(None, "a") is None


# ------------------------------------------------------------- resuming, settings, errors


def test_a_rerun_skips_finished_slides_and_rewrites_nothing(cohort: Cohort, serial: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in serial.rglob("*") if p.is_file()}
    report = run_cohort(cohort.manifest_path, pipeline(), serial, progress=False)
    assert report.counts == {"done": 0, "skipped": 4, "failed": 0, "not run": 0}
    after = {p: p.stat().st_mtime_ns for p in serial.rglob("*") if p.is_file()}
    changed = {p.name for p in after if before.get(p) != after[p]}
    assert changed <= {
        "tissue+patches+heatmaps+features-report.json",
        "tissue+patches+heatmaps+features-report.txt",
        "features.csv",
    }


def test_a_rerun_with_other_settings_is_refused(cohort: Cohort, tmp_path: Path) -> None:
    one = cohort.rows[:1]
    run_cohort(one, TissueTask(TissueMasker(mpp=8.0)), tmp_path, progress=False)
    with pytest.raises(StoreMismatchError, match=r"stage 'tissue' made with other settings.*mpp"):
        run_cohort(one, TissueTask(TissueMasker(mpp=16.0)), tmp_path, progress=False)


def stop_once(slide: SlideRef, folder: Path) -> str:
    """Ctrl-C at the second slide, the first time."""
    marker = folder / "stopped"
    if slide.slide_id == "tumor_001" and not marker.exists():
        marker.write_text("")
        raise KeyboardInterrupt
    return slide.slide_id


def test_an_interrupted_run_reports_the_slides_it_did_not_reach(
    cohort: Cohort, tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_cohort(cohort, stop_once, tmp_path, progress=False)
    report = CohortReport.read(tmp_path / "stop_once-report.json")
    assert [o.status for o in report.outcomes] == ["done", "not run", "not run", "not run"]
    again = run_cohort(cohort, stop_once, tmp_path, progress=False)
    assert again.counts == {"done": 3, "skipped": 1, "failed": 0, "not run": 0}
    assert FunctionTask.read("tumor_001", tmp_path / "stop_once") == "tumor_001"


def test_bad_slides_are_reported_and_every_valid_slide_finishes(
    cohort: Cohort, client: Any, tmp_path: Path
) -> None:
    data = cohort.rows[0].path.read_bytes()
    broken = tmp_path / "broken.tiff"
    broken.write_bytes(data[: len(data) // 2])  # a truncated copy
    notes = tmp_path / "notes.txt"
    notes.write_text("not a slide\n")
    slides = [*cohort.rows, broken, notes]
    out = tmp_path / "run"
    with pytest.raises(CohortRunError) as caught:
        run_cohort(slides, TissueTask(), out, executor=client, progress=False)
    message = str(caught.value)
    assert "2 of 6 slides failed in stage 'tissue'" in message and "\n" not in message
    assert "broken (SlideOpenError" in message and "notes (SlideOpenError" in message
    report = caught.value.report
    assert [o.slide_id for o in report.failed] == ["broken", "notes"]
    assert "truncated" in (report["broken"].message or "")
    assert report["notes"].traceback and "SlideOpenError" in report["notes"].traceback
    assert len(report.done) == 4
    for row in cohort.rows:
        TissueMask.load(out / "tissue" / f"{row.slide_id}.tissue.npz")  # every valid one
    text = (out / "tissue-report.txt").read_text()
    assert "slides:   6: 4 done, 0 already done (skipped), 2 failed" in text
    assert "broken  SlideOpenError" in text and "notes   SlideOpenError" in text
    assert CohortReport.read(out / "tissue-report.json") == report
    # Again, returning the report: the valid slides are skipped, the bad ones fail again.
    again = run_cohort(
        slides, TissueTask(), out, executor=client, progress=False, on_error="report"
    )
    assert again.counts == {"done": 0, "skipped": 4, "failed": 2, "not run": 0}


# ------------------------------------------------------------ executors, bit for bit


@pytest.mark.slow
def test_a_local_cluster_gives_the_serial_results_bit_for_bit(
    cohort: Cohort, serial: Path, client: Any, tmp_path: Path
) -> None:
    report = run_cohort(cohort.manifest_path, pipeline(), tmp_path, executor=client, progress=False)
    assert report.counts["done"] == 4 and report.executor.startswith("Dask distributed")
    assert len({o.worker for o in report.outcomes}) == 2  # both workers took slides
    assert_same_outputs(serial, tmp_path, ids(cohort))
    assert len(PatchStoreSet.from_folder(tmp_path / "patches")) == sum(
        o.result["patches"]["patches"] for o in report.outcomes
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_process_and_thread_pools_give_the_serial_results(
    cohort: Cohort, serial: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "process":
        pool: Any = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool = ThreadPoolExecutor(2)
    with pool:
        report = run_cohort(
            cohort.manifest_path, pipeline(), tmp_path, executor=pool, progress=False
        )
    assert report.counts["done"] == 4
    assert_same_outputs(serial, tmp_path, ids(cohort))


# ------------------------------------------------------------------- dying workers


class KillingSlide:
    """A slide that kills its process (``os._exit``) after some patch reads, once.

    The first time, it writes ``marker`` and exits; once the marker exists it reads
    normally, so the rerun (or Dask's retry) finishes the slide.
    """

    def __init__(self, slide: Slide, marker: Path | None, after: int) -> None:
        self._slide = slide
        self._marker = marker
        self._after = after
        self._reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slide, name)

    @property
    def name(self) -> str:
        return self._slide.name

    @property
    def path(self) -> Path:
        return self._slide.path

    def read_region(self, location: Any, level: int, size: Any) -> Any:
        self._reads += 1
        marker = self._marker
        if marker is not None and self._reads > self._after and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(17)
        return self._slide.read_region(location, level, size)


def patches_or_die(slide: SlideRef, folder: Path, *, victim: str, marker: str) -> dict[str, int]:
    """Patches of a slide into ``folder/<id>.zarr``; the victim's process dies half way."""
    with Slide(slide.path) as opened:
        source = KillingSlide(opened, Path(marker) if slide.slide_id == victim else None, 6)
        store = PatchStore.build(
            folder / f"{slide.slide_id}.zarr",
            [source],
            SAMPLER,
            seed=slide_seed(0, slide.slide_id),
            workers=1,
            chunk_patches=4,
            progress=False,
        )
    return {"patches": len(store)}


@pytest.fixture(scope="module")
def reference_stores(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores")
    task = FunctionTask(functools.partial(patches_or_die, victim="", marker=""), name="kill")
    run_cohort(cohort, task, out, progress=False)
    return out / "kill"


def assert_complete_and_equal(folder: Path, reference: Path, slide_ids: list[str]) -> None:
    for sid in slide_ids:
        got, want = PatchStore(folder / f"{sid}.zarr"), PatchStore(reference / f"{sid}.zarr")
        assert got.is_complete and len(got) == len(want) > 0, sid
        everything = np.arange(len(want))
        assert np.array_equal(got.read(everything), want.read(everything)), sid
        assert np.array_equal(got.x, want.x) and np.array_equal(got.labels, want.labels), sid
        assert json.loads((folder / f"{sid}.json").read_text())["result"] == {"patches": len(want)}
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not leftovers  # nothing half-made beside the results
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{sid}.zarr" for sid in slide_ids] + [f"{sid}.json" for sid in slide_ids] + ["run.json"]
    )


@pytest.mark.slow
def test_a_process_pool_worker_killed_mid_slide_is_finished_by_the_rerun(
    cohort: Cohort, reference_stores: Path, tmp_path: Path
) -> None:
    victim = cohort.rows[-1].slide_id
    marker = tmp_path / "killed"
    task = FunctionTask(
        functools.partial(patches_or_die, victim=victim, marker=str(marker)), name="kill"
    )
    out = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(2, mp_context=context) as pool,
        pytest.raises(CohortRunError) as caught,
    ):
        run_cohort(cohort, task, out, executor=pool, progress=False)
    assert marker.exists()  # the victim's worker did die
    first = caught.value.report
    assert victim in [o.slide_id for o in first.failed]
    assert {o.error_type for o in first.failed} == {"BrokenProcessPool"}
    assert "a worker process died" in (first[victim].message or "")
    assert not PatchStore(out / "kill" / f"{victim}.zarr").is_complete  # planned, half filled
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        second = run_cohort(cohort, task, out, executor=pool, progress=False)
    assert second.ok
    # What finished before the pool broke is kept (a slide that finished just as it broke
    # may be reported failed in the first run and skipped in the second).
    assert {o.slide_id for o in second.skipped} >= {o.slide_id for o in first.done}
    assert victim in {o.slide_id for o in second.done}
    assert_complete_and_equal(out / "kill", reference_stores, ids(cohort))


@pytest.mark.slow
def test_a_dask_worker_killed_mid_slide_is_retried_and_nothing_is_lost(
    cohort: Cohort, reference_stores: Path, client: Any, tmp_path: Path
) -> None:
    victim = cohort.rows[0].slide_id
    marker = tmp_path / "killed"
    task = FunctionTask(
        functools.partial(patches_or_die, victim=victim, marker=str(marker)), name="kill"
    )
    out = tmp_path / "run"
    # Dask's nanny restarts the dead worker and the scheduler runs its slides again,
    # which finish what the dead worker saved.
    report = run_cohort(cohort, task, out, executor=client, progress=False, on_error="report")
    assert marker.exists()
    if not report.ok:  # the scheduler gave up on the slide: a rerun finishes it
        report = run_cohort(cohort, task, out, executor=client, progress=False)
    assert report.ok
    assert_complete_and_equal(out / "kill", reference_stores, ids(cohort))
    client.wait_for_workers(2, timeout=30)


# ----------------------------------------------------------------- models on workers


class Weighted:
    """A "model" read from a file: the mean red of a patch times a weight."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.name = f"weighted-{weight}"

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (batch[..., 0].mean(axis=(1, 2)) / 255 * self.weight).astype(np.float32)


def load_weighted(path: str) -> Weighted:
    return Weighted(float(np.load(path)))


def model_in_worker(slide: SlideRef, folder: Path, *, spec: ModelSpec) -> dict[str, int]:
    return {"pid": os.getpid(), "model": id(spec.load()), "loads": loaded_models()}


@pytest.mark.slow
def test_a_model_spec_is_loaded_once_per_worker_process(
    cohort: Cohort, client: Any, tmp_path: Path
) -> None:
    np.save(tmp_path / "weight.npy", np.float64(0.5))
    spec = ModelSpec(tmp_path / "weight.npy", loader=load_weighted)
    heat = HeatmapTask(spec, patch_size=64, batch_size=16, threads=1)
    cluster = run_cohort(cohort, heat, tmp_path / "cluster", executor=client, progress=False)
    local = run_cohort(cohort, heat, tmp_path / "local", progress=False)
    assert cluster.ok and local.ok and len({o.worker for o in cluster.outcomes}) == 2
    for sid in ids(cohort):
        a = Heatmap.load(tmp_path / "cluster" / "heatmaps" / f"{sid}.zarr")
        b = Heatmap.load(tmp_path / "local" / "heatmaps" / f"{sid}.zarr")
        assert a.array.tobytes() == b.array.tobytes() and a.info.predictor.endswith("weighted-0.5")
    probe = FunctionTask(functools.partial(model_in_worker, spec=spec), name="probe")
    report = run_cohort(cohort, probe, tmp_path / "cluster", executor=client, progress=False)
    by_pid: dict[int, set[int]] = {}
    for outcome in report.outcomes:
        by_pid.setdefault(outcome.result["pid"], set()).add(outcome.result["model"])
        assert outcome.result["loads"] == 1  # the heatmap run's load, reused
    # The scheduler decides which workers run the probes (one or both): each process that
    # ran any holds exactly one loaded model, the one its heatmap run loaded.
    assert 1 <= len(by_pid) <= 2 and all(len(models) == 1 for models in by_pid.values())


@pytest.mark.slow
@pytest.mark.tf
def test_a_keras_model_spec_makes_the_serial_heatmaps_on_a_thread_pool(
    cohort: Cohort, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    from cervixwsi.models import PatchClassifier

    path = (
        PatchClassifier("small_cnn", input_size=32, seed=0, progress=False)
        .build()
        .save(tmp_path / "cnn.keras")
    )
    heat = HeatmapTask(ModelSpec(path), patch_size=64, batch_size=16, threads=1)
    before = loaded_models()
    with ThreadPoolExecutor(2) as pool:
        pooled = run_cohort(cohort, heat, tmp_path / "pool", executor=pool, progress=False)
    serial = run_cohort(cohort, heat, tmp_path / "serial", progress=False)
    assert pooled.ok and serial.ok
    assert loaded_models() == before + 1  # one load for both runs and both threads
    for sid in ids(cohort):
        a = Heatmap.load(tmp_path / "pool" / "heatmaps" / f"{sid}.zarr").array
        b = Heatmap.load(tmp_path / "serial" / "heatmaps" / f"{sid}.zarr").array
        assert a.tobytes() == b.tobytes(), sid
