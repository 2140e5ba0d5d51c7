"""Patch-classifier architectures: ``build_model`` and weight loading.

Keras is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cervixwsi._validate import check_int
from cervixwsi.errors import ModelError, WeightsError

if TYPE_CHECKING:
    import keras

__all__ = ["ARCHITECTURES", "build_model", "imagenet_weights_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ArchSpec:
    """How one architecture is made: its backbone, input scaling and limits."""

    backbone_name: str  # the backbone layer's name inside the model (keras' own name)
    scaling: str  # InputScaling mode
    min_input_size: int
    imagenet_file: str | None  # keras.applications' cache file name for include_top=False


_SPECS: dict[str, _ArchSpec] = {
    "inception_v3": _ArchSpec(
        "inception_v3", "tf", 75, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "inception_resnet_v2": _ArchSpec(
        "inception_resnet_v2",
        "tf",
        75,
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet50": _ArchSpec(
        "resnet50", "caffe", 32, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "small_cnn": _ArchSpec("small_cnn", "unit", 32, None),
}

#: The architectures ``build_model`` knows: the study's three ImageNet CNNs and a
#: small CNN (about 0.4 M parameters) for CPU work and tests.
ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)


def _spec(arch: str) -> _ArchSpec:
    try:
        return _SPECS[arch]
    except KeyError:
        raise ModelError(
            f"unknown architecture {arch!r}; valid: {', '.join(repr(a) for a in _SPECS)}"
        ) from None


def _keras_cache_dirs() -> list[Path]:
    """The directories where keras.utils.get_file would keep ``models/`` files."""
    home = os.environ.get("KERAS_HOME")
    dirs = [Path(home) if home else Path("~/.keras").expanduser(), Path("/tmp/.keras")]
    return [d / "models" for d in dirs]


def imagenet_weights_path(arch: str) -> Path:
    """Return the local file of ``arch``'s ImageNet weights in Keras' cache.

    Nothing is downloaded: the file must already be where
    ``keras.applications`` would have cached it (``$KERAS_HOME/models`` or
    ``~/.keras/models``).

    Parameters
    ----------
    arch : str
        ``"inception_v3"``, ``"inception_resnet_v2"`` or ``"resnet50"``.

    Returns
    -------
    pathlib.Path
        The existing weights file (the "no top" variant).

    Raises
    ------
    WeightsError
        If the file is not in the cache, or ``arch`` has no ImageNet weights.

    Examples
    --------
    >>> from cervixwsi.models import imagenet_weights_path
    >>> try:
    ...     imagenet_weights_path("small_cnn")
    ... except ValueError as exc:
    ...     print(str(exc).split(";")[0])
    architecture 'small_cnn' has no ImageNet weights
    """
    spec = _spec(arch)
    if spec.imagenet_file is None:
        raise WeightsError(
            f"architecture {arch!r} has no ImageNet weights; use weights=None or a local file"
        )
    candidates = [d / spec.imagenet_file for d in _keras_cache_dirs()]
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsError(
        f"ImageNet weights for {arch!r} are not in Keras' local cache and cervixwsi never "
        f"downloads anything. Place the file {spec.imagenet_file!r} (from the "
        f"keras-applications release page, include_top=False) at {candidates[0]} "
        f"(the directory follows $KERAS_HOME), or pass weights=<path to the file>."
    )


def _small_cnn(inputs: Any) -> Any:
    """Four conv-BN-ReLU-pool blocks after a strided stem: ~0.39 M parameters."""
    from cervixwsi.models._tf import keras

    def conv_bn_relu(x: Any, filters: int, strides: int, name: str) -> Any:
        x = keras.layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    x = conv_bn_relu(inputs, 16, 2, "stem")
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = conv_bn_relu(x, filters, 1, f"block{i}")
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _backbone(arch: str, input_size: int) -> keras.Model:
    from cervixwsi.models._tf import keras

    shape = (input_size, input_size, 3)
    if arch == "inception_v3":
        return keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape)
    if arch == "inception_resnet_v2":
        return keras.applications.InceptionResNetV2(
            include_top=False, weights=None, input_shape=shape
        )
    if arch == "resnet50":
        return keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    return _small_cnn(keras.Input(shape, name="features_input"))


def file_architecture(path: Path) -> str | None:
    """The architecture of a cervixwsi ``.keras`` / ``.weights.h5`` file, if it can tell."""
    names: set[str] = set()
    try:
        if path.name.endswith(".keras"):
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
            names = {layer.get("name", "") for layer in config["config"]["layers"]}
        else:
            import h5py

            with h5py.File(path, "r") as f:
                group = f.get("layers")
                if group is not None:
                    names = set(group.keys())
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None
    found = [arch for arch, spec in _SPECS.items() if spec.backbone_name in names]
    return found[0] if len(found) == 1 else None


def _load_weights_file(model: keras.Model, arch: str, path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if not (path.name.endswith(".keras") or path.name.endswith(".weights.h5")):
        raise WeightsError(
            f"weights file {path} must end in '.keras' or '.weights.h5' (Keras 3 formats)"
        )
    other = file_architecture(path)
    if other is not None and other != arch:
        raise WeightsError(
            f"weights file {path} holds a {other!r} model, not the requested {arch!r}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as exc:  # keras raises ValueError, OSError, KeyError, ...
            raise WeightsError(
                f"weights file {path} does not fit a {arch!r} model "
                f"(input size {model.input_shape[1]}): {exc}"
            ) from exc
    skipped = [w for w in caught if "Skipping" in str(w.message)]
    if skipped:  # Keras loaded only part of the model and left the rest random
        raise WeightsError(
            f"weights file {path} does not fit a {arch!r} model: {len(skipped)} parts of the "
            f"model found no weights in it (first: {skipped[0].message})"
        )
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def build_model(
    arch: str,
    *,
    input_size: int = 224,
    n_classes: int = 2,
    weights: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build a patch classifier: input scaling, backbone, global pooling, softmax.

    The model takes RGB patches (uint8, shape ``(N, input_size, input_size, 3)``);
    its architecture's own input scaling is a layer inside it, so a saved
    model needs no preprocessing code besides ``import cervixwsi.models``.

    Parameters
    ----------
    arch : {"inception_v3", "inception_resnet_v2", "resnet50", "small_cnn"}
        The backbone: the study's three ``keras.applications`` networks (top
        replaced by global average pooling and a softmax), or a small CNN of
        about 0.39 M parameters for CPU work and tests.
    input_size : int, default 224
        Side of the square input in pixels (the study's value: 224, a crop of
        the 256 × 256 patch). Inception networks need at least 75, the others 32.
    n_classes : int, default 2
        Number of softmax outputs (normal, tumor).
    weights : None, "imagenet", str or os.PathLike, default None
        ``None``: random initialisation. ``"imagenet"``: the backbone's
        ImageNet weights, only when Keras already has the file in its local
        cache (see :func:`imagenet_weights_path`); nothing is downloaded. A path
        to a ``.keras`` or ``.weights.h5`` file of the same architecture and
        input size: load all weights from it.
    name : str, optional
        The Keras model's name (default: ``"cervixwsi_<arch>"``).

    Returns
    -------
    keras.Model
        Uncompiled functional model with softmax output ``(N, n_classes)``.

    Raises
    ------
    ModelError
        Unknown architecture, or an input too small for it.
    ParameterError
        ``input_size`` or ``n_classes`` not an integer (NumPy integers are), or
        ``n_classes`` below 2.
    WeightsError
        Weights not available locally, or a file of another architecture.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import build_model
    >>> model = build_model("small_cnn", input_size=64)
    >>> probs = model(np.zeros((2, 64, 64, 3), np.uint8)).numpy()
    >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0))
    ((2, 2), True)
    """
    spec = _spec(arch)
    input_size = check_int(input_size, "build_model.input_size")
    n_classes = check_int(n_classes, "build_model.n_classes", min=2)
    if input_size < spec.min_input_size:
        raise ModelError(
            f"input_size {input_size} is too small for {arch!r}; "
            f"it needs at least {spec.min_input_size}"
        )
    weights_file: Path | None = None
    if isinstance(weights, str) and weights == "imagenet":
        weights_file = imagenet_weights_path(arch)
    elif weights is not None:
        weights_file = Path(weights)

    from cervixwsi.models._keras_objects import InputScaling
    from cervixwsi.models._tf import keras

    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="patches")
    x = InputScaling(spec.scaling, name="input_scaling")(inputs)
    backbone = _backbone(arch, input_size)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name or f"cervixwsi_{arch}")

    if weights_file is not None and str(weights) == "imagenet":
        try:
            backbone.load_weights(weights_file)
        except Exception as exc:
            raise WeightsError(
                f"ImageNet weights file {weights_file} could not be loaded into {arch!r}: {exc}"
            ) from exc
        logger.info("loaded ImageNet weights for %s from %s", arch, weights_file)
    elif weights_file is not None:
        _load_weights_file(model, arch, weights_file)
        logger.info("loaded weights for %s from %s", arch, weights_file)
    return model
