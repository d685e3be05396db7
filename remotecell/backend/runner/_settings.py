"""The notebook's process settings on the runner (``contract/process_settings.py``): applied
after a job's fresh reset (``_fresh.py``), and read back after its cell.

Only what a cell can set for a notebook travels: levels of loggers, ``StreamHandler``s
writing to the cell's own output (with their format), ``logging.disable`` and the
warning filters the cell added; the runner's own ``remotecell`` loggers never do.
"""

from __future__ import annotations

import builtins
import logging
import re
import sys
import warnings
from typing import Any

from remotecell.contract.process_settings import (
    INLINE_TRAITS,
    MAX_ITEMS,
    HandlerSettings,
    LoggerSettings,
    ProcessSettings,
    parse,
)

_STYLES = {logging.PercentStyle: "%", logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}


def parsed(text: str) -> ProcessSettings:
    """The job's settings (none where they do not parse: the server checked them)."""
    try:
        return parse(text)
    except ValueError:
        return ProcessSettings()


def apply(settings: ProcessSettings, streams: dict[str, Any]) -> None:
    """Sets the logging configuration and warning filters of ``settings``; ``streams``
    are the cell's ``stdout`` and ``stderr``, by name."""
    for name, wanted in settings.loggers.items():
        logger = logging.getLogger(name or None)
        logger.setLevel(wanted.level)
        for spec in wanted.handlers:
            handler = logging.StreamHandler(streams[spec.stream])
            handler.setLevel(spec.level)
            if spec.fmt is not None or spec.datefmt is not None:
                handler.setFormatter(
                    # Unchecked, as the cell's own was (``validate=False``): it existed.
                    logging.Formatter(spec.fmt, spec.datefmt, style=spec.style, validate=False)  # type: ignore[arg-type]
                )
            logger.addHandler(handler)
    logging.disable(settings.disable)
    added = [f for f in map(_warning_filter, settings.warnings) if f is not None]
    if added:
        warnings.filters[:0] = added  # type: ignore[index]
        warnings._filters_mutated()  # type: ignore[attr-defined]


def report(fresh_filters: list[Any], streams: dict[str, Any]) -> ProcessSettings:
    """The settings the process holds now, beyond ``fresh_filters`` (the warning filters
    of a fresh runner)."""
    names = {id(stream): name for name, stream in streams.items()}
    loggers: dict[str, LoggerSettings] = {}
    found = {"": logging.root, **logging.root.manager.loggerDict}
    for name, logger in found.items():
        if not isinstance(logger, logging.Logger) or name.split(".")[0] == "remotecell":
            continue
        handlers = tuple(
            _handler(h, names[id(h.stream)])
            for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and id(h.stream) in names
        )
        default = logging.WARNING if name == "" else logging.NOTSET
        if (logger.level != default or handlers) and len(loggers) < MAX_ITEMS:
            loggers[name] = LoggerSettings(logger.level, handlers)
    fresh = set(map(id, fresh_filters))
    added = [_filter_text(f) for f in warnings.filters if id(f) not in fresh]
    return ProcessSettings(
        loggers,
        logging.root.manager.disable,
        tuple(f for f in added if f is not None)[:MAX_ITEMS],
    )


def apply_inline(shell: Any, inline: dict[str, Any]) -> None:
    """Sets matplotlib's inline backend as the notebook's ``%config InlineBackend``
    has it (its defaults where it sets nothing), so no notebook's setting stays for
    another's job. Nothing to do while no cell has used the inline backend or set it."""
    if not inline and "matplotlib_inline.config" not in sys.modules:
        return
    try:
        from matplotlib_inline.config import InlineBackend
    except ImportError:
        return
    backend = InlineBackend.instance(parent=shell)
    traits = InlineBackend.class_traits()
    for name in INLINE_TRAITS:
        value = inline[name] if name in inline else traits[name].default()
        if name == "figure_formats":
            value = set(value or ())
        if getattr(backend, name) != value:
            setattr(backend, name, value)
    if "matplotlib.figure" in sys.modules:
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, backend.figure_formats, **backend.print_figure_kwargs)


def _handler(handler: logging.Handler, stream: str) -> HandlerSettings:
    formatter = handler.formatter
    if formatter is None:
        return HandlerSettings(stream, handler.level)
    style = _STYLES.get(type(formatter._style), "%")
    return HandlerSettings(stream, handler.level, formatter._fmt, formatter.datefmt, style)


def _filter_text(entry: Any) -> tuple[str, str, str, str, int] | None:
    action, message, category, module, lineno = entry
    if not isinstance(category, type):
        return None
    return (
        action,
        message.pattern if message is not None else "",
        f"{category.__module__}.{category.__qualname__}",
        module.pattern if module is not None else "",
        lineno,
    )


def _warning_filter(text: tuple[str, str, str, str, int]) -> tuple[Any, ...] | None:
    action, message, category_name, module, lineno = text
    owner, _, qualname = category_name.rpartition(".")
    category: Any = builtins if owner == "builtins" else sys.modules.get(owner)
    for part in qualname.split("."):
        category = getattr(category, part, None)
    if not (isinstance(category, type) and issubclass(category, Warning)):
        return None  # a module the cell imported that this job has not: its warnings cannot come
    try:
        return (
            action,
            re.compile(message, re.I) if message else None,
            category,
            re.compile(module) if module else None,
            lineno,
        )
    except re.error:
        return None
