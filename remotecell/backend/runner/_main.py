"""The runner's entry point: connect, then run tasks until told to stop."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

from remotecell._proto import pb
from remotecell.backend.runner import launch
from remotecell.backend.runner._comms import RemoteComms, idle_output
from remotecell.backend.runner._fdcapture import FdCapture
from remotecell.backend.runner._link import Link
from remotecell.backend.runner._sampler import Sampler
from remotecell.backend.runner._serve import Replica
from remotecell.backend.runner._stdin import RemoteStdin
from remotecell.backend.runner._volumes import RunnerVolumes
from remotecell.backend.runner._workdir import RunnerWorkdir
from remotecell.client import Client
from remotecell.client.config import Endpoint

if TYPE_CHECKING:
    from remotecell.backend.runner._shell import Emit


def main(argv: list[str] | None = None) -> int:
    """Runs the runner that ``argv`` (default: ``sys.argv[1:]``) and this process's
    environment describe (see ``launch``); returns its exit code."""
    try:
        args = launch.parse(argv, os.environ)
    except launch.LaunchError as err:
        print(err, file=sys.stderr)
        return 2
    volumes = RunnerVolumes(list(args.mounts))
    try:
        volumes.mount()  # first: a user namespace can only be made by a single thread
    except OSError as err:
        print(err, file=sys.stderr)
        return 3
    # From here on fds 1 and 2 are pipes whose output belongs to the running cell; the
    # runner's own logging goes to their original target (its log) instead, through the
    # `remotecell` logger: the root logger is the cells' to configure, as in a kernel.
    capture = FdCapture()
    handler = logging.StreamHandler(capture.log_stream())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {args.runner_id} %(levelname)s %(message)s")
    )
    own_log = logging.getLogger("remotecell")
    own_log.addHandler(handler)
    own_log.setLevel(logging.INFO)
    own_log.propagate = False
    endpoint = Endpoint(args.control_url, args.token, tls_fingerprint=args.tls_fingerprint)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until a cell runs (see CellShell)

    hello = pb.RunnerHello(
        runner_id=args.runner_id,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        image=args.image,
        session=args.session,
        resources=pb.Resources(
            cpu=args.cpu,
            memory_mb=args.memory_mb,
            gpu=[args.gpu.to_proto()] if args.gpu else [],
        ),
        gpu_uuids=args.gpu_uuids,
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
    stdin = RemoteStdin()
    link = Link(
        endpoint, hello, on_cancel, orphan_timeout=args.orphan_timeout, on_answer=stdin.answer
    )
    from remotecell.backend.runner._shell import CellShell, runner_failure

    shell = CellShell(capture)
    comms = RemoteComms()
    comms.install()
    with lock:
        shell_box.append(shell)
    for cancel in early:
        shell.interrupt(cancel)
    blobs = Client(endpoint)
    workdir = RunnerWorkdir(blobs.fetch)
    volumes.connect(blobs)
    sampler = Sampler(hello.gpu_uuids)
    signal.signal(signal.SIGTERM, lambda *_: link.instructions.put(None))

    def handle_comm(ins: pb.RunnerInstruction) -> None:
        if not ins.HasField("comm"):
            return
        try:
            reply = comms.handle(ins.comm, functools.partial(idle_output, shell))
        except Exception as err:  # the runner stays for its session's next cell
            logging.getLogger("remotecell").exception("a widget message failed")
            refused = f"the runner could not hand it to the widget: {type(err).__name__}"
            reply = pb.CommReply(request_id=ins.comm.request_id, refused=refused)
        link.reply(reply)

    try:
        while True:
            try:
                ins = link.instructions.get()
            except KeyboardInterrupt:
                continue
            if ins is None or ins.HasField("shutdown"):
                break
            if ins.HasField("comm"):  # a front end's message to a widget, between cells
                handle_comm(ins)
            # (a `cancel` here is a replica's stop that came as it ended: nothing to do)
            if ins.HasField("task"):
                link.begin(ins.task)
                emit: Emit = link.emit
                # Whatever the task holds fails the task, never the runner (see run_task).
                try:
                    # Masked outside the volumes' sync too: its notes name the cell's files.
                    emit = shell.masked(ins.task, link.emit)
                    # A deployment's replica: its cell is the setup, then it takes calls
                    # (on the link's thread, see _serve.py) until the job is cancelled.
                    replica = (
                        Replica(ins.task, link, blobs.fetch, blobs.upload, handle_comm)
                        if ins.task.spec.HasField("serve")
                        else None
                    )
                    run = functools.partial(
                        shell.run_task,
                        ins.task,
                        fetch=blobs.fetch,
                        upload=blobs.upload,
                        masked=True,
                        serve=replica,
                    )
                    sampler.watch(link.emit)
                    with (
                        stdin.serving(ins.task.job_id, emit, _flush_output),
                        comms.serving(ins.task.job_id, emit, keep=bool(ins.task.spec.session)),
                    ):
                        finished = volumes.run_task(emit, workdir.around(ins.task, run))
                except KeyboardInterrupt:  # a cancel's interrupt, late, as the cell ended
                    finished = pb.Finished(state=pb.CANCELLED, message="cancelled as it ended")
                except Exception as err:
                    finished = runner_failure(emit, err)
                finally:
                    sampler.stop()
                emit(finished)  # the task's last event: no reading or note comes after it
    finally:
        sampler.close()
        link.close()
        blobs.close()
        workdir.close()
    return 0


def _flush_output() -> None:
    # The cell's sys.stdout and sys.stderr while it runs: what it printed before a prompt.
    sys.stdout.flush()
    sys.stderr.flush()
