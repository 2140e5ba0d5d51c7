"""Resumable on-disk stores: one layer for every zarr store cervixwsi builds and resumes.

A long job (extracting patches, predicting a heatmap) writes its results into a zarr v3
group as it goes, so that a rerun after an interruption continues where it stopped.  Such
a store must be recognised, must not be resumed with other settings, and must never be
left half-made.  This module is the one place those rules live:

* the group's attributes ``format`` (e.g. ``"cervixwsi.PatchStore"``), ``format_version``,
  ``cervixwsi_version`` (the version that made it), ``identity`` (the settings it was made
  with, as JSON) and ``complete`` (set by the job when it has finished);
* :meth:`StoreFormat.create_or_resume` makes a new store in a temporary sibling
  (:func:`cervixwsi._io.atomic_path`) and renames it into place once its ``initialize``
  step has run, so an interruption while it is being laid out leaves nothing behind; an
  existing store is checked (a zarr group, this format, a version this cervixwsi reads,
  the same identity) and reopened to continue.  Another identity is refused with one
  :class:`~cervixwsi.errors.StoreMismatchError` that lists every difference;
* :meth:`StoreFormat.open` opens an existing store with the same checks, for reading;
* :func:`mark_complete` and :attr:`OpenedStore.complete` record and read completion.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from cervixwsi.errors import ResultFileError, StoreMismatchError
>>> fmt = StoreFormat("cervixwsi.Demo", 1, kind="demo store", error=ResultFileError)
>>> def initialize(group):
...     _ = group.create_array("values", shape=(4,), dtype="float32", fill_value=0.0)
>>> with tempfile.TemporaryDirectory() as d:
...     path = Path(d) / "run.zarr"
...     first = fmt.create_or_resume(path, {"seed": 1, "size": 4}, initialize)
...     again = fmt.create_or_resume(path, {"seed": 1, "size": 4}, initialize)
...     first.created, again.created, again.identity, again.complete
...     try:
...         fmt.create_or_resume(path, {"seed": 2, "size": 8}, initialize)
...     except StoreMismatchError as exc:
...         print(str(exc).split(" was made with ")[1])
(True, False, {'seed': 1, 'size': 4}, False)
other seed: 1 -> 2, size: 4 -> 8; use another path, or delete it
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cervixwsi._io import atomic_path, is_empty_dir
from cervixwsi._validate import is_int
from cervixwsi._version import __version__
from cervixwsi.errors import StoreMismatchError

__all__ = [
    "Comparer",
    "Describer",
    "Migration",
    "OpenedStore",
    "StoreFormat",
    "jsonable",
    "mark_complete",
    "same_json",
]

#: ``describe[key](old, new)``: a difference of one identity key in words.
Describer = Callable[[Any, Any], str]
#: ``compare[key](old, new)``: True when two recorded values count as the same.
Comparer = Callable[[Any, Any], bool]
#: ``migrate(attrs, path)``: the attributes of an older store in the current layout.
Migration = Callable[[dict[str, Any], Path], dict[str, Any]]


def jsonable(value: Any) -> Any:
    """``value`` as JSON stores it: tuples become lists, NumPy scalars Python numbers.

    Examples
    --------
    >>> jsonable({"size": (np.int64(3), 4.5), 1: np.bool_(True)})
    {'size': [3, 4.5], '1': True}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal (NaN equals NaN; an int equals the same float).

    Examples
    --------
    >>> same_json({"a": [1, float("nan")]}, {"a": [1.0, float("nan")]})
    True
    >>> same_json([1, 2], [2, 1]), same_json(True, 1)
    (False, False)
    """
    a, b = jsonable(a), jsonable(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _number(a) and _number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and bool(a == b)


def same_json_since(old: Any, new: Any, added: Mapping[str, Any]) -> bool:
    """:func:`same_json` of recorded parameters, keys ``added`` since counting as their default.

    A parameter added after a file was written is missing from its record; ``added``
    maps each such key to the value the record meant (the behaviour before the key
    existed), so an old record equals a new one that leaves the key at that value.

    Examples
    --------
    >>> same_json_since({"level": 0}, {"level": 0, "mpp": None}, {"mpp": None})
    True
    >>> same_json_since({"level": 0}, {"level": 0, "mpp": 0.5}, {"mpp": None})
    False
    """
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return same_json(old, new)
    return same_json({**added, **old}, {**added, **new})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _what_is(path: Path) -> str:
    """What is at ``path``, in words, for an error message."""
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    if path.is_file():
        size = path.stat().st_size
        return f"a file of {size} byte{'' if size == 1 else 's'}"
    if not path.is_dir():
        return "neither a file nor a directory"
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        return f"a directory that cannot be listed ({exc})"
    if not entries:
        return "an empty directory"
    shown = ", ".join(repr(e) for e in entries[:3])
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    return f"a directory holding {shown}{more}, without zarr v3 metadata (zarr.json)"


def mark_complete(group: Any, complete: bool = True) -> None:
    """Record in a store's attributes that its job has (or has not) finished.

    ``group`` is the store's zarr group, opened for writing (``OpenedStore.group`` from
    :meth:`StoreFormat.create_or_resume`, or ``StoreFormat.open(path, mode="r+")``).
    """
    group.attrs["complete"] = bool(complete)


@dataclass(frozen=True, eq=False)
class OpenedStore:
    """A store checked and opened by :class:`StoreFormat`.

    Attributes
    ----------
    path : Path
        Where the store is.
    group : zarr.Group
        Its zarr group (read-only from :meth:`StoreFormat.open` by default, writable from
        :meth:`StoreFormat.create_or_resume`).
    attrs : dict
        Its attributes, in the layout of the current format version (older stores are
        passed through the format's ``migrate``).
    created : bool
        True when :meth:`StoreFormat.create_or_resume` has just made it, False when an
        existing store was opened.
    """

    path: Path
    group: Any
    attrs: dict[str, Any]
    created: bool = False

    @property
    def version(self) -> int:
        """The format version the store was written in."""
        return int(self.attrs["format_version"])

    @property
    def identity(self) -> dict[str, Any]:
        """The settings the store was made with (``{}`` when it records none)."""
        value = self.attrs.get("identity")
        return dict(value) if isinstance(value, Mapping) else {}

    @property
    def complete(self) -> bool:
        """True once the job has recorded that it finished (:func:`mark_complete`)."""
        return self.attrs.get("complete") is True


@dataclass(frozen=True)
class StoreFormat:
    """One kind of resumable store: its format name, version and words for messages.

    Parameters
    ----------
    name : str
        The ``format`` attribute, e.g. ``"cervixwsi.PatchStore"``.
    version : int
        The ``format_version`` this cervixwsi writes; stores of a newer version are
        refused (upgrade cervixwsi), older ones down to ``oldest`` are read.
    kind : str
        The store in words, e.g. ``"patch store"`` (``"no patch store at ..."``).
    error : type of Exception
        Raised (with a message naming the path and what is there) when a path holds no
        store of this kind: missing, not a zarr group, another format, an unreadable
        version.  E.g. :class:`~cervixwsi.errors.PatchStoreError`.  Another identity is
        always a :class:`~cervixwsi.errors.StoreMismatchError`.
    oldest : int
        The oldest format version still read, default 1.
    migrate : callable, optional
        ``migrate(attrs, path) -> attrs``: the attributes of a store older than
        ``version`` in the current layout (in memory: the store is not rewritten), e.g.
        its ``identity`` gathered from where the old version kept it.  It may raise
        ``error`` for an old store that cannot be used.
    advice : str
        What to do about a refused identity, ending the message.
    """

    name: str
    version: int
    kind: str
    error: type[Exception]
    oldest: int = 1
    migrate: Migration | None = None
    advice: str = "use another path, or delete it"

    # --- reading --------------------------------------------------------------------

    def open(self, path: str | os.PathLike[str], *, mode: Literal["r", "r+"] = "r") -> OpenedStore:
        """Open the existing store at ``path``, checking its format and version.

        Raises
        ------
        error
            If there is nothing at ``path`` (``"no <kind> at <path>"``), it is not a zarr
            group (the message says what it is), it is a store of another format, or of a
            version this cervixwsi does not read (newer: upgrade cervixwsi).
        """
        where = Path(path)
        if not where.exists() and not where.is_symlink():
            raise self.error(f"no {self.kind} at {where}")
        group, attrs = self._check(where, mode, prefix="")
        return OpenedStore(where, group, attrs)

    def _check(self, path: Path, mode: str, *, prefix: str) -> tuple[Any, dict[str, Any]]:
        """The group and (migrated) attributes of the store at ``path``, after the checks."""
        import zarr

        if not (path.is_dir() and (path / "zarr.json").is_file()):
            raise self.error(f"{path} {prefix}is not a zarr store: it is {_what_is(path)}")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
            attrs = dict(group.attrs)
        except Exception as exc:  # zarr raises many types for a broken store
            raise self.error(f"{path} {prefix}is not a readable zarr group: {exc}") from exc
        found = attrs.get("format")
        if found != self.name:
            what = "no cervixwsi format" if found is None else f"the format {found!r}"
            raise self.error(f"{path} {prefix}is not a cervixwsi {self.kind}: it has {what}")
        recorded: Any = attrs.get("format_version")
        made_by = attrs.get("cervixwsi_version", "an unknown version")
        if not is_int(recorded):
            raise self.error(
                f"{path} is a {self.kind} without a valid format_version ({recorded!r}): "
                "it is corrupt"
            )
        version = int(recorded)
        if version > self.version:
            raise self.error(
                f"{path} is a {self.kind} of format version {version}, made by cervixwsi "
                f"{made_by}; this cervixwsi ({__version__}) reads versions up to "
                f"{self.version}: upgrade cervixwsi"
            )
        if version < self.oldest:
            raise self.error(
                f"{path} is a {self.kind} of format version {version}, made by cervixwsi "
                f"{made_by}; this cervixwsi ({__version__}) reads versions {self.oldest} to "
                f"{self.version}: make it again"
            )
        if version < self.version and self.migrate is not None:
            attrs = self.migrate(attrs, path)
        return group, attrs

    # --- making or resuming -----------------------------------------------------------

    def create_or_resume(
        self,
        path: str | os.PathLike[str],
        identity: Mapping[str, Any],
        initialize: Callable[[Any], None],
        *,
        describe: Mapping[str, Describer] | None = None,
        compare: Mapping[str, Comparer] | None = None,
    ) -> OpenedStore:
        """Make the store at ``path``, or reopen the one there to continue its job.

        Parameters
        ----------
        path : str or PathLike
            The store (a directory).
        identity : mapping
            The settings that decide what the store holds (JSON-compatible; tuples and
            NumPy scalars are converted).  Recorded in a new store; compared with what an
            existing one recorded.
        initialize : callable
            ``initialize(group)`` lays out a new store: creates its arrays and any
            attributes besides the layer's.  It is called on a zarr group in a temporary
            sibling of ``path`` whose ``format``, ``format_version``,
            ``cervixwsi_version``, ``identity`` and ``complete=False`` are already set;
            when it returns, the sibling is renamed to ``path``.  If it raises (or the
            process is interrupted), the sibling is removed and ``path`` is left as it
            was.  It is not called for an existing store.
        describe : mapping of str to callable, optional
            Per identity key, ``describe[key](old, new) -> str``: how a difference reads
            in the mismatch message (default ``"key: old -> new"``).
        compare : mapping of str to callable, optional
            Per identity key, ``compare[key](old, new) -> bool``: whether the recorded
            ``old`` and the new value count as the same (default: equal as JSON, see
            :func:`same_json`), e.g. a tolerance for floating-point fingerprints.

        Returns
        -------
        OpenedStore
            Its group opened for writing; ``created`` says whether it is new.

        Raises
        ------
        StoreMismatchError
            If the store at ``path`` was made with another identity; the message lists
            every difference.
        error
            If ``path`` holds something that is not a store of this format (a file, a
            directory of other things, another zarr group), or one of a version this
            cervixwsi does not read.  An empty directory is built into.
        """
        where = Path(path)
        new = jsonable(dict(identity))
        if (where.exists() or where.is_symlink()) and not is_empty_dir(where):
            return self._resume(where, new, describe, compare)
        import zarr

        where.parent.mkdir(parents=True, exist_ok=True)
        laid_out = False
        try:
            with atomic_path(where) as tmp:
                group = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
                group.attrs.update(
                    {
                        "format": self.name,
                        "format_version": self.version,
                        "cervixwsi_version": __version__,
                        "identity": new,
                        "complete": False,
                    }
                )
                initialize(group)
                laid_out = True
        except OSError:
            # Another process made the store while this one laid out its own: continue
            # with theirs if it is the same job (else the usual refusal).
            if laid_out and where.exists() and not is_empty_dir(where):
                return self._resume(where, new, describe, compare)
            raise
        group = zarr.open_group(str(where), mode="r+", zarr_format=3)
        return OpenedStore(where, group, dict(group.attrs), created=True)

    def _resume(
        self,
        path: Path,
        new: dict[str, Any],
        describe: Mapping[str, Describer] | None,
        compare: Mapping[str, Comparer] | None,
    ) -> OpenedStore:
        group, attrs = self._check(path, "r+", prefix="exists and ")
        opened = OpenedStore(path, group, attrs)
        differences = self.differences(opened.identity, new, describe, compare)
        if differences:
            raise StoreMismatchError(
                f"the {self.kind} {path} was made with other {', '.join(differences)}; "
                f"{self.advice}"
            )
        return opened

    @staticmethod
    def differences(
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        describe: Mapping[str, Describer] | None = None,
        compare: Mapping[str, Comparer] | None = None,
    ) -> list[str]:
        """Every difference between a recorded identity and a new one, in words.

        Keys in the order of ``new``, then those only ``old`` has.  A key one side lacks
        reads ``"key: (not recorded) -> new"`` / ``"key: old -> (not given)"``.

        Examples
        --------
        >>> StoreFormat.differences({"a": 1, "b": [1, 2], "c": 0}, {"a": 1, "b": (1, 3), "d": 4},
        ...                         describe={"b": lambda old, new: "b (its second value)"})
        ['b (its second value)', 'd: (not recorded) -> 4', 'c: 0 -> (not given)']
        """
        describe = describe or {}
        compare = compare or {}
        out = []
        for key in [*new, *(k for k in old if k not in new)]:
            if key not in old:
                out.append(f"{key}: (not recorded) -> {jsonable(new[key])!r}")
                continue
            if key not in new:
                out.append(f"{key}: {old[key]!r} -> (not given)")
                continue
            theirs, ours = jsonable(old[key]), jsonable(new[key])
            if compare.get(key, same_json)(theirs, ours):
                continue
            words = describe.get(key)
            out.append(words(theirs, ours) if words else f"{key}: {theirs!r} -> {ours!r}")
        return out
