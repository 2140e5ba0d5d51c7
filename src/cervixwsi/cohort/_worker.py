"""What runs in a worker: one slide of a task, its errors caught and recorded."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from cervixwsi._store import jsonable
from cervixwsi.cohort._report import SlideOutcome
from cervixwsi.cohort._slides import SlideRef
from cervixwsi.cohort._task import SlideTask

__all__ = ["dumps_task", "run_one", "run_serialized"]

logger = logging.getLogger("cervixwsi.cohort")

_CACHE_LOCK = threading.Lock()
_TASKS: dict[str, SlideTask] = {}
_MAX_CACHED = 8


def dumps_task(task: SlideTask) -> bytes:
    """The task pickled for the workers (by cloudpickle when installed).

    cloudpickle sends functions of a script or a notebook by value, so a
    :class:`FunctionTask` defined there runs on workers that cannot import it.
    """
    try:
        cloudpickle: Any = importlib.import_module("cloudpickle")
    except ImportError:
        return pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def _task_of(payload: bytes) -> SlideTask:
    """The task of a payload, unpickled once per process (its predictor too)."""
    key = hashlib.sha1(payload, usedforsecurity=False).hexdigest()
    with _CACHE_LOCK:
        task = _TASKS.get(key)
        if task is None:
            task = pickle.loads(payload)  # our own payload, from the client
            if len(_TASKS) >= _MAX_CACHED:
                _TASKS.pop(next(iter(_TASKS)))
            _TASKS[key] = task
    return task


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_one(task: SlideTask, slide: SlideRef, out: Path) -> SlideOutcome:
    """Run ``task`` on ``slide``; never raises for the slide's own errors.

    A slide already done (by another run meanwhile) is skipped.  An ``Exception`` is
    recorded in the outcome (its type, message and traceback); ``KeyboardInterrupt``
    and ``SystemExit`` pass through.
    """
    start = time.perf_counter()
    worker = _worker_name()
    try:
        if task.is_done(slide, out):
            return SlideOutcome(slide.slide_id, str(slide.path), "skipped", 0.0, worker)
        result = dict(jsonable(dict(task.run(slide, out))))
    except Exception as exc:
        logger.info("slide %s failed in %s: %s", slide.slide_id, task.name, exc)
        return SlideOutcome(
            slide.slide_id,
            str(slide.path),
            "failed",
            time.perf_counter() - start,
            worker,
            error_type=type(exc).__name__,
            message=str(exc) or repr(exc),
            traceback=traceback.format_exc(),
        )
    return SlideOutcome(
        slide.slide_id, str(slide.path), "done", time.perf_counter() - start, worker, result
    )


def run_serialized(payload: bytes, slide: SlideRef, out: str) -> SlideOutcome:
    """:func:`run_one` with the task as sent by :func:`dumps_task` (what workers run)."""
    try:
        task = _task_of(payload)
    except Exception as exc:
        return SlideOutcome(
            slide.slide_id,
            str(slide.path),
            "failed",
            0.0,
            _worker_name(),
            error_type=type(exc).__name__,
            message=f"the worker cannot unpickle the task: {exc}",
            traceback=traceback.format_exc(),
        )
    return run_one(task, slide, Path(out))
