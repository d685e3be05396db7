"""The control plane's client: every RPC, once, as coroutines.

``AsyncClient`` is the one implementation. Its coroutines reach gRPC only through a
small ``_Calls`` object: over ``grpc.aio`` for async callers (on the caller's own event
loop), or over blocking stubs for ``Client``, which runs the very same coroutines to
completion in the calling thread (see ``_blocking.run``). So the two faces share
requests, replies, error mapping, blob and volume logic and stream resumption, and
blocking calls pay no hand-off to an event-loop thread (measured: a ``Health`` round trip
on a Unix socket ~0.5 ms through a blocking stub, ~1.2 ms through a loop thread).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import grpc

from remotecell._proto import pb
from remotecell.client import _blobs, transport
from remotecell.client._calls import _AioCalls, _Calls, _Watch
from remotecell.client.config import Endpoint
from remotecell.client.invoke import WINDOW, AsyncCalls
from remotecell.contract import comms, wire
from remotecell.contract.blobs import blob_gone, blob_relpath, verify
from remotecell.contract.errors import (
    BlobNotFoundError,
    ConfigError,
    ConnectionError,
    DeploymentNotFoundError,
    RemoteCellError,
    VolumeFileNotFoundError,
    VolumeNotFoundError,
    from_rpc_error,
)
from remotecell.contract.events import is_end, is_sample
from remotecell.contract.values import Buffer
from remotecell.contract.volumes import MISSING_KEY

#: How long a client keeps trying to resume a job's event stream after the control
#: plane went away (it resumes from the last sequence number it saw).
RESUME_FOR = 60.0
#: Calls that move file content may take as long as the file needs.
TRANSFER_TIMEOUT: float | None = None


class AsyncClient:
    """A control plane, from async code, over one channel on the caller's event loop.

    Errors are ``remotecell`` exceptions. ``Client`` is the same client for blocking code.

    Example:
        >>> client = AsyncClient(Endpoint("unix:/tmp/cp.sock", token))   # doctest: +SKIP
        >>> async for event in client.submit(pb.JobSpec(code="print(1)")):  # doctest: +SKIP
        ...     print(event)
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._start(endpoint, _AioCalls(endpoint))

    @classmethod
    def _over(cls, endpoint: Endpoint, calls: _Calls) -> AsyncClient:
        """A client whose coroutines make their calls through ``calls``."""
        client = cls.__new__(cls)
        client._start(endpoint, calls)
        return client

    def _start(self, endpoint: Endpoint, calls: _Calls) -> None:
        self.endpoint = endpoint
        self._calls = calls
        self._closed = False
        self._health: pb.HealthReply | None = None
        #: The control plane's blob directory when this process shares it.
        self._blob_dir: Path | None = None
        #: Blobs read from that directory and checked, so an unchanged file is not
        #: hashed again.
        self._verified = _blobs.Verified()
        #: Calls of deployments, over one ``Invoke`` stream opened on first use.
        self._invoker: AsyncCalls | None = None

    async def close(self) -> None:
        self._closed = True
        if self._invoker is not None:
            self._invoker.close()
        await self._calls.close()

    # -- calling ---------------------------------------------------------------

    def _error(self, err: grpc.RpcError) -> RemoteCellError:
        return from_rpc_error(err, self.endpoint.url)

    def _volume_error(self, err: grpc.RpcError) -> RemoteCellError:
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else "") or ""
        if code == grpc.StatusCode.NOT_FOUND:
            trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
            missing = dict(trailing or ()).get(MISSING_KEY)
            if missing == "file":
                return VolumeFileNotFoundError(details)
            if missing == "volume":
                return VolumeNotFoundError(details)
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return ConfigError(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return RemoteCellError(details)
        return self._error(err)

    def _deployment_error(self, err: grpc.RpcError) -> RemoteCellError:
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else "") or ""
        if code == grpc.StatusCode.NOT_FOUND:
            return DeploymentNotFoundError(details)
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return ConfigError(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return RemoteCellError(details)
        return self._error(err)

    def _check_open(self) -> None:
        if self._closed:
            # What grpc says here is "Cannot invoke RPC on closed channel!", a ValueError.
            raise ConnectionError(
                f"this connection to the control plane at {self.endpoint.url} was closed "
                "(the extension was unloaded or reloaded since); run the command again"
            )

    async def _unary(
        self,
        method: str,
        request: Any,
        timeout: float | None = 30.0,
        wait_for_ready: bool = False,
        volume: bool = False,
        deployment: bool = False,
    ) -> Any:
        self._check_open()
        try:
            return await self._calls.unary(method, request, timeout, wait_for_ready)
        except grpc.RpcError as err:
            if deployment:
                raise self._deployment_error(err) from None
            raise (self._volume_error(err) if volume else self._error(err)) from None

    async def _stream_in(
        self, method: str, requests: Iterator[Any], timeout: float | None, volume: bool = False
    ) -> Any:
        self._check_open()
        try:
            return await self._calls.stream_in(method, requests, timeout)
        except grpc.RpcError as err:
            raise (self._volume_error(err) if volume else self._error(err)) from None

    # -- control plane and jobs ------------------------------------------------

    async def health(self, timeout: float = 5.0, wait_for_ready: bool = False) -> pb.HealthReply:
        """The control plane's state; also says whether this process shares its blob store."""
        reply: pb.HealthReply = await self._unary(
            "Health", pb.HealthRequest(), timeout=timeout, wait_for_ready=wait_for_ready
        )
        self._health = reply
        self._blob_dir = _blobs.shared_blob_dir(reply)
        return reply

    async def get_job(self, job_id: str) -> pb.JobInfo:
        return await self._unary("GetJob", pb.GetJobRequest(job_id=job_id))

    async def list_jobs(self, limit: int = 50) -> list[pb.JobInfo]:
        reply = await self._unary("ListJobs", pb.ListJobsRequest(limit=limit))
        return list(reply.jobs)

    async def list_gpus(self) -> pb.ListGPUsReply:
        return await self._unary("ListGPUs", pb.ListGPUsRequest())

    async def cancel(self, job_id: str, reason: str = "") -> pb.CancelReply:
        return await self._unary("Cancel", pb.CancelRequest(job_id=job_id, reason=reason))

    async def answer_input(
        self, job_id: str, seq: int, text: str = "", refused: str = "", eof: bool = False
    ) -> None:
        """Answers the cell's input request, the job's event ``seq`` (see ``pb.InputAnswer``)."""
        answer = pb.InputAnswer(job_id=job_id, seq=seq, text=text, refused=refused, eof=eof)
        await self._unary("AnswerInput", answer)

    async def send_comm(self, job_id: str, message: pb.CommMessage) -> list[pb.JobEvent]:
        """Sends the front end's ``message`` to a comm that job ``job_id``'s cell opened;
        returns what the widget sent and printed in answer (``comm``, ``stream`` and
        ``display`` events)."""
        if refusal := comms.over_limit(message):  # the control plane could not take it in
            raise ConfigError(refusal)
        reply = await self._unary("SendComm", pb.CommToRunner(job_id=job_id, message=message))
        return list(reply.events)

    def submit(self, spec: pb.JobSpec) -> AsyncIterator[pb.JobEvent]:
        """Submits a job and follows it: the first event names the job; the stream resumes
        by itself if the control plane restarts."""
        return self._follow("", 0, spec)

    def attach(self, job_id: str, from_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Follows a job's events from ``from_seq`` to its end, resuming across restarts."""
        return self._follow(job_id, from_seq, None)

    async def _follow(
        self, job_id: str, from_seq: int, spec: pb.JobSpec | None, watch: _Watch | None = None
    ) -> AsyncIterator[pb.JobEvent]:
        """Submits ``spec`` (if given) or attaches to ``job_id``, and yields the job's
        events to its end. A control plane that goes away (UNAVAILABLE) is waited for up
        to ``RESUME_FOR`` seconds, and the job followed on after the last event seen."""
        self._check_open()
        if spec is not None:
            wire.check_size(pb.SubmitRequest(spec=spec), "the job's spec")
        last = from_seq - 1
        lost_since: float | None = None
        while True:
            if spec is not None:
                stream = self._calls.stream_out("Submit", pb.SubmitRequest(spec=spec))
            else:
                request = pb.AttachRequest(job_id=job_id, from_seq=last + 1)
                stream = self._calls.stream_out("Attach", request)
            if watch is not None and not watch.opened(stream):
                return
            try:
                async for batch in stream:
                    lost_since = None
                    for event in batch.events:
                        job_id = event.job_id  # Submit's first event names the job
                        if is_sample(event):  # unnumbered
                            yield event
                            continue
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
                        if is_end(event):
                            return
                return
            except grpc.RpcError as err:
                if watch is not None and watch.closed:
                    return
                # A submit that failed before naming its job may or may not exist.
                if not job_id or err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self._error(err) from None
                if lost_since is None:
                    lost_since = time.monotonic()
                elif time.monotonic() - lost_since > RESUME_FOR:
                    raise self._error(err) from None
            spec = None
            if not await self._until_available(lost_since + RESUME_FOR, watch):
                return

    async def _until_available(self, deadline: float, watch: _Watch | None) -> bool:
        """Waits until the control plane answers again; False when ``watch`` stopped
        following meanwhile.

        Raises:
            ConnectionError: it did not answer before ``deadline``.
        """
        while watch is None or not watch.closed:
            try:
                # Short calls, so that a stop is noticed. A call can also fail at once, on
                # the connection that just broke: failures before the deadline retry.
                remaining = deadline - time.monotonic()
                await self.health(timeout=min(1.0, max(0.1, remaining)), wait_for_ready=True)
                return True
            except ConnectionError:
                if time.monotonic() >= deadline:
                    raise
                await self._calls.sleep(0.05)
        return False

    # -- blobs -----------------------------------------------------------------

    async def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        """Which of ``hashes`` the control plane does not have."""
        if not hashes:
            return []
        reply = await self._unary("MissingBlobs", pb.MissingBlobsRequest(hashes=list(hashes)))
        return list(reply.missing)

    async def put_blob(self, digest: str, data: Buffer) -> None:
        """Sends one blob over gRPC (the control plane checks it against ``digest``)."""
        view = memoryview(data).cast("B")

        def chunks() -> Iterator[pb.BlobChunk]:
            if len(view) == 0:
                yield pb.BlobChunk(hash=digest, size=0)
            for start in range(0, len(view), transport.CHUNK):
                part = bytes(view[start : start + transport.CHUNK])
                yield pb.BlobChunk(hash=digest if start == 0 else "", size=len(view), data=part)

        await self._stream_in("PutBlob", chunks(), timeout=600)

    async def get_blob(self, digest: str) -> bytearray:
        """One blob's bytes over gRPC, checked against ``digest``.

        Raises:
            BlobNotFoundError: the control plane does not have it (any more).
            BlobCorruptError: its stored bytes do not match its hash.
        """
        self._check_open()
        out = bytearray()
        try:
            async for chunk in self._calls.stream_out(
                "GetBlob", pb.GetBlobRequest(hash=digest), timeout=600
            ):
                out += chunk.data
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise BlobNotFoundError(err.details() or blob_gone(digest)) from None
            raise self._error(err) from None
        verify(digest, out)
        return out

    async def _shared_dir(self) -> Path | None:
        if self._health is None:
            await self.health()
        return self._blob_dir

    async def upload(self, blobs: Mapping[str, Buffer]) -> int:
        """Uploads the blobs the control plane lacks; returns how many bytes were sent.
        Where this process shares the control plane's blob directory they are written
        there, else they go over gRPC."""
        if not blobs:
            return 0
        shared = await self._shared_dir()
        sent = 0
        if shared is not None:
            for digest, data in blobs.items():
                if not _blobs.local_has(shared, digest):
                    _blobs.local_write(shared, digest, data)
                    sent += memoryview(data).nbytes
            return sent
        for digest in await self.missing_blobs(list(blobs)):
            await self.put_blob(digest, blobs[digest])
            sent += memoryview(blobs[digest]).nbytes
        return sent

    async def fetch(self, digest: str) -> Buffer:
        """A blob's bytes: mapped from the shared blob directory, else over gRPC; checked
        against ``digest`` either way.

        Raises:
            BlobNotFoundError: the control plane does not have it (any more).
            BlobCorruptError: its stored bytes do not match its hash.
        """
        shared = await self._shared_dir()
        if shared is not None:
            try:
                data, state = _blobs.local_read(shared, digest)
            except FileNotFoundError:
                raise BlobNotFoundError(blob_gone(digest)) from None
            self._verified.check(digest, data, state, shared / blob_relpath(digest))
            return data
        return await self.get_blob(digest)

    # -- secrets ---------------------------------------------------------------

    async def create_secret(
        self, name: str, env: Mapping[str, str], overwrite: bool = False
    ) -> pb.SecretCreateReply:
        """Stores a secret on the control plane, encrypted (``overwrite``: replace one of
        the same name). The reply names its keys and whether it replaced one."""
        request = pb.SecretCreateRequest(name=name, env=dict(env), overwrite=overwrite)
        return await self._unary("CreateSecret", request)

    async def list_secrets(self) -> list[pb.SecretInfo]:
        """The stored secrets' names, keys and times (never their values)."""
        reply = await self._unary("ListSecrets", pb.SecretListRequest())
        return list(reply.secrets)

    async def delete_secret(self, name: str) -> None:
        await self._unary("DeleteSecret", pb.SecretDeleteRequest(name=name))

    async def share_secret(self, name: str, user: str, revoke: bool = False) -> list[str]:
        """Shares the caller's secret ``name`` with ``user`` (``revoke``: stops sharing
        it); returns whom it is shared with now."""
        request = pb.ShareRequest(name=name, user=user, revoke=revoke)
        return list((await self._unary("ShareSecret", request)).users)

    # -- volumes ---------------------------------------------------------------
    # Content streams in chunks both ways: a file is never whole in memory.

    async def create_volume(self, name: str, exist_ok: bool = False) -> pb.VolumeInfo:
        request = pb.VolumeCreateRequest(name=name, exist_ok=exist_ok)
        return await self._unary("VolumeCreate", request, timeout=60, volume=True)

    async def get_volume(self, name: str) -> pb.VolumeInfo:
        request = pb.VolumeGetRequest(name=name)
        return await self._unary("VolumeGet", request, timeout=60, volume=True)

    async def list_volumes(self) -> list[pb.VolumeInfo]:
        reply = await self._unary("VolumeList", pb.VolumeListRequest(), timeout=60, volume=True)
        return list(reply.volumes)

    async def share_volume(self, name: str, user: str, revoke: bool = False) -> list[str]:
        """Shares the caller's volume ``name`` with ``user`` (``revoke``: stops sharing
        it); returns whom it is shared with now."""
        request = pb.ShareRequest(name=name, user=user, revoke=revoke)
        return list((await self._unary("ShareVolume", request, timeout=60, volume=True)).users)

    async def delete_volume(self, name: str) -> int:
        """Deletes a volume and its files; returns how many files it had."""
        request = pb.VolumeDeleteRequest(name=name)
        reply = await self._unary("VolumeDelete", request, timeout=60, volume=True)
        return int(reply.files)

    async def list_volume_files(
        self, name: str, path: str = "", recursive: bool = False
    ) -> list[pb.VolumeFile]:
        request = pb.VolumeListFilesRequest(name=name, path=path, recursive=recursive)
        reply = await self._unary("VolumeListFiles", request, timeout=60, volume=True)
        return list(reply.files)

    async def remove_volume_path(self, name: str, path: str, recursive: bool = False) -> int:
        """Removes a file (or, ``recursive``, a directory); returns how many files went."""
        request = pb.VolumeRemoveRequest(name=name, path=path, recursive=recursive)
        reply = await self._unary("VolumeRemove", request, timeout=60, volume=True)
        return int(reply.files)

    async def read_volume_file(self, name: str, path: str) -> tuple[str, AsyncIterator[bytes]]:
        """A file's version and its content in chunks (the call starts at once, so a
        missing file raises here)."""
        self._check_open()
        request = pb.VolumeReadRequest(name=name, path=path)
        messages = aiter(self._calls.stream_out("VolumeRead", request, TRANSFER_TIMEOUT))
        try:
            first = await anext(messages)
        except grpc.RpcError as err:
            raise self._volume_error(err) from None

        async def chunks() -> AsyncIterator[bytes]:
            if first.data:
                yield first.data
            try:
                async for chunk in messages:
                    yield chunk.data
            except grpc.RpcError as err:
                raise self._volume_error(err) from None

        return first.version, chunks()

    async def read_volume_file_into(self, name: str, path: str, out: IO[bytes]) -> str:
        """Writes a file's content to ``out``; returns its version."""
        version, chunks = await self.read_volume_file(name, path)
        async for chunk in chunks:
            out.write(chunk)
        return version

    async def write_volume_file(
        self, name: str, path: str, source: IO[bytes], size: int
    ) -> pb.VolumeFile:
        """Uploads ``size`` bytes from ``source`` as the file ``path``; it replaces the old
        one atomically once all of it arrived."""

        def chunks() -> Iterator[pb.VolumeChunk]:
            sent = 0
            first = True
            while first or sent < size:
                data = source.read(min(transport.CHUNK, size - sent)) if size > sent else b""
                if not data and not first:
                    return  # it shrank meanwhile: the control plane refuses the short upload
                sent += len(data)
                if first:
                    yield pb.VolumeChunk(name=name, path=path, size=size, data=data)
                    first = False
                else:
                    yield pb.VolumeChunk(data=data)

        return await self._stream_in("VolumeWrite", chunks(), TRANSFER_TIMEOUT, volume=True)

    async def upload_volume_file(
        self, name: str, path: str, local: str | os.PathLike[str]
    ) -> pb.VolumeFile:
        """Uploads the local file ``local`` as the file ``path``."""
        with open(local, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            return await self.write_volume_file(name, path, source, size)

    # -- images ----------------------------------------------------------------

    async def list_images(self) -> list[pb.ImageInfo]:
        """The builds in the control plane's image cache, newest first."""
        reply = await self._unary("ListImages", pb.ListImagesRequest(), timeout=60)
        return list(reply.images)

    async def image_log(self, image_id: str) -> AsyncIterator[pb.ImageLogChunk]:
        """The build logs of the image ``image_id`` names (an id or its start), in pieces:
        the first piece of each build's log names the build."""
        self._check_open()
        request = pb.GetImageLogRequest(image_id=image_id)
        stream = self._calls.stream_out("GetImageLog", request, TRANSFER_TIMEOUT)
        try:
            async for chunk in stream:
                yield chunk
        except grpc.RpcError as err:
            raise self._error(err) from None
        finally:
            stream.cancel()

    async def remove_images(self, image_ids: Sequence[str]) -> list[pb.RemovedImage]:
        """Removes the images these ids (or their starts) name: what was built, the record
        and the build log. All of them, or none when one is unknown or being built."""
        request = pb.RemoveImagesRequest(image_ids=list(image_ids))
        return list((await self._unary("RemoveImages", request, timeout=None)).removed)

    async def prune_images(self, days: float | None = None) -> pb.PruneImagesReply:
        """Removes images unused for ``days`` (None: the control plane's default, 30),
        failed builds and leftovers. The reply says what went, and what was kept and why."""
        request = pb.PruneImagesRequest() if days is None else pb.PruneImagesRequest(days=days)
        reply: pb.PruneImagesReply = await self._unary("PruneImages", request, timeout=None)
        return reply

    # -- deployments -----------------------------------------------------------

    async def deploy(self, request: pb.DeployRequest) -> pb.DeploymentInfo:
        """Stores a new version of ``request.name`` (a new deployment when there is none)
        and rolls its replicas to it; the spec's ``serve`` gets its version there."""
        wire.check_size(request, "the deployment's spec")
        return await self._unary("Deploy", request, timeout=120, deployment=True)

    async def list_deployments(self) -> list[pb.DeploymentInfo]:
        reply = await self._unary("ListDeployments", pb.ListDeploymentsRequest())
        return list(reply.deployments)

    async def get_deployment(self, name: str) -> pb.DeploymentInfo:
        return await self._unary("GetDeployment", pb.DeploymentRequest(name=name), deployment=True)

    async def stop_deployment(self, name: str) -> pb.DeploymentInfo:
        """Stops a deployment: no new calls; its replicas drain and stop."""
        return await self._unary(
            "StopDeployment", pb.DeploymentRequest(name=name), timeout=60, deployment=True
        )

    async def scale_deployment(
        self, name: str, min_containers: int | None = None, max_containers: int | None = None
    ) -> pb.DeploymentInfo:
        """Changes the current version's min and max containers (None: unchanged)."""
        request = pb.ScaleRequest(name=name)
        if min_containers is not None:
            request.min_containers = min_containers
        if max_containers is not None:
            request.max_containers = max_containers
        return await self._unary("ScaleDeployment", request, deployment=True)

    async def rollback_deployment(self, name: str) -> pb.DeploymentInfo:
        """Makes the version before the current one current again."""
        return await self._unary(
            "RollbackDeployment", pb.DeploymentRequest(name=name), timeout=60, deployment=True
        )

    async def deployment_logs(
        self, name: str, follow: bool = False, tail: int = 0
    ) -> AsyncIterator[str]:
        """The deployment's log lines (``tail``: the last so many; ``follow``: then new
        ones as they come, until the caller stops)."""
        self._check_open()
        request = pb.DeploymentLogsRequest(name=name, follow=follow, tail=tail)
        stream = self._calls.stream_out("DeploymentLogs", request, TRANSFER_TIMEOUT)
        try:
            async for message in stream:
                for line in message.lines:
                    yield line
        except grpc.RpcError as err:
            raise self._deployment_error(err) from None
        finally:
            stream.cancel()

    def _deployment_calls(self) -> AsyncCalls:
        self._check_open()
        if self._invoker is None:
            open_stream = getattr(self._calls, "stream_both", None)
            if open_stream is None:
                raise RemoteCellError(
                    "this client cannot call deployments; use Client or AsyncClient"
                )
            self._invoker = AsyncCalls(
                lambda: open_stream("Invoke"), self._error, self.upload, self.fetch
            )
        return self._invoker

    async def call(
        self, deployment: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        """Calls a deployment's handler with ``args`` and ``kwargs``; returns its value (a
        generator's: its items as a list). Many calls share one stream.

        Raises:
            RemoteError: the handler raised (as the exception's own type where it loads).
            CallArgumentsError: the arguments do not fit the handler.
            EndpointUnavailableError: no replica could take the call.
            CallTimeoutError: it was not answered within the call timeout.
        """
        return await self._deployment_calls().call(deployment, args, kwargs)

    async def call_stream(
        self, deployment: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        """Calls a generator handler; yields its items as they come (a plain handler's
        value as the one item). Errors as for ``call``."""
        async for item in self._deployment_calls().call_stream(deployment, args, kwargs):
            yield item

    async def call_many(
        self,
        deployment: str,
        arguments: Iterable[tuple[Any, ...]],
        kwargs: Mapping[str, Any] | None = None,
        window: int = WINDOW,
        return_exceptions: bool = False,
        order_outputs: bool = True,
    ) -> AsyncIterator[Any]:
        """Calls a deployment once per tuple of positional ``arguments`` (each with
        ``kwargs``), at most ``window`` calls outstanding; yields their values in order
        (``order_outputs=False``: as they end). A failure raises and the calls still
        outstanding are dropped, unless ``return_exceptions`` yields it in its place."""
        calls = self._deployment_calls()
        async for out in calls.call_many(
            deployment, arguments, kwargs, window, return_exceptions, order_outputs
        ):
            yield out
