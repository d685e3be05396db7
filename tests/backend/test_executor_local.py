"""The local executor (runners forked from a template, or spawned) and the blocking client.

End to end through a real `remotecell serve` and its runners, plus the executor on its
own against a control-plane address nobody listens on (runners keep trying to connect
until they are killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import wait_until

from remotecell._proto import pb
from remotecell.backend.executors.base import RunnerLaunch
from remotecell.backend.executors.local import FORK_ENV, LocalExecutor
from remotecell.backend.images.builder import BuiltImage
from remotecell.client import Client
from remotecell.contract.values import content_hash

TEMPLATE = "remotecell.backend.executors._forkserver"


def read_until(stream: Any, predicate: Any, timeout: float = 60.0) -> list[pb.JobEvent]:
    events: list[pb.JobEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = stream.next(timeout=0.2)
        if event is None:
            continue
        events.append(event)
        if predicate(events):
            return events
    raise AssertionError(f"no such event within {timeout:g} s; got {events}")


def finished(events: list[pb.JobEvent]) -> bool:
    return events[-1].HasField("finished")


def stdout_of(events: list[pb.JobEvent]) -> str:
    return "".join(e.stream.text for e in events if e.HasField("stream"))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def templates_of(cp: Any) -> list[psutil.Process]:
    assert cp.proc is not None
    return [
        child
        for child in psutil.Process(cp.proc.pid).children()
        if TEMPLATE in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture(params=["forked", "spawned"])
def runners(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the control plane started by the test starts its runners."""
    monkeypatch.setenv(FORK_ENV, "1" if request.param == "forked" else "0")
    return str(request.param)


@pytest.fixture
def cp(runners: str, make_control_plane: Any) -> Any:
    return make_control_plane("--cancel-grace", "2", "--reconnect-grace", "5")


# ------------------------------------------------------------------ end to end


PROBE = """\
import os, sys
print(os.getpid(), os.getppid(), os.getsid(0), os.readlink("/proc/self/fd/0"),
      "REMOTECELL_RUNNER_TOKEN" in os.environ, sys.argv[1])
"""


def test_a_runner_is_the_same_process_forked_or_spawned(runners, cp):
    client = cp.client()
    try:
        events = read_until(client.submit(pb.JobSpec(code=PROBE)), finished)
    finally:
        client.close()
    assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
    pid, ppid, sid, stdin, token_in_env, first_arg = stdout_of(events).split()
    runner = psutil.Process(int(pid))
    assert int(sid) == runner.pid, "a runner leads its own session"
    assert stdin == "/dev/null"
    assert token_in_env == "False" and first_arg == "--runner-id"
    cmdline = runner.cmdline()
    assert cmdline[1:4] == ["-m", "remotecell.backend.runner", "--runner-id"]
    runner_id = cmdline[4]
    assert cp.endpoint is not None and cp.endpoint.token not in " ".join(cmdline)
    log = cp.data_dir / "logs" / "runners" / f"{runner_id}.log"
    # fds 1 and 2 are the runner's capture pipes (their output belongs to the cell); the
    # log file they pointed at when it started is still open, for the runner's own output.
    assert os.readlink(f"/proc/{pid}/fd/1").startswith("pipe:")
    assert os.readlink(f"/proc/{pid}/fd/2").startswith("pipe:")
    targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert str(log) in targets
    assert cp.proc is not None
    if runners == "forked":
        template = psutil.Process(int(ppid))
        assert TEMPLATE in template.cmdline() and template.ppid() == cp.proc.pid
        # The template writes nowhere near the control plane's own output.
        assert os.readlink(f"/proc/{ppid}/fd/1") == str(log.parent / "_template.log")
    else:
        assert int(ppid) == cp.proc.pid
        assert not templates_of(cp)


def test_a_runner_killed_by_sigkill_is_reported_as_such(runners, cp):
    client = cp.client()
    try:
        code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)"
        stream = client.submit(pb.JobSpec(code=code, retries=0))
        events = read_until(stream, lambda es: "\n" in stdout_of(es))
        os.kill(int(stdout_of(events).split()[0]), signal.SIGKILL)
        events = read_until(stream, finished)
    finally:
        client.close()
    end = events[-1].finished
    assert end.state == pb.FAILED
    assert "killed by SIGKILL" in end.message, end.message


def test_runners_are_spawned_when_the_template_died(monkeypatch, make_control_plane):
    monkeypatch.setenv(FORK_ENV, "1")
    cp = make_control_plane()
    (template,) = wait_until(lambda: templates_of(cp), 20, what="the runner template")
    template.kill()
    wait_until(lambda: not alive(template.pid), 10, what="the template to end")
    client = cp.client()
    try:
        events = read_until(client.submit(pb.JobSpec(code=PROBE)), finished)
    finally:
        client.close()
    assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
    assert cp.proc is not None
    assert int(stdout_of(events).split()[1]) == cp.proc.pid


# ------------------------------------------------------------------ the executor alone


def environ_of(pid: int) -> dict[str, str]:
    # A spawn returns while the kernel may still be setting up the new program's
    # environment block: /proc shows it empty for that moment.
    return wait_until(lambda: psutil.Process(pid).environ(), 10, what="the runner's environment")


def launch(log_dir: Path, runner_id: str, **kw: Any) -> RunnerLaunch:
    # Nobody listens there: the runner keeps retrying until it is killed.
    return RunnerLaunch(runner_id, f"unix:{log_dir}/nobody.sock", "t", **kw)


@pytest.fixture
def log_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="rc-ex-", dir="/tmp"))
    yield path
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "remotecell.backend.runner" in cmd and f"unix:{path}/nobody.sock" in cmd:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_kill_ends_a_runner_and_wait_reports_the_signal(log_dir: Path, fork: bool):
    async def scenario() -> None:
        executor = LocalExecutor(log_dir, fork=fork)
        try:
            handle = await executor.start(launch(log_dir, "r-kill"))
            parent = psutil.Process(handle.pid).ppid()
            assert (parent == os.getpid()) is not fork
            assert handle.log_path == log_dir / "r-kill.log"
            assert os.readlink(f"/proc/{handle.pid}/fd/0") == "/dev/null"
            # Its stdout and stderr start on its log; the runner then moves fds 1 and 2 to
            # its capture pipes and keeps the log for its own logging, which lands there.
            wait_until(
                lambda: "connection to the control plane lost" in handle.log_path.read_text(),
                20,
                what="the runner's logging in its log",
            )
            await executor.kill(handle)
            ended = await asyncio.wait_for(executor.wait(handle), 10)
            assert ended.returncode == -signal.SIGKILL
            assert "killed by SIGKILL" in ended.describe()
        finally:
            await executor.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_closing_the_executor_kills_its_runners(log_dir: Path, fork: bool):
    async def scenario() -> set[int]:
        executor = LocalExecutor(log_dir, fork=fork)
        handles = [await executor.start(launch(log_dir, f"r-{n}")) for n in range(2)]
        pids = {h.pid for h in handles} | {psutil.Process(h.pid).ppid() for h in handles}
        assert all(alive(pid) for pid in pids)
        await executor.close()
        return pids - {os.getpid()}

    pids = asyncio.run(scenario())
    assert len(pids) == (3 if fork else 2)  # with the template
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, what="runners to end")


def test_a_dead_template_is_replaced_and_runners_are_spawned_meanwhile(log_dir: Path):
    async def scenario() -> None:
        executor = LocalExecutor(log_dir, fork=True)
        executor.RESTART_AFTER = 0.0
        try:
            first = await executor.start(launch(log_dir, "r-first"))
            template = psutil.Process(psutil.Process(first.pid).ppid())
            template.kill()
            while alive(template.pid):
                await asyncio.sleep(0.02)

            second = await executor.start(launch(log_dir, "r-second"))
            assert psutil.Process(second.pid).ppid() == os.getpid()  # spawned

            third = await executor.start(launch(log_dir, "r-third"))  # from a new template
            assert psutil.Process(third.pid).ppid() not in (os.getpid(), template.pid)

            # A runner whose template died is nobody's child of ours: its exit is unknown.
            await executor.kill(first)
            ended = await asyncio.wait_for(executor.wait(first), 10)
            assert ended.returncode is None
            for handle in (second, third):
                await executor.kill(handle)
                ended = await asyncio.wait_for(executor.wait(handle), 10)
                assert ended.returncode == -signal.SIGKILL
        finally:
            await executor.close()

    asyncio.run(scenario())


def test_spawning_is_used_where_forking_is_off(log_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(FORK_ENV, "0")
    assert LocalExecutor(log_dir).fork is False
    monkeypatch.setenv(FORK_ENV, "1")

    async def scenario() -> None:
        executor = LocalExecutor(log_dir)
        try:
            # A launch that changes how Python starts cannot share the template's start.
            different = launch(log_dir, "r-env", env={"PYTHONHASHSEED": "7"})
            handle = await executor.start(different)
            assert psutil.Process(handle.pid).ppid() == os.getpid()
            assert environ_of(handle.pid)["PYTHONHASHSEED"] == "7"
        finally:
            await executor.close()

    asyncio.run(scenario())


def test_a_runner_in_a_built_image_is_spawned_with_its_python_env_and_workdir(log_dir: Path):
    workdir = log_dir / "image-root"
    workdir.mkdir()
    built = BuiltImage(
        "img", "venv", python=sys.executable, env={"IMAGE_MARK": "yes"}, workdir=str(workdir)
    )

    async def scenario() -> None:
        executor = LocalExecutor(log_dir, fork=True)
        try:
            handle = await executor.start(launch(log_dir, "r-img", built=built))
            runner = psutil.Process(handle.pid)
            assert runner.ppid() == os.getpid()  # not the template's environment: spawned
            assert environ_of(handle.pid)["IMAGE_MARK"] == "yes"
            assert runner.cwd() == str(workdir)
            assert runner.cmdline()[0] == sys.executable
        finally:
            await executor.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------ the blocking client


def test_a_kernel_interrupt_reaches_a_caller_waiting_for_events(client: Client):
    stream = client.submit(pb.JobSpec(code="import time\ntime.sleep(120)", retries=0))
    job_id = read_until(stream, lambda es: es[-1].HasField("accepted"))[-1].job_id

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for wait in (lambda: stream.next(timeout=60), lambda: next(stream)):
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                while True:
                    wait()
            assert time.monotonic() - started < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The stream outlives the interrupt: cancel the job and follow it to its end.
    client.cancel(job_id, "interrupted")
    events = read_until(stream, finished)
    assert events[-1].finished.state == pb.CANCELLED
    stream.close()


def test_a_closed_stream_stops_following(client: Client):
    stream = client.submit(pb.JobSpec(code="import time\ntime.sleep(120)", retries=0))
    job_id = read_until(stream, lambda es: es[-1].HasField("accepted"))[-1].job_id
    stream.close()
    with pytest.raises(StopIteration):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stream.next(timeout=0.2)
    assert client.get_job(job_id).state in (pb.QUEUED, pb.RUNNING)
    client.cancel(job_id)


def test_blobs_travel_over_grpc_when_the_blob_store_is_not_shared(client: Client):
    client.health()
    client._core._blob_dir = None  # as for a client on another machine
    big = os.urandom(9 * 1024 * 1024)  # several chunks
    blobs = {content_hash(big): big, content_hash(b""): b""}
    assert client.upload(blobs) == len(big)
    assert client.upload(blobs) == 0  # the control plane has them now
    for digest, data in blobs.items():
        assert bytes(client.fetch(digest)) == data
