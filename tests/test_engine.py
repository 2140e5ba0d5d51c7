"""The ONNX Runtime inference engine against TensorFlow, its cache and its fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from cervixwsi.errors import ParameterError
from cervixwsi.models import (
    EngineFallbackWarning,
    EnsembleClassifier,
    PatchClassifier,
    _engine,
)

pytestmark = [
    pytest.mark.tf,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
]

SIZE = 48


def _patches(n: int, seed: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, SIZE + 8, SIZE + 8, 3), dtype=np.uint8)
    x[: n // 2, ..., 1] //= 3  # a class difference the network can pick up
    return x


def _fit(seed: int) -> PatchClassifier:
    x = _patches(64, seed)
    y = np.r_[np.ones(32, np.int64), np.zeros(32, np.int64)]
    clf = PatchClassifier(
        "small_cnn", input_size=SIZE, epochs=2, seed=seed, learning_rate=1e-3, progress=False
    )
    return clf.fit((x, y))


@pytest.fixture(scope="module")
def models() -> tuple[PatchClassifier, PatchClassifier]:
    return _fit(3), _fit(4)


@pytest.fixture(scope="module")
def x() -> npt.NDArray[np.uint8]:
    return _patches(40, 99)


def _tf_predictions(clf: PatchClassifier, x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    clf.engine = "tensorflow"
    return clf.predict(x)


def test_onnxruntime_equals_tensorflow_on_the_small_cnn(
    models: tuple[PatchClassifier, PatchClassifier], x: npt.NDArray[np.uint8]
) -> None:
    clf = models[0]
    expected = _tf_predictions(clf, x)
    assert clf.engine_ == "tensorflow"
    clf.engine = "onnxruntime"
    got = clf.predict(x, batch_size=7)  # a ragged last batch too
    assert clf.engine_ == "onnxruntime"
    assert got.dtype == np.float32 and got.shape == (40,)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.ptp(expected) > 1e-3  # the comparison is not between two constants
    np.testing.assert_allclose(clf.predict_proba(x).sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_on_onnxruntime_equals_the_tensorflow_ensemble(
    tmp_path: Path, models: tuple[PatchClassifier, PatchClassifier], x: npt.NDArray[np.uint8]
) -> None:
    for m in models:
        m.engine = "tensorflow"
    EnsembleClassifier(list(models), weights=[2.0, 1.0]).save(tmp_path / "ens")
    tf_ens = EnsembleClassifier.load(tmp_path / "ens")
    ort_ens = EnsembleClassifier.load(tmp_path / "ens", engine="onnxruntime")
    assert [m.engine_ for m in ort_ens.members] == ["onnxruntime"] * 2
    np.testing.assert_allclose(ort_ens.predict(x), tf_ens.predict(x), atol=1e-4)
    # the exports are cached next to the member files
    assert sorted(p.name for p in (tmp_path / "ens").glob("*.onnx")) == [
        "member_0.onnx",
        "member_1.onnx",
    ]


def test_the_export_is_cached_next_to_the_model_and_reused(
    tmp_path: Path,
    models: tuple[PatchClassifier, PatchClassifier],
    x: npt.NDArray[np.uint8],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = models[0].save(tmp_path / "clf.keras")
    first = PatchClassifier.load(path, engine="onnxruntime")
    cache = tmp_path / "clf.onnx"
    assert cache.is_file() and first.engine_ == "onnxruntime"
    before = cache.read_bytes()

    def no_export(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("exported again although the cache is valid")

    monkeypatch.setattr(_engine, "_export", no_export)
    with caplog.at_level(logging.INFO, logger="cervixwsi.models._engine"):
        second = PatchClassifier.load(path, engine="onnxruntime")
    assert "using the cached ONNX export" in caplog.text
    assert second.engine_ == "onnxruntime" and cache.read_bytes() == before
    np.testing.assert_array_equal(second.predict(x), first.predict(x))


def test_a_cache_of_other_weights_or_a_corrupt_one_is_exported_again(
    tmp_path: Path, models: tuple[PatchClassifier, PatchClassifier], x: npt.NDArray[np.uint8]
) -> None:
    a, b = models
    expected = _tf_predictions(a, x)
    b.save(tmp_path / "b.keras")
    PatchClassifier.load(tmp_path / "b.keras", engine="onnxruntime")
    a.save(tmp_path / "a.keras")
    (tmp_path / "b.onnx").replace(tmp_path / "a.onnx")  # model b's export beside model a
    loaded = PatchClassifier.load(tmp_path / "a.keras", engine="onnxruntime")
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-4)
    for junk in (b"", b"not an onnx file"):
        (tmp_path / "a.onnx").write_bytes(junk)
        loaded = PatchClassifier.load(tmp_path / "a.keras", engine="onnxruntime")
        assert loaded.engine_ == "onnxruntime"
        np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-4)
        assert (tmp_path / "a.onnx").stat().st_size > 1000  # rewritten


def test_a_failed_export_falls_back_to_tensorflow_with_a_warning(
    tmp_path: Path,
    models: tuple[PatchClassifier, PatchClassifier],
    x: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clf = models[1]
    expected = _tf_predictions(clf, x)
    path = clf.save(tmp_path / "clf.keras")

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("tf2onnx cannot convert this graph")

    monkeypatch.setattr(_engine, "_export", broken)
    with pytest.warns(EngineFallbackWarning, match="tf2onnx cannot convert this graph"):
        loaded = PatchClassifier.load(path, engine="onnxruntime")
    assert loaded.engine == "onnxruntime" and loaded.engine_ == "tensorflow"
    np.testing.assert_array_equal(loaded.predict(x), expected)
    assert not (tmp_path / "clf.onnx").exists()


def test_an_export_that_disagrees_with_tensorflow_is_refused(
    models: tuple[PatchClassifier, PatchClassifier],
    x: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clf = models[1]
    expected = _tf_predictions(clf, x)
    real = _engine._session_function

    def skewed(onnx_bytes: bytes) -> _engine.Inference:
        infer = real(onnx_bytes)

        def wrong(batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            p = infer(batch)
            return np.stack([p[:, 0] - 1e-3, p[:, 1] + 1e-3], axis=1)

        return wrong

    monkeypatch.setattr(_engine, "_session_function", skewed)
    clf.engine = "onnxruntime"
    with pytest.warns(EngineFallbackWarning, match="differ from TensorFlow's by 1.00e-03"):
        got = clf.predict(x)
    assert clf.engine_ == "tensorflow"
    np.testing.assert_array_equal(got, expected)


def test_an_unknown_engine_is_a_clear_error(models: tuple[PatchClassifier, Any]) -> None:
    with pytest.raises(ParameterError, match="engine must be one of"):
        PatchClassifier("small_cnn", engine="openvino").fit(
            (np.zeros((2, SIZE, SIZE, 3), np.uint8), [0, 1])
        )
    clf = models[0]
    clf.engine = "tensorrt"
    try:
        with pytest.raises(ParameterError, match="'tensorrt'"):
            clf.predict(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    finally:
        clf.engine = "tensorflow"


def test_names_identify_the_weights_not_the_engine(
    tmp_path: Path, models: tuple[PatchClassifier, PatchClassifier]
) -> None:
    a, b = models
    assert a.name.startswith(f"small_cnn-{SIZE}-") and a.name != b.name
    assert PatchClassifier("resnet50").name == "resnet50-224"  # not built yet
    loaded = PatchClassifier.load(a.save(tmp_path / "a.keras"), engine="onnxruntime")
    assert loaded.name == a.name
    ensemble = EnsembleClassifier([a, b], weights=[3, 1])
    assert ensemble.name == f"ensemble({a.name}:0.75, {b.name}:0.25)"


def test_build_predicts_with_the_weights_file_without_training(
    tmp_path: Path, models: tuple[PatchClassifier, PatchClassifier], x: npt.NDArray[np.uint8]
) -> None:
    trained = models[0]
    trained.engine = "tensorflow"
    weights = tmp_path / "trained.weights.h5"
    trained.model_.save_weights(weights)
    built = PatchClassifier("small_cnn", input_size=SIZE, weights=weights).build()
    np.testing.assert_allclose(built.predict(x), trained.predict(x), atol=1e-6)
    assert built.history_.epoch.size == 0 and built.class_counts_.tolist() == [0, 0]
    again = PatchClassifier.load(built.save(tmp_path / "built.keras"))
    np.testing.assert_array_equal(again.predict(x), built.predict(x))
