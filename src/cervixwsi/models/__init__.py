"""Patch classifiers: Keras CNNs that give each patch a tumor probability.

The study's patch models are Inception-v3, InceptionResNet-v2 and ResNet50
(``keras.applications``, top replaced by global average pooling and a
softmax) trained on 224-pixel random crops of 256-pixel patches, and their
ensemble (model D, the mean probability). A small CNN makes CPU work and
tests practical.

- :func:`build_model` makes an (uncompiled) Keras model that takes uint8
  patches, with the architecture's input scaling inside it;
- :class:`PatchClassifier` trains one as in the study (augmentation in the
  input pipeline, Adam with exponential decay and ×0.1 on plateau,
  checkpoints, resumable) and predicts tumor probabilities;
- :class:`EnsembleClassifier` averages several predictors;
- :func:`patch_dataset` gives a :class:`~cervixwsi.tiling.PatchStore` as a
  ``tf.data.Dataset`` of batches (the training pipeline, without augmentation).
- :func:`assign_gpu` puts a worker process on one GPU (round robin by
  :func:`worker_index`); :func:`training_strategy` is what training runs under
  (TensorFlow's mirrored strategy over every GPU when there are several).

Inference runs on TensorFlow or, with ``engine="onnxruntime"``, on the same
network exported to ONNX and checked against TensorFlow (about 1.3× faster on
CPUs; ``cervixwsi[onnx]``).

Both classifiers have ``predict(uint8 (N, H, W, 3)) -> float32 (N,)``, the
``PatchPredictor`` protocol the heatmap stage consumes.

This is the only cervixwsi module that uses TensorFlow, and it imports it
only when a model is built, trained or loaded. Before TensorFlow is first
imported it sets ``TF_ENABLE_ONEDNN_OPTS=1`` (oneDNN kernels: 1.3-2.6× faster
on CPUs where TensorFlow leaves them off) and ``TF_CPP_MIN_LOG_LEVEL=3``
unless the user has set them, and right after the import it turns on memory
growth on every GPU (each process takes only the GPU memory it uses;
``CERVIXWSI_TF_MEMORY_GROWTH=0`` opts out). Nothing is ever downloaded.

Quiet logs: TensorFlow's C++ code writes notes to standard error that read
like failures but are not, such as ``E0000 ... oneDNN supports DT_UINT8 only
on platforms with AVX-512. Falling back to the default Eigen-based
implementation`` (a uint8 operation runs on TensorFlow's ordinary kernels
instead of oneDNN's) and, while its libraries load, ``oneDNN custom operations
are on`` (twice). Level 3 hides its INFO, WARNING and ERROR lines, and the
load-time notes, which TensorFlow logs before it reads the level, are removed
from what the import writes (see ``cervixwsi.models._tf``); errors still
raise Python exceptions. To see the logs, set ``TF_CPP_MIN_LOG_LEVEL=0`` (or
1, 2) before importing ``cervixwsi.models``: do so when setting up a GPU, since
TensorFlow reports a CUDA or driver problem in such ERROR lines and then runs on
the CPU.

Examples
--------
>>> from cervixwsi.models import ARCHITECTURES
>>> ARCHITECTURES
('inception_v3', 'inception_resnet_v2', 'resnet50', 'small_cnn')
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from cervixwsi.models._architectures import (
    ARCHITECTURES,
    build_model,
    imagenet_weights_path,
)
from cervixwsi.models._augment import Augmentation, augment_patch
from cervixwsi.models._classifier import PatchClassifier
from cervixwsi.models._colour import hed_to_rgb, rgb_to_hed
from cervixwsi.models._data import ArrayPatchSource, PatchSource, patch_dataset
from cervixwsi.models._devices import assign_gpu, training_strategy, worker_index
from cervixwsi.models._engine import ENGINES, EngineFallbackWarning
from cervixwsi.models._ensemble import EnsembleClassifier
from cervixwsi.models._training import TrainingHistory

__all__ = [
    "ARCHITECTURES",
    "ENGINES",
    "ArrayPatchSource",
    "Augmentation",
    "EngineFallbackWarning",
    "EnsembleClassifier",
    "PatchClassifier",
    "PatchSource",
    "TrainingHistory",
    "assign_gpu",
    "augment_patch",
    "build_model",
    "hed_to_rgb",
    "imagenet_weights_path",
    "patch_dataset",
    "rgb_to_hed",
    "training_strategy",
    "worker_index",
]
