"""The description of one synthetic slide: :class:`SyntheticSlideSpec`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from cervixwsi._validate import check_choice, check_int, check_real
from cervixwsi.errors import ParameterError

__all__ = ["ARTIFACTS", "SyntheticSlideSpec", "drawn_difficulty"]

ARTIFACTS: tuple[str, ...] = ("blur", "dust", "fold", "pen")
"""Names of the artifacts :class:`SyntheticSlideSpec` can draw."""

_COMPRESSIONS = ("jpeg", "deflate", "lzw", "jpeg2000", "none")

#: Small tumor nests per mm² of tissue when ``n_nests`` is None: about 1100 on a
#: 100k x 100k slide at 0.25 µm/px with 35 % tissue, which merge into several
#: hundred tumor regions (the study reports > 300 per slide).
NESTS_PER_MM2 = 5.0


@dataclass(frozen=True)
class SyntheticSlideSpec:
    """What a synthetic H&E slide shows; every field is validated on construction.

    All sizes of drawn structures are in micrometres and converted with ``mpp``,
    so the same spec at another ``mpp`` shows the same tissue at another
    magnification.

    Parameters
    ----------
    width, height : int
        Level-0 size in pixels (default 20000 x 20000: 5 x 5 mm at 0.25 µm/px).
    mpp : float
        Level-0 micrometres per pixel (default 0.25: a 40x scan, the study's
        highest magnification, at which its 256 x 256 patches were cut).
    tumor : bool
        Whether the slide has squamous cell carcinoma nests.
    tissue_fraction : float
        Fraction of the slide covered by tissue, in (0, 0.9] (default 0.35).
    n_nests : int or None
        Number of small tumor nests (50–400 µm across).  None: ``NESTS_PER_MM2``
        (5) per mm² of tissue, at least 5 (a 100k x 100k slide at 0.25 µm/px
        gets about 1100, which merge into several hundred tumor regions, like
        the > 300 per slide of the study).
        Ignored for normal slides.
    nest_scatter : float
        In [0, 1]: the probability that a small nest lies anywhere in the tissue
        instead of near one of a few invasion foci (default 0.5).
    large_nests : int
        Number of large, lobulated nests (0.6–1.5 mm; default 3).
    stain_variation : float
        In [0, 0.5]: the relative spread of the per-slide perturbation of the
        stain vectors, stain amounts and glass tint (default 0.1).
    artifacts : iterable of str
        Any of ``"pen"`` (marker stroke), ``"fold"`` (folded, doubled tissue),
        ``"dust"`` (dark specks), ``"blur"`` (out-of-focus patches); stored as a
        sorted tuple.  Default: none.
    seed : int
        Seed of everything random; the same spec gives the same pixels.
    tile_size : int
        TIFF tile size (a multiple of 16; default 256).
    compression : {"jpeg", "deflate", "lzw", "jpeg2000", "none"}
        TIFF tile compression (default ``"jpeg"``).
    quality : int
        JPEG / JPEG 2000 quality in [1, 100] (default 90).
    mask_downsample : int
        Level-0 pixels per pixel of the ground-truth masks (default 16: 4 µm at
        0.25 µm/px, fine enough for the smallest 50 µm nests).
    difficulty : float
        In [0, 1] (default 0.5): how hard the slide is.  0 is textbook
        carcinoma (large pleomorphic hyperchromatic nuclei with prominent
        nucleoli, mitoses, keratin pearls) and few mimics; towards 1 the
        carcinoma's cells approach those of immature squamous metaplasia
        (small crowded basaloid cells), its nests get smaller, and mimic
        islands (metaplasia shaped like the nests) and lymphocyte clusters get
        common in tumor and normal slides alike.  The ground truth is exact at
        every difficulty (mimics are not tumor).  Calibrated so that a small
        CNN's patch AUC falls about evenly along the dial (see
        :func:`drawn_difficulty`).

    Raises
    ------
    ParameterError
        If a field is out of range; the message names the field.

    Examples
    --------
    >>> from cervixwsi.synthetic import SyntheticSlideSpec
    >>> spec = SyntheticSlideSpec(width=4096, height=4096, artifacts={"pen", "dust"}, seed=3)
    >>> spec.artifacts, spec.slide_area_mm2
    (('dust', 'pen'), 1.048576)
    >>> SyntheticSlideSpec(tissue_fraction=1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: SyntheticSlideSpec.tissue_fraction must be ... 0.9], got 1.5
    """

    width: int = 20000
    height: int = 20000
    mpp: float = 0.25
    tumor: bool = True
    tissue_fraction: float = 0.35
    n_nests: int | None = None
    nest_scatter: float = 0.5
    large_nests: int = 3
    stain_variation: float = 0.1
    artifacts: tuple[str, ...] = field(default=())
    seed: int = 0
    tile_size: int = 256
    compression: Literal["jpeg", "deflate", "lzw", "jpeg2000", "none"] = "jpeg"
    quality: int = 90
    mask_downsample: int = 16
    difficulty: float = 0.5

    def __post_init__(self) -> None:
        def integer(name: str, lo: int, hi: int | None = None) -> int:
            value = check_int(getattr(self, name), f"SyntheticSlideSpec.{name}", min=lo, max=hi)
            object.__setattr__(self, name, value)
            return value

        def number(name: str, lo: float, hi: float, *, open_lo: bool = False) -> None:
            value = check_real(
                getattr(self, name), f"SyntheticSlideSpec.{name}", min=lo, max=hi, min_open=open_lo
            )
            object.__setattr__(self, name, value)

        integer("width", 64)
        integer("height", 64)
        number("mpp", 0.05, 5.0)
        if not isinstance(self.tumor, bool):
            raise ParameterError(
                f"SyntheticSlideSpec.tumor must be True or False, got {self.tumor!r}"
            )
        number("tissue_fraction", 0.0, 0.9, open_lo=True)
        if self.n_nests is not None:
            integer("n_nests", 0)
        number("nest_scatter", 0.0, 1.0)
        integer("large_nests", 0, 50)
        number("stain_variation", 0.0, 0.5)
        object.__setattr__(self, "artifacts", _artifacts(self.artifacts))
        integer("seed", 0, 2**63 - 1)
        tile = integer("tile_size", 16, 4096)
        if tile % 16:
            raise ParameterError(
                f"SyntheticSlideSpec.tile_size must be a multiple of 16, got {tile}"
            )
        check_choice(self.compression, "SyntheticSlideSpec.compression", _COMPRESSIONS)
        integer("quality", 1, 100)
        integer("mask_downsample", 2, 256)
        number("difficulty", 0.0, 1.0)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return (self.width, self.height)

    @property
    def slide_area_mm2(self) -> float:
        """Area of the whole slide in mm²."""
        return self.width * self.height * (self.mpp / 1000.0) ** 2

    @property
    def nest_count(self) -> int:
        """The number of small nests drawn (0 for normal slides)."""
        if not self.tumor:
            return 0
        if self.n_nests is not None:
            return self.n_nests
        return max(5, round(NESTS_PER_MM2 * self.slide_area_mm2 * self.tissue_fraction))

    def replace(self, **changes: Any) -> SyntheticSlideSpec:
        """A copy with some fields changed (validated again).

        Examples
        --------
        >>> SyntheticSlideSpec(seed=1).replace(tumor=False).tumor
        False
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ParameterError(
                f"SyntheticSlideSpec has no field(s) {unknown}; fields are {sorted(names)}"
            )
        return replace(self, **changes)


#: The dial's calibration: ``(difficulty, hardness)`` knots, linear in between.  The
#: layout and the renderer draw the *hardness* (the carcinoma's cells, nest sizes, mimic
#: islands, lymphocyte clusters, keratin pearls all move with it).  Drawn with hardness
#: equal to difficulty, the small CNN of ``benchmarks/bench_synthetic_realism.py --only
#: dial`` scored a patch AUC of 0.998, 0.991, 0.972, 0.931 and 0.795 at 0, 0.25, 0.5,
#: 0.75 and 1 (mean of seeds 0 and 1): most of the fall came in the last quarter.  The
#: knots put the hardness where a smooth curve through that and 6 more hardnesses
#: (0.65-0.91) falls evenly; docs/explanation/synthetic_realism.rst has the result.
DIAL_KNOTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.25, 0.68),
    (0.5, 0.8),
    (0.75, 0.88),
    (1.0, 1.0),
)


def drawn_difficulty(spec: SyntheticSlideSpec) -> float:
    """The hardness the layout and the renderer draw for ``spec.difficulty``.

    ``spec.difficulty`` rounded to 0.01, mapped through :data:`DIAL_KNOTS`,
    rounded to 0.01.  0 stays 0 and 1 stays 1.

    Examples
    --------
    >>> drawn_difficulty(SyntheticSlideSpec(difficulty=0.0))
    0.0
    >>> drawn_difficulty(SyntheticSlideSpec(difficulty=0.5))
    0.8
    >>> drawn_difficulty(SyntheticSlideSpec(difficulty=0.333))
    0.72
    """
    d = round(spec.difficulty, 2)
    for (x0, y0), (x1, y1) in itertools.pairwise(DIAL_KNOTS):
        if d <= x1:
            return round(y0 + (y1 - y0) * (d - x0) / (x1 - x0), 2)
    return DIAL_KNOTS[-1][1]


def _artifacts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ParameterError(
            f"SyntheticSlideSpec.artifacts must be a collection of names from {ARTIFACTS}, "
            f"got {value!r}"
        )
    items = list(value)
    bad = [n for n in items if n not in ARTIFACTS]
    if bad:
        raise ParameterError(
            f"SyntheticSlideSpec.artifacts has unknown name(s) {bad}; valid: {ARTIFACTS}"
        )
    return tuple(sorted(set(items)))
