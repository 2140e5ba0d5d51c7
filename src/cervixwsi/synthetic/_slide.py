"""Rendering regions and writing whole synthetic slides (:func:`make_slide`)."""

from __future__ import annotations

import functools
import logging
import os
import pathlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_positive_int
from cervixwsi.annotations import AnnotationSet, annotations_from_mask, write_asap_xml
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.synthetic._layout import SlideLayout, make_layout
from cervixwsi.synthetic._render import render
from cervixwsi.synthetic._spec import SyntheticSlideSpec

__all__ = ["SyntheticSlide", "make_slide", "render_region"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """A synthetic slide written by :func:`make_slide`, with its ground truth.

    Its fields:

    * ``path`` (:class:`pathlib.Path`): the pyramidal TIFF;
    * ``spec`` (:class:`SyntheticSlideSpec`): what was drawn
      (``make_slide(spec, path)`` again gives the same pixels);
    * ``tissue_mask`` (:class:`~cervixwsi.geometry.Raster`): level-0 tissue,
      bool, at ``spec.mask_downsample``; pen ink is not tissue;
    * ``tumor_mask`` (:class:`~cervixwsi.geometry.Raster`): tumor on the same
      grid; empty for a normal slide;
    * ``annotations`` (:class:`~cervixwsi.annotations.AnnotationSet`): the
      tumor regions as polygons (``label="tumor"``), traced exactly from
      ``tumor_mask``: rasterizing them on its grid gives it back;
    * ``n_lesions`` (int): tumor regions (8-connected components of ``tumor_mask``);
    * ``annotation_path`` (:class:`pathlib.Path` or None): the ASAP XML file of
      ``annotations`` (None when not written).
    * ``artifact_masks`` (dict of str to :class:`~cervixwsi.geometry.Raster`):
      for each artifact of ``spec.artifacts``, where it is (bool, on the grid of
      ``tissue_mask``; see :meth:`SlideLayout.artifact_masks
      <cervixwsi.synthetic.SlideLayout.artifact_masks>`); empty without artifacts.

    Examples
    --------
    See :func:`make_slide`.
    """

    path: pathlib.Path
    spec: SyntheticSlideSpec
    tissue_mask: Raster
    tumor_mask: Raster
    annotations: AnnotationSet
    n_lesions: int
    annotation_path: pathlib.Path | None
    artifact_masks: dict[str, Raster] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"tumor"`` or ``"normal"``."""
        return "tumor" if self.spec.tumor else "normal"


@functools.lru_cache(maxsize=2)
def _cached_layout(spec: SyntheticSlideSpec) -> SlideLayout:
    return make_layout(spec)


def _as_layout(spec_or_layout: SyntheticSlideSpec | SlideLayout) -> SlideLayout:
    if isinstance(spec_or_layout, SlideLayout):
        return spec_or_layout
    if isinstance(spec_or_layout, SyntheticSlideSpec):
        return _cached_layout(spec_or_layout)
    raise ParameterError(
        "spec_or_layout must be a SyntheticSlideSpec or a SlideLayout (from make_layout), "
        f"got {type(spec_or_layout).__name__}"
    )


def render_region(
    spec_or_layout: SyntheticSlideSpec | SlideLayout, x: int, y: int, width: int, height: int
) -> npt.NDArray[np.uint8]:
    """Draw any level-0 region of a synthetic slide, without writing a file.

    The pixels are those :func:`make_slide` writes (before JPEG compression):
    every pixel is a function of its level-0 position and the spec only, so a
    region drawn in one call equals the same region assembled from pieces.

    Parameters
    ----------
    spec_or_layout : SyntheticSlideSpec or SlideLayout
        The slide.  A spec's layout is made once and cached (the last two
        specs), or pass the layout from :func:`make_layout` yourself.
    x, y : int
        Level-0 top-left corner; may lie outside the slide.
    width, height : int
        Size in level-0 pixels (positive).  Parts outside the slide are white
        (255), as :meth:`cervixwsi.slide.Slide.read_region` returns them.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.

    Examples
    --------
    >>> from cervixwsi.synthetic import SyntheticSlideSpec, render_region
    >>> spec = SyntheticSlideSpec(width=2048, height=2048, seed=5)
    >>> patch = render_region(spec, 896, 896, 256, 256)
    >>> patch.shape, patch.dtype
    ((256, 256, 3), dtype('uint8'))
    >>> bool((render_region(spec, 896, 896, 128, 256) == patch[:, :128]).all())
    True
    """
    layout = _as_layout(spec_or_layout)
    x = check_int(x, "render_region.x")
    y = check_int(y, "render_region.y")
    width = check_int(width, "render_region.width", min=1)
    height = check_int(height, "render_region.height", min=1)
    return render(layout, x, y, width, height)


def _tiles(layout: SlideLayout, threads: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Level-0 tiles in row-major order, drawn by ``threads`` threads a few tiles ahead."""
    spec = layout.spec
    t = spec.tile_size
    boxes = [
        (x, y, min(t, spec.width - x), min(t, spec.height - y))
        for y in range(0, spec.height, t)
        for x in range(0, spec.width, t)
    ]
    if threads <= 1:
        for box in boxes:
            yield render(layout, *box)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="cervixwsi-synthetic") as pool:
        pending: deque[Future[npt.NDArray[np.uint8]]] = deque()
        ahead = 4 * threads  # bounded look-ahead keeps memory at a few tiles
        it = iter(boxes)
        try:
            for box in it:
                pending.append(pool.submit(render, layout, *box))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def make_slide(
    spec: SyntheticSlideSpec,
    path: str | os.PathLike[str],
    *,
    annotations: bool = True,
    threads: int | None = None,
    progress: bool = False,
) -> SyntheticSlide:
    """Write a synthetic H&E slide as a pyramidal TIFF, with its ground truth.

    Level 0 is drawn tile by tile (in ``threads`` threads) and streamed into
    :func:`cervixwsi.slide.write_pyramid`, so memory stays at a few tiles plus
    the coarse layout.  The file opens in OpenSlide, tiffslide and
    :class:`cervixwsi.slide.Slide` with the spec's ``mpp``.

    Parameters
    ----------
    spec : SyntheticSlideSpec
        What to draw.
    path : str or os.PathLike
        The ``.tif`` / ``.tiff`` file to write (replaced if it exists; its
        directory must exist).
    annotations : bool
        Also write the tumor annotations as ASAP XML beside the slide
        (``path.with_suffix(".xml")``; for normal slides an empty file).
    threads : int, optional
        Drawing threads (default: the CPU count, at most 4).
    progress : bool
        Show a progress bar over the tiles.

    Returns
    -------
    SyntheticSlide

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cervixwsi.slide import Slide
    >>> from cervixwsi.synthetic import SyntheticSlideSpec, make_slide
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     made = make_slide(SyntheticSlideSpec(width=1024, height=768, n_nests=4, seed=2),
    ...                       pathlib.Path(tmp) / "s.tiff", threads=1)
    ...     with Slide(made.path) as slide:
    ...         print(slide.dimensions, slide.mpp, made.annotation_path.name)
    (1024, 768) (0.25, 0.25) s.xml
    """
    from cervixwsi._pyramid import write_pyramid

    if not isinstance(spec, SyntheticSlideSpec):
        raise ParameterError(f"spec must be a SyntheticSlideSpec, got {type(spec).__name__}")
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ParameterError(f"path must end in .tif or .tiff, got {str(path)!r}")
    if threads is None:
        threads = _default_threads()
    threads = check_positive_int(threads, "make_slide.threads")
    layout = make_layout(spec)
    logger.info(
        "drawing synthetic %s slide %s (%dx%d, %d lesions)",
        "tumor" if spec.tumor else "normal",
        path,
        spec.width,
        spec.height,
        layout.n_lesions,
    )
    description = "cervixwsi synthetic slide " + repr(asdict(spec))
    write_pyramid(
        path,
        _tiles(layout, threads),
        mpp=spec.mpp,
        dimensions=spec.dimensions,
        tile_size=spec.tile_size,
        compression=spec.compression,
        quality=spec.quality,
        description=description,
        progress=progress,
    )
    regions = annotations_from_mask(layout.tumor_mask, label="tumor")
    annotation_path = None
    if annotations:
        annotation_path = path.with_suffix(".xml")
        write_asap_xml(regions, annotation_path)
    return SyntheticSlide(
        path=path,
        spec=spec,
        tissue_mask=layout.tissue_mask,
        tumor_mask=layout.tumor_mask,
        annotations=regions,
        n_lesions=layout.n_lesions,
        annotation_path=annotation_path,
        artifact_masks=layout.artifact_masks(),
    )
