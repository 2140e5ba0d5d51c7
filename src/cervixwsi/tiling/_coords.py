"""Patch coordinates (:class:`PatchCoords`) and reading their pixels from a slide."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_positive_int, check_real
from cervixwsi.errors import GeometryError, ParameterError
from cervixwsi.geometry import Raster, resolve_level
from cervixwsi.tissue import SlideLike, TissueMask

__all__ = ["PatchCoords", "read_patch", "read_patches"]

IntArray = npt.NDArray[np.int64]

_EMPTY_F32: npt.NDArray[np.float32] = np.zeros(0, np.float32)
_EMPTY_I8: npt.NDArray[np.int8] = np.zeros(0, np.int8)
_EMPTY_I64: IntArray = np.zeros(0, np.int64)


def _frozen(a: npt.ArrayLike, dtype: type[np.generic]) -> Any:
    out = np.array(a, dtype=dtype, copy=True).reshape(-1)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class PatchCoords:
    """Square patches over one slide, as arrays (one entry per patch).

    Parameters
    ----------
    x, y : array_like of int
        Level-0 top-left corners.
    level : int
        The pyramid level the pixels are read from.
    size : int
        Patch side in output pixels (e.g. 256).
    downsample : float
        Level-0 pixels per output pixel: the level's downsample, or
        ``target_mpp / slide_mpp`` for patches at a target resolution.  A
        patch covers ``size * downsample`` level-0 pixels (:attr:`extent`).
    slide_dimensions : tuple of int
        The slide's level-0 ``(width, height)``.
    tissue : array_like of float, optional
        Tissue fraction of each patch (1 when no mask was used).
    labels : array_like of int, optional
        1 tumor, 0 normal, -1 unlabelled (grid patches).
    rows, cols : array_like of int, optional
        Grid indices (``-1`` for sampled patches).
    grid_shape : tuple of int, optional
        ``(rows, cols)`` of the whole grid over the slide (``None`` for sampled
        patches): a :class:`~cervixwsi.geometry.Raster` of this shape at
        downsample :attr:`grid_downsample` holds one value per grid patch.
    grid_downsample : float, optional
        Level-0 pixels between neighbouring grid patches (the stride).

    Examples
    --------
    >>> c = PatchCoords([0, 256], [0, 0], level=0, size=256, downsample=1.0,
    ...                 slide_dimensions=(512, 300))
    >>> len(c), c.extent, c[1].x
    (2, 256.0, array([256]))
    >>> c.boxes()
    array([[  0.,   0., 256., 256.],
           [256.,   0., 256., 256.]])
    """

    x: IntArray
    y: IntArray
    level: int
    size: int
    downsample: float
    slide_dimensions: tuple[int, int]
    tissue: npt.NDArray[np.float32] = dataclasses.field(default_factory=lambda: _EMPTY_F32)
    labels: npt.NDArray[np.int8] = dataclasses.field(default_factory=lambda: _EMPTY_I8)
    rows: IntArray = dataclasses.field(default_factory=lambda: _EMPTY_I64)
    cols: IntArray = dataclasses.field(default_factory=lambda: _EMPTY_I64)
    grid_shape: tuple[int, int] | None = None
    grid_downsample: float | None = None

    def __post_init__(self) -> None:
        x = _frozen(self.x, np.int64)
        n = len(x)
        fields: dict[str, Any] = {"x": x, "y": _frozen(self.y, np.int64)}
        for name, dtype, fill in (
            ("tissue", np.float32, 1.0),
            ("labels", np.int8, -1),
            ("rows", np.int64, -1),
            ("cols", np.int64, -1),
        ):
            value = np.asarray(getattr(self, name))
            fields[name] = _frozen(np.full(n, fill) if value.size == 0 and n else value, dtype)
        for name, value in fields.items():
            if len(value) != n:
                raise GeometryError(f"PatchCoords.{name} has {len(value)} entries, x has {n}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "size", check_positive_int(self.size, "PatchCoords.size"))
        object.__setattr__(self, "level", check_int(self.level, "PatchCoords.level", min=0))
        downsample = check_real(self.downsample, "PatchCoords.downsample", min=0, min_open=True)
        object.__setattr__(self, "downsample", downsample)
        w, h = self.slide_dimensions
        object.__setattr__(self, "slide_dimensions", (int(w), int(h)))

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (
            f"PatchCoords(n={len(self)}, level={self.level}, size={self.size}, "
            f"downsample={self.downsample:g}, slide_dimensions={self.slide_dimensions}, "
            f"grid_shape={self.grid_shape})"
        )

    def __getitem__(self, index: int | slice | npt.ArrayLike) -> PatchCoords:
        """The patches at ``index`` (an int, a slice, indices or a boolean mask)."""
        if isinstance(index, int | np.integer):
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        index = index if isinstance(index, slice) else np.asarray(index)
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=self.y[index],
            tissue=self.tissue[index],
            labels=self.labels[index],
            rows=self.rows[index],
            cols=self.cols[index],
        )

    @property
    def extent(self) -> float:
        """The level-0 side of every patch: ``size * downsample``."""
        return self.size * self.downsample

    def boxes(self) -> npt.NDArray[np.float64]:
        """Level-0 ``(x, y, width, height)`` of every patch, shape ``(n, 4)``."""
        e = np.full(len(self), self.extent)
        return np.stack([self.x.astype(np.float64), self.y.astype(np.float64), e, e], axis=1)

    def centers(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Level-0 ``(x, y)`` centres of the patches."""
        half = self.extent / 2
        return self.x.astype(np.float64) + half, self.y.astype(np.float64) + half


# --- reading patches ------------------------------------------------------------------


def read_patch(slide: SlideLike, coords: PatchCoords, index: int) -> npt.NDArray[np.uint8]:
    """The RGB pixels of patch ``index`` of ``coords``: ``(size, size, 3)`` uint8.

    Parts outside the slide are white.  When ``coords.downsample`` is not the
    level's downsample (patches at a target mpp), the level's pixels are
    resampled (``cv2.INTER_AREA``) to ``size``.

    Raises
    ------
    LevelError
        If the slide lacks the patches' level.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> slide = ArraySlide(np.zeros((100, 100, 3), np.uint8))
    >>> coords = PatchCoords([90], [0], level=0, size=16, downsample=1.0,
    ...                      slide_dimensions=(100, 100))
    >>> read_patch(slide, coords, 0)[0, :, 0].tolist()  # white beyond the slide's edge
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]
    """
    resolve_level(slide, coords.level, owner="read_patch")  # the level must exist
    level_ds = float(slide.level_downsamples[coords.level])
    read = max(1, round(coords.size * coords.downsample / level_ds))
    location = (int(coords.x[index]), int(coords.y[index]))
    pixels = np.asarray(slide.read_region(location, coords.level, (read, read)))
    if read != coords.size:
        interpolation = cv2.INTER_AREA if read > coords.size else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (coords.size, coords.size), interpolation=interpolation)
    return pixels


def read_patches(
    slide: SlideLike, coords: PatchCoords, indices: npt.ArrayLike | None = None
) -> npt.NDArray[np.uint8]:
    """The patches at ``indices`` (default all) as one ``(k, size, size, 3)`` uint8 array."""
    idx = np.arange(len(coords)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.empty((len(idx), coords.size, coords.size, 3), np.uint8)
    for k, i in enumerate(idx):
        out[k] = read_patch(slide, coords, int(i))
    return out


# --- masks ----------------------------------------------------------------------------


def check_mask(mask: Raster | None, dims: tuple[int, int], what: str) -> TissueMask | None:
    """``mask`` as a :class:`~cervixwsi.tissue.TissueMask`, if it is a raster over ``dims``.

    ``what`` names it in errors (``"tissue mask"``); ``None`` stays ``None``.
    """
    if mask is None:
        return None
    if not isinstance(mask, Raster):
        raise ParameterError(f"the {what} must be a Raster (e.g. a TissueMask), got {mask!r}")
    if tuple(mask.slide_dimensions) != tuple(dims):
        raise GeometryError(
            f"the {what} is of a slide of {mask.slide_dimensions[0]}x{mask.slide_dimensions[1]} "
            f"level-0 pixels, but the slide is {dims[0]}x{dims[1]}: is it another slide's mask?"
        )
    return TissueMask.from_raster(mask)
