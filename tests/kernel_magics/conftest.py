"""The IPython shell that the tests of the magics share."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython


@pytest.fixture(scope="session")
def shell() -> InteractiveShell:
    """IPython's test shell: one singleton per process, so every test here shares it."""
    if not InteractiveShell.initialized():
        start_ipython()
    return InteractiveShell.instance()
