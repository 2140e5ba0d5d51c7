"""Heatmaps: exact geometry, resumable runs, predictor checks, persistence, pictures."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zarr

from cervixwsi.errors import (
    HeatmapError,
    LevelError,
    ParameterError,
    PredictorError,
    SlideReadError,
    StoreMismatchError,
)
from cervixwsi.geometry import Raster, resolve_level
from cervixwsi.heatmap import Heatmap, HeatmapGenerator, HeatmapInfo, PatchPredictor
from cervixwsi.heatmap._overlay import colormap_rgb, overlay_key
from cervixwsi.slide import ArraySlide, Slide
from cervixwsi.tissue import TissueMask

# --- a slide whose pixels say where they are, and a predictor that reads it -----------


def position_image(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Pixel (x, y) holds R = x % 256, G = y % 256, B = 16 * (x // 256) + y // 256."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = x % 256
    image[..., 1] = y % 256
    image[..., 2] = 16 * (x // 256) + y // 256
    return image


def decode(patch: npt.NDArray[np.uint8]) -> tuple[int, int] | None:
    """The level-0 (x, y) of a patch's top-left pixel, or None for a patch not from the slide."""
    r, g, b = (int(v) for v in patch[0, 0])
    x, y = r + 256 * (b // 16), g + 256 * (b % 16)
    right, below = patch[0, 1], patch[1, 0]
    if int(right[0]) != (x + 1) % 256 or int(below[1]) != (y + 1) % 256:
        return None  # e.g. the generator's probe batch
    return x, y


def f(x: int, y: int) -> float:
    """The 'tumor probability' the test predictor gives the patch at (x, y)."""
    return ((x // 7 + 3 * (y // 11)) % 101) / 100


class PositionPredictor:
    """Predicts f(x, y) of each patch's position and records every position it saw."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen: list[tuple[int, int]] = []
        self.calls = 0
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        assert batch.dtype == np.uint8
        assert batch.ndim == 4
        assert batch.shape[-1] == 3
        positions = [decode(p) for p in batch]
        if all(p is not None for p in positions):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError("simulated crash")
            self.calls += 1
            self.seen.extend(p for p in positions if p is not None)
        return np.array([f(*p) if p else 0.5 for p in positions], np.float32)


def full_tissue(width: int, height: int) -> TissueMask:
    return TissueMask(np.ones((height // 4 + 1, width // 4 + 1), bool), 4, (width, height))


WIDTH, HEIGHT = 1000, 700  # not multiples of the patch


def expected_map(stride: int, patch: int = 256) -> npt.NDArray[np.float64]:
    rows, cols = -(-HEIGHT // stride), -(-WIDTH // stride)
    k = patch // stride
    out = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            values = [
                f((c - dc) * stride, (r - dr) * stride)
                for dr in range(k)
                for dc in range(k)
                if r - dr >= 0 and c - dc >= 0
            ]
            out[r, c] = np.mean(values)
    return out


@pytest.fixture
def position_slide() -> ArraySlide:
    return ArraySlide(position_image(WIDTH, HEIGHT), mpp=0.5, name="positions")


# --- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [256, 128])
def test_heatmap_is_the_expected_function_of_position(
    position_slide: ArraySlide, stride: int
) -> None:
    predictor = PositionPredictor()
    gen = HeatmapGenerator(predictor, stride=stride, min_tissue=0.0, batch_size=5, progress=False)
    heat = gen.generate(position_slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    assert heat.downsample == stride
    assert heat.slide_dimensions == (WIDTH, HEIGHT)
    assert heat.mpp == 0.5
    assert heat.pixel_size_um == stride * 0.5
    np.testing.assert_allclose(heat.array, expected_map(stride), atol=1e-6)
    # every grid position whose patch starts inside the slide, exactly once
    starts = {(x, y) for x in range(0, WIDTH, stride) for y in range(0, HEIGHT, stride)}
    assert sorted(predictor.seen) == sorted(starts)


def test_positions_without_tissue_are_nan_and_not_predicted(position_slide: ArraySlide) -> None:
    tissue = np.zeros((175, 250), bool)
    tissue[:, 125:] = True  # right half (level-0 x >= 500)
    mask = TissueMask(tissue, 4, (WIDTH, HEIGHT))
    predictor = PositionPredictor()
    heat = HeatmapGenerator(predictor, progress=False).generate(position_slide, tissue_mask=mask)
    assert np.isnan(heat.array[:, :2]).all()  # columns 0-1 cover x < 512: < 50 % tissue
    assert np.isfinite(heat.array[:, 2:]).all()
    assert {x for x, _ in predictor.seen} == {512, 768}
    np.testing.assert_array_equal(heat.tissue_mask.array, np.isfinite(heat.array))


def test_a_blank_slide_gives_an_all_nan_heatmap_and_a_warning() -> None:
    slide = ArraySlide(np.full((600, 900, 3), 242, np.uint8), mpp=0.5, name="glass")
    predictor = PositionPredictor()
    with pytest.warns(UserWarning, match="no patch"):
        heat = HeatmapGenerator(predictor, progress=False).generate(slide)
    assert heat.shape == (3, 4)
    assert np.isnan(heat.array).all()
    assert predictor.calls == 0


# --- resumption ------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_without_repeating_or_losing_positions(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    reference = HeatmapGenerator(
        PositionPredictor(), stride=128, min_tissue=0.0, batch_size=4, progress=False
    ).generate(position_slide, tissue_mask=tissue)

    crashing = PositionPredictor(fail_after=3)
    gen = HeatmapGenerator(crashing, stride=128, min_tissue=0.0, batch_size=4, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        gen.generate(position_slide, out=out, tissue_mask=tissue)
    assert len(crashing.seen) == 12
    with pytest.raises(HeatmapError, match="unfinished"):
        Heatmap.load(out)

    second = PositionPredictor()
    gen = HeatmapGenerator(second, stride=128, min_tissue=0.0, batch_size=4, progress=False)
    heat = gen.generate(position_slide, out=out, tissue_mask=tissue)
    assert not set(crashing.seen) & set(second.seen)
    assert len(crashing.seen) + len(second.seen) == len(set(crashing.seen) | set(second.seen))
    assert len(set(crashing.seen) | set(second.seen)) == 8 * 6
    np.testing.assert_array_equal(heat.array, reference.array)
    np.testing.assert_array_equal(Heatmap.load(out).array, reference.array)

    # A finished run run again predicts nothing more.
    third = PositionPredictor()
    HeatmapGenerator(third, stride=128, min_tissue=0.0, batch_size=4, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    assert third.seen == []


def test_a_run_store_appears_whole_with_the_umasks_permissions(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        HeatmapGenerator(PositionPredictor(), min_tissue=0.0, progress=False).generate(
            position_slide, out=tmp_path / "run.zarr", tissue_mask=full_tissue(WIDTH, HEIGHT)
        )
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["run.zarr"]  # no temporary left beside it
    assert (tmp_path / "run.zarr").stat().st_mode & 0o777 == 0o755


class OtherPredictor(PositionPredictor):
    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return 1 - super().predict(batch)


def test_another_predictor_or_other_parameters_into_the_same_out_is_refused(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    HeatmapGenerator(PositionPredictor(), min_tissue=0.0, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    with pytest.raises(StoreMismatchError, match="predictor"):
        HeatmapGenerator(OtherPredictor(), min_tissue=0.0, progress=False).generate(
            position_slide, out=out, tissue_mask=tissue
        )
    with pytest.raises(StoreMismatchError, match="stride"):
        HeatmapGenerator(PositionPredictor(), stride=128, min_tissue=0.0, progress=False).generate(
            position_slide, out=out, tissue_mask=tissue
        )
    # ... and what was there is intact.
    assert np.isfinite(Heatmap.load(out).array).all()


class ScaledPredictor(PositionPredictor):
    """PositionPredictor's values times ``scale``: same name, other outputs for ``scale != 1``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return (super().predict(batch) * self.scale).astype(np.float32)


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones (temporaries) included."""
    return sorted(p.name for p in folder.iterdir())


def test_another_configuration_is_refused_with_every_difference(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    HeatmapGenerator(PositionPredictor(), min_tissue=0.0, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    other = HeatmapGenerator(ScaledPredictor(0.5), stride=128, min_tissue=0.0, progress=False)
    with pytest.raises(StoreMismatchError) as refused:
        other.generate(position_slide, out=out, tissue_mask=tissue)
    message = str(refused.value)
    assert message.startswith(
        f"the heatmap store {out} was made with other stride: 256.0 -> 128.0, "
    )
    assert "predictor: '" in message and "PositionPredictor' -> '" in message
    assert "ScaledPredictor'" in message
    assert "plan (the patch positions to predict" in message
    assert (
        "probe predictions ([0.5, 0.5, 0.5, 0.5] -> [0.25, 0.25, 0.25, 0.25]: "
        "the predictor differs on a fixed probe batch)" in message
    )
    assert message.endswith("; use another out= or delete it")

    assert np.isfinite(Heatmap.load(out).array).all()  # what was there is intact

    # The same settings and predictor class with other outputs: only the probe differs.
    out = tmp_path / "scaled.zarr"
    HeatmapGenerator(ScaledPredictor(1.0), min_tissue=0.0, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    with pytest.raises(StoreMismatchError) as refused:
        HeatmapGenerator(ScaledPredictor(0.5), min_tissue=0.0, progress=False).generate(
            position_slide, out=out, tissue_mask=tissue
        )
    assert str(refused.value) == (
        f"the heatmap store {out} was made with other probe predictions ([0.5, 0.5, 0.5, 0.5] "
        "-> [0.25, 0.25, 0.25, 0.25]: the predictor differs on a fixed probe batch); "
        "use another out= or delete it"
    )
    # ... while outputs within the probe's tolerance are the same predictor.
    same = ScaledPredictor(1.000001)
    HeatmapGenerator(same, min_tissue=0.0, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    assert same.seen == []  # the finished run was reopened, nothing predicted again


def test_a_folder_that_is_not_a_heatmap_store_is_refused_as_out(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    gen = HeatmapGenerator(PositionPredictor(), min_tissue=0.0, progress=False)
    with pytest.raises(StoreMismatchError, match="exists and is not a zarr store") as refused:
        gen.generate(position_slide, out=folder, tissue_mask=full_tissue(WIDTH, HEIGHT))
    assert str(folder) in str(refused.value)
    assert listing(folder) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_run_interrupted_while_its_store_is_made_leaves_nothing(
    position_slide: ArraySlide, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    real = zarr.Group.create_array

    def interrupted(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "plan_done":  # the plan's arrays are half laid out
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    predictor = PositionPredictor()
    gen = HeatmapGenerator(predictor, min_tissue=0.0, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(zarr.Group, "create_array", interrupted)
        with pytest.raises(KeyboardInterrupt):
            gen.generate(position_slide, out=out, tissue_mask=tissue)
    assert listing(tmp_path) == []  # no store, no temporary sibling
    assert predictor.seen == []
    heat = gen.generate(position_slide, out=out, tissue_mask=tissue)  # a rerun starts afresh
    np.testing.assert_allclose(Heatmap.load(out).array, expected_map(256), atol=1e-6)
    np.testing.assert_array_equal(heat.array, Heatmap.load(out).array)
    assert listing(tmp_path) == ["run.zarr"]


def as_format_1(path: Path) -> None:
    """Rewrite a store's attributes in the layout of heatmap format 1 (cervixwsi <= 0.x)."""
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    identity = dict(attrs.pop("identity"))
    del attrs["cervixwsi_version"]
    attrs.update(format_version=1, signature=identity)
    if "probe" in identity:
        attrs["probe"] = identity.pop("probe")
    group.attrs.put(attrs)


def test_a_format_1_run_store_is_resumed_as_it_is(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    crashing = PositionPredictor(fail_after=2)
    gen = HeatmapGenerator(crashing, min_tissue=0.0, batch_size=3, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        gen.generate(position_slide, out=out, tissue_mask=tissue)
    as_format_1(out)
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert set(attrs) == {"format", "format_version", "complete", "signature", "probe"}
    assert attrs["format_version"] == 1 and attrs["complete"] is False
    with pytest.raises(HeatmapError, match="unfinished"):
        Heatmap.load(out)
    with pytest.raises(StoreMismatchError, match=r"min_tissue: 0\.0 -> 0\.25") as refused:
        HeatmapGenerator(ScaledPredictor(0.5), min_tissue=0.25, progress=False).generate(
            position_slide, out=out, tissue_mask=tissue
        )
    assert "fixed probe batch" in str(refused.value)

    second = PositionPredictor()
    gen = HeatmapGenerator(second, min_tissue=0.0, batch_size=3, progress=False)
    heat = gen.generate(position_slide, out=out, tissue_mask=tissue)
    assert len(crashing.seen) == 6 and len(second.seen) == 4 * 3 - 6
    assert not set(crashing.seen) & set(second.seen)
    np.testing.assert_allclose(heat.array, expected_map(256), atol=1e-6)
    np.testing.assert_array_equal(Heatmap.load(out).array, heat.array)
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert attrs["format_version"] == 1 and attrs["complete"] is True  # still format 1
    assert "identity" not in attrs and attrs["signature"]["stride"] == 256.0


def test_a_run_recorded_under_a_private_module_path_resumes(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    # Stores made before a package was split record e.g. cervixwsi.models._training.X:
    # the predictor is the same class, so the run must resume, not be refused.
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    crashing = PositionPredictor(fail_after=2)
    gen = HeatmapGenerator(crashing, min_tissue=0.0, batch_size=3, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        gen.generate(position_slide, out=out, tissue_mask=tissue)
    group = zarr.open_group(str(out), mode="r+")
    identity = dict(group.attrs["identity"])
    module, _, cls = identity["predictor"].rpartition(".")
    identity["predictor"] = f"{module}._old_private_module.{cls}"
    group.attrs["identity"] = identity
    second = PositionPredictor()
    heat = HeatmapGenerator(second, min_tissue=0.0, batch_size=3, progress=False).generate(
        position_slide, out=out, tissue_mask=tissue
    )
    assert len(crashing.seen) + len(second.seen) == 4 * 3
    np.testing.assert_allclose(heat.array, expected_map(256), atol=1e-6)


# --- bad predictors and parameters -----------------------------------------------------


class BadPredictor:
    def __init__(self, values: Any) -> None:
        self.values = values

    def predict(self, batch: npt.NDArray[np.uint8]) -> Any:
        return self.values(len(batch))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (lambda n: np.full(n, np.nan), "NaN"),
        (lambda n: np.full(n, 1.5), r"\[1.5, 1.5\]"),
        (lambda n: np.zeros(n + 1), "one probability per patch"),
        (lambda n: np.zeros((n, 2)), "one probability per patch"),
    ],
)
def test_a_predictor_returning_nonsense_is_named_with_its_batch(
    position_slide: ArraySlide, values: Any, match: str
) -> None:
    gen = HeatmapGenerator(BadPredictor(values), min_tissue=0.0, progress=False)
    with pytest.raises(PredictorError, match=match) as info:
        gen.generate(position_slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    assert "batch 0" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 100}, "HeatmapGenerator.stride must be a positive divisor"),
        ({"stride": 0}, "HeatmapGenerator.stride must be an integer >= 1, got 0"),
        ({"stride": 128.0}, "HeatmapGenerator.stride must be an integer"),
        ({"batch_size": 0}, "HeatmapGenerator.batch_size must be an integer >= 1, got 0"),
        ({"batch_size": True}, "HeatmapGenerator.batch_size must be an integer"),
        ({"workers": 2.0}, "HeatmapGenerator.workers"),
        ({"prefetch": -1}, "HeatmapGenerator.prefetch"),
        ({"patch_size": "256"}, "HeatmapGenerator.patch_size"),
        ({"min_tissue": 1.5}, "HeatmapGenerator.min_tissue"),
        ({"level": 0, "mpp": 0.5}, "not both"),
        ({"mpp": -1.0}, "mpp"),
    ],
)
def test_bad_parameters(position_slide: ArraySlide, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        HeatmapGenerator(PositionPredictor(), progress=False, **kwargs).generate(
            position_slide, tissue_mask=full_tissue(WIDTH, HEIGHT)
        )


def test_numpy_integers_are_integers(position_slide: ArraySlide) -> None:
    gen = HeatmapGenerator(
        PositionPredictor(),
        stride=np.int64(128),
        batch_size=np.int32(7),
        workers=np.uint8(2),
        min_tissue=np.float32(0.0),
        progress=False,
    )
    heat = gen.generate(position_slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    np.testing.assert_allclose(heat.array, expected_map(128), atol=1e-6)


@pytest.mark.parametrize(
    ("slide", "kwargs", "match"),
    [
        (ArraySlide(position_image(512, 512), mpp=0.5), {"level": 3}, "level 3 is not in slide"),
        (ArraySlide(position_image(512, 512)), {"mpp": 1.0}, "records no µm per pixel"),
    ],
)
def test_a_level_the_slide_cannot_give_is_a_level_error(
    slide: ArraySlide, kwargs: dict[str, Any], match: str
) -> None:
    gen = HeatmapGenerator(PositionPredictor(), progress=False, **kwargs)
    with pytest.raises(LevelError, match=match) as info:
        gen.generate(slide, tissue_mask=full_tissue(512, 512))
    assert "HeatmapGenerator" in str(info.value)
    assert isinstance(info.value, ParameterError)


@pytest.mark.parametrize("mpp", [0.5, 0.9, 1.0, 1.5, 2.0, 8.0])
def test_the_level_for_an_mpp_is_the_one_resolve_level_chooses(mpp: float) -> None:
    levels = [position_image(1024, 768)]
    levels += [halve(levels[-1]), halve(halve(levels[-1]))]
    slide = ArraySlide(levels, mpp=(0.5, 0.52), name="pyramid")
    tissue = TissueMask(np.ones((192, 256), bool), 4, (1024, 768))
    heat = HeatmapGenerator(
        PositionPredictor(), mpp=mpp, patch_size=64, min_tissue=0.0, progress=False
    ).generate(slide, tissue_mask=tissue)
    # Independently: the coarsest level whose µm/px is at most mpp (1 %) on both axes.
    level = max(k for k in range(3) if k == 0 or 0.52 * 2**k <= mpp * 1.01)
    assert heat.info.level == level == resolve_level(slide, mpp=mpp)
    assert heat.info.level_downsample == slide.level_downsamples[level]
    assert heat.downsample == 64 * slide.level_downsamples[level]


def halve(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(image[::2, ::2])


def test_prefetching_is_bounded(position_slide: ArraySlide) -> None:
    class CountingSlide(ArraySlide):
        reads = 0

        def read_region(self, *args: Any, **kwargs: Any) -> Any:
            type(self).reads += 1
            return super().read_region(*args, **kwargs)

    slide = CountingSlide(position_image(WIDTH, HEIGHT), mpp=0.5)
    ahead: list[int] = []

    class Watching(PositionPredictor):
        def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            ahead.append(CountingSlide.reads - (self.calls + 1) * 2)
            return super().predict(batch)

    HeatmapGenerator(
        Watching(), stride=64, batch_size=2, prefetch=3, min_tissue=0.0, progress=False
    ).generate(slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    assert len(ahead) == 16 * 11 // 2
    assert max(ahead) <= 3 * 2  # never more than `prefetch` batches read ahead


class RecordingSlide(ArraySlide):
    """Counts the reads of each position and the threads that made them; can be slow or fail."""

    def __init__(self, *args: Any, slow_outside_main: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slow = slow_outside_main
        self.fail_at: tuple[int, int] | None = None
        self.reads: dict[tuple[int, int], int] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def read_region(self, location: Any, level: Any, size: Any) -> Any:
        thread = threading.current_thread()
        if self.slow and thread is not threading.main_thread():
            time.sleep(self.slow)
        with self._lock:
            key = (int(location[0]), int(location[1]))
            self.reads[key] = self.reads.get(key, 0) + 1
            self.threads.add(thread.name)
        if key == self.fail_at:
            raise SlideReadError(f"simulated corrupt tile at {key}")
        return super().read_region(location, level, size)


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("heatmap-read")]


@pytest.mark.parametrize(("workers", "prefetch"), [(1, 1), (2, 1), (3, 2), (4, 4), (8, 3)])
def test_every_patch_is_read_once_and_predicted_in_order(workers: int, prefetch: int) -> None:
    slide = RecordingSlide(position_image(WIDTH, HEIGHT), mpp=0.5)
    predictor = PositionPredictor()
    heat = HeatmapGenerator(
        predictor,
        stride=64,
        batch_size=7,
        workers=workers,
        prefetch=prefetch,
        min_tissue=0.0,
        progress=False,
    ).generate(slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    np.testing.assert_allclose(heat.array, expected_map(64), atol=1e-6)
    order = [(x, y) for y in range(0, HEIGHT, 64) for x in range(0, WIDTH, 64)]
    assert predictor.seen == order  # the plan's order, batch after batch
    assert slide.reads == dict.fromkeys(order, 1)
    assert reader_threads() == []  # the reading threads end with the run


def test_the_caller_reads_what_lagging_threads_have_not_begun() -> None:
    slide = RecordingSlide(position_image(WIDTH, HEIGHT), mpp=0.5, slow_outside_main=0.02)
    predictor = PositionPredictor()
    heat = HeatmapGenerator(
        predictor, stride=128, batch_size=6, workers=1, min_tissue=0.0, progress=False
    ).generate(slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    np.testing.assert_allclose(heat.array, expected_map(128), atol=1e-6)
    assert {"MainThread", "heatmap-read-0"} <= slide.threads  # both read
    assert set(slide.reads.values()) == {1}


@pytest.mark.parametrize("workers", [1, 3])
def test_a_read_error_is_raised_at_its_batch_after_the_earlier_batches_are_stored(
    tmp_path: Path, workers: int
) -> None:
    out = tmp_path / "run.zarr"
    tissue = full_tissue(WIDTH, HEIGHT)
    slide = RecordingSlide(position_image(WIDTH, HEIGHT), mpp=0.5)
    slide.fail_at = (512, 128)  # position 8 + 4 = 12 of the 8 x 6 grid: batch 3 of 4
    first = PositionPredictor()
    gen = HeatmapGenerator(
        first, stride=128, batch_size=4, workers=workers, min_tissue=0.0, progress=False
    )
    with pytest.raises(SlideReadError, match=r"simulated corrupt tile at \(512, 128\)"):
        gen.generate(slide, out=out, tissue_mask=tissue)
    assert len(first.seen) == 12  # batches 0-2 predicted and stored
    assert reader_threads() == []

    slide.fail_at = None
    second = PositionPredictor()
    gen = HeatmapGenerator(second, stride=128, batch_size=4, min_tissue=0.0, progress=False)
    heat = gen.generate(slide, out=out, tissue_mask=tissue)
    assert not set(first.seen) & set(second.seen)
    assert len(first.seen) + len(second.seen) == 8 * 6
    np.testing.assert_allclose(heat.array, expected_map(128), atol=1e-6)


def test_reading_threads_end_when_the_predictor_fails(position_slide: ArraySlide) -> None:
    gen = HeatmapGenerator(
        PositionPredictor(fail_after=2),
        stride=64,
        batch_size=3,
        workers=4,
        min_tissue=0.0,
        progress=False,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        gen.generate(position_slide, tissue_mask=full_tissue(WIDTH, HEIGHT))
    assert reader_threads() == []


def test_protocol_is_structural() -> None:
    assert isinstance(PositionPredictor(), PatchPredictor)
    assert not isinstance(object(), PatchPredictor)


# --- the Heatmap object ----------------------------------------------------------------------


def small_heatmap(mpp: float | None = 0.25) -> Heatmap:
    p = np.array([[0.0, 0.5, np.nan], [1.0, 0.25, 0.75]], np.float32)
    info = HeatmapInfo("slide-7", 256, 0, 1.0, 256.0, 0.5, "test")
    return Heatmap(p, 256, (700, 500), tissue_mask=np.isfinite(p), info=info, mpp=mpp)


def test_save_load_round_trip(tmp_path: Path) -> None:
    heat = small_heatmap()
    back = Heatmap.load(heat.save(tmp_path / "h.zarr"))
    np.testing.assert_array_equal(back.array, heat.array)
    np.testing.assert_array_equal(back.tissue_mask.array, heat.tissue_mask.array)
    assert back.info == heat.info
    assert (back.downsample, back.slide_dimensions, back.mpp) == (256, (700, 500), 0.25)


def other_heatmap() -> Heatmap:
    p = np.array([[0.9, 0.1]], np.float32)
    info = HeatmapInfo("slide-8", 256, 0, 1.0, 256.0, 0.5, "other")
    return Heatmap(p, 256, (500, 200), tissue_mask=[[True, True]], info=info, mpp=0.5)


def write_format_1_heatmap(path: Path, heat: Heatmap) -> None:
    """A heatmap as Heatmap.save of heatmap format 1 wrote it."""
    group = zarr.open_group(str(path), mode="w")
    group.create_array("probability", data=heat.array, chunks=heat.shape)
    group.create_array("tissue", data=heat.tissue_mask.array, chunks=heat.shape)
    group.attrs.update(
        {
            "format": "cervixwsi.heatmap",
            "format_version": 1,
            "complete": True,
            "downsample": heat.downsample,
            "slide_dimensions": list(heat.slide_dimensions),
            "mpp": heat.mpp,
            "info": heat.info.to_json(),
            "signature": {},
        }
    )


def assert_same(a: Heatmap, b: Heatmap) -> None:
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.tissue_mask.array, b.tissue_mask.array)
    assert (a.info, a.downsample, a.slide_dimensions, a.mpp) == (
        b.info,
        b.downsample,
        b.slide_dimensions,
        b.mpp,
    )


def test_a_format_1_heatmap_loads_and_is_replaced_by_save(
    position_slide: ArraySlide, tmp_path: Path
) -> None:
    path = tmp_path / "old.zarr"
    heat = small_heatmap()
    write_format_1_heatmap(path, heat)
    assert_same(Heatmap.load(path), heat)
    # It is no run: generating into it is refused, naming what it does not record.
    with pytest.raises(StoreMismatchError, match=r"slide_id: \(not recorded\) -> 'positions'"):
        HeatmapGenerator(PositionPredictor(), min_tissue=0.0, progress=False).generate(
            position_slide, out=path, tissue_mask=full_tissue(WIDTH, HEIGHT)
        )
    assert_same(Heatmap.load(path), heat)
    other_heatmap().save(path)
    assert_same(Heatmap.load(path), other_heatmap())
    assert zarr.open_group(str(path), mode="r").attrs["format_version"] == 2
    assert listing(tmp_path) == ["old.zarr"]


def test_a_saved_heatmap_is_a_complete_store_of_the_layer(tmp_path: Path) -> None:
    path = small_heatmap().save(tmp_path / "h.zarr")
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs["format"] == "cervixwsi.heatmap" and attrs["format_version"] == 2
    assert attrs["identity"] == {} and attrs["complete"] is True
    assert listing(tmp_path) == ["h.zarr"]


def test_save_replaces_a_heatmap_store(position_slide: ArraySlide, tmp_path: Path) -> None:
    path = tmp_path / "h.zarr"
    small_heatmap().save(path)
    assert other_heatmap().save(path) == path
    assert_same(Heatmap.load(path), other_heatmap())
    assert listing(tmp_path) == ["h.zarr"]  # the old one and every temporary are gone
    # ... a run's store, finished or not, and an empty folder too.
    run = tmp_path / "run.zarr"
    crashing = HeatmapGenerator(
        PositionPredictor(fail_after=1), min_tissue=0.0, batch_size=4, progress=False
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.generate(position_slide, out=run, tissue_mask=full_tissue(WIDTH, HEIGHT))
    small_heatmap().save(run)
    assert_same(Heatmap.load(run), small_heatmap())
    assert not (run / "plan_done").exists()
    (tmp_path / "empty").mkdir()
    assert_same(Heatmap.load(small_heatmap().save(tmp_path / "empty")), small_heatmap())
    assert listing(tmp_path) == ["empty", "h.zarr", "run.zarr"]


def test_save_refuses_to_replace_what_is_not_a_heatmap_store(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "table.csv").write_text("a,b\n")
    with pytest.raises(HeatmapError, match="will not save a heatmap over") as refused:
        small_heatmap().save(folder)
    assert str(folder) in str(refused.value) and "table.csv" in str(refused.value)
    assert listing(folder) == ["table.csv"]
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(HeatmapError, match=r"file\.zarr, which is not a zarr store: it is a file"):
        small_heatmap().save(tmp_path / "file.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "someone.else"
    with pytest.raises(HeatmapError, match=r"it has the format 'someone\.else'"):
        small_heatmap().save(tmp_path / "other.zarr")
    assert listing(tmp_path) == ["file.zarr", "other.zarr", "results"]
    assert (tmp_path / "file.zarr").read_text() == "not a store"


def test_a_crash_while_saving_leaves_the_old_heatmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.zarr"
    small_heatmap().save(path)
    real = zarr.Group.create_array

    def failing(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tissue":  # after the probabilities were written
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Group, "create_array", failing)
        with pytest.raises(OSError, match="disk full"):
            other_heatmap().save(path)
    assert_same(Heatmap.load(path), small_heatmap())
    assert listing(tmp_path) == ["h.zarr"]

    # The rename of the new store into place fails once the old one is aside: it comes back.
    real_replace = Path.replace
    failed: list[Path] = []

    def replace(self: Path, target: Any) -> Path:
        if Path(target) == path and not failed:
            failed.append(self)
            raise OSError("rename failed")
        return real_replace(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "replace", replace)
        with pytest.raises(OSError, match="rename failed"):
            other_heatmap().save(path)
    assert failed and failed[0].name.startswith(".h.zarr.")
    assert_same(Heatmap.load(path), small_heatmap())
    assert listing(tmp_path) == ["h.zarr"]


def test_saved_stores_are_readable_by_all_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = small_heatmap().save(tmp_path / "h.zarr")
        other_heatmap().save(path)  # a replacement too
    finally:
        os.umask(old)
    entries = [path, *path.rglob("*")]
    assert len(entries) > 4
    for entry in entries:
        mode = entry.stat().st_mode & 0o777
        assert mode == (0o755 if entry.is_dir() else 0o644), (entry, oct(mode))


def test_loading_what_is_not_a_heatmap(tmp_path: Path) -> None:
    with pytest.raises(HeatmapError, match="no heatmap"):
        Heatmap.load(tmp_path / "missing.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{ not json")
    with pytest.raises(HeatmapError, match=r"junk\.zarr"):
        Heatmap.load(tmp_path / "junk.zarr")


def test_probabilities_outside_0_1_or_mismatched_tissue_are_refused() -> None:
    info = HeatmapInfo("s", 256, 0, 1.0, 256.0, 0.5, "t")
    with pytest.raises(HeatmapError, match=r"\[0, 1\]"):
        Heatmap(np.full((1, 1), 2.0), 256, (256, 256), tissue_mask=[[True]], info=info)
    with pytest.raises(HeatmapError, match="tissue mask shape"):
        Heatmap(np.zeros((1, 1)), 256, (256, 256), tissue_mask=np.ones((2, 2)), info=info)


def test_export_as_pyramid_opens_in_slide(tmp_path: Path) -> None:
    heat = small_heatmap()
    path = heat.to_pyramid(tmp_path / "heat.tif")
    with Slide(path) as slide:
        assert slide.dimensions == (3, 2)
        assert slide.mpp == pytest.approx((64.0, 64.0))
        gray = slide.read_region((0, 0), 0, (3, 2))[..., 0]
    np.testing.assert_array_equal(gray, [[0, 128, 0], [255, 64, 191]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.tif"]  # no temporary left


def test_export_as_pyramid_opens_in_openslide(tmp_path: Path, openslide: Any) -> None:
    path = small_heatmap().to_pyramid(tmp_path / "heat.tif")
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.dimensions == (3, 2)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(64.0)


NO_KEY: dict[str, Any] = {"colorbar": False, "legend": False, "scale_bar": False}


def test_overlay_colours_predicted_pixels_and_draws_the_ground_truth() -> None:
    heat = small_heatmap()
    thumb = np.full((50, 70, 3), 230, np.uint8)
    plain = heat.overlay(thumb, max_size=70, alpha=0.0, tissue_outline=False, **NO_KEY)
    np.testing.assert_array_equal(plain, thumb)
    coloured = heat.overlay(thumb, max_size=70, alpha=1.0, tissue_outline=False, **NO_KEY)
    assert coloured.shape == (50, 70, 3)
    # NaN pixel (top right) keeps the thumbnail; p = 1 (bottom left) is jet's dark red.
    np.testing.assert_array_equal(coloured[5, 65], [230, 230, 230])
    assert coloured[45, 5, 0] > 100 > coloured[45, 5, 2]
    gt = Raster(np.zeros((50, 70), bool), 10, (700, 500))
    gt.array[10:40, 10:40] = True
    with_gt = heat.overlay(
        thumb, max_size=70, alpha=0.0, tissue_outline=False, ground_truth=gt, **NO_KEY
    )
    green = (with_gt[..., 1] == 200) & (with_gt[..., 0] == 0)
    assert green.any()
    assert not green[20:30, 20:30].any()  # a contour, not a fill


def test_overlay_reads_the_thumbnail_of_a_slide_file(tmp_path: Path) -> None:
    from cervixwsi.slide import write_pyramid

    heat = small_heatmap()
    image = np.full((500, 700, 3), 230, np.uint8)
    image[:, :350] = (200, 60, 150)
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.5, tile_size=64)
    from_path = heat.overlay(path, max_size=70, alpha=0.0, tissue_outline=False, **NO_KEY)
    from_array = heat.overlay(image, max_size=70, alpha=0.0, tissue_outline=False, **NO_KEY)
    assert from_path.shape == (50, 70, 3)
    # JPEG tiles and a lower pyramid level vs raw pixels: equal away from the colour edge
    away = np.r_[0:33, 37:70]
    np.testing.assert_allclose(from_path[:, away], from_array[:, away], atol=12)


# --- the overlay's key: colour bar, legend, scale bar ---------------------------------------


def test_the_key_holds_the_colour_bar_the_outlines_drawn_and_a_scale_bar() -> None:
    heat = small_heatmap(mpp=0.25)  # 700 x 500 level-0 px
    key = overlay_key(heat, 700, ground_truth=True)  # 1 level-0 px = 0.25 µm per pixel
    assert key.colorbar == (0.0, 1.0)
    assert key.colorbar_label == "tumor probability"
    assert [label for label, _ in key.legend] == ["tissue", "ground truth"]
    assert dict(key.legend) == {"tissue": (255, 255, 255), "ground truth": (0, 200, 0)}
    # at most a fifth of 700 px = 35 µm: the longest round length is 20 µm, 80 px
    assert key.scale_bar is not None
    assert key.scale_bar.label == "20 µm"
    assert key.scale_bar.length_px == pytest.approx(80.0)
    assert [label for label, _ in overlay_key(heat, 700, tissue_outline=False).legend] == []
    bare = overlay_key(heat, 700, colorbar=False, legend=False, scale_bar=False)
    assert (bare.colorbar, bare.legend, bare.scale_bar) == (None, (), None)


@pytest.mark.parametrize(
    ("mpp", "width", "label", "length_px"),
    [
        (0.25, 70, "20 µm", 8.0),  # 10 level-0 px = 2.5 µm per pixel; at most 14 px = 35 µm
        (0.5, 70, "50 µm", 10.0),  # 5 µm per pixel, at most 70 µm
        (4.0, 70, "500 µm", 12.5),  # 40 µm per pixel, at most 560 µm
        (10.0, 70, "1 mm", 10.0),  # 100 µm per pixel, at most 1.4 mm
        (None, 70, "100 px (level 0)", 10.0),  # 10 level-0 px per pixel, at most 140
    ],
)
def test_the_scale_bar_is_labelled_for_the_slides_resolution(
    mpp: float | None, width: int, label: str, length_px: float
) -> None:
    bar = overlay_key(small_heatmap(mpp=mpp), width).scale_bar
    assert bar is not None
    assert (bar.label, bar.length_px) == (label, pytest.approx(length_px))


def changed_box(picture: npt.NDArray[np.uint8], thumb: npt.NDArray[np.uint8]) -> tuple[int, ...]:
    rows, cols = np.nonzero((picture != thumb).any(axis=2))
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def test_the_overlay_draws_its_key_in_the_corner_without_tissue() -> None:
    heat = small_heatmap()  # tissue everywhere but the top-right 188 x 256 level-0 px
    thumb = np.full((500, 700, 3), 230, np.uint8)
    picture = heat.overlay(thumb, max_size=700, alpha=0.0, tissue_outline=False)
    assert picture.shape == (500, 700, 3)
    top, bottom, left, right = changed_box(picture, thumb)
    assert top > 0 and right < 699  # a margin from the picture's edges
    assert bottom < 256 and left >= 512  # inside the corner without tissue
    # The colour bar: jet from p = 0 (left) to p = 1 (right), in one row of the key.
    jet = colormap_rgb("jet")
    is_low = (picture == jet[0]).all(axis=2)
    is_high = (picture == jet[255]).all(axis=2)
    row = int(np.flatnonzero(is_low.any(axis=1))[0])
    low, high = np.flatnonzero(is_low[row]), np.flatnonzero(is_high[row])
    assert low.size and high.size and low.max() < high.min()
    lut = {tuple(c) for c in jet.tolist()}
    bar = picture[row, low.min() : high.max() + 1].tolist()
    assert all(tuple(c) in lut for c in bar)  # one unbroken ramp from 0 to 1


def test_each_part_of_the_key_can_be_switched_off() -> None:
    heat = small_heatmap()
    thumb = np.full((500, 700, 3), 230, np.uint8)
    gt = Raster(np.zeros((50, 70), bool), 10, (700, 500))
    base = {"max_size": 700, "alpha": 0.0, "tissue_outline": False, "ground_truth": gt}
    plain = heat.overlay(thumb, **base, **NO_KEY)
    np.testing.assert_array_equal(plain, thumb)
    boxes = {}
    for part in ("colorbar", "legend", "scale_bar"):
        only = {**NO_KEY, part: True}
        boxes[part] = changed_box(heat.overlay(thumb, **base, **only), thumb)
    full = changed_box(heat.overlay(thumb, **base), thumb)
    heights = {part: box[1] - box[0] for part, box in boxes.items()}
    assert max(heights.values()) < full[1] - full[0]  # the whole key is taller than any part
    assert heights["legend"] < heights["colorbar"]  # one entry (ground truth) vs three rows


def test_a_picture_too_small_for_the_key_is_drawn_without_it() -> None:
    heat = small_heatmap()
    thumb = np.full((50, 70, 3), 230, np.uint8)
    with_key = heat.overlay(thumb, max_size=70, alpha=0.3)
    without = heat.overlay(thumb, max_size=70, alpha=0.3, **NO_KEY)
    np.testing.assert_array_equal(with_key, without)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_size": 0}, "Heatmap.overlay.max_size"),
        ({"max_size": 64.0}, "Heatmap.overlay.max_size"),
        ({"alpha": 1.5}, "Heatmap.overlay.alpha"),
        ({"colormap": "rainbowish"}, "Heatmap.overlay.colormap must be one of .*'jet'"),
    ],
)
def test_bad_overlay_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        small_heatmap().overlay(np.zeros((50, 70, 3), np.uint8), **kwargs)


def test_colour_map_names_are_case_insensitive() -> None:
    np.testing.assert_array_equal(colormap_rgb("VIRIDIS"), colormap_rgb("viridis"))


def test_half_stride_tissue_mask_is_where_the_map_is_finite(position_slide: ArraySlide) -> None:
    # Tissue on a diagonal band: at half stride some tissue pixels are covered by no
    # patch with enough tissue; the heatmap's tissue mask must leave them out so the
    # features (which refuse NaN inside tissue) work on the generator's output as is.
    from cervixwsi.features import HeatmapFeatureExtractor

    yy, xx = np.mgrid[:175, :250]
    tissue = np.abs(xx - yy) < 40
    tissue[32:64, 192:224] = True  # an isolated 128² level-0 cell: every patch over it is 1/4
    mask = TissueMask(tissue, 4, (WIDTH, HEIGHT))
    heat = HeatmapGenerator(PositionPredictor(), stride=128, progress=False).generate(
        position_slide, tissue_mask=mask
    )
    finite = np.isfinite(heat.array)
    assert 0 < finite.sum() < finite.size
    assert not finite[1, 6]  # the isolated cell: tissue, but no patch with 50 % tissue
    np.testing.assert_array_equal(heat.tissue_mask.array, finite)
    vector = HeatmapFeatureExtractor().extract(heat)
    assert np.isfinite(vector.values).all()
