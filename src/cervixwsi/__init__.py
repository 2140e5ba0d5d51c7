"""cervixwsi: whole-slide-image analysis of cervical squamous cell carcinoma.

The pipeline of the study, one module per stage: :mod:`cervixwsi.slide`
(pyramidal slides), :mod:`cervixwsi.tissue` (tissue detection),
:mod:`cervixwsi.tiling` (patch grids, sampling, patch stores),
:mod:`cervixwsi.models` (Keras patch CNNs; the only module that imports
TensorFlow), :mod:`cervixwsi.heatmap` (tumor-probability maps),
:mod:`cervixwsi.features` (heatmap features), :mod:`cervixwsi.slide_classifier`
(the random forest) and :mod:`cervixwsi.metrics` (ROC AUC, FROC).
:mod:`cervixwsi.cohort` runs any per-slide stage over many slides on any executor or a
Dask cluster, and :mod:`cervixwsi.cli` is the ``cervixwsi`` command line.

``import cervixwsi`` is cheap: it imports neither TensorFlow nor the heavier
submodules until they are used.

Examples
--------
>>> import cervixwsi
>>> cervixwsi.geometry.Box(0, 0, 256, 256).area
65536
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cervixwsi import errors, geometry
from cervixwsi._version import __version__
from cervixwsi.errors import CervixWSIError
from cervixwsi.geometry import Box, Raster

if TYPE_CHECKING:
    from cervixwsi.slide import ArraySlide, Slide

__all__ = [
    "ArraySlide",
    "Box",
    "CervixWSIError",
    "Raster",
    "Slide",
    "__version__",
    "errors",
    "geometry",
]

_SUBMODULES = {
    "annotations",
    "cli",
    "cohort",
    "features",
    "heatmap",
    "metrics",
    "models",
    "plotting",
    "slide",
    "slide_classifier",
    "synthetic",
    "tiling",
    "tissue",
}
_LAZY_NAMES = {"Slide": "cervixwsi.slide", "ArraySlide": "cervixwsi.slide"}


def __getattr__(name: str) -> Any:
    """Import submodules and public names on first use (keeps ``import cervixwsi`` fast)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"cervixwsi.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'cervixwsi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | _SUBMODULES)
