"""cervixwsi.plotting: what the ROC and FROC figures draw (Agg backend)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from cervixwsi.metrics import froc, roc_curve  # noqa: E402
from cervixwsi.plotting import plot_froc, plot_roc  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def two_models() -> dict[str, object]:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    return {
        "InceptionV3": roc_curve(y, rng.normal(size=60) + 2 * y),
        "ResNet50": roc_curve(y, rng.normal(size=60) + 0.5 * y),
    }


def test_plot_roc_draws_each_curve_with_its_auc_in_the_legend() -> None:
    curves = two_models()
    ax = plot_roc(curves)  # type: ignore[arg-type]
    chance, *lines = ax.lines
    assert chance.get_xydata().tolist() == [[0, 0], [1, 1]]
    for line, curve in zip(lines, curves.values(), strict=True):
        np.testing.assert_array_equal(line.get_xdata(), curve.fpr)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(line.get_ydata(), curve.tpr)  # type: ignore[attr-defined]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [
        f"{name} (AUC = {c.auc:.3f})"  # type: ignore[attr-defined]
        for name, c in curves.items()
    ]
    assert ax.get_xlabel().startswith("False positive rate")


def test_plot_roc_on_given_axes_without_chance_line() -> None:
    _fig, (left, right) = plt.subplots(1, 2)
    out = plot_roc(two_models(), ax=right, chance=False, decimals=2)  # type: ignore[arg-type]
    assert out is right and len(right.lines) == 2 and not left.lines
    texts = [t.get_text() for t in right.get_legend().get_texts()]
    assert [re.fullmatch(r"(\w+) \(AUC = \d\.\d\d\)", t) is not None for t in texts] == [True] * 2


def test_plot_froc_draws_curve_and_six_evaluation_points(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), bool)
    mask[10:50, 10:50] = True
    mask2 = np.zeros((64, 64), bool)
    mask2[5:45, 20:60] = True
    dets = {
        "a": np.array([[0.9, 640, 640], [0.7, 1900, 1900], [0.4, 100, 1900]]),
        "b": np.array([[0.3, 1000, 800], [0.8, 100, 100]]),
    }
    results = {
        "ensemble": froc({"a": mask, "b": mask2}, dets, mpp=0.243),
        "strict": froc({"a": mask, "b": mask2}, dets, mpp=0.243, protocol="strict"),
    }
    ax = plot_froc(results)
    assert len(ax.lines) == 4
    for (curve, points), r in zip(
        zip(ax.lines[::2], ax.lines[1::2], strict=True), results.values(), strict=True
    ):
        np.testing.assert_array_equal(curve.get_xdata(), r.fps_per_image[::-1])
        np.testing.assert_array_equal(curve.get_ydata(), r.sensitivity[::-1])
        np.testing.assert_array_equal(points.get_xdata(), [0.25, 0.5, 1, 2, 4, 8])
        np.testing.assert_array_equal(points.get_ydata(), r.eval_sensitivities)
        assert points.get_marker() == "o" and points.get_color() == curve.get_color()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [f"{k} (FROC = {r.score:.3f})" for k, r in results.items()]
    assert ax.get_xlim() == (0.0, 8.5)
    ax.figure.savefig(tmp_path / "froc.png")
    assert (tmp_path / "froc.png").read_bytes()[:4] == b"\x89PNG"


def test_import_does_not_import_matplotlib() -> None:
    code = "import sys, cervixwsi.plotting, cervixwsi.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
