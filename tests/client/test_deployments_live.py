"""The deployment SDK against a real control plane and real runners: what ``.map`` does
with a failure, values that travel as blobs, and spawn handles."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support import wait_until

import remotecell
from remotecell.client import Client


def notebook_function(source: str):
    """A function defined as a notebook defines it (in ``__main__``): it travels by value."""
    namespace: dict = {"__name__": "__main__"}
    exec(source, namespace)
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


FLAKY = notebook_function(
    "import time\n"
    "def flaky(x):\n"
    "    time.sleep(0.2)\n"
    "    if x == 0:\n"
    "        raise KeyError(f'no {x}')\n"
    "    return x\n"
)


def test_a_failed_map_drops_the_calls_still_waiting(client: Client) -> None:
    ep = remotecell.deploy(FLAKY, name="flaky", client=client, max_containers=1)
    with pytest.raises(KeyError, match="no 0") as raised:
        list(ep.map(range(20)))
    assert isinstance(raised.value, remotecell.RemoteError)
    wait_until(lambda: ep.info().in_flight == 0, 10, what="the running call to end")
    time.sleep(0.5)
    info = ep.info()
    assert info.queued == 0 and info.calls < 5, info  # the other calls never ran
    # with return_exceptions, every input gets its place
    out = list(ep.map(range(3), return_exceptions=True))
    assert isinstance(out[0], KeyError) and out[1:] == [1, 2]


def test_large_arguments_and_results_travel_as_blobs(client: Client) -> None:
    total = notebook_function("def total(a):\n    return a * 2, float(a.sum())\n")
    ep = remotecell.deploy(total, name="arrays", client=client)
    a = np.arange(2_000_000, dtype=np.float64)  # 16 MB: over the message limit, as blobs
    doubled, summed = ep.remote(a)
    assert summed == float(a.sum()) and np.array_equal(doubled, a * 2)
    handle = ep.spawn(np.ones(3))
    assert handle.get(timeout=60)[1] == 3.0


def test_unknown_deployment_and_bad_arguments(client: Client) -> None:
    with pytest.raises(remotecell.DeploymentNotFoundError, match="nosuch"):
        remotecell.Deployment.from_name("nosuch", client=client).remote(1)
    ep = remotecell.deploy(FLAKY, name="args", client=client)
    with pytest.raises(remotecell.CallArgumentsError, match="y"):
        ep.remote(1, y=2)
