"""Following the engine's build stream: one log line per step, the tools' output, and an
error that names the step (or the part of remotecell's own) that failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from remotecell._proto import pb
from remotecell.backend.images._dockerfile import BASE, RUNTIME, Plan
from remotecell.backend.images.builder import step_failed, step_progress, tail
from remotecell.contract.errors import ImageBuildError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DOCKER_STEP = re.compile(r"^Step (\d+)/(\d+) : ")
_EXIT_CODE = re.compile(r"returned a non-zero code: (\d+)")
# The engine's bookkeeping, not the tools' output; a cache hit is worth a line in the log.
_CACHED = " ---> Using cache"
_NOISE = re.compile(
    r"^( ---> (?!Using cache)|Removing intermediate container |Successfully (built|tagged) )"
)


class Progress:
    """Follows the engine's build stream: logs one line per step and the tools' output,
    and keeps the output of the step that runs, for the error if it fails."""

    def __init__(
        self,
        spec: pb.ImageSpec,
        the_plan: Plan,
        emit: Callable[[str], None],
        base_image: str,
    ) -> None:
        self.spec = spec
        self.base_image = base_image
        self.plan = the_plan
        self.emit = emit
        self.owner: int | str = BASE
        self.instruction = ""
        self.output: list[str] = []
        self.error: str | None = None
        self._partial = ""
        self._announced: set[int | str] = set()

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._flush()
            self.error = str(chunk.get("error") or "the build failed")
            return
        text = chunk.get("stream")
        if not isinstance(text, str):
            return
        lines = (self._partial + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        line = _ANSI.sub("", line)
        found = _DOCKER_STEP.match(line)
        if found:
            self.instruction = line[found.end() :]
            owner = self.plan.owner(int(found.group(1)), int(found.group(2)))
            if owner != self.owner:
                self.output = []
            self.owner = owner
            if owner not in self._announced:
                self._announced.add(owner)
                if isinstance(owner, int):
                    self.emit(step_progress(self.spec, owner))
                else:
                    self.emit(f"[runtime] {owner}")
            return
        if _NOISE.match(line) or not line.strip():
            return
        self.emit(line)
        if line != _CACHED:  # a tool's output, kept for the error if its step fails
            self.output.append(line)
            del self.output[:-200]

    def failed(self, reason: str) -> ImageBuildError:
        self._flush()
        code = _EXIT_CODE.search(reason)
        if code:
            reason = f"it failed with exit code {code.group(1)}"
        owner = self.owner
        output = "\n".join(self.output)
        if isinstance(owner, int):
            if self.instruction.startswith("FROM") and self.spec.base == pb.ImageSpec.DEBIAN_SLIM:
                reason += (
                    f" (the docker builder's base image is {self.base_image}: build the default "
                    "one with `scripts/docker_setup.sh`, as root, or configure another)"
                )
            return step_failed(self.spec, owner, reason, output)
        if owner == RUNTIME and self.instruction.startswith("RUN"):
            reason += (
                "; remotecell's runner does not import in this image (did a step install "
                "versions of its dependencies that it cannot use?)"
            )
        message = f"image {self.spec.id[:12]}: {owner}: {reason}"
        last = tail(output)
        return ImageBuildError(f"{message}\n{last}" if last else message)
