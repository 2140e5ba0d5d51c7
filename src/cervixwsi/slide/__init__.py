"""Pyramidal whole-slide images: :class:`Slide` (files and DICOM folders) and :class:`ArraySlide`.

Both share OpenSlide's surface (``dimensions``, ``level_count``,
``level_dimensions``, ``level_downsamples``, ``get_best_level_for_downsample``,
``read_region``, ``get_thumbnail``, ``properties``) and add what a pipeline in
physical units needs: ``mpp``, ``objective_power``, ``level_mpp``,
``level_for_mpp`` and ``read_region_at_mpp``.

Conventions (those of OpenSlide):

* ``location`` is ``(x, y)`` in **level-0** pixels; ``size`` is
  ``(width, height)`` in pixels **of the level read**;
* a level-0 location maps to level ``k`` pixel ``round(x / d_k)`` (halves
  round up), with ``d_k`` OpenSlide's downsample of the level, the mean of
  its width and height ratios to level 0.  Real levels rarely divide exactly
  (2220 -> 555 is 4.0000 across but 2967 -> 741 is 4.0040 down), and the
  nearest pixel is what OpenSlide's resampling at the fractional position is
  closest to;
* regions are ``(height, width, 3)`` RGB ``uint8`` arrays; whatever lies
  outside the slide is white (255), never an error.

:class:`Slide` picks a reader by the content of the path and reports it in
``slide.backend``: :class:`TiffSlide` (``"tiff"``, native, no OpenSlide: Aperio
SVS, generic and OME-TIFF), :class:`DicomSlide` (``"dicom"``, DICOM WSI through
wsidicom, the ``dicom`` extra) or :class:`OpenSlideSlide` (``"openslide"``: MRXS,
NDPI, VMS, SCN, BIF, Philips TIFF through openslide-bin, the ``openslide`` extra).
``Slide(path, backend=...)`` forces one and ``Slide(path, mpp=...)`` overrides or
supplies the µm per pixel.  A slide pickles as its path and options and reopens in
the process that unpickles it.

The design: readers are one module each (``_tiff_slide``, ``_dicom``, ``_openslide``,
``_array``), subclasses of :class:`BaseSlide` (``_base``), which holds everything they
share: level arithmetic, coordinates, clipping, thumbnails, units.  A tile reader says
how large its levels and tiles are and how to decode one tile; a region reader
(OpenSlide) reads regions itself.  :class:`Slide` (``_slide``) is the base of the
readers of files: ``Slide.__new__`` asks ``_formats`` (content sniffing and the
registry of readers) which subclass to create, so ``Slide(path)`` keeps its
constructor and ``isinstance(x, Slide)`` holds for every reader; the wsidicom and
OpenSlide imports happen inside their readers, so importing this package needs
neither.  A level asked for by ``mpp`` is chosen by
:func:`cervixwsi.geometry.resolve_level`, the rule every stage uses.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.slide import ArraySlide
>>> image = np.zeros((300, 400, 3), np.uint8)
>>> slide = ArraySlide([image, image[::2, ::2], image[::4, ::4]], mpp=0.25)
>>> slide.level_dimensions
((400, 300), (200, 150), (100, 75))
>>> slide.read_region((390, 0), 0, (20, 2))[0, :, 0]  # 10 pixels in, 10 beyond the edge
array([  0,   0,   0,   0,   0,   0,   0,   0,   0,   0, 255, 255, 255, 255, 255, 255, 255,
       255, 255, 255], dtype=uint8)
>>> slide.level_for_mpp(0.5), slide.level_mpp(2)
(1, (1.0, 1.0))
"""

from cervixwsi._pyramid import write_pyramid
from cervixwsi.slide._array import ArraySlide
from cervixwsi.slide._base import BaseSlide
from cervixwsi.slide._dicom import DicomSlide
from cervixwsi.slide._openslide import OpenSlideSlide
from cervixwsi.slide._slide import DEFAULT_TILE_CACHE_BYTES as DEFAULT_TILE_CACHE_BYTES
from cervixwsi.slide._slide import MPP_PER_OBJECTIVE_POWER as MPP_PER_OBJECTIVE_POWER
from cervixwsi.slide._slide import Slide, SlideWarning
from cervixwsi.slide._tiff_slide import TiffSlide

__all__ = [
    "ArraySlide",
    "BaseSlide",
    "DicomSlide",
    "OpenSlideSlide",
    "Slide",
    "SlideWarning",
    "TiffSlide",
    "write_pyramid",
]
