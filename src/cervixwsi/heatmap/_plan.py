"""The positions a heatmap run predicts, how they are read, and the check of predictions."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import PredictorError


@dataclass(frozen=True)
class _Plan:
    """The positions to predict, in prediction order, and the heatmap grid."""

    x: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    grid_shape: tuple[int, int]

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x, self.y):
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
        h.update(repr(self.grid_shape).encode())
        return h.hexdigest()


class _Reads:
    """Patches of a run's batches, read ahead of the predictor by background threads.

    The caller asks for the batches in order (:meth:`get`) and reads itself whatever
    patches of the one it asks for nobody has begun; ``threads`` background threads help
    it with that batch first, and otherwise each take the next batch not yet taken, as
    long as it lies at most ``depth`` batches beyond the caller's, and write its patches,
    in order, into that batch's preallocated array.  So the first batch is read by every
    thread at once, and later ones, with a predictor slower than reading, by one thread
    at a time while the predictor works; with a faster one (a GPU) the threads share the
    batch the predictor waits for.  The threads start with the first :meth:`get` and end
    with the run (:meth:`__exit__`).  An error of a read is raised by :meth:`get` of its
    batch, after every earlier batch was handed out.
    """

    def __init__(
        self,
        read: Callable[[int, npt.NDArray[np.uint8]], None],
        batches: Sequence[npt.NDArray[np.intp]],
        patch_shape: tuple[int, int, int],
        *,
        depth: int,
        threads: int,
    ) -> None:
        self._read = read
        self._batches = batches
        self._shape = patch_shape
        self._depth = depth
        self._cond = threading.Condition()
        self._jobs: dict[int, _Job] = {}
        self._taken = 0  # batches taken by a thread or the caller
        self._given = 0  # batches asked for by the caller
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"heatmap-read-{i}", daemon=True)
            for i in range(min(threads, max(len(batches) - 1, 0)))
        ]
        self._started = False

    def __enter__(self) -> _Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._started:
            for thread in self._threads:
                thread.join()

    def _job(self, index: int) -> _Job:
        job = self._jobs.get(index)
        if job is None:
            batch = self._batches[index]
            job = _Job(batch, np.empty((len(batch), *self._shape), np.uint8))
            self._jobs[index] = job
        return job

    def _next_job(self) -> _Job | None:
        """What a background thread reads next (waiting for it), or None once closed."""
        with self._cond:
            while not self._closed:
                current = self._jobs.get(self._given - 1)
                if current is not None and current.begun < len(current.batch):
                    return current  # the caller waits for it: help
                if self._taken < min(len(self._batches), self._given + self._depth):
                    self._taken += 1
                    return self._job(self._taken - 1)
                self._cond.wait()
        return None

    def _work(self) -> None:
        while (job := self._next_job()) is not None and self._fill(job):
            pass

    def _fill(self, job: _Job) -> bool:
        """Read the patches of ``job`` nobody has begun; False after an error."""
        n = len(job.batch)
        while True:
            with self._cond:
                if self._closed or job.error is not None:
                    return job.error is None
                k = job.begun
                if k >= n:
                    return True
                job.begun = k + 1
            try:
                self._read(int(job.batch[k]), job.patches[k])
            except BaseException as exc:  # raised in the caller by get()
                with self._cond:
                    job.error = exc
                    job.begun = n
                    self._cond.notify_all()
                return False
            with self._cond:
                job.finished += 1
                if job.finished == n:
                    self._cond.notify_all()

    def get(self, index: int) -> npt.NDArray[np.uint8]:
        """The patches of batch ``index`` (the next one), reading some of them if need be."""
        with self._cond:
            job = self._job(index)
            self._taken = max(self._taken, index + 1)
            self._given = index + 1
            self._cond.notify_all()
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        self._fill(job)
        with self._cond:
            while job.finished < len(job.batch) and job.error is None:
                self._cond.wait()
            del self._jobs[index]
        if job.error is not None:
            raise job.error
        return job.patches


@dataclass
class _Job:
    """One batch being read: its positions, its patches, and how far reading has got."""

    batch: npt.NDArray[np.intp]
    patches: npt.NDArray[np.uint8]
    begun: int = 0
    finished: int = 0
    error: BaseException | None = None


def _check_predictions(
    values: Any, batch: npt.NDArray[np.intp], index: int, plan: _Plan
) -> npt.NDArray[np.float32]:
    arr = np.asarray(values)
    where = (
        f"batch {index} (positions {int(batch[0])}..{int(batch[-1])}, first patch at level-0 "
        f"({int(plan.x[batch[0]])}, {int(plan.y[batch[0]])}))"
    )
    if arr.shape != (len(batch),):
        arr = arr.reshape(-1) if arr.size == len(batch) else arr
        if arr.shape != (len(batch),):
            raise PredictorError(
                f"the predictor returned shape {np.shape(values)} for {len(batch)} patches in "
                f"{where}; it must return one probability per patch"
            )
    if not np.issubdtype(arr.dtype, np.number):
        raise PredictorError(f"the predictor returned {arr.dtype} values in {where}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise PredictorError(f"the predictor returned NaN or infinite values in {where}")
    if arr.min() < 0 or arr.max() > 1:
        raise PredictorError(
            f"the predictor returned values in [{arr.min():g}, {arr.max():g}] in {where}; "
            "tumor probabilities must lie in [0, 1]"
        )
    return arr


def public_name(qualified: str) -> str:
    """A dotted name without its private (``_``-prefixed) modules.

    Examples
    --------
    >>> public_name("cervixwsi.models._training.PatchClassifier:small")
    'cervixwsi.models.PatchClassifier:small'
    >>> public_name("builtins.object")
    'builtins.object'
    """
    head, sep, tail = qualified.partition(":")
    parts = head.split(".")
    kept = [q for q in parts[:-1] if not q.startswith("_")] + parts[-1:]
    return ".".join(kept) + sep + tail
