"""Extracted patches on disk (:class:`PatchStore`): planned, filled resumably, read back.

The store is one of cervixwsi's resumable stores (:mod:`cervixwsi._store`): it is planned
(every patch position sampled and written) in a temporary sibling of its path and renamed
into place, so an interrupted plan leaves nothing behind; the pixels are then filled in
place, chunk by chunk, each chunk flagged done once written, so an interrupted fill
resumes where it stopped.  Patches added later (:meth:`PatchStore.add_patches`, e.g. mined
hard negatives) go into ``additions/``: one zarr group per call and slide, written whole
in a temporary sibling and renamed into place, so an interrupted addition is invisible.

The format is in :mod:`~cervixwsi.tiling._storeformat`, the fill in
:mod:`~cervixwsi.tiling._fill` and the additions in :mod:`~cervixwsi.tiling._additions`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_positive_int
from cervixwsi.errors import ParameterError, PatchStoreError
from cervixwsi.geometry import Raster
from cervixwsi.tiling._additions import (
    box_array,
    label_value,
    new_coords,
    read_additions,
    slide_number,
    write_addition,
)
from cervixwsi.tiling._coords import IntArray, PatchCoords
from cervixwsi.tiling._fill import fill_patches
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
from cervixwsi.tiling._storeformat import (
    ADDITIONS,
    FORMAT,
    SAMPLED,
    recorded_masker,
    same_masker,
)
from cervixwsi.tissue import TissueMasker

__all__ = ["PatchStore"]


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
    (when it made the masks).  Patches added after the plan
    (:meth:`add_patches`, e.g. mined hard negatives) are in ``additions/``, one
    zarr group each (``patches``, ``x``, ``y``, ``tissue``; attributes ``slide``,
    ``slide_index``, ``label``, ``source``), read after the planned patches;
    :attr:`sources` says where each patch came from.

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
        opened = FORMAT.open(path)
        self._path = opened.path
        group = opened.group
        try:
            self._arrays = {
                name: group[name]
                for name in ("patches", "labels", "x", "y", "slide_index", "tissue", "done")
            }
            self._base_labels = np.asarray(self._arrays["labels"][:], dtype=np.int64)
            self._done = np.asarray(self._arrays["done"][:], dtype=bool)
        except Exception as exc:
            raise PatchStoreError(
                f"patch store {self._path} is incomplete or corrupt: {exc}"
            ) from exc
        self._attrs = opened.attrs
        self._identity = opened.identity
        self._chunk = int(self._arrays["patches"].chunks[0])
        self._n_base = int(self._arrays["patches"].shape[0])
        self._load_additions()

    def _load_additions(self) -> None:
        """Read the groups of ``additions/`` (patches added after the plan), in order."""
        self._added = read_additions(self._path / ADDITIONS, len(self.slide_names))
        self._labels = np.concatenate(
            [self._base_labels, *(np.full(a.n, a.label, np.int64) for a in self._added)]
        )
        self._offsets = np.cumsum([self._n_base, *(a.n for a in self._added)])

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
        return int(self._offsets[-1])

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
        """The zarr array of the planned patches, ``(N, H, W, 3)`` uint8.

        Patches added with :meth:`add_patches` are not in it (they follow it in
        :meth:`read`, :attr:`labels` and the other per-patch arrays).
        """
        return self._arrays["patches"]

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Per-patch label: 1 tumor, 0 normal."""
        return self._labels.copy()

    @property
    def x(self) -> IntArray:
        """Level-0 left edges."""
        base = np.asarray(self._arrays["x"][:], dtype=np.int64)
        return np.concatenate([base, *(a.x for a in self._added)])

    @property
    def y(self) -> IntArray:
        """Level-0 top edges."""
        base = np.asarray(self._arrays["y"][:], dtype=np.int64)
        return np.concatenate([base, *(a.y for a in self._added)])

    @property
    def slide_index(self) -> npt.NDArray[np.int32]:
        """Per-patch index into :attr:`slide_names`."""
        base = np.asarray(self._arrays["slide_index"][:], dtype=np.int32)
        return np.concatenate([base, *(np.full(a.n, a.slide_index, np.int32) for a in self._added)])

    @property
    def tissue(self) -> npt.NDArray[np.float32]:
        """Per-patch tissue fraction (NaN for an added patch whose fraction was not given)."""
        base = np.asarray(self._arrays["tissue"][:], dtype=np.float32)
        return np.concatenate([base, *(a.tissue for a in self._added)])

    @property
    def sources(self) -> npt.NDArray[np.str_]:
        """Where each patch came from: ``"sampled"`` (planned by :meth:`build`), or the
        ``source`` it was added with by :meth:`add_patches` (e.g. ``"hard_negative"``).

        Query it like any array, e.g. ``store.sources == "hard_negative"``.
        """
        parts = [np.full(self._n_base, SAMPLED), *(np.full(a.n, a.source) for a in self._added)]
        out: npt.NDArray[np.str_] = np.concatenate(parts).astype(str)
        return out

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
        """Per patch: True when its pixels have been extracted (all True once complete).

        Added patches are always extracted: an addition is written whole or not at all.
        """
        base = np.repeat(self._done, self._chunk)[: self._n_base]
        return np.concatenate([base, np.ones(len(self) - self._n_base, bool)])

    @property
    def masker(self) -> TissueMasker | None:
        """The :class:`~cervixwsi.tissue.TissueMasker` that made the tissue masks.

        ``None`` when the masks were given to :meth:`build`.
        """
        return recorded_masker(self._identity.get("masker"))

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
        base = idx < self._n_base
        missing = ~self._done[idx[base] // self._chunk] if base.any() else np.zeros(0, bool)
        if missing.any():
            raise PatchStoreError(
                f"patch {int(idx[base][missing][0])} of {self._path} has not been extracted; "
                "run PatchStore.build again to finish it"
            )
        size = self.patch_size
        out = np.empty((idx.size, size, size, 3), np.uint8)
        # Part 0 is the planned patches, part k the k-th addition.
        part = np.searchsorted(self._offsets, idx, side="right")
        starts = np.concatenate([[0], self._offsets])
        arrays = [self._arrays["patches"], *(a.patches for a in self._added)]
        for k in np.unique(part):
            here = np.flatnonzero(part == k)
            local = idx[here] - starts[k]
            unique, inverse = np.unique(local, return_inverse=True)  # sorted: chunk by chunk
            try:
                data = np.asarray(arrays[k].oindex[unique], dtype=np.uint8)
            except Exception as exc:
                raise PatchStoreError(f"cannot read patches of {self._path}: {exc}") from exc
            out[here] = data[inverse.reshape(-1)]
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

    # --- adding patches ---------------------------------------------------------------

    def add_patches(
        self,
        slide: Any,
        boxes: PatchCoords | npt.ArrayLike,
        *,
        label: str | int = "normal",
        source: str = "hard_negative",
    ) -> int:
        """Add patches of one of the store's slides, e.g. mined hard negatives.

        Each box is read as a patch of the store's size and resolution (the level
        and downsample the store records for that slide) centred on the box: a box
        of the store's patch extent (``patch_size`` x the slide's downsample, in
        level-0 pixels) is read exactly at its corner.  The new patches are
        ordinary patches of the store: :meth:`read`, :attr:`labels`,
        :meth:`iter_batches`, :func:`~cervixwsi.models.patch_dataset` and
        :meth:`PatchClassifier.fit <cervixwsi.models.PatchClassifier.fit>` see them
        after the planned ones; :attr:`sources` records ``source`` for each.

        Atomic and resumable: the patches are written into a new group of the
        store's ``additions/`` folder, made in a temporary sibling and renamed into
        place once whole, so an interruption (an error, Ctrl-C, a killed process)
        leaves the store as it was (a killed process may leave a hidden
        ``additions/.*.tmp`` folder, which is ignored and can be deleted).  A box
        whose patch the store already holds for this slide (the same level-0
        corner, planned or added) is skipped, as are repeated boxes, so running
        the same call again adds nothing.

        Stores written by cervixwsi before this method keep opening as they were
        (they have no ``additions/``); an older cervixwsi reading a store with
        additions sees only its planned patches.

        Parameters
        ----------
        slide : Slide, ArraySlide, path or SyntheticSlide
            One of the store's slides (matched by name, checked by dimensions).
        boxes : PatchCoords or array_like (n, 4)
            Level-0 ``x, y, width, height`` of each patch (``PatchCoords.boxes()``
            of e.g. :func:`cervixwsi.heatmap.mine_hard_negatives`).  Their tissue
            fractions are kept from ``PatchCoords`` (NaN from an array).
        label : {"normal", "tumor"} or {0, 1}
            The label of every added patch (default ``"normal"``).
        source : str
            What they are, recorded per patch (default ``"hard_negative"``); not
            ``"sampled"``, which names the planned patches.

        Returns
        -------
        int
            The number of patches added (0 when every box was already there).

        Warns
        -----
        UserWarning
            When ``boxes`` is empty: nothing is added (a model without false
            positives on a slide has no hard negatives there; not an error).

        Raises
        ------
        ParameterError
            If ``slide`` is not one of the store's slides, ``label`` or ``source``
            is invalid, or ``boxes`` is not an ``(n, 4)`` array of finite boxes.
        GeometryError
            If the slide's dimensions differ from those the store recorded, or a
            box's centre lies outside the slide.
        PatchStoreError
            If the patches cannot be written (the store is left as it was).

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from cervixwsi.slide import ArraySlide
        >>> rgb = np.full((512, 512, 3), 235, np.uint8); rgb[64:448, 64:448] = (190, 100, 170)
        >>> slide = ArraySlide(rgb, mpp=1.0, name="demo")
        >>> sampler = PatchSampler(n_normal_normal_slide=6, patch_size=64)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     store = PatchStore.build(folder + "/p.zarr", [slide], sampler, seed=0,
        ...                              progress=False)
        ...     boxes = [[128, 128, 64, 64], [192, 128, 64, 64]]
        ...     first, again = store.add_patches(slide, boxes), store.add_patches(slide, boxes)
        ...     print(first, again, len(store), store.sources[-3:].tolist())
        2 0 8 ['sampled', 'hard_negative', 'hard_negative']
        """
        value = label_value(label)
        if not isinstance(source, str) or not source.strip() or source == SAMPLED:
            raise ParameterError(
                f"PatchStore.add_patches: source must be a non-empty name other than "
                f"{SAMPLED!r} (which names the planned patches), got {source!r}"
            )
        box, tissue = box_array(boxes)
        item = as_source(slide, None)
        try:
            s = self._slide_number(item)
            if not len(box):
                warnings.warn(
                    f"PatchStore.add_patches: no boxes given for slide {item.name!r}; "
                    f"nothing added to {self._path}",
                    UserWarning,
                    stacklevel=2,
                )
                return 0
            coords = self._new_coords(item, s, box, tissue)
            if len(coords):
                self._write_addition(item, s, coords, value, source)
        finally:
            if item.owned:
                close = getattr(item.slide, "close", None)
                if close is not None:
                    close()
        self._load_additions()
        return len(coords)

    def _slide_number(self, item: Source) -> int:
        """The index of ``item`` among the store's slides (by name, checked by size)."""
        return slide_number(item, self._identity["slides"], self._path)

    def _new_coords(
        self,
        item: Source,
        s: int,
        box: npt.NDArray[np.float64],
        tissue: npt.NDArray[np.float32],
    ) -> PatchCoords:
        """The boxes as the store's patches of slide ``s``, less those it already holds."""
        mine = self.slide_index == s
        return new_coords(
            item,
            box,
            tissue,
            level=slide_levels(self._attrs)[s],
            downsample=float(self._attrs["downsamples"][s]),
            patch_size=self.patch_size,
            held=set(zip(self.x[mine].tolist(), self.y[mine].tolist(), strict=True)),
        )

    def _write_addition(
        self, item: Source, s: int, coords: PatchCoords, label: int, source: str
    ) -> None:
        """Write ``coords``' patches as a new group of ``additions/``, whole or not at all."""
        write_addition(
            self._path / ADDITIONS,
            item,
            s,
            coords,
            label=label,
            source=source,
            chunk=self._chunk,
            compressors=self._arrays["patches"].compressors,
        )

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

        FORMAT.create_or_resume(
            path,
            identity,
            initialize,
            describe=describers([s.name for s in sources]),
            compare={"sampler": same_sampler, "masker": same_masker},
        )
        return cls(path)

    def _fill(self, sources: list[Source], workers: int, progress: bool) -> None:
        n = self._n_base  # the planned patches (additions are written whole)
        self._done = fill_patches(
            FORMAT.open(self._path, mode="r+").group,
            sources,
            x=self.x[:n],
            y=self.y[:n],
            slide_index=self.slide_index[:n],
            levels=slide_levels(self._attrs),
            downsamples=self._attrs["downsamples"],
            complete=bool(self._attrs.get("complete")),
            workers=workers,
            progress=progress,
        )
