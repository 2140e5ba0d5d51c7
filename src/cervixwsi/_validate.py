"""Checks of parameter values: one rule, one message style, for the whole library.

The rule:

* an **integer** is a Python ``int`` or a NumPy integer (``np.int64(3)`` is as good as
  ``3``); ``bool`` and ``np.bool_`` are not integers, and neither are floats, even
  integral ones;
* a **real number** is any integer as above or a Python/NumPy float, finite unless
  said otherwise; ``bool`` is not a number;
* every failure is a :class:`~cervixwsi.errors.ParameterError` whose message names the
  parameter, the value given and what would be valid, e.g.
  ``PatchSampler.patch_size must be an integer >= 1, got 0``.

Each function returns the value as a plain Python ``int`` or ``float``, so callers can
store what they checked.

Examples
--------
>>> import numpy as np
>>> check_int(np.int64(3), "workers", min=1)
3
>>> check_int(True, "workers")
Traceback (most recent call last):
...
cervixwsi.errors.ParameterError: workers must be an integer, got True
>>> check_real(0.5, "threshold", min=0, max=1)
0.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np

from cervixwsi.errors import ParameterError

__all__ = [
    "check_choice",
    "check_fraction",
    "check_int",
    "check_positive_int",
    "check_real",
    "is_int",
    "is_real",
]

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer that is not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for a Python or NumPy integer or float that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _shown(value: Any) -> str:
    """How a value appears in a message: NumPy scalars as the number they hold."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _range_words(
    lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False
) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def check_int(value: Any, name: str, *, min: int | None = None, max: int | None = None) -> int:
    """``value`` as an ``int``, if it is an integer within ``[min, max]``.

    Raises
    ------
    ParameterError
        Naming ``name``, the value and the valid range.

    Examples
    --------
    >>> check_int(5, "PatchGrid.stride", min=1, max=4)
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: PatchGrid.stride must be an integer in [1, 4], got 5
    """
    valid = f"an integer{_range_words(min, max)}"
    if not is_int(value):
        raise ParameterError(f"{name} must be {valid}, got {_shown(value)}")
    number = int(value)
    if (min is not None and number < min) or (max is not None and number > max):
        raise ParameterError(f"{name} must be {valid}, got {_shown(value)}")
    return number


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int``, if it is an integer >= 1.

    Examples
    --------
    >>> check_positive_int(0, "batch_size")
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: batch_size must be an integer >= 1, got 0
    """
    return check_int(value, name, min=1)


def check_real(
    value: Any,
    name: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float``, if it is a (finite) number within the given bounds.

    ``min_open`` / ``max_open`` exclude the bound itself.

    Examples
    --------
    >>> check_real(0.0, "mpp", min=0, min_open=True)
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: mpp must be a finite number > 0, got 0.0
    """
    bounds = _range_words(min, max, lo_open=min_open, hi_open=max_open)
    valid = f"{'a finite' if finite else 'a'} number{bounds}"
    if not is_real(value):
        raise ParameterError(f"{name} must be {valid}, got {_shown(value)}")
    number = float(value)
    if math.isnan(number) or (finite and not math.isfinite(number)):
        raise ParameterError(f"{name} must be {valid}, got {_shown(value)}")
    below = min is not None and (number <= min if min_open else number < min)
    above = max is not None and (number >= max if max_open else number > max)
    if below or above:
        raise ParameterError(f"{name} must be {valid}, got {_shown(value)}")
    return number


def check_fraction(value: Any, name: str) -> float:
    """``value`` as a ``float``, if it is a number in ``[0, 1]``.

    Examples
    --------
    >>> check_fraction(np.float32(0.25), "min_tissue")
    0.25
    """
    return check_real(value, name, min=0, max=1)


def check_choice(value: T, name: str, choices: Collection[T]) -> T:
    """``value``, if it is one of ``choices``.

    Examples
    --------
    >>> check_choice("nms", "method", ("components", "nms"))
    'nms'
    >>> check_choice("max", "method", ("components", "nms"))
    Traceback (most recent call last):
    ...
    cervixwsi.errors.ParameterError: method must be one of 'components', 'nms', got 'max'
    """
    try:
        ok = value in choices
    except TypeError:  # an unhashable value tested against a set
        ok = False
    if not ok:
        words = ", ".join(repr(c) for c in choices)
        raise ParameterError(f"{name} must be one of {words}, got {_shown(value)}")
    return value
