"""Evaluate two models as the study's Table 3 and Fig. 4 do: ROC AUC with CIs, FROC.

Everything is synthetic and made here, so the script runs anywhere in seconds:

* slide-level scores of two "models" on 160 slides -> ROC curves, AUCs with DeLong
  and bootstrap 95% CIs, and the paired DeLong test of the two AUCs;
* tumor masks of 40 slides (half normal) and, per model, tumor-probability heatmaps
  with one pixel per 256x256 patch -> detections (:func:`detect_lesions`) ->
  Camelyon16 FROC (:class:`FROCEvaluator`), in both protocols;
* the same FROC with the ground truth read from annotation files (ASAP XML), the
  way a pathologist's outlines are evaluated;
* ``roc.png`` and ``froc.png`` in ``--out``.

    python examples/evaluate.py --out figures/
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from cervixwsi.annotations import annotations_from_mask, read_asap_xml, write_asap_xml
from cervixwsi.geometry import Raster
from cervixwsi.metrics import (
    FROCEvaluator,
    FROCResult,
    auc_ci,
    compare_auc,
    detect_lesions,
    format_p_value,
    roc_curve,
)
from cervixwsi.plotting import plot_froc, plot_roc

MPP = 0.25  # level-0 µm per pixel (40x)
LEVEL5 = 2**5  # evaluation-mask downsample
SIDE = 256  # evaluation-mask side in level-5 pixels: slides of 8192 x 8192 level-0 pixels
PATCH = 256  # heatmap downsample: one pixel per 256 x 256 patch


def slide_scores(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Slide labels and two models' scores: a good one and a noisier one."""
    y = np.r_[np.zeros(80), np.ones(80)].astype(int)
    signal = rng.normal(size=160) + 3.2 * y
    return y, {
        "Ensemble": 1 / (1 + np.exp(-signal)),
        "ResNet50": 1 / (1 + np.exp(-(signal + rng.normal(scale=1.6, size=160)))),
    }


def tumor_mask(rng: np.random.Generator) -> np.ndarray:
    """A level-5 mask with a few lesions of 60 µm to 2 mm."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    mask = np.zeros((SIDE, SIDE), bool)
    for _ in range(rng.integers(2, 7)):
        cy, cx = rng.integers(20, SIDE - 20, 2)
        ry, rx = rng.uniform(2, 40, 2)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return mask


def heatmap(rng: np.random.Generator, truth: Raster, noise: float) -> Raster:
    """A model's heatmap: the tumor fraction of each patch, blurred, with false alarms."""
    fraction = truth.resample(PATCH, method="area").array
    p = ndimage.gaussian_filter(fraction, 0.7) * rng.uniform(0.6, 1.0)
    p += noise * rng.random(p.shape) ** 12  # rare bright false alarms
    return Raster(np.clip(p, 0, 1), PATCH, truth.slide_dimensions, mpp=MPP)


def write_annotation_files(ground_truth: dict[str, Raster | None], folder: Path) -> dict[str, Path]:
    """Outline each tumor mask as polygons in an ASAP XML file, as a pathologist's file is."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for sid, truth in ground_truth.items():
        if truth is not None:
            paths[sid] = folder / f"{sid}.xml"
            write_asap_xml(annotations_from_mask(truth), paths[sid])
    return paths


def froc_from_annotation_files(
    paths: dict[str, Path],
    slide_ids: list[str],
    detections: dict[str, np.ndarray],
    dimensions: tuple[int, int],
) -> FROCResult:
    """FROC against annotation files: an AnnotationSet draws itself on the evaluation grid."""
    ground_truth = {sid: read_asap_xml(paths[sid]) if sid in paths else None for sid in slide_ids}
    evaluator = FROCEvaluator(progress=False)
    return evaluator.evaluate(
        ground_truth,  # read_geojson(...) for QuPath files; None for a normal slide
        detections,
        mpp=MPP,  # level-0 µm per pixel: cervixwsi.geometry.slide_mpp(slide)
        slide_dimensions=dict.fromkeys(paths, dimensions),  # level-0 (width, height)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNG figures")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the simulated heatmaps (default 0)"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi_evaluate_"))
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    # --- slide level: ROC, AUC with CIs, paired DeLong test (Table 3, Fig. 4a) ---------
    y, scores = slide_scores(rng)
    curves = {name: roc_curve(y, s) for name, s in scores.items()}
    print("model       AUC    DeLong 95% CI     bootstrap 95% CI")
    for name, s in scores.items():
        d = auc_ci(y, s)
        b = auc_ci(y, s, method="bootstrap", n_bootstrap=2000, seed=args.seed)
        print(
            f"{name:10s}  {d.auc:.3f}  [{d.low:.3f}, {d.high:.3f}]    [{b.low:.3f}, {b.high:.3f}]"
        )
    c = compare_auc(scores["Ensemble"], scores["ResNet50"], y)
    print(
        f"Ensemble - ResNet50: {c.difference:+.3f} "
        f"(95% CI {c.low:+.3f} to {c.high:+.3f}), z = {c.z:.2f}, {format_p_value(c.p_value)}"
    )

    # --- lesion level: heatmaps -> detections -> FROC (Table 3, Fig. 4b) ----------------
    dims = (SIDE * LEVEL5, SIDE * LEVEL5)
    ground_truth: dict[str, Raster | None] = {}
    for i in range(40):
        ground_truth[f"slide_{i:02d}"] = (
            Raster(tumor_mask(rng), LEVEL5, dims, mpp=MPP) if i % 2 == 0 else None
        )
    empty = Raster(np.zeros((SIDE, SIDE), bool), LEVEL5, dims, mpp=MPP)
    results = {}
    all_detections = {}
    for name, noise in (("Ensemble", 0.8), ("ResNet50", 0.97)):
        detections = {
            sid: detect_lesions(heatmap(rng, gt if gt is not None else empty, noise))
            for sid, gt in ground_truth.items()
        }
        all_detections[name] = detections
        for protocol in ("camelyon16", "strict"):
            evaluator = FROCEvaluator(protocol=protocol, progress=False)
            r = evaluator.evaluate(ground_truth, detections)
            print(
                f"{name:10s} FROC ({protocol:10s}) = {r.score:.3f}  sensitivities at "
                f"{', '.join(f'{f:g}' for f in r.eval_fps)} FPs/slide: "
                f"{np.array2string(r.eval_sensitivities, precision=2)}"
            )
            if protocol == "camelyon16":
                results[name] = r
    n_lesions = results["Ensemble"].n_lesions
    n_itc = sum(s.itc_labels.size for s in results["Ensemble"].slides)
    print(f"{n_lesions} lesions to detect on 20 tumor slides ({n_itc} ITC regions excluded)")

    # --- ground truth from annotation files -------------------------------------------
    paths = write_annotation_files(ground_truth, out / "annotations")
    from_files = froc_from_annotation_files(
        paths, list(ground_truth), all_detections["Ensemble"], dims
    )
    same = from_files.score == results["Ensemble"].score
    print(f"Ensemble FROC from {len(paths)} ASAP XML files = {from_files.score:.3f} (same: {same})")

    # --- figures ---------------------------------------------------------------------
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
    plot_roc(curves, ax=left)
    plot_froc(results, ax=right)
    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=120)
    plot_roc(curves).figure.savefig(out / "roc.png", dpi=120)
    plot_froc(results).figure.savefig(out / "froc.png", dpi=120)
    plt.close("all")
    print(f"figures: {out / 'roc.png'}, {out / 'froc.png'}, {out / 'evaluation.png'}")


if __name__ == "__main__":
    main()
