"""``Slide``: a slide on disk, read by the reader its content calls for.

The design
----------
:class:`Slide` is the public class of every slide on disk, and the base class of one
reader per family of formats, each in its own module:

* :class:`~cervixwsi.slide.TiffSlide` (``_tiff_slide``, ``backend="tiff"``): the native
  reader of Aperio SVS, generic tiled TIFF and OME-TIFF, the default wherever it reads
  correctly;
* :class:`~cervixwsi.slide.DicomSlide` (``_dicom``, ``backend="dicom"``): DICOM WSI, a
  folder of instances or one file, through wsidicom (the ``dicom`` extra);
* :class:`~cervixwsi.slide.OpenSlideSlide` (``_openslide``, ``backend="openslide"``):
  everything else OpenSlide reads (MRXS, VMS/VMU, SCN, BIF, NDPI, Philips TIFF, ...),
  through openslide-python and openslide-bin (the ``openslide`` extra).

``Slide(path, ...)`` is a factory: ``Slide.__new__`` asks
:func:`cervixwsi.slide._formats.reader_class` which reader the path's *content* calls
for (or takes the one ``backend=`` names) and creates an instance of that subclass;
Python then runs the subclass's ``__init__`` with the same arguments.  So the
constructor, ``isinstance(x, Slide)``, pickling and every method stay what they were,
``slide.backend`` says which reader was picked, and a new format is a new module with a
subclass plus one line in the registry.  A reader may also be created directly
(``DicomSlide(folder)``).

What every reader shares lives here: the ``mpp=`` override, the rule that derives mpp
from the objective power (:func:`settle_mpp`), ``path``, ``repr`` and pickling (a slide
pickles as its path and options and reopens in the process that unpickles it).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cervixwsi._validate import check_choice, check_int, check_real
from cervixwsi.errors import ParameterError
from cervixwsi.slide._base import BaseSlide, RGBImage

__all__ = ["BACKENDS", "MPP_PER_OBJECTIVE_POWER", "Slide", "SlideWarning", "settle_mpp"]

logger = logging.getLogger(__name__)

# A read touching at least this many tiles decodes them in parallel threads.
_PARALLEL_MIN_TILES = 8

#: The readers ``Slide(path, backend=...)`` can force.
BACKENDS = ("tiff", "dicom", "openslide")

#: The rule when the metadata has an objective power but no mpp:
#: ``mpp = MPP_PER_OBJECTIVE_POWER / objective_power`` (20x -> 0.5 µm/px, 40x -> 0.25).
MPP_PER_OBJECTIVE_POWER = 10.0


class SlideWarning(UserWarning):
    """Something about a slide was derived rather than read (e.g. mpp from the objective)."""


def parse_mpp(mpp: Any, path: Path) -> tuple[float, float] | None:
    """A user's ``mpp=``: ``None``, a positive number, or a positive ``(x, y)`` pair.

    Raises
    ------
    ParameterError
        Naming the slide and the value, for 0, a negative number, NaN, infinity or a
        value that is neither a number nor a pair.

    Examples
    --------
    >>> from pathlib import Path
    >>> parse_mpp(0.25, Path("a.svs")), parse_mpp((0.25, 0.26), Path("a.svs"))
    ((0.25, 0.25), (0.25, 0.26))
    >>> parse_mpp(0, Path("a.svs"))
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: a.svs: Slide.mpp must be a finite number > 0, got 0
    """
    if mpp is None:
        return None
    values: Any = (mpp, mpp) if np.ndim(mpp) == 0 else mpp
    try:
        mx, my = values
    except (TypeError, ValueError):
        raise ParameterError(
            f"{path}: Slide.mpp must be a number or an (x, y) pair of µm per pixel, got {mpp!r}"
        ) from None
    try:
        return (
            check_real(mx, "Slide.mpp", min=0, min_open=True),
            check_real(my, "Slide.mpp", min=0, min_open=True),
        )
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None


def settle_mpp(
    path: Path,
    user_mpp: tuple[float, float] | None,
    metadata_mpp: tuple[float, float] | None,
    objective_power: float | None,
    properties: dict[str, str],
) -> tuple[float, float] | None:
    """The slide's level-0 µm/px: the user's, else the metadata's, else from the objective.

    The rule, in this order:

    1. ``Slide(path, mpp=...)``: the user's value, whatever the file says (logged when
       it differs from the metadata's by more than 1 %);
    2. the mpp the file records (each reader documents where it looks);
    3. when the file records an objective power but no mpp:
       ``MPP_PER_OBJECTIVE_POWER / objective_power`` µm/px (20x -> 0.5, 40x -> 0.25, the
       usual convention of brightfield scanners, right to about 10 %), with a
       :class:`SlideWarning` that says so;
    4. otherwise ``None``: never guessed.

    ``properties`` gets ``cervixwsi.mpp-source`` (``"user"``, ``"metadata"`` or
    ``"objective-power"``) and, when the value is not the metadata's,
    ``cervixwsi.mpp-x``/``-y``; OpenSlide's ``openslide.mpp-x``/``-y`` keep the file's.

    Examples
    --------
    >>> import warnings
    >>> from pathlib import Path
    >>> props = {}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     settle_mpp(Path("old.svs"), None, None, 20.0, props)
    (0.5, 0.5)
    >>> props["cervixwsi.mpp-source"], caught[0].category.__name__
    ('objective-power', 'SlideWarning')
    >>> settle_mpp(Path("a.svs"), (0.25, 0.25), (0.5, 0.5), 20.0, props)
    (0.25, 0.25)
    """
    if user_mpp is not None:
        if metadata_mpp is not None and not all(
            math.isclose(u, m, rel_tol=0.01) for u, m in zip(user_mpp, metadata_mpp, strict=True)
        ):
            logger.info(
                "%s: using mpp %s given to Slide instead of the metadata's %s",
                path,
                user_mpp,
                metadata_mpp,
            )
        mpp, source = user_mpp, "user"
    elif metadata_mpp is not None:
        mpp, source = metadata_mpp, "metadata"
    elif objective_power is not None:
        value = MPP_PER_OBJECTIVE_POWER / objective_power
        mpp, source = (value, value), "objective-power"
        warnings.warn(
            f"{path}: the metadata records no µm per pixel; using {value:g} µm/px derived "
            f"from the {objective_power:g}x objective ({MPP_PER_OBJECTIVE_POWER:g} / "
            "objective power, right to about 10 %). Give Slide(path, mpp=...) if you "
            "know the scanner's resolution.",
            SlideWarning,
            stacklevel=3,
        )
    else:
        return None
    properties["cervixwsi.mpp-source"] = source
    if source != "metadata":
        properties["cervixwsi.mpp-x"] = format(mpp[0], ".17g")
        properties["cervixwsi.mpp-y"] = format(mpp[1], ".17g")
    return mpp


#: Default bound of a :class:`Slide`'s decoded-tile cache (bytes): 256 RGB tiles of 256².
DEFAULT_TILE_CACHE_BYTES = 48 * 2**20


def default_threads(threads: int | None, owner: str) -> int:
    """Threads for a large read: ``threads``, checked, or up to 4 (as many as CPUs)."""
    if threads is None:
        return min(4, os.cpu_count() or 1)
    return check_int(threads, f"{owner}.threads", min=1)


class Slide(BaseSlide):
    """A whole-slide image on disk: a file, or a folder of DICOM instances.

    ``Slide(path)`` looks at the content (not only the extension) and opens it with
    the reader it calls for; :attr:`backend` says which:

    ========== ==================================================== =================
    backend    formats                                              needs
    ========== ==================================================== =================
    tiff       Aperio SVS (JPEG, JPEG 2000), generic tiled TIFF,    nothing (default)
               OME-TIFF
    dicom      DICOM WSI: a folder of instances or one file         ``[dicom]``
               (TILED_FULL and TILED_SPARSE, optical paths)
    openslide  3DHistech MRXS, Hamamatsu NDPI and VMS/VMU, Leica    ``[openslide]``
               SCN, Ventana BIF, Philips TIFF, Sakura SVSlide
    ========== ==================================================== =================

    Every reader has the same surface, coordinates (level-0 locations, white outside
    the slide) and errors; see :class:`TiffSlide`, :class:`DicomSlide` and
    :class:`OpenSlideSlide` for what each reads and the options it takes.

    Parameters
    ----------
    path : str or os.PathLike
        The slide file, or a folder of DICOM instances.
    backend : {"tiff", "dicom", "openslide"}, optional
        Force a reader instead of choosing by content.
    mpp : float or (float, float), optional
        Level-0 µm per pixel ``(x, y)``, overriding the metadata's or supplying it
        when the file records none.  Without it, mpp comes from the metadata, else
        from the objective power (``10 / power``, with a :class:`SlideWarning`), else
        it is ``None``.
    **options
        Options of the reader: ``tile_cache_bytes`` and ``threads`` for every reader,
        ``optical_path`` and ``focal_plane`` for DICOM.

    Raises
    ------
    SlideNotFoundError
        If ``path`` does not exist.
    SlideOpenError
        If it is not a slide, or is truncated, incomplete or unsupported (the message
        names the file and the problem).
    MissingExtraError
        If the format needs an extra that is not installed (the message names it).
    ParameterError
        For an unknown backend, an mpp that is not positive and finite, or a bad option.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, tifffile
    >>> from cervixwsi.slide import Slide
    >>> image = np.full((300, 400, 3), 200, np.uint8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "scan.tif"
    ...     tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb")
    ...     with Slide(path, mpp=0.25) as slide:
    ...         print(slide.backend, isinstance(slide, Slide), slide.mpp, slide.dimensions)
    tiff True (0.25, 0.25) (400, 300)
    """

    #: The options a reader accepts besides ``backend`` and ``mpp``.
    _option_names: ClassVar[tuple[str, ...]] = ()

    _path: Path
    _open_options: dict[str, Any]
    #: Threads that decode the tiles of one large read (a reader sets its own).
    _threads: int = 1

    def __new__(cls, *args: Any, **kwargs: Any) -> Slide:
        if cls is not Slide:  # a reader created directly, or unpickled
            return super().__new__(cls)
        from cervixwsi.slide._formats import reader_class

        if args:
            path = args[0]
        elif "path" in kwargs:
            path = kwargs["path"]
        else:
            raise TypeError("Slide() needs the path of a slide")
        return super().__new__(reader_class(path, kwargs.get("backend")))

    def _start(
        self,
        path: str | os.PathLike[str],
        backend: str | None,
        mpp: Any,
        tile_cache_bytes: Any,
        threads: Any,
    ) -> Path:
        """Check the arguments every reader shares and keep them; return the path."""
        try:
            self._path = Path(path)
        except TypeError:
            raise ParameterError(
                f"Slide path must be a str or os.PathLike, got {type(path).__name__}"
            ) from None
        if backend is not None:
            check_choice(backend, "Slide.backend", BACKENDS)
            if backend != self._backend_name:
                raise ParameterError(
                    f"{type(self).__name__} is the {self._backend_name!r} reader; "
                    f"backend={backend!r} asks for another (use Slide(path, backend=...))"
                )
        self._user_mpp = parse_mpp(mpp, self._path)
        self._tile_cache_bytes = check_int(tile_cache_bytes, "Slide.tile_cache_bytes", min=0)
        self._threads = default_threads(threads, "Slide")
        self._open_options = {
            "mpp": mpp,
            "tile_cache_bytes": self._tile_cache_bytes,
            "threads": self._threads,
        }
        return self._path

    def _tiles(
        self, level: int, cells: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, RGBImage | None]]:
        """Tiles of a read of at least 8 tiles (a thumbnail) decode in ``_threads`` threads."""
        if self._threads == 1 or len(cells) < _PARALLEL_MIN_TILES:
            yield from super()._tiles(level, cells)
            return
        with ThreadPoolExecutor(max_workers=self._threads) as pool:
            tiles = pool.map(lambda cell: self._tile(level, *cell), cells)
            for (col, row), tile in zip(cells, tiles, strict=True):
                yield col, row, tile

    @property
    def path(self) -> Path:
        """The slide file, or its folder of DICOM instances."""
        return self._path

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": str(self._path.resolve()),  # a worker may have another cwd
            "options": dict(self._open_options),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # said when the slide was first opened
            warnings.simplefilter("ignore", SlideWarning)
            reopen: Any = type(self).__init__  # the reader's own signature
            reopen(self, state["path"], **state["options"])

    def __repr__(self) -> str:
        return (
            f"Slide({str(self._path)!r}, backend={self._backend_name!r}, "
            f"dimensions={self.dimensions}, levels={self.level_count})"
        )
