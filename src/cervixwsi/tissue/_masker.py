"""Tissue detection (HSV + Otsu + morphology, in physical units): :class:`TissueMasker`."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_real
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import resolve_level, slide_mpp
from cervixwsi.tissue._artifacts import ArtifactMasker
from cervixwsi.tissue._filters import _ellipse, _fill_holes, _remove_small, pen_mask
from cervixwsi.tissue._mask import TissueMask
from cervixwsi.tissue._slidelike import SlideLike, read_low_level

__all__ = ["TissueMasker"]

logger = logging.getLogger(__name__)
# Warn when the fixed ink colours leave less than this fraction of the tissue.
_PEN_WARN_KEPT = 0.5

Channel = Literal["saturation", "value"]
_CHANNELS: dict[str, int] = {"saturation": 1, "value": 2}


@dataclass(frozen=True)
class TissueMasker:
    """The study's tissue detection (HSV + Otsu + morphology), in physical units.

    Parameters
    ----------
    mpp : float
        Working resolution in µm/px, default 8.0 (about a 32× downsample of a
        40× scan).  The level read is the coarsest whose resolution is at
        least this fine (within 1 %); when it is finer, it is averaged down
        (``cv2.INTER_AREA``) to ``mpp``, so the mask is the same whichever
        pyramid the slide has.
    level : int, optional
        Read this level and work at its own resolution instead.
    channels : sequence of {"saturation", "value"}
        HSV channels thresholded: tissue is *more saturated* and *darker* than
        glass.  Default ``("saturation",)`` (the study's value).
    combine : {"and", "or"}
        How several channels' masks combine.
    threshold : float or sequence of float, optional
        Fixed threshold(s) (0..255, one per channel or one for all) instead
        of Otsu's: tissue has a saturation above it, or a value below it.
    otsu_bounds : tuple of float
        Otsu's *saturation* threshold is clipped to this range (0..255),
        default ``(20, 30)``.  The lower bound makes near-white glass never
        tissue (on an empty or almost-white slide Otsu would split the noise
        of the glass); the upper bound keeps Otsu from splitting the tissue
        itself when its saturation has two modes (pale stroma, dark tumor),
        when there is no glass to separate it from (a crop inside tissue),
        or when pen ink is the most saturated class.  At 8 µm/px glass has
        a saturation under 15 and stained tissue over 30.
    value_otsu_bounds : tuple of float
        Otsu's *value* threshold (a pixel is dark enough to be tissue when its
        value is below it) is clipped to this range, default ``(200, 230)``.
        The upper bound keeps Otsu from splitting the noise of the glass on an
        empty or almost-white slide (glass has a value of 230-250); the lower
        bound keeps it from splitting the tissue itself (nuclei from stroma in
        a crop without glass, or dark ink from tissue).  Measured on real
        crops: pale tissue reaches a value of about 228 (a thumbnail's pale
        stroma), empty glass starts at about 233.
    exclude_glass : bool
        Pixels that are both nearly grey (saturation at most
        ``glass_saturation``) and bright (value at least ``glass_value``) are
        glass: never tissue, whatever the channels, thresholds and bounds.
        Default True.  With the default saturation channel it changes nothing
        (its threshold is at least 20); it is what keeps the value channel
        from taking dim or tinted glass (value 200-230) for pale tissue, and
        a low fixed ``threshold`` from taking glass for tissue.
    glass_saturation, glass_value : float
        The glass rule's bounds (0..255), default 15 and 200: real glass has a
        saturation under 10 (under 15 with a scanner's colour cast) and a
        value over 230; tissue that grey and that bright is the inside of
        fat cells and holes, which the closing and hole filling restore.
        Lowering ``otsu_bounds`` below ``glass_saturation`` has no effect on
        bright pixels unless ``exclude_glass=False``.
    exclude_pen : bool
        Remove red, green, blue and black marker ink (see :func:`pen_mask`)
        and a ``pen_margin_um`` band around it.  Default True (not part of
        the study, which had no pen-marked slides; it does not change the
        mask of a slide without ink).
    pen_margin_um : float
        Ink pieces narrower than this are ignored (stain-coloured specks in
        tissue), and a band this wide around ink is removed with it (the
        paler rim of a stroke).  Default 25 µm.
    opening_um, closing_um : float
        Diameters of the elliptical structuring elements of the opening
        (removes specks) and the closing (bridges gaps in loose tissue),
        default 16 µm and 64 µm; 0 skips the step.
    min_tissue_area_um2 : float
        Tissue pieces smaller than this are dropped; default 2 500 µm²
        (a 50 µm square).
    max_hole_area_um2 : float
        Holes (glass enclosed by tissue) up to this area are filled; default
        2 500 µm².
    assumed_mpp : float
        Level-0 µm/px assumed for slides that do not record their resolution
        (a warning says so).  Default 0.25 (a 40× scan).
    artifacts : ArtifactMasker, optional
        Also find marker pen, folds, out-of-focus areas and dust (see
        :class:`ArtifactMasker`) and remove them from the mask; the mask's
        :attr:`TissueMask.artifacts` says what was removed and why.  Its pen
        detection, relative to the slide's own stain, then replaces the fixed
        ink colours of ``exclude_pen`` (which take stain-shifted, orange-brown
        H&E for red ink).  Default None: no artifact detection (the mask is the
        same as without this parameter).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.slide import ArraySlide
    >>> image = np.full((300, 300, 3), 240, np.uint8)
    >>> image[50:250, 60:200] = (190, 110, 170)
    >>> mask = TissueMasker(level=0).mask(ArraySlide(image, mpp=4.0))
    >>> int(mask.array.sum()), mask.downsample
    (27988, 1.0)
    """

    mpp: float = 8.0
    level: int | None = None
    channels: tuple[Channel, ...] = ("saturation",)
    combine: Literal["and", "or"] = "and"
    threshold: float | tuple[float, ...] | None = None
    otsu_bounds: tuple[float, float] = (20.0, 30.0)
    value_otsu_bounds: tuple[float, float] = (200.0, 230.0)
    exclude_glass: bool = True
    glass_saturation: float = 15.0
    glass_value: float = 200.0
    exclude_pen: bool = True
    pen_margin_um: float = 25.0
    opening_um: float = 16.0
    closing_um: float = 64.0
    min_tissue_area_um2: float = 2_500.0
    max_hole_area_um2: float = 2_500.0
    assumed_mpp: float = 0.25
    artifacts: ArtifactMasker | None = None

    def _validate(self) -> None:
        for name in ("mpp", "assumed_mpp"):
            check_real(getattr(self, name), f"TissueMasker.{name}", min=0, min_open=True)
        for name in (
            "pen_margin_um",
            "opening_um",
            "closing_um",
            "min_tissue_area_um2",
            "max_hole_area_um2",
        ):
            check_real(getattr(self, name), f"TissueMasker.{name}", min=0)
        for name in ("otsu_bounds", "value_otsu_bounds"):
            bounds = getattr(self, name)
            try:
                lo, hi = bounds
            except (TypeError, ValueError):
                raise ParameterError(
                    f"TissueMasker.{name} must be a (low, high) pair, got {bounds!r}"
                ) from None
            lo = check_real(lo, f"TissueMasker.{name} low", min=0, max=255)
            hi = check_real(hi, f"TissueMasker.{name} high", min=0, max=255)
            if lo > hi:
                raise ParameterError(
                    f"TissueMasker.{name} must be (low, high) with low <= high, got {bounds!r}"
                )
        for name in ("glass_saturation", "glass_value"):
            check_real(getattr(self, name), f"TissueMasker.{name}", min=0, max=255)
        channels = tuple(self.channels)
        if not channels:
            raise ParameterError(
                f"TissueMasker.channels must be a non-empty sequence of {sorted(_CHANNELS)}, "
                f"got {self.channels!r}"
            )
        for channel in channels:
            check_choice(channel, "TissueMasker.channels", tuple(_CHANNELS))
        check_choice(self.combine, "TissueMasker.combine", ("and", "or"))
        if self.artifacts is not None and not isinstance(self.artifacts, ArtifactMasker):
            raise ParameterError(
                "TissueMasker.artifacts must be an ArtifactMasker or None, got "
                f"{type(self.artifacts).__name__}"
            )
        if self.threshold is not None:
            t = self.threshold
            values = tuple(t) if isinstance(t, Sequence) else (t,) * len(channels)
            if len(values) != len(channels):
                raise ParameterError(
                    "TissueMasker.threshold must be one number in [0, 255] or one per channel "
                    f"({len(channels)}), got {self.threshold!r}"
                )
            for value in values:
                check_real(value, "TissueMasker.threshold", min=0, max=255)

    def _thresholds(self) -> tuple[float, ...]:
        t = self.threshold
        if t is None:
            return ()
        if isinstance(t, Sequence):
            return tuple(float(v) for v in t)
        return (float(t),) * len(self.channels)

    def choose_level(self, slide: SlideLike) -> int:
        """The level :meth:`mask` reads: ``level`` if given, else by ``mpp``.

        The coarsest level whose µm/px is at most ``mpp`` on both axes (within 1 %);
        level 0 when even that is coarser.  Without a recorded slide mpp,
        ``assumed_mpp`` stands in for it.  The rule of
        :func:`cervixwsi.geometry.resolve_level`, which every stage uses.

        Raises
        ------
        LevelError
            If the slide lacks ``level`` (a :class:`~cervixwsi.errors.RegionError`).

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.slide import ArraySlide
        >>> s = ArraySlide([np.zeros((256 >> k, 256 >> k, 3), np.uint8) for k in range(4)],
        ...                mpp=1.0)
        >>> TissueMasker(mpp=4.0).choose_level(s), TissueMasker(level=1).choose_level(s)
        (2, 1)
        """
        self._validate()
        if self.level is not None:
            return resolve_level(slide, level=self.level, owner="TissueMasker")
        return resolve_level(
            slide, mpp=self.mpp, assumed_mpp=self.assumed_mpp, owner="TissueMasker"
        )

    def mask(self, slide: SlideLike) -> TissueMask:
        """Detect tissue on ``slide`` (one whole low-resolution level is read).

        Parameters
        ----------
        slide : SlideLike
            A :class:`cervixwsi.slide.Slide`, an :class:`cervixwsi.slide.ArraySlide`
            or anything with the :class:`SlideLike` surface.

        Returns
        -------
        TissueMask
            At the downsample of the level read.

        Raises
        ------
        ParameterError
            If a parameter of the masker is invalid (named in the message).
        RegionError
            If the slide lacks ``level``, or the level to read is too large to
            read whole (over 2**28 pixels: a slide without a pyramid).

        Warns
        -----
        UserWarning
            When the slide has no mpp (``assumed_mpp`` is used for µm sizes).
        """
        self._validate()
        level = self.choose_level(slide)
        if slide.mpp is None:
            warnings.warn(
                f"slide {slide.name!r} records no mpp: assuming {self.assumed_mpp} µm/px at "
                "level 0 to size the tissue detector's µm parameters (set "
                "TissueMasker(assumed_mpp=...) or give the slide an mpp)",
                UserWarning,
                stacklevel=2,
            )
        mpp0 = slide_mpp(slide, self.assumed_mpp)
        assert mpp0 is not None  # assumed_mpp (validated) stands in for a missing one
        target = self.mpp if self.level is None else None
        rgb, downsample = read_low_level(slide, level, mpp0, target, "tissue detection")
        pixel_um = mpp0 * downsample
        array = self.detect(rgb, pixel_um)
        mask = TissueMask(array, downsample, slide.dimensions, mpp=slide_mpp(slide))
        if self.artifacts is not None:
            found = self.artifacts.detect(slide, tissue=mask)
            kept = _remove_small(array & ~found.any, self.min_tissue_area_um2 / pixel_um**2)
            mask = TissueMask(
                kept, downsample, slide.dimensions, mpp=slide_mpp(slide), artifacts=found
            )
        logger.debug(
            "tissue of %s: level %d (%.3g µm/px), %.1f %% tissue",
            slide.name,
            level,
            pixel_um,
            100 * array.mean(),
        )
        return mask

    def detect(self, rgb: npt.NDArray[np.uint8], pixel_um: float) -> npt.NDArray[np.bool_]:
        """The mask of an RGB image whose pixels are ``pixel_um`` µm wide (the algorithm).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((20, 20, 3), 250, np.uint8); img[5:15, 5:15] = (180, 90, 160)
        >>> TissueMasker(min_tissue_area_um2=0).detect(img, 8.0).sum()  # 10 x 10 less 4 corners
        np.int64(96)
        """
        self._validate()
        if rgb.size == 0:
            return np.zeros(rgb.shape[:2], bool)
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
        fixed = self._thresholds()
        masks = []
        for i, name in enumerate(self.channels):
            channel = np.ascontiguousarray(hsv[..., _CHANNELS[name]])
            if fixed:
                t = fixed[i]
            else:
                t, _ = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
                if name == "saturation":  # Otsu's upper class (> t) is the tissue
                    lo, hi = self.otsu_bounds
                else:  # its lower class (<= t, so < t + 1) is
                    t, (lo, hi) = t + 1, self.value_otsu_bounds
                t = min(max(t, lo), hi)
            logger.debug("tissue threshold on %s: %g", name, t)
            masks.append(channel > t if name == "saturation" else channel < t)
        tissue = masks[0]
        for m in masks[1:]:
            tissue = (tissue & m) if self.combine == "and" else (tissue | m)
        if self.exclude_glass:  # grey and bright: glass, whatever the thresholds said
            low = (0, 0, math.ceil(self.glass_value))
            high = (179, math.floor(self.glass_saturation), 255)
            tissue &= cv2.inRange(hsv, low, high) == 0
        if self.exclude_pen and self.artifacts is None:
            pen = pen_mask(hsv)
            if pen.any():
                kernel = _ellipse(self.pen_margin_um / pixel_um)
                if kernel is not None:
                    pen = cv2.morphologyEx(pen.view(np.uint8), cv2.MORPH_OPEN, kernel).view(bool)
                kernel = _ellipse(2 * self.pen_margin_um / pixel_um)
                if kernel is not None:
                    pen = cv2.dilate(pen.view(np.uint8), kernel).view(np.bool_)
                before = np.count_nonzero(tissue)
                tissue &= ~pen
                if before and np.count_nonzero(tissue) < _PEN_WARN_KEPT * before:
                    warnings.warn(
                        f"the marker-ink colours of exclude_pen removed "
                        f"{100 * (1 - np.count_nonzero(tissue) / before):.0f} % of the tissue; "
                        "if this slide's stain is shifted towards orange or red rather than "
                        "covered in ink, use TissueMasker(artifacts=ArtifactMasker()) (pen "
                        "found relative to the slide's own stain) or exclude_pen=False",
                        UserWarning,
                        stacklevel=3,
                    )
        tissue = np.ascontiguousarray(tissue)
        kernel = _ellipse(self.closing_um / pixel_um)
        if kernel is not None:
            # Pad with glass so that the closing does not glue tissue to the image border.
            r = kernel.shape[0] // 2
            padded = cv2.copyMakeBorder(tissue.view(np.uint8), r, r, r, r, cv2.BORDER_CONSTANT, 0)
            closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
            tissue = np.ascontiguousarray(closed[r:-r, r:-r]).view(bool)
        kernel = _ellipse(self.opening_um / pixel_um)
        if kernel is not None:
            tissue = cv2.morphologyEx(tissue.view(np.uint8), cv2.MORPH_OPEN, kernel).view(bool)
        tissue = _remove_small(tissue, self.min_tissue_area_um2 / pixel_um**2)
        tissue = _fill_holes(tissue, self.max_hole_area_um2 / pixel_um**2)
        return tissue
