"""cervixwsi.plotting's multi-panel figures: models side by side (Fig. 4) and heatmaps (Fig. 5)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from cervixwsi.errors import ParameterError  # noqa: E402
from cervixwsi.geometry import Raster  # noqa: E402
from cervixwsi.heatmap import Heatmap, HeatmapInfo  # noqa: E402
from cervixwsi.metrics import compare_models, froc, roc_curve  # noqa: E402
from cervixwsi.plotting import plot_heatmap_panels, plot_model_comparison  # noqa: E402
from cervixwsi.slide import ArraySlide  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def scores() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(12), np.ones(12)].astype(int)
    return y, {
        k: rng.normal(size=24) + shift * y for k, shift in zip("ABCD", (1, 2, 0.5, 3), strict=True)
    }


def a_froc(p: float) -> object:
    mask = np.zeros((64, 64), bool)
    mask[10:50, 10:50] = True
    return froc({"t": mask, "n": None}, {"t": [[p, 640, 640]], "n": [[0.3, 10, 10]]}, mpp=0.243)


def test_model_comparison_has_roc_froc_and_score_panels_with_shared_colours() -> None:
    y, s = scores()
    rocs = {k: roc_curve(y, v) for k, v in s.items()}
    frocs = {k: a_froc(p) for k, p in zip("ABCD", (0.9, 0.8, 0.2, 0.95), strict=True)}
    table = compare_models(s, y, froc_by_model=frocs, reference="D")  # type: ignore[arg-type]
    study = {
        "A": (0.9476, 0.5279),
        "B": (0.9621, 0.5417),
        "C": (0.9593, 0.5338),
        "D": (0.9784, 0.5609),
    }
    fig = plot_model_comparison(
        rocs,
        frocs,
        comparison=table,
        reference_scores=study,
        reference_label="study",  # type: ignore[arg-type]
    )
    roc_ax, froc_ax, score_ax = fig.axes
    assert roc_ax.get_title() == "ROC, 24 test slides (12 tumor, 12 normal)"
    assert froc_ax.get_title() == "FROC, 1 lesions on 2 slides"
    assert [t.get_text() for t in roc_ax.get_legend().get_texts()] == [
        f"{k} (AUC = {rocs[k].auc:.3f})" for k in "ABCD"
    ]
    roc_colours = [to_rgb(line.get_color()) for line in roc_ax.lines[1:]]
    froc_colours = [to_rgb(line.get_color()) for line in froc_ax.lines[::2]]
    assert roc_colours == froc_colours and len(set(roc_colours)) == 4
    assert [t.get_text() for t in score_ax.get_xticklabels()] == list("ABCD")
    assert [t.get_text() for t in score_ax.get_legend().get_texts()] == [
        "AUC (95 % CI)",
        "FROC score",
        "study AUC",
        "study FROC",
    ]
    # Per model: the AUC point (with its CI bar), the FROC square, two reference markers.
    auc_points = {round(float(line.get_ydata()[0]), 6) for line in score_ax.lines}
    for k in "ABCD":
        assert round(rocs[k].auc, 6) in auc_points
        assert round(study[k][0], 6) in auc_points and round(study[k][1], 6) in auc_points
    bars = [c for c in score_ax.collections if c.get_segments()]  # type: ignore[attr-defined]
    (low, high) = bars[0].get_segments()[0][:, 1]
    row = table.row("A")
    assert (low, high) == pytest.approx((row.auc_low, row.auc_high))


def test_model_comparison_without_froc_has_two_panels_and_checks_names() -> None:
    y, s = scores()
    fig = plot_model_comparison({"A": roc_curve(y, s["A"])})
    assert [ax.get_title() for ax in fig.axes] == ["ROC", "Scores"]
    with pytest.raises(ParameterError, match="without an ROC curve: \\['B'\\]"):
        plot_model_comparison({"A": roc_curve(y, s["A"])}, reference_scores={"B": (0.9, 0.5)})
    with pytest.raises(ParameterError, match="at least one model"):
        plot_model_comparison({})


def heatmap(value: float, dims: tuple[int, int] = (700, 500)) -> Heatmap:
    w, h = dims
    arr = np.full((h // 100, w // 100), value, np.float32)
    arr[0, 0] = np.nan
    info = HeatmapInfo("s", 100, 0, 1.0, 100.0, 0.5, "demo")
    return Heatmap(arr, 100, dims, tissue_mask=np.isfinite(arr), info=info, mpp=0.25)


def test_heatmap_panels_slide_with_ground_truth_then_one_panel_per_heatmap() -> None:
    slide = ArraySlide(np.full((500, 700, 3), 220, np.uint8), mpp=0.25)
    gt = Raster(np.zeros((50, 70), bool), 10, (700, 500))
    gt.array[10:40, 10:40] = True
    maps = {name: heatmap(v) for name, v in (("A", 0.2), ("B", 0.5), ("C", 0.7), ("D", 0.9))}
    fig = plot_heatmap_panels(slide, maps, ground_truth=gt, max_size=140)
    *panels, colour_bar = fig.axes
    assert len(panels) == 5
    assert [ax.get_title() for ax in panels] == [
        "a  slide and ground truth",
        "b  A",
        "c  B",
        "d  C",
        "e  D",
    ]
    assert colour_bar.get_ylabel() == "tumor probability"
    assert tuple(map(float, colour_bar.get_ylim())) == (0.0, 1.0)
    # Panel a: the thumbnail and the ground truth, no heatmap colour.
    first = maps["A"]
    expected = first.overlay(
        slide,
        max_size=140,
        alpha=0.0,
        tissue_outline=False,
        ground_truth=gt,
        colorbar=False,
        legend=False,
        scale_bar=False,
    )
    np.testing.assert_array_equal(panels[0].get_images()[0].get_array(), expected)
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ["ground truth"]
    bars = [a for a in panels[0].artists if a.get_gid() == "scale bar"]
    assert [t.get_text() for b in bars for t in b.findobj(Text) if t.get_text()] == ["20 µm"]
    # Panels b-e: each heatmap over the slide, as its overlay draws it.
    for ax, m in zip(panels[1:], maps.values(), strict=True):
        picture = m.overlay(
            slide, max_size=140, ground_truth=gt, colorbar=False, legend=False, scale_bar=False
        )
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), picture)
    assert [t.get_text() for t in panels[1].get_legend().get_texts()] == ["tissue", "ground truth"]


def test_heatmap_panels_without_ground_truth_and_bad_inputs() -> None:
    thumb = np.full((50, 70, 3), 200, np.uint8)
    fig = plot_heatmap_panels(thumb, {"only": heatmap(0.4)}, max_size=70)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a  slide", "b  only"]
    assert fig.axes[0].get_legend() is None
    with pytest.raises(ParameterError, match="at least one heatmap"):
        plot_heatmap_panels(thumb, {})
    with pytest.raises(ParameterError, match="must be over one slide"):
        plot_heatmap_panels(thumb, {"a": heatmap(0.4), "b": heatmap(0.4, (800, 500))})
