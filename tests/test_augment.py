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


def test_saturation_scales_saturation_within_its_range() -> None:
    image = he_patch(1)
    hsv = tf.image.rgb_to_hsv(image.astype(np.float32) / 255).numpy()
    ratios = []
    for s in range(30):
        out = run(image, (4, s), saturation=0.3)
        out_hsv = tf.image.rgb_to_hsv(out.astype(np.float32) / 255).numpy()
        keep = hsv[..., 1] > 0.2
        ratios.append(float(np.median(out_hsv[..., 1][keep] / hsv[..., 1][keep])))
        np.testing.assert_allclose(out_hsv[..., 0], hsv[..., 0], atol=0.02)  # hue kept
    assert 0.69 <= min(ratios) < 0.85 and 1.15 < max(ratios) <= 1.31


def test_hue_shifts_are_bounded_by_hue() -> None:
    image = he_patch(2)
    hsv = tf.image.rgb_to_hsv(image.astype(np.float32) / 255).numpy()
    shifts = []
    for s in range(30):
        out = run(image, (5, s), hue=0.05)
        out_hsv = tf.image.rgb_to_hsv(out.astype(np.float32) / 255).numpy()
        keep = hsv[..., 1] > 0.2
        d = (out_hsv[..., 0] - hsv[..., 0] + 0.5) % 1.0 - 0.5  # signed, in turns
        shifts.append(float(np.median(d[keep])))
    assert max(abs(v) for v in shifts) <= 0.05 + 0.01
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
