"""The client's two faces: ``AsyncClient`` (coroutines) and ``Client`` (blocking) offer
the same calls, and the async face works on the caller's own event loop against a real
control plane."""

from __future__ import annotations

import asyncio
import inspect
import io
import threading

import pytest

from remotecell._proto import pb
from remotecell.client import AsyncClient, Client
from remotecell.contract.errors import ConfigError, VolumeFileNotFoundError, VolumeNotFoundError
from remotecell.contract.values import content_hash

#: Calls that return a stream (an async iterator) from a plain method on both faces.
STREAMS = {"submit", "attach"}


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_both_faces_have_the_same_calls_with_the_same_parameters():
    async_calls, blocking_calls = _public(AsyncClient), _public(Client)
    assert sorted(async_calls) == sorted(blocking_calls)
    for name, async_call in async_calls.items():
        blocking_call = blocking_calls[name]
        async_params = inspect.signature(async_call).parameters
        blocking_params = inspect.signature(blocking_call).parameters
        assert list(async_params.values()) == list(blocking_params.values()), name
        assert not inspect.iscoroutinefunction(blocking_call), name
        asynchronous = inspect.iscoroutinefunction(async_call) or inspect.isasyncgenfunction(
            async_call
        )
        assert asynchronous == (name not in STREAMS), name


def test_the_faces_cover_volumes_secrets_blobs_and_gpus():
    calls = set(_public(AsyncClient))
    assert {
        "create_volume",
        "list_volume_files",
        "read_volume_file",
        "write_volume_file",
        "create_secret",
        "list_secrets",
        "upload",
        "fetch",
        "list_gpus",
    } <= calls


def test_the_async_face_on_the_callers_loop_for_volumes_and_secrets(control_plane, client):
    async def scenario() -> list[str]:
        before = set(threading.enumerate())
        c = AsyncClient(control_plane.endpoint)
        try:
            info = await c.create_volume("weights")
            assert info.name == "weights"
            assert (await c.create_volume("weights", exist_ok=True)).name == "weights"
            with pytest.raises(ConfigError, match="exists already"):
                await c.create_volume("weights")
            data = b"w" * (5 * 1024 * 1024)  # more than one chunk
            entry = await c.write_volume_file("weights", "llama/w.bin", io.BytesIO(data), len(data))
            assert (entry.path, entry.size) == ("llama/w.bin", len(data))
            files = await c.list_volume_files("weights", "", recursive=True)
            assert [f.path for f in files] == ["llama/w.bin"]
            version, chunks = await c.read_volume_file("weights", "llama/w.bin")
            assert version and b"".join([chunk async for chunk in chunks]) == data
            out = io.BytesIO()
            assert await c.read_volume_file_into("weights", "llama/w.bin", out) == version
            assert out.getvalue() == data
            with pytest.raises(VolumeFileNotFoundError):
                await c.read_volume_file("weights", "nope.bin")
            with pytest.raises(VolumeNotFoundError, match="no volume 'nope'"):
                await c.list_volume_files("nope")

            reply = await c.create_secret("hf", {"HF_TOKEN": "hf_" + "x" * 20})
            assert (list(reply.secret.keys), reply.replaced) == (["HF_TOKEN"], False)
            assert [s.name for s in await c.list_secrets()] == ["hf"]

            # No thread of remotecell's own: the calls ran on this loop.
            started = {t.name for t in set(threading.enumerate()) - before}
            assert not [name for name in started if name.startswith("remotecell")]
            return [v.name for v in await c.list_volumes()]
        finally:
            await c.close()

    assert asyncio.run(scenario()) == ["weights"]
    # The blocking face sees what the async face did, and undoes it.
    assert [s.name for s in client.list_secrets()] == ["hf"]
    assert client.remove_volume_path("weights", "llama", recursive=True) == 1
    assert client.delete_volume("weights") == 0
    client.delete_secret("hf")
    assert client.list_volumes() == [] and client.list_secrets() == []


def test_the_async_face_reports_gpus_and_blobs(control_plane):
    async def scenario() -> None:
        c = AsyncClient(control_plane.endpoint)
        try:
            assert isinstance(await c.list_gpus(), pb.ListGPUsReply)
            await c.health()
            c._blob_dir = None  # as for a client on another machine: blobs go over gRPC
            data = b"payload" * 1000
            blobs = {content_hash(data): data}
            assert await c.upload(blobs) == len(data)
            assert await c.upload(blobs) == 0
            assert bytes(await c.fetch(content_hash(data))) == data
        finally:
            await c.close()

    asyncio.run(scenario())
