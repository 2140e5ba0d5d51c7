"""Input pipelines: patch stores, arrays and tf.data datasets to training batches.

:func:`patch_dataset` gives a :class:`cervixwsi.tiling.PatchStore` as a
``tf.data.Dataset`` (the training pipeline without augmentation), for Keras or a
training loop of the user's own.

A *patch source* is anything with the read side of
:class:`cervixwsi.tiling.PatchStore`: ``len(source)``, ``source.labels``
(``(N,)`` int) and ``source.read(indices) -> (k, H, W, 3) uint8``. The
pipeline reads one batch of (shuffled) indices per call, in parallel
threads, so the patches never need to fit in memory.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_positive_int
from cervixwsi.errors import ModelError, ParameterError, PatchStoreError
from cervixwsi.models._augment import Augmentation, augment_batch, augment_patch

if TYPE_CHECKING:
    import tensorflow as tf

    from cervixwsi.tiling import PatchStore

__all__ = [
    "ArrayPatchSource",
    "PatchSource",
    "as_patch_source",
    "patch_dataset",
    "source_dataset",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class PatchSource(Protocol):
    """The part of a patch store that training reads (duck-typed PatchStore)."""

    @property
    def labels(self) -> npt.NDArray[np.integer[Any]]:
        """Label of every patch, shape ``(N,)``."""
        ...

    def __len__(self) -> int:
        """Number of patches."""
        ...

    def read(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
        """The patches at ``indices`` as ``(k, H, W, 3)`` uint8."""
        ...


@dataclass(frozen=True, eq=False)
class ArrayPatchSource:
    """In-memory patches and labels with the patch-source interface.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import ArrayPatchSource
    >>> src = ArrayPatchSource(np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1, 1]))
    >>> len(src), src.read([2, 0]).shape
    (3, (2, 8, 8, 3))
    """

    patches: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.integer[Any]]

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def read(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
        """Return the patches at ``indices`` (in that order)."""
        return self.patches[np.asarray(indices, dtype=np.intp)]


def check_patch_array(patches: Any, what: str, min_size: int) -> npt.NDArray[np.uint8]:
    """Validate a uint8 ``(N, H, W, 3)`` batch with N >= 1 and H, W >= ``min_size``."""
    arr = np.asarray(patches)
    if arr.dtype != np.uint8:
        raise ModelError(
            f"{what} must be uint8 RGB patches (0-255), got dtype {arr.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) if the values are 0-255"
        )
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ModelError(f"{what} must have shape (N, H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ModelError(f"{what} is an empty batch (N = 0); give at least one patch")
    if arr.shape[1] < min_size or arr.shape[2] < min_size:
        raise ModelError(
            f"{what} are {arr.shape[1]}x{arr.shape[2]} pixels; the model needs at "
            f"least {min_size}x{min_size} (larger patches are centre-cropped)"
        )
    return arr


def _check_labels(labels: Any, n: int, n_classes: int, what: str) -> npt.NDArray[np.int32]:
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ModelError(f"{what} labels must have shape ({n},), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ModelError(f"{what} labels must be integers, got dtype {lab.dtype}")
    if n and (lab.min() < 0 or lab.max() >= n_classes):
        raise ModelError(
            f"{what} labels must lie in 0..{n_classes - 1}, got {lab.min()}..{lab.max()}"
        )
    return lab.astype(np.int32)


def as_patch_source(data: Any, what: str, min_size: int, n_classes: int) -> PatchSource | None:
    """Wrap ``(patches, labels)`` arrays; pass stores through; ``None`` for datasets."""
    if isinstance(data, tuple) and len(data) == 2:
        patches = check_patch_array(data[0], f"{what} patches", min_size)
        labels = _check_labels(data[1], patches.shape[0], n_classes, what)
        return ArrayPatchSource(patches, labels)
    if isinstance(data, PatchSource):
        n = len(data)
        if n == 0:
            raise ModelError(f"{what} patch store is empty")
        _check_labels(data.labels, n, n_classes, what)
        return data
    if type(data).__module__.startswith("tensorflow"):
        return None
    raise ModelError(
        f"{what} must be a PatchStore (len, labels, read), a tf.data.Dataset of "
        f"(patches, labels) or a (patches, labels) tuple of arrays; got {type(data).__name__}"
    )


def class_counts(labels: npt.NDArray[np.integer[Any]], n_classes: int) -> npt.NDArray[np.int64]:
    """Number of patches of each class."""
    return np.bincount(np.asarray(labels, dtype=np.intp), minlength=n_classes).astype(np.int64)


def source_dataset(
    source: PatchSource,
    *,
    batch_size: int,
    size: int,
    augmentation: Augmentation | None,
    seed: int,
    first_epoch: int = 0,
    epochs: int = 1,
) -> tuple[tf.data.Dataset, int]:
    """Batches of ``epochs`` passes over a patch source, starting at ``first_epoch``.

    Each epoch visits every patch once, in an order drawn from ``(seed,
    epoch)`` (when ``augmentation`` is given; in index order otherwise).
    Batches of indices are read in parallel threads and each patch is
    augmented with a stateless seed made of ``(seed, epoch, index)``; batches
    are prefetched. ``augmentation=None`` gives the centre crop (validation).

    Returns
    -------
    (tf.data.Dataset, int)
        The dataset of ``(uint8 (B, size, size, 3), int32 (B,))`` and the
        number of batches per epoch.
    """
    from cervixwsi.models._tf import tf

    n = len(source)
    labels = np.asarray(source.labels, dtype=np.int32)
    steps = -(-n // batch_size)
    training = augmentation is not None

    def order(epoch: int) -> npt.NDArray[np.int64]:
        if not training:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([seed, epoch]).permutation(n)

    cache: dict[int, npt.NDArray[np.int64]] = {}
    lock = threading.Lock()

    def read_batch(k: np.int64) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32], Any]:
        epoch, step = divmod(int(k), steps)
        with lock:
            if epoch not in cache:
                if len(cache) > 2:
                    cache.clear()
                cache[epoch] = order(epoch)
            epoch_order = cache[epoch]
        idx = epoch_order[step * batch_size : (step + 1) * batch_size]
        # Stores read faster in index order; patches go back to the shuffled order after.
        sort = np.argsort(idx, kind="stable")
        got = np.asarray(source.read(idx[sort]))
        if got.dtype != np.uint8 or got.ndim != 4 or got.shape[0] != len(idx):
            raise ModelError(
                f"the patch store returned {got.shape} {got.dtype} for {len(idx)} indices; "
                "expected (k, H, W, 3) uint8"
            )
        patches = np.empty_like(got)
        patches[sort] = got
        seeds = np.stack([np.full(len(idx), epoch, np.int64), idx], axis=1)
        return patches, labels[idx], seeds

    def read_tf(k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        patches, labs, seeds = tf.numpy_function(
            read_batch, [k], [tf.uint8, tf.int32, tf.int64], stateful=False
        )
        patches = tf.ensure_shape(patches, [None, None, None, 3])
        return patches, tf.ensure_shape(labs, [None]), tf.ensure_shape(seeds, [None, 2])

    aug = augmentation if augmentation is not None else Augmentation.none()

    def augment(patches: tf.Tensor, labs: tf.Tensor, seeds: tf.Tensor) -> Any:
        # Batches stay as read (never merged across epochs); each patch draws from its own
        # seed, and the transformations run vectorised over the batch.
        seeds = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + seeds[:, 0], seeds[:, 1]], axis=1)
        return augment_batch(patches, seeds, size=size, augmentation=aug), labs

    def centre_batch(patches: tf.Tensor, labs: tf.Tensor, seeds: tf.Tensor) -> Any:
        # No augmentation: the centre crop of the whole batch at once (what augment_patch
        # does patch by patch with Augmentation.none(), without the per-patch loop).
        top = (tf.shape(patches)[1] - size) // 2
        left = (tf.shape(patches)[2] - size) // 2
        out = patches[:, top : top + size, left : left + size, :]
        return tf.ensure_shape(out, [None, size, size, 3]), labs

    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.range(first_epoch * steps, (first_epoch + epochs) * steps)
    ds = ds.map(read_tf, num_parallel_calls=autotune, deterministic=True)
    identity = augmentation is None or augmentation == Augmentation.none()
    transform = centre_batch if identity else augment
    ds = ds.map(transform, num_parallel_calls=autotune, deterministic=True)
    ds = ds.prefetch(autotune)
    return ds.with_options(_pipeline_options()), steps


def _pipeline_options() -> tf.data.Options:
    """One thread per batch's transformation, so the pipeline leaves the training's cores.

    The batches' reads and augmentations run in parallel (``AUTOTUNE`` calls, in
    order), each on one thread: TensorFlow's intra-op threads stay with the model's
    training step instead of serving one batch's augmentation.
    """
    from cervixwsi.models._tf import tf

    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return options


def dataset_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    size: int,
    augmentation: Augmentation | None,
    seed: int,
) -> tf.data.Dataset:
    """Augment (or centre-crop) and batch a user's dataset of (patch(es), label(s))."""
    from cervixwsi.models._tf import tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ModelError(
            f"a training dataset must yield (patches, labels) pairs; its elements are {spec}"
        )
    if spec[0].dtype != tf.uint8:
        raise ModelError(
            f"dataset patches must be uint8 RGB (0-255), got {spec[0].dtype.name}: convert "
            "them (e.g. tf.image.convert_image_dtype(x, tf.uint8, saturate=True)) rather "
            "than let a cast turn [0, 1] floats into 0s and 1s"
        )
    rank = spec[0].shape.rank
    if rank == 4:
        dataset = dataset.unbatch()
    elif rank != 3:
        raise ModelError(
            f"dataset patches must be (H, W, 3) or batched (B, H, W, 3); got shape {spec[0].shape}"
        )
    aug = augmentation if augmentation is not None else Augmentation.none()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, seeds.batch(2))

    autotune = tf.data.AUTOTUNE
    if (spec[0].shape[1:3] if rank == 4 else spec[0].shape[:2]).is_fully_defined():
        # Patches of one size: batch first, then augment each batch vectorised (each
        # patch with its own seed, as patch by patch).
        def augment(pair: Any, s: tf.Tensor) -> Any:
            patches, labels = pair
            out = augment_batch(patches, s, size=size, augmentation=aug)
            return out, tf.cast(labels, tf.int32)

        dataset = dataset.batch(batch_size).map(
            augment, num_parallel_calls=autotune, deterministic=True
        )
        return dataset.prefetch(autotune).with_options(_pipeline_options())

    def augment_one(pair: Any, s: tf.Tensor) -> Any:
        patch, label = pair
        return augment_patch(patch, s, size=size, augmentation=aug), tf.cast(label, tf.int32)

    dataset = dataset.map(augment_one, num_parallel_calls=autotune, deterministic=True)
    return dataset.batch(batch_size).prefetch(autotune).with_options(_pipeline_options())


@dataclass(frozen=True, eq=False)
class _Subset:
    """Some patches of a store (``index`` into it), with the patch-source interface."""

    store: PatchStore
    index: npt.NDArray[np.int64]

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = self.store.labels[self.index]
        return out

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
        return self.store.read(self.index[np.asarray(indices, dtype=np.int64)])


def patch_dataset(
    store: PatchStore,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    labels: bool = True,
    epochs: int = 1,
    indices: npt.ArrayLike | None = None,
) -> tf.data.Dataset:
    """The patches of a store as a ``tf.data.Dataset`` of batches, for Keras or a training loop.

    The pipeline is the one :class:`~cervixwsi.models.PatchClassifier` trains
    from, without augmentation: each batch's patches are read with one
    ``store.read`` call (in index order, so each zarr chunk is read once),
    several batches are read at once in parallel threads, and batches are
    prefetched.  The patches never need to fit in memory.

    Parameters
    ----------
    store : cervixwsi.tiling.PatchStore
        The patches (all of those asked for must have been extracted).
    batch_size : int
        Patches per batch, default 32 (the study's value); the last batch of
        each pass may be smaller.
    shuffle : bool
        Visit the patches in a random order, a new one for each pass, drawn
        from ``(seed, pass)``: the same seed gives the same batches.  Default
        False: index order.
    seed : int, optional
        Non-negative seed of the order; default a fresh random one.
    labels : bool
        Yield ``(patches, labels)`` (default) or the patches alone.
    epochs : int
        Passes over the patches in the dataset, default 1 (iterate it again
        for another pass in the same order, or ask for several passes here to
        have each in its own order).
    indices : array_like, optional
        Only these patches (e.g. a training split), in this order when not
        shuffled; negative indices count from the end.

    Returns
    -------
    tf.data.Dataset
        Batches of uint8 ``(B, H, W, 3)`` patches and int32 ``(B,)`` labels
        (1 tumor, 0 normal); every patch once in each pass.

    Raises
    ------
    ParameterError
        If ``store`` is not a PatchStore, ``batch_size`` or ``epochs`` is not
        a positive integer, or ``seed`` not a non-negative integer (checked
        before TensorFlow is imported).
    PatchStoreError
        If an index is out of range or a patch asked for has not been
        extracted (an interrupted :meth:`PatchStore.build
        <cervixwsi.tiling.PatchStore.build>`).
    ImportError
        If TensorFlow is not installed (``pip install 'cervixwsi[tf]'``).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from cervixwsi.models import patch_dataset
    >>> from cervixwsi.slide import ArraySlide
    >>> from cervixwsi.tiling import PatchSampler, PatchStore
    >>> rgb = np.full((512, 512, 3), 235, np.uint8); rgb[64:448, 64:448] = (190, 100, 170)
    >>> slide = ArraySlide(rgb, mpp=1.0, name="demo")
    >>> sampler = PatchSampler(n_normal_normal_slide=6, patch_size=64)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     store = PatchStore.build(f"{folder}/p.zarr", [slide], sampler, seed=0, progress=False)
    ...     batches = list(patch_dataset(store, 4, shuffle=True, seed=0))
    >>> [(tuple(p.shape), p.dtype.name, y.dtype.name) for p, y in batches]
    [((4, 64, 64, 3), 'uint8', 'int32'), ((2, 64, 64, 3), 'uint8', 'int32')]
    """
    from cervixwsi.tiling import PatchStore

    if not isinstance(store, PatchStore):
        raise ParameterError(
            f"patch_dataset.store must be a cervixwsi.tiling.PatchStore, got {type(store).__name__}"
        )
    batch_size = check_positive_int(batch_size, "patch_dataset.batch_size")
    epochs = check_positive_int(epochs, "patch_dataset.epochs")
    if seed is not None:
        seed = check_int(seed, "patch_dataset.seed", min=0)
    n = len(store)
    source: PatchStore | _Subset = store
    wanted = np.arange(n)
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise PatchStoreError(f"patch index out of range for a store of {n} patches")
        wanted = np.where(idx < 0, idx + n, idx)
        source = _Subset(store, wanted)
    if not store.is_complete:
        missing = wanted[~store.extracted[wanted]]
        if missing.size:
            raise PatchStoreError(
                f"{missing.size} of the patches asked for in {store.path} have not been "
                f"extracted (the first is patch {int(missing[0])}); run PatchStore.build "
                "again to finish it"
            )
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError("patch_dataset needs TensorFlow: pip install 'cervixwsi[tf]'")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    dataset, _ = source_dataset(
        source,
        batch_size=batch_size,
        size=store.patch_size,  # the full patch: no crop
        # Shuffled without augmentation; None: index order.
        augmentation=Augmentation.none() if shuffle else None,
        seed=seed,
        epochs=epochs,
    )
    if not labels:
        dataset = dataset.map(lambda patches, _labels: patches)
    return dataset
