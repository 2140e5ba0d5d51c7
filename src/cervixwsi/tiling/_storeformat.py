"""The on-disk format of a :class:`~cervixwsi.tiling.PatchStore`: version, names, migration.

A patch store is one of cervixwsi's resumable stores (:mod:`cervixwsi._store`), format
``"cervixwsi.PatchStore"`` version 2; stores of version 1 are read (and resumed) through
:func:`from_version_1`.  A rerun of ``PatchStore.build`` must match the recorded identity;
:func:`same_masker` compares the recorded tissue-masker parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cervixwsi._store import StoreFormat, same_json_since
from cervixwsi.errors import PatchStoreError
from cervixwsi.tissue import TissueMasker

__all__ = [
    "ADDITIONS",
    "FORMAT",
    "SAMPLED",
    "from_version_1",
    "recorded_masker",
    "same_masker",
]

# Version 1 kept the identity's keys as top-level attributes, with a "planned" flag set
# once the plan was written in place; version 2 keeps them in "identity" and is planned
# beside its place, so it is never half-made.
_IDENTITY_KEYS = ("slides", "sampler", "seed", "tumor_masks", "tissue_masks", "masker")


def from_version_1(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    """A version-1 store's attributes in the version-2 layout.

    Examples
    --------
    >>> from pathlib import Path
    >>> old = {"planned": True, "seed": 3, "slides": [], "patch_size": 64}
    >>> new = from_version_1(old, Path("p.zarr"))
    >>> new["identity"], new["complete"]
    ({'slides': [], 'seed': 3}, False)
    """
    if not attrs.get("planned"):
        raise PatchStoreError(
            f"{path} is a patch store whose planning was interrupted (by an older cervixwsi, "
            "which planned in place); delete it and build again"
        )
    identity = {key: attrs[key] for key in _IDENTITY_KEYS if key in attrs}
    return {**attrs, "identity": identity, "complete": attrs.get("complete", False)}


#: The patch store's format (name, version, migration of version 1).
FORMAT = StoreFormat(
    "cervixwsi.PatchStore",
    2,
    kind="patch store",
    error=PatchStoreError,
    migrate=from_version_1,
    advice="build into a new path (or delete it)",
)

#: The source of the patches ``PatchStore.build`` planned.
SAMPLED = "sampled"
#: The folder of a store that holds the patches added after its plan, one group per call.
ADDITIONS = "additions"

# Masker parameters added since stores were first made, with the value that stores
# recorded before them meant: an older store's masker lacks the key.
_ADDED_MASKER_PARAMS: dict[str, Any] = {"artifacts": None}


def same_masker(old: Any, new: Any) -> bool:
    """Whether two recorded tissue-masker parameters are the same masker.

    A parameter added since a store was made (``artifacts``) counts as its value then
    (``None``), so a store made before it resumes with a masker that leaves it unset.

    Examples
    --------
    >>> same_masker({"mpp": 8.0}, {"mpp": 8.0, "artifacts": None})
    True
    >>> same_masker({"mpp": 8.0}, {"mpp": 8.0, "artifacts": {"causes": ["pen"]}})
    False
    """
    return same_json_since(old, new, _ADDED_MASKER_PARAMS)


def recorded_masker(params: Any) -> TissueMasker | None:
    """The :class:`~cervixwsi.tissue.TissueMasker` of recorded masker parameters.

    ``None`` for ``None`` (the masks were given to ``PatchStore.build``); JSON lists
    become tuples, a recorded ``artifacts`` dict an
    :class:`~cervixwsi.tissue.ArtifactMasker`.

    Examples
    --------
    >>> recorded_masker({"mpp": 8.0}).mpp, recorded_masker(None)
    (8.0, None)
    """
    if params is None:
        return None
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in dict(params).items()
    }
    if isinstance(fields.get("artifacts"), dict):  # a masker with an ArtifactMasker
        from cervixwsi.tissue import ArtifactMasker

        recorded: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in fields["artifacts"].items()
        }
        fields["artifacts"] = ArtifactMasker(**recorded)
    return TissueMasker(**fields)
