"""The gRPC face of the control plane: translates RPCs to the controller and blob store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc

import remotecell
from remotecell._proto import pb, pb_grpc
from remotecell.backend.controller import Controller, JobNotFound
from remotecell.backend.secrets.store import (
    SecretRecord,
    SecretStore,
    SecretStoreError,
    missing_message,
)
from remotecell.backend.state.blobs import BlobStore, spec_refs
from remotecell.backend.volumes.service import VolumeServicer
from remotecell.contract.blobs import blob_gone
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import check_name


def _not_found(job_id: str) -> str:
    return f"no job {job_id!r} on this control plane; `remotecell jobs` lists the jobs it has"


class ControlPlaneService(VolumeServicer, pb_grpc.ControlPlaneServicer):
    def __init__(self, controller: Controller, blobs: BlobStore) -> None:
        self.controller = controller
        self.blobs = blobs

    async def Health(
        self, request: pb.HealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthReply:
        runners, running, queued = self.controller.counts()
        return pb.HealthReply(
            version=remotecell.__version__,
            pid=os.getpid(),
            started=self.controller.started,
            blob_dir=str(self.blobs.local_dir or ""),
            blob_dir_id=self.blobs.dir_id,
            runners=runners,
            jobs_running=running,
            jobs_queued=queued,
            http_url=self.controller.http_url,
        )

    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvents]:
        refs = spec_refs(request.spec)
        missing = self.blobs.missing(refs)
        if missing:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(missing)} blob(s) the job refers to were never uploaded (first: {missing[0]}); "
                "upload them before submitting",
            )
        self.blobs.touch(refs)  # used now: kept --blob-ttl from now
        try:
            job_id = self.controller.submit(request.spec)
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        async for batch in self.controller.follow(job_id):
            yield pb.JobEvents(events=batch)

    async def Attach(
        self, request: pb.AttachRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvents]:
        try:
            async for batch in self.controller.follow(request.job_id, request.from_seq):
                yield pb.JobEvents(events=batch)
        except JobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))

    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelReply:
        try:
            state, was_running = await self.controller.cancel(request.job_id, request.reason)
        except JobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))
        return pb.CancelReply(state=state, was_running=was_running)  # type: ignore[arg-type]

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsReply:
        rows = self.controller.store.list_jobs(request.limit or 50)
        return pb.ListJobsReply(jobs=[r.info() for r in rows])

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.JobInfo:
        row = self.controller.store.get_job(request.job_id)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))
        assert row is not None
        return row.info(self.controller.store.count_events(row.id))

    async def ListGPUs(
        self, request: pb.ListGPUsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGPUsReply:
        return self.controller.gpu_listing()

    async def MissingBlobs(
        self, request: pb.MissingBlobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.MissingBlobsReply:
        try:
            return pb.MissingBlobsReply(missing=self.blobs.missing(request.hashes))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        raise AssertionError("unreachable")

    async def PutBlob(
        self, request_iterator: AsyncIterator[pb.BlobChunk], context: grpc.aio.ServicerContext
    ) -> pb.PutBlobReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.hash:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a blob upload must start with its hash"
            )
        assert first is not None
        chunks = [first.data]
        async for chunk in request_iterator:
            chunks.append(chunk.data)
        try:
            size = self.blobs.put(first.hash, chunks)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.PutBlobReply(hash=first.hash, size=size)

    async def GetBlob(
        self, request: pb.GetBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BlobChunk]:
        try:
            if not self.blobs.has(request.hash):
                await context.abort(grpc.StatusCode.NOT_FOUND, blob_gone(request.hash))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        first = True
        for chunk in self.blobs.read(request.hash):
            yield pb.BlobChunk(hash=request.hash if first else "", data=chunk)
            first = False
        if first:
            yield pb.BlobChunk(hash=request.hash)

    async def RunnerSession(
        self, request_iterator: AsyncIterator[pb.RunnerMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunnerInstruction]:
        async for instruction in self.controller.runner_session(request_iterator):
            yield instruction

    # -- secrets: values go in, never out (see backend/secrets) ------------------------

    def _secret_store(self) -> SecretStore:
        store = self.controller.secret_store
        if store is None:
            raise SecretStoreError("this control plane keeps no secrets")
        return store

    async def CreateSecret(
        self, request: pb.SecretCreateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretCreateReply:
        try:
            record, replaced = self._secret_store().create(
                request.name, dict(request.env), overwrite=request.overwrite
            )
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretCreateReply(secret=_secret_info(record), replaced=replaced)

    async def ListSecrets(
        self, request: pb.SecretListRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretListReply:
        try:
            records = self._secret_store().records()
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretListReply(secrets=[_secret_info(r) for r in records])

    async def DeleteSecret(
        self, request: pb.SecretDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretDeleteReply:
        try:
            if not self._secret_store().delete(check_name(request.name)):
                raise SecretStoreError(missing_message(request.name))
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretDeleteReply()


def _secret_info(record: SecretRecord) -> pb.SecretInfo:
    return pb.SecretInfo(
        name=record.name, keys=record.keys, created=record.created, updated=record.updated
    )
