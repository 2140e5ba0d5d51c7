"""Heatmaps over their slides: one with its key (Fig. 5), or several side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from cervixwsi.plotting._common import new_axes, pyplot

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from cervixwsi.heatmap import Heatmap
    from cervixwsi.heatmap._overlay import OverlayKey
    from cervixwsi.slide import BaseSlide

__all__ = ["plot_heatmap", "plot_heatmap_panels"]

# The outlines are white and green: the legend and scale bar sit on a dark box.
_BOX = {"facecolor": "0.25", "edgecolor": "0.25"}


def _mappable(colormap: str, limits: tuple[float, float] = (0.0, 1.0)) -> Any:
    """A colour-bar source with the overlay's own colour map (OpenCV's, not matplotlib's)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    from cervixwsi.heatmap._overlay import colormap_rgb

    cmap = ListedColormap(colormap_rgb(colormap) / 255.0, name=colormap)
    return ScalarMappable(norm=Normalize(*limits), cmap=cmap)


def _colour_bar(ax: Axes, key: OverlayKey, colormap: str) -> None:
    assert key.colorbar is not None
    # In axes coordinates: as tall as the picture, whatever the figure's shape.
    cax = ax.inset_axes((1.02, 0.0, 0.04, 1.0))
    ax.figure.colorbar(_mappable(colormap, key.colorbar), cax=cax, label=key.colorbar_label)


def _legend(ax: Axes, key: OverlayKey) -> None:
    import numpy as np
    from matplotlib.lines import Line2D

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
        **_BOX,
    )


def _scale_bar(ax: Axes, key: OverlayKey, picture_height: int) -> None:
    """The bar in the picture's pixels (data coordinates), its label under it."""
    from matplotlib.offsetbox import AnchoredOffsetbox, AuxTransformBox, TextArea, VPacker
    from matplotlib.patches import Rectangle

    assert key.scale_bar is not None
    length = AuxTransformBox(ax.transData)
    thickness = max(1.0, picture_height / 150)
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
    bar.patch.set(alpha=0.85, **_BOX)
    bar.set_gid("scale bar")
    ax.add_artist(bar)


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
    from cervixwsi.heatmap._overlay import overlay_key

    ax = new_axes(ax, layout="constrained")  # room for the colour bar, legend and scale bar
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
        _colour_bar(ax, key, colormap)
    if key.legend:
        _legend(ax, key)
    if key.scale_bar is not None:
        _scale_bar(ax, key, picture.shape[0])
    return ax


def _thumbnail(
    slide: BaseSlide | str | os.PathLike[str] | npt.NDArray[np.uint8],
    dimensions: tuple[int, int],
    max_size: int,
) -> npt.NDArray[np.uint8]:
    """The slide's thumbnail at the pictures' size, read once for every panel."""
    import numpy as np

    if isinstance(slide, np.ndarray):
        return slide
    width, height = dimensions
    scale = max_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if isinstance(slide, str | os.PathLike):
        from cervixwsi.slide import Slide

        with Slide(slide) as opened:
            return np.asarray(opened.get_thumbnail(size), dtype=np.uint8)
    return np.asarray(slide.get_thumbnail(size), dtype=np.uint8)


def plot_heatmap_panels(
    slide: BaseSlide | str | os.PathLike[str] | npt.NDArray[np.uint8],
    heatmaps: Mapping[str, Heatmap],
    *,
    ground_truth: Any = None,
    ground_truth_on_heatmaps: bool = True,
    max_size: int = 768,
    alpha: float = 0.5,
    colormap: str = "jet",
    tissue_outline: bool = True,
    panel_size: float = 4.0,
) -> Figure:
    """A slide beside its heatmaps of several models, one colour bar for all (the study's Fig. 5).

    Panel **a** is the slide's thumbnail with the ground truth outlined in green
    (when given) and a scale bar; panels **b**, **c**, ... are the heatmaps over the
    slide, in the mapping's order, titled with their names, and one colour bar of
    the tumor probability (0 to 1) serves them all.  Each picture is what
    :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>` draws, without its
    own key; the slide's thumbnail is read once.

    Parameters
    ----------
    slide : BaseSlide, path or numpy.ndarray
        The slide, its path or an RGB thumbnail of the whole slide.
    heatmaps : mapping of str to Heatmap
        Per model name, its heatmap of this slide (all over the same slide).
    ground_truth : Raster or AnnotationSet, optional
        The annotated tumor, outlined in green.
    ground_truth_on_heatmaps : bool
        Outline the ground truth on the heatmaps too, not only on panel a.
    max_size : int
        Longest side of each picture in pixels.
    alpha, colormap, tissue_outline
        As for :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>`.
    panel_size : float
        Width of a panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes``: the ``1 + len(heatmaps)`` pictures, then the colour bar.

    Raises
    ------
    ParameterError
        No heatmap, or heatmaps over slides of different sizes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from cervixwsi.heatmap import Heatmap, HeatmapInfo
    >>> from cervixwsi.plotting import plot_heatmap_panels
    >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
    >>> maps = {name: Heatmap(np.eye(4, dtype=np.float32) * p, 256, (1024, 1024),
    ...                       tissue_mask=np.ones((4, 4), bool), info=info, mpp=0.5)
    ...         for name, p in (("A", 0.3), ("B", 0.9))}
    >>> fig = plot_heatmap_panels(np.full((256, 256, 3), 230, np.uint8), maps, max_size=256)
    >>> [ax.get_title() for ax in fig.axes]
    ['a  slide', 'b  A', 'c  B', '']
    >>> fig.axes[-1].get_ylabel()
    'tumor probability'
    """
    from cervixwsi.errors import ParameterError
    from cervixwsi.heatmap._overlay import overlay_key

    if not heatmaps:
        raise ParameterError("plot_heatmap_panels.heatmaps must hold at least one heatmap")
    names = list(heatmaps)
    first = heatmaps[names[0]]
    for name in names[1:]:
        if heatmaps[name].slide_dimensions != first.slide_dimensions:
            raise ParameterError(
                f"plot_heatmap_panels.heatmaps must be over one slide: {name!r} is over a slide "
                f"of {heatmaps[name].slide_dimensions}, {names[0]!r} over "
                f"{first.slide_dimensions} (width, height)"
            )
    thumb = _thumbnail(slide, first.slide_dimensions, max_size)
    width, height = first.slide_dimensions
    n = len(names) + 1
    fig, axes = pyplot().subplots(
        1,
        n,
        figsize=(panel_size * n + 1.0, panel_size * height / width + 1.0),
        layout="constrained",
        squeeze=False,
    )
    panels = list(axes[0])
    picture = first.overlay(
        thumb,
        max_size=max_size,
        alpha=0.0,
        tissue_outline=False,
        ground_truth=ground_truth,
        colorbar=False,
        legend=False,
        scale_bar=False,
    )
    panels[0].imshow(picture)
    panels[0].set_title("a  slide" + (" and ground truth" if ground_truth is not None else ""))
    key = overlay_key(
        first,
        picture.shape[1],
        colorbar=False,
        legend=ground_truth is not None,
        scale_bar=True,
        tissue_outline=False,
        ground_truth=ground_truth is not None,
    )
    if key.legend:
        _legend(panels[0], key)
    if key.scale_bar is not None:
        _scale_bar(panels[0], key, picture.shape[0])
    shown = ground_truth if ground_truth_on_heatmaps else None
    for i, (ax, name) in enumerate(zip(panels[1:], names, strict=True)):
        picture = heatmaps[name].overlay(
            thumb,
            max_size=max_size,
            alpha=alpha,
            colormap=colormap,
            ground_truth=shown,
            tissue_outline=tissue_outline,
            colorbar=False,
            legend=False,
            scale_bar=False,
        )
        ax.imshow(picture)
        ax.set_title(f"{chr(ord('b') + i)}  {name}")
        if i == 0:
            key = overlay_key(
                heatmaps[name],
                picture.shape[1],
                colorbar=False,
                legend=True,
                scale_bar=False,
                tissue_outline=tissue_outline,
                ground_truth=shown is not None,
            )
            if key.legend:
                _legend(ax, key)
    for ax in panels:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(_mappable(colormap), ax=panels[1:], label="tumor probability", shrink=0.9)
    return cast("Figure", fig)
