"""Boxes, windows and rasters: the coordinate conventions everything else relies on."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cervixwsi.errors import GeometryError
from cervixwsi.geometry import Box, Raster, Window, axis_overlap_matrix, level_for_downsample

TOL = 1e-6  # level-0 pixels

# Downsamples as real pyramids have them: integers, powers of two, and near-integers
# such as 4.0003 (SVS levels whose sizes do not divide exactly).
downsamples = st.one_of(
    st.sampled_from([1.0, 2.0, 4.0, 4.0003, 3.9993, 16.0, 32.0, 256.0, 7.5]),
    st.floats(min_value=0.5, max_value=300.0, allow_nan=False, allow_infinity=False),
)
dimensions = st.tuples(st.integers(1, 5000), st.integers(1, 5000))


def covering_shape(
    width: int, height: int, d: float, rounding: Callable[[float], int]
) -> tuple[int, int]:
    """``(rows, cols)`` of a raster over the slide: ceil (covers it) or floor (a level's
    own size, e.g. 741 rows for 2967 pixels at downsample 4), never fewer than 1."""
    return max(rounding(height / d), 1), max(rounding(width / d), 1)


shape_roundings = st.sampled_from([math.ceil, math.floor])


@st.composite
def raster_and_box(draw: st.DrawFn) -> tuple[Raster, Box]:
    width, height = draw(dimensions)
    d = draw(downsamples)
    rows, cols = covering_shape(width, height, d, draw(shape_roundings))
    raster = Raster(np.zeros((rows, cols), bool), d, (width, height))
    x = draw(st.floats(-width, 2 * width, allow_nan=False))
    y = draw(st.floats(-height, 2 * height, allow_nan=False))
    w = draw(st.floats(0, 2 * width, allow_nan=False))
    h = draw(st.floats(0, 2 * height, allow_nan=False))
    return raster, Box(x, y, w, h)


def level0_extent_of(raster: Raster, window: Window) -> Box:
    """The unclipped level-0 extent of a window, computed independently of Raster.

    A window that reaches the raster's last row (column) reaches the slide's edge.
    """
    d = raster.downsample
    rows, cols = raster.shape
    width, height = raster.slide_dimensions
    x1 = max(window.col1 * d, width) if window.col1 == cols else window.col1 * d
    y1 = max(window.row1 * d, height) if window.row1 == rows else window.row1 * d
    return Box.from_bounds(window.col0 * d, window.row0 * d, x1, y1)


# --- Box -------------------------------------------------------------------------------


class TestBox:
    def test_edges_area_and_center(self) -> None:
        box = Box(10, 20, 30, 40)
        assert (box.x1, box.y1, box.area, box.center) == (40, 60, 1200, (25, 40))
        assert box.bounds() == (10, 20, 40, 60)
        assert Box.from_bounds(10, 20, 40, 60) == box

    def test_intersection_of_disjoint_or_touching_boxes_is_none(self) -> None:
        assert Box(0, 0, 10, 10).intersection(Box(10, 0, 5, 5)) is None
        assert not Box(0, 0, 10, 10).intersects(Box(20, 20, 1, 1))

    def test_contains_and_contains_point_are_half_open(self) -> None:
        box = Box(0, 0, 10, 10)
        assert box.contains(Box(0, 0, 10, 10))
        assert not box.contains(Box(1, 1, 10, 1))
        assert box.contains_point(0, 0)
        assert not box.contains_point(10, 5)

    def test_round_out_covers_the_box_with_integers(self) -> None:
        assert Box(0.5, 1.2, 2.0, 2.9).round_out() == Box(0, 1, 3, 4)

    @pytest.mark.parametrize(
        "args", [(0, 0, -1, 5), (0, 0, 5, -1), (math.nan, 0, 1, 1), (0, math.inf, 1, 1)]
    )
    def test_invalid_boxes_are_refused(self, args: tuple[float, ...]) -> None:
        with pytest.raises(GeometryError):
            Box(*args)

    def test_scale_refuses_non_positive_factors(self) -> None:
        with pytest.raises(GeometryError, match="positive"):
            Box(0, 0, 1, 1).scale(0)

    def test_intersection_does_not_round_past_the_boxes_it_came_from(self) -> None:
        # 1.8665... + (4098.82... - 1.8665...) rounds one ulp above 4098.82... in floats.
        a, b = Box(1.8665199742076766, 0.0, 4097.0, 1.0), Box(0.0, 0.0, 4098.824419642516, 1.0)
        inter = a.intersection(b)
        assert inter is not None and a.contains(inter) and b.contains(inter)
        assert inter.width == pytest.approx(4096.9578996683085, abs=1e-9)

    @given(
        st.tuples(*[st.floats(-1e4, 1e4) for _ in range(2)], *[st.floats(0, 1e4)] * 2),
        st.tuples(*[st.floats(-1e4, 1e4) for _ in range(2)], *[st.floats(0, 1e4)] * 2),
    )
    def test_intersection_lies_in_both_and_is_symmetric(
        self, a: tuple[float, ...], b: tuple[float, ...]
    ) -> None:
        box_a, box_b = Box(*a), Box(*b)
        inter = box_a.intersection(box_b)
        assert inter == box_b.intersection(box_a)
        if inter is not None:
            assert box_a.contains(inter)
            assert box_b.contains(inter)
            assert inter.area <= min(box_a.area, box_b.area) + 1e-6

    @given(
        st.tuples(*[st.floats(-1e4, 1e4) for _ in range(2)], *[st.floats(0, 1e4)] * 2),
        st.floats(1e-3, 1e3),
    )
    def test_scale_round_trips(self, coords: tuple[float, ...], factor: float) -> None:
        box = Box(*coords)
        back = box.scale(factor).scale(1 / factor)
        for u, v in zip(box.bounds(), back.bounds(), strict=True):
            assert u == pytest.approx(v, rel=1e-9, abs=1e-9)


# --- Raster construction ------------------------------------------------------------------


class TestRasterConstruction:
    def test_accepts_floor_or_ceil_shapes_of_non_integer_levels(self) -> None:
        # A real SVS: 2220 x 2967 at level 0, 555 x 741 at level 1 (downsample 4.002).
        raster = Raster.from_level(np.zeros((741, 555)), (555, 741), (2220, 2967))
        assert raster.downsample == pytest.approx((2220 / 555 + 2967 / 741) / 2)
        Raster(np.zeros((742, 555)), raster.downsample, (2220, 2967))

    @pytest.mark.parametrize("shape", [(10, 3), (4, 10), (1, 4), (3, 5)])
    def test_refuses_a_mask_of_another_slide(self, shape: tuple[int, int]) -> None:
        # 1000 x 700 at downsample 256 is 3 rows x 4 columns (floor 2 x 3 is also valid).
        with pytest.raises(GeometryError, match="another slide"):
            Raster(np.zeros(shape), 256, (1000, 700))

    @pytest.mark.parametrize("d", [0, -1, math.nan, math.inf])
    def test_refuses_bad_downsamples(self, d: float) -> None:
        with pytest.raises(GeometryError, match="downsample"):
            Raster(np.zeros((4, 4)), d, (4, 4))

    def test_refuses_non_2d_arrays_and_bad_dimensions(self) -> None:
        with pytest.raises(GeometryError, match="2-D"):
            Raster(np.zeros((4, 4, 3)), 1, (4, 4))
        with pytest.raises(GeometryError, match="slide_dimensions"):
            Raster(np.zeros((4, 4)), 1, (0, 4))
        with pytest.raises(GeometryError, match="mpp"):
            Raster(np.zeros((4, 4)), 1, (4, 4), mpp=-0.25)

    def test_pixel_size_in_micrometres(self) -> None:
        heat = Raster(np.zeros((4, 4)), 256, (1024, 1024), mpp=0.25)
        assert heat.pixel_size_um == 64.0
        assert Raster(np.zeros((4, 4)), 256, (1024, 1024)).pixel_size_um is None


# --- level-0 <-> raster ----------------------------------------------------------------------


class TestWindows:
    def test_edge_pixels_are_clipped_to_the_slide(self) -> None:
        raster = Raster(np.zeros((3, 4)), 256, (1000, 700))
        assert raster.pixel_to_box(2, 3) == Box(768, 512, 232, 188)
        assert raster.window_to_box(Window(0, 3, 0, 4)) == Box(0, 0, 1000, 700)

    def test_box_outside_gives_an_empty_window(self) -> None:
        raster = Raster(np.zeros((3, 4)), 256, (1000, 700))
        assert raster.box_to_window(Box(2000, 2000, 10, 10)).is_empty
        assert raster.box_to_window(Box(-50, -50, 10, 10)).is_empty

    def test_to_index_floors_and_refuses_outside_points(self) -> None:
        raster = Raster(np.zeros((3, 4)), 256, (1000, 700))
        assert raster.to_index(255.999, 256) == (1, 0)
        rows, cols = raster.to_index(np.array([0, 999]), np.array([699, 0]))
        assert rows.tolist() == [2, 0]
        assert cols.tolist() == [0, 3]
        with pytest.raises(GeometryError, match=r"\(1000, 0\) is outside"):
            raster.to_index(1000, 0)
        assert raster.to_index(5000, -3, clip=True) == (0, 3)

    def test_floor_shaped_raster_last_pixel_reaches_the_slide_edge(self) -> None:
        # A level's own size: 10 level-0 pixels at downsample 4 make 2 pixels, not 3.
        raster = Raster(np.arange(4.0).reshape(2, 2), 4, (10, 10))
        assert raster.to_index(9, 9) == (1, 1)
        assert raster.box_to_window(Box(9, 9, 1, 1)) == Window(1, 2, 1, 2)
        assert raster.box_to_window(Box(8.5, 0, 3, 1)) == Window(0, 1, 1, 2)
        assert raster.box_to_window(Box(10, 10, 1, 1)).is_empty  # outside the slide
        assert raster.pixel_to_box(1, 1) == Box(4, 4, 6, 6)
        assert raster.window_to_box(Window(0, 2, 0, 2)) == Box(0, 0, 10, 10)
        assert raster.window_to_box(Window(2, 2, 2, 2)).is_empty
        # Area resampling to one pixel weighs the last pixel by its 6 x 6 level-0 area.
        one = raster.resample(10, method="area").array
        assert one.shape == (1, 1)
        assert one[0, 0] == pytest.approx((0 * 16 + 1 * 24 + 2 * 24 + 3 * 36) / 100)

    def test_non_integer_downsample_multiples_map_to_their_own_pixel(self) -> None:
        d = 4.0003
        raster = Raster(np.zeros((250, 250)), d, (1000, 1000))
        for k in (1, 3, 7, 100, 249):
            assert raster.to_index(k * d, k * d) == (k, k)

    @given(raster_and_box())
    def test_window_covers_the_box_and_stays_in_the_array(self, rb: tuple[Raster, Box]) -> None:
        raster, box = rb
        window = raster.box_to_window(box)
        rows, cols = raster.shape
        assert 0 <= window.row0 <= window.row1 <= rows
        assert 0 <= window.col0 <= window.col1 <= cols
        inside = box.clip(*raster.slide_dimensions)
        if inside is None:
            return
        extent = level0_extent_of(raster, window)
        assert extent.x <= inside.x + TOL and extent.y <= inside.y + TOL
        assert inside.x1 <= extent.x1 + TOL and inside.y1 <= extent.y1 + TOL
        # ... and is the smallest such window: dropping any edge row/column uncovers it
        # (the last column ends at the slide's edge, also in a floor-shaped raster).
        d, width = raster.downsample, raster.slide_dimensions[0]
        first_col_end = width if window.col0 == cols - 1 else (window.col0 + 1) * d
        assert first_col_end > inside.x - TOL
        assert (window.col1 - 1) * d < inside.x1 + TOL

    @given(raster_and_box())
    def test_a_box_outside_the_slide_gives_an_empty_window(self, rb: tuple[Raster, Box]) -> None:
        raster, box = rb
        width, height = raster.slide_dimensions
        beyond = [
            Box(width + abs(box.x), box.y, box.width + 1, box.height + 1),  # right of it
            Box(box.x, height + abs(box.y), box.width + 1, box.height + 1),  # below it
            Box(-box.width - 1, box.y, box.width + 1, box.height),  # left of it
        ]
        for outside in beyond:
            assert raster.box_to_window(outside).is_empty, outside
        assert raster.read(beyond[0])[0].size == 0

    @given(raster_and_box())
    def test_window_box_window_round_trips(self, rb: tuple[Raster, Box]) -> None:
        raster, box = rb
        window = raster.box_to_window(box)
        assume(not window.is_empty)
        assert raster.box_to_window(raster.window_to_box(window)) == window

    @given(dimensions, downsamples, shape_roundings, st.data())
    def test_every_pixel_box_is_inside_the_slide_and_indexes_back(
        self, dims: tuple[int, int], d: float, rounding: Any, data: st.DataObject
    ) -> None:
        width, height = dims
        rows, cols = covering_shape(width, height, d, rounding)
        raster = Raster(np.zeros((rows, cols)), d, dims)
        row = data.draw(st.integers(0, rows - 1))
        col = data.draw(st.integers(0, cols - 1))
        box = raster.pixel_to_box(row, col)
        assert raster.extent.contains(box)
        assert not box.is_empty
        # The box's first and last level-0 pixels index back to the same raster pixel.
        assert raster.to_index(box.x, box.y) == (row, col)
        last_x = math.ceil(box.x1) - 1
        last_y = math.ceil(box.y1) - 1
        if last_x >= box.x and last_y >= box.y:
            assert raster.to_index(last_x, last_y) == (row, col)

    @given(dimensions, downsamples, shape_roundings)
    def test_pixel_boxes_tile_the_slide_without_gaps_or_overlaps(
        self, dims: tuple[int, int], d: float, rounding: Any
    ) -> None:
        width, height = dims
        rows, cols = covering_shape(width, height, d, rounding)
        assume(rows * cols <= 2000)
        raster = Raster(np.zeros((rows, cols)), d, dims)
        first_row = [raster.pixel_to_box(0, c) for c in range(cols)]
        first_col = [raster.pixel_to_box(r, 0) for r in range(rows)]
        assert first_row[0].x == 0 and first_col[0].y == 0
        assert first_row[-1].x1 == width and first_col[-1].y1 == height
        for a, b in itertools.pairwise(first_row):
            assert a.x1 == b.x  # abutting: no gap, no overlap
        for a, b in itertools.pairwise(first_col):
            assert a.y1 == b.y
        area = sum(raster.pixel_to_box(r, c).area for r in range(rows) for c in range(cols))
        assert area == pytest.approx(width * height, rel=1e-9)


# --- resampling ------------------------------------------------------------------------------


class TestResample:
    def test_area_resampling_weighs_exact_overlaps(self) -> None:
        m = axis_overlap_matrix(2, 3.0, 3, 2.0, 6.0).toarray()
        np.testing.assert_array_equal(m, [[2, 1, 0], [0, 1, 2]])

    def test_area_resampling_of_a_mask_gives_fractions(self) -> None:
        mask = Raster(np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1]], bool), 1, (3, 3))
        coarse = mask.resample(2, method="area")
        # 2x2 blocks clipped at the edges: [[1,0],[0,0]] [[0],[0]] / [[1,1]] [[1]].
        np.testing.assert_allclose(coarse.array, [[0.25, 0.0], [1.0, 1.0]])

    def test_area_resampling_ignores_nan(self) -> None:
        heat = Raster(np.array([[np.nan, 0.8], [np.nan, np.nan]]), 2, (4, 4))
        np.testing.assert_allclose(heat.resample(4, method="area").array, [[0.8]])
        assert np.isnan(heat.resample(2, method="area").array[1, 1])

    def test_nearest_keeps_dtype(self) -> None:
        labels = Raster(np.arange(6, dtype=np.int32).reshape(2, 3), 2.0, (6, 4))
        up = labels.resample(1.0)
        assert up.dtype == np.int32
        np.testing.assert_array_equal(up.array[::2, ::2], labels.array)

    def test_unknown_method(self) -> None:
        with pytest.raises(GeometryError, match="method"):
            Raster(np.zeros((2, 2)), 1, (2, 2)).resample(1, method="cubic")  # type: ignore[arg-type]

    @given(dimensions, downsamples, downsamples, st.integers(0, 2**32 - 1))
    def test_area_resampling_preserves_the_level0_integral(
        self, dims: tuple[int, int], d_in: float, d_out: float, seed: int
    ) -> None:
        width, height = dims
        rows, cols = math.ceil(height / d_in), math.ceil(width / d_in)
        assume(rows * cols <= 200_000)
        assume(math.ceil(height / d_out) * math.ceil(width / d_out) <= 200_000)
        values = np.random.default_rng(seed).random((rows, cols))
        src = Raster(values, d_in, dims)
        dst = src.resample(d_out, method="area")

        def integral(r: Raster) -> float:
            xs = np.array([r.pixel_to_box(0, c).width for c in range(r.shape[1])])
            ys = np.array([r.pixel_to_box(rr, 0).height for rr in range(r.shape[0])])
            return float(ys @ r.array @ xs)

        assert integral(dst) == pytest.approx(integral(src), rel=1e-9)

    @given(dimensions, downsamples, st.integers(1, 8))
    def test_nearest_upsample_then_downsample_is_identity(
        self, dims: tuple[int, int], d: float, k: int
    ) -> None:
        width, height = dims
        rows, cols = math.ceil(height / d), math.ceil(width / d)
        assume(rows * cols * k * k <= 500_000)
        labels = np.arange(rows * cols).reshape(rows, cols)
        src = Raster(labels, d, dims)
        fine = src.resample(d / k)
        back = fine.resample(d)
        np.testing.assert_array_equal(back.array, labels)


# --- choosing a level --------------------------------------------------------------------------


@given(
    st.lists(st.floats(1.0, 512.0), min_size=1, max_size=8).map(lambda d: [1.0, *sorted(d)]),
    st.floats(0.1, 1000.0),
)
def test_level_for_downsample_is_the_coarsest_level_not_coarser_than_asked(
    downsamples: list[float], target: float
) -> None:
    k = level_for_downsample(downsamples, target)
    fine_enough = [i for i, d in enumerate(downsamples) if d <= target * 1.01]
    if not fine_enough:
        assert k == 0  # even level 0 is coarser: read level 0
    else:
        assert downsamples[k] <= target * 1.01
        assert downsamples[k] == max(downsamples[i] for i in fine_enough)


def test_pixel_edges_that_are_integers_up_to_rounding_are_integers() -> None:
    # 230 * 1.1 == 253.00000000000003 in floats: the pixel still ends at level-0 y = 253.
    raster = Raster(np.zeros((231, 1)), 1.1, (1, 254))
    box = raster.pixel_to_box(229, 0)
    assert box.y1 == 253
    assert raster.to_index(0, 252) == (229, 0)
