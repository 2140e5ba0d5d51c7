"""Training-time augmentation of H&E patches, in TensorFlow ops.

Every random choice is a *stateless* TensorFlow op driven by an explicit
``(2,)`` integer seed, so a given (seed, epoch, patch) always gets the same
augmentation: the data a run sees are reproducible, also after resuming.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cervixwsi._validate import check_real
from cervixwsi.errors import ParameterError
from cervixwsi.models._colour import _ANGLE, _N_FLOATS, _jitter

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["Augmentation", "augment_patch"]

logger = logging.getLogger(__name__)


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
        Scale the chroma by a factor uniform in ``[1 - saturation, 1 +
        saturation]`` (in ``[0, 1)``): the ``i`` and ``q`` of YIQ, whose ``y`` is
        the luma, as NVIDIA DALI's ``hsv`` operator does. 0 turns it off.
    hue : float, default 0.0
        Turn the chroma plane ``(i, q)`` of YIQ by an angle uniform in ``[-hue,
        hue]`` turns (in ``[0, 0.5]``; 0.05 is 18°), keeping the luma. 0 turns it
        off.  Saturation and hue can take a colour out of the RGB cube; it is
        clipped per channel to uint8 at the end, which moves its luma and hue a
        little (HSV capped the saturation at 1 instead).

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


# Per-example random parameters, drawn by _draw into two vectors of fixed layout.
# Integers: crop offset (top, left), left-right flip (0/1), quarter turns k.
_TOP, _LEFT, _FLIP, _K = range(4)
_N_INTS = 4
# (r, c) in the crop of output pixel (i, j) after ``tf.image.rot90(crop, k)``:
# r = ar i + br j + cr (S - 1), c = ac i + bc j + cc (S - 1); one row (ar, br, cr, ac,
# bc, cc) per k.
_QUARTER_TURNS = np.array(
    [
        [1, 0, 0, 0, 1, 0],  # k = 0: (i, j)
        [0, 1, 0, -1, 0, 1],  # k = 1: (j, S-1-i)
        [-1, 0, 1, 0, -1, 1],  # k = 2: (S-1-i, S-1-j)
        [0, -1, 1, 1, 0, 0],  # k = 3: (S-1-j, i)
    ],
    dtype=np.int32,
)


def _colour_on(aug: Augmentation) -> bool:
    colour = (aug.hed_jitter, aug.brightness, aug.contrast, aug.saturation, aug.hue)
    return any(v > 0.0 for v in colour)


def _draw_colour(seeds: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """The colour draws of one patch from its split seeds, as the float layout above.

    The same stateless draws (seeds, shapes, ranges) as ``tf.image.stateless_random_*``
    with these seeds, so the values are those of the per-patch TensorFlow image ops.
    """
    from cervixwsi.models._tf import tf

    def uniform(shape: list[int], seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seed, low, high)

    alpha, beta = tf.ones([3]), tf.zeros([3])
    if aug.hed_jitter > 0.0:
        s = aug.hed_jitter
        alpha = uniform([3], seeds[4], 1.0 - s, 1.0 + s)
        beta = uniform([3], seeds[5], -s, s)
    bright = tf.zeros([1])
    if aug.brightness > 0.0:
        bright = uniform([], seeds[6], -aug.brightness, aug.brightness)[tf.newaxis]
    contrast = tf.ones([1])
    if aug.contrast > 0.0:
        c = aug.contrast
        contrast = uniform([], seeds[6][::-1], 1.0 - c, 1.0 + c)[tf.newaxis]
    sat, hue = tf.ones([1]), tf.zeros([1])
    if aug.saturation > 0.0 or aug.hue > 0.0:
        # Seeds of their own (split from seeds[6]): the draws above do not change.
        extra = tf.random.experimental.stateless_split(seeds[6], num=2)
        if aug.saturation > 0.0:
            s = aug.saturation
            sat = uniform([], extra[0], 1.0 - s, 1.0 + s)[tf.newaxis]
        if aug.hue > 0.0:
            hue = uniform([], extra[1], -aug.hue, aug.hue)[tf.newaxis]
    return tf.concat([tf.zeros([1]), alpha, beta, bright, contrast, sat, hue], axis=0)


def _draw(
    seed: tf.Tensor, aug: Augmentation, shape: tf.Tensor, size: int | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """All random parameters of one patch of ``shape`` (H, W): (int32 (4,), float32 (11,)).

    The draws of :func:`augment_patch`'s TensorFlow image ops for ``seed``: the crop
    offset of ``tf.image.stateless_random_crop``, the coin of
    ``tf.image.stateless_random_flip_left_right``, and so on.
    """
    from cervixwsi.models._tf import tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
    height, width = shape[0], shape[1]
    if size is None:
        top = left = tf.constant(0, tf.int32)
    elif aug.random_crop:
        limit = tf.stack([height - size + 1, width - size + 1, 1])
        offset = (
            tf.random.stateless_uniform([3], seeds[1], maxval=tf.int32.max, dtype=tf.int32) % limit
        )
        top, left = offset[0], offset[1]
    else:
        top, left = (height - size) // 2, (width - size) // 2
    flip = tf.constant(0, tf.int32)
    if aug.flip_lr:
        coin = tf.random.stateless_uniform([], seeds[2], 0.0, 1.0)
        flip = tf.cast(coin < 0.5, tf.int32)
    k = tf.constant(0, tf.int32)
    if aug.rotate90:
        k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    floats = _draw_colour(seeds, aug) if _colour_on(aug) else tf.zeros([_N_FLOATS])
    if aug.rotation_degrees > 0.0:
        limit_rad = aug.rotation_degrees * math.pi / 180.0
        angle = tf.random.stateless_uniform([], seeds[0], -limit_rad, limit_rad)
        floats = tf.concat([angle[tf.newaxis], floats[1:]], axis=0)
    return tf.stack([top, left, flip, k]), floats


def _rotate_batch(images: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
    """Rotate (B, H, W, C) float images about their centres by ``angles`` (B,) radians."""
    from cervixwsi.models._tf import tf

    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    zero = tf.zeros_like(angles)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    transforms = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _rotate(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """Rotate an (H, W, C) float image about its centre by ``angle`` radians."""
    from cervixwsi.models._tf import tf

    return _rotate_batch(image[tf.newaxis], tf.reshape(angle, [1]))[0]


def _to_uint8(values: tf.Tensor) -> tf.Tensor:
    """Float values on the 0-255 scale, rounded and clipped to uint8."""
    from cervixwsi.models._tf import tf

    return tf.cast(tf.clip_by_value(tf.round(values), 0.0, 255.0), tf.uint8)


def _geometry(images: tf.Tensor, ints: tf.Tensor, size: int | None) -> tf.Tensor:
    """Crop, flip and quarter-turn each patch of a (B, H, W, C) batch: one gather.

    Every output pixel comes from one input pixel through an affine map of its
    coordinates, set by the patch's crop offset, flip and k (``ints`` (B, 4)), so the
    whole batch is one ``tf.gather`` of the pixels at computed flat indices.
    """
    from cervixwsi.models._tf import tf

    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    out_h = height if size is None else tf.constant(size, tf.int32)
    out_w = width if size is None else tf.constant(size, tf.int32)
    turns = tf.gather(tf.constant(_QUARTER_TURNS), ints[:, _K])
    last = out_w - 1  # S - 1 (the crop is square whenever k may be non-zero)
    ar, br, cr = turns[:, 0], turns[:, 1], turns[:, 2] * last
    ac, bc, cc = turns[:, 3], turns[:, 4], turns[:, 5] * last
    sign = 1 - 2 * ints[:, _FLIP]  # flip: c -> S - 1 - c
    ac, bc, cc = sign * ac, sign * bc, sign * cc + ints[:, _FLIP] * last
    coef_i = ar * width + ac
    coef_j = br * width + bc
    const = (tf.range(n) * height + ints[:, _TOP] + cr) * width + ints[:, _LEFT] + cc
    rows = tf.range(out_h)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(out_w)[tf.newaxis, tf.newaxis, :]
    index = (
        coef_i[:, tf.newaxis, tf.newaxis] * rows
        + coef_j[:, tf.newaxis, tf.newaxis] * cols
        + const[:, tf.newaxis, tf.newaxis]
    )
    pixels = tf.reshape(images, [-1, shape[3]])
    return tf.gather(pixels, index)


@functools.lru_cache(maxsize=1)
def _xla_available() -> bool:
    """Whether this TensorFlow compiles with XLA on the CPU (tried once)."""
    from cervixwsi.models._tf import tf

    try:
        probe = tf.function(tf.exp, jit_compile=True, autograph=False)
        probe(tf.zeros([2]))
    except Exception as exc:  # any failure means: run op by op
        logger.info("XLA is not available (%s); augmentation runs op by op", exc)
        return False
    return True


@functools.lru_cache(maxsize=64)
def _crop_and_jitter(aug: Augmentation, size: int | None, xla: bool) -> Any:
    """Crop, flip, quarter-turn and colour-jitter a batch: ``f(images, ints, floats)``.

    Two ``tf.function`` steps per (augmentation, size), each compiled with XLA where
    it can be: XLA fuses the colour jitters' elementwise steps into a few loops over
    the pixels, about 5 times less CPU than running them op by op.  The geometry's
    gather is compiled apart from the jitters: fused with them, XLA recomputes it
    inside their loops (a third more CPU for the stain setting at 64 px).
    """
    from cervixwsi.models._tf import tf

    def options(f: Any) -> Any:
        return tf.function(f, jit_compile=xla, reduce_retracing=True, autograph=False)

    geometry = options(lambda images, ints: _geometry(images, ints, size))
    if not _colour_on(aug):
        return lambda images, ints, floats: geometry(images, ints)
    jitter = options(lambda images, floats: _to_uint8(_jitter(images, floats, aug) * 255.0))
    return lambda images, ints, floats: jitter(geometry(images, ints), floats)


def augment_batch(
    images: Any,
    seeds: Any,
    *,
    size: int | None,
    augmentation: Augmentation,
) -> tf.Tensor:
    """Augment a batch of uint8 RGB patches, each as :func:`augment_patch` with its seed.

    The training pipeline's form of :func:`augment_patch`: the per-patch random draws
    are the same (each patch's own stateless seed), but the transformations run
    vectorised over the batch: one batched rotation, one gather for crop, flip and
    quarter turn, and one pass of each colour jitter, after the crop (on the model's
    input size).  The result equals ``augment_patch(images[i], seeds[i], ...)`` for
    every ``i`` up to float rounding (a channel value may differ by 1 where the
    unrounded value is within about 1e-4 of a half integer).

    Parameters
    ----------
    images : numpy.ndarray or tf.Tensor of uint8 (B, H, W, 3)
        The patches (H, W >= ``size``).
    seeds : numpy.ndarray or tf.Tensor of int (B, 2)
        One stateless seed per patch.
    size : int or None
        Side of the output crops; ``None`` keeps the full patches (which must then
        be square when ``augmentation.rotate90``).
    augmentation : Augmentation
        Which transformations to draw.

    Returns
    -------
    tf.Tensor
        uint8 patches of shape ``(B, size, size, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.models import Augmentation, augment_patch
    >>> from cervixwsi.models._augment import augment_batch
    >>> patches = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> seeds = np.array([[1, 2], [1, 3], [7, 0], [9, 9]])
    >>> aug = Augmentation.stain()
    >>> out = augment_batch(patches, seeds, size=24, augmentation=aug)
    >>> out.shape, out.dtype.name
    (TensorShape([4, 24, 24, 3]), 'uint8')
    >>> one = augment_patch(patches[2], seeds[2], size=24, augmentation=aug)
    >>> int(np.abs(out[2].numpy().astype(int) - one.numpy()).max()) <= 1
    True
    """
    from cervixwsi.models._tf import tf

    aug = augmentation
    images = tf.convert_to_tensor(images, tf.uint8)
    seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int64)
    shape = tf.shape(images)
    if size is not None:
        tf.debugging.assert_greater_equal(
            tf.reduce_min(shape[1:3]), size, message=f"augment_batch: patches under size {size}"
        )
    elif aug.rotate90 and images.shape[1] != images.shape[2]:
        raise ParameterError(
            f"augment_batch: rotate90 needs square patches when size is None, got "
            f"{images.shape[1]}x{images.shape[2]}"
        )
    ints, floats = tf.map_fn(
        lambda s: _draw(s, aug, shape[1:3], size),
        seeds,
        fn_output_signature=(
            tf.TensorSpec([_N_INTS], tf.int32),
            tf.TensorSpec([_N_FLOATS], tf.float32),
        ),
    )
    if aug.rotation_degrees > 0.0:
        images = _to_uint8(_rotate_batch(tf.cast(images, tf.float32), floats[:, _ANGLE]))
    images = _crop_and_jitter(aug, size, _xla_available())(images, ints, floats)
    if size is not None:
        images = tf.ensure_shape(images, [None, size, size, 3])
    return images


def augment_patch(
    image: Any,
    seed: Any,
    *,
    size: int | None,
    augmentation: Augmentation,
) -> tf.Tensor:
    """Augment one uint8 RGB patch; return a uint8 ``(size, size, 3)`` tensor.

    In order: rotation by a random angle (full patch), crop of ``size``, left-right
    flip, quarter turns, then the colour jitters (on the crop).

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
        image = _to_uint8(_rotate(tf.cast(image, tf.float32), angle))
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
    if _colour_on(aug):
        params = _draw_colour(seeds, aug)[tf.newaxis]
        image = _to_uint8(_jitter(image[tf.newaxis], params, aug)[0] * 255.0)
    if size is not None:
        image = tf.ensure_shape(image, [size, size, 3])
    return image
