"""The label image of what the artifact masker found: :class:`ArtifactMask`."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice
from cervixwsi.errors import ParameterError
from cervixwsi.geometry import Raster

__all__ = ["CAUSES", "ArtifactMask"]

#: Names of the causes an :class:`ArtifactMask` labels, in the order of their codes (1, 2, ...).
CAUSES: tuple[str, ...] = ("pen", "fold", "blur", "dust")


class ArtifactMask(Raster):
    """A label image of artifacts over a whole slide: a uint8 :class:`~cervixwsi.geometry.Raster`.

    Each pixel holds 0 (no artifact) or the code of one cause:
    :attr:`PEN` (1), :attr:`FOLD` (2), :attr:`BLUR` (3), :attr:`DUST` (4).  When
    causes overlap the pixel holds one of them (pen before dust before fold
    before blur).

    Parameters
    ----------
    array : array_like
        2-D integer labels in ``0..4``.
    downsample, slide_dimensions, mpp
        As for :class:`~cervixwsi.geometry.Raster`.

    Raises
    ------
    ParameterError
        If the array holds a value that is not a code.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 4), np.uint8); a[0, :2] = ArtifactMask.PEN; a[3, 3] = ArtifactMask.DUST
    >>> m = ArtifactMask(a, 8, (32, 32))
    >>> m.cause("pen").sum(), m.any.sum(), m.fractions()["dust"]
    (np.int64(2), np.int64(3), 0.0625)
    """

    NONE: ClassVar[int] = 0
    PEN: ClassVar[int] = 1
    FOLD: ClassVar[int] = 2
    BLUR: ClassVar[int] = 3
    DUST: ClassVar[int] = 4
    #: Cause names in the order of their codes.
    CAUSES: ClassVar[tuple[str, ...]] = CAUSES

    __slots__ = ()

    def __init__(
        self,
        array: npt.ArrayLike,
        downsample: float,
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.ndim == 2 and arr.size and (arr.min() < 0 or arr.max() > len(CAUSES)):
            raise ParameterError(
                f"ArtifactMask labels must be in 0..{len(CAUSES)} (0 none, then {CAUSES}), "
                f"got values from {arr.min()} to {arr.max()}"
            )
        super().__init__(arr.astype(np.uint8), downsample, slide_dimensions, mpp=mpp)

    @classmethod
    def code(cls, name: str) -> int:
        """The label of the cause ``name`` (``"pen"`` is 1, ..., ``"dust"`` is 4).

        Examples
        --------
        >>> ArtifactMask.code("fold")
        2
        """
        check_choice(name, "ArtifactMask.cause", CAUSES)
        return CAUSES.index(name) + 1

    @classmethod
    def empty(cls, like: Raster) -> ArtifactMask:
        """No artifact, on the grid of ``like``."""
        return cls(
            np.zeros(like.shape, np.uint8), like.downsample, like.slide_dimensions, mpp=like.mpp
        )

    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """The labels, indexed ``[row, col]``."""
        out: npt.NDArray[np.uint8] = self._array
        return out

    def cause(self, name: str) -> npt.NDArray[np.bool_]:
        """Where the cause ``name`` (one of :data:`CAUSES`) was found: a bool array.

        Raises
        ------
        ParameterError
            If ``name`` is not a cause.
        """
        out: npt.NDArray[np.bool_] = self._array == self.code(name)
        return out

    @property
    def any(self) -> npt.NDArray[np.bool_]:
        """Where any artifact was found: a bool array."""
        out: npt.NDArray[np.bool_] = self._array > 0
        return out

    def fractions(self, within: Raster | npt.ArrayLike | None = None) -> dict[str, float]:
        """The fraction of the slide's area (or of ``within``) taken by each cause.

        Parameters
        ----------
        within : Raster or array_like of bool, optional
            Count only inside this region (e.g. the tissue before the artifacts
            were removed): a boolean raster over the same slide (resampled to this
            grid) or an array of this shape.  Default: the whole slide.

        Returns
        -------
        dict
            Cause name to area fraction in ``[0, 1]`` (0 when the region is empty).
        """
        if within is None:
            region = np.ones(self.shape, bool)
        elif isinstance(within, Raster):
            if within.slide_dimensions != self.slide_dimensions:
                raise ParameterError(
                    f"ArtifactMask.fractions: within is over a slide of "
                    f"{within.slide_dimensions}, the mask over {self.slide_dimensions}"
                )
            region = _fit(np.asarray(within.resample(self.downsample).array, bool), self.shape)
        else:
            region = np.asarray(within, bool)
            if region.shape != self.shape:
                raise ParameterError(
                    f"ArtifactMask.fractions: within has shape {region.shape}, "
                    f"the mask {self.shape}"
                )
        ys, ye, xs, xe = self.pixel_edges()
        area = np.outer(ye - ys, xe - xs) * region
        total = float(area.sum())
        return {
            name: float(area[self._array == k + 1].sum()) / total if total > 0 else 0.0
            for k, name in enumerate(CAUSES)
        }

    def at_downsample(self, downsample: float) -> ArtifactMask:
        """The labels at another level-0 downsample (each pixel takes the label under its centre).

        Examples
        --------
        >>> import numpy as np
        >>> m = ArtifactMask(np.array([[1, 0], [0, 3]]), 4, (8, 8))
        >>> m.at_downsample(2).array
        array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 3, 3],
               [0, 0, 3, 3]], dtype=uint8)
        """
        r = self.resample(downsample, method="nearest")
        return ArtifactMask(r.array, r.downsample, r.slide_dimensions, mpp=r.mpp)

    def on_grid(self, grid: Raster) -> ArtifactMask:
        """The labels on the grid of ``grid`` (the same object when already on it)."""
        if grid.slide_dimensions != self.slide_dimensions:
            raise ParameterError(
                f"ArtifactMask.on_grid: the grid is over a slide of {grid.slide_dimensions}, "
                f"the mask over {self.slide_dimensions}"
            )
        if self.same_grid(grid):
            return self
        r = self.resample(grid.downsample, method="nearest")
        arr = r.array[: grid.shape[0], : grid.shape[1]]
        if arr.shape != grid.shape:  # a floor-shaped grid: pad its last row/column
            arr = np.pad(
                arr, ((0, grid.shape[0] - arr.shape[0]), (0, grid.shape[1] - arr.shape[1])), "edge"
            )
        return ArtifactMask(arr, grid.downsample, grid.slide_dimensions, mpp=self.mpp)


def _fit(array: npt.NDArray[np.bool_], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    out = np.zeros(shape, bool)
    r, c = min(shape[0], array.shape[0]), min(shape[1], array.shape[1])
    out[:r, :c] = array[:r, :c]
    return out
