"""The ``%%remote key=value`` line (``_options.parse``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from remotecell.contract.errors import ConfigError
from remotecell.kernel_magics._options import (
    MAX_RETRIES,
    OPTIONS,
    RemoteOptions,
    parse,
    valid_options,
)


def parse_in(line: str, **ns: Any) -> RemoteOptions:
    return parse(line, {"np": np, **ns})


def error(line: str, **ns: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_in(line, **ns)
    message = str(err.value)
    # one sentence on one line, then (where it helps) the valid options, one a line
    listing = message.partition("\n")[2]
    assert listing in ("", valid_options()), message
    return message


def test_empty_line_gives_the_defaults() -> None:
    assert parse("", {}) == RemoteOptions()
    assert parse("   ", {}) == RemoteOptions()
    assert RemoteOptions().pull is None  # None: the names the cell assigns


def test_every_option_at_once_separated_by_spaces() -> None:
    line = 'timeout=60 retries=2 pull=["a", "b"] detach=True session="train" env={"A": "1"}'
    assert parse_in(line) == RemoteOptions(
        timeout=60.0, retries=2, pull=["a", "b"], detach=True, session="train", env={"A": "1"}
    )


def test_commas_between_options_work_too() -> None:
    assert parse_in("timeout=5, retries=1") == RemoteOptions(timeout=5.0, retries=1)


def test_spaces_around_equals_and_inside_values() -> None:
    options = parse_in('timeout = 60 * 5  env={"A": "1 2", "B": "x=y"}  pull=[ "a" ]')
    assert options.timeout == 300.0
    assert options.env == {"A": "1 2", "B": "x=y"}
    assert options.pull == ["a"]


def test_a_trailing_comment_is_ignored() -> None:
    assert parse_in("timeout=60  # ten minutes") == RemoteOptions(timeout=60.0)


def test_values_are_evaluated_in_the_notebook_namespace() -> None:
    options = parse_in(
        "session=name timeout=minutes*60 pull=wanted env=settings",
        name="exp-1",
        minutes=5,
        wanted=["model"],
        settings={"SEED": "3"},
    )
    assert options == RemoteOptions(
        timeout=300.0, session="exp-1", pull=["model"], env={"SEED": "3"}
    )


def test_keyword_arguments_inside_a_value_are_not_options() -> None:
    options = parse_in("env=dict(A='1', B='2') timeout=max(1, 2)")
    assert options.env == {"A": "1", "B": "2"} and options.timeout == 2.0


# -- timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "seconds"),
    [
        ("timeout=1", 1.0),
        ("timeout=0.5", 0.5),
        ("timeout=60*5", 300.0),
        ("timeout=np.int64(7)", 7.0),
    ],
)
def test_timeout_valid(line: str, seconds: float) -> None:
    options = parse_in(line)
    assert options.timeout == seconds and isinstance(options.timeout, float)


@pytest.mark.parametrize(
    "value",
    ["0", "-1", '"x"', "True", "None", "[1]", 'float("inf")', 'float("nan")', "10**400"],
)
def test_timeout_invalid(value: str) -> None:
    message = error(f"timeout={value}")
    assert message.startswith(f"bad value for %%remote option timeout={value} (")
    assert message.endswith("expected seconds the cell may run (a positive number)")


# -- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "count"), [("retries=0", 0), ("retries=3", 3), ("retries=np.int64(2)", 2)]
)
def test_retries_valid(line: str, count: int) -> None:
    options = parse_in(line)
    assert options.retries == count and type(options.retries) is int


def test_retries_at_the_limit() -> None:
    assert parse_in(f"retries={MAX_RETRIES}").retries == MAX_RETRIES


@pytest.mark.parametrize("value", ["-1", "1.5", "True", '"2"', f"{MAX_RETRIES + 1}", "2**40"])
def test_retries_invalid(value: str) -> None:
    message = error(f"retries={value}")
    assert message.startswith(f"bad value for %%remote option retries={value} (")
    assert f"an int from 0 to {MAX_RETRIES}" in message


# -- pull ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ('pull="x"', ["x"]),
        ("pull=[]", []),
        ('pull=["a", "b"]', ["a", "b"]),
        ('pull=("a", "b")', ["a", "b"]),
        ('pull={"a"}', ["a"]),
        ('pull=["b", "a", "b"]', ["b", "a"]),
        ('pull=["λ", "_x1"]', ["λ", "_x1"]),
    ],
)
def test_pull_valid(line: str, names: list[str]) -> None:
    assert parse_in(line).pull == names


@pytest.mark.parametrize(
    "value",
    ["[1]", '["not an identifier"]', '"a b"', '["1x"]', '["class"]', '[""]', "5", '{"a": 1}'],
)
def test_pull_invalid(value: str) -> None:
    message = error(f"pull={value}")
    assert message.startswith(f"bad value for %%remote option pull={value} (")
    assert message.endswith("expected names to bring back (a list of names; [] for none)")


# -- detach ----------------------------------------------------------------------------


def test_detach_valid() -> None:
    assert parse_in("detach=True").detach is True
    assert parse_in("detach=False").detach is False


@pytest.mark.parametrize("value", ['"yes"', "1", "None"])
def test_detach_invalid(value: str) -> None:
    message = error(f"detach={value}")
    assert message.startswith(f"bad value for %%remote option detach={value} (")
    assert "True/False" in message


# -- session ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "exp-1.v2", "A_b", "0", "x" * 64])
def test_session_valid(name: str) -> None:
    assert parse_in(f"session={name!r}").session == name


@pytest.mark.parametrize(
    "value", ['"bad name!"', '""', '"-lead"', f'"{"x" * 65}"', "3", '"a/b"', '"ü"']
)
def test_session_invalid(value: str) -> None:
    message = error(f"session={value}")
    assert message.startswith(f"bad value for %%remote option session={value} (")
    assert 'for example session="train"' in message


# -- env -------------------------------------------------------------------------------


def test_env_valid() -> None:
    assert parse_in('env={"A": "1 2", "PATH_X": ""}').env == {"A": "1 2", "PATH_X": ""}
    assert parse_in("env={}").env == {}


def test_env_is_a_copy() -> None:
    settings = {"A": "1"}
    options = parse_in("env=settings", settings=settings)
    settings["B"] = "2"
    assert options.env == {"A": "1"}


@pytest.mark.parametrize(
    "value",
    [
        '{"A": 1}',
        '{"=": "x"}',
        '{"A=B": "x"}',
        '{"": "x"}',
        '{1: "x"}',
        '{"A\\x00": "x"}',
        '{"A": "x\\x00y"}',
        '["A=1"]',
        '"A=1"',
    ],
)
def test_env_invalid(value: str) -> None:
    message = error(f"env={value}")
    assert message.startswith(f"bad value for %%remote option env={value} (")
    assert "a dict of str to str" in message


# -- the line as a whole ---------------------------------------------------------------


def test_unknown_option_lists_the_valid_ones_one_a_line() -> None:
    message = error("zzz=1")
    first, *listing = message.splitlines()
    assert first == "unknown %%remote option 'zzz'. Valid options:"
    starts = [line.split()[0] for line in listing if not line.startswith("   ")]
    assert starts == [f"{key}=" for key in OPTIONS]
    assert max(map(len, listing)) <= 88


@pytest.mark.parametrize(("typed", "meant"), [("timout", "timeout"), ("gpus", "gpu")])
def test_a_misspelt_option_suggests_the_nearest_one(typed: str, meant: str) -> None:
    message = error(f"retries=1 {typed}=5")
    assert message.startswith(
        f"unknown %%remote option {typed!r}; did you mean {meant}? Valid options:\n"
    )


@pytest.mark.parametrize(
    "line", ["60", "timeout", "timeout==1", "'x' timeout=1", "*opts", "**opts"]
)
def test_positional_arguments_are_rejected(line: str) -> None:
    message = error(line, opts={})
    assert message.startswith("%%remote takes only key=value options")
    assert repr(line) in message


@pytest.mark.parametrize("line", ["timeout=", "timeout=(1", "pull=[a b]", "x=1)", "timeout=1 $x"])
def test_unparsable_line(line: str) -> None:
    message = error(line)
    assert message.startswith(f"cannot parse the %%remote options {line!r}")
    assert "key=value" in message and "timeout=60 retries=1" in message


def test_an_option_given_twice() -> None:
    assert error("timeout=1 retries=0 timeout=2") == (
        "%%remote option timeout= is given twice; give it once"
    )


def test_a_value_that_fails_to_evaluate_names_the_option_and_the_error() -> None:
    assert error("session=undefined_name") == (
        "%%remote option session=undefined_name failed to evaluate: "
        "NameError: name 'undefined_name' is not defined"
    )
    assert "ZeroDivisionError" in error("timeout=1/0")


def test_evaluation_cannot_see_past_the_namespace() -> None:
    # `np` is in the namespace, `parse` is not
    assert "NameError" in error("timeout=parse")


def test_a_long_value_is_shortened_in_the_message() -> None:
    message = error("pull=list(range(1000))")
    assert len(message) < 300
    assert message.startswith("bad value for %%remote option pull=list(range(1000)) (")


def test_cpu_and_memory() -> None:
    options = parse("cpu=2 memory=4096", {})
    assert (options.cpu, options.memory) == (2.0, 4096)
    assert parse("cpu=0.5", {}).cpu == 0.5
    for bad in (
        "cpu=0",
        "cpu=-1",
        "cpu=True",
        "cpu='2'",
        "memory=0",
        "memory=1.5",
        "memory='4GiB'",
    ):
        with pytest.raises(ConfigError, match=r"^bad value for %%remote option"):
            parse(bad, {})


def test_gpu_takes_a_type_a_count_any_or_fallbacks_from_the_notebook() -> None:
    assert str(parse_in('gpu="h100:2"').gpu) == "H100:2"
    assert str(parse_in("gpu=choices", choices=["H100", "A100-80GB", "any"]).gpu) == (
        "H100, A100-80GB, any"
    )
    assert parse_in("").gpu is None


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('gpu="H1000"', 'unknown GPU type "H1000"; known types: B200'),
        ('gpu="A100"', "is ambiguous"),
        ('gpu="H100:0"', "asks for 0 GPUs"),
        ("gpu=2", 'write gpu="any:2"'),
        ('gpu=["any", "H100"]', '"any" must be the last fallback'),
    ],
)
def test_a_bad_gpu_is_one_sentence(line: str, says: str) -> None:
    assert says in error(line)
