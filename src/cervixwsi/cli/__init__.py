"""The ``cervixwsi`` command line: every stage over a folder or manifest of slides.

Each subcommand reads slides (a manifest CSV, a folder, or slide files), writes into
``--out``, resumes what an earlier run into the same ``--out`` finished, prints a
summary, and exits with status 1 and a one-line ``Error: ...`` on bad input.  The
per-slide subcommands run one slide per task on ``--workers N`` processes of this
machine or on a Dask cluster (``--scheduler ADDRESS``, or ``--scheduler local``):

=============  ==========================================================================
``synth``      draw a synthetic cohort (slides, annotations, ``manifest.csv``)
``info``       levels, resolution, vendor and associated images of slides
``tissue``     tissue masks, ``OUT/tissue/<slide>.tissue.npz``
``patches``    training patches, one store per slide, ``OUT/patches/<slide>.zarr``
``train``      the patch CNN, ``OUT/model.keras``
``heatmap``    tumor-probability heatmaps, ``OUT/heatmaps/<slide>.zarr``
``features``   heatmap features, ``OUT/features.csv``
``classify``   the slide classifier and the slides' scores, ``OUT/predictions.csv``
``evaluate``   ROC AUC and FROC, ``OUT/evaluation.json``
=============  ==========================================================================

The same is ``python -m cervixwsi.cli``.  The commands are built with click; their
functions (:func:`main`, :data:`cli`) are for the console script and for tests.

Examples
--------
>>> from click.testing import CliRunner
>>> result = CliRunner().invoke(cli, ["--help"])
>>> result.exit_code, "cervixwsi synth --out cohort" in result.output
(0, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from cervixwsi._version import __version__
from cervixwsi.cli._cohort import classify, evaluate, synth, train
from cervixwsi.cli._common import Group, setup_logging
from cervixwsi.cli._slides import features, heatmap, info, patches, tissue

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cervixwsi")
@click.option("--verbose", "-v", is_flag=True, help="Log what each stage does.")
def cli(verbose: bool) -> None:
    """Whole-slide-image analysis of cervical SCC, from slides to ROC AUC and FROC.

    Every subcommand writes into --out and resumes: run it again after an
    interruption and it finishes what is left.  Per-slide stages run on --workers N
    processes or on a Dask cluster (--scheduler ADDRESS; see the docs' "Scaling out"
    tutorial), and a slide that fails is reported while the others finish.

    \b
    A whole run on a synthetic cohort:
      cervixwsi synth --out cohort --tumor 6 --normal 6 --size 2048 --mpp 1
      cervixwsi tissue cohort/manifest.csv --out run --workers 2
      cervixwsi patches cohort/manifest.csv --out run --patch-size 64 --tumor 150
      cervixwsi train --out run --manifest cohort/manifest.csv --input-size 56
      cervixwsi heatmap cohort/manifest.csv --out run --patch-size 64 --workers 2
      cervixwsi features cohort/manifest.csv --out run
      cervixwsi classify --out run --manifest cohort/manifest.csv
      cervixwsi evaluate --out run --manifest cohort/manifest.csv
    """
    setup_logging(verbose)


for _command in (synth, info, tissue, patches, train, heatmap, features, classify, evaluate):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``cervixwsi`` console script)."""
    cli.main(args=None if argv is None else list(argv), prog_name="cervixwsi")
