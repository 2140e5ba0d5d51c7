"""GeoJSON as QuPath exports and imports it: reading and writing annotation files."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

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
    _ring,
)
from cervixwsi.errors import AnnotationError

__all__ = ["read_geojson", "write_geojson"]

logger = logging.getLogger(__name__)

_QUPATH_COLORS: Mapping[str, list[int]] = {
    "tumor": [200, 0, 0],
    "exclusion": [80, 80, 80],
    "normal": [0, 150, 0],
    "stroma": [150, 200, 150],
}


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
    _check_errors(errors, "read_geojson")
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
    atomic_write_text(path, json.dumps(document, allow_nan=False) + "\n")
