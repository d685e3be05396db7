"""`remotecell jobs`, `logs`, `cancel` and `gpus`: the control plane's jobs and GPUs.

None of them starts the embedded control plane: with none running they say so. `logs`
and `cancel` take a job id or a unique prefix of one (``job-`` may be left out).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from remotecell.cli._control_plane import connected, token_option, url_option

if TYPE_CHECKING:
    from remotecell._proto import pb
    from remotecell.client import Client


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@url_option
@token_option
def jobs(limit: int, url: str, token: str) -> None:
    """List recent jobs."""
    from remotecell.client.listing import format_jobs

    with connected(url, token, start=False) as client:
        click.echo(format_jobs(client.list_jobs(limit)))


@click.command()
@url_option
@token_option
def gpus(url: str, token: str) -> None:
    """List the control plane's GPUs and the jobs holding them."""
    from remotecell.client.listing import format_gpus

    with connected(url, token, start=False) as client:
        click.echo(format_gpus(client.list_gpus()))


@click.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep following until the job ends.")
@url_option
@token_option
def logs(job_id: str, follow: bool, url: str, token: str) -> None:
    """Print a job's output (stdout, stderr, errors)."""
    import json

    from remotecell._proto import pb

    with connected(url, token, start=False) as client:
        info = _find_job(client, job_id)
        job_id = info.job_id
        if not follow and info.state in (pb.QUEUED, pb.RUNNING):
            events: Any = _stored_events(client, job_id, info.events)
        else:
            events = client.attach(job_id)
        for event in events:
            kind = event.WhichOneof("body")
            if kind == "stream":
                stream = sys.stdout if event.stream.name == pb.Stream.STDOUT else sys.stderr
                stream.write(event.stream.text)
                stream.flush()
            elif kind == "display":
                data = json.loads(event.display.data_json or "{}")
                if "text/plain" in data:
                    click.echo(data["text/plain"])
            elif kind == "error":
                click.echo(
                    "\n".join(event.error.traceback)
                    or f"{event.error.type_name}: {event.error.message}",
                    err=True,
                )
            elif kind == "status" and event.status.message:
                click.echo(f"[{event.status.message}]", err=True)
            elif kind == "finished":
                click.echo(
                    f"[{job_id} {pb.JobState.Name(event.finished.state).lower()}"
                    + (f": {event.finished.message}]" if event.finished.message else "]"),
                    err=True,
                )


def _find_job(client: Client, job_id: str) -> pb.JobInfo:
    """The one job whose id is ``job_id`` or starts with it (with or without ``job-``):
    the control plane resolves a prefix among the caller's jobs, and answers none or
    several with a sentence."""
    return client.get_job(job_id)


def _stored_events(client: Client, job_id: str, count: int) -> Iterator[pb.JobEvent]:
    """The events stored so far, without waiting for new ones."""
    stream = client.attach(job_id)
    try:
        for _ in range(count):
            event = stream.next(timeout=10)
            if event is None:
                return
            yield event
    finally:
        stream.close()


@click.command()
@click.argument("job_id")
@url_option
@token_option
def cancel(job_id: str, url: str, token: str) -> None:
    """Cancel a job (a queued or running one)."""
    from remotecell._proto import pb
    from remotecell.client.listing import state_name

    with connected(url, token, start=False) as client:
        info = _find_job(client, job_id)
        job_id = info.job_id
        if info.state not in (pb.QUEUED, pb.RUNNING):
            click.echo(
                f"{job_id} had already finished ({state_name(info.state)}); nothing to cancel"
            )
            return
        reply = client.cancel(job_id, "cancelled with `remotecell cancel`")
        click.echo(f"{job_id}: {state_name(reply.state)}")
