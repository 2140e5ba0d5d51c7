"""GPU throughput of the study's networks: heatmap inference, training, one study-size slide.

On one GPU (the first TensorFlow sees; the others are hidden with
:func:`cervixwsi.models.assign_gpu`), for Inception-v3, InceptionResNet-v2 and ResNet50
at 224 px, in float32 and in mixed precision (``mixed_float16``, the softmax in float32):

1. **Heatmap inference**: ``PatchClassifier.predict`` on uint8 256 x 256 patches
   (centre-cropped to 224 inside), patches/s at batch 32 (the study's) and at a larger
   batch (``--big-batch``, 256), best of two runs after a warm-up.
2. **End to end, one study-size slide**: a synthetic 40x slide with about 8,600 tissue
   patches of 256 px (the study's mean), drawn first (not timed), then timed by stage:
   opening it, the tissue mask (``TissueMasker``), the heatmap (``HeatmapGenerator``
   with ResNet50, batch 32 and the larger batch); the pipeline's rate is compared with
   the bare predictor's at the same batch.
3. **Training**: ``PatchClassifier.fit`` on random 256-px patches through the library's
   input pipeline with the study's augmentation, 2 epochs of ``--steps`` steps of 32;
   the second epoch is timed (the first includes building, tracing and XLA
   compilation, reported apart).  The input pipeline alone is timed too, so a
   pipeline-bound figure shows as one.

A time budget (``--budget``, 420 s by default) skips what no longer fits, so the
default run ends within 8 minutes on one GPU; skipped items are listed.  Without a
GPU it prints one line and exits 0 at once (CI runs it with ``--quick``).

    python benchmarks/bench_gpu.py                  # everything, < 8 min on one GPU
    python benchmarks/bench_gpu.py --quick          # ResNet50 only, short runs, a small slide
    python benchmarks/bench_gpu.py --json gpu.json  # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt

STUDY_ARCHS = ("resnet50", "inception_v3", "inception_resnet_v2")
PATCH = 256
INPUT = 224
BATCH = 32
START = time.perf_counter()


def gpu_devices() -> tuple[list[str], str]:
    """The GPUs TensorFlow sees, or why there are none (without TensorFlow if no driver)."""
    driver = (
        any(Path("/dev").glob("nvidia[0-9]*"))
        or shutil.which("nvidia-smi")
        or Path("/dev/kfd").exists()  # ROCm
        or sys.platform == "darwin"  # Metal
    )
    if not driver:
        return [], "no GPU device or driver on this machine"
    from cervixwsi.models._tf import tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    if not gpus:
        cuda = tf.test.is_built_with_cuda()
        return [], f"TensorFlow {tf.__version__} sees no GPU (built with CUDA: {cuda})"
    return gpus, ""


class Budget:
    """Seconds left of the run's time budget; records what was skipped."""

    def __init__(self, seconds: float) -> None:
        self.end = START + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, need: float, what: str) -> bool:
        if self.left() >= need:
            return True
        self.skipped.append(what)
        print(f"  {what}: skipped ({self.left():.0f} s of the budget left, needs ~{need:.0f} s)")
        return False


def set_mixed(mixed: bool) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def release() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def precision(mixed: bool) -> str:
    return "mixed16" if mixed else "float32"


def make_patches(n: int, seed: int = 0) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """``n`` random 256-px uint8 patches (256 distinct ones, repeated) and 0/1 labels."""
    rng = np.random.default_rng(seed)
    distinct = rng.integers(0, 256, (min(n, 256), PATCH, PATCH, 3), dtype=np.uint8)
    reps = -(-n // len(distinct))
    patches = np.ascontiguousarray(np.tile(distinct, (reps, 1, 1, 1))[:n])
    return patches, np.arange(n) % 2


# ------------------------------------------------------------------------------ inference


def inference(
    arch: str, mixed: bool, patches: npt.NDArray[np.uint8], runs: dict[int, int]
) -> dict[str, Any]:
    """patches/s of ``PatchClassifier.predict`` at each batch size of ``runs``."""
    from cervixwsi.models import PatchClassifier

    set_mixed(mixed)
    try:
        t = time.perf_counter()
        clf = PatchClassifier(arch, input_size=INPUT, seed=0, progress=False).build()
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        clf.predict(patches[:BATCH], batch_size=BATCH)
        first_s = time.perf_counter() - t
        rates = {}
        for batch, n_batches in runs.items():
            x = patches[: batch * n_batches]
            clf.predict(x[:batch], batch_size=batch)  # this batch shape's kernels chosen
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                clf.predict(x, batch_size=batch)
                best = min(best, time.perf_counter() - t)
            rates[batch] = len(x) / best
    finally:
        set_mixed(False)
    del clf
    release()
    return {
        "arch": arch,
        "precision": precision(mixed),
        "build_s": build_s,
        "first_batch_s": first_s,
        "patches_per_s": rates,
    }


# ------------------------------------------------------------------------------- training


class EpochClock(logging.Handler):
    """The time of each "epoch k/n" line that training logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("epoch "):
            self.times.append(time.perf_counter())


def training(
    arch: str, mixed: bool, x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """Training patches/s of ``PatchClassifier.fit`` (the second of two epochs)."""
    from cervixwsi.models import PatchClassifier

    log = logging.getLogger("cervixwsi.models._training")
    clock, level = EpochClock(), log.level
    log.addHandler(clock)
    log.setLevel(logging.INFO)
    set_mixed(mixed)
    try:
        clf = PatchClassifier(
            arch, input_size=INPUT, batch_size=BATCH, epochs=2, seed=0, progress=False
        )
        t = time.perf_counter()
        clf.fit((x, y))
    finally:
        set_mixed(False)
        log.removeHandler(clock)
        log.setLevel(level)
    first, second = clock.times[0] - t, clock.times[1] - clock.times[0]
    loss = float(clf.history_.loss[-1])
    del clf
    release()
    return {
        "arch": arch,
        "precision": precision(mixed),
        "steps_per_epoch": len(x) // BATCH,
        "first_epoch_s": first,
        "patches_per_s": len(x) / second,
        "final_loss": loss,
    }


def pipeline_rate(x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64]) -> float:
    """patches/s of the training input pipeline alone (reading, augmentation, batching)."""
    from cervixwsi.models import ArrayPatchSource, Augmentation
    from cervixwsi.models._data import source_dataset

    ds, steps = source_dataset(
        ArrayPatchSource(x, y),
        batch_size=BATCH,
        size=INPUT,
        augmentation=Augmentation(),
        seed=0,
        epochs=2,
    )
    it = iter(ds)
    for _ in range(min(8, steps)):  # warm-up
        next(it)
    t, n = time.perf_counter(), 0
    for batch in it:
        n += int(batch[0].shape[0])
    return n / (time.perf_counter() - t)


# ----------------------------------------------------------------------- one whole slide


def study_slide(folder: Path, side: int) -> tuple[Path, float]:
    """A synthetic 40x slide of ``side`` x ``side`` px (70 % tissue), drawn once."""
    from cervixwsi.synthetic import SyntheticSlideSpec, make_slide

    path = folder / f"study_slide_{side}.tif"
    t = time.perf_counter()
    if not path.exists():
        spec = SyntheticSlideSpec(width=side, height=side, tissue_fraction=0.7, seed=0)
        make_slide(spec, path, annotations=False, threads=os.cpu_count())
    return path, time.perf_counter() - t


def end_to_end(
    path: Path, arch: str, mixed: bool, batches: list[int], workers: int, budget: Budget
) -> list[dict[str, Any]]:
    """Open, tissue mask and heatmap of one slide, timed by stage, at each batch size."""
    from cervixwsi.heatmap import HeatmapGenerator
    from cervixwsi.models import PatchClassifier
    from cervixwsi.slide import Slide
    from cervixwsi.tissue import TissueMasker

    rows = []
    set_mixed(mixed)
    try:
        t = time.perf_counter()
        clf = PatchClassifier(arch, input_size=INPUT, seed=0, progress=False).build()
        clf.predict(np.zeros((BATCH, PATCH, PATCH, 3), np.uint8))
        model_s = time.perf_counter() - t
        for batch in batches:
            if rows and not budget.allows(30, f"end to end at batch {batch}"):
                break
            t = time.perf_counter()
            with Slide(path) as slide:
                open_s = time.perf_counter() - t
                t = time.perf_counter()
                mask = TissueMasker().mask(slide)
                tissue_s = time.perf_counter() - t
                gen = HeatmapGenerator(
                    clf,
                    patch_size=PATCH,
                    level=0,
                    batch_size=batch,
                    workers=workers,
                    progress=False,
                )
                t = time.perf_counter()
                heat = gen.generate(slide, tissue_mask=mask)
                heatmap_s = time.perf_counter() - t
            n = int(heat.info.n_predicted)
            probe = np.zeros((batch * 4, PATCH, PATCH, 3), np.uint8)
            clf.predict(probe, batch_size=batch)
            t = time.perf_counter()
            clf.predict(probe, batch_size=batch)
            bare = len(probe) / (time.perf_counter() - t)
            rows.append(
                {
                    "arch": arch,
                    "precision": precision(mixed),
                    "batch": batch,
                    "workers": workers,
                    "patches": n,
                    "model_load_s": model_s,
                    "open_s": open_s,
                    "tissue_s": tissue_s,
                    "heatmap_s": heatmap_s,
                    "total_s": open_s + tissue_s + heatmap_s,
                    "heatmap_patches_per_s": n / heatmap_s,
                    "bare_patches_per_s": bare,
                }
            )
            print_e2e(rows[-1])
    finally:
        set_mixed(False)
    release()
    return rows


# ---------------------------------------------------------------------------- reporting


def print_inference(row: dict[str, Any]) -> None:
    rates = "  ".join(f"batch {b:>3}: {r:8.1f}/s" for b, r in row["patches_per_s"].items())
    print(
        f"  {row['arch']:<20} {row['precision']:<8} {rates}   "
        f"(build {row['build_s']:.1f} s, first batch {row['first_batch_s']:.1f} s)"
    )


def print_training(row: dict[str, Any]) -> None:
    print(
        f"  {row['arch']:<20} {row['precision']:<8} {row['patches_per_s']:8.1f} patches/s "
        f"({row['steps_per_epoch']} steps of {BATCH}; first epoch with tracing/compilation "
        f"{row['first_epoch_s']:.1f} s; loss {row['final_loss']:.3f})"
    )


def print_e2e(row: dict[str, Any]) -> None:
    print(
        f"  {row['arch']} {row['precision']}, batch {row['batch']}, {row['workers']} reading "
        f"threads: {row['patches']} patches in {row['total_s']:.1f} s = open "
        f"{row['open_s']:.2f} + tissue {row['tissue_s']:.2f} + heatmap "
        f"{row['heatmap_s']:.1f} s; heatmap {row['heatmap_patches_per_s']:.0f} patches/s = "
        f"{row['heatmap_patches_per_s'] / row['bare_patches_per_s']:.2f}x the bare predictor "
        f"({row['bare_patches_per_s']:.0f}/s); model load {row['model_load_s']:.1f} s once"
    )


def print_table(results: dict[str, Any], small: int, big: int) -> None:
    """One line per network: patches/s of inference and training, float32 / mixed."""

    def cell(rows: list[dict[str, Any]], arch: str, mixed: bool, batch: int | None) -> str:
        for row in rows:
            if row["arch"] == arch and row["precision"] == precision(mixed):
                rate = row["patches_per_s"] if batch is None else row["patches_per_s"][batch]
                return f"{rate:9.0f}"
        return f"{'-':>9}"

    head = (
        f"inference b{small}",
        f"inference b{big}",
        f"training b{small}",
    )
    print(f"\n{'patches/s on one GPU':<24}" + "".join(f"{h:>20}" for h in head))
    print(f"{'network':<24}" + f"{'float32':>10}{'mixed':>10}" * len(head))
    for arch in dict.fromkeys(r["arch"] for r in results["inference"] + results["training"]):
        cells = []
        for rows, batch in (
            (results["inference"], small),
            (results["inference"], big),
            (results["training"], None),
        ):
            cells += [cell(rows, arch, False, batch), cell(rows, arch, True, batch)]
        print(f"{arch:<24}" + "".join(f"{c:>10}" for c in cells))
    for row in results["end_to_end"]:
        print(
            f"one study-size slide, {row['arch']} {row['precision']} batch {row['batch']}: "
            f"{row['total_s']:.1f} s for {row['patches']} patches"
        )


def write_json(path: str | None, results: dict[str, Any]) -> None:
    if path is None:
        return
    results["elapsed_s"] = time.perf_counter() - START
    Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet50 only, short runs")
    parser.add_argument("--archs", nargs="*", choices=(*STUDY_ARCHS, "small_cnn"), default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds (420; quick 180)")
    parser.add_argument("--big-batch", type=int, default=256, help="the larger batch (256)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (150)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches of 32 (40)")
    parser.add_argument("--slide-side", type=int, default=None, help="px (28416: ~8,600 patches)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--workdir", default=None, help="keep the drawn slide here for reruns")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument(
        "--cpu", action="store_true", help="run on the CPU anyway (checks the script, not speed)"
    )
    args = parser.parse_args()

    gpus, why = (["/physical_device:CPU:0"], "") if args.cpu else gpu_devices()
    if not gpus:
        print(f"bench_gpu: {why}; nothing to measure (skipped)")
        write_json(args.json, {"gpu": None, "skipped": why})
        return 0

    quick = args.quick
    archs = args.archs or (["resnet50"] if quick else list(STUDY_ARCHS))
    budget = Budget(args.budget or (180.0 if quick else 420.0))
    steps = args.steps or (20 if quick else 150)
    side = args.slide_side or (12288 if quick else 28416)
    batches = args.batches or (8 if quick else 40)
    runs = {BATCH: batches, args.big_batch: max(1, batches // 5)}

    import tensorflow as tf

    from cervixwsi.models import assign_gpu

    gpu = assign_gpu(0)  # one GPU: the figures are per GPU
    if args.cpu:
        gpu = name = "CPU (--cpu: a check of the script, not a GPU figure)"
    else:
        physical = tf.config.list_physical_devices("GPU")[0]
        name = tf.config.experimental.get_device_details(physical).get("device_name", gpu)
    where = name if args.cpu else f"{name} ({len(gpus)} GPU(s) visible, measuring on {gpu})"
    print(
        f"{where}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; "
        f"time budget {budget.left():.0f} s"
    )
    results: dict[str, Any] = {
        "gpu": name,
        "gpus_visible": 0 if args.cpu else len(gpus),
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
        "quick": quick,
        "inference": [],
        "end_to_end": [],
        "training": [],
    }
    n_patches = max(max(b * k for b, k in runs.items()), steps * BATCH)
    x, y = make_patches(n_patches)

    print("1. heatmap inference, PatchClassifier.predict on 256-px uint8 patches (224 input)")
    for mixed in (False, True):
        for arch in archs:
            if budget.allows(25, f"inference {arch} {precision(mixed)}"):
                results["inference"].append(inference(arch, mixed, x, runs))
                print_inference(results["inference"][-1])
                write_json(args.json, results)

    print(f"2. end to end: one study-size slide ({side} x {side} px at 0.25 µm/px)")
    e2e_arch = "resnet50" if "resnet50" in archs else archs[0]
    render_need = 60 + side * side / 20e6  # about 20 Mpx/s on 16 cores, and the run
    if budget.allows(render_need, "end to end (drawing the slide and the run)"):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.workdir or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            path, draw_s = study_slide(folder, side)
            print(f"  slide drawn in {draw_s:.0f} s (not timed below)")
            results["slide"] = {"side": side, "draw_s": draw_s}
            for mixed in (False, True):
                if budget.allows(40, f"end to end {precision(mixed)}"):
                    batches = [BATCH, args.big_batch] if not mixed else [args.big_batch]
                    rows = end_to_end(path, e2e_arch, mixed, batches, args.workers, budget)
                    results["end_to_end"].extend(rows)
                    write_json(args.json, results)

    print(f"3. training, PatchClassifier.fit: {steps} steps of {BATCH} per epoch, 2 epochs")
    xt, yt = x[: steps * BATCH], y[: steps * BATCH]
    if budget.allows(20, "training input pipeline"):
        results["pipeline_patches_per_s"] = pipeline_rate(xt, yt)
        print(
            f"  input pipeline alone (read, augment, batch): "
            f"{results['pipeline_patches_per_s']:.0f} patches/s"
        )
    for arch in archs:
        for mixed in (False, True):
            need = 150 if arch == "inception_resnet_v2" else 100
            if budget.allows(need, f"training {arch} {precision(mixed)}"):
                results["training"].append(training(arch, mixed, xt, yt))
                print_training(results["training"][-1])
                write_json(args.json, results)

    results["skipped"] = budget.skipped
    print_table(results, BATCH, args.big_batch)
    skipped = f"; skipped: {', '.join(budget.skipped)}" if budget.skipped else ""
    print(f"done in {time.perf_counter() - START:.0f} s{skipped}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
