"""What a cohort run runs on each slide: :class:`SlideTask`, :class:`FunctionTask`, `Chain`."""

from __future__ import annotations

import abc
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cervixwsi._io import atomic_write_text
from cervixwsi._store import jsonable
from cervixwsi.cohort._slides import SlideRef
from cervixwsi.errors import ParameterError

if TYPE_CHECKING:
    from cervixwsi.cohort._report import CohortReport

__all__ = ["Chain", "FunctionTask", "SlideTask"]


class SlideTask(abc.ABC):
    """One per-slide stage of a cohort run, and where it keeps each slide's result.

    A task is sent to the workers (pickled), so it holds settings, not large objects:
    a model travels as a :class:`ModelSpec`.  Its result for a slide lives at
    :meth:`output` under the run's folder, written so that it appears only when whole
    (an atomic rename, or a resumable store marked complete), so :meth:`is_done` can
    trust what it finds: a rerun skips finished slides, and a slide whose worker died
    is finished by the next run.

    Subclasses set :attr:`name` and implement :meth:`output`, :meth:`is_done` and
    :meth:`run`; :meth:`identity` (the settings a rerun into the same folder must
    share) and :meth:`finish` (after every slide, e.g. one table of all rows) are
    optional.
    """

    #: The stage's name: its folder under the run's output and its report's name.
    name: str = "task"

    @abc.abstractmethod
    def output(self, slide: SlideRef, out: Path) -> Path:
        """Where the result of ``slide`` is kept (under ``out / self.name``)."""

    @abc.abstractmethod
    def is_done(self, slide: SlideRef, out: Path) -> bool:
        """Whether the result of ``slide`` is already there, whole."""

    @abc.abstractmethod
    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        """Make and persist the result of ``slide``; return a small JSON-able summary."""

    def identity(self) -> dict[str, Any]:
        """The settings a run records in ``<out>/<name>/run.json``; a rerun must match."""
        return {"stage": self.name}

    def finish(self, report: CohortReport, out: Path) -> None:  # noqa: B027 (optional hook)
        """Called once after every slide has run (in the client), with the run's report."""

    def stages(self) -> tuple[SlideTask, ...]:
        """The single stages this task is made of (itself; a :class:`Chain` its parts)."""
        return (self,)

    def folder(self, out: Path) -> Path:
        """``out / name``: where this stage keeps its results."""
        return out / self.name


def _check_name(name: str, owner: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name:
        raise ParameterError(
            f"{owner}.name must be a non-empty folder name (no '/', not starting with "
            f"'.'), got {name!r}"
        )
    return name


def _describe(function: Any) -> Any:
    """A function as a run records it: ``module.name`` (a partial's arguments too)."""
    if isinstance(function, functools.partial):
        return {
            "function": _describe(function.func),
            "args": [repr(a) for a in function.args],
            "keywords": {k: repr(v) for k, v in sorted(function.keywords.items())},
        }
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}"


@dataclass(frozen=True)
class FunctionTask(SlideTask):
    """A function of yours as a stage: ``function(slide, folder) -> JSON-able result``.

    The function receives the :class:`SlideRef` and the stage's folder
    (``<out>/<name>``, created) where it may write files of its own (write each under a
    temporary name and rename it into place, so that a file is never half-written).
    What it returns (a number, string, list or dict; NumPy values are converted) is
    written to ``<out>/<name>/<slide_id>.json`` when it returns: that file marks the
    slide as done, and a rerun skips it.

    The function is pickled to the workers: define it at the top level of a module (or
    of your script).  Functions of a script or notebook are sent by value when
    ``cloudpickle`` is installed (it comes with ``cervixwsi[distributed]``).

    Parameters
    ----------
    function : callable
        ``function(slide: SlideRef, folder: pathlib.Path) -> result``.
    name : str, optional
        The stage's name (default: the function's name).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> def size(slide, folder):
    ...     return {"bytes": slide.path.stat().st_size}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     slide = pathlib.Path(tmp) / "a.tiff"
    ...     _ = slide.write_bytes(b"12345")
    ...     task = FunctionTask(size)
    ...     ref = SlideRef.from_path(slide)
    ...     task.run(ref, pathlib.Path(tmp)), task.is_done(ref, pathlib.Path(tmp))
    ({'bytes': 5}, True)
    """

    function: Callable[[SlideRef, Path], Any]
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise ParameterError(f"FunctionTask.function must be callable, got {self.function!r}")
        inner = self.function
        while isinstance(inner, functools.partial):
            inner = inner.func
        name = self.name or getattr(inner, "__name__", "") or "function"
        object.__setattr__(self, "name", _check_name(name.strip("<>"), "FunctionTask"))

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.folder(out) / f"{slide.slide_id}.json"

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        return self.output(slide, out).is_file()

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        folder = self.folder(out)
        folder.mkdir(parents=True, exist_ok=True)
        value = jsonable(self.function(slide, folder))
        text = json.dumps({"slide_id": slide.slide_id, "result": value}, indent=2)
        atomic_write_text(self.output(slide, out), text + "\n")
        return value if isinstance(value, dict) else {"result": value}

    def identity(self) -> dict[str, Any]:
        return {"stage": self.name, "function": _describe(self.function)}

    @staticmethod
    def read(slide: SlideRef | str, folder: str | Path) -> Any:
        """The result a :class:`FunctionTask` recorded for a slide (by ref or id)."""
        slide_id = slide.slide_id if isinstance(slide, SlideRef) else slide
        data = json.loads((Path(folder) / f"{slide_id}.json").read_text(encoding="utf-8"))
        return data["result"]


@dataclass(frozen=True)
class Chain(SlideTask):
    """Several stages run one after the other on each slide (e.g. tissue, heatmap, features).

    Each part keeps its results where it would alone, and a part already done for a
    slide is skipped, so a chain resumes part by part.  A slide is done when every part
    is.  The name is the parts' names joined by ``+``.

    Examples
    --------
    >>> from cervixwsi.cohort import TissueTask, FeatureTask
    >>> Chain((TissueTask(), FeatureTask())).name
    'tissue+features'
    """

    tasks: Sequence[SlideTask]
    name: str = ""

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        if not tasks or not all(isinstance(t, SlideTask) for t in tasks):
            raise ParameterError(f"Chain takes one or more SlideTask objects, got {self.tasks!r}")
        names = [t.name for s in tasks for t in s.stages()]
        if len(set(names)) != len(names):
            raise ParameterError(f"the stages of a Chain need distinct names, got {names}")
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "name", _check_name(self.name or "+".join(names), "Chain"))

    def output(self, slide: SlideRef, out: Path) -> Path:
        return self.tasks[-1].output(slide, out)

    def is_done(self, slide: SlideRef, out: Path) -> bool:
        return all(t.is_done(slide, out) for t in self.tasks)

    def run(self, slide: SlideRef, out: Path) -> Mapping[str, Any]:
        results: dict[str, Any] = {}
        for task in self.tasks:
            if task.is_done(slide, out):
                results[task.name] = "already done"
            else:
                results[task.name] = dict(task.run(slide, out))
        return results

    def identity(self) -> dict[str, Any]:
        return {"stage": self.name, "parts": [t.identity() for t in self.tasks]}

    def finish(self, report: CohortReport, out: Path) -> None:
        for task in self.tasks:
            task.finish(report, out)

    def stages(self) -> tuple[SlideTask, ...]:
        return tuple(s for t in self.tasks for s in t.stages())
