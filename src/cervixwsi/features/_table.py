"""Feature results: :class:`FeatureVector` (one heatmap) and :class:`FeatureTable` (CSV)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_csv
from cervixwsi.errors import FeatureError, ResultFileError
from cervixwsi.features._units import FloatArray, unit_of

__all__ = ["FeatureTable", "FeatureVector"]


@dataclass(frozen=True, slots=True, eq=False)
class FeatureVector:
    """The features of one heatmap.

    Attributes
    ----------
    values : numpy.ndarray
        1-D float64, finite.
    names : tuple of str
        Feature names (unit and threshold included).
    units : tuple of str
        Unit of each feature (see :func:`unit_of`).
    slide_id : str or None
        The heatmap's slide.
    preset : str or None
        The preset the features come from (``None`` for a custom list).
    """

    values: FloatArray
    names: tuple[str, ...]
    units: tuple[str, ...]
    slide_id: str | None = None
    preset: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureVector):
            return NotImplemented
        return (
            (self.names, self.units, self.slide_id, self.preset)
            == (other.names, other.units, other.slide_id, other.preset)
        ) and bool(np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.values[self.names.index(name)])
        except ValueError:
            raise KeyError(f"no feature {name!r}; features: {self.names}") from None

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, slots=True, eq=False)
class FeatureTable:
    """Features of many heatmaps: one row per slide, one column per feature.

    Attributes
    ----------
    values : numpy.ndarray
        2-D float64, ``(n_slides, n_features)``.
    names : tuple of str
        Column names.
    slide_ids : tuple of str
        Row names.
    preset : str or None
        The preset the features come from.

    Examples
    --------
    >>> import numpy as np
    >>> t = FeatureTable(np.arange(6.0).reshape(2, 3), ("a", "b_um2@0.5", "c"), ("s1", "s2"))
    >>> t.select(["c", "a"]).values.tolist()
    [[2.0, 0.0], [5.0, 3.0]]
    >>> t.units
    ('1', 'µm²', '1')
    >>> t["b_um2@0.5"].tolist()
    [1.0, 4.0]
    """

    values: FloatArray
    names: tuple[str, ...]
    slide_ids: tuple[str, ...]
    preset: str | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "slide_ids", tuple(str(s) for s in self.slide_ids))
        if values.ndim != 2 or values.shape != (len(self.slide_ids), len(self.names)):
            raise FeatureError(
                f"a FeatureTable needs values of shape (n_slides, n_features) = "
                f"({len(self.slide_ids)}, {len(self.names)}), got {values.shape}"
            )
        if len(set(self.names)) != len(self.names):
            raise FeatureError(f"feature names must be unique, got {self.names}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureTable):
            return NotImplemented
        return (self.names, self.slide_ids, self.preset) == (
            other.names,
            other.slide_ids,
            other.preset,
        ) and bool(np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]

    @property
    def units(self) -> tuple[str, ...]:
        """Unit of each column (read from its name, see :func:`unit_of`)."""
        return tuple(unit_of(n) for n in self.names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_slides, n_features)``."""
        return (len(self.slide_ids), len(self.names))

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getitem__(self, name: str) -> FloatArray:
        """One column by name."""
        return self.values[:, self._indices([name])[0]]

    def _indices(self, names: Iterable[str]) -> list[int]:
        index = {n: i for i, n in enumerate(self.names)}
        wanted = list(names)
        missing = [n for n in wanted if n not in index]
        if missing:
            raise FeatureError(f"no feature(s) {missing} in the table; it has {self.names}")
        return [index[n] for n in wanted]

    def select(self, names: Iterable[str]) -> FeatureTable:
        """The table with only the given columns, in the given order."""
        wanted = list(names)
        return FeatureTable(
            self.values[:, self._indices(wanted)], tuple(wanted), self.slide_ids, self.preset
        )

    def rows(self, indices: npt.ArrayLike) -> FeatureTable:
        """The table with only the given rows (an index array or a boolean mask)."""
        idx = np.arange(len(self))[np.asarray(indices)]
        return FeatureTable(
            self.values[idx], self.names, tuple(self.slide_ids[i] for i in idx), self.preset
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV: a ``slide_id`` column, then one column per feature.

        Values are written with full precision, so :meth:`from_csv` gives back
        the same numbers.
        """
        path = Path(path)
        rows = zip(self.slide_ids, self.values, strict=True)
        atomic_write_csv(
            path,
            [
                ["slide_id", *self.names],
                *([sid, *(repr(float(v)) for v in row)] for sid, row in rows),
            ],
        )
        return path

    @classmethod
    def from_csv(cls, path: str | Path, *, preset: str | None = None) -> FeatureTable:
        """Read a table written by :meth:`to_csv`.

        Raises
        ------
        ResultFileError
            If the file is missing, empty, truncated or not a feature table.
        """
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ResultFileError(f"cannot read the feature table {path}: {exc}") from exc
        if not rows or not rows[0] or rows[0][0] != "slide_id":
            raise ResultFileError(
                f"{path} is not a feature table: its first row must start with 'slide_id'"
            )
        names = rows[0][1:]
        values = np.empty((len(rows) - 1, len(names)), dtype=np.float64)
        for i, row in enumerate(rows[1:]):
            if len(row) != len(names) + 1:
                raise ResultFileError(
                    f"{path}, line {i + 2}: {len(row)} fields, expected {len(names) + 1} "
                    "(is the file truncated?)"
                )
            try:
                values[i] = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise ResultFileError(f"{path}, line {i + 2}: {exc}") from exc
        try:
            return cls(values, tuple(names), tuple(r[0] for r in rows[1:]), preset)
        except FeatureError as exc:
            raise ResultFileError(f"{path}: {exc}") from exc
