"""Open a pyramidal slide, print its levels and resolution, and save a thumbnail.

With no slide given, the script first writes a small synthetic H&E-looking
pyramid (a tiled JPEG TIFF with three levels, 0.25 µm per pixel) with tifffile,
so it runs anywhere.

Usage::

    python examples/open_slide.py [SLIDE] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

from cervixwsi.slide import Slide

MPP = 0.25  # level-0 micrometres per pixel of the synthetic slide (a 40x scan)


def synthetic_he(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Pink stroma with purple nuclei-like blobs on white glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    tissue = ((xx - width / 2) / (0.42 * width)) ** 2 + ((yy - height / 2) / (0.4 * height)) ** 2
    image = np.full((height, width, 3), 242, np.float32)
    image[tissue < 1] = (232, 170, 200)  # eosin pink
    for x, y in rng.integers(0, [width, height], (400, 2)):
        if tissue[y, x] < 1:
            cv2.circle(image, (int(x), int(y)), int(rng.integers(4, 9)), (110, 60, 150), -1)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_slide(path: Path) -> Path:
    """A 3-level tiled JPEG TIFF: levels are successive reduced-resolution pages."""
    level0 = synthetic_he(1536, 2048)
    pixels_per_cm = 1e4 / MPP
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            level0,
            tile=(256, 256),
            compression="jpeg",
            photometric="rgb",
            resolution=(pixels_per_cm, pixels_per_cm),
            resolutionunit="CENTIMETER",
        )
        for factor in (4, 16):
            h, w = level0.shape[0] // factor, level0.shape[1] // factor
            level = cv2.resize(level0, (w, h), interpolation=cv2.INTER_AREA)
            tif.write(level, tile=(256, 256), compression="jpeg", subfiletype=1)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "slide",
        nargs="?",
        type=Path,
        help="a slide file (default: a small synthetic slide written into OUT)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for the thumbnail, created if missing "
        "(default: a new temporary folder)",
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi-"))
    out.mkdir(parents=True, exist_ok=True)
    path = args.slide or write_synthetic_slide(out / "synthetic.tif")

    with Slide(path) as slide:
        print(f"slide        {slide.name} ({path})")
        print(f"levels       {slide.level_count}")
        for level, (dims, d) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            print(f"  level {level}    {dims[0]} x {dims[1]} px, downsample {d:.4f}")
        mpp = "unknown" if slide.mpp is None else f"{slide.mpp[0]:.4f} x {slide.mpp[1]:.4f} µm/px"
        print(f"mpp          {mpp}")
        print(f"objective    {slide.objective_power or 'unknown'}")
        print(f"associated   {', '.join(slide.associated_images) or 'none'}")

        # A region: (x, y) in level-0 pixels, size in pixels of the level read.
        width, height = slide.dimensions
        region = slide.read_region((width // 2 - 128, height // 2 - 128), 0, (256, 256))
        print(f"centre patch {region.shape} {region.dtype}, mean RGB {region.mean(axis=(0, 1))}")
        if slide.mpp is not None:
            at_2um = slide.read_region_at_mpp((0, 0), (256, 256), mpp=2.0)
            print(f"at 2 µm/px   {at_2um.shape} from level {slide.level_for_mpp(2.0)}")

        thumbnail = slide.get_thumbnail((512, 512))
    thumb_path = out / f"{slide.name}_thumbnail.png"
    cv2.imwrite(str(thumb_path), cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR))  # cv2 wants BGR
    print(f"thumbnail    {thumbnail.shape[1]} x {thumbnail.shape[0]} -> {thumb_path}")


if __name__ == "__main__":
    main()
