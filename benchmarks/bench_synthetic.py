"""How long does a synthetic slide take to draw and write, against writing alone?

Peer, measured in the same run: ``write_pyramid`` writing the same number of
level-0 tiles from a tile source that only returns ready-made tiles (the
pyramid building and JPEG encoding every slide file costs).  The ratio is the
price of drawing the H&E texture.

Run::

    python benchmarks/bench_synthetic.py            # a 20000 x 20000 tumor slide
    python benchmarks/bench_synthetic.py --quick    # 8192 x 8192
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

from cervixwsi._pyramid import write_pyramid
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, make_slide, render_region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an 8192 x 8192 slide")
    parser.add_argument("--threads", type=int, default=None, help="drawing threads")
    args = parser.parse_args()
    size = 8192 if args.quick else 20000
    spec = SyntheticSlideSpec(width=size, height=size, seed=0)
    print(f"{size} x {size} tumor slide, {os.cpu_count()} CPUs, threads={args.threads or 'auto'}")

    t = time.perf_counter()
    layout = make_layout(spec)
    t_layout = time.perf_counter() - t
    print(f"layout: {t_layout:.2f} s ({layout.n_lesions} lesions)")

    # A few real tiles, cycled, so the encoder sees H&E-like content.
    samples = [render_region(layout, x, size // 2, 256, 256) for x in range(0, size, size // 8)]

    def ready_made(x: int, y: int, width: int, height: int) -> np.ndarray:
        return samples[(x // 256 + y // 256) % len(samples)][:height, :width]

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_pyramid(
            pathlib.Path(tmp) / "peer.tiff", ready_made, mpp=spec.mpp, dimensions=spec.dimensions
        )
        t_peer = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        made = make_slide(spec, pathlib.Path(tmp) / "synthetic.tiff", threads=args.threads)
        t_ours, cpu_ours = time.perf_counter() - t, time.process_time() - cpu
        megabytes = made.path.stat().st_size / 1e6
    tiles = (-(-size // 256)) ** 2
    print(f"write_pyramid of ready-made tiles (peer): {t_peer:.1f} s")
    print(
        f"make_slide (draw + write):               {t_ours:.1f} s "
        f"({cpu_ours:.1f} s CPU), {1000 * t_ours / tiles:.1f} ms/tile, {megabytes:.0f} MB"
    )
    print(f"ratio make_slide / peer: {t_ours / t_peer:.2f}")


if __name__ == "__main__":
    main()
