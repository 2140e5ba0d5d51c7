"""Keras objects that a saved ``.keras`` file refers to by name.

This private module imports Keras at module level (through
:mod:`cervixwsi.models._tf`), so it is imported only when a model is built or
loaded (never by ``import cervixwsi.models``). Each
object is registered under the ``cervixwsi`` package name, so
``keras.saving.load_model`` restores it in safe mode once this module has been
imported, without any ``Lambda`` layer or pickled code.
"""

from __future__ import annotations

from typing import Any

from cervixwsi.errors import ModelError
from cervixwsi.models._tf import keras

ops = keras.ops

if keras.backend.backend() != "tensorflow":
    raise ModelError(
        f"cervixwsi.models needs Keras' TensorFlow backend, but KERAS_BACKEND selects "
        f"{keras.backend.backend()!r}: unset it or set KERAS_BACKEND=tensorflow before "
        "importing keras"
    )

__all__ = ["PLATEAU_VARIABLE_NAME", "InputScaling", "PlateauExponentialDecay"]

PLATEAU_VARIABLE_NAME = "plateau_multiplier"

# keras.applications.imagenet_utils "caffe" mode: BGR channel order, ImageNet means.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="cervixwsi")
class InputScaling(keras.layers.Layer):  # type: ignore[misc]
    """Cast a patch batch to float32 and apply an architecture's input scaling.

    Parameters
    ----------
    mode : {"tf", "caffe", "unit"}
        ``"tf"``: ``x / 127.5 - 1`` (Inception-v3, InceptionResNet-v2);
        ``"caffe"``: RGB to BGR and ImageNet mean subtraction (ResNet50, as
        ``keras.applications.resnet50.preprocess_input``); ``"unit"``: ``x / 255``.
    """

    def __init__(self, mode: str = "tf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "unit"):
            raise ValueError(f"mode must be 'tf', 'caffe' or 'unit', got {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype="float32")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["mode"] = self.mode
        return config


@keras.saving.register_keras_serializable(package="cervixwsi")
class PlateauExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """Exponential decay times a multiplier that a plateau callback can lower.

    The rate at optimizer step ``s`` is
    ``initial_learning_rate * decay_rate ** (s / decay_steps) * multiplier``.
    ``multiplier`` is a non-trainable variable (1 at the start); the study's
    "divide by 10 when the training loss stops improving" multiplies it by
    0.1, so both effects act together, which Keras' ``ReduceLROnPlateau``
    cannot do with a schedule.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.multiplier = keras.Variable(
            float(multiplier), dtype="float32", trainable=False, name=PLATEAU_VARIABLE_NAME
        )

    def __call__(self, step: Any) -> Any:
        s = ops.cast(step, "float32")
        decay = ops.power(ops.cast(self.decay_rate, "float32"), s / float(self.decay_steps))
        return self.initial_learning_rate * decay * self.multiplier

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "multiplier": float(self.multiplier.numpy()),
        }
