"""The slides of a cohort run: :class:`SlideRef` and :func:`find_slides`."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from cervixwsi.errors import ParameterError

__all__ = ["SLIDE_SUFFIXES", "SlideRef", "SlideSource", "find_slides", "slide_id_of"]

#: File name endings taken as slides when a folder is listed (case-insensitive).
SLIDE_SUFFIXES: tuple[str, ...] = (
    ".svs",
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
    ".btf",
    ".qptiff",
    ".ndpi",
    ".scn",
    ".bif",
    ".mrxs",
    ".vms",
    ".vmu",
    ".dcm",
)


@dataclass(frozen=True)
class SlideRef:
    """One slide of a cohort run: its id, its file and what a manifest says of it.

    Attributes
    ----------
    slide_id : str
        The slide's id: the manifest's ``slide_id``, else the file name without its
        extension (``.ome.tif`` counts as one), as :attr:`cervixwsi.slide.Slide.name`.
        Results are stored under it (``<out>/tissue/<slide_id>.tissue.npz``).
    path : pathlib.Path
        The slide file, absolute (workers on other machines see the same path on a
        shared file system).
    label : str or None
        ``"tumor"`` / ``"normal"`` from a manifest.
    split : str or None
        ``"train"`` / ``"validation"`` / ``"test"`` from a manifest.
    annotation_path : pathlib.Path or None
        Tumor annotations (ASAP XML or GeoJSON) from a manifest.

    Examples
    --------
    >>> ref = SlideRef.from_path("/data/slides/case-7.ome.tif")
    >>> ref.slide_id, ref.label
    ('case-7', None)
    """

    slide_id: str
    path: Path
    label: str | None = None
    split: str | None = None
    annotation_path: Path | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> SlideRef:
        """A slide known by its file only (its id is the file name without extension)."""
        where = Path(path).absolute()
        return cls(slide_id_of(where), where)


#: What :func:`find_slides` accepts: a manifest CSV, a folder, a slide file, a
#: :class:`SlideRef`, a :class:`cervixwsi.synthetic.Cohort`, or an iterable of these.
SlideSource: TypeAlias = "str | os.PathLike[str] | SlideRef | Any | Iterable[Any]"


def slide_id_of(path: str | os.PathLike[str]) -> str:
    """A slide's id from its file name: the name without its extension.

    Examples
    --------
    >>> slide_id_of("a/b/tumor_001.tiff"), slide_id_of("x.OME.TIFF")
    ('tumor_001', 'x')
    """
    where = Path(path)
    for suffix in (".ome.tiff", ".ome.tif"):
        if where.name.lower().endswith(suffix):
            return where.name[: -len(suffix)]
    return where.stem


def _is_slide_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(SLIDE_SUFFIXES) and path.is_file()


def _from_folder(folder: Path) -> list[SlideRef]:
    found = sorted(p for p in folder.iterdir() if _is_slide_file(p))
    if not found:
        raise ParameterError(
            f"no slides in the folder {folder}: it has no file ending in "
            f"{', '.join(SLIDE_SUFFIXES)}"
        )
    return [SlideRef.from_path(p) for p in found]


def _optional_path(root: Path, value: str | None) -> Path | None:
    if value is None or not value.strip():
        return None
    return (root / value.strip()).absolute()


def _from_manifest(path: Path) -> list[SlideRef]:
    """The slides of a manifest CSV: a ``path`` column, optionally ``slide_id``, ``label``,
    ``split`` and ``annotation_path`` (paths relative to the manifest's folder)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            lines = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ParameterError(f"cannot read the manifest {path}: {exc}") from exc
    if "path" not in columns:
        raise ParameterError(
            f"{path} is not a slide manifest: it has no 'path' column (columns: "
            f"{', '.join(sorted(columns)) or 'none'}); a manifest lists slide_id, path, "
            "label, split, annotation_path"
        )
    root = path.parent
    refs = []
    for number, line in enumerate(lines, start=2):
        file = _optional_path(root, line.get("path"))
        if file is None:
            raise ParameterError(f"{path}, line {number}: the path is empty")
        slide_id = (line.get("slide_id") or "").strip() or slide_id_of(file)
        refs.append(
            SlideRef(
                slide_id,
                file,
                label=(line.get("label") or "").strip() or None,
                split=(line.get("split") or "").strip() or None,
                annotation_path=_optional_path(root, line.get("annotation_path")),
            )
        )
    if not refs:
        raise ParameterError(f"the manifest {path} lists no slides")
    return refs


def _expand(item: Any) -> list[SlideRef]:
    if isinstance(item, SlideRef):
        return [item]
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if path.is_dir():
            return _from_folder(path)
        if path.suffix.lower() == ".csv" and path.is_file():
            return _from_manifest(path)
        if not path.exists():
            raise ParameterError(f"no slide, folder or manifest at {path}")
        return [SlideRef.from_path(path)]
    rows = getattr(item, "rows", None)
    if rows is not None and hasattr(item, "manifest_path"):  # a synthetic Cohort
        return [_from_row(row) for row in rows]
    if hasattr(item, "slide_id") and hasattr(item, "path"):  # a CohortRow
        return [_from_row(item)]
    if isinstance(item, Iterable):
        return [ref for part in item for ref in _expand(part)]
    raise ParameterError(
        f"slides must be a manifest CSV, a folder, slide paths or SlideRef objects, got {item!r}"
    )


def _from_row(row: Any) -> SlideRef:
    annotation = getattr(row, "annotation_path", None)
    return SlideRef(
        str(row.slide_id),
        Path(row.path).absolute(),
        label=getattr(row, "label", None),
        split=getattr(row, "split", None),
        annotation_path=None if annotation is None else Path(annotation).absolute(),
    )


def find_slides(source: SlideSource) -> tuple[SlideRef, ...]:
    """The slides of a run, from a manifest, a folder, paths, or a synthetic cohort.

    Parameters
    ----------
    source
        A manifest CSV (a ``path`` column, optionally ``slide_id``, ``label``, ``split``
        and ``annotation_path``, paths relative to the manifest: what
        :func:`cervixwsi.synthetic.make_cohort` writes), a folder (its files whose names
        end in one of :data:`SLIDE_SUFFIXES`, sorted), one slide file (any name: a file
        that turns out not to be a slide fails in the run, and the report says so), a
        :class:`SlideRef`, a :class:`cervixwsi.synthetic.Cohort`, or an iterable of any
        of these.

    Returns
    -------
    tuple of SlideRef
        In the order given (a folder's files sorted by name).

    Raises
    ------
    ParameterError
        If a path given directly does not exist, a folder holds no slide, a manifest
        is malformed, or two slides have the same id (their results would collide).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("b.svs", "a.tiff", "notes.txt"):
    ...         _ = (pathlib.Path(tmp) / name).write_bytes(b"")
    ...     [ref.slide_id for ref in find_slides(tmp)]
    ['a', 'b']
    """
    refs = _expand(source)
    if not refs:
        raise ParameterError("no slides given")
    seen: dict[str, Path] = {}
    for ref in refs:
        if ref.slide_id in seen and seen[ref.slide_id] != ref.path:
            raise ParameterError(
                f"two slides have the id {ref.slide_id!r} ({seen[ref.slide_id]} and "
                f"{ref.path}): their results would be written to the same place; rename "
                "one or give them distinct slide_id values in a manifest"
            )
        seen[ref.slide_id] = ref.path
    unique: dict[str, SlideRef] = {}
    for ref in refs:
        unique.setdefault(ref.slide_id, ref)
    return tuple(unique.values())
