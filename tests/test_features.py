"""Heatmap features: known answers on hand-made maps, properties, units, bad input."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage, stats
from skimage.measure import label, regionprops

from cervixwsi.errors import FeatureError, ParameterError, ResultFileError
from cervixwsi.features import (
    Feature,
    FeatureContext,
    FeatureTable,
    HeatmapFeatureExtractor,
    Regions,
    preset_features,
    unit_of,
)
from cervixwsi.geometry import Raster
from cervixwsi.heatmap import Heatmap, HeatmapInfo

ROOT = Path(__file__).resolve().parents[1]
STRIDE = 256
MPP = 0.5
PX = STRIDE * MPP  # µm per heatmap pixel


def heatmap(p: np.ndarray, *, stride: float = STRIDE, mpp: float | None = MPP) -> Raster:
    rows, cols = p.shape
    return Raster(
        p.astype(np.float32), stride, (round(cols * stride), round(rows * stride)), mpp=mpp
    )


class FakeHeatmap(Raster):
    """What the heatmaps issue's ``Heatmap`` will be: a Raster with a tissue mask and id."""

    def __init__(self, p: np.ndarray, tissue: np.ndarray, slide_id: str) -> None:
        rows, cols = p.shape
        super().__init__(p.astype(np.float32), STRIDE, (cols * STRIDE, rows * STRIDE), mpp=MPP)
        self.tissue_mask = Raster(tissue, STRIDE, (cols * STRIDE, rows * STRIDE), mpp=MPP)
        self.slide_id = slide_id


EXTRACTOR = HeatmapFeatureExtractor()


def features(p: np.ndarray, **kw: Any) -> dict[str, float]:
    fv = EXTRACTOR.extract(heatmap(p, **kw))
    assert np.isfinite(fv.values).all()
    return dict(zip(fv.names, fv.values.tolist(), strict=True))


# --- presets and names ----------------------------------------------------------------------


def test_cervix28_has_28_named_features_with_the_studys_top_five() -> None:
    names = EXTRACTOR.feature_names()
    assert len(names) == 28 == len(set(names))
    top5 = {
        "mean_region_area_um2@0.9",
        "largest_region_major_axis_um@0.5",
        "largest_region_extent@0.5",
        "largest_region_eccentricity@0.9",
        "tumor_tissue_ratio@0.9",
    }
    assert top5 <= set(names)
    assert sum("@" not in n for n in names) == 4
    assert sum(n.endswith("@0.5") for n in names) == sum(n.endswith("@0.9") for n in names) == 12


def test_camelyon16_preset_has_25_summaries_and_3_globals() -> None:
    names = HeatmapFeatureExtractor("camelyon16").feature_names()
    assert len(names) == 28 == len(set(names))
    assert sum(n.startswith(("max_", "mean_", "var_", "skew_", "kurt_")) for n in names) == 25
    assert {"tumor_tissue_ratio@0.9", "largest_region_major_axis_um@0.5", "n_pixels@0.9"} <= set(
        names
    )
    assert "mean_region_extent@0.5" in names and "var_region_area_um4@0.9" in names


def test_more_thresholds_give_12_features_each() -> None:
    assert len(HeatmapFeatureExtractor(thresholds=(0.3, 0.5, 0.9)).feature_names()) == 40


@pytest.mark.parametrize(
    ("preset", "thresholds", "match"),
    [
        ("cervix29", (0.5, 0.9), "valid presets"),
        ("camelyon16", (0.3, 0.5, 0.9), "two thresholds"),
        ("cervix28", (0.5, 1.5), r"\(0, 1\]"),
        ("cervix28", (0.0,), r"\(0, 1\]"),
        ("cervix28", (0.5, 0.5), "distinct"),
        ("cervix28", (), "empty"),
    ],
)
def test_bad_presets_and_thresholds_are_refused(
    preset: str, thresholds: tuple[float, ...], match: str
) -> None:
    with pytest.raises(ParameterError, match=match):
        HeatmapFeatureExtractor(preset, thresholds).feature_names()


def _documented_names(section: str) -> set[str]:
    text = (ROOT / "docs" / "api" / "features.rst").read_text(encoding="utf-8")
    start = text.index(f".. _preset-{section}:")
    end = text.find(".. _preset-", start + 1)
    return set(re.findall(r"``([a-z0-9_]+(?:@[0-9.]+)?)``", text[start : end if end > 0 else None]))


@pytest.mark.parametrize("preset", ["cervix28", "camelyon16"])
def test_documented_feature_tables_match_the_code(preset: str) -> None:
    assert _documented_names(preset) == set(HeatmapFeatureExtractor(preset).feature_names())


def test_units_are_part_of_the_names() -> None:
    assert unit_of("total_tumor_area_um2@0.5") == "µm²"
    assert unit_of("var_region_area_l0px4@0.9") == "level-0 px⁴"
    assert unit_of("largest_region_perimeter_um@0.9") == "µm"
    assert unit_of("n_regions@0.9") == "1"
    fv = EXTRACTOR.extract(heatmap(np.zeros((4, 4))))
    assert fv.units == tuple(unit_of(n) for n in fv.names)
    assert fv.units[fv.names.index("mean_region_area_um2@0.9")] == "µm²"


# --- known answers ------------------------------------------------------------------------------


def test_rectangle_has_extent_one_and_the_ellipse_of_a_rectangle() -> None:
    w, h = 9, 4
    p = np.full((12, 16), 0.1)
    p[3 : 3 + h, 2 : 2 + w] = 0.95
    f = features(p)
    for t in ("0.5", "0.9"):
        assert f[f"n_regions@{t}"] == 1
        assert f[f"largest_region_extent@{t}"] == 1.0
        assert f[f"largest_region_solidity@{t}"] == pytest.approx(1.0)
        assert f[f"total_tumor_area_um2@{t}"] == pytest.approx(w * h * PX**2)
        assert f[f"largest_region_area_um2@{t}"] == f[f"mean_region_area_um2@{t}"]
        assert f[f"tumor_tissue_ratio@{t}"] == pytest.approx(w * h / p.size)
        assert f[f"mean_region_probability@{t}"] == pytest.approx(0.95, abs=1e-6)
        assert f[f"region_probability_mass_ratio@{t}"] == pytest.approx(0.95 * w * h / p.size)
    # The region is a w x h rectangle of pixel squares: a continuous uniform
    # distribution with var = w² / 12 along x and h² / 12 along y.
    var_w, var_h = w**2 / 12, h**2 / 12
    assert f["largest_region_major_axis_um@0.9"] == pytest.approx(4 * math.sqrt(var_w) * PX)
    assert f["largest_region_eccentricity@0.9"] == pytest.approx(math.sqrt(1 - var_h / var_w))
    # The perimeter is the boundary of the pixel squares.
    assert f["largest_region_perimeter_um@0.9"] == pytest.approx(2 * (w + h) * PX)
    assert f["max_probability"] == pytest.approx(0.95)
    assert f["mean_probability"] == pytest.approx((0.95 * w * h + 0.1 * (p.size - w * h)) / p.size)


def test_disk_is_solid_and_round() -> None:
    yy, xx = np.mgrid[:41, :41]
    p = np.where((yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2, 0.99, 0.0)
    f = features(p)
    assert f["n_regions@0.9"] == 1
    # The convex hull runs around the pixels' outer corners: a digital disk of
    # radius 15 fills ~(15 / 15.5)² of it, an L of two 10 x 2 bars far less.
    assert f["largest_region_solidity@0.9"] == pytest.approx((15 / 15.5) ** 2, rel=0.01)
    ell = np.zeros((12, 12))
    ell[1:11, 1:3] = ell[9:11, 1:11] = 0.99
    assert features(ell)["largest_region_solidity@0.9"] < 0.6
    assert f["largest_region_eccentricity@0.9"] < 0.05
    assert f["largest_region_area_um2@0.9"] == pytest.approx(math.pi * 15**2 * PX**2, rel=0.02)
    assert f["largest_region_major_axis_um@0.9"] == pytest.approx(30 * PX, rel=0.03)
    assert f["largest_region_extent@0.9"] == pytest.approx(np.count_nonzero(p) / 31**2)


def test_two_separated_regions_and_diagonal_neighbours_are_one_region() -> None:
    p = np.zeros((10, 12))
    p[1:3, 1:4] = 0.95  # 6 pixels
    p[6:9, 6:10] = 0.6  # 12 pixels, below 0.9
    p[5, 5] = 0.95  # touches the second block diagonally only: 8-connected
    f = features(p)
    assert f["n_regions@0.5"] == 2
    assert f["mean_region_area_um2@0.5"] == pytest.approx((6 + 13) / 2 * PX**2)
    assert f["largest_region_area_um2@0.5"] == pytest.approx(13 * PX**2)
    assert f["n_regions@0.9"] == 2
    assert f["mean_region_area_um2@0.9"] == pytest.approx((6 + 1) / 2 * PX**2)
    assert f["largest_region_extent@0.9"] == 1.0
    assert f["mean_region_probability@0.5"] == pytest.approx((7 * 0.95 + 12 * 0.6) / 19, 1e-6)


def test_empty_map_gives_zeros_not_nan() -> None:
    f = features(np.full((8, 8), 0.2))
    for name, value in f.items():
        expected = 0.2 if name in {"max_probability", "mean_probability", "p99_probability"} else 0
        assert value == pytest.approx(expected, abs=1e-7), name


def test_map_that_is_all_tumor() -> None:
    f = features(np.ones((6, 10)))
    assert f["n_regions@0.9"] == 1
    assert f["tumor_tissue_ratio@0.9"] == 1.0
    assert f["region_probability_mass_ratio@0.9"] == 1.0
    assert f["largest_region_extent@0.9"] == 1.0
    assert f["std_probability"] == 0.0
    assert f["total_tumor_area_um2@0.5"] == pytest.approx(60 * PX**2)


def test_map_without_tissue_gives_zeros_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    p = np.full((5, 5), np.nan)
    with caplog.at_level(logging.WARNING, logger="cervixwsi.features"):
        fv = EXTRACTOR.extract(heatmap(p))
    assert (fv.values == 0).all()
    assert "no tissue" in caplog.text


def test_without_mpp_units_are_level0_pixels() -> None:
    p = np.zeros((6, 6))
    p[1:4, 1:3] = 1.0
    fv = EXTRACTOR.extract(heatmap(p, stride=100.0, mpp=None))
    assert fv["total_tumor_area_l0px2@0.9"] == pytest.approx(6 * 100.0**2)
    assert fv["largest_region_perimeter_l0px@0.9"] == pytest.approx(2 * (3 + 2) * 100.0)
    assert fv.units[fv.names.index("total_tumor_area_l0px2@0.9")] == "level-0 px²"


def reference_shape(mask: np.ndarray) -> dict[str, float]:
    """Shape measures of the union of a region's pixel squares, computed another way.

    Perimeter: 4 edges per pixel minus 2 per pair of 4-adjacent pixels.  Moment
    ellipse: scikit-image's eigenvalues of the pixel-centre covariance plus the
    1/12 px² of a uniform unit square.  Hull: scipy's hull of all the corners of
    all the pixels.
    """
    from scipy.spatial import ConvexHull

    n = int(mask.sum())
    pairs = int((mask[1:] & mask[:-1]).sum() + (mask[:, 1:] & mask[:, :-1]).sum())
    (region,) = regionprops(mask.astype(np.uint8))
    l1, l2 = (float(v) + 1 / 12 for v in region.inertia_tensor_eigvals)
    rows, cols = np.nonzero(mask)
    corners = np.concatenate(
        [np.column_stack([rows + i, cols + j]) for i in (0, 1) for j in (0, 1)]
    )
    hull = ConvexHull(corners).volume
    return {
        "perimeter": 4.0 * n - 2.0 * pairs,
        "axis_major_length": 4 * math.sqrt(l1),
        "axis_minor_length": 4 * math.sqrt(l2),
        "eccentricity": math.sqrt(max(0.0, 1 - l2 / l1)),
        "area_convex": hull,
        "solidity": n / hull,
    }


def test_camelyon16_summaries_match_scipy_on_the_regions() -> None:
    rng = np.random.default_rng(5)
    smooth = ndimage.gaussian_filter(rng.random((60, 60)), 1.5)
    p = ((smooth - smooth.min()) / np.ptp(smooth)) ** 0.3
    fv = HeatmapFeatureExtractor("camelyon16").extract(heatmap(p))
    labels = label(p.astype(np.float32) >= 0.9, connectivity=2)
    props = regionprops(labels)
    assert len(props) > 5
    shapes = [reference_shape(labels == r.label) for r in props]
    for prop, scale in (
        ("area", PX**2),
        ("perimeter", PX),
        ("eccentricity", 1.0),
        ("solidity", 1.0),
    ):
        if prop == "area":
            v = np.array([r.area for r in props], float) * scale
        else:
            v = np.array([s[prop] for s in shapes]) * scale
        u = {"area": "_um2", "perimeter": "_um"}.get(prop, "")
        u2 = {"area": "_um4", "perimeter": "_um2"}.get(prop, "")
        assert fv[f"max_region_{prop}{u}@0.9"] == pytest.approx(v.max())
        assert fv[f"mean_region_{prop}{u}@0.9"] == pytest.approx(v.mean())
        assert fv[f"var_region_{prop}{u2}@0.9"] == pytest.approx(v.var())
        assert fv[f"skew_region_{prop}@0.9"] == pytest.approx(stats.skew(v))
        assert fv[f"kurt_region_{prop}@0.9"] == pytest.approx(stats.kurtosis(v))
    assert fv["n_pixels@0.9"] == (p.astype(np.float32) >= 0.9).sum()


def test_camelyon16_with_one_region_has_zero_skewness_and_kurtosis() -> None:
    p = np.zeros((6, 6))
    p[2:4, 2:4] = 1
    fv = HeatmapFeatureExtractor("camelyon16").extract(heatmap(p))
    assert fv["skew_region_area@0.9"] == fv["kurt_region_area@0.9"] == 0.0
    assert fv["var_region_area_um4@0.9"] == 0.0


# --- tissue and bad input -----------------------------------------------------------------------


def test_nan_outside_tissue_is_normal_and_tissue_comes_from_the_heatmap() -> None:
    p = np.full((6, 8), np.nan)
    tissue = np.zeros((6, 8), bool)
    tissue[1:5, 1:7] = True
    p[tissue] = 0.1
    p[2:4, 2:4] = 0.95
    fv = EXTRACTOR.extract(FakeHeatmap(p, tissue, "slide-7"))
    assert fv.slide_id == "slide-7"
    assert fv["tumor_tissue_ratio@0.9"] == pytest.approx(4 / 24)
    # The same map with tissue = finite pixels (no mask given) gives the same.
    same = EXTRACTOR.extract(heatmap(p), slide_id="x")
    np.testing.assert_array_equal(same.values, fv.values)


def test_tissue_mask_argument_restricts_the_statistics() -> None:
    p = np.zeros((4, 4))
    p[0, 0] = 1.0
    tissue = np.zeros((4, 4), bool)
    tissue[2:, 2:] = True
    fv = EXTRACTOR.extract(heatmap(p), tissue)
    assert fv["max_probability"] == 0.0 and fv["n_regions@0.5"] == 0


def test_an_explicit_tissue_mask_wins_over_the_heatmaps_own() -> None:
    p = np.full((6, 8), 0.1)
    p[1:3, 1:3] = 0.95
    own = np.ones((6, 8), bool)
    explicit = np.zeros((6, 8), bool)
    explicit[3:, 4:] = True  # no tumor in this part
    hm = FakeHeatmap(p, own, "s")
    assert EXTRACTOR.extract(hm)["n_regions@0.9"] == 1
    fv = EXTRACTOR.extract(hm, explicit)
    assert fv["n_regions@0.9"] == 0 and fv["max_probability"] == pytest.approx(0.1)
    table = EXTRACTOR.extract_many([hm, hm], tissue_masks=[explicit, None], progress=False)
    assert table["n_regions@0.9"].tolist() == [0.0, 1.0]


def test_numpy_scalars_are_accepted_as_numbers() -> None:
    p = np.zeros((6, 6))
    p[1:3, 1:3] = 0.95
    plain = HeatmapFeatureExtractor(thresholds=(0.5, 0.75)).extract(heatmap(p))
    for kind in (np.float32, np.float64, np.float16):
        ex = HeatmapFeatureExtractor(thresholds=(kind(0.5), kind(0.75)))
        fv = ex.extract(heatmap(p))
        assert fv.names == plain.names
        np.testing.assert_array_equal(fv.values, plain.values)
    assert HeatmapFeatureExtractor(thresholds=(np.int64(1),)).feature_names()[-1].endswith("@1")
    f = Feature("x", lambda ctx: 1.0, threshold=np.float32(0.5), length_power=np.int64(2))
    assert f.name("um") == "x_um2@0.5" and type(f.threshold) is float
    assert type(f.length_power) is int
    for bad in (True, np.bool_(True), "0.5", float("nan"), np.float32(1.5)):
        with pytest.raises(ParameterError, match=r"\(0, 1\]"):
            HeatmapFeatureExtractor(thresholds=(bad,)).feature_names()
    for bad_power in (True, 1.0, np.float32(2), -1):
        with pytest.raises(ParameterError, match="length_power"):
            Feature("x", lambda ctx: 1.0, length_power=bad_power)


def test_nan_inside_tissue_is_an_error_naming_the_pixel() -> None:
    p = np.full((4, 4), 0.3)
    p[2, 1] = np.nan
    with pytest.raises(FeatureError, match=r"\[2, 1\]"):
        EXTRACTOR.extract(heatmap(p), np.ones((4, 4), bool))


def test_nan_inside_tissue_can_be_excluded_on_request(caplog: pytest.LogCaptureFixture) -> None:
    p = np.full((4, 4), 0.3)
    p[2, 1] = np.nan
    p[0, 0] = 0.95
    ex = HeatmapFeatureExtractor(on_missing="exclude")
    with caplog.at_level(logging.INFO, logger="cervixwsi.features"):
        fv = ex.extract(heatmap(p), np.ones((4, 4), bool))
    assert "1 tissue pixel" in caplog.text
    assert fv["tumor_tissue_ratio@0.9"] == pytest.approx(1 / 15)
    with pytest.raises(ParameterError, match="on_missing"):
        HeatmapFeatureExtractor(on_missing="zero").extract(heatmap(p))  # type: ignore[arg-type]


def test_works_on_the_heatmap_class_of_the_heatmaps_stage() -> None:
    p = np.full((4, 6), np.nan, np.float32)
    p[1:3, 1:5] = [[0.1, 0.95, 0.97, 0.2], [0.3, 0.92, 0.6, 0.1]]
    info = HeatmapInfo("s-42", 256, 0, 1.0, 256.0, 0.5, "demo")
    h = Heatmap(p, 256, (6 * 256, 4 * 256), tissue_mask=np.isfinite(p), info=info, mpp=0.5)
    fv = EXTRACTOR.extract(h)
    assert fv.slide_id == "s-42"
    assert fv["n_regions@0.9"] == 1
    assert fv["total_tumor_area_um2@0.9"] == pytest.approx(3 * 128.0**2)
    assert fv["tumor_tissue_ratio@0.9"] == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    ("p", "mask", "match"),
    [
        (np.full((4, 4), 1.5), None, r"\[0, 1\]"),
        (np.full((4, 4), -0.1), None, r"\[0, 1\]"),
        (np.zeros((4, 4)), np.ones((3, 4), bool), "same grid"),
    ],
)
def test_bad_heatmaps_are_refused(p: np.ndarray, mask: Any, match: str) -> None:
    with pytest.raises(FeatureError, match=match):
        EXTRACTOR.extract(heatmap(p), mask)


def test_not_a_heatmap_is_refused() -> None:
    with pytest.raises(FeatureError, match="2-D"):
        EXTRACTOR.extract(object())  # type: ignore[arg-type]


# --- custom features ------------------------------------------------------------------------------


def test_users_add_their_own_features() -> None:
    def n_small_regions(ctx: FeatureContext) -> float:
        return float((ctx.regions.areas <= 2).sum())

    def largest_convex_area(ctx: FeatureContext) -> float:
        return ctx.regions.largest_property("area_convex")

    extra = [
        Feature("n_small_regions", n_small_regions, "regions of <= 2 pixels", threshold=0.9),
        Feature("largest_convex_area", largest_convex_area, "", threshold=0.5, length_power=2),
    ]
    p = np.zeros((8, 8))
    p[0, 0] = p[5, 5] = p[2, 2:7] = 1.0
    fv = HeatmapFeatureExtractor(extra_features=extra).extract(heatmap(p))
    assert fv.names[-2:] == ("n_small_regions@0.9", "largest_convex_area_um2@0.5")
    assert fv["n_small_regions@0.9"] == 2
    assert fv["largest_convex_area_um2@0.5"] == pytest.approx(5 * PX**2)
    only = HeatmapFeatureExtractor(preset=extra).extract(heatmap(p))
    assert only.preset is None and len(only) == 2


def test_a_feature_that_gives_nan_or_has_a_bad_key_is_refused() -> None:
    nan_feature = Feature("broken", lambda ctx: float("nan"))
    with pytest.raises(FeatureError, match="broken"):
        HeatmapFeatureExtractor(preset=[nan_feature]).extract(heatmap(np.zeros((3, 3))))
    with pytest.raises(ParameterError, match="unit suffix"):
        Feature("area_um2", lambda ctx: 0.0)
    with pytest.raises(ParameterError, match="unique"):
        HeatmapFeatureExtractor(
            extra_features=[Feature("max_probability", lambda c: 0)]
        ).feature_names()


def test_regions_tie_break_does_not_depend_on_position() -> None:
    p = np.zeros((9, 9))
    p[0, 0:4] = 1.0  # 4 pixels in a line: extent 1
    p[5:7, 5:7] = 1.0  # 4 pixels in a square: extent 1, shorter major axis
    tissue = np.ones_like(p, bool)
    for q in (p, p[::-1, ::-1]):
        r = Regions(q, tissue, 0.5)
        assert r.count == 2
        # The line of 4 pixel squares: var = 4² / 12 along it.
        assert r.largest_property("axis_major_length") == pytest.approx(4 * math.sqrt(16 / 12))


SHAPES = {
    # name: (pixels, perimeter, var_major, var_minor, hull area); variances of the
    # union of the pixel squares (pixel centres + 1/12), hull of the squares' corners.
    "pixel": (np.ones((1, 1)), 4, 1 / 12, 1 / 12, 1),
    "row of 5": (np.ones((1, 5)), 12, 25 / 12, 1 / 12, 5),
    "3 x 7 rectangle": (np.ones((3, 7)), 20, 49 / 12, 9 / 12, 21),
    # Centres (0, 0), (1, 1), (2, 2): var 2/3 + 1/12 on each axis, covariance 2/3.
    "diagonal of 3": (np.eye(3), 12, 3 / 4 + 2 / 3, 3 / 4 - 2 / 3, 9 - 2 * 2),
    # The 10 x 10 box less the triangle cut off above the L's diagonal: 100 - 8 * 8 / 2.
    # A 10 x 2 bar and the 8 x 2 rest of a 2 x 10 bar (areas 20 and 16): var 707/81
    # on each axis, covariance 400/81 (by hand, from the two rectangles' moments).
    # Hull: the 10 x 10 box less the triangle above the L's diagonal, 100 - 8 * 8 / 2.
    "L": (
        np.pad(np.ones((10, 2)), ((0, 0), (0, 8))) + np.pad(np.ones((2, 10)), ((8, 0), (0, 0))),
        40,
        (707 + 400) / 81,
        (707 - 400) / 81,
        68,
    ),
    # 5 x 5 less its centre: var (25·25/12 - 1/12) / 24 = 26/12 on each axis; the
    # hole's 4 edges count in the perimeter, not in the hull.
    "ring": (np.pad(np.zeros((1, 1)), 2, constant_values=1), 24, 26 / 12, 26 / 12, 25),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_measures_of_known_regions(shape: str) -> None:
    mask, perimeter, var1, var2, hull = SHAPES[shape]
    mask = mask > 0
    p = np.pad(mask.astype(float), 2)
    r = Regions(p, np.ones_like(p, bool), 0.5)
    assert r.count == 1
    n = int(mask.sum())
    expected = {
        "perimeter": perimeter,
        "axis_major_length": 4 * math.sqrt(var1),
        "axis_minor_length": 4 * math.sqrt(var2),
        "eccentricity": math.sqrt(1 - var2 / var1),
        "area_convex": hull,
        "solidity": n / hull,
        "extent": n / mask.size,
    }
    for name, value in expected.items():
        # The largest region's measures (from its crop) and the vectorised columns.
        assert r.largest_property(name) == pytest.approx(value, rel=1e-12, abs=1e-12), name
        assert r.column(name)[0] == pytest.approx(value, rel=1e-12, abs=1e-12), name
        assert math.isfinite(r.largest_property(name))


def test_l_shape_has_the_solidity_of_its_known_hull() -> None:
    ell = np.zeros((12, 12))
    ell[1:11, 1:3] = ell[9:11, 1:11] = 0.99
    f = features(ell)
    assert f["largest_region_solidity@0.9"] == 36 / 68
    assert f["largest_region_perimeter_um@0.9"] == 40 * PX


# --- properties -----------------------------------------------------------------------------------

maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.sampled_from([0.0, 0.3, 0.55, 0.7, 0.92, 1.0]),
)
# Every feature in physical units, except the 99th percentile (np.percentile
# interpolates between ranks, which replication moves) and the camelyon16 preset's
# n_pixels (a count of heatmap pixels, stride-dependent by definition).
STRIDE_DEPENDENT = ("p99_probability", "n_pixels@")
SHAPE_MEASURES = ("perimeter", "major_axis", "eccentricity", "solidity")


def upsampled(p: np.ndarray, k: int) -> Raster:
    """The same physical heatmap at stride 256 / k: each pixel split into k x k."""
    return heatmap(np.kron(p, np.ones((k, k))), stride=STRIDE / k)


@given(p=maps, k=st.sampled_from([2, 3]))
def test_physical_features_do_not_depend_on_the_stride(p: np.ndarray, k: int) -> None:
    for ex in (EXTRACTOR, HeatmapFeatureExtractor("camelyon16")):
        coarse = ex.extract(heatmap(p))
        fine = ex.extract(upsampled(p, k))
        assert coarse.names == fine.names
        compared = 0
        for name, a, b in zip(coarse.names, coarse.values, fine.values, strict=True):
            if not name.startswith(STRIDE_DEPENDENT):
                assert b == pytest.approx(a, rel=1e-9, abs=1e-9), name
                compared += name.startswith(("largest_region_", "max_region_")) and any(
                    m in name for m in SHAPE_MEASURES
                )
        assert compared == (8 if ex is EXTRACTOR else 4)


def test_the_issues_rectangle_keeps_its_perimeter_at_half_the_stride() -> None:
    # The issue's example: split into 2 x 2, this rectangle's perimeter was 2816 -> 3072 µm.
    p = np.zeros((12, 16))
    p[3:7, 2:11] = 0.95
    coarse, fine = EXTRACTOR.extract(heatmap(p)), EXTRACTOR.extract(upsampled(p, 2))
    name = "largest_region_perimeter_um@0.9"
    assert coarse[name] == fine[name] == 2 * (9 + 4) * PX


@given(p=maps)
def test_shape_measures_match_an_independent_computation(p: np.ndarray) -> None:
    r = Regions(p, np.ones(p.shape, bool), 0.5)
    references = [reference_shape(r.labels == i + 1) for i in range(r.count)]
    for name in ("perimeter", "axis_major_length", "eccentricity", "area_convex", "solidity"):
        expected = [ref[name] for ref in references]
        np.testing.assert_allclose(r.column(name), expected, rtol=1e-9, atol=1e-9, err_msg=name)
        if r.count:
            assert r.largest_property(name) == pytest.approx(
                expected[r.largest], rel=1e-9, abs=1e-9
            )


def test_huge_regions_take_the_slow_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    p = ndimage.gaussian_filter(rng.random((40, 50)), 1.0)
    p = (p - p.min()) / np.ptp(p)
    fast = Regions(p, np.ones(p.shape, bool), 0.5)
    monkeypatch.setattr("cervixwsi.features._regions._EXACT_FLOAT_INT", 1)  # as if sums could round
    slow = Regions(p, np.ones(p.shape, bool), 0.5)
    assert fast.count > 3
    for name in ("axis_major_length", "axis_minor_length", "eccentricity"):
        np.testing.assert_array_equal(slow.column(name), fast.column(name))


def test_shape_columns_of_a_map_without_regions_are_empty() -> None:
    r = Regions(np.zeros((4, 5)), np.ones((4, 5), bool), 0.5)
    for name in ("perimeter", "axis_major_length", "eccentricity", "solidity", "extent"):
        assert r.column(name).shape == (0,)
        assert r.largest_property(name) == 0.0
    fv = HeatmapFeatureExtractor("camelyon16").extract(heatmap(np.zeros((4, 5))))
    assert (fv.values == 0).all()


@given(p=maps, k=st.integers(0, 3), flip=st.booleans())
def test_rotations_and_flips_do_not_change_features(p: np.ndarray, k: int, flip: bool) -> None:
    q = np.rot90(p, k)
    q = q[:, ::-1] if flip else q
    for ex in (EXTRACTOR, HeatmapFeatureExtractor("camelyon16")):
        a = ex.extract(heatmap(p)).values
        b = ex.extract(heatmap(np.ascontiguousarray(q))).values
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-6)


@given(p=maps, lo_milli=st.integers(50, 999), step_milli=st.integers(1, 950))
def test_raising_the_threshold_never_increases_the_tumor_area(
    p: np.ndarray, lo_milli: int, step_milli: int
) -> None:
    # Two distinct thresholds in [0.05, 1] by construction: no example passes vacuously.
    lo, hi = lo_milli / 1000, min(lo_milli + step_milli, 1000) / 1000
    assert lo < hi
    fv = HeatmapFeatureExtractor(thresholds=(lo, hi)).extract(heatmap(p))
    assert fv[f"total_tumor_area_um2@{hi:g}"] <= fv[f"total_tumor_area_um2@{lo:g}"]
    assert fv[f"tumor_tissue_ratio@{hi:g}"] <= fv[f"tumor_tissue_ratio@{lo:g}"]
    if fv[f"n_regions@{hi:g}"]:  # without regions the mean probability is 0 by definition
        mean_hi, mean_lo = (
            fv[f"mean_region_probability@{hi:g}"],
            fv[f"mean_region_probability@{lo:g}"],
        )
        assert mean_hi >= mean_lo - 1e-12


# --- many heatmaps and tables -------------------------------------------------------------------


def _maps(rng: np.random.Generator, n: int) -> list[Raster]:
    return [heatmap(rng.random((10, 12)) ** 2) for _ in range(n)]


def test_extract_many_stacks_rows_in_order(rng: np.random.Generator) -> None:
    hms = _maps(rng, 4)
    table = EXTRACTOR.extract_many(iter(hms), slide_ids=["a", "b", "c", "d"], progress=False)
    assert table.shape == (4, 28) and table.slide_ids == ("a", "b", "c", "d")
    assert table.preset == "cervix28"
    np.testing.assert_array_equal(table.values[2], EXTRACTOR.extract(hms[2]).values)


def test_extract_many_refuses_mixed_units(rng: np.random.Generator) -> None:
    hms = [*_maps(rng, 1), heatmap(rng.random((10, 12)), mpp=None)]
    with pytest.raises(FeatureError, match="mpp"):
        EXTRACTOR.extract_many(hms, progress=False)


def test_extract_many_names_the_bad_heatmap(rng: np.random.Generator) -> None:
    bad = rng.random((10, 12))
    bad[3, 3] = np.nan
    masks = [None, np.ones((10, 12), bool)]
    with pytest.raises(FeatureError, match="heatmap 1"):
        EXTRACTOR.extract_many([*_maps(rng, 1), heatmap(bad)], tissue_masks=masks, progress=False)


def test_extract_many_needs_one_mask_and_id_per_heatmap(rng: np.random.Generator) -> None:
    hms = _maps(rng, 3)
    with pytest.raises(ParameterError, match="tissue_masks ran out at heatmap 2"):
        EXTRACTOR.extract_many(hms, tissue_masks=[None, None], progress=False)
    with pytest.raises(ParameterError, match="more tissue_masks than the 3 heatmaps"):
        EXTRACTOR.extract_many(hms, tissue_masks=[None] * 4, progress=False)
    with pytest.raises(ParameterError, match="2 slide_ids"):
        EXTRACTOR.extract_many(hms, slide_ids=["a", "b"], progress=False)
    with pytest.raises(ParameterError, match="4 slide_ids for 3"):
        EXTRACTOR.extract_many(hms, slide_ids=["a", "b", "c", "d"], progress=False)
    empty = EXTRACTOR.extract_many([], progress=False)
    assert empty.shape == (0, 28) and empty.names == EXTRACTOR.feature_names()


def test_feature_table_round_trips_through_csv(rng: np.random.Generator, tmp_path: Path) -> None:
    table = EXTRACTOR.extract_many(_maps(rng, 3), slide_ids=["a,1", "b", "c"], progress=False)
    back = FeatureTable.from_csv(table.to_csv(tmp_path / "f.csv"), preset="cervix28")
    assert back == table
    assert FeatureTable.from_csv(tmp_path / "f.csv") != table  # no preset
    sub = table.select(["tumor_tissue_ratio@0.9", "max_probability"])
    assert sub.names == ("tumor_tissue_ratio@0.9", "max_probability")
    np.testing.assert_array_equal(sub.values[:, 1], table["max_probability"])
    with pytest.raises(FeatureError, match="nope"):
        table.select(["nope"])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "not a feature table"),
        ("slide_id,a,b\ns1,1.0,2.0\ns2,3.0", "truncated"),
        ("slide_id,a,b\ns1,1.0,abc\n", "line 2"),
        ("id,a\n", "not a feature table"),
        ("slide_id,a,a\ns1,1,2\n", "unique"),
    ],
)
def test_bad_csv_files_are_refused(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ResultFileError, match=match):
        FeatureTable.from_csv(path)


def test_missing_and_binary_csv_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ResultFileError, match=r"missing\.csv"):
        FeatureTable.from_csv(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ResultFileError):
        FeatureTable.from_csv(tmp_path / "bin.csv")


def test_preset_features_are_the_extractors() -> None:
    names = [f.name("um") for f in preset_features("cervix28", (0.5, 0.9))]
    assert tuple(names) == EXTRACTOR.feature_names()
