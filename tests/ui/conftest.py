"""A real JupyterLab in headless Chromium (Debian's, driven by Playwright), over a real
control plane with recorded H100s (``REMOTECELL_FAKE_NVML``: NVML is the one thing faked).

Tests skip when Chromium, Playwright or JupyterLab is missing, except where
``REMOTECELL_REQUIRE_ENGINES`` is set (CI, after ``scripts/browser_setup.sh``): there they
fail. Everything started here is stopped here: the browser, the Jupyter server, and any
kernel it leaves behind (by PID).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import ControlPlane, missing, short_tmpdir, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
FAKE_GPUS = "NVIDIA H100 80GB HBM3,NVIDIA H100 80GB HBM3"


def _require_browser_stack() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing(
            f"no Chromium at {CHROMIUM}: run scripts/browser_setup.sh (apt-get install chromium)"
        )
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            missing(f"{package} is not installed: pip install '.[test]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    """A running `jupyter lab` server."""

    url: str
    token: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def notebook(self, name: str, cells: list[str]) -> str:
        """Writes a notebook of code cells; returns its URL."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nbformat.write(nb, self.root / name)
        # A workspace of its own, reset: no notebook of an earlier test comes back with it.
        workspace = Path(name).stem
        return f"{self.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Kernels run in their own process sessions: collect them first, end them by PID after.
    try:
        leftovers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        leftovers = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for child in leftovers:
        with contextlib.suppress(psutil.Error):
            child.kill()


@pytest.fixture(scope="module")
def ui_control_plane() -> Iterator[ControlPlane]:
    _require_browser_stack()
    cp = ControlPlane(short_tmpdir(), ["--cancel-grace", "2"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REMOTECELL_FAKE_NVML", FAKE_GPUS)
        cp.start()
    yield cp
    cp.stop()
    shutil.rmtree(cp.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(ui_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root, config, data, runtime = (base / d for d in ("root", "config", "data", "runtime"))
    for folder in (root, config, data, runtime):
        folder.mkdir()
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **ui_control_plane.env(),  # the kernels' remotecell talks to the test control plane
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_RUNTIME_DIR": str(runtime),
    }
    log = base / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                "--allow-root",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.extension_manager=readonly",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, 60, interval=0.2, what="jupyter lab to answer")
        yield Lab(url, token, root, proc, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            shot = tmp_path / "failure.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the page at the failure: {shot}")
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
