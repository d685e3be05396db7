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
from remotecell.client.volume import Volume
from remotecell.contract.errors import ConfigError
from remotecell.contract.jobs import MAX_RETRIES, SESSION, env_problem, timeout_ok
from remotecell.contract.resources import GPURequest, parse_gpu
from remotecell.contract.volumes import Mount, check_mounts


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


def valid_options() -> str:
    """The options, one a line and long ones wrapped, to end an error message with."""
    width = max(map(len, OPTIONS)) + 1
    return "\n".join(
        textwrap.fill(
            what,
            88,
            initial_indent=f"  {key + '=':<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
        for key, what in OPTIONS.items()
    )


def _unknown(key: str) -> ConfigError:
    near = difflib.get_close_matches(key, OPTIONS, n=1)
    hint = f"; did you mean {near[0]}?" if near else "."
    return ConfigError(f"unknown %%remote option {key!r}{hint} Valid options:\n{valid_options()}")


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
        source = f"_({_with_commas(line)})"
        call = ast.parse(source, mode="eval").body
    except (SyntaxError, tokenize.TokenError):
        raise ConfigError(
            f"cannot parse the %%remote options {line!r}: write them as key=value, "
            f"for example `%%remote timeout=60 retries=1`. Valid options:\n{valid_options()}"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(k.arg is None for k in call.keywords):
        raise ConfigError(
            f"%%remote takes only key=value options, got {line!r}. Valid options:\n"
            + valid_options()
        )
    seen: set[str] = set()
    for kw in call.keywords:
        key = kw.arg
        assert key is not None
        if key not in OPTIONS:
            raise _unknown(key)
        if key in seen:
            raise ConfigError(f"%%remote option {key}= is given twice; give it once")
        seen.add(key)
        text = ast.get_source_segment(source, kw.value) or ""
        try:
            value = eval(compile(ast.Expression(kw.value), "<%%remote options>", "eval"), user_ns)
        except Exception as err:
            raise ConfigError(
                f"%%remote option {key}={text} failed to evaluate: {type(err).__name__}: {err}"
            ) from None
        _set(options, key, value, text)
    return options


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


def _bad(key: str, source: str, value: Any) -> ConfigError:
    return ConfigError(
        f"bad value for %%remote option {key}={source} ({_shown(value)}): expected {OPTIONS[key]}"
    )


def _shown(value: Any) -> str:
    try:
        return reprlib.repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__}>"


def _set(options: RemoteOptions, key: str, value: Any, source: str) -> None:
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
                f"bad value for %%remote option session={source} ({_shown(value)}): expected a name of "
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
        options.secrets = _secrets(value, source)
    elif key == "volumes":
        options.volumes = _volumes(value, source)
    elif key == "monitor":
        if not isinstance(value, str) or value.lower() not in MONITOR_MODES:
            raise _bad(key, source, value)
        options.monitor = value.lower()


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)


def _secrets(value: Any, source: str) -> list[Secret]:
    """``secrets=``: a list (or tuple) of ``Secret``; a lone ``Secret`` is taken as one."""
    if isinstance(value, Secret):
        return [value]
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, str):
                raise ConfigError(  # not shown: the string might be a secret's value
                    f"bad value for %%remote option secrets={source}: it holds a string; "
                    'name a stored secret with remotecell.Secret.from_name("NAME")'
                )
            if not isinstance(item, Secret):
                break
        else:
            return list(dict.fromkeys(value))
    raise ConfigError(
        f"bad value for %%remote option secrets={source} (a {type(value).__name__}): expected "
        'a list of remotecell.Secret, for example secrets=[remotecell.Secret.from_name("hf")]'
    )


def _volumes(value: Any, source: str) -> tuple[Mount, ...]:
    """``volumes=``: a dict of mount paths to ``Volume``, checked as the control plane
    checks it (absolute, not a system directory, no two nesting, no volume twice)."""
    if not isinstance(value, dict) or not all(isinstance(v, Volume) for v in value.values()):
        raise _bad("volumes", source, value)
    try:
        return check_mounts(Mount(path, volume.name) for path, volume in value.items())
    except ConfigError as err:
        raise ConfigError(f"bad value for %%remote option volumes={source}: {err}") from None
