"""A tumor-probability heatmap of a slide: generate, resume, save, export, overlay.

A small CNN is trained on patches of one synthetic tumor slide (or loaded with
``--model``: a network trained on 64-pixel patches at 1 µm/px, such as the
``patch_cnn.keras`` that ``examples/end_to_end.py`` writes), then the heatmap of
another slide is made:

* one pixel per 64 x 64 patch with at least half tissue, NaN elsewhere;
* into a zarr store, interrupted on purpose after a few batches and resumed;
* saved, exported as an 8-bit pyramidal TIFF (opens in OpenSlide and QuPath),
  and drawn over the slide with the annotated tumor outlined (the study's Fig. 5);
* again with the ONNX Runtime engine (skipped, with a one-line note, when the
  ``onnx`` extra is not installed: ``pip install 'cervixwsi[onnx]'``), and at half
  stride (overlapping patches averaged).

    python examples/heatmap.py --out heatmap-out
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cervixwsi.annotations import rasterize, read_asap_xml
from cervixwsi.errors import PredictorError
from cervixwsi.heatmap import Heatmap, HeatmapGenerator
from cervixwsi.synthetic import SyntheticSlideSpec, make_slide
from cervixwsi.tiling import PatchSampler, PatchStore

PATCH = 64  # pixels at 1 µm/px: the field of view of the study's 256 px at 0.25 µm/px
ONNX_MODULES = ("onnxruntime", "onnx", "tf2onnx")  # what the ``onnx`` extra installs


def train(out: Path) -> Any:
    """A small CNN trained for a few epochs on one synthetic tumor slide."""
    from cervixwsi.models import PatchClassifier

    spec = SyntheticSlideSpec(width=4096, height=4096, mpp=1.0, tumor=True, seed=21)
    training_slide = make_slide(spec, out / "training_slide.tif")
    sampler = PatchSampler(n_tumor=300, n_normal=300, patch_size=PATCH, seed=0)
    store = PatchStore.build(out / "patches.zarr", [training_slide], sampler, progress=False)
    clf = PatchClassifier("small_cnn", input_size=56, epochs=5, learning_rate=1e-3, seed=0)
    clf.progress = False
    return clf.fit(store)


def crash_after(clf: Any, n: int) -> None:
    """Make ``clf.predict`` fail after ``n`` calls: a crash in the middle of a run."""
    real, calls = clf.predict, [0]

    def predict(batch: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] > n:
            raise PredictorError("simulated crash")
        return np.asarray(real(batch))

    clf.predict = predict  # on the instance: the predictor stays the same object


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder, created if missing (default: a new temporary folder)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a PatchClassifier .keras file for 64-pixel patches at 1 µm/px "
        "(default: train a small CNN on a synthetic slide first)",
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi-heatmap-"))
    out.mkdir(parents=True, exist_ok=True)

    from cervixwsi.models import PatchClassifier

    clf = PatchClassifier.load(args.model) if args.model else train(out)
    model_path = clf.save(out / "patch_cnn.keras") if not args.model else args.model
    spec = SyntheticSlideSpec(width=6144, height=6144, mpp=1.0, tumor=True, seed=22)
    slide = make_slide(spec, out / "slide.tif")
    print(f"slide    {slide.path.name}: 6144 x 6144 px at 1 µm/px, {slide.n_lesions} lesions")

    # A run that crashes after 5 batches (and the store's probe batch), then the same
    # call again: it resumes where the first stopped.
    store = out / "slide_heatmap.zarr"
    shutil.rmtree(store, ignore_errors=True)  # a fresh start each time the example runs
    generator = HeatmapGenerator(clf, patch_size=PATCH, progress=False)
    crash_after(clf, 6)
    try:
        generator.generate(slide.path, out=store)
    except PredictorError as exc:
        print(f"run 1    stopped: {exc}")
    del clf.predict  # the real method again
    t = time.perf_counter()
    heat = generator.generate(slide.path, out=store)
    seconds = time.perf_counter() - t
    n = int(np.isfinite(heat.array).sum())
    print(
        f"run 2    resumed and finished: {heat.shape[1]} x {heat.shape[0]} heatmap, {n} patches "
        f"predicted ({n / seconds:.0f} patches/s incl. the first 5 batches already stored)"
    )

    # The heatmap against the annotated tumor, at its own grid.
    truth = rasterize(read_asap_xml(slide.path.with_suffix(".xml")), heat).array
    p = heat.array[heat.tissue_mask.array]
    t_in = truth[heat.tissue_mask.array]
    print(
        f"check    mean probability {p[t_in].mean():.2f} inside annotated tumor, "
        f"{p[~t_in].mean():.2f} outside ({t_in.sum()} and {(~t_in).sum()} pixels)"
    )

    # Save, load, export, draw.
    again = Heatmap.load(heat.save(out / "heatmap.zarr"))
    assert np.array_equal(again.array, heat.array, equal_nan=True)
    tif = heat.to_pyramid(out / "heatmap.tif")
    picture = heat.overlay(slide.path, max_size=1024, ground_truth=slide.tumor_mask)
    cv2.imwrite(str(out / "overlay.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"files    {again.info.slide_id} heatmap.zarr, {tif.name}, overlay.png in {out}")

    # The ONNX Runtime engine: the same heatmap within 1e-4, faster on CPUs.
    missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"engine   ONNX Runtime comparison skipped: {', '.join(missing)} not installed "
            "(pip install 'cervixwsi[onnx]')"
        )
    else:
        fast = PatchClassifier.load(model_path, engine="onnxruntime")
        if fast.engine_ != "onnxruntime":  # the export or its check failed (warned above)
            print("engine   ONNX Runtime comparison skipped: the model fell back to TensorFlow")
        else:
            t = time.perf_counter()
            heat_ort = HeatmapGenerator(fast, patch_size=PATCH, progress=False).generate(slide.path)
            seconds = time.perf_counter() - t
            diff = float(np.nanmax(np.abs(heat_ort.array - heat.array)))
            print(
                f"engine   {fast.engine_}: {n / seconds:.0f} patches/s, max |difference| {diff:.1e}"
            )

    # Half stride: four times the patches, each pixel the mean of the 4 covering it.
    half = HeatmapGenerator(clf, patch_size=PATCH, stride=PATCH // 2, progress=False)
    fine = half.generate(slide.path)
    print(
        f"stride   {PATCH // 2}: {fine.shape[1]} x {fine.shape[0]} heatmap, "
        f"{fine.info.n_predicted} patches predicted"
    )


if __name__ == "__main__":
    main()
