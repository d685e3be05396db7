"""The runner's launch contract: everything a runner is told when it starts, and how.

A runner is the process ``python -m remotecell.backend.runner ARGS`` with some entries
in its environment. Every executor (a local process, a forked one, a container, a Ray
actor) describes the runner it starts as a ``RunnerArgs`` and turns it into that command
line and environment with ``build``; the runner reads them back with ``parse``. Nothing
else writes or reads them, so this module is the whole contract, and it depends on
nothing an executor has.

What travels where:

* the command line: the runner's id, the control plane's address, the image and session
  it serves, the cores, memory and GPUs it was started with (``--gpu H100:2``, and their
  UUIDs), and how long it waits for a control plane that went away;
* the environment: its credential (``REMOTECELL_RUNNER_TOKEN``: never on a command line,
  which any local user can read) and its volumes (``REMOTECELL_VOLUMES``, a JSON list of
  ``RunnerMount``), and for a control plane served over TLS the SHA-256 of its
  certificate (``REMOTECELL_RUNNER_TLS_FINGERPRINT``), which the runner pins. The runner
  removes them from its environment as it reads them, so that the cells it runs do not
  inherit them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from remotecell.backend.volumes.mounts import RunnerMount
from remotecell.contract.resources import GPUChoice
from remotecell.contract.volumes import Mount

#: What ``python -m`` runs: the runner's entry point.
RUNNER_MODULE = "remotecell.backend.runner"
TOKEN_ENV = "REMOTECELL_RUNNER_TOKEN"
VOLUMES_ENV = "REMOTECELL_VOLUMES"
TLS_FINGERPRINT_ENV = "REMOTECELL_RUNNER_TLS_FINGERPRINT"
#: How long a runner with no control plane and no task waits before it exits (seconds).
ORPHAN_TIMEOUT = 120.0


class LaunchError(ValueError):
    """The runner was started without something it needs; the message says what."""


@dataclass(frozen=True)
class RunnerArgs:
    """What a runner is told when it starts."""

    runner_id: str
    #: The control plane's address, as the runner reaches it.
    control_url: str
    token: str = field(repr=False)
    image: str = ""
    session: str = ""
    #: What it was started with: cores and MiB of memory (0: no limit), its GPUs' type
    #: and count (None: no GPU) and their UUIDs. It reports them back, so that the
    #: control plane knows which pool it serves.
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: GPUChoice | None = None
    gpu_uuids: tuple[str, ...] = ()
    #: Its volumes: those it mounts itself (``source`` set) and those already mounted.
    mounts: tuple[RunnerMount, ...] = ()
    orphan_timeout: float = ORPHAN_TIMEOUT
    #: SHA-256 of the certificate an https:// ``control_url`` presents ("": none).
    tls_fingerprint: str = ""


def build(args: RunnerArgs) -> tuple[list[str], dict[str, str]]:
    """The runner's arguments (those after ``python -m remotecell.backend.runner``) and
    the entries to add to its environment."""
    argv = ["--runner-id", args.runner_id, "--url", args.control_url]
    if args.image:
        argv += ["--image", args.image]
    if args.session:
        argv += ["--session", args.session]
    if args.cpu:
        argv += ["--cpu", repr(float(args.cpu))]
    if args.memory_mb:
        argv += ["--memory-mb", str(args.memory_mb)]
    if args.gpu:
        argv += ["--gpu", str(args.gpu)]
    if args.gpu_uuids:
        argv += ["--gpu-uuids", ",".join(args.gpu_uuids)]
    if args.orphan_timeout != ORPHAN_TIMEOUT:
        argv += ["--orphan-timeout", repr(float(args.orphan_timeout))]
    env = {TOKEN_ENV: args.token}
    if args.mounts:
        env[VOLUMES_ENV] = json.dumps([asdict(m) for m in args.mounts])
    if args.tls_fingerprint:
        env[TLS_FINGERPRINT_ENV] = args.tls_fingerprint
    return argv, env


def command(python: str, argv: Sequence[str]) -> list[str]:
    """The runner's whole command line, run by ``python``."""
    return [python, "-m", RUNNER_MODULE, *argv]


def arguments(command_line: Sequence[str]) -> list[str]:
    """The runner's arguments in a command line that ``command`` made."""
    if list(command_line[1:3]) != ["-m", RUNNER_MODULE]:
        raise LaunchError(f"not a runner's command line: {' '.join(command_line)}")
    return list(command_line[3:])


def parse(
    argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None
) -> RunnerArgs:
    """What ``build`` wrote: the arguments (default: ``sys.argv[1:]``) and the
    environment (default: ``os.environ``), whose entries it removes.

    Raises:
        LaunchError: the environment lacks the token, or its volumes are garbled.
        SystemExit: the arguments are wrong (argparse says how, and exits with 2).
    """
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog=f"python -m {RUNNER_MODULE}")
    parser.add_argument("--runner-id", required=True)
    parser.add_argument("--url", required=True, help="the control plane's address")
    parser.add_argument("--image", default="")
    parser.add_argument("--session", default="")
    parser.add_argument("--cpu", type=float, default=0.0, help="cores this runner was started with")
    parser.add_argument("--memory-mb", type=int, default=0, help="MiB this runner was started with")
    parser.add_argument("--gpu", type=_gpu, default=None, help='the GPUs it holds, e.g. "H100:2"')
    parser.add_argument("--gpu-uuids", default="", help="their UUIDs, comma-separated")
    parser.add_argument("--orphan-timeout", type=float, default=ORPHAN_TIMEOUT)
    parsed = parser.parse_args(argv)
    token = environ.pop(TOKEN_ENV, "")
    volumes = environ.pop(VOLUMES_ENV, "")
    tls_fingerprint = environ.pop(TLS_FINGERPRINT_ENV, "")
    if not token:
        raise LaunchError(f"the runner needs its token in {TOKEN_ENV}")
    try:
        mounts = tuple(_mount(item) for item in json.loads(volumes)) if volumes else ()
    except (ValueError, TypeError, KeyError) as err:
        raise LaunchError(f"{VOLUMES_ENV} is not a list of volumes: {err}") from None
    return RunnerArgs(
        runner_id=parsed.runner_id,
        control_url=parsed.url,
        token=token,
        image=parsed.image,
        session=parsed.session,
        cpu=parsed.cpu,
        memory_mb=parsed.memory_mb,
        gpu=parsed.gpu,
        gpu_uuids=tuple(u for u in parsed.gpu_uuids.split(",") if u),
        mounts=mounts,
        orphan_timeout=parsed.orphan_timeout,
        tls_fingerprint=tls_fingerprint,
    )


def _gpu(text: str) -> GPUChoice:
    """``--gpu``, as ``build`` wrote it (``str(GPUChoice)``): ``"H100"`` or ``"H100:2"``."""
    gpu_type, _, count = text.partition(":")
    return GPUChoice(gpu_type, int(count or 1))  # argparse reports a ValueError as usage


def _mount(item: dict[str, Any]) -> RunnerMount:
    """A ``RunnerMount`` as ``build`` wrote it (``asdict``)."""
    return RunnerMount(**{**item, "mount": Mount(**item["mount"])})
