"""Making heatmaps: the predictor protocol and the streamed, resumable generator."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_fraction, check_positive_int
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import resolve_level, slide_mpp
from cervixwsi.heatmap._heatmap import Heatmap, HeatmapInfo
from cervixwsi.heatmap._plan import _check_predictions, _Plan, _Reads, public_name
from cervixwsi.heatmap._runstore import _RunStore

if TYPE_CHECKING:
    from cervixwsi.slide import BaseSlide
    from cervixwsi.tissue import TissueMask, TissueMasker

logger = logging.getLogger("cervixwsi.heatmap")


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
    """A readable identity of a predictor: its class's public path and its ``name``.

    The class is named without its private modules (``cervixwsi.models.PatchClassifier``,
    not ``cervixwsi.models._classifier.PatchClassifier``), so a heatmap run store made
    before a package was reorganised is still recognised.

    Examples
    --------
    >>> predictor_name(object())
    'builtins.object'
    >>> from cervixwsi.tiling import PatchGrid
    >>> predictor_name(PatchGrid())
    'cervixwsi.tiling.PatchGrid'
    """
    name = getattr(predictor, "name", None)
    cls = type(predictor)
    qual = public_name(f"{cls.__module__}.{cls.__qualname__}")
    return f"{qual}:{name}" if isinstance(name, str) and name else qual


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
        least that fine is used (:func:`cervixwsi.geometry.resolve_level`, the
        rule every stage uses).
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
        Background threads reading and decoding patches while the predictor
        works (4).  Each reads a whole batch into its preallocated array; with a
        predictor on the CPU one is busy at a time, more keep a fast (GPU)
        predictor fed.  The calling thread also reads whatever patches of the
        next batch no thread has begun, so the predictor never waits for a
        thread that has not started.
    prefetch : int
        Batches read ahead of the predictor (bounds memory: ``prefetch + 1``
        batches of patches exist at a time).
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
            check_positive_int(getattr(self, name), f"HeatmapGenerator.{name}")
        if self.stride is not None:
            stride = check_positive_int(self.stride, "HeatmapGenerator.stride")
            if int(self.patch_size) % stride:
                raise ParameterError(
                    "HeatmapGenerator.stride must be a positive divisor of "
                    f"patch_size={self.patch_size}, got {self.stride!r}"
                )
        check_fraction(self.min_tissue, "HeatmapGenerator.min_tissue")

    def _level(self, slide: BaseSlide) -> int:
        return resolve_level(slide, self.level, self.mpp, owner="HeatmapGenerator")

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
        ParameterError
            For an invalid setting (a non-integer or non-positive ``batch_size``,
            a ``stride`` that does not divide ``patch_size``, ...).
        LevelError
            If ``level`` is not in the slide, or ``mpp`` is asked of a slide that
            records no resolution (a :class:`~cervixwsi.errors.ParameterError` too).
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

        size = int(self.patch_size)
        batch_size = int(self.batch_size)
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        xs, ys = plan.x.tolist(), plan.y.tolist()

        def read(i: int, out: npt.NDArray[np.uint8]) -> None:
            out[...] = slide.read_region((xs[i], ys[i]), level, (size, size))

        with (
            tqdm(
                total=len(todo),
                disable=not self.progress,
                unit="patch",
                desc=f"heatmap {slide.name}",
            ) as bar,
            _Reads(
                read,
                batches,
                (size, size, 3),
                depth=int(self.prefetch),
                threads=int(self.workers),
            ) as reads,
        ):
            for index, batch in enumerate(batches):
                patches = reads.get(index)
                values = _check_predictions(self.predictor.predict(patches), batch, index, plan)
                probs[batch] = values
                if store is not None:
                    store.write(batch, values)
                bar.update(len(batch))


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
    mpp = slide_mpp(slide)
    return Heatmap(
        array,
        stride0,
        slide.dimensions,
        tissue_mask=count > 0,
        info=info,
        mpp=mpp,
    )
