"""One rule for choosing a level: every stage gives the same answer to the same request.

The slide, the tissue masker, the patch grid, the patch sampler and the heatmap generator
all resolve a ``level=`` or ``mpp=`` request through
:func:`cervixwsi.geometry.resolve_level`.  Asked the same questions, they must agree with
each other and with an independent statement of the rule: the coarsest level whose µm/px
is at most the target on *both* axes (1 % tolerance), level 0 when even level 0 is coarser.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from cervixwsi.errors import LevelError, ParameterError, RegionError
from cervixwsi.geometry import Raster, resolve_level
from cervixwsi.heatmap import HeatmapGenerator
from cervixwsi.slide import ArraySlide
from cervixwsi.tiling import PatchGrid, PatchSampler
from cervixwsi.tissue import TissueMasker

MPP = (0.25, 0.26)  # anisotropic pixels, as some scanners record them
SIDE = 256
PATCH = 16
TARGETS = [0.1, 0.25, 0.26, 0.5, 0.51, 0.52, 0.525, 0.53, 1.0, 1.04, 1.05, 2.08, 4.0]


def _slide(mpp: tuple[float, float] | None = MPP) -> ArraySlide:
    rng = np.random.default_rng(0)
    base = rng.integers(100, 200, (SIDE, SIDE, 3), dtype=np.uint8)
    levels = [base[:: 2**k, :: 2**k].copy() for k in range(4)]  # downsamples 1, 2, 4, 8
    return ArraySlide(levels, mpp=mpp, name="anisotropic")


def _expected(target: float) -> int:
    """The rule, written independently: per axis, level k is fine enough when its µm/px
    (mpp_axis * 2**k) is at most the target plus 1 %."""
    fine_enough = [k for k in range(4) if all(m * 2**k <= target * 1.01 for m in MPP)]
    return max(fine_enough, default=0)


class _Mean:
    def predict(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.asarray(batch.mean(axis=(1, 2, 3)) / 255.0, np.float32)


def _all_tissue(slide: ArraySlide) -> Raster:
    return Raster(np.ones((SIDE // PATCH, SIDE // PATCH), bool), PATCH, slide.dimensions)


def _sampler(**kwargs: Any) -> PatchSampler:
    return PatchSampler(n_normal_normal_slide=2, patch_size=PATCH, seed=0, **kwargs)


def _levels_chosen(slide: ArraySlide, target: float) -> dict[str, int]:
    heat = HeatmapGenerator(
        _Mean(), patch_size=PATCH, mpp=target, masker=TissueMasker(level=3), progress=False
    ).generate(slide, tissue_mask=_all_tissue(slide))
    return {
        "geometry.resolve_level": resolve_level(slide, mpp=target),
        "Slide.level_for_mpp": slide.level_for_mpp(target),
        "TissueMasker.choose_level": TissueMasker(mpp=target).choose_level(slide),
        "PatchGrid": PatchGrid(patch_size=PATCH, mpp=target).coords(slide).level,
        "PatchSampler": _sampler(mpp=target).sample(slide, _all_tissue(slide)).level,
        "HeatmapGenerator": heat.info.level,
    }


@pytest.mark.parametrize("target", TARGETS)
def test_every_stage_chooses_the_same_level_for_an_mpp(target: float) -> None:
    chosen = _levels_chosen(_slide(), target)
    assert chosen == dict.fromkeys(chosen, _expected(target))


def test_the_coarser_axis_decides() -> None:
    # 0.51 µm/px: level 1 is 0.50 x 0.52 µm/px, too coarse on y, so level 0 is read (the
    # mean of the axes, 0.255 µm/px, would have chosen level 1).
    assert _expected(0.51) == 0 and 0.51 in TARGETS


def test_every_stage_refuses_a_missing_level_with_the_same_error() -> None:
    slide = _slide()
    attempts = {
        "geometry.resolve_level": lambda: resolve_level(slide, level=4),
        "Slide.level_mpp": lambda: slide.level_mpp(4),
        "Slide.read_region": lambda: slide.read_region((0, 0), 4, (8, 8)),
        "TissueMasker": lambda: TissueMasker(level=4).choose_level(slide),
        "PatchGrid": lambda: PatchGrid(patch_size=PATCH, level=4).coords(slide),
        "PatchSampler": lambda: _sampler(level=4).sample(slide, _all_tissue(slide)),
        "HeatmapGenerator": lambda: HeatmapGenerator(
            _Mean(), patch_size=PATCH, level=4, progress=False
        ).generate(slide, tissue_mask=_all_tissue(slide)),
    }
    for who, attempt in attempts.items():
        with pytest.raises(LevelError, match=r"level 4 .*valid levels are 0\.\.3") as info:
            attempt()
        # One type that old `except RegionError` and `except ValueError` clauses still catch.
        assert isinstance(info.value, RegionError) and isinstance(info.value, ParameterError), who


def test_every_stage_refuses_an_mpp_request_on_a_slide_without_mpp() -> None:
    slide = _slide(mpp=None)
    attempts = {
        "geometry.resolve_level": lambda: resolve_level(slide, mpp=0.5),
        "Slide.level_for_mpp": lambda: slide.level_for_mpp(0.5),
        "PatchGrid": lambda: PatchGrid(patch_size=PATCH, mpp=0.5).coords(slide),
        "PatchSampler": lambda: _sampler(mpp=0.5).sample(slide, _all_tissue(slide)),
        "HeatmapGenerator": lambda: HeatmapGenerator(
            _Mean(), patch_size=PATCH, mpp=0.5, progress=False
        ).generate(slide, tissue_mask=_all_tissue(slide)),
    }
    for attempt in attempts.values():
        with pytest.raises(LevelError, match="records no µm per pixel"):
            attempt()
    # The tissue masker alone has a documented stand-in for a missing mpp.
    assert TissueMasker(mpp=1.0, assumed_mpp=0.25).choose_level(slide) == 2


def test_level_and_mpp_together_are_refused() -> None:
    with pytest.raises(ParameterError, match="give level or mpp, not both"):
        resolve_level(_slide(), level=0, mpp=0.5)
    with pytest.raises(ParameterError, match="give level or mpp, not both"):
        HeatmapGenerator(_Mean(), level=0, mpp=0.5, progress=False).generate(_slide())
