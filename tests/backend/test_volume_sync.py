"""Runners' copies of volumes in a remote store, against a real control plane with a
``memory://`` store: pull and commit, concurrent writers, broken uploads."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from pathlib import Path

import grpc
import pytest
from support import wait_until

from remotecell._proto import pb
from remotecell.backend.volumes.sync import SyncedVolume
from remotecell.client import transport
from remotecell.contract.errors import (
    AuthError,
    ConfigError,
    VolumeFileNotFoundError,
    VolumeNotFoundError,
)


@pytest.fixture
def memory_plane(make_control_plane):
    return make_control_plane("--volume-store", f"memory://sync-{secrets.token_hex(4)}")


@pytest.fixture
def client(memory_plane):
    c = memory_plane.client()
    c.create_volume("shared")
    yield c
    c.close()


def copy(client, tmp_path: Path, label: str) -> SyncedVolume:
    root = tmp_path / label
    root.mkdir()
    return SyncedVolume(client, "shared", root)


def content(client, path: str) -> bytes:
    return b"".join(client.read_volume_file("shared", path)[1])


def _raw_write(client, chunks):
    """A VolumeWrite call that the test can cancel mid-file."""
    channel = transport.blocking_channel(client.endpoint)
    stub = transport.control_plane_stub(channel)
    return stub.VolumeWrite.future(chunks, metadata=transport.metadata(client.endpoint))


def touch(path: Path, text: str) -> None:
    """Writes ``text``, and makes sure the mtime moves even on a coarse clock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1000, before + 1000))


def test_a_commit_reaches_another_copy_at_its_next_pull(client, tmp_path):
    a, b = copy(client, tmp_path, "a"), copy(client, tmp_path, "b")
    a.pull()
    b.pull()
    touch(a.root / "llama" / "config.json", "{}")
    touch(a.root / "top.txt", "top")
    report = a.commit()
    assert report.uploaded == ["llama/config.json", "top.txt"]
    assert a.commit().uploaded == []  # nothing changed since
    assert not (b.root / "top.txt").exists()  # not before b pulls
    assert b.pull().pulled == ["llama/config.json", "top.txt"]
    assert (b.root / "llama" / "config.json").read_text() == "{}"
    # a deletion travels the same way
    (a.root / "top.txt").unlink()
    assert a.commit().removed == ["top.txt"]
    assert b.pull().deleted == ["top.txt"]
    assert not (b.root / "top.txt").exists()
    with pytest.raises(VolumeFileNotFoundError):
        content(client, "top.txt")


def test_concurrent_writers_last_commit_wins_per_file(client, tmp_path):
    a, b = copy(client, tmp_path, "a"), copy(client, tmp_path, "b")
    touch(a.root / "same.txt", "base")
    a.commit()
    b.pull()
    # both change the same file, and one file each, from the same starting point
    touch(a.root / "same.txt", "from a")
    touch(a.root / "only-a.txt", "a")
    touch(b.root / "same.txt", "from b")
    touch(b.root / "only-b.txt", "b")
    a.commit()
    # b reloads before it commits: a's new file comes in, b's own change stays
    report = b.pull()
    assert report.pulled == ["only-a.txt"]
    assert (b.root / "same.txt").read_text() == "from b"
    b.commit()
    assert content(client, "same.txt") == b"from b"  # the later commit
    assert content(client, "only-a.txt") == b"a"  # and both sides' other files
    assert content(client, "only-b.txt") == b"b"
    # a, unchanged since its commit, takes b's version at its next pull
    assert "same.txt" in a.pull().pulled
    assert (a.root / "same.txt").read_text() == "from b"


def test_a_pull_keeps_local_deletions_and_edits_until_they_are_committed(client, tmp_path):
    a, b = copy(client, tmp_path, "a"), copy(client, tmp_path, "b")
    touch(a.root / "f.txt", "one")
    a.commit()
    b.pull()
    (b.root / "f.txt").unlink()  # deleted in b, not committed
    touch(a.root / "f.txt", "two")
    a.commit()
    b.pull()
    assert not (b.root / "f.txt").exists()
    b.commit()  # the deletion is the later commit
    with pytest.raises(VolumeFileNotFoundError):
        content(client, "f.txt")


def test_symlinks_in_a_copy_are_named_and_not_committed(client, tmp_path):
    a = copy(client, tmp_path, "a")
    touch(a.root / "real.txt", "x")
    os.symlink("/etc", a.root / "etc-link")
    os.symlink(a.root / "real.txt", a.root / "alias")
    report = a.commit()
    assert report.uploaded == ["real.txt"]
    assert sorted(s.split(":")[0] for s in report.skipped) == ["alias", "etc-link"]
    assert [f.path for f in client.list_volume_files("shared", "", True)] == ["real.txt"]


def test_a_broken_upload_leaves_the_last_committed_version(client, memory_plane):
    client.write_volume_file("shared", "model.bin", _Bytes(b"v1" * 1000), 2000)
    sent, gone = threading.Event(), threading.Event()

    def chunks():
        yield pb.VolumeChunk(name="shared", path="model.bin", size=10_000_000, data=b"v2" * 1000)
        sent.set()
        gone.wait(30)  # the writer dies here, mid-file

    call = _raw_write(client, chunks())
    try:
        assert sent.wait(10)
        # The memory store's partial write cannot be seen from here (it lives in the
        # control plane's process); the directory store's test below waits for it.
        time.sleep(0.3)
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    finally:
        gone.set()
    assert content(client, "model.bin") == b"v1" * 1000
    # an upload that ends early (fewer bytes than announced) changes nothing either
    with pytest.raises(ConfigError, match="ended after 3 of its 10 bytes"):
        client.write_volume_file("shared", "model.bin", _Bytes(b"abc"), 10)
    assert content(client, "model.bin") == b"v1" * 1000
    assert [f.path for f in client.list_volume_files("shared", "", True)] == ["model.bin"]


def test_a_writer_dying_mid_file_leaves_a_directory_stores_file_as_it_was(control_plane):
    client = control_plane.client()
    try:
        client.create_volume("shared")
        client.write_volume_file("shared", "model.bin", _Bytes(b"v1" * 1000), 2000)
        gone = threading.Event()

        def chunks():
            yield pb.VolumeChunk(
                name="shared", path="model.bin", size=10_000_000, data=b"v2" * 1000
            )
            gone.wait(30)  # the writer dies here, mid-file

        volumes = control_plane.data_dir / "volumes"

        def partial() -> list[Path]:  # beside the owner's volumes: OWNER/.tmp
            return [p for p in volumes.glob("*/.tmp/*") if p.is_file()]

        call = _raw_write(client, chunks())
        try:
            # The control plane has begun the new version: its temporary file exists.
            wait_until(partial, 10, what="the partial write")
            call.cancel()
            with pytest.raises(grpc.FutureCancelledError):
                call.result()
        finally:
            gone.set()
        assert content(client, "model.bin") == b"v1" * 1000
        wait_until(lambda: not partial(), 10, what="the partial write to be dropped")
    finally:
        client.close()


def test_volume_rpcs_need_the_token_and_say_what_is_missing(client, memory_plane):
    from remotecell.client import Client, Endpoint

    stranger = Client(Endpoint(memory_plane.endpoint.url, "wrong"))
    try:
        with pytest.raises(AuthError):
            stranger.list_volumes()
        with pytest.raises(AuthError):
            stranger.read_volume_file("shared", "x")
        with pytest.raises(AuthError):
            stranger.write_volume_file("shared", "x", _Bytes(b"x"), 1)
    finally:
        stranger.close()
    assert client.list_volume_files("shared", "", True) == []
    with pytest.raises(VolumeNotFoundError, match="no volume 'nope': create it with"):
        client.list_volume_files("nope")
    with pytest.raises(VolumeFileNotFoundError, match="no file or directory '/x'"):
        client.read_volume_file("shared", "x")
    with pytest.raises(ConfigError, match="exists already"):
        client.create_volume("shared")
    with pytest.raises(ConfigError, match="not a valid volume name"):
        client.create_volume("no/slashes")
    with pytest.raises(ConfigError, match=r"'\.\.' would leave the volume"):
        client.read_volume_file("shared", "../../etc/passwd")


class _Bytes:
    """A minimal binary reader."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def read(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += len(out)
        return out


def test_a_same_size_rewrite_within_one_clock_tick_is_still_committed(client, tmp_path):
    a, b = copy(client, tmp_path, "a"), copy(client, tmp_path, "b")
    path = a.root / "weights.bin"
    path.write_bytes(b"v1" * 500)
    assert a.commit().uploaded == ["weights.bin"]
    # Rewritten at once, same size; on a coarse clock its mtime stays what it was.
    before = path.stat().st_mtime_ns
    path.write_bytes(b"v2" * 500)
    os.utime(path, ns=(before, before))
    assert a.commit().uploaded == ["weights.bin"]
    assert content(client, "weights.bin") == b"v2" * 500
    # A copy pulled a moment ago tells its own same-size edit from what it pulled.
    assert b.pull().pulled == ["weights.bin"]
    pulled = b.root / "weights.bin"
    then = pulled.stat().st_mtime_ns
    pulled.write_bytes(b"v3" * 500)
    os.utime(pulled, ns=(then, then))
    assert b.commit().uploaded == ["weights.bin"]
    assert content(client, "weights.bin") == b"v3" * 500


@pytest.mark.parametrize("stage", ["opening", "writing"])
def test_an_upload_cancelled_while_its_file_is_opened_or_written_leaves_nothing(
    tmp_path: Path, stage: str
):
    """The race behind a slow machine's leftover partial write: the client goes away
    while a worker thread is still opening (or writing) the temporary file, so the
    handler is cancelled before it holds the writer (or while the write runs)."""
    from remotecell.backend.state.volumes import VolumeRecords
    from remotecell.backend.volumes.service import VolumeServicer
    from remotecell.backend.volumes.store import FileWriter, VolumeStore

    records = VolumeRecords(tmp_path / "state.sqlite3")
    store = VolumeStore(str(tmp_path / "volumes"), records)
    store.create("shared", owner="someone")
    entered, release = threading.Event(), threading.Event()
    if stage == "opening":
        made = store.writer

        def slow_writer(name: str, path: str, owner: str = "") -> FileWriter:
            writer = made(name, path, owner)
            entered.set()
            release.wait(10)
            return writer

        store.writer = slow_writer  # type: ignore[method-assign]
    else:
        wrote = FileWriter.write

        def slow_write(self: FileWriter, data: bytes) -> None:
            wrote(self, data)
            entered.set()
            release.wait(10)

        FileWriter.write = slow_write  # type: ignore[method-assign]

    async def upload() -> None:
        async def chunks():
            yield pb.VolumeChunk(name="shared", path="model.bin", size=10, data=b"v2")
            await asyncio.sleep(30)

        task = asyncio.ensure_future(
            VolumeServicer(store, lambda name: []).VolumeWrite(
                chunks(),
                None,  # type: ignore[arg-type]
            )
        )
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()  # the client has gone
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task  # its clean-up, if any, has run when it ends

    from remotecell.backend import auth
    from remotecell.backend.state.credentials import Principal

    async def as_a_user() -> None:
        auth.acting_as(Principal("someone"))
        await upload()

    try:
        asyncio.run(as_a_user())
    finally:
        release.set()
        if stage == "writing":
            FileWriter.write = wrote  # type: ignore[method-assign]
        records.close()
    tmp = tmp_path / "volumes" / "someone" / "shared"
    leftovers = [p for p in (tmp_path / "volumes").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
    assert not (tmp / "model.bin").exists()


def test_an_upload_cancelled_again_while_it_cleans_up_still_leaves_nothing(tmp_path: Path):
    """The race behind a loaded machine's leftover partial write: a cancelled upload's
    clean-up, waiting for a worker thread, is itself cancelled before the thread starts."""
    from concurrent.futures import ThreadPoolExecutor

    from remotecell.backend import auth
    from remotecell.backend.state.credentials import Principal
    from remotecell.backend.state.volumes import VolumeRecords
    from remotecell.backend.volumes.service import VolumeServicer
    from remotecell.backend.volumes.store import VolumeStore

    records = VolumeRecords(tmp_path / "state.sqlite3")
    store = VolumeStore(str(tmp_path / "volumes"), records)
    store.create("shared", owner="someone")
    busy, wrote = threading.Event(), threading.Event()

    async def upload() -> None:
        auth.acting_as(Principal("someone"))
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1)  # one worker thread, so work can be made to queue
        loop.set_default_executor(pool)

        async def chunks():
            yield pb.VolumeChunk(name="shared", path="model.bin", size=10, data=b"v2")
            wrote.set()
            await asyncio.sleep(30)

        task = asyncio.ensure_future(
            VolumeServicer(store, lambda v: []).VolumeWrite(chunks(), None)
        )  # type: ignore[arg-type]
        while not wrote.is_set():  # the first chunk is written (no worker thread taken)
            await asyncio.sleep(0.01)
        blocker = loop.run_in_executor(pool, busy.wait, 10)  # the worker thread is taken
        task.cancel()  # the client has gone: the handler starts cleaning up...
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()  # ...and is cancelled again before its clean-up thread starts
        busy.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(lambda: None)  # the worker thread has done what was queued

    try:
        asyncio.run(upload())
    finally:
        busy.set()
        records.close()
    leftovers = [p for p in (tmp_path / "volumes").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
