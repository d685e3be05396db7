"""`remotecell endpoint ls | logs | stop | scale | rollback` against a real control plane,
with deployments made through the SDK."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import wait_until

import remotecell


@pytest.fixture
def cli(control_plane):
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "remotecell", "endpoint", *args],
            env={**os.environ, **control_plane.env()},
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert done.returncode == 0, done.stderr.decode()
        return done

    return run


def notebook_function(source: str):
    """A function defined as a notebook defines it (in ``__main__``): it travels by value."""
    namespace: dict = {"__name__": "__main__"}
    exec(source, namespace)
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


double = notebook_function("def double(x: int) -> int:\n    return 2 * x\n")
triple = notebook_function("def triple(x: int) -> int:\n    return 3 * x\n")


def test_endpoint_commands(cli, client):
    ep = remotecell.deploy(double, name="calc", client=client, scaledown_window=30)
    assert ep.remote(4) == 8
    remotecell.deploy(triple, name="calc", client=client, scaledown_window=30)
    wait_until(lambda: ep.remote(4) == 12, 30, what="version 2 to answer")

    listed = cli("ls").stdout.decode()
    row = next(line for line in listed.splitlines() if line.startswith("calc"))
    assert "/endpoints/calc" in listed and " v2 " in row, listed

    logs = cli("logs", "calc").stdout.decode()
    assert "deployed version 2" in logs and "ready" in logs, logs
    assert len(cli("logs", "calc", "--tail", "1").stdout.decode().splitlines()) == 1

    scaled = cli("scale", "calc", "--min", "1", "--max", "3").stdout.decode()
    assert "min_containers=1 max_containers=3" in scaled, scaled
    info = ep.info()
    assert (info.settings.min_containers, info.settings.max_containers) == (1, 3)

    assert "at v1" in cli("rollback", "calc").stdout.decode()
    wait_until(lambda: ep.remote(4) == 8, 30, what="version 1 to answer again")

    assert "stopped calc" in cli("stop", "calc").stdout.decode()
    with pytest.raises(remotecell.DeploymentNotFoundError):
        ep.remote(4)


def test_endpoint_commands_fail_with_one_clear_sentence(cli, client):
    remotecell.deploy(double, name="one", client=client)
    cases = [
        (("logs", "nope"), "no deployment named 'nope'"),
        (("stop", "nope"), "no deployment named 'nope'"),
        (("rollback", "one"), "at its first version"),
        (("scale", "one"), "give --min N, --max N or both"),
        (("scale", "one", "--min", "3", "--max", "2"), "min_containers=3 is above"),
        (("scale", "one", "--min", "5"), "min_containers=5 is above max_containers=4"),
        (("scale", "one", "--max", "100000"), "max_containers=100000 is not a whole number"),
        (("logs", "Bad_Name"), "not a valid deployment name"),
    ]
    for args, message in cases:
        done = cli(*args, ok=False)
        err = done.stderr.decode()
        assert done.returncode != 0 and message in err, (args, err)
        assert "Traceback" not in err, err
    assert cli("scale", "one", "--min", "-1", ok=False).returncode == 2  # click refuses it
