"""Tests of the TIFF read path: partial JPEG decoding, the tile cache, pixels against tifffile.

A random region of a JPEG slide uses only the top rows of its bottom row of tiles; the
reader then decodes only those rows (``jpeg_top_rows``), unless the cache shows that
tiles are reused (a patch grid), when it decodes whole tiles.  Whatever it does, every
pixel must equal tifffile's decoding of the whole page (and OpenSlide's on real slides).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import imagecodecs
import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from cervixwsi.errors import SlideReadError
from cervixwsi.slide import Slide
from cervixwsi.slide._tiff import jpeg_top_rows
from cervixwsi.slide._tiff_slide import _LOCALITY_WINDOW, TiffSlide
from cervixwsi.slide._tilecache import TileCache

# --- helpers ----------------------------------------------------------------------------


def he_image(height: int, width: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Texture with detail at every scale, so that JPEG blocks and chroma differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 165 + 45 * np.sin(xx / 9.0 + yy / 17.0) * np.cos(yy / 6.0)
    rgb = np.stack([base + 35, base - 40 + 20 * np.sin(xx / 3.0), base + 10], -1)
    return np.clip(rgb + rng.normal(0, 15, (height, width, 3)), 0, 255).astype(np.uint8)


def reference_region(level: npt.NDArray[np.uint8], x0: int, y0: int, w: int, h: int) -> Any:
    """Pixels [y0, y0+h) x [x0, x0+w) of an array, white outside it."""
    out = np.full((h, w, 3), 255, np.uint8)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, level.shape[0]), min(x0 + w, level.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = level[ys:ye, xs:xe]
    return out


def write_jpeg_pyramid(path: Path, image: npt.NDArray[np.uint8], **options: Any) -> Path:
    """A 3-level JPEG pyramid (odd sizes) with 128-pixel tiles."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), compression="jpeg", subifds=2, **options)
        for k in (1, 2):
            tif.write(
                np.ascontiguousarray(image[:: 2**k, :: 2**k]),
                tile=(128, 128),
                compression="jpeg",
                subfiletype=1,
                **options,
            )
    return path


def pages(path: Path) -> list[npt.NDArray[np.uint8]]:
    """Every pyramid level decoded whole by tifffile."""
    with tifffile.TiffFile(path) as tif:
        return [np.asarray(level.asarray()) for level in tif.series[0].levels]


def boxes_crossing_edges(
    rng: np.random.Generator, width: int, height: int, n: int
) -> list[tuple[int, int, int, int]]:
    """Regions (x, y, w, h) in level pixels, many across tile and image edges."""
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(1, 300, 2))
        x = int(rng.integers(-w // 2, width + 10))
        y = int(rng.integers(-h // 2, height + 10))
        out.append((x, y, w, h))
    # exactly one tile, inside one tile, the last rows and columns, a 1-pixel strip
    out += [(128, 128, 128, 128), (130, 131, 20, 9), (width - 7, height - 5, 7, 5)]
    out += [(0, 127, width, 1), (0, 0, width, height)]
    return out


def cached(slide: Any, level: int, col: int, row: int) -> Any:
    """What a slide's tile cache holds for a tile (None when nothing)."""
    return slide._cache.get((level, col, row))


def scattered(slide: Any) -> bool:
    """Whether a TIFF slide now decodes only the rows a read uses of its JPEG tiles."""
    return bool(slide._scattered)


def force_mode(slide: Slide, partial: bool) -> None:
    """Fix a TIFF slide's decoding mode (partial JPEG rows or whole tiles) for a test."""
    assert isinstance(slide, TiffSlide)
    slide._track_locality = False
    slide._scattered = partial


# --- jpeg_top_rows ------------------------------------------------------------------------

SAMPLINGS = ["411", "420", "422", "440", "444"]


def cv2_jpeg(image: npt.NDArray[np.uint8], *params: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    assert ok
    return bytes(encoded.tobytes())


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("restart", [0, 2])
def test_top_rows_of_a_cut_jpeg_equal_a_full_decode(sampling: str, restart: int) -> None:
    image = he_image(256, 200)
    factor = getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{sampling}")
    data = cv2_jpeg(
        image,
        cv2.IMWRITE_JPEG_QUALITY,
        80,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        factor,
        cv2.IMWRITE_JPEG_RST_INTERVAL,
        restart,
    )
    full = imagecodecs.jpeg8_decode(data)
    cut_for = 0
    for rows in range(1, 257):
        top = jpeg_top_rows(data, rows)
        if top is None:
            assert rows > 256 - 32  # only when a cut would not save a whole MCU row
            continue
        short, exact = top
        assert rows <= exact < 256
        decoded = imagecodecs.jpeg8_decode(short)
        assert decoded.shape[0] < 256
        np.testing.assert_array_equal(decoded[:exact], full[:exact])
        cut_for += 1
    assert cut_for >= 256 - 32


def test_top_rows_of_grey_and_optimized_jpeg_and_none_for_progressive() -> None:
    image = he_image(96, 64)
    for data in (cv2_jpeg(image[..., 0]), cv2_jpeg(image, cv2.IMWRITE_JPEG_OPTIMIZE, 1)):
        full = imagecodecs.jpeg8_decode(data)
        for rows in range(1, 65):  # a cut saves at least one 16-row MCU row
            top = jpeg_top_rows(data, rows)
            assert top is not None
            np.testing.assert_array_equal(
                imagecodecs.jpeg8_decode(top[0])[: top[1]], full[: top[1]]
            )
    progressive = cv2_jpeg(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert all(jpeg_top_rows(progressive, rows) is None for rows in (1, 8, 50))


def test_top_rows_refuses_what_is_not_a_whole_sequential_jpeg() -> None:
    data = cv2_jpeg(he_image(64, 64))
    assert jpeg_top_rows(b"", 8) is None
    assert jpeg_top_rows(data, 0) is None
    assert jpeg_top_rows(b"\x89PNG\r\n\x1a\n" + data, 8) is None
    for cut in range(0, 700, 7):  # a header cut anywhere before the scan
        top = jpeg_top_rows(data[:cut], 8)
        assert top is None or len(top[0]) == cut
    # a scan that holds fewer components than the frame (several scans): refused
    sos = data.index(b"\xff\xda")
    fewer = data[: sos + 4] + bytes([1]) + data[sos + 5 :]
    assert jpeg_top_rows(fewer, 8) is None


@given(st.binary(max_size=200), st.integers(min_value=-5, max_value=300))
def test_top_rows_never_raises_on_any_bytes(data: bytes, rows: int) -> None:
    top = jpeg_top_rows(b"\xff\xd8" + data, rows)
    assert top is None or (isinstance(top[0], bytes) and top[1] >= rows > 0)


# --- reads against tifffile's whole-page decoding ----------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"photometric": "rgb"}, {"photometric": "ycbcr", "subsampling": (2, 1)}],
    ids=["rgb", "ycbcr422"],
)
@pytest.mark.parametrize("mode", ["partial", "whole", "no-cache", "adaptive"])
def test_jpeg_reads_equal_tifffiles_page_decode_in_every_mode(
    tmp_path: Path, rng: np.random.Generator, options: dict[str, Any], mode: str
) -> None:
    path = write_jpeg_pyramid(tmp_path / "pyr.tif", he_image(777, 1001), **options)
    expected = pages(path)
    cache = 0 if mode == "no-cache" else 300_000  # a few tiles: evictions and upgrades
    with Slide(path, tile_cache_bytes=cache) as slide:
        if mode in ("partial", "whole"):
            force_mode(slide, partial=mode == "partial")
        for level, page in enumerate(expected):
            height, width = page.shape[:2]
            assert slide.level_dimensions[level] == (width, height)
            d = slide.level_downsamples[level]
            for x, y, w, h in boxes_crossing_edges(rng, width, height, 40):
                location = (math.floor(x * d + 0.5), math.floor(y * d + 0.5))
                if level == 0:
                    location = (x, y)
                region = slide.read_region(location, level, (w, h))
                lx = math.floor(location[0] / d + 0.5)
                ly = math.floor(location[1] / d + 0.5)
                np.testing.assert_array_equal(region, reference_region(page, lx, ly, w, h))
            np.testing.assert_array_equal(slide.read_level(level), page)


def test_real_svs_with_jpeg_tables_reads_like_openslide_when_decoding_partially(
    real_slides: Path, rng: np.random.Generator, openslide: Any
) -> None:
    """Aperio tiles are abbreviated JPEG (shared tables) in RGB: cut ones decode the same."""
    path = real_slides / "cmu_small_region.svs"
    with Slide(path, tile_cache_bytes=0) as slide, openslide.OpenSlide(str(path)) as osr:
        assert isinstance(slide, TiffSlide) and slide._levels[0].fast_decode is not None
        width, height = slide.dimensions
        for x, y, w, h in boxes_crossing_edges(rng, width, height, 30):
            ours = slide.read_region((x, y), 0, (w, h))
            rgba = np.asarray(osr.read_region((x, y), 0, (w, h)))
            inside = rgba[..., 3] == 255
            np.testing.assert_array_equal(ours[inside], rgba[..., :3][inside])
            assert (ours[~inside] == 255).all()


def test_partial_tile_in_the_cache_is_completed_when_a_read_needs_more_rows(
    tmp_path: Path,
) -> None:
    path = write_jpeg_pyramid(tmp_path / "p.tif", he_image(512, 512))
    page = pages(path)[0]
    with Slide(path) as slide:
        force_mode(slide, partial=True)
        top = slide.read_region((130, 140), 0, (50, 10))  # rows 12..21 of tile (1, 1)
        tile = cached(slide, 0, 1, 1)
        assert tile is not None and 22 <= tile.shape[0] < 128
        np.testing.assert_array_equal(top, page[140:150, 130:180])
        low = slide.read_region((130, 240), 0, (50, 10))  # rows 112..121: decodes again
        np.testing.assert_array_equal(low, page[240:250, 130:180])
        tile = cached(slide, 0, 1, 1)
        assert tile is not None and tile.shape[0] >= 122
        # a large read takes whole tiles, whatever the cache holds
        np.testing.assert_array_equal(slide.read_level(0), page)
        assert cached(slide, 0, 1, 1).shape[0] == 128


def test_random_reads_decode_partially_and_grid_walks_whole_tiles(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg_pyramid(tmp_path / "big.tif", he_image(2048, 2048))
    decoded: list[tuple[int, int, int]] = []
    real_decode = TiffSlide._decode

    def counting(self: TiffSlide, level: int, col: int, row: int, data: bytes, rows: int) -> Any:
        decoded.append((col, row, rows))
        return real_decode(self, level, col, row, data, rows)

    monkeypatch.setattr(TiffSlide, "_decode", counting)
    with Slide(path, tile_cache_bytes=40 * 128 * 128 * 3) as opened:  # 40 of 256 tiles
        slide: Any = opened
        assert isinstance(slide, TiffSlide) and not scattered(slide)  # whole tiles first
        for _ in range(2 * _LOCALITY_WINDOW // 4):
            x, y = (int(v) for v in rng.integers(0, 2048 - 100, 2))
            slide.read_region((x, y), 0, (100, 100))
        assert scattered(slide)  # few cache hits: decode only the rows a read uses
        assert any(rows > 0 for _, _, rows in decoded[-50:])
        # A grid of 100-pixel patches walking rows of tiles reuses tiles: whole tiles
        # again after one window, and then each tile is decoded once.
        for y in range(0, 1000, 100):
            for x in range(0, 1300, 100):
                slide.read_region((x + 30, y + 30), 0, (100, 100))
        assert not scattered(slide)
        decoded.clear()
        for y in range(1000, 2000, 100):
            for x in range(0, 1300, 100):
                slide.read_region((x + 30, y + 30), 0, (100, 100))
        assert all(rows == 0 for _, _, rows in decoded)
        assert len(decoded) == len({(c, r) for c, r, _ in decoded})


@pytest.mark.parametrize("cache", [0, 200_000])
def test_threads_sharing_a_jpeg_slide_read_the_same_pixels(
    tmp_path: Path, rng: np.random.Generator, cache: int
) -> None:
    path = write_jpeg_pyramid(tmp_path / "t.tif", he_image(700, 900))
    expected = pages(path)[0]
    boxes = boxes_crossing_edges(rng, 900, 700, 300)
    with Slide(path, tile_cache_bytes=cache) as slide, ThreadPoolExecutor(6) as pool:
        regions = list(pool.map(lambda b: slide.read_region(b[:2], 0, b[2:]), boxes))
    for (x, y, w, h), region in zip(boxes, regions, strict=True):
        np.testing.assert_array_equal(region, reference_region(expected, x, y, w, h))


def test_a_region_of_one_cached_tile_is_a_copy_the_caller_may_write(tmp_path: Path) -> None:
    path = write_jpeg_pyramid(tmp_path / "c.tif", he_image(300, 300))
    with Slide(path) as slide:
        first = slide.read_region((128, 0), 0, (128, 128))  # exactly tile (1, 0)
        assert first.flags.writeable and first.flags.c_contiguous
        expected = first.copy()
        first[:] = 0
        np.testing.assert_array_equal(slide.read_region((128, 0), 0, (128, 128)), expected)
        part = slide.read_region((140, 5), 0, (10, 10))
        part[:] = 1
        np.testing.assert_array_equal(
            slide.read_region((140, 5), 0, (10, 10)), expected[5:15, 12:22]
        )


@pytest.mark.parametrize("cache", [0, 10**6])
def test_corrupt_jpeg_tile_raises_read_error_in_every_mode(tmp_path: Path, cache: int) -> None:
    path = write_jpeg_pyramid(tmp_path / "bad.tif", he_image(300, 300))
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    with path.open("r+b") as fh:  # tile 4: column 1, row 1 (three tiles across)
        fh.seek(offset)
        fh.write(np.random.default_rng(3).integers(0, 255, count, np.uint8).tobytes())
    with Slide(path, tile_cache_bytes=cache) as slide:
        force_mode(slide, partial=True)
        with pytest.raises(SlideReadError, match=r"bad\.tif: level 0 .*tile 4 \(column 1, row 1"):
            slide.read_region((130, 130), 0, (20, 5))
        assert slide.read_region((0, 0), 0, (128, 128)).shape == (128, 128, 3)


# --- the cache ------------------------------------------------------------------------------


def test_tile_cache_counts_the_memory_a_view_keeps_alive() -> None:
    cache = TileCache(max_bytes=2500)
    whole = np.zeros((10, 100), np.uint8)
    cache.put("top", whole[:2])  # 200 bytes of a 1000-byte array
    assert cache.nbytes == 1000
    cache.put("b", np.zeros(1000, np.uint8))
    cache.put("c", np.zeros(1000, np.uint8))  # 3000 > 2500: the oldest goes
    assert cache.get("top") is None and cache.nbytes == 2000
    cache.put("big", np.zeros((100, 100), np.uint8)[:1])  # keeps 10000 bytes: not cached
    assert cache.get("big") is None and len(cache) == 2
