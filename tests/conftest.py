"""Shared fixtures: the real test files in ``tests/data``, seeded randomness, optional peers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# "ci" (what `nox -s tests` runs): a fixed set of examples, so a run is reproducible and
# CI never goes red by chance; "dev" (plain pytest): fresh random examples every run;
# "thorough": many more, to hunt for edge cases now and then.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``tests/data``: the small real files shipped with the tests (see its README)."""
    return DATA


@pytest.fixture(scope="session")
def real_slides() -> Path:
    """The real slide files in ``tests/data/slides``."""
    return DATA / "slides"


@pytest.fixture(scope="session")
def real_tiles() -> Path:
    """The real H&E crops in ``tests/data/tiles``."""
    return DATA / "tiles"


@pytest.fixture(scope="session")
def openslide() -> Any:
    """OpenSlide, the peer for pixel comparisons; only the tests that ask for it skip without it.

    Never skip on cervixwsi's own modules: a library import error must fail the suite.
    """
    return pytest.importorskip("openslide")


@pytest.fixture(scope="session")
def tiffslide() -> Any:
    """tiffslide, a second peer that must open what cervixwsi writes."""
    return pytest.importorskip("tiffslide")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so a failing test fails the same way again."""
    return np.random.default_rng(20261125)
