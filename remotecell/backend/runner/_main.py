"""The runner's entry point: connect, then run tasks until told to stop."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
import threading

from remotecell._proto import pb
from remotecell.backend.executors.local import TOKEN_ENV
from remotecell.backend.runner._fdcapture import FdCapture
from remotecell.backend.runner._link import Link
from remotecell.backend.runner._sampler import Sampler
from remotecell.backend.runner._volumes import RunnerVolumes
from remotecell.client._blocking import Client
from remotecell.client.config import Endpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotecell.backend.runner")
    parser.add_argument("--runner-id", required=True)
    parser.add_argument("--url", required=True, help="the control plane's address")
    parser.add_argument("--image", default="")
    parser.add_argument("--session", default="")
    parser.add_argument("--cpu", type=float, default=0.0, help="cores this runner was started with")
    parser.add_argument("--memory-mb", type=int, default=0, help="MiB this runner was started with")
    parser.add_argument("--gpu", default="", help='the GPUs it holds, e.g. "H100:2"')
    parser.add_argument("--gpu-uuids", default="", help="their UUIDs, comma-separated")
    parser.add_argument("--orphan-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    volumes = RunnerVolumes.from_environment()
    try:
        volumes.mount()  # first: a user namespace can only be made by a single thread
    except OSError as err:
        print(err, file=sys.stderr)
        return 3
    # From here on fds 1 and 2 are pipes whose output belongs to the running cell; the
    # runner's own logging goes to their original target (its log) instead.
    capture = FdCapture()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.runner_id} %(levelname)s %(message)s",
        stream=capture.log_stream(),
    )
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"the runner needs its token in {TOKEN_ENV}", file=sys.stderr)
        return 2
    endpoint = Endpoint(args.url, token)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until a cell runs (see CellShell)

    hello = pb.RunnerHello(
        runner_id=args.runner_id,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        image=args.image,
        session=args.session,
        resources=pb.Resources(cpu=args.cpu, memory_mb=args.memory_mb, gpu=_gpu(args.gpu)),
        gpu_uuids=[u for u in args.gpu_uuids.split(",") if u],
        volumes=volumes.hello(),
    )
    shell_box: list = []
    early: list[pb.CancelTask] = []  # cancels that came while the shell was being built
    lock = threading.Lock()

    def on_cancel(cancel: pb.CancelTask) -> None:
        with lock:
            if not shell_box:
                early.append(cancel)
                return
        shell_box[0].interrupt(cancel)

    # Connect first, then import IPython while the hello travels: both take a while.
    link = Link(endpoint, hello, on_cancel, orphan_timeout=args.orphan_timeout)
    from remotecell.backend.runner._shell import CellShell

    shell = CellShell(capture)
    with lock:
        shell_box.append(shell)
    for cancel in early:
        shell.interrupt(cancel)
    blobs = Client(endpoint)
    volumes.connect(blobs)
    sampler = Sampler(hello.gpu_uuids)
    signal.signal(signal.SIGTERM, lambda *_: link.instructions.put(None))
    try:
        while True:
            try:
                ins = link.instructions.get()
            except KeyboardInterrupt:
                continue
            if ins is None or ins.HasField("shutdown"):
                break
            if ins.HasField("task"):
                link.begin(ins.task)
                try:
                    # Masked outside the volumes' sync too: its notes name the cell's files.
                    emit = shell.masked(ins.task, sampler.watch(link.emit))
                    run = functools.partial(
                        shell.run_task,
                        ins.task,
                        fetch=blobs.fetch,
                        upload=blobs.upload,
                        masked=True,
                    )
                    volumes.run_task(emit, run)
                except KeyboardInterrupt:  # a late interrupt, after the cell ended
                    pass
                finally:
                    sampler.stop()
                link.end()
    finally:
        sampler.close()
        link.close()
        blobs.close()
    return 0


def _gpu(held: str) -> list[pb.GPUChoice]:
    if not held:
        return []
    gpu_type, _, count = held.partition(":")
    return [pb.GPUChoice(type=gpu_type, count=int(count or 1))]
