"""Evaluation curves: ROC and FROC of several models, and the models' scores side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from cervixwsi.plotting._common import CURVE_ZORDER, MARGIN, new_axes, pyplot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cervixwsi.metrics import FROCResult, ModelComparison, RocCurve

__all__ = ["plot_froc", "plot_model_comparison", "plot_roc"]


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
    ax = new_axes(ax)
    if chance:
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="_chance")
    style = {"clip_on": False, "zorder": CURVE_ZORDER, **line_kwargs}
    for name, curve in curves.items():
        ax.plot(
            curve.fpr,
            curve.tpr,
            label=f"{name} (AUC = {curve.auc:.{decimals}f})",
            **style,
        )
    ax.set_xlim(-MARGIN, 1 + MARGIN)
    ax.set_ylim(-MARGIN, 1 + MARGIN)
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
    ax = new_axes(ax)
    style = {"zorder": CURVE_ZORDER, **line_kwargs}
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
            zorder=CURVE_ZORDER,
        )
    ax.set_xlim(-MARGIN * x_max, x_max)
    ax.set_ylim(-MARGIN, 1 + MARGIN)
    ax.set_xlabel("Average number of false positives per slide")
    ax.set_ylabel("Lesion detection sensitivity")
    ax.set_title("FROC")
    ax.legend(loc="lower right")
    return ax


def _counts_title(comparison: ModelComparison | None) -> tuple[str, str]:
    """The slide and lesion counts for the ROC and FROC titles (empty without a comparison)."""
    if comparison is None or not comparison.rows:
        return "", ""
    first = comparison.rows[0]
    roc = f"{first.n_slides} test slides ({first.n_tumor} tumor, {first.n_normal} normal)"
    froc = ""
    if first.n_lesions is not None:
        froc = f"{first.n_lesions} lesions on {first.froc_slides} slides"
    return roc, froc


def plot_model_comparison(
    rocs: Mapping[str, RocCurve],
    frocs: Mapping[str, FROCResult] | None = None,
    *,
    comparison: ModelComparison | None = None,
    reference_scores: Mapping[str, tuple[float | None, float | None]] | None = None,
    reference_label: str = "published",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Several models' ROC and FROC curves beside their scores (the study's Fig. 4, and more).

    Panels, left to right: **a** the ROC curves (:func:`plot_roc`), **b** the FROC
    curves (:func:`plot_froc`, when ``frocs`` is given) and **c** each model's AUC
    and FROC score as points, with the AUC's confidence interval as an error bar
    when ``comparison`` gives one, and ``reference_scores`` (e.g. the study's
    Table 3) as open markers of the same colour, so the two can be read side by
    side.  A model keeps its colour in every panel; the titles of a and b give the
    slide and lesion counts of ``comparison``.

    Parameters
    ----------
    rocs : mapping of str to RocCurve
        Per model, its ROC curve on the test slides (the panels' order).
    frocs : mapping of str to FROCResult, optional
        Per model, its FROC evaluation.
    comparison : ModelComparison, optional
        The same models' :func:`cervixwsi.metrics.compare_models` table: AUC
        intervals and the counts in the titles.
    reference_scores : mapping of str to (float or None, float or None), optional
        Per model, a reference ``(AUC, FROC)`` to mark, ``None`` where there is none
        (the study's Table 3: ``{"A": (0.9476, 0.5279), ...}``).
    reference_label : str
        What the reference is, for the legend (``"published"``).
    figsize : (float, float), optional
        The figure's size in inches (default 5 inches per panel by 5).

    Returns
    -------
    matplotlib.figure.Figure
        Its ``axes`` are the panels, in order.

    Raises
    ------
    ParameterError
        No ROC curve, or FROC results, a comparison or reference scores for a model
        without an ROC curve.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from cervixwsi.metrics import roc_curve
    >>> from cervixwsi.plotting import plot_model_comparison
    >>> y = [0, 0, 1, 1]
    >>> fig = plot_model_comparison(
    ...     {"A": roc_curve(y, [0.1, 0.4, 0.35, 0.8]), "D": roc_curve(y, [0.1, 0.2, 0.6, 0.8])},
    ...     reference_scores={"A": (0.9476, 0.5279), "D": (0.9784, 0.5609)},
    ...     reference_label="study")
    >>> [ax.get_title() for ax in fig.axes]
    ['ROC', 'Scores']
    >>> [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    ['AUC', 'study AUC', 'study FROC']
    """
    import numpy as np

    from cervixwsi.errors import ParameterError

    if not rocs:
        raise ParameterError("plot_model_comparison.rocs must name at least one model")
    models = list(rocs)
    for what, given in (
        ("frocs", frocs or {}),
        ("reference_scores", reference_scores or {}),
        ("comparison", {} if comparison is None else dict.fromkeys(comparison.models)),
    ):
        unknown = [m for m in given if m not in rocs]
        if unknown:
            raise ParameterError(
                f"plot_model_comparison.{what} names models without an ROC curve: {unknown}; "
                f"models: {models}"
            )
    n_panels = 3 if frocs else 2
    plt = pyplot()
    fig, axes = plt.subplots(
        1, n_panels, figsize=figsize or (5.0 * n_panels, 5.0), layout="constrained"
    )
    roc_title, froc_title = _counts_title(comparison)
    plot_roc(rocs, ax=axes[0])
    colours = {m: line.get_color() for m, line in zip(models, axes[0].lines[1:], strict=True)}
    if roc_title:
        axes[0].set_title(f"ROC, {roc_title}")
    if frocs:
        plot_froc(
            {m: frocs[m] for m in models if m in frocs},
            ax=axes[1],
        )
        for m, line in zip([m for m in models if m in frocs], axes[1].lines[::2], strict=True):
            line.set_color(colours[m])
        for m, dots in zip([m for m in models if m in frocs], axes[1].lines[1::2], strict=True):
            dots.set_color(colours[m])
        axes[1].legend(loc="lower right")  # again, with the colours set
        if froc_title:
            axes[1].set_title(f"FROC, {froc_title}")
    ax = axes[-1]
    x = np.arange(len(models), dtype=float)
    width = 0.18
    references = reference_scores or {}
    for i, m in enumerate(models):
        colour = colours[m]
        auc = rocs[m].auc
        err = None
        if comparison is not None and m in comparison.models:
            row = comparison.row(m)
            if row.auc_low is not None and row.auc_high is not None:
                err = [[auc - row.auc_low], [row.auc_high - auc]]
        ax.errorbar(
            x[i] - width,
            auc,
            yerr=err,
            fmt="o",
            color=colour,
            capsize=3,
            label="_auc",
            zorder=CURVE_ZORDER,
        )
        if frocs and m in frocs:
            ax.plot(
                x[i] + width, frocs[m].score, "s", color=colour, label="_froc", zorder=CURVE_ZORDER
            )
        ref_auc, ref_froc = references.get(m, (None, None))
        if ref_auc is not None:
            ax.plot(
                x[i] - width,
                ref_auc,
                "o",
                markerfacecolor="none",
                markersize=11,
                markeredgecolor=colour,
                label="_ref_auc",
                zorder=CURVE_ZORDER,
            )
        if ref_froc is not None:
            ax.plot(
                x[i] + width,
                ref_froc,
                "s",
                markerfacecolor="none",
                markersize=11,
                markeredgecolor=colour,
                label="_ref_froc",
                zorder=CURVE_ZORDER,
            )
    from matplotlib.lines import Line2D

    key = [Line2D([], [], marker="o", linestyle="none", color="0.3", label="AUC")]
    if comparison is not None:
        level = round(100 * (1 - comparison.alpha))
        key[0].set_label(f"AUC ({level} % CI)")
    if frocs:
        key.append(Line2D([], [], marker="s", linestyle="none", color="0.3", label="FROC score"))
    if any(a is not None for a, _ in references.values()):
        key.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="none",
                markerfacecolor="none",
                markersize=11,
                color="0.3",
                label=f"{reference_label} AUC",
            )
        )
    if any(f is not None for _, f in references.values()):
        key.append(
            Line2D(
                [],
                [],
                marker="s",
                linestyle="none",
                markerfacecolor="none",
                markersize=11,
                color="0.3",
                label=f"{reference_label} FROC",
            )
        )
    ax.legend(handles=key, loc="lower right")
    ax.set_xticks(x, models)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylim(-MARGIN, 1 + MARGIN)
    ax.set_ylabel("Score")
    ax.set_title("Scores")
    ax.grid(axis="y", color="0.9")
    return cast("Figure", fig)
