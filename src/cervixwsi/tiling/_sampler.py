"""The study's random training patches (:class:`PatchSampler`)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._store import jsonable
from cervixwsi._validate import (
    check_choice,
    check_fraction,
    check_int,
    check_positive_int,
    check_real,
)
from cervixwsi.errors import ParameterError, SamplingError
from cervixwsi.geometry import Raster, resolve_resolution
from cervixwsi.tiling._coords import IntArray, PatchCoords, check_mask
from cervixwsi.tissue import SlideLike, TissueMask

__all__ = ["PatchSampler"]


def _grow(mask: TissueMask, margin_um: float) -> TissueMask:
    """``mask`` grown by ``margin_um`` (an elliptical dilation at the mask's resolution)."""
    if margin_um <= 0 or not mask.array.any():
        return mask
    if mask.pixel_size_um is None:
        raise ParameterError(
            "normal_margin_um needs the tumor mask's mpp (the mask records none); "
            "use normal_margin_um=0 or give the mask an mpp"
        )
    radius = math.ceil(margin_um / mask.pixel_size_um)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = cv2.dilate(mask.array.view(np.uint8), kernel).view(np.bool_)
    return TissueMask(grown, mask.downsample, mask.slide_dimensions, mpp=mask.mpp)


@dataclass(frozen=True)
class _DrawContext:
    """What every draw of one slide shares."""

    tissue: TissueMask
    rng: np.random.Generator
    extent: float
    taken: set[int]  # level-0 positions already returned (no duplicates across labels)
    slide: str


@dataclass(frozen=True)
class PatchSampler:
    """The study's random training patches: tumor patches and normal-tissue patches.

    Positions are uniform over area at level-0 resolution: a candidate's
    centre is drawn in a mask pixel chosen with probability proportional to
    its level-0 area (clipped at the slide's edge), at a uniform continuous
    offset inside it, and floored to an integer level-0 pixel; candidates that
    break the rules below are redrawn, and a position is never returned twice.

    Every sampled patch lies wholly inside the slide and has a tissue fraction
    of at least ``min_tissue``.  Labels:

    * ``label_rule="center"`` (default): **tumor** (1) when the patch's centre
      point lies in the tumor mask; **normal** (0) when it lies outside the
      tumor mask grown by ``normal_margin_um``.
    * ``label_rule="fraction"``: **tumor** when at least
      ``min_tumor_fraction`` of the patch's area is tumor; **normal** when the
      patch does not overlap the grown tumor mask at all.

    Tumor candidates are drawn in the tumor mask, normal ones in the tissue
    mask.

    Parameters
    ----------
    n_tumor : int
        Tumor patches per tumor slide, default 1000 (the study's value).
    n_normal : int
        Normal patches per tumor slide, default 500 (the study's value).
    n_normal_normal_slide : int
        Normal patches per slide without tumor, default 500 (the study's value).
    patch_size : int
        Patch side in pixels, default 256 (the study's value).
    level : int
        Level the patches are read from, default 0 (the study's value).
    label_rule : {"center", "fraction"}
        See above.
    min_tumor_fraction : float
        For ``label_rule="fraction"``, default 0.5.
    normal_margin_um : float
        Normal patches keep this distance (µm) from tumor, default 0.
    min_tissue : float
        Minimum tissue fraction of every patch, default 0.5.
    on_shortfall : {"warn", "raise"}
        When fewer valid positions are found than asked (in
        ``max_draws_per_patch`` candidates per asked patch), return those
        with a warning, or raise :class:`~cervixwsi.errors.SamplingError`.
    max_draws_per_patch : int
        Candidate budget per asked patch, default 200.
    seed : int, optional
        Default seed of :meth:`sample`.
    mpp : float, optional
        Patches at this resolution (µm/px) instead of at ``level`` (which is then
        ignored, as by :class:`~cervixwsi.tiling.PatchGrid`): read from the coarsest
        level at least as fine and resampled to ``patch_size``, so every patch covers
        ``patch_size * mpp`` µm whatever the slide's scan resolution (the level is
        chosen by :func:`cervixwsi.geometry.resolve_resolution`; the slide's µm/px
        is its coarser axis).  Default ``None``: patches at ``level``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.tissue import TissueMask
    >>> tissue = TissueMask(np.ones((40, 40), bool), 64, (2560, 2560))
    >>> tumor = np.zeros((40, 40), bool); tumor[10:20, 10:30] = True
    >>> tumor = TissueMask(tumor, 64, (2560, 2560))
    >>> sampler = PatchSampler(n_tumor=20, n_normal=10, seed=0)
    >>> coords = sampler.sample((2560, 2560), tissue, tumor)
    >>> np.bincount(coords.labels)
    array([10, 20])
    >>> bool(tumor.values_at(*coords[coords.labels == 1].centers()).all())
    True

    At a resolution: a slide scanned at 0.25 µm/px is read at its level 1 for
    0.5 µm/px patches, each covering ``256 * 2`` level-0 pixels.

    >>> from cervixwsi.slide import ArraySlide
    >>> rgb = np.zeros((2560, 2560, 3), np.uint8)
    >>> slide = ArraySlide([rgb, rgb[::2, ::2], rgb[::4, ::4]], mpp=0.25)
    >>> coords = PatchSampler(n_normal_normal_slide=5, mpp=0.5, seed=0).sample(slide, tissue)
    >>> coords.level, coords.downsample, coords.extent
    (1, 2.0, 512.0)
    """

    n_tumor: int = 1000
    n_normal: int = 500
    n_normal_normal_slide: int = 500
    patch_size: int = 256
    level: int = 0
    label_rule: Literal["center", "fraction"] = "center"
    min_tumor_fraction: float = 0.5
    normal_margin_um: float = 0.0
    min_tissue: float = 0.5
    on_shortfall: Literal["warn", "raise"] = "warn"
    max_draws_per_patch: int = 200
    seed: int | None = None
    mpp: float | None = None

    def _validate(self) -> None:
        for name in ("n_tumor", "n_normal", "n_normal_normal_slide"):
            check_int(getattr(self, name), f"PatchSampler.{name}", min=0)
        check_positive_int(self.patch_size, "PatchSampler.patch_size")
        check_positive_int(self.max_draws_per_patch, "PatchSampler.max_draws_per_patch")
        check_int(self.level, "PatchSampler.level", min=0)
        check_choice(self.label_rule, "PatchSampler.label_rule", ("center", "fraction"))
        check_choice(self.on_shortfall, "PatchSampler.on_shortfall", ("warn", "raise"))
        check_fraction(self.min_tumor_fraction, "PatchSampler.min_tumor_fraction")
        check_fraction(self.min_tissue, "PatchSampler.min_tissue")
        check_real(self.normal_margin_um, "PatchSampler.normal_margin_um", min=0)
        if self.mpp is not None:
            check_real(self.mpp, "PatchSampler.mpp", min=0, min_open=True)

    def params(self) -> dict[str, Any]:
        """The parameters as JSON-compatible values (recorded by :class:`PatchStore`)."""
        out: dict[str, Any] = jsonable(dataclasses.asdict(self))
        return out

    def sample(
        self,
        slide: SlideLike | tuple[int, int],
        tissue_mask: Raster,
        tumor_mask: Raster | None = None,
        *,
        seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    ) -> PatchCoords:
        """Draw the patches of one slide.

        Parameters
        ----------
        slide : SlideLike or tuple of int
            The slide, or its level-0 ``(width, height)`` (then ``level`` must be 0
            and ``mpp`` ``None``).
        tissue_mask : Raster
            Its tissue mask (boolean raster over the slide).
        tumor_mask : Raster, optional
            Its tumor annotation mask; ``None`` or an empty mask make it a normal
            slide (``n_normal_normal_slide`` normal patches).
        seed : int, SeedSequence or Generator, optional
            Overrides the sampler's ``seed``.

        Returns
        -------
        PatchCoords
            Tumor patches first (label 1), then normal ones (label 0), each in
            random order.

        Raises
        ------
        GeometryError
            If a mask belongs to a slide of other dimensions.
        LevelError
            If the slide lacks ``level``, or ``mpp`` is asked of a slide that records
            no resolution (see :func:`cervixwsi.geometry.resolve_resolution`).
        SamplingError
            On a shortfall with ``on_shortfall="raise"``, or if the patch is
            larger than the slide.
        """
        self._validate()
        if isinstance(slide, tuple):
            dims = (int(slide[0]), int(slide[1]))
            name = "slide"
            if self.mpp is not None or self.level != 0:
                asked = f"mpp={self.mpp}" if self.mpp is not None else f"level={self.level}"
                raise ParameterError(
                    f"PatchSampler({asked}) needs the slide itself, not its dimensions"
                )
            level, downsample = 0, 1.0
        else:
            dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
            name = slide.name
            resolution = resolve_resolution(
                slide, None if self.mpp is not None else self.level, self.mpp, owner="PatchSampler"
            )
            level, downsample = resolution.level, resolution.downsample
        tissue = check_mask(tissue_mask, dims, "tissue mask")
        tumor = check_mask(tumor_mask, dims, "tumor mask")
        assert tissue is not None
        extent = self.patch_size * downsample
        if extent > dims[0] or extent > dims[1]:
            raise SamplingError(
                f"a patch of {extent:g} level-0 pixels does not fit slide {name!r} of "
                f"{dims[0]}x{dims[1]} pixels"
            )
        ctx = _DrawContext(
            tissue=tissue,
            rng=np.random.default_rng(seed if seed is not None else self.seed),
            extent=extent,
            taken=set(),
            slide=name,
        )
        # (where candidates are drawn, how many, the mask of the label rule, the label)
        plan: list[tuple[TissueMask, int, TissueMask | None, int]]
        if tumor is not None and tumor.array.any():
            grown = _grow(tumor, self.normal_margin_um)
            plan = [(tumor, self.n_tumor, tumor, 1), (tissue, self.n_normal, grown, 0)]
        else:
            plan = [(tissue, self.n_normal_normal_slide, None, 0)]
        parts = []
        for region, n, rule, label in plan:  # a loop, not a comprehension: warning stacklevel
            parts.append((*self._draw(region, n, rule, label == 1, ctx), label))
        xs = np.concatenate([p[0] for p in parts])
        ys = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([np.full(len(p[0]), p[2], np.int8) for p in parts])
        return PatchCoords(
            xs,
            ys,
            level=level,
            size=self.patch_size,
            downsample=downsample,
            slide_dimensions=dims,
            tissue=tissue.fraction(xs, ys, extent, extent).astype(np.float32),
            labels=labels,
        )

    def _accept(
        self,
        x0: IntArray,
        y0: IntArray,
        extent: float,
        tissue: TissueMask,
        tumor: TissueMask | None,
        positive: bool,
    ) -> npt.NDArray[np.bool_]:
        width, height = tissue.slide_dimensions
        ok = (x0 >= 0) & (y0 >= 0) & (x0 + extent <= width) & (y0 + extent <= height)
        ok &= tissue.fraction(x0, y0, extent, extent) >= self.min_tissue - 1e-12
        if tumor is None:
            return ok
        if self.label_rule == "center":
            cx = np.clip(x0 + extent / 2, 0, width - 1)
            cy = np.clip(y0 + extent / 2, 0, height - 1)
            inside: npt.NDArray[np.bool_] = tumor.values_at(cx, cy).astype(bool)
            return ok & (inside if positive else ~inside)
        frac = tumor.fraction(x0, y0, extent, extent)
        if positive:
            return ok & (frac >= self.min_tumor_fraction - 1e-12)
        return ok & (frac <= 1e-9)

    def _draw(
        self,
        region: TissueMask,
        n: int,
        tumor: TissueMask | None,
        positive: bool,
        ctx: _DrawContext,
    ) -> tuple[IntArray, IntArray]:
        """``n`` distinct accepted top-left corners, candidates drawn uniformly in ``region``."""
        kind = "tumor" if positive else "normal"
        empty = np.zeros(0, np.int64)
        if n == 0:
            return empty, empty
        width = region.slide_dimensions[0]
        rr, cc = np.nonzero(region.array)
        row_start, row_end, col_start, col_end = region.pixel_edges()
        px0, py0 = col_start[cc], row_start[rr]
        pw, ph = col_end[cc] - px0, row_end[rr] - py0
        weights = np.cumsum(pw * ph)
        got_x: list[int] = []
        got_y: list[int] = []
        drawn = 0
        budget = self.max_draws_per_patch * n
        extent, rng, taken = ctx.extent, ctx.rng, ctx.taken
        half = math.floor(extent / 2)
        accepted_rate = 1.0
        while len(got_x) < n and drawn < budget and len(weights) and weights[-1] > 0:
            want = n - len(got_x)
            batch = int(min(max(2 * want / max(accepted_rate, 1e-3), 256), budget - drawn, 2**20))
            drawn += batch
            pick = np.searchsorted(weights, rng.random(batch) * weights[-1], side="right")
            pick = np.minimum(pick, len(weights) - 1)
            cx = np.floor(px0[pick] + rng.random(batch) * pw[pick]).astype(np.int64)
            cy = np.floor(py0[pick] + rng.random(batch) * ph[pick]).astype(np.int64)
            x0, y0 = cx - half, cy - half
            ok = self._accept(x0, y0, extent, ctx.tissue, tumor, positive)
            accepted_rate = max(float(ok.mean()), 1.0 / batch)
            x0, y0 = x0[ok], y0[ok]
            keys = y0 * (width + 1) + x0
            _, first = np.unique(keys, return_index=True)
            first.sort()
            for i in first:  # in draw order, so the first n are a uniform sample
                key = int(keys[i])
                if key not in taken:
                    taken.add(key)
                    got_x.append(int(x0[i]))
                    got_y.append(int(y0[i]))
                    if len(got_x) == n:
                        break
        xs, ys = np.array(got_x, np.int64), np.array(got_y, np.int64)
        got = len(xs)
        if got < n:
            message = (
                f"slide {ctx.slide!r}: found only {got} of {n} {kind} patch positions "
                f"(patch {extent:g} level-0 px, min_tissue={self.min_tissue}, "
                f"label_rule={self.label_rule!r}) in {drawn} candidates"
            )
            if self.on_shortfall == "raise":
                raise SamplingError(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        return xs, ys
