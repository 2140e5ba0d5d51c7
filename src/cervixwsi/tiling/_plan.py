"""Planning a patch store: its slides, what the plan is drawn from, and the plan itself."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi._store import jsonable, same_json_since
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.tiling._sampler import PatchSampler
from cervixwsi.tissue import SlideLike, TissueMask, TissueMasker

__all__ = [
    "Source",
    "as_source",
    "describers",
    "plan_identity",
    "same_sampler",
    "slide_levels",
    "write_plan",
]

logger = logging.getLogger("cervixwsi.tiling")


@dataclass(frozen=True)
class Source:
    """A slide to plan from: the slide, its id and file, its tumor mask, whether we opened it."""

    slide: SlideLike
    name: str
    path: str | None
    tumor_mask: Raster | None
    owned: bool


def as_source(item: Any, tumor_mask: Raster | None) -> Source:
    """One of ``PatchStore.build``'s slides (a slide, a path or a ``SyntheticSlide``)."""
    from cervixwsi.slide import Slide

    if isinstance(item, str | os.PathLike):
        slide = Slide(item)
        return Source(slide, slide.name, str(Path(item).resolve()), tumor_mask, True)
    if isinstance(item, SlideLike):
        path = getattr(item, "path", None)
        resolved = None if path is None else str(Path(path).resolve())
        return Source(item, item.name, resolved, tumor_mask, False)
    path = getattr(item, "path", None)
    if path is not None:  # e.g. a SyntheticSlide: a file with ground truth
        own = tumor_mask if tumor_mask is not None else getattr(item, "tumor_mask", None)
        slide = Slide(path)
        return Source(slide, slide.name, str(Path(path).resolve()), own, True)
    raise ParameterError(
        f"PatchStore.build takes slides as Slide objects, paths or objects with a .path "
        f"(a SyntheticSlide), got {item!r}"
    )


def mask_digest(mask: Raster | None, what: str) -> str | None:
    """A fingerprint of a mask as sampling sees it (``None`` for no mask).

    SHA-256 of its pixels (tissue or not, as :class:`~cervixwsi.tissue.TissueMask`
    reads them), its shape, downsample, slide dimensions and mpp.
    """
    if mask is None:
        return None
    if not isinstance(mask, Raster):
        raise ParameterError(f"the {what} must be a Raster (e.g. a TissueMask), got {mask!r}")
    m = TissueMask.from_raster(mask)
    geometry = {
        "shape": list(m.shape),
        "downsample": float(m.downsample),
        "slide_dimensions": [int(v) for v in m.slide_dimensions],
        "mpp": None if m.mpp is None else float(m.mpp),
    }
    digest = hashlib.sha256(json.dumps(geometry, sort_keys=True).encode())
    digest.update(np.packbits(m.array).tobytes())
    return f"sha256:{digest.hexdigest()}"


def plan_identity(
    sources: list[Source],
    sampler: PatchSampler,
    tissue_masks: Sequence[Raster] | None,
    masker: TissueMasker,
    seed: int | None,
) -> dict[str, Any]:
    """What a store's plan is drawn from, which a rerun of ``PatchStore.build`` must match."""
    return {
        "slides": [
            {"name": s.name, "path": s.path, "dimensions": list(s.slide.dimensions)}
            for s in sources
        ],
        "sampler": sampler.params(),
        "seed": seed,
        # What the plan was drawn from besides: the masks (a digest of each) and the
        # masker's parameters when it made the tissue masks.
        "tumor_masks": [mask_digest(s.tumor_mask, "tumor mask") for s in sources],
        "tissue_masks": (
            None if tissue_masks is None else [mask_digest(m, "tissue mask") for m in tissue_masks]
        ),
        "masker": None if tissue_masks is not None else dataclasses.asdict(masker),
    }


def write_plan(
    group: Any,
    sources: list[Source],
    sampler: PatchSampler,
    tissue_masks: Sequence[Raster] | None,
    masker: TissueMasker,
    seed: int | None,
    chunk_patches: int,
    compress: bool,
) -> None:
    """Sample every slide's patches and lay out a new store's arrays in ``group``."""
    children = np.random.SeedSequence(seed).spawn(len(sources))
    xs, ys, labels, tissue, index = [], [], [], [], []
    levels: list[int] = []
    downsamples: list[float] = []
    for i, source in enumerate(sources):
        mask = tissue_masks[i] if tissue_masks is not None else masker.mask(source.slide)
        coords = sampler.sample(
            source.slide, mask, source.tumor_mask, seed=np.random.default_rng(children[i])
        )
        # Raster order (bands one patch high, left to right): neighbouring patches
        # share tiles, so extraction decodes each tile about once.
        coords = coords[np.lexsort((coords.x, coords.y // max(1, int(coords.extent))))]
        logger.info(
            "%s: %d tumor + %d normal patches planned",
            source.name,
            int((coords.labels == 1).sum()),
            int((coords.labels == 0).sum()),
        )
        xs.append(coords.x)
        ys.append(coords.y)
        labels.append(coords.labels)
        tissue.append(coords.tissue)
        index.append(np.full(len(coords), i, np.int32))
        levels.append(coords.level)
        downsamples.append(coords.downsample)
    n = int(sum(len(v) for v in xs))
    size = sampler.patch_size
    chunk = max(1, min(chunk_patches, n))

    def column(name: str, parts: list[Any], dtype: Any) -> None:
        data = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        arr = group.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=dtype)
        if n:
            arr[:] = data

    column("x", xs, np.int64)
    column("y", ys, np.int64)
    column("labels", labels, np.int8)
    column("tissue", tissue, np.float32)
    column("slide_index", index, np.int32)
    group.create_array(
        "patches",
        shape=(n, size, size, 3),
        chunks=(chunk, size, size, 3),
        dtype=np.uint8,
        compressors="auto" if compress else None,
    )
    n_chunks = math.ceil(n / chunk)
    done = group.create_array(
        "done", shape=(n_chunks,), chunks=(max(n_chunks, 1),), dtype=bool, fill_value=False
    )
    if n_chunks:
        done[:] = np.zeros(n_chunks, bool)
    # With ``mpp`` each slide may be read at its own level; ``level`` (all a store had
    # before ``levels``) is kept for readers of that layout: the slides' common level,
    # or null when they differ.
    common = set(levels) if levels else {sampler.level if sampler.mpp is None else None}
    group.attrs.update(
        jsonable(  # the sampler accepts NumPy integers; JSON takes Python numbers only
            {
                "patch_size": size,
                "level": common.pop() if len(common) == 1 else None,
                "levels": levels,
                "downsamples": downsamples,
            }
        )
    )


def slide_levels(attrs: Mapping[str, Any]) -> list[int]:
    """Each slide's level from a store's attributes, ``levels`` or (older stores) ``level``.

    Examples
    --------
    >>> slide_levels({"level": None, "levels": [0, 1], "downsamples": [2.0, 2.0]})
    [0, 1]
    >>> slide_levels({"level": 1, "downsamples": [2.0, 2.0, 2.0]})  # before "levels"
    [1, 1, 1]
    """
    levels = attrs.get("levels")
    if levels is None:
        return [int(attrs["level"])] * len(attrs["downsamples"])
    return [int(level) for level in levels]


# Sampler parameters added since stores were first made, with the value that stores
# recorded before them meant: an older store's sampler lacks the key.
_ADDED_SAMPLER_PARAMS: dict[str, Any] = {"mpp": None}


def same_sampler(old: Any, new: Any) -> bool:
    """Whether two recorded sampler parameters are the same sampler.

    A parameter added since a store was made (``mpp``) counts as its value then
    (``None``), so a store made before it resumes with a sampler that leaves it unset.

    Examples
    --------
    >>> same_sampler({"level": 0}, {"level": 0, "mpp": None})
    True
    >>> same_sampler({"level": 0}, {"level": 0, "mpp": 0.5})
    False
    """
    return same_json_since(old, new, _ADDED_SAMPLER_PARAMS)


def describers(names: list[str]) -> dict[str, Callable[[Any, Any], str]]:
    """How a difference of each identity key reads in a refusal (``names``: the slides)."""

    def slides(old: Any, new: Any) -> str:
        if not (isinstance(old, list) and isinstance(new, list)):
            return "slides"
        before = [s.get("name") if isinstance(s, dict) else s for s in old]
        after = [s.get("name") if isinstance(s, dict) else s for s in new]
        if before != after:
            return f"slides ({', '.join(map(repr, before))} -> {', '.join(map(repr, after))})"
        which = [repr(names[i]) for i in range(len(new)) if old[i] != new[i]]
        return f"slides (the path or dimensions of {', '.join(which)})"

    def sampler(old: Any, new: Any) -> str:
        if not (isinstance(old, dict) and isinstance(new, dict)):
            return "sampler"
        fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in fields)
        return f"sampler ({changes})"

    def masks(key: str) -> Callable[[Any, Any], str]:
        def words(old: Any, new: Any) -> str:
            if (
                isinstance(old, list)
                and isinstance(new, list)
                and len(old) == len(new) == len(names)
            ):
                which = [repr(names[i]) for i in range(len(new)) if old[i] != new[i]]
                return f"{key} (of slide{'s' if len(which) > 1 else ''} {', '.join(which)})"
            return key

        return words

    def masker(old: Any, new: Any) -> str:
        if not (isinstance(old, dict) and isinstance(new, dict)):
            return "masker"
        fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"masker ({', '.join(fields)})"

    return {
        "slides": slides,
        "sampler": sampler,
        "tumor_masks": masks("tumor_masks"),
        "tissue_masks": masks("tissue_masks"),
        "masker": masker,
    }
