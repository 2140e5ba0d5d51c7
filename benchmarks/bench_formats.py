"""Benchmark: every reader of cervixwsi.slide against OpenSlide on the same file.

Writes (once, cached in ``--workdir``) one level of ``--size`` x ``--size`` pixels with
256-pixel JPEG tiles twice, with the same tile bytes: as a tiled TIFF and as a DICOM
WSI instance (TILED_FULL, written with pydicom from the real test instance's header),
then measures random 256 x 256 level-0 reads, one thread, the same locations for
every reader, alternating readers over ``--rounds`` rounds (median rates):

* ``Slide`` (native TIFF reader) and OpenSlide on the TIFF;
* ``Slide`` (DICOM reader, through wsidicom) and OpenSlide 4 on the DICOM instance,
  plus wsidicom's own ``read_region`` for reference;
* ``Slide(backend="openslide")`` and OpenSlide itself on the TIFF (the overhead of
  the OpenSlide reader).

It prints regions per second and the ratios ``reader / OpenSlide`` (same file, same
run).  Before timing it checks that the readers return the same pixels.

Run ``python benchmarks/bench_formats.py --quick`` for a short run (about a minute).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_read_region import he_like_tiles

TILE = 256
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tests" / "data" / "slides" / "cmu_small_region_dicom" / "level0.dcm"


def encoded_tiles(n: int) -> list[bytes]:
    import imagecodecs

    return [imagecodecs.jpeg8_encode(t, level=80) for t in he_like_tiles(16)][:n]


def tile_stream(size: int) -> list[bytes]:
    encoded = encoded_tiles(16)
    n = math.ceil(size / TILE) ** 2
    return [encoded[(i * 7) % len(encoded)] for i in range(n)]


def write_tiff(path: Path, size: int) -> None:
    import tifffile

    tmp = path.with_suffix(".partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        tif.write(
            iter(tile_stream(size)),
            shape=(size, size, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            compression="jpeg",
            photometric="ycbcr",
            subsampling=(2, 2),
            resolution=(40_000.0, 40_000.0),
            resolutionunit="CENTIMETER",
            metadata=None,
        )
    tmp.rename(path)


def write_dicom(folder: Path, size: int) -> None:
    """One TILED_FULL level, the real test instance's header with new sizes and UIDs."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(TEMPLATE, stop_before_pixels=True)
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = size
    ds.Columns = ds.Rows = TILE
    frames = tile_stream(size)
    ds.NumberOfFrames = len(frames)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = size * float(spacing[0])
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    tmp = folder.with_suffix(".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    ds.save_as(tmp / "level0.dcm", enforce_file_format=True)
    tmp.rename(folder)


def open_reader(kind: str, path: Path) -> Callable[[tuple[int, int]], Any]:
    """A read of a 256 x 256 level-0 region returning an RGB array, and nothing else."""
    size = (TILE, TILE)
    if kind in ("cervixwsi", "cervixwsi-openslide"):
        from cervixwsi.slide import Slide

        slide = Slide(path, backend="openslide" if kind == "cervixwsi-openslide" else None)
        return lambda loc: slide.read_region(loc, 0, size)
    if kind == "openslide":
        import openslide

        target = next(path.glob("*.dcm")) if path.is_dir() else path
        osr = openslide.OpenSlide(str(target))
        return lambda loc: np.asarray(osr.read_region(loc, 0, size))[..., :3]
    if kind == "wsidicom":
        from wsidicom import WsiDicom

        wsi = WsiDicom.open(path)
        return lambda loc: np.asarray(wsi.read_region(loc, 0, size))[..., :3]
    raise ValueError(kind)


def rate(read: Callable[[tuple[int, int]], Any], locations: list[tuple[int, int]]) -> float:
    start = time.perf_counter()
    for loc in locations:
        read(loc)
    return len(locations) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small slide, fewer reads")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--size", type=int, default=None, help="slide side in pixels")
    parser.add_argument("--reads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.size or (8192 if args.quick else 32768)
    n_reads = args.reads or (300 if args.quick else 2000)
    tiff = args.workdir / f"bench_formats_{size}.tif"
    dicom = args.workdir / f"bench_formats_{size}_dicom"
    if not tiff.exists():
        write_tiff(tiff, size)
    if not dicom.exists():
        write_dicom(dicom, size)
    mib = (tiff.stat().st_size / 2**20, (dicom / "level0.dcm").stat().st_size / 2**20)
    print(f"slides: {size}x{size}, {TILE}-px JPEG tiles; TIFF {mib[0]:.0f}, DICOM {mib[1]:.0f} MiB")

    comparisons = {  # name -> (file, reader, peer on the same file)
        "TIFF: Slide (native)": (tiff, "cervixwsi", "openslide"),
        "DICOM: Slide (wsidicom)": (dicom, "cervixwsi", "openslide"),
        "DICOM: wsidicom read_region": (dicom, "wsidicom", "openslide"),
        "TIFF: Slide(backend='openslide')": (tiff, "cervixwsi-openslide", "openslide"),
    }
    readers = {
        (path, kind): open_reader(kind, path)
        for path, a, b in comparisons.values()
        for kind in (a, b)
    }
    rng = np.random.default_rng(args.seed)
    probe = [(int(x), int(y)) for x, y in rng.integers(0, size - TILE, (5, 2))]
    for path, kind in readers:
        reference = readers[(path, "openslide")]
        for loc in probe:
            if not np.array_equal(readers[(path, kind)](loc), reference(loc)):
                raise SystemExit(f"{kind} and OpenSlide disagree on {path.name} at {loc}")
    rates: dict[tuple[Path, str], list[float]] = {key: [] for key in readers}
    for r in range(args.rounds):
        rng = np.random.default_rng(args.seed + r)
        locations = [(int(x), int(y)) for x, y in rng.integers(0, size - TILE, (n_reads, 2))]
        for key, read in readers.items():
            read(locations[0])
            rates[key].append(rate(read, locations))
    print(f"random {TILE}x{TILE} level-0 reads/s, 1 thread, median of {args.rounds} rounds")
    print(f"{'reader':36s} {'reads/s':>9s} {'OpenSlide':>10s} {'ratio':>6s}")
    for name, (path, kind, peer) in comparisons.items():
        ours = statistics.median(rates[(path, kind)])
        theirs = statistics.median(rates[(path, peer)])
        print(f"{name:36s} {ours:9.0f} {theirs:10.0f} {ours / theirs:6.2f}x")


if __name__ == "__main__":
    main()
