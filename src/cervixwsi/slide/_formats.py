"""Which reader a slide needs: content sniffing and the registry of readers.

Private helper of :mod:`cervixwsi.slide`.  :func:`detect_format` looks at what a path
*is* (a folder of DICOM files, the DICOM preamble, TIFF magic and the vendor TIFF
tifffile recognises, the INI text of MRXS and VMS, SQLite) and falls back to the
extension only for content it does not recognise (so that a broken ``.svs`` gets the
TIFF reader's precise error).  :func:`reader_class` maps the answer, or the backend a
user forces, to the :class:`~cervixwsi.slide.Slide` subclass that reads it; the reader
modules are imported only when needed, so ``import cervixwsi.slide`` needs neither
wsidicom nor OpenSlide.

Examples
--------
>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "slide.mrxs"
...     _ = path.write_text("[GENERAL]\\nSLIDE_VERSION = 01.03\\n")
...     print(detect_format(path))
Format(backend='openslide', description='3DHistech MRXS')
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cervixwsi.errors import SlideNotFoundError, SlideOpenError

if TYPE_CHECKING:
    from cervixwsi.slide._slide import Slide

__all__ = ["Format", "detect_format", "dicom_files", "is_dicom_file", "reader_class"]

logger = logging.getLogger(__name__)

# backend -> (module, class): the registry of readers.
_READERS = {
    "tiff": ("cervixwsi.slide._tiff_slide", "TiffSlide"),
    "dicom": ("cervixwsi.slide._dicom", "DicomSlide"),
    "openslide": ("cervixwsi.slide._openslide", "OpenSlideSlide"),
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".tf2", ".tf8", ".ptif", ".qptiff")
# Vendor TIFFs whose layout the native reader does not implement (NDPI's JPEG strips,
# SCN collections, BIF tile overlaps, Philips' sparse tiles and XML metadata).
_OPENSLIDE_TIFF_VENDORS = {
    "ndpi": "Hamamatsu NDPI",
    "scn": "Leica SCN",
    "bif": "Ventana BIF",
    "philips": "Philips TIFF",
}
_OPENSLIDE_SUFFIXES = {
    ".mrxs": "3DHistech MRXS",
    ".vms": "Hamamatsu VMS",
    ".vmu": "Hamamatsu VMU",
    ".ndpi": "Hamamatsu NDPI",
    ".scn": "Leica SCN",
    ".bif": "Ventana BIF",
    ".svslide": "Sakura SVSlide",
}
_INI_HEADERS = {
    b"[GENERAL]": "3DHistech MRXS",
    b"[Virtual Microscope Specimen]": "Hamamatsu VMS",
    b"[Uncompressed Virtual Microscope Specimen]": "Hamamatsu VMU",
}


@dataclass(frozen=True)
class Format:
    """What a path holds: the reader it needs and a description for messages."""

    backend: str
    description: str


def _head(path: Path, n: int = 512) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise SlideOpenError(f"{path}: cannot be read ({exc})") from exc


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder``, sorted by name."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise SlideOpenError(f"{folder}: the folder cannot be listed ({exc})") from exc
    return [p for p in entries if p.is_file() and is_dicom_file(p)]


def _tiff_vendor(path: Path) -> str | None:
    """The vendor flag tifffile sets for ``path`` (``"ndpi"``, ``"svs"``, ...), ``""`` for a
    plain TIFF, ``None`` when tifffile cannot parse it."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile warns about what it cannot parse
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) == 0:  # e.g. NDPI's 64-bit offsets in a classic TIFF
                    return None
                for flag in (*_OPENSLIDE_TIFF_VENDORS, "svs", "ome"):
                    if getattr(tif, f"is_{flag}", False):
                        return flag
                return ""
    except Exception:  # tifffile raises many kinds on broken files
        return None


def _openslide_vendor(path: Path) -> str | None:
    """OpenSlide's vendor for ``path`` when OpenSlide is installed, else ``None``."""
    try:
        import openslide
    except (ImportError, OSError):  # not installed, or its shared library is missing
        return None
    try:
        vendor = openslide.OpenSlide.detect_format(os.fspath(path))
    except Exception:  # detection of an unreadable file
        return None
    return None if vendor is None else str(vendor)


def detect_format(path: Path) -> Format:
    """The reader ``path`` needs, from its content.

    Raises
    ------
    SlideNotFoundError
        If ``path`` does not exist.
    SlideOpenError
        If it is an empty file, a folder without DICOM files, or content no reader
        recognises.
    """
    if not path.exists():
        raise SlideNotFoundError(f"{path}: no such slide file or folder")
    if path.is_dir():
        if dicom_files(path):
            return Format("dicom", "DICOM WSI folder")
        raise SlideOpenError(
            f"{path}: a folder without DICOM files; a slide is a file, or a folder of "
            "DICOM WSI instances (for MRXS, open the .mrxs file beside its data folder)"
        )
    if not path.is_file():
        raise SlideOpenError(f"{path}: not a file or folder")
    head = _head(path)
    if not head:
        raise SlideOpenError(f"{path}: the file is empty (0 bytes), not a slide")
    if head[128:132] == b"DICM":
        return Format("dicom", "DICOM WSI")
    suffix = path.suffix.lower()
    if head[:4] in _TIFF_MAGIC:
        vendor = _tiff_vendor(path)
        if vendor in _OPENSLIDE_TIFF_VENDORS:
            return Format("openslide", _OPENSLIDE_TIFF_VENDORS[vendor])
        if vendor is None:  # tifffile cannot parse it: does OpenSlide know the format?
            opened = _openslide_vendor(path)
            if opened is not None and opened not in ("generic-tiff", "aperio"):
                return Format("openslide", f"{opened} (OpenSlide)")
        return Format("tiff", "TIFF")
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    for header, description in _INI_HEADERS.items():
        if text.startswith(header):
            return Format("openslide", description)
    if head.startswith(b"SQLite format 3\x00"):
        return Format("openslide", "Sakura SVSlide")
    # Unrecognised content: the extension decides which reader explains the problem.
    if suffix in _TIFF_SUFFIXES:
        return Format("tiff", "TIFF")
    if suffix == ".dcm":
        return Format("dicom", "DICOM WSI")
    if suffix in _OPENSLIDE_SUFFIXES:
        return Format("openslide", _OPENSLIDE_SUFFIXES[suffix])
    opened = _openslide_vendor(path)
    if opened is not None:
        return Format("openslide", f"{opened} (OpenSlide)")
    raise SlideOpenError(
        f"{path}: not a slide format cervixwsi reads (not TIFF, DICOM, MRXS, VMS or "
        "SQLite, and OpenSlide does not recognise it or is not installed: "
        "pip install 'cervixwsi[openslide]' for OpenSlide's formats)"
    )


def reader_class(path: str | os.PathLike[str], backend: str | None) -> type[Slide]:
    """The :class:`~cervixwsi.slide.Slide` subclass for ``path``, or the one ``backend`` names.

    A forced backend skips sniffing (the reader then reports what it cannot read).
    """
    from cervixwsi._validate import check_choice
    from cervixwsi.slide._slide import BACKENDS

    if backend is not None:
        name = check_choice(backend, "Slide.backend", BACKENDS)
    else:
        try:
            path_ = Path(path)
        except TypeError:
            from cervixwsi.errors import ParameterError

            raise ParameterError(
                f"Slide path must be a str or os.PathLike, got {type(path).__name__}"
            ) from None
        fmt = detect_format(path_)
        name = fmt.backend
        logger.debug("%s: %s, read by the %r reader", path_, fmt.description, name)
    module, cls = _READERS[name]
    reader: type[Slide] = getattr(importlib.import_module(module), cls)
    return reader
