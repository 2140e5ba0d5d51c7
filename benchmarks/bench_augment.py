"""Cost of stain augmentation in training: epoch time with and without it.

Trains the small CNN with :class:`cervixwsi.models.PatchClassifier` (its ``tf.data``
pipeline: parallel reads, stateless augmentation drawn per patch and applied per batch,
prefetch) on synthetic H&E
patches, once with the study's geometric augmentation only (``Augmentation()``) and
once with the full stain and colour jitter on top (``Augmentation.stain()``: HED,
brightness, contrast, saturation, hue).  The time of each epoch is taken from the
training log (the first epoch, which includes graph tracing, is left out); runs
alternate between the two settings to share the machine's drift.  It prints the
median epoch time of each and their ratio (the goal of issue 16: at most 1.10).

With ``--pipeline`` it also times the input pipeline alone (the training's
``tf.data`` pipeline iterated without a model: patches per second and CPU
milliseconds per batch, for no augmentation, geometry only and the stain setting),
the augmentation's own cost whatever else loads the machine.

    python benchmarks/bench_augment.py --quick                    # CI size, ~1 min
    python benchmarks/bench_augment.py --patches 2048 --size 128 --epochs 4 --rounds 2
    python benchmarks/bench_augment.py --pipeline                 # also the pipeline alone
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from typing import Any

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from cervixwsi.models import Augmentation, PatchClassifier
from cervixwsi.synthetic import SyntheticSlideSpec, render_region


class _EpochClock(logging.Handler):
    """Records the time of each "epoch k/n" line the training logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ends: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("epoch "):
            self.ends.append(time.perf_counter())


def synthetic_patches(n: int, side: int, seed: int = 0) -> tuple[Any, Any]:
    """``n`` H&E patches of ``side`` pixels cut from synthetic slides, with 0/1 labels."""
    per_row = 8
    rows = -(-n // per_row)
    spec = SyntheticSlideSpec(width=4096, height=4096, seed=seed, n_nests=20)
    region = render_region(spec, 1024, 1024, per_row * side, rows * side)
    tiles = region.reshape(rows, side, per_row, side, 3).swapaxes(1, 2).reshape(-1, side, side, 3)
    labels = np.random.default_rng(seed).integers(0, 2, len(tiles))
    return np.ascontiguousarray(tiles[:n]), labels[:n]


def epoch_times(aug: Augmentation, data: tuple[Any, Any], size: int, epochs: int) -> list[float]:
    """Seconds of epochs 2..E of one training run (epoch 1 includes tracing)."""
    clock = _EpochClock()
    log = logging.getLogger("cervixwsi.models._training")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(clock)
    try:
        clf = PatchClassifier(
            "small_cnn", input_size=size, epochs=epochs, augmentation=aug, seed=0, progress=False
        )
        clf.fit(data)
    finally:
        log.removeHandler(clock)
        log.setLevel(level)
    return [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]


def pipeline_rate(
    aug: Augmentation | None, data: tuple[Any, Any], size: int, passes: int = 3
) -> tuple[float, float]:
    """Patches per second and CPU ms per batch of the training pipeline alone.

    Iterates the ``tf.data`` pipeline :meth:`PatchClassifier.fit` trains from, without
    a model (the first pass, which includes tracing, is left out).
    """
    from cervixwsi.models import ArrayPatchSource
    from cervixwsi.models._data import source_dataset

    source = ArrayPatchSource(*data)
    ds, steps = source_dataset(
        source, batch_size=32, size=size, augmentation=aug, seed=0, epochs=passes + 1
    )
    batches = iter(ds)
    for _ in range(steps):
        next(batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(passes * steps):
        next(batches)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return passes * len(source) / wall, 1000 * cpu / (passes * steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=1024)
    parser.add_argument("--size", type=int, default=96, help="model input side")
    parser.add_argument("--epochs", type=int, default=4, help="per run (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting")
    parser.add_argument("--quick", action="store_true", help="CI size: 256 patches of 64")
    parser.add_argument(
        "--pipeline", action="store_true", help="also time the input pipeline without a model"
    )
    args = parser.parse_args()
    if args.quick:
        args.patches, args.size, args.epochs, args.rounds = 256, 64, 3, 1
    patch = args.size + args.size // 7
    data = synthetic_patches(args.patches, patch)
    settings = {"geometric": Augmentation(), "stain": Augmentation.stain()}
    print(
        f"small_cnn, {args.patches} patches of {patch} px cropped to {args.size}, batch 32, "
        f"{args.epochs} epochs x {args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    print(f"stain setting: {settings['stain']}")
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for name, aug in settings.items():
            times[name] += epoch_times(aug, data, args.size, args.epochs)
    median = {k: statistics.median(v) for k, v in times.items()}
    for name in settings:
        spread = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:>10}: median epoch {median[name]:.3f} s  ({spread})")
    ratio = median["stain"] / median["geometric"]
    print(f"ratio stain / geometric: {ratio:.3f}  (goal <= 1.10)")
    if args.pipeline:
        print("input pipeline alone (no model):")
        for name, aug in {"none": None, **settings}.items():
            rate, cpu = pipeline_rate(aug, data, args.size)
            print(f"{name:>10}: {rate:8.0f} patches/s, {cpu:6.1f} ms CPU per batch of 32")


if __name__ == "__main__":
    main()
