"""remotecell.contract stands alone, and the back end's and the CLI's lint ban every private
client module.

DESIGN.md: both sides import ``contract``; it imports only ``_proto``, the standard library
and third-party libraries. The back end and the CLI never import a private
``remotecell.client._*`` module, which ``remotecell/backend/ruff.toml`` and
``remotecell/cli/ruff.toml`` enforce by listing each one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import remotecell

PACKAGE = Path(remotecell.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_contract_imports_no_other_part_of_remotecell():
    allowed = ("remotecell.contract", "remotecell._proto")
    wrong = {
        f"{path.relative_to(PACKAGE.parent)}: {module}"
        for path in (PACKAGE / "contract").rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] == "remotecell"
        and module != "remotecell"
        and not module.startswith(allowed)
    }
    assert not wrong


@pytest.mark.parametrize("part", ["backend", "cli"])
def test_the_lint_bans_every_private_client_module(part):
    config = (PACKAGE / part / "ruff.toml").read_text()
    banned = set(re.findall(r'^"(remotecell\.[\w.]+)"\.msg', config, re.MULTILINE))
    assert "remotecell.client._blocking" in banned
    private = {
        f"remotecell.client.{path.stem}"
        for path in (PACKAGE / "client").iterdir()
        if path.name.startswith("_")
        and not path.name.startswith("__")
        and (path.suffix == ".py" or (path / "__init__.py").exists())
    }
    assert private - banned == set()
