"""The one rule for names that go in URLs and command lines: deployments' and schedules'
(1-63 lowercase letters, digits or '-', starting with a letter or digit)."""

from __future__ import annotations

import re
from typing import Any

from remotecell.contract.errors import ConfigError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_slug(name: Any, what: str, examples: str) -> str:
    """``name`` if it is a valid name of a ``what`` (e.g. "deployment").

    Raises:
        ConfigError: it is not 1-63 lowercase letters, digits or '-', starting with a
            letter or digit; the sentence shows ``examples``.
    """
    if not isinstance(name, str) or not SLUG.match(name):
        shown = repr(name)[:80] if isinstance(name, str) else f"a {type(name).__name__}"
        raise ConfigError(
            f"{shown} is not a valid {what} name: use 1-63 lowercase letters, digits "
            f"or '-', starting with a letter or digit (for example {examples})"
        )
    return name
