"""Artifacts out of the tissue mask: :class:`ArtifactMasker` and its :class:`ArtifactMask`.

Real cohorts bring marker pen, tissue folds, out-of-focus areas and dust.  The
masker finds each on the slide's own terms: every threshold is relative to the
slide's tissue (its colours in optical density, its typical darkness, its own
sharp areas), so a stain shift does not move them.

* **pen** (low level, ~8 µm/px): colours outside the tissue's colour cone in
  optical density (OD) — off the plane that the tissue's two stains span, or
  beyond its hematoxylin or eosin end (blue, green, red ink) — and pixels several
  times as dense as the tissue's typical OD (black ink; after the folds are found,
  any colour: ink that a stain shift brought inside the cone), in pieces of at
  least ``pen_min_area_um2``.  The typical OD is a median that leaves large dense
  pieces out first: ink can cover half of the tissue;
* **fold** (low level): tissue much darker than the slide's tissue *of the same
  colour* (doubled tissue has the same stain ratio at about twice the OD), in
  pieces of at least ``fold_min_area_um2`` whose hue is that of the tissue around
  them (a fold is that tissue doubled; a dense carcinoma nest is bluer than its
  stroma, the necrosis or keratin at its centre pinker than its rim);
* **blur** (mid level, ~1 µm/px, read tile by tile where there is tissue): a map
  of the ratio of fine to coarse detail (the Laplacian's energy over that of a
  Gaussian-smoothed copy, in OD) on cells of ``blur_tile_um``; a core below
  ``blur_ratio`` times the slide's own sharp tissue, grown by up to
  ``blur_margin_um`` through its soft rim (cells below ``blur_grow_ratio``);
* **dust** (mid level): small specks that add OD to *every* channel over what
  surrounds them (dust is grey: it adds the same OD to each channel, where a
  nucleus adds hematoxylin, which leaves the blue channel pale).  The speck's
  own surroundings are the reference (the per-channel median over
  ``dust_background_um``), not the slide's darkest tissue: dense, greyish nuclei
  are as dark as dust in every channel, but not darker than the nuclei around
  them by a grey amount.  Pieces of ``dust_min_area_um2`` to
  ``dust_max_area_um2``, on glass and tissue.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.slide import ArraySlide
>>> from cervixwsi.tissue import ArtifactMask, ArtifactMasker
>>> image = np.full((256, 256, 3), 240, np.uint8)
>>> image[40:220, 30:230] = (200, 120, 180)      # H&E-pink tissue
>>> image[120:150, 30:230] = (30, 60, 150)       # a blue pen stroke across it
>>> art = ArtifactMasker(causes=("pen",)).detect(ArraySlide(image, mpp=8.0))
>>> round(art.fractions()["pen"], 2), bool(art.cause("pen")[135, 128])
(0.11, True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from cervixwsi._validate import check_choice, check_fraction, check_real
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import Raster, resolve_level, slide_mpp
from cervixwsi.tissue._artifact_mask import CAUSES, ArtifactMask, _fit
from cervixwsi.tissue._dust import _dark_specks, _grey_excess, _low_index
from cervixwsi.tissue._odcone import (
    _dilate,
    _glass_rgb,
    _keep_large,
    _optical_density,
    _stain_cone,
    _unit,
)
from cervixwsi.tissue._slidelike import SlideLike, read_low_level

if TYPE_CHECKING:
    from cervixwsi.tissue._mask import TissueMask

__all__ = ["ArtifactMasker"]

logger = logging.getLogger(__name__)

#: Width of the tissue around a dense piece that :func:`_same_hue_as_surroundings` compares.
_FOLD_RING_UM = 100.0
#: Smoothing of the OD whose dense pieces :func:`_typical_od` leaves out.
_TYPICAL_SIGMA_UM = 24.0


def _same_hue_as_surroundings(
    dense: npt.NDArray[np.bool_],
    hue: npt.NDArray[Any],
    off_cone: npt.NDArray[Any],
    tissue: npt.NDArray[np.bool_],
    limit: float,
    ring_px: float,
) -> npt.NDArray[np.bool_]:
    """The dense pieces less those of tissue colour whose hue differs from their surroundings.

    A fold is the tissue around it, doubled: its hue is theirs.  Dense tissue that is
    not a fold differs in hue from its surroundings by more than ``limit`` (radians):
    the necrosis or keratin at the centre of a carcinoma nest is pinker than the
    nest's viable rim, a dense nest bluer than its stroma.  Such a piece is dropped
    only when it is of the tissue's colours (its median ``off_cone``, the angle
    outside the stain cone, is <= 0): ink that the pen rule missed, off the cone,
    stays.  ``hue`` is the in-plane angle of the stain cone; each piece's median is
    compared with the median over the tissue within ``ring_px`` of it (a piece with
    almost no tissue around it is kept).
    """
    if not dense.any():
        return dense
    n, labels = cv2.connectedComponents(dense.astype(np.uint8), connectivity=8)
    # every other pixel's distance to the nearest dense pixel, and which pixel that is
    distance, nearest = cv2.distanceTransformWithLabels(
        (labels == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    piece_of = np.zeros(int(nearest.max()) + 1, np.int32)
    piece_of[nearest[labels > 0]] = labels[labels > 0]
    ring = ~dense & tissue & (distance <= ring_px)
    ring_labels = np.zeros_like(labels)
    ring_labels[ring] = piece_of[nearest[ring]]
    pieces = np.arange(1, n)
    # per piece at once: its median hue and off-cone angle, and its ring's median hue
    inside = np.asarray(ndimage.median(hue, labels, pieces))
    stained = np.asarray(ndimage.median(off_cone, labels, pieces)) <= 0
    ringed = np.bincount(ring_labels.ravel(), minlength=n)[1:] >= 10
    outside = np.full(n - 1, np.nan)
    if ringed.any():
        outside[ringed] = ndimage.median(hue, ring_labels, pieces[ringed])
    differs = ringed & (np.abs(inside - np.where(ringed, outside, inside)) > limit)
    keep = np.concatenate([[False], ~(stained & differs)])
    out: npt.NDArray[np.bool_] = keep[labels]
    return out


def _typical_od(
    norm: npt.NDArray[np.float32],
    usual: npt.NDArray[np.bool_],
    factor: float,
    min_px: float,
    sigma_px: float,
) -> float:
    """The OD of the slide's ordinary tissue: the median of ``usual`` less dense pieces.

    Marker ink can cover half of the tissue; then the plain median is the ink's, and
    ink only 3 times as dense as the tissue goes unseen.  The pieces of at least
    ``min_px`` whose smoothed OD (``sigma_px``) is over ``factor`` times the median of the
    lighter of two Otsu classes (on the log OD) are left out first: ink is there,
    and on clean tissue only its densest part, which moves the median a little.
    """
    from skimage.filters import threshold_otsu

    if not usual.any():
        return 0.15
    smooth = cv2.GaussianBlur(norm, (0, 0), max(0.5, sigma_px))
    log = np.log(np.maximum(smooth[usual], 1e-3))
    if np.ptp(log) > 0:
        lighter = float(np.exp(np.median(log[log <= threshold_otsu(log)])))
        dense = _keep_large(usual & (smooth > factor * lighter), min_px)
        if (usual & ~dense).any():
            usual = usual & ~dense
    return float(np.median(norm[usual]))


# Where causes overlap, the one drawn last wins: pen over dust over fold over blur.
_PRECEDENCE = ("blur", "fold", "dust", "pen")
_BLOCK_PX = 1024  # blur/dust pass: working pixels per block side read at once


Cause = Literal["pen", "fold", "blur", "dust"]


@dataclass(frozen=True)
class ArtifactMasker:
    """Find marker pen, tissue folds, out-of-focus areas and dust on a slide.

    Composes with :class:`TissueMasker` (``TissueMasker(artifacts=ArtifactMasker())``
    removes what it finds from the tissue mask) or works alone
    (:meth:`detect`).  Every threshold is relative to the slide's own tissue (see
    the module's description), so a stain shift does not break it.

    Parameters
    ----------
    causes : sequence of {"pen", "fold", "blur", "dust"}
        What to look for; default all four.
    mpp : float
        Resolution (µm/px) of the low level where pen and folds are found,
        default 8.0 (read as :class:`TissueMasker` reads it: the coarsest level at
        least this fine, averaged down to it).
    level : int, optional
        Read this level for pen and folds instead.
    blur_mpp : float
        Resolution (µm/px) where blur and dust are measured, default 1.0: the
        level at least this fine is read tile by tile (only where there is
        tissue) and averaged down to it.  At 2-4 µm/px only strong blur shows.
    pen_angle_deg : float
        A colour at least this far (degrees in OD space) outside the tissue's
        colour cone (out of its stain plane, or beyond its hematoxylin or eosin
        end) is ink; default 8.
    pen_dark_factor : float
        Pixels whose OD is this many times the tissue's median, and whose
        colour is off the cone by a third of ``pen_angle_deg``, are ink (black
        or very dense ink); default 3.0.  So are such pixels of the tissue's
        own colours outside the folds (a stain shift can bring the tissue's
        colours to the ink's: on stain-shifted synthetic slides the colour
        rules alone left 23 % of the ink over tissue in the mask, 11 % with
        this rule, 3.7 % with the typical OD of ``pen_split``).
    pen_split : float
        The tissue's typical OD (the reference of ``pen_dark_factor``) is the
        median of its ordinary colours less the large pieces whose smoothed OD
        is this many times the median of the lighter of two Otsu classes:
        marker ink over half of the tissue would otherwise be "typical";
        default 2.5 (the typical OD of the synthetic test slides is then
        within 0.93-1.09 times that of their tissue without the drawn ink,
        against up to 2.6 times with the plain median; clean slides: 0.99-1.00).
        On a slide whose dense carcinoma sheets lie in pale stroma the sheets
        are left out too, which lowers the reference of the dense-ink rule;
        not measured on real tumour-rich slides (the real H&E of the test
        data loses 0.41 and 0.52 % of its tissue, as before).
    pen_min_area_um2 : float
        Ink pieces smaller than this are ignored; default 10 000 µm².
    fold_factor : float
        Tissue whose OD is this many times the slide's typical OD for tissue of
        its colour is folded; default 1.5 (doubled tissue has about 1.9, but
        a fold's edge and a fold over pale tissue less: at 1.75, 29-39 % of the
        folds of the cellular synthetic slides stayed in the mask).
    fold_min_area_um2 : float
        Fold pieces smaller than this are ignored (keratin pearls, dense
        specks); default 20 000 µm².
    fold_hue_deg : float
        A dense piece of the tissue's colours whose median hue differs from
        that of the tissue within 100 µm around it by more than this is not a
        fold; default 5° (of the folds measured on synthetic test slides all
        but one differ by under 2.5°, that one by 7° and it stays in the mask;
        the dense carcinoma nests and central necrosis the rule took for folds
        differ by 5-9°: without the test the fold rule removed 18 % of the
        tumor of textbook carcinoma).
    blur_ratio : float
        Sharpness is measured on cells of ``blur_tile_um`` (the energy of the
        Laplacian of OD over that of a smoothed copy, averaged over a Gaussian
        of one cell); cells under this fraction of the slide's sharp tissue (the
        75th percentile of its cells that are all tissue) are the core of an
        out-of-focus area; in ``(0, 1)``, default 0.45.
    blur_grow_ratio : float
        The rim of an out-of-focus area fades into focus: the core grows, up to
        ``blur_margin_um``, through cells whose sharpness is under this fraction
        of the sharp tissue's; in ``(0, 1]``, default 0.9 (1 grows through
        everything but the sharpest quarter).
    blur_margin_um : float
        How far the core grows into its rim, default 64 µm (0: the core alone).
    blur_tile_um : float
        Side of the cells whose sharpness is measured, default 16 µm.
    blur_min_area_um2 : float
        Out-of-focus cores (8-connected cells) smaller than this are ignored
        (tissue with little fine detail, e.g. loose stroma); default 16 000 µm².
    dust_min_od : float
        Dust is grey: the OD it adds over its surroundings (the per-channel
        median over ``dust_background_um``), in the channel where it adds the
        *least* (its "grey excess"), reaches this over ``dust_min_area_um2``;
        default 0.9 (the synthetic specks add 1.1-1.7).
    dust_factor : float
        ... and at least this many times the 99.9th percentile of the grey
        excess of the slide's ordinary tissue (pen and folds left out): on a
        slide whose densest nuclei are nearly black (real H&E), only what is
        darker still is dust; default 1.1 (``bench_artifacts.py --quick``:
        5.3 % of the dust left at difficulty 0.5, 0.5 % of the real H&E lost;
        1.05 leaves 3.6 % and loses 0.8-1.1 % of the real H&E, but also 3.9 %
        of the tumor of clean difficulty-0 slides, whose dense carcinoma nuclei
        are as grey as dust, instead of 2.6 %; 1.0 loses 1.6 % of the real H&E;
        1.2 leaves 8 % of the dust).
    dust_min_area_um2 : float
        A speck has at least this area over both thresholds (a grain of dark
        chromatin is a pixel or two); default 2 µm².
    dust_max_area_um2 : float
        Larger dark pieces are not dust; default 2 000 µm².
    dust_background_um : float
        Side of the window whose per-channel median is a speck's surroundings,
        default 36 µm (read at four times ``blur_mpp``); specks much wider than
        half of it are their own background and go unseen.
    margin_um : float
        Width of the band removed around every pen and fold piece (their paler
        rims), default 16 µm.  Dust removes the low-level pixels its specks touch.
    assumed_mpp : float
        Level-0 µm/px for slides that do not record it; default 0.25.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> image = np.full((200, 200, 3), 240, np.uint8)
    >>> image[20:180, 20:180] = (200, 120, 180)
    >>> art = ArtifactMasker().detect(ArraySlide(image, mpp=8.0))
    >>> int(art.any.sum())  # clean tissue: nothing found
    0
    """

    causes: tuple[Cause, ...] = ("pen", "fold", "blur", "dust")
    mpp: float = 8.0
    level: int | None = None
    blur_mpp: float = 1.0
    pen_angle_deg: float = 8.0
    pen_dark_factor: float = 3.0
    pen_min_area_um2: float = 10_000.0
    pen_split: float = 2.5
    fold_factor: float = 1.5
    fold_min_area_um2: float = 20_000.0
    fold_hue_deg: float = 5.0
    blur_ratio: float = 0.45
    blur_grow_ratio: float = 0.9
    blur_margin_um: float = 64.0
    blur_tile_um: float = 16.0
    blur_min_area_um2: float = 16_000.0
    dust_min_od: float = 0.9
    dust_factor: float = 1.1
    dust_min_area_um2: float = 2.0
    dust_max_area_um2: float = 2_000.0
    dust_background_um: float = 36.0
    margin_um: float = 16.0
    assumed_mpp: float = 0.25

    def _validate(self) -> None:
        causes: Any = self.causes
        if isinstance(causes, str) or not isinstance(causes, Iterable):
            raise ParameterError(
                f"ArtifactMasker.causes must be a sequence of names from {CAUSES}, got {causes!r}"
            )
        for cause in causes:
            check_choice(cause, "ArtifactMasker.causes", CAUSES)
        for name in (
            "mpp",
            "blur_mpp",
            "assumed_mpp",
            "blur_tile_um",
            "fold_factor",
            "fold_hue_deg",
        ):
            check_real(getattr(self, name), f"ArtifactMasker.{name}", min=0, min_open=True)
        if self.fold_factor <= 1:
            raise ParameterError(
                f"ArtifactMasker.fold_factor must be greater than 1, got {self.fold_factor!r}"
            )
        check_real(self.pen_dark_factor, "ArtifactMasker.pen_dark_factor", min=1)
        check_real(self.pen_split, "ArtifactMasker.pen_split", min=1, min_open=True)
        check_real(self.dust_factor, "ArtifactMasker.dust_factor", min=0, min_open=True)
        check_real(
            self.dust_background_um, "ArtifactMasker.dust_background_um", min=0, min_open=True
        )
        check_real(self.pen_angle_deg, "ArtifactMasker.pen_angle_deg", min=0, max=90, min_open=True)
        check_fraction(self.blur_ratio, "ArtifactMasker.blur_ratio")
        check_real(
            self.blur_grow_ratio, "ArtifactMasker.blur_grow_ratio", min=0, max=1, min_open=True
        )
        for name in (
            "pen_min_area_um2",
            "fold_min_area_um2",
            "blur_min_area_um2",
            "blur_margin_um",
            "dust_min_od",
            "dust_min_area_um2",
            "dust_max_area_um2",
            "margin_um",
        ):
            check_real(getattr(self, name), f"ArtifactMasker.{name}", min=0)

    def choose_level(self, slide: SlideLike) -> int:
        """The low level read for pen and folds (the rule of :meth:`TissueMasker.choose_level`)."""
        self._validate()
        if self.level is not None:
            return resolve_level(slide, level=self.level, owner="ArtifactMasker")
        return resolve_level(
            slide, mpp=self.mpp, assumed_mpp=self.assumed_mpp, owner="ArtifactMasker"
        )

    def _read_low(self, slide: SlideLike) -> tuple[npt.NDArray[np.uint8], float, float]:
        """The low level's RGB, its level-0 downsample and its µm per pixel."""
        level = self.choose_level(slide)
        mpp0 = slide_mpp(slide, self.assumed_mpp)
        assert mpp0 is not None  # assumed_mpp (validated) stands in for a missing one
        target = self.mpp if self.level is None else None
        rgb, downsample = read_low_level(slide, level, mpp0, target, "artifact detection")
        return rgb, downsample, mpp0 * downsample

    def detect(self, slide: SlideLike, tissue: TissueMask | None = None) -> ArtifactMask:
        """Find the artifacts of ``slide``.

        Parameters
        ----------
        slide : SlideLike
            The slide.
        tissue : TissueMask, optional
            The slide's tissue (before artifacts are removed): its colours are
            the reference, and the result is on its grid.  Default: the low
            level's pixels darker than glass are the reference, and the result is
            on the low level's grid.

        Returns
        -------
        ArtifactMask

        Raises
        ------
        ParameterError
            If a parameter is invalid (named in the message).
        RegionError
            If a level to read is missing or too large to read whole.
        """
        self._validate()
        rgb, downsample, pixel_um = self._read_low(slide)
        rows, cols = rgb.shape[:2]
        mpp = slide_mpp(slide)
        grid = Raster(np.zeros(rgb.shape[:2], np.uint8), downsample, slide.dimensions, mpp=mpp)
        labels = np.zeros(rgb.shape[:2], np.uint8)
        glass = _glass_rgb(rgb)
        od = _optical_density(rgb, glass)
        u, norm = _unit(od)
        if tissue is not None:
            if tissue.slide_dimensions != tuple(slide.dimensions):
                raise ParameterError(
                    f"ArtifactMasker.detect: the tissue mask is over a slide of "
                    f"{tissue.slide_dimensions}, slide {slide.name!r} is {slide.dimensions}"
                )
            ref = tissue.resample(downsample, method="area").array
            ref = _fit(np.asarray(ref >= 0.5), (rows, cols))
        else:
            ref = norm > 0.15
        cone = _stain_cone(od, ref, math.radians(self.pen_angle_deg) / 2)
        found: dict[str, npt.NDArray[np.bool_]] = {}
        if cone is not None:
            distance = cone.distance(u)
            usual = ref & (norm > 0.15) & (distance <= math.radians(self.pen_angle_deg) / 3)
            median_od = _typical_od(
                norm,
                usual,
                self.pen_split,
                self.pen_min_area_um2 / pixel_um**2,
                _TYPICAL_SIGMA_UM / pixel_um,
            )
            if "pen" in self.causes:
                found["pen"] = self._pen(distance, norm, median_od, pixel_um)
            if "fold" in self.causes:
                pen = found.get("pen", np.zeros_like(ref))
                angle, _ = cone.angles(u)
                typical = cone.typical_od(angle, norm, ref & ~pen & (norm > 0.15))
                found["fold"] = self._fold(typical, norm, ref & ~pen, pixel_um, angle, distance)
            if "pen" in self.causes:
                found["pen"] |= self._dense_ink(norm, median_od, found.get("fold"), pixel_um)
            if "blur" in self.causes or "dust" in self.causes:
                exclude = found.get("pen", np.zeros_like(ref)) | found.get(
                    "fold", np.zeros_like(ref)
                )
                blur, dust = self._fine_pass(slide, glass, ref, exclude, downsample)
                if "blur" in self.causes:
                    found["blur"] = blur & ref
                if "dust" in self.causes:  # specks on pen or a fold go with them
                    found["dust"] = dust & ~exclude
        for name in _PRECEDENCE:
            if name in found:
                labels[found[name]] = CAUSES.index(name) + 1
        art = ArtifactMask(labels, downsample, slide.dimensions, mpp=mpp)
        logger.debug(
            "artifacts of %s: %s",
            slide.name,
            {k: round(100 * v, 2) for k, v in art.fractions().items()},
        )
        if tissue is not None:
            return art.on_grid(tissue)
        return art.on_grid(grid)

    # --- the causes ------------------------------------------------------------------------

    def _pen(
        self,
        distance: npt.NDArray[Any],
        norm: npt.NDArray[np.float32],
        median_od: float,
        pixel_um: float,
    ) -> npt.NDArray[np.bool_]:
        limit = math.radians(self.pen_angle_deg)
        coloured = (distance > limit) & (norm > 0.3)
        dark = (norm > self.pen_dark_factor * median_od) & (distance > limit / 3)
        return self._ink_pieces(coloured | dark, pixel_um)

    def _ink_pieces(self, ink: npt.NDArray[np.bool_], pixel_um: float) -> npt.NDArray[np.bool_]:
        """Ink candidates in pieces of ``pen_min_area_um2``, with a band of ``margin_um``."""
        ink = _keep_large(ink, self.pen_min_area_um2 / pixel_um**2)
        return _dilate(ink, 2 * self.margin_um / pixel_um)

    def _dense_ink(
        self,
        norm: npt.NDArray[np.float32],
        median_od: float,
        fold: npt.NDArray[np.bool_] | None,
        pixel_um: float,
    ) -> npt.NDArray[np.bool_]:
        """Ink of the tissue's own colours: as dense as ink, and not a fold.

        A stain shift can bring the tissue's colours to the ink's (blue or black ink
        near a shifted hematoxylin, red ink near a shifted eosin), where the colour
        rules of :meth:`_pen` do not see it; it is still several times as dense as
        the tissue.  Folds, found before, are left out: doubled dense tissue can be
        as dark.
        """
        dense = norm > self.pen_dark_factor * median_od
        if fold is not None:
            dense &= ~fold
        return self._ink_pieces(dense, pixel_um)

    def _fold(
        self,
        typical: npt.NDArray[Any],
        norm: npt.NDArray[np.float32],
        tissue: npt.NDArray[np.bool_],
        pixel_um: float,
        hue: npt.NDArray[Any],
        off_cone: npt.NDArray[Any],
    ) -> npt.NDArray[np.bool_]:
        smooth = cv2.GaussianBlur(norm, (0, 0), max(0.5, 8.0 / pixel_um))
        dense = tissue & (smooth > self.fold_factor * typical)
        dense = _keep_large(dense, self.fold_min_area_um2 / pixel_um**2)
        dense = _same_hue_as_surroundings(
            dense, hue, off_cone, tissue, math.radians(self.fold_hue_deg), _FOLD_RING_UM / pixel_um
        )
        return _dilate(dense, 2 * self.margin_um / pixel_um) & tissue

    def _fine_pass(
        self,
        slide: SlideLike,
        glass: npt.NDArray[np.float32],
        tissue: npt.NDArray[np.bool_],
        exclude: npt.NDArray[np.bool_],
        low_downsample: float,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Blur (a sharpness map) and dust (small grey specks) at ``blur_mpp``, on the low grid.

        ``exclude`` (low grid: pen and folds) is left out of the tissue statistics
        that set the dust threshold.
        """
        mpp0 = slide_mpp(slide, self.assumed_mpp)
        assert mpp0 is not None
        level = resolve_level(
            slide, mpp=self.blur_mpp, assumed_mpp=self.assumed_mpp, owner="ArtifactMasker"
        )
        level_ds = float(slide.level_downsamples[level])
        ds = max(level_ds, self.blur_mpp / mpp0)  # level-0 px per working pixel
        pixel_um = mpp0 * ds
        cell_px = max(4, round(self.blur_tile_um / pixel_um))
        cell0 = cell_px * ds  # level-0 px per cell
        width0, height0 = slide.dimensions
        rows_c, cols_c = math.ceil(height0 / cell0), math.ceil(width0 / cell0)
        low = Raster(tissue, low_downsample, slide.dimensions)
        cell_tissue = np.zeros((rows_c, cols_c))
        resampled = np.asarray(low.resample(cell0, method="area").array)[:rows_c, :cols_c]
        cell_tissue[: resampled.shape[0], : resampled.shape[1]] = resampled
        fine = np.zeros((rows_c, cols_c))  # mean squared Laplacian of OD per cell
        coarse = np.zeros((rows_c, cols_c))  # ... of a smoothed copy
        margin = 8  # working px read around each block (filters and specks at its edge)
        dust_px = (self.dust_min_area_um2 / pixel_um**2, self.dust_max_area_um2 / pixel_um**2)
        bins = np.linspace(0.0, 6.0, 601)
        histogram = np.zeros(len(bins) - 1, np.int64)  # grey excess of ordinary tissue
        specks: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]] = []
        block = max(1, _BLOCK_PX // cell_px)  # cells per block side
        for bj in range(0, rows_c, block):
            for bi in range(0, cols_c, block):
                sub = cell_tissue[bj : bj + block, bi : bi + block]
                if not (sub > 0).any():
                    continue
                x0 = bi * cell0 - margin * ds
                y0 = bj * cell0 - margin * ds
                n_px = (sub.shape[1] * cell_px + 2 * margin, sub.shape[0] * cell_px + 2 * margin)
                rgb = _read_block(slide, level, level_ds, ds, x0, y0, n_px)
                od = _optical_density(rgb, glass)
                if "blur" in self.causes:
                    f, c = _detail(od.sum(axis=2), margin, cell_px, sub.shape)
                    fine[bj : bj + sub.shape[0], bi : bi + sub.shape[1]] = f
                    coarse[bj : bj + sub.shape[0], bi : bi + sub.shape[1]] = c
                if "dust" in self.causes:
                    grey = _grey_excess(rgb, od, glass, self.dust_background_um / pixel_um)
                    inner = (slice(margin, -margin), slice(margin, -margin))
                    low_r, low_c = _low_index(
                        n_px, margin, ds, x0, y0, low_downsample, tissue.shape
                    )
                    usual = (tissue & ~exclude)[np.ix_(low_r, low_c)]
                    usual &= od.sum(axis=2)[inner] > 0.45
                    histogram += np.histogram(grey[inner][usual], bins)[0]
                    specks.append(
                        _dark_specks(
                            grey,
                            self.dust_min_od,
                            dust_px,
                            margin,
                            ds,
                            (x0, y0),
                            low_downsample,
                            tissue.shape,
                        )
                    )
        blur_low = np.zeros(tissue.shape, bool)
        if "blur" in self.causes:
            blur_cells = self._blur_cells(fine, coarse, cell_tissue, cell0 * mpp0)
            blur_raster = Raster(blur_cells, cell0, slide.dimensions)
            resampled = blur_raster.resample(low_downsample, method="nearest").array
            blur_low = _fit(np.asarray(resampled, bool), tissue.shape)
        dust_low = np.zeros(tissue.shape, bool)
        if specks and histogram.sum() > 0:
            cdf = np.cumsum(histogram) / histogram.sum()
            q999 = float(bins[min(int(np.searchsorted(cdf, 0.999)) + 1, len(bins) - 1)])
            floor = max(self.dust_min_od, self.dust_factor * q999)
            for levels, cells in specks:
                dust_low.flat[cells[:, 1][levels[cells[:, 0]] >= floor]] = True
        return blur_low, dust_low

    def _blur_cells(
        self,
        fine: npt.NDArray[np.float64],
        coarse: npt.NDArray[np.float64],
        cell_tissue: npt.NDArray[np.float64],
        cell_um: float,
    ) -> npt.NDArray[np.bool_]:
        """Out-of-focus cells: a core of low sharpness, grown through its soft rim."""
        weight = cell_tissue.astype(np.float32)
        f = cv2.GaussianBlur(fine.astype(np.float32) * weight, (0, 0), 1.0)
        c = cv2.GaussianBlur(coarse.astype(np.float32) * weight, (0, 0), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sharp = np.where(c > 1e-12, np.sqrt(f / np.maximum(c, 1e-12)), np.nan)
        textured = coarse > 1e-8  # flat cells (no detail at all) say nothing of focus
        full = np.isfinite(sharp) & textured & (cell_tissue >= 0.9)
        if full.sum() < 8 or full.sum() < 0.5 * (cell_tissue >= 0.9).sum():
            return np.zeros(fine.shape, bool)
        reference = float(np.percentile(sharp[full], 75))
        sharp = np.where(np.isfinite(sharp), sharp, np.inf)
        core = textured & (cell_tissue >= 0.5) & (sharp < self.blur_ratio * reference)
        core = _keep_large(core, self.blur_min_area_um2 / cell_um**2)
        # The rim of an out-of-focus area fades into focus: grow the core up to
        # blur_margin_um through cells that are not clearly sharp.
        allowed = (cell_tissue > 0) & (sharp < self.blur_grow_ratio * reference)
        grown = core
        ring = np.ones((3, 3), np.uint8)
        for _ in range(round(self.blur_margin_um / cell_um)):
            more = cv2.dilate(grown.astype(np.uint8), ring).astype(bool) & allowed
            if not (more & ~grown).any():
                break
            grown = grown | more
        return grown


def _read_block(
    slide: SlideLike,
    level: int,
    level_ds: float,
    ds: float,
    x0: float,
    y0: float,
    size: tuple[int, int],
) -> npt.NDArray[np.uint8]:
    """``size`` working pixels (``ds`` level-0 px each) from level-0 ``(x0, y0)``, white outside."""
    width0, height0 = slide.dimensions
    w, h = size
    out = np.full((h, w, 3), 255, np.uint8)
    # the part inside the slide, in working pixels
    c0, r0 = max(0, math.ceil(-x0 / ds)), max(0, math.ceil(-y0 / ds))
    c1 = min(w, math.floor((width0 - x0) / ds))
    r1 = min(h, math.floor((height0 - y0) / ds))
    if c1 <= c0 or r1 <= r0:
        return out
    lx, ly = round(x0 + c0 * ds), round(y0 + r0 * ds)
    lw = max(1, min(round((c1 - c0) * ds / level_ds), math.ceil((width0 - lx) / level_ds)))
    lh = max(1, min(round((r1 - r0) * ds / level_ds), math.ceil((height0 - ly) / level_ds)))
    rgb = np.asarray(slide.read_region((lx, ly), level, (lw, lh)))[..., :3]
    if rgb.shape[:2] != (r1 - r0, c1 - c0):
        rgb = cv2.resize(
            np.ascontiguousarray(rgb), (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA
        )
    out[r0:r1, c0:c1] = rgb
    return out


def _detail(
    od_total: npt.NDArray[np.float32], margin: int, cell_px: int, shape: tuple[int, int]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per cell: mean squared Laplacian of OD (fine detail) and of a smoothed copy (coarse)."""
    fine = cv2.Laplacian(od_total, cv2.CV_32F, ksize=1)
    coarse = cv2.Laplacian(cv2.GaussianBlur(od_total, (0, 0), 2.0), cv2.CV_32F, ksize=1) * 4.0
    rows, cols = shape
    h, w = rows * cell_px, cols * cell_px
    inner = (slice(margin, margin + h), slice(margin, margin + w))
    f = (fine[inner] ** 2).reshape(rows, cell_px, cols, cell_px).mean(axis=(1, 3))
    c = (coarse[inner] ** 2).reshape(rows, cell_px, cols, cell_px).mean(axis=(1, 3))
    return f.astype(np.float64), c.astype(np.float64)
