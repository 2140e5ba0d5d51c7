"""The heatmap drawn over its slide: colours, outlines and a key.

:func:`draw_overlay` is :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>`: the
probabilities in an OpenCV colour map over the slide's thumbnail, the tissue outlined in
white, the ground truth in green, and a key drawn into the picture: a colour bar of the
probability (0 to 1), a legend of the outlines and a scale bar (µm or mm when the slide's
resolution is known, level-0 pixels otherwise).  The key sits on a dark box in the
corner of the picture with the least tissue under it.

:func:`overlay_key` says what the key holds (its labels, the colour bar's limits, the
scale bar's length), so that :func:`cervixwsi.plotting.plot_heatmap` draws the same key
with matplotlib.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_fraction, check_positive_int
from cervixwsi.errors import HeatmapError
from cervixwsi.geometry import Raster

if TYPE_CHECKING:
    from cervixwsi.heatmap._heatmap import Heatmap
    from cervixwsi.slide import BaseSlide

logger = logging.getLogger("cervixwsi.heatmap")

#: The colour bar's label.
PROBABILITY_LABEL = "tumor probability"
#: Legend labels and RGB colours of the outlines.
TISSUE_LABEL, TISSUE_COLOUR = "tissue", (255, 255, 255)
GROUND_TRUTH_LABEL, GROUND_TRUTH_COLOUR = "ground truth", (0, 200, 0)
#: Outline colours (RGB) of the artifacts removed from the tissue mask, per cause; the
#: legend labels them "pen", "fold", "blur", "dust" (see cervixwsi.tissue.ArtifactMask).
ARTIFACT_COLOURS: dict[str, tuple[int, int, int]] = {
    "pen": (0, 220, 255),
    "fold": (255, 140, 0),
    "blur": (190, 90, 255),
    "dust": (255, 230, 0),
}
# How dark the key's box makes what is under it (0: not at all, 1: black).
_KEY_SHADE = 0.65
# The longest scale bar, as a fraction of the picture's width.
_SCALE_BAR_FRACTION = 0.2


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar: its length in picture pixels and its label (``"500 µm"``)."""

    length_px: float
    label: str


@dataclass(frozen=True)
class OverlayKey:
    """What the key of an overlay shows.

    Attributes
    ----------
    colorbar : (float, float) or None
        The colour bar's limits, ``(0.0, 1.0)``; ``None`` when it is not drawn.
    colorbar_label : str
        ``"tumor probability"``.
    legend : tuple of (str, (int, int, int))
        Label and RGB colour of each outline drawn (tissue, ground truth).
    scale_bar : ScaleBar or None
        The scale bar, ``None`` when it is not drawn.
    """

    colorbar: tuple[float, float] | None
    colorbar_label: str
    legend: tuple[tuple[str, tuple[int, int, int]], ...]
    scale_bar: ScaleBar | None


def colormap_names() -> tuple[str, ...]:
    """The OpenCV colour maps an overlay can use, lower case (``"jet"``, ``"viridis"``, ...)."""
    import cv2

    return tuple(
        sorted(n[len("COLORMAP_") :].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
    )


def colormap_rgb(colormap: str) -> npt.NDArray[np.uint8]:
    """The 256 RGB colours of an OpenCV colour map, for probabilities ``k / 255``.

    Examples
    --------
    >>> colormap_rgb("jet")[[0, 255]].tolist()
    [[0, 0, 128], [128, 0, 0]]
    """
    import cv2

    name = colormap.lower() if isinstance(colormap, str) else colormap
    check_choice(name, "Heatmap.overlay.colormap", colormap_names())
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{name.upper()}"))
    rgb: npt.NDArray[np.uint8] = np.ascontiguousarray(bgr[:, 0, ::-1])
    return rgb


def _probability_index(prob: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """A probability's entry in a 256-colour map (1.0 is the last colour)."""
    index: npt.NDArray[np.uint8] = np.clip(prob * 255, 0, 255).astype(np.uint8)
    return index


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def choose_scale_bar(
    units_per_px: float, max_length_px: float, *, unit: str = "µm"
) -> ScaleBar | None:
    """The longest round scale bar (1, 2 or 5 x 10^k units) at most ``max_length_px`` long.

    Parameters
    ----------
    units_per_px : float
        Micrometres (``unit="µm"``) or level-0 pixels (``unit="px"``) per picture pixel.
    max_length_px : float
        The longest bar allowed, in picture pixels.
    unit : {"µm", "px"}
        ``"µm"`` labels lengths of 1000 µm and more in mm; ``"px"`` labels level-0 pixels.

    Returns
    -------
    ScaleBar or None
        ``None`` when not even the shortest bar fits.

    Examples
    --------
    >>> choose_scale_bar(2.0, 300)  # 2 µm per picture pixel: 500 µm is 250 pixels
    ScaleBar(length_px=250.0, label='500 µm')
    >>> choose_scale_bar(16.0, 150).label, choose_scale_bar(16.0, 150, unit="px").label
    ('2 mm', '2000 px (level 0)')
    """
    limit = float(units_per_px) * float(max_length_px)
    if not math.isfinite(limit) or limit <= 0:
        return None
    exponent = math.floor(math.log10(limit))
    length = next(
        v
        for k in (exponent, exponent - 1)
        for m in (5, 2, 1)
        if (v := float(f"{m}e{k}")) <= limit * (1 + 1e-9)
    )
    if unit == "px":
        label = f"{_number(length)} px (level 0)"
    elif length >= 1000:
        label = f"{_number(length / 1000)} mm"
    else:
        label = f"{_number(length)} {unit}"
    return ScaleBar(length / float(units_per_px), label)


def overlay_key(
    heatmap: Heatmap,
    picture_width: int,
    *,
    colorbar: bool = True,
    legend: bool = True,
    scale_bar: bool = True,
    tissue_outline: bool = True,
    ground_truth: bool = False,
    artifacts: tuple[str, ...] = (),
) -> OverlayKey:
    """What the key of an overlay ``picture_width`` pixels wide shows.

    The legend lists the outlines that are drawn (``tissue_outline``, ``ground_truth``);
    the scale bar is in µm when the heatmap knows the slide's resolution, in level-0
    pixels otherwise, and at most a fifth of the picture's width.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.heatmap import Heatmap, HeatmapInfo
    >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
    >>> h = Heatmap(np.zeros((4, 4), np.float32), 256, (1024, 1024),
    ...             tissue_mask=np.ones((4, 4), bool), info=info, mpp=0.5)
    >>> key = overlay_key(h, 512, ground_truth=True)  # 2 level-0 px = 1 µm per pixel
    >>> key.colorbar, [label for label, _ in key.legend], key.scale_bar
    ((0.0, 1.0), ['tissue', 'ground truth'], ScaleBar(length_px=100.0, label='100 µm'))
    """
    entries: list[tuple[str, tuple[int, int, int]]] = []
    if legend and tissue_outline:
        entries.append((TISSUE_LABEL, TISSUE_COLOUR))
    if legend and ground_truth:
        entries.append((GROUND_TRUTH_LABEL, GROUND_TRUTH_COLOUR))
    if legend:  # the causes of removed artifacts that are drawn
        entries.extend((name, ARTIFACT_COLOURS[name]) for name in artifacts)
    bar = None
    if scale_bar:
        level0_per_px = heatmap.slide_dimensions[0] / picture_width
        max_length = picture_width * _SCALE_BAR_FRACTION
        if heatmap.mpp is not None:
            bar = choose_scale_bar(level0_per_px * float(heatmap.mpp), max_length)
        else:
            bar = choose_scale_bar(level0_per_px, max_length, unit="px")
    return OverlayKey(
        colorbar=(0.0, 1.0) if colorbar else None,
        colorbar_label=PROBABILITY_LABEL,
        legend=tuple(entries),
        scale_bar=bar,
    )


def draw_overlay(
    heatmap: Heatmap,
    slide: BaseSlide | str | os.PathLike[str] | npt.NDArray[np.uint8],
    *,
    max_size: int = 2048,
    alpha: float = 0.5,
    colormap: str = "jet",
    ground_truth: Raster | Any | None = None,
    tissue_outline: bool = True,
    colorbar: bool = True,
    legend: bool = True,
    scale_bar: bool = True,
    artifacts: Raster | None = None,
) -> npt.NDArray[np.uint8]:
    """The body of :meth:`Heatmap.overlay <cervixwsi.heatmap.Heatmap.overlay>`.

    ``artifacts``, an :class:`~cervixwsi.tissue.ArtifactMask` (e.g. the
    ``artifacts`` of a :class:`~cervixwsi.tissue.TissueMask` made with an
    :class:`~cervixwsi.tissue.ArtifactMasker`), outlines what was removed from the
    tissue mask in one colour per cause (:data:`ARTIFACT_COLOURS`), listed in the
    legend.
    """
    import cv2

    max_size = check_positive_int(max_size, "Heatmap.overlay.max_size")
    alpha = check_fraction(alpha, "Heatmap.overlay.alpha")
    colours = colormap_rgb(colormap)
    width, height = heatmap.slide_dimensions
    scale = max_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if isinstance(slide, np.ndarray):
        thumb = np.asarray(slide, dtype=np.uint8)
    elif isinstance(slide, str | os.PathLike):
        from cervixwsi.slide import Slide

        with Slide(slide) as opened:
            thumb = opened.get_thumbnail(size)
    else:
        thumb = slide.get_thumbnail(size)
    thumb = cv2.resize(np.ascontiguousarray(thumb[..., :3]), size, interpolation=cv2.INTER_AREA)
    prob = heatmap.resample(1 / scale, method="nearest").array
    prob = cv2.resize(np.nan_to_num(prob, nan=-1.0), size, interpolation=cv2.INTER_NEAREST).astype(
        np.float32
    )
    predicted = prob >= 0
    colour = colours[_probability_index(prob)]
    out = thumb.copy()
    blend = (1 - alpha) * thumb[predicted] + alpha * colour[predicted]
    out[predicted] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    tissue = heatmap.tissue_mask.resample(1 / scale, method="nearest").array
    tissue = cv2.resize(tissue.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    if tissue_outline:
        contours, _ = cv2.findContours(tissue, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, TISSUE_COLOUR, 1)
    if ground_truth is not None:
        gt = _ground_truth_at(ground_truth, heatmap, 1 / scale)
        gt = cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(gt, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, GROUND_TRUTH_COLOUR, max(1, max_size // 512))
    drawn = _draw_artifacts(out, artifacts, heatmap, 1 / scale, size, max(1, max_size // 512))
    key = overlay_key(
        heatmap,
        size[0],
        colorbar=colorbar,
        legend=legend,
        scale_bar=scale_bar,
        tissue_outline=tissue_outline,
        ground_truth=ground_truth is not None,
        artifacts=drawn,
    )
    _draw_key(out, key, colours, busy=predicted | (tissue > 0))
    picture: npt.NDArray[np.uint8] = out
    return picture


def _draw_artifacts(
    out: npt.NDArray[np.uint8],
    artifacts: Raster | None,
    heatmap: Heatmap,
    downsample: float,
    size: tuple[int, int],
    thickness: int,
) -> tuple[str, ...]:
    """Outline each cause of an artifact label raster; the causes drawn, in code order."""
    import cv2

    if artifacts is None:
        return ()
    from cervixwsi.tissue import CAUSES

    if artifacts.slide_dimensions != heatmap.slide_dimensions:
        raise HeatmapError(
            f"artifacts are over a slide of {artifacts.slide_dimensions}, the heatmap "
            f"over {heatmap.slide_dimensions}"
        )
    labels = np.asarray(artifacts.resample(downsample, method="nearest").array)
    labels = cv2.resize(labels.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    drawn = []
    for code, name in enumerate(CAUSES, start=1):
        found = (labels == code).astype(np.uint8)
        if not found.any():
            continue
        contours, _ = cv2.findContours(found, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, ARTIFACT_COLOURS[name], thickness)
        drawn.append(name)
    return tuple(drawn)


def _ground_truth_at(ground_truth: Any, heatmap: Heatmap, downsample: float) -> npt.NDArray[Any]:
    if isinstance(ground_truth, Raster):
        if ground_truth.slide_dimensions != heatmap.slide_dimensions:
            raise HeatmapError(
                f"ground truth is over a slide of {ground_truth.slide_dimensions}, the heatmap "
                f"over {heatmap.slide_dimensions}"
            )
        return np.asarray(ground_truth.resample(downsample, method="nearest").array, dtype=bool)
    from cervixwsi.annotations import rasterize

    raster = rasterize(
        ground_truth,
        heatmap.shape_at(downsample),
        downsample,
        slide_dimensions=heatmap.slide_dimensions,
    )
    return np.asarray(raster.array, dtype=bool)


# --- the key, drawn with OpenCV --------------------------------------------------------------


@dataclass(frozen=True)
class _Font:
    """OpenCV's Hershey font at a size; draws "µ" (which it lacks) as a "u" with a tail."""

    scale: float
    thickness: int

    @property
    def face(self) -> int:
        import cv2

        face: int = cv2.FONT_HERSHEY_SIMPLEX
        return face

    def size(self, text: str) -> tuple[int, int]:
        """``(width, height above the baseline)`` of ``text``."""
        import cv2

        plain = text.replace("µ", "u")
        (w, h), _ = cv2.getTextSize(plain, self.face, self.scale, self.thickness)
        return int(w), int(h)

    def put(
        self, image: npt.NDArray[np.uint8], text: str, origin: tuple[int, int], colour: Any
    ) -> None:
        """Write ``text`` with its baseline's left end at ``origin``."""
        import cv2

        x, y = origin
        for k, part in enumerate(text.split("µ")):
            if k:
                cv2.putText(
                    image, "u", (x, y), self.face, self.scale, colour, self.thickness, cv2.LINE_AA
                )
                stem = x + self._u_stem()
                tail = max(2, round(self.size("0")[1] * 0.35))
                cv2.line(
                    image, (stem, y - 1), (stem, y + tail), colour, self.thickness, cv2.LINE_AA
                )
                x += self.size("u")[0]
            if part:
                cv2.putText(
                    image, part, (x, y), self.face, self.scale, colour, self.thickness, cv2.LINE_AA
                )
                x += self.size(part)[0]

    def _u_stem(self) -> int:
        """Column of the left stem of "u", from the origin."""
        import cv2

        w, h = self.size("u")
        canvas = np.zeros((2 * h + 4, w + 4), np.uint8)
        cv2.putText(canvas, "u", (0, h + 2), self.face, self.scale, 255, self.thickness)
        columns = np.flatnonzero(canvas.any(axis=0))
        return int(columns[0] + self.thickness // 2) if columns.size else 0


def _draw_key(
    out: npt.NDArray[np.uint8],
    key: OverlayKey,
    colours: npt.NDArray[np.uint8],
    *,
    busy: npt.NDArray[np.bool_],
) -> bool:
    """Draw ``key`` into ``out`` in the corner where ``busy`` is least; False if it won't fit."""
    import cv2

    rows: list[tuple[int, int, Any]] = []  # (height, width, draw(x, top, inner width))
    h_pic, w_pic = out.shape[:2]
    scale = max(0.4, min(1.2, max(h_pic, w_pic) / 1300))
    font = _Font(scale, 1 if scale < 0.7 else 2)
    th = font.size("0")[1]
    gap = max(2, round(th * 0.6))
    white = (255, 255, 255)

    if key.colorbar is not None:
        lo, hi = key.colorbar
        title = key.colorbar_label
        rows.append(
            (th, font.size(title)[0], lambda x, y, w: font.put(out, title, (x, y + th), white))
        )

        def gradient(x: int, y: int, w: int) -> None:
            ramp = np.linspace(lo, hi, max(w, 2))[:w]
            out[y : y + th, x : x + w] = colours[_probability_index(ramp)][None, :, :]

        rows.append((th, 4 * th, gradient))
        ticks = (_number(lo), _number((lo + hi) / 2), _number(hi))

        def tick_labels(x: int, y: int, w: int) -> None:
            widths = [font.size(t)[0] for t in ticks]
            starts = (x, x + (w - widths[1]) // 2, x + w - widths[2])
            for text, start in zip(ticks, starts, strict=True):
                font.put(out, text, (start, y + th), white)

        rows.append((th, sum(font.size(t)[0] for t in ticks) + 2 * gap, tick_labels))

    swatch = 2 * th
    for label, colour in key.legend:

        def entry(x: int, y: int, w: int, label: str = label, colour: Any = colour) -> None:
            mid = y + th // 2
            cv2.line(out, (x, mid), (x + swatch, mid), colour, max(2, th // 5), cv2.LINE_AA)
            font.put(out, label, (x + swatch + gap, y + th), white)

        rows.append((th, swatch + gap + font.size(label)[0], entry))

    if key.scale_bar is not None:
        bar = key.scale_bar
        length = max(1, round(bar.length_px))

        def scale_row(x: int, y: int, w: int) -> None:
            thick = max(2, th // 3)
            out[y + th - thick : y + th, x : x + length] = white
            font.put(out, bar.label, (x + length + gap, y + th), white)

        rows.append((th, length + gap + font.size(bar.label)[0], scale_row))

    if not rows:
        return True
    pad = max(3, round(th * 0.8))
    inner = max(width for _, width, _ in rows)
    box_w = inner + 2 * pad
    box_h = sum(height for height, _, _ in rows) + gap * (len(rows) - 1) + 2 * pad
    margin = pad
    if box_w + 2 * margin > w_pic or box_h + 2 * margin > h_pic:
        logger.info(
            "the overlay (%d x %d px) is too small for its key (%d x %d px): key left out",
            w_pic,
            h_pic,
            box_w,
            box_h,
        )
        return False
    right, bottom = w_pic - margin - box_w, h_pic - margin - box_h
    corners = [(right, bottom), (margin, bottom), (right, margin), (margin, margin)]
    x0, y0 = min(corners, key=lambda c: busy[c[1] : c[1] + box_h, c[0] : c[0] + box_w].mean())
    region = out[y0 : y0 + box_h, x0 : x0 + box_w]
    region[...] = np.rint(region * (1 - _KEY_SHADE)).astype(np.uint8)
    y = y0 + pad
    for height, _, draw in rows:
        draw(x0 + pad, y, inner)
        y += height + gap
    return True
