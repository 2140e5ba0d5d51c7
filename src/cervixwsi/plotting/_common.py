"""What the figures share: a new axes when none is given, curves above the frame."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Curves are drawn above the axes' frame (spines are at 2.5), so that a curve running
# along an edge (a perfect ROC curve: up the left edge, along the top) stays visible.
CURVE_ZORDER = 3
# The axes show a little more than [0, 1], for the same reason.
MARGIN = 0.01


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cervixwsi.plotting needs matplotlib: pip install 'cervixwsi[plot]'"
        ) from exc
    return plt


def new_axes(ax: Axes | None, **figure_kwargs: Any) -> Axes:
    """``ax``, or the axes of a new 5×5-inch figure."""
    if ax is not None:
        return ax
    _, new_ax = pyplot().subplots(figsize=(5, 5), **figure_kwargs)
    return cast("Axes", new_ax)
