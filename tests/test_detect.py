"""detect_lesions(method="smoothed_maxima") and choose_detection_params (cervixwsi.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from cervixwsi.errors import MetricsError, ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.metrics import (
    DetectionChoice,
    FROCEvaluator,
    choose_detection_params,
    detect_lesions,
)

PIXEL_UM = 64.0  # one heatmap pixel per 64 µm patch (64 px at 1 µm/px)


def heat(p: np.ndarray) -> Raster:
    h, w = p.shape
    return Raster(p, 64, (w * 64, h * 64), mpp=1.0)


def blob(shape: tuple[int, int], r: int, c: int, amplitude: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out: np.ndarray = amplitude * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    return out


def centre(r: int, c: int) -> tuple[float, float]:
    """The level-0 point a detection at heatmap pixel (r, c) reports."""
    return c * 64 + 32.0, r * 64 + 32.0


def test_known_peaks_are_found_where_they_are() -> None:
    shape = (40, 50)
    peaks = [(5, 6, 0.95), (5, 12, 0.9), (30, 40, 0.8), (20, 25, 0.78), (35, 5, 0.3)]
    p = np.zeros(shape)
    for r, c, a in peaks:
        p = np.maximum(p, blob(shape, r, c, a, 1.5))
    for sigma_um in (0.0, 32.0, 64.0):
        dets = detect_lesions(
            heat(p), method="smoothed_maxima", sigma_um=sigma_um, min_distance_um=192
        )
        # The four peaks above 0.5 (smoothing lowers them a little), most probable first;
        # the one at 0.3 is below the threshold.
        assert [tuple(d[1:]) for d in dets] == [centre(r, c) for r, c, a in peaks[:4]]
        assert (np.diff(dets[:, 0]) <= 0).all()
    smoothed = detect_lesions(heat(p), method="smoothed_maxima", sigma_um=64, min_distance_um=192)
    expected = ndimage.gaussian_filter(p, 1.0, mode="constant")[[5, 5, 30, 20], [6, 12, 40, 25]]
    np.testing.assert_allclose(smoothed[:, 0], expected)


def test_touching_lesions_get_one_detection_each_and_a_lone_spike_is_smoothed_away() -> None:
    shape = (20, 30)
    p = np.maximum(blob(shape, 10, 8, 0.95, 2.5), blob(shape, 10, 13, 0.9, 2.5))
    assert (p[10, 8:14] >= 0.5).all()  # one connected component above 0.5
    p[3, 25] = 0.99  # a single confident pixel: noise
    assert len(detect_lesions(heat(p))) == 2  # the pair is one component, plus the spike
    dets = detect_lesions(heat(p), method="smoothed_maxima", sigma_um=64, min_distance_um=128)
    assert [tuple(d[1:]) for d in dets] == [centre(10, 8), centre(10, 13)]
    # Without smoothing the spike is a detection again; closer than min_distance, one.
    raw = detect_lesions(heat(p), method="smoothed_maxima", sigma_um=0, min_distance_um=128)
    assert [tuple(d[1:]) for d in raw] == [centre(3, 25), centre(10, 8), centre(10, 13)]
    far = detect_lesions(heat(p), method="smoothed_maxima", sigma_um=0, min_distance_um=640)
    assert [tuple(d[1:]) for d in far] == [centre(3, 25), centre(10, 8)]


@given(st.integers(0, 2**16), st.sampled_from([0.0, 32.0, 96.0]), st.sampled_from([64.0, 200.0]))
def test_smoothed_maxima_against_an_independent_computation(
    seed: int, sigma_um: float, spacing_um: float
) -> None:
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(rng.random((12, 15)), 1.0)
    p = (p - p.min()) / (np.ptp(p) + 1e-12)
    p[rng.random(p.shape) < 0.1] = np.nan
    threshold = 0.4
    dets = detect_lesions(
        heat(p),
        threshold=threshold,
        method="smoothed_maxima",
        sigma_um=sigma_um,
        min_distance_um=spacing_um,
    )
    q = np.nan_to_num(p)
    if sigma_um:
        q = ndimage.gaussian_filter(q, sigma_um / PIXEL_UM, mode="constant")
    rows = ((dets[:, 2] - 32) / 64).astype(int)
    cols = ((dets[:, 1] - 32) / 64).astype(int)
    # Each detection: the smoothed value, >= threshold, a maximum of its 3x3 neighbourhood.
    np.testing.assert_allclose(dets[:, 0], q[rows, cols])
    assert (dets[:, 0] >= threshold).all()
    padded = np.pad(q, 1, constant_values=-np.inf)
    for r, c in zip(rows, cols, strict=True):
        assert q[r, c] >= padded[r : r + 3, c : c + 3].max()
    # Kept detections are more than min_distance apart (in pixels, rounded up).
    k = max(1, int(np.ceil(spacing_um / PIXEL_UM)))
    for i in range(len(rows)):
        for j in range(i):
            assert np.hypot(rows[i] - rows[j], cols[i] - cols[j]) > k
    # Every strict local maximum above the threshold that tops its (2k+1)^2 window is a
    # detection, or within k of a detection at least as probable.
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    window = ndimage.maximum_filter(q, size=2 * k + 1, mode="constant", cval=-np.inf)
    neighbours = ndimage.maximum_filter(q, footprint=ring, mode="constant", cval=-np.inf)
    for r, c in np.argwhere((q >= threshold) & (q > neighbours) & (q == window)):
        near = np.hypot(rows - r, cols - c) <= k
        assert near.any() and dets[near, 0].max() >= q[r, c]


def test_smoothed_maxima_bad_input() -> None:
    p = np.zeros((3, 3))
    with pytest.raises(MetricsError, match="needs the heatmap's mpp"):
        detect_lesions(Raster(p, 64, (192, 192)), method="smoothed_maxima")
    with pytest.raises(ParameterError, match=r"detect_lesions\.sigma_um"):
        detect_lesions(heat(p), method="smoothed_maxima", sigma_um=-1)
    with pytest.raises(ParameterError, match=r"detect_lesions\.min_distance_um"):
        detect_lesions(heat(p), method="smoothed_maxima", min_distance_um=0)
    with pytest.raises(ParameterError, match=r"detect_lesions\.method"):
        detect_lesions(heat(p), method="peaks")  # type: ignore[arg-type]
    assert detect_lesions(heat(p), method="smoothed_maxima").shape == (0, 3)


# --- choose_detection_params ---------------------------------------------------------------


def cohort() -> tuple[dict[str, Raster], dict[str, Raster | None]]:
    """Two tumor slides with a pair of touching lesions and a lone one, and a normal slide
    with noise spikes; 128 µm heatmap pixels (so that a 3-pixel lesion is no ITC)."""
    shape = (30, 40)
    maps: dict[str, Raster] = {}
    truth: dict[str, Raster | None] = {}
    for i, offset in enumerate((0, 5)):
        p = np.zeros(shape)
        mask = np.zeros(shape, bool)
        for r, c, a in ((8, 8 + offset, 0.95), (8, 13 + offset, 0.85), (22, 30, 0.9)):
            p = np.maximum(p, blob(shape, r, c, a, 2.5))
            mask[r - 1 : r + 2, c - 1 : c + 2] = True
        maps[f"t{i}"] = Raster(p, 64, (40 * 64, 30 * 64), mpp=2.0)
        truth[f"t{i}"] = Raster(mask, 64, (40 * 64, 30 * 64), mpp=2.0)
    noise = np.zeros(shape)
    noise[[3, 12, 25], [5, 30, 17]] = [0.97, 0.93, 0.8]
    maps["n0"], truth["n0"] = Raster(noise, 64, (40 * 64, 30 * 64), mpp=2.0), None
    return maps, truth


def test_choose_detection_params_picks_the_best_froc_on_the_given_slides() -> None:
    maps, truth = cohort()
    strict = FROCEvaluator(protocol="strict", progress=False)
    choice = choose_detection_params(
        maps, truth, sigmas_um=(0.0, 128.0), min_distances_um=(256.0, 1280.0), evaluator=strict
    )
    assert isinstance(choice, DetectionChoice)
    assert [t[:3] for t in choice.tried][1:] == [
        ("smoothed_maxima", 0.0, 256.0),
        ("smoothed_maxima", 0.0, 1280.0),
        ("smoothed_maxima", 128.0, 256.0),
        ("smoothed_maxima", 128.0, 1280.0),
    ]
    scores = [t[3] for t in choice.tried]
    # Each candidate scored independently: its detections through the evaluator.
    for (method, sigma, spacing, froc_score, n_fp), expected in zip(
        choice.tried, scores, strict=True
    ):
        kwargs = {"method": method}
        if method == "smoothed_maxima":
            kwargs |= {"sigma_um": sigma, "min_distance_um": spacing}
        dets = {k: detect_lesions(v, **kwargs) for k, v in maps.items()}  # type: ignore[arg-type]
        dims = {k: v.slide_dimensions for k, v in maps.items()}
        result = strict.evaluate(truth, dets, slide_dimensions=dims)
        assert result.score == expected == froc_score
        assert n_fp == sum(int(sl.is_false_positive.sum()) for sl in result.slides)
    # One component per touching pair misses a lesion on each tumor slide; maxima without
    # smoothing keep the normal slide's spikes; smoothed maxima 2 pixels apart get all.
    assert scores[0] == pytest.approx(0.5) and choice.froc == max(scores) == 1.0
    assert (choice.method, choice.sigma_um, choice.min_distance_um) == (
        "smoothed_maxima",
        128.0,
        256.0,
    )
    assert len(detect_lesions(maps["t0"], **choice.kwargs)) == 3
    assert len(detect_lesions(maps["n0"], **choice.kwargs)) == 0
    # On a tie of FROC, the fewest false positives win: one lone lesion, and noise spikes
    # less probable than it on a normal slide (FROC 1 either way).
    shape = (30, 40)
    lone = blob(shape, 15, 20, 0.95, 2.5)
    mask = np.zeros(shape, bool)
    mask[14:17, 19:22] = True
    spikes = np.zeros(shape)
    spikes[[3, 12, 25], [5, 30, 17]] = 0.6
    dims = (40 * 64, 30 * 64)
    tie = choose_detection_params(
        {"t": Raster(lone, 64, dims, mpp=2.0), "n": Raster(spikes, 64, dims, mpp=2.0)},
        {"t": Raster(mask, 64, dims, mpp=2.0), "n": None},
        sigmas_um=(0.0, 128.0),
        min_distances_um=(256.0,),
        evaluator=strict,
    )
    assert [t[3] for t in tie.tried] == [1.0, 1.0, 1.0] and tie.froc == 1.0
    assert [t[4] for t in tie.tried] == [3, 3, 0]
    assert (tie.method, tie.sigma_um) == ("smoothed_maxima", 128.0)
    assert DetectionChoice("components", np.nan, np.nan, 0.5, 0.1, ()).kwargs == {
        "method": "components",
        "threshold": 0.5,
    }


def test_choose_detection_params_bad_input() -> None:
    maps, truth = cohort()
    with pytest.raises(MetricsError, match="same slide ids"):
        choose_detection_params(maps, {"t0": truth["t0"]})
    with pytest.raises(MetricsError, match="has a lesion to detect"):
        choose_detection_params({"n0": maps["n0"]}, {"n0": None})
    with pytest.raises(ParameterError, match="at least one value"):
        choose_detection_params(maps, truth, sigmas_um=())
    with pytest.raises(ParameterError, match=r"choose_detection_params\.min_distances_um"):
        choose_detection_params(maps, truth, min_distances_um=(0.0,))
