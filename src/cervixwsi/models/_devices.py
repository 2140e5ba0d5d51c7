"""Where TensorFlow runs: GPU memory growth, one GPU per worker, several GPUs in training.

TensorFlow fixes its devices when it runs its first operation, so everything here
happens before that:

* **Memory growth.** When :mod:`cervixwsi.models` first imports TensorFlow it turns on
  memory growth on every GPU it sees (:func:`configure_memory_growth`), so a process
  takes only the GPU memory it uses instead of nearly all of it, and several processes
  can share a GPU.  ``CERVIXWSI_TF_MEMORY_GROWTH=0`` in the environment opts out
  (TensorFlow's default: each process reserves most of each GPU's memory at its first
  operation).  A GPU whose memory growth or logical devices you configured yourself
  before the import is left as you set it.
* **One GPU per worker.** :func:`assign_gpu` restricts a worker process to one GPU,
  round robin by the worker's index (:func:`worker_index`: a Dask worker's name, the
  process number in a process pool), optionally with a memory limit so that several
  workers share a GPU.  :class:`cervixwsi.cohort.ModelSpec` calls it before it loads a
  model in a worker (``gpu="auto"``).
* **Several GPUs in training.** :func:`training_strategy` is what
  :meth:`PatchClassifier.fit <cervixwsi.models.PatchClassifier.fit>` trains under:
  ``tf.distribute.MirroredStrategy`` over every GPU when more than one is visible,
  TensorFlow's default strategy otherwise.

Without a GPU all of this is a no-op (logged once).  TensorFlow is imported only when
one of these functions is called (through :mod:`cervixwsi.models._tf`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

from cervixwsi._validate import check_int, check_positive_int, is_int
from cervixwsi.errors import ParameterError

__all__ = [
    "MEMORY_GROWTH_ENV",
    "WORKER_INDEX_ENV",
    "assign_gpu",
    "configure_memory_growth",
    "memory_growth_requested",
    "training_strategy",
    "worker_index",
]

logger = logging.getLogger(__name__)

#: Environment variable: ``0`` (or ``false``, ``no``, ``off``) leaves memory growth off.
MEMORY_GROWTH_ENV: Final = "CERVIXWSI_TF_MEMORY_GROWTH"
#: Environment variable: this process's worker index (overrides the one found).
WORKER_INDEX_ENV: Final = "CERVIXWSI_WORKER_INDEX"

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})
_LOG_LOCK = threading.Lock()
_LOGGED: set[str] = set()


def _tensorflow() -> Any:
    """The ``tensorflow`` module (imported through ``_tf``; tests replace this function)."""
    from cervixwsi.models._tf import tf

    return tf


def _log_once(key: str, level: int, message: str, *args: Any) -> None:
    with _LOG_LOCK:
        if key in _LOGGED:
            return
        _LOGGED.add(key)
    logger.log(level, message, *args)


# ---------------------------------------------------------------------- memory growth


def memory_growth_requested() -> bool:
    """Whether the environment asks for memory growth (``CERVIXWSI_TF_MEMORY_GROWTH``).

    Unset, empty, ``1``, ``true``, ``yes`` or ``on``: yes (the default); ``0``,
    ``false``, ``no`` or ``off``: no.  Another value is logged and taken as yes.

    Examples
    --------
    >>> import os
    >>> os.environ["CERVIXWSI_TF_MEMORY_GROWTH"] = "0"
    >>> memory_growth_requested()
    False
    >>> del os.environ["CERVIXWSI_TF_MEMORY_GROWTH"]
    >>> memory_growth_requested()
    True
    """
    value = os.environ.get(MEMORY_GROWTH_ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        _log_once(
            f"env:{value}",
            logging.WARNING,
            "%s=%r is not 0/1, false/true, no/yes or off/on: memory growth stays on",
            MEMORY_GROWTH_ENV,
            value,
        )
    return True


def configure_memory_growth(tf: Any = None, enable: bool | None = None) -> list[str]:
    """Set memory growth on every GPU TensorFlow sees; return the names of those set.

    Parameters
    ----------
    tf : module, optional
        The ``tensorflow`` module (default: imported through :mod:`cervixwsi.models`).
    enable : bool, optional
        ``None`` (what :mod:`cervixwsi.models` does when it imports TensorFlow): on,
        unless ``CERVIXWSI_TF_MEMORY_GROWTH=0``, and only if no GPU's memory growth
        was set before (a setting of yours is kept: TensorFlow needs the same on every
        GPU).  ``True`` / ``False``: that, on every GPU (an explicit choice, such as
        ``ModelSpec(memory_growth=False)``).  A GPU with logical devices (a memory
        limit) is skipped either way: its limit rules.

    Returns
    -------
    list of str
        The physical GPUs whose setting was made (empty without a GPU).  When
        TensorFlow already runs (it has run an operation), the setting cannot change:
        this is logged and the GPU left out.

    Examples
    --------
    >>> configure_memory_growth() == [] or "GPU" in configure_memory_growth()[0]
    True
    """
    if enable is None and not memory_growth_requested():
        logger.debug("%s opts out: GPU memory growth left to TensorFlow", MEMORY_GROWTH_ENV)
        return []
    tf = _tensorflow() if tf is None else tf
    config = tf.config
    gpus = list(config.list_physical_devices("GPU"))
    if not gpus:
        return []
    if enable is None:
        chosen = [g for g in gpus if config.experimental.get_memory_growth(g) is not None]
        if chosen:
            logger.debug("memory growth already set on %s: left as it is", chosen[0].name)
            return []
    done = []
    for gpu in gpus:
        if config.get_logical_device_configuration(gpu):
            logger.debug("%s has logical devices: memory growth not set", gpu.name)
            continue
        try:
            config.experimental.set_memory_growth(gpu, enable is not False)
        except (RuntimeError, ValueError) as exc:  # TensorFlow already runs on it
            logger.warning(
                "cannot set memory growth on %s (TensorFlow already runs: set it before the "
                "first TensorFlow operation): %s",
                gpu.name,
                exc,
            )
            continue
        done.append(gpu.name)
    if done:
        logger.debug("memory growth %s on %s", "off" if enable is False else "on", ", ".join(done))
    return done


# -------------------------------------------------------------------- one GPU a worker


def _index_of_name(name: object) -> int | None:
    """A worker index in a Dask worker's name: ``3``, ``"3"`` or ``"gpu-node-3"``."""
    if is_int(name):
        value = int(name)  # type: ignore[call-overload]
        return value if value >= 0 else None
    if isinstance(name, str):
        match = re.fullmatch(r"(?:.*-)?(\d+)", name)
        if match:
            return int(match.group(1))
    return None


def _dask_worker_name() -> object:
    """The name of the Dask worker this runs in, or ``None`` (Dask is never imported)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.get_worker().name
    except (ValueError, AttributeError):  # not in a worker
        return None


def worker_index() -> int | None:
    """This process's index among the workers of its machine, or ``None`` if none is known.

    In order: ``CERVIXWSI_WORKER_INDEX`` from the environment; the name of the Dask
    worker it runs in, when it is a number (a ``LocalCluster`` names its workers 0, 1,
    ...) or ends in ``-<number>`` (``dask worker --name gpu --nworkers 4`` names them
    ``gpu-0`` ... ``gpu-3``); the number of a process that Python's
    :mod:`multiprocessing` started (the workers of a ``ProcessPoolExecutor`` and of a
    Dask cluster's nannies are 0, 1, ... in the order they were started).

    Raises
    ------
    ParameterError
        If ``CERVIXWSI_WORKER_INDEX`` is set but not an integer >= 0.

    Examples
    --------
    >>> import os
    >>> os.environ["CERVIXWSI_WORKER_INDEX"] = "3"
    >>> worker_index()
    3
    >>> del os.environ["CERVIXWSI_WORKER_INDEX"]
    """
    env = os.environ.get(WORKER_INDEX_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise ParameterError(
                f"{WORKER_INDEX_ENV} must be an integer >= 0 (a worker index), got {env!r}"
            )
        return int(env)
    index = _index_of_name(_dask_worker_name())
    if index is not None:
        return index
    identity = getattr(multiprocessing.current_process(), "_identity", ())
    if identity:  # the n-th child of its parent: (n,) from 1
        return int(identity[-1]) - 1
    return None


def assign_gpu(index: int | None = None, *, memory_limit: int | None = None) -> str | None:
    """Restrict this process's TensorFlow to one GPU, chosen round robin by worker index.

    Call it in a worker process before TensorFlow runs anything there (a cohort's
    :class:`~cervixwsi.cohort.ModelSpec` does, with ``gpu="auto"``): worker ``i`` of a
    machine with ``n`` GPUs gets GPU ``i % n``, so ``n`` workers use every GPU once and
    more workers share them evenly.  The other GPUs are hidden from the process
    (``tf.config.set_visible_devices``), so it neither computes nor reserves memory on
    them.

    Parameters
    ----------
    index : int, optional
        The worker's index; default :func:`worker_index`.  Outside a worker (no index
        found) a process that sees one GPU uses it and one that sees several keeps
        them all (to train on all of them).
    memory_limit : int, optional
        MiB of the GPU's memory this process may use: a logical device of that size
        (``tf.config.set_logical_device_configuration``), so several workers share a
        GPU without one taking all of it.  It replaces memory growth on that GPU.

    Returns
    -------
    str or None
        The physical GPU now used (e.g. ``"/physical_device:GPU:1"``), or ``None``
        when nothing was restricted: no GPU (logged once: TensorFlow runs on the CPU),
        several GPUs and no worker index, or TensorFlow already running (logged).

    Raises
    ------
    ParameterError
        If ``index`` is not an integer >= 0 or ``memory_limit`` not one >= 1.

    Examples
    --------
    >>> gpu = assign_gpu()   # here: no worker index (and a GPU machine's first GPU)
    >>> gpu is None or gpu.startswith("/physical_device:GPU:")
    True
    """
    if index is not None:
        index = check_int(index, "assign_gpu.index", min=0)
    if memory_limit is not None:
        memory_limit = check_positive_int(memory_limit, "assign_gpu.memory_limit")
    tf = _tensorflow()
    config = tf.config
    gpus = list(config.list_physical_devices("GPU"))
    pid = os.getpid()
    if not gpus:
        _log_once("no-gpu", logging.INFO, "no GPU visible: TensorFlow runs on the CPU")
        return None
    if index is None:
        index = worker_index()
    if index is None:
        if len(gpus) > 1:
            logger.info(
                "process %d is not a worker (no worker index): its %d GPUs all stay visible",
                pid,
                len(gpus),
            )
            return None
        index = 0
    gpu = gpus[index % len(gpus)]
    try:
        config.set_visible_devices([gpu], "GPU")
        if memory_limit is not None:
            config.set_logical_device_configuration(
                gpu, [config.LogicalDeviceConfiguration(memory_limit=memory_limit)]
            )
    except RuntimeError as exc:  # TensorFlow has already run an operation
        logger.warning(
            "process %d cannot move to %s: TensorFlow already runs (assign a GPU before its "
            "first operation): %s",
            pid,
            gpu.name,
            exc,
        )
        return None
    limit = "" if memory_limit is None else f", at most {memory_limit} MiB"
    logger.info(
        "process %d (worker %d) uses %s of %d GPUs%s", pid, index, gpu.name, len(gpus), limit
    )
    name: str = gpu.name
    return name


# ---------------------------------------------------------------------------- training


def _logical_devices(tf: Any) -> dict[tuple[str, int], str]:
    """The logical devices as ``(TYPE, index) -> full name``."""
    out = {}
    for device in tf.config.list_logical_devices():
        spec = tf.DeviceSpec.from_string(device.name)
        out[(str(spec.device_type).upper(), int(spec.device_index))] = device.name
    return out


def _check_devices(tf: Any, devices: object, owner: str) -> list[str]:
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise ParameterError(
            f"{owner} must be a non-empty list of device names such as ['/gpu:0', '/gpu:1'], "
            f"got {devices!r}"
        )
    known = _logical_devices(tf)
    seen: set[tuple[str, int]] = set()
    for name in devices:
        key: tuple[str, int] | None = None
        if isinstance(name, str):
            try:
                spec = tf.DeviceSpec.from_string(name)
            except ValueError:
                spec = None
            if spec is not None and spec.device_type is not None:
                key = (str(spec.device_type).upper(), int(spec.device_index or 0))
        if key is None or key not in known:
            raise ParameterError(
                f"{owner} names {name!r}, which is not a device TensorFlow sees; "
                f"its devices are {sorted(known.values())}"
            )
        if key in seen:
            raise ParameterError(f"{owner} names the device {name!r} twice")
        seen.add(key)
    return [str(d) for d in devices]


def training_strategy(devices: Sequence[str] | None = None, *, owner: str = "devices") -> Any:
    """The ``tf.distribute`` strategy to train under.

    Parameters
    ----------
    devices : list of str, optional
        ``None`` (default): inside a strategy's ``scope()`` of your own, that strategy;
        else ``tf.distribute.MirroredStrategy`` over every visible GPU when there are
        two or more, and TensorFlow's default strategy (the code path of a single
        device) with one GPU or none.  Device names (``["/gpu:0", "/gpu:1"]``, or
        logical CPUs ``["/cpu:0", "/cpu:1"]``): a ``MirroredStrategy`` over them, or a
        ``OneDeviceStrategy`` for one.
    owner : str
        The parameter named in error messages.

    Returns
    -------
    tf.distribute.Strategy

    Raises
    ------
    ParameterError
        If ``devices`` is not a non-empty list of distinct devices TensorFlow sees.

    Examples
    --------
    >>> training_strategy().num_replicas_in_sync >= 1
    True
    >>> type(training_strategy(["/cpu:0"])).__name__
    'OneDeviceStrategy'
    """
    tf = _tensorflow()
    if devices is None:
        if tf.distribute.has_strategy():  # the caller's own scope
            return tf.distribute.get_strategy()
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy(gpus)
        return tf.distribute.get_strategy()
    names = _check_devices(tf, devices, owner)
    if len(names) == 1:
        return tf.distribute.OneDeviceStrategy(names[0])
    return tf.distribute.MirroredStrategy(names)
