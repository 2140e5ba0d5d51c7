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
- :class:`EnsembleClassifier` averages several predictors.

Inference runs on TensorFlow or, with ``engine="onnxruntime"``, on the same
network exported to ONNX and checked against TensorFlow (about 1.3× faster on
CPUs; ``cervixwsi[onnx]``).

Both classifiers have ``predict(uint8 (N, H, W, 3)) -> float32 (N,)``, the
``PatchPredictor`` protocol the heatmap stage consumes.

This is the only cervixwsi module that uses TensorFlow, and it imports it
only when a model is built, trained or loaded. Before TensorFlow is first
imported it sets ``TF_ENABLE_ONEDNN_OPTS=1`` (oneDNN kernels: 1.3-2.6× faster
on CPUs where TensorFlow leaves them off) and ``TF_CPP_MIN_LOG_LEVEL=2``
unless the user has set them. Nothing is ever downloaded.

Examples
--------
>>> from cervixwsi.models import ARCHITECTURES
>>> ARCHITECTURES
('inception_v3', 'inception_resnet_v2', 'resnet50', 'small_cnn')
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from cervixwsi.models._architectures import (
    ARCHITECTURES,
    build_model,
    imagenet_weights_path,
)
from cervixwsi.models._augment import (
    Augmentation,
    augment_patch,
    hed_to_rgb,
    rgb_to_hed,
)
from cervixwsi.models._data import ArrayPatchSource, PatchSource
from cervixwsi.models._engine import ENGINES, EngineFallbackWarning
from cervixwsi.models._ensemble import EnsembleClassifier
from cervixwsi.models._training import PatchClassifier, TrainingHistory

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
    "augment_patch",
    "build_model",
    "hed_to_rgb",
    "imagenet_weights_path",
    "rgb_to_hed",
]
