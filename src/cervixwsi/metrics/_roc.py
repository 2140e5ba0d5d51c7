"""Slide-level ROC analysis: curves, AUC, confidence intervals, paired DeLong test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cervixwsi._validate import check_choice, check_int, check_positive_int, check_real
from cervixwsi.errors import MetricsError

__all__ = [
    "AucCI",
    "AucComparison",
    "RocCurve",
    "auc_ci",
    "compare_auc",
    "format_p_value",
    "roc_auc",
    "roc_curve",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RocCurve:
    """A receiver operating characteristic curve.

    Attributes
    ----------
    fpr, tpr : numpy.ndarray
        False- and true-positive rates, increasing, from ``(0, 0)`` to ``(1, 1)``.
    thresholds : numpy.ndarray
        Decreasing score thresholds; point ``i`` predicts positive when
        ``score >= thresholds[i]`` (the first is ``inf``, as in scikit-learn).
    auc : float
        Area under the curve.
    """

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray
    auc: float


@dataclass(frozen=True, slots=True)
class AucCI:
    """An AUC with a two-sided confidence interval.

    Attributes
    ----------
    auc : float
        The AUC of the scores given.
    low, high : float
        The interval's bounds, within ``[0, 1]``.
    alpha : float
        ``1 - confidence``: ``0.05`` is a 95% interval.
    method : {"delong", "bootstrap"}
        How the interval was computed.
    se : float
        The AUC's standard error (DeLong's, or the standard deviation of the
        bootstrap AUCs).
    """

    auc: float
    low: float
    high: float
    alpha: float
    method: str
    se: float


@dataclass(frozen=True, slots=True)
class AucComparison:
    """Paired DeLong test of two AUCs measured on the same cases.

    Attributes
    ----------
    auc_a, auc_b : float
        The two AUCs.
    difference : float
        ``auc_a - auc_b``.
    se : float
        Standard error of the difference (accounts for the correlation of
        the two models' scores on the same slides).
    z : float
        ``difference / se``.
    p_value : float
        Two-sided p-value of ``H0: AUC_a == AUC_b``.
    low, high : float
        ``1 - alpha`` confidence interval of the difference.
    alpha : float
        ``1 - confidence`` of the interval.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    low: float
    high: float
    alpha: float


# --- validation -----------------------------------------------------------------------


def _as_labels(y_true: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise MetricsError(f"y_true must be 1-D (one label per slide), got shape {y.shape}")
    if y.dtype == np.bool_:
        labels = y
    else:
        if y.dtype.kind not in "iuf":
            raise MetricsError(f"y_true must hold 0/1 or booleans, got dtype {y.dtype}")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise MetricsError(
                f"y_true must hold only 0 and 1 (or booleans), got {y[bad][0]!r} "
                f"at index {int(np.argmax(bad))}"
            )
        labels = y == 1
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        only = "positive" if n_pos else "negative"
        raise MetricsError(
            f"y_true has only {only} cases ({labels.size} of them): ROC AUC needs both classes"
        )
    return labels


def _as_scores(scores: npt.ArrayLike, n: int, name: str = "scores") -> FloatArray:
    s = np.asarray(scores)
    if s.ndim != 1:
        raise MetricsError(f"{name} must be 1-D (one score per slide), got shape {s.shape}")
    if s.dtype.kind not in "biuf":
        raise MetricsError(f"{name} must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if s.size != n:
        raise MetricsError(f"{name} has {s.size} values but y_true has {n}: lengths must match")
    bad = ~np.isfinite(s)
    if bad.any():
        raise MetricsError(
            f"{name} must be finite, got {s[bad][0]!r} at index {int(np.argmax(bad))} "
            f"({int(bad.sum())} non-finite values)"
        )
    return s


def _check_alpha(alpha: float, owner: str) -> float:
    """``alpha`` in ``(0, 1)``: 0.05 for a 95% interval."""
    return check_real(alpha, f"{owner}.alpha", min=0, max=1, min_open=True, max_open=True)


# --- ROC, AUC ------------------------------------------------------------------------


def roc_curve(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, drop_intermediate: bool = True
) -> RocCurve:
    """The ROC curve and its AUC, as :func:`sklearn.metrics.roc_curve` computes them.

    Parameters
    ----------
    y_true : array-like (n,)
        1 (or ``True``) for positive slides, 0 for negative ones.  Both
        classes must be present.
    scores : array-like (n,)
        Finite scores, higher meaning more likely positive.
    drop_intermediate : bool
        Drop collinear points that do not change the curve's shape
        (scikit-learn's default).

    Returns
    -------
    RocCurve

    Raises
    ------
    MetricsError
        One class only, non-finite scores, labels other than 0/1, or lengths
        that differ.

    Examples
    --------
    >>> from cervixwsi.metrics import roc_curve
    >>> curve = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> curve.auc
    0.75
    >>> curve.tpr.tolist()
    [0.0, 0.5, 0.5, 1.0, 1.0]
    """
    from sklearn.metrics import auc as _auc
    from sklearn.metrics import roc_curve as _roc_curve

    labels = _as_labels(y_true)
    s = _as_scores(scores, labels.size)
    fpr, tpr, thresholds = _roc_curve(labels, s, drop_intermediate=drop_intermediate)
    return RocCurve(
        fpr=np.asarray(fpr, np.float64),
        tpr=np.asarray(tpr, np.float64),
        thresholds=np.asarray(thresholds, np.float64),
        auc=float(_auc(fpr, tpr)),
    )


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`), ties counting half.

    Parameters
    ----------
    y_true : array-like (n,)
        1 (or ``True``) for positive slides, 0 for negative ones.
    scores : array-like (n,)
        Finite scores, higher meaning more likely positive.

    Returns
    -------
    float

    Raises
    ------
    MetricsError
        One class only, non-finite scores, labels other than 0/1, or lengths
        that differ.

    Examples
    --------
    >>> from cervixwsi.metrics import roc_auc
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1], [0.5, 0.5])
    0.5
    """
    from sklearn.metrics import roc_auc_score

    labels = _as_labels(y_true)
    s = _as_scores(scores, labels.size)
    return float(roc_auc_score(labels, s))


# --- DeLong (Sun & Xu 2014) ----------------------------------------------------------


def _midranks(values: FloatArray) -> FloatArray:
    """1-based ranks of each row's values, ties getting the mean of their ranks."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(values, axis=-1, method="average"), np.float64)


def _delong(positives: FloatArray, negatives: FloatArray) -> tuple[FloatArray, FloatArray]:
    """AUCs and their covariance for ``k`` models (rows) by the fast DeLong method.

    ``positives`` is ``(k, m)``, ``negatives`` is ``(k, n)``.  Uses the midrank
    formulation of Sun & Xu (2014): the structural components are
    ``V10_i = (rank of x_i among all - rank among positives) / n`` and
    ``V01_j = 1 - (rank of y_j among all - rank among negatives) / m``.
    """
    m, n = positives.shape[1], negatives.shape[1]
    tx = _midranks(positives)
    ty = _midranks(negatives)
    tz = _midranks(np.concatenate([positives, negatives], axis=1))
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


def _split(labels: npt.NDArray[np.bool_], *scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        raise MetricsError(
            f"DeLong's variance needs at least 2 positive and 2 negative cases, got {m} and {n}"
        )
    stacked = np.vstack(scores)
    return stacked[:, labels], stacked[:, ~labels]


def _norm_ppf(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def auc_ci(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    method: Literal["delong", "bootstrap"] = "delong",
    alpha: float = 0.05,
    n_bootstrap: int = 2000,
    seed: int | np.random.Generator | None = None,
) -> AucCI:
    """The AUC with a ``1 - alpha`` confidence interval.

    Parameters
    ----------
    y_true : array-like (n,)
        1 (or ``True``) for positive slides, 0 for negative ones.
    scores : array-like (n,)
        Finite scores, higher meaning more likely positive.
    method : {"delong", "bootstrap"}
        ``"delong"``: ``auc ± z * se`` with DeLong's standard error (fast
        midrank algorithm of Sun & Xu 2014), clipped to ``[0, 1]``.
        ``"bootstrap"``: percentile interval of the AUCs of ``n_bootstrap``
        stratified resamples (positives and negatives resampled separately,
        so every resample keeps the class sizes).
    alpha : float
        ``1 - confidence``; 0.05 gives a 95% interval.
    n_bootstrap : int
        Number of bootstrap resamples (``method="bootstrap"`` only).
    seed : int, numpy.random.Generator or None
        Randomness of the bootstrap.  ``None`` draws fresh entropy; give an
        int for a reproducible interval.

    Returns
    -------
    AucCI

    Raises
    ------
    MetricsError
        Invalid labels or scores (see :func:`roc_auc`), fewer than 2 cases of
        a class for DeLong.
    ParameterError
        A bad ``alpha``, ``n_bootstrap`` or ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> from cervixwsi.metrics import auc_ci
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> s = np.array([0.1, 0.3, 0.2, 0.6, 0.5, 0.7, 0.9, 0.8])
    >>> ci = auc_ci(y, s)
    >>> ci.auc, round(ci.low, 3), ci.high
    (0.9375, 0.764, 1.0)
    >>> boot = auc_ci(y, s, method="bootstrap", n_bootstrap=500, seed=0)
    >>> boot.low <= boot.auc <= boot.high
    True
    """
    labels = _as_labels(y_true)
    s = _as_scores(scores, labels.size)
    a = _check_alpha(alpha, "auc_ci")
    check_choice(method, "auc_ci.method", ("delong", "bootstrap"))
    if method == "delong":
        pos, neg = _split(labels, s)
        aucs, cov = _delong(pos, neg)
        auc, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
        half = _norm_ppf(1 - a / 2) * se
        return AucCI(auc, max(auc - half, 0.0), min(auc + half, 1.0), a, "delong", se)
    resamples = check_positive_int(n_bootstrap, "auc_ci.n_bootstrap")
    rng = np.random.default_rng(seed)
    pos, neg = s[labels], s[~labels]
    m, n = pos.size, neg.size
    aucs = np.empty(resamples)
    # Resample in chunks so memory stays small for large cohorts.
    chunk = max(1, 2_000_000 // (m + n))
    for start in range(0, aucs.size, chunk):
        b = min(chunk, aucs.size - start)
        bp = pos[rng.integers(0, m, size=(b, m))]
        bn = neg[rng.integers(0, n, size=(b, n))]
        ranks = _midranks(np.concatenate([bp, bn], axis=1))
        aucs[start : start + b] = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    auc = roc_auc(labels, s)
    low, high = np.quantile(aucs, [a / 2, 1 - a / 2])
    se = float(aucs.std(ddof=1)) if aucs.size > 1 else 0.0
    return AucCI(auc, float(low), float(high), a, "bootstrap", se)


def compare_auc(
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    y_true: npt.ArrayLike,
    *,
    alpha: float = 0.05,
) -> AucComparison:
    """Paired DeLong test: do two models scored on the same slides differ in AUC?

    The variance of ``AUC_a - AUC_b`` is ``var_a + var_b - 2 cov_ab`` from
    DeLong's structural components, so the test uses the pairing (the same
    slides under both models), which makes it more powerful than comparing
    two independent intervals.

    Parameters
    ----------
    scores_a, scores_b : array-like (n,)
        The two models' scores for the same slides, in the same order.
    y_true : array-like (n,)
        1 (or ``True``) for positive slides, 0 for negative ones.
    alpha : float
        ``1 - confidence`` of the interval of the difference.

    Returns
    -------
    AucComparison

    Raises
    ------
    MetricsError
        Invalid labels or scores, lengths that differ, fewer than 2 cases of a
        class.
    ParameterError
        A bad ``alpha``.

    Examples
    --------
    >>> from cervixwsi.metrics import compare_auc, format_p_value
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> a = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    >>> b = [0.1, 0.6, 0.3, 0.75, 0.5, 0.7, 0.8, 0.2]
    >>> c = compare_auc(a, b, y)
    >>> c.auc_a, c.auc_b, c.difference
    (1.0, 0.625, 0.375)
    >>> round(c.p_value, 2)  # 8 slides: a large difference, not significant
    0.1
    >>> format_p_value(c.p_value)
    'p = 0.1003'
    """
    labels = _as_labels(y_true)
    sa = _as_scores(scores_a, labels.size, "scores_a")
    sb = _as_scores(scores_b, labels.size, "scores_b")
    a = _check_alpha(alpha, "compare_auc")
    pos, neg = _split(labels, sa, sb)
    aucs, cov = _delong(pos, neg)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    # With no variance, equal AUCs give z = 0 and different ones an infinite z.
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    from scipy.stats import norm

    p = float(2 * norm.sf(abs(z)))
    half = _norm_ppf(1 - a / 2) * se
    return AucComparison(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=diff,
        se=se,
        z=float(z),
        p_value=min(p, 1.0),
        low=diff - half,
        high=diff + half,
        alpha=a,
    )


def format_p_value(p: float, digits: int = 4) -> str:
    """A p-value as a report writes it: ``p = 0.0123``, or ``p < 0.0001`` below the last digit.

    ``f"p = {p:.4f}"`` prints a p-value of ``3e-9`` as ``p = 0.0000``, which reads as
    "exactly zero"; below ``10**-digits`` this gives ``p < 0.0001`` instead.

    Parameters
    ----------
    p : float
        The p-value, in ``[0, 1]`` (e.g. :attr:`AucComparison.p_value`).
    digits : int
        Decimal places (>= 1); the smallest value written is ``10**-digits``.

    Returns
    -------
    str
        ``"p = 0.0312"`` or ``"p < 0.0001"``.

    Raises
    ------
    ParameterError
        ``p`` outside ``[0, 1]`` or NaN, or ``digits`` not an integer >= 1.

    Examples
    --------
    >>> from cervixwsi.metrics import format_p_value
    >>> format_p_value(0.03123)
    'p = 0.0312'
    >>> format_p_value(3e-9)
    'p < 0.0001'
    >>> format_p_value(0.0004, digits=3)
    'p < 0.001'
    """
    value = check_real(p, "format_p_value.p", min=0, max=1)
    places = check_int(digits, "format_p_value.digits", min=1)
    smallest = 10.0**-places
    if value < smallest:
        return f"p < {smallest:.{places}f}"
    return f"p = {value:.{places}f}"
