"""Tests of the DICOM WSI reader: against OpenSlide 4's DICOM reader and wsidicom, and bad input.

The files (``tests/data/slides``, see its README) were written from the real
``cmu_small_region.svs`` with wsidicomizer and wsidicom's own writer.
"""

from __future__ import annotations

import math
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from cervixwsi.errors import (
    CervixWSIError,
    MissingExtraError,
    ParameterError,
    SlideNotFoundError,
    SlideOpenError,
    SlideReadError,
)
from cervixwsi.slide import DicomSlide, Slide
from cervixwsi.slide._openslide import rgba_to_rgb

FOLDER = "cmu_small_region_dicom"
SPARSE = "cmu_small_region_sparse.dcm"
TWO_PATHS = "cmu_small_region_2paths.dcm"


@pytest.fixture(scope="module")
def wsidicom() -> Any:
    """wsidicom, the DICOM library the reader uses (the ``dicom`` extra, in ``test``)."""
    return pytest.importorskip("wsidicom")


@pytest.fixture(scope="module")
def pydicom(wsidicom: Any) -> Any:
    import pydicom

    return pydicom


@pytest.fixture
def folder(real_slides: Path, wsidicom: Any) -> Path:
    return real_slides / FOLDER


def openslide_rgb(osr: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
    """OpenSlide's region composited over white (the rounding the SVS tests use)."""
    rgba = np.asarray(osr.read_region(location, level, size)).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def reference_region(level: npt.NDArray[np.uint8], x0: int, y0: int, w: int, h: int) -> Any:
    """Pixels [y0, y0+h) x [x0, x0+w) of an array, white outside."""
    rows, cols = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
    inside_r = (rows >= 0) & (rows < level.shape[0])
    inside_c = (cols >= 0) & (cols < level.shape[1])
    out = np.full((h, w, 3), 255, np.uint8)
    out[np.ix_(inside_r, inside_c)] = level[np.ix_(rows[inside_r], cols[inside_c])]
    return out


def random_boxes(
    rng: np.random.Generator, width: int, height: int, n: int, max_size: int = 300
) -> list[tuple[int, int, int, int]]:
    boxes = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(1, max_size, 2))
        boxes.append(
            (int(rng.integers(-w - 20, width + 20)), int(rng.integers(-h - 20, height + 20)), w, h)
        )
    return [*boxes, (-500, -500, 30, 30), (width - 5, height - 5, 40, 40)]


def wsidicom_level(wsidicom: Any, path: Path, level: int, optical_path: str | None = None) -> Any:
    """A whole level as wsidicom reads it (its own decoding and stitching)."""
    with wsidicom.WsiDicom.open(path) as wsi:
        size = wsi.levels[level].size
        return np.asarray(
            wsi.read_region((0, 0), level, (size.width, size.height), path=optical_path)
        )[..., :3]


# --- the DICOM folder, against OpenSlide and wsidicom ------------------------------------


@pytest.mark.parametrize("which", ["folder", "level0.dcm", "label.dcm"])
def test_dicom_geometry_metadata_and_associated_images_equal_openslides(
    folder: Path, which: str, openslide: Any
) -> None:
    """A folder, or any file of it (its series is found beside it, as in OpenSlide)."""
    path = folder if which == "folder" else folder / which
    with Slide(path) as slide, openslide.OpenSlide(str(folder / "level0.dcm")) as osr:
        assert isinstance(slide, DicomSlide) and slide.backend == "dicom"
        assert slide.dimensions == osr.dimensions == (2220, 2967)
        assert slide.level_dimensions == osr.level_dimensions and slide.level_count == 5
        assert slide.level_downsamples == osr.level_downsamples
        assert slide.mpp == (0.499, 0.499)
        assert slide.mpp == (
            float(osr.properties["openslide.mpp-x"]),
            float(osr.properties["openslide.mpp-y"]),
        )
        assert slide.objective_power == 20.0
        for d in (0.5, 1.0, 1.99, 2.0, 4.0, 7.99, 8.0, 16.0, 100.0):
            assert slide.get_best_level_for_downsample(d) == osr.get_best_level_for_downsample(d)
        expected = {
            k: v for k, v in osr.properties.items() if "icc-size" not in k and "quickhash" not in k
        }
        assert {k: slide.properties.get(k) for k in expected} == expected
        assert slide.properties["cervixwsi.mpp-source"] == "metadata"
        assert sorted(slide.associated_images) == sorted(osr.associated_images)
        assert sorted(slide.associated_images) == ["label", "macro", "thumbnail"]
        for key, image in osr.associated_images.items():
            np.testing.assert_array_equal(
                slide.associated_images[key], np.asarray(image.convert("RGB"))
            )
    assert slide.name == ("cmu_small_region_dicom" if which == "folder" else Path(which).stem)


def test_dicom_level0_regions_equal_openslides_pixel_for_pixel(
    folder: Path, rng: np.random.Generator, openslide: Any
) -> None:
    with Slide(folder) as slide, openslide.OpenSlide(str(folder / "level0.dcm")) as osr:
        width, height = slide.dimensions
        for x, y, w, h in random_boxes(rng, width, height, 60):
            ours = slide.read_region((x, y), 0, (w, h))
            assert ours.shape == (h, w, 3) and ours.dtype == np.uint8
            np.testing.assert_array_equal(ours, openslide_rgb(osr, (x, y), 0, (w, h)))


def test_dicom_every_level_equals_openslide_whole_and_where_x_over_d_is_exact(
    folder: Path, rng: np.random.Generator, openslide: Any
) -> None:
    """Whole levels are equal; so are regions at level-0 locations OpenSlide maps exactly."""
    with Slide(folder) as slide, openslide.OpenSlide(str(folder / "level0.dcm")) as osr:
        for level in range(slide.level_count):
            w_k, h_k = slide.level_dimensions[level]
            np.testing.assert_array_equal(
                slide.read_level(level), openslide_rgb(osr, (0, 0), level, (w_k, h_k))
            )
            d = slide.level_downsamples[level]
            # x / d is an integer only at multiples of the numerator of d as a fraction.
            step_x = next(i for i in range(1, 5000) if (i / d).is_integer() or i == 4999)
            for _ in range(8):
                x = int(rng.integers(0, max(1, w_k * d // step_x))) * step_x
                if not (x / d).is_integer():
                    x = 0
                size = (int(rng.integers(1, 260)), int(rng.integers(1, 260)))
                np.testing.assert_array_equal(
                    slide.read_region((x, 0), level, size), openslide_rgb(osr, (x, 0), level, size)
                )


def test_dicom_every_level_is_wsidicoms_pixels_at_round_x_over_d(
    folder: Path, rng: np.random.Generator, wsidicom: Any
) -> None:
    """OpenSlide's rounding at fractional downsamples: level pixel round(x / d), halves up."""
    with Slide(folder) as slide:
        width, height = slide.dimensions
        for level in range(slide.level_count):
            reference = wsidicom_level(wsidicom, folder, level)
            d = slide.level_downsamples[level]
            for x, y, w, h in random_boxes(rng, width, height, 25, max_size=120):
                expected = reference_region(
                    reference, math.floor(x / d + 0.5), math.floor(y / d + 0.5), w, h
                )
                np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), expected)


def test_dicom_thumbnail_reads_only_the_smallest_sufficient_level(
    folder: Path, openslide: Any
) -> None:
    with Slide(folder) as slide, openslide.OpenSlide(str(folder / "level0.dcm")) as osr:
        thumb = slide.get_thumbnail((128, 128))
        assert {key[0] for key in slide._cache._items} == {4}  # 139x186: the smallest level
        theirs = np.asarray(osr.get_thumbnail((128, 128)).convert("RGB"))
        assert thumb.shape == theirs.shape
        assert np.abs(thumb.astype(int) - theirs).mean() < 6


# --- one file: TILED_SPARSE, optical paths ----------------------------------------------


def test_sparse_single_file_equals_openslide_and_wsidicom_with_white_for_missing_tiles(
    real_slides: Path, wsidicom: Any, openslide: Any
) -> None:
    path = real_slides / SPARSE
    with Slide(path) as slide, openslide.OpenSlide(str(path)) as osr:
        assert slide.backend == "dicom" and slide.level_dimensions == ((278, 371),)
        assert slide.properties["dicom.DimensionOrganizationType"] == "TILED_SPARSE"
        image = slide.read_level(0)
        np.testing.assert_array_equal(image, openslide_rgb(osr, (0, 0), 0, (278, 371)))
        np.testing.assert_array_equal(image, wsidicom_level(wsidicom, path, 0))
        # tile (column 0, row 1) is not in the file: white, never an error
        assert (image[240:, :240] == 255).all()
        assert image[:240, :240].mean() < 250 and slide.mpp == (3.992, 3.992)


def test_optical_paths_are_listed_and_each_reads_like_wsidicom(
    real_slides: Path, wsidicom: Any
) -> None:
    path = real_slides / TWO_PATHS
    with Slide(path) as first, Slide(path, optical_path="1") as second:
        assert isinstance(first, DicomSlide) and isinstance(second, DicomSlide)
        assert first.optical_paths == second.optical_paths == ("0", "1")
        assert (first.optical_path, second.optical_path) == ("0", "1")
        assert first.focal_planes == (0.0,) and first.focal_plane == 0.0
        a, b = first.read_level(0), second.read_level(0)
        np.testing.assert_array_equal(a, wsidicom_level(wsidicom, path, 0, "0"))
        np.testing.assert_array_equal(b, wsidicom_level(wsidicom, path, 0, "1"))
        # path 1 holds path 0's tile with its colours inverted (and re-encoded)
        assert np.abs((255 - a.astype(int)) - b).mean() < 3
        assert second.properties["cervixwsi.dicom.optical-paths"] == "0,1"
    with pytest.raises(ParameterError, match=r"optical_path must be one of \['0', '1'\]"):
        Slide(path, optical_path="7")
    with pytest.raises(ParameterError, match="focal_plane"):
        Slide(path, focal_plane=3.0)


# --- options, units, pickling -----------------------------------------------------------


def test_mpp_override_and_refusal_of_zero_and_nan(folder: Path) -> None:
    with Slide(folder, mpp=0.25) as slide:
        assert slide.mpp == (0.25, 0.25) and slide.level_mpp(1) == pytest.approx((0.5, 0.5), 1e-3)
        assert slide.properties["cervixwsi.mpp-source"] == "user"
        assert slide.properties["openslide.mpp-x"] == "0.499"  # the file's, as OpenSlide
    for bad in (0, 0.0, -1, math.nan, math.inf, "0.5", (0.5,)):
        with pytest.raises(ParameterError, match=r"Slide\.mpp") as info:
            Slide(folder, mpp=bad)
        assert FOLDER in str(info.value)


def test_dicom_slide_pickles_and_reads_the_same_from_threads(
    folder: Path, rng: np.random.Generator
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Slide(folder, optical_path="0", tile_cache_bytes=0) as slide:
        clone = pickle.loads(pickle.dumps(slide))
        assert isinstance(clone, DicomSlide) and clone.level_dimensions == slide.level_dimensions
        boxes = random_boxes(rng, *slide.dimensions, 24)
        with ThreadPoolExecutor(8) as pool:
            regions = list(pool.map(lambda b: clone.read_region(b[:2], 0, b[2:]), boxes))
        for box, region in zip(boxes, regions, strict=True):
            np.testing.assert_array_equal(region, slide.read_region(box[:2], 0, box[2:]))
        clone.close()
    with pytest.raises(SlideReadError, match="closed"):
        slide.read_region((0, 0), 0, (4, 4))


def test_openslide_backend_reads_the_dicom_folder_like_the_dicom_reader(
    folder: Path, rng: np.random.Generator, openslide: Any
) -> None:
    with Slide(folder) as ours, Slide(folder, backend="openslide") as theirs:
        assert theirs.backend == "openslide" and theirs.level_dimensions == ours.level_dimensions
        for x, y, w, h in random_boxes(rng, *ours.dimensions, 10):
            np.testing.assert_array_equal(
                ours.read_region((x, y), 0, (w, h)), theirs.read_region((x, y), 0, (w, h))
            )


# --- bad input ----------------------------------------------------------------------------


def copy_folder(folder: Path, tmp_path: Path, name: str = "slide") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def write_dicomdir(folder: Path, pydicom: Any) -> None:
    """A DICOMDIR listing every instance of ``folder`` (its records name the files)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "SLIDE"
    records = []
    for path in sorted(folder.glob("*.dcm")):  # file IDs: 8 upper-case characters, no dot
        record = Dataset()
        record.DirectoryRecordType = "IMAGE"
        record.ReferencedFileID = [path.stem.upper()]
        records.append(record)
        path.rename(folder / path.stem.upper())
    ds.DirectoryRecordSequence = records
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)


def test_folder_with_missing_instances_names_them(
    folder: Path, tmp_path: Path, pydicom: Any
) -> None:
    copy = copy_folder(folder, tmp_path)
    write_dicomdir(copy, pydicom)
    with Slide(copy) as slide:  # complete: opens
        assert slide.level_count == 5
    (copy / "LEVEL1").unlink()
    with pytest.raises(SlideOpenError, match=r"instances its DICOMDIR lists are missing") as info:
        Slide(copy)
    assert "LEVEL1" in str(info.value) and "slide" in str(info.value)


def drop_frames(path: Path, pydicom: Any, keep: int) -> None:
    from pydicom.encaps import encapsulate, generate_fragmented_frames

    ds = pydicom.dcmread(path)
    frames = [
        b"".join(f)
        for f in generate_fragmented_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
    ]
    ds.PixelData = encapsulate(frames[:keep], has_bot=True)
    ds.NumberOfFrames = keep
    ds.save_as(path, enforce_file_format=True)


def test_tiled_full_instance_with_missing_frames_is_refused(
    folder: Path, tmp_path: Path, pydicom: Any
) -> None:
    copy = copy_folder(folder, tmp_path)
    drop_frames(copy / "level2.dcm", pydicom, 10)  # 3 x 4 tiles need 12 frames
    with pytest.raises(SlideOpenError, match="has 10 frames but a TILED_FULL VOLUME") as info:
        Slide(copy)
    assert "level2.dcm" in str(info.value) and "needs 12" in str(info.value)


def test_concatenation_with_a_missing_part_is_refused(
    folder: Path, tmp_path: Path, pydicom: Any
) -> None:
    copy = copy_folder(folder, tmp_path)
    ds = pydicom.dcmread(copy / "level1.dcm")
    ds.ConcatenationUID = "1.2.3.4.5"
    ds.InConcatenationNumber = 1
    ds.InConcatenationTotalNumber = 2
    ds.ConcatenationFrameOffsetNumber = 0
    ds.save_as(copy / "level1.dcm", enforce_file_format=True)
    with pytest.raises(SlideOpenError, match=r"lacks part\(s\) \[2\]: instances are missing"):
        Slide(copy)


def test_label_alone_is_not_a_slide(folder: Path, tmp_path: Path) -> None:
    alone = tmp_path / "label_only"
    alone.mkdir()
    shutil.copy(folder / "label.dcm", alone / "label.dcm")
    for path in (alone, alone / "label.dcm"):
        with pytest.raises(SlideOpenError, match="not a slide: the series has only LABEL") as info:
            Slide(path)
        assert "label_only" in str(info.value)


def write_ct(path: Path, pydicom: Any) -> Path:
    """A small CT image, written with pydicom: DICOM, but no slide."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", generate_uid(), generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.PixelData = np.zeros((16, 16), np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_image_is_not_a_whole_slide_image(tmp_path: Path, pydicom: Any) -> None:
    (tmp_path / "ct").mkdir()
    ct = write_ct(tmp_path / "ct" / "scan.dcm", pydicom)
    with pytest.raises(SlideOpenError, match=r"CT Image Storage .* not a whole-slide") as info:
        Slide(ct)
    assert "scan.dcm" in str(info.value)
    with pytest.raises(SlideOpenError, match="no whole-slide image among its DICOM files"):
        Slide(ct.parent)


def test_two_series_in_one_folder_are_refused_but_each_file_opens(
    real_slides: Path, tmp_path: Path, wsidicom: Any
) -> None:
    for name in (SPARSE, TWO_PATHS):
        shutil.copy(real_slides / name, tmp_path / name)
    with pytest.raises(SlideOpenError, match="holds 2 DICOM series"):
        Slide(tmp_path)
    with Slide(tmp_path / SPARSE) as a, Slide(tmp_path / TWO_PATHS) as b:
        assert a.dimensions == (278, 371) and b.dimensions == (139, 186)


@pytest.mark.parametrize("fraction", [0.001, 0.05, 0.3, 0.6, 0.95, 0.9999])
def test_truncated_instance_raises_slide_open_error_naming_it(
    folder: Path, tmp_path: Path, fraction: float
) -> None:
    copy = copy_folder(folder, tmp_path)
    data = (copy / "level0.dcm").read_bytes()
    (copy / "level0.dcm").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideOpenError) as info, Slide(copy) as slide:
        slide.read_level(slide.level_count - 1)
    assert "level0.dcm" in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on scrambled values
def test_any_damage_raises_only_the_projects_errors(
    folder: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """Cut or scramble the level-0 instance anywhere: opening and reading raise
    CervixWSIError or work, never another exception or a crash."""
    source = (folder / "level0.dcm").read_bytes()
    outcomes, messages = set(), []
    for i in range(16):
        copy = copy_folder(folder, tmp_path, f"damaged{i}")
        damaged = bytearray(source)
        at = int(rng.integers(0, len(source) - 64)) if i % 2 else int(rng.integers(132, 4096))
        damaged[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        (copy / "level0.dcm").write_bytes(bytes(damaged))
        try:
            with Slide(copy) as slide:
                slide.read_region((0, 0), 0, slide.dimensions)
            outcomes.add("read")
        except CervixWSIError as exc:
            outcomes.add(type(exc).__name__)
            messages.append((f"damaged{i}", str(exc)))
    assert all(name in message for name, message in messages)
    assert outcomes <= {"read", "SlideOpenError", "SlideReadError"}, outcomes


def test_corrupt_frame_raises_read_error_naming_the_tile(
    folder: Path, tmp_path: Path, pydicom: Any
) -> None:
    from pydicom.encaps import encapsulate, generate_fragmented_frames

    copy = copy_folder(folder, tmp_path)
    ds = pydicom.dcmread(copy / "level0.dcm")
    frames = [
        b"".join(f)
        for f in generate_fragmented_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
    ]
    frames[11] = frames[11][:40] + b"\x00" * 10  # column 1, row 1 (10 tiles across)
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds.save_as(copy / "level0.dcm", enforce_file_format=True)
    with Slide(copy) as slide:
        with pytest.raises(SlideReadError, match=r"level 0, tile \(column 1, row 1") as info:
            slide.read_region((250, 250), 0, (10, 10))
        assert "slide" in str(info.value)
        assert slide.read_region((0, 0), 0, (100, 100)).shape == (100, 100, 3)


def test_not_dicom_missing_and_forced_on_a_tiff(
    real_slides: Path, tmp_path: Path, wsidicom: Any
) -> None:
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 200)
    with pytest.raises(SlideOpenError, match=r"fake\.dcm: not a DICOM file"):
        Slide(fake)
    with pytest.raises(SlideNotFoundError, match="nothere"):
        DicomSlide(tmp_path / "nothere")
    with pytest.raises(SlideOpenError, match="not a DICOM file"):
        Slide(real_slides / "cmu_small_region.svs", backend="dicom")


def test_missing_wsidicom_names_the_extra(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wsidicom", None)  # import wsidicom -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'cervixwsi\[dicom\]'") as info:
        Slide(folder)
    assert isinstance(info.value, SlideOpenError) and FOLDER in str(info.value)


def test_rgba_composite_matches_the_float_rule() -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    alpha = rgba[..., 3:] / 255.0
    expected = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    np.testing.assert_array_equal(rgba_to_rgb(rgba), expected)
