"""A boolean tissue mask over a whole slide: :class:`TissueMask`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, overload

import cv2
import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_path
from cervixwsi._validate import check_int
from cervixwsi.errors import CervixWSIError, GeometryError, ParameterError, ResultFileError
from cervixwsi.geometry import Box, Raster, Window, resolve_level
from cervixwsi.tissue._artifact_mask import ArtifactMask
from cervixwsi.tissue._slidelike import SlideLike

__all__ = ["TissueMask"]

_MASK_FORMAT = "cervixwsi.TissueMask"
_MASK_VERSION = 1


class TissueMask(Raster):
    """A boolean tissue mask over a whole slide: a :class:`~cervixwsi.geometry.Raster`.

    Raster pixel ``(row, col)`` covers the level-0 square
    ``[col * d, (col + 1) * d) x [row * d, (row + 1) * d)`` (``d`` the
    :attr:`downsample`), clipped to the slide.  Everything the study calls
    "multi-layer mapping" is a method: the tissue fraction of level-0 boxes,
    the mask at another downsample, bounding boxes of tissue pieces.

    Parameters
    ----------
    array : array_like
        2-D boolean array (anything else is compared with 0).
    downsample, slide_dimensions, mpp
        As for :class:`~cervixwsi.geometry.Raster`.
    artifacts : ArtifactMask, optional
        What was removed from the mask and why (see
        :class:`~cervixwsi.tissue.ArtifactMasker`), on the same grid (resampled
        to it when not); :attr:`artifacts` returns it.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.geometry import Box
    >>> m = TissueMask(np.array([[1, 0], [1, 1]], bool), 100, (200, 150), mpp=0.5)
    >>> float(m.fraction(Box(50, 0, 100, 100)))   # half of it over tissue
    0.5
    >>> m.fraction([0, 100], [0, 100], [100, 100], [100, 50])  # many boxes at once
    array([1., 1.])
    >>> m.area_um2   # 100*100 + 100*50 + 100*50 level-0 pixels of 0.25 µm²
    5000.0
    """

    __slots__ = ("_artifacts", "_integral")

    def __init__(
        self,
        array: npt.ArrayLike,
        downsample: float,
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
        artifacts: ArtifactMask | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.dtype != np.bool_:
            arr = arr != 0
        super().__init__(arr, downsample, slide_dimensions, mpp=mpp)
        self._integral: npt.NDArray[np.int64] | None = None
        if artifacts is not None:
            if not isinstance(artifacts, ArtifactMask):
                raise ParameterError(
                    f"TissueMask.artifacts must be an ArtifactMask, got {type(artifacts).__name__}"
                )
            artifacts = artifacts.on_grid(self)
        self._artifacts = artifacts

    def __setstate__(self, state: object) -> None:
        # Pickles of masks made before artifacts existed lack the slot.
        self._artifacts = None
        _, slots = state if isinstance(state, tuple) else (None, state)
        for key, value in (slots or {}).items():
            object.__setattr__(self, key, value)

    @property
    def artifacts(self) -> ArtifactMask | None:
        """What :class:`~cervixwsi.tissue.ArtifactMasker` removed from this mask, and why.

        ``None`` when the mask was made without an artifact masker.

        Examples
        --------
        >>> import numpy as np
        >>> from cervixwsi.tissue import ArtifactMask
        >>> labels = np.zeros((2, 2), np.uint8); labels[0, 0] = ArtifactMask.PEN
        >>> m = TissueMask(np.ones((2, 2)), 8, (16, 16),
        ...                artifacts=ArtifactMask(labels, 8, (16, 16)))
        >>> m.artifacts.cause("pen").sum(), TissueMask(np.ones((2, 2)), 8, (16, 16)).artifacts
        (np.int64(1), None)
        """
        return self._artifacts

    @classmethod
    def from_raster(cls, raster: Raster) -> TissueMask:
        """A tissue mask from any boolean (or 0/1) raster, e.g. an annotation mask.

        Examples
        --------
        >>> import numpy as np
        >>> TissueMask.from_raster(Raster(np.eye(2), 8, (16, 16))).array
        array([[ True, False],
               [False,  True]])
        """
        if isinstance(raster, TissueMask):
            return raster
        return cls(raster.array, raster.downsample, raster.slide_dimensions, mpp=raster.mpp)

    @property
    def array(self) -> npt.NDArray[np.bool_]:
        """The boolean mask, indexed ``[row, col]`` (row-major)."""
        out: npt.NDArray[np.bool_] = self._array
        return out

    def integral(self) -> npt.NDArray[np.int64]:
        """The summed-area table, ``(rows + 1, cols + 1)`` int64.

        Entry ``[r, c]`` is ``array[:r, :c].sum()``.  Computed on first use and
        cached (read-only).
        """
        table = self._integral
        if table is None:  # two threads may both compute it; either result is the same
            table = np.zeros((self.shape[0] + 1, self.shape[1] + 1), np.int64)
            np.cumsum(self._array, axis=0, dtype=np.int64, out=table[1:, 1:])
            np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
            table.flags.writeable = False
            self._integral = table
        return table

    def _area(
        self, u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Tissue area (raster pixels) in ``[0, u) x [0, v)``: bilinear in the integral image."""
        table = self.integral()
        rows, cols = self.shape
        c = np.clip(np.floor(u), 0, cols - 1).astype(np.intp)
        r = np.clip(np.floor(v), 0, rows - 1).astype(np.intp)
        a, b = u - c, v - r
        t00, t01 = table[r, c], table[r, c + 1]
        t10, t11 = table[r + 1, c], table[r + 1, c + 1]
        out: npt.NDArray[np.float64] = (
            t00 + a * (t01 - t00) + b * (t10 - t00) + a * b * (t11 - t10 - t01 + t00)
        ).astype(np.float64)
        return out

    @overload
    def fraction(self, box: Box, /) -> float: ...

    @overload
    def fraction(
        self, x: npt.ArrayLike, y: npt.ArrayLike, width: npt.ArrayLike, height: npt.ArrayLike, /
    ) -> npt.NDArray[np.float64]: ...

    def fraction(
        self,
        x: Box | npt.ArrayLike,
        y: npt.ArrayLike | None = None,
        width: npt.ArrayLike | None = None,
        height: npt.ArrayLike | None = None,
        /,
    ) -> float | npt.NDArray[np.float64]:
        """The fraction of level-0 box(es) covered by tissue.

        Exact: raster pixels that a box covers partly count with the area they
        share with it (the integral image is interpolated bilinearly, which is
        exact for a piecewise-constant mask).  The part of a box outside the
        slide counts as no tissue, so a box half off the slide over tissue has
        fraction 0.5.  An empty box has fraction 0.

        Parameters
        ----------
        x : Box or array_like
            One :class:`~cervixwsi.geometry.Box`, or the level-0 left edges of
            many boxes (then ``y``, ``width``, ``height`` are given too and all
            four broadcast together).
        y, width, height : array_like, optional
            Top edges and sizes (level-0 pixels) of the boxes.

        Returns
        -------
        float or numpy.ndarray
            A float for a Box, else a float64 array of the broadcast shape.
        """
        if isinstance(x, Box):
            if y is not None:
                raise ParameterError("fraction takes one Box or four arrays (x, y, width, height)")
            return float(self.fraction(x.x, x.y, x.width, x.height)[()])
        if y is None or width is None or height is None:
            raise ParameterError("fraction takes one Box or four arrays (x, y, width, height)")
        xs, ys, ws, hs = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (x, y, width, height))
        )
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise GeometryError("fraction: box coordinates must be finite")
        if (
            (ws < 0).any()
            or (hs < 0).any()
            or not (np.isfinite(ws).all() and np.isfinite(hs).all())
        ):
            raise GeometryError("fraction: box sizes must be finite and non-negative")
        width0, height0 = self.slide_dimensions
        d = self.downsample
        u0 = np.clip(xs, 0, width0) / d
        u1 = np.clip(xs + ws, 0, width0) / d
        v0 = np.clip(ys, 0, height0) / d
        v1 = np.clip(ys + hs, 0, height0) / d
        inside = self._area(u1, v1) - self._area(u0, v1) - self._area(u1, v0) + self._area(u0, v0)
        area = ws * hs
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(area > 0, inside * (d * d) / np.where(area > 0, area, 1.0), 0.0)
        out: npt.NDArray[np.float64] = np.clip(frac, 0.0, 1.0)
        return out

    def at_downsample(
        self, downsample: float, *, method: Literal["area", "nearest"] = "area"
    ) -> TissueMask:
        """The mask at another level-0 downsample, covering the same slide.

        Parameters
        ----------
        downsample : float
            Level-0 pixels per pixel of the new mask (e.g. a level's downsample
            or a patch size, for one pixel per patch).
        method : {"area", "nearest"}
            ``"area"`` (default): a new pixel is tissue when at least half of
            its level-0 area is tissue (exact area weights).  ``"nearest"``:
            it takes the value of the old pixel under its centre (faster,
            aliases thin structures when shrinking).

        Examples
        --------
        >>> import numpy as np
        >>> m = TissueMask(np.array([[1, 1, 0, 0]], bool), 4, (16, 4))
        >>> m.at_downsample(8).array
        array([[ True, False]])
        >>> m.at_downsample(2).shape
        (2, 8)
        """
        art = None if self._artifacts is None else self._artifacts.at_downsample(downsample)
        if method == "area":
            frac = self.resample(downsample, method="area")
            return TissueMask(
                frac.array >= 0.5,
                frac.downsample,
                self.slide_dimensions,
                mpp=self.mpp,
                artifacts=art,
            )
        if method == "nearest":
            near = self.resample(downsample, method="nearest")
            return TissueMask(
                near.array, near.downsample, self.slide_dimensions, mpp=self.mpp, artifacts=art
            )
        raise ParameterError(f"method must be 'area' or 'nearest', got {method!r}")

    def at_level(self, slide: SlideLike, level: int) -> TissueMask:
        """The mask at the resolution of one of ``slide``'s levels.

        Raises
        ------
        LevelError
            If the slide has no such level (a :class:`~cervixwsi.errors.RegionError`).

        Examples
        --------
        >>> import numpy as np
        >>> m = TissueMask(np.ones((2, 2), bool), 8, (16, 16))
        >>> from cervixwsi.slide import ArraySlide
        >>> m.at_level(ArraySlide(np.zeros((16, 16, 3), np.uint8)), 0).shape
        (16, 16)
        """
        k = resolve_level(
            slide, level=check_int(level, "TissueMask.at_level: level"), owner="TissueMask.at_level"
        )
        return self.at_downsample(float(slide.level_downsamples[k]))

    def boxes(self) -> list[Box]:
        """Level-0 bounding boxes of the tissue pieces (8-connected), largest first.

        Examples
        --------
        >>> import numpy as np
        >>> a = np.zeros((4, 6), bool); a[1:3, 1:2] = True; a[0:4, 4:6] = True
        >>> TissueMask(a, 10, (60, 40)).boxes()
        [Box(x=40.0, y=0.0, width=20.0, height=40.0), Box(x=10.0, y=10.0, width=10.0, height=20.0)]
        """
        n, _, stats, _ = cv2.connectedComponentsWithStats(self._array.view(np.uint8), 8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1
        out = []
        for i in order[: max(n - 1, 0)]:
            c0, r0 = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
            c1 = c0 + int(stats[i, cv2.CC_STAT_WIDTH])
            r1 = r0 + int(stats[i, cv2.CC_STAT_HEIGHT])
            out.append(self.window_to_box(Window(r0, r1, c0, c1)))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask to a ``.npz`` file (the array, its geometry and a format tag).

        The file appears only when complete (written under a temporary name and
        renamed), and loads without executing code (no pickles).  The
        :attr:`artifacts` labels, when there are any, are saved with it (files
        without them, as older versions wrote, load with ``artifacts`` None).

        Examples
        --------
        >>> import numpy as np, pathlib, tempfile
        >>> m = TissueMask(np.eye(3, dtype=bool), 32, (96, 90), mpp=0.25)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     back = TissueMask.load(m.save(pathlib.Path(tmp) / "slide-1.tissue.npz"))
        >>> back.same_grid(m), back.mpp, bool((back.array == m.array).all())
        (True, 0.25, True)
        """
        path = Path(path)
        extra: dict[str, Any] = {}
        if self._artifacts is not None:
            extra["artifacts"] = self._artifacts.array
        with atomic_path(path) as tmp, tmp.open("xb") as f:
            np.savez_compressed(
                f,
                format=np.array(_MASK_FORMAT),
                version=np.array(_MASK_VERSION),
                array=self.array,
                downsample=np.array(self.downsample),
                slide_dimensions=np.array(self.slide_dimensions, np.int64),
                mpp=np.array(np.nan if self.mpp is None else self.mpp),
                **extra,
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TissueMask:
        """Read a mask written by :meth:`save`.

        Raises
        ------
        ResultFileError
            If the file is missing, empty, truncated, not a saved tissue mask,
            or of a newer format.
        """
        path = Path(path)
        if not path.is_file():
            raise ResultFileError(f"no tissue mask file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile, zlib and numpy raise many kinds
            raise ResultFileError(f"{path} is not a readable tissue mask file: {exc}") from exc
        if str(fields.get("format", "")) != _MASK_FORMAT:
            raise ResultFileError(f"{path} is not a cervixwsi tissue mask")
        if int(fields.get("version", -1)) != _MASK_VERSION:
            raise ResultFileError(
                f"{path} has tissue mask format {fields.get('version')}; "
                f"this cervixwsi reads format {_MASK_VERSION}"
            )
        try:
            mpp = float(fields["mpp"])
            width, height = (int(v) for v in fields["slide_dimensions"])
            downsample = float(fields["downsample"])
            mpp_or_none = None if math.isnan(mpp) else mpp
            artifacts = None
            if "artifacts" in fields:
                artifacts = ArtifactMask(
                    fields["artifacts"], downsample, (width, height), mpp=mpp_or_none
                )
            return cls(
                fields["array"].astype(bool),
                downsample,
                (width, height),
                mpp=mpp_or_none,
                artifacts=artifacts,
            )
        except (KeyError, ValueError, TypeError, CervixWSIError) as exc:
            raise ResultFileError(f"{path} is a damaged tissue mask file: {exc}") from exc

    @property
    def area_px(self) -> float:
        """Tissue area in level-0 pixels (edge pixels clipped to, or reaching, the slide)."""
        ys, ye, xs, xe = self.pixel_edges()
        return float((ye - ys) @ self._array.astype(np.float64) @ (xe - xs))

    @property
    def area_um2(self) -> float | None:
        """Tissue area in µm², or ``None`` when the slide's mpp is unknown."""
        return None if self.mpp is None else self.area_px * self.mpp**2

    @property
    def tissue_fraction(self) -> float:
        """The fraction of the whole slide that is tissue."""
        width0, height0 = self.slide_dimensions
        return float(self.fraction(0, 0, width0, height0))
