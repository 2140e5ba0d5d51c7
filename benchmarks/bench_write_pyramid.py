"""Benchmark: streaming ``write_pyramid`` against an in-memory tifffile write.

Writes square RGB slides (JPEG, quality 90, 256-pixel tiles, full pyramid) from a
cheap callable source and reports level-0 megapixels per second and the peak
resident memory of the process, for two sizes (memory should stay flat), and
the same for the peer at the smaller size: the whole level-0 array held in
memory and written with ``tifffile`` (the same tiled JPEG level 0, plus the same
lower levels made in memory with OpenCV ``INTER_AREA``), measured in the same run.

Each measurement runs in a fresh subprocess so that its peak RSS is its own.

Usage::

    python benchmarks/bench_write_pyramid.py            # 20000² and 40000², peer 20000²
    python benchmarks/bench_write_pyramid.py --quick    # 5000² and 10000², peer 5000²
    python benchmarks/bench_write_pyramid.py --sizes 20000 100000   # a 100000² slide
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from _memory import peak_rss_mib

TILE = 256


def _tiles() -> list[npt.NDArray[np.uint8]]:
    """Sixteen H&E-coloured tiles with texture, so JPEG has real work to do."""
    rng = np.random.default_rng(0)
    pink = np.array([230, 160, 200], np.float64)
    purple = np.array([120, 70, 160], np.float64)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    tiles = []
    for k in range(16):
        blobs = np.sin(xx / (9 + k) + k) * np.cos(yy / (13 + k)) > 0.3
        colour = np.where(blobs[..., None], purple, pink)
        noise = rng.normal(0, 10, (TILE, TILE, 1))
        tiles.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
    return tiles


def _child(kind: str, size: int, out: Path) -> dict[str, float]:
    # Import everything both writers use before the clock starts.
    import cv2
    import tifffile
    import tqdm.auto  # noqa: F401

    from cervixwsi._pyramid import write_pyramid

    tiles = _tiles()
    path = out / f"{kind}_{size}.tif"

    def source(x: int, y: int, width: int, height: int) -> npt.NDArray[np.uint8]:
        return tiles[(x // TILE * 7 + y // TILE * 3) % 16][:height, :width]

    if kind == "stream":
        baseline = peak_rss_mib()
        start = time.perf_counter()
        write_pyramid(path, source, mpp=0.25, dimensions=(size, size), quality=90)
        seconds = time.perf_counter() - start
    else:
        import cv2
        import tifffile

        image = np.empty((size, size, 3), np.uint8)
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                h, w = min(TILE, size - y), min(TILE, size - x)
                image[y : y + h, x : x + w] = source(x, y, w, h)
        baseline = peak_rss_mib()
        start = time.perf_counter()
        options = {
            "tile": (TILE, TILE),
            "compression": "jpeg",
            "compressionargs": {"level": 90},
            "photometric": "rgb",
            "maxworkers": 2,
        }
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            tif.write(image, resolution=(4e4, 4e4), resolutionunit="CENTIMETER", **options)
            level = image
            while max(level.shape[:2]) > TILE:
                h, w = (level.shape[0] + 1) // 2, (level.shape[1] + 1) // 2
                level = cv2.resize(level, (w, h), interpolation=cv2.INTER_AREA)
                tif.write(level, subfiletype=1, **options)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "mp_per_s": size * size / 1e6 / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mib(),
        "file_mb": path.stat().st_size / 1e6,
    }


def _run(kind: str, size: int, out: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--size", str(size), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    (out / f"{kind}_{size}.tif").unlink()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5000² and 10000² instead")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="the two streamed sizes (e.g. 20000 100000; the peer runs at SMALL; the "
        "writer spools about a third of the uncompressed level 0 to disk beside the file)",
    )
    parser.add_argument("--child", choices=["stream", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="directory for the temporary files")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.size, args.out)))
        return
    small, large = args.sizes or ((5000, 10000) if args.quick else (20000, 40000))
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        out = Path(tmp)
        rows = [
            ("write_pyramid (streamed)", small, _run("stream", small, out)),
            ("write_pyramid (streamed)", large, _run("stream", large, out)),
            ("tifffile, level 0 in memory", small, _run("peer", small, out)),
        ]
    print(f"{'writer':30} {'size':>7} {'s':>7} {'MP/s':>7} {'peak RSS MB':>12} {'base MB':>8}")
    for name, size, m in rows:
        print(
            f"{name:30} {size:>7} {m['seconds']:7.1f} {m['mp_per_s']:7.1f} "
            f"{m['peak_rss_mb']:12.0f} {m['baseline_rss_mb']:8.0f}"
        )
    s_small, s_large, peer = rows[0][2], rows[1][2], rows[2][2]
    print(
        f"peak RSS {large}² / {small}² (streamed): "
        f"{s_large['peak_rss_mb'] / s_small['peak_rss_mb']:.2f}"
    )
    print(
        f"at {small}²: streamed / in-memory peer: speed "
        f"{s_small['mp_per_s'] / peer['mp_per_s']:.2f}x, peak RSS "
        f"{s_small['peak_rss_mb'] / peer['peak_rss_mb']:.3f}x"
    )


if __name__ == "__main__":
    main()
