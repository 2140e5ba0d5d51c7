"""Inference throughput of cervixwsi's patch classifiers against bare Keras calls.

For each architecture, at batch 32 on 256-pixel uint8 patches (centre-cropped
to the model input), the script times ``PatchClassifier.predict`` and, on the
same inputs in the same run, a bare ``model(x, training=False)`` call on the
already-cropped batch (the peer). It prints both rates, the library's
overhead, and the ceiling implied by the model's FLOPs and this machine's
measured float32 matmul rate.

    python benchmarks/bench_models.py --quick            # small_cnn + resnet50, few batches
    python benchmarks/bench_models.py --batches 8 --train-steps 3
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from cervixwsi.models import ARCHITECTURES, PatchClassifier


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul rate (GFLOP/s) of this machine through TensorFlow."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))

    @tf.function
    def run(a: Any, b: Any) -> Any:
        c = a
        for _ in range(repeats):
            c = tf.matmul(c, b) * 1e-3
        return c

    run(a, b).numpy()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 * repeats / best / 1e9


def model_flops(model: Any) -> float:
    """Multiply-add FLOPs (x2) of one sample through the conv and dense layers."""
    import keras

    total = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * c * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += 2.0 * h * w * c * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def bench_arch(arch: str, size: int, batches: int, gflops: float, train_steps: int) -> None:
    import keras
    import tensorflow as tf

    patch = size + size // 7  # 256 for 224
    clf = PatchClassifier(arch, input_size=size, seed=0, progress=False).build()
    model = clf.model_
    rng = np.random.default_rng(0)
    batch = 32
    x = rng.integers(0, 256, (batches * batch, patch, patch, 3), dtype=np.uint8)
    o = (patch - size) // 2
    cropped = np.ascontiguousarray(x[:, o : o + size, o : o + size])

    t = time.perf_counter()
    clf.predict(x[:batch])  # warm-up: traces the inference function
    warm_lib = time.perf_counter() - t
    np.asarray(model(cropped[:batch], training=False))
    model.predict_on_batch(cropped[:batch])

    lib = eager = compiled = 0.0
    for i in range(batches):  # interleaved, so all three see the same machine state
        sl = slice(i * batch, (i + 1) * batch)
        t = time.perf_counter()
        clf.predict(x[sl])
        lib += time.perf_counter() - t
        t = time.perf_counter()
        np.asarray(model(cropped[sl], training=False))
        eager += time.perf_counter() - t
        t = time.perf_counter()
        model.predict_on_batch(cropped[sl])
        compiled += time.perf_counter() - t
    n = batches * batch
    peer = min(eager, compiled)
    flops = model_flops(model)
    ceiling = gflops * 1e9 / flops
    print(
        f"{arch:20s} {size:4d}px {model.count_params() / 1e6:6.2f}M params "
        f"{flops / 1e9:6.2f} GFLOP/patch, ceiling {ceiling:7.1f} patches/s\n"
        f"{'':20s} predict {n / lib:7.1f}/s | bare keras: model(x) {n / eager:7.1f}/s, "
        f"predict_on_batch {n / compiled:7.1f}/s | predict/fastest bare time "
        f"{lib / peer:5.3f} (overhead {100 * (lib / peer - 1):+.1f}%, target < +5%) | "
        f"achieved/ceiling {n / lib / ceiling:5.2f} | first predict {warm_lib:.1f}s"
    )
    if train_steps > 0:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy()
        )
        y = rng.integers(0, 2, batch)
        t = time.perf_counter()
        model.train_on_batch(cropped[:batch], y)
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(train_steps):
            model.train_on_batch(cropped[:batch], y)
        rate = train_steps * batch / (time.perf_counter() - t)
        print(
            f"{'':20s} training at batch {batch}: {rate:.1f} patches/s "
            f"(first step {first:.1f}s); 3x inference FLOPs ceiling {ceiling / 3:.1f}/s"
        )
    del tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small_cnn and resnet50, 3 batches")
    parser.add_argument("--archs", nargs="*", choices=ARCHITECTURES, default=None)
    parser.add_argument("--size", type=int, default=224, help="model input (224)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches of 32")
    parser.add_argument("--train-steps", type=int, default=0, help="timed training steps")
    args = parser.parse_args()
    archs = args.archs or (["small_cnn", "resnet50"] if args.quick else list(ARCHITECTURES))
    batches = 3 if args.quick else args.batches

    import tensorflow as tf

    gflops = matmul_gflops()
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
        f"oneDNN={os.environ['TF_ENABLE_ONEDNN_OPTS']}, float32 matmul {gflops:.0f} GFLOP/s"
    )
    for arch in archs:
        bench_arch(arch, args.size, batches, gflops, args.train_steps)


if __name__ == "__main__":
    main()
