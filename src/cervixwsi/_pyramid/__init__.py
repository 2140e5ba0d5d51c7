"""Streaming writer of tiled pyramidal TIFF files (``cervixwsi.slide.write_pyramid``).

The file layout is the one OpenSlide's *generic tiled TIFF* reader, tiffslide,
tifffile and :class:`cervixwsi.slide.Slide` all understand:

* page 0 is level 0, pages ``1 .. L-1`` are the lower levels, each marked
  reduced-resolution (``NewSubfileType = 1``), one after the other (not SubIFDs);
* every page is tiled with square ``tile_size`` tiles;
* level ``k + 1`` is level ``k`` halved (``ceil`` of each side) by 2×2 area
  averaging; along an odd edge the last pixel is the mean of the pixels that
  exist (one or two instead of four);
* ``XResolution``/``YResolution`` are pixels per centimetre
  (``ResolutionUnit = CENTIMETER``), so ``mpp = 10**4 / resolution`` for every
  level, level ``k`` having level 0's resolution divided by its downsample.

Memory stays bounded by a few rows of tiles, whatever the slide size: level-0
tiles are streamed from the source straight into the TIFF encoder while each
tile, halved, is put into a one-tile-row buffer of level 1; when that row is
complete its tiles are spooled (uncompressed) to an anonymous temporary file
beside the output and halved into level 2's row buffer, and so on down the
pyramid.  Once level 0 is written, each lower level is written from its spool.
The temporary disk space is about a third of the uncompressed level 0.  The
source and the lower levels run in one background thread, a bounded queue of
tiles ahead of tifffile's encoder threads, so that making tiles, averaging them
and JPEG encoding overlap.

The modules: ``_writer`` (:func:`write_pyramid`: parameters, pages, the atomic file),
``_source`` (level-0 tiles from an array, a callable or an iterable, validated) and
``_stream`` (halving, the lower levels' row buffers and spools, the prefetch thread).
"""

from cervixwsi._pyramid._stream import halve as halve
from cervixwsi._pyramid._writer import write_pyramid

__all__ = ["write_pyramid"]
