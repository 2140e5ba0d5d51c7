"""Stain-normalized images of whole slides, for display: :func:`normalize_thumbnail`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import ParameterError
from cervixwsi.geometry import Raster, resolve_level
from cervixwsi.stain._base import StainNormalizer
from cervixwsi.tissue import SlideLike

__all__ = ["normalize_thumbnail"]

_ASSUMED_MPP = 0.25


def normalize_thumbnail(
    slide: SlideLike,
    normalizer: StainNormalizer,
    *,
    level: int | None = None,
    mpp: float | None = None,
    tissue: Raster | None = None,
) -> npt.NDArray[np.uint8]:
    """A whole level of ``slide``, stain-normalized towards ``normalizer``'s target.

    The slide's source stains are estimated once on its tissue (as
    :meth:`StainNormalizer.for_slide` does, on the level shown) and the level is
    transformed with them, so the picture is normalized as the slide's patches are.
    A normalizer with a fixed source (from ``for_slide``) is used as it is.

    Parameters
    ----------
    slide : SlideLike
        The slide.
    normalizer : StainNormalizer
        A fitted normalizer.
    level : int, optional
        The level to show; by default the one
        :func:`~cervixwsi.geometry.resolve_level` picks for ``mpp``.
    mpp : float, optional
        Resolution of the picture, default 8 µm/px (a thumbnail; for a closer look
        read a region with ``slide.read_region`` and call ``normalizer.transform``).
    tissue : TissueMask, optional
        The slide's tissue (default: :class:`~cervixwsi.tissue.TissueMasker`'s).

    Returns
    -------
    numpy.ndarray
        uint8 ``(h, w, 3)`` RGB of the level.

    Raises
    ------
    NotFittedError
        If ``normalizer`` is not fitted.
    StainError
        When the slide's stains cannot be estimated (no tissue, one stain only).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> from cervixwsi.stain import ReinhardNormalizer, normalize_thumbnail
    >>> image = np.full((400, 400, 3), 240, np.uint8)
    >>> image[100:300, 100:300] = np.random.default_rng(0).integers(
    ...     (150, 60, 120), (220, 140, 200), (200, 200, 3))
    >>> slide = ArraySlide([image, image[::4, ::4]], mpp=2.0)
    >>> norm = ReinhardNormalizer().fit(image[100:300, 100:300] // 2 + 60)
    >>> normalize_thumbnail(slide, norm).shape   # level 1: 8 µm/px
    (100, 100, 3)
    """
    if not isinstance(normalizer, StainNormalizer):
        raise ParameterError(
            "normalize_thumbnail.normalizer must be a StainNormalizer, got "
            f"{type(normalizer).__name__}"
        )
    if level is not None:
        chosen = resolve_level(slide, level=level, owner="normalize_thumbnail")
    else:
        target = 8.0 if mpp is None else mpp
        chosen = resolve_level(
            slide, mpp=target, assumed_mpp=_ASSUMED_MPP, owner="normalize_thumbnail"
        )
    fixed = (
        normalizer if normalizer.source_fixed else normalizer.for_slide(slide, tissue, level=chosen)
    )
    rgb = np.asarray(slide.read_level(chosen))
    return fixed.transform(rgb)
