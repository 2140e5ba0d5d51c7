"""The slide classifier: a random forest on the top-k heatmap features.

The study ranks the 28 heatmap features (:mod:`cervixwsi.features`) by the
importance a random forest gives them on the training slides, keeps the top
five, and fits the final forest on those.  :class:`SlideClassifier` does
exactly that as a scikit-learn estimator (``clone``, ``get_params`` /
``set_params``, ``GridSearchCV``, ``Pipeline`` and ``cross_val_score`` work
on it); :func:`cross_validate` repeats it inside every fold, so the
selection never sees the validation slides.

A fitted classifier is saved with :meth:`SlideClassifier.save` to one file:
a zip archive holding the forest in the skops format (loaded with an explicit
list of trusted types, never by unpickling) and a JSON record of the feature
names, preset, thresholds and versions.  At predict time the feature names
(which carry the thresholds, e.g. ``max_probability@0.9``) and the preset are
checked against the table given; a different scikit-learn version is a warning
at load.

Examples
--------
>>> import numpy as np
>>> from cervixwsi.features import FeatureTable
>>> rng = np.random.default_rng(0)
>>> y = np.repeat([0, 1], 20)
>>> X = rng.normal(size=(40, 6)); X[:, 2] += 3 * y          # column 2 carries the signal
>>> table = FeatureTable(X, tuple(f"f{i}" for i in range(6)), tuple(map(str, range(40))))
>>> clf = SlideClassifier(n_estimators=50, top_k=2, random_state=0).fit(table, y)
>>> clf.selected_features_[0], clf.ranking_.names[0]
('f2', 'f2')
>>> clf.predict_proba(table).shape
(40, 2)
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from cervixwsi._io import atomic_path
from cervixwsi._validate import check_int, check_positive_int, is_int
from cervixwsi._version import __version__
from cervixwsi.errors import ClassifierError, NotFittedError, ParameterError, ResultFileError
from cervixwsi.features import FeatureTable

__all__ = ["CrossValidationResult", "FeatureRanking", "SlideClassifier", "cross_validate"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

_FORMAT = "cervixwsi.SlideClassifier"
_FORMAT_VERSION = 1
_MODEL_MEMBER = "forest.skops"
_META_MEMBER = "metadata.json"
# The exact types a saved forest may contain; skops refuses anything else.  Only the
# forest is serialised with skops (the SlideClassifier around it is rebuilt from the JSON
# metadata), so the class hierarchy of SlideClassifier never enters this list.
_TRUSTED_TYPES = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
]


@dataclass(frozen=True, slots=True, eq=False)
class FeatureRanking:
    """Features ordered by random-forest importance, most important first (the study's Table 2).

    Attributes
    ----------
    names : tuple of str
        Feature names, most important first.
    importances : numpy.ndarray
        Mean decrease in impurity of each, summing to 1.
    """

    names: tuple[str, ...]
    importances: FloatArray

    def top(self, k: int) -> tuple[str, ...]:
        """The names of the ``k`` most important features."""
        return self.names[:k]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, float]]:
        """``(name, importance)`` pairs, most important first."""
        return iter(zip(self.names, (float(v) for v in self.importances), strict=True))


@dataclass(frozen=True, slots=True, eq=False)
class CrossValidationResult:
    """Per-fold results of :func:`cross_validate`.

    Attributes
    ----------
    fold_auc : numpy.ndarray
        ROC AUC of each validation fold.
    selected_features : tuple of tuple of str
        The features each fold's classifier selected on its training slides.
    probabilities : numpy.ndarray
        Out-of-fold tumor probability of every slide (from the fold where it
        was a validation slide).
    folds : numpy.ndarray
        The fold (0-based) in which each slide was a validation slide.
    """

    fold_auc: FloatArray
    selected_features: tuple[tuple[str, ...], ...]
    probabilities: FloatArray
    folds: npt.NDArray[np.intp]

    @property
    def mean_auc(self) -> float:
        """Mean of the per-fold AUCs."""
        return float(np.mean(self.fold_auc))

    @property
    def std_auc(self) -> float:
        """Standard deviation (population) of the per-fold AUCs."""
        return float(np.std(self.fold_auc))


def _as_labels(labels: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ClassifierError(f"labels must be 1-D with one label per slide ({n}), got {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
        raise ClassifierError(
            "labels must be 0 (normal) and 1 (tumor) or booleans, got values "
            f"{np.unique(y)[:5].tolist()}"
        )
    return y.astype(np.int64)


def _as_matrix(
    X: FeatureTable | npt.ArrayLike, feature_names: Sequence[str] | None
) -> tuple[FloatArray, tuple[str, ...] | None, str | None]:
    if isinstance(X, FeatureTable):
        if feature_names is not None:
            raise ParameterError("give feature_names only with an array, a FeatureTable has them")
        return X.values, X.names, X.preset
    from scipy.sparse import issparse

    if issparse(X):
        raise ClassifierError(
            "sparse input is not supported: the features must be a dense 2-D array "
            "(convert with .toarray())"
        )
    try:
        raw = np.asarray(X)
        if np.iscomplexobj(raw):
            raise ClassifierError("Complex data not supported: the features must be real numbers")
        values = raw.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ClassifierError):
            raise
        raise ClassifierError(f"features must be a numeric 2-D array: {exc}") from exc
    if values.ndim != 2:
        raise ClassifierError(
            f"features must be a 2-D (slides, features) array, got {values.shape}"
        )
    names = None if feature_names is None else tuple(str(n) for n in feature_names)
    if names is not None and len(names) != values.shape[1]:
        raise ClassifierError(
            f"{len(names)} feature_names for an array of {values.shape[1]} columns"
        )
    return values, names, None


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _check_finite(values: FloatArray, what: str) -> None:
    if not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise ClassifierError(
            f"{what} contain NaN or inf, first {values[r, c]} at [row, col] = [{r}, {c}]"
        )


class SlideClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Random forest on the ``top_k`` most important heatmap features.

    A scikit-learn estimator: the constructor only stores its parameters,
    ``get_params`` / ``set_params``, :func:`sklearn.base.clone` and the
    ``repr`` come from :class:`sklearn.base.BaseEstimator`, and ``score``
    (accuracy) from :class:`sklearn.base.ClassifierMixin`, so it can be tuned
    with ``GridSearchCV`` (e.g. over ``top_k``), evaluated with
    ``cross_val_score`` or be the last step of a ``Pipeline``.  Parameters are
    validated in :meth:`fit`.  Labels are binary, 0 (normal) and 1 (tumor).

    Parameters
    ----------
    n_estimators : int
        Trees in each forest, 500 (any integer type, NumPy's included).
    top_k : int
        Number of features kept, 5 (the study's value), at most the number of
        features seen in ``fit``.  ``None`` keeps all.
    random_state : int or None
        Seed of both forests.  Only an int or ``None`` can be saved.
    max_features : {"sqrt", "log2"}, int, float or None
        Features tried per split (scikit-learn's), ``"sqrt"``.
    min_samples_leaf : int
        Minimum slides per leaf (scikit-learn's), 1.
    class_weight : {"balanced"} or None
        Class weights of the forests, ``None``.
    n_jobs : int or None
        Parallel jobs of scikit-learn, ``None`` (one).

    Attributes
    ----------
    feature_names_in_ : tuple of str
        The features seen in ``fit``.
    feature_importances_ : numpy.ndarray
        Importance of every feature in ``feature_names_in_`` order, from the
        ranking forest fit on all of them.
    ranking_ : FeatureRanking
        The same importances, sorted (the study's Table 2).
    selected_features_ : tuple of str
        The ``top_k`` features the final forest uses, most important first.
    preset_ : str or None
        The feature preset of the training table, checked at predict time.
    forest_ : sklearn.ensemble.RandomForestClassifier
        The final forest.
    classes_ : numpy.ndarray
        ``[0, 1]``: column 1 of :meth:`predict_proba` is tumor.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y = np.repeat([0, 1], 15)
    >>> X = np.column_stack([rng.normal(size=30), y + rng.normal(0, 0.3, 30)])
    >>> clf = SlideClassifier(n_estimators=30, top_k=1, random_state=0)
    >>> clf.fit(X, y, feature_names=["noise", "signal"]).selected_features_
    ('signal',)
    >>> clf.predict(np.array([[0.0, 1.2], [0.0, -0.3]]), feature_names=["noise", "signal"])
    array([1, 0])
    >>> from sklearn.base import clone
    >>> clone(clf).set_params(top_k=2)
    SlideClassifier(n_estimators=30, random_state=0, top_k=2)
    """

    def __init__(
        self,
        n_estimators: int | np.integer[Any] = 500,
        top_k: int | np.integer[Any] | None = 5,
        random_state: int | np.integer[Any] | None = None,
        *,
        max_features: Literal["sqrt", "log2"] | int | float | None = "sqrt",
        min_samples_leaf: int | np.integer[Any] = 1,
        class_weight: Literal["balanced"] | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.top_k = top_k
        self.random_state = random_state
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        # Called by scikit-learn >= 1.6 only; older versions never look at it.
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # labels are 0 (normal) / 1 (tumor)
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "forest_")

    def _forest(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        # NumPy scalars (np.int64(500)) become Python numbers: the forest, and the file
        # it is saved to, hold the same plain parameters whatever integer type was given.
        return RandomForestClassifier(
            n_estimators=int(self.n_estimators),
            max_features=_plain(self.max_features),
            min_samples_leaf=_plain(self.min_samples_leaf),
            class_weight=self.class_weight,
            random_state=_plain(self.random_state),
            n_jobs=_plain(self.n_jobs),
        )

    def fit(
        self,
        X: FeatureTable | npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        feature_names: Sequence[str] | None = None,
    ) -> SlideClassifier:
        """Rank the features, keep the top ``top_k``, fit the final forest on them.

        Parameters
        ----------
        X : FeatureTable or numpy.ndarray
            Training features, shape ``(n_slides, n_features)``.
        y : array-like
            0 (normal) or 1 (tumor) per slide, shape ``(n_slides,)``.
        feature_names : sequence of str, optional
            Names of the columns of an array ``X`` (default ``x0, x1, ...``).

        Returns
        -------
        SlideClassifier
            ``self``.

        Raises
        ------
        ClassifierError
            On one class only, non-finite features, or labels other than 0/1.
        """
        check_positive_int(self.n_estimators, "SlideClassifier.n_estimators")
        values, names, preset = _as_matrix(X, feature_names)
        n_slides, n_features = values.shape
        if n_features == 0:
            raise ClassifierError(
                f"the training features have 0 feature(s) (shape={values.shape}) while a "
                "minimum of 1 is required."
            )
        if names is None:
            names = tuple(f"x{i}" for i in range(n_features))
        labels = _as_labels(y, n_slides)
        _check_finite(values, "the training features")
        counts = np.bincount(labels, minlength=2)
        if (counts == 0).any():
            raise ClassifierError(
                f"training needs slides of both classes, got {counts[0]} normal and "
                f"{counts[1]} tumor"
            )
        k = n_features
        if self.top_k is not None:
            k = check_int(self.top_k, "SlideClassifier.top_k", min=1, max=n_features)

        ranking_forest = self._forest().fit(values, labels)
        importances = np.asarray(ranking_forest.feature_importances_, dtype=np.float64)
        order = np.argsort(-importances, kind="stable")
        selected = [int(i) for i in order[:k]]
        self.forest_ = self._forest().fit(values[:, selected], labels)
        self.feature_names_in_ = names
        self.n_features_in_ = n_features
        self.feature_importances_ = importances
        self.ranking_ = FeatureRanking(tuple(names[i] for i in order), importances[order])
        self.selected_features_ = tuple(names[i] for i in selected)
        self.preset_ = preset
        self.classes_ = np.array([0, 1])
        logger.info("selected features %s", self.selected_features_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "forest_"):
            raise NotFittedError("this SlideClassifier is not fitted: call fit() or load()")

    def _selected_matrix(
        self, X: FeatureTable | npt.ArrayLike, feature_names: Sequence[str] | None
    ) -> FloatArray:
        self._check_fitted()
        values, names, preset = _as_matrix(X, feature_names)
        if preset is not None and self.preset_ is not None and preset != self.preset_:
            raise ClassifierError(
                f"the classifier was fit on features of preset {self.preset_!r}, "
                f"got a table of preset {preset!r}"
            )
        if names is None:
            if values.shape[1] != self.n_features_in_:
                raise ClassifierError(
                    f"the classifier was fit on {self.n_features_in_} features "
                    f"{self.feature_names_in_}, got an array of {values.shape[1]} columns"
                )
            names = self.feature_names_in_
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.feature_names_in_ if n not in index]
        if missing:
            raise ClassifierError(
                f"the features differ from the fitted ones: missing {missing} "
                f"(fitted on {self.feature_names_in_}, got {names}); were they extracted "
                "with another preset, thresholds or unit (mpp known vs unknown)?"
            )
        selected = values[:, [index[n] for n in self.selected_features_]]
        _check_finite(selected, "the features")
        return selected

    def predict_proba(
        self, X: FeatureTable | npt.ArrayLike, *, feature_names: Sequence[str] | None = None
    ) -> FloatArray:
        """Class probabilities, shape ``(n_slides, 2)``; column 1 is tumor.

        ``X`` needs every feature seen in ``fit`` (columns are matched by
        name, extra columns are ignored); an array without ``feature_names``
        must have the fitted columns in the fitted order.

        Raises
        ------
        ClassifierError
            If the features differ from the fitted ones.
        NotFittedError
            Before ``fit``.
        """
        selected = self._selected_matrix(X, feature_names)
        if not len(selected):
            return np.empty((0, 2))
        proba = np.asarray(self.forest_.predict_proba(selected), dtype=np.float64)
        return proba

    def predict(
        self, X: FeatureTable | npt.ArrayLike, *, feature_names: Sequence[str] | None = None
    ) -> npt.NDArray[np.int64]:
        """Labels: 1 (tumor) where the tumor probability is at least 0.5, else 0."""
        return (self.predict_proba(X, feature_names=feature_names)[:, 1] >= 0.5).astype(np.int64)

    # --- persistence --------------------------------------------------------------------

    def save(self, path: str | Path, *, thresholds: Sequence[float] | None = None) -> Path:
        """Save to one file: the forest (skops) and its metadata (JSON) in a zip archive.

        Parameters
        ----------
        path : str or Path
            The file to write (conventionally ``*.cwsi.zip``).
        thresholds : sequence of float, optional
            The feature thresholds, recorded in the metadata.

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib
        >>> y = np.repeat([0, 1], 5)
        >>> clf = SlideClassifier(5, top_k=1, random_state=0).fit(np.c_[y, y], y)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = clf.save(pathlib.Path(d) / "clf.cwsi.zip")
        ...     SlideClassifier.load(f).selected_features_ == clf.selected_features_
        True
        """
        self._check_fitted()
        import sklearn
        import skops
        import skops.io

        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "cervixwsi_version": __version__,
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
            "params": self._saved_params(),
            "feature_names_in": list(self.feature_names_in_),
            "feature_importances": [float(v) for v in self.feature_importances_],
            "selected_features": list(self.selected_features_),
            "preset": self.preset_,
            "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        }
        path = Path(path)
        with (
            atomic_path(path) as tmp,
            zipfile.ZipFile(tmp, "x", compression=zipfile.ZIP_DEFLATED) as zf,
        ):
            zf.writestr(_META_MEMBER, json.dumps(meta, indent=2))
            zf.writestr(_MODEL_MEMBER, skops.io.dumps(self.forest_))
        return path

    def _saved_params(self) -> dict[str, Any]:
        params = {name: _plain(value) for name, value in self.get_params(deep=False).items()}
        for name, value in params.items():
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ParameterError(
                    f"cannot save a classifier with {name}={value!r}: only None, numbers and "
                    "strings can be saved"
                )
        return params

    @classmethod
    def load(cls, path: str | Path) -> SlideClassifier:
        """Load a classifier written by :meth:`save`, without executing code from the file.

        Raises
        ------
        ResultFileError
            If the file is missing, truncated, not a classifier file, of a
            newer format, or holds types other than a scikit-learn random forest.
        """
        import skops.io
        from sklearn.ensemble import RandomForestClassifier

        path = Path(path)
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read(_META_MEMBER).decode("utf-8"))
                model_bytes = zf.read(_MODEL_MEMBER)
        except FileNotFoundError as exc:
            raise ResultFileError(f"no slide classifier file at {path}") from exc
        except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, ValueError) as exc:
            raise ResultFileError(
                f"{path} is not a readable slide classifier file (a zip archive with "
                f"{_META_MEMBER} and {_MODEL_MEMBER}): {exc}"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ResultFileError(f"{path} is not a cervixwsi slide classifier file")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ResultFileError(
                f"{path} has format version {meta.get('format_version')!r}; this cervixwsi "
                f"({__version__}) reads version {_FORMAT_VERSION}"
            )
        untrusted = set(skops.io.get_untrusted_types(data=model_bytes)) - set(_TRUSTED_TYPES)
        if untrusted:
            raise ResultFileError(
                f"{path} holds types other than a scikit-learn random forest: "
                f"{sorted(untrusted)}; refusing to load them"
            )
        try:
            forest = skops.io.loads(model_bytes, trusted=_TRUSTED_TYPES)
            names = tuple(str(n) for n in meta["feature_names_in"])
            selected = tuple(str(n) for n in meta["selected_features"])
            importances = np.asarray(meta["feature_importances"], dtype=np.float64)
            params = dict(meta["params"])
            preset = meta["preset"]
            clf = cls(**params)
        except Exception as exc:  # skops raises many kinds on corrupt content
            raise ResultFileError(f"{path}: the saved forest cannot be read: {exc}") from exc
        if (
            not isinstance(forest, RandomForestClassifier)
            or forest.n_features_in_ != len(selected)
            or len(importances) != len(names)
            or not set(selected) <= set(names)
        ):
            raise ResultFileError(f"{path}: the forest does not match its metadata")
        import sklearn

        if meta.get("sklearn_version") != sklearn.__version__:
            logger.warning(
                "%s was saved with scikit-learn %s, this is %s",
                path,
                meta.get("sklearn_version"),
                sklearn.__version__,
            )
        order = np.argsort(-importances, kind="stable")
        clf.forest_ = forest
        clf.feature_names_in_ = names
        clf.n_features_in_ = len(names)
        clf.feature_importances_ = importances
        clf.ranking_ = FeatureRanking(tuple(names[i] for i in order), importances[order])
        clf.selected_features_ = selected
        clf.preset_ = None if preset is None else str(preset)
        clf.classes_ = np.array([0, 1])
        return clf


def cross_validate(
    X: FeatureTable | npt.ArrayLike,
    y: npt.ArrayLike,
    cv: int | Iterable[tuple[npt.ArrayLike, npt.ArrayLike]] = 5,
    *,
    classifier: SlideClassifier | None = None,
    feature_names: Sequence[str] | None = None,
    seed: int | None = None,
) -> CrossValidationResult:
    """Stratified k-fold cross-validation with feature selection inside each fold.

    In every fold a fresh classifier (ranking forest, top-k selection, final
    forest) is fit on the training slides only, and the validation slides
    are scored with :func:`cervixwsi.metrics.roc_auc`.

    Parameters
    ----------
    X : FeatureTable or numpy.ndarray
        Features of all slides.
    y : array-like
        0 (normal) or 1 (tumor) per slide.
    cv : int or iterable
        Number of stratified folds, 5; or explicit ``(train, test)`` index arrays.
    classifier : SlideClassifier, optional
        Its parameters are used for every fold (default ``SlideClassifier()``);
        it is not fitted itself.
    feature_names : sequence of str, optional
        Column names of an array ``X``.
    seed : int, optional
        Shuffles the stratified folds.

    Raises
    ------
    ClassifierError
        If a class has fewer slides than folds, or a fold's training or
        validation slides are of one class only.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> X = rng.normal(size=(40, 4)); X[:, 0] += 4 * y
    >>> res = cross_validate(X, y, cv=4, seed=0,
    ...                      classifier=SlideClassifier(20, top_k=2, random_state=0))
    >>> res.fold_auc.shape, res.mean_auc > 0.9
    ((4,), True)
    """
    from cervixwsi.metrics import roc_auc

    values, names, preset = _as_matrix(X, feature_names)
    labels = _as_labels(y, values.shape[0])
    template = classifier if classifier is not None else SlideClassifier()
    if is_int(cv):  # a Python or NumPy integer, not a bool
        from sklearn.model_selection import StratifiedKFold

        k = check_int(cv, "cross_validate.cv")
        counts = np.bincount(labels, minlength=2)
        if k < 2 or counts.min() < k:
            raise ClassifierError(
                f"{k}-fold stratified cross-validation needs cv >= 2 and at least {k} slides "
                f"of each class, got {counts[0]} normal and {counts[1]} tumor"
            )
        splitter = StratifiedKFold(n_splits=k, shuffle=seed is not None, random_state=seed)
        splits = [(tr, te) for tr, te in splitter.split(values, labels)]
    elif isinstance(cv, Iterable):
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv]
    else:
        raise ParameterError(
            f"cross_validate.cv must be a number of folds or an iterable of splits, got {cv!r}"
        )
    table = FeatureTable(
        values,
        names if names is not None else tuple(f"x{i}" for i in range(values.shape[1])),
        tuple(str(i) for i in range(values.shape[0])),
        preset,
    )
    aucs: list[float] = []
    selected: list[tuple[str, ...]] = []
    oof = np.full(len(labels), np.nan)
    folds = np.full(len(labels), -1, dtype=np.intp)
    for k, (train, test) in enumerate(splits):
        if len(np.unique(labels[test])) < 2:
            raise ClassifierError(f"validation fold {k} has slides of one class only")
        clf: SlideClassifier = clone(template)
        try:
            clf.fit(table.rows(train), labels[train])
        except ClassifierError as exc:
            raise ClassifierError(f"fold {k}: {exc}") from exc
        scores = clf.predict_proba(table.rows(test))[:, 1]
        oof[test] = scores
        folds[test] = k
        aucs.append(roc_auc(labels[test], scores))
        selected.append(clf.selected_features_)
        logger.info("fold %d: AUC %.3f, features %s", k, aucs[-1], clf.selected_features_)
    if not aucs:
        raise ClassifierError("cross-validation got no folds")
    result = CrossValidationResult(np.array(aucs), tuple(selected), oof, folds)
    if not math.isfinite(result.mean_auc):
        raise ClassifierError(f"cross-validation gave a non-finite AUC: {aucs}")
    return result
