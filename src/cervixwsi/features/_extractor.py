"""The extractor: :class:`HeatmapFeatureExtractor` turns heatmaps into feature vectors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice
from cervixwsi.errors import FeatureError, ParameterError
from cervixwsi.features._catalogue import Feature, FeatureContext, _preset_features
from cervixwsi.features._table import FeatureTable, FeatureVector
from cervixwsi.features._units import FloatArray, UnitSystem, unit_of

__all__ = ["HeatmapFeatureExtractor", "HeatmapLike"]

logger = logging.getLogger(__name__)


@runtime_checkable
class HeatmapLike(Protocol):
    """What the extractor needs of a heatmap: a :class:`~cervixwsi.geometry.Raster` fits.

    A ``Heatmap`` (a Raster subclass with ``tissue_mask`` and ``slide_id``)
    fits too; those two attributes are used when present.
    """

    @property
    def array(self) -> npt.NDArray[Any]:
        """Tumor probabilities, 2-D, NaN where not predicted."""

    @property
    def downsample(self) -> float:
        """Level-0 pixels per heatmap pixel (the patch stride)."""

    @property
    def mpp(self) -> float | None:
        """Level-0 µm per pixel, or ``None``."""

    @property
    def pixel_size_um(self) -> float | None:
        """µm per heatmap pixel, or ``None``."""


def _pixel_scale(heatmap: HeatmapLike) -> tuple[float, UnitSystem]:
    """Length of one heatmap pixel and the unit system it is in."""
    size_um = heatmap.pixel_size_um
    if size_um is not None:
        return float(size_um), "um"
    return float(heatmap.downsample), "l0px"


def _tissue_of(heatmap: HeatmapLike, tissue_mask: Any) -> npt.NDArray[np.bool_] | None:
    """The explicit mask when given, else the heatmap's own ``tissue_mask``, else None."""
    mask = tissue_mask
    if mask is None:
        mask = getattr(heatmap, "tissue_mask", None)
    if mask is None:
        return None
    return np.asarray(getattr(mask, "array", mask))


class HeatmapFeatureExtractor:
    """Turns tumor-probability heatmaps into slide-level feature vectors.

    Parameters
    ----------
    preset : str or sequence of Feature
        ``"cervix28"`` (the study's value; 28 features with the default
        thresholds), ``"camelyon16"``, or your own list of :class:`Feature`.
    thresholds : sequence of float
        Probability thresholds that define tumor regions, ``(0.5, 0.9)`` (the
        study's value).  Ignored when ``preset`` is a list of features.
    extra_features : sequence of Feature
        Features appended to the preset's.
    on_missing : {"raise", "exclude"}
        What to do with tissue pixels that have no probability (NaN):
        ``"raise"`` a :class:`~cervixwsi.errors.FeatureError` (default), or
        ``"exclude"`` them from the tissue (logged).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Raster
    >>> rng = np.random.default_rng(0)
    >>> maps = [Raster(rng.random((16, 16)), 256, (4096, 4096)) for _ in range(3)]
    >>> ex = HeatmapFeatureExtractor(preset="camelyon16")
    >>> table = ex.extract_many(maps, slide_ids=["a", "b", "c"], progress=False)
    >>> table.shape, table.names[-1]
    ((3, 28), 'n_pixels@0.9')
    >>> def bright(ctx):                      # a feature of your own
    ...     return float((ctx.probabilities > 0.99).mean())
    >>> ex = HeatmapFeatureExtractor(extra_features=[Feature("frac_above_99", bright)])
    >>> ex.feature_names()[-1]
    'frac_above_99'
    """

    def __init__(
        self,
        preset: str | Sequence[Feature] = "cervix28",
        thresholds: Sequence[float] = (0.5, 0.9),
        *,
        extra_features: Sequence[Feature] = (),
        on_missing: Literal["raise", "exclude"] = "raise",
    ) -> None:
        self.preset = preset
        self.thresholds = tuple(thresholds)
        self.extra_features = tuple(extra_features)
        self.on_missing = on_missing

    def __repr__(self) -> str:
        preset = self.preset if isinstance(self.preset, str) else f"<{len(self.preset)} features>"
        return (
            f"HeatmapFeatureExtractor(preset={preset!r}, thresholds={self.thresholds}, "
            f"extra_features=<{len(self.extra_features)}>, on_missing={self.on_missing!r})"
        )

    @property
    def features(self) -> tuple[Feature, ...]:
        """The features, in output order (validated)."""
        if isinstance(self.preset, str):
            base = _preset_features(self.preset, self.thresholds, "HeatmapFeatureExtractor")
        else:
            base = list(self.preset)
        features = (*base, *self.extra_features)
        for f in features:
            if not isinstance(f, Feature):
                raise ParameterError(f"features must be Feature objects, got {f!r}")
        keys = [f.name("um") for f in features]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ParameterError(f"feature names must be unique, repeated: {dup}")
        check_choice(self.on_missing, "HeatmapFeatureExtractor.on_missing", ("raise", "exclude"))
        return features

    def feature_names(self, units: UnitSystem = "um") -> tuple[str, ...]:
        """Names of the features in unit system ``"um"`` or ``"l0px"``."""
        return tuple(f.name(units) for f in self.features)

    @property
    def _preset_name(self) -> str | None:
        return self.preset if isinstance(self.preset, str) and not self.extra_features else None

    def extract(
        self,
        heatmap: HeatmapLike,
        tissue_mask: Any = None,
        *,
        slide_id: str | None = None,
    ) -> FeatureVector:
        """The features of one heatmap.

        Parameters
        ----------
        heatmap : HeatmapLike
            A probability raster (values in ``[0, 1]``, NaN where not predicted).
        tissue_mask : Raster or numpy.ndarray, optional
            Boolean, same shape.  When given it is the tissue, even if the
            heatmap has a ``tissue_mask`` attribute of its own (which is used
            otherwise); without either, tissue is where the probabilities are
            finite.
        slide_id : str, optional
            Defaults to the heatmap's ``slide_id`` attribute, if any.

        Raises
        ------
        FeatureError
            If the tissue mask has another shape, a tissue pixel has an
            out-of-range probability, or (with ``on_missing="raise"``) a NaN.
        """
        return self._extract(self.features, heatmap, tissue_mask, slide_id)

    def _extract(
        self,
        features: tuple[Feature, ...],
        heatmap: HeatmapLike,
        tissue_mask: Any,
        slide_id: str | None,
    ) -> FeatureVector:
        ctx, pixel_length, units = self._prepare(heatmap, tissue_mask)
        values = np.array([f.compute(ctx, pixel_length) for f in features], dtype=np.float64)
        if slide_id is None:
            sid = getattr(heatmap, "slide_id", None)
            slide_id = None if sid is None else str(sid)
        names = tuple(f.name(units) for f in features)
        return FeatureVector(
            values, names, tuple(unit_of(n) for n in names), slide_id, self._preset_name
        )

    def extract_many(
        self,
        heatmaps: Iterable[HeatmapLike],
        *,
        tissue_masks: Iterable[Any] | None = None,
        slide_ids: Sequence[str] | None = None,
        progress: bool = True,
    ) -> FeatureTable:
        """The features of many heatmaps, as a :class:`FeatureTable`.

        Parameters
        ----------
        heatmaps : iterable of HeatmapLike
            Read one at a time (a generator that loads heatmaps lazily keeps
            memory flat).
        tissue_masks : iterable, optional
            One mask per heatmap, or ``None`` for a heatmap's own
            ``tissue_mask`` (see :meth:`extract`).
        slide_ids : sequence of str, optional
            Row names; default each heatmap's ``slide_id``, else its index.
        progress : bool
            Show a tqdm progress bar.

        Raises
        ------
        FeatureError
            As :meth:`extract` (the message names the heatmap), or when some
            heatmaps know their mpp and others do not (their features would
            have different units).
        ParameterError
            If ``tissue_masks`` or ``slide_ids`` are not one per heatmap.
        """
        from tqdm.auto import tqdm

        features = self.features
        total = len(heatmaps) if isinstance(heatmaps, Sized) else None
        masks: Iterator[Any] | None = None if tissue_masks is None else iter(tissue_masks)
        rows: list[FloatArray] = []
        ids: list[str] = []
        names: tuple[str, ...] | None = None
        bar = tqdm(heatmaps, total=total, desc="heatmap features", disable=not progress)
        for i, heatmap in enumerate(bar):
            mask = None
            if masks is not None:
                mask = next(masks, _END)
                if mask is _END:
                    raise ParameterError(f"tissue_masks ran out at heatmap {i}: give one each")
            if slide_ids is not None and i >= len(slide_ids):
                raise ParameterError(f"got {len(slide_ids)} slide_ids for more heatmaps")
            sid = None if slide_ids is None else str(slide_ids[i])
            try:
                fv = self._extract(features, heatmap, mask, sid)
            except FeatureError as exc:
                who = sid or getattr(heatmap, "slide_id", None)
                raise FeatureError(
                    f"heatmap {i}{'' if who is None else f' ({who})'}: {exc}"
                ) from exc
            if names is None:
                names = fv.names
            elif fv.names != names:
                raise FeatureError(
                    f"heatmap {i} gives features in other units than heatmap 0 "
                    f"({fv.units} vs {tuple(unit_of(n) for n in names)}): give all heatmaps "
                    "an mpp, or none"
                )
            rows.append(fv.values)
            ids.append(fv.slide_id if fv.slide_id is not None else str(i))
        if slide_ids is not None and len(slide_ids) != len(rows):
            raise ParameterError(f"got {len(slide_ids)} slide_ids for {len(rows)} heatmaps")
        if masks is not None and next(masks, _END) is not _END:
            raise ParameterError(f"got more tissue_masks than the {len(rows)} heatmaps")
        if names is None:
            names = tuple(f.name("um") for f in features)
        values = np.vstack(rows) if rows else np.empty((0, len(names)))
        logger.info("extracted %d features from %d heatmaps", len(names), len(rows))
        return FeatureTable(values, names, tuple(ids), self._preset_name)

    def _prepare(
        self, heatmap: HeatmapLike, tissue_mask: Any
    ) -> tuple[FeatureContext, float, UnitSystem]:
        try:
            p = np.asarray(heatmap.array, dtype=np.float64)
        except (AttributeError, TypeError, ValueError) as exc:
            raise FeatureError(
                f"a heatmap needs a numeric 2-D .array (a Raster), got {type(heatmap).__name__}"
            ) from exc
        if p.ndim != 2:
            raise FeatureError(f"a heatmap must be 2-D, got shape {p.shape}")
        finite = np.isfinite(p)
        tissue = _tissue_of(heatmap, tissue_mask)
        if tissue is None:
            tissue = finite
        else:
            if tissue.shape != p.shape:
                raise FeatureError(
                    f"the tissue mask has shape {tissue.shape}, the heatmap {p.shape}: "
                    "they must be on the same grid"
                )
            tissue = tissue.astype(bool, copy=False)
            missing = tissue & ~finite
            if missing.any():
                n = int(missing.sum())
                r, c = np.argwhere(missing)[0]
                if self.on_missing == "raise":
                    raise FeatureError(
                        f"{n} tissue pixel(s) have no probability (NaN), first at "
                        f"[row, col] = [{r}, {c}]: predict every tissue patch, or pass "
                        "on_missing='exclude' to leave them out of the tissue"
                    )
                logger.info("left %d tissue pixel(s) without a probability out of tissue", n)
                tissue = tissue & finite
        inside = p[tissue]
        if inside.size and (inside.min() < 0 or inside.max() > 1):
            raise FeatureError(
                f"probabilities must be in [0, 1], got values in "
                f"[{inside.min():g}, {inside.max():g}]"
            )
        if not inside.size:
            logger.warning("the heatmap has no tissue: all its features are 0")
        pixel_length, units = _pixel_scale(heatmap)
        return FeatureContext(np.where(tissue, p, 0.0), tissue), pixel_length, units


_END = object()
