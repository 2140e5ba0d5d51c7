"""The feature catalogue: :class:`Feature`, :class:`FeatureContext` and the presets."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_int, check_real
from cervixwsi.errors import FeatureError, ParameterError
from cervixwsi.features._regions import Regions
from cervixwsi.features._units import _UNIT_SUFFIX_RE, FloatArray, UnitSystem

__all__ = ["PRESETS", "Feature", "FeatureContext", "preset_features"]

#: The names of the built-in presets.
PRESETS: tuple[str, ...] = ("cervix28", "camelyon16")

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class FeatureContext:
    """What a feature's function sees: one heatmap, and the threshold of the feature.

    Regions are computed once per threshold and shared by all features of a
    heatmap.  All quantities are in heatmap pixels.

    Attributes
    ----------
    probability_map : numpy.ndarray
        2-D float64 probabilities, 0 outside tissue.
    tissue : numpy.ndarray
        2-D bool tissue mask.
    probabilities : numpy.ndarray
        1-D float64 probabilities of the tissue pixels.
    tissue_pixels : int
        Number of tissue pixels.
    threshold : float or None
        The feature's threshold (``None`` for threshold-independent features).

    Examples
    --------
    >>> import numpy as np
    >>> ctx = FeatureContext(np.array([[0.2, 0.95]]), np.ones((1, 2), bool), 0.9)
    >>> ctx.tissue_pixels, ctx.regions.count
    (2, 1)
    """

    def __init__(
        self,
        probability_map: FloatArray,
        tissue: npt.NDArray[np.bool_],
        threshold: float | None = None,
    ) -> None:
        self.probability_map = probability_map
        self.tissue = tissue
        self.probabilities: FloatArray = probability_map[tissue]
        self.tissue_pixels = int(self.probabilities.size)
        self.threshold = threshold
        self._cache: dict[float, Regions] = {}

    def at(self, threshold: float | None) -> FeatureContext:
        """The same heatmap seen by a feature of another threshold (shares the regions)."""
        ctx = copy.copy(self)  # shallow: the region cache is shared
        ctx.threshold = threshold
        return ctx

    def regions_at(self, threshold: float) -> Regions:
        """The regions of ``p >= threshold`` (computed once per threshold)."""
        regions = self._cache.get(threshold)
        if regions is None:
            regions = Regions(self.probability_map, self.tissue, threshold)
            self._cache[threshold] = regions
        return regions

    @property
    def regions(self) -> Regions:
        """The regions at the feature's own threshold."""
        if self.threshold is None:
            raise FeatureError("a threshold-independent feature cannot use regions")
        return self.regions_at(self.threshold)


@dataclass(frozen=True, slots=True)
class Feature:
    """One heatmap feature: a declarative record and the function that computes it.

    Parameters
    ----------
    key : str
        Identifier without unit or threshold, ``[a-z][a-z0-9_]*`` (e.g.
        ``"mean_region_area"``).  The full name adds the unit and ``@t``.
    function : callable
        ``function(context: FeatureContext) -> float``, in heatmap pixels.
    description : str
        One line for documentation.
    threshold : float or None
        The threshold in ``(0, 1]`` whose regions the feature uses, or
        ``None``.
    length_power : int
        The feature's dimension as a power of length: 0 for dimensionless
        values (counts, ratios, probabilities, shape measures), 1 for lengths,
        2 for areas, 4 for variances of areas.  The value is multiplied by the
        heatmap's pixel length to this power.

    Examples
    --------
    >>> f = Feature("n_pixels", lambda ctx: float(ctx.regions.pixels), "pixels >= t",
    ...             threshold=0.7)
    >>> f.name("um")
    'n_pixels@0.7'
    >>> Feature("area", lambda ctx: 0.0, "", threshold=0.5, length_power=2).name("l0px")
    'area_l0px2@0.5'
    """

    key: str
    function: Callable[[FeatureContext], float] = field(repr=False, compare=False)
    description: str = ""
    threshold: float | None = None
    length_power: int = 0

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key) or _UNIT_SUFFIX_RE.search(self.key):
            raise ParameterError(
                f"feature key must match [a-z][a-z0-9_]* and not end in a unit suffix "
                f"(_um, _um2, _l0px, ...), got {self.key!r}"
            )
        if self.threshold is not None:
            object.__setattr__(
                self, "threshold", _check_threshold(self.threshold, "Feature.threshold")
            )
        power = check_int(self.length_power, "Feature.length_power", min=0)
        object.__setattr__(self, "length_power", power)

    def name(self, units: UnitSystem) -> str:
        """The full name in unit system ``"um"`` (µm) or ``"l0px"`` (level-0 pixels)."""
        name = self.key
        if self.length_power:
            power = str(self.length_power) if self.length_power > 1 else ""
            name += f"_{units}{power}"
        if self.threshold is not None:
            name += f"@{self.threshold:g}"
        return name

    def compute(self, context: FeatureContext, pixel_length: float) -> float:
        """The value in physical units (or level-0 pixels); always finite."""
        value = float(self.function(context.at(self.threshold)))
        if not math.isfinite(value):
            raise FeatureError(
                f"feature {self.name('um')!r} gave {value!r}; features must be finite"
            )
        return value * pixel_length**self.length_power if self.length_power else value


def _check_threshold(t: object, name: str) -> float:
    """A threshold as a plain ``float`` in ``(0, 1]`` (NumPy scalars accepted, bool not)."""
    return check_real(t, name, min=0, max=1, min_open=True)


# --- feature functions (heatmap pixel units) ------------------------------------------------


def _max_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.max()) if ctx.tissue_pixels else 0.0


def _mean_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.mean()) if ctx.tissue_pixels else 0.0


def _std_probability(ctx: FeatureContext) -> float:
    return float(ctx.probabilities.std()) if ctx.tissue_pixels else 0.0


def _p99_probability(ctx: FeatureContext) -> float:
    return float(np.percentile(ctx.probabilities, 99)) if ctx.tissue_pixels else 0.0


def _n_regions(ctx: FeatureContext) -> float:
    return float(ctx.regions.count)


def _n_pixels(ctx: FeatureContext) -> float:
    return float(ctx.regions.pixels)


def _tumor_tissue_ratio(ctx: FeatureContext) -> float:
    return ctx.regions.pixels / ctx.tissue_pixels if ctx.tissue_pixels else 0.0


def _total_tumor_area(ctx: FeatureContext) -> float:
    return float(ctx.regions.pixels)


def _mean_region_area(ctx: FeatureContext) -> float:
    r = ctx.regions
    return r.pixels / r.count if r.count else 0.0


def _mean_region_probability(ctx: FeatureContext) -> float:
    r = ctx.regions
    return float(r.probability_sums.sum()) / r.pixels if r.pixels else 0.0


def _probability_mass_ratio(ctx: FeatureContext) -> float:
    mass = float(ctx.regions.probability_sums.sum())
    return mass / ctx.tissue_pixels if ctx.tissue_pixels else 0.0


def _largest(prop: str) -> Callable[[FeatureContext], float]:
    def function(ctx: FeatureContext) -> float:
        return ctx.regions.largest_property(prop)

    function.__name__ = f"largest_{prop}"
    return function


_Stat = Literal["max", "mean", "var", "skew", "kurt"]


def _summary(values: FloatArray, stat: _Stat) -> float:
    """Max, mean, population variance, skewness or excess kurtosis; 0 where undefined."""
    if values.size == 0:
        return 0.0
    if stat == "max":
        return float(values.max())
    if stat == "mean":
        return float(values.mean())
    centred = values - values.mean()
    var = float(np.mean(centred**2))
    if stat == "var":
        return var
    # Skewness and kurtosis of fewer than two distinct values are undefined: 0.
    if values.size < 2 or var <= 1e-12 * max(1.0, float(np.mean(values**2))):
        return 0.0
    if stat == "skew":
        return float(np.mean(centred**3) / var**1.5)
    return float(np.mean(centred**4) / var**2 - 3.0)


def _region_summary(prop: str, stat: _Stat) -> Callable[[FeatureContext], float]:
    def function(ctx: FeatureContext) -> float:
        r = ctx.regions
        values = r.areas if prop == "area" else r.column(prop)
        return _summary(values, stat)

    function.__name__ = f"{stat}_{prop}"
    return function


def _cervix28(thresholds: Sequence[float]) -> list[Feature]:
    features = [
        Feature("max_probability", _max_probability, "maximum probability over tissue"),
        Feature("mean_probability", _mean_probability, "mean probability over tissue"),
        Feature(
            "std_probability",
            _std_probability,
            "standard deviation (population) of the probability over tissue",
        ),
        Feature("p99_probability", _p99_probability, "99th percentile of the probability"),
    ]
    per_threshold: list[tuple[str, Callable[[FeatureContext], float], str, int]] = [
        ("n_regions", _n_regions, "number of regions", 0),
        ("tumor_tissue_ratio", _tumor_tissue_ratio, "tumor area / tissue area", 0),
        ("total_tumor_area", _total_tumor_area, "total area of the regions", 2),
        ("largest_region_area", _largest("area"), "area of the largest region", 2),
        ("mean_region_area", _mean_region_area, "mean area of the regions", 2),
        (
            "largest_region_major_axis",
            _largest("axis_major_length"),
            "longest axis (major axis of the moment ellipse) of the largest region",
            1,
        ),
        (
            "largest_region_eccentricity",
            _largest("eccentricity"),
            "eccentricity of the moment ellipse of the largest region",
            0,
        ),
        (
            "largest_region_extent",
            _largest("extent"),
            "extent of the largest region (area / bounding-box area)",
            0,
        ),
        (
            "largest_region_solidity",
            _largest("solidity"),
            "solidity of the largest region (area / convex-hull area)",
            0,
        ),
        (
            "largest_region_perimeter",
            _largest("perimeter"),
            "perimeter of the largest region (the boundary of its pixel squares)",
            1,
        ),
        (
            "mean_region_probability",
            _mean_region_probability,
            "mean probability inside the regions",
            0,
        ),
        (
            "region_probability_mass_ratio",
            _probability_mass_ratio,
            "sum of the probability inside the regions / tissue area",
            0,
        ),
    ]
    for t in thresholds:
        features += [
            Feature(key, fn, desc, threshold=t, length_power=power)
            for key, fn, desc, power in per_threshold
        ]
    return features


_STAT_POWER = {"max": 1, "mean": 1, "var": 2, "skew": 0, "kurt": 0}
_STAT_WORD = {
    "max": "maximum",
    "mean": "mean",
    "var": "variance",
    "skew": "skewness",
    "kurt": "excess kurtosis",
}


def _camelyon16(thresholds: Sequence[float]) -> list[Feature]:
    if len(thresholds) != 2:
        raise ParameterError(
            f"the 'camelyon16' preset needs two thresholds (low, high), got {tuple(thresholds)}"
        )
    low, high = sorted(thresholds)
    features: list[Feature] = []
    for prop, t, power in (
        ("area", high, 2),
        ("perimeter", high, 1),
        ("eccentricity", high, 0),
        ("solidity", high, 0),
        ("extent", low, 0),
    ):
        for stat in ("max", "mean", "var", "skew", "kurt"):
            features.append(
                Feature(
                    f"{stat}_region_{prop}",
                    _region_summary(prop, stat),
                    f"{_STAT_WORD[stat]} of the {prop} of the regions",
                    threshold=t,
                    length_power=power * _STAT_POWER[stat],
                )
            )
    features += [
        Feature("tumor_tissue_ratio", _tumor_tissue_ratio, "tumor area / tissue area", high),
        Feature(
            "largest_region_major_axis",
            _largest("axis_major_length"),
            "longest axis (major axis of the moment ellipse) of the largest region",
            low,
            length_power=1,
        ),
        Feature(
            "n_pixels",
            _n_pixels,
            "number of heatmap pixels at or above t (Wang et al.'s count: it depends on the "
            "heatmap's stride, unlike the features in µm)",
            high,
        ),
    ]
    return features


_PRESET_BUILDERS: dict[str, Callable[[Sequence[float]], list[Feature]]] = {
    "cervix28": _cervix28,
    "camelyon16": _camelyon16,
}


def preset_features(
    preset: str = "cervix28", thresholds: Sequence[float] = (0.5, 0.9)
) -> list[Feature]:
    """The :class:`Feature` list of a built-in preset.

    Parameters
    ----------
    preset : {"cervix28", "camelyon16"}
        ``"cervix28"`` (the study's value) or ``"camelyon16"``.
    thresholds : sequence of float
        Thresholds in ``(0, 1]``; ``(0.5, 0.9)`` (the study's value).
        ``"cervix28"`` has 4 + 12 features per threshold; ``"camelyon16"``
        needs exactly two (low, high).

    Examples
    --------
    >>> [f.name("um") for f in preset_features("cervix28")][:5]
    ['max_probability', 'mean_probability', 'std_probability', 'p99_probability', 'n_regions@0.5']
    >>> len(preset_features("camelyon16"))
    28
    """
    return _preset_features(preset, thresholds, "preset_features")


def _preset_features(preset: str, thresholds: Sequence[float], owner: str) -> list[Feature]:
    """:func:`preset_features`, with errors naming ``owner``'s parameters."""
    builder = _PRESET_BUILDERS.get(preset)
    if builder is None:
        raise ParameterError(
            f"{owner}.preset: unknown feature preset {preset!r}; valid presets: {PRESETS}"
        )
    return builder(_check_thresholds(thresholds, owner))


def _check_thresholds(thresholds: Sequence[float], owner: str) -> tuple[float, ...]:
    values = tuple(thresholds)
    if not values:
        raise ParameterError(f"{owner}.thresholds must not be empty")
    # NumPy scalars become plain floats
    floats = tuple(_check_threshold(t, f"{owner}.thresholds[{i}]") for i, t in enumerate(values))
    if len(set(floats)) != len(floats):
        raise ParameterError(f"{owner}.thresholds must be distinct, got {floats}")
    return floats
