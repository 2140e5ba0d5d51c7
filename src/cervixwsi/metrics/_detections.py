"""Lesion detections: validation and the Camelyon16 submission CSV format."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cervixwsi._io import atomic_write_text
from cervixwsi.errors import MetricsError

__all__ = ["as_detections", "read_detections_csv", "write_detections_csv"]

_INT = re.compile(r"[+-]?[0-9]+")


def as_detections(detections: npt.ArrayLike, where: str = "detections") -> npt.NDArray[np.float64]:
    """Validate ``(N, 3)`` detections ``prob, x, y`` and return them as float64.

    Probabilities must be finite and non-negative; ``x`` and ``y`` integral
    (level-0 pixels), as the Camelyon16 format has them.  An empty input gives
    a ``(0, 3)`` array.
    """
    arr = np.asarray(detections)
    if arr.size == 0:
        return np.zeros((0, 3), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise MetricsError(f"{where} must be an (N, 3) array of prob, x, y; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise MetricsError(f"{where} must be numeric, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricsError(f"{where}: detection {i} is not finite: {out[i].tolist()}")
    neg = out[:, 0] < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise MetricsError(
            f"{where}: detection {i} has probability {out[i, 0]!r}; probabilities must be >= 0"
        )
    frac = out[:, 1:] != np.floor(out[:, 1:])
    if frac.any():
        i = int(np.argmax(frac.any(axis=1)))
        raise MetricsError(
            f"{where}: detection {i} has non-integer coordinates ({out[i, 1]!r}, {out[i, 2]!r}); "
            "x and y are integer level-0 pixels (round them, e.g. with numpy.floor)"
        )
    return out


def read_detections_csv(path: str | os.PathLike[str]) -> npt.NDArray[np.float64]:
    """Read a Camelyon16 submission CSV: one detection ``prob,x,y`` per line, no header.

    ``prob`` is a float, ``x`` and ``y`` are integer level-0 pixel
    coordinates, exactly as the official evaluation script parses them
    (``float(prob), int(x), int(y)``).  Blank lines are skipped; an empty file
    means no detections.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (UTF-8, an optional byte-order mark is ignored).

    Returns
    -------
    numpy.ndarray (N, 3), float64
        ``prob, x, y`` per row, in file order.

    Raises
    ------
    MetricsError
        The file cannot be read or decoded, or a line has not exactly three
        fields, a probability that is not a finite number ``>= 0``, or a
        coordinate that is not an integer.  The message names the file and the
        line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cervixwsi.metrics import read_detections_csv
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     csv = pathlib.Path(tmp) / "test_001.csv"
    ...     _ = csv.write_text("0.9,1024,2048\\n0.25,4000,512\\n")
    ...     read_detections_csv(csv)
    array([[9.0e-01, 1.024e+03, 2.048e+03],
           [2.5e-01, 4.000e+03, 5.120e+02]])
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetricsError(f"{p}: not a UTF-8 text CSV of detections ({exc.reason})") from exc
    except OSError as exc:
        raise MetricsError(f"cannot read detections CSV {p}: {exc.strerror or exc}") from exc
    rows: list[tuple[float, int, int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 3:
            raise MetricsError(
                f"{p}, line {lineno}: expected 3 comma-separated fields prob,x,y, "
                f"got {len(fields)}: {line.strip()!r}"
            )
        prob_s, x_s, y_s = (f.strip() for f in fields)
        try:
            prob = float(prob_s)
        except ValueError:
            raise MetricsError(
                f"{p}, line {lineno}: probability {prob_s!r} is not a number"
            ) from None
        if not math.isfinite(prob) or prob < 0:
            raise MetricsError(
                f"{p}, line {lineno}: probability must be finite and >= 0, got {prob_s!r}"
            )
        for name, value in (("x", x_s), ("y", y_s)):
            if not _INT.fullmatch(value):
                raise MetricsError(
                    f"{p}, line {lineno}: {name} coordinate {value!r} is not an integer "
                    "(Camelyon16 CSVs give integer level-0 pixels)"
                )
        rows.append((prob, int(x_s), int(y_s)))
    if not rows:
        return np.zeros((0, 3), np.float64)
    return np.array(rows, dtype=np.float64)


def write_detections_csv(path: str | os.PathLike[str], detections: npt.ArrayLike) -> Path:
    """Write detections as a Camelyon16 submission CSV (``prob,x,y`` per line, no header).

    Probabilities are written with Python's shortest round-trip repr, so
    :func:`read_detections_csv` gives back the same float64 values.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (overwritten atomically: a reader never sees half a
        file; its folder must exist).
    detections : array-like (N, 3)
        ``prob, x, y`` per detection (non-negative finite probabilities,
        integer level-0 coordinates).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    MetricsError
        Invalid detections, or the file cannot be written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cervixwsi.metrics import read_detections_csv, write_detections_csv
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_detections_csv(pathlib.Path(tmp) / "a.csv", [[0.1, 5, 7]])
    ...     out.read_text()
    '0.1,5,7\\n'
    """
    dets = as_detections(detections)
    p = Path(path)
    lines = [f"{float(d[0])!r},{int(d[1])},{int(d[2])}\n" for d in dets]
    try:
        atomic_write_text(p, "".join(lines))
    except OSError as exc:
        raise MetricsError(f"cannot write detections CSV {p}: {exc.strerror or exc}") from exc
    return p
