"""Many per-slide patch stores read as one training set: :class:`PatchStoreSet`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import PatchStoreError
from cervixwsi.tiling import PatchStore

__all__ = ["PatchStoreSet"]


class PatchStoreSet:
    """Several :class:`~cervixwsi.tiling.PatchStore` objects read as one patch source.

    A cohort run writes one store per slide (``<out>/patches/<id>.zarr``); this joins
    those of a split into the training (or validation) set of
    :meth:`cervixwsi.models.PatchClassifier.fit`, which reads it like one store:
    ``len``, ``labels`` and ``read(indices)``, patch ``k`` of store ``j`` coming after
    every patch of the stores before ``j``.

    Parameters
    ----------
    stores : iterable of PatchStore or path
        Complete stores, all of one patch size.

    Raises
    ------
    PatchStoreError
        If there is no store, a store is incomplete (its build was interrupted: run the
        patch stage again), or the patch sizes differ.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from cervixwsi.slide import ArraySlide
    >>> from cervixwsi.tiling import PatchSampler, PatchStore
    >>> from cervixwsi.tissue import TissueMask
    >>> slide = ArraySlide(np.full((256, 256, 3), 200, np.uint8), mpp=1.0)
    >>> tissue = TissueMask(np.ones((8, 8), bool), 32, (256, 256))
    >>> sampler = PatchSampler(n_normal_normal_slide=3, patch_size=32)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     stores = [PatchStore.build(f"{tmp}/{i}.zarr", [slide], sampler,
    ...                                tissue_masks=[tissue], seed=i, progress=False)
    ...               for i in range(2)]
    ...     both = PatchStoreSet(stores)
    ...     len(both), both.read([5, 0]).shape, both.labels.tolist()
    (6, (2, 32, 32, 3), [0, 0, 0, 0, 0, 0])
    """

    def __init__(self, stores: Iterable[PatchStore | str | os.PathLike[str]]) -> None:
        opened = [s if isinstance(s, PatchStore) else PatchStore(s) for s in stores]
        if not opened:
            raise PatchStoreError("a PatchStoreSet needs at least one patch store")
        for store in opened:
            if not store.is_complete:
                raise PatchStoreError(
                    f"{store.path} is incomplete (its build was interrupted): run the patch "
                    "stage again to finish it"
                )
        sizes = {s.patch_size for s in opened}
        if len(sizes) > 1:
            raise PatchStoreError(
                f"the patch stores have different patch sizes {sorted(sizes)}: "
                "a training set needs one"
            )
        self._stores: tuple[PatchStore, ...] = tuple(opened)
        self._offsets = np.cumsum([0, *(len(s) for s in opened)])
        self._labels = np.concatenate([s.labels for s in opened])

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike[str], slide_ids: Sequence[str] | None = None
    ) -> PatchStoreSet:
        """The stores ``<folder>/<id>.zarr`` of the given slides (default: every store).

        Raises
        ------
        PatchStoreError
            If a slide has no store there, or the folder holds none.
        """
        root = Path(folder)
        if slide_ids is None:
            paths = sorted(p for p in root.glob("*.zarr") if not p.name.startswith("."))
        else:
            paths = [root / f"{sid}.zarr" for sid in slide_ids]
            missing = [p.stem for p in paths if not p.exists()]
            if missing:
                raise PatchStoreError(
                    f"no patch store of slide(s) {', '.join(missing)} in {root}: run the "
                    "patch stage on them first"
                )
        if not paths:
            raise PatchStoreError(f"no patch stores (<slide>.zarr) in {root}")
        return cls(paths)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"PatchStoreSet({len(self._stores)} stores, {len(self)} patches)"

    @property
    def stores(self) -> tuple[PatchStore, ...]:
        """The stores, in order."""
        return self._stores

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return self._stores[0].patch_size

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Per-patch label (1 tumor, 0 normal), store after store."""
        return self._labels.copy()

    def read(self, indices: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The patches at ``indices``: ``(k, H, W, 3)`` uint8, in the order asked.

        Raises
        ------
        PatchStoreError
            If an index is out of range.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise PatchStoreError(f"patch index out of range for a set of {n} patches")
        idx = np.where(idx < 0, idx + n, idx)
        size = self.patch_size
        out = np.empty((len(idx), size, size, 3), np.uint8)
        which = np.searchsorted(self._offsets, idx, side="right") - 1
        for j in np.unique(which):
            here = np.flatnonzero(which == j)
            out[here] = self._stores[int(j)].read(idx[here] - self._offsets[j])
        return out
