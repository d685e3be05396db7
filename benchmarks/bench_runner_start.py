"""How long a cell takes when no runner is warm, and a warm trivial cell's round trip.

Targets (from the issue): a cell with no warm runner <= 300 ms; a warm trivial cell's
p50 <= 2 ms. Runs a real ``remotecell serve`` per variant (forked runners, spawned
runners) and prints both side by side, with the ratio.

    python benchmarks/bench_runner_start.py [--cold 5] [--warm 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_core import start_control_plane, wait_until

from remotecell._proto import pb
from remotecell.client import Client


def _run_cell(client: Client, code: str) -> None:
    stream = client.submit(pb.JobSpec(code=code))
    for event in stream:
        if event.HasField("finished"):
            if event.finished.state != pb.SUCCEEDED:
                raise SystemExit(f"cell failed: {event.finished.message}")
            return
    raise SystemExit("the event stream ended before the cell finished")


class Server:
    """A `remotecell serve` in a short /tmp directory, runners scaled down after 1 s."""

    def __init__(self, fork: bool) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="rcb-", dir="/tmp"))
        env = {**os.environ, "REMOTECELL_LOCAL_FORK": "1" if fork else "0"}
        self.proc, endpoint = start_control_plane(
            self.data_dir, ["--scaledown-window", "1", "--http", "off"], env=env
        )
        self.client = Client(endpoint)
        self.client.health(wait_for_ready=True)

    def cold_cell(self) -> float:
        wait_until(lambda: self.client.health().runners == 0, 30, "runners to scale down")
        start = time.perf_counter()
        _run_cell(self.client, "1 + 1")
        return time.perf_counter() - start

    def warm_cell(self) -> float:
        start = time.perf_counter()
        _run_cell(self.client, "1 + 1")
        return time.perf_counter() - start

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        if self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=5, help="cold cells per variant")
    parser.add_argument("--warm", type=int, default=300, help="warm cells per variant")
    args = parser.parse_args()
    # Both variants run side by side, measurements interleaved, so that load on the
    # machine weighs on both alike.
    servers = {True: Server(fork=True), False: Server(fork=False)}
    try:
        time.sleep(2.0)  # let both finish starting (and the runner template import)
        cold: dict[bool, list[float]] = {True: [], False: []}
        warm: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.cold):
            for fork, server in servers.items():
                cold[fork].append(server.cold_cell())
        for n in range(20 + args.warm):
            for fork, server in sorted(servers.items(), key=lambda kv: kv[0] == n % 2):
                took = server.warm_cell()
                if n >= 20:
                    warm[fork].append(took)
    finally:
        for server in servers.values():
            server.stop()
    print(f"{'':34}{'forked':>10}{'spawned':>10}{'ratio':>8}")
    for label, results, stat in (
        ("cold cell, median (ms)", cold, statistics.median),
        ("cold cell, best (ms)", cold, min),
        ("warm trivial cell, p50 (ms)", warm, statistics.median),
        ("warm trivial cell, p90 (ms)", warm, lambda xs: statistics.quantiles(xs, n=10)[-1]),
    ):
        fork_ms = stat(results[True]) * 1000
        spawn_ms = stat(results[False]) * 1000
        print(f"{label:34}{fork_ms:10.1f}{spawn_ms:10.1f}{spawn_ms / fork_ms:8.2f}")


if __name__ == "__main__":
    main()
