"""The study's training recipe: the epochs, the plateau rule, history and checkpoints.

:meth:`PatchClassifier.fit <cervixwsi.models.PatchClassifier.fit>` prepares the model
and the data and calls :func:`run_training`, which streams the data through the
input pipeline and runs Keras' ``fit`` with one callback that records the
:class:`TrainingHistory`, applies the ×0.1-on-plateau rule on top of the exponential
decay, and writes the checkpoints after each epoch.

It runs inside the scope of the training strategy
(:func:`cervixwsi.models.training_strategy`): on several GPUs the model's variables
are mirrored on each and Keras splits every batch between them; the callback's
reads and writes (the plateau multiplier, the weights it checkpoints) are the same
on one device or many.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_text
from cervixwsi.models._checkpoint import FORMAT_VERSION, STATE_MEMBER, STATE_NAME, save_keras
from cervixwsi.models._data import dataset_pipeline, source_dataset

if TYPE_CHECKING:
    import keras

    from cervixwsi.models._classifier import PatchClassifier

__all__ = [
    "HISTORY_COLUMNS",
    "TrainingHistory",
    "make_epoch_callback",
    "recalibrate_batchnorm",
    "run_training",
    "write_history_csv",
]

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


@dataclass(frozen=True)
class TrainingHistory:
    """Per-epoch training record (also written to ``history.csv`` when checkpointing).

    Attributes
    ----------
    epoch : numpy.ndarray (E,) of int
        Epoch numbers, from 1.
    loss, accuracy : numpy.ndarray (E,) of float
        Training cross-entropy and accuracy (on augmented patches).
    val_loss, val_accuracy : numpy.ndarray (E,) of float
        Validation cross-entropy and accuracy (NaN without validation data).
    learning_rate : numpy.ndarray (E,) of float
        Learning rate at the end of the epoch, before any plateau reduction.
    csv_path : pathlib.Path or None
        The CSV file of the same table, if a checkpoint directory was used.
    """

    epoch: npt.NDArray[np.int64]
    loss: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]
    val_loss: npt.NDArray[np.float64]
    val_accuracy: npt.NDArray[np.float64]
    learning_rate: npt.NDArray[np.float64]
    csv_path: Path | None = None

    @classmethod
    def _from_rows(cls, rows: list[dict[str, float]], csv_path: Path | None) -> TrainingHistory:
        def col(name: str) -> npt.NDArray[np.float64]:
            return np.array([r[name] for r in rows], dtype=np.float64)

        return cls(
            epoch=np.array([int(r["epoch"]) for r in rows], dtype=np.int64),
            loss=col("loss"),
            accuracy=col("accuracy"),
            val_loss=col("val_loss"),
            val_accuracy=col("val_accuracy"),
            learning_rate=col("learning_rate"),
            csv_path=csv_path,
        )


@dataclass
class _Plateau:
    """Divide-by-``1/factor`` rule on a monitored loss (as Keras' ReduceLROnPlateau)."""

    factor: float
    patience: int
    min_delta: float
    best: float = math.inf
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when the rate must be reduced now."""
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            return True
        return False


def write_history_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Write the history rows as ``path`` (a CSV file, replaced atomically)."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in rows:
        lines.append(
            ",".join(repr(row[c]) if c != "epoch" else str(int(row[c])) for c in HISTORY_COLUMNS)
        )
    atomic_write_text(path, "\n".join(lines) + "\n")


def make_epoch_callback(
    clf: PatchClassifier,
    plateau: _Plateau,
    rows: list[dict[str, float]],
    checkpoint_dir: Path | None,
    has_validation: bool,
    total_epochs: int,
    steps: int | None,
) -> keras.callbacks.Callback:
    """The callback that records history, applies the plateau rule and checkpoints."""
    from tqdm.auto import tqdm

    from cervixwsi.models._tf import keras

    class _EpochEnd(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._bar: Any = None
            self.best_weights: list[Any] | None = None  # of the best epoch of this session
            self._best_val = min(
                (r["val_loss"] for r in rows if not math.isnan(r["val_loss"])),
                default=math.inf,
            )

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._bar = tqdm(
                total=steps,
                desc=f"epoch {epoch + 1}/{total_epochs}",
                disable=not clf.progress,
                leave=False,
            )

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self._bar is not None:
                self._bar.update(1)
                if logs and "loss" in logs:
                    self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self._bar is not None:
                self._bar.close()
            logs = logs or {}
            model = self.model
            # Adam, or the LossScaleOptimizer around it under a mixed-precision policy
            optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
            schedule = optimizer._learning_rate  # the PlateauExponentialDecay
            lr = float(keras.ops.convert_to_numpy(schedule(optimizer.iterations)))
            row = {
                "epoch": float(epoch + 1),
                "loss": float(logs.get("loss", math.nan)),
                "accuracy": float(logs.get("accuracy", math.nan)),
                "val_loss": float(logs.get("val_loss", math.nan)),
                "val_accuracy": float(logs.get("val_accuracy", math.nan)),
                "learning_rate": lr,
            }
            rows.append(row)
            logger.info(
                "epoch %d/%d: loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f, lr %.3g",
                epoch + 1,
                total_epochs,
                row["loss"],
                row["accuracy"],
                row["val_loss"],
                row["val_accuracy"],
                lr,
            )
            if plateau.update(row["loss"]):
                schedule.multiplier.assign(schedule.multiplier * plateau.factor)
                logger.info(
                    "training loss has not improved for %d epochs: learning rate x%g",
                    plateau.patience,
                    plateau.factor,
                )
            if has_validation and row["val_loss"] < self._best_val:
                self._best_val = row["val_loss"]
                self.best_weights = [np.array(w) for w in model.get_weights()]
                if checkpoint_dir is not None:  # the epoch inside: checked before it is restored
                    save_keras(
                        model, checkpoint_dir / "best.keras", {STATE_MEMBER: {"epoch": epoch + 1}}
                    )
            if checkpoint_dir is None:
                return
            state = {
                "format": "cervixwsi.PatchClassifier.checkpoint",
                "version": FORMAT_VERSION,
                "epoch": epoch + 1,
                "seed": clf.seed_,
                "params": clf._params_json(),
                "plateau": {"best": plateau.best, "wait": plateau.wait},
                "multiplier": float(schedule.multiplier.numpy()),
                "history": rows,
            }
            # Model, optimizer and state go into last.keras in one atomic rename, so an
            # interruption at any moment leaves a consistent last completed epoch.
            save_keras(model, checkpoint_dir / "last.keras", {STATE_MEMBER: state})
            write_history_csv(checkpoint_dir / "history.csv", rows)
            atomic_write_text(checkpoint_dir / STATE_NAME, json.dumps(state, indent=2))

    return _EpochEnd()


def run_training(
    clf: PatchClassifier,
    model: keras.Model,
    train: Any,
    train_src: Any,
    validation: Any,
    val_src: Any,
    start: int,
    n_epochs: int,
    plateau: _Plateau,
    rows: list[dict[str, float]],
    directory: Path | None,
) -> list[Any] | None:
    """Run the epochs of ``clf.fit``; return the best validation epoch's weights (if in this run).

    ``start`` epochs are done already (a resumed checkpoint); ``rows`` holds their
    history and receives the new epochs'.
    """
    aug = clf.augmentation
    steps: int | None
    if train_src is not None:
        train_ds, steps = source_dataset(
            train_src,
            batch_size=clf.batch_size,
            size=clf.input_size,
            augmentation=aug,
            seed=clf.seed_,
            first_epoch=start,
            epochs=n_epochs - start,
        )
    else:
        train_ds = dataset_pipeline(
            train,
            batch_size=clf.batch_size,
            size=clf.input_size,
            augmentation=aug,
            seed=clf.seed_,
        )
        steps = None
    val_ds = None
    if val_src is not None:
        val_ds, _ = source_dataset(
            val_src, batch_size=clf.batch_size, size=clf.input_size, augmentation=None, seed=0
        )
    elif validation is not None:
        val_ds = dataset_pipeline(
            validation,
            batch_size=clf.batch_size,
            size=clf.input_size,
            augmentation=None,
            seed=0,
        )
    callback = make_epoch_callback(
        clf, plateau, rows, directory, val_ds is not None, n_epochs, steps
    )
    with warnings.catch_warnings():
        # Keras warns at the end of the first epoch of a dataset of unknown length.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=n_epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=[callback],
            verbose=0,
            shuffle=False,
        )
    best: list[Any] | None = callback.best_weights
    return best


def recalibrate_batchnorm(
    model: keras.Model, patches: npt.NDArray[np.uint8], batch_size: int
) -> int:
    """Set every BatchNormalization layer's moving statistics to those of ``patches``.

    The moving mean and variance become the mean of the per-batch statistics of
    ``patches`` (already cropped to the model's input), as "precise BN" does: the
    momentum of each layer is set to ``k / (k + 1)`` for the k-th batch, then restored.
    No trained weight changes.  Returns the number of layers recalibrated.
    """
    import keras

    layers, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            layers.append(layer)
        stack.extend(getattr(layer, "layers", []))
    momentum = [layer.momentum for layer in layers]
    try:
        for k, first in enumerate(range(0, len(patches), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)  # the running mean of the batches' statistics
            model(patches[first : first + batch_size], training=True)
    finally:
        for layer, m in zip(layers, momentum, strict=True):
            layer.momentum = m
    return len(layers)
