"""Tumor-probability heatmaps: one pixel per patch, streamed, resumable.

The study turns every 256×256 level-0 patch of tissue into one pixel of a
tumor-probability map.  :class:`HeatmapGenerator` does that for any
:class:`PatchPredictor` (a Keras :class:`~cervixwsi.models.PatchClassifier`,
an :class:`~cervixwsi.models.EnsembleClassifier`, an ONNX model, a
scikit-learn pipeline, ...): it finds the tissue
(:class:`~cervixwsi.tissue.TissueMasker`), lays the patch grid over it
(:class:`~cervixwsi.tiling.PatchGrid`), reads and decodes patches in a thread
pool that feeds a bounded queue while the predictor works, and writes each
prediction to its heatmap pixel.  With ``out=`` a zarr directory, results are
stored as batches finish, and running again continues where it stopped.

This module never imports TensorFlow.

Geometry
--------
With a stride of ``s`` level-0 pixels (``stride`` is given in pixels of the
patches' level; by default the patch size) the heatmap is a
:class:`~cervixwsi.geometry.Raster` with ``downsample = s``: pixel
``(row, col)`` covers the level-0 square ``[col*s, (col+1)*s) x [row*s, (row+1)*s)``,
and the patch at grid position ``(row, col)`` has its top-left corner at
``(col*s, row*s)``.  When the stride equals the patch size, each pixel is its
patch's probability.  When the stride is smaller (it must divide the patch
size), a patch covers ``k x k`` pixels (``k = patch / stride``) and each pixel
is the **mean of the predictions of all predicted patches that cover it**.
Pixels covered by no predicted patch (not enough tissue) are NaN; the
heatmap's tissue mask, on the same grid, is the pixels that were predicted.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import pathlib
import queue
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi._version import __version__
from cervixwsi.errors import (
    HeatmapError,
    ParameterError,
    PredictorError,
    StoreMismatchError,
)
from cervixwsi.geometry import Raster

if TYPE_CHECKING:
    from cervixwsi.slide import BaseSlide
    from cervixwsi.tissue import TissueMask, TissueMasker

__all__ = [
    "Heatmap",
    "HeatmapGenerator",
    "HeatmapInfo",
    "PatchPredictor",
]

logger = logging.getLogger(__name__)

_FORMAT = "cervixwsi.heatmap"
_FORMAT_VERSION = 1
# Chunk length of the per-position arrays of a resumable store.
_PLAN_CHUNK = 4096


@runtime_checkable
class PatchPredictor(Protocol):
    """Anything that turns a batch of RGB patches into tumor probabilities.

    ``predict(batch)`` takes a ``uint8`` array ``(N, H, W, 3)`` and returns ``N``
    probabilities of tumor in ``[0, 1]`` (float32).  :class:`cervixwsi.models.PatchClassifier`
    and :class:`cervixwsi.models.EnsembleClassifier` satisfy it; so does any
    object of yours with such a method.

    Examples
    --------
    >>> import numpy as np
    >>> class MeanRed:
    ...     def predict(self, batch):
    ...         return batch[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255
    >>> isinstance(MeanRed(), PatchPredictor)
    True
    """

    def predict(self, batch: npt.NDArray[np.uint8], /) -> npt.NDArray[np.floating[Any]]:
        """Tumor probabilities, shape ``(N,)``, of a ``(N, H, W, 3)`` uint8 batch."""
        ...


def predictor_name(predictor: object) -> str:
    """A readable identity of a predictor: its ``name`` attribute or its class.

    Examples
    --------
    >>> predictor_name(object())
    'builtins.object'
    """
    name = getattr(predictor, "name", None)
    cls = type(predictor)
    qual = f"{cls.__module__}.{cls.__qualname__}"
    return f"{qual}:{name}" if isinstance(name, str) and name else qual


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

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib
        >>> p = np.array([[0.25, np.nan]], np.float32)
        >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
        >>> h = Heatmap(p, 256, (500, 200), tissue_mask=[[True, False]], info=info)
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "s1.zarr"
        >>> Heatmap.load(h.save(d)).array
        array([[0.25,  nan]], dtype=float32)
        """
        import zarr

        path = pathlib.Path(path)
        group = zarr.open_group(str(path), mode="w")
        _write_final(group, self)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Heatmap:
        """Read a heatmap written by :meth:`save` or by :meth:`HeatmapGenerator.generate`.

        Raises
        ------
        HeatmapError
            If ``path`` is not a heatmap store, was made by a newer format, or is
            an unfinished run of the generator.
        """
        import zarr

        path = pathlib.Path(path)
        if not path.exists():
            raise HeatmapError(f"no heatmap at {path}")
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs = dict(group.attrs)
        except Exception as exc:
            raise HeatmapError(f"{path} is not a readable zarr heatmap store: {exc}") from exc
        if attrs.get("format") != _FORMAT:
            raise HeatmapError(
                f"{path} is not a cervixwsi heatmap (format {attrs.get('format')!r})"
            )
        if int(attrs.get("format_version", 0)) > _FORMAT_VERSION:
            raise HeatmapError(
                f"{path} has heatmap format {attrs['format_version']}; this cervixwsi reads up "
                f"to {_FORMAT_VERSION}: upgrade cervixwsi"
            )
        if not attrs.get("complete", False):
            raise HeatmapError(
                f"{path} is an unfinished heatmap run: call HeatmapGenerator.generate(slide, "
                "out=...) again to complete it"
            )
        try:
            probability = np.asarray(group["probability"][...], dtype=np.float32)
            tissue = np.asarray(group["tissue"][...], dtype=bool)
        except Exception as exc:
            raise HeatmapError(f"{path}: cannot read the heatmap arrays: {exc}") from exc
        info = HeatmapInfo.from_json(attrs["info"])
        width, height = attrs["slide_dimensions"]
        return cls(
            probability,
            float(attrs["downsample"]),
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
        >>> out = h.to_pyramid(pathlib.Path(tempfile.mkdtemp()) / "h.tif")
        >>> with Slide(out) as s:
        ...     s.dimensions, s.mpp, int(s.read_region((0, 0), 0, (1, 1))[0, 0, 0])
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
    ) -> npt.NDArray[np.uint8]:
        """The heatmap in colour over the slide's thumbnail, as in the study's Fig. 5.

        Parameters
        ----------
        slide : BaseSlide, path or numpy.ndarray
            The slide or its path (its thumbnail is read) or an RGB thumbnail of
            the whole slide.
        max_size : int
            Longest side of the picture in pixels.
        alpha : float
            Opacity of the colour map over tissue (0: thumbnail only).
        colormap : str
            An OpenCV colour map name: ``"jet"``, ``"inferno"``, ``"viridis"``, ...
        ground_truth : Raster or AnnotationSet, optional
            Tumor ground truth, drawn as a green contour: a boolean raster over the
            slide, or annotations (rasterised at the picture's scale).
        tissue_outline : bool
            Draw the tissue mask's outline in white.

        Returns
        -------
        numpy.ndarray
            RGB uint8 picture, the slide's aspect ratio, longest side ``max_size``.

        Examples
        --------
        >>> import numpy as np
        >>> info = HeatmapInfo("s1", 256, 0, 1.0, 256.0, 0.5, "demo")
        >>> h = Heatmap(np.eye(4, dtype=np.float32), 256, (1024, 1024),
        ...             tissue_mask=np.ones((4, 4), bool), info=info)
        >>> h.overlay(np.full((64, 64, 3), 230, np.uint8), max_size=64).shape
        (64, 64, 3)
        """
        import cv2

        width, height = self.slide_dimensions
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
        cmap_id = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
        if cmap_id is None:
            raise ParameterError(f"unknown OpenCV colour map {colormap!r}")
        prob = self.resample(1 / scale, method="nearest").array
        prob = cv2.resize(
            np.nan_to_num(prob, nan=-1.0), size, interpolation=cv2.INTER_NEAREST
        ).astype(np.float32)
        predicted = prob >= 0
        colour = cv2.applyColorMap(np.clip(prob * 255, 0, 255).astype(np.uint8), cmap_id)
        colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
        out = thumb.copy()
        blend = (1 - alpha) * thumb[predicted] + alpha * colour[predicted]
        out[predicted] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        if tissue_outline:
            tissue = self._tissue.resample(1 / scale, method="nearest").array
            tissue = cv2.resize(tissue.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(tissue, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
        if ground_truth is not None:
            gt = _ground_truth_at(ground_truth, self, 1 / scale)
            gt = cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(gt, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (0, 200, 0), max(1, max_size // 512))
        picture: npt.NDArray[np.uint8] = out
        return picture


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


# --- the generator --------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The positions to predict, in prediction order, and the heatmap grid."""

    x: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    grid_shape: tuple[int, int]

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x, self.y):
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
        h.update(repr(self.grid_shape).encode())
        return h.hexdigest()


class HeatmapGenerator:
    """Make tumor-probability heatmaps of slides with a patch predictor.

    Parameters
    ----------
    predictor : PatchPredictor
        Anything with ``predict(uint8 N×H×W×3) -> float N`` probabilities of tumor.
    patch_size : int
        Patch side in pixels of the chosen level (256, the study's value).
    level : int, optional
        Pyramid level to read patches at (0, the study's value: the highest
        magnification).  Give ``level`` or ``mpp``, not both.
    mpp : float, optional
        Target micrometres per pixel instead of a level: the coarsest level at
        least that fine is used (see ``Slide.level_for_mpp``).
    stride : int, optional
        Pixels of that level between neighbouring patches; ``None`` (default)
        is the patch size, one heatmap pixel per patch as in the study.  It must
        divide ``patch_size``; overlapping predictions are averaged.
    min_tissue : float
        Minimum tissue fraction of a patch for it to be predicted (0.5).
    batch_size : int
        Patches per call of the predictor (32, the study's batch size).
    masker : TissueMasker, optional
        Tissue detection; default :class:`~cervixwsi.tissue.TissueMasker()`.
    workers : int
        Threads reading and decoding patches while the predictor works.
    prefetch : int
        Batches read ahead of the predictor (bounds memory:
        ``prefetch * batch_size`` patches).
    progress : bool
        Show a progress bar with patches/s.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> from cervixwsi.tissue import TissueMasker
    >>> class Redness:
    ...     def predict(self, batch):
    ...         return batch[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255
    >>> image = np.full((512, 768, 3), 240, np.uint8)
    >>> image[:, 256:] = (200, 60, 150)                       # "tissue" on the right
    >>> gen = HeatmapGenerator(Redness(), masker=TissueMasker(level=0),
    ...                        progress=False)
    >>> heat = gen.generate(ArraySlide(image, mpp=0.5))
    >>> heat.shape, np.round(heat.array, 2).tolist()
    ((2, 3), [[nan, 0.78, 0.78], [nan, 0.78, 0.78]])
    """

    def __init__(
        self,
        predictor: PatchPredictor,
        *,
        patch_size: int = 256,
        level: int | None = None,
        mpp: float | None = None,
        stride: int | None = None,
        min_tissue: float = 0.5,
        batch_size: int = 32,
        masker: TissueMasker | None = None,
        workers: int = 4,
        prefetch: int = 4,
        progress: bool = True,
    ) -> None:
        self.predictor = predictor
        self.patch_size = patch_size
        self.level = level
        self.mpp = mpp
        self.stride = stride
        self.min_tissue = min_tissue
        self.batch_size = batch_size
        self.masker = masker
        self.workers = workers
        self.prefetch = prefetch
        self.progress = progress

    # --- validation -------------------------------------------------------------------

    def _validate(self) -> None:
        if not callable(getattr(self.predictor, "predict", None)):
            raise ParameterError(
                f"predictor must have a predict(batch) method, got {type(self.predictor)!r}"
            )
        for name in ("patch_size", "batch_size", "workers", "prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.level is not None and self.mpp is not None:
            raise ParameterError("give level or mpp, not both")
        if self.stride is not None:
            if isinstance(self.stride, bool) or not isinstance(self.stride, int | np.integer):
                raise ParameterError(f"stride must be an integer, got {self.stride!r}")
            if self.stride < 1 or self.patch_size % self.stride:
                raise ParameterError(
                    f"stride must be a positive divisor of patch_size={self.patch_size}, "
                    f"got {self.stride}"
                )
        if not 0.0 <= float(self.min_tissue) <= 1.0:
            raise ParameterError(f"min_tissue must be in [0, 1], got {self.min_tissue!r}")

    def _level(self, slide: BaseSlide) -> int:
        if self.mpp is not None:
            return slide.level_for_mpp(self.mpp)
        level = 0 if self.level is None else int(self.level)
        if not 0 <= level < slide.level_count:
            raise ParameterError(
                f"level {level} is not in slide {slide.name!r} (levels 0..{slide.level_count - 1})"
            )
        return level

    # --- planning ---------------------------------------------------------------------

    def _plan(self, slide: BaseSlide, tissue: TissueMask, level: int) -> tuple[_Plan, float]:
        from cervixwsi.tiling import PatchGrid

        d = float(slide.level_downsamples[level])
        stride = self.patch_size if self.stride is None else int(self.stride)
        stride0 = stride * d
        grid = PatchGrid(
            patch_size=self.patch_size,
            level=level,
            stride=stride,
            min_tissue=self.min_tissue,
            include_partial=True,
        )
        coords = grid.coords(slide, tissue)
        assert coords.grid_shape is not None  # a PatchGrid always lays one
        shape = coords.grid_shape
        rows = np.asarray(coords.rows, dtype=np.int64)
        cols = np.asarray(coords.cols, dtype=np.int64)
        plan = _Plan(
            x=np.asarray(coords.x, dtype=np.int64),
            y=np.asarray(coords.y, dtype=np.int64),
            rows=rows,
            cols=cols,
            grid_shape=shape,
        )
        return plan, stride0

    # --- the run ----------------------------------------------------------------------

    def generate(
        self,
        slide: BaseSlide | str | os.PathLike[str],
        *,
        out: str | os.PathLike[str] | None = None,
        tissue_mask: TissueMask | None = None,
    ) -> Heatmap:
        """Predict every tissue patch of ``slide`` and assemble the heatmap.

        Parameters
        ----------
        slide : BaseSlide or path
            The slide (or the path of one, opened and closed here).
        out : path, optional
            A zarr directory for a resumable run: predictions are stored as
            batches finish; calling again with the same ``out`` predicts only
            what is missing.  Running with another predictor, slide or
            parameters into the same ``out`` raises
            :class:`~cervixwsi.errors.StoreMismatchError`.
        tissue_mask : TissueMask, optional
            A tissue mask to use instead of running the masker.

        Returns
        -------
        Heatmap

        Raises
        ------
        PredictorError
            If the predictor returns the wrong number of values, NaN, or values
            outside ``[0, 1]`` (the message names the batch and its positions;
            batches before it are kept in ``out``).
        """
        self._validate()
        if isinstance(slide, str | os.PathLike):
            from cervixwsi.slide import Slide

            with Slide(slide) as opened:
                return self.generate(opened, out=out, tissue_mask=tissue_mask)
        level = self._level(slide)
        if tissue_mask is None:
            from cervixwsi.tissue import TissueMasker

            masker = self.masker if self.masker is not None else TissueMasker()
            tissue_mask = masker.mask(slide)
            tissue_source = repr(masker)
        else:
            tissue_source = "a given TissueMask"
        plan, stride0 = self._plan(slide, tissue_mask, level)
        info = HeatmapInfo(
            slide_id=slide.name,
            patch_size=int(self.patch_size),
            level=level,
            level_downsample=float(slide.level_downsamples[level]),
            stride=stride0,
            min_tissue=float(self.min_tissue),
            predictor=predictor_name(self.predictor),
            n_predicted=len(plan.x),
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            parameters=(
                ("batch_size", str(self.batch_size)),
                ("tissue", tissue_source),
            ),
        )
        n = len(plan.x)
        n_cells = plan.grid_shape[0] * plan.grid_shape[1]
        if n == 0:
            import warnings

            msg = (
                f"slide {slide.name!r}: no patch has {self.min_tissue:.0%} tissue; "
                "the heatmap is all NaN"
            )
            logger.warning(msg)
            warnings.warn(msg, UserWarning, stacklevel=2)
        else:
            logger.info(
                "slide %r: predicting %d of %d grid positions (the rest have under %.0f%% tissue)",
                slide.name,
                n,
                n_cells,
                100 * self.min_tissue,
            )
        store = _RunStore.open(out, plan, info, self.predictor, self.patch_size) if out else None
        probs = store.probabilities() if store is not None else np.full(n, np.nan, np.float32)
        todo = np.flatnonzero(~store.done()) if store is not None else np.arange(n)
        if store is not None and len(todo) < n:
            logger.info("resuming %s: %d of %d positions already done", out, n - len(todo), n)
        self._run(slide, level, plan, todo, probs, store)
        heatmap = _assemble(plan, probs, slide, stride0, self.patch_size, level, info)
        if store is not None:
            store.finish(heatmap)
        return heatmap

    def _run(
        self,
        slide: BaseSlide,
        level: int,
        plan: _Plan,
        todo: npt.NDArray[np.intp],
        probs: npt.NDArray[np.float32],
        store: _RunStore | None,
    ) -> None:
        from tqdm.auto import tqdm

        size = (int(self.patch_size), int(self.patch_size))
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]

        def read(batch: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
            out = np.empty((len(batch), size[1], size[0], 3), np.uint8)
            for k, i in enumerate(batch):
                out[k] = slide.read_region((int(plan.x[i]), int(plan.y[i])), level, size)
            return out

        with (
            tqdm(
                total=len(todo),
                disable=not self.progress,
                unit="patch",
                desc=f"heatmap {slide.name}",
            ) as bar,
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="heatmap-read") as ex,
        ):
            for index, (batch, patches) in enumerate(_prefetched(ex, read, batches, self.prefetch)):
                values = _check_predictions(self.predictor.predict(patches), batch, index, plan)
                probs[batch] = values
                if store is not None:
                    store.write(batch, values)
                bar.update(len(batch))


def _prefetched(
    executor: ThreadPoolExecutor,
    read: Any,
    batches: Sequence[npt.NDArray[np.intp]],
    depth: int,
) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.uint8]]]:
    """Yield ``(batch, patches)`` in order while up to ``depth`` batches are read ahead.

    Each batch is read by one worker; several batches are read at once, so reading
    and decoding (which release the GIL) overlap the predictor.
    """
    pending: queue.SimpleQueue[tuple[npt.NDArray[np.intp], Future[npt.NDArray[np.uint8]]]]
    pending = queue.SimpleQueue()
    it = iter(batches)
    in_flight = 0
    for batch in it:
        pending.put((batch, executor.submit(read, batch)))
        in_flight += 1
        if in_flight >= depth:
            break
    try:
        while in_flight:
            batch, future = pending.get()
            in_flight -= 1
            nxt = next(it, None)
            if nxt is not None:
                pending.put((nxt, executor.submit(read, nxt)))
                in_flight += 1
            yield batch, future.result()
    finally:
        while not pending.empty():
            pending.get()[1].cancel()


def _check_predictions(
    values: Any, batch: npt.NDArray[np.intp], index: int, plan: _Plan
) -> npt.NDArray[np.float32]:
    arr = np.asarray(values)
    where = (
        f"batch {index} (positions {int(batch[0])}..{int(batch[-1])}, first patch at level-0 "
        f"({int(plan.x[batch[0]])}, {int(plan.y[batch[0]])}))"
    )
    if arr.shape != (len(batch),):
        arr = arr.reshape(-1) if arr.size == len(batch) else arr
        if arr.shape != (len(batch),):
            raise PredictorError(
                f"the predictor returned shape {np.shape(values)} for {len(batch)} patches in "
                f"{where}; it must return one probability per patch"
            )
    if not np.issubdtype(arr.dtype, np.number):
        raise PredictorError(f"the predictor returned {arr.dtype} values in {where}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise PredictorError(f"the predictor returned NaN or infinite values in {where}")
    if arr.min() < 0 or arr.max() > 1:
        raise PredictorError(
            f"the predictor returned values in [{arr.min():g}, {arr.max():g}] in {where}; "
            "tumor probabilities must lie in [0, 1]"
        )
    return arr


def _assemble(
    plan: _Plan,
    probs: npt.NDArray[np.float32],
    slide: BaseSlide,
    stride0: float,
    patch_size: int,
    level: int,
    info: HeatmapInfo,
) -> Heatmap:
    rows, cols = plan.grid_shape
    k = max(1, round(patch_size * float(slide.level_downsamples[level]) / stride0))
    total = np.zeros((rows + k, cols + k), np.float64)
    count = np.zeros((rows + k, cols + k), np.int64)
    # A patch at grid (r, c) covers heatmap pixels r..r+k-1 x c..c+k-1: accumulate each
    # of the k*k offsets with one vectorised scatter-add.
    for dr in range(k):
        for dc in range(k):
            np.add.at(total, (plan.rows + dr, plan.cols + dc), probs)
            np.add.at(count, (plan.rows + dr, plan.cols + dc), 1)
    total, count = total[:rows, :cols], count[:rows, :cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        array = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
    mpp = None if slide.mpp is None else float(sum(slide.mpp) / 2)
    return Heatmap(
        array,
        stride0,
        slide.dimensions,
        tissue_mask=count > 0,
        info=info,
        mpp=mpp,
    )


# --- the resumable store --------------------------------------------------------------

_PROBE_SEED = 20261125


def _probe_batch(patch_size: int) -> npt.NDArray[np.uint8]:
    """A fixed batch of patches whose predictions fingerprint a predictor."""
    rng = np.random.default_rng(_PROBE_SEED)
    base = rng.integers(0, 256, (2, patch_size, patch_size, 3), dtype=np.uint8)
    pinkish = np.empty((2, patch_size, patch_size, 3), np.uint8)
    pinkish[..., 0] = rng.integers(150, 256, (2, patch_size, patch_size))
    pinkish[..., 1] = rng.integers(40, 160, (2, patch_size, patch_size))
    pinkish[..., 2] = rng.integers(120, 220, (2, patch_size, patch_size))
    return np.concatenate([base, pinkish])


class _RunStore:
    """The zarr directory of a resumable run: the plan, per-position results, done flags."""

    def __init__(self, group: Any, path: pathlib.Path) -> None:
        self._group = group
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        plan: _Plan,
        info: HeatmapInfo,
        predictor: PatchPredictor,
        patch_size: int,
    ) -> _RunStore:
        import zarr

        path = pathlib.Path(out)
        probe = _check_predictions(
            predictor.predict(_probe_batch(patch_size)),
            np.arange(4, dtype=np.intp),
            -1,
            dataclasses.replace(plan, x=np.zeros(4, np.int64), y=np.zeros(4, np.int64)),
        )
        signature = {
            "slide_id": info.slide_id,
            "patch_size": info.patch_size,
            "level": info.level,
            "stride": info.stride,
            "min_tissue": info.min_tissue,
            "predictor": info.predictor,
            "plan": plan.digest(),
        }
        if path.exists():
            try:
                group = zarr.open_group(str(path), mode="r+")
                attrs = dict(group.attrs)
            except Exception as exc:
                raise StoreMismatchError(
                    f"{path} exists and is not a heatmap store ({exc}); choose another out="
                ) from exc
            if attrs.get("format") != _FORMAT:
                raise StoreMismatchError(f"{path} exists and is not a cervixwsi heatmap store")
            old = attrs.get("signature", {})
            diff = [k for k in signature if old.get(k) != signature[k]]
            if diff:
                details = ", ".join(f"{k}: {old.get(k)!r} -> {signature[k]!r}" for k in diff)
                raise StoreMismatchError(
                    f"{path} holds a heatmap run with other settings ({details}); "
                    "use another out= or delete it"
                )
            old_probe = np.asarray(attrs.get("probe", []), np.float32)
            if old_probe.shape != probe.shape or not np.allclose(old_probe, probe, atol=1e-4):
                raise StoreMismatchError(
                    f"{path} was made with another predictor: its predictions on a fixed probe "
                    f"batch differ ({old_probe.tolist()} vs {probe.tolist()}); use another out= "
                    "or delete it"
                )
            return cls(group, path)
        # Made beside its place and renamed into it, so that an interruption here never
        # leaves a half-made store that later runs would refuse.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        group = zarr.open_group(str(tmp), mode="w")
        n = len(plan.x)
        chunks = (max(1, min(_PLAN_CHUNK, n)),)
        group.create_array("plan_x", data=plan.x, chunks=chunks)
        group.create_array("plan_y", data=plan.y, chunks=chunks)
        group.create_array(
            "plan_probability", shape=(n,), dtype="float32", chunks=chunks, fill_value=np.nan
        )
        group.create_array("plan_done", shape=(n,), dtype="bool", chunks=chunks, fill_value=False)
        group.attrs.update(
            {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "complete": False,
                "signature": signature,
                "probe": probe.tolist(),
            }
        )
        tmp.replace(path)
        return cls(zarr.open_group(str(path), mode="r+"), path)

    def probabilities(self) -> npt.NDArray[np.float32]:
        return np.asarray(self._group["plan_probability"][...], dtype=np.float32)

    def done(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self._group["plan_done"][...], dtype=bool)

    def write(self, batch: npt.NDArray[np.intp], values: npt.NDArray[np.float32]) -> None:
        with self._lock:
            lo, hi = int(batch[0]), int(batch[-1]) + 1
            if hi - lo == len(batch):  # contiguous (always, in generation order)
                self._group["plan_probability"][lo:hi] = values
                self._group["plan_done"][lo:hi] = True
            else:
                self._group["plan_probability"].set_coordinate_selection((batch,), values)
                self._group["plan_done"].set_coordinate_selection((batch,), True)

    def finish(self, heatmap: Heatmap) -> None:
        _write_final(self._group, heatmap, keep_plan=True)


def _write_final(group: Any, heatmap: Heatmap, *, keep_plan: bool = False) -> None:
    rows, cols = heatmap.shape
    chunks = (min(rows, 1024), min(cols, 1024))
    group.create_array("probability", data=heatmap.array, chunks=chunks, overwrite=True)
    group.create_array(
        "tissue", data=heatmap.tissue_mask.array.astype(bool), chunks=chunks, overwrite=True
    )
    attrs = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "complete": True,
        "downsample": heatmap.downsample,
        "slide_dimensions": list(heatmap.slide_dimensions),
        "mpp": heatmap.mpp,
        "info": heatmap.info.to_json(),
    }
    if not keep_plan:
        attrs["signature"] = {}
    group.attrs.update(json.loads(json.dumps(attrs)))
