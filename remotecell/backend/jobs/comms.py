"""Messages from the notebook's front end to widgets that jobs' cells made, on their way
to the runners, and the runners' replies on their way back.

A widget's own messages (its ``comm_open``, its updates) are events of its job, stored
like any other, so ``%remote_attach`` shows the widget again. What the front end sends
(``SendComm``) is never stored: it goes to the runner that ran the job while the job runs,
and after the job's end to its session's runner, which stays for it; the widget of a job
without a session is static once its runner has gone on. The runner handles the message
between cells and answers with what the widget sent and printed (``CommReply``), which
``SendComm`` returns.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

from remotecell._proto import pb
from remotecell.contract import comms as rules

if TYPE_CHECKING:
    from remotecell.backend.controller import Controller

#: How long ``SendComm`` waits for the runner's reply (it handles the message between
#: cells): after this the message is still handled, but what the widget does is not shown.
REPLY_WAIT = 15.0
MAX_COMM_ID = 256


class CommRefused(Exception):
    """A message that cannot be taken; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CommRelay:
    """The front end's messages waiting for their runners' replies."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[pb.CommReply]] = {}

    def reply(self, runner_id: str, reply: pb.CommReply) -> None:
        waiter = self._waiting.pop(reply.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    async def send(self, request: pb.CommToRunner) -> pb.SendCommReply:
        """Hands ``request`` to its job's runner and returns the runner's reply; raises
        CommRefused, with a sentence saying why, for one that cannot go."""
        _check(request)
        # Replies come only after a message went out: the relay hooks itself in then,
        # so making it (as the jobs servicer does at start) touches nothing.
        self.controller.sessions.on_comm_reply = self.reply
        runner_id = self._runner(request.job_id)
        forward = pb.CommToRunner()
        forward.CopyFrom(request)
        forward.request_id = next(self._ids)
        waiter: asyncio.Future[pb.CommReply] = asyncio.get_running_loop().create_future()
        self._waiting[forward.request_id] = waiter
        try:
            if not self.controller.sessions.send(runner_id, pb.RunnerInstruction(comm=forward)):
                raise CommRefused(
                    "FAILED_PRECONDITION",
                    f"job {request.job_id}'s runner is not connected now; its widgets are "
                    "static until it is back",
                )
            try:
                reply = await asyncio.wait_for(waiter, REPLY_WAIT)
            except asyncio.TimeoutError:
                return pb.SendCommReply()  # busy with a cell: it handles the message after
        finally:
            self._waiting.pop(forward.request_id, None)
        if reply.refused:
            raise CommRefused("FAILED_PRECONDITION", reply.refused)
        return pb.SendCommReply(events=reply.events)

    def _runner(self, job_id: str) -> str:
        """The runner that holds ``job_id``'s widgets."""
        job = self.controller.jobs.get(job_id)
        if job is not None:
            if job.state != pb.RUNNING or not job.runner_id:
                raise CommRefused(
                    "FAILED_PRECONDITION",
                    f"job {job_id} is not running now; its widgets take messages while it "
                    "runs, or after it ends on its session's runner",
                )
            return job.runner_id
        row = self.controller.store.get_job(job_id)
        if row is None:
            raise CommRefused("NOT_FOUND", f"no job {job_id!r} on this control plane")
        if not row.session:
            raise CommRefused(
                "FAILED_PRECONDITION",
                f"job {job_id} has ended and its runner has gone on, so its widgets are "
                "static now; run the cell with session=... to keep their callbacks",
            )
        if not row.runner_id or not self.controller.sessions.connected(row.runner_id):
            raise CommRefused(
                "FAILED_PRECONDITION",
                f"the runner of session {row.session!r} that ran job {job_id} has stopped, "
                "so its widgets are static now",
            )
        return row.runner_id


def _check(request: pb.CommToRunner) -> None:
    message = request.message
    if not message.comm_id or len(message.comm_id) > MAX_COMM_ID:
        raise CommRefused(
            "INVALID_ARGUMENT", f"a comm message needs a comm_id of 1 to {MAX_COMM_ID} characters"
        )
    if message.kind not in pb.CommMessage.Kind.values():
        raise CommRefused(
            "INVALID_ARGUMENT",
            f"a comm message of unknown kind {message.kind}; send a MSG or a CLOSE",
        )
    if message.kind == pb.CommMessage.OPEN:
        raise CommRefused(
            "INVALID_ARGUMENT",
            "the notebook cannot open a comm on a runner; only a remote cell's comms take messages",
        )
    if refusal := rules.over_limit(message):
        raise CommRefused("INVALID_ARGUMENT", refusal)
