"""``PatchClassifier``: training (as in the study), prediction, save and load."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import ModelError, NotFittedError, ParameterError, WeightsError
from cervixwsi.models._architectures import _spec
from cervixwsi.models._augment import Augmentation
from cervixwsi.models._data import (
    as_patch_source,
    check_patch_array,
    class_counts,
    dataset_pipeline,
    source_dataset,
)
from cervixwsi.models._engine import Inference, check_engine, onnx_inference

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

__all__ = ["PatchClassifier", "TrainingHistory"]

logger = logging.getLogger(__name__)

_SETTINGS_NAME = "cervixwsi.json"  # the classifier's settings, stored inside the .keras zip
_FORMAT = "cervixwsi.PatchClassifier"
_FORMAT_VERSION = 1
_STATE_NAME = "state.json"  # a readable copy; the truth is inside last.keras
_STATE_MEMBER = "cervixwsi_checkpoint.json"
_HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    Path(tmp).replace(path)


def _keras_save(model: keras.Model, path: Path) -> None:
    """``model.save(path)`` without Keras 3.15's numpy-2 deprecation noise (one per variable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
        )
        model.save(path)


def _atomic_save_model(model: keras.Model, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Save ``model`` (with ``extra`` as JSON inside the archive) in one atomic rename."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    _keras_save(model, tmp)
    if extra is not None:
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(_STATE_MEMBER, json.dumps(extra, indent=2))
    tmp.replace(path)


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch recorded inside a checkpoint archive, or ``None`` (missing, unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return int(json.loads(zf.read(_STATE_MEMBER))["epoch"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def _write_history_csv(path: Path, rows: list[dict[str, float]]) -> None:
    lines = [",".join(_HISTORY_COLUMNS)]
    for row in rows:
        lines.append(
            ",".join(repr(row[c]) if c != "epoch" else str(int(row[c])) for c in _HISTORY_COLUMNS)
        )
    _atomic_write_text(path, "\n".join(lines) + "\n")


def _make_epoch_callback(
    clf: PatchClassifier,
    plateau: _Plateau,
    rows: list[dict[str, float]],
    checkpoint_dir: Path | None,
    has_validation: bool,
    total_epochs: int,
    steps: int | None,
) -> keras.callbacks.Callback:
    """The callback that records history, applies the plateau rule and checkpoints."""
    import keras
    from tqdm.auto import tqdm

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
            schedule = model.optimizer._learning_rate  # the PlateauExponentialDecay
            lr = float(keras.ops.convert_to_numpy(schedule(model.optimizer.iterations)))
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
                    _atomic_save_model(model, checkpoint_dir / "best.keras", {"epoch": epoch + 1})
            if checkpoint_dir is None:
                return
            state = {
                "format": "cervixwsi.PatchClassifier.checkpoint",
                "version": _FORMAT_VERSION,
                "epoch": epoch + 1,
                "seed": clf.seed_,
                "params": clf._params_json(),
                "plateau": {"best": plateau.best, "wait": plateau.wait},
                "multiplier": float(schedule.multiplier.numpy()),
                "history": rows,
            }
            # Model, optimizer and state go into last.keras in one atomic rename, so an
            # interruption at any moment leaves a consistent last completed epoch.
            _atomic_save_model(model, checkpoint_dir / "last.keras", state)
            _write_history_csv(checkpoint_dir / "history.csv", rows)
            _atomic_write_text(checkpoint_dir / _STATE_NAME, json.dumps(state, indent=2))

    return _EpochEnd()


@dataclass(eq=False)
class PatchClassifier:
    """A patch CNN trained as in the study; predicts the tumor probability of patches.

    The constructor only stores parameters; :meth:`fit` builds (or resumes)
    and trains the Keras model.

    Parameters
    ----------
    arch : {"inception_v3", "inception_resnet_v2", "resnet50", "small_cnn"}
        The network (see :func:`build_model`); required, as the study has no
        single default: it trained the three ImageNet architectures and
        averaged them (:class:`EnsembleClassifier`). ``"small_cnn"`` is for
        CPU work.
    input_size : int, default 224
        Model input side: training uses random crops of this size, prediction
        the centre crop (the study's value: 224 out of 256-pixel patches).
    batch_size : int, default 32
        Patches per training and inference batch (the study's value).
    learning_rate : float, default 0.01
        Initial Adam learning rate (the study's value).
    decay_steps, decay_rate : int, float, default 10000, 0.94
        Exponential decay ``lr * decay_rate ** (step / decay_steps)`` (the
        study decays exponentially but does not report its rate; these are ours).
    plateau_factor : float, default 0.1
        Multiply the rate by this when the training loss stops improving (the
        study's value: divide by 10), on top of the decay.
    plateau_patience : int, default 2
        Epochs without improvement (by more than ``plateau_min_delta``) before
        the rate is reduced.
    plateau_min_delta : float, default 1e-4
        Smallest decrease of the loss that counts as an improvement.
    epochs : int, default 20
        Number of epochs (:meth:`fit` can override).
    augmentation : Augmentation, optional
        Training augmentation (default ``Augmentation()``: the study's random
        90° rotations, random crop and left-right flip).
    seed : int, optional
        Seeds the shuffling and augmentation and, through
        ``keras.utils.set_random_seed`` (which seeds Python's, NumPy's and
        TensorFlow's global generators), the weight initialisation.
        ``None`` draws a seed for the data (kept in ``seed_`` and the
        checkpoints) and leaves the global generators alone.
    weights : None, "imagenet", str or os.PathLike, default None
        Initial weights (see :func:`build_model`).
    progress : bool, default True
        Show a tqdm progress bar per epoch.
    engine : {"tensorflow", "onnxruntime"}, default "tensorflow"
        What runs inference. ``"onnxruntime"`` exports the trained network to
        ONNX once (cached as ``<model>.onnx`` next to the ``.keras`` file it
        was saved to or loaded from), checks it against TensorFlow on a fixed
        probe batch (``|Δp| <= 1e-4``) and runs it with ONNX Runtime's full
        graph optimisation: about 1.3× faster on CPUs for ResNet50. When the
        export or the check fails it warns (:class:`EngineFallbackWarning`)
        and predicts with TensorFlow; ``engine_`` says which one runs.
        Training always uses TensorFlow. Needs ``cervixwsi[onnx]``.

    Attributes
    ----------
    model_ : keras.Model
        The trained model: the best validation epoch's weights when validation
        data were given (see ``restore_best`` in :meth:`fit`), else the last.
    classes_ : numpy.ndarray (2,) of int
        ``[0, 1]``: normal, tumor.
    class_counts_ : numpy.ndarray (2,) of int
        Training patches per class (the class balance; also logged).
    history_ : TrainingHistory
        Loss, accuracy and learning rate per epoch.
    seed_ : int
        The seed used.
    engine_ : str
        The engine predictions actually use (set at the first prediction, or
        at :meth:`load`).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import Augmentation, PatchClassifier
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
    >>> y = np.array([0, 1] * 4)
    >>> clf = PatchClassifier("small_cnn", input_size=32, epochs=1, seed=0, progress=False)
    >>> clf = clf.fit((x, y))
    >>> p = clf.predict(x[:3])
    >>> p.shape, p.dtype.name, bool(((p >= 0) & (p <= 1)).all())
    ((3,), 'float32', True)
    """

    arch: str
    input_size: int = 224
    batch_size: int = 32
    learning_rate: float = 0.01
    decay_steps: int = 10_000
    decay_rate: float = 0.94
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    plateau_min_delta: float = 1e-4
    epochs: int = 20
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int | None = None
    weights: str | os.PathLike[str] | None = None
    progress: bool = True
    engine: str = "tensorflow"

    def __post_init__(self) -> None:
        self._infer: tuple[str, Inference] | None = None
        self._source: Path | None = None  # the .keras file this model was saved to / loaded from
        self._fingerprint: str | None = None  # of model_'s weights, computed once

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> None:
        _spec(self.arch)
        check_engine(self.engine)
        for name in ("input_size", "batch_size", "decay_steps", "plateau_patience", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive int, got {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ParameterError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.decay_rate <= 1:
            raise ParameterError(f"decay_rate must be in (0, 1], got {self.decay_rate}")
        if not 0 < self.plateau_factor < 1:
            raise ParameterError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if not isinstance(self.augmentation, Augmentation):
            raise ParameterError(
                f"augmentation must be an Augmentation, got {type(self.augmentation).__name__}"
            )

    def _params_json(self) -> dict[str, Any]:
        params = {k: v for k, v in asdict(self).items() if k != "augmentation"}
        params["augmentation"] = asdict(self.augmentation)
        params["weights"] = None if self.weights is None else str(self.weights)
        return params

    @classmethod
    def _from_params_json(cls, params: dict[str, Any]) -> PatchClassifier:
        params = dict(params)
        params["augmentation"] = Augmentation(**params["augmentation"])
        return cls(**params)

    # --------------------------------------------------------------------- training

    def _new_model(self) -> keras.Model:
        import keras

        from cervixwsi.models._architectures import build_model
        from cervixwsi.models._keras_objects import PlateauExponentialDecay

        if self.seed is not None:  # only then touch Keras' global generators
            keras.utils.set_random_seed(self.seed_)
        model = build_model(self.arch, input_size=self.input_size, weights=self.weights)
        schedule = PlateauExponentialDecay(self.learning_rate, self.decay_steps, self.decay_rate)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        return model

    def _load_checkpoint(self, directory: Path) -> tuple[keras.Model, dict[str, Any]] | None:
        last = directory / "last.keras"
        if not last.is_file():
            return None
        try:
            with zipfile.ZipFile(last) as zf:
                state = json.loads(zf.read(_STATE_MEMBER))
            epoch = int(state["epoch"])
            params = state["params"]
            state["history"] = [{k: float(v) for k, v in r.items()} for r in state["history"]]
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise ModelError(
                f"checkpoint {last} is unreadable ({exc}); delete it or pass resume=False"
            ) from exc
        mine = self._params_json()
        # The network and the training recipe must match; the number of epochs may grow,
        # and neither the progress bar, the inference engine nor the initial weights
        # (already trained away) matter to the run.
        free = {"epochs", "progress", "engine", "weights"}
        for key in [k for k in mine if k not in free]:
            if key in params and params[key] != mine[key]:
                raise ModelError(
                    f"checkpoint in {directory} was made with {key}={params[key]!r}, "
                    f"this classifier has {key}={mine[key]!r}; use another checkpoint_dir "
                    "or resume=False"
                )
        model = _load_keras(directory / "last.keras", compile=True)
        logger.info("resuming from %s after epoch %d", directory, epoch)
        return model, state

    def build(self) -> PatchClassifier:
        """Make the network ready to predict without training it.

        The weights are ``weights`` (a local file, e.g. a network trained
        elsewhere, or ``"imagenet"`` from the Keras cache) or a random
        initialisation (seeded by ``seed``); nothing is downloaded. Useful
        to run networks trained outside cervixwsi, and to measure speed.

        Returns
        -------
        PatchClassifier
            ``self``, ready for :meth:`predict` and :meth:`save`
            (``history_`` is empty and ``class_counts_`` zero).

        Examples
        --------
        >>> import numpy as np
        >>> clf = PatchClassifier("small_cnn", input_size=32, seed=0).build()
        >>> clf.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape
        (2,)
        """
        self._check_params()
        self.seed_ = (
            int(np.random.default_rng().integers(2**31 - 1)) if self.seed is None else self.seed
        )
        self.model_ = self._new_model()
        self.classes_ = np.array([0, 1], dtype=np.int64)
        self.class_counts_ = np.zeros(2, dtype=np.int64)
        self.history_ = TrainingHistory._from_rows([], None)
        self._infer = None
        self._fingerprint = None
        self._source = None
        return self

    def fit(
        self,
        train: Any,
        validation: Any = None,
        *,
        epochs: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        restore_best: bool = True,
    ) -> PatchClassifier:
        """Train on patches: a PatchStore, a ``tf.data.Dataset`` or ``(patches, labels)``.

        Parameters
        ----------
        train : PatchStore, tf.data.Dataset or tuple of numpy.ndarray
            Training patches (uint8, ``(N, H, W, 3)``, H and W at least
            ``input_size``) with labels 0 (normal) / 1 (tumor). A patch store
            (anything with ``len``, ``labels`` and ``read(indices)``) is
            streamed: shuffled per epoch, read in parallel, augmented,
            batched and prefetched, so it need not fit in memory. A dataset
            yields ``(patch, label)`` or batched ``(patches, labels)``.
        validation : same types, optional
            Validation patches, centre-cropped and not augmented.
        epochs : int, optional
            Total epochs (default ``self.epochs``). With a resumed checkpoint
            only the epochs not yet done run.
        checkpoint_dir : str or os.PathLike, optional
            Directory for ``last.keras`` (model, optimizer and training state
            after each epoch, written atomically), ``best.keras`` (lowest
            validation loss), ``history.csv`` and ``state.json`` (a readable
            copy of the training state: epoch, seed, plateau rule).
        resume : bool, default True
            Continue from the last completed epoch in ``checkpoint_dir`` if
            there is one; ``False`` starts afresh (overwriting it).
        restore_best : bool, default True
            With validation data, end with the weights of the epoch of lowest
            validation loss (the study kept its best validation model) rather
            than those of the last epoch. ``history_`` still covers every epoch.

        Returns
        -------
        PatchClassifier
            ``self``, fitted.
        """
        self._check_params()
        n_epochs = self.epochs if epochs is None else epochs
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
            raise ParameterError(f"epochs must be a positive int, got {n_epochs!r}")
        train_src = as_patch_source(train, "train", self.input_size, 2)
        val_src = (
            None
            if validation is None
            else as_patch_source(validation, "validation", self.input_size, 2)
        )

        directory = None if checkpoint_dir is None else Path(checkpoint_dir)
        resumed = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if resume:
                resumed = self._load_checkpoint(directory)
            if resumed is None:  # a fresh run: nothing of an earlier one may be restored
                for name in ("last.keras", "best.keras", _STATE_NAME, "history.csv"):
                    (directory / name).unlink(missing_ok=True)
        rows: list[dict[str, float]] = []
        plateau = _Plateau(self.plateau_factor, self.plateau_patience, self.plateau_min_delta)
        if resumed is not None:
            model, state = resumed
            self.seed_ = int(state["seed"])
            start = int(state["epoch"])
            plateau.best = float(state["plateau"]["best"])
            plateau.wait = int(state["plateau"]["wait"])
            rows = list(state["history"])[:start]
        else:
            self.seed_ = (
                int(np.random.default_rng().integers(2**31 - 1))
                if self.seed is None
                else int(self.seed)
            )
            model = self._new_model()
            start = 0

        if train_src is not None:
            self.class_counts_ = class_counts(train_src.labels, 2)
            total = int(self.class_counts_.sum())
            logger.info(
                "class balance of the training set: %d normal (%.1f%%), %d tumor (%.1f%%)",
                self.class_counts_[0],
                100 * self.class_counts_[0] / total,
                self.class_counts_[1],
                100 * self.class_counts_[1] / total,
            )
        else:
            self.class_counts_ = np.full(2, -1, dtype=np.int64)  # unknown for a dataset
            logger.info("class balance unknown: training data is a tf.data.Dataset")

        best_weights = None
        if start < n_epochs:
            best_weights = self._train(
                model,
                train,
                train_src,
                validation,
                val_src,
                start,
                n_epochs,
                plateau,
                rows,
                directory,
            )
        else:
            logger.info("checkpoint already has %d >= %d epochs: nothing to train", start, n_epochs)

        scored = [r for r in rows if not math.isnan(r["val_loss"])]
        if restore_best and validation is not None and scored:
            best = int(min(scored, key=lambda r: r["val_loss"])["epoch"])
            if best_weights is not None:  # found in this call
                model.set_weights(best_weights)
            elif directory is not None and _checkpoint_epoch(directory / "best.keras") == best:
                model.set_weights(
                    _load_keras(directory / "best.keras", compile=False).get_weights()
                )
            else:  # e.g. a crash between saving best.keras and last.keras
                best = int(rows[-1]["epoch"])
                logger.warning("best.keras is missing or stale: keeping the last epoch's weights")
            logger.info("kept the weights of epoch %d", best)
        self.model_ = model
        self.classes_ = np.array([0, 1], dtype=np.int64)
        csv_file = None if directory is None else directory / "history.csv"
        self.history_ = TrainingHistory._from_rows(rows, csv_file)
        self._infer = None
        self._fingerprint = None
        self._source = None  # a saved file (and its ONNX cache) holds other weights now
        return self

    def _train(
        self,
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
        """Run the epochs; return the best validation epoch's weights (if in this run)."""
        aug = self.augmentation
        steps: int | None
        if train_src is not None:
            train_ds, steps = source_dataset(
                train_src,
                batch_size=self.batch_size,
                size=self.input_size,
                augmentation=aug,
                seed=self.seed_,
                first_epoch=start,
                epochs=n_epochs - start,
            )
        else:
            train_ds = dataset_pipeline(
                train,
                batch_size=self.batch_size,
                size=self.input_size,
                augmentation=aug,
                seed=self.seed_,
            )
            steps = None
        val_ds = None
        if val_src is not None:
            val_ds, _ = source_dataset(
                val_src, batch_size=self.batch_size, size=self.input_size, augmentation=None, seed=0
            )
        elif validation is not None:
            val_ds = dataset_pipeline(
                validation,
                batch_size=self.batch_size,
                size=self.input_size,
                augmentation=None,
                seed=0,
            )
        callback = _make_epoch_callback(
            self, plateau, rows, directory, val_ds is not None, n_epochs, steps
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

    # ------------------------------------------------------------------- prediction

    @property
    def name(self) -> str:
        """``arch``, input size and a fingerprint of the weights, e.g. ``resnet50-224-3f2a9c1b``.

        Identifies the network in heatmap provenance and resumable runs (the
        inference engine is not part of it: both engines predict the same).
        """
        base = f"{self.arch}-{self.input_size}"
        if not hasattr(self, "model_"):
            return base
        if self._fingerprint is None:
            from cervixwsi.models._engine import model_fingerprint

            self._fingerprint = model_fingerprint(self.model_, self.input_size)
        return f"{base}-{self._fingerprint[:8]}"

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "this PatchClassifier is not fitted; call fit() or PatchClassifier.load() first"
            )

    def predict_proba(
        self, patches: npt.NDArray[np.uint8], *, batch_size: int | None = None
    ) -> npt.NDArray[np.float32]:
        """Class probabilities ``(N, 2)`` (normal, tumor) of uint8 patches.

        Patches larger than ``input_size`` are centre-cropped (as in
        validation). See :meth:`predict`.
        """
        self._check_fitted()
        arr = check_patch_array(patches, "patches", self.input_size)
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ParameterError(f"batch_size must be a positive int, got {bs!r}")
        s = self.input_size
        top, left = (arr.shape[1] - s) // 2, (arr.shape[2] - s) // 2
        crop = arr[:, top : top + s, left : left + s]
        infer = self._inference_function()
        out = np.empty((arr.shape[0], 2), dtype=np.float32)
        for i in range(0, arr.shape[0], bs):
            out[i : i + bs] = infer(np.ascontiguousarray(crop[i : i + bs]))
        return out

    def predict(
        self, patches: npt.NDArray[np.uint8], *, batch_size: int | None = None
    ) -> npt.NDArray[np.float32]:
        """Tumor probability of each patch.

        Parameters
        ----------
        patches : numpy.ndarray (N, H, W, 3) of uint8
            RGB patches, N >= 1, H and W >= ``input_size``; larger patches are
            centre-cropped to ``input_size`` (matching training's crops).
        batch_size : int, optional
            Patches per forward pass (default ``self.batch_size``).

        Returns
        -------
        ndarray of float32, shape (N,)
            Probability of class 1 (tumor).

        Raises
        ------
        ModelError
            Wrong dtype, shape, empty batch or patches smaller than ``input_size``.
        NotFittedError
            Before :meth:`fit` or :meth:`load`.
        """
        return self.predict_proba(patches, batch_size=batch_size)[:, 1].copy()

    def _inference_function(self) -> Inference:
        engine = check_engine(self.engine)
        if self._infer is None or self._infer[0] != engine:
            infer = self._tensorflow_function()
            self.engine_ = "tensorflow"
            if engine == "onnxruntime":
                cache = None if self._source is None else self._source.with_suffix(".onnx")
                infer, self.engine_ = onnx_inference(
                    self.model_, self.input_size, infer, cache=cache
                )
            self._infer = (engine, infer)
        return self._infer[1]

    def _tensorflow_function(self) -> Inference:
        import tensorflow as tf

        model = self.model_
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.uint8)

        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
        def graph(x: tf.Tensor) -> tf.Tensor:
            return model(x, training=False)

        def infer(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            return np.asarray(graph(x).numpy(), dtype=np.float32)

        return infer

    # -------------------------------------------------------------------- save/load

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model and its settings to one ``.keras`` file.

        The file is a standard Keras archive (loadable with
        ``keras.saving.load_model`` after ``import cervixwsi.models``) of the
        inference model, without optimizer state; the classifier's settings
        are stored inside it as ``cervixwsi.json``.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        self._check_fitted()
        import keras

        out = Path(path)
        if out.suffix != ".keras":
            raise ModelError(f"a PatchClassifier is saved to a '.keras' file, got {out}")
        bare = keras.Model.from_config(self.model_.get_config())
        bare.set_weights(self.model_.get_weights())
        settings = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": self._params_json(),
            "seed_": self.seed_,
            "classes_": self.classes_.tolist(),
            "class_counts_": self.class_counts_.tolist(),
            "history_": [
                dict(zip(_HISTORY_COLUMNS, map(float, vals), strict=True))
                for vals in zip(*(getattr(self.history_, c) for c in _HISTORY_COLUMNS), strict=True)
            ],
        }
        tmp = out.with_name(f".{out.stem}.tmp.keras")
        _keras_save(bare, tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(_SETTINGS_NAME, json.dumps(settings, indent=2))
        tmp.replace(out)
        if self._source != out.resolve():
            self._source = out.resolve()
            out.with_suffix(".onnx").unlink(missing_ok=True)  # a stale export of other weights
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, engine: str | None = None) -> PatchClassifier:
        """Load a classifier written by :meth:`save`; it predicts identically.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.keras`` file.
        engine : {"tensorflow", "onnxruntime"}, optional
            Inference engine (default: the one it was saved with). With
            ``"onnxruntime"`` the ONNX export is made (or reused from
            ``<path>.onnx``) and checked here, so ``engine_`` is known on return.

        Raises
        ------
        WeightsError
            Missing, truncated or corrupt file, or a ``.keras`` file not written
            by :meth:`save`.
        """
        src = Path(path)
        if not src.is_file():
            raise WeightsError(f"model file {src} does not exist")
        try:
            with zipfile.ZipFile(src) as zf:
                settings = json.loads(zf.read(_SETTINGS_NAME))
        except KeyError:
            raise WeightsError(
                f"{src} is a Keras file without cervixwsi settings; load it with "
                "keras.saving.load_model or build_model(weights=...)"
            ) from None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"model file {src} is corrupt or truncated: {exc}") from exc
        if settings.get("format") != _FORMAT or settings.get("version") != _FORMAT_VERSION:
            raise WeightsError(
                f"{src} has format {settings.get('format')!r} version "
                f"{settings.get('version')!r}; expected {_FORMAT!r} version {_FORMAT_VERSION}"
            )
        params = dict(settings["params"])
        if engine is not None:
            params["engine"] = check_engine(engine)
        clf = cls._from_params_json(params)
        clf.model_ = _load_keras(src, compile=False)
        clf.seed_ = int(settings["seed_"])
        clf.classes_ = np.asarray(settings["classes_"], dtype=np.int64)
        clf.class_counts_ = np.asarray(settings["class_counts_"], dtype=np.int64)
        clf.history_ = TrainingHistory._from_rows(settings["history_"], None)
        clf._source = src.resolve()
        if clf.engine != "tensorflow":
            clf._inference_function()  # export or reuse the cache, and check it, now
        return clf


def _load_keras(path: Path, *, compile: bool) -> keras.Model:
    import keras

    import cervixwsi.models._keras_objects  # noqa: F401  (registers the custom objects)

    if not path.is_file():
        raise WeightsError(f"model file {path} does not exist")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # keras raises ValueError, OSError, zipfile errors, ...
        raise WeightsError(
            f"model file {path} cannot be loaded (corrupt or truncated?): {exc}"
        ) from exc
