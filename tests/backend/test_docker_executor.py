"""The docker executor, against a real Docker engine (see docker_engine.py).

Runners run in containers of an image the docker builder made (the remotecell runtime
and nothing else) and connect to a real control plane, over a Unix socket or loopback TCP.
The control plane starts its own runners with the local executor; the runners here are
started by the docker executor directly, so the control plane sees them as runners it
adopted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from docker_engine import remove_image, require_engine
from docker_engine import runtime_image as build_runtime_image
from support import ControlPlane, short_tmpdir, wait_until

from remotecell.backend.executors.base import RunnerExit, RunnerHandle, RunnerLaunch
from remotecell.backend.executors.docker import RUNNER_ID_LABEL, DockerExecutor
from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.images.docker import VENV_PYTHON
from remotecell.contract.resources import GPUChoice

T = TypeVar("T")

pytestmark = pytest.mark.timeout(600)

#: Run inside a runner's container: what its client makes of the control plane.
PROBE = (
    "import sys\n"
    "from remotecell.client import Client, Endpoint\n"
    "from remotecell.client._blobs import shared_blob_dir\n"
    "client = Client(Endpoint(sys.argv[1], sys.argv[2]))\n"
    "print(shared_blob_dir(client.health()))\n"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    client = require_engine()
    yield client
    client.close()


@pytest.fixture(scope="module")
def runtime_image(engine: Any) -> Iterator[BuiltImage]:
    built = build_runtime_image()
    yield built
    remove_image(engine, built.ref, keep_layers=True)


@pytest.fixture
def make_executor(tmp_path: Path) -> Iterator[Any]:
    made: list[DockerExecutor] = []

    def make(**options: Any) -> DockerExecutor:
        executor = DockerExecutor(tmp_path / "logs", **options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        run(executor.close())


def containers_of(engine: Any, runner_id: str) -> list[Any]:
    return list(
        engine.containers.list(all=True, filters={"label": f"{RUNNER_ID_LABEL}={runner_id}"})
    )


def new_runner_id() -> str:
    return f"r-docker-{secrets.token_hex(4)}"


def tcp_address(cp: ControlPlane) -> str:
    urls = json.loads((cp.data_dir / "server.json").read_text())["urls"]
    return next(url for url in urls if url.startswith("127.0.0.1:"))


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_runner_in_a_container_connects_shares_blobs_and_dies_by_sigkill(
    transport: str,
    make_control_plane: Any,
    make_executor: Any,
    runtime_image: BuiltImage,
    engine: Any,
) -> None:
    cp: ControlPlane = (
        make_control_plane("--listen", "127.0.0.1:0")
        if transport == "tcp"
        else make_control_plane()
    )
    assert cp.endpoint is not None
    url = tcp_address(cp) if transport == "tcp" else cp.socket
    client = cp.client()
    before = client.health().runners
    blob_dir = cp.data_dir / "blobs"
    executor = make_executor(blob_dir=blob_dir)
    runner_id = new_runner_id()
    # Its own credential, as the control plane mints one for each runner it starts.
    from remotecell.backend.server import local_user
    from remotecell.backend.state.credentials import CredentialStore

    credentials = CredentialStore(cp.data_dir / "state.sqlite3")
    token = credentials.mint_runner(runner_id, local_user(), frozenset())
    credentials.close()

    handle = run(
        executor.start(
            RunnerLaunch(runner_id, url, token, built=runtime_image, cpu=0.5, memory_mb=512)
        )
    )
    assert handle.runner_id == runner_id
    (container,) = containers_of(engine, runner_id)
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 512 * 2**20
    assert container.attrs["Config"]["Cmd"][:2] == [VENV_PYTHON, "-m"]

    # The control plane counts it, or (when the process id the runner reports from its
    # container means nothing to it) lets it go again and says so in its log.
    wait_until(
        lambda: client.health().runners > before or f"runner {runner_id} " in cp.log.read_text(),
        timeout=60,
        what="the runner in the container to connect",
    )

    # Inside the container, the control plane's blob directory is the same directory.
    code, output = container.exec_run([VENV_PYTHON, "-c", PROBE, url, cp.endpoint.token])
    assert code == 0, output
    assert output.decode().strip() == str(blob_dir)

    run(executor.kill(handle))
    ended = run(executor.wait(handle))
    assert ended == RunnerExit(137)
    assert "SIGKILL" in ended.describe()
    assert containers_of(engine, runner_id) == []


def test_an_image_the_engine_lacks_fails_the_start(make_executor: Any, engine: Any) -> None:
    executor = make_executor()
    missing = BuiltImage("nope", "docker", VENV_PYTHON, ref="remotecell-image:no-such-image")
    runner_id = new_runner_id()
    with pytest.raises(RuntimeError, match="no image remotecell-image:no-such-image"):
        run(executor.start(RunnerLaunch(runner_id, "127.0.0.1:1", "t", built=missing)))
    assert containers_of(engine, runner_id) == []


def test_a_runner_that_cannot_run_leaves_its_log(
    make_executor: Any, runtime_image: BuiltImage, engine: Any
) -> None:
    executor = make_executor()
    broken = BuiltImage(
        runtime_image.image_id, "docker", "/opt/remotecell/no-such-python", ref=runtime_image.ref
    )
    runner_id = new_runner_id()
    handle = run(executor.start(RunnerLaunch(runner_id, "127.0.0.1:1", "t", built=broken)))
    ended = run(executor.wait(handle))
    assert ended.returncode not in (0, None)
    assert "no-such-python" in executor.log_tail(handle)
    assert containers_of(engine, runner_id) == []


def test_a_gpu_request_the_engine_cannot_meet_fails_the_start(
    make_executor: Any, runtime_image: BuiltImage, engine: Any
) -> None:
    if "nvidia" in (engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has an NVIDIA runtime: a GPU request may well be met here")
    executor = make_executor()
    runner_id = new_runner_id()
    launch = RunnerLaunch(
        runner_id,
        "127.0.0.1:1",
        "t",
        built=runtime_image,
        gpu=GPUChoice("H100"),
        gpu_uuids=("GPU-0",),
    )
    with pytest.raises(RuntimeError, match=f"could not start runner {runner_id}'s container"):
        run(executor.start(launch))
    assert containers_of(engine, runner_id) == []


def test_close_removes_its_containers_and_another_executor_adopts_a_runner(
    make_executor: Any, runtime_image: BuiltImage, engine: Any
) -> None:
    # Nobody listens on this socket: the runners keep trying to connect until they end.
    nowhere = short_tmpdir()
    try:
        check_close_and_adoption(
            make_executor, runtime_image, engine, f"unix:{nowhere / 'cp.sock'}"
        )
    finally:
        shutil.rmtree(nowhere, ignore_errors=True)


def check_close_and_adoption(
    make_executor: Any, runtime_image: BuiltImage, engine: Any, url: str
) -> None:
    first = make_executor()
    ids = [new_runner_id() for _ in range(3)]
    handles = [
        run(first.start(RunnerLaunch(runner_id, url, "t", built=runtime_image)))
        for runner_id in ids
    ]
    for runner_id in ids:
        (container,) = containers_of(engine, runner_id)
        assert container.status == "running"

    # After a control-plane restart, a new executor knows the runner by its id only.
    second = make_executor()
    adopted = RunnerHandle(ids[0], 0)
    run(second.kill(adopted))
    assert run(second.wait(adopted)) == RunnerExit(137)
    assert containers_of(engine, ids[0]) == []
    assert run(second.wait(RunnerHandle(new_runner_id(), 0))) == RunnerExit(None)

    run(first.close())
    for runner_id in ids:
        assert containers_of(engine, runner_id) == []
    assert run(first.wait(handles[1])) == RunnerExit(None)
