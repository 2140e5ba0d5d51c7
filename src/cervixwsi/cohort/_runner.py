"""Running a task over many slides: :func:`run_cohort` and :func:`cohort_executor`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import importlib
import json
import logging
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from cervixwsi._io import atomic_write_text
from cervixwsi._store import StoreFormat, jsonable
from cervixwsi._validate import check_choice, check_positive_int
from cervixwsi._version import __version__
from cervixwsi.cohort._report import CohortReport, CohortRunError, SlideOutcome
from cervixwsi.cohort._slides import SlideRef, SlideSource, find_slides
from cervixwsi.cohort._task import FunctionTask, SlideTask
from cervixwsi.cohort._worker import dumps_task, run_one, run_serialized
from cervixwsi.errors import ParameterError, ResultFileError, StoreMismatchError

__all__ = ["cohort_executor", "describe_executor", "run_cohort"]

logger = logging.getLogger("cervixwsi.cohort")

_RUN_FILE = "run.json"
_RUN_FORMAT = "cervixwsi.CohortStage"


def _dask_client(executor: object) -> bool:
    """Whether ``executor`` is a Dask distributed ``Client`` (without importing Dask)."""
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(executor, distributed.Client)


def describe_executor(executor: object) -> str:
    """What runs the slides, in words (recorded in the report).

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> describe_executor(None)
    'serial (this process)'
    >>> with ThreadPoolExecutor(3) as pool:
    ...     describe_executor(pool)
    'ThreadPoolExecutor (3 workers)'
    """
    if executor is None:
        return "serial (this process)"
    if _dask_client(executor):
        client: Any = executor
        try:
            workers = str(len(client.scheduler_info()["workers"]))
        except Exception:  # a scheduler that does not answer: the run will say more
            workers = "?"
        return f"Dask distributed Client ({client.scheduler.address}, {workers} workers)"
    count = getattr(executor, "_max_workers", None)
    name = type(executor).__name__
    return f"{name} ({count} workers)" if count else name


def _check_identity(stage: SlideTask, out: Path) -> None:
    """Record the stage's settings in its folder, or check them against a finished run's."""
    folder = stage.folder(out)
    path = folder / _RUN_FILE
    new = jsonable(stage.identity())
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            old = data["identity"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResultFileError(f"{path} is not a readable cohort stage record: {exc}") from exc
        differences = StoreFormat.differences(old, new)
        if differences:
            raise StoreMismatchError(
                f"{folder} holds results of stage {stage.name!r} made with other settings "
                f"({'; '.join(differences)}): use another output folder, or delete it"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": _RUN_FORMAT, "cervixwsi_version": __version__, "identity": new}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _lost(slide: SlideRef, exc: BaseException) -> SlideOutcome:
    """The outcome of a slide whose worker did not return (died, or was cancelled)."""
    message = str(exc) or repr(exc)
    if isinstance(exc, concurrent.futures.process.BrokenProcessPool):
        message = (
            "a worker process died (killed, out of memory, or os._exit) while this slide "
            "ran or waited: a process pool stops at its first lost worker. What was saved "
            f"is kept; run again to finish it ({message})"
        )
    return SlideOutcome(
        slide.slide_id, str(slide.path), "failed", error_type=type(exc).__name__, message=message
    )


def _is_done(task: SlideTask, slide: SlideRef, out: Path) -> bool:
    try:
        return task.is_done(slide, out)
    except Exception:  # e.g. an unreadable result: the worker will meet and report it
        return False


def run_cohort(
    slides: SlideSource,
    task: SlideTask | Callable[[SlideRef, Path], Any],
    out: str | os.PathLike[str],
    *,
    executor: Any = None,
    on_error: Literal["raise", "report"] = "raise",
    resources: Mapping[str, float] | None = None,
    progress: bool = True,
) -> CohortReport:
    """Run a per-slide stage over many slides, on any executor, resumably.

    Each slide's result is kept where the stage keeps it (see :class:`SlideTask`), so a
    slide already finished is skipped (not even sent to a worker), and a slide whose
    worker died is finished, from what it had saved, by the next run.  A slide that
    raises an error is recorded (id, error type, message, traceback) and the other
    slides go on; at the end the report is written to ``<out>/<stage>-report.json`` and
    ``<out>/<stage>-report.txt`` and, if any slide failed, one
    :class:`CohortRunError` names them all (or the report is returned, with
    ``on_error="report"``).  One progress bar counts the slides in this process.

    Parameters
    ----------
    slides
        A manifest CSV, a folder, slide paths, :class:`SlideRef` objects or a
        :class:`cervixwsi.synthetic.Cohort` (see :func:`find_slides`).
    task : SlideTask or callable
        The stage (:class:`TissueTask`, :class:`PatchTask`, :class:`HeatmapTask`,
        :class:`FeatureTask`, a :class:`Chain`, ...), or a function
        ``function(slide, folder) -> result`` (made a :class:`FunctionTask`).
    out : str or PathLike
        The run's folder; each stage writes under ``out/<stage>/``.  On a cluster it
        must be on a file system every worker sees (and so must the slides).
    executor : Executor or dask.distributed.Client, optional
        What runs the slides: ``None`` (default) runs them one by one in this process;
        any :class:`concurrent.futures.Executor` (a ``ProcessPoolExecutor``, a
        ``ThreadPoolExecutor``) or a Dask ``Client`` (of a ``LocalCluster`` or of a
        cluster's scheduler) spreads them.  :func:`cohort_executor` makes one.  A
        process pool should use the ``"spawn"`` start method (TensorFlow and thread
        pools do not survive ``fork``).
    on_error : {"raise", "report"}
        What to do when some slides failed: raise :class:`CohortRunError` (default) or
        return the report.
    resources : mapping, optional
        Dask only: the worker resources each slide needs, e.g. ``{"GPU": 1}`` to run
        heatmaps only on workers started with ``--resources GPU=1``.
    progress : bool
        Show a progress bar over the slides.

    Returns
    -------
    CohortReport

    Raises
    ------
    CohortRunError
        If a slide failed (after every other slide has run).
    StoreMismatchError
        If ``out`` holds results of the same stage made with other settings.
    ParameterError
        If the slides cannot be listed, or ``executor`` is not an executor.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> def size(slide, folder):
    ...     return slide.path.stat().st_size
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = [pathlib.Path(tmp) / f"s{i}.tiff" for i in range(3)]
    ...     for i, p in enumerate(paths):
    ...         _ = p.write_bytes(b"x" * i)
    ...     with ThreadPoolExecutor(2) as pool:
    ...         report = run_cohort(paths, size, pathlib.Path(tmp) / "run", executor=pool,
    ...                             progress=False)
    ...     again = run_cohort(paths, size, pathlib.Path(tmp) / "run", progress=False)
    ...     [o.result for o in report.outcomes], again.counts["skipped"]
    ([{'result': 0}, {'result': 1}, {'result': 2}], 3)
    """
    from tqdm.auto import tqdm

    check_choice(on_error, "run_cohort.on_error", ("raise", "report"))
    if not isinstance(task, SlideTask):
        if not callable(task):
            raise ParameterError(
                f"run_cohort takes a SlideTask or a function (slide, folder), got {task!r}"
            )
        task = FunctionTask(task)
    dask = _dask_client(executor)
    if executor is not None and not dask and not isinstance(executor, concurrent.futures.Executor):
        raise ParameterError(
            "executor must be None, a concurrent.futures.Executor or a Dask distributed "
            f"Client, got {executor!r}"
        )
    refs = find_slides(slides)
    root = Path(out).absolute()
    root.mkdir(parents=True, exist_ok=True)
    for stage in task.stages():
        _check_identity(stage, root)

    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    outcomes: list[SlideOutcome | None] = [None] * len(refs)
    pending = []
    for i, ref in enumerate(refs):
        if _is_done(task, ref, root):
            outcomes[i] = SlideOutcome(ref.slide_id, str(ref.path), "skipped")
        else:
            pending.append(i)
    bar = tqdm(
        total=len(refs),
        initial=len(refs) - len(pending),
        desc=task.name,
        unit="slide",
        disable=not progress,
    )
    failures = 0

    def record(i: int, outcome: SlideOutcome) -> None:
        nonlocal failures
        outcomes[i] = outcome
        failures += outcome.status == "failed"
        if failures:
            bar.set_postfix(failed=failures, refresh=False)
        bar.update()

    interrupted = False
    try:
        if executor is None:
            for i in pending:
                record(i, run_one(task, refs[i], root))
        elif dask:
            _run_dask(executor, task, refs, pending, root, resources, record)
        else:
            _run_executor(executor, task, refs, pending, root, record)
    except BaseException:
        interrupted = True
        raise
    finally:
        bar.close()
        final = tuple(
            o if o is not None else SlideOutcome(r.slide_id, str(r.path), "not run")
            for o, r in zip(outcomes, refs, strict=True)
        )
        report = CohortReport(
            task.name,
            str(root),
            describe_executor(executor),
            started,
            time.perf_counter() - t0,
            final,
        )
        if not interrupted:
            task.finish(report, root)
        report.write()
    c = report.counts
    logger.info(
        "%s: %d slides, %d done, %d skipped, %d failed in %.1f s",
        task.name,
        len(refs),
        c["done"],
        c["skipped"],
        c["failed"],
        report.seconds,
    )
    if report.failed and on_error == "raise":
        raise CohortRunError(report)
    return report


def _run_executor(
    executor: concurrent.futures.Executor,
    task: SlideTask,
    refs: tuple[SlideRef, ...],
    pending: list[int],
    root: Path,
    record: Callable[[int, SlideOutcome], None],
) -> None:
    payload = dumps_task(task)
    futures: dict[concurrent.futures.Future[SlideOutcome], int] = {}
    try:
        for i in pending:
            futures[executor.submit(run_serialized, payload, refs[i], str(root))] = i
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died, or the executor was shut down
                outcome = _lost(refs[i], exc)
            record(i, outcome)
    finally:
        for future in futures:
            future.cancel()


def _run_dask(
    client: Any,
    task: SlideTask,
    refs: tuple[SlideRef, ...],
    pending: list[int],
    root: Path,
    resources: Mapping[str, float] | None,
    record: Callable[[int, SlideOutcome], None],
) -> None:
    as_completed = importlib.import_module("distributed").as_completed
    if not pending:
        return
    # The task goes to every worker once, not with each slide.
    payload = client.scatter(dumps_task(task), broadcast=True, hash=False)
    token = uuid.uuid4().hex[:8]
    futures: dict[Any, int] = {}
    try:
        for i in pending:
            future = client.submit(
                run_serialized,
                payload,
                refs[i],
                str(root),
                key=f"cervixwsi-{task.name}-{refs[i].slide_id}-{token}",
                pure=False,
                resources=dict(resources) if resources else None,
            )
            futures[future] = i
        for future in as_completed(list(futures)):
            i = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # e.g. KilledWorker: its workers died again and again
                outcome = _lost(refs[i], exc)
            record(i, outcome)
    finally:
        unfinished = [f for f in futures if not f.done()]
        if unfinished:
            client.cancel(unfinished)
        payload.release()


@contextlib.contextmanager
def cohort_executor(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    threads: bool = False,
) -> Iterator[Any]:
    """The executor of ``--workers N`` / ``--scheduler ADDRESS``, closed at the end.

    Parameters
    ----------
    workers : int, optional
        Without ``scheduler``: ``None`` or 1 runs in this process (no executor), more
        gives a ``ProcessPoolExecutor`` of that many processes (``"spawn"`` start
        method), or a ``ThreadPoolExecutor`` with ``threads=True``.  With
        ``scheduler="local"``: the number of worker processes of the ``LocalCluster``
        (default: one per CPU core).
    scheduler : str, optional
        ``"local"``: a Dask ``LocalCluster`` on this machine (one thread per worker
        process); else the address of a running Dask scheduler (``tcp://host:8786``),
        whose workers run the slides.  Needs ``cervixwsi[distributed]``.
    threads : bool
        Threads instead of processes for ``workers``.

    Yields
    ------
    None, concurrent.futures.Executor or dask.distributed.Client

    Raises
    ------
    ParameterError
        If ``workers`` is not a positive integer, both a worker count and a scheduler
        address are given, Dask is not installed, or the scheduler cannot be reached.

    Examples
    --------
    >>> with cohort_executor(2, threads=True) as pool:
    ...     describe_executor(pool)
    'ThreadPoolExecutor (2 workers)'
    """
    if workers is not None:
        workers = check_positive_int(workers, "cohort_executor.workers")
    if scheduler is None:
        if workers is None or workers == 1:
            yield None
            return
        pool: concurrent.futures.Executor
        if threads:
            pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="cohort")
        else:
            context = multiprocessing.get_context("spawn")
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        with pool:
            yield pool
        return
    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise ParameterError(
            "a Dask scheduler needs Dask distributed: pip install 'cervixwsi[distributed]'"
        ) from None
    if scheduler == "local":
        n = workers or os.cpu_count() or 1
        with (
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",  # a cluster on this machine listens on loopback only
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    if workers is not None:
        raise ParameterError(
            f"give a worker count or a scheduler address, not both (workers={workers}, "
            f"scheduler={scheduler!r}): a cluster's workers are started with `dask worker`"
        )
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ParameterError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from exc
    with client:
        yield client
