"""Figures with matplotlib (the ``plot`` extra): evaluation curves (the study's Fig. 4), heatmaps.

matplotlib is imported only when a function is called, so ``import
cervixwsi.plotting`` is cheap and works without it.  Every function draws on
the ``ax`` it is given (or on a new figure's axes) and returns the axes, so
figures compose as users expect from matplotlib.

Sections: evaluation curves (:func:`plot_roc`, :func:`plot_froc`); heatmaps over
their slides (:func:`plot_heatmap`, the study's Fig. 5).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from cervixwsi.metrics import roc_curve
>>> from cervixwsi.plotting import plot_roc
>>> ax = plot_roc({"ResNet50": roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])})
>>> ax.get_legend().get_texts()[0].get_text()
'ResNet50 (AUC = 0.750)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import os

    import numpy as np
    import numpy.typing as npt
    from matplotlib.axes import Axes

    from cervixwsi.heatmap import Heatmap
    from cervixwsi.metrics import FROCResult, RocCurve
    from cervixwsi.slide import BaseSlide

__all__ = ["plot_froc", "plot_heatmap", "plot_roc"]

# Curves are drawn above the axes' frame (spines are at 2.5), so that a curve running
# along an edge (a perfect ROC curve: up the left edge, along the top) stays visible.
_CURVE_ZORDER = 3
# The axes show a little more than [0, 1], for the same reason.
_MARGIN = 0.01


def _axes(ax: Axes | None, **figure_kwargs: Any) -> Axes:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cervixwsi.plotting needs matplotlib: pip install 'cervixwsi[plot]'"
        ) from exc
    _, new_ax = plt.subplots(figsize=(5, 5), **figure_kwargs)
    return cast("Axes", new_ax)


# --- evaluation curves -----------------------------------------------------------------


def plot_roc(
    curves: Mapping[str, RocCurve],
    ax: Axes | None = None,
    *,
    chance: bool = True,
    decimals: int = 3,
    **line_kwargs: Any,
) -> Axes:
    """ROC curves of several models on one axes, their AUCs in the legend.

    Parameters
    ----------
    curves : mapping of str to RocCurve
        Per model name, its curve (:func:`cervixwsi.metrics.roc_curve`), drawn
        in the mapping's order.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 5×5-inch figure by default.
    chance : bool
        Draw the diagonal of a random classifier (dashed grey, not in the legend).
    decimals : int
        Decimals of the AUC in the legend.
    **line_kwargs
        Passed to every curve's :meth:`~matplotlib.axes.Axes.plot` call (they
        override the defaults ``clip_on=False`` and ``zorder=3``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes show ``[-0.01, 1.01]`` on both axes and the curves are drawn
        above the frame, so a perfect model's curve (along the left and top
        edges) is seen.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from cervixwsi.metrics import roc_curve
    >>> from cervixwsi.plotting import plot_roc
    >>> y = [0, 0, 1, 1, 1]
    >>> ax = plot_roc({"a": roc_curve(y, [0.1, 0.2, 0.7, 0.8, 0.9]),
    ...                "b": roc_curve(y, [0.1, 0.8, 0.7, 0.2, 0.9])})
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['a (AUC = 1.000)', 'b (AUC = 0.667)']
    """
    ax = _axes(ax)
    if chance:
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="_chance")
    style = {"clip_on": False, "zorder": _CURVE_ZORDER, **line_kwargs}
    for name, curve in curves.items():
        ax.plot(
            curve.fpr,
            curve.tpr,
            label=f"{name} (AUC = {curve.auc:.{decimals}f})",
            **style,
        )
    ax.set_xlim(-_MARGIN, 1 + _MARGIN)
    ax.set_ylim(-_MARGIN, 1 + _MARGIN)
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("ROC")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return ax


def plot_froc(
    results: Mapping[str, FROCResult],
    ax: Axes | None = None,
    *,
    x_max: float = 8.5,
    decimals: int = 3,
    **line_kwargs: Any,
) -> Axes:
    """FROC curves of several models, the six evaluation points marked, scores in the legend.

    Parameters
    ----------
    results : mapping of str to FROCResult
        Per model name, its FROC evaluation (:func:`cervixwsi.metrics.froc`).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 5×5-inch figure by default.
    x_max : float
        Right limit of the x axis (average false positives per slide); the
        curves are drawn in full, the view shows ``[0, x_max]`` (with a margin
        of 1 % left of 0, and ``[-0.01, 1.01]`` of sensitivity, so that curves
        along the edges are seen; they are drawn above the frame).
    decimals : int
        Decimals of the FROC score in the legend.
    **line_kwargs
        Passed to every curve's :meth:`~matplotlib.axes.Axes.plot` call (they
        override the default ``zorder=3``).

    Returns
    -------
    matplotlib.axes.Axes
        One line per model (``ax.lines``, curve then markers of its six
        evaluation points at 1/4, 1/2, 1, 2, 4 and 8 FPs per slide).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from cervixwsi.metrics import froc
    >>> from cervixwsi.plotting import plot_froc
    >>> mask = np.zeros((64, 64), bool)
    >>> mask[10:50, 10:50] = True
    >>> r = froc({"s": mask}, {"s": [[0.9, 640, 640], [0.5, 1900, 1900]]}, mpp=0.243)
    >>> ax = plot_froc({"ensemble": r})
    >>> ax.get_legend().get_texts()[0].get_text()
    'ensemble (FROC = 1.000)'
    """
    ax = _axes(ax)
    style = {"zorder": _CURVE_ZORDER, **line_kwargs}
    for name, result in results.items():
        (line,) = ax.plot(
            result.fps_per_image[::-1],
            result.sensitivity[::-1],
            label=f"{name} (FROC = {result.score:.{decimals}f})",
            **style,
        )
        ax.plot(
            result.eval_fps,
            result.eval_sensitivities,
            linestyle="none",
            marker="o",
            markersize=5,
            color=line.get_color(),
            label=f"_{name} evaluation points",
            zorder=_CURVE_ZORDER,
        )
    ax.set_xlim(-_MARGIN * x_max, x_max)
    ax.set_ylim(-_MARGIN, 1 + _MARGIN)
    ax.set_xlabel("Average number of false positives per slide")
    ax.set_ylabel("Lesion detection sensitivity")
    ax.set_title("FROC")
    ax.legend(loc="lower right")
    return ax


# --- heatmaps --------------------------------------------------------------------------


def plot_heatmap(
    heatmap: Heatmap,
    slide: BaseSlide | str | os.PathLike[str] | npt.NDArray[np.uint8],
    ax: Axes | None = None,
    *,
    max_size: int = 1024,
    alpha: float = 0.5,
    colormap: str = "jet",
    ground_truth: Any = None,
    tissue_outline: bool = True,
    colorbar: bool = True,
    legend: bool = True,
    scale_bar: bool = True,
) -> Axes:
    """A heatmap over its slide with a colour bar, a legend and a scale bar (Fig. 5).

    The picture is :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>` without
    its own key; the key is drawn with matplotlib around it instead, so it hides no
    tissue: the colour bar of the tumor probability (0 to 1, the overlay's colour map)
    on the right, the legend of the outlines and the scale bar below the picture.

    Parameters
    ----------
    heatmap : Heatmap
        The heatmap (:class:`cervixwsi.heatmap.Heatmap`).
    slide : BaseSlide, path or numpy.ndarray
        The slide, its path or an RGB thumbnail of the whole slide.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new 5×5-inch figure with constrained layout by
        default.  The colour bar is drawn right of ``ax``, as tall as the
        picture, the legend and scale bar below it: in a figure of yours, leave
        room for them (constrained layout or ``savefig(bbox_inches="tight")``
        do).
    max_size : int
        Longest side of the picture in pixels.
    alpha, colormap, ground_truth, tissue_outline
        As for :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>`.
    colorbar : bool
        Draw the colour bar, labelled "tumor probability", from 0 to 1.
    legend : bool
        Draw the legend of the outlines ("tissue", "ground truth").
    scale_bar : bool
        Draw a scale bar: µm (or mm) when the heatmap knows the slide's
        resolution, level-0 pixels otherwise.

    Returns
    -------
    matplotlib.axes.Axes
        The picture's axes (without ticks); the colour bar is an inset axes of
        ``ax`` (in ``ax.child_axes``), the scale bar an artist of ``ax`` with
        the gid ``"scale bar"`` (an ``AnchoredOffsetbox``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from cervixwsi.heatmap import Heatmap, HeatmapInfo
    >>> from cervixwsi.plotting import plot_heatmap
    >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
    >>> h = Heatmap(np.eye(4, dtype=np.float32), 256, (1024, 1024),
    ...             tissue_mask=np.ones((4, 4), bool), info=info, mpp=0.5)
    >>> ax = plot_heatmap(h, np.full((256, 256, 3), 230, np.uint8), max_size=256)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['tissue']
    >>> (colour_bar,) = ax.child_axes
    >>> colour_bar.get_ylabel(), [float(v) for v in colour_bar.get_ylim()]
    ('tumor probability', [0.0, 1.0])
    """
    import numpy as np
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.lines import Line2D
    from matplotlib.offsetbox import AnchoredOffsetbox, AuxTransformBox, TextArea, VPacker
    from matplotlib.patches import Rectangle

    from cervixwsi.heatmap._overlay import colormap_rgb, overlay_key

    ax = _axes(ax, layout="constrained")  # room for the colour bar, legend and scale bar
    picture = heatmap.overlay(
        slide,
        max_size=max_size,
        alpha=alpha,
        colormap=colormap,
        ground_truth=ground_truth,
        tissue_outline=tissue_outline,
        colorbar=False,
        legend=False,
        scale_bar=False,
    )
    ax.imshow(picture)
    ax.set_xticks([])
    ax.set_yticks([])
    key = overlay_key(
        heatmap,
        picture.shape[1],
        colorbar=colorbar,
        legend=legend,
        scale_bar=scale_bar,
        tissue_outline=tissue_outline,
        ground_truth=ground_truth is not None,
    )
    if key.colorbar is not None:
        cmap = ListedColormap(colormap_rgb(colormap) / 255.0, name=colormap)
        mappable = ScalarMappable(norm=Normalize(*key.colorbar), cmap=cmap)
        # In axes coordinates: as tall as the picture, whatever the figure's shape.
        cax = ax.inset_axes((1.02, 0.0, 0.04, 1.0))
        ax.figure.colorbar(mappable, cax=cax, label=key.colorbar_label)
    # The outlines are white and green: the legend and scale bar sit on a dark box.
    box = {"facecolor": "0.25", "edgecolor": "0.25"}
    if key.legend:
        handles = [
            Line2D([], [], color=np.asarray(colour) / 255.0, linewidth=2, label=label)
            for label, colour in key.legend
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0.0, -0.01),
            ncol=len(handles),
            labelcolor="white",
            framealpha=0.85,
            **box,
        )
    if key.scale_bar is not None:
        # The bar in the picture's pixels (data coordinates), its label under it.
        length = AuxTransformBox(ax.transData)
        thickness = max(1.0, picture.shape[0] / 150)
        length.add_artist(
            Rectangle((0, 0), key.scale_bar.length_px, thickness, color="white", linewidth=0)
        )
        label = TextArea(key.scale_bar.label, textprops={"color": "white"})
        bar = AnchoredOffsetbox(
            loc="upper right",
            child=VPacker(children=[length, label], align="center", pad=0, sep=4),
            pad=0.4,
            borderpad=0.0,
            frameon=True,
            bbox_to_anchor=(1.0, -0.01),
            bbox_transform=ax.transAxes,
        )
        bar.patch.set(alpha=0.85, **box)
        bar.set_gid("scale bar")
        ax.add_artist(bar)
    return ax
