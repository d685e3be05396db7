"""The runner template: a process that has imported what a runner needs, and forks runners.

A fresh runner spends most of its start importing IPython and grpc. The local executor
starts this template once (``python -m remotecell.backend.executors._forkserver --fd N``);
it imports those modules, creates no gRPC channel and no thread, and then forks a runner
for each request on its control socket. The child becomes exactly what a spawned runner
is: its own session, stdin from /dev/null, stdout/stderr in its log file, the launch's
environment (with the token) and working directory, the runner's command line in
``/proc/PID/cmdline``, and then ``remotecell.backend.runner._main.main``.

The template is the runners' parent, so it reaps them and reports each exit status.

The control socket carries one JSON object per line. Requests:
``{"id", "argv", "env", "cwd", "log"}`` (``argv`` is the runner's full command line).
Replies: ``{"hello": {"room": N}}`` once ready (N: bytes available for a runner's command
line), ``{"id", "pid"}`` or ``{"id", "error"}`` per request, and ``{"exit": PID, "code": C}``
when a runner ends (C as ``Popen.returncode``: negative for a signal). End of file on the
socket (the control plane went away) ends the template; its runners live on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: What a runner imports before it can run a cell (the rest is cheap).
PRELOAD = (
    "grpc",
    "grpc.aio",
    "remotecell.backend.runner._main",
    "remotecell.backend.runner._shell",
    "IPython",
    "IPython.core.interactiveshell",
    "IPython.core.displayhook",
    "IPython.core.displaypub",
    "IPython.core.completerlib",
    "traitlets.config",
)

MODULE = "remotecell.backend.executors._forkserver"

#: Bytes of spare command line the template is started with, so that a forked runner can
#: write its own (longer) command line over it.
ROOM = 1024
ROOM_FLAG = "--room"


# ---------------------------------------------------------------- in the control plane


class TemplateUnavailable(Exception):
    """The template cannot fork this runner; start it some other way."""


class ForkServer:
    """A runner template process, from the control plane's event loop.

    The process starts at once (it imports for a while; requests wait for it); the
    control socket is attached to the event loop on first use.
    """

    #: How long the template may take to import before it counts as broken.
    READY_TIMEOUT = 30.0
    #: How long one fork may take.
    FORK_TIMEOUT = 10.0

    def __init__(self, python: str, log_path: Path, env: dict[str, str]) -> None:
        mine, theirs = socket.socketpair()
        self.python = python
        self.env = env
        self.started = time.monotonic()
        try:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [python, "-m", MODULE, "--fd", str(theirs.fileno()), ROOM_FLAG, " " * ROOM],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock: socket.socket | None = mine
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[int] | None = None
        self._replies: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._next_id = 0
        #: Why the template cannot be used ("" while it can).
        self.broken = ""
        #: True when it can never work here (no point starting another).
        self.unsupported = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _attach(self) -> None:
        if self._reader_task is not None or self._sock is None:
            return
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        self._sock = None
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "the runner template exited"
        try:
            while line := await reader.readline():
                self._handle(json.loads(line))
        except (OSError, ValueError) as err:
            why = f"the runner template's connection failed: {err}"
        self._fail(why)
        await self._reaped(5.0)  # no zombie left behind

    def _handle(self, message: dict[str, Any]) -> None:
        assert self._hello is not None
        if "exit" in message:
            future = self._exits.get(message["exit"])
            if future is not None and not future.done():
                future.set_result(message["code"])
        elif "id" in message:
            reply = self._replies.pop(message["id"], None)
            if "pid" in message:
                # Registered here, in order, so that an exit right after is not missed.
                self._exits[message["pid"]] = asyncio.get_running_loop().create_future()
                if reply is not None and not reply.done():
                    reply.set_result(message["pid"])
            elif reply is not None and not reply.done():
                reply.set_exception(TemplateUnavailable(message.get("error", "fork failed")))
        elif "hello" in message:
            if not self._hello.done():
                self._hello.set_result(int(message["hello"]["room"]))
        elif "unavailable" in message:
            self.unsupported = True
            self._fail(f"the runner template cannot fork here: {message['unavailable']}")

    def _fail(self, why: str) -> None:
        if not self.broken:
            self.broken = why
        waiting = [*self._replies.values(), *([self._hello] if self._hello else [])]
        for reply in waiting:
            if not reply.done():
                reply.set_exception(TemplateUnavailable(self.broken))
        self._replies.clear()
        # Runners outlive their template; their exit status is not known any more.
        for ended in self._exits.values():
            if not ended.done():
                ended.set_result(None)

    async def fork(self, argv: list[str], env: dict[str, str], cwd: str, log: str) -> int:
        """Forks a runner with this command line; returns its pid once it is in its own
        session.

        Raises:
            TemplateUnavailable: the template is broken or cannot fork this runner.
        """
        await self._attach()
        if self.broken:
            raise TemplateUnavailable(self.broken)
        assert self._hello is not None and self._writer is not None
        try:
            room = await asyncio.wait_for(asyncio.shield(self._hello), self.READY_TIMEOUT)
        except TimeoutError:
            await self._give_up(f"the runner template did not start in {self.READY_TIMEOUT:g} s")
            raise TemplateUnavailable(self.broken) from None
        if self.broken:  # it said hello, then went away
            raise TemplateUnavailable(self.broken)
        if len(b"".join(os.fsencode(a) + b"\0" for a in argv)) > room:
            raise TemplateUnavailable("the runner's command line is longer than the template's")
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        message = {"id": request_id, "argv": argv, "env": env, "cwd": cwd, "log": log}
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            return await asyncio.wait_for(asyncio.shield(reply), self.FORK_TIMEOUT)
        except OSError as err:
            self._fail(f"the runner template's connection failed: {err}")
            raise TemplateUnavailable(self.broken) from None
        except TimeoutError:
            await self._give_up(f"the runner template did not fork in {self.FORK_TIMEOUT:g} s")
            raise TemplateUnavailable(self.broken) from None
        finally:
            self._replies.pop(request_id, None)

    async def wait(self, pid: int) -> int | None:
        """The runner's exit code (negative: a signal), or None when it is not known."""
        future = self._exits.get(pid)
        if future is None:
            return None
        code = await asyncio.shield(future)
        self._exits.pop(pid, None)
        return code

    async def _give_up(self, why: str) -> None:
        self._fail(why)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self._reaped(5.0)

    async def _reaped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def discard(self) -> None:
        """Stops a template that never forked (no event loop needed)."""
        self.broken = "the runner template was stopped"
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    async def close(self) -> None:
        """Stops the template (its runners are the caller's to stop)."""
        self._fail("the runner template was stopped")
        if self._writer is not None:
            self._writer.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if not await self._reaped(2.0):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self._reaped(5.0)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


# ---------------------------------------------------------------- started early

#: ``0`` turns forking runners off (``LocalExecutor(fork=None)`` reads it).
FORK_ENV = "REMOTECELL_LOCAL_FORK"

_early: ForkServer | None = None


def fork_available() -> bool:
    """Whether runners can be forked here: Linux (the template rewrites the runner's
    command line in /proc, which tools and the executor itself use to recognise runners)."""
    return hasattr(os, "fork") and sys.platform == "linux"


def base_env() -> dict[str, str]:
    """The control plane's environment without its own client settings: the runners'."""
    env = dict(os.environ)
    env.pop("REMOTECELL_URL", None)
    env.pop("REMOTECELL_TOKEN", None)
    return env


def python_env(env: dict[str, str]) -> dict[str, str]:
    # Read once, when an interpreter starts: a forked runner has its template's.
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def start_early(log_dir: Path) -> None:
    """Starts the runner template as ``remotecell serve`` starts, before the control plane
    has imported itself: the two imports overlap, so the first runner (``--prewarm``, the
    embedded default's) forks from a template that is ready ~0.25 s sooner. The local
    executor takes it (``take_early``); ``discard_early`` stops one nobody took."""
    global _early
    if _early is not None or os.environ.get(FORK_ENV, "1") == "0" or not fork_available():
        return
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        _early = ForkServer(sys.executable, log_dir / "_template.log", base_env())
    except OSError:
        _early = None


def take_early(python: str, env: dict[str, str]) -> ForkServer | None:
    """The template ``start_early`` started, where it suits ``python`` and ``env`` (one
    that does not is stopped); None when there is none."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if early.python == python and python_env(early.env) == python_env(env):
        return early
    early.discard()
    return None


def discard_early() -> None:
    global _early
    early, _early = _early, None
    if early is not None:
        early.discard()


# ---------------------------------------------------------------- in the template


class _CommandLine:
    """The process's argv memory (what ``/proc/PID/cmdline`` shows), rewritable in place."""

    def __init__(self) -> None:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # Fields 48 and 49 of /proc/PID/stat (Linux >= 3.5); the list starts at field 3.
        self.start, self.end = int(fields[45]), int(fields[46])
        with open("/proc/self/cmdline", "rb") as f:
            shown = f.read()
        if ctypes.string_at(self.start, self.end - self.start) != shown:
            raise OSError("the command line is not where /proc/self/stat says")

    @property
    def room(self) -> int:
        return self.end - self.start

    def write(self, argv: list[str]) -> None:
        if any(not arg or " " in arg for arg in argv):
            # Arguments NUL-separated, the rest zeroed: /proc shows them, then empty ones.
            data = b"".join(os.fsencode(arg) + b"\0" for arg in argv)
            fill = b"\0"
        else:
            # As setproctitle does: one NUL-terminated string and a non-zero last byte, so
            # /proc shows exactly the string, and ps and psutil split it at spaces.
            data = os.fsencode(" ".join(argv)) + b"\0"
            fill = b" "
        if len(data) > self.room:
            raise ValueError("the command line does not fit")
        ctypes.memmove(self.start, data + fill * (self.room - len(data)), self.room)


class Template:
    """The template's loop: fork on request, reap and report exits."""

    def __init__(self, sock: socket.socket, cmdline: _CommandLine) -> None:
        self.sock = sock
        self.cmdline = cmdline
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def serve(self) -> dict[str, Any] | None:
        """Serves requests until the control socket closes. Returns a request only in a
        forked child, which then becomes that runner."""
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector (wakeup fd)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.send({"hello": {"room": self.cmdline.room}})
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self.reap()
                    continue
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buffer += data
                while b"\n" in self.buffer:
                    line, _, self.buffer = self.buffer.partition(b"\n")
                    request = json.loads(line)
                    if self.fork(request):
                        return request

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def fork(self, request: dict[str, Any]) -> bool:
        """Forks a runner for ``request``; True in the child."""
        # A forked runner must not carry the template's unflushed output into its log.
        sys.stdout.flush()
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                self.become_runner(request)
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.write(ready_w, f"{type(err).__name__}: {err}".encode())
                os._exit(127)
            os.close(ready_w)
            return True
        os.close(ready_w)
        # Reply only once the child has its own session, so that killpg(pid) reaches it.
        failure = b""
        while chunk := os.read(ready_r, 4096):
            failure += chunk
        os.close(ready_r)
        if failure:
            self.send({"id": request["id"], "error": failure.decode(errors="replace")})
        else:
            self.send({"id": request["id"], "pid": pid})
        return False

    def become_runner(self, request: dict[str, Any]) -> None:
        """In the child: everything a spawned runner would have, before its ``main``."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv: list[str] = request["argv"]
        self.cmdline.write(argv)
        sys.orig_argv = list(argv)
        from remotecell.backend.runner import launch  # loaded already (PRELOAD)

        sys.argv = [os.path.join(os.path.dirname(launch.__file__), "__main__.py")]
        sys.argv += launch.arguments(argv)


def _preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    # What is imported now is shared by every runner: keep the collector off it, so that
    # it neither scans it in each runner nor copies the pages it would touch.
    gc.freeze()
    # Forking is only safe while this process has one thread (importing grpc starts none;
    # creating a channel would).
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("the runner template has threads after its imports; not forking")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remotecell.backend.executors._forkserver")
    parser.add_argument("--fd", type=int, required=True, help="the control socket")
    parser.add_argument(ROOM_FLAG, default="", help="spare command-line space (ignored)")
    args = parser.parse_args(argv)
    # Ctrl-C in the control plane's terminal is the control plane's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(True)
    try:
        cmdline = _CommandLine()
        _preload()
    except Exception as err:
        print(f"runner template unavailable: {err}", file=sys.stderr)
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"unavailable": str(err)}).encode() + b"\n")
        return 1
    cmdline.write(sys.orig_argv[: sys.orig_argv.index(ROOM_FLAG)])
    request = Template(sock, cmdline).serve()
    if request is None:
        return 0
    # This is now a runner (a forked child of the template).
    from remotecell.backend.runner._main import main as runner_main

    return runner_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
