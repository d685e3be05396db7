"""Fixtures of the end-to-end tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from docker_engine import require_engine


@pytest.fixture
def docker_control_plane(make_control_plane: Any) -> Any:
    """A control plane with the docker executor (a Docker engine must answer)."""
    engine = require_engine()
    engine.close()
    return make_control_plane("--executor", "docker", "--cancel-grace", "2")
