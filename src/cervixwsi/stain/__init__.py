"""Stain normalization of H&E images: Macenko and Reinhard, for inference and display.

Slides from several labs and scanners differ in colour; a patch classifier trained on
one lab's slides can fail on another's.  Two remedies work together: stain
*augmentation* while training (:meth:`cervixwsi.models.Augmentation.stain`) and stain
*normalization* at inference, here.

A normalizer is fitted on a **target** (:meth:`StainNormalizer.fit` on an RGB image,
:meth:`StainNormalizer.fit_slide` on the tissue of a slide's low level) and maps any
image's stains onto the target's (:meth:`StainNormalizer.transform`, uint8 in and
out, any batch shape, vectorised in float32):

- :class:`MacenkoNormalizer` (Macenko et al. 2009): hematoxylin and eosin vectors and
  maximum concentrations from the optical-density plane of the tissue;
- :class:`ReinhardNormalizer` (Reinhard et al. 2001): mean and std of each CIELAB
  channel of the tissue.

Vahadane et al.'s sparse method is not included: it needs a dictionary learner (SPAMS)
that is no longer maintained, and none of cervixwsi's dependencies has one.

The **source** statistics are estimated per image by default, or once per slide with
:meth:`StainNormalizer.for_slide` (on the tissue of a low level, 4 µm/px by default), so
that all patches of a slide are transformed alike.  :class:`StainNormalizedPredictor`
wraps any patch predictor (heatmaps, ensembles and cohort workers then normalize for
free) and :func:`normalize_thumbnail` gives a normalized picture of a slide.
Normalizers save to JSON (:meth:`StainNormalizer.save`, :meth:`StainNormalizer.load`).

Colour conversions (optical density, CIELAB, the tissue-pixel rule) are in one place,
``_od``: :func:`rgb_to_od`, :func:`od_to_rgb`, :func:`rgb_to_lab`, :func:`lab_to_rgb`.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.stain import MacenkoNormalizer
>>> h, e = np.array([0.56, 0.72, 0.41]), np.array([0.22, 0.80, 0.56])  # OD vectors
>>> c = np.random.default_rng(1).uniform(0.0, 1.5, (48, 48, 2))          # amounts
>>> rgb = lambda h, e: np.round(256 * np.exp(-(c[..., :1] * h + c[..., 1:] * e)) - 1)
>>> target = rgb(h, e).astype(np.uint8)
>>> shifted = rgb(h * [1.3, 1.1, 0.8], e * 0.7).astype(np.uint8)   # another lab
>>> out = MacenkoNormalizer().fit(target).transform(shifted)
>>> def gap(a):
...     return float(np.abs(a.astype(float) - target).mean())
>>> bool(gap(out) < gap(shifted) / 3)
True
"""

from cervixwsi.stain._base import StainNormalizer
from cervixwsi.stain._display import normalize_thumbnail
from cervixwsi.stain._macenko import MacenkoNormalizer
from cervixwsi.stain._od import lab_to_rgb, od_to_rgb, rgb_to_lab, rgb_to_od
from cervixwsi.stain._predictor import StainNormalizedPredictor
from cervixwsi.stain._reinhard import ReinhardNormalizer

__all__ = [
    "MacenkoNormalizer",
    "ReinhardNormalizer",
    "StainNormalizedPredictor",
    "StainNormalizer",
    "lab_to_rgb",
    "normalize_thumbnail",
    "od_to_rgb",
    "rgb_to_lab",
    "rgb_to_od",
]
