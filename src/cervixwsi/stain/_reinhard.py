"""Reinhard et al. (2001) colour transfer: per-channel mean and std in CIELAB."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi.stain._base import StainNormalizer, Stats
from cervixwsi.stain._od import lab_to_rgb, rgb_to_lab, tissue_pixels_mask

__all__ = ["ReinhardNormalizer"]

_MIN_STD = 1e-6  # a flat source channel is shifted, not scaled


class ReinhardNormalizer(StainNormalizer):
    """Reinhard et al. (2001) colour transfer, on tissue statistics.

    **Estimation**: the mean and standard deviation of each CIELAB channel (D65, as
    :func:`skimage.color.rgb2lab`) over the tissue pixels (optical density above
    ``beta`` in every channel), so glass does not weigh in.

    **Transform**: every pixel's LAB ``x`` becomes ``(x - mean_s) / std_s * std_t +
    mean_t`` (source ``s``, target ``t``), back to RGB, clipped to the gamut; as in the
    original method every pixel is mapped, with the statistics of the tissue.  Fast
    and robust (no stain separation, so it cannot fail on one-stain images), but it
    also moves the colour of glass and of pen ink.

    Parameters
    ----------
    beta : float
        OD threshold of tissue pixels (default 0.15).

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.stain import ReinhardNormalizer
    >>> rng = np.random.default_rng(0)
    >>> target = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    >>> norm = ReinhardNormalizer().fit(target)
    >>> norm.means.round(1), norm.stds.round(1)
    (array([55.4,  2.6,  1.6]), array([11.6, 27.2, 27.2]))
    >>> source = (target * 0.8).astype(np.uint8)               # darker
    >>> out = norm.transform(source)
    >>> bool(abs(out.mean() - target.mean()) < abs(source.mean() - target.mean()))
    True
    """

    method = "reinhard"

    def __init__(self, *, beta: float = 0.15) -> None:
        super().__init__(beta=beta)

    def _params(self) -> dict[str, Any]:
        return {}

    def _stat_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"means": (3,), "stds": (3,)}

    @property
    def means(self) -> npt.NDArray[np.float64]:
        """The target's mean L*, a*, b* over its tissue."""
        return self._checked_target()["means"].copy()

    @property
    def stds(self) -> npt.NDArray[np.float64]:
        """The target's standard deviations of L*, a*, b* over its tissue."""
        return self._checked_target()["stds"].copy()

    def _estimate(
        self,
        pixels: npt.NDArray[np.uint8],
        what: str,
        *,
        strict: bool,
        glass: npt.NDArray[np.float64],
    ) -> Stats | None:
        lab = rgb_to_lab(pixels).astype(np.float64)
        return {"means": lab.mean(axis=0), "stds": lab.std(axis=0)}

    def _estimate_images(
        self, rgb: npt.NDArray[np.uint8], alpha: Any
    ) -> tuple[list[Stats | None], Any]:
        # Masked sums over each image at once (float64 accumulation).
        mask = tissue_pixels_mask(rgb, self.beta, alpha)  # (N, H, W)
        counts = mask.sum(axis=(1, 2))
        lab = rgb_to_lab(rgb)
        weights = mask[..., None].astype(np.float32)
        n = np.maximum(counts, 1)[:, None]
        sums = (lab * weights).sum(axis=(1, 2), dtype=np.float64)
        sq = (lab * lab * weights).sum(axis=(1, 2), dtype=np.float64)
        means = sums / n
        stds = np.sqrt(np.maximum(sq / n - means * means, 0.0))
        sources: list[Stats | None] = [
            {"means": means[i], "stds": stds[i]} if counts[i] >= self.MIN_TISSUE_PIXELS else None
            for i in range(rgb.shape[0])
        ]
        return sources, lab

    def _apply(
        self, rgb: npt.NDArray[np.uint8], sources: list[Stats | None], cache: Any = None
    ) -> npt.NDArray[np.uint8]:
        target = self._checked_target()
        out = rgb.copy()
        todo = [i for i, s in enumerate(sources) if s is not None]
        if not todo:
            return out
        src_mean = np.stack([sources[i]["means"] for i in todo])  # type: ignore[index]
        src_std = np.stack([sources[i]["stds"] for i in todo])  # type: ignore[index]
        scale = np.where(src_std > _MIN_STD, target["stds"] / np.maximum(src_std, _MIN_STD), 1.0)
        shift = target["means"] - src_mean * scale
        lab = rgb_to_lab(rgb[todo]) if cache is None else cache[todo]
        lab *= scale[:, None, None, :].astype(np.float32)
        lab += shift[:, None, None, :].astype(np.float32)
        out[todo] = lab_to_rgb(lab)
        return out
