"""The exception hierarchy of cervixwsi.

Every error the library raises for a user's mistake or a bad file is a
:class:`CervixWSIError`, and also an instance of the builtin exception that
fits (:class:`ValueError` for bad arguments and data, :class:`OSError` for
files that cannot be opened or read), so both ``except CervixWSIError`` and
``except ValueError`` work as users expect.

Messages name what was wrong (the file, the level, the region, the
parameter) and what would have been valid.

Examples
--------
>>> from cervixwsi.errors import CervixWSIError, ParameterError
>>> try:
...     raise ParameterError("patch_size must be positive, got -3")
... except ValueError as exc:
...     isinstance(exc, CervixWSIError)
True
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "CervixWSIError",
    "ClassifierError",
    "FeatureError",
    "GeometryError",
    "HeatmapError",
    "MetricsError",
    "MissingExtraError",
    "ModelError",
    "NotFittedError",
    "ParameterError",
    "PatchStoreError",
    "PredictorError",
    "RegionError",
    "ResultFileError",
    "SamplingError",
    "SlideError",
    "SlideNotFoundError",
    "SlideOpenError",
    "SlideReadError",
    "StainError",
    "StoreMismatchError",
    "WeightsError",
]


class CervixWSIError(Exception):
    """Base class of every error raised by cervixwsi."""


class ParameterError(CervixWSIError, ValueError):
    """A parameter has an invalid value (named in the message with what is valid)."""


# --- slides ---------------------------------------------------------------------------


class SlideError(CervixWSIError):
    """Base class of errors about a slide file."""


class SlideOpenError(SlideError, OSError):
    """A slide cannot be opened: not a slide format, truncated, incomplete or unsupported."""


class SlideNotFoundError(SlideOpenError, FileNotFoundError):
    """The slide file does not exist."""


class MissingExtraError(SlideOpenError):
    """The slide's format needs an optional extra that is not installed.

    The message names the extra and the command that installs it, e.g.
    ``pip install 'cervixwsi[dicom]'`` for DICOM WSI.
    """


class SlideReadError(SlideError, OSError):
    """Pixels of an opened slide cannot be read (a corrupt or missing tile)."""


class RegionError(SlideError, ValueError):
    """A requested region is invalid: negative size, unknown level, bad location."""


class LevelError(RegionError, ParameterError):
    """A level or resolution the slide does not have: no such level, or no recorded mpp.

    Raised by :func:`cervixwsi.geometry.resolve_level`, the one rule every stage uses to
    choose a level, so the same request fails the same way everywhere.  It is both a
    :class:`RegionError` and a :class:`ParameterError` (and so a ``ValueError``).
    """


# --- geometry, annotations ------------------------------------------------------------


class GeometryError(CervixWSIError, ValueError):
    """Boxes or rasters that do not fit together (wrong slide size, bad downsample)."""


class AnnotationError(CervixWSIError, ValueError):
    """An annotation file or polygon is malformed."""


# --- tiling ---------------------------------------------------------------------------


class SamplingError(CervixWSIError, ValueError):
    """Patches cannot be sampled as asked (e.g. fewer valid positions than required)."""


class PatchStoreError(CervixWSIError, OSError):
    """A patch store is missing, corrupt, or was built with other parameters."""


class StoreMismatchError(CervixWSIError, ValueError):
    """An existing on-disk result was made with different parameters or another model."""


# --- models, heatmaps -----------------------------------------------------------------


class ModelError(CervixWSIError, ValueError):
    """A model cannot be built or used as asked (unknown architecture, bad input batch)."""


class WeightsError(ModelError):
    """Model weights cannot be loaded (missing, for another architecture, not local)."""


class PredictorError(CervixWSIError, ValueError):
    """A patch predictor returned something that is not a probability per patch."""


class StainError(CervixWSIError, ValueError):
    """Stains cannot be estimated from an image or slide (no tissue, one stain only)."""


class HeatmapError(CervixWSIError, ValueError):
    """A heatmap is malformed or cannot be made/loaded as asked."""


# --- features, classifier, metrics ----------------------------------------------------


class FeatureError(CervixWSIError, ValueError):
    """Heatmap features cannot be computed (e.g. NaN probabilities inside tissue)."""


class ClassifierError(CervixWSIError, ValueError):
    """The slide classifier got data it cannot use (mismatched features, one class)."""


class NotFittedError(ClassifierError, AttributeError):
    """An estimator was used before ``fit``."""


class MetricsError(CervixWSIError, ValueError):
    """Evaluation inputs are invalid (one class only, NaN scores, malformed detections)."""


class ResultFileError(CervixWSIError, OSError):
    """A saved result (feature table, slide classifier) is missing, corrupt or of another kind."""
