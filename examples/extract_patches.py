"""Detect tissue, lay a patch grid, sample training patches and store them.

With no slide given, the script first draws a small synthetic tumor slide (with
its tumor mask) with :mod:`cervixwsi.synthetic`, so it runs anywhere in well
under a minute.  With a slide, it treats it as a slide without tumor annotation
(normal patches only).

Usage::

    python examples/extract_patches.py [SLIDE] [--out DIR]

It writes into ``--out`` (created if missing; default: a new temporary folder,
kept): ``tissue.png`` (the thumbnail with the tissue mask), ``tissue.npz`` (the
mask), ``patches.zarr`` (the patch store) and ``patches.png`` (a mosaic of stored
patches, tumor on the top row).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cervixwsi.slide import Slide
from cervixwsi.tiling import PatchGrid, PatchSampler, PatchStore
from cervixwsi.tissue import TissueMask, TissueMasker


def make_demo_slide(out: Path) -> Any:
    """A 6144 x 6144 synthetic tumor slide at 0.25 µm/px, with its ground truth."""
    from cervixwsi.synthetic import SyntheticSlideSpec, make_slide

    spec = SyntheticSlideSpec(width=6144, height=6144, tumor=True, seed=3)
    return make_slide(spec, out / "demo-slide.tif")


def detect_tissue(slide: Slide, out: Path) -> TissueMask:
    """Mask the tissue and save the thumbnail with the mask over it."""
    mask = TissueMasker().mask(slide)  # reads one level, works at 8 µm/px
    # Areas and pixel sizes in µm need the slide's mpp, which a slide may not record.
    area = "" if mask.area_um2 is None else f", {mask.area_um2 / 1e6:.2f} mm²"
    um = mask.pixel_size_um
    size = f"downsample {mask.downsample:g}" if um is None else f"{um:g} µm/px"
    print(f"tissue       {mask.tissue_fraction:.1%} of the slide{area}")
    print(f"             mask {mask.shape[1]} x {mask.shape[0]} px at {size}")
    boxes = mask.boxes()
    print(f"             {len(boxes)} pieces" + (f", largest {boxes[0]}" if boxes else ""))

    thumbnail = slide.get_thumbnail((512, 512))
    h, w = thumbnail.shape[:2]
    on_thumbnail = mask.at_downsample(slide.dimensions[0] / w).array[:h, :w]
    shown = thumbnail.copy()
    shown[~on_thumbnail] //= 3  # darken what is not tissue
    cv2.imwrite(
        str(out / "tissue.png"), cv2.cvtColor(np.hstack([thumbnail, shown]), cv2.COLOR_RGB2BGR)
    )
    mask.save(out / "tissue.npz")  # TissueMask.load(...) reads it back
    return mask


def lay_grid(slide: Slide, mask: TissueMask) -> None:
    """The regular grid of 256-pixel level-0 patches with at least half tissue."""
    coords = PatchGrid(patch_size=256, min_tissue=0.5).coords(slide, mask)
    rows, cols = coords.grid_shape or (0, 0)
    print(f"grid         {len(coords)} of {rows * cols} patches have >= 50 % tissue")
    print(
        f"             first at level-0 ({coords.x[0]}, {coords.y[0]}), grid cell "
        f"({coords.rows[0]}, {coords.cols[0]}), tissue {coords.tissue[0]:.2f}"
    )


def build_store(items: list[Any], masks: list[TissueMask], out: Path) -> PatchStore:
    """Sample training patches as in the study (scaled down) and extract them."""
    sampler = PatchSampler(n_tumor=100, n_normal=50, n_normal_normal_slide=50, seed=0)
    store = PatchStore.build(
        out / "patches.zarr", items, sampler, tissue_masks=masks, workers=2, progress=False
    )
    counts = np.bincount(store.labels, minlength=2)
    print(
        f"patch store  {len(store)} patches of {store.patch_size} px: "
        f"{counts[1]} tumor, {counts[0]} normal -> {store.path}"
    )
    return store


def save_mosaic(store: PatchStore, out: Path) -> None:
    """Eight tumor patches over eight normal ones, read back from the store."""
    rows = []
    for label in (1, 0):
        picked = np.flatnonzero(store.labels == label)[:8]
        if len(picked):
            tiles = store.read(picked)
            rows.append(np.hstack(list(tiles) + [np.full_like(tiles[0], 255)] * (8 - len(tiles))))
    if rows:
        mosaic = cv2.resize(np.vstack(rows), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "patches.png"), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    batch, labels = next(store.iter_batches(32, shuffle=True, seed=0))
    print(f"a batch      {batch.shape} {batch.dtype}, labels {labels[:8].tolist()}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "slide",
        nargs="?",
        type=Path,
        help="a slide, treated as normal (default: a synthetic tumor slide written into OUT)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder, created if missing (default: a new temporary folder)",
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi-patches-"))
    out.mkdir(parents=True, exist_ok=True)
    item: Any = args.slide if args.slide is not None else make_demo_slide(out)
    path = item if isinstance(item, Path) else item.path
    with Slide(path) as slide:
        print(
            f"slide        {slide.name}: {slide.dimensions[0]} x {slide.dimensions[1]} px, "
            f"{slide.level_count} levels, mpp {slide.mpp}"
        )
        mask = detect_tissue(slide, out)
        lay_grid(slide, mask)
    store = build_store([item], [mask], out)
    save_mosaic(store, out)
    print(f"images       {out / 'tissue.png'}, {out / 'patches.png'}")


if __name__ == "__main__":
    main()
