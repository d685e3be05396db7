"""The process state a cell can change beyond its namespace, put back between jobs.

A warm runner serves many jobs in one process. A job without ``session=`` gets a fresh
namespace, and it gets a fresh process as the user sees it too, as a new kernel would
give it: the root logger has no handlers (so a cell's ``logging.basicConfig`` takes
effect and prints in that cell), and every warning shows again (each module's
``__warningregistry__`` and the "once" registry start empty). A ``session=`` job is a
later cell of one kernel: what earlier cells of the session set stays.

The runner's own logging goes to the ``remotecell`` logger (``_main``), never through the
root logger a cell configures.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _LoggerState:
    level: int
    handlers: tuple[logging.Handler, ...]
    propagate: bool
    disabled: bool


class ProcessState:
    """A snapshot of the logging configuration and the warning filters, to restore."""

    def __init__(self) -> None:
        self._loggers = {name: _state(logger) for name, logger in _loggers().items()}
        self._disable = logging.root.manager.disable
        self._filters = list(warnings.filters)

    @property
    def filters(self) -> list[Any]:
        """The warning filters of the snapshot."""
        return self._filters

    def restore(self) -> None:
        """Puts the snapshot's logging and warnings back; loggers made since then are
        reset to how ``logging.getLogger`` makes them."""
        for name, logger in _loggers().items():
            state = self._loggers.get(name)
            if state is None:
                state = _LoggerState(logging.NOTSET, (), True, False)
            logger.handlers = list(state.handlers)  # a cell may have made it a tuple
            logger.setLevel(state.level)
            logger.propagate = state.propagate
            logger.disabled = state.disabled
        logging.disable(self._disable)
        warnings.filters[:] = self._filters  # type: ignore[index]
        warnings.onceregistry.clear()  # type: ignore[attr-defined]
        # Every module's __warningregistry__ is emptied the next time it warns.
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _loggers() -> dict[str, logging.Logger]:
    found: dict[str, logging.Logger] = {"": logging.root}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            found[name] = logger
    return found


def _state(logger: logging.Logger) -> _LoggerState:
    return _LoggerState(logger.level, tuple(logger.handlers), logger.propagate, logger.disabled)
