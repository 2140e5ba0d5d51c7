"""Check a DICOM WSI series before it is read, and its metadata as OpenSlide names it.

Private helper of :class:`~cervixwsi.slide.DicomSlide`.  :func:`series_files` reads
every DICOM file of the folder with pydicom, without pixel data, and refuses what
wsidicom would silently skip or fail on later: unreadable or truncated files, a
DICOMDIR whose instances are not all there, concatenations or TILED_FULL instances
missing parts or frames, files that are no whole-slide image, several series in one
folder.  :func:`flatten_dataset` gives OpenSlide's ``dicom.*`` properties.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cervixwsi.errors import SlideNotFoundError, SlideOpenError
from cervixwsi.slide._formats import dicom_files, is_dicom_file

__all__ = ["WSI_SOP_CLASS", "file_meta_properties", "flatten_dataset", "series_files"]

logger = logging.getLogger(__name__)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
# DICOM image flavours -> OpenSlide's names of associated images.
_ASSOCIATED = (("LABEL", "label"), ("OVERVIEW", "macro"), ("THUMBNAIL", "thumbnail"))
_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "ImageType",
    "NumberOfFrames",
    "Columns",
    "Rows",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixFocalPlanes",
    "NumberOfOpticalPaths",
    "DimensionOrganizationType",
    "ConcatenationUID",
    "InConcatenationNumber",
    "InConcatenationTotalNumber",
    "BitsAllocated",
]


@dataclass(frozen=True, slots=True)
class _Header:
    """What the checks need from one DICOM file (read without its pixel data)."""

    path: Path
    sop_class: str
    series: str
    flavour: str  # VOLUME, LABEL, OVERVIEW, THUMBNAIL ('' if not a WSI image)
    frames: int
    tiles: int  # frames a TILED_FULL instance of this size needs
    tiled_full: bool
    concatenation: str | None
    part: int
    parts: int


def _read_header(path: Path) -> _Header:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        sop_class = str(ds.get("SOPClassUID", ""))
        image_type = [str(v) for v in (ds.get("ImageType") or [])]
        flavour = image_type[2] if sop_class == WSI_SOP_CLASS and len(image_type) > 2 else ""
        frames = int(ds.get("NumberOfFrames") or 1)
        tiles = 0
        if flavour:
            across = math.ceil(int(ds.TotalPixelMatrixColumns) / int(ds.Columns))
            down = math.ceil(int(ds.TotalPixelMatrixRows) / int(ds.Rows))
            planes = int(ds.get("TotalPixelMatrixFocalPlanes") or 1)
            paths = int(ds.get("NumberOfOpticalPaths") or 1)
            tiles = across * down * planes * paths
        concatenation = ds.get("ConcatenationUID")
        if flavour:
            _check_complete(path, ds.file_meta.TransferSyntaxUID)
        return _Header(
            path=path,
            sop_class=sop_class,
            series=str(ds.get("SeriesInstanceUID", "")),
            flavour=flavour,
            frames=frames,
            tiles=tiles,
            tiled_full=str(ds.get("DimensionOrganizationType", "TILED_FULL")) != "TILED_SPARSE",
            concatenation=None if concatenation is None else str(concatenation),
            part=int(ds.get("InConcatenationNumber") or 1),
            parts=int(ds.get("InConcatenationTotalNumber") or 1),
        )
    except SlideOpenError:
        raise
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, struct errors...
        raise SlideOpenError(
            f"{path}: not a readable DICOM file (truncated or corrupt? {type(exc).__name__}: {exc})"
        ) from exc


_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _check_complete(path: Path, transfer_syntax: Any) -> None:
    """Refuse a file whose pixel data is cut short (a truncated copy).

    Compressed frames are encapsulated in an item sequence that ends with a sequence
    delimiter, normally the file's last 8 bytes: when they are not, the whole file is
    parsed (slow, but only then) to tell a truncation from trailing elements.
    Uncompressed pixel data has a length, checked against the file's size.
    """
    import pydicom

    size = path.stat().st_size
    if transfer_syntax.is_encapsulated:
        with path.open("rb") as fh:
            fh.seek(max(0, size - 8))
            if fh.read(8) == _SEQUENCE_DELIMITER:
                return
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, defer_size=1024)
        for warning in caught:  # pydicom warns where it reaches the end of a cut file
            if "end of file" in str(warning.message).lower():
                raise EOFError(str(warning.message))
        element: Any = ds.get_item("PixelData")
        end = None
        if element is not None and getattr(element, "length", 0xFFFFFFFF) != 0xFFFFFFFF:
            end = int(element.value_tell) + int(element.length)
    except Exception as exc:
        raise SlideOpenError(
            f"{path}: the pixel data is cut short: the file is truncated "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if end is not None and end > size:
        raise SlideOpenError(
            f"{path}: the pixel data ends at byte {end} but the file has {size} bytes: "
            "the file is truncated"
        )


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _check_dicomdir(folder: Path) -> None:
    """Every instance a DICOMDIR in ``folder`` lists must be there."""
    import pydicom

    dicomdir = next((p for p in folder.iterdir() if p.name.upper() == "DICOMDIR"), None)
    if dicomdir is None:
        return
    try:
        ds = pydicom.dcmread(dicomdir)
        records = list(ds.get("DirectoryRecordSequence") or [])
    except Exception as exc:
        raise SlideOpenError(f"{dicomdir}: the DICOMDIR cannot be read ({exc})") from exc
    missing = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        if not dicomdir.parent.joinpath(*parts).is_file():
            missing.append("/".join(parts))
    if missing:
        raise SlideOpenError(
            f"{folder}: {len(missing)} of the instances its DICOMDIR lists are missing "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
            "an incomplete copy of the slide?"
        )


def _check_series(where: Path, headers: Sequence[_Header]) -> None:
    """Refuse a series without a pyramid, with missing concatenation parts or frames."""
    flavours = sorted({h.flavour for h in headers})
    if "VOLUME" not in flavours:
        names = " and ".join(f or "non-slide" for f in flavours)
        raise SlideOpenError(
            f"{where}: not a slide: the series has only {names} image(s), no VOLUME "
            "(pyramid level) instance; open the folder that holds the whole slide"
        )
    concatenations: dict[str, list[_Header]] = {}
    for h in headers:
        if h.concatenation is not None:
            concatenations.setdefault(h.concatenation, []).append(h)
            continue
        if h.flavour and h.tiled_full and h.frames < h.tiles:
            raise SlideOpenError(
                f"{h.path}: has {h.frames} frames but a TILED_FULL {h.flavour} instance of "
                f"its size needs {h.tiles}: frames are missing (a truncated or broken file?)"
            )
    for uid, parts in concatenations.items():
        total = max(h.parts for h in parts)
        present = {h.part for h in parts}
        missing = sorted(set(range(1, total + 1)) - present)
        if missing:
            raise SlideOpenError(
                f"{where}: the instance split into {total} concatenated parts "
                f"(ConcatenationUID {uid}) lacks part(s) {missing}: instances are missing"
            )
        frames = sum(h.frames for h in parts)
        if parts[0].tiled_full and parts[0].flavour and frames < parts[0].tiles:
            raise SlideOpenError(
                f"{where}: the concatenated instance {uid} has {frames} frames but needs "
                f"{parts[0].tiles}: frames are missing"
            )


def series_files(path: Path) -> list[Path]:
    """The files of the slide at ``path``: a folder's one series, or a file and its
    series' siblings (as OpenSlide does), each checked with pydicom.

    Raises
    ------
    SlideOpenError
        Naming the file and the problem: not DICOM, unreadable, not a whole-slide
        image, several series in one folder, missing instances or frames.
    """
    if not path.exists():
        raise SlideNotFoundError(f"{path}: no such slide file or folder")
    folder = path if path.is_dir() else path.parent
    if path.is_file() and not is_dicom_file(path):
        raise SlideOpenError(f"{path}: not a DICOM file (no 'DICM' after the preamble)")
    _check_dicomdir(folder)
    headers = [_read_header(p) for p in dicom_files(folder)]
    headers = [h for h in headers if h.sop_class != _DICOMDIR_SOP_CLASS]
    if path.is_file():
        own = next(h for h in headers if h.path == path)
        if own.sop_class != WSI_SOP_CLASS:
            raise SlideOpenError(
                f"{path}: a DICOM {_sop_class_name(own.sop_class)} file, not a whole-slide "
                f"image (VL Whole Slide Microscopy Image Storage, {WSI_SOP_CLASS})"
            )
        series = [h for h in headers if h.series == own.series and h.sop_class == WSI_SOP_CLASS]
        _check_series(path, series)
        return [h.path for h in series]
    wsi = [h for h in headers if h.sop_class == WSI_SOP_CLASS]
    if not wsi:
        kinds = sorted({_sop_class_name(h.sop_class) for h in headers})
        raise SlideOpenError(
            f"{path}: no whole-slide image among its DICOM files (found {', '.join(kinds)})"
        )
    uids = sorted({h.series for h in wsi})
    if len(uids) > 1:
        raise SlideOpenError(
            f"{path}: the folder holds {len(uids)} DICOM series (slides); open one of its "
            "files to read that file's series"
        )
    for other in headers:
        if other.sop_class != WSI_SOP_CLASS:
            logger.info("%s: not a whole-slide image, ignored", other.path)
    _check_series(path, wsi)
    return [h.path for h in wsi]


def _format_value(value: Any) -> str:
    """A DICOM value as OpenSlide writes it in ``dicom.*`` properties."""
    if type(value) is float:  # FL, FD; DS and IS keep the text of the file
        return repr(value)
    return str(value)


def flatten_dataset(dataset: Any, prefix: str = "dicom.") -> dict[str, str]:
    """``dicom.Keyword``, ``dicom.Seq[0].Keyword`` and ``dicom.Multi[1]`` properties of a
    pydicom dataset (its file meta included), as OpenSlide names them; binary values,
    private and unknown elements are left out.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "Anon"
    >>> ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    >>> item = Dataset()
    >>> item.PixelSpacing = [0.0005, 0.0005]
    >>> ds.SharedFunctionalGroupsSequence = [Dataset()]
    >>> ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence = [item]
    >>> flat = flatten_dataset(ds)
    >>> flat["dicom.ImageType[2]"], flat["dicom.PatientName"]
    ('VOLUME', 'Anon')
    >>> flat["dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[1]"]
    '0.0005'
    """
    out: dict[str, str] = {}
    meta = getattr(dataset, "file_meta", None)
    elements = list(meta or []) + list(dataset)
    for element in elements:
        keyword = element.keyword
        if not keyword or element.tag.is_private or element.VR in ("OB", "OW", "OF", "OD", "UN"):
            continue
        if keyword in (
            "PixelData",
            "FloatPixelData",
            "DoubleFloatPixelData",
            "FileMetaInformationGroupLength",
        ):
            continue
        key = f"{prefix}{keyword}"
        if element.VR == "SQ":
            for i, item in enumerate(element.value):
                out.update(flatten_dataset(item, f"{key}[{i}]."))
            continue
        value = element.value
        if value is None:
            out[key] = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            for i, v in enumerate(value):
                out[f"{key}[{i}]"] = _format_value(v)
        else:
            out[key] = _format_value(value)
    return out


def file_meta_properties(files: Sequence[Any]) -> dict[str, str]:
    """``dicom.*`` properties of the file meta of the first of ``files`` (as OpenSlide)."""
    from pydicom.filereader import read_file_meta_info

    if not files:
        return {}
    try:
        meta = read_file_meta_info(os.fspath(files[0]))
    except Exception:  # the header was read once already; this is metadata only
        return {}
    return flatten_dataset(meta)
