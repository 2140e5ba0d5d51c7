"""The DICOM WSI reader: :class:`DicomSlide`, through wsidicom (the ``dicom`` extra).

A DICOM whole-slide image is a series of instances (usually one file each): one per
pyramid level (``VOLUME``), possibly split into concatenated parts, plus ``LABEL``,
``OVERVIEW`` and ``THUMBNAIL`` images.  wsidicom parses the series (levels, tile
arrangement TILED_FULL or TILED_SPARSE, optical paths, focal planes, frame offsets) and
decodes frames with its codecs; this module checks the series first with pydicom (so a
broken or incomplete folder is an error that names the file, not a silently missing
level), then reads tiles through wsidicom's public tile API into the shared
:class:`~cervixwsi.slide._base.BaseSlide` machinery (decoded-tile cache, parallel
decoding of large reads, OpenSlide's coordinates).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi._validate import check_real
from cervixwsi.errors import (
    MissingExtraError,
    ParameterError,
    SlideOpenError,
    SlideReadError,
)
from cervixwsi.slide._base import RGBImage
from cervixwsi.slide._dicom_series import file_meta_properties, flatten_dataset, series_files
from cervixwsi.slide._slide import DEFAULT_TILE_CACHE_BYTES, Slide, settle_mpp
from cervixwsi.slide._tiff import level_properties, to_rgb
from cervixwsi.slide._tilecache import TileCache

__all__ = ["DicomSlide"]

logger = logging.getLogger(__name__)


def _import_wsidicom(path: Path) -> Any:
    try:
        import wsidicom
    except ImportError as exc:
        raise MissingExtraError(
            f"{path}: a DICOM WSI needs the 'dicom' extra (wsidicom), which is not "
            f"installed: pip install 'cervixwsi[dicom]' ({exc})"
        ) from exc
    return wsidicom


@dataclass(frozen=True, slots=True, eq=False)
class _DicomLevel:
    """One pyramid level: wsidicom's image data and the optical path/focal plane read."""

    image_data: Any
    z: float
    optical_path: str
    width: int
    height: int
    tile_width: int
    tile_height: int


class _AssociatedImages(Mapping[str, RGBImage]):
    """Label, macro and thumbnail of a :class:`DicomSlide`, decoded when accessed."""

    def __init__(self, slide: DicomSlide, groups: Mapping[str, Any]) -> None:
        self._slide = slide
        self._groups = dict(groups)

    def __getitem__(self, name: str) -> RGBImage:
        return self._slide._read_whole(name, self._groups[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n!r}: {g.size.width}x{g.size.height}" for n, g in self._groups.items())
        return f"<associated images {{{sizes}}}>"


class DicomSlide(Slide):
    """A DICOM WSI (``backend="dicom"``): a folder of instances, or one file.

    Read through `wsidicom <https://github.com/imi-bigpicture/wsidicom>`_ (Apache-2.0;
    ``pip install 'cervixwsi[dicom]'``): levels are the ``VOLUME`` instances of the
    series (TILED_FULL or TILED_SPARSE, concatenations included; a tile a sparse level
    does not have is white), the associated images are the ``LABEL`` (``label``),
    ``OVERVIEW`` (``macro``) and ``THUMBNAIL`` (``thumbnail``) instances, named as
    OpenSlide names them, and the properties are OpenSlide's (``dicom.*`` from the
    level-0 instance).  A file opens with the instances of its series in the same
    folder, as in OpenSlide; a folder must hold one series.

    Before wsidicom reads anything, every DICOM file of the folder is checked: it must
    be readable, a DICOMDIR's instances must all be there, concatenations complete and
    TILED_FULL instances must have a frame per tile, so an incomplete copy is an error
    that names the file, not a slide quietly missing a level.

    The mpp is ``mpp=`` when given, else the level-0 ``PixelSpacing`` (mm; ``x`` is its
    second value), else derived from the optical path's ``ObjectiveLensPower`` with a
    :class:`SlideWarning`.

    Parameters
    ----------
    path : str or os.PathLike
        A folder of DICOM instances, or one instance file.
    backend : {"dicom"}, optional
        Accepted for ``Slide(path, backend="dicom")``.
    mpp : float or (float, float), optional
        Level-0 µm per pixel, overriding or supplying the metadata's.
    tile_cache_bytes : int, optional
        Bound of the decoded-tile cache in bytes (default 48 MiB; 0 disables it).
    threads : int, optional
        Threads that decode the tiles of one large read (default: up to 4).
    optical_path : str, optional
        The optical path to read (its ``OpticalPathIdentifier``); default the first.
        :attr:`optical_paths` lists them.
    focal_plane : float, optional
        The focal plane to read, in µm; default the middle one.  :attr:`focal_planes`
        lists them.

    Raises
    ------
    MissingExtraError
        If wsidicom is not installed.
    SlideOpenError
        For a file that is not DICOM, not a whole-slide image (a CT image, a label
        alone), truncated, or a folder with missing instances or several series.
    ParameterError
        For an unknown optical path or focal plane, or a bad option.
    """

    _backend_name = "dicom"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str | None = None,
        mpp: float | tuple[float, float] | None = None,
        tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES,
        threads: int | None = None,
        optical_path: str | None = None,
        focal_plane: float | None = None,
    ) -> None:
        path_ = self._start(path, backend, mpp, tile_cache_bytes, threads)
        if optical_path is not None and not isinstance(optical_path, str):
            raise ParameterError(
                f"Slide.optical_path must be an OpticalPathIdentifier (str), got {optical_path!r}"
            )
        if focal_plane is not None:
            focal_plane = check_real(focal_plane, "Slide.focal_plane")
        self._open_options.update(optical_path=optical_path, focal_plane=focal_plane)
        wsidicom = _import_wsidicom(path_)
        files = series_files(path_)
        try:
            wsi = wsidicom.WsiDicom.open(files)
        except Exception as exc:  # wsidicom's own errors and whatever pydicom raises
            raise SlideOpenError(
                f"{path_}: wsidicom cannot open the DICOM WSI ({type(exc).__name__}: {exc})"
            ) from exc
        self._wsi = wsi
        try:
            self._open(wsi, path_, optical_path, focal_plane)
        except BaseException:
            wsi.close()
            raise

    def _open(
        self, wsi: Any, path: Path, optical_path: str | None, focal_plane: float | None
    ) -> None:
        levels_ = list(wsi.levels)
        if not levels_:
            raise SlideOpenError(f"{path}: the DICOM series has no pyramid level")
        base = levels_[0]
        self._optical_paths = tuple(sorted(base.optical_paths, key=_path_key))
        self._focal_planes = tuple(float(z) for z in base.focal_planes)
        base_instance = base.default_instance
        if optical_path is None:
            optical_path = str(base_instance.image_data.default_path)
        elif optical_path not in self._optical_paths:
            raise ParameterError(
                f"{path}: Slide.optical_path must be one of {list(self._optical_paths)}, "
                f"got {optical_path!r}"
            )
        if focal_plane is None:
            focal_plane = float(base_instance.image_data.default_z)
        elif focal_plane not in self._focal_planes:
            raise ParameterError(
                f"{path}: Slide.focal_plane must be one of {list(self._focal_planes)} µm, "
                f"got {focal_plane!r}"
            )
        self._optical_path, self._focal_plane = optical_path, focal_plane
        levels: list[_DicomLevel] = []
        for index, level in enumerate(levels_):
            try:
                image_data = level.get_instance(focal_plane, optical_path).image_data
            except Exception:
                logger.warning(
                    "%s: level %d has no optical path %r at focal plane %g: not used",
                    path,
                    index,
                    optical_path,
                    focal_plane,
                )
                continue
            lv = _DicomLevel(
                image_data=image_data,
                z=focal_plane,
                optical_path=optical_path,
                width=int(level.size.width),
                height=int(level.size.height),
                tile_width=int(image_data.tile_size.width),
                tile_height=int(image_data.tile_size.height),
            )
            if image_data.bits > 8 or image_data.samples_per_pixel not in (1, 3):
                raise SlideOpenError(
                    f"{path}: level {index} has {image_data.bits}-bit samples, "
                    f"{image_data.samples_per_pixel} per pixel (only 8-bit grey or colour)"
                )
            if levels and not (lv.width < levels[-1].width or lv.height < levels[-1].height):
                logger.warning(
                    "%s: level %d is not smaller than the previous: not used", path, index
                )
                continue
            levels.append(lv)
        if not levels:
            raise SlideOpenError(f"{path}: no level has optical path {optical_path!r}")
        self._levels = tuple(levels)
        self._check_last_frames(path)
        self._cache = TileCache(self._tile_cache_bytes)

        wsi_dataset = base_instance.datasets[0]
        dataset = wsi_dataset.as_dataset() if hasattr(wsi_dataset, "as_dataset") else wsi_dataset
        properties = file_meta_properties(getattr(base_instance.image_data, "files", []))
        properties.update(flatten_dataset(dataset))
        properties["openslide.vendor"] = "dicom"
        spacing = base.pixel_spacing
        metadata_mpp = None
        if spacing is not None and spacing.width > 0 and spacing.height > 0:
            metadata_mpp = (float(spacing.width) * 1000.0, float(spacing.height) * 1000.0)
            properties["openslide.mpp-x"] = repr(metadata_mpp[0])
            properties["openslide.mpp-y"] = repr(metadata_mpp[1])
        power = _objective_power(dataset, optical_path)
        if power is not None:
            properties["openslide.objective-power"] = format(power, "g")
        groups = self._associated_groups(wsi)
        for name, group in groups.items():
            properties[f"openslide.associated.{name}.width"] = str(group.size.width)
            properties[f"openslide.associated.{name}.height"] = str(group.size.height)
        properties["cervixwsi.dicom.optical-paths"] = ",".join(self._optical_paths)
        properties["cervixwsi.dicom.optical-path"] = optical_path
        properties["cervixwsi.dicom.focal-planes"] = ",".join(
            format(z, "g") for z in self._focal_planes
        )
        properties["cervixwsi.dicom.focal-plane"] = format(focal_plane, "g")
        self._associated = _AssociatedImages(self, groups)
        dims = tuple((lv.width, lv.height) for lv in levels)
        super().__init__(
            name=path.name if path.is_dir() else path.stem,
            level_dimensions=dims,
            mpp=settle_mpp(path, self._user_mpp, metadata_mpp, power, properties),
            objective_power=power,
            properties=properties,
        )
        self._properties.update(
            level_properties(
                dims,
                self._level_downsamples,
                tuple((lv.tile_width, lv.tile_height) for lv in levels),
            )
        )
        logger.debug("opened %r: levels %s", self, dims)

    @staticmethod
    def _associated_groups(wsi: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        series = {
            "label": wsi.labels,
            "macro": wsi.overviews,
            "thumbnail": wsi.pyramid.thumbnails,
        }
        for name, groups in series.items():
            if groups is not None and len(groups) > 0:
                found[name] = groups[0]
        return found

    def _check_last_frames(self, path: Path) -> None:
        """Read each level's last stored tile, so that a truncated file fails at open."""
        from wsidicom.geometry import Point

        for index, lv in enumerate(self._levels):
            last = Point(
                math.ceil(lv.width / lv.tile_width) - 1, math.ceil(lv.height / lv.tile_height) - 1
            )
            try:
                if not lv.image_data.is_sparse(last, lv.z, lv.optical_path):
                    lv.image_data.get_encoded_tile(last, lv.z, lv.optical_path)
            except Exception as exc:
                files = ", ".join(str(f) for f in getattr(lv.image_data, "files", []))
                raise SlideOpenError(
                    f"{files or path}: level {index}'s last tile cannot be read "
                    f"({type(exc).__name__}: {exc}): the file is truncated or corrupt"
                ) from exc

    @property
    def optical_paths(self) -> tuple[str, ...]:
        """The optical paths (``OpticalPathIdentifier``) of level 0."""
        return self._optical_paths

    @property
    def optical_path(self) -> str:
        """The optical path this slide reads."""
        return self._optical_path

    @property
    def focal_planes(self) -> tuple[float, ...]:
        """The focal planes (µm) of level 0."""
        return self._focal_planes

    @property
    def focal_plane(self) -> float:
        """The focal plane (µm) this slide reads."""
        return self._focal_plane

    @property
    def associated_images(self) -> Mapping[str, RGBImage]:
        """``label``, ``macro`` (the DICOM OVERVIEW) and ``thumbnail``, decoded on access."""
        return self._associated

    def _tile_size(self, level: int) -> tuple[int, int]:
        lv = self._levels[level]
        return lv.tile_width, lv.tile_height

    def _decode(self, lv: _DicomLevel, col: int, row: int, where: str) -> RGBImage | None:
        """Tile ``(col, row)`` of ``lv`` as RGB, ``None`` where a sparse level has none."""
        from wsidicom.geometry import Point

        point = Point(col, row)
        try:
            if lv.image_data.is_sparse(point, lv.z, lv.optical_path):
                return None
            array = np.asarray(
                lv.image_data.get_decoded_tile(point, lv.z, lv.optical_path, cache=False)
            )
        except Exception as exc:  # wsidicom, pydicom and codec errors of a corrupt frame
            raise SlideReadError(
                f"{where} cannot be read or decoded: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            return to_rgb(array, where)
        except ValueError as exc:
            raise SlideReadError(str(exc)) from exc

    def _tile(self, level: int, col: int, row: int) -> RGBImage | None:
        key = (level, col, row)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lv = self._levels[level]
        where = (
            f"{self._path}: level {level}, tile (column {col}, row {row}, at level pixel "
            f"x={col * lv.tile_width}, y={row * lv.tile_height})"
        )
        tile = self._decode(lv, col, row, where)
        if tile is None:
            return None
        need_h = min(lv.tile_height, lv.height - row * lv.tile_height)
        need_w = min(lv.tile_width, lv.width - col * lv.tile_width)
        if tile.shape[0] < need_h or tile.shape[1] < need_w:
            raise SlideReadError(
                f"{where} decoded to shape {tile.shape}, expected at least ({need_h}, {need_w})"
            )
        self._cache.put(key, tile)
        return tile

    def _read_whole(self, name: str, group: Any) -> RGBImage:
        """An associated image: all tiles of its instance, stitched."""
        self._check_open()
        instance = group.default_instance
        image_data = instance.image_data
        lv = _DicomLevel(
            image_data=image_data,
            z=float(image_data.default_z),
            optical_path=str(image_data.default_path),
            width=int(group.size.width),
            height=int(group.size.height),
            tile_width=int(image_data.tile_size.width),
            tile_height=int(image_data.tile_size.height),
        )
        out = np.full((lv.height, lv.width, 3), 255, np.uint8)
        for row in range(math.ceil(lv.height / lv.tile_height)):
            for col in range(math.ceil(lv.width / lv.tile_width)):
                where = f"{self._path}: associated image {name!r}, tile ({col}, {row})"
                tile = self._decode(lv, col, row, where)
                if tile is None:
                    continue
                y0, x0 = row * lv.tile_height, col * lv.tile_width
                h = min(tile.shape[0], lv.height - y0)
                w = min(tile.shape[1], lv.width - x0)
                out[y0 : y0 + h, x0 : x0 + w] = tile[:h, :w]
        return out

    def close(self) -> None:
        """Close the files; reading afterwards raises :class:`SlideReadError`."""
        if self._closed:
            return
        super().close()
        self._cache.clear()
        self._wsi.close()


def _path_key(identifier: str) -> tuple[int, str]:
    """Sort optical path identifiers numerically where they are numbers."""
    return (int(identifier), "") if identifier.isdigit() else (1 << 30, identifier)


def _objective_power(dataset: Any, optical_path: str) -> float | None:
    """``ObjectiveLensPower`` of the optical path read (or the first that has one)."""
    powers = []
    for item in dataset.get("OpticalPathSequence") or []:
        value = item.get("ObjectiveLensPower")
        try:
            power = float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            continue
        if math.isfinite(power) and power > 0:
            powers.append((str(item.get("OpticalPathIdentifier", "")) != optical_path, power))
    return min(powers)[1] if powers else None
