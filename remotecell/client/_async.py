"""The async gRPC client of the control plane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from remotecell._proto import pb, pb_grpc
from remotecell.client._blobs import blob_gone
from remotecell.client.config import Endpoint
from remotecell.client.errors import (
    BlobNotFoundError,
    ConnectionError,
    RemoteCellError,
    from_rpc_error,
)

CHUNK = 4 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    # Find a restarted control plane quickly instead of backing off for minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]

#: How long a client keeps trying to resume a job's event stream after the control
#: plane went away (it resumes from the last sequence number it saw).
RESUME_FOR = 60.0


class AsyncClient:
    """One control plane, over one channel. Errors are ``remotecell`` exceptions."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._channel = grpc.aio.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.ControlPlaneStub(self._channel)
        self._md = (("authorization", f"Bearer {endpoint.token}"),)

    async def close(self) -> None:
        await self._channel.close()

    def _error(self, err: grpc.RpcError) -> RemoteCellError:
        return from_rpc_error(err, self.endpoint.url)

    async def _unary(
        self, method: Any, request: Any, timeout: float | None = 30.0, **kw: Any
    ) -> Any:
        try:
            return await method(request, metadata=self._md, timeout=timeout, **kw)
        except grpc.RpcError as err:
            raise self._error(err) from None

    async def health(self, timeout: float = 5.0, wait_for_ready: bool = False) -> pb.HealthReply:
        return await self._unary(
            self._stub.Health, pb.HealthRequest(), timeout=timeout, wait_for_ready=wait_for_ready
        )

    async def get_job(self, job_id: str) -> pb.JobInfo:
        return await self._unary(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))

    async def list_jobs(self, limit: int = 50) -> list[pb.JobInfo]:
        reply = await self._unary(self._stub.ListJobs, pb.ListJobsRequest(limit=limit))
        return list(reply.jobs)

    async def list_gpus(self) -> pb.ListGPUsReply:
        return await self._unary(self._stub.ListGPUs, pb.ListGPUsRequest())

    async def cancel(self, job_id: str, reason: str = "") -> pb.CancelReply:
        return await self._unary(self._stub.Cancel, pb.CancelRequest(job_id=job_id, reason=reason))

    async def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        if not hashes:
            return []
        reply = await self._unary(
            self._stub.MissingBlobs, pb.MissingBlobsRequest(hashes=list(hashes))
        )
        return list(reply.missing)

    async def put_blob(self, digest: str, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")

        async def chunks() -> AsyncIterator[pb.BlobChunk]:
            if len(view) == 0:
                yield pb.BlobChunk(hash=digest, size=0)
            for start in range(0, len(view), CHUNK):
                part = bytes(view[start : start + CHUNK])
                yield pb.BlobChunk(hash=digest if start == 0 else "", size=len(view), data=part)

        try:
            await self._stub.PutBlob(chunks(), metadata=self._md, timeout=600)
        except grpc.RpcError as err:
            raise self._error(err) from None

    async def get_blob(self, digest: str) -> bytearray:
        out = bytearray()
        try:
            async for chunk in self._stub.GetBlob(
                pb.GetBlobRequest(hash=digest), metadata=self._md, timeout=600
            ):
                out += chunk.data
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise BlobNotFoundError(err.details() or blob_gone(digest)) from None
            raise self._error(err) from None
        return out

    async def submit(self, spec: pb.JobSpec) -> AsyncIterator[pb.JobEvent]:
        """Submits a job and follows it: the first event names the job; the stream resumes
        by itself if the control plane restarts."""
        call = self._stub.Submit(pb.SubmitRequest(spec=spec), metadata=self._md)
        job_id = ""
        last = -1
        try:
            async for batch in call:
                for event in batch.events:
                    job_id = event.job_id
                    if not event.HasField("metrics"):  # samples are unnumbered
                        last = event.seq
                    yield event
                    if event.HasField("finished"):
                        return
        except grpc.RpcError as err:
            if not job_id or err.code() != grpc.StatusCode.UNAVAILABLE:
                raise self._error(err) from None
        async for event in self.attach(job_id, last + 1):
            yield event

    async def attach(self, job_id: str, from_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Follows a job's events from ``from_seq`` to its end, resuming across restarts."""
        last = from_seq - 1
        lost_since: float | None = None
        while True:
            call = self._stub.Attach(
                pb.AttachRequest(job_id=job_id, from_seq=last + 1), metadata=self._md
            )
            try:
                async for batch in call:
                    lost_since = None
                    for event in batch.events:
                        if event.HasField("metrics"):  # an unnumbered sample
                            yield event
                            continue
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
                        if event.HasField("finished"):
                            return
                return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self._error(err) from None
                if lost_since is None:
                    lost_since = time.monotonic()
                elif time.monotonic() - lost_since > RESUME_FOR:
                    raise self._error(err) from None
            # The control plane went away: wait (bounded) for it to come back, then resume.
            await self._until_available(lost_since + RESUME_FOR)

    async def _until_available(self, deadline: float) -> None:
        while True:
            try:
                await self.health(
                    timeout=max(0.1, deadline - time.monotonic()), wait_for_ready=True
                )
                return
            except ConnectionError:
                # Also a call sent on the dying connection before the channel noticed.
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    # -- secrets -------------------------------------------------------------

    async def create_secret(
        self, name: str, env: Mapping[str, str], overwrite: bool = False
    ) -> pb.SecretCreateReply:
        """See ``Client.create_secret``."""
        request = pb.SecretCreateRequest(name=name, env=dict(env), overwrite=overwrite)
        return await self._unary(self._stub.CreateSecret, request)

    async def list_secrets(self) -> list[pb.SecretInfo]:
        reply = await self._unary(self._stub.ListSecrets, pb.SecretListRequest())
        return list(reply.secrets)

    async def delete_secret(self, name: str) -> None:
        await self._unary(self._stub.DeleteSecret, pb.SecretDeleteRequest(name=name))
