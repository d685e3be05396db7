"""The README a newcomer reads first: its two commands, what a full test run needs, and
documentation that lives in this repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_first_lines_are_the_install_and_run_and_the_test_commands() -> None:
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first == [
        "pip install . && remotecell run examples/notebooks/quickstart.ipynb",
        "pip install '.[test]' && python -m pytest",
    ]
    assert (ROOT / "examples/notebooks/quickstart.ipynb").is_file()


def test_next_to_the_commands_it_says_what_a_full_test_run_needs() -> None:
    beside = README.split("```", 2)[2].split("\n## ", 1)[0]
    for needed in ("scripts/docker_setup.sh", "scripts/browser_setup.sh", "torch", "skip"):
        assert needed in beside, needed
    for script in re.findall(r"`(scripts/[\w.]+)`", beside):
        assert (ROOT / script).is_file(), script


def test_its_links_lead_to_files_in_this_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert "docs/architecture.md" in links
    for link in links:
        assert not re.match(r"\w+://", link), f"{link}: documentation lives in the repository"
        assert (ROOT / link.split("#")[0]).exists(), link
