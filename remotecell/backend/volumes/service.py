"""The volume RPCs of the control plane, over the volume store.

The store's calls block (a directory, or an object store's SDK), so each runs in a
worker thread; file content streams through in chunks, never whole in memory.
Failures reach the client as gRPC status codes: a bad name or path is
INVALID_ARGUMENT, a missing volume or file NOT_FOUND (with trailing metadata saying
which, for the client to raise the right error), an existing
volume ALREADY_EXISTS, a volume that jobs still use FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc

from remotecell._proto import pb
from remotecell.backend import auth
from remotecell.backend.state import owned
from remotecell.backend.volumes.store import FileMissing, VolumeExists, VolumeMissing, VolumeStore
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import MISSING_KEY
from remotecell.contract.wire import MAX_VOLUME_FILE_BYTES

T = TypeVar("T")

log = logging.getLogger("remotecell.volumes")


class VolumeServicer:
    """The Volume* RPCs over the volume store (None: this control plane has none).

    Args:
        store: the volume store.
        users: the jobs that use a volume now, by its id (a volume in use is not deleted).
        user_exists: whether a user name is one of this control plane's users.
    """

    def __init__(
        self,
        store: VolumeStore | None,
        users: Callable[[str], Sequence[str]],
        user_exists: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.volume_store = store
        self._users = users
        self._user_exists = user_exists

    async def _store(self, context: grpc.aio.ServicerContext) -> VolumeStore:
        if self.volume_store is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "this control plane has no volume store"
            )
        assert self.volume_store is not None
        return self.volume_store

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as err:
            await _abort(context, err)

    async def VolumeCreate(
        self, request: pb.VolumeCreateRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeInfo:
        store = await self._store(context)
        record, _ = await self._call(
            context, store.create, request.name, request.exist_ok, auth.caller().user
        )
        return store.info(record)

    async def VolumeGet(
        self, request: pb.VolumeGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeInfo:
        store = await self._store(context)
        owner = await self._owner(context, store, request.name)
        record = await self._call(context, store.get, request.name, owner)
        return store.info(record)

    async def VolumeList(
        self, request: pb.VolumeListRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeListReply:
        store = await self._store(context)
        records = await self._call(context, store.all, auth.caller().user)
        return pb.VolumeListReply(volumes=[store.info(r) for r in records])

    async def VolumeDelete(
        self, request: pb.VolumeDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeDeleteReply:
        store = await self._store(context)
        owner = auth.caller().user  # only its owner deletes a volume
        record = await self._call(context, store.get, request.name, owner)
        users = self._users(record.volume_id)
        if users:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"volume {request.name!r} is in use by {', '.join(users)}; wait for "
                "them to end (or cancel them with `remotecell cancel JOB`), then delete it",
            )
        files = await self._call(context, store.delete, request.name, owner)
        return pb.VolumeDeleteReply(files=files)

    async def VolumeListFiles(
        self, request: pb.VolumeListFilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeListFilesReply:
        store = await self._store(context)
        owner = await self._owner(context, store, request.name)
        files = await self._call(
            context, store.files, request.name, request.path, request.recursive, owner
        )
        return pb.VolumeListFilesReply(files=files)

    async def VolumeRead(
        self, request: pb.VolumeReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.VolumeChunk]:
        store = await self._store(context)
        owner = await self._owner(context, store, request.name)
        entry, chunks = await self._call(context, store.read, request.name, request.path, owner)
        first = True
        try:
            while True:
                data = await self._call(context, next, chunks, None)
                if data is None:
                    break
                if first:
                    yield pb.VolumeChunk(size=entry.size, version=entry.version, data=data)
                    first = False
                else:
                    yield pb.VolumeChunk(data=data)
            if first:
                yield pb.VolumeChunk(size=0, version=entry.version)
        finally:
            await asyncio.to_thread(chunks.close)  # type: ignore[attr-defined]

    async def VolumeWrite(
        self, request_iterator: AsyncIterator[pb.VolumeChunk], context: grpc.aio.ServicerContext
    ) -> pb.VolumeFile:
        store = await self._store(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.name or not first.path:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a volume upload must start with the volume's name and the file's path",
            )
        assert first is not None
        owner = await self._owner(context, store, first.name)
        if first.size > MAX_VOLUME_FILE_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{first.path!r} is {first.size} bytes, more than the "
                f"{MAX_VOLUME_FILE_BYTES >> 40} TiB a volume file may hold",
            )
        writer = await self._call(context, store.writer, first.name, first.path, owner)
        try:
            if first.data:
                await asyncio.to_thread(writer.write, first.data)
            async for chunk in request_iterator:
                if writer.size + len(chunk.data) > first.size:
                    raise ConfigError(
                        f"the upload of {first.path!r} sent more than its {first.size} "
                        "bytes; the file was left as it was, send it again"
                    )
                await asyncio.to_thread(writer.write, chunk.data)
            if writer.size != first.size:
                raise ConfigError(
                    f"the upload of {first.path!r} ended after {writer.size} of its "
                    f"{first.size} bytes; the file was left as it was, send it again"
                )
            return await self._call(context, writer.commit)
        except BaseException as err:
            # A broken or cancelled upload: the previous version stays.
            await writer.discard()
            if isinstance(err, ConfigError):
                await _abort(context, err)
            raise

    async def VolumeRemove(
        self, request: pb.VolumeRemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.VolumeRemoveReply:
        store = await self._store(context)
        owner = await self._owner(context, store, request.name)
        files = await self._call(
            context, store.remove, request.name, request.path, request.recursive, owner
        )
        return pb.VolumeRemoveReply(files=files)

    async def ShareVolume(
        self, request: pb.ShareRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareReply:
        store = await self._store(context)
        owner = auth.caller().user
        record = await self._call(context, store.get, request.name, owner)
        name = owned.name_of(record.name)
        try:
            users = store.shares.change(
                owned.VOLUME, owner, name, request.user, request.revoke, self._user_exists
            )
        except ConfigError as err:
            await _abort(context, err)
        return pb.ShareReply(users=users)

    async def _owner(self, context: grpc.aio.ServicerContext, store: VolumeStore, name: str) -> str:
        """Whose volume ``name`` the caller means: their own, or the one shared with
        them by that name. A runner's credential reaches only the volumes mounted in
        that runner; otherwise the call ends."""
        caller = auth.caller()
        if caller.is_runner and name not in caller.volumes:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"volume {name[:64]!r} is not mounted in this runner: a runner's credential "
                "reaches only its own volumes",
            )
        try:
            return store.owner_for(caller.user, name)
        except ConfigError as err:
            await _abort(context, err)


async def _abort(context: grpc.aio.ServicerContext, err: Exception) -> NoReturn:
    if isinstance(err, ConfigError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    if isinstance(err, VolumeMissing):
        await context.abort(
            grpc.StatusCode.NOT_FOUND, str(err), trailing_metadata=((MISSING_KEY, "volume"),)
        )
    if isinstance(err, FileMissing):
        await context.abort(
            grpc.StatusCode.NOT_FOUND, str(err), trailing_metadata=((MISSING_KEY, "file"),)
        )
    if isinstance(err, VolumeExists):
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(err))
    if isinstance(err, OSError):
        # its text names the store's paths: the log keeps it, the client gets a sentence
        log.error("the volume store failed", exc_info=err)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"the volume store failed ({type(err).__name__}); the control plane's log "
            "says why, try again once it is fixed",
        )
    raise err
