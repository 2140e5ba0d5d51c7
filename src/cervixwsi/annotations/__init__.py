"""Region annotations: polygons with holes, ASAP XML and QuPath GeoJSON, masks.

An :class:`Annotation` is one polygon in **level-0** pixel coordinates: an
exterior ring, optional holes, and a class ``label`` (``"tumor"``,
``"exclusion"``, ``"normal"``, ...).  An :class:`AnnotationSet` is a sequence
of them, usually read from one file.

Formats
-------
*ASAP XML* (the Camelyon16 format): ``Annotation`` elements with a
``PartOfGroup`` and ``Coordinates/Coordinate`` children carrying ``Order``,
``X`` and ``Y``.  Groups ``_0`` and ``_1`` are tumor and ``_2`` an exclusion
region inside tumor (:data:`ASAP_LABELS`).  ASAP has no holes: writing an
annotation with holes writes each hole as a separate ``_2`` exclusion
annotation, so the mask drawn from the file is the same (see :func:`rasterize`
for the one difference).

*GeoJSON* as QuPath exports it: a ``FeatureCollection``, a single ``Feature``
or a bare list of features, with ``Polygon`` or ``MultiPolygon`` geometries
(each polygon of a multipolygon becomes an annotation) and the class in
``properties.classification.name``.  Rings in GeoJSON are closed (the first
point repeated at the end); the duplicate is dropped on reading and added on
writing.

Labels are case-normalised to lower case on reading (QuPath's ``"Tumor"`` and
an ASAP group ``"tumor"`` are both ``"tumor"``); GeoJSON is written with the
first letter capitalised, as QuPath's built-in classes are.

Rasters
-------
:func:`rasterize` draws annotations into a boolean :class:`~cervixwsi.geometry.Raster`
at any downsample: a pixel is inside when its centre is inside the polygon
(:meth:`AnnotationSet.to_mask` is the same as a method: the way annotations
become the ground-truth masks :mod:`cervixwsi.metrics` evaluates against).
:func:`annotations_from_mask` traces a boolean raster back into polygons along
the pixel edges, exactly: rasterising them on the raster's grid gives the
raster again.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.annotations import Annotation, AnnotationSet, rasterize
>>> square = Annotation(np.array([[0, 0], [8, 0], [8, 8], [0, 8]]),
...                     holes=(np.array([[2, 2], [6, 2], [6, 6], [2, 6]]),))
>>> square.area
48.0
>>> mask = rasterize(AnnotationSet([square]), (5, 5), 2)
>>> mask.array.astype(int)
array([[1, 1, 1, 1, 0],
       [1, 0, 0, 1, 0],
       [1, 0, 0, 1, 0],
       [1, 1, 1, 1, 0],
       [0, 0, 0, 0, 0]])
"""

from __future__ import annotations

from cervixwsi.annotations._asap import ASAP_LABELS, read_asap_xml, write_asap_xml
from cervixwsi.annotations._geojson import read_geojson, write_geojson
from cervixwsi.annotations._model import Annotation, AnnotationSet, AnnotationWarning
from cervixwsi.annotations._raster import annotations_from_mask, rasterize

__all__ = [
    "ASAP_LABELS",
    "Annotation",
    "AnnotationSet",
    "AnnotationWarning",
    "annotations_from_mask",
    "rasterize",
    "read_asap_xml",
    "read_geojson",
    "write_asap_xml",
    "write_geojson",
]
