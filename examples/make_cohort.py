"""Write a small synthetic cohort (slides, ASAP annotations, manifest) and summarise it.

The study's 800 slides are private; this makes a stand-in with the same
structure: tumor and normal slides, tumor annotations, and a train /
validation / test split in the study's proportions (480 / 160 / 160 of 800),
stratified by label.

Run::

    python examples/make_cohort.py --out cohort --tumor 4 --normal 4 --size 3072
"""

from __future__ import annotations

import argparse
import pathlib
from collections import Counter

from cervixwsi.annotations import rasterize, read_asap_xml
from cervixwsi.slide import Slide
from cervixwsi.synthetic import Cohort, make_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("synthetic_cohort"),
        help="output folder for the slides, annotations and manifest.csv, created if missing "
        "(default: synthetic_cohort)",
    )
    parser.add_argument(
        "--tumor", type=int, default=4, help="tumor slides (default: 4; the study: 347)"
    )
    parser.add_argument(
        "--normal", type=int, default=4, help="normal slides (default: 4; the study: 453)"
    )
    parser.add_argument(
        "--size", type=int, default=3072, help="level-0 width and height in pixels (default: 3072)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="slides drawn in parallel (default: 1)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the cohort: same seed, same slides (default: 0)",
    )
    args = parser.parse_args()

    cohort = make_cohort(
        args.out,
        args.tumor,
        args.normal,
        size=(args.size, args.size),
        seed=args.seed,
        workers=args.workers,
    )
    print(f"manifest: {cohort.manifest_path}")
    counts = Counter((row.split, row.label) for row in cohort.rows)
    for split in ("train", "validation", "test"):
        print(
            f"  {split:<10} tumor {counts[split, 'tumor']:>3}  normal {counts[split, 'normal']:>3}"
        )

    # Read it back as a user would: the manifest, a slide, its annotations.
    again = Cohort.read(args.out)
    row = again.select(label="tumor")[0] if args.tumor else again.rows[0]
    with Slide(row.path) as slide:
        print(
            f"{row.slide_id}: {slide.dimensions} px at {slide.mpp} µm/px, "
            f"{slide.level_count} levels"
        )
        annotations = read_asap_xml(row.annotation_path)
        mask = rasterize(
            annotations,
            (slide.dimensions[1] // 64, slide.dimensions[0] // 64),
            64,
            slide_dimensions=slide.dimensions,
        )
        print(
            f"  {row.n_lesions} lesions, {len(annotations)} annotations, "
            f"{100 * mask.array.mean():.1f} % of the slide is tumor"
        )


if __name__ == "__main__":
    main()
