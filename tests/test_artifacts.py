"""Artifacts out of the tissue mask: ArtifactMasker, ArtifactMask, and their composition."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cervixwsi.errors import ParameterError, ResultFileError
from cervixwsi.geometry import Raster
from cervixwsi.slide import ArraySlide
from cervixwsi.synthetic import SyntheticSlide, SyntheticSlideSpec, make_slide
from cervixwsi.tissue import CAUSES, ArtifactMask, ArtifactMasker, TissueMask, TissueMasker

GLASS = (238, 236, 240)
PINK = (200, 120, 180)
PURPLE = (170, 100, 175)
NONE = TissueMasker(artifacts=ArtifactMasker(causes=()))  # the same mask, nothing removed
FULL = TissueMasker(artifacts=ArtifactMasker())

# --- synthetic slides with ground truth ---------------------------------------------------

# 2 x 2 mm at 1 µm/px: the structures of a 40x slide (sizes are in µm), drawn 16 times
# faster; the blur artifact is then a 4 µm Gaussian.
SMALL = {"width": 2048, "height": 2048, "mpp": 1.0, "tissue_fraction": 0.5, "n_nests": 20}
ALL = ("blur", "dust", "fold", "pen")


def _slide(tmp_path: Path, seed: int, stain: float, artifacts: tuple[str, ...]) -> SyntheticSlide:
    spec = SyntheticSlideSpec(
        **SMALL, seed=seed, stain_variation=stain, artifacts=artifacts, mask_downsample=4
    )
    return make_slide(spec, tmp_path / f"s{seed}.tiff", threads=1, annotations=False)


def _retained(made: SyntheticSlide) -> dict[str, float]:
    """Per cause: the part of the artifact's area the plain mask keeps that stays in the mask."""
    from cervixwsi.slide import Slide

    with Slide(made.path) as slide:
        plain = NONE.mask(slide)
        mask = FULL.mask(slide)
    d = made.tissue_mask.downsample
    kept = np.asarray(plain.resample(d).array, bool)
    final = np.asarray(mask.resample(d).array, bool)
    out = {}
    anywhere = np.zeros(kept.shape, bool)
    for name, truth in made.artifact_masks.items():
        on = truth.array & kept
        anywhere |= truth.array
        out[name] = float((final & on).sum() / max(on.sum(), 1))
    clean = kept & ~anywhere
    out["lost"] = float((clean & ~final).sum() / max(clean.sum(), 1))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "stain"), [(1, 0.35), (3, 0.1)])
def test_each_cause_is_found_on_synthetic_slides(tmp_path: Path, seed: int, stain: float) -> None:
    made = _slide(tmp_path, seed, stain, ALL)
    assert sorted(made.artifact_masks) == list(ALL)
    got = _retained(made)
    # the goals: < 5 % of pen, < 20 % of folds and blur left in the mask
    assert got["pen"] < 0.05
    assert got["fold"] < 0.20
    assert got["blur"] < 0.20
    # Dust falls short of its goal (5 %): the smallest specks are no darker than the
    # densest nuclei (benchmarks/bench_artifacts.py measures it); this bound guards
    # the measured level (3-60 % on these slides).
    assert got["dust"] < 0.65
    # the band around pen and folds, and the partly blurred rim around blur (6.0 and
    # 18.0 % on these slides, where the artifacts cover much of the tissue; the same
    # before and after the typical-OD rule of pen_split)
    assert got["lost"] < 0.19


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "stain"), [(1, 0.1), (2, 0.35)])
def test_clean_tissue_is_kept(tmp_path: Path, seed: int, stain: float) -> None:
    made = _slide(tmp_path, seed, stain, ())
    assert made.artifact_masks == {}
    assert _retained(made)["lost"] < 0.02


PINK_OD, PURPLE_OD = np.array([0.15, 0.55, 0.25]), np.array([0.40, 0.55, 0.25])


def _hue_run_with_fold(
    piece: Callable[[np.ndarray], object], thickness: float, seed: int
) -> ArraySlide:
    """Tissue (8 µm/px) whose hue runs from pink (left) to purple (right), as stroma runs
    into epithelium, with a fold (a band of it 1.9 times as thick, rows 170-180) and a
    piece drawn by ``piece`` on a uint8 canvas: purple tissue ``thickness`` times as thick.
    """
    t = np.linspace(0, 1, 320)[None, :, None]
    od = np.broadcast_to((1 - t) * PINK_OD + t * PURPLE_OD, (240, 320, 3)).copy()
    layers = np.zeros((240, 320), np.float32)
    cv2.rectangle(layers, (20, 20), (300, 220), 1.0, -1)
    cv2.line(layers, (40, 180), (280, 170), 1.9, 14)  # the fold
    drawn = np.zeros((240, 320), np.uint8)
    piece(drawn)
    layers[drawn > 0] = thickness
    od[drawn > 0] = 0.2 * PINK_OD + 0.8 * PURPLE_OD  # a hue of the tissue's own range
    rgb = (np.asarray(GLASS, float) + 1) * np.exp(-layers[..., None] * od) - 1
    rgb += np.random.default_rng(seed).integers(-3, 4, rgb.shape)
    return ArraySlide(np.clip(np.round(rgb), 0, 255).astype(np.uint8), mpp=8.0)


def test_a_fold_has_the_hue_of_the_tissue_around_it() -> None:
    # A disc of purple tissue as dense as the fold, in the pinker part, is dense tissue
    # of another kind (a carcinoma nest; the pinker necrosis inside a nest likewise),
    # not a fold.
    slide = _hue_run_with_fold(lambda c: cv2.circle(c, (100, 90), 26, 1, -1), 1.9, seed=0)
    fold = ArtifactMasker(causes=("fold",)).detect(slide).cause("fold")
    assert fold[172:178, 60:260].mean() > 0.9
    assert not fold[80:100, 90:110].any()
    # without the hue test (any difference allowed) the nest is taken for a fold
    loose = ArtifactMasker(causes=("fold",), fold_hue_deg=90.0).detect(slide).cause("fold")
    assert loose[80:100, 90:110].all()


@pytest.mark.slow
def test_textbook_carcinoma_and_its_necrosis_are_not_taken_for_folds(tmp_path: Path) -> None:
    # Difficulty 0: large nests, dense and with central necrosis, 1.6 times as dense as
    # the tissue of their colour; before the hue test the fold rule removed 13 % of the
    # tumor of this slide.
    from cervixwsi.slide import Slide

    spec = SyntheticSlideSpec(**SMALL, seed=1, difficulty=0.0, mask_downsample=4)
    made = make_slide(spec, tmp_path / "s.tiff", threads=1, annotations=False)
    with Slide(made.path) as slide:
        art = FULL.mask(slide).artifacts
    assert art is not None
    tumor = np.asarray(made.tumor_mask.resample(art.downsample).array, bool)
    h, w = art.array.shape
    assert tumor[:h, :w].sum() > 100
    assert art.cause("fold")[:h, :w][tumor[:h, :w]].mean() < 0.005


def test_artifact_masks_of_the_layout_match_the_spec() -> None:
    from cervixwsi.synthetic import make_layout

    spec = SyntheticSlideSpec(**SMALL, seed=1, artifacts=ALL, mask_downsample=8)
    layout = make_layout(spec)
    masks = layout.artifact_masks()
    assert sorted(masks) == list(ALL)
    inside = layout.fields[..., 0] > 0
    for name, mask in masks.items():
        assert mask.same_grid(layout.tissue_mask) and mask.dtype == bool
        assert mask.array.any(), name
        if name in ("fold", "blur"):  # drawn only on tissue
            assert not (mask.array & ~inside).any()
    assert not (masks["pen"].array & layout.tissue_mask.array).any()  # ink is not tissue
    assert make_layout(spec.replace(artifacts=())).artifact_masks() == {}


# --- drawn slides -------------------------------------------------------------------------


def _drawn(seed: int, *, pen: tuple[int, int, int] | None = None) -> np.ndarray:
    """Glass with pink and purple tissue (8 µm/px) and, optionally, a pen stroke."""
    rng = np.random.default_rng(seed)
    image = np.empty((240, 320, 3), np.uint8)
    image[:] = GLASS
    for _ in range(5):
        centre = (int(rng.integers(40, 280)), int(rng.integers(40, 200)))
        axes = (int(rng.integers(20, 90)), int(rng.integers(20, 70)))
        colour = PINK if rng.random() < 0.6 else PURPLE
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    if pen is not None:
        y = int(rng.integers(60, 180))
        cv2.line(image, (0, y), (319, y + int(rng.integers(-40, 40))), pen, 12)
    noise = rng.integers(-5, 6, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "ink", [(30, 60, 150), (40, 130, 95), (40, 40, 45), (20, 30, 80), (25, 70, 50)]
)
def test_pen_of_any_colour_is_found_and_the_tissue_kept(ink: tuple[int, int, int]) -> None:
    image = _drawn(4, pen=ink)
    stroke = np.all(np.abs(image.astype(int) - ink) <= 6, axis=2)
    art = ArtifactMasker(causes=("pen",)).detect(ArraySlide(image, mpp=8.0))
    assert art.cause("pen")[stroke].mean() > 0.95
    clean = ArtifactMasker(causes=("pen",)).detect(ArraySlide(_drawn(4), mpp=8.0))
    assert not clean.any.any()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), pen=st.booleans())
def test_removal_never_adds_tissue_and_labels_stay_on_the_grid(seed: int, pen: bool) -> None:
    image = _drawn(seed, pen=(35, 55, 140) if pen else None)
    slide = ArraySlide(image, mpp=8.0)
    plain = NONE.mask(slide)
    mask = TissueMasker(artifacts=ArtifactMasker(causes=("pen", "fold"))).mask(slide)
    assert mask.same_grid(plain)
    assert not (mask.array & ~plain.array).any()
    art = mask.artifacts
    assert art is not None and art.same_grid(mask)
    assert not (mask.array & art.any).any()  # what was found is out of the mask
    assert set(np.unique(art.array)) <= set(range(len(CAUSES) + 1))


@settings(max_examples=25, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=48, max_size=48),
    factor=st.sampled_from([2, 3, 4]),
)
def test_labels_map_up_the_pyramid_consistently(labels: list[int], factor: int) -> None:
    art = ArtifactMask(np.array(labels, np.uint8).reshape(6, 8), 4, (32, 24), mpp=0.5)
    coarse = art.at_downsample(4 * factor)
    assert coarse.slide_dimensions == art.slide_dimensions
    # each coarse pixel holds the label under its centre
    xc, yc = coarse.pixel_centers()
    gx, gy = np.meshgrid(xc, yc)
    expected = art.values_at(gx, gy)
    np.testing.assert_array_equal(coarse.array, expected)
    for name in CAUSES:
        np.testing.assert_array_equal(
            coarse.cause(name), art.with_array(art.cause(name)).resample(4 * factor).array
        )
    fractions = art.fractions()
    assert sum(fractions.values()) == pytest.approx(float((art.array > 0).mean()))
    # a tissue mask carries its labels to other downsamples on its own grid
    tissue = TissueMask(art.array == 0, 4, (32, 24), mpp=0.5, artifacts=art)
    moved = tissue.at_downsample(4 * factor, method="nearest")
    assert moved.artifacts is not None and moved.artifacts.same_grid(moved)


def test_all_white_and_empty_slides_give_no_artifacts() -> None:
    white = ArraySlide(np.full((300, 400, 3), 255, np.uint8), mpp=1.0)
    assert not ArtifactMasker().detect(white).any.any()
    glass = ArraySlide(np.full((300, 400, 3), GLASS, np.uint8), mpp=1.0)
    mask = FULL.mask(glass)
    assert mask.artifacts is not None and not mask.artifacts.any.any()
    assert not mask.array.any()


def test_out_of_focus_disc_is_found_with_its_rim() -> None:
    rng = np.random.default_rng(5)
    size = 1024
    image = np.empty((size, size, 3), np.uint8)
    image[:] = GLASS
    image[64:960, 64:960] = PINK
    for x, y in rng.integers(70, 954, (3000, 2)):  # nuclei: fine detail everywhere
        cv2.circle(image, (int(x), int(y)), int(rng.integers(2, 5)), PURPLE, -1)
    image = np.clip(image.astype(int) + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    # out of focus in a disc of radius 200 µm, fading into focus over ~40 µm
    weight = np.clip((240.0 - np.hypot(xx - 512, yy - 512)) / 80.0, 0, 1)[..., None]
    soft = cv2.GaussianBlur(image, (0, 0), 4.0).astype(float)
    image = (image * (1 - weight) + soft * weight).round().astype(np.uint8)
    art = ArtifactMasker(causes=("blur",), mpp=8.0).detect(ArraySlide(image, mpp=1.0))
    blur = art.cause("blur")
    r = np.hypot(*np.meshgrid(np.arange(128) * 8 + 4 - 512, np.arange(128) * 8 + 4 - 512))
    assert blur[r < 200].mean() > 0.9  # the disc, to where it is half out of focus
    assert blur[(r > 300) & (r < 400)].mean() < 0.05  # the sharp tissue around it


def test_dust_specks_are_found_on_tissue() -> None:
    rng = np.random.default_rng(3)
    image = np.empty((1024, 1024, 3), np.uint8)
    image[:] = GLASS
    image[100:900, 100:900] = PINK
    nuclei = rng.integers(120, 880, (400, 2))
    for x, y in nuclei:
        cv2.circle(image, (int(x), int(y)), 3, PURPLE, -1)
    specks = [(300, 300), (600, 450), (700, 750)]
    for x, y in specks:
        cv2.circle(image, (x, y), 4, (60, 60, 62), -1)
    image = np.clip(image.astype(int) + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)
    slide = ArraySlide(image, mpp=1.0)
    art = ArtifactMasker(causes=("dust",), mpp=8.0).detect(slide)
    dust = art.cause("dust")
    for x, y in specks:
        assert dust[y // 8, x // 8], (x, y)
    assert art.fractions()["dust"] < 0.02


def test_nearly_black_nuclei_are_not_dust_but_darker_specks_are() -> None:
    # Nuclei as dark as dust in every channel (as in real H&E): the slide's own tissue
    # raises the threshold, so they stay tissue; grey specks darker still are dust, and a
    # single black pixel (a grain of chromatin) is not.
    rng = np.random.default_rng(5)
    image = np.empty((1024, 1024, 3), np.uint8)
    image[:] = GLASS
    image[100:900, 100:900] = PINK
    for x, y in rng.integers(120, 880, (1500, 2)):
        cv2.circle(image, (int(x), int(y)), 3, (45, 30, 60), -1)
    grains = rng.integers(120, 880, (200, 2))
    image[grains[:, 1], grains[:, 0]] = (8, 8, 8)
    specks = [(300, 300), (600, 450), (700, 750)]
    for x, y in specks:
        cv2.circle(image, (x, y), 4, (6, 6, 7), -1)
    image = np.clip(image.astype(int) + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)
    art = ArtifactMasker(causes=("dust",), mpp=8.0).detect(ArraySlide(image, mpp=1.0))
    dust = art.cause("dust")
    for x, y in specks:
        assert dust[y // 8, x // 8], (x, y)
    assert int(dust.sum()) <= 3 * len(specks) * 4  # the specks' cells, not the nuclei


# --- real H&E -----------------------------------------------------------------------------

REAL_CROPS = [
    ("tissue-level0-4302-10273-4814-10785.png", 0.25),
    ("tissue-level0-7352-11762-7864-12274.png", 0.25),
    ("tissue-level2-1784-6289-5880-10386.png", 2.0),
    ("high-nuclei-score-level0.png", 0.25),
    ("low-nuclei-score-level0.png", 0.25),
    ("tcga-lung-rgb.png", 0.25),
]


@pytest.mark.parametrize(("name", "mpp"), REAL_CROPS)
def test_real_tissue_crops_keep_their_tissue(real_tiles: Path, name: str, mpp: float) -> None:
    image = cv2.cvtColor(cv2.imread(str(real_tiles / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    slide = ArraySlide(image, mpp=mpp, name=name)
    settings_ = {"mpp": 2.0, "min_tissue_area_um2": 1000.0}
    plain = TissueMasker(**settings_, artifacts=ArtifactMasker(causes=())).mask(slide)
    mask = TissueMasker(**settings_, artifacts=ArtifactMasker(mpp=2.0)).mask(slide)
    assert mask.area_px >= 0.98 * plain.area_px


def test_real_slide_keeps_its_tissue(real_slides: Path) -> None:
    from cervixwsi.slide import Slide

    with Slide(real_slides / "cmu_small_region.svs") as slide:
        plain = NONE.mask(slide)
        mask = FULL.mask(slide)
    assert plain.area_px > 0
    assert mask.area_px >= 0.98 * plain.area_px


# --- composition, files, parameters -------------------------------------------------------


def test_default_masker_is_unchanged_and_artifacts_none() -> None:
    image = _drawn(2, pen=(30, 60, 150))
    slide = ArraySlide(image, mpp=8.0)
    assert TissueMasker().mask(slide).artifacts is None
    np.testing.assert_array_equal(
        TissueMasker().mask(slide).array, TissueMasker(artifacts=None).mask(slide).array
    )


def test_mask_with_artifacts_saves_loads_and_pickles(tmp_path: Path) -> None:
    slide = ArraySlide(_drawn(5, pen=(40, 40, 45)), mpp=8.0)
    mask = FULL.mask(slide)
    assert mask.artifacts is not None and mask.artifacts.cause("pen").any()
    back = TissueMask.load(mask.save(tmp_path / "m.npz"))
    assert back.artifacts is not None
    np.testing.assert_array_equal(back.artifacts.array, mask.artifacts.array)
    np.testing.assert_array_equal(back.array, mask.array)
    copy = pickle.loads(pickle.dumps(mask))
    assert copy.artifacts is not None and copy.artifacts.same_grid(mask)
    # a file without labels (as older versions wrote) loads with none
    plain = TissueMask(mask.array, mask.downsample, mask.slide_dimensions, mpp=mask.mpp)
    assert TissueMask.load(plain.save(tmp_path / "old.npz")).artifacts is None
    # labels of the wrong size make a damaged file
    bad = tmp_path / "bad.npz"
    with np.load(tmp_path / "m.npz") as data:
        fields = {k: data[k] for k in data.files}
    fields["artifacts"] = np.zeros((2, 2), np.uint8)
    np.savez(bad, **fields)
    with pytest.raises(ResultFileError):
        TissueMask.load(bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"causes": ("pen", "coffee")}, "causes"),
        ({"causes": "pen"}, "causes"),
        ({"mpp": 0}, "mpp"),
        ({"blur_mpp": -1.0}, "blur_mpp"),
        ({"fold_factor": 1.0}, "fold_factor"),
        ({"fold_hue_deg": -5.0}, "fold_hue_deg"),
        ({"pen_angle_deg": 0}, "pen_angle_deg"),
        ({"pen_dark_factor": 0.5}, "pen_dark_factor"),
        ({"pen_split": 1.0}, "pen_split"),
        ({"blur_ratio": 1.5}, "blur_ratio"),
        ({"blur_grow_ratio": 0}, "blur_grow_ratio"),
        ({"blur_margin_um": -1}, "blur_margin_um"),
        ({"blur_tile_um": float("nan")}, "blur_tile_um"),
        ({"dust_max_area_um2": -1}, "dust_max_area_um2"),
        ({"dust_factor": 0}, "dust_factor"),
        ({"dust_min_area_um2": -1}, "dust_min_area_um2"),
        ({"dust_background_um": 0}, "dust_background_um"),
        ({"margin_um": True}, "margin_um"),
    ],
)
def test_bad_parameters_raise_parameter_error(kwargs: dict[str, Any], name: str) -> None:
    slide = ArraySlide(np.full((64, 64, 3), 240, np.uint8), mpp=8.0)
    with pytest.raises(ParameterError, match=name):
        ArtifactMasker(**kwargs).detect(slide)


def test_bad_compositions_and_labels() -> None:
    slide = ArraySlide(np.full((64, 64, 3), 240, np.uint8), mpp=8.0)
    with pytest.raises(ParameterError, match=r"TissueMasker\.artifacts"):
        TissueMasker(artifacts="pen").mask(slide)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="ArtifactMask"):
        ArtifactMask(np.full((2, 2), 9), 4, (8, 8))
    with pytest.raises(ParameterError, match=r"ArtifactMask\.cause"):
        ArtifactMask(np.zeros((2, 2)), 4, (8, 8)).cause("coffee")
    other = TissueMask(np.ones((4, 4), bool), 16, (64, 64))
    with pytest.raises(ParameterError, match="tissue mask"):
        ArtifactMasker().detect(slide.__class__(np.full((32, 32, 3), 240, np.uint8)), other)
    with pytest.raises(ParameterError, match="within"):
        ArtifactMask(np.zeros((2, 2)), 4, (8, 8)).fractions(np.ones((3, 3), bool))
    assert ArtifactMask(np.zeros((2, 2)), 4, (8, 8)).fractions(
        Raster(np.zeros((2, 2), bool), 4, (8, 8))
    ) == dict.fromkeys(CAUSES, 0.0)


def test_heatmap_overlay_outlines_each_removed_cause_in_its_colour() -> None:
    from cervixwsi.heatmap import Heatmap, HeatmapInfo
    from cervixwsi.heatmap._overlay import ARTIFACT_COLOURS

    info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
    heatmap = Heatmap(
        np.zeros((8, 8), np.float32),
        256,
        (2048, 2048),
        tissue_mask=np.ones((8, 8), bool),
        info=info,
        mpp=0.5,
    )
    labels = np.zeros((64, 64), np.uint8)
    labels[8:24, 8:24] = ArtifactMask.PEN
    labels[40:56, 40:56] = ArtifactMask.FOLD
    artifacts = ArtifactMask(labels, 32, (2048, 2048))
    thumb = np.full((256, 256, 3), 230, np.uint8)
    kwargs = {
        "max_size": 256,
        "alpha": 0.0,
        "tissue_outline": False,
        "colorbar": False,
        "legend": False,
        "scale_bar": False,
    }
    plain = heatmap.overlay(thumb, **kwargs)
    drawn = heatmap.overlay(thumb, artifacts=artifacts, **kwargs)
    assert (plain == thumb).all()
    for cause, (r0, r1) in (("pen", (32, 96)), ("fold", (160, 224))):
        box = drawn[r0 - 4 : r1 + 4, r0 - 4 : r1 + 4].reshape(-1, 3)
        assert (box == ARTIFACT_COLOURS[cause]).all(axis=1).sum() > 100, cause
    assert not (drawn.reshape(-1, 3) == ARTIFACT_COLOURS["blur"]).all(axis=1).any()


def test_ink_of_the_tissues_own_colour_is_found_by_its_density() -> None:
    # A stain shift can bring the tissue's colours to the ink's: here a stroke of one of
    # the tissue's hues (purple) across the pink part, five times as dense (ink).  The
    # colour rules cannot see the stroke, nor is it a fold (its hue is not that of the
    # tissue around it); its density shows it, and the fold stays a fold.
    slide = _hue_run_with_fold(lambda c: cv2.line(c, (30, 60), (150, 66), 1, 14), 5.0, seed=1)
    art = ArtifactMasker(causes=("pen", "fold")).detect(slide)
    assert art.cause("pen")[60:66, 40:140].mean() > 0.9
    assert art.cause("fold")[172:178, 60:260].mean() > 0.9
    assert not art.cause("pen")[172:178, 60:260].any()


def test_ink_over_half_the_tissue_is_not_taken_for_the_tissue() -> None:
    # A broad stroke of one of the tissue's hues, 3.2 times as dense, over about half of
    # the tissue: the plain median OD is the ink's, and ink only three times as dense as
    # "the tissue" then goes unseen.  The typical OD leaves the dense pieces out first.
    slide = _hue_run_with_fold(lambda c: cv2.rectangle(c, (20, 20), (300, 125), 1, -1), 3.2, 2)
    art = ArtifactMasker(causes=("pen", "fold")).detect(slide)
    assert art.cause("pen")[30:115, 40:280].mean() > 0.95
    assert art.cause("pen")[140:165, 40:280].mean() < 0.05  # the tissue below is kept
    assert not art.cause("pen")[172:178, 60:260].any()  # the fold is not ink
    # with the plain median (no piece is ever left out), most of the ink stays
    plain = ArtifactMasker(causes=("pen", "fold"), pen_split=1e6).detect(slide)
    assert plain.cause("pen")[30:115, 40:280].mean() < 0.5
