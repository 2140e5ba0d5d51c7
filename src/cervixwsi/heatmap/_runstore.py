"""The zarr store of a heatmap: the finished map and the state of a resumable run.

Both are one of cervixwsi's resumable stores (:mod:`cervixwsi._store`), format
``"cervixwsi.heatmap"``:

* a finished heatmap holds the ``probability`` and ``tissue`` arrays, the attributes
  ``downsample``, ``slide_dimensions``, ``mpp`` and ``info`` (:func:`_write_final`) and
  ``complete=True``;
* a resumable run (:class:`_RunStore`) also holds the plan (``plan_x``, ``plan_y``), the
  per-position probabilities and done flags, and as its ``identity`` the run's settings
  (slide, patch size, level, stride, minimum tissue, predictor name, a digest of the
  plan) and the predictor's predictions on a fixed probe batch, so that a later run
  continues it only when it is the same run.  It is laid out beside its place and renamed
  into it, so an interruption while it is made leaves nothing behind;
* a heatmap saved by :meth:`Heatmap.save` records an empty identity
  (:func:`_save_heatmap` writes it beside its place too, and replaces an older heatmap
  only once the new one is whole).

Format version 2 keeps the identity in the layer's ``identity`` attribute; version 1
kept the run's settings in ``signature`` (``{}`` for a saved heatmap) and the probe
predictions in ``probe``.  Version-1 stores are read, and resumed, as they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_replace, is_empty_dir
from cervixwsi._store import StoreFormat, mark_complete
from cervixwsi.errors import HeatmapError, StoreMismatchError
from cervixwsi.heatmap._plan import _check_predictions, _Plan, public_name

if TYPE_CHECKING:
    from cervixwsi.heatmap._generator import PatchPredictor
    from cervixwsi.heatmap._heatmap import Heatmap, HeatmapInfo

# Chunk length of the per-position arrays of a resumable store.
_PLAN_CHUNK = 4096

_PROBE_SEED = 20261125
# Predictions on the probe batch closer than this are the same predictor.
_PROBE_ATOL = 1e-4


def _from_version_1(attrs: dict[str, Any], path: pathlib.Path) -> dict[str, Any]:
    """A version-1 store's attributes in the version-2 layout (its identity gathered)."""
    signature = attrs.get("signature")
    identity = dict(signature) if isinstance(signature, dict) else {}
    if "probe" in attrs:
        identity["probe"] = attrs["probe"]
    return {**attrs, "identity": identity, "complete": attrs.get("complete") is True}


#: The store as a run's ``out=``: what is not a heatmap store is a StoreMismatchError.
_RUN_FORMAT = StoreFormat(
    "cervixwsi.heatmap",
    2,
    kind="heatmap store",
    error=StoreMismatchError,
    migrate=_from_version_1,
    advice="use another out= or delete it",
)
#: The same format read as a heatmap (:meth:`Heatmap.load`, :meth:`Heatmap.save`).
_HEATMAP_FORMAT = dataclasses.replace(_RUN_FORMAT, error=HeatmapError)


def _probe_batch(patch_size: int) -> npt.NDArray[np.uint8]:
    """A fixed batch of patches whose predictions fingerprint a predictor."""
    rng = np.random.default_rng(_PROBE_SEED)
    base = rng.integers(0, 256, (2, patch_size, patch_size, 3), dtype=np.uint8)
    pinkish = np.empty((2, patch_size, patch_size, 3), np.uint8)
    pinkish[..., 0] = rng.integers(150, 256, (2, patch_size, patch_size))
    pinkish[..., 1] = rng.integers(40, 160, (2, patch_size, patch_size))
    pinkish[..., 2] = rng.integers(120, 220, (2, patch_size, patch_size))
    return np.concatenate([base, pinkish])


def _same_probe(old: Any, new: Any) -> bool:
    """Whether two recorded probe predictions come from the same predictor."""
    try:
        a, b = np.asarray(old, np.float64), np.asarray(new, np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, atol=_PROBE_ATOL))


def _rounded(values: Any) -> Any:
    if isinstance(values, list) and all(isinstance(v, int | float) for v in values):
        return [round(float(v), 4) for v in values]
    return values


def _describe_probe(old: Any, new: Any) -> str:
    return (
        f"probe predictions ({_rounded(old)} -> {_rounded(new)}: the predictor differs "
        "on a fixed probe batch)"
    )


def _describe_plan(old: Any, new: Any) -> str:
    return "plan (the patch positions to predict: another tissue mask or grid)"


_DESCRIBE = {"probe": _describe_probe, "plan": _describe_plan}


def _same_predictor(old: Any, new: Any) -> bool:
    """Predictor names agree, ignoring private modules (renamed when a package is split)."""
    return isinstance(old, str) and isinstance(new, str) and public_name(old) == public_name(new)


_COMPARE = {"probe": _same_probe, "predictor": _same_predictor}


class _RunStore:
    """The zarr directory of a resumable run: the plan, per-position results, done flags."""

    def __init__(self, group: Any, path: pathlib.Path) -> None:
        self._group = group
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        plan: _Plan,
        info: HeatmapInfo,
        predictor: PatchPredictor,
        patch_size: int,
    ) -> _RunStore:
        """Make the run's store at ``out``, or reopen the one there to continue it.

        Raises
        ------
        StoreMismatchError
            If ``out`` holds something that is not a heatmap store, or the store of a run
            with other settings or another predictor (the message lists every difference).
        """
        probe = _check_predictions(
            predictor.predict(_probe_batch(patch_size)),
            np.arange(4, dtype=np.intp),
            -1,
            dataclasses.replace(plan, x=np.zeros(4, np.int64), y=np.zeros(4, np.int64)),
        )
        identity = {
            "slide_id": info.slide_id,
            "patch_size": info.patch_size,
            "level": info.level,
            "stride": info.stride,
            "min_tissue": info.min_tissue,
            "predictor": info.predictor,
            "plan": plan.digest(),
            "probe": probe.tolist(),
        }

        def initialize(group: Any) -> None:
            n = len(plan.x)
            chunks = (max(1, min(_PLAN_CHUNK, n)),)
            group.create_array("plan_x", data=plan.x, chunks=chunks)
            group.create_array("plan_y", data=plan.y, chunks=chunks)
            group.create_array(
                "plan_probability", shape=(n,), dtype="float32", chunks=chunks, fill_value=np.nan
            )
            group.create_array(
                "plan_done", shape=(n,), dtype="bool", chunks=chunks, fill_value=False
            )

        opened = _RUN_FORMAT.create_or_resume(
            out, identity, initialize, describe=_DESCRIBE, compare=_COMPARE
        )
        return cls(opened.group, opened.path)

    def probabilities(self) -> npt.NDArray[np.float32]:
        return np.asarray(self._group["plan_probability"][...], dtype=np.float32)

    def done(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self._group["plan_done"][...], dtype=bool)

    def write(self, batch: npt.NDArray[np.intp], values: npt.NDArray[np.float32]) -> None:
        with self._lock:
            lo, hi = int(batch[0]), int(batch[-1]) + 1
            if hi - lo == len(batch):  # contiguous (always, in generation order)
                self._group["plan_probability"][lo:hi] = values
                self._group["plan_done"][lo:hi] = True
            else:
                self._group["plan_probability"].set_coordinate_selection((batch,), values)
                self._group["plan_done"].set_coordinate_selection((batch,), True)

    def finish(self, heatmap: Heatmap) -> None:
        _write_final(self._group, heatmap)


def _write_final(group: Any, heatmap: Heatmap) -> None:
    """Write the finished heatmap into a store's group and mark the store complete.

    The layer's attributes (format, version, identity) are left as they are: a resumed
    version-1 run stays a version-1 store.
    """
    rows, cols = heatmap.shape
    chunks = (min(rows, 1024), min(cols, 1024))
    group.create_array("probability", data=heatmap.array, chunks=chunks, overwrite=True)
    group.create_array(
        "tissue", data=heatmap.tissue_mask.array.astype(bool), chunks=chunks, overwrite=True
    )
    attrs = {
        "downsample": heatmap.downsample,
        "slide_dimensions": list(heatmap.slide_dimensions),
        "mpp": heatmap.mpp,
        "info": heatmap.info.to_json(),
    }
    group.attrs.update(json.loads(json.dumps(attrs)))
    mark_complete(group)


def _save_heatmap(heatmap: Heatmap, path: pathlib.Path) -> None:
    """Write ``heatmap`` as a store at ``path``, replacing a heatmap store there whole.

    See :meth:`Heatmap.save` for the steps and what a crash between them leaves.
    """
    if (path.exists() or path.is_symlink()) and not is_empty_dir(path):
        try:
            _HEATMAP_FORMAT.open(path)
        except HeatmapError as exc:
            what = str(exc)
            what = what[len(f"{path} ") :] if what.startswith(f"{path} ") else f"is {what}"
            raise HeatmapError(
                f"will not save a heatmap over {path}, which {what}; "
                "save to another path, or delete it"
            ) from exc
    with atomic_replace(path) as tmp:
        # The layer lays the store out in a sibling of ``tmp`` and renames it there.
        _HEATMAP_FORMAT.create_or_resume(tmp, {}, lambda group: _write_final(group, heatmap))
