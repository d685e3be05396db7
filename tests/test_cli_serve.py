"""`remotecell serve`'s options are the control plane's settings (``backend/config.py``):
one flag per setting and one setting per flag, the defaults ``--help`` shows are the
declared ones, and what a flag says is what the server is given."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from support import serve_fails

import remotecell.backend.server
from remotecell.backend.config import ServeConfig, settings
from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.cli import main
from remotecell.cli._serve import serve

#: A value other than the default for each flag, and the value the setting gets from it.
EXAMPLES: dict[str, tuple[list[str], Any]] = {
    "--data-dir": (["/srv/remotecell"], Path("/srv/remotecell")),
    "--listen": (["unix:/tmp/a.sock", "127.0.0.1:7000"], ("unix:/tmp/a.sock", "127.0.0.1:7000")),
    "--http": (["off"], "off"),
    "--tls": ([], True),  # a switch: given without a value
    "--tls-cert": (["/srv/tls/cert.pem"], Path("/srv/tls/cert.pem")),
    "--tls-key": (["/srv/tls/key.pem"], Path("/srv/tls/key.pem")),
    "--insecure": ([], True),
    "--executor": (["docker"], "docker"),
    "--docker-base-image": (["python:3.12-slim"], "python:3.12-slim"),
    "--scaledown-window": (["2.5"], 2.5),
    "--session-idle-timeout": (["30"], 30.0),
    "--min-containers": (["1"], 1),
    "--max-runners": (["3"], 3),
    "--prewarm": (["2"], 2),
    "--cancel-grace": (["0.5"], 0.5),
    "--reconnect-grace": (["60"], 60.0),
    "--retry-delay": (["0"], 0.0),
    "--gpu-price": (["h100=0.5", "A10G=0.25"], {"H100": 0.5, "A10G": 0.25}),
    "--metrics-interval": (["1"], 1.0),
    "--blob-store": (["memory://blobs"], "memory://blobs"),
    "--blob-ttl": (["12h"], 43200.0),
    "--max-blob-size": (["512M"], 512 << 20),
    "--volume-store": (["memory://volumes"], "memory://volumes"),
}


def fields_of(config: type) -> list[tuple[str, ...]]:
    """Every leaf field of ``config``, nested dataclasses (the runner policy) flattened."""
    found: list[tuple[str, ...]] = []
    for field in dataclasses.fields(config):
        default = getattr(config(), field.name)
        if dataclasses.is_dataclass(default):
            found += [(field.name, *sub) for sub in fields_of(type(default))]
        else:
            found.append((field.name,))
    return found


def options() -> dict[str, click.Option]:
    return {
        param.opts[0]: param
        for param in serve.get_params(click.Context(serve))
        if isinstance(param, click.Option) and param.opts[0] not in ("--embedded", "--help")
    }


def test_every_setting_is_one_flag_and_every_flag_one_setting():
    declared = {s.path: s.option for s in settings()}
    assert sorted(declared) == sorted(fields_of(ServeConfig))
    assert ("runners", "retry_delay") not in declared and ("retry_delay",) in declared
    assert sorted(declared.values()) == sorted(options())
    assert sorted(EXAMPLES) == sorted(options()), "give each flag an example here"
    # The click parameter is named after its field, which names are unique across levels.
    assert {p.name for p in options().values()} == {path[-1] for path in declared}


def test_the_defaults_help_shows_are_the_declared_defaults():
    ctx = serve.make_context("serve", [])
    shown: dict[str, str] = {}
    for option, param in options().items():
        record = param.get_help_record(ctx)
        assert record is not None
        found = re.search(r"\[default: (.*)\]$", record[1])
        if found:
            shown[option] = found.group(1)
    by_option = {s.option: s for s in settings()}
    for option, setting in by_option.items():
        if setting.flag.is_flag or setting.default in (None, "", (), {}):  # help says why
            assert option not in shown, option
        else:
            assert setting.parse(shown[option]) == setting.default, option
    assert shown["--blob-ttl"] == "7d"
    assert shown["--max-blob-size"] == "64G"
    assert shown["--metrics-interval"] == "5"  # telemetry.downsample.DEFAULT_INTERVAL
    assert shown["--docker-base-image"] == "remotecell-base:bookworm"
    assert shown["--retry-delay"] == "1"
    # One source for both: ServeConfig's defaults are the runner policy's and the others'.
    assert ServeConfig().runners == RunnerPolicy()


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """The configurations `remotecell serve` would run with (the server is not started)."""
    configs: list[ServeConfig] = []

    async def run(config: ServeConfig, ready: Any = None) -> None:
        configs.append(config)

    monkeypatch.setattr(remotecell.backend.server, "run", run)
    return configs


def test_what_each_flag_says_is_what_the_server_gets(given, tmp_path):
    args: list[str] = []
    for option, (values, _) in EXAMPLES.items():
        if not values:
            args.append(option)
        for value in values:
            args += [option, value]
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 0, result.output
    (config,) = given
    for setting in settings():
        value: Any = config
        for name in setting.path:
            value = getattr(value, name)
        assert value == EXAMPLES[setting.option][1], setting.option


def test_no_flag_runs_with_the_declared_defaults(given, tmp_path):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert given == [ServeConfig(data_dir=tmp_path.resolve())]


def test_embedded_prewarms_one_runner_unless_told_otherwise(given, tmp_path):
    for extra in ([], ["--prewarm", "0"]):
        result = CliRunner().invoke(
            main, ["serve", "--embedded", "--data-dir", str(tmp_path), *extra]
        )
        assert result.exit_code == 0, result.output
    assert [c.runners.prewarm for c in given] == [1, 0]


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--retry-delay", "-1", "expected seconds, a number >= 0"),
        ("--retry-delay", "nan", "expected seconds, a number >= 0"),
        ("--scaledown-window", "inf", "expected seconds, a number >= 0"),
        ("--max-runners", "0", "expected a whole number >= 1"),
        ("--prewarm", "two", "expected a whole number >= 0"),
        ("--executor", "ray", "'ray' is not one of 'local', 'docker'"),
    ],
)
def test_a_bad_value_is_refused_in_one_sentence(option, value, says, tmp_path):
    said = serve_fails(tmp_path, option, value)
    errors = [line for line in said.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, said
    assert f"'{option}'" in errors[0] and says in errors[0], said


def test_the_command_line_loads_the_back_end_only_for_serve():
    code = (
        "import sys, remotecell.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('remotecell.backend')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
