"""Benchmark: a cohort run on a Dask LocalCluster of 2 workers against the serial run.

On N synthetic slides (JPEG pyramidal TIFFs from :func:`cervixwsi.synthetic.make_cohort`),
in the same run, each stage once serially (``run_cohort`` in this process, one slide
after the other) and once on a ``LocalCluster`` of 2 worker processes with one thread
each (the cluster's start-up is timed apart).  Every stage is given one thread per
slide (patch reading, TensorFlow's intra-op pool), so the serial run is one worker and
the cluster two: the ratio is the speed-up of a second worker, on a machine with as
many cores.

1. **CPU-bound: tissue + features.**  Tissue masks, a heatmap per slide with a cheap
   NumPy predictor (the mean colour of a patch: the time is reading and decoding the
   JPEG tiles), and the 28 heatmap features, as one :class:`~cervixwsi.cohort.Chain`.
2. **Heatmaps with the small CNN.**  A :class:`~cervixwsi.cohort.ModelSpec` (random
   weights: speed does not depend on them), loaded once per worker process.

Before the timing, every process (this one, each worker) runs the stage once on one
slide into a scratch folder: it imports what the stage needs and loads the model, a
one-off cost per worker (printed apart) that a long run spreads over many slides.

The outputs of both runs are compared bit for bit: every tissue mask, every heatmap
and the feature table.  It also prints how many cores each run kept busy (CPU time /
wall time): one worker is not one core, since a heatmap's reading threads decode
patches while the predictor runs, so on a 2-core machine the second worker can add
only what the first leaves idle (expect about 1.5-1.9x for the CPU-bound stage, less
for the heatmaps; on more cores, more).

    python benchmarks/bench_cohort.py --quick     # 8 slides of 4096 px, ~3 minutes
    python benchmarks/bench_cohort.py             # 16 slides of 8192 px
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import numpy.typing as npt

from cervixwsi.cohort import (
    Chain,
    CohortReport,
    FeatureTask,
    HeatmapTask,
    ModelSpec,
    SlideRef,
    TissueTask,
    cohort_executor,
    run_cohort,
)
from cervixwsi.cohort._worker import run_one
from cervixwsi.heatmap import Heatmap
from cervixwsi.synthetic import Cohort, make_cohort
from cervixwsi.tissue import TissueMask

PATCH = 128  # pixels at level 0 (0.5 µm/px: the study's 64 µm field of view is 128 px)


class MeanColour:
    """A cheap predictor: the patch's mean red, so the stage's time is reading patches."""

    name = "mean-colour"

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (batch[..., 0].mean(axis=(1, 2)) / 255).astype(np.float32)


def timed(cohort: Cohort, task: object, out: Path, executor: object) -> tuple[float, CohortReport]:
    t0 = time.perf_counter()
    report = run_cohort(cohort, task, out, executor=executor, progress=False)  # type: ignore[arg-type]
    return time.perf_counter() - t0, report


def same_outputs(a: Path, b: Path, cohort: Cohort, *, tissue: bool, features: bool) -> str:
    """``"identical"``, or what differs, between the results of two runs."""
    differences = []
    worst = 0.0
    for row in cohort.rows:
        sid = row.slide_id
        if tissue:
            ma = TissueMask.load(a / "tissue" / f"{sid}.tissue.npz")
            mb = TissueMask.load(b / "tissue" / f"{sid}.tissue.npz")
            if not (ma.same_grid(mb) and np.array_equal(ma.array, mb.array)):
                differences.append(f"tissue of {sid}")
        ha = Heatmap.load(a / "heatmaps" / f"{sid}.zarr").array
        hb = Heatmap.load(b / "heatmaps" / f"{sid}.zarr").array
        if ha.tobytes() != hb.tobytes():
            differences.append(f"heatmap of {sid}")
            worst = max(worst, float(np.nanmax(np.abs(ha - hb))))
    if features and (a / "features.csv").read_bytes() != (b / "features.csv").read_bytes():
        differences.append("features.csv")
    if not differences:
        return "identical, bit for bit"
    return f"DIFFER: {', '.join(differences)} (largest heatmap difference {worst:.2g})"


def warm(task: object, slide: str) -> float:
    """Run ``task`` on one slide into a scratch folder: this process's one-off imports and
    model load.  Returns the seconds it took."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="warm-") as scratch:
        outcome = run_one(task, SlideRef.from_path(slide), Path(scratch))  # type: ignore[arg-type]
    assert outcome.status == "done", outcome.message
    return time.perf_counter() - t0


def compare(
    name: str, cohort: Cohort, task: object, root: Path, client: Any, **check: bool
) -> None:
    first = str(cohort.rows[0].path)
    warm_here = warm(task, first)
    warm_workers = client.run(warm, task, first)
    cpu0 = time.process_time()
    serial_s, serial = timed(cohort, task, root / f"{name}-serial", None)
    serial_cores = (time.process_time() - cpu0) / serial_s
    before = client.run(time.process_time)
    cluster_s, cluster = timed(cohort, task, root / f"{name}-cluster", client)
    after = client.run(time.process_time)
    cluster_cores = sum(after[w] - before[w] for w in after) / cluster_s
    assert serial.ok and cluster.ok
    verdict = same_outputs(root / f"{name}-serial", root / f"{name}-cluster", cohort, **check)
    slowest = max(warm_workers.values())
    print(
        f"   warm-up (imports, model)  {warm_here:7.1f} s here, "
        f"{', '.join(f'{v:.1f}' for v in warm_workers.values())} s on the workers\n"
        f"   serial (1 worker)         {serial_s:7.1f} s\n"
        f"   LocalCluster (2 workers)  {cluster_s:7.1f} s\n"
        f"   speed-up                  {serial_s / cluster_s:7.2f}x "
        f"({(serial_s + warm_here) / (cluster_s + slowest):.2f}x with the warm-up)\n"
        f"   cores busy                {serial_cores:7.2f} serial (its reading threads), "
        f"{cluster_cores:.2f} in the workers\n"
        f"   outputs                   {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 slides of 4096 px")
    args = parser.parse_args()
    n, side = (8, 4096) if args.quick else (16, 8192)
    # One TensorFlow thread in this process too (before TensorFlow starts), as in a worker.
    from cervixwsi.models import PatchClassifier
    from cervixwsi.models._tf import tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        cohort = make_cohort(
            root / "cohort",
            n // 2,
            n - n // 2,
            size=(side, side),
            spec_options={"mpp": 0.5},
            workers=2,
            progress=False,
        )
        print(
            f"{n} synthetic slides of {side} x {side} px at 0.5 µm/px "
            f"(made in {time.perf_counter() - t0:.0f} s, not timed), {os.cpu_count()} cores"
        )
        model = PatchClassifier("small_cnn", input_size=96, seed=0, progress=False).build()
        spec = ModelSpec(model.save(root / "small_cnn.keras"), threads=1)
        cpu = Chain(
            (
                TissueTask(),
                HeatmapTask(MeanColour(), patch_size=PATCH, tissue="tissue", threads=1),
                FeatureTask(),
            )
        )
        cnn = HeatmapTask(spec, patch_size=PATCH, batch_size=32, threads=1)
        t0 = time.perf_counter()
        with cohort_executor(2, "local") as client:
            print(f"LocalCluster of 2 worker processes started in {time.perf_counter() - t0:.1f} s")
            print("1. CPU-bound: tissue + heatmap of a NumPy predictor (JPEG decoding) + features")
            compare("cpu", cohort, cpu, root, client, tissue=True, features=True)
            print("2. heatmaps with the small CNN (96 px input, 128 px patches)")
            compare("cnn", cohort, cnn, root, client, tissue=False, features=False)


if __name__ == "__main__":
    main()
