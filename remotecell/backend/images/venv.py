"""The venv builder (the embedded default): an image is a uv virtual environment.

Layout under ``root``::

    <image id>/venv/        the environment uv made; runners run venv/bin/python
    <image id>/root/        the image's own directory: the runner's working directory,
                            where local files and ``workdir`` go
    <image id>/image.json   the BuiltImage, for whoever inspects the directory
    runtime-py3.11-<hash>/  remotecell's runtime for one Python version, shared by images

**The runtime.** A runner needs remotecell and its dependencies (grpcio, IPython, ...),
but an image should hold what the user asked for. So the runtime is installed once per
(remotecell version, Python version) into a directory of its own (``uv pip install
--target``), holding remotecell's dependencies and a link to the running ``remotecell``
package (so editable and regular installs both work). Each image venv gets a ``.pth`` that
adds the runtime *after* its own site-packages: the image's own pins win, and a new image
costs one ``uv venv`` and its own packages, not a copy of IPython. When the runtime's Python
matches the control plane's, its packages are pinned to the control plane's versions, so a
runner speaks exactly the control plane's protocol.

**Paths.** Nothing is written outside ``root``: a ``workdir`` or a local file's
destination is relative to the image's own directory, and an absolute one is refused
(the docker builder takes them). ``pip`` in a ``run`` step is ``uv pip`` into the image.

**Python.** ``python=`` picks an interpreter uv finds on this machine (never a download:
``UV_PYTHON_DOWNLOADS=never``); the control plane's own interpreter when the versions match.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tarfile
import time
from pathlib import Path, PurePosixPath

from remotecell._proto import pb
from remotecell.backend.images._venv_runtime import RUNTIME_PTH, Runtimes, runtime_of
from remotecell.backend.images._venv_tools import (
    Python,
    find_python,
    find_uv,
    remove,
    run_tool,
)
from remotecell.backend.images.builder import (
    BuildLog,
    BuiltImage,
    FetchBlob,
    ImageBuilder,
    step_failed,
    step_progress,
)
from remotecell.contract.values import content_hash

#: A step (a pip install of torch, a long `run`) may take this long before it is killed.
STEP_TIMEOUT = 30 * 60.0
_IMAGE_META = "image.json"


class VenvBuilder(ImageBuilder):
    """Builds images as uv virtual environments under ``root``.

    Args:
        root: where images (and, by default, runtimes) live, e.g. ``DATA_DIR/images/venv``.
        runtime_root: where runtimes live (default: ``root``); tests share one.
        step_timeout: seconds a step may run before it is killed and the build fails.
    """

    name = "venv"

    def __init__(
        self, root: Path, *, runtime_root: Path | None = None, step_timeout: float = STEP_TIMEOUT
    ) -> None:
        self.root = root
        self.runtime_root = runtime_root or root
        self.step_timeout = step_timeout
        self._uv = find_uv()
        self._pythons: dict[str, Python] = {}
        self._runtimes = Runtimes(self.runtime_root, self._uv)

    # -- ImageBuilder -----------------------------------------------------------

    async def build(self, spec: pb.ImageSpec, fetch_blob: FetchBlob, log: BuildLog) -> BuiltImage:
        started = time.perf_counter()
        _check_supported(spec)
        log(step_progress(spec, -1))
        python = await self._python(spec)
        runtime = await self._runtimes.ensure(
            python, spec, log, timeout=max(self.step_timeout, STEP_TIMEOUT)
        )
        image_dir = self.root / spec.id
        await asyncio.to_thread(remove, image_dir)
        try:
            built = await self._build(spec, fetch_blob, log, python, runtime, image_dir)
        except BaseException:
            await asyncio.to_thread(remove, image_dir)
            raise
        log(f"built image {spec.id[:12]} in {time.perf_counter() - started:.2f} s")
        return built

    def exists(self, built: BuiltImage) -> bool:
        # The runtime an image points at goes away with `prune`, or changes with remotecell:
        # either way the image must be rebuilt.
        image_dir = Path(built.ref)
        pth = next(iter(image_dir.glob(f"venv/lib/*/site-packages/{RUNTIME_PTH}")), None)
        if pth is None or not Path(built.python).exists():
            return False
        runtime = runtime_of(pth)
        if runtime is None or not (runtime / ".complete").exists():
            return False
        return self._runtimes.is_current(runtime)

    async def remove(self, built: BuiltImage) -> None:
        await asyncio.to_thread(remove, Path(built.ref))

    async def prune(self, keep: set[str]) -> list[str]:
        return await asyncio.to_thread(self._prune, keep)

    # -- the build ----------------------------------------------------------------

    async def _build(
        self,
        spec: pb.ImageSpec,
        fetch_blob: FetchBlob,
        log: BuildLog,
        python: Python,
        runtime: Path,
        image_dir: Path,
    ) -> BuiltImage:
        venv = image_dir / "venv"
        home = image_dir / "root"
        home.mkdir(parents=True)
        await self._tool(
            spec, -1, [self._uv, "venv", "--quiet", "--python", python.executable, str(venv)], log
        )
        site_packages = venv / "lib" / f"python{python.version}" / "site-packages"
        # `import site` lines in a .pth run at start-up; addsitedir also reads the runtime's
        # own .pth files, and appends: the image's packages come first.
        (site_packages / RUNTIME_PTH).write_text(
            f"import site; site.addsitedir({str(runtime)!r})\n"
        )
        pip = venv / "bin" / "pip"
        pip.write_text(f'#!/bin/sh\nVIRTUAL_ENV={_sh(str(venv))} exec {_sh(self._uv)} pip "$@"\n')
        pip.chmod(0o755)

        env: dict[str, str] = {}
        workdir = PurePosixPath()
        base_env = {
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        for index, step in enumerate(spec.steps):
            log(step_progress(spec, index))
            kind = step.kind
            if kind == pb.ImageStep.PIP:
                argv = [self._uv, "pip", "install", "--python", str(venv / "bin" / "python")]
                for option, value in sorted(step.options.items()):
                    argv += [f"--{option.replace('_', '-')}", value]
                await self._tool(spec, index, [*argv, *step.args], log, env=env)
            elif kind == pb.ImageStep.RUN:
                for command in step.args:
                    await self._tool(
                        spec,
                        index,
                        ["/bin/sh", "-c", command],
                        log,
                        env={**env, **base_env},
                        cwd=home / workdir,
                        what=f"`{command}`",
                    )
            elif kind == pb.ImageStep.ENV:
                env.update(step.env)
            elif kind == pb.ImageStep.WORKDIR:
                workdir = workdir / step.dest
                (home / workdir).mkdir(parents=True, exist_ok=True)
            elif kind in (
                pb.ImageStep.LOCAL_FILE,
                pb.ImageStep.LOCAL_DIR,
                pb.ImageStep.PYTHON_SOURCE,
            ):
                data = await self._blob(spec, index, fetch_blob)
                if kind == pb.ImageStep.LOCAL_FILE:
                    target = home / workdir / step.dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                else:
                    dest = (
                        site_packages
                        if kind == pb.ImageStep.PYTHON_SOURCE
                        else home / workdir / step.dest
                    )
                    await asyncio.to_thread(_untar, spec, index, data, dest)
        built = BuiltImage(
            image_id=spec.id,
            builder=self.name,
            python=str(venv / "bin" / "python"),
            env={**env, **base_env},
            workdir=str(home / workdir),
            ref=str(image_dir),
            size_bytes=await asyncio.to_thread(_disk_usage, image_dir),
        )
        (image_dir / _IMAGE_META).write_text(built.to_json())
        return built

    async def _blob(self, spec: pb.ImageSpec, index: int, fetch_blob: FetchBlob) -> bytes:
        blob = spec.steps[index].blob
        try:
            data = await asyncio.to_thread(fetch_blob, blob)
        except Exception as err:
            raise step_failed(
                spec, index, f"its local content (blob {blob[:12]}) was not uploaded: {err}"
            ) from None
        if content_hash(data) != blob:
            raise step_failed(spec, index, f"its local content (blob {blob[:12]}) is corrupt")
        return data

    async def _tool(
        self,
        spec: pb.ImageSpec,
        index: int,
        argv: list[str],
        log: BuildLog,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        what: str = "",
        timeout: float | None = None,
    ) -> None:
        """Runs one tool, its output streamed into ``log``; fails the step when it fails."""
        timeout = self.step_timeout if timeout is None else timeout
        await run_tool(spec, index, argv, log, timeout=timeout, env=env, cwd=cwd, what=what)

    # -- interpreters ---------------------------------------------------------------

    async def _python(self, spec: pb.ImageSpec) -> Python:
        request = spec.python
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if not request or request in (running, _running_full()):
            return Python(sys.executable, running)
        if request not in self._pythons:
            self._pythons[request] = await find_python(self._uv, spec)
        return self._pythons[request]

    # -- prune ------------------------------------------------------------------

    def _prune(self, keep: set[str]) -> list[str]:
        removed: list[str] = []
        used_runtimes: set[str] = set()
        if self.root.exists():
            for entry in sorted(self.root.iterdir()):
                if entry.name.startswith(("runtime-", ".runtime-")):
                    continue
                if entry.name in keep:
                    for pth in entry.glob(f"venv/lib/*/site-packages/{RUNTIME_PTH}"):
                        runtime = runtime_of(pth)
                        if runtime is not None:
                            used_runtimes.add(runtime.name)
                    continue
                remove(entry)
                removed.append(str(entry))
        removed += self._runtimes.prune(used_runtimes)
        return removed


def _check_supported(spec: pb.ImageSpec) -> None:
    """Refuses at once what a venv cannot do, before anything is built."""
    if spec.base == pb.ImageSpec.REGISTRY:
        raise step_failed(
            spec,
            -1,
            "a registry base image needs the docker builder; use the docker executor, "
            "or Image.debian_slim() for a venv",
        )
    if spec.base == pb.ImageSpec.DOCKERFILE:
        raise step_failed(
            spec,
            -1,
            "a Dockerfile needs the docker builder; use the docker executor, "
            "or Image.debian_slim() for a venv",
        )
    for index, step in enumerate(spec.steps):
        if step.kind == pb.ImageStep.APT:
            raise step_failed(
                spec,
                index,
                "apt needs the docker builder: the venv builder cannot install system packages; "
                "use the docker executor, or install them on this machine and drop the apt step",
            )
        if step.kind in (pb.ImageStep.WORKDIR, pb.ImageStep.LOCAL_FILE, pb.ImageStep.LOCAL_DIR):
            dest = PurePosixPath(step.dest)
            if dest.is_absolute() or ".." in dest.parts:
                raise step_failed(
                    spec,
                    index,
                    f"the venv builder keeps an image's files in the image's own directory, so "
                    f"{step.dest!r} must be a relative path without '..' (it is relative to the "
                    "runner's working directory); absolute paths need the docker builder",
                )
        if step.kind == pb.ImageStep.PYTHON_SOURCE and not step.dest.isidentifier():
            raise step_failed(spec, index, f"{step.dest!r} is not a module name")
        if step.kind not in _KNOWN_KINDS:
            raise step_failed(spec, index, "this remotecell does not know this kind of step")


_KNOWN_KINDS = {
    pb.ImageStep.PIP,
    pb.ImageStep.APT,
    pb.ImageStep.RUN,
    pb.ImageStep.ENV,
    pb.ImageStep.WORKDIR,
    pb.ImageStep.LOCAL_FILE,
    pb.ImageStep.LOCAL_DIR,
    pb.ImageStep.PYTHON_SOURCE,
}


def _untar(spec: pb.ImageSpec, index: int, data: bytes, dest: Path) -> None:
    import io

    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python without extraction filters: the client made this tar, trust it
                tar.extractall(dest)
    except (tarfile.TarError, OSError) as err:
        raise step_failed(spec, index, f"cannot unpack its files into {dest}: {err}") from None


def _running_full() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
