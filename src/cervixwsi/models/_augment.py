"""Training-time augmentation of H&E patches, in TensorFlow ops.

Every random choice is a *stateless* TensorFlow op driven by an explicit
``(2,)`` integer seed, so a given (seed, epoch, patch) always gets the same
augmentation: the data a run sees are reproducible, also after resuming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cervixwsi._validate import check_real
from cervixwsi.errors import ParameterError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["Augmentation", "augment_patch", "hed_to_rgb", "rgb_to_hed"]

# Ruifrok & Johnston (2001) optical densities of haematoxylin, eosin and DAB,
# as in skimage.color (rows: stains; columns: R, G, B).
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_LOG_EPS = math.log(1e-6)  # skimage's log adjustment: stains are in units of -log(1e-6)


@dataclass(frozen=True)
class Augmentation:
    """Random transformations of training patches (the study's, plus stain jitter).

    Applied in the input pipeline during training only; validation and
    prediction use the centre crop.

    Parameters
    ----------
    rotate90 : bool, default True
        Random rotation by a multiple of 90° (the study's value).
    rotation_degrees : float, default 0.0
        Further rotation by an angle uniform in ``[-rotation_degrees,
        rotation_degrees]`` (bilinear, reflected borders), applied to the full
        patch before cropping. 0 turns it off (the study's value).
    random_crop : bool, default True
        Random crop of the model's input size from the patch (the study's
        value: 224 from 256); ``False`` takes the centre crop.
    flip_lr : bool, default True
        Random left-right flip (the study's value).
    hed_jitter : float, default 0.0
        Stain augmentation: each of the haematoxylin, eosin and DAB
        concentrations ``c`` becomes ``c * a + b`` with ``a`` uniform in
        ``[1 - hed_jitter, 1 + hed_jitter]`` and ``b`` uniform in
        ``[-hed_jitter, hed_jitter]``, concentrations in optical-density units
        (natural log) after colour deconvolution with Ruifrok & Johnston's
        stain vectors (Tellez et al. 2018's "HED" augmentation); 0.05 is mild.
        0 turns it off (the study's value).
    brightness : float, default 0.0
        Add a value uniform in ``[-brightness, brightness]`` (intensities
        scaled to [0, 1]). 0 turns it off.
    contrast : float, default 0.0
        Scale contrast by a factor uniform in ``[1 - contrast, 1 + contrast]``.
        0 turns it off.
    saturation : float, default 0.0
        Scale the HSV saturation by a factor uniform in ``[1 - saturation, 1 +
        saturation]`` (in ``[0, 1)``). 0 turns it off.
    hue : float, default 0.0
        Rotate the hue by an angle uniform in ``[-hue, hue]`` turns (in ``[0,
        0.5]``; 0.05 is 18°). 0 turns it off.

    Notes
    -----
    The colour jitters run in this order, each only when its value is not 0: HED,
    brightness, contrast, saturation, hue.  Each patch draws its own values from its
    stateless seed; saturation and hue draw from seeds of their own, so turning them
    on leaves the other draws (and older runs' augmented patches) as they were.
    :meth:`stain` gives documented presets of all the colour jitters.

    Examples
    --------
    >>> from cervixwsi.models import Augmentation
    >>> Augmentation().rotate90, Augmentation(hed_jitter=0.05).hed_jitter
    (True, 0.05)
    >>> Augmentation.none().flip_lr
    False
    >>> aug = Augmentation.stain()          # "light": HED 0.05 and mild colour jitter
    >>> aug.hed_jitter, aug.brightness, aug.contrast, aug.saturation, aug.hue
    (0.05, 0.1, 0.1, 0.1, 0.04)
    """

    rotate90: bool = True
    rotation_degrees: float = 0.0
    random_crop: bool = True
    flip_lr: bool = True
    hed_jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self) -> None:
        # Checked and stored as plain floats (a classifier's settings are JSON).
        degrees = check_real(self.rotation_degrees, "Augmentation.rotation_degrees", min=0, max=180)
        object.__setattr__(self, "rotation_degrees", degrees)
        for name in ("hed_jitter", "brightness", "contrast", "saturation"):
            value = check_real(
                getattr(self, name), f"Augmentation.{name}", min=0, max=1, max_open=True
            )
            object.__setattr__(self, name, value)
        object.__setattr__(self, "hue", check_real(self.hue, "Augmentation.hue", min=0, max=0.5))
        for name in ("rotate90", "random_crop", "flip_lr"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ParameterError(
                    f"Augmentation.{name} must be True or False, got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, bool(getattr(self, name)))

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation at all: centre crop only."""
        return cls(rotate90=False, random_crop=False, flip_lr=False)

    @classmethod
    def stain(
        cls,
        strength: str = "light",
        *,
        hed: bool = True,
        brightness: bool = True,
        contrast: bool = True,
        saturation: bool = True,
        hue: bool = True,
        **geometry: Any,
    ) -> Augmentation:
        """The study's geometric augmentation plus a preset of stain and colour jitter.

        ============  ==========  ==========  ========  ==========  =====
        strength      hed_jitter  brightness  contrast  saturation  hue
        ============  ==========  ==========  ========  ==========  =====
        ``"light"``   0.05        0.1         0.1       0.1         0.04
        ``"strong"``  0.2         0.25        0.3       0.3         0.1
        ============  ==========  ==========  ========  ==========  =====

        ``"light"``'s HED jitter is Tellez et al.'s "HED-light" (scale and shift of each
        stain's concentration by up to 5 %; "HED-strong" is 0.2), the augmentation
        their 2019 comparison found best with colour jitter on unseen labs; the
        colour jitters are mild values of ours, within what H&E scanners differ by.
        Use ``"strong"`` when the test labs differ much from the training ones (and
        stain normalization is not used at inference).

        Parameters
        ----------
        strength : {"light", "strong"}
            The preset (table above).
        hed, brightness, contrast, saturation, hue : bool
            Switch each jitter off (False sets it to 0).
        **geometry
            Other fields of :class:`Augmentation` (``rotate90``, ``random_crop``,
            ``flip_lr``, ``rotation_degrees``), default the study's.

        Raises
        ------
        ParameterError
            For an unknown ``strength`` or a field that is not geometric.

        Examples
        --------
        >>> aug = Augmentation.stain("strong", hue=False, rotation_degrees=10)
        >>> aug.hed_jitter, aug.hue, aug.rotation_degrees, aug.rotate90
        (0.2, 0.0, 10.0, True)
        """
        preset = _STAIN_PRESETS.get(strength) if isinstance(strength, str) else None
        if preset is None:
            raise ParameterError(
                f"Augmentation.stain strength must be one of {sorted(_STAIN_PRESETS)}, "
                f"got {strength!r}"
            )
        bad = sorted(set(geometry) - _GEOMETRY_FIELDS)
        if bad:
            raise ParameterError(
                f"Augmentation.stain takes the geometric fields {sorted(_GEOMETRY_FIELDS)} "
                f"as keywords, got {bad} (switch the colour jitters with hed=, "
                "brightness=, contrast=, saturation=, hue=)"
            )
        switches = {
            "hed_jitter": hed,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
        }
        colour: dict[str, Any] = {k: (v if switches[k] else 0.0) for k, v in preset.items()}
        return cls(**geometry, **colour)


_STAIN_PRESETS: dict[str, dict[str, float]] = {
    "light": {
        "hed_jitter": 0.05,
        "brightness": 0.1,
        "contrast": 0.1,
        "saturation": 0.1,
        "hue": 0.04,
    },
    "strong": {
        "hed_jitter": 0.2,
        "brightness": 0.25,
        "contrast": 0.3,
        "saturation": 0.3,
        "hue": 0.1,
    },
}
_GEOMETRY_FIELDS = frozenset({"rotate90", "rotation_degrees", "random_crop", "flip_lr"})


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


def _rotate(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """Rotate an (H, W, C) float image about its centre by ``angle`` radians."""
    from cervixwsi.models._tf import tf

    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return out[0]


def augment_patch(
    image: Any,
    seed: Any,
    *,
    size: int | None,
    augmentation: Augmentation,
) -> tf.Tensor:
    """Augment one uint8 RGB patch; return a uint8 ``(size, size, 3)`` tensor.

    Parameters
    ----------
    image : numpy.ndarray or tf.Tensor of uint8 (H, W, 3)
        The patch (H, W >= ``size``).
    seed : numpy.ndarray or tf.Tensor of int (2,)
        Stateless seed: the same seed gives the same transformation.
    size : int or None
        Side of the output crop; ``None`` keeps the full patch.
    augmentation : Augmentation
        Which transformations to draw.

    Returns
    -------
    tf.Tensor
        uint8 patch of shape ``(size, size, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import Augmentation, augment_patch
    >>> patch = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> out = augment_patch(patch, [1, 2], size=24, augmentation=Augmentation())
    >>> out.shape, out.dtype.name
    (TensorShape([24, 24, 3]), 'uint8')
    """
    from cervixwsi.models._tf import tf

    aug = augmentation
    image = tf.convert_to_tensor(image, tf.uint8)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
    if aug.rotation_degrees > 0.0:
        limit = aug.rotation_degrees * math.pi / 180.0
        angle = tf.random.stateless_uniform([], seeds[0], -limit, limit)
        rotated = _rotate(tf.cast(image, tf.float32), angle)
        image = tf.cast(tf.clip_by_value(tf.round(rotated), 0.0, 255.0), tf.uint8)
    if size is not None:
        if aug.random_crop:
            image = tf.image.stateless_random_crop(image, [size, size, 3], seed=seeds[1])
        else:
            top = (tf.shape(image)[0] - size) // 2
            left = (tf.shape(image)[1] - size) // 2
            image = image[top : top + size, left : left + size]
    if aug.flip_lr:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[2])
    if aug.rotate90:
        k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    colour = (aug.hed_jitter, aug.brightness, aug.contrast, aug.saturation, aug.hue)
    if any(v > 0.0 for v in colour):
        rgb = tf.cast(image, tf.float32) / 255.0
        if aug.hed_jitter > 0.0:
            s = aug.hed_jitter
            alpha = tf.random.stateless_uniform([3], seeds[4], 1.0 - s, 1.0 + s)
            beta = tf.random.stateless_uniform([3], seeds[5], -s, s)
            rgb = _from_stains(_stains(rgb) * alpha + beta)
        if aug.brightness > 0.0:
            rgb = tf.image.stateless_random_brightness(rgb, aug.brightness, seed=seeds[6])
        if aug.contrast > 0.0:
            rgb = tf.image.stateless_random_contrast(
                rgb, 1.0 - aug.contrast, 1.0 + aug.contrast, seed=seeds[6][::-1]
            )
        if aug.saturation > 0.0 or aug.hue > 0.0:
            # Seeds of their own (split from seeds[6]): the draws above do not change.
            extra = tf.random.experimental.stateless_split(seeds[6], num=2)
            rgb = tf.clip_by_value(rgb, 0.0, 1.0)  # HSV needs [0, 1]
            if aug.saturation > 0.0:
                rgb = tf.image.stateless_random_saturation(
                    rgb, 1.0 - aug.saturation, 1.0 + aug.saturation, seed=extra[0]
                )
            if aug.hue > 0.0:
                rgb = tf.image.stateless_random_hue(rgb, aug.hue, seed=extra[1])
        image = tf.cast(tf.clip_by_value(tf.round(rgb * 255.0), 0.0, 255.0), tf.uint8)
    if size is not None:
        image = tf.ensure_shape(image, [size, size, 3])
    return image
