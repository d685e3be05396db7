"""The ``%%remote`` line: ``key=value`` options whose values are Python expressions.

The line is parsed as the argument list of a call, so values may hold spaces, brackets
and strings (``env={"A": "1 2"} pull=["x", "y"]`` and ``timeout=60*5`` all work), and
each value is evaluated in the notebook's namespace (``session=name`` uses the variable).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

from remotecell.client.errors import ConfigError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class RemoteOptions:
    timeout: float = 0.0  # seconds; 0 = none
    retries: int = 0
    pull: list[str] | None = None  # None: the names the cell assigns
    detach: bool = False
    session: str = ""
    env: dict[str, str] = field(default_factory=dict)


OPTIONS = {
    "timeout": "seconds the cell may run (a positive number)",
    "retries": "how many times to run it again after a failure (an int >= 0)",
    "pull": "names to bring back (a list of names; [] for none)",
    "detach": "return a job handle at once (True/False)",
    "session": "keep the remote namespace across cells under this name (a string)",
    "env": "environment variables for the cell (a dict of str to str)",
}


def valid_options() -> str:
    return "; ".join(f"{k}= {v}" for k, v in OPTIONS.items())


def parse(line: str, user_ns: dict[str, Any]) -> RemoteOptions:
    """Parses and checks the options of a ``%%remote`` line.

    Raises:
        ConfigError: one sentence naming the bad option and what is valid.
    """
    line = line.strip()
    options = RemoteOptions()
    if not line:
        return options
    try:
        call = ast.parse(f"_({line})", mode="eval").body
    except SyntaxError:
        raise ConfigError(
            f"cannot parse the %%remote options {line!r}: write them as key=value, "
            f"for example `%%remote timeout=60 retries=1`. Valid options: {valid_options()}"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(k.arg is None for k in call.keywords):
        raise ConfigError(
            f"%%remote takes only key=value options, got {line!r}. Valid options: {valid_options()}"
        )
    for kw in call.keywords:
        key = kw.arg
        assert key is not None
        if key not in OPTIONS:
            raise ConfigError(f"unknown %%remote option {key!r}. Valid options: {valid_options()}")
        source = ast.get_source_segment(f"_({line})", kw.value) or ""
        try:
            value = eval(compile(ast.Expression(kw.value), "<%%remote options>", "eval"), user_ns)
        except Exception as err:
            raise ConfigError(
                f"%%remote option {key}={source} failed to evaluate: {type(err).__name__}: {err}"
            ) from None
        _set(options, key, value, source)
    return options


def _bad(key: str, source: str, value: Any) -> ConfigError:
    return ConfigError(
        f"bad value for %%remote option {key}={source} ({value!r}): expected {OPTIONS[key]}"
    )


def _set(options: RemoteOptions, key: str, value: Any, source: str) -> None:
    if key == "timeout":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (value > 0 and math.isfinite(value))
        ):
            raise _bad(key, source, value)
        options.timeout = float(value)
    elif key == "retries":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(key, source, value)
        options.retries = value
    elif key == "pull":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple, set)) or not all(
            isinstance(v, str) and _IDENTIFIER.match(v) for v in value
        ):
            raise _bad(key, source, value)
        options.pull = list(value)
    elif key == "detach":
        if not isinstance(value, bool):
            raise _bad(key, source, value)
        options.detach = value
    elif key == "session":
        if not isinstance(value, str) or not _SESSION.match(value):
            raise ConfigError(
                f"bad value for %%remote option session={source} ({value!r}): expected a name of "
                "letters, digits, '_', '.' or '-' (at most 64), for example session=\"train\""
            )
        options.session = value
    elif key == "env":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str)
            for k, v in value.items()
        ):
            raise _bad(key, source, value)
        options.env = dict(value)
