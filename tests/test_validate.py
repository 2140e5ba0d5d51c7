"""The one rule for parameter values (``cervixwsi._validate``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cervixwsi._validate import (
    check_choice,
    check_fraction,
    check_int,
    check_positive_int,
    check_real,
    is_int,
    is_real,
)
from cervixwsi.errors import CervixWSIError, ParameterError

NUMPY_INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("kind", [int, *NUMPY_INTS])
def test_python_and_numpy_integers_are_integers(kind: Any) -> None:
    value = kind(7)
    assert check_int(value, "n", min=0) == 7
    assert type(check_int(value, "n")) is int


@pytest.mark.parametrize(
    "value", [True, False, np.True_, 7.0, np.float64(7.0), "7", None, [7], 7 + 0j]
)
def test_bools_floats_and_others_are_not_integers(value: Any) -> None:
    assert not is_int(value)
    with pytest.raises(ParameterError, match=r"^Owner\.n must be an integer, got "):
        check_int(value, "Owner.n")


@given(st.integers(-1000, 1000), st.integers(-50, 50), st.integers(0, 100))
def test_check_int_accepts_exactly_the_closed_range(value: int, lo: int, span: int) -> None:
    hi = lo + span
    if lo <= value <= hi:
        assert check_int(np.int64(value), "n", min=lo, max=hi) == value
    else:
        with pytest.raises(ParameterError, match=rf"in \[{lo}, {hi}\], got {value}"):
            check_int(np.int64(value), "n", min=lo, max=hi)


def test_the_message_names_parameter_value_and_what_is_valid() -> None:
    with pytest.raises(ParameterError) as info:
        check_positive_int(0, "PatchSampler.n_tumor")
    assert str(info.value) == "PatchSampler.n_tumor must be an integer >= 1, got 0"
    # Both the project's error and Python's, so `except ValueError` keeps working.
    assert isinstance(info.value, CervixWSIError) and isinstance(info.value, ValueError)


@given(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.booleans())
def test_check_real_bounds_and_openness(value: float, lo_open: bool, hi_open: bool) -> None:
    inside = (
        math.isfinite(value)
        and (value > 0 if lo_open else value >= 0)
        and (value < 1 if hi_open else value <= 1)
    )
    if inside:
        assert check_real(value, "x", min=0, max=1, min_open=lo_open, max_open=hi_open) == value
    else:
        with pytest.raises(ParameterError, match="x must be a finite number in"):
            check_real(value, "x", min=0, max=1, min_open=lo_open, max_open=hi_open)


def test_check_real_takes_numpy_numbers_and_refuses_bool_and_nan() -> None:
    assert check_real(np.float32(0.5), "x") == 0.5
    assert check_real(np.int64(3), "x") == 3.0
    assert is_real(np.uint8(1)) and not is_real(np.True_) and not is_real(True)
    with pytest.raises(ParameterError, match="got True"):
        check_real(True, "x")
    with pytest.raises(ParameterError, match="got nan"):
        check_real(math.nan, "x", finite=False)
    assert check_real(math.inf, "x", finite=False) == math.inf
    with pytest.raises(ParameterError, match=r"a finite number > 0, got 0"):
        check_real(0, "mpp", min=0, min_open=True)


def test_check_fraction_and_choice() -> None:
    assert check_fraction(1, "f") == 1.0
    with pytest.raises(ParameterError, match=r"f must be a finite number in \[0, 1\], got 1.5"):
        check_fraction(1.5, "f")
    assert check_choice("a", "m", ("a", "b")) == "a"
    with pytest.raises(ParameterError, match="m must be one of 'a', 'b', got 'c'"):
        check_choice("c", "m", ("a", "b"))
    with pytest.raises(ParameterError, match=r"got \['a'\]"):
        check_choice(["a"], "m", {"a", "b"})  # unhashable: refused, not a TypeError
