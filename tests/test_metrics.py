"""cervixwsi.metrics: ROC/AUC with CIs and the DeLong test, Camelyon16 FROC, detections."""

from __future__ import annotations

import ast
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as nd
from skimage import measure
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

import cervixwsi.metrics
from cervixwsi.errors import MetricsError, ParameterError
from cervixwsi.geometry import Raster
from cervixwsi.metrics import (
    EVAL_FPS,
    FROCEvaluator,
    MaskSource,
    auc_ci,
    compare_auc,
    detect_lesions,
    evaluation_mask,
    format_p_value,
    froc,
    itc_labels,
    read_detections_csv,
    roc_auc,
    roc_curve,
    write_detections_csv,
)
from cervixwsi.metrics._roc import _delong

MPP = 0.243  # Camelyon16's level-0 resolution

# =====================================================================================
# The independent reference: a faithful, per-detection-loop port of the Camelyon16
# organisers' Evaluation_FROC.py (computeEvaluationMask, computeITCList,
# compute_FP_TP_Probs, computeFROC and the final score), written out as the script
# does it.  NumPy 1 semantics are spelled out where NumPy 2 changed them: a Python
# float compared with a float32 scalar is compared in float64 (float(...)), and the
# thresholds are sorted as float64 values.
# =====================================================================================


def ref_evaluation_mask(tumor: npt.NDArray[np.bool_], resolution: float, level: int) -> Any:
    pixelarray = np.where(tumor, 255, 0).astype(np.uint8)  # channel 0 of read_region
    distance = nd.distance_transform_edt(255 - pixelarray)
    threshold = 75 / (resolution * pow(2, level) * 2)
    binary = distance < threshold
    filled_image = nd.binary_fill_holes(binary)
    return measure.label(filled_image, connectivity=2)


def ref_itc_list(evaluation_mask: Any, resolution: float, level: int) -> list[int]:
    max_label = np.amax(evaluation_mask)
    properties = measure.regionprops(evaluation_mask)
    isolated = []
    threshold = 275 / (resolution * pow(2, level))
    for i in range(max_label):
        if properties[i].axis_major_length < threshold:
            isolated.append(i + 1)
    return isolated


def ref_fp_tp_probs(
    ycorr: list[int],
    xcorr: list[int],
    probs: list[float],
    is_tumor: bool,
    evaluation_mask: Any,
    itc: list[int],
    level: int,
) -> tuple[list[float], Any, int, dict[str, list[Any]]]:
    max_label = int(np.amax(evaluation_mask))
    fp_probs: list[float] = []
    tp_probs = np.zeros((max_label,), dtype=np.float32)
    summary: dict[str, list[Any]] = {}
    for i in range(1, max_label + 1):
        if i not in itc:
            summary["Label " + str(i)] = []
    if is_tumor:
        for i in range(len(xcorr)):
            hitted = evaluation_mask[int(ycorr[i] / pow(2, level)), int(xcorr[i] / pow(2, level))]
            if hitted == 0:
                fp_probs.append(probs[i])
            # NumPy 1 compares a Python float with a float32 scalar in float64.
            elif hitted not in itc and probs[i] > float(tp_probs[hitted - 1]):
                summary["Label " + str(hitted)] = [probs[i], xcorr[i], ycorr[i]]
                tp_probs[hitted - 1] = probs[i]
    else:
        for i in range(len(xcorr)):
            fp_probs.append(probs[i])
    return fp_probs, tp_probs, max_label - len(itc), summary


def ref_froc(
    fp_lists: list[list[float]], tp_lists: list[Any], n_tumors: list[int]
) -> tuple[Any, Any]:
    unlisted_fps = [item for sublist in fp_lists for item in sublist]
    unlisted_tps = [float(item) for sublist in tp_lists for item in sublist]  # exact float64
    total_fps, total_tps = [], []
    all_probs = sorted(set(unlisted_fps + unlisted_tps))
    fps_arr = np.asarray(unlisted_fps, dtype=np.float64)
    tps_arr = np.asarray(unlisted_tps, dtype=np.float64).astype(np.float32)
    for thresh in all_probs[1:]:
        total_fps.append((fps_arr >= thresh).sum())
        total_tps.append((tps_arr >= np.float32(thresh)).sum())  # float32 array vs Python float
    total_fps.append(0)
    total_tps.append(0)
    return (
        np.asarray(total_fps) / float(len(fp_lists)),
        np.asarray(total_tps) / float(sum(n_tumors)),
    )


def ref_evaluate(
    masks: dict[str, npt.NDArray[np.bool_] | None],
    detections: dict[str, npt.NDArray[np.float64]],
    resolution: float,
    level: int = 5,
) -> tuple[Any, Any, Any, float, dict[str, dict[str, list[Any]]]]:
    fp_lists, tp_lists, n_tumors, summaries = [], [], [], {}
    for case, mask in masks.items():
        d = detections[case]
        probs = [float(v) for v in d[:, 0]]
        xs = [int(v) for v in d[:, 1]]
        ys = [int(v) for v in d[:, 2]]
        if mask is not None:
            em = ref_evaluation_mask(mask, resolution, level)
            itc = ref_itc_list(em, resolution, level)
        else:
            em, itc = 0, []
        fp, tp, n, summary = ref_fp_tp_probs(ys, xs, probs, mask is not None, em, itc, level)
        fp_lists.append(fp)
        tp_lists.append(tp)
        n_tumors.append(n)
        summaries[case] = summary
    fps, sens = ref_froc(fp_lists, tp_lists, n_tumors)
    evals = np.interp([0.25, 0.5, 1, 2, 4, 8], fps[::-1], sens[::-1])
    return fps, sens, evals, float(np.mean(evals)), summaries


# --- strategies ------------------------------------------------------------------------

PROBS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9, 1.0, float(np.float32(0.3))]),
    st.floats(0, 1, allow_nan=False, width=32),
    st.floats(0, 1, allow_nan=False),
)


@st.composite
def slide_cases(
    draw: st.DrawFn, level: int = 5
) -> tuple[dict[str, npt.NDArray[np.bool_] | None], dict[str, npt.NDArray[np.float64]]]:
    n_slides = draw(st.integers(1, 4))
    masks: dict[str, npt.NDArray[np.bool_] | None] = {}
    dets: dict[str, npt.NDArray[np.float64]] = {}
    for i in range(n_slides):
        h, w = draw(st.integers(4, 20)), draw(st.integers(4, 20))
        normal = i > 0 and draw(st.booleans())
        if normal:
            masks[f"n{i}"] = None
        else:
            density = draw(st.sampled_from([0.02, 0.1, 0.3]))
            seed = draw(st.integers(0, 2**32 - 1))
            m = np.random.default_rng(seed).random((h, w)) < density
            m[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
            masks[f"t{i}"] = m
        n = draw(st.integers(0, 12))
        rows = draw(hnp.arrays(np.int64, n, elements=st.integers(0, h * 2**level - 1)))
        cols = draw(hnp.arrays(np.int64, n, elements=st.integers(0, w * 2**level - 1)))
        p = draw(st.lists(PROBS, min_size=n, max_size=n))
        dets[list(masks)[-1]] = np.column_stack([np.asarray(p, float), cols, rows]).reshape(-1, 3)
    return masks, dets


def has_lesion(masks: dict[str, Any], mpp: float, level: int = 5) -> bool:
    for m in masks.values():
        if m is not None:
            em = ref_evaluation_mask(m, mpp, level)
            if em.max() > len(ref_itc_list(em, mpp, level)):
                return True
    return False


# mpp values that give the dilation radius and ITC size a few pixels on small masks
SMALL_MPP = st.sampled_from([0.5, 1.0, 2.0, 4.0])


# =====================================================================================
# ROC / AUC
# =====================================================================================


def test_roc_curve_hand_computed() -> None:
    curve = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], drop_intermediate=False)
    assert curve.fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert curve.tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert curve.thresholds[0] == np.inf
    assert curve.auc == 0.75


@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int8, n, elements=st.integers(0, 1)),
            hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
            | hnp.arrays(np.float64, n, elements=st.floats(-1e6, 1e6)),
        )
    )
)
def test_auc_equals_sklearn_ties_included(case: tuple[Any, Any]) -> None:
    y, s = case
    assume(0 < y.sum() < y.size)
    expected = roc_auc_score(y, s)
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    curve = roc_curve(y, s)
    fpr, tpr, thr = sk_roc_curve(y, s)
    np.testing.assert_array_equal(curve.fpr, fpr)
    np.testing.assert_array_equal(curve.tpr, tpr)
    np.testing.assert_array_equal(curve.thresholds, thr)
    assert curve.auc == pytest.approx(expected, abs=1e-12)
    # Also DeLong's midrank AUC is the same number.
    if min(y.sum(), y.size - y.sum()) >= 2:
        aucs, _ = _delong(s[y == 1][None], s[y == 0][None])
        assert aucs[0] == pytest.approx(expected, abs=1e-12)


@given(
    st.integers(4, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int8, n, elements=st.integers(0, 1)),
            hnp.arrays(np.float64, n, elements=st.floats(-5, 5)),
        )
    ),
    st.sampled_from(["exp", "cube", "affine", "logistic"]),
)
def test_auc_unchanged_by_strictly_increasing_transforms(case: tuple[Any, Any], f: str) -> None:
    y, s = case
    assume(0 < y.sum() < y.size)
    t = {
        "exp": np.exp(s),
        "cube": s**3,
        "affine": 3 * s + 7,
        "logistic": 1 / (1 + np.exp(-s)),
    }[f]
    # A transform that merges distinct scores in floating point is not strictly increasing.
    assume(np.unique(t).size == np.unique(s).size)
    assert roc_auc(y, t) == roc_auc(y, s)


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "only positive"),
        ([0, 0], [0.1, 0.2], "only negative"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "finite.*index 1"),
        ([0, 1, 1], [0.1, 0.2], "3"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_roc_bad_input_raises_clear_value_errors(y: Any, s: Any, match: str) -> None:
    for fn in (roc_auc, roc_curve, auc_ci):
        with pytest.raises(MetricsError, match=match) as info:
            fn(y, s)
        assert isinstance(info.value, ValueError)


def brute_force_delong(pos: Any, neg: Any) -> tuple[Any, Any]:
    """DeLong's covariance from its definition: structural components by pairwise loops."""

    def psi(x: float, y: float) -> float:
        return 1.0 if x > y else 0.5 if x == y else 0.0

    k, m, n = pos.shape[0], pos.shape[1], neg.shape[1]
    v10 = np.array(
        [[sum(psi(pos[r, i], neg[r, j]) for j in range(n)) / n for i in range(m)] for r in range(k)]
    )
    v01 = np.array(
        [[sum(psi(pos[r, i], neg[r, j]) for i in range(m)) / m for j in range(n)] for r in range(k)]
    )
    aucs = v10.mean(axis=1)
    s10 = np.array(
        [
            [
                sum((v10[a, i] - aucs[a]) * (v10[b, i] - aucs[b]) for i in range(m)) / (m - 1)
                for b in range(k)
            ]
            for a in range(k)
        ]
    )
    s01 = np.array(
        [
            [
                sum((v01[a, j] - aucs[a]) * (v01[b, j] - aucs[b]) for j in range(n)) / (n - 1)
                for b in range(k)
            ]
            for a in range(k)
        ]
    )
    return aucs, s10 / m + s01 / n


@given(
    st.integers(2, 9),
    st.integers(2, 9),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_delong_covariance_equals_its_definition(m: int, n: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    draw = (
        (lambda size: rng.integers(0, 4, size) / 4)
        if ties
        else (lambda size: rng.normal(size=size))
    )
    pos, neg = draw((2, m)).astype(float), draw((2, n)).astype(float)
    aucs, cov = _delong(pos, neg)
    ref_aucs, ref_cov = brute_force_delong(pos, neg)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)


def test_delong_ci_hand_computed() -> None:
    # pos (0.5, 0.7, 0.9, 0.8), neg (0.1, 0.3, 0.2, 0.6): only 0.5 < 0.6 is discordant.
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.3, 0.2, 0.6, 0.5, 0.7, 0.9, 0.8]
    ci = auc_ci(y, s, alpha=0.05)
    # V10 = (0.75, 1, 1, 1), V01 = (0, 0, 0, 0.25): var = 0.0625/4/4 + 0.0625/4/4
    se = math.sqrt(2 * (0.25**2 * 3 / 4 / 3) / 4)
    assert ci.auc == 0.9375
    assert ci.se == pytest.approx(se)
    assert ci.low == pytest.approx(0.9375 - 1.959963984540054 * se)
    assert ci.high == 1.0  # clipped
    assert (ci.method, ci.alpha) == ("delong", 0.05)


def test_bootstrap_ci_is_seeded_and_stratified() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(30), np.ones(20)].astype(int)
    s = rng.normal(size=50) + y
    a = auc_ci(y, s, method="bootstrap", n_bootstrap=300, seed=42)
    b = auc_ci(y, s, method="bootstrap", n_bootstrap=300, seed=42)
    assert a == b
    assert a.low < a.auc < a.high
    assert a != auc_ci(y, s, method="bootstrap", n_bootstrap=300, seed=43)
    # Stratified: a perfectly separated cohort stays perfect in every resample.
    perfect = auc_ci(y, y + 0.5 * rng.random(50), method="bootstrap", n_bootstrap=200, seed=1)
    assert (perfect.low, perfect.auc, perfect.high) == (1.0, 1.0, 1.0)


def test_ci_coverage_is_roughly_nominal() -> None:
    """Over 150 simulated cohorts with true AUC ≈ 0.76, 95% CIs cover it about 95% of the time."""
    rng = np.random.default_rng(7)
    true_auc = 0.7602499389065233  # P(N(1,1) > N(0,1)) = Phi(1 / sqrt 2)
    hits = {"delong": 0, "bootstrap": 0}
    trials = 150
    for t in range(trials):
        y = np.r_[np.zeros(40), np.ones(40)].astype(int)
        s = rng.normal(size=80) + y
        for method in hits:
            ci = auc_ci(y, s, method=method, n_bootstrap=300, seed=t)  # type: ignore[arg-type]
            hits[method] += ci.low <= true_auc <= ci.high
    for method, h in hits.items():
        assert 0.87 <= h / trials <= 0.995, (method, h)


def test_compare_auc_paired_delong() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    good = rng.normal(size=120) + 2.5 * y
    weak = good + rng.normal(scale=3.0, size=120)
    c = compare_auc(good, weak, y)
    assert c.auc_a == roc_auc(y, good) and c.auc_b == roc_auc(y, weak)
    assert c.difference == pytest.approx(c.auc_a - c.auc_b)
    assert c.p_value < 0.01 and c.z > 0
    assert c.low < c.difference < c.high
    # Symmetric; a model against itself differs by nothing.
    r = compare_auc(weak, good, y)
    assert r.z == pytest.approx(-c.z) and r.p_value == pytest.approx(c.p_value)
    same = compare_auc(good, good, y)
    assert (same.difference, same.z, same.p_value) == (0.0, 0.0, 1.0)
    # The pairing: var(a - b) = var a + var b - 2 cov, from the brute-force definition.
    pos = np.vstack([good, weak])[:, y == 1][:, :6]
    neg = np.vstack([good, weak])[:, y == 0][:, :7]
    _, cov = brute_force_delong(pos, neg)
    yy = np.r_[np.ones(6), np.zeros(7)].astype(int)
    small = compare_auc(np.r_[pos[0], neg[0]], np.r_[pos[1], neg[1]], yy)
    assert small.se == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


def test_compare_auc_bad_input() -> None:
    with pytest.raises(MetricsError, match="scores_b has 2 values but y_true has 4"):
        compare_auc([0.1, 0.2, 0.3, 0.4], [0.1, 0.2], [0, 0, 1, 1])
    with pytest.raises(MetricsError, match="at least 2 positive"):
        compare_auc([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0, 0, 1])
    with pytest.raises(ParameterError, match=r"auc_ci\.alpha must be a finite number in \(0, 1\)"):
        auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], alpha=1.5)
    with pytest.raises(ParameterError, match=r"compare_auc\.alpha"):
        compare_auc([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], alpha=0)
    with pytest.raises(ParameterError, match="method"):
        auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], method="wald")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="n_bootstrap"):
        auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], method="bootstrap", n_bootstrap=0)
    with pytest.raises(ParameterError, match="n_bootstrap must be an integer"):
        auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], method="bootstrap", n_bootstrap=True)


@pytest.mark.parametrize(
    ("p", "digits", "text"),
    [
        (0.03123, 4, "p = 0.0312"),
        (1.0, 4, "p = 1.0000"),
        (0.0001, 4, "p = 0.0001"),
        (0.0000999, 4, "p < 0.0001"),
        (0.0, 4, "p < 0.0001"),
        (3e-12, 2, "p < 0.01"),
        (np.float64(0.5), 1, "p = 0.5"),
    ],
)
def test_format_p_value_never_writes_zero(p: float, digits: int, text: str) -> None:
    assert format_p_value(p, digits=digits) == text


def test_format_p_value_bad_input() -> None:
    for bad in (np.nan, -0.1, 1.5, "0.1"):
        with pytest.raises(ParameterError, match=r"format_p_value\.p"):
            format_p_value(bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"format_p_value\.digits"):
        format_p_value(0.5, digits=0)


# =====================================================================================
# FROC: hand-computed cases, one per rule
# =====================================================================================


def square(h: int, w: int, *boxes: tuple[int, int, int, int]) -> npt.NDArray[np.bool_]:
    m = np.zeros((h, w), bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def at(row: float, col: float, level: int = 5) -> tuple[int, int]:
    """Level-0 (x, y) of the centre of an evaluation pixel."""
    return int(col * 2**level + 2 ** (level - 1)), int(row * 2**level + 2 ** (level - 1))


def det(p: float, row: float, col: float) -> list[float]:
    x, y = at(row, col)
    return [p, x, y]


def test_dilation_merges_two_nearby_lesions_and_not_distant_ones() -> None:
    # Threshold at level 5, mpp 0.243: 75 / (0.243 * 64) = 4.82 pixels.
    near = square(60, 120, (10, 50, 10, 50), (10, 50, 58, 98))  # 8 px apart: 4 + 4 < 4.82 * 2
    far = square(60, 120, (10, 50, 10, 50), (10, 50, 60, 100))  # 10 px apart
    assert evaluation_mask(near, mpp=MPP).max() == 1
    assert evaluation_mask(far, mpp=MPP).max() == 2
    dets = {"s": np.array([det(0.9, 30, 30), det(0.8, 30, 80)])}
    merged = froc({"s": near}, dets, mpp=MPP)
    apart = froc({"s": far}, dets, mpp=MPP, protocol="strict")
    assert merged.n_lesions == 1 and apart.n_lesions == 2
    assert merged.slide("s").is_true_positive.tolist() == [True, False]  # second is dropped
    assert apart.slide("s").is_true_positive.tolist() == [True, True]
    # 37.5 µm reach: a detection 4 px (< 4.82) outside the lesion hits it, 5 px does not.
    touching = froc({"s": far}, {"s": np.array([det(0.7, 30, 53), det(0.6, 30, 55)])}, mpp=MPP)
    assert touching.slide("s").detection_label.tolist() == [1, 0]


def test_itc_regions_are_excluded_from_sensitivity() -> None:
    # ITC threshold at level 5: 275 / (0.243 * 32) = 35.4 px major axis (after dilation).
    m = square(100, 100, (5, 8, 5, 8), (40, 80, 40, 80))
    labels = evaluation_mask(m, mpp=MPP)
    assert itc_labels(labels, mpp=MPP).tolist() == [1]
    result = froc({"s": m}, {"s": np.array([det(0.9, 60, 60)])}, mpp=MPP)
    assert result.n_lesions == 1
    assert result.slide("s").itc_labels.tolist() == [1]
    assert result.slide("s").lesion_labels.tolist() == [2]
    assert result.sensitivity.max() == 1.0
    # Without ITC exclusion the small region is a lesion, missed: sensitivity 1/2.
    all_regions = froc({"s": m}, {"s": np.array([det(0.9, 60, 60)])}, mpp=MPP, itc=False)
    assert all_regions.n_lesions == 2 and all_regions.sensitivity.max() == 0.5


def test_detection_in_itc_region_is_neither_tp_nor_fp() -> None:
    m = square(100, 100, (5, 8, 5, 8), (40, 80, 40, 80))
    dets = {"s": np.array([det(0.95, 6, 6), det(0.5, 60, 60), det(0.4, 20, 90)])}
    s = froc({"s": m}, dets, mpp=MPP, protocol="strict").slide("s")
    assert s.in_itc.tolist() == [True, False, False]
    assert s.is_true_positive.tolist() == [False, True, False]
    assert s.is_false_positive.tolist() == [False, False, True]
    result = froc({"s": m}, dets, mpp=MPP, protocol="strict")
    # Thresholds: FP 0.4, TP 0.5; the ITC hit at 0.95 adds none.
    assert result.thresholds.tolist() == [0.4, 0.5, np.inf]
    assert result.fps_per_image.tolist() == [1.0, 0.0, 0.0]
    assert result.sensitivity.tolist() == [1.0, 1.0, 0.0]


def test_duplicate_detections_in_one_lesion_only_the_best_counts() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    dets = {"s": np.array([det(0.3, 20, 20), det(0.8, 30, 30), det(0.8, 40, 40), det(0.5, 45, 45)])}
    r = froc({"s": m}, dets, mpp=MPP, protocol="strict")
    s = r.slide("s")
    assert s.is_true_positive.tolist() == [False, True, False, False]  # the first of the ties
    assert not s.is_false_positive.any()
    assert s.lesion_probability.tolist() == [0.8] and s.lesion_detection.tolist() == [1]
    assert r.thresholds.tolist() == [0.8, np.inf]
    assert r.fps_per_image.tolist() == [0.0, 0.0]


def test_probability_zero_hit_never_counts() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    dets = {"s": np.array([det(0.0, 30, 30), det(0.2, 2, 2)])}
    for protocol in ("camelyon16", "strict"):
        s = froc({"s": m}, dets, mpp=MPP, protocol=protocol).slide("s")
        assert s.lesion_detection.tolist() == [-1]
        assert s.is_true_positive.tolist() == [False, False]
        assert s.n_detected == 0


def test_normal_slides_count_in_the_fp_denominator() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    tumor_only = froc(
        {"t": m}, {"t": np.array([det(0.9, 30, 30), det(0.5, 2, 2)])}, mpp=MPP, protocol="strict"
    )
    with_normals = froc(
        {"t": m, "n1": None, "n2": None, "n3": None},
        {
            "t": np.array([det(0.9, 30, 30), det(0.5, 2, 2)]),
            "n1": np.zeros((0, 3)),
            "n2": np.array([[0.7, 10, 10]]),
            "n3": np.empty((0, 3)),
        },
        mpp=MPP,
        protocol="strict",
    )
    assert tumor_only.fps_per_image.tolist() == [1.0, 0.0, 0.0]
    # FPs 0.5 (tumor slide) and 0.7 (normal slide), over 4 slides.
    assert with_normals.n_slides == 4
    assert with_normals.thresholds.tolist() == [0.5, 0.7, 0.9, np.inf]
    assert with_normals.fps_per_image.tolist() == [0.5, 0.25, 0.0, 0.0]
    assert with_normals.slide("n2").is_false_positive.tolist() == [True]


def test_lowest_threshold_skipped_in_camelyon16_mode_only() -> None:
    # One lesion hit at 0.9 (no lesion missed, no ITC: no 0 slot), FPs at 0.2 and 0.6.
    m = square(60, 60, (10, 50, 10, 50))
    dets = {"s": np.array([det(0.9, 30, 30), det(0.2, 2, 2), det(0.6, 2, 58)])}
    official = froc({"s": m}, dets, mpp=MPP)
    strict = froc({"s": m}, dets, mpp=MPP, protocol="strict")
    # 0.2 skipped; the TP's threshold is its float32 slot.
    assert official.thresholds.tolist() == [0.6, float(np.float32(0.9)), np.inf]
    assert official.fps_per_image.tolist() == [1.0, 0.0, 0.0]
    assert strict.thresholds.tolist() == [0.2, 0.6, 0.9, np.inf]
    assert strict.fps_per_image.tolist() == [2.0, 1.0, 0.0, 0.0]
    assert official.sensitivity.tolist() == [1.0, 1.0, 0.0]
    assert strict.sensitivity.tolist() == [1.0, 1.0, 1.0, 0.0]
    # Score: interpolation of (fps, sens) reversed at 1/4 .. 8.
    assert strict.eval_sensitivities.tolist() == [1.0] * 6
    assert official.eval_sensitivities.tolist() == [1.0] * 6
    np.testing.assert_array_equal(official.fps_per_image, ref_evaluate({"s": m}, dets, MPP)[0])


def test_float32_tp_and_float64_fp_are_different_thresholds_in_camelyon16_mode() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    dets = {"s": np.array([det(0.3, 30, 30), det(0.3, 2, 2), det(0.1, 2, 58)])}
    official = froc({"s": m}, dets, mpp=MPP)
    strict = froc({"s": m}, dets, mpp=MPP, protocol="strict")
    # all_probs = {0.1, 0.3 (FP, float64), 0.30000001192092896 (TP, float32)}; 0.1 skipped.
    assert official.thresholds.tolist() == [0.3, float(np.float32(0.3)), np.inf]
    assert official.fps_per_image.tolist() == [1.0, 0.0, 0.0]
    assert official.sensitivity.tolist() == [1.0, 1.0, 0.0]
    assert strict.thresholds.tolist() == [0.1, 0.3, np.inf]
    expected = ref_evaluate({"s": m}, dets, MPP)
    np.testing.assert_array_equal(official.sensitivity, expected[1])
    assert official.score == expected[3]


def test_score_is_the_mean_of_six_interpolated_sensitivities() -> None:
    # Two lesions: one hit at 0.9, one at 0.4; 4 FPs (0.95, 0.8, 0.5, 0.3) on 2 slides.
    m = square(60, 120, (10, 50, 10, 50), (10, 50, 70, 110))
    dets = {
        "t": np.array([det(0.9, 30, 30), det(0.4, 30, 90), det(0.95, 55, 55), det(0.8, 55, 60)]),
        "n": np.array([[0.5, 5, 5], [0.3, 9, 9]]),
    }
    r = froc({"t": m, "n": None}, dets, mpp=MPP, protocol="strict")
    assert r.thresholds.tolist() == [0.3, 0.4, 0.5, 0.8, 0.9, 0.95, np.inf]
    assert r.fps_per_image.tolist() == [2.0, 1.5, 1.5, 1.0, 0.5, 0.5, 0.0]
    assert r.sensitivity.tolist() == [1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0]
    expected = np.interp(EVAL_FPS, r.fps_per_image[::-1], r.sensitivity[::-1])
    np.testing.assert_array_equal(r.eval_sensitivities, expected)
    assert r.score == pytest.approx(np.mean(expected))
    assert r.eval_fps == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# =====================================================================================
# FROC: against the reference port of the official script
# =====================================================================================


@given(slide_cases(), SMALL_MPP)
def test_camelyon16_mode_reproduces_the_official_script(case: Any, mpp: float) -> None:
    masks, dets = case
    assume(has_lesion(masks, mpp))
    fps, sens, evals, score, summaries = ref_evaluate(masks, dets, mpp)
    result = froc(masks, dets, mpp=mpp)
    np.testing.assert_array_equal(result.fps_per_image, fps)
    np.testing.assert_array_equal(result.sensitivity, sens)
    np.testing.assert_array_equal(result.eval_sensitivities, evals)
    assert result.score == score
    for sid, summary in summaries.items():
        s = result.slide(sid)
        assert sorted(summary) == sorted(f"Label {k}" for k in s.lesion_labels)
        for label, p, i in zip(
            s.lesion_labels, s.lesion_probability, s.lesion_detection, strict=True
        ):
            entry = summary[f"Label {label}"]
            if i < 0:
                assert entry == [] and p == 0
            else:  # the official summary keeps the last update, of equal float32 value
                assert np.float32(entry[0]) == np.float32(p)


def realistic_cohort(
    rng: np.random.Generator, n_slides: int, shape: tuple[int, int], n_dets: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Slides at level 5 and 0.243 µm/px: lesions from single cells to 2 mm, some normal slides."""
    masks: dict[str, Any] = {}
    dets: dict[str, Any] = {}
    h, w = shape
    for i in range(n_slides):
        if i % 3 == 2:
            masks[f"normal_{i}"] = None
        else:
            m = np.zeros(shape, bool)
            for _ in range(rng.integers(1, 12)):
                r, c = rng.integers(0, h), rng.integers(0, w)
                rr, cc = rng.integers(1, 60), rng.integers(1, 60)
                m[r : r + rr, c : c + cc] = True
            masks[f"tumor_{i}"] = m
        key = list(masks)[-1]
        probs = rng.random(n_dets).astype(np.float32).astype(np.float64)  # float32 heatmaps
        probs[: n_dets // 10] = np.round(probs[: n_dets // 10], 2)
        dets[key] = np.column_stack(
            [probs, rng.integers(0, w * 32, n_dets), rng.integers(0, h * 32, n_dets)]
        )
    return masks, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_camelyon16_mode_reproduces_the_official_script_on_realistic_slides(seed: int) -> None:
    masks, dets = realistic_cohort(np.random.default_rng(seed), 9, (160, 220), 150)
    fps, sens, evals, score, _ = ref_evaluate(masks, dets, MPP)
    result = FROCEvaluator(progress=False).evaluate(
        {
            k: None if m is None else Raster(m, 32, (220 * 32, 160 * 32), mpp=MPP)
            for k, m in masks.items()
        },
        dets,
    )
    np.testing.assert_array_equal(result.fps_per_image, fps)
    np.testing.assert_array_equal(result.sensitivity, sens)
    np.testing.assert_array_equal(result.eval_sensitivities, evals)
    assert result.score == score
    assert 0 < result.score < 1 and result.n_lesions > 5


def ref_strict(
    masks: dict[str, Any], detections: dict[str, Any], resolution: float, level: int = 5
) -> tuple[Any, Any, float]:
    """The strict protocol, written plainly: float64 slots, every threshold, no 0 slots."""
    fps: list[float] = []
    hits: list[float] = []
    n_lesions = 0
    for case, mask in masks.items():
        d = detections[case]
        if mask is None:
            fps.extend(float(p) for p in d[:, 0])
            continue
        em = ref_evaluation_mask(mask, resolution, level)
        itc = ref_itc_list(em, resolution, level)
        best = {label: 0.0 for label in range(1, int(em.max()) + 1) if label not in itc}
        n_lesions += len(best)
        for p, x, y in d:
            label = int(em[int(y) // 2**level, int(x) // 2**level])
            if label == 0:
                fps.append(float(p))
            elif label in best and p > best[label]:
                best[label] = float(p)
        hits.extend(p for p in best.values() if p > 0)
    curve_fps, curve_sens = [], []
    for t in sorted(set(fps + hits)):
        curve_fps.append(sum(p >= t for p in fps) / len(masks))
        curve_sens.append(sum(p >= t for p in hits) / n_lesions)
    f = np.array([*curve_fps, 0.0])
    s = np.array([*curve_sens, 0.0])
    return f, s, float(np.mean(np.interp([0.25, 0.5, 1, 2, 4, 8], f[::-1], s[::-1])))


@given(slide_cases(), SMALL_MPP)
def test_strict_mode_equals_a_plain_implementation(case: Any, mpp: float) -> None:
    masks, dets = case
    assume(has_lesion(masks, mpp))
    fps, sens, score = ref_strict(masks, dets, mpp)
    result = froc(masks, dets, mpp=mpp, protocol="strict")
    np.testing.assert_array_equal(result.fps_per_image, fps)
    np.testing.assert_array_equal(result.sensitivity, sens)
    assert result.score == score


@given(slide_cases(), SMALL_MPP)
def test_evaluation_mask_and_itc_equal_the_official_computation(case: Any, mpp: float) -> None:
    masks, _ = case
    for m in masks.values():
        if m is None:
            continue
        ref = ref_evaluation_mask(m, mpp, 5)
        ours = evaluation_mask(m, mpp=mpp)
        np.testing.assert_array_equal(ours, ref)
        assert itc_labels(ours, mpp=mpp).tolist() == ref_itc_list(ref, mpp, 5)


def test_itc_decision_at_the_exact_threshold_follows_scikit_image() -> None:
    # A 1-px-wide bar of length L has major axis sqrt(L**2 - 1) (uniform rod); choose mpp so
    # the ITC threshold 275 / (mpp * 32) equals that exactly for L = 10.
    bar = np.zeros((5, 14), np.int32)
    bar[2, 2:12] = 1
    major = measure.regionprops(bar)[0].axis_major_length
    for mpp in (275 / (major * 32), np.nextafter(275 / (major * 32), 0)):
        threshold = 275 / (mpp * 32)
        assert itc_labels(bar, mpp=mpp).tolist() == ([1] if major < threshold else [])


@given(slide_cases(), SMALL_MPP, st.sampled_from(["camelyon16", "strict"]))
def test_froc_curve_is_monotone(case: Any, mpp: float, protocol: str) -> None:
    masks, dets = case
    assume(has_lesion(masks, mpp))
    r = froc(masks, dets, mpp=mpp, protocol=protocol)  # type: ignore[arg-type]
    assert np.all(np.diff(r.fps_per_image) <= 0)
    assert np.all(np.diff(r.sensitivity) <= 0)
    assert np.all(np.diff(r.thresholds) > 0)
    assert r.fps_per_image[-1] == 0 and r.sensitivity[-1] == 0
    probs = np.concatenate([d[:, 0] for d in dets.values()])
    if protocol == "strict" or not np.any((probs > 0) & (np.float32(probs) == 0)):
        assert 0 <= r.score <= 1 and np.all((r.sensitivity >= 0) & (r.sensitivity <= 1))
    # else: the official script's float32 underflow, reproduced: a threshold p > 0 that is 0
    # in float32 counts every missed lesion (0 slot) as detected.


@given(slide_cases(), SMALL_MPP, st.data())
def test_strict_adding_a_hit_inside_a_missed_lesion_never_lowers_the_score(
    case: Any, mpp: float, data: st.DataObject
) -> None:
    masks, dets = case
    assume(has_lesion(masks, mpp))
    before = froc(masks, dets, mpp=mpp, protocol="strict")
    missed = [
        (s.slide_id, label)
        for s in before.slides
        for label, i in zip(s.lesion_labels, s.lesion_detection, strict=True)
        if i < 0
    ]
    assume(missed)
    sid, label = data.draw(st.sampled_from(missed))
    labels = evaluation_mask(masks[sid], mpp=mpp)
    rows, cols = np.nonzero(labels == label)
    k = data.draw(st.integers(0, rows.size - 1))
    p = data.draw(PROBS)
    new = dict(dets)
    new[sid] = np.vstack([dets[sid], [[p, cols[k] * 32 + 5, rows[k] * 32 + 7]]])
    after = froc(masks, new, mpp=mpp, protocol="strict")
    assert after.score >= before.score - 1e-12


@given(slide_cases(), SMALL_MPP, st.randoms(use_true_random=False))
def test_slide_order_does_not_matter(case: Any, mpp: float, random: Any) -> None:
    masks, dets = case
    assume(has_lesion(masks, mpp))
    keys = list(masks)
    random.shuffle(keys)
    a = froc(masks, dets, mpp=mpp)
    b = froc({k: masks[k] for k in keys}, {k: dets[k] for k in reversed(keys)}, mpp=mpp)
    np.testing.assert_array_equal(a.fps_per_image, b.fps_per_image)
    np.testing.assert_array_equal(a.sensitivity, b.sensitivity)
    assert a.score == b.score


@given(slide_cases(), SMALL_MPP, st.integers(0, 5), st.integers(0, 5))
def test_translating_masks_and_detections_by_evaluation_pixels(
    case: Any, mpp: float, dr: int, dc: int
) -> None:
    masks, dets = case
    # Lesions away from the border (the dilation is clipped there), then moved.
    margin = 6  # > the dilation radius for these mpp values

    def move(by_r: int, by_c: int) -> tuple[dict[str, Any], dict[str, Any]]:
        pad = ((margin + by_r, margin), (margin + by_c, margin))
        return (
            {k: None if m is None else np.pad(m, pad) for k, m in masks.items()},
            {
                k: d + np.array([0, (margin + by_c) * 32, (margin + by_r) * 32])
                for k, d in dets.items()
            },
        )

    # Whether a region is an ITC depends on its dilation, which the border no longer clips.
    assume(has_lesion(move(0, 0)[0], mpp))
    a = froc(*move(0, 0), mpp=mpp)
    b = froc(*move(dr, dc), mpp=mpp)
    np.testing.assert_array_equal(a.fps_per_image, b.fps_per_image)
    np.testing.assert_array_equal(a.sensitivity, b.sensitivity)
    assert a.score == b.score


# =====================================================================================
# FROC: bad input
# =====================================================================================


def test_detection_outside_the_mask_is_a_clear_error() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    with pytest.raises(MetricsError, match=r"slide 's': detection 1 .*outside the 60x60 mask"):
        froc({"s": m}, {"s": np.array([det(0.5, 1, 1), [0.5, 60 * 32, 10]])}, mpp=MPP)
    with pytest.raises(MetricsError, match="negative"):
        froc({"s": m}, {"s": np.array([[0.5, -1, 10]])}, mpp=MPP)
    with pytest.raises(MetricsError, match="negative"):  # also on normal slides
        froc({"s": m, "n": None}, {"s": np.zeros((0, 3)), "n": np.array([[0.5, 3, -4]])}, mpp=MPP)


def test_empty_detection_lists() -> None:
    m = square(60, 60, (10, 50, 10, 50))
    r = froc({"s": m, "n": None}, {"s": np.zeros((0, 3)), "n": []}, mpp=MPP)
    # Only the missed lesion's 0 slot: skipped; the curve is the final point alone.
    assert r.fps_per_image.tolist() == [0.0] and r.sensitivity.tolist() == [0.0]
    assert r.score == 0.0
    assert r.slide("s").lesion_detection.tolist() == [-1]
    strict = froc({"s": m, "n": None}, {"s": np.zeros((0, 3)), "n": []}, mpp=MPP, protocol="strict")
    assert strict.score == 0.0 and strict.thresholds.tolist() == [np.inf]


def test_tumor_mask_without_tumor_pixels(caplog: pytest.LogCaptureFixture) -> None:
    empty = np.zeros((30, 30), bool)
    lesion = square(60, 60, (10, 50, 10, 50))
    with caplog.at_level("WARNING", logger="cervixwsi.metrics"):
        r = froc(
            {"e": empty, "t": lesion},
            {"e": np.array([[0.4, 10, 10]]), "t": np.array([det(0.9, 30, 30)])},
            mpp=MPP,
            protocol="strict",
        )
    assert "no tumor pixels" in caplog.text
    assert r.slide("e").is_false_positive.tolist() == [True]
    assert r.n_lesions == 1
    with pytest.raises(MetricsError, match="none of the 1 slides has a lesion"):
        froc({"e": empty}, {"e": np.array([[0.4, 10, 10]])}, mpp=MPP)


@pytest.mark.parametrize(
    ("masks", "dets", "kwargs", "match"),
    [
        ({"a": None}, {"b": []}, {}, "same slides"),
        ({"a": np.ones((4, 4), np.uint8)}, {"a": []}, {}, "bool array.*== 255"),
        ({"a": np.ones((4, 4), bool)}, {"a": [[0.5, 1.5, 3]]}, {}, "non-integer"),
        ({"a": np.ones((4, 4), bool)}, {"a": [[np.nan, 1, 3]]}, {}, "not finite"),
        ({"a": np.ones((4, 4), bool)}, {"a": [[-0.1, 1, 3]]}, {}, ">= 0"),
        ({"a": np.ones((4, 4), bool)}, {"a": [[0.1, 1]]}, {}, r"\(N, 3\)"),
        ({}, {}, {}, "no slides"),
    ],
)
def test_froc_bad_input(masks: Any, dets: Any, kwargs: Any, match: str) -> None:
    kwargs = {"mpp": MPP, **kwargs}
    with pytest.raises(MetricsError, match=match):
        froc(masks, dets, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "official"}, "froc.protocol must be one of 'camelyon16', 'strict'"),
        ({"level": -1}, r"froc\.level must be an integer >= 0, got -1"),
        ({"level": 5.0}, r"froc\.level must be an integer"),
        ({"level": True}, r"froc\.level must be an integer"),
        ({"mpp": 0.0}, r"froc\.mpp must be a finite number > 0, got 0\.0"),
        ({"mpp": np.inf}, r"froc\.mpp"),
    ],
)
def test_froc_bad_parameters(kwargs: Any, match: str) -> None:
    kwargs = {"mpp": MPP, **kwargs}
    with pytest.raises(ParameterError, match=match):
        froc({"a": np.ones((4, 4), bool)}, {"a": []}, **kwargs)
    assert froc({"a": np.ones((40, 40), bool)}, {"a": []}, mpp=MPP, level=np.int64(5)).level == 5


def test_evaluation_mask_and_itc_labels_check_their_parameters() -> None:
    m = np.ones((4, 4), bool)
    with pytest.raises(ParameterError, match=r"evaluation_mask\.level"):
        evaluation_mask(m, mpp=MPP, level=-2)
    with pytest.raises(ParameterError, match=r"itc_labels\.mpp"):
        itc_labels(evaluation_mask(m, mpp=MPP), mpp=-1.0)


# =====================================================================================
# Detection CSVs
# =====================================================================================


def test_csv_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    dets = np.column_stack([rng.random(50), rng.integers(0, 10**6, 50), rng.integers(0, 10**6, 50)])
    path = write_detections_csv(tmp_path / "Test_001.csv", dets)
    np.testing.assert_array_equal(read_detections_csv(path), dets)
    assert path.read_text().splitlines()[0].count(",") == 2


def test_csv_reads_what_the_official_parser_reads(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("\ufeff0.5, 10,20\n\n1e-3,+3,4\r\n1,0,0")
    assert read_detections_csv(p).tolist() == [[0.5, 10, 20], [0.001, 3, 4], [1.0, 0, 0]]
    (tmp_path / "empty.csv").write_text("")
    assert read_detections_csv(tmp_path / "empty.csv").shape == (0, 3)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0.5,10.5,20\n", r"line 1: x coordinate '10.5' is not an integer"),
        ("0.5,10,20\n0.3,4,2e3\n", r"line 2: y coordinate '2e3' is not an integer"),
        ("0.5,10,20\n0.7,3\n", r"line 2: expected 3 .* got 2"),  # truncated
        ("prob,x,y\n0.5,1,2\n", r"line 1: probability 'prob' is not a number"),
        ("nan,1,2\n", "finite and >= 0"),
        ("0.5,1,2,9\n", "got 4"),
    ],
)
def test_csv_malformed_lines(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(MetricsError, match=match) as info:
        read_detections_csv(p)
    assert "bad.csv" in str(info.value)


def test_csv_write_errors(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"cannot write detections CSV .*no_such_dir"):
        write_detections_csv(tmp_path / "no_such_dir" / "a.csv", [[0.5, 1, 2]])
    with pytest.raises(MetricsError, match="non-integer"):
        write_detections_csv(tmp_path / "a.csv", [[0.5, 1.5, 2]])
    assert not (tmp_path / "a.csv").exists()


def test_csv_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"cannot read.*nope\.csv"):
        read_detections_csv(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(MetricsError, match="not a UTF-8"):
        read_detections_csv(tmp_path / "bin.csv")


# =====================================================================================
# FROCEvaluator over Rasters and CSVs
# =====================================================================================


def test_evaluator_resamples_like_reading_level5_of_an_asap_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    width, height = 64 * 32 + 17, 48 * 32 + 31  # partial last evaluation pixels
    level0 = np.zeros((height, width), bool)
    for _ in range(6):
        y, x = rng.integers(0, height - 600), rng.integers(0, width - 600)
        level0[y : y + rng.integers(20, 600), x : x + rng.integers(20, 600)] = True
    level5 = level0[::32, ::32][: height // 32, : width // 32]  # ASAP: top-left, floor size
    ys, xs = rng.integers(0, (height // 32) * 32, 40), rng.integers(0, (width // 32) * 32, 40)
    dets = np.column_stack([rng.random(40).round(2), xs, ys])
    write_detections_csv(tmp_path / "t.csv", dets)
    expected = froc({"t": level5, "n": None}, {"t": dets, "n": dets[:5]}, mpp=MPP)
    # Ground truth at level 0, at downsample 8 (mask made from the level-0 one) and as CSV.
    down8 = Raster(level0[::8, ::8], 8, (width, height), mpp=MPP)
    assert np.array_equal(down8.array[::4, ::4][: height // 32, : width // 32], level5)
    evaluator = FROCEvaluator(progress=False)
    for gt in (Raster(level0, 1, (width, height), mpp=MPP), down8):
        got = evaluator.evaluate({"t": gt, "n": None}, {"t": tmp_path / "t.csv", "n": dets[:5]})
        np.testing.assert_array_equal(got.fps_per_image, expected.fps_per_image)
        np.testing.assert_array_equal(got.sensitivity, expected.sensitivity)
        assert got.score == expected.score
    labels = evaluator.evaluation_mask(down8)
    np.testing.assert_array_equal(labels, evaluation_mask(level5, mpp=MPP))


def test_evaluator_takes_annotations_rasterised_at_the_evaluation_level() -> None:
    from cervixwsi.annotations import Annotation, AnnotationSet, rasterize

    dims = (60 * 32 + 5, 50 * 32)
    lesion = Annotation(np.array([[320, 320], [1600, 320], [1600, 1300], [320, 1300]]))
    hole = Annotation(np.array([[640, 640], [900, 640], [900, 900]]), label="exclusion")
    cells = Annotation(np.array([[1860, 20], [1900, 20], [1900, 60], [1860, 60]]))  # 10 µm
    annotations = AnnotationSet([lesion, hole, cells])
    mask = rasterize(annotations, (50, 60), 32, slide_dimensions=dims).array
    assert mask.shape == (50, 60) and mask.sum() > 500
    dets = {"a": np.array([[0.8, 1000, 1000], [0.6, 1872, 48], [0.4, 100, 1500]]), "n": []}
    expected = froc({"a": mask, "n": None}, dets, mpp=MPP)
    got = FROCEvaluator(progress=False).evaluate(
        {"a": annotations, "n": None}, dets, mpp=MPP, slide_dimensions={"a": dims}
    )
    np.testing.assert_array_equal(got.sensitivity, expected.sensitivity)
    np.testing.assert_array_equal(got.fps_per_image, expected.fps_per_image)
    s = got.slide("a")
    assert s.is_true_positive.tolist() == [True, False, False]
    assert s.in_itc.tolist() == [False, True, False] and s.is_false_positive.tolist()[2]
    assert isinstance(annotations, MaskSource)  # duck typing: metrics never imports annotations
    with pytest.raises(MetricsError, match=r"AnnotationSet.*slide_dimensions"):
        FROCEvaluator(progress=False).evaluate({"a": annotations}, {"a": []}, mpp=MPP)
    with pytest.raises(MetricsError, match=r"to_mask.*got list"):
        FROCEvaluator(progress=False).evaluate({"a": [lesion]}, {"a": []}, mpp=MPP)  # type: ignore[dict-item]


class _Box:
    """Ground truth that is not an AnnotationSet: a rectangle of level-0 pixels."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int, answer: Any = None) -> None:
        self.bounds = (x0, y0, x1, y1)
        self.answer = answer
        self.grids: list[Raster] = []

    def to_mask(self, grid: Raster) -> Raster:
        self.grids.append(grid)
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        xc, yc = grid.pixel_centers()
        x0, y0, x1, y1 = self.bounds
        inside = ((yc >= y0) & (yc < y1))[:, None] & ((xc >= x0) & (xc < x1))[None, :]
        return grid.with_array(inside)


def test_evaluator_takes_any_mask_source_drawn_on_the_evaluation_grid() -> None:
    dims = (64 * 32 + 10, 48 * 32)
    box = _Box(320, 320, 1600, 1300)
    dets = {"a": np.array([[0.8, 1000, 1000], [0.4, 100, 1500]]), "n": []}
    got = FROCEvaluator(progress=False).evaluate(
        {"a": box, "n": None}, dets, mpp=MPP, slide_dimensions={"a": dims}
    )
    (grid,) = box.grids
    assert grid.shape == (48, 64) and grid.downsample == 32 and grid.slide_dimensions == dims
    assert grid.mpp == MPP and grid.dtype == bool and not grid.array.any()
    mask = np.zeros((48, 64), bool)
    mask[10:41, 10:50] = True  # centres (c + 0.5) * 32 in [320, 1600) and [320, 1300)
    expected = froc({"a": mask, "n": None}, dets, mpp=MPP)
    np.testing.assert_array_equal(got.sensitivity, expected.sensitivity)
    np.testing.assert_array_equal(got.fps_per_image, expected.fps_per_image)
    assert got.slide("a").is_true_positive.tolist() == [True, False]
    # A mask over another slide, or no Raster at all, is refused with the slide named.
    for answer, match in (
        (Raster(np.zeros((4, 4), bool), 32, (128, 128)), r"slide 'a': _Box.to_mask.*128, 128"),
        (np.zeros((48, 64), bool), r"slide 'a': _Box.to_mask.*got a ndarray"),
    ):
        with pytest.raises(MetricsError, match=match):
            FROCEvaluator(progress=False).evaluate(
                {"a": _Box(0, 0, 1, 1, answer)}, {"a": []}, mpp=MPP, slide_dimensions={"a": dims}
            )
    # A mask at another downsample over the same slide is resampled like any Raster.
    fine = Raster(np.pad(np.kron(mask, np.ones((4, 4), bool)), ((0, 0), (0, 2))), 8, dims, mpp=MPP)
    again = FROCEvaluator(progress=False).evaluate(
        {"a": _Box(0, 0, 1, 1, fine), "n": None}, dets, mpp=MPP, slide_dimensions={"a": dims}
    )
    assert again.score == expected.score


def _cervixwsi_imports(package: Path) -> set[str]:
    """Every cervixwsi module a package's source imports (lazy imports in functions too)."""
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "cervixwsi"}


def test_metrics_depends_only_on_the_bottom_layer() -> None:
    package = Path(cervixwsi.metrics.__file__).parent
    imported = _cervixwsi_imports(package)
    bottom = {"cervixwsi.errors", "cervixwsi.geometry", "cervixwsi._validate", "cervixwsi._io"}
    above = {m for m in imported if m not in bottom and not m.startswith("cervixwsi.metrics")}
    assert not above, f"cervixwsi.metrics imports {sorted(above)}"
    code = (
        "import sys, cervixwsi.metrics; print(sorted(m for m in sys.modules if 'annotations' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_detections_csv_is_written_atomically_with_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_detections_csv(tmp_path / "a.csv", [[0.5, 1, 2]])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]  # no temporary file left


def test_evaluator_errors_name_the_slide() -> None:
    gt = Raster(np.ones((10, 10), bool), 32, (320, 330), mpp=MPP)
    ev = FROCEvaluator(progress=False)
    with pytest.raises(MetricsError, match=r"slide 'a'.*outside the slide of 320x330"):
        ev.evaluate({"a": gt}, {"a": np.array([[0.5, 320, 3]])})
    with pytest.raises(MetricsError, match=r"slide 'a'.*outside the 10x10 mask"):
        ev.evaluate({"a": gt}, {"a": np.array([[0.5, 3, 325]])})  # in the partial last row
    no_mpp = Raster(np.ones((10, 10), bool), 32, (320, 320))
    with pytest.raises(MetricsError, match=r"slide 'b'.*no mpp"):
        ev.evaluate({"b": no_mpp}, {"b": []})
    assert ev.evaluate({"b": no_mpp}, {"b": [[0.5, 3, 3]]}, mpp=2.0).n_lesions == 1
    with pytest.raises(MetricsError, match="bool Raster"):
        ev.evaluate({"a": gt.with_array(np.ones((10, 10)))}, {"a": []})
    with pytest.raises(MetricsError, match="smaller than one evaluation pixel"):
        ev.evaluate({"c": Raster(np.ones((1, 1), bool), 16, (16, 16), mpp=MPP)}, {"c": []})
    with pytest.raises(ParameterError, match=r"FROCEvaluator\.protocol"):
        FROCEvaluator(protocol="x", progress=False).evaluate(  # type: ignore[arg-type]
            {"a": gt}, {"a": []}
        )
    with pytest.raises(ParameterError, match=r"FROCEvaluator\.level"):
        FROCEvaluator(level=-1, progress=False).evaluate({"a": gt}, {"a": []})
    with pytest.raises(ParameterError, match=r"FROCEvaluator\.evaluate mpp"):
        ev.evaluate({"a": gt}, {"a": []}, mpp=-0.25)


# =====================================================================================
# detect_lesions
# =====================================================================================


def test_detect_lesions_components_reports_each_components_maximum() -> None:
    p = np.zeros((6, 8))
    p[1, 1], p[1, 2], p[2, 3] = 0.6, 0.9, 0.7  # one 8-connected component
    p[4, 6], p[4, 7] = 0.8, 0.8  # a tie: the first in raster order
    p[0, 7] = 0.49  # below threshold
    p[5, 0] = np.nan
    heat = Raster(p, 256, (8 * 256 - 100, 6 * 256), mpp=0.25)
    d = detect_lesions(heat)
    assert d.tolist() == [[0.9, 2 * 256 + 128, 1 * 256 + 128], [0.8, 6 * 256 + 128, 4 * 256 + 128]]
    low = detect_lesions(heat, threshold=0.4)
    # The last column is clipped: its centre is in the middle of its 156 level-0 pixels.
    assert low[-1].tolist() == [0.49, 7 * 256 + 78, 128]


def test_result_lookup_and_detect_lesions_errors() -> None:
    r = froc({"s": square(60, 60, (10, 50, 10, 50))}, {"s": []}, mpp=MPP)
    assert r.slide_ids == ("s",)
    with pytest.raises(MetricsError, match="no slide 'x'"):
        r.slide("x")
    heat = Raster(np.zeros((2, 2)), 256, (512, 512), mpp=0.25)
    with pytest.raises(ParameterError, match=r"detect_lesions\.threshold"):
        detect_lesions(heat, threshold=np.nan)
    with pytest.raises(MetricsError, match="numeric"):
        detect_lesions(heat.with_array(np.array([["a", "b"], ["c", "d"]])))
    with pytest.raises(ParameterError, match=r"detect_lesions\.radius_um"):
        detect_lesions(heat, method="nms", radius_um=-1)
    assert detect_lesions(heat).shape == (0, 3)
    assert detect_lesions(heat, method="nms").shape == (0, 3)


def test_detect_lesions_nms_suppresses_within_the_radius() -> None:
    p = np.zeros((10, 10))
    p[2, 2], p[2, 4], p[2, 9], p[8, 8] = 0.9, 0.8, 0.7, 0.6
    p[5, 5] = p[5, 6] = 0.55  # a plateau: one detection
    heat = Raster(p, 100, (1000, 1000), mpp=0.5)  # 50 µm per heatmap pixel
    d = detect_lesions(heat, method="nms", radius_um=150, threshold=0.5)
    # (2,4) is 2 px = 100 µm from (2,2): suppressed; (2,9) 7 px away: kept.
    assert d[:, 0].tolist() == [0.9, 0.7, 0.6, 0.55]
    assert d[-1, 1:].tolist() == [550, 550]
    # Under one pixel of radius nothing is suppressed, not even the plateau's twin.
    small = detect_lesions(heat, method="nms", radius_um=40)
    assert small[:, 0].tolist() == [0.9, 0.8, 0.7, 0.6, 0.55, 0.55]
    with pytest.raises(MetricsError, match="mpp"):
        detect_lesions(Raster(p, 100, (1000, 1000)), method="nms")
    with pytest.raises(ParameterError, match=r"detect_lesions\.method"):
        detect_lesions(heat, method="peaks")  # type: ignore[arg-type]


def test_detections_from_a_heatmap_feed_froc() -> None:
    tumor = square(64, 64, (8, 40, 8, 40))
    heat = np.where(np.kron(tumor, np.ones((1, 1))), 0.9, 0.05)[::8, ::8]  # one px per 8
    heat[7, 7] = 0.8  # a false alarm far from the lesion
    raster = Raster(heat, 256, (64 * 32, 64 * 32), mpp=MPP)
    dets = detect_lesions(raster)
    r = froc({"s": tumor}, {"s": dets}, mpp=MPP, protocol="strict")
    assert r.slide("s").n_detected == 1 and r.slide("s").n_false_positives == 1


@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.floats(0, 1)
    ),
    st.sampled_from(["components", "nms"]),
)
def test_detect_lesions_properties(p: Any, method: str) -> None:
    heat = Raster(p, 64, (p.shape[1] * 64, p.shape[0] * 64), mpp=1.0)
    d = detect_lesions(heat, method=method, radius_um=100)  # type: ignore[arg-type]
    assert np.all(np.diff(d[:, 0]) <= 0) and np.all(d[:, 0] >= 0.5)
    assert np.array_equal(d[:, 1:], np.floor(d[:, 1:]))
    # Every detection is the value of the heatmap pixel it lies in.
    np.testing.assert_array_equal(heat.values_at(d[:, 1], d[:, 2]), d[:, 0])
    if method == "components":
        n = nd.label(p >= 0.5, structure=np.ones((3, 3)))[1]
        assert len(d) == n


def test_brute_force_reference_helpers_agree_with_itertools() -> None:
    """Sanity of the test's own DeLong reference: AUC = mean of psi over all pairs."""
    pos, neg = np.array([[0.2, 0.5, 0.5]]), np.array([[0.5, 0.1]])
    aucs, _ = brute_force_delong(pos, neg)
    pairs = list(itertools.product(pos[0], neg[0]))
    assert aucs[0] == sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / 6


def test_unreadable_lesions_are_ignored_as_itcs_are() -> None:
    # Three lesions of 390 µm (level 5): A wholly under an out-of-focus band, B 40 %
    # under it, C clear.  Ignoring A must equal evaluating without A and its detection.
    mask = np.zeros((200, 300), bool)
    mask[20:70, 20:70] = True  # A
    mask[20:70, 120:170] = True  # B
    mask[120:170, 120:170] = True  # C
    hidden = np.zeros_like(mask)
    hidden[5:85, 5:85] = True  # A and its evaluation rim
    hidden[5:85, 110:134] = True  # 40 % of B's evaluation region
    dims = (300 * 32, 200 * 32)
    dets = {
        "t": np.array(
            [
                [0.9, 45 * 32, 45 * 32],
                [0.5, 145 * 32, 45 * 32],
                [0.7, 145 * 32, 145 * 32],
                [0.8, 280 * 32, 180 * 32],
            ]
        ),
        "n": np.array([[0.6, 100, 100]]),
    }
    # strict: the official protocol adds a threshold for each ITC's empty slot
    got = FROCEvaluator(protocol="strict", progress=False).evaluate(
        {"t": Raster(mask, 32, dims, mpp=MPP), "n": None},
        dets,
        unreadable={"t": Raster(hidden, 32, dims, mpp=MPP), "n": None},
    )
    without_a = mask.copy()
    without_a[20:70, 20:70] = False
    expected = froc(
        {"t": without_a, "n": None},
        {"t": dets["t"][1:], "n": dets["n"]},
        mpp=MPP,
        protocol="strict",
    )
    assert got.n_lesions == expected.n_lesions == 2
    np.testing.assert_array_equal(got.fps_per_image, expected.fps_per_image)
    np.testing.assert_array_equal(got.sensitivity, expected.sensitivity)
    assert got.score == expected.score
    t = got.slide("t")
    assert not t.is_true_positive[0] and not t.is_false_positive[0] and t.in_itc[0]
    # without the unreadable regions, A counts (and its detection is its hit)
    plain = FROCEvaluator(progress=False).evaluate(
        {"t": Raster(mask, 32, dims, mpp=MPP), "n": None}, dets
    )
    assert plain.n_lesions == 3 and plain.slide("t").is_true_positive[0]


def test_unreadable_regions_must_match_their_slide() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    gt = {"t": Raster(mask, 32, (640, 640), mpp=MPP)}
    dets = {"t": np.zeros((0, 3))}
    evaluator = FROCEvaluator(progress=False)
    with pytest.raises(MetricsError, match="without ground truth"):
        evaluator.evaluate(gt, dets, unreadable={"x": Raster(mask, 32, (640, 640))})
    with pytest.raises(MetricsError, match="bool Raster"):
        evaluator.evaluate(
            gt, dets, unreadable={"t": Raster(mask.astype(np.uint8), 32, (640, 640))}
        )
    with pytest.raises(MetricsError, match="over a slide of"):
        evaluator.evaluate(gt, dets, unreadable={"t": Raster(mask, 16, (320, 320))})
