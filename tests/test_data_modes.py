"""The data directory and the control plane's socket are the user's alone: an existing
data directory is tightened at start, a long data-dir path puts the socket in a private
directory (never a guessable name in /tmp), and a blob directory that cannot be written
is one sentence naming it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support import ControlPlane, short_tmpdir

from remotecell.backend.server import default_socket
from remotecell.backend.state import private
from remotecell.client import Client, _blobs
from remotecell.contract.errors import ConfigError
from remotecell.contract.values import content_hash


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_an_existing_open_data_directory_is_tightened_at_start(make_control_plane) -> None:
    control_plane: ControlPlane = make_control_plane()
    data_dir = control_plane.data_dir
    control_plane.stop()
    os.chmod(data_dir, 0o755)
    for name in ("state.sqlite3", "token"):
        os.chmod(data_dir / name, 0o644)
    os.chmod(data_dir / "blobs", 0o755)

    control_plane.start()
    assert mode(data_dir) == 0o700
    for name in ("state.sqlite3", "token", "server.json"):
        assert mode(data_dir / name) == 0o600, name
    for name in ("blobs", "run"):
        assert mode(data_dir / name) == 0o700, name


def test_a_data_directory_of_another_user_is_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)  # as another user sees our directory
    with pytest.raises(private.NotPrivate, match=r"belongs to another user .*--data-dir"):
        private.tighten(theirs)
    assert mode(theirs) == 0o755


def test_a_long_data_directory_puts_the_socket_in_a_private_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = short_tmpdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    data_dir = base / ("d" * 110)
    data_dir.mkdir()
    socket = Path(default_socket(data_dir).removeprefix("unix:"))
    assert socket.parent.parent == base and len(str(socket)) <= 100
    assert mode(socket.parent) == 0o700 and os.lstat(socket.parent).st_uid == os.getuid()
    assert default_socket(data_dir) == f"unix:{socket}"  # found again after a restart

    # Someone else's file (or link) where the directory would be: a fresh private one.
    socket.parent.rmdir()
    socket.parent.symlink_to(base)
    other = Path(default_socket(data_dir).removeprefix("unix:"))
    assert other.parent != socket.parent and other.parent.parent == base
    assert mode(other.parent) == 0o700 and not other.parent.is_symlink()


def test_a_blob_directory_that_cannot_be_written_is_one_sentence(
    control_plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = control_plane.data_dir / "blobs"
    (blobs / "tmp").mkdir(exist_ok=True)
    os.chmod(blobs / "tmp", 0o500)
    if os.getuid() == 0:  # permission bits do not bind root: refuse the write as they would
        real_open = os.open

        def refused(path: object, *args: object, **kwargs: object) -> int:
            if str(path).startswith(str(blobs / "tmp")):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(_blobs.os, "open", refused)
    data = b"x" * 100_000
    client = Client(control_plane.endpoint)
    try:
        with pytest.raises(ConfigError) as err:
            client.upload({content_hash(data): data})
    finally:
        client.close()
        os.chmod(blobs / "tmp", 0o700)
    said = str(err.value)
    assert said.startswith(f"cannot write the cell's values to the blob directory {blobs}: ")
    assert "Permission denied" in said and f"chmod -R u+rwX {blobs}" in said
