"""Figures with matplotlib (the ``plot`` extra): evaluation curves like the study's Fig. 4.

matplotlib is imported only when a function is called, so ``import
cervixwsi.plotting`` is cheap and works without it.  Every function draws on
the ``ax`` it is given (or on a new figure's axes) and returns the axes, so
figures compose as users expect from matplotlib.

Sections: evaluation curves (:func:`plot_roc`, :func:`plot_froc`).

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
    from matplotlib.axes import Axes

    from cervixwsi.metrics import FROCResult, RocCurve

__all__ = ["plot_froc", "plot_roc"]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cervixwsi.plotting needs matplotlib: pip install 'cervixwsi[plot]'"
        ) from exc
    _, new_ax = plt.subplots(figsize=(5, 5))
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
        Passed to every curve's :meth:`~matplotlib.axes.Axes.plot` call.

    Returns
    -------
    matplotlib.axes.Axes

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
    for name, curve in curves.items():
        ax.plot(
            curve.fpr,
            curve.tpr,
            label=f"{name} (AUC = {curve.auc:.{decimals}f})",
            **line_kwargs,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
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
        curves are drawn in full, the view shows ``[0, x_max]``.
    decimals : int
        Decimals of the FROC score in the legend.
    **line_kwargs
        Passed to every curve's :meth:`~matplotlib.axes.Axes.plot` call.

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
    for name, result in results.items():
        (line,) = ax.plot(
            result.fps_per_image[::-1],
            result.sensitivity[::-1],
            label=f"{name} (FROC = {result.score:.{decimals}f})",
            **line_kwargs,
        )
        ax.plot(
            result.eval_fps,
            result.eval_sensitivities,
            linestyle="none",
            marker="o",
            markersize=5,
            color=line.get_color(),
            label=f"_{name} evaluation points",
        )
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("Average number of false positives per slide")
    ax.set_ylabel("Lesion detection sensitivity")
    ax.set_title("FROC")
    ax.legend(loc="lower right")
    return ax
