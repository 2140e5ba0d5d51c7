"""Inference engines: TensorFlow, or the same network exported to ONNX Runtime.

On CPUs ONNX Runtime with its full graph optimisation runs the study's networks
faster than TensorFlow with oneDNN (measured here: ResNet50 about 1.3×) with
probabilities equal to about 1e-6.  The Keras model is exported once
(``keras.Model.export(format="onnx")``, through tf2onnx), cached as a ``.onnx``
file next to the saved ``.keras`` model, and checked against TensorFlow on a
fixed probe batch every time a session is made: when export or the check fails
the classifier falls back to TensorFlow with a warning, never silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_bytes
from cervixwsi._validate import check_choice

if TYPE_CHECKING:
    import keras

__all__ = [
    "ENGINES",
    "EngineFallbackWarning",
    "check_engine",
    "onnx_inference",
    "tensorflow_inference",
]

logger = logging.getLogger(__name__)

ENGINES: Final = ("tensorflow", "onnxruntime")
#: Largest tolerated difference of a tumor probability between the engines.
PROBE_TOLERANCE: Final = 1e-4
_FINGERPRINT_KEY: Final = "cervixwsi.fingerprint"
_PROBE_SEED: Final = 20261126

Inference = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]


class EngineFallbackWarning(UserWarning):
    """ONNX Runtime was asked for but could not be used; TensorFlow predicts instead."""


def check_engine(engine: object) -> str:
    """Return ``engine`` if it names an inference engine, else raise ``ParameterError``.

    Examples
    --------
    >>> check_engine("onnxruntime")
    'onnxruntime'
    """
    return str(check_choice(engine, "engine", ENGINES))


def tensorflow_inference(model: keras.Model, input_size: int) -> Inference:
    """The TensorFlow inference function of ``model``: one traced graph for any batch size."""
    from cervixwsi.models._tf import tf

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.uint8)

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def graph(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def infer(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.asarray(graph(x).numpy(), dtype=np.float32)

    return infer


def model_fingerprint(model: keras.Model, input_size: int) -> str:
    """SHA-256 of a model's architecture, weights and input size."""
    h = hashlib.sha256()
    h.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    h.update(str(int(input_size)).encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def probe_batch(input_size: int) -> npt.NDArray[np.uint8]:
    """Eight fixed patches (noise, H&E-like colours, flat fields) to compare engines on."""
    rng = np.random.default_rng(_PROBE_SEED)
    s = int(input_size)
    noise = rng.integers(0, 256, (3, s, s, 3), dtype=np.uint8)
    pink = np.stack(
        [
            rng.integers(150, 256, (3, s, s)),
            rng.integers(40, 160, (3, s, s)),
            rng.integers(120, 220, (3, s, s)),
        ],
        axis=-1,
    ).astype(np.uint8)
    flat = np.stack([np.full((s, s, 3), 0, np.uint8), np.full((s, s, 3), 255, np.uint8)])
    return np.concatenate([noise, pink, flat])


def onnx_inference(
    model: keras.Model,
    input_size: int,
    reference: Inference,
    *,
    cache: Path | None = None,
) -> tuple[Inference, str]:
    """An ONNX Runtime inference function for ``model``, or ``reference`` on failure.

    Parameters
    ----------
    model : keras.Model
        The network; uint8 ``(N, input_size, input_size, 3)`` in, ``(N, 2)``
        class probabilities out.
    input_size : int
        Patch side the model takes.
    reference : callable
        The TensorFlow inference function: the check's reference and the fallback.
    cache : pathlib.Path, optional
        Where the exported ``.onnx`` is kept (reused while the model's
        fingerprint matches; rewritten otherwise).  ``None`` exports into
        memory only.

    Returns
    -------
    (callable, str)
        The inference function and the engine that runs it: ``"onnxruntime"``,
        or ``"tensorflow"`` after a fallback (an :class:`EngineFallbackWarning`
        says why).
    """
    try:
        fingerprint = model_fingerprint(model, input_size)
        onnx_bytes = _cached(cache, fingerprint)
        if onnx_bytes is None:
            onnx_bytes = _export(model, input_size, fingerprint)
            _store(cache, onnx_bytes)
        infer = _session_function(onnx_bytes)
        probe = probe_batch(input_size)
        diff = float(np.max(np.abs(infer(probe)[:, 1] - reference(probe)[:, 1])))
        if not diff <= PROBE_TOLERANCE:
            raise RuntimeError(
                f"its probabilities differ from TensorFlow's by {diff:.2e} on the probe batch "
                f"(tolerance {PROBE_TOLERANCE:g})"
            )
        logger.info("ONNX Runtime engine ready (|Δp| = %.1e against TensorFlow)", diff)
        return infer, "onnxruntime"
    except Exception as exc:  # ImportError, export errors, ORT errors, the check
        msg = f"ONNX Runtime engine unavailable, predicting with TensorFlow instead: {exc}"
        logger.warning(msg)
        warnings.warn(msg, EngineFallbackWarning, stacklevel=4)
        return reference, "tensorflow"


def _cached(cache: Path | None, fingerprint: str) -> bytes | None:
    if cache is None or not cache.is_file():
        return None
    import onnx

    try:
        data = cache.read_bytes()
        proto = onnx.load_from_string(data)
    except Exception as exc:  # truncated or foreign file: export again
        logger.info("ignoring unreadable ONNX cache %s (%s)", cache, exc)
        return None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(_FINGERPRINT_KEY) != fingerprint:
        logger.info("ONNX cache %s belongs to other weights; exporting again", cache)
        return None
    logger.info("using the cached ONNX export %s", cache)
    return data


def _export(model: keras.Model, input_size: int, fingerprint: str) -> bytes:
    import onnx

    from cervixwsi.models._tf import tf

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.uint8, name="patches")
    logger.info("exporting the model to ONNX (once per weights; can take a minute)")
    with tempfile.TemporaryDirectory(prefix="cervixwsi-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's own deprecation noise
            model.export(str(path), format="onnx", verbose=False, input_signature=[spec])
        proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = _FINGERPRINT_KEY, fingerprint
    data: bytes = proto.SerializeToString()
    return data


def _store(cache: Path | None, data: bytes) -> None:
    if cache is None:
        return
    try:
        atomic_write_bytes(cache, data)
        logger.info("cached the ONNX export as %s", cache)
    except OSError as exc:  # read-only model directory: keep it in memory
        logger.warning("could not cache the ONNX export as %s (%s)", cache, exc)


def _session_function(onnx_bytes: bytes) -> Inference:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, options, providers=_providers(ort))
    name = session.get_inputs()[0].name

    def infer(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        out: Any = session.run(None, {name: np.ascontiguousarray(x, dtype=np.uint8)})[0]
        return np.asarray(out, dtype=np.float32)

    return infer


def _providers(ort: Any) -> list[str]:
    """CUDA when this onnxruntime build has it, then the CPU."""
    available = set(ort.get_available_providers())
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
