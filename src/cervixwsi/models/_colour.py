"""Colour of H&E patches in TensorFlow ops: stain deconvolution and the colour jitters.

The stain-space (HED) and colour (brightness, contrast, saturation, hue) parts of
:class:`~cervixwsi.models.Augmentation`, applied to a whole batch at once with each
patch's own draws; :mod:`cervixwsi.models._augment` draws them and does the geometry.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from cervixwsi.models._augment import Augmentation

__all__ = ["hed_to_rgb", "rgb_to_hed"]

# Ruifrok & Johnston (2001) optical densities of haematoxylin, eosin and DAB,
# as in skimage.color (rows: stains; columns: R, G, B).
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
#: RGB to YIQ (NTSC), as ``skimage.color.rgb2yiq``.
_YIQ_FROM_RGB = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.59590059, -0.27455667, -0.32134392],
        [0.21153661, -0.52273617, 0.31119955],
    ]
)
_RGB_FROM_YIQ = np.linalg.inv(_YIQ_FROM_RGB)
_LOG_EPS = math.log(1e-6)  # skimage's log adjustment: stains are in units of -log(1e-6)

# Floats: rotation angle (radians), HED scale (3) and shift (3), brightness delta,
# contrast, saturation and hue factors.
_ANGLE, _ALPHA, _BETA, _BRIGHT, _CONTRAST, _SAT, _HUE = 0, 1, 4, 7, 8, 9, 10
_N_FLOATS = 11


def _stains(rgb: tf.Tensor) -> tf.Tensor:
    """Stain optical densities (natural log) of float RGB in [0, 1], not clamped."""
    from cervixwsi.models._tf import tf

    od = -tf.math.log(tf.maximum(tf.cast(rgb, tf.float32), 1e-6))
    return tf.tensordot(od, tf.constant(_HED_FROM_RGB, tf.float32), axes=1)


def _from_stains(stains: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`_stains`, clipped to [0, 1]."""
    from cervixwsi.models._tf import tf

    od = tf.tensordot(stains, tf.constant(_RGB_FROM_HED, tf.float32), axes=1)
    return tf.clip_by_value(tf.exp(-od), 0.0, 1.0)


def rgb_to_hed(rgb: Any) -> tf.Tensor:
    """Colour deconvolution of float RGB in [0, 1] to H, E, D stain concentrations.

    The same transform (Ruifrok & Johnston's stain vectors) and units as
    :func:`skimage.color.rgb2hed`, in TensorFlow ops.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage.color import rgb2hed
    >>> from cervixwsi.models import rgb_to_hed
    >>> rgb = np.random.default_rng(0).uniform(0.1, 1.0, (4, 4, 3)).astype("float32")
    >>> bool(np.allclose(rgb_to_hed(rgb).numpy(), rgb2hed(rgb), atol=1e-5))
    True
    """
    from cervixwsi.models._tf import tf

    return tf.maximum(_stains(rgb) / -_LOG_EPS, 0.0)


def hed_to_rgb(hed: Any) -> tf.Tensor:
    """Inverse of :func:`rgb_to_hed`: stain concentrations to RGB in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import hed_to_rgb, rgb_to_hed
    >>> rgb = np.full((2, 2, 3), [0.8, 0.4, 0.7], dtype="float32")
    >>> bool(np.allclose(hed_to_rgb(rgb_to_hed(rgb)).numpy(), rgb, atol=1e-4))
    True
    """
    from cervixwsi.models._tf import tf

    return _from_stains(tf.cast(hed, tf.float32) * -_LOG_EPS)


def _jitter(images: tf.Tensor, params: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """The colour jitters of ``aug`` on a uint8 (B, S, S, 3) batch; float RGB out.

    ``params`` (B, 11) holds each patch's draws (:func:`_draw`). Each jitter is one
    vectorised step over the whole batch, the same transformation, up to float
    rounding, as TensorFlow's per-image op with that patch's draw:

    * HED: ``stains * a + b`` between colour deconvolution and its inverse is one
      affine map of the optical densities, ``od @ (HED_FROM_RGB diag(a) RGB_FROM_HED)
      + b @ RGB_FROM_HED`` (a 3x3 matrix per patch, applied as three broadcast
      multiply-adds) between one log (a 256-entry table of the uint8 values) and one
      exp;
    * brightness ``+ d`` then contrast ``(x - mean) * f + mean`` (per-channel mean of
      the patch) are ``x * f + (mean * (1 - f) + d)``;
    * saturation and hue: the image clipped to [0, 1], then one 3x3 matrix per patch
      (to YIQ, the chroma ``(i, q)`` scaled by ``f`` and turned by ``delta`` turns,
      back to RGB), as NVIDIA DALI's ``hsv`` operator does; the HSV round trip of
      ``tf.image.adjust_saturation`` and ``adjust_hue`` cost twice as much CPU.
    """
    from cervixwsi.models._tf import tf

    if aug.hed_jitter > 0.0:
        od = tf.gather(tf.constant(_OD_TABLE), tf.cast(images, tf.int32))
        alpha = params[:, _ALPHA : _ALPHA + 3]
        beta = params[:, _BETA : _BETA + 3]
        hed = tf.constant(_HED_FROM_RGB, tf.float32)
        rgb_from = tf.constant(_RGB_FROM_HED, tf.float32)
        # The map's negation, so that exp() needs no other op: -od' = od @ -M - c.
        matrix = tf.matmul(hed[tf.newaxis] * -alpha[:, tf.newaxis, :], rgb_from)
        shift = tf.matmul(-beta, rgb_from)
        # od @ matrix as three broadcast multiply-adds: one fused loop under XLA.
        matrix = matrix[:, tf.newaxis, tf.newaxis]  # (B, 1, 1, 3, 3)
        minus_od = shift[:, tf.newaxis, tf.newaxis, :]
        for c in range(3):
            minus_od = minus_od + od[..., c : c + 1] * matrix[..., c, :]
        rgb = tf.minimum(tf.exp(minus_od), 1.0)
    else:
        rgb = tf.cast(images, tf.float32) / 255.0
    if aug.brightness > 0.0 or aug.contrast > 0.0:
        delta = params[:, _BRIGHT, tf.newaxis, tf.newaxis, tf.newaxis]
        if aug.contrast > 0.0:
            factor = params[:, _CONTRAST, tf.newaxis, tf.newaxis, tf.newaxis]
            mean = tf.reduce_mean(rgb, axis=[1, 2], keepdims=True)
            rgb = rgb * factor + (mean * (1.0 - factor) + delta)
        else:
            rgb = rgb + delta
    if aug.saturation > 0.0 or aug.hue > 0.0:
        # chroma scaled and turned in YIQ: one 3x3 matrix per patch, RGB to RGB
        angle = params[:, _HUE] * (2.0 * math.pi)
        scale = params[:, _SAT]
        cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
        one, zero = tf.ones_like(cos), tf.zeros_like(cos)
        turn = tf.stack(
            [
                tf.stack([one, zero, zero], 1),
                tf.stack([zero, cos, -sin], 1),
                tf.stack([zero, sin, cos], 1),
            ],
            axis=1,
        )  # (B, 3, 3) on row vectors (y, i, q): i + jq times exp(-j angle), HSV's way round
        yiq = tf.constant(_YIQ_FROM_RGB.T, tf.float32)
        rgb_from = tf.constant(_RGB_FROM_YIQ.T, tf.float32)
        matrix = tf.matmul(tf.matmul(yiq[tf.newaxis], turn), rgb_from[tf.newaxis])
        matrix = matrix[:, tf.newaxis, tf.newaxis]  # (B, 1, 1, 3, 3)
        rgb = tf.clip_by_value(rgb, 0.0, 1.0)
        twisted = rgb[..., 0:1] * matrix[..., 0, :]
        for c in (1, 2):
            twisted = twisted + rgb[..., c : c + 1] * matrix[..., c, :]
        rgb = twisted
    return rgb


# -log of each uint8 value / 255 (floored at 1e-6): the optical density, by table.
_OD_TABLE = (-np.log(np.maximum(np.arange(256) / 255.0, 1e-6))).astype(np.float32)
