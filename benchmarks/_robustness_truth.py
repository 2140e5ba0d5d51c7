"""What the synthetic generator drew, for ``bench_robustness.py``: under detections, in masks."""

from __future__ import annotations

import ast
import functools

import numpy as np
import tifffile

from cervixwsi.geometry import Raster
from cervixwsi.heatmap import Heatmap
from cervixwsi.slide import Slide
from cervixwsi.synthetic import CohortRow, SlideLayout, SyntheticSlideSpec, make_layout
from cervixwsi.tissue import ArtifactMasker, TissueMasker


def layout_of(row: CohortRow) -> SlideLayout:
    """The ground truth of a synthetic slide: the layout of the spec in its TIFF description."""
    return _layout(str(row.path))


@functools.lru_cache(maxsize=64)
def _layout(path: str) -> SlideLayout:
    """One layout per slide file: the tables, site counts and hidden lesions share it."""
    with tifffile.TiffFile(path) as tif:
        text = str(tif.pages[0].description)
    return make_layout(SyntheticSlideSpec(**ast.literal_eval(text[text.index("{") :])))


def artifacts_kept(rows: list[CohortRow], masker: TissueMasker) -> dict[str, list[int]]:
    """Per drawn artifact: ``[pixels left in the mask, pixels in the plain mask]`` (all slides).

    The plain mask is ``masker``'s thresholds with nothing removed (as in
    ``bench_artifacts.py``); both on the layout's grid.
    """
    plain = TissueMasker(artifacts=ArtifactMasker(causes=()))
    out: dict[str, list[int]] = {}
    for row in rows:
        layout = layout_of(row)
        d = layout.tissue_mask.downsample
        with Slide(row.path) as slide:
            kept = np.asarray(plain.mask(slide).resample(d).array, bool)
            final = np.asarray(masker.mask(slide).resample(d).array, bool)
        for name, truth in layout.artifact_masks().items():
            h, w = (min(a, b) for a, b in zip(kept.shape, truth.array.shape, strict=True))
            on = truth.array[:h, :w] & kept[:h, :w]
            tally = out.setdefault(name, [0, 0])
            tally[0] += int((on & final[:h, :w]).sum())
            tally[1] += int(on.sum())
    return out


#: What the generator drew at a heatmap pixel, checked in this order (the first that holds).
SITES = (
    "pen",
    "dust",
    "fold",
    "blur",
    "mimic",
    "basal island",
    "crush/cautery",
    "lymphocytes",
    "epithelium",
    "stroma",
    "glass",
)


def false_positive_sites(
    rows: list[CohortRow], maps: dict[str, Heatmap], threshold: float = 0.9
) -> dict[str, int]:
    """Heatmap pixels >= ``threshold`` outside the tumor, by what the generator drew there.

    The synthetic ground truth (``make_layout`` of the spec written in each slide's TIFF
    description) at each pixel's centre: an artifact, a mimic island, a lymphocyte
    cluster, an island of tangentially cut basal epithelium, a crushed or cauterised
    edge, epithelium, stroma, or no tissue.  Pixels over tumor are left out.
    """
    from cervixwsi.synthetic._layout import F

    counts = dict.fromkeys(SITES, 0)
    for row in rows:
        heat = maps[row.slide_id]
        ys, xs = np.nonzero(np.nan_to_num(np.asarray(heat.array, np.float64)) >= threshold)
        if not ys.size:
            continue
        layout = layout_of(row)
        d = layout.tissue_mask.downsample
        rows_, cols_ = layout.fields.shape[:2]
        u = np.minimum(((xs + 0.5) * heat.downsample / d).astype(int), cols_ - 1)
        v = np.minimum(((ys + 0.5) * heat.downsample / d).astype(int), rows_ - 1)
        f = layout.fields[v, u]
        artifacts = {k: m.array[v, u] for k, m in layout.artifact_masks().items()}
        left = f[:, F.TUMOR] <= 0.5
        tests = [artifacts.get(name, np.zeros_like(left)) for name in SITES[:4]] + [
            f[:, F.MIMIC] > 0.5,
            f[:, F.BASALOID] > 0.5,
            np.abs(f[:, F.CRUSH]) > 0.5,
            f[:, F.LYMPH] > 0.3,
            (f[:, F.SDF] > 0) & (f[:, F.DEPTH] < 1.05),
            f[:, F.SDF] > 0,
            np.ones_like(left),
        ]
        for name, hit in zip(SITES, tests, strict=True):
            counts[name] += int((left & hit).sum())
            left &= ~hit
    return counts


#: Drawn artifacts that hide the tissue under them from any detector.
HIDING = ("blur", "fold", "pen")


def hidden_tissue(rows: list[CohortRow]) -> dict[str, Raster | None]:
    """Per tumor slide, where the generator drew blur, a fold or ink (``None``: nothing).

    For ``FROCEvaluator.evaluate(unreadable=...)``: a lesion at least half under them
    cannot be seen by any detector (the artifact masker removes that tissue), so the
    FROC over the others separates what the shift hides from what it confuses.
    """
    out: dict[str, Raster | None] = {}
    for row in rows:
        masks = layout_of(row).artifact_masks() if row.label == "tumor" else {}
        hiding = [masks[name] for name in HIDING if name in masks]
        if not hiding:
            out[row.slide_id] = None
            continue
        union = np.logical_or.reduce([m.array for m in hiding])
        out[row.slide_id] = hiding[0].with_array(union)
    return out
