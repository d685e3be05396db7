"""Input requests of running cells: which job waits for an answer, and the answers on
their way to the runners.

A cell's ``input()`` or ``getpass()`` becomes an ``input_request`` event (stored, with
its prompt, like any other); the notebook answers with ``AnswerInput``. Waiting for
input is not a state of the job's life (it stays RUNNING), so the lifecycle knows
nothing of it: the job's record (``ActiveJob.input_seq``) remembers the one request it
waits on, and an answer that fits it is carried to the job's runner. An answer's text
is never stored: it may be a password.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from remotecell._proto import pb
from remotecell.backend.jobs.active import ActiveJob

#: The longest answer the control plane takes (characters), and the longest refusal.
MAX_ANSWER = 1 << 16
MAX_REFUSAL = 1 << 10


class AnswerRefused(Exception):
    """An answer that cannot be taken; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def observe(job: ActiveJob, event: pb.JobEvent) -> None:
    """Notes the job's input request (before followers see it: they may answer at once)."""
    if event.HasField("input_request"):
        job.input_seq = event.seq


def live(jobs: Mapping[str, ActiveJob], batch: list[pb.JobEvent]) -> list[pb.JobEvent]:
    """``batch`` with each input request that no longer waits marked answered, so a replay
    asks nothing again."""
    if not any(e.HasField("input_request") for e in batch):
        return batch
    out = []
    for event in batch:
        job = jobs.get(event.job_id)
        if event.HasField("input_request") and (job is None or job.input_seq != event.seq):
            event = _copy(event)
            event.input_request.answered = True
        out.append(event)
    return out


def answer(
    job: ActiveJob | None,
    answer: pb.InputAnswer,
    send: Callable[[str, pb.RunnerInstruction], bool],
) -> None:
    """Hands ``answer`` to the job's runner with ``send`` (False: not connected); raises
    AnswerRefused, with a sentence saying why, for one that fits no waiting request."""
    if len(answer.text) > MAX_ANSWER:
        raise AnswerRefused(
            "INVALID_ARGUMENT",
            f"an answer to input() holds at most {MAX_ANSWER} characters, this one has "
            f"{len(answer.text)}; send more through a volume or a file instead",
        )
    if len(answer.refused) > MAX_REFUSAL:
        raise AnswerRefused(
            "INVALID_ARGUMENT",
            f"a refusal to answer input() holds at most {MAX_REFUSAL} characters, this one "
            f"has {len(answer.refused)}",
        )
    if job is None:
        raise AnswerRefused(
            "FAILED_PRECONDITION", f"job {answer.job_id} has ended; it waits for no input"
        )
    if job.input_seq != answer.seq or job.state != pb.RUNNING:
        waits = (
            f"it waits for the answer to event {job.input_seq}"
            if job.input_seq is not None
            else "it is not waiting for input now (answered already, or the cell moved on)"
        )
        raise AnswerRefused(
            "FAILED_PRECONDITION",
            f"job {answer.job_id} waits for no answer to event {answer.seq}: {waits}",
        )
    if not send(job.runner_id, pb.RunnerInstruction(answer=answer)):
        raise AnswerRefused(
            "FAILED_PRECONDITION",
            f"job {answer.job_id}'s runner is not connected now; answer again once it is back",
        )
    job.input_seq = None


def _copy(event: pb.JobEvent) -> pb.JobEvent:
    copied = pb.JobEvent()
    copied.CopyFrom(event)
    return copied
