"""Extracted patches on disk (:class:`PatchStore`): planned, filled resumably, read back.

The store is one of cervixwsi's resumable stores (:mod:`cervixwsi._store`): it is planned
(every patch position sampled and written) in a temporary sibling of its path and renamed
into place, so an interrupted plan leaves nothing behind; the pixels are then filled in
place, chunk by chunk, each chunk flagged done once written, so an interrupted fill
resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._store import StoreFormat, mark_complete
from cervixwsi._validate import check_positive_int
from cervixwsi.errors import ParameterError, PatchStoreError
from cervixwsi.geometry import Raster
from cervixwsi.tiling._coords import IntArray, PatchCoords, read_patch
from cervixwsi.tiling._plan import (
    Source,
    as_source,
    describers,
    plan_identity,
    same_sampler,
    slide_levels,
    write_plan,
)
from cervixwsi.tiling._sampler import PatchSampler
from cervixwsi.tissue import TissueMasker

__all__ = ["PatchStore"]

# --- the format -----------------------------------------------------------------------

# Version 1 kept the identity's keys as top-level attributes, with a "planned" flag set
# once the plan was written in place; version 2 keeps them in "identity" and is planned
# beside its place, so it is never half-made.
_IDENTITY_KEYS = ("slides", "sampler", "seed", "tumor_masks", "tissue_masks", "masker")


def _from_version_1(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    """A version-1 store's attributes in the version-2 layout."""
    if not attrs.get("planned"):
        raise PatchStoreError(
            f"{path} is a patch store whose planning was interrupted (by an older cervixwsi, "
            "which planned in place); delete it and build again"
        )
    identity = {key: attrs[key] for key in _IDENTITY_KEYS if key in attrs}
    return {**attrs, "identity": identity, "complete": attrs.get("complete", False)}


_FORMAT = StoreFormat(
    "cervixwsi.PatchStore",
    2,
    kind="patch store",
    error=PatchStoreError,
    migrate=_from_version_1,
    advice="build into a new path (or delete it)",
)


class PatchStore:
    """Extracted patches in a zarr store, with labels and where they came from.

    Layout (zarr v3 group): ``patches`` (N, H, W, 3) uint8 in chunks of a few
    patches, ``labels`` int8, ``x``, ``y`` int64 (level-0), ``slide_index``
    int32, ``tissue`` float32, ``done`` (one flag per chunk of ``patches``),
    and attributes: ``format`` (``"cervixwsi.PatchStore"``), ``format_version``
    (2; stores of version 1 are read too), ``cervixwsi_version``, ``complete``,
    ``patch_size``, ``levels`` and ``downsamples`` (the level each slide's patches
    are read from and its level-0 pixels per patch pixel: with the sampler's ``mpp``
    they differ between slides scanned at different resolutions), ``level`` (the
    slides' common level, null when they differ; stores made before ``levels``
    record only this), and ``identity``:
    what the plan was drawn from, which a rerun of :meth:`build` must match: the
    slides (name, path, dimensions), the sampler's parameters and seed, a digest
    of each slide's tumor and tissue mask, and the tissue masker's parameters
    (when it made the masks).

    Each slide's patches are stored in raster order (bands one patch high,
    left to right; tumor and normal mixed), which makes extraction decode
    each slide tile about once: shuffle them for training
    (``iter_batches(shuffle=True)``).

    Open one with ``PatchStore(path)`` or :meth:`open`; make one with
    :meth:`build`.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from cervixwsi.slide import ArraySlide
    >>> rgb = np.full((512, 512, 3), 235, np.uint8); rgb[64:448, 64:448] = (190, 100, 170)
    >>> slide = ArraySlide(rgb, mpp=1.0, name="demo")
    >>> sampler = PatchSampler(n_normal_normal_slide=6, patch_size=64)
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = folder.name + "/patches.zarr"
    >>> store = PatchStore.build(path, [slide], sampler, seed=0, progress=False)
    >>> len(store), store.patch_size, store.read([0, 5]).shape, store.is_complete
    (6, 64, (2, 64, 64, 3), True)
    >>> [labels.tolist() for _, labels in store.iter_batches(4)]
    [[0, 0, 0, 0], [0, 0]]
    >>> folder.cleanup()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        opened = _FORMAT.open(path)
        self._path = opened.path
        group = opened.group
        try:
            self._arrays = {
                name: group[name]
                for name in ("patches", "labels", "x", "y", "slide_index", "tissue", "done")
            }
            self._labels = np.asarray(self._arrays["labels"][:], dtype=np.int64)
            self._done = np.asarray(self._arrays["done"][:], dtype=bool)
        except Exception as exc:
            raise PatchStoreError(
                f"patch store {self._path} is incomplete or corrupt: {exc}"
            ) from exc
        self._attrs = opened.attrs
        self._identity = opened.identity
        self._chunk = int(self._arrays["patches"].chunks[0])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PatchStore:
        """Open an existing store (read-only).

        Raises
        ------
        PatchStoreError
            If there is no store at ``path``, it is not a zarr group (the message
            says what it is), not a cervixwsi patch store, of a newer format
            version (upgrade cervixwsi), or incomplete or corrupt.
        """
        return cls(path)

    # --- metadata -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._arrays["patches"].shape[0])

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return (
            f"PatchStore({str(self._path)!r}, n={len(self)}, patch_size={self.patch_size}, {state})"
        )

    @property
    def path(self) -> Path:
        """Where the store is."""
        return self._path

    @property
    def patch_size(self) -> int:
        """Patch side in pixels."""
        return int(self._attrs["patch_size"])

    @property
    def patches(self) -> Any:
        """The zarr array of patches, ``(N, H, W, 3)`` uint8."""
        return self._arrays["patches"]

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Per-patch label: 1 tumor, 0 normal."""
        return self._labels.copy()

    @property
    def x(self) -> IntArray:
        """Level-0 left edges."""
        return np.asarray(self._arrays["x"][:], dtype=np.int64)

    @property
    def y(self) -> IntArray:
        """Level-0 top edges."""
        return np.asarray(self._arrays["y"][:], dtype=np.int64)

    @property
    def slide_index(self) -> npt.NDArray[np.int32]:
        """Per-patch index into :attr:`slide_names`."""
        return np.asarray(self._arrays["slide_index"][:], dtype=np.int32)

    @property
    def slide_names(self) -> tuple[str, ...]:
        """The slides' ids, in build order."""
        return tuple(str(s["name"]) for s in self._identity["slides"])

    @property
    def sampler(self) -> PatchSampler:
        """The :class:`PatchSampler` the store was built with."""
        return PatchSampler(**self._identity["sampler"])

    @property
    def extracted(self) -> npt.NDArray[np.bool_]:
        """Per patch: True when its pixels have been extracted (all True once complete)."""
        return np.repeat(self._done, self._chunk)[: len(self)]

    @property
    def masker(self) -> TissueMasker | None:
        """The :class:`~cervixwsi.tissue.TissueMasker` that made the tissue masks.

        ``None`` when the masks were given to :meth:`build`.
        """
        params = self._identity.get("masker")
        if params is None:
            return None
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(params).items()
        }
        return TissueMasker(**fields)

    @property
    def is_complete(self) -> bool:
        """True when every patch has been extracted."""
        return bool(self._done.all())

    # --- reading --------------------------------------------------------------------

    def read(self, indices: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The patches at ``indices``: ``(k, H, W, 3)`` uint8, in the order asked.

        Raises
        ------
        PatchStoreError
            If an index is out of range, a patch has not been extracted yet
            (an interrupted :meth:`build`), or a chunk is corrupt.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise PatchStoreError(f"patch index out of range for a store of {n} patches")
        idx = np.where(idx < 0, idx + n, idx)
        missing = ~self._done[idx // self._chunk] if idx.size else np.zeros(0, bool)
        if missing.any():
            raise PatchStoreError(
                f"patch {int(idx[missing][0])} of {self._path} has not been extracted; "
                "run PatchStore.build again to finish it"
            )
        if not idx.size:
            return np.empty((0, self.patch_size, self.patch_size, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)  # sorted: chunk by chunk
        try:
            data = np.asarray(self._arrays["patches"].oindex[unique], dtype=np.uint8)
        except Exception as exc:
            raise PatchStoreError(f"cannot read patches of {self._path}: {exc}") from exc
        out: npt.NDArray[np.uint8] = data[inverse.reshape(-1)]
        return out

    def iter_batches(
        self,
        batch_size: int = 32,
        *,
        shuffle: bool = False,
        seed: int | np.random.Generator | None = None,
        indices: npt.ArrayLike | None = None,
    ) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]]:
        """Yield ``(patches, labels)`` batches (the last one may be smaller).

        Parameters
        ----------
        batch_size : int
            Patches per batch, default 32 (the study's value).
        shuffle : bool
            Visit the patches in a random order (from ``seed``).
        indices : array_like, optional
            Only these patches (e.g. a training split).
        """
        batch_size = check_positive_int(batch_size, "PatchStore.iter_batches: batch_size")
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        if shuffle:
            idx = np.random.default_rng(seed).permutation(idx)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            yield self.read(part), self._labels[part]

    # --- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        path: str | os.PathLike[str],
        slides: Sequence[Any],
        sampler: PatchSampler,
        *,
        tumor_masks: Sequence[Raster | None] | None = None,
        tissue_masks: Sequence[Raster] | None = None,
        masker: TissueMasker | None = None,
        seed: int | None = None,
        workers: int = 4,
        chunk_patches: int = 8,
        compress: bool = False,
        progress: bool = True,
    ) -> PatchStore:
        """Sample patches from ``slides`` and extract them into a store at ``path``.

        Resumable: all coordinates are planned first, in a temporary sibling of
        ``path`` that is renamed to ``path`` once the plan is written (so a
        build interrupted while planning leaves no store behind), then the
        pixels are filled chunk by chunk, each chunk marked done once written.
        If the build stops (an error, Ctrl-C, a killed process), calling
        ``build`` again with the same arguments fills only the chunks not yet
        done: no patch is lost or duplicated.

        Parameters
        ----------
        path : str or PathLike
            The zarr store (a directory) to create or resume.
        slides : sequence
            :class:`~cervixwsi.slide.Slide` / :class:`~cervixwsi.slide.ArraySlide`
            objects, slide paths, or objects with ``.path`` and ``.tumor_mask``
            (a :class:`~cervixwsi.synthetic.SyntheticSlide`).
        sampler : PatchSampler
            How to draw patches.
        tumor_masks : sequence of Raster or None, optional
            One per slide (``None`` for a normal slide); default: each slide's
            ``.tumor_mask`` if it has one, else ``None``.
        tissue_masks : sequence of Raster, optional
            One per slide; default: computed with ``masker``.
        masker : TissueMasker, optional
            Default ``TissueMasker()``.
        seed : int, optional
            Seed of the plan (each slide gets an independent stream); default
            the sampler's seed.
        workers : int
            Threads reading patches, default 4.
        chunk_patches : int
            Patches per zarr chunk, default 8.
        compress : bool
            Compress the patches (zstd).  Default False: decoded H&E patches
            shrink by about 40 %, and writing them raw is two to three times
            faster (extraction is then limited by reading the slide).
        progress : bool
            Show a progress bar.

        Raises
        ------
        StoreMismatchError
            If a store at ``path`` was planned from other slides, sampler
            parameters, seed, tumor or tissue masks (compared by a digest of
            their pixels and geometry) or masker parameters; the message names
            every difference.
        PatchStoreError
            If ``path`` holds something other than a patch store (an empty
            directory is built into), or one of a newer format version.
        ParameterError
            If ``workers`` or ``chunk_patches`` is not a positive integer, the
            sampler's parameters are invalid, or the masks do not match the slides.
        """
        check_positive_int(workers, "PatchStore.build: workers")
        check_positive_int(chunk_patches, "PatchStore.build: chunk_patches")
        sampler._validate()
        seed = sampler.seed if seed is None else seed
        items = list(slides)
        for what, seq in (("tumor_masks", tumor_masks), ("tissue_masks", tissue_masks)):
            if seq is not None and len(seq) != len(items):
                raise ParameterError(
                    f"PatchStore.build: {what} has {len(seq)} entries for {len(items)} slides"
                )
        sources = [
            as_source(item, None if tumor_masks is None else tumor_masks[i])
            for i, item in enumerate(items)
        ]
        try:
            store = cls._plan(
                Path(path), sources, sampler, tissue_masks, masker, seed, chunk_patches, compress
            )
            store._fill(sources, workers, progress)
        finally:
            for source in sources:
                if source.owned:
                    close = getattr(source.slide, "close", None)
                    if close is not None:
                        close()
        return cls(path)

    @classmethod
    def _plan(
        cls,
        path: Path,
        sources: list[Source],
        sampler: PatchSampler,
        tissue_masks: Sequence[Raster] | None,
        masker: TissueMasker | None,
        seed: int | None,
        chunk_patches: int,
        compress: bool,
    ) -> PatchStore:
        masker = masker or TissueMasker()
        identity = plan_identity(sources, sampler, tissue_masks, masker, seed)

        def initialize(group: Any) -> None:
            write_plan(group, sources, sampler, tissue_masks, masker, seed, chunk_patches, compress)

        _FORMAT.create_or_resume(
            path,
            identity,
            initialize,
            describe=describers([s.name for s in sources]),
            compare={"sampler": same_sampler},
        )
        return cls(path)

    def _fill(self, sources: list[Source], workers: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        group = _FORMAT.open(self._path, mode="r+").group
        patches, done_arr = group["patches"], group["done"]
        done = np.asarray(done_arr[:], dtype=bool)
        n = len(self)
        xs, ys, index = self.x, self.y, self.slide_index
        size = self.patch_size
        levels = slide_levels(self._attrs)
        downsamples = self._attrs["downsamples"]
        todo = np.flatnonzero(~done)
        if not len(todo):
            if not self._attrs.get("complete"):
                mark_complete(group)
            return
        chunk = self._chunk

        def extract(k: int) -> int:
            lo, hi = k * chunk, min(n, (k + 1) * chunk)
            batch = np.empty((hi - lo, size, size, 3), np.uint8)
            for j, i in enumerate(range(lo, hi)):
                s = int(index[i])
                coords = PatchCoords(
                    xs[i : i + 1],
                    ys[i : i + 1],
                    level=levels[s],
                    size=size,
                    downsample=downsamples[s],
                    slide_dimensions=sources[s].slide.dimensions,
                )
                batch[j] = read_patch(sources[s].slide, coords, 0)
            patches[lo:hi] = batch
            return k

        remaining = sum(min(n, (int(k) + 1) * chunk) - int(k) * chunk for k in todo)
        bar = tqdm(total=n, initial=n - remaining, unit="patch", disable=not progress)
        last_flush = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        futures: dict[concurrent.futures.Future[int], int] = {}
        try:
            futures.update({pool.submit(extract, int(k)): int(k) for k in todo})
            for future in concurrent.futures.as_completed(futures):
                k = future.result()
                done[k] = True
                bar.update(min(n, (k + 1) * chunk) - k * chunk)
                if time.monotonic() - last_flush > 1.0:
                    done_arr[:] = done
                    last_flush = time.monotonic()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future, k in futures.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    done[k] = True
            done_arr[:] = done
            if done.all():
                mark_complete(group)
            bar.close()
        self._done = done
