"""A runner's connection that drops while the runner lives, for real: a control plane on
a loopback TCP port, a real runner, and the kernel cutting the runner's socket (`ss -K`).

A job submitted while an idle runner is away must wait for it (or another runner) and
run; it must never be handed to the absent runner and then forgotten.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from support import ControlPlane, kill_runners, missing, short_tmpdir, wait_until

from remotecell._proto import pb

if shutil.which("ss") is None:
    missing("needs ss (iproute2: apt-get install iproute2)", module=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connections_to(port: int) -> list[str]:
    """The established TCP connections whose far end is ``port`` on loopback."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", "dst", "127.0.0.1", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def cut_connections_to(port: int) -> None:
    """Destroys the client ends of the connections to ``port``, as a network fault would."""
    subprocess.run(
        ["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
        capture_output=True,
        check=True,
    )


class TCPControlPlane(ControlPlane):
    """Listens on a loopback TCP port only: runners connect there, so their sockets can be cut."""

    port: int = 0

    @property
    def socket(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def tcp_control_plane():
    port = free_port()
    cp = TCPControlPlane(short_tmpdir(), ["--max-runners", "1", "--reconnect-grace", "30"])
    cp.port = port
    cp.start()
    try:
        yield cp, port
    finally:
        cp.stop()
        kill_runners(cp.socket)  # their command lines name the TCP address, not the data dir
        shutil.rmtree(cp.data_dir, ignore_errors=True)


def runner_pid(client) -> int:
    events = list(client.submit(pb.JobSpec(code="import os\nprint(os.getpid())")))
    assert events[-1].finished.state == pb.SUCCEEDED, events
    return int("".join(e.stream.text for e in events if e.HasField("stream")))


def test_a_job_submitted_while_an_idle_runner_is_away_runs_once_it_is_back(tcp_control_plane):
    cp, port = tcp_control_plane
    client = cp.client()
    try:
        pid = runner_pid(client)  # a warm, idle runner: the only one allowed (--max-runners 1)
        os.kill(pid, signal.SIGSTOP)  # it cannot reconnect until it is continued
        try:
            assert connections_to(port), "the runner is not connected over TCP"
            cut_connections_to(port)
            wait_until(lambda: not connections_to(port), 10, what="the runner's socket to close")
            # Let the control plane see the stream end before the job arrives.
            time.sleep(0.5)
            stream = client.submit(pb.JobSpec(code="print('ran after the reconnect')"))
            first = stream.next(timeout=10)
            assert first is not None and first.HasField("accepted")
        finally:
            os.kill(pid, signal.SIGCONT)
        events = [first]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            event = stream.next(timeout=0.5)
            if event is None:
                continue
            events.append(event)
            if event.HasField("finished"):
                break
        stream.close()
        assert events[-1].HasField("finished"), (
            f"the job never finished; it is {client.get_job(first.job_id).message!r}: {events}"
        )
        assert events[-1].finished.state == pb.SUCCEEDED, events
        out = "".join(e.stream.text for e in events if e.HasField("stream"))
        assert out == "ran after the reconnect\n"
        assert runner_pid(client) == pid  # the same runner came back and took it
    finally:
        client.close()
