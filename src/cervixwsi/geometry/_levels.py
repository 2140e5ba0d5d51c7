"""Choosing a pyramid level: the one rule every stage uses.

A stage that reads a slide is asked for either a pyramid ``level`` or a resolution in
micrometres per pixel (``mpp``).  :func:`resolve_level` turns that request into the level
to read, the same way for :class:`~cervixwsi.slide.Slide`, ``TissueMasker``,
``PatchGrid``, ``PatchSampler`` and ``HeatmapGenerator``:

* ``level``: that level, which must exist;
* ``mpp``: the coarsest level whose µm/px is at most ``mpp`` on **both** axes (1 %
  tolerance for scanners' rounding), so reading it and reducing it never upsamples;
  level 0 when even level 0 is coarser.  The slide's µm/px is therefore its coarser axis
  (:func:`slide_mpp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cervixwsi._validate import check_int, check_real
from cervixwsi.errors import LevelError, ParameterError

__all__ = ["Resolution", "level_for_downsample", "resolve_level", "resolve_resolution", "slide_mpp"]


class _Pyramid(Protocol):
    """What level choice needs of a slide (any ``Slide``, ``ArraySlide`` or look-alike)."""

    @property
    def name(self) -> str: ...

    @property
    def level_count(self) -> int: ...

    @property
    def level_downsamples(self) -> Sequence[float]: ...

    @property
    def mpp(self) -> tuple[float, float] | None: ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved request: the ``level`` to read and the wanted ``downsample``.

    ``downsample`` is the level-0 size of one output pixel: the level's own downsample
    when a level was asked for, ``mpp / slide_mpp`` when a resolution was (then it can
    be larger than the level's, and the reader reduces what it reads).
    """

    level: int
    downsample: float


def level_for_downsample(
    level_downsamples: Sequence[float], downsample: float, *, tolerance: float = 0.01
) -> int:
    """The coarsest pyramid level at least as fine as ``downsample``.

    That is the level with the largest downsample that is at most ``downsample``
    (within ``tolerance``, relative, for scanners' rounding), so that reading it
    and reducing it never upsamples; level 0 when even level 0 is coarser.  The
    rule behind :func:`resolve_level`.

    Examples
    --------
    >>> level_for_downsample([1.0, 4.0003, 16.002], 4.0)
    1
    >>> level_for_downsample([1.0, 4.0, 16.0], 0.5), level_for_downsample([1.0, 4.0], 100)
    (0, 1)
    """
    limit = float(downsample) * (1.0 + tolerance)
    best = 0
    for k, d in enumerate(level_downsamples):
        if d <= limit and d >= level_downsamples[best]:
            best = k
    return best


def slide_mpp(slide: _Pyramid, assumed_mpp: float | None = None) -> float | None:
    """The slide's level-0 µm/px as one number: its coarser axis.

    ``assumed_mpp`` stands in when the slide records none; ``None`` when neither is known.
    The coarser axis, so that a level chosen from it is fine enough on both axes.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> slide_mpp(ArraySlide([np.zeros((4, 4, 3), np.uint8)], mpp=(0.25, 0.26)))
    0.26
    >>> slide_mpp(ArraySlide([np.zeros((4, 4, 3), np.uint8)]), assumed_mpp=0.5)
    0.5
    """
    if slide.mpp is not None:
        return float(max(slide.mpp))
    if assumed_mpp is None:
        return None
    return check_real(assumed_mpp, "assumed_mpp", min=0, min_open=True)


def resolve_resolution(
    slide: _Pyramid,
    level: Any = None,
    mpp: Any = None,
    *,
    default_level: int = 0,
    assumed_mpp: float | None = None,
    owner: str = "",
) -> Resolution:
    """The level to read for a request by ``level`` or by ``mpp``, and its downsample.

    Parameters
    ----------
    slide : Slide-like
        Anything with ``name``, ``level_count``, ``level_downsamples`` and ``mpp``.
    level : int, optional
        A pyramid level (Python or NumPy integer).
    mpp : float, optional
        A resolution in µm per pixel; give ``level`` or ``mpp``, not both.
    default_level : int
        The level when neither is given (default 0, the highest magnification).
    assumed_mpp : float, optional
        Level-0 µm/px to use when the slide records none.
    owner : str
        Who asks (``"PatchGrid"``), named in error messages.

    Raises
    ------
    LevelError
        If the level does not exist, or ``mpp`` is asked of a slide that records no
        resolution (and no ``assumed_mpp`` is given).
    ParameterError
        If both ``level`` and ``mpp`` are given, or either is not a valid value.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> s = ArraySlide([np.zeros((64 >> k, 64 >> k, 3), np.uint8) for k in range(3)],
    ...                mpp=(0.25, 0.26))
    >>> resolve_resolution(s, mpp=0.51)  # level 1 is 0.52 µm/px on y: too coarse
    Resolution(level=0, downsample=1.9615384615384615)
    >>> resolve_resolution(s, level=2)
    Resolution(level=2, downsample=4.0)
    """
    who = f"{owner}: " if owner else ""
    if level is not None and mpp is not None:
        raise ParameterError(f"{who}give level or mpp, not both (got level={level!r}, mpp={mpp!r})")
    if mpp is None:
        k = check_int(default_level if level is None else level, f"{who}level")
        if not 0 <= k < slide.level_count:
            raise LevelError(
                f"{who}level {k} is not in slide {slide.name!r}, which has "
                f"{slide.level_count} level(s): valid levels are 0..{slide.level_count - 1}"
            )
        return Resolution(k, float(slide.level_downsamples[k]))
    target = check_real(mpp, f"{who}mpp", min=0, min_open=True)
    base = slide_mpp(slide, assumed_mpp)
    if base is None:
        raise LevelError(
            f"{who}mpp={target} needs the slide's resolution, but slide {slide.name!r} records "
            "no µm per pixel (no Aperio MPP, TIFF resolution or OME physical size): give a "
            "level instead, or the slide's mpp"
        )
    downsample = target / base
    return Resolution(level_for_downsample(slide.level_downsamples, downsample), downsample)


def resolve_level(
    slide: _Pyramid,
    level: Any = None,
    mpp: Any = None,
    *,
    default_level: int = 0,
    assumed_mpp: float | None = None,
    owner: str = "",
) -> int:
    """The level to read for a request by ``level`` or by ``mpp`` (see :func:`resolve_resolution`).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> s = ArraySlide([np.zeros((64 >> k, 64 >> k, 3), np.uint8) for k in range(3)], mpp=0.25)
    >>> [resolve_level(s, mpp=m) for m in (0.1, 0.25, 0.5, 0.99, 1.004, 8.0)]
    [0, 0, 1, 1, 2, 2]
    >>> resolve_level(s, level=5)
    Traceback (most recent call last):
    ...
    cervixwsi.errors.LevelError: level 5 is not in slide ...
    """
    return resolve_resolution(
        slide, level, mpp, default_level=default_level, assumed_mpp=assumed_mpp, owner=owner
    ).level
