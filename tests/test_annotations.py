"""Annotations: polygons, ASAP XML, QuPath GeoJSON, rasterisation and tracing."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from matplotlib.path import Path as MplPath
from scipy import ndimage

import cervixwsi.annotations
from cervixwsi.annotations import (
    Annotation,
    AnnotationSet,
    AnnotationWarning,
    annotations_from_mask,
    rasterize,
    read_asap_xml,
    read_geojson,
    write_asap_xml,
    write_geojson,
)
from cervixwsi.errors import AnnotationError, GeometryError, ParameterError
from cervixwsi.geometry import Box, Raster

SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)

CAMELYON_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="200.5" Y="150" />
        <Coordinate Order="0" X="100" Y="100" />
        <Coordinate Order="1" X="2.005e+2" Y="100" />
        <Coordinate Order="3" X="100" Y="150,25" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Spline" PartOfGroup="_1" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="300" Y="300" />
        <Coordinate Order="1" X="400" Y="300" />
        <Coordinate Order="2" X="350" Y="380" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 2" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
      <Coordinates>
        <Coordinate Order="0" X="120" Y="110" />
        <Coordinate Order="1" X="140" Y="110" />
        <Coordinate Order="2" X="140" Y="130" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Dot 3" Type="Dot" PartOfGroup="None" Color="#000000">
      <Coordinates><Coordinate Order="0" X="5" Y="5" /></Coordinates>
    </Annotation>
    <Annotation Name="Annotation 4" Type="Rectangle" PartOfGroup="Metastasis" Color="#000000">
      <Coordinates>
        <Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="10" Y="0" />
        <Coordinate Order="2" X="10" Y="10" /><Coordinate Order="3" X="0" Y="10" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="_0" PartOfGroup="None" Color="#FF0000"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def _xml(points: str, group: str = "_0", kind: str = "Polygon") -> str:
    return (
        "<ASAP_Annotations><Annotations>"
        f'<Annotation Name="bad" Type="{kind}" PartOfGroup="{group}"><Coordinates>'
        f"{points}</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    )


def _coords(*xy: tuple[str, str]) -> str:
    return "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(xy))


# --- Annotation, AnnotationSet --------------------------------------------------------


def test_annotation_geometry() -> None:
    hole = np.array([[2, 2], [4, 2], [4, 4], [2, 4]])
    a = Annotation(SQUARE, holes=(hole,), label="tumor", name="a")
    assert a.area == 96.0
    assert a.bounds() == Box(0.0, 0.0, 10.0, 10.0)
    assert a.n_vertices == 8
    moved = a.translate(5, -1).scale(2)
    assert moved.bounds() == Box(10.0, -2.0, 20.0, 20.0)
    assert moved.area == 4 * 96.0
    assert moved.holes[0][0].tolist() == [14.0, 2.0]
    assert a == Annotation(SQUARE.copy(), (hole.astype(float),), "tumor", "a")
    assert a != a.with_label("normal")
    assert "2 vertices" not in repr(a) and "1 holes" in repr(a)


def test_annotation_orientation_does_not_change_the_area() -> None:
    assert Annotation(SQUARE[::-1]).area == Annotation(SQUARE).area == 100.0


def test_annotation_arrays_are_read_only_copies() -> None:
    points = SQUARE.copy()
    a = Annotation(points)
    points[0, 0] = 99
    assert a.exterior[0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        a.exterior[0, 0] = 5


@pytest.mark.parametrize(
    ("exterior", "match"),
    [
        (np.array([[0, 0], [1, 1]]), "at least 3 points, got 2"),
        (np.array([[0, 0], [1, np.nan], [2, 0]]), r"coordinate 1 is not finite"),
        (np.array([[0, 0], [1, np.inf], [2, 0]]), r"coordinate 1 is not finite"),
        (np.array([0, 1, 2, 3]), r"expected \(N, 2\)"),
        ([["a", "b"], ["c", "d"], ["e", "f"]], "not numbers"),
    ],
)
def test_invalid_polygons_raise_annotation_error(exterior: object, match: str) -> None:
    with pytest.raises(AnnotationError, match=match):
        Annotation(exterior)  # type: ignore[arg-type]


def test_annotation_set() -> None:
    s = AnnotationSet(
        [Annotation(SQUARE), Annotation(SQUARE + 20, label="exclusion"), Annotation(SQUARE)],
        source="x.xml",
    )
    assert len(s) == 3 and s.labels == ("tumor", "exclusion")
    assert s.area() == 300.0 and s.area("tumor") == 200.0
    assert len(s.filter("tumor")) == 2 and len(s.filter(["tumor", "exclusion"])) == 3
    assert s.bounds() == Box(0.0, 0.0, 30.0, 30.0)
    assert isinstance(s[1:], AnnotationSet) and len(s[1:]) == 2 and s[1:].source == Path("x.xml")
    assert s.translate(1, 1)[0].exterior[0].tolist() == [1.0, 1.0]
    assert s.scale(0.5).area() == 75.0
    assert AnnotationSet().bounds() is None
    assert "tumor: 2" in repr(s)
    with pytest.raises(AnnotationError, match="item 0"):
        AnnotationSet([SQUARE])  # type: ignore[list-item]


@pytest.mark.parametrize("factor", [0, -1.0, np.nan, np.inf, True, "2"])
def test_scale_factor_must_be_a_positive_finite_number(factor: object) -> None:
    with pytest.raises(
        ParameterError, match=r"Annotation\.scale factor must be a finite number > 0"
    ):
        Annotation(SQUARE).scale(factor)  # type: ignore[arg-type]
    assert Annotation(SQUARE).scale(np.float32(0.5)).area == 25.0


# --- ASAP XML -------------------------------------------------------------------------


def test_read_camelyon_style_asap_xml(tmp_path: Path) -> None:
    path = tmp_path / "tumor_001.xml"
    path.write_text(CAMELYON_XML)
    with pytest.warns(AnnotationWarning, match="'Dot' is not a region"):
        annotations = read_asap_xml(path)
    assert [a.label for a in annotations] == ["tumor", "tumor", "exclusion", "metastasis"]
    assert [a.name for a in annotations][:2] == ["Annotation 0", "Annotation 1"]
    # Sorted by Order; exponent notation and a decimal comma parsed.
    assert annotations[0].exterior.tolist() == [
        [100, 100],
        [200.5, 100],
        [200.5, 150],
        [100, 150.25],
    ]
    assert annotations.source == path
    with pytest.warns(AnnotationWarning):
        raw = read_asap_xml(path, label_map={})
    assert [a.label for a in raw] == ["_0", "_1", "_2", "metastasis"]


def test_asap_round_trip_writes_holes_as_exclusions(tmp_path: Path) -> None:
    hole = np.array([[2.25, 2], [4, 2], [4, 4.125]])
    original = [
        Annotation(SQUARE, holes=(hole,), name="A"),
        Annotation(SQUARE + 0.1, label="stroma", name="B"),
        Annotation(SQUARE * 3, label="exclusion"),
    ]
    path = tmp_path / "a.xml"
    write_asap_xml(original, path)
    back = read_asap_xml(path)
    assert [(a.label, a.name) for a in back] == [
        ("tumor", "A"),
        ("exclusion", "A hole 0"),
        ("stroma", "B"),
        ("exclusion", "Annotation 2"),
    ]
    np.testing.assert_array_equal(back[0].exterior, SQUARE)
    np.testing.assert_array_equal(back[1].exterior, hole)
    np.testing.assert_array_equal(back[2].exterior, SQUARE + 0.1)  # full float precision
    text = path.read_text()
    assert 'PartOfGroup="_0"' in text and 'PartOfGroup="_2"' in text
    assert '<Group Name="stroma"' in text
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not well-formed XML"),
        ("<ASAP_Annotations><Annotations><Annotation", "not well-formed XML"),
        ("\x00\x01binary", "not well-formed XML"),
        ("<html><body/></html>", "not an ASAP annotation file"),
        (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            "<ASAP_Annotations>&lol2;</ASAP_Annotations>",
            "refused to parse XML with entity declarations",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            "<ASAP_Annotations>&xxe;</ASAP_Annotations>",
            "refused to parse XML with entity declarations",
        ),
    ],
)
def test_malformed_and_hostile_xml_raise_annotation_error(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=match) as info:
        read_asap_xml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        (_coords(("0", "0"), ("1", "1")), "at least 3 points, got 2"),
        (_coords(("0", "0"), ("nan", "1"), ("2", "2")), "coordinate 1 is not finite"),
        (_coords(("0", "0"), ("x1", "1"), ("2", "2")), "X of coordinate 1 is not a number"),
        ('<Coordinate Order="0" Y="1"/>', "X of coordinate 0 is missing"),
    ],
)
def test_invalid_asap_polygons_raise_or_skip(tmp_path: Path, points: str, match: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(_xml(points))
    with pytest.raises(AnnotationError, match=rf"bad\.xml: annotation 0 \('bad'\): .*{match}"):
        read_asap_xml(path)
    with pytest.warns(AnnotationWarning, match=match) as caught:
        assert len(read_asap_xml(path, errors="skip")) == 0
    assert caught[0].filename == __file__  # the warning points at the caller's line


def test_asap_missing_file_and_bad_errors_argument(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_asap_xml(tmp_path / "none.xml")
    with pytest.raises(ParameterError, match=r"read_asap_xml\.errors must be one of"):
        read_asap_xml(tmp_path / "none.xml", errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"read_geojson\.errors must be one of"):
        read_geojson(tmp_path / "none.json", errors="ignore")  # type: ignore[arg-type]


def test_written_files_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_asap_xml([Annotation(SQUARE)], tmp_path / "a.xml")
        write_geojson([Annotation(SQUARE)], tmp_path / "a.geojson")
    finally:
        os.umask(old)
    for name in ("a.xml", "a.geojson"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.geojson", "a.xml"]


def test_an_empty_asap_file_has_no_annotations(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    assert len(read_asap_xml(path)) == 0


# --- GeoJSON --------------------------------------------------------------------------


def _feature(geometry: dict[str, object], name: str | None = "Tumor") -> dict[str, object]:
    properties: dict[str, object] = {"objectType": "annotation"}
    if name is not None:
        properties["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_read_qupath_geojson(tmp_path: Path) -> None:
    ring = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    hole = [[2, 2], [4, 2], [4, 4], [2, 2]]
    document = {
        "type": "FeatureCollection",
        "features": [
            _feature({"type": "Polygon", "coordinates": [ring, hole]}),
            _feature(
                {"type": "MultiPolygon", "coordinates": [[ring], [[[20, 20], [30, 20], [25, 28]]]]},
                "Stroma",
            ),
            _feature({"type": "Polygon", "coordinates": [ring]}, None),
            _feature({"type": "Point", "coordinates": [1, 2]}),
        ],
    }
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(document))
    with pytest.warns(AnnotationWarning, match="'Point' is not a polygon"):
        annotations = read_geojson(path)
    assert [a.label for a in annotations] == ["tumor", "stroma", "stroma", "unclassified"]
    assert annotations[0].exterior.shape == (4, 2)  # the closing vertex is dropped
    assert annotations[0].holes[0].tolist() == [[2, 2], [4, 2], [4, 4]]
    assert annotations[2].area == 40.0
    # A single Feature, a bare list and a label map.
    path.write_text(json.dumps(document["features"][0]))  # type: ignore[index]
    assert len(read_geojson(path)) == 1
    path.write_text(json.dumps(document["features"][:1]))  # type: ignore[index]
    assert read_geojson(path, label_map={"Tumor": "carcinoma"})[0].label == "carcinoma"


def test_geojson_round_trip_keeps_holes_labels_and_names(tmp_path: Path) -> None:
    original = AnnotationSet(
        [
            Annotation(SQUARE, (np.array([[1, 1], [2, 1.5], [1, 2]]),), "tumor", "first"),
            Annotation(SQUARE / 3 + 100, label="normal"),
            Annotation(SQUARE + 50, label="unclassified"),
        ]
    )
    path = tmp_path / "a.geojson"
    write_geojson(original, path)
    assert read_geojson(path) == original
    features = json.loads(path.read_text())["features"]
    assert [f["properties"].get("classification", {}).get("name") for f in features] == [
        "Tumor",
        "Normal",
        None,
    ]
    feature = features[0]
    assert feature["geometry"]["coordinates"][0][0] == feature["geometry"]["coordinates"][0][-1]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not valid JSON"),
        ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ('{"type": "Topology"}', "not QuPath GeoJSON"),
        ("[42]", "feature 0 is not a JSON object"),
        (
            json.dumps([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]})]),
            r"feature 0 \(''\): exterior: a polygon needs at least 3 points, got 2",
        ),
        (
            '[{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", '
            '"coordinates": [[[0, 0], [1, NaN], [2, 0]]]}}]',
            "coordinate 1 is not finite",
        ),
        (
            json.dumps(
                [_feature({"type": "Polygon", "coordinates": [[[0, "a"], [1, 1], [2, 0]]]})]
            ),
            "positions must be",
        ),
        (json.dumps([_feature({"type": "Polygon", "coordinates": []})]), "non-empty list"),
    ],
)
def test_malformed_geojson_raises_annotation_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=match) as info:
        read_geojson(path)
    assert str(path) in str(info.value)


def test_invalid_geojson_polygons_can_be_skipped(tmp_path: Path) -> None:
    good = _feature({"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4]]]})
    bad = _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps([bad, good]))
    with pytest.warns(AnnotationWarning, match="feature 0") as caught:
        assert len(read_geojson(path, errors="skip")) == 1
    assert caught[0].filename == __file__


# --- XML -> GeoJSON -> XML ------------------------------------------------------------

finite = st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False)
ring_strategy = hnp.arrays(np.float64, st.tuples(st.integers(3, 12), st.just(2)), elements=finite)


@given(
    st.lists(
        st.tuples(
            ring_strategy,
            st.lists(ring_strategy, max_size=2),
            st.sampled_from(["tumor", "exclusion", "normal", "stroma"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_xml_to_geojson_to_xml_keeps_every_vertex(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[np.ndarray, list[np.ndarray], str]],
) -> None:
    tmp = tmp_path_factory.mktemp("roundtrip")
    original = [Annotation(ext, tuple(holes), label) for ext, holes, label in items]
    write_asap_xml(original, tmp / "a.xml")
    first = read_asap_xml(tmp / "a.xml")
    write_geojson(first, tmp / "b.geojson")
    write_asap_xml(read_geojson(tmp / "b.geojson"), tmp / "c.xml")
    final = read_asap_xml(tmp / "c.xml")
    assert final == first
    # Every vertex of every ring of the original is still there, exactly, in order.
    rings = [r for a in original for r in a.rings]
    assert len(final) == len(rings)
    for ring, a in zip(rings, final, strict=True):
        np.testing.assert_array_equal(a.exterior, ring)


# --- rasterize ------------------------------------------------------------------------


@st.composite
def star_polygons(draw: st.DrawFn, extent: float = 200.0) -> np.ndarray:
    """Simple (star-shaped) polygons: sorted distinct angles around a centre."""
    n = draw(st.integers(3, 16))
    angles = np.sort(
        np.array(
            draw(
                st.lists(
                    st.floats(0, 2 * math.pi, exclude_max=True), min_size=n, max_size=n, unique=True
                )
            )
        )
    )
    assume(np.diff(np.append(angles, angles[0] + 2 * math.pi)).min() > 1e-3)
    assume(np.diff(np.append(angles, angles[0] + 2 * math.pi)).max() < math.pi - 1e-3)
    radii = np.array(draw(st.lists(st.floats(2, extent / 4), min_size=n, max_size=n)))
    cx = draw(st.floats(extent / 4, 3 * extent / 4))
    cy = draw(st.floats(extent / 4, 3 * extent / 4))
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])


def _segment_distance(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest edge of a closed ring."""
    a = ring[None, :, :]
    b = np.roll(ring, -1, axis=0)[None, :, :]
    p = points[:, None, :]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0, 1)
    return np.sqrt((((a + t[..., None] * ab) - p) ** 2).sum(-1)).min(axis=1)


@given(star_polygons(), st.sampled_from([1.0, 2.0, 3.5, 8.0]))
def test_a_pixel_is_inside_when_its_centre_is(ring: np.ndarray, d: float) -> None:
    rows = cols = math.ceil(199 / d)
    raster = rasterize([Annotation(ring)], (rows, cols), d, slide_dimensions=(199, 199))
    xc, yc = raster.pixel_centers()  # the last pixel may be clipped by the slide
    if d > 1:
        assert xc[-1] < (cols - 0.5) * d
    xx, yy = np.meshgrid(xc, yc)
    centres = np.column_stack([xx.ravel(), yy.ravel()])
    expected = MplPath(ring).contains_points(centres).reshape(rows, cols)
    wrong = raster.array != expected
    # matplotlib and the scan line may only disagree for centres on the boundary itself.
    if wrong.any():
        assert _segment_distance(centres[wrong.ravel()], ring).max() < 1e-6


@given(star_polygons(), st.sampled_from([1.0, 2.0, 3.5, 8.0]))
def test_rasterised_area_matches_the_shoelace_area(ring: np.ndarray, d: float) -> None:
    annotation = Annotation(ring)
    n = math.ceil(200 / d)
    mask = rasterize([annotation], (n, n), d, slide_dimensions=(200, 200)).array
    # Only pixels the boundary passes through can be wrong; an edge of length
    # (dx, dy) passes through at most |dx|/d + |dy|/d + 2 pixels.
    steps = np.abs(np.diff(np.vstack([ring, ring[:1]]), axis=0)) / d
    boundary_pixels = float(steps.sum() + 2 * len(ring))
    assert abs(mask.sum() * d * d - annotation.area) <= boundary_pixels * d * d


@given(star_polygons(), st.sampled_from([2.0, 3.0, 4.5, 8.0]))
def test_rasterising_coarse_then_upsampling_stays_within_one_raster_pixel(
    ring: np.ndarray, d: float
) -> None:
    annotations = [Annotation(ring)]
    fine = rasterize(annotations, (200, 200), 1.0)
    coarse = rasterize(annotations, fine.resample(d))
    up = coarse.resample(1.0).array
    # A level-0 pixel can only disagree when the boundary passes between its centre
    # and the centre of the coarse pixel holding it: within half a coarse diagonal.
    wrong = np.argwhere(up != fine.array)
    if len(wrong):
        assert _segment_distance(wrong[:, ::-1] + 0.5, ring).max() <= d / math.sqrt(2) + 1e-9


def test_rectangles_on_pixel_edges_fill_exactly_and_tile_without_overlap() -> None:
    left = Annotation(np.array([[0, 0], [6, 0], [6, 4], [0, 4]]))
    right = Annotation(np.array([[6, 0], [10, 0], [10, 4], [6, 4]]))
    a = rasterize([left], (5, 10)).array
    b = rasterize([right], (5, 10)).array
    assert a.sum() == 24 and b.sum() == 16 and not np.any(a & b)
    assert (a | b)[:4].all() and not (a | b)[4].any()


def test_holes_belong_to_their_annotation_and_exclusions_clear_every_class() -> None:
    ring = Annotation(np.array([[0, 0], [12, 0], [12, 12], [0, 12]]), holes=(SQUARE / 2 + 3,))
    island = Annotation(SQUARE / 5 + 5, label="tumor")  # inside the hole
    other = Annotation(SQUARE / 5 + 0.5, label="normal")
    cut = Annotation(np.array([[0, 0], [3, 0], [3, 3], [0, 3]]), label="exclusion")
    mask = rasterize([ring, island, other, cut], (12, 12), classes=("tumor", "normal")).array
    assert mask[4, 4] == 0 and mask[6, 6] == 1  # the hole, then the island inside it
    assert not mask[:3, :3].any()  # excluded, whatever class was under it
    assert mask[10, 10] and mask[3, 8]


def test_holes_written_to_asap_rasterise_the_same(tmp_path: Path) -> None:
    ring = Annotation(np.array([[1, 1], [30, 2], [28, 29], [2, 25]]), (SQUARE + 8,))
    write_asap_xml([ring], tmp_path / "a.xml")
    direct = rasterize([ring], (32, 32), 1.0).array
    via_xml = rasterize(read_asap_xml(tmp_path / "a.xml"), (32, 32), 1.0).array
    np.testing.assert_array_equal(direct, via_xml)
    assert direct.sum() < Annotation(ring.exterior).area


def test_rasterize_grid_from_a_raster_or_from_slide_dimensions() -> None:
    tissue = Raster(np.zeros((4, 5), bool), 256.0, (1200, 1000), mpp=0.25)
    mask = rasterize([Annotation(SQUARE * 60)], tissue)
    assert mask.same_grid(tissue) and mask.mpp == 0.25 and mask.dtype == bool
    assert mask.array.astype(int).tolist()[:3] == [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    level = rasterize([Annotation(SQUARE * 60)], (250, 300), slide_dimensions=(1200, 1000))
    assert level.downsample == 4.0 and level.slide_dimensions == (1200, 1000)
    assert rasterize([], (3, 4)).slide_dimensions == (4, 3)
    with pytest.raises(ParameterError, match="differs from the raster"):
        rasterize([], tissue, 2.0)
    with pytest.raises(ParameterError, match="does not fit the slide"):
        rasterize([], (3, 4), 1.0, slide_dimensions=(400, 300))
    with pytest.raises(ParameterError, match="rows, cols"):
        rasterize([], "big")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="rasterize shape rows must be an integer >= 1"):
        rasterize([], (0, 4))
    with pytest.raises(ParameterError, match="rasterize shape cols must be an integer >= 1"):
        rasterize([], (4, 2.5))  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"rasterize\.downsample must be a finite number > 0"):
        rasterize([], (3, 4), -2.0)
    with pytest.raises(ParameterError, match=r"rasterize\.outside must be one of 'clip', 'raise'"):
        rasterize([], (3, 4), outside="drop")  # type: ignore[arg-type]
    assert rasterize([], (np.int64(3), np.int32(4)), np.float32(2)).shape == (3, 4)


def test_to_mask_is_rasterize_as_a_method() -> None:
    s = AnnotationSet(
        [Annotation(SQUARE * 6), Annotation(SQUARE * 2 + 10, label="exclusion")], source="s.xml"
    )
    tissue = Raster(np.zeros((10, 12), bool), 8.0, (96, 80), mpp=0.5)
    mask = s.to_mask(tissue)
    assert mask.same_grid(tissue) and mask.mpp == 0.5
    np.testing.assert_array_equal(mask.array, rasterize(s, tissue).array)
    np.testing.assert_array_equal(
        s.to_mask((10, 12), 8.0, slide_dimensions=(96, 80), classes=("exclusion",)).array,
        rasterize(s, (10, 12), 8.0, slide_dimensions=(96, 80), classes=("exclusion",)).array,
    )
    with pytest.raises(GeometryError, match="outside"):
        AnnotationSet([Annotation(SQUARE * 100)]).to_mask(tissue, outside="raise")


def test_unknown_class_and_far_coordinates_warn_or_raise() -> None:
    s = AnnotationSet([Annotation(SQUARE), Annotation(SQUARE * 1e6 + 5e6)], source="s.xml")
    with pytest.warns(
        AnnotationWarning, match=r"no annotation of s\.xml has the class\(es\) \['Tumor'\]"
    ):
        assert not rasterize(s, (10, 10), classes=("Tumor",)).array.any()
    with pytest.warns(AnnotationWarning, match=r"1 annotation\(s\) of s\.xml reach outside") as w:
        mask = rasterize(s, (20, 20), 1.0)
    with pytest.warns(AnnotationWarning, match=r"reach outside") as w_mask:
        s.to_mask((20, 20), 1.0)
    # Both warnings point at the line that called rasterize or to_mask.
    assert w[0].filename == w_mask[0].filename == __file__
    assert mask.array[:10, :10].all() and mask.array.sum() == 100  # the far one lies off the slide
    with pytest.raises(GeometryError, match=r"annotation 1 of s\.xml .* outside the 20x20 slide"):
        rasterize(s, (20, 20), 1.0, outside="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rasterize(s[:1], (20, 20), 1.0)  # inside, known class: silent


def test_a_huge_polygon_partly_on_the_slide_is_clipped_correctly() -> None:
    # Vertices a million pixels away; the visible part is a half-plane x < y.
    big = Annotation(np.array([[-1e6, -1e6], [1e6, 1e6], [-1e6, 1e6]]))
    with pytest.warns(AnnotationWarning):
        mask = rasterize([big], (50, 50), 1.0).array
    rr, cc = np.mgrid[0:50, 0:50]
    np.testing.assert_array_equal(mask, cc < rr)


# --- annotations_from_mask ------------------------------------------------------------


@given(
    hnp.arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 14))),
    st.sampled_from([1.0, 2.0, 3.5, 16.0]),
    st.booleans(),
)
def test_tracing_a_mask_and_rasterising_gives_the_mask_back(
    array: np.ndarray, d: float, clipped: bool
) -> None:
    rows, cols = array.shape
    # With ``clipped`` the slide ends inside the last row and column of pixels.
    shrink = 0.5 if clipped else 0.0
    dims = (math.ceil((cols - shrink) * d), math.ceil((rows - shrink) * d))
    mask = Raster(array, d, dims)
    traced = annotations_from_mask(mask)
    assert all(a.label == "tumor" for a in traced)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing reaches outside the slide
        np.testing.assert_array_equal(rasterize(traced, mask).array, array)
    if not clipped:
        assert traced.area() == pytest.approx(array.sum() * d * d)


def test_tracing_keeps_holes_and_islands_in_level0_coordinates(rng: np.random.Generator) -> None:
    array = np.zeros((20, 20), bool)
    array[2:18, 2:18] = True
    array[5:15, 5:15] = False
    array[8:12, 8:12] = True  # an island in the hole
    mask = Raster(array, 10.0, (200, 200))
    traced = annotations_from_mask(mask, label="tissue")
    assert len(traced) == 2 and sorted(len(a.holes) for a in traced) == [0, 1]
    outer = next(a for a in traced if a.holes)
    b = outer.bounds()
    assert (b.x, b.y, b.x1, b.y1) == (20.0, 20.0, 180.0, 180.0)  # on the pixel edges
    assert len(outer.exterior) == 4 and len(outer.holes[0]) == 4
    assert traced.area() == array.sum() * 10.0 * 10.0
    small = annotations_from_mask(mask, min_area=2000)
    assert len(small) == 1 and small[0].holes
    blobs = ndimage.binary_opening(rng.random((60, 60)) < 0.6, iterations=2)
    blob_mask = Raster(blobs, 4.0, (240, 240))
    exact = annotations_from_mask(blob_mask)
    simple = annotations_from_mask(blob_mask, simplify=1.0)
    assert sum(a.n_vertices for a in simple) < sum(a.n_vertices for a in exact)
    agree = rasterize(simple, blob_mask).array == blobs
    assert agree.mean() > 0.95
    assert len(annotations_from_mask(Raster(np.zeros((3, 3), bool), 1, (3, 3)))) == 0
    with pytest.raises(ParameterError, match="simplify"):
        annotations_from_mask(mask, simplify=-1)


# --- layers ---------------------------------------------------------------------------


def test_annotations_depend_only_on_the_bottom_layer() -> None:
    package = Path(cervixwsi.annotations.__file__).parent
    imported: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    bottom = {"cervixwsi.errors", "cervixwsi.geometry", "cervixwsi._validate", "cervixwsi._io"}
    above = {
        m
        for m in imported
        if m.split(".")[0] == "cervixwsi"
        and m not in bottom
        and not m.startswith("cervixwsi.annotations")
    }
    assert not above, f"cervixwsi.annotations imports {sorted(above)}"
    code = "import sys, cervixwsi.annotations; print('cervixwsi.metrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
