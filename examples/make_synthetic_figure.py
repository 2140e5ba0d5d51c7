"""Make the docs figure: a synthetic tumor slide's thumbnail and two 256x256 level-0 crops.

Writes a 12000 x 12000 synthetic tumor slide (3 x 3 mm at 0.25 µm/px) into a
temporary directory, reads it back like any slide, and saves a PNG with the
thumbnail (tumor mask outlined) and one crop inside a tumor nest and one in
normal tissue (stroma and epithelium).

Run::

    python examples/make_synthetic_figure.py --out docs/_static

It writes ``synthetic_example.png`` into ``--out`` (created if missing; default:
the current folder).
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

from cervixwsi.slide import Slide
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, make_slide


def crop_centre(
    mask: np.ndarray, downsample: float, erode: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Level-0 top-left corner of a 256x256 crop well inside ``mask``."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((erode, erode), np.uint8)) > 0
    rows, cols = np.nonzero(inner if inner.any() else mask)
    i = rng.integers(rows.size)
    return int((cols[i] + 0.5) * downsample) - 128, int((rows[i] + 0.5) * downsample) - 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(),
        help="output folder, created if missing; the figure is OUT/synthetic_example.png "
        "(default: the current folder)",
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


if __name__ == "__main__":
    main()
