"""The ``%%remote`` line: ``key=value`` options whose values are Python expressions.

Options are separated by spaces (commas work too). The line is tokenized, a comma is put
before each ``key=`` that starts an option at bracket depth 0, and the result is parsed
as the keyword arguments of a call; so values may hold spaces, brackets and strings
(``env={"A": "1 2"} pull=["x", "y"]`` and ``timeout=60 * 5`` all work), and each value
is evaluated in the notebook's namespace (``session=name`` uses the variable).
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import numbers
import reprlib
import textwrap
import tokenize
from dataclasses import dataclass, field
from typing import Any

from remotecell.client.image import Image
from remotecell.client.secret import Secret
from remotecell.client.spec import secrets_option, volumes_option
from remotecell.contract.errors import ConfigError
from remotecell.contract.jobs import MAX_RETRIES, SESSION, env_problem, timeout_ok
from remotecell.contract.resources import GPURequest, parse_gpu
from remotecell.contract.volumes import Mount


@dataclass
class RemoteOptions:
    timeout: float = 0.0  # seconds; 0 = none
    retries: int = 0
    pull: list[str] | None = None  # None: the names the cell assigns
    detach: bool = False
    session: str = ""
    env: dict[str, str] = field(default_factory=dict)
    image: Image | None = None
    force_build: bool = False
    cpu: float = 0.0  # cores; 0: no limit
    memory: int = 0  # MiB; 0: no limit
    gpu: GPURequest | None = None
    secrets: list[Secret] = field(default_factory=list)
    #: Checked, by path; their volume ids are the control plane's to find.
    volumes: tuple[Mount, ...] = ()
    monitor: str | None = None  # None: RemoteMagics.monitor


OPTIONS = {
    "timeout": "seconds the cell may run (a positive number)",
    "retries": f"how many times to run it again after a failure (an int from 0 to {MAX_RETRIES})",
    "pull": "names to bring back (a list of names; [] for none)",
    "detach": "return a job handle at once (True/False)",
    "session": "keep the remote namespace across cells under this name (a string)",
    "env": "environment variables for the cell (a dict of str to str, without '=' in names)",
    "image": "the image to run in (a remotecell.Image)",
    "force_build": "build the image again even if it was built before (True/False)",
    "cpu": "cores the runner may use (a positive number; the docker executor enforces it)",
    "memory": "MiB of memory the runner may use (a positive int; the docker executor enforces it)",
    "gpu": 'GPUs: "H100", "H100:2", "any", or fallbacks in order such as ["H100", "A100-80GB"]',
    "secrets": "secrets for the cell's environment (a list of remotecell.Secret)",
    "volumes": 'volumes to mount: a dict of absolute paths to remotecell.Volume, such as {"/models": weights}',
    "monitor": 'the job monitor in the output: "full", "compact" (one line) or "off" (none)',
}

#: The monitor modes (``_monitor_view.MODES``).
MONITOR_MODES = ("full", "compact", "off")


def valid_options(options: dict[str, str] | None = None) -> str:
    """The options, one a line and long ones wrapped, to end an error message with."""
    options = OPTIONS if options is None else options
    width = max(map(len, options)) + 1
    return "\n".join(
        textwrap.fill(
            what,
            88,
            initial_indent=f"  {key + '=':<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
        for key, what in options.items()
    )


def _unknown(
    key: str, magic: str = "%%remote", options: dict[str, str] | None = None
) -> ConfigError:
    options = OPTIONS if options is None else options
    near = difflib.get_close_matches(key, options, n=1)
    hint = f"; did you mean {near[0]}?" if near else "."
    return ConfigError(
        f"unknown {magic} option {key!r}{hint} Valid options:\n{valid_options(options)}"
    )


def parse(line: str, user_ns: dict[str, Any]) -> RemoteOptions:
    """Parses and checks the options of a ``%%remote`` line.

    Raises:
        ConfigError: one sentence naming the bad option and what is valid.
    """
    options = RemoteOptions()
    for key, value, text in keywords(line, user_ns):
        _set(options, key, value, text)
    return options


def keywords(
    line: str,
    user_ns: dict[str, Any],
    magic: str = "%%remote",
    valid: dict[str, str] | None = None,
) -> list[tuple[str, Any, str]]:
    """The ``key=value`` options of a magic's line: each key (one of ``valid``), its
    value evaluated in ``user_ns``, and its source text.

    Raises:
        ConfigError: one sentence naming the bad option and what is valid.
    """
    valid = OPTIONS if valid is None else valid
    line = line.strip()
    found: list[tuple[str, Any, str]] = []
    if not line:
        return found
    try:
        source = f"_({_with_commas(line)})"
        call = ast.parse(source, mode="eval").body
    except (SyntaxError, tokenize.TokenError):
        example = next(iter(valid))
        raise ConfigError(
            f"cannot parse the {magic} options {line!r}: write them as key=value, "
            f"for example `{magic} {example}=...`. Valid options:\n{valid_options(valid)}"
            if magic != "%%remote"
            else f"cannot parse the %%remote options {line!r}: write them as key=value, "
            f"for example `%%remote timeout=60 retries=1`. Valid options:\n{valid_options()}"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(k.arg is None for k in call.keywords):
        raise ConfigError(
            f"{magic} takes only key=value options, got {line!r}. Valid options:\n"
            + valid_options(valid)
        )
    seen: set[str] = set()
    for kw in call.keywords:
        key = kw.arg
        assert key is not None
        if key not in valid:
            raise _unknown(key, magic, valid)
        if key in seen:
            raise ConfigError(f"{magic} option {key}= is given twice; give it once")
        seen.add(key)
        text = ast.get_source_segment(source, kw.value) or ""
        try:
            value = eval(compile(ast.Expression(kw.value), f"<{magic} options>", "eval"), user_ns)
        except Exception as err:
            raise ConfigError(
                f"{magic} option {key}={text} failed to evaluate: {type(err).__name__}: {err}"
            ) from None
        found.append((key, value, text))
    return found


def _with_commas(line: str) -> str:
    """``a=1 b=[1, 2]`` -> ``a=1, b=[1, 2]``: a comma before each top-level ``name=``."""
    tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    insert_at: list[int] = []
    depth = 0
    previous = None
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif (
            depth == 0
            and tok.type == tokenize.NAME
            and i + 1 < len(tokens)
            and tokens[i + 1].string == "="
            and previous is not None
            and previous.string != ","
        ):
            insert_at.append(tok.start[1])
        if tok.type == tokenize.COMMENT:  # `timeout=60  # ten minutes`
            line = line[: tok.start[1]]
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER):
            previous = tok
    for col in reversed(insert_at):
        line = line[:col].rstrip() + ", " + line[col:]
    return line


def _bad_value(key: str, source: str, value: Any, magic: str = "%%remote") -> ConfigError:
    return ConfigError(
        f"bad value for {magic} option {key}={source} ({_shown(value)}): expected {OPTIONS[key]}"
    )


def _shown(value: Any) -> str:
    try:
        return reprlib.repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__}>"


def _set(
    options: RemoteOptions, key: str, value: Any, source: str, magic: str = "%%remote"
) -> None:
    """Checks one option's value and sets it in ``options``."""

    def _bad(key: str, source: str, value: Any) -> ConfigError:
        return _bad_value(key, source, value, magic)

    if key == "timeout":
        # numbers.Real takes NumPy scalars too; float() of a huge int overflows
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad(key, source, value)
        try:
            seconds = float(value)
        except OverflowError:
            raise _bad(key, source, value) from None
        if not timeout_ok(seconds):
            raise _bad(key, source, value)
        options.timeout = seconds
    elif key == "retries":
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 0 <= int(value) <= MAX_RETRIES
        ):
            raise _bad(key, source, value)
        options.retries = int(value)
    elif key == "pull":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple, set)) or not all(_is_name(v) for v in value):
            raise _bad(key, source, value)
        options.pull = list(dict.fromkeys(value))
    elif key == "detach":
        if not isinstance(value, bool):
            raise _bad(key, source, value)
        options.detach = value
    elif key == "session":
        if not isinstance(value, str) or not SESSION.match(value):
            raise ConfigError(
                f"bad value for {magic} option session={source} ({_shown(value)}): expected a name of "
                "letters, digits, '_', '.' or '-' (at most 64), for example session=\"train\""
            )
        options.session = value
    elif key == "env":
        if not isinstance(value, dict) or env_problem(value):
            raise _bad(key, source, value)
        options.env = dict(value)
    elif key == "image":
        if not isinstance(value, Image):
            raise _bad(key, source, value)
        options.image = value
    elif key == "force_build":
        if not isinstance(value, bool):
            raise _bad(key, source, value)
        options.force_build = value
    elif key == "cpu":
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0 < float(value) <= 1024
        ):
            raise _bad(key, source, value)
        options.cpu = float(value)
    elif key == "memory":
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 0 < int(value) < 2**40
        ):
            raise _bad(key, source, value)
        options.memory = int(value)
    elif key == "gpu":
        options.gpu = parse_gpu(value)  # its ConfigError is one sentence naming what is valid
    elif key == "secrets":
        options.secrets = secrets_option(value, f"{magic} option secrets={source}")
    elif key == "volumes":
        options.volumes = volumes_option(
            value, f"{magic} option volumes={source}", OPTIONS["volumes"]
        )
    elif key == "monitor":
        if not isinstance(value, str) or value.lower() not in MONITOR_MODES:
            raise _bad(key, source, value)
        options.monitor = value.lower()


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)


# -- %%remote_deploy ----------------------------------------------------------------------

DEPLOY_MAGIC = "%%remote_deploy"
#: What a replica runs with: %%remote's options that make sense for a service.
_REPLICA_OPTIONS = ("gpu", "image", "force_build", "cpu", "memory", "secrets", "volumes", "env")
DEPLOY_OPTIONS = {
    **{key: OPTIONS[key] for key in _REPLICA_OPTIONS},
    "handler": "the function that serves calls (its name, or the function); default: the "
    "cell's one top-level def, else its ASGI `app`",
    "min_containers": "replicas kept with no calls (an int; 0 scales to zero)",
    "max_containers": "most replicas (an int from 1)",
    "buffer_containers": "replicas started beyond what the calls need (an int)",
    "concurrency": "calls a replica takes at once (an int from 1)",
    "scaledown_window": "seconds a replica stays without calls (a number)",
    "batch_size": "> 1: calls are gathered into lists of up to this many (an int)",
    "batch_wait_ms": "how long a batch waits to fill, in ms (a number)",
    "call_timeout": "seconds a call may take (a number)",
    "max_queue": "calls that may wait for a replica before 503 (an int)",
    "public": "HTTP calls need no token (True/False)",
    "debug": "a failed HTTP call's response holds the traceback (True/False)",
    "max_body_bytes": "largest HTTP request body (an int)",
}


@dataclass
class DeployOptions:
    name: str
    replica: RemoteOptions
    settings: Any  # contract.deployments.Settings
    #: The handler's name; None: the cell's one top-level def, else its ASGI app.
    handler: str | None = None
    #: The handler when the line named a notebook function (it travels with the cell).
    handler_function: Any = None


def parse_deploy(line: str, user_ns: dict[str, Any]) -> DeployOptions:
    """Parses and checks a ``%%remote_deploy NAME [key=value ...]`` line.

    Raises:
        ConfigError: one sentence: no or a bad NAME, an unknown option, a bad value,
            or settings out of their bounds (``min_containers`` above ``max_containers``).
    """
    from remotecell.contract.deployments import Settings, check_name

    name, _, rest = line.strip().partition(" ")
    if not name or "=" in name:
        raise ConfigError(
            f"usage: {DEPLOY_MAGIC} NAME [key=value ...], NAME first, for example "
            f'`{DEPLOY_MAGIC} embed gpu="any" max_containers=4`'
        )
    check_name(name)
    replica = RemoteOptions()
    settings: dict[str, Any] = {}
    options = DeployOptions(name, replica, None)
    for key, value, text in keywords(rest, user_ns, DEPLOY_MAGIC, DEPLOY_OPTIONS):
        if key in _REPLICA_OPTIONS:
            _set(replica, key, value, text, DEPLOY_MAGIC)
        elif key == "handler":
            if callable(value) and getattr(value, "__name__", "").isidentifier():
                options.handler, options.handler_function = value.__name__, value
            elif _is_name(value):
                options.handler = value
            else:
                raise ConfigError(
                    f"bad value for {DEPLOY_MAGIC} option handler={text} ({_shown(value)}): "
                    'expected a function\'s name, such as handler="predict"'
                )
        else:
            settings[key] = value
    options.settings = Settings.from_options(settings)
    return options
