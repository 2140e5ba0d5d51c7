"""Tests of cervixwsi.stain: colour spaces, Macenko, Reinhard, the wrapper predictor."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import uniform_filter

from cervixwsi.errors import (
    CervixWSIError,
    LevelError,
    NotFittedError,
    ParameterError,
    ResultFileError,
    StainError,
)
from cervixwsi.geometry import Raster
from cervixwsi.slide import ArraySlide
from cervixwsi.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    StainNormalizedPredictor,
    StainNormalizer,
    lab_to_rgb,
    normalize_thumbnail,
    od_to_rgb,
    rgb_to_lab,
    rgb_to_od,
)
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region

# The synthetic generator's hematoxylin and eosin OD vectors, and a second, bluer pair.
H_SYN = np.array([0.5626, 0.7201, 0.4062])
E_SYN = np.array([0.2159, 0.8012, 0.5581])
H_ALT = np.array([0.65, 0.70, 0.29])
E_ALT = np.array([0.27, 0.87, 0.41])

METHODS = [MacenkoNormalizer, ReinhardNormalizer]


def angle(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(min(1.0, cos)))


def beer_lambert(
    h: npt.ArrayLike, e: npt.ArrayLike, shape: tuple[int, int] = (96, 96), seed: int = 0
) -> npt.NDArray[np.uint8]:
    """An image made from stain amounts uniform in [0, 1.5] with OD vectors ``h``, ``e``."""
    hv = np.asarray(h, float) / np.linalg.norm(h)
    ev = np.asarray(e, float) / np.linalg.norm(e)
    c = np.random.default_rng(seed).uniform(0.0, 1.5, (*shape, 2))
    od = c[..., :1] * hv + c[..., 1:] * ev
    return np.clip(np.round(256 * np.exp(-od) - 1), 0, 255).astype(np.uint8)


def spec(seed: int, variation: float) -> SyntheticSlideSpec:
    return SyntheticSlideSpec(width=2048, height=2048, seed=seed, stain_variation=variation)


def tissue_window(s: SyntheticSlideSpec, side: int) -> tuple[int, int]:
    """Level-0 corner of the ``side``-pixel window with the most tissue."""
    mask = make_layout(s).tissue_mask
    k = max(1, int(side / mask.downsample))
    frac = uniform_filter(mask.array.astype(float), k)
    r, c = np.unravel_index(int(np.argmax(frac)), frac.shape)
    d = mask.downsample
    return int(max(0, (c - k // 2) * d)), int(max(0, (r - k // 2) * d))


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Any]:
    """A clean target patch, and one patch of another slide, stain-shifted and clean."""
    target_spec = spec(1, 0.0)
    tx, ty = tissue_window(target_spec, 320)
    shifted_spec, clean_spec = spec(2, 0.5), spec(2, 0.0)
    x, y = tissue_window(shifted_spec, 320)
    return {
        "target": render_region(target_spec, tx, ty, 320, 320),
        "shifted": render_region(shifted_spec, x, y, 320, 320),
        "clean": render_region(clean_spec, x, y, 320, 320),
        "shifted_spec": shifted_spec,
        "xy": (x, y),
    }


@pytest.fixture(scope="module")
def real_tile() -> npt.NDArray[np.uint8]:
    path = Path(__file__).parent / "data" / "tiles" / "tcga-lung-rgb.png"
    return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:256, :256])


def tissue_hist(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    px = img[(img < 220).all(axis=-1)]
    return np.concatenate(
        [np.histogram(px[:, c], bins=32, range=(0, 256))[0] / len(px) for c in range(3)]
    )


def hist_distance(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(tissue_hist(a) - tissue_hist(b)).sum())


# ------------------------------------------------------------------------ colour spaces


def test_od_round_trips_every_uint8_value() -> None:
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(od_to_rgb(rgb_to_od(values)), values)
    assert rgb_to_od(np.uint8(255)) == 0.0


def test_lab_matches_scikit_image(rng: np.random.Generator) -> None:
    from skimage.color import lab2rgb, rgb2lab

    rgb = rng.integers(0, 256, (3, 17, 11, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_lab(rgb), rgb2lab(rgb), atol=2e-3)
    np.testing.assert_array_equal(lab_to_rgb(rgb_to_lab(rgb)), rgb)
    shifted = rgb2lab(rgb) * [1.1, 1.3, 0.7] + [4.0, -5.0, 6.0]  # some out of gamut
    expected = np.round(np.clip(lab2rgb(shifted), 0, 1) * 255)
    assert np.abs(lab_to_rgb(shifted).astype(int) - expected).max() <= 1


# ---------------------------------------------------------------------------- Macenko


@pytest.mark.parametrize(("h", "e"), [(H_SYN, E_SYN), (H_ALT, E_ALT)])
@pytest.mark.parametrize("seed", [0, 1])
def test_macenko_recovers_known_stain_vectors(
    h: npt.NDArray[np.float64], e: npt.NDArray[np.float64], seed: int
) -> None:
    norm = MacenkoNormalizer().fit(beer_lambert(h, e, seed=seed))
    assert angle(norm.stain_vectors[0], h) < 5.0
    assert angle(norm.stain_vectors[1], e) < 5.0
    np.testing.assert_allclose(np.linalg.norm(norm.stain_vectors, axis=1), 1.0)


def test_macenko_maps_a_stain_shifted_image_back() -> None:
    target = beer_lambert(H_SYN, E_SYN)
    shifted = beer_lambert(H_ALT, E_ALT * [1.0, 0.9, 1.2])  # same amounts, other stains
    out = MacenkoNormalizer().fit(target).transform(shifted)
    before = np.abs(shifted.astype(float) - target).mean()
    after = np.abs(out.astype(float) - target).mean()
    assert after < before / 3


def test_macenko_keeping_amounts_swaps_only_the_stain_vectors() -> None:
    # The same amounts drawn with other stains, and twice as much hematoxylin: with
    # amounts="keep" the result is those amounts (doubled H included) drawn with the
    # target's stains, computed here directly by Beer-Lambert; "match" rescales them.
    ha, ea = (np.asarray(v, float) / np.linalg.norm(v) for v in (H_ALT, E_ALT))
    c = np.random.default_rng(3).uniform(0.0, 1.2, (96, 96, 2))
    c[..., 0] *= 2.0
    shifted = np.round(256 * np.exp(-(c[..., :1] * ha + c[..., 1:] * ea)) - 1)
    shifted = np.clip(shifted, 0, 255).astype(np.uint8)
    target = beer_lambert(H_SYN, E_SYN)
    keep = MacenkoNormalizer(amounts="keep").fit(target)
    expected = 256 * np.exp(
        -(c[..., :1] * keep.stain_vectors[0] + c[..., 1:] * keep.stain_vectors[1])
    )
    out = keep.transform(shifted).astype(float)
    assert np.abs(out - np.clip(expected - 1, 0, 255)).mean() < 4.0
    matched = MacenkoNormalizer().fit(target).transform(shifted).astype(float)
    assert matched.mean() > out.mean() + 10  # "match" undoes the doubled hematoxylin
    assert StainNormalizer.from_dict(keep.to_dict()) == keep


def test_macenko_fits_real_h_and_e(real_tile: npt.NDArray[np.uint8]) -> None:
    norm = MacenkoNormalizer().fit(real_tile)
    assert angle(norm.stain_vectors[0], [0.65, 0.70, 0.29]) < 15  # hematoxylin-like
    assert 15 < angle(*norm.stain_vectors) < 60
    assert (norm.max_concentrations > 0.3).all()


def test_glass_stays_glass() -> None:
    norm = MacenkoNormalizer().fit(beer_lambert(H_SYN, E_SYN))
    image = beer_lambert(H_ALT, E_ALT)
    image[:20] = 255
    out = norm.transform(image)
    assert (out[:20] == 255).all()


def test_macenko_measures_density_against_the_glass() -> None:
    norm = MacenkoNormalizer().fit(beer_lambert(H_SYN, E_SYN))
    image = beer_lambert(H_SYN, E_SYN)
    image[:30] = (226, 238, 232)  # a scanner's greenish glass
    out = norm.transform(image)
    assert (out[:30] == 255).all()  # tinted glass has no stain: white
    assert norm.for_image(image).source is not None
    np.testing.assert_array_equal(norm.for_image(image).source["background"], [226, 238, 232])


# --------------------------------------------------------------------------- Reinhard


def test_reinhard_output_has_the_targets_lab_statistics(synthetic: dict[str, Any]) -> None:
    norm = ReinhardNormalizer().fit(synthetic["target"])
    source = synthetic["shifted"]
    out = norm.transform(source)
    keep = (source < 220).all(axis=-1)  # the source's tissue pixels
    lab = rgb_to_lab(out)[keep].astype(np.float64)
    np.testing.assert_allclose(lab.mean(axis=0), norm.means, atol=1.5)
    np.testing.assert_allclose(lab.std(axis=0), norm.stds, rtol=0.1, atol=0.5)
    before = rgb_to_lab(source)[keep].mean(axis=0)
    assert np.abs(before - norm.means).max() > 3  # it was shifted to begin with


def test_reinhard_statistics_are_of_tissue_only() -> None:
    tissue = beer_lambert(H_SYN, E_SYN, (40, 40))
    image = np.full((80, 40, 3), 245, np.uint8)
    image[:40] = tissue
    a, b = ReinhardNormalizer().fit(tissue), ReinhardNormalizer().fit(image)
    np.testing.assert_allclose(a.means, b.means, atol=1e-6)


# ------------------------------------------------------- normalization of shifted slides


@pytest.mark.parametrize("method", METHODS)
def test_normalizing_a_stain_shifted_patch_brings_its_colours_to_the_target(
    method: type[StainNormalizer], synthetic: dict[str, Any]
) -> None:
    norm = method().fit(synthetic["target"])
    shifted = synthetic["shifted"]
    out = norm.transform(shifted)
    assert hist_distance(out, synthetic["target"]) < 0.7 * hist_distance(
        shifted, synthetic["target"]
    )
    # ... and closer to the same tissue stained without the shift
    assert hist_distance(out, synthetic["clean"]) < hist_distance(shifted, synthetic["clean"])


@pytest.mark.parametrize("method", METHODS)
def test_per_slide_normalizer_is_consistent_across_patches(
    method: type[StainNormalizer], synthetic: dict[str, Any]
) -> None:
    image = synthetic["shifted"]
    slide = ArraySlide([image, image[::4, ::4]], mpp=1.0, name="shifted")
    norm = method().fit(synthetic["target"])
    fixed = norm.for_slide(slide, mpp=4.0)
    assert fixed.source_fixed and not norm.source_fixed and fixed.fitted
    whole = fixed.transform(image)
    patches = np.stack([image[:64, :64], image[100:164, 200:264]])
    out = fixed.transform(patches)
    np.testing.assert_array_equal(out[0], whole[:64, :64])
    np.testing.assert_array_equal(out[1], whole[100:164, 200:264])
    # per-image estimates differ from patch to patch
    per_image = norm.transform(patches)
    assert not np.array_equal(per_image[0], whole[:64, :64])


def test_fit_slide_uses_the_tissue_of_a_low_level(synthetic: dict[str, Any]) -> None:
    image = synthetic["target"]
    canvas = np.full((640, 640, 3), 242, np.uint8)
    canvas[160:480, 160:480] = image
    slide = ArraySlide([canvas, canvas[::2, ::2], canvas[::4, ::4]], mpp=1.0)
    norm = MacenkoNormalizer().fit_slide(slide)  # 4 µm/px: level 2
    direct = MacenkoNormalizer().fit(image[::4, ::4])
    assert angle(norm.stain_vectors[0], direct.stain_vectors[0]) < 3
    assert angle(norm.stain_vectors[1], direct.stain_vectors[1]) < 3
    # an explicit tissue mask: the left half of the tissue only
    tissue = np.zeros((40, 40), bool)
    tissue[10:30, 10:20] = True
    left = MacenkoNormalizer().fit_slide(slide, Raster(tissue, 16, (640, 640)), level=1)
    assert left.fitted
    with pytest.raises(LevelError):
        MacenkoNormalizer().fit_slide(slide, level=5)


def test_normalize_thumbnail_is_the_per_slide_transform(synthetic: dict[str, Any]) -> None:
    image = synthetic["shifted"]
    slide = ArraySlide([image, image[::2, ::2]], mpp=4.0)
    norm = ReinhardNormalizer().fit(synthetic["target"])
    thumb = normalize_thumbnail(slide, norm)  # 8 µm/px: level 1
    assert thumb.shape == (160, 160, 3)
    np.testing.assert_array_equal(thumb, norm.for_slide(slide, level=1).transform(image[::2, ::2]))
    fixed = norm.for_image(image)
    np.testing.assert_array_equal(
        normalize_thumbnail(slide, fixed, level=0), fixed.transform(image)
    )


# ------------------------------------------------------------------------ transform shapes


@settings(max_examples=40)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    channels=st.sampled_from([3, 4]),
    fixed=st.booleans(),
    which=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_transform_keeps_shape_and_dtype(
    lead: list[int], h: int, w: int, channels: int, fixed: bool, which: int, seed: int
) -> None:
    norm: StainNormalizer = METHODS[which]().fit(beer_lambert(H_SYN, E_SYN, (32, 32)))
    if fixed:
        norm = norm.for_image(beer_lambert(H_ALT, E_ALT, (32, 32)))
    image = np.random.default_rng(seed).integers(0, 256, (*lead, h, w, channels), np.uint8)
    out = norm.transform(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    if channels == 4:
        np.testing.assert_array_equal(out[..., 3], image[..., 3])
    if not fixed:  # too small to estimate on: left as it is
        np.testing.assert_array_equal(out, image)


def test_images_of_a_batch_are_normalized_independently() -> None:
    norm = MacenkoNormalizer().fit(beer_lambert(H_SYN, E_SYN, (48, 48)))
    a, b = beer_lambert(H_ALT, E_ALT, (48, 48), 3), beer_lambert(H_SYN, E_SYN, (48, 48), 4)
    glass = np.full_like(a, 240)
    out = norm.transform(np.stack([[a, b], [glass, a]]))
    np.testing.assert_array_equal(out[0, 0], norm.transform(a))
    np.testing.assert_array_equal(out[0, 1], norm.transform(b))
    np.testing.assert_array_equal(out[1, 0], glass)  # no tissue: unchanged
    np.testing.assert_array_equal(out[1, 1], out[0, 0])


# ---------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_source", [False, True])
def test_to_dict_and_save_load_round_trip_exactly(
    method: type[StainNormalizer], with_source: bool, tmp_path: Path, real_tile: Any
) -> None:
    norm = method(beta=0.2).fit(real_tile)
    if with_source:
        norm = norm.for_image(real_tile[::-1] // 2 + 40)
    again = StainNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert type(again) is method and again == norm
    assert again.to_dict() == norm.to_dict()
    path = norm.save(tmp_path / "norm.json")
    loaded = StainNormalizer.load(path)
    assert loaded == norm and method.load(path) == norm
    for key, value in norm.target.items():
        np.testing.assert_array_equal(loaded.target[key], value)  # bit-exact
    batch = np.stack([real_tile, real_tile[::-1]])
    np.testing.assert_array_equal(loaded.transform(batch), norm.transform(batch))
    assert list(tmp_path.iterdir()) == [path]  # nothing else left behind


def test_unfitted_normalizers_round_trip_too() -> None:
    norm = MacenkoNormalizer(alpha=2.0, percentile=98.0)
    again = StainNormalizer.from_dict(norm.to_dict())
    assert again == norm and not again.fitted
    assert "not fitted" in repr(again)


def test_normalizers_pickle(real_tile: Any) -> None:
    norm = MacenkoNormalizer().fit(real_tile).for_image(real_tile)
    assert pickle.loads(pickle.dumps(norm)) == norm


@pytest.mark.parametrize(
    "content",
    [
        "not json {",
        "[1, 2]",
        '{"method": "vahadane", "version": 1, "params": {}, "target": null, "source": null}',
        '{"method": "macenko", "version": 9, "params": {}, "target": null, "source": null}',
        '{"method": "macenko", "version": 1, "params": {"beta": -1}, "target": null, '
        '"source": null}',
        '{"method": "macenko", "version": 1, "params": {}, "target": {"stain_vectors": 1}, '
        '"source": null}',
        '{"method": "reinhard", "version": 1, "params": {}, "target": {"means": [1, 2, 3], '
        '"stds": [1, 2, "x"]}, "source": null}',
        '{"method": "reinhard", "version": 1, "params": {}}',
        '{"method": "reinhard", "version": 1, "params": {"alpha": 1}, "target": null, '
        '"source": null}',
    ],
)
def test_corrupt_files_raise_a_result_file_error(content: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultFileError, match=r"bad\.json"):
        StainNormalizer.load(path)


def test_missing_file_and_wrong_method_raise(tmp_path: Path, real_tile: Any) -> None:
    with pytest.raises(ResultFileError, match="cannot read"):
        StainNormalizer.load(tmp_path / "absent.json")
    path = ReinhardNormalizer().fit(real_tile).save(tmp_path / "r.json")
    with pytest.raises(ResultFileError, match="not a MacenkoNormalizer"):
        MacenkoNormalizer.load(path)


# ------------------------------------------------------------------ the wrapper predictor


class Recorder:
    """A fake predictor that keeps the batches it was given (picklable: module level)."""

    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[npt.NDArray[np.uint8]] = []

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        self.batches.append(batch.copy())
        return batch[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255


class RecorderSpec:
    """A ModelSpec look-alike: ``load()`` gives the predictor."""

    loads = 0

    def load(self) -> Recorder:
        RecorderSpec.loads += 1
        return Recorder()


@pytest.mark.parametrize("method", METHODS)
def test_wrapper_normalizes_before_predicting(method: type[StainNormalizer]) -> None:
    norm = method().fit(beer_lambert(H_SYN, E_SYN, (48, 48)))
    inner = Recorder()
    wrapped = StainNormalizedPredictor(inner, norm)
    batch = np.stack([beer_lambert(H_ALT, E_ALT, (48, 48), s) for s in range(3)])
    probs = wrapped.predict(batch)
    np.testing.assert_array_equal(inner.batches[0], norm.transform(batch))
    assert not np.array_equal(inner.batches[0], batch)
    assert probs.shape == (3,)
    assert wrapped.name == f"recorder+{method.method}-{norm.fingerprint()}"


def test_wrapper_pickles_and_loads_specs_lazily(real_tile: Any) -> None:
    norm = MacenkoNormalizer().fit(real_tile)
    wrapped = pickle.loads(pickle.dumps(StainNormalizedPredictor(Recorder(), norm)))
    assert wrapped.normalizer == norm
    assert wrapped.predict(real_tile[None]).shape == (1,)
    RecorderSpec.loads = 0
    lazy = StainNormalizedPredictor(RecorderSpec(), norm)
    assert RecorderSpec.loads == 0
    lazy.predict(real_tile[None])
    lazy.predict(real_tile[None])
    assert RecorderSpec.loads == 1
    again = pickle.loads(pickle.dumps(lazy))  # the loaded model does not travel
    again.predict(real_tile[None])
    assert RecorderSpec.loads == 2
    assert again.name.startswith("RecorderSpec+macenko-")


def test_wrapper_feeds_a_heatmap_generator(synthetic: dict[str, Any]) -> None:
    from cervixwsi.heatmap import HeatmapGenerator, PatchPredictor
    from cervixwsi.tissue import TissueMasker

    image = synthetic["shifted"]
    slide = ArraySlide(image, mpp=2.0, name="s")
    norm = ReinhardNormalizer().fit(synthetic["target"])
    inner = Recorder()
    wrapped = StainNormalizedPredictor(inner, norm).for_slide(slide, level=0)
    assert isinstance(wrapped, PatchPredictor)
    gen = HeatmapGenerator(
        wrapped, patch_size=64, masker=TissueMasker(level=0), progress=False, workers=1
    )
    heat = gen.generate(slide)
    assert np.isfinite(heat.array).any()
    fixed = norm.for_slide(slide, level=0)
    for batch in inner.batches:  # every patch the model saw was normalized with the slide's
        assert batch.dtype == np.uint8
    whole = fixed.transform(image)
    first = inner.batches[0][0]
    matches = [
        np.array_equal(first, whole[y : y + 64, x : x + 64])
        for y in range(0, 320, 64)
        for x in range(0, 320, 64)
    ]
    assert any(matches)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "image",
    [
        np.full((64, 64, 3), 250, np.uint8),  # white glass
        np.zeros((64, 64, 4), np.uint8),  # transparent
        np.full((5, 5, 3), 120, np.uint8),  # 25 pixels: too few
    ],
    ids=["white", "transparent", "tiny"],
)
def test_fitting_on_an_image_without_tissue_raises(
    method: type[StainNormalizer], image: npt.NDArray[np.uint8]
) -> None:
    with pytest.raises(StainError, match="no tissue"):
        method().fit(image)


@pytest.mark.parametrize("noise", [0.0, 3.0])
def test_macenko_target_without_hematoxylin_raises(noise: float) -> None:
    c = np.random.default_rng(0).uniform(0.0, 1.5, (64, 64, 1))
    pink = 256 * np.exp(-c * E_SYN / np.linalg.norm(E_SYN)) - 1
    pink += np.random.default_rng(1).normal(0.0, noise, pink.shape)
    image = np.clip(np.round(pink), 0, 255).astype(np.uint8)
    with pytest.raises(StainError, match=r"one stain only|no hematoxylin"):
        MacenkoNormalizer().fit(image)
    flat = np.full((32, 32, 3), (200, 100, 150), np.uint8)
    with pytest.raises(StainError, match="one stain only"):
        MacenkoNormalizer().fit(flat)
    # per image in transform: such a patch is left as it is
    norm = MacenkoNormalizer().fit(beer_lambert(H_SYN, E_SYN))
    np.testing.assert_array_equal(norm.transform(image), image)
    with pytest.raises(StainError):
        norm.for_image(image)


@pytest.mark.parametrize("method", METHODS)
def test_transform_before_fit_raises(method: type[StainNormalizer]) -> None:
    image = beer_lambert(H_SYN, E_SYN, (16, 16))
    with pytest.raises(NotFittedError, match="not fitted"):
        method().transform(image)
    with pytest.raises(NotFittedError):
        method().for_image(image)
    with pytest.raises(NotFittedError):
        StainNormalizedPredictor(Recorder(), method())
    assert isinstance(NotFittedError("x"), CervixWSIError)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.int64),
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        [[1, 2, 3]],
    ],
    ids=["float", "int64", "grey", "two-channels", "empty", "list"],
)
def test_wrong_dtype_or_shape_raises(method: type[StainNormalizer], bad: Any) -> None:
    norm = method().fit(beer_lambert(H_SYN, E_SYN, (16, 16)))
    with pytest.raises(ParameterError):
        norm.transform(bad)
    with pytest.raises(ParameterError):
        method().fit(bad)


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        (MacenkoNormalizer, {"beta": 0.0}, "MacenkoNormalizer.beta"),
        (MacenkoNormalizer, {"beta": True}, "MacenkoNormalizer.beta"),
        (MacenkoNormalizer, {"alpha": 50}, "MacenkoNormalizer.alpha"),
        (MacenkoNormalizer, {"percentile": 10}, "MacenkoNormalizer.percentile"),
        (MacenkoNormalizer, {"amounts": "scale"}, "MacenkoNormalizer.amounts"),
        (MacenkoNormalizer, {"min_angle": -1}, "MacenkoNormalizer.min_angle"),
        (ReinhardNormalizer, {"beta": float("nan")}, "ReinhardNormalizer.beta"),
    ],
)
def test_invalid_parameters_are_refused(
    kind: type[StainNormalizer], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ParameterError, match=match):
        kind(**kwargs)


def test_wrapper_and_slide_inputs_are_checked(synthetic: dict[str, Any]) -> None:
    norm = ReinhardNormalizer().fit(synthetic["target"])
    with pytest.raises(ParameterError, match="predict"):
        StainNormalizedPredictor(object(), norm)
    with pytest.raises(ParameterError, match="StainNormalizer"):
        StainNormalizedPredictor(Recorder(), "macenko")  # type: ignore[arg-type]
    wrapped = StainNormalizedPredictor(Recorder(), norm)
    with pytest.raises(ParameterError, match=r"\(N, H, W, 3\)"):
        wrapped.predict(synthetic["target"])
    with pytest.raises(AttributeError):
        _ = wrapped.input_size
    blank = ArraySlide(np.full((256, 256, 3), 245, np.uint8), mpp=4.0, name="blank")
    with pytest.raises(StainError, match="no tissue in slide 'blank' \\(level 0\\)"):
        ReinhardNormalizer().fit_slide(blank)
    with pytest.raises(ParameterError, match="tissue"):
        ReinhardNormalizer().fit_slide(blank, np.ones((4, 4), bool))  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="normalizer"):
        normalize_thumbnail(blank, object())  # type: ignore[arg-type]
