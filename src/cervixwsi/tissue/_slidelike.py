"""What tissue detection and tiling need of a slide: :class:`SlideLike`."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi.errors import RegionError

__all__ = ["SlideLike", "read_low_level"]

# The largest level read whole (about 800 MB of RGB; 8 µm/px of a 13 x 13 cm slide).
_MAX_LEVEL_PIXELS = 2**28


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


def read_low_level(
    slide: SlideLike, level: int, mpp0: float, target_mpp: float | None, what: str
) -> tuple[npt.NDArray[np.uint8], float]:
    """A whole low level as RGB, averaged down to ``target_mpp`` when it is finer.

    The one place where tissue and artifact detection read a level whole: it refuses a
    level too large to read (a slide without a pyramid), checks the pixels, and, when
    ``target_mpp`` is given and the level is finer than it, averages the level down to
    it, so a mask is the same whichever level (or slide resolution) it came from.

    Returns the RGB ``(h, w, 3)`` uint8 image and its level-0 downsample.

    Raises
    ------
    RegionError
        If the level is over 2**28 pixels or its pixels are not ``(h, w, 3)`` uint8.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> slide = ArraySlide(np.full((64, 64, 3), 200, np.uint8), mpp=(1.0, 1.0))
    >>> rgb, downsample = read_low_level(slide, 0, 1.0, 4.0, "tissue detection")
    >>> rgb.shape, downsample
    ((16, 16, 3), 4.0)
    """
    width_k, height_k = slide.level_dimensions[level]
    if width_k * height_k > _MAX_LEVEL_PIXELS:
        gib = 3 * width_k * height_k / 2**30
        raise RegionError(
            f"{what} reads one whole level, and level {level} of slide "
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
    if target_mpp is not None and mpp0 * downsample < target_mpp / 1.01:
        downsample = target_mpp / mpp0
        width0, height0 = slide.dimensions
        size = (math.ceil(width0 / downsample), math.ceil(height0 / downsample))
        rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
    return rgb, downsample
