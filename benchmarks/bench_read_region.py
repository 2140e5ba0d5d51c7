"""Benchmark: cervixwsi.slide.Slide against OpenSlide (and tiffslide) on a large JPEG pyramid.

Writes (once, cached in ``--workdir``) a 40000x40000 pyramidal TIFF with 256-pixel
JPEG tiles and levels at downsamples 1, 4, 16, 64, the layout of a scanner's SVS,
then measures, for each reader in its own fresh process (so that peak memory is
each reader's own):

* random 256x256 level-0 reads (one thread, and two threads sharing one slide);
* for reference, in Slide's process, the same regions' tiles decoded whole with
  libjpeg-turbo and nothing else ("tiles decoded only": no reader, no cache, no
  output image), the rate a reader decoding whole tiles cannot beat;
* reads of the lowest level whole (what a thumbnail needs), reopening the slide
  each time so that neither reader's tile cache helps;
* random 256x256 reads at level 2.

It prints regions per second for each reader, the ratio ``Slide / OpenSlide`` and
each process's peak resident memory.  Before timing, it checks that both readers
return the same pixels.

Run ``python benchmarks/bench_read_region.py --quick`` for a short run.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _memory import peak_rss_mib

SIZE = 40_000
TILE = 256
DOWNSAMPLES = (1, 4, 16, 64)


def he_like_tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct 256x256 tiles of pink/purple texture (JPEG sizes like real H&E)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float64)
    tiles = []
    for _ in range(n):
        fx, fy = rng.uniform(6, 30, 2)
        base = 180 + 45 * np.sin(xx / fx + rng.uniform(0, 6)) * np.cos(yy / fy)
        noise = rng.normal(0, 14, (TILE, TILE, 3))
        rgb = np.stack([base + 35, base - 45, base + 15], axis=-1) + noise
        tiles.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return tiles


def write_slide(path: Path) -> None:
    """The benchmark slide: each level's tiles are a few pre-encoded JPEGs, repeated."""
    import imagecodecs
    import tifffile

    encoded = [imagecodecs.jpeg8_encode(t, level=80) for t in he_like_tiles(16)]
    tmp = path.with_suffix(".partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, d in enumerate(DOWNSAMPLES):
            side = SIZE // d
            n = math.ceil(side / TILE) ** 2

            def tiles(n: int = n, k: int = k) -> Any:
                for i in range(n):
                    yield encoded[(i * 7 + k) % len(encoded)]

            tif.write(
                tiles(),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="ycbcr",
                subsampling=(2, 2),
                subfiletype=1 if k else 0,
                resolution=(40_000.0, 40_000.0) if k == 0 else None,
                resolutionunit="CENTIMETER" if k == 0 else None,
                metadata=None,
            )
    tmp.rename(path)


def open_reader(kind: str, path: Path) -> Any:
    if kind == "cervixwsi":
        from cervixwsi.slide import Slide

        return Slide(path)
    if kind == "openslide":
        import openslide

        return openslide.OpenSlide(str(path))
    import tiffslide

    return tiffslide.TiffSlide(str(path))


def read_fn(kind: str, slide: Any) -> Callable[[tuple[int, int], int, tuple[int, int]], Any]:
    """A read returning an RGB numpy array for every reader (as a pipeline would use it)."""
    if kind == "cervixwsi":
        return slide.read_region  # type: ignore[no-any-return]
    if kind == "openslide":
        return lambda loc, level, size: np.asarray(slide.read_region(loc, level, size))[..., :3]
    return lambda loc, level, size: slide.read_region(loc, level, size, as_array=True)[..., :3]


def rate(fn: Callable[[Any], Any], items: list[Any], threads: int = 1) -> float:
    start = time.perf_counter()
    if threads == 1:
        for item in items:
            fn(item)
    else:  # each thread reads its share; results are dropped as they come

        def share(part: list[Any]) -> None:
            for item in part:
                fn(item)

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(share, items[i::threads]) for i in range(threads)]:
                future.result()
    return len(items) / (time.perf_counter() - start)


DECODED_ONLY = "level-0 tiles decoded only/s"
ONE_THREAD = "level-0 reads/s, 1 thread"


def tiles_decoded_only(path: Path, locations: list[tuple[int, int]]) -> float:
    """Regions/s when a read only decodes, whole, the level-0 JPEG tiles it touches."""
    import os

    import imagecodecs
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        tables = page.jpegtables
    across = math.ceil(SIZE / TILE)
    fd = os.open(path, os.O_RDONLY)

    def decode_touched(location: tuple[int, int]) -> None:
        x, y = location
        for row in range(y // TILE, (y + TILE - 1) // TILE + 1):
            for col in range(x // TILE, (x + TILE - 1) // TILE + 1):
                i = row * across + col
                imagecodecs.jpeg8_decode(os.pread(fd, counts[i], offsets[i]), tables=tables)

    try:
        decode_touched(locations[0])
        return rate(decode_touched, locations)
    finally:
        os.close(fd)


def measure(kind: str, path: str, n_reads: int, n_thumbs: int, seed: int) -> dict[str, float]:
    """All measurements of one reader (runs in a fresh process)."""
    slide_path = Path(path)
    rng = np.random.default_rng(seed)
    lvl0 = [(int(x), int(y)) for x, y in rng.integers(0, SIZE - TILE, (n_reads, 2))]
    lvl0_b = [(int(x), int(y)) for x, y in rng.integers(0, SIZE - TILE, (n_reads, 2))]
    lvl2 = [(int(x), int(y)) for x, y in rng.integers(0, SIZE - 16 * TILE, (n_reads, 2))]
    result: dict[str, float] = {}
    slide = open_reader(kind, slide_path)
    read = read_fn(kind, slide)
    read((0, 0), 0, (TILE, TILE))  # warm up imports and decoders
    result[ONE_THREAD] = rate(lambda p: read(p, 0, (TILE, TILE)), lvl0)
    if kind == "cervixwsi":
        result[DECODED_ONLY] = tiles_decoded_only(slide_path, lvl0)
    result["level-0 reads/s, 2 threads"] = rate(lambda p: read(p, 0, (TILE, TILE)), lvl0_b, 2)
    result["level-2 reads/s, 1 thread"] = rate(lambda p: read(p, 2, (TILE, TILE)), lvl2)
    slide.close()
    last = len(DOWNSAMPLES) - 1
    side = SIZE // DOWNSAMPLES[last]

    def thumbnail(_: int) -> Any:
        s = open_reader(kind, slide_path)
        try:
            return read_fn(kind, s)((0, 0), last, (side, side))
        finally:
            s.close()

    result["lowest level whole/s (reopened)"] = rate(thumbnail, list(range(n_thumbs)))
    result["peak RSS MiB"] = peak_rss_mib()
    return result


def check_same_pixels(path: Path) -> None:
    """Both readers' pixels: a few fixed regions, then random level-0 reads like the
    timed ones (enough that Slide switches to decoding only the rows a read uses)."""
    ours, theirs = open_reader("cervixwsi", path), open_reader("openslide", path)
    rng = np.random.default_rng(12345)
    checks = [(((12_345, 23_456), 0), (300, 200)), (((0, 0), 3), (300, 200))]
    checks += [(((39_900, 39_900), 0), (300, 200))]
    checks += [
        (((int(x), int(y)), 0), (TILE, TILE)) for x, y in rng.integers(0, SIZE - TILE, (300, 2))
    ]
    for (loc, level), size in checks:
        a = read_fn("cervixwsi", ours)(loc, level, size)
        b = read_fn("openslide", theirs)(loc, level, size)
        inside = b.any(axis=-1)  # OpenSlide leaves pixels outside the slide transparent black
        if not np.array_equal(a[inside], b[inside]):
            raise SystemExit(f"readers disagree at {loc}, level {level}")
    ours.close()
    theirs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reads (about 1 minute)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--readers", default="cervixwsi,openslide,tiffslide")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per reader")
    args = parser.parse_args()
    n_reads, n_thumbs = (150, 5) if args.quick else (1000, 20)
    path = args.workdir / f"bench_jpeg_{SIZE}.tif"
    if not path.exists():
        print(f"writing {path} ({SIZE}x{SIZE}, {TILE}-px JPEG tiles) ...", flush=True)
        start = time.perf_counter()
        write_slide(path)
        print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"slide: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    check_same_pixels(path)
    # Each reader runs in its own process; rounds alternate between readers so that
    # a change of machine load hits all of them alike.  Rates are medians over rounds.
    spawn = multiprocessing.get_context("spawn")
    kinds_wanted = args.readers.split(",")
    pools = {k: ProcessPoolExecutor(1, mp_context=spawn) for k in kinds_wanted}
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in kinds_wanted}
    try:
        for r in range(args.rounds):
            for kind in kinds_wanted:
                future = pools[kind].submit(
                    measure, kind, str(path), n_reads, n_thumbs, args.seed + r
                )
                rounds[kind].append(future.result())
    finally:
        for pool in pools.values():
            pool.shutdown()
    results = {
        k: {key: float(np.median([m[key] for m in ms])) for key in ms[0]}
        for k, ms in rounds.items()
    }
    for k, ms in rounds.items():
        results[k]["peak RSS MiB"] = max(m["peak RSS MiB"] for m in ms)
    kinds = list(results)
    print(f"\nmedians of {args.rounds} rounds of {n_reads} reads ({n_thumbs} for whole levels)")
    print(f"{'measure':34s}" + "".join(f"{k:>12s}" for k in kinds) + "  Slide/OpenSlide")
    keys = list(dict.fromkeys(key for k in kinds for key in results[k]))
    for key in keys:
        row = "".join(
            f"{results[k][key]:12.1f}" if key in results[k] else f"{'-':>12s}" for k in kinds
        )
        ratio = ""
        if "cervixwsi" in results and "openslide" in results and "RSS" not in key:
            # tiles decoded only: against OpenSlide's one-thread reads of the same regions
            theirs = results["openslide"].get(key, results["openslide"][ONE_THREAD])
            ratio = f"{results['cervixwsi'][key] / theirs:10.2f}x"
        print(f"{key:34s}{row}  {ratio}")


if __name__ == "__main__":
    main()
