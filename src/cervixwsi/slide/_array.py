"""Slides over images already in memory: :class:`ArraySlide`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_real
from cervixwsi.errors import ParameterError
from cervixwsi.slide._base import BaseSlide, RGBImage
from cervixwsi.slide._tiff import level_properties, to_rgb

__all__ = ["ArraySlide"]


class ArraySlide(BaseSlide):
    """The slide interface over images already in memory.

    Parameters
    ----------
    image_or_levels : numpy.ndarray or sequence of numpy.ndarray
        One image (a one-level slide) or the levels of a pyramid, level 0
        first, each no larger than the one before.  Each is ``(H, W, 3)``
        ``uint8`` RGB; ``(H, W)`` grey images are repeated into three channels
        and an RGBA image's alpha channel is dropped.  Arrays are used as they
        are (not copied): do not modify them while the slide is in use.
    mpp : float or tuple of float, optional
        Level-0 micrometres per pixel, one value or ``(x, y)``; ``None`` (the
        default) when unknown.
    name : str, optional
        The slide's identifier.

    Raises
    ------
    ParameterError
        For images that are not uint8 grey/RGB(A), levels that grow, or an
        invalid mpp.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((96, 160, 3), 200, np.uint8)
    >>> slide = ArraySlide([image, image[::4, ::4]], mpp=0.5, name="demo")
    >>> slide.level_dimensions, slide.level_downsamples, slide.mpp
    (((160, 96), (40, 24)), (1.0, 4.0), (0.5, 0.5))
    >>> slide.read_region((152, 92), 1, (4, 2))[:, :, 0]  # level pixel (38, 23)
    array([[200, 200, 255, 255],
           [255, 255, 255, 255]], dtype=uint8)
    """

    _backend_name = "array"

    def __init__(
        self,
        image_or_levels: npt.ArrayLike | Sequence[npt.ArrayLike],
        mpp: float | tuple[float, float] | None = None,
        *,
        name: str = "array",
    ) -> None:
        if isinstance(image_or_levels, np.ndarray):
            raw: list[Any] = [image_or_levels]
        elif isinstance(image_or_levels, Sequence) and not isinstance(image_or_levels, str):
            raw = list(image_or_levels)
        else:
            raw = [np.asarray(image_or_levels)]
        if not raw:
            raise ParameterError("ArraySlide needs at least one image, got an empty sequence")
        levels: list[RGBImage] = []
        for k, item in enumerate(raw):
            array = np.asarray(item)
            try:
                rgb = to_rgb(array, f"ArraySlide level {k}")
            except ValueError as exc:
                raise ParameterError(str(exc)) from None
            h, w = rgb.shape[:2]
            if h == 0 or w == 0:
                raise ParameterError(f"ArraySlide level {k} is empty (shape {array.shape})")
            if levels:
                ph, pw = levels[-1].shape[:2]
                if h > ph or w > pw or (h, w) == (ph, pw):
                    raise ParameterError(
                        f"ArraySlide level {k} ({w}x{h}) must be smaller than level {k - 1} "
                        f"({pw}x{ph}): give levels finest first"
                    )
            levels.append(rgb)
        mpp_xy = self._parse_mpp(mpp)
        self._arrays = tuple(levels)
        dims = [(a.shape[1], a.shape[0]) for a in levels]
        properties = {"openslide.vendor": "array"}
        if mpp_xy is not None:
            properties["openslide.mpp-x"] = format(mpp_xy[0], ".17g")
            properties["openslide.mpp-y"] = format(mpp_xy[1], ".17g")
        super().__init__(
            name=name,
            level_dimensions=dims,
            mpp=mpp_xy,
            objective_power=None,
            properties=properties,
        )
        self._properties.update(
            level_properties(self._level_dimensions, self._level_downsamples, None)
        )

    @staticmethod
    def _parse_mpp(mpp: float | tuple[float, float] | None) -> tuple[float, float] | None:
        if mpp is None:
            return None
        values: Any = (mpp, mpp) if np.ndim(mpp) == 0 else mpp
        try:
            mx, my = values
        except (TypeError, ValueError):
            raise ParameterError(
                f"ArraySlide.mpp must be a number or an (x, y) pair, got {mpp!r}"
            ) from None
        return (
            check_real(mx, "ArraySlide.mpp", min=0, min_open=True),
            check_real(my, "ArraySlide.mpp", min=0, min_open=True),
        )

    def _tile_size(self, level: int) -> tuple[int, int]:
        return self._level_dimensions[level]

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        return self._arrays[level]
