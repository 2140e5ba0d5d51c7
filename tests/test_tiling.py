"""Patch grids, sampling and patch stores."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cervixwsi.errors import (
    GeometryError,
    LevelError,
    ParameterError,
    PatchStoreError,
    RegionError,
    SamplingError,
    StoreMismatchError,
)
from cervixwsi.geometry import Box, Raster
from cervixwsi.slide import ArraySlide
from cervixwsi.tiling import (
    PatchCoords,
    PatchGrid,
    PatchSampler,
    PatchStore,
    read_patch,
    read_patches,
)
from cervixwsi.tissue import TissueMask, TissueMasker


def textured(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """An RGB image whose every pixel differs from its neighbours (to catch misplaced reads)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def ellipse_mask(
    shape: tuple[int, int], d: float, dims: tuple[int, int], mpp: float | None = 0.5
) -> TissueMask:
    rows, cols = shape
    a = np.zeros(shape, np.uint8)
    cv2.ellipse(a, (cols // 2, rows // 2), (cols // 3, rows // 3), 0, 0, 360, 1, -1)
    return TissueMask(a.astype(bool), d, dims, mpp=mpp)


# --- PatchCoords ----------------------------------------------------------------------


def test_patch_coords_index_slice_and_mask() -> None:
    c = PatchCoords(
        [0, 10, 20, 30], [5, 5, 5, 5], level=1, size=8, downsample=2.0, slide_dimensions=(64, 64)
    )
    assert len(c) == 4 and c.extent == 16.0
    assert c.labels.tolist() == [-1] * 4 and c.tissue.dtype == np.float32
    assert c[1].x.tolist() == [10] and c[-1].x.tolist() == [30]
    assert c[1:3].x.tolist() == [10, 20]
    assert c[np.array([True, False, False, True])].x.tolist() == [0, 30]
    np.testing.assert_array_equal(c.boxes()[2], [20, 5, 16, 16])
    cx, cy = c.centers()
    assert cx.tolist() == [8, 18, 28, 38] and cy.tolist() == [13] * 4
    with pytest.raises(ValueError, match="read-only"):
        c.x[0] = 3
    with pytest.raises(GeometryError, match="entries"):
        PatchCoords([0, 1], [0], level=0, size=8, downsample=1.0, slide_dimensions=(9, 9))


# --- the grid -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    size=st.sampled_from([16, 64, 100, 256]),
    level_factor=st.sampled_from([1, 2, 4]),
    partial=st.booleans(),
)
def test_grid_tiles_without_overlap_when_stride_equals_size(
    width: int, height: int, size: int, level_factor: int, partial: bool
) -> None:
    levels = [np.zeros((height, width, 3), np.uint8)]
    if level_factor > 1 and min(width, height) >= level_factor:
        levels.append(np.zeros((height // level_factor, width // level_factor, 3), np.uint8))
    level = len(levels) - 1
    slide = ArraySlide(levels)
    grid = PatchGrid(size, level=level, min_tissue=0.0, include_partial=partial)
    extent = size * slide.level_downsamples[level]
    if not partial and (extent > width or extent > height):
        with pytest.raises(GeometryError, match="does not fit"):
            grid.coords(slide)
        return
    coords = grid.coords(slide)
    rows, cols = coords.grid_shape  # type: ignore[misc]
    assert (rows, cols) == (math.ceil(height / extent), math.ceil(width / extent))
    # Neighbours in the grid touch without overlap; grid indices place the patches.
    step = coords.grid_downsample
    assert step == pytest.approx(extent)
    np.testing.assert_array_equal(coords.x, np.floor(coords.cols * extent + 1e-9))
    np.testing.assert_array_equal(coords.y, np.floor(coords.rows * extent + 1e-9))
    assert len(np.unique(coords.rows * cols + coords.cols)) == len(coords)
    if partial:
        assert len(coords) == rows * cols  # covers the whole slide
    else:
        # Whole patches counted in the level's own pixels (no float round-off).
        level_w, level_h = slide.level_dimensions[level]
        whole = (level_h // size) * (level_w // size)
        if width / level_w == height / level_h:
            assert len(coords) == whole
        else:
            # A level of another shape (33 // 2 = 16 columns over 33): its downsample is
            # OpenSlide's mean of the two axes', and a last patch that fits in the level's
            # pixels may reach past the slide's edge at level 0, so it is left out.
            assert (level_h // size - 1) * (level_w // size - 1) <= len(coords) <= whole
        assert (coords.x >= 0).all() and (coords.x + extent <= width).all()
        assert (coords.y >= 0).all() and (coords.y + extent <= height).all()
    if len(coords) and level_factor == 1:
        # Integer extents: the union of the patches has exactly the area of them all.
        covered = np.zeros((height + size, width + size), np.int32)
        for x, y in zip(coords.x, coords.y, strict=True):
            covered[y : y + size, x : x + size] += 1
        assert covered.max() == 1


def test_grid_keeps_patches_by_exact_tissue_fraction() -> None:
    slide = ArraySlide(np.zeros((300, 400, 3), np.uint8), mpp=0.5)
    a = np.zeros((3, 4), bool)
    a[0, 0] = a[1, 1] = a[1, 2] = True
    mask = TissueMask(a, 100, (400, 300))
    coords = PatchGrid(patch_size=50, stride=50, min_tissue=0.5).coords(slide, mask)
    # Tissue pixels of 100 level-0 px each hold 4 whole patches of 50.
    assert len(coords) == 12
    np.testing.assert_allclose(coords.tissue, 1.0)
    shifted = PatchGrid(patch_size=100, stride=50, min_tissue=0.5).coords(slide, mask)
    # Independently: paint the mask at level 0 and count every grid position.
    full = np.kron(a, np.ones((100, 100), bool))
    expected = {
        (x, y)
        for y in range(0, 201, 50)
        for x in range(0, 301, 50)
        if full[y : y + 100, x : x + 100].mean() >= 0.5
    }
    assert set(zip(shifted.x.tolist(), shifted.y.tolist(), strict=True)) == expected
    for x, y, t in zip(shifted.x, shifted.y, shifted.tissue, strict=True):
        assert t == pytest.approx(full[y : y + 100, x : x + 100].mean())
    empty = PatchGrid(64).coords(slide, TissueMask(np.zeros((3, 4), bool), 100, (400, 300)))
    assert len(empty) == 0 and empty.grid_shape == (5, 7)


def test_grid_with_a_mask_at_a_real_svs_downsample() -> None:
    # An SVS level of 555 x 741 over 2220 x 2967 has downsample 4.002...: the grid's
    # tissue fractions come from that mask exactly, one vectorised lookup.
    slide = ArraySlide(np.zeros((2967, 2220, 3), np.uint8), mpp=0.5)
    a = np.zeros((741, 555), bool)
    a[100:600, 50:400] = True
    mask = TissueMask.from_raster(Raster.from_level(a, (555, 741), (2220, 2967)))
    coords = PatchGrid(256, min_tissue=0.0).coords(slide, mask)
    assert len(coords) == 8 * 11
    expected = [
        mask.fraction(Box(int(x), int(y), 256, 256))
        for x, y in zip(coords.x, coords.y, strict=True)
    ]
    np.testing.assert_allclose(coords.tissue, expected, rtol=1e-6)
    inside = PatchGrid(256, min_tissue=1.0).coords(slide, mask)
    d = mask.downsample
    assert ((inside.x >= 50 * d) & (inside.x + 256 <= 400 * d)).all()
    assert ((inside.y >= 100 * d) & (inside.y + 256 <= 600 * d)).all()
    assert len(inside) > 0


def test_grid_patches_read_the_right_pixels() -> None:
    image = textured((300, 520))
    slide = ArraySlide([image, cv2.resize(image, (260, 150), interpolation=cv2.INTER_AREA)])
    coords = PatchGrid(64, level=1, min_tissue=0, include_partial=True).coords(slide)
    assert coords.extent == 128 and coords.grid_shape == (3, 5)
    patches = read_patches(slide, coords)
    for k in range(len(coords)):
        expected = slide.read_region((int(coords.x[k]), int(coords.y[k])), 1, (64, 64))
        np.testing.assert_array_equal(patches[k], expected)
    # The last column reaches past the slide: white there.
    last = read_patch(slide, coords, len(coords) - 1)
    assert (last[:, 260 - 4 * 64 :] == 255).all()


def test_grid_at_a_target_mpp() -> None:
    image = textured((512, 512))
    levels = [image, image[::2, ::2].copy(), image[::4, ::4].copy()]
    slide = ArraySlide(levels, mpp=0.25)
    at_one = PatchGrid(32, mpp=1.0, min_tissue=0).coords(slide)
    assert (at_one.level, at_one.downsample, at_one.extent) == (2, 4.0, 128.0)
    np.testing.assert_array_equal(read_patch(slide, at_one, 1), levels[2][0:32, 32:64])
    between = PatchGrid(32, mpp=0.75, min_tissue=0).coords(slide)
    assert (between.level, between.downsample) == (1, 3.0)
    assert read_patch(slide, between, 0).shape == (32, 32, 3)  # 48 px of level 1, resized
    with pytest.raises(LevelError, match="records no µm per pixel"):
        PatchGrid(32, mpp=1.0).coords(ArraySlide(image))


def test_grid_and_sampler_choose_levels_by_the_shared_rule() -> None:
    """The slide's µm/px is its coarser axis; a missing level fails the same everywhere."""
    image = textured((256, 256))
    levels = [image, image[::2, ::2].copy()]
    slide = ArraySlide(levels, mpp=(0.25, 0.26), name="aniso")
    grid = PatchGrid(16, mpp=0.52, min_tissue=0).coords(slide)
    assert (grid.level, grid.downsample) == (1, 2.0)  # 0.52 / 0.26, not / 0.255
    finer = PatchGrid(16, mpp=0.5, min_tissue=0).coords(slide)  # 0.5 µm/px is finer than level 1
    assert finer.level == 0 and finer.downsample == pytest.approx(0.5 / 0.26)
    coords = PatchCoords([0], [0], level=3, size=8, downsample=8.0, slide_dimensions=(256, 256))
    with pytest.raises(LevelError, match=r"read_patch: level 3 is not in slide 'aniso'"):
        read_patch(slide, coords, 0)
    with pytest.raises(LevelError, match="PatchGrid: level 2"):
        PatchGrid(16, level=2).coords(slide)
    with pytest.raises(ParameterError, match=r"PatchGrid\.patch_size must be an integer >= 1"):
        PatchGrid(16.0).coords(slide)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"PatchCoords\.size"):
        PatchCoords([0], [0], level=0, size=0, downsample=1.0, slide_dimensions=(9, 9))


def test_grid_bad_input() -> None:
    slide = ArraySlide(np.zeros((300, 400, 3), np.uint8), name="s")
    with pytest.raises(GeometryError, match="another slide's mask"):
        PatchGrid(64).coords(slide, TissueMask(np.ones((3, 3), bool), 100, (300, 300)))
    with pytest.raises(GeometryError, match="does not fit"):
        PatchGrid(512).coords(slide)
    with pytest.raises(RegionError, match=r"PatchGrid: level 2 is not in slide 's'.* 0\.\.0"):
        PatchGrid(64, level=2).coords(slide)
    for bad in ({"patch_size": 0}, {"stride": -1}, {"min_tissue": 1.5}, {"mpp": 0.0}):
        with pytest.raises(ParameterError, match="PatchGrid"):
            PatchGrid(**bad).coords(slide)


# --- the sampler ----------------------------------------------------------------------


def square_masks(
    dims: tuple[int, int], d: float, tumor_box: tuple[int, int, int, int] | None
) -> tuple[TissueMask, TissueMask | None]:
    width, height = dims
    shape = (math.ceil(height / d), math.ceil(width / d))
    tissue = ellipse_mask(shape, d, dims)
    if tumor_box is None:
        return tissue, None
    t = np.zeros(shape, bool)
    r0, r1, c0, c1 = tumor_box
    t[r0:r1, c0:c1] = True
    return tissue, TissueMask(t, d, dims, mpp=0.5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    rule=st.sampled_from(["center", "fraction"]),
    margin=st.sampled_from([0.0, 40.0]),
    size=st.sampled_from([32, 64]),
    d=st.sampled_from([16.0, 20.5]),
)
def test_sampled_patches_obey_their_rules(
    seed: int, rule: str, margin: float, size: int, d: float
) -> None:
    dims = (1000, 800)
    tissue, tumor = square_masks(dims, d, (10, 25, 12, 30))
    assert tumor is not None
    sampler = PatchSampler(
        n_tumor=60,
        n_normal=40,
        patch_size=size,
        label_rule=rule,  # type: ignore[arg-type]
        normal_margin_um=margin,
        min_tissue=0.3,
        seed=seed,
    )
    coords = sampler.sample(dims, tissue, tumor)
    extent = coords.extent
    # Inside the slide, enough tissue, no duplicates.
    assert (coords.x >= 0).all() and (coords.y >= 0).all()
    assert (coords.x + extent <= dims[0]).all() and (coords.y + extent <= dims[1]).all()
    np.testing.assert_allclose(
        coords.tissue, tissue.fraction(coords.x, coords.y, extent, extent), atol=1e-6
    )
    assert (coords.tissue >= 0.3 - 1e-6).all()
    assert len(set(zip(coords.x.tolist(), coords.y.tolist(), strict=True))) == len(coords)
    tum, nor = coords[coords.labels == 1], coords[coords.labels == 0]
    assert len(tum) == 60 and len(nor) == 40
    # The labelling rule, checked against the masks independently of the sampler.
    grown = tumor.array
    if margin:
        r = math.ceil(margin / (d * 0.5))
        dist = cv2.distanceTransform((~tumor.array).astype(np.uint8), cv2.DIST_L2, 5)
        grown = dist <= r
    grown_mask = TissueMask(grown, d, dims)
    if rule == "center":
        assert tumor.values_at(*tum.centers()).all()
        assert not grown_mask.values_at(*nor.centers()).any()
    else:
        assert (tumor.fraction(tum.x, tum.y, extent, extent) >= 0.5 - 1e-9).all()
        assert (grown_mask.fraction(nor.x, nor.y, extent, extent) < 1e-9).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_sampling_is_deterministic_per_seed(seed: int) -> None:
    dims = (600, 600)
    tissue, tumor = square_masks(dims, 8.0, (20, 40, 20, 50))
    sampler = PatchSampler(n_tumor=30, n_normal=20, patch_size=32)
    a = sampler.sample(dims, tissue, tumor, seed=seed)
    b = sampler.sample(dims, tissue, tumor, seed=seed)
    c = sampler.sample(dims, tissue, tumor, seed=seed + 1)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not (np.array_equal(a.x, c.x) and np.array_equal(a.y, c.y))
    seeded = PatchSampler(n_tumor=30, n_normal=20, patch_size=32, seed=seed)
    np.testing.assert_array_equal(seeded.sample(dims, tissue, tumor).x, a.x)


def test_sampling_frequencies_are_proportional_to_area() -> None:
    from scipy.stats import chisquare

    # Two tissue regions of 1 and 3 mask pixels of 64 level-0 px each, the last one
    # clipped by the slide edge to half its width: areas 1 : 2.5.
    dims = (64 * 8 - 32, 64)
    a = np.zeros((1, 8), bool)
    a[0, 1] = True
    a[0, 5:8] = True
    tissue = TissueMask(a, 64, dims)
    sampler = PatchSampler(n_normal_normal_slide=3000, patch_size=1, min_tissue=0.0, seed=7)
    coords = sampler.sample(dims, tissue)
    assert len(coords) == 3000
    counts = np.array([(coords.x < 128).sum(), (coords.x >= 128).sum()])
    assert chisquare(counts, 3000 * np.array([1, 2.5]) / 3.5).pvalue > 1e-3
    # Not snapped to the mask's coarse pixels: uniform within them, at level-0 resolution.
    offsets = coords.x % 64
    in_full = offsets[coords.x < 5 * 64 + 64 * 2]
    hist = np.bincount(in_full // 8, minlength=8)
    assert chisquare(hist).pvalue > 1e-3
    assert len(np.unique(coords.y)) == 64


def test_normal_slide_and_empty_tumor_mask() -> None:
    dims = (800, 800)
    tissue, _ = square_masks(dims, 16.0, None)
    sampler = PatchSampler(n_tumor=5, n_normal=7, n_normal_normal_slide=11, patch_size=32, seed=1)
    coords = sampler.sample(dims, tissue)
    assert len(coords) == 11 and (coords.labels == 0).all()
    empty_tumor = TissueMask(np.zeros(tissue.shape, bool), 16.0, dims)
    assert len(sampler.sample(dims, tissue, empty_tumor)) == 11


def test_shortfall_warns_or_raises() -> None:
    dims = (512, 512)
    tissue, tumor = square_masks(dims, 16.0, (16, 17, 16, 17))  # one 16 px tumor pixel
    sampler = PatchSampler(n_tumor=1000, n_normal=5, patch_size=16, label_rule="center", seed=3)
    with pytest.warns(UserWarning, match=r"found only \d+ of 1000 tumor"):
        coords = sampler.sample(dims, tissue, tumor)
    # Every tumor centre in the 16 x 16 level-0 pixels of the tumor pixel exists once.
    assert (coords.labels == 1).sum() == 256
    strict = PatchSampler(n_tumor=1000, patch_size=16, on_shortfall="raise", seed=3)
    with pytest.raises(SamplingError, match="found only"):
        strict.sample(dims, tissue, tumor)
    no_tissue = TissueMask(np.zeros(tissue.shape, bool), 16.0, dims)
    with pytest.warns(UserWarning, match="0 of 500 normal"):
        assert len(PatchSampler(patch_size=16).sample(dims, no_tissue)) == 0


def test_sampler_bad_input() -> None:
    dims = (512, 512)
    tissue, tumor = square_masks(dims, 16.0, (10, 12, 10, 12))
    slide = ArraySlide(np.zeros((512, 512, 3), np.uint8), name="s")
    with pytest.raises(GeometryError, match="another slide's mask"):
        PatchSampler().sample((512, 500), tissue)
    with pytest.raises(SamplingError, match="does not fit"):
        PatchSampler(patch_size=1024).sample(dims, tissue)
    with pytest.raises(LevelError, match=r"PatchSampler: level 1 .*levels are 0\.\.0"):
        PatchSampler(level=1).sample(slide, tissue)
    with pytest.raises(ParameterError, match="needs the slide"):
        PatchSampler(level=1).sample(dims, tissue)
    no_mpp = TissueMask(tumor.array, 16.0, dims)  # type: ignore[union-attr]
    with pytest.raises(ParameterError, match="normal_margin_um"):
        PatchSampler(normal_margin_um=10).sample(dims, tissue, no_mpp)
    for bad in (
        {"n_tumor": -1},
        {"label_rule": "majority"},
        {"on_shortfall": "ignore"},
        {"min_tumor_fraction": 2.0},
        {"normal_margin_um": -5.0},
        {"patch_size": 0},
    ):
        with pytest.raises(ParameterError, match="PatchSampler"):
            PatchSampler(**bad).sample(dims, tissue)


def test_sampler_bad_mpp_and_level_with_mpp() -> None:
    dims = (512, 512)
    tissue, _ = square_masks(dims, 16.0, None)
    image = textured((512, 512))
    slide = ArraySlide([image, image[::2, ::2].copy()], mpp=0.25, name="s")
    for bad in (0.0, -0.5, float("nan"), "0.5"):
        with pytest.raises(ParameterError, match=r"PatchSampler\.mpp"):
            PatchSampler(mpp=bad).sample(slide, tissue)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"PatchSampler\(mpp=0\.5\) needs the slide"):
        PatchSampler(mpp=0.5).sample(dims, tissue)
    with pytest.raises(LevelError, match="records no µm per pixel"):
        PatchSampler(mpp=0.5).sample(ArraySlide(image), tissue)
    # As for PatchGrid, mpp decides and level is ignored.
    both = PatchSampler(n_normal_normal_slide=20, patch_size=32, level=1, mpp=0.3, seed=1)
    alone = PatchSampler(n_normal_normal_slide=20, patch_size=32, mpp=0.3, seed=1)
    a, b = both.sample(slide, tissue), alone.sample(slide, tissue)
    assert a.level == b.level == 0 and a.downsample == b.downsample == pytest.approx(1.2)
    np.testing.assert_array_equal(a.x, b.x)
    assert PatchGrid(32, level=1, mpp=0.3, min_tissue=0).coords(slide).level == a.level
    assert alone.params()["mpp"] == 0.3 and PatchSampler().params()["mpp"] is None


# --- slides scanned at different resolutions ------------------------------------------

SCAN_MPPS = {"scan-40x": 0.25, "scan-20x": 0.5}  # µm/px at level 0
FIELD = 256.0  # µm: both slides show the same field


def scanned_slides(fail_after: int | None = None) -> tuple[list[CountingSlide], list[Any]]:
    """Two slides of the same physical size scanned at 0.25 and 0.5 µm/px (levels 1, 2, 4)."""
    slides, tumors = [], []
    for i, (name, mpp) in enumerate(SCAN_MPPS.items()):
        side = round(FIELD / mpp)
        base = textured((side, side), seed=10 + i)
        levels = [
            cv2.resize(base, (side >> k, side >> k), interpolation=cv2.INTER_AREA) for k in range(3)
        ]
        slides.append(CountingSlide(levels, mpp=mpp, name=name, fail_after=fail_after))
        d = 4.0 / mpp  # mask pixels of 4 µm
        shape = (math.ceil(side / d),) * 2
        tumor = np.zeros(shape, bool)
        tumor[shape[0] // 3 : shape[0] // 2, shape[1] // 3 : 2 * shape[1] // 3] = True
        tumors.append(TissueMask(tumor, d, (side, side), mpp=mpp) if i == 0 else None)
    return slides, tumors


def scanned_tissue(slides: list[CountingSlide]) -> list[TissueMask]:
    out = []
    for s in slides:
        mpp = SCAN_MPPS[s.name]
        d = 4.0 / mpp  # mask pixels of 4 µm
        side = s.dimensions[0]
        out.append(ellipse_mask((math.ceil(side / d),) * 2, d, s.dimensions, mpp=mpp))
    return out


def read_by_hand(slide: ArraySlide, x: int, y: int, level: int, size: int, ds: float) -> Any:
    """The patch at level-0 ``(x, y)``: ``size * ds`` level-0 px read at ``level``, resized."""
    d = float(slide.level_downsamples[level])
    read = max(1, round(size * ds / d))
    image = slide.read_level(level)
    col, row = math.floor(x / d + 0.5), math.floor(y / d + 0.5)
    padded = np.pad(image, ((0, read), (0, read), (0, 0)), constant_values=255)
    pixels = padded[row : row + read, col : col + read]
    if read == size:
        return pixels
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)


def test_sampler_at_an_mpp_covers_the_same_field_on_every_scanner() -> None:
    from cervixwsi.geometry import resolve_level

    slides, tumors = scanned_slides()
    sampler = PatchSampler(n_tumor=12, n_normal=8, n_normal_normal_slide=10, patch_size=32, mpp=0.5)
    levels = []
    for slide, tissue, tumor in zip(slides, scanned_tissue(slides), tumors, strict=True):
        coords = sampler.sample(slide, tissue, tumor, seed=3)
        assert len(coords) == (20 if tumor is not None else 10)
        assert coords.level == resolve_level(slide, mpp=0.5)
        levels.append(coords.level)
        # Every patch covers 32 px * 0.5 µm = 16 µm, whatever the scan resolution.
        assert coords.extent * SCAN_MPPS[slide.name] == pytest.approx(32 * 0.5)
        assert coords.downsample == pytest.approx(0.5 / SCAN_MPPS[slide.name])
        assert (coords.x + coords.extent <= slide.dimensions[0]).all()
        for k in range(len(coords)):
            x, y = int(coords.x[k]), int(coords.y[k])
            expected = read_by_hand(slide, x, y, coords.level, 32, coords.downsample)
            np.testing.assert_array_equal(read_patch(slide, coords, k), expected)
    assert levels == [1, 0]  # the 0.25 µm/px scan is read at its level 1, the other at 0


def build_scanned(
    path: Path, slides: list[CountingSlide], tumors: list[Any], mpp: float, **kw: Any
) -> PatchStore:
    sampler = PatchSampler(n_tumor=12, n_normal=8, n_normal_normal_slide=10, patch_size=32, mpp=mpp)
    return PatchStore.build(
        path,
        slides,
        sampler,
        tumor_masks=tumors,
        tissue_masks=scanned_tissue(slides),
        seed=4,
        workers=2,
        chunk_patches=4,
        progress=False,
        **kw,
    )


@pytest.mark.parametrize(
    ("mpp", "levels", "downsamples"),
    [(0.5, [1, 0], [2.0, 1.0]), (0.75, [1, 0], [3.0, 1.5])],  # 0.75: read 48 px, resized
)
def test_store_of_slides_scanned_at_different_resolutions(
    tmp_path: Path, mpp: float, levels: list[int], downsamples: list[float]
) -> None:
    import zarr

    slides, tumors = scanned_slides()
    reference = build_scanned(tmp_path / "ref.zarr", slides, tumors, mpp)
    assert len(reference) == 30 and reference.is_complete and reference.sampler.mpp == mpp
    attrs = dict(zarr.open_group(str(tmp_path / "ref.zarr"), mode="r").attrs)
    assert attrs["levels"] == levels and attrs["level"] is None
    assert attrs["downsamples"] == pytest.approx(downsamples)
    everything = reference.read(np.arange(len(reference)))
    for i, s in enumerate(reference.slide_index):
        x, y = int(reference.x[i]), int(reference.y[i])
        expected = read_by_hand(slides[s], x, y, levels[s], 32, downsamples[s])
        np.testing.assert_array_equal(everything[i], expected)
    # Interrupted and resumed: the same patches, only the missing ones read again.
    path = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="simulated"):
        build_scanned(path, *scanned_slides(fail_after=9), mpp)
    partial = PatchStore(path)
    assert not partial.is_complete
    again, tumors = scanned_slides()
    resumed = build_scanned(path, again, tumors, mpp)
    assert resumed.is_complete
    np.testing.assert_array_equal(resumed.read(np.arange(30)), everything)
    assert sum(s.reads for s in again) == len(partial) - int(partial.extracted.sum())
    # Another resolution is another dataset.
    with pytest.raises(StoreMismatchError, match=rf"sampler \(mpp: {mpp} -> 1\.0\)"):
        build_scanned(path, *scanned_slides(), 1.0)


# --- the patch store ------------------------------------------------------------------


class CountingSlide(ArraySlide):
    """An ArraySlide that counts region reads and can fail after a number of them."""

    def __init__(self, *args: Any, fail_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        with self._lock:
            self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                raise OSError("simulated read failure")
        return super().read_region(location, level, size)


def two_slides(fail_after: int | None = None) -> tuple[list[CountingSlide], list[Any]]:
    slides, tumors = [], []
    for i, name in enumerate(["tumor-a", "normal-b"]):
        image = textured((640, 768), seed=i)
        slides.append(CountingSlide(image, mpp=0.5, name=name, fail_after=fail_after))
        tumors.append(square_masks((768, 640), 16.0, (10, 25, 10, 30))[1] if i == 0 else None)
    return slides, tumors


def tissue_of(slides: list[CountingSlide]) -> list[TissueMask]:
    return [square_masks(s.dimensions, 16.0, None)[0] for s in slides]


SAMPLER = PatchSampler(n_tumor=20, n_normal=10, n_normal_normal_slide=15, patch_size=32)


def build(path: Path, slides: list[CountingSlide], tumors: list[Any], **kw: Any) -> PatchStore:
    return PatchStore.build(
        path,
        slides,
        SAMPLER,
        tumor_masks=tumors,
        tissue_masks=tissue_of(slides),
        seed=kw.pop("seed", 11),
        workers=kw.pop("workers", 3),
        chunk_patches=kw.pop("chunk_patches", 4),
        progress=False,
        **kw,
    )


def test_store_holds_the_planned_patches(tmp_path: Path) -> None:
    slides, tumors = two_slides()
    store = build(tmp_path / "s.zarr", slides, tumors)
    assert len(store) == 45 and store.patch_size == 32 and store.is_complete
    assert store.slide_names == ("tumor-a", "normal-b")
    assert store.sampler == SAMPLER
    assert store.masker is None  # the tissue masks were given
    assert store.patches.shape == (45, 32, 32, 3) and store.patches.dtype == np.uint8
    assert np.bincount(store.labels).tolist() == [25, 20]
    index = store.slide_index
    assert (store.labels[index == 1] == 0).all()
    # Every patch is the slide's pixels at the recorded coordinates.
    everything = store.read(np.arange(len(store)))
    for i in range(len(store)):
        s = slides[index[i]]
        expected = ArraySlide.read_region(s, (int(store.x[i]), int(store.y[i])), 0, (32, 32))
        np.testing.assert_array_equal(everything[i], expected)
    # read keeps the order asked, negative indices count from the end.
    np.testing.assert_array_equal(store.read([5, 2, -1, 5]), everything[[5, 2, 44, 5]])
    reopened = PatchStore.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(reopened.labels, store.labels)


def test_plan_is_the_sampler_with_per_slide_seeds(tmp_path: Path) -> None:
    slides, tumors = two_slides()
    store = build(tmp_path / "s.zarr", slides, tumors, seed=5)
    again = build(tmp_path / "t.zarr", *two_slides(), seed=5)
    np.testing.assert_array_equal(store.x, again.x)
    other = build(tmp_path / "u.zarr", *two_slides(), seed=6)
    assert not np.array_equal(store.x, other.x)
    first = store.slide_index == 0
    c = SAMPLER.sample(
        slides[0],
        tissue_of(slides)[0],
        tumors[0],
        seed=np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0]),
    )
    # The same patches, stored in raster order (bands of one patch height).
    order = np.lexsort((c.x, c.y // 32))
    np.testing.assert_array_equal(store.x[first], c.x[order])
    np.testing.assert_array_equal(store.y[first], c.y[order])
    np.testing.assert_array_equal(store.labels[first], c.labels[order])
    assert (np.diff(store.y[first] // 32) >= 0).all()


@pytest.mark.parametrize("fail_after", [0, 7, 25])
def test_interrupted_build_resumes_without_loss_or_duplication(
    tmp_path: Path, fail_after: int
) -> None:
    reference = build(tmp_path / "ref.zarr", *two_slides())
    path = tmp_path / "s.zarr"
    failing, tumors = two_slides(fail_after=fail_after)
    with pytest.raises(OSError, match="simulated"):
        build(path, failing, tumors)
    partial = PatchStore(path)
    assert not partial.is_complete
    with pytest.raises(PatchStoreError, match="has not been extracted"):
        partial.read(np.arange(len(partial)))
    # Chunks marked done are readable and right already.
    done_idx = np.flatnonzero(partial.extracted)
    assert len(done_idx) % 4 == 0 and len(done_idx) < len(partial)
    np.testing.assert_array_equal(partial.read(done_idx), reference.read(done_idx))
    resumed_slides, tumors = two_slides()
    resumed = build(path, resumed_slides, tumors)
    assert resumed.is_complete
    np.testing.assert_array_equal(resumed.read(np.arange(45)), reference.read(np.arange(45)))
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    # Only the patches of unfinished chunks were read again.
    assert sum(s.reads for s in resumed_slides) == len(partial) - len(done_idx)
    # A finished store builds as a no-op.
    idle, tumors = two_slides()
    build(path, idle, tumors)
    assert sum(s.reads for s in idle) == 0


class UnmaskableSlide(ArraySlide):
    """An ArraySlide whose whole-level read (tissue detection) fails, as a stopped job would."""

    def __init__(self, *args: Any, error: BaseException, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error = error

    def read_level(self, level: int) -> np.ndarray:
        raise self.error


@pytest.mark.parametrize("error", [OSError("simulated"), KeyboardInterrupt()])
def test_build_interrupted_while_planning_leaves_no_store(
    tmp_path: Path, error: BaseException
) -> None:
    slides, tumors = two_slides()
    image = textured((640, 768), seed=1)
    failing = UnmaskableSlide(image, mpp=0.5, name="normal-b", error=error)
    path = tmp_path / "s.zarr"
    with pytest.raises(type(error)):
        PatchStore.build(
            path, [slides[0], failing], SAMPLER, tumor_masks=tumors, seed=11, progress=False
        )
    # The first slide was planned already, but nothing is left: no store, no temporary.
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PatchStoreError, match="no patch store"):
        PatchStore(path)
    # The rerun plans and fills from scratch.
    again, tumors = two_slides()
    store = PatchStore.build(path, again, SAMPLER, tumor_masks=tumors, seed=11, progress=False)
    assert store.is_complete and len(store) == 45
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_store_records_its_format_identity_and_completion(tmp_path: Path) -> None:
    import zarr

    from cervixwsi import __version__

    path = tmp_path / "s.zarr"
    failing, tumors = two_slides(fail_after=7)
    with pytest.raises(OSError, match="simulated"):
        build(path, failing, tumors)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs["format"] == "cervixwsi.PatchStore" and attrs["format_version"] == 2
    assert attrs["cervixwsi_version"] == __version__ and attrs["complete"] is False
    assert set(attrs["identity"]) == {
        "slides",
        "sampler",
        "seed",
        "tumor_masks",
        "tissue_masks",
        "masker",
    }
    assert attrs["identity"]["seed"] == 11
    build(path, *two_slides())
    assert zarr.open_group(str(path), mode="r").attrs["complete"] is True


def test_a_version_1_store_is_read_and_resumed(tmp_path: Path) -> None:
    """Stores of format version 1 (identity as top-level attributes) stay usable."""
    import zarr

    reference = build(tmp_path / "ref.zarr", *two_slides())
    path = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="simulated"):
        build(path, *two_slides(fail_after=7))
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    identity = attrs.pop("identity")
    del attrs["complete"]
    group.attrs.put({**attrs, **identity, "format_version": 1, "planned": True})
    old = PatchStore(path)
    assert not old.is_complete and old.slide_names == ("tumor-a", "normal-b")
    assert old.sampler == SAMPLER and old.masker is None
    with pytest.raises(StoreMismatchError, match="seed: 11 -> 12"):
        build(path, *two_slides(), seed=12)
    resumed = build(path, *two_slides())
    assert resumed.is_complete
    np.testing.assert_array_equal(resumed.read(np.arange(45)), reference.read(np.arange(45)))
    # A version-1 store whose planning was interrupted (planned in place) is refused.
    group.attrs.put({**attrs, **identity, "format_version": 1, "planned": False})
    with pytest.raises(PatchStoreError, match="planning was interrupted"):
        PatchStore(path)
    with pytest.raises(PatchStoreError, match="planning was interrupted"):
        build(path, *two_slides())


def test_a_store_made_before_mpp_and_levels_is_read_and_resumed(tmp_path: Path) -> None:
    """A format-2 store of the layout before ``mpp``: one ``level``, no ``levels``, and a
    sampler recorded without ``mpp``."""
    import zarr

    reference = build(tmp_path / "ref.zarr", *two_slides())
    path = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="simulated"):
        build(path, *two_slides(fail_after=7))
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    assert attrs["levels"] == [0, 0] and attrs["level"] == 0
    del attrs["levels"]
    del attrs["identity"]["sampler"]["mpp"]
    group.attrs.put(attrs)
    old = PatchStore(path)
    assert not old.is_complete and old.sampler == SAMPLER
    resumed = build(path, *two_slides())
    assert resumed.is_complete
    np.testing.assert_array_equal(resumed.read(np.arange(45)), reference.read(np.arange(45)))
    # The missing mpp counts as None: a sampler at a resolution is another sampler.
    at_mpp = PatchSampler(n_tumor=20, n_normal=10, n_normal_normal_slide=15, patch_size=32, mpp=0.5)
    slides, tumors = two_slides()
    with pytest.raises(StoreMismatchError, match=r"sampler \(mpp: None -> 0\.5\)"):
        PatchStore.build(
            path,
            slides,
            at_mpp,
            tumor_masks=tumors,
            tissue_masks=tissue_of(slides),
            seed=11,
            progress=False,
        )


def test_building_with_other_parameters_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path, *two_slides())
    slides, tumors = two_slides()
    other = PatchSampler(n_tumor=21, n_normal=10, n_normal_normal_slide=15, patch_size=32)
    with pytest.raises(StoreMismatchError, match="sampler"):
        PatchStore.build(
            path,
            slides,
            other,
            tumor_masks=tumors,
            tissue_masks=tissue_of(slides),
            seed=11,
            progress=False,
        )
    with pytest.raises(StoreMismatchError, match="seed: 11 -> 12"):
        build(path, slides, tumors, seed=12)
    with pytest.raises(StoreMismatchError, match="slides") as refused:
        build(path, slides[::-1], tumors[::-1])
    assert "slides ('tumor-a', 'normal-b' -> 'normal-b', 'tumor-a')" in str(refused.value)
    # One message lists every difference.
    with pytest.raises(StoreMismatchError) as refused:
        PatchStore.build(path, slides, other, tumor_masks=tumors, seed=12, progress=False)
    message = str(refused.value)
    for words in (
        "sampler (n_tumor: 20 -> 21)",
        "seed: 11 -> 12",
        "tissue_masks",
        "masker",
        "build into a new path",
    ):
        assert words in message


def test_building_with_other_masks_or_masker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    slides, tumors = two_slides()
    build(path, slides, tumors)
    # The same masks as other objects (a 0/1 uint8 raster for the boolean one): resumes.
    same = [Raster(tumors[0].array.astype(np.uint8), 16.0, (768, 640), mpp=0.5), None]
    build(path, slides, same)
    assert sum(s.reads for s in slides) == 45  # only the first build read patches
    moved = square_masks((768, 640), 16.0, (11, 26, 10, 30))[1]
    with pytest.raises(StoreMismatchError, match=r"other tumor_masks \(of slide 'tumor-a'\)"):
        build(path, slides, [moved, None])
    # Same pixels at another resolution in µm (which normal_margin_um depends on).
    other_mpp = TissueMask(tumors[0].array, 16.0, (768, 640), mpp=0.25)
    with pytest.raises(StoreMismatchError, match="tumor_masks"):
        build(path, slides, [other_mpp, None])
    with pytest.raises(StoreMismatchError, match="tumor_masks"):
        build(path, slides, [None, None])
    tissue = tissue_of(slides)
    tissue[1] = TissueMask(np.ones(tissue[1].shape, bool), 16.0, (768, 640), mpp=0.5)
    with pytest.raises(StoreMismatchError, match=r"other tissue_masks \(of slide 'normal-b'\)"):
        PatchStore.build(
            path, slides, SAMPLER, tumor_masks=tumors, tissue_masks=tissue, seed=11, progress=False
        )
    # Tissue masks from a masker instead of the given ones.
    with pytest.raises(StoreMismatchError, match=r"tissue_masks, masker"):
        PatchStore.build(path, slides, SAMPLER, tumor_masks=tumors, seed=11, progress=False)


def test_building_with_another_masker_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    slides, tumors = two_slides()
    masker = TissueMasker(min_tissue_area_um2=1000.0)

    def again(masker: TissueMasker | None) -> PatchStore:
        return PatchStore.build(
            path, slides, SAMPLER, tumor_masks=tumors, masker=masker, seed=11, progress=False
        )

    store = again(masker)
    assert store.masker == masker
    reads = sum(s.reads for s in slides)
    assert again(TissueMasker(min_tissue_area_um2=1000.0)).is_complete  # equal: resumes
    assert sum(s.reads for s in slides) == reads
    other = TissueMasker(min_tissue_area_um2=5000.0, channels=("saturation", "value"))
    with pytest.raises(StoreMismatchError, match=r"masker \(channels, min_tissue_area_um2\)"):
        again(other)
    with pytest.raises(StoreMismatchError, match=r"masker \(min_tissue_area_um2\)"):
        again(None)  # the default TissueMasker()


def test_iter_batches(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr", *two_slides())
    batches = list(store.iter_batches(16))
    assert [len(b[0]) for b in batches] == [16, 16, 13]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), store.labels)
    shuffled = list(store.iter_batches(10, shuffle=True, seed=3))
    again = list(store.iter_batches(10, shuffle=True, seed=3))
    labels = np.concatenate([b[1] for b in shuffled])
    np.testing.assert_array_equal(labels, np.concatenate([b[1] for b in again]))
    assert sorted(labels.tolist()) == sorted(store.labels.tolist())
    all_patches = store.read(np.arange(45))
    patches = np.concatenate([b[0] for b in shuffled])
    # Each patch appears once, with its own label.
    order = [int(np.flatnonzero((all_patches == p).all(axis=(1, 2, 3)))[0]) for p in patches]
    assert sorted(order) == list(range(45))
    np.testing.assert_array_equal(store.labels[order], labels)
    subset = list(store.iter_batches(4, indices=[3, 1, 40]))
    np.testing.assert_array_equal(subset[0][0], store.read([3, 1, 40])[:3][:4])
    with pytest.raises(ParameterError):
        next(store.iter_batches(0))


def test_importing_tiling_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = "import sys, cervixwsi.tiling; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_store_from_a_pyramid_file_matches_openslide(tmp_path: Path, openslide: Any) -> None:
    from cervixwsi.slide import write_pyramid

    image = np.full((1024, 1280, 3), 235, np.uint8)
    cv2.ellipse(image, (640, 512), (500, 380), 0, 0, 360, (190, 100, 170), -1)
    noise = np.random.default_rng(0).integers(0, 40, image.shape, dtype=np.uint8)
    image = image - noise
    path = write_pyramid(tmp_path / "slide.tif", image, mpp=0.5, compression="deflate")
    sampler = PatchSampler(n_normal_normal_slide=40, patch_size=64, seed=2)
    store = PatchStore.build(
        tmp_path / "p.zarr", [path], sampler, progress=False, workers=2, compress=True
    )
    assert len(store) == 40 and store.slide_names == ("slide",)
    assert store.masker == TissueMasker()
    with openslide.OpenSlide(str(path)) as reference:
        for i in range(0, 40, 7):
            region = reference.read_region((int(store.x[i]), int(store.y[i])), 0, (64, 64))
            np.testing.assert_array_equal(store.read([i])[0], np.asarray(region.convert("RGB")))


def test_store_accepts_objects_with_a_path_and_tumor_mask(tmp_path: Path) -> None:
    from cervixwsi.slide import write_pyramid

    image = np.full((512, 512, 3), 230, np.uint8)
    image[64:448, 64:448] = (180, 90, 160)
    path = write_pyramid(tmp_path / "syn.tif", image, mpp=1.0, compression="deflate")
    tumor = TissueMask(np.pad(np.ones((8, 8), bool), 12), 16, (512, 512), mpp=1.0)

    class Synthetic:
        def __init__(self) -> None:
            self.path = path
            self.tumor_mask = tumor

    sampler = PatchSampler(n_tumor=12, n_normal=6, patch_size=32, seed=1)
    store = PatchStore.build(tmp_path / "p.zarr", [Synthetic()], sampler, progress=False)
    assert np.bincount(store.labels).tolist() == [6, 12]
    cx = store.x + 16
    cy = store.y + 16
    assert tumor.values_at(cx, cy)[store.labels == 1].all()


def test_empty_plan_gives_an_empty_complete_store(tmp_path: Path) -> None:
    slide = CountingSlide(np.full((256, 256, 3), 240, np.uint8), mpp=1.0, name="glass")
    with pytest.warns(UserWarning, match="0 of 500 normal"):
        store = PatchStore.build(
            tmp_path / "e.zarr", [slide], PatchSampler(patch_size=32), progress=False
        )
    assert len(store) == 0 and store.is_complete
    assert store.read([]).shape == (0, 32, 32, 3)
    assert list(store.iter_batches()) == []


def test_opening_missing_empty_or_corrupt_stores_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PatchStoreError, match="no patch store"):
        PatchStore(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(PatchStoreError):
        PatchStore(tmp_path / "empty.zarr")
    # An empty directory can be built into; a directory of something else is refused.
    assert len(build(tmp_path / "empty.zarr", *two_slides())) == 45
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(PatchStoreError, match="not a zarr store"):
        build(tmp_path / "data", *two_slides())
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"
    (tmp_path / "file.zarr").write_bytes(b"")
    with pytest.raises(PatchStoreError):
        PatchStore(tmp_path / "file.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "something"
    with pytest.raises(PatchStoreError, match="not a cervixwsi patch store"):
        PatchStore(tmp_path / "other.zarr")
    # A truncated chunk of patches: reading it fails with the store's error.
    store = build(tmp_path / "s.zarr", *two_slides())
    chunk_files = sorted((tmp_path / "s.zarr" / "patches").rglob("c/*/*/*/*"))
    assert chunk_files
    data = chunk_files[0].read_bytes()
    chunk_files[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(PatchStoreError, match="cannot read patches"):
        PatchStore(store.path).read([0])
    # Missing arrays.
    import shutil

    shutil.rmtree(tmp_path / "s.zarr" / "labels")
    with pytest.raises(PatchStoreError, match="incomplete or corrupt"):
        PatchStore(store.path)
    with pytest.raises(PatchStoreError, match="index out of range"):
        build(tmp_path / "t.zarr", *two_slides()).read([45])


def test_a_store_built_with_numpy_integer_settings_is_the_same_store(tmp_path: Path) -> None:
    # NumPy integers are integers everywhere; the store must record them as plain numbers.
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    slide = ArraySlide(image, mpp=0.5, name="s")
    tissue = TissueMask(np.ones((8, 8), bool), 64, (512, 512))

    def sampler(kind: Any) -> PatchSampler:
        return PatchSampler(
            n_normal_normal_slide=kind(6), patch_size=kind(64), level=kind(0), seed=kind(3)
        )

    path = tmp_path / "s.zarr"
    built = PatchStore.build(
        path, [slide], sampler(np.int64), tissue_masks=[tissue], progress=False
    )
    assert len(built) == 6 and built.patch_size == 64 and built.is_complete
    again = PatchStore.build(path, [slide], sampler(int), tissue_masks=[tissue], progress=False)
    np.testing.assert_array_equal(again.read(np.arange(6)), built.read(np.arange(6)))
