"""The notebook's process settings, which travel with its cells: in one kernel, what a cell
sets for the process (``logging.basicConfig``, a warnings filter, ``%config
InlineBackend...``) holds in every later cell. A runner gives each job without
``session=`` a fresh process state (``runner/_fresh.py``), so these travel instead:
the runner reports the logging configuration and warning filters a cell left
(``Result.process_settings``), the kernel keeps the latest per notebook and sends them,
with its own InlineBackend settings, in every later ``JobSpec.process_settings``; the
runner applies them after its fresh reset.

On the wire it is JSON, checked here by both sides (``parse`` raises ``ValueError`` with
one sentence) and bounded (``MAX_BYTES``):

``{"loggers": {NAME: {"level": INT, "handlers": [HANDLER, ...]}}`` (``""``: the root),
HANDLER ``{"stream": "stdout"|"stderr", "level": INT, "fmt": STR|null,
"datefmt": STR|null, "style": "%"|"{"|"$"}``: a ``StreamHandler`` writing to the cell's
output; ``"disable": INT`` (``logging.disable``); ``"warnings": [[ACTION, MESSAGE,
CATEGORY, MODULE, LINENO], ...]`` (CATEGORY ``"module.QualName"``), first first;
``"inline": {"figure_formats": [STR], "rc": {}, "print_figure_kwargs": {},
"close_figures": BOOL}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from remotecell.contract.errors import ConfigError

#: The most a process_settings field may hold, in bytes of JSON.
MAX_BYTES = 64 * 1024
#: At most this many loggers, handlers per logger and warning filters.
MAX_ITEMS = 200
STREAMS = ("stdout", "stderr")
STYLES = ("%", "{", "$")
WARNING_ACTIONS = ("default", "error", "ignore", "always", "module", "once")
#: The InlineBackend traits that travel, and the JSON type each must have.
INLINE_TRAITS: dict[str, type] = {
    "figure_formats": list,
    "rc": dict,
    "print_figure_kwargs": dict,
    "close_figures": bool,
}


@dataclass(frozen=True)
class HandlerSettings:
    stream: str
    level: int = 0
    fmt: str | None = None
    datefmt: str | None = None
    style: str = "%"


@dataclass(frozen=True)
class LoggerSettings:
    level: int = 0
    handlers: tuple[HandlerSettings, ...] = ()


@dataclass(frozen=True)
class ProcessSettings:
    loggers: dict[str, LoggerSettings] = field(default_factory=dict)
    disable: int = 0
    #: (action, message regex, category "module.QualName", module regex, lineno)
    warnings: tuple[tuple[str, str, str, str, int], ...] = ()
    inline: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "loggers": {
                    name: {"level": lg.level, "handlers": [h.__dict__ for h in lg.handlers]}
                    for name, lg in self.loggers.items()
                },
                "disable": self.disable,
                "warnings": [list(w) for w in self.warnings],
                "inline": self.inline,
            },
            sort_keys=True,
        )

    def with_inline(self, inline: dict[str, Any]) -> ProcessSettings:
        return ProcessSettings(self.loggers, self.disable, self.warnings, inline)


def parse(text: str) -> ProcessSettings:
    """The settings ``text`` holds ("" is none); ValueError saying what is wrong."""
    if not text:
        return ProcessSettings()
    if len(text.encode()) > MAX_BYTES:
        raise ValueError(f"process_settings is over {MAX_BYTES} bytes")
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ValueError(f"process_settings is not JSON: {err}") from None
    _expect(isinstance(raw, dict), "an object")
    loggers = raw.get("loggers", {})
    _expect(isinstance(loggers, dict) and len(loggers) <= MAX_ITEMS, "loggers: an object")
    parsed = {str(name): _logger(name, value) for name, value in loggers.items()}
    disable = raw.get("disable", 0)
    _expect(_is_int(disable), "disable: an integer")
    filters = raw.get("warnings", [])
    _expect(isinstance(filters, list) and len(filters) <= MAX_ITEMS, "warnings: a list")
    inline = raw.get("inline", {})
    _expect(isinstance(inline, dict), "inline: an object")
    for key, value in inline.items():
        _expect(key in INLINE_TRAITS, f"inline: one of {', '.join(INLINE_TRAITS)} (got {key!r})")
        wanted = INLINE_TRAITS[key]
        _expect(isinstance(value, wanted), f"inline.{key}: a {wanted.__name__}")
    return ProcessSettings(parsed, disable, tuple(_filter(f) for f in filters), inline)


def check(text: str) -> None:
    """Raises ConfigError where ``text`` is not valid process settings."""
    try:
        parse(text)
    except ValueError as err:
        raise ConfigError(f"{err}; the notebook's remotecell sent it, which is a bug") from None


def _logger(name: str, value: Any) -> LoggerSettings:
    _expect(isinstance(value, dict), f"loggers[{name!r}]: an object")
    level, handlers = value.get("level", 0), value.get("handlers", [])
    _expect(_is_int(level), f"loggers[{name!r}].level: an integer")
    _expect(isinstance(handlers, list) and len(handlers) <= MAX_ITEMS, "handlers: a list")
    out = []
    for handler in handlers:
        _expect(isinstance(handler, dict), "a handler: an object")
        stream, style = handler.get("stream"), handler.get("style", "%")
        _expect(stream in STREAMS, "a handler's stream: 'stdout' or 'stderr'")
        _expect(style in STYLES, "a handler's style: '%', '{' or '$'")
        _expect(_is_int(handler.get("level", 0)), "a handler's level: an integer")
        for key in ("fmt", "datefmt"):
            _expect(handler.get(key) is None or isinstance(handler[key], str), f"{key}: a string")
        out.append(
            HandlerSettings(
                stream, handler.get("level", 0), handler.get("fmt"), handler.get("datefmt"), style
            )
        )
    return LoggerSettings(level, tuple(out))


def _filter(value: Any) -> tuple[str, str, str, str, int]:
    ok = (
        isinstance(value, list)
        and len(value) == 5
        and value[0] in WARNING_ACTIONS
        and all(isinstance(v, str) for v in value[1:4])
        and _is_int(value[4], top=10**9)
    )
    _expect(ok, "a warning filter: [action, message, category, module, lineno]")
    return (value[0], value[1], value[2], value[3], value[4])


def _is_int(value: Any, top: int = 1000) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"process_settings: expected {what}")
