"""Macenko et al. (2009) stain normalization: stain vectors from the OD plane."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_real
from cervixwsi.errors import StainError
from cervixwsi.stain._base import StainNormalizer, Stats
from cervixwsi.stain._od import (
    apply_matrices,
    glass_background,
    glass_pixels_mask,
    od_to_rgb,
    rgb_to_od,
    tissue_pixels_mask,
)

__all__ = ["MacenkoNormalizer"]

# Ruifrok & Johnston's hematoxylin and eosin OD directions, for the reports only.
_RUIFROK_H = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
# Hematoxylin's unit OD vector has a red component of 0.5-0.7 on real and synthetic H&E,
# eosin's 0.1-0.3: a "hematoxylin" estimate with less red than this is eosin.
_MIN_H_RED = 0.4
# Per-image estimates in transform use at most this many tissue pixels (regular stride).
_MAX_IMAGE_PIXELS = 16_384


def _angle_deg(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


class MacenkoNormalizer(StainNormalizer):
    """Macenko et al. (2009) stain normalization of H&E images.

    **Estimation** (of a target, or of a source): the optical densities (OD) of the
    tissue pixels (OD above ``beta`` in every channel) span, by Beer-Lambert, the plane
    of the hematoxylin and eosin OD vectors; the plane is that of the two main
    eigenvectors of their covariance.  The pixels' angles in the plane, at the
    ``alpha`` and ``100 - alpha`` percentiles, give the two stain vectors (the one with
    the larger red OD is hematoxylin).  Each pixel's stain concentrations are its OD
    solved on those vectors (least squares), and a stain's *maximum* is the
    ``percentile``-th percentile of its concentrations.

    **Glass**: optical densities are relative to the image's (or slide's) empty glass,
    the median colour of its glass pixels (OD at most ``beta`` in every channel; on a
    slide, outside the tissue mask), or white when there are too few (a patch inside
    tissue): a scanner's tinted glass has no stain, and becomes white.

    **Transform**: a pixel's source concentrations, scaled by target / source maximum,
    recombined with the target's stain vectors; in one 3×3 matrix per image applied
    to the OD (float32).  Glass (OD 0) becomes white.  With ``amounts="keep"`` the
    concentrations are not rescaled: only the stains' colours change.  The maxima
    depend on what the tissue holds as well as on how much stain it took up (a slide
    of dense, dark carcinoma has a higher 99th percentile of hematoxylin than a normal
    slide stained alike), so matching them brightens the nuclei of normal slides;
    keeping the amounts leaves amount differences to stain augmentation.

    The tissue rule (OD above ``beta`` in *every* channel, as Macenko et al.) leaves
    out pale pixels of a stain that absorbs almost no red: with Ruifrok & Johnston's
    textbook eosin vector (red OD 0.07) pure-eosin pixels count as tissue only when
    dark, and the eosin estimate leans a few degrees towards hematoxylin; stains
    estimated on real and synthetic H&E (eosin's red share 0.15-0.3) come back within
    a degree.

    Vahadane et al.'s sparse (SNMF) variant is not provided: it needs a dictionary
    learner such as SPAMS, which is unmaintained, and none of cervixwsi's dependencies
    has one.

    Parameters
    ----------
    beta : float
        OD threshold of tissue pixels (default 0.15).
    alpha : float
        Percentile (in %) of the angles taken as the extreme stain directions, default 1
        (robust to outliers).
    percentile : float
        Percentile (in %) of the concentrations taken as each stain's maximum, default
        99.
    min_angle : float
        Degrees: stain vectors estimated closer than this mean that the image has one
        stain only (e.g. eosin without hematoxylin); default 5.  Hematoxylin is also
        required to absorb red (the red component of its unit OD vector at least 0.4;
        hematoxylin's is 0.5-0.7 on real and synthetic H&E, eosin's 0.1-0.3).
    amounts : {"match", "keep"}
        ``"match"`` (default, Macenko et al.): each stain's concentrations are scaled
        so that the source's maximum becomes the target's; ``"keep"``: the source's
        concentrations are kept, only the stain vectors are swapped for the target's.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.stain import MacenkoNormalizer
    >>> h, e = np.array([0.5626, 0.7201, 0.4062]), np.array([0.2159, 0.8012, 0.5581])
    >>> rng = np.random.default_rng(0)
    >>> c = rng.uniform(0.0, 1.5, (64, 64, 2))                 # H and E amounts
    >>> od = c[..., :1] * h + c[..., 1:] * e                   # Beer-Lambert
    >>> target = np.round(256 * np.exp(-od) - 1).astype(np.uint8)
    >>> norm = MacenkoNormalizer().fit(target)
    >>> norm.stain_vectors.round(2)                            # H and E, back again
    array([[0.56, 0.72, 0.41],
           [0.23, 0.8 , 0.55]])
    >>> cos = (norm.stain_vectors * [h, e]).sum(axis=1) / np.linalg.norm([h, e], axis=1)
    >>> np.degrees(np.arccos(cos)).round(1)                    # errors in degrees
    array([0.3, 0.6])
    >>> out = norm.transform(np.stack([target, target]))       # a batch
    >>> out.shape, out.dtype.name
    ((2, 64, 64, 3), 'uint8')
    """

    method = "macenko"

    def __init__(
        self,
        *,
        beta: float = 0.15,
        alpha: float = 1.0,
        percentile: float = 99.0,
        min_angle: float = 5.0,
        amounts: str = "match",
    ) -> None:
        super().__init__(beta=beta)
        self.amounts = check_choice(amounts, "MacenkoNormalizer.amounts", ("match", "keep"))
        self.alpha = check_real(alpha, "MacenkoNormalizer.alpha", min=0, max=50, max_open=True)
        self.percentile = check_real(percentile, "MacenkoNormalizer.percentile", min=50, max=100)
        self.min_angle = check_real(min_angle, "MacenkoNormalizer.min_angle", min=0, max=45)

    def _params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "percentile": self.percentile,
            "min_angle": self.min_angle,
            "amounts": self.amounts,
        }

    def _stat_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"stain_vectors": (2, 3), "max_concentrations": (2,), "background": (3,)}

    @property
    def stain_vectors(self) -> npt.NDArray[np.float64]:
        """The target's unit OD vectors, ``(2, 3)``: hematoxylin, then eosin (R, G, B)."""
        return self._checked_target()["stain_vectors"].copy()

    @property
    def max_concentrations(self) -> npt.NDArray[np.float64]:
        """The target's ``percentile``-th percentile concentrations of H and E."""
        return self._checked_target()["max_concentrations"].copy()

    # ---------------------------------------------------------------------- estimation

    def _estimate(
        self,
        pixels: npt.NDArray[np.uint8],
        what: str,
        *,
        strict: bool,
        glass: npt.NDArray[np.float64],
    ) -> Stats | None:
        od = rgb_to_od(pixels, glass).astype(np.float64)
        stats = self._estimate_od(od, what, strict=strict)
        if stats is not None:
            stats["background"] = np.asarray(glass, np.float64)
        return stats

    def _estimate_od(self, od: npt.NDArray[np.float64], what: str, *, strict: bool) -> Stats | None:
        def fail(message: str) -> None:
            if strict:
                raise StainError(message)

        if len(od) < 3:
            fail(f"too few tissue pixels in {what} to estimate stains")
            return None
        cov = np.cov(od, rowvar=False)
        _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
        plane = vectors[:, [2, 1]]  # (3, 2): the two main directions
        plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
        proj = od @ plane
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = np.percentile(phi, [self.alpha, 100.0 - self.alpha])
        v1 = plane @ np.array([math.cos(lo), math.sin(lo)])
        v2 = plane @ np.array([math.cos(hi), math.sin(hi)])
        h, e = (v1, v2) if v1[0] >= v2[0] else (v2, v1)
        h = np.abs(h) / np.linalg.norm(h)
        e = np.abs(e) / np.linalg.norm(e)
        spread = _angle_deg(h, e)
        if not np.isfinite(spread) or spread < self.min_angle:
            fail(
                f"{what} shows one stain only: the two stain vectors estimated from it are "
                f"{spread:.1f}° apart (under min_angle={self.min_angle}°), as in an image "
                "without hematoxylin (eosin only) or without eosin; fit on H&E tissue "
                "with nuclei"
            )
            return None
        if h[0] < _MIN_H_RED:
            fail(
                f"no hematoxylin in {what}: the stain vector estimated from it that absorbs "
                f"more red, {np.round(h, 3).tolist()}, has a red component of {h[0]:.2f} "
                f"(under {_MIN_H_RED}; hematoxylin's is 0.5-0.7, eosin's 0.1-0.3; it is "
                f"{_angle_deg(h, _RUIFROK_H):.0f}° from Ruifrok & Johnston's hematoxylin); "
                "fit on H&E tissue with nuclei"
            )
            return None
        matrix = np.stack([h, e])
        conc = od @ np.linalg.pinv(matrix)
        max_c = np.percentile(conc, self.percentile, axis=0)
        if not (max_c > 1e-6).all():
            fail(f"{what} has too little of one stain to estimate its amount ({max_c})")
            return None
        return {"stain_vectors": matrix, "max_concentrations": np.asarray(max_c, np.float64)}

    def _estimate_images(
        self, rgb: npt.NDArray[np.uint8], alpha: Any
    ) -> tuple[list[Stats | None], Any]:
        out: list[Stats | None] = []
        for i in range(rgb.shape[0]):
            a = None if alpha is None else alpha[i]
            mask = tissue_pixels_mask(rgb[i], self.beta, a)
            pixels = rgb[i][mask]
            if len(pixels) < self.MIN_TISSUE_PIXELS:
                out.append(None)
                continue
            glass = glass_background(rgb[i][glass_pixels_mask(rgb[i], self.beta, a)], mask.size)
            step = -(-len(pixels) // _MAX_IMAGE_PIXELS)
            stats = self._estimate(pixels[::step], f"image {i}", strict=False, glass=glass)
            out.append(stats)
        return out, None

    # ----------------------------------------------------------------------- transform

    def _matrix(self, source: Stats) -> npt.NDArray[np.float32]:
        """The 3×3 map of source OD to target OD."""
        target = self._checked_target()
        scale = target["max_concentrations"] / source["max_concentrations"]
        if self.amounts == "keep":
            scale = np.ones_like(scale)
        m = np.linalg.pinv(source["stain_vectors"]) @ (scale[:, None] * target["stain_vectors"])
        return m.astype(np.float32)

    def _apply(
        self, rgb: npt.NDArray[np.uint8], sources: list[Stats | None], cache: Any = None
    ) -> npt.NDArray[np.uint8]:
        out = rgb.copy()
        todo = [i for i, s in enumerate(sources) if s is not None]
        if not todo:
            return out
        matrices = np.stack([self._matrix(sources[i]) for i in todo])  # type: ignore[arg-type]
        backgrounds = np.stack([sources[i]["background"] for i in todo])  # type: ignore[index]
        od = rgb_to_od(rgb[todo], backgrounds[:, None, None, :])
        out[todo] = od_to_rgb(apply_matrices(od, matrices))
        return out
