"""Tests of cervixwsi.models._devices: memory growth, one GPU per worker, mirrored training.

This machine has no GPU, so ``tf.config`` is replaced by a fake that behaves like
TensorFlow's (the same errors once "initialised") and records what is asked of it; the
mirrored strategy is tested for real over two logical CPU devices in a subprocess.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from cervixwsi.cohort import ModelSpec, _models
from cervixwsi.errors import ParameterError
from cervixwsi.models import _devices
from cervixwsi.models._devices import (
    MEMORY_GROWTH_ENV,
    WORKER_INDEX_ENV,
    assign_gpu,
    configure_memory_growth,
    memory_growth_requested,
    training_strategy,
    worker_index,
)

# ------------------------------------------------------------------------ a fake TF


class Device(NamedTuple):
    name: str
    device_type: str


class Logical(NamedTuple):
    memory_limit: int | None = None


class FakeConfig:
    """``tf.config`` with ``n`` GPUs: records calls, raises as TensorFlow does once running."""

    LogicalDeviceConfiguration = Logical

    def __init__(self, n: int, *, running: bool = False) -> None:
        self.gpus = [Device(f"/physical_device:GPU:{i}", "GPU") for i in range(n)]
        self.growth: dict[Device, bool | None] = dict.fromkeys(self.gpus)
        self.logical: dict[Device, list[Logical]] = {}
        self.visible: list[Device] = list(self.gpus)
        self.running = running
        self.listed = 0
        self.calls: list[tuple[Any, ...]] = []
        self.experimental = types.SimpleNamespace(
            get_memory_growth=lambda d: self.growth[d],
            set_memory_growth=self._set_memory_growth,
        )

    def list_physical_devices(self, kind: str | None = None) -> list[Device]:
        self.listed += 1
        return list(self.gpus) if kind == "GPU" else []

    def list_logical_devices(self, kind: str | None = None) -> list[Device]:
        return [Device(f"/device:GPU:{i}", "GPU") for i in range(len(self.visible))]

    def _set_memory_growth(self, device: Device, enable: bool) -> None:
        self.calls.append(("growth", device.name, enable))
        if device in self.logical:
            raise ValueError("Cannot set memory growth on device when virtual devices configured")
        if self.growth[device] == enable:
            return
        if self.running:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        self.growth[device] = enable

    def get_logical_device_configuration(self, device: Device) -> list[Logical] | None:
        return self.logical.get(device)

    def set_logical_device_configuration(self, device: Device, confs: list[Logical]) -> None:
        self.calls.append(("logical", device.name, tuple(confs)))
        if self.running:
            raise RuntimeError("Virtual devices cannot be modified after being initialized")
        self.logical[device] = confs

    def set_visible_devices(self, devices: list[Device], kind: str) -> None:
        self.calls.append(("visible", tuple(d.name for d in devices), kind))
        if self.visible == devices:
            return
        if self.running:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        self.visible = list(devices)


class FakeDistribute:
    def __init__(self, scoped: Any = None) -> None:
        self.scoped = scoped
        self.default = object()

    def has_strategy(self) -> bool:
        return self.scoped is not None

    def get_strategy(self) -> Any:
        return self.scoped if self.scoped is not None else self.default

    def MirroredStrategy(self, devices: list[str]) -> Any:  # TensorFlow's name
        return ("mirrored", tuple(devices))


def fake_tf(n: int, **kwargs: Any) -> Any:
    return types.SimpleNamespace(config=FakeConfig(n, **kwargs), distribute=FakeDistribute())


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No worker index, no opt-out, no Dask, nothing logged yet."""
    for name in (WORKER_INDEX_ENV, MEMORY_GROWTH_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    monkeypatch.delitem(sys.modules, "dask_cuda", raising=False)
    monkeypatch.setattr(multiprocessing, "current_process", lambda: types.SimpleNamespace())
    monkeypatch.setattr(_devices, "_LOGGED", set())
    return monkeypatch


def use(monkeypatch: pytest.MonkeyPatch, tf: Any) -> Any:
    monkeypatch.setattr(_devices, "_tensorflow", lambda: tf)
    return tf


# ---------------------------------------------------------------------- memory growth


def test_memory_growth_is_turned_on_on_every_gpu(fresh: pytest.MonkeyPatch) -> None:
    tf = fake_tf(3)
    names = configure_memory_growth(tf)
    assert names == [f"/physical_device:GPU:{i}" for i in range(3)]
    assert all(tf.config.growth[g] is True for g in tf.config.gpus)
    assert configure_memory_growth(tf) == []  # set already: left alone


def test_memory_growth_without_a_gpu_does_nothing(fresh: pytest.MonkeyPatch) -> None:
    tf = fake_tf(0)
    assert configure_memory_growth(tf) == [] and tf.config.calls == []


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_the_environment_opts_out_of_memory_growth(fresh: pytest.MonkeyPatch, value: str) -> None:
    fresh.setenv(MEMORY_GROWTH_ENV, value)
    tf = fake_tf(2)
    assert not memory_growth_requested()
    assert configure_memory_growth(tf) == [] and tf.config.listed == 0
    assert configure_memory_growth(tf, True) == [g.name for g in tf.config.gpus]  # explicit


def test_an_unknown_opt_out_value_is_logged_and_growth_stays_on(
    fresh: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh.setenv(MEMORY_GROWTH_ENV, "maybe")
    with caplog.at_level(logging.WARNING, logger="cervixwsi.models._devices"):
        assert memory_growth_requested() and memory_growth_requested()
    assert [r.getMessage().count("maybe") for r in caplog.records] == [1]
    fresh.setenv(MEMORY_GROWTH_ENV, "1")
    assert memory_growth_requested()


def test_a_users_own_gpu_settings_are_kept(fresh: pytest.MonkeyPatch) -> None:
    tf = fake_tf(2)
    tf.config.growth[tf.config.gpus[0]] = False  # set by the user before the import
    assert configure_memory_growth(tf) == [] and tf.config.calls == []
    tf = fake_tf(2)
    tf.config.logical[tf.config.gpus[1]] = [Logical(1024)]  # a memory limit of theirs
    assert configure_memory_growth(tf) == ["/physical_device:GPU:0"]
    assert configure_memory_growth(tf, False) == ["/physical_device:GPU:0"]
    assert tf.config.growth[tf.config.gpus[0]] is False


def test_memory_growth_once_tensorflow_runs_is_logged_not_raised(
    fresh: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tf = fake_tf(2, running=True)
    with caplog.at_level(logging.WARNING, logger="cervixwsi.models._devices"):
        assert configure_memory_growth(tf) == []
    assert len(caplog.records) == 2 and "already runs" in caplog.records[0].getMessage()


@pytest.mark.tf
def test_importing_tensorflow_through_cervixwsi_sets_memory_growth(
    fresh: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tensorflow")
    from cervixwsi.models import _tf

    tf = _tf.tf
    config = FakeConfig(2)
    for name in ("list_physical_devices", "get_logical_device_configuration"):
        fresh.setattr(tf.config, name, getattr(config, name))
    fresh.setattr(
        tf.config.experimental, "get_memory_growth", config.experimental.get_memory_growth
    )
    fresh.setattr(
        tf.config.experimental, "set_memory_growth", config.experimental.set_memory_growth
    )
    assert _tf._load()[0] is tf  # what the first import of cervixwsi.models._tf runs
    assert config.calls == [("growth", f"/physical_device:GPU:{i}", True) for i in range(2)]
    fresh.setenv(MEMORY_GROWTH_ENV, "0")
    config.calls.clear()
    _tf._load()
    assert config.calls == []


# ------------------------------------------------------------------------ worker index


def test_the_worker_index_comes_from_the_environment_first(fresh: pytest.MonkeyPatch) -> None:
    assert worker_index() is None
    fresh.setenv(WORKER_INDEX_ENV, "7")
    assert worker_index() == 7
    fresh.setenv(WORKER_INDEX_ENV, "-1")
    with pytest.raises(ParameterError, match=WORKER_INDEX_ENV):
        worker_index()


@pytest.mark.parametrize(
    ("name", "index"),
    [(0, 0), (3, 3), ("5", 5), ("gpu-node-12", 12), ("tcp://10.0.0.1:8786", None), (None, None)],
)
def test_the_worker_index_of_a_dask_worker_is_its_name(
    fresh: pytest.MonkeyPatch, name: object, index: int | None
) -> None:
    def get_worker() -> Any:
        if name is None:
            raise ValueError("No worker found")
        return types.SimpleNamespace(name=name)

    fresh.setitem(sys.modules, "distributed", types.SimpleNamespace(get_worker=get_worker))
    assert worker_index() == index


def test_the_worker_index_of_a_pool_process_is_its_number(fresh: pytest.MonkeyPatch) -> None:
    child = types.SimpleNamespace(_identity=(4,))
    fresh.setattr(multiprocessing, "current_process", lambda: child)
    assert worker_index() == 3


def _index_in_worker(_: int) -> tuple[int, int | None]:
    return os.getpid(), worker_index()


@pytest.mark.slow
def test_process_pool_workers_have_distinct_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned workers unpickle _index_in_worker by its module, tests.test_devices, on the
    # parent's sys.path: let them import it from the repository root.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    context = multiprocessing.get_context("spawn")
    env = {k: os.environ.pop(k) for k in (WORKER_INDEX_ENV,) if k in os.environ}
    try:
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            found = dict(pool.map(_index_in_worker, range(16)))
    finally:
        os.environ.update(env)
    indices = list(found.values())
    assert None not in indices and len(set(indices)) == len(found)  # one index per process


# -------------------------------------------------------------------------- assign_gpu


def test_assign_gpu_without_a_gpu_is_a_no_op_logged_once(
    fresh: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tf = use(fresh, fake_tf(0))
    with caplog.at_level(logging.INFO, logger="cervixwsi.models._devices"):
        assert assign_gpu(3) is None and assign_gpu(memory_limit=100) is None
    assert tf.config.calls == []
    assert [r.getMessage() for r in caplog.records] == [
        "no GPU visible: TensorFlow runs on the CPU"
    ]


def test_workers_take_the_gpus_round_robin(fresh: pytest.MonkeyPatch) -> None:
    for index in range(6):
        tf = use(fresh, fake_tf(4))
        assert assign_gpu(index) == f"/physical_device:GPU:{index % 4}"
        assert tf.config.calls == [("visible", (f"/physical_device:GPU:{index % 4}",), "GPU")]


def test_assign_gpu_takes_the_index_of_the_worker(fresh: pytest.MonkeyPatch) -> None:
    fresh.setenv(WORKER_INDEX_ENV, "5")
    tf = use(fresh, fake_tf(2))
    assert assign_gpu() == "/physical_device:GPU:1"
    assert tf.config.visible == [tf.config.gpus[1]]


def test_a_memory_limit_makes_one_logical_device(fresh: pytest.MonkeyPatch) -> None:
    tf = use(fresh, fake_tf(2))
    assert assign_gpu(2, memory_limit=np.int64(4096)) == "/physical_device:GPU:0"
    assert tf.config.calls == [
        ("visible", ("/physical_device:GPU:0",), "GPU"),
        ("logical", "/physical_device:GPU:0", (Logical(4096),)),
    ]


def test_outside_a_worker_one_gpu_is_used_and_several_are_kept(
    fresh: pytest.MonkeyPatch,
) -> None:
    tf = use(fresh, fake_tf(1))
    assert assign_gpu() == "/physical_device:GPU:0"
    tf = use(fresh, fake_tf(2))
    assert assign_gpu() is None and tf.config.calls == []


def test_assign_gpu_once_tensorflow_runs_is_logged_not_raised(
    fresh: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    use(fresh, fake_tf(2, running=True))
    with caplog.at_level(logging.WARNING, logger="cervixwsi.models._devices"):
        assert assign_gpu(1) is None
    assert "already runs" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"index": -1}, "assign_gpu.index"),
        ({"index": True}, "assign_gpu.index"),
        ({"index": 1.0}, "assign_gpu.index"),
        ({"memory_limit": 0}, "assign_gpu.memory_limit"),
    ],
)
def test_assign_gpu_checks_its_arguments(
    fresh: pytest.MonkeyPatch, kwargs: dict[str, Any], match: str
) -> None:
    tf = use(fresh, fake_tf(2))
    with pytest.raises(ParameterError, match=match):
        assign_gpu(**kwargs)
    assert tf.config.listed == 0


# ------------------------------------------------------------- ModelSpec on a worker


def test_model_spec_checks_its_gpu_options(tmp_path: Path) -> None:
    assert ModelSpec(tmp_path / "m.keras").gpu == "auto"
    assert ModelSpec(tmp_path / "m.keras", gpu=np.int64(2)).gpu == 2
    assert ModelSpec(tmp_path / "m.keras", gpu=None).gpu is None
    for bad in (-1, True, "gpu0", 1.5):
        with pytest.raises(ParameterError, match=r"ModelSpec\.gpu"):
            ModelSpec(tmp_path / "m.keras", gpu=bad)
    with pytest.raises(ParameterError, match=r"ModelSpec\.gpu_memory"):
        ModelSpec(tmp_path / "m.keras", gpu_memory=0)
    with pytest.raises(ParameterError, match="gpu=None"):
        ModelSpec(tmp_path / "m.keras", gpu=None, gpu_memory=1024)
    assert (
        ModelSpec(tmp_path / "m.keras", gpu=1).identity()
        == ModelSpec(tmp_path / "m.keras").identity()
    )  # where it runs is not part of the results' identity


@pytest.fixture
def prepared(fresh: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What ``_prepare_tensorflow`` asks of ``_devices``, recorded; a fresh process."""
    pytest.importorskip("tensorflow")
    calls: list[tuple[Any, ...]] = []
    fresh.setattr(_models, "_TF_READY", False)
    fresh.setattr(
        _devices, "configure_memory_growth", lambda tf, enable=None: calls.append(("mg", enable))
    )
    fresh.setattr(
        _devices,
        "assign_gpu",
        lambda index=None, *, memory_limit=None: calls.append(("gpu", index, memory_limit)),
    )
    return calls


@pytest.mark.tf
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, [("mg", None)]),  # what the command line's training does: every GPU stays
        ({"gpu": "auto"}, [("mg", None), ("gpu", None, None)]),
        ({"gpu": 2, "gpu_memory": 512}, [("mg", None), ("gpu", 2, 512)]),
        ({"gpu": "auto", "memory_growth": False}, [("mg", False), ("gpu", None, None)]),
    ],
)
def test_a_worker_sets_up_its_gpu_once_before_its_model(
    prepared: list[tuple[Any, ...]], kwargs: dict[str, Any], expected: list[Any]
) -> None:
    growth = kwargs.pop("memory_growth", True)
    _models._prepare_tensorflow(None, growth, **kwargs)
    _models._prepare_tensorflow(None, growth, **kwargs)  # once per process
    assert prepared == expected


@pytest.mark.tf
def test_dask_cuda_workers_take_their_first_gpu(
    prepared: list[tuple[Any, ...]], fresh: pytest.MonkeyPatch
) -> None:
    fresh.setitem(sys.modules, "dask_cuda", types.ModuleType("dask_cuda"))
    _models._prepare_tensorflow(None, True, gpu="auto")
    assert prepared == [("mg", None), ("gpu", 0, None)]


@pytest.mark.tf
def test_model_spec_load_places_the_worker_before_loading(
    prepared: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    from cervixwsi.models import PatchClassifier

    clf = PatchClassifier("small_cnn", input_size=32, seed=0, progress=False).build()
    path = clf.save(tmp_path / "cnn.keras")
    model = ModelSpec(path, gpu=1, gpu_memory=2048).load()
    assert prepared == [("mg", None), ("gpu", 1, 2048)]
    x = np.zeros((2, 32, 32, 3), np.uint8)
    assert np.array_equal(model.predict(x), clf.predict(x))


# -------------------------------------------------------------------- training strategy


def test_several_gpus_train_under_a_mirrored_strategy(fresh: pytest.MonkeyPatch) -> None:
    tf = use(fresh, fake_tf(3))
    assert training_strategy() == ("mirrored", ("/device:GPU:0", "/device:GPU:1", "/device:GPU:2"))
    tf = use(fresh, fake_tf(1))
    assert training_strategy() is tf.distribute.default  # one GPU: the default code path
    tf = use(fresh, fake_tf(0))
    assert training_strategy() is tf.distribute.default
    tf = use(fresh, fake_tf(4))
    tf.distribute.scoped = mine = object()
    assert training_strategy() is mine  # inside the caller's own strategy scope


@pytest.mark.tf
def test_named_devices_are_checked() -> None:
    tf = pytest.importorskip("tensorflow")
    assert isinstance(training_strategy(["/cpu:0"]), tf.distribute.OneDeviceStrategy)
    assert training_strategy().num_replicas_in_sync == 1  # no GPU here
    for bad in ("/cpu:0", [], ["/gpu:7"], ["/cpu:0", "/CPU:0"], [3], ["nonsense"]):
        with pytest.raises(ParameterError, match=r"PatchClassifier\.fit\.devices"):
            training_strategy(bad, owner="PatchClassifier.fit.devices")  # type: ignore[arg-type]


@pytest.mark.tf
def test_fit_refuses_devices_it_does_not_see() -> None:
    pytest.importorskip("tensorflow")
    from cervixwsi.models import PatchClassifier

    x = np.zeros((4, 32, 32, 3), np.uint8)
    clf = PatchClassifier("small_cnn", input_size=32, epochs=1, progress=False)
    with pytest.raises(ParameterError, match="not a device TensorFlow sees"):
        clf.fit((x, np.array([0, 1, 0, 1])), devices=["/gpu:1"])


MIRRORED = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from cervixwsi.models import PatchClassifier
    from cervixwsi.models._keras_objects import InputScaling  # registers the saved objects

    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 40, 40, 3), dtype=np.uint8)
    y = np.arange(64) % 2
    devices = ["/cpu:0", "/cpu:1"]

    def classifier():
        return PatchClassifier("small_cnn", input_size=32, batch_size=16, epochs=1, seed=0,
                               progress=False)

    clf = classifier().fit((x, y), (x[:16], y[:16]), checkpoint_dir=out / "ckpt",
                           devices=devices)
    strategy = clf.model_.distribute_strategy
    p = clf.predict(x)
    clf.save(out / "model.keras")
    loaded = PatchClassifier.load(out / "model.keras")  # outside any strategy
    last = keras.saving.load_model(out / "ckpt" / "last.keras", compile=False)
    crop = x[:, 4:36, 4:36]
    resumed = classifier().fit((x, y), epochs=2, checkpoint_dir=out / "ckpt", devices=devices)
    print(json.dumps({
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "epochs": resumed.history_.epoch.tolist(),
        "loss": clf.history_.loss.tolist(),
        "files": sorted(f.name for f in (out / "ckpt").iterdir()),
        "loaded": float(np.abs(loaded.predict(x) - p).max()),
        "checkpoint": float(np.abs(np.asarray(last(crop))[:, 1] - p).max()),
        "steps": int(resumed.model_.optimizer.iterations.numpy()),
        "resumed_strategy": type(resumed.model_.distribute_strategy).__name__,
    }))
    """
)


@pytest.mark.slow  # about 30 s on 2 cores: two TensorFlow imports, two mirrored fits
@pytest.mark.tf
def test_training_is_mirrored_over_two_devices_and_loads_on_one(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["strategy"] == "MirroredStrategy" and found["replicas"] == 2
    assert found["resumed_strategy"] == "MirroredStrategy"
    assert len(found["loss"]) == 1 and np.isfinite(found["loss"]).all()
    assert found["files"] == ["best.keras", "history.csv", "last.keras", "state.json"]
    assert found["loaded"] <= 1e-6 and found["checkpoint"] <= 1e-6
    assert found["epochs"] == [1, 2] and found["steps"] == 2 * 4  # resumed under the strategy


@pytest.mark.tf
def test_mixed_precision_trains_with_a_float32_softmax() -> None:
    keras = pytest.importorskip("keras")
    from cervixwsi.models import PatchClassifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 40, 40, 3), dtype=np.uint8)
    y = np.arange(16) % 2
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        clf = PatchClassifier(
            "small_cnn", input_size=32, batch_size=8, epochs=1, seed=0, progress=False
        ).fit((x, y))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = clf.model_
    assert model.get_layer("small_cnn").dtype_policy.name == "mixed_float16"
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert np.isfinite(clf.history_.loss).all() and np.isfinite(clf.history_.learning_rate).all()
    p = clf.predict(x)
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
