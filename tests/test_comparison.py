"""cervixwsi.metrics.compare_models: several models on the same slides (Table 3)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from cervixwsi.errors import MetricsError, ParameterError
from cervixwsi.metrics import (
    EVAL_FPS,
    ModelComparison,
    compare_models,
    format_p_value,
    froc,
)

FloatArray = npt.NDArray[np.float64]


def direct_delong(
    scores: list[FloatArray], y: npt.NDArray[np.int64]
) -> tuple[FloatArray, FloatArray]:
    """AUCs and their covariance by DeLong's definition: the O(m n) kernel, no ranks."""
    pos = [s[y == 1] for s in scores]
    neg = [s[y == 0] for s in scores]
    m, n = len(pos[0]), len(neg[0])
    v10, v01 = [], []
    for p, q in zip(pos, neg, strict=True):
        psi = (p[:, None] > q[None, :]) + 0.5 * (p[:, None] == q[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    aucs = np.array([v.mean() for v in v10])
    s10 = np.cov(np.vstack(v10), ddof=1)
    s01 = np.cov(np.vstack(v01), ddof=1)
    return aucs, np.atleast_2d(s10 / m + s01 / n)


def cohort(seed: int = 0, n: int = 30) -> tuple[npt.NDArray[np.int64], dict[str, FloatArray]]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int64)
    return y, {
        "A": rng.normal(size=n) + 1.0 * y,
        "B": rng.normal(size=n) + 0.3 * y,
        "D": rng.normal(size=n) + 2.0 * y,
    }


def test_auc_and_interval_match_scikit_learn_and_a_direct_delong() -> None:
    y, scores = cohort()
    table = compare_models(scores, y, reference="D")
    assert table.models == ("A", "B", "D")
    aucs, cov = direct_delong(list(scores.values()), y)
    z = norm.ppf(0.975)
    for i, (name, s) in enumerate(scores.items()):
        row = table.row(name)
        assert row.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row.auc == pytest.approx(aucs[i], abs=1e-12)
        se = math.sqrt(cov[i, i])
        assert row.auc_se == pytest.approx(se, rel=1e-9)
        assert row.auc_low == pytest.approx(max(aucs[i] - z * se, 0.0), rel=1e-9)
        assert row.auc_high == pytest.approx(min(aucs[i] + z * se, 1.0), rel=1e-9)
        assert (row.n_slides, row.n_tumor, row.n_normal) == (30, 15, 15)
        assert row.ci_note == ""
    # The paired test: D against A and against B, from the direct covariance.
    d = 2
    for i, name in enumerate(("A", "B")):
        var = cov[d, d] + cov[i, i] - 2 * cov[d, i]
        expected = 2 * norm.sf(abs(aucs[d] - aucs[i]) / math.sqrt(var))
        assert table.row(name).p_value == pytest.approx(expected, rel=1e-9)
        assert table.row(name).p_note == ""
    reference = table.row("D")
    assert reference.p_value is None and reference.p_note == "the reference model"


def test_small_hand_checked_delong_case() -> None:
    # 2 tumor, 2 normal: A ranks one pair wrongly (AUC 3/4); worked out by hand:
    # psi = [[1, 1], [1, 0]] -> V10 = (1, 1/2), V01 = (1, 1/2); var = 1/8 / 2 + 1/8 / 2.
    y = np.array([1, 1, 0, 0])
    table = compare_models({"A": [0.9, 0.4, 0.3, 0.6]}, y)
    row = table.row("A")
    assert row.auc == 0.75
    assert row.auc_se == pytest.approx(math.sqrt(0.125), rel=1e-12)
    assert row.p_value is None and row.p_note == ""  # no reference, no test


def two_lesion_froc() -> object:
    """One tumor slide with two lesions (one hit at 0.9), one normal slide (an FP at 0.5)."""
    mask = np.zeros((128, 128), bool)
    mask[5:35, 5:35] = True
    mask[80:110, 80:110] = True
    detections = {"t": [[0.9, 640, 640]], "n": [[0.5, 100, 100]]}
    return froc({"t": mask, "n": None}, detections, mpp=0.243, protocol="strict")


def test_froc_columns_hand_checked() -> None:
    # Thresholds 0.9 (0 FP per slide, 1 of 2 lesions) and 0.5 (1 FP over 2 slides = 0.5 per
    # slide, still 1 of 2): the curve is flat at 0.5 from 0 FPs on, so every one of the six
    # sensitivities, and their mean, is 0.5.
    result = two_lesion_froc()
    table = compare_models(
        {"A": [0.1, 0.2, 0.8, 0.9], "D": [0.2, 0.1, 0.9, 0.8]},
        [0, 0, 1, 1],
        froc_by_model={"A": result},  # type: ignore[dict-item]
    )
    a, d = table.row("A"), table.row("D")
    assert a.froc == 0.5
    assert a.sensitivities == (0.5,) * 6
    assert (a.froc_slides, a.n_lesions) == (2, 2)
    assert d.froc is None and d.sensitivities is None and d.n_lesions is None
    assert table.eval_fps == EVAL_FPS


def test_a_model_against_itself_has_no_p_value_and_says_why() -> None:
    y, scores = cohort(1)
    table = compare_models({"D": scores["D"], "copy": scores["D"].copy()}, y, reference="D")
    row = table.row("copy")
    assert row.p_value is None
    assert "no variance" in row.p_note
    # compare_auc itself gives p = 1 for the pair: the table says "undefined" instead.
    assert "undefined" in row.p_note
    assert "–" in table.to_markdown().splitlines()[3]


def test_perfect_separation_gives_a_degenerate_interval_said_so() -> None:
    table = compare_models({"A": [0.1, 0.2, 0.8, 0.9]}, [0, 0, 1, 1])
    row = table.row("A")
    assert (row.auc, row.auc_low, row.auc_high, row.auc_se) == (1.0, 1.0, 1.0, 0.0)
    assert "degenerate" in row.ci_note


def test_fewer_than_two_slides_of_a_class_gives_no_interval_or_test() -> None:
    table = compare_models({"A": [0.1, 0.6, 0.8], "D": [0.2, 0.5, 0.9]}, [0, 1, 1], reference="D")
    row = table.row("A")
    assert row.auc_low is None and row.auc_high is None and row.auc_se is None
    assert "at least 2" in row.ci_note and "1 normal" in row.ci_note
    assert row.p_value is None and "at least 2" in row.p_note


@st.composite
def model_sets(draw: st.DrawFn) -> tuple[list[int], dict[str, list[float]], list[str], str]:
    n_pos = draw(st.integers(2, 8))
    n_neg = draw(st.integers(2, 8))
    y = [1] * n_pos + [0] * n_neg
    names = draw(st.lists(st.sampled_from("ABCDEFG"), min_size=1, max_size=5, unique=True))
    value = st.integers(0, 10).map(lambda v: v / 10)  # coarse: ties happen
    scores = {name: draw(st.lists(value, min_size=len(y), max_size=len(y))) for name in names}
    order = draw(st.permutations(names))
    return y, scores, list(order), draw(st.sampled_from(names))


@given(model_sets())
def test_the_order_of_the_models_does_not_change_their_rows(
    case: tuple[list[int], dict[str, list[float]], list[str], str],
) -> None:
    y, scores, order, reference = case
    first = compare_models(scores, y, reference=reference)
    again = compare_models({k: scores[k] for k in order}, y, reference=reference)
    assert again.models == tuple(order)
    assert {r.model: r for r in first.rows} == {r.model: r for r in again.rows}
    for row in first.rows:
        assert row.auc == pytest.approx(roc_auc_score(y, scores[row.model]), abs=1e-12)
        if row.p_value is not None:
            assert 0.0 <= row.p_value <= 1.0
            assert row.model != reference
        else:
            assert row.p_note  # never silently missing
    assert first.row(reference).p_note == "the reference model"


def test_to_csv_and_rows_hold_the_same_values(tmp_path: Path) -> None:
    y, scores = cohort()
    table = compare_models(
        scores,
        y,
        froc_by_model={"D": two_lesion_froc()},
        reference="D",  # type: ignore[dict-item]
    )
    path = table.to_csv(tmp_path / "table3.csv")
    assert path == tmp_path / "table3.csv"
    with path.open(newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert [line["model"] for line in lines] == ["A", "B", "D"]
    assert list(lines[0]) == list(table.columns())
    for line, row in zip(lines, table.to_rows(), strict=True):
        assert float(line["auc"]) == row["auc"]
        assert line["n_tumor"] == "15" and line["reference"] == "D"
    assert lines[0]["froc"] == "" and float(lines[2]["froc"]) == 0.5
    assert lines[2]["p_value"] == "" and lines[2]["p_note"] == "the reference model"
    assert not [p for p in tmp_path.iterdir() if p.name != "table3.csv"]  # no temporary left


def test_markdown_has_the_study_layout_counts_and_formatted_p_values() -> None:
    y, scores = cohort()
    table = compare_models(
        scores,
        y,
        froc_by_model={"A": two_lesion_froc()},
        reference="D",  # type: ignore[dict-item]
    )
    text = table.to_markdown(names={"A": "A (Inception-v3)"})
    header, rule, *rows = text.splitlines()[:5]
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:4] == ["Model", "ROC AUC", "95 % CI (DeLong)", "FROC"]
    assert cells[4:10] == [f"sens. @ {f} FP" for f in ("1/4", "1/2", "1", "2", "4", "8")]
    assert cells[10:] == ["test slides (tumor/normal)", "lesions", "p vs D (DeLong)"]
    assert rule == "|" + "---|" * len(cells)
    a = [c.strip() for c in rows[0].strip("|").split("|")]
    assert a[0] == "A (Inception-v3)" and a[1] == f"{table.row('A').auc:.4f}"
    assert a[3] == "0.5000" and a[10] == "30 (15/15)" and a[11] == "2"
    p_a = table.row("A").p_value
    assert p_a is not None and a[12] == format_p_value(p_a)
    assert rows[2].split("|")[-2].strip() == "reference"


def test_bad_inputs_raise_errors_that_name_them() -> None:
    y = [0, 0, 1, 1]
    with pytest.raises(MetricsError, match="no models"):
        compare_models({}, y)
    with pytest.raises(MetricsError, match="scores of model 'A' has 3 values"):
        compare_models({"A": [0.1, 0.2, 0.3]}, y)
    with pytest.raises(ParameterError, match=r"compare_models\.reference must be one of"):
        compare_models({"A": [0.1, 0.2, 0.3, 0.4]}, y, reference="D")
    with pytest.raises(ParameterError, match="froc_by_model names models without scores"):
        compare_models({"A": [0.1, 0.2, 0.3, 0.4]}, y, froc_by_model={"B": two_lesion_froc()})  # type: ignore[dict-item]
    with pytest.raises(ParameterError, match=r"froc_by_model\['A'\] must be a FROCResult"):
        compare_models({"A": [0.1, 0.2, 0.3, 0.4]}, y, froc_by_model={"A": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ParameterError, match=r"compare_models\.alpha"):
        compare_models({"A": [0.1, 0.2, 0.3, 0.4]}, y, alpha=1.5)
    with pytest.raises(MetricsError, match="only positive"):
        compare_models({"A": [0.1, 0.2]}, [1, 1])
    table = compare_models({"A": [0.1, 0.2, 0.3, 0.4]}, y)
    assert isinstance(table, ModelComparison)
    with pytest.raises(ParameterError, match="no model 'Z'"):
        table.row("Z")
