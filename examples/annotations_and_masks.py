"""Read tumor annotations, draw them as masks, and store a mask as a pyramidal slide.

With no annotation file given, the script first writes a small Camelyon16-style
ASAP XML file (two tumor regions, one with an exclusion region inside), so it
runs anywhere.  It then

1. reads the annotations (ASAP XML or QuPath GeoJSON, by file extension),
2. rasterises the tumor class at one pixel per 256-pixel patch and at a
   finer downsample of 16,
3. converts them to GeoJSON for QuPath,
4. traces the fine mask back into polygons (exactly), and
5. writes the fine mask as a pyramidal TIFF that OpenSlide or QuPath open.

Usage::

    python examples/annotations_and_masks.py [ANNOTATIONS] [--width W --height H] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cervixwsi.annotations import (
    Annotation,
    AnnotationSet,
    annotations_from_mask,
    rasterize,
    read_asap_xml,
    read_geojson,
    write_asap_xml,
    write_geojson,
)
from cervixwsi.slide import write_pyramid

MPP = 0.25  # level-0 micrometres per pixel (a 40x scan)


def write_example_annotations(path: Path) -> Path:
    """A Camelyon16-style file: two tumor regions, an exclusion region inside one."""
    theta = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    blob = np.column_stack([np.cos(theta), np.sin(theta)]) * (1 + 0.15 * np.sin(5 * theta))[:, None]
    tumor_a = Annotation(blob * 3000 + (8000, 6000), label="tumor", name="Tumor A")
    tumor_b = Annotation(blob * 1200 + (15000, 11000), label="tumor", name="Tumor B")
    necrosis = Annotation(blob * 900 + (8300, 6200), label="exclusion", name="Necrosis")
    write_asap_xml([tumor_a, tumor_b, necrosis], path)
    return path


def read_annotations(path: Path) -> AnnotationSet:
    """ASAP XML or QuPath GeoJSON, by extension."""
    if path.suffix.lower() in (".geojson", ".json"):
        return read_geojson(path)
    return read_asap_xml(path)


def main(path: Path, dimensions: tuple[int, int], out: Path) -> None:
    annotations = read_annotations(path)
    print(f"{len(annotations)} annotations, labels {annotations.labels}")
    print(f"tumor area {annotations.area('tumor') * MPP**2 / 1e6:.2f} mm² (before exclusions)")

    # One pixel per 256x256 patch: the grid of the study's heatmaps.
    width, height = dimensions
    patches = rasterize(
        annotations, (-(-height // 256), -(-width // 256)), 256, slide_dimensions=dimensions
    )
    print(f"patch grid {patches.shape}: {int(patches.array.sum())} tumor patches")

    fine = rasterize(
        annotations, (-(-height // 16), -(-width // 16)), 16, slide_dimensions=dimensions, mpp=MPP
    )
    pixel_um = MPP * fine.downsample
    area_mm2 = fine.array.sum() * pixel_um**2 / 1e6
    print(f"mask at downsample 16 {fine.shape}: tumor {area_mm2:.2f} mm² (exclusion removed)")

    write_geojson(annotations, out / "annotations.geojson")
    traced = annotations_from_mask(fine, label="tumor")
    same = bool((rasterize(traced, fine).array == fine.array).all())
    print(f"traced {len(traced)} polygons from the mask; redrawn identically: {same}")

    mask_image = fine.array.astype(np.uint8) * 255
    slide = write_pyramid(out / "tumor_mask.tif", mask_image, mpp=pixel_um, compression="deflate")
    print(f"mask slide {slide.name}: {slide.stat().st_size} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", nargs="?", type=Path, help="ASAP .xml or QuPath .geojson")
    parser.add_argument("--width", type=int, default=20000, help="slide level-0 width")
    parser.add_argument("--height", type=int, default=15000, help="slide level-0 height")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        source = args.annotations or write_example_annotations(out / "example.xml")
        main(source, (args.width, args.height), out)
