"""What every stain normalizer shares: fitting, per-slide sources, transform, files."""

from __future__ import annotations

import abc
import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_text
from cervixwsi._validate import check_real
from cervixwsi.errors import (
    NotFittedError,
    ParameterError,
    RegionError,
    ResultFileError,
    StainError,
)
from cervixwsi.geometry import Raster, resolve_level
from cervixwsi.stain._od import (
    as_rgb_batch,
    glass_background,
    glass_pixels_mask,
    tissue_pixels_mask,
)
from cervixwsi.tissue import SlideLike, TissueMasker

__all__ = ["StainNormalizer", "slide_tissue_pixels"]

logger = logging.getLogger("cervixwsi.stain")

N = TypeVar("N", bound="StainNormalizer")

Stats = dict[str, npt.NDArray[np.float64]]

_FORMAT_VERSION = 1
_MAX_LEVEL_PIXELS = 2**28  # as TissueMasker: a level read whole
DEFAULT_SLIDE_MPP = 4.0  # µm/px of the level stains are estimated on
_ASSUMED_MPP = 0.25  # level-0 µm/px assumed for slides that record none (as TissueMasker)


def _level_tissue(tissue: Raster, slide: SlideLike, level: int) -> npt.NDArray[np.bool_]:
    """``tissue`` resampled onto the pixels of ``level`` (nearest), shape of the level."""
    width, height = slide.level_dimensions[level]
    downsample = (slide.dimensions[0] / width + slide.dimensions[1] / height) / 2
    array = np.asarray(tissue.resample(downsample).array, dtype=bool)
    out = np.zeros((height, width), dtype=bool)
    rows, cols = min(height, array.shape[0]), min(width, array.shape[1])
    out[:rows, :cols] = array[:rows, :cols]
    return out


def slide_tissue_pixels(
    slide: SlideLike,
    *,
    tissue: Raster | None,
    level: int | None,
    mpp: float | None,
    beta: float,
    owner: str,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], int]:
    """The RGB pixels (``(n, 3)`` uint8) of a slide's tissue and glass on a low level, the level.

    The level is ``level`` or, by default, the one :func:`cervixwsi.geometry.resolve_level`
    picks for ``mpp`` (default 4 µm/px; 0.25 µm/px at level 0 is assumed for a slide
    without a recorded resolution).  Tissue is ``tissue`` (any mask
    :class:`~cervixwsi.geometry.Raster` of the slide; by default a
    :class:`~cervixwsi.tissue.TissueMasker`'s, which leaves pen ink out) and, within it,
    the pixels whose optical density exceeds ``beta`` in every channel.
    """
    if tissue is not None and not isinstance(tissue, Raster):
        raise ParameterError(
            f"{owner}.tissue must be a TissueMask (or another Raster of the slide), "
            f"got {type(tissue).__name__}"
        )
    if level is not None:
        chosen = resolve_level(slide, level=level, owner=owner)
    else:
        target = DEFAULT_SLIDE_MPP if mpp is None else mpp
        check_real(target, f"{owner}.mpp", min=0, min_open=True)
        chosen = resolve_level(slide, mpp=target, assumed_mpp=_ASSUMED_MPP, owner=owner)
    width, height = slide.level_dimensions[chosen]
    if width * height > _MAX_LEVEL_PIXELS:
        raise RegionError(
            f"{owner} reads one whole level to estimate stains, and level {chosen} of slide "
            f"{slide.name!r} is {width}x{height} pixels: choose a coarser level or mpp"
        )
    if tissue is None:
        tissue = TissueMasker().mask(slide)
    rgb, alpha = as_rgb_batch(slide.read_level(chosen), f"level {chosen} of slide {slide.name!r}")
    inside = _level_tissue(tissue, slide, chosen)
    if rgb.shape[1:3] != inside.shape:
        raise RegionError(
            f"slide {slide.name!r} level {chosen} gave {rgb.shape[1:3]} pixels; its "
            f"level_dimensions say {inside.shape}"
        )
    a0 = None if alpha is None else alpha[0]
    keep = tissue_pixels_mask(rgb[0], beta, a0) & inside
    glass = glass_pixels_mask(rgb[0], beta, a0) & ~inside
    return rgb[0][keep], rgb[0][glass], chosen


class StainNormalizer(abc.ABC):
    """Base of the stain normalizers: fit on a target, transform images towards it.

    A normalizer estimates the *stains* (statistics that the method defines) of a
    **target** (an image or a slide's tissue) with :meth:`fit` / :meth:`fit_slide`, and
    maps any RGB image's stains onto the target's with :meth:`transform`.  The
    **source** statistics are estimated per image in :meth:`transform` by default, or
    once per slide with :meth:`for_slide`, which returns a normalizer that transforms
    every patch of that slide the same way (the consistent choice for heatmaps).

    Subclasses: :class:`~cervixwsi.stain.MacenkoNormalizer`,
    :class:`~cervixwsi.stain.ReinhardNormalizer`.  Saved normalizers (:meth:`save`, a
    JSON file) are loaded with :meth:`StainNormalizer.load`, whatever their method.

    Parameters
    ----------
    beta : float
        Optical-density threshold of tissue pixels (default 0.15, Macenko et al.'s): a
        pixel is used for estimation when its OD exceeds ``beta`` in every channel (and
        it is not transparent); glass and very pale pixels are left out.
    """

    method: ClassVar[str] = ""
    #: Fewest tissue pixels a target (or a per-slide source) must have.
    MIN_TISSUE_PIXELS: ClassVar[int] = 100
    #: Most tissue pixels used for one estimate (a regular subsample beyond).
    MAX_ESTIMATE_PIXELS: ClassVar[int] = 1_000_000
    _registry: ClassVar[dict[str, type[StainNormalizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            StainNormalizer._registry[cls.method] = cls

    def __init__(self, *, beta: float = 0.15) -> None:
        owner = type(self).__name__
        self.beta = check_real(beta, f"{owner}.beta", min=0.0, max=2.0, min_open=True)
        self._target: Stats | None = None
        self._source: Stats | None = None

    # ------------------------------------------------------------------ subclass hooks

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments (JSON values)."""

    @abc.abstractmethod
    def _estimate(
        self,
        pixels: npt.NDArray[np.uint8],
        what: str,
        *,
        strict: bool,
        glass: npt.NDArray[np.float64],
    ) -> Stats | None:
        """Statistics of tissue pixels ``(n, 3)``; raise (strict) or None when impossible.

        ``glass`` is the RGB of the image's empty glass (:func:`glass_background`).
        """

    @abc.abstractmethod
    def _apply(
        self, rgb: npt.NDArray[np.uint8], sources: list[Stats | None], cache: Any = None
    ) -> npt.NDArray[np.uint8]:
        """Map ``(N, H, W, 3)`` images (image ``i`` with ``sources[i]``) onto the target.

        ``cache`` is what :meth:`_estimate_images` returned with the statistics (the
        images in the method's colour space), or None.
        """

    @abc.abstractmethod
    def _estimate_images(
        self, rgb: npt.NDArray[np.uint8], alpha: Any
    ) -> tuple[list[Stats | None], Any]:
        """Per-image source statistics of ``(N, H, W, 3)`` (None: not estimable), and a cache."""

    # ------------------------------------------------------------------------- state

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` or :meth:`fit_slide` has estimated a target."""
        return self._target is not None

    @property
    def source_fixed(self) -> bool:
        """True for a normalizer from :meth:`for_slide` / :meth:`for_image` (fixed source)."""
        return self._source is not None

    @property
    def target(self) -> Stats:
        """The target's statistics (copies of the arrays)."""
        return {k: v.copy() for k, v in self._checked_target().items()}

    @property
    def source(self) -> Stats | None:
        """The fixed source's statistics, or None when estimated per image."""
        return None if self._source is None else {k: v.copy() for k, v in self._source.items()}

    def _checked_target(self) -> Stats:
        if self._target is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted: call fit(image) or "
                "fit_slide(slide) first (or load a saved one)"
            )
        return self._target

    def _pixels(
        self, image: Any, name: str
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
        rgb, alpha = as_rgb_batch(image, name)
        mask = tissue_pixels_mask(rgb, self.beta, alpha)
        glass = rgb[glass_pixels_mask(rgb, self.beta, alpha)]
        return rgb[mask], glass_background(glass, mask.size)

    def _subsample(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        step = -(-len(pixels) // self.MAX_ESTIMATE_PIXELS)
        return pixels[::step] if step > 1 else pixels

    def _require_tissue(self, pixels: npt.NDArray[np.uint8], total: int, what: str) -> None:
        if len(pixels) < self.MIN_TISSUE_PIXELS:
            raise StainError(
                f"no tissue in {what}: {len(pixels)} of {total} pixels have an optical "
                f"density above beta={self.beta} in every channel (at least "
                f"{self.MIN_TISSUE_PIXELS} are needed); it is glass, blank or transparent"
            )

    # ------------------------------------------------------------------------ fitting

    def fit(self: N, image: Any) -> N:
        """Estimate the target's stains on an RGB(A) uint8 image (its tissue pixels).

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 (transparent pixels are not
            tissue), or a batch ``(..., H, W, 3)`` fitted as one image.

        Returns
        -------
        StainNormalizer
            ``self``, fitted.

        Raises
        ------
        ParameterError
            For an image that is not uint8 RGB(A).
        StainError
            When the image has no tissue (all glass, white or transparent) or, for
            Macenko, its stains cannot be told apart (no hematoxylin).
        """
        pixels, glass = self._pixels(image, "the target image")
        total = int(np.asarray(image).size // np.asarray(image).shape[-1])
        self._require_tissue(pixels, total, "the target image")
        stats = self._estimate(
            self._subsample(pixels), "the target image", strict=True, glass=glass
        )
        assert stats is not None  # strict estimates raise instead
        self._target = stats
        logger.debug("%s fitted on %d tissue pixels", type(self).__name__, len(pixels))
        return self

    def fit_slide(
        self: N,
        slide: SlideLike,
        tissue: Raster | None = None,
        *,
        level: int | None = None,
        mpp: float | None = None,
    ) -> N:
        """Estimate the target's stains on the tissue of a slide's low-resolution level.

        Parameters
        ----------
        slide : SlideLike
            A :class:`cervixwsi.slide.Slide`, :class:`cervixwsi.slide.ArraySlide` or
            anything with their surface.
        tissue : TissueMask, optional
            The slide's tissue (a :class:`~cervixwsi.geometry.Raster` of bools); by
            default ``TissueMasker().mask(slide)`` (pen ink left out).
        level : int, optional
            The level read whole; by default the one
            :func:`~cervixwsi.geometry.resolve_level` picks for ``mpp``.
        mpp : float, optional
            Resolution to estimate at, default 4 µm/px (a 16× downsample of a 40× scan;
            4-8 µm/px shows the stains of nuclei and stroma and reads fast).

        Returns
        -------
        StainNormalizer
            ``self``, fitted.

        Raises
        ------
        LevelError
            If the slide lacks ``level``.
        StainError
            When the slide shows too little tissue, or its stains cannot be estimated.
        """
        what = f"slide {slide.name!r}"
        owner = f"{type(self).__name__}.fit_slide"
        pixels, glass, chosen = slide_tissue_pixels(
            slide, tissue=tissue, level=level, mpp=mpp, beta=self.beta, owner=owner
        )
        w, h = slide.level_dimensions[chosen]
        self._require_tissue(pixels, w * h, f"{what} (level {chosen})")
        background = glass_background(glass, w * h)
        stats = self._estimate(self._subsample(pixels), what, strict=True, glass=background)
        assert stats is not None
        self._target = stats
        return self

    def _with_source(self: N, source: Stats) -> N:
        new = copy.copy(self)
        new._source = source
        return new

    def for_slide(
        self: N,
        slide: SlideLike,
        tissue: Raster | None = None,
        *,
        level: int | None = None,
        mpp: float | None = None,
    ) -> N:
        """A normalizer that maps *this slide's* stains, estimated once, to the target.

        The source stains are estimated on the tissue of one low-resolution level (as
        :meth:`fit_slide` does for a target), so every patch of the slide is transformed
        with the same statistics: patch by patch estimates would differ between a
        patch of tumor and one of stroma, and a slide would not be normalized
        consistently.  ``self`` is unchanged.

        Parameters are those of :meth:`fit_slide`.

        Returns
        -------
        StainNormalizer
            A copy of ``self`` with its source fixed (:attr:`source_fixed`).

        Raises
        ------
        NotFittedError
            If ``self`` has no target yet.
        StainError
            When the slide shows too little tissue, or its stains cannot be estimated.
        """
        self._checked_target()
        what = f"slide {slide.name!r}"
        owner = f"{type(self).__name__}.for_slide"
        pixels, glass, chosen = slide_tissue_pixels(
            slide, tissue=tissue, level=level, mpp=mpp, beta=self.beta, owner=owner
        )
        w, h = slide.level_dimensions[chosen]
        self._require_tissue(pixels, w * h, f"{what} (level {chosen})")
        background = glass_background(glass, w * h)
        stats = self._estimate(self._subsample(pixels), what, strict=True, glass=background)
        assert stats is not None
        return self._with_source(stats)

    def for_image(self: N, image: Any) -> N:
        """A normalizer whose source stains are estimated once, on ``image``.

        As :meth:`for_slide`, for an image in memory (e.g. a slide's thumbnail).

        Raises
        ------
        NotFittedError
            If ``self`` has no target yet.
        StainError
            When the image has no tissue, or its stains cannot be estimated.
        """
        self._checked_target()
        pixels, glass = self._pixels(image, "the source image")
        total = int(np.asarray(image).size // np.asarray(image).shape[-1])
        self._require_tissue(pixels, total, "the source image")
        stats = self._estimate(
            self._subsample(pixels), "the source image", strict=True, glass=glass
        )
        assert stats is not None
        return self._with_source(stats)

    # ---------------------------------------------------------------------- transform

    def transform(self, rgb: Any) -> npt.NDArray[np.uint8]:
        """Normalize RGB(A) uint8 images towards the target's stains.

        Parameters
        ----------
        rgb : numpy.ndarray
            ``(H, W, 3)`` or a batch ``(..., H, W, 3)`` of uint8 RGB; ``(..., 4)`` RGBA
            keeps its alpha (transparent pixels count as glass).

        Returns
        -------
        numpy.ndarray
            uint8, the shape of ``rgb``.  With a fixed source (:meth:`for_slide`) every
            image is mapped with it; otherwise each image's own stains are estimated,
            and an image whose stains cannot be (too little tissue, a patch of glass,
            one stain only) is returned unchanged.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ParameterError
            For an input that is not uint8 ``(..., H, W, 3 or 4)``.
        """
        self._checked_target()
        original = np.asarray(rgb)
        flat, alpha = as_rgb_batch(original, f"{type(self).__name__}.transform input")
        cache = None
        if self._source is not None:
            sources: list[Stats | None] = [self._source] * flat.shape[0]
        else:
            sources, cache = self._estimate_images(flat, alpha)
            skipped = sum(s is None for s in sources)
            if skipped:
                logger.debug("%d of %d images left as they are", skipped, len(sources))
        out = self._apply(flat, sources, cache)
        if alpha is not None:
            out = np.concatenate([out, alpha[..., None]], axis=-1)
        return out.reshape(original.shape)

    __call__ = transform

    # -------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: method, parameters, target and fixed source.

        Examples
        --------
        >>> from cervixwsi.stain import ReinhardNormalizer
        >>> ReinhardNormalizer().to_dict()["method"]
        'reinhard'
        """

        def stats(s: Stats | None) -> dict[str, Any] | None:
            return None if s is None else {k: v.tolist() for k, v in s.items()}

        return {
            "method": self.method,
            "version": _FORMAT_VERSION,
            "params": {"beta": self.beta, **self._params()},
            "target": stats(self._target),
            "source": stats(self._source),
        }

    @classmethod
    def from_dict(cls, data: Any) -> StainNormalizer:
        """The normalizer :meth:`to_dict` described (of the class its ``method`` names).

        Raises
        ------
        ResultFileError
            When ``data`` is not such a description (unknown method, missing or
            malformed fields), or names another method than ``cls``'s.
        """
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            method = data["method"]
            if data.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            if method not in StainNormalizer._registry:
                known = sorted(StainNormalizer._registry)
                raise ValueError(f"unknown method {method!r} (known: {known})")
            kind = StainNormalizer._registry[method]
            if cls is not StainNormalizer and not issubclass(kind, cls):
                raise ValueError(f"it describes a {kind.__name__}, not a {cls.__name__}")
            normalizer = kind(**data["params"])
            normalizer._target = normalizer._load_stats(data["target"])
            normalizer._source = normalizer._load_stats(data["source"])
        except ResultFileError:
            raise
        except (KeyError, TypeError, ValueError, ParameterError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ResultFileError(f"not a saved stain normalizer: {detail}") from exc
        return normalizer

    def _load_stats(self, raw: Any) -> Stats | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise TypeError(f"stain statistics must be an object, got {type(raw).__name__}")
        expected = self._stat_shapes()
        if set(raw) != set(expected):
            raise ValueError(f"statistics {sorted(raw)}; expected {sorted(expected)}")
        out: Stats = {}
        for key, shape in expected.items():
            value = np.asarray(raw[key], dtype=np.float64)
            if value.shape != shape or not np.isfinite(value).all():
                raise ValueError(f"{key} must be {shape} finite numbers, got {raw[key]!r}")
            out[key] = value
        return out

    @abc.abstractmethod
    def _stat_shapes(self) -> dict[str, tuple[int, ...]]:
        """The names and shapes of the statistics."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically); return the path.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from cervixwsi.stain import ReinhardNormalizer, StainNormalizer
        >>> image = np.full((32, 32, 3), (180, 90, 160), np.uint8)
        >>> image[::2] = (120, 60, 150)
        >>> norm = ReinhardNormalizer().fit(image)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     loaded = StainNormalizer.load(norm.save(Path(d) / "stain.json"))
        >>> loaded == norm, type(loaded).__name__
        (True, 'ReinhardNormalizer')
        """
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StainNormalizer:
        """Read a normalizer :meth:`save` wrote (any method; see :meth:`from_dict`).

        Raises
        ------
        ResultFileError
            When the file is missing, unreadable, not JSON or not a saved normalizer.
        """
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultFileError(f"cannot read the stain normalizer {source}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultFileError(f"{source} is not JSON (a corrupt normalizer?): {exc}") from exc
        try:
            return cls.from_dict(data)
        except ResultFileError as exc:
            raise ResultFileError(f"{source}: {exc}") from exc

    def fingerprint(self) -> str:
        """A short hash of :meth:`to_dict` (names a normalizer in predictor names).

        Examples
        --------
        >>> from cervixwsi.stain import MacenkoNormalizer
        >>> len(MacenkoNormalizer().fingerprint())
        8
        """
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StainNormalizer):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in {"beta": self.beta, **self._params()}.items())
        state = "fitted" if self.fitted else "not fitted"
        if self.source_fixed:
            state += ", fixed source"
        return f"{type(self).__name__}({params}) [{state}]"
