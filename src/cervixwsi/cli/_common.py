"""What every subcommand shares: the run of a stage, its summary, errors (options: _options)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from cervixwsi.cohort import (
    CohortReport,
    CohortRunError,
    SlideRef,
    SlideTask,
    cohort_executor,
    find_slides,
    run_cohort,
)
from cervixwsi.errors import CervixWSIError

__all__ = [
    "Group",
    "echo_report",
    "one_line",
    "run_stage",
]

#: Slides listed per stage in a summary; the rest are in the report.
MAX_LISTED = 20


def one_line(text: object) -> str:
    """``text`` on one line (newlines and runs of spaces become one space)."""
    return " ".join(str(text).split())


class Group(click.Group):
    """A click group that turns a user's error into one line and a non-zero exit.

    A :class:`~cervixwsi.errors.CervixWSIError` (a bad file, a bad parameter, slides that
    failed) or an ``OSError`` (a missing or unwritable path) prints ``Error: <message>``
    and exits with status 1, without a traceback; anything else is a bug and keeps its
    traceback.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order of the pipeline, not alphabetical

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CervixWSIError, OSError) as exc:
            raise click.ClickException(one_line(exc) or type(exc).__name__) from None


def _result_words(result: Mapping[str, Any]) -> str:
    parts = []
    for key, value in result.items():
        if isinstance(value, Mapping):
            parts.append(f"{key}: " + _result_words(value))
        elif isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def echo_report(report: CohortReport, what: str) -> None:
    """Print a run's summary: counts, the slides (up to 20) and where results are."""
    c = report.counts
    click.echo(
        f"{report.stage}: {len(report.outcomes)} slides in {report.seconds:.1f} s on "
        f"{report.executor}: {c['done']} done, {c['skipped']} already done, "
        f"{c['failed']} failed"
    )
    width = max(len(o.slide_id) for o in report.outcomes)
    shown = [o for o in report.outcomes if o.status != "skipped"][:MAX_LISTED]
    for o in shown:
        words = _result_words(o.result) if o.status == "done" else one_line(o.message)
        detail = f"{o.error_type}: {words}" if o.status == "failed" else words
        click.echo(f"  {o.slide_id:<{width}}  {o.status:<7}  {detail}")
    hidden = sum(o.status != "skipped" for o in report.outcomes) - len(shown)
    if hidden > 0:
        click.echo(f"  ... and {hidden} more (see the report)")
    click.echo(f"{what}; report: {report.text_path}")


def run_stage(
    slides: Iterable[Any] | list[SlideRef],
    task: SlideTask,
    out: Path,
    *,
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
    what: str,
    resources: Mapping[str, float] | None = None,
) -> CohortReport:
    """List the slides, run ``task`` on the executor the options ask for, print a summary.

    Raises
    ------
    CohortRunError
        After the summary, if a slide failed (the command then exits with status 1).
    """
    refs = find_slides(list(slides))
    with cohort_executor(workers, scheduler) as executor:
        report = run_cohort(
            refs,
            task,
            out,
            executor=executor,
            on_error="report",
            resources=resources,
            progress=not quiet,
        )
    echo_report(report, what)
    if report.failed:
        raise CohortRunError(report)
    return report


class _QuietLibraries(logging.Filter):
    """Drops other libraries' notes that the summary already says better.

    Dask and Tornado log every worker's start (kept from ERROR up); tifffile logs each
    defect of a damaged file, which the run reports as that slide's failure.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.split(".")[0]
        if top in ("distributed", "tornado", "bokeh"):
            return record.levelno >= logging.ERROR
        return top != "tifffile" or record.levelno >= logging.CRITICAL


def setup_logging(verbose: bool) -> None:
    """Warnings (or, with ``--verbose``, progress notes) of cervixwsi on standard error.

    Only when nothing has configured logging yet (the console script); a program that
    calls :data:`cervixwsi.cli.cli` with its own logging keeps it.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        if not verbose:
            handler.addFilter(_QuietLibraries())
        root.addHandler(handler)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
