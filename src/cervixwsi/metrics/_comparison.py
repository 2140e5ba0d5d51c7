"""Several models on the same test slides: the study's Table 3 with CIs, counts and tests."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_csv
from cervixwsi._validate import check_real
from cervixwsi.errors import MetricsError, ParameterError
from cervixwsi.metrics._froc import EVAL_FPS, FROCResult
from cervixwsi.metrics._roc import (
    _as_labels,
    _as_scores,
    _delong,
    _norm_ppf,
    compare_auc,
    format_p_value,
)

__all__ = ["ModelComparison", "ModelRow", "compare_models"]

#: Fewer slides of a class than this: DeLong's variance is not defined (it needs 2).
_MIN_PER_CLASS = 2


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model's line of a :class:`ModelComparison` (one line of the study's Table 3).

    Attributes
    ----------
    model : str
        The model's name, as given to :func:`compare_models`.
    auc : float
        Slide-level ROC AUC on the test slides.
    auc_low, auc_high : float or None
        The ``1 - alpha`` DeLong confidence interval of the AUC; ``None`` when it
        is not defined (fewer than 2 slides of a class), see ``ci_note``.
    auc_se : float or None
        DeLong's standard error of the AUC (0 when the scores separate the
        classes completely).
    ci_note : str
        Why there is no interval, or that it collapsed to a point; empty otherwise.
    froc : float or None
        The FROC score (mean sensitivity at the six FP rates); ``None`` without a
        FROC result for this model.
    sensitivities : tuple of float or None
        Lesion sensitivity at each of :attr:`ModelComparison.eval_fps` average
        false positives per slide.
    n_slides, n_tumor, n_normal : int
        Test slides scored for the AUC: all, positive (tumor) and negative (normal).
    froc_slides, n_lesions : int or None
        Slides and non-ITC lesions of the FROC evaluation (its FP and sensitivity
        denominators).
    p_value : float or None
        Two-sided paired DeLong p-value of the reference model against this one
        (:func:`cervixwsi.metrics.compare_auc`); ``None`` for the reference itself,
        without a reference, or when the test is undefined, see ``p_note``.
    p_note : str
        Why there is no p-value; empty otherwise.
    """

    model: str
    auc: float
    auc_low: float | None
    auc_high: float | None
    auc_se: float | None
    ci_note: str
    froc: float | None
    sensitivities: tuple[float, ...] | None
    n_slides: int
    n_tumor: int
    n_normal: int
    froc_slides: int | None
    n_lesions: int | None
    p_value: float | None
    p_note: str


def _fps_label(fp: float) -> str:
    """``0.25 -> "1/4"``, ``2.0 -> "2"``: the FP rates as the FROC literature writes them."""
    if fp >= 1 or fp <= 0:
        return f"{fp:g}"
    inverse = 1 / fp
    return f"1/{round(inverse)}" if math.isclose(inverse, round(inverse)) else f"{fp:g}"


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True, slots=True)
class ModelComparison:
    """Models scored on the same slides: AUC with CI, FROC, counts, paired DeLong tests.

    Made by :func:`compare_models`.

    Attributes
    ----------
    rows : tuple of ModelRow
        One per model, in the order given.
    reference : str or None
        The model every other one is tested against (the study's ensemble, D).
    alpha : float
        ``1 - confidence`` of the intervals (0.05: 95 %).
    eval_fps : tuple of float
        The false-positive rates of :attr:`ModelRow.sensitivities` (1/4 to 8 per slide).
    """

    rows: tuple[ModelRow, ...]
    reference: str | None
    alpha: float
    eval_fps: tuple[float, ...]

    @property
    def models(self) -> tuple[str, ...]:
        """The model names, in order."""
        return tuple(r.model for r in self.rows)

    def row(self, model: str) -> ModelRow:
        """The row of one model, by name.

        Raises
        ------
        ParameterError
            If there is no such model.
        """
        for r in self.rows:
            if r.model == model:
                return r
        raise ParameterError(f"no model {model!r} in this comparison; models: {list(self.models)}")

    def columns(self) -> tuple[str, ...]:
        """The keys of :meth:`to_rows` (and the CSV header), in order."""
        sens = tuple(f"sensitivity_at_{fp:g}_fp" for fp in self.eval_fps)
        return (
            "model",
            "auc",
            "auc_ci_low",
            "auc_ci_high",
            "auc_se",
            "ci_note",
            "froc",
            *sens,
            "n_slides",
            "n_tumor",
            "n_normal",
            "froc_slides",
            "n_lesions",
            "reference",
            "p_value",
            "p_note",
        )

    def to_rows(self) -> list[dict[str, Any]]:
        """The table as plain dicts, one per model (JSON-ready; ``None`` where undefined).

        Examples
        --------
        >>> from cervixwsi.metrics import compare_models
        >>> table = compare_models({"A": [0.1, 0.4, 0.35, 0.8]}, [0, 0, 1, 1])
        >>> row = table.to_rows()[0]
        >>> row["model"], row["auc"], row["n_tumor"], row["froc"]
        ('A', 0.75, 2, None)
        """
        out = []
        for r in self.rows:
            sens = r.sensitivities or (None,) * len(self.eval_fps)
            values = (
                r.model,
                r.auc,
                r.auc_low,
                r.auc_high,
                r.auc_se,
                r.ci_note,
                r.froc,
                *sens,
                r.n_slides,
                r.n_tumor,
                r.n_normal,
                r.froc_slides,
                r.n_lesions,
                self.reference,
                r.p_value,
                r.p_note,
            )
            out.append(dict(zip(self.columns(), values, strict=True)))
        return out

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_rows` as a CSV file (atomically); empty cells where undefined.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        cols = self.columns()
        lines: list[list[object]] = [list(cols)]
        for row in self.to_rows():
            lines.append(["" if row[c] is None else row[c] for c in cols])
        atomic_write_csv(path, lines)
        return Path(path)

    def to_markdown(self, *, digits: int = 4, names: Mapping[str, str] | None = None) -> str:
        """The table in the study's Table 3 layout (model, ROC AUC, FROC) and the extra columns.

        Columns: model, ROC AUC, its confidence interval, FROC score, the
        sensitivities at the six FP rates, test slides (tumor / normal), lesions and
        the paired DeLong p-value of the reference against the model
        (:func:`format_p_value`).  An undefined value is a dash, with the reason in a
        numbered note under the table (one number per distinct reason).

        Parameters
        ----------
        digits : int
            Decimals of the AUC, its interval and the FROC score (sensitivities: 2).
        names : mapping of str to str, optional
            Display names of the models (e.g. ``{"A": "A (Inception-v3)"}``).

        Returns
        -------
        str
            A GitHub-flavoured Markdown table, ending in a newline.

        Examples
        --------
        >>> from cervixwsi.metrics import compare_models
        >>> y = [0, 0, 0, 1, 1, 1]
        >>> t = compare_models({"A": [0.1, 0.3, 0.6, 0.4, 0.8, 0.9],
        ...                     "D": [0.1, 0.2, 0.3, 0.6, 0.8, 0.9]}, y, reference="D")
        >>> print(t.to_markdown(digits=3), end="")  # doctest: +NORMALIZE_WHITESPACE
        | Model | ROC AUC | 95 % CI (DeLong) | FROC | test slides (tumor/normal) | p vs D (DeLong) |
        |---|---|---|---|---|---|
        | A | 0.889 | 0.581-1.000 | – | 6 (3/3) | p = 0.4795 |
        | D | 1.000 | 1.000-1.000¹ | – | 6 (3/3) | reference |
        <BLANKLINE>
        ¹ degenerate interval (the scores separate the classes completely)
        """
        shown = dict(names or {})
        has_froc = any(r.froc is not None for r in self.rows)
        level = round(100 * (1 - self.alpha))
        head = ["Model", "ROC AUC", f"{level} % CI (DeLong)", "FROC"]
        if has_froc:
            head += [f"sens. @ {_fps_label(fp)} FP" for fp in self.eval_fps]
        head.append("test slides (tumor/normal)")
        if has_froc:
            head.append("lesions")
        if self.reference is not None:
            head.append(f"p vs {self.reference} (DeLong)")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        notes: list[str] = []

        def mark(text: str, note: str) -> str:
            """``text`` with the footnote number of ``note`` (one number per distinct note)."""
            if not note:
                return text
            if note not in notes:
                notes.append(note)
            return f"{text}{_superscript(notes.index(note) + 1)}"

        for r in self.rows:
            name = shown.get(r.model, r.model)
            if r.auc_low is None or r.auc_high is None:
                ci = mark("–", r.ci_note)
            else:
                ci = mark(f"{r.auc_low:.{digits}f}-{r.auc_high:.{digits}f}", r.ci_note)
            cells = [name, f"{r.auc:.{digits}f}", ci, _num(r.froc, digits) or "–"]
            if has_froc:
                sens = r.sensitivities or (None,) * len(self.eval_fps)
                cells += [_num(s, 2) or "–" for s in sens]
            cells.append(f"{r.n_slides} ({r.n_tumor}/{r.n_normal})")
            if has_froc:
                cells.append("–" if r.n_lesions is None else f"{r.n_lesions}")
            if self.reference is not None:
                if r.model == self.reference:
                    cells.append("reference")
                elif r.p_value is None:
                    cells.append(mark("–", r.p_note))
                else:
                    cells.append(format_p_value(r.p_value))
            lines.append("| " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines += [f"{_superscript(i + 1)} {n}" for i, n in enumerate(notes)]
        return "\n".join(lines) + "\n"


def _superscript(n: int) -> str:
    digits = "⁰¹²³⁴⁵⁶⁷⁸⁹"
    return "".join(digits[int(c)] for c in str(n))


def _auc_row(
    labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64], alpha: float
) -> tuple[float, float | None, float | None, float | None, str]:
    """AUC, its DeLong interval and standard error, and the note on the interval."""
    from cervixwsi.metrics._roc import roc_auc

    auc = roc_auc(labels, scores)
    m, n = int(labels.sum()), int((~labels).sum())
    if min(m, n) < _MIN_PER_CLASS:
        return (
            auc,
            None,
            None,
            None,
            f"no interval: DeLong's variance needs at least {_MIN_PER_CLASS} slides of each "
            f"class, got {m} tumor and {n} normal",
        )
    _, cov = _delong(scores[labels][None, :], scores[~labels][None, :])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    half = _norm_ppf(1 - alpha / 2) * se
    note = ""
    if se == 0:
        note = "degenerate interval (the scores separate the classes completely)"
    return auc, max(auc - half, 0.0), min(auc + half, 1.0), se, note


def _paired_p(
    ref: npt.NDArray[np.float64],
    other: npt.NDArray[np.float64],
    labels: npt.NDArray[np.bool_],
) -> tuple[float | None, str]:
    m, n = int(labels.sum()), int((~labels).sum())
    if min(m, n) < _MIN_PER_CLASS:
        return None, (
            f"no test: DeLong's variance needs at least {_MIN_PER_CLASS} slides of each class, "
            f"got {m} tumor and {n} normal"
        )
    test = compare_auc(ref, other, labels)
    if test.se == 0:
        return None, (
            "undefined: the paired AUC difference has no variance (the two models rank the "
            "slides alike, or both separate the classes completely)"
        )
    return test.p_value, ""


def compare_models(
    scores_by_model: Mapping[str, npt.ArrayLike],
    y_true: npt.ArrayLike,
    *,
    froc_by_model: Mapping[str, FROCResult] | None = None,
    reference: str | None = None,
    alpha: float = 0.05,
) -> ModelComparison:
    """Compare models scored on the same slides: the study's Table 3 with CIs, counts and tests.

    For each model: the slide-level ROC AUC (:func:`roc_auc`) with its DeLong
    confidence interval (:func:`auc_ci`), the FROC score and the sensitivities at
    the six FP rates of its :class:`FROCResult`, the slide and lesion counts, and
    the two-sided paired DeLong p-value of ``reference`` against it
    (:func:`compare_auc`).  Any number of models; rows come in the order given and
    each row depends only on its model, the labels and the reference.

    Undefined values are ``None`` with the reason in a note, never a number that
    reads as a result: no interval or test with fewer than 2 slides of a class; a
    degenerate interval (a point) when the scores separate the classes completely
    (said so); no p-value for the reference itself, nor when the paired difference
    has no variance (a model compared with itself, or two models that both
    separate the classes completely).

    Parameters
    ----------
    scores_by_model : mapping of str to array-like (n,)
        Per model name, its finite slide scores, in the order of ``y_true``.
    y_true : array-like (n,)
        1 (or ``True``) for tumor slides, 0 for normal ones; both present.
    froc_by_model : mapping of str to FROCResult, optional
        Per model name (a subset of the models), its lesion-level FROC evaluation.
    reference : str, optional
        The model to test every other one against (the study's ensemble, D).
    alpha : float
        ``1 - confidence`` of the intervals (0.05: 95 %).

    Returns
    -------
    ModelComparison

    Raises
    ------
    MetricsError
        No model, labels of one class only, scores that are not finite or whose
        length differs from ``y_true``'s.
    ParameterError
        A ``reference`` or FROC model that is not among the models, a bad ``alpha``.

    Examples
    --------
    >>> from cervixwsi.metrics import compare_models
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> table = compare_models(
    ...     {"A": [0.1, 0.6, 0.3, 0.75, 0.5, 0.7, 0.8, 0.2],
    ...      "D": [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]},
    ...     y, reference="D")
    >>> a = table.row("A")
    >>> a.auc, round(a.auc_low, 3), round(a.auc_high, 3), round(a.p_value, 4)
    (0.625, 0.178, 1.0, 0.1003)
    >>> table.row("D").p_value is None, table.row("D").ci_note[:10]
    (True, 'degenerate')
    """
    if not scores_by_model:
        raise MetricsError("no models to compare: give at least one model's scores")
    a = check_real(alpha, "compare_models.alpha", min=0, max=1, min_open=True, max_open=True)
    labels = _as_labels(y_true)
    scores = {
        str(name): _as_scores(s, labels.size, f"scores of model {name!r}")
        for name, s in scores_by_model.items()
    }
    frocs = dict(froc_by_model or {})
    unknown = [k for k in frocs if k not in scores]
    if unknown:
        raise ParameterError(
            f"compare_models.froc_by_model names models without scores: {unknown}; "
            f"models: {list(scores)}"
        )
    for k, result in frocs.items():
        if not isinstance(result, FROCResult):
            raise ParameterError(
                f"compare_models.froc_by_model[{k!r}] must be a FROCResult, "
                f"got {type(result).__name__}"
            )
    if reference is not None and reference not in scores:
        raise ParameterError(
            f"compare_models.reference must be one of the models {list(scores)}, got {reference!r}"
        )
    eval_fps = _eval_fps(frocs.values())
    rows = []
    for name, s in scores.items():
        auc, low, high, se, ci_note = _auc_row(labels, s, a)
        froc = frocs.get(name)
        if reference is None:
            p, p_note = None, ""
        elif name == reference:
            p, p_note = None, "the reference model"
        else:
            p, p_note = _paired_p(scores[reference], s, labels)
        rows.append(
            ModelRow(
                model=name,
                auc=auc,
                auc_low=low,
                auc_high=high,
                auc_se=se,
                ci_note=ci_note,
                froc=None if froc is None else float(froc.score),
                sensitivities=(
                    None if froc is None else tuple(float(v) for v in froc.eval_sensitivities)
                ),
                n_slides=int(labels.size),
                n_tumor=int(labels.sum()),
                n_normal=int((~labels).sum()),
                froc_slides=None if froc is None else froc.n_slides,
                n_lesions=None if froc is None else froc.n_lesions,
                p_value=p,
                p_note=p_note,
            )
        )
    return ModelComparison(tuple(rows), reference, a, eval_fps)


def _eval_fps(results: Sequence[FROCResult] | Any) -> tuple[float, ...]:
    found = {tuple(float(f) for f in r.eval_fps) for r in results}
    if len(found) > 1:
        raise MetricsError(
            f"the FROC results read sensitivity at different FP rates {sorted(found)}: "
            "compare results of one protocol"
        )
    return found.pop() if found else EVAL_FPS
