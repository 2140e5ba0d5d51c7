"""cervixwsi.plotting: what the ROC and FROC figures draw (Agg backend)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from cervixwsi.geometry import Raster  # noqa: E402
from cervixwsi.heatmap import Heatmap, HeatmapInfo  # noqa: E402
from cervixwsi.heatmap._overlay import colormap_rgb  # noqa: E402
from cervixwsi.metrics import froc, roc_curve  # noqa: E402
from cervixwsi.plotting import plot_froc, plot_heatmap, plot_roc  # noqa: E402


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


def line_pixels(ax: Any, colour: str) -> npt.NDArray[np.bool_]:
    """The pixels of the rendered figure that have (nearly) ``colour``, rows from the top."""
    ax.figure.canvas.draw()
    image = np.asarray(ax.figure.canvas.buffer_rgba())[..., :3].astype(int)
    target = np.array(to_rgb(colour)) * 255
    mask: npt.NDArray[np.bool_] = (np.abs(image - target) < 40).all(axis=2)
    return mask


def test_a_perfect_roc_curve_is_visible_along_the_edges() -> None:
    y = [0, 0, 0, 1, 1, 1]
    ax = plot_roc({"perfect": roc_curve(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])}, chance=False)
    (line,) = ax.lines
    assert [0.0, 1.0] in line.get_xydata().tolist()  # up the left edge, along the top
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    assert x_lo < 0 and x_hi > 1 and y_lo < 0 and y_hi > 1
    assert not line.get_clip_on()
    assert line.get_zorder() > max(spine.get_zorder() for spine in ax.spines.values())
    # Rendered: the curve's colour runs the whole height at x = 0 and the whole width at y = 1.
    blue = line_pixels(ax, line.get_color())
    height = ax.figure.canvas.get_width_height()[1]
    (left, bottom), (right, top) = np.rint(ax.transData.transform([(0, 0), (1, 1)])).astype(int)
    bottom, top = height - bottom, height - top  # image rows count from the top
    assert blue[top - 1 : top + 2, left:right].any(axis=0).mean() > 0.95
    assert blue[top:bottom, left - 1 : left + 2].any(axis=1).mean() > 0.95


def test_curve_styles_given_by_the_caller_win() -> None:
    ax = plot_roc(two_models(), clip_on=True, zorder=1)  # type: ignore[arg-type]
    assert all(line.get_clip_on() and line.get_zorder() == 1 for line in ax.lines[1:])


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
    assert ax.get_xlim() == (-0.085, 8.5)  # x_max, and a margin left of 0
    assert ax.get_ylim() == (-0.01, 1.01)
    ax.figure.savefig(tmp_path / "froc.png")
    assert (tmp_path / "froc.png").read_bytes()[:4] == b"\x89PNG"


def small_heatmap(mpp: float | None = 0.25) -> Heatmap:
    p = np.array([[0.0, 0.5, np.nan], [1.0, 0.25, 0.75]], np.float32)
    info = HeatmapInfo("slide-7", 256, 0, 1.0, 256.0, 0.5, "test")
    return Heatmap(p, 256, (700, 500), tissue_mask=np.isfinite(p), info=info, mpp=mpp)


def scale_bar_labels(ax: Any) -> list[str]:
    bars = [a for a in ax.artists if a.get_gid() == "scale bar"]
    return [t.get_text() for bar in bars for t in bar.findobj(Text) if t.get_text()]


def test_plot_heatmap_draws_the_picture_with_colour_bar_legend_and_scale_bar() -> None:
    heat = small_heatmap()
    thumb = np.full((500, 700, 3), 230, np.uint8)
    gt = Raster(np.zeros((50, 70), bool), 10, (700, 500))
    gt.array[10:40, 10:40] = True
    ax = plot_heatmap(heat, thumb, max_size=700, ground_truth=gt)
    (image,) = ax.get_images()
    expected = heat.overlay(
        thumb, max_size=700, ground_truth=gt, colorbar=False, legend=False, scale_bar=False
    )
    np.testing.assert_array_equal(image.get_array(), expected)  # the picture without its key
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["tissue", "ground truth"]
    colours = [h.get_color() for h in ax.get_legend().legend_handles]
    np.testing.assert_allclose(colours, [[1, 1, 1], [0, 200 / 255, 0]])
    (colour_bar,) = ax.child_axes
    assert colour_bar.get_ylabel() == "tumor probability"
    assert tuple(map(float, colour_bar.get_ylim())) == (0.0, 1.0)
    assert scale_bar_labels(ax) == ["20 µm"]  # 0.25 µm per pixel, at most 140 pixels


def test_plot_heatmap_colour_bar_is_the_overlays_colour_map() -> None:
    ax = plot_heatmap(small_heatmap(), np.zeros((50, 70, 3), np.uint8), colormap="viridis")
    (colour_bar,) = ax.child_axes
    (ramp,) = [c for c in colour_bar.collections if isinstance(c, QuadMesh)]
    cmap = ramp.get_cmap()
    np.testing.assert_allclose(
        cmap(np.arange(256))[:, :3] * 255, colormap_rgb("viridis"), atol=1e-6
    )


def test_plot_heatmap_parts_can_be_switched_off_and_the_scale_bar_falls_back_to_pixels() -> None:
    ax = plot_heatmap(
        small_heatmap(mpp=None), np.zeros((50, 70, 3), np.uint8), max_size=70, colorbar=False
    )
    assert ax.figure.axes == [ax] and not ax.child_axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tissue"]
    assert scale_bar_labels(ax) == ["100 px (level 0)"]
    _fig, other = plt.subplots()
    bare = plot_heatmap(
        small_heatmap(), np.zeros((50, 70, 3), np.uint8), other, legend=False, scale_bar=False
    )
    assert bare is other and bare.get_legend() is None and not scale_bar_labels(bare)


def test_import_does_not_import_matplotlib() -> None:
    code = "import sys, cervixwsi.plotting, cervixwsi.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
