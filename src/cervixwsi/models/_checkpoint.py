"""The files of a PatchClassifier: saved models, training checkpoints, their settings.

A saved classifier is a standard ``.keras`` archive with the classifier's settings
added as ``cervixwsi.json``; a checkpoint (``last.keras``, ``best.keras``) is one with
the training state added as ``cervixwsi_checkpoint.json``, so model, optimizer and
state are replaced together.  Every file is written under a temporary name and renamed
into place (:mod:`cervixwsi._io`), with the permissions the umask allows.
"""

from __future__ import annotations

import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cervixwsi._io import atomic_path
from cervixwsi.errors import ModelError, WeightsError

if TYPE_CHECKING:
    import keras

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SETTINGS_MEMBER",
    "STATE_MEMBER",
    "STATE_NAME",
    "checkpoint_epoch",
    "load_keras",
    "read_checkpoint",
    "read_settings",
    "save_keras",
]

logger = logging.getLogger(__name__)

SETTINGS_MEMBER = "cervixwsi.json"  # the classifier's settings, stored inside the .keras zip
FORMAT = "cervixwsi.PatchClassifier"
FORMAT_VERSION = 1
STATE_NAME = "state.json"  # a readable copy; the truth is inside last.keras
STATE_MEMBER = "cervixwsi_checkpoint.json"


def _keras_save(model: keras.Model, path: Path) -> None:
    """``model.save(path)`` without Keras 3.15's numpy-2 deprecation noise (one per variable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
        )
        model.save(path)


def save_keras(model: keras.Model, path: Path, members: dict[str, Any] | None = None) -> None:
    """Save ``model`` to ``path`` with each of ``members`` as JSON inside, in one rename.

    Keras writes only to names ending in ``.keras``, so the archive is made under such
    a name beside the temporary one, then moved onto it.
    """
    with atomic_path(path) as tmp:
        staged = tmp.with_name(f"{tmp.name}.keras")
        try:
            _keras_save(model, staged)
            if members:
                with zipfile.ZipFile(staged, "a") as zf:
                    for name, value in members.items():
                        zf.writestr(name, json.dumps(value, indent=2))
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch recorded inside a checkpoint archive, or ``None`` (missing, unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return int(json.loads(zf.read(STATE_MEMBER))["epoch"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def load_keras(path: Path, *, compile: bool) -> keras.Model:
    """Load a ``.keras`` file (with cervixwsi's custom layers), as a ``WeightsError`` if bad."""
    import cervixwsi.models._keras_objects  # noqa: F401  (registers the custom objects)
    from cervixwsi.models._tf import keras

    if not path.is_file():
        raise WeightsError(f"model file {path} does not exist")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # keras raises ValueError, OSError, zipfile errors, ...
        raise WeightsError(
            f"model file {path} cannot be loaded (corrupt or truncated?): {exc}"
        ) from exc


def read_checkpoint(
    directory: Path, params: dict[str, Any]
) -> tuple[keras.Model, dict[str, Any]] | None:
    """The model and training state of ``directory/last.keras``, or ``None`` without one.

    ``params`` are the resuming classifier's settings; the checkpoint's must match them
    except for the number of epochs (which may grow), the progress bar, the inference
    engine and the initial weights (already trained away).

    Raises
    ------
    ModelError
        An unreadable checkpoint, or one made with other settings.
    """
    last = directory / "last.keras"
    if not last.is_file():
        return None
    try:
        with zipfile.ZipFile(last) as zf:
            state = json.loads(zf.read(STATE_MEMBER))
        epoch = int(state["epoch"])
        saved = state["params"]
        state["history"] = [{k: float(v) for k, v in r.items()} for r in state["history"]]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"checkpoint {last} is unreadable ({exc}); delete it or pass resume=False"
        ) from exc
    free = {"epochs", "progress", "engine", "weights"}
    for key in [k for k in params if k not in free]:
        if key in saved and saved[key] != params[key]:
            raise ModelError(
                f"checkpoint in {directory} was made with {key}={saved[key]!r}, "
                f"this classifier has {key}={params[key]!r}; use another checkpoint_dir "
                "or resume=False"
            )
    model = load_keras(last, compile=True)
    logger.info("resuming from %s after epoch %d", directory, epoch)
    return model, state


def read_settings(src: Path) -> dict[str, Any]:
    """The settings a saved classifier holds (``cervixwsi.json``), checked for its format.

    Raises
    ------
    WeightsError
        Missing, truncated or corrupt file, or a ``.keras`` file without cervixwsi
        settings or of another format version.
    """
    if not src.is_file():
        raise WeightsError(f"model file {src} does not exist")
    try:
        with zipfile.ZipFile(src) as zf:
            settings: dict[str, Any] = json.loads(zf.read(SETTINGS_MEMBER))
    except KeyError:
        raise WeightsError(
            f"{src} is a Keras file without cervixwsi settings; load it with "
            "keras.saving.load_model or build_model(weights=...)"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"model file {src} is corrupt or truncated: {exc}") from exc
    if settings.get("format") != FORMAT or settings.get("version") != FORMAT_VERSION:
        raise WeightsError(
            f"{src} has format {settings.get('format')!r} version "
            f"{settings.get('version')!r}; expected {FORMAT!r} version {FORMAT_VERSION}"
        )
    return settings
