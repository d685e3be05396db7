"""Deployed endpoints and fan-out: remotecell against uvicorn, Ray Serve, Ray tasks and
ipyparallel, side by side, in one run.

(1) HTTP: the same trivial JSON handler behind plain uvicorn (a Starlette app in its own
process), Ray Serve and a remotecell deployment, loaded by ``wrk`` at a fixed concurrency for
a fixed time: requests/s, p50 and p99. (2) Fan-out of 10,000 small inputs: Ray tasks,
ipyparallel's load-balanced ``map_sync``, remotecell ``function(...).map`` and a
deployment's ``map``. (3) remotecell's cold start from zero replicas. (4) remotecell's scale-up
under load and scale-down to zero. See benchmarks/README.md.

    python benchmarks/bench_endpoints.py [--quick] [--only peers|remotecell]
        [--parts http,fanout,cold,scale] [--json PATH]

One system runs at a time; each is stopped before the next starts. Everything the benchmark
starts (uvicorn, Ray and Serve, the ipyparallel cluster, control planes and their runners,
wrk) is stopped at the end, also on an error or SIGTERM. Their output goes to log files in
temporary directories under /tmp (removed at the end), never to this process's stdout.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core
from bench_core import (  # the shared helpers of the benchmarks
    BenchError,
    Cleanup,
    kill_marked,
    reap,
    remotecell_env,
    source_commit,
    start_control_plane,
    wait_until,
)

N_ITEMS = 10_000
CONNECTIONS = 16
PATH = "/endpoints/bench"  # every HTTP server serves the handler at the same path
BODY = {"x": 1}
EXPECTED = {"y": 2}
# remotecell's deployment settings for row (1); Ray Serve gets the same (one replica taking
# up to 32 calls at once), as uvicorn is one worker process.
RC_CONCURRENCY = 32
ENGINES = 2  # ipyparallel engines, Ray CPUs, remotecell containers for fan-out
VENV_IMAGE_PACKAGE = "tabulate==0.9.0"  # (3): the cached venv image's one package
SLOW_S = 0.05  # (4): the handler's sleep, so that one replica of concurrency 4 is not enough
SCALE_CONCURRENCY = 4


def handler(x: int) -> dict:
    return {"y": x + 1}


def f(x):
    return x * 2


def slow_handler(x: int) -> dict:
    import time

    time.sleep(SLOW_S)
    return {"y": x + 1}


@dataclass(frozen=True)
class Plan:
    duration: int  # seconds of each measured wrk run
    warmup: int  # seconds of wrk before it, not counted
    fanout_reps: int  # timed maps per system (median reported)
    cold_reps: int
    scale_load_s: int


FULL = Plan(duration=10, warmup=2, fanout_reps=2, cold_reps=3, scale_load_s=15)
QUICK = Plan(duration=3, warmup=1, fanout_reps=1, cold_reps=1, scale_load_s=8)


@dataclass
class Run:
    plan: Plan
    cleanup: Cleanup
    wrk: str
    wrk_threads: int
    res: dict[str, Any] = field(default_factory=dict)  # section -> system -> numbers
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    watch: Watch = field(default_factory=lambda: Watch())

    def put(self, section: str, system: str, **values: Any) -> None:
        self.res.setdefault(section, {}).setdefault(system, {}).update(values)


# -- output --------------------------------------------------------------------------

_CONSOLE = sys.stderr  # replaced in main() by a copy of the terminal's stderr


def progress(message: str) -> None:
    line = f"[bench] {message}"
    with contextlib.suppress(ValueError, OSError):  # _CONSOLE closed under a thread's feet
        print(line, file=_CONSOLE, flush=True)
    if _CONSOLE is not sys.stderr:  # fd 2 is the log: the log gets the line too, in context
        with contextlib.suppress(ValueError, OSError):
            print(line, file=sys.stderr, flush=True)


# bench_core's Cleanup reports through bench_core.progress, which writes to fd 2: that is the
# log while fds_to is in effect, so "cleanup: ... killed N process(es)" never reached the
# console. Its reports go through this module's progress instead.
bench_core.progress = progress


class Watch:
    """The peers' processes that must stay up while they are measured (Ray's GCS and raylet,
    uvicorn, control planes). A thread looks at them every 0.5 s and says on the console,
    at once, which one is gone: Ray's core worker ends this process with _exit(1) about a
    minute after its GCS or raylet dies, and no Python code runs then."""

    def __init__(self) -> None:
        self._procs: dict[str, Any] = {}
        self._dead: dict[str, str] = {}  # name -> what the thread found
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, name: str, pid: int) -> None:
        import psutil

        with contextlib.suppress(psutil.Error), self._lock:
            self._procs[name] = psutil.Process(pid)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="bench-watch", daemon=True)
            self._thread.start()

    def drop(self, prefix: str) -> None:
        """Before a deliberate stop: those processes' ends are expected."""
        with self._lock:
            for name in [n for n in self._procs if n.startswith(prefix)]:
                del self._procs[name]
            for name in [n for n in self._dead if n.startswith(prefix)]:
                del self._dead[name]

    @staticmethod
    def _gone(proc: Any) -> str | None:
        import psutil

        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return None
            with contextlib.suppress(psutil.Error, OSError):
                code = proc.wait(0)  # our own child: reaped here, its exit status known
                return (
                    f"exited with {code}"
                    if code is None or code >= 0
                    else f"killed by signal {-code}"
                )
            return "exited"
        except psutil.NoSuchProcess:
            return "gone"
        except psutil.Error:
            return None

    def check(self, prefix: str) -> None:
        """Raises if one of the processes named ``prefix...`` is gone."""
        with self._lock:
            items = [(n, p) for n, p in self._procs.items() if n.startswith(prefix)]
            dead = [f"{n} {how}" for n, how in self._dead.items() if n.startswith(prefix)]
        if dead:
            raise BenchError(f"{'; '.join(dead)}, before its measurement")
        for name, proc in items:
            if how := self._gone(proc):
                raise BenchError(f"{name} (pid {proc.pid}) {how} before its measurement")

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            with self._lock:
                items = list(self._procs.items())
            for name, proc in items:
                pid, how = proc.pid, self._gone(proc)
                if how is None:
                    continue
                with self._lock:
                    if self._procs.get(name) is not proc:
                        continue  # dropped meanwhile: a deliberate stop
                    del self._procs[name]
                    self._dead[name] = f"(pid {pid}) {how}"
                progress(f"PEER DIED: {name} (pid {pid}) {how}")


@contextlib.contextmanager
def fds_to(log: Path) -> Iterator[None]:
    """Points this process's fds 1 and 2 (and Python's streams) at ``log``: Ray and
    ipyparallel, and any process they start that inherits them, write there."""
    global _CONSOLE
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    _CONSOLE = os.fdopen(os.dup(2), "w", buffering=1)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _CONSOLE.close()
        _CONSOLE = sys.stderr


# -- HTTP load with wrk --------------------------------------------------------------

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RCB_JSON {{"requests": %d, "duration_us": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}}\\n', summary.requests, summary.duration, e.connect, e.read,
    e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wrk_script(tmp: Path, token: str = "") -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    path = tmp / ("wrk-auth.lua" if token else "wrk.lua")
    path.write_text(WRK_LUA.format(body=json.dumps(BODY), auth=auth))
    return path


def start_wrk(
    run: Run, url: str, script: Path, seconds: float, log: Path, threads: int | None = None
) -> subprocess.Popen[bytes]:
    threads = threads or run.wrk_threads
    with open(log, "wb") as out:
        return subprocess.Popen(
            [run.wrk, f"-t{threads}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
             "-s", str(script), url],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wrk_exited(proc: subprocess.Popen[bytes], block: bool) -> Any:
    """wrk's rusage once it has exited (reaped here, not by ``proc.poll``), else None."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def finish_wrk(
    proc: subprocess.Popen[bytes], log: Path, usage: Any = None
) -> tuple[dict[str, Any], float]:
    """Waits for wrk; returns its summary and the CPU seconds it used (user + system)."""
    usage = usage or wrk_exited(proc, block=True)
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith("RCB_JSON "):
            return json.loads(line[len("RCB_JSON ") :]), usage.ru_utime + usage.ru_stime
    raise BenchError(f"wrk exited {proc.returncode} without a summary:\n{text[-2000:]}")


def load(
    run: Run, url: str, script: Path, tmp: Path, key: str, threads: int | None = None,
    server_pids: Callable[[], list[int]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A warm-up wrk run, then the measured one; requests/s, latencies, CPU shares."""
    import psutil

    warm = start_wrk(run, url, script, run.plan.warmup, tmp / f"{key}-warm.log", threads)
    finish_wrk(warm, tmp / f"{key}-warm.log")

    def server_cpu() -> float:
        total = 0.0
        for pid in server_pids() if server_pids else []:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        return total

    log = tmp / f"{key}.log"
    busy0, srv0, t0 = machine_busy(), server_cpu(), time.perf_counter()
    proc = start_wrk(run, url, script, run.plan.duration, log, threads)
    summary, wrk_cpu = finish_wrk(proc, log)
    wall = time.perf_counter() - t0
    busy, srv = machine_busy() - busy0, server_cpu() - srv0
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    if summary["requests"] == 0:
        raise BenchError(f"wrk got no answers from {url}: {summary}")
    if errors > summary["requests"] // 100:
        raise BenchError(f"wrk: {errors} errors in {summary['requests']} requests: {summary}")
    out = {
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "p50_ms": summary["p50_us"] / 1000,
        "p90_ms": summary["p90_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "requests": summary["requests"],
        "errors": errors,
        "wrk_threads": threads or run.wrk_threads,
        "wrk_cpu_cores": wrk_cpu / wall,
        "machine_cpu_cores": busy / wall,
    }
    if server_pids:
        out["server_cpu_cores"] = srv / wall
    return out


def post(url: str, body: Any, token: str = "", timeout: float = 10.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as reply:
        return json.loads(reply.read())


def wait_http(
    url: str, token: str = "", timeout: float = 60.0, alive: Callable[[], None] = lambda: None
) -> None:
    def ok() -> bool:
        alive()
        try:
            got = post(url, BODY, token, timeout=5)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        if got != EXPECTED:
            raise BenchError(f"{url} answered {got!r}, expected {EXPECTED!r}")
        return True

    wait_until(ok, timeout, f"{url} to answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_tree(proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    """SIGTERM to ``proc``, then waits for it and for the processes under it (as they were
    before the signal: runners outlive their control plane) and kills what is left.

    Used instead of Cleanup's "every descendant of this process" (``stops_processes``): Ray's
    processes (GCS, raylet, workers) are descendants too while Ray is up, and that reap
    killed them when a control plane was stopped with Ray still up (Ray's core worker then
    ended this process with _exit(1) at its next call)."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if left := reap(tree):
        progress(f"cleanup: {what}: killed {left} process(es) under it that did not exit")


def stop_all(cleanup: Cleanup) -> None:
    """Stops everything registered so far, newest first (the temporary directories stay:
    they hold the logs until the end)."""
    while cleanup._actions:
        cleanup._stop(*cleanup._actions.pop())


# -- (1) HTTP peers ------------------------------------------------------------------

UVICORN_APP = """\
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def handler(x: int) -> dict:
    return {"y": x + 1}


async def endpoint(request: Request) -> JSONResponse:
    return JSONResponse(handler(**(await request.json())))


app = Starlette(routes=[Route("PATH", endpoint, methods=["POST"])])
""".replace("PATH", PATH)


def http_uvicorn(run: Run, tmp: Path) -> None:
    app_dir = run.cleanup.tmpdir("rcbep-uvicorn-")
    (app_dir / "rcb_app.py").write_text(UVICORN_APP)
    port = free_port()
    log = app_dir / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "rcb_app:app", "--app-dir", str(app_dir),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--log-level", "warning", "--no-access-log"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop() -> None:
        run.watch.drop("uvicorn")
        stop_tree(proc, "uvicorn")

    run.cleanup.push("uvicorn", stop, stops_processes=False)
    run.watch.add("uvicorn", proc.pid)

    def alive() -> None:
        if proc.poll() is not None:
            raise BenchError(f"uvicorn exited ({proc.returncode}); see:\n{log.read_text()}")

    url = f"http://127.0.0.1:{port}{PATH}"
    progress("uvicorn: starting")
    wait_http(url, alive=alive, timeout=30)
    script = wrk_script(tmp)
    # The load generator's check: with 1 and with 2 wrk threads against the fastest
    # server; if the second thread adds little, wrk is not what limits the rate.
    for threads in sorted({1, 2} | {run.wrk_threads}):
        progress(f"uvicorn: wrk -t{threads} -c{CONNECTIONS} for {run.plan.duration} s")
        got = load(run, url, script, tmp, f"uvicorn-t{threads}", threads, lambda: [proc.pid])
        run.put("wrk_check", f"t{threads}", **got)
        if threads == run.wrk_threads:
            run.put("http", "uvicorn", **got)
    run.cleanup.now("uvicorn")
    r = run.res["http"]["uvicorn"]
    other = r["machine_cpu_cores"] - r["wrk_cpu_cores"] - r["server_cpu_cores"]
    run.notes.append(
        f"wrk -t{run.wrk_threads} against uvicorn used {r['wrk_cpu_cores']:.2f} cores "
        f"({r['wrk_cpu_cores'] / (os.cpu_count() or 1):.0%} of the machine), uvicorn "
        f"{r['server_cpu_cores']:.2f}; other processes {max(other, 0):.2f} cores"
        + (" (the machine was shared: its numbers are lower than on an idle one)"
           if other > 0.3 else "")
    )  # fmt: skip


def start_ray(run: Run) -> Any:
    import psutil
    import ray

    temp = run.cleanup.tmpdir("rcbep-ray-")

    def stop() -> None:
        run.watch.drop("Ray")
        ray.shutdown()

    # The one action that stops every descendant of this process: Ray's processes are all
    # of them while Ray is up (nothing else runs beside it; see stop_tree).
    run.cleanup.push("ray", stop)
    ray.init(
        num_cpus=ENGINES,
        include_dashboard=False,
        _temp_dir=str(temp),
        log_to_driver=False,
        logging_level="WARNING",
    )
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() in ("gcs_server", "raylet"):
                run.watch.add(f"Ray's {p.name()} (logs: {temp}/session_latest/logs)", p.pid)
    return ray


def http_ray_serve(run: Run, tmp: Path) -> None:
    progress("Ray Serve: starting Ray and the deployment")
    t0 = time.perf_counter()
    start_ray(run)
    from ray import serve
    from starlette.requests import Request

    port = free_port()
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    # Not followed by a reap of this process's descendants: Ray's own processes (raylet,
    # GCS, workers) are among them and stay for the tasks; ray.shutdown() reaps them.
    run.cleanup.push("ray serve", serve.shutdown, stops_processes=False)

    @serve.deployment(
        num_replicas=1, max_ongoing_requests=RC_CONCURRENCY, ray_actor_options={"num_cpus": 1}
    )
    class Bench:
        async def __call__(self, request: Request) -> dict:
            return handler(**(await request.json()))

    serve.run(Bench.bind(), name="bench", route_prefix=PATH)
    url = f"http://127.0.0.1:{port}{PATH}"
    wait_http(url, timeout=60)
    run.notes.append(
        f"Ray Serve: ray.init + serve.start + serve.run until the first answer took "
        f"{time.perf_counter() - t0:.1f} s"
    )

    def serve_pids() -> list[int]:  # the proxy and the replica: Ray's actors
        import psutil

        return [
            p.pid
            for p in psutil.Process().children(recursive=True)
            if any(n in " ".join(p.cmdline() or []) for n in ("ProxyActor", "ServeReplica"))
        ]

    progress(f"Ray Serve: wrk -t{run.wrk_threads} -c{CONNECTIONS} for {run.plan.duration} s")
    run.put(
        "http", "ray_serve", **load(run, url, wrk_script(tmp), tmp, "ray-serve", None, serve_pids)
    )
    progress("Ray Serve: stopping Serve (Ray stays for the tasks)")
    run.cleanup.now("ray serve")


# -- (2) fan-out peers ---------------------------------------------------------------


def timed_maps(run: Run, key: str, do: Callable[[list[int]], list[Any]]) -> None:
    xs = list(range(N_ITEMS))
    want = [f(x) for x in xs]
    got = do(xs[:200])  # warm-up: workers started, the function shipped
    if list(got) != want[:200]:
        raise BenchError(f"{key}: wrong results in the warm-up")
    times = []
    for _ in range(run.plan.fanout_reps):
        t0 = time.perf_counter()
        got = do(xs)
        times.append(time.perf_counter() - t0)
        if list(got) != want:
            raise BenchError(f"{key}: wrong results")
    run.samples[f"fanout.{key}"] = times
    wall = statistics.median(times)
    run.put("fanout", key, wall_s=wall, per_item_us=wall / N_ITEMS * 1e6, reps=len(times))


def fanout_ray(run: Run) -> None:
    import ray

    if not ray.is_initialized():
        start_ray(run)
    run.watch.check("Ray")
    f_remote = ray.remote(f)
    progress(f"Ray tasks: {N_ITEMS} tasks x{run.plan.fanout_reps}")
    timed_maps(run, "ray_tasks", lambda xs: ray.get([f_remote.remote(x) for x in xs]))


def ray_up() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized()


def fanout_ipyparallel(run: Run) -> None:
    import ipyparallel as ipp

    progress(f"ipyparallel: starting a cluster of {ENGINES} engines")
    cluster = ipp.Cluster(n=ENGINES, log_level=30)
    run.cleanup.push("ipyparallel cluster", cluster.stop_cluster_sync)
    rc = cluster.start_and_connect_sync()
    run.cleanup.push("ipyparallel client", rc.close, stops_processes=False)
    rc.wait_for_engines(ENGINES, timeout=120, interactive=False)
    view = rc.load_balanced_view()
    progress(f"ipyparallel: load-balanced map_sync of {N_ITEMS} x{run.plan.fanout_reps}")
    timed_maps(run, "ipyparallel", lambda xs: view.map_sync(f, xs))
    run.notes.append(
        "ipyparallel: `rc.load_balanced_view().map_sync(f, xs)` with the default chunksize "
        "(1: one task per item)"
    )
    progress("ipyparallel: stopping the cluster")
    run.cleanup.now("ipyparallel client")
    run.cleanup.now("ipyparallel cluster")


# -- remotecell ----------------------------------------------------------------------


@dataclass
class ControlPlane:
    data: Path
    proc: subprocess.Popen[bytes]
    endpoint: Any
    client: Any
    http_url: str
    token: str

    def url(self, name: str) -> str:
        return f"{self.http_url}/endpoints/{name}"

    def replicas(self, name: str) -> tuple[int, int]:
        """The deployment's replicas now: (all of them, those past "starting")."""
        import remotecell

        info = remotecell.Deployment.from_name(name, client=self.client).info()
        return len(info.replicas), sum(r.state != "starting" for r in info.replicas)


def rc_control_plane(run: Run, tag: str) -> ControlPlane:
    """A ``remotecell serve`` of its own for one part (local executor, HTTP on loopback).
    Everything is deployed and called through its ``client`` (``client=``), not the
    process's default client, which stays bound to the first control plane it found."""
    from remotecell.client import Client

    data = run.cleanup.tmpdir(f"rcbep-{tag}-")
    run.cleanup.markers.append(str(data))
    # --scaledown-window 1: runners left from anything but deployments go away quickly, so
    # that the runner count is the deployments' replicas.
    proc, endpoint = start_control_plane(data, ["--http", "127.0.0.1:0", "--scaledown-window", "1"])
    what = f"remotecell control plane {tag}"

    def stop() -> None:
        run.watch.drop(what)
        stop_tree(proc, what, timeout=15)
        kill_marked([str(data)])  # runners started after stop_tree looked

    run.cleanup.push(what, stop, stops_processes=False)
    run.watch.add(what, proc.pid)
    client = Client(endpoint)
    run.cleanup.push(what + " client", client.close, stops_processes=False)
    http_url = client.health().http_url
    if not http_url:
        raise BenchError(f"the control plane serves no HTTP (see {data / 'serve.log'})")
    token = (data / "token").read_text().strip()
    remotecell_env(data, endpoint.url, endpoint.token)
    return ControlPlane(data, proc, endpoint, client, http_url.rstrip("/"), token)


def rc_stop(run: Run, tag_cp: ControlPlane, tag: str) -> None:
    run.cleanup.now(f"remotecell control plane {tag} client")
    run.cleanup.now(f"remotecell control plane {tag}")
    remotecell_env()


def http_remotecell(run: Run, tmp: Path) -> None:
    import remotecell

    progress("remotecell: control plane + deployment `bench`")
    cp = rc_control_plane(run, "http")
    t0 = time.perf_counter()
    remotecell.deploy(
        handler, name="bench", concurrency=RC_CONCURRENCY, min_containers=1, max_containers=1,
        scaledown_window=60, client=cp.client,
    )  # fmt: skip
    ep = remotecell.Deployment.from_name("bench", client=cp.client)
    got = ep.remote(x=1)
    if got != EXPECTED:
        raise BenchError(f"remotecell ep.remote(x=1) returned {got!r}")
    wait_http(cp.url("bench"), cp.token, timeout=120)
    run.notes.append(
        f"remotecell: deploy until the first answer took {time.perf_counter() - t0:.1f} s"
    )
    progress(f"remotecell: wrk -t{run.wrk_threads} -c{CONNECTIONS} for {run.plan.duration} s")

    def pids() -> list[int]:  # the control plane (its HTTP gateway) and the replica
        import psutil

        found = [cp.proc.pid]
        for p in psutil.process_iter(["cmdline"]):
            if str(cp.data) in " ".join(p.info.get("cmdline") or []) and p.pid != cp.proc.pid:
                found.append(p.pid)
        return found

    script = wrk_script(tmp, cp.token)
    run.put(
        "http", "remotecell", **load(run, cp.url("bench"), script, tmp, "remotecell", None, pids)
    )
    rc_stop(run, cp, "http")


def fanout_remotecell(run: Run) -> None:
    import remotecell

    progress("remotecell: control plane for fan-out")
    cp = rc_control_plane(run, "fanout")
    options = dict(max_containers=ENGINES, concurrency=RC_CONCURRENCY, client=cp.client)
    fn = remotecell.function(**options)(f)
    progress(f"remotecell: function(...).map of {N_ITEMS} x{run.plan.fanout_reps}")
    timed_maps(run, "remotecell_function", lambda xs: list(fn.map(xs)))
    remotecell.deploy(
        f, name="bench-map", concurrency=RC_CONCURRENCY, min_containers=ENGINES,
        max_containers=ENGINES, scaledown_window=60, client=cp.client,
    )  # fmt: skip
    ep = remotecell.Deployment.from_name("bench-map", client=cp.client)
    progress(f"remotecell: Deployment.map of {N_ITEMS} x{run.plan.fanout_reps}")
    timed_maps(run, "remotecell_deployment", lambda xs: list(ep.map(xs)))
    rc_stop(run, cp, "fanout")


def wait_zero(cp: ControlPlane, name: str, timeout: float = 120.0) -> None:
    from bench_core import runner_processes

    wait_until(
        lambda: cp.replicas(name)[0] == 0 and not runner_processes(str(cp.data)),
        timeout,
        "the deployment to scale to zero",
    )
    time.sleep(0.5)  # the exited replica's resources settle


def cold_remotecell(run: Run) -> None:
    import remotecell

    cp = rc_control_plane(run, "cold")
    images: list[tuple[str, Any]] = [("default image", None)]
    images.append(
        ("cached venv image", remotecell.Image.debian_slim().pip_install(VENV_IMAGE_PACKAGE))
    )
    for i, (label, image) in enumerate(images):
        name = f"bench-cold-{i}"
        kwargs: dict[str, Any] = {"image": image} if image is not None else {}
        remotecell.deploy(
            handler, name=name, concurrency=RC_CONCURRENCY, min_containers=0, max_containers=1,
            scaledown_window=2, client=cp.client, **kwargs,
        )  # fmt: skip
        url = cp.url(name)
        # Untimed: the first call builds the image (if any) and starts the first replica.
        progress(f"remotecell: cold start, {label}: first call (builds the image)")
        if post(url, BODY, cp.token, timeout=600) != EXPECTED:
            raise BenchError(f"{url}: wrong answer")
        times = []
        for _ in range(run.plan.cold_reps):
            progress(f"remotecell: cold start, {label}: waiting for zero replicas")
            wait_zero(cp, name)
            t0 = time.perf_counter()
            got = post(url, BODY, cp.token, timeout=300)
            times.append(time.perf_counter() - t0)
            if got != EXPECTED:
                raise BenchError(f"{url}: answered {got!r}")
        run.samples[f"cold.{label}"] = times
        run.put("cold", label, p50_s=statistics.median(times), reps=len(times))
        wait_zero(cp, name)  # the next image's deployment starts from an idle control plane
    rc_stop(run, cp, "cold")


def scale_remotecell(run: Run, tmp: Path) -> None:
    import remotecell

    cp = rc_control_plane(run, "scale")
    remotecell.deploy(
        slow_handler, name="bench-scale", concurrency=SCALE_CONCURRENCY, min_containers=0,
        max_containers=2, scaledown_window=2, client=cp.client,
    )  # fmt: skip
    url = cp.url("bench-scale")
    if post(url, BODY, cp.token, timeout=300) != EXPECTED:  # untimed: the replica's first start
        raise BenchError(f"{url}: wrong answer")
    wait_zero(cp, "bench-scale")
    progress(
        f"remotecell: scale-up: wrk -c{CONNECTIONS} for {run.plan.scale_load_s} s against a "
        f"handler sleeping {SLOW_S * 1000:.0f} ms, concurrency {SCALE_CONCURRENCY}, max 2"
    )
    log = tmp / "scale.log"
    timeline: list[tuple[float, int, int]] = []  # (seconds, replicas, of them ready)
    t0 = time.perf_counter()
    proc = start_wrk(run, url, wrk_script(tmp, cp.token), run.plan.scale_load_s, log)
    while (usage := wrk_exited(proc, block=False)) is None:
        timeline.append((time.perf_counter() - t0, *cp.replicas("bench-scale")))
        time.sleep(0.05)
    load_end = time.perf_counter() - t0
    summary, _ = finish_wrk(proc, log, usage)
    progress("remotecell: load over; waiting for scale-down to zero")
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        n, ready = cp.replicas("bench-scale")
        timeline.append((time.perf_counter() - t0, n, ready))
        if n == 0:
            break
        time.sleep(0.05)

    def first(pred: Callable[[float, int, int], bool]) -> float | None:
        return next((t for t, n, ready in timeline if pred(t, n, ready)), None)

    # "up": a replica past "starting" (it takes calls); "down": the replica is gone.
    up1 = first(lambda t, n, ready: ready >= 1)
    up2 = first(lambda t, n, ready: ready >= 2)
    down1 = first(lambda t, n, ready: t >= load_end and n < 2)
    zero = first(lambda t, n, ready: t >= load_end and n == 0)
    run.put(
        "scale", "remotecell",
        first_replica_s=up1, second_replica_s=up2,
        one_left_after_load_s=None if down1 is None else down1 - load_end,
        zero_after_load_s=None if zero is None else zero - load_end,
        max_replicas=max(n for _, n, _ in timeline),
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000, p99_ms=summary["p99_us"] / 1000,
        errors=sum(summary[k] for k in ("connect", "read", "write", "status", "timeout")),
    )  # fmt: skip
    run.samples["scale.timeline"] = [v for row in timeline for v in (round(row[0], 3), *row[1:])]
    rc_stop(run, cp, "scale")


# -- the tables ----------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return fmt(a / b, 2) if a is not None and b else "n/a"


def tables(run: Run) -> str:
    res, out = run.res, []
    http = res.get("http", {})
    if http or "http" in run.res:
        out += [
            f"### (1) HTTP: POST {PATH} {json.dumps(BODY)}, wrk -t{run.wrk_threads} "
            f"-c{CONNECTIONS}, {run.plan.duration} s after {run.plan.warmup} s warm-up",
            "",
            "| system | requests/s | p50 ms | p99 ms | errors | wrk CPU (cores) "
            "| server CPU (cores) | machine CPU (cores) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (("uvicorn", "uvicorn (Starlette, 1 worker)"),
                           ("ray_serve", "Ray Serve (1 replica)"),
                           ("remotecell", "remotecell (1 replica)")):  # fmt: skip
            r = http.get(key)
            if r is None:
                out.append(f"| {label} | n/a | n/a | n/a | | | | |")
                continue
            out.append(
                f"| {label} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
                f"| {r['errors']} | {fmt(r['wrk_cpu_cores'], 2)} "
                f"| {fmt(r.get('server_cpu_cores'), 2)} | {fmt(r['machine_cpu_cores'], 2)} |"
            )
        rc, uv, rs = http.get("remotecell", {}), http.get("uvicorn", {}), http.get("ray_serve", {})
        out += [
            "",
            "| ratio | requests/s (above 1: remotecell serves more) | p50 (below 1: remotecell "
            "is faster) |",
            "|---|---:|---:|",
            f"| remotecell / uvicorn | {ratio(rc.get('rps'), uv.get('rps'))} "
            f"| {ratio(rc.get('p50_ms'), uv.get('p50_ms'))} |",
            f"| remotecell / Ray Serve | {ratio(rc.get('rps'), rs.get('rps'))} "
            f"| {ratio(rc.get('p50_ms'), rs.get('p50_ms'))} |",
            f"| Ray Serve / uvicorn | {ratio(rs.get('rps'), uv.get('rps'))} "
            f"| {ratio(rs.get('p50_ms'), uv.get('p50_ms'))} |",
            "",
        ]
    check = res.get("wrk_check", {})
    if check:
        out += [
            "Load generator check (wrk against uvicorn, the fastest server):",
            "",
            "| wrk threads | requests/s | p50 ms | wrk CPU (cores) | uvicorn CPU (cores) "
            "| machine CPU (cores, of " + str(os.cpu_count()) + ") |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for key in sorted(check):
            r = check[key]
            out.append(
                f"| {r['wrk_threads']} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} "
                f"| {fmt(r['wrk_cpu_cores'], 2)} | {fmt(r.get('server_cpu_cores'), 2)} "
                f"| {fmt(r['machine_cpu_cores'], 2)} |"
            )
        out.append("")
    fan = res.get("fanout", {})
    if fan:
        out += [
            f"### (2) Fan-out: f(x) = x * 2 over {N_ITEMS:,} inputs, {ENGINES} workers each",
            "",
            "| system | wall s | µs per item | remotecell function / this | remotecell "
            "deployment / this |",
            "|---|---:|---:|---:|---:|",
        ]
        rf = fan.get("remotecell_function", {}).get("wall_s")
        rd = fan.get("remotecell_deployment", {}).get("wall_s")
        for key, label in (("ray_tasks", "Ray tasks (`.remote` + `ray.get`)"),
                           ("ipyparallel", "ipyparallel load-balanced `map_sync`"),
                           ("remotecell_function", "remotecell `function(...).map`"),
                           ("remotecell_deployment", "remotecell `Deployment.map`")):  # fmt: skip
            r = fan.get(key)
            if r is None:
                out.append(f"| {label} | n/a | n/a | | |")
                continue
            out.append(
                f"| {label} | {fmt(r['wall_s'], 2)} | {fmt(r['per_item_us'], 0)} "
                f"| {ratio(rf, r['wall_s'])} | {ratio(rd, r['wall_s'])} |"
            )
        out.append("")
    cold = res.get("cold", {})
    if cold:
        out += ["### (3) remotecell cold start from zero replicas (HTTP request -> answer)", "",
                "| image | p50 s | samples |", "|---|---:|---:|"]  # fmt: skip
        for label, r in cold.items():
            out.append(f"| {label} | {fmt(r['p50_s'], 2)} | {r['reps']} |")
        out.append("")
    scale = res.get("scale", {}).get("remotecell")
    if scale:
        out += [
            "### (4) remotecell scale-up under load, scale-down to zero",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| load start -> first replica (s) | {fmt(scale['first_replica_s'], 2)} |",
            f"| load start -> second replica (s) | {fmt(scale['second_replica_s'], 2)} |",
            f"| load end -> back to 1 replica (s) | {fmt(scale['one_left_after_load_s'], 2)} |",
            f"| load end -> zero replicas (s; scaledown_window 2 s) "
            f"| {fmt(scale['zero_after_load_s'], 2)} |",
            f"| most replicas seen | {scale['max_replicas']} |",
            f"| requests/s under load (incl. the cold start) | {fmt(scale['rps'], 0)} |",
            f"| p50 / p99 ms | {fmt(scale['p50_ms'], 1)} / {fmt(scale['p99_ms'], 1)} |",
            f"| errors | {scale['errors']} |",
            "",
        ]
    return "\n".join(out)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for dist in ("remotecell", "ray", "ipyparallel", "uvicorn", "starlette", "uvloop",
                 "httptools"):  # fmt: skip
        with contextlib.suppress(Exception):
            out[dist] = version(dist)
    with contextlib.suppress(Exception):
        wrk = subprocess.run([shutil.which("wrk") or "wrk", "-v"], capture_output=True,
                             text=True, timeout=5)  # fmt: skip
        out["wrk"] = (wrk.stdout + wrk.stderr).split()[1]
    with contextlib.suppress(OSError):
        out["loadavg_1min"] = f"{os.getloadavg()[0]:.2f}"
    commit = source_commit()
    if commit:
        out["commit"] = commit
    return out


# -- main ----------------------------------------------------------------------------

PARTS = ("http", "fanout", "cold", "scale")
# Set in the process that measures (the supervisor's child): its logs directory.
WORKER_ENV = "RCBEP_WORKER_LOGS"
EXITED = "exited"  # a file the worker writes in its logs dir when it exits through Python
DIRS = "dirs"  # the worker's temporary directories, one a line


class RecordedCleanup(Cleanup):
    """Cleanup whose temporary directories are also listed in a file, so that the
    supervisor can stop what runs from them and remove them if this process dies."""

    def __init__(self, logs: Path) -> None:
        super().__init__()
        self._list = logs / DIRS

    def tmpdir(self, prefix: str) -> Path:
        path = super().tmpdir(prefix)
        with open(self._list, "a") as out:
            out.write(f"{path}\n")
        return path


def supervise(argv: list[str]) -> int:
    """Runs the benchmark in a child process and waits for it. A child that dies without
    exiting through Python (Ray's core worker calls _exit(1) when its GCS or raylet is gone;
    a signal; a crash) cannot say so itself: here the console gets what it died of (the
    end of its log), and what it left running is stopped and its directories removed."""
    logs = Path(tempfile.mkdtemp(prefix="rcbep-logs-", dir="/tmp"))
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        env={**os.environ, WORKER_ENV: str(logs)},
    )

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child too: it stops
    code = child.wait()
    try:
        if not (logs / EXITED).exists():
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            print(
                f"[bench] THE BENCHMARK PROCESS DIED ({how}) without exiting through Python: "
                f"no table. Something in it called _exit (Ray's core worker does, about a "
                f"minute after its GCS or raylet is gone) or it was killed. The [bench] lines "
                f"above say where it was; the end of its log:",
                file=sys.stderr,
            )
            with contextlib.suppress(OSError):
                tail = (logs / "bench.log").read_text(errors="replace")[-4000:]
                print(f"--- tail of the benchmark's log ---\n{tail}", file=sys.stderr)
            dirs = []
            with contextlib.suppress(OSError):
                dirs = [d for d in (logs / DIRS).read_text().splitlines() if d]
            if left := kill_marked_dirs(dirs):
                print(f"[bench] stopped {left} process(es) it left running", file=sys.stderr)
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return code if code >= 0 else 128 - code


def kill_marked_dirs(dirs: list[str]) -> int:
    """Kills the processes whose command line names one of ``dirs`` (uvicorn's app dir,
    control planes' and runners' data dirs, Ray's temp dir)."""
    import psutil

    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if proc.pid != os.getpid() and any(d in cmd for d in dirs):
            procs.append(proc)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    worker_logs = os.environ.get(WORKER_ENV)
    if not worker_logs:
        return supervise(argv)
    logs = Path(worker_logs)
    atexit.register(lambda: (logs / EXITED).touch())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument(
        "--only", choices=("all", "peers", "remotecell"), default="all",
        help="peers: uvicorn, Ray Serve, Ray tasks, ipyparallel; remotecell: its rows alone",
    )  # fmt: skip
    parser.add_argument(
        "--parts", default=",".join(PARTS),
        help="comma-separated, of http, fanout, cold, scale (cold and scale are remotecell's)",
    )  # fmt: skip
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {bad}: choose from {', '.join(PARTS)}")
    wrk = shutil.which("wrk")
    if not wrk and ("http" in parts or (args.only != "peers" and "scale" in parts)):
        parser.error("wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu)")
    plan = QUICK if args.quick else FULL
    peers, rc = args.only in ("all", "peers"), args.only in ("all", "remotecell")

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    cleanup = RecordedCleanup(logs)  # logs: the supervisor's, removed by it
    os.environ["IPYTHONDIR"] = str(cleanup.tmpdir("rcbep-ipython-"))
    run = Run(plan, cleanup, wrk or "wrk", args.wrk_threads)
    meta_before = versions()
    failed: list[str] = []

    def step(name: str, fn: Callable[[], None], required: bool) -> None:
        try:
            fn()
        except Exception as err:
            if required:
                raise
            # remotecell's rows run against a feature that may not be there yet: say why
            # they are missing, stop what they started, and go on with the rest.
            failed.append(f"{name}: {type(err).__name__}: {err}")
            progress(f"{name} failed: {type(err).__name__}: {err}")
            stop_all(cleanup)
            remotecell_env()

    try:
        with fds_to(logs / "bench.log"):
            try:
                # The peers first, then remotecell: Ray stays up from Serve to its tasks, and
                # nothing of it runs while remotecell is measured.
                if peers and "http" in parts:
                    step("uvicorn", lambda: http_uvicorn(run, logs), True)
                    step("Ray Serve", lambda: http_ray_serve(run, logs), True)
                if peers and "fanout" in parts:
                    step("Ray tasks", lambda: fanout_ray(run), True)
                if peers and ray_up():
                    progress("Ray: shutting down")
                    run.cleanup.now("ray")
                if peers and "fanout" in parts:
                    step("ipyparallel", lambda: fanout_ipyparallel(run), True)
                if rc and "http" in parts:
                    step("remotecell http", lambda: http_remotecell(run, logs), False)
                if rc and "fanout" in parts:
                    step("remotecell fan-out", lambda: fanout_remotecell(run), False)
                if rc and "cold" in parts:
                    step("remotecell cold start", lambda: cold_remotecell(run), False)
                if rc and "scale" in parts:
                    step("remotecell scale", lambda: scale_remotecell(run, logs), False)
            finally:
                stop_all(cleanup)
    except BaseException:
        with contextlib.suppress(OSError):
            tail = (logs / "bench.log").read_text(errors="replace")[-3000:]
            print(f"--- tail of the benchmark's log ---\n{tail}", file=sys.stderr)
        raise
    finally:
        cleanup.run()  # what is left (nothing, unless stopping failed) and the temporary dirs

    meta = versions()
    meta["loadavg_1min"] = (
        f"{meta_before.get('loadavg_1min', '?')} at start, {meta.get('loadavg_1min', '?')} at end"
    )
    print(
        f"Endpoints and fan-out, {'quick' if args.quick else 'full'} run, --only {args.only}, "
        f"parts {','.join(parts)}; " + ", ".join(f"{k} {v}" for k, v in meta.items())
    )
    print()
    print(tables(run))
    for note in run.notes:
        print(f"* {note}")
    for fail in failed:
        print(f"* not measured: {textwrap.shorten(fail, 400)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"meta": meta, "plan": plan.__dict__, "results": run.res,
                 "notes": run.notes, "failed": failed, "samples": run.samples},
                indent=2,
            )
            + "\n"
        )  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
