"""Predictors on workers: :class:`ModelSpec`, loaded once per worker process.

A Keras model is large and slow to load, and pickling it into every task would send it
over the network once per slide.  A :class:`ModelSpec` is what travels instead: the
model's file and how to run it.  The first time a process calls :meth:`ModelSpec.load`
it sets up TensorFlow (memory growth on every visible GPU, the CPU thread count) and
loads the model; later calls in that process, from any task or thread, return the same
object.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cervixwsi._validate import check_positive_int
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
        Turn on memory growth on every GPU the worker sees before the model is loaded
        (default True), so that several workers can share a GPU and a worker takes only
        the memory it uses.  Which GPUs a worker sees is set where it starts (see the
        "Scaling out" tutorial: ``CUDA_VISIBLE_DEVICES`` per ``dask worker``).
    loader : callable, optional
        ``loader(path) -> predictor`` for a model of your own (an ONNX file, a
        scikit-learn pipeline, ...): called once per worker process instead of
        cervixwsi's Keras loading (then ``engine``, ``threads`` and ``memory_growth``
        are not used).  It is pickled to the workers: a top-level function.

    Examples
    --------
    >>> spec = ModelSpec("models/patch_cnn.keras", engine="onnxruntime")
    >>> spec.path.endswith("patch_cnn.keras"), spec.engine
    (True, 'onnxruntime')
    """

    path: str | os.PathLike[str]
    engine: str | None = None
    threads: int | None = None
    memory_growth: bool = True
    loader: Callable[[str], Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(Path(self.path).absolute()))
        if self.threads is not None:
            check_positive_int(self.threads, "ModelSpec.threads")
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
                _prepare_tensorflow(self.threads, self.memory_growth)
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


def _prepare_tensorflow(threads: int | None, memory_growth: bool) -> None:
    """Set up TensorFlow in this process, once, before it first runs anything."""
    global _TF_READY
    if _TF_READY:
        return
    from cervixwsi.models._tf import tf

    if memory_growth:
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError) as exc:  # the GPU is already initialised
                logger.warning("cannot turn on memory growth on %s: %s", gpu.name, exc)
    threading = tf.config.threading
    if threads is not None and threading.get_intra_op_parallelism_threads() != threads:
        try:
            threading.set_intra_op_parallelism_threads(threads)
            threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError as exc:  # TensorFlow's runtime is already running
            logger.warning("cannot set TensorFlow's threads to %d: %s", threads, exc)
    _TF_READY = True
