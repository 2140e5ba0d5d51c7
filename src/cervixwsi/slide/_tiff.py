"""Find the pyramid, the associated images and the metadata of a TIFF slide.

Private helper of :mod:`cervixwsi.slide`.  :func:`inspect_tiff` reads nothing
but the TIFF structure (tags): which pages are pyramid levels, where each
level's tiles lie in the file, how to decode them, and the slide's
micrometres per pixel, objective power and OpenSlide-style properties.
Everything is validated here, once, when a slide is opened, so that reading
pixels later can only fail on tile data that does not decode.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import SlideOpenError

__all__ = [
    "AssociatedPage",
    "TiffLayout",
    "TiffLevel",
    "inspect_tiff",
    "jpeg_top_rows",
    "level_properties",
    "to_rgb",
]

logger = logging.getLogger(__name__)

# TIFF ResolutionUnit values -> micrometres per unit.
_UM_PER_RESOLUTION_UNIT = {2: 25_400.0, 3: 10_000.0}
_RESOLUTION_UNIT_NAMES = {1: "none", 2: "inch", 3: "centimeter"}
# OME length units -> micrometres.
_UM_PER_OME_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}
# Photometric interpretations whose decoded pixels are grey or RGB(A).
_PHOTOMETRIC_OK = {1, 2, 6}  # MINISBLACK, RGB, YCBCR (decoded to RGB by tifffile)
_VENDORS = {
    "svs": "aperio",
    "ndpi": "hamamatsu",
    "philips": "philips",
    "scn": "leica",
    "ome": "ome-tiff",
}
_TIFF_TEXT_TAGS = (
    "ImageDescription",
    "Make",
    "Model",
    "Software",
    "DateTime",
    "Artist",
    "HostComputer",
    "Copyright",
    "DocumentName",
)


@dataclass(frozen=True, slots=True, eq=False)
class TiffLevel:
    """Where the tiles of one pyramid level lie in the file and how to decode them."""

    page_index: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    samples: int
    compression: int
    offsets: npt.NDArray[np.int64]
    bytecounts: npt.NDArray[np.int64]
    decode: Callable[..., tuple[Any, Any, Any]]
    jpegtables: bytes | None
    jpegheader: bytes | None
    #: A JPEG tile's bytes -> its pixels, straight through libjpeg-turbo, for baseline
    #: 8-bit JPEG pages (``None`` otherwise): what ``decode`` does, without tifffile's
    #: per-call work.  ``decode`` remains the fallback (lossless JPEG, odd colour spaces).
    fast_decode: Callable[[bytes], npt.NDArray[Any]] | None = None

    @property
    def tiles_across(self) -> int:
        """Number of tile columns."""
        return math.ceil(self.width / self.tile_width)

    @property
    def tiles_down(self) -> int:
        """Number of tile rows."""
        return math.ceil(self.height / self.tile_height)


@dataclass(frozen=True, slots=True, eq=False)
class AssociatedPage:
    """A non-pyramid image of the file (label, macro, thumbnail)."""

    name: str
    page: Any  # tifffile.TiffPage
    width: int
    height: int


@dataclass(frozen=True, slots=True, eq=False)
class TiffLayout:
    """Everything :class:`~cervixwsi.slide.Slide` needs to know about a TIFF file."""

    levels: tuple[TiffLevel, ...]
    associated: tuple[AssociatedPage, ...]
    mpp: tuple[float, float] | None
    objective_power: float | None
    properties: dict[str, str]


def to_rgb(array: npt.NDArray[Any], what: str) -> npt.NDArray[np.uint8]:
    """An ``(h, w, 3)`` uint8 view or copy of a grey, RGB or RGBA ``uint8`` image.

    Grey images are repeated into three channels, an alpha channel is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> to_rgb(np.zeros((2, 3), np.uint8), "x").shape
    (2, 3, 3)
    >>> to_rgb(np.zeros((2, 3, 4), np.uint8), "x").shape
    (2, 3, 3)
    """
    if array.dtype != np.uint8:
        raise ValueError(f"{what}: pixels must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.repeat(array[:, :, np.newaxis], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3]
    raise ValueError(f"{what}: expected a grey, RGB or RGBA image, got shape {array.shape}")


def _tag(page: Any, name: str) -> Any:
    tag = page.tags.get(name)
    return None if tag is None else tag.value


def _fmt(value: float) -> str:
    """A float as OpenSlide writes it in properties (``%.17g``)."""
    return format(value, ".17g")


def _parse_aperio(description: str) -> dict[str, str]:
    """``key = value`` pairs of an Aperio ImageDescription (later duplicates win)."""
    parts = description.split("|")
    result: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


def _positive_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _resolution_mpp(page: Any, properties: dict[str, str]) -> tuple[float, float] | None:
    """Micrometres per pixel from XResolution/YResolution/ResolutionUnit, or None."""
    xres, yres, unit = (_tag(page, n) for n in ("XResolution", "YResolution", "ResolutionUnit"))
    unit = 2 if unit is None else int(unit)  # the TIFF specification's default: inch
    properties["tiff.ResolutionUnit"] = _RESOLUTION_UNIT_NAMES.get(unit, str(unit))
    values = []
    for axis, res in (("X", xres), ("Y", yres)):
        if res is None:
            return None
        num, den = res if isinstance(res, tuple) else (res, 1)
        if den == 0 or num <= 0:
            return None
        # libtiff (hence OpenSlide) hands resolutions out as float32: do the same, so
        # that mpp and properties agree with OpenSlide's to the last digit.
        value = float(np.float32(num / den))
        properties[f"tiff.{axis}Resolution"] = _fmt(value)
        values.append(value)
    um_per_unit = _UM_PER_RESOLUTION_UNIT.get(unit)
    if um_per_unit is None:  # unit "none": the resolution is a ratio, not a size
        return None
    return (um_per_unit / values[0], um_per_unit / values[1])


def _ome_metadata(
    ome_xml: str, width: int, height: int
) -> tuple[tuple[float, float] | None, float | None]:
    """Level-0 mpp and objective power of the OME image of size ``width x height``."""
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(ome_xml)
    except Exception:  # malformed XML: no metadata, the pixels may still be fine
        logger.warning("OME-XML metadata cannot be parsed; mpp unknown")
        return None, None
    mpp: tuple[float, float] | None = None
    power: float | None = None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Objective" and power is None:
            power = _positive_float(element.get("NominalMagnification"))
        if tag != "Pixels" or mpp is not None:
            continue
        if element.get("SizeX") != str(width) or element.get("SizeY") != str(height):
            continue
        sizes = []
        for axis in ("X", "Y"):
            size = _positive_float(element.get(f"PhysicalSize{axis}"))
            scale = _UM_PER_OME_UNIT.get(element.get(f"PhysicalSize{axis}Unit", "µm"))
            sizes.append(None if size is None or scale is None else size * scale)
        if sizes[0] is not None and sizes[1] is not None:
            mpp = (sizes[0], sizes[1])
    return mpp, power


def _pixel_format_problem(page: Any) -> str | None:
    """Why the pixels of ``page`` cannot be read as grey/RGB uint8, or None if they can."""
    if page.dtype != np.uint8:
        return f"{page.dtype} pixels (only 8-bit images are supported)"
    if page.samplesperpixel not in (1, 3, 4):
        return f"{page.samplesperpixel} samples per pixel (expected 1, 3 or 4)"
    if page.samplesperpixel > 1 and page.planarconfig != 1:
        return "separate colour planes (PlanarConfiguration 2)"
    if page.photometric not in _PHOTOMETRIC_OK:
        return f"photometric interpretation {int(page.photometric)} (expected grey or RGB)"
    if getattr(page, "tiledepth", 1) != 1:
        return "volumetric tiles"
    return None


def _jpeg_fast_decode(keyframe: Any) -> Callable[[bytes], npt.NDArray[Any]] | None:
    """``imagecodecs.jpeg8_decode`` with the page's JPEG tables and colour spaces bound.

    The same call, with the same arguments, that tifffile's own decoder makes for a
    tile of ``keyframe`` (so the pixels are the same), or ``None`` when the page is not
    8-bit JPEG or tifffile does not say which colour spaces it would use.
    """
    from tifffile import tifffile as tifffile_module

    colorspaces = getattr(tifffile_module, "jpeg_decode_colorspace", None)
    if (
        int(keyframe.compression) != 7
        or int(keyframe.bitspersample) != 8
        or getattr(keyframe, "jpegheader", None) is not None  # NDPI-style strips
        or colorspaces is None
    ):
        return None
    try:
        import imagecodecs

        colorspace, outcolorspace = colorspaces(
            keyframe.photometric, keyframe.planarconfig, keyframe.extrasamples, keyframe.is_jfif
        )
        decode: Callable[[bytes], npt.NDArray[Any]] = functools.partial(
            imagecodecs.jpeg8_decode,
            tables=getattr(keyframe, "jpegtables", None),
            colorspace=colorspace,
            outcolorspace=outcolorspace,
        )
    except Exception:  # an imagecodecs without jpeg8, an odd tag: tifffile's own path
        return None
    return decode


# JPEG markers: baseline and extended sequential Huffman frames (whose rows decode in
# order, so a frame cut short decodes the same top rows), the other frame types, and
# the parameterless markers that carry no length field.
_SOF_SEQUENTIAL = frozenset((0xC0, 0xC1))
_SOF_OTHER = frozenset((0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD9)))


def jpeg_top_rows(data: bytes, rows: int) -> tuple[bytes, int] | None:
    """A JPEG stream that decodes to fewer rows, and how many of them are exact.

    For a sequential (baseline) JPEG with one interleaved scan, the entropy-coded
    data is in row order: a stream whose frame header says the image is ``H`` rows
    high makes libjpeg stop after those rows, with the same pixels as a full decode
    except near its cut bottom edge (where fancy chroma upsampling repeats the last
    row instead of reading the next).  This returns the stream with its height set to
    cover ``rows`` plus one more MCU row, and the number of top rows that equal a full
    decode (at least ``rows``); ``None`` when that would not save a whole MCU row or
    the stream is anything else (progressive, lossless, several scans, malformed), in
    which case the caller decodes the whole tile.

    Examples
    --------
    >>> import imagecodecs, numpy as np
    >>> image = np.random.default_rng(0).integers(0, 255, (64, 32, 3), np.uint8)
    >>> data = imagecodecs.jpeg8_encode(image, level=90, subsampling="420")
    >>> short, exact = jpeg_top_rows(data, 10)
    >>> exact, len(short) == len(data)
    (16, True)
    >>> top = imagecodecs.jpeg8_decode(short)
    >>> top.shape, bool((top[:exact] == imagecodecs.jpeg8_decode(data)[:exact]).all())
    ((32, 32, 3), True)
    >>> jpeg_top_rows(data, 50) is None  # 50 rows + a margin is the whole image
    True
    """
    size = len(data)
    if rows <= 0 or size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    at, sof, height, components, v_max = 2, -1, 0, 0, 1
    while at + 4 <= size:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _NO_LENGTH:
            at += 2
            continue
        length = (data[at + 2] << 8) | data[at + 3]
        if length < 2 or at + 2 + length > size:
            return None
        if marker in _SOF_SEQUENTIAL:
            if sof >= 0 or length < 8:
                return None
            sof = at
            height = (data[at + 5] << 8) | data[at + 6]
            components = data[at + 9]
            if components == 0 or length != 8 + 3 * components:
                return None
            v_max = max(data[at + 11 + 3 * k] & 0x0F for k in range(components))
        elif marker in _SOF_OTHER:
            return None
        elif marker == 0xDA:  # start of scan: it must hold every component
            if sof < 0 or length < 6 or data[at + 4] != components:
                return None
            mcu_rows = 8 * max(v_max, 1)
            keep = -(-rows // mcu_rows) * mcu_rows + mcu_rows
            if height == 0 or keep >= height:
                return None
            patched = b"".join((data[: sof + 5], keep.to_bytes(2, "big"), data[sof + 7 :]))
            return patched, keep - mcu_rows
        elif marker == 0xD9:  # end of image before any scan
            return None
        at += 2 + length
    return None


def _make_level(page: Any, keyframe: Any, path: Path, file_size: int) -> TiffLevel:
    """A :class:`TiffLevel` for a tiled page, with its tile table validated."""
    width, height = int(keyframe.imagewidth), int(keyframe.imagelength)
    tile_w, tile_h = int(keyframe.tilewidth), int(keyframe.tilelength)
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    n_tiles = math.ceil(width / tile_w) * math.ceil(height / tile_h)
    if offsets.size < n_tiles or counts.size < n_tiles:
        raise SlideOpenError(
            f"{path}: page {page.index} ({width}x{height}, {tile_w}x{tile_h} tiles) needs "
            f"{n_tiles} tile offsets, the file has {min(offsets.size, counts.size)}: corrupt TIFF"
        )
    offsets, counts = offsets[:n_tiles], counts[:n_tiles]
    present = counts > 0
    ends = offsets[present] + counts[present]
    if present.any() and (int(ends.max()) > file_size or int(offsets[present].min()) < 0):
        raise SlideOpenError(
            f"{path}: tile data of page {page.index} ends at byte {int(ends.max())} but the "
            f"file has {file_size} bytes: the file is truncated (an incomplete copy or download?)"
        )
    return TiffLevel(
        page_index=int(page.index),
        width=width,
        height=height,
        tile_width=tile_w,
        tile_height=tile_h,
        samples=int(keyframe.samplesperpixel),
        compression=int(keyframe.compression),
        offsets=offsets,
        bytecounts=counts,
        decode=keyframe.decode,
        jpegtables=getattr(keyframe, "jpegtables", None),
        jpegheader=getattr(keyframe, "jpegheader", None),
        fast_decode=_jpeg_fast_decode(keyframe),
    )


def _same_aspect(w0: int, h0: int, w: int, h: int) -> bool:
    """True when a ``w x h`` image can be a downsampled ``w0 x h0`` one (pixel rounding)."""
    rx, ry = w0 / w, h0 / h
    # Each level dimension is rounded (up or down) from the exact one: allow that,
    # plus 1 % for scanners that crop a few pixels.
    slack = max(rx, ry) * (1.0 / w + 1.0 / h) + 0.01 * max(rx, ry)
    return abs(rx - ry) <= slack


def _series_pages(series: Any) -> tuple[Any, Any] | None:
    """``(first page, keyframe)`` of a series or level, or None when it has none."""
    pages = list(series.pages)
    if not pages or pages[0] is None:
        return None
    if len(pages) > 1:
        logger.debug("%s: %d planes, reading the first", series, len(pages))
    return pages[0], series.keyframe


def inspect_tiff(tif: Any, path: Path, file_size: int) -> TiffLayout:
    """The pyramid levels, associated images and metadata of an open ``tifffile.TiffFile``.

    Raises
    ------
    SlideOpenError
        If the file has no image, no tiled level 0, or pixels that are not
        8-bit grey/RGB(A), or if its tile table points past the end of the file.
    """
    try:
        return _inspect(tif, path, file_size)
    except SlideOpenError:
        raise
    except Exception as exc:  # tifffile parses lazily: a corrupt IFD may surface here
        raise SlideOpenError(
            f"{path}: corrupt TIFF structure ({type(exc).__name__}: {exc})"
        ) from exc


def _inspect(tif: Any, path: Path, file_size: int) -> TiffLayout:
    candidates = []
    for index, series in enumerate(tif.series):
        first = _series_pages(series)
        if first is not None:
            candidates.append((index, series, first))
    if not candidates:
        raise SlideOpenError(f"{path}: the TIFF has no readable image (is it truncated or empty?)")
    # The slide is the largest image; other series are associated images.
    main_index, main, (page0, key0) = max(
        candidates, key=lambda c: (c[2][1].imagewidth * c[2][1].imagelength, -c[0])
    )
    if not key0.is_tiled:
        raise SlideOpenError(
            f"{path}: no tiled pyramid: its {key0.imagewidth}x{key0.imagelength} image "
            f"(page {page0.index}) is stored in strips, not tiles. Convert it to a tiled "
            "pyramidal TIFF first (e.g. cervixwsi.slide.write_pyramid, or "
            "`vips tiffsave in out.tif --tile --pyramid`)."
        )
    problem = _pixel_format_problem(key0)
    if problem is not None:
        raise SlideOpenError(f"{path}: unsupported image (page {page0.index}): {problem}")

    levels = [_make_level(page0, key0, path, file_size)]
    for level_series in main.levels[1:]:
        pages = _series_pages(level_series)
        if pages is None:
            continue
        page, key = pages
        last = levels[-1]
        w, h = int(key.imagewidth), int(key.imagelength)
        why = None
        if not key.is_tiled:
            why = "not tiled"
        elif not (w <= last.width and h <= last.height and (w, h) != (last.width, last.height)):
            why = f"not smaller than the previous level ({last.width}x{last.height})"
        elif not _same_aspect(levels[0].width, levels[0].height, w, h):
            why = "not the aspect ratio of level 0"
        else:
            why = _pixel_format_problem(key)
        if why is not None:
            logger.warning(
                "%s: page %d (%dx%d) is not used as a level: %s", path, page.index, w, h, why
            )
            continue
        levels.append(_make_level(page, key, path, file_size))

    associated: list[AssociatedPage] = []
    for index, series, (page, key) in candidates:
        if index == main_index or _pixel_format_problem(key) is not None:
            continue
        name = (series.name or "").strip().lower() or f"series{index}"
        if any(a.name == name for a in associated):
            name = f"{name}{index}"
        associated.append(AssociatedPage(name, page, int(key.imagewidth), int(key.imagelength)))

    properties: dict[str, str] = {}
    for a in associated:
        properties[f"openslide.associated.{a.name}.width"] = str(a.width)
        properties[f"openslide.associated.{a.name}.height"] = str(a.height)
    description = str(_tag(page0, "ImageDescription") or "")
    if description:
        properties["openslide.comment"] = description
    for tag_name in _TIFF_TEXT_TAGS:
        value = _tag(page0, tag_name)
        if isinstance(value, str) and value:
            properties[f"tiff.{tag_name}"] = value
    kind = str(getattr(main, "kind", "") or "").lower()
    properties["openslide.vendor"] = _VENDORS.get(kind, "generic-tiff")

    mpp: tuple[float, float] | None = None
    power: float | None = None
    resolution_mpp = _resolution_mpp(page0, properties)
    if tif.is_svs or description.startswith("Aperio"):
        properties["openslide.vendor"] = "aperio"
        aperio = _parse_aperio(description)
        properties.update({f"aperio.{k}": v for k, v in aperio.items()})
        mpp_value = _positive_float(aperio.get("MPP"))
        if mpp_value is not None:
            mpp = (mpp_value, mpp_value)
            properties["openslide.mpp-x"] = properties["openslide.mpp-y"] = repr(mpp_value)
        power = _positive_float(aperio.get("AppMag"))
        if power is not None:
            properties["openslide.objective-power"] = aperio["AppMag"]
    if mpp is None and tif.is_ome and tif.ome_metadata:
        mpp, ome_power = _ome_metadata(tif.ome_metadata, levels[0].width, levels[0].height)
        power = power if power is not None else ome_power
    if mpp is None and resolution_mpp is not None:
        mpp = resolution_mpp
    if power is None and tif.is_ndpi:
        ndpi = page0.ndpi_tags or {}
        power = _positive_float(str(ndpi.get("Magnification")))
    if mpp is not None:
        properties.setdefault("openslide.mpp-x", _fmt(mpp[0]))
        properties.setdefault("openslide.mpp-y", _fmt(mpp[1]))
    if power is not None:
        properties.setdefault("openslide.objective-power", _fmt(power))
    return TiffLayout(
        levels=tuple(levels),
        associated=tuple(associated),
        mpp=mpp,
        objective_power=power,
        properties=properties,
    )


def level_properties(
    dimensions: tuple[tuple[int, int], ...],
    downsamples: tuple[float, ...],
    tile_sizes: tuple[tuple[int, int], ...] | None,
) -> Mapping[str, str]:
    """OpenSlide's ``openslide.level[i].*`` properties."""
    props = {"openslide.level-count": str(len(dimensions))}
    for i, ((w, h), d) in enumerate(zip(dimensions, downsamples, strict=True)):
        props[f"openslide.level[{i}].width"] = str(w)
        props[f"openslide.level[{i}].height"] = str(h)
        props[f"openslide.level[{i}].downsample"] = _fmt(d)
        if tile_sizes is not None:
            props[f"openslide.level[{i}].tile-width"] = str(tile_sizes[i][0])
            props[f"openslide.level[{i}].tile-height"] = str(tile_sizes[i][1])
    return props


def _ycbcr_tables() -> tuple[npt.NDArray[np.int64], ...]:
    """OpenSlide's YCbCr -> RGB tables: 16-bit fixed point chroma contributions.

    Red and blue as libjpeg (``jdcolor.c``) rounds them; green from the two
    rounded scaled products plus one half, shifted: this reproduces OpenSlide's
    pixels for every (Cb, Cr) pair (checked against OpenSlide in the tests).
    """
    x = np.arange(256, dtype=np.int64) - 128
    one_half = 1 << 15

    def fix(v: float) -> int:
        return int(v * (1 << 16) + 0.5)

    cr_r = (fix(1.40200) * x + one_half) >> 16
    cb_b = (fix(1.77200) * x + one_half) >> 16
    cr_g = np.round(-0.71414 * (1 << 16) * x).astype(np.int64)
    cb_g = np.round(-0.34414 * (1 << 16) * x).astype(np.int64) + one_half
    return cr_r, cb_b, cr_g, cb_g


_YCC_TABLES = _ycbcr_tables()


def ycbcr_to_rgb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Convert full-resolution YCbCr pixels to RGB exactly as libjpeg and OpenSlide do.

    Aperio's JPEG 2000 compression 33003 stores YCbCr components that the
    codec does not convert back; OpenSlide converts them with integer tables,
    and so does this function, pixel for pixel.

    Examples
    --------
    >>> import numpy as np
    >>> ycbcr_to_rgb(np.array([[[128, 128, 128], [76, 85, 255]]], np.uint8))
    array([[[128, 128, 128],
            [254,   0,   0]]], dtype=uint8)
    """
    cr_r, cb_b, cr_g, cb_g = _YCC_TABLES
    y = image[..., 0].astype(np.int64)
    cb, cr = image[..., 1], image[..., 2]
    out = np.empty((*image.shape[:2], 3), np.uint8)
    out[..., 0] = np.clip(y + cr_r[cr], 0, 255)
    out[..., 1] = np.clip(y + ((cb_g[cb] + cr_g[cr]) >> 16), 0, 255)
    out[..., 2] = np.clip(y + cb_b[cb], 0, 255)
    return out
