"""Hard-negative mining (cervixwsi.heatmap) and PatchStore.add_patches (cervixwsi.tiling)."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cervixwsi.annotations import Annotation, AnnotationSet
from cervixwsi.errors import GeometryError, ParameterError, PatchStoreError
from cervixwsi.geometry import Raster
from cervixwsi.heatmap import (
    Heatmap,
    HeatmapGenerator,
    HeatmapInfo,
    add_hard_negatives,
    mine_hard_negatives,
)
from cervixwsi.slide import ArraySlide
from cervixwsi.tiling import PatchCoords, PatchSampler, PatchStore, read_patch
from cervixwsi.tissue import TissueMask, TissueMasker

# --- mine_hard_negatives ----------------------------------------------------------------------


def heatmap_of(p: np.ndarray, stride: float, patch: int = 64, tissue: Any = None) -> Heatmap:
    h, w = p.shape
    info = HeatmapInfo("s", patch, 0, 1.0, stride, 0.5, "test")
    tissue = np.isfinite(p) if tissue is None else tissue
    dims = (int(w * stride), int(h * stride))
    return Heatmap(p.astype(np.float32), stride, dims, tissue_mask=tissue, info=info, mpp=1.0)


def by_hand(
    heat: Heatmap, tumor: Raster | None, threshold: float, margin: float
) -> set[tuple[int, int]]:
    """The hard-negative cells by the definition, one cell and one tumor pixel at a time."""
    p, s = heat.array, heat.downsample
    extent = heat.info.patch_size * heat.info.level_downsample
    cells = set()
    tumor_pixels = [] if tumor is None else np.argwhere(tumor.array)
    d = None if tumor is None else tumor.downsample
    for r in range(p.shape[0]):
        for c in range(p.shape[1]):
            if not (np.isfinite(p[r, c]) and heat.tissue_mask.array[r, c] and p[r, c] >= threshold):
                continue
            x0, y0 = (c + 0.5) * s - extent / 2 - margin, (r + 0.5) * s - extent / 2 - margin
            side = extent + 2 * margin
            touches = any(
                j * d < x0 + side and (j + 1) * d > x0 and i * d < y0 + side and (i + 1) * d > y0
                for i, j in tumor_pixels
            )
            if not touches:
                cells.add((r, c))
    return cells


@st.composite
def heatmap_and_tumor(draw: Any) -> tuple[Heatmap, Raster | None, float]:
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    stride = draw(st.sampled_from([16.0, 32.0, 64.0]))  # a patch of 64 covers 4, 2 or 1 cells
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    p = rng.random((h, w))
    p[rng.random((h, w)) < 0.2] = np.nan
    heat = heatmap_of(p, stride)
    tumor = None
    if draw(st.booleans()):
        d = draw(st.sampled_from([4.0, 16.0, 48.0]))
        dims = heat.slide_dimensions
        shape = (-(-dims[1] // int(d)), -(-dims[0] // int(d)))
        tumor = Raster(rng.random(shape) < draw(st.sampled_from([0.0, 0.02, 0.1])), d, dims)
    return heat, tumor, draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]))


@given(heatmap_and_tumor(), st.sampled_from([None, 0.0, 10.0]))
def test_mined_patches_are_the_false_positives_and_never_touch_tumor(
    case: tuple[Heatmap, Raster | None, float], margin: float | None
) -> None:
    heat, tumor, threshold = case
    coords = mine_hard_negatives(heat, tumor=tumor, threshold=threshold, margin=margin)
    grow = 64.0 if margin is None else margin
    assert set(zip(coords.rows.tolist(), coords.cols.tolist(), strict=True)) == by_hand(
        heat, tumor, threshold, grow
    )
    assert coords.size == 64 and coords.extent == 64 and (coords.labels == 0).all()
    p = heat.array[coords.rows, coords.cols]
    assert (p >= threshold).all()
    if tumor is not None:  # every box, grown by the margin, is clear of every tumor pixel
        d = tumor.downsample
        for x, y in zip(coords.x.tolist(), coords.y.tolist(), strict=True):
            c0, c1 = int((x - grow) // d), int(np.ceil((x + 64 + grow) / d))
            r0, r1 = int((y - grow) // d), int(np.ceil((y + 64 + grow) / d))
            assert not tumor.array[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)].any()


def test_mined_boxes_are_the_predicted_patches_at_the_study_stride() -> None:
    p = np.zeros((3, 4))
    p[1, 2] = 0.8
    coords = mine_hard_negatives(heatmap_of(p, 64.0))
    assert coords.boxes().tolist() == [[128.0, 64.0, 64.0, 64.0]]
    assert coords.grid_shape == (3, 4) and coords.grid_downsample == 64.0
    # At a stride of half a patch the patch is centred on its heatmap pixel.
    coords = mine_hard_negatives(heatmap_of(p, 32.0))
    assert coords.boxes().tolist() == [[64.0 + 16 - 32, 32.0 + 16 - 32, 64.0, 64.0]]


def test_tissue_and_nan_cells_are_never_mined() -> None:
    p = np.full((2, 2), 0.95)
    p[0, 0] = np.nan
    tissue = np.array([[False, True], [False, True]])
    coords = mine_hard_negatives(heatmap_of(p, 64.0, tissue=tissue))
    assert sorted(zip(coords.rows.tolist(), coords.cols.tolist(), strict=True)) == [(0, 1), (1, 1)]


def test_max_patches_draws_a_seeded_subset() -> None:
    p = np.full((6, 6), 0.9)
    every = mine_hard_negatives(heatmap_of(p, 64.0))
    some = mine_hard_negatives(heatmap_of(p, 64.0), max_patches=5, seed=3)
    again = mine_hard_negatives(heatmap_of(p, 64.0), max_patches=5, seed=3)
    assert len(every) == 36 and len(some) == 5
    assert some.x.tolist() == again.x.tolist() and some.y.tolist() == again.y.tolist()
    assert set(zip(some.x, some.y, strict=True)) <= set(zip(every.x, every.y, strict=True))
    assert len(mine_hard_negatives(heatmap_of(p, 64.0), max_patches=0)) == 0


def test_tumor_as_annotations_is_drawn_and_kept_clear() -> None:
    p = np.full((4, 8), 0.9)
    square = np.array([[256, 64], [320, 64], [320, 128], [256, 128]], float)
    annotations = AnnotationSet([Annotation(square)])
    coords = mine_hard_negatives(heatmap_of(p, 64.0), tumor=annotations)
    cells = set(zip(coords.rows.tolist(), coords.cols.tolist(), strict=True))
    # The tumor is cell (1, 4); one patch of margin clears cells (0..2, 3..5).
    assert cells == {(r, c) for r in range(4) for c in range(8)} - {
        (r, c) for r in range(3) for c in range(3, 6)
    }


def test_mining_bad_input() -> None:
    heat = heatmap_of(np.full((2, 2), 0.9), 64.0)
    with pytest.raises(ParameterError, match=r"mine_hard_negatives\.threshold"):
        mine_hard_negatives(heat, threshold=1.5)
    with pytest.raises(ParameterError, match=r"mine_hard_negatives\.max_patches"):
        mine_hard_negatives(heat, max_patches=-1)
    with pytest.raises(ParameterError, match=r"mine_hard_negatives\.margin"):
        mine_hard_negatives(heat, margin=-3)
    with pytest.raises(ParameterError, match=r"mine_hard_negatives\.tumor"):
        mine_hard_negatives(heat, tumor="tumor.xml")
    with pytest.raises(ParameterError, match=r"mine_hard_negatives\.heatmap"):
        mine_hard_negatives(Raster(np.zeros((2, 2)), 64, (128, 128)))  # type: ignore[arg-type]
    other = Raster(np.zeros((4, 4), bool), 64, (256, 256))
    with pytest.raises(GeometryError, match="another slide's mask"):
        mine_hard_negatives(heat, tumor=other)


# --- PatchStore.add_patches -----------------------------------------------------------------


class FailingSlide(ArraySlide):
    """An ArraySlide whose region reads fail after a number of them."""

    def __init__(self, *args: Any, fail_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        with self._lock:
            self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                raise OSError("simulated read failure")
        return super().read_region(location, level, size)


def image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full((512, 640, 3), 235, np.uint8)
    out[32:480, 32:608] = rng.integers(60, 200, (448, 576, 3), dtype=np.uint8)
    return out


def slides(fail_after: int | None = None) -> list[FailingSlide]:
    return [
        FailingSlide(image(i), mpp=0.5, name=name, fail_after=fail_after)
        for i, name in enumerate(["tumor-a", "normal-b"])
    ]


def make_store(path: Path, chunk_patches: int = 4) -> PatchStore:
    items = slides()
    tumor = Raster(np.zeros((32, 40), bool), 16, (640, 512))
    tumor.array[10:20, 10:20] = True
    tissue = [TissueMask(np.ones((32, 40), bool), 16, (640, 512)) for _ in items]
    sampler = PatchSampler(n_tumor=6, n_normal=5, n_normal_normal_slide=7, patch_size=32)
    return PatchStore.build(
        path,
        items,
        sampler,
        tumor_masks=[tumor, None],
        tissue_masks=tissue,
        seed=5,
        chunk_patches=chunk_patches,
        progress=False,
    )


BOXES = np.array([[64, 64, 32, 32], [96, 64, 32, 32], [400, 300, 32, 32], [0, 480, 32, 32]])


def test_added_patches_are_the_slides_pixels_and_ordinary_normal_patches(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    n = len(store)
    before = store.read(np.arange(n))
    slide = slides()[1]
    assert store.add_patches(slide, BOXES) == 4
    assert len(store) == n + 4 and store.is_complete and store.extracted.all()
    coords = PatchCoords(
        BOXES[:, 0], BOXES[:, 1], level=0, size=32, downsample=1.0, slide_dimensions=(640, 512)
    )
    expected = np.stack([read_patch(slide, coords, i) for i in range(4)])
    np.testing.assert_array_equal(store.read(np.arange(n, n + 4)), expected)
    np.testing.assert_array_equal(store.read(np.arange(n)), before)
    assert store.labels[n:].tolist() == [0, 0, 0, 0]
    assert store.slide_index[n:].tolist() == [1, 1, 1, 1]
    assert store.x[n:].tolist() == BOXES[:, 0].tolist()
    assert store.y[n:].tolist() == BOXES[:, 1].tolist()
    assert np.isnan(store.tissue[n:]).all()
    assert (store.sources[:n] == "sampled").all() and (store.sources[n:] == "hard_negative").all()
    # Reopened, read in a mixed order, and through the batches training reads.
    again = PatchStore(store.path)
    order = np.array([n + 3, 0, n, n - 1, n + 3])
    wanted = np.stack([expected[3], before[0], expected[0], before[n - 1], expected[3]])
    np.testing.assert_array_equal(again.read(order), wanted)
    seen = np.concatenate([labels for _, labels in again.iter_batches(5)])
    assert seen.tolist() == again.labels.tolist() and len(seen) == n + 4


def test_adding_again_adds_nothing_and_boxes_are_read_at_the_store_resolution(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "s.zarr")
    n = len(store)
    slide = slides()[0]
    assert store.add_patches(slide, BOXES[:2], source="mined") == 2
    assert store.add_patches(slide, BOXES) == 2  # the first two are there already
    assert store.add_patches(slide, BOXES) == 0
    assert len(PatchStore(store.path)) == n + 4
    # A box of another size is read as the store's patch centred on it; a repeated box once.
    big = np.array([[200, 200, 64, 64], [200, 200, 64, 64]])
    assert store.add_patches(slide, big, label="tumor", source="mined") == 1
    assert (store.x[-1], store.y[-1], store.labels[-1]) == (216, 216, 1)
    assert sorted(set(store.sources[n:].tolist())) == ["hard_negative", "mined"]
    # The planned patches are never added again either.
    planned = np.array([[store.x[0], store.y[0], 32, 32]])
    assert store.add_patches(slides()[int(store.slide_index[0])], planned) == 0


def test_an_interrupted_add_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", chunk_patches=2)
    n = len(store)
    before = sorted(p.relative_to(store.path) for p in store.path.rglob("*"))
    failing = slides(fail_after=3)[1]  # fails on the 4th read: the 2nd chunk is half-written
    with pytest.raises(OSError, match="simulated"):
        store.add_patches(failing, BOXES)
    after = sorted(
        p.relative_to(store.path) for p in store.path.rglob("*") if p.name != "additions"
    )
    assert after == before  # no partial group, no temporary sibling
    assert len(store) == n and len(PatchStore(store.path)) == n
    assert store.add_patches(slides()[1], BOXES) == 4  # and it resumes cleanly


def test_an_empty_set_warns_and_adds_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    n = len(store)
    with pytest.warns(UserWarning, match="no boxes given for slide 'normal-b'"):
        assert store.add_patches(slides()[1], np.zeros((0, 4))) == 0
    with pytest.warns(UserWarning, match="nothing added"):
        assert store.add_patches(slides()[1], []) == 0
    assert len(PatchStore(store.path)) == n


def test_add_patches_bad_input(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    slide = slides()[1]
    stranger = ArraySlide(image(0), mpp=0.5, name="other")
    with pytest.raises(ParameterError, match="'other' is not one of the slides"):
        store.add_patches(stranger, BOXES)
    resized = ArraySlide(image(0)[:256], mpp=0.5, name="normal-b")
    with pytest.raises(GeometryError, match="640x256 level-0 pixels"):
        store.add_patches(resized, BOXES)
    with pytest.raises(ParameterError, match="add_patches: label"):
        store.add_patches(slide, BOXES, label="benign")
    with pytest.raises(ParameterError, match="add_patches: label"):
        store.add_patches(slide, BOXES, label=2)
    with pytest.raises(ParameterError, match="add_patches: label"):
        store.add_patches(slide, BOXES, label=True)
    with pytest.raises(ParameterError, match=r"\(n, 4\) array .* got str"):
        store.add_patches(slide, "boxes.csv")
    with pytest.raises(ParameterError, match="source must be a non-empty name"):
        store.add_patches(slide, BOXES, source="sampled")
    with pytest.raises(ParameterError, match=r"\(n, 4\) array"):
        store.add_patches(slide, [[1, 2, 3]])
    with pytest.raises(ParameterError, match="positive width"):
        store.add_patches(slide, [[1, 2, 0, 32]])
    with pytest.raises(GeometryError, match="centre outside the slide"):
        store.add_patches(slide, [[700, 10, 32, 32]])


def test_corrupt_additions_are_reported(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    store.add_patches(slides()[1], BOXES)
    (store.path / "additions" / "000000" / "x" / "zarr.json").write_text("{")
    with pytest.raises(PatchStoreError, match=r"added patches .* are corrupt"):
        PatchStore(store.path)


def test_a_store_with_additions_resumes_its_build(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = make_store(path)
    store.add_patches(slides()[1], BOXES)
    again = make_store(path)  # build() with the same arguments: resumed, nothing re-planned
    assert len(again) == len(store) and (again.sources == "hard_negative").sum() == 4


# --- add_hard_negatives -----------------------------------------------------------------------


class Redness:
    """A "first-round model": calls red patches tumor."""

    name = "redness"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return (batch[..., 0].mean(axis=(1, 2)) > 150).astype(np.float32)


def test_add_hard_negatives_over_slides(tmp_path: Path) -> None:
    rgb = np.full((256, 384, 3), 235, np.uint8)
    rgb[:, 64:] = (120, 80, 160)  # tissue
    rgb[0:64, 128:256] = (200, 60, 120)  # red, "tumor" to the model: two patches
    rgb[128:192, 320:384] = (200, 60, 120)  # and a real tumor patch, annotated
    slide = ArraySlide(rgb, mpp=1.0, name="slide-1")
    tumor = Raster(np.zeros((4, 6), bool), 64, (384, 256))
    tumor.array[2, 5] = True
    store = PatchStore.build(
        tmp_path / "p.zarr",
        [slide],
        PatchSampler(n_tumor=2, n_normal=2, patch_size=64),
        tumor_masks=[tumor],
        masker=TissueMasker(level=0),
        seed=0,
        progress=False,
    )
    gen = HeatmapGenerator(Redness(), patch_size=64, masker=TissueMasker(level=0), progress=False)
    added = add_hard_negatives(
        store, [slide], gen, tumors=[tumor], heatmap_dir=tmp_path / "maps", threshold=0.5
    )
    assert added == {"slide-1": 2}
    assert (tmp_path / "maps" / "slide-1.zarr").is_dir()
    store = PatchStore(store.path)
    hn = store.sources == "hard_negative"
    assert sorted(zip(store.x[hn].tolist(), store.y[hn].tolist(), strict=True)) == [
        (128, 0),
        (192, 0),
    ]
    assert (store.labels[hn] == 0).all()
    # Again: the stored heatmaps are reused and nothing is added twice.
    assert add_hard_negatives(
        store, [slide], gen, tumors=[tumor], heatmap_dir=tmp_path / "maps"
    ) == {"slide-1": 0}
    # With given heatmaps and nothing above the threshold: a warning, the store unchanged.
    heat = Heatmap.load(tmp_path / "maps" / "slide-1.zarr")
    calm = Heatmap(
        np.where(np.isfinite(heat.array), 0.1, np.nan),
        heat.downsample,
        heat.slide_dimensions,
        tissue_mask=heat.tissue_mask,
        info=heat.info,
        mpp=heat.mpp,
    )
    with pytest.warns(UserWarning, match=r"no hard negatives at p >= 0\.5 on 1 slide"):
        assert add_hard_negatives(store, [slide], [calm], tumors=[tumor]) == {"slide-1": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ParameterError, match="1 heatmaps for 2 slides"):
            add_hard_negatives(store, [slide, slide], [heat])
        with pytest.raises(ParameterError, match="tumors has 2 entries for 1 slides"):
            add_hard_negatives(store, [slide], [heat], tumors=[None, None])


@pytest.mark.slow
@pytest.mark.tf
def test_training_reads_added_patches_as_normal_patches(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from cervixwsi.models import patch_dataset

    store = make_store(tmp_path / "s.zarr")
    n = len(store)
    store.add_patches(slides()[1], BOXES)
    batches = list(patch_dataset(store, batch_size=64, shuffle=False))
    labels = np.concatenate([np.asarray(y) for _, y in batches])
    pixels = np.concatenate([np.asarray(x) for x, _ in batches])
    assert len(labels) == n + 4 and labels[n:].tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(pixels[n:], store.read(np.arange(n, n + 4)))


def test_a_store_made_before_artifact_masks_resumes_and_reports_its_masker(
    tmp_path: Path,
) -> None:
    """Stores record the tissue masker's parameters; ``artifacts`` came later."""
    import zarr

    from cervixwsi.tissue import ArtifactMasker

    rgb = np.full((512, 512, 3), 235, np.uint8)
    rgb[64:448, 64:448] = (190, 100, 170)
    slide = ArraySlide(rgb, mpp=1.0, name="demo")
    sampler = PatchSampler(n_normal_normal_slide=4, patch_size=64)
    path = tmp_path / "p.zarr"
    masker = TissueMasker(level=0)
    PatchStore.build(path, [slide], sampler, masker=masker, progress=False)
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    del attrs["identity"]["masker"]["artifacts"]  # as written before TissueMasker.artifacts
    group.attrs.put(attrs)
    assert len(PatchStore.build(path, [slide], sampler, masker=masker, progress=False)) == 4
    with_artifacts = TissueMasker(level=0, artifacts=ArtifactMasker())
    built = PatchStore.build(
        tmp_path / "a.zarr", [slide], sampler, masker=with_artifacts, progress=False
    )
    assert built.masker == with_artifacts
