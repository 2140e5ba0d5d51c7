"""The heatmap object: probabilities over a slide, its tissue mask, provenance, files."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._version import __version__
from cervixwsi.errors import HeatmapError
from cervixwsi.geometry import Raster
from cervixwsi.heatmap._overlay import draw_overlay
from cervixwsi.heatmap._runstore import _HEATMAP_FORMAT, _save_heatmap

if TYPE_CHECKING:
    from cervixwsi.slide import BaseSlide


@dataclass(frozen=True)
class HeatmapInfo:
    """What a heatmap was made from: the slide, the patch grid, the predictor.

    Attributes
    ----------
    slide_id : str
        The slide's name (file stem).
    patch_size : int
        Patch side in pixels of ``level`` (256, the study's value).
    level : int
        The pyramid level patches were read at (0, the study's value).
    level_downsample : float
        That level's downsample (level-0 pixels per level pixel).
    stride : float
        Level-0 pixels between neighbouring patches = the heatmap's downsample.
    min_tissue : float
        Minimum tissue fraction of a patch to be predicted.
    predictor : str
        The predictor's identity (class and name).
    n_predicted : int
        Patches predicted.
    library_version : str
        cervixwsi's version that made it.
    created : str
        ISO 8601 time of creation (UTC).
    parameters : tuple of (str, str)
        Further settings (tissue masker, batch size), as text pairs.
    """

    slide_id: str
    patch_size: int
    level: int
    level_downsample: float
    stride: float
    min_tissue: float
    predictor: str
    n_predicted: int = 0
    library_version: str = __version__
    created: str = ""
    parameters: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The info as JSON-compatible values."""
        out = dataclasses.asdict(self)
        out["parameters"] = [list(p) for p in self.parameters]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeatmapInfo:
        """Inverse of :meth:`to_json`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise HeatmapError(f"unknown heatmap info fields {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["parameters"] = tuple(tuple(map(str, p)) for p in data.get("parameters", ()))
        return cls(**kwargs)


class Heatmap(Raster):
    """A tumor-probability map over a slide: a float32 :class:`~cervixwsi.geometry.Raster`.

    Pixels that were not predicted (too little tissue) are NaN.  ``tissue_mask``
    is a boolean raster on the same grid: the tissue the heatmap speaks for, i.e.
    the pixels covered by at least one patch with ``min_tissue`` tissue.  It is
    exactly where the map is finite, so features never meet a NaN inside tissue
    (at a stride below the patch size a pixel of tissue that no qualifying patch
    covers would otherwise be "tissue without a probability").

    Parameters
    ----------
    array : array_like
        2-D probabilities in ``[0, 1]`` or NaN.
    downsample : float
        Level-0 pixels per heatmap pixel (the stride).
    slide_dimensions : tuple of int
        The slide's level-0 ``(width, height)``.
    tissue_mask : array_like or Raster
        Boolean, same shape.
    info : HeatmapInfo
        Provenance.
    mpp : float, optional
        The slide's level-0 micrometres per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.1, np.nan], [0.95, 0.7]], np.float32)
    >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
    >>> h = Heatmap(p, 256, (512, 400), tissue_mask=np.isfinite(p), info=info, mpp=0.5)
    >>> h.slide_id, h.pixel_size_um, int(h.tissue_mask.array.sum())
    ('s1', 128.0, 3)
    """

    __slots__ = ("_info", "_tissue")

    def __init__(
        self,
        array: npt.ArrayLike,
        downsample: float,
        slide_dimensions: tuple[int, int],
        *,
        tissue_mask: npt.ArrayLike | Raster,
        info: HeatmapInfo,
        mpp: float | None = None,
    ) -> None:
        arr = np.asarray(array, dtype=np.float32)
        super().__init__(arr, downsample, slide_dimensions, mpp=mpp)
        finite = arr[np.isfinite(arr)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise HeatmapError(
                f"heatmap probabilities must lie in [0, 1], got [{finite.min()}, {finite.max()}]"
            )
        tissue = np.asarray(
            tissue_mask.array if isinstance(tissue_mask, Raster) else tissue_mask, dtype=bool
        )
        if tissue.shape != arr.shape:
            raise HeatmapError(
                f"tissue mask shape {tissue.shape} differs from the heatmap's {arr.shape}"
            )
        self._tissue = Raster(tissue, self.downsample, self.slide_dimensions, mpp=mpp)
        self._info = info

    @property
    def array(self) -> npt.NDArray[np.float32]:
        """Probabilities, float32, NaN where not predicted."""
        out: npt.NDArray[np.float32] = self._array
        return out

    @property
    def tissue_mask(self) -> Raster:
        """Boolean raster on the heatmap's grid: the tissue the heatmap speaks for.

        For a heatmap from :class:`HeatmapGenerator` these are exactly the
        predicted (finite) pixels: those covered by a patch with ``min_tissue``.
        """
        return self._tissue

    @property
    def info(self) -> HeatmapInfo:
        """Provenance: slide, patch grid, predictor, library version."""
        return self._info

    @property
    def slide_id(self) -> str:
        """The slide's name."""
        return self._info.slide_id

    # --- persistence ------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the heatmap to a zarr directory (probabilities, tissue, metadata).

        The store is written whole into a temporary sibling of ``path`` (a hidden
        ``.<name>.<pid>.<random>.tmp`` beside it) and renamed into place, so a reader never
        sees half a heatmap.  A heatmap store already at ``path`` (saved, or made by
        :meth:`HeatmapGenerator.generate`) is replaced: once the new store is complete,
        the old one is moved aside to another temporary sibling, the new one renamed in,
        and the old one deleted.  An error on the way removes the new sibling and leaves
        the old heatmap at ``path``.  If the process is killed instead, what is left is:
        while the new store is written, the old heatmap at ``path`` and a partial hidden
        sibling; between moving the old one aside and renaming the new one in (two
        renames), nothing at ``path`` and both stores, whole, in hidden siblings (rename
        either to ``path``); before the old one is deleted, the new heatmap at ``path``
        and the old one in a hidden sibling.  Hidden ``*.tmp`` siblings can be deleted.

        Parameters
        ----------
        path : str or PathLike
            The store (a directory): nothing, an empty directory, or a heatmap store.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        HeatmapError
            If ``path`` holds something that is not a cervixwsi heatmap store (a file, a
            folder of other things, another zarr store): it is left as it is.

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib
        >>> p = np.array([[0.25, np.nan]], np.float32)
        >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
        >>> h = Heatmap(p, 256, (500, 200), tissue_mask=[[True, False]], info=info)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Heatmap.load(h.save(pathlib.Path(tmp) / "s1.zarr")).array
        array([[0.25,  nan]], dtype=float32)
        """
        path = pathlib.Path(path)
        _save_heatmap(self, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Heatmap:
        """Read a heatmap written by :meth:`save` or by :meth:`HeatmapGenerator.generate`.

        Heatmaps saved by earlier cervixwsi versions (heatmap format 1) are read too.

        Raises
        ------
        HeatmapError
            If ``path`` is not a heatmap store, was made by a newer format, or is
            an unfinished run of the generator.
        """
        opened = _HEATMAP_FORMAT.open(path)
        path = opened.path
        if not opened.complete:
            raise HeatmapError(
                f"{path} is an unfinished heatmap run: call HeatmapGenerator.generate(slide, "
                "out=...) again to complete it"
            )
        group, attrs = opened.group, opened.attrs
        try:
            probability = np.asarray(group["probability"][...], dtype=np.float32)
            tissue = np.asarray(group["tissue"][...], dtype=bool)
        except Exception as exc:
            raise HeatmapError(f"{path}: cannot read the heatmap arrays: {exc}") from exc
        try:
            info = HeatmapInfo.from_json(attrs["info"])
            width, height = attrs["slide_dimensions"]
            downsample = float(attrs["downsample"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HeatmapError(
                f"{path}: the heatmap's metadata is missing or corrupt: {exc}"
            ) from exc
        return cls(
            probability,
            downsample,
            (int(width), int(height)),
            tissue_mask=tissue,
            info=info,
            mpp=attrs.get("mpp"),
        )

    def to_pyramid(
        self, path: str | os.PathLike[str], *, tile_size: int = 256, compression: str = "deflate"
    ) -> pathlib.Path:
        """Export as an 8-bit pyramidal TIFF that OpenSlide and QuPath open.

        Probability ``p`` becomes gray level ``round(255 * p)``; pixels without a
        prediction are 0.  The file's mpp is the heatmap pixel's size in µm, so
        viewers show it at the slide's physical scale.

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib
        >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
        >>> h = Heatmap(np.full((3, 4), 0.5, np.float32), 256, (1024, 768),
        ...             tissue_mask=np.ones((3, 4), bool), info=info, mpp=0.25)
        >>> from cervixwsi.slide import Slide
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = h.to_pyramid(pathlib.Path(tmp) / "h.tif")
        ...     with Slide(out) as s:
        ...         s.dimensions, s.mpp, int(s.read_region((0, 0), 0, (1, 1))[0, 0, 0])
        ((4, 3), (64.0, 64.0), 128)
        """
        from cervixwsi._pyramid import write_pyramid

        gray = np.where(np.isfinite(self.array), np.rint(self.array * 255), 0).astype(np.uint8)
        mpp = self.pixel_size_um
        return write_pyramid(
            path,
            np.ascontiguousarray(gray),
            mpp=mpp,
            tile_size=tile_size,
            compression=compression,  # type: ignore[arg-type]
            description=f"cervixwsi tumor-probability heatmap of {self.slide_id}",
        )

    # --- pictures ---------------------------------------------------------------------

    def overlay(
        self,
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
        """The heatmap in colour over the slide's thumbnail, as in the study's Fig. 5.

        Predicted pixels are blended with their probability's colour, the tissue is
        outlined in white, the ground truth (when given) in green, and a key is drawn
        into the picture: a colour bar of the tumor probability from 0 to 1, a legend
        of the outlines drawn and a scale bar (in µm, or mm, when the slide's
        resolution ``mpp`` is known; in level-0 pixels otherwise).  The key sits on a
        dark box in the corner of the picture with the least tissue under it, and is
        left out when the picture is too small for it.  For a matplotlib figure with
        the same key beside the picture, see :func:`cervixwsi.plotting.plot_heatmap`.

        Parameters
        ----------
        slide : BaseSlide, path or numpy.ndarray
            The slide or its path (its thumbnail is read) or an RGB thumbnail of
            the whole slide.
        max_size : int
            Longest side of the picture in pixels.
        alpha : float
            Opacity of the colour map over tissue, in ``[0, 1]`` (0: thumbnail only).
        colormap : str
            An OpenCV colour map name: ``"jet"``, ``"inferno"``, ``"viridis"``, ...
        ground_truth : Raster or AnnotationSet, optional
            Tumor ground truth, drawn as a green contour: a boolean raster over the
            slide, or annotations (rasterised at the picture's scale).
        tissue_outline : bool
            Draw the tissue mask's outline in white.
        colorbar : bool
            Draw the colour bar of the probability, labelled "tumor probability".
        legend : bool
            Draw the legend of the outlines ("tissue", "ground truth").
        scale_bar : bool
            Draw a scale bar (at most a fifth of the picture's width).
        artifacts : ArtifactMask, optional
            What an :class:`~cervixwsi.tissue.ArtifactMasker` removed from the tissue
            mask (``TissueMask.artifacts``): outlined in one colour per cause
            (pen, fold, blur, dust) and listed in the legend.

        Returns
        -------
        numpy.ndarray
            RGB uint8 picture, the slide's aspect ratio, longest side ``max_size``:
            pixel ``(row, col)`` shows the level-0 point
            ``(col, row) * max(slide width, height) / max_size``.

        Raises
        ------
        ParameterError
            For an invalid ``max_size``, ``alpha`` or ``colormap``.

        Examples
        --------
        >>> import numpy as np
        >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
        >>> h = Heatmap(np.eye(4, dtype=np.float32), 256, (1024, 1024),
        ...             tissue_mask=np.ones((4, 4), bool), info=info, mpp=0.5)
        >>> picture = h.overlay(np.full((512, 512, 3), 230, np.uint8), max_size=512)
        >>> picture.shape, picture.dtype
        ((512, 512, 3), dtype('uint8'))

        Without the key, a transparent map leaves the thumbnail as it is:

        >>> thumb = np.full((64, 64, 3), 230, np.uint8)
        >>> plain = h.overlay(thumb, max_size=64, alpha=0, tissue_outline=False,
        ...                   colorbar=False, legend=False, scale_bar=False)
        >>> bool((plain == thumb).all())
        True
        """
        return draw_overlay(
            self,
            slide,
            max_size=max_size,
            alpha=alpha,
            colormap=colormap,
            ground_truth=ground_truth,
            tissue_outline=tissue_outline,
            colorbar=colorbar,
            legend=legend,
            scale_bar=scale_bar,
            artifacts=artifacts,
        )
