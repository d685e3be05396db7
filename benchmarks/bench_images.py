"""Images: remotecell's venv and docker builders against Ray's ``runtime_env``, side by side.

Issue 3's benchmark, in one run, one part after the other:

1. a cold build of an image with one small package (uv's cache warm) with the venv
   builder, against Ray's first task with ``runtime_env={"pip": [PACKAGE]}`` on a fresh
   local Ray;
2. a cache hit of that image, against Ray's next task with the same ``runtime_env``;
3. the docker builder's cold build of the same image, and its cache hit;
4. a warm trivial cell on a runner in a container (``remotecell serve --executor docker``)
   against one on a local runner (``remotecell serve``).

Prints a markdown table of milliseconds with a ratio column and the issue's targets. See
benchmarks/README.md for what is cold and what is warm in each row.

    python benchmarks/bench_images.py [--quick] [--json PATH]

Needs a Docker engine with the base image ``remotecell-base:bookworm``
(``scripts/docker_setup.sh``), Ray and the docker SDK (``pip install -e '.[bench,docker]'``).
Everything it starts (Ray, control planes, runners, containers) is stopped at the end, also
on an error or SIGTERM, and what it built (venvs, docker images and their own layers) is
removed; all of it logs to files under temporary directories in /tmp, never to this
process's stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ray reads these when it is imported and started (benchmarks/README.md, TESTING.md): no
# token auth (Ray turns it on once ~/.ray/auth_token exists), no usage reporting, and no
# empty CUDA_VISIBLE_DEVICES.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("CUDA_VISIBLE_DEVICES", None)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (
    BenchError,
    Cleanup,
    fmt,
    kill_marked,
    p50,
    p90,
    progress,
    reap,
    source_commit,
    wait_until,
)

PACKAGE = "tabulate==0.9.0"  # small, pure Python, no dependencies
TRIVIAL = "1+1"
HIT_TARGET_MS = 20.0
COLD_TARGET_MS = 1000.0
DOCKER_WARM_TARGET = 1.5
HOLD_REPOSITORY = (
    "remotecell-bench-hold"  # a warm cell on a docker runner within 1.5x of a local one
)


@dataclass(frozen=True)
class Plan:
    venv_cold: int
    hits: int
    ray_inits: int
    ray_next: int
    docker_cold: int
    docker_hits: int
    warmup: int
    warm_iters: int


FULL = Plan(
    venv_cold=5,
    hits=200,
    ray_inits=3,
    ray_next=20,
    docker_cold=3,
    docker_hits=50,
    warmup=20,
    warm_iters=200,
)
QUICK = Plan(
    venv_cold=2,
    hits=30,
    ray_inits=1,
    ray_next=5,
    docker_cold=1,
    docker_hits=10,
    warmup=5,
    warm_iters=30,
)


@dataclass
class Results:
    ms: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, key: str, values: list[float]) -> list[float]:
        self.samples.setdefault(key, []).extend(values)
        return values


def the_image(label: str) -> Any:
    """The benchmark's image: an ``env`` step first, so each label is a new image id whose
    later steps (the package's install) no cache holds; then the one small package."""
    from remotecell.client.image import Image

    return Image.debian_slim().env({"RCB_SAMPLE": label}).pip_install(PACKAGE)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# -- (1), (2): the venv builder ------------------------------------------------------


async def bench_venv(plan: Plan, cleanup: Cleanup, run_id: str, res: Results) -> None:
    from remotecell.backend.images.cache import images_dir, open_cache
    from remotecell.backend.images.venv import VenvBuilder

    data = cleanup.tmpdir("rcbimg-venv-")
    # The control plane's own cache for a data directory, with the venv builder only; the
    # runtime (remotecell's dependencies, once per Python version) lives in it too.
    cache = open_cache(data, {"venv": VenvBuilder(images_dir(data) / "venv")})
    try:
        progress("venv builder: warm-up (the runtime; uv's cache for the package)")
        spec, blobs = the_image(f"{run_id}-warm").to_spec()
        start = time.perf_counter()
        await cache.get(spec, blobs.__getitem__)
        res.notes.append(
            f"venv warm-up (not in the table): the first image with a new runtime took "
            f"{ms_since(start):.0f} ms (remotecell's runtime installed once per Python version)"
        )

        progress(f"venv builder: cold builds x{plan.venv_cold}")
        cold, built = [], None
        for i in range(plan.venv_cold):
            spec, blobs = the_image(f"{run_id}-cold-{i}").to_spec()
            start = time.perf_counter()
            built = await cache.get(spec, blobs.__getitem__)
            cold.append(ms_since(start))
        assert built is not None
        check = subprocess.run(
            [built.python, "-c", "import tabulate; print(tabulate.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.stdout.strip() != PACKAGE.split("==")[1]:
            raise BenchError(f"the venv image has no {PACKAGE}: {check.stdout}{check.stderr}")
        res.ms["venv_cold"] = p50(res.record("venv.cold", cold))

        progress(f"venv builder: cache hits x{plan.hits}")
        image = the_image(f"{run_id}-cold-0")
        spec, blobs = image.to_spec()
        hits, specs = [], []
        for _ in range(plan.hits):
            start = time.perf_counter()
            await cache.get(spec, blobs.__getitem__)
            hits.append(ms_since(start))
            start = time.perf_counter()
            image.to_spec()
            specs.append(ms_since(start))
        res.ms["venv_hit"] = p50(res.record("venv.hit", hits))
        res.ms["venv_hit_p90"] = p90(hits)
        res.record("venv.to_spec", specs)
        res.notes.append(
            f"venv cache hit: `ImageCache.get` p50 {res.ms['venv_hit']:.2f} ms, p90 "
            f"{p90(hits):.2f} ms; the notebook's `Image.to_spec()` (hashing the spec) adds "
            f"{p50(specs):.2f} ms p50"
        )
    finally:
        await cache.close()


# -- (1), (2): Ray's runtime_env -----------------------------------------------------


def bench_ray(plan: Plan, cleanup: Cleanup, res: Results) -> None:
    import ray

    runtime_env = {"pip": [PACKAGE]}

    @ray.remote
    def probe() -> tuple[str | None, str]:
        try:
            import tabulate

            version: str | None = tabulate.__version__
        except ImportError:
            version = None
        return version, sys.executable

    # Each call on a new worker: the env is cached, the worker is not.
    probe_new_worker = ray.remote(max_calls=1)(probe._function)

    first, following, new_worker, inits, plain = [], [], [], [], []
    for n in range(plan.ray_inits):
        progress(f"ray: fresh local Ray {n + 1}/{plan.ray_inits}, first task with runtime_env")
        # A fresh temp dir: Ray keeps runtime_env environments under its session directory,
        # so each Ray starts with none. pip's own cache is not used: Ray installs with
        # --no-cache-dir (its default).
        temp = cleanup.tmpdir("rcbray-")
        cleanup.push(f"ray {n}", ray.shutdown)
        start = time.perf_counter()
        ray.init(
            num_cpus=1,
            include_dashboard=False,
            _temp_dir=str(temp),
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        inits.append(ms_since(start))
        # A task without runtime_env first: Ray's own start-up (a worker, the function's
        # export) is not counted in the first task with the env.
        start = time.perf_counter()
        version, _ = ray.get(probe.remote(), timeout=120)
        plain.append(ms_since(start))
        if version is not None:
            raise BenchError(f"{PACKAGE} is installed in Ray's own environment; use another")

        start = time.perf_counter()
        version, python = ray.get(probe.options(runtime_env=runtime_env).remote(), timeout=600)
        first.append(ms_since(start))
        if version != PACKAGE.split("==")[1] or str(temp) not in python:
            raise BenchError(f"Ray's runtime_env task saw {version!r} in {python}")
        for _ in range(plan.ray_next):
            start = time.perf_counter()
            ray.get(probe.options(runtime_env=runtime_env).remote(), timeout=120)
            following.append(ms_since(start))
        # The first call may run on the warm worker (which then exits); the second
        # needs a new worker in the cached env.
        ray.get(probe_new_worker.options(runtime_env=runtime_env).remote(), timeout=120)
        start = time.perf_counter()
        ray.get(probe_new_worker.options(runtime_env=runtime_env).remote(), timeout=120)
        new_worker.append(ms_since(start))
        cleanup.now(f"ray {n}")

    res.ms["ray_first"] = p50(res.record("ray.first", first))
    res.ms["ray_next"] = p50(res.record("ray.next", following))
    res.record("ray.init", inits)
    res.record("ray.plain_first", plain)
    res.record("ray.new_worker_cached_env", new_worker)
    res.notes.append(
        f"Ray: `ray.init` took {p50(inits):.0f} ms and a first task without runtime_env "
        f"{p50(plain):.0f} ms (p50 of {len(inits)}; neither counted); a task with the cached "
        f"env on a new worker (`max_calls=1`) took {p50(new_worker):.0f} ms"
    )


# -- (3): the docker builder ---------------------------------------------------------


def docker_client() -> Any:
    from remotecell.backend import _docker

    return _docker.connect()


async def bench_docker_builder(plan: Plan, cleanup: Cleanup, run_id: str, res: Results) -> None:
    from remotecell.backend.images.cache import open_cache
    from remotecell.backend.images.docker import VENV_PYTHON, DockerBuilder, image_tag
    from remotecell.contract.errors import ImageBuildError

    client = docker_client()
    cleanup.push("docker client", client.close, stops_processes=False)
    tags: list[str] = []

    holder: list[str] = []

    def remove_images() -> None:
        # Only what this benchmark tagged, with the layers no other image uses; the shared
        # layers' hold last, so they go only if no other image uses them either.
        for tag in [*tags, *holder]:
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=tag not in holder)

    cleanup.push("docker builder images", remove_images, stops_processes=False)
    data = cleanup.tmpdir("rcbimg-docker-")
    cache = open_cache(data, {"docker": DockerBuilder()})
    try:
        progress("docker builder: warm-up (the shared layers: base, venv, runtime deps)")
        spec, blobs = the_image(f"{run_id}-warm").to_spec()
        tags.append(image_tag(spec.id))
        start = time.perf_counter()
        for attempt in (1, 2):
            try:
                built = await cache.get(spec, blobs.__getitem__)
                break
            except ImageBuildError as err:
                # Another user of the engine removed a cached layer this build was using.
                if attempt == 2 or "no such file or directory" not in str(err):
                    raise
                res.notes.append(f"docker warm-up retried: {str(err).splitlines()[0]}")
        res.notes.append(
            f"docker warm-up (not in the table): the first image took {ms_since(start):.0f} ms "
            "(its shared layers were built now unless the engine had them already)"
        )
        # The shared layers (base, venv, runtime dependencies), tagged for the run: an
        # image another user of the engine removes meanwhile cannot take them away.
        holder.extend(hold_shared_layers(client, built.ref, run_id))
        if not holder:
            progress("docker builder: could not find the shared layers to hold them")

        progress(f"docker builder: cold builds x{plan.docker_cold}")
        cold, built = [], None
        for i in range(plan.docker_cold):
            spec, blobs = the_image(f"{run_id}-cold-{i}").to_spec()
            tags.append(image_tag(spec.id))
            start = time.perf_counter()
            built = await cache.get(spec, blobs.__getitem__)
            cold.append(ms_since(start))
        assert built is not None
        out = client.containers.run(
            built.ref,
            [VENV_PYTHON, "-c", "import tabulate; print(tabulate.__version__)"],
            network_mode="host",
            remove=True,
        )
        if out.decode().strip() != PACKAGE.split("==")[1]:
            raise BenchError(f"the docker image has no {PACKAGE}: {out!r}")
        res.ms["docker_cold"] = p50(res.record("docker.cold", cold))

        progress(f"docker builder: cache hits x{plan.docker_hits}")
        spec, blobs = the_image(f"{run_id}-cold-0").to_spec()
        hits = []
        for _ in range(plan.docker_hits):
            start = time.perf_counter()
            await cache.get(spec, blobs.__getitem__)
            hits.append(ms_since(start))
        res.ms["docker_hit"] = p50(res.record("docker.hit", hits))
        res.notes.append(
            f"docker cache hit: `ImageCache.get` p50 {res.ms['docker_hit']:.2f} ms, p90 "
            f"{p90(hits):.2f} ms (it asks the engine whether the tag still exists)"
        )
    finally:
        await cache.close()
    # The images and the hold are removed at the end: (4) builds on the shared layers too.


def hold_shared_layers(client: Any, ref: str, run_id: str) -> list[str]:
    """Tags the layer under the image's first own step (its ``ENV RCB_SAMPLE``)."""
    image = client.api.inspect_image(ref)
    while image.get("Parent"):
        command = " ".join((image.get("ContainerConfig") or {}).get("Cmd") or [])
        if "ENV RCB_SAMPLE=" in command:
            client.api.tag(image["Parent"], HOLD_REPOSITORY, run_id)
            return [f"{HOLD_REPOSITORY}:{run_id}"]
        image = client.api.inspect_image(image["Parent"])
    return []


# -- (4): warm cells on a docker runner and on a local runner ------------------------


@dataclass
class Served:
    name: str
    data: Path
    proc: subprocess.Popen[bytes]
    client: Any


def start_serve(cleanup: Cleanup, name: str, args: list[str]) -> Served:
    from remotecell.client import Client
    from remotecell.client.config import read_endpoint_file

    data = cleanup.tmpdir(f"rcbimg-{name}-")
    cleanup.markers.append(str(data))
    # The socket in a directory of its own: the docker executor mounts its directory
    # into runner containers.
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
                f"unix:{data / 'run' / 'cp.sock'}",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )

    def stop() -> None:
        # This control plane's processes only (the other one may still run): the serve
        # process, its runner template and local runners, then what is marked with its
        # data directory (runners outlive their control plane by design) and containers.
        import psutil

        family: list[Any] = []
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        left = reap(family)
        if left:
            progress(f"cleanup: {name} control plane: killed {left} process(es) that did not exit")
        remove_runner_containers(data)
        kill_marked([str(data)])

    cleanup.push(f"{name} control plane", stop, stops_processes=False)

    def ready() -> Any:
        if proc.poll() is not None:
            raise BenchError(f"`remotecell serve` exited ({proc.returncode}); see {data}/serve.log")
        found = read_endpoint_file(data)
        return found if found and found[1] == proc.pid else None

    endpoint = wait_until(ready, 60, f"the {name} control plane to start")[0]
    client = Client(endpoint)
    cleanup.push(f"{name} client", client.close, stops_processes=False)
    client.health(wait_for_ready=True)
    return Served(name, data, proc, client)


def remove_runner_containers(data: Path) -> None:
    """Runner containers of the control plane whose data directory is ``data`` (they mount
    its socket directory and blob directory), if any are left."""
    from remotecell.backend.executors.docker import RUNNER_ID_LABEL

    with contextlib.suppress(Exception):
        client = docker_client()
        try:
            for container in client.containers.list(all=True, filters={"label": RUNNER_ID_LABEL}):
                mounts = container.attrs.get("Mounts") or []
                if any(str(m.get("Source", "")).startswith(str(data)) for m in mounts):
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
        finally:
            client.close()


def run_cell(client: Any, code: str, timeout: float = 60.0) -> None:
    from remotecell._proto import pb

    stream = client.submit(pb.JobSpec(code=code))
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = stream.next(left) if left > 0 else None
            except StopIteration:
                raise BenchError("the event stream ended before the cell finished") from None
            if event is None:
                raise BenchError(f"the cell did not finish within {timeout:g} s")
            if event.HasField("finished"):
                if event.finished.state != pb.SUCCEEDED:
                    raise BenchError(f"the cell failed: {event.finished.message}")
                return
    finally:
        stream.close()


def bench_warm_cells(plan: Plan, cleanup: Cleanup, res: Results) -> None:
    from remotecell.backend.images.docker import image_tag
    from remotecell.client.image import Image

    default_tag = image_tag(Image.debian_slim().to_spec()[0].id)
    client = docker_client()
    try:
        client.images.get(default_tag)
        had_default = True
    except Exception:
        had_default = False
    finally:
        client.close()

    def remove_default_image() -> None:
        # Only if this benchmark built it; another user of the engine may hold it.
        if not had_default:
            with contextlib.suppress(Exception):
                engine = docker_client()
                try:
                    engine.images.remove(default_tag)
                finally:
                    engine.close()

    cleanup.push("the default docker image", remove_default_image, stops_processes=False)

    systems = []
    for name, args in (("docker", ["--executor", "docker"]), ("local", [])):
        progress(f"{name} control plane: start, first cell")
        served = start_serve(cleanup, name, args)
        start = time.perf_counter()
        run_cell(served.client, TRIVIAL, timeout=900)
        first = ms_since(start)
        res.record(f"{name}.first_cell", [first])
        res.notes.append(
            f"{name} control plane: its first cell took {first:.0f} ms "
            + (
                "(the default debian_slim image built, on layers the engine has cached "
                "(the runtime's dependencies from part 3), then a runner container started)"
                if name == "docker"
                else "(a local runner started)"
            )
        )
        for _ in range(plan.warmup):
            run_cell(served.client, TRIVIAL)
        systems.append(served)

    # Interleaved blocks, both control planes idle but for the cell timed: drift in the
    # machine's load (it is shared) falls on both alike.
    progress(f"warm cells x{plan.warm_iters} on each, interleaved")
    times: dict[str, list[float]] = {s.name: [] for s in systems}
    block = 10
    for offset in range(0, plan.warm_iters, block):
        for served in systems:
            for _ in range(min(block, plan.warm_iters - offset)):
                start = time.perf_counter()
                run_cell(served.client, TRIVIAL)
                times[served.name].append(ms_since(start))
    for served in systems:
        values = res.record(f"{served.name}.warm", times[served.name])
        res.ms[f"{served.name}_warm_p50"] = p50(values)
        res.ms[f"{served.name}_warm_p90"] = p90(values)
        health = served.client.health()
        res.notes.append(f"{served.name} control plane: {health.runners} runner(s) at the end")
    for served in systems:
        cleanup.now(f"{served.name} client")
        cleanup.now(f"{served.name} control plane")
    cleanup.now("the default docker image")


# -- the table -----------------------------------------------------------------------


def target(value: float | None, limit: float, unit: str = "ms") -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"≤ {limit:g}x: {'met' if value <= limit else 'NOT met'}"
    return f"≤ {limit:g} ms: {'met' if value <= limit else 'NOT met'}"


def build_rows(ms: dict[str, float]) -> list[dict[str, Any]]:
    def ratio(a: str, b: str) -> float | None:
        return ms[a] / ms[b] if a in ms and ms.get(b) else None

    first = "Ray: first task, `runtime_env` pip, fresh Ray"
    following = "Ray: next task, same `runtime_env` (p50)"
    rows = [
        ("venv_cold", "(1) cold build, venv builder (uv's cache warm)", "ray_first", first),
        ("venv_hit", "(2) cache hit, venv builder (p50)", "ray_next", following),
        (
            "docker_cold",
            "(3) cold build, docker builder (shared layers cached)",
            "ray_first",
            first,
        ),
        ("docker_hit", "(3) cache hit, docker builder (p50)", "ray_next", following),
        ("docker_warm_p50", "(4) warm cell, docker runner, p50", "local_warm_p50", "local runner"),
        ("docker_warm_p90", "(4) warm cell, docker runner, p90", "local_warm_p90", "local runner"),
    ]
    targets = {
        "venv_cold": target(ms.get("venv_cold"), COLD_TARGET_MS),
        "venv_hit": target(ms.get("venv_hit"), HIT_TARGET_MS),
        "docker_cold": "-",
        "docker_hit": target(ms.get("docker_hit"), HIT_TARGET_MS),
        "docker_warm_p50": target(
            ratio("docker_warm_p50", "local_warm_p50"), DOCKER_WARM_TARGET, "x"
        ),
        "docker_warm_p90": "-",
    }
    return [
        {
            "key": key,
            "metric": label,
            "remotecell_ms": ms.get(key),
            "peer": peer_label,
            "peer_ms": ms.get(peer),
            "ratio": ratio(key, peer),
            "target": targets[key],
        }
        for key, label, peer, peer_label in rows
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| metric (ms) | remotecell | compared with | that | ratio | target (issue 3) |",
        "|---|---:|---|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['metric']} | {fmt(row['remotecell_ms'])} | {row['peer']} "
            f"| {fmt(row['peer_ms'])} | {fmt(row['ratio'], ratio=True)} | {row['target']} |"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for dist in ("remotecell", "ray", "docker", "grpcio"):
        with contextlib.suppress(Exception):
            out[dist] = version(dist)
    with contextlib.suppress(Exception):
        from remotecell.backend.images.venv import _find_uv

        out["uv"] = subprocess.run(
            [_find_uv(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()[1]
    with contextlib.suppress(Exception):
        client = docker_client()
        try:
            out["docker engine"] = client.version()["Version"]
        finally:
            client.close()
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
    run_id = secrets.token_hex(4)  # new image ids (and docker layers) on every run
    load_before = versions().get("loadavg_1min", "?")
    res = Results()
    try:
        asyncio.run(bench_venv(plan, cleanup, run_id, res))
        bench_ray(plan, cleanup, res)
        asyncio.run(bench_docker_builder(plan, cleanup, run_id, res))
        bench_warm_cells(plan, cleanup, res)
    finally:
        cleanup.run()

    rows = build_rows(res.ms)
    meta = versions()
    meta["loadavg_1min"] = f"{load_before} at start, {meta.get('loadavg_1min', '?')} at end"
    print(
        f"remotecell images vs Ray runtime_env, {'quick' if args.quick else 'full'} run, "
        f"package {PACKAGE}; " + ", ".join(f"{k} {v}" for k, v in meta.items())
    )
    print()
    print(table(rows))
    print()
    for note in res.notes:
        print(f"* {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "plan": plan.__dict__,
                    "rows": rows,
                    "notes": res.notes,
                    "samples_ms": res.samples,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    tempfile.tempdir = "/tmp"  # short paths: Unix sockets are limited to ~108 bytes
    sys.exit(main())
