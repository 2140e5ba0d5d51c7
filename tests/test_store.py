"""The resumable-store layer (cervixwsi._store) on real zarr stores."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from cervixwsi import __version__
from cervixwsi._store import OpenedStore, StoreFormat, jsonable, mark_complete, same_json
from cervixwsi.errors import PatchStoreError, StoreMismatchError

FMT = StoreFormat("cervixwsi.TestStore", 2, kind="test store", error=PatchStoreError)
IDENTITY: dict[str, Any] = {"slide": "a", "level": 0, "size": (256, 256), "masker": None}


def fill(group: Any) -> None:
    """A typical layout: a result array and a done flag per entry."""
    group.create_array("values", shape=(6,), dtype="float32", fill_value=np.nan)
    group.create_array("done", shape=(6,), dtype="bool", fill_value=False)


def make(path: Path, identity: dict[str, Any] | None = None, **kw: Any) -> OpenedStore:
    return FMT.create_or_resume(path, IDENTITY if identity is None else identity, fill, **kw)


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones (temporaries) included."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# --- making ---------------------------------------------------------------------------


def test_a_new_store_records_format_version_identity_and_is_not_complete(tmp_path: Path) -> None:
    store = make(tmp_path / "s.zarr")
    assert store.created and store.path == tmp_path / "s.zarr"
    attrs = dict(zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs)
    assert attrs == {
        "format": "cervixwsi.TestStore",
        "format_version": 2,
        "cervixwsi_version": __version__,
        "identity": {"slide": "a", "level": 0, "size": [256, 256], "masker": None},
        "complete": False,
    }
    assert store.version == 2 and store.identity == attrs["identity"] and not store.complete
    assert store.group["values"].shape == (6,)
    store.group["values"][:2] = [0.5, 0.25]  # opened for writing
    assert listing(tmp_path) == ["s.zarr"]


@pytest.mark.parametrize("error", [RuntimeError("stopped"), KeyboardInterrupt()])
def test_a_build_interrupted_inside_initialize_leaves_nothing(
    tmp_path: Path, error: BaseException
) -> None:
    def initialize(group: Any) -> None:
        fill(group)
        group["values"][:3] = 1.0  # half-way through laying it out
        raise error

    path = tmp_path / "s.zarr"
    with pytest.raises(type(error)):
        FMT.create_or_resume(path, IDENTITY, initialize)
    assert listing(tmp_path) == []  # neither the store nor its temporary sibling
    with pytest.raises(PatchStoreError, match="no test store at"):
        FMT.open(path)
    # The rerun makes the store from scratch.
    assert make(path).created
    assert listing(tmp_path) == ["s.zarr"]


def test_an_interrupted_build_into_an_empty_directory_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    path.mkdir()

    def initialize(group: Any) -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        FMT.create_or_resume(path, IDENTITY, initialize)
    assert listing(tmp_path) == ["s.zarr"] and listing(path) == []
    assert make(path).created  # an empty directory is built into
    assert FMT.open(path).identity["slide"] == "a"


def test_a_missing_parent_folder_is_made(tmp_path: Path) -> None:
    store = make(tmp_path / "runs" / "today" / "s.zarr")
    assert store.created and (tmp_path / "runs" / "today" / "s.zarr" / "zarr.json").is_file()


def test_store_directory_and_files_are_group_and_world_readable(
    tmp_path: Path, umask_022: None
) -> None:
    store = make(tmp_path / "s.zarr")
    store.group["values"][:] = np.arange(6)
    mark_complete(store.group)
    paths = [store.path, *store.path.rglob("*")]
    assert any(p.is_file() for p in paths) and any(p.is_dir() for p in paths[1:])
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        wanted = 0o755 if p.is_dir() else 0o644
        assert mode & wanted == wanted, (p, oct(mode))


# --- resuming -------------------------------------------------------------------------


def test_a_rerun_with_the_same_identity_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    first = make(path)
    first.group["values"][:2] = [0.5, 0.25]
    first.group["done"][:2] = True
    calls = []

    def initialize(group: Any) -> None:
        calls.append(group)

    # The same settings as other Python objects (a list for the tuple, NumPy scalars).
    same = {"size": [256, np.int64(256)], "slide": "a", "level": np.int32(0), "masker": None}
    again = FMT.create_or_resume(path, same, initialize)
    assert not again.created and calls == []
    np.testing.assert_array_equal(again.group["done"][:], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(again.group["values"][:2], [0.5, 0.25])
    again.group["done"][2:] = True  # writable: the job continues
    assert not again.complete
    mark_complete(again.group)
    assert make(path).complete and FMT.open(path).complete
    mark_complete(FMT.open(path, mode="r+").group, False)
    assert not FMT.open(path).complete


def test_another_identity_is_refused_with_every_difference(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make(path)
    other = {"slide": "b", "level": 1, "size": (256, 256), "stride": 128}
    with pytest.raises(StoreMismatchError) as refused:
        make(path, other)
    message = str(refused.value)
    assert message == (
        f"the test store {path} was made with other slide: 'a' -> 'b', level: 0 -> 1, "
        "stride: (not recorded) -> 128, masker: None -> (not given); "
        "use another path, or delete it"
    )
    assert isinstance(refused.value, ValueError)
    # A refused rerun leaves the store as it was.
    assert FMT.open(path).identity["slide"] == "a"


def test_differences_use_the_per_key_describers_and_comparers(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    fmt = StoreFormat(
        "cervixwsi.TestStore", 2, kind="test store", error=PatchStoreError, advice="try again"
    )
    identity = {"masks": ["x", "y"], "probe": [0.1, 0.2], "seed": 1}
    fmt.create_or_resume(path, identity, fill)
    describe = {"masks": lambda old, new: "masks (of slide 'b')"}
    close = {"probe": lambda old, new: bool(np.allclose(old, new, atol=1e-4))}
    nearly = {"masks": ["x", "y"], "probe": [0.10001, 0.2], "seed": 1}
    assert not fmt.create_or_resume(path, nearly, fill, compare=close).created
    with pytest.raises(StoreMismatchError, match="probe: "):
        fmt.create_or_resume(path, nearly, fill)  # exact comparison by default
    changed = {"masks": ["x", "z"], "probe": [0.5, 0.2], "seed": 1}
    with pytest.raises(StoreMismatchError) as refused:
        fmt.create_or_resume(path, changed, fill, describe=describe, compare=close)
    assert str(refused.value).endswith(
        "was made with other masks (of slide 'b'), probe: [0.1, 0.2] -> [0.5, 0.2]; try again"
    )


def test_a_store_made_meanwhile_by_another_process_is_resumed(tmp_path: Path) -> None:
    """The rename fails when the path was filled meanwhile: the same job continues there."""
    path = tmp_path / "s.zarr"

    def racing(identity: dict[str, Any]) -> Any:
        def initialize(group: Any) -> None:
            fill(group)
            make(path, identity)  # the other process finishes first

        return initialize

    store = FMT.create_or_resume(path, IDENTITY, racing(IDENTITY))
    assert not store.created and store.identity["slide"] == "a"
    assert listing(tmp_path) == ["s.zarr"]
    other = tmp_path / "t.zarr"
    path = other
    with pytest.raises(StoreMismatchError, match="slide: 'b' -> 'a'"):
        FMT.create_or_resume(path, IDENTITY, racing({**IDENTITY, "slide": "b"}))
    assert listing(tmp_path) == ["s.zarr", "t.zarr"]


# --- refusing what is not a store of this format ----------------------------------------


def test_a_directory_of_other_things_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    expected = (
        f"{path} exists and is not a zarr store: it is a directory holding 'notes.txt', "
        "without zarr v3 metadata (zarr.json)"
    )
    with pytest.raises(PatchStoreError) as refused:
        make(path)
    assert str(refused.value) == expected
    assert listing(path) == ["notes.txt"] and listing(tmp_path) == ["data"]
    with pytest.raises(PatchStoreError, match="is not a zarr store: it is a directory holding"):
        FMT.open(path)


def test_a_file_at_the_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    path.write_bytes(b"abc")
    with pytest.raises(
        PatchStoreError, match=r"s\.zarr exists and is not a zarr store: it is a file"
    ):
        make(path)
    with pytest.raises(PatchStoreError, match="it is a file of 3 bytes"):
        FMT.open(path)
    assert path.read_bytes() == b"abc"


def test_a_store_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    zarr.open_group(str(path), mode="w").attrs["format"] = "cervixwsi.Heatmap"
    with pytest.raises(PatchStoreError, match="is not a cervixwsi test store: it has the format"):
        make(path)
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w")
    with pytest.raises(PatchStoreError, match="it has no cervixwsi format"):
        FMT.open(plain)
    array = tmp_path / "array.zarr"
    zarr.create_array(str(array), shape=(2,), dtype="int8")
    with pytest.raises(PatchStoreError, match="is not a readable zarr group"):
        FMT.open(array)


def test_newer_and_too_old_versions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    make(path)
    zarr.open_group(str(path), mode="r+").attrs.update(
        {"format_version": 3, "cervixwsi_version": "9.0"}
    )
    with pytest.raises(PatchStoreError) as refused:
        make(path)
    assert str(refused.value) == (
        f"{path} is a test store of format version 3, made by cervixwsi 9.0; this cervixwsi "
        f"({__version__}) reads versions up to 2: upgrade cervixwsi"
    )
    with pytest.raises(PatchStoreError, match="upgrade cervixwsi"):
        FMT.open(path)
    newer = StoreFormat(
        "cervixwsi.TestStore", 4, kind="test store", error=PatchStoreError, oldest=4
    )
    with pytest.raises(PatchStoreError, match="reads versions 4 to 4: make it again"):
        newer.open(path)
    zarr.open_group(str(path), mode="r+").attrs["format_version"] = "2"
    with pytest.raises(PatchStoreError, match="without a valid format_version"):
        FMT.open(path)


def test_older_versions_are_migrated_when_read(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update(
        {"format": "cervixwsi.TestStore", "format_version": 1, "signature": IDENTITY}
    )
    seen: list[dict[str, Any]] = []

    def migrate(attrs: dict[str, Any], where: Path) -> dict[str, Any]:
        seen.append(attrs)
        assert where == path
        return {**attrs, "identity": attrs["signature"]}

    fmt = StoreFormat(
        "cervixwsi.TestStore", 2, kind="test store", error=PatchStoreError, migrate=migrate
    )
    assert fmt.open(path).identity == jsonable(IDENTITY) and fmt.open(path).version == 1
    assert not fmt.create_or_resume(path, IDENTITY, fill).created
    with pytest.raises(StoreMismatchError, match="level: 0 -> 2"):
        fmt.create_or_resume(path, {**IDENTITY, "level": 2}, fill)
    assert len(seen) == 4
    # Without a migration, an old store that records no identity differs in every key.
    with pytest.raises(StoreMismatchError, match="slide: \\(not recorded\\) -> 'a'"):
        make(path)


def test_json_helpers() -> None:
    assert jsonable((1, np.float32(0.5), {"a": (np.bool_(False),)})) == [1, 0.5, {"a": [False]}]
    assert same_json({"x": 1, "y": [2.0]}, {"y": (2,), "x": 1.0})
    assert not same_json({"x": 1}, {"x": 1, "y": None})
    assert not same_json(False, 0) and not same_json(None, 0) and not same_json("1", 1)
    assert same_json(float("nan"), np.float64("nan"))
