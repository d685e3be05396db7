"""remotecell's runtime for venv images: one directory per (remotecell, Python version),
installed once with ``uv pip install --target`` and added to each image's venv by a ``.pth``
after the image's own site-packages (see ``venv``'s docstring for why).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import remotecell
from remotecell._proto import pb
from remotecell.backend.images._venv_tools import Python, remove, run_tool
from remotecell.backend.images.builder import BuildLog, runtime_requirements

#: The file in an image's site-packages that adds its runtime.
RUNTIME_PTH = "_remotecell_runtime.pth"


class Runtimes:
    """The runtimes under ``root``, installed with ``uv`` when an image first needs one."""

    def __init__(self, root: Path, uv: str) -> None:
        self.root = root
        self._uv = uv
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._names: dict[str, tuple[str, list[str]]] = {}

    def name(self, version: str) -> str:
        """``runtime-py3.11-<hash>``: one per remotecell (version, location, dependency
        versions) and Python version."""
        if version not in self._names:
            requirements = runtime_requirements(version)
            key = json.dumps(
                [remotecell.__version__, str(package_dir()), version, sys.platform, requirements]
            )
            digest = hashlib.sha256(key.encode()).hexdigest()[:12]
            self._names[version] = (f"runtime-py{version}-{digest}", requirements)
        return self._names[version][0]

    def is_current(self, runtime: Path) -> bool:
        """Whether ``runtime`` is the one this remotecell installs for its Python version."""
        version = runtime.name.split("-")[1].removeprefix("py")
        return runtime.name == self.name(version)

    async def ensure(
        self, python: Python, spec: pb.ImageSpec, log: BuildLog, *, timeout: float
    ) -> Path:
        """The runtime directory for ``python``'s version, installed first if needed."""
        runtime = self.root / self.name(python.version)
        requirements = self._names[python.version][1]
        if (runtime / ".complete").exists():
            return runtime
        async with self._locks[runtime.name]:
            if (runtime / ".complete").exists():
                return runtime
            log(f"[runtime] installing remotecell's runtime for Python {python.version} (once)")
            self.root.mkdir(parents=True, exist_ok=True)
            staging = self.root / f".{runtime.name}.{os.getpid()}.tmp"
            await asyncio.to_thread(remove, staging)
            try:
                await run_tool(
                    spec,
                    -1,
                    [
                        self._uv,
                        "pip",
                        "install",
                        "--quiet",
                        "--compile-bytecode",  # runners start often; compile once, here
                        "--python",
                        python.executable,
                        "--target",
                        str(staging),
                        *requirements,
                    ],
                    log,
                    what="installing remotecell's runtime",
                    timeout=timeout,
                )
                (staging / "remotecell").symlink_to(package_dir(), target_is_directory=True)
                (staging / ".complete").write_text(json.dumps(requirements))
                try:
                    staging.rename(runtime)
                except OSError:  # another control plane on this root finished first
                    if not (runtime / ".complete").exists():
                        raise
            finally:
                await asyncio.to_thread(remove, staging)
        return runtime

    def prune(self, used: set[str]) -> list[str]:
        """Removes the runtimes no image in ``used`` (runtime names) points at."""
        removed: list[str] = []
        if self.root.exists():
            for entry in sorted(self.root.glob("runtime-*")):
                # The runtime this remotecell uses now stays: rebuilding it takes a while.
                if entry.name in used or self.is_current(entry):
                    continue
                remove(entry)
                removed.append(str(entry))
            for entry in sorted(self.root.glob(".runtime-*.tmp")):
                if time.time() - entry.stat().st_mtime < 3600:
                    continue  # a runtime being installed right now
                remove(entry)
                removed.append(str(entry))
        return removed


def runtime_of(pth: Path) -> Path | None:
    """The runtime directory an image's ``.pth`` adds."""
    try:
        text = pth.read_text()
        start, end = text.index("addsitedir(") + len("addsitedir("), text.rindex(")")
        return Path(ast.literal_eval(text[start:end]))
    except (OSError, ValueError, SyntaxError):
        return None


def package_dir() -> Path:
    return Path(remotecell.__file__).resolve().parent
