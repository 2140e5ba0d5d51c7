"""Deterministic noise for the synthetic slides: integer hashes and periodic textures.

Everything a tile shows is a function of *global* level-0 coordinates and the
slide's seed, never of the tile being drawn, so tiles can be rendered in any
order, in parallel, and agree across their borders:

* :func:`hash_uniform` maps integer lattice coordinates to uniform numbers
  (a SplitMix64 finaliser), used to place nuclei on a global jittered grid;
* :class:`TextureBank` holds small periodic noise textures made once per slide,
  sampled at global coordinates modulo their period.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PX = np.uint64(0x8CB92BA72F3D8DD7)
_PY = np.uint64(0xD6E8FEB86659FD93)
_MASK53 = np.uint64((1 << 53) - 1)


def _splitmix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_uniform(
    key: int, ix: npt.NDArray[np.int64], iy: npt.NDArray[np.int64], n: int
) -> npt.NDArray[np.float64]:
    """``n`` uniform numbers in ``[0, 1)`` per lattice point ``(ix, iy)``.

    The result has shape ``ix.shape + (n,)`` and depends only on ``key`` (the
    slide seed mixed with a stream number) and the lattice coordinates.
    """
    with np.errstate(over="ignore"):
        base = (
            np.asarray(ix, np.int64).astype(np.uint64) * _PX
            ^ np.asarray(iy, np.int64).astype(np.uint64) * _PY
        )
        base = _splitmix(base + np.uint64(key & 0xFFFFFFFFFFFFFFFF) * _GOLDEN)
        k = np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
        z = _splitmix(base[..., None] + k)
    return (z & _MASK53).astype(np.float64) / float(1 << 53)


def stream_key(seed: int, stream: int) -> int:
    """A 64-bit key for one random stream of one slide (``seed``, ``stream``)."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, stream])
    return int(ss.generate_state(1, np.uint64)[0])


def _periodic_noise(
    rng: np.random.Generator, size: int, sigma: float, *, anisotropy: float = 1.0
) -> FloatArray:
    """White noise blurred with a Gaussian in the Fourier domain (so it tiles), z-scored."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    sx, sy = sigma * anisotropy, sigma
    kernel = np.exp(-2.0 * np.pi**2 * ((fx * sx) ** 2 + (fy * sy) ** 2))
    out = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    out = (out - out.mean()) / (out.std() + 1e-12)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class TextureBank:
    """Periodic noise textures of one slide (each ``size x size``, z-scored).

    Attributes
    ----------
    grain : fine isotropic noise (chromatin, cytoplasm granularity).
    fibre : noise stretched along x (collagen fibres once warped along streamlines).
    low : smooth noise (glass shading, ragged tissue borders, stain density).
    white : per-pixel noise (scanner noise).
    """

    size: int
    grain: FloatArray
    fibre: FloatArray
    low: FloatArray
    white: FloatArray

    @classmethod
    def make(cls, key: int, size: int = 512) -> TextureBank:
        """The bank of the stream ``key`` (deterministic)."""
        rng = np.random.default_rng(key)
        return cls(
            size=size,
            grain=_periodic_noise(rng, size, 1.0),
            fibre=_periodic_noise(rng, size, 1.0, anisotropy=5.0),
            low=_periodic_noise(rng, size, 10.0),
            white=rng.standard_normal((size, size)).astype(np.float32),
        )

    @functools.cached_property
    def scanner_noise(self) -> FloatArray:
        """``(size, size, 3)``: the scanner noise added to RGB, ``0.8 * white`` on each channel."""
        return np.ascontiguousarray(np.repeat((0.8 * self.white)[..., None], 3, axis=2))

    @functools.cached_property
    def low_range(self) -> tuple[float, float]:
        """The minimum and maximum of :attr:`low` (which interpolation cannot leave)."""
        return (float(self.low.min()), float(self.low.max()))

    def lookup(
        self, texture: FloatArray, xs: npt.NDArray[np.int64], ys: npt.NDArray[np.int64]
    ) -> FloatArray:
        """``texture`` at integer global columns ``xs`` and rows ``ys`` (an outer grid)."""
        n = self.size
        return np.asarray(texture[np.ix_(np.mod(ys, n), np.mod(xs, n))], dtype=np.float32)

    def sample(self, texture: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
        """``texture`` bilinearly interpolated at texel coordinates ``(u, v)`` (wrapping)."""
        return _remap_wrap(texture, self._wrap(u), self._wrap(v))

    def sample_grid(
        self, texture: FloatArray, u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
    ) -> FloatArray:
        """``texture`` at the outer grid of column coordinates ``u`` and row coordinates ``v``."""
        uu = np.mod(u, self.size).astype(np.float32)
        vv = np.mod(v, self.size).astype(np.float32)
        shape = (vv.size, uu.size)
        return _remap_wrap(
            texture,
            np.ascontiguousarray(np.broadcast_to(uu[None, :], shape)),
            np.ascontiguousarray(np.broadcast_to(vv[:, None], shape)),
        )

    def _wrap(self, u: FloatArray) -> FloatArray:
        # Coordinates in [0, size): cv2.remap takes a slow path for wrapped ones.
        n = np.float32(self.size)
        u = np.asarray(u, np.float32)
        return np.ascontiguousarray(u - np.floor(u * (1.0 / n)) * n, dtype=np.float32)


def _remap_wrap(texture: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
    return np.asarray(
        cv2.remap(texture, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP), dtype=np.float32
    )
