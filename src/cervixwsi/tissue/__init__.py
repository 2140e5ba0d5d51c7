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

The modules: ``_slidelike`` (:class:`SlideLike`, what tissue detection needs of a
slide), ``_mask`` (:class:`TissueMask`), ``_masker`` (:class:`TissueMasker`, the
algorithm) and ``_filters`` (:func:`pen_mask` and the morphology it uses).  The level
read is chosen by :func:`cervixwsi.geometry.resolve_level`, the rule every stage uses.
"""

from cervixwsi.tissue._artifact_mask import CAUSES, ArtifactMask
from cervixwsi.tissue._artifacts import ArtifactMasker
from cervixwsi.tissue._filters import pen_mask
from cervixwsi.tissue._mask import TissueMask
from cervixwsi.tissue._masker import TissueMasker
from cervixwsi.tissue._slidelike import SlideLike

__all__ = [
    "CAUSES",
    "ArtifactMask",
    "ArtifactMasker",
    "SlideLike",
    "TissueMask",
    "TissueMasker",
    "pen_mask",
]
