"""User names: what a control plane's users may be called (``remotecell token create``)."""

from __future__ import annotations

import re

from remotecell.contract.errors import ConfigError

USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        shown = repr(name[:40]) if isinstance(name, str) else repr(name)
        raise ConfigError(
            f"{shown} is not a valid user name: use 1-64 lowercase letters, digits, '_', "
            "'.' or '-', starting with a letter or '_'"
        )
    return name
