"""ASAP XML (the Camelyon16 format): reading and writing annotation files."""

from __future__ import annotations

import logging
import os
import pathlib
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_text
from cervixwsi.annotations._model import (
    Annotation,
    AnnotationSet,
    AnnotationWarning,
    Errors,
    _check_errors,
    _invalid,
    _normalise_label,
)
from cervixwsi.errors import AnnotationError

__all__ = ["ASAP_LABELS", "read_asap_xml", "write_asap_xml"]

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

    _check_errors(errors, "read_asap_xml")
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
    atomic_write_text(path, text)
