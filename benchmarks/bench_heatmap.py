"""Benchmark: the heatmap pipeline against its bare predictor, and ONNX Runtime against TF.

On synthetic tumor slides (JPEG pyramidal TIFFs made by
:func:`cervixwsi.synthetic.make_slide`), in the same run:

1. **Peak memory for two slide sizes.** ``generate`` in a fresh child process
   per slide (peak RSS, ``VmHWM``) with a cheap NumPy predictor, so the figure
   is the pipeline's own memory: the imports, the slide's decoded-tile cache
   (48 MiB at most), the batches read ahead (``prefetch + 1`` batches) and the
   heatmap.  It should not grow with the slide.
2. **Pipeline vs bare predictor.** ``HeatmapGenerator.generate`` (opening the
   slide, tissue mask, grid, background reads and decoding into preallocated
   batches, the predictor, assembly) against the same predictor called on the
   very same batches already in memory.  Target: >= 0.9x, i.e. reading hides
   behind inference.  For the small CNN and for ResNet50 (random weights: speed
   does not depend on them), each on a slide sized to bound the run; the ratio
   is the median over ``--rounds`` adjacent pairs (pipeline and bare in
   alternating order).
3. **ONNX Runtime vs TensorFlow.** ``PatchClassifier(engine="onnxruntime")``
   against ``engine="tensorflow"`` on the same in-memory batches (the one-off
   export time is printed apart).  Target >= 1.25x on ResNet50.

    python benchmarks/bench_heatmap.py --quick      # ~3 minutes on 2 cores
    python benchmarks/bench_heatmap.py              # larger slides, more patches
    python benchmarks/bench_heatmap.py --only pipeline --rounds 5   # part 2 alone

The ratios are measured in one run, the pipeline and the bare predictor in adjacent
pairs, so other load on the machine slows both; it still adds noise (the load average
is printed at the start and the end).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt
from _memory import peak_rss_mib

from cervixwsi.heatmap import HeatmapGenerator
from cervixwsi.synthetic import SyntheticSlideSpec, make_slide

PATCH = 256


def slide(directory: Path, side: int, seed: int = 5) -> Path:
    """A synthetic tumor slide of ``side`` x ``side`` level-0 pixels at 0.25 µm/px."""
    path = directory / f"slide_{side}.tif"
    if not path.exists():
        spec = SyntheticSlideSpec(width=side, height=side, tumor=True, seed=seed)
        make_slide(spec, path, annotations=False)
    return path


class Recorder:
    """Passes batches to a predictor and keeps a copy of each (the bare run's input)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.batches: list[npt.NDArray[np.uint8]] = []

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.batches.append(batch.copy())
        return np.asarray(self.predictor.predict(batch), dtype=np.float32)


def bare_rate(predictor: Any, batches: list[npt.NDArray[np.uint8]]) -> float:
    t = time.perf_counter()
    for b in batches:
        predictor.predict(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t)


def pipeline_vs_bare(arch: str, path: Path, rounds: int) -> None:
    """Print the pipeline's rate, the bare predictor's, and their ratio.

    ``rounds`` pairs of runs, the pair's order alternating (pipeline first, then bare
    first, ...); each pair gives a ratio, and the median of those is reported, so that a
    change of the machine's load between the two halves of one pair moves one ratio, not
    the figure.  The best rate of each side is printed too.
    """
    from cervixwsi.models import PatchClassifier

    clf = PatchClassifier(arch, input_size=224, seed=0, progress=False).build()
    recorder = Recorder(clf)
    HeatmapGenerator(recorder, progress=False).generate(path)  # warm-up, records the batches
    n = sum(len(b) for b in recorder.batches)
    gen = HeatmapGenerator(clf, progress=False)

    def pipeline() -> float:
        t = time.perf_counter()
        heat = gen.generate(path)
        assert int(np.isfinite(heat.array).sum()) == n
        return n / (time.perf_counter() - t)

    pipe, bare = [], []
    for i in range(rounds):
        if i % 2 == 0:
            pipe.append(pipeline())
            bare.append(bare_rate(clf, recorder.batches))
        else:
            bare.append(bare_rate(clf, recorder.batches))
            pipe.append(pipeline())
    ratio = float(np.median([p / b for p, b in zip(pipe, bare, strict=True)]))
    print(
        f"{arch:>10} on {path.name}: {n} patches; pipeline {max(pipe):7.1f} patches/s, "
        f"bare predictor {max(bare):7.1f} patches/s (best of {rounds}) -> ratio {ratio:.2f} "
        f"(median of {rounds} pairs; target >= 0.9)"
    )


def onnx_vs_tensorflow(arch: str, n_batches: int) -> None:
    from cervixwsi.models import PatchClassifier

    rng = np.random.default_rng(0)
    batches = [
        rng.integers(0, 256, (32, PATCH, PATCH, 3), dtype=np.uint8) for _ in range(n_batches)
    ]
    tf_clf = PatchClassifier(arch, input_size=224, seed=0, progress=False).build()
    tf_clf.predict(batches[0])  # trace the graph
    with tempfile.TemporaryDirectory() as tmp:
        saved = tf_clf.save(Path(tmp) / f"{arch}.keras")
        t = time.perf_counter()
        ort_clf = PatchClassifier.load(saved, engine="onnxruntime")
        export_s = time.perf_counter() - t
        assert ort_clf.engine_ == "onnxruntime", "fell back to TensorFlow"
        ort_clf.predict(batches[0])
        diff = float(np.max(np.abs(ort_clf.predict(batches[0]) - tf_clf.predict(batches[0]))))
        tf_rates, ort_rates = [], []
        for _ in range(2):
            tf_rates.append(bare_rate(tf_clf, batches))
            ort_rates.append(bare_rate(ort_clf, batches))
    t_, o = max(tf_rates), max(ort_rates)
    print(
        f"{arch:>10}: TensorFlow {t_:7.1f} patches/s, ONNX Runtime {o:7.1f} patches/s -> "
        f"{o / t_:.2f}x (target >= 1.25 on resnet50); max |dp| {diff:.1e}; "
        f"export + check {export_s:.0f} s once"
    )


class Redness:
    """A cheap predictor: the mean red channel (keeps the model out of the memory figure)."""

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (batch[..., 0].mean(axis=(1, 2)) / 255).astype(np.float32)


def child_memory(path: str) -> None:
    """Run in a fresh process: generate one heatmap, print patches and peak RSS (MiB)."""
    if path == "-":  # the imports alone
        print(0, f"{peak_rss_mib():.0f}")
        return
    heat = HeatmapGenerator(Redness(), progress=False).generate(path)
    print(int(np.isfinite(heat.array).sum()), f"{peak_rss_mib():.0f}")


def memory(paths: list[Path]) -> None:
    rows = []
    for path in ["-", *paths]:
        out = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append((Path(path).name, int(out[0]), float(out[1])))
    print(f"   imports alone: peak RSS {rows[0][2]:5.0f} MiB")
    for name, n, peak in rows[1:]:
        print(f"   {name}: {n:6d} patches predicted, peak RSS {peak:5.0f} MiB")
    (_, n0, m0), (_, n1, m1) = rows[1], rows[-1]
    print(f"   {n1 / n0:.1f}x the patches, {m1 / m0:.2f}x the peak memory (flat: ~1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller slides and fewer batches")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pipeline/bare pairs per network (default 3)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("memory", "pipeline", "onnx"),
        help="run only this part (repeatable; default: all three)",
    )
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory)
        return
    small = 6144 if args.quick else 12288  # the small CNN's slide
    resnet_side = 3072 if args.quick else 5120
    # Two sizes past the point where the slide's decoded-tile cache (48 MiB) is full.
    memory_sides = (12288, 24576) if args.quick else (24576, 49152)
    parts = set(args.only or ("memory", "pipeline", "onnx"))
    print(f"load average {load()} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-heatmap-") as tmp:
        d = Path(tmp)
        if "memory" in parts:
            print("1. peak memory of generate() for two slide sizes (cheap predictor)")
            memory([slide(d, side) for side in memory_sides])
        if "pipeline" in parts:
            print("2. pipeline vs bare predictor (same batches, in memory)")
            pipeline_vs_bare("small_cnn", slide(d, small), args.rounds)
            pipeline_vs_bare("resnet50", slide(d, resnet_side), args.rounds)
        if "onnx" in parts:
            print("3. ONNX Runtime vs TensorFlow (batch 32, 256 px patches, 224 px input)")
            onnx_vs_tensorflow("small_cnn", 8 if args.quick else 16)
            onnx_vs_tensorflow("resnet50", 3 if args.quick else 8)
    print(f"load average {load()} (the machine's, other work included)")


def load() -> str:
    """The 1-, 5- and 15-minute load averages, or "unknown"."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - platforms without it
        return "unknown"


if __name__ == "__main__":
    main()
