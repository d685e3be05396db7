"""Runners in Docker containers: one container per runner, of the runner's built image.

Containers use the host's network, so a runner reaches the control plane at the address
it listens on: a loopback TCP address as it is, a Unix socket through its directory,
bind-mounted at the same path. The control plane's blob directory is bind-mounted at its
own path too, so runners read and write blobs there directly, as local runners do.

A container is removed once it has exited and its exit code and log have been read; its
log stays in ``log_dir`` for the controller's error messages. Containers carry the label
``remotecell.runner-id``, by which a restarted control plane finds a runner it adopts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from remotecell.backend import _docker
from remotecell.backend.executors.base import Executor, RunnerExit, RunnerHandle, RunnerLaunch
from remotecell.backend.images.docker import VENV_PYTHON, image_tag
from remotecell.backend.runner import launch as runner_launch
from remotecell.backend.volumes.mounts import RunnerMount

RUNNER_ID_LABEL = "remotecell.runner-id"
IMAGE_ID_LABEL = "remotecell.runner-image"

log = logging.getLogger("remotecell.executors.docker")


class DockerExecutor(_docker.EngineClient, Executor):
    """Starts each runner in a container of its image, with ``network_mode="host"``.

    Args:
        log_dir: where a runner's log is kept once its container is gone
            (``<runner_id>.log``).
        default_image: the image tag for launches that name no image.
        blob_dir: the control plane's local blob directory, bind-mounted read-write at
            the same path; None: runners move blobs over gRPC.
        ca_bundle: a CA bundle runners should trust (pip in a cell, downloads), mounted
            read-only at its own path and named by ``PIP_CERT``, ``SSL_CERT_FILE`` etc.;
            None: the one this process is told to use, if any; "": none.
        env: variables every runner gets (pip settings such as ``PIP_INDEX_URL``).
        mounts: more host directories bind-mounted read-write at the same path.
        volume_cache: where runners' copies of volumes in a remote store are kept on
            the host while they run; None: a directory in the temporary directory.
    """

    name = "docker"

    def __init__(
        self,
        log_dir: Path,
        *,
        default_image: str = "",
        blob_dir: Path | None = None,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Iterable[str] = (),
        volume_cache: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.volume_cache = volume_cache or Path(tempfile.gettempdir()) / "remotecell-volumes"
        self.default_image = default_image
        self.blob_dir = blob_dir
        self.ca_bundle = _docker.ca_bundle(ca_bundle)
        self.env = dict(env or {})
        self.mounts = [str(Path(m).absolute()) for m in mounts]
        self._containers: dict[str, Any] = {}  # runner id -> container, while it exists

    # -- Executor ------------------------------------------------------------------

    async def start(self, launch: RunnerLaunch) -> RunnerHandle:
        try:
            return await _docker.run_blocking(self._start, launch)
        except _docker.DockerUnavailable as err:
            raise RuntimeError(f"cannot start runner {launch.runner_id} in a container: {err}")

    async def wait(self, handle: RunnerHandle) -> RunnerExit:
        container = self._containers.get(handle.runner_id)
        if container is None:
            container = await _docker.run_blocking(self._find, handle.runner_id)
            if container is None:
                return RunnerExit(None)
            self._containers[handle.runner_id] = container
        try:
            code = await _docker.run_blocking(self._wait, container)
            oom_mb = await _docker.run_blocking(self._out_of_memory, container)
            await _docker.run_blocking(self._save_log, container, self._log_path(handle.runner_id))
            await _docker.run_blocking(self._remove, container)
        finally:
            if self._containers.get(handle.runner_id) is container:
                del self._containers[handle.runner_id]
            self._drop_volume_copies(handle.runner_id)
        return RunnerExit(code, out_of_memory_mb=oom_mb)

    async def kill(self, handle: RunnerHandle) -> None:
        container = self._containers.get(handle.runner_id)
        if container is None:
            container = await _docker.run_blocking(self._find, handle.runner_id)
        if container is not None:
            await _docker.run_blocking(self._kill, container)

    def log_tail(self, handle: RunnerHandle, lines: int = 20) -> str:
        container = self._containers.get(handle.runner_id)
        if container is not None:
            with contextlib.suppress(Exception):
                text = container.logs(stdout=True, stderr=True, tail=lines)
                return text.decode(errors="replace").rstrip("\n")
        return super().log_tail(handle, lines)

    async def close(self) -> None:
        containers = list(self._containers.items())
        self._containers.clear()
        for runner_id, container in containers:
            await _docker.run_blocking(self._remove, container)
            self._drop_volume_copies(runner_id)
        await self.close_client()

    # -- blocking parts, in threads ------------------------------------------------

    def _start(self, launch: RunnerLaunch) -> RunnerHandle:
        import docker

        client = self.client()
        built = launch.built
        if built is not None and built.ref:
            image = built.ref
        elif launch.image:
            image = image_tag(launch.image)
        elif self.default_image:
            image = self.default_image
        else:
            raise RuntimeError(
                f"runner {launch.runner_id} names no image, and the docker executor has no "
                "default image; build one with the docker builder and configure it"
            )
        control_url, mount_paths = self._control_address(launch.control_url)
        python = built.python if built is not None and built.python else VENV_PYTHON
        volumes, told = self._volume_mounts(launch)
        runner_args, runner_env = runner_launch.build(launch.runner(control_url, told))
        command = runner_launch.command(python, runner_args)
        env = {
            **_docker.ca_env(self.ca_bundle),
            **self.env,
            **(built.env if built is not None else {}),
            **launch.env,
            **runner_env,
        }
        if self.blob_dir is not None:
            mount_paths.append(str(Path(self.blob_dir).absolute()))
        mount_paths += self.mounts
        mounts = [
            docker.types.Mount(path, path, type="bind", read_only=False)
            for path in _outermost(mount_paths)
        ]
        if self.ca_bundle:
            mounts.append(docker.types.Mount(self.ca_bundle, self.ca_bundle, "bind", True))
        mounts += volumes
        options: dict[str, Any] = {}
        if launch.cpu > 0:
            options["nano_cpus"] = int(launch.cpu * 1e9)
        if launch.memory_mb > 0:
            options["mem_limit"] = f"{launch.memory_mb}m"
        if launch.gpu_uuids:
            options["device_requests"] = [
                docker.types.DeviceRequest(
                    device_ids=list(launch.gpu_uuids), capabilities=[["gpu"]]
                )
            ]
        if built is not None and built.workdir:
            options["working_dir"] = built.workdir
        try:
            container = client.containers.create(
                image,
                command,
                name=f"remotecell-{_name(launch.runner_id)}-{secrets.token_hex(3)}",
                environment=env,
                labels={RUNNER_ID_LABEL: launch.runner_id, IMAGE_ID_LABEL: launch.image},
                network_mode="host",
                init=True,  # reaps the processes a cell's `!cmd` leaves behind
                mounts=mounts,
                stdin_open=False,
                detach=True,
                **options,
            )
        except docker.errors.ImageNotFound:
            raise RuntimeError(
                f"the Docker engine has no image {image}; build the runner's image first "
                "(the docker builder tags images remotecell-image:<id>)"
            ) from None
        except docker.errors.APIError as err:
            raise RuntimeError(
                f"could not create a container for runner {launch.runner_id} from {image}: "
                f"{err.explanation or err}"
            ) from None
        self._containers[launch.runner_id] = container
        try:
            container.start()
            container.reload()
        except docker.errors.APIError as err:
            self._containers.pop(launch.runner_id, None)
            output = self._logs(container, 30)
            self._remove(container)
            reason = str(err.explanation or err)
            if launch.gpu_uuids and "device driver" in reason:
                reason += (
                    " (GPUs in containers need the NVIDIA Container Toolkit on the Docker host)"
                )
            raise RuntimeError(
                f"could not start runner {launch.runner_id}'s container from {image}: {reason}"
                + (f"; its log ends with:\n{output}" if output else "")
            ) from None
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
        return RunnerHandle(launch.runner_id, pid, self._log_path(launch.runner_id))

    def _volume_mounts(self, launch: RunnerLaunch) -> tuple[list[Any], list[RunnerMount]]:
        """Bind mounts of the launch's volumes (a directory store's directory, or an
        empty copy on the host that the runner fills and commits), and what the runner
        is told about them (mounted already: no ``source``)."""
        import docker

        mounts: list[Any] = []
        told: list[RunnerMount] = []
        for index, volume in enumerate(launch.volumes):
            source = volume.shared_dir
            if not source:
                copy = self._volume_copies(launch.runner_id) / str(index)
                copy.mkdir(parents=True, exist_ok=True)
                source = str(copy)
            mounts.append(
                docker.types.Mount(volume.mount.path, source, type="bind", read_only=False)
            )
            told.append(RunnerMount(volume.mount, sync=not volume.shared_dir))
        return mounts, told

    def _volume_copies(self, runner_id: str) -> Path:
        return self.volume_cache / _name(runner_id)

    def _drop_volume_copies(self, runner_id: str) -> None:
        shutil.rmtree(self._volume_copies(runner_id), ignore_errors=True)

    def _control_address(self, url: str) -> tuple[str, list[str]]:
        """The address a runner in a container dials, and the directories it needs."""
        if url.startswith("unix:"):
            path = url[len("unix:") :]
            if path.startswith("//"):  # unix:///abs/path
                path = path[2:]
            path = os.path.abspath(path)
            return f"unix:{path}", [os.path.dirname(path)]
        return url, []

    def _find(self, runner_id: str) -> Any:
        """The container of a runner this executor did not start (adopted after a restart)."""
        try:
            found = self.client().containers.list(
                all=True, filters={"label": f"{RUNNER_ID_LABEL}={runner_id}"}
            )
        except _docker.DockerUnavailable:
            return None
        return found[0] if found else None

    def _wait(self, container: Any) -> int | None:
        import docker

        try:
            result = container.wait()
        except docker.errors.NotFound:
            return None
        except Exception as err:
            if _docker.is_connection_error(err):
                log.warning("lost the Docker engine while waiting for %s: %s", container.id, err)
                return None
            raise
        code = result.get("StatusCode")
        return int(code) if code is not None and code >= 0 else None

    def _out_of_memory(self, container: Any) -> int:
        """The container's memory limit in MiB if the OOM killer ended it, else 0."""
        with contextlib.suppress(Exception):
            container.reload()
            if container.attrs["State"].get("OOMKilled"):
                return int(container.attrs["HostConfig"].get("Memory") or 0) // 2**20
        return 0

    def _kill(self, container: Any) -> None:
        import docker

        # Not running any more, or already gone: nothing to kill.
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.kill()

    def _remove(self, container: Any) -> None:
        import docker

        # Gone already, or its removal is under way.
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)

    def _logs(self, container: Any, lines: int | str = "all") -> str:
        try:
            text = container.logs(stdout=True, stderr=True, tail=lines)
        except Exception:
            return ""
        return str(text.decode(errors="replace")).rstrip("\n")

    def _save_log(self, container: Any, path: Path) -> None:
        text = self._logs(container)
        if text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")

    def _log_path(self, runner_id: str) -> Path:
        return self.log_dir / f"{_name(runner_id)}.log"


def _name(runner_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", runner_id)


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths, without those inside another one (mounting the outer one is enough)."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept
