"""The rules for secrets, shared by the client, the control plane and the command line:
a stored secret's name, its variables (names, values, how many, how large), and how
short a value may be before a job's output no longer masks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from remotecell.contract.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: An environment variable name, as a secret's key.
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
#: Bytes a value may have (a PEM key or a service account's JSON fits easily).
MAX_VALUE_BYTES = 64 * 1024
MAX_KEYS = 100
#: Shorter values are not masked in a job's output (they would mask ordinary text).
MIN_MASKED_LENGTH = 4


def check_name(name: Any) -> str:
    """A secret's name, checked.

    Raises:
        ConfigError: it is not 1-64 letters, digits, '_', '.' or '-' starting with a
            letter or digit.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        shown = repr(name) if isinstance(name, str) else f"a {type(name).__name__}"
        raise ConfigError(
            f"{shown[:80]} is not a valid secret name: use 1-64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit (for example `hf` or `aws-prod`)"
        )
    return name


def check_env(env: Any, what: str = "a secret") -> dict[str, str]:
    """A secret's variables, checked: environment variable names to string values.

    Error messages name keys, never values.

    Raises:
        ConfigError: not a mapping, no keys, a key that is not a variable name, a value
            that is not a string, holds a NUL byte or is too large.
    """
    if not isinstance(env, Mapping):
        raise ConfigError(
            f"the values of {what} must be a dict of variable names to strings, "
            f"not a {type(env).__name__}"
        )
    if not env:
        raise ConfigError(f"{what} has no variables: give at least one KEY=VALUE")
    if len(env) > MAX_KEYS:
        raise ConfigError(f"{what} has {len(env)} variables; at most {MAX_KEYS} are allowed")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_KEY.match(key):
            shown = repr(key)[:80] if isinstance(key, str) else f"a {type(key).__name__}"
            raise ConfigError(
                f"{shown} in {what} is not an environment variable name: use letters, "
                "digits and '_', not starting with a digit (for example HF_TOKEN)"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"the value of {key} in {what} is a {type(value).__name__}; "
                "secret values must be strings"
            )
        if "\0" in value:
            raise ConfigError(
                f"the value of {key} in {what} contains a NUL character, which no "
                "environment variable can hold"
            )
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise ConfigError(
                f"the value of {key} in {what} is larger than {MAX_VALUE_BYTES // 1024} KiB; "
                "put large credentials in a file on a volume instead"
            )
        out[key] = value
    return out


def short_keys(env: Mapping[str, str]) -> list[str]:
    """Keys whose values are too short to be masked in a job's output."""
    return sorted(k for k, v in env.items() if 0 < len(v) < MIN_MASKED_LENGTH)
