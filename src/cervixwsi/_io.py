"""Atomic file and directory writes: the one way cervixwsi puts a result on disk.

A result is written under a temporary name beside its place and renamed into it
(``Path.replace``, atomic on one file system), so a reader never sees a half-written
file and an interrupted write leaves the old result (or nothing) in place.

The temporary name is new and created by a plain ``open`` / ``mkdir``, so the file gets
the permissions the process's umask allows (``0644`` under the usual umask 022), like
any file a user writes: colleagues on a shared lab server can read slides, annotations,
heatmaps and training histories.  (``tempfile.mkstemp`` would make them ``0600``.)

Examples
--------
>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d) / "note.txt"
...     atomic_write_text(path, "hello\\n")
...     path.read_text()
'hello\\n'
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_replace",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "is_empty_dir",
    "remove_dead_siblings",
    "temporary_sibling",
]


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A fresh, unused name beside ``path`` for writing it: ``.<name>.<pid>.<random>.tmp``.

    Hidden (a leading dot), unique across processes and threads, and in the same
    directory, so renaming it onto ``path`` is atomic.
    """
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its files
    return True


def remove_dead_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of ``path`` left by processes of this machine that died.

    A process killed while writing ``path`` leaves its :func:`temporary_sibling`
    (``.<name>.<pid>.<random>.tmp``) behind; once ``path`` has been written again,
    those of processes no longer running here are deleted.  Those of running
    processes (and names that do not parse) are kept: another writer may own them.
    Returns what was deleted.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     target = pathlib.Path(d) / "store"
    ...     (pathlib.Path(d) / ".store.999999999.0a1b2c3d.tmp").mkdir()  # no such pid
    ...     [p.name for p in remove_dead_siblings(target)], list(pathlib.Path(d).iterdir())
    (['.store.999999999.0a1b2c3d.tmp'], [])
    """
    target = Path(path)
    prefix = f".{target.name}."
    removed = []
    with contextlib.suppress(OSError):
        for sibling in target.parent.iterdir():
            name = sibling.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid, _, token = name[len(prefix) : -len(".tmp")].partition(".")
            if not (pid.isdigit() and len(token) == 8) or _pid_alive(int(pid)):
                continue
            _remove(sibling)
            removed.append(sibling)
    return removed


def is_empty_dir(path: str | os.PathLike[str]) -> bool:
    """True for a real (not linked) directory with nothing in it."""
    target = Path(path)
    return target.is_dir() and not target.is_symlink() and not any(target.iterdir())


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary name for ``path``; rename it into place when the block succeeds.

    The caller (or the library it calls: tifffile, Keras, zarr) creates the file or
    directory at the yielded name.  On an exception the temporary is removed and
    ``path`` is left as it was.  A directory can only replace ``path`` when ``path``
    does not exist or is an empty directory.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     target = pathlib.Path(d) / "store"
    ...     with atomic_path(target) as tmp:
    ...         tmp.mkdir()
    ...         _ = (tmp / "a").write_text("1")
    ...     sorted(p.name for p in pathlib.Path(d).iterdir()), (target / "a").read_text()
    (['store'], '1')
    """
    target = Path(path)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        tmp.replace(target)
    except BaseException:
        _remove(tmp)
        raise
    remove_dead_siblings(target)


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path`, but whatever is at ``path`` (a file or a whole directory)
    is replaced by what the block made.

    The old content is renamed aside, the new renamed in, and then the old deleted; if
    anything fails, the new is removed and the old put back.  A process killed between the
    two renames leaves nothing at ``path`` and both, whole, in hidden ``.<name>.*.tmp``
    siblings (the old one can be renamed back by hand).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     target = pathlib.Path(d) / "store"
    ...     (target / "old").mkdir(parents=True)
    ...     with atomic_replace(target) as tmp:
    ...         (tmp / "new").mkdir(parents=True)
    ...     sorted(p.name for p in target.iterdir()), len(list(pathlib.Path(d).iterdir()))
    (['new'], 1)
    """
    target = Path(path)
    tmp = temporary_sibling(target)
    aside: Path | None = None
    try:
        yield tmp
        if _occupied(target):
            aside = temporary_sibling(target)
            target.replace(aside)
        tmp.replace(target)
    except BaseException:
        _remove(tmp)
        if aside is not None and not _occupied(target):
            aside.replace(target)  # the new one did not come in: put the old one back
        raise
    if aside is not None:
        _remove(aside)
    remove_dead_siblings(target)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, tmp.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_csv(path: str | os.PathLike[str], rows: Iterable[Sequence[object]]) -> None:
    """Write ``rows`` (the header first) as a UTF-8 CSV file, atomically.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d) / "t.csv"
    ...     atomic_write_csv(path, [["slide_id", "auc"], ["s1", 0.5]])
    ...     path.read_text().splitlines()
    ['slide_id,auc', 's1,0.5']
    """
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    atomic_write_text(path, text.getvalue())
