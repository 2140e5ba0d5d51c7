"""Tests of format dispatch, the OpenSlide reader, mpp override and objective power.

``Slide(path)`` picks the reader by content; OpenSlide's formats (Philips TIFF, NDPI,
3DHistech MRXS: synthetic files written here, no package ships small real ones) read
through :class:`OpenSlideSlide`, pixel-equal to OpenSlide; broken ones raise the project's
errors naming the file; ``mpp=`` overrides or supplies µm/px.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import pytest
import tifffile

from cervixwsi.errors import (
    CervixWSIError,
    MissingExtraError,
    ParameterError,
    SlideNotFoundError,
    SlideOpenError,
    SlideReadError,
)
from cervixwsi.geometry import resolve_level
from cervixwsi.slide import OpenSlideSlide, Slide, SlideWarning, TiffSlide
from cervixwsi.slide._formats import Format, detect_format

PHILIPS_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<DataObject ObjectType="DPUfsImport">
<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" PMSVR="IString">PHILIPS</Attribute>
<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" PMSVR="IDataObjectArray">
<Array><DataObject ObjectType="DPScannedImage">
<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">&quot;0.000250&quot; &quot;0.000250&quot;</Attribute>
<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>
<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" PMSVR="IDataObjectArray"><Array>
<DataObject ObjectType="PixelDataRepresentation">
<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">&quot;0.000250&quot; &quot;0.000250&quot;</Attribute>
<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" Element="0x100D" PMSVR="IUInt16">0</Attribute>
</DataObject>
<DataObject ObjectType="PixelDataRepresentation">
<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">&quot;0.000500&quot; &quot;0.000500&quot;</Attribute>
<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" Element="0x100D" PMSVR="IUInt16">1</Attribute>
</DataObject>
</Array></Attribute>
</DataObject></Array></Attribute>
</DataObject>"""  # noqa: E501


def ramp_image(height: int = 512, width: int = 768) -> npt.NDArray[np.uint8]:
    """Smooth colour ramps with texture (JPEG-friendly, every pixel distinct enough)."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 200 + 30], axis=-1)
    return image.astype(np.uint8)


def write_philips(path: Path) -> Path:
    """A synthetic Philips TIFF: two tiled JPEG levels, mpp in the XML description."""
    image = ramp_image()
    with tifffile.TiffWriter(path) as tif:
        for k, (level, description) in enumerate(
            [(image, PHILIPS_XML), (np.ascontiguousarray(image[::2, ::2]), "level=1")]
        ):
            tif.write(
                level,
                tile=(256, 256),
                compression="jpeg",
                photometric="rgb",
                description=description,
                software="Philips DP v1.0",
                metadata=None,
                subfiletype=1 if k else 0,
            )
    return path


def write_ndpi(path: Path) -> Path:
    """A synthetic Hamamatsu NDPI: one JPEG per level, NDPI tags (tifffile cannot read it)."""
    image = ramp_image()
    levels = [(image, 20.0), (np.ascontiguousarray(image[::2, ::2]), 20.0)]
    levels.append((np.ascontiguousarray(image[::4, ::4]), -1.0))  # the macro image
    with tifffile.TiffWriter(path) as tif:
        for level, lens in levels:
            tif.write(
                level,
                compression="jpeg",
                photometric="rgb",
                rowsperstrip=level.shape[0],
                metadata=None,
                resolution=(40_000.0 * level.shape[1] / 768,) * 2,
                resolutionunit="CENTIMETER",
                extratags=[
                    (65420, "I", 1, 1, True),  # NDPI format flag
                    (65421, "f", 1, lens, True),  # source lens (magnification; -1: macro)
                    (65422, "i", 1, 0, True),
                    (65423, "i", 1, 0, True),
                    (65424, "i", 1, 0, True),
                ],
            )
    return path


def openslide_rgb(osr: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
    rgba = np.asarray(osr.read_region(location, level, size)).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def random_boxes(
    rng: np.random.Generator, width: int, height: int, n: int
) -> list[tuple[int, int, int, int]]:
    boxes = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(1, 200, 2))
        boxes.append(
            (int(rng.integers(-w - 20, width + 20)), int(rng.integers(-h - 20, height + 20)), w, h)
        )
    return boxes


@pytest.fixture(scope="module")
def vendor_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vendors")
    return {
        "philips": write_philips(folder / "scan.tiff"),
        "ndpi": write_ndpi(folder / "scan.ndpi"),
    }


# --- dispatch by content ------------------------------------------------------------------


def test_content_not_the_extension_picks_the_reader(real_slides: Path, tmp_path: Path) -> None:
    svs_as_dcm = tmp_path / "really_an_svs.dcm"
    shutil.copy(real_slides / "openslide-python_small.svs", svs_as_dcm)
    dicom_as_svs = tmp_path / "really_dicom.svs"
    shutil.copy(real_slides / "cmu_small_region_sparse.dcm", dicom_as_svs)
    mrxs = tmp_path / "slide.dat"
    mrxs.write_bytes(b"\xef\xbb\xbf[GENERAL]\r\nSLIDE_VERSION = 01.03\r\n")
    vms = tmp_path / "slide.txt"
    vms.write_text("[Virtual Microscope Specimen]\nNoLayers=1\n")
    sqlite = tmp_path / "slide.bin"
    sqlite.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert detect_format(svs_as_dcm) == Format("tiff", "TIFF")
    assert detect_format(dicom_as_svs).backend == "dicom"
    assert detect_format(real_slides / "cmu_small_region_dicom") == Format(
        "dicom", "DICOM WSI folder"
    )
    assert detect_format(mrxs) == Format("openslide", "3DHistech MRXS")
    assert detect_format(vms) == Format("openslide", "Hamamatsu VMS")
    assert detect_format(sqlite) == Format("openslide", "Sakura SVSlide")
    with Slide(svs_as_dcm) as slide:
        assert slide.backend == "tiff" and isinstance(slide, TiffSlide)
    with Slide(dicom_as_svs) as slide:
        assert slide.backend == "dicom" and slide.dimensions == (278, 371)


def test_vendor_tiffs_go_to_openslide_and_plain_ones_stay_native(
    real_slides: Path, vendor_files: dict[str, Path]
) -> None:
    assert detect_format(vendor_files["philips"]) == Format("openslide", "Philips TIFF")
    assert detect_format(vendor_files["ndpi"]).backend == "openslide"  # tifffile rejects it
    for name in ("cmu_small_region.svs", "openslide-python_boxes.tiff"):
        assert detect_format(real_slides / name) == Format("tiff", "TIFF")


def test_unknown_empty_and_folder_without_dicom_are_refused(tmp_path: Path) -> None:
    unknown = tmp_path / "notes.txt"
    unknown.write_text("not a slide")
    with pytest.raises(SlideOpenError, match=r"notes\.txt: not a slide format"):
        Slide(unknown)
    empty = tmp_path / "empty.ndpi"
    empty.write_bytes(b"")
    with pytest.raises(SlideOpenError, match="empty"):
        Slide(empty)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SlideOpenError, match="a folder without DICOM files"):
        Slide(folder)
    with pytest.raises(SlideNotFoundError, match=r"missing\.mrxs"):
        Slide(tmp_path / "missing.mrxs")


def test_backend_values_and_forcing(real_slides: Path, openslide: Any) -> None:
    path = real_slides / "cmu_small_region.svs"
    with pytest.raises(ParameterError, match=r"Slide\.backend must be one of 'tiff', 'dicom'"):
        Slide(path, backend="bioformats")
    with pytest.raises(ParameterError, match="is the 'tiff' reader"):
        TiffSlide(path, backend="openslide")
    with Slide(path, backend="openslide") as slide:
        assert isinstance(slide, OpenSlideSlide) and isinstance(slide, Slide)
        assert slide.backend == "openslide" and "backend='openslide'" in repr(slide)
    with pytest.raises(TypeError, match="needs the path"):
        Slide()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown_option"):
        Slide(path, unknown_option=1)  # type: ignore[call-arg]


# --- the OpenSlide reader ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cmu_small_region.svs", "openslide-python_boxes.tiff"])
def test_openslide_backend_equals_openslide_and_the_native_reader(
    real_slides: Path, name: str, rng: np.random.Generator, openslide: Any
) -> None:
    path = real_slides / name
    with (
        Slide(path, backend="openslide") as slide,
        Slide(path) as native,
        openslide.OpenSlide(str(path)) as osr,
    ):
        assert slide.level_dimensions == osr.level_dimensions == native.level_dimensions
        assert slide.level_downsamples == osr.level_downsamples
        assert slide.mpp == native.mpp and slide.objective_power == native.objective_power
        assert sorted(slide.associated_images) == sorted(native.associated_images)
        for key in slide.associated_images:
            np.testing.assert_array_equal(
                slide.associated_images[key], native.associated_images[key]
            )
        width, height = slide.dimensions
        for level in range(slide.level_count):
            for x, y, w, h in random_boxes(rng, width, height, 15):
                ours = slide.read_region((x, y), level, (w, h))
                np.testing.assert_array_equal(ours, openslide_rgb(osr, (x, y), level, (w, h)))
                if level == 0:
                    np.testing.assert_array_equal(ours, native.read_region((x, y), 0, (w, h)))
            np.testing.assert_array_equal(slide.read_level(level), native.read_level(level))


@pytest.mark.parametrize("vendor", ["philips", "ndpi"])
def test_vendor_files_read_through_openslide_pixel_for_pixel(
    vendor_files: dict[str, Path], vendor: str, rng: np.random.Generator, openslide: Any
) -> None:
    path = vendor_files[vendor]
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        assert slide.backend == "openslide" and slide.level_dimensions == osr.level_dimensions
        assert slide.dimensions == (768, 512)
        width, height = slide.dimensions
        for level in range(slide.level_count):
            for x, y, w, h in random_boxes(rng, width, height, 10):
                np.testing.assert_array_equal(
                    slide.read_region((x, y), level, (w, h)),
                    openslide_rgb(osr, (x, y), level, (w, h)),
                )
        assert np.abs(slide.read_level(0).astype(int) - ramp_image()).mean() < 3  # JPEG
        if vendor == "philips":
            assert slide.mpp == (0.25, 0.25)
        else:
            assert slide.objective_power == 20.0 and list(slide.associated_images) == ["macro"]
            assert slide.associated_images["macro"].shape == (128, 192, 3)
        clone = pickle.loads(pickle.dumps(slide))
        np.testing.assert_array_equal(
            clone.read_region((5, 5), 0, (9, 9)), slide.read_region((5, 5), 0, (9, 9))
        )
        clone.close()


def test_truncated_openslide_format_raises_the_projects_errors(
    vendor_files: dict[str, Path], tmp_path: Path, openslide: Any
) -> None:
    """A cut NDPI (OpenSlide reads it): an error naming the file, never a crash or hang."""
    data = vendor_files["ndpi"].read_bytes()
    outcomes, messages = set(), []
    for fraction in (0.01, 0.2, 0.5, 0.8, 0.97):
        path = tmp_path / f"cut{fraction}.ndpi"
        path.write_bytes(data[: int(len(data) * fraction)])
        try:
            with Slide(path) as slide:
                for level in range(slide.level_count):
                    slide.read_level(level)
            outcomes.add("read")
        except (SlideOpenError, SlideReadError) as exc:
            outcomes.add(type(exc).__name__)
            messages.append((path.name, str(exc)))
    assert all(name in message for name, message in messages)
    assert outcomes & {"SlideOpenError", "SlideReadError"}, outcomes


def test_openslide_error_state_is_reported_on_later_reads(
    vendor_files: dict[str, Path], tmp_path: Path, openslide: Any
) -> None:
    data = bytearray(vendor_files["philips"].read_bytes())
    with tifffile.TiffFile(vendor_files["philips"]) as tif:
        offset = tif.pages[0].dataoffsets[0]
    data[offset + 2 : offset + 400] = b"\x00" * 398  # scramble the first tile's JPEG
    path = tmp_path / "broken.tiff"
    path.write_bytes(bytes(data))
    with Slide(path) as slide:
        with pytest.raises(SlideReadError, match=r"broken\.tiff: the region at \(0, 0\)"):
            slide.read_region((0, 0), 0, (10, 10))
        with pytest.raises(SlideReadError, match="failed earlier on this slide"):
            slide.read_region((300, 300), 0, (10, 10))


def test_missing_openslide_names_the_extra(
    vendor_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openslide", None)
    with pytest.raises(
        MissingExtraError, match=r"Philips TIFF .* pip install 'cervixwsi\[openslide\]'"
    ):
        Slide(vendor_files["philips"])
    assert issubclass(MissingExtraError, SlideOpenError) and issubclass(
        MissingExtraError, CervixWSIError
    )


# --- 3DHistech MRXS (synthetic: no package ships a small real one) ------------------------

MRXS_TILE = 256  # DIGITIZER_WIDTH/HEIGHT: the size of every JPEG image, at every level
MRXS_IMAGES = 4  # camera images per side at level 0: a 1024x1024 slide
MRXS_LEVELS = 3  # downsamples 1, 2, 4
MRXS_SLIDE_ID = "c0ffee00c0ffee00c0ffee00c0ffee00"


def mrxs_source(size: int = MRXS_TILE * MRXS_IMAGES) -> npt.NDArray[np.uint8]:
    """Smooth gradients, different at every position (a misplaced tile shows)."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 256 // size, yy * 256 // size, (xx + yy) * 128 // size], axis=-1)
    return image.astype(np.uint8)


def box_downsample(image: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint8]:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image.reshape(h, factor, w, factor, 3).astype(np.float64)
    out: npt.NDArray[np.uint8] = np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)
    return out


def write_mrxs(path: Path) -> Path:
    """A synthetic 3DHistech MRXS that OpenSlide opens: ``path`` plus the folder beside it.

    Written from OpenSlide's description of the format (``openslide-vendor-mirax.c``):

    - ``<name>.mrxs``: OpenSlide only checks that it exists (a marker, no INI);
    - ``<name>/Slidedat.ini``: ``[GENERAL]`` (slide id, images per side, objective),
      ``[HIERARCHICAL]`` with one hierarchy ``Slide zoom level`` whose values name one
      section per level (``IMAGE_CONCAT_FACTOR`` 0 then 1: each level halves the last;
      no overlap, no position buffer, so the images lie on a plain grid), ``[DATAFILE]``;
    - ``<name>/Index.dat``: ``01.02``, the slide id, a pointer to the table of the
      hierarchical records (one per level) and one to the (empty) non-hierarchical
      table; each record is ``0, page``, a page ``count, next (0), count x (image
      index, offset, length, file number)``, little-endian int32;
    - ``<name>/Data0000.dat``: the JPEG images, 256x256 at every level (an image of
      level k covers 2**k x 2**k camera images; index ``row * 4 + column`` of its first
      one), the smallest level first, so that a cut file keeps the small levels.
    """
    folder = path.with_suffix("")
    folder.mkdir()
    path.write_bytes(b"synthetic 3DHistech MRXS for cervixwsi's tests\r\n")
    source = mrxs_source()
    data = bytearray()
    records: list[tuple[int, bytes]] = []  # per level: image count, index entries
    for level in reversed(range(MRXS_LEVELS)):
        concat = 1 << level  # camera images per side in one image of this level
        pixels = box_downsample(source, concat)
        entries: list[bytes] = []
        for row in range(0, MRXS_IMAGES, concat):
            for col in range(0, MRXS_IMAGES, concat):
                y, x = row * MRXS_TILE // concat, col * MRXS_TILE // concat
                tile = np.ascontiguousarray(pixels[y : y + MRXS_TILE, x : x + MRXS_TILE])
                blob = bytes(imagecodecs.jpeg_encode(tile, level=95))
                entries.append(struct.pack("<4i", row * MRXS_IMAGES + col, len(data), len(blob), 0))
                data += blob
        records.insert(0, (len(entries), b"".join(entries)))
    (folder / "Data0000.dat").write_bytes(bytes(data))

    header = b"01.02" + MRXS_SLIDE_ID.encode("ascii")
    table = len(header) + 8  # after the two root pointers
    offset = table + 4 * MRXS_LEVELS
    pointers, bodies = [], []
    for count, entry_bytes in records:
        pointers.append(offset)
        body = struct.pack("<4i", 0, offset + 8, count, 0) + entry_bytes
        bodies.append(body)
        offset += len(body)
    nonhier_table = offset  # NONHIER_COUNT = 0: an empty table, never read
    index = header + struct.pack("<2i", table, nonhier_table)
    index += struct.pack(f"<{MRXS_LEVELS}i", *pointers) + b"".join(bodies)
    (folder / "Index.dat").write_bytes(index)

    lines = [
        "[GENERAL]",
        "SLIDE_VERSION = 01.03",
        f"SLIDE_ID = {MRXS_SLIDE_ID}",
        f"IMAGENUMBER_X = {MRXS_IMAGES}",
        f"IMAGENUMBER_Y = {MRXS_IMAGES}",
        "OBJECTIVE_MAGNIFICATION = 20",
        "CameraImageDivisionsPerSide = 1",
        "[HIERARCHICAL]",
        "HIER_COUNT = 1",
        "NONHIER_COUNT = 0",
        "INDEXFILE = Index.dat",
        "HIER_0_NAME = Slide zoom level",
        f"HIER_0_COUNT = {MRXS_LEVELS}",
        *(f"HIER_0_VAL_{k}_SECTION = LAYER_0_LEVEL_{k}_SECTION" for k in range(MRXS_LEVELS)),
        "[DATAFILE]",
        "FILE_COUNT = 1",
        "FILE_0 = Data0000.dat",
    ]
    for k in range(MRXS_LEVELS):
        lines += [
            f"[LAYER_0_LEVEL_{k}_SECTION]",
            f"IMAGE_CONCAT_FACTOR = {min(k, 1)}",
            "OVERLAP_X = 0",
            "OVERLAP_Y = 0",
            f"MICROMETER_PER_PIXEL_X = {0.25 * 2**k}",
            f"MICROMETER_PER_PIXEL_Y = {0.25 * 2**k}",
            "IMAGE_FILL_COLOR_BGR = 16777215",
            f"DIGITIZER_WIDTH = {MRXS_TILE}",
            f"DIGITIZER_HEIGHT = {MRXS_TILE}",
            "IMAGE_FORMAT = JPEG",
        ]
    (folder / "Slidedat.ini").write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
    return path


def copy_mrxs(path: Path, target: Path) -> Path:
    """``path`` and its data folder copied to ``target`` (a ``.mrxs`` path)."""
    shutil.copy(path, target)
    shutil.copytree(path.with_suffix(""), target.with_suffix(""))
    return target


@pytest.fixture(scope="module")
def mrxs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mrxs(tmp_path_factory.mktemp("mrxs") / "scan.mrxs")


def test_mrxs_reads_through_openslide_pixel_for_pixel(
    mrxs: Path, rng: np.random.Generator, openslide: Any
) -> None:
    assert openslide.OpenSlide.detect_format(str(mrxs)) == "mirax"
    assert detect_format(mrxs) == Format("openslide", "3DHistech MRXS")
    with Slide(mrxs) as slide, openslide.OpenSlide(str(mrxs)) as osr:
        assert slide.backend == "openslide" and isinstance(slide, OpenSlideSlide)
        assert (
            slide.level_dimensions == osr.level_dimensions == ((1024, 1024), (512, 512), (256, 256))
        )
        assert slide.level_downsamples == osr.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.mpp == (0.25, 0.25) and slide.objective_power == 20.0
        assert slide.properties["openslide.vendor"] == "mirax"
        assert slide.properties["mirax.GENERAL.SLIDE_ID"] == MRXS_SLIDE_ID
        width, height = slide.dimensions
        source = mrxs_source()
        for level in range(slide.level_count):
            for x, y, w, h in random_boxes(rng, width, height, 12):
                np.testing.assert_array_equal(
                    slide.read_region((x, y), level, (w, h)),
                    openslide_rgb(osr, (x, y), level, (w, h)),
                )
            # every image in its place at every level (JPEG: nearly equal to the source)
            expected = box_downsample(source, 2**level)
            error = np.abs(slide.read_level(level).astype(int) - expected)
            assert error.mean() < 1.5 and error.max() < 40, (level, error.mean(), error.max())
        clone = pickle.loads(pickle.dumps(slide))
        np.testing.assert_array_equal(
            clone.read_region((700, 300), 1, (50, 40)), slide.read_region((700, 300), 1, (50, 40))
        )
        clone.close()


# Opens and reads broken slides in a child process, so that a crash inside OpenSlide
# fails the test instead of killing pytest, and a hang meets the timeout.
_PROBE = """
import json, sys
from cervixwsi.errors import CervixWSIError
from cervixwsi.slide import Slide

results = []
for path, boxes in json.loads(sys.argv[1]):
    outcome = []
    try:
        slide = Slide(path)
    except Exception as exc:
        outcome.append(["open", type(exc).__name__, isinstance(exc, CervixWSIError), str(exc)])
    else:
        outcome.append(["open", "ok", True, ""])
        for level, x, y, w, h in boxes:
            try:
                slide.read_region((x, y), level, (w, h))
            except Exception as exc:
                error = [type(exc).__name__, isinstance(exc, CervixWSIError), str(exc)]
                outcome.append(["read", *error])
            else:
                outcome.append(["read", "ok", True, ""])
        slide.close()
    results.append(outcome)
print(json.dumps(results))
"""


def probe(cases: list[tuple[Path, list[tuple[int, int, int, int, int]]]]) -> list[Any]:
    """Open each slide and read its boxes ``(level, x, y, w, h)`` in a child process."""
    argument = json.dumps([[str(path), boxes] for path, boxes in cases])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, argument],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # no crash
    results: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_truncated_mrxs_data_file_raises_the_projects_errors(
    mrxs: Path, tmp_path: Path, openslide: Any
) -> None:
    """A cut ``Data0000.dat``: an error naming the slide and OpenSlide's reason, no crash."""
    data = (mrxs.with_suffix("") / "Data0000.dat").read_bytes()
    cuts = {"half": len(data) // 2, "end": len(data) - 1000, "tiny": 1000}
    paths = {}
    for name, size in cuts.items():
        paths[name] = copy_mrxs(mrxs, tmp_path / f"{name}.mrxs")
        (paths[name].with_suffix("") / "Data0000.dat").write_bytes(data[:size])
    small_levels = [(2, 0, 0, 256, 256), (1, 0, 0, 512, 512)]  # before the cut
    last_image = (0, 768, 768, 256, 256)  # level 0's last image: past the cut, or cut inside
    half, end, (tiny_open,) = probe(
        [
            (paths["half"], [*small_levels, (0, 0, 0, 64, 64), last_image, (2, 0, 0, 8, 8)]),
            (paths["end"], [*small_levels, last_image]),
            (paths["tiny"], []),
        ]
    )
    ok = ["read", "ok", True, ""]
    # The small levels (written first) and level 0's first images read; the image past
    # the cut (or cut inside) fails on its first read, and later reads say so.
    for name, outcome, reason in [
        ("half", half, "Empty input file"),
        ("end", end, "Premature end of JPEG file"),
    ]:
        assert outcome[0] == ["open", "ok", True, ""], (name, outcome)
        failed = outcome.index(next(r for r in outcome if r[1] != "ok"))
        assert outcome[1:failed] == [ok] * (failed - 1), (name, outcome)
        kind, is_ours, message = outcome[failed][1:]
        assert kind == "SlideReadError" and is_ours, (name, outcome)
        assert message.startswith(f"{paths[name]}: the region at (768, 768), level 0"), message
        assert f"OpenSlideError: {reason}" in message, message
    assert len(half) == 6 and half[5][1] == "SlideReadError" and "failed earlier" in half[5][3]
    # Cut inside the smallest level: OpenSlide reads it when it opens the slide.
    kind, is_ours, message = tiny_open[1:]
    assert kind == "SlideOpenError" and is_ours, tiny_open
    assert message.startswith(f"{paths['tiny']}: OpenSlide cannot open it"), message
    assert "Data0000.dat" in message and "Short read" in message
    # What survives the cut is still OpenSlide's pixels of the intact slide.
    with Slide(paths["half"]) as cut, Slide(mrxs) as whole:
        for level in (1, 2):
            np.testing.assert_array_equal(cut.read_level(level), whole.read_level(level))
        box = ((0, 0), 0, (64, 64))
        np.testing.assert_array_equal(cut.read_region(*box), whole.read_region(*box))


def test_broken_mrxs_folders_raise_errors_naming_what_is_missing(
    mrxs: Path, tmp_path: Path, openslide: Any
) -> None:
    """A missing or cut Index.dat, a missing data file or folder: SlideOpenError, no crash."""
    no_index = copy_mrxs(mrxs, tmp_path / "no_index.mrxs")
    (no_index.with_suffix("") / "Index.dat").unlink()
    cut_index = copy_mrxs(mrxs, tmp_path / "cut_index.mrxs")
    index = (mrxs.with_suffix("") / "Index.dat").read_bytes()
    (cut_index.with_suffix("") / "Index.dat").write_bytes(index[: len(index) // 2])
    no_data = copy_mrxs(mrxs, tmp_path / "no_data.mrxs")
    (no_data.with_suffix("") / "Data0000.dat").unlink()
    no_folder = tmp_path / "no_folder.mrxs"
    shutil.copy(mrxs, no_folder)
    no_slidedat = copy_mrxs(mrxs, tmp_path / "no_slidedat.mrxs")
    (no_slidedat.with_suffix("") / "Slidedat.ini").unlink()
    upper = tmp_path / "upper.MRXS"
    shutil.copy(mrxs, upper)
    shutil.copytree(mrxs.with_suffix(""), tmp_path / "upper")
    cases = [no_index, cut_index, no_data, no_folder, no_slidedat, upper]
    expected = {
        no_index: r"Couldn't open \S*no_index[/\\]Index\.dat",
        cut_index: r"OpenSlideError: ",
        no_data: r"Couldn't open \S*no_data[/\\]Data0000\.dat",
        no_folder: r"its data folder \S*no_folder \(Slidedat\.ini, .*\) is missing",
        no_slidedat: r"its data folder \S*no_slidedat has no Slidedat\.ini",
        upper: r"only with the lowercase extension, not '\.MRXS'",
    }
    for path, ((_, kind, is_ours, message),) in zip(
        cases, probe([(p, []) for p in cases]), strict=True
    ):
        assert kind == "SlideOpenError" and is_ours, (path.name, kind, message)
        assert message.startswith(f"{path}: OpenSlide cannot open it"), message
        assert re.search(expected[path], message), message


# --- mpp and objective power --------------------------------------------------------------


def write_aperio(path: Path, description: str) -> Path:
    tifffile.imwrite(
        path, ramp_image(256, 256), tile=(128, 128), photometric="rgb", description=description
    )
    return path


def test_mpp_is_derived_from_the_objective_power_with_a_warning(tmp_path: Path) -> None:
    path = write_aperio(tmp_path / "old.svs", "Aperio Image Library v10.0\n256x256 |AppMag = 40")
    with pytest.warns(
        SlideWarning, match=r"old\.svs: .* 0\.25 µm/px derived from the 40x objective"
    ):
        slide = Slide(path)
    assert slide.mpp == (0.25, 0.25) and slide.objective_power == 40.0
    assert slide.properties["cervixwsi.mpp-source"] == "objective-power"
    assert "openslide.mpp-x" not in slide.properties  # the file has none, as OpenSlide says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone = pickle.loads(pickle.dumps(slide))  # said once, when first opened
        with Slide(path, mpp=0.2528) as given:  # the user's: no warning
            assert given.mpp == (0.2528, 0.2528)
            assert given.properties["cervixwsi.mpp-source"] == "user"
    assert clone.mpp == (0.25, 0.25)
    none = write_aperio(tmp_path / "bare.svs", "Aperio Image Library v10.0\n256x256")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Slide(none).mpp is None and Slide(none, mpp=(0.5, 0.52)).mpp == (0.5, 0.52)


def test_mpp_override_wins_and_every_stage_resolves_levels_by_it(real_slides: Path) -> None:
    path = real_slides / "openslide-python_boxes.tiff"  # resolution says 352.8 µm/px
    with Slide(path, mpp=0.25) as slide:
        assert slide.mpp == (0.25, 0.25)
        assert slide.level_for_mpp(1.0) == resolve_level(slide, mpp=1.0) == 2
        assert slide.properties["openslide.mpp-x"] != "0.25"
    with Slide(path) as slide:
        assert slide.mpp is not None and slide.mpp[0] == pytest.approx(352.7777798337701)


@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf, "0.5", (0.5, 0.0), (1, 2, 3), True])
def test_bad_mpp_is_a_parameter_error_naming_the_file(real_slides: Path, bad: Any) -> None:
    with pytest.raises(ParameterError, match=r"Slide\.mpp") as info:
        Slide(real_slides / "cmu_small_region.svs", mpp=bad)
    assert "cmu_small_region.svs" in str(info.value)
    assert isinstance(info.value, CervixWSIError) and isinstance(info.value, ValueError)


def test_mpp_override_reaches_the_openslide_reader(
    vendor_files: dict[str, Path], openslide: Any
) -> None:
    with Slide(vendor_files["ndpi"], mpp=0.3) as slide:
        assert slide.mpp == (0.3, 0.3)
    with pytest.raises(ParameterError, match=r"scan\.ndpi"):
        Slide(vendor_files["ndpi"], mpp=math.nan)
