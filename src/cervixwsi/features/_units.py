"""Feature units: the array and unit-system types, and :func:`unit_of` (a name's unit)."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "UnitSystem", "unit_of"]

FloatArray = npt.NDArray[np.float64]
UnitSystem = Literal["um", "l0px"]

_UNIT_SUFFIX_RE = re.compile(r"_(um|l0px)(\d*)$")
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_UNIT_BASE = {"um": "µm", "l0px": "level-0 px"}


def unit_of(name: str) -> str:
    """The unit of a feature, read from its name.

    Parameters
    ----------
    name : str
        A feature name such as ``"mean_region_area_um2@0.9"``.

    Returns
    -------
    str
        ``"µm"``, ``"µm²"``, ``"level-0 px²"``, ... or ``"1"`` for a
        dimensionless feature (counts, ratios, probabilities, shape measures).

    Examples
    --------
    >>> unit_of("mean_region_area_um2@0.9"), unit_of("largest_region_major_axis_l0px@0.5")
    ('µm²', 'level-0 px')
    >>> unit_of("tumor_tissue_ratio@0.9")
    '1'
    """
    key = name.split("@", 1)[0]
    match = _UNIT_SUFFIX_RE.search(key)
    if match is None:
        return "1"
    system, power = match.group(1), match.group(2)
    return _UNIT_BASE[system] + power.translate(_SUPERSCRIPT)
