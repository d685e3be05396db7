"""remotecell ``%%remote`` against ipyparallel ``%%px``, side by side, from one IPython process.

Both systems are driven through the same ``InteractiveShell`` with ``run_cell``, as a
notebook user would drive them, in one run, one after the other (remotecell first, then
ipyparallel with 2 engines), so nothing of one runs while the other is measured. Prints a
markdown table of milliseconds with the ratio remotecell / ipyparallel (below 1: remotecell
is faster). See benchmarks/README.md for what each row means.

    python benchmarks/bench_core.py [--quick] [--json PATH]

Everything the benchmark starts (control planes, runners, the ipyparallel cluster) is
stopped at the end, also on an error or SIGTERM; all of it logs to files under temporary
directories in /tmp, never to this process's stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# remotecell, ipyparallel and numpy are imported only when measured: the cold-start rows
# include loading them into the notebook process, as a fresh kernel would.

ARRAY_BYTES = 100 * 2**20  # the closure of row (b): a 100 MiB float64 array
PRINT_SLEEP = 0.3  # (d): the cell keeps running this long after its print
MARK = re.compile(r"RCB_T=([0-9.]+)\n")
TRIVIAL = "z = 1"
ARRAY_CELL = "s = float(arr.sum())"
PRINT_CELL = f"import time\nprint(f'RCB_T={{time.time()!r}}')\ntime.sleep({PRINT_SLEEP})\n"


@dataclass(frozen=True)
class Plan:
    warmup: int
    warm_iters: int
    array_reps: int
    cold_reps: int
    print_iters: int
    print_iters_nostream: int


FULL = Plan(
    warmup=20, warm_iters=200, array_reps=5, cold_reps=5, print_iters=30, print_iters_nostream=10
)
QUICK = Plan(
    warmup=5, warm_iters=30, array_reps=2, cold_reps=2, print_iters=5, print_iters_nostream=3
)


# -- output capture ------------------------------------------------------------------


class Tap(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr while cells run.

    Keeps the tail of what was written (shown when a cell fails) and, for row (d), the
    moment each ``RCB_T=<time.time()>`` line arrived, paired with the time it carries.
    Both systems look up ``sys.stdout`` when they write, so this sees their writes.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tail = ""
        self._scan = ""
        self._lock = threading.Lock()
        self.marks: list[tuple[float, float]] = []  # (printed remotely, arrived here)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        arrived = time.time()
        with self._lock:
            self._tail = (self._tail + text)[-20000:]
            self._scan += text
            for m in MARK.finditer(self._scan):
                self.marks.append((float(m.group(1)), arrived))
            cut = self._scan.rfind("\n")
            if cut >= 0:
                self._scan = self._scan[cut + 1 :]
            self._scan = self._scan[-1000:]
        return len(text)

    def take_marks(self) -> list[tuple[float, float]]:
        with self._lock:
            marks, self.marks = self.marks, []
            self._scan = ""
            return marks

    def tail(self) -> str:
        with self._lock:
            return self._tail[-4000:]


class BenchError(RuntimeError):
    pass


@dataclass
class Bench:
    ip: Any
    plan: Plan
    out: Tap
    err: Tap
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cell(self, source: str) -> None:
        """Runs one cell as the notebook would; raises with its output if it failed."""
        result = self.ip.run_cell(source)
        if not result.success:
            error = result.error_before_exec or result.error_in_exec
            raise BenchError(
                f"cell failed: {type(error).__name__}: {error}\n--- cell ---\n{source}\n"
                f"--- stdout tail ---\n{self.out.tail()}\n--- stderr tail ---\n{self.err.tail()}"
            )

    def timed(self, source: str) -> float:
        start = time.perf_counter()
        self.cell(source)
        return (time.perf_counter() - start) * 1000

    def record(self, key: str, values: list[float]) -> list[float]:
        self.samples.setdefault(key, []).extend(values)
        return values


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.__stderr__, flush=True)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def check_close(got: Any, want: float, what: str) -> None:
    values = got if isinstance(got, list) else [got]
    if not values or not all(math.isclose(float(v), want, rel_tol=1e-9) for v in values):
        raise BenchError(f"{what}: got {got!r}, expected {want!r}")


# -- cleanup -------------------------------------------------------------------------


class Cleanup:
    """Everything started, so that all of it is stopped, whatever happens."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None], bool]] = []
        self.dirs: list[Path] = []
        self.markers: list[str] = []  # runner command lines contain their data dir

    def push(self, what: str, action: Callable[[], None], stops_processes: bool = True) -> None:
        self._actions.append((what, action, stops_processes))

    def now(self, what: str) -> None:
        """Runs the action registered as ``what`` now (and not again at the end)."""
        for i, (name, action, stops) in enumerate(self._actions):
            if name == what:
                self._stop(name, action, stops)  # interrupted: it runs again at the end
                del self._actions[i]
                return

    def _stop(self, what: str, action: Callable[[], None], stops_processes: bool) -> None:
        # What descends from this process now (control planes, their runner template and
        # runners, ipyparallel's controller and engines) must be gone after the action:
        # runners and templates outlive their control plane by design, so they are
        # followed from here rather than found later.
        before = descendants() if stops_processes else []
        try:
            action()
        except Exception as err:
            progress(f"cleanup: {what} failed: {type(err).__name__}: {err}")
        left = reap(before)
        if left:
            progress(f"cleanup: {what}: killed {left} process(es) that did not exit")

    def tmpdir(self, prefix: str) -> Path:
        # Short, under /tmp: Unix socket paths are limited to ~108 bytes.
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.dirs.append(path)
        return path

    def run(self) -> None:
        while self._actions:
            self._stop(*self._actions.pop())
        left = kill_marked(self.markers) + reap(descendants(), timeout=5)
        if left:
            progress(f"cleanup: killed {left} leftover process(es)")
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)


def marked_processes(markers: list[str]) -> list[Any]:
    """This benchmark's remotecell processes (runners, control planes) still alive."""
    import psutil

    found = []
    if not markers:
        return found
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if any("remotecell" in part for part in cmd) and any(
            m in part for m in markers for part in cmd
        ):
            found.append(proc)
    return found


def runner_processes(marker: str) -> list[Any]:
    return [
        p
        for p in marked_processes([marker])
        if "remotecell.backend.runner" in (p.info.get("cmdline") or [])
    ]


def descendants() -> list[Any]:
    import psutil

    return psutil.Process().children(recursive=True)


def reap(procs: list[Any], timeout: float = 15.0) -> int:
    """Waits for ``procs`` to exit after being told to stop; kills those that do not."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(alive)


def kill_marked(markers: list[str]) -> int:
    import psutil

    procs = [p for p in marked_processes(markers) if p.pid != os.getpid()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


# -- remotecell ----------------------------------------------------------------------


def remotecell_env(data_dir: Path | None = None, url: str = "", token: str = "") -> None:
    for name in ("REMOTECELL_URL", "REMOTECELL_TOKEN", "REMOTECELL_TOKEN_FILE"):
        os.environ.pop(name, None)
    if data_dir is not None:
        os.environ["REMOTECELL_DATA_DIR"] = str(data_dir)
    if url:
        os.environ["REMOTECELL_URL"] = url
        os.environ["REMOTECELL_TOKEN"] = token


def bench_remotecell(b: Bench, cleanup: Cleanup, res: dict[str, float]) -> None:
    plan, ip = b.plan, b.ip

    # (c1) cold start: `%load_ext remotecell` with nothing running starts the embedded
    # control plane (which prewarms one runner); the first cell follows at once.
    data = cleanup.tmpdir("rcbcore-")
    cleanup.markers.append(str(data))
    remotecell_env(data)

    def stop_embedded() -> None:
        with contextlib.suppress(Exception):
            ip.run_line_magic("unload_ext", "remotecell")
        from remotecell.client._embedded import stop

        stop(data)
        kill_marked([str(data)])

    cleanup.push("remotecell embedded control plane", stop_embedded)
    progress("remotecell: cold start (embedded control plane)")
    start = time.perf_counter()
    b.cell("%load_ext remotecell")
    loaded = time.perf_counter()
    b.cell(f"%%remote\n{TRIVIAL}")
    end = time.perf_counter()
    res["c1"] = (end - start) * 1000
    b.notes.append(
        f"remotecell c1: `%load_ext` returned in {(loaded - start) * 1000:.0f} ms, "
        f"the first cell took {(end - loaded) * 1000:.0f} ms (waiting for the control plane and "
        "its prewarmed runner)"
    )

    # (a) warm round trip
    progress(f"remotecell: warm round trip x{plan.warm_iters}")
    res["a_p50"], res["a_p90"] = warm_loop(b, "remotecell.a", f"%%remote\n{TRIVIAL}", check_z)

    # (b) a closure holding a 100 MiB array
    import numpy as np

    ip.user_ns["np"] = np
    progress(f"remotecell: 100 MiB closure x{plan.array_reps}")
    first, repeat = [], []
    for _ in range(plan.array_reps):
        arr = np.random.rand(ARRAY_BYTES // 8)
        want = float(arr.sum())
        ip.user_ns["arr"] = arr
        for bucket in (first, repeat):
            ip.user_ns.pop("s", None)
            bucket.append(b.timed(f"%%remote\n{ARRAY_CELL}"))
            check_close(ip.user_ns.get("s"), want, "remotecell s")
    ip.user_ns.pop("arr", None)
    res["b_first"] = p50(b.record("remotecell.b_first", first))
    res["b_repeat"] = p50(b.record("remotecell.b_repeat", repeat))

    # (d) a remote print's arrival
    progress(f"remotecell: print arrival x{plan.print_iters}")
    lat = print_latency(b, f"%%remote\n{PRINT_CELL}", plan.print_iters, per_cell=1)
    res["d_p50"], res["d_p90"] = p50(lat), p90(lat)
    b.record("remotecell.d", lat)

    progress("remotecell: stopping the embedded control plane")
    cleanup.now("remotecell embedded control plane")

    # (c2) a cell when no runner is warm: a control plane that scales runners down after 1 s
    cold = cleanup.tmpdir("rcbcore-")
    cleanup.markers.append(str(cold))
    progress(f"remotecell: cell with no warm runner x{plan.cold_reps}")
    proc, endpoint = start_control_plane(cold, ["--scaledown-window", "1"])

    def stop_served() -> None:
        with contextlib.suppress(Exception):
            ip.run_line_magic("unload_ext", "remotecell")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        kill_marked([str(cold)])

    cleanup.push("remotecell served control plane", stop_served)
    from remotecell.client import Client

    health = Client(endpoint)
    cleanup.push("remotecell health client", health.close, stops_processes=False)
    remotecell_env(cold, endpoint.url, endpoint.token)
    b.cell("%load_ext remotecell")
    b.cell(f"%%remote\n{TRIVIAL}")  # connects the magics; starts the first runner
    times = []
    for _ in range(plan.cold_reps):
        wait_until(
            lambda: health.health().runners == 0 and not runner_processes(str(cold)),
            60,
            "the runner to scale down",
        )
        time.sleep(0.5)  # let the exited runner's resources settle
        ip.user_ns.pop("z", None)
        times.append(b.timed(f"%%remote\n{TRIVIAL}"))
        check_z(ip)
    res["c2"] = p50(b.record("remotecell.c2", times))
    cleanup.now("remotecell health client")
    cleanup.now("remotecell served control plane")
    remotecell_env()


def start_control_plane(
    data: Path,
    args: list[str],
    socket: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Any]:
    """A ``remotecell serve`` on ``data`` (logging to ``data/serve.log``), listening on
    ``socket`` (default ``data/cp.sock``); returns it and its endpoint once it serves."""
    from remotecell.client.config import read_endpoint_file

    with open(data / "serve.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "remotecell",
                "serve",
                "--data-dir",
                str(data),
                "--listen",
                f"unix:{socket or data / 'cp.sock'}",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )

    def ready() -> Any:
        if proc.poll() is not None:
            raise BenchError(
                f"`remotecell serve` exited ({proc.returncode}); see {data / 'serve.log'}"
            )
        found = read_endpoint_file(data)
        return found if found and found[1] == proc.pid else None

    try:
        endpoint = wait_until(ready, 30, "`remotecell serve` to start")[0]
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return proc, endpoint


def check_z(ip: Any) -> None:
    if ip.user_ns.get("z") != 1:
        raise BenchError(f"z did not come back: {ip.user_ns.get('z')!r}")


def warm_loop(
    b: Bench, key: str, source: str, check: Callable[[Any], None] | None
) -> tuple[float, float]:
    for _ in range(b.plan.warmup):
        b.cell(source)
    times = []
    for _ in range(b.plan.warm_iters):
        if check is not None:
            b.ip.user_ns.pop("z", None)
        times.append(b.timed(source))
        if check is not None:
            check(b.ip)
    b.record(key, times)
    return p50(times), p90(times)


def print_latency(b: Bench, source: str, iters: int, per_cell: int) -> list[float]:
    b.out.take_marks()
    latencies = []
    for _ in range(iters):
        b.cell(source)
        marks = b.out.take_marks()
        if len(marks) != per_cell:
            raise BenchError(
                f"expected {per_cell} RCB_T line(s) per cell, saw {len(marks)}:\n{b.out.tail()}"
            )
        latencies += [(arrived - printed) * 1000 for printed, arrived in marks]
    return latencies


# -- ipyparallel ---------------------------------------------------------------------


def bench_ipyparallel(b: Bench, cleanup: Cleanup, res: dict[str, float]) -> None:
    plan = b.plan

    # (c1) cold start: start a cluster of 2 engines, connect, first %%px cell.
    progress("ipyparallel: cold start (cluster of 2 engines)")
    start = time.perf_counter()
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=2, log_level=30)
    cleanup.push("ipyparallel cluster", cluster.stop_cluster_sync)
    rc = cluster.start_and_connect_sync()
    cleanup.push("ipyparallel client", rc.close, stops_processes=False)
    dview = rc[:]
    dview.activate()
    b.cell(f"%%px --block\n{TRIVIAL}")
    res["c1"] = (time.perf_counter() - start) * 1000

    # (a) warm round trip (on both engines, as %%px runs on the whole view)
    progress(f"ipyparallel: warm round trip x{plan.warm_iters}")
    res["a_p50"], res["a_p90"] = warm_loop(b, "ipyparallel.a", f"%%px --block\n{TRIVIAL}", None)
    if dview.pull("z", block=True) != [1, 1]:
        raise BenchError("ipyparallel: z is not 1 on the engines")

    # (b) the same array: push + %%px + pull of the scalar, each time (no dedup)
    import numpy as np

    progress(f"ipyparallel: 100 MiB closure x{plan.array_reps}")
    for view, source, key in (
        (dview, f"%%px --block\n{ARRAY_CELL}", "b"),
        (rc[0], f"%%px --block --targets 0\n{ARRAY_CELL}", "b1"),
    ):
        first, repeat = [], []
        for _ in range(plan.array_reps):
            arr = np.random.rand(ARRAY_BYTES // 8)
            want = float(arr.sum())
            for bucket in (first, repeat):
                start = time.perf_counter()
                view.push({"arr": arr}, block=True)
                b.cell(source)
                got = view.pull("s", block=True)
                bucket.append((time.perf_counter() - start) * 1000)
                check_close(got, want, "ipyparallel s")
            view.execute("del arr, s", block=True)
        res[f"{key}_first"] = p50(b.record(f"ipyparallel.{key}_first", first))
        res[f"{key}_repeat"] = p50(b.record(f"ipyparallel.{key}_repeat", repeat))

    # (d) a remote print's arrival: --stream shows output as it comes (one line per engine)
    progress(f"ipyparallel: print arrival x{plan.print_iters}")
    lat = print_latency(b, f"%%px --block --stream\n{PRINT_CELL}", plan.print_iters, per_cell=2)
    res["d_p50"], res["d_p90"] = p50(lat), p90(lat)
    b.record("ipyparallel.d", lat)
    lat = print_latency(
        b, f"%%px --block --no-stream\n{PRINT_CELL}", plan.print_iters_nostream, per_cell=2
    )
    res["d_nostream"] = p50(b.record("ipyparallel.d_nostream", lat))

    # (c2) no autoscaling: the nearest thing is starting one more engine by hand,
    # waiting for it to register, and running the first cell on it.
    progress(f"ipyparallel: engine start + first cell x{plan.cold_reps}")
    times = []
    for _ in range(plan.cold_reps):
        before = set(rc.ids)
        start = time.perf_counter()
        engine_set = cluster.start_engines_sync(n=1)
        rc.wait_for_engines(len(before) + 1, timeout=120, interactive=False)
        (new,) = set(rc.ids) - before
        b.cell(f"%%px --block --targets {new}\n{TRIVIAL}")
        times.append((time.perf_counter() - start) * 1000)
        cluster.stop_engines_sync(engine_set)
        wait_until(lambda new=new: new not in rc.ids, 60, "the extra engine to stop")
    res["c2"] = p50(b.record("ipyparallel.c2", times))

    progress("ipyparallel: stopping the cluster")
    cleanup.now("ipyparallel client")
    cleanup.now("ipyparallel cluster")


# -- the table -----------------------------------------------------------------------


ROWS = [
    ("a_p50", "(a) warm trivial cell, p50"),
    ("a_p90", "(a) warm trivial cell, p90"),
    ("b_first", "(b) 100 MiB closure, first run"),
    ("b_repeat", "(b) 100 MiB closure, repeat"),
    ("b1_first", "(b) 100 MiB closure, first run; ipyparallel to 1 engine"),
    ("b1_repeat", "(b) 100 MiB closure, repeat; ipyparallel to 1 engine"),
    ("c1", "(c1) cold start: load + first cell"),
    ("c2", "(c2) cell with no warm runner / ipyparallel: engine start + first cell"),
    ("d_p50", "(d) remote print -> kernel, p50 (ipyparallel --stream)"),
    ("d_p90", "(d) remote print -> kernel, p90 (ipyparallel --stream)"),
    ("d_nostream", "(d) remote print -> kernel, p50; ipyparallel --no-stream"),
]


def build_rows(rc: dict[str, float], ipp: dict[str, float]) -> list[dict[str, Any]]:
    rc = dict(rc)
    # remotecell has one number for (b) and (d); the 1-engine and --no-stream rows compare
    # it with the other ipyparallel variant.
    rc["b1_first"], rc["b1_repeat"] = rc["b_first"], rc["b_repeat"]
    rc["d_nostream"] = rc["d_p50"]
    rows = []
    for key, label in ROWS:
        r, i = rc.get(key), ipp.get(key)
        ratio = r / i if r is not None and i else None
        rows.append(
            {"key": key, "metric": label, "remotecell_ms": r, "ipyparallel_ms": i, "ratio": ratio}
        )
    return rows


def fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "n/a"
    if ratio:
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| metric (ms) | remotecell | ipyparallel | ratio (remotecell/ipyparallel) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['metric']} | {fmt(row['remotecell_ms'])} | {fmt(row['ipyparallel_ms'])} "
            f"| {fmt(row['ratio'], ratio=True)} |"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------


@contextlib.contextmanager
def captured(out: Tap, err: Tap) -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def source_commit() -> str:
    """The checkout's commit, and whether remotecell/ has uncommitted changes ("" if unknown)."""
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(Exception):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "remotecell"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if head:
            return head + (" + uncommitted changes in remotecell/" if dirty else "")
    return ""


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("remotecell", "ipyparallel", "ipython", "numpy", "grpcio", "pyzmq"):
        with contextlib.suppress(Exception):
            out[dist] = version(dist)
    out["cpus"] = str(os.cpu_count())
    with contextlib.suppress(OSError):
        out["loadavg_1min"] = f"{os.getloadavg()[0]:.2f}"
    commit = source_commit()
    if commit:
        out["commit"] = commit
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    cleanup = Cleanup()
    # A private IPython dir: no user profile or startup files, and ipyparallel's
    # cluster files and logs go there (removed at the end).
    os.environ["IPYTHONDIR"] = str(cleanup.tmpdir("rcbcore-ipython-"))

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    b = Bench(ip, plan, Tap("stdout"), Tap("stderr"))
    load_before = versions().get("loadavg_1min", "?")
    rc_res: dict[str, float] = {}
    ipp_res: dict[str, float] = {}
    try:
        with captured(b.out, b.err):
            bench_remotecell(b, cleanup, rc_res)
            bench_ipyparallel(b, cleanup, ipp_res)
    finally:
        with captured(b.out, b.err):
            cleanup.run()

    rows = build_rows(rc_res, ipp_res)
    meta = versions()
    meta["loadavg_1min"] = f"{load_before} at start, {meta.get('loadavg_1min', '?')} at end"
    print(
        f"remotecell vs ipyparallel (2 engines), {'quick' if args.quick else 'full'} run; "
        + ", ".join(f"{k} {v}" for k, v in meta.items())
    )
    print()
    print(table(rows))
    print()
    for note in b.notes:
        print(f"* {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"meta": meta, "plan": plan.__dict__, "rows": rows, "samples_ms": b.samples},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
