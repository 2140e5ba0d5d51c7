"""Evaluation: slide-level ROC AUC with confidence intervals, lesion-level FROC.

The two metrics of the study's Table 3 and Fig. 4:

* **ROC / AUC** of slide scores (:func:`roc_curve`, :func:`roc_auc`, equal to
  scikit-learn's), with confidence intervals by DeLong's method or a stratified
  bootstrap (:func:`auc_ci`) and the paired DeLong test of two models scored on
  the same slides (:func:`compare_auc`).
* **FROC** of lesion detections, the Camelyon16 protocol (:func:`froc` on
  arrays at the evaluation level, :class:`FROCEvaluator` on
  :class:`~cervixwsi.geometry.Raster` masks, anything that draws itself as one
  (:class:`MaskSource`, such as an :class:`~cervixwsi.annotations.AnnotationSet`
  read from an annotation file) and submission CSVs), and
  :func:`detect_lesions`, the step from a probability heatmap to detections
  (:func:`choose_detection_params` picks its method and settings on training slides).
* :func:`compare_models` puts several models scored on the same slides side by
  side (the study's Table 3): AUC with its DeLong interval, FROC score and
  sensitivities, slide and lesion counts, and the paired DeLong p-value of a
  reference model (the ensemble) against each other one, as a
  :class:`ModelComparison` that writes CSV and Markdown.
* :func:`format_p_value` writes a p-value for a report (``p < 0.0001``, never
  ``p = 0.0000``).

Metrics takes masks, never annotations: it depends only on
:mod:`cervixwsi.geometry`, :mod:`cervixwsi.errors` and the parameter checks, and
:mod:`cervixwsi.annotations` does not depend on it either.

Pure NumPy / SciPy / scikit-image / scikit-learn; the heavier imports happen on
first use.

Examples
--------
>>> from cervixwsi.metrics import roc_auc
>>> roc_auc([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.4])
1.0
"""

from __future__ import annotations

from cervixwsi.metrics._comparison import ModelComparison, ModelRow, compare_models
from cervixwsi.metrics._detect import DetectionChoice, choose_detection_params, detect_lesions
from cervixwsi.metrics._detections import read_detections_csv, write_detections_csv
from cervixwsi.metrics._evaluation_mask import evaluation_mask, itc_labels
from cervixwsi.metrics._evaluator import FROCEvaluator, MaskSource
from cervixwsi.metrics._froc import EVAL_FPS, FROCResult, SlideFROC, froc
from cervixwsi.metrics._roc import (
    AucCI,
    AucComparison,
    RocCurve,
    auc_ci,
    compare_auc,
    format_p_value,
    roc_auc,
    roc_curve,
)

__all__ = [
    "EVAL_FPS",
    "AucCI",
    "AucComparison",
    "DetectionChoice",
    "FROCEvaluator",
    "FROCResult",
    "MaskSource",
    "ModelComparison",
    "ModelRow",
    "RocCurve",
    "SlideFROC",
    "auc_ci",
    "choose_detection_params",
    "compare_auc",
    "compare_models",
    "detect_lesions",
    "evaluation_mask",
    "format_p_value",
    "froc",
    "itc_labels",
    "read_detections_csv",
    "roc_auc",
    "roc_curve",
    "write_detections_csv",
]
