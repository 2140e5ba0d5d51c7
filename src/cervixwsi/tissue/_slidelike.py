"""What tissue detection and tiling need of a slide: :class:`SlideLike`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["SlideLike"]


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
