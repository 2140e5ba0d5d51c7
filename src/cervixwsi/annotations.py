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
at any downsample: a pixel is inside when its centre is inside the polygon.
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

import json
import logging
import math
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from cervixwsi.errors import AnnotationError, GeometryError, ParameterError
from cervixwsi.geometry import Box, Raster

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

logger = logging.getLogger(__name__)

#: ASAP group names and their labels (Camelyon16: ``_0``/``_1`` tumor, ``_2`` exclusion).
ASAP_LABELS: Mapping[str, str] = {
    "_0": "tumor",
    "_1": "tumor",
    "_2": "exclusion",
    "Tumor": "tumor",
    "tumor": "tumor",
    "Exclusion": "exclusion",
    "exclusion": "exclusion",
    "metastases": "tumor",
    "Metastases": "tumor",
}
# Labels -> ASAP groups on writing; other labels are written as their own group.
_ASAP_GROUPS: Mapping[str, str] = {"tumor": "_0", "exclusion": "_2"}
_ASAP_COLORS: Mapping[str, str] = {"_0": "#F4FA58", "_1": "#F4FA58", "_2": "#64FE2E"}
_ASAP_REGION_TYPES = frozenset({"polygon", "spline", "rectangle"})
_QUPATH_COLORS: Mapping[str, list[int]] = {
    "tumor": [200, 0, 0],
    "exclusion": [80, 80, 80],
    "normal": [0, 150, 0],
    "stroma": [150, 200, 150],
}

Errors = Literal["raise", "skip"]


class AnnotationWarning(UserWarning):
    """An annotation was skipped or clipped (a point set, an invalid polygon, a far vertex)."""


# --- polygons -------------------------------------------------------------------------


def _ring(points: Any, what: str) -> npt.NDArray[np.float64]:
    """A read-only ``(N, 2)`` float64 ring, N >= 3, finite; ``what`` names it in errors."""
    try:
        ring = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{what}: coordinates are not numbers ({exc})") from None
    if ring.ndim != 2 or ring.shape[1] != 2:
        raise AnnotationError(f"{what}: expected (N, 2) x, y coordinates, got shape {ring.shape}")
    if ring.shape[0] < 3:
        raise AnnotationError(f"{what}: a polygon needs at least 3 points, got {ring.shape[0]}")
    if not np.isfinite(ring).all():
        bad = int(np.argwhere(~np.isfinite(ring))[0][0])
        raise AnnotationError(
            f"{what}: coordinate {bad} is not finite ({ring[bad, 0]!r}, {ring[bad, 1]!r})"
        )
    ring.setflags(write=False)
    return ring


def _shoelace(ring: npt.NDArray[np.float64]) -> float:
    """Signed area of a ring (positive when counter-clockwise in x-right, y-up axes)."""
    x, y = ring[:, 0], ring[:, 1]
    # Centre the coordinates: the products stay small and the sum exact for large slides.
    x = x - x.mean()
    y = y - y.mean()
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


@dataclass(frozen=True, eq=False)
class Annotation:
    """One annotated region: a polygon with holes in level-0 pixel coordinates.

    Parameters
    ----------
    exterior : array_like
        ``(N, 2)`` level-0 ``(x, y)`` vertices of the outer ring, ``N >= 3``,
        finite; not closed (the first point is not repeated at the end).
    holes : tuple of array_like
        Inner rings, each ``(M, 2)`` like ``exterior``.
    label : str
        The class (``"tumor"``, ``"exclusion"``, ``"normal"``, ...).
    name : str
        A free name (ASAP's ``Name``, QuPath's ``name``).

    Raises
    ------
    AnnotationError
        For a ring with fewer than 3 points, non-numeric or non-finite
        coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> a = Annotation(np.array([[10, 10], [30, 10], [30, 20]]), label="tumor")
    >>> a.area, a.bounds()
    (100.0, Box(x=10.0, y=10.0, width=20.0, height=10.0))
    >>> a.translate(5, 0).scale(0.5).exterior
    array([[ 7.5,  5. ],
           [17.5,  5. ],
           [17.5, 10. ]])
    """

    exterior: npt.NDArray[np.float64]
    holes: tuple[npt.NDArray[np.float64], ...] = ()
    label: str = "tumor"
    name: str = ""

    def __post_init__(self) -> None:
        what = f"annotation {self.name!r}" if self.name else "annotation"
        object.__setattr__(self, "exterior", _ring(self.exterior, f"{what} exterior"))
        holes = tuple(_ring(h, f"{what} hole {i}") for i, h in enumerate(self.holes))
        object.__setattr__(self, "holes", holes)
        if not isinstance(self.label, str) or not isinstance(self.name, str):
            raise AnnotationError(f"{what}: label and name must be str, got {self.label!r}")

    @property
    def area(self) -> float:
        """Area in level-0 pixels²: the exterior's shoelace area minus the holes'."""
        return abs(_shoelace(self.exterior)) - sum(abs(_shoelace(h)) for h in self.holes)

    @property
    def rings(self) -> tuple[npt.NDArray[np.float64], ...]:
        """The exterior followed by the holes."""
        return (self.exterior, *self.holes)

    @property
    def n_vertices(self) -> int:
        """Number of vertices over all rings."""
        return sum(len(r) for r in self.rings)

    def bounds(self) -> Box:
        """The level-0 bounding box of the exterior."""
        x0, y0 = self.exterior.min(axis=0)
        x1, y1 = self.exterior.max(axis=0)
        return Box.from_bounds(float(x0), float(y0), float(x1), float(y1))

    def translate(self, dx: float, dy: float) -> Annotation:
        """The same annotation moved by ``(dx, dy)`` level-0 pixels."""
        shift = np.array([dx, dy], dtype=np.float64)
        return Annotation(
            self.exterior + shift, tuple(h + shift for h in self.holes), self.label, self.name
        )

    def scale(self, factor: float) -> Annotation:
        """Every coordinate multiplied by ``factor`` (> 0), e.g. ``1 / downsample``."""
        if not (math.isfinite(factor) and factor > 0):
            raise ParameterError(f"scale factor must be positive and finite, got {factor!r}")
        return Annotation(
            self.exterior * factor, tuple(h * factor for h in self.holes), self.label, self.name
        )

    def with_label(self, label: str) -> Annotation:
        """The same polygon with another label."""
        return Annotation(self.exterior, self.holes, label, self.name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotation):
            return NotImplemented
        return (
            self.label == other.label
            and self.name == other.name
            and len(self.holes) == len(other.holes)
            and all(np.array_equal(a, b) for a, b in zip(self.rings, other.rings, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        b = self.bounds()
        holes = f", {len(self.holes)} holes" if self.holes else ""
        name = f", name={self.name!r}" if self.name else ""
        return (
            f"Annotation(label={self.label!r}{name}, {len(self.exterior)} vertices{holes}, "
            f"bounds=({b.x:g}, {b.y:g}, {b.x1:g}, {b.y1:g}))"
        )


class AnnotationSet(Sequence[Annotation]):
    """An ordered collection of :class:`Annotation`, usually one file's.

    Parameters
    ----------
    annotations : iterable of Annotation
        The annotations, in order.
    source : str or os.PathLike, optional
        The file they came from (shown in messages).

    Examples
    --------
    >>> import numpy as np
    >>> tri = np.array([[0, 0], [10, 0], [0, 10]])
    >>> s = AnnotationSet([Annotation(tri), Annotation(tri + 20, label="exclusion")])
    >>> len(s), s.labels, s.area("tumor")
    (2, ('tumor', 'exclusion'), 50.0)
    >>> s.filter("exclusion")[0].bounds()
    Box(x=20.0, y=20.0, width=10.0, height=10.0)
    """

    __slots__ = ("_items", "_source")

    def __init__(
        self,
        annotations: Iterable[Annotation] = (),
        *,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        items = tuple(annotations)
        for i, a in enumerate(items):
            if not isinstance(a, Annotation):
                raise AnnotationError(f"item {i} of an AnnotationSet is a {type(a).__name__}")
        self._items = items
        self._source = None if source is None else pathlib.Path(source)

    @property
    def source(self) -> pathlib.Path | None:
        """The file the annotations were read from, if any."""
        return self._source

    @overload
    def __getitem__(self, index: int) -> Annotation: ...
    @overload
    def __getitem__(self, index: slice) -> AnnotationSet: ...
    def __getitem__(self, index: int | slice) -> Annotation | AnnotationSet:
        if isinstance(index, slice):
            return AnnotationSet(self._items[index], source=self.source)
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnnotationSet):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        src = f", source={str(self.source)!r}" if self.source else ""
        counts = ", ".join(f"{lab}: {len(self.filter(lab))}" for lab in self.labels)
        return f"AnnotationSet({len(self)} annotations{{{counts}}}{src})".replace("{}", "")

    @property
    def labels(self) -> tuple[str, ...]:
        """The distinct labels, in order of first appearance."""
        return tuple(dict.fromkeys(a.label for a in self._items))

    def filter(self, label: str | Iterable[str]) -> AnnotationSet:
        """The annotations whose label is ``label`` (or one of several)."""
        wanted = {label} if isinstance(label, str) else set(label)
        return AnnotationSet((a for a in self._items if a.label in wanted), source=self.source)

    def area(self, label: str | None = None) -> float:
        """Summed area (level-0 pixels²) of the annotations with ``label`` (all when None).

        Overlapping annotations are counted once each; rasterise for the area
        of their union.
        """
        items = self._items if label is None else self.filter(label)._items
        return float(sum(a.area for a in items))

    def bounds(self) -> Box | None:
        """The level-0 box around every annotation, or ``None`` for an empty set."""
        if not self._items:
            return None
        boxes = [a.bounds() for a in self._items]
        return Box.from_bounds(
            min(b.x for b in boxes),
            min(b.y for b in boxes),
            max(b.x1 for b in boxes),
            max(b.y1 for b in boxes),
        )

    def translate(self, dx: float, dy: float) -> AnnotationSet:
        """Every annotation moved by ``(dx, dy)``."""
        return AnnotationSet((a.translate(dx, dy) for a in self._items), source=self.source)

    def scale(self, factor: float) -> AnnotationSet:
        """Every coordinate multiplied by ``factor``."""
        return AnnotationSet((a.scale(factor) for a in self._items), source=self.source)


def _as_set(annotations: Iterable[Annotation]) -> AnnotationSet:
    return annotations if isinstance(annotations, AnnotationSet) else AnnotationSet(annotations)


def _normalise_label(raw: str, label_map: Mapping[str, str]) -> str:
    raw = raw.strip()
    mapped = label_map.get(raw)
    if mapped is None:
        mapped = label_map.get(raw.lower(), raw)
    return mapped.lower()


def _invalid(errors: Errors, exc: AnnotationError, where: str) -> None:
    if errors == "raise":
        raise AnnotationError(f"{where}: {exc}") from None
    warnings.warn(f"{where}: skipped, {exc}", AnnotationWarning, stacklevel=4)


def _check_errors(errors: str) -> None:
    if errors not in ("raise", "skip"):
        raise ParameterError(f"errors must be 'raise' or 'skip', got {errors!r}")


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        pathlib.Path(tmp).replace(path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


# --- ASAP XML -------------------------------------------------------------------------


def _xml_float(text: str | None, what: str) -> float:
    if text is None:
        raise AnnotationError(f"{what} is missing")
    try:
        return float(text)
    except ValueError:
        try:  # some Camelyon files were written with a decimal comma
            return float(text.replace(",", "."))
        except ValueError:
            raise AnnotationError(f"{what} is not a number: {text!r}") from None


def read_asap_xml(
    path: str | os.PathLike[str],
    *,
    label_map: Mapping[str, str] | None = None,
    errors: Errors = "raise",
) -> AnnotationSet:
    """Read an ASAP XML annotation file (the Camelyon16 format).

    The file is parsed with :mod:`defusedxml`: entity declarations (XML
    bombs) and external entities are refused, not expanded.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.xml`` file.
    label_map : mapping, optional
        ASAP group name (``PartOfGroup``) to label.  The default,
        :data:`ASAP_LABELS`, maps ``_0``/``_1`` to ``"tumor"`` and ``_2`` to
        ``"exclusion"`` (Camelyon16).  A group not in the map keeps its name,
        lower-cased, as the label.  Pass ``{}`` to keep every group name.
    errors : {"raise", "skip"}
        What to do with an invalid polygon (fewer than 3 points, a
        non-numeric or non-finite coordinate): raise
        :class:`~cervixwsi.errors.AnnotationError` naming the file and the
        annotation, or skip it with an :class:`AnnotationWarning`.

    Returns
    -------
    AnnotationSet
        The region annotations (types ``Polygon``, ``Spline`` as its control
        polygon, ``Rectangle``) in file order, vertices sorted by ``Order``.
        Point annotations (``Dot``, ``PointSet``, ``Measurement``...) are not
        regions: they are skipped with an :class:`AnnotationWarning`.

    Raises
    ------
    AnnotationError
        For a malformed, truncated or empty file, a file that is not ASAP XML,
        an entity declaration or external reference, or (with
        ``errors="raise"``) an invalid polygon.
    FileNotFoundError
        When the file does not exist.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> xml = '''<ASAP_Annotations><Annotations>
    ...   <Annotation Name="A" Type="Polygon" PartOfGroup="_0"><Coordinates>
    ...     <Coordinate Order="1" X="100" Y="0"/><Coordinate Order="0" X="0" Y="0"/>
    ...     <Coordinate Order="2" X="100" Y="50.5"/>
    ...   </Coordinates></Annotation>
    ... </Annotations></ASAP_Annotations>'''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "a.xml"
    ...     _ = path.write_text(xml)
    ...     annotations = read_asap_xml(path)
    >>> annotations[0].label, annotations[0].exterior.tolist()
    ('tumor', [[0.0, 0.0], [100.0, 0.0], [100.0, 50.5]])
    """
    import xml.etree.ElementTree as ET

    import defusedxml
    from defusedxml import ElementTree as DefusedElementTree

    _check_errors(errors)
    path = pathlib.Path(path)
    labels = ASAP_LABELS if label_map is None else label_map
    try:
        root = DefusedElementTree.parse(path).getroot()
    except defusedxml.DefusedXmlException as exc:
        raise AnnotationError(
            f"{path}: refused to parse XML with entity declarations or external references "
            f"({type(exc).__name__}); ASAP annotation files have none"
        ) from None
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not well-formed XML ({exc})") from None
    elements = list(root.iter("Annotation"))
    if root.tag != "ASAP_Annotations" and not elements:
        raise AnnotationError(
            f"{path}: not an ASAP annotation file (root element <{root.tag}>, "
            "expected <ASAP_Annotations>)"
        )
    result: list[Annotation] = []
    for index, element in enumerate(elements):
        name = element.get("Name", "")
        kind = element.get("Type", "Polygon")
        where = f"{path}: annotation {index} ({name!r})"
        coords = element.findall("./Coordinates/Coordinate")
        if kind.lower() not in _ASAP_REGION_TYPES:
            warnings.warn(
                f"{where}: skipped, type {kind!r} is not a region", AnnotationWarning, stacklevel=2
            )
            continue
        try:
            points = []
            for j, c in enumerate(coords):
                order = c.get("Order")
                key = _xml_float(order, f"Order of coordinate {j}") if order is not None else j
                x = _xml_float(c.get("X"), f"X of coordinate {j}")
                y = _xml_float(c.get("Y"), f"Y of coordinate {j}")
                points.append((key, x, y))
            points.sort(key=lambda p: p[0])
            exterior = np.array([(x, y) for _, x, y in points], dtype=np.float64).reshape(-1, 2)
            label = _normalise_label(element.get("PartOfGroup", "None"), labels)
            result.append(Annotation(exterior, label=label, name=name))
        except AnnotationError as exc:
            _invalid(errors, exc, where)
    logger.debug("read %d annotations from %s", len(result), path)
    return AnnotationSet(result, source=path)


def write_asap_xml(annotations: Iterable[Annotation], path: str | os.PathLike[str]) -> None:
    """Write annotations as an ASAP XML file that ASAP and Camelyon16 tools read.

    Labels become groups: ``"tumor"`` is ``_0``, ``"exclusion"`` is ``_2``,
    any other label is written as a group of its own name.  ASAP polygons have
    no holes, so each hole is written as a ``_2`` exclusion annotation named
    ``"<name> hole <i>"``.  Coordinates are written with full float precision
    (they read back identical).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> ring = np.array([[0.5, 0], [10, 0], [10, 10]])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "a.xml"
    ...     write_asap_xml([Annotation(ring, holes=(ring / 4 + 2,))], path)
    ...     back = read_asap_xml(path)
    >>> [(a.label, len(a.exterior)) for a in back]
    [('tumor', 3), ('exclusion', 3)]
    >>> np.array_equal(back[0].exterior, ring)
    True
    """
    import xml.etree.ElementTree as ET

    path = pathlib.Path(path)
    root = ET.Element("ASAP_Annotations")
    container = ET.SubElement(root, "Annotations")
    groups: dict[str, None] = {}

    def add(ring: npt.NDArray[np.float64], name: str, group: str) -> None:
        groups[group] = None
        element = ET.SubElement(
            container,
            "Annotation",
            {
                "Name": name,
                "Type": "Polygon",
                "PartOfGroup": group,
                "Color": _ASAP_COLORS.get(group, "#FF0000"),
            },
        )
        coordinates = ET.SubElement(element, "Coordinates")
        for order, (x, y) in enumerate(ring.tolist()):
            ET.SubElement(
                coordinates, "Coordinate", {"Order": str(order), "X": repr(x), "Y": repr(y)}
            )

    for i, a in enumerate(annotations):
        name = a.name or f"Annotation {i}"
        add(a.exterior, name, _ASAP_GROUPS.get(a.label, a.label))
        for j, hole in enumerate(a.holes):
            add(hole, f"{name} hole {j}", "_2")
    group_list = ET.SubElement(root, "AnnotationGroups")
    for group in groups:
        element = ET.SubElement(
            group_list,
            "Group",
            {"Name": group, "PartOfGroup": "None", "Color": _ASAP_COLORS.get(group, "#FF0000")},
        )
        ET.SubElement(element, "Attributes")
    ET.indent(root)
    text = '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    _atomic_write_text(path, text)


# --- GeoJSON --------------------------------------------------------------------------


def _open_ring(ring: Any, what: str) -> npt.NDArray[np.float64]:
    """A GeoJSON ring as an open ``(N, 2)`` array (closing vertex dropped)."""
    if not isinstance(ring, list):
        raise AnnotationError(f"{what}: a ring must be a list of [x, y] positions")
    try:
        arr = np.array([p[:2] for p in ring], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise AnnotationError(f"{what}: positions must be [x, y] numbers") from None
    if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    return _ring(arr.reshape(-1, 2), what)


def _features(document: Any, path: pathlib.Path) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        kind = document.get("type")
        if kind == "FeatureCollection":
            features = document.get("features")
            if isinstance(features, list):
                return features
        elif kind == "Feature":
            return [document]
        elif kind in ("Polygon", "MultiPolygon"):
            return [{"type": "Feature", "geometry": document, "properties": {}}]
    raise AnnotationError(
        f"{path}: not QuPath GeoJSON: expected a FeatureCollection, a Feature or a list of Features"
    )


def read_geojson(
    path: str | os.PathLike[str],
    *,
    label_map: Mapping[str, str] | None = None,
    default_label: str = "unclassified",
    errors: Errors = "raise",
) -> AnnotationSet:
    """Read GeoJSON annotations as QuPath exports them.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.geojson``/``.json`` file: a ``FeatureCollection``, one
        ``Feature`` or a list of features.
    label_map : mapping, optional
        Class name to label, applied before lower-casing (e.g.
        ``{"Tumour": "tumor"}``).  Names not in it are lower-cased.
    default_label : str
        The label of a feature without ``properties.classification.name``
        (QuPath's unclassified annotations).
    errors : {"raise", "skip"}
        What to do with an invalid polygon (fewer than 3 points, non-finite
        coordinates): raise :class:`~cervixwsi.errors.AnnotationError` or skip
        it with an :class:`AnnotationWarning`.

    Returns
    -------
    AnnotationSet
        One annotation per ``Polygon`` and per polygon of a ``MultiPolygon``,
        in file order.  Features of other geometry types (points, lines) and
        without geometry are skipped with an :class:`AnnotationWarning`.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> feature = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
    ...            "geometry": {"type": "Polygon",
    ...                         "coordinates": [[[0, 0], [4, 0], [4, 3], [0, 0]]]}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "a.geojson"
    ...     _ = path.write_text(json.dumps([feature]))
    ...     annotations = read_geojson(path)
    >>> annotations[0].label, annotations[0].area
    ('tumor', 6.0)
    """
    _check_errors(errors)
    path = pathlib.Path(path)
    labels: Mapping[str, str] = {} if label_map is None else label_map
    try:
        with path.open("rb") as fh:
            document = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply") from None
    result: list[Annotation] = []
    for index, feature in enumerate(_features(document, path)):
        where = f"{path}: feature {index}"
        if not isinstance(feature, dict):
            raise AnnotationError(f"{where} is not a JSON object")
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise AnnotationError(f"{where}: properties must be an object")
        name = properties.get("name", "")
        name = name if isinstance(name, str) else str(name)
        classification = properties.get("classification")
        raw = classification.get("name") if isinstance(classification, dict) else None
        label = _normalise_label(raw, labels) if isinstance(raw, str) else default_label
        geometry = feature.get("geometry")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if kind == "Polygon":
            polygons = [coordinates]
        elif kind == "MultiPolygon" and isinstance(coordinates, list):
            polygons = coordinates
        else:
            warnings.warn(
                f"{where} ({name!r}): skipped, geometry {kind!r} is not a polygon",
                AnnotationWarning,
                stacklevel=2,
            )
            continue
        for k, rings in enumerate(polygons):
            here = where if len(polygons) == 1 else f"{where} polygon {k}"
            try:
                if not isinstance(rings, list) or not rings:
                    raise AnnotationError("a polygon must be a non-empty list of rings")
                exterior = _open_ring(rings[0], "exterior")
                holes = tuple(_open_ring(r, f"hole {j}") for j, r in enumerate(rings[1:]))
                result.append(Annotation(exterior, holes, label, name))
            except AnnotationError as exc:
                _invalid(errors, exc, f"{here} ({name!r})")
    logger.debug("read %d annotations from %s", len(result), path)
    return AnnotationSet(result, source=path)


def _closed(ring: npt.NDArray[np.float64]) -> list[list[float]]:
    points: list[list[float]] = ring.tolist()
    return [*points, points[0]]


def write_geojson(annotations: Iterable[Annotation], path: str | os.PathLike[str]) -> None:
    """Write annotations as a GeoJSON ``FeatureCollection`` that QuPath imports.

    Each annotation is a ``Feature`` with a ``Polygon`` geometry (closed
    rings, holes after the exterior), ``objectType: "annotation"``, its name,
    and ``classification.name`` the label with its first letter capitalised
    (``"tumor"`` -> ``"Tumor"``, QuPath's class); annotations labelled
    ``"unclassified"`` get no classification.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "a.geojson"
    ...     write_geojson([Annotation(np.array([[0, 0], [4, 0], [4, 3]]))], path)
    ...     document = json.loads(path.read_text())
    >>> feature = document["features"][0]
    >>> feature["properties"]["classification"]["name"], feature["geometry"]["coordinates"]
    ('Tumor', [[[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 0.0]]])
    """
    path = pathlib.Path(path)
    features = []
    for a in annotations:
        properties: dict[str, Any] = {"objectType": "annotation"}
        if a.name:
            properties["name"] = a.name
        if a.label != "unclassified":  # QuPath's unclassified objects have no classification
            color = _QUPATH_COLORS.get(a.label, [255, 200, 0])
            name = a.label[:1].upper() + a.label[1:]
            properties["classification"] = {"name": name, "color": color}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [_closed(r) for r in a.rings]},
                "properties": properties,
            }
        )
    document = {"type": "FeatureCollection", "features": features}
    _atomic_write_text(path, json.dumps(document, allow_nan=False) + "\n")


# --- rasterisation --------------------------------------------------------------------


def _fill_even_odd(
    rings: Sequence[npt.NDArray[np.float64]],
    x_centres: npt.NDArray[np.float64],
    y_centres: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.bool_], int, int] | None:
    """Pixels whose centre is inside ``rings`` (even-odd rule), within their bounding window.

    ``rings`` and the (increasing) pixel centres are in level-0 coordinates.
    Returns ``(window mask, row0, col0)``, or ``None`` when no pixel centre
    can be inside.  A centre exactly on a left or top edge is inside, on a
    right or bottom edge outside (half-open, so polygons that tile the plane
    tile the pixels).
    """
    p0 = np.concatenate(rings)
    p1 = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    # Rows whose centre y satisfies min(y0, y1) <= y < max(y0, y1) cross the edge.
    r0 = np.searchsorted(y_centres, np.minimum(p0[:, 1], p1[:, 1]), side="left")
    r1 = np.searchsorted(y_centres, np.maximum(p0[:, 1], p1[:, 1]), side="left")
    counts = r1 - r0
    total = int(counts.sum())
    if total == 0:
        return None
    col0 = int(np.searchsorted(x_centres, p0[:, 0].min(), side="left"))
    col1 = int(np.searchsorted(x_centres, p0[:, 0].max(), side="left"))
    if col1 <= col0:
        return None
    row0, row1 = int(r0[counts > 0].min()), int(r1[counts > 0].max())
    edge = np.repeat(np.arange(len(p0)), counts)
    r = np.repeat(r0, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    x0, y0 = p0[edge, 0], p0[edge, 1]
    x1, y1 = p1[edge, 0], p1[edge, 1]
    x = x0 + (y_centres[r] - y0) * ((x1 - x0) / (y1 - y0))
    # The crossing toggles inside/outside for every centre at or right of x.
    c = np.searchsorted(x_centres[col0:col1], x, side="left")
    # One byte per pixel of the window: only the parity of the crossings matters, which
    # uint8 wrap-around keeps.
    toggles = np.zeros((row1 - row0, col1 - col0 + 1), np.uint8)
    np.add.at(toggles, (r - row0, c), 1)
    inside = np.bitwise_xor.accumulate(toggles[:, :-1] & 1, axis=1).view(bool)
    return inside, row0, col0


def _grid(
    shape_or_raster: tuple[int, int] | Raster,
    downsample: float | None,
    slide_dimensions: tuple[int, int] | None,
    mpp: float | None,
) -> tuple[int, int, float, tuple[int, int], float | None]:
    """``(rows, cols, downsample, slide_dimensions, mpp)`` of the output raster."""
    if isinstance(shape_or_raster, Raster):
        ref = shape_or_raster
        if downsample is not None and not math.isclose(downsample, ref.downsample, rel_tol=1e-9):
            raise ParameterError(
                f"downsample={downsample} differs from the raster's {ref.downsample:g}; "
                "give one or the other"
            )
        if slide_dimensions is not None and tuple(slide_dimensions) != ref.slide_dimensions:
            raise ParameterError(
                f"slide_dimensions={slide_dimensions} differ from the raster's "
                f"{ref.slide_dimensions}"
            )
        rows, cols = ref.shape
        return rows, cols, ref.downsample, ref.slide_dimensions, ref.mpp if mpp is None else mpp
    try:
        rows, cols = (int(v) for v in shape_or_raster)
    except (TypeError, ValueError):
        raise ParameterError(
            f"shape_or_raster must be a Raster or a (rows, cols) shape, got {shape_or_raster!r}"
        ) from None
    if rows < 1 or cols < 1:
        raise ParameterError(f"the raster shape must be positive, got {(rows, cols)}")
    if downsample is None:
        if slide_dimensions is None:
            d = 1.0
        else:
            d = (slide_dimensions[0] / cols + slide_dimensions[1] / rows) / 2
    else:
        d = float(downsample)
        if not (math.isfinite(d) and d > 0):
            raise ParameterError(f"downsample must be positive and finite, got {downsample!r}")
    if slide_dimensions is None:
        slide_dimensions = (max(round(cols * d), 1), max(round(rows * d), 1))
    return rows, cols, d, (int(slide_dimensions[0]), int(slide_dimensions[1])), mpp


def rasterize(
    annotations: Iterable[Annotation],
    shape_or_raster: tuple[int, int] | Raster,
    downsample: float | None = None,
    *,
    slide_dimensions: tuple[int, int] | None = None,
    classes: Iterable[str] = ("tumor",),
    exclude: Iterable[str] = ("exclusion",),
    mpp: float | None = None,
    outside: Literal["clip", "raise"] = "clip",
) -> Raster:
    """Draw annotations into a boolean mask over the slide, at any downsample.

    Raster pixel ``(r, c)`` covers the level-0 square
    ``[c·d, (c+1)·d) × [r·d, (r+1)·d)`` (as in :class:`~cervixwsi.geometry.Raster`)
    clipped to the slide, and is inside a polygon when the centre of that
    square (:meth:`~cervixwsi.geometry.Raster.pixel_centers`; ``(c + ½)·d``
    except in a last column clipped by the slide's edge) is inside, by the
    even-odd rule over the polygon's exterior and holes; a centre exactly on
    a left/top edge is inside, on a right/bottom edge outside.  The result
    is ``union(classes) - union(exclude)``: holes belong to their own
    annotation (a hole does not erase another annotation lying inside it),
    while polygons with an ``exclude`` label
    (Camelyon16's ``_2`` groups) are cleared from every class after all
    classes are drawn.  The scan-line fill is vectorised over all edge/row
    crossings, so its cost is the polygon's perimeter in raster pixels plus
    its bounding box.

    Parameters
    ----------
    annotations : iterable of Annotation
        Level-0 polygons.
    shape_or_raster : (int, int) or Raster
        The output's ``(rows, cols)``, or a raster whose grid (shape,
        downsample, slide dimensions, mpp) the output takes, e.g. a tissue mask.
    downsample : float, optional
        Level-0 pixels per raster pixel, for a shape.  When ``None`` it is
        the mean ratio of ``slide_dimensions`` to the shape (OpenSlide's level
        downsample), or 1.
    slide_dimensions : (int, int), optional
        The slide's level-0 ``(width, height)``; default ``shape × downsample``.
    classes : iterable of str
        Labels drawn as True.  A class that no annotation has gives an
        :class:`AnnotationWarning` (a typo such as ``"Tumor"`` would
        otherwise give an empty mask).
    exclude : iterable of str
        Labels whose polygons are cleared after drawing ``classes``.
    mpp : float, optional
        Level-0 micrometres per pixel, stored in the raster.
    outside : {"clip", "raise"}
        Annotations with vertices outside the slide are clipped to it with an
        :class:`AnnotationWarning` (``"clip"``), or refused with a
        :class:`~cervixwsi.errors.GeometryError` naming the first one
        (``"raise"``).

    Returns
    -------
    Raster
        A boolean raster.

    Examples
    --------
    >>> import numpy as np
    >>> tumor = Annotation(np.array([[0, 0], [40, 0], [40, 40], [0, 40]]))
    >>> cut = Annotation(np.array([[20, 0], [40, 0], [40, 20]]), label="exclusion")
    >>> rasterize([tumor, cut], (4, 4), 10).array.astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 1, 0],
           [1, 1, 1, 1],
           [1, 1, 1, 1]])
    """
    if outside not in ("clip", "raise"):
        raise ParameterError(f"outside must be 'clip' or 'raise', got {outside!r}")
    classes = {classes} if isinstance(classes, str) else set(classes)
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    rows, cols, d, dims, mpp = _grid(shape_or_raster, downsample, slide_dimensions, mpp)
    items = _as_set(annotations)
    source = f" of {items.source}" if items.source else ""
    missing = sorted(classes - set(items.labels))
    if missing and items:
        warnings.warn(
            f"rasterize: no annotation{source} has the class(es) {missing}; the labels present "
            f"are {list(items.labels)}",
            AnnotationWarning,
            stacklevel=2,
        )
    width, height = dims
    try:
        grid = Raster(np.empty((rows, cols), bool), d, dims, mpp=mpp)
    except GeometryError as exc:
        raise ParameterError(f"rasterize: the output grid does not fit the slide: {exc}") from None
    x_centres, y_centres = grid.pixel_centers()
    n_outside = 0
    mask = np.zeros((rows, cols), bool)
    excluded = np.zeros((rows, cols), bool)
    for index, a in enumerate(items):
        if a.label not in classes and a.label not in exclude:
            continue
        b = a.bounds()
        if b.x < 0 or b.y < 0 or b.x1 > width or b.y1 > height:
            if outside == "raise":
                raise GeometryError(
                    f"annotation {index}{source} ({a.label!r}, {a.name!r}) has vertices outside "
                    f"the {width}x{height} slide: bounds ({b.x:g}, {b.y:g}, {b.x1:g}, {b.y1:g})"
                )
            n_outside += 1
        filled = _fill_even_odd(a.rings, x_centres, y_centres)
        if filled is None:
            continue
        inside, r0, c0 = filled
        target = excluded if a.label in exclude else mask
        target[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] |= inside
    if n_outside:
        warnings.warn(
            f"rasterize: {n_outside} annotation(s){source} reach outside the {width}x{height} "
            "slide; they were clipped to it",
            AnnotationWarning,
            stacklevel=2,
        )
    mask &= ~excluded
    return grid.with_array(mask)


def annotations_from_mask(
    mask: Raster,
    *,
    label: str = "tumor",
    min_area: float = 0.0,
    simplify: float = 0.0,
) -> AnnotationSet:
    """Trace the regions of a boolean raster as polygons with holes, in level-0 coordinates.

    Each 8-connected region becomes one :class:`Annotation` whose holes are
    the region's holes; a region lying inside another's hole is an
    annotation of its own.  The polygons follow the pixel edges (the
    boundary between True and False pixels, clipped to the slide), so with
    ``simplify=0`` the tracing is exact: an annotation's area is its pixel
    count times the pixel area, and :func:`rasterize` of the result on the
    mask's grid gives the mask back, pixel for pixel.  Two pixels touching
    only at a corner are one region whose outline touches itself there.

    Parameters
    ----------
    mask : Raster
        A 2-D raster; nonzero pixels are inside.
    label : str
        The label of every annotation.
    min_area : float
        Regions smaller than this many level-0 pixels² (exterior area minus
        holes) are left out.
    simplify : float
        Douglas-Peucker tolerance in raster pixels (0: exact, no
        simplification).  A positive value drops vertices; the round trip is
        then exact only up to about that many pixels at the boundary.

    Returns
    -------
    AnnotationSet

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> array = np.zeros((6, 6), bool)
    >>> array[1:5, 1:5] = True
    >>> array[2:4, 2:4] = False
    >>> mask = Raster(array, 16, (96, 96))
    >>> regions = annotations_from_mask(mask)
    >>> len(regions), regions[0].exterior.tolist(), regions[0].area == 12 * 16 * 16
    (1, [[16.0, 16.0], [16.0, 80.0], [80.0, 80.0], [80.0, 16.0]], True)
    >>> bool((rasterize(regions, mask).array == array).all())
    True
    """
    import cv2

    if not isinstance(mask, Raster):
        raise ParameterError(f"mask must be a Raster, got {type(mask).__name__}")
    if not (math.isfinite(simplify) and simplify >= 0):
        raise ParameterError(f"simplify must be >= 0 raster pixels, got {simplify!r}")
    binary = (np.asarray(mask.array) != 0).astype(np.uint8)
    # Trace at twice the resolution: every contour point is then a quarter of a pixel
    # (the quarter towards the boundary) and maps to that corner of its pixel, which
    # turns OpenCV's pixel-centre contours into pixel-edge ("crack") outlines.
    doubled = np.repeat(np.repeat(binary, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return AnnotationSet()
    d = mask.downsample
    width, height = mask.slide_dimensions
    tree = hierarchy[0]

    def to_level0(contour: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        # Doubled index i lies in pixel i // 2; its pixel corner is at (i + 1) // 2.
        corners = (contour.reshape(-1, 2) + 1) // 2
        ring = _clean_ring(corners.astype(np.float64))
        if simplify > 0 and len(ring) > 3:
            curve = ring.astype(np.float32).reshape(-1, 1, 2)
            reduced = cv2.approxPolyDP(curve, simplify, True).reshape(-1, 2)
            if len(reduced) >= 3:
                ring = reduced.astype(np.float64)
        level0 = ring * d
        np.minimum(level0[:, 0], width, out=level0[:, 0])
        np.minimum(level0[:, 1], height, out=level0[:, 1])
        return level0

    result: list[Annotation] = []
    for i, (_, _, first_child, parent) in enumerate(tree):
        if parent != -1:
            continue
        holes = []
        child = first_child
        while child != -1:
            holes.append(to_level0(contours[child]))
            child = tree[child][0]
        annotation = Annotation(to_level0(contours[i]), tuple(holes), label)
        if annotation.area >= min_area:
            result.append(annotation)
    return AnnotationSet(result)


def _clean_ring(ring: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Drop repeated and straight-through (collinear, same-direction) vertices of a ring."""
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    if keep.any():
        ring = ring[keep]
    if len(ring) > 3:
        before = ring - np.roll(ring, 1, axis=0)
        after = np.roll(ring, -1, axis=0) - ring
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        dot = (before * after).sum(axis=1)
        straight = (cross == 0) & (dot > 0)
        if (~straight).sum() >= 3:
            ring = ring[~straight]
    return ring
