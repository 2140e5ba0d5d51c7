"""Synthetic slides: deterministic, tile-order independent, and their truth matches the pixels."""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.color import rgb2hed

from cervixwsi.annotations import rasterize, read_asap_xml
from cervixwsi.errors import CervixWSIError, ParameterError
from cervixwsi.synthetic import (
    ARTIFACTS,
    Cohort,
    SyntheticSlideSpec,
    make_cohort,
    make_layout,
    make_slide,
    render_region,
    study_split_counts,
)
from cervixwsi.synthetic._cohort import STUDY_SPLIT, _stratified_counts
from cervixwsi.synthetic._layout import EOSIN, HEMATOXYLIN, F

SMALL = {"width": 2048, "height": 2048}


@pytest.fixture(scope="module")
def tumor_layout():  # type: ignore[no-untyped-def]
    return make_layout(SyntheticSlideSpec(**SMALL, seed=4, n_nests=8, large_nests=1))


@pytest.fixture(scope="module")
def tumor_image(tumor_layout):  # type: ignore[no-untyped-def]
    """The whole small tumor slide, drawn in 512-pixel blocks."""
    image = np.zeros((2048, 2048, 3), np.uint8)
    for y in range(0, 2048, 512):
        for x in range(0, 2048, 512):
            image[y : y + 512, x : x + 512] = render_region(tumor_layout, x, y, 512, 512)
    return image


def per_mask_pixel(values: np.ndarray, d: int = 16) -> np.ndarray:
    """Mean of a level-0 image over each 16x16 mask pixel."""
    h, w = values.shape[:2]
    return values.reshape(h // d, d, w // d, d, *values.shape[2:]).mean(axis=(1, 3))


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=r, border_value=0)


# --- the spec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 10),
        ("height", 2.5),
        ("mpp", 0.0),
        ("mpp", float("nan")),
        ("tumor", 1),
        ("tissue_fraction", 0.0),
        ("tissue_fraction", 0.95),
        ("n_nests", -1),
        ("nest_scatter", 1.5),
        ("large_nests", -2),
        ("stain_variation", 0.8),
        ("artifacts", ("pen", "coffee")),
        ("artifacts", "pen"),
        ("seed", -1),
        ("tile_size", 100),
        ("compression", "png"),
        ("quality", 0),
        ("mask_downsample", 1),
    ],
)
def test_bad_spec_fields_raise_parameter_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ParameterError, match=f"SyntheticSlideSpec.{field}"):
        SyntheticSlideSpec(**{field: value})  # type: ignore[arg-type]


def test_numpy_numbers_are_accepted_and_bools_refused_with_the_valid_range() -> None:
    spec = SyntheticSlideSpec(width=np.int64(512), height=np.int32(512), mpp=np.float32(0.5))
    assert (type(spec.width), type(spec.mpp)) == (int, float)
    assert spec == SyntheticSlideSpec(width=512, height=512, mpp=0.5)
    assert render_region(spec, np.int64(0), 0, np.int16(8), 8).shape == (8, 8, 3)
    with pytest.raises(ParameterError, match=r"SyntheticSlideSpec\.width .*>= 64, got True"):
        SyntheticSlideSpec(width=True)
    with pytest.raises(ParameterError, match=r"SyntheticSlideSpec\.quality .*\[1, 100\], got 101"):
        SyntheticSlideSpec(quality=101)
    with pytest.raises(ParameterError, match=r"render_region\.width .*>= 1, got 0"):
        render_region(spec, 0, 0, 0, 8)
    with pytest.raises(ParameterError, match=r"render_region\.x must be an integer"):
        render_region(spec, np.bool_(False), 0, 8, 8)  # type: ignore[arg-type]


def test_spec_defaults_are_a_40x_tumor_slide_with_hundreds_of_nests_when_large() -> None:
    spec = SyntheticSlideSpec()
    assert (spec.width, spec.height, spec.mpp, spec.tumor) == (20000, 20000, 0.25, True)
    assert spec.artifacts == ()
    assert SyntheticSlideSpec(width=100_000, height=100_000).nest_count > 300
    assert SyntheticSlideSpec(tumor=False).nest_count == 0
    assert SyntheticSlideSpec(artifacts=["pen", "dust", "pen"]).artifacts == ("dust", "pen")
    with pytest.raises(ParameterError, match="no field"):
        spec.replace(colour="blue")


# --- determinism and tile independence -------------------------------------------------


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    spec = SyntheticSlideSpec(**SMALL, seed=9, n_nests=6)
    a = render_region(make_layout(spec), 700, 900, 300, 200)
    b = render_region(
        make_layout(SyntheticSlideSpec(**SMALL, seed=9, n_nests=6)), 700, 900, 300, 200
    )
    c = render_region(make_layout(spec.replace(seed=10)), 700, 900, 300, 200)
    assert np.array_equal(a, b)
    assert np.mean(np.abs(a.astype(int) - c.astype(int))) > 5


@pytest.mark.parametrize(
    ("artifacts", "mpp"), [((), 0.25), (ARTIFACTS, 0.25), (ARTIFACTS, 0.5), ((), 0.12)]
)
def test_region_equals_region_assembled_from_unequal_pieces(
    artifacts: tuple[str, ...], mpp: float
) -> None:
    layout = make_layout(
        SyntheticSlideSpec(
            **SMALL, mpp=mpp, seed=3, n_nests=10, artifacts=artifacts, tissue_fraction=0.6
        )
    )
    x, y, w, h = 1003, 517, 301, 257  # deliberately not tile-aligned
    whole = render_region(layout, x, y, w, h)
    assert np.ptp(whole) > 100  # there is something drawn to disagree about
    pieces = np.zeros_like(whole)
    for x0, x1 in ((0, 117), (117, w)):
        for y0, y1 in ((0, 40), (40, h)):
            pieces[y0:y1, x0:x1] = render_region(layout, x + x0, y + y0, x1 - x0, y1 - y0)
    assert np.array_equal(whole, pieces)


@pytest.fixture(scope="module")
def artifact_layout():  # type: ignore[no-untyped-def]
    spec = SyntheticSlideSpec(
        width=1024, height=1024, seed=6, n_nests=6, tissue_fraction=0.7, artifacts=ARTIFACTS
    )
    return make_layout(spec)


@given(
    x=st.integers(-40, 900),
    y=st.integers(-40, 900),
    w=st.integers(2, 160),
    h=st.integers(2, 160),
    cut=st.floats(0.01, 0.99),
    vertical=st.booleans(),
)
def test_any_region_equals_its_two_halves(  # type: ignore[no-untyped-def]
    artifact_layout, x: int, y: int, w: int, h: int, cut: float, vertical: bool
) -> None:
    whole = render_region(artifact_layout, x, y, w, h)
    if vertical:
        k = max(1, min(w - 1, round(w * cut)))
        halves = [
            render_region(artifact_layout, x, y, k, h),
            render_region(artifact_layout, x + k, y, w - k, h),
        ]
        assert np.array_equal(whole, np.hstack(halves))
    else:
        k = max(1, min(h - 1, round(h * cut)))
        halves = [
            render_region(artifact_layout, x, y, w, k),
            render_region(artifact_layout, x, y + k, w, h - k),
        ]
        assert np.array_equal(whole, np.vstack(halves))


def test_parts_outside_the_slide_are_white() -> None:
    spec = SyntheticSlideSpec(width=512, height=512, seed=1)
    patch = render_region(spec, 400, -20, 256, 64)
    assert (patch[:20] == 255).all() and (patch[:, 112:] == 255).all()
    assert (patch[20:, :112] < 255).any()


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 0, 0, 10), "width"), ((0, 0, 10, -1), "height"), ((0.5, 0, 10, 10), "x")],
)
def test_bad_regions_raise(args: tuple[float, ...], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        render_region(SyntheticSlideSpec(width=512, height=512), *args)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="SyntheticSlideSpec"):
        render_region("spec.json", 0, 0, 1, 1)  # type: ignore[arg-type]


# --- the truth agrees with the pixels --------------------------------------------------


def test_tissue_mask_pixels_are_stained_and_the_rest_is_glass(tumor_layout, tumor_image) -> None:  # type: ignore[no-untyped-def]
    tissue = tumor_layout.tissue_mask.array
    assert 0.25 < tissue.mean() < 0.45  # tissue_fraction 0.35
    sat = per_mask_pixel(cv2.cvtColor(tumor_image, cv2.COLOR_RGB2HSV)[..., 1] / 255.0)
    rgb = per_mask_pixel(tumor_image.astype(float))
    assert np.mean(sat[tissue] > 0.08) > 0.95
    glass = erode(~tissue, 1)
    glass_like = (sat[glass] < 0.05) & (rgb[glass].min(axis=-1) > 225)
    assert glass_like.mean() > 0.99


def test_tumor_mask_pixels_are_nuclei_dense(tumor_layout, tumor_image) -> None:  # type: ignore[no-untyped-def]
    tumor = tumor_layout.tumor_mask.array
    tissue = tumor_layout.tissue_mask.array
    assert tumor.any() and not (tumor & ~tissue).any()
    # Hematoxylin by scikit-image's colour deconvolution (an independent computation).
    hema = rgb2hed(tumor_image)[..., 0]
    nuclear = per_mask_pixel((hema > 0.08).astype(float))
    mean_h = per_mask_pixel(hema)
    inside, normal = erode(tumor, 2), erode(tissue & ~tumor, 2)
    assert inside.sum() > 50 and normal.sum() > 50
    assert mean_h[inside].mean() > 2.0 * mean_h[normal].mean()
    assert nuclear[inside].mean() > 0.15
    assert nuclear[inside].mean() > 3.0 * nuclear[normal].mean()


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**40),
    fraction=st.floats(0.05, 0.9),
    tumor=st.booleans(),
    pen=st.booleans(),
)
def test_masks_cover_the_asked_tissue_fraction_and_tumor_lies_in_tissue(
    seed: int, fraction: float, tumor: bool, pen: bool
) -> None:
    spec = SyntheticSlideSpec(
        width=1600,
        height=1200,
        seed=seed,
        tissue_fraction=fraction,
        tumor=tumor,
        artifacts=("pen",) if pen else (),
    )
    layout = make_layout(spec)
    tissue, lesions = layout.tissue_mask, layout.tumor_mask
    assert tissue.shape == lesions.shape == (75, 100)
    assert tissue.slide_dimensions == (1600, 1200) and tissue.mpp == 0.25
    if not pen:  # ink takes its strokes out of the tissue
        assert abs(tissue.array.mean() - fraction) < 0.02
    assert not (lesions.array & ~tissue.array).any()
    assert lesions.array.any() == (tumor and layout.n_lesions > 0)


def test_default_tumor_slide_has_many_small_lesions() -> None:
    layout = make_layout(SyntheticSlideSpec(seed=0))  # 20000 x 20000, default density
    labels, n = ndimage.label(layout.tumor_mask.array, structure=np.ones((3, 3)))
    assert n == layout.n_lesions >= 15
    areas_um2 = np.bincount(labels.ravel())[1:] * (16 * 0.25) ** 2
    assert np.median(areas_um2) < 0.2e6  # most are small (< 0.2 mm², i.e. < ~500 µm across)


def test_normal_slide_has_tissue_and_epithelium_but_no_tumor() -> None:
    layout = make_layout(SyntheticSlideSpec(**SMALL, tumor=False, seed=2))
    assert not layout.tumor_mask.array.any() and layout.n_lesions == 0
    assert layout.tissue_mask.array.any()
    assert (layout.fields[..., F.DEPTH][layout.tissue_mask.array] < 1.0).any()
    assert layout.pearls.shape == (0, 3)


# The tumor masks of these slides as the layout gave them before necrosis, tangentially
# cut basal epithelium and crushed edges were added (issue 12): SHA-256 of the packed
# mask, first 16 hex digits.  Those draw from random streams of their own.
_TUMOR_MASK_SHA = {
    (3, 0.0): "8e2c2c82103f7965",
    (3, 1.0): "fda4179d6a2145e5",
    (11, 0.0): "36faa45a089513ee",
}


@pytest.mark.parametrize(("seed", "difficulty"), sorted(_TUMOR_MASK_SHA))
def test_necrosis_and_edge_mimics_leave_the_tumor_mask_and_the_layout_as_they_were(
    seed: int, difficulty: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    spec = SyntheticSlideSpec(
        width=4096, height=4096, seed=seed, difficulty=difficulty, large_nests=1
    )
    layout = make_layout(spec)
    digest = hashlib.sha256(np.packbits(layout.tumor_mask.array).tobytes()).hexdigest()
    assert digest[:16] == _TUMOR_MASK_SHA[seed, difficulty]
    # and everything else the layout held before is what it is without them
    monkeypatch.setattr("cervixwsi.synthetic._mimics.mimic_fields", lambda *args: None)
    plain = make_layout(spec)
    assert not plain.fields[..., F.NECROSIS :].any()
    assert np.array_equal(layout.fields[..., : F.NECROSIS], plain.fields[..., : F.NECROSIS])
    assert np.array_equal(layout.tissue_mask.array, plain.tissue_mask.array)
    assert np.array_equal(layout.pearls, plain.pearls)
    assert np.array_equal(layout.glands, plain.glands)


def test_pen_ink_is_coloured_but_not_tissue() -> None:
    layout = make_layout(SyntheticSlideSpec(**SMALL, seed=5, artifacts=("pen",), tumor=False))
    ink = layout.artifact_fields[..., F.PEN] > 0.6
    assert ink.any()
    assert not (ink & layout.tissue_mask.array).any()
    rows, cols = np.nonzero(erode(ink, 1))
    r, c = rows[rows.size // 2], cols[cols.size // 2]
    pixel = render_region(layout, int(c) * 16, int(r) * 16, 16, 16).reshape(-1, 3).mean(axis=0)
    assert pixel.min() < 170  # ink, not glass


def _without(layout, field: int | None = None, artifact: str | None = None):  # type: ignore[no-untyped-def]
    """The same layout with one artifact field zeroed or one artifact left out of the spec."""
    if field is not None:
        fields = layout.artifact_fields.copy()
        fields[..., field] = 0.0
        return dataclasses.replace(layout, artifact_fields=fields)
    spec = dataclasses.replace(
        layout.spec, artifacts=tuple(a for a in layout.spec.artifacts if a != artifact)
    )
    return dataclasses.replace(layout, spec=spec)


def _window_where(mask: np.ndarray, side: int = 16) -> tuple[int, int]:
    """Level-0 top-left of a 16-cell-wide window well inside ``mask`` (layout cells of 16 px)."""
    rows, cols = np.nonzero(erode(mask, 2))
    assert rows.size, "the artifact is not in this layout"
    r, c = rows[rows.size // 2], cols[cols.size // 2]
    return int(c) * 16 - side // 2, int(r) * 16 - side // 2


def test_a_fold_darkens_the_doubled_tissue() -> None:
    layout = make_layout(SyntheticSlideSpec(**SMALL, seed=5, artifacts=("fold",), tumor=False))
    fold = (layout.artifact_fields[..., F.FOLD] > 0.8) & layout.tissue_mask.array
    x, y = _window_where(fold)
    with_fold = render_region(layout, x, y, 64, 64).astype(float).mean()
    without = render_region(_without(layout, field=F.FOLD), x, y, 64, 64).astype(float).mean()
    assert with_fold < without - 10  # about twice the stain: clearly darker


def test_blur_takes_the_fine_detail_out_of_focus() -> None:
    layout = make_layout(SyntheticSlideSpec(**SMALL, seed=5, artifacts=("blur",), tumor=True))
    blurred = (layout.artifact_fields[..., F.BLUR] > 0.9) & layout.tissue_mask.array
    x, y = _window_where(blurred)

    def detail(rgb: np.ndarray) -> float:  # variance of the Laplacian: sharpness
        grey = rgb.astype(float).mean(axis=2)
        return float(ndimage.laplace(grey)[2:-2, 2:-2].var())

    sharp = detail(render_region(_without(layout, field=F.BLUR), x, y, 96, 96))
    soft = detail(render_region(layout, x, y, 96, 96))
    assert soft < 0.3 * sharp


def test_dust_specks_lie_on_glass_and_tissue() -> None:
    layout = make_layout(SyntheticSlideSpec(**SMALL, seed=5, artifacts=("dust",), tumor=False))
    with_dust = render_region(layout, 0, 0, 2048, 2048).astype(np.int16)
    clean = render_region(_without(layout, artifact="dust"), 0, 0, 2048, 2048).astype(np.int16)
    specks = (clean - with_dust).max(axis=2) > 40  # clearly darker pixels
    assert specks.any()
    glass = ~np.kron(layout.tissue_mask.array, np.ones((16, 16), bool))[:2048, :2048]
    assert (specks & glass).any() and (specks & ~glass).any()
    assert specks.mean() < 0.01  # specks, not a veil


def test_stain_variation_changes_colours_between_slides() -> None:
    fixed = [
        make_layout(SyntheticSlideSpec(**SMALL, seed=s, stain_variation=0.0)).stain for s in (1, 2)
    ]
    for stain in fixed:
        assert np.allclose(stain.hematoxylin, HEMATOXYLIN / np.linalg.norm(HEMATOXYLIN), atol=1e-6)
        assert np.allclose(stain.eosin, EOSIN / np.linalg.norm(EOSIN), atol=1e-6)
    varied = [
        make_layout(SyntheticSlideSpec(**SMALL, seed=s, stain_variation=0.3)).stain for s in (1, 2)
    ]
    assert not np.allclose(varied[0].eosin, varied[1].eosin)


# --- files: slide, annotations, cohort ---------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("synthetic") / "slide.tiff"
    spec = SyntheticSlideSpec(width=3000, height=2200, seed=8, n_nests=12, large_nests=1)
    return make_slide(spec, path, threads=2)


def test_written_slide_opens_in_slide_and_openslide_alike(written) -> None:  # type: ignore[no-untyped-def]
    openslide = pytest.importorskip("openslide")
    from cervixwsi.slide import Slide

    with Slide(written.path) as ours:
        theirs = openslide.OpenSlide(str(written.path))
        try:
            assert ours.dimensions == theirs.dimensions == (3000, 2200)
            assert ours.level_dimensions == theirs.level_dimensions
            assert np.allclose(ours.level_downsamples, theirs.level_downsamples)
            assert ours.mpp == (0.25, 0.25)
            assert float(theirs.properties["openslide.mpp-x"]) == pytest.approx(0.25)
            region = ours.read_region((1024, 768), 0, (256, 256))
            reference = np.asarray(theirs.read_region((1024, 768), 0, (256, 256)))[..., :3]
        finally:
            theirs.close()
    assert np.array_equal(region, reference)
    drawn = render_region(written.spec, 1024, 768, 256, 256)
    assert np.mean(np.abs(region.astype(int) - drawn.astype(int))) < 4  # JPEG q90 only


def test_annotations_rasterize_back_to_the_tumor_mask(written) -> None:  # type: ignore[no-untyped-def]
    mask = written.tumor_mask
    assert written.n_lesions >= 1 and len(written.annotations) >= written.n_lesions
    assert np.array_equal(rasterize(written.annotations, mask).array, mask.array)
    from_file = read_asap_xml(written.annotation_path)
    coarse = rasterize(from_file, mask.shape_at(64), 64, slide_dimensions=mask.slide_dimensions)
    truth = mask.resample(64, method="area").array
    sure = (truth == 0) | (truth == 1)  # coarse pixels not on a boundary
    assert sure.mean() > 0.8
    assert np.array_equal(coarse.array[sure], truth[sure] == 1)


def test_make_slide_rejects_bad_paths(tmp_path: pathlib.Path) -> None:
    spec = SyntheticSlideSpec(width=256, height=256)
    with pytest.raises(ParameterError, match=r"\.tif"):
        make_slide(spec, tmp_path / "slide.png")
    with pytest.raises((CervixWSIError, OSError)):
        make_slide(spec, tmp_path / "missing" / "slide.tiff")
    assert not list(tmp_path.iterdir())


@given(n=st.integers(0, 2000), a=st.floats(0, 1), b=st.floats(0, 1))
def test_split_counts_add_up_and_follow_the_proportions(n: int, a: float, b: float) -> None:
    shares = (a * (1 - b), (1 - a) * (1 - b), b)
    total = sum(shares)
    if total == 0:
        return
    shares = tuple(s / total for s in shares)
    counts = study_split_counts(n, shares)
    assert sum(counts) == n
    assert all(abs(c - n * s) < 1 for c, s in zip(counts, shares, strict=True))


def test_study_split_is_480_160_160_of_800_also_stratified() -> None:
    assert study_split_counts(800) == (480, 160, 160)
    per_label = _stratified_counts(347, 453, STUDY_SPLIT)
    assert per_label["tumor"] == (208, 70, 69) or per_label["tumor"] == study_split_counts(347)
    totals = [t + n for t, n in zip(per_label["tumor"], per_label["normal"], strict=True)]
    assert totals == [480, 160, 160]


@given(n_tumor=st.integers(0, 500), n_normal=st.integers(0, 500))
def test_stratified_counts_are_never_negative_and_add_up(n_tumor: int, n_normal: int) -> None:
    per_label = _stratified_counts(n_tumor, n_normal, STUDY_SPLIT)
    assert sum(per_label["tumor"]) == n_tumor and sum(per_label["normal"]) == n_normal
    assert min(per_label["tumor"] + per_label["normal"]) >= 0


def test_cohort_manifest_splits_and_resume(tmp_path: pathlib.Path) -> None:
    cohort = make_cohort(tmp_path, 3, 5, size=(640, 512), seed=1, progress=False)
    assert isinstance(cohort, Cohort) and len(cohort) == 8
    with cohort.manifest_path.open(newline="") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == [
        "slide_id",
        "path",
        "label",
        "split",
        "annotation_path",
        "n_lesions",
        "seed",
    ]
    assert [r["label"] for r in lines].count("tumor") == 3
    for row in cohort.rows:
        assert row.path.is_file() and row.annotation_path.is_file()
        assert row.path.parent.parent == tmp_path
    normal_splits = sorted(r.split for r in cohort.select(label="normal"))
    assert normal_splits == ["test", "train", "train", "train", "validation"]
    assert all(r.n_lesions == 0 for r in cohort.select(label="normal"))
    assert Cohort.read(tmp_path).rows == cohort.rows

    # Resume: intact slides are kept, a truncated one is written again.
    first, second = cohort.rows[0].path, cohort.rows[1].path
    mtime = first.stat().st_mtime_ns
    second.write_bytes(second.read_bytes()[:300])
    again = make_cohort(tmp_path, 3, 5, size=(640, 512), seed=1, progress=False)
    assert again.rows == cohort.rows
    assert first.stat().st_mtime_ns == mtime
    assert second.stat().st_size > 300
    from cervixwsi.slide import Slide

    with Slide(second) as slide:
        assert slide.dimensions == (640, 512)


@pytest.mark.slow
def test_cohort_does_not_depend_on_workers(tmp_path: pathlib.Path) -> None:
    one = make_cohort(tmp_path / "one", 2, 1, size=(512, 512), seed=3, progress=False)
    two = make_cohort(tmp_path / "two", 2, 1, size=(512, 512), seed=3, workers=2, progress=False)
    for a, b in zip(one.rows, two.rows, strict=True):
        assert (a.slide_id, a.split, a.seed, a.n_lesions) == (
            b.slide_id,
            b.split,
            b.seed,
            b.n_lesions,
        )
        from cervixwsi.slide import Slide

        with Slide(a.path) as sa, Slide(b.path) as sb:
            assert np.array_equal(
                sa.read_region((0, 0), 0, (512, 512)), sb.read_region((0, 0), 0, (512, 512))
            )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tumor": 0, "n_normal": 0}, "at least one"),
        ({"n_tumor": -1, "n_normal": 2}, "n_tumor"),
        ({"n_tumor": 1, "n_normal": 1, "split": (0.5, 0.5, 0.5)}, "split"),
        ({"n_tumor": 1, "n_normal": 1, "spec_options": {"seed": 3}}, "seed"),
        ({"n_tumor": 1, "n_normal": 1, "workers": 0}, "workers"),
        ({"n_tumor": True, "n_normal": 1}, r"make_cohort\.n_tumor .*got True"),
        ({"n_tumor": 1, "n_normal": 1, "size": (512.0, 512)}, r"size\[0\]"),
        ({"n_tumor": 1, "n_normal": 1, "split": (0.5, 0.5, "0")}, r"split\[2\]"),
    ],
)
def test_bad_cohort_arguments_raise_before_writing(
    tmp_path: pathlib.Path, kwargs: dict, match: str
) -> None:  # type: ignore[type-arg]
    with pytest.raises(ParameterError, match=match):
        make_cohort(tmp_path / "c", progress=False, **kwargs)
    assert not (tmp_path / "c").exists()


def test_cohort_read_rejects_a_file_that_is_not_a_manifest(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ParameterError, match="no cohort manifest"):
        Cohort.read(tmp_path)
    manifest = tmp_path / "manifest.csv"
    for text in ("", "a,b\n1,2\n"):
        manifest.write_text(text)
        with pytest.raises(ParameterError, match="columns"):
            Cohort.read(tmp_path)
    header = "slide_id,path,label,split,annotation_path,n_lesions,seed\n"
    manifest.write_text(header + "t0,slides/t0.tiff,tumor,train,annotations/t0.xml,many,1\n")
    with pytest.raises(ParameterError, match="malformed"):
        Cohort.read(manifest)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


_PEAK_SCRIPT = """
import pathlib, sys, tempfile
from cervixwsi.synthetic import SyntheticSlideSpec, make_slide
side = int(sys.argv[1])
with tempfile.TemporaryDirectory() as d:
    make_slide(SyntheticSlideSpec(width=side, height=side, seed=0), pathlib.Path(d) / "s.tif",
               annotations=False)
for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) // 1024)
"""


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux VmHWM")
def test_peak_memory_of_make_slide_hardly_grows_with_the_slide() -> None:
    # Streaming: 9 times the area adds a few tens of MiB (the 1/16-scale layout
    # fields), far from the 432 MiB of the larger slide's level 0 as one RGB array.
    import subprocess
    import sys

    def peak_mib(side: int) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT, str(side)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout.split()[-1])

    small, large = peak_mib(4096), peak_mib(12288)
    assert large - small < 150, (small, large)
