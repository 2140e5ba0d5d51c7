"""Predictors on workers: :class:`ModelSpec`, loaded once per worker process.

A Keras model is large and slow to load, and pickling it into every task would send it
over the network once per slide.  A :class:`ModelSpec` is what travels instead: the
model's file and how to run it.  The first time a process calls :meth:`ModelSpec.load`
it sets up TensorFlow (memory growth on every visible GPU, the process's own GPU
among several, the CPU thread count) and loads the model; later calls in that process,
from any task or thread, return the same object.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cervixwsi._validate import check_int, check_positive_int, is_int
from cervixwsi.errors import ParameterError, WeightsError

__all__ = ["ModelSpec", "loaded_models"]

logger = logging.getLogger("cervixwsi.cohort")

_LOCK = threading.Lock()
_LOADED: dict[tuple[Any, ...], Any] = {}
_TF_READY = False


@dataclass(frozen=True)
class ModelSpec:
    """A patch predictor by reference: its file, loaded once in each worker process.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` file saved by :meth:`cervixwsi.models.PatchClassifier.save`, or a
        folder saved by :meth:`cervixwsi.models.EnsembleClassifier.save`.  Made
        absolute, so workers started elsewhere find it (on a cluster: a path on a file
        system every worker sees).
    engine : {"tensorflow", "onnxruntime"}, optional
        The inference engine (default: the one the model was saved with).
    threads : int, optional
        CPU threads TensorFlow uses in each worker process (its intra-op pool).  Default:
        TensorFlow's (every core).  With several worker processes on one machine give
        each ``cores / workers``, or they compete for the same cores.
    memory_growth : bool
        True (default): memory growth on every GPU the worker sees, as
        :mod:`cervixwsi.models` sets it when it imports TensorFlow (unless
        ``CERVIXWSI_TF_MEMORY_GROWTH=0``), so that several workers can share a GPU and
        a worker takes only the memory it uses.  False: turned off in the worker
        (TensorFlow reserves most of its GPU's memory at the first operation).
    gpu : "auto", int or None
        Which GPU a worker process uses, set before it loads the model
        (:func:`cervixwsi.models.assign_gpu`).  ``"auto"`` (default): on a machine
        whose workers each see several GPUs, worker ``i`` (its Dask name on a
        ``LocalCluster``, its number in a process pool: see
        :func:`cervixwsi.models.worker_index`) uses GPU ``i % n`` and no other, so
        ``n`` workers use every GPU; a worker that sees one GPU (started with its own
        ``CUDA_VISIBLE_DEVICES``) uses it; workers started by dask-cuda (which lists
        each worker's own GPU first) use their first.  An int ``k``: the ``k``-th GPU
        the worker sees (``0`` with dask-cuda).  ``None``: every GPU stays visible
        (TensorFlow computes on the first).  No GPU: ignored.
    gpu_memory : int, optional
        MiB of its GPU's memory a worker may use (a logical device of that size), so
        that several workers share a GPU within bounds; default: no limit.  Needs
        ``gpu`` not None.
    loader : callable, optional
        ``loader(path) -> predictor`` for a model of your own (an ONNX file, a
        scikit-learn pipeline, ...): called once per worker process instead of
        cervixwsi's Keras loading (then ``engine``, ``threads``, ``memory_growth``,
        ``gpu`` and ``gpu_memory`` are not used; call
        :func:`cervixwsi.models.assign_gpu` in it to place a TensorFlow model of your
        own).  It is pickled to the workers: a top-level function.

    The TensorFlow settings apply once per process, at its first model: a process
    that loads a second model keeps its devices and threads.

    Examples
    --------
    >>> spec = ModelSpec("models/patch_cnn.keras", engine="onnxruntime")
    >>> spec.path.endswith("patch_cnn.keras"), spec.engine, spec.gpu
    (True, 'onnxruntime', 'auto')
    >>> ModelSpec("models/patch_cnn.keras", gpu=0, gpu_memory=8192).gpu_memory
    8192
    """

    path: str | os.PathLike[str]
    engine: str | None = None
    threads: int | None = None
    memory_growth: bool = True
    loader: Callable[[str], Any] | None = None
    gpu: int | str | None = "auto"
    gpu_memory: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(Path(self.path).absolute()))
        if self.threads is not None:
            check_positive_int(self.threads, "ModelSpec.threads")
        if is_int(self.gpu):
            object.__setattr__(self, "gpu", check_int(self.gpu, "ModelSpec.gpu", min=0))
        elif self.gpu is not None and self.gpu != "auto":
            raise ParameterError(
                f"ModelSpec.gpu must be 'auto', a GPU index >= 0 or None, got {self.gpu!r}"
            )
        if self.gpu_memory is not None:
            memory = check_positive_int(self.gpu_memory, "ModelSpec.gpu_memory")
            object.__setattr__(self, "gpu_memory", memory)
            if self.gpu is None:
                raise ParameterError(
                    "ModelSpec.gpu_memory limits the worker's own GPU: give gpu='auto' or "
                    "a GPU index with it, not gpu=None"
                )
        if self.loader is not None and not callable(self.loader):
            raise ParameterError(f"ModelSpec.loader must be callable, got {self.loader!r}")

    @property
    def name(self) -> str:
        """The model's file name, for reports."""
        return Path(self.path).name

    @property
    def file(self) -> str:
        """The model's absolute path."""
        return str(self.path)

    def identity(self) -> dict[str, Any]:
        """What a run records of the model (its path and engine)."""
        loader = self.loader
        name = None
        if loader is not None:
            qualname = getattr(loader, "__qualname__", type(loader).__qualname__)
            name = f"{getattr(loader, '__module__', '?')}.{qualname}"
        return {"path": self.file, "engine": self.engine, "loader": name}

    def load(self) -> Any:
        """The predictor, loaded on the first call in this process and cached.

        The cache key includes the file's modification time, so a model saved again
        under the same name is loaded anew.  A model of the default kind is a
        :class:`~cervixwsi.models.PatchClassifier` (a ``.keras`` file) or an
        :class:`~cervixwsi.models.EnsembleClassifier` (a folder).

        Raises
        ------
        WeightsError
            If there is no model at :attr:`path`, or it is not one cervixwsi saved.
        """
        where = Path(self.path)
        try:
            stat = where.stat()
        except OSError as exc:
            raise WeightsError(f"no model at {where}: {exc.strerror or exc}") from exc
        key = (self.file, self.engine, self.identity()["loader"], stat.st_mtime_ns)
        with _LOCK:
            model = _LOADED.get(key)
            if model is None and self.loader is not None:
                model = self.loader(self.file)
                _LOADED[key] = model
            elif model is None:
                _prepare_tensorflow(
                    self.threads, self.memory_growth, gpu=self.gpu, gpu_memory=self.gpu_memory
                )
                from cervixwsi.models import EnsembleClassifier, PatchClassifier

                if where.is_dir():
                    model = EnsembleClassifier.load(where, engine=self.engine)
                else:
                    model = PatchClassifier.load(where, engine=self.engine)
                _LOADED[key] = model
                logger.info("process %d loaded the model %s", os.getpid(), where)
        return model


def loaded_models() -> int:
    """How many models this process has loaded through :meth:`ModelSpec.load`."""
    with _LOCK:
        return len(_LOADED)


def _gpu_index(gpu: int | str | None) -> int | None:
    """The ``index`` for :func:`~cervixwsi.models.assign_gpu` of a ``ModelSpec.gpu``."""
    if isinstance(gpu, int):
        return gpu
    # dask-cuda gives each worker every GPU, its own first (CUDA_VISIBLE_DEVICES rotated)
    return 0 if "dask_cuda" in sys.modules else None


def _prepare_tensorflow(
    threads: int | None,
    memory_growth: bool,
    *,
    gpu: int | str | None = None,
    gpu_memory: int | None = None,
) -> None:
    """Set up TensorFlow in this process, once, before it first runs anything.

    Memory growth (``True``: as the import set it; ``False``: off), then the process's
    GPU (``gpu``: see :class:`ModelSpec`; ``None`` keeps every GPU, e.g. to train on
    all), then the CPU threads.
    """
    global _TF_READY
    if _TF_READY:
        return
    from cervixwsi.models._devices import assign_gpu, configure_memory_growth
    from cervixwsi.models._tf import tf

    configure_memory_growth(tf, None if memory_growth else False)
    if gpu is not None:
        assign_gpu(_gpu_index(gpu), memory_limit=gpu_memory)
    threading = tf.config.threading
    if threads is not None and threading.get_intra_op_parallelism_threads() != threads:
        try:
            threading.set_intra_op_parallelism_threads(threads)
            threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError as exc:  # TensorFlow's runtime is already running
            logger.warning("cannot set TensorFlow's threads to %d: %s", threads, exc)
    _TF_READY = True
