"""Tests of cervixwsi.models: architectures, augmentation, pipeline, training, persistence."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from cervixwsi.errors import (  # noqa: E402
    ModelError,
    NotFittedError,
    ParameterError,
    PatchStoreError,
    PredictorError,
    WeightsError,
)
from cervixwsi.heatmap import PatchPredictor  # noqa: E402
from cervixwsi.models import (  # noqa: E402
    ARCHITECTURES,
    ArrayPatchSource,
    Augmentation,
    EnsembleClassifier,
    PatchClassifier,
    augment_patch,
    build_model,
    hed_to_rgb,
    imagenet_weights_path,
    patch_dataset,
    rgb_to_hed,
)
from cervixwsi.models._augment import _rotate  # noqa: E402
from cervixwsi.models._data import source_dataset  # noqa: E402
from cervixwsi.models._tf import hidden, native_log_filtered  # noqa: E402
from cervixwsi.models._training import _Plateau  # noqa: E402
from cervixwsi.slide import ArraySlide  # noqa: E402
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region  # noqa: E402
from cervixwsi.tiling import PatchSampler, PatchStore  # noqa: E402
from cervixwsi.tissue import TissueMask  # noqa: E402

pytestmark = [
    pytest.mark.tf,
    # Keras 3.15 under numpy 2.4, when tests call keras' own saving (not cervixwsi's)
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
]

SIZE = 64  # model input in most tests
PATCH = 72  # patch side (the study crops 224 from 256; here 64 from 72)


# --------------------------------------------------------------------------- test data


def textures(
    n: int, rng: np.random.Generator, size: int = PATCH
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Pink stroma with a few nuclei (label 0) or crowded dark-purple nuclei (label 1)."""
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i, lab in enumerate(labels):
        img = np.empty((size, size, 3), np.float64)
        img[:] = np.array([236.0, 170.0, 205.0]) + rng.normal(0, 12, 3)
        img += rng.normal(0, 10, (size, size, 1))
        n_nuclei = rng.integers(40, 70) if lab else rng.integers(0, 6)
        for _ in range(n_nuclei):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(2.0, 4.5) if lab else rng.uniform(1.5, 2.5)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[disk] = np.array([85.0, 45.0, 125.0]) + rng.normal(0, 10, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


class ZarrPatchStore:
    """A minimal zarr-backed patch store: the duck-typed patch source ``fit`` accepts.

    It records every ``read`` call, so tests can see what the pipeline asked for.
    """

    def __init__(self, path: Path) -> None:
        import zarr

        self._group = zarr.open_group(str(path), mode="r")
        self._patches = self._group["patches"]
        self.reads: list[npt.NDArray[np.int64]] = []

    @staticmethod
    def create(
        path: Path, patches: npt.NDArray[np.uint8], labels: npt.NDArray[np.integer[Any]]
    ) -> ZarrPatchStore:
        import zarr

        group = zarr.open_group(str(path), mode="w")
        arr = group.create_array(
            "patches", shape=patches.shape, chunks=(1, *patches.shape[1:]), dtype="uint8"
        )
        arr[:] = patches
        lab = group.create_array("labels", shape=labels.shape, dtype="int64")
        lab[:] = labels
        return ZarrPatchStore(path)

    def __len__(self) -> int:
        return int(self._patches.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self._patches.shape[1])

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        return np.asarray(self._group["labels"][:])

    def read(self, indices: Any) -> npt.NDArray[np.uint8]:
        idx = np.asarray(indices, dtype=np.int64)
        self.reads.append(idx)
        return np.asarray(self._patches.get_orthogonal_selection((idx,)))


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    x_train, y_train = textures(192, rng)
    x_val, y_val = textures(96, rng)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


@pytest.fixture(scope="module")
def trained(data: dict[str, Any]) -> PatchClassifier:
    """The small CNN trained for a few epochs on the textures (shared by many tests)."""
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, epochs=8, seed=1, progress=False, learning_rate=0.01
    )
    return clf.fit((data["x_train"], data["y_train"]), (data["x_val"], data["y_val"]))


@pytest.fixture(scope="module")
def second(data: dict[str, Any]) -> PatchClassifier:
    """Another small CNN (other seed, one epoch) for ensembles."""
    clf = PatchClassifier("small_cnn", input_size=SIZE, epochs=1, seed=2, progress=False)
    return clf.fit((data["x_train"][:64], data["y_train"][:64]))


# ------------------------------------------------------------------------- import cost


def _run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def test_importing_the_models_package_does_not_import_tensorflow() -> None:
    out = _run_python(
        "import sys, cervixwsi, cervixwsi.models; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)",
        dict(os.environ),
    )
    assert out == "False False"


def test_onednn_and_quiet_logs_are_defaults_unless_the_user_chose() -> None:
    code = (
        "import os, cervixwsi.models; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    mine = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in mine}
    assert _run_python(code, env) == "1 3"
    chosen = {**env, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "0"}
    assert _run_python(code, chosen) == "0 0"


NOTE = b"I0000 00:00:1796214149.292638    9189 port.cc:153] oneDNN custom operations are on.\n"
ABSL = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ERROR = b"E0000 00:00:1796214161.827143    9189 util.cc:131] oneDNN supports DT_UINT8 only\n"


def test_tensorflow_log_lines_below_the_level_are_hidden() -> None:
    assert [hidden(line, 3) for line in (NOTE, ABSL, ERROR)] == [True, True, True]
    assert [hidden(line, 2) for line in (NOTE, ABSL, ERROR)] == [True, True, False]
    assert [hidden(line, 0) for line in (NOTE, ABSL, ERROR)] == [False, False, False]
    for other in (b"Traceback (most recent call last):\n", b"E0000 is not a log line\n", b""):
        assert not hidden(other, 3)


def test_native_log_filter_writes_back_everything_else(capfd: pytest.CaptureFixture[str]) -> None:
    with native_log_filtered(2):
        os.write(2, NOTE + ABSL + b"a real problem\n" + ERROR)
        print("python's own line", file=sys.stderr)
    lines = capfd.readouterr().err.splitlines(keepends=True)
    assert "python's own line\n" in lines  # wherever pytest's own capture put it
    lines.remove("python's own line\n")
    assert lines == ["a real problem\n", ERROR.decode()]
    with native_log_filtered(0):  # level 0: nothing is caught
        os.write(2, NOTE)
    assert capfd.readouterr().err == NOTE.decode()


@pytest.mark.slow
def test_a_successful_run_writes_no_tensorflow_notes_and_keeps_onednn() -> None:
    code = (
        "import numpy as np\n"
        "from cervixwsi.models import PatchClassifier\n"
        "x = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)\n"
        "clf = PatchClassifier('small_cnn', input_size=32, epochs=1, seed=0, progress=False)\n"
        "clf.fit((x, np.array([0, 1] * 4)))\n"
        "clf.predict(x[:3])\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(_pywrap_util_port.IsMklEnabled())\n"
    )
    mine = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in mine}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "True"  # oneDNN is on
    assert "oneDNN" not in result.stderr and "E0000" not in result.stderr, result.stderr
    assert "absl::InitializeLog" not in result.stderr, result.stderr


# ----------------------------------------------------------------------- architectures


def test_small_cnn_has_the_promised_size_and_a_softmax_over_uint8_input() -> None:
    model = build_model("small_cnn", input_size=SIZE)
    assert 100_000 <= model.count_params() <= 1_000_000
    assert model.input.dtype == "uint8"
    x = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("caffe", "keras.applications.resnet50.preprocess_input"),
        ("tf", "keras.applications.inception_v3.preprocess_input"),
    ],
)
def test_input_scaling_layer_matches_keras_applications_preprocessing(
    mode: str, reference: str
) -> None:
    from cervixwsi.models._keras_objects import InputScaling

    x = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    module, _, fn = reference.rpartition(".")
    preprocess = getattr(eval(module, {"keras": keras}), fn)
    expected = preprocess(x.astype(np.float32).copy())
    np.testing.assert_allclose(np.asarray(InputScaling(mode)(x)), expected, atol=1e-4)


def test_unknown_architecture_and_too_small_input_are_clear_errors() -> None:
    with pytest.raises(ModelError, match=r"unknown architecture 'vgg16'.*'resnet50'"):
        build_model("vgg16")
    with pytest.raises(ModelError, match="at least 75"):
        build_model("inception_v3", input_size=64)
    with pytest.raises(ParameterError, match="n_classes"):
        build_model("small_cnn", input_size=SIZE, n_classes=1)
    with pytest.raises(ModelError, match="unknown architecture"):
        PatchClassifier("alexnet", progress=False).fit(
            (np.zeros((2, 224, 224, 3), np.uint8), np.array([0, 1]))
        )


def test_imagenet_weights_missing_from_the_cache_say_nothing_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        build_model("resnet50", weights="imagenet")
    message = str(info.value)
    assert "never downloads" in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        build_model("small_cnn", weights="imagenet")


def test_imagenet_weights_in_the_keras_cache_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    # Write a "no top" ResNet50 weights file in keras.applications' legacy h5 format.
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    cache = tmp_path / "models"
    cache.mkdir()
    file = cache / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(file, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert imagenet_weights_path("resnet50") == file
    model = build_model("resnet50", input_size=32, weights="imagenet")
    backbone = model.get_layer("resnet50")
    for got, want in zip(backbone.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_local_weights_file_round_trip(tmp_path: Path) -> None:
    source = build_model("small_cnn", input_size=SIZE)
    x = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    for name in ("w.weights.h5", "m.keras"):
        path = tmp_path / name
        if name.endswith(".keras"):
            source.save(path)
        else:
            source.save_weights(path)
        model = build_model("small_cnn", input_size=SIZE, weights=path)
        np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(source(x)))


def test_weights_of_another_architecture_are_refused_naming_both(tmp_path: Path) -> None:
    small = build_model("small_cnn", input_size=SIZE)
    small.save(tmp_path / "small.keras")
    small.save_weights(tmp_path / "small.weights.h5")
    with pytest.raises(WeightsError, match=r"'small_cnn' model, not the requested 'resnet50'"):
        build_model("resnet50", input_size=SIZE, weights=tmp_path / "small.keras")
    with pytest.raises(WeightsError, match="does not fit a 'resnet50' model"):
        build_model("resnet50", input_size=SIZE, weights=tmp_path / "small.weights.h5")
    with pytest.raises(WeightsError, match="input size 96"):
        build_model("small_cnn", input_size=96, n_classes=3, weights=tmp_path / "small.keras")
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("small_cnn", input_size=SIZE, weights=tmp_path / "missing.keras")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"'\.keras' or '\.weights\.h5'"):
        build_model("small_cnn", input_size=SIZE, weights=tmp_path / "w.npz")


# ------------------------------------------------------------------------ augmentation


def _sorted_pixels(img: Any) -> npt.NDArray[np.uint8]:
    flat = np.asarray(img).reshape(-1, 3)
    return flat[np.lexsort(flat.T[::-1])]


seeds = st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))


@settings(max_examples=25)
@given(
    side=st.integers(8, 20),
    extra=st.integers(0, 6),
    seed=seeds,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    degrees=st.sampled_from([0.0, 30.0]),
)
def test_augmented_patch_has_the_crop_size_and_dtype(
    side: int, extra: int, seed: tuple[int, int], flags: tuple[bool, ...], degrees: float
) -> None:
    image = np.random.default_rng(seed[0]).integers(0, 256, (side + extra, side + extra, 3))
    aug = Augmentation(
        rotate90=flags[0],
        flip_lr=flags[1],
        random_crop=flags[2],
        rotation_degrees=degrees,
        hed_jitter=0.05,
        brightness=0.1,
        contrast=0.1,
    )
    out = augment_patch(image.astype(np.uint8), seed, size=side, augmentation=aug)
    assert out.shape == (side, side, 3)
    assert out.dtype == tf.uint8


@settings(max_examples=25)
@given(side=st.integers(2, 16), seed=seeds)
def test_flips_and_quarter_turns_permute_pixels(side: int, seed: tuple[int, int]) -> None:
    image = np.random.default_rng(seed[1]).integers(0, 256, (side, side, 3), dtype=np.uint8)
    aug = Augmentation(rotate90=True, flip_lr=True, random_crop=False)
    out = np.asarray(augment_patch(image, seed, size=None, augmentation=aug))
    np.testing.assert_array_equal(_sorted_pixels(out), _sorted_pixels(image))
    # and it is one of the 8 symmetries of the square
    candidates = [np.rot90(m, k) for m in (image, image[:, ::-1]) for k in range(4)]
    assert any(np.array_equal(out, c) for c in candidates)


@settings(max_examples=25)
@given(h=st.integers(4, 14), w=st.integers(4, 14), size=st.integers(1, 4), seed=seeds)
def test_random_crops_are_windows_of_the_patch(
    h: int, w: int, size: int, seed: tuple[int, int]
) -> None:
    # unique pixel values, so a window matches at exactly one place
    values = np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3)
    image = (values % 256).astype(np.uint8)
    image[..., 0] = np.arange(h * w).reshape(h, w) % 256
    image[..., 1] = np.arange(h * w).reshape(h, w) // 256
    aug = Augmentation(rotate90=False, flip_lr=False, random_crop=True)
    out = np.asarray(augment_patch(image, seed, size=size, augmentation=aug))
    windows = [
        (y, x)
        for y in range(h - size + 1)
        for x in range(w - size + 1)
        if np.array_equal(image[y : y + size, x : x + size], out)
    ]
    assert len(windows) == 1


def test_random_crop_positions_cover_the_patch_and_centre_crop_is_central() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = np.arange(10)[None, :] * 10
    image[..., 1] = np.arange(10)[:, None] * 10
    aug = Augmentation(rotate90=False, flip_lr=False, random_crop=True)
    corners = {
        (int(o[0, 0, 1]) // 10, int(o[0, 0, 0]) // 10)
        for o in (
            np.asarray(augment_patch(image, (3, s), size=4, augmentation=aug)) for s in range(200)
        )
    }
    assert corners == {(y, x) for y in range(7) for x in range(7)}
    centre = np.asarray(augment_patch(image, (0, 0), size=4, augmentation=Augmentation.none()))
    np.testing.assert_array_equal(centre, image[3:7, 3:7])


def test_augmentation_is_a_function_of_the_seed() -> None:
    image = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    aug = Augmentation(rotation_degrees=20.0, hed_jitter=0.05, brightness=0.1, contrast=0.1)
    a = np.asarray(augment_patch(image, (5, 6), size=20, augmentation=aug))
    b = np.asarray(augment_patch(image, (5, 6), size=20, augmentation=aug))
    c = np.asarray(augment_patch(image, (5, 7), size=20, augmentation=aug))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_arbitrary_rotation_turns_about_the_centre() -> None:
    image = np.random.default_rng(4).uniform(0, 255, (9, 9, 3)).astype(np.float32)
    quarter = np.asarray(_rotate(tf.constant(image), tf.constant(math.pi / 2)))
    assert any(np.allclose(quarter, np.rot90(image, k), atol=1e-3) for k in (1, 3))
    np.testing.assert_allclose(np.asarray(_rotate(tf.constant(image), tf.constant(0.0))), image)


def test_hed_colour_deconvolution_matches_scikit_image() -> None:
    from skimage.color import hed2rgb, rgb2hed

    rgb = np.random.default_rng(5).uniform(0.0, 1.0, (6, 7, 3))
    np.testing.assert_allclose(np.asarray(rgb_to_hed(rgb)), rgb2hed(rgb), atol=1e-5)
    hed = rgb2hed(rgb)
    np.testing.assert_allclose(np.asarray(hed_to_rgb(hed)), hed2rgb(hed), atol=1e-5)


def test_hed_jitter_changes_stain_colours_within_bounds() -> None:
    image = np.full((16, 16, 3), (200, 120, 180), np.uint8)
    no_geom = {"rotate90": False, "flip_lr": False, "random_crop": False}
    outs = [
        np.asarray(
            augment_patch(
                image, (1, s), size=16, augmentation=Augmentation(hed_jitter=0.05, **no_geom)
            )
        )
        for s in range(20)
    ]
    means = np.array([o.reshape(-1, 3).mean(axis=0) for o in outs])
    assert np.ptp(means, axis=0).max() > 3  # colours vary between draws
    assert np.abs(means - (200, 120, 180)).max() < 60  # but stay H&E-like


@pytest.mark.parametrize(
    "kwargs", [{"rotation_degrees": -1.0}, {"hed_jitter": 1.5}, {"brightness": -0.1}]
)
def test_invalid_augmentation_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ParameterError):
        Augmentation(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- pipeline


def test_pipeline_streams_a_zarr_store_visiting_every_patch_once_per_epoch(
    tmp_path: Path,
) -> None:
    n, batch = 21, 4
    patches = np.zeros((n, 12, 12, 3), np.uint8)
    patches[..., 0] = np.arange(n)[:, None, None]  # each patch carries its index
    labels = np.arange(n) % 2
    store = ZarrPatchStore.create(tmp_path / "store.zarr", patches, labels)
    aug = Augmentation(rotate90=True, flip_lr=True, random_crop=True)
    ds, steps = source_dataset(
        store, batch_size=batch, size=8, augmentation=aug, seed=9, first_epoch=0, epochs=2
    )
    assert steps == 6
    batches = [(np.asarray(x), np.asarray(y)) for x, y in ds]
    assert len(batches) == 2 * steps
    assert all(x.shape[1:] == (8, 8, 3) and x.dtype == np.uint8 for x, _ in batches)
    seen = np.concatenate([x[:, 0, 0, 0] for x, _ in batches])
    got_labels = np.concatenate([y for _, y in batches])
    epoch0, epoch1 = seen[:n], seen[n:]
    assert sorted(epoch0) == list(range(n)) == sorted(epoch1)
    assert not np.array_equal(epoch0, epoch1)  # reshuffled each epoch
    np.testing.assert_array_equal(got_labels, labels[seen])
    # reads are batch-sized, in index order (fast for chunked stores)
    assert max(len(r) for r in store.reads) == batch
    assert all(np.all(np.diff(r) > 0) for r in store.reads)
    # the same (seed, epoch) gives the same order: resuming at epoch 1 replays it
    ds1, _ = source_dataset(
        store, batch_size=batch, size=8, augmentation=aug, seed=9, first_epoch=1, epochs=1
    )
    again = np.concatenate([np.asarray(x)[:, 0, 0, 0] for x, _ in ds1])
    np.testing.assert_array_equal(again, epoch1)


def test_validation_pipeline_is_in_order_and_centre_cropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    patches = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    source = ArrayPatchSource(patches, np.array([0, 1, 0, 1, 1]))
    ds, steps = source_dataset(source, batch_size=2, size=8, augmentation=None, seed=0)
    got = np.concatenate([np.asarray(x) for x, _ in ds])
    np.testing.assert_array_equal(got, patches[:, 2:10, 2:10])
    assert steps == 3


# ------------------------------------------------------------- a patch store as tf.data


class FailingSlide(ArraySlide):
    """An ArraySlide whose reads fail after ``budget`` regions (a build that crashes)."""

    def __init__(self, *args: Any, budget: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> npt.NDArray[np.uint8]:
        if self.budget is not None:
            self.budget -= 1
            if self.budget < 0:
                raise OSError("simulated read failure")
        return super().read_region(location, level, size)


def build_store(path: Path, budget: int | None = None) -> PatchStore:
    """45 different 32-pixel patches (20 tumor, 25 normal) of a noise slide, 4 per chunk."""
    image = np.random.default_rng(0).integers(0, 256, (640, 768, 3), dtype=np.uint8)
    slide = FailingSlide(image, mpp=0.5, name="noise", budget=budget)
    shape = (40, 48)  # the masks at downsample 16
    tumor = np.zeros(shape, bool)
    tumor[10:25, 10:30] = True
    dims = (768, 640)
    return PatchStore.build(
        path,
        [slide],
        PatchSampler(n_tumor=20, n_normal=25, patch_size=32),
        tumor_masks=[TissueMask(tumor, 16.0, dims, mpp=0.5)],
        tissue_masks=[TissueMask(np.ones(shape, bool), 16.0, dims, mpp=0.5)],
        seed=11,
        workers=1,
        chunk_patches=4,
        progress=False,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PatchStore:
    return build_store(tmp_path_factory.mktemp("store") / "s.zarr")


def test_patch_dataset_parameters_are_checked_before_tensorflow(store: PatchStore) -> None:
    for bad, name in [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ]:
        with pytest.raises(ParameterError, match=f"patch_dataset.{name}"):
            patch_dataset(store, **bad)
    with pytest.raises(PatchStoreError, match="index out of range"):
        patch_dataset(store, indices=[0, 45])
    with pytest.raises(ParameterError, match="PatchStore"):
        patch_dataset(np.zeros((4, 32, 32, 3), np.uint8))  # type: ignore[arg-type]
    # NumPy integers are integers
    assert len(list(patch_dataset(store, np.int64(45), epochs=np.int64(1), seed=np.int64(0)))) == 1


def test_patch_dataset_of_a_partial_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="simulated"):
        build_store(tmp_path / "s.zarr", budget=9)
    partial = PatchStore(tmp_path / "s.zarr")
    assert not partial.is_complete
    with pytest.raises(PatchStoreError, match="have not been extracted"):
        patch_dataset(partial)
    done = np.flatnonzero(partial.extracted)
    assert 0 < len(done) < len(partial)
    # the extracted patches alone can be read
    got = np.concatenate([p.numpy() for p in patch_dataset(partial, 4, indices=done, labels=False)])
    np.testing.assert_array_equal(got, partial.read(done))


def _indices_of(patches: npt.NDArray[np.uint8], reference: npt.NDArray[np.uint8]) -> list[int]:
    """Which reference patch each patch is (the noise patches are all different)."""
    lookup = {p.tobytes(): i for i, p in enumerate(reference)}
    assert len(lookup) == len(reference)
    return [lookup[p.tobytes()] for p in patches]


def test_patch_dataset_reads_every_patch_once_per_pass(store: PatchStore) -> None:
    everything = store.read(np.arange(45))
    assert np.bincount(store.labels).tolist() == [25, 20]
    ds = patch_dataset(store, 16)
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int32
    batches = [(p.numpy(), y.numpy()) for p, y in ds]
    assert [len(p) for p, _ in batches] == [16, 16, 13]
    assert batches[0][0].shape == (16, 32, 32, 3) and batches[0][0].dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([p for p, _ in batches]), everything)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), store.labels)

    def passes(**kw: Any) -> list[list[int]]:
        """The patch indices of each pass, in the order the dataset yields them."""
        seen: list[int] = []
        for patches, labels in patch_dataset(store, 10, shuffle=True, **kw):
            order = _indices_of(patches.numpy(), everything)
            np.testing.assert_array_equal(labels.numpy(), store.labels[order])
            seen += order
        return [seen[k : k + 45] for k in range(0, len(seen), 45)]

    shuffled = passes(seed=3, epochs=2)
    assert len(shuffled) == 2
    for order in shuffled:
        assert sorted(order) == list(range(45))  # every patch exactly once per pass
    assert shuffled[0] != shuffled[1]  # each pass in its own order
    assert shuffled[0] != list(range(45))
    assert passes(seed=3, epochs=2) == shuffled  # reproducible from the seed
    assert passes(seed=4)[0] != shuffled[0]
    assert passes()[0] != passes()[0]  # without a seed, a fresh order each time
    # Only some patches, in their order; patches alone.
    subset = [p.numpy() for p in patch_dataset(store, 2, indices=[3, 1, -5], labels=False)]
    assert [len(p) for p in subset] == [2, 1]
    np.testing.assert_array_equal(np.concatenate(subset), store.read([3, 1, 40]))
    assert sorted(passes(seed=0, indices=np.arange(0, 45, 2))[0]) == list(range(0, 45, 2))


# ---------------------------------------------------------------------------- training


@pytest.mark.slow
def test_small_cnn_learns_to_separate_tumor_from_normal_textures(
    trained: PatchClassifier, data: dict[str, Any]
) -> None:
    h = trained.history_
    assert h.epoch.tolist() == list(range(1, 9))
    best = int(np.argmin(h.val_loss))  # model_ holds this epoch's weights (restore_best)
    assert h.val_accuracy[best] >= 0.9
    assert h.accuracy[-1] >= 0.9
    p = trained.predict(data["x_val"])
    accuracy = float(np.mean((p > 0.5) == data["y_val"]))
    assert accuracy >= 0.9
    assert accuracy == pytest.approx(h.val_accuracy[best], abs=1e-6)  # same centre crops
    np.testing.assert_array_equal(trained.class_counts_, [96, 96])
    np.testing.assert_array_equal(trained.classes_, [0, 1])


def synthetic_patches(
    n_per_class: int, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """72-px patches (2x reduced) from inside SCC nests (1) and far from them (0)."""
    from scipy import ndimage

    layout = make_layout(SyntheticSlideSpec(width=8192, height=8192, n_nests=40, seed=seed))
    tumor = np.asarray(layout.tumor_mask.array, bool)
    tissue = np.asarray(layout.tissue_mask.array, bool)
    ds = layout.tumor_mask.downsample
    side = 2 * PATCH
    footprint = np.ones((int(np.ceil(side / ds)),) * 2, bool)
    inside = ndimage.binary_erosion(tumor, footprint)
    normal = ndimage.binary_erosion(tissue, footprint) & ~ndimage.binary_dilation(
        tumor, footprint, iterations=3
    )
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for label, mask in ((1, inside), (0, normal)):
        rows, cols = np.nonzero(mask)
        for k in rng.choice(len(rows), n_per_class, replace=False):
            x, y = (int((v + 0.5) * ds - side / 2) for v in (cols[k], rows[k]))
            rgb = render_region(layout, x, y, side, side).astype(np.float64)
            patches.append(np.round(rgb.reshape(PATCH, 2, PATCH, 2, 3).mean(axis=(1, 3))))
            labels.append(label)
    return np.stack(patches).astype(np.uint8), np.array(labels)


@pytest.mark.slow
def test_small_cnn_learns_synthetic_tumor_versus_normal_patches() -> None:
    x_train, y_train = synthetic_patches(64, seed=21)
    x_val, y_val = synthetic_patches(48, seed=22)
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, batch_size=16, epochs=8, seed=0, progress=False
    )
    clf.fit((x_train, y_train), (x_val, y_val))
    accuracy = float(np.mean((clf.predict(x_val) > 0.5) == y_val))
    assert accuracy >= 0.9, clf.history_.val_accuracy


def test_learning_rate_decays_and_drops_tenfold_on_plateau(data: dict[str, Any]) -> None:
    x, y = data["x_train"][:16], data["y_train"][:16]
    clf = PatchClassifier(
        "small_cnn",
        input_size=SIZE,
        batch_size=8,  # 2 steps per epoch
        learning_rate=0.01,
        decay_steps=2,
        decay_rate=0.5,
        plateau_patience=1,
        plateau_min_delta=1e9,  # no epoch after the first counts as an improvement
        epochs=3,
        seed=0,
        progress=False,
    ).fit((x, y))
    # end of epoch e: step 2e, multiplier 1, 1, then 0.1 (set after epoch 2)
    expected = [0.01 * 0.5**1, 0.01 * 0.5**2, 0.01 * 0.5**3 * 0.1]
    np.testing.assert_allclose(clf.history_.learning_rate, expected, rtol=1e-5)
    optimizer = clf.model_.optimizer
    assert int(optimizer.iterations) == 6
    # after epoch 3 the rate was divided by 10 again: the optimizer now steps with
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.01 * 0.5**3 * 0.01, rtol=1e-5)


def test_plateau_rule_waits_patience_epochs() -> None:
    plateau = _Plateau(factor=0.1, patience=2, min_delta=0.01)
    decisions = [plateau.update(v) for v in [1.0, 0.5, 0.499, 0.498, 0.3, 0.3, 0.3, 0.3]]
    assert decisions == [False, False, False, True, False, False, True, False]


def test_fit_keeps_the_best_validation_epoch_unless_asked_not_to(data: dict[str, Any]) -> None:
    x, y = data["x_train"][:32], data["y_train"][:32]
    val = (data["x_val"][:32], data["y_val"][:32])
    params: dict[str, Any] = {"input_size": SIZE, "batch_size": 16, "seed": 4, "progress": False}
    for restore in (True, False):
        clf = PatchClassifier("small_cnn", epochs=3, **params)
        clf.fit((x, y), val, restore_best=restore)
        scores = np.asarray(clf.model_.evaluate(*_centre(val), verbose=0, return_dict=True)["loss"])
        epoch = int(np.argmin(clf.history_.val_loss)) if restore else 2
        np.testing.assert_allclose(scores, clf.history_.val_loss[epoch], rtol=1e-4)


def _centre(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    o = (PATCH - SIZE) // 2
    return pair[0][:, o : o + SIZE, o : o + SIZE], pair[1]


def test_training_resumes_from_the_last_completed_epoch(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    x, y = data["x_train"][:32], data["y_train"][:32]
    val = (data["x_val"][:16], data["y_val"][:16])
    params: dict[str, Any] = {"input_size": SIZE, "batch_size": 16, "seed": 3, "progress": False}
    first = PatchClassifier("small_cnn", **params).fit(
        (x, y), val, epochs=2, checkpoint_dir=tmp_path
    )
    assert {"last.keras", "best.keras", "history.csv", "state.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 2
    # an "interrupted" run resumes: asking for 3 epochs runs only the third
    resumed = PatchClassifier("small_cnn", **params).fit(
        (x, y), val, epochs=3, checkpoint_dir=tmp_path
    )
    assert resumed.history_.epoch.tolist() == [1, 2, 3]
    np.testing.assert_allclose(resumed.history_.loss[:2], first.history_.loss)
    assert int(resumed.model_.optimizer.iterations) == 3 * 2  # Adam state carried over
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"
    # nothing left to do: no training, same model
    done = PatchClassifier("small_cnn", **params).fit((x, y), epochs=3, checkpoint_dir=tmp_path)
    assert int(done.model_.optimizer.iterations) == 6
    # a best.keras that does not hold the best epoch (a crash between the two saves) is
    # not restored: the last epoch's weights are kept, with a warning
    best_epoch = int(resumed.history_.epoch[np.argmin(resumed.history_.val_loss)])
    stale = PatchClassifier("small_cnn", **params).fit((x, y), val, epochs=1)
    stale_path = tmp_path / "stale.keras"
    stale.save(stale_path)
    with zipfile.ZipFile(stale_path, "a") as zf:
        zf.writestr("cervixwsi_checkpoint.json", json.dumps({"epoch": best_epoch + 7}))
    stale_path.replace(tmp_path / "best.keras")
    kept = PatchClassifier("small_cnn", **params).fit(
        (x, y), val, epochs=3, checkpoint_dir=tmp_path
    )
    last = keras.saving.load_model(tmp_path / "last.keras", compile=False)
    for got, want in zip(kept.model_.get_weights(), last.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # resume=False starts again, and leaves nothing of the earlier run to restore
    fresh = PatchClassifier("small_cnn", **params).fit(
        (x, y), epochs=1, checkpoint_dir=tmp_path, resume=False
    )
    assert fresh.history_.epoch.tolist() == [1]
    assert int(fresh.model_.optimizer.iterations) == 2
    assert not (tmp_path / "best.keras").exists()  # no validation in this run


class _FailingSource(ArrayPatchSource):
    """Array patches whose reading fails after ``budget`` batches (a crash mid-epoch)."""

    budget: int = 0

    def read(self, indices: Any) -> npt.NDArray[np.uint8]:
        object.__setattr__(self, "budget", self.budget - 1)
        if self.budget < 0:
            raise OSError("the disk went away")
        return super().read(indices)


def test_training_interrupted_mid_epoch_resumes_after_the_last_complete_one(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    x, y = data["x_train"][:32], data["y_train"][:32]
    params: dict[str, Any] = {"input_size": SIZE, "batch_size": 8, "seed": 5, "progress": False}
    failing = _FailingSource(x, y)
    object.__setattr__(failing, "budget", 6)  # 4 batches per epoch: dies inside epoch 2
    with pytest.raises(Exception, match="disk went away"):
        PatchClassifier("small_cnn", **params).fit(failing, epochs=3, checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 1
    resumed = PatchClassifier("small_cnn", **params).fit((x, y), epochs=3, checkpoint_dir=tmp_path)
    assert resumed.history_.epoch.tolist() == [1, 2, 3]
    assert int(resumed.model_.optimizer.iterations) == 3 * 4


def test_resuming_a_checkpoint_of_another_model_or_a_corrupt_one_fails(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    x, y = data["x_train"][:8], data["y_train"][:8]
    PatchClassifier("small_cnn", input_size=SIZE, epochs=1, seed=0, progress=False).fit(
        (x, y), checkpoint_dir=tmp_path
    )
    with pytest.raises(ModelError, match="input_size=64"):
        PatchClassifier("small_cnn", input_size=48, progress=False).fit(
            (x, y), checkpoint_dir=tmp_path
        )
    with pytest.raises(ModelError, match=r"learning_rate=0\.01.*learning_rate=0\.001"):
        PatchClassifier(
            "small_cnn", input_size=SIZE, seed=0, learning_rate=1e-3, progress=False
        ).fit((x, y), checkpoint_dir=tmp_path)
    last = tmp_path / "last.keras"
    last.write_bytes(last.read_bytes()[:1000])  # truncated by a crash of the disk
    with pytest.raises(ModelError, match="unreadable"):
        PatchClassifier("small_cnn", input_size=SIZE, progress=False).fit(
            (x, y), checkpoint_dir=tmp_path
        )


def test_fit_streams_from_a_zarr_patch_store(tmp_path: Path, data: dict[str, Any]) -> None:
    store = ZarrPatchStore.create(tmp_path / "s.zarr", data["x_train"][:24], data["y_train"][:24])
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, batch_size=8, epochs=1, seed=0, progress=False
    )
    clf.fit(store, store)
    assert clf.history_.epoch.tolist() == [1]
    assert np.isfinite(clf.history_.val_loss).all()
    assert sum(len(r) for r in store.reads) == 24 + 24  # one training pass + one validation pass


def test_fit_streams_from_the_tiling_patch_store(tmp_path: Path) -> None:
    rgb = np.full((512, 512, 3), 235, np.uint8)
    rgb[64:448, 64:448] = (190, 100, 170)
    rgb[64:448:7, 64:448:5] = (90, 40, 120)
    slide = ArraySlide(rgb, mpp=1.0, name="demo")
    sampler = PatchSampler(n_normal_normal_slide=10, patch_size=SIZE)
    store = PatchStore.build(tmp_path / "p.zarr", [slide], sampler, seed=0, progress=False)
    ds, _ = source_dataset(store, batch_size=4, size=SIZE, augmentation=Augmentation.none(), seed=5)
    got = np.concatenate([np.asarray(x) for x, _ in ds])
    order = np.random.default_rng([5, 0]).permutation(len(store))
    np.testing.assert_array_equal(got, store.read(order))
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, batch_size=4, epochs=1, seed=0, progress=False
    )
    clf.fit(store)
    assert clf.class_counts_.tolist() == [10, 0]
    assert clf.predict(store.read([0, 1])).shape == (2,)


@pytest.mark.parametrize("batched", [True, False])
def test_fit_accepts_a_tf_data_dataset(data: dict[str, Any], batched: bool) -> None:
    ds = tf.data.Dataset.from_tensor_slices((data["x_train"][:16], data["y_train"][:16]))
    if batched:
        ds = ds.batch(5)
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, batch_size=8, epochs=1, seed=0, progress=False
    )
    clf.fit(ds, ds)
    assert clf.history_.epoch.tolist() == [1]
    assert np.isfinite(clf.history_.val_accuracy).all()
    assert clf.class_counts_.tolist() == [-1, -1]  # unknown for a dataset


def test_a_dataset_of_float_patches_is_refused_not_cast(data: dict[str, Any]) -> None:
    floats = data["x_train"][:4].astype(np.float32) / 255  # [0, 1]: a cast would give 0s
    ds = tf.data.Dataset.from_tensor_slices((floats, data["y_train"][:4]))
    clf = PatchClassifier("small_cnn", input_size=SIZE, epochs=1, seed=0, progress=False)
    with pytest.raises(ModelError, match=r"must be uint8 RGB.*float32"):
        clf.fit(ds)


@pytest.mark.parametrize(
    ("train", "match"),
    [
        ((np.zeros((4, 72, 72, 3), np.uint8), np.array([0, 1, 2, 0])), "labels must lie in 0..1"),
        ((np.zeros((4, 72, 72, 3), np.uint8), np.array([0, 1])), r"shape \(4,\)"),
        ((np.zeros((4, 72, 72, 3), np.float32), np.array([0, 1, 0, 1])), "uint8"),
        ((np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 0, 1])), "at least 64x64"),
        (np.zeros((4, 72, 72, 3), np.uint8), "PatchStore"),
    ],
)
def test_fit_refuses_bad_training_data(train: Any, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        PatchClassifier("small_cnn", input_size=SIZE, progress=False).fit(train)


def test_fit_refuses_bad_parameters() -> None:
    x = (np.zeros((2, 72, 72, 3), np.uint8), np.array([0, 1]))
    with pytest.raises(ParameterError, match="plateau_factor"):
        PatchClassifier("small_cnn", input_size=SIZE, plateau_factor=10.0, progress=False).fit(x)
    with pytest.raises(ParameterError, match="epochs"):
        PatchClassifier("small_cnn", input_size=SIZE, progress=False).fit(x, epochs=0)


def test_numpy_integers_are_integers_and_bools_are_not(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    x, y = data["x_train"][:8], data["y_train"][:8]
    clf = PatchClassifier(
        "small_cnn",
        input_size=np.int64(SIZE),  # type: ignore[arg-type]
        batch_size=np.int64(4),  # type: ignore[arg-type]
        seed=np.int64(0),  # type: ignore[arg-type]
        progress=False,
    )
    clf.fit((x, y), epochs=np.int64(1))  # type: ignore[arg-type]
    assert clf.history_.epoch.tolist() == [1]
    assert type(clf.input_size) is int and type(clf.batch_size) is int  # settings are JSON
    assert clf.predict(x[:3], batch_size=np.int64(2)).shape == (3,)  # type: ignore[arg-type]
    assert PatchClassifier.load(clf.save(tmp_path / "m.keras")).input_size == SIZE
    model = build_model("small_cnn", input_size=np.int64(SIZE), n_classes=np.int64(3))  # type: ignore[arg-type]
    assert model.output_shape == (None, 3)
    for name in ("input_size", "batch_size", "epochs"):
        with pytest.raises(ParameterError, match=f"PatchClassifier.{name} .*got True"):
            PatchClassifier("small_cnn", progress=False, **{name: True}).fit((x, y))
    with pytest.raises(ParameterError, match=r"PatchClassifier.fit.epochs .*got True"):
        PatchClassifier("small_cnn", input_size=SIZE, progress=False).fit((x, y), epochs=True)
    with pytest.raises(ParameterError, match=r"PatchClassifier.predict.batch_size .*got True"):
        clf.predict(x, batch_size=True)
    with pytest.raises(ParameterError, match=r"build_model.input_size .*got True"):
        build_model("small_cnn", input_size=True)
    with pytest.raises(ParameterError, match=r"Augmentation.hed_jitter"):
        Augmentation(hed_jitter=True)  # type: ignore[arg-type]


def test_training_files_and_saved_models_get_the_umask_permissions(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    x, y = data["x_train"][:16], data["y_train"][:16]
    val = (data["x_val"][:8], data["y_val"][:8])
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        clf = PatchClassifier(
            "small_cnn", input_size=SIZE, batch_size=8, epochs=1, seed=0, progress=False
        ).fit((x, y), val, checkpoint_dir=run)
        clf.save(tmp_path / "model.keras")
        EnsembleClassifier([clf]).save(tmp_path / "ensemble")
    finally:
        os.umask(old)
    written = [run / n for n in ("history.csv", "state.json", "last.keras", "best.keras")]
    written += [tmp_path / "model.keras", tmp_path / "ensemble" / "ensemble.json"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(tmp_path.rglob(".*"))  # no temporary left behind


# -------------------------------------------------------------------------- prediction


def test_predict_is_batched_and_centre_crops_larger_patches(
    trained: PatchClassifier, data: dict[str, Any]
) -> None:
    x = data["x_val"][:11]
    p = trained.predict(x, batch_size=4)
    assert p.dtype == np.float32 and p.shape == (11,)
    single = np.concatenate([trained.predict(x[i : i + 1]) for i in range(11)])
    np.testing.assert_allclose(p, single, atol=1e-6)
    o = (PATCH - SIZE) // 2
    direct = np.asarray(trained.model_(x[:, o : o + SIZE, o : o + SIZE], training=False))[:, 1]
    np.testing.assert_allclose(p, direct, atol=1e-6)
    proba = trained.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert isinstance(trained, PatchPredictor)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((2, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64, 3), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((2, 64, 64, 4), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((0, 64, 64, 3), np.uint8), "empty batch"),
        (np.zeros((2, 60, 64, 3), np.uint8), "at least 64x64"),
    ],
)
def test_predict_refuses_bad_batches(trained: PatchClassifier, batch: Any, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        trained.predict(batch)


def test_predict_before_fit_is_an_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        PatchClassifier("resnet50").predict(np.zeros((1, 224, 224, 3), np.uint8))


# ------------------------------------------------------------------------- persistence


def test_save_and_load_give_identical_predictions(
    tmp_path: Path, trained: PatchClassifier, data: dict[str, Any]
) -> None:
    path = trained.save(tmp_path / "clf.keras")
    loaded = PatchClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(data["x_val"]), trained.predict(data["x_val"]))
    assert loaded.arch == "small_cnn" and loaded.input_size == SIZE
    assert loaded.augmentation == trained.augmentation
    np.testing.assert_array_equal(loaded.class_counts_, trained.class_counts_)
    np.testing.assert_allclose(loaded.history_.val_accuracy, trained.history_.val_accuracy)
    # the file is a plain Keras archive, self-contained once cervixwsi.models is imported
    model = keras.saving.load_model(path)
    o = (PATCH - SIZE) // 2
    crop = data["x_val"][:4, o : o + SIZE, o : o + SIZE]
    np.testing.assert_allclose(np.asarray(model(crop))[:, 1], trained.predict(crop), atol=1e-6)


def test_saving_and_loading_bad_files_are_clear_errors(
    tmp_path: Path, trained: PatchClassifier
) -> None:
    with pytest.raises(ModelError, match=r"'\.keras' file"):
        trained.save(tmp_path / "clf.h5")
    with pytest.raises(WeightsError, match="does not exist"):
        PatchClassifier.load(tmp_path / "missing.keras")
    good = trained.save(tmp_path / "good.keras").read_bytes()
    (tmp_path / "truncated.keras").write_bytes(good[: len(good) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        PatchClassifier.load(tmp_path / "truncated.keras")
    (tmp_path / "empty.keras").write_bytes(b"")
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        PatchClassifier.load(tmp_path / "empty.keras")
    build_model("small_cnn", input_size=SIZE).save(tmp_path / "plain.keras")
    with pytest.raises(WeightsError, match="without cervixwsi settings"):
        PatchClassifier.load(tmp_path / "plain.keras")
    # a settings file from the future
    future = tmp_path / "future.keras"
    future.write_bytes(good)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(future, "a") as zf:
        zf.writestr(
            "cervixwsi.json", json.dumps({"format": "cervixwsi.PatchClassifier", "version": 99})
        )
    with pytest.raises(WeightsError, match="version 99"):
        PatchClassifier.load(future)


# --------------------------------------------------------------------------- ensembles


def test_ensemble_is_the_mean_of_its_members(
    trained: PatchClassifier, second: PatchClassifier, data: dict[str, Any]
) -> None:
    x = data["x_val"][:10]
    p1, p2 = trained.predict(x), second.predict(x)
    ensemble = EnsembleClassifier([trained, second])
    np.testing.assert_allclose(ensemble.predict(x), (p1 + p2) / 2, atol=1e-6)
    weighted = EnsembleClassifier([trained, second], weights=[3.0, 1.0])
    np.testing.assert_allclose(weighted.predict(x), 0.75 * p1 + 0.25 * p2, atol=1e-6)
    assert ensemble.predict(x).dtype == np.float32
    assert isinstance(ensemble, PatchPredictor)


def test_ensemble_save_and_load_give_identical_predictions(
    tmp_path: Path, trained: PatchClassifier, second: PatchClassifier, data: dict[str, Any]
) -> None:
    ensemble = EnsembleClassifier([trained, second], weights=[2.0, 1.0])
    ensemble.save(tmp_path / "ens")
    loaded = EnsembleClassifier.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict(data["x_val"]), ensemble.predict(data["x_val"]))
    np.testing.assert_allclose(loaded.weights, [2 / 3, 1 / 3])
    with pytest.raises(WeightsError, match=r"ensemble\.json is missing"):
        EnsembleClassifier.load(tmp_path)
    (tmp_path / "ens" / "ensemble.json").write_text("[]")
    with pytest.raises(WeightsError, match="malformed"):
        EnsembleClassifier.load(tmp_path / "ens")


class _Bad:
    def predict(self, patches: Any) -> Any:
        return np.zeros((len(patches), 2), np.float32)


def test_ensemble_refuses_bad_members_and_weights(trained: PatchClassifier) -> None:
    with pytest.raises(ParameterError, match="at least one member"):
        EnsembleClassifier([])
    with pytest.raises(ParameterError, match="one value per member"):
        EnsembleClassifier([trained], weights=[1.0, 2.0])
    with pytest.raises(ParameterError, match="non-negative"):
        EnsembleClassifier([trained, trained], weights=[1.0, -1.0])
    with pytest.raises(ParameterError, match="no predict"):
        EnsembleClassifier([object()])
    x = np.zeros((3, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(PredictorError, match="member 1"):
        EnsembleClassifier([trained, _Bad()]).predict(x)
    with pytest.raises(ModelError, match="only PatchClassifier members"):
        EnsembleClassifier([_Bad()]).save("unused")
    with pytest.raises(ModelError, match="empty batch"):
        EnsembleClassifier([trained]).predict(np.zeros((0, SIZE, SIZE, 3), np.uint8))


# --------------------------------------------------- full-size architectures (slow, CI)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "small_cnn"])
def test_architecture_builds_predicts_and_takes_a_training_step(arch: str) -> None:
    """Each study network at 75 px (the Inception minimum), batch 2.

    The training step runs eagerly: tracing InceptionResNet-v2's graph costs
    ~80 s on 2 cores, an eager step ~7 s. 224 px was checked by the benchmark.
    """
    model = build_model(arch, input_size=75)
    x = np.random.default_rng(0).integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(
            np.array([0, 1]), model(x, training=True)
        )
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    before = [np.asarray(v).copy() for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    assert math.isfinite(float(loss))
    changed = [
        not np.array_equal(b, np.asarray(v))
        for b, v in zip(before, model.trainable_variables, strict=True)
    ]
    assert np.mean(changed) > 0.9  # the step reached (almost) every layer


def test_recalibrated_batchnorm_predicts_as_the_batch_statistics_do() -> None:
    # one batch: the moving statistics become that batch's, so inference equals
    # training-mode output (small_cnn has no dropout) on the same patches
    clf = PatchClassifier("small_cnn", input_size=32, batch_size=64, seed=0).build()
    x = np.random.default_rng(1).integers(0, 255, (48, 40, 40, 3), np.uint8)
    crop = x[:, 4:36, 4:36]
    before = clf.predict(x)
    assert clf.recalibrate_batchnorm((x, np.arange(48) % 2), n=64) == 5
    expected = clf.model_(crop, training=True).numpy()[:, 1]
    np.testing.assert_allclose(clf.predict(x), expected, atol=1e-4)
    assert not np.allclose(before, expected, atol=1e-3)


def test_recalibrate_batchnorm_averages_the_batch_statistics() -> None:
    from cervixwsi.models._training import recalibrate_batchnorm

    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(inputs))
    x = np.random.default_rng(0).normal(5.0, 2.0, (96, 3)).astype(np.float32)
    assert recalibrate_batchnorm(model, x, 32) == 1
    batches = x.reshape(3, 32, 3)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(1).mean(0), rtol=1e-4)
    assert bn.momentum == 0.99


def test_recalibrate_batchnorm_needs_a_fitted_model_and_patches() -> None:
    with pytest.raises(NotFittedError):
        PatchClassifier("small_cnn", input_size=32).recalibrate_batchnorm(
            (np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]))
        )
    clf = PatchClassifier("small_cnn", input_size=32, seed=0).build()
    with pytest.raises(
        ModelError, match=r"recalibration patches are 16x16 pixels; the model needs at least 32x32"
    ):
        clf.recalibrate_batchnorm((np.zeros((2, 16, 16, 3), np.uint8), np.array([0, 1])))
