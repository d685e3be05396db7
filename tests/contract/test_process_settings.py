"""The notebook's process settings on the wire: what parses, and one sentence for what does not."""

from __future__ import annotations

import pytest

from remotecell.contract.errors import ConfigError
from remotecell.contract.process_settings import (
    MAX_BYTES,
    HandlerSettings,
    LoggerSettings,
    ProcessSettings,
    check,
    parse,
)


def test_settings_round_trip_through_json() -> None:
    settings = ProcessSettings(
        {"": LoggerSettings(20, (HandlerSettings("stderr", 0, "%(message)s", None, "%"),))},
        disable=0,
        warnings=(("ignore", "hush", "builtins.UserWarning", "", 0),),
        inline={"figure_formats": ["svg"], "close_figures": False},
    )
    assert parse(settings.to_json()) == settings
    assert parse("") == ProcessSettings()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"loggers": {"": {"level": -1}}}',
        '{"loggers": {"": {"handlers": [{"stream": "/dev/tty"}]}}}',
        '{"warnings": [["explode", "", "builtins.UserWarning", "", 0]]}',
        '{"inline": {"backend": "tk"}}',
        '{"inline": {"figure_formats": "svg"}}',
        '{"disable": true}',
        '{"loggers": {}, "pad": "' + "x" * MAX_BYTES + '"}',
    ],
)
def test_bad_settings_are_refused_with_one_sentence(text: str) -> None:
    with pytest.raises(ConfigError, match="process_settings"):
        check(text)
