"""``PatchClassifier``: a patch CNN trained as in the study; prediction, save and load."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_positive_int, check_real
from cervixwsi.errors import ModelError, NotFittedError, ParameterError
from cervixwsi.models._architectures import _spec
from cervixwsi.models._augment import Augmentation
from cervixwsi.models._checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    SETTINGS_MEMBER,
    STATE_NAME,
    checkpoint_epoch,
    load_keras,
    read_checkpoint,
    read_settings,
    save_keras,
)
from cervixwsi.models._data import as_patch_source, check_patch_array, class_counts
from cervixwsi.models._engine import (
    Inference,
    check_engine,
    onnx_inference,
    tensorflow_inference,
)
from cervixwsi.models._training import (
    HISTORY_COLUMNS,
    TrainingHistory,
    _Plateau,
    recalibrate_batchnorm,
    run_training,
)

if TYPE_CHECKING:
    import keras

__all__ = ["PatchClassifier"]

logger = logging.getLogger(__name__)


def _float32_head(model: keras.Model) -> keras.Model:
    """``model`` with its softmax layer computing in float32 (under a mixed-precision policy).

    Under ``mixed_float16`` every layer computes in float16; the softmax and the loss
    are more accurate in float32 (Keras' mixed-precision guide).  The same model
    is returned when its softmax already computes in float32.
    """
    from cervixwsi.models._tf import keras

    head = model.get_layer("predictions")
    if head.dtype_policy.compute_dtype == "float32":
        return model
    outputs = keras.layers.Dense(
        head.units, activation="softmax", dtype="float32", name="predictions"
    )(model.get_layer("avg_pool").output)
    new = keras.Model(model.inputs, outputs, name=model.name)
    new.get_layer("predictions").set_weights(head.get_weights())
    return new


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
        """Check the parameters; store NumPy numbers as plain ``int`` / ``float`` (for JSON)."""
        _spec(self.arch)
        check_engine(self.engine)
        for name in ("input_size", "batch_size", "decay_steps", "plateau_patience", "epochs"):
            value = check_positive_int(getattr(self, name), f"PatchClassifier.{name}")
            setattr(self, name, value)
        self.learning_rate = check_real(
            self.learning_rate, "PatchClassifier.learning_rate", min=0, min_open=True
        )
        self.decay_rate = check_real(
            self.decay_rate, "PatchClassifier.decay_rate", min=0, max=1, min_open=True
        )
        self.plateau_factor = check_real(
            self.plateau_factor,
            "PatchClassifier.plateau_factor",
            min=0,
            max=1,
            min_open=True,
            max_open=True,
        )
        self.plateau_min_delta = check_real(
            self.plateau_min_delta, "PatchClassifier.plateau_min_delta", min=0
        )
        if self.seed is not None:
            self.seed = check_int(self.seed, "PatchClassifier.seed", min=0)
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
        from cervixwsi.models._architectures import build_model
        from cervixwsi.models._keras_objects import PlateauExponentialDecay
        from cervixwsi.models._tf import keras

        if self.seed is not None:  # only then touch Keras' global generators
            keras.utils.set_random_seed(self.seed_)
        model = _float32_head(
            build_model(self.arch, input_size=self.input_size, weights=self.weights)
        )
        schedule = PlateauExponentialDecay(self.learning_rate, self.decay_steps, self.decay_rate)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        return model

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
        devices: Sequence[str] | None = None,
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
        devices : list of str, optional
            Where to train (see :func:`~cervixwsi.models.training_strategy`). Default:
            with two or more visible GPUs, all of them, data-parallel under
            ``tf.distribute.MirroredStrategy``; with one GPU or none, TensorFlow's
            default placement (the single-device code path). A list such as
            ``["/gpu:0", "/gpu:1"]`` mirrors over those devices. ``batch_size``
            stays the global batch: each of ``R`` devices computes ``batch_size / R``
            patches of every step, so the recipe (steps per epoch, learning-rate
            schedule) does not depend on the number of GPUs; raise ``batch_size``
            (e.g. 32 per GPU) to keep many GPUs busy. Checkpoints, ``history_``
            and saved files are the same whatever the devices, and a model trained
            on several loads and predicts on one.

        Returns
        -------
        PatchClassifier
            ``self``, fitted.

        Raises
        ------
        ParameterError
            Bad parameters, or ``devices`` naming a device TensorFlow does not
            see, or more devices than ``batch_size``.

        Notes
        -----
        Under a mixed-precision global policy
        (``keras.mixed_precision.set_global_policy("mixed_float16")``, set before
        the classifier builds its model) the network computes in float16 with
        float32 weights, the softmax layer in float32, and Keras scales the loss.
        """
        self._check_params()
        n_epochs = check_positive_int(
            self.epochs if epochs is None else epochs, "PatchClassifier.fit.epochs"
        )
        train_src = as_patch_source(train, "train", self.input_size, 2)
        val_src = (
            None
            if validation is None
            else as_patch_source(validation, "validation", self.input_size, 2)
        )
        from cervixwsi.models._devices import training_strategy

        strategy = training_strategy(devices, owner="PatchClassifier.fit.devices")
        replicas = int(strategy.num_replicas_in_sync)
        if replicas > 1:
            if self.batch_size < replicas:
                raise ParameterError(
                    f"PatchClassifier.batch_size must be at least the number of devices "
                    f"training shares each batch between ({replicas}), got {self.batch_size}"
                )
            logger.info(
                "training on %d devices (%s): each computes about %d of the %d patches of a batch",
                replicas,
                type(strategy).__name__,
                self.batch_size // replicas,
                self.batch_size,
            )
        with strategy.scope():  # the model and its optimizer are made on every device
            return self._fit(
                train,
                validation,
                train_src,
                val_src,
                n_epochs,
                checkpoint_dir,
                resume=resume,
                restore_best=restore_best,
            )

    def _fit(
        self,
        train: Any,
        validation: Any,
        train_src: Any,
        val_src: Any,
        n_epochs: int,
        checkpoint_dir: str | os.PathLike[str] | None,
        *,
        resume: bool,
        restore_best: bool,
    ) -> PatchClassifier:
        """:meth:`fit` after its checks, inside the training strategy's scope."""
        directory = None if checkpoint_dir is None else Path(checkpoint_dir)
        resumed = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if resume:
                resumed = read_checkpoint(directory, self._params_json())
            if resumed is None:  # a fresh run: nothing of an earlier one may be restored
                for name in ("last.keras", "best.keras", STATE_NAME, "history.csv"):
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
            best_weights = run_training(
                self,
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
            elif directory is not None and checkpoint_epoch(directory / "best.keras") == best:
                model.set_weights(load_keras(directory / "best.keras", compile=False).get_weights())
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

    def recalibrate_batchnorm(self, patches: Any, *, n: int = 512, seed: int = 0) -> int:
        """Re-estimate BatchNormalization's moving statistics on ``n`` patches ("precise BN").

        After a few hundred steps from random weights the moving statistics
        (momentum 0.99) are still far from the data's, and a deep network predicts
        nearly constant probabilities at inference although its batch-statistics
        accuracy is good.  This sets them to the mean of the batch statistics of up
        to ``n`` patches (centre crops, as in prediction) drawn with ``seed`` from
        ``patches`` (a PatchStore or a ``(patches, labels)`` tuple); no trained
        weight changes.  Returns the number of layers recalibrated (0 for a network
        without BatchNormalization, which is left as it is).

        Examples
        --------
        >>> import numpy as np
        >>> clf = PatchClassifier("small_cnn", input_size=32, seed=0).build()
        >>> x = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), np.uint8)
        >>> clf.recalibrate_batchnorm((x, np.arange(40) % 2), n=40) > 0
        True
        """
        self._check_fitted()
        n = check_positive_int(n, "PatchClassifier.recalibrate_batchnorm.n")
        src = as_patch_source(patches, "recalibration", self.input_size, 2)
        if src is None:
            raise ModelError("recalibrate_batchnorm needs a PatchStore or (patches, labels) arrays")
        pick = np.random.default_rng(seed).choice(len(src), min(n, len(src)), replace=False)
        x = check_patch_array(src.read(np.sort(pick)), "recalibration patches", self.input_size)
        s = self.input_size
        top, left = (x.shape[1] - s) // 2, (x.shape[2] - s) // 2
        count = recalibrate_batchnorm(
            self.model_, np.ascontiguousarray(x[:, top : top + s, left : left + s]), self.batch_size
        )
        if count:
            self._infer = None
            self._fingerprint = None
            self._source = None  # a saved file (and its ONNX cache) holds other statistics
        return count

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
        bs = check_positive_int(
            self.batch_size if batch_size is None else batch_size,
            "PatchClassifier.predict.batch_size",
        )
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
            infer = tensorflow_inference(self.model_, self.input_size)
            self.engine_ = "tensorflow"
            if engine == "onnxruntime":
                cache = None if self._source is None else self._source.with_suffix(".onnx")
                infer, self.engine_ = onnx_inference(
                    self.model_, self.input_size, infer, cache=cache
                )
            self._infer = (engine, infer)
        return self._infer[1]

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
        from cervixwsi.models._tf import keras

        out = Path(path)
        if out.suffix != ".keras":
            raise ModelError(f"a PatchClassifier is saved to a '.keras' file, got {out}")
        bare = keras.Model.from_config(self.model_.get_config())
        bare.set_weights(self.model_.get_weights())
        settings = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": self._params_json(),
            "seed_": self.seed_,
            "classes_": self.classes_.tolist(),
            "class_counts_": self.class_counts_.tolist(),
            "history_": [
                dict(zip(HISTORY_COLUMNS, map(float, vals), strict=True))
                for vals in zip(*(getattr(self.history_, c) for c in HISTORY_COLUMNS), strict=True)
            ],
        }
        save_keras(bare, out, {SETTINGS_MEMBER: settings})
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
        settings = read_settings(src)
        params = dict(settings["params"])
        if engine is not None:
            params["engine"] = check_engine(engine)
        clf = cls._from_params_json(params)
        clf.model_ = load_keras(src, compile=False)
        clf.seed_ = int(settings["seed_"])
        clf.classes_ = np.asarray(settings["classes_"], dtype=np.int64)
        clf.class_counts_ = np.asarray(settings["class_counts_"], dtype=np.int64)
        clf.history_ = TrainingHistory._from_rows(settings["history_"], None)
        clf._source = src.resolve()
        if clf.engine != "tensorflow":
            clf._inference_function()  # export or reuse the cache, and check it, now
        return clf
