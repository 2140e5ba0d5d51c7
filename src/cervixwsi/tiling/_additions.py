"""Patches added to a :class:`~cervixwsi.tiling.PatchStore` after its plan (``additions/``).

``PatchStore.add_patches`` (e.g. mined hard negatives) writes one zarr group per call and
slide into the store's ``additions/`` folder, whole in a temporary sibling renamed into
place, so an interrupted addition is invisible.  This module checks the arguments of an
addition, places its boxes as the store's patches, writes the group and reads the groups
back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_path
from cervixwsi._validate import check_choice, is_int
from cervixwsi.errors import GeometryError, ParameterError, PatchStoreError
from cervixwsi.tiling._coords import IntArray, PatchCoords, read_patches
from cervixwsi.tiling._plan import Source

__all__ = [
    "Addition",
    "box_array",
    "label_value",
    "new_coords",
    "read_additions",
    "slide_number",
    "write_addition",
]

_LABELS = {"normal": 0, "tumor": 1}


@dataclass(frozen=True, eq=False)
class Addition:
    """One group of ``additions/``: patches of one slide, one label, one source."""

    n: int
    slide_index: int
    label: int
    source: str
    x: IntArray
    y: IntArray
    tissue: npt.NDArray[np.float32]
    patches: Any


def read_additions(folder: Path, n_slides: int) -> list[Addition]:
    """The additions in ``folder`` in name order (hidden temporary siblings skipped)."""
    import zarr

    if not folder.is_dir():
        return []
    out = []
    for child in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        try:
            group = zarr.open_group(str(child), mode="r", zarr_format=3)
            attrs = dict(group.attrs)
            x = np.asarray(group["x"][:], dtype=np.int64)
            addition = Addition(
                n=len(x),
                slide_index=int(attrs["slide_index"]),
                label=int(attrs["label"]),
                source=str(attrs["source"]),
                x=x,
                y=np.asarray(group["y"][:], dtype=np.int64),
                tissue=np.asarray(group["tissue"][:], dtype=np.float32),
                patches=group["patches"],
            )
        except Exception as exc:
            raise PatchStoreError(
                f"the added patches {child} of the patch store {folder.parent} are corrupt: {exc}"
            ) from exc
        if not 0 <= addition.slide_index < n_slides or addition.patches.shape[0] != addition.n:
            raise PatchStoreError(
                f"the added patches {child} of the patch store {folder.parent} are corrupt: "
                f"slide index {addition.slide_index} of {n_slides} slides, "
                f"{addition.patches.shape[0]} patches for {addition.n} positions"
            )
        out.append(addition)
    return out


def label_value(label: Any) -> int:
    """``"normal"``/``"tumor"`` (or 0/1) as the stored label.

    Examples
    --------
    >>> label_value("tumor"), label_value(0)
    (1, 0)
    """
    if isinstance(label, str):
        return _LABELS[check_choice(label, "PatchStore.add_patches: label", tuple(_LABELS))]
    if not is_int(label):
        raise ParameterError(
            f"PatchStore.add_patches: label must be 'normal', 'tumor', 0 or 1, got {label!r}"
        )
    return int(check_choice(int(label), "PatchStore.add_patches: label", (0, 1)))


def box_array(boxes: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """``boxes`` (PatchCoords or (n, 4) level-0 ``x, y, w, h``) and their tissue fractions."""
    if isinstance(boxes, PatchCoords):
        return boxes.boxes(), np.asarray(boxes.tissue, np.float32)
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            "PatchStore.add_patches: boxes must be PatchCoords or an (n, 4) array of level-0 "
            f"x, y, width, height, got {type(boxes).__name__}"
        ) from None
    if arr.size == 0 and arr.ndim >= 1:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ParameterError(
            "PatchStore.add_patches: boxes must be PatchCoords or an (n, 4) array of level-0 "
            f"x, y, width, height, got {np.shape(boxes)!r}"
        )
    if not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
        raise ParameterError(
            "PatchStore.add_patches: boxes must be finite with a positive width and height"
        )
    return arr, np.full(len(arr), np.nan, np.float32)


def slide_number(item: Source, slides: Sequence[Any], path: Path) -> int:
    """The index of ``item`` among a store's recorded ``slides`` (by name, checked by size)."""
    names = tuple(str(s["name"]) for s in slides)
    if item.name not in names:
        raise ParameterError(
            f"PatchStore.add_patches: slide {item.name!r} is not one of the slides of "
            f"{path} ({', '.join(map(repr, names))})"
        )
    s = names.index(item.name)
    recorded = tuple(int(v) for v in slides[s]["dimensions"])
    if tuple(item.slide.dimensions) != recorded:
        raise GeometryError(
            f"PatchStore.add_patches: slide {item.name!r} is {item.slide.dimensions[0]}x"
            f"{item.slide.dimensions[1]} level-0 pixels, but the store's slide of that name "
            f"was {recorded[0]}x{recorded[1]}"
        )
    return s


def new_coords(
    item: Source,
    box: npt.NDArray[np.float64],
    tissue: npt.NDArray[np.float32],
    *,
    level: int,
    downsample: float,
    patch_size: int,
    held: set[tuple[int, int]],
) -> PatchCoords:
    """The boxes as patches of ``item`` at the store's resolution, less those ``held``.

    Each box is read as a patch of ``patch_size`` at ``level`` and ``downsample`` centred
    on the box; ``held`` are the level-0 corners the store already holds for this slide
    (a repeated box is skipped too).
    """
    extent = patch_size * downsample
    cx, cy = box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2
    width, height = item.slide.dimensions
    outside = (cx < 0) | (cy < 0) | (cx >= width) | (cy >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise GeometryError(
            f"PatchStore.add_patches: box {box[i].tolist()} of slide {item.name!r} has its "
            f"centre outside the slide ({width}x{height} level-0 pixels)"
        )
    x = np.floor(cx - extent / 2 + 0.5).astype(np.int64)
    y = np.floor(cy - extent / 2 + 0.5).astype(np.int64)
    held = set(held)
    keep = np.zeros(len(x), bool)
    for i, corner in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        if corner not in held:
            held.add(corner)
            keep[i] = True
    return PatchCoords(
        x[keep],
        y[keep],
        level=level,
        size=patch_size,
        downsample=downsample,
        slide_dimensions=(int(width), int(height)),
        tissue=tissue[keep],
    )


def write_addition(
    folder: Path,
    item: Source,
    s: int,
    coords: PatchCoords,
    *,
    label: int,
    source: str,
    chunk: int,
    compressors: Any,
) -> None:
    """Write ``coords``' patches as a new group of ``folder`` (``additions/``), whole or not at all.

    ``s`` is the slide's index in the store, ``chunk`` the patches per zarr chunk and
    ``compressors`` those of the store's planned patches.
    """
    import zarr

    store = folder.parent
    folder.mkdir(exist_ok=True)
    taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    target = folder / f"{max(taken, default=-1) + 1:06d}"
    n, size = len(coords), coords.size
    try:
        with atomic_path(target) as tmp:
            group = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
            for name, values in (("x", coords.x), ("y", coords.y), ("tissue", coords.tissue)):
                arr = group.create_array(name, shape=(n,), chunks=(n,), dtype=values.dtype)
                arr[:] = values
            patches = group.create_array(
                "patches",
                shape=(n, size, size, 3),
                chunks=(min(chunk, n), size, size, 3),
                dtype=np.uint8,
                compressors=compressors or None,
            )
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                patches[lo:hi] = read_patches(item.slide, coords, np.arange(lo, hi))
            group.attrs.update(
                {"slide": item.name, "slide_index": s, "label": label, "source": source}
            )
    except OSError as exc:
        if target.exists():
            raise PatchStoreError(
                f"another process added patches to {store} at the same time "
                f"({target.name}); run add_patches again"
            ) from exc
        raise
