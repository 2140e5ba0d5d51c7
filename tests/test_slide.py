"""Tests of cervixwsi.slide: Slide against OpenSlide and known arrays, ArraySlide, errors."""

from __future__ import annotations

import math
import multiprocessing
import operator
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

import cervixwsi
from cervixwsi.errors import (
    CervixWSIError,
    LevelError,
    ParameterError,
    RegionError,
    SlideNotFoundError,
    SlideOpenError,
    SlideReadError,
)
from cervixwsi.geometry import resolve_level
from cervixwsi.slide import ArraySlide, BaseSlide, Slide
from cervixwsi.slide._tilecache import TileCache

REAL_SLIDES = [
    "cmu_small_region.svs",
    "openslide-python_small.svs",
    "openslide-python_boxes.tiff",
]

# --- helpers ----------------------------------------------------------------------------


def openslide_rgb(osr: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
    """OpenSlide's region composited over white (it returns transparent pixels outside)."""
    rgba = np.asarray(osr.read_region(location, level, size)).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def reference_region(level: npt.NDArray[np.uint8], x0: int, y0: int, w: int, h: int) -> Any:
    """Pixels [y0, y0+h) x [x0, x0+w) of an array by fancy indexing, white outside."""
    rows, cols = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
    inside_r = (rows >= 0) & (rows < level.shape[0])
    inside_c = (cols >= 0) & (cols < level.shape[1])
    out = np.full((h, w, 3), 255, np.uint8)
    out[np.ix_(inside_r, inside_c)] = level[np.ix_(rows[inside_r], cols[inside_c])]
    return out


def nearest(q: float) -> int:
    return math.floor(q + 0.5)


def smooth_image(height: int, width: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """An H&E-ish image with structure at several scales (so JPEG and levels are realistic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 170 + 50 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    noise = rng.normal(0, 12, (height, width, 3))
    image = np.stack([base + 40, base - 30, base + 20], axis=-1) + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def pyramid_levels(image: npt.NDArray[np.uint8], n: int) -> list[npt.NDArray[np.uint8]]:
    """Levels by 2x2 block means, each ``floor(size / 2)`` of the previous (odd sizes)."""
    levels = [image]
    for _ in range(n - 1):
        prev = levels[-1].astype(np.float64)
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        block = prev[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
        levels.append(np.round(block).astype(np.uint8))
    return levels


def write_tiff_pyramid(
    path: Path,
    levels: list[npt.NDArray[np.uint8]],
    *,
    compression: str | int = "zlib",
    layout: str = "pages",
    tile: int = 128,
    resolution_cm: float | None = None,
) -> Path:
    """A pyramidal TIFF written with tifffile: reduced-resolution pages or SubIFDs."""
    res: dict[str, Any] = {}
    if resolution_cm is not None:
        res = {"resolution": (resolution_cm, resolution_cm), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tif:
        if layout == "subifds":
            tif.write(
                levels[0],
                tile=(tile, tile),
                compression=compression,
                subifds=len(levels) - 1,
                photometric="rgb",
                **res,
            )
            for level in levels[1:]:
                tif.write(
                    level,
                    tile=(tile, tile),
                    compression=compression,
                    subfiletype=1,
                    photometric="rgb",
                )
        else:
            tif.write(
                levels[0], tile=(tile, tile), compression=compression, photometric="rgb", **res
            )
            for level in levels[1:]:
                tif.write(
                    level,
                    tile=(tile, tile),
                    compression=compression,
                    subfiletype=1,
                    photometric="rgb",
                )
    return path


def random_boxes(
    rng: np.random.Generator, width: int, height: int, n: int, max_size: int = 160
) -> list[tuple[int, int, int, int]]:
    """Random (x, y, w, h) in level-0 pixels, many crossing the slide's edges, a few outside."""
    boxes = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(1, max_size, 2))
        x = int(rng.integers(-w - 20, width + 20))
        y = int(rng.integers(-h - 20, height + 20))
        boxes.append((x, y, w, h))
    boxes += [(-500, -500, 30, 30), (width, height, 10, 10), (width - 5, height - 5, 40, 40)]
    return boxes


@pytest.fixture(scope="module")
def odd_pyramid() -> list[npt.NDArray[np.uint8]]:
    """1001x777 with levels 500x388, 250x194, 125x97: downsamples 2.0012, 4.0046, ..."""
    return pyramid_levels(smooth_image(777, 1001), 4)


@pytest.fixture(scope="module")
def deflate_pages(tmp_path_factory: pytest.TempPathFactory, odd_pyramid: Any) -> Path:
    path = tmp_path_factory.mktemp("pyr") / "deflate_pages.tif"
    return write_tiff_pyramid(path, odd_pyramid, compression="zlib", resolution_cm=40_000.0)


@pytest.fixture(scope="module")
def jpeg_pages(tmp_path_factory: pytest.TempPathFactory, odd_pyramid: Any) -> Path:
    path = tmp_path_factory.mktemp("pyr") / "jpeg_pages.tif"
    return write_tiff_pyramid(path, odd_pyramid, compression="jpeg", tile=256)


# --- the real slides in tests/data, against OpenSlide -----------------------------------


@pytest.mark.parametrize("name", REAL_SLIDES)
def test_real_slide_geometry_and_metadata_equal_openslides(
    real_slides: Path, name: str, openslide: Any
) -> None:
    path = real_slides / name
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        assert slide.dimensions == osr.dimensions
        assert slide.level_count == osr.level_count
        assert slide.level_dimensions == osr.level_dimensions
        assert slide.level_downsamples == osr.level_downsamples
        assert slide.mpp == (
            float(osr.properties["openslide.mpp-x"]),
            float(osr.properties["openslide.mpp-y"]),
        )
        power = osr.properties.get("openslide.objective-power")
        assert slide.objective_power == (None if power is None else float(power))
        for downsample in (0.5, 1.0, 1.5, 2.0, 3.9, 4.0161, 8.0, 8.1, 100.0):
            assert slide.get_best_level_for_downsample(
                downsample
            ) == osr.get_best_level_for_downsample(downsample)
        # Every OpenSlide property except its file hash and ICC profile size, same text.
        expected = {
            k: v
            for k, v in osr.properties.items()
            if k not in ("openslide.quickhash-1", "openslide.icc-size")
        }
        assert {k: slide.properties.get(k) for k in expected} == expected
        assert sorted(slide.associated_images) == sorted(osr.associated_images)
        for key, image in osr.associated_images.items():
            np.testing.assert_array_equal(
                slide.associated_images[key], np.asarray(image.convert("RGB"))
            )


@pytest.mark.parametrize("name", REAL_SLIDES)
def test_real_slide_level0_regions_equal_openslides_pixel_for_pixel(
    real_slides: Path, name: str, rng: np.random.Generator, openslide: Any
) -> None:
    path = real_slides / name
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        width, height = slide.dimensions
        for x, y, w, h in random_boxes(rng, width, height, 40):
            ours = slide.read_region((x, y), 0, (w, h))
            assert ours.shape == (h, w, 3) and ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, openslide_rgb(osr, (x, y), 0, (w, h)))


def test_real_generic_tiff_every_level_equals_its_page_at_round_x_over_d(
    real_slides: Path, rng: np.random.Generator
) -> None:
    path = real_slides / "openslide-python_boxes.tiff"
    with tifffile.TiffFile(path) as tif:
        pages = [page.asarray() for page in tif.pages]
    with Slide(path) as slide:
        width, height = slide.dimensions
        for level, page in enumerate(pages):
            d = slide.level_downsamples[level]
            for x, y, w, h in random_boxes(rng, width, height, 30, max_size=70):
                expected = reference_region(page, nearest(x / d), nearest(y / d), w, h)
                np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), expected)


def test_real_generic_tiff_levels_equal_openslide_where_level_pixels_are_exact(
    real_slides: Path, rng: np.random.Generator, openslide: Any
) -> None:
    """OpenSlide resamples at x / d; where that is an integer, both read the same pixels."""
    path = real_slides / "openslide-python_boxes.tiff"
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        for level in range(slide.level_count):
            d = slide.level_downsamples[level]
            w_k, h_k = slide.level_dimensions[level]
            # level 1: d = 2 exactly; level 2: d = 249/62, so x = 249 j maps to 62 j.
            step = {0: 1, 1: 2, 2: 249, 3: 1}[level]
            xs = [i * step for i in range(w_k) if (i * step / d).is_integer() and i * step < 300]
            for _ in range(10):
                x, y = (int(rng.choice(xs)), int(rng.choice(xs)) % 250)
                if not (y / d).is_integer():
                    y = 0
                size = (int(rng.integers(1, w_k)), int(rng.integers(1, h_k)))
                np.testing.assert_array_equal(
                    slide.read_region((x, y), level, size), openslide_rgb(osr, (x, y), level, size)
                )


def test_nearest_pixel_rule_is_closer_to_openslide_than_flooring(
    real_slides: Path, rng: np.random.Generator, openslide: Any
) -> None:
    """On levels that do not divide exactly, OpenSlide interpolates at x / d; the nearest
    pixel round(x / d) is never farther from its output than floor(x / d), and is closer
    overall (tiffslide floors)."""
    path = real_slides / "openslide-python_boxes.tiff"
    with tifffile.TiffFile(path) as tif:
        pages = [page.asarray() for page in tif.pages]
    ours_err, floor_err = [], []
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        for level in (2, 3):
            d = slide.level_downsamples[level]
            w_k, h_k = slide.level_dimensions[level]
            for _ in range(60):
                size = (8, 8)
                x = int(rng.integers(0, int((w_k - 10) * d)))
                y = int(rng.integers(0, int((h_k - 10) * d)))
                theirs = openslide_rgb(osr, (x, y), level, size).astype(int)
                ours = slide.read_region((x, y), level, size).astype(int)
                floored = reference_region(pages[level], int(x // d), int(y // d), *size)
                e_ours = np.abs(ours - theirs).mean()
                e_floor = np.abs(floored.astype(int) - theirs).mean()
                assert e_ours <= e_floor + 0.5
                ours_err.append(e_ours)
                floor_err.append(e_floor)
    assert np.mean(ours_err) < 0.8 * np.mean(floor_err)


def test_real_svs_thumbnail_has_openslides_size_and_looks_the_same(
    real_slides: Path, openslide: Any
) -> None:
    path = real_slides / "cmu_small_region.svs"
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        for max_size in ((256, 256), (300, 100)):
            ours = slide.get_thumbnail(max_size)
            theirs = np.asarray(osr.get_thumbnail(max_size).convert("RGB"))
            assert ours.shape == theirs.shape
            # Area averaging vs PIL's Lanczos: the same picture, not the same pixels.
            assert np.abs(ours.astype(int) - theirs).mean() < 6


# --- pyramids written by the tests -------------------------------------------------------


@pytest.mark.parametrize("layout", ["pages", "subifds"])
def test_deflate_pyramid_regions_equal_the_source_arrays_on_every_level(
    tmp_path: Path, odd_pyramid: Any, layout: str, rng: np.random.Generator
) -> None:
    path = write_tiff_pyramid(tmp_path / f"{layout}.tif", odd_pyramid, layout=layout)
    with Slide(path) as slide:
        assert slide.level_dimensions == ((1001, 777), (500, 388), (250, 194), (125, 97))
        assert slide.level_downsamples[1] == pytest.approx((1001 / 500 + 777 / 388) / 2)
        for level, array in enumerate(odd_pyramid):
            d = slide.level_downsamples[level]
            for x, y, w, h in random_boxes(rng, 1001, 777, 25):
                expected = reference_region(array, nearest(x / d), nearest(y / d), w, h)
                np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), expected)
            np.testing.assert_array_equal(slide.read_level(level), array)


def test_written_pyramids_match_openslide_geometry_and_level0_pixels(
    deflate_pages: Path, jpeg_pages: Path, rng: np.random.Generator, openslide: Any
) -> None:
    for path in (deflate_pages, jpeg_pages):
        with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
            assert slide.level_dimensions == osr.level_dimensions
            assert slide.level_downsamples == osr.level_downsamples
            for x, y, w, h in random_boxes(rng, 1001, 777, 20, max_size=300):
                np.testing.assert_array_equal(
                    slide.read_region((x, y), 0, (w, h)), openslide_rgb(osr, (x, y), 0, (w, h))
                )
    with Slide(deflate_pages) as slide, openslide.OpenSlide(str(deflate_pages)) as osr:
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert slide.mpp == (
            float(osr.properties["openslide.mpp-x"]),
            float(osr.properties["openslide.mpp-y"]),
        )


def test_jpeg_pyramid_levels_equal_tifffiles_decoding(
    jpeg_pages: Path, odd_pyramid: Any, rng: np.random.Generator
) -> None:
    with tifffile.TiffFile(jpeg_pages) as tif:
        decoded = [level.asarray() for level in tif.series[0].levels]
    with Slide(jpeg_pages) as slide:
        for level, array in enumerate(decoded):
            d = slide.level_downsamples[level]
            for x, y, w, h in random_boxes(rng, 1001, 777, 10):
                expected = reference_region(array, nearest(x / d), nearest(y / d), w, h)
                np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), expected)
            # and JPEG kept the picture: close to the source array
            assert np.abs(slide.read_level(level).astype(int) - odd_pyramid[level]).mean() < 12


def test_jpeg2000_and_aperio_ycbcr_jpeg2000_tiles_decode_like_openslide(
    tmp_path: Path, openslide: Any
) -> None:
    cb, cr = np.meshgrid(np.arange(256), np.arange(256))
    for luma in (0, 128, 255):
        image = np.stack([np.full((256, 256), luma), cb, cr], -1).astype(np.uint8)
        for compression in (33003, 33005):  # Aperio JPEG 2000, YCbCr and RGB
            path = tmp_path / f"aperio_{compression}_{luma}.svs"
            with tifffile.TiffWriter(path) as tif:
                tif.write(
                    image,
                    tile=(128, 128),
                    compression=compression,
                    photometric="rgb",
                    metadata=None,
                    description="Aperio Image Library v12.0.0\r\n256x256 (128x128) J2K|MPP = 0.25",
                )
            with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
                assert slide.mpp == (0.25, 0.25)
                np.testing.assert_array_equal(
                    slide.read_level(0), openslide_rgb(osr, (0, 0), 0, (256, 256))
                )
    path = write_tiff_pyramid(
        tmp_path / "j2k.tif", pyramid_levels(smooth_image(300, 200), 2), compression="jpeg2000"
    )
    with Slide(path) as slide, tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(slide.read_level(1), tif.series[0].levels[1].asarray())


def test_missing_tiles_read_as_white_background(tmp_path: Path, odd_pyramid: Any) -> None:
    path = write_tiff_pyramid(tmp_path / "sparse.tif", odd_pyramid[:2])
    with tifffile.TiffFile(path, mode="r+b") as tif:
        counts = list(tif.pages[0].databytecounts)
        counts[1] = 0  # tile (column 1, row 0): x 128..255, y 0..127
        tif.pages[0].tags["TileByteCounts"].overwrite(counts)
    with Slide(path) as slide:
        region = slide.read_region((100, 100), 0, (200, 50))
    assert (region[:28, 28:156] == 255).all()
    np.testing.assert_array_equal(region[:28, :28], odd_pyramid[0][100:128, 100:128])
    np.testing.assert_array_equal(region[28:], odd_pyramid[0][128:150, 100:300])


def test_grey_and_rgba_tiffs_read_as_rgb(tmp_path: Path) -> None:
    grey = smooth_image(200, 300)[..., 0]
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, grey, tile=(64, 64), compression="zlib")
    with Slide(path) as slide:
        np.testing.assert_array_equal(slide.read_level(0), np.repeat(grey[..., None], 3, 2))
    rgba = np.dstack([smooth_image(100, 130), np.full((100, 130), 7, np.uint8)])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, tile=(64, 64), photometric="rgb")
    with Slide(tmp_path / "rgba.tif") as slide:
        np.testing.assert_array_equal(slide.read_level(0), rgba[..., :3])


def test_mpp_from_inch_resolution_equals_openslides_and_unit_none_is_unknown(
    tmp_path: Path, openslide: Any
) -> None:
    image = smooth_image(128, 128)
    for unit, expected in (("INCH", 25_400 / 50_800), ("CENTIMETER", 0.2), ("NONE", None)):
        path = tmp_path / f"res_{unit}.tif"
        resolution = 50_800.0 if unit == "INCH" else 50_000.0
        tifffile.imwrite(
            path, image, tile=(64, 64), resolution=(resolution, resolution), resolutionunit=unit
        )
        with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
            if expected is None:
                assert slide.mpp is None and "openslide.mpp-x" not in osr.properties
            else:
                assert slide.mpp == pytest.approx((expected, expected), rel=1e-6)
                assert slide.mpp[0] == float(osr.properties["openslide.mpp-x"])  # type: ignore[index]


def test_ome_tiff_pyramid_gives_levels_and_physical_size(tmp_path: Path, odd_pyramid: Any) -> None:
    path = tmp_path / "sample.v2.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            odd_pyramid[0],
            tile=(128, 128),
            subifds=2,
            photometric="rgb",
            compression="zlib",
            metadata={
                "axes": "YXS",
                "PhysicalSizeX": 0.5,
                "PhysicalSizeY": 0.5,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeYUnit": "µm",
            },
        )
        for level in odd_pyramid[1:3]:
            tif.write(level, tile=(128, 128), subfiletype=1, photometric="rgb", compression="zlib")
    with Slide(path) as slide:
        assert slide.name == "sample.v2"
        assert slide.level_dimensions == ((1001, 777), (500, 388), (250, 194))
        assert slide.mpp == (0.5, 0.5)
        assert slide.level_for_mpp(1.0) == 1
        np.testing.assert_array_equal(slide.read_level(2), odd_pyramid[2])


# --- physical units, thumbnails -------------------------------------------------------


def test_level_for_mpp_and_read_region_at_mpp(odd_pyramid: Any) -> None:
    slide = ArraySlide(odd_pyramid, mpp=0.25)
    d1 = slide.level_downsamples[1]
    assert slide.level_for_mpp(0.1) == 0
    assert slide.level_for_mpp(0.25 * d1) == 1
    assert slide.level_for_mpp(0.25 * d1 * 0.995) == 1  # within the 1 % tolerance
    assert slide.level_for_mpp(0.25 * d1 * 0.98) == 0
    assert slide.level_for_mpp(100.0) == 3
    # At a level's own mpp, read_region_at_mpp is read_region on that level.
    np.testing.assert_array_equal(
        slide.read_region_at_mpp((101, 55), (64, 32), 0.25 * d1),
        slide.read_region((101, 55), 1, (64, 32)),
    )
    # At 0.75 µm/px (level 1 is 0.5003, level 2 is 1.0012): level 1, area-averaged.
    import cv2

    assert slide.level_for_mpp(0.75) == 1
    region = slide.read_region_at_mpp((101, 55), (64, 32), 0.75)
    level_mpp = slide.level_mpp(1)
    assert level_mpp is not None
    source = slide.read_region(
        (101, 55), 1, (round(64 * 0.75 / level_mpp[0]), round(32 * 0.75 / level_mpp[1]))
    )
    np.testing.assert_array_equal(
        region, cv2.resize(source, (64, 32), interpolation=cv2.INTER_AREA)
    )
    assert region.shape == (32, 64, 3)


def test_mpp_unknown_raises_instead_of_guessing() -> None:
    slide = ArraySlide(np.zeros((10, 10, 3), np.uint8))
    assert slide.mpp is None and slide.level_mpp(0) is None
    # LevelError is a RegionError: code that caught RegionError still does.
    with pytest.raises(LevelError, match="records no µm per pixel"):
        slide.level_for_mpp(0.5)
    with pytest.raises(RegionError, match="records no µm per pixel"):
        slide.read_region_at_mpp((0, 0), (4, 4), 0.5)
    with pytest.raises(ParameterError, match=r"mpp must be a finite number > 0, got -1"):
        ArraySlide(np.zeros((10, 10, 3), np.uint8), mpp=0.5).level_for_mpp(-1)


def test_level_for_mpp_is_the_one_level_rule_on_the_coarser_axis(odd_pyramid: Any) -> None:
    """The same request gives the same level as geometry.resolve_level (and every stage)."""
    slide = ArraySlide(odd_pyramid, mpp=(0.25, 0.26))
    for mpp in (0.1, 0.25, 0.26, 0.5, 0.52, 0.53, 1.0, 1.05, 2.1, 100.0):
        assert slide.level_for_mpp(mpp) == resolve_level(slide, mpp=mpp)
    # Level 1 is 0.5006 x 0.5206 µm/px: too coarse on y for 0.51 µm/px.
    assert slide.level_for_mpp(0.51) == 0
    with pytest.raises(LevelError, match=r"valid levels are 0\.\.3"):
        slide.read_level(4)


def test_thumbnail_keeps_aspect_and_uses_the_smallest_sufficient_level(odd_pyramid: Any) -> None:
    slide = ArraySlide(odd_pyramid)
    thumb = slide.get_thumbnail((200, 200))
    assert thumb.shape == (155, 200, 3)  # 1001 x 777 shrunk by 5.005
    import cv2

    expected = cv2.resize(odd_pyramid[2], (200, 155), interpolation=cv2.INTER_AREA)  # level 2
    np.testing.assert_array_equal(thumb, expected)
    np.testing.assert_array_equal(slide.get_thumbnail((2000, 2000)), odd_pyramid[0])
    np.testing.assert_array_equal(slide.get_thumbnail((125, 97)), odd_pyramid[3])


# --- ArraySlide ---------------------------------------------------------------------------


@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    n_levels=st.integers(1, 3),
    data=st.data(),
)
def test_array_slide_read_region_is_slicing_of_the_padded_level(
    height: int, width: int, n_levels: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(0, 255, (height * 4, width * 4, 3), dtype=np.uint8)
    levels = [image]
    for _ in range(n_levels - 1):
        levels.append(levels[-1][::2, ::2])
        if levels[-1].shape == levels[-2].shape:
            levels.pop()
            break
    slide = ArraySlide(levels)
    level = data.draw(st.integers(0, slide.level_count - 1))
    x = data.draw(st.integers(-300, 300))
    y = data.draw(st.integers(-300, 300))
    w = data.draw(st.integers(1, 100))
    h = data.draw(st.integers(1, 100))
    d = slide.level_downsamples[level]
    expected = reference_region(levels[level], nearest(x / d), nearest(y / d), w, h)
    np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), expected)


def test_array_slide_accepts_grey_and_rgba_and_validates() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(ArraySlide(grey).read_level(0)[..., 2], grey)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert ArraySlide(rgba).read_level(0).shape == (3, 4, 3)
    assert ArraySlide(rgba, mpp=(0.25, 0.3)).mpp == (0.25, 0.3)
    with pytest.raises(ParameterError, match="uint8"):
        ArraySlide(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ParameterError, match="smaller than level 0"):
        ArraySlide([np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ParameterError, match="at least one"):
        ArraySlide([])
    with pytest.raises(ParameterError, match="mpp"):
        ArraySlide(grey, mpp=-1.0)
    assert isinstance(ArraySlide(grey), BaseSlide)


def test_top_level_names_and_openslide_downsample_rule() -> None:
    assert cervixwsi.Slide is Slide and cervixwsi.ArraySlide is ArraySlide
    slide = ArraySlide([np.zeros((250, 300, 3), np.uint8), np.zeros((125, 150, 3), np.uint8)])
    assert [slide.get_best_level_for_downsample(d) for d in (0.1, 1.9999999, 2.0, 50)] == [
        0,
        0,
        1,
        1,
    ]


# --- threads, pickling, cache ------------------------------------------------------------


def test_reads_from_eight_threads_give_identical_pixels(
    deflate_pages: Path, rng: np.random.Generator
) -> None:
    boxes = [(b, int(rng.integers(0, 4))) for b in random_boxes(rng, 1001, 777, 200, 200)]
    with Slide(deflate_pages, tile_cache_bytes=200_000) as slide:  # small: forces evictions
        sequential = [slide.read_region((x, y), lv, (w, h)) for (x, y, w, h), lv in boxes]
        slide._cache.clear()
        with ThreadPoolExecutor(8) as pool:
            threaded = list(
                pool.map(lambda b: slide.read_region((b[0][0], b[0][1]), b[1], b[0][2:]), boxes)
            )
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_slide_pickles_as_its_path_and_reads_in_another_process(deflate_pages: Path) -> None:
    slide = Slide(deflate_pages, tile_cache_bytes=1000, threads=2)
    copy = pickle.loads(pickle.dumps(slide))
    assert copy.path == slide.path and copy._tile_cache_bytes == 1000 and copy._threads == 2
    assert len(pickle.dumps(slide)) < 500  # the path and options, no pixels
    expected = slide.read_region((900, 700), 0, (150, 100))
    # methodcaller pickles by reference to the stdlib: the worker imports no test module.
    read = operator.methodcaller("read_region", (900, 700), 0, (150, 100))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        region = pool.submit(read, slide).result()
    np.testing.assert_array_equal(region, expected)
    slide.close()
    copy.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"threads": 0}, r"Slide\.threads must be an integer >= 1, got 0"),
        ({"threads": 2.0}, r"Slide\.threads must be an integer"),
        ({"tile_cache_bytes": -1}, r"Slide\.tile_cache_bytes must be an integer >= 0, got -1"),
    ],
)
def test_bad_options_raise_parameter_error_naming_them(
    deflate_pages: Path, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ParameterError, match=match):
        Slide(deflate_pages, **options)


def test_tile_cache_is_bounded_lru_and_read_only() -> None:
    cache = TileCache(max_bytes=250)
    for i in range(3):
        cache.put(i, np.zeros(100, np.uint8))
    assert len(cache) == 2 and cache.nbytes == 200 and cache.get(0) is None
    assert cache.get(1) is not None  # now most recent
    cache.put(3, np.zeros(100, np.uint8))
    assert cache.get(2) is None and cache.get(1) is not None
    tile = cache.get(3)
    assert tile is not None and not tile.flags.writeable
    cache.put(4, np.zeros(1000, np.uint8))  # larger than the bound: not cached
    assert cache.get(4) is None


def test_parallel_decoding_of_large_reads_equals_sequential(deflate_pages: Path) -> None:
    with (
        Slide(deflate_pages, threads=1, tile_cache_bytes=0) as one,
        Slide(deflate_pages, threads=3, tile_cache_bytes=0) as three,
    ):
        np.testing.assert_array_equal(one.read_level(0), three.read_level(0))


# --- bad input ----------------------------------------------------------------------------


def test_missing_file_raises_slide_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.svs"
    with pytest.raises(SlideNotFoundError, match=r"nope\.svs") as info:
        Slide(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CervixWSIError)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"hello, I am not a slide\n", "not a readable TIFF"), (b"II*\x00", "TIFF")],
)
def test_non_tiff_and_empty_files_raise_slide_open_error(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "bad.svs"
    path.write_bytes(content)
    with pytest.raises(SlideOpenError, match=match) as info:
        Slide(path)
    assert "bad.svs" in str(info.value)


def test_truncated_copies_raise_slide_open_error(
    tmp_path: Path, real_slides: Path, deflate_pages: Path
) -> None:
    for source in (real_slides / "cmu_small_region.svs", deflate_pages):
        data = source.read_bytes()
        path = tmp_path / f"truncated_{source.name}"
        path.write_bytes(data[: int(len(data) * 0.3)])
        with pytest.raises(SlideOpenError) as info:
            Slide(path)
        assert path.name in str(info.value)


def test_truncated_written_pyramid_names_the_truncation(tmp_path: Path, odd_pyramid: Any) -> None:
    source = write_tiff_pyramid(tmp_path / "whole.tif", odd_pyramid[:1])  # IFD before the data
    data = source.read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(SlideOpenError, match="truncated"):
        Slide(path)


def test_stripped_tiff_has_no_tiled_pyramid(tmp_path: Path) -> None:
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, smooth_image(100, 120), rowsperstrip=16)
    with pytest.raises(SlideOpenError, match="no tiled pyramid") as info:
        Slide(path)
    assert "strips.tif" in str(info.value) and "strips" in str(info.value)


def test_16_bit_tiff_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "fluo.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), tile=(32, 32))
    with pytest.raises(SlideOpenError, match="uint16"):
        Slide(path)


def test_corrupt_tile_raises_read_error_and_other_regions_still_read(
    tmp_path: Path, odd_pyramid: Any
) -> None:
    for compression in ("zlib", "jpeg"):
        path = write_tiff_pyramid(
            tmp_path / f"corrupt_{compression}.tif", odd_pyramid[:2], compression=compression
        )
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            offset, count = page.dataoffsets[9], page.databytecounts[9]  # column 1, row 1
            tiles_across = math.ceil(1001 / 128)
        with path.open("r+b") as fh:
            fh.seek(offset)
            fh.write(np.random.default_rng(1).integers(0, 255, count, np.uint8).tobytes())
        with Slide(path) as slide:
            with pytest.raises(SlideReadError) as info:
                slide.read_region((130, 130), 0, (10, 10))
            message = str(info.value)
            assert path.name in message and "level 0" in message and "tile 9" in message
            assert f"column {9 % tiles_across}, row {9 // tiles_across}" in message
            np.testing.assert_array_equal(
                slide.read_region((0, 0), 0, (128, 128))[:5, :5],
                slide.read_region((0, 0), 0, (5, 5)),
            )
            assert slide.read_region((300, 300), 1, (50, 50)).shape == (50, 50, 3)
            if compression == "zlib":
                np.testing.assert_array_equal(
                    slide.read_region((0, 0), 0, (128, 128)), odd_pyramid[0][:128, :128]
                )


def test_bad_regions_raise_region_error_naming_what_is_valid(deflate_pages: Path) -> None:
    with Slide(deflate_pages) as slide:
        with pytest.raises(RegionError, match="positive"):
            slide.read_region((0, 0), 0, (-5, 10))
        with pytest.raises(RegionError, match="positive"):
            slide.read_region((0, 0), 0, (10, 0))
        with pytest.raises(RegionError, match=r"valid levels are 0\.\.3"):
            slide.read_region((0, 0), 4, (10, 10))
        with pytest.raises(RegionError, match=r"0\.\.3"):
            slide.read_region((0, 0), -1, (10, 10))
        with pytest.raises(RegionError, match="integer"):
            slide.read_region((0.5, 3), 0, (10, 10))  # type: ignore[arg-type]
        with pytest.raises(RegionError, match="pair"):
            slide.read_region(5, 0, (10, 10))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_size"):
            slide.get_thumbnail((0, 10))
        # integral floats and numpy integers are fine
        np.testing.assert_array_equal(
            slide.read_region((np.int64(3), 4.0), np.int32(0), (5, 5)),  # type: ignore[arg-type]
            slide.read_region((3, 4), 0, (5, 5)),
        )
    with pytest.raises(SlideReadError, match="closed"):
        slide.read_region((0, 0), 0, (5, 5))


def test_copy_of_a_real_slide_is_named_by_its_stem(tmp_path: Path, real_slides: Path) -> None:
    path = tmp_path / "case-0042.svs"
    shutil.copy(real_slides / "openslide-python_small.svs", path)
    with Slide(path) as slide:
        assert slide.name == "case-0042"
        assert "case-0042" in repr(slide)
        assert list(slide.associated_images) == ["thumbnail"]
        with pytest.raises(KeyError):
            slide.associated_images["label"]


def test_any_truncation_or_damage_raises_only_the_projects_errors(
    tmp_path: Path, real_slides: Path, deflate_pages: Path, rng: np.random.Generator
) -> None:
    """Cut or scramble files anywhere: opening and reading raise CervixWSIError or work."""
    sources = [real_slides / "cmu_small_region.svs", deflate_pages]
    outcomes = set()
    for source in sources:
        data = source.read_bytes()
        variants = [data[: int(len(data) * f)] for f in np.linspace(0.002, 0.98, 12)]
        for _ in range(12):  # a burst of garbage somewhere in the first 64 KiB (the IFDs)
            damaged = bytearray(data)
            at = int(rng.integers(8, min(len(data) - 64, 65_536)))
            damaged[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
            variants.append(bytes(damaged))
        for i, variant in enumerate(variants):
            path = tmp_path / f"{source.stem}_{i}{source.suffix}"
            path.write_bytes(variant)
            outcome, message = "read", path.name
            try:
                with Slide(path) as slide:
                    for level in range(slide.level_count):
                        slide.read_level(level)
            except CervixWSIError as exc:
                outcome, message = type(exc).__name__, str(exc)
            assert path.name in message
            outcomes.add(outcome)
    assert "SlideOpenError" in outcomes, outcomes


def test_a_read_decodes_only_the_tiles_it_touches(deflate_pages: Path) -> None:
    with Slide(deflate_pages) as slide:  # 128-pixel tiles
        slide.read_region((130, 130), 0, (10, 10))
        assert set(slide._cache._items) == {(0, 1, 1)}
        slide.read_region((250, 120), 0, (10, 10))  # crosses into columns 1-2, rows 0-1
        assert set(slide._cache._items) == {(0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1)}
        slide.read_region((-100, -100), 0, (50, 50))  # wholly outside: no tile at all
        slide.read_region((2 * 300, 2 * 200), 1, (1, 1))  # level 1 pixel (300, 200)
        assert len(slide._cache) == 5 and (1, 2, 1) in slide._cache._items
