"""The OpenSlide reader: :class:`OpenSlideSlide` (the ``openslide`` extra).

For the formats the native readers do not implement: 3DHistech MRXS, Hamamatsu NDPI
and VMS/VMU, Leica SCN, Ventana BIF, Philips TIFF, Sakura SVSlide (and anything else
OpenSlide opens, when forced with ``backend="openslide"``).  It reads through
openslide-python with the OpenSlide binaries of openslide-bin, so no system library
is needed.  OpenSlide resamples regions itself, so this reader passes regions to it
(a region reader: it overrides ``_read_region``, not ``_tile``) and returns
OpenSlide's pixels composited over white.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi.errors import MissingExtraError, SlideNotFoundError, SlideOpenError, SlideReadError
from cervixwsi.slide._base import RGBImage
from cervixwsi.slide._formats import detect_format, dicom_files
from cervixwsi.slide._slide import DEFAULT_TILE_CACHE_BYTES, Slide, settle_mpp

__all__ = ["OpenSlideSlide", "rgba_to_rgb"]

logger = logging.getLogger(__name__)


def _import_openslide(path: Path) -> Any:
    try:
        import openslide
    except (ImportError, OSError) as exc:  # OSError: openslide-python without its library
        try:
            what = detect_format(path).description
        except SlideOpenError:
            what = "this format"
        raise MissingExtraError(
            f"{path}: {what} is read through OpenSlide, the 'openslide' extra "
            f"(openslide-python and openslide-bin), which is not installed: "
            f"pip install 'cervixwsi[openslide]' ({type(exc).__name__}: {exc})"
        ) from exc
    return openslide


def rgba_to_rgb(rgba: Any) -> RGBImage:
    """OpenSlide's RGBA (transparent outside the slide) composited over white.

    ``round(rgb * a / 255 + 255 * (1 - a / 255))``, in integers (there are no ties).

    Examples
    --------
    >>> import numpy as np
    >>> rgba_to_rgb(np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [100, 100, 100, 128]]],
    ...                      np.uint8))
    array([[[ 10,  20,  30],
            [255, 255, 255],
            [177, 177, 177]]], dtype=uint8)
    """
    array = np.asarray(rgba)
    rgb, alpha = array[..., :3], array[..., 3:]
    if bool((alpha == 255).all()):
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.int32)
    blended = (rgb.astype(np.int32) * a + 255 * (255 - a) + 127) // 255
    out: RGBImage = blended.astype(np.uint8)
    return out


class _AssociatedImages(Mapping[str, RGBImage]):
    """OpenSlide's associated images of an :class:`OpenSlideSlide`, as RGB arrays."""

    def __init__(self, slide: OpenSlideSlide, names: tuple[str, ...]) -> None:
        self._slide = slide
        self._names = names

    def __getitem__(self, name: str) -> RGBImage:
        if name not in self._names:
            raise KeyError(name)
        return self._slide._read_associated(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<associated images {list(self._names)}>"


def _mrxs_problem(path: Path) -> str:
    """What OpenSlide's "unsupported" means for an MRXS slide, or ``""``.

    OpenSlide recognises MRXS only by the lowercase ``.mrxs`` extension and a
    ``Slidedat.ini`` in the folder of the same name beside it, and reports a missing
    folder as an unsupported file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "scan.mrxs"
    ...     _ = path.write_bytes(b"marker")
    ...     print(_mrxs_problem(path).replace(tmp, "TMP"))
    ; its data folder TMP/scan (Slidedat.ini, Index.dat, Data*.dat) is missing: ...
    """
    suffix = path.suffix
    if suffix.lower() != ".mrxs":
        return ""
    if suffix != ".mrxs":
        return f"; OpenSlide reads MRXS only with the lowercase extension, not {suffix!r}"
    folder = path.with_suffix("")
    if not folder.is_dir():
        return (
            f"; its data folder {folder} (Slidedat.ini, Index.dat, Data*.dat) is missing: "
            "an MRXS slide is the .mrxs file and that folder beside it"
        )
    if not (folder / "Slidedat.ini").is_file():
        return f"; its data folder {folder} has no Slidedat.ini"
    return ""


def _positive(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


class OpenSlideSlide(Slide):
    """A slide read by OpenSlide (``backend="openslide"``): MRXS, NDPI, VMS, SCN, BIF, ...

    ``pip install 'cervixwsi[openslide]'`` installs openslide-python and openslide-bin
    (OpenSlide's binaries for Linux, macOS and Windows).  ``Slide(path)`` picks it for
    formats the native readers do not implement; ``backend="openslide"`` forces it for
    any file OpenSlide opens (a DICOM folder is opened through one of its files).

    Geometry, downsamples, properties and associated images are OpenSlide's.  Regions
    are OpenSlide's pixels composited over white: at level 0, and wherever ``x / d``
    is an integer, those are the level's own pixels, as with every reader; elsewhere
    OpenSlide interpolates at ``x / d`` where the native readers take the nearest
    pixel ``round(x / d)``.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file (for MRXS the ``.mrxs`` beside its data folder).
    backend : {"openslide"}, optional
        Accepted for ``Slide(path, backend="openslide")``.
    mpp : float or (float, float), optional
        Level-0 µm per pixel, overriding or supplying the metadata's.
    tile_cache_bytes : int, optional
        Bound of OpenSlide's tile cache of this slide in bytes (default 48 MiB).
    threads : int, optional
        Accepted for the same options as the other readers; OpenSlide decodes in the
        calling thread (any number of threads may read at once).

    Raises
    ------
    MissingExtraError
        If openslide-python or its binaries are not installed.
    SlideOpenError
        If OpenSlide cannot open the file (the message has OpenSlide's reason).
    """

    _backend_name = "openslide"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | None = None,
        mpp: float | tuple[float, float] | None = None,
        tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES,
        threads: int | None = None,
    ) -> None:
        path_ = self._start(path, backend, mpp, tile_cache_bytes, threads)
        if not path_.exists():
            raise SlideNotFoundError(f"{path_}: no such slide file or folder")
        openslide = _import_openslide(path_)
        target = path_
        if path_.is_dir():  # a DICOM folder: OpenSlide opens one file and finds the others
            files = dicom_files(path_)
            if not files:
                raise SlideOpenError(f"{path_}: a folder, and OpenSlide opens files")
            target = files[0]
        try:
            osr = openslide.OpenSlide(os.fspath(target))
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise SlideOpenError(
                f"{target}: OpenSlide cannot open it ({type(exc).__name__}: {exc})"
                f"{_mrxs_problem(target)}"
            ) from exc
        self._osr = osr
        self._error: str | None = None
        try:
            if self._tile_cache_bytes:
                osr.set_cache(openslide.OpenSlideCache(self._tile_cache_bytes))
            props = {str(k): str(v) for k, v in osr.properties.items()}
            metadata_mpp = None
            mpp_x, mpp_y = (_positive(props.get(f"openslide.mpp-{a}")) for a in "xy")
            if mpp_x is not None and mpp_y is not None:
                metadata_mpp = (mpp_x, mpp_y)
            power = _positive(props.get("openslide.objective-power"))
            self._associated = _AssociatedImages(self, tuple(osr.associated_images))
            dims = tuple((int(w), int(h)) for w, h in osr.level_dimensions)
            downsamples = tuple(float(d) for d in osr.level_downsamples)
        except Exception as exc:
            osr.close()
            raise SlideOpenError(f"{target}: OpenSlide cannot read its metadata ({exc})") from exc
        name = path_.name if path_.is_dir() else path_.stem
        super().__init__(
            name=name,
            level_dimensions=dims,
            mpp=settle_mpp(path_, self._user_mpp, metadata_mpp, power, props),
            objective_power=power,
            properties=props,
        )
        # OpenSlide's own downsamples (some formats set them), so that
        # get_best_level_for_downsample and region coordinates are OpenSlide's.
        self._level_downsamples = downsamples
        logger.debug("opened %r through OpenSlide: levels %s", self, dims)

    @property
    def associated_images(self) -> Mapping[str, RGBImage]:
        """OpenSlide's associated images (``label``, ``macro``, ``thumbnail``, ...) as RGB."""
        return self._associated

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Call OpenSlide; its errors become SlideReadError naming the slide and ``what``."""
        if self._error is not None:
            raise SlideReadError(
                f"{self._path}: OpenSlide failed earlier on this slide ({self._error}) and "
                "reads nothing more from it; reopen the slide"
            )
        try:
            return fn(*args)
        except Exception as exc:  # OpenSlideError: a corrupt or truncated file
            message = f"{type(exc).__name__}: {exc}"
            if type(exc).__name__ == "OpenSlideError":
                self._error = message  # OpenSlide's handle is unusable after an error
            raise SlideReadError(f"{self._path}: {what} cannot be read ({message})") from exc

    def _read_region(self, level: int, x: int, y: int, w: int, h: int) -> RGBImage:
        image = self._call(
            f"the region at ({x}, {y}), level {level}, {w}x{h} pixels",
            self._osr.read_region,
            (x, y),
            level,
            (w, h),
        )
        return rgba_to_rgb(np.asarray(image))

    def _read_associated(self, name: str) -> RGBImage:
        self._check_open()
        image = self._call(
            f"associated image {name!r}", self._osr.associated_images.__getitem__, name
        )
        return rgba_to_rgb(np.asarray(image.convert("RGBA")))

    def close(self) -> None:
        """Close the slide; reading afterwards raises :class:`SlideReadError`."""
        if self._closed:
            return
        super().close()
        self._osr.close()
