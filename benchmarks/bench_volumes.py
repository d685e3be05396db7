"""A 1 GiB file through a volume, against a plain copy of it on the same disk.

A cell writes the file to a volume; a cell on a fresh runner reads it back. That is
timed on a real ``remotecell serve`` (local executor) with the default volume store (a
directory under the data directory, bind-mounted into runners), and, for comparison,
with a ``memory://`` store (runners sync a copy through the control plane). The
baseline, on the same disk: writing the same bytes to a file, reading them back, and
copying the file (``shutil.copyfile``). One run, side by side; throughputs in MB/s
(10^6 bytes per second) and their ratios. See benchmarks/README.md.

    python benchmarks/bench_volumes.py [--size-mib 1024] [--dir /var/tmp] [--no-memory]

Everything it starts (the control planes, their runners) is stopped at the end, also on
an error or SIGTERM; they log to files in its temporary directories, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import BenchError, Cleanup, progress, source_commit, start_control_plane

BLOCK_MIB = 64
SECONDS = re.compile(r"RCB_SECONDS=([0-9.e-]+)")

# The same bytes everywhere: 64 MiB made once, written over and over.
MAKE_BLOCK = "import os\nblock = os.urandom(1 << 20) * 64\n"
WRITE = """
import os, time
{make}start = time.perf_counter()
with open({path!r}, "wb") as f:
    for _ in range({blocks}):
        f.write(block)
    f.flush()
    os.fsync(f.fileno())
    # Out of the page cache: the reader reads from the disk, as on a fresh machine.
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
print(f"RCB_SECONDS={{time.perf_counter() - start!r}}")
"""
READ = """
import os, time
start = time.perf_counter()
size = 0
buffer = bytearray(16 << 20)
with open({path!r}, "rb", buffering=0) as f:
    while n := f.readinto(buffer):
        size += n
assert size == {size}, size
print(f"RCB_SECONDS={{time.perf_counter() - start!r}}")
"""


@dataclass
class Timed:
    in_cell: float  # seconds, measured in the cell
    wall: float  # seconds, submit to finished, seen by the client


class Server:
    """A ``remotecell serve`` with its data directory in ``parent`` (on the disk measured)."""

    def __init__(self, cleanup: Cleanup, parent: Path, *args: str) -> None:
        from remotecell.client import Client

        self.data_dir = Path(tempfile.mkdtemp(prefix="rcbv-", dir=parent))
        cleanup.dirs.append(self.data_dir)
        cleanup.markers.append(str(self.data_dir))
        socket = cleanup.tmpdir("rcbv-sock-") / "cp.sock"
        self.proc, endpoint = start_control_plane(
            self.data_dir, ["--http", "off", *args], socket=socket
        )
        cleanup.push(f"remotecell serve {self.data_dir}", self.stop)
        self.client = Client(endpoint)
        self.client.health(wait_for_ready=True)

    def cell(self, code: str, session: str, mounts: dict[str, str]) -> Timed:
        from remotecell._proto import pb

        spec = pb.JobSpec(
            code=code,
            session=session,
            volumes=[pb.VolumeMount(name=n, path=p) for p, n in mounts.items()],
        )
        start = time.perf_counter()
        output, finished = [], None
        for event in self.client.submit(spec):
            if event.HasField("stream"):
                output.append(event.stream.text)
            elif event.HasField("error"):
                output.append(event.error.message)
            elif event.HasField("finished"):
                finished = event.finished
                break
        wall = time.perf_counter() - start
        text = "".join(output)
        if finished is None or finished.state != pb.SUCCEEDED:
            raise BenchError(f"the cell failed: {finished}; its output: {text[-2000:]}")
        found = SECONDS.search(text)
        if found is None:
            raise BenchError(f"the cell printed no time: {text[-2000:]}")
        return Timed(float(found.group(1)), wall)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def through_volume(
    cleanup: Cleanup, parent: Path, size_mib: int, *serve_args: str
) -> tuple[Timed, Timed]:
    """Writes the file in a cell (session "w"), reads it on a new runner (session "r")."""
    server = Server(cleanup, parent, *serve_args)
    mount = f"/mnt/rcb-volume-{secrets.token_hex(4)}"
    cleanup.push(f"remove {mount}", lambda: _rmdir(mount), stops_processes=False)
    server.client.create_volume("bench")
    path = f"{mount}/weights.bin"
    blocks = size_mib // BLOCK_MIB
    # The writer's runner is warm (started by an empty cell); the reader's is started for
    # its cell, as a later cell on another runner would be.
    server.cell('print("RCB_SECONDS=0")', "w", {mount: "bench"})
    write = server.cell(
        WRITE.format(make=MAKE_BLOCK, path=path, blocks=blocks), "w", {mount: "bench"}
    )
    entries = server.client.list_volume_files("bench", "weights.bin")
    if entries[0].size != blocks * BLOCK_MIB * 2**20:
        raise BenchError(f"the volume holds {entries[0].size} bytes, not {size_mib} MiB")
    read = server.cell(
        READ.format(path=path, size=blocks * BLOCK_MIB * 2**20), "r", {mount: "bench"}
    )
    cleanup.now(f"remotecell serve {server.data_dir}")
    shutil.rmtree(server.data_dir, ignore_errors=True)
    return write, read


def plain_disk(parent: Path, size_mib: int) -> dict[str, float]:
    """Seconds to write the same bytes to a file (fsync), read them, copy the file."""
    directory = Path(tempfile.mkdtemp(prefix="rcbv-plain-", dir=parent))
    try:
        source, copy = directory / "weights.bin", directory / "copy.bin"
        namespace: dict[str, Any] = {}
        exec(MAKE_BLOCK, namespace)
        block = namespace["block"]
        start = time.perf_counter()
        with open(source, "wb") as f:
            for _ in range(size_mib // BLOCK_MIB):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        write = time.perf_counter() - start
        buffer = bytearray(16 << 20)
        start = time.perf_counter()
        with open(source, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
        read = time.perf_counter() - start
        _drop_cache(source)
        start = time.perf_counter()
        shutil.copyfile(source, copy)
        with open(copy, "rb+") as f:
            os.fsync(f.fileno())
        copied = time.perf_counter() - start
        return {"write": write, "read": read, "copy": copied}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _drop_cache(path: Path) -> None:
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _rmdir(path: str) -> None:
    # The mount point local runners made on the host; empty once they are gone.
    if os.path.isdir(path):
        os.rmdir(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (a multiple of 64)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where the data directory and the plain files go (the disk measured)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory:// store row")
    args = parser.parse_args(argv)
    if args.size_mib % BLOCK_MIB or args.size_mib <= 0:
        raise SystemExit(f"--size-mib must be a positive multiple of {BLOCK_MIB}")

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    cleanup = Cleanup()
    load_before = os.getloadavg()[0]
    try:
        # Untimed: the disk's first large write after a pause is slow, and would fall on
        # whichever side went first.
        progress("warm-up: a write of the same size")
        plain_disk(args.dir, args.size_mib)
        progress("plain disk: write, read, copy")
        plain = plain_disk(args.dir, args.size_mib)
        progress("volume, directory store (default)")
        directory = through_volume(cleanup, args.dir, args.size_mib)
        memory = None
        if not args.no_memory:
            progress("volume, memory:// store (synced copies)")
            store = f"memory://bench-{secrets.token_hex(4)}"
            memory = through_volume(cleanup, args.dir, args.size_mib, "--volume-store", store)
    finally:
        cleanup.run()
    load_after = os.getloadavg()[0]

    size = args.size_mib * 2**20

    def mbs(seconds: float, times: int = 1) -> float:
        return size * times / seconds / 1e6

    rows = [
        (
            "write, in the cell (fsync)",
            mbs(directory[0].in_cell),
            "write a file",
            mbs(plain["write"]),
        ),
        (
            "read, in a fresh runner's cell",
            mbs(directory[1].in_cell),
            "read it",
            mbs(plain["read"]),
        ),
        (
            "write + read, in the cells",
            mbs(directory[0].in_cell + directory[1].in_cell),
            "copy it",
            mbs(plain["copy"]),
        ),
        (
            "write + read, two cells end to end",
            mbs(directory[0].wall + directory[1].wall),
            "copy it",
            mbs(plain["copy"]),
        ),
    ]
    if memory is not None:
        rows.append(
            (
                "memory:// store: two cells end to end",
                mbs(memory[0].wall + memory[1].wall),
                "copy it",
                mbs(plain["copy"]),
            )
        )
    commit = source_commit()
    print(
        f"a {args.size_mib} MiB file through a volume vs the same disk ({args.dir}); one run; "
        f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, "
        f"loadavg_1min {load_before:.2f} at start, {load_after:.2f} at end"
        + (f", commit {commit}" if commit else "")
    )
    print()
    print("| volume (default directory store) | MB/s | plain disk | MB/s | ratio |")
    print("|---|---:|---|---:|---:|")
    for label, volume_mbs, baseline, baseline_mbs in rows:
        print(
            f"| {label} | {volume_mbs:.0f} | {baseline} | {baseline_mbs:.0f} "
            f"| {volume_mbs / baseline_mbs:.2f} |"
        )
    print()
    print(
        f"* seconds: volume write {directory[0].in_cell:.2f} in the cell, "
        f"{directory[0].wall:.2f} end to end; read {directory[1].in_cell:.2f} in the cell, "
        f"{directory[1].wall:.2f} end to end (a runner started for it); plain write "
        f"{plain['write']:.2f}, read {plain['read']:.2f}, copy {plain['copy']:.2f}"
    )
    if memory is not None:
        print(
            f"* memory:// store: the write cell took {memory[0].wall:.2f} s end to end "
            f"({memory[0].in_cell:.2f} s writing the runner's copy, the rest committing it "
            f"through the control plane); the read cell {memory[1].wall:.2f} s (pulling the "
            f"copy, then {memory[1].in_cell:.2f} s reading it from the page cache)"
        )
    print(
        "* the file leaves the page cache after each write (fsync, then POSIX_FADV_DONTNEED), "
        "so reads and the copy read from the disk"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
