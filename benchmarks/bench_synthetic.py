"""Throughput of the synthetic slide renderer: level-0 megapixels per second.

Measures, for one tumor slide (default 20000 x 20000 at 0.25 µm/px, the
issue's yardstick: at least 25 MP/s on 2 cores):

* ``render``: :func:`render_region` over every level-0 tile, in one thread,
  atlases already made (the per-tile cost of drawing);
* ``make_slide``: the whole file (drawing in the default threads, JPEG,
  pyramid), from a cold start of the atlases;
* the peer, measured in the same run: ``write_pyramid`` writing the same
  number of level-0 tiles from a source that returns ready-made H&E tiles (the
  pyramid building and JPEG encoding every slide file costs).  ``make_slide /
  peer`` is the price of drawing.

``--baseline DIR`` runs the same measurements in a subprocess whose
``PYTHONPATH`` starts with ``DIR`` (a copy of an older ``cervixwsi`` package,
e.g. main's), in the same run, and prints the ratio; the machine's load
(``os.getloadavg``) is printed with each figure.

Run::

    python benchmarks/bench_synthetic.py
    python benchmarks/bench_synthetic.py --size 8192 --baseline /tmp/oldroot
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np


def measure(size: int, threads: int | None, peer: bool = False) -> dict[str, float]:
    """Render-only and make_slide throughput of this process's ``cervixwsi``."""
    import cervixwsi.synthetic as synthetic
    from cervixwsi._pyramid import write_pyramid
    from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, make_slide, render_region

    spec = SyntheticSlideSpec(width=size, height=size, seed=0)
    out: dict[str, float] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        if peer:  # a few real tiles, cycled, so the encoder sees H&E-like content
            layout = make_layout(spec)
            step = max(256, size // 8)
            samples = [render_region(layout, x, size // 2, 256, 256) for x in range(0, size, step)]

            def ready_made(x: int, y: int, width: int, height: int) -> np.ndarray:
                return samples[(x // 256 + y // 256) % len(samples)][:height, :width]

            t = time.perf_counter()
            write_pyramid(
                pathlib.Path(tmp) / "peer.tiff",
                ready_made,
                mpp=spec.mpp,
                dimensions=spec.dimensions,
            )
            out["peer_s"] = time.perf_counter() - t
        t = time.perf_counter()
        made = make_slide(spec, pathlib.Path(tmp) / "s.tiff", threads=threads)
        out["make_slide_s"] = time.perf_counter() - t
        out["file_mb"] = made.path.stat().st_size / 1e6
    layout = make_layout(spec)
    t = time.perf_counter()
    for y in range(0, size, 256):
        for x in range(0, size, 256):
            render_region(layout, x, y, min(256, size - x), min(256, size - y))
    out["render_s"] = time.perf_counter() - t
    mp = size * size / 1e6
    out["make_slide_mp_s"] = mp / out["make_slide_s"]
    out["render_mp_s"] = mp / out["render_s"]
    out["load_after"] = os.getloadavg()[0]
    out["package"] = synthetic.__file__  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="slide side in px")
    parser.add_argument("--threads", type=int, default=None, help="make_slide threads")
    parser.add_argument("--baseline", default=None, help="directory holding an older cervixwsi")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    result = measure(args.size, args.threads, peer=not args.json)
    if args.json:
        print(json.dumps(result))
        return
    runs = {"this": result}
    if args.baseline:
        env = dict(
            os.environ, PYTHONPATH=args.baseline + os.pathsep + os.environ.get("PYTHONPATH", "")
        )
        cmd = [sys.executable, __file__, "--size", str(args.size), "--json"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        runs["baseline"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{args.size} x {args.size} tumor slide, {os.cpu_count()} CPUs")
    for name, r in runs.items():
        print(
            f"{name:9s} make_slide {r['make_slide_mp_s']:6.1f} MP/s ({r['make_slide_s']:.1f} s, "
            f"{r['file_mb']:.0f} MB)  render-only {r['render_mp_s']:6.1f} MP/s "
            f"(1 thread)  load {r['load_before']:.1f}->{r['load_after']:.1f}  {r['package']}"
        )
    print(
        f"write_pyramid of ready-made tiles (peer) {result['peer_s']:.1f} s; "
        f"make_slide / peer {result['make_slide_s'] / result['peer_s']:.2f}"
    )
    if "baseline" in runs:
        b = runs["baseline"]
        slide = result["make_slide_mp_s"] / b["make_slide_mp_s"]
        render = result["render_mp_s"] / b["render_mp_s"]
        print(f"ratio this / baseline: make_slide {slide:.2f}, render {render:.2f}")


if __name__ == "__main__":
    main()
