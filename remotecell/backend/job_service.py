"""The job RPCs of the control plane, over the controller: submit and follow jobs,
cancel them, list them and the GPUs, health, and the runners' sessions.

Submit also checks with the blob store that every blob the job names was uploaded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

import remotecell
from remotecell._proto import pb
from remotecell.backend import auth
from remotecell.backend.controller import Controller, JobNotFound
from remotecell.backend.jobs import comms, stdin
from remotecell.backend.state.blobs import BlobStore, spec_refs
from remotecell.contract import jobs
from remotecell.contract.errors import ConfigError


async def _check(
    context: grpc.aio.ServicerContext, rule: Callable[..., object], *args: Any
) -> None:
    """Applies a contract rule to a request's field; its ConfigError ends the call as
    INVALID_ARGUMENT with the rule's sentence."""
    try:
        rule(*args)
    except ConfigError as err:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


def _not_found(job_id: str) -> str:
    return f"no job {job_id!r} on this control plane; `remotecell jobs` lists the jobs it has"


class JobServicer:
    """Health, Submit, Attach, Cancel, AnswerInput, SendComm, ListJobs, GetJob, ListGPUs,
    RunnerSession."""

    def __init__(self, controller: Controller, blobs: BlobStore) -> None:
        self.controller = controller
        self.blobs = blobs
        self.comms = comms.CommRelay(controller)

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
            runners_share_filesystem=self.controller.executor.shares_host_filesystem,
        )

    async def Submit(
        self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvents]:
        try:
            jobs.check_spec(request.spec)  # every field, before a blob id names a path
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
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
            job_id = self.controller.submit(request.spec, auth.caller().user)
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        async for batch in self.controller.follow(job_id):
            yield pb.JobEvents(events=stdin.live(self.controller.jobs, batch))

    async def Attach(
        self, request: pb.AttachRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvents]:
        await _check(context, jobs.check_job_id, request.job_id)
        await _check(context, jobs.check_seq, request.from_seq, "from_seq")
        await self._own(context, request.job_id)
        try:
            async for batch in self.controller.follow(request.job_id, request.from_seq):
                yield pb.JobEvents(events=stdin.live(self.controller.jobs, batch))
        except JobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))

    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelReply:
        await _check(context, jobs.check_job_id, request.job_id)
        await _check(context, jobs.check_text, request.reason, "the cancel's reason")
        await self._own(context, request.job_id)
        try:
            state, was_running = await self.controller.cancel(request.job_id, request.reason)
        except JobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))
        return pb.CancelReply(state=state, was_running=was_running)  # type: ignore[arg-type]

    async def AnswerInput(
        self, request: pb.InputAnswer, context: grpc.aio.ServicerContext
    ) -> pb.AnswerInputReply:
        await _check(context, jobs.check_job_id, request.job_id)
        await _check(context, jobs.check_seq, request.seq, "the input request's seq")
        await _check(context, jobs.check_text, request.text, "the answer", jobs.MAX_ANSWER_CHARS)
        await _check(context, jobs.check_text, request.refused, "the refusal", jobs.MAX_TEXT_CHARS)
        await self._own(context, request.job_id)
        job = self.controller.jobs.get(request.job_id)
        if job is None and self.controller.store.get_job(request.job_id) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))
        try:
            stdin.answer(job, request, self.controller.sessions.send)
        except stdin.AnswerRefused as err:
            await context.abort(getattr(grpc.StatusCode, err.code), str(err))
        return pb.AnswerInputReply()

    async def SendComm(
        self, request: pb.CommToRunner, context: grpc.aio.ServicerContext
    ) -> pb.SendCommReply:
        await _check(context, jobs.check_job_id, request.job_id)
        await self._own(context, request.job_id)
        try:
            return await self.comms.send(request)
        except comms.CommRefused as err:
            await context.abort(getattr(grpc.StatusCode, err.code), str(err))
            raise  # not reached: abort raises

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsReply:
        if request.limit > jobs.MAX_LIST_LIMIT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"limit={request.limit} asks for too many jobs; ask for at most "
                f"{jobs.MAX_LIST_LIMIT} (0: the latest 50)",
            )
        rows = self.controller.store.list_jobs(request.limit or 50, auth.caller().user)
        return pb.ListJobsReply(jobs=[r.info() for r in rows])

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.JobInfo:
        await _check(context, jobs.check_job_id, request.job_id)
        store, caller = self.controller.store, auth.caller()
        row = store.get_job(request.job_id)
        if row is None or not auth.owns(caller, row.owner):
            # A unique start of one of the caller's job ids names that job ("job-" may be
            # left out), as `remotecell logs`/`cancel` take it.
            prefix = request.job_id.strip()
            prefix = (
                prefix
                if prefix.startswith("job-") or "job-".startswith(prefix)
                else "job-" + prefix
            )
            found = store.jobs_starting(prefix, caller.user) if prefix else []
            if len(found) > 1:
                shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{'more than 5' if len(found) > 5 else len(found)} jobs start with "
                    f"{request.job_id!r} ({shown}); give more of the id",
                )
            row = store.get_job(found[0]) if found else None
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(request.job_id))
        assert row is not None
        return row.info(self.controller.store.count_events(row.id))

    async def ListGPUs(
        self, request: pb.ListGPUsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGPUsReply:
        return self.controller.gpu_listing()

    async def RunnerSession(
        self, request_iterator: AsyncIterator[pb.RunnerMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunnerInstruction]:
        try:
            async for instruction in self.controller.runner_session(
                request_iterator, auth.caller()
            ):
                yield instruction
        except PermissionError as err:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))

    async def _own(self, context: grpc.aio.ServicerContext, job_id: str) -> None:
        """Ends the call with NOT_FOUND unless the caller owns the job: another user's
        job is answered as no job at all."""
        active = self.controller.jobs.get(job_id)
        if active is not None:
            owner: str | None = active.owner
        else:
            row = self.controller.store.get_job(job_id)
            owner = row.owner if row is not None else None
        if owner is not None and not auth.owns(auth.caller(), owner):
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found(job_id))
