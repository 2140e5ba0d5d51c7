"""The slide classifier: top-k selection, predictions, leakage-free CV, safe persistence."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
import sklearn
import skops.io
from sklearn.base import clone, is_classifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from cervixwsi.errors import ClassifierError, NotFittedError, ParameterError, ResultFileError
from cervixwsi.features import FeatureTable, HeatmapFeatureExtractor
from cervixwsi.slide_classifier import SlideClassifier, cross_validate

N_TREES = 60
SIGNAL = ("signal_a", "signal_b", "signal_c")


def planted_table(
    rng: np.random.Generator, n: int = 80, n_noise: int = 17, preset: str | None = "p"
) -> tuple[FeatureTable, np.ndarray]:
    """Three columns shifted by the label, the rest pure noise, columns shuffled."""
    y = np.repeat([0, 1], n // 2)
    signal = rng.normal(size=(n, 3)) + 2.5 * y[:, None]
    noise = rng.normal(size=(n, n_noise))
    names = [*SIGNAL, *(f"noise_{i}" for i in range(n_noise))]
    order = rng.permutation(len(names))
    values = np.hstack([signal, noise])[:, order]
    ids = tuple(f"slide{i}" for i in range(n))
    return FeatureTable(values, tuple(names[i] for i in order), ids, preset), y


@pytest.fixture
def fitted(rng: np.random.Generator) -> tuple[SlideClassifier, FeatureTable, np.ndarray]:
    table, y = planted_table(rng)
    return SlideClassifier(N_TREES, top_k=3, random_state=0).fit(table, y), table, y


def test_selection_keeps_the_signal_and_ignores_noise(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray], rng: np.random.Generator
) -> None:
    clf, _, _ = fitted
    assert set(clf.selected_features_) == set(SIGNAL)
    test, y_test = planted_table(rng)
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.9
    np.testing.assert_array_equal(clf.predict(test), (proba[:, 1] >= 0.5).astype(int))
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_ranking_and_forest_match_scikit_learn_fit_directly(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray],
) -> None:
    clf, table, y = fitted
    ref = RandomForestClassifier(N_TREES, random_state=0).fit(table.values, y)
    np.testing.assert_allclose(clf.feature_importances_, ref.feature_importances_)
    assert clf.feature_names_in_ == table.names
    order = np.argsort(-ref.feature_importances_, kind="stable")
    assert clf.ranking_.names == tuple(table.names[i] for i in order)
    assert np.all(np.diff(clf.ranking_.importances) <= 0)
    assert clf.ranking_.importances.sum() == pytest.approx(1.0)
    assert clf.selected_features_ == clf.ranking_.top(3)
    final = RandomForestClassifier(N_TREES, random_state=0).fit(
        table.select(clf.selected_features_).values, y
    )
    np.testing.assert_allclose(
        clf.predict_proba(table), final.predict_proba(table.select(clf.selected_features_).values)
    )
    assert dict(clf.ranking_)[clf.selected_features_[0]] == clf.ranking_.importances[0]


def test_columns_are_matched_by_name(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray],
) -> None:
    clf, table, _ = fitted
    reordered = table.select(table.names[::-1])
    np.testing.assert_array_equal(clf.predict_proba(reordered), clf.predict_proba(table))
    as_array = clf.predict_proba(reordered.values, feature_names=reordered.names)
    np.testing.assert_array_equal(as_array, clf.predict_proba(table))
    # An unnamed array is taken to be in the fitted order.
    np.testing.assert_array_equal(clf.predict_proba(table.values), clf.predict_proba(table))
    assert clf.predict_proba(table.rows(np.zeros(len(table), bool))).shape == (0, 2)


def test_a_table_with_other_feature_names_is_refused(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray],
) -> None:
    clf, table, _ = fitted
    renamed = FeatureTable(
        table.values, tuple(n.replace("signal", "sig") for n in table.names), table.slide_ids, "p"
    )
    with pytest.raises(ClassifierError, match="signal_a"):
        clf.predict_proba(renamed)
    with pytest.raises(ClassifierError, match="20 features"):
        clf.predict(table.values[:, :5])
    other_preset = FeatureTable(table.values, table.names, table.slide_ids, "camelyon16")
    with pytest.raises(ClassifierError, match="preset"):
        clf.predict(other_preset)


def test_heatmap_units_mismatch_is_caught_by_the_names(rng: np.random.Generator) -> None:
    from cervixwsi.geometry import Raster

    def maps(mpp: float | None) -> list[Raster]:
        return [Raster(rng.random((8, 8)), 256, (2048, 2048), mpp=mpp) for _ in range(6)]

    ex = HeatmapFeatureExtractor()
    train = ex.extract_many(maps(0.5), progress=False)
    clf = SlideClassifier(10, top_k=28, random_state=0).fit(train, [0, 1] * 3)
    with pytest.raises(ClassifierError, match="unit"):
        clf.predict(ex.extract_many(maps(None), progress=False))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros(10, int), "both classes"),
        (np.ones(10, bool), "both classes"),
        (np.arange(10) % 3, "0 .normal. and 1"),
        (np.array(["t", "n"] * 5), "0 .normal. and 1"),
        (np.zeros(9, int), "one label per slide"),
    ],
)
def test_bad_labels_are_refused(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ClassifierError, match=match):
        SlideClassifier(5).fit(np.ones((10, 3)), labels)


def test_bad_features_and_parameters_are_refused() -> None:
    y = np.repeat([0, 1], 5)
    x = np.ones((10, 3))
    x[4, 2] = np.nan
    with pytest.raises(ClassifierError, match=r"\[4, 2\]"):
        SlideClassifier(5).fit(x, y)
    with pytest.raises(ParameterError, match="top_k"):
        SlideClassifier(5, top_k=4).fit(np.ones((10, 3)), y)
    with pytest.raises(ParameterError, match="n_estimators"):
        SlideClassifier(0).fit(np.ones((10, 3)), y)
    with pytest.raises(ClassifierError, match="3 feature_names"):
        SlideClassifier(5).fit(np.ones((10, 2)), y, feature_names=["a", "b", "c"])
    with pytest.raises(NotFittedError, match="fit"):
        SlideClassifier().predict(np.ones((2, 3)))
    with pytest.raises(ClassifierError, match="numeric"):
        SlideClassifier(5).fit([["a", "b"]] * 10, y)
    with pytest.raises(ClassifierError, match="2-D"):
        SlideClassifier(5).fit(np.ones(10), y)
    with pytest.raises(ClassifierError, match="Complex data not supported"):
        SlideClassifier(5).fit(np.ones((10, 3)) + 1j, y)
    with pytest.raises(ClassifierError, match="sparse input is not supported"):
        SlideClassifier(5).fit(scipy.sparse.csr_matrix(np.ones((10, 3))), y)
    with pytest.raises(ClassifierError, match=r"0 feature\(s\)"):
        SlideClassifier(5).fit(np.ones((10, 0)), y)
    with pytest.raises(ParameterError, match=r"SlideClassifier\.top_k .*\[1, 3\], got 4"):
        SlideClassifier(5, top_k=4).fit(np.ones((10, 3)), y)
    for bad in (True, 2.0, "3", np.float64(3.0)):
        with pytest.raises(ParameterError, match="n_estimators"):
            SlideClassifier(bad).fit(np.ones((10, 3)), y)  # type: ignore[arg-type]
        with pytest.raises(ParameterError, match="top_k"):
            SlideClassifier(5, top_k=bad).fit(np.ones((10, 3)), y)  # type: ignore[arg-type]


def test_numpy_integer_parameters_are_accepted(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 15)
    X = rng.normal(size=(30, 4))
    X[:, 1] += 3 * y
    clf = SlideClassifier(np.int64(20), top_k=np.int64(2), random_state=np.int32(0))
    clf.set_params(min_samples_leaf=np.int16(2), n_jobs=np.int8(1))
    clf.fit(X, y)
    assert len(clf.selected_features_) == 2 and clf.selected_features_[0] == "x1"
    assert clf.forest_.n_estimators == 20 and type(clf.forest_.n_estimators) is int
    plain = SlideClassifier(20, top_k=2, random_state=0, min_samples_leaf=2).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), plain.predict_proba(X))
    # The saved metadata is JSON: NumPy integers are written as plain numbers.
    back = SlideClassifier.load(clf.save(tmp_path / "np.cwsi.zip"))
    assert back.get_params()["n_estimators"] == 20 and back.get_params()["top_k"] == 2
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    unsavable = SlideClassifier(5, top_k=1, random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(ParameterError, match="random_state"):
        unsavable.save(tmp_path / "rs.cwsi.zip")
    assert not list(tmp_path.glob("rs.*"))


def test_constructor_only_stores_parameters() -> None:
    clf = SlideClassifier(7, top_k=2, random_state=3, class_weight="balanced")
    assert clf.get_params()["n_estimators"] == 7
    assert not hasattr(clf, "forest_")
    assert "top_k=2" in repr(clf)
    # No validation in __init__ (scikit-learn's rule): bad values fail in fit.
    assert SlideClassifier(-1, top_k=0).get_params(deep=True)["top_k"] == 0


# --- scikit-learn compatibility -----------------------------------------------------------


def test_clone_gives_an_unfitted_copy_with_equal_params(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray],
) -> None:
    clf, table, y = fitted
    copy = clone(clf)
    assert type(copy) is SlideClassifier and copy is not clf
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "forest_") and not hasattr(copy, "selected_features_")
    assert is_classifier(copy)
    assert copy.set_params(top_k=4, n_estimators=11) is copy
    assert copy.get_params()["top_k"] == 4 and clf.get_params()["top_k"] == 3
    with pytest.raises(ValueError, match="nope"):
        copy.set_params(nope=1)
    assert repr(copy) == "SlideClassifier(n_estimators=11, random_state=0, top_k=4)"
    copy.fit(table, y)
    assert len(copy.selected_features_) == 4
    assert clf.score(table, y) == pytest.approx(np.mean(clf.predict(table) == y))


def two_signal_array(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label = sign of x0 + x1, with two noise columns: both signal columns are needed."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def test_grid_search_over_top_k_picks_the_informative_setting() -> None:
    X, y = two_signal_array()
    search = GridSearchCV(
        SlideClassifier(n_estimators=20, random_state=0), {"top_k": [1, 2]}, cv=3, scoring="roc_auc"
    )
    search.fit(X, y)
    assert search.best_params_ == {"top_k": 2}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.05
    best = search.best_estimator_
    assert set(best.selected_features_) == {"x0", "x1"}
    assert search.predict_proba(X).shape == (len(y), 2)


def test_cross_val_score_and_pipeline() -> None:
    X, y = two_signal_array(seed=1)
    clf = SlideClassifier(n_estimators=20, top_k=2, random_state=0)
    accuracy = cross_val_score(clf, X, y, cv=3)
    assert accuracy.shape == (3,) and accuracy.mean() > 0.7
    auc = cross_val_score(clf, X, y, cv=3, scoring="roc_auc")
    assert auc.mean() > 0.8
    assert not hasattr(clf, "forest_")
    pipe = make_pipeline(StandardScaler(), clf).fit(X, y)
    assert pipe.predict_proba(X).shape == (len(y), 2)
    assert set(pipe[-1].selected_features_) == {"x0", "x1"}
    pipe.set_params(slideclassifier__top_k=1)
    assert pipe[-1].top_k == 1


_SKLEARN_16 = tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 6)

# scikit-learn's common checks that fail for reasons of design, not of bugs.
_EXPECTED_FAILED_CHECKS = {
    # Labels are 0 (normal) and 1 (tumor) only; these checks train on {1, 2} or strings.
    "check_estimators_dtypes": "labels are 0/1 only",
    "check_classifier_data_not_an_array": "labels are 0/1 only",
    "check_classifiers_classes": "labels are 0/1 only",
    "check_fit2d_1feature": "labels are 0/1 only",
    # A ValueError (ClassifierError) is raised, but with cervixwsi's own message, not the
    # exact wording of scikit-learn's validation helpers.
    "check_dtype_object": "own message for labels that are not 0/1",
    "check_classifiers_regression_target": "own message for labels that are not 0/1",
    "check_classifier_not_supporting_multiclass": "own message for labels that are not 0/1",
    "check_requires_y_none": "own message for missing labels",
    "check_fit2d_1sample": "own message for a single class",
    "check_fit2d_predict1d": "own message for a 1-D array",
    "check_n_features_in_after_fitting": "own message for the wrong number of columns",
    # cervixwsi.errors.NotFittedError is a ValueError and an AttributeError like
    # scikit-learn's, but not a subclass of it (cervixwsi's errors do not import sklearn).
    "check_estimators_unfitted": "cervixwsi's own NotFittedError",
    # Labels must be 1-D: a column vector is refused rather than raveled with a warning.
    "check_supervised_y_2d": "column-vector labels are refused",
    # predict() needs only the selected features to be finite; NaN in a column the final
    # forest does not use is ignored.
    "check_estimators_nan_inf": "NaN in unselected columns is ignored at predict time",
}


if _SKLEARN_16:
    from sklearn.utils.estimator_checks import parametrize_with_checks

    # 11 trees: with pure leaves an odd number of votes never ties at 0.5 (which predict
    # calls tumor, where argmax(predict_proba) would say normal).
    @parametrize_with_checks(
        [SlideClassifier(n_estimators=11, top_k=1, random_state=0)],
        expected_failed_checks=lambda _: _EXPECTED_FAILED_CHECKS,
        xfail_strict=False,  # a newer scikit-learn may reword its checks
    )
    def test_scikit_learn_estimator_checks(estimator: SlideClassifier, check: Any) -> None:
        check(estimator)


# --- persistence ------------------------------------------------------------------------------


def test_save_load_round_trip(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray], tmp_path: Path
) -> None:
    clf, table, _ = fitted
    path = clf.save(tmp_path / "clf.cwsi.zip", thresholds=(0.5, 0.9))
    assert [p.name for p in tmp_path.iterdir()] == ["clf.cwsi.zip"]  # no temporary left
    back = SlideClassifier.load(path)
    np.testing.assert_array_equal(back.predict_proba(table), clf.predict_proba(table))
    assert back.selected_features_ == clf.selected_features_
    assert back.feature_names_in_ == clf.feature_names_in_
    assert back.ranking_.names == clf.ranking_.names
    assert back.preset_ == "p" and back.get_params() == clf.get_params()
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert meta["thresholds"] == [0.5, 0.9] and meta["feature_names_in"] == list(table.names)
    renamed = table.select(table.names[1:])
    with pytest.raises(ClassifierError, match="differ from the fitted"):
        back.predict(renamed.values, feature_names=renamed.names)


def _rewrite(src: Path, dst: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, members.pop(name, zin.read(name)))
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def test_load_refuses_bad_files(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray], tmp_path: Path
) -> None:
    clf, _, _ = fitted
    good = clf.save(tmp_path / "good.zip")
    data = good.read_bytes()
    cases: dict[str, bytes] = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "garbage": os.urandom(300),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.zip"
        path.write_bytes(content)
        with pytest.raises(ResultFileError, match=name):
            SlideClassifier.load(path)
    with pytest.raises(ResultFileError, match="no slide classifier file"):
        SlideClassifier.load(tmp_path / "missing.zip")

    meta = json.loads(zipfile.ZipFile(good).read("metadata.json"))
    wrong_format = _rewrite(
        good,
        tmp_path / "other.zip",
        **{"metadata.json": json.dumps({**meta, "format": "x"}).encode()},
    )
    with pytest.raises(ResultFileError, match="not a cervixwsi slide classifier"):
        SlideClassifier.load(wrong_format)
    newer = _rewrite(
        good,
        tmp_path / "newer.zip",
        **{"metadata.json": json.dumps({**meta, "format_version": 99}).encode()},
    )
    with pytest.raises(ResultFileError, match="format version 99"):
        SlideClassifier.load(newer)
    bad_json = _rewrite(good, tmp_path / "badjson.zip", **{"metadata.json": b"{not json"})
    with pytest.raises(ResultFileError, match="badjson"):
        SlideClassifier.load(bad_json)


def test_load_refuses_code_smuggled_into_the_forest(
    fitted: tuple[SlideClassifier, FeatureTable, np.ndarray], tmp_path: Path
) -> None:
    clf, _, _ = fitted
    good = clf.save(tmp_path / "good.zip")
    evil = skops.io.dumps(FunctionTransformer(func=os.system))
    path = _rewrite(good, tmp_path / "evil.zip", **{"forest.skops": evil})
    with pytest.raises(ResultFileError, match="refusing"):
        SlideClassifier.load(path)
    other_forest = RandomForestClassifier(3).fit(np.eye(4), [0, 1, 0, 1])  # 4 features, not 3
    path = _rewrite(
        good, tmp_path / "mismatch.zip", **{"forest.skops": skops.io.dumps(other_forest)}
    )
    with pytest.raises(ResultFileError, match="does not match"):
        SlideClassifier.load(path)


# --- cross-validation -------------------------------------------------------------------------


def test_cross_validate_reports_per_fold_auc(rng: np.random.Generator) -> None:
    table, y = planted_table(rng)
    template = SlideClassifier(N_TREES, top_k=3, random_state=0)
    res = cross_validate(table, y, cv=4, classifier=template, seed=1)
    assert res.fold_auc.shape == (4,)
    assert res.mean_auc > 0.85
    assert not hasattr(template, "forest_")
    assert sorted(np.bincount(res.folds).tolist()) == [20] * 4
    for k in range(4):
        fold = res.folds == k
        assert set(y[fold]) == {0, 1}  # stratified
        assert res.fold_auc[k] == pytest.approx(roc_auc_score(y[fold], res.probabilities[fold]))
    assert all(set(s) <= set(SIGNAL) | set(table.names) for s in res.selected_features)
    assert sum(set(s) == set(SIGNAL) for s in res.selected_features) >= 3


def test_selection_never_sees_the_validation_fold(rng: np.random.Generator) -> None:
    table, y = planted_table(rng, n=60)
    order = rng.permutation(60)
    folds = [(np.setdiff1d(order, part), part) for part in np.array_split(order, 3)]
    template = SlideClassifier(N_TREES, top_k=3, random_state=0)
    res = cross_validate(table, y, folds, classifier=template)
    # Shuffle only the labels of validation fold 0: its training slides are the same,
    # so the features selected for it must not change.
    train0, test0 = folds[0]
    y_shuffled = y.copy()
    y_shuffled[test0] = rng.permutation(y[test0])
    assert not np.array_equal(y_shuffled, y)
    res_shuffled = cross_validate(table, y_shuffled, folds, classifier=template)
    assert res_shuffled.selected_features[0] == res.selected_features[0]
    np.testing.assert_array_equal(res_shuffled.probabilities[test0], res.probabilities[test0])
    alone = SlideClassifier(N_TREES, top_k=3, random_state=0).fit(table.rows(train0), y[train0])
    assert alone.selected_features_ == res.selected_features[0]


def test_cross_validate_refuses_too_few_slides(rng: np.random.Generator) -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ClassifierError, match="at least 5 slides of each class"):
        cross_validate(rng.normal(size=(10, 3)), y, cv=5)
    one_class_fold = [(np.arange(4, 10), np.arange(0, 4))]
    with pytest.raises(ClassifierError, match="one class"):
        cross_validate(rng.normal(size=(10, 3)), y, one_class_fold)


def test_cross_validate_takes_a_numpy_number_of_folds() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    X = rng.normal(size=(20, 3))
    X[:, 0] += 2 * y
    clf = SlideClassifier(n_estimators=10, top_k=1, random_state=0)
    a = cross_validate(X, y, cv=np.int64(3), classifier=clf, seed=0)
    b = cross_validate(X, y, cv=3, classifier=clf, seed=0)
    assert len(a.fold_auc) == 3
    np.testing.assert_array_equal(a.fold_auc, b.fold_auc)
    for bad in (True, np.bool_(True), 3.0):
        with pytest.raises(ParameterError, match=r"cross_validate\.cv .*number of folds"):
            cross_validate(X, y, cv=bad, classifier=clf)  # type: ignore[arg-type]
