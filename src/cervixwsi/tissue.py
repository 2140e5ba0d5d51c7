"""Tissue detection: the study's HSV + Otsu + morphology ROI, made robust.

:class:`TissueMasker` reads **one** low-resolution level of a slide, converts it
to HSV, thresholds it with Otsu's method (on saturation by default; each
channel's threshold clipped to a range measured on real slides, so that the
noise of an empty slide's glass is never split), removes pen marks and
near-white glass (grey and bright pixels are never tissue), smooths the
result with an opening and a closing whose structuring elements are given in
micrometres, drops small tissue pieces and fills small holes (areas in µm²).  Because every size is
physical, the mask does not change (beyond resampling) when the slide's
resolution or the level that is read changes.

The result is a :class:`TissueMask`: a boolean :class:`~cervixwsi.geometry.Raster`
that maps to any level or downsample (the study's "multi-layer mapping").  Its
:meth:`TissueMask.fraction` gives the exact tissue fraction of any level-0 box,
or of many boxes at once, in constant time per box from a cached integral image.

Colour conventions are OpenCV's 8-bit HSV: hue in ``[0, 180)`` (degrees / 2),
saturation and value in ``[0, 255]``.  Thresholds are given in those units.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.slide import ArraySlide
>>> from cervixwsi.tissue import TissueMasker
>>> from cervixwsi.geometry import Box
>>> image = np.full((400, 600, 3), 245, np.uint8)   # glass
>>> image[100:300, 160:440] = (200, 120, 180)        # an H&E-pink tissue piece
>>> slide = ArraySlide(image, mpp=2.0)
>>> mask = TissueMasker(mpp=8.0).mask(slide)
>>> mask.shape, round(mask.area_um2)  # 560 x 400 µm, less corners rounded by the opening
((100, 150), 223744)
>>> float(mask.fraction(Box(200, 120, 128, 128)))  # a level-0 box inside the piece
1.0
>>> float(mask.fraction(Box(376, 236, 128, 128)))  # one overlapping its corner by 1/4
0.25
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, overload, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.errors import GeometryError, ParameterError, RegionError, ResultFileError
from cervixwsi.geometry import Box, Raster, Window, level_for_downsample

__all__ = ["SlideLike", "TissueMask", "TissueMasker", "pen_mask"]

logger = logging.getLogger(__name__)

Channel = Literal["saturation", "value"]
_MASK_FORMAT = "cervixwsi.TissueMask"
_MASK_VERSION = 1
# The largest level read whole (about 800 MB of RGB; 8 µm/px of a 13 x 13 cm slide).
_MAX_LEVEL_PIXELS = 2**28
_CHANNELS: dict[str, int] = {"saturation": 1, "value": 2}


@runtime_checkable
class SlideLike(Protocol):
    """The part of :class:`cervixwsi.slide.BaseSlide` that tissue detection and tiling use.

    :class:`cervixwsi.slide.Slide` and :class:`cervixwsi.slide.ArraySlide` have it;
    so can any object of a user's own (a reader of another format).
    """

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level."""

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel of each level."""

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 micrometres per pixel ``(x, y)``, or ``None`` when unknown."""

    @property
    def name(self) -> str:
        """The slide's id."""

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> npt.NDArray[np.uint8]:
        """RGB ``(h, w, 3)`` uint8 pixels of a region (level-0 location, level size)."""

    def read_level(self, level: int) -> npt.NDArray[np.uint8]:
        """A whole level as RGB ``(h, w, 3)`` uint8."""


# --- pen marks ------------------------------------------------------------------------

# Ink colours in OpenCV HSV (hue 0..179, saturation/value 0..255), measured on real
# pen-marked H&E crops.  Haematoxylin and eosin stain hues lie in [125, 175); inks are
# green/teal (35..90), blue (90..125), strongly saturated red (< 10 or >= 170 with
# saturation >= 170), or black (value < 50, darker than any stained tissue).
_GREEN_HUE = (35, 90)
_BLUE_HUE = (90, 125)
_RED_HUE_LOW, _RED_HUE_HIGH, _RED_MIN_SATURATION = 10, 170, 170
_INK_MIN_SATURATION = 30
_PURE_RED_HUE = (5, 174)
_BLACK_MAX_VALUE = 50


def pen_mask(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels that look like red, green, blue or black marker ink.

    Parameters
    ----------
    hsv : numpy.ndarray
        An ``(h, w, 3)`` uint8 image in OpenCV's HSV (``cv2.COLOR_RGB2HSV``).

    Returns
    -------
    numpy.ndarray
        Boolean ``(h, w)``: true where the colour is ink.  Green/teal and blue
        hues (never produced by H&E staining), red of saturation at least 170
        (eosin is paler), and anything of value below 50 (darker than nuclei).

    Examples
    --------
    >>> import cv2, numpy as np
    >>> rgb = np.array([[[30, 140, 120], [200, 120, 180], [20, 20, 25]]], np.uint8)
    >>> pen_mask(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))
    array([[ True, False,  True]])
    """
    hsv = np.ascontiguousarray(hsv, dtype=np.uint8)
    ranges = (  # (low, high) HSV bounds, inclusive, of each kind of ink
        ((_GREEN_HUE[0], _INK_MIN_SATURATION, 0), (_GREEN_HUE[1] - 1, 255, 255)),
        ((_BLUE_HUE[0], _INK_MIN_SATURATION, 0), (_BLUE_HUE[1] - 1, 255, 255)),
        ((0, _RED_MIN_SATURATION, 0), (_RED_HUE_LOW - 1, 255, 255)),
        ((_RED_HUE_HIGH, _RED_MIN_SATURATION, 0), (179, 255, 255)),
        ((0, _INK_MIN_SATURATION, 0), (_PURE_RED_HUE[0] - 1, 255, 255)),
        ((_PURE_RED_HUE[1], _INK_MIN_SATURATION, 0), (179, 255, 255)),
        ((0, 0, 0), (179, 255, _BLACK_MAX_VALUE - 1)),
    )
    ink = np.zeros(hsv.shape[:2], np.uint8)
    for low, high in ranges:  # cv2.inRange: one fast pass per range
        cv2.bitwise_or(ink, cv2.inRange(hsv, low, high), dst=ink)
    out: npt.NDArray[np.bool_] = ink > 0
    return out


# --- the mask -------------------------------------------------------------------------


class TissueMask(Raster):
    """A boolean tissue mask over a whole slide: a :class:`~cervixwsi.geometry.Raster`.

    Raster pixel ``(row, col)`` covers the level-0 square
    ``[col * d, (col + 1) * d) x [row * d, (row + 1) * d)`` (``d`` the
    :attr:`downsample`), clipped to the slide.  Everything the study calls
    "multi-layer mapping" is a method: the tissue fraction of level-0 boxes,
    the mask at another downsample, bounding boxes of tissue pieces.

    Parameters
    ----------
    array : array_like
        2-D boolean array (anything else is compared with 0).
    downsample, slide_dimensions, mpp
        As for :class:`~cervixwsi.geometry.Raster`.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Box
    >>> m = TissueMask(np.array([[1, 0], [1, 1]], bool), 100, (200, 150), mpp=0.5)
    >>> float(m.fraction(Box(50, 0, 100, 100)))   # half of it over tissue
    0.5
    >>> m.fraction([0, 100], [0, 100], [100, 100], [100, 50])  # many boxes at once
    array([1., 1.])
    >>> m.area_um2   # 100*100 + 100*50 + 100*50 level-0 pixels of 0.25 µm²
    5000.0
    """

    __slots__ = ("_integral",)

    def __init__(
        self,
        array: npt.ArrayLike,
        downsample: float,
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.dtype != np.bool_:
            arr = arr != 0
        super().__init__(arr, downsample, slide_dimensions, mpp=mpp)
        self._integral: npt.NDArray[np.int64] | None = None

    @classmethod
    def from_raster(cls, raster: Raster) -> TissueMask:
        """A tissue mask from any boolean (or 0/1) raster, e.g. an annotation mask.

        Examples
        --------
        >>> import numpy as np
        >>> TissueMask.from_raster(Raster(np.eye(2), 8, (16, 16))).array
        array([[ True, False],
               [False,  True]])
        """
        if isinstance(raster, TissueMask):
            return raster
        return cls(raster.array, raster.downsample, raster.slide_dimensions, mpp=raster.mpp)

    @property
    def array(self) -> npt.NDArray[np.bool_]:
        """The boolean mask, indexed ``[row, col]`` (row-major)."""
        out: npt.NDArray[np.bool_] = self._array
        return out

    def integral(self) -> npt.NDArray[np.int64]:
        """The summed-area table, ``(rows + 1, cols + 1)`` int64.

        Entry ``[r, c]`` is ``array[:r, :c].sum()``.  Computed on first use and
        cached (read-only).
        """
        table = self._integral
        if table is None:  # two threads may both compute it; either result is the same
            table = np.zeros((self.shape[0] + 1, self.shape[1] + 1), np.int64)
            np.cumsum(self._array, axis=0, dtype=np.int64, out=table[1:, 1:])
            np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
            table.flags.writeable = False
            self._integral = table
        return table

    def _area(
        self, u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Tissue area (raster pixels) in ``[0, u) x [0, v)``: bilinear in the integral image."""
        table = self.integral()
        rows, cols = self.shape
        c = np.clip(np.floor(u), 0, cols - 1).astype(np.intp)
        r = np.clip(np.floor(v), 0, rows - 1).astype(np.intp)
        a, b = u - c, v - r
        t00, t01 = table[r, c], table[r, c + 1]
        t10, t11 = table[r + 1, c], table[r + 1, c + 1]
        out: npt.NDArray[np.float64] = (
            t00 + a * (t01 - t00) + b * (t10 - t00) + a * b * (t11 - t10 - t01 + t00)
        ).astype(np.float64)
        return out

    @overload
    def fraction(self, box: Box, /) -> float: ...

    @overload
    def fraction(
        self, x: npt.ArrayLike, y: npt.ArrayLike, width: npt.ArrayLike, height: npt.ArrayLike, /
    ) -> npt.NDArray[np.float64]: ...

    def fraction(
        self,
        x: Box | npt.ArrayLike,
        y: npt.ArrayLike | None = None,
        width: npt.ArrayLike | None = None,
        height: npt.ArrayLike | None = None,
        /,
    ) -> float | npt.NDArray[np.float64]:
        """The fraction of level-0 box(es) covered by tissue.

        Exact: raster pixels that a box covers partly count with the area they
        share with it (the integral image is interpolated bilinearly, which is
        exact for a piecewise-constant mask).  The part of a box outside the
        slide counts as no tissue, so a box half off the slide over tissue has
        fraction 0.5.  An empty box has fraction 0.

        Parameters
        ----------
        x : Box or array_like
            One :class:`~cervixwsi.geometry.Box`, or the level-0 left edges of
            many boxes (then ``y``, ``width``, ``height`` are given too and all
            four broadcast together).
        y, width, height : array_like, optional
            Top edges and sizes (level-0 pixels) of the boxes.

        Returns
        -------
        float or numpy.ndarray
            A float for a Box, else a float64 array of the broadcast shape.
        """
        if isinstance(x, Box):
            if y is not None:
                raise ParameterError("fraction takes one Box or four arrays (x, y, width, height)")
            return float(self.fraction(x.x, x.y, x.width, x.height)[()])
        if y is None or width is None or height is None:
            raise ParameterError("fraction takes one Box or four arrays (x, y, width, height)")
        xs, ys, ws, hs = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (x, y, width, height))
        )
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise GeometryError("fraction: box coordinates must be finite")
        if (
            (ws < 0).any()
            or (hs < 0).any()
            or not (np.isfinite(ws).all() and np.isfinite(hs).all())
        ):
            raise GeometryError("fraction: box sizes must be finite and non-negative")
        width0, height0 = self.slide_dimensions
        d = self.downsample
        u0 = np.clip(xs, 0, width0) / d
        u1 = np.clip(xs + ws, 0, width0) / d
        v0 = np.clip(ys, 0, height0) / d
        v1 = np.clip(ys + hs, 0, height0) / d
        inside = self._area(u1, v1) - self._area(u0, v1) - self._area(u1, v0) + self._area(u0, v0)
        area = ws * hs
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(area > 0, inside * (d * d) / np.where(area > 0, area, 1.0), 0.0)
        out: npt.NDArray[np.float64] = np.clip(frac, 0.0, 1.0)
        return out

    def at_downsample(
        self, downsample: float, *, method: Literal["area", "nearest"] = "area"
    ) -> TissueMask:
        """The mask at another level-0 downsample, covering the same slide.

        Parameters
        ----------
        downsample : float
            Level-0 pixels per pixel of the new mask (e.g. a level's downsample
            or a patch size, for one pixel per patch).
        method : {"area", "nearest"}
            ``"area"`` (default): a new pixel is tissue when at least half of
            its level-0 area is tissue (exact area weights).  ``"nearest"``:
            it takes the value of the old pixel under its centre (faster,
            aliases thin structures when shrinking).

        Examples
        --------
        >>> import numpy as np
        >>> m = TissueMask(np.array([[1, 1, 0, 0]], bool), 4, (16, 4))
        >>> m.at_downsample(8).array
        array([[ True, False]])
        >>> m.at_downsample(2).shape
        (2, 8)
        """
        if method == "area":
            frac = self.resample(downsample, method="area")
            return TissueMask(
                frac.array >= 0.5, frac.downsample, self.slide_dimensions, mpp=self.mpp
            )
        if method == "nearest":
            return TissueMask.from_raster(self.resample(downsample, method="nearest"))
        raise ParameterError(f"method must be 'area' or 'nearest', got {method!r}")

    def at_level(self, slide: SlideLike, level: int) -> TissueMask:
        """The mask at the resolution of one of ``slide``'s levels.

        Examples
        --------
        >>> import numpy as np
        >>> m = TissueMask(np.ones((2, 2), bool), 8, (16, 16))
        >>> from cervixwsi.slide import ArraySlide
        >>> m.at_level(ArraySlide(np.zeros((16, 16, 3), np.uint8)), 0).shape
        (16, 16)
        """
        _check_level(slide, level)
        return self.at_downsample(float(slide.level_downsamples[level]))

    def boxes(self) -> list[Box]:
        """Level-0 bounding boxes of the tissue pieces (8-connected), largest first.

        Examples
        --------
        >>> import numpy as np
        >>> a = np.zeros((4, 6), bool); a[1:3, 1:2] = True; a[0:4, 4:6] = True
        >>> TissueMask(a, 10, (60, 40)).boxes()
        [Box(x=40.0, y=0.0, width=20.0, height=40.0), Box(x=10.0, y=10.0, width=10.0, height=20.0)]
        """
        n, _, stats, _ = cv2.connectedComponentsWithStats(self._array.view(np.uint8), 8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1
        out = []
        for i in order[: max(n - 1, 0)]:
            c0, r0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
            c1 = c0 + int(stats[i, cv2.CC_STAT_WIDTH])
            r1 = r0 + int(stats[i, cv2.CC_STAT_HEIGHT])
            out.append(self.window_to_box(Window(r0, r1, c0, c1)))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask to a ``.npz`` file (the array, its geometry and a format tag).

        The file appears only when complete (written under a temporary name and
        renamed), and loads without executing code (no pickles).

        Examples
        --------
        >>> import numpy as np, pathlib, tempfile
        >>> m = TissueMask(np.eye(3, dtype=bool), 32, (96, 90), mpp=0.25)
        >>> path = m.save(pathlib.Path(tempfile.mkdtemp()) / "slide-1.tissue.npz")
        >>> back = TissueMask.load(path)
        >>> back.same_grid(m), back.mpp, bool((back.array == m.array).all())
        (True, 0.25, True)
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        with tmp.open("wb") as f:
            np.savez_compressed(
                f,
                format=np.array(_MASK_FORMAT),
                version=np.array(_MASK_VERSION),
                array=self.array,
                downsample=np.array(self.downsample),
                slide_dimensions=np.array(self.slide_dimensions, np.int64),
                mpp=np.array(np.nan if self.mpp is None else self.mpp),
            )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TissueMask:
        """Read a mask written by :meth:`save`.

        Raises
        ------
        ResultFileError
            If the file is missing, empty, truncated, not a saved tissue mask,
            or of a newer format.
        """
        path = Path(path)
        if not path.is_file():
            raise ResultFileError(f"no tissue mask file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile, zlib and numpy raise many kinds
            raise ResultFileError(f"{path} is not a readable tissue mask file: {exc}") from exc
        if str(fields.get("format", "")) != _MASK_FORMAT:
            raise ResultFileError(f"{path} is not a cervixwsi tissue mask")
        if int(fields.get("version", -1)) != _MASK_VERSION:
            raise ResultFileError(
                f"{path} has tissue mask format {fields.get('version')}; "
                f"this cervixwsi reads format {_MASK_VERSION}"
            )
        try:
            mpp = float(fields["mpp"])
            width, height = (int(v) for v in fields["slide_dimensions"])
            return cls(
                fields["array"].astype(bool),
                float(fields["downsample"]),
                (width, height),
                mpp=None if math.isnan(mpp) else mpp,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ResultFileError(f"{path} is a damaged tissue mask file: {exc}") from exc

    @property
    def area_px(self) -> float:
        """Tissue area in level-0 pixels (edge pixels clipped to, or reaching, the slide)."""
        ys, ye, xs, xe = self.pixel_edges()
        return float((ye - ys) @ self._array.astype(np.float64) @ (xe - xs))

    @property
    def area_um2(self) -> float | None:
        """Tissue area in µm², or ``None`` when the slide's mpp is unknown."""
        return None if self.mpp is None else self.area_px * self.mpp**2

    @property
    def tissue_fraction(self) -> float:
        """The fraction of the whole slide that is tissue."""
        width0, height0 = self.slide_dimensions
        return float(self.fraction(0, 0, width0, height0))


# --- the masker -----------------------------------------------------------------------


def _check_level(slide: SlideLike, level: int) -> None:
    if not (0 <= level < slide.level_count):
        raise RegionError(
            f"slide {slide.name!r} has levels 0..{slide.level_count - 1}, got level {level}"
        )


def _ellipse(diameter_px: float) -> npt.NDArray[np.uint8] | None:
    """A disk of the given diameter, symmetric under flips and 90° rotations (or None)."""
    radius = round(diameter_px / 2)
    if radius < 1:
        return None
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk: npt.NDArray[np.uint8] = (x * x + y * y <= radius * radius).astype(np.uint8)
    return disk


def _remove_small(mask: npt.NDArray[np.bool_], min_px: float) -> npt.NDArray[np.bool_]:
    """Drop 8-connected pieces of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), 8, cv2.CV_32S)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    out: npt.NDArray[np.bool_] = keep[labels]
    return out


def _fill_holes(mask: npt.NDArray[np.bool_], max_px: float) -> npt.NDArray[np.bool_]:
    """Fill 4-connected background pieces of at most ``max_px`` pixels not touching the border."""
    if max_px < 1 or mask.all():
        return mask
    background = (~mask).view(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(background, 4, cv2.CV_32S)
    rows, cols = mask.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    inner = (left > 0) & (top > 0) & (right < cols) & (bottom < rows)
    fill = inner & (stats[:, cv2.CC_STAT_AREA] <= max_px)
    fill[0] = False  # label 0 is the tissue itself
    out: npt.NDArray[np.bool_] = mask | fill[labels]
    return out


@dataclass(frozen=True)
class TissueMasker:
    """The study's tissue detection (HSV + Otsu + morphology), in physical units.

    Parameters
    ----------
    mpp : float
        Working resolution in µm/px, default 8.0 (about a 32× downsample of a
        40× scan).  The level read is the coarsest whose resolution is at
        least this fine (within 1 %); when it is finer, it is averaged down
        (``cv2.INTER_AREA``) to ``mpp``, so the mask is the same whichever
        pyramid the slide has.
    level : int, optional
        Read this level and work at its own resolution instead.
    channels : sequence of {"saturation", "value"}
        HSV channels thresholded: tissue is *more saturated* and *darker* than
        glass.  Default ``("saturation",)`` (the study's value).
    combine : {"and", "or"}
        How several channels' masks combine.
    threshold : float or sequence of float, optional
        Fixed threshold(s) (0..255, one per channel or one for all) instead
        of Otsu's: tissue has a saturation above it, or a value below it.
    otsu_bounds : tuple of float
        Otsu's *saturation* threshold is clipped to this range (0..255),
        default ``(20, 30)``.  The lower bound makes near-white glass never
        tissue (on an empty or almost-white slide Otsu would split the noise
        of the glass); the upper bound keeps Otsu from splitting the tissue
        itself when its saturation has two modes (pale stroma, dark tumor),
        when there is no glass to separate it from (a crop inside tissue),
        or when pen ink is the most saturated class.  At 8 µm/px glass has
        a saturation under 15 and stained tissue over 30.
    value_otsu_bounds : tuple of float
        Otsu's *value* threshold (a pixel is dark enough to be tissue when its
        value is below it) is clipped to this range, default ``(200, 230)``.
        The upper bound keeps Otsu from splitting the noise of the glass on an
        empty or almost-white slide (glass has a value of 230-250); the lower
        bound keeps it from splitting the tissue itself (nuclei from stroma in
        a crop without glass, or dark ink from tissue).  Measured on real
        crops: pale tissue reaches a value of about 228 (a thumbnail's pale
        stroma), empty glass starts at about 233.
    exclude_glass : bool
        Pixels that are both nearly grey (saturation at most
        ``glass_saturation``) and bright (value at least ``glass_value``) are
        glass: never tissue, whatever the channels, thresholds and bounds.
        Default True.  With the default saturation channel it changes nothing
        (its threshold is at least 20); it is what keeps the value channel
        from taking dim or tinted glass (value 200-230) for pale tissue, and
        a low fixed ``threshold`` from taking glass for tissue.
    glass_saturation, glass_value : float
        The glass rule's bounds (0..255), default 15 and 200: real glass has a
        saturation under 10 (under 15 with a scanner's colour cast) and a
        value over 230; tissue that grey and that bright is the inside of
        fat cells and holes, which the closing and hole filling restore.
        Lowering ``otsu_bounds`` below ``glass_saturation`` has no effect on
        bright pixels unless ``exclude_glass=False``.
    exclude_pen : bool
        Remove red, green, blue and black marker ink (see :func:`pen_mask`)
        and a ``pen_margin_um`` band around it.  Default True (not part of
        the study, which had no pen-marked slides; it does not change the
        mask of a slide without ink).
    pen_margin_um : float
        Ink pieces narrower than this are ignored (stain-coloured specks in
        tissue), and a band this wide around ink is removed with it (the
        paler rim of a stroke).  Default 25 µm.
    opening_um, closing_um : float
        Diameters of the elliptical structuring elements of the opening
        (removes specks) and the closing (bridges gaps in loose tissue),
        default 16 µm and 64 µm; 0 skips the step.
    min_tissue_area_um2 : float
        Tissue pieces smaller than this are dropped; default 2 500 µm²
        (a 50 µm square).
    max_hole_area_um2 : float
        Holes (glass enclosed by tissue) up to this area are filled; default
        2 500 µm².
    assumed_mpp : float
        Level-0 µm/px assumed for slides that do not record their resolution
        (a warning says so).  Default 0.25 (a 40× scan).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> image = np.full((300, 300, 3), 240, np.uint8)
    >>> image[50:250, 60:200] = (190, 110, 170)
    >>> mask = TissueMasker(level=0).mask(ArraySlide(image, mpp=4.0))
    >>> int(mask.array.sum()), mask.downsample
    (27988, 1.0)
    """

    mpp: float = 8.0
    level: int | None = None
    channels: tuple[Channel, ...] = ("saturation",)
    combine: Literal["and", "or"] = "and"
    threshold: float | tuple[float, ...] | None = None
    otsu_bounds: tuple[float, float] = (20.0, 30.0)
    value_otsu_bounds: tuple[float, float] = (200.0, 230.0)
    exclude_glass: bool = True
    glass_saturation: float = 15.0
    glass_value: float = 200.0
    exclude_pen: bool = True
    pen_margin_um: float = 25.0
    opening_um: float = 16.0
    closing_um: float = 64.0
    min_tissue_area_um2: float = 2_500.0
    max_hole_area_um2: float = 2_500.0
    assumed_mpp: float = 0.25

    def _validate(self) -> None:
        for name in (
            "mpp",
            "assumed_mpp",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ParameterError(
                    f"TissueMasker.{name} must be a positive number, got {value!r}"
                )
        for name in (
            "pen_margin_um",
            "opening_um",
            "closing_um",
            "min_tissue_area_um2",
            "max_hole_area_um2",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ParameterError(
                    f"TissueMasker.{name} must be a non-negative number, got {value!r}"
                )
        for name in ("otsu_bounds", "value_otsu_bounds"):
            bounds = getattr(self, name)
            try:
                lo, hi = (float(v) for v in bounds)
            except (TypeError, ValueError):
                lo, hi = math.nan, math.nan
            if not (0 <= lo <= hi <= 255):
                raise ParameterError(
                    f"TissueMasker.{name} must be (low, high) with 0 <= low <= high <= 255, "
                    f"got {bounds!r}"
                )
        for name in ("glass_saturation", "glass_value"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 255):
                raise ParameterError(f"TissueMasker.{name} must be in [0, 255], got {value!r}")
        channels = tuple(self.channels)
        if not channels or any(c not in _CHANNELS for c in channels):
            raise ParameterError(
                f"TissueMasker.channels must be a non-empty sequence of {sorted(_CHANNELS)}, "
                f"got {self.channels!r}"
            )
        if self.combine not in ("and", "or"):
            raise ParameterError(
                f"TissueMasker.combine must be 'and' or 'or', got {self.combine!r}"
            )
        if self.threshold is not None:
            values = self._thresholds()
            if len(values) != len(channels) or any(
                not (math.isfinite(t) and 0 <= t <= 255) for t in values
            ):
                raise ParameterError(
                    "TissueMasker.threshold must be one number in [0, 255] or one per channel "
                    f"({len(channels)}), got {self.threshold!r}"
                )

    def _thresholds(self) -> tuple[float, ...]:
        t = self.threshold
        if t is None:
            return ()
        if isinstance(t, Sequence):
            return tuple(float(v) for v in t)
        return (float(t),) * len(self.channels)

    def choose_level(self, slide: SlideLike) -> int:
        """The level :meth:`mask` reads: ``level`` if given, else by ``mpp``.

        The coarsest level whose µm/px is at most ``mpp`` (within 1 %); level
        0 when even that is coarser.  Without a recorded slide mpp,
        ``assumed_mpp`` stands in for it.
        """
        self._validate()
        if self.level is not None:
            _check_level(slide, self.level)
            return self.level
        mpp0 = _slide_mpp(slide, self.assumed_mpp)
        return level_for_downsample(slide.level_downsamples, self.mpp / mpp0)

    def mask(self, slide: SlideLike) -> TissueMask:
        """Detect tissue on ``slide`` (one whole low-resolution level is read).

        Parameters
        ----------
        slide : SlideLike
            A :class:`cervixwsi.slide.Slide`, an :class:`cervixwsi.slide.ArraySlide`
            or anything with the :class:`SlideLike` surface.

        Returns
        -------
        TissueMask
            At the downsample of the level read.

        Raises
        ------
        ParameterError
            If a parameter of the masker is invalid (named in the message).
        RegionError
            If the slide lacks ``level``, or the level to read is too large to
            read whole (over 2**28 pixels: a slide without a pyramid).

        Warns
        -----
        UserWarning
            When the slide has no mpp (``assumed_mpp`` is used for µm sizes).
        """
        self._validate()
        level = self.choose_level(slide)
        if slide.mpp is None:
            warnings.warn(
                f"slide {slide.name!r} records no mpp: assuming {self.assumed_mpp} µm/px at "
                "level 0 to size the tissue detector's µm parameters (set "
                "TissueMasker(assumed_mpp=...) or give the slide an mpp)",
                UserWarning,
                stacklevel=2,
            )
        width_k, height_k = slide.level_dimensions[level]
        if width_k * height_k > _MAX_LEVEL_PIXELS:
            gib = 3 * width_k * height_k / 2**30
            raise RegionError(
                f"tissue detection reads one whole level, and level {level} of slide "
                f"{slide.name!r} is {width_k}x{height_k} pixels ({gib:.1f} GiB of RGB): give "
                "the slide a pyramid (cervixwsi.slide.write_pyramid) or choose a coarser level"
            )
        rgb = np.asarray(slide.read_level(level))
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise RegionError(
                f"slide {slide.name!r} level {level} gave pixels of shape {rgb.shape} and dtype "
                f"{rgb.dtype}; expected (h, w, 3) uint8 RGB"
            )
        downsample = float(slide.level_downsamples[level])
        mpp0 = _slide_mpp(slide, self.assumed_mpp)
        if self.level is None and mpp0 * downsample < self.mpp / 1.01:
            # The level is finer than the target: average it down to the target, so the
            # mask is the same whichever level (or slide resolution) it came from.
            downsample = self.mpp / mpp0
            width0, height0 = slide.dimensions
            size = (math.ceil(width0 / downsample), math.ceil(height0 / downsample))
            rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
        pixel_um = mpp0 * downsample
        array = self.detect(rgb, pixel_um)
        mpp = None if slide.mpp is None else float(np.mean(slide.mpp))
        mask = TissueMask(array, downsample, slide.dimensions, mpp=mpp)
        logger.debug(
            "tissue of %s: level %d (%.3g µm/px), %.1f %% tissue",
            slide.name,
            level,
            pixel_um,
            100 * array.mean(),
        )
        return mask

    def detect(self, rgb: npt.NDArray[np.uint8], pixel_um: float) -> npt.NDArray[np.bool_]:
        """The mask of an RGB image whose pixels are ``pixel_um`` µm wide (the algorithm).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((20, 20, 3), 250, np.uint8); img[5:15, 5:15] = (180, 90, 160)
        >>> TissueMasker(min_tissue_area_um2=0).detect(img, 8.0).sum()  # 10 x 10 less 4 corners
        np.int64(96)
        """
        self._validate()
        if rgb.size == 0:
            return np.zeros(rgb.shape[:2], bool)
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
        fixed = self._thresholds()
        masks = []
        for i, name in enumerate(self.channels):
            channel = np.ascontiguousarray(hsv[..., _CHANNELS[name]])
            if fixed:
                t = fixed[i]
            else:
                t, _ = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
                if name == "saturation":  # Otsu's upper class (> t) is the tissue
                    lo, hi = self.otsu_bounds
                else:  # its lower class (<= t, so < t + 1) is
                    t, (lo, hi) = t + 1, self.value_otsu_bounds
                t = min(max(t, lo), hi)
            logger.debug("tissue threshold on %s: %g", name, t)
            masks.append(channel > t if name == "saturation" else channel < t)
        tissue = masks[0]
        for m in masks[1:]:
            tissue = (tissue & m) if self.combine == "and" else (tissue | m)
        if self.exclude_glass:  # grey and bright: glass, whatever the thresholds said
            low = (0, 0, math.ceil(self.glass_value))
            high = (179, math.floor(self.glass_saturation), 255)
            tissue &= cv2.inRange(hsv, low, high) == 0
        if self.exclude_pen:
            pen = pen_mask(hsv)
            if pen.any():
                kernel = _ellipse(self.pen_margin_um / pixel_um)
                if kernel is not None:
                    pen = cv2.morphologyEx(pen.view(np.uint8), cv2.MORPH_OPEN, kernel).view(bool)
                kernel = _ellipse(2 * self.pen_margin_um / pixel_um)
                if kernel is not None:
                    pen = cv2.dilate(pen.view(np.uint8), kernel).view(np.bool_)
                tissue &= ~pen
        tissue = np.ascontiguousarray(tissue)
        kernel = _ellipse(self.closing_um / pixel_um)
        if kernel is not None:
            # Pad with glass so that the closing does not glue tissue to the image border.
            r = kernel.shape[0] // 2
            padded = cv2.copyMakeBorder(tissue.view(np.uint8), r, r, r, r, cv2.BORDER_CONSTANT, 0)
            closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
            tissue = np.ascontiguousarray(closed[r:-r, r:-r]).view(bool)
        kernel = _ellipse(self.opening_um / pixel_um)
        if kernel is not None:
            tissue = cv2.morphologyEx(tissue.view(np.uint8), cv2.MORPH_OPEN, kernel).view(bool)
        tissue = _remove_small(tissue, self.min_tissue_area_um2 / pixel_um**2)
        tissue = _fill_holes(tissue, self.max_hole_area_um2 / pixel_um**2)
        return tissue


def _slide_mpp(slide: SlideLike, assumed: float) -> float:
    mpp = slide.mpp
    return assumed if mpp is None else float(np.mean(mpp))
