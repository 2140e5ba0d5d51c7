"""Atomic writes (``cervixwsi._io``): all or nothing, with the umask's permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cervixwsi._io import (
    atomic_path,
    atomic_replace,
    atomic_write_bytes,
    atomic_write_text,
    temporary_sibling,
)


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


def test_atomic_replace_swaps_a_whole_directory_or_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "heatmap.zarr"
    (target / "chunks").mkdir(parents=True)
    (target / "chunks" / "0").write_bytes(b"old")
    with atomic_replace(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["heatmap.zarr"]

    def failing() -> None:
        with atomic_replace(target) as tmp:
            tmp.mkdir()
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        failing()
    assert (target / "new").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["heatmap.zarr"]


def test_atomic_replace_puts_the_old_back_when_the_new_cannot_come_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.txt"
    target.write_text("old")
    real_replace = Path.replace

    def refuse_new(self: Path, other: Any) -> Path:
        if (
            self.name.startswith(".result.txt.")
            and Path(other) == target
            and self.read_text() == "new"
        ):
            raise OSError("rename refused")
        return real_replace(self, other)

    monkeypatch.setattr(Path, "replace", refuse_new)

    def write_new() -> None:
        with atomic_replace(target) as tmp:
            tmp.write_text("new")

    with pytest.raises(OSError, match="rename refused"):
        write_new()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_a_finished_write_deletes_the_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(dead.stdout)  # that process has exited
    target = tmp_path / "store.zarr"
    left = tmp_path / f".store.zarr.{dead_pid}.0123abcd.tmp"
    (left / "planned").mkdir(parents=True)  # a killed writer's half-made store
    live = tmp_path / f".store.zarr.{os.getpid()}.89abcdef.tmp"
    live.mkdir()  # a running writer's (here: ours)
    other = tmp_path / ".store.zarr.notapid.tmp"
    other.mkdir()
    with atomic_path(target) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["store.zarr", live.name, other.name]
    )
