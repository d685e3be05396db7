"""The volume RPCs over a blocking ``Client``, with their errors mapped.

``remotecell.Volume``, the CLI and runners (syncing a volume's copy) all go through
these functions. Content streams in chunks both ways: a file is never whole in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

import grpc

from remotecell._proto import pb
from remotecell.client._async import CHUNK
from remotecell.client._blocking import Client
from remotecell.client.errors import (
    ConfigError,
    RemoteCellError,
    VolumeFileNotFoundError,
    VolumeNotFoundError,
)

T = TypeVar("T")

#: Trailing metadata of a NOT_FOUND: "volume" or "file".
MISSING_KEY = "remotecell-missing"
#: Calls that move file content may take as long as the file needs.
TRANSFER_TIMEOUT: float | None = None


def _error(client: Client, err: grpc.RpcError) -> RemoteCellError:
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else "") or ""
    if code == grpc.StatusCode.NOT_FOUND:
        trailing = dict(err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else {}
        if trailing.get(MISSING_KEY) == "file":
            return VolumeFileNotFoundError(details)
        if trailing.get(MISSING_KEY) == "volume":
            return VolumeNotFoundError(details)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return ConfigError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return RemoteCellError(details)
    return client._error(err)


def _call(client: Client, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as err:
        raise _error(client, err) from None


def _unary(client: Client, method: str, request: Any) -> Any:
    stub_method = getattr(client._stub, method)
    return _call(client, lambda: stub_method(request, metadata=client._md, timeout=60))


def create(client: Client, name: str, exist_ok: bool = False) -> pb.VolumeInfo:
    return _unary(client, "VolumeCreate", pb.VolumeCreateRequest(name=name, exist_ok=exist_ok))


def get(client: Client, name: str) -> pb.VolumeInfo:
    return _unary(client, "VolumeGet", pb.VolumeGetRequest(name=name))


def list_volumes(client: Client) -> list[pb.VolumeInfo]:
    return list(_unary(client, "VolumeList", pb.VolumeListRequest()).volumes)


def delete(client: Client, name: str) -> int:
    return int(_unary(client, "VolumeDelete", pb.VolumeDeleteRequest(name=name)).files)


def list_files(
    client: Client, name: str, path: str = "", recursive: bool = False
) -> list[pb.VolumeFile]:
    request = pb.VolumeListFilesRequest(name=name, path=path, recursive=recursive)
    return list(_unary(client, "VolumeListFiles", request).files)


def remove(client: Client, name: str, path: str, recursive: bool = False) -> int:
    request = pb.VolumeRemoveRequest(name=name, path=path, recursive=recursive)
    return int(_unary(client, "VolumeRemove", request).files)


def read(client: Client, name: str, path: str) -> tuple[str, Iterator[bytes]]:
    """A file's version and its content in chunks (the call starts at once, so a
    missing file raises here)."""
    call = client._stub.VolumeRead(
        pb.VolumeReadRequest(name=name, path=path), metadata=client._md, timeout=TRANSFER_TIMEOUT
    )
    stream = iter(call)
    first = _call(client, lambda: next(stream))

    def chunks() -> Iterator[bytes]:
        if first.data:
            yield first.data
        while True:
            chunk = _call(client, lambda: next(stream, None))
            if chunk is None:
                return
            yield chunk.data

    return first.version, chunks()


def read_into(client: Client, name: str, path: str, out: IO[bytes]) -> str:
    """Writes a file's content to ``out``; returns its version."""
    version, chunks = read(client, name, path)
    for chunk in chunks:
        out.write(chunk)
    return version


def write_from(client: Client, name: str, path: str, source: IO[bytes], size: int) -> pb.VolumeFile:
    """Uploads ``size`` bytes from ``source`` as the file ``path``; it replaces the old
    one atomically once all of it arrived."""

    def chunks() -> Iterator[pb.VolumeChunk]:
        sent = 0
        first = True
        while first or sent < size:
            data = source.read(min(CHUNK, size - sent)) if size > sent else b""
            if not data and not first:
                return  # it shrank meanwhile: the control plane refuses the short upload
            sent += len(data)
            if first:
                yield pb.VolumeChunk(name=name, path=path, size=size, data=data)
                first = False
            else:
                yield pb.VolumeChunk(data=data)

    return _call(
        client,
        lambda: client._stub.VolumeWrite(chunks(), metadata=client._md, timeout=TRANSFER_TIMEOUT),
    )


def write_file(
    client: Client, name: str, path: str, local: str | os.PathLike[str]
) -> pb.VolumeFile:
    with open(local, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        return write_from(client, name, path, source, size)
