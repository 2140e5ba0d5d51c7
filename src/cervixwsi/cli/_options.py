"""The options the subcommands share: each one decorator, so every copy reads the same.

An option that several subcommands take with the same meaning is made here, once: its
name, type, default and help are the same wherever it appears.  Where the meaning
differs by command (what ``--out`` holds, what ``--seed`` seeds, what ``--manifest``
must say), the decorator takes that help text and everything else stays shared.

Examples
--------
>>> import click
>>> from click.testing import CliRunner
>>> @click.command()
... @patch_size_option
... @seed_option("Seed of the demo.")
... def demo(patch_size: int, seed: int) -> None:
...     click.echo(f"{patch_size} {seed}")
>>> CliRunner().invoke(demo, ["--patch-size", "64"]).output
'64 0\\n'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "F",
    "batch_size_option",
    "executor_options",
    "heatmaps_option",
    "manifest_option",
    "min_tissue_option",
    "out_option",
    "patch_level_option",
    "patch_size_option",
    "progress_option",
    "seed_option",
    "slides_argument",
    "tissue_option",
]

F = TypeVar("F", bound=Callable[..., Any])


def slides_argument(*, required: bool = True) -> Callable[[F], F]:
    """``SLIDES...``: a manifest, a folder or slide files."""
    return click.argument(
        "slides", nargs=-1, required=required, type=click.Path(path_type=Path), metavar="SLIDES..."
    )


def out_option(help_text: str, *, required: bool = True) -> Callable[[F], F]:
    """``--out DIR``: ``help_text`` says what the command writes there."""
    return click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        required=required,
        help=help_text,
    )


def executor_options(f: F) -> F:
    """``--workers N`` and ``--scheduler ADDRESS``."""
    f = click.option(
        "--scheduler",
        metavar="ADDRESS",
        help=(
            "Run on Dask distributed: the address of a running scheduler "
            "(tcp://host:8786, started with `dask scheduler`), or `local` for a "
            "LocalCluster of --workers processes on this machine.  Needs "
            "cervixwsi[distributed]."
        ),
    )(f)
    f = click.option(
        "--workers",
        type=click.IntRange(min=1),
        metavar="N",
        help="Worker processes on this machine (default: 1, this process).",
    )(f)
    return f


def progress_option(f: F) -> F:
    """``--quiet``: no progress bar."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(f)


def seed_option(help_text: str) -> Callable[[F], F]:
    """``--seed``: a non-negative integer, default 0; ``help_text`` says what it seeds."""
    return click.option(
        "--seed", type=click.IntRange(min=0), default=0, show_default=True, help=help_text
    )


def manifest_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """``--manifest``: an existing manifest CSV; ``help_text`` says what the command reads."""
    return click.option(
        "--manifest",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        required=required,
        help=help_text,
    )


def patch_size_option(f: F) -> F:
    """``--patch-size``: patch side in pixels, default 256."""
    return click.option(
        "--patch-size",
        type=click.IntRange(min=1),
        default=256,
        show_default=True,
        help="Patch side in pixels (the study's: 256).",
    )(f)


def patch_level_option(f: F) -> F:
    """``--level``: the level patches are read at; unset means level 0 (or ``--mpp``)."""
    return click.option(
        "--level",
        type=click.IntRange(min=0),
        help="Level the patches are read at (default 0; the study's: 0).",
    )(f)


def min_tissue_option(f: F) -> F:
    """``--min-tissue``: a patch's minimum tissue fraction, default 0.5."""
    return click.option(
        "--min-tissue",
        type=click.FloatRange(0, 1),
        default=0.5,
        show_default=True,
        help="Minimum tissue fraction of a patch.",
    )(f)


def tissue_option(f: F) -> F:
    """``--tissue``: a folder of saved tissue masks."""
    return click.option(
        "--tissue",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder of saved tissue masks (default: OUT/tissue if `cervixwsi tissue` "
        "made it, else tissue is detected here).",
    )(f)


def batch_size_option(f: F) -> F:
    """``--batch-size``: patches per batch, default 32."""
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="Patches per batch (the study's: 32).",
    )(f)


def heatmaps_option(f: F) -> F:
    """``--heatmaps``: a folder of heatmap stores."""
    return click.option(
        "--heatmaps",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder of heatmap stores (default: OUT/heatmaps).",
    )(f)
