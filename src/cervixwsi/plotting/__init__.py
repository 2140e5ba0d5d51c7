"""Figures with matplotlib (the ``plot`` extra): evaluation curves (the study's Fig. 4), heatmaps.

matplotlib is imported only when a function is called, so ``import
cervixwsi.plotting`` is cheap and works without it.  Every function that draws one
plot draws on the ``ax`` it is given (or on a new figure's axes) and returns the
axes, so figures compose as users expect from matplotlib; the multi-panel figures
return their :class:`~matplotlib.figure.Figure`.

Sections: evaluation curves (:func:`plot_roc`, :func:`plot_froc`, and
:func:`plot_model_comparison`: ROC, FROC and scores of several models beside
reference values such as the study's Table 3); heatmaps over their slides
(:func:`plot_heatmap`, and :func:`plot_heatmap_panels`: a slide with its ground
truth beside several models' heatmaps, the study's Fig. 5).

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

from cervixwsi.plotting._curves import plot_froc, plot_model_comparison, plot_roc
from cervixwsi.plotting._heatmaps import plot_heatmap, plot_heatmap_panels

__all__ = [
    "plot_froc",
    "plot_heatmap",
    "plot_heatmap_panels",
    "plot_model_comparison",
    "plot_roc",
]
