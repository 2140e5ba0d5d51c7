"""Shared fixtures: the developers' ``../shared/data`` and seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CERVIXWSI_SHARED_DATA", ROOT.parent / "shared" / "data"))

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
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the developers' shared data is not here ({SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_slides(shared_data: Path) -> Path:
    """The real slide files in ``../shared/data/slides``."""
    return shared_data / "slides"


@pytest.fixture(scope="session")
def shared_tiles(shared_data: Path) -> Path:
    """The real H&E crops in ``../shared/data/tiles``."""
    return shared_data / "tiles"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so a failing test fails the same way again."""
    return np.random.default_rng(20261125)
