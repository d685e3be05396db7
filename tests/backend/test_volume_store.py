"""Volume names, paths and mount paths, and the volume store on a directory and on
``memory://``: listing, atomic writes, removal, and no way out of a volume."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from remotecell.backend.state.volumes import VolumeRecords
from remotecell.backend.volumes.store import FileMissing, VolumeExists, VolumeMissing, VolumeStore
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import Mount, check_mounts, check_name, mount_path, volume_path

# -- names and paths -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["weights", "a", "Llama-3.1_8B", "0day", "x" * 64])
def test_valid_volume_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "-x", "_x", ".hidden", "a/b", "a b", "x" * 65, "é", None, 3]
)
def test_invalid_volume_names_say_what_a_valid_name_is(name):
    with pytest.raises(ConfigError, match="not a valid volume name: use 1-64 letters"):
        check_name(name)


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/", ""),
        ("", ""),
        (".", ""),
        ("/llama/config.json", "llama/config.json"),
        ("llama/config.json", "llama/config.json"),
        ("//llama/./config.json/", "llama/config.json"),
        ("a..b/..c", "a..b/..c"),  # dots inside names are names
    ],
)
def test_paths_in_a_volume_are_normalised_from_its_root(path, normal):
    assert volume_path(path) == normal


@pytest.mark.parametrize(
    "path", ["..", "../etc/passwd", "/../x", "a/../../x", "a/b/..", "a\\..\\b"]
)
def test_paths_that_could_leave_the_volume_are_refused(path):
    with pytest.raises(ConfigError, match="not a valid path in volume 'v'"):
        volume_path(path, "v")


def test_a_nul_in_a_path_is_refused():
    with pytest.raises(ConfigError, match="NUL"):
        volume_path("a\0b")


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/models", "/models"), ("/models/", "/models"), ("/data/x/./y", "/data/x/y")],
)
def test_mount_paths_are_normalised(path, normal):
    assert mount_path(path) == normal


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("models", "not an absolute path"),
        ("", "not an absolute path"),
        ("/", "cannot be mounted at '/'"),
        ("//", "cannot be mounted at '/'"),
        ("/models/../etc", "holds '..'"),
        ("/usr", "the runner needs /usr"),
        ("/usr/local/models", "the runner needs /usr"),
        ("/proc/x", "the runner needs /proc"),
        ("/tmp", "the runner needs /tmp"),
        ("/etc", "the runner needs /etc"),
        ("/dev/shm", "the runner needs /dev"),
    ],
)
def test_bad_mount_paths_are_refused_in_one_sentence(path, message):
    with pytest.raises(ConfigError, match=message) as info:
        mount_path(path)
    assert str(info.value).count(". ") == 0  # one sentence


def test_a_mount_path_may_not_hide_a_directory_the_runner_needs():
    with pytest.raises(ConfigError, match="it would hide /srv/remotecell/data"):
        mount_path("/srv", reserved=["/srv/remotecell/data"])
    assert mount_path("/srv/models", reserved=["/srv/remotecell/data"]) == "/srv/models"


def test_mounts_are_checked_together():
    assert check_mounts([Mount("/data/", "b", "v-1"), Mount("/models", "a")]) == (
        Mount("/data", "b", "v-1"),
        Mount("/models", "a"),
    )
    with pytest.raises(ConfigError, match="'/models' and '/models/llama' collide"):
        check_mounts([Mount("/models", "a"), Mount("/models/llama", "b")])
    with pytest.raises(ConfigError, match="collide"):
        check_mounts([Mount("/models", "a"), Mount("/models/", "b")])
    with pytest.raises(ConfigError, match="volume 'a' is mounted twice"):
        check_mounts([Mount("/models", "a"), Mount("/data", "a")])
    with pytest.raises(ConfigError, match="not a valid volume name"):
        check_mounts([Mount("/models", "bad name")])


# -- the store -------------------------------------------------------------------------


@pytest.fixture(params=["dir", "memory"])
def store(request, tmp_path: Path):
    url = (
        str(tmp_path / "volumes") if request.param == "dir" else f"memory://t{secrets.token_hex(4)}"
    )
    records = VolumeRecords(tmp_path / "state.sqlite3")
    yield VolumeStore(url, records)
    records.close()


def write(store: VolumeStore, name: str, path: str, data: bytes):
    writer = store.writer(name, path)
    writer.write(data)
    return writer.commit()


def read(store: VolumeStore, name: str, path: str) -> bytes:
    return b"".join(store.read(name, path)[1])


def test_volumes_are_made_once_and_found_by_name(store):
    record, created = store.create("weights")
    assert created and record.name == "weights" and record.url.endswith("/weights")
    with pytest.raises(VolumeExists, match="volume 'weights' exists already"):
        store.create("weights")
    again, created = store.create("weights", exist_ok=True)
    assert again == record and not created
    assert store.get("weights") == record
    assert [r.name for r in store.all()] == ["weights"]
    with pytest.raises(VolumeMissing, match="no volume 'other': create it with"):
        store.get("other")
    with pytest.raises(ConfigError):
        store.create("../escape")


def test_files_are_listed_read_and_removed(store):
    store.create("v")
    assert store.files("v") == []
    write(store, "v", "/llama/config.json", b"{}")
    write(store, "v", "llama/weights/part-0", b"x" * 10)
    write(store, "v", "top.txt", b"top")
    assert [(f.path, f.is_dir) for f in store.files("v", "/")] == [
        ("llama", True),
        ("top.txt", False),
    ]
    assert [f.path for f in store.files("v", "/llama")] == ["llama/config.json", "llama/weights"]
    assert [(f.path, f.size) for f in store.files("v", "", recursive=True)] == [
        ("llama/config.json", 2),
        ("llama/weights/part-0", 10),
        ("top.txt", 3),
    ]
    assert [f.path for f in store.files("v", "top.txt")] == ["top.txt"]
    assert read(store, "v", "/llama/config.json") == b"{}"
    with pytest.raises(FileMissing, match=r"no file or directory '/nope' in volume 'v'"):
        read(store, "v", "nope")
    with pytest.raises(FileMissing):
        store.files("v", "nope")
    with pytest.raises(ConfigError, match="is a directory"):
        read(store, "v", "llama")
    with pytest.raises(ConfigError, match="is a directory; remove it with recursive=True"):
        store.remove("v", "llama")
    with pytest.raises(ConfigError, match="cannot remove the root"):
        store.remove("v", "/")
    assert store.remove("v", "llama", recursive=True) == 2
    assert store.remove("v", "top.txt") == 1
    with pytest.raises(FileMissing):
        store.remove("v", "top.txt")
    assert store.files("v", recursive=True) == []


def test_a_write_replaces_a_file_only_when_it_is_complete(store):
    store.create("v")
    first = write(store, "v", "model.bin", b"version 1")
    writer = store.writer("v", "model.bin")
    writer.write(b"version 2, half")
    # Not committed yet: readers still get the old version, and nothing else shows.
    assert read(store, "v", "model.bin") == b"version 1"
    assert [f.path for f in store.files("v", recursive=True)] == ["model.bin"]
    writer.abort()  # the writer broke off (its connection, or its runner, died)
    assert read(store, "v", "model.bin") == b"version 1"
    assert store.files("v", "model.bin")[0].version == first.version
    second = write(store, "v", "model.bin", b"version 2")
    assert read(store, "v", "model.bin") == b"version 2"
    assert second.version != first.version
    # The version a write reports is the one a listing shows (runners compare them).
    assert store.files("v", "model.bin")[0].version == second.version
    assert store.files("v", recursive=True)[0].version == second.version


def test_writes_refuse_directories_and_files_in_the_way(store):
    store.create("v")
    write(store, "v", "dir/file", b"x")
    with pytest.raises(ConfigError, match="is a directory"):
        store.writer("v", "dir")
    with pytest.raises(ConfigError, match="is a directory"):
        store.writer("v", "/")
    if store.shared_dir(store.get("v")) is not None:  # object stores have no such conflict
        with pytest.raises(ConfigError, match="a part of its directory is a file"):
            write(store, "v", "dir/file/below", b"y")


def test_deleting_a_volume_removes_its_files(store):
    store.create("v")
    write(store, "v", "a/b", b"1")
    write(store, "v", "c", b"2")
    assert store.delete("v") == 2
    with pytest.raises(VolumeMissing):
        store.get("v")
    _, created = store.create("v")
    assert created and store.files("v", recursive=True) == []


# -- symlinks in a directory store ------------------------------------------------------


@pytest.fixture
def dir_store(tmp_path: Path):
    records = VolumeRecords(tmp_path / "state.sqlite3")
    store = VolumeStore(str(tmp_path / "volumes"), records)
    store.create("v")
    yield store, Path(store.get("v").url)
    records.close()


def test_symlinks_out_of_a_volume_are_refused(dir_store, tmp_path: Path):
    store, root = dir_store
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    # What a cell could make in a mounted volume:
    os.symlink(outside, root / "dir-link")
    os.symlink(outside / "secret", root / "file-link")
    os.symlink("../../outside/secret", root / "relative-link")
    for path in ["dir-link/secret", "file-link", "relative-link"]:
        with pytest.raises(ConfigError, match="symlink that points out of the volume"):
            read(store, "v", path)
    with pytest.raises(ConfigError, match="symlink that points out of the volume"):
        store.files("v", "dir-link")
    with pytest.raises(ConfigError, match="symlink that points out of the volume"):
        store.writer("v", "dir-link/planted")
    with pytest.raises(ConfigError, match="symlink that points out of the volume"):
        store.writer("v", "dir-link/new-dir/planted")
    with pytest.raises(ConfigError, match="symlink that points out of the volume"):
        store.remove("v", "dir-link/secret")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    # Listings leave such links out; removing a link removes the link, not its target.
    assert store.files("v") == []
    assert store.files("v", recursive=True) == []
    assert store.remove("v", "file-link") == 1
    assert (outside / "secret").read_text() == "not yours"


def test_symlinks_inside_a_volume_are_followed(dir_store):
    store, root = dir_store
    write(store, "v", "real/file", b"data")
    os.symlink("real", root / "alias")
    os.symlink(root / "real" / "file", root / "file-alias")
    assert read(store, "v", "alias/file") == b"data"
    assert read(store, "v", "file-alias") == b"data"
    assert [(f.path, f.is_dir) for f in store.files("v")] == [
        ("alias", True),
        ("file-alias", False),
        ("real", True),
    ]
    # a link to a file is a writable name: the write replaces the link, not its target
    write(store, "v", "file-alias", b"new")
    assert read(store, "v", "real/file") == b"data"
    assert not os.path.islink(root / "file-alias")


def test_a_directory_swapped_for_a_symlink_mid_write_cannot_redirect_it(dir_store, tmp_path):
    store, root = dir_store
    outside = tmp_path / "outside"
    outside.mkdir()
    write(store, "v", "dir/old", b"1")
    writer = store.writer("v", "dir/new")  # checked: dir is a directory in the volume
    writer.write(b"planted?")
    (root / "dir" / "old").unlink()
    (root / "dir").rmdir()
    os.symlink(outside, root / "dir")  # what a racing cell could do meanwhile
    with pytest.raises(ConfigError, match="symlink that points out of the volume"):
        writer.commit()
    assert list(outside.iterdir()) == []
    assert not list((Path(store.url) / ".tmp").iterdir())  # the content was dropped


def test_a_fifo_in_a_volume_is_refused_not_waited_on(dir_store):
    store, root = dir_store
    os.mkfifo(root / "pipe")
    with pytest.raises(ConfigError, match="is not a regular file"):
        read(store, "v", "pipe")
