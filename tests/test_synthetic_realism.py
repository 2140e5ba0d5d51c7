"""Synthetic slides made of cells: atlases, the difficulty dial, mimics, structure patches."""

from __future__ import annotations

import itertools
import pathlib

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from skimage.color import rgb2hed

from cervixwsi.errors import ParameterError
from cervixwsi.synthetic import (
    STRUCTURES,
    SyntheticSlideSpec,
    make_cohort,
    make_layout,
    render_region,
    structure_patch,
)
from cervixwsi.synthetic._atlas import (
    ATLAS_KINDS,
    MIMIC,
    PAD,
    TUMOR_EASY,
    atlas,
    atlas_size,
    tumor_params,
)
from cervixwsi.synthetic._layout import F, SlideLayout
from cervixwsi.synthetic._mimics import CRUSH_MAX_UM

# --- the spec and the cohort -------------------------------------------------------------


def test_difficulty_defaults_to_one_half_and_is_validated() -> None:
    assert SyntheticSlideSpec().difficulty == 0.5
    assert SyntheticSlideSpec(difficulty=np.float32(0.25)).difficulty == 0.25
    for bad in (-0.1, 1.5, float("nan"), "hard", True):
        with pytest.raises(ParameterError, match=r"SyntheticSlideSpec\.difficulty"):
            SyntheticSlideSpec(difficulty=bad)  # type: ignore[arg-type]


def test_make_cohort_gives_every_slide_the_difficulty(tmp_path: pathlib.Path) -> None:
    cohort = make_cohort(tmp_path, 1, 1, size=(256, 256), progress=False, difficulty=0.9)
    text = [r.path.read_bytes() for r in cohort.rows]
    assert all(b"'difficulty': 0.9" in t for t in text)
    with pytest.raises(ParameterError, match=r"make_cohort\.difficulty"):
        make_cohort(tmp_path / "x", 1, 0, size=(256, 256), progress=False, difficulty=2.0)
    with pytest.raises(ParameterError, match="once"):
        make_cohort(
            tmp_path / "y",
            1,
            0,
            size=(256, 256),
            progress=False,
            difficulty=0.2,
            spec_options={"difficulty": 0.3},
        )


# --- ground truth: a tumor slide always shows tumor, inside tissue -------------------------


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**40),
    side=st.integers(256, 1500),
    mpp=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    downsample=st.sampled_from([8, 16, 32]),
    fraction=st.floats(0.05, 0.9),
    n_nests=st.sampled_from([None, 0, 1, 5]),
    large=st.integers(0, 2),
    pen=st.booleans(),
    difficulty=st.floats(0.0, 1.0),
)
# tissue of 4 mask px: the smoothed signed distance once erased it (no tissue at all)
@example(
    seed=0,
    side=256,
    mpp=0.25,
    downsample=32,
    fraction=0.0625,
    n_nests=None,
    large=0,
    pen=False,
    difficulty=0.0,
)
def test_a_tumor_slide_always_has_tumor_inside_its_tissue(
    seed: int,
    side: int,
    mpp: float,
    downsample: int,
    fraction: float,
    n_nests: int | None,
    large: int,
    pen: bool,
    difficulty: float,
) -> None:
    spec = SyntheticSlideSpec(
        width=side,
        height=side,
        mpp=mpp,
        mask_downsample=downsample,
        tissue_fraction=fraction,
        n_nests=n_nests,
        large_nests=large,
        artifacts=("pen",) if pen else (),
        difficulty=difficulty,
        seed=seed,
    )
    layout = make_layout(spec)
    tumor, tissue = layout.tumor_mask.array, layout.tissue_mask.array
    assert tissue.any() or pen  # only ink can cover all the tissue of a tiny slide
    assert (tumor.any() and layout.n_lesions >= 1) or not tissue.any()
    assert not (tumor & ~tissue).any()
    normal = make_layout(spec.replace(tumor=False))
    assert not normal.tumor_mask.array.any() and normal.n_lesions == 0


@pytest.mark.parametrize("seed", range(6))
def test_a_tumor_slide_has_a_patch_that_is_mostly_tumor(seed: int) -> None:
    for difficulty in (0.0, 1.0):
        spec = SyntheticSlideSpec(width=3072, height=3072, seed=seed, difficulty=difficulty)
        tumor = make_layout(spec).tumor_mask.array  # 16 level-0 px per mask px
        blocks = tumor.reshape(12, 16, 12, 16).mean(axis=(1, 3))  # 256 x 256 patches
        assert blocks.max() >= 0.5


# --- the dial ---------------------------------------------------------------------------


def test_tumor_cells_move_from_textbook_carcinoma_to_the_mimic() -> None:
    easy, hard = tumor_params(0.0), tumor_params(1.0)
    assert easy == TUMOR_EASY
    assert 10.0 <= 2 * easy.radius <= 25.0 and easy.nucleolus > 0.5 and easy.mitosis > 0.02
    # difficulty 1: nuclei 5-20 % larger than the mimic's, rare nucleoli
    assert 1.05 < hard.radius / MIMIC.radius < 1.2
    assert hard.nucleolus < 0.15 and hard.mitosis < 0.01
    radii = [tumor_params(d).radius for d in np.linspace(0.0, 1.0, 5)]
    assert all(a > b for a, b in itertools.pairwise(radii))


def _hema(image: np.ndarray) -> np.ndarray:
    return np.asarray(rgb2hed(image)[..., 0])


def test_at_difficulty_one_a_tumor_patch_looks_like_a_mimic_patch() -> None:
    def quantiles(kind: str, difficulty: float) -> np.ndarray:
        h = _hema(structure_patch(kind, size=512, difficulty=difficulty, seed=2))
        return np.percentile(h, [50, 75, 90, 99])

    mimic = quantiles("mimic", 0.5)
    gap = [float(np.abs(quantiles("tumor", d) / mimic - 1.0).max()) for d in (0.0, 0.5, 1.0)]
    assert gap[2] < 0.1 < gap[1] < gap[0] and gap[0] > 0.3


def test_mimics_grow_with_difficulty_and_are_not_tumor() -> None:
    base = SyntheticSlideSpec(width=8192, height=8192, seed=5, n_nests=20)
    area = []
    for difficulty in (0.0, 1.0):
        layout = make_layout(base.replace(difficulty=difficulty))
        mimic = (layout.fields[..., F.MIMIC] > 0.5) & layout.tissue_mask.array
        area.append(mimic.mean())
        # the truth is the tumor field only
        assert np.array_equal(
            layout.tumor_mask.array,
            (layout.fields[..., F.TUMOR] > 0.5) & layout.tissue_mask.array,
        )
    assert area[1] > 5 * area[0] and area[1] > 0.05


def test_harder_slides_have_smaller_nests_and_fewer_pearls() -> None:
    base = SyntheticSlideSpec(width=8192, height=8192, seed=8, n_nests=40, nest_scatter=1.0)
    easy, hard = (make_layout(base.replace(difficulty=d)) for d in (0.0, 1.0))
    assert hard.tumor_mask.array.sum() < easy.tumor_mask.array.sum()
    assert len(hard.pearls) < len(easy.pearls)


# --- atlases and structure patches ------------------------------------------------------


@pytest.mark.parametrize("kind", ATLAS_KINDS)
def test_atlases_are_periodic_and_cached(kind: str) -> None:
    arr = atlas(kind, 1.0, 0.5, 1)
    size = atlas_size(1.0)
    assert arr.shape == (size + PAD, size + PAD, 2) and arr.dtype == np.float32
    assert not arr.flags.writeable
    assert np.array_equal(arr[:PAD], arr[size : size + PAD])
    assert np.array_equal(arr[:, :PAD], arr[:, size : size + PAD])
    assert atlas(kind, 1.0, 0.5, 1) is arr
    assert float(arr[..., 0].max()) > 0.5  # nuclei (hematoxylin) in every kind


@pytest.mark.parametrize("kind", STRUCTURES)
def test_structure_patches_are_tissue_and_deterministic(kind: str) -> None:
    patch = structure_patch(kind, size=128, mpp=0.5, seed=3)
    assert patch.shape == (128, 128, 3) and patch.dtype == np.uint8
    assert np.array_equal(patch, structure_patch(kind, size=128, mpp=0.5, seed=3))
    assert patch.mean() < 235  # stained, not glass


def test_structure_patch_rejects_bad_arguments() -> None:
    with pytest.raises(ParameterError, match=r"structure_patch\.kind"):
        structure_patch("liver")
    with pytest.raises(ParameterError, match=r"structure_patch\.size"):
        structure_patch("tumor", size=10)
    with pytest.raises(ParameterError, match=r"structure_patch\.difficulty"):
        structure_patch("tumor", difficulty=3.0)


def test_tumor_has_larger_darker_nuclei_than_normal_epithelium() -> None:
    tumor = _hema(structure_patch("tumor", size=512, difficulty=0.0))
    for kind in ("intermediate", "superficial", "stroma"):
        assert tumor.mean() > 1.5 * _hema(structure_patch(kind, size=512)).mean()


def test_slides_have_glands_and_their_pixels_agree_across_regions() -> None:
    layout = make_layout(SyntheticSlideSpec(width=12000, height=12000, seed=1, tumor=False))
    assert len(layout.glands) >= 1
    x, y = (int(v) for v in layout.glands[0, :2])
    whole = render_region(layout, x - 150, y - 150, 300, 300)
    left = render_region(layout, x - 150, y - 150, 137, 300)
    assert np.array_equal(whole[:, :137], left)
    assert np.ptp(whole) > 100


def test_dust_on_bare_glass_renders() -> None:
    # Regression: a region with dust but no tissue and no other artifact failed to render.
    spec = SyntheticSlideSpec(width=4096, height=4096, seed=3, artifacts=("dust",), mpp=1.0)
    layout = make_layout(spec)
    tissue = layout.tissue_mask.array
    ds = spec.mask_downsample
    specks = 0
    for y in range(0, 4096, 256):
        for x in range(0, 4096, 256):
            if tissue[y // ds : (y + 256) // ds, x // ds : (x + 256) // ds].any():
                continue
            tile = render_region(layout, x, y, 256, 256)
            assert tile.shape == (256, 256, 3)
            specks += int((tile.astype(int).sum(2) < 3 * 200).any())
    assert specks > 0  # some dust lies on bare glass


# --- central necrosis, tangentially cut basal epithelium, crushed edges ----------------


def _mimic_layouts(tumor: bool, difficulty: float) -> list[SlideLayout]:
    return [
        make_layout(
            SyntheticSlideSpec(
                width=8192, height=8192, mpp=0.5, seed=seed, tumor=tumor, difficulty=difficulty
            )
        )
        for seed in (0, 1, 2)
    ]


def test_large_nests_get_central_necrosis_inside_the_tumor_mask_only() -> None:
    area = {}
    for difficulty in (0.0, 1.0):
        area[difficulty] = 0
        for layout in _mimic_layouts(True, difficulty):
            necrosis = layout.fields[..., F.NECROSIS] > 0.5
            tumor = layout.tumor_mask.array
            assert not (necrosis & ~tumor).any()
            # a rim of viable carcinoma: necrosis lies at least 40 µm inside the nest
            um = layout.spec.mask_downsample * layout.spec.mpp
            inside_um = cv2.distanceTransform(tumor.astype(np.uint8), cv2.DIST_L2, 5) * um
            assert (inside_um[necrosis] >= 40.0 - 1.5 * um).all()
            area[difficulty] += int(necrosis.sum())
    assert area[0.0] > 2 * area[1.0] > 0  # commoner (and the nests larger) when easier
    for layout in _mimic_layouts(False, 0.0):
        assert not (layout.fields[..., F.NECROSIS] > 0.0).any()


def test_necrosis_is_eosinophilic_debris_with_few_nuclei() -> None:
    layout = _mimic_layouts(True, 0.0)[1]
    d = layout.spec.mask_downsample
    field = layout.fields[..., F.NECROSIS]
    rows, cols = np.nonzero(field > 0.5)
    y, x = int(np.median(rows)) * d, int(np.median(cols)) * d
    image = render_region(layout, x - 400, y - 400, 800, 800)
    hed = rgb2hed(image)
    # classify the pixels by the mask pixel they lie in, away from its edges
    idx = (np.arange(800) + np.array([[y - 400], [x - 400]])) // d
    nec = field[idx[0]][:, idx[1]] > 0.99
    viable = (layout.fields[..., F.TUMOR] > 0.99)[idx[0]][:, idx[1]] & ~(
        field[idx[0]][:, idx[1]] > 0.01
    )
    assert nec.sum() > 20_000 and viable.sum() > 20_000
    nuclear = hed[..., 0] > np.percentile(hed[..., 0][viable], 60)
    assert nuclear[nec].mean() < 0.4 * nuclear[viable].mean()  # few nuclei, dust only
    assert hed[..., 1][nec].mean() > hed[..., 1][viable].mean()  # eosinophilic
    assert nuclear[nec].mean() > 0.005  # karyorrhectic dust


def test_tangential_basal_islands_and_crushed_edges_are_not_tumor_and_grow_harder() -> None:
    islands, crush = {}, {}
    for difficulty in (0.0, 1.0):
        islands[difficulty] = crush[difficulty] = 0
        for tumor in (True, False):
            for layout in _mimic_layouts(tumor, difficulty):
                f, truth = layout.fields, layout.tumor_mask.array
                basal = f[..., F.BASALOID] > 0.5
                band = np.abs(f[..., F.CRUSH]) > 0.5
                assert not (basal & truth).any() and not (band & truth).any()
                # islands lie in the stroma under the epithelium, bands along the border
                um = layout.spec.mask_downsample * layout.spec.mpp
                epithelium = layout.epithelium_mask.array
                to_epithelium_um = (
                    cv2.distanceTransform((~epithelium).astype(np.uint8), cv2.DIST_L2, 5) * um
                )
                assert not (basal & epithelium).any()
                assert (to_epithelium_um[basal] < 500.0).all()
                sdf_um = f[..., F.SDF] * layout.spec.mpp
                assert (sdf_um[band] <= CRUSH_MAX_UM + um).all()
                assert (sdf_um[band] > -um).all()
                islands[difficulty] += cv2.connectedComponents(basal.astype(np.uint8))[0] - 1
                crush[difficulty] += int(band.sum())
    assert islands[1.0] > 2 * islands[0.0] and islands[0.0] > 0
    assert crush[1.0] > 3 * crush[0.0] > 0


@pytest.mark.parametrize(("difficulty", "channel"), [(0.0, F.NECROSIS), (1.0, F.CRUSH)])
def test_slides_with_necrosis_and_crush_render_the_same_in_pieces(
    difficulty: float, channel: int
) -> None:
    spec = SyntheticSlideSpec(width=8192, height=8192, mpp=0.5, seed=0, difficulty=difficulty)
    layout = make_layout(spec)
    d = spec.mask_downsample
    rows, cols = np.nonzero(np.abs(layout.fields[..., channel]) > 0.5)
    y, x = int(rows[len(rows) // 2]) * d, int(cols[len(cols) // 2]) * d
    whole = render_region(layout, x - 150, y - 150, 300, 300)
    left = render_region(layout, x - 150, y - 150, 137, 300)
    right = render_region(make_layout(spec), x - 13, y - 150, 163, 300)  # same seed, same pixels
    assert np.array_equal(whole, np.hstack([left, right]))


@pytest.mark.parametrize("kind", ["crush", "cautery"])
def test_crushed_and_cauterised_patches_have_glass_above_a_dark_band(kind: str) -> None:
    patch = structure_patch(kind, size=256, seed=2).astype(float)
    stroma = structure_patch("stroma", size=256, seed=2).astype(float)
    assert patch[:16].mean() > 225  # the glass above the border
    hema = rgb2hed(patch[40:150].astype(np.uint8))[..., 0]
    assert hema.mean() > 1.3 * rgb2hed(stroma[40:150].astype(np.uint8))[..., 0].mean()
