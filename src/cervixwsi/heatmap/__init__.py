"""Tumor-probability heatmaps: one pixel per patch, streamed, resumable.

The study turns every 256×256 level-0 patch of tissue into one pixel of a
tumor-probability map.  :class:`HeatmapGenerator` does that for any
:class:`PatchPredictor` (a Keras :class:`~cervixwsi.models.PatchClassifier`,
an :class:`~cervixwsi.models.EnsembleClassifier`, an ONNX model, a
scikit-learn pipeline, ...): it finds the tissue
(:class:`~cervixwsi.tissue.TissueMasker`), lays the patch grid over it
(:class:`~cervixwsi.tiling.PatchGrid`), reads and decodes batches of patches in
background threads a bounded number of batches ahead of the predictor, and writes each
prediction to its heatmap pixel.  With ``out=`` a zarr directory, results are
stored as batches finish, and running again continues where it stopped.

This module never imports TensorFlow.

Geometry
--------
With a stride of ``s`` level-0 pixels (``stride`` is given in pixels of the
patches' level; by default the patch size) the heatmap is a
:class:`~cervixwsi.geometry.Raster` with ``downsample = s``: pixel
``(row, col)`` covers the level-0 square ``[col*s, (col+1)*s) x [row*s, (row+1)*s)``,
and the patch at grid position ``(row, col)`` has its top-left corner at
``(col*s, row*s)``.  When the stride equals the patch size, each pixel is its
patch's probability.  When the stride is smaller (it must divide the patch
size), a patch covers ``k x k`` pixels (``k = patch / stride``) and each pixel
is the **mean of the predictions of all predicted patches that cover it**.
Pixels covered by no predicted patch (not enough tissue) are NaN; the
heatmap's tissue mask, on the same grid, is the pixels that were predicted.

Modules: ``_heatmap`` (:class:`Heatmap`, :class:`HeatmapInfo`, saving and exporting),
``_overlay`` (the picture over the slide and its key), ``_generator``
(:class:`PatchPredictor`, :class:`HeatmapGenerator`), ``_runstore`` (the zarr store of
a resumable run), ``_plan`` (the positions a run predicts) and ``_mining``
(:func:`mine_hard_negatives`, :func:`add_hard_negatives`: a first model's false
positives on the training slides, added to its patch store as normal patches).
"""

from cervixwsi.heatmap._generator import HeatmapGenerator, PatchPredictor
from cervixwsi.heatmap._generator import predictor_name as predictor_name  # not in __all__
from cervixwsi.heatmap._heatmap import Heatmap, HeatmapInfo
from cervixwsi.heatmap._mining import add_hard_negatives, mine_hard_negatives

__all__ = [
    "Heatmap",
    "HeatmapGenerator",
    "HeatmapInfo",
    "PatchPredictor",
    "add_hard_negatives",
    "mine_hard_negatives",
]
