"""write_pyramid: pyramidal TIFFs that OpenSlide, tiffslide and tifffile read alike."""

from __future__ import annotations

import itertools
import math
import os
import stat
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cervixwsi._pyramid import _writer, halve, write_pyramid
from cervixwsi.errors import CervixWSIError, ParameterError
from cervixwsi.slide import Slide


def _image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Smooth colour gradients plus luminance noise: JPEG-friendly, yet pixels differ."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    gradients = [
        40 + 180 * xx / max(width - 1, 1),
        40 + 180 * yy / max(height - 1, 1),
        130 + 90 * np.sin(xx / 37.0) * np.cos(yy / 23.0),
    ]
    noise = rng.normal(0, 6, (height, width))
    image = np.stack([g + noise for g in gradients[:channels]], axis=-1)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image[..., 0] if channels == 1 else image


def _reference_halve(image: np.ndarray) -> np.ndarray:
    """Independent 2x2 area mean (float): blocks clipped at odd edges, mean over what exists."""
    img = image.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    hh, ww = (h + 1) // 2, (w + 1) // 2
    total = np.zeros((hh, ww, c))
    count = np.zeros((hh, ww, 1))
    for dy in (0, 1):
        for dx in (0, 1):
            part = img[dy::2, dx::2]
            total[: part.shape[0], : part.shape[1]] += part
            count[: part.shape[0], : part.shape[1]] += 1
    return total / count


def _pages(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


# --- layout and pixels ----------------------------------------------------------------


def test_lossless_pyramid_holds_level0_and_area_averaged_levels(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    image = _image(rng, 700, 1031)  # odd width, non-multiple of the tile size
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.5, tile_size=128, compression="deflate")
    levels = _pages(path)
    assert [lv.shape[:2] for lv in levels] == [
        (700, 1031),
        (350, 516),
        (175, 258),
        (88, 129),
        (44, 65),  # the first level that fits in one 128-pixel tile
    ]
    np.testing.assert_array_equal(levels[0], image)
    for upper, lower in itertools.pairwise(levels):
        # Every level is the rounded 2x2 mean of the level above it, odd edges included.
        assert np.abs(lower - _reference_halve(upper)).max() <= 0.5


def test_pages_are_tiled_reduced_resolution_pages_with_resolution(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    image = _image(rng, 600, 900)
    path = write_pyramid(tmp_path / "s.tif", image, mpp=(0.25, 0.3), tile_size=256)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3
        for k, page in enumerate(tif.pages):
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (256, 256)
            assert page.subfiletype == (0 if k == 0 else 1)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            xres, yres = page.resolution
            w, h = page.imagewidth, page.imagelength
            assert 1e4 / xres == pytest.approx(0.25 * 900 / w, rel=1e-6)
            assert 1e4 / yres == pytest.approx(0.3 * 600 / h, rel=1e-6)
        assert tif.pages[0].description.startswith("cervixwsi pyramid level 0 of 3")


@pytest.mark.parametrize("compression", ["jpeg", "deflate", "lzw", "none"])
@pytest.mark.parametrize("channels", [3, 1])
def test_openslide_and_tiffslide_open_it_with_the_same_levels_and_mpp(
    tmp_path: Path,
    rng: np.random.Generator,
    compression: str,
    channels: int,
    openslide: Any,
    tiffslide: Any,
) -> None:
    image = _image(rng, 520, 777, channels)
    path = write_pyramid(
        tmp_path / "s.tif",
        image,
        mpp=(0.25, 0.26),
        compression=compression,  # type: ignore[arg-type]
        tile_size=128,
    )
    pages = _pages(path)
    dims = tuple((p.shape[1], p.shape[0]) for p in pages)
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_count == len(pages) == 4
        assert osr.level_dimensions == dims
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.26)
        for level in (0, 1):
            region = np.asarray(osr.read_region((0, 0), level, dims[level]))[..., :3]
            expected = pages[level] if channels == 3 else np.repeat(pages[level][..., None], 3, 2)
            # OpenSlide decodes JPEG with its own libjpeg: allow a little rounding.
            tolerance = 2 if compression == "jpeg" else 0
            assert np.abs(region.astype(int) - expected).max() <= tolerance
    with tiffslide.TiffSlide(str(path)) as tsr:
        assert tsr.level_dimensions == dims
        assert float(tsr.properties["tiffslide.mpp-x"]) == pytest.approx(0.25)
        assert float(tsr.properties["tiffslide.mpp-y"]) == pytest.approx(0.26)


def test_jpeg_level0_is_close_to_the_source(
    tmp_path: Path, rng: np.random.Generator, openslide: Any
) -> None:
    image = _image(rng, 300, 400)
    path = write_pyramid(tmp_path / "s.tif", image, mpp=None, quality=95)
    decoded = _pages(path)[0].astype(float)
    psnr = 10 * math.log10(255**2 / np.mean((decoded - image) ** 2))
    assert psnr > 30
    with openslide.OpenSlide(str(path)) as osr:
        assert "openslide.mpp-x" not in osr.properties


def test_jpeg2000_is_readable_by_tifffile_and_tiffslide_but_not_openslide(
    tmp_path: Path, rng: np.random.Generator, openslide: Any, tiffslide: Any
) -> None:
    image = _image(rng, 300, 300)
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.5, compression="jpeg2000")
    assert _pages(path)[0].shape == (300, 300, 3)
    with tiffslide.TiffSlide(str(path)) as tsr:
        assert tsr.level_count == 2
    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(path))


def test_bigtiff_layout_opens_in_openslide(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, openslide: Any
) -> None:
    monkeypatch.setattr(_writer, "_BIGTIFF_BYTES", 0)
    path = write_pyramid(tmp_path / "s.tif", _image(rng, 300, 500), mpp=0.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_dimensions == ((500, 300), (250, 150))


# --- sources --------------------------------------------------------------------------


def test_callable_and_iterator_sources_write_the_same_pixels_as_an_array(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    image = _image(rng, 300, 530)
    calls: list[tuple[int, int, int, int]] = []

    def source(x: int, y: int, width: int, height: int) -> np.ndarray:
        calls.append((x, y, width, height))
        return image[y : y + height, x : x + width]

    def clipped_tiles() -> Iterator[np.ndarray]:
        for y in range(0, 300, 128):
            for x in range(0, 530, 128):
                yield image[y : y + 128, x : x + 128]

    def full_tiles() -> Iterator[np.ndarray]:
        padded = np.zeros((384, 640, 3), np.uint8)
        padded[:300, :530] = image
        for y in range(0, 300, 128):
            for x in range(0, 530, 128):
                yield padded[y : y + 128, x : x + 128]

    common = {"mpp": 0.5, "tile_size": 128, "compression": "deflate"}
    reference = _pages(write_pyramid(tmp_path / "a.tif", image, **common))  # type: ignore[arg-type]
    from_callable = _pages(
        write_pyramid(tmp_path / "c.tif", source, dimensions=(530, 300), **common)  # type: ignore[arg-type]
    )
    from_clipped = _pages(
        write_pyramid(tmp_path / "i.tif", clipped_tiles(), dimensions=(530, 300), **common)  # type: ignore[arg-type]
    )
    from_full = _pages(
        write_pyramid(tmp_path / "f.tif", full_tiles(), dimensions=(530, 300), **common)  # type: ignore[arg-type]
    )
    for other in (from_callable, from_clipped, from_full):
        assert len(other) == len(reference)
        for a, b in zip(reference, other, strict=True):
            np.testing.assert_array_equal(a, b)
    # Row-major, each tile asked for once, edge tiles clipped to the slide.
    first_row = [(0, 0, 128, 128), (128, 0, 128, 128), (256, 0, 128, 128), (384, 0, 128, 128)]
    assert calls[:5] == [*first_row, (512, 0, 18, 128)]
    assert calls[-1] == (512, 256, 18, 44)
    assert len(calls) == 3 * 5


def test_grayscale_mask_with_2d_tiles_round_trips_losslessly(tmp_path: Path) -> None:
    mask = np.zeros((200, 300), np.uint8)
    mask[50:150, 100:250] = 255

    def source(x: int, y: int, width: int, height: int) -> np.ndarray:
        return mask[y : y + height, x : x + width]  # 2-D tiles

    path = write_pyramid(
        tmp_path / "m.tif", source, mpp=1.0, dimensions=(300, 200), compression="deflate"
    )
    levels = _pages(path)
    np.testing.assert_array_equal(levels[0], mask)
    assert levels[1].shape == (100, 150) and levels[1][25:75, 50:125].min() == 255


def test_a_bool_mask_is_written_as_0_and_255(tmp_path: Path) -> None:
    mask = np.zeros((200, 300), bool)
    mask[50:150, 100:250] = True
    path = write_pyramid(tmp_path / "m.tif", mask, mpp=1.0, compression="deflate")
    level0 = _pages(path)[0]
    assert level0.dtype == np.uint8
    np.testing.assert_array_equal(level0, np.where(mask, 255, 0))


def test_levels_argument(tmp_path: Path, rng: np.random.Generator) -> None:
    image = _image(rng, 64, 48)
    assert len(_pages(write_pyramid(tmp_path / "a.tif", image, mpp=1.0, levels=1))) == 1
    assert len(_pages(write_pyramid(tmp_path / "b.tif", image, mpp=1.0, tile_size=16))) == 3
    pages = _pages(write_pyramid(tmp_path / "c.tif", image, mpp=1.0, tile_size=16, levels=7))
    assert [p.shape[:2] for p in pages][-2:] == [(2, 2), (1, 1)]
    with pytest.raises(ParameterError, match="at most 7 levels"):
        write_pyramid(tmp_path / "d.tif", image, mpp=1.0, levels=8)


def test_a_one_pixel_slide(tmp_path: Path) -> None:
    pages = _pages(write_pyramid(tmp_path / "p.tif", np.full((1, 1, 3), 7, np.uint8), mpp=1.0))
    assert len(pages) == 1 and pages[0].shape == (1, 1, 3)


def test_the_file_has_the_umasks_permissions_and_no_temporary_is_left(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Like any file a user writes (0644 under umask 022), not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        path = write_pyramid(tmp_path / "s.tif", _image(rng, 300, 400), mpp=0.5, tile_size=128)
        mask = write_pyramid(tmp_path / "m.tif", np.zeros((64, 64), bool), mpp=8.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(mask.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "s.tif"]


def test_existing_file_is_replaced(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.tif"
    path.write_bytes(b"old")
    write_pyramid(path, _image(rng, 40, 40), mpp=1.0)
    assert _pages(path)[0].shape == (40, 40, 3)


def test_progress_bar_can_be_shown(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pyramid(tmp_path / "s.tif", _image(rng, 300, 300), mpp=1.0, progress=True)
    assert "write_pyramid" in capsys.readouterr().err


# --- memory ---------------------------------------------------------------------------


def _peak_bytes(tmp_path: Path, width: int, height: int) -> int:
    tile = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)

    def source(x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        return tile[:h, :w]

    tracemalloc.start()
    try:
        write_pyramid(
            tmp_path / f"{height}.tif", source, mpp=0.5, dimensions=(width, height), quality=50
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_slide_height(tmp_path: Path) -> None:
    _peak_bytes(tmp_path, 256, 256)  # imports and caches out of the measurement
    short = _peak_bytes(tmp_path, 2048, 4096)
    tall = _peak_bytes(tmp_path, 2048, 16384)  # 100 MB of level 0
    assert tall < 1.25 * short + 1_000_000
    assert tall < 2048 * 16384 * 3 / 10  # under a tenth of level 0


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_size": 100}, "multiple of 16"),
        ({"tile_size": 0}, "multiple of 16"),
        ({"tile_size": 256.0}, "tile_size must be an integer"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"compression": "webp"}, "compression must be one of"),
        ({"mpp": 0.0}, "mpp must be a finite number > 0"),
        ({"mpp": -1.0}, "mpp must be a finite number > 0"),
        ({"mpp": float("nan")}, "mpp must be a finite number > 0"),
        ({"mpp": (0.5, 0.5, 0.5)}, "mpp must be"),
        ({"levels": 0}, "levels must be"),
        ({"dimensions": (10, 10)}, "do not match"),
    ],
)
def test_bad_parameters_raise_parameter_error(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    options: dict[str, object] = {"mpp": 0.5, **kwargs}
    with pytest.raises(ParameterError, match=match):
        write_pyramid(tmp_path / "s.tif", np.zeros((32, 32, 3), np.uint8), **options)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32, 4), np.uint8), r"\(height, width, 3\)"),
        (np.zeros((32,), np.uint8), r"\(height, width, 3\)"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_raise_parameter_error(tmp_path: Path, array: np.ndarray, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        write_pyramid(tmp_path / "s.tif", array, mpp=0.5)


def test_callable_needs_dimensions(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="dimensions"):
        write_pyramid(tmp_path / "s.tif", lambda x, y, w, h: np.zeros((h, w, 3), np.uint8), mpp=1)


def test_a_tile_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    def source(x: int, y: int, width: int, height: int) -> np.ndarray:
        return np.zeros((height, width if x == 0 else width - 1, 3), np.uint8)

    with pytest.raises(ParameterError, match=r"col=1, row=0.*expected \(64, 64\)"):
        write_pyramid(tmp_path / "s.tif", source, mpp=1, dimensions=(128, 64), tile_size=64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("tile", "match"),
    [
        (np.zeros((64, 64, 3), np.float64), "dtype float64"),
        (np.zeros((64, 64, 1), np.uint8), "1 channels, earlier tiles had 3"),
        ("not an array", "dtype <U12"),
    ],
)
def test_a_bad_tile_midway_is_named(tmp_path: Path, tile: object, match: str) -> None:
    tiles = [np.zeros((64, 64, 3), np.uint8), tile]
    with pytest.raises(ParameterError, match=match):
        write_pyramid(tmp_path / "s.tif", iter(tiles), mpp=1, dimensions=(128, 64), tile_size=64)  # type: ignore[arg-type]


def test_iterator_with_too_few_or_too_many_tiles(tmp_path: Path) -> None:
    tile = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ParameterError, match=r"ended after 3 tiles.*needs 4"):
        write_pyramid(tmp_path / "s.tif", [tile] * 3, mpp=1, dimensions=(128, 128), tile_size=64)
    with pytest.raises(ParameterError, match="more than the 4 tiles"):
        write_pyramid(tmp_path / "s.tif", [tile] * 5, mpp=1, dimensions=(128, 128), tile_size=64)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_source_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "s.tif"
    write_pyramid(path, np.full((64, 64, 3), 9, np.uint8), mpp=1.0)
    before = path.read_bytes()

    def source(x: int, y: int, width: int, height: int) -> np.ndarray:
        if y >= 512:
            raise RuntimeError("scanner disconnected")
        return np.zeros((height, width, 3), np.uint8)

    threads = threading.active_count()
    with pytest.raises(RuntimeError, match="scanner disconnected"):
        write_pyramid(path, source, mpp=1.0, dimensions=(1024, 1024))
    assert threading.active_count() == threads  # the source thread has stopped
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_unwritable_paths_raise_oserror(tmp_path: Path) -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_pyramid(tmp_path / "missing" / "s.tif", image, mpp=1.0)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OSError, match=r"cannot write the pyramid|does not exist"):
        write_pyramid(a_file / "s.tif", image, mpp=1.0)


def test_errors_are_cervixwsi_errors() -> None:
    with pytest.raises(CervixWSIError):
        write_pyramid("x.tif", np.zeros((8, 8, 3), np.uint8), mpp=1.0, tile_size=8)


# --- halving --------------------------------------------------------------------------


@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3])),
        elements=st.integers(0, 255),
    )
)
def test_halve_is_the_rounded_area_mean_with_clipped_edges(image: np.ndarray) -> None:
    out = halve(image)
    reference = _reference_halve(image)
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() <= 0.5 + 1e-9


def test_cervixwsi_slide_reads_the_same_levels_mpp_and_pixels(
    tmp_path: Path, rng: np.random.Generator, openslide: Any
) -> None:
    image = _image(rng, 333, 555)
    path = write_pyramid(
        tmp_path / "s.tif", image, mpp=(0.25, 0.26), compression="deflate", tile_size=128
    )
    pages = _pages(path)
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        assert slide.level_dimensions == osr.level_dimensions
        assert slide.level_downsamples == pytest.approx(osr.level_downsamples)
        assert slide.mpp == pytest.approx((0.25, 0.26))
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (555, 333)), image)
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, (278, 167)), pages[1])
