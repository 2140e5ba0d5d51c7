"""Tests of the colour jitters of cervixwsi.models.Augmentation: saturation, hue, presets."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from skimage.color import rgb2yiq, yiq2rgb  # noqa: E402

from cervixwsi.errors import ParameterError  # noqa: E402
from cervixwsi.models import Augmentation, augment_patch  # noqa: E402

pytestmark = [pytest.mark.tf]

NO_GEOMETRY = {"rotate90": False, "flip_lr": False, "random_crop": False}


def he_patch(seed: int = 0, side: int = 24) -> npt.NDArray[np.uint8]:
    """A pink-and-purple H&E-like patch."""
    rng = np.random.default_rng(seed)
    base = np.where(rng.random((side, side, 1)) < 0.3, (90, 60, 150), (220, 130, 190))
    return np.clip(base + rng.normal(0, 8, (side, side, 3)), 0, 255).astype(np.uint8)


def run(image: Any, seed: tuple[int, int], **kwargs: Any) -> npt.NDArray[np.uint8]:
    aug = Augmentation(**{**NO_GEOMETRY, **kwargs})
    return np.asarray(augment_patch(image, seed, size=None, augmentation=aug))


def test_zero_saturation_and_hue_are_the_identity() -> None:
    image = he_patch()
    np.testing.assert_array_equal(run(image, (1, 2), saturation=0.0, hue=0.0), image)


@pytest.mark.parametrize("kwargs", [{"saturation": 0.5}, {"hue": 0.5}, {"hue": 0.2}])
def test_grey_pixels_stay_grey(kwargs: dict[str, float]) -> None:
    grey = np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], 3, axis=2)
    for s in range(5):
        out = run(grey, (3, s), **kwargs).astype(int)
        assert np.abs(out - grey).max() <= 1


def test_saturation_scales_the_chroma_within_its_range() -> None:
    # saturation scales the chroma (i, q) of YIQ and keeps its angle (the hue)
    image = he_patch(1)
    yiq = rgb2yiq(image / 255.0)
    chroma = yiq[..., 1] + 1j * yiq[..., 2]
    keep = np.abs(chroma) > 0.1
    ratios = []
    for s in range(30):
        out = rgb2yiq(run(image, (4, s), saturation=0.3) / 255.0)
        turned = (out[..., 1] + 1j * out[..., 2])[keep] / chroma[keep]
        ratios.append(float(np.median(np.abs(turned))))
        assert np.median(np.abs(np.angle(turned))) < 0.02  # hue kept
    assert 0.69 <= min(ratios) < 0.85 and 1.15 < max(ratios) <= 1.31


def test_hue_shifts_are_bounded_by_hue() -> None:
    # the hue is the angle of the chroma (i, q) of YIQ, turned HSV's way round
    image = he_patch(2)
    yiq = rgb2yiq(image / 255.0)
    shifts = []
    for s in range(30):
        out = rgb2yiq(run(image, (5, s), hue=0.05) / 255.0)
        keep = np.hypot(yiq[..., 1], yiq[..., 2]) > 0.1
        turn = np.angle((out[..., 1] + 1j * out[..., 2]) / (yiq[..., 1] + 1j * yiq[..., 2]))
        shifts.append(float(np.median(-turn[keep] / (2 * np.pi))))
    assert max(abs(v) for v in shifts) <= 0.05 + 0.005
    assert max(shifts) > 0.02 and min(shifts) < -0.02  # both ways


@settings(max_examples=20)
@given(
    seed=st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    saturation=st.sampled_from([0.0, 0.3, 0.99]),
    hue=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_colour_jitter_gives_valid_patches_as_a_function_of_the_seed(
    seed: tuple[int, int], saturation: float, hue: float
) -> None:
    image = he_patch(3, 16)
    kwargs = {"saturation": saturation, "hue": hue, "hed_jitter": 0.1, "brightness": 0.1}
    a = run(image, seed, **kwargs)
    b = run(image, seed, **kwargs)
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_different_seeds_draw_different_colours() -> None:
    image = he_patch(4)
    outs = [run(image, (6, s), saturation=0.2, hue=0.05) for s in range(8)]
    assert len({o.tobytes() for o in outs}) == 8


def test_turning_saturation_or_hue_on_keeps_the_other_draws() -> None:
    # saturation and hue draw from seeds of their own: with both at (almost) no effect,
    # the HED, brightness and contrast draws are those without them
    image = he_patch(5)
    base = {"hed_jitter": 0.05, "brightness": 0.1, "contrast": 0.1}
    plain = run(image, (7, 8), **base)
    tiny = run(image, (7, 8), saturation=1e-7, hue=1e-7, **base)
    assert np.abs(plain.astype(int) - tiny).max() <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"saturation": 1.0},
        {"saturation": -0.1},
        {"hue": 0.51},
        {"hue": -0.01},
        {"hue": float("nan")},
        {"saturation": True},
        {"rotate90": 1},
        {"flip_lr": "yes"},
    ],
)
def test_out_of_range_jitters_are_refused(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ParameterError, match=f"Augmentation.{name}"):
        Augmentation(**kwargs)


def test_stain_presets_and_switches() -> None:
    light = Augmentation.stain()
    assert (light.hed_jitter, light.brightness, light.contrast) == (0.05, 0.1, 0.1)
    assert (light.saturation, light.hue) == (0.1, 0.04)
    assert light.rotate90 and light.random_crop and light.flip_lr  # the study's geometry
    strong = Augmentation.stain("strong")
    assert strong.hed_jitter == 0.2 and strong.hue == 0.1
    off = Augmentation.stain(
        hed=False, brightness=False, contrast=False, saturation=False, hue=False
    )
    assert off == Augmentation()
    only_hed = Augmentation.stain("strong", brightness=False, contrast=False, saturation=False)
    assert (only_hed.hed_jitter, only_hed.brightness, only_hed.hue) == (0.2, 0.0, 0.1)
    assert Augmentation.stain(flip_lr=False, rotation_degrees=15).rotation_degrees == 15.0


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("medium",), {}, "strength"),
        ((0.5,), {}, "strength"),
        ((), {"hed_jitter": 0.1}, "geometric"),
    ],
)
def test_bad_presets_are_refused(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        Augmentation.stain(*args, **kwargs)


def test_settings_round_trip_as_json_values_and_old_settings_load() -> None:
    aug = Augmentation.stain("strong")
    assert Augmentation(**dataclasses.asdict(aug)) == aug
    old = {  # a classifier saved before saturation and hue existed
        "rotate90": True,
        "rotation_degrees": 0.0,
        "random_crop": True,
        "flip_lr": True,
        "hed_jitter": 0.05,
        "brightness": 0.0,
        "contrast": 0.0,
    }
    loaded = Augmentation(**old)
    assert loaded.saturation == 0.0 and loaded.hue == 0.0


def test_stain_augmentation_runs_in_the_training_pipeline() -> None:
    from cervixwsi.models import ArrayPatchSource
    from cervixwsi.models._data import source_dataset

    patches = np.stack([he_patch(s, 20) for s in range(6)])
    source = ArrayPatchSource(patches, np.array([0, 1] * 3))
    ds, steps = source_dataset(
        source, batch_size=4, size=16, augmentation=Augmentation.stain("strong"), seed=1
    )
    batches = [x for x, _ in ds]
    assert steps == 2 and batches[0].shape == (4, 16, 16, 3) and batches[0].dtype == tf.uint8
    again = [
        x
        for x, _ in source_dataset(
            source, batch_size=4, size=16, augmentation=Augmentation.stain("strong"), seed=1
        )[0]
    ]
    np.testing.assert_array_equal(batches[1].numpy(), again[1].numpy())


# ------------------------------------------------- vectorised batch == patch by patch


def _reference_colour(image: Any, seed: Any, aug: Augmentation) -> npt.NDArray[np.float32]:
    """The colour jitters patch by patch, before rounding: TensorFlow's per-image ops for
    HED, brightness and contrast (the implementation the vectorised one replaced),
    scikit-image's YIQ for saturation and hue; the same seeds, in the same order.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
    rgb = tf.cast(image, tf.float32) / 255.0
    if aug.hed_jitter > 0.0:
        s = aug.hed_jitter
        alpha = tf.random.stateless_uniform([3], seeds[4], 1.0 - s, 1.0 + s)
        beta = tf.random.stateless_uniform([3], seeds[5], -s, s)
        hed_from = tf.constant(np.linalg.inv(_RGB_FROM_HED), tf.float32)
        stains = tf.tensordot(-tf.math.log(tf.maximum(rgb, 1e-6)), hed_from, axes=1)
        od = tf.tensordot(stains * alpha + beta, tf.constant(_RGB_FROM_HED, tf.float32), axes=1)
        rgb = tf.clip_by_value(tf.exp(-od), 0.0, 1.0)
    if aug.brightness > 0.0:
        rgb = tf.image.stateless_random_brightness(rgb, aug.brightness, seed=seeds[6])
    if aug.contrast > 0.0:
        c = aug.contrast
        rgb = tf.image.stateless_random_contrast(rgb, 1.0 - c, 1.0 + c, seed=seeds[6][::-1])
    if aug.saturation > 0.0 or aug.hue > 0.0:
        # scikit-image's YIQ: the chroma (i, q) scaled and turned, the luma kept
        extra = tf.random.experimental.stateless_split(seeds[6], num=2)
        factor, turns = 1.0, 0.0
        if aug.saturation > 0.0:
            s = aug.saturation
            factor = float(tf.random.stateless_uniform([], extra[0], 1.0 - s, 1.0 + s))
        if aug.hue > 0.0:
            turns = float(tf.random.stateless_uniform([], extra[1], -aug.hue, aug.hue))
        yiq = rgb2yiq(np.clip(np.asarray(rgb, np.float64), 0.0, 1.0))
        chroma = factor * (yiq[..., 1] + 1j * yiq[..., 2]) * np.exp(-2j * np.pi * turns)
        yiq[..., 1], yiq[..., 2] = chroma.real, chroma.imag
        rgb = yiq2rgb(yiq)
    return np.asarray(rgb, np.float32)


_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
COLOURS = [
    Augmentation.stain(),
    Augmentation.stain("strong"),
    Augmentation(hed_jitter=0.3),
    Augmentation(brightness=0.3, contrast=0.5),
    Augmentation(contrast=0.2),
    Augmentation(saturation=0.9),
    Augmentation(hue=0.5),
]


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("aug", COLOURS, ids=lambda a: f"{a.hed_jitter}-{a.contrast}-{a.hue}")
def test_vectorised_colour_jitter_equals_the_per_patch_ops(aug: Augmentation, xla: bool) -> None:
    from cervixwsi.models._augment import _draw_colour
    from cervixwsi.models._colour import _jitter

    rng = np.random.default_rng(11)
    images = np.stack([he_patch(s, 12) for s in range(5)] + [rng.integers(0, 256, (12, 12, 3))])
    images = images.astype(np.uint8)
    seeds = rng.integers(0, 2**31, (len(images), 2))
    params = tf.stack(
        [_draw_colour(tf.random.experimental.stateless_split(s, num=7), aug) for s in seeds]
    )
    jitter = tf.function(lambda x, p: _jitter(x, p, aug), jit_compile=True) if xla else None
    got = np.asarray(jitter(images, params) if jitter else _jitter(images, params, aug))
    want = np.stack([_reference_colour(im, s, aug) for im, s in zip(images, seeds, strict=True)])
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)


GEOMETRIES = [
    Augmentation(),
    Augmentation.none(),
    Augmentation(rotate90=False),
    Augmentation(flip_lr=False, random_crop=False),
    Augmentation(rotation_degrees=25.0),
]


@pytest.mark.parametrize("size", [10, 16, None])
@pytest.mark.parametrize("aug", GEOMETRIES + COLOURS[:2], ids=repr)
def test_augment_batch_equals_augment_patch_for_each_patch(
    aug: Augmentation, size: int | None
) -> None:
    from cervixwsi.models._augment import augment_batch

    rng = np.random.default_rng(12)
    images = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    seeds = rng.integers(0, 2**31, (7, 2))
    got = np.asarray(augment_batch(images, seeds, size=size, augmentation=aug)).astype(int)
    want = np.stack(
        [
            np.asarray(augment_patch(im, s, size=size, augmentation=aug))
            for im, s in zip(images, seeds, strict=True)
        ]
    ).astype(int)
    assert got.shape == want.shape
    if aug.hed_jitter == aug.contrast == aug.hue == 0.0:
        np.testing.assert_array_equal(got, want)  # geometry: the same pixels
    else:  # colour: up to float rounding, where a value sits on a half integer
        assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 1e-3


def test_augment_batch_crops_flips_and_turns_like_tensorflow_ops() -> None:
    # every (crop offset, flip, k) the draws can give, against tf.image's ops
    from cervixwsi.models._augment import _geometry

    image = np.arange(9 * 8 * 3, dtype=np.int64).reshape(1, 9, 8, 3).astype(np.int32)
    for top in range(4):
        for left in range(3):
            for flip in (0, 1):
                for k in range(4):
                    ints = tf.constant([[top, left, flip, k]], tf.int32)
                    got = np.asarray(_geometry(image, ints, 6))[0]
                    want = image[0, top : top + 6, left : left + 6]
                    want = np.asarray(tf.image.rot90(want[:, ::-1] if flip else want, k))
                    np.testing.assert_array_equal(got, want)


def test_augment_batch_refuses_non_square_patches_it_cannot_turn() -> None:
    from cervixwsi.models._augment import augment_batch

    images = np.zeros((2, 8, 6, 3), np.uint8)
    with pytest.raises(ParameterError, match="rotate90"):
        augment_batch(images, [[0, 0], [0, 1]], size=None, augmentation=Augmentation())
    out = augment_batch(
        images, [[0, 0], [0, 1]], size=None, augmentation=Augmentation.stain(rotate90=False)
    )
    assert out.shape == (2, 8, 6, 3)


def test_training_pipeline_batches_are_the_per_patch_augmentations() -> None:
    from cervixwsi.models import ArrayPatchSource
    from cervixwsi.models._data import source_dataset

    patches = np.stack([he_patch(s, 20) for s in range(6)])
    source = ArrayPatchSource(patches, np.array([0, 1] * 3))
    aug = Augmentation.stain("strong")
    ds, steps = source_dataset(source, batch_size=4, size=16, augmentation=aug, seed=3, epochs=2)
    batches = [x.numpy().astype(int) for x, _ in ds]
    assert len(batches) == 2 * steps
    for epoch in range(2):
        order = np.random.default_rng([3, epoch]).permutation(6)
        got = np.concatenate(batches[epoch * steps : (epoch + 1) * steps])
        want = np.stack(
            [
                np.asarray(
                    augment_patch(patches[i], [3 * 1_000_003 + epoch, i], size=16, augmentation=aug)
                )
                for i in order
            ]
        ).astype(int)
        assert np.abs(got - want).max() <= 1


def test_a_users_dataset_is_augmented_by_batch_as_patch_by_patch() -> None:
    from cervixwsi.models._data import dataset_pipeline

    patches = np.stack([he_patch(s, 20) for s in range(5)])
    labels = np.array([0, 1, 0, 1, 1])
    aug = Augmentation.stain()
    fixed = tf.data.Dataset.from_tensor_slices((patches, labels))
    ragged = tf.data.Dataset.from_generator(  # unknown patch size: patch by patch
        lambda: iter(zip(patches, labels, strict=True)),
        output_signature=(
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([], tf.int64),
        ),
    )
    out = [
        [
            (x.numpy().astype(int), y.numpy())
            for x, y in dataset_pipeline(d, batch_size=2, size=16, augmentation=aug, seed=4)
        ]
        for d in (fixed, ragged)
    ]
    assert [x.shape for x, _ in out[0]] == [(2, 16, 16, 3), (2, 16, 16, 3), (1, 16, 16, 3)]
    for (xa, ya), (xb, yb) in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(ya, yb)
        assert ya.dtype == np.int32 and np.abs(xa - xb).max() <= 1


def test_hue_turns_the_way_hsv_does_and_keeps_the_luma() -> None:
    # A third of a turn takes red towards green in HSV; the YIQ turn goes the same way
    # round (not exactly to green: YIQ's chroma plane is not HSV's hexagon), and a
    # saturation factor of 1 with hue 0 leaves the patch as it was.
    from cervixwsi.models._colour import _ALPHA, _CONTRAST, _HUE, _SAT, _jitter

    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    params = np.zeros((1, 11), np.float32)
    params[0, _ALPHA : _ALPHA + 3] = 1.0  # HED off
    params[0, _CONTRAST] = params[0, _SAT] = 1.0  # contrast and saturation factors 1
    aug = Augmentation(hue=0.5)
    same = np.asarray(_jitter(red, params, aug))[0, 0, 0]
    np.testing.assert_allclose(same, [200 / 255, 0, 0], atol=1e-5)
    params[0, _HUE] = 1 / 6
    turned = np.asarray(_jitter(red, params, aug))[0, 0, 0]
    assert turned[1] > turned[2]  # towards green, not blue
    luma = np.array([0.299, 0.587, 0.114])
    assert abs(luma @ turned - luma @ same) < 1e-5  # before the final clip to uint8
