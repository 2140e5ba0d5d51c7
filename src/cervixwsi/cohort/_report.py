"""What a cohort run did, slide by slide: :class:`SlideOutcome`, :class:`CohortReport`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cervixwsi._io import atomic_write_text
from cervixwsi._store import jsonable
from cervixwsi.errors import CervixWSIError, ResultFileError

__all__ = ["CohortReport", "CohortRunError", "SlideOutcome", "Status"]

#: ``done``: run now; ``skipped``: finished by an earlier run; ``failed``: raised an error
#: (or its worker died); ``not run``: the run was interrupted before it.
Status = Literal["done", "skipped", "failed", "not run"]

_FORMAT = "cervixwsi.CohortReport"
_VERSION = 1


@dataclass(frozen=True)
class SlideOutcome:
    """What happened to one slide of a run.

    Attributes
    ----------
    slide_id, path : str
        The slide.
    status : {"done", "skipped", "failed", "not run"}
        ``done``: its result was made in this run; ``skipped``: an earlier run had
        finished it; ``failed``: it raised an error, or the worker running it died;
        ``not run``: the run was interrupted (Ctrl-C) before it.
    seconds : float
        Time spent on it by its worker.
    worker : str
        ``host:pid`` of the process that ran it.
    result : mapping
        The stage's summary of its result (e.g. ``{"tissue_fraction": 0.31}``).
    error_type, message, traceback : str or None
        For a failure: the exception's class name, its message and the traceback.
    """

    slide_id: str
    path: str
    status: Status
    seconds: float = 0.0
    worker: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON-compatible values."""
        out: dict[str, Any] = jsonable(asdict(self))
        return out


def _one_line(text: str | None, width: int | None = None) -> str:
    words = " ".join((text or "").split())
    if width is not None and len(words) > width:
        return words[: width - 3] + "..."
    return words


@dataclass(frozen=True)
class CohortReport:
    """The record of one cohort run: every slide's outcome, written as JSON and text.

    :func:`run_cohort` writes it to ``<out>/<stage>-report.json`` (everything, the
    tracebacks included) and ``<out>/<stage>-report.txt`` (a summary a person reads:
    counts, then one line per failed slide with its error).

    Attributes
    ----------
    stage : str
        The stage's name (``"tissue"``, ``"heatmaps"``, ...).
    out : str
        The run's output folder.
    executor : str
        What ran the slides, e.g. ``"ProcessPoolExecutor (2 workers)"``.
    started : str
        ISO 8601 time the run started (UTC).
    seconds : float
        Wall time of the run.
    outcomes : tuple of SlideOutcome
        One per slide, in the order the slides were given.

    Examples
    --------
    >>> report = CohortReport("tissue", "/runs/a", "serial", "2026-01-01T00:00:00+00:00", 1.5,
    ...     (SlideOutcome("s1", "/d/s1.tiff", "done", 0.8),
    ...      SlideOutcome("s2", "/d/s2.tiff", "failed", 0.1, error_type="SlideOpenError",
    ...                   message="/d/s2.tiff: the file is empty")))
    >>> report.counts, report.ok
    ({'done': 1, 'skipped': 0, 'failed': 1, 'not run': 0}, False)
    >>> print(report.text().splitlines()[-1])
      s2  SlideOpenError  /d/s2.tiff: the file is empty
    """

    stage: str
    out: str
    executor: str
    started: str
    seconds: float
    outcomes: tuple[SlideOutcome, ...]

    def _with(self, status: Status) -> tuple[SlideOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == status)

    @property
    def done(self) -> tuple[SlideOutcome, ...]:
        """The slides finished in this run."""
        return self._with("done")

    @property
    def skipped(self) -> tuple[SlideOutcome, ...]:
        """The slides an earlier run had finished."""
        return self._with("skipped")

    @property
    def failed(self) -> tuple[SlideOutcome, ...]:
        """The slides that failed (an error, or a worker that died)."""
        return self._with("failed")

    @property
    def not_run(self) -> tuple[SlideOutcome, ...]:
        """The slides an interrupted run did not reach."""
        return self._with("not run")

    @property
    def counts(self) -> dict[str, int]:
        """Slides per status."""
        return {s: len(self._with(s)) for s in ("done", "skipped", "failed", "not run")}

    @property
    def ok(self) -> bool:
        """True when every slide is finished (done now or earlier)."""
        return not self.failed and not self.not_run

    def __getitem__(self, slide_id: str) -> SlideOutcome:
        for outcome in self.outcomes:
            if outcome.slide_id == slide_id:
                return outcome
        raise KeyError(f"no slide {slide_id!r} in the report of stage {self.stage!r}")

    # --- files ------------------------------------------------------------------------

    @property
    def json_path(self) -> Path:
        """``<out>/<stage>-report.json``."""
        return Path(self.out) / f"{self.stage}-report.json"

    @property
    def text_path(self) -> Path:
        """``<out>/<stage>-report.txt``."""
        return Path(self.out) / f"{self.stage}-report.txt"

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-compatible values (with a format tag)."""
        return {
            "format": _FORMAT,
            "format_version": _VERSION,
            "stage": self.stage,
            "out": self.out,
            "executor": self.executor,
            "started": self.started,
            "seconds": self.seconds,
            "counts": self.counts,
            "slides": [o.to_json() for o in self.outcomes],
        }

    def text(self) -> str:
        """The summary a person reads: counts, then each failed slide and its error."""
        c = self.counts
        lines = [
            f"cervixwsi cohort run, stage {self.stage!r}",
            f"output:   {self.out}",
            f"executor: {self.executor}",
            f"started:  {self.started}, took {self.seconds:.1f} s",
            f"slides:   {len(self.outcomes)}: {c['done']} done, {c['skipped']} already done "
            f"(skipped), {c['failed']} failed"
            + (f", {c['not run']} not run (interrupted)" if c["not run"] else ""),
        ]
        if self.failed:
            width = max(len(o.slide_id) for o in self.failed)
            kind = max(len(o.error_type or "") for o in self.failed)
            lines += ["", "failed slides (slide id, error, message):"]
            lines += [
                f"  {o.slide_id:<{width}}  {o.error_type or '':<{kind}}  {_one_line(o.message)}"
                for o in self.failed
            ]
        return "\n".join(lines)

    def write(self) -> Path:
        """Write :attr:`json_path` and :attr:`text_path` (atomically); return the text one."""
        Path(self.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.json_path, json.dumps(self.to_json(), indent=2) + "\n")
        atomic_write_text(self.text_path, self.text() + "\n")
        return self.text_path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> CohortReport:
        """Read a report's JSON file (``<out>/<stage>-report.json``).

        Raises
        ------
        ResultFileError
            If the file is missing or not a cohort report.
        """
        where = Path(path)
        try:
            data = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ResultFileError(f"cannot read the cohort report {where}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ResultFileError(f"{where} is not a cervixwsi cohort report")
        try:
            outcomes = tuple(SlideOutcome(**o) for o in data["slides"])
            return cls(
                data["stage"],
                data["out"],
                data["executor"],
                data["started"],
                float(data["seconds"]),
                outcomes,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultFileError(f"{where} is a damaged cohort report: {exc}") from exc


class CohortRunError(CervixWSIError, RuntimeError):
    """Some slides of a cohort run failed; the others finished.

    The message names the failed slides and their errors, in one line; ``report``
    holds every outcome, and the report files say the same (see :class:`CohortReport`).
    Running again skips the finished slides and retries the failed ones.
    """

    def __init__(self, report: CohortReport) -> None:
        self.report = report
        failed = report.failed
        shown = ", ".join(
            f"{o.slide_id} ({o.error_type}: {_one_line(o.message, 120)})" for o in failed[:5]
        )
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        finished = len(report.done) + len(report.skipped)
        super().__init__(
            f"{len(failed)} of {len(report.outcomes)} slides failed in stage "
            f"{report.stage!r}: {shown}{more}; {finished} finished. Report: "
            f"{report.text_path}. Run again to retry the failed slides (finished ones are "
            "skipped)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.report,))
