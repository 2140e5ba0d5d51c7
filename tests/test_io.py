"""Atomic writes (``cervixwsi._io``): all or nothing, with the umask's permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cervixwsi._io import atomic_path, atomic_write_bytes, atomic_write_text, temporary_sibling


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_are_readable_by_group_and_others_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_bytes(tmp_path / "b.bin", b"\0\1")
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "b.bin") == 0o644
    with atomic_path(tmp_path / "store") as tmp:
        tmp.mkdir()
        (tmp / "data").write_bytes(b"1")
    assert _mode(tmp_path / "store") == 0o755


def test_a_stricter_umask_is_honoured(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600


def test_replacing_keeps_old_content_until_the_new_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "result.txt"
    atomic_write_text(path, "old")

    def interrupted_write() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half of the ne")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]  # no temporary left
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_an_interrupted_directory_leaves_nothing(tmp_path: Path) -> None:
    def interrupted_store() -> None:
        with atomic_path(tmp_path / "store.zarr") as tmp:
            tmp.mkdir()
            (tmp / "chunk").write_bytes(b"0" * 10)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_store()
    assert list(tmp_path.iterdir()) == []


def test_temporary_siblings_are_hidden_unique_and_beside(tmp_path: Path) -> None:
    names = {temporary_sibling(tmp_path / "x.tif") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(".x.tif.")
        assert name.suffix == ".tmp" and not name.exists()
