"""Fixtures that start real parts: control planes, runners, Jupyter kernels.

Everything a fixture starts, it stops (see ``support``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from support import ControlPlane, Kernel, short_tmpdir

from remotecell.client import Client


@pytest.fixture
def make_control_plane() -> Iterator[Any]:
    started: list[ControlPlane] = []

    def make(*args: str) -> ControlPlane:
        cp = ControlPlane(short_tmpdir(), list(args))
        started.append(cp)
        return cp.start()

    yield make
    for cp in started:
        cp.stop()
        shutil.rmtree(cp.data_dir, ignore_errors=True)


@pytest.fixture
def control_plane(make_control_plane: Any) -> ControlPlane:
    return make_control_plane("--cancel-grace", "2", "--reconnect-grace", "5")


@pytest.fixture
def client(control_plane: ControlPlane) -> Iterator[Client]:
    c = control_plane.client()
    yield c
    c.close()


@pytest.fixture
def make_kernel() -> Iterator[Any]:
    kernels: list[Kernel] = []

    def make(env: dict[str, str]) -> Kernel:
        k = Kernel(env)
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        k.shutdown()


@pytest.fixture
def kernel(make_kernel: Any, control_plane: ControlPlane) -> Kernel:
    k = make_kernel(control_plane.env())
    k.ok("%load_ext remotecell")
    return k
