"""Helpers for tests that start real parts: a control plane process, its runners, Jupyter kernels.

Everything a test starts, the test stops: control planes get SIGTERM then SIGKILL,
and leftover runners (which live in their own process sessions so they can outlive a
crashed control plane) are found by their command line and killed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psutil

from remotecell.client import Client, Endpoint
from remotecell.client.config import read_endpoint_file

#: Set by CI (.ci/run): a test whose engine or tool is missing fails instead of skipping.
REQUIRE_ENV = "REMOTECELL_REQUIRE_ENGINES"


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Skips a test that needs something this machine lacks (an engine, a browser, a tool,
    an optional package); where ``REMOTECELL_REQUIRE_ENGINES`` is set (CI), fails it.

    ``reason`` says what is missing and how to get it. ``module``: skip the whole module
    (called at import time).
    """
    import pytest

    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} [{REQUIRE_ENV} is set: this test must run]", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def optional_module(name: str, install: str) -> Any:
    """The module ``name``, for a module of tests that need it; missing: see ``missing``."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"needs {name}: {install}", module=True)


def short_tmpdir(prefix: str = "rc-") -> Path:
    # Unix socket paths are limited to ~108 bytes: pytest's tmp_path is too deep.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def kill_runners(marker: str) -> None:
    """Kills runner processes whose command line contains ``marker`` (their --url)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "remotecell.backend.runner" in cmd and any(marker in part for part in cmd):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def wait_until(
    predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class ControlPlane:
    """A `remotecell serve` process on a Unix socket in its own data directory."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    endpoint: Endpoint | None = None

    @property
    def socket(self) -> str:
        return f"unix:{self.data_dir / 'run' / 'cp.sock'}"

    @property
    def log(self) -> Path:
        return self.data_dir / "serve.log"

    def start(self, timeout: float = 20.0) -> ControlPlane:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "server.json").unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "remotecell",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    self.socket,
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc

        def ready() -> Any:
            if proc.poll() is not None:
                raise AssertionError(
                    f"control plane exited ({proc.returncode}):\n{self.log.read_text()}"
                )
            found = read_endpoint_file(self.data_dir)
            return found if found and found[1] == proc.pid else None

        self.endpoint = wait_until(ready, timeout, what="the control plane to start")[0]
        return self

    def kill(self) -> None:
        """SIGKILL: a crash. Runners survive and try to reconnect."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        kill_runners(str(self.data_dir))

    def client(self) -> Client:
        assert self.endpoint is not None
        client = Client(self.endpoint)
        client.health()
        return client

    def env(self) -> dict[str, str]:
        assert self.endpoint is not None
        return {"REMOTECELL_URL": self.endpoint.url, "REMOTECELL_TOKEN": self.endpoint.token}


# ----------------------------------------------------------------- Jupyter kernels


@dataclass
class Execution:
    """What one `execute_request` produced, from the kernel's own messages."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m["content"] for m in self.messages if m["msg_type"] == kind]

    @property
    def stdout(self) -> str:
        return "".join(c["text"] for c in self.of_type("stream") if c["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(c["text"] for c in self.of_type("stream") if c["name"] == "stderr")

    @property
    def displayed(self) -> str:
        """The plain text of what the cell displayed (a widget's too), one display a line."""
        return "\n".join(c["data"].get("text/plain", "") for c in self.of_type("display_data"))

    @property
    def result(self) -> dict[str, Any] | None:
        results = self.of_type("execute_result")
        return results[0]["data"] if results else None

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of_type("error")
        return errors[0] if errors else None


class Kernel:
    """A real IPython kernel (jupyter_client), with helpers to run cells."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.env = env
        self.start()

    def start(self) -> None:
        self.km.start_kernel(
            env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def restart(self) -> None:
        self.kc.stop_channels()
        self.km.restart_kernel(now=True)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 60.0, on_message: Any = None) -> Execution:
        msg_id = self.kc.execute(code)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"cell did not finish in {timeout:g} s: {code!r}; got {messages}"
                )
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if on_message is not None:
                on_message(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            messages.append(msg)
        while True:  # skip replies to earlier requests (kernel_info after a restart)
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return Execution(reply["content"], messages)

    def ok(self, code: str, timeout: float = 60.0) -> Execution:
        result = self.execute(code, timeout)
        assert result.reply["status"] == "ok", result.error or result.reply
        return result

    def value(self, expr: str) -> Any:
        """Evaluates ``expr`` in the kernel (its repr must be a Python literal)."""
        import ast

        result = self.ok(expr)
        assert result.result is not None, f"{expr!r} produced no value"
        return ast.literal_eval(result.result["text/plain"])

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        pid = self.km.provisioner.pid if self.km.provisioner else None  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)
        if pid:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def serve_fails(data_dir: Path, *args: str) -> str:
    """Runs `remotecell serve` with ``args``, which must refuse to start with a message and
    no traceback; returns what it said."""
    proc = subprocess.run(
        [sys.executable, "-m", "remotecell", "serve", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr
